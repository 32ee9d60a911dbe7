//! The "Private Inbox using JWT" story (NATS by Example,
//! the "Private Inbox using JWT" walk-through) end to end with async-nats
//! and `.creds`, once against nats-server in operator mode (side D) and once
//! through natsgate in front of a plain nats-server (side G). The same creds
//! are used on both sides; the observable outcomes (replies received, who
//! sees which reply, the exact permission errors) must be as in the seed and
//! equal on both sides.

mod support;

use std::time::Duration;

use futures::StreamExt as _;
use nkeys::KeyPair;
use support::jwt::{self as j, Permission, ResponsePermission};
use support::{Gate, NatsServer};

const GATE_PASSWORD: &str = "private-inbox-gate-s3cret";
/// Bound for every wait in the story.
const WAIT: Duration = Duration::from_secs(5);

/// Everything minted for the story: the operator (signing key, strict
/// signing key usage, system account SYS), account APP with a signing key,
/// and the users' creds in both phases.
struct World {
    operator_jwt: String,
    sys_key: String,
    accounts: Vec<(String, String)>,
    greeter: String,
    joe: String,
    pam: String,
    /// Re-issued: deny sub `_INBOX.>`, allow sub `_INBOX_<name>.>`.
    joe2: String,
    pam2: String,
}

fn mint() -> World {
    let sys = KeyPair::new_account();
    let op = j::operator("local", true, Some(&sys.public_key()));
    let sys_jwt = j::sign_account(&j::account_claims(&sys, "SYS"), &op.signing);
    let app = KeyPair::new_account();
    let app_sk = KeyPair::new_account();
    let mut app_claims = j::account_claims(&app, "APP");
    app_claims.nats.signing_keys = vec![j::SigningKey::Plain(app_sk.public_key())];
    let app_jwt = j::sign_account(&app_claims, &op.signing);

    let user = |name: &str, pub_allow: &[&str], sub: Permission, resp: bool| {
        let kp = KeyPair::new_user();
        let mut c = j::user_claims(&kp, name);
        c.nats.issuer_account = app.public_key();
        c.nats.limits.publish.allow = pub_allow.iter().map(|s| s.to_string()).collect();
        c.nats.limits.subscribe = sub;
        if resp {
            // nsc --allow-pub-response: {"max":1,"ttl":0}
            c.nats.limits.response = Some(ResponsePermission { max: 1, ttl: 0 });
        }
        j::creds(&j::sign_user(&c, &app_sk), &kp)
    };
    let allow = |a: &[&str], d: &[&str]| Permission {
        allow: a.iter().map(|s| s.to_string()).collect(),
        deny: d.iter().map(|s| s.to_string()).collect(),
    };
    World {
        operator_jwt: op.jwt.clone(),
        sys_key: sys.public_key(),
        accounts: vec![(sys.public_key(), sys_jwt), (app.public_key(), app_jwt)],
        greeter: user("greeter", &[], allow(&["services.greet"], &[]), true),
        joe: user(
            "joe",
            &["joe.>", "services.*"],
            allow(&["_INBOX.>"], &[]),
            false,
        ),
        pam: user(
            "pam",
            &["pam.>", "services.*"],
            allow(&["_INBOX.>"], &[]),
            false,
        ),
        joe2: user(
            "joe",
            &["joe.>", "services.*"],
            allow(&["_INBOX_joe.>"], &["_INBOX.>"]),
            false,
        ),
        pam2: user(
            "pam",
            &["pam.>", "services.*"],
            allow(&["_INBOX_pam.>"], &["_INBOX.>"]),
            false,
        ),
    }
}

/// A connected client and the server errors it was told about.
struct Client {
    nc: async_nats::Client,
    errors: tokio::sync::mpsc::UnboundedReceiver<String>,
}

async fn connect(url: &str, creds: &str, inbox_prefix: Option<&str>) -> Client {
    let (tx, errors) = tokio::sync::mpsc::unbounded_channel();
    let mut opts = async_nats::ConnectOptions::with_credentials(creds)
        .expect("parse creds")
        .request_timeout(Some(WAIT))
        .connection_timeout(WAIT)
        .max_reconnects(1)
        .event_callback(move |ev| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = ev {
                    let text = match e {
                        async_nats::ServerError::Other(s) => s,
                        other => other.to_string(),
                    };
                    let _ = tx.send(text);
                }
            }
        });
    if let Some(p) = inbox_prefix {
        opts = opts.custom_inbox_prefix(p);
    }
    let nc = tokio::time::timeout(WAIT, opts.connect(url))
        .await
        .unwrap_or_else(|_| panic!("connect to {url} timed out"))
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    Client { nc, errors }
}

impl Client {
    async fn flush(&self) {
        tokio::time::timeout(WAIT, self.nc.flush())
            .await
            .expect("flush timed out")
            .expect("flush");
    }

    /// The next server error, waiting at most `WAIT`.
    async fn next_error(&mut self) -> Option<String> {
        tokio::time::timeout(WAIT, self.errors.recv())
            .await
            .ok()
            .flatten()
    }

    async fn request(&self, subject: &str) -> Result<async_nats::Message, String> {
        self.nc
            .request(subject.to_owned(), "".into())
            .await
            .map_err(|e| e.to_string())
    }
}

/// Asserts that `sub` has nothing queued. Call after a flush of its client
/// that followed the event a delivery would have come from: the PONG comes
/// after any MSG the server sent before it, so nothing can still be in flight.
async fn assert_nothing(sub: &mut async_nats::Subscriber, what: &str) {
    match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
        Err(_) | Ok(None) => {}
        Ok(Some(m)) => panic!(
            "{what}: unexpected delivery on {}: {:?}",
            m.subject, m.payload
        ),
    }
}

/// Runs the story against `url`; returns a transcript of what was observed
/// (with the greeter's varying reply ids left out).
async fn story(url: &str, w: &World) -> Vec<String> {
    let mut t = Vec::new();

    // The greet service: replies once to each request (resp max 1).
    let greeter = connect(url, &w.greeter, None).await;
    let mut svc = greeter
        .nc
        .subscribe("services.greet")
        .await
        .expect("subscribe");
    greeter.flush().await;
    let g = greeter.nc.clone();
    let responder = tokio::spawn(async move {
        let mut n = 0u32;
        while let Some(m) = svc.next().await {
            if let Some(reply) = m.reply {
                n += 1;
                let _ = g.publish(reply, format!("Reply {n}").into()).await;
                let _ = g.flush().await;
            }
        }
    });

    // Phase 1: joe and pam both get replies; pam, subscribed to `_INBOX.>`, also sees joe's.
    let joe = connect(url, &w.joe, None).await;
    let pam = connect(url, &w.pam, None).await;
    let r = joe.request("services.greet").await.expect("joe's request");
    t.push(format!("joe got {:?}", reply_shape(&r)));
    let r = pam.request("services.greet").await.expect("pam's request");
    t.push(format!("pam got {:?}", reply_shape(&r)));
    let mut snoop = pam.nc.subscribe("_INBOX.>").await.expect("pam subscribe");
    pam.flush().await;
    // async-nats' flush has no PING round trip, so the SUB may still be on
    // its way when joe's reply is published. A request on pam's own
    // connection is answered only after the server has processed the SUB
    // sent before it; its reply reaches the snoop subscription too.
    pam.request("services.greet").await.expect("pam's request");
    tokio::time::timeout(WAIT, snoop.next())
        .await
        .expect("pam's _INBOX.> did not see pam's own reply")
        .expect("pam's subscription ended");
    let r = joe.request("services.greet").await.expect("joe's request");
    t.push(format!("joe got {:?}", reply_shape(&r)));
    pam.flush().await;
    let seen = tokio::time::timeout(WAIT, snoop.next())
        .await
        .expect("pam did not see joe's reply")
        .expect("pam's subscription ended");
    t.push(format!(
        "pam's _INBOX.> saw joe's reply: {}",
        seen.payload == r.payload && seen.subject.starts_with("_INBOX.")
    ));
    assert_nothing(&mut snoop, "pam's _INBOX.> after one reply").await;
    drop(snoop);
    joe.nc.drain().await.ok();
    pam.nc.drain().await.ok();

    // Phase 2: deny `_INBOX.>`, allow only one's own inbox prefix.
    let mut pam = connect(url, &w.pam2, Some("_INBOX_pam")).await;
    let joe = connect(url, &w.joe2, Some("_INBOX_joe")).await;
    let mut s1 = pam.nc.subscribe("_INBOX.>").await.expect("subscribe");
    pam.flush().await;
    t.push(format!("pam sub _INBOX.>: {:?}", pam.next_error().await));
    let mut s2 = pam.nc.subscribe("_INBOX_joe.>").await.expect("subscribe");
    pam.flush().await;
    t.push(format!(
        "pam sub _INBOX_joe.>: {:?}",
        pam.next_error().await
    ));
    let r = joe.request("services.greet").await;
    t.push(format!(
        "joe (_INBOX_joe) got {:?}",
        r.as_ref().map(reply_shape)
    ));
    let r = pam.request("services.greet").await;
    t.push(format!(
        "pam (_INBOX_pam) got {:?}",
        r.as_ref().map(reply_shape)
    ));
    pam.flush().await;
    assert_nothing(&mut s1, "pam's refused _INBOX.>").await;
    assert_nothing(&mut s2, "pam's refused _INBOX_joe.>").await;
    t.push(format!("pam errors left: {:?}", pam.errors.try_recv().ok()));
    t.push(format!("joe errors: {:?}", joe_errors(joe).await));

    responder.abort();
    t
}

async fn joe_errors(mut joe: Client) -> Vec<String> {
    joe.flush().await;
    let mut v = Vec::new();
    while let Ok(e) = joe.errors.try_recv() {
        v.push(e);
    }
    v
}

/// What a reply looks like, without the greeter's counter.
fn reply_shape(m: &async_nats::Message) -> String {
    let p = String::from_utf8_lossy(&m.payload);
    match p.strip_prefix("Reply ") {
        Some(n) if n.parse::<u32>().is_ok() => format!("Reply <n> on {}", inbox_kind(&m.subject)),
        _ => format!("{p:?} on {}", m.subject),
    }
}

fn inbox_kind(subject: &str) -> &str {
    subject.split('.').next().unwrap_or("")
}

fn expected() -> Vec<String> {
    let v = |s: &str| s.to_owned();
    vec![
        v(r#"joe got "Reply <n> on _INBOX""#),
        v(r#"pam got "Reply <n> on _INBOX""#),
        v(r#"joe got "Reply <n> on _INBOX""#),
        v("pam's _INBOX.> saw joe's reply: true"),
        v(r#"pam sub _INBOX.>: Some("Permissions Violation for Subscription to \"_INBOX.>\"")"#),
        v(
            r#"pam sub _INBOX_joe.>: Some("Permissions Violation for Subscription to \"_INBOX_joe.>\"")"#,
        ),
        v(r#"joe (_INBOX_joe) got Ok("Reply <n> on _INBOX_joe")"#),
        v(r#"pam (_INBOX_pam) got Ok("Reply <n> on _INBOX_pam")"#),
        v("pam errors left: None"),
        v("joe errors: []"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_inbox_story_nats_server_and_natsgate_agree() {
    let w = mint();
    let direct = NatsServer::start(&j::server_config(
        &[&w.operator_jwt],
        &w.accounts,
        Some(&w.sys_key),
    ));
    let upstream = NatsServer::start(&j::upstream_config(GATE_PASSWORD));
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = j::gate_setup(
        dir.path(),
        &upstream.url(),
        GATE_PASSWORD,
        &[&w.operator_jwt],
        &w.accounts,
    );
    let gate = Gate::start_with_dir(&toml, dir);

    let d = story(&direct.url(), &w).await;
    assert_eq!(
        d,
        expected(),
        "nats-server (operator mode) does not behave as the seed describes; log:\n{}",
        direct.log()
    );
    let g = story(&format!("nats://{}", gate.addr()), &w).await;
    gate.assert_running();
    assert_eq!(
        g, d,
        "natsgate differs from nats-server in the private inbox story"
    );
}

/// Strict signing key usage: an APP user signed by the account identity key
/// (not its signing key) is refused by both, with the async-nats error for
/// `Authorization Violation`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_inbox_strict_mode_refuses_identity_signed_user() {
    let sys = KeyPair::new_account();
    let op = j::operator("local", true, Some(&sys.public_key()));
    let app = KeyPair::new_account();
    let app_sk = KeyPair::new_account();
    let mut ac = j::account_claims(&app, "APP");
    ac.nats.signing_keys = vec![j::SigningKey::Plain(app_sk.public_key())];
    let accounts = vec![
        (
            sys.public_key(),
            j::sign_account(&j::account_claims(&sys, "SYS"), &op.signing),
        ),
        (app.public_key(), j::sign_account(&ac, &op.signing)),
    ];
    let kp = KeyPair::new_user();
    let by_identity = j::creds(&j::sign_user(&j::user_claims(&kp, "joe"), &app), &kp);
    let mut uc = j::user_claims(&kp, "joe");
    uc.nats.issuer_account = app.public_key();
    let by_sk = j::creds(&j::sign_user(&uc, &app_sk), &kp);

    let direct = NatsServer::start(&j::server_config(
        &[&op.jwt],
        &accounts,
        Some(&sys.public_key()),
    ));
    let upstream = NatsServer::start(&j::upstream_config(GATE_PASSWORD));
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = j::gate_setup(
        dir.path(),
        &upstream.url(),
        GATE_PASSWORD,
        &[&op.jwt],
        &accounts,
    );
    let gate = Gate::start_with_dir(&toml, dir);
    for url in [direct.url(), format!("nats://{}", gate.addr())] {
        let refused = async_nats::ConnectOptions::with_credentials(&by_identity)
            .unwrap()
            .connection_timeout(WAIT)
            .connect(&url);
        let r = tokio::time::timeout(WAIT, refused).await.expect("bounded");
        let e = r
            .err()
            .unwrap_or_else(|| panic!("{url}: identity-signed user accepted"));
        assert_eq!(
            e.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "{url}: {e}"
        );
        let ok = connect(&url, &by_sk, None).await;
        ok.flush().await;
    }
}
