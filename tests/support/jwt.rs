//! JWT minting helpers for tests: operators, accounts, users and `.creds`
//! text (through natsgate's own `auth::jwt::encode`), plus the configs that
//! make a nats-server in operator mode (MEMORY resolver) and natsgate (`[jwt]`)
//! trust the same operator and accounts.

use std::fmt::Write as _;
use std::path::Path;

use nkeys::KeyPair;

pub use natsgate::auth::jwt::claims::{
    Account, AccountClaims, Generic, GenericClaims, Operator as OperatorNats, OperatorClaims,
    OperatorLimits, Permission, Permissions, ResponsePermission, SigningKey, TimeRange, User,
    UserClaims, UserPermissionLimits, UserScope,
};
pub use natsgate::auth::jwt::encode::{encode, encode_as_is, format_creds, unix_now};

use super::{RawClient, keys, quote_conf, quote_toml};

/// A minted operator: identity key, one signing key, and its JWT (self-signed).
pub struct Operator {
    pub kp: KeyPair,
    pub signing: KeyPair,
    pub jwt: String,
}

/// Mints an operator with one signing key. `strict` sets
/// `strict_signing_key_usage` (accounts must then be signed by `signing`).
pub fn operator(name: &str, strict: bool, system_account: Option<&str>) -> Operator {
    let kp = KeyPair::new_operator();
    let signing = KeyPair::new_operator();
    let mut c = OperatorClaims {
        subject: kp.public_key(),
        name: name.into(),
        ..Default::default()
    };
    c.nats.signing_keys = vec![signing.public_key()];
    c.nats.strict_signing_key_usage = strict;
    if let Some(sys) = system_account {
        c.nats.system_account = sys.into();
    }
    let jwt = encode(&c, &kp).expect("mint operator JWT");
    Operator { kp, signing, jwt }
}

/// Account claims for `kp` as nsc writes them (every limit `-1`).
pub fn account_claims(kp: &KeyPair, name: &str) -> AccountClaims {
    let mut c = AccountClaims {
        subject: kp.public_key(),
        name: name.into(),
        ..Default::default()
    };
    c.nats.limits = OperatorLimits::unlimited();
    c
}

/// Signs account claims (`iss` = `signer`).
pub fn sign_account(c: &AccountClaims, signer: &KeyPair) -> String {
    encode(c, signer).expect("mint account JWT")
}

/// User claims for `kp` as nsc writes them (limits `-1`, no permissions).
pub fn user_claims(kp: &KeyPair, name: &str) -> UserClaims {
    let mut c = UserClaims {
        subject: kp.public_key(),
        name: name.into(),
        ..Default::default()
    };
    c.nats.limits = UserPermissionLimits::unlimited();
    c
}

/// User claims with a completely empty permissions-and-limits part, as a
/// scoped signing key requires (spec 3.11).
pub fn scoped_user_claims(kp: &KeyPair, name: &str, account: &str) -> UserClaims {
    let mut c = UserClaims {
        subject: kp.public_key(),
        name: name.into(),
        ..Default::default()
    };
    c.nats.issuer_account = account.into();
    c
}

/// Signs user claims (`iss` = `signer`).
pub fn sign_user(c: &UserClaims, signer: &KeyPair) -> String {
    encode(c, signer).expect("mint user JWT")
}

/// `.creds` text for `jwt` and the user's key pair.
pub fn creds(jwt: &str, kp: &KeyPair) -> String {
    format_creds(jwt, &kp.seed().expect("seed"))
}

/// A scope object for an account's `signing_keys`.
pub fn scope(key: &KeyPair, role: &str, template: UserPermissionLimits) -> SigningKey {
    SigningKey::Scoped(Box::new(UserScope {
        kind: "user_scope".into(),
        key: key.public_key(),
        role: role.into(),
        template,
        description: String::new(),
    }))
}

/// nats-server config for operator mode: the trusted operator JWTs inline, a
/// MEMORY resolver preloaded with `accounts` (`(public key, JWT)`), and the
/// system account if given.
pub fn server_config(
    operators: &[&str],
    accounts: &[(String, String)],
    system_account: Option<&str>,
) -> String {
    let mut s = String::new();
    let ops: Vec<String> = operators.iter().map(|j| quote_conf(j)).collect();
    writeln!(s, "operator: [{}]", ops.join(", ")).unwrap();
    if let Some(sys) = system_account {
        writeln!(s, "system_account: {}", quote_conf(sys)).unwrap();
    }
    s.push_str("resolver: MEMORY\nresolver_preload: {\n");
    for (key, jwt) in accounts {
        writeln!(s, "  {key}: {}", quote_conf(jwt)).unwrap();
    }
    s.push_str("}\n");
    s
}

/// A plain upstream nats-server that only knows natsgate's credential.
pub fn upstream_config(password: &str) -> String {
    format!(
        "authorization {{\n  users = [ {{user: \"gate\", password: {}}} ]\n}}\n",
        quote_conf(password)
    )
}

/// Writes `operator-<i>.jwt` files and `jwt/<KEY>.jwt` account files into
/// `dir`, and returns natsgate's TOML (paths relative to `dir`).
pub fn gate_setup(
    dir: &Path,
    upstream_url: &str,
    password: &str,
    operators: &[&str],
    accounts: &[(String, String)],
) -> String {
    let acc_dir = dir.join("jwt");
    std::fs::create_dir_all(&acc_dir).expect("create jwt dir");
    let mut op_files = Vec::new();
    for (i, jwt) in operators.iter().enumerate() {
        let name = format!("operator-{i}.jwt");
        std::fs::write(dir.join(&name), jwt).expect("write operator JWT");
        op_files.push(quote_toml(&name));
    }
    for (key, jwt) in accounts {
        std::fs::write(acc_dir.join(format!("{key}.jwt")), jwt).expect("write account JWT");
    }
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n\
         [upstream]\nservers = [{}]\nuser = \"gate\"\npassword = {}\n\n\
         [jwt]\noperators = [{}]\naccounts_dir = \"jwt\"\n",
        quote_toml(upstream_url),
        quote_toml(password),
        op_files.join(", ")
    )
}

/// CONNECT with a user JWT. `signer`: the key whose signature of the nonce
/// goes into `sig` (None: no `sig`, e.g. for bearer tokens). Fields of
/// `extra` are added and override `verbose:false, pedantic:false, protocol:1`.
pub async fn connect_jwt(
    c: &mut RawClient,
    jwt: &str,
    signer: Option<&KeyPair>,
    extra: serde_json::Value,
) {
    let mut obj = serde_json::json!({
        "verbose": false, "pedantic": false, "protocol": 1,
        "lang": "raw-test", "version": "0", "jwt": jwt,
    });
    if let Some(kp) = signer {
        let nonce = c
            .nonce()
            .expect("INFO has no nonce; cannot sign")
            .to_owned();
        obj["sig"] = serde_json::Value::String(keys::sign_nonce(kp, &nonce));
    }
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            obj[k] = v;
        }
    }
    c.connect_json(&obj).await;
}
