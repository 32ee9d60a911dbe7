//! Differential test of the WebSocket listener: the same operator, account
//! and user JWTs against nats-server's own `websocket {}` block (operator
//! mode, MEMORY resolver) and against natsgate's `[websocket]` listener (in
//! front of a plain nats-server). Each case gives a transcript (HTTP
//! answers; NATS frames but INFO; pongs; the close frame's code and reason,
//! or a drop without one) and both sides must give the same one.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use nkeys::KeyPair;
use support::jwt as j;
use support::ws::{WsClient, close_parts, request, upgrade_raw};
use support::{Frame, Gate, NatsServer};

const PASSWORD: &str = "ws-diff-gate-s3cret";
const ORIGIN: &str = "https://app.example.com";

/// An upgrade request for a listener's address.
type RequestFor = Box<dyn Fn(SocketAddr) -> String>;

struct Users {
    account: KeyPair,
    op: j::Operator,
}

fn user(users: &Users, edit: impl FnOnce(&mut j::UserPermissionLimits)) -> (String, KeyPair) {
    let kp = KeyPair::new_user();
    let mut c = j::user_claims(&kp, "u");
    edit(&mut c.nats.limits);
    (j::sign_user(&c, &users.account), kp)
}

/// What a client saw, one line per event.
async fn observe(c: &mut WsClient, t: &mut Vec<String>) {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), c.try_read_frame()).await {
            Err(_) => {
                t.push("(silence)".into());
                return;
            }
            Ok(Ok(Frame::Pong)) => {
                t.push("PONG".into());
                return;
            }
            Ok(Ok(frame)) => t.push(format!("{frame:?}")),
            Ok(Err(_)) => {
                for control in c.controls.drain(..) {
                    match control.opcode {
                        8 => {
                            let (code, reason) = close_parts(&control.payload);
                            t.push(format!("close {code} {reason:?}"));
                        }
                        9 => t.push("ping".into()),
                        10 => t.push(format!(
                            "pong {:?}",
                            String::from_utf8_lossy(&control.payload)
                        )),
                        _ => {}
                    }
                }
                t.push("EOF".into());
                return;
            }
        }
    }
}

/// Closes seen so far (and pongs), then what `observe` sees.
async fn transcript(c: &mut WsClient, t: &mut Vec<String>) {
    observe(c, t).await;
    for control in c.controls.drain(..) {
        if control.opcode == 10 {
            t.push(format!(
                "pong {:?}",
                String::from_utf8_lossy(&control.payload)
            ));
        }
    }
}

async fn login_case(addr: SocketAddr, jwt: &str, kp: &KeyPair, then: &[u8]) -> Vec<String> {
    let mut t = Vec::new();
    let mut c = WsClient::connect(addr, "").await;
    assert!(c.info.get("tls_required").is_none_or(|v| v == false));
    c.connect_jwt(jwt, kp).await;
    c.send(then).await;
    c.send(b"PING\r\n").await;
    transcript(&mut c, &mut t).await;
    if t.last().is_some_and(|l| l == "PONG") {
        // Still open: a close from the client is echoed.
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let f = c.frame(8, true, false, &payload);
        c.send_raw(&f).await;
        let close = c.read_close().await.map(|p| close_parts(&p));
        t.push(format!("echo {close:?}"));
    }
    t
}

async fn http_case(addr: SocketAddr, req: &str) -> Vec<String> {
    let (_, answer, _) = upgrade_raw(addr, req).await;
    let mut t = vec![format!("status {}", answer.status)];
    for name in [
        "Sec-Websocket-Version",
        "Sec-WebSocket-Extensions",
        "Nats-No-Masking",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Accept",
    ] {
        if let Some(v) = answer.header(name) {
            t.push(format!("{name}: {v}"));
        }
    }
    if answer.status != 101 {
        t.push(format!("body {:?}", answer.body));
    }
    t
}

async fn frames_case(addr: SocketAddr, jwt: &str, kp: &KeyPair, case: &str) -> Vec<String> {
    let mut t = Vec::new();
    let extra = match case {
        "no-masking" => "Nats-No-Masking: true\r\n",
        "compressed" => "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        _ => "",
    };
    let mut c = WsClient::connect(addr, extra).await;
    // With no-masking agreed, nats-server reads every frame as unmasked (a
    // mask key would be read as payload): the client sends none.
    c.mask = case != "no-masking";
    c.connect_jwt(jwt, kp).await;
    c.send(b"PING\r\n").await;
    observe(&mut c, &mut t).await;
    match case {
        "unmasked" => {
            c.mask = false;
            c.send(b"PING\r\n").await;
        }
        "no-masking" => {
            c.mask = false;
            c.send(b"SUB a 1\r\nPUB a 2\r\nok\r\nPING\r\n").await;
        }
        "text-and-fragments" => {
            let ops = b"SUB f 1\r\nPUB f 3\r\nabc\r\n";
            let mut bytes = c.frame(1, false, false, &ops[..5]);
            bytes.extend(c.frame(9, true, false, b"between"));
            bytes.extend(c.frame(0, true, false, &ops[5..]));
            bytes.extend(c.frame(1, true, false, b"PING\r\n"));
            c.send_raw(&bytes).await;
        }
        "oversized" => {
            let big = vec![b'x'; 1024 * 1024 + 1];
            let mut ops = format!("PUB big {}\r\n", big.len()).into_bytes();
            ops.extend_from_slice(&big);
            ops.extend_from_slice(b"\r\n");
            c.send(&ops).await;
        }
        "compressed" => {
            let payload = "c".repeat(300);
            c.send_compressed(format!("SUB c 1\r\nPUB c 300\r\n{payload}\r\n").as_bytes())
                .await;
            c.send(b"PING\r\n").await;
        }
        "bad close" => {
            let f = c.frame(8, true, false, &[3]);
            c.send_raw(&f).await;
        }
        "bad close code" => {
            let f = c.frame(8, true, false, &1005u16.to_be_bytes());
            c.send_raw(&f).await;
        }
        "long ping" => {
            let f = c.frame(9, true, false, &[b'p'; 126]);
            c.send_raw(&f).await;
        }
        "ping not final" => {
            let f = c.frame(9, false, false, b"p");
            c.send_raw(&f).await;
        }
        "rsv2" => {
            let f = c.frame(2 | 0x20, true, false, b"PING\r\n");
            c.send_raw(&f).await;
        }
        "reserved opcode" => {
            let f = c.frame(3, true, false, b"PING\r\n");
            c.send_raw(&f).await;
        }
        "new message in a message" => {
            let mut f = c.frame(2, false, false, b"PI");
            f.extend(c.frame(2, true, false, b"NG\r\n"));
            c.send_raw(&f).await;
        }
        "compressed ping" => {
            let f = c.frame(9, true, true, b"p");
            c.send_raw(&f).await;
        }
        "continuation-first" => {
            let f = c.frame(0, true, false, b"PING\r\n");
            c.send_raw(&f).await;
        }
        other => panic!("{other}"),
    }
    transcript(&mut c, &mut t).await;
    // nats-server queues a close 1002 with its reason on a frame error and
    // closes the socket at once: whether the close frame gets out first is
    // a race (seen both ways for the same input). natsgate drops the
    // connection without one (spec 9.11); the race is taken out here.
    if let [.., close, eof] = &t[..]
        && close.starts_with("close 1002 ")
        && eof == "EOF"
    {
        t.remove(t.len() - 2);
    }
    t
}

#[tokio::test]
async fn same_outcomes_as_nats_servers_own_websocket_listener() {
    let op = j::operator("wsdiff", false, None);
    let account = KeyPair::new_account();
    let account_jwt = j::sign_account(&j::account_claims(&account, "APP"), &op.kp);
    let accounts = vec![(account.public_key(), account_jwt)];
    let users = Users { account, op };

    // Side D: nats-server's own websocket listener.
    let ws_block = format!(
        "websocket {{\n  listen: \"127.0.0.1:-1\"\n  no_tls: true\n  compression: true\n  allowed_origins: [\"{ORIGIN}\"]\n  jwt_cookie: \"natsjwt\"\n}}\n"
    );
    let direct = NatsServer::start(&format!(
        "{}{ws_block}",
        j::server_config(&[&users.op.jwt], &accounts, None)
    ));
    let d_port = direct
        .websocket_port()
        .expect("nats-server's websocket port");
    let d = SocketAddr::from(([127, 0, 0, 1], d_port));

    // Side G: natsgate's listener in front of a plain server.
    let upstream = NatsServer::start(&j::upstream_config(PASSWORD));
    let dir = tempfile::tempdir().unwrap();
    let mut toml = j::gate_setup(
        dir.path(),
        &upstream.url(),
        PASSWORD,
        &[&users.op.jwt],
        &accounts,
    );
    toml.push_str(&format!(
        "\n[websocket]\naddr = \"127.0.0.1:0\"\nno_tls = true\ncompression = true\nallowed_origins = [\"{ORIGIN}\"]\njwt_cookie = \"natsjwt\"\n"
    ));
    let gate = Gate::start_websocket(&toml, dir);
    let g = gate.ws_addr();

    // The INFO over WebSocket: the listener's own port, no TLS.
    for (addr, side) in [(d, "nats-server"), (g, "natsgate")] {
        let c = WsClient::connect(addr, "").await;
        assert_eq!(c.info["port"], addr.port(), "{side}: {}", c.info);
        assert!(
            c.info.get("tls_required").is_none_or(|v| v == false),
            "{side}"
        );
        assert!(c.info["nonce"].is_string(), "{side}");
        assert_eq!(c.info["client_ip"], "127.0.0.1", "{side}");
    }

    let mut failures = Vec::new();
    let mut compare = |name: &str, a: Vec<String>, b: Vec<String>| {
        if a != b {
            failures.push(format!(
                "{name}:\n  nats-server: {a:?}\n  natsgate:    {b:?}"
            ));
        }
    };
    let mut cases = 0;

    // HTTP answers.
    let http: Vec<(&str, RequestFor)> = vec![
        ("plain upgrade", Box::new(|a| request(a, ""))),
        (
            "no Upgrade",
            Box::new(|a| request(a, "").replace("Upgrade: websocket\r\n", "")),
        ),
        (
            "no Connection",
            Box::new(|a| request(a, "").replace("Connection: Upgrade\r\n", "")),
        ),
        (
            "version 12",
            Box::new(|a| request(a, "").replace("Version: 13", "Version: 12")),
        ),
        (
            "no key",
            Box::new(|a| {
                request(a, "").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")
            }),
        ),
        (
            "short key",
            Box::new(|a| request(a, "").replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")),
        ),
        (
            "POST",
            Box::new(|a| request(a, "").replacen("GET", "POST", 1)),
        ),
        (
            "refused origin",
            Box::new(|a| request(a, "Origin: https://evil.example.com\r\n")),
        ),
        (
            "allowed origin",
            Box::new(|a| request(a, &format!("Origin: {ORIGIN}\r\n"))),
        ),
        (
            "origin other port",
            Box::new(|a| request(a, "Origin: https://app.example.com:8443\r\n")),
        ),
        (
            "compression offer",
            Box::new(|a| {
                request(
                    a,
                    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
                )
            }),
        ),
        (
            "no masking",
            Box::new(|a| request(a, "Nats-No-Masking: true\r\n")),
        ),
        (
            "subprotocols",
            Box::new(|a| request(a, "Sec-WebSocket-Protocol: nats, chat\r\n")),
        ),
    ];
    for (name, req) in &http {
        cases += 1;
        compare(
            name,
            http_case(d, &req(d)).await,
            http_case(g, &req(g)).await,
        );
    }

    // Logins: connection types, src, bearer-less signature, permissions.
    let logins: Vec<(&str, (String, KeyPair), &[u8])> = vec![
        ("no types", user(&users, |_| {}), b"SUB x 1\r\n"),
        (
            "STANDARD only",
            user(&users, |l| {
                l.allowed_connection_types = vec!["STANDARD".into()]
            }),
            b"",
        ),
        (
            "WEBSOCKET only",
            user(&users, |l| {
                l.allowed_connection_types = vec!["WEBSOCKET".into()]
            }),
            b"",
        ),
        (
            "lower-case websocket",
            user(&users, |l| {
                l.allowed_connection_types = vec!["websocket".into()]
            }),
            b"",
        ),
        (
            "unknown only",
            user(&users, |l| {
                l.allowed_connection_types = vec!["BOGUS".into()]
            }),
            b"",
        ),
        (
            "WEBSOCKET and unknown",
            user(&users, |l| {
                l.allowed_connection_types = vec!["WEBSOCKET".into(), "BOGUS".into()]
            }),
            b"",
        ),
        (
            "MQTT_WS and LEAFNODE",
            user(&users, |l| {
                l.allowed_connection_types = vec!["MQTT_WS".into(), "LEAFNODE".into()]
            }),
            b"",
        ),
        (
            "src elsewhere",
            user(&users, |l| l.source = vec!["203.0.113.0/24".into()]),
            b"",
        ),
        (
            "src here",
            user(&users, |l| l.source = vec!["127.0.0.0/8".into()]),
            b"",
        ),
        (
            "sub denied",
            user(&users, |l| l.subscribe.deny = vec!["secret.>".into()]),
            b"SUB secret.plans 1\r\nSUB open 2\r\n",
        ),
        (
            "pub denied",
            user(&users, |l| l.publish.allow = vec!["ok.>".into()]),
            b"PUB no.way 2\r\nhi\r\nPUB ok.fine 2\r\nhi\r\n",
        ),
    ];
    for (name, (jwt, kp), then) in &logins {
        cases += 1;
        compare(
            name,
            login_case(d, jwt, kp, then).await,
            login_case(g, jwt, kp, then).await,
        );
    }
    // A signature by another key.
    let (jwt, _) = user(&users, |_| {});
    let other = KeyPair::new_user();
    cases += 1;
    compare(
        "wrong signer",
        login_case(d, &jwt, &other, b"").await,
        login_case(g, &jwt, &other, b"").await,
    );

    // The JWT from the `jwt_cookie` cookie: alone, and beside a CONNECT
    // that has its own.
    let (jwt, kp) = user(&users, |_| {});
    let (other_jwt, other_kp) = user(&users, |l| {
        l.allowed_connection_types = vec!["STANDARD".into()]
    });
    for (name, with_own) in [("cookie JWT", false), ("cookie and CONNECT JWT", true)] {
        let run = async |addr: SocketAddr| {
            let mut t = Vec::new();
            let mut c = WsClient::connect(addr, &format!("Cookie: a=b; natsjwt={jwt}\r\n")).await;
            if with_own {
                c.connect_jwt(&other_jwt, &other_kp).await;
            } else {
                c.connect_sig_only(&kp).await;
            }
            c.send(b"PING\r\n").await;
            transcript(&mut c, &mut t).await;
            t
        };
        cases += 1;
        compare(name, run(d).await, run(g).await);
    }

    // Frames.
    let (jwt, kp) = user(&users, |_| {});
    for case in [
        "unmasked",
        "no-masking",
        "text-and-fragments",
        "oversized",
        "continuation-first",
        "compressed",
        "bad close",
        "bad close code",
        "long ping",
        "ping not final",
        "rsv2",
        "reserved opcode",
        "new message in a message",
        "compressed ping",
    ] {
        cases += 1;
        compare(
            case,
            frames_case(d, &jwt, &kp, case).await,
            frames_case(g, &jwt, &kp, case).await,
        );
    }

    assert!(
        failures.is_empty(),
        "{} of {cases} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{cases} cases, same outcomes on both sides");
}
