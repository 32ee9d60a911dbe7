//! The `websocket` part: publish throughput over WebSocket, through
//! natsgate's `[websocket]` listener (upstream: the plain nats-server over
//! TCP) against nats-server's own `websocket {}` listener (operator mode,
//! the same JWT user), in one run.
//!
//! The client is blocking and cheap: one upgrade, then the same pipelined
//! PUB chunk as the TCP publish part, sent as one masked binary frame that
//! is masked once and re-sent (the servers unmask every frame; the client
//! does no per-frame work).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::client::Auth;
use crate::cpu::Probe;
use crate::load::{Moved, pub_chunk};

const MASK: [u8; 4] = [0x1f, 0x8b, 0x3c, 0x55];

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// A masked client frame (opcode 2, final).
fn masked_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
    out
}

struct WsClient {
    sock: TcpStream,
    raw: Vec<u8>,
    nats: Vec<u8>,
}

impl WsClient {
    fn connect(addr: SocketAddr, auth: &Auth) -> io::Result<WsClient> {
        let mut sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            sock,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )?;
        let mut c = WsClient {
            sock,
            raw: Vec::new(),
            nats: Vec::new(),
        };
        let end = loop {
            if let Some(i) = c.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            c.fill()?;
        };
        if !c.raw.starts_with(b"HTTP/1.1 101") {
            return Err(err(format!(
                "upgrade refused: {}",
                String::from_utf8_lossy(&c.raw[..end])
            )));
        }
        c.raw.drain(..end);
        let info = c.line_starting(b"INFO ")?;
        let info: serde_json::Value =
            serde_json::from_slice(&info[5..]).map_err(|e| err(format!("bad INFO: {e}")))?;
        let line = crate::client::connect_line(auth, &info, false)?;
        c.sock.write_all(&masked_frame(&line))?;
        c.ping_pong()?;
        Ok(c)
    }

    fn ping_pong(&mut self) -> io::Result<()> {
        self.sock.write_all(&masked_frame(b"PING\r\n"))?;
        loop {
            let line = self.line_starting(b"")?;
            if line.starts_with(b"PONG") {
                return Ok(());
            }
            if line.starts_with(b"-ERR") {
                return Err(err(String::from_utf8_lossy(&line).into_owned()));
            }
        }
    }

    /// The next NATS line starting with `prefix` (others skipped).
    fn line_starting(&mut self, prefix: &[u8]) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.nats.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.nats.drain(..i + 2).collect();
                if line.starts_with(prefix) {
                    return Ok(line);
                }
                continue;
            }
            self.frame()?;
        }
    }

    /// Reads one server frame; data frames go to `nats` (the servers do not
    /// compress here: no extension was offered).
    fn frame(&mut self) -> io::Result<()> {
        loop {
            if self.raw.len() >= 2 {
                let (len, at) = match self.raw[1] & 0x7f {
                    126 if self.raw.len() >= 4 => {
                        (u16::from_be_bytes([self.raw[2], self.raw[3]]) as usize, 4)
                    }
                    127 if self.raw.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.raw[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if at > 0 && self.raw.len() >= at + len {
                    let opcode = self.raw[0] & 0x0f;
                    if opcode == 8 {
                        return Err(err("closed by the server"));
                    }
                    if opcode <= 2 {
                        self.nats.extend_from_slice(&self.raw[at..at + len]);
                    }
                    self.raw.drain(..at + len);
                    return Ok(());
                }
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16384];
        let n = self.sock.read(&mut chunk)?;
        if n == 0 {
            return Err(err("connection closed"));
        }
        self.raw.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Publish throughput over WebSocket: pipelined PUBs of `size` bytes for
/// `dur`, then PING/PONG so the server has them all.
pub fn publish(
    addr: SocketAddr,
    auth: &Auth,
    probe: Probe,
    size: usize,
    dur: Duration,
) -> io::Result<Moved> {
    let mut c = WsClient::connect(addr, auth)?;
    let (chunk, per) = pub_chunk("bench.ws", size);
    let frame = masked_frame(&chunk);
    let cpu = probe.start();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur {
        c.sock.write_all(&frame)?;
        sent += per;
    }
    c.ping_pong()?;
    Ok(Moved {
        msgs: sent,
        secs: start.elapsed().as_secs_f64(),
        cpu: cpu.stop(),
    })
}
