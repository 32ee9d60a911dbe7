//! Violation advisories published upstream (`[advisories]`, issue 16).
//!
//! Sessions hand each event to [`Advisories::publish`], which never
//! blocks and never waits: it takes a token from the rate limit
//! (`max_per_second`, burst one second's worth) and puts the event in a
//! bounded queue ([`QUEUE`] events). An event past the rate or with the
//! queue full is dropped and counted
//! (`natsgate_advisories_total{result="dropped_rate"|"dropped_queue"}`).
//! One task ([`run`]) publishes the queue on natsgate's own client
//! connection (the default upstream credential), on
//! `<subject>.<advisory>`.
//!
//! The event's JSON shape follows nats-server's `$SYS` advisories (`type`,
//! `id`, `timestamp`, `server`, `client`); the fields are built by
//! `session::advisory` and listed in the README.

use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::AdvisorySettings;
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::upstream::ClientTarget;

/// Events queued for publishing at most.
pub const QUEUE: usize = 1024;

/// One event to publish: its advisory name and JSON body.
#[derive(Debug)]
pub struct Event {
    pub advisory: &'static str,
    pub body: Vec<u8>,
}

/// The sessions' side of the publisher: off when `[advisories]` is not set.
#[derive(Debug)]
pub struct Advisories {
    inner: Option<Publisher>,
    metrics: Metrics,
}

#[derive(Debug)]
struct Publisher {
    tx: mpsc::Sender<Event>,
    bucket: Mutex<TokenBucket>,
}

impl Advisories {
    /// Off: [`Advisories::enabled`] is false and publish does nothing.
    pub fn off(metrics: Metrics) -> Advisories {
        Advisories {
            inner: None,
            metrics,
        }
    }

    /// On: returns the handle and the queue for [`run`].
    pub fn on(
        settings: &AdvisorySettings,
        metrics: Metrics,
    ) -> (Advisories, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rate = settings.max_per_second;
        let bucket = Mutex::new(TokenBucket::new(rate, rate, Instant::now()));
        let advisories = Advisories {
            inner: Some(Publisher { tx, bucket }),
            metrics,
        };
        (advisories, rx)
    }

    /// Whether events are published (so sessions build them at all).
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues one event, or drops and counts it. Never blocks.
    pub fn publish(&self, event: Event) {
        let Some(publisher) = &self.inner else {
            return;
        };
        let allowed = publisher
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take(1, Instant::now());
        if !allowed {
            self.metrics.advisory("dropped_rate");
            return;
        }
        match publisher.tx.try_send(event) {
            Ok(()) => {}
            Err(_) => self.metrics.advisory("dropped_queue"),
        }
    }
}

/// Publishes the queued events until `shutdown`: connects (and keeps
/// reconnecting) with natsgate's default upstream credential.
pub async fn run(
    mut rx: mpsc::Receiver<Event>,
    settings: AdvisorySettings,
    target: ClientTarget,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let options = match target.options("natsgate advisories") {
        Ok(options) => options,
        Err(error) => {
            warn!(%error, "advisories: cannot log in upstream; events are dropped");
            return;
        }
    };
    let options = options.retry_on_initial_connect();
    let client = tokio::select! {
        () = shutdown.cancelled() => return,
        client = options.connect(target.servers()) => match client {
            Ok(client) => client,
            Err(error) => {
                warn!(%error, "advisories: no upstream connection; events are dropped");
                return;
            }
        },
    };
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = rx.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        let subject = format!("{}.{}", settings.subject, event.advisory);
        match client.publish(subject, event.body.into()).await {
            Ok(()) => metrics.advisory("published"),
            Err(error) => {
                debug!(%error, "advisory not published");
                metrics.advisory("dropped_queue");
            }
        }
    }
    // What was published reaches the server before natsgate exits.
    let _ = tokio::time::timeout(target.connect_timeout, client.flush()).await;
}
