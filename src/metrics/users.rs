//! Per-user series with a cardinality cap (issue 16).
//!
//! Every connected user has one [`UserStats`] (shared by that user's
//! connections on this instance): plain atomic counters the sessions add to
//! once per read batch, like the totals. Nothing on the relay's path takes
//! a lock or looks up a label.
//!
//! At each scrape [`UserSeries::sync`] picks the top `limit` users by
//! bytes relayed (both directions, since they first connected) and moves
//! what changed since the last scrape into the label vectors: a shown user
//! into its own series, everybody else into `user="other"`. So:
//!
//! - at most `limit + 1` users have series at any time;
//! - every message is counted once: in its user's series while that user
//!   is shown, else in `other` (which only grows);
//! - a user who enters the top N starts its series at 0 from then on (what
//!   it did before is already in `other`); a user who drops out of it, or
//!   leaves and is forgotten, loses its series (Prometheus sees a series
//!   end, as for any target restart).
//!
//! A user with no connection left is forgotten `retention` after its last
//! connection closed. Memory: one entry (about 250 bytes plus the key,
//! name and account strings) per user connected now or within
//! `retention`, and `limit + 1` series per family.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec};

/// The `user` label value of everybody outside the top N.
pub const OTHER_USER: &str = "other";

/// Entries made between two sweeps of users who left, when nobody scrapes.
const SWEEP_EVERY: u64 = 1024;

/// One user's traffic on this instance, shared by its connections.
#[derive(Debug, Default)]
pub struct UserStats {
    msgs_in: AtomicU64,
    bytes_in: AtomicU64,
    msgs_out: AtomicU64,
    bytes_out: AtomicU64,
    violations: AtomicU64,
    connections: AtomicI64,
}

impl UserStats {
    /// `messages` of `bytes` bytes went from this user's client upstream.
    pub fn sent(&self, messages: u64, bytes: u64) {
        self.msgs_in.fetch_add(messages, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `messages` of `bytes` bytes were delivered to this user's client.
    pub fn delivered(&self, messages: u64, bytes: u64) {
        self.msgs_out.fetch_add(messages, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `count` permission violations (refused, or would-be in report-only).
    pub fn violations(&self, count: u64) {
        self.violations.fetch_add(count, Ordering::Relaxed);
    }

    fn counts(&self) -> Counts {
        Counts([
            self.msgs_in.load(Ordering::Relaxed),
            self.bytes_in.load(Ordering::Relaxed),
            self.msgs_out.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
            self.violations.load(Ordering::Relaxed),
        ])
    }
}

/// A connection's hold on its user's [`UserStats`]; dropping it ends the
/// connection for the per-user series.
#[derive(Debug)]
pub struct UserHandle {
    stats: Arc<UserStats>,
    key: Arc<str>,
    series: Weak<Mutex<State>>,
}

impl UserHandle {
    pub fn stats(&self) -> &UserStats {
        &self.stats
    }
}

impl Drop for UserHandle {
    fn drop(&mut self) {
        let Some(state) = self.series.upgrade() else {
            return;
        };
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        if self.stats.connections.fetch_sub(1, Ordering::Relaxed) == 1
            && let Some(entry) = state.users.get_mut(&self.key)
        {
            entry.left = Some(Instant::now());
        }
    }
}

/// msgs in, bytes in, msgs out, bytes out, violations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts([u64; 5]);

impl Counts {
    fn minus(self, base: Counts) -> Counts {
        let mut out = [0; 5];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.0[i].saturating_sub(base.0[i]);
        }
        Counts(out)
    }

    fn traffic(self) -> u64 {
        self.0[1].saturating_add(self.0[3])
    }
}

#[derive(Debug)]
struct Entry {
    stats: Arc<UserStats>,
    name: String,
    account: String,
    /// What the series (own or `other`) already counts.
    reported: Counts,
    /// Whether the user has its own series now.
    shown: bool,
    /// When its last connection closed (none while connected).
    left: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<Arc<str>, Entry>,
    inserts: u64,
    /// What users forgotten between two scrapes did since the last one:
    /// `other`'s, at the next scrape.
    forgotten: Counts,
}

/// The per-user series of one registry.
#[derive(Debug)]
pub struct UserSeries {
    limit: usize,
    retention: Duration,
    state: Arc<Mutex<State>>,
    messages: IntCounterVec,
    bytes: IntCounterVec,
    violations: IntCounterVec,
    connections: IntGaugeVec,
}

impl UserSeries {
    /// `limit` users get their own series (0: only `other`); users gone
    /// for `retention` are forgotten.
    pub fn new(
        limit: usize,
        retention: Duration,
        messages: IntCounterVec,
        bytes: IntCounterVec,
        violations: IntCounterVec,
        connections: IntGaugeVec,
    ) -> UserSeries {
        UserSeries {
            limit,
            retention,
            state: Arc::default(),
            messages,
            bytes,
            violations,
            connections,
        }
    }

    /// A connection of the user `key` (its public key) opened.
    pub fn connected(&self, key: &str, name: &str, account: &str) -> UserHandle {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.inserts += 1;
        if state.inserts.is_multiple_of(SWEEP_EVERY) {
            self.sweep(&mut state, Instant::now());
        }
        let key: Arc<str> = Arc::from(key);
        let entry = state.users.entry(key.clone()).or_insert_with(|| Entry {
            stats: Arc::default(),
            name: name.to_owned(),
            account: account.to_owned(),
            reported: Counts::default(),
            shown: false,
            left: None,
        });
        entry.left = None;
        entry.stats.connections.fetch_add(1, Ordering::Relaxed);
        UserHandle {
            stats: entry.stats.clone(),
            key,
            series: Arc::downgrade(&self.state),
        }
    }

    /// How many users are remembered now (connected, or left within the
    /// retention).
    pub fn remembered(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.users.len()
    }

    /// Brings the label vectors up to date (called before each scrape).
    pub fn sync(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Users forgotten now: their last changes go to `other`.
        self.sweep(&mut state, now);
        let mut other = std::mem::take(&mut state.forgotten);

        let mut ranked: Vec<(u64, Arc<str>)> = state
            .users
            .iter()
            .map(|(key, e)| (e.stats.counts().traffic(), key.clone()))
            .collect();
        let top = self.limit.min(ranked.len());
        if top > 0 && top < ranked.len() {
            ranked.select_nth_unstable_by(top - 1, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        let mut other_connections = 0;
        for (rank, (_, key)) in ranked.iter().enumerate() {
            let Some(entry) = state.users.get_mut(key) else {
                continue;
            };
            let now_counts = entry.stats.counts();
            let delta = now_counts.minus(entry.reported);
            entry.reported = now_counts;
            let show = rank < top;
            if entry.shown && !show {
                self.remove(key, entry);
            }
            entry.shown = show;
            if show {
                self.add(key, &entry.name, &entry.account, delta);
                let connections = entry.stats.connections.load(Ordering::Relaxed);
                self.connections
                    .with_label_values(&[key.as_ref(), &entry.name, &entry.account])
                    .set(connections);
            } else {
                other = add_counts(other, delta);
                other_connections += entry.stats.connections.load(Ordering::Relaxed);
            }
        }
        self.add(OTHER_USER, "", "", other);
        self.connections
            .with_label_values(&[OTHER_USER, "", ""])
            .set(other_connections);
    }

    /// Forgets the users gone for longer than the retention, keeping what
    /// they did since the last scrape for `other`.
    fn sweep(&self, state: &mut State, now: Instant) {
        let retention = self.retention;
        let gone: Vec<Arc<str>> = state
            .users
            .iter()
            .filter(|(_, e)| {
                e.stats.connections.load(Ordering::Relaxed) <= 0
                    && e.left.is_some_and(|t| now.duration_since(t) >= retention)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            let Some(entry) = state.users.remove(&key) else {
                continue;
            };
            let delta = entry.stats.counts().minus(entry.reported);
            if entry.shown {
                self.remove(&key, &entry);
            }
            state.forgotten = add_counts(state.forgotten, delta);
        }
    }

    fn add(&self, user: &str, name: &str, account: &str, delta: Counts) {
        let [msgs_in, bytes_in, msgs_out, bytes_out, violations] = delta.0;
        for (vec, direction, value) in [
            (&self.messages, super::Direction::ClientToUpstream, msgs_in),
            (&self.bytes, super::Direction::ClientToUpstream, bytes_in),
            (&self.messages, super::Direction::UpstreamToClient, msgs_out),
            (&self.bytes, super::Direction::UpstreamToClient, bytes_out),
        ] {
            vec.with_label_values(&[user, name, account, direction.as_str()])
                .inc_by(value);
        }
        self.violations
            .with_label_values(&[user, name, account])
            .inc_by(violations);
    }

    fn remove(&self, key: &str, entry: &Entry) {
        let (name, account) = (entry.name.as_str(), entry.account.as_str());
        for direction in [
            super::Direction::ClientToUpstream,
            super::Direction::UpstreamToClient,
        ] {
            let labels = [key, name, account, direction.as_str()];
            let _ = self.messages.remove_label_values(&labels);
            let _ = self.bytes.remove_label_values(&labels);
        }
        let _ = self.violations.remove_label_values(&[key, name, account]);
        let _ = self.connections.remove_label_values(&[key, name, account]);
    }
}

fn add_counts(a: Counts, b: Counts) -> Counts {
    let mut out = a.0;
    for (o, v) in out.iter_mut().zip(b.0) {
        *o = o.saturating_add(v);
    }
    Counts(out)
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;

    /// The `natsgate_user_*` sample lines of one render.
    fn user_lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with("natsgate_user_"))
            .collect()
    }

    fn value(text: &str, series: &str, user: &str, extra: &str) -> Option<f64> {
        let prefix = format!("{series}{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter(|l| l.contains(&format!("user=\"{user}\"")) && l.contains(extra))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn ten_thousand_users_make_at_most_n_plus_one_series_per_family_and_lose_nothing() {
        let metrics = Metrics::with_user_series(100, std::time::Duration::from_secs(300));
        let mut handles = Vec::new();
        let mut total_in = 0u64;
        for i in 0..10_000u64 {
            let handle = metrics.user(&format!("U{i:05}"), &format!("user-{i}"), "APP");
            // User i sends i bytes in one message: the top 100 are 9900..9999.
            metrics.relayed(
                handle.stats(),
                super::super::Direction::ClientToUpstream,
                1,
                i,
            );
            total_in += i;
            handles.push(handle);
        }
        let text = metrics.render();
        let lines = user_lines(&text);
        // 4 families; messages and bytes have two directions each.
        let per_user = 2 + 2 + 1 + 1;
        assert_eq!(lines.len(), 101 * per_user, "series: {}", lines.len());
        assert_eq!(
            value(
                &text,
                "natsgate_user_bytes_total",
                "U09999",
                "client_to_upstream"
            ),
            Some(9999.0)
        );
        assert_eq!(
            value(&text, "natsgate_user_bytes_total", "U00500", ""),
            None,
            "not in the top 100"
        );
        let shown: u64 = (9900..10_000).sum();
        assert_eq!(
            value(
                &text,
                "natsgate_user_bytes_total",
                "other",
                "client_to_upstream"
            ),
            Some((total_in - shown) as f64)
        );
        assert_eq!(
            value(&text, "natsgate_user_connections", "other", ""),
            Some(9900.0)
        );
        assert_eq!(
            value(
                &text,
                "natsgate_user_messages_total",
                "other",
                "client_to_upstream"
            ),
            Some(9900.0)
        );

        // User 0 becomes the heaviest: it gets a series from 0, what it did
        // before stays in `other`, which never goes down.
        metrics.relayed(
            handles[0].stats(),
            super::super::Direction::UpstreamToClient,
            5,
            100_000,
        );
        let text = metrics.render();
        assert_eq!(user_lines(&text).len(), 101 * per_user);
        assert_eq!(
            value(
                &text,
                "natsgate_user_bytes_total",
                "U00000",
                "upstream_to_client"
            ),
            Some(100_000.0)
        );
        let other = value(
            &text,
            "natsgate_user_bytes_total",
            "other",
            "client_to_upstream",
        );
        // U09900 dropped out: its series ends, and what it did while shown
        // is not counted again in `other`.
        assert_eq!(other, Some((total_in - shown) as f64));
        assert_eq!(
            value(&text, "natsgate_user_bytes_total", "U09900", ""),
            None,
            "dropped out of the top 100"
        );
    }

    #[test]
    fn users_who_left_are_forgotten_after_the_retention() {
        let metrics = Metrics::with_user_series(10, std::time::Duration::ZERO);
        for i in 0..5_000 {
            let handle = metrics.user(&format!("U{i}"), "", "APP");
            metrics.relayed(
                handle.stats(),
                super::super::Direction::ClientToUpstream,
                1,
                10,
            );
        }
        let kept = metrics.user("UKEPT", "kept", "APP");
        metrics.relayed(
            kept.stats(),
            super::super::Direction::ClientToUpstream,
            1,
            1_000_000,
        );
        // Entries of departed users are swept on insert even without scrapes.
        assert!(
            metrics.users_remembered() < 1_100,
            "{}",
            metrics.users_remembered()
        );
        let text = metrics.render();
        assert_eq!(metrics.users_remembered(), 1, "only the connected user");
        assert_eq!(
            value(
                &text,
                "natsgate_user_messages_total",
                "other",
                "client_to_upstream"
            ),
            Some(5000.0),
            "what the departed did is still counted"
        );
        assert_eq!(
            value(&text, "natsgate_user_connections", "UKEPT", ""),
            Some(1.0)
        );
        drop(kept);
        let text = metrics.render();
        assert_eq!(metrics.users_remembered(), 0);
        assert_eq!(value(&text, "natsgate_user_connections", "UKEPT", ""), None);
        assert_eq!(
            value(
                &text,
                "natsgate_user_messages_total",
                "other",
                "client_to_upstream"
            ),
            Some(5000.0)
        );
    }

    #[test]
    fn two_connections_of_a_user_share_one_entry() {
        let metrics = Metrics::with_user_series(10, std::time::Duration::from_secs(60));
        let a = metrics.user("UA", "alice", "APP");
        let b = metrics.user("UA", "alice", "APP");
        metrics.relayed(a.stats(), super::super::Direction::ClientToUpstream, 1, 3);
        metrics.relayed(b.stats(), super::super::Direction::ClientToUpstream, 2, 4);
        let text = metrics.render();
        assert_eq!(
            value(&text, "natsgate_user_connections", "UA", ""),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "natsgate_user_messages_total",
                "UA",
                "client_to_upstream"
            ),
            Some(3.0)
        );
        drop(a);
        let text = metrics.render();
        assert_eq!(
            value(&text, "natsgate_user_connections", "UA", ""),
            Some(1.0)
        );
        assert!(text.contains("name=\"alice\""));
    }
}
