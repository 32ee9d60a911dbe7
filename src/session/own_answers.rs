//! Answers natsgate makes in a task of its own (account resolver requests,
//! [`super::resolver_ops`]) and the channel they come back to the session
//! on. Polled by the relay only while one is in flight.

use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

/// The answers of one request, for its reply subject.
pub(super) struct OwnAnswer {
    pub reply: Option<Bytes>,
    pub messages: Vec<Bytes>,
}

/// The session's requests in flight and where their answers come back.
#[derive(Default)]
pub(super) struct OwnAnswers {
    channel: Option<(
        mpsc::UnboundedSender<OwnAnswer>,
        mpsc::UnboundedReceiver<OwnAnswer>,
    )>,
    pub in_flight: usize,
}

impl OwnAnswers {
    /// Where the answer of a request now starting is sent.
    pub fn sender(&mut self) -> mpsc::UnboundedSender<OwnAnswer> {
        self.in_flight += 1;
        let (tx, _) = self.channel.get_or_insert_with(mpsc::unbounded_channel);
        tx.clone()
    }

    /// The next answer; never ready while nothing is in flight.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<OwnAnswer>> {
        match &mut self.channel {
            Some((_, rx)) if self.in_flight > 0 => rx.poll_recv(cx),
            _ => Poll::Pending,
        }
    }
}
