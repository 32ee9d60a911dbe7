//! Authentication: the nonce natsgate challenges each client with, and the
//! turn of a CONNECT into an [`Identity`] or an [`AuthFailure`].
//!
//! Two kinds of users, as nats-server has them (spec 2.3, 2.4):
//! - static NKey users from `[[users]]`: CONNECT `nkey` + signature of the nonce;
//! - JWT users (`[jwt]`): CONNECT `jwt` + signature, verified up the chain to a
//!   trusted operator by [`jwt::TrustStore`].
//!
//! The client only ever learns `Authorization Violation`; the precise reason is
//! in [`AuthFailure`] for logs and metrics.

pub mod explain;
pub mod jwt;
pub mod nkey;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use base64::Engine;

use crate::config::{Settings, StaticUser};
use crate::permissions::{PermissionSpec, Permissions};
use crate::protocol::connect::ConnectOptions;

/// Who a client is, once authenticated, and what it may do.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The user's public NKey (`U...`).
    pub user: String,
    /// A human name: the JWT `name` or the configured `name` (may be empty).
    pub name: String,
    /// The account: its public key for JWT users, the configured `account`
    /// for static users (empty when none).
    pub account: String,
    /// The account's name (JWT `name`), or the configured account.
    pub account_name: String,
    pub permissions: Arc<Permissions>,
    /// The permissions as configured or carried in the JWT (for USER.INFO
    /// and reloads); shared by the connections of users with the same.
    pub spec: Arc<PermissionSpec>,
    /// Per-connection subscription limit; `None` is unlimited.
    pub max_subscriptions: Option<usize>,
    /// Per-connection payload limit from the JWT or account; `None` is
    /// unlimited (the server's and natsgate's limits still apply).
    pub max_payload: Option<usize>,
    /// When the user must be disconnected with `User Authentication Expired`.
    pub expires_at: Option<SystemTime>,
    /// When the account's JWT expires (`Account Authentication Expired`).
    pub account_expires_at: Option<SystemTime>,
    pub system_account: bool,
    /// The verified JWT user, for JWT users.
    pub jwt: Option<Arc<jwt::JwtUser>>,
}

/// Why a CONNECT did not authenticate. The client is only told
/// `Authorization Violation` (or the timeout); the reason is for the debug
/// log and the metric.
#[derive(Debug, Clone)]
pub struct AuthFailure {
    pub reason: Reason,
    /// The precise reason, for the debug log.
    pub detail: String,
}

impl AuthFailure {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        AuthFailure {
            reason,
            detail: detail.into(),
        }
    }
}

/// Every reason a client is refused at login: the `reason` label of
/// `natsgate_auth_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A step of the JWT chain (spec 2.3).
    Jwt(jwt::JwtRefusal),
    /// The nonce signature of a static NKey user.
    Signature(nkey::SignatureError),
    /// Operator mode, and the CONNECT has no JWT.
    NoJwt,
    /// No `nkey` in the CONNECT (static users only).
    NoCredentials,
    /// An NKey that is not a configured user.
    UnknownUser,
    /// No CONNECT within `auth_timeout`.
    Timeout,
    /// An op other than CONNECT came first.
    NoConnect,
    /// `account` or `new_account` in the CONNECT (spec 2.2).
    AccountField,
    /// The account's `conn` limit is reached.
    AccountConnections,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Jwt(refusal) => refusal.label(),
            Reason::Signature(e) => e.reason(),
            Reason::NoJwt => "no_jwt",
            Reason::NoCredentials => "no_credentials",
            Reason::UnknownUser => "unknown_user",
            Reason::Timeout => "timeout",
            Reason::NoConnect => "no_connect",
            Reason::AccountField => "account_field",
            Reason::AccountConnections => "account_connections",
        }
    }
}

/// A static user from `[[users]]`, with its permissions compiled once.
#[derive(Debug)]
struct StaticEntry {
    name: String,
    account: String,
    permissions: Arc<Permissions>,
    spec: Arc<PermissionSpec>,
}

/// Turns CONNECTs into identities. Immutable; rebuilt on reload and on
/// account updates (which keep the compiled static users).
#[derive(Debug)]
pub struct Authenticator {
    static_users: Arc<HashMap<String, StaticEntry>>,
    trust: Option<jwt::TrustStore>,
    compiled: Arc<CompiledPermissions>,
}

/// What the connections of one user (or of users with the same
/// permissions) can share instead of holding a copy each: the compiled
/// permissions, the permission spec and the user JWT itself. Thousands of
/// connections of one JWT user hold one copy. Compiled sets are held weakly
/// (freed when no connection uses them); entries are pruned as the maps grow.
#[derive(Debug, Default)]
pub struct CompiledPermissions {
    by_spec: Mutex<HashMap<Arc<PermissionSpec>, Weak<Permissions>>>,
    tokens: Mutex<std::collections::HashSet<Arc<str>>>,
}

impl CompiledPermissions {
    /// The shared spec and its compiled form, compiled at most once while
    /// in use.
    pub fn get(&self, spec: &PermissionSpec) -> (Arc<PermissionSpec>, Arc<Permissions>) {
        let mut by_spec = self.by_spec.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((key, weak)) = by_spec.get_key_value(spec)
            && let Some(live) = weak.upgrade()
        {
            return (key.clone(), live);
        }
        if by_spec.len() >= PRUNE_COMPILED_AT {
            by_spec.retain(|_, w| w.strong_count() > 0);
        }
        let key = Arc::new(spec.clone());
        let compiled = Arc::new(Permissions::compile(spec));
        by_spec.insert(key.clone(), Arc::downgrade(&compiled));
        (key, compiled)
    }

    /// One shared copy of a user JWT.
    pub fn intern(&self, token: &Arc<str>) -> Arc<str> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = tokens.get(&**token) {
            return known.clone();
        }
        if tokens.len() >= PRUNE_COMPILED_AT {
            tokens.retain(|t| Arc::strong_count(t) > 1);
        }
        tokens.insert(token.clone());
        token.clone()
    }
}

/// Dead entries of [`CompiledPermissions`] are pruned at this size.
const PRUNE_COMPILED_AT: usize = 4096;

/// How a client reached natsgate, as a JWT's `allowed_connection_types`
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectionType {
    /// The NATS port (`[listen]`).
    #[default]
    Standard,
    /// The WebSocket listener (`[websocket]`).
    Websocket,
}

impl ConnectionType {
    /// nats-server's name (`jwt.ConnectionTypeStandard`, `...Websocket`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::Standard => "STANDARD",
            ConnectionType::Websocket => "WEBSOCKET",
        }
    }
}

impl Authenticator {
    /// Builds the authenticator from validated settings and (when `[jwt]` is
    /// configured) the loaded trust store.
    pub fn new(users: &[StaticUser], trust: Option<jwt::TrustStore>) -> Authenticator {
        let static_users = users
            .iter()
            .map(|u| {
                let entry = StaticEntry {
                    name: u.name.clone().unwrap_or_default(),
                    account: u.account.clone().unwrap_or_default(),
                    permissions: Arc::new(Permissions::compile(&u.permissions)),
                    spec: Arc::new(u.permissions.clone()),
                };
                (u.nkey.clone(), entry)
            })
            .collect();
        Authenticator {
            static_users: Arc::new(static_users),
            trust,
            compiled: Arc::default(),
        }
    }

    /// The same static users with another trust store (an account update).
    pub fn with_trust(&self, trust: jwt::TrustStore) -> Authenticator {
        Authenticator {
            static_users: self.static_users.clone(),
            trust: Some(trust),
            compiled: self.compiled.clone(),
        }
    }

    /// Loads the JWTs named by `[jwt]` (if any) and builds the authenticator.
    pub fn load(settings: &Settings, now: SystemTime) -> Result<Authenticator, jwt::JwtLoadError> {
        let trust = match &settings.jwt {
            Some(j) => Some(jwt::TrustStore::load(
                &j.operators,
                j.accounts_dir.as_deref(),
                &j.accounts,
                now,
            )?),
            None => None,
        };
        Ok(Authenticator::new(&settings.users, trust))
    }

    /// The current permissions of a static user (after a reload they may
    /// differ from what a connected session holds).
    pub fn static_user(&self, nkey: &str) -> Option<(Arc<Permissions>, Arc<PermissionSpec>)> {
        self.static_users
            .get(nkey)
            .map(|e| (e.permissions.clone(), e.spec.clone()))
    }

    pub fn trust(&self) -> Option<&jwt::TrustStore> {
        self.trust.as_ref()
    }

    /// Authenticates one CONNECT against the nonce this connection was sent.
    pub fn authenticate(
        &self,
        opts: &ConnectOptions,
        nonce: &[u8],
        client_ip: IpAddr,
        connection_type: ConnectionType,
        now: SystemTime,
    ) -> Result<Identity, AuthFailure> {
        if let (Some(trust), Some(token)) = (&self.trust, opts.jwt.as_deref()) {
            let login = jwt::JwtLogin {
                jwt: token,
                sig: opts.sig.as_deref(),
                nonce,
                client_ip,
                connection_type: connection_type.as_str(),
            };
            let user = trust
                .authenticate(&login, now)
                .map_err(|e| AuthFailure::new(Reason::Jwt(e.kind()), e.to_string()))?;
            return Ok(identity_from_jwt(user, &self.compiled));
        }
        let Some(key) = opts.nkey.as_deref() else {
            return Err(if self.trust.is_some() {
                AuthFailure::new(Reason::NoJwt, "Authentication requires a user JWT")
            } else {
                AuthFailure::new(Reason::NoCredentials, "no nkey in CONNECT")
            });
        };
        let Some(entry) = self.static_users.get(key) else {
            return Err(AuthFailure::new(
                Reason::UnknownUser,
                format!("unknown nkey {key}"),
            ));
        };
        nkey::verify_nonce_signature(key, nonce, opts.sig.as_deref())
            .map_err(|e| AuthFailure::new(Reason::Signature(e), e.to_string()))?;
        Ok(Identity {
            user: key.to_string(),
            name: entry.name.clone(),
            account: entry.account.clone(),
            account_name: entry.account.clone(),
            permissions: entry.permissions.clone(),
            spec: entry.spec.clone(),
            max_subscriptions: None,
            max_payload: None,
            expires_at: None,
            account_expires_at: None,
            system_account: false,
            jwt: None,
        })
    }
}

fn identity_from_jwt(mut user: jwt::JwtUser, shared: &CompiledPermissions) -> Identity {
    let limit = |v: i64| {
        if v < 0 {
            None
        } else {
            Some(usize::try_from(v).unwrap_or(usize::MAX))
        }
    };
    let (spec, permissions) = shared.get(&user.permissions);
    user.permissions = spec.clone();
    user.jwt = shared.intern(&user.jwt);
    Identity {
        user: user.user_key.clone(),
        name: user.user_name.clone(),
        account: user.account_key.clone(),
        account_name: user.account_name.clone(),
        permissions,
        spec,
        max_subscriptions: limit(user.subs),
        max_payload: limit(user.payload),
        expires_at: user.expires_at,
        account_expires_at: user.account_expires_at,
        system_account: user.is_system_account,
        jwt: Some(Arc::new(user)),
    }
}

/// A fresh nonce: 11 random bytes, base64 URL alphabet without padding, 15
/// characters, as nats-server makes them (spec 1.3).
pub fn new_nonce() -> String {
    let mut raw = [0u8; 11];
    // The OS random source failing is not recoverable; nats-server panics too.
    getrandom::fill(&mut raw).expect("the OS random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_fifteen_url_safe_characters_and_differ() {
        let a = new_nonce();
        let b = new_nonce();
        assert_eq!(a.len(), 15);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }
}
