//! The order of what a client receives (spec 1.14).
//!
//! nats-server answers every op in the order it parsed them: the `PONG` of
//! a `PING` comes after the answers to every op before it, and before the
//! answers to every op after it. natsgate forwards a client's `PING` to the
//! upstream and passes the `PONG` on only when the upstream answers (so a
//! flush still means "the server has it"), but it answers `+OK`, `-ERR` and
//! `$SYS.REQ.USER.INFO` itself, at once. [`Order`] keeps the two in step:
//! a frame natsgate makes while a `PING` is in flight is held until that
//! `PING`'s `PONG` has gone out.
//!
//! Deliveries (MSG/HMSG) from the upstream are not held: the upstream orders
//! them against its own `PONG`s already.
//!
//! Invariant: the queue is empty or starts with a [`Held::Pong`].

use std::collections::VecDeque;

use bytes::Bytes;

/// Something that takes output frames in order (the client's queue, or the
/// pieces collected for it).
pub(super) trait Sink {
    fn frame(&mut self, frame: Bytes);
}

impl Sink for crate::transport::OutQueue {
    fn frame(&mut self, frame: Bytes) {
        self.push(frame);
    }
}

/// Whose `PING` a `PONG` from the upstream answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ping {
    /// The client's: its `PONG` goes to the client.
    Client,
    /// natsgate's own, sent when closing to learn that the upstream has
    /// processed everything before it: nothing goes to the client.
    Gate,
}

#[derive(Debug)]
enum Held {
    /// A `PING` sent upstream whose `PONG` has not come back.
    Pong(Ping),
    /// A frame natsgate made, waiting for the `PONG`s before it.
    Frame(Bytes),
}

#[derive(Debug, Default)]
pub(super) struct Order {
    held: VecDeque<Held>,
    /// Bytes of the held frames (they count as the client's pending output).
    held_bytes: usize,
}

impl Order {
    /// A `PING` went upstream.
    pub fn ping(&mut self, who: Ping) {
        self.held.push_back(Held::Pong(who));
    }

    /// A frame natsgate made: out now, or after the `PONG`s owed before it.
    pub fn frame(&mut self, frame: Bytes, out: &mut impl Sink) {
        if self.held.is_empty() {
            out.frame(frame);
        } else {
            self.held_bytes += frame.len();
            self.held.push_back(Held::Frame(frame));
        }
    }

    /// The upstream answered the oldest `PING`: whose it was (`None` for a
    /// `PONG` nobody asked for). The caller writes the client's `PONG`, then
    /// calls [`Order::release`].
    pub fn pong(&mut self) -> Option<Ping> {
        match self.held.front() {
            Some(Held::Pong(who)) => {
                let who = *who;
                self.held.pop_front();
                Some(who)
            }
            _ => None,
        }
    }

    /// Writes the frames that no longer wait for a `PONG`.
    pub fn release(&mut self, out: &mut impl Sink) {
        while let Some(Held::Frame(_)) = self.held.front() {
            if let Some(Held::Frame(frame)) = self.held.pop_front() {
                self.held_bytes -= frame.len();
                out.frame(frame);
            }
        }
    }

    /// The upstream is gone: no `PONG` will come. The held frames go out in
    /// their order; the `PONG`s owed are dropped.
    pub fn abandon(&mut self, out: &mut impl Sink) {
        for held in self.held.drain(..) {
            if let Held::Frame(frame) = held {
                out.frame(frame);
            }
        }
        self.held_bytes = 0;
    }

    /// Nothing is held and no `PONG` is owed.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    impl Sink for Vec<Bytes> {
        fn frame(&mut self, frame: Bytes) {
            self.push(frame);
        }
    }

    /// What the relay does when the upstream's `PONG` arrives.
    fn on_pong(order: &mut Order, out: &mut Vec<Bytes>) {
        if order.pong() == Some(Ping::Client) {
            out.push(Bytes::from_static(b"PONG"));
        }
        order.release(out);
    }

    #[test]
    fn frames_wait_for_the_pongs_before_them() {
        let mut order = Order::default();
        let mut out = Vec::new();
        order.frame(Bytes::from_static(b"+OK"), &mut out);
        order.ping(Ping::Client);
        order.frame(Bytes::from_static(b"-ERR a"), &mut out);
        order.ping(Ping::Client);
        order.frame(Bytes::from_static(b"-ERR b"), &mut out);
        assert_eq!(out, vec![Bytes::from_static(b"+OK")]);
        assert_eq!(order.held_bytes(), 12);
        on_pong(&mut order, &mut out);
        assert_eq!(out.len(), 3, "PONG and the error after it: {out:?}");
        on_pong(&mut order, &mut out);
        assert_eq!(
            out,
            ["+OK", "PONG", "-ERR a", "PONG", "-ERR b"].map(|s| Bytes::from(s.as_bytes()))
        );
        assert!(order.is_empty());
        assert_eq!(order.held_bytes(), 0);
        assert_eq!(order.pong(), None, "a PONG nobody asked for");
    }

    #[test]
    fn the_gates_own_ping_sends_no_pong_and_abandon_keeps_frames() {
        let mut order = Order::default();
        let mut out = Vec::new();
        order.ping(Ping::Gate);
        order.frame(Bytes::from_static(b"-ERR x"), &mut out);
        on_pong(&mut order, &mut out);
        assert_eq!(out, vec![Bytes::from_static(b"-ERR x")]);

        let mut out = Vec::new();
        order.ping(Ping::Client);
        order.frame(Bytes::from_static(b"+OK"), &mut out);
        order.ping(Ping::Client);
        order.abandon(&mut out);
        assert_eq!(out, vec![Bytes::from_static(b"+OK")]);
        assert!(order.is_empty());
    }

    /// One step of a random run: the client's op or the upstream's PONG.
    #[derive(Clone, Debug)]
    enum Step {
        Ping,
        Frame(u8),
        Pong,
    }

    proptest! {
        /// Against a reference model of nats-server's single outbound
        /// buffer: every op's answer in op order. After any prefix of
        /// steps the client has seen a prefix of the model's output, and
        /// once every PONG came back, all of it.
        #[test]
        fn output_is_always_a_prefix_of_op_order(steps in proptest::collection::vec(
            prop_oneof![Just(Step::Ping), any::<u8>().prop_map(Step::Frame), Just(Step::Pong)], 0..60)) {
            let mut order = Order::default();
            let mut out: Vec<Bytes> = Vec::new();
            let mut model: Vec<Bytes> = Vec::new();
            let mut in_flight = 0;
            for step in steps {
                match step {
                    Step::Ping => {
                        in_flight += 1;
                        order.ping(Ping::Client);
                        model.push(Bytes::from_static(b"PONG"));
                    }
                    Step::Frame(n) => {
                        let frame = Bytes::from(vec![n; 3]);
                        model.push(frame.clone());
                        order.frame(frame, &mut out);
                    }
                    Step::Pong if in_flight > 0 => {
                        in_flight -= 1;
                        on_pong(&mut order, &mut out);
                    }
                    Step::Pong => {}
                }
                prop_assert!(model.starts_with(&out), "{out:?} is not a prefix of {model:?}");
            }
            while in_flight > 0 {
                in_flight -= 1;
                on_pong(&mut order, &mut out);
            }
            prop_assert_eq!(out, model);
            prop_assert!(order.is_empty());
        }
    }
}
