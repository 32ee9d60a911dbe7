//! The accept loop: accepts clients until shutdown, enforces
//! `max_connections` (INFO, the error, close), and spawns one
//! [`crate::session`] per client into the task tracker: on the current
//! runtime, or in turn on each of the worker runtimes it is given.
//!
//! Does not own: the shared state ([`crate::gate`]), what a session does,
//! or the shutdown grace ([`crate::shutdown`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::gate::Gate;
use crate::protocol::encode;
use crate::session;

/// Accepts until `stop` is cancelled; sessions watch `sessions`. With
/// `workers`, session `n` runs on `workers[n % len]`.
pub async fn accept(
    gate: &Arc<Gate>,
    listener: TcpListener,
    stop: &CancellationToken,
    sessions: &CancellationToken,
    tracker: &TaskTracker,
    workers: &[Handle],
) {
    let max_connections = gate.settings.listen.max_connections;
    let open = Arc::new(AtomicUsize::new(0));
    let next_client_id = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let client_id = next_client_id.fetch_add(1, Ordering::Relaxed);
        gate.metrics.connection_opened();
        if open.fetch_add(1, Ordering::AcqRel) >= max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            gate.metrics.connection_closed();
            tracker.spawn(refuse(gate.clone(), stream, peer, client_id));
            continue;
        }
        let gate = gate.clone();
        let open = open.clone();
        let token = sessions.clone();
        let end = move |gate: &Gate| {
            open.fetch_sub(1, Ordering::AcqRel);
            gate.metrics.connection_closed();
        };
        let Some(worker) = workers.get(client_id as usize % workers.len().max(1)) else {
            tracker.spawn(async move {
                session::run(gate.clone(), stream, peer, client_id, token).await;
                end(&gate);
            });
            continue;
        };
        // The socket leaves this runtime's I/O driver for the worker's, so
        // that its events wake the session on the worker's own thread.
        let moved = stream.into_std();
        tracker.spawn_on(
            async move {
                match moved.and_then(TcpStream::from_std) {
                    Ok(stream) => {
                        session::run(gate.clone(), stream, peer, client_id, token).await;
                    }
                    Err(e) => warn!(error = %e, "cannot hand a connection to a worker"),
                }
                end(&gate);
            },
            worker,
        );
    }
}

/// `max_connections` reached: INFO, then the error, then close (spec 1.2).
async fn refuse(gate: Arc<Gate>, mut stream: TcpStream, peer: SocketAddr, client_id: u64) {
    let facts = gate.upstream.facts();
    let mut frame = gate
        .client_info(&facts, client_id, peer.ip(), None, None)
        .to_frame();
    frame.extend_from_slice(encode::ERR_MAX_CONNECTIONS);
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.write_all(&frame)).await;
}
