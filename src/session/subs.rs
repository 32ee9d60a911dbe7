//! The client's subscriptions as natsgate tracks them: needed for the
//! subscription limit, for the delivery-time deny filter of queue
//! subscriptions, for dropping deliveries to a sid the client has left, and
//! for counting `UNSUB <sid> <max>` deliveries the way nats-server counts them
//! (filtered deliveries do not count, spec 4.5).

use std::collections::HashMap;

use bytes::Bytes;

use crate::protocol::subject::is_subset;

#[derive(Debug)]
pub struct Subscription {
    pub subject: Bytes,
    pub queue: Option<Bytes>,
    /// Messages delivered to the client on this sid.
    pub delivered: u64,
    /// Auto-unsubscribe after this many deliveries.
    pub max: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Every subscription with its sid, in no particular order.
    slots: Vec<(Bytes, Subscription)>,
    /// Where each sid's subscription is in `slots`.
    index: HashMap<Bytes, usize, foldhash::fast::RandomState>,
    /// The slot of the last delivery, tried first: deliveries come in runs
    /// on one sid, and comparing a sid costs a fraction of hashing it.
    last: usize,
    /// Changes with every change but a delivery count (see
    /// [`Subscriptions::generation`]).
    generation: u64,
}

/// What a delivery on a sid means for the subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Not subscribed (any more): drop the message.
    Unknown,
    /// Subscribed, but nats-server would not have delivered it: drop it.
    Filtered,
    /// Deliver it.
    Deliver,
    /// Deliver it; it was the last one: tell the upstream to unsubscribe.
    DeliverLast,
}

impl Subscriptions {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Changes whenever a subscription comes, goes, moves to another slot
    /// or gets a maximum: a slot and a decision taken with one generation
    /// hold as long as it is current.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn contains(&self, sid: &[u8]) -> bool {
        self.index.contains_key(sid)
    }

    /// The slot of `sid`'s subscription.
    fn find(&mut self, sid: &[u8]) -> Option<usize> {
        if let Some((last, _)) = self.slots.get(self.last)
            && last.as_ref() == sid
        {
            return Some(self.last);
        }
        let at = *self.index.get(sid)?;
        self.last = at;
        Some(at)
    }

    pub fn insert(&mut self, sid: &[u8], subject: &[u8], queue: Option<&[u8]>) {
        let sub = Subscription {
            subject: Bytes::copy_from_slice(subject),
            queue: queue.map(Bytes::copy_from_slice),
            delivered: 0,
            max: None,
        };
        self.generation += 1;
        match self.index.get(sid) {
            // The same sid again replaces the subscription, as it does in
            // nats-server.
            Some(&at) => self.slots[at].1 = sub,
            None => {
                let sid = Bytes::copy_from_slice(sid);
                self.index.insert(sid.clone(), self.slots.len());
                self.slots.push((sid, sub));
            }
        }
    }

    /// The sids a message on the literal `subject` goes to: every plain
    /// subscription that matches, and one member of each queue group.
    pub fn matching(&self, subject: &[u8]) -> Vec<(Bytes, Option<Bytes>)> {
        let mut out: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        for (sid, sub) in &self.slots {
            if !is_subset(subject, &sub.subject) {
                continue;
            }
            if let Some(q) = &sub.queue
                && out.iter().any(|(_, other)| other.as_ref() == Some(q))
            {
                continue;
            }
            out.push((sid.clone(), sub.queue.clone()));
        }
        out
    }

    /// Every subscription: `(sid, subject, queue)`.
    pub fn entries(&self) -> Vec<(Bytes, Bytes, Option<Bytes>)> {
        self.slots
            .iter()
            .map(|(sid, s)| (sid.clone(), s.subject.clone(), s.queue.clone()))
            .collect()
    }

    pub fn remove(&mut self, sid: &[u8]) -> bool {
        let Some(at) = self.index.remove(sid) else {
            return false;
        };
        self.generation += 1;
        self.slots.swap_remove(at);
        if let Some((moved, _)) = self.slots.get(at) {
            self.index.insert(moved.clone(), at);
        }
        true
    }

    pub fn clear(&mut self) -> Vec<Bytes> {
        self.generation += 1;
        self.index.clear();
        self.slots.drain(..).map(|(sid, _)| sid).collect()
    }

    /// `UNSUB <sid> <max>`: returns true when the subscription stays (for at
    /// most `max` deliveries in all), false when it is removed now (max not
    /// a number, or already reached), as nats-server decides.
    pub fn limit(&mut self, sid: &[u8], max: &[u8]) -> bool {
        let Some(at) = self.find(sid) else {
            return false;
        };
        let sub = &mut self.slots[at].1;
        let max = std::str::from_utf8(max)
            .ok()
            .and_then(|s| s.parse::<i64>().ok());
        match max {
            Some(m) if m > 0 && (m as u64) > sub.delivered => {
                sub.max = Some(m as u64);
                self.generation += 1;
                true
            }
            _ => {
                self.remove(sid);
                false
            }
        }
    }

    /// A status message on `sid` (the 503 no-responders): delivered like
    /// any message, but not counted towards `UNSUB <sid> <max>`, as
    /// nats-server sends it outside its delivery count (spec 1.8).
    pub fn deliver_uncounted(
        &mut self,
        sid: &[u8],
        accept: impl FnOnce(Option<&[u8]>) -> bool,
    ) -> Delivery {
        match self.find(sid) {
            None => Delivery::Unknown,
            Some(at) if !accept(self.slots[at].1.queue.as_deref()) => Delivery::Filtered,
            Some(_) => Delivery::Deliver,
        }
    }

    /// The slot of `sid`'s subscription when it has no maximum: its
    /// deliveries can be counted with [`Subscriptions::count_at`] for as
    /// long as the [`Subscriptions::generation`] stays.
    pub fn unlimited_slot(&mut self, sid: &[u8]) -> Option<usize> {
        let at = self.find(sid)?;
        self.slots[at].1.max.is_none().then_some(at)
    }

    /// Counts one delivery on the subscription in `slot` (from
    /// [`Subscriptions::unlimited_slot`], this generation).
    pub fn count_at(&mut self, slot: usize) {
        if let Some((_, sub)) = self.slots.get_mut(slot) {
            sub.delivered += 1;
        }
    }

    /// One delivery on `sid`: `accept` (given the subscription's queue)
    /// decides whether nats-server would deliver it; accepted deliveries are
    /// counted (filtered ones are not, spec 4.5). One lookup per message.
    pub fn deliver(&mut self, sid: &[u8], accept: impl FnOnce(Option<&[u8]>) -> bool) -> Delivery {
        let Some(at) = self.find(sid) else {
            return Delivery::Unknown;
        };
        let sub = &mut self.slots[at].1;
        if !accept(sub.queue.as_deref()) {
            return Delivery::Filtered;
        }
        sub.delivered += 1;
        match sub.max {
            Some(max) if sub.delivered >= max => {
                self.remove(sid);
                Delivery::DeliverLast
            }
            _ => Delivery::Deliver,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_keep_every_other_sid_found_whatever_the_last_delivery() {
        // Random inserts, removals and deliveries on 12 sids, against a
        // plain map of sid to delivery count.
        let mut subs = Subscriptions::default();
        let mut model: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut x: u32 = 7;
        for step in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let sid = format!("{}", (x >> 8) % 12).into_bytes();
            match (x >> 20) % 4 {
                0 => {
                    subs.insert(&sid, b"s", None);
                    model.insert(sid.clone(), 0);
                }
                1 => assert_eq!(subs.remove(&sid), model.remove(&sid).is_some(), "{step}"),
                _ => {
                    let want = match model.get_mut(&sid) {
                        Some(n) => {
                            *n += 1;
                            Delivery::Deliver
                        }
                        None => Delivery::Unknown,
                    };
                    assert_eq!(subs.deliver(&sid, |_| true), want, "step {step}");
                }
            }
            assert_eq!(subs.len(), model.len());
        }
        // The counts survived the moves: with a limit of one more than the
        // count, the next delivery is exactly the last.
        assert!(!model.is_empty());
        for (sid, n) in &model {
            assert!(subs.limit(sid, (n + 1).to_string().as_bytes()));
            assert_eq!(subs.deliver(sid, |_| true), Delivery::DeliverLast);
            assert!(!subs.contains(sid));
        }
    }

    #[test]
    fn auto_unsubscribe_counts_deliveries() {
        let mut subs = Subscriptions::default();
        subs.insert(b"1", b"s", None);
        assert_eq!(subs.deliver(b"1", |_| true), Delivery::Deliver);
        // Already one delivered: max 1 removes at once, as nats-server does.
        assert!(!subs.limit(b"1", b"1"));
        assert_eq!(subs.deliver(b"1", |_| true), Delivery::Unknown);

        subs.insert(b"2", b"s", Some(b"q"));
        assert!(subs.limit(b"2", b"2"));
        assert_eq!(
            subs.deliver(b"2", |q| q != Some(b"q")),
            Delivery::Filtered,
            "filtered: not counted"
        );
        assert_eq!(subs.deliver(b"2", |_| true), Delivery::Deliver);
        assert_eq!(subs.deliver(b"2", |_| true), Delivery::DeliverLast);
        assert!(!subs.contains(b"2"));

        subs.insert(b"9", b"s", None);
        assert!(subs.limit(b"9", b"1"));
        assert_eq!(subs.deliver_uncounted(b"9", |_| true), Delivery::Deliver);
        assert_eq!(
            subs.deliver(b"9", |_| true),
            Delivery::DeliverLast,
            "the status did not count"
        );

        subs.insert(b"3", b"s", None);
        assert!(!subs.limit(b"3", b"x"));
        subs.insert(b"4", b"s", None);
        assert!(!subs.limit(b"4", b"-1"));

        subs.insert(b"5", b"_INBOX.*", None);
        subs.insert(b"6", b"_INBOX.>", Some(b"q"));
        subs.insert(b"7", b">", Some(b"q"));
        subs.insert(b"8", b"other", None);
        let mut sids: Vec<_> = subs
            .matching(b"_INBOX.x")
            .into_iter()
            .map(|(sid, _)| sid)
            .collect();
        sids.sort();
        assert_eq!(
            sids.len(),
            2,
            "one plain sub and one member of group q: {sids:?}"
        );
        assert_eq!(sids[0], Bytes::from_static(b"5"));
        assert!(!subs.limit(b"nope", b"5"));
    }
}
