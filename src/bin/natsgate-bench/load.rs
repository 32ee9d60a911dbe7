//! The load generator: each workload runs on plain threads with blocking
//! sockets and measures one configuration (an address plus a login), and the
//! CPU time the process under test (a [`Probe`]) used meanwhile.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Auth, BIG_BUFFER, Client, Frame, SMALL_BUFFER, is_timeout, reply_of};
use crate::cpu::Probe;
use crate::setup::{
    INBOX_PREFIX, PUB_SUBJECT, PUBSUB_SUBJECT, PUBSUB_SUBSCRIPTION, REQUEST_SUBJECT,
};

/// Bytes of pipelined frames per write.
const WRITE_CHUNK: usize = 64 * 1024;
/// How far (in bytes) the publisher may run ahead of the subscriber, well
/// below nats-server's 64 MiB slow-consumer limit.
const PUBSUB_WINDOW: usize = 16 * 1024 * 1024;

/// What one throughput measurement moved, and the CPU time the process
/// under test used meanwhile.
pub struct Moved {
    /// Messages moved: published (publish) or delivered (the others).
    pub msgs: u64,
    /// The measurement's length.
    pub secs: f64,
    /// CPU seconds of the process under test; `None` when unreadable.
    pub cpu: Option<f64>,
}

impl Moved {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.msgs as f64 / self.secs
    }

    /// CPU nanoseconds per message moved.
    pub fn cpu_ns_per_msg(&self) -> Option<f64> {
        self.cpu
            .filter(|_| self.msgs > 0)
            .map(|c| c * 1e9 / self.msgs as f64)
    }
}

/// `count` copies of `PUB <subject> <size>` with a payload of `size` bytes,
/// at least [`WRITE_CHUNK`] bytes in all. Returns the buffer and `count`.
pub fn pub_chunk(subject: &str, size: usize) -> (Vec<u8>, u64) {
    let mut frame = format!("PUB {subject} {size}\r\n").into_bytes();
    frame.extend((0..size).map(|i| b'a' + (i % 26) as u8));
    frame.extend_from_slice(b"\r\n");
    let count = WRITE_CHUNK.div_ceil(frame.len()).max(1);
    (frame.repeat(count), count as u64)
}

/// Publish throughput: one publisher writes pipelined PUBs for `dur`, then
/// PING/PONG so the server has them all.
pub fn publish(
    addr: SocketAddr,
    auth: &Auth,
    probe: Probe,
    size: usize,
    dur: Duration,
) -> io::Result<Moved> {
    let mut c = Client::connect(addr, auth, BIG_BUFFER)?;
    let (chunk, per) = pub_chunk(PUB_SUBJECT, size);
    let cpu = probe.start();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur {
        c.sock.write_all(&chunk)?;
        sent += per;
    }
    c.ping_pong()?;
    let moved = Moved {
        msgs: sent,
        secs: start.elapsed().as_secs_f64(),
        cpu: cpu.stop(),
    };
    c.close_now();
    Ok(moved)
}

/// Publish-to-subscriber throughput: a subscriber on its own connection
/// (wildcard subscription) counts MSGs until it has every one the publisher
/// sent in `dur`. The publisher stays within [`PUBSUB_WINDOW`] of the
/// subscriber so no server drops it as a slow consumer.
pub fn pub_sub(
    addr: SocketAddr,
    auth: &Auth,
    probe: Probe,
    size: usize,
    dur: Duration,
) -> io::Result<Moved> {
    let mut sub = Client::connect(addr, auth, BIG_BUFFER)?;
    sub.send_and_flush(format!("SUB {PUBSUB_SUBSCRIPTION} 1\r\n").as_bytes())?;
    sub.sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut publ = Client::connect(addr, auth, BIG_BUFFER)?;
    let (chunk, per) = pub_chunk(PUBSUB_SUBJECT, size);
    let window = (PUBSUB_WINDOW / (chunk.len() / per as usize)) as u64;

    let received = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(u64::MAX));
    let failed = Arc::new(AtomicBool::new(false));
    let (r2, t2, f2) = (received.clone(), total.clone(), failed.clone());
    let subscriber = std::thread::spawn(move || -> io::Result<Instant> {
        let mut count = 0u64;
        let mut last = Instant::now();
        let mut idle_since = Instant::now();
        loop {
            let before = count;
            match sub.read_frames(|f| {
                if let Frame::Msg { .. } = f {
                    count += 1;
                }
            }) {
                Ok(()) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    f2.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            if count > before {
                last = Instant::now();
                idle_since = last;
                r2.store(count, Ordering::Relaxed);
            }
            if count >= t2.load(Ordering::Acquire) {
                sub.close_now();
                return Ok(last);
            }
            if idle_since.elapsed() > Duration::from_secs(20) {
                f2.store(true, Ordering::Relaxed);
                return Err(io::Error::other(format!(
                    "subscriber stalled at {count} messages of {}",
                    t2.load(Ordering::Acquire)
                )));
            }
        }
    });

    let cpu = probe.start();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur && !failed.load(Ordering::Relaxed) {
        while sent.saturating_sub(received.load(Ordering::Relaxed)) > window
            && !failed.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_micros(50));
        }
        publ.sock.write_all(&chunk)?;
        sent += per;
    }
    publ.ping_pong()?;
    total.store(sent, Ordering::Release);
    let done = subscriber
        .join()
        .map_err(|_| io::Error::other("subscriber panicked"))??;
    let cpu = cpu.stop();
    publ.close_now();
    Ok(Moved {
        msgs: sent,
        secs: done.duration_since(start).as_secs_f64(),
        cpu,
    })
}

/// What a request/reply measurement saw.
pub struct RoundTrips {
    /// Latencies in microseconds after the warm-up, sorted.
    pub lat: Vec<f64>,
    /// Round trips in all (with the warm-up).
    pub trips: u64,
    /// CPU seconds of the process under test over all of them.
    pub cpu: Option<f64>,
}

impl RoundTrips {
    /// CPU microseconds per round trip.
    pub fn cpu_us_per_trip(&self) -> Option<f64> {
        self.cpu
            .filter(|_| self.trips > 0)
            .map(|c| c * 1e6 / self.trips as f64)
    }
}

/// Request/reply round trips: a requester sends one request at a time to a
/// responder on another connection and waits for the reply.
pub fn request_reply(
    addr: SocketAddr,
    auth: &Auth,
    probe: Probe,
    dur: Duration,
) -> io::Result<RoundTrips> {
    let mut responder = Client::connect(addr, auth, BIG_BUFFER)?;
    responder.send_and_flush(format!("SUB {REQUEST_SUBJECT} 1\r\n").as_bytes())?;
    let stopper = responder.sock.try_clone()?;
    let responder = std::thread::spawn(move || {
        let payload = b"pong-pong-pong!!";
        let mut out = Vec::with_capacity(4096);
        loop {
            let r = responder.read_frames(|f| {
                if let Frame::Msg { args, .. } = f
                    && let Some(reply) = reply_of(args)
                {
                    out.extend_from_slice(b"PUB ");
                    out.extend_from_slice(reply);
                    out.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
                    out.extend_from_slice(payload);
                    out.extend_from_slice(b"\r\n");
                }
            });
            if r.is_err() {
                return;
            }
            if !out.is_empty() {
                if responder.sock.write_all(&out).is_err() {
                    return;
                }
                out.clear();
            }
        }
    });

    let mut req = Client::connect(addr, auth, BIG_BUFFER)?;
    req.send_and_flush(format!("SUB {INBOX_PREFIX}* 1\r\n").as_bytes())?;
    let payload = b"ping-ping-ping!!";
    let mut lat = Vec::new();
    let mut n = 0u64;
    let warmup = 200;
    let cpu = probe.start();
    let start = Instant::now();
    let result = loop {
        if n >= warmup && start.elapsed() >= dur {
            break Ok(());
        }
        let mut frame = format!(
            "PUB {REQUEST_SUBJECT} {INBOX_PREFIX}{n} {}\r\n",
            payload.len()
        )
        .into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        let t0 = Instant::now();
        if let Err(e) = req.sock.write_all(&frame) {
            break Err(e);
        }
        let mut got = false;
        let mut err = None;
        while !got {
            if let Err(e) = req.read_frames(|f| match f {
                Frame::Msg { .. } => got = true,
                Frame::Err(t) => err = Some(String::from_utf8_lossy(t).into_owned()),
                _ => {}
            }) {
                err = Some(e.to_string());
            }
            if err.is_some() {
                break;
            }
        }
        if let Some(e) = err {
            break Err(io::Error::other(format!("request {n}: {e}")));
        }
        if n >= warmup {
            lat.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        n += 1;
    };
    let cpu = cpu.stop();
    let _ = stopper.shutdown(std::net::Shutdown::Both);
    let _ = responder.join();
    req.close_now();
    result?;
    lat.sort_by(f64::total_cmp);
    Ok(RoundTrips { lat, trips: n, cpu })
}

/// New authenticated connections per second: `threads` threads each connect,
/// log in, PING/PONG and close (with a reset), for `dur`.
pub fn connection_rate(
    addr: SocketAddr,
    auth: &Auth,
    threads: usize,
    dur: Duration,
) -> io::Result<f64> {
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let auth = auth.clone();
            std::thread::spawn(move || -> io::Result<u64> {
                let mut n = 0;
                while start.elapsed() < dur {
                    Client::connect(addr, &auth, SMALL_BUFFER)?.close_now();
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w
            .join()
            .map_err(|_| io::Error::other("connect thread panicked"))??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Opens `count` authenticated, idle connections (each has had its
/// PING/PONG) with `threads` threads.
pub fn open_idle(
    addr: SocketAddr,
    auth: &Auth,
    count: usize,
    threads: usize,
) -> io::Result<Vec<Client>> {
    open_clients(addr, auth, count, threads, SMALL_BUFFER)
}

/// Opens `count` authenticated connections with read buffers of `buffer`
/// bytes, with `threads` threads.
pub fn open_clients(
    addr: SocketAddr,
    auth: &Auth,
    count: usize,
    threads: usize,
    buffer: usize,
) -> io::Result<Vec<Client>> {
    let per = count.div_ceil(threads);
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let auth = auth.clone();
            let n = per.min(count.saturating_sub(i * per));
            std::thread::spawn(move || -> io::Result<Vec<Client>> {
                (0..n)
                    .map(|_| Client::connect(addr, &auth, buffer))
                    .collect()
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for w in workers {
        all.extend(
            w.join()
                .map_err(|_| io::Error::other("connect thread panicked"))??,
        );
    }
    Ok(all)
}
