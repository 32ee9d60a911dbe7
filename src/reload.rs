//! Account JWTs at runtime: the `accounts_dir` is polled and re-read on
//! SIGHUP, so a changed or added account takes effect without a restart.
//!
//! Each file is verified on its own: a JWT that fails validation is refused
//! with a log line naming the file, and the account keeps its old JWT. After
//! every accepted change the sessions of JWT users re-check themselves
//! against the new account (revocations, removed signing keys, expiry), as
//! nats-server does on an account update (spec 3.10, 6.2).
//!
//! Polling (every [`POLL_INTERVAL`]) is used instead of inotify because it
//! also works on the network and container volumes this directory often
//! lives on; a scan is a `stat` per file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Authenticator;
use crate::auth::jwt::AccountChange;
use crate::config::{JwtSettings, Settings};
use crate::gate::Gate;

/// How often the accounts directory is scanned for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a file looked like when it was last read.
type Seen = HashMap<PathBuf, (SystemTime, u64)>;

/// Watches the account JWT files and SIGHUP until `shutdown`.
pub async fn watch(gate: Arc<Gate>, shutdown: CancellationToken) {
    // Without `[jwt]` there are no files to poll, but SIGHUP still reloads.
    let jwt = gate.settings.jwt.clone().unwrap_or(JwtSettings {
        operators: Vec::new(),
        accounts_dir: None,
        accounts: Vec::new(),
        allow_delete: false,
        kv: None,
    });
    let mut seen = Seen::new();
    // The start-up load read everything; remember it without re-reading.
    scan(
        &gate,
        jwt.accounts_dir.as_deref(),
        &jwt.accounts,
        &mut seen,
        Mode::Remember,
    );
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<Option<()>>();
        let mode = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL_INTERVAL) => Mode::Changed,
            _ = hup => {
                info!("SIGHUP: reloading the config and the account JWTs");
                if reload_config(&gate) {
                    // Freshly loaded from the files: remember them as they are.
                    seen.clear();
                    scan(&gate, jwt.accounts_dir.as_deref(), &jwt.accounts, &mut seen, Mode::Remember);
                    gate.accounts_changed();
                    continue;
                }
                Mode::All
            }
        };
        scan(
            &gate,
            jwt.accounts_dir.as_deref(),
            &jwt.accounts,
            &mut seen,
            mode,
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Record what is there; apply nothing.
    Remember,
    /// Apply files whose size or modification time changed.
    Changed,
    /// Apply every file again.
    All,
}

fn scan(gate: &Gate, dir: Option<&Path>, files: &[PathBuf], seen: &mut Seen, mode: Mode) {
    let mut present: Vec<PathBuf> = files.to_vec();
    if let Some(dir) = dir {
        match std::fs::read_dir(dir) {
            Ok(entries) => present.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "jwt")),
            ),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot read the accounts directory");
                return;
            }
        }
    }
    let mut changed = false;
    for path in &present {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let before = seen.insert(path.clone(), stamp);
        let apply = match mode {
            Mode::Remember => false,
            Mode::Changed => before != Some(stamp),
            Mode::All => true,
        };
        if apply {
            changed |= apply_file(gate, path);
        }
    }
    // Files deleted from the directory: the account goes.
    let gone: Vec<PathBuf> = seen
        .keys()
        .filter(|p| !present.contains(p))
        .cloned()
        .collect();
    for path in gone {
        seen.remove(&path);
        if mode == Mode::Remember {
            continue;
        }
        if let Some(key) = path.file_stem().and_then(|s| s.to_str()) {
            let key = key.to_string();
            let removed = gate.update_trust(|trust| trust.remove_account(&key));
            if removed {
                info!(account = %key, file = %path.display(), "account JWT removed");
                changed = true;
            }
        }
    }
    if changed {
        gate.accounts_changed();
    }
}

/// SIGHUP: re-reads the config file and everything it names. Users,
/// permissions and JWT files take effect at once (connected static users
/// get their new permissions, JWT users are re-checked); other sections
/// need a restart. A config that fails validation is logged and ignored.
/// Returns whether a new config was installed.
fn reload_config(gate: &Gate) -> bool {
    let Some(path) = &gate.settings.source else {
        return false;
    };
    let settings = match Settings::load(path) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "config reload failed; the running config stays");
            return false;
        }
    };
    let authenticator = match Authenticator::load(&settings, SystemTime::now()) {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "config reload failed; the running config stays");
            return false;
        }
    };
    for section in restart_needed(&gate.settings, &settings) {
        warn!(
            section,
            "this section changed; it takes effect after a restart"
        );
    }
    gate.install_authenticator(authenticator);
    gate.install_policy(settings.policy.clone());
    gate.reapply_remembered();
    info!(users = settings.users.len(), "config reloaded");
    true
}

/// The sections of the config that a reload does not apply, and that
/// changed: compared by value (secrets included, though they print as
/// MASKED).
fn restart_needed(old: &Settings, new: &Settings) -> Vec<&'static str> {
    [
        ("listen", old.listen != new.listen),
        ("upstream", old.upstream != new.upstream),
        ("jwt", old.jwt != new.jwt),
        ("metrics", old.metrics != new.metrics),
        ("log", old.log != new.log),
        ("jetstream", old.jetstream != new.jetstream),
        ("websocket", old.websocket != new.websocket),
    ]
    .into_iter()
    .filter_map(|(section, changed)| changed.then_some(section))
    .collect()
}

/// Reads and applies one account JWT file. Returns whether anything changed.
fn apply_file(gate: &Gate, path: &Path) -> bool {
    let token = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read account JWT");
            return false;
        }
    };
    let mut outcome = None;
    gate.update_trust(|trust| {
        let result = trust.upsert_account_jwt(&token, SystemTime::now());
        let changed = matches!(
            result,
            Ok(AccountChange::Added | AccountChange::Updated { .. })
        );
        outcome = Some(result);
        changed
    });
    match outcome {
        Some(Ok(AccountChange::Unchanged)) | None => false,
        Some(Ok(change)) => {
            info!(file = %path.display(), ?change, "account JWT applied");
            true
        }
        Some(Err(e)) => {
            warn!(file = %path.display(), error = %e, "account JWT refused; the old one stays");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(upstream_credential: &str, level: &str) -> Settings {
        let toml = format!(
            "[listen]\naddr = \"127.0.0.1:4222\"\n[upstream]\nservers = [\"127.0.0.1:4223\"]\n\
             {upstream_credential}\n[log]\nlevel = \"{level}\"\n[[users]]\n\
             nkey = \"UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4\"\n"
        );
        Settings::from_toml_str(&toml, Path::new(".")).expect("valid test config")
    }

    #[test]
    fn a_changed_secret_is_a_change_though_it_prints_masked() {
        let old = settings("user = \"gate\"\npassword = \"one\"", "info");
        let new = settings("user = \"gate\"\npassword = \"two\"", "info");
        assert_eq!(
            format!("{:?}", old.upstream),
            format!("{:?}", new.upstream),
            "the secrets print alike"
        );
        assert_eq!(restart_needed(&old, &new), vec!["upstream"]);
        let token = settings("token = \"t1\"", "debug");
        let other = settings("token = \"t2\"", "debug");
        assert_eq!(restart_needed(&token, &other), vec!["upstream"]);
        assert_eq!(restart_needed(&old, &old.clone()), Vec::<&str>::new());
        assert_eq!(restart_needed(&token, &old), vec!["upstream", "log"]);
    }
}
