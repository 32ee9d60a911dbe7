//! Shared support for natsgate's integration tests: a real nats-server
//! ([`NatsServer`]), natsgate in-process ([`Gate`]), a raw-protocol client
//! ([`RawClient`]) and NKey helpers ([`keys`]).
//!
//! Use from a test file with `mod support;`.
#![allow(dead_code, unused_imports)]

pub mod diff;
pub mod gate;
pub mod jwt;
pub mod keys;
pub mod process;
pub mod raw;
pub mod server;
pub mod ws;

pub use gate::Gate;
pub use raw::{DEFAULT_TIMEOUT, FlushError, Frame, RawClient, ReadError};
pub use server::{NatsServer, nats_server_bin, quote_conf};

/// Quotes a string as a TOML basic string.
pub fn quote_toml(s: &str) -> String {
    // JSON string escapes are valid TOML basic-string escapes.
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Sends a request, retrying while the server answers "no responders".
///
/// async-nats' `flush()` only empties the client's own write buffer (no
/// PING round trip), so a responder's SUB may still be on its way when a
/// request from another connection arrives; this waits (bounded) until the
/// responder is really subscribed.
pub async fn request_when_served(
    client: &async_nats::Client,
    subject: &'static str,
    payload: &'static [u8],
) -> async_nats::Message {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let attempt = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.request(subject, bytes::Bytes::from_static(payload)),
        )
        .await
        .expect("the request was answered in time");
        match attempt {
            Ok(message) => return message,
            Err(e)
                if e.kind() == async_nats::RequestErrorKind::NoResponders
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("request on {subject} failed: {e}"),
        }
    }
}

/// One HTTP/1.1 GET over a raw socket, bounded: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no response within 5s"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: malformed response {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: bad status line in {head:?}"));
    (status, body.to_owned())
}
