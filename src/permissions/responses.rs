//! The dynamic response permission (`allow_responses` / JWT `resp`, spec 4.6).
//!
//! Owns the per-connection table of reply subjects that were delivered to the
//! client and may be published to a limited number of times within a limited
//! time. Mirrors nats-server's `client.replies`, `deliverMsg` (recording),
//! `pubAllowedFullCheck` (use) and `pruneReplyPerms`. Time is always passed
//! in; nothing here reads a clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

use super::ResponseLimits;

/// Per-connection reply table.
///
/// Bounding: nats-server prunes only entries that used up `max` or outlived
/// `ttl`, so with a negative ttl (or a long one and many requests) it grows
/// without bound. Here, after the regular prune, if the table still holds
/// more than [`MAX_TRACKED_REPLIES`] entries, the older half (by recording
/// time) is dropped. A dropped reply behaves like an expired one: publishing
/// to it is a violation. This is the one deliberate difference from
/// nats-server, and only reachable with more than 65 536 outstanding replies.
#[derive(Debug)]
pub struct ResponseTable {
    limits: ResponseLimits,
    replies: HashMap<Box<[u8]>, Reply, RandomState>,
    /// Replies recorded since the last prune (nats-server prunes after
    /// more than `REPLY_PERM_LIMIT`).
    recorded_since_prune: usize,
    /// When the table was last pruned; `None` until the first recording.
    last_prune: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Reply {
    /// When the reply subject was (last) delivered.
    recorded_at: Instant,
    /// How many times it was published to since then.
    uses: u64,
}

impl ResponseTable {
    pub fn new(limits: ResponseLimits) -> ResponseTable {
        ResponseTable {
            limits,
            replies: HashMap::with_hasher(RandomState::default()),
            recorded_since_prune: 0,
            last_prune: None,
        }
    }

    /// Records a delivered reply subject (exact bytes). Re-recording an
    /// existing reply resets its time and count. Allocates only for a new
    /// reply.
    pub fn record(&mut self, reply: &[u8], now: Instant) {
        let entry = Reply {
            recorded_at: now,
            uses: 0,
        };
        match self.replies.get_mut(reply) {
            Some(existing) => *existing = entry,
            None => {
                self.replies.insert(reply.into(), entry);
            }
        }
        self.recorded_since_prune += 1;
        let last_prune = *self.last_prune.get_or_insert(now);
        if self.recorded_since_prune > REPLY_PERM_LIMIT
            || now.saturating_duration_since(last_prune) > PRUNE_INTERVAL
        {
            self.prune(now);
        }
        if self.replies.len() > MAX_TRACKED_REPLIES {
            self.drop_oldest_half();
        }
    }

    /// Uses a recorded reply for one publish (exact subject equality).
    /// Returns whether the publish is allowed: count += 1; if `max` is
    /// limited and count exceeds it, or `ttl` is limited and the reply is
    /// older than it, the entry is removed and the publish denied.
    pub fn use_reply(&mut self, subject: &[u8], now: Instant) -> bool {
        let Some(reply) = self.replies.get_mut(subject) else {
            return false;
        };
        reply.uses += 1;
        let over_max = self.limits.max.is_some_and(|max| reply.uses > max);
        let expired = self
            .limits
            .ttl
            .is_some_and(|ttl| now.saturating_duration_since(reply.recorded_at) > ttl);
        if over_max || expired {
            self.replies.remove(subject);
            return false;
        }
        true
    }

    /// Drops entries that reached `max` or outlived `ttl` (`pruneReplyPerms`).
    pub fn prune(&mut self, now: Instant) {
        let limits = self.limits;
        self.replies.retain(|_, reply| {
            let used_up = limits.max.is_some_and(|max| reply.uses >= max);
            let expired = limits
                .ttl
                .is_some_and(|ttl| now.saturating_duration_since(reply.recorded_at) > ttl);
            !(used_up || expired)
        });
        self.recorded_since_prune = 0;
        self.last_prune = Some(now);
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    fn drop_oldest_half(&mut self) {
        let mut times: Vec<Instant> = self.replies.values().map(|r| r.recorded_at).collect();
        let middle = times.len() / 2;
        let (_, cutoff, _) = times.select_nth_unstable(middle);
        let cutoff = *cutoff;
        self.replies.retain(|_, reply| reply.recorded_at > cutoff);
    }
}

/// nats-server `replyPermLimit`: prune after more than this many recordings.
const REPLY_PERM_LIMIT: usize = 4096;
/// Prune when more than this much time passed since the last prune.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);
/// Hard bound on the table (see [`ResponseTable`]).
pub const MAX_TRACKED_REPLIES: usize = 65_536;

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: Option<u64>, ttl: Option<Duration>) -> ResponseTable {
        ResponseTable::new(ResponseLimits { max, ttl })
    }

    #[test]
    fn max_one() {
        let now = Instant::now();
        let mut t = table(Some(1), Some(Duration::from_secs(120)));
        assert!(!t.use_reply(b"r", now));
        t.record(b"r", now);
        assert!(t.use_reply(b"r", now));
        assert!(!t.use_reply(b"r", now));
        assert!(t.is_empty(), "exceeding max removes the entry");
    }

    #[test]
    fn max_two() {
        let now = Instant::now();
        let mut t = table(Some(2), None);
        t.record(b"r", now);
        assert!(t.use_reply(b"r", now));
        assert!(t.use_reply(b"r", now));
        assert!(!t.use_reply(b"r", now));
        assert!(!t.use_reply(b"r", now));
    }

    #[test]
    fn unlimited_max() {
        let now = Instant::now();
        let mut t = table(None, None);
        t.record(b"r", now);
        for _ in 0..1000 {
            assert!(t.use_reply(b"r", now));
        }
    }

    #[test]
    fn ttl_expiry() {
        let start = Instant::now();
        let mut t = table(None, Some(Duration::from_secs(10)));
        t.record(b"r", start);
        assert!(
            t.use_reply(b"r", start + Duration::from_secs(10)),
            "age == ttl is still fine"
        );
        assert!(!t.use_reply(b"r", start + Duration::from_secs(11)));
        assert!(t.is_empty());
        // Re-recording resets the clock and the count.
        t.record(b"r", start + Duration::from_secs(20));
        assert!(t.use_reply(b"r", start + Duration::from_secs(25)));
    }

    #[test]
    fn rerecording_resets_count() {
        let now = Instant::now();
        let mut t = table(Some(1), None);
        t.record(b"r", now);
        assert!(t.use_reply(b"r", now));
        t.record(b"r", now);
        assert!(t.use_reply(b"r", now));
        assert!(!t.use_reply(b"r", now));
    }

    #[test]
    fn exact_equality_only() {
        let now = Instant::now();
        let mut t = table(None, None);
        t.record(b"r.*", now);
        assert!(!t.use_reply(b"r.x", now));
        assert!(t.use_reply(b"r.*", now));
    }

    #[test]
    fn prune_after_a_second_drops_used_and_expired() {
        let start = Instant::now();
        let mut t = table(Some(1), Some(Duration::from_millis(500)));
        t.record(b"used", start);
        assert!(t.use_reply(b"used", start));
        t.record(b"old", start);
        t.record(b"fresh", start + Duration::from_millis(900));
        assert_eq!(t.len(), 3);
        // More than 1 s since the first recording: prune runs on record.
        t.record(b"new", start + Duration::from_millis(1100));
        assert_eq!(t.len(), 2, "used and old dropped, fresh and new kept");
        assert!(t.use_reply(b"fresh", start + Duration::from_millis(1200)));
        assert!(t.use_reply(b"new", start + Duration::from_millis(1200)));
    }

    #[test]
    fn prune_after_many_recordings() {
        let now = Instant::now();
        let mut t = table(Some(1), None);
        for i in 0..REPLY_PERM_LIMIT {
            let reply = format!("r.{i}");
            t.record(reply.as_bytes(), now);
            assert!(t.use_reply(reply.as_bytes(), now));
        }
        assert_eq!(t.len(), REPLY_PERM_LIMIT);
        t.record(b"last", now);
        assert_eq!(t.len(), 1, "the 4097th recording triggers a prune");
    }

    #[test]
    fn hard_bound() {
        let start = Instant::now();
        let mut t = table(None, None);
        for i in 0..(MAX_TRACKED_REPLIES + 10) {
            t.record(
                format!("r.{i}").as_bytes(),
                start + Duration::from_nanos(i as u64),
            );
            assert!(t.len() <= MAX_TRACKED_REPLIES);
        }
        let last = format!("r.{}", MAX_TRACKED_REPLIES + 9);
        assert!(t.use_reply(last.as_bytes(), start));
        assert!(
            !t.use_reply(b"r.0", start),
            "the oldest replies were dropped"
        );
    }
}
