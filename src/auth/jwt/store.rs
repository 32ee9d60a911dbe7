//! The trust store: operators, accounts, and the login check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::claims::{self, Account, AccountClaims, Operator, SigningKey, User};
use super::user_checks::{
    account_key_of, connection_type_allowed, effective_limits, has_scope, is_revoked, min_limit,
    permissions_of, permissions_spec, source_allowed, validate_limits, validate_user,
};
use super::{
    AccountChange, AccountInfo, AccountLimits, AccountSigningKey, DeleteRefusal, Disconnect,
    JwtAuthError, JwtLoadError, JwtLogin, JwtRefusal, JwtUser, OperatorInfo, ResolvedUser,
    UpdateRefusal, times,
};
use crate::auth::nkey;
use crate::permissions::explain::Origin;

/// Trusted operators and loaded accounts. Cloning is cheap (accounts are
/// shared); updates replace single accounts.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    operators: Vec<OperatorInfo>,
    /// Keys that may sign accounts: operator identity keys (unless strict)
    /// and operator signing keys, with the strict flag of their operator.
    trusted: BTreeMap<String, bool>,
    system_account: Option<String>,
    accounts: BTreeMap<String, Arc<AccountInfo>>,
}

impl TrustStore {
    /// Load operator JWT files (trusted), an `accounts_dir` of
    /// `<ACCOUNT_PUBKEY>.jwt` files (other names, e.g. `.jwt.deleted`, are
    /// ignored) and individual account JWT files. Every account must verify
    /// against the operators (3.7, 3.8), be valid at `now`, and when loaded
    /// from the directory its `sub` must match the file name.
    pub fn load(
        operator_files: &[PathBuf],
        accounts_dir: Option<&Path>,
        account_files: &[PathBuf],
        now: SystemTime,
    ) -> Result<TrustStore, JwtLoadError> {
        let mut store = TrustStore::default();
        for file in operator_files {
            let token = read_token(file)?;
            store
                .add_operator(&token, file)
                .map_err(|problem| invalid(Some(file), problem))?;
        }
        if let Some(dir) = accounts_dir {
            let io = |source| JwtLoadError::Io {
                file: dir.to_owned(),
                source,
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(io)?;
            files.sort();
            for file in files {
                let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Some(stem) = name.strip_suffix(".jwt") else {
                    continue;
                };
                if !file.is_file() {
                    continue;
                }
                let token = read_token(&file)?;
                let info = store
                    .verify_account(&token, now, Some(stem))
                    .map_err(|p| invalid(Some(&file), p))?;
                store.accounts.insert(info.key.clone(), Arc::new(info));
            }
        }
        for file in account_files {
            let token = read_token(file)?;
            let info = store
                .verify_account(&token, now, None)
                .map_err(|p| invalid(Some(file), p))?;
            store.accounts.insert(info.key.clone(), Arc::new(info));
        }
        Ok(store)
    }

    pub fn operators(&self) -> impl Iterator<Item = &OperatorInfo> {
        self.operators.iter()
    }

    pub fn accounts(&self) -> impl Iterator<Item = &AccountInfo> {
        self.accounts.values().map(|a| &**a)
    }

    pub fn account(&self, key: &str) -> Option<&AccountInfo> {
        self.accounts.get(key).map(|a| &**a)
    }

    /// Replace or insert one account JWT (directory watcher, SIGHUP). The
    /// token is verified fully; on error the old account stays.
    pub fn upsert_account_jwt(
        &mut self,
        token: &str,
        now: SystemTime,
    ) -> Result<AccountChange, JwtLoadError> {
        let info = self
            .verify_account(token.trim(), now, None)
            .map_err(|p| invalid(None, p))?;
        Ok(self.install(info))
    }

    /// Remove an account (its file was deleted). Returns whether it existed.
    pub fn remove_account(&mut self, key: &str) -> bool {
        self.accounts.remove(key).is_some()
    }

    /// Authenticate a CONNECT in operator mode, following spec 2.3 steps
    /// 1-16 in that order. natsgate is not a trusted proxy, so
    /// `proxy_required` users fail (step 2).
    pub fn authenticate(
        &self,
        login: &JwtLogin<'_>,
        now: SystemTime,
    ) -> Result<JwtUser, JwtAuthError> {
        self.login(login.jwt, Some(login), now)
            .map(|resolved| resolved.user)
    }

    /// The user a JWT would log in as, for `natsgate explain`: the same
    /// steps as [`TrustStore::authenticate`] (chain, scope and template,
    /// `default_permissions`, account expiry, bearer, revocation) except
    /// those that need a connection: the nonce signature (13), the source
    /// address (15) and the connect times (16), which are described in the
    /// notes instead.
    pub fn resolve_user(&self, token: &str, now: SystemTime) -> Result<ResolvedUser, JwtAuthError> {
        self.login(token, None, now)
    }

    /// Spec 2.3 steps 1-16; without `login`, 13, 15 and 16 become notes and
    /// the origin of the permissions is worked out.
    fn login(
        &self,
        token: &str,
        login: Option<&JwtLogin<'_>>,
        now: SystemTime,
    ) -> Result<ResolvedUser, JwtAuthError> {
        use JwtRefusal as F;
        let fail = |kind, detail: &str| Err(JwtAuthError::new(kind, detail));
        let mut notes = Vec::new();
        // 1. A user claim.
        let Ok(user) = claims::decode::<User>(token) else {
            return fail(F::UserJwtRequired, "");
        };
        // 2. proxy_required.
        if user.nats.limits.proxy_required {
            return fail(F::ProxyRequired, "");
        }
        // 3. Validation including the time checks.
        if let Err(problem) = validate_user(&user, unix(now)) {
            return fail(F::UserJwtInvalid, &problem);
        }
        // 4.-6. The account.
        let account_key = account_key_of(&user);
        let Some(account) = self.accounts.get(account_key) else {
            return fail(
                F::AccountNotFound,
                &format!("account {account_key} not found"),
            );
        };
        // 7. Still trusted.
        if !self.trusted.contains_key(&account.issuer) {
            return fail(F::AccountNotTrusted, "");
        }
        // 8.-9. Issuer and scope.
        let limits = effective_limits(&user, account)?;
        // 10. Account expiry.
        if account_expired(account, now) {
            return fail(F::AccountExpired, "");
        }
        // 11. Bearer tokens.
        if limits.bearer_token && account.disallow_bearer {
            return fail(F::BearerNotAllowed, "");
        }
        // 12. Connection types.
        let connection_type = login.map_or("STANDARD", |l| l.connection_type);
        if !connection_type_allowed(&limits.allowed_connection_types, connection_type) {
            return fail(F::ConnectionTypeNotAllowed, "");
        }
        // 13. Nonce signature, unless bearer.
        if let Some(login) = login {
            if !limits.bearer_token {
                nkey::verify_nonce_signature(&user.subject, login.nonce, login.sig)
                    .map_err(|e| JwtAuthError::new(F::Signature(e), ""))?;
            }
        } else if !limits.bearer_token {
            notes.push("the nonce signature is checked at login (not by explain)".to_owned());
        }
        // 14. Revocation.
        if is_revoked(&account.revocations, &user.subject, user.issued_at) {
            return fail(F::Revoked, "");
        }
        // 15. Source address.
        if let Some(login) = login {
            if !source_allowed(&limits.source, login.client_ip) {
                return fail(F::SourceNotAllowed, &login.client_ip.to_string());
            }
        } else if !limits.source.is_empty() {
            notes.push(format!(
                "logins are allowed only from {} (src; not checked by explain)",
                limits.source.join(", ")
            ));
        }
        // 16. Connect times.
        let window_end = match times::window_end(&limits.times, &limits.times_location, now) {
            Ok(end) => end,
            Err(_) if login.is_none() => {
                notes.push("outside the user's connect times now (times)".to_owned());
                None
            }
            Err(_) => return fail(F::OutsideConnectTimes, ""),
        };
        let user_exp = (user.expires > 0).then(|| from_unix(user.expires));
        let expires_at = match (user_exp, window_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let own_permissions = claims::Permissions {
            publish: limits.publish.clone(),
            subscribe: limits.subscribe.clone(),
            response: limits.response,
        };
        let origin = match login {
            Some(_) => Origin::UserJwt,
            None if own_permissions.is_empty() => Origin::AccountDefault,
            None => match account
                .claims
                .nats
                .signing_keys
                .iter()
                .find(|k| k.key() == user.issuer)
            {
                Some(SigningKey::Scoped(scope)) => Origin::ScopedTemplate {
                    signing_key: scope.key.clone(),
                    role: scope.role.clone(),
                    template: permissions_spec(&claims::Permissions {
                        publish: scope.template.publish.clone(),
                        subscribe: scope.template.subscribe.clone(),
                        response: scope.template.response,
                    }),
                },
                _ => Origin::UserJwt,
            },
        };
        let user = JwtUser {
            permissions: Arc::new(permissions_of(&limits, &account.default_permissions)),
            subs: min_limit(limits.subs, account.limits.subs),
            payload: min_limit(limits.payload, account.limits.payload),
            bearer: limits.bearer_token,
            expires_at,
            account_expires_at: account.expires_at,
            is_system_account: account.is_system_account,
            user_name: user.name,
            account_key: account.key.clone(),
            account_name: account.name.clone(),
            issuer: user.issuer,
            issued_at: user.issued_at,
            tags: user.nats.generic.tags,
            user_key: user.subject,
            jwt: Arc::from(token),
        };
        Ok(ResolvedUser {
            user,
            origin,
            notes,
        })
    }

    /// Re-check a connected user against the current account (after an
    /// account update or when a timer fires). Returns the reason to close.
    pub fn recheck(&self, user: &JwtUser, now: SystemTime) -> Result<(), Disconnect> {
        let Some(account) = self.accounts.get(&user.account_key) else {
            return Err(Disconnect::AuthorizationViolation);
        };
        if account_expired(account, now) {
            return Err(Disconnect::AccountExpired);
        }
        let Ok(claims) = claims::decode::<User>(&user.jwt) else {
            return Err(Disconnect::AuthorizationViolation);
        };
        // Signing key removed or scope changed: silent close.
        match effective_limits(&claims, account) {
            Ok(limits) => {
                if permissions_of(&limits, &account.default_permissions) != *user.permissions
                    && has_scope(account, &claims.issuer)
                {
                    return Err(Disconnect::AuthenticationFailure);
                }
            }
            Err(_) => return Err(Disconnect::AuthenticationFailure),
        }
        // The update-time check (`IsClaimRevoked`): a token without `iat` is
        // revoked as soon as the account has any revocation entry.
        if (user.issued_at == 0 && !account.revocations.is_empty())
            || is_revoked(&account.revocations, &user.user_key, user.issued_at)
        {
            return Err(Disconnect::Revoked);
        }
        if user.bearer && account.disallow_bearer {
            return Err(Disconnect::AuthorizationViolation);
        }
        if user.expires_at.is_some_and(|t| now >= t) {
            return Err(Disconnect::UserExpired);
        }
        Ok(())
    }

    // === updates over NATS (the account resolver, spec 6.4) ===

    /// The system account's public key (the first operator's
    /// `system_account`).
    pub fn system_account(&self) -> Option<&str> {
        self.system_account.as_deref()
    }

    /// Checks an account JWT pushed to the resolver, in nats-server's order
    /// (`DirAccResolver.Start`): `subject` is the account id of
    /// `$SYS.REQ.ACCOUNT.<id>.CLAIMS.UPDATE`, `None` for
    /// `$SYS.REQ.CLAIMS.UPDATE`. Beyond nats-server, the JWT must be signed
    /// by a trusted operator and must not be older (`iat`) than the one held,
    /// so that a push cannot roll back a revocation. Returns the verified
    /// account, not yet installed.
    pub fn check_update(
        &self,
        token: &str,
        subject: Option<&str>,
        now: SystemTime,
    ) -> Result<AccountInfo, UpdateRefusal> {
        const FAILED: &str = "jwt update resulted in error";
        const INVALID: &str = "jwt validation failed";
        let refuse = |account: &str, message, error: String| UpdateRefusal {
            account: account.to_owned(),
            message,
            error,
        };
        let claims =
            claims::decode::<Account>(token).map_err(|e| refuse("n/a", FAILED, e.to_string()))?;
        let strict = self
            .operators
            .iter()
            .any(|o| o.key == claims.issuer && o.strict_signing_keys);
        let strict_error = "operator requires issuer to be a signing key".to_owned();
        if subject.is_none() && strict {
            return Err(refuse(&claims.subject, FAILED, strict_error));
        }
        if !nkey::is_account_public_key(&claims.subject) {
            let error = "validation errors: [subject is not an account public key]".to_owned();
            return Err(refuse(&claims.subject, INVALID, error));
        }
        let key = subject.unwrap_or(&claims.subject);
        if key != claims.subject {
            let error = "subject does not match jwt content".to_owned();
            return Err(refuse(key, FAILED, error));
        }
        if strict {
            return Err(refuse(key, FAILED, strict_error));
        }
        let info = self
            .verify_account(token, now, None)
            .map_err(|e| refuse(key, INVALID, format!("validation errors: [{e}]")))?;
        if let Some(held) = self.accounts.get(key)
            && held.claims.issued_at > claims.issued_at
        {
            let error = format!(
                "jwt is older than the one stored (iat {} < {})",
                claims.issued_at, held.claims.issued_at
            );
            return Err(refuse(key, FAILED, error));
        }
        Ok(info)
    }

    /// Installs an account checked by [`TrustStore::check_update`].
    pub fn install(&mut self, info: AccountInfo) -> AccountChange {
        let change = match self.accounts.get(&info.key) {
            None => AccountChange::Added,
            Some(old) if old.jwt == info.jwt => return AccountChange::Unchanged,
            Some(old) => AccountChange::Updated {
                revoked_any: info
                    .revocations
                    .iter()
                    .any(|(k, t)| old.revocations.get(k).is_none_or(|o| t > o)),
            },
        };
        self.accounts.insert(info.key.clone(), Arc::new(info));
        change
    }

    /// Checks a `$SYS.REQ.CLAIMS.DELETE` request (`handleDeleteRequest`): a
    /// generic JWT signed by an operator key for itself, listing the
    /// account ids to delete in `accounts`. Returns them, or nats-server's
    /// error text. `allowed` is `allow_delete`.
    pub fn check_delete(&self, token: &str, allowed: bool) -> Result<Vec<String>, DeleteRefusal> {
        let refuse = |by: &str, error: &str| DeleteRefusal {
            by: by.to_owned(),
            error: error.to_owned(),
        };
        let claims = claims::decode::<claims::Generic>(token).map_err(|e| DeleteRefusal {
            by: String::new(),
            error: e.to_string(),
        })?;
        let by = claims.subject.as_str();
        let operator_key = self.operators.iter().any(|o| {
            (o.key == claims.issuer && !o.strict_signing_keys)
                || o.signing_keys.contains(&claims.issuer)
        });
        if !allowed {
            return Err(refuse(by, "delete must be enabled in server config"));
        }
        if claims.subject != claims.issuer {
            return Err(refuse(by, "not self signed"));
        }
        if !operator_key {
            return Err(refuse(by, "not trusted"));
        }
        let Some(serde_json::Value::Array(list)) = &claims.nats.accounts else {
            return Err(refuse(by, "malformed request"));
        };
        let mut accounts = Vec::with_capacity(list.len());
        for entry in list {
            match entry.as_str() {
                Some(acc) if nkey::is_account_public_key(acc) => {
                    if self.system_account.as_deref() == Some(acc) {
                        return Err(refuse(by, "not allowed to delete system account"));
                    }
                    accounts.push(acc.to_owned());
                }
                _ => return Err(refuse(by, "malformed request")),
            }
        }
        Ok(accounts)
    }

    /// nats-server's store hash (`DirJWTStore.Hash`): the XOR of the
    /// SHA-256 of every account JWT held. Compared by `CLAIMS.PACK`.
    pub fn hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = [0u8; 32];
        for account in self.accounts.values() {
            let one: [u8; 32] = Sha256::digest(account.jwt.as_bytes()).into();
            for (h, o) in hash.iter_mut().zip(one) {
                *h ^= o;
            }
        }
        hash
    }

    // === helpers ===

    fn add_operator(&mut self, token: &str, file: &Path) -> Result<(), String> {
        let op =
            claims::decode::<Operator>(token).map_err(|e| format!("invalid operator JWT: {e}"))?;
        if op.subject != op.issuer && !nkey::is_operator_public_key(&op.subject) {
            return Err("operator JWT subject is not an operator key".into());
        }
        for key in &op.nats.signing_keys {
            if !nkey::is_operator_public_key(key) {
                return Err(format!(
                    "operator signing key {key:?} is not an operator key"
                ));
            }
        }
        let strict = op.nats.strict_signing_key_usage;
        if !strict {
            self.trusted.insert(op.subject.clone(), false);
        }
        for key in &op.nats.signing_keys {
            self.trusted.insert(key.clone(), strict);
        }
        let system_account =
            (!op.nats.system_account.is_empty()).then(|| op.nats.system_account.clone());
        if self.system_account.is_none() {
            self.system_account.clone_from(&system_account);
        }
        self.operators.push(OperatorInfo {
            name: op.name,
            key: op.subject,
            signing_keys: op.nats.signing_keys,
            strict_signing_keys: strict,
            system_account,
            expires_at: (op.expires > 0).then(|| from_unix(op.expires)),
            file: file.to_owned(),
        });
        Ok(())
    }

    fn verify_account(
        &self,
        token: &str,
        now: SystemTime,
        expected_key: Option<&str>,
    ) -> Result<AccountInfo, String> {
        let acc: AccountClaims =
            claims::decode::<Account>(token).map_err(|e| format!("invalid account JWT: {e}"))?;
        let Some(&strict) = self.trusted.get(&acc.issuer) else {
            return Err(format!(
                "account JWT not signed by a trusted operator (iss {})",
                acc.issuer
            ));
        };
        if !nkey::is_account_public_key(&acc.subject) {
            return Err("account JWT subject is not an account key".into());
        }
        if let Some(expected) = expected_key
            && expected != acc.subject
        {
            return Err(format!(
                "account JWT subject {} does not match the file name",
                acc.subject
            ));
        }
        let now = unix(now);
        if acc.expires > 0 && now > acc.expires {
            return Err("account JWT has expired".into());
        }
        if acc.not_before > 0 && acc.not_before > now {
            return Err("account JWT is not yet valid".into());
        }
        let mut signing_keys = Vec::with_capacity(acc.nats.signing_keys.len());
        for sk in &acc.nats.signing_keys {
            if !nkey::is_account_public_key(sk.key()) {
                return Err(format!(
                    "account signing key {:?} is not an account key",
                    sk.key()
                ));
            }
            let (scoped, role) = match sk {
                SigningKey::Plain(_) => (false, String::new()),
                SigningKey::Scoped(s) => {
                    validate_limits(&s.template).map_err(|p| format!("scope of {}: {p}", s.key))?;
                    (true, s.role.clone())
                }
            };
            signing_keys.push(AccountSigningKey {
                key: sk.key().to_owned(),
                scoped,
                role,
            });
        }
        let limits = &acc.nats.limits;
        Ok(AccountInfo {
            name: acc.name.clone(),
            key: acc.subject.clone(),
            issuer: acc.issuer.clone(),
            signing_keys,
            strict,
            revocations: acc.nats.revocations.clone(),
            expires_at: (acc.expires > 0).then(|| from_unix(acc.expires)),
            limits: AccountLimits {
                conn: limits.conn,
                subs: limits.subs,
                payload: limits.payload,
                data: limits.data,
            },
            disallow_bearer: limits.disallow_bearer,
            default_permissions: permissions_spec(&acc.nats.default_permissions),
            tags: acc.nats.generic.tags.clone(),
            is_system_account: self.system_account.as_deref() == Some(acc.subject.as_str()),
            jwt: token.to_owned(),
            claims: acc,
        })
    }
}

fn read_token(file: &Path) -> Result<String, JwtLoadError> {
    let text = std::fs::read_to_string(file).map_err(|source| JwtLoadError::Io {
        file: file.to_owned(),
        source,
    })?;
    Ok(extract_token(&text).to_owned())
}

/// The JWT in a file: the whole trimmed text, or for a decorated file the
/// first line after a `-----BEGIN ...` line.
fn extract_token(text: &str) -> &str {
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("---") && line.contains("BEGIN") {
            return lines.next().unwrap_or("");
        }
    }
    text.trim()
}

fn invalid(file: Option<&Path>, problem: String) -> JwtLoadError {
    JwtLoadError::Invalid {
        file: file.map(Path::to_owned),
        problem,
    }
}

/// nats-server marks an account expired by a timer that fires at `exp`
/// itself, so from that instant on (not a whole second later, as for users)
/// logins to it fail (checked on 2.15.1: refused at `exp` + 300 ms).
fn account_expired(account: &AccountInfo, now: SystemTime) -> bool {
    let exp = account.claims.expires;
    exp > 0 && now >= UNIX_EPOCH + std::time::Duration::from_secs(exp.unsigned_abs())
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

pub(crate) fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}
