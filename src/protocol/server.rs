//! Parsing of the server → client direction (what nats-server sends to
//! natsgate's upstream connection). The upstream is trusted more than a
//! client, but its lengths are bounded all the same.

use super::{
    ParseError, Parsed, Verb, find_line, match_verb, parse_size, skip_blanks, split_args,
    with_payload,
};

/// One server operation, borrowing from the input buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerOp<'a> {
    Info(&'a [u8]),
    Msg {
        subject: &'a [u8],
        sid: &'a [u8],
        reply: Option<&'a [u8]>,
        payload_len: usize,
    },
    Hmsg {
        subject: &'a [u8],
        sid: &'a [u8],
        reply: Option<&'a [u8]>,
        header_len: usize,
        total_len: usize,
    },
    Ping,
    Pong,
    Ok,
    /// The whole `-ERR ...` line's argument, e.g. `'Stale Connection'`.
    Err(&'a [u8]),
}

/// Limits for the upstream direction.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    pub max_control_line: usize,
    pub max_payload: usize,
}

/// Parses one frame from the start of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &ServerLimits) -> Result<Parsed<ServerOp<'a>>, ParseError> {
    // The frame that carries the traffic, in capitals as nats-server writes
    // it, without the case-insensitive search through every verb.
    let found = if let [b'M', b'S', b'G', b' ' | b'\t', ..] = buf {
        Some((Verb::Msg, skip_blanks(buf, 4)))
    } else {
        match_verb(buf, SERVER_VERBS)?
    };
    let Some((verb, arg_start)) = found else {
        return Ok(Parsed::Incomplete { needed: None });
    };
    let Some((line_end, next)) = find_line(buf, arg_start, limits.max_control_line)? else {
        return Ok(Parsed::Incomplete { needed: None });
    };
    let arg = &buf[arg_start..line_end];
    let op = match verb {
        Verb::Ping => ServerOp::Ping,
        Verb::Pong => ServerOp::Pong,
        Verb::Ok => ServerOp::Ok,
        Verb::Err => ServerOp::Err(arg.trim_ascii_start()),
        Verb::Info => ServerOp::Info(arg),
        Verb::Msg => {
            let (args, n) =
                split_args::<4>(buf, arg_start, line_end).ok_or(ParseError::BadArguments)?;
            let (subject, sid, reply, size) = match n {
                3 => (args[0], args[1], None, args[2]),
                4 => (args[0], args[1], Some(args[2]), args[3]),
                _ => return Err(ParseError::BadArguments),
            };
            let payload_len = parse_size(size).ok_or(ParseError::BadArguments)?;
            if payload_len > limits.max_payload {
                return Err(ParseError::MaxPayload);
            }
            return with_payload(
                buf,
                next,
                payload_len,
                ServerOp::Msg {
                    subject,
                    sid,
                    reply,
                    payload_len,
                },
            );
        }
        Verb::Hmsg => {
            let (args, n) =
                split_args::<5>(buf, arg_start, line_end).ok_or(ParseError::BadArguments)?;
            let (subject, sid, reply, hdr, total) = match n {
                4 => (args[0], args[1], None, args[2], args[3]),
                5 => (args[0], args[1], Some(args[2]), args[3], args[4]),
                _ => return Err(ParseError::BadArguments),
            };
            let header_len = parse_size(hdr).ok_or(ParseError::BadArguments)?;
            let total_len = parse_size(total).ok_or(ParseError::BadArguments)?;
            if header_len > total_len {
                return Err(ParseError::BadArguments);
            }
            if total_len > limits.max_payload {
                return Err(ParseError::MaxPayload);
            }
            let op = ServerOp::Hmsg {
                subject,
                sid,
                reply,
                header_len,
                total_len,
            };
            return with_payload(buf, next, total_len, op);
        }
        _ => return Err(ParseError::UnknownOperation),
    };
    Ok(Parsed::Frame { op, len: next })
}

const SERVER_VERBS: &[(&[u8], Verb, bool)] = &[
    (b"MSG", Verb::Msg, true),
    (b"HMSG", Verb::Hmsg, true),
    (b"PING", Verb::Ping, false),
    (b"PONG", Verb::Pong, false),
    (b"+OK", Verb::Ok, false),
    (b"-ERR", Verb::Err, false),
    (b"INFO", Verb::Info, true),
];

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ServerLimits = ServerLimits {
        max_control_line: 4096,
        max_payload: 1 << 20,
    };

    #[test]
    fn parses_deliveries() {
        let input = b"MSG foo.bar 9 _INBOX.a 5\r\nhello\r\nPING\r\n";
        let Ok(Parsed::Frame { op, len }) = parse(input, &LIMITS) else {
            panic!()
        };
        assert_eq!(
            op,
            ServerOp::Msg {
                subject: b"foo.bar",
                sid: b"9",
                reply: Some(b"_INBOX.a"),
                payload_len: 5
            }
        );
        assert_eq!(len, 33);
        let Ok(Parsed::Frame { op, .. }) =
            parse(b"HMSG a 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n", &LIMITS)
        else {
            panic!()
        };
        assert_eq!(
            op,
            ServerOp::Hmsg {
                subject: b"a",
                sid: b"1",
                reply: None,
                header_len: 12,
                total_len: 14
            }
        );
        let Ok(Parsed::Frame { op, .. }) = parse(b"-ERR 'Stale Connection'\r\n", &LIMITS) else {
            panic!()
        };
        assert_eq!(op, ServerOp::Err(b"'Stale Connection'"));
    }

    #[test]
    fn every_split_is_incomplete() {
        let input: &[u8] = b"HMSG a.b 12 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n";
        for cut in 0..input.len() {
            assert!(
                matches!(parse(&input[..cut], &LIMITS), Ok(Parsed::Incomplete { .. })),
                "cut {cut}"
            );
        }
        assert!(
            matches!(parse(input, &LIMITS), Ok(Parsed::Frame { len, .. }) if len == input.len())
        );
    }

    #[test]
    fn oversized_deliveries_are_refused_before_buffering() {
        let limits = ServerLimits {
            max_control_line: 64,
            max_payload: 10,
        };
        assert_eq!(
            parse(b"MSG a 1 11\r\n", &limits),
            Err(ParseError::MaxPayload)
        );
        assert_eq!(
            parse(&[b'I'; 100], &limits),
            Err(ParseError::UnknownOperation)
        );
        let mut long = b"INFO ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 100));
        assert_eq!(parse(&long, &limits), Err(ParseError::ControlLineTooLong));
    }
}
