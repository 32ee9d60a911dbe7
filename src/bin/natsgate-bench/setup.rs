//! The identities and configs the bench runs with: an operator, an account
//! with a signing key, a JWT user whose permissions have allow and deny lists
//! and `resp` (so natsgate's checks all run), and the nats-server / natsgate
//! configs that trust them.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use natsgate::auth::jwt::claims::{
    AccountClaims, OperatorClaims, OperatorLimits, ResponsePermission, SigningKey, UserClaims,
    UserPermissionLimits,
};
use natsgate::auth::jwt::encode::encode;
use nkeys::KeyPair;

use crate::client::Auth;

/// The upstream credential natsgate (and the direct and relay runs) use.
pub const GATE_USER: &str = "gate";
pub const GATE_PASSWORD: &str = "bench-password";

/// Subjects the workloads use; all allowed by the user's permissions.
pub const PUB_SUBJECT: &str = "bench.pub";
pub const PUBSUB_SUBJECT: &str = "bench.ps";
/// A wildcard subscription that collides with a subscribe deny entry, so
/// natsgate's delivery filter is armed.
pub const PUBSUB_SUBSCRIPTION: &str = "bench.>";
pub const REQUEST_SUBJECT: &str = "bench.rr";
/// Replies go to `_INBOX.bench.<n>`, outside the publish allow list: the
/// responder may only answer through `allow_responses`.
pub const INBOX_PREFIX: &str = "_INBOX.bench.";

pub struct Identities {
    pub operator_jwt: String,
    pub account_key: String,
    pub account_jwt: String,
    pub user: Auth,
}

pub fn mint() -> Identities {
    let operator = KeyPair::new_operator();
    let operator_signing = KeyPair::new_operator();
    let mut oc = OperatorClaims {
        subject: operator.public_key(),
        name: "bench-operator".into(),
        ..Default::default()
    };
    oc.nats.signing_keys = vec![operator_signing.public_key()];
    let operator_jwt = encode(&oc, &operator).expect("mint operator JWT");

    let account = KeyPair::new_account();
    let account_signing = KeyPair::new_account();
    let mut ac = AccountClaims {
        subject: account.public_key(),
        name: "BENCH".into(),
        ..Default::default()
    };
    ac.nats.limits = OperatorLimits::unlimited();
    ac.nats.signing_keys = vec![SigningKey::Plain(account_signing.public_key())];
    let account_jwt = encode(&ac, &operator_signing).expect("mint account JWT");

    let user = KeyPair::new_user();
    let mut uc = UserClaims {
        subject: user.public_key(),
        name: "bench-user".into(),
        ..Default::default()
    };
    uc.nats.issuer_account = account.public_key();
    let mut limits = UserPermissionLimits::unlimited();
    limits.publish.allow = vec!["bench.>".into(), "metrics.*.up".into()];
    limits.publish.deny = vec![
        "bench.secret".into(),
        "bench.*.secret".into(),
        "bench.admin.>".into(),
    ];
    limits.subscribe.allow = vec!["bench.>".into(), "_INBOX.>".into()];
    limits.subscribe.deny = vec!["bench.secret".into(), "bench.admin.>".into()];
    limits.response = Some(ResponsePermission {
        max: 1,
        ttl: 60_000_000_000,
    });
    uc.nats.limits = limits;
    let user_jwt = encode(&uc, &account_signing).expect("mint user JWT");

    Identities {
        operator_jwt,
        account_key: account.public_key(),
        account_jwt,
        user: Auth::Jwt {
            jwt: user_jwt,
            key: Arc::new(user),
        },
    }
}

pub fn gate_auth() -> Auth {
    Auth::Password {
        user: GATE_USER.into(),
        pass: GATE_PASSWORD.into(),
    }
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A plain nats-server that only knows the gate credential.
pub fn plain_server_config() -> String {
    format!(
        "authorization {{\n  users = [ {{user: {}, password: {}}} ]\n}}\n",
        quote(GATE_USER),
        quote(GATE_PASSWORD)
    )
}

/// nats-server in operator mode trusting the same operator and account.
pub fn operator_server_config(ids: &Identities) -> String {
    let mut s = String::new();
    writeln!(s, "operator: [{}]", quote(&ids.operator_jwt)).unwrap();
    s.push_str("resolver: MEMORY\nresolver_preload: {\n");
    writeln!(s, "  {}: {}", ids.account_key, quote(&ids.account_jwt)).unwrap();
    s.push_str("}\n");
    s
}

/// Writes natsgate's config (and the JWT files it names) into `dir`;
/// returns the config file's path.
pub fn write_gate_config(
    dir: &Path,
    ids: &Identities,
    upstream: std::net::SocketAddr,
) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir.join("jwt"))?;
    std::fs::write(dir.join("operator.jwt"), &ids.operator_jwt)?;
    std::fs::write(
        dir.join("jwt").join(format!("{}.jwt", ids.account_key)),
        &ids.account_jwt,
    )?;
    // TOML basic strings accept JSON string escapes for these values.
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n\
         [upstream]\nservers = [\"nats://{upstream}\"]\nuser = {}\npassword = {}\n\n\
         [jwt]\noperators = [\"operator.jwt\"]\naccounts_dir = \"jwt\"\n\n\
         [log]\nlevel = \"info\"\n",
        quote(GATE_USER),
        quote(GATE_PASSWORD)
    );
    let path = dir.join("natsgate.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}
