//! The JetStream guard (issue 14) against a real nats-server with
//! JetStream: nats-py's JetStream and KV APIs (and async-nats) through
//! natsgate with `[jetstream] guard = true` get natsgate's refusal for every
//! route to a subject the user may not subscribe to, and what they may read
//! still works; with the guard off the same operations give exactly what
//! nats-server gives when it enforces the same permissions itself.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use support::{Gate, NatsServer, keys, quote_conf, quote_toml};

/// The reader's permissions, in both worlds: the public half of the stream
/// ORDERS and of the KV buckets `cfg` and `dcfg` (direct get), its inboxes
/// but not the victim's.
const READER_PUB: &[&str] = &["$JS.API.>", "$JS.ACK.>"];
const READER_SUB_ALLOW: &[&str] = &[
    "_INBOX.>",
    "orders.public.>",
    "$KV.cfg.public.>",
    "$KV.dcfg.public.>",
    "pub.>",
];
const READER_SUB_DENY: &[&str] = &["_INBOX.victim.>"];

/// The script: the admin sets up the stream and the buckets and listens on
/// the victim's inbox; the reader tries every route. One line per step:
/// `<step> OK <what it read>`, `<step> ERR code=<code> natsgate=<bool>` or
/// `<step> EXC <exception>`.
const SCRIPT: &str = r#"
import asyncio, sys, nats
from nats.js.api import ConsumerConfig
from nats.js.errors import APIError

URL, ADMIN, READER = sys.argv[1], sys.argv[2], sys.argv[3]

async def step(name, coro):
    try:
        result = await asyncio.wait_for(coro, 5)
        print(name, "OK", result, flush=True)
    except APIError as e:
        desc = getattr(e, "description", "") or ""
        print(name, f"ERR code={e.code} natsgate={'natsgate' in desc}", flush=True)
    except Exception as e:
        print(name, "EXC", type(e).__name__, flush=True)

async def main():
    a = await nats.connect(URL, nkeys_seed=ADMIN, allow_reconnect=False)
    ajs = a.jetstream()
    await ajs.add_stream(name="ORDERS", subjects=["orders.>"])
    await ajs.publish("orders.public.1", b"p1")
    await ajs.publish("orders.secret.1", b"s1")
    await ajs.add_stream(name="PUB", subjects=["pub.>"])
    await ajs.publish("pub.1", b"x")
    kv = await ajs.create_key_value(bucket="cfg")
    await kv.put("public.a", b"pa")
    await kv.put("secret.b", b"sb")
    dkv = await ajs.create_key_value(bucket="dcfg", direct=True)
    await dkv.put("public.a", b"dpa")
    await dkv.put("secret.b", b"dsb")
    victim = await a.subscribe("_INBOX.victim.>")
    await a.flush()

    r = await nats.connect(URL, nkeys_seed=READER, allow_reconnect=False)
    js = r.jetstream()

    async def kv_get(bucket, key):
        b = await js.key_value(bucket)
        return (await b.get(key)).value.decode()
    await step("kv_public", kv_get("cfg", "public.a"))
    await step("kv_secret", kv_get("cfg", "secret.b"))
    await step("kv_direct_public", kv_get("dcfg", "public.a"))
    await step("kv_direct_secret", kv_get("dcfg", "secret.b"))

    async def fetch(subject):
        psub = await js.pull_subscribe(subject, stream="ORDERS")
        msgs = await psub.fetch(1, timeout=2)
        return ",".join(m.subject for m in msgs)
    await step("pull_public", fetch("orders.public.>"))
    await step("pull_secret", fetch("orders.secret.>"))

    async def add(stream="ORDERS", **config):
        await js.add_consumer(stream, config=ConsumerConfig(**config))
        return "created"
    await step("consumer_unfiltered", add())
    # The whole of PUB is readable: allowed once natsgate learnt its subjects.
    await step("consumer_unfiltered_readable", add(stream="PUB"))
    async def seq_subject(stream, seq):
        return (await js.get_msg(stream, seq=seq)).subject
    await step("get_by_seq_readable", seq_subject("PUB", 1))
    await step("consumer_filter_public", add(filter_subject="orders.public.>"))
    await step("consumer_deliver_victim",
               add(filter_subject="orders.public.>", deliver_subject="_INBOX.victim.push"))

    async def get(seq=None, subject=None):
        if subject:
            m = await js.get_last_msg("ORDERS", subject)
        else:
            m = await js.get_msg("ORDERS", seq=seq)
        return m.subject
    await step("get_by_seq", get(seq=2))
    await step("get_last_public", get(subject="orders.public.1"))
    await step("get_last_secret", get(subject="orders.secret.1"))

    async def watch(keys):
        b = await js.key_value("cfg")
        w = await b.watch(keys)
        e = await w.updates(timeout=2)
        return e.key if e else None
    await step("watch_public", watch("public.*"))
    await step("watch_secret", watch("secret.*"))

    # A request whose answer is aimed at the victim's inbox.
    await r.publish("$JS.API.STREAM.INFO.ORDERS", b"", reply="_INBOX.victim.reply")
    await r.flush()
    got = []
    try:
        while True:
            m = await victim.next_msg(timeout=1)
            got.append(m.subject)
    except Exception:
        pass
    print("victim", "OK", len(got), flush=True)

    # Listings: HIDDEN holds nothing the reader may read.
    await ajs.add_stream(name="HIDDEN", subjects=["hidden.>"])
    async def listed():
        infos = await js.streams_info()
        return ",".join(sorted(i.config.name for i in infos))
    await step("stream_list", listed())
    async def names(body=b""):
        import json
        reply = json.loads((await r.request("$JS.API.STREAM.NAMES", body, timeout=2)).data)
        return f"{reply['total']}:{','.join(reply['streams'] or [])}"
    await step("stream_names", names())
    await step("stream_names_offset", names(b'{"offset":3}'))
    await step("stream_names_hidden_subject", names(b'{"subject":"hidden.x"}'))

    # Consumers someone else made, on the secret half: a durable pull
    # consumer the reader binds to, and a push consumer aimed at the
    # reader's inbox.
    await ajs.add_consumer("ORDERS", config=ConsumerConfig(
        durable_name="SECRETS", filter_subject="orders.secret.>"))
    async def bound():
        psub = await js.pull_subscribe_bind("SECRETS", "ORDERS")
        msgs = await psub.fetch(1, timeout=2)
        return ",".join(m.subject for m in msgs)
    await step("pull_others_consumer", bound())
    pushed = await r.subscribe("_INBOX.reader.push")
    await r.flush()
    await ajs.add_consumer("ORDERS", config=ConsumerConfig(
        durable_name="PUSHED", filter_subject="orders.secret.>",
        deliver_subject="_INBOX.reader.push"))
    async def first_push():
        return (await pushed.next_msg(timeout=2)).subject
    await step("push_from_others_consumer", first_push())
    await r.close()
    await a.close()

asyncio.run(asyncio.wait_for(main(), 60))
"#;

/// The expected result of each step through natsgate with the guard on.
const GUARDED: &[(&str, &str)] = &[
    ("kv_public", "OK pa"),
    ("kv_secret", "ERR code=403 natsgate=True"),
    ("kv_direct_public", "OK dpa"),
    ("kv_direct_secret", "ERR code=403 natsgate=True"),
    ("pull_public", "OK orders.public.1"),
    ("pull_secret", "ERR code=403 natsgate=True"),
    ("consumer_unfiltered", "ERR code=403 natsgate=True"),
    ("consumer_unfiltered_readable", "OK created"),
    ("get_by_seq_readable", "OK pub.1"),
    ("consumer_filter_public", "OK created"),
    ("consumer_deliver_victim", "ERR code=403 natsgate=True"),
    ("get_by_seq", "ERR code=403 natsgate=True"),
    ("get_last_public", "OK orders.public.1"),
    ("get_last_secret", "ERR code=403 natsgate=True"),
    ("watch_public", "OK public.a"),
    ("watch_secret", "ERR code=403 natsgate=True"),
    ("victim", "OK 0"),
    ("stream_list", "OK KV_cfg,KV_dcfg,ORDERS,PUB"),
    ("stream_names", "OK 4:KV_cfg,KV_dcfg,ORDERS,PUB"),
    ("stream_names_offset", "OK 4:PUB"),
    ("stream_names_hidden_subject", "OK 0:"),
    ("pull_others_consumer", "EXC TimeoutError"),
    ("push_from_others_consumer", "EXC TimeoutError"),
];

struct Users {
    admin: nkeys::KeyPair,
    reader: nkeys::KeyPair,
}

fn users() -> Users {
    Users {
        admin: keys::new_user(),
        reader: keys::new_user(),
    }
}

fn conf_list(list: &[&str]) -> String {
    let quoted: Vec<String> = list.iter().map(|s| quote_conf(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn toml_list(list: &[&str]) -> String {
    let quoted: Vec<String> = list.iter().map(|s| quote_toml(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A nats-server with JetStream. With `users`, it enforces their
/// permissions itself (the direct world); without, only natsgate's
/// credential logs in.
fn server(store: &tempfile::TempDir, users: Option<&Users>) -> NatsServer {
    let nkey_users = users.map_or(String::new(), |u| {
        format!(
            ", {{nkey: {}}}, {{nkey: {}, permissions: {{publish: {{allow: {}}}, subscribe: {{allow: {}, deny: {}}}}}}}",
            u.admin.public_key(),
            u.reader.public_key(),
            conf_list(READER_PUB),
            conf_list(READER_SUB_ALLOW),
            conf_list(READER_SUB_DENY),
        )
    });
    NatsServer::start(&format!(
        "jetstream {{ store_dir: {} }}\nauthorization {{ users = [{{user: gate, password: s3cret}}{nkey_users}] }}",
        quote_conf(&store.path().to_string_lossy())
    ))
}

fn gate(upstream: &NatsServer, users: &Users, guard: bool) -> Gate {
    gate_with(upstream, users, &format!("guard = {guard}"))
}

/// natsgate with `jetstream` as the body of its `[jetstream]` table.
fn gate_with(upstream: &NatsServer, users: &Users, jetstream: &str) -> Gate {
    Gate::start(&format!(
        r#"[listen]
addr = "127.0.0.1:0"
[upstream]
servers = ["{url}"]
user = "gate"
password = "s3cret"
[jetstream]
{jetstream}
[[users]]
nkey = "{admin}"
name = "admin"
[[users]]
nkey = "{reader}"
name = "reader"
[users.permissions]
publish = {{ allow = {publish} }}
subscribe = {{ allow = {allow}, deny = {deny} }}
"#,
        url = upstream.url(),
        admin = users.admin.public_key(),
        reader = users.reader.public_key(),
        publish = toml_list(READER_PUB),
        allow = toml_list(READER_SUB_ALLOW),
        deny = toml_list(READER_SUB_DENY),
    ))
}

/// Runs the script against `url`; returns step → result.
async fn run_script(url: String, users: &Users) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let admin = keys::write_seed(dir.path(), "admin", &users.admin);
    let reader = keys::write_seed(dir.path(), "reader", &users.reader);
    let python = python_with_nats_py();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(url)
            .arg(admin)
            .arg(reader)
            .output()
    })
    .await
    .unwrap()
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the script failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(step, result)| (step.to_string(), result.to_string()))
        .collect()
}

fn expected(rows: &[(&str, &str)]) -> BTreeMap<String, String> {
    rows.iter()
        .map(|(s, r)| (s.to_string(), r.to_string()))
        .collect()
}

/// Every route of the script through natsgate with the guard on: refused
/// with natsgate's 403 where it would read a forbidden subject or aim an
/// answer at the victim, working where it reads what the user may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_on_refuses_every_route_to_a_forbidden_subject_with_nats_py() {
    let store = tempfile::tempdir().unwrap();
    let upstream = server(&store, None);
    let users = users();
    let gate = gate(&upstream, &users, true);
    let results = run_script(format!("nats://{}", gate.addr()), &users).await;
    assert_eq!(results, expected(GUARDED));
    gate.assert_running();
}

/// With the guard off, natsgate in front of a plain nats-server gives the
/// same results as nats-server enforcing the same permissions itself: the
/// gaps of issue 14 are nats-server's, and the guard is what closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_off_is_identical_to_nats_server_direct() {
    let users = users();
    let direct_store = tempfile::tempdir().unwrap();
    let direct = server(&direct_store, Some(&users));
    let direct_results = run_script(direct.url(), &users).await;

    let store = tempfile::tempdir().unwrap();
    let upstream = server(&store, None);
    let gate = gate(&upstream, &users, false);
    let gated_results = run_script(format!("nats://{}", gate.addr()), &users).await;
    assert_eq!(gated_results, direct_results);
    // The gaps are real: without the guard the secret half is readable and
    // the victim hears the reader's requests.
    assert_eq!(direct_results["kv_secret"], "OK sb");
    assert_eq!(direct_results["kv_direct_secret"], "OK dsb");
    assert_eq!(direct_results["get_by_seq"], "OK orders.secret.1");
    assert_eq!(direct_results["pull_secret"], "OK orders.secret.1");
    assert_ne!(direct_results["victim"], "OK 0");
    assert_eq!(
        direct_results["stream_list"],
        "OK HIDDEN,KV_cfg,KV_dcfg,ORDERS,PUB"
    );
    assert_eq!(direct_results["stream_names_hidden_subject"], "OK 1:HIDDEN");
    assert_eq!(direct_results["pull_others_consumer"], "OK orders.secret.1");
    assert_eq!(
        direct_results["push_from_others_consumer"],
        "OK orders.secret.1"
    );
}

/// async-nats' JetStream API through the guard: a filtered consumer on the
/// forbidden half and a get by sequence are refused with natsgate's error,
/// the allowed half is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_on_with_async_nats() {
    use async_nats::jetstream::{self, consumer, stream};
    use futures::StreamExt;

    let store = tempfile::tempdir().unwrap();
    let upstream = server(&store, None);
    let users = users();
    let gate = gate(&upstream, &users, true);
    let url = format!("nats://{}", gate.addr());
    let within = |d| Duration::from_secs(d);

    let admin = async_nats::ConnectOptions::with_nkey(users.admin.seed().unwrap())
        .connect(&url)
        .await
        .unwrap();
    let ajs = jetstream::new(admin);
    ajs.create_stream(stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    for subject in ["orders.public.1", "orders.secret.1"] {
        ajs.publish(subject, "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let reader = async_nats::ConnectOptions::with_nkey(users.reader.seed().unwrap())
        .connect(&url)
        .await
        .unwrap();
    let js = jetstream::new(reader);
    let orders = tokio::time::timeout(within(5), js.get_stream("ORDERS"))
        .await
        .unwrap()
        .expect("stream info is allowed");

    let secret = tokio::time::timeout(
        within(5),
        orders.create_consumer(consumer::pull::Config {
            filter_subject: "orders.secret.>".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("answered, not timed out");
    let error = secret.expect_err("a consumer on the secret half is refused");
    assert!(error.to_string().contains("natsgate"), "{error}");

    let public = tokio::time::timeout(
        within(5),
        orders.create_consumer(consumer::pull::Config {
            filter_subject: "orders.public.>".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .expect("a consumer on the public half is allowed");
    let mut batch = public.fetch().max_messages(1).messages().await.unwrap();
    let message = tokio::time::timeout(within(5), batch.next())
        .await
        .unwrap()
        .expect("one message")
        .unwrap();
    assert_eq!(message.subject.as_str(), "orders.public.1");

    let by_seq = tokio::time::timeout(within(5), orders.get_raw_message(2))
        .await
        .expect("answered, not timed out");
    assert!(
        by_seq.is_err(),
        "a get by sequence of the whole stream is refused"
    );
    let direct_secret = tokio::time::timeout(
        within(5),
        orders.direct_get_last_for_subject("orders.secret.1"),
    )
    .await
    .expect("answered, not timed out");
    assert!(
        direct_secret.is_err(),
        "direct get of a secret subject is refused"
    );
    let direct_public = tokio::time::timeout(
        within(5),
        orders.direct_get_last_for_subject("orders.public.1"),
    )
    .await
    .unwrap()
    .expect("direct get of a public subject works");
    assert_eq!(direct_public.subject.as_str(), "orders.public.1");
    gate.assert_running();
}

/// The Python beside the nats-server of `scripts/test.sh`'s venv, which
/// has nats-py; `NATS_PY_PYTHON` overrides.
fn python_with_nats_py() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_PY_PYTHON") {
        return PathBuf::from(p);
    }
    let server = support::nats_server_bin();
    let candidate = server
        .parent()
        .map(|d| d.join("python"))
        .filter(|p| p.exists());
    candidate.unwrap_or_else(|| {
        panic!(
            "no python with nats-py next to {}: run scripts/test.sh (it installs nats-py into .venv) or set NATS_PY_PYTHON",
            server.display()
        )
    })
}

/// Raw protocol, verbose: a request held for its stream's subjects keeps
/// the client's op order. The frames behind it (a direct get, a PING) are
/// answered after it, each `+OK` before its answer, and the direct get's
/// refusal is a header-only status message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_keeps_the_op_order() {
    use support::{Frame, RawClient};

    let store = tempfile::tempdir().unwrap();
    let upstream = server(&store, None);
    let users = users();
    let gate = gate(&upstream, &users, true);
    let admin = async_nats::ConnectOptions::with_nkey(users.admin.seed().unwrap())
        .connect(format!("nats://{}", gate.addr()))
        .await
        .unwrap();
    let ajs = async_nats::jetstream::new(admin);
    ajs.create_stream(async_nats::jetstream::stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();

    let mut c = RawClient::connect(gate.addr()).await;
    c.connect_nkey(
        &users.reader,
        serde_json::json!({"verbose": true, "headers": true, "protocol": 0}),
    )
    .await;
    assert_eq!(c.read_frame().await, Frame::Ok, "the CONNECT");
    let body = r#"{"stream_name":"ORDERS","config":{}}"#;
    c.send(
        format!(
            "SUB _INBOX.r.* 1\r\nPUB $JS.API.CONSUMER.CREATE.ORDERS _INBOX.r.1 {}\r\n{body}\r\n\
             PUB $JS.API.DIRECT.GET.ORDERS.orders.secret.1 _INBOX.r.2 0\r\n\r\nPING\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let frames = c.collect_until_pong().await.expect("answered in time");
    assert_eq!(frames.len(), 5, "{frames:?}");
    assert_eq!(frames[0], Frame::Ok, "the SUB");
    assert_eq!(frames[1], Frame::Ok, "the held PUB");
    let Frame::Msg {
        subject, payload, ..
    } = &frames[2]
    else {
        panic!("the consumer create's refusal: {frames:?}");
    };
    assert_eq!(subject, "_INBOX.r.1");
    let answer: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(
        answer["type"],
        "io.nats.jetstream.api.v1.consumer_create_response"
    );
    assert_eq!(answer["error"]["code"], 403);
    let description = answer["error"]["description"].as_str().unwrap();
    assert!(
        description.starts_with("natsgate: ")
            && description.contains("may not subscribe to all of its subjects"),
        "learnt, not timed out: {description}"
    );
    assert_eq!(frames[3], Frame::Ok, "the direct get");
    let Frame::Hmsg {
        subject,
        headers,
        payload,
        ..
    } = &frames[4]
    else {
        panic!("the direct get's refusal: {frames:?}");
    };
    assert_eq!(subject, "_INBOX.r.2");
    assert!(payload.is_empty());
    let headers = String::from_utf8_lossy(headers);
    assert!(
        headers.starts_with("NATS/1.0 403 natsgate: ") && headers.contains("orders.secret.1"),
        "{headers}"
    );
    c.expect_nothing_for(Duration::from_millis(300)).await;
    gate.assert_running();
}

/// The per-user and per-account switches: `guard_users` turns the guard on
/// for one user with `guard = false` (its listing filtered too, as seen by
/// async-nats' `stream_names`), `exempt_users` turns it off for one user
/// with `guard = true` (nats-server's answer, the gap open again), by name
/// or by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_switches() {
    use async_nats::jetstream::{self, consumer, stream};
    use futures::TryStreamExt;

    let store = tempfile::tempdir().unwrap();
    let upstream = server(&store, None);
    let users = users();
    let within = Duration::from_secs(5);
    let secret_consumer = |js: jetstream::Context| async move {
        let orders = js.get_stream("ORDERS").await.unwrap();
        tokio::time::timeout(
            within,
            orders.create_consumer(consumer::pull::Config {
                filter_subject: "orders.secret.>".into(),
                ..Default::default()
            }),
        )
        .await
        .expect("answered, not timed out")
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let connect = |url: String, key: &nkeys::KeyPair| {
        let seed = key.seed().unwrap();
        async move {
            let client = async_nats::ConnectOptions::with_nkey(seed)
                .connect(url)
                .await
                .unwrap();
            jetstream::new(client)
        }
    };

    let gate = gate_with(&upstream, &users, r#"guard_users = ["reader"]"#);
    let url = format!("nats://{}", gate.addr());
    let ajs = connect(url.clone(), &users.admin).await;
    for (name, subject) in [("ORDERS", "orders.>"), ("HIDDEN", "hidden.>")] {
        ajs.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let admin_names: Vec<String> = ajs.stream_names().try_collect().await.unwrap();
    assert_eq!(admin_names.len(), 2, "{admin_names:?}");
    let js = connect(url.clone(), &users.reader).await;
    let refused = secret_consumer(js.clone()).await.expect_err("guarded");
    assert!(refused.contains("natsgate"), "{refused}");
    let names: Vec<String> = tokio::time::timeout(within, js.stream_names().try_collect())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(names, ["ORDERS"]);
    drop(gate);

    let exempt = format!(
        "guard = true\nexempt_users = [\"{}\"]",
        users.reader.public_key()
    );
    let gate = gate_with(&upstream, &users, &exempt);
    let js = connect(format!("nats://{}", gate.addr()), &users.reader).await;
    secret_consumer(js.clone())
        .await
        .expect("exempt: nats-server allows it");
    let mut names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    names.sort();
    assert_eq!(names, ["HIDDEN", "ORDERS"]);
}
