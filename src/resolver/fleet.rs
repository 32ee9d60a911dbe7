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
use tracing::{debug, info, warn};

use crate::auth::jwt::AccountChange;
use crate::gate::Gate;
use crate::store::FleetStore;

/// How long start-up waits for the first read of the bucket.
pub const START_WAIT: Duration = Duration::from_secs(5);
/// How long after losing the bucket the next attempt is made.
const RETRY: Duration = Duration::from_secs(1);
/// How long reading one key's history may take.
const HISTORY_WAIT: Duration = Duration::from_secs(2);

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
        if problem.starts_with("reconnected") {
            // Not an outage: watch again at once.
            continue;
        }
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
    let (bucket, client) = fleet.open().await?;
    // Every write to the bucket is also a plain message on its subject: a
    // core subscription sees it at once wherever the watch's consumer
    // lives (when the server holding the consumer goes, the watch only
    // notices at its next missed heartbeat).
    let live_subject = format!("$KV.{}.>", fleet.settings.bucket);
    let mut live = client
        .subscribe(live_subject)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    // The newest entry of every key, then every change.
    let mut watch = bucket
        .watch_with_history(">")
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
    loop {
        let next = tokio::select! {
            next = watch.next() => next,
            Some(message) = live.next() => {
                on_live(gate, &fleet.settings.bucket, &message);
                continue;
            }
            () = fleet.reconnected.notified() => {
                return Err("reconnected to the cluster; watching again".into());
            }
        };
        let Some(entry) = next else { break };
        let entry = entry.map_err(|e| format!("watch: {e}"))?;
        // A key this instance holds no JWT for (a fresh start, a new
        // account) is read with its history: the valid JWT with the highest
        // `iat` counts, not whatever was written last.
        let held = gate
            .trust()
            .is_some_and(|t| t.account(&entry.key).is_some());
        let mut values = Vec::new();
        if !held {
            values = history_of(&bucket, &entry.key).await;
        }
        if values.is_empty() {
            values.push(value_of(&entry));
        }
        apply(gate, &entry.key, &values);
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

/// A write seen on the bucket's subject, applied as a watch entry would be
/// (verified, not over a newer JWT).
fn on_live(gate: &Gate, name: &str, message: &async_nats::Message) {
    let Some(key) = message
        .subject
        .as_str()
        .strip_prefix(&format!("$KV.{name}."))
    else {
        return;
    };
    let deleted = message.headers.as_ref().is_some_and(|h| {
        h.get("KV-Operation")
            .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE")
    });
    if deleted || message.payload.len() > crate::store::kv::MAX_VALUE {
        return;
    }
    let value = String::from_utf8_lossy(&message.payload).trim().to_owned();
    apply(gate, key, &[Some(value)]);
}

/// The key's values in the bucket (it keeps a few revisions), newest
/// first; empty when the history cannot be read within [`HISTORY_WAIT`].
async fn history_of(bucket: &kv::Store, key: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    match tokio::time::timeout(HISTORY_WAIT, bucket.history(key)).await {
        Ok(Ok(mut entries)) => loop {
            match tokio::time::timeout(HISTORY_WAIT, entries.next()).await {
                Ok(Some(Ok(e))) => {
                    let last = e.delta == 0;
                    out.push(value_of(&e));
                    if last {
                        break;
                    }
                }
                other => {
                    debug!(account = %key, ?other, got = out.len(), "bucket history ended early");
                    break;
                }
            }
        },
        Ok(Err(e)) => debug!(account = %key, error = %e, "bucket history not readable"),
        Err(_) => debug!(account = %key, "bucket history timed out"),
    }
    out.reverse();
    out
}

fn value_of(e: &kv::Entry) -> Option<String> {
    (e.operation == kv::Operation::Put && e.value.len() <= crate::store::kv::MAX_VALUE)
        .then(|| String::from_utf8_lossy(&e.value).trim().to_owned())
}

/// Applies one key of the bucket. Of its values (newest first), the
/// account JWT used is the valid one with the highest `iat`, and it is
/// applied only when not older than the one held: a bucket writer without
/// the operator's keys can neither add an account, nor widen one, nor roll
/// one back (not even for an instance starting afresh, while the bucket's
/// history holds the newer JWT). An operator-signed delete request in the
/// account's place removes it, unless a newer account JWT follows. A KV
/// delete or purge without such a request changes nothing.
fn apply(gate: &Gate, key: &str, values: &[Option<String>]) {
    let now = SystemTime::now();
    let mut outcome = None;
    gate.update_trust(|trust| {
        let mut best: Option<crate::auth::jwt::AccountInfo> = None;
        let mut first_refusal = None;
        for (i, value) in values.iter().enumerate() {
            let Some(token) = value else { continue };
            match trust.check_update(token, Some(key), now) {
                Ok(info) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| info.claims.issued_at > b.claims.issued_at)
                    {
                        best = Some(info);
                    }
                }
                Err(refusal) => {
                    // Not an account JWT: a delete request for this key,
                    // newest of all, deletes it.
                    if i == 0
                        && best.is_none()
                        && let Ok(accounts) = trust.check_delete(token, true)
                        && accounts.iter().any(|a| a == key)
                    {
                        outcome = Some(Err(None));
                        return trust.remove_account(key);
                    }
                    if i == 0 {
                        first_refusal = Some(refusal);
                    }
                }
            }
        }
        if let Some(refusal) = first_refusal {
            // The newest value is not usable: logged, and an older valid
            // one (if any) stands.
            outcome = Some(Err(Some(refusal)));
        }
        match best {
            Some(info) => {
                let jwt = info.jwt.clone();
                let change = trust.install(info);
                gate.store.remember(key, &jwt);
                if outcome.is_none() {
                    outcome = Some(Ok(change));
                }
                change != AccountChange::Unchanged
            }
            None => false,
        }
    });
    match outcome {
        Some(Ok(AccountChange::Unchanged)) | None => {}
        Some(Ok(change)) => {
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
            // An older valid value may have been applied all the same.
            gate.accounts_changed();
        }
    }
    if let (Some(trust), Some(fleet)) = (gate.trust(), gate.store.fleet()) {
        fleet.set_accounts(trust.accounts().count());
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
