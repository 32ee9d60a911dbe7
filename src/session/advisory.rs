//! Violation advisories: one structured event for every permission
//! violation, every would-be violation of a report-only user, every failed
//! login and every limit close.
//!
//! Each event goes to the log with the target `natsgate::advisory` at info
//! level (`[log] format = "json"` gives one JSON object per event, its
//! `timestamp` the time), and, with `[advisories]`, upstream as JSON on
//! `<subject>.<advisory>` ([`crate::advisories`]), in the shape of
//! nats-server's `$SYS` advisories.
//!
//! Log fields: `advisory` (`publish_violation`, `subscribe_violation`,
//! `would_deny`, `auth_failure`, `limit_close`), `client` (address), `user`
//! (public key), `name`, `account`, `op` (`publish`, `subscribe`),
//! `subject`, `queue`, `reply`, `rule` and `rule_kind` (see
//! `permissions::explain`); for `auth_failure`: `reason` (the metric label),
//! `detail` and `nkey` (the CONNECT's, when it had one); for `limit_close`:
//! `limit` (the metric label) and `detail`.
//!
//! Recording an event also counts it ([`record`] and [`auth_failure`] call
//! the metrics), so every event is counted exactly once. The rule is worked
//! out again from the user's permission spec (`permissions::explain`), which
//! costs about one compile of the user's lists per event: events happen on
//! refusals, not on the relay's hot path.

use std::net::SocketAddr;

use serde_json::{Map, Value, json};
use tracing::info;

use super::relay::User;
use crate::advisories::Event;
use crate::auth::{Identity, Reason};
use crate::gate::Gate;
use crate::permissions::explain::{Request, explain};
use crate::protocol::connect::ConnectOptions;

/// What kind of permission event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Refused with an `-ERR` (enforced).
    Violation,
    /// A report-only user's frame the permissions refuse, forwarded.
    WouldDeny,
}

/// The connection an event is about.
#[derive(Clone, Copy)]
pub(super) struct Client<'a> {
    pub peer: SocketAddr,
    pub client_id: u64,
    pub identity: Option<&'a Identity>,
    pub opts: Option<&'a ConnectOptions>,
}

impl<'a> Client<'a> {
    /// A connection before its CONNECT was read.
    pub fn at(peer: SocketAddr, client_id: u64) -> Client<'static> {
        Client {
            peer,
            client_id,
            identity: None,
            opts: None,
        }
    }

    /// A connection whose CONNECT was read, not (yet) authenticated.
    pub fn connecting(peer: SocketAddr, client_id: u64, opts: &'a ConnectOptions) -> Client<'a> {
        Client {
            opts: Some(opts),
            ..Client::at(peer, client_id)
        }
    }

    pub fn of(user: &'a User) -> Client<'a> {
        Client {
            peer: user.peer,
            client_id: user.client_id,
            identity: Some(&user.identity),
            opts: Some(&user.opts),
        }
    }

    /// nats-server's `ClientInfo` fields that natsgate knows.
    fn json(&self) -> Value {
        let mut client = Map::new();
        client.insert("host".into(), json!(self.peer.ip().to_string()));
        client.insert("port".into(), json!(self.peer.port()));
        client.insert("id".into(), json!(self.client_id));
        if let Some(identity) = self.identity {
            let account = identity
                .jwt
                .as_ref()
                .map_or(identity.account.as_str(), |j| j.account_key.as_str());
            client.insert("acc".into(), json!(account));
            client.insert("acc_name".into(), json!(identity.account_name));
            client.insert("user".into(), json!(identity.user));
            client.insert("name_tag".into(), json!(identity.name));
        }
        if let Some(opts) = self.opts {
            for (key, value) in [
                ("name", &opts.name),
                ("lang", &opts.lang),
                ("ver", &opts.version),
            ] {
                if let Some(value) = value {
                    client.insert(key.into(), json!(value));
                }
            }
        }
        client.insert("kind".into(), json!("Client"));
        client.insert("client_type".into(), json!("nats"));
        Value::Object(client)
    }
}

/// One permission event of a logged-in user: counted, logged and (with
/// `[advisories]`) published.
pub(super) fn record(gate: &Gate, user: &User, kind: Kind, request: Request<'_>) {
    let account = &user.identity.account_name;
    let stats = user.stats.stats();
    match (kind, request) {
        (Kind::WouldDeny, _) => gate.metrics.would_deny(stats, account),
        (Kind::Violation, Request::Publish { .. }) => gate.metrics.publish_denied(stats, account),
        (Kind::Violation, Request::Subscribe { .. }) => {
            gate.metrics.subscribe_denied(stats, account);
        }
    }
    let logged = tracing::enabled!(target: "natsgate::advisory", tracing::Level::INFO);
    if !logged && !gate.advisories.enabled() {
        return;
    }
    let rule = explain(&user.identity.spec, user.identity.system_account, request).rule;
    if logged {
        permission(kind, &user.identity, user.peer, request, &rule);
    }
    if gate.advisories.enabled() {
        let (op, subject, queue, reply) = parts(request);
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        let fields = json!({
            "op": op,
            "subject": String::from_utf8_lossy(subject),
            "queue": text(queue),
            "reply": text(reply),
            "rule": rule.to_string(),
            "rule_kind": rule.kind(),
        });
        publish(gate, advisory_name(kind, op), Client::of(user), fields);
    }
}

/// A request's op name, subject, queue and reply.
type Parts<'a> = (&'static str, &'a [u8], Option<&'a [u8]>, Option<&'a [u8]>);

fn parts(request: Request<'_>) -> Parts<'_> {
    match request {
        Request::Publish { subject, reply } => ("publish", subject, None, reply),
        Request::Subscribe { subject, queue } => ("subscribe", subject, queue, None),
    }
}

fn advisory_name(kind: Kind, op: &str) -> &'static str {
    match (kind, op) {
        (Kind::WouldDeny, _) => "would_deny",
        (Kind::Violation, "publish") => "publish_violation",
        (Kind::Violation, _) => "subscribe_violation",
    }
}

/// The log line of one permission event.
fn permission(
    kind: Kind,
    identity: &Identity,
    client: SocketAddr,
    request: Request<'_>,
    rule: &crate::permissions::explain::Rule,
) {
    let (op, subject, queue, reply) = parts(request);
    let advisory = advisory_name(kind, op);
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    let message = match kind {
        Kind::WouldDeny => "would deny (report-only): forwarded",
        Kind::Violation => "permission violation",
    };
    info!(
        target: "natsgate::advisory",
        advisory,
        client = %client,
        user = %identity.user,
        name = %identity.name,
        account = %identity.account_name,
        op,
        subject = %String::from_utf8_lossy(subject),
        queue = text(queue),
        reply = text(reply),
        rule = %rule,
        rule_kind = rule.kind(),
        "{message}"
    );
}

/// One failed login: counted, logged and published.
pub(super) fn auth_failure(
    gate: &Gate,
    client: Client<'_>,
    reason: Reason,
    detail: &str,
    nkey: Option<&str>,
) {
    gate.metrics.auth_failed(reason);
    let reason = reason.label();
    info!(
        target: "natsgate::advisory",
        advisory = "auth_failure",
        client = %client.peer,
        reason,
        detail,
        nkey,
        "authentication failed"
    );
    let fields = json!({ "reason": reason, "detail": detail, "nkey": nkey });
    publish(gate, "auth_failure", client, fields);
}

/// One client closed (or refused) by a `[limits]` limit: counted, logged
/// and published. `limit` is the metric label.
pub(super) fn limit_close(gate: &Gate, client: Client<'_>, limit: &'static str, detail: &str) {
    gate.metrics.limit_closed(limit);
    let identity = client.identity;
    info!(
        target: "natsgate::advisory",
        advisory = "limit_close",
        client = %client.peer,
        user = identity.map(|i| i.user.as_str()),
        name = identity.map(|i| i.name.as_str()),
        account = identity.map(|i| i.account_name.as_str()),
        limit,
        detail,
        "closed by a limit"
    );
    let fields = json!({ "limit": limit, "detail": detail });
    publish(gate, "limit_close", client, fields);
}

/// Builds the upstream event and queues it (never blocks).
fn publish(gate: &Gate, advisory: &'static str, client: Client<'_>, fields: Value) {
    if !gate.advisories.enabled() {
        return;
    }
    let mut event = Map::new();
    event.insert(
        "type".into(),
        json!(format!("io.natsgate.advisory.v1.{advisory}")),
    );
    event.insert("id".into(), json!(event_id()));
    event.insert(
        "timestamp".into(),
        json!(jiff::Timestamp::now().to_string()),
    );
    event.insert("server".into(), gate.server_json());
    event.insert("client".into(), client.json());
    event.insert("advisory".into(), json!(advisory));
    if let Value::Object(fields) = fields {
        for (key, value) in fields {
            if !value.is_null() {
                event.insert(key, value);
            }
        }
    }
    let body = serde_json::to_vec(&Value::Object(event)).unwrap_or_default();
    gate.advisories.publish(Event { advisory, body });
}

/// A random event id: 22 characters as a NUID is, from 128 random bits.
fn event_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .chars()
        .take(22)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::permissions::{PermissionSpec, Permissions, SubjectRules};

    /// Collects what the JSON formatter writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn identity() -> Identity {
        let spec = PermissionSpec {
            publish: Some(SubjectRules {
                allow: Some(vec!["orders.>".into()]),
                deny: vec!["orders.secret".into()],
            }),
            ..PermissionSpec::default()
        };
        Identity {
            user: "UABC".into(),
            name: "svc-a".into(),
            account: "APP".into(),
            account_name: "APP".into(),
            permissions: Arc::new(Permissions::compile(&spec)),
            spec: Arc::new(spec),
            max_subscriptions: None,
            max_payload: None,
            expires_at: None,
            account_expires_at: None,
            system_account: false,
            jwt: None,
        }
    }

    fn json_events(emit: impl FnOnce()) -> Vec<serde_json::Value> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn advisories_are_one_json_object_each_with_every_field() {
        let client: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let events = json_events(|| {
            let request = Request::Publish {
                subject: b"orders.secret",
                reply: Some(b"_INBOX.1"),
            };
            let id = identity();
            let rule = explain(&id.spec, false, request).rule;
            permission(Kind::Violation, &id, client, request, &rule);
            let request = Request::Subscribe {
                subject: b"x",
                queue: Some(b"q"),
            };
            let rule = explain(&id.spec, false, request).rule;
            permission(Kind::WouldDeny, &id, client, request, &rule);
        });
        assert_eq!(events.len(), 2, "{events:?}");
        for event in &events {
            assert_eq!(event["target"], "natsgate::advisory");
            assert_eq!(event["level"], "INFO");
            assert!(
                event["timestamp"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("20"))
            );
            assert_eq!(event["fields"]["client"], "127.0.0.1:5555");
        }
        let violation = &events[0]["fields"];
        assert_eq!(violation["advisory"], "publish_violation");
        assert_eq!(violation["user"], "UABC");
        assert_eq!(violation["name"], "svc-a");
        assert_eq!(violation["account"], "APP");
        assert_eq!(violation["op"], "publish");
        assert_eq!(violation["subject"], "orders.secret");
        assert_eq!(violation["reply"], "_INBOX.1");
        assert_eq!(violation["rule_kind"], "deny_entry");
        assert_eq!(violation["rule"], "deny entry \"orders.secret\" matched");
        let would = &events[1]["fields"];
        assert_eq!(would["advisory"], "would_deny");
        assert_eq!(would["op"], "subscribe");
        assert_eq!(would["queue"], "q");
        assert_eq!(would["rule_kind"], "no_subscribe_rules");
    }
}
