//! The WebSocket message layer on arbitrary client bytes: no panic, the
//! same NATS bytes, replies and verdict whether the stream arrives at once
//! or split in two, output bounded by the message limit; and what
//! natsgate's writer frames reads back as the same bytes.
//!
//! Input: byte 0 picks the options (bit 0 masking required, bit 1
//! compression, bit 2 a small max payload, bit 3 browser frames), bytes
//! 1..3 the split point, the rest is the stream.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use natsgate::transport::websocket::frames::{
    FrameReader, FrameWriter, Reply, WsError, max_message_size,
};

fn decode(
    chunks: &[&[u8]],
    mask: bool,
    compression: bool,
    max_payload: usize,
) -> (Vec<u8>, Vec<Reply>, Option<WsError>) {
    let mut reader = FrameReader::new(mask, compression, max_payload);
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    let mut replies = Vec::new();
    for chunk in chunks {
        input.extend_from_slice(chunk);
        // Small output limits, so the "come back for the rest" path runs.
        loop {
            let before = (input.len(), out.len());
            if let Err(e) = reader.read(&mut input, &mut out, 7, &mut replies) {
                return (out.to_vec(), replies, Some(e));
            }
            if (input.len(), out.len()) == before || reader.is_closed() {
                break;
            }
        }
        if reader.is_closed() {
            break;
        }
    }
    (out.to_vec(), replies, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mask = data[0] & 1 != 0;
    let compression = data[0] & 2 != 0;
    let max_payload = if data[0] & 4 != 0 { 64 } else { 1 << 20 };
    let browser = data[0] & 8 != 0;
    let stream = &data[3..];
    let at = usize::from(u16::from_le_bytes([data[1], data[2]])) % (stream.len() + 1);
    let whole = decode(&[stream], mask, compression, max_payload);
    let split = decode(
        &[&stream[..at], &stream[at..]],
        mask,
        compression,
        max_payload,
    );
    assert_eq!(whole, split, "split at {at} changed the result");
    // Only data frames produce output, and each compressed message is
    // bounded; the total cannot exceed the input times the bound.
    assert!(whole.0.len() <= stream.len().max(1) * max_message_size(max_payload));

    // The writer's frames read back as the same bytes (server frames are
    // unmasked: read them as a no-masking client's).
    let mut writer = FrameWriter::new(compression, browser);
    let mut wire = Vec::new();
    writer.data(vec![Bytes::copy_from_slice(stream)], &mut wire);
    let wire: Vec<u8> = wire.concat();
    let (back, replies, error) = decode(&[&wire], false, compression, stream.len().max(1));
    assert_eq!(error, None);
    assert!(replies.is_empty());
    assert_eq!(back, stream);
});
