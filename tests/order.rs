//! Wire order, and nothing lost when a connection closes (issue 10; spec
//! 1.8-1.14).
//!
//! The same raw bytes go to natsgate (in front of a plain nats-server) and
//! to a nats-server that enforces the same user itself: a static NKey user
//! in its config, or a JWT user in operator mode (MEMORY resolver). The
//! complete sequence of frames the client receives is compared in order;
//! only server PINGs and INFO frames (the connect-info INFO, async INFOs)
//! are left out, nothing is sorted. Every expectation is first checked
//! against the direct nats-server, so a failure on the natsgate side is a
//! difference from nats-server, not from a guess.
//!
//! - `*_replies_follow_op_order`, `a_ping_before_a_fatal_frame_*`: PONG,
//!   `+OK` and `-ERR` in op order, verbose mode, the JWT `subs` limit, and
//!   PONG, then the `-ERR` (if any), then the close for every fatal frame.
//!   Each case is sent in one write and as one write per op.
//! - `nothing_accepted_is_lost_on_a_fatal_frame_*`: CONNECT, 20,000 PUBs, a
//!   PING and a fatal frame in one write; a subscriber gets all 20,000.
//! - `unsub_max_does_not_count_the_503_status`: spec 1.8.
//! - `sigterm_loses_no_accepted_pub`: the natsgate binary, SIGTERM while a
//!   client publishes as fast as it can.
//! - `random_interleavings_match_the_ordering_model`: a reference model of
//!   nats-server's ordering, checked against nats-server and natsgate.
//!
//! Env knobs: `NATSGATE_ORDER_CASES` (default 40), `NATSGATE_ORDER_SEED`
//! (a u64; default fixed). Everything is bounded and stays on 127.0.0.1.

mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nkeys::KeyPair;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use support::diff::{env_usize, generate_cases};
use support::jwt::{self as j, Permission};
use support::process::{GateProcess, spawn_gate_binary_at};
use support::{Frame, Gate, NatsServer, RawClient, ReadError, keys, quote_toml};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PASSWORD: &str = "order-gate-s3cret";
/// What the users with permissions may publish and subscribe to.
const ALLOW: &str = "ok.>";
/// nats-server's default max_payload, natsgate's too.
const MAX_PAYLOAD: usize = 1024 * 1024;
/// The `payload` limit of the JWT user `pay`.
const JWT_PAYLOAD: usize = 64;
/// The bound for the answers to one case.
const CASE_WAIT: Duration = Duration::from_secs(5);
/// PUBs before the fatal frame in the no-loss tests.
const LOAD: u64 = 20_000;

const DEFAULT_CASES: usize = 40;
const DEFAULT_SEED: u64 = 0x6f72_6465_7231_3021; // "order10!"

// ---------------------------------------------------------------------------
// The frames of the cases
// ---------------------------------------------------------------------------

const PING: &[u8] = b"PING\r\n";
const ALLOWED_PUB: &[u8] = b"PUB ok.p 1\r\nx\r\n";
const DENIED_PUB: &[u8] = b"PUB no.p 1\r\nx\r\n";
const DENIED_SUB: &[u8] = b"SUB no.s 90\r\n";

fn pub_denied() -> Frame {
    Frame::err("Permissions Violation for Publish to \"no.p\"")
}

fn sub_denied() -> Frame {
    Frame::err("Permissions Violation for Subscription to \"no.s\"")
}

fn max_subs() -> Frame {
    Frame::err("maximum subscriptions exceeded")
}

/// The frames after which nats-server closes the connection (spec 1.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fatal {
    /// A control line above `max_control_line` (4096).
    ControlLine,
    /// A PUB above `max_payload`.
    MaxPayload,
    UnknownOp,
    /// A payload not followed by CRLF.
    NoCrlf,
    /// A PUB whose size is not a number.
    BadSize,
    /// HPUB on a connection whose CONNECT said `headers:false`.
    HpubNoHeaders,
    /// The client sends `-ERR`.
    ClientErr,
    /// A PUB above the JWT user's `payload` limit (user `pay` only).
    JwtPayload,
}

impl Fatal {
    const ALL: [Fatal; 8] = [
        Fatal::ControlLine,
        Fatal::MaxPayload,
        Fatal::UnknownOp,
        Fatal::NoCrlf,
        Fatal::BadSize,
        Fatal::HpubNoHeaders,
        Fatal::ClientErr,
        Fatal::JwtPayload,
    ];

    fn bytes(self) -> Vec<u8> {
        match self {
            Fatal::ControlLine => format!("PUB ok.{} 1\r\nx\r\n", "c".repeat(5000)).into_bytes(),
            Fatal::MaxPayload => format!("PUB ok.p {}\r\n", MAX_PAYLOAD + 1).into_bytes(),
            Fatal::UnknownOp => b"FOO bar\r\n".to_vec(),
            Fatal::NoCrlf => b"PUB ok.p 2\r\nhiX\r\n".to_vec(),
            Fatal::BadSize => b"PUB ok.p abc\r\n".to_vec(),
            Fatal::HpubNoHeaders => b"HPUB ok.p 12 14\r\nNATS/1.0\r\n\r\nhi\r\n".to_vec(),
            Fatal::ClientErr => b"-ERR 'bye'\r\n".to_vec(),
            Fatal::JwtPayload => format!(
                "PUB ok.p {}\r\n{}\r\n",
                JWT_PAYLOAD + 1,
                "p".repeat(JWT_PAYLOAD + 1)
            )
            .into_bytes(),
        }
    }

    /// What nats-server sends before it closes (spec 1.12, 5.4).
    fn err(self) -> Option<Frame> {
        match self {
            Fatal::ControlLine => Some(Frame::err("maximum control line exceeded")),
            Fatal::MaxPayload | Fatal::JwtPayload => Some(Frame::err("Maximum Payload Violation")),
            Fatal::UnknownOp | Fatal::NoCrlf => Some(Frame::err("Unknown Protocol Operation")),
            Fatal::BadSize | Fatal::HpubNoHeaders | Fatal::ClientErr => None,
        }
    }

    /// The CONNECT's `headers` for a case ending in this frame.
    fn headers(self) -> bool {
        self != Fatal::HpubNoHeaders
    }
}

// ---------------------------------------------------------------------------
// The world: natsgate and the two direct servers, all knowing the same users
// ---------------------------------------------------------------------------

/// A user both sides know: a static NKey user (`jwt: None`) or a JWT user.
struct User {
    kp: KeyPair,
    jwt: Option<String>,
}

impl User {
    /// The CONNECT line that logs in as this user on `c` (signing its INFO
    /// nonce). Defaults: not verbose, protocol 1, headers on; `extra`'s
    /// fields override them.
    fn connect(&self, c: &RawClient, extra: &Value) -> Vec<u8> {
        let nonce = c.nonce().expect("INFO has a nonce");
        let mut obj = json!({
            "verbose": false, "pedantic": false, "protocol": 1, "headers": true,
            "lang": "raw-test", "version": "0",
            "sig": keys::sign_nonce(&self.kp, nonce),
        });
        match &self.jwt {
            Some(jwt) => obj["jwt"] = json!(jwt),
            None => obj["nkey"] = json!(self.kp.public_key()),
        }
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                obj[k] = v.clone();
            }
        }
        format!("CONNECT {obj}\r\n").into_bytes()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Nkey,
    Jwt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// natsgate in front of the plain upstream.
    Gate,
    /// nats-server enforcing the user itself.
    Direct,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// Static NKey user, publish and subscribe `ok.>`.
    Nkey,
    /// Static NKey user without permissions.
    Free,
    /// JWT user, publish and subscribe `ok.>`.
    Alice,
    /// As alice, with `subs` 2.
    Subs2,
    /// As alice, with `payload` [`JWT_PAYLOAD`].
    Pay,
}

impl Who {
    fn kind(self) -> Kind {
        match self {
            Who::Nkey | Who::Free => Kind::Nkey,
            Who::Alice | Who::Subs2 | Who::Pay => Kind::Jwt,
        }
    }
}

struct World {
    upstream: NatsServer,
    gate: Gate,
    nkey_direct: NatsServer,
    jwt_direct: NatsServer,
    nkey: User,
    free: User,
    alice: User,
    subs2: User,
    pay: User,
}

impl World {
    fn start() -> World {
        let op = j::operator("op", false, None);
        let acc = KeyPair::new_account();
        let acc_jwt = j::sign_account(&j::account_claims(&acc, "A"), &op.kp);
        let accounts = vec![(acc.public_key(), acc_jwt)];
        let jwt_user = |name: &str, subs: i64, payload: i64| {
            let kp = keys::new_user();
            let mut c = j::user_claims(&kp, name);
            let allow = Permission {
                allow: vec![ALLOW.into()],
                deny: vec![],
            };
            c.nats.limits.publish = allow.clone();
            c.nats.limits.subscribe = allow;
            c.nats.limits.subs = subs;
            c.nats.limits.payload = payload;
            User {
                jwt: Some(j::sign_user(&c, &acc)),
                kp,
            }
        };
        let alice = jwt_user("alice", -1, -1);
        let subs2 = jwt_user("subs2", 2, -1);
        let pay = jwt_user("pay", -1, JWT_PAYLOAD as i64);
        let nkey = User {
            kp: keys::new_user(),
            jwt: None,
        };
        let free = User {
            kp: keys::new_user(),
            jwt: None,
        };

        let upstream = NatsServer::start(&j::upstream_config(PASSWORD));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut toml = j::gate_setup(dir.path(), &upstream.url(), PASSWORD, &[&op.jwt], &accounts);
        write!(
            toml,
            "\n[[users]]\nnkey = {}\nname = \"nkey\"\n[users.permissions]\n\
             publish = {{ allow = [\"{ALLOW}\"] }}\nsubscribe = {{ allow = [\"{ALLOW}\"] }}\n\n\
             [[users]]\nnkey = {}\nname = \"free\"\n",
            quote_toml(&nkey.kp.public_key()),
            quote_toml(&free.kp.public_key()),
        )
        .unwrap();
        let gate = Gate::start_with_dir(&toml, dir);
        let nkey_direct = NatsServer::start(&format!(
            "authorization {{ users = [\n  {{ nkey: \"{}\", permissions: {{ publish: {{ allow: [\"{ALLOW}\"] }}, \
             subscribe: {{ allow: [\"{ALLOW}\"] }} }} }},\n  {{ nkey: \"{}\" }}\n] }}\n",
            nkey.kp.public_key(),
            free.kp.public_key(),
        ));
        let jwt_direct = NatsServer::start(&j::server_config(&[&op.jwt], &accounts, None));
        World {
            upstream,
            gate,
            nkey_direct,
            jwt_direct,
            nkey,
            free,
            alice,
            subs2,
            pay,
        }
    }

    fn user(&self, who: Who) -> &User {
        match who {
            Who::Nkey => &self.nkey,
            Who::Free => &self.free,
            Who::Alice => &self.alice,
            Who::Subs2 => &self.subs2,
            Who::Pay => &self.pay,
        }
    }

    fn addr(&self, side: Side, kind: Kind) -> SocketAddr {
        match (side, kind) {
            (Side::Gate, _) => self.gate.addr(),
            (Side::Direct, Kind::Nkey) => self.nkey_direct.addr(),
            (Side::Direct, Kind::Jwt) => self.jwt_direct.addr(),
        }
    }
}

// ---------------------------------------------------------------------------
// Sending a case and reading what comes back
// ---------------------------------------------------------------------------

/// How a case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// Every PING was answered and the connection is open.
    Open,
    /// The peer closed the connection.
    Closed,
    /// Neither, within the bound (or garbage arrived).
    Stuck(String),
}

/// When to stop reading.
#[derive(Clone, Copy, Debug)]
enum Until {
    /// After this many PONGs (cases without a fatal frame).
    Pongs(usize),
    /// At the close (cases with a fatal frame).
    Close,
}

/// How a case's bytes are written.
#[derive(Clone, Debug)]
enum Writes {
    /// Everything, CONNECT included, in one write.
    One,
    /// One write per op (CONNECT included).
    PerOp,
    /// The whole byte stream cut at these offsets (modulo its length).
    Cuts(Vec<usize>),
}

fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| c % bytes.len().max(1))
        .filter(|&c| c > 0)
        .collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for a in at {
        out.push(bytes[prev..a].to_vec());
        prev = a;
    }
    out.push(bytes[prev..].to_vec());
    out
}

/// Reads frames (INFO and server PINGs left out) until `until`, the close,
/// or `within`.
async fn read_until(c: &mut RawClient, until: Until, within: Duration) -> (Vec<Frame>, End) {
    let deadline = tokio::time::Instant::now() + within;
    let mut frames = Vec::new();
    let mut pongs = 0;
    loop {
        if let Until::Pongs(n) = until
            && pongs >= n
        {
            return (frames, End::Open);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_read_frame_within(left).await {
            Ok(Frame::Ping | Frame::Info(_)) => {}
            Ok(f) => {
                if f == Frame::Pong {
                    pongs += 1;
                }
                frames.push(f);
            }
            Err(ReadError::Closed { .. } | ReadError::Io(_)) => return (frames, End::Closed),
            Err(e) => return (frames, End::Stuck(e.to_string())),
        }
    }
}

/// Connects to `addr`, sends CONNECT as `user` (with `extra`) and `ops` as
/// `writes` says, and reads the answers until `until`. A failed write (the
/// peer closed) ends the writing, not the case.
async fn exchange(
    addr: SocketAddr,
    user: &User,
    extra: &Value,
    ops: &[Vec<u8>],
    writes: &Writes,
    until: Until,
) -> (Vec<Frame>, End) {
    let mut c = match RawClient::try_connect(addr).await {
        Ok(c) => c,
        Err(e) => return (Vec::new(), End::Stuck(format!("connect: {e}"))),
    };
    c.set_timeout(CASE_WAIT);
    let mut chunks = vec![user.connect(&c, extra)];
    chunks.extend(ops.iter().cloned());
    let chunks = match writes {
        Writes::One => vec![chunks.concat()],
        Writes::PerOp => chunks,
        Writes::Cuts(cuts) => cut(&chunks.concat(), cuts),
    };
    for chunk in &chunks {
        if c.try_send(chunk).await.is_err() {
            break;
        }
    }
    read_until(&mut c, until, CASE_WAIT).await
}

/// A fixed case: ops after CONNECT and exactly what nats-server answers.
struct Case {
    name: String,
    who: Who,
    extra: Value,
    ops: Vec<Vec<u8>>,
    want: Vec<Frame>,
    end: End,
}

impl Case {
    fn new(name: &str, who: Who, ops: &[&[u8]], want: Vec<Frame>) -> Case {
        Case {
            name: name.into(),
            who,
            extra: json!({}),
            ops: ops.iter().map(|o| o.to_vec()).collect(),
            want,
            end: End::Open,
        }
    }

    fn verbose(mut self) -> Case {
        self.extra["verbose"] = json!(true);
        self
    }

    /// Appends `fatal` and its answer, and expects the close.
    fn then_fatal(mut self, fatal: Fatal) -> Case {
        self.name = format!("{}, {fatal:?}", self.name);
        self.extra["headers"] = json!(fatal.headers());
        self.ops.push(fatal.bytes());
        self.want.extend(fatal.err());
        self.end = End::Closed;
        self
    }

    fn until(&self) -> Until {
        match self.end {
            End::Closed => Until::Close,
            _ => Until::Pongs(self.ops.iter().filter(|o| o.as_slice() == PING).count()),
        }
    }
}

/// Runs every case in one write and one write per op against the direct
/// nats-server (which must answer exactly `want`) and natsgate (which must
/// answer as the direct server did).
async fn check_cases(w: &World, cases: &[Case]) {
    let mut direct_wrong = Vec::new();
    let mut gate_wrong = Vec::new();
    for case in cases {
        let user = w.user(case.who);
        for writes in [Writes::One, Writes::PerOp] {
            let run = async |side| {
                exchange(
                    w.addr(side, case.who.kind()),
                    user,
                    &case.extra,
                    &case.ops,
                    &writes,
                    case.until(),
                )
                .await
            };
            let direct = run(Side::Direct).await;
            let gate = run(Side::Gate).await;
            let want = (case.want.clone(), case.end.clone());
            if direct != want {
                direct_wrong.push(format!(
                    "{} ({writes:?}):\n  nats-server {direct:?}\n  expected    {want:?}",
                    case.name
                ));
            }
            if gate != direct {
                gate_wrong.push(format!(
                    "{} ({writes:?}):\n  natsgate    {gate:?}\n  nats-server {direct:?}",
                    case.name
                ));
            }
        }
    }
    assert!(
        direct_wrong.is_empty(),
        "the expectations are not nats-server's:\n{}",
        direct_wrong.join("\n")
    );
    assert!(
        gate_wrong.is_empty(),
        "natsgate's answers differ from nats-server's:\n{}",
        gate_wrong.join("\n")
    );
}

/// Ordering cases without a fatal frame, for a user allowed `ok.>`.
fn ordering_cases(who: Who) -> Vec<Case> {
    use Frame::{Ok, Pong};
    vec![
        Case::new(
            "PING, denied PUB, PING",
            who,
            &[PING, DENIED_PUB, PING],
            vec![Pong, pub_denied(), Pong],
        ),
        Case::new(
            "PING, denied SUB, PING",
            who,
            &[PING, DENIED_SUB, PING],
            vec![Pong, sub_denied(), Pong],
        ),
        Case::new(
            "denied PUB, PING, PING, denied SUB, PING",
            who,
            &[DENIED_PUB, PING, PING, DENIED_SUB, PING],
            vec![pub_denied(), Pong, Pong, sub_denied(), Pong],
        ),
        Case::new(
            "verbose: PING, PUB, denied PUB, SUB, PING",
            who,
            &[PING, ALLOWED_PUB, DENIED_PUB, b"SUB ok.s 1\r\n", PING],
            vec![Ok, Pong, Ok, pub_denied(), Ok, Pong],
        )
        .verbose(),
        Case::new(
            "verbose: PING, denied SUB, UNSUB, PING, PUB, PING",
            who,
            &[PING, DENIED_SUB, b"UNSUB 5\r\n", PING, ALLOWED_PUB, PING],
            vec![Ok, Pong, sub_denied(), Ok, Pong, Ok, Pong],
        )
        .verbose(),
    ]
}

/// A PING (and a denial) before each fatal frame: PONG, then the `-ERR`
/// if nats-server sends one, then the close.
fn fatal_cases(kind: Kind) -> Vec<Case> {
    let mut cases = Vec::new();
    for fatal in Fatal::ALL {
        let who = match (kind, fatal) {
            (Kind::Nkey, Fatal::JwtPayload) => continue,
            (Kind::Nkey, _) => Who::Nkey,
            (Kind::Jwt, Fatal::JwtPayload) => Who::Pay,
            (Kind::Jwt, _) => Who::Alice,
        };
        cases.push(Case::new("PING", who, &[PING], vec![Frame::Pong]).then_fatal(fatal));
        cases.push(
            Case::new(
                "PING, denied PUB, PING",
                who,
                &[PING, DENIED_PUB, PING],
                vec![Frame::Pong, pub_denied(), Frame::Pong],
            )
            .then_fatal(fatal),
        );
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_user_replies_follow_op_order() {
    let w = World::start();
    check_cases(&w, &ordering_cases(Who::Nkey)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_user_replies_follow_op_order() {
    use Frame::{Ok, Pong};
    let w = World::start();
    let mut cases = ordering_cases(Who::Alice);
    let subs = [
        &b"SUB ok.a 1\r\n"[..],
        b"SUB ok.b 2\r\n",
        PING,
        b"SUB ok.c 3\r\n",
        PING,
    ];
    cases.push(Case::new(
        "subs 2: SUB, SUB, PING, SUB, PING",
        Who::Subs2,
        &subs,
        vec![Pong, max_subs(), Pong],
    ));
    cases.push(
        Case::new(
            "verbose, subs 2: SUB, SUB, PING, SUB, PING",
            Who::Subs2,
            &subs,
            vec![Ok, Ok, Ok, Pong, max_subs(), Pong],
        )
        .verbose(),
    );
    cases.push(
        Case::new(
            "payload 64: PING, PUB 64, PING",
            Who::Pay,
            &[
                PING,
                format!("PUB ok.p 64\r\n{}\r\n", "p".repeat(64)).as_bytes(),
                DENIED_PUB,
                PING,
            ],
            vec![Pong, pub_denied(), Pong],
        )
        .then_fatal(Fatal::JwtPayload),
    );
    check_cases(&w, &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_before_a_fatal_frame_is_answered_first_nkey() {
    let w = World::start();
    check_cases(&w, &fatal_cases(Kind::Nkey)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_before_a_fatal_frame_is_answered_first_jwt() {
    let w = World::start();
    check_cases(&w, &fatal_cases(Kind::Jwt)).await;
}

/// Spec 1.8: a 503 no-responders status on a subscription with
/// `UNSUB <sid> <max>` does not count towards `max`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsub_max_does_not_count_the_503_status() {
    let w = World::start();
    let mut case = Case::new(
        "SUB *.* 1, UNSUB 1 2, PUB b a.b 0, PUB x.1, PUB x.2, PUB x.3, PING",
        Who::Free,
        &[
            b"SUB *.* 1\r\n",
            b"UNSUB 1 2\r\n",
            b"PUB b a.b 0\r\n\r\n",
            b"PUB x.1 1\r\n1\r\n",
            b"PUB x.2 1\r\n2\r\n",
            b"PUB x.3 1\r\n3\r\n",
            PING,
        ],
        vec![
            Frame::Hmsg {
                subject: "a.b".into(),
                sid: "1".into(),
                reply: None,
                headers: b"NATS/1.0 503\r\nNats-Subject: b\r\n\r\n".to_vec(),
                payload: Vec::new(),
            },
            Frame::msg("x.1", "1", b"1"),
            Frame::msg("x.2", "1", b"2"),
            Frame::Pong,
        ],
    );
    case.extra = json!({"headers": true, "no_responders": true});
    check_cases(&w, &[case]).await;
}

// ---------------------------------------------------------------------------
// Counting deliveries
// ---------------------------------------------------------------------------

/// Counts the MSG frames arriving on a subscriber connection (in a task
/// that also answers server PINGs) and checks that the payloads are the
/// decimal sequence 0, 1, 2, ... (no gap, no duplicate, in order).
struct Counter {
    count: Arc<AtomicU64>,
    disorder: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    fn spawn(c: RawClient) -> Counter {
        let (stream, buf) = c.into_parts();
        let count = Arc::new(AtomicU64::new(0));
        let disorder = Arc::new(Mutex::new(None));
        let task = tokio::spawn(count_msgs(stream, buf, count.clone(), disorder.clone()));
        Counter {
            count,
            disorder,
            task,
        }
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// The first payload out of sequence, if any.
    fn disorder(&self) -> Option<String> {
        self.disorder.lock().unwrap().clone()
    }

    /// Waits until `want` messages arrived, or nothing new arrived for
    /// `quiet`, or `limit` passed; returns the count.
    async fn settle(&self, want: u64, quiet: Duration, limit: Duration) -> u64 {
        let start = Instant::now();
        let mut last = self.get();
        let mut last_change = Instant::now();
        loop {
            let now = self.get();
            if now >= want || start.elapsed() >= limit {
                return now;
            }
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() >= quiet {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn count_msgs(
    stream: TcpStream,
    mut buf: Vec<u8>,
    count: Arc<AtomicU64>,
    disorder: Arc<Mutex<Option<String>>>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut n: u64 = 0;
    let mut start = 0;
    loop {
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(args) = line.strip_prefix(b"MSG ") {
                let size = args
                    .rsplit(|&b| b == b' ')
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(0);
                let body = start + nl + 1;
                if buf.len() < body + size + 2 {
                    break;
                }
                let payload = &buf[body..body + size];
                let mut guard = disorder.lock().unwrap();
                if guard.is_none() && payload != n.to_string().as_bytes() {
                    *guard = Some(format!(
                        "message {n} has payload {:?}",
                        String::from_utf8_lossy(payload)
                    ));
                }
                drop(guard);
                n += 1;
                count.store(n, Ordering::Release);
                start = body + size + 2;
            } else {
                if line == b"PING" {
                    let _ = wr.write_all(b"PONG\r\n").await;
                }
                start += nl + 1;
            }
        }
        if start > 0 {
            buf.drain(..start);
            start = 0;
        }
        buf.reserve(64 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A subscriber (sid 1) on the plain upstream, logged in as natsgate's
/// own `gate` user; registered (PING/PONG) before it returns.
async fn upstream_subscriber(upstream: &NatsServer, subject: &str) -> Counter {
    let mut c = RawClient::connect(upstream.addr()).await;
    c.connect_json(&json!({"user": "gate", "pass": PASSWORD, "verbose": false, "protocol": 1}))
        .await;
    subscribed(c, subject).await
}

/// A subscriber (sid 1) on `addr`, logged in as `user`.
async fn subscriber(addr: SocketAddr, user: &User, subject: &str) -> Counter {
    let mut c = RawClient::connect(addr).await;
    let line = user.connect(&c, &json!({}));
    c.send(&line).await;
    subscribed(c, subject).await
}

async fn subscribed(mut c: RawClient, subject: &str) -> Counter {
    c.send(format!("SUB {subject} 1\r\n").as_bytes()).await;
    let frames = c.flush().await;
    assert!(
        frames.iter().all(|f| matches!(f, Frame::Info(_))),
        "the subscriber's login and SUB were answered with {frames:?}"
    );
    Counter::spawn(c)
}

// ---------------------------------------------------------------------------
// No loss on a fatal frame
// ---------------------------------------------------------------------------

/// A subscriber listens on `ok.load` (on the plain upstream for natsgate,
/// on the direct server otherwise); the publisher sends, in one write,
/// CONNECT, [`LOAD`] PUBs, a PING and `fatal`. The subscriber must get all
/// of them, the publisher PONG, then the `-ERR` nats-server sends (if
/// any), then the close.
async fn no_loss(w: &World, side: Side, who: Who, fatal: Fatal) -> Result<(), String> {
    let kind = who.kind();
    let sub = match side {
        Side::Gate => upstream_subscriber(&w.upstream, "ok.load").await,
        Side::Direct => {
            let reader = match kind {
                Kind::Nkey => &w.nkey,
                Kind::Jwt => &w.alice,
            };
            subscriber(w.addr(side, kind), reader, "ok.load").await
        }
    };
    let mut c = RawClient::connect(w.addr(side, kind)).await;
    let mut bytes = w
        .user(who)
        .connect(&c, &json!({"headers": fatal.headers()}));
    bytes.extend_from_slice(&load_pubs());
    bytes.extend_from_slice(PING);
    bytes.extend_from_slice(&fatal.bytes());
    c.set_timeout(Duration::from_secs(10));
    let started = Instant::now();
    c.try_send(&bytes)
        .await
        .map_err(|e| format!("writing the batch: {e}"))?;
    let (frames, end) = read_until(&mut c, Until::Close, Duration::from_secs(10)).await;
    let got = sub
        .settle(LOAD, Duration::from_secs(1), Duration::from_secs(10))
        .await;
    let mut want = vec![Frame::Pong];
    want.extend(fatal.err());
    let mut problems = Vec::new();
    if got != LOAD {
        problems.push(format!("the subscriber got {got} of {LOAD}"));
    }
    if let Some(d) = sub.disorder() {
        problems.push(format!("out of sequence: {d}"));
    }
    if (&frames, &end) != (&want, &End::Closed) {
        problems.push(format!(
            "the publisher got {frames:?} then {end:?}, expected {want:?} then Closed"
        ));
    }
    eprintln!(
        "{side:?} {who:?} {fatal:?}: {got} delivered, {frames:?} {end:?}, {:?}",
        started.elapsed()
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

async fn check_no_loss(w: &World, cases: &[(Who, Fatal)]) {
    let mut direct_wrong = Vec::new();
    let mut gate_wrong = Vec::new();
    for &(who, fatal) in cases {
        if let Err(e) = no_loss(w, Side::Direct, who, fatal).await {
            direct_wrong.push(format!("{who:?} {fatal:?}: {e}"));
        }
        if let Err(e) = no_loss(w, Side::Gate, who, fatal).await {
            gate_wrong.push(format!("{who:?} {fatal:?}: {e}"));
        }
    }
    assert!(
        direct_wrong.is_empty(),
        "the expectations are not nats-server's:\n{}",
        direct_wrong.join("\n")
    );
    assert!(
        gate_wrong.is_empty(),
        "natsgate loses or misorders (nats-server does not):\n{}",
        gate_wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_on_a_fatal_frame_nkey() {
    let w = World::start();
    let cases: Vec<(Who, Fatal)> = Fatal::ALL
        .into_iter()
        .filter(|&f| f != Fatal::JwtPayload)
        .map(|f| (Who::Nkey, f))
        .collect();
    check_no_loss(&w, &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_on_a_fatal_frame_jwt() {
    let w = World::start();
    check_no_loss(
        &w,
        &[
            (Who::Pay, Fatal::JwtPayload),
            (Who::Alice, Fatal::UnknownOp),
            (Who::Alice, Fatal::BadSize),
        ],
    )
    .await;
}

/// [`LOAD`] numbered PUBs on `ok.load`.
fn load_pubs() -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in 0..LOAD {
        let p = i.to_string();
        bytes.extend_from_slice(format!("PUB ok.load {}\r\n{p}\r\n", p.len()).as_bytes());
    }
    bytes
}

/// A client that writes CONNECT and [`LOAD`] PUBs, then closes its socket
/// at once: every PUB reaches the subscriber, on nats-server and through
/// natsgate. (Here natsgate has usually written everything upstream before
/// it reads the client's end, so this does not force its close to drain a
/// backlog: the fatal-frame and SIGTERM tests do.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_right_after_publishing_loses_nothing() {
    let w = World::start();
    for side in [Side::Direct, Side::Gate] {
        let sub = match side {
            Side::Gate => upstream_subscriber(&w.upstream, "ok.load").await,
            Side::Direct => subscriber(w.addr(side, Kind::Nkey), &w.nkey, "ok.load").await,
        };
        let c = RawClient::connect(w.addr(side, Kind::Nkey)).await;
        let mut bytes = w.nkey.connect(&c, &json!({}));
        bytes.extend_from_slice(&load_pubs());
        let (mut stream, _) = c.into_parts();
        stream.write_all(&bytes).await.expect("write the batch");
        stream.shutdown().await.expect("close the write side");
        drop(stream);
        let got = sub
            .settle(LOAD, Duration::from_secs(2), Duration::from_secs(10))
            .await;
        assert_eq!(got, LOAD, "{side:?}: the subscriber got {got} of {LOAD}");
        assert_eq!(sub.disorder(), None, "{side:?}");
    }
}

/// A second CONNECT that needs another upstream connection (here: `echo`
/// changes) makes natsgate close (README: where natsgate cannot behave like
/// nats-server). What came before it is not lost: the PUBs reach the
/// subscriber, the PING before it is answered, and the close has no -ERR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_that_needs_another_upstream_loses_nothing() {
    let w = World::start();
    let sub = upstream_subscriber(&w.upstream, "ok.load").await;
    let mut c = RawClient::connect(w.gate.addr()).await;
    let mut bytes = w.nkey.connect(&c, &json!({}));
    bytes.extend_from_slice(&load_pubs());
    bytes.extend_from_slice(PING);
    bytes.extend_from_slice(&w.nkey.connect(&c, &json!({"echo": false})));
    c.set_timeout(Duration::from_secs(10));
    c.send(&bytes).await;
    let (frames, end) = read_until(&mut c, Until::Close, Duration::from_secs(10)).await;
    assert_eq!((frames, end), (vec![Frame::Pong], End::Closed));
    let got = sub
        .settle(LOAD, Duration::from_secs(2), Duration::from_secs(10))
        .await;
    assert_eq!(got, LOAD, "the subscriber got {got} of {LOAD}");
    assert_eq!(sub.disorder(), None);
}

// ---------------------------------------------------------------------------
// SIGTERM while a client publishes
// ---------------------------------------------------------------------------

/// One HTTP/1.1 GET over a blocking socket (so a busy test runtime does
/// not delay it), bounded: the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    const WAIT: Duration = Duration::from_secs(2);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, WAIT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed response {response:?}"))?;
    if head.split(' ').nth(1) != Some("200") {
        return Err(format!("status line {head:?}"));
    }
    Ok(body.to_owned())
}

/// `natsgate_messages_total{direction="client_to_upstream"}` in a scrape.
fn accepted_pubs(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix("natsgate_messages_total{direction=\"client_to_upstream\"} ")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    })
}

/// A scrape: when it started and the accepted count it read (`None`: no
/// answer).
type Scrape = (Instant, Option<u64>);

/// The natsgate binary with `shutdown_grace = "1s"` and `[metrics]`; a
/// client publishes sequence-numbered PUBs as fast as it can (batches of
/// 1,000, at most 2,000,000) to `ok.t`, which a plain subscriber on the
/// upstream listens on; SIGTERM arrives while it publishes.
///
/// How "what natsgate accepted" is known. Only natsgate knows how far it
/// read: the bytes still in the socket buffers when it closes were never
/// accepted, and nothing on the wire tells them apart from bytes it read
/// and dropped. So the count comes from natsgate, in one of two ways
/// (the publisher is natsgate's only client; the subscriber is on the
/// upstream directly):
///
/// 1. Its log (`RUST_LOG=info,natsgate=debug`): the last line with a
///    `pubs_accepted=<n>` field, which natsgate writes when it closes a
///    client connection (the PUB/HPUBs it accepted from that client). This
///    is exact and race-free: stderr is read to the end after the exit.
/// 2. `/metrics`: `natsgate_messages_total{direction="client_to_upstream"}`,
///    scraped every few milliseconds until natsgate exits; the last value
///    read by a scrape that *started after* the client saw its connection
///    close. A close that loses nothing forwards what it accepted and waits
///    for the upstream before it closes the client, so by then the counter
///    no longer moves. This needs `/metrics` served while connections
///    drain, and a scrape that wins the race against the exit.
///
/// When both are there they must agree. When neither is, the test fails
/// and says so. The subscriber must then receive exactly that many, in
/// sequence (0, 1, 2, ...: no gap, no duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_no_accepted_pub() {
    const CAP: u64 = 2_000_000;
    const BATCH: u64 = 1_000;
    const GRACE: Duration = Duration::from_secs(1);

    let upstream = NatsServer::start(&j::upstream_config(PASSWORD));
    let user = User {
        kp: keys::new_user(),
        jwt: None,
    };
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\n\
         [upstream]\nservers = [{}]\nuser = \"gate\"\npassword = {}\n\n\
         [[users]]\nnkey = {}\nname = \"publisher\"\n\n\
         [metrics]\naddr = \"127.0.0.1:0\"\n",
        quote_toml(&upstream.url()),
        quote_toml(PASSWORD),
        quote_toml(&user.kp.public_key()),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("natsgate.toml");
    std::fs::write(&config, &toml).expect("write config");
    let mut gate = spawn_gate_binary_at(&config, Some("info,natsgate=debug"));
    let metrics = gate.metrics_addr().await;
    let first = tokio::task::spawn_blocking(move || http_get(metrics, "/metrics"))
        .await
        .expect("scrape task");
    assert!(
        first.is_ok_and(|m| accepted_pubs(&m).is_some()),
        "natsgate_messages_total{{direction=\"client_to_upstream\"}} is not in /metrics"
    );

    let sub = upstream_subscriber(&upstream, "ok.t").await;

    // The publisher: logged in, then split into a reader (which notes the
    // close) and a writer.
    let mut c = RawClient::connect(gate.addr).await;
    let line = user.connect(&c, &json!({}));
    c.send(&line).await;
    let frames = c.flush().await;
    assert!(
        frames.iter().all(|f| matches!(f, Frame::Info(_))),
        "login answered {frames:?}"
    );
    // Blocking sockets on their own threads: the moment of the close is
    // noted at once even while the test runtime is busy counting.
    let (stream, _) = c.into_parts();
    let mut wr = stream.into_std().expect("into_std");
    wr.set_nonblocking(false).expect("blocking socket");
    wr.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let mut rd = wr.try_clone().expect("clone the socket");
    rd.set_read_timeout(Some(GRACE + Duration::from_secs(10)))
        .expect("read timeout");
    let closed: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let closed_r = closed.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read as _;
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(rd.read(&mut buf), Ok(n) if n > 0) {}
        *closed_r.lock().unwrap() = Some(Instant::now());
    });
    let closed_w = closed.clone();
    let progress = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let (progress_w, writing_w) = (progress.clone(), writing.clone());
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        let mut written = 0u64;
        let mut batch = Vec::with_capacity(32 * BATCH as usize);
        let stop = loop {
            if written >= CAP {
                break "the cap was reached".to_owned();
            }
            if closed_w.lock().unwrap().is_some() {
                break "the connection closed".to_owned();
            }
            batch.clear();
            for seq in written..written + BATCH {
                let p = seq.to_string();
                batch.extend_from_slice(format!("PUB ok.t {}\r\n{p}\r\n", p.len()).as_bytes());
            }
            match wr.write_all(&batch) {
                Ok(()) => {
                    written += BATCH;
                    progress_w.store(written, Ordering::Release);
                }
                Err(e) => break format!("a write failed: {e}"),
            }
        };
        writing_w.store(false, Ordering::Release);
        (written, stop)
    });

    let scrapes: Arc<Mutex<Vec<Scrape>>> = Arc::new(Mutex::new(Vec::new()));
    let scraping = Arc::new(AtomicBool::new(true));
    let scraper = {
        let scrapes = scrapes.clone();
        let scraping = scraping.clone();
        std::thread::spawn(move || {
            while scraping.load(Ordering::Acquire) {
                let started = Instant::now();
                let value = http_get(metrics, "/metrics")
                    .ok()
                    .and_then(|m| accepted_pubs(&m));
                scrapes.lock().unwrap().push((started, value));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // Publishing is under way: the subscriber sees messages.
    let flowing = sub
        .settle(20_000, Duration::from_secs(5), Duration::from_secs(10))
        .await;
    assert!(
        flowing >= 20_000,
        "only {flowing} messages arrived before SIGTERM; log:\n{}",
        gate.log()
    );
    assert!(
        writing.load(Ordering::Acquire),
        "the publisher stopped before SIGTERM"
    );
    let written_at_sigterm = progress.load(Ordering::Acquire);
    let sent = Instant::now();
    gate.signal("TERM");

    let closed_at = loop {
        if let Some(t) = *closed.lock().unwrap() {
            break t;
        }
        assert!(
            sent.elapsed() < GRACE + Duration::from_secs(5),
            "the publisher's connection was not closed within grace + 5s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Both threads end within their socket timeouts.
    let (written, stop) = tokio::task::spawn_blocking(move || writer.join())
        .await
        .expect("join task")
        .expect("the writer thread");
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;

    let status = loop {
        if let Some(status) = gate.exited() {
            break status;
        }
        assert!(
            sent.elapsed() < GRACE + Duration::from_secs(5),
            "natsgate did not exit within grace + 5s of SIGTERM:\n{}",
            gate.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    scraping.store(false, Ordering::Release);
    // Each scrape is bounded (2s per step), so the thread ends soon.
    let _ = tokio::task::spawn_blocking(move || scraper.join()).await;
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", gate.log());

    let scrapes = scrapes.lock().unwrap().clone();
    let before: Vec<u64> = scrapes
        .iter()
        .filter(|(t, _)| *t < closed_at)
        .filter_map(|(_, v)| *v)
        .collect();
    let after: Vec<u64> = scrapes
        .iter()
        .filter(|(t, _)| *t > closed_at)
        .filter_map(|(_, v)| *v)
        .collect();
    let logged = accepted_from_log(&gate).await;
    eprintln!(
        "SIGTERM after {written_at_sigterm} PUBs written; {written} written in all ({stop}); \
         the publisher's connection closed {:?} after SIGTERM; accepted: logged {logged:?}, \
         /metrics last read before the close {:?}, after it {:?}",
        closed_at - sent,
        before.last(),
        after.last()
    );
    if let (Some(l), Some(&m)) = (logged, after.last()) {
        assert_eq!(
            l, m,
            "natsgate logged pubs_accepted={l} but /metrics said {m} after the close"
        );
    }
    let Some(accepted) = logged.or(after.last().copied()) else {
        let received = sub
            .settle(u64::MAX, Duration::from_secs(1), Duration::from_secs(10))
            .await;
        panic!(
            "cannot read what natsgate accepted: no `pubs_accepted=<n>` in its log, and it \
             answered no /metrics scrape started after it closed the publisher's connection \
             ({} scrapes before the close answered, the last read {:?}; {} scrapes after it \
             got no answer). The connection closed {:?} after SIGTERM (grace {GRACE:?}); the \
             subscriber received {received}. The end of natsgate's log:\n{}",
            before.len(),
            before.last(),
            scrapes.iter().filter(|(t, _)| *t > closed_at).count(),
            closed_at - sent,
            log_tail(&gate, 30),
        );
    };
    let received = sub
        .settle(accepted, Duration::from_secs(1), Duration::from_secs(10))
        .await;
    // Give a surplus (more than accepted) a moment to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = received.max(sub.get());
    eprintln!("SIGTERM: natsgate accepted {accepted}, the subscriber received {received}");
    assert!(accepted > 0, "natsgate accepted nothing");
    assert_eq!(sub.disorder(), None, "deliveries out of sequence");
    assert_eq!(
        received, accepted,
        "natsgate accepted {accepted} PUBs but the subscriber received {received}"
    );
}

/// The last `n` lines of natsgate's log.
fn log_tail(gate: &GateProcess, n: usize) -> String {
    let lines = gate.log_lines();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `<n>` of the last `pubs_accepted=<n>` in natsgate's log, once its
/// stderr has been read to the end (natsgate has exited; bounded).
async fn accepted_from_log(gate: &GateProcess) -> Option<u64> {
    let find = || {
        gate.log_lines().iter().rev().find_map(|l| {
            let (_, rest) = l.split_once("pubs_accepted=")?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
    };
    // The stderr reader may still be behind the exit: give it a moment.
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        if let Some(n) = find() {
            return Some(n);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Random interleavings against a reference model of nats-server's ordering
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Step {
    Ping,
    /// Allowed PUB to a subject nobody subscribes to.
    Pub,
    DeniedPub,
    /// Allowed SUB (a fresh sid each).
    Sub,
    DeniedSub,
}

#[derive(Clone, Debug)]
struct Interleaving {
    /// The JWT user `pay` instead of the static NKey user.
    jwt: bool,
    verbose: bool,
    steps: Vec<Step>,
    fatal: Option<Fatal>,
    /// Steps sent after the fatal frame (they must get nothing).
    after: Vec<Step>,
    writes: Writes,
}

fn step() -> impl Strategy<Value = Step> {
    select(vec![
        Step::Ping,
        Step::Pub,
        Step::DeniedPub,
        Step::Sub,
        Step::DeniedSub,
    ])
}

fn interleaving() -> impl Strategy<Value = Interleaving> {
    let writes = prop_oneof![
        Just(Writes::One),
        Just(Writes::PerOp),
        proptest::collection::vec(0usize..8192, 1..=6).prop_map(Writes::Cuts),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(step(), 0..=30),
        proptest::option::weighted(0.5, select(Fatal::ALL.to_vec())),
        proptest::collection::vec(step(), 0..=3),
        writes,
    )
        .prop_map(|(jwt, verbose, steps, fatal, after, writes)| Interleaving {
            jwt,
            verbose,
            steps,
            // The payload limit is the JWT user's; the NKey user gets the
            // server's max_payload instead.
            fatal: fatal.map(|f| match f {
                Fatal::JwtPayload if !jwt => Fatal::MaxPayload,
                f => f,
            }),
            after: if fatal.is_some() { after } else { Vec::new() },
            writes,
        })
}

impl Interleaving {
    fn who(&self) -> Who {
        if self.jwt { Who::Pay } else { Who::Nkey }
    }

    fn extra(&self) -> Value {
        json!({
            "verbose": self.verbose,
            "headers": self.fatal.is_none_or(Fatal::headers),
        })
    }

    /// The ops after CONNECT: the steps, then the fatal frame and the steps
    /// after it, or a final PING.
    fn ops(&self) -> Vec<Vec<u8>> {
        let mut sid = 0;
        let mut wire = |s: &Step| -> Vec<u8> {
            match s {
                Step::Ping => PING.to_vec(),
                Step::Pub => ALLOWED_PUB.to_vec(),
                Step::DeniedPub => DENIED_PUB.to_vec(),
                Step::Sub => {
                    sid += 1;
                    format!("SUB ok.s.{sid} {sid}\r\n").into_bytes()
                }
                Step::DeniedSub => DENIED_SUB.to_vec(),
            }
        };
        let mut ops: Vec<Vec<u8>> = self.steps.iter().map(&mut wire).collect();
        match self.fatal {
            Some(f) => {
                ops.push(f.bytes());
                ops.extend(self.after.iter().map(&mut wire));
            }
            None => ops.push(PING.to_vec()),
        }
        ops
    }

    fn until(&self) -> Until {
        match self.fatal {
            Some(_) => Until::Close,
            None => {
                let pings = self
                    .steps
                    .iter()
                    .filter(|s| matches!(s, Step::Ping))
                    .count();
                Until::Pongs(pings + 1)
            }
        }
    }

    /// The reference model: nats-server answers every op in order. PING ->
    /// PONG; allowed PUB or SUB -> `+OK` when verbose; denied PUB or SUB ->
    /// its `-ERR`; the fatal frame -> its `-ERR` if any, then the close, and
    /// nothing for what follows it. `+OK` for CONNECT comes first.
    fn predict(&self) -> (Vec<Frame>, End) {
        let mut out = Vec::new();
        if self.verbose {
            out.push(Frame::Ok);
        }
        for s in &self.steps {
            match s {
                Step::Ping => out.push(Frame::Pong),
                Step::Pub | Step::Sub => {
                    if self.verbose {
                        out.push(Frame::Ok);
                    }
                }
                Step::DeniedPub => out.push(pub_denied()),
                Step::DeniedSub => out.push(sub_denied()),
            }
        }
        match self.fatal {
            Some(f) => {
                out.extend(f.err());
                (out, End::Closed)
            }
            None => {
                out.push(Frame::Pong);
                (out, End::Open)
            }
        }
    }

    fn describe(&self) -> String {
        let writes = match &self.writes {
            Writes::Cuts(cuts) => {
                let len: usize = self.ops().iter().map(Vec::len).sum::<usize>();
                // CONNECT's length varies; the offsets are into the whole stream.
                format!("cut at {cuts:?} (mod the stream's length; {len} bytes after CONNECT)")
            }
            w => format!("{w:?}"),
        };
        format!(
            "{} user, verbose {}, {writes}, steps {:?}, fatal {:?}, after {:?}",
            if self.jwt { "JWT" } else { "NKey" },
            self.verbose,
            self.steps,
            self.fatal,
            self.after
        )
    }
}

/// The index of the first frame where `a` and `b` differ.
fn first_difference(a: &[Frame], b: &[Frame]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_match_the_ordering_model() {
    let n = env_usize("NATSGATE_ORDER_CASES", DEFAULT_CASES);
    let cases = generate_cases(interleaving(), "NATSGATE_ORDER_SEED", DEFAULT_SEED, n);
    let w = World::start();
    let mut direct_wrong = Vec::new();
    let mut gate_wrong = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let who = case.who();
        let (extra, ops, until) = (case.extra(), case.ops(), case.until());
        let want = case.predict();
        let run = async |side| {
            exchange(
                w.addr(side, who.kind()),
                w.user(who),
                &extra,
                &ops,
                &case.writes,
                until,
            )
            .await
        };
        let direct = run(Side::Direct).await;
        let gate = run(Side::Gate).await;
        if direct != want {
            direct_wrong.push(format!(
                "case {i}: {}\n  nats-server {direct:?}\n  model       {want:?}\n  first \
                 difference at frame {}",
                case.describe(),
                first_difference(&direct.0, &want.0)
            ));
        }
        if gate != want {
            gate_wrong.push(format!(
                "case {i}: {}\n  natsgate {gate:?}\n  model    {want:?}\n  first difference at \
                 frame {}",
                case.describe(),
                first_difference(&gate.0, &want.0)
            ));
        }
    }
    // The first few failures are listed; the count says how many there were.
    assert!(
        direct_wrong.is_empty(),
        "the model is not nats-server's ordering ({} of {n} cases):\n{}",
        direct_wrong.len(),
        direct_wrong[..direct_wrong.len().min(5)].join("\n")
    );
    assert!(
        gate_wrong.is_empty(),
        "natsgate differs from the model ({} of {n} cases; the model matched nats-server \
         in all of them):\n{}",
        gate_wrong.len(),
        gate_wrong[..gate_wrong.len().min(5)].join("\n")
    );
}
