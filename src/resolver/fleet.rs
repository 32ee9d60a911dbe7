//! The `[jwt.kv]` bucket, watched: every entry read from it is verified
//! against the trusted operators (as a file would be), is not applied over
//! a newer JWT, and then reaches the connected users as any account update.
//! At start the instance loads the bucket before it takes clients (bounded
//! by [`START_WAIT`]), seeds it with the accounts of its files that the
//! bucket lacks or holds older, then follows it. When the bucket cannot be
//! reached the instance keeps the accounts it last saw, says so in the log,
//! `/healthz` and `natsgate_account_store_up`, and tries again every
//! [`RETRY`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::jwt::AccountChange;
use crate::gate::Gate;
use crate::store::FleetStore;

/// How long start-up waits for the first read of the bucket.
pub const START_WAIT: Duration = Duration::from_secs(5);
/// How long after losing the bucket the next attempt is made.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the bucket until `shutdown`; `loaded` is notified once the
/// bucket's contents were applied (or could not be read).
pub async fn follow(gate: Arc<Gate>, loaded: Arc<Notify>, shutdown: CancellationToken) {
    let Some(fleet) = gate.store.fleet() else {
        loaded.notify_one();
        return;
    };
    let mut first = true;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = follow_once(&gate, fleet, &loaded) => outcome,
        };
        let problem = match outcome {
            Ok(()) => "the bucket watch ended".to_owned(),
            Err(e) => e,
        };
        if fleet.set_reachable(false, &problem) {
            warn!(bucket = %fleet.settings.bucket, problem = %problem,
                "account bucket unreachable; serving the accounts last seen");
        }
        if first {
            first = false;
            loaded.notify_one();
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// One life of the bucket connection: open, load, seed, watch.
async fn follow_once(gate: &Gate, fleet: &FleetStore, loaded: &Notify) -> Result<(), String> {
    let bucket = fleet.open().await?;
    let mut watch = bucket
        .watch_all()
        .await
        .map_err(|e| format!("watch: {e}"))?;
    // The watch delivers the newest entry of every key first; `delta` 0
    // marks the last of those. An empty bucket delivers nothing, so its
    // size says whether to wait at all.
    let mut pending = bucket
        .status()
        .await
        .map_err(|e| format!("status: {e}"))?
        .values()
        > 0;
    if !pending {
        seed(gate, fleet).await;
        loaded_now(fleet, loaded);
    }
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| format!("watch: {e}"))?;
        apply(gate, &entry);
        if pending && entry.delta == 0 {
            pending = false;
            seed(gate, fleet).await;
            loaded_now(fleet, loaded);
        }
    }
    Ok(())
}

fn loaded_now(fleet: &FleetStore, loaded: &Notify) {
    if fleet.set_reachable(true, "") {
        info!(bucket = %fleet.settings.bucket, "account bucket loaded and watched");
    }
    loaded.notify_one();
}

/// Applies one bucket entry: an account JWT, or an operator-signed delete
/// request in an account's place. A KV delete or purge without such a
/// request is ignored: nobody without the operator's keys may remove an
/// account.
fn apply(gate: &Gate, entry: &kv::Entry) {
    let key = entry.key.as_str();
    if entry.operation != kv::Operation::Put {
        warn!(account = %key, "account bucket entry deleted without an operator-signed request; the account stays");
        return;
    }
    if entry.value.len() > crate::store::kv::MAX_VALUE {
        gate.metrics.account_update("kv", false);
        warn!(account = %key, size = entry.value.len(), "account bucket entry too large; ignored");
        return;
    }
    let token = String::from_utf8_lossy(&entry.value);
    let token = token.trim();
    let now = SystemTime::now();
    let mut outcome = None;
    gate.update_trust(|trust| match trust.check_update(token, Some(key), now) {
        Ok(info) => {
            let change = trust.install(info);
            outcome = Some(Ok(change));
            change != AccountChange::Unchanged
        }
        Err(refusal) => {
            // Not an account JWT: it may be a delete request for this key.
            if let Ok(accounts) = trust.check_delete(token, true)
                && accounts.iter().any(|a| a == key)
            {
                let removed = trust.remove_account(key);
                outcome = Some(Err(None));
                return removed;
            }
            outcome = Some(Err(Some(refusal)));
            false
        }
    });
    match outcome {
        Some(Ok(AccountChange::Unchanged)) => gate.store.remember(key, token),
        Some(Ok(change)) => {
            gate.store.remember(key, token);
            gate.metrics.account_update("kv", true);
            info!(account = %key, ?change, "account JWT from the bucket applied");
            gate.accounts_changed();
        }
        Some(Err(None)) => {
            gate.store.forget(key);
            gate.metrics.account_update("kv", true);
            info!(account = %key, "account deleted (operator-signed request in the bucket)");
            gate.accounts_changed();
        }
        Some(Err(Some(refusal))) => {
            gate.metrics.account_update("kv", false);
            warn!(account = %key, reason = %refusal.description(), "account bucket entry refused; ignored");
        }
        None => {}
    }
    if let Some(trust) = gate.trust() {
        gate.store
            .fleet()
            .inspect(|f| f.set_accounts(trust.accounts().count()));
    }
}

/// Puts the accounts this instance holds (from its files) into the bucket
/// where the bucket lacks them or holds an older JWT: seeding a bucket
/// from an `accounts_dir` once.
async fn seed(gate: &Gate, fleet: &FleetStore) {
    let Some(trust) = gate.trust() else { return };
    for account in trust.accounts() {
        match fleet
            .put_if_newer(&account.key, &account.jwt, account.claims.issued_at, true)
            .await
        {
            Ok(()) => {}
            // The bucket holds a newer one: that one was applied.
            Err(e) if e.starts_with("jwt is older") => {}
            Err(e) => {
                warn!(account = %account.key, error = %e, "could not seed the account bucket")
            }
        }
    }
}
