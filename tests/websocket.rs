//! natsgate's `[websocket]` listener against a real upstream nats-server:
//! the same sessions over WebSocket (nkey and JWT logins, permissions,
//! pub/sub/request), frames as nats-server reads them (ops split across
//! frames and fragments, text frames, control frames between fragments,
//! masking, `Nats-No-Masking`, compression), the HTTP answers (400, 403,
//! 405), closes, `allowed_connection_types` and trusted proxies.
//!
//! Clients: tokio-tungstenite (a real WebSocket client) for the ordinary
//! path, and `support::ws::WsClient` (frames built by hand) for the rest.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nkeys::KeyPair;
use support::jwt as j;
use support::ws::{WsClient, close_parts, request, upgrade_raw};
use support::{Frame, Gate, NatsServer, RawClient, keys, quote_toml};
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "ws-gate-s3cret";

struct Setup {
    _upstream: NatsServer,
    gate: Gate,
    alice: KeyPair,
    bob: KeyPair,
}

/// natsgate with `[websocket]` (+ `ws_extra` lines), static users alice
/// (everything) and bob (may not subscribe to `secret.>`).
fn setup(ws_extra: &str) -> Setup {
    setup_with("", ws_extra)
}

/// As [`setup`], with more `[listen]` lines.
fn setup_with(listen_extra: &str, ws_extra: &str) -> Setup {
    let upstream = NatsServer::start(&j::upstream_config(PASSWORD));
    let alice = keys::new_user();
    let bob = keys::new_user();
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\nmax_payload = 4096\n{listen_extra}\n\n\
         [upstream]\nservers = [{}]\nuser = \"gate\"\npassword = {}\n\n\
         [websocket]\naddr = \"127.0.0.1:0\"\nno_tls = true\n{ws_extra}\n\n\
         [[users]]\nnkey = {}\nname = \"alice\"\n\n\
         [[users]]\nnkey = {}\nname = \"bob\"\n[users.permissions]\nsubscribe = {{ deny = [\"secret.>\"] }}\n",
        quote_toml(&upstream.url()),
        quote_toml(PASSWORD),
        quote_toml(&alice.public_key()),
        quote_toml(&bob.public_key()),
    );
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::start_websocket(&toml, dir);
    Setup {
        _upstream: upstream,
        gate,
        alice,
        bob,
    }
}

async fn tcp_client(s: &Setup, kp: &KeyPair) -> RawClient {
    let mut c = RawClient::connect(s.gate.addr()).await;
    c.connect_nkey(kp, serde_json::json!({})).await;
    c.send(b"PING\r\n").await;
    assert_eq!(c.read_frame().await, Frame::Pong);
    c
}

/// The next frame from a TCP client, natsgate's INFO after CONNECT skipped.
async fn tcp_read(c: &mut RawClient) -> Frame {
    loop {
        match c.read_frame().await {
            Frame::Info(_) => {}
            other => return other,
        }
    }
}

async fn ws_login(s: &Setup, kp: &KeyPair, extra: &str) -> WsClient {
    let mut c = WsClient::connect(s.gate.ws_addr(), extra).await;
    c.connect_nkey(kp).await;
    c.send(b"PING\r\n").await;
    assert_eq!(c.read_frame().await, Frame::Pong);
    c
}

#[tokio::test]
async fn tungstenite_client_publishes_subscribes_and_requests() {
    let s = setup("");
    let url = format!("ws://{}/", s.gate.ws_addr());
    let (mut ws, response) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("upgrade in time")
    .expect("upgrade");
    assert_eq!(response.status(), 101);
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    let mut nats = Vec::new();
    let next = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, nats: &mut Vec<u8>| loop {
        if let Some((frame, used)) = support::raw::parse_frame(nats).unwrap() {
            nats.drain(..used);
            // natsgate's INFO after CONNECT is not what the test waits for.
            if matches!(&frame, Frame::Info(v) if v.get("connect_info").is_some()) {
                continue;
            }
            return frame;
        }
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Binary(b) = msg {
            nats.extend_from_slice(&b);
        }
    };
    let Frame::Info(info) = next(&mut ws, &mut nats).await else {
        panic!("INFO first")
    };
    assert!(info.get("tls_required").is_none_or(|v| v == false));
    // As nats-server: the WebSocket listener's port, no connect_urls.
    assert_eq!(info["port"], s.gate.ws_addr().port());
    assert!(
        info.get("connect_urls")
            .is_none_or(|v| v.as_array().is_some_and(|a| a.is_empty()))
    );
    let nonce = info["nonce"].as_str().unwrap().to_string();
    let connect = serde_json::json!({"verbose": false, "pedantic": false, "protocol": 1,
        "nkey": s.alice.public_key(), "sig": keys::sign_nonce(&s.alice, &nonce), "headers": true});
    let ops = format!("CONNECT {connect}\r\nSUB ws.in 1\r\nSUB svc 2\r\nPING\r\n");
    ws.send(Message::binary(ops.into_bytes())).await.unwrap();
    assert_eq!(next(&mut ws, &mut nats).await, Frame::Pong);

    // TCP → WebSocket.
    let mut tcp = tcp_client(&s, &s.alice).await;
    tcp.send(b"SUB ws.out 9\r\nPING\r\n").await;
    assert_eq!(tcp_read(&mut tcp).await, Frame::Pong);
    tcp.send(b"PUB ws.in 5\r\nhello\r\n").await;
    assert_eq!(
        next(&mut ws, &mut nats).await,
        Frame::msg("ws.in", "1", b"hello")
    );
    // WebSocket → TCP.
    ws.send(Message::binary(&b"PUB ws.out 2\r\nhi\r\n"[..]))
        .await
        .unwrap();
    assert_eq!(tcp_read(&mut tcp).await, Frame::msg("ws.out", "9", b"hi"));
    // A request from TCP answered over WebSocket.
    tcp.send(b"SUB _INBOX.r 10\r\nPUB svc _INBOX.r 3\r\nask\r\n")
        .await;
    let Frame::Msg { reply, .. } = next(&mut ws, &mut nats).await else {
        panic!("request delivered")
    };
    let reply = reply.expect("reply subject");
    ws.send(Message::binary(
        format!("PUB {reply} 6\r\nanswer\r\n").into_bytes(),
    ))
    .await
    .unwrap();
    assert_eq!(
        tcp_read(&mut tcp).await,
        Frame::msg("_INBOX.r", "10", b"answer")
    );
    // A clean close: echoed.
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn ops_split_across_frames_fragments_text_and_pings_between() {
    let s = setup("");
    let mut c = WsClient::connect(s.gate.ws_addr(), "").await;
    let sig = keys::sign_nonce(&s.alice, &c.nonce());
    let connect = format!(
        "CONNECT {}\r\n",
        serde_json::json!({"verbose": false, "protocol": 1, "nkey": s.alice.public_key(), "sig": sig})
    );
    // The CONNECT split over three whole frames.
    let (a, rest) = connect.as_bytes().split_at(10);
    let (b, d) = rest.split_at(20);
    for part in [a, b, d] {
        c.send(part).await;
    }
    // One message in three fragments: binary (not final), ping, continuation,
    // pong, final continuation; then a text frame.
    let ops = b"SUB split 1\r\nPUB split 5\r\nhello\r\n";
    let mut bytes = c.frame(2, false, false, &ops[..7]);
    bytes.extend(c.frame(9, true, false, b"are you there"));
    bytes.extend(c.frame(0, false, false, &ops[7..20]));
    bytes.extend(c.frame(10, true, false, b"unsolicited"));
    bytes.extend(c.frame(0, true, false, &ops[20..]));
    bytes.extend(c.frame(1, true, false, b"PING\r\n"));
    // Byte by byte across TCP segments, to split frame headers too.
    for chunk in bytes.chunks(3) {
        c.send_raw(chunk).await;
    }
    assert_eq!(c.read_frame().await, Frame::msg("split", "1", b"hello"));
    assert_eq!(c.read_frame().await, Frame::Pong);
    let pong = c.controls.iter().find(|f| f.opcode == 10).expect("a pong");
    assert_eq!(pong.payload, b"are you there");
    // Server frames are binary, final and unmasked.
    assert!(
        c.data_frames
            .iter()
            .all(|&(fin, rsv1, op, _)| fin && !rsv1 && op == 2)
    );
}

#[tokio::test]
async fn compression_taken_when_on_and_offered() {
    let s = setup("compression = true");
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let mut c = WsClient::connect(s.gate.ws_addr(), offer).await;
    assert_eq!(
        c.answer.header("Sec-WebSocket-Extensions").as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    assert!(c.data_frames[0].1, "the INFO came compressed");
    let sig = keys::sign_nonce(&s.alice, &c.nonce());
    let connect = serde_json::json!({"verbose": false, "protocol": 1, "nkey": s.alice.public_key(), "sig": sig});
    c.send_compressed(format!("CONNECT {connect}\r\nSUB z 1\r\n").as_bytes())
        .await;
    // Compressed and plain messages mix.
    let payload = "z".repeat(500);
    c.send(format!("PUB z {}\r\n{payload}\r\n", payload.len()).as_bytes())
        .await;
    c.send_compressed(b"PING\r\n").await;
    assert_eq!(
        c.read_frame().await,
        Frame::msg("z", "1", payload.as_bytes())
    );
    assert_eq!(c.read_frame().await, Frame::Pong);
    assert!(
        c.data_frames.iter().any(|f| f.1),
        "large deliveries compressed"
    );
    // Without an offer: no compression.
    let c = WsClient::connect(s.gate.ws_addr(), "").await;
    assert!(c.answer.header("Sec-WebSocket-Extensions").is_none());
    assert!(!c.data_frames[0].1);
}

#[tokio::test]
async fn compression_off_ignores_the_offer_and_refuses_compressed_frames() {
    let s = setup("");
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let mut c = WsClient::connect(s.gate.ws_addr(), offer).await;
    assert!(c.answer.header("Sec-WebSocket-Extensions").is_none());
    assert!(!c.data_frames[0].1, "INFO not compressed");
    c.send_compressed(b"PING\r\n").await;
    assert!(c.dropped_without_close().await);
}

#[tokio::test]
async fn no_masking_is_echoed_and_unmasked_frames_accepted() {
    let s = setup("");
    let mut c = WsClient::connect(s.gate.ws_addr(), "Nats-No-Masking: true\r\n").await;
    assert_eq!(c.answer.header("Nats-No-Masking").as_deref(), Some("true"));
    c.mask = false;
    c.connect_nkey(&s.alice).await;
    c.send(b"PING\r\n").await;
    assert_eq!(c.read_frame().await, Frame::Pong);
}

#[tokio::test]
async fn unmasked_frame_drops_the_connection_without_a_close_frame() {
    let s = setup("");
    let mut c = ws_login(&s, &s.alice, "").await;
    c.mask = false;
    c.send(b"PING\r\n").await;
    assert!(
        c.dropped_without_close().await,
        "controls: {:?}",
        c.controls
    );
}

#[tokio::test]
async fn bad_upgrades_answered_as_nats_server() {
    let s = setup("allowed_origins = [\"https://app.example.com\"]");
    let addr = s.gate.ws_addr();
    // No Upgrade header.
    let no_upgrade = request(addr, "").replace("Upgrade: websocket\r\n", "");
    let (_, answer, _) = upgrade_raw(addr, &no_upgrade).await;
    assert_eq!(answer.status, 400, "{}", answer.head);
    assert_eq!(
        answer.header("Sec-Websocket-Version").as_deref(),
        Some("13")
    );
    assert_eq!(answer.body, "Bad Request\n");
    // Version 12.
    let v12 = request(addr, "").replace("Version: 13", "Version: 12");
    let (_, answer, _) = upgrade_raw(addr, &v12).await;
    assert_eq!(answer.status, 400);
    // Not GET.
    let post = request(addr, "").replacen("GET", "POST", 1);
    let (_, answer, _) = upgrade_raw(addr, &post).await;
    assert_eq!(answer.status, 405);
    // Origins: listed ok, others 403, none ok.
    let (_, answer, _) =
        upgrade_raw(addr, &request(addr, "Origin: https://evil.example.com\r\n")).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.body, "Forbidden\n");
    let (_, answer, _) =
        upgrade_raw(addr, &request(addr, "Origin: https://app.example.com\r\n")).await;
    assert_eq!(answer.status, 101);
    assert_eq!(
        answer.head.lines().filter(|l| !l.is_empty()).count(),
        4,
        "status + Upgrade, Connection, Sec-WebSocket-Accept only: {}",
        answer.head
    );
    let (_, answer, _) = upgrade_raw(
        addr,
        &request(addr, "Sec-WebSocket-Protocol: nats, mqtt\r\n"),
    )
    .await;
    assert_eq!(answer.status, 101);
    assert!(
        answer.header("Sec-WebSocket-Protocol").is_none(),
        "no subprotocol"
    );
}

#[tokio::test]
async fn same_origin() {
    let s = setup("same_origin = true");
    let addr = s.gate.ws_addr();
    let ok = request(addr, &format!("Origin: http://{addr}\r\n"));
    assert_eq!(upgrade_raw(addr, &ok).await.1.status, 101);
    let other = request(addr, "Origin: http://127.0.0.1:1\r\n");
    assert_eq!(upgrade_raw(addr, &other).await.1.status, 403);
}

#[tokio::test]
async fn oversized_payload_refused_as_on_tcp() {
    let s = setup("");
    let mut c = ws_login(&s, &s.alice, "").await;
    // max_payload is 4096: a PUB over it, in one frame.
    let big = "x".repeat(5000);
    c.send(format!("PUB big {}\r\n{big}\r\n", big.len()).as_bytes())
        .await;
    assert_eq!(
        c.read_frame().await,
        Frame::err("Maximum Payload Violation")
    );
    let close = c.read_close().await.expect("a close frame");
    assert_eq!(close_parts(&close).0, 1009);
}

#[tokio::test]
async fn oversized_compressed_message_drops_the_connection() {
    let s = setup("compression = true");
    let mut c = WsClient::connect(
        s.gate.ws_addr(),
        "Sec-WebSocket-Extensions: permessage-deflate\r\n",
    )
    .await;
    c.connect_nkey(&s.alice).await;
    // Inflates beyond 8 × max_payload.
    let flood = vec![b' '; 8 * 4096 + 1];
    c.send_compressed(&flood).await;
    assert!(c.dropped_without_close().await);
}

#[tokio::test]
async fn client_close_is_echoed_with_its_code_and_reason() {
    let s = setup("");
    let mut c = ws_login(&s, &s.alice, "").await;
    let mut payload = 4000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"done here");
    let f = c.frame(8, true, false, &payload);
    c.send_raw(&f).await;
    assert_eq!(c.read_close().await, Some(payload));
}

#[tokio::test]
async fn auth_refusal_then_close_1008() {
    let s = setup("");
    let mut c = WsClient::connect(s.gate.ws_addr(), "").await;
    let stranger = keys::new_user();
    c.connect_nkey(&stranger).await;
    assert_eq!(c.read_frame().await, Frame::err("Authorization Violation"));
    let close = c.read_close().await.expect("a close frame");
    assert_eq!(
        close_parts(&close),
        (1008, "Authentication Failure".to_string())
    );
}

#[tokio::test]
async fn permission_violation_over_websocket() {
    let s = setup("");
    let mut c = ws_login(&s, &s.bob, "").await;
    c.send(b"SUB secret.plans 1\r\nPING\r\n").await;
    assert_eq!(
        c.read_frame().await,
        Frame::err("Permissions Violation for Subscription to \"secret.plans\"")
    );
    assert_eq!(c.read_frame().await, Frame::Pong, "the connection stays");
}

#[tokio::test]
async fn browser_user_agent_gets_frames_of_at_most_4096_bytes() {
    let s = setup("");
    let mut c = ws_login(
        &s,
        &s.alice,
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n",
    )
    .await;
    let payload = "b".repeat(4000);
    c.send(
        format!("SUB b 1\r\nPUB b 4000\r\n{payload}\r\nPUB b 4000\r\n{payload}\r\nPING\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(
        c.read_frame().await,
        Frame::msg("b", "1", payload.as_bytes())
    );
    assert_eq!(
        c.read_frame().await,
        Frame::msg("b", "1", payload.as_bytes())
    );
    assert_eq!(c.read_frame().await, Frame::Pong);
    assert!(
        c.data_frames.iter().all(|f| f.3 <= 4096),
        "{:?}",
        c.data_frames
    );
}

// === JWT: connection types and trusted proxies ===

struct JwtSetup {
    _upstream: NatsServer,
    gate: Gate,
    account: KeyPair,
}

fn jwt_setup(ws_extra: &str) -> JwtSetup {
    let upstream = NatsServer::start(&j::upstream_config(PASSWORD));
    let op = j::operator("ws", false, None);
    let account = KeyPair::new_account();
    let account_jwt = j::sign_account(&j::account_claims(&account, "APP"), &op.kp);
    let dir = tempfile::tempdir().unwrap();
    let mut toml = j::gate_setup(
        dir.path(),
        &upstream.url(),
        PASSWORD,
        &[&op.jwt],
        &[(account.public_key(), account_jwt)],
    );
    toml.push_str(&format!(
        "\n[websocket]\naddr = \"127.0.0.1:0\"\nno_tls = true\n{ws_extra}\n"
    ));
    let gate = Gate::start_websocket(&toml, dir);
    JwtSetup {
        _upstream: upstream,
        gate,
        account,
    }
}

fn user_jwt(account: &KeyPair, types: &[&str], src: &[&str]) -> (String, KeyPair) {
    let kp = KeyPair::new_user();
    let mut c = j::user_claims(&kp, "u");
    c.nats.limits.allowed_connection_types = types.iter().map(|s| s.to_string()).collect();
    c.nats.limits.source = src.iter().map(|s| s.to_string()).collect();
    (j::sign_user(&c, account), kp)
}

/// Whether the JWT logs in over WebSocket (with `extra` upgrade headers).
async fn ws_jwt_ok(gate: &Gate, jwt: &str, kp: &KeyPair, extra: &str) -> bool {
    let mut c = WsClient::connect(gate.ws_addr(), extra).await;
    c.connect_jwt(jwt, kp).await;
    c.send(b"PING\r\n").await;
    match c.read_frame().await {
        Frame::Pong => true,
        Frame::Err(e) => {
            assert_eq!(e, "'Authorization Violation'");
            false
        }
        other => panic!("{other:?}"),
    }
}

async fn tcp_jwt_ok(gate: &Gate, jwt: &str, kp: &KeyPair) -> bool {
    let mut c = RawClient::connect(gate.addr()).await;
    j::connect_jwt(&mut c, jwt, Some(kp), serde_json::json!({})).await;
    c.send(b"PING\r\n").await;
    match c.read_frame().await {
        Frame::Pong => true,
        Frame::Err(_) => false,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn allowed_connection_types_tell_websocket_from_standard() {
    let s = jwt_setup("");
    for (types, on_tcp, on_ws) in [
        (&[][..], true, true),
        (&["STANDARD"][..], true, false),
        (&["WEBSOCKET"][..], false, true),
        (&["websocket", "standard"][..], true, true),
        (&["WEBSOCKET", "BOGUS"][..], false, true),
        (&["BOGUS"][..], false, false),
        (&["MQTT_WS", "LEAFNODE_WS"][..], false, false),
    ] {
        let (jwt, kp) = user_jwt(&s.account, types, &[]);
        assert_eq!(
            tcp_jwt_ok(&s.gate, &jwt, &kp).await,
            on_tcp,
            "{types:?} on TCP"
        );
        assert_eq!(
            ws_jwt_ok(&s.gate, &jwt, &kp, "").await,
            on_ws,
            "{types:?} on WebSocket"
        );
    }
}

#[tokio::test]
async fn forwarded_address_believed_only_from_trusted_proxies() {
    let (jwt_src, kp_src) = {
        let s = jwt_setup("trusted_proxies = [\"127.0.0.1/32\"]");
        let (jwt, kp) = user_jwt(&s.account, &[], &["203.0.113.0/24"]);
        // Through the trusted proxy (127.0.0.1), from 203.0.113.9: allowed.
        let xff = "X-Forwarded-For: 203.0.113.9\r\n";
        assert!(ws_jwt_ok(&s.gate, &jwt, &kp, xff).await);
        let c = WsClient::connect(s.gate.ws_addr(), xff).await;
        assert_eq!(c.info["client_ip"], "203.0.113.9");
        // The Forwarded header works too; another client address does not.
        assert!(
            ws_jwt_ok(
                &s.gate,
                &jwt,
                &kp,
                "Forwarded: for=203.0.113.10;proto=https\r\n"
            )
            .await
        );
        assert!(!ws_jwt_ok(&s.gate, &jwt, &kp, "X-Forwarded-For: 198.51.100.1\r\n").await);
        // No header: the peer itself (127.0.0.1) is outside the src list.
        assert!(!ws_jwt_ok(&s.gate, &jwt, &kp, "").await);
        (jwt, kp)
    };
    // Without trusted proxies the header is ignored: 127.0.0.1 is checked.
    let s = jwt_setup("");
    let (jwt, kp) = user_jwt(&s.account, &[], &["203.0.113.0/24"]);
    let xff = "X-Forwarded-For: 203.0.113.9\r\n";
    assert!(!ws_jwt_ok(&s.gate, &jwt, &kp, xff).await);
    let c = WsClient::connect(s.gate.ws_addr(), xff).await;
    assert_eq!(c.info["client_ip"], "127.0.0.1");
    drop((jwt_src, kp_src));
}

#[tokio::test]
async fn shutdown_closes_websocket_clients_with_1001() {
    let s = setup_with("shutdown_grace = \"300ms\"", "");
    let mut c = ws_login(&s, &s.alice, "").await;
    let Setup { gate, .. } = s;
    let stopped = tokio::spawn(gate.shutdown(Duration::from_secs(5)));
    let close = c.read_close().await.expect("a close frame");
    assert_eq!(close_parts(&close), (1001, "Server Shutdown".to_string()));
    assert!(
        c.unparsed().contains("\"ldm\":true"),
        "lame-duck INFO first: {}",
        c.unparsed()
    );
    stopped.await.unwrap().unwrap();
}

#[tokio::test]
async fn auth_timeout_over_websocket() {
    let s = setup_with("auth_timeout = \"300ms\"", "");
    let mut c = WsClient::connect(s.gate.ws_addr(), "").await;
    assert_eq!(c.read_frame().await, Frame::err("Authentication Timeout"));
    let close = c.read_close().await.expect("a close frame");
    assert_eq!(
        close_parts(&close),
        (1008, "Authentication Timeout".to_string())
    );
}

#[tokio::test]
async fn max_connections_counts_both_listeners() {
    let s = setup_with("max_connections = 1", "");
    let _tcp = tcp_client(&s, &s.alice).await;
    let mut c = WsClient::connect(s.gate.ws_addr(), "").await;
    assert_eq!(
        c.read_frame().await,
        Frame::err("maximum connections exceeded")
    );
    let close = c.read_close().await.expect("a close frame");
    assert_eq!(close_parts(&close).0, 1008);
}

#[tokio::test]
async fn handshake_timeout_closes_a_silent_connection() {
    let s = setup("handshake_timeout = \"200ms\"");
    let mut stream = tokio::net::TcpStream::connect(s.gate.ws_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .expect("closed within the bound");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn jwt_cookie_stands_in_for_a_missing_jwt() {
    let s = jwt_setup("jwt_cookie = \"natsjwt\"");
    let (jwt, kp) = user_jwt(&s.account, &[], &[]);
    let cookie = format!("Cookie: theme=dark; natsjwt={jwt}\r\n");
    let mut c = WsClient::connect(s.gate.ws_addr(), &cookie).await;
    c.connect_sig_only(&kp).await;
    c.send(b"PING\r\n").await;
    assert_eq!(c.read_frame().await, Frame::Pong);
    // Without the cookie the same CONNECT has no JWT.
    let mut c = WsClient::connect(s.gate.ws_addr(), "").await;
    c.connect_sig_only(&kp).await;
    assert_eq!(c.read_frame().await, Frame::err("Authorization Violation"));
    // A JWT in the CONNECT wins over the cookie's.
    let (other_jwt, other_kp) = user_jwt(&s.account, &[], &[]);
    let mut c = WsClient::connect(s.gate.ws_addr(), &cookie).await;
    c.connect_jwt(&other_jwt, &other_kp).await;
    c.send(b"PING\r\n").await;
    assert_eq!(c.read_frame().await, Frame::Pong);
}
