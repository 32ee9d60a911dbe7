//! A minimal blocking NATS client speaking the raw protocol: just enough to
//! log in (password or JWT + signed nonce), publish pipelined frames and
//! count deliveries without becoming the bottleneck.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;

/// How a client logs in.
#[derive(Clone)]
pub enum Auth {
    /// `user` / `pass` in CONNECT (the plain nats-server).
    Password { user: String, pass: String },
    /// A user JWT plus the signature of the nonce with the user's key.
    Jwt { jwt: String, key: Arc<KeyPair> },
}

/// One frame the server sent, borrowing from the read buffer.
pub enum Frame<'a> {
    /// `MSG`/`HMSG` (payload skipped): the arguments of the control line.
    Msg {
        args: &'a [u8],
    },
    Pong,
    Info(&'a [u8]),
    Err(&'a [u8]),
    Other,
}

pub struct Client {
    pub sock: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

/// Read buffer size for the clients that carry load.
pub const BIG_BUFFER: usize = 256 * 1024;
/// Read buffer size for idle clients (grows when a frame needs more).
pub const SMALL_BUFFER: usize = 4 * 1024;

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl Client {
    /// Connects, logs in, and waits for the PONG of a PING sent with the
    /// CONNECT, so the server has accepted the login when this returns.
    pub fn connect(addr: SocketAddr, auth: &Auth, buffer: usize) -> io::Result<Client> {
        let sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut c = Client {
            sock,
            buf: vec![0; buffer],
            pos: 0,
            len: 0,
        };
        let mut info = None;
        while info.is_none() {
            c.read_frames(|f| {
                if let Frame::Info(json) = f {
                    info = Some(json.to_vec());
                }
            })?;
        }
        let info: serde_json::Value = serde_json::from_slice(&info.unwrap_or_default())
            .map_err(|e| proto_err(format!("bad INFO: {e}")))?;
        let line = connect_line(auth, &info, true)?;
        c.sock.write_all(&line)?;
        c.ping_pong()?;
        Ok(c)
    }

    /// Sends PING and reads until the PONG (ignoring deliveries); `-ERR` is an
    /// error.
    pub fn ping_pong(&mut self) -> io::Result<()> {
        self.sock.write_all(b"PING\r\n")?;
        self.wait_pong()
    }

    fn wait_pong(&mut self) -> io::Result<()> {
        let mut pong = false;
        let mut err = None;
        while !pong {
            self.read_frames(|f| match f {
                Frame::Pong => pong = true,
                Frame::Err(text) => err = Some(String::from_utf8_lossy(text).into_owned()),
                _ => {}
            })?;
            if let Some(text) = err.take() {
                return Err(proto_err(text));
            }
        }
        Ok(())
    }

    /// Sends `frames` (complete protocol lines) and waits for the PONG of a
    /// PING after them.
    pub fn send_and_flush(&mut self, frames: &[u8]) -> io::Result<()> {
        self.sock.write_all(frames)?;
        self.ping_pong()
    }

    /// Reads once (blocking, or until the read timeout) and calls `f` for
    /// every complete frame buffered. Answers server PINGs.
    pub fn read_frames(&mut self, mut f: impl FnMut(Frame<'_>)) -> io::Result<()> {
        self.fill()?;
        let mut ping = false;
        let mut pos = self.pos;
        loop {
            let data = &self.buf[pos..self.len];
            let Some(nl) = memchr::memmem::find(data, b"\r\n") else {
                break;
            };
            let line = &data[..nl];
            let (verb, args) = match memchr::memchr(b' ', line) {
                Some(sp) => (&line[..sp], &line[sp + 1..]),
                None => (line, &line[..0]),
            };
            match verb {
                b"MSG" | b"HMSG" => {
                    let size = args
                        .rsplit(|&b| b == b' ')
                        .next()
                        .and_then(|s| std::str::from_utf8(s).ok())
                        .and_then(|s| s.parse::<usize>().ok())
                        .ok_or_else(|| proto_err("bad MSG line"))?;
                    let total = nl + 2 + size + 2;
                    if data.len() < total {
                        break;
                    }
                    f(Frame::Msg { args });
                    pos += total;
                    continue;
                }
                b"PING" => ping = true,
                b"PONG" => f(Frame::Pong),
                b"INFO" => f(Frame::Info(args)),
                b"-ERR" => f(Frame::Err(args)),
                _ => f(Frame::Other),
            }
            pos += nl + 2;
        }
        self.pos = pos;
        if ping {
            self.sock.write_all(b"PONG\r\n")?;
        }
        Ok(())
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
        } else if self.pos > 0 && (self.len == self.buf.len() || self.pos > self.buf.len() / 2) {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len == self.buf.len() {
            let size = self.buf.len() * 2;
            self.buf.resize(size, 0);
        }
        let n = self.sock.read(&mut self.buf[self.len..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        self.len += n;
        Ok(())
    }

    /// Closes with a reset (`SO_LINGER` 0), so that connection-rate runs do
    /// not fill the port range with TIME_WAIT sockets.
    pub fn close_now(self) {
        reset_on_close(&self.sock);
    }
}

/// Sets `SO_LINGER` to 0: the close sends RST and leaves no TIME_WAIT.
pub fn reset_on_close(sock: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor, a properly sized and aligned option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Whether a read ended only because of the read timeout.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The reply subject of a `MSG` argument list (`subject sid [reply] size`).
pub fn reply_of(args: &[u8]) -> Option<&[u8]> {
    let mut parts = args.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let _subject = parts.next()?;
    let _sid = parts.next()?;
    let third = parts.next()?;
    parts.next().map(|_| third)
}

/// The CONNECT line (with CR LF) for `auth`, answering the server's `info`
/// (its nonce signed for a JWT login). `headers` asks for headers and
/// no-responders.
pub fn connect_line(auth: &Auth, info: &serde_json::Value, headers: bool) -> io::Result<Vec<u8>> {
    let mut connect = serde_json::json!({
        "verbose": false, "pedantic": false, "protocol": 1,
        "lang": "natsgate-bench", "version": "0",
    });
    if headers {
        connect["headers"] = true.into();
        connect["no_responders"] = true.into();
    }
    match auth {
        Auth::Password { user, pass } => {
            connect["user"] = user.as_str().into();
            connect["pass"] = pass.as_str().into();
        }
        Auth::Jwt { jwt, key } => {
            let nonce = info["nonce"]
                .as_str()
                .ok_or_else(|| proto_err("INFO without a nonce"))?;
            let sig = key
                .sign(nonce.as_bytes())
                .map_err(|e| proto_err(format!("sign nonce: {e}")))?;
            connect["jwt"] = jwt.as_str().into();
            connect["sig"] = URL_SAFE_NO_PAD.encode(sig).into();
        }
    }
    Ok(format!("CONNECT {connect}\r\n").into_bytes())
}
