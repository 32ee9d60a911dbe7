//! The network splits a client's bytes anywhere: parsing the first part and
//! then the whole (as a streaming decoder does) must give exactly the frames
//! and the outcome of parsing the whole at once, and must never panic.
//!
//! Input: byte 0 picks the limits, bytes 1..3 the split point, the rest is
//! the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natsgate::protocol::client::{self, ClientLimits};
use natsgate::protocol::{ParseError, Parsed};

#[derive(Debug, PartialEq, Eq)]
enum End {
    Incomplete,
    Error(ParseError),
}

fn limits(selector: u8) -> ClientLimits {
    ClientLimits {
        // Small limits reach the limit checks; 4096 is nats-server's default.
        max_control_line: if selector & 0x80 != 0 {
            4096
        } else {
            usize::from(selector & 0x3f) + 1
        },
        max_payload: if selector & 0x40 != 0 { 1 << 20 } else { 16 },
        headers: selector & 0x01 != 0,
    }
}

/// Feeds `chunks` one after the other into a buffer, parsing after each.
fn decode(chunks: &[&[u8]], limits: &ClientLimits) -> (Vec<(String, usize)>, End) {
    let mut buf = Vec::new();
    let mut pos = 0;
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match client::parse(&buf[pos..], limits) {
                Ok(Parsed::Frame { op, len }) => {
                    assert!(len > 0 && len <= buf.len() - pos, "frame length {len}");
                    frames.push((format!("{op:?}"), len));
                    pos += len;
                }
                Ok(Parsed::Incomplete { needed }) => {
                    if let Some(needed) = needed {
                        assert!(needed > buf.len() - pos, "needs {needed} but has more");
                    }
                    break;
                }
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
    let limits = limits(data[0]);
    let stream = &data[3..];
    let at = usize::from(u16::from_le_bytes([data[1], data[2]])) % (stream.len() + 1);
    let whole = decode(&[stream], &limits);
    let split = decode(&[&stream[..at], &stream[at..]], &limits);
    assert_eq!(whole, split, "split at {at} changed the result");
});
