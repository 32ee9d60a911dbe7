//! Many clients at once: [`PUBLISHERS`] publisher and [`SUBSCRIBERS`]
//! subscriber connections, 128-byte payloads, fan-in and fan-out in
//! [`GROUPS`] groups. Subscriber `j` subscribes `bench.many.<j % 10>.*` and
//! publisher `i` publishes to `bench.many.<i % 10>.<token>`, so every message
//! reaches 10 subscribers and every subscriber hears 10 publishers.
//!
//! Two workloads, each on 200 fresh connections (all closed at its end),
//! one thread per connection with blocking sockets:
//! - [`throughput`]: every publisher flat out, but a group's publishers stay
//!   within [`GROUP_WINDOW`] messages of the group's slowest subscriber (so
//!   at most 20,000 published-but-not-all-delivered messages in all, and no
//!   server sees a slow consumer); the figure is deliveries per second.
//! - [`latency`]: every publisher sends one message per `pace` (default
//!   [`DEFAULT_PACE`]); the send time (microseconds since a shared `Instant`)
//!   is the subject's last token (`t<micros>`), since the client skips
//!   payloads and reply subjects would make natsgate track responses.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::{Auth, Client, Frame, SMALL_BUFFER, is_timeout};
use crate::cpu::{MachineSpan, Probe};
use crate::load::{Moved, open_clients};

pub const PUBLISHERS: usize = 100;
pub const SUBSCRIBERS: usize = 100;
const GROUPS: usize = 10;
const SUBS_PER_GROUP: usize = SUBSCRIBERS / GROUPS;
pub const PAYLOAD: usize = 128;
/// Messages a group's publishers may be ahead of its slowest subscriber.
const GROUP_WINDOW: u64 = 2_000;
/// Waiting publishers are woken when the group's slowest subscriber has
/// advanced this far.
const WAKE_STEP: u64 = GROUP_WINDOW / 4;
/// Messages per write of a flat-out publisher.
const BATCH: u64 = 20;
/// The paced publishers' default period: 1,000 messages/s in all, 10,000
/// deliveries/s. On 2 cores a 10 ms period (100,000 unbatched deliveries/s)
/// already keeps the machine ~85 % busy even direct, and the p99 measures
/// queueing for a CPU; at 100 ms it is about a quarter busy.
pub const DEFAULT_PACE: Duration = Duration::from_millis(100);
/// No progress for this long is an error.
const STALL: Duration = Duration::from_secs(20);
/// Reads time out this often so loops can check for the end.
const READ_TICK: Duration = Duration::from_millis(50);
/// Subscribers' read buffer.
const SUB_BUFFER: usize = 64 * 1024;
/// Stack of the 200 client threads.
const STACK: usize = 256 * 1024;
/// Threads that open the connections.
const CONNECT_THREADS: usize = 4;

/// One group: its publishers' count and its subscribers' progress.
struct Group {
    /// Messages the group's publishers have reserved (then written).
    published: AtomicU64,
    /// Messages each of the group's subscribers has received.
    received: [AtomicU64; SUBS_PER_GROUP],
    /// The final `published` once the publishers are done; `u64::MAX` before.
    total: AtomicU64,
    /// The slowest subscriber's count when waiting publishers were last woken.
    woken_at: AtomicU64,
    lock: Mutex<()>,
    room: Condvar,
}

impl Group {
    fn new() -> Group {
        Group {
            published: AtomicU64::new(0),
            received: std::array::from_fn(|_| AtomicU64::new(0)),
            total: AtomicU64::new(u64::MAX),
            woken_at: AtomicU64::new(0),
            lock: Mutex::new(()),
            room: Condvar::new(),
        }
    }

    fn slowest(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::SeqCst))
            .min()
            .unwrap_or(0)
    }

    /// A subscriber's new count; wakes the waiting publishers when the
    /// slowest subscriber has moved [`WAKE_STEP`] on.
    fn received(&self, k: usize, count: u64) {
        self.received[k].store(count, Ordering::SeqCst);
        let slowest = self.slowest();
        let woken = self.woken_at.load(Ordering::SeqCst);
        if slowest >= woken + WAKE_STEP
            && self
                .woken_at
                .compare_exchange(woken, slowest, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.room.notify_all();
        }
    }

    /// Waits until a batch ending at message `upto` is within the window.
    fn wait_for_room(&self, upto: u64, failed: &AtomicBool) -> io::Result<()> {
        if self.slowest() + GROUP_WINDOW >= upto {
            return Ok(());
        }
        let since = Instant::now();
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.slowest() + GROUP_WINDOW < upto {
            if failed.load(Ordering::Relaxed) {
                return Err(io::Error::other("another connection failed"));
            }
            if since.elapsed() > STALL {
                failed.store(true, Ordering::Relaxed);
                return Err(io::Error::other(format!(
                    "publisher waited {STALL:?} for the subscribers (slowest at {} of {upto})",
                    self.slowest()
                )));
            }
            guard = self
                .room
                .wait_timeout(guard, Duration::from_millis(10))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }
}

struct Shared {
    groups: [Group; GROUPS],
    failed: AtomicBool,
    /// The time base of the latency timestamps.
    epoch: Instant,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            groups: std::array::from_fn(|_| Group::new()),
            failed: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// The 200 connections, the subscribers subscribed (PING/PONG after each
/// SUB, so their subscriptions are in place upstream).
fn connect(addr: SocketAddr, auth: &Auth) -> io::Result<(Vec<Client>, Vec<Client>)> {
    let publishers = open_clients(addr, auth, PUBLISHERS, CONNECT_THREADS, SMALL_BUFFER)?;
    let mut subscribers = open_clients(addr, auth, SUBSCRIBERS, CONNECT_THREADS, SUB_BUFFER)?;
    for (j, s) in subscribers.iter_mut().enumerate() {
        s.send_and_flush(format!("SUB bench.many.{}.* 1\r\n", j % GROUPS).as_bytes())?;
        s.sock.set_read_timeout(Some(READ_TICK))?;
    }
    for p in &publishers {
        p.sock.set_write_timeout(Some(STALL))?;
    }
    Ok((publishers, subscribers))
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<JoinHandle<io::Result<T>>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(STACK)
        .spawn(f)
}

/// Joins every thread; the first error (a failed spawn included) wins.
fn join_all<T>(
    handles: Vec<io::Result<JoinHandle<io::Result<T>>>>,
    failed: &AtomicBool,
) -> io::Result<Vec<T>> {
    let mut out = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for h in handles {
        let r = h.and_then(|h| {
            h.join()
                .map_err(|_| io::Error::other("client thread panicked"))?
        });
        match r {
            Ok(v) => out.push(v),
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(out), Err)
}

/// What a subscriber brings back: its last delivery, its latencies, and the
/// connection (closed once the measurement is over).
struct Heard {
    last: Instant,
    lat: Vec<f64>,
    sub: Client,
}

/// Subscriber `j`: counts deliveries (and, from `sample_from` micros on,
/// records their latencies) until it has its group's total.
fn subscriber(
    mut sub: Client,
    j: usize,
    shared: &Shared,
    sample_from: Option<u64>,
) -> io::Result<Heard> {
    let group = &shared.groups[j % GROUPS];
    let k = j / GROUPS;
    let mut lat = Vec::new();
    let mut count = 0u64;
    let mut last = Instant::now();
    loop {
        let before = count;
        let mut err = None;
        let r = sub.read_frames(|f| match f {
            Frame::Msg { args } => {
                count += 1;
                if let Some(from) = sample_from
                    && let Some(sent) = sent_micros(args)
                    && sent >= from
                {
                    lat.push(shared.micros().saturating_sub(sent) as f64);
                }
            }
            Frame::Err(text) => err = Some(String::from_utf8_lossy(text).into_owned()),
            _ => {}
        });
        if let Some(text) = err {
            shared.failed.store(true, Ordering::Relaxed);
            return Err(io::Error::other(format!("subscriber {j}: -ERR {text}")));
        }
        match r {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                shared.failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        if count > before {
            last = Instant::now();
            group.received(k, count);
        }
        if count >= group.total.load(Ordering::SeqCst) {
            return Ok(Heard { last, lat, sub });
        }
        if shared.failed.load(Ordering::Relaxed) {
            return Err(io::Error::other("another connection failed"));
        }
        if last.elapsed() > STALL {
            shared.failed.store(true, Ordering::Relaxed);
            return Err(io::Error::other(format!(
                "subscriber {j} stalled at {count} messages of {}",
                group.published.load(Ordering::SeqCst)
            )));
        }
    }
}

/// The send time in a `MSG` line's subject: `bench.many.<g>.t<micros>`.
fn sent_micros(args: &[u8]) -> Option<u64> {
    let subject = args.split(|&b| b == b' ').next()?;
    let token = subject.rsplit(|&b| b == b'.').next()?.strip_prefix(b"t")?;
    std::str::from_utf8(token).ok()?.parse().ok()
}

fn payload() -> Vec<u8> {
    (0..PAYLOAD).map(|i| b'a' + (i % 26) as u8).collect()
}

/// What [`run`] measured.
struct Outcome {
    start: Instant,
    last: Instant,
    lat: Vec<f64>,
    cpu: Option<f64>,
    /// The machine's busy share meanwhile (see [`Paced::busy`]).
    busy: Option<f64>,
}

/// Opens the connections, starts the subscribers, runs `publish` on a thread
/// per publisher (given the publisher's index and client; it returns the
/// client once the server has all it sent), and waits for every delivery.
/// CPU time (and how busy the machine is) is taken from the start of
/// publishing to the last subscriber's end, before the 200 connections close.
fn run(
    addr: SocketAddr,
    auth: &Auth,
    probe: Option<Probe>,
    sample_from: Option<Duration>,
    shared: &Arc<Shared>,
    publish: impl Fn(usize, Client, Arc<Shared>) -> io::Result<Client> + Clone + Send + 'static,
) -> io::Result<Outcome> {
    let (publishers, subscribers) = connect(addr, auth)?;
    let sample_from = sample_from.map(|d| shared.micros() + d.as_micros() as u64);
    let subs: Vec<_> = subscribers
        .into_iter()
        .enumerate()
        .map(|(j, sub)| {
            let shared = shared.clone();
            spawn("many-sub", move || subscriber(sub, j, &shared, sample_from))
        })
        .collect();
    if subs.iter().any(Result::is_err) {
        shared.failed.store(true, Ordering::Relaxed);
    }
    let cpu = probe.map(Probe::start);
    let machine = MachineSpan::start();
    let start = Instant::now();
    let pubs: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (shared, publish) = (shared.clone(), publish.clone());
            spawn("many-pub", move || publish(i, c, shared))
        })
        .collect();
    let published = join_all(pubs, &shared.failed);
    for g in &shared.groups {
        g.total
            .store(g.published.load(Ordering::SeqCst), Ordering::SeqCst);
    }
    let heard = join_all(subs, &shared.failed);
    let cpu = cpu.and_then(|span| span.stop());
    let busy = machine.stop();
    let (published, heard) = (published?, heard?);
    let last = heard.iter().map(|h| h.last).max().unwrap_or(start);
    let mut lat = Vec::new();
    for h in heard {
        lat.extend(h.lat);
        h.sub.close_now();
    }
    for c in published {
        c.close_now();
    }
    Ok(Outcome {
        start,
        last,
        lat,
        cpu,
        busy,
    })
}

/// Aggregate delivery throughput: every publisher writes batches of
/// [`BATCH`] PUBs to `bench.many.<g>.x` for `dur`, within its group's
/// window, then PING/PONG; the figure counts every delivery up to the last.
pub fn throughput(addr: SocketAddr, auth: &Auth, probe: Probe, dur: Duration) -> io::Result<Moved> {
    let shared = Shared::new();
    let body: Arc<[u8]> = payload().into();
    let publish = move |i, c, shared: Arc<Shared>| flat_out(i, c, &shared, &body, dur);
    let out = run(addr, auth, Some(probe), None, &shared, publish)?;
    let delivered: u64 = shared
        .groups
        .iter()
        .map(|g| g.total.load(Ordering::SeqCst) * SUBS_PER_GROUP as u64)
        .sum();
    Ok(Moved {
        msgs: delivered,
        secs: out.last.duration_since(out.start).as_secs_f64(),
        cpu: out.cpu,
    })
}

/// Publisher `i` of [`throughput`].
fn flat_out(
    i: usize,
    mut c: Client,
    shared: &Shared,
    body: &[u8],
    dur: Duration,
) -> io::Result<Client> {
    let g = i % GROUPS;
    let group = &shared.groups[g];
    let mut frame = format!("PUB bench.many.{g}.x {PAYLOAD}\r\n").into_bytes();
    frame.extend_from_slice(body);
    frame.extend_from_slice(b"\r\n");
    let chunk = frame.repeat(BATCH as usize);
    let start = Instant::now();
    while start.elapsed() < dur && !shared.failed.load(Ordering::Relaxed) {
        let upto = group.published.fetch_add(BATCH, Ordering::SeqCst) + BATCH;
        group.wait_for_room(upto, &shared.failed)?;
        c.sock.write_all(&chunk)?;
    }
    c.ping_pong()?;
    Ok(c)
}

/// What a paced measurement saw.
pub struct Paced {
    /// Delivery latencies in microseconds, sorted.
    pub lat: Vec<f64>,
    /// How busy the whole machine was meanwhile, in percent of all cores:
    /// near 100, the latencies are mostly queueing for a CPU.
    pub busy: Option<f64>,
}

/// Delivery latency at a paced load: every publisher sends one message per
/// `pace` for `dur` (publishers spread over the period), its send time in
/// the subject. The latencies are those of the messages sent after the
/// first fifth of `dur` (at most 200 ms).
pub fn latency(addr: SocketAddr, auth: &Auth, dur: Duration, pace: Duration) -> io::Result<Paced> {
    let shared = Shared::new();
    let body: Arc<[u8]> = payload().into();
    let warmup = (dur / 5).min(Duration::from_millis(200));
    let periods = (dur.as_nanos() / pace.as_nanos()).max(1) as u32;
    let publish = move |i, c, shared: Arc<Shared>| paced(i, c, &shared, &body, pace, periods);
    let out = run(addr, auth, None, Some(warmup), &shared, publish)?;
    let mut lat = out.lat;
    lat.sort_by(f64::total_cmp);
    Ok(Paced {
        lat,
        busy: out.busy,
    })
}

/// Publisher `i` of [`latency`]: `periods` messages, one per `pace`,
/// offset by `i / PUBLISHERS` of the period.
fn paced(
    i: usize,
    mut c: Client,
    shared: &Shared,
    body: &[u8],
    pace: Duration,
    periods: u32,
) -> io::Result<Client> {
    let g = i % GROUPS;
    let start = Instant::now() + pace * i as u32 / PUBLISHERS as u32;
    let mut frame = Vec::with_capacity(64 + PAYLOAD);
    for k in 0..periods {
        if shared.failed.load(Ordering::Relaxed) {
            break;
        }
        let at = start + pace * k;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        frame.clear();
        write!(
            frame,
            "PUB bench.many.{g}.t{} {PAYLOAD}\r\n",
            shared.micros()
        )?;
        frame.extend_from_slice(body);
        frame.extend_from_slice(b"\r\n");
        shared.groups[g].published.fetch_add(1, Ordering::SeqCst);
        c.sock.write_all(&frame)?;
    }
    c.ping_pong()?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_time_from_subject() {
        assert_eq!(sent_micros(b"bench.many.3.t12345 7 128"), Some(12345));
        assert_eq!(sent_micros(b"bench.many.3.x 7 128"), None);
    }
}
