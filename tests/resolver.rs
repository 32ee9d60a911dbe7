//! The account resolver protocol (spec 6.4) answered by natsgate: the same
//! requests, with nsc's bytes (`nsc push`: the raw account JWT published to
//! `$SYS.REQ.CLAIMS.UPDATE` by a system-account user, replies collected on
//! an inbox until a timeout), sent to nats-server with
//! `resolver: { type: full }` (side D) and to natsgate in front of a plain
//! nats-server (side G). The `data` and `error` parts of the replies must
//! be equal; where natsgate is deliberately stricter (foreign operator,
//! older `iat`) the test says so.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use nkeys::KeyPair;
use serde_json::{Value, json};
use support::jwt::{self as j, AccountClaims, Permission};
use support::{Frame, Gate, NatsServer, RawClient, quote_conf};

const GATE_PASSWORD: &str = "resolver-gate-s3cret";
const WAIT: Duration = Duration::from_secs(5);
/// How long replies are collected after a request (nsc waits its timeout).
const COLLECT: Duration = Duration::from_millis(400);

struct World {
    op: j::Operator,
    sys: (KeyPair, String),
    /// An nsc-like temporary push user of SYS: publish `$SYS.REQ.CLAIMS.>`
    /// and the lookups, subscribe `_INBOX.>`.
    pusher: String,
    app: (KeyPair, AccountClaims),
}

fn world() -> World {
    let sys = KeyPair::new_account();
    let op = j::operator("resolver", false, Some(&sys.public_key()));
    let sys_jwt = j::sign_account(&j::account_claims(&sys, "SYS"), &op.signing);
    let pusher_kp = KeyPair::new_user();
    let mut c = j::user_claims(&pusher_kp, "nsc temporary push user");
    c.nats.limits.publish = Permission {
        allow: vec![
            "$SYS.REQ.CLAIMS.>".into(),
            "$SYS.REQ.ACCOUNT.*.CLAIMS.>".into(),
        ],
        deny: vec![],
    };
    c.nats.limits.subscribe = Permission {
        allow: vec!["_INBOX.>".into()],
        deny: vec![],
    };
    let pusher = j::creds(&j::sign_user(&c, &sys), &pusher_kp);
    let app_kp = KeyPair::new_account();
    let app = j::account_claims(&app_kp, "APP");
    World {
        op,
        sys: (sys, sys_jwt),
        pusher,
        app: (app_kp, app),
    }
}

fn user(acc: &KeyPair, name: &str) -> (KeyPair, String) {
    let kp = KeyPair::new_user();
    let jwt = j::sign_user(&j::user_claims(&kp, name), acc);
    (kp, jwt)
}

struct Sides {
    direct: NatsServer,
    upstream: NatsServer,
    gate: Gate,
    _resolver_dir: tempfile::TempDir,
}

/// Side D: operator mode with a full resolver (`allow_delete`) whose
/// directory holds SYS and APP; side G: natsgate with the same two in its
/// `accounts_dir` and `allow_delete = true`.
fn start(w: &World, app_jwt: &str) -> Sides {
    let resolver_dir = tempfile::tempdir().expect("tempdir");
    let accounts = [
        (w.sys.0.public_key(), w.sys.1.clone()),
        (w.app.0.public_key(), app_jwt.to_owned()),
    ];
    for (key, jwt) in &accounts {
        std::fs::write(resolver_dir.path().join(format!("{key}.jwt")), jwt).unwrap();
    }
    let conf = format!(
        "operator: {}\nsystem_account: {}\nresolver {{ type: full, dir: {}, allow_delete: true }}\n",
        quote_conf(&w.op.jwt),
        quote_conf(&w.sys.0.public_key()),
        quote_conf(&resolver_dir.path().to_string_lossy()),
    );
    let direct = NatsServer::start(&conf);
    let upstream = NatsServer::start(&j::upstream_config(GATE_PASSWORD));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toml = j::gate_setup(
        dir.path(),
        &upstream.url(),
        GATE_PASSWORD,
        &[&w.op.jwt],
        &accounts,
    );
    toml.push_str("allow_delete = true\n");
    let gate = Gate::start_with_dir(&toml, dir);
    Sides {
        direct,
        upstream,
        gate,
        _resolver_dir: resolver_dir,
    }
}

async fn connect(addr: SocketAddr, creds: &str) -> async_nats::Client {
    tokio::time::timeout(WAIT, async {
        async_nats::ConnectOptions::with_credentials(creds)
            .expect("creds")
            .connect(format!("nats://{addr}"))
            .await
    })
    .await
    .expect("connect timed out")
    .expect("connect")
}

/// nsc's `multiRequest`: a fresh inbox, one publish with it as reply, and
/// every reply that arrives within [`COLLECT`] of the last one.
async fn multi_request(nc: &async_nats::Client, subject: &str, body: &[u8]) -> Vec<Bytes> {
    let inbox = nc.new_inbox();
    let mut sub = nc.subscribe(inbox.clone()).await.expect("subscribe");
    nc.publish_with_reply(subject.to_owned(), inbox, Bytes::copy_from_slice(body))
        .await
        .expect("publish");
    nc.flush().await.expect("flush");
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut quiet = if subject.ends_with("PACK") {
        WAIT
    } else {
        COLLECT * 3
    };
    while Instant::now() < deadline {
        match tokio::time::timeout(quiet, sub.next()).await {
            Ok(Some(msg)) => {
                let end = subject.ends_with("PACK") && msg.payload.is_empty();
                out.push(msg.payload);
                if end {
                    break;
                }
                quiet = COLLECT;
            }
            _ => break,
        }
    }
    out
}

/// A reply without its `server` part (each server names itself).
fn without_server(reply: &Bytes) -> Value {
    let mut v: Value = serde_json::from_slice(reply).unwrap_or_else(|e| {
        panic!(
            "reply is not JSON ({e}): {}",
            String::from_utf8_lossy(reply)
        )
    });
    let server = v
        .as_object_mut()
        .and_then(|o| o.remove("server"))
        .expect("a server part");
    assert!(
        server["name"].as_str().is_some_and(|n| !n.is_empty()),
        "nsc treats an empty server.name as an error: {server}"
    );
    v
}

/// The one reply of a request, `server` removed.
async fn ask(nc: &async_nats::Client, subject: &str, body: &[u8]) -> Value {
    let replies = multi_request(nc, subject, body).await;
    assert_eq!(
        replies.len(),
        1,
        "{subject}: one reply per server, got {replies:?}"
    );
    without_server(&replies[0])
}

/// Both sides' single reply to the same request, which must be equal.
async fn same(d: &async_nats::Client, g: &async_nats::Client, subject: &str, body: &[u8]) -> Value {
    let direct = ask(d, subject, body).await;
    let gate = ask(g, subject, body).await;
    assert_eq!(gate, direct, "{subject}: natsgate and nats-server differ");
    direct
}

#[tokio::test]
async fn push_lookup_list_pack_and_delete_answer_as_nats_server() {
    let w = world();
    let app_jwt = j::sign_account(&w.app.1, &w.op.signing);
    let sides = start(&w, &app_jwt);
    let d = connect(sides.direct.addr(), &w.pusher).await;
    let g = connect(sides.gate.addr(), &w.pusher).await;
    let app = w.app.0.public_key();

    // An updated APP (a new limit) on the generic subject.
    let mut changed = w.app.1.clone();
    changed.nats.limits.subs = 1000;
    changed.issued_at = j::unix_now() + 1;
    let changed_jwt = j::sign_account(&changed, &w.op.signing);
    let reply = same(&d, &g, "$SYS.REQ.CLAIMS.UPDATE", changed_jwt.as_bytes()).await;
    assert_eq!(
        reply,
        json!({"data": {"account": app, "code": 200, "message": "jwt updated"}})
    );

    // A new account on its own subject.
    let new_kp = KeyPair::new_account();
    let new_jwt = j::sign_account(&j::account_claims(&new_kp, "NEW"), &w.op.signing);
    let new = new_kp.public_key();
    let subject = format!("$SYS.REQ.ACCOUNT.{new}.CLAIMS.UPDATE");
    let reply = same(&d, &g, &subject, new_jwt.as_bytes()).await;
    assert_eq!(reply["data"]["code"], 200);

    // Refusals, with nats-server's texts.
    let reply = same(&d, &g, "$SYS.REQ.CLAIMS.UPDATE", b"garbage").await;
    assert_eq!(
        reply["error"]["description"],
        "jwt update resulted in error - expected 3 chunks"
    );
    assert_eq!(reply["error"]["account"], "n/a");
    let reply = same(&d, &g, "$SYS.REQ.CLAIMS.UPDATE", b"").await;
    assert_eq!(reply["error"]["code"], 500);
    let mut tampered = changed_jwt.clone().into_bytes();
    let at = tampered.len() - 5;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let reply = same(&d, &g, "$SYS.REQ.CLAIMS.UPDATE", &tampered).await;
    assert_eq!(
        reply["error"]["description"],
        "jwt update resulted in error - claim failed V2 signature verification"
    );
    let reply = same(&d, &g, &subject, changed_jwt.as_bytes()).await;
    assert_eq!(
        reply,
        json!({"error": {"account": new, "code": 500,
            "description": "jwt update resulted in error - subject does not match jwt content"}})
    );

    // Lookups: the raw JWT, or an empty message.
    for (key, want) in [(&app, changed_jwt.as_bytes()), (&new, new_jwt.as_bytes())] {
        let subject = format!("$SYS.REQ.ACCOUNT.{key}.CLAIMS.LOOKUP");
        for nc in [&d, &g] {
            let replies = multi_request(nc, &subject, b"").await;
            assert_eq!(replies, vec![Bytes::copy_from_slice(want)], "{subject}");
        }
    }
    let unknown = KeyPair::new_account().public_key();
    let subject = format!("$SYS.REQ.ACCOUNT.{unknown}.CLAIMS.LOOKUP");
    for nc in [&d, &g] {
        assert_eq!(multi_request(nc, &subject, b"").await, vec![Bytes::new()]);
    }

    // The list, in lexical order.
    let reply = same(&d, &g, "$SYS.REQ.CLAIMS.LIST", b"").await;
    let mut ids = vec![w.sys.0.public_key(), app.clone(), new.clone()];
    ids.sort();
    assert_eq!(reply, json!({ "data": ids }));

    // PACK: every `pubkey|jwt`, ended by an empty message; the same set.
    let mut packs = Vec::new();
    for nc in [&d, &g] {
        let mut replies = multi_request(nc, "$SYS.REQ.CLAIMS.PACK", b"").await;
        assert_eq!(
            replies.pop(),
            Some(Bytes::new()),
            "ended by an empty message"
        );
        let mut lines: Vec<String> = replies
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        lines.sort();
        packs.push(lines);
    }
    assert_eq!(packs[0], packs[1]);
    assert_eq!(packs[0].len(), 3);
    assert!(packs[0].contains(&format!("{new}|{new_jwt}")));

    // A user of the pushed account logs in on both.
    let (kp, jwt) = user(&new_kp, "newbie");
    for addr in [sides.direct.addr(), sides.gate.addr()] {
        let nc = connect(addr, &j::creds(&jwt, &kp)).await;
        nc.flush()
            .await
            .expect("a user of the pushed account is served");
    }

    // Delete: refused without an operator signature, then done.
    let mut req = j::GenericClaims {
        subject: w.op.kp.public_key(),
        ..Default::default()
    };
    req.nats.accounts = Some(json!([new]));
    let by_account = j::encode(&req, &w.sys.0).expect("mint");
    let reply = same(&d, &g, "$SYS.REQ.CLAIMS.DELETE", by_account.as_bytes()).await;
    assert_eq!(reply["error"]["code"], 500, "{reply}");
    req.nats.accounts = Some(json!([w.sys.0.public_key()]));
    let sys_delete = j::encode(&req, &w.op.kp).expect("mint");
    let reply = same(&d, &g, "$SYS.REQ.CLAIMS.DELETE", sys_delete.as_bytes()).await;
    assert!(
        reply["error"]["description"]
            .as_str()
            .is_some_and(|t| t.ends_with("not allowed to delete system account")),
        "{reply}"
    );
    req.nats.accounts = Some(json!([new]));
    let delete = j::encode(&req, &w.op.kp).expect("mint");
    let reply = same(&d, &g, "$SYS.REQ.CLAIMS.DELETE", delete.as_bytes()).await;
    assert_eq!(
        reply,
        json!({"data": {"code": 200, "message": "deleted 1 accounts"}})
    );
    let reply = same(&d, &g, "$SYS.REQ.CLAIMS.LIST", b"").await;
    let mut ids = vec![w.sys.0.public_key(), app.clone()];
    ids.sort();
    assert_eq!(reply, json!({ "data": ids }));
}

#[tokio::test]
async fn a_pushed_revocation_closes_the_user_as_nats_server_does() {
    let w = world();
    let app_jwt = j::sign_account(&w.app.1, &w.op.signing);
    let sides = start(&w, &app_jwt);
    let (alice_kp, alice_jwt) = user(&w.app.0, "alice");
    let mut revoked = w.app.1.clone();
    let alice = alice_kp.public_key();
    revoked
        .nats
        .revocations
        .insert(alice.clone(), j::unix_now() + 5);
    revoked.issued_at = j::unix_now() + 1;
    let revoked_jwt = j::sign_account(&revoked, &w.op.signing);
    for (name, addr) in [
        ("nats-server", sides.direct.addr()),
        ("natsgate", sides.gate.addr()),
    ] {
        let mut c = RawClient::connect(addr).await;
        j::connect_jwt(&mut c, &alice_jwt, Some(&alice_kp), json!({})).await;
        assert!(
            c.flush().await.iter().all(|f| !matches!(f, Frame::Err(_))),
            "{name}: alice logs in"
        );
        let nc = connect(addr, &w.pusher).await;
        let reply = ask(&nc, "$SYS.REQ.CLAIMS.UPDATE", revoked_jwt.as_bytes()).await;
        assert_eq!(reply["data"]["code"], 200, "{name}: {reply}");
        let frames = c.expect_closed().await;
        let errors: Vec<&Frame> = frames
            .iter()
            .filter(|f| matches!(f, Frame::Err(_)))
            .collect();
        assert_eq!(
            errors,
            vec![&Frame::err("User Authentication Revoked")],
            "{name}: {frames:?}"
        );
        // And alice cannot log in again.
        let mut again = RawClient::connect(addr).await;
        j::connect_jwt(&mut again, &alice_jwt, Some(&alice_kp), json!({})).await;
        let frames = again.expect_closed().await;
        assert!(
            frames.contains(&Frame::err("Authorization Violation")),
            "{name}: {frames:?}"
        );
    }
}

#[tokio::test]
async fn a_push_from_a_user_outside_the_system_account_gets_no_responders() {
    let w = world();
    let app_jwt = j::sign_account(&w.app.1, &w.op.signing);
    let sides = start(&w, &app_jwt);
    let (kp, jwt) = user(&w.app.0, "mallory");
    let creds = j::creds(&jwt, &kp);
    let mut evil = w.app.1.clone();
    evil.nats.limits.conn = 1;
    let evil_jwt = j::sign_account(&evil, &w.op.signing);
    for (name, addr) in [
        ("nats-server", sides.direct.addr()),
        ("natsgate", sides.gate.addr()),
    ] {
        let nc = connect(addr, &creds).await;
        let result = tokio::time::timeout(
            WAIT,
            nc.request("$SYS.REQ.CLAIMS.UPDATE", evil_jwt.clone().into()),
        )
        .await
        .expect("answered in time");
        match result {
            Err(e) => assert_eq!(
                e.kind(),
                async_nats::RequestErrorKind::NoResponders,
                "{name}"
            ),
            Ok(m) => panic!("{name}: a non-system push was answered: {m:?}"),
        }
    }
    // The account is unchanged on natsgate: two of its users still log in.
    let a = connect(sides.gate.addr(), &creds).await;
    let b = connect(sides.gate.addr(), &creds).await;
    a.flush().await.unwrap();
    b.flush().await.unwrap();
}

#[tokio::test]
async fn natsgate_refuses_foreign_older_and_huge_pushes_and_keeps_the_stored_jwt() {
    let w = world();
    let app_jwt = j::sign_account(&w.app.1, &w.op.signing);
    let sides = start(&w, &app_jwt);
    let g = connect(sides.gate.addr(), &w.pusher).await;
    let app = w.app.0.public_key();
    let stored = sides.gate.dir().join("jwt").join(format!("{app}.jwt"));

    // Newer: accepted and written to the accounts_dir.
    let mut newer = w.app.1.clone();
    newer.issued_at = j::unix_now() + 10;
    newer.nats.limits.subs = 7;
    let newer_jwt = j::sign_account(&newer, &w.op.signing);
    let reply = ask(&g, "$SYS.REQ.CLAIMS.UPDATE", newer_jwt.as_bytes()).await;
    assert_eq!(reply["data"]["message"], "jwt updated");
    assert_eq!(std::fs::read_to_string(&stored).unwrap(), newer_jwt);

    // Older (a rollback): refused, the stored one stays.
    let mut older = w.app.1.clone();
    older.issued_at = j::unix_now() - 100;
    let older_jwt = j::sign_account(&older, &w.op.signing);
    let reply = ask(&g, "$SYS.REQ.CLAIMS.UPDATE", older_jwt.as_bytes()).await;
    let text = reply["error"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.starts_with("jwt update resulted in error - jwt is older"),
        "{reply}"
    );
    assert_eq!(reply["error"]["account"], app);

    // Signed by another operator: refused.
    let other = j::operator("other", false, None);
    let foreign_jwt = j::sign_account(&newer, &other.signing);
    let reply = ask(&g, "$SYS.REQ.CLAIMS.UPDATE", foreign_jwt.as_bytes()).await;
    let text = reply["error"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(text.starts_with("jwt validation failed - "), "{reply}");
    assert!(text.contains("trusted operator"), "{reply}");

    // 1 MB of garbage: the nats-server text, and natsgate serves on.
    let garbage = vec![b'x'; 1_000_000];
    let started = Instant::now();
    let reply = ask(&g, "$SYS.REQ.CLAIMS.UPDATE", &garbage).await;
    assert_eq!(
        reply["error"]["description"],
        "jwt update resulted in error - expected 3 chunks"
    );
    assert!(started.elapsed() < WAIT);
    assert_eq!(
        std::fs::read_to_string(&stored).unwrap(),
        newer_jwt,
        "the stored JWT stays"
    );
    let lookup = multi_request(&g, &format!("$SYS.REQ.ACCOUNT.{app}.CLAIMS.LOOKUP"), b"").await;
    assert_eq!(lookup, vec![Bytes::from(newer_jwt.clone())]);

    // Durable: a new natsgate started on a copy of the accounts_dir has it.
    let jwt_dir = sides.gate.dir().join("jwt");
    let files: Vec<_> = std::fs::read_dir(&jwt_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().all(|f| f.ends_with(".jwt")),
        "no temporary left: {files:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = j::gate_setup(
        dir.path(),
        &sides.upstream.url(),
        GATE_PASSWORD,
        &[&w.op.jwt],
        &[],
    );
    for file in &files {
        std::fs::copy(jwt_dir.join(file), dir.path().join("jwt").join(file)).unwrap();
    }
    let restarted = Gate::start_with_dir(&toml, dir);
    let g2 = connect(restarted.addr(), &w.pusher).await;
    let lookup = multi_request(&g2, &format!("$SYS.REQ.ACCOUNT.{app}.CLAIMS.LOOKUP"), b"").await;
    assert_eq!(lookup, vec![Bytes::from(newer_jwt)]);
}

#[tokio::test]
async fn a_user_of_a_pushed_account_is_served_and_survives_nothing_else() {
    // natsgate only: an account that exists nowhere but in a push.
    let w = world();
    let app_jwt = j::sign_account(&w.app.1, &w.op.signing);
    let sides = start(&w, &app_jwt);
    let fresh = KeyPair::new_account();
    let mut c = j::account_claims(&fresh, "FRESH");
    c.nats.limits.conn = 1;
    let fresh_jwt = j::sign_account(&c, &w.op.signing);
    let (kp, jwt) = user(&fresh, "first");
    let creds = j::creds(&jwt, &kp);
    let refused = async_nats::ConnectOptions::with_credentials(&creds)
        .unwrap()
        .max_reconnects(Some(0))
        .connect(format!("nats://{}", sides.gate.addr()))
        .await;
    assert!(refused.is_err(), "unknown account before the push");
    let g = connect(sides.gate.addr(), &w.pusher).await;
    let reply = ask(&g, "$SYS.REQ.CLAIMS.UPDATE", fresh_jwt.as_bytes()).await;
    assert_eq!(reply["data"]["code"], 200);
    let first = connect(sides.gate.addr(), &creds).await;
    first.flush().await.unwrap();
    // The pushed `conn` limit of 1 applies.
    let mut second = RawClient::connect(sides.gate.addr()).await;
    j::connect_jwt(&mut second, &jwt, Some(&kp), json!({})).await;
    let frames = second.expect_closed().await;
    assert!(
        frames.contains(&Frame::err("maximum account active connections exceeded")),
        "{frames:?}"
    );
}
