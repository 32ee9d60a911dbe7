//! The `natsgate` binary: command line, logging, runtime, signals and exit
//! status. Everything else lives in the library.
//!
//! Exit status: 0 after a clean shutdown (or a successful `check`), 1 with a
//! one-line reason on stderr when the config is unusable, the listen address
//! cannot be bound, or the proxy fails. Usage errors exit 2 (clap's
//! convention).
//!
//! Signals (handled once the proxy runs): SIGTERM and SIGINT shut down
//! gracefully ([`natsgate::shutdown`]), SIGHUP reloads ([`natsgate::reload`]).

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use natsgate::config::{LogFormat, Settings};

/// An authenticating proxy for NATS: NKey and JWT auth with per-user
/// permissions, in front of a stock nats-server.
#[derive(Debug, Parser)]
#[command(name = "natsgate", version, about)]
struct Cli {
    /// The config file.
    #[arg(short, long, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate the config and everything it names, print a summary,
    /// and exit without listening.
    Check,
    /// Say whether a user may publish or subscribe to a subject, and which
    /// rule decides, in nats-server's order. Exit status 0 allowed, 1
    /// denied, 2 bad input (bad subject, unknown user, bad arguments, a
    /// config that does not load).
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    /// The user: a [[users]] name or public key (U...), or a user's .creds
    /// file (its JWT is verified against the config's operators and
    /// accounts, as at login).
    #[arg(long, value_name = "NAME|U...|CREDS_FILE")]
    user: String,
    /// `pub` or `sub`.
    #[arg(value_parser = ["pub", "sub"])]
    op: String,
    /// The subject.
    subject: String,
    /// The queue group (`sub` only).
    queue: Option<String>,
    /// The reply subject (`pub` only).
    #[arg(long, value_name = "SUBJECT")]
    reply: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Explain(args)) = &cli.command {
        return explain(&cli.config, args);
    }
    let settings = match Settings::load(&cli.config) {
        Ok(settings) => settings,
        Err(e) => return fail(e),
    };
    match cli.command {
        Some(Command::Check) => check(&cli.config, &settings),
        Some(Command::Explain(_)) => ExitCode::from(EXIT_BAD_INPUT),
        None => run(settings),
    }
}

/// `natsgate check`: the config loaded, so print what it holds (never a
/// secret).
fn check(path: &Path, settings: &Settings) -> ExitCode {
    let mut out = String::new();
    let line = |out: &mut String, text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(&mut out, format!("config: {} (ok)", path.display()));
    line(&mut out, format!("listen: {}", settings.listen.addr));
    if let Some(ws) = &settings.websocket {
        let scheme = if ws.tls.is_some() {
            "wss"
        } else {
            "ws (no_tls)"
        };
        line(&mut out, format!("websocket: {} ({scheme})", ws.addr));
    }

    line(&mut out, String::new());
    line(&mut out, "upstream servers:".into());
    for server in &settings.upstream.servers {
        line(&mut out, format!("  {}", server.url));
    }
    line(
        &mut out,
        format!(
            "upstream credential: {}",
            settings.upstream.credential.describe()
        ),
    );
    for account in &settings.upstream.accounts {
        line(
            &mut out,
            format!(
                "  account {}: {}",
                account.account,
                account.credential.describe()
            ),
        );
    }

    line(&mut out, String::new());
    line(&mut out, format!("static users: {}", settings.users.len()));
    if !settings.users.is_empty() {
        let rows: Vec<[&str; 3]> = settings
            .users
            .iter()
            .map(|user| {
                [
                    user.name.as_deref().unwrap_or("-"),
                    user.nkey.as_str(),
                    user.account.as_deref().unwrap_or("-"),
                ]
            })
            .collect();
        table(&mut out, ["NAME", "PUBLIC KEY", "ACCOUNT"], &rows);
    }
    if let Err(problem) = jwt_summary(&mut out, settings) {
        print!("{out}");
        let _ = std::io::stdout().flush();
        eprintln!("natsgate: {problem}");
        return ExitCode::FAILURE;
    }
    print!("{out}");
    // A closed stdout (`natsgate check | head -1`) is not a config problem.
    let _ = std::io::stdout().flush();
    ExitCode::SUCCESS
}

/// `natsgate explain`: prints the decision; exit 0 allowed, 1 denied, 2
/// bad input (also a config or JWT file that does not load).
fn explain(path: &Path, args: &ExplainArgs) -> ExitCode {
    let bad = |reason: String| {
        eprintln!("natsgate: {reason}");
        ExitCode::from(EXIT_BAD_INPUT)
    };
    let settings = match Settings::load(path) {
        Ok(settings) => settings,
        Err(e) => return bad(e.to_string()),
    };
    let now = std::time::SystemTime::now();
    let authenticator = match natsgate::auth::Authenticator::load(&settings, now) {
        Ok(authenticator) => authenticator,
        Err(e) => return bad(e.to_string()),
    };
    // An existing file is a .creds file (or a bare user JWT); anything else
    // names a static user.
    let token;
    let who = if Path::new(&args.user).is_file() {
        token = match std::fs::read_to_string(&args.user) {
            Ok(text) => match user_jwt_of(&text) {
                Some(jwt) => jwt,
                None => {
                    return bad(format!(
                        "{}: not a .creds file (and not a user JWT)",
                        args.user
                    ));
                }
            },
            Err(e) => return bad(format!("{}: {e}", args.user)),
        };
        natsgate::auth::explain::Who::Jwt(&token)
    } else {
        natsgate::auth::explain::Who::Static(&args.user)
    };
    let query = natsgate::auth::explain::Query {
        publish: args.op == "pub",
        subject: &args.subject,
        queue: args.queue.as_deref(),
        reply: args.reply.as_deref(),
    };
    let report = match authenticator.explain(who, query, now) {
        Ok(report) => report,
        Err(e) => return bad(e.to_string()),
    };
    print!("{}", report.text());
    let _ = std::io::stdout().flush();
    if report.explanation.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The user JWT of a `.creds` file, or of a file that holds only the JWT.
fn user_jwt_of(text: &str) -> Option<String> {
    if let Ok((jwt, _seed)) = natsgate::config::parse_creds(text) {
        return Some(jwt);
    }
    let bare = text.trim();
    (bare.split('.').count() == 3 && !bare.contains(char::is_whitespace)).then(|| bare.to_owned())
}

/// The operators and accounts tables of `natsgate check`: every JWT is
/// loaded and verified exactly as the proxy loads it; a JWT that does not
/// load is returned as the problem (naming its file).
fn jwt_summary(out: &mut String, settings: &Settings) -> Result<(), String> {
    let Some(jwt) = &settings.jwt else {
        out.push_str("\njwt: not configured (static NKey users only)\n");
        return Ok(());
    };
    let trust = natsgate::auth::jwt::TrustStore::load(
        &jwt.operators,
        jwt.accounts_dir.as_deref(),
        &jwt.accounts,
        std::time::SystemTime::now(),
    )
    .map_err(|e| e.to_string())?;
    let when = |t: Option<std::time::SystemTime>| match t {
        Some(t) => jiff::Timestamp::try_from(t).map_or_else(|_| "?".into(), |t| t.to_string()),
        None => "never".into(),
    };
    let operators: Vec<[String; 5]> = trust
        .operators()
        .map(|o| {
            [
                o.name.clone(),
                o.key.clone(),
                o.signing_keys.join(" "),
                if o.strict_signing_keys {
                    "yes".into()
                } else {
                    "no".into()
                },
                o.system_account.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str(&format!("\noperators: {}\n", operators.len()));
    let rows: Vec<[&str; 5]> = operators
        .iter()
        .map(|r| r.each_ref().map(String::as_str))
        .collect();
    table(
        out,
        [
            "NAME",
            "PUBLIC KEY",
            "SIGNING KEYS",
            "STRICT",
            "SYSTEM ACCOUNT",
        ],
        &rows,
    );

    let mut accounts: Vec<[String; 6]> = trust
        .accounts()
        .map(|a| {
            let keys: Vec<String> = a
                .signing_keys
                .iter()
                .map(|k| {
                    if k.scoped {
                        format!("{} (scoped: {})", k.key, k.role)
                    } else {
                        k.key.clone()
                    }
                })
                .collect();
            [
                a.name.clone(),
                a.key.clone(),
                if keys.is_empty() {
                    "-".into()
                } else {
                    keys.join(" ")
                },
                a.revocation_count().to_string(),
                when(a.expires_at),
                if a.limits.conn < 0 {
                    "unlimited".into()
                } else {
                    a.limits.conn.to_string()
                },
            ]
        })
        .collect();
    accounts.sort();
    out.push_str(&format!("\naccounts: {}\n", accounts.len()));
    let rows: Vec<[&str; 6]> = accounts
        .iter()
        .map(|r| r.each_ref().map(String::as_str))
        .collect();
    table(
        out,
        [
            "NAME",
            "PUBLIC KEY",
            "SIGNING KEYS",
            "REVOCATIONS",
            "EXPIRES",
            "CONNECTIONS",
        ],
        &rows,
    );
    if let Some(kv) = &jwt.kv {
        kv_summary(out, settings, kv, &trust);
    }
    Ok(())
}

/// The `[jwt.kv]` part of `natsgate check`: the bucket's entries, each
/// verified as natsgate would before using it. An unreachable bucket is
/// shown, not an error: natsgate starts without it.
fn kv_summary(
    out: &mut String,
    settings: &Settings,
    kv: &natsgate::config::KvSettings,
    trust: &natsgate::auth::jwt::TrustStore,
) {
    out.push_str(&format!(
        "\naccount store: kv bucket {} (replicas {}, create {}) on the upstream\n",
        kv.bucket, kv.replicas, kv.create
    ));
    let fleet = natsgate::store::FleetStore::new(
        kv.clone(),
        &settings.upstream,
        natsgate::metrics::Metrics::new(),
    );
    let contents = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(fleet.contents()));
    let entries = match contents {
        Ok(entries) => entries,
        Err(e) => {
            out.push_str(&format!("  not readable now: {e}\n"));
            return;
        }
    };
    let now = std::time::SystemTime::now();
    let rows: Vec<[String; 4]> = entries
        .iter()
        .map(|(key, value)| {
            let Some(value) = value else {
                return [
                    key.clone(),
                    "-".into(),
                    "-".into(),
                    "deleted (ignored)".into(),
                ];
            };
            let token = String::from_utf8_lossy(value);
            match trust.check_update(token.trim(), Some(key), now) {
                Ok(info) => [
                    key.clone(),
                    info.name.clone(),
                    info.claims.issued_at.to_string(),
                    "ok".into(),
                ],
                Err(_) if trust.check_delete(token.trim(), true).is_ok() => [
                    key.clone(),
                    "-".into(),
                    "-".into(),
                    "deleted by the operator".into(),
                ],
                Err(refusal) => [
                    key.clone(),
                    "-".into(),
                    "-".into(),
                    format!("refused: {}", refusal.description()),
                ],
            }
        })
        .collect();
    out.push_str(&format!("  entries: {}\n", rows.len()));
    let rows: Vec<[&str; 4]> = rows
        .iter()
        .map(|r| r.each_ref().map(String::as_str))
        .collect();
    table(out, ["ACCOUNT", "NAME", "IAT", "STATE"], &rows);
}

/// Runs the proxy until SIGTERM/SIGINT.
fn run(settings: Settings) -> ExitCode {
    init_tracing(&settings);

    // Bind before anything starts, so a taken address is a one-line error.
    let std_listener = match bind(&settings.listen.addr) {
        Ok(listener) => listener,
        Err(reason) => return fail(reason),
    };
    // One current-thread runtime per core: each session, its sockets'
    // events and its timers stay on one thread (no cross-thread wake-ups).
    // The main thread's runtime is worker 0 and also runs the accept loop,
    // the reload and the metrics endpoint.
    let workers = match Workers::start(worker_count()) {
        Ok(workers) => workers,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let result = workers.main.block_on(async {
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| format!("cannot use the listen socket: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot use the listen socket: {e}"))?;
        tracing::debug!(addr = %local, workers = workers.handles.len(), "listen socket bound");

        let shutdown = CancellationToken::new();
        tokio::spawn(natsgate::shutdown::on_stop_signals(shutdown.clone()));
        natsgate::service::run_on(settings, listener, shutdown, &workers.handles)
            .await
            .map_err(|e| e.to_string())
    });
    // Tasks still running (the signal handler, stragglers) are not waited
    // for long: the proxy has already drained what it wanted to.
    workers.stop();

    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            tracing::error!(error = %reason, "stopped with an error");
            fail(reason)
        }
    }
}

/// How many current-thread runtimes sessions are spread over: one per core
/// natsgate may use, or `NATSGATE_WORKERS` (`0`: tokio's multi-threaded
/// scheduler for everything instead, kept for comparison in benchmarks).
fn worker_count() -> usize {
    match std::env::var("NATSGATE_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// The runtimes sessions run on: the main thread's and one more thread per
/// further core, each a current-thread runtime.
struct Workers {
    main: tokio::runtime::Runtime,
    /// Every worker's handle, the main one first (none: sessions run on
    /// `main`).
    handles: Vec<tokio::runtime::Handle>,
    /// Ends the other workers' threads.
    done: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// `count` current-thread runtimes, or with 0 one multi-threaded
    /// runtime and no worker handles (sessions then run on it).
    fn start(count: usize) -> std::io::Result<Workers> {
        let build = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        };
        let done = CancellationToken::new();
        if count == 0 {
            let main = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("natsgate")
                .build()?;
            return Ok(Workers {
                main,
                handles: Vec::new(),
                done,
                threads: Vec::new(),
            });
        }
        let main = build()?;
        let mut handles = vec![main.handle().clone()];
        let mut threads = Vec::new();
        for i in 1..count {
            let runtime = build()?;
            handles.push(runtime.handle().clone());
            let done = done.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("natsgate-{i}"))
                    .spawn(move || {
                        runtime.block_on(done.cancelled());
                        runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
                    })?,
            );
        }
        Ok(Workers {
            main,
            handles,
            done,
            threads,
        })
    }

    fn stop(self) {
        self.done.cancel();
        for thread in self.threads {
            let _ = thread.join();
        }
        self.main.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    }
}

/// Binds the listen address (`host:port` or a socket address) as a
/// non-blocking std listener for tokio.
fn bind(addr: &str) -> Result<StdTcpListener, String> {
    let listener =
        StdTcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(listener)
}

/// Logs to stderr as text or JSON per `[log]`; `RUST_LOG`, when set,
/// replaces the configured level.
fn init_tracing(settings: &Settings) {
    let (filter, bad_rust_log) = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(&settings.log.level), Some(e)),
        },
        _ => (EnvFilter::new(&settings.log.level), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match settings.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(e) = bad_rust_log {
        tracing::warn!(error = %e, level = %settings.log.level, "RUST_LOG is not a valid filter; using the configured level");
    }
}

/// Prints `natsgate: <reason>` to stderr and returns exit status 1.
fn fail(reason: impl std::fmt::Display) -> ExitCode {
    eprintln!("natsgate: {reason}");
    ExitCode::FAILURE
}

/// Left-aligned columns, two spaces apart, indented by two.
fn table<const N: usize>(out: &mut String, header: [&str; N], rows: &[[&str; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
}

/// `natsgate explain`'s status for bad input (clap's usage errors use it
/// too).
const EXIT_BAD_INPUT: u8 = 2;
/// Without `--config`.
const DEFAULT_CONFIG: &str = "natsgate.toml";
/// How long the runtime waits for leftover tasks after `run` returned.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);
