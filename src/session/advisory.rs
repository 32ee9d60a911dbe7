//! Violation advisories: one structured log event for every permission
//! violation, every would-be violation of a report-only user and every
//! failed login, with the target `natsgate::advisory` at info level (so a
//! log shipper can pick them out; `[log] format = "json"` gives one JSON
//! object per event, its `timestamp` the time).
//!
//! Fields: `advisory` (`publish_violation`, `subscribe_violation`,
//! `would_deny`, `auth_failure`), `client` (address), `user` (public key),
//! `name`, `account`, `op` (`publish`, `subscribe`), `subject`, `queue`,
//! `reply`, `rule` and `rule_kind` (see `permissions::explain`); for
//! `auth_failure`: `reason` (the metric label), `detail` and `nkey` (the
//! CONNECT's, when it had one).
//!
//! Owns the event shape only; counting is `metrics`, deciding is
//! `permissions`. The rule is worked out again from the user's permission
//! spec (`permissions::explain`), which costs about one compile of the
//! user's lists per event: events happen on refusals, not on the relay's
//! hot path.

use std::net::SocketAddr;

use tracing::info;

use crate::auth::Identity;
use crate::permissions::explain::{Request, explain};

/// What kind of permission event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Refused with an `-ERR` (enforced).
    Violation,
    /// A report-only user's frame the permissions refuse, forwarded.
    WouldDeny,
}

/// One permission advisory.
pub(super) fn permission(
    kind: Kind,
    identity: &Identity,
    client: SocketAddr,
    request: Request<'_>,
) {
    if !tracing::enabled!(target: "natsgate::advisory", tracing::Level::INFO) {
        return;
    }
    let rule = explain(&identity.spec, identity.system_account, request).rule;
    let (op, subject, queue, reply) = match request {
        Request::Publish { subject, reply } => ("publish", subject, None, reply),
        Request::Subscribe { subject, queue } => ("subscribe", subject, queue, None),
    };
    let advisory = match (kind, op) {
        (Kind::WouldDeny, _) => "would_deny",
        (Kind::Violation, "publish") => "publish_violation",
        (Kind::Violation, _) => "subscribe_violation",
    };
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

/// One failed login.
pub(super) fn auth_failure(client: SocketAddr, reason: &str, detail: &str, nkey: Option<&str>) {
    info!(
        target: "natsgate::advisory",
        advisory = "auth_failure",
        client = %client,
        reason,
        detail,
        nkey,
        "authentication failed"
    );
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
            permission(Kind::Violation, &identity(), client, request);
            let request = Request::Subscribe {
                subject: b"x",
                queue: Some(b"q"),
            };
            permission(Kind::WouldDeny, &identity(), client, request);
            auth_failure(client, "unknown_user", "unknown nkey UX", Some("UX"));
        });
        assert_eq!(events.len(), 3, "{events:?}");
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
        let auth = &events[2]["fields"];
        assert_eq!(auth["advisory"], "auth_failure");
        assert_eq!(auth["reason"], "unknown_user");
        assert_eq!(auth["nkey"], "UX");
    }
}
