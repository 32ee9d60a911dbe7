//! The core proxy against a real nats-server: the client-side challenge, the
//! upstream login, the relay's ordering guarantees and failure handling.
//! Raw protocol bytes where the exact wire matters, async-nats where an
//! official client must simply work.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use support::{Frame, Gate, NatsServer, RawClient, keys, quote_toml};

const PASSWORD: &str = "gate-upstream-s3cret";

/// A plain upstream that knows only natsgate's credential. `debug`/`trace`
/// make it log connections and CONNECT lines, which the tests read.
fn upstream() -> NatsServer {
    NatsServer::start(&format!(
        "debug: true\ntrace: true\nauthorization {{ users = [ {{user: \"gate\", password: \"{PASSWORD}\"}} ] }}\n"
    ))
}

fn gate_toml(upstream: &NatsServer, extra_listen: &str, users: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{extra_listen}\n\n[upstream]\nservers = [{}]\nuser = \"gate\"\npassword = {}\n\n{users}",
        quote_toml(&upstream.url()),
        quote_toml(PASSWORD)
    )
}

fn user_toml(kp: &nkeys::KeyPair, name: &str, permissions: &str) -> String {
    format!(
        "[[users]]\nnkey = {}\nname = {}\n{}\n",
        quote_toml(&kp.public_key()),
        quote_toml(name),
        if permissions.is_empty() {
            String::new()
        } else {
            format!("[users.permissions]\n{permissions}\n")
        }
    )
}

/// Connections the upstream has accepted so far (from its debug log).
fn upstream_connections(server: &NatsServer) -> usize {
    server.log().matches("Client connection created").count()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_has_a_fresh_nonce_and_only_natsgate_facts() {
    let upstream = upstream();
    let kp = keys::new_user();
    let gate = Gate::start(&gate_toml(
        &upstream,
        "max_payload = 4096\nadvertise = [\"gate1.example:4222\"]",
        &user_toml(&kp, "a", ""),
    ));
    let a = RawClient::connect(gate.addr()).await;
    let b = RawClient::connect(gate.addr()).await;
    let (na, nb) = (
        a.nonce().unwrap().to_string(),
        b.nonce().unwrap().to_string(),
    );
    assert_eq!(na.len(), 15);
    assert_ne!(na, nb, "every connection gets its own nonce");
    let info = a.info();
    assert_eq!(info["auth_required"], json!(true));
    assert_eq!(info["headers"], json!(true));
    assert_eq!(
        info["max_payload"],
        json!(4096),
        "natsgate's own limit, below the upstream's"
    );
    assert_eq!(
        info["connect_urls"],
        json!(["gate1.example:4222"]),
        "only [listen] advertise"
    );
    assert_eq!(info["version"], json!(upstream_version(&upstream).await));
}

async fn upstream_version(upstream: &NatsServer) -> String {
    let direct = RawClient::connect(upstream.addr()).await;
    direct.info()["version"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_closes_and_never_reaches_the_upstream() {
    let upstream = upstream();
    let kp = keys::new_user();
    let gate = Gate::start(&gate_toml(&upstream, "", &user_toml(&kp, "a", "")));
    // The start-up probe may or may not have connected yet; settle first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = upstream_connections(&upstream);

    // An op before CONNECT.
    let mut c = RawClient::connect(gate.addr()).await;
    c.send(b"PING\r\n").await;
    assert_eq!(
        c.expect_closed().await,
        vec![Frame::err("Authorization Violation")]
    );

    // Not CONNECT, though it starts with C.
    let mut c = RawClient::connect(gate.addr()).await;
    c.send(b"CXYZ\r\n").await;
    assert_eq!(
        c.expect_closed().await,
        vec![Frame::err("Unknown Protocol Operation")]
    );

    // The right key, but the signature of another nonce.
    let mut c = RawClient::connect(gate.addr()).await;
    let other = RawClient::connect(gate.addr()).await;
    let replayed = keys::sign_nonce(&kp, other.nonce().unwrap());
    c.connect_json(&json!({"nkey": kp.public_key(), "sig": replayed, "verbose": false}))
        .await;
    assert_eq!(
        c.expect_closed().await,
        vec![Frame::err("Authorization Violation")]
    );

    // A key natsgate does not know.
    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(&keys::new_user(), json!({})).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Frame::err("Authorization Violation")]
    );

    // Bad JSON: closed without a word, as nats-server does.
    let mut c = RawClient::connect(gate.addr()).await;
    c.send(b"CONNECT {\"verbose\":\"no\"}\r\n").await;
    assert_eq!(c.expect_closed().await, vec![]);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        upstream_connections(&upstream),
        before,
        "no upstream connection for an unauthenticated client"
    );

    // And a good one does get through.
    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(&kp, json!({})).await;
    assert_eq!(c.flush().await, vec![]);
    assert_eq!(upstream_connections(&upstream), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_timeout_closes_a_silent_client() {
    let upstream = upstream();
    let gate = Gate::start(&gate_toml(
        &upstream,
        "auth_timeout = \"300ms\"",
        &user_toml(&keys::new_user(), "a", ""),
    ));
    let mut c = RawClient::connect(gate.addr()).await;
    let started = Instant::now();
    assert_eq!(
        c.expect_closed().await,
        vec![Frame::err("Authentication Timeout")]
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "closed after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_natsgates_credential_and_the_clients_wishes() {
    let upstream = upstream();
    let kp = keys::new_user();
    let gate = Gate::start(&gate_toml(&upstream, "", &user_toml(&kp, "a", "")));
    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(
        &kp,
        json!({"name": "my-client", "echo": false, "headers": true}),
    )
    .await;
    c.flush().await;
    let log = upstream.log();
    let connect = log
        .lines()
        .rfind(|l| l.contains("CONNECT {") && l.contains("my-client"))
        .unwrap_or_else(|| panic!("no CONNECT traced upstream:\n{log}"));
    assert!(connect.contains("\"user\":\"gate\""), "{connect}");
    assert!(
        connect.contains("\"echo\":false") && connect.contains("\"headers\":true"),
        "{connect}"
    );
    assert!(
        connect.contains("\"verbose\":false") && connect.contains("\"pedantic\":false"),
        "{connect}"
    );
    assert!(
        !connect.contains("\"nkey\"")
            && !connect.contains("\"sig\"")
            && !connect.contains(&kp.public_key()),
        "{connect}"
    );
}

/// Spec 1.10's example, one write: verbose answers stay in op order with
/// natsgate's own -ERR, the echo comes after its +OK, PONG after all, then
/// the connect-info INFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_answers_stay_in_order_with_natsgates_errors() {
    let upstream = upstream();
    let kp = keys::new_user();
    let gate = Gate::start(&gate_toml(
        &upstream,
        "",
        &user_toml(&kp, "a", "subscribe = { allow = [\"a\"] }"),
    ));
    let mut c = RawClient::connect(gate.addr()).await;
    let nonce = c.nonce().unwrap().to_string();
    let connect = json!({"nkey": kp.public_key(), "sig": keys::sign_nonce(&kp, &nonce), "verbose": true, "protocol": 1});
    c.send(
        format!("CONNECT {connect}\r\nSUB a 1\r\nSUB b 2\r\nPUB a 1\r\nx\r\nPING\r\n").as_bytes(),
    )
    .await;
    let frames = c.collect_until_pong().await.unwrap();
    let info = c.read_frame().await;
    assert_eq!(
        frames,
        vec![
            Frame::Ok,
            Frame::Ok,
            Frame::err("Permissions Violation for Subscription to \"b\""),
            Frame::Ok,
            Frame::msg("a", "1", b"x"),
        ]
    );
    let Frame::Info(info) = info else {
        panic!("expected the connect-info INFO, got {info:?}")
    };
    assert_eq!(info["connect_info"], json!(true));
    assert_eq!(info["remote_account"], json!("$G"));
    assert!(info.get("nonce").is_none());
}

/// A client's PONG means the server has everything before the PING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_through_natsgate_means_the_server_has_the_data() {
    let upstream = upstream();
    let kp = keys::new_user();
    let gate = Gate::start(&gate_toml(&upstream, "", &user_toml(&kp, "a", "")));
    let mut observer = RawClient::connect(upstream.addr()).await;
    observer
        .connect_json(&json!({"user": "gate", "pass": PASSWORD, "verbose": false}))
        .await;
    observer.send(b"SUB flush.test 1\r\n").await;
    observer.flush().await;

    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(&kp, json!({})).await;
    let mut batch = Vec::new();
    for i in 0..2000 {
        batch.extend_from_slice(
            format!("PUB flush.test {}\r\n{i}\r\n", i.to_string().len()).as_bytes(),
        );
    }
    c.send(&batch).await;
    assert_eq!(c.flush().await, vec![]);
    // The server routed all 2000 before it answered natsgate's PING, so they
    // are queued for the observer before the observer's own PONG.
    let got = observer.flush().await;
    assert_eq!(
        got.len(),
        2000,
        "messages at the server when the client's flush returned"
    );
    assert_eq!(got[1999], Frame::msg("flush.test", "1", b"1999"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_upstream_closes_the_client_at_once() {
    let mut upstream = upstream();
    let kp = keys::new_user();
    let gate = Gate::start(&gate_toml(&upstream, "", &user_toml(&kp, "a", "")));
    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(&kp, json!({})).await;
    c.flush().await;
    c.set_timeout(Duration::from_secs(1));
    upstream.stop();
    c.expect_closed().await;
    // With every server down a new client is told so, and natsgate runs on.
    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(&kp, json!({})).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Frame::err("Upstream Unavailable")]
    );
    gate.assert_running();
    upstream.restart();
    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(&kp, json!({})).await;
    assert_eq!(c.flush().await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_takes_its_upstream_connection_with_it() {
    let upstream = upstream();
    let kp = keys::new_user();
    let gate = Gate::start(&gate_toml(&upstream, "", &user_toml(&kp, "a", "")));
    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(&kp, json!({"name": "vanishing"})).await;
    c.flush().await;
    let closed = |s: &NatsServer| s.log().matches("Client connection closed").count();
    let before = closed(&upstream);
    drop(c);
    wait_for(
        "the upstream connection to close",
        Duration::from_secs(2),
        || closed(&upstream) > before,
    )
    .await;
}

/// An official client, unchanged: NKey login, pub/sub, request/reply, and a
/// permission violation reported as nats-server reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_works_through_natsgate() {
    let upstream = upstream();
    let service = keys::new_user();
    let caller = keys::new_user();
    let users = user_toml(
        &service,
        "service",
        "subscribe = [\"svc.>\"]\nallow_responses = true",
    ) + &user_toml(
        &caller,
        "caller",
        "publish = { allow = [\"svc.>\"], deny = [\"svc.secret\"] }",
    );
    let gate = Gate::start(&gate_toml(&upstream, "", &users));
    let url = format!("nats://{}", gate.addr());

    let service_client = async_nats::ConnectOptions::with_nkey(service.seed().unwrap())
        .connect(&url)
        .await
        .expect("service connects with its NKey");
    let mut requests = service_client.subscribe("svc.>").await.unwrap();
    let responder = service_client.clone();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            if let Some(reply) = msg.reply {
                let body = format!("hello {}", String::from_utf8_lossy(&msg.payload));
                responder.publish(reply, body.into()).await.unwrap();
            }
        }
    });
    service_client.flush().await.unwrap();

    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let caller_client = async_nats::ConnectOptions::with_nkey(caller.seed().unwrap())
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = errors_tx.send(e.to_string());
                }
            }
        })
        .connect(&url)
        .await
        .expect("caller connects with its NKey");
    let answer = support::request_when_served(&caller_client, "svc.greet", b"joe").await;
    assert_eq!(&answer.payload[..], b"hello joe");

    caller_client
        .publish("svc.secret", "x".into())
        .await
        .unwrap();
    caller_client.flush().await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .expect("an error event")
        .unwrap();
    assert!(
        error.contains("Permissions Violation for Publish to \"svc.secret\""),
        "{error}"
    );
    // Still connected and working after the violation.
    let again = caller_client
        .request("svc.again", "pam".into())
        .await
        .unwrap();
    assert_eq!(&again.payload[..], b"hello pam");
}

/// `$SYS.REQ.USER.INFO` describes the client, not natsgate's credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_info_is_answered_for_the_client() {
    let upstream = upstream();
    let kp = keys::new_user();
    let gate = Gate::start(&gate_toml(
        &upstream,
        "",
        &user_toml(
            &kp,
            "joe",
            "publish = [\"a.>\", \"$SYS.REQ.USER.INFO\"]\nsubscribe = { allow = [\"_INBOX.>\"], deny = [\"_INBOX.x\"] }",
        ),
    ));
    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(&kp, json!({})).await;
    c.send(b"SUB _INBOX.me.* 9\r\nPUB $SYS.REQ.USER.INFO _INBOX.me.1 0\r\n\r\n")
        .await;
    let frames = c.flush().await;
    let [
        Frame::Msg {
            subject,
            sid,
            payload,
            ..
        },
    ] = &frames[..]
    else {
        panic!("expected one reply, got {frames:?}")
    };
    assert_eq!((subject.as_str(), sid.as_str()), ("_INBOX.me.1", "9"));
    let reply: serde_json::Value = serde_json::from_slice(payload).unwrap();
    let data = &reply["data"];
    assert_eq!(data["user"], json!(kp.public_key()));
    assert_eq!(data["user_name"], json!("joe"));
    assert_eq!(
        data["permissions"]["publish"]["allow"],
        json!(["a.>", "$SYS.REQ.USER.INFO"])
    );
    assert_eq!(
        data["permissions"]["subscribe"]["deny"],
        json!(["_INBOX.x"])
    );
    assert!(
        String::from_utf8_lossy(payload).contains("a.\\u003e"),
        "escaped like Go: {}",
        String::from_utf8_lossy(payload)
    );
}

/// A client that stops reading is a slow consumer: natsgate buffers a
/// bounded amount for it, then closes it (without an error, as nats-server)
/// and stays healthy for everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_closed_as_a_slow_consumer() {
    let upstream = upstream();
    let kp = keys::new_user();
    let gate = Gate::start(&gate_toml(&upstream, "", &user_toml(&kp, "a", "")));
    let mut slow = RawClient::connect(gate.addr()).await;
    slow.connect_nkey(&kp, json!({})).await;
    slow.send(b"SUB flood 1\r\n").await;
    slow.flush().await;

    let mut publisher = RawClient::connect(upstream.addr()).await;
    publisher
        .connect_json(&json!({"user": "gate", "pass": PASSWORD, "verbose": false}))
        .await;
    let payload = vec![b'x'; 1024];
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend_from_slice(b"PUB flood 1024\r\n");
        batch.extend_from_slice(&payload);
        batch.extend_from_slice(b"\r\n");
    }
    // 20 MiB: far more than natsgate's queue and the sockets' buffers.
    for _ in 0..20 {
        publisher.send(&batch).await;
    }
    publisher.flush().await;
    let started = Instant::now();
    // Reading now drains what the kernel buffered; natsgate must have closed
    // the connection instead of going on sending.
    tokio::time::sleep(Duration::from_secs(7)).await;
    slow.set_timeout(Duration::from_secs(5));
    let frames = slow.expect_closed().await;
    assert!(
        frames.len() < 20_000,
        "the slow client was closed before getting everything ({} frames in {:?})",
        frames.len(),
        started.elapsed()
    );
    // natsgate still serves others.
    let mut other = RawClient::connect(gate.addr()).await;
    other.connect_nkey(&kp, json!({})).await;
    assert_eq!(other.flush().await, vec![]);
}

/// Two upstream servers: when the one in use dies, its clients are closed
/// within a second and get back in through natsgate, which now picks the
/// other server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_server_fails_over_to_the_next() {
    let mut first = upstream();
    let second = upstream();
    let kp = keys::new_user();
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n[upstream]\nservers = [{}, {}]\nuser = \"gate\"\npassword = {}\n\n{}",
        quote_toml(&first.url()),
        quote_toml(&second.url()),
        quote_toml(PASSWORD),
        user_toml(&kp, "a", "")
    );
    let gate = Gate::start(&toml);
    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(&kp, json!({"name": "before-failover"}))
        .await;
    assert_eq!(c.flush().await, vec![]);
    assert!(
        first.log().contains("before-failover"),
        "the first server is used first"
    );

    first.stop();
    let stopped = Instant::now();
    c.set_timeout(Duration::from_secs(1));
    c.expect_closed().await;
    let closed_after = stopped.elapsed();
    assert!(
        closed_after < Duration::from_secs(1),
        "closed {closed_after:?} after the server died"
    );

    let mut again = RawClient::connect(gate.addr()).await;
    again
        .connect_nkey(&kp, json!({"name": "after-failover"}))
        .await;
    assert_eq!(again.flush().await, vec![]);
    let recovered_after = stopped.elapsed();
    assert!(
        second.log().contains("after-failover"),
        "the client came back through the second server"
    );
    eprintln!("failover: client closed after {closed_after:?}, back in after {recovered_after:?}");
}

/// At `max_connections`, a new client gets natsgate's INFO, then
/// `-ERR 'maximum connections exceeded'`, then the close (spec 1.2); a slot
/// that frees up is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_with_nats_servers_error() {
    let upstream = upstream();
    let kp = keys::new_user();
    let gate = Gate::start(&gate_toml(
        &upstream,
        "max_connections = 2",
        &user_toml(&kp, "a", ""),
    ));
    let mut first = RawClient::connect(gate.addr()).await;
    first.connect_nkey(&kp, json!({})).await;
    first.flush().await;
    let mut second = RawClient::connect(gate.addr()).await;
    second.connect_nkey(&kp, json!({})).await;
    second.flush().await;
    let mut third = RawClient::connect(gate.addr()).await;
    assert!(
        third.info().get("nonce").is_none(),
        "a refused connection gets no challenge"
    );
    assert_eq!(
        third.expect_closed().await,
        vec![Frame::err("maximum connections exceeded")]
    );
    first.close().await;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut again = RawClient::connect(gate.addr()).await;
        if again.nonce().is_some() {
            again.connect_nkey(&kp, json!({})).await;
            assert_eq!(again.flush().await, vec![]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot was never given out again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
