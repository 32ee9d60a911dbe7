//! Stopping: the signals that start a graceful shutdown, the moment within
//! `shutdown_grace` at which each session closes, and the wait for them.
//!
//! SIGTERM or SIGINT cancels the token the proxy watches; a second one exits
//! at once with status 1. Sessions then tell their clients (lame duck),
//! close at a random moment within the first 90 % of the grace, so clients
//! do not all reconnect at once, and drain what they accepted by its end.
//! SIGHUP is the reload's ([`crate::reload`]).

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// Cancels `shutdown` on SIGTERM or SIGINT; a second one exits the process.
pub async fn on_stop_signals(shutdown: CancellationToken) {
    let (mut terminate, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        _ => {
            error!("cannot install signal handlers; stop natsgate with SIGKILL");
            return;
        }
    };
    loop {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        if shutdown.is_cancelled() {
            warn!(signal = name, "second stop signal, exiting now");
            std::process::exit(1);
        }
        info!(signal = name, "shutdown requested");
        shutdown.cancel();
    }
}

/// When, after the shutdown began, a session closes: a random moment in the
/// first 90 % of `grace` (the rest is for the closes to drain).
pub fn close_after(grace: Duration) -> Duration {
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    let fraction = f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX);
    grace.mul_f64(fraction * 0.9)
}

/// Waits for the sessions to end: they close themselves within `grace`;
/// a little more is allowed for their last writes.
pub async fn wait_for_sessions(tracker: TaskTracker, grace: Duration) {
    tracker.close();
    if tokio::time::timeout(grace + Duration::from_secs(1), tracker.wait())
        .await
        .is_err()
    {
        warn!("sessions still open after the shutdown grace period");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_fall_in_the_first_nine_tenths_of_the_grace() {
        let grace = Duration::from_secs(10);
        for _ in 0..1000 {
            assert!(close_after(grace) <= Duration::from_secs(9));
        }
        assert_eq!(close_after(Duration::ZERO), Duration::ZERO);
    }
}
