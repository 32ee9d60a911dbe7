//! Turning one read buffer into output: [`scan`] walks the complete frames
//! of a buffer, and [`Pieces`] collects what goes to the other side, as
//! ranges of that buffer (forwarded verbatim, merged into runs) and frames
//! natsgate made, in order.

use std::ops::ControlFlow;

use bytes::{Bytes, BytesMut};

use super::conn::Conn;
use super::order::Sink;
use crate::protocol::{ParseError, Parsed};
use crate::transport::OutQueue;

/// A piece of output: a range of the input to forward verbatim, or a frame
/// natsgate made.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Input(usize, usize),
    Made(Bytes),
}

/// The output for one direction, collected while one input buffer is
/// parsed, with the messages passed counted for the metrics.
#[derive(Debug, Default)]
pub(super) struct Pieces {
    list: Vec<Piece>,
    run: Option<(usize, usize)>,
    pub messages: u64,
    pub payload_bytes: u64,
}

impl Pieces {
    /// Forwards the frame at `start..end` of the input verbatim.
    pub fn pass(&mut self, start: usize, end: usize) {
        match &mut self.run {
            Some((_, e)) if *e == start => *e = end,
            _ => {
                self.close_run();
                self.run = Some((start, end));
            }
        }
    }

    /// Counts one message (PUB or MSG) passed on, by its payload size.
    pub fn count(&mut self, payload: usize) {
        self.messages += 1;
        self.payload_bytes += payload as u64;
    }

    pub fn made(&mut self, frame: Bytes) {
        self.close_run();
        self.list.push(Piece::Made(frame));
    }

    fn close_run(&mut self) {
        if let Some((s, e)) = self.run.take() {
            self.list.push(Piece::Input(s, e));
        }
    }

    /// After a scan of `from`'s `input`: `from` keeps what was not `used`
    /// (a frame in progress of `needed` bytes), and the pieces go into
    /// `queue`. Returns the messages and payload bytes passed.
    pub fn hand_over(
        &mut self,
        from: &mut Conn,
        input: BytesMut,
        used: usize,
        needed: Option<usize>,
        queue: &mut OutQueue,
    ) -> (u64, u64) {
        let handled = from.consumed(input, used, needed);
        self.drain_into(&handled, queue);
        (self.messages, self.payload_bytes)
    }

    /// Moves the pieces into `queue`, slicing the consumed input `chunk`.
    pub fn drain_into(&mut self, chunk: &Bytes, queue: &mut OutQueue) {
        self.close_run();
        for piece in self.list.drain(..) {
            match piece {
                Piece::Input(s, e) => queue.push(chunk.slice(s..e)),
                Piece::Made(frame) => queue.push(frame),
            }
        }
    }
}

impl Sink for Pieces {
    fn frame(&mut self, frame: Bytes) {
        self.made(frame);
    }
}

/// Where [`scan`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scanned<B> {
    /// Every complete frame was handled; the rest (if any) is a frame in
    /// progress of this many bytes in all, when known.
    Incomplete(Option<usize>),
    /// A protocol error at this point; everything before it was handled.
    Error(ParseError),
    /// The handler stopped the scan after a frame.
    Stopped(B),
}

/// Parses frames from the start of `input` and hands each to `on_frame`
/// with its range, until the input is used up, incomplete, wrong, or the
/// handler breaks. Returns how many bytes were handled and why it stopped.
pub(super) fn scan<'a, Op, B>(
    input: &'a [u8],
    parse: impl Fn(&'a [u8]) -> Result<Parsed<Op>, ParseError>,
    mut on_frame: impl FnMut(Op, usize, usize) -> ControlFlow<B>,
) -> (usize, Scanned<B>) {
    let mut pos = 0;
    while pos < input.len() {
        match parse(&input[pos..]) {
            Ok(Parsed::Frame { op, len }) => {
                let flow = on_frame(op, pos, pos + len);
                pos += len;
                if let ControlFlow::Break(b) = flow {
                    return (pos, Scanned::Stopped(b));
                }
            }
            Ok(Parsed::Incomplete { needed }) => {
                return (pos, Scanned::Incomplete(needed));
            }
            Err(e) => return (pos, Scanned::Error(e)),
        }
    }
    (pos, Scanned::Incomplete(None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::client::{self, ClientLimits, ClientOp};

    const LIMITS: ClientLimits = ClientLimits {
        max_control_line: 64,
        max_payload: 16,
        headers: false,
    };

    #[test]
    fn adjacent_passes_merge_and_made_frames_split_runs() {
        let input = Bytes::from_static(b"aaabbbcccddd");
        let mut pieces = Pieces::default();
        pieces.pass(0, 3);
        pieces.pass(3, 6);
        pieces.made(Bytes::from_static(b"X"));
        pieces.pass(6, 9);
        // A gap (a frame that was dropped) ends a run too.
        pieces.pass(10, 12);
        pieces.count(5);
        pieces.count(7);
        let mut queue = OutQueue::default();
        pieces.drain_into(&input, &mut queue);
        assert_eq!(queue.len(), 3 + 3 + 1 + 3 + 2);
        assert_eq!((pieces.messages, pieces.payload_bytes), (2, 12));
        let mut written = Vec::new();
        queue.write_into(&mut written, usize::MAX).unwrap();
        assert_eq!(written, b"aaabbbXcccdd");
    }

    #[test]
    fn scan_hands_over_every_frame_and_says_where_it_stopped() {
        let parse = |b| client::parse(b, &LIMITS);
        let mut seen = Vec::new();
        let input = b"PING\r\nPUB a 2\r\nhi\r\nPUB b 5\r\nhel";
        let (used, why) = scan(input, parse, |op, s, e| {
            seen.push((matches!(op, ClientOp::Ping), s, e));
            ControlFlow::<()>::Continue(())
        });
        assert_eq!(seen, vec![(true, 0, 6), (false, 6, 19)]);
        assert_eq!(used, 19);
        assert_eq!(why, Scanned::Incomplete(Some(16)), "the whole PUB b frame");

        let (used, why) = scan(b"PING\r\nPUB a 99\r\n", parse, |_, _, _| {
            ControlFlow::<()>::Continue(())
        });
        assert_eq!((used, why), (6, Scanned::Error(ParseError::MaxPayload)));

        let (used, why) = scan(b"PING\r\nPING\r\nPING\r\n", parse, |_, s, _| {
            if s == 6 {
                ControlFlow::Break("stop")
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!((used, why), (12, Scanned::Stopped("stop")));
        assert_eq!(
            scan(b"", parse, |_, _, _| ControlFlow::<()>::Continue(())),
            (0, Scanned::Incomplete(None))
        );
    }
}
