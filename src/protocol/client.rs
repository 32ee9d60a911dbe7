//! Parsing of the client → server direction (what a NATS client sends).
//!
//! [`parse`] looks at the start of a buffer and either finds one complete
//! frame, says how much more it needs, or reports a protocol error. It never
//! copies: the op borrows from the buffer, and the caller decides what to do
//! with the frame's bytes (usually: forward them verbatim). Limits are checked
//! before anything has to be buffered: the control line while it is still
//! incomplete, and the payload size as soon as the control line is complete.
//!
//! The grammar follows nats-server's parser (spec section 1): verbs in any
//! case, at least one space or tab after the verb, arguments separated by runs
//! of blanks, `\r` before `\n` optional, `PING`/`PONG`/`+OK` ignore the rest of
//! their line.

use super::{
    ParseError, Parsed, Verb, find_line, is_blank, match_verb, parse_size, skip_blanks, split_args,
    with_payload,
};

/// One client operation, borrowing from the input buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientOp<'a> {
    /// `CONNECT <json>`: the JSON with surrounding blanks removed.
    Connect(&'a [u8]),
    Pub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        /// The size token as sent (nats-server echoes it verbatim).
        size: &'a [u8],
        payload_len: usize,
    },
    Hpub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        header_len: usize,
        total_len: usize,
    },
    Sub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        sid: &'a [u8],
    },
    Unsub {
        sid: &'a [u8],
        max: Option<&'a [u8]>,
    },
    Ping,
    Pong,
    /// `+OK` from a client: ignored by nats-server.
    Ok,
    /// `-ERR` from a client: nats-server closes the connection.
    Err,
    /// `INFO <json>` from a client: ignored, but the JSON must be valid.
    Info(&'a [u8]),
}

/// Limits for one client connection.
#[derive(Clone, Copy, Debug)]
pub struct ClientLimits {
    pub max_control_line: usize,
    pub max_payload: usize,
    /// Whether the client negotiated `headers: true` (HPUB allowed).
    pub headers: bool,
}

/// Parses one frame from the start of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &ClientLimits) -> Result<Parsed<ClientOp<'a>>, ParseError> {
    // The frame that carries the traffic, in capitals as every client writes
    // it, without the case-insensitive search through every verb.
    let found = if let [b'P', b'U', b'B', b' ' | b'\t', ..] = buf {
        Some((Verb::Pub, skip_blanks(buf, 4)))
    } else {
        match_verb(buf, CLIENT_VERBS)?
    };
    let Some((verb, arg_start)) = found else {
        return Ok(Parsed::Incomplete { needed: None });
    };
    let Some((line_end, next)) = find_line(buf, arg_start, limits.max_control_line)? else {
        return Ok(Parsed::Incomplete { needed: None });
    };
    let arg = &buf[arg_start..line_end];
    let op = match verb {
        Verb::Ping => ClientOp::Ping,
        Verb::Pong => ClientOp::Pong,
        Verb::Ok => ClientOp::Ok,
        Verb::Err => ClientOp::Err,
        Verb::Connect => ClientOp::Connect(trim_blanks(arg)),
        Verb::Info => ClientOp::Info(trim_blanks(arg)),
        Verb::Sub => {
            let (args, n) =
                split_args::<3>(buf, arg_start, line_end).ok_or(ParseError::BadArguments)?;
            match n {
                2 => ClientOp::Sub {
                    subject: args[0],
                    queue: None,
                    sid: args[1],
                },
                3 => ClientOp::Sub {
                    subject: args[0],
                    queue: Some(args[1]),
                    sid: args[2],
                },
                _ => return Err(ParseError::BadArguments),
            }
        }
        Verb::Unsub => {
            let (args, n) =
                split_args::<2>(buf, arg_start, line_end).ok_or(ParseError::BadArguments)?;
            match n {
                1 => ClientOp::Unsub {
                    sid: args[0],
                    max: None,
                },
                2 => ClientOp::Unsub {
                    sid: args[0],
                    max: Some(args[1]),
                },
                _ => return Err(ParseError::BadArguments),
            }
        }
        Verb::Pub => {
            let (args, n) =
                split_args::<3>(buf, arg_start, line_end).ok_or(ParseError::BadArguments)?;
            let (subject, reply, size) = match n {
                2 => (args[0], None, args[1]),
                3 => (args[0], Some(args[1]), args[2]),
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
                ClientOp::Pub {
                    subject,
                    reply,
                    size,
                    payload_len,
                },
            );
        }
        Verb::Hpub => {
            if !limits.headers {
                return Err(ParseError::HeadersNotNegotiated);
            }
            let (args, n) =
                split_args::<4>(buf, arg_start, line_end).ok_or(ParseError::BadArguments)?;
            let (subject, reply, hdr, total) = match n {
                3 => (args[0], None, args[1], args[2]),
                4 => (args[0], Some(args[1]), args[2], args[3]),
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
            return with_payload(
                buf,
                next,
                total_len,
                ClientOp::Hpub {
                    subject,
                    reply,
                    header_len,
                    total_len,
                },
            );
        }
        Verb::Msg | Verb::Hmsg => return Err(ParseError::UnknownOperation),
    };
    Ok(Parsed::Frame { op, len: next })
}

fn trim_blanks(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !is_blank(*b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !is_blank(*b))
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// The verbs a client may send, with whether a blank must follow.
const CLIENT_VERBS: &[(&[u8], Verb, bool)] = &[
    (b"PUB", Verb::Pub, true),
    (b"PING", Verb::Ping, false),
    (b"PONG", Verb::Pong, false),
    (b"HPUB", Verb::Hpub, true),
    (b"SUB", Verb::Sub, true),
    (b"UNSUB", Verb::Unsub, true),
    (b"CONNECT", Verb::Connect, false),
    (b"INFO", Verb::Info, false),
    (b"+OK", Verb::Ok, false),
    (b"-ERR", Verb::Err, false),
    (b"MSG", Verb::Msg, true),
    (b"HMSG", Verb::Hmsg, true),
];

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ClientLimits = ClientLimits {
        max_control_line: 4096,
        max_payload: 1024,
        headers: true,
    };

    fn frame(input: &[u8]) -> (ClientOp<'_>, usize) {
        match parse(input, &LIMITS) {
            Ok(Parsed::Frame { op, len }) => (op, len),
            other => panic!(
                "expected a frame from {:?}, got {other:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    #[test]
    fn parses_every_op() {
        assert_eq!(
            frame(b"PUB foo 5\r\nhello\r\n"),
            (
                ClientOp::Pub {
                    subject: b"foo",
                    reply: None,
                    size: b"5",
                    payload_len: 5
                },
                18
            )
        );
        assert_eq!(
            frame(b"pub\tfoo  bar\t005\r\nhello\r\n").0,
            ClientOp::Pub {
                subject: b"foo",
                reply: Some(b"bar"),
                size: b"005",
                payload_len: 5
            }
        );
        assert_eq!(
            frame(b"HPUB foo r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n").0,
            ClientOp::Hpub {
                subject: b"foo",
                reply: Some(b"r"),
                header_len: 12,
                total_len: 14
            }
        );
        assert_eq!(
            frame(b"SUB foo q 1\r\n").0,
            ClientOp::Sub {
                subject: b"foo",
                queue: Some(b"q"),
                sid: b"1"
            }
        );
        assert_eq!(
            frame(b"sub foo 1 \r\n").0,
            ClientOp::Sub {
                subject: b"foo",
                queue: None,
                sid: b"1"
            }
        );
        assert_eq!(
            frame(b"UNSUB 1 5\n").0,
            ClientOp::Unsub {
                sid: b"1",
                max: Some(b"5")
            }
        );
        assert_eq!(frame(b"PING\r\n"), (ClientOp::Ping, 6));
        assert_eq!(frame(b"PINGX\r\n").0, ClientOp::Ping);
        assert_eq!(frame(b"pong whatever\r\n").0, ClientOp::Pong);
        assert_eq!(frame(b"+OK\r\n").0, ClientOp::Ok);
        assert_eq!(
            frame(b"CONNECT  {\"a\":1} \r\n").0,
            ClientOp::Connect(b"{\"a\":1}")
        );
    }

    #[test]
    fn every_op_split_at_every_byte_is_incomplete_then_whole() {
        let ops: &[&[u8]] = &[
            b"PUB foo.bar _INBOX.x 5\r\nhello\r\n",
            b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
            b"SUB foo.* q 17\r\n",
            b"UNSUB 17 2\r\n",
            b"PING\r\n",
            b"PONG\r\n",
            b"CONNECT {\"verbose\":false}\r\n",
            b"PUB empty 0\r\n\r\n",
        ];
        for op in ops {
            for cut in 0..op.len() {
                match parse(&op[..cut], &LIMITS) {
                    Ok(Parsed::Incomplete { .. }) => {}
                    other => panic!("{:?} cut at {cut}: {other:?}", String::from_utf8_lossy(op)),
                }
            }
            let (_, len) = frame(op);
            assert_eq!(len, op.len());
            // Followed by more data, the frame still ends at the same place.
            let mut two = op.to_vec();
            two.extend_from_slice(b"PING\r\n");
            assert_eq!(frame(&two).1, op.len());
        }
    }

    #[test]
    fn errors_match_nats_server() {
        let err = |input: &[u8]| parse(input, &LIMITS).err();
        assert_eq!(err(b"FOO\r\n"), Some(ParseError::UnknownOperation));
        assert_eq!(err(b" PING\r\n"), Some(ParseError::UnknownOperation));
        assert_eq!(err(b"\r\n"), Some(ParseError::UnknownOperation));
        assert_eq!(err(b"UNSUB\r\n"), Some(ParseError::UnknownOperation));
        assert_eq!(err(b"PUBX foo 1\r\n"), Some(ParseError::UnknownOperation));
        assert_eq!(err(b"MSG foo 1 1\r\n"), Some(ParseError::UnknownOperation));
        assert_eq!(err(b"PUB foo\r\n"), Some(ParseError::BadArguments));
        assert_eq!(err(b"PUB a b c 1\r\n"), Some(ParseError::BadArguments));
        assert_eq!(err(b"PUB foo -1\r\n"), Some(ParseError::BadArguments));
        assert_eq!(
            err(b"PUB foo 1234567890\r\n"),
            Some(ParseError::BadArguments)
        );
        assert_eq!(err(b"SUB foo\r\n"), Some(ParseError::BadArguments));
        assert_eq!(err(b"SUB a b c d\r\n"), Some(ParseError::BadArguments));
        assert_eq!(err(b"UNSUB 1 2 3\r\n"), Some(ParseError::BadArguments));
        assert_eq!(err(b"HPUB foo 5 4\r\n"), Some(ParseError::BadArguments));
        assert_eq!(err(b"PUB foo 1025\r\n"), Some(ParseError::MaxPayload));
        assert_eq!(err(b"PUB foo 2\r\nhiX\n"), Some(ParseError::BadPayloadEnd));
        assert_eq!(err(b"PUB foo 2\r\nhi\rX"), Some(ParseError::BadPayloadEnd));
        let no_headers = ClientLimits {
            headers: false,
            ..LIMITS
        };
        assert_eq!(
            parse(b"HPUB foo 1 1\r\n", &no_headers).err(),
            Some(ParseError::HeadersNotNegotiated)
        );
    }

    #[test]
    fn max_payload_is_inclusive_and_checked_before_the_payload_arrives() {
        let mut exact = b"PUB foo 1024\r\n".to_vec();
        assert_eq!(
            parse(&exact, &LIMITS),
            Ok(Parsed::Incomplete {
                needed: Some(14 + 1024 + 2)
            })
        );
        exact.extend(std::iter::repeat_n(b'x', 1024));
        exact.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&exact, &LIMITS), Ok(Parsed::Frame { .. })));
    }

    #[test]
    fn control_line_limit_applies_to_the_arguments_even_before_the_newline() {
        let limits = ClientLimits {
            max_control_line: 10,
            ..LIMITS
        };
        // "SUB " + 10 bytes of arguments is fine; 11 is not.
        assert!(matches!(
            parse(b"SUB abcdefg 12\r\n", &limits),
            Ok(Parsed::Frame { .. })
        ));
        assert_eq!(
            parse(b"SUB abcdefgh 12\r\n", &limits).err(),
            Some(ParseError::ControlLineTooLong)
        );
        assert_eq!(
            parse(b"SUB abcdefghijk", &limits).err(),
            Some(ParseError::ControlLineTooLong)
        );
        assert_eq!(
            parse(b"SUB abcdefghij", &limits),
            Ok(Parsed::Incomplete { needed: None })
        );
    }
}
