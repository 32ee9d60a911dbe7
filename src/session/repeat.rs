//! The fast path for a run of deliveries with the same control line.
//!
//! nats-server delivers a busy subject's messages in runs: a subscriber gets
//! `MSG <subject> <sid> <size>\r\n` with the same bytes frame after frame
//! (every publisher of the subject, every message of the same size). When
//! such a delivery's decision depended on nothing but its line and the
//! session's subscriptions and permissions (no reply to track, no
//! `UNSUB <sid> <max>` to count towards, no JetStream guard), the next frame
//! that starts with the same line gets the same decision, as long as neither
//! the subscriptions nor the permissions have changed since: it is passed on
//! without being parsed and checked again (a compare of the line instead of
//! about 500 instructions).

/// The longest control line kept (nats-server's subjects are rarely longer).
const MAX_LINE: usize = 256;

/// The last repeatable delivery's control line and its decision.
#[derive(Debug, Default)]
pub(super) struct RepeatLine {
    /// The control line with its `\r\n`; empty when nothing is kept.
    line: Vec<u8>,
    payload_len: usize,
    /// The subscription's slot in [`super::subs::Subscriptions`].
    slot: usize,
    /// The subscriptions' and the permissions' generations it was decided
    /// with.
    stamp: (u64, u64),
}

impl RepeatLine {
    /// When `buf` starts with a complete frame whose control line is the
    /// kept one: the frame's length.
    #[inline]
    pub fn frame_len(&self, buf: &[u8]) -> Option<usize> {
        let line = self.line.len();
        if line == 0 || !buf.starts_with(&self.line) {
            return None;
        }
        let end = line + self.payload_len;
        (buf.get(end..end + 2)? == b"\r\n").then_some(end + 2)
    }

    /// The kept decision, if it was made with the generations `stamp`:
    /// the subscription's slot and the payload size.
    #[inline]
    pub fn decision(&self, stamp: (u64, u64)) -> Option<(usize, usize)> {
        (!self.line.is_empty() && self.stamp == stamp).then_some((self.slot, self.payload_len))
    }

    /// Keeps the control line `line` (with its `\r\n`) of a delivery that
    /// was passed on, decided with the generations `stamp`.
    pub fn keep(&mut self, line: &[u8], payload_len: usize, slot: usize, stamp: (u64, u64)) {
        if line.len() > MAX_LINE {
            return;
        }
        if self.line != line {
            self.line.clear();
            self.line.extend_from_slice(line);
        }
        self.payload_len = payload_len;
        self.slot = slot;
        self.stamp = stamp;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_line_with_a_whole_frame_and_the_same_generations_repeats() {
        let mut repeat = RepeatLine::default();
        assert_eq!(
            repeat.frame_len(b"MSG a 1 2\r\nhi\r\n"),
            None,
            "nothing kept"
        );
        assert_eq!(repeat.decision((0, 0)), None);
        repeat.keep(b"MSG a 1 2\r\n", 2, 3, (4, 5));
        assert_eq!(repeat.frame_len(b"MSG a 1 2\r\nhi\r\nPING\r\n"), Some(15));
        assert_eq!(repeat.frame_len(b"MSG a 1 2\r\nhi\r"), None, "incomplete");
        assert_eq!(repeat.frame_len(b"MSG a 1 2\r\nhi!\r\n"), None, "bad end");
        assert_eq!(
            repeat.frame_len(b"MSG a 1 22\r\nhi\r\n"),
            None,
            "other size"
        );
        assert_eq!(repeat.frame_len(b"MSG a 12 2\r\nhi\r\n"), None, "other sid");
        assert_eq!(repeat.frame_len(b"MSG a 1 2"), None);
        assert_eq!(repeat.decision((4, 5)), Some((3, 2)));
        assert_eq!(repeat.decision((5, 5)), None, "subscriptions changed");
        assert_eq!(repeat.decision((4, 6)), None, "permissions changed");
        let long = [b"MSG ".as_slice(), &[b'a'; MAX_LINE], b" 1 2\r\n"].concat();
        repeat.keep(&long, 2, 0, (4, 5));
        assert_eq!(
            repeat.decision((4, 5)),
            Some((3, 2)),
            "a long line is not kept"
        );
    }
}
