//! The accept loop and the state every session shares.
//!
//! [`run`] probes the upstream once (to learn its INFO facts), then accepts
//! clients until the shutdown token is cancelled, enforcing
//! `max_connections`, and spawns one [`crate::session`] per client into a
//! task tracker. On shutdown it stops accepting, lets the sessions end, and
//! waits for them at most `shutdown_grace`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::Error;
use crate::auth::jwt::{Disconnect, JwtUser, TrustStore};
use crate::auth::{AuthFailure, Authenticator, Identity};
use crate::config::{Credential, Settings};
use crate::metrics::{self, Metrics};
use crate::permissions::{PermissionSpec, Permissions, ResponseLimits, SubjectRules};
use crate::protocol::connect::ConnectOptions;
use crate::protocol::info::{ClientInfo, UpstreamInfo};
use crate::protocol::{self};
use crate::session;
use crate::upstream::UpstreamPool;

/// State shared by the listener and every session.
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
    auth: RwLock<Arc<Authenticator>>,
    pub upstream: UpstreamPool,
    pub metrics: Metrics,
    /// TLS for clients (`[listen.tls]`).
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
    /// natsgate's own server id (an `N...` public key), shown in INFO.
    server_id: String,
    listen: SocketAddr,
    next_client_id: AtomicU64,
    connections: AtomicUsize,
    /// Bumped after every accepted account update; JWT sessions watch it.
    accounts_generation: watch::Sender<u64>,
    /// Open connections per account public key (for the account `conn`
    /// limit, counted per natsgate instance).
    account_connections: Mutex<HashMap<String, i64>>,
    user_info_seq: AtomicU64,
}

/// nats-server's JSON for a user's permissions (`omitempty` throughout).
fn permissions_json(spec: &PermissionSpec) -> Map<String, Value> {
    let rules = |r: &SubjectRules, forced_empty_allow: bool| {
        let mut m = Map::new();
        if let Some(allow) = r
            .allow
            .as_ref()
            .filter(|a| !a.is_empty() && !forced_empty_allow)
        {
            m.insert("allow".into(), json!(allow));
        }
        if !r.deny.is_empty() {
            m.insert("deny".into(), json!(r.deny));
        }
        Value::Object(m)
    };
    let mut out = Map::new();
    let publish = spec.publish.clone().unwrap_or_default();
    if spec.publish.is_some() || spec.responses.is_some() {
        out.insert("publish".into(), rules(&publish, false));
    }
    if let Some(subscribe) = &spec.subscribe {
        out.insert("subscribe".into(), rules(subscribe, false));
    }
    if let Some(resp) = spec.responses {
        let limits = ResponseLimits::from_spec(resp);
        let max = limits
            .max
            .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
        let ttl = limits
            .ttl
            .map_or(-1, |t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX));
        out.insert("responses".into(), json!({ "max": max, "ttl": ttl }));
    }
    out
}

impl Shared {
    /// Builds the shared state; fails when a TLS setting cannot be used.
    pub fn new(
        settings: Settings,
        authenticator: Authenticator,
        listen: SocketAddr,
        metrics: Metrics,
    ) -> Result<Shared, crate::tls::TlsError> {
        let tls_server = match &settings.listen.tls {
            Some(tls) => Some(crate::tls::server_config(tls)?),
            None => None,
        };
        let upstream_tls = crate::tls::client_config(settings.upstream.tls.as_ref())?;
        let assumed = UpstreamInfo::assumed(settings.listen.max_payload);
        let upstream = UpstreamPool::new(
            settings.upstream.servers.clone(),
            settings.upstream.connect_timeout,
            assumed,
            metrics.clone(),
            upstream_tls,
            settings.upstream.tls.clone(),
        );
        Ok(Shared {
            settings,
            auth: RwLock::new(Arc::new(authenticator)),
            upstream,
            metrics,
            tls_server,
            server_id: nkeys::KeyPair::new_server().public_key(),
            listen,
            next_client_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            accounts_generation: watch::Sender::new(0),
            account_connections: Mutex::new(HashMap::new()),
            user_info_seq: AtomicU64::new(0),
        })
    }

    /// Applies `change` to a copy of the trust store and installs it if
    /// `change` returns true. Returns what `change` returned.
    pub fn update_trust(&self, change: impl FnOnce(&mut TrustStore) -> bool) -> bool {
        let mut guard = match self.auth.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(mut trust) = guard.trust().cloned() else {
            return false;
        };
        if !change(&mut trust) {
            return false;
        }
        *guard = Arc::new(guard.with_trust(trust));
        true
    }

    /// Installs a new authenticator (a config reload).
    pub fn install_authenticator(&self, authenticator: Authenticator) {
        let mut guard = match self.auth.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(authenticator);
    }

    /// A static user's current permissions: `None` when the user is gone.
    pub fn static_user(&self, nkey: &str) -> Option<(Arc<Permissions>, Arc<PermissionSpec>)> {
        self.authenticator().static_user(nkey)
    }

    /// Tells sessions to re-check themselves: JWT users against their
    /// accounts, static users against the reloaded config.
    pub fn accounts_changed(&self) {
        self.accounts_generation.send_modify(|g| *g += 1);
    }

    /// A receiver that changes after every account update.
    pub fn watch_accounts(&self) -> watch::Receiver<u64> {
        self.accounts_generation.subscribe()
    }

    /// Re-checks a connected JWT user against the current account.
    pub fn recheck(&self, user: &JwtUser) -> Result<(), Disconnect> {
        match self.authenticator().trust() {
            Some(trust) => trust.recheck(user, SystemTime::now()),
            None => Err(Disconnect::AuthorizationViolation),
        }
    }

    /// Counts a connection against its account's `conn` limit. `None` when
    /// the limit is reached; the guard gives the slot back when dropped.
    pub fn account_slot(self: &Arc<Self>, identity: &Identity) -> Option<AccountSlot> {
        let Some(jwt) = &identity.jwt else {
            return Some(AccountSlot {
                shared: None,
                account: String::new(),
            });
        };
        let limit = self
            .authenticator()
            .trust()
            .and_then(|t| t.account(&jwt.account_key))
            .map_or(-1, |a| a.limits.conn);
        let mut counts = self
            .account_connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(jwt.account_key.clone()).or_insert(0);
        if limit >= 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(AccountSlot {
            shared: Some(self.clone()),
            account: jwt.account_key.clone(),
        })
    }

    fn authenticator(&self) -> Arc<Authenticator> {
        match self.auth.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Authenticates a CONNECT with the current users and JWTs.
    pub fn authenticate(
        &self,
        opts: &ConnectOptions,
        nonce: &[u8],
        ip: IpAddr,
    ) -> Result<Identity, AuthFailure> {
        self.authenticator()
            .authenticate(opts, nonce, ip, SystemTime::now())
    }

    /// The upstream credential for a user: its account's
    /// `[[upstream.accounts]]` entry (by account name or public key), else
    /// the default one.
    pub fn credential_for(&self, identity: &Identity) -> &Credential {
        let upstream = &self.settings.upstream;
        if !identity.account.is_empty() || !identity.account_name.is_empty() {
            for entry in &upstream.accounts {
                if entry.account == identity.account || entry.account == identity.account_name {
                    return &entry.credential;
                }
            }
        }
        &upstream.credential
    }

    /// The max payload a client may send: natsgate's setting, never above
    /// the upstream's, and the user's or account's limit.
    pub fn max_payload(&self, facts: &UpstreamInfo, user: Option<usize>) -> usize {
        let upstream = usize::try_from(facts.max_payload).unwrap_or(0);
        let mut max = self.settings.listen.max_payload;
        if upstream > 0 {
            max = max.min(upstream);
        }
        if let Some(user) = user {
            max = max.min(user);
        }
        max
    }

    /// natsgate's INFO for a client.
    pub fn client_info(
        &self,
        facts: &UpstreamInfo,
        client_id: u64,
        ip: IpAddr,
        nonce: Option<&str>,
        identity: Option<&Identity>,
    ) -> ClientInfo {
        ClientInfo {
            server_id: self.server_id.clone(),
            server_name: self.settings.listen.server_name.clone(),
            version: facts.version.clone(),
            proto: facts.proto,
            git_commit: facts.git_commit.clone(),
            go: facts.go.clone(),
            host: self.listen.ip().to_string(),
            port: self.listen.port(),
            headers: facts.headers,
            auth_required: true,
            tls_required: self.settings.listen.tls.is_some(),
            tls_verify: self
                .settings
                .listen
                .tls
                .as_ref()
                .is_some_and(|t| t.ca_file.is_some()),
            max_payload: i64::try_from(
                self.max_payload(facts, identity.and_then(|i| i.max_payload)),
            )
            .unwrap_or(i64::MAX),
            jetstream: facts.jetstream,
            client_id,
            client_ip: ip.to_string(),
            nonce: nonce.unwrap_or_default().to_string(),
            domain: facts.domain.clone(),
            connect_urls: self.settings.listen.advertise.clone(),
            api_lvl: facts.api_lvl,
            ..ClientInfo::default()
        }
    }

    /// The `$SYS.REQ.USER.INFO` reply for `identity` (spec 9.4), laid out
    /// as nats-server's: permissions with the response defaults applied,
    /// `expires` in nanoseconds from now.
    pub fn user_info_json(&self, identity: &Identity) -> Vec<u8> {
        let seq = self.user_info_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let facts = self.upstream.facts();
        let mut data = Map::new();
        data.insert("user".into(), json!(identity.user));
        let account = if identity.account.is_empty() {
            "$G"
        } else {
            identity.account.as_str()
        };
        data.insert("account".into(), json!(account));
        if !identity.account_name.is_empty() {
            data.insert("account_name".into(), json!(identity.account_name));
        }
        if !identity.name.is_empty() {
            data.insert("user_name".into(), json!(identity.name));
        }
        let permissions = permissions_json(&identity.spec);
        if !permissions.is_empty() {
            data.insert("permissions".into(), Value::Object(permissions));
        }
        if let Some(at) = identity.expires_at {
            let nanos = at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_nanos();
            data.insert(
                "expires".into(),
                json!(u64::try_from(nanos).unwrap_or(u64::MAX)),
            );
        }
        let reply = json!({
            "server": {
                "name": self.settings.listen.server_name,
                "host": self.listen.ip().to_string(),
                "id": self.server_id,
                "ver": facts.version,
                "seq": seq,
                "time": jiff::Timestamp::now().to_string(),
            },
            "data": Value::Object(data),
        });
        let mut out = Vec::new();
        crate::protocol::info::write_go_json(&mut out, reply.to_string().as_bytes());
        out
    }
}

/// A connection counted against its account's `conn` limit.
#[derive(Debug)]
pub struct AccountSlot {
    shared: Option<Arc<Shared>>,
    account: String,
}

impl Drop for AccountSlot {
    fn drop(&mut self) {
        let Some(shared) = &self.shared else { return };
        let mut counts = shared
            .account_connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.account) {
            *count -= 1;
            if *count <= 0 {
                counts.remove(&self.account);
            }
        }
    }
}

/// Runs natsgate on an already bound listener until `shutdown` is
/// cancelled. The `[metrics]` endpoint, when configured, is bound here.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let metrics_listener = match &settings.metrics {
        Some(m) => Some(
            TcpListener::bind(m.addr.as_str())
                .await
                .map_err(|source| Error::Io {
                    context: format!("metrics address {}", m.addr),
                    source,
                })?,
        ),
        None => None,
    };
    run_with_listeners(settings, listener, metrics_listener, shutdown).await
}

/// As [`run`], with the metrics listener bound by the caller (tests bind
/// port 0 and need to know the port).
pub async fn run_with_listeners(
    settings: Settings,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let authenticator = Authenticator::load(&settings, SystemTime::now())?;
    let local = listener.local_addr().map_err(|source| Error::Io {
        context: "listener address".into(),
        source,
    })?;
    let grace = settings.listen.shutdown_grace;
    let max_connections = settings.listen.max_connections;
    let shared = Shared::new(settings, authenticator, local, Metrics::new())?;
    let shared = Arc::new(shared);
    if !shared.upstream.probe().await {
        warn!("no upstream server reachable at start; clients will be refused until one is");
    }
    info!(addr = %local, "natsgate listening");
    let tracker = TaskTracker::new();
    let sessions = shutdown.child_token();
    tracker.spawn(crate::accounts::watch(shared.clone(), sessions.clone()));
    if let Some(metrics_listener) = metrics_listener {
        if let Ok(addr) = metrics_listener.local_addr() {
            info!(addr = %addr, "metrics listening");
        }
        let health = shared.clone();
        let healthy = move || health.upstream.reachable();
        tracker.spawn(metrics::serve(
            metrics_listener,
            shared.metrics.clone(),
            healthy,
            sessions.clone(),
        ));
        // /healthz must reflect the upstream even when no client connects.
        tracker.spawn(probe_upstream(shared.clone(), sessions.clone()));
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
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
        let client_id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        shared.metrics.connection_opened();
        if shared.connections.fetch_add(1, Ordering::AcqRel) >= max_connections {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            shared.metrics.connection_closed();
            tracker.spawn(refuse(shared.clone(), stream, peer, client_id));
            continue;
        }
        let shared = shared.clone();
        let token = sessions.clone();
        tracker.spawn(async move {
            session::run(shared.clone(), stream, peer, client_id, token).await;
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            shared.metrics.connection_closed();
        });
    }
    info!("shutting down");
    drop(listener);
    sessions.cancel();
    tracker.close();
    // Sessions close themselves spread over the grace; allow a little more
    // for their last writes.
    if tokio::time::timeout(grace + Duration::from_secs(1), tracker.wait())
        .await
        .is_err()
    {
        warn!("sessions still open after the shutdown grace period");
    }
    Ok(())
}

/// How often the upstream is probed for `/healthz`.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Keeps the upstream-reachable state fresh for `/healthz`.
async fn probe_upstream(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HEALTH_PROBE_INTERVAL) => {}
        }
        shared.upstream.probe().await;
    }
}

/// `max_connections` reached: INFO, then the error, then close (spec 1.2).
async fn refuse(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr, client_id: u64) {
    let facts = shared.upstream.facts();
    let mut frame = shared
        .client_info(&facts, client_id, peer.ip(), None, None)
        .to_frame();
    frame.extend_from_slice(protocol::ERR_MAX_CONNECTIONS);
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.write_all(&frame)).await;
}
