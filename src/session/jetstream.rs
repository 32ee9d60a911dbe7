//! The JetStream guard in a session (issue 14): runs the rules of
//! [`crate::permissions::jetstream`] on the `$JS.` requests a client
//! publishes, answers refusals itself, and learns a stream's subjects when
//! a rule needs them.
//!
//! Owns: the per-session guard state ([`JsGuard`], present only with
//! `[jetstream] guard = true`), the stream-info lookups and their cache,
//! and the request held while a lookup runs. Not the rules.
//!
//! A lookup goes over the client's own upstream connection (logged in with
//! natsgate's credential for the user's account, so it sees the same
//! streams): natsgate subscribes once to its own inbox
//! `_INBOX.natsgate.<random>.*` with a sid of its own, and publishes
//! `$JS.API.STREAM.INFO.<stream>` with a reply there. Until the answer comes
//! (or [`LOOKUP_TIMEOUT`] passes, which refuses), the request is held and
//! the client is not read, so the client's later frames keep their order
//! behind it. Answers are cached per session for [`CACHE_TTL`], at most
//! [`CACHE_CAPACITY`] streams. Copies of natsgate's inbox messages that a
//! wildcard subscription of the client would get are dropped.

use bytes::Bytes;
use tokio::time::Instant;

use super::order::Sink;
use crate::permissions::jetstream::{Listing, StreamQuestion, StreamSubjects};

/// How long a held request waits for its stream's info.
pub(super) const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a stream's subjects are trusted (a stream update can change
/// them).
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);
/// Streams remembered per session.
const CACHE_CAPACITY: usize = 16;

/// The guard's state in one session.
#[derive(Debug, Default)]
pub(super) struct JsGuard {
    /// natsgate's inbox prefix (`_INBOX.natsgate.<random>.`), once
    /// subscribed upstream.
    pub(super) inbox: Option<Bytes>,
    /// The sid of that subscription (random, so a client cannot clash).
    pub(super) sid: Bytes,
    /// Lookups sent, for unique reply subjects.
    pub(super) lookups: u64,
    /// `(info subject, answer, when)`, oldest first.
    pub(super) cache: Vec<(String, StreamSubjects, Instant)>,
    pub(super) held: Option<Held>,
    /// A held request was settled: the client's buffered input is due.
    pub(super) resume: bool,
}

/// A request waiting for a stream's subjects.
#[derive(Debug)]
pub(super) struct Held {
    /// The whole PUB/HPUB frame, forwarded verbatim when allowed.
    pub(super) frame: Bytes,
    pub(super) payload_len: usize,
    pub(super) subject: Bytes,
    pub(super) reply: Option<Bytes>,
    pub(super) waiting: Waiting,
    /// The reply subject of natsgate's lookup.
    pub(super) awaiting: Bytes,
    pub(super) deadline: Instant,
}

/// What a held request waits for.
#[derive(Debug)]
pub(super) enum Waiting {
    /// Its stream's subjects (`STREAM.INFO`), to decide it.
    Stream(StreamQuestion),
    /// The next page of a stream listing (`STREAM.LIST`), to answer it
    /// with the visible streams.
    Listing(Box<Listing>),
}

/// What the guard did with a request (`guard_ops`).
pub(super) enum Guarded {
    /// Forward it.
    Pass,
    /// Answered (refused): do not forward it.
    Answered,
    /// Held for a lookup: stop reading the client.
    Held,
}

impl JsGuard {
    /// Whether a request is held (the client is not read meanwhile).
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// When the held request gives up waiting.
    pub fn deadline(&self) -> Option<Instant> {
        self.held.as_ref().map(|h| h.deadline)
    }

    /// Takes the "client input is due" flag.
    pub fn take_resume(&mut self) -> bool {
        std::mem::take(&mut self.resume)
    }

    /// Whether a delivery is natsgate's own (its sid) or a copy of one on
    /// natsgate's inbox (a client's wildcard subscription).
    pub fn owns(&self, subject: &[u8], sid: &[u8]) -> bool {
        self.inbox
            .as_ref()
            .is_some_and(|inbox| sid == self.sid || subject.starts_with(inbox))
    }

    /// Publishes a lookup (`subject`, `body`) with a reply on natsgate's
    /// own inbox, subscribing to that inbox first if this is the first
    /// lookup. Returns the reply subject to wait for.
    pub(super) fn ask(&mut self, subject: &[u8], body: &[u8], upstream: &mut impl Sink) -> Bytes {
        let inbox = match &self.inbox {
            Some(inbox) => inbox.clone(),
            None => {
                let token = random_token();
                let inbox = Bytes::from(format!("_INBOX.natsgate.{token}."));
                self.sid = Bytes::from(format!("natsgate.{token}"));
                let mut sub = b"SUB ".to_vec();
                sub.extend_from_slice(&inbox);
                sub.extend_from_slice(b"* ");
                sub.extend_from_slice(&self.sid);
                sub.extend_from_slice(b"\r\n");
                upstream.frame(Bytes::from(sub));
                self.inbox = Some(inbox.clone());
                inbox
            }
        };
        self.lookups += 1;
        let mut awaiting = inbox.to_vec();
        awaiting.extend_from_slice(self.lookups.to_string().as_bytes());
        let awaiting = Bytes::from(awaiting);
        let mut publish = b"PUB ".to_vec();
        publish.extend_from_slice(subject);
        publish.push(b' ');
        publish.extend_from_slice(&awaiting);
        publish.extend_from_slice(format!(" {}\r\n", body.len()).as_bytes());
        publish.extend_from_slice(body);
        publish.extend_from_slice(b"\r\n");
        upstream.frame(Bytes::from(publish));
        awaiting
    }

    pub(super) fn cached(&mut self, key: &str, now: Instant) -> Option<StreamSubjects> {
        self.cache
            .retain(|(_, _, at)| now.duration_since(*at) < CACHE_TTL);
        self.cache
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, s, _)| s.clone())
    }

    pub(super) fn remember(&mut self, key: String, subjects: StreamSubjects, now: Instant) {
        self.cache.retain(|(k, _, _)| *k != key);
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.remove(0);
        }
        self.cache.push((key, subjects, now));
    }
}

/// 12 random bytes as 24 hex digits.
pub(super) fn random_token() -> String {
    let mut raw = [0u8; 12];
    // The OS random source failing is not recoverable (as for nonces).
    getrandom::fill(&mut raw).expect("the OS random number generator failed");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}
