//! The retrofit kit (issue 16) with the natsgate binary in front of a real
//! nats-server:
//! - `[limits]` rates are back-pressure: a publisher limited to 1,000
//!   msgs/s pushing flat out for 10 s gets 950-1,050 msgs/s through, loses
//!   nothing, and another user on the same natsgate is not held to it;
//! - `close_after` closes a client that stays throttled, counted, without
//!   losing what was accepted; `max_connections` caps a user per instance;
//! - `[advisories]` events reach a subscriber on the upstream, with
//!   nats-server's advisory shape;
//! - the per-user series show each user's traffic.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use support::process::spawn_gate_binary;
use support::{Frame, NatsServer, RawClient, keys, quote_conf, quote_toml};

const PASSWORD: &str = "retrofit-pw";

fn upstream() -> NatsServer {
    NatsServer::start(&format!(
        "authorization {{ users = [ {{user: \"gate\", password: {}}} ] }}\n",
        quote_conf(PASSWORD)
    ))
}

fn user_toml(kp: &nkeys::KeyPair, name: &str, permissions: &str) -> String {
    format!(
        "[[users]]\nnkey = {}\nname = {}\naccount = \"APP\"\n{permissions}\n",
        quote_toml(&kp.public_key()),
        quote_toml(name)
    )
}

fn gate_toml(upstream: &NatsServer, extra: &str, users: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n[upstream]\nservers = [{}]\nuser = \"gate\"\n\
         password = {}\n\n[metrics]\naddr = \"127.0.0.1:0\"\n\n{extra}\n\n{users}",
        quote_toml(&upstream.url()),
        quote_toml(PASSWORD)
    )
}

/// A client straight on the upstream (natsgate's own credential).
async fn direct(server: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .user_and_password("gate".into(), PASSWORD.into())
        .connect(server.url())
        .await
        .expect("connect upstream")
}

async fn through(gate: SocketAddr, kp: &nkeys::KeyPair) -> async_nats::Client {
    async_nats::ConnectOptions::with_nkey(kp.seed().unwrap())
        .connect(gate.to_string())
        .await
        .expect("connect through natsgate")
}

/// One sample of `/metrics`, 0 when absent.
async fn sample(metrics: SocketAddr, series: &str) -> f64 {
    let (status, body) = support::http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Counts the messages of a subscription, with the time of each.
fn count_arrivals(mut sub: async_nats::Subscriber) -> Arc<std::sync::Mutex<Vec<Instant>>> {
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = arrivals.clone();
    tokio::spawn(async move {
        while sub.next().await.is_some() {
            sink.lock().unwrap().push(Instant::now());
        }
    });
    arrivals
}

/// Waits (bounded) until `arrivals` holds `n`.
async fn wait_for(arrivals: &std::sync::Mutex<Vec<Instant>>, n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let got = arrivals.lock().unwrap().len();
        if got >= n || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_back_pressure_exact_lossless_and_per_user() {
    let server = upstream();
    let limited = keys::new_user();
    let free = keys::new_user();
    let any = "[users.permissions]\npublish = [\">\"]\nsubscribe = [\">\"]\n";
    let gate = spawn_gate_binary(&gate_toml(
        &server,
        "[[limits.users]]\nuser = \"limited\"\nmsgs_per_second = 1000\n",
        &format!(
            "{}{}",
            user_toml(&limited, "limited", any),
            user_toml(&free, "free", any)
        ),
    ));
    let metrics = gate.metrics_addr().await;
    let watcher = direct(&server).await;
    let arrivals_a = count_arrivals(watcher.subscribe("rate.a").await.unwrap());
    let arrivals_b = count_arrivals(watcher.subscribe("rate.b").await.unwrap());
    watcher.flush().await.unwrap();

    // The free user alone, as the baseline.
    let b = through(gate.addr, &free).await;
    let payload = bytes::Bytes::from(vec![b'x'; 1024]);
    let burst = 5000;
    let started = Instant::now();
    for _ in 0..burst {
        b.publish("rate.b", payload.clone()).await.unwrap();
    }
    b.flush().await.unwrap();
    assert_eq!(
        wait_for(&arrivals_b, burst, Duration::from_secs(10)).await,
        burst
    );
    // End to end: until the last one arrived.
    let alone = burst as f64 / started.elapsed().as_secs_f64();

    // The limited user pushes as fast as it can for 10 s.
    let a = through(gate.addr, &limited).await;
    let sent = Arc::new(AtomicU64::new(0));
    let pushing = {
        // 4 KiB: fewer messages wait in the client's and the kernel's
        // buffers when the push stops.
        let payload = bytes::Bytes::from(vec![b'y'; 4096]);
        let (a, sent) = (a.clone(), sent.clone());
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                // Bounded: a publish that cannot go on within 1 s is as
                // good as the end of the run.
                let publish = a.publish("rate.a", payload.clone());
                match tokio::time::timeout(Duration::from_secs(1), publish).await {
                    Ok(Ok(())) => sent.fetch_add(1, Ordering::Relaxed),
                    _ => continue,
                };
            }
        })
    };
    // Meanwhile (after 2 s), the free user again: not held to the limit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    for _ in 0..burst {
        b.publish("rate.b", payload.clone()).await.unwrap();
    }
    b.flush().await.unwrap();
    assert_eq!(
        wait_for(&arrivals_b, 2 * burst, Duration::from_secs(10)).await,
        2 * burst
    );
    let beside = burst as f64 / started.elapsed().as_secs_f64();
    pushing.await.unwrap();
    let throttled = sample(metrics, "natsgate_rate_limited_total").await;

    // Everything the client handed over arrives: nothing is lost. (What
    // waits in the client's and the kernel's buffers goes at the limit.)
    tokio::time::timeout(Duration::from_secs(10), a.flush())
        .await
        .expect("the limited client flushes within 10 s")
        .unwrap();
    let sent = sent.load(Ordering::Relaxed) as usize;
    let got = wait_for(&arrivals_a, sent, Duration::from_secs(40)).await;
    assert_eq!(got, sent, "every message sent arrives");
    let arrivals = arrivals_a.lock().unwrap().clone();
    let first = arrivals[0];
    let in_ten = arrivals
        .iter()
        .filter(|t| t.duration_since(first) < Duration::from_secs(10))
        .count();
    let rate = in_ten as f64 / 10.0;
    println!(
        "limited: {rate:.0} msgs/s over 10 s ({sent} sent, {got} delivered); \
         free user: {alone:.0} msgs/s alone, {beside:.0} msgs/s beside it; \
         {throttled} throttles"
    );
    assert!(
        (950.0..=1050.0).contains(&rate),
        "limited to 1,000 msgs/s, got {rate}"
    );
    assert!(sent > 10_000, "the publisher pushed past its limit: {sent}");
    assert!(
        beside > 5_000.0,
        "the free user is not held to the other's limit: {beside:.0} msgs/s"
    );
    assert!(throttled > 0.0);
    assert_eq!(
        sample(metrics, "natsgate_limit_closes_total{limit=\"rate\"}").await,
        0.0,
        "no close_after: never closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_connection_caps_advisories_and_user_series() {
    let server = upstream();
    let slow = keys::new_user();
    let capped = keys::new_user();
    let strict = keys::new_user();
    let any = "[users.permissions]\npublish = [\">\"]\nsubscribe = [\">\"]\n";
    let gate = spawn_gate_binary(&gate_toml(
        &server,
        "[advisories]\nsubject = \"natsgate.adv\"\n\n[limits]\nclose_after = \"2s\"\n\n\
         [[limits.users]]\nuser = \"slow\"\nmsgs_per_second = 10\n\n\
         [[limits.users]]\nuser = \"capped\"\nmax_connections = 2\n",
        &format!(
            "{}{}{}",
            user_toml(&slow, "slow", any),
            user_toml(&capped, "capped", any),
            user_toml(
                &strict,
                "strict",
                "[users.permissions]\npublish = { allow = [\"a.>\"], deny = [\"a.secret\"] }\n"
            )
        ),
    ));
    let metrics = gate.metrics_addr().await;
    let watcher = direct(&server).await;
    let mut events = watcher.subscribe("natsgate.adv.>").await.unwrap();
    let slow_arrivals = count_arrivals(watcher.subscribe("slow.x").await.unwrap());
    watcher.flush().await.unwrap();
    let mut next_event = async || -> (String, Value) {
        let msg = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an advisory within 5 s")
            .unwrap();
        (
            msg.subject.to_string(),
            serde_json::from_slice(&msg.payload).unwrap(),
        )
    };

    // A violation: the -ERR, then the advisory upstream.
    let mut c = RawClient::connect(gate.addr).await;
    c.connect_nkey(&strict, json!({"name": "strict-app", "lang": "raw"}))
        .await;
    c.send(b"PUB a.secret 2\r\nhi\r\n").await;
    let frames = c.flush().await;
    assert!(
        frames.contains(&Frame::err(
            "Permissions Violation for Publish to \"a.secret\""
        )),
        "{frames:?}"
    );
    let (subject, event) = next_event().await;
    assert_eq!(subject, "natsgate.adv.publish_violation");
    assert_eq!(event["type"], "io.natsgate.advisory.v1.publish_violation");
    assert_eq!(event["id"].as_str().map(str::len), Some(22), "{event}");
    assert!(event["timestamp"].as_str().unwrap().starts_with("20"));
    assert!(event["server"]["id"].as_str().unwrap().starts_with('N'));
    assert_eq!(event["client"]["host"], "127.0.0.1");
    assert_eq!(event["client"]["user"], strict.public_key());
    assert_eq!(event["client"]["name_tag"], "strict");
    assert_eq!(event["client"]["acc"], "APP");
    assert_eq!(event["client"]["name"], "strict-app");
    assert_eq!(event["client"]["lang"], "raw");
    assert_eq!(event["op"], "publish");
    assert_eq!(event["subject"], "a.secret");
    assert_eq!(event["rule_kind"], "deny_entry");
    assert_eq!(event["rule"], "deny entry \"a.secret\" matched");

    // A failed login.
    let mut intruder = RawClient::connect(gate.addr).await;
    intruder.connect_nkey(&keys::new_user(), json!({})).await;
    intruder.expect_closed().await;
    let (subject, event) = next_event().await;
    assert_eq!(subject, "natsgate.adv.auth_failure");
    assert_eq!(event["reason"], "unknown_user");
    assert!(event["nkey"].as_str().unwrap().starts_with('U'));

    // The user's connection cap, per instance.
    let one = through(gate.addr, &capped).await;
    let two = through(gate.addr, &capped).await;
    let mut third = RawClient::connect(gate.addr).await;
    third.connect_nkey(&capped, json!({})).await;
    let frames = third.expect_closed().await;
    assert!(
        frames.contains(&Frame::err("maximum connections exceeded")),
        "{frames:?}"
    );
    let (subject, event) = next_event().await;
    assert_eq!(subject, "natsgate.adv.limit_close");
    assert_eq!(event["limit"], "user_connections");
    assert_eq!(event["client"]["user"], capped.public_key());
    assert_eq!(
        sample(
            metrics,
            "natsgate_limit_closes_total{limit=\"user_connections\"}"
        )
        .await,
        1.0
    );
    drop(one);
    two.flush().await.unwrap();

    // close_after: 10 msgs/s, 200 sent at once: throttled for longer than
    // 2 s, closed, and what was taken before the close is delivered.
    let mut s = RawClient::connect(gate.addr).await;
    s.connect_nkey(&slow, json!({})).await;
    let mut batch = Vec::new();
    for _ in 0..200 {
        batch.extend_from_slice(b"PUB slow.x 2\r\nhi\r\n");
    }
    let started = Instant::now();
    s.send(&batch).await;
    s.set_timeout(Duration::from_secs(10));
    s.expect_closed().await;
    let closed_after = started.elapsed();
    let (subject, event) = next_event().await;
    assert_eq!(subject, "natsgate.adv.limit_close");
    assert_eq!(event["limit"], "rate");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(5)).contains(&closed_after),
        "closed after {closed_after:?}"
    );
    assert_eq!(
        sample(metrics, "natsgate_limit_closes_total{limit=\"rate\"}").await,
        1.0
    );
    let user = slow.public_key();
    let series = format!(
        "natsgate_user_messages_total{{account=\"APP\",direction=\"client_to_upstream\",name=\"slow\",user=\"{user}\"}}"
    );
    let forwarded = sample(metrics, &series).await as usize;
    // The burst (1) plus 10/s for 2-3 s.
    assert!((20..=40).contains(&forwarded), "forwarded {forwarded}");
    assert_eq!(
        wait_for(&slow_arrivals, forwarded, Duration::from_secs(5)).await,
        forwarded,
        "everything forwarded before the close arrives"
    );
    let violations = format!(
        "natsgate_user_violations_total{{account=\"APP\",name=\"strict\",user=\"{}\"}}",
        strict.public_key()
    );
    assert_eq!(sample(metrics, &violations).await, 1.0);
    let connections = format!(
        "natsgate_user_connections{{account=\"APP\",name=\"capped\",user=\"{}\"}}",
        capped.public_key()
    );
    assert_eq!(sample(metrics, &connections).await, 1.0);
    assert!(sample(metrics, "natsgate_advisories_total{result=\"published\"}").await >= 4.0);
}
