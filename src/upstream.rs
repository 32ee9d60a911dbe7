//! The upstream side: dialing the nats-server and logging in with natsgate's
//! trusted credential (spec 9.9).
//!
//! [`UpstreamPool`] owns the server list and the facts learned from the last
//! upstream INFO (version, headers, max_payload), which feed the INFO natsgate
//! sends its clients. [`UpstreamPool::connect`] tries the servers in turn,
//! starting with the last one that worked, and returns a logged-in connection
//! (CONNECT answered by PONG) or the reason none could be had.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use bytes::BytesMut;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::either::Either;

use crate::config::{Credential, ServerAddr, UpstreamTls};
use crate::metrics::Metrics;
use crate::protocol::info::UpstreamInfo;
use crate::protocol::server::{self, ServerLimits, ServerOp};
use crate::protocol::{Parsed, connect::ConnectOptions};
use crate::transport::Transport;

/// What the client asked for that the upstream connection must carry
/// (spec 9.9: every default set explicitly).
#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    pub echo: bool,
    pub headers: bool,
    pub no_responders: bool,
    pub protocol: i64,
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
}

impl UpstreamOptions {
    pub fn from_client(opts: &ConnectOptions) -> UpstreamOptions {
        UpstreamOptions {
            echo: opts.echo,
            headers: opts.headers,
            no_responders: opts.no_responders,
            protocol: opts.protocol,
            name: opts.name.clone(),
            lang: opts.lang.clone(),
            version: opts.version.clone(),
        }
    }
}

/// A logged-in upstream connection.
#[derive(Debug)]
pub struct UpstreamConn {
    pub transport: Transport,
    pub info: UpstreamInfo,
    /// Bytes read after the login's PONG, to be processed as upstream input.
    pub leftover: BytesMut,
    /// Index of the server in the configured list.
    pub server: usize,
}

/// Why no upstream connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("connecting to {url}: timed out")]
    Timeout { url: String },
    #[error("{url} refused natsgate's credential: {text}")]
    Refused { url: String, text: String },
    #[error("{url}: protocol error during login: {detail}")]
    Protocol { url: String, detail: String },
    #[error("{url}: TLS: {detail}")]
    Tls { url: String, detail: String },
    #[error("the credential cannot sign the upstream nonce: {0}")]
    Credential(String),
}

/// The configured servers and what natsgate knows of them.
#[derive(Debug)]
pub struct UpstreamPool {
    servers: Vec<ServerAddr>,
    connect_timeout: Duration,
    /// The server to try first: the last one that worked.
    preferred: AtomicUsize,
    facts: ArcSwap<UpstreamInfo>,
    reachable: AtomicBool,
    metrics: Metrics,
    tls: Arc<rustls::ClientConfig>,
    tls_settings: Option<UpstreamTls>,
}

impl UpstreamPool {
    pub fn new(
        servers: Vec<ServerAddr>,
        connect_timeout: Duration,
        assumed: UpstreamInfo,
        metrics: Metrics,
        tls: Arc<rustls::ClientConfig>,
        tls_settings: Option<UpstreamTls>,
    ) -> UpstreamPool {
        UpstreamPool {
            servers,
            connect_timeout,
            preferred: AtomicUsize::new(0),
            facts: ArcSwap::from_pointee(assumed),
            reachable: AtomicBool::new(false),
            metrics,
            tls,
            tls_settings,
        }
    }

    fn set_reachable(&self, up: bool) {
        self.reachable.store(up, Ordering::Relaxed);
        self.metrics.upstream_up(up);
    }

    /// The facts of the last upstream INFO seen.
    pub fn facts(&self) -> Arc<UpstreamInfo> {
        self.facts.load_full()
    }

    /// Whether the last attempt to reach an upstream server succeeded.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn learn(&self, info: &UpstreamInfo) {
        if **self.facts.load() != *info {
            self.facts.store(Arc::new(info.clone()));
        }
    }

    /// Reads the INFO of the first reachable server without logging in, to
    /// learn its facts before any client arrives.
    pub async fn probe(&self) -> bool {
        for index in self.order() {
            let server = &self.servers[index];
            if let Ok(Ok(mut stream)) = timeout(
                self.connect_timeout,
                TcpStream::connect((server.host.as_str(), server.port)),
            )
            .await
                && let Ok(Ok((info, _))) =
                    timeout(self.connect_timeout, read_info(&mut stream, &server.url)).await
            {
                self.learn(&info);
                self.set_reachable(true);
                self.preferred.store(index, Ordering::Relaxed);
                return true;
            }
        }
        self.set_reachable(false);
        false
    }

    /// Opens a logged-in upstream connection for one client.
    pub async fn connect(
        &self,
        credential: &Credential,
        login: &UpstreamOptions,
    ) -> Result<UpstreamConn, UpstreamError> {
        let mut last_error = None;
        for index in self.order() {
            let server = &self.servers[index];
            match timeout(self.connect_timeout, self.login(server, credential, login)).await {
                Ok(Ok((transport, info, leftover))) => {
                    self.learn(&info);
                    self.set_reachable(true);
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(UpstreamConn {
                        transport,
                        info,
                        leftover,
                        server: index,
                    });
                }
                Ok(Err(e @ UpstreamError::Refused { .. }))
                | Ok(Err(e @ UpstreamError::Credential(_))) => {
                    // The server is up; the credential is the problem.
                    self.metrics.upstream_connect_failed();
                    self.set_reachable(true);
                    return Err(e);
                }
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => {
                    last_error = Some(UpstreamError::Timeout {
                        url: server.url.clone(),
                    })
                }
            }
            // Every server skipped in the failover counts.
            self.metrics.upstream_connect_failed();
        }
        self.set_reachable(false);
        Err(last_error.unwrap_or_else(|| UpstreamError::Protocol {
            url: String::new(),
            detail: "no servers configured".into(),
        }))
    }

    /// Server indexes in the order to try them: the preferred one first.
    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.servers.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(move |i| (first + i) % n)
    }

    async fn login(
        &self,
        server: &ServerAddr,
        credential: &Credential,
        login: &UpstreamOptions,
    ) -> Result<(Transport, UpstreamInfo, BytesMut), UpstreamError> {
        let url = &server.url;
        let mut tcp = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(|source| UpstreamError::Connect {
                url: url.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let (info, mut buf) = read_info(&mut tcp, url).await?;
        // TLS the NATS way: the INFO in clear, then the handshake.
        let mut stream: UpstreamStream =
            if server.tls || self.tls_settings.is_some() || info.tls_required {
                let name = crate::tls::server_name(self.tls_settings.as_ref(), &server.host)
                    .map_err(|e| UpstreamError::Tls {
                        url: url.clone(),
                        detail: e.to_string(),
                    })?;
                let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| UpstreamError::Tls {
                        url: url.clone(),
                        detail: e.to_string(),
                    })?;
                Either::Right(tls)
            } else {
                Either::Left(tcp)
            };
        let connect = connect_json(credential, login, info.nonce.as_deref())?;
        let out = crate::protocol::encode::connect(&connect, true);
        stream
            .write_all(&out)
            .await
            .map_err(|source| UpstreamError::Connect {
                url: url.clone(),
                source,
            })?;
        let limits = ServerLimits {
            max_control_line: UPSTREAM_MAX_LINE,
            max_payload: 0,
        };
        loop {
            match server::parse(&buf, &limits) {
                Ok(Parsed::Frame { op, len }) => {
                    match op {
                        ServerOp::Pong => {
                            let _ = buf.split_to(len);
                            let transport = match stream {
                                Either::Left(tcp) => Transport::Plain(tcp),
                                Either::Right(tls) => {
                                    let (tcp, conn) = tls.into_inner();
                                    Transport::tls(tcp, conn)
                                }
                            };
                            return Ok((transport, info, buf));
                        }
                        ServerOp::Err(text) => {
                            let text = String::from_utf8_lossy(text).into_owned();
                            return Err(UpstreamError::Refused {
                                url: url.clone(),
                                text,
                            });
                        }
                        ServerOp::Ping => {
                            let _ = stream.write_all(crate::protocol::encode::PONG).await;
                        }
                        _ => {}
                    }
                    let _ = buf.split_to(len);
                }
                Ok(Parsed::Incomplete { .. }) => {
                    read_more(&mut stream, &mut buf, url).await?;
                }
                Err(e) => {
                    return Err(UpstreamError::Protocol {
                        url: url.clone(),
                        detail: e.reason().to_string(),
                    });
                }
            }
        }
    }
}

async fn read_more(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    url: &str,
) -> Result<(), UpstreamError> {
    buf.reserve(4096);
    match stream.read_buf(buf).await {
        Ok(0) => Err(UpstreamError::Protocol {
            url: url.to_string(),
            detail: "connection closed".into(),
        }),
        Ok(_) => Ok(()),
        Err(source) => Err(UpstreamError::Connect {
            url: url.to_string(),
            source,
        }),
    }
}

/// Reads the server's first INFO. Returns it and any bytes after it.
async fn read_info(
    stream: &mut TcpStream,
    url: &str,
) -> Result<(UpstreamInfo, BytesMut), UpstreamError> {
    let mut buf = BytesMut::with_capacity(4096);
    let limits = ServerLimits {
        max_control_line: UPSTREAM_MAX_LINE,
        max_payload: 0,
    };
    loop {
        match server::parse(&buf, &limits) {
            Ok(Parsed::Frame {
                op: ServerOp::Info(json),
                len,
            }) => {
                let info = UpstreamInfo::parse(json).map_err(|e| UpstreamError::Protocol {
                    url: url.to_string(),
                    detail: format!("bad INFO: {e}"),
                })?;
                let _ = buf.split_to(len);
                return Ok((info, buf));
            }
            Ok(Parsed::Frame { .. }) => {
                return Err(UpstreamError::Protocol {
                    url: url.to_string(),
                    detail: "expected INFO".into(),
                });
            }
            Ok(Parsed::Incomplete { .. }) => read_more(stream, &mut buf, url).await?,
            Err(e) => {
                return Err(UpstreamError::Protocol {
                    url: url.to_string(),
                    detail: e.reason().to_string(),
                });
            }
        }
    }
}

/// Trims the client's informational fields (`name`, `version`, `lang`) so
/// that the upstream CONNECT stays within the server's control line limit
/// (spec 9.9), which a client may use up with its own CONNECT alone.
fn fit_control_line(m: &mut Map<String, Value>) {
    for key in ["name", "version", "lang"] {
        let len = Value::Object(m.clone()).to_string().len();
        if len <= UPSTREAM_CONNECT_MAX {
            return;
        }
        let Some(Value::String(text)) = m.get_mut(key) else {
            continue;
        };
        let mut keep = text.len().saturating_sub(len - UPSTREAM_CONNECT_MAX);
        while !text.is_char_boundary(keep) {
            keep -= 1;
        }
        text.truncate(keep);
    }
}

/// nats-server's default `max_control_line`: the upstream CONNECT's JSON
/// is kept within it. (This bounds what natsgate *sends*; it differs from
/// [`UPSTREAM_MAX_LINE`], which bounds what it reads.)
const UPSTREAM_CONNECT_MAX: usize = 4096;

/// The upstream CONNECT JSON: natsgate's credential, the client's wishes, and
/// every default set explicitly (verbose and pedantic off: natsgate answers
/// those itself).
fn connect_json(
    credential: &Credential,
    login: &UpstreamOptions,
    nonce: Option<&str>,
) -> Result<String, UpstreamError> {
    let mut m = Map::new();
    m.insert("verbose".into(), json!(false));
    m.insert("pedantic".into(), json!(false));
    m.insert("tls_required".into(), json!(false));
    m.insert("echo".into(), json!(login.echo));
    m.insert("headers".into(), json!(login.headers));
    m.insert("no_responders".into(), json!(login.no_responders));
    m.insert("protocol".into(), json!(login.protocol));
    m.insert("name".into(), json!(login.name.as_deref().unwrap_or("")));
    m.insert(
        "lang".into(),
        json!(login.lang.as_deref().unwrap_or("natsgate")),
    );
    m.insert(
        "version".into(),
        json!(
            login
                .version
                .as_deref()
                .unwrap_or(env!("CARGO_PKG_VERSION"))
        ),
    );
    let sign = |seed: &str| -> Result<(String, String), UpstreamError> {
        let nonce = nonce
            .ok_or_else(|| UpstreamError::Credential("the upstream INFO has no nonce".into()))?;
        let kp = nkeys::KeyPair::from_seed(seed)
            .map_err(|e| UpstreamError::Credential(e.to_string()))?;
        let sig = kp
            .sign(nonce.as_bytes())
            .map_err(|e| UpstreamError::Credential(e.to_string()))?;
        Ok((
            kp.public_key(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig),
        ))
    };
    match credential {
        Credential::UserPassword { user, password } => {
            m.insert("user".into(), json!(user));
            m.insert("pass".into(), json!(password.expose()));
        }
        Credential::Token(token) => {
            m.insert("auth_token".into(), json!(token.expose()));
        }
        Credential::Nkey { seed } => {
            let (public, sig) = sign(seed.expose())?;
            m.insert("nkey".into(), json!(public));
            m.insert("sig".into(), json!(sig));
        }
        Credential::Creds { jwt, seed } => {
            let (_, sig) = sign(seed.expose())?;
            m.insert("jwt".into(), json!(jwt));
            m.insert("sig".into(), json!(sig));
        }
    }
    fit_control_line(&mut m);
    Ok(Value::Object(m).to_string())
}

/// The upstream connection during login: plain or TLS.
type UpstreamStream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// The longest control line natsgate accepts from an upstream server, at
/// login and while relaying (an INFO can list many cluster URLs).
pub const UPSTREAM_MAX_LINE: usize = 1024 * 1024;

/// Where and how natsgate's own `async-nats` clients (the account store,
/// the advisory publisher) log in: the upstream servers with the default
/// credential and `[upstream.tls]`.
#[derive(Clone)]
pub struct ClientTarget {
    servers: Vec<String>,
    credential: Credential,
    tls: Option<rustls::ClientConfig>,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ClientTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTarget")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl ClientTarget {
    pub fn new(upstream: &crate::config::UpstreamSettings) -> ClientTarget {
        let any_tls = upstream.tls.is_some() || upstream.servers.iter().any(|s| s.tls);
        let tls = any_tls
            .then(|| crate::tls::client_config(upstream.tls.as_ref()).ok())
            .flatten()
            .map(|c| (*c).clone());
        ClientTarget {
            servers: upstream.servers.iter().map(|s| s.url.clone()).collect(),
            credential: upstream.credential.clone(),
            tls,
            connect_timeout: upstream.connect_timeout,
        }
    }

    /// Connect options with the credential, TLS and timeout set, reconnecting
    /// for ever.
    pub fn options(&self, name: &str) -> Result<async_nats::ConnectOptions, String> {
        let mut options = match &self.credential {
            Credential::UserPassword { user, password } => async_nats::ConnectOptions::new()
                .user_and_password(user.clone(), password.expose().to_owned()),
            Credential::Token(token) => {
                async_nats::ConnectOptions::new().token(token.expose().to_owned())
            }
            Credential::Nkey { seed } => {
                async_nats::ConnectOptions::new().nkey(seed.expose().to_owned())
            }
            Credential::Creds { jwt, seed } => {
                let kp =
                    Arc::new(nkeys::KeyPair::from_seed(seed.expose()).map_err(|e| e.to_string())?);
                async_nats::ConnectOptions::with_jwt(jwt.clone(), move |nonce| {
                    let kp = kp.clone();
                    async move { kp.sign(&nonce).map_err(async_nats::AuthError::new) }
                })
            }
        };
        options = options
            .name(name)
            .connection_timeout(self.connect_timeout)
            .max_reconnects(None);
        if let Some(tls) = &self.tls {
            options = options.require_tls(true).tls_client_config(tls.clone());
        }
        Ok(options)
    }

    /// The servers, for `ConnectOptions::connect`.
    pub fn servers(&self) -> Vec<async_nats::ServerAddr> {
        self.servers.iter().filter_map(|s| s.parse().ok()).collect()
    }
}
