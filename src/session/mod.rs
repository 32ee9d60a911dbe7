//! One client connection, from accept to close.
//!
//! 1. **Handshake** ([`run`]): natsgate's own INFO with a fresh nonce; the
//!    CONNECT must arrive and verify within `auth_timeout`; before it, any op
//!    not starting with `C` is an `Authorization Violation` (spec 2.1). No
//!    upstream connection exists until the client has authenticated.
//! 2. **Upstream login**: one upstream connection for this client, logged in
//!    with the trusted credential for the user's account.
//! 3. **Relay** ([`relay`]): both sockets are driven by this one task; every
//!    client frame is checked, allowed frames are forwarded verbatim in large
//!    writes, deliveries are filtered and reply subjects tracked.
//!
//! No task or socket outlives the session: when either side goes, both close.

mod advisory;
mod client_ops;
mod conn;
mod guard_ops;
mod jetstream;
mod order;
mod own_answers;
mod pieces;
mod relay;
mod repeat;
mod resolver_ops;
mod subs;
mod upstream_ops;
mod user_info;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, field, warn};

use crate::auth::{Identity, Reason, new_nonce};
use crate::gate::{AccountSlot, Gate};
use crate::protocol::client::{self, ClientLimits, ClientOp};
use crate::protocol::connect::ConnectOptions;
use crate::protocol::{self, Parsed, encode};
use crate::transport::Transport;
use crate::upstream::UpstreamOptions;

pub use relay::Relay;

/// How long natsgate keeps trying to deliver a final `-ERR` before closing
/// a connection that never authenticated.
const CLOSE_FLUSH: Duration = Duration::from_millis(500);

/// Why a relay ends, which decides what its close still delivers
/// ([`Relay::run`]).
#[derive(Debug)]
pub(crate) enum Close {
    /// natsgate ends it (a protocol error or limit, expiry, revocation,
    /// stale connection, shutdown): what the client sent before goes
    /// upstream, the `PONG`s owed reach the client, then `error` (when
    /// nats-server sends one), then the close.
    Gate { error: Option<Bytes> },
    /// The client closed, or its socket failed: what it sent goes upstream.
    ClientGone,
    /// The client did not read for the write deadline: what it would get is
    /// dropped; what it sent goes upstream.
    ClientSlow,
    /// The upstream closed or failed: the client gets what is queued.
    UpstreamGone,
    /// The upstream did not read for the write deadline: the client gets
    /// what is queued.
    UpstreamSlow,
}

/// Serves one accepted client connection until it closes.
pub async fn run(
    gate: Arc<Gate>,
    client: TcpStream,
    peer: SocketAddr,
    client_id: u64,
    shutdown: CancellationToken,
) {
    let _ = client.set_nodelay(true);
    serve(gate, Accepted::Tcp(client), peer, client_id, shutdown).await;
}

/// What the WebSocket upgrade said of a client.
#[derive(Debug, Clone)]
pub struct WebsocketClient {
    /// Its address: the forwarded one when the peer was a trusted proxy.
    pub addr: SocketAddr,
    /// The `jwt_cookie` cookie: the user JWT when the CONNECT has none.
    pub cookie_jwt: Option<String>,
}

/// Serves one upgraded WebSocket client ([`Transport::Ws`]) until it
/// closes.
pub async fn run_websocket(
    gate: Arc<Gate>,
    transport: Transport,
    client: WebsocketClient,
    client_id: u64,
    shutdown: CancellationToken,
) {
    let addr = client.addr;
    let accepted = Accepted::Ws(transport, client.cookie_jwt);
    serve(gate, accepted, addr, client_id, shutdown).await;
}

/// A connection as the listener hands it over.
enum Accepted {
    Tcp(TcpStream),
    /// With the `jwt_cookie` value, if any.
    Ws(Transport, Option<String>),
}

async fn serve(
    gate: Arc<Gate>,
    accepted: Accepted,
    peer: SocketAddr,
    client_id: u64,
    shutdown: CancellationToken,
) {
    // A debug span: at the default level it is disabled, and entering it
    // on every poll of the relay costs nothing.
    let span = debug_span!("client", cid = client_id, addr = %peer, user = field::Empty, name = field::Empty, account = field::Empty);
    async move {
        // Boxed: the handshake's state (upstream dialing, TLS) is large and
        // only needed until login; the task keeps just the relay's.
        let relay = Box::pin(handshake(&gate, accepted, peer, client_id, &shutdown)).await;
        if let Some(relay) = relay {
            relay.run(&shutdown).await;
        }
    }
    .instrument(span)
    .await
}

/// The client side of a finished login: everything decided at CONNECT
/// time that the relay needs.
pub(crate) struct Authenticated {
    pub opts: ConnectOptions,
    pub identity: Identity,
    pub nonce: String,
    pub peer: SocketAddr,
    pub client_id: u64,
    /// Held for the session's life: its place in the account `conn` count.
    pub slot: AccountSlot,
    /// Held for the session's life: its place in the user's
    /// `[[limits.users]] max_connections` count.
    pub user_slot: crate::limits::ConnectionSlot,
}

/// The client connection during the handshake: plain, or TLS (tokio-rustls
/// until the relay takes over the rustls state).
type ClientStream = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// The client during the handshake: a stream, or an upgraded WebSocket
/// connection (already a [`Transport`], driven by readiness here too).
// Lives only in the (boxed) handshake future; boxing the TLS stream would
// cost an allocation per TLS client for nothing.
#[allow(clippy::large_enum_variant)]
enum Client {
    Stream(ClientStream),
    Ws(Transport),
}

impl Client {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Client::Stream(s) => s.read_buf(buf).await,
            Client::Ws(t) => loop {
                match t.try_read_buf(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => t.readable().await?,
                    other => return other,
                }
            },
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Client::Stream(s) => s.write_all(data).await,
            Client::Ws(t) => {
                let mut queue = crate::transport::OutQueue::default();
                queue.push(Bytes::copy_from_slice(data));
                loop {
                    t.write_queue(&mut queue)?;
                    if queue.is_empty() && !t.wants_write() {
                        return Ok(());
                    }
                    t.writable().await?;
                }
            }
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Client::Stream(s) => s.shutdown().await,
            Client::Ws(t) => {
                t.shutdown().await;
                Ok(())
            }
        }
    }

    fn connection_type(&self) -> crate::auth::ConnectionType {
        match self {
            Client::Stream(_) => crate::auth::ConnectionType::Standard,
            Client::Ws(_) => crate::auth::ConnectionType::Websocket,
        }
    }
}

/// Sends natsgate's INFO and, with `[listen.tls]`, runs the TLS handshake:
/// after the INFO (which says `tls_required`), or before it with
/// `handshake_first`. Returns the stream and the deadline for the CONNECT
/// (the auth timeout covers the handshake, spec 2.1).
async fn open(gate: &Gate, mut tcp: TcpStream, info: &[u8]) -> Option<(ClientStream, Instant)> {
    let auth_timeout = gate.settings.listen.auth_timeout;
    let Some(config) = &gate.tls_server else {
        tcp.write_all(info).await.ok()?;
        return Some((Either::Left(tcp), Instant::now() + auth_timeout));
    };
    let acceptor = &tokio_rustls::TlsAcceptor::from(config.clone());
    let first = gate
        .settings
        .listen
        .tls
        .as_ref()
        .is_some_and(|t| t.handshake_first);
    if first {
        let deadline = Instant::now() + auth_timeout;
        let mut stream = Either::Right(tls_accept(acceptor, tcp, deadline).await?);
        stream.write_all(info).await.ok()?;
        return Some((stream, Instant::now() + auth_timeout));
    }
    tcp.write_all(info).await.ok()?;
    let deadline = Instant::now() + auth_timeout;
    let stream = Either::Right(tls_accept(acceptor, tcp, deadline).await?);
    Some((stream, deadline))
}

async fn tls_accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    deadline: Instant,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            None
        }
    }
}

/// The relay's view of the client connection once authenticated.
fn into_transport(client: Client) -> Transport {
    let stream = match client {
        Client::Stream(stream) => stream,
        Client::Ws(transport) => return transport,
    };
    match stream {
        Either::Left(tcp) => Transport::Plain(tcp),
        Either::Right(tls) => {
            let (tcp, conn) = tls.into_inner();
            Transport::tls(tcp, conn)
        }
    }
}

async fn handshake(
    gate: &Arc<Gate>,
    accepted: Accepted,
    peer: SocketAddr,
    client_id: u64,
    shutdown: &CancellationToken,
) -> Option<Relay> {
    let nonce = new_nonce();
    let facts = gate.upstream.facts();
    let mut info = gate.client_info(&facts, client_id, peer.ip(), Some(&nonce), None);
    if matches!(accepted, Accepted::Ws(..)) {
        gate.websocket_info(&mut info);
    }
    let info = info.to_frame();
    let mut cookie_jwt = None;
    let (mut client, deadline) = match accepted {
        Accepted::Tcp(tcp) => tokio::select! {
            _ = shutdown.cancelled() => return None,
            opened = open(gate, tcp, &info) => {
                let (stream, deadline) = opened?;
                (Client::Stream(stream), deadline)
            }
        },
        Accepted::Ws(transport, cookie) => {
            cookie_jwt = cookie;
            let mut client = Client::Ws(transport);
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                written = timeout(gate.settings.listen.auth_timeout, client.write_all(&info)) => {
                    written.ok()?.ok()?;
                }
            }
            (client, Instant::now() + gate.settings.listen.auth_timeout)
        }
    };
    let limits = ClientLimits {
        max_control_line: gate.settings.listen.max_control_line,
        max_payload: gate.max_payload(&facts, None),
        headers: false,
    };
    let mut cin = BytesMut::with_capacity(1024);
    let (json_len, frame_len) = loop {
        if let Some(&first) = cin.first()
            && first != b'C'
            && first != b'c'
        {
            let who = advisory::Client::at(peer, client_id);
            advisory::auth_failure(
                gate,
                who,
                Reason::NoConnect,
                "operation before CONNECT",
                None,
            );
            close_with(&mut client, encode::ERR_AUTH_VIOLATION).await;
            return None;
        }
        match client::parse(&cin, &limits) {
            Ok(Parsed::Frame {
                op: ClientOp::Connect(json),
                len,
            }) => {
                let start = json.as_ptr() as usize - cin.as_ptr() as usize;
                break ((start, start + json.len()), len);
            }
            Ok(Parsed::Frame { .. }) | Err(protocol::ParseError::UnknownOperation) => {
                close_with(&mut client, encode::ERR_UNKNOWN_OP).await;
                return None;
            }
            Err(e) => {
                if let Some(text) = e.error_text() {
                    close_with(&mut client, text).await;
                }
                return None;
            }
            Ok(Parsed::Incomplete { .. }) => {
                cin.reserve(1024);
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    read = timeout_at(deadline, client.read_buf(&mut cin)) => match read {
                        Err(_) => {
                            let who = advisory::Client::at(peer, client_id);
                            advisory::auth_failure(gate, who, Reason::Timeout, "no CONNECT in time", None);
                            close_with(&mut client, encode::ERR_AUTH_TIMEOUT).await;
                            return None;
                        }
                        Ok(Ok(0)) | Ok(Err(_)) => return None,
                        Ok(Ok(_)) => {}
                    }
                }
            }
        }
    };
    let mut opts = ConnectOptions::default();
    if let Err(e) = opts.merge_json(&cin[json_len.0..json_len.1]) {
        debug!(error = %e, "bad CONNECT");
        return None;
    }
    // nats-server: a WebSocket client's CONNECT without a JWT takes the
    // `jwt_cookie` one.
    if opts.jwt.as_deref().is_none_or(str::is_empty)
        && let Some(cookie) = cookie_jwt
    {
        opts.jwt = Some(cookie);
    }
    let _ = cin.split_to(frame_len);

    let identity =
        match gate.authenticate(&opts, nonce.as_bytes(), peer.ip(), client.connection_type()) {
            Ok(identity) => identity,
            Err(failure) => {
                let nkey = opts.nkey.as_deref();
                let who = advisory::Client::connecting(peer, client_id, &opts);
                advisory::auth_failure(gate, who, failure.reason, &failure.detail, nkey);
                close_with(&mut client, encode::ERR_AUTH_VIOLATION).await;
                return None;
            }
        };
    if let Some(text) = post_auth_check(&opts, facts.headers) {
        if text == encode::ERR_AUTH_VIOLATION {
            let nkey = opts.nkey.as_deref();
            let who = advisory::Client::connecting(peer, client_id, &opts);
            advisory::auth_failure(gate, who, Reason::AccountField, "account in CONNECT", nkey);
        }
        close_with(&mut client, text).await;
        return None;
    }
    let Some(slot) = gate.account_slot(&identity) else {
        let detail = "account connection limit reached";
        let nkey = opts.nkey.as_deref();
        let who = advisory::Client::connecting(peer, client_id, &opts);
        advisory::auth_failure(gate, who, Reason::AccountConnections, detail, nkey);
        close_with(&mut client, encode::ERR_MAX_ACCOUNT_CONNECTIONS).await;
        return None;
    };
    let Some(user_slot) = gate.user_slot(&identity) else {
        let who = advisory::Client {
            identity: Some(&identity),
            ..advisory::Client::connecting(peer, client_id, &opts)
        };
        let detail = "the user's max_connections on this instance reached";
        advisory::limit_close(gate, who, "user_connections", detail);
        close_with(&mut client, encode::ERR_MAX_CONNECTIONS).await;
        return None;
    };
    let span = tracing::Span::current();
    span.record("user", identity.user.as_str());
    span.record("name", identity.name.as_str());
    span.record("account", identity.account_name.as_str());

    let credential = gate.credential_for(&identity);
    let mut wanted = UpstreamOptions::from_client(&opts);
    wanted.headers = opts.headers && facts.headers;
    let upstream = tokio::select! {
        _ = shutdown.cancelled() => return None,
        result = gate.upstream.connect(credential, &wanted) => match result {
            Ok(upstream) => upstream,
            Err(e) => {
                warn!(cid = client_id, addr = %peer, user = %identity.user, error = %e, "no upstream connection");
                close_with(&mut client, encode::ERR_UPSTREAM_UNAVAILABLE).await;
                return None;
            }
        }
    };
    debug!(server = upstream.server, "authenticated and relaying");
    // The token is kept once, in the identity (a second CONNECT gets it back).
    if identity.jwt.is_some() {
        opts.jwt = None;
    }
    let login = Authenticated {
        opts,
        identity,
        nonce,
        peer,
        client_id,
        slot,
        user_slot,
    };
    Some(Relay::new(
        gate.clone(),
        into_transport(client),
        upstream,
        cin,
        login,
    ))
}

/// The checks nats-server makes after a successful authentication (spec
/// 2.2 steps 6-8). Returns the frame to close with.
pub(crate) fn post_auth_check(
    opts: &ConnectOptions,
    server_headers: bool,
) -> Option<&'static [u8]> {
    if opts.account.as_deref().is_some_and(|a| !a.is_empty()) || opts.new_account {
        return Some(encode::ERR_AUTH_VIOLATION);
    }
    if !(0..=1).contains(&opts.protocol) {
        return Some(encode::ERR_INVALID_PROTOCOL);
    }
    if opts.no_responders && !(opts.headers && server_headers) {
        return Some(encode::ERR_NO_RESPONDERS_HEADERS);
    }
    None
}

/// Sends a final frame and closes, waiting a bounded time for the write.
/// A WebSocket client then gets the close frame that goes with it.
async fn close_with(client: &mut Client, frame: &[u8]) {
    if let Client::Ws(t) = client {
        t.closing_with(Some(frame));
    }
    let _ = timeout(CLOSE_FLUSH, async {
        client.write_all(frame).await?;
        client.shutdown().await
    })
    .await;
}

/// Seconds from now until `at`, saturating at zero.
pub(crate) fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}
