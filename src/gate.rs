//! The state every session reads: the settings, the authenticator (swapped
//! whole on a reload or account update), the upstream pool, the metrics,
//! natsgate's server identity, the per-account connection counts, and the
//! INFO natsgate sends its clients.
//!
//! Does not own: accepting connections ([`crate::listener`]), the reload
//! itself ([`crate::reload`]), or anything of one connection
//! ([`crate::session`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::advisories::Advisories;
use crate::auth::jwt::{Disconnect, JwtUser, TrustStore};
use crate::auth::{AuthFailure, Authenticator, ConnectionType, Identity};
use crate::config::{Credential, PolicySettings, Settings};
use crate::limits::{ConnectionCounts, ConnectionSlot, RateRegistry, Rates};
use crate::metrics::Metrics;
use crate::permissions::{PermissionSpec, Permissions};
use crate::protocol::connect::ConnectOptions;
use crate::protocol::info::{ClientInfo, UpstreamInfo};
use crate::store::AccountStore;
use crate::upstream::UpstreamPool;

/// What every session reads and the reload changes.
#[derive(Debug)]
pub struct Gate {
    pub settings: Settings,
    /// Swapped whole on a reload or account update; sessions load it
    /// without a lock.
    auth: ArcSwap<Authenticator>,
    /// Serialises the swaps (read, change, store).
    auth_writer: Mutex<()>,
    /// `[policy]` as last loaded (the file's, then each reload's).
    policy: ArcSwap<PolicySettings>,
    pub upstream: UpstreamPool,
    pub metrics: Metrics,
    /// TLS for clients (`[listen.tls]`).
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
    /// natsgate's own server id (an `N...` public key), shown in INFO.
    pub server_id: String,
    pub listen: SocketAddr,
    /// The `[websocket]` listener's address, once bound.
    pub websocket_listen: std::sync::OnceLock<SocketAddr>,
    /// Bumped after every accepted account update; JWT sessions watch it.
    accounts_generation: watch::Sender<u64>,
    /// Open connections per account public key (for the account `conn`
    /// limit, counted per natsgate instance).
    account_connections: Mutex<HashMap<String, i64>>,
    user_info_seq: AtomicU64,
    /// Where account JWTs pushed over NATS are kept (`accounts_dir`,
    /// `[jwt.kv]`).
    pub store: AccountStore,
    /// `[advisories]`: events published upstream (off when not set).
    pub advisories: Advisories,
    /// The queue [`crate::advisories::run`] publishes, until taken.
    advisory_queue: Mutex<Option<tokio::sync::mpsc::Receiver<crate::advisories::Event>>>,
    /// `[limits]` rate buckets per user and per account (separate key
    /// spaces: users by public key, accounts by `account:` + name).
    rates: RateRegistry,
    /// Open connections per user, for `[[limits.users]] max_connections`.
    user_connections: Arc<ConnectionCounts>,
}

impl Gate {
    /// Builds the shared state; fails when a TLS setting cannot be used.
    pub fn new(
        settings: Settings,
        authenticator: Authenticator,
        listen: SocketAddr,
        metrics: Metrics,
    ) -> Result<Gate, crate::tls::TlsError> {
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
        let store = AccountStore::new(&settings, &metrics);
        let (advisories, advisory_queue) = match &settings.advisories {
            Some(a) => {
                let (advisories, rx) = Advisories::on(a, metrics.clone());
                (advisories, Some(rx))
            }
            None => (Advisories::off(metrics.clone()), None),
        };
        Ok(Gate {
            store,
            advisories,
            advisory_queue: Mutex::new(advisory_queue),
            rates: RateRegistry::default(),
            user_connections: Arc::default(),
            auth: ArcSwap::from_pointee(authenticator),
            auth_writer: Mutex::new(()),
            policy: ArcSwap::from_pointee(settings.policy.clone()),
            upstream,
            metrics,
            tls_server,
            server_id: nkeys::KeyPair::new_server().public_key(),
            listen,
            websocket_listen: std::sync::OnceLock::new(),
            accounts_generation: watch::Sender::new(0),
            account_connections: Mutex::new(HashMap::new()),
            user_info_seq: AtomicU64::new(0),
            settings,
        })
    }

    /// Applies `change` to a copy of the trust store and installs it if
    /// `change` returns true. Returns what `change` returned.
    pub fn update_trust(&self, change: impl FnOnce(&mut TrustStore) -> bool) -> bool {
        let _writer = self.auth_writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.auth.load_full();
        let Some(mut trust) = current.trust().cloned() else {
            return false;
        };
        if !change(&mut trust) {
            return false;
        }
        self.auth.store(Arc::new(current.with_trust(trust)));
        true
    }

    /// Installs a new authenticator (a config reload).
    pub fn install_authenticator(&self, authenticator: Authenticator) {
        let _writer = self.auth_writer.lock().unwrap_or_else(|p| p.into_inner());
        self.auth.store(Arc::new(authenticator));
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
                gate: None,
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
            gate: Some(self.clone()),
            account: jwt.account_key.clone(),
        })
    }

    /// The advisory queue for the publisher task (once; `None` without
    /// `[advisories]`).
    pub fn take_advisory_queue(
        &self,
    ) -> Option<tokio::sync::mpsc::Receiver<crate::advisories::Event>> {
        self.advisory_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Counts a connection against the user's `[[limits.users]]
    /// max_connections` on this instance; `None` when it is reached.
    pub fn user_slot(&self, identity: &Identity) -> Option<ConnectionSlot> {
        let max = self
            .settings
            .limits
            .for_user(&identity.user, &identity.name)
            .and_then(|l| l.max_connections);
        self.user_connections.open(&identity.user, max)
    }

    /// The rate buckets a session of `identity` draws from.
    pub fn rates(&self, identity: &Identity) -> Rates {
        let limits = &self.settings.limits;
        let now = std::time::Instant::now();
        let user = limits
            .for_user(&identity.user, &identity.name)
            .and_then(|l| self.rates.get(&identity.user, &l.rate, now));
        let account_key = identity.jwt.as_ref().map_or("", |j| j.account_key.as_str());
        let account = limits
            .for_account(&identity.account_name, account_key)
            .and_then(|l| {
                self.rates
                    .get(&format!("account:{}", l.account), &l.rate, now)
            });
        Rates::new(user, account)
    }

    fn authenticator(&self) -> Arc<Authenticator> {
        self.auth.load_full()
    }

    /// Installs the `[policy]` of a reloaded config; sessions apply it at
    /// their next re-check (after [`Gate::accounts_changed`]).
    pub fn install_policy(&self, policy: PolicySettings) {
        self.policy.store(Arc::new(policy));
    }

    /// Whether `identity` is in report-only mode under the current policy.
    pub fn report_only(&self, identity: &Identity) -> bool {
        let account_key = identity.jwt.as_ref().map_or("", |j| j.account_key.as_str());
        self.policy.load().report_only(
            &identity.user,
            &identity.name,
            &identity.account_name,
            account_key,
        )
    }

    /// Whether the JetStream guard is on for this user (`[jetstream]`).
    pub fn guards_jetstream(&self, identity: &Identity) -> bool {
        let account_key = identity.jwt.as_ref().map_or("", |j| j.account_key.as_str());
        self.settings.jetstream.guards(
            &identity.user,
            &identity.name,
            &identity.account_name,
            account_key,
        )
    }

    /// `GET /explain`: the decision for a user of the current config and
    /// JWTs, as JSON, or why the input is bad.
    pub fn explain(
        &self,
        who: crate::auth::explain::Who<'_>,
        query: crate::auth::explain::Query<'_>,
    ) -> Result<serde_json::Value, String> {
        self.authenticator()
            .explain(who, query, SystemTime::now())
            .map(|report| report.json())
            .map_err(|e| e.to_string())
    }

    /// Authenticates a CONNECT with the current users and JWTs.
    pub fn authenticate(
        &self,
        opts: &ConnectOptions,
        nonce: &[u8],
        ip: IpAddr,
        connection_type: ConnectionType,
    ) -> Result<Identity, AuthFailure> {
        self.authenticator()
            .authenticate(opts, nonce, ip, connection_type, SystemTime::now())
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

    /// A WebSocket client's INFO, as nats-server's `generateClientInfoJSON`
    /// makes it: the listener's host and port, `tls_required` when the
    /// listener is `wss://`, no `connect_urls` (there is no advertise list
    /// for it).
    pub fn websocket_info(&self, info: &mut ClientInfo) {
        let tls = self
            .settings
            .websocket
            .as_ref()
            .and_then(|w| w.tls.as_ref());
        info.tls_required = tls.is_some();
        info.tls_available = tls.is_some();
        info.tls_verify = tls.is_some_and(|t| t.ca_file.is_some());
        if let Some(addr) = self.websocket_listen.get() {
            info.host = addr.ip().to_string();
            info.port = addr.port();
        }
        info.connect_urls = Vec::new();
    }

    /// nats-server's `ServerInfo` of its system replies (`server` in the
    /// `$SYS.REQ.USER.INFO` and account resolver answers), for natsgate.
    pub fn server_json(&self) -> serde_json::Value {
        let facts = self.upstream.facts();
        let seq = self.user_info_seq.fetch_add(1, Ordering::Relaxed) + 1;
        serde_json::json!({
            "name": self.settings.listen.server_name,
            "host": self.listen.ip().to_string(),
            "id": self.server_id,
            "ver": facts.version,
            "seq": seq,
            "time": jiff::Timestamp::now().to_string(),
        })
    }

    /// What `/healthz` answers: whether an upstream is reachable, and the
    /// state of the `[jwt.kv]` bucket as detail (an unreachable bucket does
    /// not make natsgate unhealthy: it serves the accounts last seen).
    pub fn health(&self) -> crate::metrics::Health {
        let detail = match self.store.fleet() {
            None => String::new(),
            Some(fleet) => {
                let status = fleet.status();
                let bucket = &fleet.settings.bucket;
                if status.reachable {
                    format!(
                        "account store: kv bucket {bucket} watched, {} accounts",
                        status.accounts
                    )
                } else {
                    format!(
                        "account store: kv bucket {bucket} unreachable ({}); serving the accounts last seen",
                        status.problem
                    )
                }
            }
        };
        crate::metrics::Health {
            ok: self.upstream.reachable(),
            detail,
        }
    }

    /// Whether natsgate answers the account resolver's requests (spec 6.4)
    /// of system-account users itself: in operator mode (`[jwt]`).
    pub fn serves_resolver(&self) -> bool {
        self.settings.jwt.is_some()
    }

    /// The trust store now (`None` without `[jwt]`).
    pub fn trust(&self) -> Option<TrustStore> {
        self.authenticator().trust().cloned()
    }

    /// After a config reload re-read the files: applies again the account
    /// JWTs that came from the bucket or over NATS and are not older than
    /// the files' ones.
    pub fn reapply_remembered(&self) {
        let remembered = self.store.remembered();
        if remembered.is_empty() {
            return;
        }
        self.update_trust(|trust| {
            let mut changed = false;
            for jwt in &remembered {
                if let Ok(info) = trust.check_update(jwt, None, SystemTime::now()) {
                    changed |= trust.install(info) != crate::auth::jwt::AccountChange::Unchanged;
                }
            }
            changed
        });
    }
}

/// A connection counted against its account's `conn` limit.
#[derive(Debug)]
pub struct AccountSlot {
    gate: Option<Arc<Gate>>,
    account: String,
}

impl Drop for AccountSlot {
    fn drop(&mut self) {
        let Some(gate) = &self.gate else { return };
        let mut counts = gate
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
