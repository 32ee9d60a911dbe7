//! The JetStream guard's steps in the relay (see [`super::jetstream`] for
//! the state and how lookups work): judging a request, holding it for a
//! lookup, settling it, and answering refusals.

use std::time::Instant as StdInstant;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::debug;

use super::jetstream::{Guarded, Held, LOOKUP_TIMEOUT, random_token};
use super::order::Sink;
use super::relay::Relay;
use super::subs::Delivery;
use crate::permissions::jetstream::{self, Refusal, StreamSubjects, Verdict};
use crate::protocol::encode;

impl Relay {
    /// Runs the guard on a `$JS.` request that passed the publish check.
    /// `frame` is the whole PUB/HPUB frame, `body` its payload without
    /// headers. Lookup frames go into `upstream`; natsgate's answers keep
    /// the client's op order.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn guard_request(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        frame: &[u8],
        body: &[u8],
        payload_len: usize,
        upstream: &mut impl Sink,
        now: StdInstant,
    ) -> Guarded {
        let permissions = self.user.authz.permissions().clone();
        let verdict = jetstream::inspect(&permissions, subject, reply, body);
        let question = match verdict {
            Verdict::Allow => return Guarded::Pass,
            Verdict::Refuse(refusal) => {
                self.answer_client(subject, reply, &refusal, now);
                return Guarded::Answered;
            }
            Verdict::NeedStream(question) => question,
        };
        let Some(js) = self.js.as_mut() else {
            return Guarded::Pass;
        };
        if let Some(subjects) = js.cached(&question.info_subject, Instant::now()) {
            return match jetstream::answer_stream(&permissions, &question, &subjects) {
                Ok(()) => Guarded::Pass,
                Err(refusal) => {
                    self.answer_client(subject, reply, &refusal, now);
                    Guarded::Answered
                }
            };
        }
        let inbox = match &js.inbox {
            Some(inbox) => inbox.clone(),
            None => {
                let token = random_token();
                let inbox = Bytes::from(format!("_INBOX.natsgate.{token}."));
                js.sid = Bytes::from(format!("natsgate.{token}"));
                let mut sub = b"SUB ".to_vec();
                sub.extend_from_slice(&inbox);
                sub.extend_from_slice(b"* ");
                sub.extend_from_slice(&js.sid);
                sub.extend_from_slice(b"\r\n");
                upstream.frame(Bytes::from(sub));
                js.inbox = Some(inbox.clone());
                inbox
            }
        };
        js.lookups += 1;
        let mut awaiting = inbox.to_vec();
        awaiting.extend_from_slice(js.lookups.to_string().as_bytes());
        let awaiting = Bytes::from(awaiting);
        let mut publish = b"PUB ".to_vec();
        publish.extend_from_slice(question.info_subject.as_bytes());
        publish.push(b' ');
        publish.extend_from_slice(&awaiting);
        publish.extend_from_slice(b" 0\r\n\r\n");
        upstream.frame(Bytes::from(publish));
        debug!(stream = %question.stream, "JetStream guard: learning a stream's subjects");
        js.held = Some(Held {
            frame: Bytes::copy_from_slice(frame),
            payload_len,
            subject: Bytes::copy_from_slice(subject),
            reply: reply.map(Bytes::copy_from_slice),
            question,
            awaiting,
            deadline: Instant::now() + LOOKUP_TIMEOUT,
        });
        Guarded::Held
    }

    /// A delivery on natsgate's inbox: the answer of the held lookup (or a
    /// late one, dropped). `payload` is the message without headers.
    pub(super) fn lookup_answered(&mut self, subject: &[u8], payload: &[u8], sink: &mut impl Sink) {
        let Some(js) = self.js.as_mut() else {
            return;
        };
        if js.held.as_ref().is_none_or(|h| h.awaiting != subject) {
            return;
        }
        let subjects = jetstream::parse_stream_info(payload);
        self.settle(subjects, sink);
    }

    /// The held lookup timed out: the request is refused.
    pub(super) fn lookup_timed_out(&mut self) {
        let mut out = std::mem::take(&mut self.client.out);
        self.settle(StreamSubjects::Unknown, &mut out);
        self.client.out = out;
    }

    /// Decides the held request with its stream's subjects, forwards it or
    /// answers the refusal (through `sink`, the client's side), and lets the
    /// client's buffered input go on.
    fn settle(&mut self, subjects: StreamSubjects, sink: &mut impl Sink) {
        let Some(js) = self.js.as_mut() else {
            return;
        };
        let Some(held) = js.held.take() else {
            return;
        };
        js.resume = true;
        if subjects != StreamSubjects::Unknown {
            js.remember(
                held.question.info_subject.clone(),
                subjects.clone(),
                Instant::now(),
            );
        }
        let permissions = self.user.authz.permissions().clone();
        if self.user.opts.verbose {
            self.order.frame(Bytes::from_static(encode::OK), sink);
        }
        match jetstream::answer_stream(&permissions, &held.question, &subjects) {
            Ok(()) => {
                self.upstream.out.push(held.frame);
                self.pubs_accepted += 1;
                self.gate.metrics.relayed(
                    self.user.stats.stats(),
                    crate::metrics::Direction::ClientToUpstream,
                    1,
                    held.payload_len as u64,
                );
            }
            Err(refusal) => {
                let frames = self.refuse_request(
                    &held.subject,
                    held.reply.as_deref(),
                    &refusal,
                    std::time::Instant::now(),
                );
                for frame in frames {
                    self.order.frame(frame, sink);
                }
            }
        }
    }

    /// [`Relay::refuse_request`], answered straight to the client's queue.
    fn answer_client(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        refusal: &Refusal,
        now: StdInstant,
    ) {
        // nats-server accepted the PUB: its +OK comes before the answer.
        if self.user.opts.verbose {
            self.order
                .frame(Bytes::from_static(encode::OK), &mut self.client.out);
        }
        for frame in self.refuse_request(subject, reply, refusal, now) {
            self.order.frame(frame, &mut self.client.out);
        }
    }

    /// Counts and logs a refusal and makes its answer on the request's
    /// reply subject, for the client's own subscriptions that match it (as
    /// nats-server would deliver the API's answer). The caller sends the
    /// frames through [`super::order::Order`].
    fn refuse_request(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        refusal: &Refusal,
        now: StdInstant,
    ) -> Vec<Bytes> {
        self.gate
            .metrics
            .jetstream_denied(self.user.stats.stats(), &self.user.identity.account_name);
        debug!(
            user = %self.user.identity.user,
            subject = %String::from_utf8_lossy(subject),
            reason = %refusal.description,
            "JetStream request refused"
        );
        let Some(reply) = reply.filter(|r| !r.is_empty()) else {
            return Vec::new();
        };
        // A direct get's client reads only a status header; one without
        // headers gets the JSON error.
        let status = refusal.is_status() && self.user.limits.headers;
        let (header, payload) = if status {
            (Some(refusal.status_header()), Vec::new())
        } else {
            (None, refusal.json())
        };
        let user = &mut self.user;
        let mut frames = Vec::new();
        for (sid, _) in user.subs.matching(reply) {
            let authz = &mut user.authz;
            let delivery = user
                .subs
                .deliver(&sid, |queue| authz.filter_delivery(reply, queue, None, now));
            if matches!(delivery, Delivery::Unknown | Delivery::Filtered) {
                continue;
            }
            frames.push(match &header {
                Some(header) => encode::hmsg(reply, &sid, header, &payload),
                None => encode::msg(reply, &sid, None, &payload),
            });
            if delivery == Delivery::DeliverLast {
                self.upstream.out.push(encode::unsub(&sid));
            }
        }
        frames
    }
}
