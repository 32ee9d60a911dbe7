//! TLS on both sides, with certificates made at test time: official clients
//! (async-nats, nats-py) to natsgate, natsgate to a nats-server that
//! requires TLS.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use serde_json::json;
use support::{Gate, NatsServer, RawClient, keys, quote_conf, quote_toml};

const PASSWORD: &str = "gate-upstream-s3cret";

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate, as PEM files in a tempdir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "natsgate test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for (name, sans, usage) in [
            (
                "server",
                vec!["localhost".to_string(), "127.0.0.1".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            (
                "client",
                vec!["client.test".to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}-key.pem")),
                key.serialize_pem(),
            )
            .unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn toml_path(&self, name: &str) -> String {
        quote_toml(self.path(name).to_str().unwrap())
    }

    /// natsgate's `[listen.tls]` with the server certificate, plus `extra`
    /// lines (e.g. `ca_file`, `handshake_first`).
    fn listen_tls(&self, extra: &str) -> String {
        format!(
            "[listen.tls]\ncert_file = {}\nkey_file = {}\n{extra}",
            self.toml_path("server.pem"),
            self.toml_path("server-key.pem"),
        )
    }

    /// `ca_file = ...`: clients must present a certificate signed by the CA.
    fn ca_line(&self) -> String {
        format!("ca_file = {}", self.toml_path("ca.pem"))
    }
}

fn plain_upstream() -> NatsServer {
    NatsServer::start(&format!(
        "authorization {{ users = [ {{user: \"gate\", password: \"{PASSWORD}\"}} ] }}\n"
    ))
}

fn gate_toml(
    upstream_url: &str,
    listen: &str,
    upstream_extra: &str,
    kp: &nkeys::KeyPair,
    other: &nkeys::KeyPair,
) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{listen}\n\n[upstream]\nservers = [{}]\nuser = \"gate\"\npassword = {}\n{upstream_extra}\n\n\
         [[users]]\nnkey = {}\n\n[[users]]\nnkey = {}\n",
        quote_toml(upstream_url),
        quote_toml(PASSWORD),
        quote_toml(&kp.public_key()),
        quote_toml(&other.public_key()),
    )
}

/// A request/reply round trip between two async-nats clients.
async fn round_trip(service: async_nats::Client, caller: async_nats::Client) {
    let mut requests = service.subscribe("svc.tls").await.unwrap();
    service.flush().await.unwrap();
    tokio::spawn(async move {
        if let Some(msg) = requests.next().await
            && let Some(reply) = msg.reply
        {
            service.publish(reply, "over tls".into()).await.unwrap();
            service.flush().await.unwrap();
        }
    });
    let answer = support::request_when_served(&caller, "svc.tls", b"hi").await;
    assert_eq!(&answer.payload[..], b"over tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_over_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let upstream = plain_upstream();
    let (a, b) = (keys::new_user(), keys::new_user());
    let listen = pki.listen_tls(&pki.ca_line());
    let gate = Gate::start(&gate_toml(&upstream.url(), &listen, "", &a, &b));

    // The INFO comes in clear and says TLS (and a client certificate) is required.
    let raw = RawClient::connect(gate.addr()).await;
    assert_eq!(raw.info()["tls_required"], json!(true));
    assert_eq!(raw.info()["tls_verify"], json!(true));

    let url = format!("tls://localhost:{}", gate.addr().port());
    let connect = |kp: &nkeys::KeyPair, with_cert: bool| {
        let mut options = async_nats::ConnectOptions::with_nkey(kp.seed().unwrap())
            .add_root_certificates(pki.path("ca.pem"))
            .require_tls(true)
            .max_reconnects(Some(1));
        if with_cert {
            options =
                options.add_client_certificate(pki.path("client.pem"), pki.path("client-key.pem"));
        }
        options.connect(url.clone())
    };
    let service = connect(&a, true)
        .await
        .expect("TLS with a client certificate");
    let caller = connect(&b, true)
        .await
        .expect("TLS with a client certificate");
    round_trip(service, caller).await;

    let refused = tokio::time::timeout(Duration::from_secs(10), connect(&b, false)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a client without a certificate must not get in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_first() {
    let pki = Pki::new();
    let upstream = plain_upstream();
    let (a, b) = (keys::new_user(), keys::new_user());
    let listen = pki.listen_tls("handshake_first = true");
    let gate = Gate::start(&gate_toml(&upstream.url(), &listen, "", &a, &b));
    let url = format!("tls://localhost:{}", gate.addr().port());
    let connect = |kp: &nkeys::KeyPair| {
        async_nats::ConnectOptions::with_nkey(kp.seed().unwrap())
            .add_root_certificates(pki.path("ca.pem"))
            .tls_first()
            .connect(url.clone())
    };
    let service = connect(&a).await.expect("TLS first");
    let caller = connect(&b).await.expect("TLS first");
    round_trip(service, caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_an_upstream_that_requires_it() {
    let pki = Pki::new();
    let upstream = NatsServer::start(&format!(
        "debug: true\ntls {{ cert_file: {}, key_file: {} }}\nauthorization {{ users = [ {{user: \"gate\", password: \"{PASSWORD}\"}} ] }}\n",
        quote_conf(pki.path("server.pem").to_str().unwrap()),
        quote_conf(pki.path("server-key.pem").to_str().unwrap()),
    ));
    let (a, b) = (keys::new_user(), keys::new_user());
    let upstream_tls = format!(
        "\n[upstream.tls]\nca_file = {}\nserver_name = \"localhost\"",
        pki.toml_path("ca.pem")
    );
    let url = format!("tls://127.0.0.1:{}", upstream.port());
    let gate = Gate::start(&gate_toml(&url, "", &upstream_tls, &a, &b));
    let gate_url = format!("nats://{}", gate.addr());
    let service = async_nats::ConnectOptions::with_nkey(a.seed().unwrap())
        .connect(&gate_url)
        .await
        .unwrap();
    let caller = async_nats::ConnectOptions::with_nkey(b.seed().unwrap())
        .connect(&gate_url)
        .await
        .unwrap();
    round_trip(service, caller).await;
    assert!(
        upstream.log().contains("TLS handshake complete"),
        "the upstream saw TLS:\n{}",
        upstream.log()
    );
}

/// nats-py, an official client in another language, over TLS with a client
/// certificate and an NKey seed file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_over_tls() {
    let pki = Pki::new();
    let upstream = plain_upstream();
    let (a, b) = (keys::new_user(), keys::new_user());
    let listen = pki.listen_tls(&pki.ca_line());
    let gate = Gate::start(&gate_toml(&upstream.url(), &listen, "", &a, &b));
    let seed = keys::write_seed(pki.dir.path(), "a", &a);
    let script = format!(
        r#"
import asyncio, ssl, nats
async def main():
    ctx = ssl.create_default_context(cafile={ca:?})
    ctx.load_cert_chain({cert:?}, {key:?})
    nc = await nats.connect("tls://localhost:{port}", tls=ctx, nkeys_seed={seed:?}, allow_reconnect=False)
    sub = await nc.subscribe("py.tls")
    await nc.publish("py.tls", b"from python")
    msg = await sub.next_msg(timeout=5)
    print("GOT", msg.data.decode())
    await nc.close()
asyncio.run(asyncio.wait_for(main(), 20))
"#,
        ca = pki.path("ca.pem").to_str().unwrap(),
        cert = pki.path("client.pem").to_str().unwrap(),
        key = pki.path("client-key.pem").to_str().unwrap(),
        port = gate.addr().port(),
        seed = seed.to_str().unwrap(),
    );
    let python = python_with_nats_py();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .output()
    })
    .await
    .unwrap()
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("GOT from python"),
        "nats-py over TLS failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_timeout_covers_the_tls_handshake() {
    let pki = Pki::new();
    let upstream = plain_upstream();
    let (a, b) = (keys::new_user(), keys::new_user());
    let listen = format!(
        "auth_timeout = \"300ms\"
{}",
        pki.listen_tls("")
    );
    let gate = Gate::start(&gate_toml(&upstream.url(), &listen, "", &a, &b));
    let mut silent = RawClient::connect(gate.addr()).await;
    let started = Instant::now();
    silent.set_timeout(Duration::from_secs(3));
    silent.expect_closed().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a client that never starts TLS is closed by the auth timeout, took {took:?}"
    );
}

/// `wss://`: `[websocket.tls]` with the server certificate; a WebSocket
/// client (tokio-tungstenite over tokio-rustls, trusting the test CA) logs
/// in and round-trips a message.
#[tokio::test]
async fn websocket_over_tls() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let pki = Pki::new();
    let upstream = plain_upstream();
    let kp = keys::new_user();
    let other = keys::new_user();
    let mut toml = gate_toml(&upstream.url(), "", "", &kp, &other);
    toml.push_str(&format!(
        "\n[websocket]\naddr = \"127.0.0.1:0\"\n[websocket.tls]\ncert_file = {}\nkey_file = {}\n",
        pki.toml_path("server.pem"),
        pki.toml_path("server-key.pem"),
    ));
    let gate = Gate::start_websocket(&toml, tempfile::tempdir().unwrap());

    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(gate.ws_addr())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .expect("TLS in time")
        .expect("TLS handshake");
    let url = format!("wss://localhost:{}/", gate.ws_addr().port());
    let (mut ws, response) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(url, tls),
    )
    .await
    .expect("upgrade in time")
    .expect("upgrade");
    assert_eq!(response.status(), 101);
    let mut nats = Vec::new();
    let mut next = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| loop {
        if let Some((frame, used)) = support::raw::parse_frame(&nats).unwrap() {
            nats.drain(..used);
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
    let support::Frame::Info(info) = next(&mut ws).await else {
        panic!("INFO first");
    };
    assert_eq!(
        info["tls_required"], true,
        "wss: tls_required as nats-server says it"
    );
    let sig = keys::sign_nonce(&kp, info["nonce"].as_str().unwrap());
    let connect = json!({"verbose": false, "protocol": 0, "nkey": kp.public_key(), "sig": sig});
    let ops = format!("CONNECT {connect}\r\nSUB wss 1\r\nPUB wss 3\r\nenc\r\nPING\r\n");
    ws.send(Message::binary(ops.into_bytes())).await.unwrap();
    assert_eq!(next(&mut ws).await, support::Frame::msg("wss", "1", b"enc"));
    assert_eq!(next(&mut ws).await, support::Frame::Pong);
}
