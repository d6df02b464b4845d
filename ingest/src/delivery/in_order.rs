//! Things finished out of order, released in arrival order. Two places of
//! the delivery promise need exactly this:
//!
//! - an intake lane hands a group of messages to the engine and
//!   acknowledges it only once the group is durable in the WAL (refused
//!   messages need nothing to be durable), and only after every group
//!   received before it: the engine sees data in arrival order, and nothing
//!   is acknowledged or processed that a crash could lose; a group the WAL
//!   could not take (disk full) waits, with every group behind it;
//! - an MQTT connection acknowledges its messages in the order they arrived
//!   (MQTT 3.1.1 [MQTT-4.6.0-2]; rumqttd drops a connection's flow on the
//!   first ack out of order), while several lanes finish them at their own
//!   pace.

use std::collections::VecDeque;

/// Items not released yet, in arrival order, each with whether it is done.
#[derive(Debug)]
pub struct InOrder<T> {
    /// Arrival number of `waiting[0]`.
    first: u64,
    waiting: VecDeque<(T, bool)>,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        Self {
            first: 0,
            waiting: VecDeque::new(),
        }
    }
}

impl<T> InOrder<T> {
    /// An item arrived (`done`: it needs nothing more); returns its number.
    pub fn push(&mut self, item: T, done: bool) -> u64 {
        self.waiting.push_back((item, done));
        self.first + self.waiting.len() as u64 - 1
    }

    /// Item `number` is done. A number from before [`Self::reset`] (or
    /// already released) is ignored.
    pub fn done(&mut self, number: u64) {
        if let Some(slot) = self.slot(number) {
            slot.1 = true;
        }
    }

    /// Item `number`, while it is waiting.
    pub fn get(&self, number: u64) -> Option<&T> {
        let index = number.checked_sub(self.first)?;
        self.waiting.get(index as usize).map(|(item, _)| item)
    }

    /// The items that may go now: the done prefix, oldest first.
    pub fn release(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        while self.waiting.front().is_some_and(|(_, done)| *done) {
            out.push(self.waiting.pop_front().expect("front checked").0);
            self.first += 1;
        }
        out
    }

    /// Forgets everything waiting (a lost MQTT connection: the broker
    /// redelivers what was not acknowledged, so none of it may be).
    pub fn reset(&mut self) {
        self.first += self.waiting.len() as u64;
        self.waiting.clear();
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when everything was released.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn slot(&mut self, number: u64) -> Option<&mut (T, bool)> {
        let index = number.checked_sub(self.first)?;
        self.waiting.get_mut(index as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_refused_group_waits_for_the_durable_one_before_it() {
        let mut order = InOrder::default();
        let a = order.push("a", false);
        order.push("refused", true);
        assert!(order.release().is_empty());
        order.done(a);
        assert_eq!(order.release(), vec!["a", "refused"]);
        assert!(order.is_empty());
    }

    #[test]
    fn numbers_from_before_a_reconnect_are_ignored() {
        let mut order = InOrder::default();
        let a = order.push("a", false);
        order.reset();
        let b = order.push("b", false);
        order.done(a);
        assert!(order.release().is_empty());
        assert_eq!(order.get(b), Some(&"b"));
        order.done(b);
        assert_eq!(order.release(), vec!["b"]);
    }

    proptest! {
        /// Whatever order items finish in (durability reported by the WAL,
        /// messages finished by lanes): nothing is released before it and
        /// every item before it are done, everything is released once done,
        /// always in arrival order.
        #[test]
        fn releases_in_arrival_order_and_never_early(
            done_on_arrival in prop::collection::vec(any::<bool>(), 1..60),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..120),
        ) {
            let mut items = InOrder::default();
            let numbers: Vec<u64> = done_on_arrival
                .iter()
                .enumerate()
                .map(|(i, done)| items.push(i, *done))
                .collect();
            let mut done = done_on_arrival.clone();
            let mut released = Vec::new();
            for pick in order {
                let i = pick.index(numbers.len());
                items.done(numbers[i]);
                done[i] = true;
                for item in items.release() {
                    prop_assert!(done[..=item].iter().all(|d| *d), "{item} released early");
                    released.push(item);
                }
            }
            for n in &numbers {
                items.done(*n);
            }
            released.extend(items.release());
            prop_assert_eq!(released, (0..numbers.len()).collect::<Vec<_>>());
            prop_assert!(items.is_empty());
        }
    }
}
