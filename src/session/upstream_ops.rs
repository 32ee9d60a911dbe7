//! Upstream → client: deliveries filtered where nats-server would filter
//! them (spec 4.5) and counted for `UNSUB <sid> <max>`, `PONG`s matched to
//! the `PING`s that asked for them (releasing what [`super::order::Order`]
//! held behind them), and the upstream's own keep-alive answered.

use std::cell::RefCell;
use std::ops::ControlFlow;

use bytes::Bytes;
use tracing::{debug, trace};

use super::Close;
use super::order::Ping;
use super::pieces::{Pieces, Scanned, scan};
use super::relay::Relay;
use super::repeat::RepeatLine;
use super::subs::Delivery;
use crate::metrics::Direction;
use crate::protocol::info::UpstreamInfo;
use crate::protocol::server::{self, ServerOp};
use crate::protocol::{Parsed, encode};

/// The status line of the no-responders message nats-server sends to a
/// requester (spec 1.9); it does not count towards `UNSUB <sid> <max>`.
const NO_RESPONDERS_STATUS: &[u8] = b"NATS/1.0 503";

/// The reply-subject prefix of a JetStream consumer's deliveries.
const JS_ACK_PREFIX: &[u8] = b"$JS.ACK.";

/// A frame of the upstream's input: parsed, or one that starts with the
/// kept control line of [`super::repeat`].
enum Frame<'a> {
    Op(ServerOp<'a>),
    Repeat,
}

impl Relay {
    /// Handles every complete frame the upstream sent, queueing what the
    /// client gets.
    pub(super) fn process_upstream(&mut self) -> Result<(), Close> {
        let input = self.upstream.take_input();
        let mut pieces = Pieces::default();
        let now = std::time::Instant::now();
        let limits = self.upstream_limits;
        // Out of the relay for the scan: the parser reads it while the
        // handler has the relay.
        let repeat = RefCell::new(std::mem::take(&mut self.repeat));
        let (used, stop) = scan(
            &input,
            |buf| match repeat.borrow().frame_len(buf) {
                Some(len) => Ok(Parsed::Frame {
                    op: Frame::Repeat,
                    len,
                }),
                None => server::parse(buf, &limits).map(|parsed| parsed.map(Frame::Op)),
            },
            |frame, start, end| {
                let repeat = &mut repeat.borrow_mut();
                match frame {
                    Frame::Repeat => {
                        self.repeat_delivery(repeat, &input, (start, end), &mut pieces, now);
                    }
                    Frame::Op(op) => {
                        let range = (start, end);
                        self.upstream_op(op, &input[start..end], range, &mut pieces, now, repeat);
                    }
                }
                ControlFlow::<()>::Continue(())
            },
        );
        self.repeat = repeat.into_inner();
        let (needed, result) = match stop {
            Scanned::Incomplete(needed) => (needed, Ok(())),
            Scanned::Stopped(()) => (None, Ok(())),
            Scanned::Error(e) => {
                debug!(error = e.reason(), "upstream protocol error");
                (None, Err(Close::UpstreamGone))
            }
        };
        let handed = pieces.hand_over(
            &mut self.upstream,
            input,
            used,
            needed,
            &mut self.client.out,
        );
        self.gate.metrics.relayed(
            self.user.stats.stats(),
            Direction::UpstreamToClient,
            handed.0,
            handed.1,
        );
        let would_filter = self.user.authz.take_would_filter();
        if would_filter > 0 {
            let account = &self.user.identity.account_name;
            let stats = self.user.stats.stats();
            self.gate.metrics.would_filter(stats, account, would_filter);
        }
        result
    }

    /// The generations a kept delivery decision holds for.
    #[inline]
    fn repeat_stamp(&self) -> (u64, u64) {
        (self.user.subs.generation(), self.user.authz.generation())
    }

    /// A frame with the kept control line: the kept decision, unless the
    /// subscriptions or permissions changed within this input (an
    /// `UNSUB <sid> <max>` reached), when it is decided afresh.
    #[inline(always)]
    fn repeat_delivery(
        &mut self,
        repeat: &mut RepeatLine,
        input: &[u8],
        (start, end): (usize, usize),
        pieces: &mut Pieces,
        now: std::time::Instant,
    ) {
        if self.js.is_none()
            && let Some((slot, payload_len)) = repeat.decision(self.repeat_stamp())
        {
            self.user.subs.count_at(slot);
            pieces.pass(start, end);
            pieces.count(payload_len);
            return;
        }
        let frame = &input[start..end];
        if let Ok(Parsed::Frame { op, .. }) = server::parse(frame, &self.upstream_limits) {
            self.upstream_op(op, frame, (start, end), pieces, now, repeat);
        }
    }

    /// After a MSG on `sid` was passed on: keeps its control line when its
    /// decision can be repeated (see [`super::repeat`]).
    fn keep_repeat(
        &mut self,
        repeat: &mut RepeatLine,
        frame: &[u8],
        sid: &[u8],
        reply: Option<&[u8]>,
        payload_len: usize,
    ) {
        if self.js.is_some() || !self.user.authz.delivery_repeatable(reply) {
            return;
        }
        let Some(slot) = self.user.subs.unlimited_slot(sid) else {
            return;
        };
        let line = &frame[..frame.len() - payload_len - 2];
        repeat.keep(line, payload_len, slot, self.repeat_stamp());
    }

    // Inlined into the scan's loop: this runs for every delivery.
    #[inline(always)]
    fn upstream_op(
        &mut self,
        op: ServerOp<'_>,
        frame: &[u8],
        (start, end): (usize, usize),
        pieces: &mut Pieces,
        now: std::time::Instant,
        repeat: &mut RepeatLine,
    ) {
        if let ServerOp::Msg { subject, sid, .. } | ServerOp::Hmsg { subject, sid, .. } = &op
            && self.js.as_ref().is_some_and(|js| js.owns(subject, sid))
        {
            // natsgate's own stream-info lookup (or a client's wildcard
            // copy of it, which nats-server would not have sent).
            let body_len = match &op {
                ServerOp::Msg { payload_len, .. } => *payload_len,
                ServerOp::Hmsg {
                    header_len,
                    total_len,
                    ..
                } => total_len.saturating_sub(*header_len),
                _ => 0,
            };
            let body = frame
                .len()
                .checked_sub(2 + body_len)
                .and_then(|from| frame.get(from..frame.len() - 2))
                .unwrap_or_default();
            self.lookup_answered(subject, body, pieces);
            return;
        }
        match op {
            ServerOp::Msg {
                subject,
                sid,
                reply,
                payload_len,
            } => {
                let range = (start, end);
                let delivery =
                    self.deliver(subject, sid, reply, payload_len, false, range, pieces, now);
                if delivery == Delivery::Deliver {
                    self.keep_repeat(repeat, frame, sid, reply, payload_len);
                }
            }
            ServerOp::Hmsg {
                subject,
                sid,
                reply,
                header_len,
                total_len,
            } => {
                let status = header_len == total_len && is_no_responders(frame, total_len);
                self.deliver(
                    subject,
                    sid,
                    reply,
                    total_len,
                    status,
                    (start, end),
                    pieces,
                    now,
                );
            }
            ServerOp::Ping => self.upstream.out.push_static(encode::PONG),
            ServerOp::Pong => match self.order.pong() {
                Some(Ping::Client) => {
                    pieces.made(Bytes::from_static(encode::PONG));
                    if self.connect_info_due {
                        self.connect_info_due = false;
                        pieces.made(Bytes::from(self.connect_info(false)));
                    }
                    self.order.release(pieces);
                }
                Some(Ping::Gate) => self.order.release(pieces),
                None => {}
            },
            ServerOp::Ok => {}
            ServerOp::Err(_) => pieces.pass(start, end),
            ServerOp::Info(json) => {
                let ldm = UpstreamInfo::parse(json).is_ok_and(|i| i.ldm);
                if ldm && self.user.opts.protocol >= 1 {
                    let info = Bytes::from(self.connect_info(true));
                    self.order.frame(info, pieces);
                }
            }
        }
    }

    /// One MSG/HMSG for `sid`: passed on verbatim unless the client left
    /// the sid or nats-server would have filtered it. A `status` message
    /// (the 503 no-responders) is not counted against `UNSUB <sid> <max>`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn deliver(
        &mut self,
        subject: &[u8],
        sid: &[u8],
        reply: Option<&[u8]>,
        payload_len: usize,
        status: bool,
        (start, end): (usize, usize),
        pieces: &mut Pieces,
        now: std::time::Instant,
    ) -> Delivery {
        let user = &mut self.user;
        let authz = &mut user.authz;
        // The JetStream guard's backstop: a consumer's delivery (its reply
        // is the `$JS.ACK.` subject) on a subject the user may not
        // subscribe to is dropped, whoever made the consumer.
        let backstop = self.js.is_some()
            && reply.is_some_and(|r| r.starts_with(JS_ACK_PREFIX))
            && !authz.report_only();
        let mut blocked = false;
        let accept = |queue: Option<&[u8]>| {
            if backstop && !authz.permissions().subscribe_allowed(subject, None) {
                blocked = true;
                return false;
            }
            authz.filter_delivery(subject, queue, reply, now)
        };
        let delivery = if status {
            user.subs.deliver_uncounted(sid, accept)
        } else {
            user.subs.deliver(sid, accept)
        };
        if blocked {
            let stats = user.stats.stats();
            self.gate
                .metrics
                .jetstream_denied(stats, &user.identity.account_name);
            debug!(
                user = %user.identity.user,
                subject = %String::from_utf8_lossy(subject),
                "JetStream delivery on a subject the user may not subscribe to dropped"
            );
        }
        match delivery {
            Delivery::Unknown => trace!("delivery for a sid the client has left"),
            Delivery::Filtered => {
                trace!(subject = %String::from_utf8_lossy(subject), "delivery filtered");
            }
            Delivery::Deliver | Delivery::DeliverLast => {
                pieces.pass(start, end);
                pieces.count(payload_len);
                if delivery == Delivery::DeliverLast {
                    self.upstream.out.push(encode::unsub(sid));
                }
            }
        }
        delivery
    }

    /// natsgate's INFO for this connection: the connect-info INFO after the
    /// first PONG (spec 1.9), or the lame-duck INFO.
    pub(super) fn connect_info(&self, ldm: bool) -> Vec<u8> {
        let user = &self.user;
        let facts = self.gate.upstream.facts();
        let mut info = self.gate.client_info(
            &facts,
            user.client_id,
            user.peer.ip(),
            None,
            Some(&user.identity),
        );
        info.max_payload = i64::try_from(user.limits.max_payload).unwrap_or(i64::MAX);
        if self.client.transport.is_websocket() {
            self.gate.websocket_info(&mut info);
        }
        if ldm {
            info.ldm = true;
        } else {
            info.connect_info = true;
            info.remote_account = if user.identity.account.is_empty() {
                "$G".to_string()
            } else {
                user.identity.account.clone()
            };
            info.acc_is_sys = user.identity.system_account;
        }
        info.to_frame()
    }
}

/// Whether the HMSG `frame` (header only, `header_len` bytes) carries the
/// no-responders status.
fn is_no_responders(frame: &[u8], header_len: usize) -> bool {
    let header_start = frame.len() - 2 - header_len;
    frame[header_start..].starts_with(NO_RESPONDERS_STATUS)
        && matches!(
            frame.get(header_start + NO_RESPONDERS_STATUS.len()),
            Some(b'\r' | b' ')
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_no_responders_status_is_recognised() {
        let hdr = b"NATS/1.0 503\r\nNats-Subject: a.b\r\n\r\n";
        let mut frame = format!("HMSG b 1 {} {}\r\n", hdr.len(), hdr.len()).into_bytes();
        frame.extend_from_slice(hdr);
        frame.extend_from_slice(b"\r\n");
        assert!(is_no_responders(&frame, hdr.len()));
        let other = b"NATS/1.0 5030\r\n\r\n";
        let mut frame = format!("HMSG b 1 {} {}\r\n", other.len(), other.len()).into_bytes();
        frame.extend_from_slice(other);
        frame.extend_from_slice(b"\r\n");
        assert!(!is_no_responders(&frame, other.len()));
    }
}
