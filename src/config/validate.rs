//! The file model → [`Settings`]: defaults, value checks, path resolution and
//! the reading of credential files. Every error names the key.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::creds::{parse_creds, parse_seed_file};
use super::file::{
    AdvisoriesFile, AllowResponsesFile, CredentialFile, FileConfig, JetStreamFile, JwtFile, KvFile,
    LimitsFile, ListenFile, LogFile, LogFormatFile, PermissionsFile, PolicyFile, SubjectRulesFile,
    UpstreamFile, UserFile, WebsocketFile,
};
use super::values::{
    check_host_port, check_permission_subject, check_user_public_key, default_server_name,
    parse_server,
};
use super::*;
use crate::permissions::{ResponseSpec, SubjectRules};

/// Parses `text` (the contents of `file`) and validates it into [`Settings`].
pub(super) fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<Settings, ConfigError> {
    let model: FileConfig = toml::from_str(text).map_err(|e| syntax_error(text, file, &e))?;
    let ctx = Context { file, base_dir };
    ctx.settings(model)
}

/// What every check needs to build an error or resolve a path.
struct Context<'a> {
    file: &'a Path,
    base_dir: &'a Path,
}

impl Context<'_> {
    fn settings(&self, model: FileConfig) -> Result<Settings, ConfigError> {
        let users = model
            .users
            .iter()
            .enumerate()
            .map(|(i, user)| self.user(i, user))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_unique_users(&users)?;
        let jwt = model.jwt.as_ref().map(|jwt| self.jwt(jwt)).transpose()?;
        let jwt_mode = jwt.is_some();
        if users.is_empty() && jwt.is_none() {
            return Err(self.invalid(
                "users",
                "no [[users]] and no [jwt] section: nobody could log in",
            ));
        }
        Ok(Settings {
            listen: self.listen(&model.listen)?,
            upstream: self.upstream(&model.upstream)?,
            jwt,
            users,
            metrics: model
                .metrics
                .map(|metrics| {
                    check_host_port(&metrics.addr, true)
                        .map_err(|problem| self.invalid("metrics.addr", problem))?;
                    Ok(MetricsSettings {
                        user_series: metrics.user_series.unwrap_or(DEFAULT_USER_SERIES),
                        user_series_retention: self.duration(
                            "metrics.user_series_retention",
                            metrics.user_series_retention.as_deref(),
                            DEFAULT_USER_SERIES_RETENTION,
                        )?,
                        addr: metrics.addr,
                    })
                })
                .transpose()?,
            log: self.log(&model.log)?,
            jetstream: self.jetstream(&model.jetstream)?,
            policy: self.policy(&model.policy)?,
            limits: self.limits(&model.limits)?,
            advisories: model
                .advisories
                .as_ref()
                .map(|a| self.advisories(a))
                .transpose()?,
            websocket: model
                .websocket
                .as_ref()
                .map(|w| self.websocket(w, jwt_mode))
                .transpose()?,
            base_dir: self.base_dir.to_path_buf(),
            source: None,
        })
    }

    // === [policy] ===

    fn policy(&self, policy: &PolicyFile) -> Result<PolicySettings, ConfigError> {
        self.names("policy.report_only_accounts", &policy.report_only_accounts)?;
        self.names("policy.report_only_users", &policy.report_only_users)?;
        Ok(PolicySettings {
            enforce: policy.enforce.unwrap_or(true),
            report_only_accounts: policy.report_only_accounts.clone(),
            report_only_users: policy.report_only_users.clone(),
        })
    }

    /// A list of user or account names or public keys.
    fn names(&self, key: &str, list: &[String]) -> Result<(), ConfigError> {
        match list.iter().find(|e| e.trim().is_empty() || e.trim() != *e) {
            Some(entry) => Err(self.invalid(
                key,
                format!("{entry:?}: entries are names or public keys, without blanks around them"),
            )),
            None => Ok(()),
        }
    }

    fn jetstream(&self, js: &JetStreamFile) -> Result<JetStreamSettings, ConfigError> {
        self.names("jetstream.guard_users", &js.guard_users)?;
        self.names("jetstream.guard_accounts", &js.guard_accounts)?;
        self.names("jetstream.exempt_users", &js.exempt_users)?;
        self.names("jetstream.exempt_accounts", &js.exempt_accounts)?;
        let both = |a: &[String], b: &[String]| a.iter().find(|e| b.contains(e)).cloned();
        for (key, found) in [
            (
                "jetstream.exempt_users",
                both(&js.exempt_users, &js.guard_users),
            ),
            (
                "jetstream.exempt_accounts",
                both(&js.exempt_accounts, &js.guard_accounts),
            ),
        ] {
            if let Some(entry) = found {
                return Err(self.invalid(key, format!("{entry:?} is both guarded and exempt")));
            }
        }
        Ok(JetStreamSettings {
            guard: js.guard,
            filter_listing: js.filter_listing.unwrap_or(true),
            guard_users: js.guard_users.clone(),
            guard_accounts: js.guard_accounts.clone(),
            exempt_users: js.exempt_users.clone(),
            exempt_accounts: js.exempt_accounts.clone(),
        })
    }

    // === [limits] and [advisories] ===

    fn limits(&self, limits: &LimitsFile) -> Result<LimitsSettings, ConfigError> {
        let close_after = match &limits.close_after {
            None => None,
            Some(text) => {
                let d = self.duration("limits.close_after", Some(text), Duration::ZERO)?;
                if d.is_zero() {
                    return Err(self.invalid("limits.close_after", "must be more than 0s"));
                }
                Some(d)
            }
        };
        let mut users = Vec::new();
        for (i, entry) in limits.users.iter().enumerate() {
            let key = format!("limits.users[{i}]");
            self.limit_name(&key, "user", &entry.user)?;
            if users.iter().any(|u: &UserLimit| u.user == entry.user) {
                return Err(self.invalid(key, format!("user {:?} listed twice", entry.user)));
            }
            users.push(UserLimit {
                user: entry.user.clone(),
                rate: self.rate(
                    &key,
                    [entry.msgs_per_second, entry.bytes_per_second],
                    [entry.burst_msgs, entry.burst_bytes],
                )?,
                max_connections: entry.max_connections,
            });
        }
        let mut accounts = Vec::new();
        for (i, entry) in limits.accounts.iter().enumerate() {
            let key = format!("limits.accounts[{i}]");
            self.limit_name(&key, "account", &entry.account)?;
            if accounts
                .iter()
                .any(|a: &AccountLimit| a.account == entry.account)
            {
                return Err(self.invalid(key, format!("account {:?} listed twice", entry.account)));
            }
            accounts.push(AccountLimit {
                account: entry.account.clone(),
                rate: self.rate(
                    &key,
                    [entry.msgs_per_second, entry.bytes_per_second],
                    [entry.burst_msgs, entry.burst_bytes],
                )?,
            });
        }
        Ok(LimitsSettings {
            close_after,
            users,
            accounts,
        })
    }

    fn limit_name(&self, key: &str, field: &str, name: &str) -> Result<(), ConfigError> {
        if name.trim().is_empty() || name.trim() != name {
            return Err(self.invalid(
                format!("{key}.{field}"),
                format!("{name:?}: a name or public key, without blanks around it"),
            ));
        }
        Ok(())
    }

    /// The rate keys of a `[[limits.*]]` entry: `[msgs_per_second,
    /// bytes_per_second]` and their bursts.
    fn rate(
        &self,
        key: &str,
        [msgs_per_second, bytes_per_second]: [Option<u64>; 2],
        [burst_msgs, burst_bytes]: [Option<u64>; 2],
    ) -> Result<RateLimit, ConfigError> {
        let rate = RateLimit {
            msgs_per_second,
            bytes_per_second,
            burst_msgs,
            burst_bytes,
        };
        for (field, value) in [
            ("msgs_per_second", rate.msgs_per_second),
            ("bytes_per_second", rate.bytes_per_second),
            ("burst_msgs", rate.burst_msgs),
            ("burst_bytes", rate.burst_bytes),
        ] {
            if value == Some(0) {
                return Err(self.invalid(format!("{key}.{field}"), "must be at least 1"));
            }
        }
        if rate.burst_msgs.is_some() && rate.msgs_per_second.is_none() {
            return Err(self.invalid(format!("{key}.burst_msgs"), "needs msgs_per_second"));
        }
        if rate.burst_bytes.is_some() && rate.bytes_per_second.is_none() {
            return Err(self.invalid(format!("{key}.burst_bytes"), "needs bytes_per_second"));
        }
        Ok(rate)
    }

    fn advisories(&self, advisories: &AdvisoriesFile) -> Result<AdvisorySettings, ConfigError> {
        if !crate::protocol::subject::is_valid_literal_subject(advisories.subject.as_bytes()) {
            return Err(self.invalid(
                "advisories.subject",
                format!(
                    "{:?} is not a subject without wildcards",
                    advisories.subject
                ),
            ));
        }
        let max_per_second = advisories.max_per_second.unwrap_or(DEFAULT_ADVISORY_RATE);
        if max_per_second == 0 {
            return Err(self.invalid("advisories.max_per_second", "must be at least 1"));
        }
        Ok(AdvisorySettings {
            subject: advisories.subject.clone(),
            max_per_second,
        })
    }

    // === [listen] ===

    fn listen(&self, listen: &ListenFile) -> Result<ListenSettings, ConfigError> {
        check_host_port(&listen.addr, true).map_err(|p| self.invalid("listen.addr", p))?;
        let auth_timeout = self.duration(
            "listen.auth_timeout",
            listen.auth_timeout.as_deref(),
            DEFAULT_AUTH_TIMEOUT,
        )?;
        if auth_timeout.is_zero() {
            return Err(self.invalid("listen.auth_timeout", "must be more than 0s"));
        }
        let max_connections = listen.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(self.invalid("listen.max_connections", "must be at least 1"));
        }
        let max_control_line = listen.max_control_line.unwrap_or(DEFAULT_MAX_CONTROL_LINE);
        if !(MIN_MAX_CONTROL_LINE..=MAX_MAX_CONTROL_LINE).contains(&max_control_line) {
            return Err(self.invalid(
                "listen.max_control_line",
                format!(
                    "{max_control_line} is out of range: must be between {MIN_MAX_CONTROL_LINE} and {MAX_MAX_CONTROL_LINE} bytes"
                ),
            ));
        }
        let max_payload = listen.max_payload.unwrap_or(DEFAULT_MAX_PAYLOAD);
        if !(1..=MAX_PAYLOAD_LIMIT).contains(&max_payload) {
            return Err(self.invalid(
                "listen.max_payload",
                format!(
                    "{max_payload} is out of range: must be between 1 and {MAX_PAYLOAD_LIMIT} bytes"
                ),
            ));
        }
        let shutdown_grace = self.duration(
            "listen.shutdown_grace",
            listen.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
        )?;
        let server_name = match &listen.server_name {
            Some(name) => name.clone(),
            None => default_server_name(),
        };
        if server_name.is_empty() || server_name.chars().any(char::is_whitespace) {
            return Err(self.invalid(
                "listen.server_name",
                format!("{server_name:?} must be non-empty and without spaces"),
            ));
        }
        for (i, url) in listen.advertise.iter().enumerate() {
            check_host_port(url, false)
                .map_err(|p| self.invalid(format!("listen.advertise[{i}]"), p))?;
        }
        let tls = match &listen.tls {
            None => None,
            Some(tls) => Some(ListenTls {
                cert_file: self.existing_file("listen.tls.cert_file", &tls.cert_file)?,
                key_file: self.existing_file("listen.tls.key_file", &tls.key_file)?,
                ca_file: tls
                    .ca_file
                    .as_deref()
                    .map(|f| self.existing_file("listen.tls.ca_file", f))
                    .transpose()?,
                handshake_first: tls.handshake_first,
            }),
        };
        Ok(ListenSettings {
            addr: listen.addr.clone(),
            auth_timeout,
            max_connections,
            max_control_line,
            max_payload,
            shutdown_grace,
            server_name,
            advertise: listen.advertise.clone(),
            tls,
        })
    }

    // === [websocket] ===

    fn websocket(&self, ws: &WebsocketFile, jwt: bool) -> Result<WebsocketSettings, ConfigError> {
        check_host_port(&ws.addr, true).map_err(|p| self.invalid("websocket.addr", p))?;
        let tls = match &ws.tls {
            None if !ws.no_tls => {
                return Err(self.invalid(
                    "websocket.tls",
                    "websocket requires TLS: set [websocket.tls] or no_tls = true",
                ));
            }
            None => None,
            Some(_) if ws.no_tls => {
                return Err(self.invalid(
                    "websocket.no_tls",
                    "no_tls = true and [websocket.tls] together: choose one",
                ));
            }
            Some(tls) => Some(ListenTls {
                cert_file: self.existing_file("websocket.tls.cert_file", &tls.cert_file)?,
                key_file: self.existing_file("websocket.tls.key_file", &tls.key_file)?,
                ca_file: tls
                    .ca_file
                    .as_deref()
                    .map(|f| self.existing_file("websocket.tls.ca_file", f))
                    .transpose()?,
                handshake_first: false,
            }),
        };
        if ws.tls.as_ref().is_some_and(|t| t.handshake_first) {
            return Err(self.invalid(
                "websocket.tls.handshake_first",
                "not used by the websocket listener (TLS always comes first)",
            ));
        }
        for (i, origin) in ws.allowed_origins.iter().enumerate() {
            crate::transport::websocket::Origin::parse(origin)
                .map_err(|p| self.invalid(format!("websocket.allowed_origins[{i}]"), p))?;
        }
        let handshake_timeout = self.duration(
            "websocket.handshake_timeout",
            ws.handshake_timeout.as_deref(),
            DEFAULT_WS_HANDSHAKE_TIMEOUT,
        )?;
        if handshake_timeout.is_zero() {
            return Err(self.invalid("websocket.handshake_timeout", "must be more than 0s"));
        }
        let trusted_proxies = ws
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, cidr)| {
                parse_net(cidr).ok_or_else(|| {
                    self.invalid(
                        format!("websocket.trusted_proxies[{i}]"),
                        format!("{cidr:?} is not a CIDR like \"10.0.0.0/8\" or an IP address"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(name) = &ws.jwt_cookie {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
            {
                return Err(self.invalid(
                    "websocket.jwt_cookie",
                    format!("{name:?} is not a cookie name"),
                ));
            }
            if !jwt {
                return Err(self.invalid(
                    "websocket.jwt_cookie",
                    "JWT authentication via a cookie needs [jwt] (trusted operators)",
                ));
            }
        }
        Ok(WebsocketSettings {
            jwt_cookie: ws.jwt_cookie.clone(),
            addr: ws.addr.clone(),
            tls,
            allowed_origins: ws.allowed_origins.clone(),
            same_origin: ws.same_origin,
            compression: ws.compression,
            handshake_timeout,
            trusted_proxies,
        })
    }

    // === [upstream] ===

    fn upstream(&self, upstream: &UpstreamFile) -> Result<UpstreamSettings, ConfigError> {
        if upstream.servers.is_empty() {
            return Err(self.invalid("upstream.servers", "at least one server is needed"));
        }
        let servers = upstream
            .servers
            .iter()
            .enumerate()
            .map(|(i, server)| {
                parse_server(server).map_err(|p| self.invalid(format!("upstream.servers[{i}]"), p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let connect_timeout = self.duration(
            "upstream.connect_timeout",
            upstream.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        )?;
        if connect_timeout.is_zero() {
            return Err(self.invalid("upstream.connect_timeout", "must be more than 0s"));
        }
        let credential = self.credential("upstream", &upstream.credential())?;

        let mut accounts = Vec::with_capacity(upstream.accounts.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, entry) in upstream.accounts.iter().enumerate() {
            let key = format!("upstream.accounts[{i}]");
            if entry.account.trim().is_empty() {
                return Err(self.invalid(format!("{key}.account"), "must not be empty"));
            }
            if let Some(first) = seen.insert(&entry.account, i) {
                return Err(self.invalid(
                    format!("{key}.account"),
                    format!(
                        "duplicate account {:?} (already in upstream.accounts[{first}])",
                        entry.account
                    ),
                ));
            }
            accounts.push(AccountCredential {
                account: entry.account.clone(),
                credential: self.credential(&key, &entry.credential())?,
            });
        }

        let tls = match &upstream.tls {
            None => None,
            Some(tls) => {
                if tls.cert_file.is_some() != tls.key_file.is_some() {
                    return Err(self.invalid(
                        "upstream.tls",
                        "cert_file and key_file go together: set both or neither",
                    ));
                }
                if tls.server_name.as_deref().is_some_and(str::is_empty) {
                    return Err(self.invalid("upstream.tls.server_name", "must not be empty"));
                }
                let file = |key: &str, value: &Option<String>| {
                    value
                        .as_deref()
                        .map(|f| self.existing_file(key, f))
                        .transpose()
                };
                Some(UpstreamTls {
                    ca_file: file("upstream.tls.ca_file", &tls.ca_file)?,
                    cert_file: file("upstream.tls.cert_file", &tls.cert_file)?,
                    key_file: file("upstream.tls.key_file", &tls.key_file)?,
                    server_name: tls.server_name.clone(),
                })
            }
        };

        Ok(UpstreamSettings {
            servers,
            connect_timeout,
            credential,
            accounts,
            tls,
        })
    }

    /// Exactly one of user + password / token / nkey_seed_file / creds_file,
    /// with its files read and checked. `table` is `upstream` or
    /// `upstream.accounts[i]`.
    fn credential(&self, table: &str, c: &CredentialFile<'_>) -> Result<Credential, ConfigError> {
        let given: Vec<&str> = [
            ("user/password", c.user.is_some() || c.password.is_some()),
            ("token", c.token.is_some()),
            ("nkey_seed_file", c.nkey_seed_file.is_some()),
            ("creds_file", c.creds_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        const ONE_OF: &str =
            "set exactly one of user + password, token, nkey_seed_file, creds_file";
        match given.len() {
            0 => return Err(self.invalid(table, format!("no upstream credential: {ONE_OF}"))),
            1 => {}
            _ => {
                return Err(self.invalid(
                    table,
                    format!("more than one credential ({}): {ONE_OF}", given.join(", ")),
                ));
            }
        }

        if let Some(path) = c.nkey_seed_file {
            let key = format!("{table}.nkey_seed_file");
            let (path, text) = self.read_file(&key, path)?;
            let seed = parse_seed_file(&text).map_err(|e| self.referenced(&key, &path, e))?;
            return Ok(Credential::Nkey {
                seed: Secret::new(seed),
            });
        }
        if let Some(path) = c.creds_file {
            let key = format!("{table}.creds_file");
            let (path, text) = self.read_file(&key, path)?;
            let (jwt, seed) = parse_creds(&text).map_err(|e| self.referenced(&key, &path, e))?;
            return Ok(Credential::Creds {
                jwt,
                seed: Secret::new(seed),
            });
        }
        if let Some(token) = c.token {
            if token.is_empty() {
                return Err(self.invalid(format!("{table}.token"), "must not be empty"));
            }
            return Ok(Credential::Token(Secret::new(token)));
        }
        match (c.user, c.password) {
            (Some(""), _) => Err(self.invalid(format!("{table}.user"), "must not be empty")),
            (Some(_), Some("")) => {
                Err(self.invalid(format!("{table}.password"), "must not be empty"))
            }
            (Some(user), Some(password)) => Ok(Credential::UserPassword {
                user: user.to_owned(),
                password: Secret::new(password),
            }),
            (Some(_), None) => Err(self.invalid(
                format!("{table}.password"),
                "missing: user needs a password",
            )),
            (None, _) => {
                Err(self.invalid(format!("{table}.user"), "missing: password needs a user"))
            }
        }
    }

    // === [jwt] ===

    fn jwt(&self, jwt: &JwtFile) -> Result<JwtSettings, ConfigError> {
        if jwt.operators.is_empty() {
            return Err(self.invalid(
                "jwt.operators",
                "at least one trusted operator JWT file is needed when [jwt] is present",
            ));
        }
        let kv = jwt.kv.as_ref().map(|kv| self.kv(kv)).transpose()?;
        Ok(JwtSettings {
            operators: jwt.operators.iter().map(|p| self.resolve(p)).collect(),
            accounts_dir: jwt.accounts_dir.as_deref().map(|p| self.resolve(p)),
            accounts: jwt.accounts.iter().map(|p| self.resolve(p)).collect(),
            allow_delete: jwt.allow_delete,
            kv,
        })
    }

    fn kv(&self, kv: &KvFile) -> Result<KvSettings, ConfigError> {
        let valid = !kv.bucket.is_empty()
            && kv
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(self.invalid(
                "jwt.kv.bucket",
                "a bucket name is one or more of A-Z, a-z, 0-9, _ and -",
            ));
        }
        let replicas = kv.replicas.unwrap_or(1);
        if !(1..=5).contains(&replicas) {
            return Err(self.invalid("jwt.kv.replicas", "must be 1 to 5"));
        }
        Ok(KvSettings {
            bucket: kv.bucket.clone(),
            replicas,
            create: kv.create.unwrap_or(true),
        })
    }

    // === [[users]] ===

    fn user(&self, i: usize, user: &UserFile) -> Result<StaticUser, ConfigError> {
        let key = format!("users[{i}]");
        check_user_public_key(&user.nkey).map_err(|p| self.invalid(format!("{key}.nkey"), p))?;
        if user.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(self.invalid(format!("{key}.name"), "must not be empty"));
        }
        if user.account.as_deref().is_some_and(|a| a.trim().is_empty()) {
            return Err(self.invalid(format!("{key}.account"), "must not be empty"));
        }
        Ok(StaticUser {
            nkey: user.nkey.clone(),
            name: user.name.clone(),
            account: user.account.clone(),
            permissions: self.permissions(&format!("{key}.permissions"), &user.permissions)?,
        })
    }

    fn check_unique_users(&self, users: &[StaticUser]) -> Result<(), ConfigError> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, user) in users.iter().enumerate() {
            if let Some(first) = seen.insert(&user.nkey, i) {
                return Err(self.invalid(
                    format!("users[{i}].nkey"),
                    format!("duplicate user: the same public key as users[{first}]"),
                ));
            }
        }
        Ok(())
    }

    fn permissions(
        &self,
        key: &str,
        permissions: &PermissionsFile,
    ) -> Result<PermissionSpec, ConfigError> {
        let responses = match &permissions.allow_responses {
            None | Some(AllowResponsesFile::Enabled(false)) => None,
            Some(AllowResponsesFile::Enabled(true)) => Some(ResponseSpec::DEFAULT),
            Some(AllowResponsesFile::Limits { max, expires }) => {
                let ttl_nanos = match expires {
                    None => 0,
                    Some(text) => {
                        let expires_key = format!("{key}.allow_responses.expires");
                        let ttl = self.duration(&expires_key, Some(text), Duration::ZERO)?;
                        i64::try_from(ttl.as_nanos())
                            .map_err(|_| self.invalid(expires_key, "too long"))?
                    }
                };
                Some(ResponseSpec {
                    max: max.unwrap_or(0),
                    ttl_nanos,
                })
            }
        };
        Ok(PermissionSpec {
            publish: self.subject_rules(&format!("{key}.publish"), &permissions.publish, false)?,
            subscribe: self.subject_rules(
                &format!("{key}.subscribe"),
                &permissions.subscribe,
                true,
            )?,
            responses,
        })
    }

    fn subject_rules(
        &self,
        key: &str,
        rules: &Option<SubjectRulesFile>,
        with_queue: bool,
    ) -> Result<Option<SubjectRules>, ConfigError> {
        let Some(rules) = rules else {
            return Ok(None);
        };
        let check = |list: &str, entries: &[String]| {
            for (i, entry) in entries.iter().enumerate() {
                check_permission_subject(entry, with_queue)
                    .map_err(|p| self.invalid(format!("{key}.{list}[{i}]"), p))?;
            }
            Ok::<(), ConfigError>(())
        };
        if let Some(allow) = &rules.allow {
            check("allow", allow)?;
        }
        check("deny", &rules.deny)?;
        // nats-server treats an empty allow list in its config as no allow
        // list at all (checked against 2.15.1: `publish: {allow: []}` may
        // publish anything), unlike a JWT's. `allow_responses` still forces
        // an empty one when the permissions are compiled.
        Ok(Some(SubjectRules {
            allow: rules.allow.clone().filter(|a| !a.is_empty()),
            deny: rules.deny.clone(),
        }))
    }

    // === [log] ===

    fn log(&self, log: &LogFile) -> Result<LogSettings, ConfigError> {
        let level = log.level.to_ascii_lowercase();
        if !LOG_LEVELS.contains(&level.as_str()) {
            return Err(self.invalid(
                "log.level",
                format!("{:?} is not one of {}", log.level, LOG_LEVELS.join(", ")),
            ));
        }
        let format = match log.format {
            LogFormatFile::Text => LogFormat::Text,
            LogFormatFile::Json => LogFormat::Json,
        };
        Ok(LogSettings { level, format })
    }

    // === helpers ===

    fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(text) = value else {
            return Ok(default);
        };
        humantime::parse_duration(text).map_err(|e| {
            self.invalid(
                key,
                format!("{text:?} is not a duration like \"2s\", \"500ms\" or \"1m\" ({e})"),
            )
        })
    }

    /// `path` against the config file's directory, with `.` and `..`
    /// removed lexically (so errors show `config/keys/x.nk`, not
    /// `config/valid/../keys/x.nk`).
    fn resolve(&self, path: &str) -> PathBuf {
        let mut resolved = PathBuf::new();
        for part in self.base_dir.join(path).components() {
            match part {
                Component::CurDir => {}
                Component::ParentDir
                    if matches!(
                        resolved.components().next_back(),
                        Some(Component::Normal(_))
                    ) =>
                {
                    resolved.pop();
                }
                other => resolved.push(other),
            }
        }
        resolved
    }

    /// Resolves `path` and checks that it is a readable file.
    fn existing_file(&self, key: &str, path: &str) -> Result<PathBuf, ConfigError> {
        let resolved = self.resolve(path);
        match std::fs::File::open(&resolved).and_then(|f| f.metadata()) {
            Ok(meta) if meta.is_file() => Ok(resolved),
            Ok(_) => Err(self.referenced(key, &resolved, "not a file")),
            Err(e) => Err(self.referenced(key, &resolved, format!("cannot read: {e}"))),
        }
    }

    fn read_file(&self, key: &str, path: &str) -> Result<(PathBuf, String), ConfigError> {
        let resolved = self.resolve(path);
        match std::fs::read_to_string(&resolved) {
            Ok(text) => Ok((resolved, text)),
            Err(e) => Err(self.referenced(key, &resolved, format!("cannot read: {e}"))),
        }
    }

    fn invalid(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn referenced(&self, key: &str, path: &Path, problem: impl ToString) -> ConfigError {
        ConfigError::Referenced {
            file: self.file.to_path_buf(),
            key: key.to_owned(),
            path: path.to_path_buf(),
            problem: problem.to_string(),
        }
    }
}

/// A toml error as one line: `file:line:column: key: message`.
/// A CIDR, or a bare address as a one-address network.
fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

fn syntax_error(text: &str, file: &Path, error: &toml::de::Error) -> ConfigError {
    let start = error.span().map_or(0, |span| span.start).min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let message = hide_value(&error.message().trim().replace('\n', "; "));
    // Name the key when the line is `key = value` (the value is not shown:
    // it may be a secret).
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let message = match line_text.split_once('=') {
        Some((key, _)) if is_toml_key(key.trim()) && !message.contains(key.trim()) => {
            format!("{}: {message}", key.trim())
        }
        _ => message,
    };
    ConfigError::Syntax {
        file: file.to_path_buf(),
        line,
        column,
        message,
    }
}

/// serde's "invalid type: integer `123`, expected a string" shows the value,
/// which may be a secret (a numeric password); keep only its kind.
fn hide_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((unexpected, expected)) = rest.split_once(", expected") else {
            continue;
        };
        let kind = unexpected.split(['`', '"']).next().unwrap_or("").trim();
        return format!("{prefix}{kind}, expected{expected}");
    }
    message.to_owned()
}

fn is_toml_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'))
}

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
