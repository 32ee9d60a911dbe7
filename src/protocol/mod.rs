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
            let mut start = literal.len();
            while matches!(buf.get(start), Some(b' ' | b'\t')) {
                start += 1;
            }
            return Ok(Some((verb, start)));
        }
        match buf.get(literal.len()) {
            None => continue,
            Some(b' ' | b'\t') => {
                let mut start = literal.len();
                while matches!(buf.get(start), Some(b' ' | b'\t')) {
                    start += 1;
                }
                return Ok(Some((verb, start)));
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

/// Splits arguments on runs of spaces and tabs. `None` when there are more
/// than `N`.
pub(crate) fn split_args<const N: usize>(arg: &[u8]) -> Option<([&[u8]; N], usize)> {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut n = 0;
    for part in arg
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|p| !p.is_empty())
    {
        if n == N {
            return None;
        }
        out[n] = part;
        n += 1;
    }
    Some((out, n))
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
