//! The user `natsgate explain` (and `GET /explain`) asks about: a static
//! `[[users]]` entry by name or public key, or a JWT user from its token,
//! resolved exactly as a login resolves it ([`TrustStore::resolve_user`]:
//! the chain, scoped-key templates, the account's `default_permissions`).
//!
//! Owns: finding the user and the origin of its permissions. Does not own:
//! the decision (`permissions::explain`), reading files or printing.
//!
//! [`TrustStore::resolve_user`]: super::jwt::TrustStore::resolve_user

use std::sync::Arc;
use std::time::SystemTime;

use super::Authenticator;
use crate::permissions::explain::{Explanation, Origin, Request, explain};
use crate::permissions::{PermissionSpec, ResponseLimits, SubjectRules};
use crate::protocol::subject;

/// A user resolved for explain.
#[derive(Clone, Debug)]
pub struct ExplainedUser {
    /// The public key (`U...`).
    pub key: String,
    /// The configured or JWT name (may be empty).
    pub name: String,
    /// The account's name (JWT users: the account JWT's `name`; static
    /// users: the configured `account`, may be empty).
    pub account: String,
    /// The account's public key for JWT users (empty for static users).
    pub account_key: String,
    pub system_account: bool,
    /// The effective permissions, as the relay compiles them.
    pub spec: Arc<PermissionSpec>,
    pub origin: Origin,
    /// Login facts explain did not check (signature, `src`, `times`).
    pub notes: Vec<String>,
}

/// Why a user could not be resolved (bad input: exit status 2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainUserError {
    #[error("no static user named {0:?} (and no [[users]] entry with that key)")]
    Unknown(String),
    #[error("{0:?} names more than one [[users]] entry; use the public key")]
    Ambiguous(String),
    #[error(
        "{0} is not a static [[users]] entry; a JWT user's permissions come from its JWT: \
         pass the user's .creds file instead"
    )]
    NeedsJwt(String),
    #[error("JWT users need [jwt] in the config")]
    NoTrust,
    #[error("the JWT does not log in: {0}")]
    Jwt(String),
}

impl Authenticator {
    /// A static user by public key, else by `name`.
    pub fn explain_static(&self, who: &str) -> Result<ExplainedUser, ExplainUserError> {
        let found = match self.static_users.get_key_value(who) {
            Some(found) => found,
            None => {
                let mut named = self.static_users.iter().filter(|(_, e)| e.name == who);
                match (named.next(), named.next()) {
                    (Some(found), None) => found,
                    (Some(_), Some(_)) => return Err(ExplainUserError::Ambiguous(who.into())),
                    (None, _) if crate::auth::nkey::is_user_public_key(who) => {
                        return Err(ExplainUserError::NeedsJwt(who.into()));
                    }
                    (None, _) => return Err(ExplainUserError::Unknown(who.into())),
                }
            }
        };
        let (key, entry) = found;
        Ok(ExplainedUser {
            key: key.clone(),
            name: entry.name.clone(),
            account: entry.account.clone(),
            account_key: String::new(),
            system_account: false,
            spec: entry.spec.clone(),
            origin: Origin::Config,
            notes: Vec::new(),
        })
    }

    /// A JWT user from its token, verified against the trust store as at
    /// login (without the checks that need a connection).
    pub fn explain_jwt(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<ExplainedUser, ExplainUserError> {
        let trust = self.trust.as_ref().ok_or(ExplainUserError::NoTrust)?;
        let resolved = trust
            .resolve_user(token.trim(), now)
            .map_err(|e| ExplainUserError::Jwt(e.to_string()))?;
        let user = resolved.user;
        let mut notes = resolved.notes;
        if user.subs == 0 {
            notes.push(
                "the subs limit is 0: the user may not subscribe at all (nats-server says \
                 'maximum subscriptions exceeded' at login and closes the connection)"
                    .to_owned(),
            );
        }
        Ok(ExplainedUser {
            key: user.user_key,
            name: user.user_name,
            account: user.account_name,
            account_key: user.account_key,
            system_account: user.is_system_account,
            spec: user.permissions,
            origin: resolved.origin,
            notes,
        })
    }
}

/// Who to explain, as given on the command line or in the query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who<'a> {
    /// A static user's name or public key.
    Static(&'a str),
    /// A user JWT (from a `.creds` file, or the `jwt` query parameter).
    Jwt(&'a str),
}

/// What to explain: `pub SUBJECT [--reply R]` or `sub SUBJECT [QUEUE]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    pub publish: bool,
    pub subject: &'a str,
    pub queue: Option<&'a str>,
    pub reply: Option<&'a str>,
}

/// A finished explanation: the user, the query and the decision.
#[derive(Clone, Debug)]
pub struct Report {
    pub user: ExplainedUser,
    pub publish: bool,
    pub subject: String,
    pub queue: Option<String>,
    pub reply: Option<String>,
    pub explanation: Explanation,
}

/// Bad input for explain (exit status 2, HTTP 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    #[error("{0}")]
    User(#[from] ExplainUserError),
    #[error("{0}")]
    Query(String),
}

impl Authenticator {
    /// Resolves `who` and explains `query` for it. The subject must be a
    /// valid subject (wildcards are allowed and, as in nats-server, read as
    /// literal tokens for a publish); a queue only goes with `sub`, a reply
    /// only with `pub`.
    pub fn explain(
        &self,
        who: Who<'_>,
        query: Query<'_>,
        now: SystemTime,
    ) -> Result<Report, ExplainError> {
        check_query(&query).map_err(ExplainError::Query)?;
        let user = match who {
            Who::Static(name) => self.explain_static(name)?,
            Who::Jwt(token) => self.explain_jwt(token, now)?,
        };
        let request = if query.publish {
            Request::Publish {
                subject: query.subject.as_bytes(),
                reply: query.reply.map(str::as_bytes),
            }
        } else {
            Request::Subscribe {
                subject: query.subject.as_bytes(),
                queue: query.queue.map(str::as_bytes),
            }
        };
        let mut explanation = explain(&user.spec, user.system_account, request);
        if query.publish && subject::has_wildcard(query.subject.as_bytes()) {
            explanation.notes.push(
                "a wildcard in a published subject is an ordinary token: the permission \
                 entries are matched against it literally (spec 4.2)"
                    .to_owned(),
            );
        }
        Ok(Report {
            user,
            publish: query.publish,
            subject: query.subject.to_owned(),
            queue: query.queue.map(str::to_owned),
            reply: query.reply.map(str::to_owned),
            explanation,
        })
    }
}

impl Report {
    /// The human-readable form `natsgate explain` prints.
    pub fn text(&self) -> String {
        let e = &self.explanation;
        let mut out = String::new();
        let verdict = if e.allowed { "allowed" } else { "denied" };
        let what = if self.publish {
            let reply = self
                .reply
                .as_deref()
                .map(|r| format!(" with reply {r:?}"))
                .unwrap_or_default();
            format!("publish to {:?}{reply}", self.subject)
        } else {
            let queue = self
                .queue
                .as_deref()
                .map(|q| format!(" in queue group {q:?}"))
                .unwrap_or_default();
            format!("subscribe to {:?}{queue}", self.subject)
        };
        out.push_str(&format!("{verdict}: {what}\n"));
        out.push_str(&format!("rule: {}\n", e.rule));
        if let Some(error) = &e.error {
            out.push_str(&format!("client gets: {error}\n"));
        }
        out.push_str(&format!("order: {}\n", self.order()));
        let u = &self.user;
        let name = if u.name.is_empty() {
            String::new()
        } else {
            format!("{} ", u.name)
        };
        let account = match (u.account.is_empty(), u.account_key.is_empty()) {
            (true, true) => "no account".to_owned(),
            (false, true) => format!("account {}", u.account),
            (true, false) => format!("account {}", u.account_key),
            (false, false) => format!("account {} ({})", u.account, u.account_key),
        };
        let system = if u.system_account {
            " (the system account)"
        } else {
            ""
        };
        out.push_str(&format!("user: {name}{}, {account}{system}\n", u.key));
        out.push_str(&format!("permissions: {}\n", u.origin));
        if let Origin::ScopedTemplate { template, .. } = &u.origin {
            out.push_str("  template before expansion:\n");
            spec_lines(&mut out, template, "    ");
            out.push_str("  after expansion:\n");
            spec_lines(&mut out, &u.spec, "    ");
        } else {
            spec_lines(&mut out, &u.spec, "  ");
        }
        for note in u.notes.iter().chain(&e.notes) {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    /// The JSON form `GET /explain` answers.
    pub fn json(&self) -> serde_json::Value {
        let e = &self.explanation;
        let u = &self.user;
        let mut permissions = serde_json::json!({
            "origin": origin_kind(&u.origin),
            "text": u.origin.to_string(),
            "effective": spec_json(&u.spec),
        });
        if let Origin::ScopedTemplate {
            signing_key,
            role,
            template,
        } = &u.origin
        {
            permissions["signing_key"] = signing_key.as_str().into();
            permissions["role"] = role.as_str().into();
            permissions["template"] = spec_json(template);
        }
        let notes: Vec<&String> = u.notes.iter().chain(&e.notes).collect();
        serde_json::json!({
            "allowed": e.allowed,
            "rule": {
                "kind": e.rule.kind(),
                "entries": e.rule.entries(),
                "text": e.rule.to_string(),
            },
            "error": e.error,
            "op": if self.publish { "pub" } else { "sub" },
            "subject": self.subject,
            "queue": self.queue,
            "reply": self.reply,
            "user": {
                "key": u.key,
                "name": u.name,
                "account": u.account,
                "account_key": u.account_key,
                "system_account": u.system_account,
            },
            "permissions": permissions,
            "notes": notes,
        })
    }

    fn order(&self) -> &'static str {
        if self.publish {
            "gateway prefixes (_GR_., $GR.), then publish allow and deny (deny wins; \
             then the allow_responses table), then $NRG., then reserved reply prefixes \
             (_R_., $JS.ACK., _GR_., $GR.)"
        } else {
            "subscribe allow (queue entries need a matching queue), then deny (plain, \
             then queue entries), then queue group _sys_"
        }
    }
}

fn check_query(query: &Query<'_>) -> Result<(), String> {
    if !subject::is_valid_subject(query.subject.as_bytes()) {
        return Err(format!("{:?} is not a valid subject", query.subject));
    }
    let token = |what: &str, value: &str| {
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            Err(format!("{value:?} is not a valid {what}"))
        } else {
            Ok(())
        }
    };
    match (query.publish, query.queue, query.reply) {
        (true, Some(_), _) => Err("a queue group goes with sub, not pub".into()),
        (false, _, Some(_)) => Err("--reply goes with pub, not sub".into()),
        (true, None, Some(reply)) => token("reply subject", reply),
        (false, Some(queue), None) => token("queue group", queue),
        _ => Ok(()),
    }
}

fn origin_kind(origin: &Origin) -> &'static str {
    match origin {
        Origin::Config => "config",
        Origin::UserJwt => "user_jwt",
        Origin::AccountDefault => "account_default_permissions",
        Origin::ScopedTemplate { .. } => "scoped_signing_key_template",
    }
}

fn spec_lines(out: &mut String, spec: &PermissionSpec, indent: &str) {
    let rules = |r: &Option<SubjectRules>| match r {
        None => "no rules (everything allowed)".to_owned(),
        Some(r) => {
            let allow = match &r.allow {
                None => "no allow list".to_owned(),
                Some(a) => format!("allow {a:?}"),
            };
            if r.deny.is_empty() {
                allow
            } else {
                format!("{allow}, deny {:?}", r.deny)
            }
        }
    };
    out.push_str(&format!("{indent}publish: {}\n", rules(&spec.publish)));
    out.push_str(&format!("{indent}subscribe: {}\n", rules(&spec.subscribe)));
    if let Some(r) = spec.responses {
        let limits = ResponseLimits::from_spec(r);
        let max = limits
            .max
            .map_or_else(|| "unlimited".to_owned(), |m| m.to_string());
        let ttl = limits.ttl.map_or_else(
            || "never".to_owned(),
            |t| humantime::format_duration(t).to_string(),
        );
        out.push_str(&format!(
            "{indent}allow_responses: max {max}, expires {ttl}\n"
        ));
    }
}

fn spec_json(spec: &PermissionSpec) -> serde_json::Value {
    let rules = |r: &Option<SubjectRules>| {
        r.as_ref()
            .map(|r| serde_json::json!({ "allow": r.allow, "deny": r.deny }))
    };
    serde_json::json!({
        "publish": rules(&spec.publish),
        "subscribe": rules(&spec.subscribe),
        "allow_responses": spec.responses.map(|r| serde_json::json!({
            "max": r.max, "ttl_nanos": r.ttl_nanos,
        })),
    })
}
