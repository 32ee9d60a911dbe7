//! Frames parsed from arbitrary input, re-serialised from the op's fields
//! (and the frame's payload bytes), parse again to the identical op, and the
//! re-serialisation is a fixed point.
//!
//! Input: byte 0 picks the limits, the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natsgate::protocol::Parsed;
use natsgate::protocol::client::{self, ClientLimits, ClientOp};

fn limits(selector: u8) -> ClientLimits {
    ClientLimits {
        max_control_line: if selector & 0x80 != 0 {
            4096
        } else {
            usize::from(selector & 0x3f) + 1
        },
        max_payload: if selector & 0x40 != 0 { 1 << 20 } else { 16 },
        headers: selector & 0x01 != 0,
    }
}

fn push_args(out: &mut Vec<u8>, verb: &[u8], args: &[Option<&[u8]>]) {
    out.extend_from_slice(verb);
    for arg in args.iter().flatten() {
        out.push(b' ');
        out.extend_from_slice(arg);
    }
    out.extend_from_slice(b"\r\n");
}

/// The canonical bytes of `op`; `frame` is the frame it was parsed from.
fn serialise(op: &ClientOp<'_>, frame: &[u8]) -> Vec<u8> {
    let payload = |n: usize| &frame[frame.len() - 2 - n..frame.len() - 2];
    let mut out = Vec::new();
    match op {
        ClientOp::Connect(json) => push_args(&mut out, b"CONNECT", &[Some(json)]),
        ClientOp::Info(json) => push_args(&mut out, b"INFO", &[Some(json)]),
        ClientOp::Pub {
            subject,
            reply,
            size,
            payload_len,
        } => {
            push_args(&mut out, b"PUB", &[Some(subject), *reply, Some(size)]);
            out.extend_from_slice(payload(*payload_len));
            out.extend_from_slice(b"\r\n");
        }
        ClientOp::Hpub {
            subject,
            reply,
            header_len,
            total_len,
        } => {
            let (h, t) = (header_len.to_string(), total_len.to_string());
            push_args(
                &mut out,
                b"HPUB",
                &[
                    Some(subject),
                    *reply,
                    Some(h.as_bytes()),
                    Some(t.as_bytes()),
                ],
            );
            out.extend_from_slice(payload(*total_len));
            out.extend_from_slice(b"\r\n");
        }
        ClientOp::Sub {
            subject,
            queue,
            sid,
        } => push_args(&mut out, b"SUB", &[Some(subject), *queue, Some(sid)]),
        ClientOp::Unsub { sid, max } => push_args(&mut out, b"UNSUB", &[Some(sid), *max]),
        ClientOp::Ping => out.extend_from_slice(b"PING\r\n"),
        ClientOp::Pong => out.extend_from_slice(b"PONG\r\n"),
        ClientOp::Ok => out.extend_from_slice(b"+OK\r\n"),
        ClientOp::Err => out.extend_from_slice(b"-ERR\r\n"),
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let limits = limits(selector);
    // The canonical form uses one blank after the verb; allow for it.
    let relaxed = ClientLimits {
        max_control_line: limits.max_control_line + 1,
        ..limits
    };
    while let Ok(Parsed::Frame { op, len }) = client::parse(rest, &limits) {
        let frame = &rest[..len];
        let bytes = serialise(&op, frame);
        match client::parse(&bytes, &relaxed) {
            Ok(Parsed::Frame { op: again, len }) => {
                assert_eq!(
                    op,
                    again,
                    "re-parse of {:?}",
                    String::from_utf8_lossy(&bytes)
                );
                assert_eq!(len, bytes.len(), "re-parse consumed a different length");
                assert_eq!(serialise(&again, &bytes), bytes, "not a fixed point");
            }
            other => panic!(
                "re-serialised {op:?} as {:?}, which parses as {other:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
        rest = &rest[len..];
    }
});
