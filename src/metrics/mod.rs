//! Prometheus metrics and the HTTP endpoints (`GET /metrics`, `GET /healthz`,
//! `GET /explain`).
//!
//! Owns: every natsgate series, declared once here with its help text, in a
//! [`prometheus::Registry`] owned by [`Metrics`] (no globals, so each test
//! builds its own), and the small HTTP server that exposes them.
//! Does not own: deciding *when* something happened. Sessions, the listener
//! and the upstream dialer call the intention-revealing methods
//! ([`Metrics::publish_denied`], [`Metrics::relayed`], ...) and never touch a
//! label vector.
//!
//! # Series
//!
//! | series | type | labels |
//! |---|---|---|
//! | `natsgate_connections` | gauge | |
//! | `natsgate_connections_total` | counter | |
//! | `natsgate_transport_connections` | gauge | `transport` (`tcp`, `websocket`) |
//! | `natsgate_websocket_upgrades_total` | counter | `result` (`ok`, `400`, `403`, `405`, `timeout`, `tls`) |
//! | `natsgate_auth_failures_total` | counter | `reason` |
//! | `natsgate_permission_violations_total` | counter | `kind`, `account` |
//! | `natsgate_messages_total` | counter | `direction` |
//! | `natsgate_bytes_total` | counter | `direction` |
//! | `natsgate_upstream_connect_failures_total` | counter | |
//! | `natsgate_upstream_up` | gauge | |
//! | `natsgate_slow_consumers_total` | counter | |
//! | `natsgate_drain_timeouts_total` | counter | `side` |
//! | `natsgate_advisories_total` | counter | `result` |
//! | `natsgate_limit_closes_total` | counter | `limit` |
//! | `natsgate_rate_limited_total` | counter | |
//! | `natsgate_user_messages_total` | counter | `user`, `name`, `account`, `direction` |
//! | `natsgate_user_bytes_total` | counter | `user`, `name`, `account`, `direction` |
//! | `natsgate_user_violations_total` | counter | `user`, `name`, `account` |
//! | `natsgate_user_connections` | gauge | `user`, `name`, `account` |
//!
//! Every label takes values from a bounded set: `reason` is a `&'static str`
//! from the auth code, `kind` and `direction` are fixed, and `account` is
//! capped at [`MAX_ACCOUNT_LABELS`] distinct values (see
//! [`Metrics::publish_denied`]). Subjects are never labels; users are only
//! on the `natsgate_user_*` series, for at most the top N users by traffic
//! (see [`users`]).

pub mod users;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder as _, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::auth::explain::{Query, Who};
use crate::config::{DEFAULT_USER_SERIES, DEFAULT_USER_SERIES_RETENTION};
use users::UserStats;

/// The typed handle to natsgate's metrics. Cheap to clone: every clone
/// records into the same [`Registry`].
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// Which way relayed traffic went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// PUB/HPUB (and other client ops) sent on to the upstream server.
    ClientToUpstream,
    /// MSG/HMSG (and other server ops) delivered to the client.
    UpstreamToClient,
}

/// Which side kept a close from finishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stuck {
    /// The client did not read what natsgate owed it.
    Client,
    /// The upstream did not read, or did not answer natsgate's last PING.
    Upstream,
}

impl Stuck {
    pub fn as_str(self) -> &'static str {
        match self {
            Stuck::Client => "client",
            Stuck::Upstream => "upstream",
        }
    }
}

impl Direction {
    /// The `direction` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToUpstream => "client_to_upstream",
            Direction::UpstreamToClient => "upstream_to_client",
        }
    }
}

impl Metrics {
    /// A fresh registry with every natsgate series registered, and the
    /// default per-user cap ([`DEFAULT_USER_SERIES`] users, forgotten
    /// [`DEFAULT_USER_SERIES_RETENTION`] after they left).
    pub fn new() -> Metrics {
        Metrics::with_user_series(DEFAULT_USER_SERIES, DEFAULT_USER_SERIES_RETENTION)
    }

    /// As [`Metrics::new`], with `user_series` users shown by name (0: all
    /// in `other`) and users forgotten `retention` after they left.
    pub fn with_user_series(user_series: usize, retention: Duration) -> Metrics {
        let registry = Registry::new();

        let connections = IntGauge::new("natsgate_connections", "Client connections now open.")
            .expect("static metric name and help are valid");
        let connections_total = IntCounter::new(
            "natsgate_connections_total",
            "Client connections accepted since start.",
        )
        .expect("static metric name and help are valid");
        let transport_connections = prometheus::IntGaugeVec::new(
            Opts::new(
                "natsgate_transport_connections",
                "Client connections now open, by listener transport.",
            ),
            &["transport"],
        )
        .expect("static metric name, help and labels are valid");
        let websocket_upgrades = IntCounterVec::new(
            Opts::new(
                "natsgate_websocket_upgrades_total",
                "WebSocket upgrade requests, by result (ok, an HTTP status, timeout, tls).",
            ),
            &["result"],
        )
        .expect("static metric name, help and labels are valid");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "natsgate_auth_failures_total",
                "Client connections refused with 'Authorization Violation', by reason.",
            ),
            &["reason"],
        )
        .expect("static metric name, help and labels are valid");
        let permission_violations = IntCounterVec::new(
            Opts::new(
                "natsgate_permission_violations_total",
                "PUB/HPUB and SUB frames denied by the user's permissions, by kind \
                 (publish|subscribe|jetstream) and account name (at most 1000 distinct accounts, \
                 the rest as \"other\").",
            ),
            &["kind", "account"],
        )
        .expect("static metric name, help and labels are valid");
        let messages = IntCounterVec::new(
            Opts::new(
                "natsgate_messages_total",
                "Messages relayed, by direction (client_to_upstream|upstream_to_client).",
            ),
            &["direction"],
        )
        .expect("static metric name, help and labels are valid");
        let bytes = IntCounterVec::new(
            Opts::new(
                "natsgate_bytes_total",
                "Message payload bytes relayed (headers included for HPUB/HMSG), by direction \
                 (client_to_upstream|upstream_to_client).",
            ),
            &["direction"],
        )
        .expect("static metric name, help and labels are valid");
        let upstream_connect_failures = IntCounter::new(
            "natsgate_upstream_connect_failures_total",
            "Failed attempts to connect and log in to an upstream nats-server.",
        )
        .expect("static metric name and help are valid");
        let upstream_up = IntGauge::new(
            "natsgate_upstream_up",
            "1 when the last upstream connection attempt succeeded, 0 when it failed.",
        )
        .expect("static metric name and help are valid");
        let slow_consumers = IntCounter::new(
            "natsgate_slow_consumers_total",
            "Clients disconnected because they did not keep up with their deliveries.",
        )
        .expect("static metric name and help are valid");
        let drain_timeouts = IntCounterVec::new(
            Opts::new(
                "natsgate_drain_timeouts_total",
                "Closes that gave up before everything accepted was delivered, \
                 because this side did not read or answer within the drain timeout.",
            ),
            &["side"],
        )
        .expect("static metric name and help are valid");
        for side in [Stuck::Client, Stuck::Upstream] {
            drain_timeouts.with_label_values(&[side.as_str()]);
        }
        let account_store_up = IntGauge::new(
            "natsgate_account_store_up",
            "1 while the [jwt.kv] account bucket is reachable and watched, 0 otherwise \
             (always 0 without [jwt.kv]).",
        )
        .expect("static metric name and help are valid");
        let account_updates = IntCounterVec::new(
            Opts::new(
                "natsgate_account_updates_total",
                "Account JWT updates, by source (nats: a resolver push to this instance, \
                 kv: read from the account bucket) and result (applied|refused).",
            ),
            &["source", "result"],
        )
        .expect("static metric name, help and labels are valid");
        for source in ["nats", "kv"] {
            for result in ["applied", "refused"] {
                account_updates.with_label_values(&[source, result]);
            }
        }

        let advisories = IntCounterVec::new(
            Opts::new(
                "natsgate_advisories_total",
                "Advisory events for [advisories], by result (published|dropped_rate|dropped_queue).",
            ),
            &["result"],
        )
        .expect("static metric name, help and labels are valid");
        for result in ["published", "dropped_rate", "dropped_queue"] {
            advisories.with_label_values(&[result]);
        }
        let limit_closes = IntCounterVec::new(
            Opts::new(
                "natsgate_limit_closes_total",
                "Clients closed or refused by a [limits] limit, by limit (rate: throttled past \
                 close_after; user_connections: max_connections of the user on this instance).",
            ),
            &["limit"],
        )
        .expect("static metric name, help and labels are valid");
        for limit in ["rate", "user_connections"] {
            limit_closes.with_label_values(&[limit]);
        }
        let rate_limited = IntCounter::new(
            "natsgate_rate_limited_total",
            "Times a session stopped reading its client because a [limits] rate was used up.",
        )
        .expect("static metric name and help are valid");
        let user_labels = ["user", "name", "account"];
        let user_direction = ["user", "name", "account", "direction"];
        let user_messages = IntCounterVec::new(
            Opts::new(
                "natsgate_user_messages_total",
                "Messages relayed per user (public key; name and account for reading), for the \
                 top users by traffic; the rest are user=\"other\".",
            ),
            &user_direction,
        )
        .expect("static metric name, help and labels are valid");
        let user_bytes = IntCounterVec::new(
            Opts::new(
                "natsgate_user_bytes_total",
                "Message payload bytes relayed per user, for the top users by traffic; the rest \
                 are user=\"other\".",
            ),
            &user_direction,
        )
        .expect("static metric name, help and labels are valid");
        let user_violations = IntCounterVec::new(
            Opts::new(
                "natsgate_user_violations_total",
                "Permission violations (refused or would_deny) per user, for the top users by \
                 traffic; the rest are user=\"other\".",
            ),
            &user_labels,
        )
        .expect("static metric name, help and labels are valid");
        let user_connections = prometheus::IntGaugeVec::new(
            Opts::new(
                "natsgate_user_connections",
                "Connections open per user, for the top users by traffic; the rest are \
                 user=\"other\".",
            ),
            &user_labels,
        )
        .expect("static metric name, help and labels are valid");

        for collector in [
            Box::new(connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(advisories.clone()),
            Box::new(limit_closes.clone()),
            Box::new(rate_limited.clone()),
            Box::new(user_messages.clone()),
            Box::new(user_bytes.clone()),
            Box::new(user_violations.clone()),
            Box::new(user_connections.clone()),
            Box::new(connections_total.clone()),
            Box::new(transport_connections.clone()),
            Box::new(websocket_upgrades.clone()),
            Box::new(auth_failures.clone()),
            Box::new(permission_violations.clone()),
            Box::new(messages.clone()),
            Box::new(bytes.clone()),
            Box::new(upstream_connect_failures.clone()),
            Box::new(upstream_up.clone()),
            Box::new(slow_consumers.clone()),
            Box::new(drain_timeouts.clone()),
            Box::new(account_store_up.clone()),
            Box::new(account_updates.clone()),
        ] {
            registry
                .register(collector)
                .expect("each series is registered once, in a fresh registry");
        }

        // Resolve the fixed label values once, so the hot path adds to a
        // plain atomic counter, and so every series shows up (at 0) from the
        // first scrape.
        let relay = |direction: Direction| RelayCounters {
            messages: messages.with_label_values(&[direction.as_str()]),
            bytes: bytes.with_label_values(&[direction.as_str()]),
        };
        let client_to_upstream = relay(Direction::ClientToUpstream);
        let upstream_to_client = relay(Direction::UpstreamToClient);

        Metrics {
            inner: Arc::new(Inner {
                registry,
                connections,
                connections_total,
                transport_connections,
                websocket_upgrades,
                auth_failures,
                permission_violations,
                account_labels: Mutex::new(HashSet::new()),
                client_to_upstream,
                upstream_to_client,
                upstream_connect_failures,
                upstream_up,
                slow_consumers,
                drain_timeouts,
                account_store_up,
                account_updates,
                advisories,
                limit_closes,
                rate_limited,
                users: users::UserSeries::new(
                    user_series,
                    retention,
                    user_messages,
                    user_bytes,
                    user_violations,
                    user_connections,
                ),
            }),
        }
    }

    /// A connection of a user opened: its per-user counters, held for the
    /// connection's life. `key` is the user's public key.
    pub fn user(&self, key: &str, name: &str, account: &str) -> users::UserHandle {
        self.inner.users.connected(key, name, account)
    }

    /// An advisory event was published or dropped (`result`).
    pub fn advisory(&self, result: &'static str) {
        self.inner.advisories.with_label_values(&[result]).inc();
    }

    /// A client was closed or refused by a `[limits]` limit.
    pub fn limit_closed(&self, limit: &'static str) {
        self.inner.limit_closes.with_label_values(&[limit]).inc();
    }

    /// A session stopped reading its client for a rate limit.
    pub fn rate_limited(&self) {
        self.inner.rate_limited.inc();
    }

    /// How many users the per-user series remember now.
    pub fn users_remembered(&self) -> usize {
        self.inner.users.remembered()
    }

    /// A client connection was accepted.
    pub fn connection_opened(&self) {
        self.inner.connections_total.inc();
        self.inner.connections.inc();
    }

    /// A client connection that was counted by [`Metrics::connection_opened`]
    /// has closed.
    pub fn connection_closed(&self) {
        self.inner.connections.dec();
    }

    /// A connection of `transport` (`tcp` or `websocket`) was opened
    /// (`opened`) or closed, on top of [`Metrics::connection_opened`].
    pub fn transport_connection(&self, transport: &'static str, opened: bool) {
        let gauge = self
            .inner
            .transport_connections
            .with_label_values(&[transport]);
        if opened { gauge.inc() } else { gauge.dec() }
    }

    /// A WebSocket upgrade ended with `result` (`ok`, the refusal's HTTP
    /// status, `timeout` or `tls`).
    pub fn websocket_upgrade(&self, result: &str) {
        self.inner
            .websocket_upgrades
            .with_label_values(&[result])
            .inc();
    }

    /// A client failed to authenticate; the label is the reason's.
    pub fn auth_failed(&self, reason: crate::auth::Reason) {
        self.inner
            .auth_failures
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// A PUB/HPUB was denied. `account` is the account's name.
    ///
    /// The `account` label is bounded: the first [`MAX_ACCOUNT_LABELS`]
    /// distinct accounts (publish and subscribe together) get their own
    /// value, later ones are all counted as `other`, and an empty account
    /// (a static user with no `account`) as `none`.
    pub fn publish_denied(&self, user: &UserStats, account: &str) {
        user.violations(1);
        self.permission_violation("publish", account);
    }

    /// A SUB was denied. `account` is handled as in
    /// [`Metrics::publish_denied`].
    pub fn subscribe_denied(&self, user: &UserStats, account: &str) {
        user.violations(1);
        self.permission_violation("subscribe", account);
    }

    /// A report-only user's PUB or SUB that its permissions refuse was
    /// forwarded (`kind="would_deny"`). `account` is handled as in
    /// [`Metrics::publish_denied`].
    pub fn would_deny(&self, user: &UserStats, account: &str) {
        user.violations(1);
        self.permission_violation("would_deny", account);
    }

    /// `count` deliveries to a report-only user that the delivery filter
    /// would have dropped were delivered (`kind="would_filter"`). `account`
    /// is handled as in [`Metrics::publish_denied`].
    pub fn would_filter(&self, user: &UserStats, account: &str, count: u64) {
        user.violations(count);
        let account = self.inner.account_label(account);
        self.inner
            .permission_violations
            .with_label_values(&["would_filter", account.as_ref()])
            .inc_by(count);
    }

    /// A JetStream API request was refused by the JetStream guard.
    /// `account` is handled as in [`Metrics::publish_denied`].
    pub fn jetstream_denied(&self, user: &UserStats, account: &str) {
        user.violations(1);
        self.permission_violation("jetstream", account);
    }

    /// Connecting or logging in to an upstream server failed.
    pub fn upstream_connect_failed(&self) {
        self.inner.upstream_connect_failures.inc();
    }

    /// Whether an upstream server is reachable now.
    pub fn upstream_up(&self, up: bool) {
        self.inner.upstream_up.set(i64::from(up));
    }

    /// Whether the `[jwt.kv]` bucket is reachable now.
    pub fn account_store_up(&self, up: bool) {
        self.inner.account_store_up.set(i64::from(up));
    }

    /// An account JWT update from `source` (`nats` or `kv`) was applied or
    /// refused.
    pub fn account_update(&self, source: &'static str, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.inner
            .account_updates
            .with_label_values(&[source, result])
            .inc();
    }

    /// A client was disconnected as a slow consumer.
    pub fn slow_consumer(&self) {
        self.inner.slow_consumers.inc();
    }

    /// A close stopped waiting for `side` to take (or answer) what natsgate
    /// had accepted.
    pub fn drain_timed_out(&self, side: Stuck) {
        self.inner
            .drain_timeouts
            .with_label_values(&[side.as_str()])
            .inc();
    }

    /// `messages` frames of `bytes` bytes in total were relayed in
    /// `direction`.
    ///
    /// Hot path: call it once per read batch, not per message. It is four
    /// atomic adds (the totals and `user`'s) on pre-resolved counters, with no label lookup and no lock.
    pub fn relayed(&self, user: &UserStats, direction: Direction, messages: u64, bytes: u64) {
        if messages == 0 {
            return;
        }
        let counters = match direction {
            Direction::ClientToUpstream => {
                user.sent(messages, bytes);
                &self.inner.client_to_upstream
            }
            Direction::UpstreamToClient => {
                user.delivered(messages, bytes);
                &self.inner.upstream_to_client
            }
        };
        counters.messages.inc_by(messages);
        counters.bytes.inc_by(bytes);
    }

    /// Every series in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        self.inner.users.sync();
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.inner.registry.gather(), &mut out) {
            // Only malformed families fail to encode, and every family here
            // is declared above with valid names; log rather than panic.
            error!(%error, "encoding metrics failed");
        }
        // The text encoder writes only UTF-8 (names, label values from
        // `&str`, and numbers).
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }

    fn permission_violation(&self, kind: &'static str, account: &str) {
        let account = self.inner.account_label(account);
        self.inner
            .permission_violations
            .with_label_values(&[kind, account.as_ref()])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What `/healthz` answers: 200 when `ok`, else 503; `detail` (lines such
/// as the account store's state) follows the first line when not empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub ok: bool,
    pub detail: String,
}

/// Answers `GET /explain`: the user and the query from the request, the
/// JSON report (`Ok`) or why the input is bad (`Err`, a 400). Called on the
/// runtime: it must not block.
pub type Explainer = dyn Fn(Who<'_>, Query<'_>) -> Result<serde_json::Value, String> + Send + Sync;

/// Serves `GET /metrics`, `GET /healthz` and `GET /explain` on `listener`
/// until `shutdown` is cancelled. `HEAD` is answered like `GET`; any other method or path
/// gets 404.
///
/// `/healthz` is 200 `ok` when `healthy()` returns true (natsgate can reach
/// an upstream server) and 503 otherwise. `healthy` is called once per
/// request, on the runtime: it must not block.
///
/// `/explain?user=NAME|U...&op=pub|sub&subject=S[&queue=Q][&reply=R]` (or
/// `jwt=TOKEN` instead of `user` for a JWT user) answers 200 with
/// `explain`'s JSON (`{"allowed":bool,"rule":{...},...}`), or 400 with
/// `{"error":"..."}` for bad input.
///
/// At most [`MAX_HTTP_CONNECTIONS`] connections are served at once (further
/// ones wait in the accept backlog), and a client must send its request
/// headers within [`HEADER_READ_TIMEOUT`]. On shutdown, idle keep-alive
/// connections close at once and requests in flight get up to
/// [`HTTP_SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    healthy: impl Fn() -> Health + Send + Sync + 'static,
    explain: Arc<Explainer>,
    shutdown: CancellationToken,
) {
    let healthy: Arc<dyn Fn() -> Health + Send + Sync> = Arc::new(healthy);
    let permits = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    let tracker = TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics endpoint listening");
    }

    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => {
                permit.expect("the semaphore is never closed")
            }
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of
                    // spinning, the proxy needs them more.
                    warn!(%error, "metrics endpoint accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };

        let metrics = metrics.clone();
        let healthy = healthy.clone();
        let explain = explain.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let response = respond(&request, &metrics, healthy.as_ref(), explain.as_ref());
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(HTTP_SHUTDOWN_GRACE, connection.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(error) = result {
                debug!(%peer, %error, "metrics connection ended with an error");
            }
        });
    }

    tracker.close();
    tracker.wait().await;
    debug!("metrics endpoint stopped");
}

// === helpers ===

/// The state behind every [`Metrics`] clone.
struct Inner {
    /// Owned, not the global default registry, so tests get their own.
    registry: Registry,
    connections: IntGauge,
    connections_total: IntCounter,
    transport_connections: prometheus::IntGaugeVec,
    websocket_upgrades: IntCounterVec,
    auth_failures: IntCounterVec,
    permission_violations: IntCounterVec,
    /// The distinct `account` label values handed out so far, at most
    /// [`MAX_ACCOUNT_LABELS`]. Only touched on a denial, never on the
    /// relay hot path.
    account_labels: Mutex<HashSet<Arc<str>>>,
    client_to_upstream: RelayCounters,
    upstream_to_client: RelayCounters,
    upstream_connect_failures: IntCounter,
    upstream_up: IntGauge,
    slow_consumers: IntCounter,
    drain_timeouts: IntCounterVec,
    account_store_up: IntGauge,
    account_updates: IntCounterVec,
    advisories: IntCounterVec,
    limit_closes: IntCounterVec,
    rate_limited: IntCounter,
    users: users::UserSeries,
}

impl Inner {
    /// The `account` label value for `account`: itself while fewer than
    /// [`MAX_ACCOUNT_LABELS`] distinct values exist, else `other`.
    fn account_label(&self, account: &str) -> Arc<str> {
        if account.is_empty() {
            return Arc::from(NO_ACCOUNT_LABEL);
        }
        // A poisoned lock only means another thread panicked mid-insert into
        // a plain set; its contents are still a valid set.
        let mut seen = self
            .account_labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = seen.get(account) {
            return known.clone();
        }
        if seen.len() >= MAX_ACCOUNT_LABELS {
            return Arc::from(OTHER_ACCOUNT_LABEL);
        }
        let label: Arc<str> = Arc::from(account);
        seen.insert(label.clone());
        label
    }
}

/// The counters of one direction, resolved once in [`Metrics::new`].
struct RelayCounters {
    messages: IntCounter,
    bytes: IntCounter,
}

/// The response to one HTTP request.
fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    healthy: &(dyn Fn() -> Health + Send + Sync),
    explain: &Explainer,
) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(PROMETHEUS_TEXT_CONTENT_TYPE),
            );
            response
        }
        "/healthz" => {
            let health = healthy();
            let (status, summary) = if health.ok {
                (StatusCode::OK, "ok")
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no upstream server reachable",
                )
            };
            if health.detail.is_empty() {
                text(status, summary)
            } else {
                let body = format!("{summary}\n{}\n", health.detail);
                let mut response = text(status, "");
                *response.body_mut() = Full::new(Bytes::from(body));
                response
            }
        }
        "/explain" => {
            let (status, body) = match explain_request(request.uri().query().unwrap_or(""), explain)
            {
                Ok(report) => (StatusCode::OK, report),
                Err(error) => (
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "error": error }),
                ),
            };
            let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Reads `/explain`'s query string and asks `explain`.
fn explain_request(query: &str, explain: &Explainer) -> Result<serde_json::Value, String> {
    let mut params: HashMap<String, String> = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        let value = percent_decode(value)?;
        if !EXPLAIN_PARAMS.contains(&key.as_str()) {
            return Err(format!("unknown parameter {key:?}"));
        }
        if params.insert(key.clone(), value).is_some() {
            return Err(format!("parameter {key:?} given twice"));
        }
    }
    let who = match (params.get("user"), params.get("jwt")) {
        (Some(user), None) => Who::Static(user),
        (None, Some(jwt)) => Who::Jwt(jwt),
        (None, None) => return Err("missing user (or jwt)".into()),
        (Some(_), Some(_)) => return Err("give user or jwt, not both".into()),
    };
    let publish = match params.get("op").map(String::as_str) {
        Some("pub") => true,
        Some("sub") => false,
        Some(other) => return Err(format!("op must be pub or sub, not {other:?}")),
        None => return Err("missing op (pub or sub)".into()),
    };
    let Some(subject) = params.get("subject") else {
        return Err("missing subject".into());
    };
    let query = Query {
        publish,
        subject,
        queue: params.get("queue").map(String::as_str),
        reply: params.get("reply").map(String::as_str),
    };
    explain(who, query)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a
/// byte; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// The parameters `/explain` takes.
const EXPLAIN_PARAMS: [&str; 6] = ["user", "jwt", "op", "subject", "queue", "reply"];

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Distinct `account` label values on `natsgate_permission_violations_total`
/// before further accounts are counted as [`OTHER_ACCOUNT_LABEL`]. Keeps a
/// deployment with many accounts (or a flood of one-off accounts) from
/// growing the series count without bound.
pub const MAX_ACCOUNT_LABELS: usize = 1000;

/// The `account` label value for accounts past [`MAX_ACCOUNT_LABELS`].
pub const OTHER_ACCOUNT_LABEL: &str = "other";

/// The `account` label value for a user with no account (a static user
/// configured without `account`).
pub const NO_ACCOUNT_LABEL: &str = "none";

/// HTTP connections served at once; more wait in the accept backlog.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request in flight may take to finish after shutdown starts.
pub const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Pause after a failed `accept` (typically EMFILE) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// `Content-Type` of the Prometheus text format, version 0.0.4.
const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    use super::*;

    /// The value of the series `name` with exactly `labels`, from `render()`
    /// output; `None` when there is no such line.
    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (series_name, found) = match series.split_once('{') {
                    Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)),
                    None => (series, BTreeMap::new()),
                };
                (series_name == name && found == want).then(|| value.parse().unwrap())
            })
    }

    /// `a="x",b="y"` (test label values contain no quotes or commas).
    fn parse_labels(s: &str) -> BTreeMap<String, String> {
        s.split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect()
    }

    fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample(&m.render(), name, labels)
    }

    #[test]
    fn transport_connections_and_websocket_upgrades() {
        let m = Metrics::new();
        m.transport_connection("websocket", true);
        m.transport_connection("websocket", true);
        m.transport_connection("tcp", true);
        m.transport_connection("websocket", false);
        m.websocket_upgrade("ok");
        m.websocket_upgrade("403");
        let get = |name, labels: &[(&str, &str)]| value(&m, name, labels);
        let ws = [("transport", "websocket")];
        assert_eq!(get("natsgate_transport_connections", &ws), Some(1.0));
        let tcp = [("transport", "tcp")];
        assert_eq!(get("natsgate_transport_connections", &tcp), Some(1.0));
        let refused = [("result", "403")];
        assert_eq!(
            get("natsgate_websocket_upgrades_total", &refused),
            Some(1.0)
        );
        let text = m.render();
        assert!(text.contains("# TYPE natsgate_transport_connections gauge"));
        assert!(text.contains("# TYPE natsgate_websocket_upgrades_total counter"));
    }

    #[test]
    fn every_series_has_help_and_type() {
        let m = Metrics::new();
        // Vec series only appear once a label value exists.
        m.auth_failed(crate::auth::Reason::Timeout);
        m.publish_denied(&UserStats::default(), "APP");
        let text = m.render();
        for name in [
            "natsgate_connections",
            "natsgate_connections_total",
            "natsgate_auth_failures_total",
            "natsgate_permission_violations_total",
            "natsgate_messages_total",
            "natsgate_bytes_total",
            "natsgate_upstream_connect_failures_total",
            "natsgate_upstream_up",
            "natsgate_slow_consumers_total",
            "natsgate_drain_timeouts_total",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        assert!(text.contains("# TYPE natsgate_connections gauge"));
        assert!(text.contains("# TYPE natsgate_connections_total counter"));
    }

    #[test]
    fn fixed_series_start_at_zero() {
        let m = Metrics::new();
        for direction in ["client_to_upstream", "upstream_to_client"] {
            let labels = [("direction", direction)];
            assert_eq!(value(&m, "natsgate_messages_total", &labels), Some(0.0));
            assert_eq!(value(&m, "natsgate_bytes_total", &labels), Some(0.0));
        }
        assert_eq!(value(&m, "natsgate_connections", &[]), Some(0.0));
        assert_eq!(value(&m, "natsgate_upstream_up", &[]), Some(0.0));
    }

    #[test]
    fn connections() {
        let m = Metrics::new();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        assert_eq!(value(&m, "natsgate_connections", &[]), Some(1.0));
        assert_eq!(value(&m, "natsgate_connections_total", &[]), Some(2.0));
    }

    #[test]
    fn auth_failures_by_reason() {
        let m = Metrics::new();
        m.auth_failed(crate::auth::Reason::Signature(
            crate::auth::nkey::SignatureError::NotVerified,
        ));
        m.auth_failed(crate::auth::Reason::Timeout);
        m.auth_failed(crate::auth::Reason::Timeout);
        let name = "natsgate_auth_failures_total";
        assert_eq!(value(&m, name, &[("reason", "timeout")]), Some(2.0));
        assert_eq!(
            value(&m, name, &[("reason", "signature_not_verified")]),
            Some(1.0)
        );
        assert_eq!(value(&m, name, &[("reason", "unknown_user")]), None);
    }

    #[test]
    fn permission_violations_by_kind_and_account() {
        let m = Metrics::new();
        m.publish_denied(&UserStats::default(), "APP");
        m.publish_denied(&UserStats::default(), "APP");
        m.subscribe_denied(&UserStats::default(), "APP");
        m.subscribe_denied(&UserStats::default(), "");
        m.jetstream_denied(&UserStats::default(), "APP");
        let name = "natsgate_permission_violations_total";
        let at = |kind, account| value(&m, name, &[("kind", kind), ("account", account)]);
        assert_eq!(at("publish", "APP"), Some(2.0));
        assert_eq!(at("subscribe", "APP"), Some(1.0));
        assert_eq!(at("subscribe", NO_ACCOUNT_LABEL), Some(1.0));
        assert_eq!(at("publish", NO_ACCOUNT_LABEL), None);
        assert_eq!(at("jetstream", "APP"), Some(1.0));
    }

    #[test]
    fn account_labels_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_ACCOUNT_LABELS {
            m.publish_denied(&UserStats::default(), &format!("ACC{i}"));
        }
        // Past the cap: new accounts are `other`, known ones keep their label
        // (for either kind).
        m.publish_denied(&UserStats::default(), "LATE1");
        m.subscribe_denied(&UserStats::default(), "LATE2");
        m.subscribe_denied(&UserStats::default(), "ACC0");
        m.publish_denied(&UserStats::default(), "ACC999");

        let text = m.render();
        let name = "natsgate_permission_violations_total";
        let at = |kind, account| sample(&text, name, &[("kind", kind), ("account", account)]);
        assert_eq!(at("publish", OTHER_ACCOUNT_LABEL), Some(1.0));
        assert_eq!(at("subscribe", OTHER_ACCOUNT_LABEL), Some(1.0));
        assert_eq!(at("publish", "LATE1"), None);
        assert_eq!(at("subscribe", "LATE2"), None);
        assert_eq!(at("subscribe", "ACC0"), Some(1.0));
        assert_eq!(at("publish", "ACC999"), Some(2.0));
        let series = text.lines().filter(|l| l.starts_with(name)).count();
        // 1000 publish + ACC0 subscribe + other for each kind.
        assert_eq!(series, MAX_ACCOUNT_LABELS + 3);
    }

    #[test]
    fn relayed_adds_messages_and_bytes() {
        let m = Metrics::new();
        m.relayed(&UserStats::default(), Direction::ClientToUpstream, 3, 120);
        m.relayed(&UserStats::default(), Direction::ClientToUpstream, 1, 30);
        m.relayed(&UserStats::default(), Direction::UpstreamToClient, 7, 1000);
        let c2u = [("direction", "client_to_upstream")];
        let u2c = [("direction", "upstream_to_client")];
        assert_eq!(value(&m, "natsgate_messages_total", &c2u), Some(4.0));
        assert_eq!(value(&m, "natsgate_bytes_total", &c2u), Some(150.0));
        assert_eq!(value(&m, "natsgate_messages_total", &u2c), Some(7.0));
        assert_eq!(value(&m, "natsgate_bytes_total", &u2c), Some(1000.0));
    }

    #[test]
    fn upstream_and_slow_consumers() {
        let m = Metrics::new();
        m.upstream_connect_failed();
        m.upstream_connect_failed();
        m.upstream_up(true);
        m.slow_consumer();
        m.drain_timed_out(Stuck::Upstream);
        assert_eq!(
            value(&m, "natsgate_drain_timeouts_total", &[("side", "upstream")]),
            Some(1.0)
        );
        assert_eq!(
            value(&m, "natsgate_drain_timeouts_total", &[("side", "client")]),
            Some(0.0)
        );
        assert_eq!(
            value(&m, "natsgate_upstream_connect_failures_total", &[]),
            Some(2.0)
        );
        assert_eq!(value(&m, "natsgate_upstream_up", &[]), Some(1.0));
        assert_eq!(value(&m, "natsgate_slow_consumers_total", &[]), Some(1.0));
        m.upstream_up(false);
        assert_eq!(value(&m, "natsgate_upstream_up", &[]), Some(0.0));
    }

    #[test]
    fn clones_share_one_registry_and_instances_do_not() {
        let a = Metrics::new();
        let b = a.clone();
        b.connection_opened();
        assert_eq!(value(&a, "natsgate_connections_total", &[]), Some(1.0));
        let other = Metrics::new();
        assert_eq!(value(&other, "natsgate_connections_total", &[]), Some(0.0));
    }

    // === HTTP ===

    /// One HTTP/1.1 request over a raw socket: (status, headers, body).
    async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .expect("response within 5s")
            .unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    async fn start(
        healthy: Arc<AtomicBool>,
    ) -> (
        SocketAddr,
        Metrics,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            metrics.clone(),
            move || Health {
                ok: healthy.load(Ordering::SeqCst),
                detail: String::new(),
            },
            Arc::new(echo_explainer),
            shutdown.clone(),
        ));
        (addr, metrics, shutdown, task)
    }

    #[tokio::test]
    async fn serves_metrics_healthz_and_404() {
        let healthy = Arc::new(AtomicBool::new(true));
        let (addr, metrics, shutdown, task) = start(healthy.clone()).await;
        metrics.connection_opened();
        metrics.auth_failed(crate::auth::Reason::UnknownUser);

        let (status, head, body) = get(addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert_eq!(sample(&body, "natsgate_connections_total", &[]), Some(1.0));
        assert_eq!(
            sample(
                &body,
                "natsgate_auth_failures_total",
                &[("reason", "unknown_user")]
            ),
            Some(1.0)
        );

        let (status, _, body) = get(addr, "GET", "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        healthy.store(false, Ordering::SeqCst);
        let (status, _, _) = get(addr, "GET", "/healthz").await;
        assert_eq!(status, 503);
        healthy.store(true, Ordering::SeqCst);
        let (status, _, _) = get(addr, "GET", "/healthz").await;
        assert_eq!(status, 200);

        assert_eq!(get(addr, "GET", "/").await.0, 404);
        assert_eq!(get(addr, "GET", "/metrics/x").await.0, 404);
        assert_eq!(get(addr, "POST", "/metrics").await.0, 404);
        let (status, _, body) = get(addr, "HEAD", "/metrics").await;
        assert_eq!((status, body.as_str()), (200, ""));

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections() {
        let (addr, _metrics, shutdown, task) = start(Arc::new(AtomicBool::new(true))).await;
        // One connection that never sends a request, one kept alive after a
        // request.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("idle connections do not hold up shutdown")
            .unwrap();
        assert_eq!(silent.read(&mut buf).await.unwrap(), 0);
        assert_eq!(kept.read(&mut buf).await.unwrap(), 0);
    }

    /// Stands in for the gate: echoes what `/explain` parsed, refuses the
    /// user `nobody`.
    fn echo_explainer(who: Who<'_>, query: Query<'_>) -> Result<serde_json::Value, String> {
        let user = match who {
            Who::Static("nobody") => return Err("unknown user".into()),
            Who::Static(user) => format!("user:{user}"),
            Who::Jwt(jwt) => format!("jwt:{jwt}"),
        };
        Ok(serde_json::json!({
            "allowed": query.publish,
            "rule": user,
            "subject": query.subject,
            "queue": query.queue,
            "reply": query.reply,
        }))
    }

    #[tokio::test]
    async fn explain_reads_its_query_and_answers_json_or_400() {
        let (addr, _metrics, shutdown, task) = start(Arc::new(AtomicBool::new(true))).await;
        let (status, head, body) = get(
            addr,
            "GET",
            "/explain?user=svc-a&op=pub&subject=orders.%3E&reply=_INBOX.a+b",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            head.to_ascii_lowercase().contains("application/json"),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["allowed"], true);
        assert_eq!(json["rule"], "user:svc-a");
        assert_eq!(json["subject"], "orders.>");
        assert_eq!(json["reply"], "_INBOX.a b");
        let (status, _, body) =
            get(addr, "GET", "/explain?jwt=e.y.j&op=sub&subject=a&queue=q").await;
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (json["allowed"].as_bool(), json["rule"].as_str()),
            (Some(false), Some("jwt:e.y.j"))
        );
        assert_eq!(json["queue"], "q");
        for bad in [
            "/explain",
            "/explain?user=nobody&op=pub&subject=a",
            "/explain?user=a&op=publish&subject=a",
            "/explain?user=a&op=pub",
            "/explain?op=pub&subject=a",
            "/explain?user=a&jwt=b&op=pub&subject=a",
            "/explain?user=a&op=pub&subject=a&subject=b",
            "/explain?user=a&op=pub&subject=%zz",
            "/explain?user=a&op=pub&subject=%ff",
            "/explain?user=a&op=pub&subject=a&color=red",
        ] {
            let (status, _, body) = get(addr, "GET", bad).await;
            assert_eq!(status, 400, "{bad}: {body}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(
                json["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{bad}: {body}"
            );
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }
}
