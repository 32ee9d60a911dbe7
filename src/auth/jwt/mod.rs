//! Decentralized (operator mode) JWT authentication.
//!
//! Owns: the trusted operators and the loaded account JWTs ([`TrustStore`]),
//! the user JWT login check in nats-server's exact order (spec 2.3), the
//! effective permissions and limits of a JWT user (3.11, 4.1, 5.4), and the
//! re-check of connected users after an account update (3.10, 3.12).
//! Does not own: the CONNECT parsing, the nonce, timers, logging or metrics;
//! every function here is pure over its inputs (`now` is passed in).

pub mod claims;
#[cfg(any(test, feature = "test-support"))]
pub mod encode;
mod store;
mod template;
mod times;
mod user_checks;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::nkey::SignatureError;
use crate::permissions::PermissionSpec;

pub use store::TrustStore;

/// The CONNECT fields a JWT login uses.
#[derive(Clone, Copy, Debug)]
pub struct JwtLogin<'a> {
    /// CONNECT `jwt`.
    pub jwt: &'a str,
    /// CONNECT `sig`.
    pub sig: Option<&'a str>,
    /// The nonce exactly as sent in INFO.
    pub nonce: &'a [u8],
    /// The TCP peer address (for `src`).
    pub client_ip: IpAddr,
    /// nats-server's connection type name, `"STANDARD"` for plain TCP.
    pub connection_type: &'a str,
}

/// A successfully authenticated JWT user.
#[derive(Clone, Debug)]
pub struct JwtUser {
    pub user_key: String,
    pub user_name: String,
    pub account_key: String,
    pub account_name: String,
    /// The key that signed the user JWT (account identity or signing key).
    pub issuer: String,
    pub issued_at: i64,
    pub tags: Vec<String>,
    /// Effective: from the JWT, or the scope template, or the account's
    /// `default_permissions` when the JWT has none (4.1).
    pub permissions: Arc<PermissionSpec>,
    /// Effective subscription limit, min of user (or template) and account;
    /// -1 unlimited. The server `max_subscriptions` is applied by the caller.
    pub subs: i64,
    /// Effective payload limit, as `subs`; the server `max_payload` min is
    /// applied by the caller.
    pub payload: i64,
    /// Effective bearer flag (from the template for scoped users).
    pub bearer: bool,
    /// The earliest of the user `exp` (the instant `exp` seconds; nats-server
    /// closes the connection within the second after it) and the end of the
    /// current `times` window (3.12, 5.2).
    pub expires_at: Option<SystemTime>,
    /// The account JWT `exp`, if any.
    pub account_expires_at: Option<SystemTime>,
    pub is_system_account: bool,
    /// The presented token (kept for USER.INFO and rechecks).
    pub jwt: Arc<str>,
}

/// What [`TrustStore::resolve_user`] found: the user a JWT logs in as,
/// where its permissions come from, and the login checks explain skipped.
#[derive(Clone, Debug)]
pub struct ResolvedUser {
    pub user: JwtUser,
    pub origin: crate::permissions::explain::Origin,
    pub notes: Vec<String>,
}

/// A failed JWT login. On the wire it is always `Authorization Violation`;
/// [`fmt::Display`] gives nats-server's debug text, [`JwtAuthError::reason`]
/// a bounded metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtAuthError {
    kind: JwtRefusal,
    detail: String,
}

/// Which step of spec 2.3 refused the login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtRefusal {
    /// Step 1: no JWT or not a valid user JWT.
    UserJwtRequired,
    /// Step 2: `proxy_required` (natsgate is not a trusted proxy).
    ProxyRequired,
    /// Step 3: blocking validation error or time check.
    UserJwtInvalid,
    /// Step 6: the account is not loaded.
    AccountNotFound,
    /// Step 7: the account's issuer is no longer trusted.
    AccountNotTrusted,
    /// Step 8: `iss` is not a signing key of the account.
    IssuerUnknown,
    /// Step 9: a scoped user with its own permissions or limits.
    ScopedUserNotEmpty,
    /// Step 9: the scope template failed.
    TemplateInvalid,
    /// Step 10.
    AccountExpired,
    /// Step 11.
    BearerNotAllowed,
    /// Step 12.
    ConnectionTypeNotAllowed,
    /// Step 13.
    Signature(SignatureError),
    /// Step 14.
    Revoked,
    /// Step 15 (nats-server logs it at error level).
    SourceNotAllowed,
    /// Step 16 (nats-server logs it at error level).
    OutsideConnectTimes,
}

impl JwtRefusal {
    /// The metric label (`natsgate_auth_failures_total{reason}`).
    pub fn label(self) -> &'static str {
        match self {
            JwtRefusal::UserJwtRequired => "user_jwt_required",
            JwtRefusal::ProxyRequired => "proxy_required",
            JwtRefusal::UserJwtInvalid => "user_jwt_invalid",
            JwtRefusal::AccountNotFound => "account_not_found",
            JwtRefusal::AccountNotTrusted => "account_not_trusted",
            JwtRefusal::IssuerUnknown => "issuer_unknown",
            JwtRefusal::ScopedUserNotEmpty => "scoped_user_not_empty",
            JwtRefusal::TemplateInvalid => "template_invalid",
            JwtRefusal::AccountExpired => "account_expired",
            JwtRefusal::BearerNotAllowed => "bearer_not_allowed",
            JwtRefusal::ConnectionTypeNotAllowed => "connection_type_not_allowed",
            JwtRefusal::Signature(e) => e.reason(),
            JwtRefusal::Revoked => "revoked",
            JwtRefusal::SourceNotAllowed => "source_not_allowed",
            JwtRefusal::OutsideConnectTimes => "outside_connect_times",
        }
    }
}

impl JwtAuthError {
    pub(crate) fn new(kind: JwtRefusal, detail: impl Into<String>) -> JwtAuthError {
        JwtAuthError {
            kind,
            detail: detail.into(),
        }
    }

    pub fn kind(&self) -> JwtRefusal {
        self.kind
    }

    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        self.kind.label()
    }

    /// True where nats-server logs the failure at error level instead of
    /// debug (`Bad src Ip`, `Outside connect times`).
    pub fn is_error_level(&self) -> bool {
        matches!(
            self.kind,
            JwtRefusal::SourceNotAllowed | JwtRefusal::OutsideConnectTimes
        )
    }
}

impl fmt::Display for JwtAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.detail;
        match self.kind {
            JwtRefusal::UserJwtRequired => f.write_str("Authentication requires a user JWT"),
            JwtRefusal::ProxyRequired => f.write_str("proxy connection required"),
            JwtRefusal::UserJwtInvalid => write!(f, "User JWT no longer valid: {d}"),
            JwtRefusal::AccountNotFound => write!(f, "Account JWT lookup error: {d}"),
            JwtRefusal::AccountNotTrusted => {
                f.write_str("Account JWT not signed by trusted operator")
            }
            JwtRefusal::IssuerUnknown => f.write_str("User JWT issuer is not known"),
            JwtRefusal::ScopedUserNotEmpty => write!(
                f,
                "User JWT is not valid: scoped users require no permissions or limits set"
            ),
            JwtRefusal::TemplateInvalid => f.write_str("User JWT generated invalid permissions"),
            JwtRefusal::AccountExpired => f.write_str("Account JWT has expired"),
            JwtRefusal::BearerNotAllowed => f.write_str("Account does not allow bearer tokens"),
            JwtRefusal::ConnectionTypeNotAllowed => f.write_str("Connection type not allowed"),
            JwtRefusal::Signature(e) => e.fmt(f),
            JwtRefusal::Revoked => f.write_str("User authentication revoked"),
            JwtRefusal::SourceNotAllowed => write!(f, "Bad src Ip {d}"),
            JwtRefusal::OutsideConnectTimes => f.write_str("Outside connect times"),
        }
    }
}

impl std::error::Error for JwtAuthError {}

/// Why a connected user must go after an account update or a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// Revoked in the updated account JWT.
    Revoked,
    /// The account JWT expired.
    AccountExpired,
    /// The user JWT expired or the `times` window ended.
    UserExpired,
    /// E.g. a bearer user after the account set `disallow_bearer`, or the
    /// account was removed.
    AuthorizationViolation,
    /// The user's signing key was removed or its scope changed: nats-server
    /// closes the connection **without any -ERR** (spec 3.11).
    AuthenticationFailure,
}

impl Disconnect {
    /// The exact `-ERR` text (spec 9.7), without the `-ERR` prefix and
    /// quotes. Empty for [`Disconnect::AuthenticationFailure`], which sends
    /// nothing (see [`Disconnect::sends_error`]).
    pub fn error_text(&self) -> &'static str {
        match self {
            Disconnect::Revoked => "User Authentication Revoked",
            Disconnect::AccountExpired => "Account Authentication Expired",
            Disconnect::UserExpired => "User Authentication Expired",
            Disconnect::AuthorizationViolation => "Authorization Violation",
            Disconnect::AuthenticationFailure => "",
        }
    }

    /// False when nats-server closes silently.
    pub fn sends_error(&self) -> bool {
        !matches!(self, Disconnect::AuthenticationFailure)
    }
}

/// What [`TrustStore::upsert_account_jwt`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountChange {
    Added,
    /// `revoked_any`: the update adds or raises a revocation entry.
    Updated {
        revoked_any: bool,
    },
    /// The very same token was loaded already.
    Unchanged,
}

/// Why a resolver push was refused: nats-server's reply is
/// `{"account": account, "code": 500, "description": "<message> - <error>"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateRefusal {
    pub account: String,
    pub message: &'static str,
    pub error: String,
}

impl UpdateRefusal {
    pub fn description(&self) -> String {
        format!("{} - {}", self.message, self.error)
    }
}

/// Why a resolver delete request was refused: `by` is the requester
/// (the JWT's subject, empty when it did not decode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRefusal {
    pub by: String,
    pub error: String,
}

/// A JWT file or token that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtLoadError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{problem}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Invalid {
        file: Option<PathBuf>,
        problem: String,
    },
}

/// A trusted operator, for `natsgate check`.
#[derive(Clone, Debug)]
pub struct OperatorInfo {
    pub name: String,
    pub key: String,
    pub signing_keys: Vec<String>,
    /// `strict_signing_key_usage`: the identity key itself is not trusted.
    pub strict_signing_keys: bool,
    pub system_account: Option<String>,
    /// Not enforced (spec 3.4), shown only.
    pub expires_at: Option<SystemTime>,
    pub file: PathBuf,
}

/// A loaded, verified account.
#[derive(Clone, Debug)]
pub struct AccountInfo {
    pub name: String,
    pub key: String,
    /// The operator key that signed it.
    pub issuer: String,
    pub signing_keys: Vec<AccountSigningKey>,
    /// Issued by a strict operator: the account identity key may not sign users (3.8).
    pub strict: bool,
    pub revocations: BTreeMap<String, i64>,
    pub expires_at: Option<SystemTime>,
    pub limits: AccountLimits,
    pub disallow_bearer: bool,
    /// `default_permissions`, converted (4.1).
    pub default_permissions: PermissionSpec,
    pub tags: Vec<String>,
    pub is_system_account: bool,
    /// The decoded claims (scope templates, raw fields).
    pub claims: claims::AccountClaims,
    /// The token as loaded.
    pub jwt: String,
}

impl AccountInfo {
    pub fn revocation_count(&self) -> usize {
        self.revocations.len()
    }
}

/// One account signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSigningKey {
    pub key: String,
    /// A user scope: its users get the template's permissions and limits.
    pub scoped: bool,
    pub role: String,
}

/// Account limits natsgate uses; -1 unlimited, 0 nothing allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountLimits {
    pub conn: i64,
    pub subs: i64,
    pub payload: i64,
    pub data: i64,
}
