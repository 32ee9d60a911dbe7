//! nats-server's permission semantics as pure functions (spec section 4).
//!
//! Owns: compiling a [`PermissionSpec`] into immutable [`Permissions`]
//! (shared by all connections of a user through an `Arc`), and the
//! per-connection [`Authorizer`] that answers "may this PUB go upstream?",
//! "may this SUB go upstream?" and "would nats-server have delivered this
//! MSG?". No I/O, no logging, no locks; time is passed in. The session logs,
//! counts and writes the `-ERR`.
//!
//! # Decision order (mirrors nats-server exactly)
//!
//! Publish (`processInboundClientMsg`, `pubAllowedFullCheck`, spec 4.3):
//! 1. subject starts with `_GR_.` (longer than 5 bytes) or `$GR.` (longer
//!    than 4) → [`PublishDecision::DenySubject`];
//! 2. if there are publish rules: the allow list, if present, must match and
//!    the deny list must not (deny wins). Only if that denies and a response
//!    permission exists is the response table consulted (4.6); a tracked
//!    reply turns the deny into an allow;
//! 3. subject starts with `$NRG.` outside the system account → `DenySubject`;
//! 4. reply starts with `_R_.`, `$JS.ACK.` (longer than 8 bytes), `_GR_.`
//!    (longer than 5) or `$GR.` (longer than 4) → [`PublishDecision::DenyReply`].
//!
//! The reply is never checked against the allow/deny lists. No permissions at
//! all means allow (apart from the reserved prefixes, which apply to
//! everyone).
//!
//! Subscribe (`canSubscribe`, spec 4.4): allow list (if present) must match
//! with a non-queue entry, except that for a queue subscription whose subject
//! matches queue allow entries the queue must match one of them; then a
//! matching non-queue deny entry denies, otherwise a matching queue deny entry
//! whose queue matches denies. Queue `_sys_` is always refused.
//!
//! Only static (allow/deny) results are cached; response-table results never
//! are.

pub mod explain;
pub mod jetstream;
mod matcher;
mod responses;
mod spec;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use matcher::{BoundedCache, Matched, Matcher, queue_matches};
pub use responses::{MAX_TRACKED_REPLIES, ResponseTable};
pub use spec::*;

use crate::protocol::subject;

/// Compiled, immutable permissions shared by all connections of a user.
#[derive(Debug, Default)]
pub struct Permissions {
    /// `Some` even when empty: an explicit empty allow list denies all.
    publish_allow: Option<Matcher>,
    /// `Some` only when non-empty.
    publish_deny: Option<Matcher>,
    /// `Some` only when the configured list was non-empty.
    subscribe_allow: Option<Matcher>,
    /// `Some` only when non-empty.
    subscribe_deny: Option<Matcher>,
    /// The subjects of the subscribe deny entries (nats-server `darray`),
    /// used to decide whether a subscription arms the delivery filter.
    subscribe_deny_subjects: Vec<Box<[u8]>>,
    responses: Option<ResponseLimits>,
}

/// The response permission with nats-server's defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Replies allowed per delivered request; `None` is unlimited.
    pub max: Option<u64>,
    /// How long a delivered reply stays usable; `None` is forever.
    pub ttl: Option<Duration>,
}

/// An entry that was skipped while compiling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileWarning {
    /// Which list: `"publish.allow"`, `"publish.deny"`, `"subscribe.allow"`,
    /// `"subscribe.deny"`.
    pub list: &'static str,
    /// The entry as configured.
    pub entry: String,
    /// Why it was skipped.
    pub reason: &'static str,
}

impl fmt::Display for CompileWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entry {:?} skipped: {}",
            self.list, self.entry, self.reason
        )
    }
}

/// The outcome of a publish check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishDecision {
    Allow,
    /// `Permissions Violation for Publish to "<subject>"`.
    DenySubject,
    /// `Permissions Violation for Publish with Reply of "<reply>"`.
    DenyReply,
}

impl Permissions {
    /// Compiles `spec` (spec 4.1), silently skipping invalid entries. Use
    /// [`Permissions::compile_with_warnings`] to learn what was skipped.
    pub fn compile(spec: &PermissionSpec) -> Permissions {
        Permissions::compile_with_warnings(spec).0
    }

    /// Compiles `spec` (spec 4.1, `setPermissions`,
    /// `validateResponsePermissions`):
    /// - publish allow exists whenever the list is present (an empty list
    ///   denies everything); publish deny exists when non-empty;
    /// - a response permission with no or an empty publish allow list makes
    ///   the allow list an explicit empty list (only tracked replies may be
    ///   published); `max` 0 → 1, `ttl` 0 → 2 minutes, negative → unlimited;
    /// - subscribe allow exists only when the list is non-empty; subscribe
    ///   deny when non-empty; subscribe entries are `"<subject> [queue]"`,
    ///   split on whitespace;
    /// - entries that are not valid subjects (or subscribe entries with more
    ///   than two fields) are skipped and reported. An allow list whose
    ///   entries are all invalid still exists and denies everything.
    pub fn compile_with_warnings(spec: &PermissionSpec) -> (Permissions, Vec<CompileWarning>) {
        let mut warnings = Vec::new();
        let mut permissions = Permissions::default();

        if let Some(publish) = &spec.publish {
            if let Some(allow) = &publish.allow {
                permissions.publish_allow =
                    Some(compile_publish(allow, "publish.allow", &mut warnings));
            }
            if !publish.deny.is_empty() {
                permissions.publish_deny = Some(compile_publish(
                    &publish.deny,
                    "publish.deny",
                    &mut warnings,
                ));
            }
        }

        if let Some(responses) = spec.responses {
            if permissions
                .publish_allow
                .as_ref()
                .is_none_or(Matcher::is_empty)
            {
                permissions.publish_allow = Some(Matcher::new());
            }
            permissions.responses = Some(ResponseLimits::from_spec(responses));
        }

        if let Some(subscribe) = &spec.subscribe {
            if let Some(allow) = subscribe.allow.as_ref().filter(|a| !a.is_empty()) {
                let mut matcher = Matcher::new();
                for entry in allow {
                    insert_subscribe(&mut matcher, entry, "subscribe.allow", &mut warnings);
                }
                permissions.subscribe_allow = Some(matcher);
            }
            if !subscribe.deny.is_empty() {
                let mut matcher = Matcher::new();
                for entry in &subscribe.deny {
                    if let Some((subject, _)) =
                        insert_subscribe(&mut matcher, entry, "subscribe.deny", &mut warnings)
                    {
                        permissions
                            .subscribe_deny_subjects
                            .push(subject.as_bytes().into());
                    }
                }
                permissions.subscribe_deny = Some(matcher);
            }
        }

        (permissions, warnings)
    }

    /// No permissions at all: everything is allowed (except what nats-server
    /// refuses for everyone: reserved prefixes, queue `_sys_`).
    pub fn unrestricted() -> Permissions {
        Permissions::default()
    }

    /// The response permission, with defaults resolved.
    pub fn responses(&self) -> Option<ResponseLimits> {
        self.responses
    }

    /// The static publish check: allow (if present) must match, deny must
    /// not. Does not consult the response table or the reserved prefixes.
    pub fn publish_allowed(&self, subject: &[u8]) -> bool {
        if let Some(allow) = &self.publish_allow
            && !allow.matches(subject)
        {
            return false;
        }
        !self
            .publish_deny
            .as_ref()
            .is_some_and(|deny| deny.matches(subject))
    }

    /// The complete subscribe check of spec 4.4, including queue `_sys_`.
    /// Pure: does not arm any delivery filter (see
    /// [`Authorizer::check_subscribe`]).
    pub fn subscribe_allowed(&self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        let queue = queue.filter(|q| !q.is_empty());
        self.can_subscribe(subject, queue) && queue != Some(SYSTEM_QUEUE)
    }

    /// Whether the user may receive every message on every subject that
    /// `pattern` (a consumer filter, a stream subject) matches: the
    /// subscribe allow list (if any) covers it as a set, and no subscribe
    /// deny entry overlaps it. Entries with a queue group count for neither
    /// (a plain subscription ignores them). Stricter than
    /// [`Permissions::subscribe_allowed`], which follows nats-server's
    /// token-wise rule (allow `foo.*` admits `SUB foo.>`). False for an
    /// invalid `pattern`.
    pub fn may_read_all(&self, pattern: &[u8]) -> bool {
        subject::is_valid_subject(pattern)
            && self
                .subscribe_allow
                .as_ref()
                .is_none_or(|allow| allow.covers(pattern))
            && !self
                .subscribe_deny
                .as_ref()
                .is_some_and(|deny| deny.overlaps(pattern))
    }

    /// Whether the user may receive some message on a subject `pattern`
    /// matches: the subscribe allow list (if any) overlaps it and no
    /// subscribe deny entry covers it. Errs towards true where the overlap
    /// lies inside deny entries that do not cover `pattern` as a whole
    /// (allow `a.b.>` with deny `a.b.c`: `a.*.c` is true). False for an
    /// invalid `pattern`.
    pub fn may_read_some(&self, pattern: &[u8]) -> bool {
        subject::is_valid_subject(pattern)
            && self
                .subscribe_allow
                .as_ref()
                .is_none_or(|allow| allow.overlaps(pattern))
            && !self
                .subscribe_deny
                .as_ref()
                .is_some_and(|deny| deny.covers(pattern))
    }

    /// Whether the user may publish on every subject `pattern` matches (the
    /// publish lists only, as sets; tracked replies do not count).
    pub fn may_publish_all(&self, pattern: &[u8]) -> bool {
        subject::is_valid_subject(pattern)
            && self
                .publish_allow
                .as_ref()
                .is_none_or(|allow| allow.covers(pattern))
            && !self
                .publish_deny
                .as_ref()
                .is_some_and(|deny| deny.overlaps(pattern))
    }

    /// Whether there is a publish allow or deny list.
    pub fn has_publish_rules(&self) -> bool {
        self.publish_allow.is_some() || self.publish_deny.is_some()
    }

    /// Whether there is a subscribe deny list.
    pub fn has_subscribe_deny(&self) -> bool {
        self.subscribe_deny.is_some()
    }

    /// `canSubscribe` without the `_sys_` rule. `queue` is `None` or
    /// non-empty.
    fn can_subscribe(&self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        if let Some(allow) = &self.subscribe_allow {
            let matched = allow.match_with_queue(subject, queue);
            let allowed = if queue.is_some() && matched.queue_entries {
                matched.queue_matched
            } else {
                matched.plain
            };
            if !allowed {
                return false;
            }
        }
        let Some(deny) = &self.subscribe_deny else {
            return true;
        };
        let matched = deny.match_with_queue(subject, queue);
        !(matched.plain || matched.queue_matched)
    }

    /// Whether a subscription on `subject` (already allowed) arms the
    /// delivery filter: a wildcard or queue subscription whose subject can
    /// collide with a subscribe deny entry (spec 4.5).
    fn arms_delivery_filter(&self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        self.subscribe_deny.is_some()
            && (queue.is_some() || subject::has_wildcard(subject))
            && self
                .subscribe_deny_subjects
                .iter()
                .any(|deny| subject::subjects_collide(deny, subject))
    }
}

impl ResponseLimits {
    /// nats-server's defaults: 0 → 1 reply / 2 minutes; negative → no limit.
    pub fn from_spec(spec: ResponseSpec) -> ResponseLimits {
        let max = match spec.max {
            0 => Some(DEFAULT_RESPONSE_MAX),
            n if n < 0 => None,
            n => Some(n.unsigned_abs()),
        };
        let ttl = match spec.ttl_nanos {
            0 => Some(DEFAULT_RESPONSE_TTL),
            n if n < 0 => None,
            n => Some(Duration::from_nanos(n.unsigned_abs())),
        };
        ResponseLimits { max, ttl }
    }
}

// === impl Authorizer ===

/// Per-connection authorizer: the shared [`Permissions`] plus bounded
/// per-connection caches and the response table. Pure: no I/O, no logging,
/// no locks; time is passed in.
#[derive(Debug)]
pub struct Authorizer {
    permissions: Arc<Permissions>,
    /// Whether the connection's account is the system account (`$NRG.`).
    system_account: bool,
    /// Static publish decisions by subject (allow/deny lists only).
    publish_cache: BoundedCache<bool>,
    /// Delivery-filter verdicts by subject (see [`DeliveryVerdict`]).
    delivery_cache: BoundedCache<DeliveryVerdict>,
    /// nats-server `mperms != nil`: set once a wildcard or queue subscription
    /// could collide with a subscribe deny entry; never unset except by
    /// [`Authorizer::replace_permissions`].
    filter_armed: bool,
    /// Present iff the permissions have a response permission.
    responses: Option<ResponseTable>,
    /// Report-only mode (`[policy]`): [`Authorizer::filter_delivery`]
    /// filters nothing (a user without permissions gets every delivery),
    /// while replies are still tracked so that the checks keep answering
    /// what enforcement would do. The PUB/SUB checks are unchanged; the
    /// session forwards what they refuse (see [`reserved_publish`]).
    report_only: bool,
    /// Deliveries report-only mode let through that the filter would have
    /// dropped, since the last [`Authorizer::take_would_filter`].
    would_filter: u64,
    /// Changes whenever a delivery's verdict may change (see
    /// [`Authorizer::generation`]).
    generation: u64,
}

/// What a delivered subject matched in the subscribe deny list. Cached per
/// subject; the queue comparison depends on the subscription and is redone
/// per delivery when needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DeliveryVerdict {
    plain_denied: bool,
    queue_entries: bool,
}

impl Authorizer {
    pub fn new(permissions: Arc<Permissions>, system_account: bool) -> Authorizer {
        let responses = permissions.responses.map(ResponseTable::new);
        Authorizer {
            permissions,
            system_account,
            publish_cache: BoundedCache::new(DECISION_CACHE_CAPACITY),
            delivery_cache: BoundedCache::new(DECISION_CACHE_CAPACITY),
            filter_armed: false,
            responses,
            report_only: false,
            would_filter: 0,
            generation: 0,
        }
    }

    /// Changes whenever [`Authorizer::filter_delivery`] may decide
    /// differently for a delivery without a reply: new permissions, the
    /// filter armed, report-only mode switched.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether [`Authorizer::filter_delivery`] of a delivery with `reply`
    /// is a pure function of its subject, queue and the
    /// [`Authorizer::generation`]: no response to record, no report-only
    /// count to make.
    pub fn delivery_repeatable(&self, reply: Option<&[u8]>) -> bool {
        !self.report_only && (self.responses.is_none() || reply.is_none_or(<[u8]>::is_empty))
    }

    /// Switches report-only mode on or off (see the field).
    pub fn set_report_only(&mut self, on: bool) {
        self.report_only = on;
        self.generation += 1;
    }

    /// Whether report-only mode is on.
    pub fn report_only(&self) -> bool {
        self.report_only
    }

    /// How many deliveries report-only mode let through that the delivery
    /// filter would have dropped, since the last call.
    pub fn take_would_filter(&mut self) -> u64 {
        std::mem::take(&mut self.would_filter)
    }

    /// The whole publish check in nats-server's order (see the module docs).
    /// Does not allocate when there are no publish rules or on a cache hit.
    pub fn check_publish(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        now: Instant,
    ) -> PublishDecision {
        if has_gateway_reply_prefix(subject) {
            return PublishDecision::DenySubject;
        }
        if self.permissions.has_publish_rules() {
            // A reply in the response table was recorded because the static
            // lists deny it (the table is new with every permission set), so
            // on a cache miss the table is asked first: a reply published to
            // once costs one lookup, and no entry in the publish cache.
            let allowed = match self.publish_cache.get(subject) {
                Some(allowed) => allowed || self.use_reply(subject, now),
                None => {
                    self.use_reply(subject, now) || {
                        let allowed = self.permissions.publish_allowed(subject);
                        self.publish_cache.insert(subject, allowed);
                        allowed
                    }
                }
            };
            if !allowed {
                return PublishDecision::DenySubject;
            }
        }
        if !self.system_account && subject.starts_with(b"$NRG.") {
            return PublishDecision::DenySubject;
        }
        if let Some(reply) = reply
            && is_reserved_reply(reply)
        {
            return PublishDecision::DenyReply;
        }
        PublishDecision::Allow
    }

    /// The subscribe check of spec 4.4 (including queue `_sys_`). As in
    /// nats-server, an allowed wildcard or queue subscription whose subject
    /// can collide with a subscribe deny entry arms the delivery filter
    /// (4.5); the check runs before the `_sys_` refusal, as in
    /// `processSubEx`.
    pub fn check_subscribe(&mut self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        let queue = queue.filter(|q| !q.is_empty());
        let allowed = self.permissions.can_subscribe(subject, queue);
        if allowed && !self.filter_armed && self.permissions.arms_delivery_filter(subject, queue) {
            self.filter_armed = true;
            self.generation += 1;
        }
        allowed && queue != Some(SYSTEM_QUEUE)
    }

    /// Called for every MSG/HMSG the upstream delivers on a subscription
    /// (`sub_queue` is its queue group). Returns false when nats-server would
    /// not have delivered it: the filter is armed and the subject matches a
    /// non-queue subscribe deny entry, or, for a queue subscription, a queue
    /// deny entry whose queue matches `sub_queue`.
    ///
    /// When it returns true, `reply` is non-empty, a response permission
    /// exists and the reply is not already publish-allowed by the static
    /// lists, the reply is recorded in the response table (4.6). Without an
    /// armed filter and without a response permission this does no hashing.
    pub fn filter_delivery(
        &mut self,
        subject: &[u8],
        sub_queue: Option<&[u8]>,
        reply: Option<&[u8]>,
        now: Instant,
    ) -> bool {
        if self.filter_armed && self.delivery_denied(subject, sub_queue) {
            if !self.report_only {
                return false;
            }
            self.would_filter += 1;
        }
        if self.responses.is_none() {
            return true;
        }
        let Some(reply) = reply.filter(|r| !r.is_empty()) else {
            return true;
        };
        // nats-server asks its *full* publish check whether the reply is
        // already allowed, and that check uses up a tracked entry: so a
        // reply delivered again while tracked costs one response, and only
        // an untracked (or used-up) reply is recorded afresh. Observed on
        // nats-server 2.15.1: two deliveries with `max: 3` allow 2 replies.
        // Replies are mostly unique inboxes: the static decision is looked up
        // but not cached (`check_publish` finds a recorded reply in the
        // response table).
        let statically_allowed = !self.permissions.has_publish_rules()
            || self
                .publish_cache
                .get(reply)
                .unwrap_or_else(|| self.permissions.publish_allowed(reply));
        if !statically_allowed
            && let Some(table) = self.responses.as_mut()
            && !table.use_reply(reply, now)
        {
            table.record(reply, now);
        }
        true
    }

    /// Uses up one response of a tracked reply (false when untracked).
    fn use_reply(&mut self, subject: &[u8], now: Instant) -> bool {
        self.responses
            .as_mut()
            .is_some_and(|table| table.use_reply(subject, now))
    }

    /// Swaps in new permissions (config reload). Clears both caches, disarms
    /// the delivery filter and starts a new, empty response table (as
    /// nats-server's `setPermissions` does). The caller must re-run
    /// [`Authorizer::check_subscribe`] for every existing subscription, as
    /// nats-server does on reload: that both finds the subscriptions to drop
    /// and re-arms the filter.
    pub fn replace_permissions(&mut self, permissions: Arc<Permissions>) {
        self.responses = permissions.responses.map(ResponseTable::new);
        self.permissions = permissions;
        self.publish_cache.clear();
        self.delivery_cache.clear();
        self.filter_armed = false;
        self.generation += 1;
    }

    pub fn permissions(&self) -> &Arc<Permissions> {
        &self.permissions
    }

    /// Whether the delivery filter is armed (for tests and metrics).
    pub fn delivery_filter_armed(&self) -> bool {
        self.filter_armed
    }

    fn delivery_denied(&mut self, subject: &[u8], sub_queue: Option<&[u8]>) -> bool {
        let Some(deny) = &self.permissions.subscribe_deny else {
            return false;
        };
        let verdict = match self.delivery_cache.get(subject) {
            Some(verdict) => verdict,
            None => {
                let matched = deny.match_with_queue(subject, None);
                let verdict = DeliveryVerdict {
                    plain_denied: matched.plain,
                    queue_entries: matched.queue_entries,
                };
                self.delivery_cache.insert(subject, verdict);
                verdict
            }
        };
        if verdict.plain_denied {
            return true;
        }
        match sub_queue.filter(|q| !q.is_empty()) {
            Some(queue) if verdict.queue_entries => {
                deny.match_with_queue(subject, Some(queue)).queue_matched
            }
            _ => false,
        }
    }
}

/// The publish check of a user without any permissions: only the prefixes
/// nats-server refuses for everyone (steps 1, 3 and 4 of the module docs).
/// What a report-only user gets.
pub fn reserved_publish(
    subject: &[u8],
    reply: Option<&[u8]>,
    system_account: bool,
) -> PublishDecision {
    if has_gateway_reply_prefix(subject) || (!system_account && subject.starts_with(b"$NRG.")) {
        return PublishDecision::DenySubject;
    }
    if reply.is_some_and(is_reserved_reply) {
        return PublishDecision::DenyReply;
    }
    PublishDecision::Allow
}

/// The subscribe check of a user without any permissions: only queue
/// `_sys_` is refused. What a report-only user gets.
pub fn reserved_subscribe(queue: Option<&[u8]>) -> bool {
    queue != Some(SYSTEM_QUEUE)
}

/// `_GR_.` (longer than 5 bytes) or, since 2.15.1, `$GR.` (longer than 4):
/// gateway-routed reply prefixes that clients may not publish to.
fn has_gateway_reply_prefix(subject: &[u8]) -> bool {
    (subject.len() > 5 && subject.starts_with(b"_GR_."))
        || (subject.len() > 4 && subject.starts_with(b"$GR."))
}

/// `isReservedReply`: `_R_.` (any length, even alone: `len > 3` always holds),
/// `$JS.ACK.` longer than 8, and the gateway prefixes.
fn is_reserved_reply(reply: &[u8]) -> bool {
    reply.starts_with(b"_R_.")
        || (reply.len() > 8 && reply.starts_with(b"$JS.ACK."))
        || has_gateway_reply_prefix(reply)
}

fn compile_publish(
    entries: &[String],
    list: &'static str,
    warnings: &mut Vec<CompileWarning>,
) -> Matcher {
    let mut matcher = Matcher::new();
    for entry in entries {
        if !matcher.insert(entry.as_bytes(), None) {
            warnings.push(CompileWarning {
                list,
                entry: entry.clone(),
                reason: "not a valid subject",
            });
        }
    }
    matcher
}

/// Inserts a `"<subject> [queue]"` entry (`splitSubjectQueue`: Go
/// `strings.Fields`, which splits on Unicode white space like
/// `split_whitespace`). Returns the parts when inserted.
fn insert_subscribe<'a>(
    matcher: &mut Matcher,
    entry: &'a str,
    list: &'static str,
    warnings: &mut Vec<CompileWarning>,
) -> Option<(&'a str, Option<&'a str>)> {
    let mut fields = entry.split_whitespace();
    let (subject, queue) = match (fields.next(), fields.next(), fields.next()) {
        (Some(subject), queue, None) => (subject, queue),
        (None, _, _) => {
            warnings.push(CompileWarning {
                list,
                entry: entry.to_owned(),
                reason: "empty entry",
            });
            return None;
        }
        (Some(_), _, Some(_)) => {
            warnings.push(CompileWarning {
                list,
                entry: entry.to_owned(),
                reason: "more than a subject and a queue",
            });
            return None;
        }
    };
    if !matcher.insert(subject.as_bytes(), queue.map(str::as_bytes)) {
        warnings.push(CompileWarning {
            list,
            entry: entry.to_owned(),
            reason: "not a valid subject",
        });
        return None;
    }
    Some((subject, queue))
}

/// Queue group name that clients may never use.
const SYSTEM_QUEUE: &[u8] = b"_sys_";
/// `DEFAULT_ALLOW_RESPONSE_MAX_MSGS`.
const DEFAULT_RESPONSE_MAX: u64 = 1;
/// `DEFAULT_ALLOW_RESPONSE_EXPIRATION`.
const DEFAULT_RESPONSE_TTL: Duration = Duration::from_secs(120);
/// Entries per per-connection decision cache (publish decisions and
/// delivery-filter verdicts each).
pub const DECISION_CACHE_CAPACITY: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| (*e).to_owned()).collect()
    }

    fn rules(allow: Option<&[&str]>, deny: &[&str]) -> Option<SubjectRules> {
        Some(SubjectRules {
            allow: allow.map(list),
            deny: list(deny),
        })
    }

    fn sub_perms(allow: Option<&[&str]>, deny: &[&str]) -> Permissions {
        Permissions::compile(&PermissionSpec {
            subscribe: rules(allow, deny),
            ..Default::default()
        })
    }

    fn pub_perms(allow: Option<&[&str]>, deny: &[&str]) -> Permissions {
        Permissions::compile(&PermissionSpec {
            publish: rules(allow, deny),
            ..Default::default()
        })
    }

    fn authorizer(permissions: Permissions) -> Authorizer {
        Authorizer::new(Arc::new(permissions), false)
    }

    fn with_responses(publish: Option<SubjectRules>, max: i64, ttl_nanos: i64) -> Authorizer {
        authorizer(Permissions::compile(&PermissionSpec {
            publish,
            subscribe: None,
            responses: Some(ResponseSpec { max, ttl_nanos }),
        }))
    }

    use PublishDecision::{Allow, DenyReply, DenySubject};

    // --- 4.2: every row of the table, through the real checks ---

    #[test]
    fn table_4_2_subscribe_allow() {
        let p = sub_perms(Some(&["foo.*"]), &[]);
        assert!(p.subscribe_allowed(b"foo.>", None));
        let p = sub_perms(Some(&["c.*"]), &[]);
        assert!(p.subscribe_allowed(b"c.>", None));
        let p = sub_perms(Some(&["a.*.c"]), &[]);
        for s in ["a.>", "a.*.>", "a.b.>"] {
            assert!(!p.subscribe_allowed(s.as_bytes(), None), "{s}");
        }
        let p = sub_perms(Some(&["b.>"]), &[]);
        assert!(p.subscribe_allowed(b"b.*", None));
        assert!(p.subscribe_allowed(b"b.>", None));
        let p = sub_perms(Some(&["foo.bar"]), &[]);
        assert!(!p.subscribe_allowed(b"foo.*", None));
    }

    #[test]
    fn table_4_2_publish_allow() {
        let mut a = authorizer(pub_perms(Some(&["a.*"]), &[]));
        let now = Instant::now();
        assert_eq!(a.check_publish(b"a.*", None, now), Allow);
        assert_eq!(a.check_publish(b"a.>", None, now), Allow);
        let mut a = authorizer(pub_perms(Some(&["c"]), &[]));
        assert_eq!(a.check_publish(b"c.>", None, now), DenySubject);
        assert_eq!(a.check_publish(b"c", None, now), Allow);
    }

    #[test]
    fn table_4_2_subscribe_deny() {
        let p = sub_perms(None, &["secret.>"]);
        assert!(!p.subscribe_allowed(b"secret.*", None));
        assert!(!p.subscribe_allowed(b"secret.>", None));
        assert!(p.subscribe_allowed(b">", None));
        assert!(p.subscribe_allowed(b"*.x", None));
        let p = sub_perms(None, &["foo.*"]);
        assert!(!p.subscribe_allowed(b"foo.>", None));
        let p = sub_perms(None, &["*"]);
        assert!(!p.subscribe_allowed(b">", None));
    }

    #[test]
    fn table_4_2_publish_deny() {
        let mut a = authorizer(pub_perms(None, &["foo.*"]));
        let now = Instant::now();
        assert_eq!(a.check_publish(b"foo.>", None, now), DenySubject);
        assert_eq!(a.check_publish(b"foo.*", None, now), DenySubject);
        assert_eq!(a.check_publish(b"foo.a.b", None, now), Allow);
    }

    #[test]
    fn invalid_checked_subjects_with_allow_list() {
        // `SUB foo..b` with allow `foo.>` is a permission error; `a.>.c` with
        // allow `a.*.c` passes the permission check (then Invalid Subject).
        assert!(!sub_perms(Some(&["foo.>"]), &[]).subscribe_allowed(b"foo..b", None));
        assert!(sub_perms(Some(&["a.*.c"]), &[]).subscribe_allowed(b"a.>.c", None));
        assert!(Permissions::unrestricted().subscribe_allowed(b"foo..b", None));
    }

    // --- 4.4 ---

    #[test]
    fn queue_allow_entries() {
        let p = sub_perms(Some(&["foo", "foo v1"]), &[]);
        assert!(p.subscribe_allowed(b"foo", None));
        assert!(p.subscribe_allowed(b"foo", Some(b"v1")));
        assert!(!p.subscribe_allowed(b"foo", Some(b"v2")));
        // A non-queue allow alone allows any queue.
        let p = sub_perms(Some(&["bar"]), &[]);
        assert!(p.subscribe_allowed(b"bar", Some(b"anything")));
    }

    #[test]
    fn plain_sub_denied_when_only_queue_allow_matches() {
        let p = sub_perms(Some(&["q.> grp"]), &[]);
        assert!(!p.subscribe_allowed(b"q.x", None));
        assert!(p.subscribe_allowed(b"q.x", Some(b"grp")));
        assert!(!p.subscribe_allowed(b"q.x", Some(b"other")));
    }

    #[test]
    fn queue_wildcard_matching() {
        let p = sub_perms(Some(&["foo g.*"]), &[]);
        assert!(p.subscribe_allowed(b"foo", Some(b"g.1")));
        assert!(p.subscribe_allowed(b"foo", Some(b"g.*")));
        assert!(!p.subscribe_allowed(b"foo", Some(b"g.>")));
        assert!(!p.subscribe_allowed(b"foo", Some(b"g")));
    }

    #[test]
    fn queue_deny_entries() {
        // Checked against nats-server 2.15.1 (deny `both` + `both grp`).
        let p = sub_perms(None, &["both", "both grp", "qd grp", "qw g.*"]);
        assert!(!p.subscribe_allowed(b"both", None));
        assert!(
            !p.subscribe_allowed(b"both", Some(b"other")),
            "non-queue deny wins"
        );
        assert!(!p.subscribe_allowed(b"both", Some(b"grp")));
        assert!(
            p.subscribe_allowed(b"qd", None),
            "queue deny does not deny plain subs"
        );
        assert!(!p.subscribe_allowed(b"qd", Some(b"grp")));
        assert!(p.subscribe_allowed(b"qd", Some(b"grp2")));
        assert!(!p.subscribe_allowed(b"qw", Some(b"g.1")));
        assert!(p.subscribe_allowed(b"qw", Some(b"g.>")));
    }

    #[test]
    fn sys_queue_always_refused() {
        assert!(!Permissions::unrestricted().subscribe_allowed(b"foo", Some(b"_sys_")));
        let mut a = authorizer(Permissions::unrestricted());
        assert!(!a.check_subscribe(b"foo", Some(b"_sys_")));
        assert!(a.check_subscribe(b"foo", Some(b"_sys")));
        assert!(a.check_subscribe(b"foo", None));
    }

    // --- 4.1 ---

    #[test]
    fn response_permission_with_only_deny_denies_everything_else() {
        let now = Instant::now();
        let mut a = with_responses(rules(None, &["x"]), 0, 0);
        assert_eq!(a.check_publish(b"anything", None, now), DenySubject);
        assert!(a.filter_delivery(b"svc", None, Some(b"_INBOX.1"), now));
        assert_eq!(a.check_publish(b"_INBOX.1", None, now), Allow);
        assert_eq!(
            a.check_publish(b"_INBOX.1", None, now),
            DenySubject,
            "default max is 1"
        );
    }

    #[test]
    fn response_permission_without_publish_section() {
        let now = Instant::now();
        let mut a = with_responses(None, 0, 0);
        assert!(a.permissions().has_publish_rules());
        assert_eq!(a.check_publish(b"foo", None, now), DenySubject);
    }

    #[test]
    fn response_permission_keeps_a_non_empty_allow_list() {
        let now = Instant::now();
        let mut a = with_responses(rules(Some(&["ok.>"]), &[]), 0, 0);
        assert_eq!(a.check_publish(b"ok.1", None, now), Allow);
        assert_eq!(a.check_publish(b"no", None, now), DenySubject);
    }

    #[test]
    fn response_defaults() {
        let p = Permissions::compile(&PermissionSpec {
            responses: Some(ResponseSpec::DEFAULT),
            ..Default::default()
        });
        assert_eq!(
            p.responses(),
            Some(ResponseLimits {
                max: Some(1),
                ttl: Some(Duration::from_secs(120))
            })
        );
        let limits = ResponseLimits::from_spec(ResponseSpec {
            max: -1,
            ttl_nanos: -5,
        });
        assert_eq!(
            limits,
            ResponseLimits {
                max: None,
                ttl: None
            }
        );
        let limits = ResponseLimits::from_spec(ResponseSpec {
            max: 3,
            ttl_nanos: 1_500,
        });
        assert_eq!(
            limits,
            ResponseLimits {
                max: Some(3),
                ttl: Some(Duration::from_nanos(1_500))
            }
        );
        assert_eq!(Permissions::unrestricted().responses(), None);
    }

    #[test]
    fn explicit_empty_publish_allow_denies_everything() {
        let mut a = authorizer(pub_perms(Some(&[]), &[]));
        assert_eq!(a.check_publish(b"foo", None, Instant::now()), DenySubject);
        let p = pub_perms(None, &[]);
        assert!(!p.has_publish_rules(), "empty deny and no allow: no rules");
    }

    #[test]
    fn empty_subscribe_allow_allows_everything() {
        let p = sub_perms(Some(&[]), &[]);
        assert!(p.subscribe_allowed(b"anything", None));
        assert!(!p.has_subscribe_deny());
    }

    #[test]
    fn invalid_entries_are_skipped_and_reported() {
        let (p, warnings) = Permissions::compile_with_warnings(&PermissionSpec {
            publish: rules(Some(&["foo..bar", "ok"]), &["a.>.b"]),
            subscribe: rules(Some(&["x..y", "q a b", ""]), &["bad. grp"]),
            responses: None,
        });
        assert_eq!(warnings.len(), 6, "{warnings:?}");
        assert_eq!(warnings[5].reason, "not a valid subject");
        assert_eq!(warnings[4].reason, "empty entry");
        assert_eq!(warnings[0].list, "publish.allow");
        assert_eq!(warnings[0].entry, "foo..bar");
        assert!(warnings[0].to_string().contains("foo..bar"));
        assert!(p.publish_allowed(b"ok"));
        assert!(!p.publish_allowed(b"foo..bar"));
        // Every subscribe allow entry was invalid: the list still exists and
        // denies everything.
        assert!(!p.subscribe_allowed(b"anything", None));
        assert!(!p.subscribe_allowed(b"x..y", None));
        // The deny list exists (it was non-empty) but holds nothing.
        assert!(p.has_subscribe_deny());
    }

    #[test]
    fn subscribe_entries_split_on_any_white_space() {
        let p = sub_perms(Some(&["  foo\tv1 ", "bar"]), &[]);
        assert!(p.subscribe_allowed(b"foo", Some(b"v1")));
        assert!(!p.subscribe_allowed(b"foo", None));
        assert!(!p.subscribe_allowed(b"foo", Some(b"v2")));
    }

    // --- 4.3 ---

    #[test]
    fn gateway_subject_prefixes_need_more_than_the_prefix() {
        let now = Instant::now();
        let mut a = authorizer(Permissions::unrestricted());
        assert_eq!(a.check_publish(b"_GR_.x", None, now), DenySubject);
        assert_eq!(a.check_publish(b"_GR_.", None, now), Allow);
        assert_eq!(a.check_publish(b"$GR.x", None, now), DenySubject);
        assert_eq!(a.check_publish(b"$GR.", None, now), Allow);
        assert_eq!(a.check_publish(b"_GR_x", None, now), Allow);
    }

    #[test]
    fn nrg_prefix_outside_system_account() {
        let now = Instant::now();
        let mut a = authorizer(Permissions::unrestricted());
        assert_eq!(a.check_publish(b"$NRG.x", None, now), DenySubject);
        assert_eq!(a.check_publish(b"$NRG.", None, now), DenySubject);
        assert_eq!(a.check_publish(b"$NRG", None, now), Allow);
        let mut system = Authorizer::new(Arc::new(Permissions::unrestricted()), true);
        assert_eq!(system.check_publish(b"$NRG.x", None, now), Allow);
    }

    #[test]
    fn reserved_reply_prefixes_and_lengths() {
        // All checked against nats-server 2.15.1.
        let now = Instant::now();
        let mut a = authorizer(Permissions::unrestricted());
        let cases: &[(&[u8], PublishDecision)] = &[
            (b"_R_.", DenyReply),
            (b"_R_.x", DenyReply),
            (b"_R_", Allow),
            (b"$JS.ACK.", Allow),
            (b"$JS.ACK.x", DenyReply),
            (b"_GR_.", Allow),
            (b"_GR_.x", DenyReply),
            (b"$GR.", Allow),
            (b"$GR.x", DenyReply),
            (b"_INBOX.x", Allow),
            (b"", Allow),
        ];
        for &(reply, expected) in cases {
            assert_eq!(
                a.check_publish(b"x", Some(reply), now),
                expected,
                "{}",
                String::from_utf8_lossy(reply)
            );
        }
    }

    #[test]
    fn reply_is_never_checked_against_publish_lists() {
        let mut a = authorizer(pub_perms(None, &["b"]));
        assert_eq!(a.check_publish(b"a", Some(b"b"), Instant::now()), Allow);
    }

    #[test]
    fn subject_violation_comes_before_reply_violation() {
        let now = Instant::now();
        let mut a = authorizer(pub_perms(Some(&["ok"]), &[]));
        assert_eq!(a.check_publish(b"no", Some(b"_R_.x"), now), DenySubject);
        assert_eq!(a.check_publish(b"ok", Some(b"_R_.x"), now), DenyReply);
        let mut a = authorizer(Permissions::unrestricted());
        assert_eq!(a.check_publish(b"$NRG.x", Some(b"_R_.x"), now), DenySubject);
    }

    #[test]
    fn response_table_is_consulted_between_gateway_and_nrg_checks() {
        let now = Instant::now();
        let mut a = with_responses(None, 1, 0);
        // A gateway-prefixed subject is refused before the table is used.
        a.filter_delivery(b"svc", None, Some(b"_GR_.r"), now);
        assert_eq!(a.check_publish(b"_GR_.r", None, now), DenySubject);
        // ...so the entry was not consumed: the table still has it.
        assert_eq!(a.responses.as_ref().map(ResponseTable::len), Some(1));
        // `$NRG.` is checked after the table: the use is consumed.
        a.filter_delivery(b"svc", None, Some(b"$NRG.r"), now);
        assert_eq!(a.check_publish(b"$NRG.r", None, now), DenySubject);
        a.filter_delivery(b"svc", None, Some(b"$NRG.r"), now);
        // A tracked reply with a reserved reply of its own.
        a.filter_delivery(b"svc", None, Some(b"resp.1"), now);
        assert_eq!(a.check_publish(b"resp.1", Some(b"_R_.z"), now), DenyReply);
        assert_eq!(
            a.check_publish(b"resp.1", None, now),
            DenySubject,
            "the use was consumed"
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let now = Instant::now();
        let mut a = authorizer(pub_perms(Some(&["foo.>"]), &["foo.secret"]));
        assert_eq!(a.check_publish(b"foo.x", None, now), Allow);
        assert_eq!(a.check_publish(b"foo.secret", None, now), DenySubject);
        assert_eq!(a.check_publish(b"bar", None, now), DenySubject);
        // Cached answers are the same.
        assert_eq!(a.check_publish(b"foo.secret", None, now), DenySubject);
        assert_eq!(a.check_publish(b"foo.x", None, now), Allow);
    }

    // --- 4.5 ---

    #[test]
    fn delivery_filter_arming() {
        let mut a = authorizer(sub_perms(None, &["secret.>"]));
        assert!(a.check_subscribe(b"foo", None));
        assert!(!a.delivery_filter_armed(), "literal plain sub does not arm");
        assert!(a.check_subscribe(b"other.*", None));
        assert!(
            !a.delivery_filter_armed(),
            "wildcard that cannot collide does not arm"
        );
        assert!(!a.check_subscribe(b"secret.x", None));
        assert!(!a.delivery_filter_armed(), "denied subs do not arm");
        // Unarmed: everything is delivered.
        assert!(a.filter_delivery(b"secret.x", None, None, Instant::now()));
        assert!(a.check_subscribe(b">", None));
        assert!(a.delivery_filter_armed());
        assert!(!a.filter_delivery(b"secret.x", None, None, Instant::now()));
        assert!(a.filter_delivery(b"foo", None, None, Instant::now()));
        // Once armed, it applies to every delivery.
        assert!(!a.filter_delivery(b"secret.y", Some(b"q"), None, Instant::now()));
    }

    #[test]
    fn queue_subscription_arms_the_filter() {
        let mut a = authorizer(sub_perms(None, &["qd grp"]));
        assert!(a.check_subscribe(b"qd", Some(b"grp2")));
        assert!(a.delivery_filter_armed());
        let mut a = authorizer(sub_perms(None, &["qd grp"]));
        assert!(a.check_subscribe(b"other", Some(b"grp")));
        assert!(!a.delivery_filter_armed(), "no collision");
    }

    #[test]
    fn no_deny_list_never_arms() {
        let mut a = authorizer(sub_perms(Some(&[">"]), &[]));
        assert!(a.check_subscribe(b">", Some(b"q")));
        assert!(!a.delivery_filter_armed());
    }

    #[test]
    fn queue_deny_at_delivery() {
        // Mirrors what nats-server 2.15.1 did with deny ["secret.>", "qd grp", "qw g.*"].
        let now = Instant::now();
        let mut a = authorizer(sub_perms(None, &["secret.>", "qd grp", "qw g.*"]));
        assert!(a.check_subscribe(b">", Some(b"grp")));
        assert!(!a.filter_delivery(b"qd", Some(b"grp"), None, now));
        assert!(a.filter_delivery(b"qw", Some(b"grp"), None, now));
        assert!(a.filter_delivery(b"foo", Some(b"grp"), None, now));
        assert!(!a.filter_delivery(b"qw", Some(b"g.1"), None, now));
        assert!(a.filter_delivery(b"qw", Some(b"g.>"), None, now));
        assert!(a.filter_delivery(b"qd", Some(b"grp2"), None, now));
        assert!(
            a.filter_delivery(b"qd", None, None, now),
            "plain subs ignore queue entries"
        );
        assert!(!a.filter_delivery(b"secret.1", None, None, now));
    }

    // --- 4.6 ---

    #[test]
    fn response_max_two() {
        let now = Instant::now();
        let mut a = with_responses(None, 2, 0);
        a.filter_delivery(b"svc", None, Some(b"r"), now);
        assert_eq!(a.check_publish(b"r", None, now), Allow);
        assert_eq!(a.check_publish(b"r", None, now), Allow);
        assert_eq!(a.check_publish(b"r", None, now), DenySubject);
    }

    /// nats-server 2.15.1: a reply delivered again while tracked uses up one
    /// response (found by the differential test: two deliveries with max 3
    /// allow 2 replies; with max 1, none).
    #[test]
    fn a_repeated_delivery_of_a_tracked_reply_costs_one_response() {
        let now = Instant::now();
        let mut a = with_responses(None, 3, 0);
        a.filter_delivery(b"svc", None, Some(b"r"), now);
        a.filter_delivery(b"svc", None, Some(b"r"), now);
        assert_eq!(a.check_publish(b"r", None, now), Allow);
        assert_eq!(a.check_publish(b"r", None, now), Allow);
        assert_eq!(a.check_publish(b"r", None, now), DenySubject);

        let mut a = with_responses(None, 1, 0);
        a.filter_delivery(b"svc", None, Some(b"r"), now);
        a.filter_delivery(b"svc", None, Some(b"r"), now);
        assert_eq!(a.check_publish(b"r", None, now), DenySubject);
        // Used up, the next delivery records it afresh.
        a.filter_delivery(b"svc", None, Some(b"r"), now);
        assert_eq!(a.check_publish(b"r", None, now), Allow);
    }

    #[test]
    fn response_negative_max_and_ttl() {
        let now = Instant::now();
        let mut a = with_responses(None, -1, -1);
        a.filter_delivery(b"svc", None, Some(b"r"), now);
        for i in 0..100 {
            let later = now + Duration::from_secs(3600 * i);
            assert_eq!(a.check_publish(b"r", None, later), Allow);
        }
    }

    #[test]
    fn response_ttl_expiry() {
        let start = Instant::now();
        let mut a = with_responses(None, -1, 1_000_000_000);
        a.filter_delivery(b"svc", None, Some(b"r"), start);
        assert_eq!(
            a.check_publish(b"r", None, start + Duration::from_millis(999)),
            Allow
        );
        assert_eq!(
            a.check_publish(b"r", None, start + Duration::from_millis(1001)),
            DenySubject
        );
        // The default ttl is two minutes.
        let mut a = with_responses(None, -1, 0);
        a.filter_delivery(b"svc", None, Some(b"r"), start);
        assert_eq!(
            a.check_publish(b"r", None, start + Duration::from_secs(119)),
            Allow
        );
        assert_eq!(
            a.check_publish(b"r", None, start + Duration::from_secs(121)),
            DenySubject
        );
    }

    #[test]
    fn response_exact_equality() {
        let now = Instant::now();
        let mut a = with_responses(None, -1, -1);
        a.filter_delivery(b"svc", None, Some(b"r.*"), now);
        assert_eq!(a.check_publish(b"r.x", None, now), DenySubject);
        assert_eq!(a.check_publish(b"r.*", None, now), Allow);
    }

    #[test]
    fn replies_already_allowed_or_filtered_are_not_recorded() {
        let now = Instant::now();
        let mut a = authorizer(Permissions::compile(&PermissionSpec {
            publish: rules(Some(&["ok.>"]), &[]),
            subscribe: rules(None, &["secret.>"]),
            responses: Some(ResponseSpec::DEFAULT),
        }));
        a.filter_delivery(b"svc", None, Some(b"ok.reply"), now);
        a.filter_delivery(b"svc", None, Some(b""), now);
        a.filter_delivery(b"svc", None, None, now);
        assert_eq!(a.responses.as_ref().map(ResponseTable::len), Some(0));
        assert!(a.check_subscribe(b">", None));
        assert!(!a.filter_delivery(b"secret.x", None, Some(b"r1"), now));
        assert_eq!(
            a.check_publish(b"r1", None, now),
            DenySubject,
            "filtered: not recorded"
        );
        assert!(a.filter_delivery(b"pub.x", None, Some(b"r2"), now));
        assert_eq!(a.check_publish(b"r2", None, now), Allow);
    }

    #[test]
    fn without_response_permission_nothing_is_recorded() {
        let now = Instant::now();
        let mut a = authorizer(pub_perms(Some(&["ok"]), &[]));
        assert!(a.filter_delivery(b"svc", None, Some(b"r"), now));
        assert_eq!(a.check_publish(b"r", None, now), DenySubject);
    }

    // --- caches and reload ---

    #[test]
    fn publish_cache_is_bounded() {
        let now = Instant::now();
        let mut a = authorizer(pub_perms(Some(&["ok.>"]), &[]));
        for i in 0..(3 * DECISION_CACHE_CAPACITY) {
            let subject = format!("ok.{i}");
            assert_eq!(a.check_publish(subject.as_bytes(), None, now), Allow);
            assert!(a.publish_cache.len() <= DECISION_CACHE_CAPACITY);
        }
        let mut a = authorizer(sub_perms(None, &["x"]));
        assert!(a.check_subscribe(b"*", None));
        for i in 0..(3 * DECISION_CACHE_CAPACITY) {
            assert!(a.filter_delivery(format!("y.{i}").as_bytes(), None, None, now));
            assert!(a.delivery_cache.len() <= DECISION_CACHE_CAPACITY);
        }
    }

    #[test]
    fn replies_stay_out_of_the_publish_cache() {
        let now = Instant::now();
        let mut a = with_responses(rules(Some(&["ok.>"]), &[]), 1, 0);
        for i in 0..100 {
            let reply = format!("_INBOX.{i}");
            assert!(a.filter_delivery(b"svc", None, Some(reply.as_bytes()), now));
            assert_eq!(a.check_publish(reply.as_bytes(), None, now), Allow);
            // Neither the delivery nor the tracked response cached it.
            assert_eq!(a.publish_cache.get(reply.as_bytes()), None);
            // `max: 1`: the second response is refused, and that decision is
            // the static one, now cached.
            assert_eq!(a.check_publish(reply.as_bytes(), None, now), DenySubject);
            assert_eq!(a.publish_cache.get(reply.as_bytes()), Some(false));
        }
        assert_eq!(a.publish_cache.len(), 100);
        // A reply the static lists allow is not recorded, and its publishes
        // are not counted against it.
        assert!(a.filter_delivery(b"svc", None, Some(b"ok.r"), now));
        for _ in 0..3 {
            assert_eq!(a.check_publish(b"ok.r", None, now), Allow);
        }
        // A cached denial still uses a reply recorded afterwards.
        assert_eq!(a.check_publish(b"late", None, now), DenySubject);
        assert!(a.filter_delivery(b"svc", None, Some(b"late"), now));
        assert_eq!(a.check_publish(b"late", None, now), Allow);
        assert_eq!(a.check_publish(b"late", None, now), DenySubject);
    }

    #[test]
    fn unrestricted_fast_paths_touch_no_cache() {
        let now = Instant::now();
        let mut a = authorizer(Permissions::unrestricted());
        assert_eq!(a.check_publish(b"foo", Some(b"bar"), now), Allow);
        assert!(a.filter_delivery(b"foo", None, Some(b"bar"), now));
        assert!(a.publish_cache.is_empty());
        assert!(a.delivery_cache.is_empty());
    }

    #[test]
    fn replace_permissions_clears_everything() {
        let now = Instant::now();
        let mut a = with_responses(rules(None, &["x"]), -1, -1);
        a.filter_delivery(b"svc", None, Some(b"r"), now);
        assert_eq!(a.check_publish(b"foo", None, now), DenySubject);
        a.replace_permissions(Arc::new(pub_perms(None, &["bar"])));
        assert_eq!(
            a.check_publish(b"foo", None, now),
            Allow,
            "cached deny was dropped"
        );
        assert_eq!(a.check_publish(b"bar", None, now), DenySubject);
        assert!(a.responses.is_none());
        let mut a = authorizer(sub_perms(None, &["s.>"]));
        assert!(a.check_subscribe(b">", None));
        assert!(!a.filter_delivery(b"s.1", None, None, now));
        a.replace_permissions(Arc::new(sub_perms(None, &["t.>"])));
        assert!(!a.delivery_filter_armed());
        assert!(a.check_subscribe(b">", None));
        assert!(
            a.filter_delivery(b"s.1", None, None, now),
            "old verdict not reused"
        );
        assert!(!a.filter_delivery(b"t.1", None, None, now));
    }

    #[test]
    fn reserved_checks_are_the_unrestricted_users_checks() {
        let now = Instant::now();
        let subjects: [&[u8]; 9] = [
            b"a", b"_GR_.", b"_GR_.x", b"$GR.", b"$GR.x", b"$NRG.x", b"$NRG.", b"_R_", b"a.>",
        ];
        let replies: [Option<&[u8]>; 7] = [
            None,
            Some(b"r"),
            Some(b"_R_."),
            Some(b"$JS.ACK."),
            Some(b"$JS.ACK.x"),
            Some(b"_GR_.x"),
            Some(b"$GR.x"),
        ];
        for system in [false, true] {
            let mut unrestricted = Authorizer::new(Arc::new(Permissions::unrestricted()), system);
            for subject in subjects {
                for reply in replies {
                    assert_eq!(
                        reserved_publish(subject, reply, system),
                        unrestricted.check_publish(subject, reply, now),
                        "{:?} {:?}",
                        String::from_utf8_lossy(subject),
                        reply.map(String::from_utf8_lossy)
                    );
                }
            }
            for queue in [None, Some(&b"q"[..]), Some(b"_sys_"), Some(b"")] {
                assert_eq!(
                    reserved_subscribe(queue),
                    unrestricted.check_subscribe(b"a", queue)
                );
            }
        }
    }

    #[test]
    fn report_only_delivers_what_the_filter_would_drop_and_tracks_replies() {
        let spec = PermissionSpec {
            publish: rules(Some(&["a"]), &[]),
            subscribe: rules(None, &["t.secret"]),
            responses: Some(ResponseSpec::DEFAULT),
        };
        let now = Instant::now();
        let mut a = Authorizer::new(Arc::new(Permissions::compile(&spec)), false);
        a.set_report_only(true);
        assert!(a.check_subscribe(b"t.*", None));
        assert!(a.delivery_filter_armed());
        assert!(a.filter_delivery(b"t.secret", None, Some(b"_INBOX.r"), now));
        // The reply was tracked: enforcement would allow one response.
        assert_eq!(
            a.check_publish(b"_INBOX.r", None, now),
            PublishDecision::Allow
        );
        assert!(a.filter_delivery(b"t.public", None, None, now));
        assert_eq!(
            a.take_would_filter(),
            1,
            "only t.secret would have been dropped"
        );
        assert_eq!(a.take_would_filter(), 0);
        a.set_report_only(false);
        assert!(!a.filter_delivery(b"t.secret", None, None, now));
        assert_eq!(a.take_would_filter(), 0);
    }
}
