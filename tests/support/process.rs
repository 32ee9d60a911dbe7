//! natsgate as a child process (the real binary), for tests that need
//! signals or the process's own file descriptors and memory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running natsgate binary; killed and reaped on drop.
pub struct GateProcess {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the natsgate binary with `toml` as its config (in a tempdir) and
/// waits (bounded) for its `natsgate listening addr=...` log line.
pub fn spawn_gate_binary(toml: &str) -> GateProcess {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("natsgate.toml");
    std::fs::write(&config, toml).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_natsgate"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn natsgate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("natsgate listening")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("natsgate did not report `natsgate listening` on stderr");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(|a| a.trim_matches(|c| c == '"' || c == ','))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no addr= in {line:?}"));
    GateProcess {
        child,
        addr,
        _dir: dir,
    }
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
