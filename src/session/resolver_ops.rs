//! Account resolver requests of a system-account user (spec 6.4): answered
//! by natsgate in a task of their own (storing a JWT in the bucket takes a
//! round trip), the answers delivered back into the session as the
//! upstream's replies would be.

use bytes::Bytes;
use tracing::debug;

use super::own_answers::OwnAnswer;
use super::relay::Relay;
use crate::resolver::{self, Request};

/// Requests in flight per session beyond which further ones are dropped
/// (the requester times out, as when nats-server's internal queue is full).
const MAX_IN_FLIGHT: usize = 64;

impl Relay {
    /// Starts answering `request`; the answer arrives through
    /// [`super::own_answers::OwnAnswers::next`].
    pub(super) fn ask_resolver(&mut self, request: Request, body: Bytes, reply: Option<Bytes>) {
        if self.own.in_flight >= MAX_IN_FLIGHT {
            debug!(?request, "too many resolver requests in flight; dropped");
            return;
        }
        let tx = self.own.sender();
        let gate = self.gate.clone();
        tokio::spawn(async move {
            let messages = resolver::handle(&gate, request, &body).await;
            let _ = tx.send(OwnAnswer { reply, messages });
        });
    }

    /// Delivers an answer to the subscriptions of its reply subject.
    pub(super) fn on_own_answer(&mut self, answer: OwnAnswer) {
        self.own.in_flight = self.own.in_flight.saturating_sub(1);
        let Some(reply) = answer.reply.filter(|r| !r.is_empty()) else {
            return;
        };
        let now = std::time::Instant::now();
        let mut unsubs = Vec::new();
        for message in &answer.messages {
            self.deliver_own(&reply, message, now, |u| unsubs.push(u));
        }
        for unsub in unsubs {
            self.upstream.out.push(unsub);
        }
    }
}
