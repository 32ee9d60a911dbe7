//! The fleet account store: account JWTs in a JetStream KV bucket on the
//! upstream cluster, reached with natsgate's own upstream credential, one
//! key per account public key. Every natsgate instance naming the bucket
//! reads it at start and watches it ([`crate::resolver::fleet`]).
//!
//! The bucket is not trusted: whatever is read from it is verified against
//! the trusted operators like a file, and is not applied over a newer JWT
//! (`iat`). Writes are compare-and-set on the entry's revision, so two
//! instances taking pushes at once cannot put an older JWT over a newer one.
//!
//! The client is async-nats (the official Rust client, already what the
//! tests use): it reconnects across the cluster's servers by itself.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::auth::jwt::claims;
use crate::config::{KvSettings, UpstreamSettings};
use crate::metrics::Metrics;
use crate::upstream::ClientTarget;

/// A JWT larger than this is not written to, or read from, the bucket.
pub const MAX_VALUE: usize = claims::MAX_TOKEN_SIZE;
/// How many times a compare-and-set write is retried when another
/// instance wrote the same key in between.
const CAS_ATTEMPTS: usize = 5;
/// How long one request to the bucket may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The bucket of `[jwt.kv]` and whether it can be reached.
pub struct FleetStore {
    pub settings: KvSettings,
    target: ClientTarget,
    /// The open bucket, once reached. Replaced when re-opened.
    bucket: tokio::sync::RwLock<Option<kv::Store>>,
    status: Mutex<FleetStatus>,
    metrics: Metrics,
    /// Woken when the client reconnected (to another server, maybe): the
    /// watch is then made again at once rather than after its heartbeat
    /// times out (the consumer may have been on the server that went).
    pub reconnected: std::sync::Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for FleetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetStore")
            .field("settings", &self.settings)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What `/healthz` and `natsgate check` show of the bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetStatus {
    pub reachable: bool,
    /// Why not, when not.
    pub problem: String,
    /// Account entries applied from the bucket so far.
    pub accounts: usize,
    pub since: Option<SystemTime>,
}

impl FleetStore {
    pub fn new(settings: KvSettings, upstream: &UpstreamSettings, metrics: Metrics) -> FleetStore {
        FleetStore {
            settings,
            target: ClientTarget::new(upstream),
            bucket: tokio::sync::RwLock::new(None),
            status: Mutex::new(FleetStatus {
                problem: "not connected yet".into(),
                ..FleetStatus::default()
            }),
            metrics,
            reconnected: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn status(&self) -> FleetStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records whether the bucket is reachable; returns whether that changed.
    pub fn set_reachable(&self, reachable: bool, problem: &str) -> bool {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let changed = status.reachable != reachable || status.problem != problem;
        if status.reachable != reachable {
            status.since = Some(SystemTime::now());
        }
        status.reachable = reachable;
        status.problem = problem.to_owned();
        self.metrics.account_store_up(reachable);
        changed
    }

    pub fn set_accounts(&self, accounts: usize) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .accounts = accounts;
    }

    /// Connects and opens the bucket (creating it when missing and
    /// `create` is set). The connection is natsgate's own, with the
    /// upstream credential; async-nats keeps it up from here on.
    pub async fn open(&self) -> Result<(kv::Store, async_nats::Client), String> {
        let client = self.connect().await?;
        let store = self
            .open_bucket(client.clone(), self.settings.create)
            .await?;
        Ok((store, client))
    }

    /// The bucket's newest entry per key, read without creating anything
    /// (`natsgate check`): the key and its value (`None` when deleted).
    pub async fn contents(&self) -> Result<Vec<(String, Option<Bytes>)>, String> {
        let bucket = self.open_bucket(self.connect().await?, false).await?;
        let mut keys: Vec<String> = Vec::new();
        let mut stream = timed(bucket.keys())
            .await?
            .map_err(|e| format!("keys: {e}"))?;
        while let Some(key) = timed(futures_util::StreamExt::next(&mut stream)).await? {
            keys.push(key.map_err(|e| format!("keys: {e}"))?);
        }
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let entry = timed(bucket.entry(key.as_str()))
                .await?
                .map_err(|e| format!("read {key}: {e}"))?;
            let value = entry
                .filter(|e| e.operation == kv::Operation::Put)
                .map(|e| e.value);
            out.push((key, value));
        }
        Ok(out)
    }

    async fn open_bucket(
        &self,
        client: async_nats::Client,
        create: bool,
    ) -> Result<kv::Store, String> {
        let js = jetstream::new(client);
        let name = self.settings.bucket.as_str();
        let store = match timed(js.get_key_value(name)).await? {
            Ok(store) => store,
            Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {
                if !create {
                    return Err(format!(
                        "bucket {name} does not exist (or JetStream is not reachable)"
                    ));
                }
                let config = kv::Config {
                    bucket: name.to_owned(),
                    description: "natsgate account JWTs".into(),
                    history: 5,
                    max_value_size: i32::try_from(MAX_VALUE).unwrap_or(i32::MAX),
                    num_replicas: self.settings.replicas,
                    ..kv::Config::default()
                };
                match timed(js.create_key_value(config)).await? {
                    Ok(store) => store,
                    // Another instance created it in between.
                    Err(_) => timed(js.get_key_value(name))
                        .await?
                        .map_err(|e| format!("bucket {name}: {e}"))?,
                }
            }
            Err(e) => return Err(format!("bucket {name}: {e}")),
        };
        *self.bucket.write().await = Some(store.clone());
        Ok(store)
    }

    async fn connect(&self) -> Result<async_nats::Client, String> {
        let mut options = self.target.options("natsgate account store")?;
        let reconnected = self.reconnected.clone();
        // The first `Connected` is this client's own start; every later one
        // is a reconnect. A permit is kept (`notify_one`) so a reconnect
        // while the follower is busy is not lost.
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        options = options
            .event_callback(move |event| {
                let reconnected = reconnected.clone();
                let started = started.clone();
                async move {
                    if matches!(event, async_nats::Event::Connected)
                        && started.swap(true, std::sync::atomic::Ordering::SeqCst)
                    {
                        reconnected.notify_one();
                    }
                }
            })
            .request_timeout(Some(REQUEST_TIMEOUT));
        timed(options.connect(self.target.servers()))
            .await?
            .map_err(|e| format!("connect: {e}"))
    }

    async fn bucket(&self) -> Result<kv::Store, String> {
        self.bucket
            .read()
            .await
            .clone()
            .ok_or_else(|| format!("bucket {} is not reachable", self.settings.bucket))
    }

    /// Writes an accepted account JWT, unless the bucket holds a newer one
    /// (then the push is refused with that reason) or the same one. When
    /// `seeding`, an operator-signed delete in the account's place stays.
    pub async fn put_if_newer(
        &self,
        key: &str,
        jwt: &str,
        issued_at: i64,
        seeding: bool,
    ) -> Result<(), String> {
        let bucket = self.bucket().await?;
        for _ in 0..CAS_ATTEMPTS {
            let entry = timed(bucket.entry(key))
                .await?
                .map_err(|e| format!("bucket read: {e}"))?;
            let value = Bytes::copy_from_slice(jwt.as_bytes());
            let written = match entry {
                Some(entry) if entry.value == jwt.as_bytes() => return Ok(()),
                Some(entry) if entry.operation == kv::Operation::Put => {
                    let held = stored_iat(&entry.value);
                    if seeding && held.is_none() {
                        return Ok(());
                    }
                    if let Some(held) = held
                        && held > issued_at
                    {
                        return Err(format!(
                            "jwt is older than the one stored (iat {issued_at} < {held})"
                        ));
                    }
                    timed(bucket.update(key, value, entry.revision))
                        .await?
                        .map_err(|e| {
                            (
                                e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                                e.to_string(),
                            )
                        })
                }
                Some(entry) => timed(bucket.update(key, value, entry.revision))
                    .await?
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => timed(bucket.create(key, value)).await?.map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                }),
            };
            match written {
                Ok(_) => return Ok(()),
                Err((true, _)) => continue,
                Err((false, e)) => return Err(format!("bucket write: {e}")),
            }
        }
        Err("bucket write: the key kept changing".into())
    }

    /// Replaces an account's entry with the operator-signed delete request.
    pub async fn put_tombstone(&self, key: &str, tombstone: &str) -> Result<(), String> {
        let bucket = self.bucket().await?;
        let value = Bytes::copy_from_slice(tombstone.as_bytes());
        timed(bucket.put(key, value))
            .await?
            .map(|_| ())
            .map_err(|e| format!("bucket write: {e}"))
    }
}

/// The `iat` of an account JWT as stored (not verified: only used to
/// refuse writing an older one over it).
fn stored_iat(value: &[u8]) -> Option<i64> {
    let token = std::str::from_utf8(value).ok()?;
    claims::decode::<claims::Account>(token.trim())
        .ok()
        .map(|c| c.issued_at)
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| "the bucket did not answer in time".to_owned())
}
