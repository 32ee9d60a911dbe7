//! Differential test for JWT users: nats-server in operator mode (side D,
//! MEMORY resolver preloaded with the account JWTs) against natsgate (side
//! G, `[jwt]` with the same operator and account files) in front of a plain
//! nats-server that only knows natsgate's `gate` user.
//!
//! Everything is minted up front (one operator, its accounts, one user per
//! case), so each side starts once. Two groups of cases run through the same
//! harness:
//!
//! - generated cases (proptest, fixed seed): permission sets in user JWTs
//!   (pub/sub allow/deny with queue entries, `resp` with max/ttl), for users
//!   signed by the account identity key, by a plain signing key (with
//!   `issuer_account`), by a scoped signing key (the generated set is the
//!   scope's template, with `{{name()}}`, `{{subject()}}`, `{{tag(x)}}`), and
//!   account `default_permissions` for users with none;
//! - fixed login cases: every refusal of spec 2.3 that a client can cause,
//!   each next to an accepted control.
//!
//! Each case: an observer of the same account (no permissions, except in a
//! `default_permissions` account where it has explicit `>` permissions, since
//! a user without any would get the defaults) subscribes to `>`, the user
//! connects with its JWT, and the ops run one at a time with a PING/PONG
//! after every op on both connections. The transcripts (every frame but
//! INFO, including `-ERR` texts and closes) must be equal.
//!
//! Deliberately not generated: a queue subscription of the user whose
//! deliveries natsgate filters while another member exists (spec 4.5); see
//! `queue_delivery_filtered_by_gate_is_lost_for_the_group`.
//!
//! Env knobs: `NATSGATE_JWT_DIFF_CASES` (default 320),
//! `NATSGATE_JWT_DIFF_SEED` (a u64; default fixed).

mod support;

use std::net::SocketAddr;
use std::time::Instant;

use nkeys::KeyPair;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::json;
use support::diff::{
    self, Conn, Lists, Op, describe_ops, env_usize, lists, op_group, perm_subject, resolve_markers,
    run_ops, side_by_side, sub_entry,
};
use support::jwt::{self as j, Permission, ResponsePermission, TimeRange, UserPermissionLimits};
use support::{Frame, Gate, NatsServer, RawClient};

const DEFAULT_CASES: usize = 320;
const DEFAULT_SEED: u64 = 0x6a77_7464_6966_6621; // "jwtdiff!"
const GATE_PASSWORD: &str = "jwt-diff-gate-s3cret";

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

/// One direction's lists as a JWT permission; `allow: None` and an empty
/// list are the same in a JWT.
fn to_jwt(l: &Lists) -> Permission {
    Permission {
        allow: l.allow.clone().unwrap_or_default(),
        deny: l.deny.clone(),
    }
}

#[derive(Clone, Debug, Default)]
struct Perms {
    publish: Lists,
    subscribe: Lists,
    /// `resp`: (max, ttl in nanoseconds); 0 means the server default.
    resp: Option<(i64, i64)>,
}

impl Perms {
    fn apply(&self, l: &mut UserPermissionLimits) {
        l.publish = to_jwt(&self.publish);
        l.subscribe = to_jwt(&self.subscribe);
        l.response = self.resp.map(|(max, ttl)| ResponsePermission { max, ttl });
    }

    fn to_default_permissions(&self) -> j::Permissions {
        j::Permissions {
            publish: to_jwt(&self.publish),
            subscribe: to_jwt(&self.subscribe),
            response: self.resp.map(|(max, ttl)| ResponsePermission { max, ttl }),
        }
    }

    /// Template expansion as the server does it, good enough to aim ops at
    /// the user's effective entries (`tag(x)` takes the first value).
    fn expand(&self, name: &str, subject: &str, tags: &[String]) -> Perms {
        let tag = |x: &str| {
            tags.iter()
                .find_map(|t| t.strip_prefix(&format!("{x}:")).map(str::to_owned))
        };
        let one = |s: &String| -> Option<String> {
            let mut s = s
                .replace("{{name()}}", name)
                .replace("{{subject()}}", subject);
            for x in ["x", "y"] {
                let pat = format!("{{{{tag({x})}}}}");
                if s.contains(&pat) {
                    s = s.replace(&pat, &tag(x)?);
                }
            }
            Some(s)
        };
        let list = |l: &Lists| Lists {
            allow: l.allow.as_ref().map(|a| a.iter().filter_map(one).collect()),
            deny: l.deny.iter().filter_map(one).collect(),
        };
        Perms {
            publish: list(&self.publish),
            subscribe: list(&self.subscribe),
            resp: self.resp,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signer {
    /// The account identity key, no `issuer_account`.
    Identity,
    /// A plain account signing key, `issuer_account` set.
    SigningKey,
    /// A scoped signing key whose template is the case's permissions.
    Scoped,
    /// Identity-signed user without permissions in an account whose
    /// `default_permissions` are the case's permissions.
    Default,
}

/// A generated case. `ops` still holds `#sa`/`#pa`/`#ps` markers; they are
/// resolved against the effective permissions once the user key exists.
#[derive(Clone, Debug)]
struct Case {
    signer: Signer,
    perms: Perms,
    name: String,
    tags: Vec<String>,
    verbose: bool,
    pedantic: bool,
    ops: Vec<Op>,
}

// ---------------------------------------------------------------------------
// Generators (small vocabulary so that overlaps are frequent)
// ---------------------------------------------------------------------------

/// A permission subject for a scope template: sometimes with a template
/// function in place of a token.
fn template_subject() -> impl Strategy<Value = String> {
    let func = select(vec![
        "{{name()}}",
        "{{subject()}}",
        "{{tag(x)}}",
        "{{tag(y)}}",
        "{{Name()}}",
    ]);
    (
        perm_subject(),
        proptest::option::weighted(0.6, (func, 0usize..3)),
    )
        .prop_map(|(s, f)| match f {
            None => s,
            Some((func, pos)) => {
                let mut toks: Vec<String> = s.split('.').map(str::to_owned).collect();
                let i = pos % toks.len();
                if toks[i] == ">" {
                    toks.insert(i, func.to_owned());
                } else {
                    toks[i] = func.to_owned();
                }
                toks.join(".")
            }
        })
}

fn template_sub_entry() -> impl Strategy<Value = String> {
    (
        template_subject(),
        select(vec![None, None, None, None, Some("q"), Some("g.*")]),
    )
        .prop_map(|(s, q)| match q {
            Some(q) => format!("{s} {q}"),
            None => s,
        })
}

const MINUTE_NS: i64 = 60_000_000_000;

fn perms(templated: bool) -> impl Strategy<Value = Perms> {
    let resp = prop_oneof![
        4 => Just(None),
        3 => Just(Some((1i64, 0i64))),
        3 => (select(vec![0i64, 1, 2, 3, -1]), select(vec![0i64, MINUTE_NS, 60 * MINUTE_NS, -1]))
            .prop_map(Some),
    ];
    let (p, s) = if templated {
        (template_subject().boxed(), template_sub_entry().boxed())
    } else {
        (perm_subject().boxed(), sub_entry().boxed())
    };
    (lists(p, false), lists(s, false), resp).prop_map(|(publish, subscribe, resp)| Perms {
        publish,
        subscribe,
        resp,
    })
}

fn signer() -> impl Strategy<Value = Signer> {
    select(vec![
        Signer::Identity,
        Signer::SigningKey,
        Signer::Scoped,
        Signer::Default,
    ])
}

fn case() -> impl Strategy<Value = Case> {
    let tags = proptest::sample::subsequence(vec!["x:a", "x:b", "y:c", "z:a"], 0..=3)
        .prop_map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
    (
        signer(),
        select(vec!["a", "b", "c"]),
        tags,
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.2),
        proptest::collection::vec(op_group(), 2..=9),
    )
        .prop_flat_map(|(signer, name, tags, verbose, pedantic, groups)| {
            perms(signer == Signer::Scoped).prop_map(move |perms| Case {
                signer,
                perms,
                name: name.to_owned(),
                tags: tags.clone(),
                verbose,
                pedantic,
                ops: groups.clone().into_iter().flatten().collect(),
            })
        })
}

/// Deterministic list of cases (fixed seed unless NATSGATE_JWT_DIFF_SEED is set).
fn generate_cases(n: usize) -> Vec<Case> {
    diff::generate_cases(case(), "NATSGATE_JWT_DIFF_SEED", DEFAULT_SEED, n)
}

// ---------------------------------------------------------------------------
// Minting everything up front
// ---------------------------------------------------------------------------

/// How the CONNECT `sig` is made.
enum Sig {
    /// The nonce signed by this key.
    Key(Box<KeyPair>),
    /// No `sig` field.
    Absent,
    /// A `sig` that is not base64.
    Garbage,
}

struct Login {
    jwt: String,
    sig: Sig,
}

/// One case ready to run on both sides.
struct Prepared {
    label: String,
    /// Human-readable JWT setup for failure messages.
    setup: String,
    login: Login,
    /// Index into `World::observers`.
    observer: usize,
    verbose: bool,
    pedantic: bool,
    ops: Vec<Op>,
    /// Fixed login cases: whether nats-server must refuse the login (checked
    /// on side D so that a wrong reading of the spec shows up as such).
    expect_refused: Option<bool>,
}

struct World {
    operator_jwt: String,
    /// Account JWTs for side D's resolver_preload.
    accounts_d: Vec<(String, String)>,
    /// Account JWTs for natsgate's accounts_dir (side D's minus the one
    /// signed by an untrusted operator: natsgate refuses to start with it,
    /// which is its documented choice; nats-server only refuses its users).
    accounts_g: Vec<(String, String)>,
    observers: Vec<Login>,
    cases: Vec<Prepared>,
}

impl World {
    /// Both sides with the same accounts, without observers or cases.
    fn plain(operator_jwt: &str, accounts: Vec<(String, String)>) -> World {
        World {
            operator_jwt: operator_jwt.to_string(),
            accounts_d: accounts.clone(),
            accounts_g: accounts,
            observers: Vec::new(),
            cases: Vec::new(),
        }
    }
}

fn user_login(c: &j::UserClaims, signer: &KeyPair, kp: &KeyPair) -> Login {
    Login {
        jwt: j::sign_user(c, signer),
        sig: Sig::Key(Box::new(KeyPair::from_seed(&kp.seed().unwrap()).unwrap())),
    }
}

/// An account's observer: no permissions, or explicit `>` ones when the
/// account has default permissions.
fn observer_login(account: &KeyPair, explicit: bool) -> Login {
    let kp = KeyPair::new_user();
    let mut c = j::user_claims(&kp, "observer");
    if explicit {
        c.nats.limits.publish.allow = vec![">".into()];
        c.nats.limits.subscribe.allow = vec![">".into()];
    }
    user_login(&c, account, &kp)
}

fn fixed_ops() -> Vec<Op> {
    vec![
        Op::Sub {
            subject: "a".into(),
            queue: None,
            sid: 1,
        },
        Op::ObsPub {
            subject: "a".into(),
            reply: Some("r.x".into()),
        },
        Op::Pub {
            subject: "r.x".into(),
            reply: None,
        },
        Op::Pub {
            subject: "b".into(),
            reply: None,
        },
    ]
}

/// "HH:MM:SS" of `secs` after UTC midnight (mod one day).
fn hms(secs: i64) -> String {
    let s = secs.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn build_world(cases: &[Case]) -> World {
    let op = j::operator("diff", false, None);
    let app = KeyPair::new_account();
    let app_sk = KeyPair::new_account();
    let fixed_scope_key = KeyPair::new_account();
    let mut app_claims = j::account_claims(&app, "APP");
    app_claims.nats.signing_keys = vec![
        j::SigningKey::Plain(app_sk.public_key()),
        j::scope(&fixed_scope_key, "fixed", {
            let mut t = UserPermissionLimits::unlimited();
            t.publish.allow = vec![">".into()];
            t
        }),
    ];
    let mut accounts_d: Vec<(String, String)> = Vec::new();
    let mut observers = vec![observer_login(&app, false)];
    let mut prepared = Vec::new();

    // Generated cases.
    for (i, case) in cases.iter().enumerate() {
        let kp = KeyPair::new_user();
        let mut uc = j::user_claims(&kp, &case.name);
        uc.nats.generic.tags = case.tags.clone();
        let mut observer = 0;
        let (effective, setup, signer) = match case.signer {
            Signer::Identity | Signer::SigningKey => {
                case.perms.apply(&mut uc.nats.limits);
                let signer = if case.signer == Signer::Identity {
                    &app
                } else {
                    uc.nats.issuer_account = app.public_key();
                    &app_sk
                };
                (
                    case.perms.clone(),
                    format!(
                        "{:?}-signed user, JWT nats: {}",
                        case.signer,
                        nats_json(&uc)
                    ),
                    KeyPair::from_seed(&signer.seed().unwrap()).unwrap(),
                )
            }
            Signer::Scoped => {
                let sk = KeyPair::new_account();
                let mut template = UserPermissionLimits::unlimited();
                case.perms.apply(&mut template);
                let scope = j::scope(&sk, &format!("case-{i}"), template.clone());
                app_claims.nats.signing_keys.push(scope);
                uc = j::scoped_user_claims(&kp, &case.name, &app.public_key());
                uc.nats.generic.tags = case.tags.clone();
                (
                    case.perms.expand(&case.name, &kp.public_key(), &case.tags),
                    format!(
                        "scoped user (name {:?}, tags {:?}), template: {}",
                        case.name,
                        case.tags,
                        serde_json::to_string(&template).unwrap()
                    ),
                    sk,
                )
            }
            Signer::Default => {
                let acc = KeyPair::new_account();
                let mut ac = j::account_claims(&acc, &format!("DEF{i}"));
                ac.nats.default_permissions = case.perms.to_default_permissions();
                accounts_d.push((acc.public_key(), j::sign_account(&ac, &op.signing)));
                observers.push(observer_login(&acc, true));
                observer = observers.len() - 1;
                (
                    case.perms.clone(),
                    format!(
                        "user without permissions, account default_permissions: {}",
                        serde_json::to_string(&ac.nats.default_permissions).unwrap()
                    ),
                    acc,
                )
            }
        };
        prepared.push(Prepared {
            label: format!("generated case {i}"),
            setup,
            login: user_login(&uc, &signer, &kp),
            observer,
            verbose: case.verbose,
            pedantic: case.pedantic,
            ops: resolve_markers(&effective.publish, &effective.subscribe, case.ops.clone()),
            expect_refused: None,
        });
    }

    // Fixed login cases.
    let now = j::unix_now();
    let mut fixed: Vec<(String, Login, usize, bool)> = Vec::new();
    let mut add = |label: &str, login: Login, observer: usize, refused: bool| {
        fixed.push((label.to_owned(), login, observer, refused));
    };
    let plain = |name: &str| {
        let kp = KeyPair::new_user();
        (j::user_claims(&kp, name), kp)
    };
    let (c, kp) = plain("identity");
    add("identity-signed user", user_login(&c, &app, &kp), 0, false);
    let (mut c, kp) = plain("sk");
    c.nats.issuer_account = app.public_key();
    add(
        "signing-key user with issuer_account",
        user_login(&c, &app_sk, &kp),
        0,
        false,
    );
    let (mut c, kp) = plain("id-ia");
    c.nats.issuer_account = app.public_key();
    add(
        "identity-signed user with issuer_account = its account",
        user_login(&c, &app, &kp),
        0,
        false,
    );
    let (c, kp) = plain("sk-no-ia");
    add(
        "signing-key user without issuer_account",
        user_login(&c, &app_sk, &kp),
        0,
        true,
    );
    let (c, kp) = plain("badsig");
    add(
        "nonce signed by another key",
        Login {
            jwt: j::sign_user(&c, &app),
            sig: Sig::Key(Box::new(KeyPair::new_user())),
        },
        0,
        true,
    );
    let _ = kp;
    let (c, _kp) = plain("nosig");
    add(
        "no sig",
        Login {
            jwt: j::sign_user(&c, &app),
            sig: Sig::Absent,
        },
        0,
        true,
    );
    let (c, _kp) = plain("garbage");
    add(
        "sig not base64",
        Login {
            jwt: j::sign_user(&c, &app),
            sig: Sig::Garbage,
        },
        0,
        true,
    );
    {
        // A JWT whose signature belongs to another token (tampered payload).
        let (c, kp) = plain("tampered");
        let good = j::sign_user(&c, &app);
        let (mut c2, _) = plain("tampered");
        c2.subject = kp.public_key();
        c2.nats.limits.publish.allow = vec!["x".into()];
        let other = j::sign_user(&c2, &app);
        let mut parts: Vec<&str> = other.split('.').collect();
        parts[2] = good.split('.').nth(2).unwrap();
        add(
            "JWT with a signature over other claims",
            Login {
                jwt: parts.join("."),
                sig: Sig::Key(Box::new(kp)),
            },
            0,
            true,
        );
    }
    {
        let untrusted_op = j::operator("untrusted", false, None);
        let acc = KeyPair::new_account();
        let jwt = j::sign_account(&j::account_claims(&acc, "UNTRUSTED"), &untrusted_op.signing);
        accounts_d.push((acc.public_key(), jwt));
        let (c, kp) = plain("untrusted");
        add(
            "account signed by an untrusted operator",
            user_login(&c, &acc, &kp),
            0,
            true,
        );
    }
    {
        let (mut c, kp) = plain("stranger");
        c.nats.issuer_account = app.public_key();
        add(
            "user signed by a key not in the account",
            user_login(&c, &KeyPair::new_account(), &kp),
            0,
            true,
        );
        let (c, kp) = plain("unknown-acc");
        add(
            "user of an unknown account",
            user_login(&c, &KeyPair::new_account(), &kp),
            0,
            true,
        );
    }
    for (label, exp, nbf, refused) in [
        ("expired (exp = now - 10)", now - 10, 0, true),
        ("exp in one hour", now + 3600, 0, false),
        ("not yet valid (nbf = now + 3600)", 0, now + 3600, true),
        ("nbf in the past", 0, now - 10, false),
    ] {
        let (mut c, kp) = plain("time");
        c.expires = exp;
        c.not_before = nbf;
        add(label, user_login(&c, &app, &kp), 0, refused);
    }
    {
        // Revocations: an entry >= iat revokes; `*` revokes everyone issued before it.
        let acc = KeyPair::new_account();
        let mut ac = j::account_claims(&acc, "REV");
        let (mut c1, k1) = plain("rev-eq");
        c1.issued_at = now - 100;
        let (mut c2, k2) = plain("rev-later");
        c2.issued_at = now - 100;
        let (mut c3, k3) = plain("rev-before");
        c3.issued_at = now - 100;
        ac.nats.revocations.insert(k1.public_key(), now - 100);
        ac.nats.revocations.insert(k2.public_key(), now - 50);
        ac.nats.revocations.insert(k3.public_key(), now - 101);
        accounts_d.push((acc.public_key(), j::sign_account(&ac, &op.signing)));
        observers.push(observer_login(&acc, false));
        let o = observers.len() - 1;
        add("revoked: entry == iat", user_login(&c1, &acc, &k1), o, true);
        add("revoked: entry > iat", user_login(&c2, &acc, &k2), o, true);
        add(
            "not revoked: entry < iat",
            user_login(&c3, &acc, &k3),
            o,
            false,
        );

        let acc = KeyPair::new_account();
        let mut ac = j::account_claims(&acc, "REVALL");
        ac.nats.revocations.insert("*".into(), now - 100);
        accounts_d.push((acc.public_key(), j::sign_account(&ac, &op.signing)));
        observers.push(observer_login(&acc, false));
        let o = observers.len() - 1;
        let (mut c, kp) = plain("old");
        c.issued_at = now - 200;
        add(
            "revoked by *: iat before",
            user_login(&c, &acc, &kp),
            o,
            true,
        );
        let (mut c, kp) = plain("old-eq");
        c.issued_at = now - 100;
        add(
            "revoked by *: iat equal",
            user_login(&c, &acc, &kp),
            o,
            true,
        );
        let (c, kp) = plain("new");
        add(
            "not revoked by *: iat after",
            user_login(&c, &acc, &kp),
            o,
            false,
        );
    }
    for (label, src, refused) in [
        ("src 10.0.0.0/8", vec!["10.0.0.0/8"], true),
        ("src 127.0.0.0/8", vec!["127.0.0.0/8"], false),
        (
            "src 10.0.0.0/8 + 127.0.0.1/32",
            vec!["10.0.0.0/8", "127.0.0.1/32"],
            false,
        ),
    ] {
        let (mut c, kp) = plain("src");
        c.nats.limits.source = src.into_iter().map(str::to_owned).collect();
        add(label, user_login(&c, &app, &kp), 0, refused);
    }
    {
        let day = now.rem_euclid(86_400);
        for (label, start, end, refused) in [
            ("outside times (UTC)", day + 3600, day + 7200, true),
            ("inside times (UTC)", day - 3600, day + 3600, false),
        ] {
            let (mut c, kp) = plain("times");
            c.nats.limits.times = vec![TimeRange {
                start: hms(start),
                end: hms(end),
            }];
            c.nats.limits.times_location = "UTC".into();
            add(label, user_login(&c, &app, &kp), 0, refused);
        }
    }
    {
        let (mut c, _) = plain("bearer");
        c.nats.limits.bearer_token = true;
        add(
            "bearer token without sig",
            Login {
                jwt: j::sign_user(&c, &app),
                sig: Sig::Absent,
            },
            0,
            false,
        );
        add(
            "bearer token with garbage sig",
            Login {
                jwt: j::sign_user(&c, &app),
                sig: Sig::Garbage,
            },
            0,
            false,
        );
        add(
            "bearer token with a wrong sig",
            Login {
                jwt: j::sign_user(&c, &app),
                sig: Sig::Key(Box::new(KeyPair::new_user())),
            },
            0,
            false,
        );
        let acc = KeyPair::new_account();
        let mut ac = j::account_claims(&acc, "NOBEARER");
        ac.nats.limits.disallow_bearer = true;
        accounts_d.push((acc.public_key(), j::sign_account(&ac, &op.signing)));
        observers.push(observer_login(&acc, false));
        let o = observers.len() - 1;
        let (mut c, _) = plain("bearer2");
        c.nats.limits.bearer_token = true;
        add(
            "bearer token, account disallow_bearer",
            Login {
                jwt: j::sign_user(&c, &acc),
                sig: Sig::Absent,
            },
            o,
            true,
        );
        let (c, kp) = plain("nonbearer");
        add(
            "signed user, account disallow_bearer",
            user_login(&c, &acc, &kp),
            o,
            false,
        );
    }
    {
        let kp = KeyPair::new_user();
        let c = j::scoped_user_claims(&kp, "scoped-ok", &app.public_key());
        add(
            "scoped user without permissions",
            user_login(&c, &fixed_scope_key, &kp),
            0,
            false,
        );
        let mut c = j::scoped_user_claims(&kp, "scoped-perms", &app.public_key());
        c.nats.limits.subscribe.allow = vec!["a".into()];
        add(
            "scoped user with own permissions",
            user_login(&c, &fixed_scope_key, &kp),
            0,
            true,
        );
        let mut c = j::scoped_user_claims(&kp, "scoped-limits", &app.public_key());
        c.nats.limits.subs = -1;
        add(
            "scoped user with subs -1 (nsc default)",
            user_login(&c, &fixed_scope_key, &kp),
            0,
            true,
        );
    }
    {
        // Not here: a user JWT without limits (subs 0). nats-server sends
        // `maximum subscriptions exceeded` at registration and closes ~20 ms
        // later (spec 2.2), so the transcript depends on timing.
        let (mut c, kp) = plain("subs1");
        c.nats.limits.subs = 1;
        add("user with subs 1", user_login(&c, &app, &kp), 0, false);
        let (mut c, kp) = plain("badsubj");
        c.nats.limits.publish.allow = vec!["a..b".into()];
        add(
            "invalid permission subject a..b",
            user_login(&c, &app, &kp),
            0,
            true,
        );
        let (mut c, kp) = plain("proxyreq");
        c.nats.limits.proxy_required = true;
        add("proxy_required", user_login(&c, &app, &kp), 0, true);
        let (mut c, kp) = plain("ws");
        c.nats.limits.allowed_connection_types = vec!["WEBSOCKET".into()];
        add(
            "allowed_connection_types [WEBSOCKET]",
            user_login(&c, &app, &kp),
            0,
            true,
        );
        let (mut c, kp) = plain("std");
        c.nats.limits.allowed_connection_types = vec!["standard".into(), "bogus".into()];
        add(
            "allowed_connection_types [standard, bogus]",
            user_login(&c, &app, &kp),
            0,
            false,
        );
    }
    {
        // An account signed by the operator identity key (not strict: trusted).
        let acc = KeyPair::new_account();
        accounts_d.push((
            acc.public_key(),
            j::sign_account(&j::account_claims(&acc, "BYIDENTITY"), &op.kp),
        ));
        observers.push(observer_login(&acc, false));
        let o = observers.len() - 1;
        let (c, kp) = plain("opid");
        add(
            "account signed by the operator identity key",
            user_login(&c, &acc, &kp),
            o,
            false,
        );
    }
    for (label, login, observer, refused) in fixed {
        prepared.push(Prepared {
            label: format!("login case {label:?}"),
            setup: String::new(),
            login,
            observer,
            verbose: true,
            pedantic: false,
            ops: fixed_ops(),
            expect_refused: Some(refused),
        });
    }

    accounts_d.push((app.public_key(), j::sign_account(&app_claims, &op.signing)));
    let untrusted_key = accounts_d
        .iter()
        .find(|(_, jwt)| jwt_payload(jwt).contains("\"UNTRUSTED\""))
        .map(|(k, _)| k.clone())
        .unwrap();
    let accounts_g = accounts_d
        .iter()
        .filter(|(k, _)| *k != untrusted_key)
        .cloned()
        .collect();
    World {
        operator_jwt: op.jwt,
        accounts_d,
        accounts_g,
        observers,
        cases: prepared,
    }
}

fn jwt_payload(jwt: &str) -> String {
    use base64::Engine as _;
    let p = jwt.split('.').nth(1).unwrap_or("");
    String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap_or_default(),
    )
    .unwrap_or_default()
}

fn nats_json(c: &j::UserClaims) -> String {
    serde_json::to_string(&c.nats).unwrap()
}

// ---------------------------------------------------------------------------
// Running one case on one side
// ---------------------------------------------------------------------------

async fn login(c: &mut RawClient, l: &Login, extra: serde_json::Value) {
    match &l.sig {
        Sig::Key(kp) => j::connect_jwt(c, &l.jwt, Some(kp), extra).await,
        Sig::Absent => j::connect_jwt(c, &l.jwt, None, extra).await,
        Sig::Garbage => {
            let mut extra = extra;
            extra["sig"] = json!("!!not*base64!!");
            j::connect_jwt(c, &l.jwt, None, extra).await
        }
    }
}

/// Runs `case` against `addr`; returns the transcript.
async fn run_case(addr: SocketAddr, world: &World, case: &Prepared) -> Vec<String> {
    let mut t = Vec::new();
    let mut obs = Conn::open("O", addr, &mut t).await;
    if let Some(c) = obs.client.as_mut() {
        login(c, &world.observers[case.observer], json!({})).await;
    }
    obs.send(b"SUB > obs\r\n", &mut t).await;
    obs.flush(&mut t).await;
    let mut usr = Conn::open("U", addr, &mut t).await;
    if let Some(c) = usr.client.as_mut() {
        login(
            c,
            &case.login,
            json!({"verbose": case.verbose, "pedantic": case.pedantic}),
        )
        .await;
    }
    usr.flush(&mut t).await;
    run_ops(obs, usr, &case.ops, &mut t).await;
    t
}

fn describe(case: &Prepared) -> String {
    let mut s = format!(
        "{}: verbose={} pedantic={}\n{}\nops:\n",
        case.label, case.verbose, case.pedantic, case.setup
    );
    s.push_str(&describe_ops(&case.ops));
    s
}

fn refused(t: &[String]) -> bool {
    t.iter().any(|l| l == "U: -ERR 'Authorization Violation'")
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

struct Sides {
    direct: NatsServer,
    _upstream: NatsServer,
    gate: Gate,
}

fn start_sides(world: &World) -> Sides {
    let direct = NatsServer::start(&j::server_config(
        &[&world.operator_jwt],
        &world.accounts_d,
        None,
    ));
    let upstream = NatsServer::start(&j::upstream_config(GATE_PASSWORD));
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = j::gate_setup(
        dir.path(),
        &upstream.url(),
        GATE_PASSWORD,
        &[&world.operator_jwt],
        &world.accounts_g,
    );
    let gate = Gate::start_with_dir(&toml, dir);
    Sides {
        direct,
        _upstream: upstream,
        gate,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_differential_direct_vs_gate() {
    let started = Instant::now();
    let cases = generate_cases(env_usize("NATSGATE_JWT_DIFF_CASES", DEFAULT_CASES));
    let world = build_world(&cases);
    let sides = start_sides(&world);
    let (d, g) = (sides.direct.addr(), sides.gate.addr());

    let mut failures = Vec::new();
    let mut spec_failures = Vec::new();
    let mut stats = [0usize; 5]; // errors, oks, msgs, refused logins, scoped refused
    for case in &world.cases {
        let td = run_case(d, &world, case).await;
        let tg = run_case(g, &world, case).await;
        for line in &td {
            stats[0] += line.starts_with("U: -ERR") as usize;
            stats[1] += (line == "U: +OK") as usize;
            stats[2] += line.starts_with("U: MSG") as usize;
        }
        stats[3] += refused(&td) as usize;
        stats[4] += (refused(&td) && case.setup.starts_with("scoped")) as usize;
        if let Some(expect) = case.expect_refused
            && refused(&td) != expect
        {
            spec_failures.push(format!(
                "{}: nats-server {} the login, expected {}\n{}",
                case.label,
                if refused(&td) { "refused" } else { "accepted" },
                if expect { "a refusal" } else { "acceptance" },
                td.join("\n")
            ));
        }
        if td != tg && failures.len() < 8 {
            failures.push(format!(
                "{}\n{}",
                describe(case),
                side_by_side("D (nats-server)", &td, "G (natsgate)", &tg)
            ));
        } else if td != tg {
            failures.push(format!("{} (further difference)", case.label));
        }
    }
    sides.gate.assert_running();
    eprintln!(
        "jwt differential: {} cases ({} generated, {} login cases) in {:?}; side D: errors={} oks={} user msgs={} refused logins={} (scoped refused={})",
        world.cases.len(),
        cases.len(),
        world.cases.len() - cases.len(),
        started.elapsed(),
        stats[0],
        stats[1],
        stats[2],
        stats[3],
        stats[4],
    );
    assert!(
        spec_failures.is_empty(),
        "nats-server contradicts the spec reading of these login cases:\n{}",
        spec_failures.join("\n\n")
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ between nats-server (D) and natsgate (G):\n\n{}",
        failures.len(),
        world.cases.len(),
        failures.join("\n\n")
    );
    // The generator must exercise both outcomes and actually deliver.
    assert!(
        stats[0] > 50 && stats[1] > 50 && stats[2] > 50,
        "weak generator: {stats:?}"
    );
}

/// Spec 4.5, where natsgate cannot match nats-server (so the differential
/// never generates it): user U's queue subscription `secret.* grp` collides
/// with its deny `secret.x`. nats-server filters the delivery per member and
/// then tries the next member of the group, so another member O gets every
/// `secret.x` message, and a requester with no other responder gets a 503.
/// natsgate filters after the upstream already chose U's upstream connection:
/// those messages are lost for the whole group, and no 503 is produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delivery_filtered_by_gate_is_lost_for_the_group() {
    const N: usize = 40;
    let op = j::operator("q", false, None);
    let acc = KeyPair::new_account();
    let accounts = vec![(
        acc.public_key(),
        j::sign_account(&j::account_claims(&acc, "Q"), &op.signing),
    )];
    let ukp = KeyPair::new_user();
    let mut uc = j::user_claims(&ukp, "u");
    uc.nats.limits.subscribe.deny = vec!["secret.x".into()];
    let u = user_login(&uc, &acc, &ukp);
    let other = |name: &str| {
        let kp = KeyPair::new_user();
        user_login(&j::user_claims(&kp, name), &acc, &kp)
    };
    let (o, r) = (other("o"), other("r"));
    let sides = start_sides(&World::plain(&op.jwt, accounts));

    let mut results = Vec::new();
    for addr in [sides.direct.addr(), sides.gate.addr()] {
        let mut uc = RawClient::connect(addr).await;
        login(&mut uc, &u, json!({})).await;
        let mut oc = RawClient::connect(addr).await;
        login(&mut oc, &o, json!({})).await;
        let mut rc = RawClient::connect(addr).await;
        login(&mut rc, &r, json!({"headers": true, "no_responders": true})).await;
        uc.send(b"SUB secret.* grp 1\r\n").await;
        let first: Vec<Frame> = uc
            .flush()
            .await
            .into_iter()
            .filter(|f| !matches!(f, Frame::Info(_)))
            .collect();
        assert_eq!(first, vec![], "U's queue SUB is allowed (4.2)");
        oc.send(b"SUB secret.* grp 2\r\n").await;
        oc.flush().await;
        rc.flush().await;
        for i in 0..N {
            rc.send(format!("PUB secret.x {}\r\nm{i:02}\r\n", 3).as_bytes())
                .await;
        }
        rc.flush().await;
        let to_u = uc
            .flush()
            .await
            .iter()
            .filter(|f| matches!(f, Frame::Msg { .. }))
            .count();
        let to_o = oc
            .flush()
            .await
            .iter()
            .filter(|f| matches!(f, Frame::Msg { .. }))
            .count();
        // Only U is left in the group: a request on a subject U filters.
        oc.send(b"UNSUB 2\r\n").await;
        oc.flush().await;
        rc.send(b"SUB _INBOX.r.* 9\r\nPUB secret.x _INBOX.r.1 3\r\nreq\r\n")
            .await;
        let answers = rc.flush().await;
        let got_503 = answers.iter().any(|f| {
            matches!(f, Frame::Hmsg { headers, .. } if String::from_utf8_lossy(headers).contains("503"))
        });
        let late: Vec<Frame> = uc
            .flush()
            .await
            .into_iter()
            .filter(|f| !matches!(f, Frame::Info(_)))
            .collect();
        assert_eq!(late, vec![], "U never sees a denied subject");
        results.push((to_u, to_o, got_503));
    }
    let (d, g) = (results[0], results[1]);
    assert_eq!(
        d,
        (0, N, true),
        "nats-server: every message to O, 503 to the requester"
    );
    // natsgate: U's share (each message picked U's upstream connection with
    // probability 1/2) is dropped, O gets the rest; no 503.
    assert_eq!(g.0, 0, "natsgate must not deliver secret.x to U");
    assert!(
        g.1 < N,
        "natsgate: all {N} messages reached O; expected U's share to be lost ({g:?})"
    );
    assert!(g.1 > 0, "natsgate: O got nothing ({g:?})");
    assert!(!g.2, "natsgate cannot produce the 503 ({g:?})");
    sides.gate.assert_running();
}

/// Spec 3.11: template functions are `{{ op }}` with the inner blanks
/// trimmed, so `p.{{ name() }}` is a valid template entry. nats-server loads
/// such an account and the scoped user gets `p.<name>`; natsgate must do the
/// same (and must not refuse the whole account file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_template_with_blanks_inside_braces() {
    let op = j::operator("blank", false, None);
    let acc = KeyPair::new_account();
    let sk = KeyPair::new_account();
    let mut ac = j::account_claims(&acc, "BLANK");
    let mut t = UserPermissionLimits::unlimited();
    t.publish.allow = vec!["p.{{ name() }}".into()];
    ac.nats.signing_keys = vec![j::scope(&sk, "blank", t)];
    let accounts = vec![(acc.public_key(), j::sign_account(&ac, &op.signing))];
    let kp = KeyPair::new_user();
    let uc = j::scoped_user_claims(&kp, "a", &acc.public_key());
    let world = World {
        operator_jwt: op.jwt.clone(),
        accounts_d: accounts.clone(),
        accounts_g: accounts,
        observers: vec![observer_login(&acc, false)],
        cases: vec![Prepared {
            label: "scoped user, template p.{{ name() }}".into(),
            setup: String::new(),
            login: user_login(&uc, &sk, &kp),
            observer: 0,
            verbose: true,
            pedantic: false,
            ops: ["p.a", "p.b"]
                .into_iter()
                .map(|s| Op::Pub {
                    subject: s.into(),
                    reply: None,
                })
                .collect(),
            expect_refused: Some(false),
        }],
    };
    let sides = start_sides(&world);
    let case = &world.cases[0];
    let td = run_case(sides.direct.addr(), &world, case).await;
    assert!(
        td.iter().any(|l| l == "O: MSG p.a obs \"u0\"")
            && td
                .iter()
                .any(|l| l == "U: -ERR 'Permissions Violation for Publish to \"p.b\"'"),
        "nats-server: expected p.a allowed, p.b denied:\n{}",
        td.join("\n")
    );
    let tg = run_case(sides.gate.addr(), &world, case).await;
    sides.gate.assert_running();
    assert_eq!(
        td,
        tg,
        "{}",
        side_by_side("D (nats-server)", &td, "G (natsgate)", &tg)
    );
}

/// Runs of deliveries with the same control line (natsgate repeats the
/// decision of the first, see `session/repeat.rs`) are counted, filtered and
/// ended exactly as nats-server does: a limited sid (`UNSUB <sid> <max>`)
/// ends at its maximum inside a run and moves the other subscription to
/// another slot, a denied subject amid the run stays filtered, a reply
/// subject is tracked for `allow_responses`, and a maximum set after a run
/// counts the run's deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_the_same_delivery_are_counted_and_filtered_as_nats_server_does() {
    let op = j::operator("runs", false, None);
    let acc = KeyPair::new_account();
    let accounts = vec![(
        acc.public_key(),
        j::sign_account(&j::account_claims(&acc, "R"), &op.signing),
    )];
    let ukp = KeyPair::new_user();
    let mut uc = j::user_claims(&ukp, "u");
    uc.nats.limits.subscribe.deny = vec!["a.secret".into()];
    uc.nats.limits.publish.allow = vec!["a.>".into()];
    uc.nats.limits.response = Some(ResponsePermission { max: 1, ttl: 0 });
    let u = user_login(&uc, &acc, &ukp);
    let pkp = KeyPair::new_user();
    let p = user_login(&j::user_claims(&pkp, "p"), &acc, &pkp);
    let sides = start_sides(&World::plain(&op.jwt, accounts));

    // Per side: the deliveries of each phase as (sid, subject) counts,
    // and the user's answers to the requests.
    let mut results = Vec::new();
    for addr in [sides.direct.addr(), sides.gate.addr()] {
        let mut uc = RawClient::connect(addr).await;
        login(&mut uc, &u, json!({})).await;
        let mut pc = RawClient::connect(addr).await;
        login(&mut pc, &p, json!({})).await;
        // Sid 2 (limited to 5) comes first, so when it ends, sid 1 moves
        // into its slot.
        uc.send(b"SUB a.* 2\r\nUNSUB 2 5\r\nSUB a.* 1\r\n").await;
        uc.flush().await;
        let mut run = Vec::new();
        for i in 0..40 {
            let subject = if i % 13 == 7 { "a.secret" } else { "a.b" };
            run.extend_from_slice(format!("PUB {subject} 2\r\nhi\r\n").as_bytes());
        }
        run.extend_from_slice(b"PUB a.b _INBOX.x.1 2\r\nhi\r\nPUB a.b 2\r\nhi\r\n");
        pc.send(&run).await;
        pc.flush().await;
        let first = tally(&uc.flush().await);
        // Sid 1 got 39 so far: a maximum of 45 leaves it 6 more.
        uc.send(b"UNSUB 1 45\r\n").await;
        uc.flush().await;
        let more = b"PUB a.b 2\r\nhi\r\n".repeat(10);
        pc.send(&more).await;
        pc.flush().await;
        let second = tally(&uc.flush().await);
        // The reply delivered in the run may be answered once.
        uc.send(b"PUB _INBOX.x.1 2\r\nok\r\nPUB _INBOX.x.1 2\r\nok\r\n")
            .await;
        let answers: Vec<Frame> = uc
            .flush()
            .await
            .into_iter()
            .filter(|f| !matches!(f, Frame::Info(_)))
            .collect();
        results.push((first, second, answers));
    }
    let (d, g) = (&results[0], &results[1]);
    assert_eq!(
        d.0,
        vec![
            ("1".into(), "a.b".into(), 39),
            ("2".into(), "a.b".into(), 5)
        ],
        "nats-server: 39 of a.b on sid 1, sid 2 ends at 5, a.secret filtered"
    );
    assert_eq!(d.1, vec![("1".into(), "a.b".into(), 6)], "nats-server");
    assert_eq!(
        d.2.len(),
        1,
        "nats-server refuses the second answer: {:?}",
        d.2
    );
    assert_eq!(d, g, "nats-server (left) against natsgate (right)");
    sides.gate.assert_running();
}

/// The MSG frames of `frames` counted by (sid, subject), sorted.
fn tally(frames: &[Frame]) -> Vec<(String, String, usize)> {
    let mut counts = std::collections::BTreeMap::<(String, String), usize>::new();
    for f in frames {
        if let Frame::Msg { subject, sid, .. } = f {
            *counts.entry((sid.clone(), subject.clone())).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|((sid, s), n)| (sid, s, n))
        .collect()
}
