//! The NATS client protocol, both directions, with no I/O and no policy.
//!
//! - [`client`]: frames a client sends (CONNECT, PUB, HPUB, SUB, UNSUB, ...).
//! - [`server`]: frames a server sends (INFO, MSG, HMSG, PING, -ERR, ...).
//! - [`connect`]: the CONNECT JSON, decoded the way Go's `encoding/json` does.
//! - [`info`]: the INFO JSON natsgate sends and the facts it reads upstream.
//! - [`encode`]: every frame natsgate writes itself (MSG, UNSUB, CONNECT,
//!   INFO, `+OK`, `-ERR`, PING/PONG), with nats-server's exact texts.
//! - [`subject`], [`quote`]: subject syntax and Go-style quoting.
//!
//! Both parsers work on a byte slice and return [`Parsed::Incomplete`] until a
//! whole frame (control line, payload and trailing CRLF) is there; every
//! length is checked against its limit before the caller has to buffer it.

pub mod client;
pub mod connect;
pub mod encode;
pub mod info;
pub mod quote;
pub mod server;
pub mod subject;

/// The result of looking for one frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole frame of `len` bytes.
    Frame { op: T, len: usize },
    /// More bytes are needed; when known, the frame's total length.
    Incomplete { needed: Option<usize> },
}

impl<T> Parsed<T> {
    /// The same result with the frame's op made into another type.
    #[inline]
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Parsed<U> {
        match self {
            Parsed::Frame { op, len } => Parsed::Frame { op: f(op), len },
            Parsed::Incomplete { needed } => Parsed::Incomplete { needed },
        }
    }
}

/// A protocol error. Each maps to nats-server's reaction (spec 1.12):
/// [`ParseError::error_text`] says what is sent before the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Unknown verb, missing blank after a verb, an op a client may not send.
    UnknownOperation,
    /// Wrong argument count or a bad size: closed without an error.
    BadArguments,
    /// The control line is longer than `max_control_line`.
    ControlLineTooLong,
    /// The payload is larger than the connection's max payload.
    MaxPayload,
    /// The payload is not followed by exactly `\r\n`.
    BadPayloadEnd,
    /// HPUB on a connection that did not negotiate headers: closed silently.
    HeadersNotNegotiated,
}

impl ParseError {
    /// The frame sent to the client before closing, if nats-server sends one.
    pub fn error_text(self) -> Option<&'static [u8]> {
        match self {
            ParseError::UnknownOperation | ParseError::BadPayloadEnd => {
                Some(encode::ERR_UNKNOWN_OP)
            }
            ParseError::ControlLineTooLong => Some(encode::ERR_MAX_CONTROL_LINE),
            ParseError::MaxPayload => Some(encode::ERR_MAX_PAYLOAD),
            ParseError::BadArguments | ParseError::HeadersNotNegotiated => None,
        }
    }

    /// A short, bounded label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::UnknownOperation => "unknown_operation",
            ParseError::BadArguments => "bad_arguments",
            ParseError::ControlLineTooLong => "max_control_line",
            ParseError::MaxPayload => "max_payload",
            ParseError::BadPayloadEnd => "bad_payload_end",
            ParseError::HeadersNotNegotiated => "headers_not_negotiated",
        }
    }
}

// === shared lexical helpers ===

/// The verbs of both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    Pub,
    Hpub,
    Sub,
    Unsub,
    Connect,
    Info,
    Ping,
    Pong,
    Ok,
    Err,
    Msg,
    Hmsg,
}

/// Matches a verb at the start of `buf`, case-insensitively, against `verbs`
/// (`(literal, verb, needs_blank)`). Returns the verb and where its arguments
/// start (after the blanks), `None` when more bytes are needed.
pub(crate) fn match_verb(
    buf: &[u8],
    verbs: &[(&[u8], Verb, bool)],
) -> Result<Option<(Verb, usize)>, ParseError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut candidate = false;
    for &(literal, verb, needs_blank) in verbs {
        let n = literal.len().min(buf.len());
        if !buf[..n].eq_ignore_ascii_case(&literal[..n]) {
            continue;
        }
        candidate = true;
        if buf.len() < literal.len() {
            continue;
        }
        if !needs_blank {
            // Blanks after the verb are not part of the arguments
            // (`CONNECT {...}`: the limit counts the JSON only).
            return Ok(Some((verb, skip_blanks(buf, literal.len()))));
        }
        match buf.get(literal.len()) {
            None => continue,
            Some(&b) if is_blank(b) => {
                return Ok(Some((verb, skip_blanks(buf, literal.len()))));
            }
            Some(_) => {}
        }
    }
    if candidate && buf.len() <= LONGEST_VERB {
        // A prefix of some verb (or a verb still waiting for its blank).
        let prefix_of_any = verbs.iter().any(|&(literal, _, needs_blank)| {
            let n = literal.len().min(buf.len());
            buf[..n].eq_ignore_ascii_case(&literal[..n])
                && (buf.len() < literal.len() + usize::from(needs_blank))
        });
        if prefix_of_any {
            return Ok(None);
        }
    }
    Err(ParseError::UnknownOperation)
}

/// The longest verb plus its blank.
const LONGEST_VERB: usize = 8;

/// Finds the end of the control line whose arguments start at `arg_start`.
/// Returns `(end of the arguments without \r\n, offset after the \n)`, or
/// `None` when the line is incomplete. The argument part may be at most
/// `max` bytes, checked also while the line is incomplete.
pub(crate) fn find_line(
    buf: &[u8],
    arg_start: usize,
    max: usize,
) -> Result<Option<(usize, usize)>, ParseError> {
    let search_end = buf
        .len()
        .min(arg_start.saturating_add(max).saturating_add(2));
    let Some(at) = memchr::memchr(b'\n', &buf[arg_start.min(search_end)..search_end]) else {
        // A `\r` still waiting for its `\n` is not part of the arguments.
        let pending = buf.len().saturating_sub(arg_start)
            - usize::from(buf.len() > arg_start && buf.ends_with(b"\r"));
        if pending > max {
            return Err(ParseError::ControlLineTooLong);
        }
        return Ok(None);
    };
    let nl = arg_start + at;
    let end = if nl > arg_start && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    if end - arg_start > max {
        return Err(ParseError::ControlLineTooLong);
    }
    Ok(Some((end, nl + 1)))
}

/// Splits the arguments `buf[start..end]` on runs of spaces and tabs.
/// `None` when there are more than `N`.
pub(crate) fn split_args<const N: usize>(
    buf: &[u8],
    start: usize,
    end: usize,
) -> Option<([&[u8]; N], usize)> {
    // This runs for every PUB and MSG (the iterator version, split then
    // filter out the empty parts, cost about 260 instructions for a MSG
    // line of 20 bytes). A line shorter than 64 bytes, nearly every one,
    // is split on a bit mask of its blanks, made eight bytes at a time.
    let arg = &buf[start..end];
    let mut out: [&[u8]; N] = [&[]; N];
    let mut n = 0;
    if arg.len() < 64 {
        // Bit i: byte i is a blank; every bit from the end on is set too.
        let blanks = blank_mask(buf, start, arg.len()) | (u64::MAX << arg.len());
        let mut at = 0;
        loop {
            // Shifts stay below 64: `at` is at most the length.
            let from = at + (!blanks >> at).trailing_zeros() as usize;
            if from >= arg.len() {
                return Some((out, n));
            }
            let to = from + (blanks >> from).trailing_zeros() as usize;
            if n == N {
                return None;
            }
            out[n] = &arg[from..to];
            n += 1;
            at = to;
        }
    }
    let mut i = skip_blanks(arg, 0);
    while i < arg.len() {
        let to = find_blank(arg, i);
        if n == N {
            return None;
        }
        out[n] = &arg[i..to];
        n += 1;
        i = skip_blanks(arg, to);
    }
    Some((out, n))
}

/// Bit i set where byte `start + i` of `buf` is a blank, for every
/// `i < len` (`len` at most 64); the bits from `len` on are whatever the
/// bytes after it are. Whole words are read where `buf` has them (the
/// control line's `\r\n` and the payload follow the arguments), so only a
/// frame at the very end of the buffer needs a padded copy.
fn blank_mask(buf: &[u8], start: usize, len: usize) -> u64 {
    let mut mask = 0;
    let mut at = 0;
    while at < len {
        let from = start + at;
        let word = match buf.get(from..from + 8).map(<[u8; 8]>::try_from) {
            Some(Ok(word)) => word,
            _ => {
                let tail = &buf[from..];
                let mut word = [0u8; 8];
                word[..tail.len()].copy_from_slice(tail);
                word
            }
        };
        mask |= gather_high_bits(blank_bytes(u64::from_le_bytes(word))) << at;
        at += 8;
    }
    mask
}

/// The protocol's argument separators.
#[inline]
pub(crate) fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The first position at or after `i` that is not a blank.
#[inline]
pub(crate) fn skip_blanks(buf: &[u8], mut i: usize) -> usize {
    while i < buf.len() && is_blank(buf[i]) {
        i += 1;
    }
    i
}

/// The first blank at or after `i`, or the end of `buf`, eight bytes at a
/// time (for lines of 64 bytes or more, which the bit mask does not take).
#[inline]
fn find_blank(buf: &[u8], mut i: usize) -> usize {
    while let Some(Ok(word)) = buf.get(i..i + 8).map(<[u8; 8]>::try_from) {
        let blanks = blank_bytes(u64::from_le_bytes(word));
        if blanks != 0 {
            return i + (blanks.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < buf.len() && !is_blank(buf[i]) {
        i += 1;
    }
    i
}

/// The high bit of every byte of `word` that is a blank, and no other bit.
#[inline]
fn blank_bytes(word: u64) -> u64 {
    const SPACES: u64 = u64::from_ne_bytes([b' '; 8]);
    const TABS: u64 = u64::from_ne_bytes([b'\t'; 8]);
    zero_bytes(word ^ SPACES) | zero_bytes(word ^ TABS)
}

/// The high bits of the eight bytes of `x` (the only bits set) as the low
/// eight bits: bit k is byte k's. The multiplier has a bit at 7j + 7 for
/// j = 0..7, so byte k's bit (at 8k + 7, shifted to 8k) lands at 56 + k
/// from j = 7 - k; no other pair reaches bits 56 to 63, and no two pairs
/// share a bit below them, so nothing carries.
#[inline]
fn gather_high_bits(x: u64) -> u64 {
    ((x >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// The high bit of every byte of `x` that is zero, and no other bit. Exact
/// (unlike the `(x - 0x01..) & !x` test, no borrow crosses a byte): the low
/// seven bits plus 0x7f carry into the high bit unless they are all zero.
#[inline]
fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// nats-server's `parseSize`: 1 to 9 ASCII digits.
pub(crate) fn parse_size(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 9 {
        return None;
    }
    let mut n = 0usize;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(b - b'0');
    }
    Some(n)
}

/// Completes a frame that carries a payload (PUB, HPUB, MSG, HMSG):
/// `payload_len` bytes then `\r\n` after the control line of `line_len`.
pub(crate) fn with_payload<T>(
    buf: &[u8],
    line_len: usize,
    payload_len: usize,
    op: T,
) -> Result<Parsed<T>, ParseError> {
    let frame_len = line_len + payload_len + 2;
    if buf.len() < frame_len {
        // A wrong terminator is detectable as soon as its bytes arrive.
        if buf.len() > line_len + payload_len && buf[line_len + payload_len] != b'\r' {
            return Err(ParseError::BadPayloadEnd);
        }
        return Ok(Parsed::Incomplete {
            needed: Some(frame_len),
        });
    }
    if &buf[line_len + payload_len..frame_len] != b"\r\n" {
        return Err(ParseError::BadPayloadEnd);
    }
    Ok(Parsed::Frame { op, len: frame_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_cr_and_the_blank_after_a_verb_do_not_count_against_the_limit() {
        use super::client::{ClientLimits, parse};
        let limits = ClientLimits {
            max_control_line: 10,
            max_payload: 100,
            headers: false,
        };
        // 10 bytes of arguments, the `\r` in, the `\n` not yet.
        assert_eq!(
            parse(b"SUB abcdefg 1\r", &limits),
            Ok(Parsed::Incomplete { needed: None })
        );
        assert!(matches!(
            parse(b"SUB abcdefg 1\r\n", &limits),
            Ok(Parsed::Frame { .. })
        ));
        // CONNECT, a blank, then exactly 10 bytes of JSON; 11 are too many.
        assert!(matches!(
            parse(b"CONNECT {\"a\":1234}\r\n", &limits),
            Ok(Parsed::Frame { .. })
        ));
        assert_eq!(
            parse(b"CONNECT {\"a\":12345}\r\n", &limits),
            Err(ParseError::ControlLineTooLong)
        );
    }

    /// Every string of `len` bytes over `alphabet`.
    fn all_strings(alphabet: &[u8], len: usize) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        for _ in 0..len {
            out = out
                .into_iter()
                .flat_map(|s| {
                    alphabet.iter().map(move |&b| {
                        let mut t = s.clone();
                        t.push(b);
                        t
                    })
                })
                .collect();
        }
        out
    }

    #[test]
    fn split_args_agrees_with_split_and_filter() {
        // The obvious definition, which split_args replaced for speed.
        fn reference(arg: &[u8], max: usize) -> Option<Vec<&[u8]>> {
            let parts: Vec<&[u8]> = arg
                .split(|b| *b == b' ' || *b == b'\t')
                .filter(|p| !p.is_empty())
                .collect();
            (parts.len() <= max).then_some(parts)
        }
        let check = |s: &[u8]| {
            let want = reference(s, 3);
            // Alone, and inside a buffer with blanks around it (which
            // the word-at-a-time mask reads and must ignore).
            let got = split_args::<3>(s, 0, s.len()).map(|(out, n)| out[..n].to_vec());
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(s));
            let framed = [&b"x \t"[..], s, b" \t \t \t \t"].concat();
            let got = split_args::<3>(&framed, 3, 3 + s.len()).map(|(out, n)| out[..n].to_vec());
            assert_eq!(got, want, "framed {:?}", String::from_utf8_lossy(s));
        };
        // Every string up to 9 bytes over a letter, both blanks and a byte
        // with a high bit (the word-at-a-time path starts at 8 bytes).
        let mut checked = 0;
        for len in 0..=9 {
            for s in all_strings(b"a \t\xa0", len) {
                check(&s);
                checked += 1;
            }
        }
        assert_eq!(checked, (0..=9).map(|l| 4usize.pow(l)).sum::<usize>());
        // Longer ones, pseudo-random, with the blanks at every offset of
        // a word.
        let mut x: u32 = 1;
        for _ in 0..20_000 {
            let len = (x % 70) as usize;
            let s: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    match (x >> 16) % 13 {
                        0 => b' ',
                        1 => b'\t',
                        2 => 0x20 ^ 0x80,
                        3 => 0x09 ^ 0x01,
                        _ => b'x',
                    }
                })
                .collect();
            check(&s);
        }
    }

    #[test]
    fn gather_high_bits_packs_every_pattern() {
        for pattern in 0u64..256 {
            let spread = (0..8)
                .filter(|k| pattern >> k & 1 == 1)
                .fold(0u64, |m, k| m | 0x80 << (8 * k));
            assert_eq!(gather_high_bits(spread), pattern, "{spread:#x}");
        }
    }

    #[test]
    fn zero_bytes_flags_exactly_the_zero_bytes() {
        for x in [
            0u64,
            1,
            0x0100,
            0x8000,
            0xff00_0000_0000_0001,
            u64::MAX,
            0x0001_0000_0100,
        ] {
            let want = x
                .to_le_bytes()
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == 0)
                .fold(0u64, |m, (i, _)| m | 0x80 << (8 * i));
            assert_eq!(zero_bytes(x), want, "{x:#x}");
        }
    }

    #[test]
    fn the_fast_path_parses_as_the_verb_search_does() {
        // In capitals MSG and PUB take the fast path; in any other case
        // the search through every verb: the results must be the same.
        let frames: &[&str] = &[
            "VERB a 1 5\r\nhello\r\n",
            "VERB\ta 1 5\r\nhello\r\n",
            "VERB  a \t_R.x  5\r\nhello\r\n",
            "VERB a 1 5\r\nhel",
            "VERB a 1 5\r\nhelloX\r\n",
            "VERB a\r\n",
            "VERB a b c d e f\r\n",
            "VERB ",
            "VERB",
        ];
        let server_limits = server::ServerLimits {
            max_control_line: 4096,
            max_payload: 1 << 20,
        };
        let client_limits = client::ClientLimits {
            max_control_line: 4096,
            max_payload: 1 << 20,
            headers: true,
        };
        let server = |s: &str| format!("{:?}", server::parse(s.as_bytes(), &server_limits));
        let client = |s: &str| format!("{:?}", client::parse(s.as_bytes(), &client_limits));
        type Parse<'a> = &'a dyn Fn(&str) -> String;
        let parsers: [(&str, Parse); 2] = [("MSG", &server), ("PUB", &client)];
        for (verb, parse) in parsers {
            for frame in frames {
                let upper = frame.replace("VERB", verb);
                let lower = upper.replacen(verb, &verb.to_lowercase(), 1);
                let mixed_verb = format!("{}{}", &verb[..2], verb[2..].to_lowercase());
                let mixed = upper.replacen(verb, &mixed_verb, 1);
                assert_eq!(parse(&upper), parse(&lower), "{upper:?}");
                assert_eq!(parse(&upper), parse(&mixed), "{upper:?}");
            }
        }
    }

    #[test]
    fn sizes_are_one_to_nine_digits() {
        assert_eq!(parse_size(b"0"), Some(0));
        assert_eq!(parse_size(b"005"), Some(5));
        assert_eq!(parse_size(b"999999999"), Some(999_999_999));
        assert_eq!(parse_size(b"1234567890"), None);
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"+1"), None);
        assert_eq!(parse_size(b"1a"), None);
    }
}
