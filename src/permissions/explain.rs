//! Why a PUB or SUB would be allowed or refused: the decision the relay
//! makes, plus the rule that made it, in nats-server's decision order
//! (spec 4.3, 4.4; the order is written down in the parent module).
//!
//! Owns: [`explain`], a pure function over a user's [`PermissionSpec`] and
//! the request. The *decision* comes from the very code the relay runs (a
//! fresh [`Authorizer`] over [`Permissions::compile`]); the *rule* is found
//! by checking each configured entry on its own with the same [`Matcher`],
//! in nats-server's order. Does not own: finding the user (that is
//! `auth::explain`), printing or HTTP.
//!
//! At explain time no traffic has passed, so the response table of
//! `allow_responses` is empty: a publish refused by the lists is refused,
//! and the explanation says that a reply to a delivered request would pass.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::{
    Authorizer, CompileWarning, Matcher, PermissionSpec, Permissions, PublishDecision,
    ResponseLimits, SYSTEM_QUEUE,
};
use crate::protocol::{encode, quote};

/// What is being asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `PUB <subject> [reply]`.
    Publish {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
    },
    /// `SUB <subject> [queue]`.
    Subscribe {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
    },
}

/// Where a user's permissions came from (filled in by `auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A `[[users]]` entry's `[users.permissions]`.
    Config,
    /// The user JWT's own `pub` / `sub` / `resp`.
    UserJwt,
    /// The user JWT has no permissions at all, so the account's
    /// `default_permissions` apply (spec 4.1).
    AccountDefault,
    /// The user JWT was issued by a scoped signing key: the scope's template,
    /// with its `{{ ... }}` placeholders expanded for this user (spec 3.11).
    ScopedTemplate {
        signing_key: String,
        role: String,
        /// The template's lists before expansion.
        template: PermissionSpec,
    },
}

/// The answer: the decision, the rule that made it, and what else matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// What the relay would do with the frame now.
    pub allowed: bool,
    /// The rule that decided, in nats-server's order.
    pub rule: Rule,
    /// The `-ERR` line the client would get (without CRLF), when refused.
    pub error: Option<String>,
    /// Facts that do not change this decision but explain its context
    /// (skipped entries, the response permission, the delivery filter).
    pub notes: Vec<String>,
}

/// The rule that decided. [`Rule::allows`] says which way it decides.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    // --- publish ---
    /// The subject starts with the gateway reply prefix `_GR_.` or `$GR.`:
    /// refused for everyone (step 1).
    GatewayPrefix(&'static str),
    /// No publish allow or deny list: everything may be published.
    NoPublishRules,
    /// `$NRG.` outside the system account (step 3).
    NrgPrefix,
    /// The reply subject starts with a reserved prefix (step 4).
    ReservedReply(&'static str),
    /// `allow_responses` with no publish allow list: the allow list is an
    /// explicit empty list, only replies to delivered requests may pass.
    ResponsesOnly,
    // --- subscribe ---
    /// No subscribe allow or deny list.
    NoSubscribeRules,
    /// Queue group `_sys_`: refused for everyone.
    SystemQueue,
    /// A queue subscription on a subject that queue allow entries match,
    /// with a queue none of them allows (these entries matched).
    QueueNotAllowed(Vec<String>),
    /// A plain subscription on a subject only queue allow entries match.
    OnlyQueueEntries(Vec<String>),
    /// A queue deny entry matched the subject and the queue.
    QueueDenyEntry(String),
    // --- both ---
    /// This allow entry matched and no deny entry did.
    AllowEntry(String),
    /// No allow list, and no deny entry matched.
    NoAllowList,
    /// The allow list exists but no entry of it matched.
    NoAllowEntry,
    /// The allow list exists and holds no usable entry (empty, or every
    /// entry was invalid): nothing is allowed.
    EmptyAllowList,
    /// This deny entry matched (deny wins over allow).
    DenyEntry(String),
}

impl Rule {
    /// Which way the rule decides.
    pub fn allows(&self) -> bool {
        matches!(
            self,
            Rule::NoPublishRules | Rule::NoSubscribeRules | Rule::AllowEntry(_) | Rule::NoAllowList
        )
    }

    /// A stable machine name (the JSON `rule.kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::GatewayPrefix(_) => "gateway_prefix",
            Rule::NoPublishRules => "no_publish_rules",
            Rule::NrgPrefix => "nrg_prefix",
            Rule::ReservedReply(_) => "reserved_reply",
            Rule::ResponsesOnly => "responses_only",
            Rule::NoSubscribeRules => "no_subscribe_rules",
            Rule::SystemQueue => "system_queue",
            Rule::QueueNotAllowed(_) => "queue_not_allowed",
            Rule::OnlyQueueEntries(_) => "only_queue_entries",
            Rule::QueueDenyEntry(_) => "queue_deny_entry",
            Rule::AllowEntry(_) => "allow_entry",
            Rule::NoAllowList => "no_allow_list",
            Rule::NoAllowEntry => "no_allow_entry",
            Rule::EmptyAllowList => "empty_allow_list",
            Rule::DenyEntry(_) => "deny_entry",
        }
    }

    /// What the rule names: the entry of an entry rule, the entries of the
    /// queue rules, the prefix of a prefix rule; nothing otherwise.
    pub fn entries(&self) -> Vec<String> {
        match self {
            Rule::AllowEntry(e) | Rule::DenyEntry(e) | Rule::QueueDenyEntry(e) => vec![e.clone()],
            Rule::QueueNotAllowed(list) | Rule::OnlyQueueEntries(list) => list.clone(),
            Rule::GatewayPrefix(p) | Rule::ReservedReply(p) => vec![(*p).to_owned()],
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |l: &[String]| {
            l.iter()
                .map(|e| format!("{e:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Rule::GatewayPrefix(p) => write!(
                f,
                "the subject starts with the gateway reply prefix {p:?}: refused for every user"
            ),
            Rule::NoPublishRules => f.write_str("no publish permissions: every subject allowed"),
            Rule::NrgPrefix => {
                f.write_str("the subject starts with \"$NRG.\" outside the system account")
            }
            Rule::ReservedReply(p) => write!(
                f,
                "the reply subject starts with the reserved prefix {p:?}: refused for every user"
            ),
            Rule::ResponsesOnly => f.write_str(
                "allow_responses without a publish allow list: the allow list is empty, \
                 only replies to received requests may be published",
            ),
            Rule::NoSubscribeRules => {
                f.write_str("no subscribe permissions: every subject allowed")
            }
            Rule::SystemQueue => f.write_str("queue group \"_sys_\": refused for every user"),
            Rule::QueueNotAllowed(entries) => write!(
                f,
                "queue allow entries match the subject ({}) but none allows this queue",
                list(entries)
            ),
            Rule::OnlyQueueEntries(entries) => write!(
                f,
                "only queue allow entries match the subject ({}): a subscription without \
                 a queue group is refused",
                list(entries)
            ),
            Rule::QueueDenyEntry(e) => write!(f, "queue deny entry {e:?} matched"),
            Rule::AllowEntry(e) => write!(f, "allow entry {e:?} matched, no deny entry matched"),
            Rule::NoAllowList => f.write_str("no allow list, and no deny entry matched"),
            Rule::NoAllowEntry => f.write_str("no allow entry matched"),
            Rule::EmptyAllowList => {
                f.write_str("the allow list has no usable entry: nothing is allowed")
            }
            Rule::DenyEntry(e) => write!(f, "deny entry {e:?} matched"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Config => f.write_str("the [[users]] entry in the config"),
            Origin::UserJwt => f.write_str("the user JWT"),
            Origin::AccountDefault => f.write_str(
                "the account's default_permissions (the user JWT has no permissions of its own)",
            ),
            Origin::ScopedTemplate {
                signing_key, role, ..
            } => write!(
                f,
                "the template of scoped signing key {signing_key} (role {role:?}), expanded for this user"
            ),
        }
    }
}

/// Explains `request` for a user with `spec` (in the account given by
/// `system_account`). The decision is [`Authorizer::check_publish`] /
/// [`Authorizer::check_subscribe`] of a fresh authorizer (an empty response
/// table, as at login); the rule is attributed entry by entry. Pure, and
/// total over any bytes.
pub fn explain(spec: &PermissionSpec, system_account: bool, request: Request<'_>) -> Explanation {
    let (permissions, warnings) = Permissions::compile_with_warnings(spec);
    let responses = permissions.responses();
    let permissions = Arc::new(permissions);
    let mut authz = Authorizer::new(permissions.clone(), system_account);
    let mut notes: Vec<String> = warnings.iter().map(CompileWarning::to_string).collect();
    let (allowed, rule, error) = match request {
        Request::Publish { subject, reply } => {
            let decision = authz.check_publish(subject, reply, Instant::now());
            let rule = publish_rule(spec, &permissions, system_account, subject, reply);
            if let Some(limits) = responses
                && matches!(
                    rule,
                    Rule::NoAllowEntry
                        | Rule::EmptyAllowList
                        | Rule::ResponsesOnly
                        | Rule::DenyEntry(_)
                )
            {
                notes.push(responses_note(limits));
            }
            let error = match decision {
                PublishDecision::Allow => None,
                PublishDecision::DenySubject => Some(encode::publish_violation(subject)),
                PublishDecision::DenyReply => {
                    Some(encode::reply_violation(reply.unwrap_or_default()))
                }
            };
            (decision == PublishDecision::Allow, rule, error)
        }
        Request::Subscribe { subject, queue } => {
            let queue = queue.filter(|q| !q.is_empty());
            let allowed = authz.check_subscribe(subject, queue);
            let rule = subscribe_rule(spec, subject, queue);
            if allowed && authz.delivery_filter_armed() {
                notes.push(format!(
                    "this subscription arms the delivery filter: messages on subjects \
                     matching a subscribe deny entry ({}) are not delivered",
                    quoted_list(&permissions.subscribe_deny_subjects)
                ));
            }
            let error = (!allowed).then(|| encode::subscribe_violation(subject, queue));
            (allowed, rule, error)
        }
    };
    let error = error.map(|e| String::from_utf8_lossy(e.trim_ascii_end()).into_owned());
    Explanation {
        allowed,
        rule,
        error,
        notes,
    }
}

// === attribution ===

/// The publish rule in nats-server's order (the parent module's docs).
fn publish_rule(
    spec: &PermissionSpec,
    permissions: &Permissions,
    system_account: bool,
    subject: &[u8],
    reply: Option<&[u8]>,
) -> Rule {
    if subject.len() > 5 && subject.starts_with(b"_GR_.") {
        return Rule::GatewayPrefix("_GR_.");
    }
    if subject.len() > 4 && subject.starts_with(b"$GR.") {
        return Rule::GatewayPrefix("$GR.");
    }
    let mut allowed_by = Rule::NoPublishRules;
    if permissions.has_publish_rules() {
        let rules = spec.publish.clone().unwrap_or_default();
        if permissions.publish_allow.is_some() {
            let allow = rules.allow.unwrap_or_default();
            match allow.iter().find(|e| plain_entry_matches(e, subject)) {
                Some(entry) => allowed_by = Rule::AllowEntry(entry.clone()),
                None if allow.is_empty() && spec.responses.is_some() => {
                    return Rule::ResponsesOnly;
                }
                None if permissions
                    .publish_allow
                    .as_ref()
                    .is_some_and(Matcher::is_empty) =>
                {
                    return Rule::EmptyAllowList;
                }
                None => return Rule::NoAllowEntry,
            }
        } else {
            allowed_by = Rule::NoAllowList;
        }
        if let Some(entry) = rules.deny.iter().find(|e| plain_entry_matches(e, subject)) {
            return Rule::DenyEntry(entry.clone());
        }
    }
    if !system_account && subject.starts_with(b"$NRG.") {
        return Rule::NrgPrefix;
    }
    if let Some(reply) = reply {
        let reserved = if reply.starts_with(b"_R_.") {
            Some("_R_.")
        } else if reply.len() > 8 && reply.starts_with(b"$JS.ACK.") {
            Some("$JS.ACK.")
        } else if reply.len() > 5 && reply.starts_with(b"_GR_.") {
            Some("_GR_.")
        } else if reply.len() > 4 && reply.starts_with(b"$GR.") {
            Some("$GR.")
        } else {
            None
        };
        if let Some(prefix) = reserved {
            return Rule::ReservedReply(prefix);
        }
    }
    allowed_by
}

/// The subscribe rule in nats-server's order (`canSubscribe`, then `_sys_`).
fn subscribe_rule(spec: &PermissionSpec, subject: &[u8], queue: Option<&[u8]>) -> Rule {
    let Some(rules) = &spec.subscribe else {
        return if queue == Some(SYSTEM_QUEUE) {
            Rule::SystemQueue
        } else {
            Rule::NoSubscribeRules
        };
    };
    let mut allowed_by = Rule::NoAllowList;
    if let Some(allow) = rules.allow.as_ref().filter(|a| !a.is_empty()) {
        let mut plain = None;
        let mut queue_entries = Vec::new();
        let mut queue_allowed = None;
        let mut usable = false;
        for entry in allow {
            let Some(matched) = sub_entry_match(entry, subject, queue) else {
                continue;
            };
            usable = true;
            if matched.plain && plain.is_none() {
                plain = Some(entry.clone());
            }
            if matched.queue_entries {
                queue_entries.push(entry.clone());
                if matched.queue_matched && queue_allowed.is_none() {
                    queue_allowed = Some(entry.clone());
                }
            }
        }
        allowed_by = if queue.is_some() && !queue_entries.is_empty() {
            match queue_allowed {
                Some(entry) => Rule::AllowEntry(entry),
                None => return Rule::QueueNotAllowed(queue_entries),
            }
        } else {
            match plain {
                Some(entry) => Rule::AllowEntry(entry),
                None if !queue_entries.is_empty() => {
                    return Rule::OnlyQueueEntries(queue_entries);
                }
                None if !usable => {
                    return Rule::EmptyAllowList;
                }
                None => return Rule::NoAllowEntry,
            }
        };
    }
    let mut queue_denied = None;
    for entry in &rules.deny {
        let Some(matched) = sub_entry_match(entry, subject, queue) else {
            continue;
        };
        if matched.plain {
            return Rule::DenyEntry(entry.clone());
        }
        if matched.queue_matched && queue_denied.is_none() {
            queue_denied = Some(entry.clone());
        }
    }
    if let Some(entry) = queue_denied {
        return Rule::QueueDenyEntry(entry);
    }
    if queue == Some(SYSTEM_QUEUE) {
        return Rule::SystemQueue;
    }
    if rules.allow.as_ref().is_none_or(Vec::is_empty) && rules.deny.is_empty() {
        return Rule::NoSubscribeRules;
    }
    allowed_by
}

/// Whether the publish entry `entry` alone matches `subject`.
fn plain_entry_matches(entry: &str, subject: &[u8]) -> bool {
    let mut matcher = Matcher::new();
    matcher.insert(entry.as_bytes(), None) && matcher.matches(subject)
}

/// What the subscribe entry `entry` (`"<subject> [queue]"`) alone matches;
/// `None` for an entry the compiler skips. Returns `Some` with nothing
/// matched when the entry is usable but does not match.
fn sub_entry_match(entry: &str, subject: &[u8], queue: Option<&[u8]>) -> Option<super::Matched> {
    let (pattern, entry_queue) = split_sub_entry(entry)?;
    let mut matcher = Matcher::new();
    if !matcher.insert(pattern.as_bytes(), entry_queue.map(str::as_bytes)) {
        return None;
    }
    Some(matcher.match_with_queue(subject, queue))
}

/// `"<subject> [queue]"` as the compiler splits it (white space, at most two
/// fields).
fn split_sub_entry(entry: &str) -> Option<(&str, Option<&str>)> {
    let mut fields = entry.split_whitespace();
    match (fields.next(), fields.next(), fields.next()) {
        (Some(subject), queue, None) => Some((subject, queue)),
        _ => None,
    }
}

fn responses_note(limits: ResponseLimits) -> String {
    let max = limits
        .max
        .map_or_else(|| "unlimited".to_owned(), |m| m.to_string());
    let ttl = limits.ttl.map_or_else(
        || "never".to_owned(),
        |t| humantime::format_duration(t).to_string(),
    );
    format!(
        "allow_responses (max {max}, expires {ttl}): a publish the lists refuse passes when \
         its subject is the reply subject of a request delivered to this connection; the \
         response table is empty at explain time (no traffic has passed), so this answer \
         assumes no such request"
    )
}

fn quoted_list(items: &[Box<[u8]>]) -> String {
    items
        .iter()
        .map(|s| quote::go_quote(s))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::{ResponseSpec, SubjectRules};

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| (*e).to_owned()).collect()
    }

    fn rules(allow: Option<&[&str]>, deny: &[&str]) -> Option<SubjectRules> {
        Some(SubjectRules {
            allow: allow.map(list),
            deny: list(deny),
        })
    }

    fn publish(spec: &PermissionSpec, subject: &str, reply: Option<&str>) -> Explanation {
        explain(
            spec,
            false,
            Request::Publish {
                subject: subject.as_bytes(),
                reply: reply.map(str::as_bytes),
            },
        )
    }

    fn subscribe(spec: &PermissionSpec, subject: &str, queue: Option<&str>) -> Explanation {
        explain(
            spec,
            false,
            Request::Subscribe {
                subject: subject.as_bytes(),
                queue: queue.map(str::as_bytes),
            },
        )
    }

    #[test]
    fn publish_rules_in_nats_server_order() {
        let spec = PermissionSpec {
            publish: rules(
                Some(&["orders.>", "$NRG.x", "bad..entry"]),
                &["orders.secret"],
            ),
            ..PermissionSpec::default()
        };
        let e = |s: &str, r: Option<&str>| publish(&spec, s, r);
        let cases: Vec<(Explanation, bool, Rule)> = vec![
            (
                e("orders.new", None),
                true,
                Rule::AllowEntry("orders.>".into()),
            ),
            (
                e("orders.secret", None),
                false,
                Rule::DenyEntry("orders.secret".into()),
            ),
            (e("billing.x", None), false, Rule::NoAllowEntry),
            (e("_GR_.x", None), false, Rule::GatewayPrefix("_GR_.")),
            (e("$GR.x", None), false, Rule::GatewayPrefix("$GR.")),
            (e("$NRG.x", None), false, Rule::NrgPrefix),
            (
                e("orders.new", Some("_R_.x")),
                false,
                Rule::ReservedReply("_R_."),
            ),
            (
                e("orders.new", Some("$JS.ACK.a")),
                false,
                Rule::ReservedReply("$JS.ACK."),
            ),
            (
                e("orders.new", Some("$JS.ACK.")),
                true,
                Rule::AllowEntry("orders.>".into()),
            ),
            // The list check comes before the reply check.
            (e("billing.x", Some("_R_.x")), false, Rule::NoAllowEntry),
        ];
        for (explanation, allowed, rule) in cases {
            assert_eq!(explanation.allowed, allowed, "{explanation:?}");
            assert_eq!(explanation.rule, rule);
            assert_eq!(explanation.rule.allows(), allowed);
        }
        assert_eq!(
            e("orders.secret", None).error.as_deref(),
            Some("-ERR 'Permissions Violation for Publish to \"orders.secret\"'")
        );
        assert_eq!(
            e("orders.new", Some("_R_.x")).error.as_deref(),
            Some("-ERR 'Permissions Violation for Publish with Reply of \"_R_.x\"'")
        );
        assert!(e("orders.new", None).error.is_none());
        assert!(
            e("x", None).notes.iter().any(|n| n.contains("bad..entry")),
            "skipped entries are noted"
        );
    }

    #[test]
    fn unrestricted_users_still_meet_the_reserved_prefixes() {
        let spec = PermissionSpec::default();
        assert_eq!(publish(&spec, "a", None).rule, Rule::NoPublishRules);
        assert_eq!(
            publish(&spec, "_GR_.a", None).rule,
            Rule::GatewayPrefix("_GR_.")
        );
        assert_eq!(publish(&spec, "_GR_.", None).rule, Rule::NoPublishRules);
        assert_eq!(
            publish(&spec, "a", Some("$GR.x")).rule,
            Rule::ReservedReply("$GR.")
        );
        assert_eq!(subscribe(&spec, "a", None).rule, Rule::NoSubscribeRules);
        assert_eq!(subscribe(&spec, "a", Some("_sys_")).rule, Rule::SystemQueue);
        assert!(!subscribe(&spec, "a", Some("_sys_")).allowed);
        let system = explain(
            &spec,
            true,
            Request::Publish {
                subject: b"$NRG.x",
                reply: None,
            },
        );
        assert!(system.allowed);
    }

    #[test]
    fn deny_only_and_explicit_empty_allow() {
        let deny_only = PermissionSpec {
            publish: rules(None, &["secret.>"]),
            ..PermissionSpec::default()
        };
        assert_eq!(publish(&deny_only, "a", None).rule, Rule::NoAllowList);
        assert_eq!(
            publish(&deny_only, "secret.x", None).rule,
            Rule::DenyEntry("secret.>".into())
        );
        let empty = PermissionSpec {
            publish: rules(Some(&[]), &[]),
            ..PermissionSpec::default()
        };
        assert_eq!(publish(&empty, "a", None).rule, Rule::EmptyAllowList);
        let all_invalid = PermissionSpec {
            publish: rules(Some(&["a..b"]), &[]),
            subscribe: rules(Some(&["a..b"]), &[]),
            ..PermissionSpec::default()
        };
        assert_eq!(publish(&all_invalid, "a", None).rule, Rule::EmptyAllowList);
        assert_eq!(
            subscribe(&all_invalid, "a", None).rule,
            Rule::EmptyAllowList
        );
        assert!(!subscribe(&all_invalid, "a", None).allowed);
    }

    #[test]
    fn responses_state_is_named() {
        let spec = PermissionSpec {
            responses: Some(ResponseSpec::DEFAULT),
            ..PermissionSpec::default()
        };
        let e = publish(&spec, "_INBOX.x", None);
        assert!(!e.allowed);
        assert_eq!(e.rule, Rule::ResponsesOnly);
        assert!(
            e.notes
                .iter()
                .any(|n| n.contains("response table is empty")),
            "{:?}",
            e.notes
        );
        assert!(e.notes.iter().any(|n| n.contains("max 1, expires 2m")));
        let with_allow = PermissionSpec {
            publish: rules(Some(&["a"]), &[]),
            responses: Some(ResponseSpec::DEFAULT),
            ..PermissionSpec::default()
        };
        assert_eq!(
            publish(&with_allow, "a", None).rule,
            Rule::AllowEntry("a".into())
        );
        assert!(publish(&with_allow, "a", None).notes.is_empty());
        assert_eq!(publish(&with_allow, "b", None).rule, Rule::NoAllowEntry);
    }

    #[test]
    fn subscribe_rules_with_queues() {
        let spec = PermissionSpec {
            subscribe: rules(
                Some(&["foo", "foo v1", "q.> grp", "g.> g.*"]),
                &["foo.secret"],
            ),
            ..PermissionSpec::default()
        };
        let s = |subject: &str, queue: Option<&str>| subscribe(&spec, subject, queue);
        let cases: Vec<(Explanation, bool, Rule)> = vec![
            (s("foo", None), true, Rule::AllowEntry("foo".into())),
            (
                s("foo", Some("v1")),
                true,
                Rule::AllowEntry("foo v1".into()),
            ),
            (
                s("foo", Some("v2")),
                false,
                Rule::QueueNotAllowed(list(&["foo v1"])),
            ),
            (
                s("q.x", None),
                false,
                Rule::OnlyQueueEntries(list(&["q.> grp"])),
            ),
            (
                s("q.x", Some("grp")),
                true,
                Rule::AllowEntry("q.> grp".into()),
            ),
            (
                s("g.a", Some("g.1")),
                true,
                Rule::AllowEntry("g.> g.*".into()),
            ),
            (
                s("g.a", Some("g.>")),
                false,
                Rule::QueueNotAllowed(list(&["g.> g.*"])),
            ),
            (s("bar", None), false, Rule::NoAllowEntry),
            (
                s("foo", Some("_sys_")),
                false,
                Rule::QueueNotAllowed(list(&["foo v1"])),
            ),
        ];
        for (explanation, allowed, rule) in cases {
            assert_eq!(explanation.allowed, allowed, "{explanation:?}");
            assert_eq!(explanation.rule, rule);
            assert_eq!(explanation.rule.allows(), allowed);
        }
        assert_eq!(
            s("foo", Some("v2")).error.as_deref(),
            Some("-ERR 'Permissions Violation for Subscription to \"foo\" using queue \"v2\"'")
        );
    }

    #[test]
    fn subscribe_deny_entries_and_the_delivery_filter() {
        let spec = PermissionSpec {
            subscribe: rules(None, &["secret.>", "jobs.* workers"]),
            ..PermissionSpec::default()
        };
        let s = |subject: &str, queue: Option<&str>| subscribe(&spec, subject, queue);
        assert_eq!(s("secret.x", None).rule, Rule::DenyEntry("secret.>".into()));
        // The token-wise quirk (spec 4.2): `>` as a literal token.
        assert_eq!(s("secret.>", None).rule, Rule::DenyEntry("secret.>".into()));
        assert_eq!(
            s("jobs.a", Some("workers")).rule,
            Rule::QueueDenyEntry("jobs.* workers".into())
        );
        assert_eq!(s("jobs.a", None).rule, Rule::NoAllowList);
        let wide = s(">", None);
        assert!(wide.allowed);
        assert!(
            wide.notes.iter().any(|n| n.contains("delivery filter")),
            "{:?}",
            wide.notes
        );
        assert!(s("plain", None).notes.is_empty());
    }

    #[test]
    fn any_bytes_are_explained_without_panicking() {
        let spec = PermissionSpec {
            publish: rules(Some(&["a.>"]), &["a.b"]),
            subscribe: rules(Some(&["a.*"]), &["a.b q"]),
            responses: Some(ResponseSpec::DEFAULT),
        };
        for subject in ["", ".", "a..b", "a.>.b", "\u{0}", "a b", "a.\u{7f}"] {
            let p = publish(&spec, subject, Some(""));
            assert_eq!(p.rule.allows(), p.allowed);
            let s = subscribe(&spec, subject, Some(""));
            assert_eq!(s.rule.allows(), s.allowed);
        }
    }
}
