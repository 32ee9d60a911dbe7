//! Config tests: every fixture in `tests/fixtures/config/{valid,invalid}`,
//! the defaults, the permission forms, secrets staying masked, and the
//! `.creds` parser.
//!
//! An invalid fixture starts with `# error: <text>`; loading it must fail
//! with a one-line message that contains `<text>` and starts with the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::permissions::{ResponseSpec, SubjectRules};

const SVC_A: &str = "UCNBBV6JFYCQ6LROLGH5CKAECPXEJR3KS5HZQIMR5OHMVKTIJBV6DBIM";
const SVC_B: &str = "UBN2OBSJ7ZAN7TWDIFWM2WT45C6FC2LRQ37NZ5SVY6F6YB4BWQ2JYGJJ";
const UPSTREAM_GATE: &str = "UBJW3G5UR624XXN3FQE3OCQACYMNFESXNF5OKMR2MU6QQIDGGK3TZCLQ";
const CREDS_USER: &str = "UC5SY6X2WIJTLI2PU4NHWSHVXUK2DX4ICZI4BGAUGZJOL3GE5VEBSEHZ";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

fn fixture_files(kind: &str) -> Vec<PathBuf> {
    let dir = fixtures().join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn load_valid(name: &str) -> Settings {
    let path = fixtures().join("valid").join(name);
    Settings::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A minimal config around `users`, for inline tests.
fn inline(extra: &str) -> Result<Settings, ConfigError> {
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n[upstream]\nservers = [\"127.0.0.1:4223\"]\n\
         user = \"gate\"\npassword = \"pw-do-not-print\"\n\n{extra}"
    );
    Settings::from_toml_str(&text, &fixtures().join("valid"))
}

// === fixtures ===

#[test]
fn every_valid_fixture_loads() {
    for path in fixture_files("valid") {
        if let Err(e) = Settings::load(&path) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn every_invalid_fixture_fails_for_its_reason() {
    for path in fixture_files("invalid") {
        let text = std::fs::read_to_string(&path).expect("fixture is readable");
        let expected = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{} must start with `# error: `", path.display()))
            .trim();
        let message = match Settings::load(&path) {
            Ok(_) => panic!(
                "{} loaded, expected an error with {expected:?}",
                path.display()
            ),
            Err(e) => e.to_string(),
        };
        // Look for the reason outside the paths (which contain "invalid").
        let without_paths = message.replace(&fixtures().display().to_string(), "");
        assert!(
            without_paths.contains(expected),
            "{}: message {message:?} does not contain {expected:?}",
            path.display()
        );
        assert!(!message.contains('\n'), "{message:?} is not one line");
        assert!(!message.contains("s3cret"), "{message:?} shows a secret");
        // The message names the config file, or the file it points at.
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            message.contains(&file_name),
            "{message:?} does not name {file_name}"
        );
    }
}

#[test]
fn minimal_fixture_takes_the_defaults() {
    let settings = load_valid("minimal.toml");
    let listen = &settings.listen;
    assert_eq!(listen.addr, "127.0.0.1:4222");
    assert_eq!(listen.auth_timeout, Duration::from_secs(2));
    assert_eq!(listen.max_connections, 65_536);
    assert_eq!(listen.max_control_line, 4096);
    assert_eq!(listen.max_payload, 1_048_576);
    assert_eq!(listen.shutdown_grace, Duration::from_secs(10));
    assert!(!listen.server_name.is_empty());
    assert!(listen.advertise.is_empty());
    assert!(listen.tls.is_none());

    let upstream = &settings.upstream;
    assert_eq!(upstream.servers.len(), 1);
    assert_eq!(upstream.servers[0].url, "nats://127.0.0.1:4223");
    assert_eq!(upstream.connect_timeout, Duration::from_secs(2));
    match &upstream.credential {
        Credential::UserPassword { user, password } => {
            assert_eq!(user, "gate");
            assert_eq!(password.expose(), "s3cret");
        }
        other => panic!("unexpected credential {other:?}"),
    }
    assert!(upstream.accounts.is_empty());
    assert!(upstream.tls.is_none());

    assert!(settings.jwt.is_none());
    assert!(settings.metrics.is_none());
    assert_eq!(settings.users.len(), 1);
    assert_eq!(settings.users[0].nkey, SVC_A);
    assert_eq!(settings.users[0].name, None);
    assert_eq!(settings.users[0].permissions, PermissionSpec::default());
    assert_eq!(settings.log.level, "info");
    assert_eq!(settings.log.format, LogFormat::Text);
    assert!(
        !settings.jetstream.guard,
        "the JetStream guard is off by default"
    );
    assert!(settings.jetstream.filter_listing);
    assert_eq!(settings.policy, PolicySettings::default());
    assert!(
        settings.policy.enforce,
        "permissions are enforced by default"
    );
    assert_eq!(settings.base_dir, fixtures().join("valid"));
}

#[test]
fn full_fixture_sets_everything() {
    let settings = load_valid("full.toml");
    let valid = fixtures().join("valid");
    let listen = &settings.listen;
    assert_eq!(listen.auth_timeout, Duration::from_millis(500));
    assert_eq!(listen.max_connections, 100);
    assert_eq!(listen.max_control_line, 8192);
    assert_eq!(listen.max_payload, 65_536);
    assert_eq!(listen.shutdown_grace, Duration::from_secs(60));
    assert_eq!(listen.server_name, "natsgate-1");
    assert_eq!(listen.advertise.len(), 2);
    let tls = listen.tls.as_ref().expect("listen.tls");
    assert_eq!(tls.cert_file, fixtures().join("keys/tls/server.pem"));
    assert!(tls.ca_file.is_some() && tls.handshake_first);

    let upstream = &settings.upstream;
    let urls: Vec<&str> = upstream.servers.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "nats://127.0.0.1:4223",
            "tls://nats.internal:4443",
            "nats://backup:5222",
            "nats://nats-3:4222"
        ]
    );
    assert!(upstream.servers[1].tls);
    assert_eq!(upstream.connect_timeout, Duration::from_secs(3));
    assert_eq!(
        upstream.credential.describe(),
        format!("nkey ({UPSTREAM_GATE})")
    );
    let kinds: Vec<(&str, &str)> = upstream
        .accounts
        .iter()
        .map(|a| (a.account.as_str(), a.credential.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("APP", "creds"),
            (
                "AD4U5VPHQBALHBEK2Z5K2DXACF6MMOY6AOSDNTRRW2KT2MCRRXTEITUF",
                "token"
            ),
            ("OPS", "user/password"),
        ]
    );
    match &upstream.accounts[0].credential {
        Credential::Creds { jwt, seed } => {
            assert_eq!(jwt.split('.').count(), 3);
            assert!(seed.expose().starts_with("SU"));
        }
        other => panic!("unexpected credential {other:?}"),
    }
    let upstream_tls = upstream.tls.as_ref().expect("upstream.tls");
    assert_eq!(upstream_tls.server_name.as_deref(), Some("nats.internal"));
    assert!(upstream_tls.cert_file.is_some() && upstream_tls.key_file.is_some());

    let jwt = settings.jwt.as_ref().expect("jwt");
    assert_eq!(jwt.operators, [valid.join("jwt/operator.jwt")]);
    assert_eq!(jwt.accounts_dir, Some(valid.join("jwt/accounts")));
    assert_eq!(jwt.accounts, [valid.join("jwt/APP.jwt")]);

    let svc_a = &settings.users[0];
    assert_eq!(svc_a.name.as_deref(), Some("svc-a"));
    assert_eq!(svc_a.account.as_deref(), Some("APP"));
    assert_eq!(
        svc_a.permissions,
        PermissionSpec {
            publish: Some(SubjectRules {
                allow: Some(vec!["orders.>".into()]),
                deny: vec!["orders.secret".into()],
            }),
            subscribe: Some(SubjectRules {
                allow: Some(vec!["_INBOX.>".into(), "orders.* workers".into()]),
                deny: vec![],
            }),
            responses: Some(ResponseSpec::DEFAULT),
        }
    );
    assert_eq!(settings.users[1].nkey, SVC_B);
    assert_eq!(settings.metrics.as_ref().unwrap().addr, "127.0.0.1:7777");
    assert_eq!(settings.log.level, "debug");
    assert_eq!(settings.log.format, LogFormat::Json);
    assert!(settings.jetstream.guard);
    assert!(!settings.jetstream.filter_listing);
    assert!(!settings.policy.enforce);
    assert_eq!(settings.policy.report_only_users, ["svc-b"]);
    assert_eq!(settings.policy.report_only_accounts.len(), 2);
}

#[test]
fn report_only_by_deployment_account_or_user() {
    let policy = PolicySettings {
        enforce: true,
        report_only_accounts: vec!["APP".into(), "AKEY".into()],
        report_only_users: vec!["watched".into(), "UKEY".into()],
    };
    assert!(!policy.report_only("U1", "svc", "OTHER", "AOTHER"));
    assert!(policy.report_only("U1", "watched", "OTHER", ""));
    assert!(policy.report_only("UKEY", "", "", ""));
    assert!(policy.report_only("U1", "svc", "APP", ""));
    assert!(policy.report_only("U1", "svc", "x", "AKEY"));
    // Empty names never match.
    let blank = PolicySettings {
        report_only_users: vec!["svc".into()],
        ..PolicySettings::default()
    };
    assert!(!blank.report_only("U1", "", "", ""));
    let off = PolicySettings {
        enforce: false,
        ..PolicySettings::default()
    };
    assert!(off.report_only("U1", "svc", "", ""));
}

#[test]
fn permission_forms_map_like_nats_server() {
    let settings = load_valid("permission-forms.toml");
    assert_eq!(
        settings.users[0].permissions,
        PermissionSpec {
            publish: Some(SubjectRules {
                allow: Some(vec!["orders.>".into()]),
                deny: vec![],
            }),
            subscribe: Some(SubjectRules {
                allow: Some(vec!["_INBOX.>".into(), "orders.new workers".into()]),
                deny: vec![],
            }),
            responses: Some(ResponseSpec {
                max: 2,
                ttl_nanos: 60_000_000_000,
            }),
        }
    );
    assert_eq!(
        settings.users[1].permissions,
        PermissionSpec {
            publish: Some(SubjectRules {
                allow: None,
                deny: vec!["secret.>".into()],
            }),
            // An empty allow list in nats-server's config is no allow list.
            subscribe: Some(SubjectRules {
                allow: None,
                deny: vec![],
            }),
            responses: None,
        }
    );
}

#[test]
fn jwt_only_fixture() {
    let settings = load_valid("jwt-only.toml");
    assert!(settings.users.is_empty());
    assert_eq!(settings.log.level, "warn");
    assert_eq!(
        settings.upstream.credential.describe(),
        format!("creds ({CREDS_USER})")
    );
}

#[test]
fn websocket_fixture_sets_everything() {
    let s = load_valid("websocket.toml");
    let ws = s.websocket.expect("[websocket]");
    assert_eq!(ws.addr, "127.0.0.1:8443");
    let tls = ws.tls.expect("[websocket.tls]");
    assert!(tls.cert_file.ends_with("keys/tls/server.pem"));
    assert!(tls.ca_file.is_some());
    assert_eq!(ws.allowed_origins.len(), 2);
    assert!(ws.same_origin && ws.compression);
    assert_eq!(ws.handshake_timeout, Duration::from_secs(5));
    assert_eq!(
        ws.trusted_proxies,
        vec![
            "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
            "192.168.1.7/32".parse().unwrap()
        ]
    );
}

#[test]
fn websocket_defaults() {
    let users = format!(
        "[websocket]\naddr = \"127.0.0.1:0\"\nno_tls = true\n\n[[users]]\nnkey = \"{SVC_A}\"\n"
    );
    let ws = inline(&users).unwrap().websocket.unwrap();
    assert!(ws.tls.is_none());
    assert!(ws.allowed_origins.is_empty() && !ws.same_origin && !ws.compression);
    assert_eq!(ws.handshake_timeout, DEFAULT_WS_HANDSHAKE_TIMEOUT);
    assert!(ws.trusted_proxies.is_empty());
    let without = format!("[[users]]\nnkey = \"{SVC_A}\"\n");
    assert!(inline(&without).unwrap().websocket.is_none());
}

#[test]
fn kv_fixture_names_the_bucket_and_takes_the_defaults() {
    let settings = load_valid("jwt-kv.toml");
    let jwt = settings.jwt.expect("[jwt] is set");
    assert_eq!(jwt.accounts_dir, None);
    assert!(jwt.allow_delete);
    let kv = jwt.kv.expect("[jwt.kv] is set");
    assert_eq!(kv.bucket, "natsgate-accounts");
    assert_eq!(kv.replicas, 3);
    assert!(kv.create, "create defaults to true");
    let minimal = load_valid("jwt-only.toml").jwt.expect("[jwt] is set");
    assert_eq!(minimal.kv, None);
    assert!(!minimal.allow_delete, "allow_delete defaults to false");
}

// === inline configs ===

#[test]
fn allow_responses_table_defaults_to_zero() {
    let settings = inline(&format!(
        "[[users]]\nnkey = \"{SVC_A}\"\n[users.permissions]\nallow_responses = {{ max = -1 }}\n"
    ))
    .unwrap();
    assert_eq!(
        settings.users[0].permissions.responses,
        Some(ResponseSpec {
            max: -1,
            ttl_nanos: 0
        })
    );
}

#[test]
fn inline_errors_name_the_inline_config() {
    let err = inline("[[users]]\nnkey = \"nope\"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "<inline config>: users[0].nkey: \"nope\" is not a user public key (56 characters starting with U)"
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let err = inline(&format!("[[users]]\nnkey = \"{SVC_A}\"\nnmae = \"x\"\n")).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("<inline config>:11:1: unknown field `nmae`"),
        "{message}"
    );
}

#[test]
fn secrets_are_masked_in_debug_output() {
    let settings = inline(&format!("[[users]]\nnkey = \"{SVC_A}\"\n")).unwrap();
    let debug = format!("{settings:?}");
    assert!(!debug.contains("pw-do-not-print"), "{debug}");
    assert!(debug.contains("MASKED"));

    let settings = load_valid("full.toml");
    let debug = format!("{settings:?}");
    for secret in ["t0ken", "ops-s3cret", "SU"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
}

#[test]
fn syntax_errors_do_not_echo_values() {
    // A password of the wrong type: the error names the key, not the value.
    let text = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nservers = [\"h\"]\n\
                user = \"gate\"\npassword = 123456789\n";
    let message = Settings::from_toml_str(text, Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(message.contains("password"), "{message}");
    assert!(!message.contains("123456789"), "{message}");
}

#[test]
fn jetstream_guard_switches() {
    let base = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nservers = [\"h\"]\nuser = \"u\"\npassword = \"p\"\n\
         [[users]]\nnkey = \"{SVC_A}\"\n"
    );
    let load = |table: &str| {
        Settings::from_toml_str(&format!("{base}[jetstream]\n{table}"), Path::new("."))
    };
    let js = load(
        "guard = true\nguard_users = [\"bob\"]\nexempt_users = [\"ann\"]\n\
         guard_accounts = [\"APP\"]\nexempt_accounts = [\"OPS\"]",
    )
    .unwrap()
    .jetstream;
    // (user key, user name, account, account key) → guarded
    let cases = [
        (("UX", "carl", "", ""), true),
        (("UX", "ann", "APP", ""), false),
        (("UX", "bob", "OPS", ""), true),
        (("UX", "carl", "OPS", ""), false),
        (("UX", "carl", "APP", ""), true),
        (("ann", "", "", ""), false),
    ];
    for ((key, name, account, account_key), want) in cases {
        assert_eq!(
            js.guards(key, name, account, account_key),
            want,
            "{name} {account}"
        );
    }
    let off = load("guard_accounts = [\"APP\"]").unwrap().jetstream;
    assert!(!off.guards("UX", "carl", "OPS", ""));
    assert!(off.guards("UX", "carl", "", "APP"));
    let both = load("exempt_users = [\"bob\"]\nguard_users = [\"bob\"]").unwrap_err();
    assert!(
        both.to_string().contains("both guarded and exempt"),
        "{both}"
    );
    let blank = load("exempt_accounts = [\" APP\"]").unwrap_err();
    assert!(
        blank.to_string().contains("jetstream.exempt_accounts"),
        "{blank}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let path = fixtures().join("does-not-exist.toml");
    let message = Settings::load(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );
    assert!(message.contains("cannot read"), "{message}");
}

// === .creds parsing ===

#[test]
fn parses_the_creds_fixture() {
    let text = std::fs::read_to_string(fixtures().join("keys/upstream-gate.creds")).unwrap();
    let (jwt, seed) = parse_creds(&text).unwrap();
    assert!(jwt.starts_with("eyJ") && jwt.split('.').count() == 3);
    let key_pair = nkeys::KeyPair::from_seed(&seed).unwrap();
    assert_eq!(key_pair.public_key(), CREDS_USER);

    // Windows line endings and no trailing newline after the END line.
    let crlf = text.replace('\n', "\r\n");
    assert_eq!(parse_creds(&crlf).unwrap(), (jwt.clone(), seed.clone()));
    let bare = format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------"
    );
    assert_eq!(parse_creds(&bare).unwrap(), (jwt, seed));
}

#[test]
fn rejects_broken_creds() {
    assert_eq!(parse_creds(""), Err(CredsError::MissingJwt));
    let jwt_only = std::fs::read_to_string(fixtures().join("keys/jwt-only.creds")).unwrap();
    assert_eq!(parse_creds(&jwt_only), Err(CredsError::MissingSeed));
    let account_seed = nkeys::KeyPair::new_account().seed().unwrap();
    let wrong_kind = format!(
        "-----BEGIN NATS USER JWT-----\na.b.c\n------END NATS USER JWT------\n\
         -----BEGIN USER NKEY SEED-----\n{account_seed}\n------END USER NKEY SEED------\n"
    );
    assert_eq!(
        parse_creds(&wrong_kind),
        Err(CredsError::NotUserSeed("account"))
    );
    let not_a_jwt = wrong_kind.replace("a.b.c", "abc");
    assert_eq!(parse_creds(&not_a_jwt), Err(CredsError::MalformedJwt));
}

#[test]
fn seed_files_bare_or_decorated() {
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    assert_eq!(parse_seed_file(&seed).unwrap(), seed);
    assert_eq!(parse_seed_file(&format!("\n  {seed}  \n")).unwrap(), seed);
    let decorated =
        format!("-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n");
    assert_eq!(parse_seed_file(&decorated).unwrap(), seed);
    let creds = std::fs::read_to_string(fixtures().join("keys/upstream-gate.creds")).unwrap();
    assert!(parse_seed_file(&creds).unwrap().starts_with("SU"));
    assert!(parse_seed_file("hello").is_err());
}

#[test]
fn limits_advisories_and_user_series() {
    let user = format!("[[users]]\nnkey = \"{SVC_B}\"\n");
    let settings = inline(&format!(
        "{user}[limits]\nclose_after = \"30s\"\n\
         [[limits.users]]\nuser = \"svc-a\"\nmsgs_per_second = 1000\nmax_connections = 2\n\
         [[limits.users]]\nuser = \"*\"\nbytes_per_second = 4096\nburst_bytes = 8192\n\
         [[limits.accounts]]\naccount = \"APP\"\nmsgs_per_second = 50\n\
         [advisories]\nsubject = \"natsgate.adv\"\n"
    ))
    .unwrap();
    let limits = &settings.limits;
    assert_eq!(limits.close_after, Some(Duration::from_secs(30)));
    let own = limits.for_user("UX", "svc-a").unwrap();
    assert_eq!(own.rate.msgs_per_second, Some(1000));
    assert_eq!(own.max_connections, Some(2));
    let any = limits.for_user("UY", "other").unwrap();
    assert_eq!(any.user, "*");
    assert_eq!(any.rate.burst_bytes, Some(8192));
    assert_eq!(
        limits.for_account("APP", "").unwrap().rate.msgs_per_second,
        Some(50)
    );
    assert!(limits.for_account("OTHER", "AKEY").is_none());
    let advisories = settings.advisories.unwrap();
    assert_eq!(advisories.subject, "natsgate.adv");
    assert_eq!(advisories.max_per_second, DEFAULT_ADVISORY_RATE);

    for (bad, key) in [
        (
            "[[limits.users]]\nuser = \"a\"\nmsgs_per_second = 0\n",
            "msgs_per_second",
        ),
        (
            "[[limits.users]]\nuser = \"a\"\nburst_msgs = 5\n",
            "burst_msgs",
        ),
        ("[[limits.users]]\nuser = \" a\"\n", "limits.users[0].user"),
        (
            "[[limits.accounts]]\naccount = \"A\"\n[[limits.accounts]]\naccount = \"A\"\n",
            "listed twice",
        ),
        ("[limits]\nclose_after = \"0s\"\n", "close_after"),
        ("[limits]\nrate = 5\n", "rate"),
        ("[advisories]\nsubject = \"a.>\"\n", "advisories.subject"),
        (
            "[advisories]\nsubject = \"a\"\nmax_per_second = 0\n",
            "max_per_second",
        ),
    ] {
        let error = inline(&format!("{user}{bad}")).unwrap_err().to_string();
        assert!(error.contains(key), "{bad:?}: {error}");
    }
}
