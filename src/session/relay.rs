//! The relay: both sockets of one session, driven by one task.
//!
//! Each readable event reads 4 to 64 KiB (adapting to the traffic), parses every complete
//! frame in them, and decides per frame. Frames that pass go on *verbatim*:
//! consecutive passing frames form one run, which is handed to the other
//! socket's queue as a slice of the read buffer (no copy). A frame that is
//! refused or rewritten ends the run. Writes are vectored and non-blocking.
//!
//! Ordering: natsgate's own answers to a client (`+OK`, `-ERR`) are queued
//! when the client's op is parsed, so they keep the op order; a client `PING`
//! goes upstream and its `PONG` comes back only when the upstream answers, so
//! a client's flush still means "the server has it" (spec 1.14).
//!
//! Back-pressure: a side is not read while the queue it feeds holds more than
//! [`HIGH_WATER`] bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

use super::out::OutQueue;
use super::subs::{Delivery, Subscriptions};
use super::{CLOSE_FLUSH, Login, post_auth_check, until};
use crate::auth::Identity;
use crate::listener::{AccountSlot, Shared};
use crate::metrics::Direction;
use crate::permissions::{Authorizer, PublishDecision};
use crate::protocol::client::{self, ClientLimits, ClientOp};
use crate::protocol::connect::ConnectOptions;
use crate::protocol::server::{self, ServerLimits, ServerOp};
use crate::protocol::subject::{is_valid_literal_subject, is_valid_subject};
use crate::protocol::{self, Parsed};
use crate::transport::Transport;
use crate::upstream::UpstreamConn;

/// The subject natsgate answers itself (spec 9.4).
const USER_INFO: &[u8] = b"$SYS.REQ.USER.INFO";
/// The smallest and largest reads: reads grow while they fill the buffer
/// and shrink when the traffic is light, as nats-server's read buffer does,
/// so idle connections hold little and busy ones read 64 KiB at a time.
const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 64 * 1024;
/// A side is not read while the queue it feeds holds more than this.
const HIGH_WATER: usize = 1024 * 1024;
/// How long a queue may stay full before its peer is a slow consumer. Below
/// nats-server's own default `write_deadline` (10 s): while a client is not
/// reading, natsgate stops reading its upstream connection, and natsgate
/// must notice (and count) the slow consumer before the upstream does.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a user with a subscription limit of 0 stays connected.
const ZERO_SUBS_CLOSE: Duration = Duration::from_millis(20);
/// natsgate's keep-alive PING to the client, as nats-server's `ping_interval`.
const PING_INTERVAL: Duration = Duration::from_secs(120);
/// Unanswered PINGs before `Stale Connection` (nats-server's `ping_max`).
const PING_MAX: u32 = 2;
/// The largest control line accepted from the upstream (INFO can be long).
const UPSTREAM_MAX_CONTROL_LINE: usize = 1024 * 1024;

/// Why the relay ended.
#[derive(Debug)]
enum End {
    /// Close after sending this frame (if any) to the client.
    Client(Option<Bytes>),
    /// The upstream went away.
    Upstream,
    Shutdown,
}

/// A piece of output decided while parsing one input buffer: a range of that
/// buffer to forward verbatim, or a frame natsgate made.
enum Piece {
    Input(usize, usize),
    Made(Bytes),
}

/// Collects the pieces for one direction while parsing, merging adjacent
/// verbatim frames into one run, and counts the messages passed.
#[derive(Default)]
struct Pieces {
    list: Vec<Piece>,
    run: Option<(usize, usize)>,
    messages: u64,
    payload_bytes: u64,
}

impl Pieces {
    /// Forwards the frame at `start..end` of the input verbatim.
    fn pass(&mut self, start: usize, end: usize) {
        match &mut self.run {
            Some((_, e)) if *e == start => *e = end,
            _ => {
                self.close_run();
                self.run = Some((start, end));
            }
        }
    }

    /// Counts one message (PUB or MSG) passed on, by its payload size.
    fn count(&mut self, payload: usize) {
        self.messages += 1;
        self.payload_bytes += payload as u64;
    }

    fn made(&mut self, frame: Bytes) {
        self.close_run();
        self.list.push(Piece::Made(frame));
    }

    fn close_run(&mut self) {
        if let Some((s, e)) = self.run.take() {
            self.list.push(Piece::Input(s, e));
        }
    }

    /// Moves the pieces into `queue`, slicing the consumed input `chunk`.
    fn drain_into(&mut self, chunk: &Bytes, queue: &mut OutQueue) {
        self.close_run();
        for piece in self.list.drain(..) {
            match piece {
                Piece::Input(s, e) => queue.push(chunk.slice(s..e)),
                Piece::Made(frame) => queue.push(frame),
            }
        }
    }
}

pub struct Relay {
    shared: Arc<Shared>,
    client: Transport,
    upstream: Transport,
    client_in: BytesMut,
    upstream_in: BytesMut,
    to_client: OutQueue,
    to_upstream: OutQueue,
    opts: ConnectOptions,
    identity: Identity,
    nonce: String,
    peer: std::net::SocketAddr,
    client_id: u64,
    authz: Authorizer,
    subs: Subscriptions,
    client_limits: ClientLimits,
    upstream_limits: ServerLimits,
    /// Client PINGs sent upstream whose PONG has not come back.
    pings_in_flight: u32,
    /// Whether the connect-info INFO (spec 1.9) is still due.
    connect_info_due: bool,
    /// natsgate's own PINGs to the client not answered yet.
    pings_outstanding: u32,
    next_ping: Instant,
    user_expiry: Option<Instant>,
    account_expiry: Option<Instant>,
    /// Changes after every account update and config reload.
    accounts: Option<watch::Receiver<u64>>,
    /// Set once shutdown began: when this session closes (spread over
    /// `shutdown_grace` so clients do not all reconnect at once).
    closing_at: Option<Instant>,
    /// How much to read at a time from each side.
    client_read: ReadSize,
    upstream_read: ReadSize,
    /// The one timer of the session, armed for `timer_at`.
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    /// Since when the client's queue has been full (a slow consumer).
    client_full_since: Option<Instant>,
    /// Since when the upstream's queue has been full.
    upstream_full_since: Option<Instant>,
    _slot: AccountSlot,
}

impl Relay {
    pub(crate) fn new(
        shared: Arc<Shared>,
        client: Transport,
        upstream: UpstreamConn,
        client_in: BytesMut,
        login: Login,
    ) -> Relay {
        let Login {
            opts,
            identity,
            nonce,
            peer,
            client_id,
            slot,
        } = login;
        let accounts = Some(shared.watch_accounts());
        let next_ping = Instant::now() + PING_INTERVAL;
        let facts = shared.upstream.facts();
        let client_limits = ClientLimits {
            max_control_line: shared.settings.listen.max_control_line,
            max_payload: shared.max_payload(&facts, identity.max_payload),
            headers: opts.headers && facts.headers,
        };
        let upstream_limits = ServerLimits {
            max_control_line: UPSTREAM_MAX_CONTROL_LINE,
            max_payload: usize::try_from(upstream.info.max_payload)
                .unwrap_or(usize::MAX)
                .max(client_limits.max_payload),
        };
        let authz = Authorizer::new(identity.permissions.clone(), identity.system_account);
        let mut relay = Relay {
            shared,
            client,
            upstream: upstream.transport,
            client_in,
            upstream_in: upstream.leftover,
            to_client: OutQueue::default(),
            to_upstream: OutQueue::default(),
            connect_info_due: opts.protocol >= 1,
            opts,
            user_expiry: identity.expires_at.map(|t| Instant::now() + until(t)),
            account_expiry: identity
                .account_expires_at
                .map(|t| Instant::now() + until(t)),
            identity,
            nonce,
            peer,
            client_id,
            authz,
            subs: Subscriptions::default(),
            client_limits,
            upstream_limits,
            pings_in_flight: 0,
            pings_outstanding: 0,
            closing_at: None,
            client_read: ReadSize::default(),
            upstream_read: ReadSize::default(),
            timer: Box::pin(sleep_until(next_ping)),
            timer_at: next_ping,
            client_full_since: None,
            upstream_full_since: None,
            next_ping,
            accounts,
            _slot: slot,
        };
        if relay.opts.verbose {
            relay.to_client.push_static(protocol::OK);
        }
        if relay.identity.max_subscriptions == Some(0) {
            // A user who may not subscribe at all (a JWT without `subs`):
            // nats-server says so at once and closes ~20 ms later, still
            // answering ops sent with the CONNECT (spec 2.2).
            relay.to_client.push_static(protocol::ERR_MAX_SUBS);
            relay.closing_at = Some(Instant::now() + ZERO_SUBS_CLOSE);
        }
        relay
    }

    /// Relays until either side closes, a fatal protocol error, expiry or
    /// shutdown.
    pub async fn run(mut self, shutdown: &CancellationToken) {
        let end = self.relay_loop(shutdown).await;
        self.finish(end).await;
    }

    async fn relay_loop(&mut self, shutdown: &CancellationToken) -> End {
        // Pipelined ops that arrived with the CONNECT, and bytes the upstream
        // sent after its login PONG.
        if let Err(end) = self.process_client() {
            return end;
        }
        if let Err(end) = self.process_upstream() {
            return end;
        }
        loop {
            if let Err(end) = self.flush() {
                return end;
            }
            let read_client =
                self.to_upstream.len() < HIGH_WATER && self.to_client.len() < HIGH_WATER;
            let read_upstream = self.to_client.len() < HIGH_WATER;
            // One timer for every deadline, moved only when the earliest
            // one changes (not re-armed per event).
            let deadline = self.next_deadline();
            if deadline != self.timer_at {
                self.timer.as_mut().reset(deadline);
                self.timer_at = deadline;
            }
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if self.closing_at.is_none() => Event::Shutdown,
                r = self.client.readable(), if read_client => Event::ClientReadable(r.is_ok()),
                r = self.upstream.readable(), if read_upstream => Event::UpstreamReadable(r.is_ok()),
                r = self.client.writable(), if !self.to_client.is_empty() || self.client.wants_write() => Event::Writable(r.is_ok()),
                r = self.upstream.writable(), if !self.to_upstream.is_empty() || self.upstream.wants_write() => Event::Writable(r.is_ok()),
                _ = &mut self.timer => Event::Timer,
                r = changed(&mut self.accounts) => Event::AccountsChanged(r),
            };
            let result = match event {
                Event::Shutdown => self.lame_duck(),
                Event::ClientReadable(true) => self.read_client(),
                Event::UpstreamReadable(true) => self.read_upstream(),
                Event::Writable(true) => Ok(()),
                Event::ClientReadable(false) | Event::Writable(false) => return End::Client(None),
                Event::UpstreamReadable(false) => return End::Upstream,
                Event::Timer => self.on_timer(),
                Event::AccountsChanged(ok) => self.recheck(ok),
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Writes what each socket takes now.
    fn flush(&mut self) -> Result<(), End> {
        if !self.to_client.is_empty() || self.client.wants_write() {
            self.client
                .write_queue(&mut self.to_client)
                .map_err(|_| End::Client(None))?;
        }
        if !self.to_upstream.is_empty() || self.upstream.wants_write() {
            self.upstream
                .write_queue(&mut self.to_upstream)
                .map_err(|_| End::Upstream)?;
        }
        let now = Instant::now();
        let full = |len: usize, since: &mut Option<Instant>| {
            if len < HIGH_WATER {
                *since = None;
            } else if since.is_none() {
                *since = Some(now);
            }
        };
        full(self.to_client.len(), &mut self.client_full_since);
        full(self.to_upstream.len(), &mut self.upstream_full_since);
        Ok(())
    }

    /// The earliest of the session's deadlines.
    fn next_deadline(&self) -> Instant {
        [
            self.closing_at,
            self.user_expiry,
            self.account_expiry,
            self.stalled_deadline(),
            Some(self.next_ping),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_ping)
    }

    /// The timer fired: whichever deadlines have passed, in order of weight.
    fn on_timer(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if self.closing_at.is_some_and(|t| t <= now) {
            return Err(End::Shutdown);
        }
        if self.user_expiry.is_some_and(|t| t <= now)
            || self.account_expiry.is_some_and(|t| t <= now)
        {
            return Err(self.expired());
        }
        if self.stalled_deadline().is_some_and(|t| t <= now) {
            return Err(self.stalled());
        }
        if self.next_ping <= now {
            return self.ping_client();
        }
        // Nothing was due (the timer fired early): re-arm it next round, as
        // an elapsed Sleep stays ready.
        self.timer_at = now;
        Ok(())
    }

    /// When a full queue has been full for [`WRITE_DEADLINE`].
    fn stalled_deadline(&self) -> Option<Instant> {
        let since = match (self.client_full_since, self.upstream_full_since) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(since + WRITE_DEADLINE)
    }

    /// A peer that has not taken [`HIGH_WATER`] bytes for [`WRITE_DEADLINE`]:
    /// a slow consumer. nats-server closes it without an error.
    fn stalled(&mut self) -> End {
        self.shared.metrics.slow_consumer();
        if self
            .client_full_since
            .is_some_and(|t| t + WRITE_DEADLINE <= Instant::now())
        {
            debug!(
                pending = self.to_client.len(),
                "slow consumer: the client does not read"
            );
            End::Client(None)
        } else {
            debug!(
                pending = self.to_upstream.len(),
                "the upstream does not read"
            );
            End::Upstream
        }
    }

    fn read_client(&mut self) -> Result<(), End> {
        let asked = self.client_read.reserve(&mut self.client_in);
        match self.client.try_read_buf(&mut self.client_in) {
            Ok(0) => Err(End::Client(None)),
            Ok(n) => {
                self.client_read.update(n, asked);
                self.process_client()
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err(End::Client(None)),
        }
    }

    fn read_upstream(&mut self) -> Result<(), End> {
        let asked = self.upstream_read.reserve(&mut self.upstream_in);
        match self.upstream.try_read_buf(&mut self.upstream_in) {
            Ok(0) => Err(End::Upstream),
            Ok(n) => {
                self.upstream_read.update(n, asked);
                self.process_upstream()
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err(End::Upstream),
        }
    }

    // === client → upstream ===

    /// Parses every complete client frame buffered, checks each, and queues
    /// the passing ones upstream verbatim.
    fn process_client(&mut self) -> Result<(), End> {
        let input = std::mem::take(&mut self.client_in);
        let mut pieces = Pieces::default();
        let mut pos = 0;
        let now = std::time::Instant::now();
        let mut failure = None;
        while pos < input.len() {
            match client::parse(&input[pos..], &self.client_limits) {
                Ok(Parsed::Frame { op, len }) => {
                    if let Err(end) = self.client_op(op, pos, len, &mut pieces, now) {
                        failure = Some(end);
                        pos += len;
                        break;
                    }
                    pos += len;
                }
                Ok(Parsed::Incomplete { needed }) => {
                    self.client_read.expect(needed);
                    break;
                }
                Err(e) => {
                    debug!(error = e.reason(), "client protocol error");
                    failure = Some(End::Client(e.error_text().map(Bytes::from_static)));
                    break;
                }
            }
        }
        let mut input = input;
        let consumed = input.split_to(pos).freeze();
        pieces.drain_into(&consumed, &mut self.to_upstream);
        if pieces.messages > 0 {
            self.shared.metrics.relayed(
                Direction::ClientToUpstream,
                pieces.messages,
                pieces.payload_bytes,
            );
        }
        self.client_in = if input.is_empty() {
            BytesMut::new()
        } else {
            input
        };
        match failure {
            Some(end) => Err(end),
            None => Ok(()),
        }
    }

    fn client_op(
        &mut self,
        op: ClientOp<'_>,
        pos: usize,
        len: usize,
        pieces: &mut Pieces,
        now: std::time::Instant,
    ) -> Result<(), End> {
        match op {
            ClientOp::Pub {
                subject,
                reply,
                payload_len,
                ..
            }
            | ClientOp::Hpub {
                subject,
                reply,
                total_len: payload_len,
                ..
            } => {
                if self.opts.pedantic && !is_valid_literal_subject(subject) {
                    self.to_client
                        .push_static(protocol::ERR_INVALID_PUBLISH_SUBJECT);
                }
                match self.authz.check_publish(subject, reply, now) {
                    PublishDecision::Allow
                        if subject == USER_INFO && reply.is_some_and(|r| !r.is_empty()) =>
                    {
                        if self.opts.verbose {
                            self.to_client.push_static(protocol::OK);
                        }
                        self.answer_user_info(reply.unwrap_or_default(), pieces, now);
                    }
                    PublishDecision::Allow => {
                        pieces.pass(pos, pos + len);
                        pieces.count(payload_len);
                        if self.opts.verbose {
                            self.to_client.push_static(protocol::OK);
                        }
                    }
                    PublishDecision::DenySubject => {
                        let mut err = Vec::with_capacity(64 + subject.len());
                        protocol::err_publish_violation(&mut err, subject);
                        self.to_client.push_vec(err);
                        self.shared
                            .metrics
                            .publish_denied(&self.identity.account_name);
                        debug!(subject = %String::from_utf8_lossy(subject), "publish denied");
                    }
                    PublishDecision::DenyReply => {
                        let mut err = Vec::with_capacity(64);
                        protocol::err_reply_violation(&mut err, reply.unwrap_or_default());
                        self.to_client.push_vec(err);
                        self.shared
                            .metrics
                            .publish_denied(&self.identity.account_name);
                        debug!(reply = %String::from_utf8_lossy(reply.unwrap_or_default()), "publish reply denied");
                    }
                }
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => {
                if !self.authz.check_subscribe(subject, queue) {
                    let mut err = Vec::with_capacity(64 + subject.len());
                    protocol::err_subscribe_violation(&mut err, subject, queue);
                    self.to_client.push_vec(err);
                    self.shared
                        .metrics
                        .subscribe_denied(&self.identity.account_name);
                    debug!(subject = %String::from_utf8_lossy(subject), "subscription denied");
                    return Ok(());
                }
                if self
                    .identity
                    .max_subscriptions
                    .is_some_and(|max| self.subs.len() >= max)
                {
                    self.to_client.push_static(protocol::ERR_MAX_SUBS);
                    return Ok(());
                }
                if self.subs.contains(sid) {
                    // nats-server ignores a SUB that reuses a sid.
                    if self.opts.verbose {
                        self.to_client.push_static(protocol::OK);
                    }
                    return Ok(());
                }
                if !is_valid_subject(subject) {
                    self.to_client.push_static(protocol::ERR_INVALID_SUBJECT);
                    return Ok(());
                }
                self.subs.insert(sid, subject, queue);
                pieces.pass(pos, pos + len);
                if self.opts.verbose {
                    self.to_client.push_static(protocol::OK);
                }
            }
            ClientOp::Unsub { sid, max } => {
                if self.opts.verbose {
                    self.to_client.push_static(protocol::OK);
                }
                match max {
                    // Counted here, because natsgate may filter deliveries
                    // that the upstream would count.
                    Some(max) => {
                        if self.subs.contains(sid) && !self.subs.limit(sid, max) {
                            pieces.made(unsub_frame(sid));
                        }
                    }
                    None => {
                        if self.subs.remove(sid) {
                            pieces.pass(pos, pos + len);
                        }
                    }
                }
            }
            ClientOp::Ping => {
                self.pings_in_flight += 1;
                pieces.pass(pos, pos + len);
            }
            ClientOp::Pong => self.pings_outstanding = 0,
            ClientOp::Ok => {}
            ClientOp::Err => return Err(End::Client(None)),
            ClientOp::Info(json) => {
                if serde_json::from_slice::<serde_json::Value>(json).is_err() {
                    return Err(End::Client(None));
                }
            }
            ClientOp::Connect(json) => self.reconnect(json, pieces)?,
        }
        Ok(())
    }

    /// A second CONNECT (spec 2.7): decoded over the previous options,
    /// re-authenticated against the original nonce; the subscriptions go.
    fn reconnect(&mut self, json: &[u8], pieces: &mut Pieces) -> Result<(), End> {
        let mut opts = self.opts.clone();
        // A CONNECT without `jwt` re-authenticates with the one presented
        // before (spec 2.7); the relay keeps it only in the identity.
        if opts.jwt.is_none() {
            opts.jwt = self.identity.jwt.as_ref().map(|u| u.jwt.to_string());
        }
        if opts.merge_json(json).is_err() {
            return Err(End::Client(None));
        }
        let identity = match self
            .shared
            .authenticate(&opts, self.nonce.as_bytes(), self.peer.ip())
        {
            Ok(identity) => identity,
            Err(failure) => {
                debug!(reason = failure.reason, detail = %failure.detail, "re-authentication failed");
                self.shared.metrics.auth_failed(failure.reason);
                return Err(End::Client(Some(Bytes::from_static(
                    protocol::ERR_AUTH_VIOLATION,
                ))));
            }
        };
        let facts = self.shared.upstream.facts();
        if let Some(text) = post_auth_check(&opts, facts.headers) {
            return Err(End::Client(Some(Bytes::from_static(text))));
        }
        let same_upstream = std::ptr::eq(
            self.shared.credential_for(&identity),
            self.shared.credential_for(&self.identity),
        ) && opts.echo == self.opts.echo
            && opts.headers == self.opts.headers
            && opts.no_responders == self.opts.no_responders;
        if !same_upstream {
            // The upstream connection was made for other options or another
            // account; the client reconnects and gets a fitting one.
            debug!("second CONNECT needs another upstream connection; closing");
            return Err(End::Client(None));
        }
        for sid in self.subs.clear() {
            pieces.made(unsub_frame(&sid));
        }
        self.authz = Authorizer::new(identity.permissions.clone(), identity.system_account);
        self.client_limits.max_payload = self.shared.max_payload(&facts, identity.max_payload);
        self.user_expiry = identity.expires_at.map(|t| Instant::now() + until(t));
        self.account_expiry = identity
            .account_expires_at
            .map(|t| Instant::now() + until(t));
        self.identity = identity;
        self.opts = opts;
        if self.opts.verbose {
            self.to_client.push_static(protocol::OK);
        }
        Ok(())
    }

    /// Answers `$SYS.REQ.USER.INFO` for the client's own identity (spec
    /// 9.4): the upstream would describe natsgate's credential instead. The
    /// reply goes to this connection's subscriptions that match it.
    fn answer_user_info(&mut self, reply: &[u8], pieces: &mut Pieces, now: std::time::Instant) {
        let payload = self.shared.user_info_json(&self.identity);
        for (sid, _) in self.subs.matching(reply) {
            let authz = &mut self.authz;
            let delivery = self
                .subs
                .deliver(&sid, |queue| authz.filter_delivery(reply, queue, None, now));
            if matches!(delivery, Delivery::Unknown | Delivery::Filtered) {
                continue;
            }
            let mut frame = Vec::with_capacity(reply.len() + sid.len() + payload.len() + 32);
            frame.extend_from_slice(b"MSG ");
            frame.extend_from_slice(reply);
            frame.push(b' ');
            frame.extend_from_slice(&sid);
            frame.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
            frame.extend_from_slice(&payload);
            frame.extend_from_slice(b"\r\n");
            self.to_client.push_vec(frame);
            if delivery == Delivery::DeliverLast {
                pieces.made(unsub_frame(&sid));
            }
        }
    }

    // === upstream → client ===

    /// Parses every complete upstream frame buffered, filters deliveries,
    /// and queues what the client gets verbatim.
    fn process_upstream(&mut self) -> Result<(), End> {
        let input = std::mem::take(&mut self.upstream_in);
        let mut pieces = Pieces::default();
        let mut pos = 0;
        let now = std::time::Instant::now();
        let mut failure = None;
        while pos < input.len() {
            match server::parse(&input[pos..], &self.upstream_limits) {
                Ok(Parsed::Frame { op, len }) => {
                    self.upstream_op(op, pos, len, &mut pieces, now);
                    pos += len;
                }
                Ok(Parsed::Incomplete { needed }) => {
                    self.upstream_read.expect(needed);
                    break;
                }
                Err(e) => {
                    debug!(error = e.reason(), "upstream protocol error");
                    failure = Some(End::Upstream);
                    break;
                }
            }
        }
        let mut input = input;
        let consumed = input.split_to(pos).freeze();
        pieces.drain_into(&consumed, &mut self.to_client);
        if pieces.messages > 0 {
            self.shared.metrics.relayed(
                Direction::UpstreamToClient,
                pieces.messages,
                pieces.payload_bytes,
            );
        }
        self.upstream_in = if input.is_empty() {
            BytesMut::new()
        } else {
            input
        };
        match failure {
            Some(end) => Err(end),
            None => Ok(()),
        }
    }

    fn upstream_op(
        &mut self,
        op: ServerOp<'_>,
        pos: usize,
        len: usize,
        pieces: &mut Pieces,
        now: std::time::Instant,
    ) {
        match op {
            ServerOp::Msg {
                subject,
                sid,
                reply,
                payload_len,
            }
            | ServerOp::Hmsg {
                subject,
                sid,
                reply,
                total_len: payload_len,
                ..
            } => {
                let authz = &mut self.authz;
                match self.subs.deliver(sid, |queue| {
                    authz.filter_delivery(subject, queue, reply, now)
                }) {
                    Delivery::Unknown => trace!("delivery for a sid the client has left"),
                    Delivery::Filtered => {
                        trace!(subject = %String::from_utf8_lossy(subject), "delivery filtered");
                    }
                    Delivery::Deliver => {
                        pieces.pass(pos, pos + len);
                        pieces.count(payload_len);
                    }
                    Delivery::DeliverLast => {
                        pieces.pass(pos, pos + len);
                        pieces.count(payload_len);
                        self.to_upstream.push(unsub_frame(sid));
                    }
                }
            }
            ServerOp::Ping => self.to_upstream.push_static(protocol::PONG),
            ServerOp::Pong => {
                if self.pings_in_flight == 0 {
                    return;
                }
                self.pings_in_flight -= 1;
                pieces.made(Bytes::from_static(protocol::PONG));
                if self.connect_info_due {
                    self.connect_info_due = false;
                    pieces.made(Bytes::from(self.connect_info(false)));
                }
            }
            ServerOp::Ok => {}
            ServerOp::Err(_) => pieces.pass(pos, pos + len),
            ServerOp::Info(json) => {
                let ldm = crate::protocol::info::UpstreamInfo::parse(json)
                    .map(|i| i.ldm)
                    .unwrap_or(false);
                if ldm && self.opts.protocol >= 1 {
                    pieces.made(Bytes::from(self.connect_info(true)));
                }
            }
        }
    }

    /// natsgate's INFO for this connection: the connect-info INFO after the
    /// first PONG (spec 1.9), or the lame-duck INFO.
    fn connect_info(&self, ldm: bool) -> Vec<u8> {
        let facts = self.shared.upstream.facts();
        let mut info = self.shared.client_info(
            &facts,
            self.client_id,
            self.peer.ip(),
            None,
            Some(&self.identity),
        );
        info.max_payload = i64::try_from(self.client_limits.max_payload).unwrap_or(i64::MAX);
        if ldm {
            info.ldm = true;
        } else {
            info.connect_info = true;
            info.remote_account = if self.identity.account.is_empty() {
                "$G".to_string()
            } else {
                self.identity.account.clone()
            };
            info.acc_is_sys = self.identity.system_account;
        }
        info.to_frame()
    }

    // === timers and the end ===

    /// After an account update: a JWT user who is revoked, whose signing key
    /// went, or whose account expired is disconnected as nats-server does.
    fn recheck(&mut self, watching: bool) -> Result<(), End> {
        if !watching {
            self.accounts = None;
            return Ok(());
        }
        let Some(user) = &self.identity.jwt else {
            return self.refresh_static_user();
        };
        match self.shared.recheck(user) {
            Ok(()) => Ok(()),
            Err(disconnect) => {
                debug!(?disconnect, "disconnected by an account update");
                let frame = disconnect
                    .sends_error()
                    .then(|| Bytes::from(protocol::err_frame(disconnect.error_text())));
                Err(End::Client(frame))
            }
        }
    }

    /// After a config reload: a static user that is gone is disconnected;
    /// one whose permissions changed gets them at once, and loses the
    /// subscriptions they no longer allow, with nats-server's reload error.
    fn refresh_static_user(&mut self) -> Result<(), End> {
        let Some((permissions, spec)) = self.shared.static_user(&self.identity.user) else {
            debug!("static user removed by a config reload");
            return Err(End::Client(Some(Bytes::from_static(
                protocol::ERR_AUTH_VIOLATION,
            ))));
        };
        if spec == self.identity.spec {
            return Ok(());
        }
        debug!("permissions changed by a config reload");
        self.authz.replace_permissions(permissions.clone());
        self.identity.permissions = permissions;
        self.identity.spec = spec;
        for (sid, subject, queue) in self.subs.entries() {
            if self.authz.check_subscribe(&subject, queue.as_deref()) {
                continue;
            }
            self.subs.remove(&sid);
            self.to_upstream.push(unsub_frame(&sid));
            let mut err = Vec::with_capacity(80 + subject.len());
            protocol::err_subscription_removed(&mut err, &subject, queue.as_deref(), &sid);
            self.to_client.push_vec(err);
        }
        Ok(())
    }

    /// Shutdown began: tell the client the server is going away (an INFO
    /// with `"ldm":true`, as nats-server's lame-duck mode, for clients that
    /// take async INFO) and pick a moment within the grace to close.
    fn lame_duck(&mut self) -> Result<(), End> {
        if self.opts.protocol >= 1 {
            let info = self.connect_info(true);
            self.to_client.push_vec(info);
        }
        let grace = self.shared.settings.listen.shutdown_grace;
        if grace.is_zero() {
            return Err(End::Shutdown);
        }
        let mut random = [0u8; 4];
        let _ = getrandom::fill(&mut random);
        let fraction = f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX);
        self.closing_at = Some(Instant::now() + grace.mul_f64(fraction * 0.9));
        Ok(())
    }

    fn ping_client(&mut self) -> Result<(), End> {
        if self.pings_outstanding >= PING_MAX {
            return Err(End::Client(Some(Bytes::from_static(protocol::ERR_STALE))));
        }
        self.pings_outstanding += 1;
        self.to_client.push_static(protocol::PING);
        self.next_ping = Instant::now() + PING_INTERVAL;
        Ok(())
    }

    fn expired(&mut self) -> End {
        let now = Instant::now();
        let text = if self.account_expiry.is_some_and(|t| t <= now) {
            "Account Authentication Expired"
        } else {
            "User Authentication Expired"
        };
        debug!(reason = text, "credentials expired");
        End::Client(Some(Bytes::from(protocol::err_frame(text))))
    }

    /// Delivers what is already queued for the client (bounded in time),
    /// then the final frame, and closes both sockets.
    async fn finish(mut self, end: End) {
        match &end {
            End::Client(_) => debug!("client connection closed"),
            End::Upstream => debug!("upstream connection lost; closing the client"),
            End::Shutdown => debug!("shutting down"),
        }
        if let End::Client(Some(frame)) = end {
            self.to_client.push(frame);
        }
        let deadline = Instant::now() + CLOSE_FLUSH;
        while (!self.to_client.is_empty() || self.client.wants_write()) && Instant::now() < deadline
        {
            if self.client.write_queue(&mut self.to_client).is_err() {
                break;
            }
            if self.to_client.is_empty() && !self.client.wants_write() {
                break;
            }
            if tokio::time::timeout_at(deadline, self.client.writable())
                .await
                .is_err()
            {
                break;
            }
        }
    }
}

/// The adaptive read size of one side.
#[derive(Debug)]
struct ReadSize {
    size: usize,
    /// The length the buffer must reach to hold the frame being read.
    frame_end: Option<usize>,
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize {
            size: MIN_READ,
            frame_end: None,
        }
    }
}

impl ReadSize {
    /// Makes room in `buf` for the next read; returns the room made.
    fn reserve(&mut self, buf: &mut BytesMut) -> usize {
        let frame_rest = self
            .frame_end
            .take()
            .map_or(0, |end| end.saturating_sub(buf.len()));
        buf.reserve(self.size.max(frame_rest));
        buf.capacity() - buf.len()
    }

    fn update(&mut self, read: usize, asked: usize) {
        if read >= asked {
            self.size = (self.size * 2).min(MAX_READ);
        } else if read < asked / 4 {
            self.size = (self.size / 2).max(MIN_READ);
        }
    }

    /// The frame in progress ends at `end` bytes of the buffer.
    fn expect(&mut self, end: Option<usize>) {
        self.frame_end = end;
    }
}

enum Event {
    Shutdown,
    ClientReadable(bool),
    UpstreamReadable(bool),
    Writable(bool),
    Timer,
    AccountsChanged(bool),
}

/// Resolves when the account generation changes; never without a receiver.
async fn changed(accounts: &mut Option<watch::Receiver<u64>>) -> bool {
    match accounts {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

fn unsub_frame(sid: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(sid.len() + 8);
    frame.extend_from_slice(b"UNSUB ");
    frame.extend_from_slice(sid);
    frame.extend_from_slice(b"\r\n");
    Bytes::from(frame)
}
