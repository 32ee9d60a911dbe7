//! natsgate as a service, against a real nats-server: the Prometheus series
//! and `/healthz` (in-process, `run_with_listeners`), and the binary's
//! signals: graceful shutdown on SIGTERM and config reload on SIGHUP
//! (interface.md sections 1 and 4).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use support::process::spawn_gate_binary_at;
use support::{Frame, NatsServer, RawClient, ReadError, http_get, keys, quote_toml};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "gate-upstream-s3cret";
/// Poll step for every bounded wait.
const STEP: Duration = Duration::from_millis(25);

/// A plain upstream that knows only natsgate's credential.
fn upstream() -> NatsServer {
    NatsServer::start(&format!(
        "authorization {{ users = [ {{user: \"gate\", password: \"{PASSWORD}\"}} ] }}\n"
    ))
}

/// A natsgate config: `[listen]` with `listen_extra`, the upstream, `rest`.
fn gate_toml(upstream: &NatsServer, listen_extra: &str, rest: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{listen_extra}\n\n[upstream]\nservers = [{}]\nuser = \"gate\"\npassword = {}\n\n{rest}\n",
        quote_toml(&upstream.url()),
        quote_toml(PASSWORD)
    )
}

/// A `[[users]]` entry; `extra` goes right after `name` (e.g. `account = ...`).
fn user_toml(kp: &nkeys::KeyPair, name: &str, extra: &str, permissions: &str) -> String {
    format!(
        "[[users]]\nnkey = {}\nname = {}\n{extra}\n{}\n",
        quote_toml(&kp.public_key()),
        quote_toml(name),
        if permissions.is_empty() {
            String::new()
        } else {
            format!("[users.permissions]\n{permissions}\n")
        }
    )
}

/// Polls `done` until it holds (returns how long that took) or `limit`
/// passes (panics naming `what`).
async fn wait_until(what: &str, limit: Duration, done: impl AsyncFnMut() -> bool) -> Duration {
    poll_until(limit, done)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// As [`wait_until`], `None` on timeout.
async fn poll_until(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(STEP).await;
    }
}

// === in-process natsgate with its metrics listener ===

/// natsgate spawned with `run_with_listeners`; cancelled on drop.
struct InProcess {
    addr: SocketAddr,
    metrics: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), String>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    async fn start(toml: &str) -> InProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = natsgate::config::Settings::from_toml_str(toml, dir.path())
            .unwrap_or_else(|e| panic!("natsgate rejected the test config: {e}\n{toml}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = metrics_listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let fut = natsgate::run_with_listeners(
            settings,
            listener,
            Some(metrics_listener),
            shutdown.clone(),
        );
        let handle = tokio::spawn(async move { fut.await.map_err(|e| e.to_string()) });
        InProcess {
            addr,
            metrics,
            shutdown,
            handle,
            _dir: dir,
        }
    }

    fn assert_running(&self) {
        assert!(
            !self.handle.is_finished(),
            "natsgate::run_with_listeners returned"
        );
    }

    /// The current `/metrics` text.
    async fn scrape(&self) -> Metrics {
        let (status, body) = http_get(self.metrics, "/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        Metrics(body)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A scraped `/metrics` text.
struct Metrics(String);

impl Metrics {
    /// The value of the series `name` with exactly `labels` (0 when absent:
    /// a labelled counter appears only once it was first incremented).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
        for line in self.0.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (series_name, found) = match series.split_once('{') {
                Some((n, rest)) => {
                    let rest = rest.strip_suffix('}').unwrap_or(rest);
                    let found: BTreeMap<&str, &str> = rest
                        .split(',')
                        .filter(|pair| !pair.is_empty())
                        .filter_map(|pair| pair.split_once('='))
                        .map(|(k, v)| (k, v.trim_matches('"')))
                        .collect();
                    (n, found)
                }
                None => (series, BTreeMap::new()),
            };
            if series_name == name && found == want {
                return value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            }
        }
        assert!(
            self.0.contains(&format!("# TYPE {name} ")),
            "series {name} is not exported at all:\n{}",
            self.0
        );
        0.0
    }
}

/// `flush`, without the INFO frames natsgate sends on its own (the
/// connect-info INFO that follows the first PONG).
async fn flush(c: &mut RawClient) -> Vec<Frame> {
    let frames = c.flush().await;
    frames
        .into_iter()
        .filter(|f| !matches!(f, Frame::Info(_)))
        .collect()
}

/// Connects and logs in as `kp`; panics if natsgate answers anything.
async fn login(addr: SocketAddr, kp: &nkeys::KeyPair) -> RawClient {
    let mut c = RawClient::connect(addr).await;
    c.connect_nkey(kp, json!({})).await;
    let frames = c.flush().await;
    assert!(
        frames.iter().all(|f| matches!(f, Frame::Info(_))),
        "login answered {frames:?}"
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metrics_series_moves() {
    let mut upstream = upstream();
    let user = keys::new_user();
    let toml = gate_toml(
        &upstream,
        "auth_timeout = \"300ms\"",
        &format!(
            "{}\n[metrics]\naddr = \"127.0.0.1:0\"\n",
            user_toml(
                &user,
                "svc",
                "account = \"APP\"",
                "publish = [\"ok.>\"]\nsubscribe = [\"ok.>\"]"
            )
        ),
    );
    let gate = InProcess::start(&toml).await;
    let m = gate.scrape().await;
    assert_eq!(m.get("natsgate_connections", &[]), 0.0);
    assert_eq!(m.get("natsgate_connections_total", &[]), 0.0);
    let c2u = [("direction", "client_to_upstream")];
    let u2c = [("direction", "upstream_to_client")];
    for d in [&c2u, &u2c] {
        assert_eq!(m.get("natsgate_messages_total", d), 0.0);
        assert_eq!(m.get("natsgate_bytes_total", d), 0.0);
    }
    assert_eq!(m.get("natsgate_upstream_connect_failures_total", &[]), 0.0);

    // Connections: the gauge follows open clients, the counter only grows.
    let mut publisher = login(gate.addr, &user).await;
    let m = gate.scrape().await;
    assert_eq!(m.get("natsgate_connections", &[]), 1.0);
    assert_eq!(m.get("natsgate_connections_total", &[]), 1.0);
    let mut subscriber = login(gate.addr, &user).await;
    let m = gate.scrape().await;
    assert_eq!(m.get("natsgate_connections", &[]), 2.0);
    assert_eq!(m.get("natsgate_connections_total", &[]), 2.0);

    // Permission violations, by kind and account name.
    publisher
        .send(b"PUB bad.x 2\r\nhi\r\nSUB bad.> 9\r\n")
        .await;
    assert_eq!(
        flush(&mut publisher).await,
        vec![
            Frame::err("Permissions Violation for Publish to \"bad.x\""),
            Frame::err("Permissions Violation for Subscription to \"bad.>\""),
        ]
    );
    let m = gate.scrape().await;
    let violations = "natsgate_permission_violations_total";
    assert_eq!(
        m.get(violations, &[("kind", "publish"), ("account", "APP")]),
        1.0
    );
    assert_eq!(
        m.get(violations, &[("kind", "subscribe"), ("account", "APP")]),
        1.0
    );
    // Denied frames are not relayed.
    assert_eq!(m.get("natsgate_messages_total", &c2u), 0.0);

    // Messages and bytes: N messages of a known payload size each way.
    const N: usize = 5;
    const PAYLOAD: &[u8] = b"0123456789abc"; // 13 bytes
    subscriber.send(b"SUB ok.> 1\r\n").await;
    assert_eq!(flush(&mut subscriber).await, vec![]);
    let before = gate.scrape().await;
    let mut batch = Vec::new();
    for i in 0..N {
        batch.extend_from_slice(format!("PUB ok.{i} {}\r\n", PAYLOAD.len()).as_bytes());
        batch.extend_from_slice(PAYLOAD);
        batch.extend_from_slice(b"\r\n");
    }
    publisher.send(&batch).await;
    assert_eq!(flush(&mut publisher).await, vec![]);
    let mut got = Vec::new();
    while got.len() < N {
        match subscriber.read_frame().await {
            Frame::Msg { payload, .. } => got.push(payload),
            other => panic!("expected MSG, got {other:?}"),
        }
    }
    assert!(got.iter().all(|p| p == PAYLOAD));
    let after = gate.scrape().await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let bytes = (N * PAYLOAD.len()) as f64;
    assert_eq!(delta("natsgate_messages_total", &c2u), N as f64);
    assert_eq!(delta("natsgate_messages_total", &u2c), N as f64);
    assert_eq!(
        delta("natsgate_bytes_total", &c2u),
        bytes,
        "bytes_total counts payload bytes (as nats-server's in_bytes)"
    );
    assert_eq!(delta("natsgate_bytes_total", &u2c), bytes);

    // Closing both clients brings the gauge back to 0.
    drop(publisher);
    drop(subscriber);
    wait_until(
        "natsgate_connections to drop to 0",
        Duration::from_secs(3),
        async || gate.scrape().await.get("natsgate_connections", &[]) == 0.0,
    )
    .await;

    // Auth failures, labelled as natsgate's auth code names them.
    let failures = "natsgate_auth_failures_total";
    let mut c = RawClient::connect(gate.addr).await;
    let sig = keys::sign_nonce(&user, "not-the-nonce-x");
    c.connect_json(
        &json!({"nkey": user.public_key(), "sig": sig, "verbose": false, "protocol": 1}),
    )
    .await;
    assert_eq!(
        c.expect_closed().await,
        vec![Frame::err("Authorization Violation")]
    );
    let mut c = RawClient::connect(gate.addr).await;
    c.connect_nkey(&keys::new_user(), json!({})).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Frame::err("Authorization Violation")]
    );
    let mut c = RawClient::connect(gate.addr).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Frame::err("Authentication Timeout")]
    );
    let m = gate.scrape().await;
    assert_eq!(
        m.get(failures, &[("reason", "signature_not_verified")]),
        1.0
    );
    assert_eq!(m.get(failures, &[("reason", "unknown_user")]), 1.0);
    assert_eq!(m.get(failures, &[("reason", "timeout")]), 1.0);
    assert_eq!(m.get("natsgate_connections_total", &[]), 5.0);

    // Upstream connect failures: the upstream is gone, a client logs in.
    let before = m.get("natsgate_upstream_connect_failures_total", &[]);
    upstream.stop();
    let mut c = RawClient::connect(gate.addr).await;
    c.connect_nkey(&user, json!({})).await;
    let frames = c.expect_closed().await;
    assert_eq!(frames, vec![Frame::err("Upstream Unavailable")]);
    let m = gate.scrape().await;
    assert_eq!(
        m.get("natsgate_upstream_connect_failures_total", &[]),
        before + 1.0
    );
    assert_eq!(m.get("natsgate_connections_total", &[]), 6.0);
    wait_until(
        "natsgate_connections to drop to 0",
        Duration::from_secs(3),
        async || gate.scrape().await.get("natsgate_connections", &[]) == 0.0,
    )
    .await;
    gate.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_upstream() {
    let mut upstream = upstream();
    let user = keys::new_user();
    let toml = gate_toml(
        &upstream,
        "",
        &format!(
            "{}\n[metrics]\naddr = \"127.0.0.1:0\"\n",
            user_toml(&user, "svc", "", "")
        ),
    );
    let gate = InProcess::start(&toml).await;
    let (status, body) = http_get(gate.metrics, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    upstream.stop();
    let took = wait_until(
        "/healthz 503 after the upstream stopped",
        Duration::from_secs(5),
        async || http_get(gate.metrics, "/healthz").await.0 == 503,
    )
    .await;
    eprintln!("/healthz turned 503 after {took:?}");
    gate.assert_running();

    upstream.restart();
    let took = wait_until(
        "/healthz 200 after the upstream restarted",
        Duration::from_secs(5),
        async || http_get(gate.metrics, "/healthz").await.0 == 200,
    )
    .await;
    eprintln!("/healthz turned 200 again after {took:?}");
    gate.assert_running();
    // And natsgate still serves clients.
    let mut c = login(gate.addr, &user).await;
    c.send(b"SUB x 1\r\nPUB x 1\r\nA\r\n").await;
    assert_eq!(flush(&mut c).await, vec![Frame::msg("x", "1", b"A")]);
}

// === the binary ===

/// Writes `text` to `path` atomically (a reload never sees half a file).
fn write_config(path: &Path, text: &str) {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_with_lame_duck_and_exits_zero() {
    const GRACE: Duration = Duration::from_secs(2);
    let upstream = upstream();
    let user = keys::new_user();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("natsgate.toml");
    write_config(
        &config,
        &gate_toml(
            &upstream,
            "shutdown_grace = \"2s\"",
            &user_toml(&user, "svc", "", ""),
        ),
    );
    let mut gate = spawn_gate_binary_at(&config, None);
    let addr = gate.addr;
    let mut clients = [login(addr, &user).await, login(addr, &user).await];

    let sent = Instant::now();
    gate.signal("TERM");
    let close_by = sent + GRACE + Duration::from_secs(1);

    for (i, c) in clients.iter_mut().enumerate() {
        // Frames already queued (the connect-info INFO) may come first.
        loop {
            let left = close_by.saturating_duration_since(Instant::now());
            match c.try_read_frame_within(left).await {
                Ok(Frame::Info(info)) if info["ldm"] == json!(true) => break,
                Ok(Frame::Info(_)) => {}
                Ok(Frame::Ping) => c.send(b"PONG\r\n").await,
                other => panic!(
                    "client {i}: expected INFO with \"ldm\":true, got {other:?}\n{}",
                    gate.log()
                ),
            }
        }
    }

    // The listener is gone: new connections are refused.
    wait_until(
        "new connections to be refused",
        Duration::from_secs(1),
        async || TcpStream::connect(addr).await.is_err(),
    )
    .await;

    for (i, c) in clients.iter_mut().enumerate() {
        loop {
            let left = close_by.saturating_duration_since(Instant::now());
            match c.try_read_frame_within(left).await {
                Err(ReadError::Closed { .. }) | Err(ReadError::Io(_)) => break,
                Ok(Frame::Info(_)) => {}
                Ok(Frame::Ping) => {
                    let _ = c.try_send(b"PONG\r\n").await;
                }
                other => panic!(
                    "client {i}: expected a close within grace + 1s, got {other:?} after {:?}",
                    sent.elapsed()
                ),
            }
        }
    }
    eprintln!("both clients closed {:?} after SIGTERM", sent.elapsed());

    let exit_by = sent + GRACE + Duration::from_secs(2);
    let status = loop {
        if let Some(status) = gate.exited() {
            break status;
        }
        assert!(
            Instant::now() < exit_by,
            "natsgate did not exit within grace + 2s of SIGTERM:\n{}",
            gate.log()
        );
        tokio::time::sleep(STEP).await;
    };
    eprintln!("natsgate exited {:?} after SIGTERM", sent.elapsed());
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", gate.log());
}

/// Logs in as `kp` on a fresh connection; `Err` with what natsgate said
/// when it refused.
async fn try_login(addr: SocketAddr, kp: &nkeys::KeyPair) -> Result<RawClient, String> {
    let mut c = RawClient::try_connect(addr).await?;
    c.connect_nkey(kp, json!({})).await;
    match c.try_flush().await {
        Ok(frames) if frames.iter().all(|f| matches!(f, Frame::Info(_))) => Ok(c),
        Ok(frames) => Err(format!("{frames:?}")),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// What `PUB <subject>` earns on `c`: the frames up to the flush's PONG,
/// without INFOs.
async fn publish(c: &mut RawClient, subject: &str) -> Vec<Frame> {
    c.send(format!("PUB {subject} 1\r\nx\r\n").as_bytes()).await;
    flush(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_without_dropping_connections() {
    let upstream = upstream();
    let (a, b) = (keys::new_user(), keys::new_user());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("natsgate.toml");
    write_config(
        &config,
        &gate_toml(
            &upstream,
            "",
            &user_toml(&a, "a", "", "publish = [\"a.>\"]"),
        ),
    );
    let mut gate = spawn_gate_binary_at(&config, None);
    let addr = gate.addr;
    let mut conn_a = login(addr, &a).await;
    assert_eq!(publish(&mut conn_a, "a.x").await, vec![]);
    assert!(try_login(addr, &b).await.is_err(), "B is not a user yet");

    // Reload: B added, A's publish permission moved from a.> to b.>.
    let reloaded = format!(
        "{}{}",
        user_toml(&a, "a", "", "publish = [\"b.>\"]"),
        user_toml(&b, "b", "", "")
    );
    write_config(&config, &gate_toml(&upstream, "", &reloaded));
    gate.signal("HUP");
    let took = poll_until(Duration::from_secs(2), async || {
        try_login(addr, &b).await.is_ok()
    })
    .await
    .unwrap_or_else(|| panic!("B cannot log in 2s after SIGHUP; log:\n{}", gate.log()));
    eprintln!("B logged in {took:?} after SIGHUP");
    let deny_a = vec![Frame::err("Permissions Violation for Publish to \"a.x\"")];
    wait_until(
        "A's new permissions to apply",
        Duration::from_secs(2),
        async || publish(&mut conn_a, "a.x").await == deny_a,
    )
    .await;
    assert_eq!(
        publish(&mut conn_a, "b.x").await,
        vec![],
        "A may publish to b.>"
    );

    // A broken config is refused; the previous one stays.
    let seen = gate.log_lines().len();
    write_config(
        &config,
        &format!("bogus_key = 1\n{}", gate_toml(&upstream, "", &reloaded)),
    );
    gate.signal("HUP");
    wait_until(
        "the log to report the failed reload",
        Duration::from_secs(2),
        async || {
            gate.log_lines()[seen..].iter().any(|line| {
                let l = line.to_lowercase();
                l.contains("reload")
                    && (l.contains("fail") || l.contains(" warn ") || l.contains(" error "))
            })
        },
    )
    .await;
    assert!(gate.exited().is_none(), "natsgate exited:\n{}", gate.log());
    try_login(addr, &b)
        .await
        .unwrap_or_else(|e| panic!("B refused after a failed reload: {e}\n{}", gate.log()));
    assert_eq!(
        publish(&mut conn_a, "a.x").await,
        deny_a,
        "A keeps the reloaded permissions"
    );
    assert_eq!(publish(&mut conn_a, "b.x").await, vec![]);
}
