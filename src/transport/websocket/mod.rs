//! [`WsTransport`]: a WebSocket connection as the relay drives it, the same
//! readiness-based way as a plain or TLS one. Reads give the NATS bytes of
//! the client's data frames; writes frame the relay's bytes as binary
//! messages (compressed when negotiated); pings are answered and a close is
//! echoed on the way. The socket under it is a [`Transport::Plain`] or
//! [`Transport::Tls`].
//!
//! - [`frames`]: the message layer over tungstenite's frame codec;
//! - [`handshake`]: the HTTP upgrade, answered as nats-server answers it.

use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tungstenite::protocol::frame::coding::Control;

use super::{OutQueue, Transport};

pub mod frames;
pub mod handshake;

pub use frames::{FrameReader, FrameWriter, Reply, WsError};
pub use handshake::{Accepted, Origin, Refused, UpgradeOptions};

/// The least raw room given to one socket read.
const MIN_RAW_READ: usize = 4 * 1024;

#[derive(Debug)]
pub struct WsTransport {
    inner: Transport,
    reader: FrameReader,
    writer: FrameWriter,
    /// Read from the socket and not decoded yet.
    raw: BytesMut,
    /// Frames waiting for the socket: at most one batch of the relay's
    /// bytes, plus control frames.
    wire: OutQueue,
    /// The socket reached its end.
    eof: bool,
    /// The last decode stopped at its output limit: `raw` may hold more.
    more: bool,
    /// The client broke the protocol: the socket is dropped, no close.
    failed: bool,
    /// A close frame was queued (an echo, or natsgate's own).
    close_sent: bool,
    /// natsgate's close frame (code, reason) when it ends the connection.
    close: (u16, &'static str),
}

/// How the upgraded connection reads and writes.
#[derive(Debug, Clone, Copy)]
pub struct WsOptions {
    pub compression: bool,
    pub no_masking: bool,
    pub browser: bool,
    /// The client's max payload, which bounds compressed messages.
    pub max_payload: usize,
}

impl WsTransport {
    /// Wraps an upgraded connection; `early` is what the client sent after
    /// its request.
    pub fn new(inner: Transport, options: WsOptions, early: BytesMut) -> WsTransport {
        WsTransport {
            inner,
            reader: FrameReader::new(
                !options.no_masking,
                options.compression,
                options.max_payload,
            ),
            writer: FrameWriter::new(options.compression, options.browser),
            more: !early.is_empty(),
            raw: early,
            wire: OutQueue::default(),
            eof: false,
            failed: false,
            close_sent: false,
            close: (1001, "Server Shutdown"),
        }
    }

    pub(super) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.more || self.eof || self.reader.is_closed() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_readable(cx)
    }

    pub(super) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_writable(cx)
    }

    pub(super) fn wants_write(&self) -> bool {
        !self.wire.is_empty() || self.inner.wants_write()
    }

    pub(super) fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let limit = (buf.capacity() - buf.len()).max(MIN_RAW_READ);
        loop {
            if self.failed || self.reader.is_closed() {
                return Ok(0);
            }
            if !self.raw.is_empty() {
                let before = buf.len();
                let mut replies = Vec::new();
                let result = self.reader.read(&mut self.raw, buf, limit, &mut replies);
                for reply in replies {
                    self.reply(reply);
                }
                if let Err(e) = result {
                    self.failed = true;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                let produced = buf.len() - before;
                self.more = produced >= limit;
                if self.raw.is_empty() {
                    self.raw = BytesMut::new();
                }
                if produced > 0 {
                    return Ok(produced);
                }
                if self.reader.is_closed() {
                    return Ok(0);
                }
            }
            self.more = false;
            if self.eof {
                return Ok(0);
            }
            self.raw.reserve(limit);
            match self.inner.try_read_buf(&mut self.raw) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues what the reader asked for; a close echo is pushed to the
    /// socket at once (the relay stops writing to a client that closed).
    fn reply(&mut self, reply: Reply) {
        match reply {
            Reply::Pong(payload) => self
                .wire
                .push(frames::control_frame(Control::Pong, &payload)),
            Reply::Close(payload) => {
                self.wire
                    .push(frames::control_frame(Control::Close, &payload));
                self.close_sent = true;
                let _ = self.inner.write_queue(&mut self.wire);
            }
        }
    }

    pub(super) fn write_queue(&mut self, queue: &mut OutQueue) -> io::Result<usize> {
        let mut total = 0;
        loop {
            self.inner.write_queue(&mut self.wire)?;
            if !self.wire.is_empty() || self.inner.wants_write() || queue.is_empty() {
                return Ok(total);
            }
            if self.close_sent {
                // Nothing may follow a close frame.
                let dropped = queue.len();
                let _ = queue.take_front(dropped);
                return Ok(total + dropped);
            }
            let data = queue.take_front(self.writer.chunk());
            total += data.iter().map(|b| b.len()).sum::<usize>();
            let mut framed = Vec::new();
            self.writer.data(data, &mut framed);
            for piece in framed {
                self.wire.push(piece);
            }
        }
    }

    /// Sets the close frame natsgate sends when it ends the connection,
    /// from the `-ERR` it sends last (nats-server's `wsEnqueueCloseMessage`).
    pub(super) fn closing_with(&mut self, error: Option<&[u8]>) {
        self.close = close_for(error);
    }

    pub(super) async fn shutdown(&mut self) {
        if !self.failed && !self.close_sent {
            let (code, reason) = self.close;
            let payload = frames::close_payload(code, reason);
            self.wire
                .push(frames::control_frame(Control::Close, &payload));
            self.close_sent = true;
        }
        if self.failed {
            self.wire = OutQueue::default();
        }
        while self.wants_write() {
            match self.inner.write_queue(&mut self.wire) {
                Ok(_) if self.wants_write() => {
                    if Box::pin(self.inner.writable()).await.is_err() {
                        break;
                    }
                }
                Ok(_) => break,
                Err(_) => break,
            }
        }
        Box::pin(self.inner.shutdown()).await;
    }
}

/// The close code and reason for natsgate's last `-ERR` (none: a shutdown
/// or natsgate's own close).
pub fn close_for(error: Option<&[u8]>) -> (u16, &'static str) {
    let Some(error) = error else {
        return (1001, "Server Shutdown");
    };
    let text = String::from_utf8_lossy(error).to_ascii_lowercase();
    let has = |s: &str| text.contains(s);
    if has("authorization violation") {
        (1008, "Authentication Failure")
    } else if has("authentication timeout") {
        (1008, "Authentication Timeout")
    } else if has("authentication expired") {
        (1008, "Authentication Expired")
    } else if has("maximum payload") {
        (1009, "Maximum Message Payload Exceeded")
    } else if has("maximum control line") {
        (1008, "Maximum Control Line Exceeded")
    } else if has("maximum subscriptions") {
        (1008, "Maximum Subscriptions Exceeded")
    } else if has("maximum account connections") {
        (1008, "Maximum Account Connections Exceeded")
    } else if has("maximum connections") {
        (1008, "Maximum Connections Exceeded")
    } else if has("stale connection") {
        (1001, "Stale Connection")
    } else if has("unknown protocol operation") {
        (1002, "Parse Error")
    } else if has("invalid client protocol") {
        (1002, "Bad Client Protocol Version")
    } else {
        (1011, "Internal Server Error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_nats_server() {
        assert_eq!(
            close_for(Some(b"-ERR 'Authorization Violation'\r\n")),
            (1008, "Authentication Failure")
        );
        assert_eq!(close_for(None), (1001, "Server Shutdown"));
        assert_eq!(
            close_for(Some(b"-ERR 'Maximum Payload Violation'\r\n")).0,
            1009
        );
    }
}
