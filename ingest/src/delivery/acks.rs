//! The order of acknowledgements on one MQTT connection. MQTT 3.1.1 requires
//! PUBACKs in the order the PUBLISH packets arrived ([MQTT-4.6.0-2]), and
//! some brokers (rumqttd) drop a connection's flow on the first ack out of
//! order; but a connection's messages are made durable by several lanes,
//! each at its own pace. This puts them back in arrival order: a message is
//! acknowledged once it and every message before it on the connection are
//! done.

use std::collections::VecDeque;

/// Messages received on one connection, not acknowledged yet.
#[derive(Debug)]
pub struct AckOrder<T> {
    /// Arrival number of `waiting[0]`.
    first: u64,
    /// (what to acknowledge, done), in arrival order.
    waiting: VecDeque<(T, bool)>,
}

impl<T> Default for AckOrder<T> {
    fn default() -> Self {
        Self {
            first: 0,
            waiting: VecDeque::new(),
        }
    }
}

impl<T> AckOrder<T> {
    /// A message arrived; returns its arrival number.
    pub fn received(&mut self, ack: T) -> u64 {
        self.waiting.push_back((ack, false));
        self.first + self.waiting.len() as u64 - 1
    }

    /// Message `number` may be acknowledged (durable, or refused). A number
    /// from before [`Self::reset`] is ignored.
    pub fn done(&mut self, number: u64) {
        if let Some(slot) = number
            .checked_sub(self.first)
            .and_then(|i| self.waiting.get_mut(i as usize))
        {
            slot.1 = true;
        }
    }

    /// The acknowledgements that may go now, in arrival order.
    pub fn ready(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        while self.waiting.front().is_some_and(|(_, done)| *done) {
            out.push(self.waiting.pop_front().expect("front checked").0);
            self.first += 1;
        }
        out
    }

    /// The connection was lost: the broker redelivers everything not
    /// acknowledged, so nothing waiting may be acknowledged any more.
    pub fn reset(&mut self) {
        self.first += self.waiting.len() as u64;
        self.waiting.clear();
    }

    /// Messages waiting for their acknowledgement.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when every message received was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_from_before_a_reconnect_are_ignored() {
        let mut order = AckOrder::default();
        let a = order.received("a");
        order.reset();
        let b = order.received("b");
        order.done(a);
        assert!(order.ready().is_empty());
        order.done(b);
        assert_eq!(order.ready(), vec!["b"]);
    }

    proptest! {
        /// Whatever order the lanes finish in: acknowledgements go in
        /// arrival order, never before the message and every earlier one
        /// are done, and all of them once all are done.
        #[test]
        fn acks_in_arrival_order_and_never_early(
            messages in 1..60usize,
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..120),
        ) {
            let mut acks = AckOrder::default();
            let numbers: Vec<u64> = (0..messages).map(|i| acks.received(i)).collect();
            let mut done = vec![false; messages];
            let mut sent = Vec::new();
            for pick in order {
                let i = pick.index(messages);
                acks.done(numbers[i]);
                done[i] = true;
                for m in acks.ready() {
                    prop_assert!(done[..=m].iter().all(|d| *d), "{m} acknowledged early");
                    sent.push(m);
                }
            }
            for n in &numbers {
                acks.done(*n);
            }
            sent.extend(acks.ready());
            prop_assert_eq!(sent, (0..messages).collect::<Vec<_>>());
            prop_assert!(acks.is_empty());
        }
    }
}
