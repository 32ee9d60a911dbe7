//! Client → upstream: every frame the client sends, checked in nats-server's
//! order. Passing frames go on verbatim; natsgate's own answers (`+OK`,
//! `-ERR`, `$SYS.REQ.USER.INFO`) go to the client through [`Order`], so
//! they keep the client's op order.

use std::ops::ControlFlow;

use bytes::Bytes;
use tracing::debug;

use super::Close;
use super::advisory::{self, Kind};
use super::jetstream::Guarded;
use super::order::{Order, Ping};
use super::pieces::{Pieces, Scanned, scan};
use super::relay::Relay;
use super::subs::Delivery;
use super::{post_auth_check, until};
use crate::metrics::Direction;
use crate::permissions::explain;
use crate::permissions::{Authorizer, PublishDecision, reserved_publish, reserved_subscribe};
use crate::protocol::client::{self, ClientOp};
use crate::protocol::encode;
use crate::protocol::subject::{is_valid_literal_subject, is_valid_subject};
use crate::resolver::Request;
use crate::transport::OutQueue;

/// Why the scan of the client's input stopped early.
enum Stop {
    /// The connection ends.
    Close(Close),
    /// A JetStream request waits for its stream's subjects (see
    /// [`super::jetstream`]); the rest of the input waits with it.
    Hold,
    /// A `[limits]` rate is used up until `until`: this PUB (from `start`
    /// of the input) and the rest wait, unread (back-pressure, no error).
    Throttle {
        until: std::time::Instant,
        start: usize,
    },
}

/// The subject natsgate answers itself (spec 9.4).
const USER_INFO: &[u8] = b"$SYS.REQ.USER.INFO";

impl Relay {
    /// Handles every complete frame the client sent, queueing what passes
    /// for the upstream. A fatal frame ends the connection, after the
    /// frames before it.
    pub(super) fn process_client(&mut self) -> Result<(), Close> {
        let input = self.client.take_input();
        let mut pieces = Pieces::default();
        let now = std::time::Instant::now();
        let limits = self.user.limits;
        let (mut used, stop) = scan(
            &input,
            |buf| client::parse(buf, &limits),
            |op, start, end| self.client_op(op, &input[start..end], start, end, &mut pieces, now),
        );
        let (needed, result) = match stop {
            Scanned::Incomplete(needed) => (needed, Ok(())),
            Scanned::Stopped(Stop::Close(close)) => (None, Err(close)),
            // A JetStream request waits for its stream's subjects; the
            // frames after it stay in the input until it is settled.
            Scanned::Stopped(Stop::Hold) => (None, Ok(())),
            Scanned::Stopped(Stop::Throttle { until, start }) => {
                // The PUB that found no tokens is not handled yet.
                used = start;
                (None, self.throttled(until, now))
            }
            Scanned::Error(e) => {
                debug!(error = e.reason(), "client protocol error");
                let error = e.error_text().map(Bytes::from_static);
                (None, Err(Close::Gate { error }))
            }
        };
        let (messages, bytes) = pieces.hand_over(
            &mut self.client,
            input,
            used,
            needed,
            &mut self.upstream.out,
        );
        self.pubs_accepted += messages;
        let stats = self.user.stats.stats();
        self.gate
            .metrics
            .relayed(stats, Direction::ClientToUpstream, messages, bytes);
        result
    }

    /// A rate is used up until `until`: stop reading the client until
    /// then; close it when it has been throttled without a pause for
    /// `[limits] close_after`.
    fn throttled(
        &mut self,
        until: std::time::Instant,
        now: std::time::Instant,
    ) -> Result<(), Close> {
        self.gate.metrics.rate_limited();
        let since = self.throttle.start(until, now);
        let close_after = self.gate.settings.limits.close_after;
        if close_after.is_some_and(|after| now.duration_since(since) >= after) {
            let detail = "over its rate limit for longer than close_after";
            advisory::limit_close(&self.gate, advisory::Client::of(&self.user), "rate", detail);
            return Err(Close::Gate { error: None });
        }
        Ok(())
    }

    // Inlined into the scan's loop: this runs for every PUB.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn client_op(
        &mut self,
        op: ClientOp<'_>,
        frame: &[u8],
        start: usize,
        end: usize,
        pieces: &mut Pieces,
        now: std::time::Instant,
    ) -> ControlFlow<Stop> {
        // The message body without headers (what the JetStream API reads).
        let body_len = match &op {
            ClientOp::Pub { payload_len, .. } => *payload_len,
            ClientOp::Hpub {
                header_len,
                total_len,
                ..
            } => total_len.saturating_sub(*header_len),
            _ => 0,
        };
        let guarded = self.js.is_some();
        let out = &mut self.client.out;
        let order = &mut self.order;
        let user = &mut self.user;
        let verbose = user.opts.verbose;
        let ok = |order: &mut Order, out: &mut OutQueue| {
            if verbose {
                order.frame(Bytes::from_static(encode::OK), out);
            }
        };
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
                if let Err(until) = self.rates.take(payload_len as u64, now) {
                    return ControlFlow::Break(Stop::Throttle { until, start });
                }
                if user.opts.pedantic && !is_valid_literal_subject(subject) {
                    let err = Bytes::from_static(encode::ERR_INVALID_PUBLISH_SUBJECT);
                    order.frame(err, out);
                }
                let mut decision = user.authz.check_publish(subject, reply, now);
                if decision != PublishDecision::Allow && user.authz.report_only() {
                    // What a user without permissions gets: only the
                    // reserved prefixes are refused (with their own text).
                    decision = reserved_publish(subject, reply, user.identity.system_account);
                    if decision == PublishDecision::Allow {
                        let request = explain::Request::Publish { subject, reply };
                        advisory::record(&self.gate, user, Kind::WouldDeny, request);
                    }
                }
                match decision {
                    PublishDecision::Allow
                        if subject == USER_INFO && reply.is_some_and(|r| !r.is_empty()) =>
                    {
                        ok(order, out);
                        self.answer_user_info(reply.unwrap_or_default(), pieces, now);
                    }
                    PublishDecision::Allow
                        if user.identity.system_account
                            && self.gate.serves_resolver()
                            && Request::parse(subject).is_some() =>
                    {
                        ok(order, out);
                        let body = frame
                            .len()
                            .checked_sub(2 + body_len)
                            .and_then(|from| frame.get(from..frame.len() - 2))
                            .unwrap_or_default();
                        if let Some(request) = Request::parse(subject) {
                            let reply = reply.map(Bytes::copy_from_slice);
                            self.ask_resolver(request, Bytes::copy_from_slice(body), reply);
                        }
                    }
                    PublishDecision::Allow if guarded && subject.starts_with(b"$JS.") => {
                        let body = frame
                            .len()
                            .checked_sub(2 + body_len)
                            .and_then(|from| frame.get(from..frame.len() - 2))
                            .unwrap_or_default();
                        match self.guard_request(
                            subject,
                            reply,
                            frame,
                            body,
                            payload_len,
                            pieces,
                            now,
                        ) {
                            Guarded::Pass => {
                                pieces.pass(start, end);
                                pieces.count(payload_len);
                                ok(&mut self.order, &mut self.client.out);
                            }
                            // nats-server accepted the PUB: its +OK comes
                            // before the API's answer.
                            Guarded::Answered => {}
                            Guarded::Held => return ControlFlow::Break(Stop::Hold),
                        }
                    }
                    PublishDecision::Allow => {
                        pieces.pass(start, end);
                        pieces.count(payload_len);
                        ok(order, out);
                    }
                    PublishDecision::DenySubject => {
                        order.frame(encode::publish_violation(subject), out);
                        let request = explain::Request::Publish { subject, reply };
                        advisory::record(&self.gate, user, Kind::Violation, request);
                    }
                    PublishDecision::DenyReply => {
                        order.frame(encode::reply_violation(reply.unwrap_or_default()), out);
                        let request = explain::Request::Publish { subject, reply };
                        advisory::record(&self.gate, user, Kind::Violation, request);
                    }
                }
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => {
                let mut allowed = user.authz.check_subscribe(subject, queue);
                if !allowed && user.authz.report_only() && reserved_subscribe(queue) {
                    let request = explain::Request::Subscribe { subject, queue };
                    advisory::record(&self.gate, user, Kind::WouldDeny, request);
                    allowed = true;
                }
                if !allowed {
                    order.frame(encode::subscribe_violation(subject, queue), out);
                    let request = explain::Request::Subscribe { subject, queue };
                    advisory::record(&self.gate, user, Kind::Violation, request);
                } else if user
                    .identity
                    .max_subscriptions
                    .is_some_and(|max| user.subs.len() >= max)
                {
                    order.frame(Bytes::from_static(encode::ERR_MAX_SUBS), out);
                } else if user.subs.contains(sid) {
                    // nats-server ignores a SUB that reuses a sid.
                    ok(order, out);
                } else if !is_valid_subject(subject) {
                    order.frame(Bytes::from_static(encode::ERR_INVALID_SUBJECT), out);
                } else {
                    user.subs.insert(sid, subject, queue);
                    pieces.pass(start, end);
                    ok(order, out);
                }
            }
            ClientOp::Unsub { sid, max } => {
                ok(order, out);
                match max {
                    // Counted here, because natsgate may filter deliveries
                    // that the upstream would count.
                    Some(max) => {
                        if user.subs.contains(sid) && !user.subs.limit(sid, max) {
                            pieces.made(encode::unsub(sid));
                        }
                    }
                    None => {
                        if user.subs.remove(sid) {
                            pieces.pass(start, end);
                        }
                    }
                }
            }
            ClientOp::Ping => {
                order.ping(Ping::Client);
                pieces.pass(start, end);
            }
            ClientOp::Pong => self.keepalive.answered(),
            ClientOp::Ok => {}
            // nats-server closes without a word on a client's -ERR and on
            // an INFO that is not JSON.
            ClientOp::Err => return ControlFlow::Break(Stop::Close(Close::Gate { error: None })),
            ClientOp::Info(json) => {
                if serde_json::from_slice::<serde_json::Value>(json).is_err() {
                    return ControlFlow::Break(Stop::Close(Close::Gate { error: None }));
                }
            }
            ClientOp::Connect(json) => {
                if let ControlFlow::Break(close) = self.reconnect(json, pieces) {
                    return ControlFlow::Break(Stop::Close(close));
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// A second CONNECT (spec 2.7): decoded over the previous options,
    /// re-authenticated against the original nonce; the subscriptions go.
    fn reconnect(&mut self, json: &[u8], pieces: &mut Pieces) -> ControlFlow<Close> {
        let connection_type = self.connection_type();
        let user = &mut self.user;
        let mut opts = user.opts.clone();
        // A CONNECT without `jwt` re-authenticates with the one presented
        // before (spec 2.7); the relay keeps it only in the identity.
        if opts.jwt.is_none() {
            opts.jwt = user.identity.jwt.as_ref().map(|u| u.jwt.to_string());
        }
        if opts.merge_json(json).is_err() {
            return ControlFlow::Break(Close::Gate { error: None });
        }
        let identity = match self.gate.authenticate(
            &opts,
            user.nonce.as_bytes(),
            user.peer.ip(),
            connection_type,
        ) {
            Ok(identity) => identity,
            Err(failure) => {
                let nkey = opts.nkey.as_deref();
                let client = advisory::Client::of(user);
                let (reason, detail) = (failure.reason, &failure.detail);
                advisory::auth_failure(&self.gate, client, reason, detail, nkey);
                let error = Some(Bytes::from_static(encode::ERR_AUTH_VIOLATION));
                return ControlFlow::Break(Close::Gate { error });
            }
        };
        let facts = self.gate.upstream.facts();
        if let Some(text) = post_auth_check(&opts, facts.headers) {
            let error = Some(Bytes::from_static(text));
            return ControlFlow::Break(Close::Gate { error });
        }
        let same_upstream = std::ptr::eq(
            self.gate.credential_for(&identity),
            self.gate.credential_for(&user.identity),
        ) && opts.echo == user.opts.echo
            && opts.headers == user.opts.headers
            && opts.no_responders == user.opts.no_responders;
        if !same_upstream {
            // The upstream connection was made for other options or another
            // account; the client reconnects and gets a fitting one.
            debug!("second CONNECT needs another upstream connection; closing");
            return ControlFlow::Break(Close::Gate { error: None });
        }
        for sid in user.subs.clear() {
            pieces.made(encode::unsub(&sid));
        }
        user.authz = Authorizer::new(identity.permissions.clone(), identity.system_account);
        user.authz.set_report_only(self.gate.report_only(&identity));
        user.limits.max_payload = self.gate.max_payload(&facts, identity.max_payload);
        let now = tokio::time::Instant::now();
        user.user_expiry = identity.expires_at.map(|t| now + until(t));
        user.account_expiry = identity.account_expires_at.map(|t| now + until(t));
        user.identity = identity;
        user.opts = opts;
        if user.opts.verbose {
            self.order
                .frame(Bytes::from_static(encode::OK), &mut self.client.out);
        }
        ControlFlow::Continue(())
    }

    /// Answers `$SYS.REQ.USER.INFO` for the client's own identity (spec
    /// 9.4): the upstream would describe natsgate's credential instead. The
    /// reply goes to this connection's subscriptions that match it.
    fn answer_user_info(&mut self, reply: &[u8], pieces: &mut Pieces, now: std::time::Instant) {
        let payload = super::user_info::render(&self.gate, &self.user.identity);
        self.deliver_own(reply, &payload, now, |unsub| pieces.made(unsub));
    }

    /// Delivers a message natsgate made (an answer in the upstream's
    /// place) to this connection's subscriptions matching `subject`, as
    /// the upstream would: delivery filters and `UNSUB <sid> <max>` apply;
    /// `unsub` takes the UNSUB of a subscription that reached its max.
    pub(super) fn deliver_own(
        &mut self,
        subject: &[u8],
        payload: &[u8],
        now: std::time::Instant,
        mut unsub: impl FnMut(Bytes),
    ) {
        let user = &mut self.user;
        for (sid, _) in user.subs.matching(subject) {
            let authz = &mut user.authz;
            let delivery = user.subs.deliver(&sid, |queue| {
                authz.filter_delivery(subject, queue, None, now)
            });
            if matches!(delivery, Delivery::Unknown | Delivery::Filtered) {
                continue;
            }
            let frame = encode::msg(subject, &sid, None, payload);
            self.order.frame(frame, &mut self.client.out);
            if delivery == Delivery::DeliverLast {
                unsub(encode::unsub(&sid));
            }
        }
    }
}
