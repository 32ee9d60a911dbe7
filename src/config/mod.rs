//! Configuration: the TOML file (see `config/natsgate.toml` and the contract's
//! section 2) turned into validated runtime [`Settings`].
//!
//! There is one path, `load → parse (file model) → validate → Settings`:
//!
//! - [`file`] is the serde model of the file, as written. Every table rejects
//!   unknown keys, so a typo cannot silently switch a security setting off.
//! - [`validate`] checks every value, applies the defaults (named constants
//!   below), resolves relative paths against the config file's directory and
//!   reads the files the config names (upstream seeds and `.creds`), so a
//!   config that loads is a config the proxy can run with.
//! - Every [`ConfigError`] is one line that starts with the file and names the
//!   key (or the line) and the problem.
//!
//! This module does not load JWTs (that is `auth::jwt`) or compile
//! permissions (that is `permissions`); it hands them paths and a
//! [`PermissionSpec`].

mod creds;
mod file;
mod validate;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::permissions::PermissionSpec;

pub use creds::{CredsError, parse_creds, parse_seed_file};

/// Everything natsgate needs to run, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: ListenSettings,
    pub upstream: UpstreamSettings,
    /// `[jwt]`: decentralized (operator mode) authentication, when present.
    pub jwt: Option<JwtSettings>,
    /// `[[users]]`: static NKey users; public keys are unique.
    pub users: Vec<StaticUser>,
    pub metrics: Option<MetricsSettings>,
    pub log: LogSettings,
    /// `[jetstream]`: the JetStream guard (issue 14).
    pub jetstream: JetStreamSettings,
    /// `[policy]`: enforce permissions, or only report what they would
    /// refuse (issue 16). Applied again on SIGHUP.
    pub policy: PolicySettings,
    /// `[limits]`: rate limits and per-user connection limits (issue 16).
    pub limits: LimitsSettings,
    /// `[advisories]`: violation events published upstream, when set.
    pub advisories: Option<AdvisorySettings>,
    /// `[websocket]`: the WebSocket listener (off when not set).
    pub websocket: Option<WebsocketSettings>,
    /// The directory of the config file (absolute when loaded from a file);
    /// relative paths in the file were resolved against it.
    pub base_dir: PathBuf,
    /// The file these settings were loaded from (SIGHUP re-reads it);
    /// `None` for settings made from a string.
    pub source: Option<PathBuf>,
}

/// `[listen]`: the client-facing side.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenSettings {
    /// As written, e.g. `"0.0.0.0:4222"`: a socket address or `host:port`.
    pub addr: String,
    /// CONNECT must arrive and verify within this.
    pub auth_timeout: Duration,
    pub max_connections: usize,
    /// Bytes, counted as nats-server counts them.
    pub max_control_line: usize,
    /// Bytes; between 1 and [`MAX_PAYLOAD_LIMIT`].
    pub max_payload: usize,
    /// How long connections may drain after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// `server_name` in INFO; defaults to the host name.
    pub server_name: String,
    /// Sent to clients as `connect_urls` (`host:port` each).
    pub advertise: Vec<String>,
    pub tls: Option<ListenTls>,
}

/// `[listen.tls]`; the files exist and are readable (their contents are not
/// checked here).
#[derive(Clone, Debug, PartialEq)]
pub struct ListenTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by it.
    pub ca_file: Option<PathBuf>,
    /// TLS before INFO, as nats-server's `handshake_first`.
    pub handshake_first: bool,
}

/// `[websocket]`: a second listener for WebSocket clients (browsers,
/// nats.ws), serving the same sessions as `[listen]`.
#[derive(Clone, Debug, PartialEq)]
pub struct WebsocketSettings {
    /// As written, e.g. `"0.0.0.0:8080"`.
    pub addr: String,
    /// `wss://` with these; `None` only with `no_tls = true`.
    pub tls: Option<ListenTls>,
    /// Origins accepted in the upgrade (`scheme://host[:port]`); empty = any.
    pub allowed_origins: Vec<String>,
    /// The Origin must match the request's Host (and scheme).
    pub same_origin: bool,
    /// Offer-taking of `permessage-deflate`.
    pub compression: bool,
    /// The TLS handshake and the HTTP upgrade must end within this.
    pub handshake_timeout: Duration,
    /// Peers whose `X-Forwarded-For` / `Forwarded` header is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The cookie whose value is the user JWT when the CONNECT has none
    /// (nats-server's `jwt_cookie`); needs `[jwt]`.
    pub jwt_cookie: Option<String>,
}

/// `[upstream]`: the nats-server natsgate logs in to.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamSettings {
    /// At least one; tried in order.
    pub servers: Vec<ServerAddr>,
    pub connect_timeout: Duration,
    /// The credential for every upstream connection without an account entry.
    pub credential: Credential,
    /// Per-account credentials; account names are unique.
    pub accounts: Vec<AccountCredential>,
    pub tls: Option<UpstreamTls>,
}

/// One upstream server: `nats://h:p`, `tls://h:p`, `h:p` or `h` (port 4222).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    /// Without brackets for IPv6 (`::1`), ready for `(host, port)` dialing.
    pub host: String,
    pub port: u16,
    /// `tls://`: TLS is required on this server.
    pub tls: bool,
    /// Normalized, for logs: `nats://host:port` or `tls://host:port`.
    pub url: String,
}

/// `[upstream.tls]`; the files exist and are readable.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamTls {
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key: both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// How natsgate logs in to the upstream server. Files named in the config
/// have been read and checked: `seed` is a valid user NKey seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    UserPassword { user: String, password: Secret },
    Token(Secret),
    Nkey { seed: Secret },
    Creds { jwt: String, seed: Secret },
}

/// `[[upstream.accounts]]`: the credential for users of one account.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountCredential {
    /// The account's name (from its JWT) or public key (`A...`).
    pub account: String,
    pub credential: Credential,
}

/// `[jwt]`: where the trusted operator and the account JWTs are. Paths are
/// resolved against `base_dir` but the files are not read here.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtSettings {
    /// Not empty.
    pub operators: Vec<PathBuf>,
    pub accounts_dir: Option<PathBuf>,
    pub accounts: Vec<PathBuf>,
    /// `$SYS.REQ.CLAIMS.DELETE` is served (nats-server's resolver
    /// `allow_delete`); off by default.
    pub allow_delete: bool,
    /// `[jwt.kv]`: the fleet account store, when set.
    pub kv: Option<KvSettings>,
}

/// `[jwt.kv]`: account JWTs in a JetStream KV bucket on the upstream
/// cluster, shared by every natsgate instance that names it.
#[derive(Clone, Debug, PartialEq)]
pub struct KvSettings {
    /// A valid KV bucket name (`[A-Za-z0-9_-]+`).
    pub bucket: String,
    /// 1 to 5.
    pub replicas: usize,
    /// Create the bucket when it is missing.
    pub create: bool,
}

/// `[[users]]`: a static NKey user.
#[derive(Clone, Debug)]
pub struct StaticUser {
    /// A valid user public key (`U...`, 56 characters).
    pub nkey: String,
    pub name: Option<String>,
    /// Picks the `[[upstream.accounts]]` credential with this name, if any.
    pub account: Option<String>,
    pub permissions: PermissionSpec,
}

/// `[metrics]`
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSettings {
    /// A socket address or `host:port`.
    pub addr: String,
    /// Users with their own `natsgate_user_*` series (default 100).
    pub user_series: usize,
    /// How long a user who left keeps its series (default 5m).
    pub user_series_retention: Duration,
}

/// `[limits]`: per-user and per-account rate limits, counted per natsgate
/// instance (see `limits`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LimitsSettings {
    /// Close a client that stays throttled this long (default: never).
    pub close_after: Option<Duration>,
    /// `[[limits.users]]`: by user name or public key; `"*"` is every user
    /// without an entry of its own.
    pub users: Vec<UserLimit>,
    /// `[[limits.accounts]]`: by account name or public key.
    pub accounts: Vec<AccountLimit>,
}

impl LimitsSettings {
    /// The entry of a user (public key, name): its own, else `"*"`.
    pub fn for_user(&self, key: &str, name: &str) -> Option<&UserLimit> {
        let named = |e: &&UserLimit| e.user == key || (!name.is_empty() && e.user == name);
        self.users
            .iter()
            .find(named)
            .or_else(|| self.users.iter().find(|e| e.user == "*"))
    }

    /// The entry of an account (name, public key).
    pub fn for_account(&self, name: &str, key: &str) -> Option<&AccountLimit> {
        self.accounts.iter().find(|e| {
            (!name.is_empty() && e.account == name) || (!key.is_empty() && e.account == key)
        })
    }
}

/// A rate: messages and/or payload bytes per second, each with a burst
/// (default a tenth of a second at the rate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub msgs_per_second: Option<u64>,
    pub bytes_per_second: Option<u64>,
    pub burst_msgs: Option<u64>,
    pub burst_bytes: Option<u64>,
}

/// `[[limits.users]]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserLimit {
    pub user: String,
    pub rate: RateLimit,
    /// Connections of this user open at once on this instance.
    pub max_connections: Option<u32>,
}

/// `[[limits.accounts]]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountLimit {
    pub account: String,
    pub rate: RateLimit,
}

/// `[advisories]`: every violation, would-be violation, auth failure and
/// limit close published upstream as a JSON event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvisorySettings {
    /// The subject prefix: an event goes to `<subject>.<advisory>`.
    pub subject: String,
    /// Events published per second at most (default 100); the rest are
    /// dropped and counted.
    pub max_per_second: u64,
}

/// `[policy]`: report-only mode for the whole deployment, some accounts or
/// some users. In report-only mode a PUB or SUB the user's permissions
/// refuse is forwarded anyway, logged and counted (`would_deny`);
/// authentication is always enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySettings {
    /// `enforce` (default true); false makes every user report-only.
    pub enforce: bool,
    /// `report_only_accounts`: account names or public keys (`A...`) whose
    /// users are report-only; for static users, their `account`.
    pub report_only_accounts: Vec<String>,
    /// `report_only_users`: user names or public keys (`U...`).
    pub report_only_users: Vec<String>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            enforce: true,
            report_only_accounts: Vec::new(),
            report_only_users: Vec::new(),
        }
    }
}

impl PolicySettings {
    /// Whether a user (public key and name) of an account (name and public
    /// key; empty when none) is report-only.
    pub fn report_only(
        &self,
        user_key: &str,
        user_name: &str,
        account: &str,
        account_key: &str,
    ) -> bool {
        !self.enforce
            || named(&self.report_only_users, user_key, user_name)
            || named(&self.report_only_accounts, account, account_key)
    }
}

/// Whether `list` names `a` or `b` (a key and a name; empty ones never
/// match).
fn named(list: &[String], a: &str, b: &str) -> bool {
    list.iter()
        .any(|entry| (!a.is_empty() && entry == a) || (!b.is_empty() && entry == b))
}

/// `[jetstream]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JetStreamSettings {
    /// Whether JetStream API requests are checked against the user's
    /// permissions (`permissions::jetstream`) for every user. Default false.
    pub guard: bool,
    /// With the guard on: whether `STREAM.NAMES`/`STREAM.LIST` answers show
    /// only the streams the user may read from. Default true.
    pub filter_listing: bool,
    /// Users (names or `U...` keys) guarded whatever `guard` says.
    pub guard_users: Vec<String>,
    /// Accounts (names or `A...` keys) whose users are guarded.
    pub guard_accounts: Vec<String>,
    /// Users never guarded.
    pub exempt_users: Vec<String>,
    /// Accounts whose users are not guarded.
    pub exempt_accounts: Vec<String>,
}

impl Default for JetStreamSettings {
    fn default() -> JetStreamSettings {
        JetStreamSettings {
            guard: false,
            filter_listing: true,
            guard_users: Vec::new(),
            guard_accounts: Vec::new(),
            exempt_users: Vec::new(),
            exempt_accounts: Vec::new(),
        }
    }
}

impl JetStreamSettings {
    /// Whether the guard is on for a user (public key and name) of an
    /// account (name and public key; empty when none). The most specific
    /// entry decides: a user list before an account list before `guard`.
    pub fn guards(
        &self,
        user_key: &str,
        user_name: &str,
        account: &str,
        account_key: &str,
    ) -> bool {
        if named(&self.exempt_users, user_key, user_name) {
            false
        } else if named(&self.guard_users, user_key, user_name) {
            true
        } else if named(&self.exempt_accounts, account, account_key) {
            false
        } else if named(&self.guard_accounts, account, account_key) {
            true
        } else {
            self.guard
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    /// One of `error`, `warn`, `info`, `debug`, `trace` (lower case).
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A password, token or seed. `Debug` prints `MASKED`; there is no
/// `Display`, so the only way to the text is [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Why a config cannot be used. Every message is one line that starts with
/// the file at fault.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file itself cannot be read.
    #[error("{}: cannot read: {reason}", file.display())]
    Read { file: PathBuf, reason: String },
    /// Not valid TOML, an unknown key, a missing key or a value of the wrong
    /// type. `message` starts with the key when the line shows it.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed, but the value of `key` (a dotted path such as
    /// `users[0].nkey`) is not usable.
    #[error("{}: {key}: {problem}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        problem: String,
    },
    /// A file named by `key` (a seed, a `.creds` file, a TLS file) is
    /// missing or unusable.
    #[error("{}: {problem} (named by {key} in {})", path.display(), file.display())]
    Referenced {
        file: PathBuf,
        key: String,
        path: PathBuf,
        problem: String,
    },
}

/// The port used when an upstream server is given without one.
pub const DEFAULT_NATS_PORT: u16 = 4222;
/// Users with their own `natsgate_user_*` series, by default.
pub const DEFAULT_USER_SERIES: usize = 100;
/// How long a user who left keeps its entry (and series), by default.
pub const DEFAULT_USER_SERIES_RETENTION: Duration = Duration::from_secs(300);
/// `[advisories] max_per_second` by default.
pub const DEFAULT_ADVISORY_RATE: u64 = 100;
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(2);
/// `[websocket] handshake_timeout`, nats-server's default.
pub const DEFAULT_WS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;
/// nats-server's `MAX_CONTROL_LINE_SIZE`.
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;
/// The smallest accepted `max_control_line`: room for an NKey CONNECT
/// (about 300 bytes) and ordinary subjects. JWT users need more (their
/// CONNECT carries the JWT), which the default gives.
pub const MIN_MAX_CONTROL_LINE: usize = 512;
/// The largest accepted `max_control_line` (1 MiB); each connection may
/// buffer this much before a line is complete.
pub const MAX_MAX_CONTROL_LINE: usize = 1024 * 1024;
/// nats-server's default `max_payload`.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// nats-server's hard upper limit for `max_payload` (64 MiB).
pub const MAX_PAYLOAD_LIMIT: usize = 64 * 1024 * 1024;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The `server_name` when no host name can be found.
pub const FALLBACK_SERVER_NAME: &str = "natsgate";
/// How an inline config (`from_toml_str`) is named in errors.
const INLINE_FILE_NAME: &str = "<inline config>";

// === impl Settings ===

impl Settings {
    /// Reads, parses and validates the config file at `path`, and reads the
    /// credential files it names. Relative paths in the file are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let parent = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // `absolute` only fails for an empty path or without a current
        // directory; the relative directory still works then.
        let base_dir = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        let mut settings = validate::parse(&text, path, &base_dir)?;
        settings.source = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        Ok(settings)
    }

    /// Parses and validates a config given as text (tests start natsgate
    /// in-process with this). Relative paths are resolved against
    /// `base_dir`; errors name the file `<inline config>`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Settings, ConfigError> {
        validate::parse(text, Path::new(INLINE_FILE_NAME), base_dir)
    }
}

// === impl Credential ===

impl Credential {
    /// A short name of the kind, for `check` and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::UserPassword { .. } => "user/password",
            Credential::Token(_) => "token",
            Credential::Nkey { .. } => "nkey",
            Credential::Creds { .. } => "creds",
        }
    }

    /// The kind and the public part (user name or public key), never the
    /// secret: `user/password (user "gate")`, `nkey (UAB...)`.
    pub fn describe(&self) -> String {
        match self {
            Credential::UserPassword { user, .. } => format!("user/password (user {user:?})"),
            Credential::Token(_) => "token".to_owned(),
            Credential::Nkey { seed } | Credential::Creds { seed, .. } => {
                // Validation checked the seed, so this only falls back if the
                // value was built by hand.
                match creds::user_key_pair(seed.expose()) {
                    Ok(key_pair) => format!("{} ({})", self.kind(), key_pair.public_key()),
                    Err(_) => self.kind().to_owned(),
                }
            }
        }
    }
}

// === impl Secret ===

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret text. Call it only where the secret is sent or used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

#[cfg(test)]
mod tests;
