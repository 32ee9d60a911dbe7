//! natsgate as a child process (the real binary), for tests that need
//! signals or the process's own file descriptors and memory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running natsgate binary; killed and reaped on drop. Its stderr is
/// collected line by line ([`GateProcess::log_lines`]).
pub struct GateProcess {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl GateProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Every stderr line so far, joined.
    /// The metrics address from natsgate's `metrics listening addr=...`
    /// log line (waits up to 5 s for it).
    pub async fn metrics_addr(&self) -> std::net::SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self.log_lines().iter().find_map(|l| {
                if !l.contains("metrics") || !l.contains("listening") {
                    return None;
                }
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .map(|a| a.trim_matches(|c| c == '"' || c == ','))
                    .and_then(|a| a.parse().ok())
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no `metrics listening addr=...` line in natsgate's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        self.log_lines().join("\n")
    }

    /// Sends signal `name` (e.g. `"HUP"`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The exit status once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the natsgate binary with `toml` as its config (in a tempdir),
/// `RUST_LOG=info`, and waits (bounded) for its `natsgate listening
/// addr=...` log line.
pub fn spawn_gate_binary(toml: &str) -> GateProcess {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("natsgate.toml");
    std::fs::write(&config, toml).expect("write config");
    let mut gate = spawn_gate_binary_at(&config, Some("info"));
    gate._dir = Some(dir);
    gate
}

/// Starts the natsgate binary with the caller's config file (which the
/// caller may rewrite, e.g. for a reload) and waits (bounded) for its
/// `natsgate listening addr=...` log line. `rust_log: None` starts it
/// without `RUST_LOG` (natsgate's default filter).
pub fn spawn_gate_binary_at(config: &Path, rust_log: Option<&str>) -> GateProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_natsgate"));
    command.arg("--config").arg(config);
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn natsgate");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("natsgate listening")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let mut gate = GateProcess {
        child,
        addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        log,
        _dir: None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        match rx.recv_timeout(Duration::from_millis(25)) {
            Ok(line) => break line,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // stderr closed without the line: the process is exiting.
                let status = gate.child.wait().expect("wait");
                panic!("natsgate exited at start ({status}):\n{}", gate.log());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = gate.exited() {
                    panic!("natsgate exited at start ({status}):\n{}", gate.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "natsgate did not report `natsgate listening` on stderr within 10s:\n{}",
                    gate.log()
                );
            }
        }
    };
    gate.addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(|a| a.trim_matches(|c| c == '"' || c == ','))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no addr= in {line:?}"));
    gate
}

/// Open fds and resident memory (KiB) of a process.
pub fn usage(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    (fds, rss)
}

pub async fn settle(pid: u32, baseline: (usize, u64)) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = usage(pid);
        if (now.0 <= baseline.0 + 10 && now.1 <= baseline.1 + 20 * 1024)
            || Instant::now() > deadline
        {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
