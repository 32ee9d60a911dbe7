//! The accept loops: accept clients until shutdown, enforce
//! `max_connections` (INFO, the error, close), and spawn one
//! [`crate::session`] per client into the task tracker: on the current
//! runtime, or in turn on each of the worker runtimes they are given.
//! [`accept`] serves the NATS port; [`accept_websocket`] the `[websocket]`
//! one, where each connection first goes through TLS (with
//! `[websocket.tls]`) and the HTTP upgrade, both within
//! `handshake_timeout`. Both count against the same `max_connections`.
//!
//! Does not own: the shared state ([`crate::gate`]), what a session does,
//! or the shutdown grace ([`crate::shutdown`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::gate::Gate;
use crate::protocol::encode;
use crate::session;
use crate::transport::websocket::{UpgradeOptions, WsOptions, handshake};
use crate::transport::{Transport, WsTransport};

/// What the listeners share: the open connection count (for
/// `max_connections`) and the client ids.
#[derive(Debug, Default)]
pub struct Counts {
    open: Arc<AtomicUsize>,
    next_client_id: AtomicU64,
}

impl Counts {
    fn next_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Accepts until `stop` is cancelled; sessions watch `sessions`. With
/// `workers`, session `n` runs on `workers[n % len]`.
pub async fn accept(
    gate: &Arc<Gate>,
    listener: TcpListener,
    counts: &Counts,
    stop: &CancellationToken,
    sessions: &CancellationToken,
    tracker: &TaskTracker,
    workers: &[Handle],
) {
    let max_connections = gate.settings.listen.max_connections;
    let open = counts.open.clone();
    while let Some((stream, peer)) = next_connection(&listener, stop, "nats").await {
        let client_id = counts.next_id();
        gate.metrics.connection_opened();
        if open.fetch_add(1, Ordering::AcqRel) >= max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            gate.metrics.connection_closed();
            tracker.spawn(refuse(gate.clone(), stream, peer, client_id));
            continue;
        }
        gate.metrics.transport_connection(TCP, true);
        let gate = gate.clone();
        let open = open.clone();
        let token = sessions.clone();
        let end = move |gate: &Gate| {
            open.fetch_sub(1, Ordering::AcqRel);
            gate.metrics.connection_closed();
            gate.metrics.transport_connection(TCP, false);
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

// === WebSocket ===

const TCP: &str = "tcp";
const WEBSOCKET: &str = "websocket";

/// The next accepted connection, or `None` once `stop` is cancelled. An
/// accept error (out of file descriptors and the like) is logged and
/// retried after a brief back-off.
async fn next_connection(
    listener: &TcpListener,
    stop: &CancellationToken,
    which: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(conn) => return Some(conn),
            Err(e) => {
                warn!(error = %e, listener = which, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What the WebSocket accept loop was set up with.
#[derive(Debug)]
pub struct WebsocketListener {
    pub listener: TcpListener,
    pub upgrade: UpgradeOptions,
    pub handshake_timeout: Duration,
    /// `[websocket.tls]`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Accepts WebSocket clients until `stop` is cancelled, as [`accept`]
/// does; each connection upgrades on the runtime that will serve it.
pub async fn accept_websocket(
    gate: &Arc<Gate>,
    ws: WebsocketListener,
    counts: &Counts,
    stop: &CancellationToken,
    sessions: &CancellationToken,
    tracker: &TaskTracker,
    workers: &[Handle],
) {
    let max_connections = gate.settings.listen.max_connections;
    let setup = Arc::new(Upgrade {
        options: ws.upgrade,
        timeout: ws.handshake_timeout,
        tls: ws.tls.map(tokio_rustls::TlsAcceptor::from),
    });
    while let Some((stream, peer)) = next_connection(&ws.listener, stop, "websocket").await {
        let client_id = counts.next_id();
        gate.metrics.connection_opened();
        let full = counts.open.fetch_add(1, Ordering::AcqRel) >= max_connections;
        if !full {
            gate.metrics.transport_connection(WEBSOCKET, true);
        }
        let gate = gate.clone();
        let open = counts.open.clone();
        let token = sessions.clone();
        let setup = setup.clone();
        let serve = async move {
            match stream.into_std().and_then(TcpStream::from_std) {
                Ok(stream) => {
                    if let Some((transport, client)) = upgrade(&gate, &setup, stream, peer).await {
                        if full {
                            refuse_websocket(&gate, transport, client.addr, client_id).await;
                        } else {
                            session::run_websocket(
                                gate.clone(),
                                transport,
                                client,
                                client_id,
                                token,
                            )
                            .await;
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot hand a connection to a worker"),
            }
            open.fetch_sub(1, Ordering::AcqRel);
            gate.metrics.connection_closed();
            if !full {
                gate.metrics.transport_connection(WEBSOCKET, false);
            }
        };
        match workers.get(client_id as usize % workers.len().max(1)) {
            Some(worker) => tracker.spawn_on(serve, worker),
            None => tracker.spawn(serve),
        };
    }
}

/// The upgrade settings every WebSocket connection reads.
struct Upgrade {
    options: UpgradeOptions,
    timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// TLS (when configured), then the HTTP upgrade, within the handshake
/// timeout. Returns the connection as a [`Transport::Ws`] and what the
/// upgrade said of the client; `None` when refused.
async fn upgrade(
    gate: &Gate,
    setup: &Upgrade,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(Transport, session::WebsocketClient)> {
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + setup.timeout;
    let mut stream = match &setup.tls {
        None => Either::Left(tcp),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Either::Right(tls),
            Ok(Err(e)) => {
                debug!(addr = %peer, error = %e, "websocket TLS handshake failed");
                gate.metrics.websocket_upgrade("tls");
                return None;
            }
            Err(_) => {
                gate.metrics.websocket_upgrade("timeout");
                return None;
            }
        },
    };
    let mut buf = BytesMut::with_capacity(2048);
    let (request, used) = loop {
        match handshake::parse(&buf) {
            handshake::Parsed::Request(request, used) => break (request, used),
            handshake::Parsed::Bad => {
                let refused = handshake::refuse(400, "not an HTTP upgrade request");
                answer(gate, &mut stream, &refused, peer, deadline).await;
                return None;
            }
            handshake::Parsed::Partial => {}
        }
        buf.reserve(2048);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
            Err(_) => {
                debug!(addr = %peer, "websocket upgrade timed out");
                gate.metrics.websocket_upgrade("timeout");
                return None;
            }
        }
    };
    let accepted = match handshake::decide(&request, &setup.options, peer) {
        Ok(accepted) => accepted,
        Err(refused) => {
            answer(gate, &mut stream, &refused, peer, deadline).await;
            return None;
        }
    };
    let written = tokio::time::timeout_at(deadline, stream.write_all(&accepted.response)).await;
    if !matches!(written, Ok(Ok(()))) {
        return None;
    }
    gate.metrics.websocket_upgrade("ok");
    if accepted.client != peer {
        debug!(addr = %peer, client = %accepted.client, "websocket client behind a trusted proxy");
    }
    let early = buf.split_off(used);
    let inner = match stream {
        Either::Left(tcp) => Transport::Plain(tcp),
        Either::Right(tls) => {
            let (tcp, conn) = tls.into_inner();
            Transport::tls(tcp, conn)
        }
    };
    let options = WsOptions {
        compression: accepted.compression,
        no_masking: accepted.no_masking,
        browser: accepted.browser,
        max_payload: gate.max_payload(&gate.upstream.facts(), None),
    };
    let transport = Transport::Ws(Box::new(WsTransport::new(inner, options, early)));
    let client = session::WebsocketClient {
        addr: accepted.client,
        cookie_jwt: accepted.cookie_jwt,
    };
    Some((transport, client))
}

/// Sends an upgrade refusal and closes.
async fn answer<S: AsyncWrite + Unpin>(
    gate: &Gate,
    stream: &mut S,
    refused: &handshake::Refused,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) {
    debug!(addr = %peer, status = refused.status, reason = %refused.reason, "websocket upgrade refused");
    gate.metrics.websocket_upgrade(&refused.status.to_string());
    let _ = tokio::time::timeout_at(deadline, async {
        stream.write_all(&refused.response).await?;
        stream.shutdown().await
    })
    .await;
}

/// `max_connections` reached on the WebSocket listener: INFO, the error,
/// close 1008, as on the NATS port.
async fn refuse_websocket(
    gate: &Gate,
    mut transport: Transport,
    client: SocketAddr,
    client_id: u64,
) {
    let facts = gate.upstream.facts();
    let mut info = gate.client_info(&facts, client_id, client.ip(), None, None);
    gate.websocket_info(&mut info);
    let mut frame = info.to_frame();
    frame.extend_from_slice(encode::ERR_MAX_CONNECTIONS);
    transport.closing_with(Some(encode::ERR_MAX_CONNECTIONS));
    let mut queue = crate::transport::OutQueue::default();
    queue.push_vec(frame.to_vec());
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while transport.write_queue(&mut queue).is_ok()
            && (!queue.is_empty() || transport.wants_write())
        {
            if transport.writable().await.is_err() {
                return;
            }
        }
        transport.shutdown().await;
    })
    .await;
}
