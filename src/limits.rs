//! Rate limits as back-pressure, and per-user connection counts (issue 16).
//!
//! A [`TokenBucket`] holds up to `burst` tokens and gains `rate` per second.
//! A session takes one message token and the payload's byte tokens for
//! every PUB/HPUB; when a bucket is short, the session stops reading the
//! client until the tokens are there ([`Rates::take`] says when), so the
//! client sees TCP back-pressure and no error, as from a busy nats-server.
//!
//! [`RateRegistry`] hands out one shared bucket per user (and per account)
//! key, so every connection of a user on this instance draws from the same
//! bucket: limits are counted per natsgate instance, not per cluster.
//!
//! Pure state and arithmetic on `Instant`s; the session decides what to do
//! with a wait, the config decides the numbers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// The shortest pause a throttled session takes: fewer, larger batches
/// than one wake-up per message at high rates.
pub const MIN_PAUSE: Duration = Duration::from_millis(5);

/// A token bucket. Tokens are `f64`: rates are per second, waits are
/// fractions of one.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens gaining `rate` per second (both at
    /// least 1).
    pub fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        let rate = rate.max(1) as f64;
        let burst = burst.max(1) as f64;
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let gained = now.duration_since(self.at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + gained).min(self.burst);
            self.at = now;
        }
    }

    /// How long until `n` tokens may be taken: zero when they may be now.
    /// A take larger than the burst is allowed once the bucket is full (the
    /// bucket then goes into debt), so no message is ever stuck.
    fn wait(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        let need = n.min(self.burst);
        if self.tokens >= need {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((need - self.tokens) / self.rate)
    }

    fn take(&mut self, n: f64) {
        self.tokens -= n;
    }

    /// Takes `n` tokens if it can now.
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        let n = n as f64;
        if self.wait(n, now).is_zero() {
            self.take(n);
            true
        } else {
            false
        }
    }
}

/// The buckets of one key (a user or an account): messages and bytes.
#[derive(Debug)]
pub struct Buckets {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl Buckets {
    fn new(limit: &RateLimit, now: Instant) -> Buckets {
        let bucket = |rate: Option<u64>, burst: Option<u64>| {
            rate.map(|rate| TokenBucket::new(rate, burst.unwrap_or(default_burst(rate)), now))
        };
        Buckets {
            messages: bucket(limit.msgs_per_second, limit.burst_msgs),
            bytes: bucket(limit.bytes_per_second, limit.burst_bytes),
        }
    }

    fn wait(&mut self, bytes: u64, now: Instant) -> Duration {
        let m = self
            .messages
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait(1.0, now));
        let b = self
            .bytes
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait(bytes as f64, now));
        m.max(b)
    }

    fn take(&mut self, bytes: u64) {
        if let Some(b) = &mut self.messages {
            b.take(1.0);
        }
        if let Some(b) = &mut self.bytes {
            b.take(bytes as f64);
        }
    }
}

/// The default burst: a tenth of a second at the rate (at least 1).
pub fn default_burst(rate: u64) -> u64 {
    (rate / 10).max(1)
}

/// A shared bucket set.
pub type Shared = Arc<Mutex<Buckets>>;

/// The buckets a session draws from: its user's and its account's.
#[derive(Debug, Default)]
pub struct Rates {
    user: Option<Shared>,
    account: Option<Shared>,
}

impl Rates {
    pub fn new(user: Option<Shared>, account: Option<Shared>) -> Rates {
        Rates { user, account }
    }

    /// Whether any limit applies.
    pub fn is_limited(&self) -> bool {
        self.user.is_some() || self.account.is_some()
    }

    /// Takes one message of `bytes` payload bytes from every bucket, or
    /// says when it may be taken (taking nothing then). The wait is at
    /// least [`MIN_PAUSE`], so a throttled session wakes for a batch.
    #[inline]
    pub fn take(&self, bytes: u64, now: Instant) -> Result<(), Instant> {
        if self.is_limited() {
            self.take_limited(bytes, now)
        } else {
            Ok(())
        }
    }

    /// [`Rates::take`] with a limit to apply (kept out of line: every PUB
    /// of a session without limits only tests the two options).
    #[inline(never)]
    fn take_limited(&self, bytes: u64, now: Instant) -> Result<(), Instant> {
        // Always user then account: one order, no deadlock.
        let mut user = self.user.as_ref().map(lock);
        let mut account = self.account.as_ref().map(lock);
        let mut wait = Duration::ZERO;
        for buckets in [user.as_deref_mut(), account.as_deref_mut()]
            .into_iter()
            .flatten()
        {
            wait = wait.max(buckets.wait(bytes, now));
        }
        if !wait.is_zero() {
            return Err(now + wait.max(MIN_PAUSE));
        }
        for buckets in [user.as_deref_mut(), account.as_deref_mut()]
            .into_iter()
            .flatten()
        {
            buckets.take(bytes);
        }
        Ok(())
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Buckets> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// One shared bucket set per key, kept while a session holds it.
#[derive(Debug, Default)]
pub struct RateRegistry {
    buckets: Mutex<HashMap<String, Weak<Mutex<Buckets>>>>,
}

impl RateRegistry {
    /// The buckets of `key` under `limit`: the ones already in use by
    /// another session of the same key, or a fresh full set.
    pub fn get(&self, key: &str, limit: &RateLimit, now: Instant) -> Option<Shared> {
        if limit.msgs_per_second.is_none() && limit.bytes_per_second.is_none() {
            return None;
        }
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = map.get(key).and_then(Weak::upgrade) {
            return Some(shared);
        }
        // Forget the keys nobody holds any more before adding one.
        map.retain(|_, weak| weak.strong_count() > 0);
        let shared = Arc::new(Mutex::new(Buckets::new(limit, now)));
        map.insert(key.to_owned(), Arc::downgrade(&shared));
        Some(shared)
    }
}

/// Open connections per user on this instance, for `max_connections`.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    counts: Mutex<HashMap<String, u32>>,
}

impl ConnectionCounts {
    /// Counts a connection of `user`, unless `max` are open already.
    pub fn open(self: &Arc<Self>, user: &str, max: Option<u32>) -> Option<ConnectionSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(user.to_owned()).or_insert(0);
        if max.is_some_and(|max| *count >= max) {
            if *count == 0 {
                counts.remove(user);
            }
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            counts: self.clone(),
            user: user.to_owned(),
        })
    }
}

/// A connection counted in [`ConnectionCounts`]; given back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    user: String,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(msgs: Option<u64>, bytes: Option<u64>) -> RateLimit {
        RateLimit {
            msgs_per_second: msgs,
            bytes_per_second: bytes,
            ..RateLimit::default()
        }
    }

    #[test]
    fn a_bucket_passes_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 100, t0);
        let passed = (0..1000).filter(|_| bucket.try_take(1, t0)).count();
        assert_eq!(passed, 100, "the burst at once");
        // One second later: 1000 more (capped at the burst of 100).
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..1000).filter(|_| bucket.try_take(1, t1)).count();
        assert_eq!(passed, 100, "refill is capped at the burst");
        // Taken in 1 ms steps for a second: the rate.
        let mut passed = 0;
        for ms in 1..=1000 {
            let t = t1 + Duration::from_millis(ms);
            while bucket.try_take(1, t) {
                passed += 1;
            }
        }
        assert!((999..=1001).contains(&passed), "{passed} in one second");
    }

    #[test]
    fn a_message_larger_than_the_burst_passes_once_the_bucket_is_full() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, 100, t0);
        assert!(bucket.try_take(1000, t0), "full bucket: passes, into debt");
        assert!(!bucket.try_take(1, t0 + Duration::from_secs(5)));
        assert!(bucket.try_take(1, t0 + Duration::from_secs(10)));
    }

    #[test]
    fn rates_wait_for_the_slowest_bucket_and_take_from_all() {
        let t0 = Instant::now();
        let registry = RateRegistry::default();
        let user = registry.get("U1", &limit(Some(10), None), t0);
        let account = registry.get("A1", &limit(None, Some(1000)), t0);
        let rates = Rates::new(user, account);
        assert!(rates.is_limited());
        // Burst: 1 message (10/10), 100 bytes (1000/10).
        assert_eq!(rates.take(50, t0), Ok(()));
        let until = rates.take(50, t0).expect_err("message bucket empty");
        assert_eq!(until, t0 + Duration::from_millis(100));
        // After 100 ms: one message token, and 100 bytes (capped).
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(rates.take(100, t1), Ok(()));
        // The byte bucket is now the short one: 100 bytes take 100 ms.
        let t2 = t1 + Duration::from_millis(100);
        assert_eq!(rates.take(100, t2), Ok(()));
        let until = rates.take(1, t2).expect_err("both empty");
        assert!(until >= t2 + MIN_PAUSE);
    }

    #[test]
    fn a_key_shares_its_buckets_while_held_and_is_forgotten_after() {
        let t0 = Instant::now();
        let registry = RateRegistry::default();
        let a = registry.get("U1", &limit(Some(10), None), t0).unwrap();
        let b = registry.get("U1", &limit(Some(10), None), t0).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(registry.get("U1", &limit(None, None), t0).is_none());
        drop((a, b));
        let _c = registry.get("U2", &limit(Some(10), None), t0).unwrap();
        assert_eq!(registry.buckets.lock().unwrap().len(), 1, "U1 forgotten");
    }

    #[test]
    fn connection_counts_stop_at_the_max_and_give_back_on_drop() {
        let counts = Arc::new(ConnectionCounts::default());
        let one = counts.open("U1", Some(2)).unwrap();
        let two = counts.open("U1", Some(2)).unwrap();
        assert!(counts.open("U1", Some(2)).is_none());
        assert!(counts.open("U2", Some(2)).is_some(), "per user");
        drop(one);
        let _three = counts.open("U1", Some(2)).unwrap();
        drop(two);
        assert!(counts.open("U3", Some(0)).is_none());
        assert!(!counts.counts.lock().unwrap().contains_key("U3"));
    }
}
