//! A real browser through natsgate's WebSocket listener: headless Chromium
//! (Debian's `/usr/bin/chromium`, driven by playwright-core) loads a page
//! this test serves over HTTP on 127.0.0.1; the page (tests/browser/page.js,
//! bundled with esbuild) connects with nats.js `wsconnect` and a user's
//! creds (JWT + seed), publishes, subscribes, requests, and gets the
//! `Permissions Violation` text for a denied subscription. The test reads
//! the page's result, and checks on a TCP client what the page published.
//!
//! Needs `/usr/bin/chromium` and `tests/browser/node_modules` (`npm ci`):
//! without them the test says so and passes, unless
//! `NATSGATE_REQUIRE_BROWSER=1` (set by .ci/run, which installs both).

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nkeys::KeyPair;
use support::jwt as j;
use support::{Frame, Gate, NatsServer, RawClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "browser-gate-s3cret";
const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether the browser and the node modules are there; panics when they
/// are required and missing.
fn available() -> bool {
    let missing: Vec<String> = [
        PathBuf::from(CHROMIUM),
        browser_dir().join("node_modules/playwright-core"),
        browser_dir().join("node_modules/@nats-io/nats-core"),
        browser_dir().join("node_modules/.bin/esbuild"),
    ]
    .into_iter()
    .filter(|p| !p.exists())
    .map(|p| p.display().to_string())
    .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "browser test skipped: missing {} (apt-get install -y chromium; cd tests/browser && npm ci)",
        missing.join(", ")
    );
    if std::env::var("NATSGATE_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("{why}, and NATSGATE_REQUIRE_BROWSER=1");
    }
    eprintln!("{why}");
    false
}

/// Bundles page.js into `out` with esbuild.
fn bundle(out: &Path) {
    let status = std::process::Command::new(browser_dir().join("node_modules/.bin/esbuild"))
        .current_dir(browser_dir())
        .args([
            "page.js",
            "--bundle",
            "--format=iife",
            "--global-name=natsTest",
        ])
        .arg(format!("--outfile={}", out.display()))
        .stdout(Stdio::null())
        .status()
        .expect("run esbuild");
    assert!(status.success(), "esbuild failed");
}

/// Serves `/` (the page) and `/bundle.js` on 127.0.0.1:0 until dropped.
async fn serve_page(bundle: Vec<u8>) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let page = b"<!doctype html><html><head><meta charset=\"utf-8\"><title>natsgate</title>\
        <script src=\"/bundle.js\"></script></head><body>natsgate browser test</body></html>"
        .to_vec();
    let handle = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (page, bundle) = (page.clone(), bundle.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let request = String::from_utf8_lossy(&buf);
                let path = request.split(' ').nth(1).unwrap_or("/");
                let (status, kind, body) = match path {
                    "/" => ("200 OK", "text/html; charset=utf-8", page),
                    "/bundle.js" => ("200 OK", "text/javascript", bundle),
                    _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_page_uses_natsgate_over_websocket() {
    if !available() {
        return;
    }
    // Operator, account and the browser's user: it may not subscribe to
    // secret.>, and may connect only over WebSocket.
    let op = j::operator("browser", false, None);
    let account = KeyPair::new_account();
    let account_jwt = j::sign_account(&j::account_claims(&account, "APP"), &op.kp);
    let kp = KeyPair::new_user();
    let mut claims = j::user_claims(&kp, "browser");
    claims.nats.limits.subscribe.deny = vec!["secret.>".into()];
    claims.nats.limits.allowed_connection_types = vec!["WEBSOCKET".into()];
    let user_jwt = j::sign_user(&claims, &account);
    // An observer on TCP.
    let observer_kp = KeyPair::new_user();
    let observer_jwt = j::sign_user(&j::user_claims(&observer_kp, "observer"), &account);

    let upstream = NatsServer::start(&j::upstream_config(PASSWORD));
    let dir = tempfile::tempdir().unwrap();
    let mut toml = j::gate_setup(
        dir.path(),
        &upstream.url(),
        PASSWORD,
        &[&op.jwt],
        &[(account.public_key(), account_jwt)],
    );
    toml.push_str("\n[websocket]\naddr = \"127.0.0.1:0\"\nno_tls = true\ncompression = true\n");
    let creds_path = dir.path().join("browser.creds");
    std::fs::write(&creds_path, j::creds(&user_jwt, &kp)).unwrap();
    let gate = Gate::start_websocket(&toml, dir);

    let mut observer = RawClient::connect(gate.addr()).await;
    j::connect_jwt(
        &mut observer,
        &observer_jwt,
        Some(&observer_kp),
        serde_json::json!({}),
    )
    .await;
    observer.send(b"SUB browser.out 1\r\nPING\r\n").await;
    loop {
        match observer.read_frame().await {
            Frame::Pong => break,
            Frame::Info(_) => {}
            other => panic!("observer: {other:?}"),
        }
    }

    let scratch = tempfile::tempdir().unwrap();
    let bundle_path = scratch.path().join("bundle.js");
    bundle(&bundle_path);
    let (page_addr, server) = serve_page(std::fs::read(&bundle_path).unwrap()).await;
    let child = std::process::Command::new("node")
        .current_dir(browser_dir())
        .arg("run.mjs")
        .arg(format!("http://{page_addr}/"))
        .arg(format!("ws://{}", gate.ws_addr()))
        .arg(&creds_path)
        .arg(CHROMIUM)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let pid = child.id();
    let waited = tokio::time::timeout(
        Duration::from_secs(45),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let Ok(output) = waited else {
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("the browser run did not end within 45 s");
    };
    let output = output.expect("join").expect("node output");
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node run.mjs failed:\n{stdout}\n{stderr}"
    );
    let line = stdout.lines().last().unwrap_or_default();
    let result: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    eprintln!("page result: {result}");
    assert!(result.get("error").is_none(), "the page failed: {result}");
    assert!(
        result["userAgent"]
            .as_str()
            .unwrap_or_default()
            .contains("Chrome")
    );
    assert_eq!(result["pubsub"], "hello from the browser");
    assert_eq!(result["request"], "answer:ping");
    let denied = result["denied"].as_str().unwrap_or_default();
    assert!(
        denied.contains("Permissions Violation for Subscription to \"secret.plans\""),
        "denied subscription: {result}"
    );
    let delivered = loop {
        match observer.read_frame().await {
            Frame::Info(_) => {}
            other => break other,
        }
    };
    assert_eq!(
        delivered,
        Frame::msg("browser.out", "1", b"to the tcp side")
    );
}
