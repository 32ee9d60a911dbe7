//! The relay: both sockets of one session, driven by one task.
//!
//! Each readable event reads 4 to 256 KiB (adapting to the traffic), parses
//! every complete frame in it, and decides per frame ([`super::client_ops`],
//! [`super::upstream_ops`]). Frames that pass go on *verbatim*, as slices of
//! the read buffer; writes are vectored and non-blocking. natsgate's own
//! answers keep the client's op order through [`Order`].
//!
//! Back-pressure: a side is not read while the queue it feeds holds more than
//! [`HIGH_WATER`] bytes; a queue full for [`WRITE_DEADLINE`] makes its peer a
//! slow consumer.
//!
//! The end ([`Relay::close`]): whatever started it, nothing natsgate accepted
//! is lost. The frames accepted before the cause reach the upstream, which
//! answers the `PING`s sent before it (and natsgate's own last `PING`, so
//! natsgate knows the upstream has processed everything); those `PONG`s reach
//! the client, then the `-ERR` nats-server would send, then the close. Only a
//! peer that stops reading or answering for [`DRAIN_TIMEOUT`] cuts this
//! short, and that is counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::conn::{Conn, HIGH_WATER, Read};
use super::jetstream::JsGuard;
use super::order::{Order, Ping};
use super::own_answers::{OwnAnswer, OwnAnswers};
use super::repeat::RepeatLine;
use super::subs::Subscriptions;
use super::{Authenticated, Close, until};
use crate::auth::Identity;
use crate::gate::{AccountSlot, Gate};
use crate::limits::{ConnectionSlot, Rates};
use crate::metrics::Stuck;
use crate::metrics::users::UserHandle;
use crate::permissions::Authorizer;
use crate::protocol::client::ClientLimits;
use crate::protocol::connect::ConnectOptions;
use crate::protocol::encode;
use crate::protocol::server::ServerLimits;
use crate::transport::Transport;
use crate::upstream::{UPSTREAM_MAX_LINE, UpstreamConn};

/// How long a queue may stay full before its peer is a slow consumer. Below
/// nats-server's own default `write_deadline` (10 s): while a client is not
/// reading, natsgate stops reading its upstream connection, and natsgate
/// must notice (and count) the slow consumer before the upstream does.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a close may take to deliver what was accepted (see the module
/// docs); within a shutdown, never past the end of `shutdown_grace`.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// After the last byte is written, how long natsgate keeps reading (and
/// dropping) what the client still sends, so that the kernel does not reset
/// the connection before the client has read natsgate's last frames.
const LINGER: Duration = Duration::from_millis(500);
/// How long a user with a subscription limit of 0 stays connected.
const ZERO_SUBS_CLOSE: Duration = Duration::from_millis(20);
/// natsgate's keep-alive PING to the client, as nats-server's `ping_interval`.
const PING_INTERVAL: Duration = Duration::from_secs(120);
/// Unanswered PINGs before `Stale Connection` (nats-server's `ping_max`).
const PING_MAX: u32 = 2;

/// The authenticated user, as both directions read it.
pub(super) struct User {
    pub opts: ConnectOptions,
    pub identity: Identity,
    pub nonce: String,
    pub peer: std::net::SocketAddr,
    pub client_id: u64,
    pub authz: Authorizer,
    pub subs: Subscriptions,
    pub limits: ClientLimits,
    pub user_expiry: Option<Instant>,
    pub account_expiry: Option<Instant>,
    /// The user's per-user counters (`natsgate_user_*`).
    pub stats: UserHandle,
}

/// How long a throttled client may go unthrottled and still count as
/// throttled "without a pause" for `[limits] close_after`.
const THROTTLE_PAUSE: Duration = Duration::from_secs(1);

/// A session's `[limits]` rate state.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    /// The client is not read until then.
    pub until: Option<Instant>,
    /// Since when it has been throttled without a pause.
    since: Option<std::time::Instant>,
    /// When the last throttle ended (or ends).
    last_end: Option<std::time::Instant>,
}

impl Throttle {
    /// Throttled from `now` until `until`. Returns since when the client
    /// has been throttled with no pause longer than [`THROTTLE_PAUSE`].
    pub fn start(
        &mut self,
        until: std::time::Instant,
        now: std::time::Instant,
    ) -> std::time::Instant {
        let continuing = self
            .last_end
            .is_some_and(|end| now.saturating_duration_since(end) <= THROTTLE_PAUSE);
        let since = match self.since {
            Some(since) if continuing => since,
            _ => now,
        };
        self.since = Some(since);
        self.last_end = Some(until);
        self.until = Some(Instant::from_std(until));
        since
    }
}

/// natsgate's own keep-alive PINGs to the client.
pub(super) struct KeepAlive {
    outstanding: u32,
    next: Instant,
}

impl KeepAlive {
    /// The client answered a PING.
    pub fn answered(&mut self) {
        self.outstanding = 0;
    }
}

pub struct Relay {
    pub(super) gate: Arc<Gate>,
    pub(super) client: Conn,
    pub(super) upstream: Conn,
    pub(super) user: User,
    pub(super) order: Order,
    pub(super) upstream_limits: ServerLimits,
    /// Whether the connect-info INFO (spec 1.9) is still due.
    pub(super) connect_info_due: bool,
    pub(super) keepalive: KeepAlive,
    /// PUB/HPUB frames passed upstream so far (logged at the close).
    pub(super) pubs_accepted: u64,
    /// Account resolver requests answered by natsgate, in flight.
    pub(super) own: OwnAnswers,
    /// The JetStream guard's state; `None` unless `[jetstream] guard`.
    pub(super) js: Option<Box<JsGuard>>,
    /// The last delivery whose decision a frame with the same control line
    /// may repeat.
    pub(super) repeat: RepeatLine,
    /// The `[limits]` buckets this session draws from, and its throttle.
    pub(super) rates: Rates,
    pub(super) throttle: Throttle,
    /// Changes after every account update and config reload (taken by the
    /// relay loop).
    accounts: Option<watch::Receiver<u64>>,
    /// When this session closes by itself: shutdown began (spread over
    /// `shutdown_grace` so clients do not all reconnect at once), or a user
    /// who may not subscribe at all.
    closing_at: Option<Instant>,
    /// The end of the shutdown grace, once shutdown began.
    grace_end: Option<Instant>,
    /// The one timer of the session, armed for `timer_at`.
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    _slot: AccountSlot,
    _user_slot: ConnectionSlot,
}

impl Relay {
    pub(crate) fn new(
        gate: Arc<Gate>,
        client: Transport,
        upstream: UpstreamConn,
        client_in: BytesMut,
        login: Authenticated,
    ) -> Relay {
        let Authenticated {
            opts,
            identity,
            nonce,
            peer,
            client_id,
            slot,
            user_slot,
        } = login;
        let now = Instant::now();
        let next_ping = now + PING_INTERVAL;
        let facts = gate.upstream.facts();
        let limits = ClientLimits {
            max_control_line: gate.settings.listen.max_control_line,
            max_payload: gate.max_payload(&facts, identity.max_payload),
            headers: opts.headers && facts.headers,
        };
        let upstream_limits = ServerLimits {
            max_control_line: UPSTREAM_MAX_LINE,
            max_payload: usize::try_from(upstream.info.max_payload)
                .unwrap_or(usize::MAX)
                .max(limits.max_payload),
        };
        let mut authz = Authorizer::new(identity.permissions.clone(), identity.system_account);
        authz.set_report_only(gate.report_only(&identity));
        let stats = gate
            .metrics
            .user(&identity.user, &identity.name, &identity.account_name);
        let rates = gate.rates(&identity);
        let user = User {
            stats,
            authz,
            user_expiry: identity.expires_at.map(|t| now + until(t)),
            account_expiry: identity.account_expires_at.map(|t| now + until(t)),
            subs: Subscriptions::default(),
            opts,
            identity,
            nonce,
            peer,
            client_id,
            limits,
        };
        let guard = gate.guards_jetstream(&user.identity);
        let mut relay = Relay {
            accounts: Some(gate.watch_accounts()),
            gate,
            client: Conn::new(client, client_in),
            upstream: Conn::new(upstream.transport, upstream.leftover),
            connect_info_due: user.opts.protocol >= 1,
            user,
            order: Order::default(),
            upstream_limits,
            keepalive: KeepAlive {
                outstanding: 0,
                next: next_ping,
            },
            pubs_accepted: 0,
            own: OwnAnswers::default(),
            js: None,
            repeat: RepeatLine::default(),
            rates,
            throttle: Throttle::default(),
            closing_at: None,
            grace_end: None,
            timer: Box::pin(sleep_until(next_ping)),
            timer_at: next_ping,
            _slot: slot,
            _user_slot: user_slot,
        };
        if guard {
            relay.js = Some(Box::default());
        }
        if relay.user.opts.verbose {
            relay.client.out.push_static(encode::OK);
        }
        if relay.user.identity.max_subscriptions == Some(0) {
            // A user who may not subscribe at all (a JWT without `subs`):
            // nats-server says so at once and closes ~20 ms later, still
            // answering ops sent with the CONNECT (spec 2.2).
            relay.client.out.push_static(encode::ERR_MAX_SUBS);
            relay.closing_at = Some(now + ZERO_SUBS_CLOSE);
        }
        relay
    }

    /// How the client reached natsgate (its JWT's `allowed_connection_types`
    /// are checked against it, again on a second CONNECT).
    pub(super) fn connection_type(&self) -> crate::auth::ConnectionType {
        if self.client.transport.is_websocket() {
            crate::auth::ConnectionType::Websocket
        } else {
            crate::auth::ConnectionType::Standard
        }
    }

    /// Relays until either side closes, a fatal protocol error, expiry or
    /// shutdown, then closes without losing what was accepted.
    pub async fn run(mut self, shutdown: &CancellationToken) {
        let why = self.relay_loop(shutdown).await;
        self.close(why).await;
    }

    async fn relay_loop(&mut self, shutdown: &CancellationToken) -> Close {
        // Pipelined ops that arrived with the CONNECT, and bytes the upstream
        // sent after its login PONG.
        if let Err(why) = self.process_client().and_then(|()| self.process_upstream()) {
            return why;
        }
        // The shutdown and account-change futures live across the loop's
        // turns: made once (and again only after an account change), not
        // registered and dropped on every event.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut shutdown_polled = false;
        // The account-change future is polled only to register and when a
        // clone of its receiver (a version compare, no lock) says it has
        // something: polling it every turn costs a lock.
        let mut accounts_probe = self.accounts.clone();
        let mut accounts_polled = false;
        let mut accounts = Box::pin(next_change(self.accounts.take()));
        let mut turn: usize = 0;
        loop {
            let now = Instant::now();
            if self.client.flush(now).is_err() {
                return Close::ClientGone;
            }
            if self.upstream.flush(now).is_err() {
                return Close::UpstreamGone;
            }
            let to_client = self.client.out.len() + self.order.held_bytes();
            // A JetStream request waiting for its stream's subjects holds
            // the client's later frames behind it.
            let holding = self.js.as_ref().is_some_and(|js| js.holding());
            let read_client = !holding
                && self.throttle.until.is_none()
                && self.upstream.out.len() < HIGH_WATER
                && to_client < HIGH_WATER;
            let read_upstream = self.client.out.len() < HIGH_WATER;
            // One timer for every deadline, moved only when the earliest
            // one changes (not re-armed per event). A deadline already due
            // is handled at once: under a flood the runtime may process its
            // timers late, and a close or an expiry must not wait for that.
            let deadline = self.next_deadline();
            if deadline <= now {
                if let Err(why) = self.on_timer().and_then(|()| self.resume_client()) {
                    return why;
                }
                continue;
            }
            if deadline != self.timer_at {
                self.timer.as_mut().reset(deadline);
                self.timer_at = deadline;
            }
            // Not biased: each turn starts with the next source, so under a
            // flood from one side the other side, the timer (shutdown,
            // expiry) and account changes still get their turn. Sources are
            // polled in place (readiness by `poll_*_ready`, no future made
            // and dropped per turn); the shutdown token is polled once to
            // register and then only read, since the same task's waker is
            // woken by its cancellation.
            turn = turn.wrapping_add(1);
            let start = turn % SOURCES;
            let listen_shutdown = self.grace_end.is_none();
            let event = std::future::poll_fn(|cx| {
                for i in 0..SOURCES {
                    let ready = match (start + i) % SOURCES {
                        0 if listen_shutdown => {
                            let cancelled_now = if shutdown_polled {
                                shutdown.is_cancelled()
                            } else {
                                shutdown_polled = true;
                                cancelled.as_mut().poll(cx).is_ready()
                            };
                            cancelled_now.then_some(Event::Shutdown)
                        }
                        1 if read_client => ready_event(
                            self.client.transport.poll_readable(cx),
                            Event::ClientReadable,
                        ),
                        2 if read_upstream => ready_event(
                            self.upstream.transport.poll_readable(cx),
                            Event::UpstreamReadable,
                        ),
                        3 if self.client.has_output() => ready_event(
                            self.client.transport.poll_writable(cx),
                            Event::ClientWritable,
                        ),
                        4 if self.upstream.has_output() => ready_event(
                            self.upstream.transport.poll_writable(cx),
                            Event::UpstreamWritable,
                        ),
                        5 => self
                            .timer
                            .as_mut()
                            .poll(cx)
                            .is_ready()
                            .then_some(Event::Timer),
                        6 if !accounts_polled
                            || accounts_probe
                                .as_ref()
                                .is_some_and(|p| p.has_changed().unwrap_or(true)) =>
                        {
                            accounts_polled = true;
                            match accounts.as_mut().poll(cx) {
                                Poll::Ready((ok, rx)) => {
                                    match accounts_probe.as_mut() {
                                        Some(probe) if ok => probe.mark_unchanged(),
                                        _ => accounts_probe = None,
                                    }
                                    accounts = Box::pin(next_change(rx));
                                    accounts_polled = false;
                                    Some(Event::AccountsChanged(ok))
                                }
                                Poll::Pending => None,
                            }
                        }
                        7 => match self.own.poll_next(cx) {
                            Poll::Ready(Some(answer)) => Some(Event::OwnAnswer(answer)),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some(event) = ready {
                        return Poll::Ready(event);
                    }
                }
                Poll::Pending
            })
            .await;
            let result = match event {
                Event::Shutdown => self.lame_duck(),
                Event::ClientReadable(true) => match self.client.read() {
                    Read::Data => self.process_client(),
                    Read::Nothing => Ok(()),
                    Read::Closed => Err(Close::ClientGone),
                },
                Event::UpstreamReadable(true) => match self.upstream.read() {
                    Read::Data => self.process_upstream(),
                    Read::Nothing => Ok(()),
                    Read::Closed => Err(Close::UpstreamGone),
                },
                Event::ClientWritable(true) | Event::UpstreamWritable(true) => Ok(()),
                Event::ClientReadable(false) | Event::ClientWritable(false) => {
                    Err(Close::ClientGone)
                }
                Event::UpstreamReadable(false) | Event::UpstreamWritable(false) => {
                    Err(Close::UpstreamGone)
                }
                Event::Timer => self.on_timer(),
                Event::AccountsChanged(ok) => self.recheck(ok),
                Event::OwnAnswer(answer) => {
                    self.on_own_answer(answer);
                    Ok(())
                }
            };
            if let Err(why) = result.and_then(|()| self.resume_client()) {
                return why;
            }
        }
    }

    /// The earliest of the session's deadlines.
    fn next_deadline(&self) -> Instant {
        [
            self.closing_at,
            self.user.user_expiry,
            self.user.account_expiry,
            self.client.stalled_at(WRITE_DEADLINE),
            self.upstream.stalled_at(WRITE_DEADLINE),
            self.js.as_ref().and_then(|js| js.deadline()),
            self.throttle.until,
        ]
        .into_iter()
        .flatten()
        .fold(self.keepalive.next, Instant::min)
    }

    /// The timer fired: whichever deadlines have passed, in order of weight.
    fn on_timer(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        let passed = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if passed(self.closing_at) {
            return Err(Close::Gate { error: None });
        }
        if passed(self.user.account_expiry) {
            return Err(expired("Account Authentication Expired"));
        }
        if passed(self.user.user_expiry) {
            return Err(expired("User Authentication Expired"));
        }
        // A peer that has not taken HIGH_WATER bytes for WRITE_DEADLINE is a
        // slow consumer; nats-server closes it without an error.
        if passed(self.client.stalled_at(WRITE_DEADLINE)) {
            self.gate.metrics.slow_consumer();
            debug!(
                pending = self.client.out.len(),
                "slow consumer: the client does not read"
            );
            return Err(Close::ClientSlow);
        }
        if passed(self.upstream.stalled_at(WRITE_DEADLINE)) {
            self.gate.metrics.slow_consumer();
            debug!(
                pending = self.upstream.out.len(),
                "slow consumer: the upstream does not read"
            );
            return Err(Close::UpstreamSlow);
        }
        if passed(self.js.as_ref().and_then(|js| js.deadline())) {
            self.lookup_timed_out();
            return Ok(());
        }
        if passed(self.throttle.until) {
            // The tokens are there: the frames that waited, then reading.
            self.throttle.until = None;
            return self.process_client();
        }
        if self.keepalive.next <= now {
            return self.ping_client();
        }
        // Nothing was due (the timer fired early): re-arm it next round, as
        // an elapsed Sleep stays ready.
        self.timer_at = now;
        Ok(())
    }

    /// After a held JetStream request was settled: the client's frames
    /// that arrived behind it.
    fn resume_client(&mut self) -> Result<(), Close> {
        if self.js.as_mut().is_some_and(|js| js.take_resume()) {
            return self.process_client();
        }
        Ok(())
    }

    fn ping_client(&mut self) -> Result<(), Close> {
        if self.keepalive.outstanding >= PING_MAX {
            let error = Some(Bytes::from_static(encode::ERR_STALE));
            return Err(Close::Gate { error });
        }
        self.keepalive.outstanding += 1;
        self.keepalive.next = Instant::now() + PING_INTERVAL;
        let ping = Bytes::from_static(encode::PING);
        self.order.frame(ping, &mut self.client.out);
        Ok(())
    }

    /// After an account update: a JWT user who is revoked, whose signing key
    /// went, or whose account expired is disconnected as nats-server does.
    fn recheck(&mut self, watching: bool) -> Result<(), Close> {
        if !watching {
            return Ok(());
        }
        let report_only = self.gate.report_only(&self.user.identity);
        if report_only != self.user.authz.report_only() {
            self.apply_policy(report_only);
        }
        let Some(user) = &self.user.identity.jwt else {
            return self.refresh_static_user();
        };
        match self.gate.recheck(user) {
            Ok(()) => Ok(()),
            Err(disconnect) => {
                debug!(?disconnect, "disconnected by an account update");
                let error = disconnect
                    .sends_error()
                    .then(|| encode::err(disconnect.error_text()));
                Err(Close::Gate { error })
            }
        }
    }

    /// After a config reload: a static user that is gone is disconnected;
    /// one whose permissions changed gets them at once, and loses the
    /// subscriptions they no longer allow, with nats-server's reload error.
    fn refresh_static_user(&mut self) -> Result<(), Close> {
        let user = &mut self.user;
        let Some((permissions, spec)) = self.gate.static_user(&user.identity.user) else {
            debug!("static user removed by a config reload");
            let error = Some(Bytes::from_static(encode::ERR_AUTH_VIOLATION));
            return Err(Close::Gate { error });
        };
        if spec == user.identity.spec {
            return Ok(());
        }
        debug!("permissions changed by a config reload");
        user.authz.replace_permissions(permissions.clone());
        user.identity.permissions = permissions;
        user.identity.spec = spec;
        self.recheck_subscriptions();
        Ok(())
    }

    /// A reload switched report-only mode (`[policy]`) on or off for this
    /// user. Switching to enforcement starts the permissions afresh (an
    /// empty response table, the delivery filter re-armed) and removes the
    /// subscriptions they refuse, as a permission change on reload does.
    fn apply_policy(&mut self, report_only: bool) {
        info!(
            user = %self.user.identity.user,
            report_only,
            "permission policy changed by a config reload"
        );
        let authz = &mut self.user.authz;
        authz.set_report_only(report_only);
        if !report_only {
            let permissions = authz.permissions().clone();
            authz.replace_permissions(permissions);
            self.recheck_subscriptions();
        }
    }

    /// Runs every subscription through the subscribe check again (which
    /// also re-arms the delivery filter); when enforcing, the refused ones
    /// are removed upstream and the client gets nats-server's reload error
    /// (spec 4.7). A report-only user keeps them.
    fn recheck_subscriptions(&mut self) {
        let user = &mut self.user;
        for (sid, subject, queue) in user.subs.entries() {
            if user.authz.check_subscribe(&subject, queue.as_deref()) || user.authz.report_only() {
                continue;
            }
            user.subs.remove(&sid);
            self.upstream.out.push(encode::unsub(&sid));
            let err = encode::subscription_removed(&subject, queue.as_deref(), &sid);
            self.order.frame(err, &mut self.client.out);
        }
    }

    /// Shutdown began: tell the client the server is going away (an INFO
    /// with `"ldm":true`, as nats-server's lame-duck mode, for clients that
    /// take async INFO) and pick a moment within the grace to close.
    fn lame_duck(&mut self) -> Result<(), Close> {
        if self.user.opts.protocol >= 1 {
            let info = Bytes::from(self.connect_info(true));
            self.order.frame(info, &mut self.client.out);
        }
        let grace = self.gate.settings.listen.shutdown_grace;
        let now = Instant::now();
        self.grace_end = Some(now + grace);
        if grace.is_zero() {
            return Err(Close::Gate { error: None });
        }
        self.closing_at = Some(now + crate::shutdown::close_after(grace));
        Ok(())
    }

    /// Ends the session without losing what was accepted (module docs), then
    /// closes both sockets.
    async fn close(mut self, why: Close) {
        debug!(?why, pubs_accepted = self.pubs_accepted, "closing");
        let mut client_ok = !matches!(why, Close::ClientGone | Close::ClientSlow);
        let mut upstream_ok = !matches!(why, Close::UpstreamGone | Close::UpstreamSlow);
        if let Close::Gate { error } = &why {
            self.client.transport.closing_with(error.as_deref());
        }
        if let Close::Gate { error: Some(error) } = why {
            self.order.frame(error, &mut self.client.out);
        }
        if upstream_ok {
            // natsgate's own PING: its PONG says the upstream has processed
            // every frame before it.
            self.order.ping(Ping::Gate);
            self.upstream.out.push_static(encode::PING);
        } else {
            self.order.abandon(&mut self.client.out);
        }
        let mut deadline = Instant::now() + DRAIN_TIMEOUT;
        if let Some(end) = self.grace_end {
            deadline = deadline.min(end.max(Instant::now()));
        }
        loop {
            let now = Instant::now();
            if upstream_ok && self.upstream.flush(now).is_err() {
                upstream_ok = false;
                self.order.abandon(&mut self.client.out);
            }
            if !client_ok {
                // Nobody reads it: what the client would get is dropped.
                self.client.out = Default::default();
            } else if self.client.flush(now).is_err() {
                client_ok = false;
                continue;
            }
            let upstream_owes =
                upstream_ok && (!self.order.is_empty() || self.upstream.has_output());
            let client_owed = client_ok && self.client.has_output();
            if !upstream_owes && !client_owed {
                break;
            }
            // Checked here as well as by the timer, which a flood may delay.
            if now >= deadline {
                let stuck = if upstream_owes {
                    Stuck::Upstream
                } else {
                    Stuck::Client
                };
                debug!(?stuck, "close gave up waiting");
                self.gate.metrics.drain_timed_out(stuck);
                break;
            }
            let read_upstream = upstream_ok
                && !self.order.is_empty()
                && (!client_ok || self.client.out.len() < HIGH_WATER);
            tokio::select! {
                r = self.upstream.transport.readable(), if read_upstream => {
                    let read = if r.is_ok() { self.upstream.read() } else { Read::Closed };
                    let failed = match read {
                        Read::Data => self.process_upstream().is_err(),
                        Read::Nothing => false,
                        Read::Closed => true,
                    };
                    if failed {
                        upstream_ok = false;
                        self.order.abandon(&mut self.client.out);
                    }
                }
                r = self.upstream.transport.writable(), if upstream_ok && self.upstream.has_output() => {
                    if r.is_err() {
                        upstream_ok = false;
                        self.order.abandon(&mut self.client.out);
                    }
                }
                r = self.client.transport.writable(), if client_owed => client_ok = r.is_ok(),
                _ = sleep_until(deadline) => {}
            }
        }
        if client_ok {
            linger(&mut self.client.transport).await;
        }
    }
}

/// Closes the client's write side and reads (and drops) what it still
/// sends, bounded by [`LINGER`]: a socket closed with unread input is reset,
/// and a reset can destroy the last frames before the client reads them.
async fn linger(client: &mut Transport) {
    let _ = tokio::time::timeout(LINGER, async {
        client.shutdown().await;
        let mut scratch = BytesMut::new();
        loop {
            if client.readable().await.is_err() {
                return;
            }
            scratch.clear();
            scratch.reserve(16 * 1024);
            match client.try_read_buf(&mut scratch) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

fn expired(text: &str) -> Close {
    debug!(reason = text, "credentials expired");
    Close::Gate {
        error: Some(encode::err(text)),
    }
}

/// The event sources of [`Relay::relay_loop`]'s turn.
const SOURCES: usize = 8;

/// `event(ok)` when a readiness poll is ready.
fn ready_event(ready: Poll<std::io::Result<()>>, event: fn(bool) -> Event) -> Option<Event> {
    match ready {
        Poll::Ready(r) => Some(event(r.is_ok())),
        Poll::Pending => None,
    }
}

enum Event {
    Shutdown,
    ClientReadable(bool),
    UpstreamReadable(bool),
    ClientWritable(bool),
    UpstreamWritable(bool),
    Timer,
    AccountsChanged(bool),
    OwnAnswer(OwnAnswer),
}

/// Resolves when the account generation changes, handing the receiver back
/// (`None` once the sender is gone); never without a receiver.
async fn next_change(
    accounts: Option<watch::Receiver<u64>>,
) -> (bool, Option<watch::Receiver<u64>>) {
    match accounts {
        Some(mut rx) => match rx.changed().await {
            Ok(()) => (true, Some(rx)),
            Err(_) => (false, None),
        },
        None => std::future::pending().await,
    }
}
