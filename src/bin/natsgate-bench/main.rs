//! natsgate-bench: end-to-end figures for natsgate against nats-server
//! directly and against a plain byte relay, in one run.
//!
//! ```text
//! cargo build --release && NATS_SERVER_BIN=... target/release/natsgate-bench [--quick]
//! ```
//!
//! (or `scripts/bench.sh [--quick]`, which installs nats-server first).
//!
//! Three ways to reach the same plain nats-server (user/password):
//! `direct`; `relay`, a tokio `copy_bidirectional_with_sizes` forwarder with
//! 64 KiB buffers (the reference for what any TCP proxy costs); and
//! `natsgate`, with JWT users whose permissions have allow and deny lists and
//! `allow_responses`. Each round measures the three alternately (in a rotating
//! order); the table shows medians over the rounds. The connection-rate figure
//! compares natsgate with the same JWTs against nats-server in operator mode.
//!
//! The load generator uses plain threads with blocking sockets and the raw
//! protocol; natsgate, the relay and the servers are child processes, so
//! memory is read per process from `/proc/<pid>/status`.

mod client;
mod load;
mod procs;
mod setup;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use client::Auth;
use procs::{NatsServer, Proc};

const USAGE: &str = "\
usage: natsgate-bench [--quick] [--rounds N] [--seconds S] [--clients N] [--natsgate PATH]
                      [--only LIST]

  --quick          a ~1 minute run: 2 rounds of 0.5 s measurements
  --rounds N       rounds for the throughput and latency figures (default 5)
  --seconds S      length of one measurement in seconds (default 1)
  --clients N      idle clients for the memory figure (default 5000)
  --natsgate PATH  the natsgate binary (default: `natsgate` next to this
                   binary, else natsgate's library run by this binary)
  --only LIST      comma-separated subset of: publish, pubsub, reqrep,
                   connect, memory (default: all)

Needs nats-server: $NATS_SERVER_BIN, else `nats-server` on PATH.";

struct Options {
    rounds: usize,
    conn_rounds: usize,
    measure: Duration,
    clients: usize,
    natsgate: Option<PathBuf>,
    only: Option<Vec<String>>,
}

const PARTS: [&str; 5] = ["publish", "pubsub", "reqrep", "connect", "memory"];

impl Options {
    fn wants(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|p| p == part))
    }
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        rounds: 5,
        conn_rounds: 3,
        measure: Duration::from_secs(1),
        clients: 5000,
        natsgate: None,
        only: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--quick" => {
                o.rounds = 2;
                o.conn_rounds = 2;
                o.measure = Duration::from_millis(500);
            }
            "--rounds" => {
                o.rounds = value("--rounds")?
                    .parse()
                    .map_err(|_| "--rounds: not a number")?;
                o.conn_rounds = o.rounds.min(3);
            }
            "--seconds" => {
                let s: f64 = value("--seconds")?
                    .parse()
                    .map_err(|_| "--seconds: not a number")?;
                o.measure = Duration::from_secs_f64(s.clamp(0.05, 60.0));
            }
            "--clients" => {
                o.clients = value("--clients")?
                    .parse()
                    .map_err(|_| "--clients: not a number")?;
            }
            "--natsgate" => o.natsgate = Some(PathBuf::from(value("--natsgate")?)),
            "--only" => {
                let list: Vec<String> = value("--only")?
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect();
                if let Some(bad) = list.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    return Err(format!("--only: unknown part {bad:?}\n{USAGE}"));
                }
                o.only = Some(list);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    o.rounds = o.rounds.max(1);
    o.conn_rounds = o.conn_rounds.max(1);
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        // Internal: the processes this binary starts as children.
        Some("relay") => relay_main(&args[1..]),
        Some("serve-natsgate") => serve_natsgate(&args[1..]),
        _ => parse_args(&args).and_then(|o| bench(&o)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natsgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

// === the child processes ===

/// The reference relay: every connection forwarded to `upstream` with
/// `copy_bidirectional_with_sizes` and 64 KiB buffers each way.
fn relay_main(args: &[String]) -> Result<(), String> {
    let upstream: SocketAddr = args
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or("relay needs the upstream address")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("relay listening addr={addr}");
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut server,
                    65536,
                    65536,
                )
                .await;
            });
        }
    })
}

/// natsgate's library on a multi-thread runtime, as the `natsgate` binary
/// runs it (used when no natsgate binary is at hand).
fn serve_natsgate(args: &[String]) -> Result<(), String> {
    let path = match args {
        [flag, path] if flag == "--config" => PathBuf::from(path),
        _ => return Err("serve-natsgate needs --config FILE".into()),
    };
    let settings = natsgate::config::Settings::load(&path).map_err(|e| e.to_string())?;
    let std_listener =
        std::net::TcpListener::bind(&settings.listen.addr).map_err(|e| e.to_string())?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("natsgate listening addr={addr}");
        natsgate::run(
            settings,
            listener,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .map_err(|e| e.to_string())
    })
}

// === the bench ===

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    Direct,
    Relay,
    Gate,
}

const CONFIGS: [Config; 3] = [Config::Direct, Config::Relay, Config::Gate];

/// One row of the table: samples per configuration.
struct Row {
    name: String,
    unit: &'static str,
    samples: [Vec<f64>; 3],
    target: Target,
}

#[derive(Clone, Copy)]
enum Target {
    /// natsgate/direct at least this.
    VsDirectMin(f64),
    /// natsgate/relay at least this.
    VsRelayMin(f64),
    /// natsgate/relay at most this.
    VsRelayMax(f64),
    /// natsgate's own value at most this.
    AbsMax(f64),
}

impl Row {
    fn new(name: impl Into<String>, unit: &'static str, target: Target) -> Row {
        Row {
            name: name.into(),
            unit,
            samples: [Vec::new(), Vec::new(), Vec::new()],
            target,
        }
    }

    fn push(&mut self, config: Config, value: f64) {
        self.samples[config as usize].push(value);
    }

    fn median(&self, config: Config) -> Option<f64> {
        median(&self.samples[config as usize])
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Setup {
    _dir: procs::ScratchDir,
    plain: NatsServer,
    operator: NatsServer,
    relay: Proc,
    gate: Proc,
    user: Auth,
}

impl Setup {
    fn addr(&self, c: Config) -> SocketAddr {
        match c {
            Config::Direct => self.plain.addr,
            Config::Relay => self.relay.addr,
            Config::Gate => self.gate.addr,
        }
    }

    fn auth(&self, c: Config) -> Auth {
        match c {
            Config::Gate => self.user.clone(),
            Config::Direct | Config::Relay => setup::gate_auth(),
        }
    }
}

/// Which natsgate to run: `--natsgate`, else `natsgate` next to this binary,
/// else `None` (the library, run by this binary).
fn natsgate_binary(o: &Options) -> Result<Option<PathBuf>, String> {
    if let Some(p) = &o.natsgate {
        return if p.is_file() {
            Ok(Some(p.clone()))
        } else {
            Err(format!("--natsgate {}: no such file", p.display()))
        };
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let sibling = me.with_file_name("natsgate");
    if !sibling.is_file() {
        return Ok(None);
    }
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(g), Some(b)) = (mtime(&sibling), mtime(&me))
        && g + Duration::from_secs(1) < b
    {
        eprintln!(
            "note: {} is older than this bench binary; if natsgate's sources changed, \
             `cargo build --release` rebuilds it",
            sibling.display()
        );
    }
    Ok(Some(sibling))
}

fn bench(o: &Options) -> Result<(), String> {
    let started = Instant::now();
    let nofile = procs::raise_nofile_limit();
    let clients = if o.wants("memory") { o.clients } else { 0 };
    let need = (clients as u64) * 2 + 200;
    if nofile < need {
        return Err(format!(
            "the open-file limit is {nofile}; {} idle clients need about {need} in natsgate \
             (raise `ulimit -n` or pass --clients)",
            o.clients
        ));
    }
    let server_bin = procs::nats_server_bin()?;
    let gate_bin = natsgate_binary(o)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "natsgate-bench: {} rounds of {:.2} s, {} idle clients, {cores} cores",
        o.rounds,
        o.measure.as_secs_f64(),
        o.clients
    );
    println!(
        "  nats-server: {} ({})",
        server_bin.display(),
        server_version(&server_bin)
    );
    match &gate_bin {
        Some(p) => println!("  natsgate:    {}", p.display()),
        None => println!("  natsgate:    library, run by this binary (no natsgate binary found)"),
    }

    let dir = procs::ScratchDir::new().map_err(|e| format!("scratch dir: {e}"))?;
    let ids = setup::mint();
    let plain = NatsServer::start(
        &server_bin,
        dir.path(),
        "plain",
        &setup::plain_server_config(),
    )?;
    let operator = NatsServer::start(
        &server_bin,
        dir.path(),
        "operator",
        &setup::operator_server_config(&ids),
    )?;
    let relay = procs::start_relay(plain.addr)?;
    let gate_config = setup::write_gate_config(&dir.path().join("gate"), &ids, plain.addr)
        .map_err(|e| format!("natsgate config: {e}"))?;
    let gate = procs::start_natsgate(gate_bin.as_deref(), &gate_config)?;
    let s = Setup {
        _dir: dir,
        plain,
        operator,
        relay,
        gate,
        user: ids.user.clone(),
    };
    // Every configuration must work before anything is measured.
    for c in CONFIGS {
        client::Client::connect(s.addr(c), &s.auth(c), client::SMALL_BUFFER)
            .map_err(|e| format!("{c:?}: cannot log in: {e}"))?
            .close_now();
    }
    client::Client::connect(s.operator.addr, &s.user, client::SMALL_BUFFER)
        .map_err(|e| format!("operator-mode nats-server: cannot log in: {e}"))?
        .close_now();

    let mut rows = Vec::new();
    let d = o.measure;
    let run = |what: &str, c: Config, r: std::io::Result<f64>| -> Result<f64, String> {
        r.map_err(|e| format!("{what} via {c:?}: {e}"))
    };

    let publish_sizes: &[(usize, &str)] = if o.wants("publish") {
        &[
            (16, "16 B"),
            (128, "128 B"),
            (1024, "1 KiB"),
            (16384, "16 KiB"),
        ]
    } else {
        &[]
    };
    for &(size, label) in publish_sizes {
        let target = if size <= 128 {
            Target::VsDirectMin(0.9)
        } else {
            Target::VsRelayMin(1.0)
        };
        let mut row = Row::new(format!("publish {label}"), "msg/s", target);
        for round in 0..o.rounds {
            for c in rotated(round) {
                let v = run("publish", c, load::publish(s.addr(c), &s.auth(c), size, d))?;
                row.push(c, v);
            }
        }
        progress(&row, started);
        rows.push(row);
    }

    let pubsub_sizes: &[(usize, &str)] = if o.wants("pubsub") {
        &[(16, "16 B"), (1024, "1 KiB")]
    } else {
        &[]
    };
    for &(size, label) in pubsub_sizes {
        let target = if size <= 128 {
            Target::VsDirectMin(0.9)
        } else {
            Target::VsRelayMin(1.0)
        };
        let mut row = Row::new(format!("pub->sub {label}"), "msg/s", target);
        for round in 0..o.rounds {
            for c in rotated(round) {
                let v = run("pub->sub", c, load::pub_sub(s.addr(c), &s.auth(c), size, d))?;
                row.push(c, v);
            }
        }
        progress(&row, started);
        rows.push(row);
    }

    let mut p50 = Row::new("req/reply p50", "us", Target::VsRelayMax(1.1));
    let mut p99 = Row::new("req/reply p99", "us", Target::VsRelayMax(1.1));
    let reqrep_rounds = if o.wants("reqrep") { o.rounds } else { 0 };
    for round in 0..reqrep_rounds {
        for c in rotated(round) {
            let lat = load::request_reply(s.addr(c), &s.auth(c), d)
                .map_err(|e| format!("request/reply via {c:?}: {e}"))?;
            p50.push(c, percentile(&lat, 0.50));
            p99.push(c, percentile(&lat, 0.99));
        }
    }
    if reqrep_rounds > 0 {
        progress(&p50, started);
        progress(&p99, started);
        rows.push(p50);
        rows.push(p99);
    }

    // Connection set-up with the same JWT: nats-server in operator mode
    // (shown as "direct") against natsgate. The relay has no JWT server
    // behind it, so its column stays empty.
    let mut conns = Row::new("JWT connects", "conn/s", Target::VsDirectMin(0.8));
    let conn_time = d.max(Duration::from_millis(500));
    let conn_rounds = if o.wants("connect") { o.conn_rounds } else { 0 };
    for round in 0..conn_rounds {
        let order = if round % 2 == 0 {
            [Config::Direct, Config::Gate]
        } else {
            [Config::Gate, Config::Direct]
        };
        for c in order {
            let addr = match c {
                Config::Direct => s.operator.addr,
                _ => s.gate.addr,
            };
            let v = run(
                "JWT connects",
                c,
                load::connection_rate(addr, &s.user, 4, conn_time),
            )?;
            conns.push(c, v);
        }
    }
    if conn_rounds > 0 {
        progress(&conns, started);
        rows.push(conns);
    }

    let gate_log = s.gate.log_summary();
    // The memory figure uses fresh processes; these are no longer needed.
    drop(s);
    if o.wants("memory") {
        rows.push(memory_row(o, &server_bin, gate_bin.as_deref(), &ids)?);
    }

    print_table(&rows);
    if gate_log.0 > 0 {
        println!(
            "\nnatsgate logged {} line(s) during the run; the last:",
            gate_log.0
        );
        for l in gate_log.1 {
            println!("  {l}");
        }
    }
    println!(
        "\ntotal time {:.0} s. Everything (servers, natsgate, relay, load generator) \
         shares this machine's {cores} cores.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Memory per idle authenticated connection, on fresh processes: nats-server
/// (direct clients), the relay and natsgate, each with `o.clients` clients.
fn memory_row(
    o: &Options,
    server_bin: &std::path::Path,
    gate_bin: Option<&std::path::Path>,
    ids: &setup::Identities,
) -> Result<Row, String> {
    let mut row = Row::new(
        format!("memory/idle conn @{}", o.clients),
        "KiB",
        Target::AbsMax(16.0),
    );
    if o.clients == 0 {
        return Ok(row);
    }
    let dir = procs::ScratchDir::new().map_err(|e| format!("scratch dir: {e}"))?;
    let server = NatsServer::start(
        server_bin,
        dir.path(),
        "memory",
        &setup::plain_server_config(),
    )?;
    let relay = procs::start_relay(server.addr)?;
    let config = setup::write_gate_config(&dir.path().join("gate"), ids, server.addr)
        .map_err(|e| format!("natsgate config: {e}"))?;
    let gate = procs::start_natsgate(gate_bin, &config)?;
    for c in CONFIGS {
        let (addr, auth, pid) = match c {
            Config::Direct => (server.addr, setup::gate_auth(), server.pid()),
            Config::Relay => (relay.addr, setup::gate_auth(), relay.pid()),
            Config::Gate => (gate.addr, ids.user.clone(), gate.pid()),
        };
        let first = client::Client::connect(addr, &auth, client::SMALL_BUFFER)
            .map_err(|e| format!("memory via {c:?}: {e}"))?;
        std::thread::sleep(Duration::from_millis(300));
        let before = procs::rss_of(pid);
        let idle = load::open_idle(addr, &auth, o.clients, 4)
            .map_err(|e| format!("memory via {c:?}: {e}"))?;
        std::thread::sleep(Duration::from_millis(1000));
        let after = procs::rss_of(pid);
        let per = after.saturating_sub(before) as f64 / o.clients as f64 / 1024.0;
        println!(
            "  memory {c:?}: RSS {:.1} MiB -> {:.1} MiB with {} clients, {per:.1} KiB each",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            o.clients
        );
        row.push(c, per);
        for cl in idle {
            cl.close_now();
        }
        first.close_now();
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(row)
}

/// The configuration order for a round: rotated, so none always goes first.
fn rotated(round: usize) -> [Config; 3] {
    let mut order = CONFIGS;
    order.rotate_left(round % 3);
    order
}

fn server_version(bin: &std::path::Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| e.to_string())
}

fn progress(row: &Row, started: Instant) {
    let f = |c| {
        row.median(c)
            .map_or("-".to_owned(), |v| fmt_value(v, row.unit))
    };
    println!(
        "  [{:>4.0} s] {:<24} direct {:>10}  relay {:>10}  natsgate {:>10}",
        started.elapsed().as_secs_f64(),
        row.name,
        f(Config::Direct),
        f(Config::Relay),
        f(Config::Gate)
    );
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "msg/s" | "conn/s" if v >= 1e6 => format!("{:.2}M", v / 1e6),
        "msg/s" | "conn/s" if v >= 1e3 => format!("{:.1}k", v / 1e3),
        "msg/s" | "conn/s" => format!("{v:.0}"),
        _ => format!("{v:.1}"),
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<26} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<16} met",
        "figure", "unit", "direct", "relay", "natsgate", "gate/dir", "gate/relay", "target"
    );
    println!("{}", "-".repeat(112));
    for row in rows {
        let d = row.median(Config::Direct);
        let r = row.median(Config::Relay);
        let g = row.median(Config::Gate);
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| fmt_value(v, row.unit));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let gd = ratio(g, d);
        let gr = ratio(g, r);
        let (target, met) = match row.target {
            Target::VsDirectMin(t) => (format!(">= {t} x direct"), gd.map(|x| x >= t)),
            Target::VsRelayMin(t) => (format!(">= {t} x relay"), gr.map(|x| x >= t)),
            Target::VsRelayMax(t) => (format!("<= {t} x relay"), gr.map(|x| x <= t)),
            Target::AbsMax(t) => (format!("<= {t} {}", row.unit), g.map(|x| x <= t)),
        };
        let fr = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "{:<26} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<16} {}",
            row.name,
            row.unit,
            cell(d),
            cell(r),
            cell(g),
            fr(gd),
            fr(gr),
            target,
            match met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
        );
    }
    println!(
        "\nmedians of the rounds; \"direct\" for JWT connects is nats-server in operator mode \
         with the same JWTs; memory is RSS growth per idle client of a fresh process \
         (direct: nats-server, relay: the relay process)."
    );
}
