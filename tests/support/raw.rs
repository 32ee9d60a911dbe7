//! A raw NATS protocol client for tests: exact bytes out, parsed frames in.
//!
//! Every wait is bounded by the client's timeout (default [`DEFAULT_TIMEOUT`]).
//! Reading is cancel-safe (own buffer), so a timed-out read loses nothing.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Default bound for every wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest server line accepted by the parser.
const MAX_LINE: usize = 1 << 20;

/// One frame received from a server (or from natsgate).
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// `INFO <json>`; the parsed JSON.
    Info(serde_json::Value),
    Msg {
        subject: String,
        sid: String,
        reply: Option<String>,
        payload: Vec<u8>,
    },
    Hmsg {
        subject: String,
        sid: String,
        reply: Option<String>,
        headers: Vec<u8>,
        payload: Vec<u8>,
    },
    /// `+OK`
    Ok,
    /// `-ERR <text>`: the text exactly as sent after `-ERR `, *including* the
    /// single quotes, e.g. `'Authorization Violation'`. See [`Frame::err`].
    Err(String),
    Ping,
    Pong,
}

impl Frame {
    /// `Frame::Err` for the usual quoted form: `Frame::err("Authorization Violation")`
    /// equals the frame parsed from `-ERR 'Authorization Violation'\r\n`.
    pub fn err(text: &str) -> Frame {
        Frame::Err(format!("'{text}'"))
    }

    /// A MSG frame without reply.
    pub fn msg(subject: &str, sid: &str, payload: &[u8]) -> Frame {
        Frame::Msg {
            subject: subject.into(),
            sid: sid.into(),
            reply: None,
            payload: payload.into(),
        }
    }

    /// A MSG frame with a reply subject.
    pub fn msg_reply(subject: &str, sid: &str, reply: &str, payload: &[u8]) -> Frame {
        Frame::Msg {
            subject: subject.into(),
            sid: sid.into(),
            reply: Some(reply.into()),
            payload: payload.into(),
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn opt(r: &Option<String>) -> String {
            r.as_ref().map(|r| format!(" {r}")).unwrap_or_default()
        }
        match self {
            Frame::Info(v) => write!(f, "INFO {v}"),
            Frame::Msg {
                subject,
                sid,
                reply,
                payload,
            } => {
                write!(
                    f,
                    "MSG {subject} {sid}{} {:?}",
                    opt(reply),
                    String::from_utf8_lossy(payload)
                )
            }
            Frame::Hmsg {
                subject,
                sid,
                reply,
                headers,
                payload,
            } => write!(
                f,
                "HMSG {subject} {sid}{} hdr={:?} {:?}",
                opt(reply),
                String::from_utf8_lossy(headers),
                String::from_utf8_lossy(payload)
            ),
            Frame::Ok => write!(f, "+OK"),
            Frame::Err(t) => write!(f, "-ERR {t}"),
            Frame::Ping => write!(f, "PING"),
            Frame::Pong => write!(f, "PONG"),
        }
    }
}

/// Why a read did not produce a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Nothing (complete) arrived within the timeout.
    Timeout,
    /// The peer closed the connection (EOF or reset); `pending` is any
    /// incomplete trailing bytes.
    Closed {
        pending: Vec<u8>,
    },
    /// The peer sent something that is not a valid server frame.
    Protocol(String),
    Io(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Timeout => write!(f, "timed out"),
            ReadError::Closed { pending } if pending.is_empty() => write!(f, "connection closed"),
            ReadError::Closed { pending } => {
                write!(
                    f,
                    "connection closed with partial frame {:?}",
                    String::from_utf8_lossy(pending)
                )
            }
            ReadError::Protocol(m) => write!(f, "protocol error: {m}"),
            ReadError::Io(m) => write!(f, "i/o error: {m}"),
        }
    }
}

/// `flush` failed: the frames read before the failure, and the failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushError {
    pub frames: Vec<Frame>,
    pub error: ReadError,
}

/// A raw-protocol client connection.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    info: serde_json::Value,
    timeout: Duration,
    eof: bool,
}

impl RawClient {
    /// Connects and reads the first INFO (bounded). Panics on failure.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        match Self::try_connect(addr).await {
            Ok(c) => c,
            Err(e) => panic!("RawClient::connect({addr}): {e}"),
        }
    }

    /// Connects and reads the first INFO (bounded).
    pub async fn try_connect(addr: SocketAddr) -> Result<RawClient, String> {
        let stream = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| "TCP connect timed out".to_owned())?
            .map_err(|e| format!("TCP connect failed (is the server/gate running?): {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut c = RawClient {
            stream,
            buf: Vec::new(),
            info: serde_json::Value::Null,
            timeout: DEFAULT_TIMEOUT,
            eof: false,
        };
        match c.try_read_frame().await {
            Ok(Frame::Info(v)) => c.info = v,
            Ok(other) => return Err(format!("expected INFO first, got {other:?}")),
            Err(e) => return Err(format!("reading first INFO: {e}")),
        }
        Ok(c)
    }

    /// Changes the bound used by every later wait.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The first INFO's JSON.
    pub fn info(&self) -> &serde_json::Value {
        &self.info
    }

    /// The nonce from the first INFO, if any.
    pub fn nonce(&self) -> Option<&str> {
        self.info.get("nonce").and_then(|n| n.as_str())
    }

    /// Sends `CONNECT` authenticating as NKey user `kp`: `nkey` = public key,
    /// `sig` = signature of the INFO nonce's ASCII bytes, base64 URL alphabet
    /// without padding. Fields of `extra` (a JSON object) are added and
    /// override the defaults `verbose:false, pedantic:false, protocol:1`.
    /// Does not wait for any answer (follow with `flush()` or `read_frame()`).
    pub async fn connect_nkey(&mut self, kp: &nkeys::KeyPair, extra: serde_json::Value) {
        let nonce = self
            .nonce()
            .expect("INFO has no nonce; cannot sign")
            .to_owned();
        let sig = super::keys::sign_nonce(kp, &nonce);
        let mut obj = serde_json::json!({
            "verbose": false, "pedantic": false, "protocol": 1,
            "lang": "raw-test", "version": "0",
            "nkey": kp.public_key(), "sig": sig,
        });
        if let serde_json::Value::Object(extra) = extra {
            for (k, v) in extra {
                obj[k] = v;
            }
        } else if !extra.is_null() {
            panic!("connect_nkey: extra must be a JSON object or null, got {extra}");
        }
        self.send(format!("CONNECT {obj}\r\n").as_bytes()).await;
    }

    /// Sends `CONNECT <json>` as given.
    pub async fn connect_json(&mut self, json: &serde_json::Value) {
        self.send(format!("CONNECT {json}\r\n").as_bytes()).await;
    }

    /// Writes raw bytes (bounded). Panics on failure.
    pub async fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes).await {
            panic!("RawClient::send({:?}): {e}", String::from_utf8_lossy(bytes));
        }
    }

    /// Writes raw bytes (bounded).
    pub async fn try_send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await {
            Err(_) => Err("write timed out".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads one frame (bounded by the timeout). Panics on timeout, close or garbage.
    pub async fn read_frame(&mut self) -> Frame {
        match self.try_read_frame().await {
            Ok(f) => f,
            Err(e) => panic!("RawClient::read_frame: {e}"),
        }
    }

    /// Reads one frame (bounded by the timeout).
    pub async fn try_read_frame(&mut self) -> Result<Frame, ReadError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.read_frame_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(ReadError::Timeout),
        }
    }

    /// Like `try_read_frame` but with its own bound.
    pub async fn try_read_frame_within(&mut self, within: Duration) -> Result<Frame, ReadError> {
        match tokio::time::timeout(within, self.read_frame_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(ReadError::Timeout),
        }
    }

    async fn read_frame_unbounded(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            if self.eof {
                return Err(ReadError::Closed {
                    pending: self.buf.clone(),
                });
            }
            if self.buf.len() > MAX_LINE + 16 && !self.buf.contains(&b'\n') {
                return Err(ReadError::Protocol("control line longer than 1 MiB".into()));
            }
            // `read_buf` is cancel-safe: bytes land in self.buf or not at all.
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.eof = true
                }
                Err(e) => return Err(ReadError::Io(e.to_string())),
            }
        }
    }

    /// Sends `PING` and collects every frame up to the answering `PONG`
    /// (excluded). Server-initiated `PING`s are answered with `PONG` and not
    /// returned. Panics on timeout or close.
    pub async fn flush(&mut self) -> Vec<Frame> {
        match self.try_flush().await {
            Ok(f) => f,
            Err(e) => panic!("RawClient::flush: {} after frames {:?}", e.error, e.frames),
        }
    }

    /// As [`flush`](Self::flush) but reports failures with the frames read so far.
    pub async fn try_flush(&mut self) -> Result<Vec<Frame>, FlushError> {
        if let Err(e) = self.try_send(b"PING\r\n").await {
            return Err(FlushError {
                frames: Vec::new(),
                error: ReadError::Io(e),
            });
        }
        self.collect_until_pong().await
    }

    /// Collects frames until a `PONG` (excluded), answering server PINGs.
    /// Use after sending something that ends in `PING` yourself.
    pub async fn collect_until_pong(&mut self) -> Result<Vec<Frame>, FlushError> {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_read_frame_within(left).await {
                Ok(Frame::Pong) => return Ok(frames),
                Ok(Frame::Ping) => {
                    if let Err(e) = self.try_send(b"PONG\r\n").await {
                        return Err(FlushError {
                            frames,
                            error: ReadError::Io(e),
                        });
                    }
                }
                Ok(f) => frames.push(f),
                Err(error) => return Err(FlushError { frames, error }),
            }
        }
    }

    /// Expects the peer to close the connection within the timeout and returns
    /// the frames read before the close (check them yourself, e.g. for a
    /// final `-ERR`). Panics on timeout or garbage.
    pub async fn expect_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_read_frame_within(left).await {
                Ok(f) => frames.push(f),
                Err(ReadError::Closed { .. }) => return frames,
                Err(ReadError::Io(_)) => return frames,
                Err(e) => panic!("expected the connection to close: {e}; frames read: {frames:?}"),
            }
        }
    }

    /// Asserts that nothing arrives for `quiet` (then the connection is still usable).
    pub async fn expect_nothing_for(&mut self, quiet: Duration) {
        match self.try_read_frame_within(quiet).await {
            Err(ReadError::Timeout) => {}
            Ok(f) => panic!("expected silence for {quiet:?}, got {f:?}"),
            Err(e) => panic!("expected silence for {quiet:?}, got {e}"),
        }
    }

    /// The socket and the bytes read from it but not parsed yet, for a
    /// caller that parses a high-volume stream itself (counting thousands
    /// of MSG frames).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Shuts down the write side and drops the connection.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}

/// Parses one frame from the start of `buf`: `Ok(Some((frame, bytes used)))`,
/// `Ok(None)` when more bytes are needed.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, ReadError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let line_end = nl + 1;
    if nl == 0 || buf[nl - 1] != b'\r' {
        return Err(ReadError::Protocol(format!(
            "line not terminated by CRLF: {:?}",
            String::from_utf8_lossy(&buf[..line_end])
        )));
    }
    let line = std::str::from_utf8(&buf[..nl - 1])
        .map_err(|_| ReadError::Protocol(format!("non-UTF-8 control line {:?}", &buf[..nl - 1])))?;
    let proto = |m: &str| ReadError::Protocol(format!("{m}: {line:?}"));
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let simple = |f: Frame| -> Result<Option<(Frame, usize)>, ReadError> {
        if rest.is_empty() {
            Ok(Some((f, line_end)))
        } else {
            Err(proto("unexpected arguments"))
        }
    };
    match verb {
        "PING" => simple(Frame::Ping),
        "PONG" => simple(Frame::Pong),
        "+OK" => simple(Frame::Ok),
        "-ERR" => Ok(Some((Frame::Err(rest.to_owned()), line_end))),
        "INFO" => {
            let v: serde_json::Value = serde_json::from_str(rest.trim_end())
                .map_err(|e| proto(&format!("bad INFO JSON ({e})")))?;
            Ok(Some((Frame::Info(v), line_end)))
        }
        "MSG" | "HMSG" => {
            let args: Vec<&str> = rest.split(' ').collect();
            if args.iter().any(|a| a.is_empty()) {
                return Err(proto("empty argument (double or trailing space)"));
            }
            let size = |s: &str| -> Result<usize, ReadError> {
                if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(proto("bad size"));
                }
                Ok(s.parse().expect("digits"))
            };
            let hmsg = verb == "HMSG";
            let (nfix, sizes) = if hmsg { (2, 2) } else { (2, 1) };
            let reply = match args.len() - sizes {
                n if n == nfix => None,
                n if n == nfix + 1 => Some(args[2].to_owned()),
                _ => return Err(proto("wrong argument count")),
            };
            let total = size(args[args.len() - 1])?;
            let hdr = if hmsg { size(args[args.len() - 2])? } else { 0 };
            if hdr > total {
                return Err(proto("header size above total size"));
            }
            let need = line_end + total + 2;
            if buf.len() < need {
                return Ok(None);
            }
            if &buf[line_end + total..need] != b"\r\n" {
                return Err(proto("payload not followed by CRLF"));
            }
            let body = &buf[line_end..line_end + total];
            let subject = args[0].to_owned();
            let sid = args[1].to_owned();
            let frame = if hmsg {
                Frame::Hmsg {
                    subject,
                    sid,
                    reply,
                    headers: body[..hdr].to_vec(),
                    payload: body[hdr..].to_vec(),
                }
            } else {
                Frame::Msg {
                    subject,
                    sid,
                    reply,
                    payload: body.to_vec(),
                }
            };
            Ok(Some((frame, need)))
        }
        _ => Err(proto("unknown verb")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames() {
        let (f, n) = parse_frame(b"MSG a.b 7 r 3\r\nabc\r\nPING")
            .unwrap()
            .unwrap();
        assert_eq!(f, Frame::msg_reply("a.b", "7", "r", b"abc"));
        assert_eq!(n, 20);
        assert_eq!(parse_frame(b"MSG a 1 3\r\nab").unwrap(), None);
        let (f, _) = parse_frame(b"-ERR 'Authorization Violation'\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(f, Frame::err("Authorization Violation"));
        let (f, _) = parse_frame(b"HMSG a 1 2 5\r\nhhabc\r\n").unwrap().unwrap();
        assert!(
            matches!(f, Frame::Hmsg { ref headers, ref payload, .. } if headers == b"hh" && payload == b"abc")
        );
        let (f, _) = parse_frame(b"INFO {\"a\":1} \r\n").unwrap().unwrap();
        assert_eq!(f, Frame::Info(serde_json::json!({"a":1})));
        assert!(parse_frame(b"PONG\n").is_err());
    }
}
