//! The TOML file model: what the file may contain, exactly as written.
//!
//! Every table rejects unknown keys (a misspelt `deny` must not silently
//! allow everything). Values stay raw here (durations and addresses are
//! strings, paths are relative); `validate` turns this model into
//! [`Settings`](super::Settings) and names the key when a value is wrong.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub listen: ListenFile,
    pub upstream: UpstreamFile,
    pub jwt: Option<JwtFile>,
    #[serde(default)]
    pub users: Vec<UserFile>,
    pub metrics: Option<MetricsFile>,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub jetstream: JetStreamFile,
    #[serde(default)]
    pub policy: PolicyFile,
    #[serde(default)]
    pub limits: LimitsFile,
    pub advisories: Option<AdvisoriesFile>,
    pub websocket: Option<WebsocketFile>,
}

/// `[websocket]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebsocketFile {
    pub addr: String,
    #[serde(default)]
    pub no_tls: bool,
    pub tls: Option<ListenTlsFile>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub same_origin: bool,
    #[serde(default)]
    pub compression: bool,
    pub handshake_timeout: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub jwt_cookie: Option<String>,
}

/// `[listen]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenFile {
    pub addr: String,
    pub auth_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_control_line: Option<usize>,
    pub max_payload: Option<usize>,
    pub shutdown_grace: Option<String>,
    pub server_name: Option<String>,
    #[serde(default)]
    pub advertise: Vec<String>,
    pub tls: Option<ListenTlsFile>,
}

/// `[listen.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenTlsFile {
    pub cert_file: String,
    pub key_file: String,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub handshake_first: bool,
}

/// `[upstream]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamFile {
    pub servers: Vec<String>,
    pub connect_timeout: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub nkey_seed_file: Option<String>,
    pub creds_file: Option<String>,
    #[serde(default)]
    pub accounts: Vec<AccountFile>,
    pub tls: Option<UpstreamTlsFile>,
}

/// `[[upstream.accounts]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountFile {
    pub account: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub nkey_seed_file: Option<String>,
    pub creds_file: Option<String>,
}

/// The credential keys shared by `[upstream]` and `[[upstream.accounts]]`,
/// borrowed out of either table. Exactly one kind must be given; `validate`
/// checks that. (Not `#[serde(flatten)]`: flatten and `deny_unknown_fields`
/// do not work together.)
pub(super) struct CredentialFile<'a> {
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub token: Option<&'a str>,
    pub nkey_seed_file: Option<&'a str>,
    pub creds_file: Option<&'a str>,
}

impl UpstreamFile {
    pub fn credential(&self) -> CredentialFile<'_> {
        CredentialFile {
            user: self.user.as_deref(),
            password: self.password.as_deref(),
            token: self.token.as_deref(),
            nkey_seed_file: self.nkey_seed_file.as_deref(),
            creds_file: self.creds_file.as_deref(),
        }
    }
}

impl AccountFile {
    pub fn credential(&self) -> CredentialFile<'_> {
        CredentialFile {
            user: self.user.as_deref(),
            password: self.password.as_deref(),
            token: self.token.as_deref(),
            nkey_seed_file: self.nkey_seed_file.as_deref(),
            creds_file: self.creds_file.as_deref(),
        }
    }
}

/// `[upstream.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamTlsFile {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub server_name: Option<String>,
}

/// `[jwt]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JwtFile {
    #[serde(default)]
    pub operators: Vec<String>,
    pub accounts_dir: Option<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub allow_delete: bool,
    pub kv: Option<KvFile>,
}

/// `[jwt.kv]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KvFile {
    pub bucket: String,
    pub replicas: Option<usize>,
    pub create: Option<bool>,
}

/// `[[users]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserFile {
    pub nkey: String,
    pub name: Option<String>,
    pub account: Option<String>,
    #[serde(default)]
    pub permissions: PermissionsFile,
}

/// `[users.permissions]`: nats-server's `permissions { }` block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PermissionsFile {
    /// `pub` is nats-server's short spelling.
    #[serde(alias = "pub")]
    pub publish: Option<SubjectRulesFile>,
    /// `sub` is nats-server's short spelling.
    #[serde(alias = "sub")]
    pub subscribe: Option<SubjectRulesFile>,
    pub allow_responses: Option<AllowResponsesFile>,
}

/// `publish = "a"`, `publish = ["a", "b"]` or `publish = { allow = .., deny = .. }`.
///
/// The first two are nats-server's shorthand for an allow list.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct SubjectRulesFile {
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
}

/// The table form of [`SubjectRulesFile`]; each list may also be one string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectRulesTable {
    allow: Option<OneOrMany>,
    deny: Option<OneOrMany>,
}

/// `allow_responses = true | false | { max = N, expires = "1m" }`
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AllowResponsesFile {
    Enabled(bool),
    Limits {
        max: Option<i64>,
        expires: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowResponsesTable {
    max: Option<i64>,
    expires: Option<String>,
}

/// `[jetstream]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JetStreamFile {
    #[serde(default)]
    pub guard: bool,
    pub filter_listing: Option<bool>,
    #[serde(default)]
    pub guard_users: Vec<String>,
    #[serde(default)]
    pub guard_accounts: Vec<String>,
    #[serde(default)]
    pub exempt_users: Vec<String>,
    #[serde(default)]
    pub exempt_accounts: Vec<String>,
}

/// `[policy]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    pub enforce: Option<bool>,
    #[serde(default)]
    pub report_only_accounts: Vec<String>,
    #[serde(default)]
    pub report_only_users: Vec<String>,
}

/// `[metrics]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsFile {
    pub addr: String,
    pub user_series: Option<usize>,
    pub user_series_retention: Option<String>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    pub close_after: Option<String>,
    #[serde(default)]
    pub users: Vec<UserLimitFile>,
    #[serde(default)]
    pub accounts: Vec<AccountLimitFile>,
}

/// `[[limits.users]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserLimitFile {
    pub user: String,
    pub msgs_per_second: Option<u64>,
    pub bytes_per_second: Option<u64>,
    pub burst_msgs: Option<u64>,
    pub burst_bytes: Option<u64>,
    pub max_connections: Option<u32>,
}

/// `[[limits.accounts]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountLimitFile {
    pub account: String,
    pub msgs_per_second: Option<u64>,
    pub bytes_per_second: Option<u64>,
    pub burst_msgs: Option<u64>,
    pub burst_bytes: Option<u64>,
}

/// `[advisories]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdvisoriesFile {
    pub subject: String,
    pub max_per_second: Option<u64>,
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormatFile,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum LogFormatFile {
    #[default]
    Text,
    Json,
}

impl Default for LogFile {
    fn default() -> Self {
        LogFile {
            level: default_log_level(),
            format: LogFormatFile::default(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

// === impl SubjectRulesFile ===

impl<'de> Deserialize<'de> for SubjectRulesFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RulesVisitor;

        impl<'de> Visitor<'de> for RulesVisitor {
            type Value = SubjectRulesFile;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a subject, a list of subjects, or a table with `allow` and/or `deny`")
            }

            fn visit_str<E: de::Error>(self, subject: &str) -> Result<Self::Value, E> {
                Ok(SubjectRulesFile {
                    allow: Some(vec![subject.to_owned()]),
                    deny: Vec::new(),
                })
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let allow = Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(SubjectRulesFile {
                    allow: Some(allow),
                    deny: Vec::new(),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let table =
                    SubjectRulesTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SubjectRulesFile {
                    allow: table.allow.map(OneOrMany::into_vec),
                    deny: table.deny.map(OneOrMany::into_vec).unwrap_or_default(),
                })
            }
        }

        deserializer.deserialize_any(RulesVisitor)
    }
}

// === impl AllowResponsesFile ===

impl<'de> Deserialize<'de> for AllowResponsesFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ResponsesVisitor;

        impl<'de> Visitor<'de> for ResponsesVisitor {
            type Value = AllowResponsesFile;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or a table with `max` and/or `expires`")
            }

            fn visit_bool<E: de::Error>(self, enabled: bool) -> Result<Self::Value, E> {
                Ok(AllowResponsesFile::Enabled(enabled))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let table =
                    AllowResponsesTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(AllowResponsesFile::Limits {
                    max: table.max,
                    expires: table.expires,
                })
            }
        }

        deserializer.deserialize_any(ResponsesVisitor)
    }
}

// === impl OneOrMany ===

/// A string or a list of strings (nats-server accepts both for `allow`/`deny`).
#[derive(Debug)]
struct OneOrMany(Vec<String>);

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        self.0
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;

        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a subject or a list of subjects")
            }

            fn visit_str<E: de::Error>(self, subject: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany(vec![subject.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany)
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor)
    }
}
