//! Shared parts of the differential tests (`differential.rs` for NKey
//! users, `jwt_differential.rs` for JWT users): the op model and its wire
//! form, the proptest strategies for permission lists and ops, marker
//! resolution, the transcript-recording connection and failure formatting.
//!
//! The strategies are used by both generators in a fixed order; changing
//! one changes the generated cases of both tests.

use std::fmt::Write as _;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::{Frame, RawClient};

/// Bound for each flush in a differential run (both sides).
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

/// One direction's lists. `allow: None` = no allow list; `Some(vec![])` = an
/// explicit empty allow list (config users only: in a JWT an empty list is
/// the same as no list).
#[derive(Clone, Debug, Default)]
pub struct Lists {
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
}

impl Lists {
    pub fn is_empty(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }
}

#[derive(Clone, Debug)]
pub enum Op {
    /// User: `SUB <subject> [queue] <sid>`
    Sub {
        subject: String,
        queue: Option<String>,
        sid: u8,
    },
    /// User: `UNSUB <sid> [max]`
    Unsub { sid: u8, max: Option<u32> },
    /// User: `PUB <subject> [reply] <n>`
    Pub {
        subject: String,
        reply: Option<String>,
    },
    /// Observer: `PUB <subject> [reply] <n>`
    ObsPub {
        subject: String,
        reply: Option<String>,
    },
}

impl Op {
    pub fn by_observer(&self) -> bool {
        matches!(self, Op::ObsPub { .. })
    }

    /// The wire bytes; `idx` makes the payload unique per op.
    pub fn wire(&self, idx: usize) -> String {
        match self {
            Op::Sub {
                subject,
                queue,
                sid,
            } => match queue {
                Some(q) => format!("SUB {subject} {q} {sid}\r\n"),
                None => format!("SUB {subject} {sid}\r\n"),
            },
            Op::Unsub { sid, max } => match max {
                Some(m) => format!("UNSUB {sid} {m}\r\n"),
                None => format!("UNSUB {sid}\r\n"),
            },
            Op::Pub { subject, reply } | Op::ObsPub { subject, reply } => {
                let payload = format!("{}{idx}", if self.by_observer() { "o" } else { "u" });
                match reply {
                    Some(r) => format!("PUB {subject} {r} {}\r\n{payload}\r\n", payload.len()),
                    None => format!("PUB {subject} {}\r\n{payload}\r\n", payload.len()),
                }
            }
        }
    }
}

/// The op listing of a failure message: one line per op, who sends what.
pub fn describe_ops(ops: &[Op]) -> String {
    let mut s = String::new();
    for (i, op) in ops.iter().enumerate() {
        let who = if op.by_observer() { "observer" } else { "user" };
        writeln!(s, "  {i:2} {who:8} {:?}", op.wire(i)).unwrap();
    }
    s
}

// ---------------------------------------------------------------------------
// Generators (small vocabulary so that overlaps are frequent)
// ---------------------------------------------------------------------------

pub fn perm_subject() -> impl Strategy<Value = String> {
    let tok = select(vec!["a", "b", "c", "*", "_INBOX"]);
    let last = select(vec!["a", "b", "c", "*", ">", ">", "_INBOX"]);
    (proptest::collection::vec(tok, 0..=2), last).prop_map(|(mut t, l)| {
        t.push(l);
        t.join(".")
    })
}

pub fn sub_entry() -> impl Strategy<Value = String> {
    let queue = prop_oneof![
        6 => Just(None),
        1 => Just(Some("q")),
        1 => Just(Some("g.*")),
        1 => Just(Some("g.1")),
    ];
    (perm_subject(), queue).prop_map(|(s, q)| match q {
        Some(q) => format!("{s} {q}"),
        None => s,
    })
}

/// Allow and deny lists of `entry`s. With `explicit_empty_allow`, an
/// explicit empty allow list is generated too (config users); without it
/// (JWT users) an allow list is either absent or non-empty.
pub fn lists(
    entry: BoxedStrategy<String>,
    explicit_empty_allow: bool,
) -> impl Strategy<Value = Lists> {
    let allow = if explicit_empty_allow {
        prop_oneof![
            4 => Just(None),
            7 => proptest::collection::vec(entry.clone(), 1..=3).prop_map(Some),
            1 => Just(Some(Vec::new())),
        ]
        .boxed()
    } else {
        prop_oneof![
            4 => Just(None),
            7 => proptest::collection::vec(entry.clone(), 1..=3).prop_map(Some),
        ]
        .boxed()
    };
    let deny = prop_oneof![
        3 => Just(Vec::new()),
        3 => proptest::collection::vec(entry, 1..=2),
    ];
    (allow, deny).prop_map(|(allow, deny)| Lists { allow, deny })
}

/// Subjects for SUB: wildcards anywhere (so also invalid ones like `a.>.b`)
/// plus a few malformed subjects.
pub fn sub_subject() -> impl Strategy<Value = String> {
    let tok = select(vec!["a", "b", "c", "*", ">", "_INBOX"]);
    prop_oneof![
        8 => proptest::collection::vec(tok, 1..=3).prop_map(|t| t.join(".")),
        1 => select(vec!["a..b", ".a", "a.", "a.>.b"]).prop_map(String::from),
        // resolved by `resolve_markers` to one of the user's subscribe permission entries
        5 => (0usize..8).prop_map(|k| format!("#sa{k}")),
    ]
}

/// Literal subjects the observer publishes on.
pub fn literal_subject() -> impl Strategy<Value = String> {
    let tok = select(vec!["a", "b", "c", "_INBOX"]);
    proptest::collection::vec(tok, 1..=3).prop_map(|t| t.join("."))
}

/// Subjects the user publishes on: mostly literal, sometimes wildcard/malformed.
pub fn pub_subject() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => literal_subject(),
        // resolved by `resolve_markers` to one of the user's publish permission entries
        4 => (0usize..8).prop_map(|k| format!("#pa{k}")),
        2 => perm_subject(),
        1 => select(vec!["a..b", "_GR_.x", "$GR.x", "r.x", "_INBOX.r"]).prop_map(String::from),
    ]
}

pub fn user_reply() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(None),
        4 => select(vec!["_INBOX.r", "r.x", "b", "_R_.x", "$JS.ACK.x", "_GR_.x", "$GR.x", "_R_", "a.*"])
            .prop_map(|s| Some(s.to_owned())),
    ]
}

/// One or more flat ops.
pub fn op_group() -> impl Strategy<Value = Vec<Op>> {
    let sid = 1u8..=4;
    let queue = prop_oneof![
        7 => Just(None),
        3 => select(vec!["q", "g.1", "g.*", "g.>", "g", "_sys_", "r"]).prop_map(|s| Some(s.to_owned())),
    ];
    let sub = (sub_subject(), queue, sid.clone()).prop_map(|(subject, queue, sid)| {
        vec![Op::Sub {
            subject,
            queue,
            sid,
        }]
    });
    let unsub = (sid, select(vec![None, Some(0u32), Some(1), Some(2)]))
        .prop_map(|(sid, max)| vec![Op::Unsub { sid, max }]);
    let publish =
        (pub_subject(), user_reply()).prop_map(|(subject, reply)| vec![Op::Pub { subject, reply }]);
    let obs_plain = literal_subject().prop_map(|subject| {
        vec![Op::ObsPub {
            subject,
            reply: None,
        }]
    });
    // The observer publishes a request onto a subject the user may be
    // subscribed to; the user then answers once or more (response tracking).
    let request_subject = prop_oneof![
        1 => literal_subject(),
        // resolved by `resolve_markers` to a subject the user subscribed to earlier
        3 => (0usize..8).prop_map(|k| format!("#ps{k}")),
    ];
    let request = (
        request_subject,
        select(vec!["_INBOX.r", "r.x", "r.*", "a", "b.c"]),
        1usize..=3,
        proptest::option::weighted(0.6, ((0usize..8), 1u8..=4)),
    )
        .prop_map(|(subject, reply, answers, sub_first)| {
            let mut v = Vec::new();
            let mut subject = subject;
            if let Some((k, sid)) = sub_first {
                // subscribe to one of the user's subscribe entries, then request on it
                v.push(Op::Sub {
                    subject: format!("#sa{k}"),
                    queue: None,
                    sid,
                });
                subject = "#ps-last".to_owned();
            }
            v.push(Op::ObsPub {
                subject,
                reply: Some(reply.to_owned()),
            });
            v.extend((0..answers).map(|_| Op::Pub {
                subject: reply.to_owned(),
                reply: None,
            }));
            v
        });
    prop_oneof![
        4 => sub,
        1 => unsub,
        3 => publish,
        1 => obs_plain,
        3 => request,
    ]
}

// ---------------------------------------------------------------------------
// Marker resolution and case generation
// ---------------------------------------------------------------------------

/// Makes a wildcard pattern literal (`*` -> `a`, `>` -> `b.c`).
pub fn concretise(pattern: &str) -> String {
    pattern
        .split('.')
        .map(|t| match t {
            "*" => "a",
            ">" => "b.c",
            t => t,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Replaces the `#sa<k>`/`#pa<k>`/`#ps<k>` placeholders so that ops often hit
/// the user's own permission entries and earlier subscriptions.
pub fn resolve_markers(publish: &Lists, subscribe: &Lists, mut ops: Vec<Op>) -> Vec<Op> {
    fn entries(l: &Lists) -> Vec<String> {
        let mut v = l.allow.clone().unwrap_or_default();
        v.extend(l.deny.iter().cloned());
        v
    }
    let sub_entries = entries(subscribe);
    let pub_entries = entries(publish);
    let mut subscribed: Vec<String> = Vec::new();
    // Deliveries within a queue group are random. Every SUB naming queue `q`
    // reuses the sid of the first SUB naming `q`, so at most one subscription
    // of the user's connection is ever a member of `q` (a second SUB on that
    // sid is a duplicate the server ignores): transcripts stay deterministic.
    let mut queue_sid: std::collections::HashMap<String, u8> = std::collections::HashMap::new();
    for op in &mut ops {
        match op {
            Op::Sub {
                subject,
                queue,
                sid,
            } => {
                if let Some(k) = subject
                    .strip_prefix("#sa")
                    .and_then(|k| k.parse::<usize>().ok())
                {
                    let entry = if sub_entries.is_empty() {
                        "a".to_owned()
                    } else {
                        sub_entries[k % sub_entries.len()].clone()
                    };
                    let mut parts = entry.split_whitespace();
                    *subject = parts.next().unwrap_or("a").to_owned();
                    if let (Some(q), None) = (parts.next(), queue.as_ref()) {
                        *queue = Some(q.to_owned());
                    }
                }
                if let Some(q) = queue {
                    *sid = *queue_sid.entry(q.clone()).or_insert(*sid);
                }
                subscribed.push(subject.clone());
            }
            Op::Pub { subject, .. } => {
                if let Some(k) = subject
                    .strip_prefix("#pa")
                    .and_then(|k| k.parse::<usize>().ok())
                {
                    *subject = if pub_entries.is_empty() {
                        "a".to_owned()
                    } else {
                        concretise(&pub_entries[k % pub_entries.len()])
                    };
                }
            }
            Op::ObsPub { subject, .. } => {
                if subject == "#ps-last" {
                    *subject = concretise(subscribed.last().map_or("a", String::as_str));
                } else if let Some(k) = subject
                    .strip_prefix("#ps")
                    .and_then(|k| k.parse::<usize>().ok())
                {
                    *subject = if subscribed.is_empty() {
                        "a".to_owned()
                    } else {
                        concretise(&subscribed[k % subscribed.len()])
                    };
                }
            }
            Op::Unsub { .. } => {}
        }
    }
    ops
}

/// Deterministic list of `n` values of `strat`: the seed is `seed_env`'s
/// value (a u64) if set, else `default_seed`.
pub fn generate_cases<S: Strategy>(
    strat: S,
    seed_env: &str,
    default_seed: u64,
    n: usize,
) -> Vec<S::Value> {
    let seed = std::env::var(seed_env)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(default_seed);
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes(),
        );
    }
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    (0..n)
        .map(|_| {
            strat
                .new_tree(&mut runner)
                .expect("generate case")
                .current()
        })
        .collect()
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// Running ops and reporting
// ---------------------------------------------------------------------------

/// A connection that stops being used after its first failure.
pub struct Conn {
    pub label: &'static str,
    pub client: Option<RawClient>,
}

impl Conn {
    pub async fn open(
        label: &'static str,
        addr: std::net::SocketAddr,
        t: &mut Vec<String>,
    ) -> Conn {
        match RawClient::try_connect(addr).await {
            Ok(mut c) => {
                c.set_timeout(OP_TIMEOUT);
                Conn {
                    label,
                    client: Some(c),
                }
            }
            Err(e) => {
                t.push(format!("{label}: connect failed: {e}"));
                Conn {
                    label,
                    client: None,
                }
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8], t: &mut Vec<String>) {
        if let Some(c) = self.client.as_mut()
            && let Err(e) = c.try_send(bytes).await
        {
            t.push(format!("{}: send failed: {e}", self.label));
            self.client = None;
        }
    }

    /// PING, record every frame before the PONG (INFO ignored).
    pub async fn flush(&mut self, t: &mut Vec<String>) {
        let Some(c) = self.client.as_mut() else {
            t.push(format!("{}: (dead)", self.label));
            return;
        };
        let (mut frames, err) = match c.try_flush().await {
            Ok(f) => (f, None),
            Err(e) => (e.frames, Some(e.error)),
        };
        sort_msg_runs(&mut frames);
        for f in frames {
            if !matches!(f, Frame::Info(_)) {
                t.push(format!("{}: {f:?}", self.label));
            }
        }
        if let Some(e) = err {
            t.push(format!("{}: {e}", self.label));
            self.client = None;
        }
    }
}

/// Normalisation: one publish delivered to several subscriptions of the same
/// connection arrives in an unspecified order (nats-server's match results
/// come from maps), so each run of consecutive MSG frames is sorted by sid.
/// (Each flush covers one op, so a run never mixes two publishes.)
pub fn sort_msg_runs(frames: &mut [Frame]) {
    let mut i = 0;
    while i < frames.len() {
        let mut j = i;
        while j < frames.len() && matches!(frames[j], Frame::Msg { .. } | Frame::Hmsg { .. }) {
            j += 1;
        }
        if j > i {
            frames[i..j].sort_by_key(|f| format!("{f:?}"));
            i = j;
        } else {
            i += 1;
        }
    }
}

/// Runs `ops` on the logged-in `obs` and `usr` connections, one at a time
/// with a flush of both after each, then closes both; appends to `t`.
pub async fn run_ops(mut obs: Conn, mut usr: Conn, ops: &[Op], t: &mut Vec<String>) {
    for (i, op) in ops.iter().enumerate() {
        let wire = op.wire(i);
        t.push(format!(
            "-- op {i}: {} {wire:?}",
            if op.by_observer() { "O" } else { "U" }
        ));
        if op.by_observer() {
            obs.send(wire.as_bytes(), t).await;
            obs.flush(t).await;
            usr.flush(t).await;
        } else {
            usr.send(wire.as_bytes(), t).await;
            usr.flush(t).await;
            obs.flush(t).await;
        }
        if usr.client.is_none() && obs.client.is_none() {
            break;
        }
    }
    for c in [usr, obs] {
        if let Some(c) = c.client {
            c.close().await;
        }
    }
}

pub fn side_by_side(a_name: &str, a: &[String], b_name: &str, b: &[String]) -> String {
    let mut s = String::new();
    let first_diff = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    writeln!(s, "{:<70} | {b_name}", a_name).unwrap();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).map(String::as_str).unwrap_or("");
        let y = b.get(i).map(String::as_str).unwrap_or("");
        let mark = if i == first_diff {
            ">>"
        } else if x == y {
            "  "
        } else {
            "!="
        };
        writeln!(s, "{mark} {x:<67} | {y}").unwrap();
    }
    s
}
