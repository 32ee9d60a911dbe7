//! A raw WebSocket client for tests: the upgrade with chosen headers, frames
//! built by hand (masked or not, fragmented, compressed with flate2), and
//! the server's frames read back: the NATS bytes of data frames parsed into
//! [`Frame`]s, control frames kept. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::raw::{Frame, parse_frame};

pub const WS_TIMEOUT: Duration = Duration::from_secs(5);
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A frame from the server, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsFrame {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// What the server answered to the upgrade.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    /// The head as sent (status line and headers).
    pub head: String,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

pub struct WsClient {
    stream: TcpStream,
    raw: Vec<u8>,
    /// NATS bytes of the data frames read so far, not parsed yet.
    nats: Vec<u8>,
    /// Compressed fragments of the message being read.
    deflated: Option<Vec<u8>>,
    pub answer: HttpAnswer,
    /// Mask what we send (clients must).
    pub mask: bool,
    /// Control frames read (pings, pongs, closes), in order.
    pub controls: Vec<WsFrame>,
    /// Every data frame header read: (fin, rsv1, opcode, len).
    pub data_frames: Vec<(bool, bool, u8, usize)>,
    pub info: serde_json::Value,
    /// INFOs after the first.
    pub infos: Vec<serde_json::Value>,
    /// A write failed (the server had closed).
    pub write_failed: bool,
    eof: bool,
}

/// The usual upgrade headers (Host and the rest) plus `extra` lines.
pub fn request(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends `request` and reads the HTTP answer (and, for a 101, nothing
/// more). Panics on a timeout.
pub async fn upgrade_raw(addr: SocketAddr, request: &str) -> (TcpStream, HttpAnswer, Vec<u8>) {
    let mut stream = tokio::time::timeout(WS_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WS_TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("HTTP answer in time")
            .unwrap_or(0);
        assert!(
            n > 0,
            "connection closed before the HTTP answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rest = buf[head_end..].to_vec();
    let mut body = String::new();
    if status != 101 {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while rest.len() < len {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WS_TIMEOUT, stream.read(&mut chunk))
                .await
                .expect("HTTP body in time")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        body = String::from_utf8_lossy(&rest).into_owned();
        rest.clear();
    }
    (stream, HttpAnswer { status, head, body }, rest)
}

impl WsClient {
    /// Upgrades with the usual headers plus `extra`, then reads the INFO.
    pub async fn connect(addr: SocketAddr, extra: &str) -> WsClient {
        let (stream, answer, rest) = upgrade_raw(addr, &request(addr, extra)).await;
        assert_eq!(
            answer.status, 101,
            "upgrade refused: {}{}",
            answer.head, answer.body
        );
        let mut c = WsClient {
            stream,
            raw: rest,
            nats: Vec::new(),
            deflated: None,
            answer,
            mask: true,
            controls: Vec::new(),
            data_frames: Vec::new(),
            info: serde_json::Value::Null,
            infos: Vec::new(),
            write_failed: false,
            eof: false,
        };
        match c.read_frame().await {
            Frame::Info(v) => c.info = v,
            other => panic!("expected INFO, got {other:?}"),
        }
        c
    }

    pub fn nonce(&self) -> String {
        self.info["nonce"].as_str().unwrap_or_default().to_string()
    }

    /// One frame: `opcode` with FIN as given, masked when [`WsClient::mask`].
    pub fn frame(&self, opcode: u8, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![opcode | if fin { 0x80 } else { 0 } | if rsv1 { 0x40 } else { 0 }];
        let m = if self.mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x37, 0xfa, 0x21, 0x3d];
        if self.mask {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    /// Writes `bytes`; a failed write (the server closed) is not an error
    /// here: what the server did is read afterwards.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let written = tokio::time::timeout(WS_TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("write in time");
        self.write_failed |= written.is_err();
    }

    /// NATS bytes as one binary frame.
    pub async fn send(&mut self, nats: &[u8]) {
        let f = self.frame(2, true, false, nats);
        self.send_raw(&f).await;
    }

    /// NATS bytes as one compressed binary message (permessage-deflate).
    pub async fn send_compressed(&mut self, nats: &[u8]) {
        let f = self.frame(2, true, true, &deflate(nats));
        self.send_raw(&f).await;
    }

    /// CONNECT with an nkey signature of the nonce.
    pub async fn connect_nkey(&mut self, kp: &nkeys::KeyPair) {
        let sig = super::keys::sign_nonce(kp, &self.nonce());
        let json = serde_json::json!({"verbose": false, "pedantic": false, "protocol": 1,
            "nkey": kp.public_key(), "sig": sig});
        self.send(format!("CONNECT {json}\r\n").as_bytes()).await;
    }

    /// CONNECT with a user JWT signed nonce.
    pub async fn connect_jwt(&mut self, jwt: &str, kp: &nkeys::KeyPair) {
        let sig = super::keys::sign_nonce(kp, &self.nonce());
        let json = serde_json::json!({"verbose": false, "pedantic": false, "protocol": 1,
            "jwt": jwt, "sig": sig});
        self.send(format!("CONNECT {json}\r\n").as_bytes()).await;
    }

    /// CONNECT with only the nonce signature (the JWT comes from a cookie).
    pub async fn connect_sig_only(&mut self, kp: &nkeys::KeyPair) {
        let sig = super::keys::sign_nonce(kp, &self.nonce());
        let json =
            serde_json::json!({"verbose": false, "pedantic": false, "protocol": 1, "sig": sig});
        self.send(format!("CONNECT {json}\r\n").as_bytes()).await;
    }

    /// The next NATS frame from the data frames (panics on timeout/EOF).
    pub async fn read_frame(&mut self) -> Frame {
        match self.try_read_frame().await {
            Ok(f) => f,
            Err(e) => panic!("no NATS frame: {e}; controls {:?}", self.controls),
        }
    }

    pub async fn try_read_frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.nats).map_err(|e| format!("{e:?}"))? {
                self.nats.drain(..used);
                // natsgate's INFO after CONNECT (`connect_info`) is kept
                // aside: tests read the ops around it.
                if let (Frame::Info(v), false) = (&frame, self.info.is_null()) {
                    self.infos.push(v.clone());
                    continue;
                }
                return Ok(frame);
            }
            if !self.read_ws_frame().await? {
                return Err("closed".into());
            }
        }
    }

    /// Reads until the server's close frame (or EOF): returns the close
    /// payload, `None` on EOF without one.
    pub async fn read_close(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(c) = self.controls.iter().find(|c| c.opcode == 8) {
                return Some(c.payload.clone());
            }
            match self.read_ws_frame().await {
                Ok(true) => {}
                _ => return None,
            }
        }
    }

    /// The NATS bytes read and not parsed yet, as text.
    pub fn unparsed(&self) -> String {
        String::from_utf8_lossy(&self.nats).into_owned()
    }

    /// Whether the server ends the TCP stream (EOF or reset) within the
    /// bound, having sent no close frame.
    pub async fn dropped_without_close(&mut self) -> bool {
        loop {
            match self.read_ws_frame().await {
                Ok(true) => {}
                Ok(false) => return !self.controls.iter().any(|c| c.opcode == 8),
                Err(e) if e.contains("reset") || e.contains("EOF") => {
                    return !self.controls.iter().any(|c| c.opcode == 8);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Reads one server frame; false at EOF.
    async fn read_ws_frame(&mut self) -> Result<bool, String> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.raw)? {
                self.raw.drain(..used);
                match frame.opcode {
                    8..=10 => self.controls.push(frame),
                    _ => {
                        self.data_frames.push((
                            frame.fin,
                            frame.rsv1,
                            frame.opcode,
                            frame.payload.len(),
                        ));
                        if frame.rsv1 || self.deflated.is_some() {
                            let d = self.deflated.get_or_insert_with(Vec::new);
                            d.extend_from_slice(&frame.payload);
                            if frame.fin {
                                let d = self.deflated.take().unwrap_or_default();
                                self.nats.extend(inflate(&d));
                            }
                        } else {
                            self.nats.extend_from_slice(&frame.payload);
                        }
                    }
                }
                return Ok(true);
            }
            if self.eof {
                return Ok(false);
            }
            let mut chunk = [0u8; 16384];
            let n = match tokio::time::timeout(WS_TIMEOUT, self.stream.read(&mut chunk)).await {
                Err(_) => return Err("timed out".into()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                self.eof = true;
            }
            self.raw.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A server frame (never masked) at the front of `buf`.
pub fn parse_server_frame(buf: &[u8]) -> Result<Option<(WsFrame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err("server frame masked".into());
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    let payload = buf[at..at + len].to_vec();
    at += len;
    Ok(Some((
        WsFrame {
            fin: buf[0] & 0x80 != 0,
            rsv1: buf[0] & 0x40 != 0,
            opcode: buf[0] & 0x0f,
            payload,
        },
        at,
    )))
}

/// permessage-deflate of one message, tail removed.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let before = c.total_in() as usize;
        c.compress_vec(&data[before..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}

pub fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(data.len() * 4 + 1024);
    loop {
        let before = d.total_in() as usize;
        d.decompress_vec(&input[before..], &mut out, FlushDecompress::Sync)
            .unwrap();
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    out
}

/// A close payload's code and reason.
pub fn close_parts(payload: &[u8]) -> (u16, String) {
    if payload.len() < 2 {
        return (1005, String::new());
    }
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        String::from_utf8_lossy(&payload[2..]).into_owned(),
    )
}
