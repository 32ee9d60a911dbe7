//! Two natsgate instances sharing one account store, a JetStream KV bucket
//! (`[jwt.kv]`) on a 3-node nats-server cluster: a push to one instance
//! reaches the other and its connected users within 1 s; the store
//! survives the loss of a node; a restarted instance starts from the
//! bucket; entries written to the bucket without the operator's keys are
//! not used.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nkeys::KeyPair;
use serde_json::{Value, json};
use support::jwt::{self as j, AccountClaims, Permission};
use support::{Frame, Gate, NatsServer, RawClient, quote_conf, quote_toml};

const PASSWORD: &str = "fleet-gate-s3cret";
const BUCKET: &str = "natsgate-accounts";
const WAIT: Duration = Duration::from_secs(5);
/// What the issue promises: a push reaches every instance within this.
const PROPAGATION: Duration = Duration::from_secs(1);

/// A 3-node cluster with JetStream. JetStream clustering needs configured
/// routes from the start, so the route ports are picked first (bound on
/// port 0 and released: chosen at run time, not fixed).
fn cluster(dir: &Path) -> Vec<NatsServer> {
    let ports: Vec<u16> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|p| quote_conf(&format!("nats-route://127.0.0.1:{p}")))
        .collect();
    (0..3)
        .map(|i| {
            let store = dir.join(format!("js{i}"));
            NatsServer::start(&format!(
                "server_name: n{i}\njetstream {{ store_dir: {} }}\n\
                 cluster {{ name: fleet, listen: \"127.0.0.1:{}\", routes: [{}] }}\n\
                 authorization {{ users = [ {{user: gate, password: {}}} ] }}\n",
                quote_conf(&store.to_string_lossy()),
                ports[i],
                routes.join(", "),
                quote_conf(PASSWORD)
            ))
        })
        .collect()
}

struct World {
    op: j::Operator,
    sys: (KeyPair, String),
    app: (KeyPair, String),
    pusher: String,
}

fn world() -> World {
    let sys = KeyPair::new_account();
    let op = j::operator("fleet", false, Some(&sys.public_key()));
    let sys_jwt = j::sign_account(&j::account_claims(&sys, "SYS"), &op.signing);
    let app = KeyPair::new_account();
    let app_jwt = j::sign_account(&j::account_claims(&app, "APP"), &op.signing);
    let kp = KeyPair::new_user();
    let mut c = j::user_claims(&kp, "pusher");
    c.nats.limits.publish = Permission {
        allow: vec!["$SYS.REQ.CLAIMS.>".into()],
        deny: vec![],
    };
    c.nats.limits.subscribe = Permission {
        allow: vec!["_INBOX.>".into()],
        deny: vec![],
    };
    let pusher = j::creds(&j::sign_user(&c, &sys), &kp);
    World {
        op,
        sys: (sys, sys_jwt),
        app: (app, app_jwt),
        pusher,
    }
}

/// natsgate's config: the cluster's nodes, the bucket with 3 replicas, and
/// an `accounts_dir` with `seed` (SYS and APP for instance A, nothing for B).
fn gate_toml(dir: &Path, nodes: &[NatsServer], w: &World, seed: &[(String, String)]) -> String {
    let mut toml = j::gate_setup(dir, &nodes[0].url(), PASSWORD, &[&w.op.jwt], seed);
    let servers: Vec<String> = nodes.iter().map(|n| quote_toml(&n.url())).collect();
    toml = toml.replace(
        &format!("servers = [{}]", quote_toml(&nodes[0].url())),
        &format!("servers = [{}]", servers.join(", ")),
    );
    toml.push_str(&format!(
        "\n[jwt.kv]\nbucket = {}\nreplicas = 3\n",
        quote_toml(BUCKET)
    ));
    toml
}

async fn connect(addr: SocketAddr, creds: &str) -> Result<async_nats::Client, String> {
    let connecting = async_nats::ConnectOptions::with_credentials(creds)
        .expect("creds")
        .max_reconnects(Some(0))
        .connect(format!("nats://{addr}"));
    match tokio::time::timeout(WAIT, connecting).await {
        Ok(Ok(nc)) => match tokio::time::timeout(WAIT, nc.flush()).await {
            Ok(Ok(())) => Ok(nc),
            other => Err(format!("flush: {other:?}")),
        },
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Keeps trying to log in until it works; returns how long it took.
async fn logs_in_within(addr: SocketAddr, creds: &str, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if connect(addr, creds).await.is_ok() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Pushes an account JWT as nsc does and returns the reply's `data` or
/// `error` part.
async fn push(addr: SocketAddr, w: &World, jwt: &str) -> Value {
    let nc = connect(addr, &w.pusher).await.expect("the pusher logs in");
    let msg = tokio::time::timeout(
        WAIT,
        nc.request("$SYS.REQ.CLAIMS.UPDATE", jwt.to_owned().into()),
    )
    .await
    .expect("answered in time")
    .expect("answered");
    let mut v: Value = serde_json::from_slice(&msg.payload).expect("JSON");
    v.as_object_mut().unwrap().remove("server");
    v
}

fn user(acc: &KeyPair, name: &str) -> (KeyPair, String, String) {
    let kp = KeyPair::new_user();
    let jwt = j::sign_user(&j::user_claims(&kp, name), acc);
    let creds = j::creds(&jwt, &kp);
    (kp, jwt, creds)
}

/// The test's own client of the bucket (as a bucket writer without the
/// operator's keys would be).
async fn bucket(nodes: &[NatsServer]) -> async_nats::jetstream::kv::Store {
    let urls: Vec<async_nats::ServerAddr> =
        nodes.iter().map(|n| n.url().parse().unwrap()).collect();
    let nc = async_nats::ConnectOptions::new()
        .user_and_password("gate".into(), PASSWORD.into())
        .connect(urls)
        .await
        .expect("connect to the cluster");
    let js = async_nats::jetstream::new(nc);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(kv) = js.get_key_value(BUCKET).await {
            return kv;
        }
        assert!(
            Instant::now() < deadline,
            "natsgate did not create the bucket"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_bucket_on_a_three_node_cluster() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "natsgate=info".into()))
        .with_test_writer()
        .try_init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster(tmp.path());
    let w = world();
    let seed = vec![
        (w.sys.0.public_key(), w.sys.1.clone()),
        (w.app.0.public_key(), w.app.1.clone()),
    ];
    let dir_a = tempfile::tempdir().unwrap();
    let toml_a = gate_toml(dir_a.path(), &nodes, &w, &seed);
    let a = Gate::start_with_dir(&toml_a, dir_a);
    // The bucket exists (A created it) and A seeded it from its files.
    let kv = bucket(&nodes).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while kv.get(w.app.0.public_key()).await.ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "A did not seed the bucket");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B has no files at all: everything it knows comes from the bucket.
    let dir_b = tempfile::tempdir().unwrap();
    let toml_b = gate_toml(dir_b.path(), &nodes, &w, &[]);
    let b = Gate::start_with_dir(&toml_b, dir_b);
    let (_, _, app_user) = user(&w.app.0, "app-user");
    assert!(
        logs_in_within(b.addr(), &app_user, WAIT).await.is_some(),
        "B serves APP from the bucket"
    );

    // 1. A new account pushed to A: its user logs in through B within 1 s.
    let new = KeyPair::new_account();
    let mut new_claims: AccountClaims = j::account_claims(&new, "NEW");
    let new_jwt = j::sign_account(&new_claims, &w.op.signing);
    let (alice_kp, alice_jwt, alice) = user(&new, "alice");
    assert!(
        connect(b.addr(), &alice).await.is_err(),
        "unknown before the push"
    );
    let reply = push(a.addr(), &w, &new_jwt).await;
    assert_eq!(reply["data"]["message"], "jwt updated", "{reply}");
    let took = logs_in_within(b.addr(), &alice, PROPAGATION)
        .await
        .expect("alice logs in through B within 1 s of the push to A");
    eprintln!("push to A -> login through B: {took:?}");

    // 2. Alice revoked through A: her connection through B closes within 1 s.
    let mut c = RawClient::connect(b.addr()).await;
    j::connect_jwt(&mut c, &alice_jwt, Some(&alice_kp), json!({})).await;
    assert!(c.flush().await.iter().all(|f| !matches!(f, Frame::Err(_))));
    new_claims
        .nats
        .revocations
        .insert(alice_kp.public_key(), j::unix_now() + 5);
    new_claims.issued_at = j::unix_now() + 1;
    let revoked_jwt = j::sign_account(&new_claims, &w.op.signing);
    let reply = push(a.addr(), &w, &revoked_jwt).await;
    assert_eq!(reply["data"]["code"], 200, "{reply}");
    let pushed = Instant::now();
    let mut frame = None;
    while let Some(left) = PROPAGATION.checked_sub(pushed.elapsed()) {
        match c.try_read_frame_within(left).await {
            // The connect-info INFO (and the async INFO of an update).
            Ok(Frame::Info(_)) => continue,
            other => {
                frame = other.ok();
                break;
            }
        }
    }
    assert_eq!(
        frame,
        Some(Frame::err("User Authentication Revoked")),
        "alice's connection through B is closed within 1 s"
    );
    eprintln!("revocation through A -> close on B: {:?}", pushed.elapsed());

    // 3. Bucket writers without the operator's keys: garbage over APP, the
    // pre-revocation NEW (a rollback), an account of a foreign operator.
    let app = w.app.0.public_key();
    kv.put(&app, Bytes::from_static(b"not a jwt"))
        .await
        .unwrap();
    kv.put(new.public_key(), Bytes::from(new_jwt.clone()))
        .await
        .unwrap();
    let foreign_op = j::operator("foreign", false, None);
    let foreign = KeyPair::new_account();
    let foreign_jwt = j::sign_account(&j::account_claims(&foreign, "FOREIGN"), &foreign_op.signing);
    kv.put(foreign.public_key(), Bytes::from(foreign_jwt))
        .await
        .unwrap();
    // Then a good push, to know both instances have read past them.
    let later = KeyPair::new_account();
    let later_jwt = j::sign_account(&j::account_claims(&later, "LATER"), &w.op.signing);
    assert_eq!(push(a.addr(), &w, &later_jwt).await["data"]["code"], 200);
    let (_, _, later_user) = user(&later, "later");
    for (name, gate) in [("A", &a), ("B", &b)] {
        assert!(
            logs_in_within(gate.addr(), &later_user, PROPAGATION)
                .await
                .is_some(),
            "{name}"
        );
        assert!(
            connect(gate.addr(), &app_user).await.is_ok(),
            "{name}: APP kept"
        );
        assert!(
            connect(gate.addr(), &alice).await.is_err(),
            "{name}: no rollback"
        );
        let (_, _, f) = user(&foreign, "f");
        assert!(
            connect(gate.addr(), &f).await.is_err(),
            "{name}: foreign refused"
        );
    }

    // 4. A node goes: the store still takes pushes and B still follows.
    nodes[0].stop();
    let gone = KeyPair::new_account();
    let gone_jwt = j::sign_account(&j::account_claims(&gone, "AFTERLOSS"), &w.op.signing);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = match connect(a.addr(), &w.pusher).await {
            Ok(nc) => tokio::time::timeout(
                WAIT,
                nc.request("$SYS.REQ.CLAIMS.UPDATE", gone_jwt.clone().into()),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|m| serde_json::from_slice::<Value>(&m.payload).ok()),
            Err(_) => None,
        };
        if reply.as_ref().is_some_and(|r| r["data"]["code"] == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no push accepted after a node loss: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, _, gone_user) = user(&gone, "survivor");
    // B may have been connected to the node that went: what was published
    // while it reconnected comes from the bucket once it watches again.
    assert!(
        logs_in_within(b.addr(), &gone_user, Duration::from_secs(15))
            .await
            .is_some(),
        "B follows the bucket after the node loss"
    );

    // 5. With the cluster whole again, B restarted (nothing on disk): it
    // starts with every pushed account, and with the newest JWT of each
    // (not the older one written over it).
    nodes[0].restart();
    b.shutdown(WAIT).await.expect("B stops");
    let dir_b = tempfile::tempdir().unwrap();
    let toml_b = gate_toml(dir_b.path(), &nodes, &w, &[]);
    let b = Gate::start_with_dir(&toml_b, dir_b);
    for (name, creds) in [
        ("APP", &app_user),
        ("LATER", &later_user),
        ("AFTERLOSS", &gone_user),
    ] {
        let took = logs_in_within(b.addr(), creds, Duration::from_secs(10)).await;
        assert!(took.is_some(), "the restarted B serves {name}");
        eprintln!("restarted B: {name} served after {took:?}");
    }
    assert!(
        connect(b.addr(), &alice).await.is_err(),
        "and keeps alice revoked"
    );
}

#[tokio::test]
async fn an_unreachable_bucket_leaves_the_accounts_of_the_files_and_says_so() {
    // A plain upstream without JetStream: the bucket cannot be opened.
    let upstream = NatsServer::start(&format!(
        "authorization {{ users = [ {{user: gate, password: {}}} ] }}\n",
        quote_conf(PASSWORD)
    ));
    let w = world();
    let seed = vec![
        (w.sys.0.public_key(), w.sys.1.clone()),
        (w.app.0.public_key(), w.app.1.clone()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let toml = gate_toml(dir.path(), std::slice::from_ref(&upstream), &w, &seed);
    let settings = natsgate::config::Settings::from_toml_str(&toml, dir.path()).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = metrics_listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(natsgate::run_with_listeners(
        settings,
        listener,
        Some(metrics_listener),
        shutdown.clone(),
    ));
    let (_, _, app_user) = user(&w.app.0, "app-user");
    let took = logs_in_within(addr, &app_user, Duration::from_secs(10))
        .await
        .expect("APP (from the files) is served without the bucket");
    assert!(
        took <= natsgate::resolver::fleet::START_WAIT + Duration::from_secs(2),
        "start-up waits at most START_WAIT for the bucket: {took:?}"
    );
    eprintln!(
        "start without a bucket: first login after {:?}",
        started.elapsed()
    );
    let (status, body) = support::http_get(metrics, "/healthz").await;
    assert_eq!(status, 200, "the upstream is reachable: {body}");
    assert!(
        body.contains("kv bucket natsgate-accounts unreachable")
            && body.contains("serving the accounts last seen"),
        "{body}"
    );
    let (_, text) = support::http_get(metrics, "/metrics").await;
    assert!(text.contains("\nnatsgate_account_store_up 0\n"), "{text}");
    // A push cannot be stored: refused, and nothing changes.
    let mut changed: AccountClaims = j::account_claims(&w.app.0, "APP");
    changed.nats.limits.conn = 0;
    changed.issued_at = j::unix_now() + 1;
    let reply = push(addr, &w, &j::sign_account(&changed, &w.op.signing)).await;
    let text = reply["error"]["description"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("jwt update resulted in error - bucket"),
        "{reply}"
    );
    assert!(connect(addr, &app_user).await.is_ok(), "APP unchanged");
    shutdown.cancel();
    let _ = tokio::time::timeout(WAIT, run).await;
}
