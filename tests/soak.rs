//! Soak test, run on demand (it takes minutes):
//!
//! ```sh
//! NATSGATE_SOAK_SECS=300 NATSGATE_SOAK_CLIENTS=200 \
//!     scripts/test.sh --release --test soak -- --ignored --nocapture
//! ```
//!
//! Many async-nats clients publish, subscribe and reconnect through the
//! natsgate binary for the given time; natsgate's open file descriptors and
//! resident memory are sampled every few seconds and must be flat at the end:
//! fds back at the baseline once the clients are gone, and memory no higher
//! than after the first third of the run plus a small allowance.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::process::{settle, spawn_gate_binary, usage};
use support::{NatsServer, keys, quote_toml};

const PASSWORD: &str = "gate-upstream-s3cret";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One client's life: connect, subscribe to its own subject, publish to its
/// neighbour's, read what arrives, leave, and again, until `until`.
async fn churn(
    url: String,
    seed: String,
    index: u64,
    clients: u64,
    until: Instant,
    counted: Arc<AtomicU64>,
) {
    let mine = format!("soak.{index}");
    let next = format!("soak.{}", (index + 1) % clients);
    while Instant::now() < until {
        let Ok(client) = async_nats::ConnectOptions::with_nkey(seed.clone())
            .connect(&url)
            .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(mut sub) = client.subscribe(mine.clone()).await else {
            continue;
        };
        for round in 0..50u32 {
            if client
                .publish(next.clone(), format!("m{round}").into())
                .await
                .is_err()
            {
                break;
            }
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), sub.next()).await
            {
                counted.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = client.flush().await;
        drop(sub);
        drop(client);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: minutes long, run on demand (see the file's doc)"]
async fn memory_and_fds_stay_flat_under_churn() {
    let seconds = env_u64("NATSGATE_SOAK_SECS", 120);
    let clients = env_u64("NATSGATE_SOAK_CLIENTS", 100);
    let upstream = NatsServer::start(&format!(
        "authorization {{ users = [ {{user: \"gate\", password: \"{PASSWORD}\"}} ] }}\n"
    ));
    let kp = keys::new_user();
    let gate = spawn_gate_binary(&format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n[upstream]\nservers = [{}]\nuser = \"gate\"\npassword = {}\n\n\
         [[users]]\nnkey = {}\n[users.permissions]\npublish = [\"soak.>\"]\nsubscribe = {{ allow = [\"soak.>\", \"_INBOX.>\"], deny = [\"soak.secret\"] }}\n",
        quote_toml(&upstream.url()),
        quote_toml(PASSWORD),
        quote_toml(&kp.public_key()),
    ));
    let pid = gate.child.id();
    let baseline = usage(pid);
    let url = format!("nats://{}", gate.addr);
    let seed = kp.seed().unwrap();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let counted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(churn(
                url.clone(),
                seed.clone(),
                i,
                clients,
                until,
                counted.clone(),
            ))
        })
        .collect();

    let mut samples = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(
            Duration::from_secs(5).min(until.saturating_duration_since(Instant::now())),
        )
        .await;
        let (fds, rss) = usage(pid);
        samples.push((started.elapsed().as_secs(), fds, rss));
        println!(
            "t={:>4}s fds={fds:>5} rss={rss:>7} KiB delivered={}",
            started.elapsed().as_secs(),
            counted.load(Ordering::Relaxed)
        );
    }
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let after = settle(pid, baseline).await;
    println!(
        "baseline fds={} rss={} KiB; after fds={} rss={} KiB",
        baseline.0, baseline.1, after.0, after.1
    );
    assert!(
        counted.load(Ordering::Relaxed) > 0,
        "messages flowed through natsgate"
    );
    assert!(
        after.0 <= baseline.0 + 10,
        "file descriptors back at the baseline: {after:?} vs {baseline:?}"
    );
    let third = samples.get(samples.len() / 3).map_or(baseline.1, |s| s.2);
    assert!(
        after.1 <= third + 16 * 1024,
        "resident memory flat: {} KiB at the end vs {third} KiB a third of the way in",
        after.1
    );
}
