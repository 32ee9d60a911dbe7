//! The `$SYS.REQ.USER.INFO` answer natsgate gives for the client's own
//! identity (spec 9.4), laid out as nats-server's.

use serde_json::{Map, Value, json};
use std::time::SystemTime;

use crate::auth::Identity;
use crate::gate::Gate;
use crate::permissions::{PermissionSpec, ResponseLimits, SubjectRules};

/// The `$SYS.REQ.USER.INFO` reply for `identity` (spec 9.4), laid out
/// as nats-server's: permissions with the response defaults applied,
/// `expires` in nanoseconds from now.
pub(super) fn render(gate: &Gate, identity: &Identity) -> Vec<u8> {
    let mut data = Map::new();
    data.insert("user".into(), json!(identity.user));
    let account = if identity.account.is_empty() {
        "$G"
    } else {
        identity.account.as_str()
    };
    data.insert("account".into(), json!(account));
    if !identity.account_name.is_empty() {
        data.insert("account_name".into(), json!(identity.account_name));
    }
    if !identity.name.is_empty() {
        data.insert("user_name".into(), json!(identity.name));
    }
    let permissions = permissions_json(&identity.spec);
    if !permissions.is_empty() {
        data.insert("permissions".into(), Value::Object(permissions));
    }
    if let Some(at) = identity.expires_at {
        let nanos = at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_nanos();
        data.insert(
            "expires".into(),
            json!(u64::try_from(nanos).unwrap_or(u64::MAX)),
        );
    }
    let reply = json!({
        "server": gate.server_json(),
        "data": Value::Object(data),
    });
    let mut out = Vec::new();
    crate::protocol::info::write_go_json(&mut out, reply.to_string().as_bytes());
    out
}

/// nats-server's JSON for a user's permissions (`omitempty` throughout).
fn permissions_json(spec: &PermissionSpec) -> Map<String, Value> {
    let rules = |r: &SubjectRules, forced_empty_allow: bool| {
        let mut m = Map::new();
        if let Some(allow) = r
            .allow
            .as_ref()
            .filter(|a| !a.is_empty() && !forced_empty_allow)
        {
            m.insert("allow".into(), json!(allow));
        }
        if !r.deny.is_empty() {
            m.insert("deny".into(), json!(r.deny));
        }
        Value::Object(m)
    };
    let mut out = Map::new();
    let publish = spec.publish.clone().unwrap_or_default();
    if spec.publish.is_some() || spec.responses.is_some() {
        out.insert("publish".into(), rules(&publish, false));
    }
    if let Some(subscribe) = &spec.subscribe {
        out.insert("subscribe".into(), rules(subscribe, false));
    }
    if let Some(resp) = spec.responses {
        let limits = ResponseLimits::from_spec(resp);
        let max = limits
            .max
            .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
        let ttl = limits
            .ttl
            .map_or(-1, |t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX));
        out.insert("responses".into(), json!({ "max": max, "ttl": ttl }));
    }
    out
}
