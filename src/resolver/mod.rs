//! The NATS account resolver protocol, answered by natsgate itself for
//! users of the operator's system account (spec 6.4): what `nsc push`,
//! `nsc pull` and `nsc push --prune` speak to a nats-server with
//! `resolver: { type: full }`. The stock server behind natsgate has no
//! resolver, so these requests never go upstream.
//!
//! The formats and the texts are nats-server's (`DirAccResolver.Start`,
//! `respondToUpdate`, `handleListRequest`, `handleDeleteRequest`). Where
//! natsgate is stricter (an account JWT signed by an operator it does not
//! trust, or older than the one it holds, is refused: nats-server stores
//! both) the refusal has nats-server's shape and says why.
//!
//! Does not own: where JWTs are kept ([`crate::store`]), the checks of a
//! JWT (`auth::jwt`), or how a reply reaches the client (the session).

pub mod fleet;

use std::time::SystemTime;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::auth::jwt::AccountChange;
use crate::gate::Gate;

/// One resolver request, from its subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `$SYS.REQ.CLAIMS.UPDATE` (`None`), `$SYS.REQ.ACCOUNT.<id>.CLAIMS.UPDATE`
    /// and the older `$SYS.ACCOUNT.<id>.CLAIMS.UPDATE` (`Some(id)`).
    Update(Option<String>),
    /// `$SYS.REQ.ACCOUNT.<id>.CLAIMS.LOOKUP`
    Lookup(String),
    /// `$SYS.REQ.CLAIMS.LIST`
    List,
    /// `$SYS.REQ.CLAIMS.DELETE`
    Delete,
    /// `$SYS.REQ.CLAIMS.PACK`
    Pack,
}

impl Request {
    /// The request a subject names, if it is one of the resolver's.
    pub fn parse(subject: &[u8]) -> Option<Request> {
        let subject = std::str::from_utf8(subject).ok()?;
        let tokens: Vec<&str> = subject.split('.').collect();
        match tokens[..] {
            ["$SYS", "REQ", "CLAIMS", "UPDATE"] => Some(Request::Update(None)),
            ["$SYS", "REQ", "CLAIMS", "LIST"] => Some(Request::List),
            ["$SYS", "REQ", "CLAIMS", "DELETE"] => Some(Request::Delete),
            ["$SYS", "REQ", "CLAIMS", "PACK"] => Some(Request::Pack),
            ["$SYS", "REQ", "ACCOUNT", id, "CLAIMS", "UPDATE"]
            | ["$SYS", "ACCOUNT", id, "CLAIMS", "UPDATE"]
                if !id.is_empty() =>
            {
                Some(Request::Update(Some(id.to_owned())))
            }
            ["$SYS", "REQ", "ACCOUNT", id, "CLAIMS", "LOOKUP"] if !id.is_empty() => {
                Some(Request::Lookup(id.to_owned()))
            }
            _ => None,
        }
    }
}

/// Answers `request` with `payload` (the message body, headers removed).
/// Returns the reply messages in order (several for `PACK`).
pub async fn handle(gate: &Gate, request: Request, payload: &[u8]) -> Vec<Bytes> {
    let Some(trust) = gate.trust() else {
        return Vec::new();
    };
    match request {
        Request::Update(subject) => vec![update(gate, subject.as_deref(), payload).await],
        Request::Lookup(id) => {
            let jwt = trust
                .account(&id)
                .map(|a| a.jwt.clone())
                .unwrap_or_default();
            vec![Bytes::from(jwt)]
        }
        Request::List => {
            let ids: Vec<&str> = trust.accounts().map(|a| a.key.as_str()).collect();
            // nats-server marshals a map here: `data` comes first.
            vec![envelope_json(
                json!({ "data": ids, "server": gate.server_json() }),
            )]
        }
        Request::Pack => {
            if payload == trust.hash() {
                return vec![Bytes::new()];
            }
            let mut out: Vec<Bytes> = trust
                .accounts()
                .map(|a| Bytes::from(format!("{}|{}", a.key, a.jwt)))
                .collect();
            out.push(Bytes::new());
            out
        }
        Request::Delete => vec![delete(gate, payload).await],
    }
}

/// `CLAIMS.UPDATE`: checked, stored, then applied to connected users.
async fn update(gate: &Gate, subject: Option<&str>, payload: &[u8]) -> Bytes {
    let token = String::from_utf8_lossy(payload);
    let Some(trust) = gate.trust() else {
        return Bytes::new();
    };
    let info = match trust.check_update(&token, subject, SystemTime::now()) {
        Ok(info) => info,
        Err(refusal) => {
            gate.metrics.account_update("nats", false);
            warn!(account = %refusal.account, reason = %refusal.description(), "account JWT push refused");
            return update_error(gate, &refusal.account, &refusal.description());
        }
    };
    let key = info.key.clone();
    if !gate.store.writable() {
        gate.metrics.account_update("nats", false);
        return update_error(
            gate,
            &key,
            "jwt update resulted in error - store is read-only",
        );
    }
    if let Err(e) = gate.store.save(&key, &token, info.claims.issued_at).await {
        gate.metrics.account_update("nats", false);
        warn!(account = %key, error = %e, "account JWT push not stored");
        return update_error(gate, &key, &format!("jwt update resulted in error - {e}"));
    }
    // Checked again against the trust store of now: another update may
    // have been applied while this one was being stored.
    let mut change = AccountChange::Unchanged;
    let mut refused = None;
    gate.update_trust(
        |trust| match trust.check_update(&token, subject, SystemTime::now()) {
            Ok(info) => {
                change = trust.install(info);
                change != AccountChange::Unchanged
            }
            Err(r) => {
                refused = Some(r);
                false
            }
        },
    );
    if let Some(refusal) = refused {
        gate.metrics.account_update("nats", false);
        return update_error(gate, &refusal.account, &refusal.description());
    }
    gate.metrics.account_update("nats", true);
    if change != AccountChange::Unchanged {
        info!(account = %key, ?change, "account JWT pushed and applied");
        gate.accounts_changed();
    }
    envelope_json(json!({
        "server": gate.server_json(),
        "data": { "account": key, "code": 200, "message": "jwt updated" },
    }))
}

/// `CLAIMS.DELETE`: an operator-signed request, served only with
/// `allow_delete`; the accounts' users are disconnected.
async fn delete(gate: &Gate, payload: &[u8]) -> Bytes {
    let token = String::from_utf8_lossy(payload);
    let allowed = gate.settings.jwt.as_ref().is_some_and(|j| j.allow_delete);
    let Some(trust) = gate.trust() else {
        return Bytes::new();
    };
    let accounts = match trust.check_delete(&token, allowed) {
        Ok(accounts) => accounts,
        Err(refusal) => {
            let text = format!(
                "delete accounts request by {} failed - {}",
                refusal.by, refusal.error
            );
            return update_error(gate, "", &text);
        }
    };
    let mut errors = Vec::new();
    for key in &accounts {
        match gate.store.delete(key, &token).await {
            Ok(()) => {
                gate.update_trust(|trust| trust.remove_account(key));
                info!(account = %key, "account deleted by a resolver request");
            }
            Err(e) => errors.push(e),
        }
    }
    gate.accounts_changed();
    let passed = accounts.len() - errors.len();
    if errors.is_empty() {
        let message = format!("deleted {passed} accounts");
        envelope_json(json!({
            "server": gate.server_json(),
            "data": { "code": 200, "message": message },
        }))
    } else {
        let text = format!(
            "deleted {passed} accounts, failed for {} - {}",
            errors.len(),
            errors.join("\n")
        );
        update_error(gate, "", &text)
    }
}

/// nats-server's `ClaimUpdateError` reply (`account` omitted when empty).
fn update_error(gate: &Gate, account: &str, description: &str) -> Bytes {
    let mut error = Map::new();
    if !account.is_empty() {
        error.insert("account".into(), json!(account));
    }
    error.insert("code".into(), json!(500));
    error.insert("description".into(), json!(description));
    envelope_json(json!({ "server": gate.server_json(), "error": Value::Object(error) }))
}

/// JSON as Go's encoder writes it (`<`, `>`, `&` escaped).
fn envelope_json(value: Value) -> Bytes {
    let mut out = Vec::new();
    crate::protocol::info::write_go_json(&mut out, value.to_string().as_bytes());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resolver_subject_and_nothing_else() {
        let id = "ADXB5UYJ6GPYY3VWPVLVG6KVFUEKYQJQGSPEO7B7V2EWT4NMPGZBLQS6";
        let cases: Vec<(String, Option<Request>)> = vec![
            ("$SYS.REQ.CLAIMS.UPDATE".into(), Some(Request::Update(None))),
            (
                format!("$SYS.REQ.ACCOUNT.{id}.CLAIMS.UPDATE"),
                Some(Request::Update(Some(id.into()))),
            ),
            (
                format!("$SYS.ACCOUNT.{id}.CLAIMS.UPDATE"),
                Some(Request::Update(Some(id.into()))),
            ),
            (
                format!("$SYS.REQ.ACCOUNT.{id}.CLAIMS.LOOKUP"),
                Some(Request::Lookup(id.into())),
            ),
            ("$SYS.REQ.CLAIMS.LIST".into(), Some(Request::List)),
            ("$SYS.REQ.CLAIMS.DELETE".into(), Some(Request::Delete)),
            ("$SYS.REQ.CLAIMS.PACK".into(), Some(Request::Pack)),
            ("$SYS.REQ.USER.INFO".into(), None),
            ("$SYS.REQ.CLAIMS".into(), None),
            ("$SYS.REQ.CLAIMS.UPDATE.x".into(), None),
            ("$SYS.REQ.ACCOUNT..CLAIMS.LOOKUP".into(), None),
            (format!("$SYS.REQ.ACCOUNT.{id}.CLAIMS.LIST"), None),
            ("$sys.req.claims.update".into(), None),
            ("orders.new".into(), None),
        ];
        for (subject, want) in cases {
            assert_eq!(Request::parse(subject.as_bytes()), want, "{subject}");
        }
        assert_eq!(Request::parse(&[0xff, b'.', b'x']), None);
    }
}
