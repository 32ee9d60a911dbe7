//! natsgate started in-process on 127.0.0.1:0 for integration tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A running natsgate (spawned on the current tokio runtime). Dropping it
/// cancels its shutdown token.
pub struct Gate {
    addr: SocketAddr,
    /// The `[websocket]` listener's address ([`Gate::start_websocket`]).
    ws_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
    exit: Arc<Mutex<Option<Result<(), String>>>>,
    dir: tempfile::TempDir,
}

impl Gate {
    /// Parses `toml` (relative paths resolve against a fresh tempdir, see
    /// [`Gate::dir`]), binds 127.0.0.1:0 and spawns `natsgate::run` on the
    /// current tokio runtime (must be called inside one). The `[listen] addr`
    /// in the TOML is ignored. Panics on a config error.
    pub fn start(toml: &str) -> Gate {
        let dir = tempfile::Builder::new()
            .prefix("natsgate-test-gate-")
            .tempdir()
            .expect("tempdir");
        Self::start_with_dir(toml, dir)
    }

    /// As [`Gate::start`], with relative paths resolved against `dir` (which
    /// the gate keeps alive), e.g. after writing seed files into it.
    pub fn start_with_dir(toml: &str, dir: tempfile::TempDir) -> Gate {
        Self::start_inner(toml, dir, false)
    }

    /// As [`Gate::start_with_dir`], with the `[websocket]` listener (the
    /// TOML must have the table; its `addr` is ignored) bound on
    /// 127.0.0.1:0 too: see [`Gate::ws_addr`].
    pub fn start_websocket(toml: &str, dir: tempfile::TempDir) -> Gate {
        Self::start_inner(toml, dir, true)
    }

    /// The WebSocket listener's address (after [`Gate::start_websocket`]).
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr.expect("started with Gate::start_websocket")
    }

    fn start_inner(toml: &str, dir: tempfile::TempDir, websocket: bool) -> Gate {
        let settings =
            natsgate::config::Settings::from_toml_str(toml, dir.path()).unwrap_or_else(|e| {
                panic!("natsgate rejected the test config: {e}\n--- config ---\n{toml}")
            });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).expect("set_nonblocking");
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .expect("Gate::start must be called inside a tokio runtime");
        let addr = listener.local_addr().expect("local_addr");
        let shutdown = CancellationToken::new();
        let exit = Arc::new(Mutex::new(None));
        let exit2 = Arc::clone(&exit);
        let mut ws_addr = None;
        let fut: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), natsgate::Error>> + Send>,
        > = if websocket {
            let ws = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            ws.set_nonblocking(true).expect("set_nonblocking");
            let ws = tokio::net::TcpListener::from_std(ws).expect("tokio listener");
            ws_addr = Some(ws.local_addr().expect("local_addr"));
            Box::pin(natsgate::run_with_websocket(
                settings,
                listener,
                ws,
                None,
                shutdown.clone(),
            ))
        } else {
            Box::pin(natsgate::run(settings, listener, shutdown.clone()))
        };
        let handle = tokio::spawn(async move {
            let r = fut.await.map_err(|e| format!("{e} ({e:?})"));
            if let Err(e) = &r {
                eprintln!("natsgate::run returned an error: {e}");
            }
            *exit2.lock().unwrap() = Some(r);
        });
        Gate {
            addr,
            ws_addr,
            shutdown,
            handle: Some(handle),
            exit,
            dir,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory relative config paths resolve against.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `None` while running; `Some(result)` once `run` returned (or panicked: `Err`).
    pub fn exit_status(&self) -> Option<Result<(), String>> {
        if let Some(r) = self.exit.lock().unwrap().clone() {
            return Some(r);
        }
        match &self.handle {
            Some(h) if h.is_finished() => Some(Err(
                "natsgate::run task ended without a result (panicked?)".into(),
            )),
            _ => None,
        }
    }

    /// Panics with the exit result if `run` has returned.
    pub fn assert_running(&self) {
        if let Some(r) = self.exit_status() {
            panic!("natsgate is no longer running: {r:?}");
        }
    }

    /// Cancels the shutdown token and waits (bounded by `within`) for `run` to return.
    pub async fn shutdown(mut self, within: Duration) -> Result<(), String> {
        self.shutdown.cancel();
        let h = self.handle.take().expect("handle");
        match tokio::time::timeout(within, h).await {
            Err(_) => Err(format!(
                "natsgate::run did not return within {within:?} after cancel"
            )),
            Ok(Err(join)) => Err(format!("natsgate::run task failed: {join}")),
            Ok(Ok(())) => self.exit.lock().unwrap().clone().unwrap_or(Ok(())),
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // The task winds down by itself after the cancel; abort is not used so a
        // graceful shutdown can still close client connections.
    }
}
