//! Report-only mode (`[policy]`, issue 16), with the natsgate binary in
//! front of a real nats-server:
//! - a report-only user gets exactly what nats-server gives a user without
//!   permissions (every frame delivered, no `-ERR` but the reserved ones),
//!   and each would-be refusal is counted once and logged once;
//! - `report_only_users` leaves everybody else enforced;
//! - SIGHUP to `enforce = true` makes the next denied PUB get its `-ERR`
//!   and removes the subscription the permissions refuse.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::process::{spawn_gate_binary, spawn_gate_binary_at};
use support::{Frame, NatsServer, RawClient, keys, quote_conf, quote_toml};

const PASSWORD: &str = "report-only-pw";

/// The user's permissions in every test: `a.>` except `a.secret`.
const PERMISSIONS: &str = "[users.permissions]\n\
    publish = { allow = [\"a.>\"], deny = [\"a.secret\"] }\n\
    subscribe = { allow = [\"a.>\"], deny = [\"a.secret\"] }\n";

/// Each step is sent on its own and flushed, so the frames of each step
/// are compared in order. `true`: the user's permissions refuse it but a
/// user without permissions may do it (a `would_deny`).
const STEPS: &[(&str, bool)] = &[
    // A wildcard subscription overlapping the deny entry: natsgate would
    // filter `a.secret` deliveries on it when enforcing.
    ("SUB a.> 1\r\n", false),
    ("SUB b.x 2\r\n", true),
    // `_sys_` is refused for everyone.
    ("SUB a.x _sys_ 3\r\n", false),
    ("PUB a.secret 2\r\nhi\r\n", true),
    ("PUB b.x 2\r\nhi\r\n", true),
    // Reserved prefixes are refused for everyone.
    ("PUB a.x _R_.x 2\r\nhi\r\n", false),
    ("PUB _GR_.x.y 2\r\nhi\r\n", false),
    // Refused by the permissions and by the reserved reply prefix: a user
    // without permissions gets the reply's refusal.
    ("PUB b.x _R_.x 2\r\nhi\r\n", false),
    ("PUB a.ok 2\r\nhi\r\n", false),
    ("SUB c.> 4\r\n", true),
    ("PUB c.d 2\r\nhi\r\n", true),
];

fn upstream(direct_user: &nkeys::KeyPair) -> NatsServer {
    NatsServer::start(&format!(
        "authorization {{ users = [ {{user: \"gate\", password: {}}}, {{nkey: {}}} ] }}\n",
        quote_conf(PASSWORD),
        quote_conf(&direct_user.public_key())
    ))
}

fn user_toml(kp: &nkeys::KeyPair, name: &str) -> String {
    format!(
        "[[users]]\nnkey = {}\nname = {}\naccount = \"APP\"\n{PERMISSIONS}\n",
        quote_toml(&kp.public_key()),
        quote_toml(name)
    )
}

fn gate_toml(upstream: &NatsServer, policy: &str, users: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n[upstream]\nservers = [{}]\nuser = \"gate\"\n\
         password = {}\n\n[metrics]\naddr = \"127.0.0.1:0\"\n\n[policy]\n{policy}\n\n{users}",
        quote_toml(&upstream.url()),
        quote_toml(PASSWORD)
    )
}

async fn login(addr: SocketAddr, kp: &nkeys::KeyPair) -> RawClient {
    let mut c = RawClient::connect(addr).await;
    c.connect_nkey(kp, json!({})).await;
    let frames = c.flush().await;
    assert!(
        frames.iter().all(|f| matches!(f, Frame::Info(_))),
        "login answered {frames:?}"
    );
    c
}

/// Flushes; the frames without the async INFO both servers send once
/// after login (the connect info, spec 1.9), which is not compared.
async fn flush(c: &mut RawClient) -> Vec<Frame> {
    let mut frames = c.flush().await;
    frames.retain(|f| !matches!(f, Frame::Info(_)));
    frames
}

/// Runs [`STEPS`], returning each step's frames.
async fn run_steps(c: &mut RawClient) -> Vec<Vec<Frame>> {
    let mut out = Vec::new();
    for (step, _) in STEPS {
        c.send(step.as_bytes()).await;
        out.push(flush(c).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_only_users_get_nats_servers_no_permission_behaviour() {
    let direct = keys::new_user();
    let watched = keys::new_user();
    let strict = keys::new_user();
    let server = upstream(&direct);
    let gate = spawn_gate_binary(&gate_toml(
        &server,
        "report_only_users = [\"watched\"]",
        &format!(
            "{}{}",
            user_toml(&watched, "watched"),
            user_toml(&strict, "strict")
        ),
    ));
    let metrics = gate.metrics_addr().await;

    // The reference: nats-server itself, a user without permissions.
    let mut reference = login(server.addr(), &direct).await;
    let expected = run_steps(&mut reference).await;
    reference.close().await;
    // Sanity: the reference delivers the frames the permissions refuse.
    assert!(
        expected[3].contains(&Frame::msg("a.secret", "1", b"hi")),
        "{expected:?}"
    );
    assert!(
        expected[4].contains(&Frame::msg("b.x", "2", b"hi")),
        "{expected:?}"
    );

    let mut report_only = login(gate.addr, &watched).await;
    let got = run_steps(&mut report_only).await;
    for (i, ((step, _), (want, got))) in STEPS.iter().zip(expected.iter().zip(&got)).enumerate() {
        assert_eq!(
            got, want,
            "step {i} {step:?}: natsgate (report-only) vs nats-server"
        );
    }
    let would = STEPS.iter().filter(|(_, w)| *w).count();
    // The a.secret delivery on `a.>`, which the filter would have dropped.
    assert_eq!(violations(metrics, "would_filter", "APP").await, 1.0);
    let count = violations(metrics, "would_deny", "APP").await;
    assert_eq!(count, would as f64, "one would_deny per would-be refusal");
    assert_eq!(
        violations(metrics, "publish", "APP").await,
        3.0,
        "the reserved prefixes"
    );
    assert_eq!(
        violations(metrics, "subscribe", "APP").await,
        1.0,
        "queue _sys_"
    );
    let logged = gate
        .log_lines()
        .iter()
        .filter(|l| l.contains("would deny (report-only)"))
        .count();
    assert_eq!(logged, would, "one log line each:\n{}", gate.log());
    let line = gate
        .log_lines()
        .into_iter()
        .find(|l| l.contains("would deny") && l.contains("subject=a.secret"))
        .unwrap_or_else(|| panic!("no would-deny line for a.secret:\n{}", gate.log()));
    assert!(
        line.contains("op=\"publish\"") || line.contains("op=publish"),
        "{line}"
    );
    assert!(line.contains("deny entry"), "the rule is named: {line}");
    assert!(line.contains(&watched.public_key()), "{line}");

    // Everybody else is enforced: the same steps give the -ERRs.
    let mut enforced = login(gate.addr, &strict).await;
    let got = run_steps(&mut enforced).await;
    assert_eq!(
        got[1],
        vec![Frame::err(
            "Permissions Violation for Subscription to \"b.x\""
        )]
    );
    assert_eq!(
        got[3],
        vec![Frame::err(
            "Permissions Violation for Publish to \"a.secret\""
        )]
    );
    assert_eq!(
        got[7],
        vec![Frame::err("Permissions Violation for Publish to \"b.x\"")]
    );
    assert_eq!(got[8], vec![Frame::msg("a.ok", "1", b"hi")]);
    assert_eq!(
        violations(metrics, "would_deny", "APP").await,
        would as f64,
        "enforced users add no would_deny"
    );

    // Advisories: one per violation (both users' reserved refusals, the
    // strict user's refusals) and per failed login.
    let mut intruder = RawClient::connect(gate.addr).await;
    intruder.connect_nkey(&keys::new_user(), json!({})).await;
    intruder.expect_closed().await;
    let advisories = |kind: &str| {
        gate.log_lines()
            .iter()
            .filter(|l| {
                l.contains("natsgate::advisory") && l.contains(&format!("advisory=\"{kind}\""))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while advisories("auth_failure") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(advisories("would_deny"), would, "{}", gate.log());
    // watched: 3 reserved publishes; strict: those plus a.secret, b.x, c.d.
    assert_eq!(advisories("publish_violation"), 3 + 3 + 3, "{}", gate.log());
    // watched: _sys_; strict: _sys_, b.x, c.>.
    assert_eq!(advisories("subscribe_violation"), 1 + 3, "{}", gate.log());
    assert_eq!(advisories("auth_failure"), 1, "{}", gate.log());
    let line = gate
        .log_lines()
        .into_iter()
        .find(|l| l.contains("publish_violation") && l.contains("subject=a.secret"))
        .unwrap_or_else(|| panic!("no advisory for a.secret:\n{}", gate.log()));
    for field in [
        "client=127.0.0.1:",
        "user=U",
        "name=strict",
        "account=APP",
        "rule_kind=\"deny_entry\"",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_enforce_applies_to_connected_users() {
    let direct = keys::new_user();
    let user = keys::new_user();
    let server = upstream(&direct);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("natsgate.toml");
    let users = user_toml(&user, "svc");
    std::fs::write(&config, gate_toml(&server, "enforce = false", &users)).unwrap();
    let gate = spawn_gate_binary_at(&config, Some("info"));
    let metrics = gate.metrics_addr().await;

    let mut c = login(gate.addr, &user).await;
    c.send(b"SUB b.> 7\r\nPUB b.x 2\r\nhi\r\n").await;
    assert_eq!(flush(&mut c).await, vec![Frame::msg("b.x", "7", b"hi")]);
    assert_eq!(violations(metrics, "would_deny", "APP").await, 2.0);

    std::fs::write(&config, gate_toml(&server, "enforce = true", &users)).unwrap();
    gate.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        c.send(b"PUB b.y 2\r\nhi\r\n").await;
        let frames = flush(&mut c).await;
        let refused = frames.contains(&Frame::err("Permissions Violation for Publish to \"b.y\""));
        seen.extend(frames);
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no -ERR within 5 s of SIGHUP; frames {seen:?}\n{}",
            gate.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The subscription the permissions refuse went, with nats-server's
    // reload error, before the first refusal.
    let removed = Frame::err("Permissions Violation for Subscription to \"b.>\" (sid \"7\")");
    assert!(seen.contains(&removed), "{seen:?}");
    let refusals = seen.iter().filter(|f| matches!(f, Frame::Err(_))).count();
    assert_eq!(
        refusals, 2,
        "the removal and exactly one refused PUB: {seen:?}"
    );
    assert_eq!(violations(metrics, "publish", "APP").await, 1.0);
    let would = violations(metrics, "would_deny", "APP").await;
    assert!(
        (2.0..=2.0 + (seen.len() as f64)).contains(&would),
        "PUBs before the reload took effect may add would_deny, none after: {would}"
    );
    // And it stays enforced; nothing is delivered on b.> any more.
    c.send(b"PUB a.ok 2\r\nhi\r\nPUB b.z 2\r\nhi\r\n").await;
    assert_eq!(
        flush(&mut c).await,
        vec![Frame::err("Permissions Violation for Publish to \"b.z\"")]
    );
}

/// `natsgate_permission_violations_total{kind,account}` from `/metrics`.
async fn violations(metrics: SocketAddr, kind: &str, account: &str) -> f64 {
    let (status, body) = support::http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    let series =
        format!("natsgate_permission_violations_total{{account=\"{account}\",kind=\"{kind}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_enforce_applies_to_connected_jwt_users() {
    use support::jwt;
    let server = upstream(&keys::new_user());
    let op = jwt::operator("OP", false, None);
    let account = nkeys::KeyPair::new_account();
    let account_jwt = jwt::sign_account(&jwt::account_claims(&account, "APP"), &op.kp);
    let user = nkeys::KeyPair::new_user();
    let mut claims = jwt::user_claims(&user, "jwt-svc");
    claims.nats.limits.publish.allow = vec!["a.>".into()];
    let user_jwt = jwt::sign_user(&claims, &account);
    let dir = tempfile::tempdir().unwrap();
    let base = jwt::gate_setup(
        dir.path(),
        &server.url(),
        PASSWORD,
        &[&op.jwt],
        &[(account.public_key(), account_jwt)],
    );
    let config = dir.path().join("natsgate.toml");
    let write = |enforce: bool| {
        let toml = format!("{base}\n[policy]\nenforce = {enforce}\n");
        std::fs::write(&config, toml).unwrap();
    };
    write(false);
    let gate = spawn_gate_binary_at(&config, Some("info"));

    let mut c = RawClient::connect(gate.addr).await;
    jwt::connect_jwt(&mut c, &user_jwt, Some(&user), json!({})).await;
    c.send(b"SUB b.x 1\r\nPUB b.x 2\r\nhi\r\n").await;
    assert_eq!(flush(&mut c).await, vec![Frame::msg("b.x", "1", b"hi")]);

    write(true);
    gate.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        c.send(b"PUB b.y 2\r\nhi\r\n").await;
        let frames = flush(&mut c).await;
        if frames.contains(&Frame::err("Permissions Violation for Publish to \"b.y\"")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no -ERR within 5 s of SIGHUP: {frames:?}\n{}",
            gate.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.send(b"PUB a.ok 2\r\nhi\r\nPUB b.z 2\r\nhi\r\n").await;
    assert_eq!(
        flush(&mut c).await,
        vec![Frame::err("Permissions Violation for Publish to \"b.z\"")],
        "a.ok is allowed (nobody subscribes to it), b.z refused"
    );
}
