//! Mints the EXAMPLE-ONLY operator, account and user credentials used by
//! `deploy/` (docker compose), with natsgate's own minting code.
//!
//! ```text
//! cargo run --example mint_example -- deploy/natsgate
//! ```
//!
//! Writes, under the given directory:
//!
//! - `operator.jwt`: the trusted operator (`[jwt] operators`),
//! - `accounts/<ACCOUNT PUBLIC KEY>.jwt`: the account `APP`
//!   (`[jwt] accounts_dir`, nats-server's resolver layout),
//! - `accounts/<SYS PUBLIC KEY>.jwt`: the operator's system account `SYS`,
//! - `creds/joe.creds` and `creds/sam.creds`: user credentials for clients,
//! - `creds/pusher.creds`: a user of `SYS` that may push account JWTs
//!   (`$SYS.REQ.CLAIMS.>`), as `nsc push` does.
//!
//! The keys are fresh random keys on every run, and the operator and account
//! seeds are thrown away (so nobody can mint more users for this example
//! chain; run the program again to start over). Everything written is
//! **for examples only**: the user seeds end up in a public repository.
//! Use `nsc` and keys of your own for anything real.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use natsgate::auth::jwt::claims::{
    AccountClaims, OperatorClaims, OperatorLimits, Permission, ResponsePermission, UserClaims,
    UserPermissionLimits,
};
use natsgate::auth::jwt::encode::{encode, format_creds};
use nkeys::KeyPair;

fn main() -> Result<(), Box<dyn Error>> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: cargo run --example mint_example -- <out dir>");
        std::process::exit(2);
    };

    // Operator: trusted by natsgate; signs the accounts directly. Its
    // system account SYS is the one whose users may push account JWTs.
    let operator = KeyPair::new_operator();
    let system = KeyPair::new_account();
    let mut operator_claims = OperatorClaims {
        subject: operator.public_key(),
        name: "EXAMPLE-ONLY-operator".into(),
        ..Default::default()
    };
    operator_claims.nats.system_account = system.public_key();
    let mut system_claims = AccountClaims {
        subject: system.public_key(),
        name: "SYS".into(),
        ..Default::default()
    };
    system_claims.nats.limits = OperatorLimits::unlimited();

    // Account APP: no limits (nsc's defaults for a new account).
    let account = KeyPair::new_account();
    let mut account_claims = AccountClaims {
        subject: account.public_key(),
        name: "APP".into(),
        ..Default::default()
    };
    account_claims.nats.limits = OperatorLimits::unlimited();
    account_claims.nats.description = "EXAMPLE ONLY: keys are public, do not use".into();

    // joe: publishes orders (not orders.secret), reads orders and replies,
    // and may answer one reply per request he receives.
    let joe = user(
        &account,
        "joe",
        Permission {
            allow: vec!["orders.>".into()],
            deny: vec!["orders.secret".into()],
        },
        Permission {
            allow: vec!["orders.>".into(), "_INBOX.>".into()],
            deny: Vec::new(),
        },
        Some(ResponsePermission { max: 1, ttl: 0 }),
    )?;
    // sam: may only watch orders; every publish is denied.
    let sam = user(
        &account,
        "sam",
        Permission {
            allow: Vec::new(),
            deny: vec![">".into()],
        },
        Permission {
            allow: vec!["orders.>".into(), "_INBOX.>".into()],
            deny: Vec::new(),
        },
        None,
    )?;

    // pusher: a SYS user for the account resolver requests (nsc makes a
    // short-lived one like it for `nsc push`).
    let pusher = user(
        &system,
        "pusher",
        Permission {
            allow: vec![
                "$SYS.REQ.CLAIMS.>".into(),
                "$SYS.REQ.ACCOUNT.*.CLAIMS.>".into(),
            ],
            deny: Vec::new(),
        },
        Permission {
            allow: vec!["_INBOX.>".into()],
            deny: Vec::new(),
        },
        None,
    )?;

    let accounts_dir = out.join("accounts");
    let creds_dir = out.join("creds");
    fs::create_dir_all(&accounts_dir)?;
    fs::create_dir_all(&creds_dir)?;
    remove_old_account_jwts(&accounts_dir)?;

    write(
        &out.join("operator.jwt"),
        &encode(&operator_claims, &operator)?,
    )?;
    write(
        &accounts_dir.join(format!("{}.jwt", account.public_key())),
        &encode(&account_claims, &operator)?,
    )?;
    write(
        &accounts_dir.join(format!("{}.jwt", system.public_key())),
        &encode(&system_claims, &operator)?,
    )?;
    write(&creds_dir.join("joe.creds"), &joe)?;
    write(&creds_dir.join("sam.creds"), &sam)?;
    write(&creds_dir.join("pusher.creds"), &pusher)?;

    println!("operator EXAMPLE-ONLY-operator {}", operator.public_key());
    println!("account  APP                   {}", account.public_key());
    println!("account  SYS                   {}", system.public_key());
    Ok(())
}

/// A `.creds` file for a new user `name` of `account`.
fn user(
    account: &KeyPair,
    name: &str,
    publish: Permission,
    subscribe: Permission,
    response: Option<ResponsePermission>,
) -> Result<String, Box<dyn Error>> {
    let key = KeyPair::new_user();
    let mut claims = UserClaims {
        subject: key.public_key(),
        name: name.into(),
        ..Default::default()
    };
    claims.nats.limits = UserPermissionLimits {
        publish,
        subscribe,
        response,
        ..UserPermissionLimits::unlimited()
    };
    let jwt = encode(&claims, account)?;
    let seed = key.seed()?;
    println!("user     {name:<21} {}", key.public_key());
    Ok(format_creds(&jwt, &seed))
}

/// A re-run mints a new account key: drop the previous account's JWT so
/// natsgate does not load a stale account.
fn remove_old_account_jwts(dir: &Path) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jwt") {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn write(path: &Path, contents: &str) -> Result<(), Box<dyn Error>> {
    let mut text = contents.to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()).into())
}
