//! The order of hand-over on one intake lane. A group of received messages
//! is handed to the engine and acknowledged to the broker only once it is
//! durable in the WAL (refused messages need nothing to be durable), and
//! only after every group received before it: the engine sees data in
//! arrival order, and nothing is acknowledged or processed that a crash
//! could lose. A group the WAL could not take (disk full) waits, with every
//! group behind it, until it is written on a retry.

use std::collections::VecDeque;

/// Identifies a group on its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(u64);

#[derive(Debug)]
struct Slot<G> {
    id: GroupId,
    durable: bool,
    group: G,
}

/// Groups waiting to be handed over, in arrival order.
#[derive(Debug)]
pub struct Handover<G> {
    waiting: VecDeque<Slot<G>>,
    next: u64,
}

impl<G> Default for Handover<G> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            next: 0,
        }
    }
}

impl<G> Handover<G> {
    /// Queues a group. `durable`: nothing of it needs the WAL (all refused,
    /// or no WAL configured).
    pub fn push(&mut self, group: G, durable: bool) -> GroupId {
        let id = GroupId(self.next);
        self.next += 1;
        self.waiting.push_back(Slot { id, durable, group });
        id
    }

    /// The WAL made group `id` durable.
    pub fn durable(&mut self, id: GroupId) {
        if let Some(slot) = self.waiting.iter_mut().find(|s| s.id == id) {
            slot.durable = true;
        }
    }

    /// The group `id`, e.g. to submit it to the WAL again after a failure.
    pub fn get(&self, id: GroupId) -> Option<&G> {
        self.waiting.iter().find(|s| s.id == id).map(|s| &s.group)
    }

    /// The groups that may be handed over now: the durable prefix, oldest
    /// first.
    pub fn release(&mut self) -> Vec<G> {
        let mut out = Vec::new();
        while self.waiting.front().is_some_and(|s| s.durable) {
            out.push(self.waiting.pop_front().expect("front checked").group);
        }
        out
    }

    /// Groups not handed over yet.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when every group was handed over.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_refused_group_waits_for_the_durable_one_before_it() {
        let mut h = Handover::default();
        let a = h.push("a", false);
        h.push("refused", true);
        assert!(h.release().is_empty());
        h.durable(a);
        assert_eq!(h.release(), vec!["a", "refused"]);
        assert!(h.is_empty());
    }

    proptest! {
        /// Whatever order the WAL reports durability in: nothing is released
        /// before it is durable, everything is released once durable, and
        /// always in arrival order.
        #[test]
        fn releases_in_order_and_never_before_durable(
            groups in prop::collection::vec(any::<bool>(), 1..40),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..80),
        ) {
            let mut h = Handover::default();
            let ids: Vec<_> = groups.iter().enumerate().map(|(i, d)| h.push(i, *d)).collect();
            let mut durable: Vec<bool> = groups.clone();
            let mut released = Vec::new();
            for pick in order {
                let i = pick.index(ids.len());
                h.durable(ids[i]);
                durable[i] = true;
                for g in h.release() {
                    prop_assert!(durable[g], "group {g} released before durable");
                    released.push(g);
                }
            }
            for (i, id) in ids.iter().enumerate() {
                h.durable(*id);
                durable[i] = true;
            }
            released.extend(h.release());
            prop_assert_eq!(released, (0..groups.len()).collect::<Vec<_>>());
        }
    }
}
