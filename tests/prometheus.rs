//! A real Prometheus (Debian's `prometheus` package) scrapes natsgate: the
//! per-user and violation series are read back through Prometheus's HTTP
//! query API, and `promtool check metrics` finds no problem in natsgate's
//! exposition.
//!
//! Needs `prometheus` and `promtool` on PATH (`.ci/run` installs them). When
//! they are missing the test says so and passes, unless
//! `NATSGATE_REQUIRE_PROMETHEUS` is set (as `.ci/run` sets it): then it fails.

mod support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::process::spawn_gate_binary;
use support::{Frame, NatsServer, RawClient, keys, quote_conf, quote_toml};

const PASSWORD: &str = "prometheus-pw";

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Prometheus server; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Prometheus scraping `target` every second, on a port chosen now
/// (a free port from the kernel; tried again if another process takes it
/// first).
async fn start_prometheus(target: SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let mut file = std::fs::File::create(&config).unwrap();
    write!(
        file,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: natsgate\n    static_configs:\n      - targets: ['{target}']\n"
    )
    .unwrap();
    for _attempt in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: the port was taken, try another
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let (status, _) = support::http_get(addr, "/-/ready").await;
                if status == 200 {
                    return Prometheus {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("prometheus did not start");
}

/// `/api/v1/query` until it returns a non-empty vector (bounded).
async fn query(prometheus: SocketAddr, promql: &str) -> Vec<Value> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let path = format!("/api/v1/query?query={encoded}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = support::http_get(prometheus, &path).await;
        if status == 200 {
            let answer: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer["status"], "success", "{body}");
            let result = answer["data"]["result"].as_array().cloned().unwrap();
            if !result.is_empty() {
                return result;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no result for {promql} within 30 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_user_and_violation_series() {
    if !(have("prometheus") && have("promtool")) {
        assert!(
            std::env::var_os("NATSGATE_REQUIRE_PROMETHEUS").is_none(),
            "prometheus/promtool not found, and NATSGATE_REQUIRE_PROMETHEUS is set"
        );
        eprintln!(
            "skipped: prometheus and promtool are not installed (apt-get install prometheus)"
        );
        return;
    }
    let server = NatsServer::start(&format!(
        "authorization {{ users = [ {{user: \"gate\", password: {}}} ] }}\n",
        quote_conf(PASSWORD)
    ));
    let alice = keys::new_user();
    let gate = spawn_gate_binary(&format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n[upstream]\nservers = [{}]\nuser = \"gate\"\n\
         password = {}\n\n[metrics]\naddr = \"127.0.0.1:0\"\n\n\
         [[users]]\nnkey = {}\nname = \"alice\"\naccount = \"APP\"\n\
         [users.permissions]\npublish = {{ allow = [\"a.>\"], deny = [\"a.secret\"] }}\n\
         subscribe = [\"a.>\"]\n",
        quote_toml(&server.url()),
        quote_toml(PASSWORD),
        quote_toml(&alice.public_key()),
    ));
    let metrics = gate.metrics_addr().await;

    let mut c = RawClient::connect(gate.addr).await;
    c.connect_nkey(&alice, json!({})).await;
    c.send(b"SUB a.> 1\r\nPUB a.x 5\r\nhello\r\nPUB a.secret 2\r\nhi\r\n")
        .await;
    let frames = c.flush().await;
    assert!(
        frames.contains(&Frame::msg("a.x", "1", b"hello")),
        "{frames:?}"
    );

    let prometheus = start_prometheus(metrics).await;
    let user = alice.public_key();
    let sent = query(
        prometheus.addr,
        &format!(
            "natsgate_user_messages_total{{user=\"{user}\",direction=\"client_to_upstream\"}}"
        ),
    )
    .await;
    assert_eq!(sent.len(), 1);
    assert_eq!(value_of(&sent[0]), 1.0);
    assert_eq!(sent[0]["metric"]["name"], "alice");
    assert_eq!(sent[0]["metric"]["account"], "APP");
    let delivered = query(
        prometheus.addr,
        &format!("natsgate_user_bytes_total{{user=\"{user}\",direction=\"upstream_to_client\"}}"),
    )
    .await;
    assert_eq!(value_of(&delivered[0]), 5.0);
    let violations = query(
        prometheus.addr,
        &format!("natsgate_user_violations_total{{user=\"{user}\"}}"),
    )
    .await;
    assert_eq!(value_of(&violations[0]), 1.0);
    let by_kind = query(
        prometheus.addr,
        "natsgate_permission_violations_total{kind=\"publish\",account=\"APP\"}",
    )
    .await;
    assert_eq!(value_of(&by_kind[0]), 1.0);
    let connections = query(prometheus.addr, "natsgate_connections").await;
    assert_eq!(value_of(&connections[0]), 1.0);
    let up = query(prometheus.addr, "up{job=\"natsgate\"}").await;
    assert_eq!(value_of(&up[0]), 1.0, "the scrape itself succeeded");

    // promtool reads the exposition as Prometheus does and lints it.
    let (status, body) = support::http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {report}\n{body}");
    assert!(
        report.trim().is_empty(),
        "promtool found problems: {report}"
    );
}
