//! Hostile clients against natsgate in front of a real nats-server: garbage,
//! truncated and oversize frames, slowloris and connection floods, forged
//! credentials, odd subjects. Where the expected reaction is nats-server's,
//! the same bytes go to a real nats-server with an NKey user and the frames
//! are compared. After every group a well-behaved client must still get a
//! pub/sub round trip. Everything is bounded and stays on 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::jwt as j;
use support::process::{settle, spawn_gate_binary, usage};
use support::{Frame, Gate, NatsServer, RawClient, ReadError, keys, quote_toml};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

const PASSWORD: &str = "gate-upstream-s3cret";
/// Permissions of the test user, on natsgate and on the direct server.
const ALLOW: &str = "ok.>";

fn upstream() -> NatsServer {
    NatsServer::start(&j::upstream_config(PASSWORD))
}

fn gate_toml(upstream: &NatsServer, extra_listen: &str, kp: &nkeys::KeyPair) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{extra_listen}\n\n[upstream]\nservers = [{}]\n\
         user = \"gate\"\npassword = {}\n\n[[users]]\nnkey = {}\nname = \"u\"\n\n\
         [users.permissions]\npublish = {{ allow = [\"{ALLOW}\"] }}\n\
         subscribe = {{ allow = [\"{ALLOW}\"] }}\n",
        quote_toml(&upstream.url()),
        quote_toml(PASSWORD),
        quote_toml(&kp.public_key()),
    )
}

/// A nats-server that knows `kp` as an NKey user with the same permissions.
fn direct(kp: &nkeys::KeyPair) -> NatsServer {
    NatsServer::start(&format!(
        "authorization {{ users = [ {{ nkey: \"{}\", permissions: {{ publish: {{ allow: [\"{ALLOW}\"] }}, \
         subscribe: {{ allow: [\"{ALLOW}\"] }} }} }} ] }}\n",
        kp.public_key()
    ))
}

/// Both sides of a comparison: natsgate (with its upstream) and a direct server.
struct Sides {
    kp: nkeys::KeyPair,
    _upstream: NatsServer,
    direct: NatsServer,
    gate: Gate,
}

fn sides(extra_listen: &str) -> Sides {
    let kp = keys::new_user();
    let upstream = upstream();
    let gate = Gate::start(&gate_toml(&upstream, extra_listen, &kp));
    Sides {
        direct: direct(&kp),
        _upstream: upstream,
        gate,
        kp,
    }
}

/// Frames that may appear at any time (server PINGs, connect-info INFO) are
/// not part of a comparison.
fn significant(frames: Vec<Frame>) -> Vec<Frame> {
    frames
        .into_iter()
        .filter(|f| !matches!(f, Frame::Ping | Frame::Info(_)))
        .collect()
}

async fn connected(addr: std::net::SocketAddr, kp: &nkeys::KeyPair) -> RawClient {
    let mut c = RawClient::connect(addr).await;
    c.connect_nkey(kp, json!({"headers": true})).await;
    let frames = significant(c.flush().await);
    assert_eq!(frames, vec![], "login answered");
    c
}

/// What a connection answers to `input` until it closes (`closed`) or until
/// a following PING is answered.
async fn reaction(
    addr: std::net::SocketAddr,
    kp: &nkeys::KeyPair,
    login: bool,
    input: &[u8],
) -> (Vec<Frame>, bool) {
    let mut c = if login {
        connected(addr, kp).await
    } else {
        RawClient::connect(addr).await
    };
    c.set_timeout(Duration::from_secs(3));
    c.send(input).await;
    let _ = c.try_send(b"PING\r\n").await;
    match c.collect_until_pong().await {
        Ok(frames) => (significant(frames), false),
        Err(e) => {
            assert!(
                matches!(e.error, ReadError::Closed { .. } | ReadError::Io(_)),
                "{:?}: neither answered nor closed: {}",
                String::from_utf8_lossy(input),
                e.error
            );
            (significant(e.frames), true)
        }
    }
}

/// The same bytes to natsgate and to nats-server give the same frames and
/// the same open/closed outcome.
async fn compare(s: &Sides, login: bool, inputs: &[&[u8]]) {
    let mut diffs = Vec::new();
    for input in inputs {
        let gate = reaction(s.gate.addr(), &s.kp, login, input).await;
        let direct = reaction(s.direct.addr(), &s.kp, login, input).await;
        if gate != direct {
            diffs.push(format!(
                "{:?}: natsgate {gate:?}, nats-server {direct:?}",
                String::from_utf8_lossy(input)
            ));
        }
    }
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
}

/// A well-behaved client still gets a pub/sub round trip through natsgate.
async fn assert_serves(addr: std::net::SocketAddr, kp: &nkeys::KeyPair) {
    let mut c = connected(addr, kp).await;
    c.send(b"SUB ok.check 1\r\nPUB ok.check 5\r\nhello\r\n")
        .await;
    assert_eq!(
        significant(c.flush().await),
        vec![Frame::msg("ok.check", "1", b"hello")],
        "a well-behaved client is no longer served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_unknown_frames_match_nats_server() {
    let s = sides("");
    // Before CONNECT.
    compare(
        &s,
        false,
        &[
            b"PING\r\n",
            b"\x00\x01\x02garbage\r\n",
            b"\r\n",
            b"CXYZ\r\n",
            b"FOO bar\r\n",
            b"SUB ok.a 1\r\n",
            b"connect {\"verbose\":false}\r\n",
            b"CONNECT {}\r\n",
            b"CONNECT {\"nkey\":\"UAAA\",\"sig\":\"AAAA\"}\r\n",
            b"CONNECT {not json\r\n",
        ],
    )
    .await;
    // After CONNECT.
    compare(
        &s,
        true,
        &[
            b"FOO\r\n",
            b" PING\r\n",
            b"\x00\xff\r\n",
            b"MSG ok.a 1 1\r\nx\r\n",
            b"PUB ok.a\r\n",
            b"PUB ok.a -1\r\n",
            b"PUB ok.a 1234567890\r\n",
            b"PUB ok.a b c 1\r\nx\r\n",
            b"PUB ok.a 2\r\nhiX\r\n",
            b"PUB ok.a 2\r\nhi\rX",
            b"PUB ok.a 2\r\nhello\r\n",
            b"HPUB ok.a 5 4\r\n",
            b"SUB ok.a\r\n",
            b"SUB a b c d\r\n",
            b"UNSUB\r\n",
            b"UNSUB 1 2 3\r\n",
            b"UNSUB nosuchsid\r\n",
            b"-ERR 'bye'\r\n",
            b"+OK\r\n",
            b"PINGX\r\n",
            b"INFO {\"a\":1}\r\n",
        ],
    )
    .await;
    s.gate.assert_running();
    assert_serves(s.gate.addr(), &s.kp).await;

    // Truncated frames followed by a half close, then a reset mid-payload.
    for partial in [
        &b"PUB ok.a 10\r\nhel"[..],
        b"SUB ok.",
        b"CONNE",
        b"HPUB ok.a 12 14\r\nNATS",
    ] {
        let mut c = RawClient::connect(s.gate.addr()).await;
        c.send(partial).await;
        c.close().await;
        let mut c = connected(s.gate.addr(), &s.kp).await;
        c.send(partial).await;
        drop(c);
    }
    s.gate.assert_running();
    assert_serves(s.gate.addr(), &s.kp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_control_lines_and_payloads() {
    let s = sides("");
    let arg = |n: usize| format!("ok.{} 1", "x".repeat(n - 5));
    // 4096 argument bytes are fine, 4097 are not, before or after CONNECT,
    // with or without the newline.
    let sub_4096 = format!("SUB {}\r\n", arg(4096));
    let sub_4097 = format!("SUB {}\r\n", arg(4097));
    let sub_4097_no_nl = format!("SUB {}", arg(4097));
    let long_connect = format!("CONNECT {{\"name\":\"{}\"}}\r\n", "n".repeat(5000));
    compare(
        &s,
        true,
        &[
            sub_4096.as_bytes(),
            sub_4097.as_bytes(),
            sub_4097_no_nl.as_bytes(),
        ],
    )
    .await;
    compare(
        &s,
        false,
        &[long_connect.as_bytes(), sub_4097_no_nl.as_bytes()],
    )
    .await;

    // Rejected before the newline: the error comes while the line is open.
    let mut c = connected(s.gate.addr(), &s.kp).await;
    c.send(format!("PUB ok.{}", "y".repeat(8192)).as_bytes())
        .await;
    assert_eq!(
        significant(c.expect_closed().await),
        vec![Frame::err("maximum control line exceeded")]
    );

    // Max payload: rejected on the control line, before any payload byte.
    let max = RawClient::connect(s.gate.addr()).await.info()["max_payload"]
        .as_u64()
        .expect("max_payload in INFO");
    let direct_max = RawClient::connect(s.direct.addr()).await.info()["max_payload"]
        .as_u64()
        .expect("max_payload in INFO");
    assert_eq!(max, direct_max, "same default max payload");
    let over = format!("PUB ok.a {}\r\n", max + 1);
    let over_h = format!("HPUB ok.a 10 {}\r\n", max + 1);
    let exact = format!("PUB ok.a {max}\r\n{}\r\n", "p".repeat(max as usize));
    compare(
        &s,
        true,
        &[over.as_bytes(), over_h.as_bytes(), exact.as_bytes()],
    )
    .await;
    let mut c = connected(s.gate.addr(), &s.kp).await;
    c.send(over.as_bytes()).await;
    let started = Instant::now();
    assert_eq!(
        significant(c.expect_closed().await),
        vec![Frame::err("Maximum Payload Violation")]
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    s.gate.assert_running();
    assert_serves(s.gate.addr(), &s.kp).await;
}

/// nats-server does not count the `\r` of a line whose `\n` has not arrived
/// yet (`c.drop`), so a 4096-byte argument followed by `\r` in one read and
/// `\n` in the next is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximal_line_split_between_cr_and_lf_is_accepted() {
    let s = sides("");
    let line = format!("SUB ok.{} 1\r", "x".repeat(4096 - 5));
    for (who, addr) in [
        ("nats-server", s.direct.addr()),
        ("natsgate", s.gate.addr()),
    ] {
        let mut c = connected(addr, &s.kp).await;
        c.send(line.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.send(b"\n").await;
        match c.try_flush().await {
            Ok(frames) => assert_eq!(significant(frames), vec![], "{who}"),
            Err(e) => panic!("{who}: {} after {:?}", e.error, e.frames),
        }
    }
}

/// nats-server skips the blanks after `CONNECT` before it starts counting
/// the argument, so `CONNECT` + blank + 4096 bytes of JSON is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximal_connect_json_after_a_blank_is_accepted() {
    let s = sides("");
    for (who, addr) in [
        ("nats-server", s.direct.addr()),
        ("natsgate", s.gate.addr()),
    ] {
        let mut c = RawClient::connect(addr).await;
        let sig = keys::sign_nonce(&s.kp, c.nonce().expect("nonce"));
        let mut obj = json!({"nkey": s.kp.public_key(), "sig": sig, "verbose": false, "name": ""});
        let pad = 4096 - obj.to_string().len();
        obj["name"] = json!("n".repeat(pad));
        let text = obj.to_string();
        assert_eq!(text.len(), 4096);
        c.send(format!("CONNECT {text}\r\n").as_bytes()).await;
        match c.try_flush().await {
            Ok(frames) => assert_eq!(significant(frames), vec![], "{who}"),
            Err(e) => panic!("{who}: {} after {:?}", e.error, e.frames),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_with_control_bytes_and_invalid_utf8_are_quoted_like_go() {
    let s = sides("");
    let subjects: &[&[u8]] = &[
        b"a\x01b",
        b"a\x7fb",
        b"a\x0bb",
        b"\xff\xfe",
        b"caf\xc3\xa9",
        b"zero\xe2\x80\x8bwidth",
        b"s'q",
        b"q\"u\\o",
        b"ok.\xff",
        b"ok..b",
        b"ok.>.x",
        b"\xc3",
    ];
    let mut inputs = Vec::new();
    for subject in subjects {
        let mut pub_ = b"PUB ".to_vec();
        pub_.extend_from_slice(subject);
        pub_.extend_from_slice(b" 1\r\nx\r\n");
        let mut sub = b"SUB ".to_vec();
        sub.extend_from_slice(subject);
        sub.extend_from_slice(b" 7\r\n");
        let mut sub_q = b"SUB ok.q ".to_vec();
        sub_q.extend_from_slice(subject);
        sub_q.extend_from_slice(b" 8\r\n");
        let mut reply = b"PUB ok.r ".to_vec();
        reply.extend_from_slice(subject);
        reply.extend_from_slice(b" 0\r\n\r\n");
        inputs.extend([pub_, sub, sub_q, reply]);
    }
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    compare(&s, true, &refs).await;
    // One spot check of the exact text.
    let mut c = connected(s.gate.addr(), &s.kp).await;
    c.send(b"PUB a\x01\xff 0\r\n\r\n").await;
    assert_eq!(
        significant(c.flush().await),
        vec![Frame::err(
            "Permissions Violation for Publish to \"a\\x01\\xff\""
        )]
    );
    assert_serves(s.gate.addr(), &s.kp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_and_replayed_or_foreign_signatures() {
    let s = sides("");
    // A second CONNECT: nats-server re-authenticates and drops the old
    // subscriptions.
    let second: &[u8] = b"SUB ok.a 1\r\nCONNECT {}\r\nPUB ok.a 1\r\nx\r\n";
    compare(&s, true, &[second]).await;

    // A signature made for another connection's nonce.
    let mut c = RawClient::connect(s.gate.addr()).await;
    let other = RawClient::connect(s.gate.addr()).await;
    let replayed = keys::sign_nonce(&s.kp, other.nonce().unwrap());
    c.connect_json(&json!({"nkey": s.kp.public_key(), "sig": replayed}))
        .await;
    assert_eq!(
        significant(c.expect_closed().await),
        vec![Frame::err("Authorization Violation")]
    );
    // The known key, signed by someone else's key.
    let mut c = RawClient::connect(s.gate.addr()).await;
    let forged = keys::sign_nonce(&keys::new_user(), c.nonce().unwrap());
    c.connect_json(&json!({"nkey": s.kp.public_key(), "sig": forged}))
        .await;
    assert_eq!(
        significant(c.expect_closed().await),
        vec![Frame::err("Authorization Violation")]
    );
    // A signature that is not base64 at all, and one of the wrong length.
    for sig in ["!!!", "AAAA", ""] {
        let mut c = RawClient::connect(s.gate.addr()).await;
        c.connect_json(&json!({"nkey": s.kp.public_key(), "sig": sig}))
            .await;
        assert_eq!(
            significant(c.expect_closed().await),
            vec![Frame::err("Authorization Violation")],
            "sig {sig:?}"
        );
    }
    s.gate.assert_running();
    assert_serves(s.gate.addr(), &s.kp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_of_someone_else_or_with_a_bad_signature_are_refused() {
    let op = j::operator("op", false, None);
    let acc = nkeys::KeyPair::new_account();
    let acc_jwt = j::sign_account(&j::account_claims(&acc, "A"), &op.kp);
    let accounts = vec![(acc.public_key(), acc_jwt)];
    let alice = keys::new_user();
    let alice_jwt = j::sign_user(&j::user_claims(&alice, "alice"), &acc);
    let upstream = upstream();
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = j::gate_setup(dir.path(), &upstream.url(), PASSWORD, &[&op.jwt], &accounts);
    let gate = Gate::start_with_dir(&toml, dir);
    let direct = NatsServer::start(&j::server_config(&[&op.jwt], &accounts, None));

    let mallory = keys::new_user();
    // Alice's JWT with a signature character changed (not the last one,
    // whose low bits are padding that Go's decoder ignores).
    let mut tampered = alice_jwt.clone().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ASCII");
    // Alice's claims signed by a key that is not her account.
    let self_signed = j::sign_user(
        &j::user_claims(&alice, "alice"),
        &nkeys::KeyPair::new_account(),
    );
    let cases: Vec<(&str, String, &nkeys::KeyPair)> = vec![
        (
            "alice's JWT, mallory's signature",
            alice_jwt.clone(),
            &mallory,
        ),
        ("tampered JWT signature", tampered, &alice),
        ("JWT signed by an unknown account", self_signed, &alice),
        ("not a JWT", "a.b.c".into(), &alice),
    ];
    for (what, jwt, signer) in cases {
        let mut outcomes = Vec::new();
        for addr in [gate.addr(), direct.addr()] {
            let mut c = RawClient::connect(addr).await;
            j::connect_jwt(&mut c, &jwt, Some(signer), json!({})).await;
            outcomes.push(significant(c.expect_closed().await));
        }
        assert_eq!(outcomes[0], outcomes[1], "{what}: natsgate vs nats-server");
        assert_eq!(
            outcomes[0],
            vec![Frame::err("Authorization Violation")],
            "{what}"
        );
    }
    // Alice herself gets in.
    let mut c = RawClient::connect(gate.addr()).await;
    j::connect_jwt(&mut c, &alice_jwt, Some(&alice), json!({})).await;
    c.send(b"SUB x 1\r\nPUB x 2\r\nhi\r\n").await;
    assert_eq!(
        significant(c.flush().await),
        vec![Frame::msg("x", "1", b"hi")]
    );
    gate.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_time_out_without_starving_others() {
    let kp = keys::new_user();
    let upstream = upstream();
    let gate = Gate::start(&gate_toml(&upstream, "auth_timeout = \"700ms\"", &kp));
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut c = RawClient::connect(gate.addr()).await;
        c.send(b"CON").await;
        slow.push(c);
    }
    // Meanwhile, a well-behaved client works, while drips keep coming.
    for (i, c) in slow.iter_mut().enumerate() {
        if i % 2 == 0 {
            let _ = c.try_send(b"N").await;
        }
    }
    assert_serves(gate.addr(), &kp).await;
    for mut c in slow {
        c.set_timeout(Duration::from_secs(3));
        assert_eq!(
            significant(c.expect_closed().await),
            vec![Frame::err("Authentication Timeout")]
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    gate.assert_running();
    assert_serves(gate.addr(), &kp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_subscriptions_on_one_connection() {
    let kp = keys::new_user();
    let upstream = upstream();
    let gate = Gate::start(&gate_toml(&upstream, "", &kp));
    let mut c = connected(gate.addr(), &kp).await;
    c.set_timeout(Duration::from_secs(15));
    let mut batch = Vec::new();
    for i in 0..10_000 {
        batch.extend_from_slice(format!("SUB ok.s.{i} {i}\r\n").as_bytes());
    }
    c.send(&batch).await;
    assert_eq!(significant(c.flush().await), vec![]);
    c.send(b"PUB ok.s.9999 3\r\nend\r\n").await;
    assert_eq!(
        significant(c.flush().await),
        vec![Frame::msg("ok.s.9999", "9999", b"end")]
    );
    assert_serves(gate.addr(), &kp).await;
}

// === the natsgate binary: floods and a leak check ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_leave_no_fds_or_memory_behind() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let kp = keys::new_user();
    let upstream = upstream();
    let gate = spawn_gate_binary(&gate_toml(&upstream, "auth_timeout = \"1s\"", &kp));
    let pid = gate.child.id();
    // Warm up (first connection, upstream probe, lazily allocated pools).
    for _ in 0..3 {
        assert_serves(gate.addr, &kp).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = usage(pid);

    // 500 quick connect/close, some with garbage.
    for i in 0..500 {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(gate.addr)).await
        else {
            panic!("connect {i} failed or timed out");
        };
        if i % 3 == 0 {
            let _ = s.write_all(b"\x00garbage\r\n").await;
        }
        drop(s);
    }
    // 50 authenticated clients with subscriptions, a few hostile frames, gone.
    for i in 0..50 {
        let mut c = connected(gate.addr, &kp).await;
        c.send(format!("SUB ok.f.{i} 1\r\nSUB ok.> 2\r\nPUB ok.f.{i} 2\r\nhi\r\n").as_bytes())
            .await;
        if i % 2 == 0 {
            c.send(b"PUB ok.a 2\r\nhiX").await;
            let _ = c.expect_closed().await;
        } else {
            drop(c);
        }
    }
    // 100 slowloris clients that the auth timeout closes.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut c = RawClient::connect(gate.addr).await;
        c.send(b"CONN").await;
        slow.push(c);
    }
    assert_serves(gate.addr, &kp).await;
    for mut c in slow {
        let _ = c.expect_closed().await;
    }
    assert_serves(gate.addr, &kp).await;

    let after = settle(pid, baseline).await;
    assert!(
        after.0 <= baseline.0 + 10,
        "fds: {} before, {} after the floods",
        baseline.0,
        after.0
    );
    assert!(
        after.1 <= baseline.1 + 20 * 1024,
        "VmRSS: {} KiB before, {} KiB after the floods",
        baseline.1,
        after.1
    );
}

/// The last base64 character of a 64-byte signature carries 4 padding bits
/// that Go's `RawURLEncoding` ignores: a JWT differing only there is the same
/// JWT to nats-server. natsgate must decide as nats-server does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_signature_padding_bits_are_judged_like_nats_server() {
    let op = j::operator("op", false, None);
    let acc = nkeys::KeyPair::new_account();
    let acc_jwt = j::sign_account(&j::account_claims(&acc, "A"), &op.kp);
    let accounts = vec![(acc.public_key(), acc_jwt)];
    let alice = keys::new_user();
    let mut jwt = j::sign_user(&j::user_claims(&alice, "alice"), &acc).into_bytes();
    let last = jwt.last_mut().expect("non-empty");
    *last = match *last {
        b'A'..=b'Y' | b'a'..=b'y' | b'0'..=b'8' => *last + 1,
        _ => *last - 1,
    };
    let jwt = String::from_utf8(jwt).expect("ASCII");
    let upstream = upstream();
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = j::gate_setup(dir.path(), &upstream.url(), PASSWORD, &[&op.jwt], &accounts);
    let gate = Gate::start_with_dir(&toml, dir);
    let direct = NatsServer::start(&j::server_config(&[&op.jwt], &accounts, None));
    let mut outcomes = Vec::new();
    for addr in [gate.addr(), direct.addr()] {
        let mut c = RawClient::connect(addr).await;
        j::connect_jwt(&mut c, &jwt, Some(&alice), json!({})).await;
        outcomes.push(match c.try_flush().await {
            Ok(frames) => (significant(frames), false),
            Err(e) => (significant(e.frames), true),
        });
    }
    assert_eq!(outcomes[0], outcomes[1], "natsgate vs nats-server");
}
