//! The processes under test: nats-server, natsgate and the reference relay,
//! each a child process on 127.0.0.1 with a port chosen at run time.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A private scratch directory, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new() -> std::io::Result<ScratchDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("natsgate-bench-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes the child die with the bench (SIGKILL when the parent exits).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A child process, killed on drop.
pub struct Proc {
    pub addr: SocketAddr,
    child: Child,
    /// The last lines the process logged (after the listening line).
    log: Arc<Mutex<(u64, VecDeque<String>)>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many lines the process logged after start-up, and the last few.
    pub fn log_summary(&self) -> (u64, Vec<String>) {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        (log.0, log.1.iter().cloned().collect())
    }

    /// Starts `cmd`, whose `stream` (stdout or stderr, piped) announces the
    /// listen address in a line containing `marker` and `addr=`.
    fn start(
        name: &'static str,
        mut cmd: Command,
        use_stderr: bool,
        marker: &str,
    ) -> Result<Proc, String> {
        die_with_parent(&mut cmd);
        cmd.stdin(Stdio::null());
        if use_stderr {
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let stream: Box<dyn std::io::Read + Send> = if use_stderr {
            Box::new(child.stderr.take().expect("piped stderr"))
        } else {
            Box::new(child.stdout.take().expect("piped stdout"))
        };
        let log = Arc::new(Mutex::new((0u64, VecDeque::new())));
        let (tx, rx) = std::sync::mpsc::channel();
        let marker = marker.to_owned();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stream).lines();
            let mut early = Vec::new();
            let mut sent = false;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if !sent
                    && line.contains(&marker)
                    && let Some(addr) = parse_addr(&line)
                {
                    let _ = tx.send(Ok(addr));
                    sent = true;
                    continue;
                }
                if sent && !line.contains(&marker) {
                    let mut log = log2.lock().unwrap_or_else(|e| e.into_inner());
                    log.0 += 1;
                    log.1.push_back(line);
                    if log.1.len() > 10 {
                        log.1.pop_front();
                    }
                } else if !sent {
                    early.push(line);
                }
            }
            if !sent {
                let _ = tx.send(Err(early.join("\n")));
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(addr)) => Ok(Proc { addr, child, log }),
            Ok(Err(output)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "{name} exited before listening; its output:\n{output}"
                ))
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "{name} did not announce its address within {START_TIMEOUT:?}"
                ))
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `addr=127.0.0.1:1234` (text logs) or `"addr":"127.0.0.1:1234"` (JSON).
fn parse_addr(line: &str) -> Option<SocketAddr> {
    let start = line
        .find("addr=")
        .map(|i| i + 5)
        .or_else(|| line.find("\"addr\":\"").map(|i| i + 8))?;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Resident memory of `pid` in bytes, 0 when unknown.
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Starts natsgate: the binary at `bin`, or (when `None`) this bench binary
/// running natsgate's library in a child process (`serve-natsgate`).
pub fn start_natsgate(bin: Option<&Path>, config: &Path) -> Result<Proc, String> {
    let mut cmd = match bin {
        Some(bin) => Command::new(bin),
        None => {
            let mut cmd = Command::new(self_exe()?);
            cmd.arg("serve-natsgate");
            cmd
        }
    };
    cmd.arg("--config").arg(config).env_remove("RUST_LOG");
    Proc::start("natsgate", cmd, bin.is_some(), "natsgate listening")
}

/// Starts the reference relay (this binary, `relay`) forwarding to `upstream`.
pub fn start_relay(upstream: SocketAddr) -> Result<Proc, String> {
    let mut cmd = Command::new(self_exe()?);
    cmd.arg("relay").arg(upstream.to_string());
    Proc::start("relay", cmd, false, "relay listening")
}

fn self_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find the bench binary: {e}"))
}

/// A nats-server child started from a config text (`-a 127.0.0.1 -p -1`,
/// the port read from `ports_file_dir`).
pub struct NatsServer {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl NatsServer {
    pub fn start(bin: &Path, dir: &Path, name: &str, config: &str) -> Result<NatsServer, String> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("server.conf");
        let text = format!(
            "{config}\nports_file_dir: {}\n",
            serde_json::Value::String(dir.to_string_lossy().into_owned())
        );
        std::fs::File::create(&conf)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        let log = std::fs::File::create(dir.join("server.log"))
            .map_err(|e| format!("nats-server log: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&conf)
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut server = NatsServer {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            dir,
        };
        let ports = server
            .dir
            .join(format!("nats-server_{}.ports", server.child.id()));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(port) = read_ports_file(&ports) {
                server.addr.set_port(port);
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "nats-server exited during start-up ({status}); log:\n{}",
                    server.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nats-server did not report its port; log:\n{}",
                    server.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        while std::net::TcpStream::connect(server.addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!("nats-server at {} does not accept", server.addr));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The address of the server's `websocket {}` listener, from its ports
    /// file (`None` without one).
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        let ports = self
            .dir
            .join(format!("nats-server_{}.ports", self.child.id()));
        let text = std::fs::read_to_string(ports).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let url = v.get("websocket")?.as_array()?.first()?.as_str()?;
        let port = url.rsplit(':').next()?.parse().ok()?;
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_ports_file(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = v.get("nats")?.as_array()?.first()?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// Finds the nats-server binary: `$NATS_SERVER_BIN`, else `nats-server` on PATH.
pub fn nats_server_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("NATS_SERVER_BIN={} is not a file", p.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "nats-server not found: set NATS_SERVER_BIN or put nats-server on PATH \
             (scripts/bench.sh installs it into .venv/)"
                .to_owned()
        })
}

/// Raises this process's open-file limit, which the children started after
/// it inherit: when the hard limit is below `want`, the hard limit to `want`
/// (at most `/proc/sys/fs/nr_open`; needs root or CAP_SYS_RESOURCE, and is
/// skipped without), then the soft limit to the hard limit. Returns the soft
/// limit now in force, and why the hard limit could not be raised.
pub fn raise_nofile_limit(want: u64) -> (u64, Option<String>) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let mut why = None;
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, Some(std::io::Error::last_os_error().to_string()));
        }
        if lim.rlim_max < want {
            let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(1 << 20);
            let max = want.min(nr_open);
            let raised = libc::rlimit {
                rlim_cur: max,
                rlim_max: max,
            };
            if max > lim.rlim_max {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                } else {
                    why = Some(format!(
                        "raising the hard limit {} to {max}: {} (needs CAP_SYS_RESOURCE)",
                        lim.rlim_max,
                        std::io::Error::last_os_error()
                    ));
                }
            }
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    (lim.rlim_cur, why)
}

/// The soft open-file limit of `pid` (`Max open files` in
/// `/proc/<pid>/limits`), `None` when unknown or unlimited.
pub fn nofile_limit_of(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}
