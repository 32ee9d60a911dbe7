//! The JetStream guard's steps in the relay (see [`super::jetstream`] for
//! the state and how lookups work): judging a request, holding it for a
//! lookup, settling it, and answering refusals.

use std::time::Instant as StdInstant;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::debug;

use super::jetstream::{Guarded, Held, LOOKUP_TIMEOUT, Waiting};
use super::order::Sink;
use super::relay::Relay;
use super::subs::Delivery;
use crate::permissions::jetstream::listing::Step;
use crate::permissions::jetstream::{self, Listing, Refusal, StreamSubjects, Verdict};
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
            Verdict::NeedListing(_) if !self.gate.settings.jetstream.filter_listing => {
                return Guarded::Pass;
            }
            Verdict::NeedListing(listing) => {
                return self.hold_listing(listing, subject, reply, frame, payload_len, upstream);
            }
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
        debug!(stream = %question.stream, "JetStream guard: learning a stream's subjects");
        let awaiting = js.ask(question.info_subject.as_bytes(), b"", upstream);
        js.held = Some(Held {
            frame: Bytes::copy_from_slice(frame),
            payload_len,
            subject: Bytes::copy_from_slice(subject),
            reply: reply.map(Bytes::copy_from_slice),
            waiting: Waiting::Stream(question),
            awaiting,
            deadline: Instant::now() + LOOKUP_TIMEOUT,
        });
        Guarded::Held
    }

    /// Holds a stream listing while natsgate reads it page by page.
    fn hold_listing(
        &mut self,
        listing: Box<Listing>,
        subject: &[u8],
        reply: Option<&[u8]>,
        frame: &[u8],
        payload_len: usize,
        upstream: &mut impl Sink,
    ) -> Guarded {
        let Some(js) = self.js.as_mut() else {
            return Guarded::Pass;
        };
        let (page, body) = listing.page_request();
        let awaiting = js.ask(page.as_bytes(), &body, upstream);
        js.held = Some(Held {
            frame: Bytes::copy_from_slice(frame),
            payload_len,
            subject: Bytes::copy_from_slice(subject),
            reply: reply.map(Bytes::copy_from_slice),
            waiting: Waiting::Listing(listing),
            awaiting,
            deadline: Instant::now() + LOOKUP_TIMEOUT,
        });
        Guarded::Held
    }

    /// A delivery on natsgate's inbox: an answer to the held request's
    /// lookup (or a late one, dropped). `payload` is the message without
    /// headers; `sink` is the client's side.
    pub(super) fn lookup_answered(&mut self, subject: &[u8], payload: &[u8], sink: &mut impl Sink) {
        let Some(js) = self.js.as_mut() else {
            return;
        };
        let Some(held) = js.held.as_mut().filter(|h| h.awaiting == subject) else {
            return;
        };
        let step = match &mut held.waiting {
            Waiting::Stream(_) => {
                let subjects = jetstream::parse_stream_info(payload);
                self.settle_stream(subjects, sink);
                return;
            }
            Waiting::Listing(listing) => {
                let step = listing.add_page(self.user.authz.permissions(), payload);
                (step == Step::More)
                    .then(|| listing.page_request())
                    .ok_or(step)
            }
        };
        match step {
            Ok((page, body)) => {
                let awaiting = js.ask(page.as_bytes(), &body, &mut self.upstream.out);
                if let Some(held) = js.held.as_mut() {
                    held.awaiting = awaiting;
                    held.deadline = Instant::now() + LOOKUP_TIMEOUT;
                }
            }
            Err(step) => self.settle_listing(step, sink),
        }
    }

    /// The held lookup timed out: the request is refused.
    pub(super) fn lookup_timed_out(&mut self) {
        let mut out = std::mem::take(&mut self.client.out);
        let listing = self
            .js
            .as_ref()
            .and_then(|js| js.held.as_ref())
            .is_some_and(|h| matches!(h.waiting, Waiting::Listing(_)));
        if listing {
            let why = "natsgate could not list the streams in time".to_string();
            self.settle_listing(Step::Failed(why), &mut out);
        } else {
            self.settle_stream(StreamSubjects::Unknown, &mut out);
        }
        self.client.out = out;
    }

    /// Takes the held request and lets the client's buffered input go on.
    fn release_held(&mut self) -> Option<Held> {
        let js = self.js.as_mut()?;
        let held = js.held.take()?;
        js.resume = true;
        Some(held)
    }

    /// Decides the held request with its stream's subjects, forwards it or
    /// answers the refusal (through `sink`, the client's side), and lets the
    /// client's buffered input go on.
    fn settle_stream(&mut self, subjects: StreamSubjects, sink: &mut impl Sink) {
        let Some(held) = self.release_held() else {
            return;
        };
        let Waiting::Stream(question) = &held.waiting else {
            return;
        };
        if subjects != StreamSubjects::Unknown
            && let Some(js) = self.js.as_mut()
        {
            js.remember(
                question.info_subject.clone(),
                subjects.clone(),
                Instant::now(),
            );
        }
        let permissions = self.user.authz.permissions().clone();
        if self.user.opts.verbose {
            self.order.frame(Bytes::from_static(encode::OK), sink);
        }
        match jetstream::answer_stream(&permissions, question, &subjects) {
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

    /// Answers the held listing, complete (`Done`) or failed, on its reply
    /// subject; the request itself is never forwarded.
    fn settle_listing(&mut self, step: Step, sink: &mut impl Sink) {
        let Some(held) = self.release_held() else {
            return;
        };
        let Waiting::Listing(listing) = &held.waiting else {
            return;
        };
        if self.user.opts.verbose {
            self.order.frame(Bytes::from_static(encode::OK), sink);
        }
        let now = std::time::Instant::now();
        let frames = match step {
            Step::Failed(why) => {
                let refusal = listing.refusal(&why);
                self.refuse_request(&held.subject, held.reply.as_deref(), &refusal, now)
            }
            Step::Done | Step::More => {
                debug!(
                    user = %self.user.identity.user,
                    subject = %String::from_utf8_lossy(&held.subject),
                    "JetStream listing answered with the streams the user may read"
                );
                match held.reply.as_deref().filter(|r| !r.is_empty()) {
                    Some(reply) => self.reply_frames(reply, None, &listing.answer(), now),
                    None => Vec::new(),
                }
            }
        };
        for frame in frames {
            self.order.frame(frame, sink);
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
        self.reply_frames(reply, header, &payload, now)
    }

    /// An answer on `reply` as the client's own subscriptions that match it
    /// would get it from nats-server (delivery filter and `UNSUB <max>`
    /// applied): one MSG (or HMSG with `header`) per subscription.
    fn reply_frames(
        &mut self,
        reply: &[u8],
        header: Option<Vec<u8>>,
        payload: &[u8],
        now: StdInstant,
    ) -> Vec<Bytes> {
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
                Some(header) => encode::hmsg(reply, &sid, header, payload),
                None => encode::msg(reply, &sid, None, payload),
            });
            if delivery == Delivery::DeliverLast {
                self.upstream.out.push(encode::unsub(&sid));
            }
        }
        frames
    }
}
