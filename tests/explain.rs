//! `natsgate explain` and `GET /explain`:
//! - the explanation against the relay's own check for thousands of random
//!   permission sets and subjects (the differential generator's strategies);
//! - the binary's `explain` for static users, JWT users with a scoped
//!   signing key template and with the account's `default_permissions`,
//!   and bad input (stdout and exit status);
//! - `GET /explain` on the metrics port of the running binary.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use natsgate::permissions::explain::{Request, Rule, explain};
use natsgate::permissions::{
    Authorizer, PermissionSpec, Permissions, PublishDecision, ResponseSpec, SubjectRules,
};
use proptest::prelude::*;
use proptest::sample::select;

use support::diff::{self, Lists};
use support::jwt;

// === the differential check ===

/// One random case: a user's permissions and one PUB or SUB.
#[derive(Clone, Debug)]
struct Case {
    publish: Lists,
    subscribe: Lists,
    responses: bool,
    system_account: bool,
    op: Op,
}

#[derive(Clone, Debug)]
enum Op {
    Pub {
        subject: String,
        reply: Option<String>,
    },
    Sub {
        subject: String,
        queue: Option<String>,
    },
}

fn case() -> impl Strategy<Value = Case> {
    let queue = prop_oneof![
        6 => Just(None),
        4 => select(vec!["q", "g.1", "g.*", "g.>", "g", "_sys_", "r", ""]).prop_map(|s| Some(s.to_owned())),
    ];
    let op = prop_oneof![
        (diff::pub_subject(), diff::user_reply())
            .prop_map(|(subject, reply)| Op::Pub { subject, reply }),
        (diff::sub_subject(), queue).prop_map(|(subject, queue)| Op::Sub { subject, queue }),
    ];
    (
        diff::lists(diff::perm_subject().boxed(), true),
        diff::lists(diff::sub_entry().boxed(), true),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
        op,
    )
        .prop_map(|(publish, subscribe, responses, system_account, op)| Case {
            publish,
            subscribe,
            responses,
            system_account,
            op,
        })
}

/// `#pa3` / `#sa1` markers (see `diff::pub_subject`) become one of the
/// user's own entries, so that entries match often.
fn resolve(marker: &str, lists: &Lists) -> String {
    let Some(k) = marker
        .strip_prefix("#pa")
        .or_else(|| marker.strip_prefix("#sa"))
        .and_then(|k| k.parse::<usize>().ok())
    else {
        return marker.to_owned();
    };
    let entries: Vec<&String> = lists.allow.iter().flatten().chain(&lists.deny).collect();
    match entries.get(k % entries.len().max(1)) {
        Some(entry) => entry.split_whitespace().next().unwrap_or("a").to_owned(),
        None => "a".to_owned(),
    }
}

fn rules(lists: &Lists) -> Option<SubjectRules> {
    (!lists.is_empty()).then(|| SubjectRules {
        allow: lists.allow.clone(),
        deny: lists.deny.clone(),
    })
}

#[test]
fn explain_decides_as_the_relay_on_random_permission_sets() {
    let n = diff::env_usize("NATSGATE_EXPLAIN_CASES", 5000);
    let cases = diff::generate_cases(case(), "NATSGATE_EXPLAIN_SEED", 16, n);
    let (mut allowed, mut denied) = (0, 0);
    let mut kinds = std::collections::BTreeSet::new();
    for case in &cases {
        let spec = PermissionSpec {
            publish: rules(&case.publish),
            subscribe: rules(&case.subscribe),
            responses: case.responses.then_some(ResponseSpec::DEFAULT),
        };
        // The relay's check: a fresh Authorizer, as a session has at login.
        let mut relay = Authorizer::new(Arc::new(Permissions::compile(&spec)), case.system_account);
        let (explained, relay_allowed, relay_error, lists) = match &case.op {
            Op::Pub { subject, reply } => {
                let subject = resolve(subject, &case.publish);
                let decision = relay.check_publish(
                    subject.as_bytes(),
                    reply.as_deref().map(str::as_bytes),
                    std::time::Instant::now(),
                );
                let error = match decision {
                    PublishDecision::Allow => None,
                    PublishDecision::DenySubject => Some(format!(
                        "-ERR 'Permissions Violation for Publish to {:?}'",
                        subject
                    )),
                    PublishDecision::DenyReply => Some(format!(
                        "-ERR 'Permissions Violation for Publish with Reply of {:?}'",
                        reply.as_deref().unwrap_or_default()
                    )),
                };
                let explained = explain(
                    &spec,
                    case.system_account,
                    Request::Publish {
                        subject: subject.as_bytes(),
                        reply: reply.as_deref().map(str::as_bytes),
                    },
                );
                (
                    explained,
                    decision == PublishDecision::Allow,
                    error,
                    &case.publish,
                )
            }
            Op::Sub { subject, queue } => {
                let subject = resolve(subject, &case.subscribe);
                let queue = queue.as_deref().filter(|q| !q.is_empty());
                let ok = relay.check_subscribe(subject.as_bytes(), queue.map(str::as_bytes));
                let error = (!ok).then(|| match queue {
                    Some(q) => format!(
                        "-ERR 'Permissions Violation for Subscription to {subject:?} using queue {q:?}'"
                    ),
                    None => format!("-ERR 'Permissions Violation for Subscription to {subject:?}'"),
                });
                let explained = explain(
                    &spec,
                    case.system_account,
                    Request::Subscribe {
                        subject: subject.as_bytes(),
                        queue: queue.map(str::as_bytes),
                    },
                );
                (explained, ok, error, &case.subscribe)
            }
        };
        let context = format!("{case:#?}\n{explained:#?}");
        assert_eq!(
            explained.allowed, relay_allowed,
            "decision differs: {context}"
        );
        assert_eq!(
            explained.rule.allows(),
            relay_allowed,
            "the rule named does not decide that way: {context}"
        );
        // Subjects here are plain ASCII, so Go quoting is Rust's.
        assert_eq!(explained.error, relay_error, "{context}");
        // A rule that names entries names entries of the user's lists.
        let named = explained.rule.entries();
        let from = match &explained.rule {
            Rule::AllowEntry(_) | Rule::QueueNotAllowed(_) | Rule::OnlyQueueEntries(_) => {
                lists.allow.clone().unwrap_or_default()
            }
            Rule::DenyEntry(_) | Rule::QueueDenyEntry(_) => lists.deny.clone(),
            _ => named.clone(),
        };
        assert!(
            !named.is_empty()
                || !matches!(explained.rule, Rule::AllowEntry(_) | Rule::DenyEntry(_)),
            "{context}"
        );
        for entry in &named {
            assert!(
                from.contains(entry),
                "{entry:?} is not in the list the rule names: {context}"
            );
        }
        if relay_allowed {
            allowed += 1;
        } else {
            denied += 1;
        }
        kinds.insert(explained.rule.kind());
    }
    // The generator must exercise both outcomes and most rules.
    assert!(
        allowed > n / 10 && denied > n / 10,
        "{allowed} allowed, {denied} denied"
    );
    for kind in [
        "allow_entry",
        "deny_entry",
        "no_allow_entry",
        "no_allow_list",
        "empty_allow_list",
        "gateway_prefix",
        "reserved_reply",
        "responses_only",
        "queue_not_allowed",
        "only_queue_entries",
        "queue_deny_entry",
        "system_queue",
        "no_publish_rules",
        "no_subscribe_rules",
    ] {
        assert!(
            kinds.contains(kind),
            "no case was decided by {kind}: {kinds:?}"
        );
    }
}

// === the binary ===

/// A config with static users and the JWT accounts of [`jwt_setup`].
struct Setup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    alice_creds: std::path::PathBuf,
    plain_creds: std::path::PathBuf,
    revoked_creds: std::path::PathBuf,
    jwt_only_key: String,
}

const STATIC_USERS: &str = r#"
[[users]]
nkey = "UCNBBV6JFYCQ6LROLGH5CKAECPXEJR3KS5HZQIMR5OHMVKTIJBV6DBIM"
name = "svc-a"
account = "APP"
[users.permissions]
publish = { allow = ["orders.>"], deny = ["orders.secret"] }
subscribe = { allow = ["orders.>", "jobs.> workers"], deny = ["orders.audit.>"] }
allow_responses = true

[[users]]
nkey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
name = "free"
"#;

fn setup(extra: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let op = jwt::operator("OP", false, None);
    let account = nkeys::KeyPair::new_account();
    let scope_key = nkeys::KeyPair::new_account();
    let mut template = jwt::UserPermissionLimits::unlimited();
    template.publish.allow = vec!["{{name()}}.>".into()];
    template.subscribe.allow = vec!["_INBOX.>".into()];
    let mut claims = jwt::account_claims(&account, "APP");
    claims.nats.signing_keys = vec![jwt::scope(&scope_key, "team", template)];
    claims.nats.default_permissions.publish.allow = vec!["default.>".into()];
    let revoked = nkeys::KeyPair::new_user();
    claims
        .nats
        .revocations
        .insert(revoked.public_key(), jwt::unix_now() + 60);
    let accounts = dir.path().join("accounts");
    std::fs::create_dir(&accounts).unwrap();
    std::fs::write(
        accounts.join(format!("{}.jwt", account.public_key())),
        jwt::sign_account(&claims, &op.kp),
    )
    .unwrap();
    std::fs::write(dir.path().join("operator.jwt"), &op.jwt).unwrap();

    let alice = nkeys::KeyPair::new_user();
    let alice_jwt = jwt::sign_user(
        &jwt::scoped_user_claims(&alice, "alice", &account.public_key()),
        &scope_key,
    );
    let plain = nkeys::KeyPair::new_user();
    let plain_jwt = jwt::sign_user(&jwt::user_claims(&plain, "plain"), &account);
    let revoked_jwt = jwt::sign_user(&jwt::user_claims(&revoked, "gone"), &account);
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let alice_creds = write("alice.creds", jwt::creds(&alice_jwt, &alice));
    let plain_creds = write("plain.creds", jwt::creds(&plain_jwt, &plain));
    let revoked_creds = write("revoked.creds", jwt::creds(&revoked_jwt, &revoked));
    let config = write(
        "natsgate.toml",
        format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n\n[upstream]\nservers = [\"nats://127.0.0.1:1\"]\n\
             user = \"gate\"\npassword = \"pw\"\n\n[jwt]\noperators = [\"operator.jwt\"]\n\
             accounts_dir = \"accounts\"\n{STATIC_USERS}\n{extra}"
        ),
    );
    Setup {
        dir,
        config,
        alice_creds,
        plain_creds,
        revoked_creds,
        jwt_only_key: plain.public_key(),
    }
}

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_natsgate"))
        .arg("explain")
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run natsgate explain")
}

/// Runs `explain` and checks its exit status; returns stdout + stderr.
fn expect(config: &Path, args: &[&str], status: i32) -> String {
    let out = run(config, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(status), "explain {args:?}:\n{text}");
    text
}

#[test]
fn the_binary_explains_static_users() {
    let s = setup("");
    let c = &s.config;
    let out = expect(c, &["--user", "svc-a", "pub", "orders.new"], 0);
    assert!(
        out.starts_with("allowed: publish to \"orders.new\"\n"),
        "{out}"
    );
    assert!(
        out.contains("rule: allow entry \"orders.>\" matched, no deny entry matched\n"),
        "{out}"
    );
    assert!(
        out.contains("permissions: the [[users]] entry in the config"),
        "{out}"
    );

    let key = "UCNBBV6JFYCQ6LROLGH5CKAECPXEJR3KS5HZQIMR5OHMVKTIJBV6DBIM";
    let out = expect(
        c,
        &["--user", key, "pub", "orders.secret", "--reply", "_INBOX.x"],
        1,
    );
    assert!(
        out.starts_with("denied: publish to \"orders.secret\""),
        "{out}"
    );
    assert!(
        out.contains("rule: deny entry \"orders.secret\" matched\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "client gets: -ERR 'Permissions Violation for Publish to \"orders.secret\"'\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("the response table is empty at explain time"),
        "{out}"
    );

    let out = expect(c, &["--user", "svc-a", "sub", "jobs.a", "others"], 1);
    assert!(out.contains("none allows this queue"), "{out}");
    assert!(out.contains("using queue \"others\"'"), "{out}");
    expect(c, &["--user", "svc-a", "sub", "jobs.a", "workers"], 0);
    let out = expect(c, &["--user", "svc-a", "sub", "orders.audit.x"], 1);
    assert!(
        out.contains("rule: deny entry \"orders.audit.>\" matched"),
        "{out}"
    );
    let out = expect(c, &["--user", "svc-a", "sub", "orders.>"], 0);
    assert!(out.contains("arms the delivery filter"), "{out}");

    // Unrestricted users still meet the reserved prefixes.
    let out = expect(c, &["--user", "free", "pub", "_GR_.x.y"], 1);
    assert!(out.contains("gateway reply prefix \"_GR_.\""), "{out}");
    let out = expect(c, &["--user", "free", "pub", "$NRG.x"], 1);
    assert!(
        out.contains("\"$NRG.\" outside the system account"),
        "{out}"
    );
    let out = expect(c, &["--user", "free", "pub", "a", "--reply", "_R_.x"], 1);
    assert!(out.contains("reserved prefix \"_R_.\""), "{out}");
    let out = expect(c, &["--user", "free", "sub", "a", "_sys_"], 1);
    assert!(out.contains("queue group \"_sys_\""), "{out}");
    expect(c, &["--user", "free", "sub", "a", "q"], 0);
}

#[test]
fn the_binary_explains_jwt_users_as_login_resolves_them() {
    let s = setup("");
    let c = &s.config;
    let alice = s.alice_creds.to_str().unwrap();
    let out = expect(c, &["--user", alice, "pub", "alice.x"], 0);
    assert!(
        out.contains("rule: allow entry \"alice.>\" matched"),
        "{out}"
    );
    assert!(out.contains("the template of scoped signing key"), "{out}");
    assert!(out.contains("(role \"team\")"), "{out}");
    assert!(
        out.contains("allow [\"{{name()}}.>\"]"),
        "the template before expansion: {out}"
    );
    assert!(out.contains("user: alice U"), "{out}");
    assert!(out.contains("account APP (A"), "{out}");
    let out = expect(c, &["--user", alice, "pub", "bob.x"], 1);
    assert!(out.contains("rule: no allow entry matched"), "{out}");

    let plain = s.plain_creds.to_str().unwrap();
    let out = expect(c, &["--user", plain, "pub", "default.x"], 0);
    assert!(out.contains("the account's default_permissions"), "{out}");
    let out = expect(c, &["--user", plain, "pub", "other"], 1);
    assert!(out.contains("no allow entry matched"), "{out}");

    // A JWT user's key alone says nothing about its permissions.
    let out = expect(c, &["--user", &s.jwt_only_key, "pub", "a"], 2);
    assert!(out.contains(".creds"), "{out}");
    // A revoked user does not log in, so there is nothing to explain.
    let out = expect(
        c,
        &["--user", s.revoked_creds.to_str().unwrap(), "pub", "a"],
        2,
    );
    assert!(out.contains("revoked"), "{out}");
}

#[test]
fn the_binary_refuses_bad_input_with_status_2() {
    let s = setup("");
    let c = &s.config;
    for args in [
        &["--user", "nobody", "pub", "a"][..],
        &["--user", "svc-a", "pub", "a..b"],
        &["--user", "svc-a", "sub", "a.>.b"],
        &["--user", "svc-a", "pub", ""],
        &["--user", "svc-a", "pub", "a", "q"],
        &["--user", "svc-a", "sub", "a", "--reply", "r"],
        &["--user", "svc-a", "publish", "a"],
        &["--user", "svc-a", "pub"],
        &["pub", "a"],
    ] {
        let out = run(c, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed a decision: {out:?}"
        );
    }
    let not_creds = s.dir.path().join("not.creds");
    std::fs::write(&not_creds, "hello").unwrap();
    expect(c, &["--user", not_creds.to_str().unwrap(), "pub", "a"], 2);
    let out = expect(
        &s.dir.path().join("missing.toml"),
        &["--user", "svc-a", "pub", "a"],
        2,
    );
    assert!(out.contains("missing.toml"), "{out}");
}

// === GET /explain ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_explain_answers_the_same_decision_as_json() {
    let s = setup("[metrics]\naddr = \"127.0.0.1:0\"\n");
    let gate = support::process::spawn_gate_binary_at(&s.config, Some("info"));
    let addr = gate.metrics_addr().await;

    let (status, body) = support::http_get(
        addr,
        "/explain?user=svc-a&op=pub&subject=orders.secret&reply=_INBOX.x",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["allowed"], false);
    assert_eq!(json["rule"]["kind"], "deny_entry");
    assert_eq!(json["rule"]["entries"][0], "orders.secret");
    assert_eq!(
        json["error"],
        "-ERR 'Permissions Violation for Publish to \"orders.secret\"'"
    );
    assert_eq!(json["permissions"]["origin"], "config");

    let (status, body) = support::http_get(
        addr,
        "/explain?user=svc-a&op=sub&subject=jobs.a&queue=workers",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (json["allowed"].as_bool(), json["rule"]["kind"].as_str()),
        (Some(true), Some("allow_entry"))
    );

    // A JWT user by its token: the template expanded as at login.
    let creds = std::fs::read_to_string(&s.alice_creds).unwrap();
    let (token, _) = natsgate::config::parse_creds(&creds).unwrap();
    let (status, body) = support::http_get(
        addr,
        &format!("/explain?jwt={token}&op=pub&subject=alice.x"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["allowed"], true);
    assert_eq!(json["permissions"]["origin"], "scoped_signing_key_template");
    assert_eq!(
        json["permissions"]["effective"]["publish"]["allow"][0],
        "alice.>"
    );
    assert_eq!(
        json["permissions"]["template"]["publish"]["allow"][0],
        "{{name()}}.>"
    );

    for bad in [
        "/explain?user=nobody&op=pub&subject=a".to_owned(),
        "/explain?user=svc-a&op=pub&subject=a..b".to_owned(),
        format!("/explain?user={}&op=pub&subject=a", s.jwt_only_key),
        "/explain?user=svc-a&op=put&subject=a".to_owned(),
    ] {
        let (status, body) = support::http_get(addr, &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""), "{bad}: {body}");
    }
    drop(gate);
}
