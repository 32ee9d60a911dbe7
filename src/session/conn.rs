//! One side of the relay: a socket, what was read from it and not yet
//! handled, what waits to be written to it, how much to read at a time, and
//! since when its queue has been full. The relay holds two, the client and
//! the upstream, and drives both the same way.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::transport::{OutQueue, Transport};

/// The smallest and largest reads: reads grow while they fill the buffer
/// and shrink when the traffic is light, as nats-server's read buffer does,
/// so idle connections hold little and busy ones read 64 KiB at a time.
const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 256 * 1024;

/// A side is not read while the queue it feeds holds more than this.
pub(super) const HIGH_WATER: usize = 1024 * 1024;

/// What one read gave.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Read {
    /// Bytes were appended to the input.
    Data,
    /// Nothing yet (a spurious wake-up).
    Nothing,
    /// The peer closed, or the socket failed.
    Closed,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub transport: Transport,
    /// Read and not handled yet: at most one incomplete frame between reads.
    pub input: BytesMut,
    /// Waiting to be written to this side.
    pub out: OutQueue,
    read: ReadSize,
    /// Since when [`Conn::out`] has held [`HIGH_WATER`] bytes or more.
    full_since: Option<Instant>,
}

impl Conn {
    pub fn new(transport: Transport, input: BytesMut) -> Conn {
        // The handshake's buffers are larger than an idle connection needs.
        let input = if input.is_empty() {
            BytesMut::new()
        } else {
            input
        };
        Conn {
            transport,
            input,
            out: OutQueue::default(),
            read: ReadSize::default(),
            full_since: None,
        }
    }

    /// Reads what the socket has, without blocking.
    pub fn read(&mut self) -> Read {
        if self.input.capacity() == 0
            && let Some(spare) = spare::take()
        {
            self.input = spare;
        }
        let asked = self.read.reserve(&mut self.input);
        match self.transport.try_read_buf(&mut self.input) {
            Ok(0) => Read::Closed,
            Ok(n) => {
                self.read.update(n, asked);
                Read::Data
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Nothing,
            Err(_) => Read::Closed,
        }
    }

    /// Takes the input to parse (the relay handles it, then gives back the
    /// rest with [`Conn::consumed`]).
    pub fn take_input(&mut self) -> BytesMut {
        std::mem::take(&mut self.input)
    }

    /// The first `used` bytes of `input` were handled: returns them (to
    /// slice verbatim output from) and keeps the rest, a frame in progress
    /// of `needed` bytes in all when known.
    pub fn consumed(&mut self, mut input: BytesMut, used: usize, needed: Option<usize>) -> Bytes {
        let handled = input.split_to(used).freeze();
        self.read.expect(needed);
        // An empty buffer stays until this connection's next `flush`, which
        // passes it to this thread's spares.
        self.input = input;
        handled
    }

    /// Whether anything waits to be written (queued bytes or TLS records).
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || self.transport.wants_write()
    }

    /// Writes what the socket takes now, and notes whether the queue stays
    /// full.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        if self.has_output() {
            self.transport.write_queue(&mut self.out)?;
        }
        // Nothing left to handle: the read buffer goes to this thread's
        // spares (idle connections hold none, and the next read here or on
        // another connection takes it back instead of allocating one).
        if self.input.is_empty() && self.input.capacity() > 0 {
            spare::put(std::mem::take(&mut self.input));
        }
        if self.out.len() < HIGH_WATER {
            self.full_since = None;
        } else if self.full_since.is_none() {
            self.full_since = Some(now);
        }
        Ok(())
    }

    /// When this side becomes a slow consumer: its queue full for `deadline`.
    pub fn stalled_at(&self, deadline: Duration) -> Option<Instant> {
        self.full_since.map(|since| since + deadline)
    }
}

/// Read buffers between reads, per thread: a connection gives its buffer
/// back when everything read has been handled and takes one (from here, else
/// a new one) for its next read. A buffer whose handled bytes are written
/// and dropped is reused in place; one still shared with bytes waiting to be
/// written is reclaimed by [`ReadSize::reserve`] only once they are gone, or
/// replaced by a new one.
mod spare {
    use super::*;

    /// At most this many buffers are kept per thread...
    pub(super) const COUNT: usize = 64;
    /// ...of at most this capacity each (larger ones are freed). A kept
    /// buffer that still shares its allocation with handled bytes holds all
    /// of it (up to `MAX_READ`), so a thread keeps at most
    /// `COUNT * MAX_READ` bytes (16 MiB), however many connections it has.
    const CAPACITY: usize = 64 * 1024;

    thread_local! {
        static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    pub fn take() -> Option<BytesMut> {
        SPARES.with_borrow_mut(|s| s.pop())
    }

    pub fn put(buf: BytesMut) {
        if buf.capacity() > CAPACITY {
            return;
        }
        SPARES.with_borrow_mut(|s| {
            if s.len() < COUNT {
                s.push(buf);
            }
        });
    }
}

/// The adaptive read size of one side.
#[derive(Debug)]
struct ReadSize {
    size: usize,
    /// The length the buffer must reach to hold the frame being read.
    frame_end: Option<usize>,
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize {
            size: MIN_READ,
            frame_end: None,
        }
    }
}

impl ReadSize {
    /// Makes room in `buf` for the next read; returns the room made.
    ///
    /// The room counts the frame in progress already in `buf`: `size`
    /// bytes in all, as the last read had (at least a quarter of the
    /// smallest read more). When the handled bytes before the frame have
    /// been written and dropped, that fits the buffer the frame is in, and
    /// only the frame is copied, to its start. Otherwise the frame moves to
    /// a new buffer; `BytesMut::reserve` would copy the whole old one,
    /// handled bytes included, into one twice its size.
    fn reserve(&mut self, buf: &mut BytesMut) -> usize {
        let frame_rest = self
            .frame_end
            .take()
            .map_or(0, |end| end.saturating_sub(buf.len()));
        let room = self
            .size
            .saturating_sub(buf.len())
            .max(MIN_READ / 4)
            .max(frame_rest);
        if !buf.try_reclaim(room) {
            let mut fresh = BytesMut::with_capacity(buf.len() + room);
            fresh.extend_from_slice(buf);
            *buf = fresh;
        }
        buf.capacity() - buf.len()
    }

    fn update(&mut self, read: usize, asked: usize) {
        if read >= asked {
            self.size = (self.size * 2).min(MAX_READ);
        } else if read < asked / 4 {
            self.size = (self.size / 2).max(MIN_READ);
        }
    }

    /// The frame in progress is `end` bytes long (from the buffer's start).
    fn expect(&mut self, end: Option<usize>) {
        self.frame_end = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grow_when_full_and_shrink_when_light() {
        let mut size = ReadSize::default();
        assert_eq!(size.size, MIN_READ);
        for _ in 0..10 {
            size.update(size.size, size.size);
        }
        assert_eq!(size.size, MAX_READ, "capped");
        size.update(MAX_READ / 2, MAX_READ);
        assert_eq!(size.size, MAX_READ, "half full: unchanged");
        for _ in 0..10 {
            size.update(1, size.size);
        }
        assert_eq!(size.size, MIN_READ, "floored");
    }

    #[test]
    fn a_frame_in_progress_goes_back_to_the_start_of_its_own_buffer() {
        let mut size = ReadSize::default();
        let mut buf = BytesMut::new();
        size.reserve(&mut buf);
        assert_eq!(buf.capacity(), MIN_READ);
        // A read of 4,000 bytes ends 100 bytes into a frame; what was
        // handled is written and dropped.
        buf.extend_from_slice(&[b'x'; 4_000]);
        drop(buf.split_to(3_900).freeze());
        size.reserve(&mut buf);
        // The same buffer, not one twice its size with everything copied.
        assert_eq!(buf.capacity(), MIN_READ);
        assert_eq!(&buf[..], &[b'x'; 100][..]);

        // Handled bytes still queued: the frame moves to a buffer of its
        // own, and they stay as they were.
        buf.extend_from_slice(&[b'y'; 3_000]);
        let queued = buf.split_to(3_050).freeze();
        size.reserve(&mut buf);
        assert!(buf.capacity() - buf.len() >= MIN_READ - 50);
        assert_eq!(&buf[..], &[b'y'; 50][..]);
        assert_eq!(queued.len(), 3_050);
        assert!(queued[100..].iter().all(|b| *b == b'y'));
    }

    #[test]
    fn spare_buffers_are_reused_and_bounded() {
        while spare::take().is_some() {}
        let buf = BytesMut::with_capacity(MIN_READ);
        let at = buf.as_ptr();
        spare::put(buf);
        let again = spare::take().expect("kept");
        assert_eq!(again.as_ptr(), at, "the same memory, not a new buffer");
        assert!(spare::take().is_none());
        // Too large to keep.
        spare::put(BytesMut::with_capacity(MAX_READ));
        assert!(spare::take().is_none());
        // At most COUNT.
        for _ in 0..spare::COUNT + 10 {
            spare::put(BytesMut::with_capacity(MIN_READ));
        }
        let mut kept = 0;
        while spare::take().is_some() {
            kept += 1;
        }
        assert_eq!(kept, spare::COUNT);
    }

    #[test]
    fn a_large_frame_in_progress_gets_room_for_all_of_it_once() {
        let mut size = ReadSize::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 100]);
        size.expect(Some(200_000));
        let room = size.reserve(&mut buf);
        assert!(room >= 200_000 - 100, "room {room}");
        // The next read asks for the usual size again.
        let mut small = BytesMut::new();
        assert!(size.reserve(&mut small) < 200_000);
    }
}
