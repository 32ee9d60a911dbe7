//! Decoding cost of the frames on natsgate's hot path: PUB and HPUB from
//! clients (`protocol::client::parse`), MSG from the server
//! (`protocol::server::parse`), at 32 B, 1 KiB and 8 KiB payloads, plus a
//! 64 KiB read buffer full of small PUBs as the relay sees it.
//!
//! `cargo bench --bench codec`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use natsgate::protocol::Parsed;
use natsgate::protocol::client::{self, ClientLimits};
use natsgate::protocol::server::{self, ServerLimits};

const SIZES: [(usize, &str); 3] = [(32, "32B"), (1024, "1KiB"), (8192, "8KiB")];

const CLIENT_LIMITS: ClientLimits = ClientLimits {
    max_control_line: 4096,
    max_payload: 1024 * 1024,
    headers: true,
};

const SERVER_LIMITS: ServerLimits = ServerLimits {
    max_control_line: 1024 * 1024,
    max_payload: 1024 * 1024,
};

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

fn pub_frame(size: usize) -> Vec<u8> {
    let mut f = format!("PUB orders.eu.new _INBOX.Hk3bD9xQ2.17 {size}\r\n").into_bytes();
    f.extend(payload(size));
    f.extend_from_slice(b"\r\n");
    f
}

fn hpub_frame(size: usize) -> Vec<u8> {
    let headers = b"NATS/1.0\r\nNats-Msg-Id: 8c1f2a\r\nTrace: on\r\n\r\n";
    let total = headers.len() + size;
    let mut f = format!(
        "HPUB orders.eu.new _INBOX.Hk3bD9xQ2.17 {} {total}\r\n",
        headers.len()
    )
    .into_bytes();
    f.extend_from_slice(headers);
    f.extend(payload(size));
    f.extend_from_slice(b"\r\n");
    f
}

fn msg_frame(size: usize) -> Vec<u8> {
    let mut f = format!("MSG orders.eu.new 42 _INBOX.Hk3bD9xQ2.17 {size}\r\n").into_bytes();
    f.extend(payload(size));
    f.extend_from_slice(b"\r\n");
    f
}

fn parse_client(frame: &[u8]) -> usize {
    match client::parse(frame, &CLIENT_LIMITS) {
        Ok(Parsed::Frame { len, .. }) => len,
        other => panic!("not a whole frame: {other:?}"),
    }
}

fn parse_server(frame: &[u8]) -> usize {
    match server::parse(frame, &SERVER_LIMITS) {
        Ok(Parsed::Frame { len, .. }) => len,
        other => panic!("not a whole frame: {other:?}"),
    }
}

/// A frame kind: its name, how to build one, and which parser decodes it.
type Kind = (&'static str, fn(usize) -> Vec<u8>, fn(&[u8]) -> usize);

fn frames(c: &mut Criterion) {
    let kinds: [Kind; 3] = [
        ("PUB", pub_frame, parse_client),
        ("HPUB", hpub_frame, parse_client),
        ("MSG", msg_frame, parse_server),
    ];
    for (kind, make, parse) in kinds {
        let mut group = c.benchmark_group(format!("decode/{kind}"));
        for (size, label) in SIZES {
            let frame = make(size);
            assert_eq!(parse(&frame), frame.len());
            group.throughput(Throughput::Bytes(frame.len() as u64));
            group.bench_with_input(BenchmarkId::from_parameter(label), &frame, |b, f| {
                b.iter(|| parse(black_box(f)));
            });
        }
        group.finish();
    }
}

/// A 64 KiB read of 32-byte PUBs, parsed frame by frame as the relay does.
fn stream(c: &mut Criterion) {
    let frame = pub_frame(32);
    let buf = frame.repeat(64 * 1024 / frame.len());
    let mut group = c.benchmark_group("decode/stream");
    group.throughput(Throughput::Elements((buf.len() / frame.len()) as u64));
    group.bench_function("PUB 32B x 64KiB", |b| {
        b.iter(|| {
            let buf = black_box(&buf[..]);
            let mut pos = 0;
            while pos < buf.len() {
                match client::parse(&buf[pos..], &CLIENT_LIMITS) {
                    Ok(Parsed::Frame { len, .. }) => pos += len,
                    _ => break,
                }
            }
            pos
        });
    });
    group.finish();
}

criterion_group!(benches, frames, stream);
criterion_main!(benches);
