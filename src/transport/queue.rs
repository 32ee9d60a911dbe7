//! An outgoing byte queue for one socket: chunks forwarded verbatim (slices
//! of what was read, no copy) interleaved in order with frames natsgate makes
//! itself, written with vectored writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;

/// The most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl OutQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        self.chunks.push_back(chunk);
    }

    pub fn push_static(&mut self, frame: &'static [u8]) {
        self.push(Bytes::from_static(frame));
    }

    pub fn push_vec(&mut self, frame: Vec<u8>) {
        self.push(Bytes::from(frame));
    }

    /// Writes as much as the socket takes without blocking. Returns the
    /// number of bytes written; `WouldBlock` is not an error.
    pub fn write_to(&mut self, socket: &TcpStream) -> io::Result<usize> {
        let mut total = 0;
        while let Some(front) = self.chunks.front() {
            // One chunk (the common case for a request or a reply) is a
            // plain write: no slice array to fill.
            let result = if self.chunks.len() == 1 {
                socket.try_write(front)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let n = self
                    .chunks
                    .iter()
                    .take(MAX_SLICES)
                    .zip(slices.iter_mut())
                    .map(|(c, s)| *s = IoSlice::new(c))
                    .count();
                socket.try_write_vectored(&slices[..n])
            };
            let written = match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) => return Err(e),
            };
            self.advance(written);
            total += written;
        }
        Ok(total)
    }

    /// Copies up to `max` bytes from the front of the queue into `writer`
    /// (a TLS connection's plaintext buffer). Returns how many it took.
    pub fn write_into(
        &mut self,
        writer: &mut impl std::io::Write,
        max: usize,
    ) -> io::Result<usize> {
        let mut moved = 0;
        while moved < max {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let take = front.len().min(max - moved);
            let n = writer.write(&front[..take])?;
            if n == 0 {
                break;
            }
            self.advance(n);
            moved += n;
        }
        Ok(moved)
    }

    /// Takes up to `max` bytes from the front, as the chunks they are in
    /// (the last one split when needed): no copy.
    pub fn take_front(&mut self, max: usize) -> Vec<Bytes> {
        let mut taken = Vec::new();
        let mut left = max;
        while left > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                self.len -= front.len();
                if let Some(chunk) = self.chunks.pop_front() {
                    taken.push(chunk);
                }
            } else {
                taken.push(front.split_to(left));
                self.len -= left;
                left = 0;
            }
        }
        taken
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}
