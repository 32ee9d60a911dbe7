//! Where natsgate keeps the account JWTs it accepts over NATS (the account
//! resolver, [`crate::resolver`]): the `accounts_dir` (one
//! `<ACCOUNT_PUBKEY>.jwt` file each, written atomically, as nats-server's
//! resolver directory) and, with `[jwt.kv]`, the fleet store: a JetStream
//! KV bucket on the upstream cluster ([`kv`]).
//!
//! Does not own: checking a JWT (that is `auth::jwt`, before anything is
//! stored), applying it to the sessions ([`crate::resolver`]), or reading
//! the directory back (the `accounts_dir` poll in [`crate::reload`]).

pub mod kv;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::Settings;
use crate::metrics::Metrics;

pub use kv::{FleetStatus, FleetStore};

/// The stores of one natsgate instance.
#[derive(Debug)]
pub struct AccountStore {
    dir: Option<PathBuf>,
    fleet: Option<FleetStore>,
    /// Account JWTs accepted from the bucket or over NATS and not (only)
    /// in files: applied again after a config reload re-reads the files.
    remembered: Mutex<BTreeMap<String, String>>,
}

impl AccountStore {
    /// The stores the settings name; nothing is opened here.
    pub fn new(settings: &Settings, metrics: &Metrics) -> AccountStore {
        let jwt = settings.jwt.as_ref();
        AccountStore {
            dir: jwt.and_then(|j| j.accounts_dir.clone()),
            fleet: jwt
                .and_then(|j| j.kv.clone())
                .map(|kv| FleetStore::new(kv, &settings.upstream, metrics.clone())),
            remembered: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether an update over NATS has somewhere durable to go.
    pub fn writable(&self) -> bool {
        self.dir.is_some() || self.fleet.is_some()
    }

    pub fn fleet(&self) -> Option<&FleetStore> {
        self.fleet.as_ref()
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Stores an accepted account JWT: in the bucket when there is one (not
    /// over a newer JWT there), else in the directory. An error is
    /// nats-server's `jwt update resulted in error - <error>` text.
    pub async fn save(&self, key: &str, jwt: &str, issued_at: i64) -> Result<(), String> {
        if let Some(fleet) = &self.fleet {
            fleet.put_if_newer(key, jwt, issued_at, false).await?;
            self.remember(key, jwt);
            return Ok(());
        }
        match &self.dir {
            Some(dir) => write_atomically(dir, key, jwt),
            None => Err("store is read-only".into()),
        }
    }

    /// Deletes an account: in the bucket, an operator-signed `tombstone`
    /// (the delete request itself, so every instance can verify it) takes
    /// its place; in the directory the file is renamed to `.jwt.deleted`, as
    /// nats-server does without `hard_delete`.
    pub async fn delete(&self, key: &str, tombstone: &str) -> Result<(), String> {
        if let Some(fleet) = &self.fleet {
            fleet.put_tombstone(key, tombstone).await?;
            self.forget(key);
            return Ok(());
        }
        let Some(dir) = &self.dir else {
            return Err("store is read-only".into());
        };
        let path = dir.join(format!("{key}.jwt"));
        let deleted = dir.join(format!("{key}.jwt.deleted"));
        match std::fs::rename(&path, &deleted) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Keeps `jwt` to apply again after a config reload.
    pub fn remember(&self, key: &str, jwt: &str) {
        let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        remembered.insert(key.to_owned(), jwt.to_owned());
    }

    pub fn forget(&self, key: &str) {
        let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        remembered.remove(key);
    }

    /// The JWTs kept by [`AccountStore::remember`].
    pub fn remembered(&self) -> Vec<String> {
        let remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        remembered.values().cloned().collect()
    }
}

/// Writes `<dir>/<key>.jwt` through a temporary file and a rename, so a
/// reader (natsgate's own poll, a restart) sees the old JWT or the new one,
/// never half of one.
fn write_atomically(dir: &Path, key: &str, jwt: &str) -> Result<(), String> {
    use std::io::Write;
    let path = dir.join(format!("{key}.jwt"));
    let tmp = dir.join(format!(".{key}.jwt.tmp"));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(jwt.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename itself is durable once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "AKEY", "one").unwrap();
        write_atomically(dir.path(), "AKEY", "two").unwrap();
        let read = std::fs::read_to_string(dir.path().join("AKEY.jwt")).unwrap();
        assert_eq!(read, "two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("AKEY.jwt")]);
        let missing = dir.path().join("nope");
        assert!(write_atomically(&missing, "AKEY", "x").is_err());
    }
}
