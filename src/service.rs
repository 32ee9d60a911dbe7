//! natsgate as a whole: builds the [`Gate`], starts the account watcher and
//! reload ([`crate::reload`]), the metrics endpoint and its upstream probe,
//! then runs the [`crate::listener`] until the shutdown token is cancelled,
//! and waits for the sessions ([`crate::shutdown`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::Error;
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::gate::Gate;
use crate::metrics::{self, Metrics};

/// How long the metrics endpoint may take to stop after the sessions ended.
const ENDPOINT_STOP: Duration = Duration::from_secs(1);
/// How often the upstream is probed for `/healthz`.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Runs natsgate on an already bound listener until `shutdown` is
/// cancelled. The `[metrics]` endpoint, when configured, is bound here.
/// Sessions run on the current runtime.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    run_on(settings, listener, shutdown, &[]).await
}

/// As [`run`], with the sessions spread in turn over `workers`.
pub async fn run_on(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
    workers: &[Handle],
) -> Result<(), Error> {
    let metrics_listener = match &settings.metrics {
        Some(m) => Some(
            TcpListener::bind(m.addr.as_str())
                .await
                .map_err(|source| Error::Io {
                    context: format!("metrics address {}", m.addr),
                    source,
                })?,
        ),
        None => None,
    };
    run_on_workers(settings, listener, metrics_listener, shutdown, workers).await
}

/// As [`run`], with the metrics listener bound by the caller (tests bind
/// port 0 and need to know the port). Sessions run on the current runtime.
pub async fn run_with_listeners(
    settings: Settings,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    run_on_workers(settings, listener, metrics_listener, shutdown, &[]).await
}

/// As [`run_with_listeners`], with the sessions spread in turn over
/// `workers` (the binary's one current-thread runtime per core: a session's
/// socket events and its task then stay on one thread).
pub async fn run_on_workers(
    settings: Settings,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: CancellationToken,
    workers: &[Handle],
) -> Result<(), Error> {
    run_all(
        settings,
        listener,
        None,
        metrics_listener,
        shutdown,
        workers,
    )
    .await
}

/// As [`run_with_listeners`], with the `[websocket]` listener bound by the
/// caller too (tests bind port 0). Sessions run on the current runtime.
pub async fn run_with_websocket(
    settings: Settings,
    listener: TcpListener,
    websocket: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    run_all(
        settings,
        listener,
        Some(websocket),
        metrics_listener,
        shutdown,
        &[],
    )
    .await
}

/// Binds `[websocket] addr` unless `bound` is given, and sets up its TLS
/// and upgrade checks.
async fn websocket_listener(
    ws: &crate::config::WebsocketSettings,
    bound: Option<TcpListener>,
) -> Result<crate::listener::WebsocketListener, Error> {
    let listener = match bound {
        Some(listener) => listener,
        None => TcpListener::bind(ws.addr.as_str())
            .await
            .map_err(|source| Error::Io {
                context: format!("websocket address {}", ws.addr),
                source,
            })?,
    };
    let tls = match &ws.tls {
        Some(tls) => Some(crate::tls::server_config(tls)?),
        None => None,
    };
    let allowed_origins = ws
        .allowed_origins
        .iter()
        .filter_map(|o| crate::transport::websocket::Origin::parse(o).ok())
        .collect();
    Ok(crate::listener::WebsocketListener {
        listener,
        upgrade: crate::transport::websocket::UpgradeOptions {
            allowed_origins,
            same_origin: ws.same_origin,
            compression: ws.compression,
            tls: ws.tls.is_some(),
            trusted_proxies: ws.trusted_proxies.clone(),
            jwt_cookie: ws.jwt_cookie.clone(),
        },
        handshake_timeout: ws.handshake_timeout,
        tls,
    })
}

async fn run_all(
    settings: Settings,
    listener: TcpListener,
    websocket: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    shutdown: CancellationToken,
    workers: &[Handle],
) -> Result<(), Error> {
    let authenticator = Authenticator::load(&settings, SystemTime::now())?;
    let local = listener.local_addr().map_err(|source| Error::Io {
        context: "listener address".into(),
        source,
    })?;
    let grace = settings.listen.shutdown_grace;
    let metrics = match &settings.metrics {
        Some(m) => Metrics::with_user_series(m.user_series, m.user_series_retention),
        None => Metrics::new(),
    };
    let websocket_listener = match &settings.websocket {
        None => None,
        Some(ws) => Some(websocket_listener(ws, websocket).await?),
    };
    let gate = Arc::new(Gate::new(settings, authenticator, local, metrics)?);
    if let Some(ws) = &websocket_listener
        && let Ok(addr) = ws.listener.local_addr()
    {
        let _ = gate.websocket_listen.set(addr);
        info!(addr = %addr, "websocket listening");
    }
    if !gate.upstream.probe().await {
        warn!("no upstream server reachable at start; clients will be refused until one is");
    }
    info!(addr = %local, "natsgate listening");
    let tracker = TaskTracker::new();
    let sessions = shutdown.child_token();
    tracker.spawn(crate::reload::watch(gate.clone(), sessions.clone()));
    if gate.store.fleet().is_some() {
        // A new instance starts from the bucket's contents: clients are
        // taken once it was read (or could not be, within START_WAIT).
        let loaded = Arc::new(tokio::sync::Notify::new());
        tracker.spawn(crate::resolver::fleet::follow(
            gate.clone(),
            loaded.clone(),
            sessions.clone(),
        ));
        let wait = crate::resolver::fleet::START_WAIT;
        if tokio::time::timeout(wait, loaded.notified()).await.is_err() {
            warn!(
                "the account bucket was not read within {wait:?}; starting with the accounts of the files"
            );
        }
    }
    // The advisory publisher outlives the sessions: their last events
    // (limit closes while draining) still go out.
    let publisher = TaskTracker::new();
    let publisher_stop = CancellationToken::new();
    if let (Some(rx), Some(settings)) = (gate.take_advisory_queue(), &gate.settings.advisories) {
        publisher.spawn(crate::advisories::run(
            rx,
            settings.clone(),
            crate::upstream::ClientTarget::new(&gate.settings.upstream),
            gate.metrics.clone(),
            publisher_stop.clone(),
        ));
    }
    // The metrics endpoint outlives the sessions: what they deliver while
    // they drain is counted and can still be scraped.
    let endpoint = TaskTracker::new();
    let endpoint_stop = CancellationToken::new();
    if let Some(metrics_listener) = metrics_listener {
        if let Ok(addr) = metrics_listener.local_addr() {
            info!(addr = %addr, "metrics listening");
        }
        let health = gate.clone();
        let healthy = move || health.health();
        let explainer = gate.clone();
        let explain: Arc<metrics::Explainer> =
            Arc::new(move |who, query| explainer.explain(who, query));
        endpoint.spawn(metrics::serve(
            metrics_listener,
            gate.metrics.clone(),
            healthy,
            explain,
            endpoint_stop.clone(),
        ));
        // /healthz must reflect the upstream even when no client connects.
        endpoint.spawn(probe_upstream(gate.clone(), endpoint_stop.clone()));
    }
    let counts = crate::listener::Counts::default();
    let tcp = crate::listener::accept(
        &gate, listener, &counts, &shutdown, &sessions, &tracker, workers,
    );
    match websocket_listener {
        None => tcp.await,
        Some(ws) => {
            let ws = crate::listener::accept_websocket(
                &gate, ws, &counts, &shutdown, &sessions, &tracker, workers,
            );
            tokio::join!(tcp, ws);
        }
    }
    info!("shutting down");
    sessions.cancel();
    crate::shutdown::wait_for_sessions(tracker, grace).await;
    publisher_stop.cancel();
    publisher.close();
    let _ = tokio::time::timeout(ENDPOINT_STOP, publisher.wait()).await;
    endpoint_stop.cancel();
    endpoint.close();
    let _ = tokio::time::timeout(ENDPOINT_STOP, endpoint.wait()).await;
    Ok(())
}

/// Keeps the upstream-reachable state fresh for `/healthz`.
async fn probe_upstream(gate: Arc<Gate>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HEALTH_PROBE_INTERVAL) => {}
        }
        gate.upstream.probe().await;
    }
}
