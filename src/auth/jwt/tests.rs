//! Tests of the trust store and the login steps, with minted chains.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;

use super::claims::{
    AccountClaims, OperatorClaims, OperatorLimits, Permission, Permissions, ResponsePermission,
    SigningKey, TimeRange, User, UserClaims, UserPermissionLimits, UserScope, decode,
};
use super::encode::{encode, encode_as_is};
use super::*;
use crate::permissions::{ResponseSpec, SubjectRules};

const NONCE: &[u8] = b"nonce-123456789";
const NOW: i64 = 1_780_000_000;

fn now() -> SystemTime {
    store::from_unix(NOW)
}

struct Chain {
    op: KeyPair,
    op_sk: KeyPair,
    acc: KeyPair,
    acc_sk: KeyPair,
    scoped_sk: KeyPair,
    account: AccountClaims,
    store: TrustStore,
    dir: PathBuf,
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ngb-{tag}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chain_with(tag: &str, strict: bool, edit: impl FnOnce(&mut AccountClaims)) -> Chain {
    let op = KeyPair::new_operator();
    let op_sk = KeyPair::new_operator();
    let acc = KeyPair::new_account();
    let acc_sk = KeyPair::new_account();
    let scoped_sk = KeyPair::new_account();
    let mut oc = OperatorClaims {
        subject: op.public_key(),
        name: "OP".into(),
        ..Default::default()
    };
    oc.nats.signing_keys = vec![op_sk.public_key()];
    oc.nats.strict_signing_key_usage = strict;
    let mut account = AccountClaims {
        subject: acc.public_key(),
        name: "acme".into(),
        ..Default::default()
    };
    account.nats.limits = OperatorLimits::unlimited();
    account.nats.generic.tags = vec!["region:eu".into()];
    let mut template = UserPermissionLimits::unlimited();
    template.publish.allow = vec!["app.{{name()}}.>".into()];
    template.response = Some(ResponsePermission { max: 1, ttl: 0 });
    account.nats.signing_keys = vec![
        SigningKey::Plain(acc_sk.public_key()),
        SigningKey::Scoped(Box::new(UserScope {
            kind: "user_scope".into(),
            key: scoped_sk.public_key(),
            role: "app".into(),
            template,
            description: String::new(),
        })),
    ];
    edit(&mut account);
    let dir = temp_dir(tag);
    let op_file = dir.join("op.jwt");
    std::fs::write(&op_file, encode(&oc, &op).unwrap()).unwrap();
    let accounts = dir.join("accounts");
    std::fs::create_dir_all(&accounts).unwrap();
    std::fs::write(
        accounts.join(format!("{}.jwt", acc.public_key())),
        encode(&account, &op_sk).unwrap(),
    )
    .unwrap();
    std::fs::write(accounts.join("AXXX.jwt.deleted"), "junk").unwrap();
    let store = TrustStore::load(&[op_file], Some(&accounts), &[], now()).unwrap();
    Chain {
        op,
        op_sk,
        acc,
        acc_sk,
        scoped_sk,
        account,
        store,
        dir,
    }
}

fn chain(tag: &str) -> Chain {
    chain_with(tag, false, |_| {})
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Chain {
    fn user_claims(&self, user: &KeyPair) -> UserClaims {
        let mut uc = UserClaims {
            subject: user.public_key(),
            name: "alice".into(),
            ..Default::default()
        };
        uc.nats.limits = UserPermissionLimits::unlimited();
        uc.issued_at = NOW - 100;
        uc
    }

    fn login(&self, token: &str, user: &KeyPair) -> Result<JwtUser, JwtAuthError> {
        self.login_from(token, user, "127.0.0.1".parse().unwrap())
    }

    fn login_from(&self, token: &str, user: &KeyPair, ip: IpAddr) -> Result<JwtUser, JwtAuthError> {
        let sig = URL_SAFE_NO_PAD.encode(user.sign(NONCE).unwrap());
        let login = JwtLogin {
            jwt: token,
            sig: Some(&sig),
            nonce: NONCE,
            client_ip: ip,
            connection_type: "STANDARD",
        };
        self.store.authenticate(&login, now())
    }

    fn update_account(&mut self, edit: impl FnOnce(&mut AccountClaims)) -> AccountChange {
        let mut account = self.account.clone();
        account.issued_at = 0;
        edit(&mut account);
        let token = encode(&account, &self.op_sk).unwrap();
        self.store.upsert_account_jwt(&token, now()).unwrap()
    }
}

fn fails(r: Result<JwtUser, JwtAuthError>, kind: JwtRefusal) -> JwtAuthError {
    match r {
        Ok(_) => panic!("expected {kind:?}, got success"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{e}");
            e
        }
    }
}

#[test]
fn load_lists_operators_and_accounts() {
    let c = chain("load");
    let ops: Vec<_> = c.store.operators().collect();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].key, c.op.public_key());
    let acc = c.store.account(&c.acc.public_key()).unwrap();
    assert_eq!(acc.name, "acme");
    assert_eq!(acc.signing_keys.len(), 2);
    assert!(acc.signing_keys[1].scoped);
    assert_eq!(acc.limits.conn, -1);
    assert_eq!(c.store.accounts().count(), 1);
}

#[test]
fn load_errors_name_the_file() {
    let c = chain("loaderr");
    let other_op = KeyPair::new_operator();
    let bad = AccountClaims {
        subject: c.acc.public_key(),
        ..Default::default()
    };
    let file = c.dir.join("bad.jwt");
    std::fs::write(&file, encode(&bad, &other_op).unwrap()).unwrap();
    let err = TrustStore::load(&[c.dir.join("op.jwt")], None, &[file], now()).unwrap_err();
    assert!(err.to_string().contains("bad.jwt"), "{err}");
    assert!(err.to_string().contains("trusted operator"), "{err}");
    // sub must match the file name in the directory.
    let dir = c.dir.join("mismatch");
    std::fs::create_dir_all(&dir).unwrap();
    let good = encode(&bad, &c.op).unwrap();
    std::fs::write(
        dir.join(format!("{}.jwt", KeyPair::new_account().public_key())),
        good,
    )
    .unwrap();
    let err = TrustStore::load(&[c.dir.join("op.jwt")], Some(&dir), &[], now()).unwrap_err();
    assert!(err.to_string().contains("file name"), "{err}");
}

#[test]
fn good_user_via_identity_and_signing_key() {
    let c = chain("good");
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    uc.nats.limits.publish.allow = vec!["a.>".into()];
    let u = c.login(&encode(&uc, &c.acc).unwrap(), &user).unwrap();
    assert_eq!(u.account_key, c.acc.public_key());
    assert_eq!(u.account_name, "acme");
    assert_eq!(
        u.permissions.publish,
        Some(SubjectRules {
            allow: Some(vec!["a.>".into()]),
            deny: vec![]
        })
    );
    assert_eq!((u.subs, u.payload), (-1, -1));
    // Signing key with issuer_account.
    uc.nats.issuer_account = c.acc.public_key();
    let u = c.login(&encode(&uc, &c.acc_sk).unwrap(), &user).unwrap();
    assert_eq!(u.issuer, c.acc_sk.public_key());
    // Identity key with issuer_account = itself: accepted.
    assert!(c.login(&encode(&uc, &c.acc).unwrap(), &user).is_ok());
}

#[test]
fn signing_key_without_issuer_account_fails() {
    let c = chain("noissacc");
    let user = KeyPair::new_user();
    let uc = c.user_claims(&user);
    let e = fails(
        c.login(&encode(&uc, &c.acc_sk).unwrap(), &user),
        JwtRefusal::AccountNotFound,
    );
    assert!(e.to_string().starts_with("Account JWT lookup error"));
}

#[test]
fn unknown_issuer() {
    let c = chain("unknown");
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    uc.nats.issuer_account = c.acc.public_key();
    let stranger = KeyPair::new_account();
    let e = fails(
        c.login(&encode(&uc, &stranger).unwrap(), &user),
        JwtRefusal::IssuerUnknown,
    );
    assert_eq!(e.to_string(), "User JWT issuer is not known");
}

#[test]
fn issuer_prefix_rules_and_decode_rules() {
    let c = chain("prefix");
    let user = KeyPair::new_user();
    let uc = c.user_claims(&user);
    // A user JWT signed by an operator key (encode_as_is to bypass the check).
    let mut bad = uc.clone();
    bad.issuer = c.op.public_key();
    bad.nats.generic.kind = "user".into();
    bad.nats.generic.version = 2;
    let t = encode_as_is(&bad, &c.op).unwrap();
    fails(c.login(&t, &user), JwtRefusal::UserJwtRequired);
    assert!(matches!(
        decode::<User>(&t),
        Err(claims::DecodeError::Issuer(_))
    ));
    // An account JWT is not a user JWT.
    let t = encode(&c.account, &c.op).unwrap();
    let e = fails(c.login(&t, &user), JwtRefusal::UserJwtRequired);
    assert_eq!(e.to_string(), "Authentication requires a user JWT");
    // Tampered payload.
    let good = encode(&uc, &c.acc).unwrap();
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut payload = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
    let text = String::from_utf8(payload.clone())
        .unwrap()
        .replace("alice", "mallo");
    payload = text.into_bytes();
    parts[1] = URL_SAFE_NO_PAD.encode(payload);
    fails(
        c.login(&parts.join("."), &user),
        JwtRefusal::UserJwtRequired,
    );
    // Padding rejected.
    let padded = format!("{good}==");
    assert!(decode::<User>(&padded).is_err());
    // Header case-insensitive.
    let (_, rest) = good.split_once('.').unwrap();
    let h = URL_SAFE_NO_PAD.encode(r#"{"typ":"jwt","alg":"ED25519-NKEY"}"#);
    let signing_input = format!("{h}.{}", rest.split('.').next().unwrap());
    let sig = URL_SAFE_NO_PAD.encode(c.acc.sign(signing_input.as_bytes()).unwrap());
    assert!(c.login(&format!("{signing_input}.{sig}"), &user).is_ok());
    // Newer version rejected.
    let mut newer = uc.clone();
    newer.issuer = c.acc.public_key();
    newer.nats.generic.kind = "user".into();
    newer.nats.generic.version = 3;
    let t = encode_as_is(&newer, &c.acc).unwrap();
    assert_eq!(
        decode::<User>(&t).unwrap_err(),
        claims::DecodeError::NewerVersion
    );
    // Too long; a long blob without the dots is "expected 3 chunks" first,
    // as nats-io/jwt says (and nats-server's resolver answers).
    let long = format!("{}.b.c", "a".repeat(claims::MAX_TOKEN_SIZE));
    assert_eq!(
        decode::<User>(&long).unwrap_err(),
        claims::DecodeError::TooLong
    );
    assert_eq!(
        decode::<User>(&"a".repeat(claims::MAX_TOKEN_SIZE + 1)).unwrap_err(),
        claims::DecodeError::Chunks
    );
}

#[test]
fn v1_user_claims_accepted() {
    let c = chain("v1");
    let user = KeyPair::new_user();
    let payload = serde_json::json!({
        "jti": "X", "iat": NOW - 10, "iss": c.acc.public_key(), "name": "old",
        "sub": user.public_key(), "type": "user",
        "nats": {"pub": {"allow": ["v1.>"]}, "subs": -1, "payload": -1}
    });
    let h = URL_SAFE_NO_PAD.encode(r#"{"typ":"jwt","alg":"ed25519"}"#);
    let p = URL_SAFE_NO_PAD.encode(payload.to_string());
    let sig = URL_SAFE_NO_PAD.encode(c.acc.sign(p.as_bytes()).unwrap());
    let u = c.login(&format!("{h}.{p}.{sig}"), &user).unwrap();
    assert_eq!(u.user_name, "old");
}

#[test]
fn strict_signing_keys() {
    let c = chain_with("strict", true, |_| {});
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    fails(
        c.login(&encode(&uc, &c.acc).unwrap(), &user),
        JwtRefusal::IssuerUnknown,
    );
    uc.nats.issuer_account = c.acc.public_key();
    assert!(c.login(&encode(&uc, &c.acc_sk).unwrap(), &user).is_ok());
    // The strict operator's identity key may not sign accounts.
    let file = c.dir.join("by-identity.jwt");
    std::fs::write(&file, encode(&c.account, &c.op).unwrap()).unwrap();
    let err = TrustStore::load(&[c.dir.join("op.jwt")], None, &[file], now()).unwrap_err();
    assert!(err.to_string().contains("trusted operator"), "{err}");
}

#[test]
fn scoped_users() {
    let c = chain("scoped");
    let user = KeyPair::new_user();
    let mut uc = UserClaims {
        subject: user.public_key(),
        name: "bob".into(),
        ..Default::default()
    };
    uc.issued_at = NOW;
    uc.nats.issuer_account = c.acc.public_key();
    let u = c.login(&encode(&uc, &c.scoped_sk).unwrap(), &user).unwrap();
    assert_eq!(
        u.permissions.publish,
        Some(SubjectRules {
            allow: Some(vec!["app.bob.>".into()]),
            deny: vec![]
        })
    );
    assert_eq!(
        u.permissions.responses,
        Some(ResponseSpec {
            max: 1,
            ttl_nanos: 0
        })
    );
    assert_eq!(
        (u.subs, u.payload),
        (-1, -1),
        "limits come from the template"
    );
    // A scoped user with its own limits fails (nsc non-scoped user: subs -1).
    uc.nats.limits.subs = -1;
    let e = fails(
        c.login(&encode(&uc, &c.scoped_sk).unwrap(), &user),
        JwtRefusal::ScopedUserNotEmpty,
    );
    assert!(
        e.to_string()
            .contains("scoped users require no permissions or limits set")
    );
}

#[test]
fn scoped_template_invalid() {
    let c = chain_with("scopedbad", false, |a| {
        if let SigningKey::Scoped(s) = &mut a.nats.signing_keys[1] {
            s.template.publish.deny = vec!["x.{{tag(team)}}".into()];
        }
    });
    let user = KeyPair::new_user();
    let mut uc = UserClaims {
        subject: user.public_key(),
        ..Default::default()
    };
    uc.nats.issuer_account = c.acc.public_key();
    let e = fails(
        c.login(&encode(&uc, &c.scoped_sk).unwrap(), &user),
        JwtRefusal::TemplateInvalid,
    );
    assert_eq!(e.to_string(), "User JWT generated invalid permissions");
    // With the tag present it works; the account tag is used as well.
    uc.nats.generic.tags = vec!["team:red".into()];
    let u = c.login(&encode(&uc, &c.scoped_sk).unwrap(), &user).unwrap();
    // The user has no name, so `app.{{name()}}.>` is dropped from the allow
    // list, which then adds `>` to the deny list.
    let publish = u.permissions.publish.clone().unwrap();
    // (`resp` in the template makes the emptied allow list explicit.)
    assert_eq!(publish.allow, Some(vec![]));
    assert_eq!(publish.deny, vec!["x.red".to_string(), ">".to_string()]);
}

#[test]
fn exp_and_nbf() {
    let c = chain("exp");
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    uc.expires = NOW;
    let u = c.login(&encode(&uc, &c.acc).unwrap(), &user).unwrap();
    assert_eq!(u.expires_at, Some(now()), "exp == now is still valid");
    uc.expires = NOW - 1;
    let e = fails(
        c.login(&encode(&uc, &c.acc).unwrap(), &user),
        JwtRefusal::UserJwtInvalid,
    );
    assert_eq!(e.to_string(), "User JWT no longer valid: claim is expired");
    uc.expires = 0;
    uc.not_before = NOW + 1;
    fails(
        c.login(&encode(&uc, &c.acc).unwrap(), &user),
        JwtRefusal::UserJwtInvalid,
    );
    uc.not_before = NOW;
    assert!(c.login(&encode(&uc, &c.acc).unwrap(), &user).is_ok());
}

#[test]
fn revocation_and_recheck() {
    let mut c = chain("revoke");
    let user = KeyPair::new_user();
    let uc = c.user_claims(&user); // iat NOW-100
    let token = encode(&uc, &c.acc).unwrap();
    let connected = c.login(&token, &user).unwrap();
    assert_eq!(c.store.recheck(&connected, now()), Ok(()));
    // Entry one second before iat: not revoked.
    let key = user.public_key();
    let change = c.update_account(|a| {
        a.nats.revocations.insert(key.clone(), NOW - 101);
    });
    assert_eq!(change, AccountChange::Updated { revoked_any: true });
    assert!(c.login(&token, &user).is_ok());
    assert_eq!(c.store.recheck(&connected, now()), Ok(()));
    // Entry equal to iat: revoked.
    c.update_account(|a| {
        a.nats.revocations.insert(key.clone(), NOW - 100);
    });
    let e = fails(c.login(&token, &user), JwtRefusal::Revoked);
    assert_eq!(e.to_string(), "User authentication revoked");
    assert_eq!(c.store.recheck(&connected, now()), Err(Disconnect::Revoked));
    assert_eq!(
        Disconnect::Revoked.error_text(),
        "User Authentication Revoked"
    );
    // `*` entry.
    c.update_account(|a| {
        a.nats.revocations.insert("*".into(), NOW);
    });
    let other = KeyPair::new_user();
    fails(
        c.login(&encode(&c.user_claims(&other), &c.acc).unwrap(), &other),
        JwtRefusal::Revoked,
    );
}

#[test]
fn recheck_quirk_for_missing_iat() {
    let mut c = chain("iat0");
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    uc.issued_at = 0;
    uc.nats.generic.kind = "user".into();
    uc.nats.generic.version = 2;
    uc.issuer = c.acc.public_key();
    let connected = c.login(&encode_as_is(&uc, &c.acc).unwrap(), &user).unwrap();
    assert_eq!(connected.issued_at, 0);
    let someone_else = KeyPair::new_user().public_key();
    c.update_account(|a| {
        a.nats.revocations.insert(someone_else, 1);
    });
    assert_eq!(c.store.recheck(&connected, now()), Err(Disconnect::Revoked));
}

#[test]
fn recheck_signing_key_removed_and_account_expiry() {
    let mut c = chain("skremoved");
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    uc.nats.issuer_account = c.acc.public_key();
    let connected = c.login(&encode(&uc, &c.acc_sk).unwrap(), &user).unwrap();
    c.update_account(|a| {
        a.nats.signing_keys.remove(0);
    });
    let d = c.store.recheck(&connected, now()).unwrap_err();
    assert_eq!(d, Disconnect::AuthenticationFailure);
    assert!(!d.sends_error());
    c.update_account(|a| a.expires = NOW + 10);
    let plain = c
        .login(&encode(&c.user_claims(&user), &c.acc).unwrap(), &user)
        .unwrap();
    assert_eq!(plain.account_expires_at, Some(store::from_unix(NOW + 10)));
    assert_eq!(
        c.store.recheck(&plain, store::from_unix(NOW + 11)),
        Err(Disconnect::AccountExpired)
    );
    assert_eq!(
        c.store
            .authenticate(
                &JwtLogin {
                    jwt: &plain.jwt,
                    sig: None,
                    nonce: NONCE,
                    client_ip: "127.0.0.1".parse().unwrap(),
                    connection_type: "STANDARD"
                },
                store::from_unix(NOW + 11)
            )
            .unwrap_err()
            .kind(),
        JwtRefusal::AccountExpired
    );
}

#[test]
fn bearer_tokens() {
    let mut c = chain("bearer");
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    uc.nats.limits.bearer_token = true;
    let token = encode(&uc, &c.acc).unwrap();
    let mut login = JwtLogin {
        jwt: &token,
        sig: Some("!!garbage!!"),
        nonce: NONCE,
        client_ip: "127.0.0.1".parse().unwrap(),
        connection_type: "STANDARD",
    };
    let connected = c.store.authenticate(&login, now()).unwrap();
    assert!(connected.bearer);
    login.sig = None;
    assert!(c.store.authenticate(&login, now()).is_ok());
    c.update_account(|a| a.nats.limits.disallow_bearer = true);
    assert_eq!(
        c.store.authenticate(&login, now()).unwrap_err().kind(),
        JwtRefusal::BearerNotAllowed
    );
    assert_eq!(
        c.store.recheck(&connected, now()),
        Err(Disconnect::AuthorizationViolation)
    );
}

#[test]
fn signature_failures() {
    let c = chain("sig");
    let user = KeyPair::new_user();
    let token = encode(&c.user_claims(&user), &c.acc).unwrap();
    let mut login = JwtLogin {
        jwt: &token,
        sig: None,
        nonce: NONCE,
        client_ip: "127.0.0.1".parse().unwrap(),
        connection_type: "STANDARD",
    };
    let e = c.store.authenticate(&login, now()).unwrap_err();
    assert_eq!(e.to_string(), "Signature missing");
    assert_eq!(e.reason(), "signature_missing");
    login.sig = Some("***");
    assert_eq!(
        c.store.authenticate(&login, now()).unwrap_err().to_string(),
        "Signature not valid base64"
    );
    let other = URL_SAFE_NO_PAD.encode(KeyPair::new_user().sign(NONCE).unwrap());
    login.sig = Some(&other);
    assert_eq!(
        c.store.authenticate(&login, now()).unwrap_err().to_string(),
        "Signature not verified"
    );
}

#[test]
fn source_cidrs() {
    let c = chain("src");
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    uc.nats.limits.source = vec!["10.0.0.0/8".into(), "192.168.1.0/24".into()];
    let token = encode(&uc, &c.acc).unwrap();
    assert!(
        c.login_from(&token, &user, "10.1.2.3".parse().unwrap())
            .is_ok()
    );
    assert!(
        c.login_from(&token, &user, "::ffff:192.168.1.7".parse().unwrap())
            .is_ok()
    );
    let e = fails(
        c.login_from(&token, &user, "127.0.0.1".parse().unwrap()),
        JwtRefusal::SourceNotAllowed,
    );
    assert_eq!(e.to_string(), "Bad src Ip 127.0.0.1");
    assert!(e.is_error_level());
    // The comma-separated string form.
    let json = serde_json::json!({"src": "10.0.0.0/8, 2001:db8::/32"});
    let limits: UserPermissionLimits = serde_json::from_value(json).unwrap();
    assert_eq!(
        limits.source,
        vec!["10.0.0.0/8".to_string(), "2001:db8::/32".to_string()]
    );
    let mut uc2 = c.user_claims(&user);
    uc2.nats.limits.source = limits.source;
    let token = encode(&uc2, &c.acc).unwrap();
    assert!(
        c.login_from(&token, &user, "2001:db8::1".parse().unwrap())
            .is_ok()
    );
    // Unparsable CIDR: validation failure.
    uc.nats.limits.source = vec!["10.0.0.0/33".into()];
    fails(
        c.login(&encode(&uc, &c.acc).unwrap(), &user),
        JwtRefusal::UserJwtInvalid,
    );
}

#[test]
fn connect_times_feed_expiry() {
    let c = chain("times");
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    // NOW = 2026-05-28T20:26:40Z.
    uc.nats.limits.times = vec![TimeRange {
        start: "20:00:00".into(),
        end: "21:00:00".into(),
    }];
    uc.nats.limits.times_location = "UTC".into();
    uc.expires = NOW + 7200;
    let u = c.login(&encode(&uc, &c.acc).unwrap(), &user).unwrap();
    assert_eq!(u.expires_at, Some(store::from_unix(NOW - 1600 + 3600)));
    uc.nats.limits.times = vec![TimeRange {
        start: "08:00:00".into(),
        end: "17:00:00".into(),
    }];
    let e = fails(
        c.login(&encode(&uc, &c.acc).unwrap(), &user),
        JwtRefusal::OutsideConnectTimes,
    );
    assert_eq!(e.to_string(), "Outside connect times");
    // 22:26 in Berlin (CEST): a window crossing midnight.
    uc.nats.limits.times = vec![TimeRange {
        start: "22:00:00".into(),
        end: "01:00:00".into(),
    }];
    uc.nats.limits.times_location = "Europe/Berlin".into();
    uc.expires = 0;
    let u = c.login(&encode(&uc, &c.acc).unwrap(), &user).unwrap();
    // Ends at 01:00 CEST = 23:00 UTC.
    assert_eq!(u.expires_at, Some(store::from_unix(NOW + 9200)));
    uc.nats.limits.times_location = "Mars/Base".into();
    fails(
        c.login(&encode(&uc, &c.acc).unwrap(), &user),
        JwtRefusal::UserJwtInvalid,
    );
}

#[test]
fn connection_types() {
    let c = chain("conntypes");
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    for (types, ok) in [
        (vec!["standard"], true),
        (vec!["WEBSOCKET"], false),
        (vec!["STANDARD", "FUTURE"], true),
        (vec!["FUTURE"], false),
    ] {
        uc.nats.limits.allowed_connection_types = types.iter().map(|s| s.to_string()).collect();
        let r = c.login(&encode(&uc, &c.acc).unwrap(), &user);
        assert_eq!(r.is_ok(), ok, "{types:?}");
        if let Err(e) = r {
            assert_eq!(e.to_string(), "Connection type not allowed");
        }
    }
}

#[test]
fn default_permissions_only_without_any_user_permission() {
    let mut c = chain("defaults");
    c.update_account(|a| {
        a.nats.default_permissions = Permissions {
            publish: Permission {
                allow: vec!["def.>".into()],
                deny: vec![],
            },
            ..Default::default()
        };
    });
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    let u = c.login(&encode(&uc, &c.acc).unwrap(), &user).unwrap();
    assert_eq!(
        u.permissions.publish.clone().unwrap().allow,
        Some(vec!["def.>".to_string()])
    );
    uc.nats.limits.subscribe.allow = vec!["mine".into()];
    let u = c.login(&encode(&uc, &c.acc).unwrap(), &user).unwrap();
    assert_eq!(u.permissions.publish, None);
    // resp alone makes the publish allow list explicit and empty.
    uc.nats.limits.subscribe.allow.clear();
    uc.nats.limits.publish.deny = vec!["x".into()];
    uc.nats.limits.response = Some(ResponsePermission { max: 0, ttl: 0 });
    let u = c.login(&encode(&uc, &c.acc).unwrap(), &user).unwrap();
    assert_eq!(
        u.permissions.publish,
        Some(SubjectRules {
            allow: Some(vec![]),
            deny: vec!["x".into()]
        })
    );
    assert_eq!(u.permissions.responses, Some(ResponseSpec::DEFAULT));
}

#[test]
fn limits_min_rule_and_absent_is_zero() {
    let mut c = chain("limits");
    c.update_account(|a| {
        a.nats.limits.subs = 10;
        a.nats.limits.payload = -1;
    });
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    uc.nats.limits.subs = -1;
    uc.nats.limits.payload = 500;
    let u = c.login(&encode(&uc, &c.acc).unwrap(), &user).unwrap();
    assert_eq!((u.subs, u.payload), (10, 500));
    uc.nats.limits.subs = 3;
    let u = c.login(&encode(&uc, &c.acc).unwrap(), &user).unwrap();
    assert_eq!(u.subs, 3);
    // A hand-made JWT without limits decodes them as 0.
    let json = serde_json::json!({"sub": "U", "nats": {"type": "user"}});
    let parsed: UserClaims = serde_json::from_value(json).unwrap();
    assert_eq!(
        (parsed.nats.limits.subs, parsed.nats.limits.payload),
        (0, 0)
    );
}

#[test]
fn proxy_required_fails_first() {
    let c = chain("proxy");
    let user = KeyPair::new_user();
    let mut uc = c.user_claims(&user);
    uc.nats.limits.proxy_required = true;
    uc.expires = NOW - 10; // would also fail step 3
    let e = fails(
        c.login(&encode(&uc, &c.acc).unwrap(), &user),
        JwtRefusal::ProxyRequired,
    );
    assert_eq!(e.reason(), "proxy_required");
}

#[test]
fn upsert_keeps_old_on_error_and_reports_unchanged() {
    let mut c = chain("upsert");
    let token = c.store.account(&c.acc.public_key()).unwrap().jwt.clone();
    assert_eq!(
        c.store.upsert_account_jwt(&token, now()).unwrap(),
        AccountChange::Unchanged
    );
    let stranger = KeyPair::new_operator();
    let mut bad = c.account.clone();
    bad.name = "evil".into();
    assert!(
        c.store
            .upsert_account_jwt(&encode(&bad, &stranger).unwrap(), now())
            .is_err()
    );
    assert_eq!(c.store.account(&c.acc.public_key()).unwrap().name, "acme");
    let mut fresh = AccountClaims {
        subject: KeyPair::new_account().public_key(),
        ..Default::default()
    };
    fresh.expires = NOW + 5;
    assert_eq!(
        c.store
            .upsert_account_jwt(&encode(&fresh, &c.op).unwrap(), now())
            .unwrap(),
        AccountChange::Added
    );
    fresh.expires = NOW - 5;
    assert!(
        c.store
            .upsert_account_jwt(&encode(&fresh, &c.op).unwrap(), now())
            .is_err()
    );
    let _ = Duration::ZERO;
}
