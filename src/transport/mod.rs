//! A connection as the relay drives it: readiness-based, non-blocking, one
//! task for both directions.
//!
//! - [`Transport::Plain`]: a TCP socket; reads go straight into the relay's
//!   buffer and writes are vectored from its queue (no copy).
//! - [`Transport::Tls`]: the same socket with a rustls connection driven by
//!   hand (`read_tls` → `process_new_packets` → plaintext, and plaintext →
//!   `write_tls`), rustls's own model of "no I/O in the library". The TLS
//!   handshake happened before (tokio-rustls), and its state was handed over.
//! - [`Transport::Ws`]: a WebSocket connection over one of those two
//!   ([`websocket`]): reads give the NATS bytes of its data frames, writes
//!   become binary frames.

use std::io::{self, Read, Write};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

mod queue;
pub mod websocket;

pub use queue::OutQueue;
pub use websocket::WsTransport;

/// Plaintext moved into rustls per write, and the most it buffers.
const TLS_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsTransport>),
    Ws(Box<WsTransport>),
}

#[derive(Debug)]
pub struct TlsTransport {
    tcp: TcpStream,
    conn: rustls::Connection,
    /// Decrypted bytes rustls holds that the relay has not read yet: while
    /// there are any, a read can progress without the socket.
    plaintext: usize,
    /// The peer's close_notify (or EOF) was seen.
    closed: bool,
}

impl Transport {
    /// Wraps a socket and the rustls state of a finished handshake.
    pub fn tls(tcp: TcpStream, conn: impl Into<rustls::Connection>) -> Transport {
        let mut conn: rustls::Connection = conn.into();
        conn.set_buffer_limit(Some(TLS_CHUNK));
        // The handshake may have left decrypted application data behind.
        let plaintext = conn
            .process_new_packets()
            .map_or(0, |io| io.plaintext_bytes_to_read());
        Transport::Tls(Box::new(TlsTransport {
            tcp,
            conn,
            plaintext,
            closed: false,
        }))
    }

    /// Resolves when a read may make progress.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await
    }

    /// Resolves when a write may make progress.
    pub async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_writable(cx)).await
    }

    /// Ready when a read may make progress. Only the waker of the latest
    /// call is woken (one task drives a transport), and nothing is
    /// registered or unregistered per call, unlike [`Transport::readable`]'s
    /// future.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(tcp) => tcp.poll_read_ready(cx),
            Transport::Tls(t) => {
                if t.has_plaintext() {
                    return Poll::Ready(Ok(()));
                }
                t.tcp.poll_read_ready(cx)
            }
            Transport::Ws(w) => w.poll_readable(cx),
        }
    }

    /// Ready when a write may make progress (as [`Transport::poll_readable`]).
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(tcp) => tcp.poll_write_ready(cx),
            Transport::Tls(t) => t.tcp.poll_write_ready(cx),
            Transport::Ws(w) => w.poll_writable(cx),
        }
    }

    /// Whether the transport itself has bytes to send (TLS records).
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.conn.wants_write(),
            Transport::Ws(w) => w.wants_write(),
        }
    }

    /// Reads what is there into `buf` without blocking: `Ok(0)` is the end
    /// of the stream, `WouldBlock` means nothing yet.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => read_plain(tcp, buf),
            Transport::Tls(t) => t.try_read_buf(buf),
            Transport::Ws(w) => w.try_read_buf(buf),
        }
    }

    /// Sends what is left (TLS: the close_notify) and closes the write side.
    pub async fn shutdown(&mut self) {
        match self {
            Transport::Plain(tcp) => {
                let _ = tokio::io::AsyncWriteExt::shutdown(tcp).await;
            }
            Transport::Tls(t) => {
                t.conn.send_close_notify();
                while t.conn.wants_write() {
                    match t.conn.write_tls(&mut SocketIo(&t.tcp)) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if t.tcp.writable().await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut t.tcp).await;
            }
            Transport::Ws(w) => w.shutdown().await,
        }
    }

    /// For a WebSocket client: the close frame to send follows from this
    /// last `-ERR` (`None`: natsgate's own close). Nothing for the others.
    pub fn closing_with(&mut self, error: Option<&[u8]>) {
        if let Transport::Ws(w) = self {
            w.closing_with(error);
        }
    }

    /// Whether this is a WebSocket connection.
    pub fn is_websocket(&self) -> bool {
        matches!(self, Transport::Ws(_))
    }

    /// Writes as much of `queue` as the socket takes without blocking.
    pub fn write_queue(&mut self, queue: &mut OutQueue) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => queue.write_to(tcp),
            Transport::Tls(t) => t.write_queue(queue),
            Transport::Ws(w) => w.write_queue(queue),
        }
    }
}

/// Reads what the socket has into `buf`. A read that does not fill the
/// room in `buf` took everything there was, so the socket's readiness is
/// cleared at once, as tokio's own `poll_read` does: the next wait goes to
/// epoll instead of costing a read that only says `WouldBlock`. (Readiness
/// that arrived meanwhile is kept: tokio clears only the event it saw.)
fn read_plain(tcp: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let mut got = 0;
    let result = tcp.try_io(Interest::READABLE, || {
        got = tcp.try_read_buf(buf)?;
        if got > 0 && got < room {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(got)
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

impl TlsTransport {
    fn has_plaintext(&self) -> bool {
        self.plaintext > 0 || self.closed
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            // Plaintext already decrypted comes first.
            let start = buf.len();
            // Zero-filled scratch, sized by what rustls holds (at least one
            // byte, so that an empty read still means the end).
            buf.resize(start + self.plaintext.clamp(1, TLS_CHUNK), 0);
            match self.conn.reader().read(&mut buf[start..]) {
                Ok(0) => {
                    buf.truncate(start);
                    return Ok(0);
                }
                Ok(n) => {
                    buf.truncate(start + n);
                    self.plaintext = self.plaintext.saturating_sub(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => buf.truncate(start),
                Err(e) => {
                    buf.truncate(start);
                    return Err(e);
                }
            }
            if self.closed {
                return Ok(0);
            }
            // More records from the socket.
            match self.conn.read_tls(&mut SocketIo(&self.tcp)) {
                Ok(0) => self.closed = true,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            match self.conn.process_new_packets() {
                Ok(io) => self.plaintext = io.plaintext_bytes_to_read(),
                Err(e) => {
                    // Tell the peer why, as far as the socket takes it.
                    let _ = self.conn.write_tls(&mut SocketIo(&self.tcp));
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        }
    }

    fn write_queue(&mut self, queue: &mut OutQueue) -> io::Result<usize> {
        let mut total = 0;
        loop {
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut SocketIo(&self.tcp)) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                    Err(e) => return Err(e),
                }
            }
            if queue.is_empty() {
                return Ok(total);
            }
            let moved = queue.write_into(&mut self.conn.writer(), TLS_CHUNK)?;
            if moved == 0 {
                return Ok(total);
            }
            total += moved;
        }
    }
}

/// `std::io` over a tokio socket's non-blocking calls, for rustls.
struct SocketIo<'a>(&'a TcpStream);

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
