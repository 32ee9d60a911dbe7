//! JWT behaviour at runtime: account JWT updates (revocation, refused
//! updates, added accounts), user and account expiry while connected,
//! account `conn` and user `subs`/`payload` limits, per-account upstream
//! credentials, `$SYS.REQ.USER.INFO` and the limit-0 `subs` quirk.
//!
//! Where nats-server's behaviour is observable, the same operator, accounts
//! and users run against nats-server in operator mode (side D: a `full`
//! NATS resolver with a system account, so account updates can be pushed to
//! `$SYS.REQ.CLAIMS.UPDATE`, spec 6.3) and against natsgate (side G: `[jwt]`
//! with an `accounts_dir`, in front of a plain nats-server). natsgate picks
//! up account changes by polling the directory every second.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nkeys::KeyPair;
use serde_json::{Value, json};
use support::jwt::{self as j, AccountClaims, Permission, ResponsePermission, UserClaims};
use support::{Frame, Gate, NatsServer, RawClient, ReadError, quote_conf, quote_toml};

const GATE_PASSWORD: &str = "jwt-runtime-gate-s3cret";
/// Bound for ordinary waits.
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Minting
// ---------------------------------------------------------------------------

/// An operator with a system account `SYS` and one system user.
struct World {
    op: j::Operator,
    sys: (String, String),
    sys_user: (KeyPair, String),
}

fn world() -> World {
    let sys = KeyPair::new_account();
    let op = j::operator("rt", false, Some(&sys.public_key()));
    let sys_jwt = j::sign_account(&j::account_claims(&sys, "SYS"), &op.signing);
    let sys_user = user(&sys, "sys", |_| {});
    World {
        sys: (sys.public_key(), sys_jwt),
        sys_user,
        op,
    }
}

/// An account's key pair and claims (nsc-like: every limit -1).
fn account(name: &str) -> (KeyPair, AccountClaims) {
    let kp = KeyPair::new_account();
    let c = j::account_claims(&kp, name);
    (kp, c)
}

/// A user of account `acc` (signed by its identity key), edited by `f`.
fn user(acc: &KeyPair, name: &str, f: impl FnOnce(&mut UserClaims)) -> (KeyPair, String) {
    let kp = KeyPair::new_user();
    let mut c = j::user_claims(&kp, name);
    f(&mut c);
    let jwt = j::sign_user(&c, acc);
    (kp, jwt)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// Sides
// ---------------------------------------------------------------------------

struct Sides {
    direct: NatsServer,
    _upstream: NatsServer,
    gate: Gate,
    _resolver_dir: tempfile::TempDir,
}

impl Sides {
    fn d(&self) -> SocketAddr {
        self.direct.addr()
    }

    fn g(&self) -> SocketAddr {
        self.gate.addr()
    }

    /// Replaces (or adds) an account file in natsgate's `accounts_dir`,
    /// atomically (write + rename) so a poll never sees half a file.
    fn write_gate_account(&self, key: &str, content: &str) {
        write_atomically(&self.gate.dir().join("jwt"), key, content);
    }
}

fn write_atomically(dir: &Path, key: &str, content: &str) {
    let tmp = dir.join(format!("{key}.tmp"));
    std::fs::write(&tmp, content).expect("write account JWT");
    std::fs::rename(&tmp, dir.join(format!("{key}.jwt"))).expect("rename account JWT");
}

/// Starts side D (operator mode, full resolver, system account, preloaded
/// with SYS and `accounts`), a plain upstream (`upstream_conf`, default: only
/// natsgate's `gate` user) and natsgate (`accounts` in its `accounts_dir`,
/// `gate_extra` appended to its TOML).
fn start(
    w: &World,
    accounts: &[(String, String)],
    upstream_conf: Option<String>,
    gate_extra: &str,
) -> Sides {
    let resolver_dir = tempfile::Builder::new()
        .prefix("natsgate-test-resolver-")
        .tempdir()
        .expect("tempdir");
    let mut conf = format!(
        "operator: {}\nsystem_account: {}\nresolver {{ type: full, dir: {} }}\nresolver_preload: {{\n  {}: {}\n",
        quote_conf(&w.op.jwt),
        quote_conf(&w.sys.0),
        quote_conf(&resolver_dir.path().to_string_lossy()),
        w.sys.0,
        quote_conf(&w.sys.1),
    );
    for (key, jwt) in accounts {
        conf.push_str(&format!("  {key}: {}\n", quote_conf(jwt)));
    }
    conf.push_str("}\n");
    let direct = NatsServer::start(&conf);
    let upstream =
        NatsServer::start(&upstream_conf.unwrap_or_else(|| j::upstream_config(GATE_PASSWORD)));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toml = j::gate_setup(
        dir.path(),
        &upstream.url(),
        GATE_PASSWORD,
        &[&w.op.jwt],
        accounts,
    );
    toml.push_str(gate_extra);
    let gate = Gate::start_with_dir(&toml, dir);
    Sides {
        direct,
        _upstream: upstream,
        gate,
        _resolver_dir: resolver_dir,
    }
}

// ---------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------

fn errors(frames: &[Frame]) -> Vec<Frame> {
    frames
        .iter()
        .filter(|f| matches!(f, Frame::Err(_)))
        .cloned()
        .collect()
}

fn without_info(frames: Vec<Frame>) -> Vec<Frame> {
    frames
        .into_iter()
        .filter(|f| !matches!(f, Frame::Info(_)))
        .collect()
}

/// Logs in and flushes; panics on any `-ERR`. Returns the client and the
/// frames of the first flush (the connect-info INFO with protocol 1).
async fn try_login(
    addr: SocketAddr,
    jwt: &str,
    kp: &KeyPair,
) -> Result<(RawClient, Vec<Frame>), String> {
    let mut c = RawClient::connect(addr).await;
    j::connect_jwt(&mut c, jwt, Some(kp), json!({})).await;
    match c.try_flush().await {
        Ok(frames) if errors(&frames).is_empty() => Ok((c, frames)),
        Ok(frames) => Err(format!("login at {addr} got {frames:?}")),
        Err(e) => Err(format!("login at {addr}: {} after {:?}", e.error, e.frames)),
    }
}

async fn login(addr: SocketAddr, jwt: &str, kp: &KeyPair) -> RawClient {
    match try_login(addr, jwt, kp).await {
        Ok((c, _)) => c,
        Err(e) => panic!("{e}"),
    }
}

/// CONNECT + PING, then the frames (no INFO) up to the close.
async fn refused_login(addr: SocketAddr, jwt: &str, kp: &KeyPair) -> Vec<Frame> {
    let mut c = RawClient::connect(addr).await;
    j::connect_jwt(&mut c, jwt, Some(kp), json!({})).await;
    c.send(b"PING\r\n").await;
    without_info(c.expect_closed().await)
}

/// Reads until the peer closes (bounded by `within`), answering PINGs.
/// Returns the frames (no INFO) and when the first `-ERR` arrived.
async fn until_closed(c: &mut RawClient, within: Duration) -> (Vec<Frame>, Option<SystemTime>) {
    let deadline = tokio::time::Instant::now() + within;
    let mut frames = Vec::new();
    let mut err_at = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_read_frame_within(left).await {
            Ok(Frame::Ping) => {
                let _ = c.try_send(b"PONG\r\n").await;
            }
            Ok(Frame::Info(_)) => {}
            Ok(f) => {
                if matches!(f, Frame::Err(_)) && err_at.is_none() {
                    err_at = Some(SystemTime::now());
                }
                frames.push(f);
            }
            Err(ReadError::Closed { .. } | ReadError::Io(_)) => return (frames, err_at),
            Err(e) => panic!("expected a close within {within:?}: {e}; frames so far: {frames:?}"),
        }
    }
}

/// Asserts the connection still works: a PING is answered with nothing before the PONG.
async fn assert_alive(c: &mut RawClient, what: &str) {
    match c.try_flush().await {
        Ok(frames) => assert!(
            without_info(frames.clone()).is_empty(),
            "{what}: unexpected frames {frames:?}"
        ),
        Err(e) => panic!(
            "{what}: connection not alive: {} after {:?}",
            e.error, e.frames
        ),
    }
}

/// Subscribes `c` to `subject`, publishes from `p` and expects delivery.
async fn assert_delivers(p: &mut RawClient, c: &mut RawClient, subject: &str, what: &str) {
    c.send(format!("SUB {subject} 77\r\n").as_bytes()).await;
    assert_alive(c, what).await;
    p.send(format!("PUB {subject} 2\r\nhi\r\n").as_bytes())
        .await;
    assert_alive(p, what).await;
    let f = c
        .try_read_frame_within(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{what}: no delivery: {e}"));
    assert_eq!(f, Frame::msg(subject, "77", b"hi"), "{what}");
    c.send(b"UNSUB 77\r\n").await;
}

/// Pushes an account JWT to side D through `$SYS.REQ.CLAIMS.UPDATE` and
/// returns the server's answer. (async-nats: the server's reply MSG line has
/// an empty reply field, `MSG <subj> <sid>  <n>`, which RawClient refuses.)
async fn push_claims(d: SocketAddr, w: &World, account_jwt: &str) -> String {
    let creds = j::creds(&w.sys_user.1, &w.sys_user.0);
    let nc = tokio::time::timeout(WAIT, async {
        async_nats::ConnectOptions::with_credentials(&creds)
            .expect("sys creds")
            .connect(format!("nats://{d}"))
            .await
    })
    .await
    .expect("sys connect timed out")
    .expect("sys connect");
    let msg = tokio::time::timeout(
        WAIT,
        nc.request("$SYS.REQ.CLAIMS.UPDATE", account_jwt.to_owned().into()),
    )
    .await
    .expect("claims update timed out")
    .expect("claims update request");
    String::from_utf8_lossy(&msg.payload).into_owned()
}

fn at(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).expect("positive"))
}

/// Asserts `t` is within `[exp - 100ms, exp + 1.5s]`.
fn assert_fired_in_window(t: Option<SystemTime>, exp: i64, what: &str) {
    let t = t.unwrap_or_else(|| panic!("{what}: no -ERR"));
    let lo = at(exp) - Duration::from_millis(100);
    let hi = at(exp) + Duration::from_millis(1500);
    let rel = |x: SystemTime| match x.duration_since(at(exp)) {
        Ok(d) => format!("exp+{d:?}"),
        Err(e) => format!("exp-{:?}", e.duration()),
    };
    assert!(
        t >= lo && t <= hi,
        "{what}: -ERR at {}, expected within [exp-100ms, exp+1.5s]",
        rel(t)
    );
}

// ---------------------------------------------------------------------------
// 1-3: account JWT updates
// ---------------------------------------------------------------------------

/// Spec 3.10: an account update revoking a connected user disconnects it
/// with `User Authentication Revoked`; other users stay; a new login fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_revocation_disconnects_only_the_revoked_user() {
    let w = world();
    let (acc, mut ac) = account("REV");
    let victim = user(&acc, "victim", |_| {});
    let other = user(&acc, "other", |_| {});
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");

    let mut clients = Vec::new();
    for addr in [sides.d(), sides.g()] {
        let v = login(addr, &victim.1, &victim.0).await;
        let o = login(addr, &other.1, &other.0).await;
        let o2 = login(addr, &other.1, &other.0).await;
        clients.push((v, o, o2));
    }

    // Revocation time >= the victim's iat (same second or later).
    ac.nats
        .revocations
        .insert(victim.0.public_key(), j::unix_now());
    let revoked_jwt = j::sign_account(&ac, &w.op.signing);
    let answer = push_claims(sides.d(), &w, &revoked_jwt).await;
    assert!(
        answer.contains("jwt updated"),
        "side D refused the update: {answer}"
    );
    let written = Instant::now();
    sides.write_gate_account(&acc.public_key(), &revoked_jwt);

    for (side, (addr, (v, o, o2))) in ["D", "G"]
        .into_iter()
        .zip([sides.d(), sides.g()].into_iter().zip(clients.iter_mut()))
    {
        let (frames, _) = until_closed(v, Duration::from_secs(3)).await;
        assert_eq!(
            frames,
            vec![Frame::err("User Authentication Revoked")],
            "side {side}: the revoked user's last frames"
        );
        if side == "G" {
            let took = written.elapsed();
            assert!(
                took < Duration::from_millis(2500),
                "side G: revoked only after {took:?}"
            );
        }
        assert_alive(o, &format!("side {side}: other user")).await;
        assert_delivers(
            o,
            o2,
            "x.y",
            &format!("side {side}: other users still work"),
        )
        .await;
        let refused = refused_login(addr, &victim.1, &victim.0).await;
        assert_eq!(
            refused,
            vec![Frame::err("Authorization Violation")],
            "side {side}: new login of the revoked user"
        );
        let _ = try_login(addr, &other.1, &other.0)
            .await
            .unwrap_or_else(|e| panic!("side {side}: new login of another user: {e}"));
    }
    sides.gate.assert_running();
}

/// A changed account file that fails validation is refused and the old JWT
/// stays (existing and new logins keep working); a later valid change to
/// the same file still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_account_update_is_refused_and_old_jwt_stays() {
    let w = world();
    let (acc, mut ac) = account("KEEP");
    let u = user(&acc, "u", |_| {});
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");
    let key = acc.public_key();

    // If applied, each of these would revoke `u`.
    ac.nats.revocations.insert(u.0.public_key(), j::unix_now());
    let untrusted = j::operator("evil", false, None);
    let bad_signer = j::sign_account(&ac, &untrusted.signing);
    let mut tampered = j::sign_account(&ac, &w.op.signing);
    tampered.push('A'); // the signature no longer decodes to 64 bytes / verifies

    // Side D refuses the untrusted one too.
    // Side D stores it ("jwt updated") but does not apply it: the user
    // stays connected and can log in again.
    let mut d_conn = login(sides.d(), &u.1, &u.0).await;
    let answer = push_claims(sides.d(), &w, &bad_signer).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_alive(
        &mut d_conn,
        &format!("side D after the untrusted push ({answer})"),
    )
    .await;
    let _ = try_login(sides.d(), &u.1, &u.0)
        .await
        .unwrap_or_else(|e| panic!("side D after the untrusted push: {e}"));

    let mut g = login(sides.g(), &u.1, &u.0).await;
    for (what, content) in [
        ("untrusted signer", bad_signer.as_str()),
        ("tampered signature", tampered.as_str()),
        ("garbage", "this is not a JWT"),
    ] {
        sides.write_gate_account(&key, content);
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_alive(&mut g, &format!("after the {what} update: existing user")).await;
        let mut fresh = login(sides.g(), &u.1, &u.0).await;
        assert_alive(&mut fresh, &format!("after the {what} update: new login")).await;
    }
    drop(d_conn);

    // A valid update after refused ones is still noticed.
    sides.write_gate_account(&key, &j::sign_account(&ac, &w.op.signing));
    let (frames, _) = until_closed(&mut g, Duration::from_secs(3)).await;
    assert_eq!(
        frames,
        vec![Frame::err("User Authentication Revoked")],
        "the valid update after refused ones"
    );
    sides.gate.assert_running();
}

/// A new account file lets its users log in without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_account_file_allows_logins_without_restart() {
    let w = world();
    let (acc, ac) = account("FIRST");
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");
    let (acc2, ac2) = account("SECOND");
    let u = user(&acc2, "newbie", |_| {});
    let acc2_jwt = j::sign_account(&ac2, &w.op.signing);

    assert_eq!(
        refused_login(sides.g(), &u.1, &u.0).await,
        vec![Frame::err("Authorization Violation")],
        "side G: login before the account exists"
    );
    // Side D: push the new account, then log in.
    let answer = push_claims(sides.d(), &w, &acc2_jwt).await;
    assert!(answer.contains("jwt updated"), "side D: {answer}");
    let mut d = login(sides.d(), &u.1, &u.0).await;
    assert_alive(&mut d, "side D: user of the added account").await;

    let written = Instant::now();
    sides.write_gate_account(&acc2.public_key(), &acc2_jwt);
    let mut last = String::new();
    while written.elapsed() < Duration::from_secs(3) {
        match try_login(sides.g(), &u.1, &u.0).await {
            Ok((mut c, _)) => {
                let mut c2 = login(sides.g(), &u.1, &u.0).await;
                assert_delivers(&mut c, &mut c2, "new.acc", "side G: added account").await;
                return;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("side G: the added account was not usable within 3 s; last: {last}");
}

// ---------------------------------------------------------------------------
// 4-5: expiry while connected
// ---------------------------------------------------------------------------

/// Spec 3.12: user JWT `exp` while connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_jwt_expiry_while_connected() {
    let w = world();
    let (acc, ac) = account("EXPU");
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");
    let exp = j::unix_now() + 2;
    let u = user(&acc, "short", |c| c.expires = exp);
    let mut d = login(sides.d(), &u.1, &u.0).await;
    let mut g = login(sides.g(), &u.1, &u.0).await;
    let ((fd, td), (fg, tg)) = tokio::join!(
        until_closed(&mut d, Duration::from_secs(4)),
        until_closed(&mut g, Duration::from_secs(4))
    );
    let want = vec![Frame::err("User Authentication Expired")];
    assert_eq!(fd, want, "side D");
    assert_eq!(fg, want, "side G");
    assert_fired_in_window(td, exp, "side D");
    assert_fired_in_window(tg, exp, "side G");
}

/// Spec 3.12: account JWT `exp` while connected; then new logins fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_jwt_expiry_while_connected() {
    let w = world();
    let (acc, mut ac) = account("EXPA");
    let exp = j::unix_now() + 3;
    ac.expires = exp;
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");
    let u = user(&acc, "u", |_| {});
    let mut d = login(sides.d(), &u.1, &u.0).await;
    let mut g = login(sides.g(), &u.1, &u.0).await;
    let ((fd, td), (fg, tg)) = tokio::join!(
        until_closed(&mut d, Duration::from_secs(5)),
        until_closed(&mut g, Duration::from_secs(5))
    );
    let want = vec![Frame::err("Account Authentication Expired")];
    assert_eq!(fd, want, "side D");
    assert_eq!(fg, want, "side G");
    assert_fired_in_window(td, exp, "side D");
    assert_fired_in_window(tg, exp, "side G");
}

/// Sleeps until `ms` milliseconds after the Unix second `exp` began.
async fn sleep_until_after(exp: i64, ms: u64) {
    let t = at(exp) + Duration::from_millis(ms);
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        tokio::time::sleep(d).await;
    }
}

/// Spec 2.3 steps 3 and 10 (jwt `isExpired`: `time.Now().After(time.Unix(exp, 0))`):
/// a login at `exp + 300 ms` to an account whose JWT has that `exp` is
/// refused with `Authorization Violation`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_just_after_account_exp_is_refused() {
    let w = world();
    let (acc, mut ac) = account("EXPB");
    let exp = j::unix_now() + 2;
    ac.expires = exp;
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");
    let u = user(&acc, "u", |_| {});
    sleep_until_after(exp, 300).await;
    for (side, addr) in [("D", sides.d()), ("G", sides.g())] {
        assert_eq!(
            refused_login(addr, &u.1, &u.0).await,
            vec![Frame::err("Authorization Violation")],
            "side {side}: login at exp+300ms to the expired account"
        );
    }
    assert!(
        SystemTime::now() < at(exp + 1),
        "too slow: the logins left the second after exp"
    );
    // A second later both refuse.
    sleep_until_after(exp + 1, 100).await;
    for (side, addr) in [("D", sides.d()), ("G", sides.g())] {
        assert_eq!(
            refused_login(addr, &u.1, &u.0).await,
            vec![Frame::err("Authorization Violation")],
            "side {side}: login at exp+1.1s to the expired account"
        );
    }
}

/// The user JWT `exp` has whole-second granularity in nats-server: a login
/// at `exp + 300 ms` is still accepted and then closed at once with
/// `User Authentication Expired`. natsgate must do the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_just_after_user_exp() {
    let w = world();
    let (acc, ac) = account("EXPV");
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");
    let exp = j::unix_now() + 1;
    let u = user(&acc, "u", |c| c.expires = exp);
    sleep_until_after(exp, 300).await;
    let d = refused_login(sides.d(), &u.1, &u.0).await;
    let g = refused_login(sides.g(), &u.1, &u.0).await;
    assert!(
        SystemTime::now() < at(exp + 1),
        "too slow: the logins left the second after exp"
    );
    // Whether the PONG gets out before the (0 s) expiry timer fires varies
    // on side D; the -ERR does not.
    assert_eq!(
        errors(&d),
        vec![Frame::err("User Authentication Expired")],
        "side D (nats-server) at exp+300ms: {d:?}"
    );
    assert_eq!(
        errors(&g),
        errors(&d),
        "side G (natsgate) vs side D at exp+300ms: G {g:?}, D {d:?}"
    );
    // A second later both refuse.
    sleep_until_after(exp + 1, 100).await;
    for (side, addr) in [("D", sides.d()), ("G", sides.g())] {
        assert_eq!(
            refused_login(addr, &u.1, &u.0).await,
            vec![Frame::err("Authorization Violation")],
            "side {side}: login at exp+1.1s with the expired user JWT"
        );
    }
}

// ---------------------------------------------------------------------------
// 6-7: limits
// ---------------------------------------------------------------------------

/// Spec 6.1: account `limits.conn = 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_conn_limit() {
    let w = world();
    let (acc, mut ac) = account("ONE");
    ac.nats.limits.conn = 1;
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");
    let u = user(&acc, "u", |_| {});
    for (side, addr) in [("D", sides.d()), ("G", sides.g())] {
        let first = login(addr, &u.1, &u.0).await;
        assert_eq!(
            refused_login(addr, &u.1, &u.0).await,
            vec![Frame::err("maximum account active connections exceeded")],
            "side {side}: second connection of the account"
        );
        first.close().await;
        // The slot is freed asynchronously; retry briefly.
        let start = Instant::now();
        let mut last;
        loop {
            match try_login(addr, &u.1, &u.0).await {
                Ok(_) => break,
                Err(e) => last = e,
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "side {side}: no login after the first disconnected: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Spec 5.4: user `subs` 2 and `payload` 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_subs_and_payload_limits() {
    let w = world();
    let (acc, ac) = account("LIM");
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");
    let subs2 = user(&acc, "subs2", |c| c.nats.limits.subs = 2);
    let pay10 = user(&acc, "pay10", |c| c.nats.limits.payload = 10);

    let mut transcripts = Vec::new();
    for addr in [sides.d(), sides.g()] {
        let mut t = Vec::new();
        let mut c = login(addr, &subs2.1, &subs2.0).await;
        c.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n").await;
        t.push(format!("{:?}", without_info(c.flush().await)));
        // Still open; the third subscription does not exist.
        c.send(b"PUB c 1\r\nx\r\nPUB a 1\r\ny\r\n").await;
        t.push(format!("{:?}", without_info(c.flush().await)));
        c.send(b"UNSUB 1\r\nSUB d 4\r\n").await;
        t.push(format!("{:?}", without_info(c.flush().await)));

        let (mut p, mut frames) = try_login(addr, &pay10.1, &pay10.0)
            .await
            .expect("pay10 login");
        // The connect-info INFO follows the PONG of the first PING.
        while let Ok(f) = p.try_read_frame_within(Duration::from_millis(300)).await {
            frames.push(f);
        }
        let infos: Vec<Value> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Info(v) => Some(v.clone()),
                _ => None,
            })
            .collect();
        t.push(format!(
            "connect-info max_payload: {:?}",
            infos
                .iter()
                .map(|v| v["max_payload"].clone())
                .collect::<Vec<_>>()
        ));
        p.send(b"PUB p 10\r\n0123456789\r\n").await;
        t.push(format!("{:?}", without_info(p.flush().await)));
        p.send(b"PUB p 11\r\n0123456789A\r\n").await;
        let (f, _) = until_closed(&mut p, WAIT).await;
        t.push(format!("{f:?}"));
        transcripts.push(t);
    }
    let want = vec![
        "[-ERR 'maximum subscriptions exceeded']".to_string(),
        "[MSG a 1 \"y\"]".to_string(),
        "[]".to_string(),
        "connect-info max_payload: [Number(10)]".to_string(),
        "[]".to_string(),
        "[-ERR 'Maximum Payload Violation']".to_string(),
    ];
    assert_eq!(
        transcripts[0], want,
        "side D (nats-server) differs from the spec reading"
    );
    assert_eq!(
        transcripts[1], transcripts[0],
        "side G (natsgate) differs from side D"
    );
}

// ---------------------------------------------------------------------------
// 8: per-account upstream credentials
// ---------------------------------------------------------------------------

/// `[[upstream.accounts]]`: users of account A and B go upstream as
/// `gate-a` and `gate-b`, which live in different upstream accounts, so
/// their traffic is isolated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_accounts_isolate_traffic() {
    let w = world();
    let (a, ac_a) = account("ACC-A");
    let (b, ac_b) = account("ACC-B");
    let accounts = vec![
        (a.public_key(), j::sign_account(&ac_a, &w.op.signing)),
        (b.public_key(), j::sign_account(&ac_b, &w.op.signing)),
    ];
    let upstream = format!(
        "accounts {{\n  A: {{ users: [{{user: \"gate-a\", password: \"pa-s3cret\"}}] }}\n  \
         B: {{ users: [{{user: \"gate-b\", password: \"pb-s3cret\"}}] }}\n  \
         G: {{ users: [{{user: \"gate\", password: {}}}] }}\n}}\n",
        quote_conf(GATE_PASSWORD)
    );
    // A by account name, B by public key.
    let extra = format!(
        "\n[[upstream.accounts]]\naccount = \"ACC-A\"\nuser = \"gate-a\"\npassword = \"pa-s3cret\"\n\n\
         [[upstream.accounts]]\naccount = {}\nuser = \"gate-b\"\npassword = \"pb-s3cret\"\n",
        quote_toml(&b.public_key())
    );
    let sides = start(&w, &accounts, Some(upstream), &extra);
    let ua = user(&a, "ua", |_| {});
    let ua2 = user(&a, "ua2", |_| {});
    let ub = user(&b, "ub", |_| {});
    let ub2 = user(&b, "ub2", |_| {});
    let g = sides.g();
    let mut pa = login(g, &ua.1, &ua.0).await;
    let mut sa = login(g, &ua2.1, &ua2.0).await;
    let mut pb = login(g, &ub.1, &ub.0).await;
    let mut sb = login(g, &ub2.1, &ub2.0).await;
    for c in [&mut sa, &mut sb] {
        c.send(b"SUB x 1\r\n").await;
        assert_alive(c, "subscriber").await;
    }
    pa.send(b"PUB x 3\r\nfrA\r\n").await;
    assert_alive(&mut pa, "publisher A").await;
    assert_eq!(
        sa.try_read_frame_within(WAIT).await,
        Ok(Frame::msg("x", "1", b"frA")),
        "user of A receives A's message"
    );
    pb.send(b"PUB x 3\r\nfrB\r\n").await;
    assert_alive(&mut pb, "publisher B").await;
    assert_eq!(
        sb.try_read_frame_within(WAIT).await,
        Ok(Frame::msg("x", "1", b"frB")),
        "user of B receives B's message"
    );
    // Nothing crossed over: the only frames were the own account's.
    sa.expect_nothing_for(Duration::from_millis(300)).await;
    assert_eq!(
        without_info(sb.flush().await),
        vec![],
        "user of B got A's message"
    );
    assert_eq!(
        without_info(sa.flush().await),
        vec![],
        "user of A got B's message"
    );
}

// ---------------------------------------------------------------------------
// 9: $SYS.REQ.USER.INFO
// ---------------------------------------------------------------------------

/// Sorts every array of strings (nats-server's permission list order is
/// not stable from run to run).
fn sort_lists(v: &mut Value) {
    match v {
        Value::Array(a) => {
            a.iter_mut().for_each(sort_lists);
            a.sort_by_key(|x| x.to_string());
        }
        Value::Object(o) => o.values_mut().for_each(sort_lists),
        _ => {}
    }
}

async fn user_info(addr: SocketAddr, jwt: &str, kp: &KeyPair) -> Value {
    let mut c = login(addr, jwt, kp).await;
    c.send(b"SUB _INBOX.ui 1\r\nPUB $SYS.REQ.USER.INFO _INBOX.ui 0\r\n\r\n")
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_read_frame_within(left).await {
            Ok(Frame::Msg { payload, .. }) => {
                return serde_json::from_slice(&payload).unwrap_or_else(|e| {
                    panic!(
                        "{addr}: USER.INFO reply is not JSON ({e}): {}",
                        String::from_utf8_lossy(&payload)
                    )
                });
            }
            Ok(Frame::Ping) => c.send(b"PONG\r\n").await,
            Ok(Frame::Info(_)) => {}
            Ok(f) => panic!("{addr}: unexpected frame while waiting for USER.INFO: {f:?}"),
            Err(e) => panic!("{addr}: no USER.INFO reply: {e}"),
        }
    }
}

/// Spec 9.4: natsgate answers `$SYS.REQ.USER.INFO` for the client's own
/// identity as nats-server does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_info_matches_nats_server() {
    let w = world();
    let (acc, ac) = account("INFOACC");
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");
    let u = user(&acc, "bob", |c| {
        c.expires = j::unix_now() + 3600;
        c.nats.limits.publish = Permission {
            allow: strings(&["a.>", "$SYS.REQ.USER.INFO"]),
            deny: strings(&["a.secret"]),
        };
        c.nats.limits.subscribe = Permission {
            allow: strings(&["_INBOX.>"]),
            deny: strings(&["_INBOX.x"]),
        };
        c.nats.limits.response = Some(ResponsePermission {
            max: 1,
            ttl: 120_000_000_000,
        });
    });
    let (d, g) = tokio::join!(
        user_info(sides.d(), &u.1, &u.0),
        user_info(sides.g(), &u.1, &u.0)
    );
    let mut dd = d["data"].clone();
    let mut gd = g["data"].clone();
    assert_eq!(dd["user"], json!(u.0.public_key()), "side D: {d}");
    let de = dd.as_object_mut().and_then(|o| o.remove("expires"));
    let ge = gd.as_object_mut().and_then(|o| o.remove("expires"));
    sort_lists(&mut dd);
    sort_lists(&mut gd);
    assert_eq!(gd, dd, "USER.INFO data: G (left) vs D (right)");
    let (de, ge) = (
        de.and_then(|v| v.as_i64()).expect("side D: expires"),
        ge.and_then(|v| v.as_i64())
            .unwrap_or_else(|| panic!("side G: no numeric expires in {g}")),
    );
    assert!(
        (de - ge).abs() < 3_000_000_000,
        "expires: D {de} ns, G {ge} ns"
    );
    assert!(g["server"].is_object(), "side G: no server object: {g}");
}

// ---------------------------------------------------------------------------
// 10: user JWT without `subs`
// ---------------------------------------------------------------------------

/// CONNECT and a pipelined PING, then every frame (INFO as `INFO`) with the
/// milliseconds since the CONNECT was sent, up to the close (or 1.5 s).
async fn limit0_transcript(
    addr: SocketAddr,
    jwt: &str,
    kp: &KeyPair,
) -> (Vec<String>, Vec<u128>, bool) {
    let mut c = RawClient::connect(addr).await;
    let sent = Instant::now();
    j::connect_jwt(&mut c, jwt, Some(kp), json!({})).await;
    c.send(b"PING\r\n").await;
    let mut frames = Vec::new();
    let mut times = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_read_frame_within(left).await {
            Ok(f) => {
                times.push(sent.elapsed().as_millis());
                frames.push(match f {
                    Frame::Info(v) => format!("INFO max_payload={}", v["max_payload"]),
                    f => format!("{f:?}"),
                });
            }
            Err(ReadError::Closed { .. } | ReadError::Io(_)) => {
                times.push(sent.elapsed().as_millis());
                frames.push("<closed>".into());
                return (frames, times, true);
            }
            Err(ReadError::Timeout) => return (frames, times, false),
            Err(e) => panic!("{addr}: {e}"),
        }
    }
}

/// Spec 5.4 / 2.2: a hand-made user JWT without `subs` has a subscription
/// limit of 0: nats-server sends `-ERR 'maximum subscriptions exceeded'`
/// right after CONNECT and closes ~20 ms later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_jwt_without_subs_is_closed_after_connect() {
    let w = world();
    let (acc, ac) = account("ZERO");
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &w.op.signing))];
    let sides = start(&w, &accounts, None, "");
    let u = user(&acc, "nosubs", |c| {
        c.nats.limits.subs = 0; // omitted from the JWT
        c.nats.limits.payload = -1;
        c.nats.limits.data = -1;
    });
    assert!(!u.1.is_empty());
    let (fd, td, closed_d) = limit0_transcript(sides.d(), &u.1, &u.0).await;
    let (fg, tg, closed_g) = limit0_transcript(sides.g(), &u.1, &u.0).await;
    eprintln!("limit-0 subs: D {fd:?} at {td:?} ms; G {fg:?} at {tg:?} ms");
    assert!(closed_d, "side D did not close: {fd:?}");
    // nats-server's order of the -ERR and the pipelined PING's PONG/INFO
    // varies from run to run; compare the frames as sets.
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(
        fd.iter()
            .filter(|f| f.starts_with("-ERR"))
            .collect::<Vec<_>>(),
        vec!["-ERR 'maximum subscriptions exceeded'"],
        "side D"
    );
    assert_eq!(
        sorted(&fg),
        sorted(&fd),
        "frames: G (left) vs D (right); times G {tg:?} D {td:?}"
    );
    assert!(closed_g, "side G did not close within 1.5 s: {fg:?}");
    let close_g = *tg.last().expect("times");
    assert!(close_g < 500, "side G closed only after {close_g} ms");
}
