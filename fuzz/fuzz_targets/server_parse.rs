//! The upstream parser on arbitrary bytes: no panic, frame lengths within
//! the buffer, payloads within the limit, and the same frames whether the
//! bytes arrive at once or split in two.
//!
//! Input: byte 0 picks the limits, bytes 1..3 the split point, the rest is
//! the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natsgate::protocol::server::{self, ServerLimits, ServerOp};
use natsgate::protocol::{ParseError, Parsed};

#[derive(Debug, PartialEq, Eq)]
enum End {
    Incomplete,
    Error(ParseError),
}

fn decode(chunks: &[&[u8]], limits: &ServerLimits) -> (Vec<(String, usize)>, End) {
    let mut buf = Vec::new();
    let mut pos = 0;
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match server::parse(&buf[pos..], limits) {
                Ok(Parsed::Frame { op, len }) => {
                    assert!(len > 0 && len <= buf.len() - pos, "frame length {len}");
                    match op {
                        ServerOp::Msg { payload_len, .. } => {
                            assert!(payload_len <= limits.max_payload)
                        }
                        ServerOp::Hmsg {
                            header_len,
                            total_len,
                            ..
                        } => assert!(header_len <= total_len && total_len <= limits.max_payload),
                        _ => {}
                    }
                    frames.push((format!("{op:?}"), len));
                    pos += len;
                }
                Ok(Parsed::Incomplete { .. }) => break,
                Err(e) => return (frames, End::Error(e)),
            }
        }
    }
    (frames, End::Incomplete)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limits = ServerLimits {
        max_control_line: if data[0] & 0x80 != 0 {
            4096
        } else {
            usize::from(data[0] & 0x3f) + 1
        },
        max_payload: if data[0] & 0x40 != 0 { 1 << 20 } else { 16 },
    };
    let stream = &data[3..];
    let at = usize::from(u16::from_le_bytes([data[1], data[2]])) % (stream.len() + 1);
    let whole = decode(&[stream], &limits);
    let split = decode(&[&stream[..at], &stream[at..]], &limits);
    assert_eq!(whole, split, "split at {at} changed the result");
});
