//! The write side of the delivery promise, as one synchronous state machine:
//! what the WAL holds, what every sink has written, the checkpoint that
//! records it, what may be cut from the WAL, and what a replay must not
//! write again. The async tasks only carry its events and perform the I/O
//! it asks for, in the order it asks for it:
//!
//! 1. the fan-out reports engine progress and batches handed to the sinks;
//! 2. [`Ledger::plan`] proposes a checkpoint once every sink has written
//!    further; the caller stores it (fsync) and then calls
//!    [`Ledger::stored`], which says where the WAL may be cut. A cut never
//!    precedes the checkpoint that justifies it.

use std::ops::Range;

use fleetpulse_engine::{EventTime, Output};

use super::checkpoint::{Checkpoint, record_time};
use super::progress::WriteProgress;
use super::retention::Retention;
use crate::wal::Lsn;

/// Progress of everything written, from the WAL to the stores.
#[derive(Debug, Clone)]
pub struct Ledger {
    progress: WriteProgress,
    retention: Retention,
    stored: Checkpoint,
    /// Records before this time were written before the restart.
    suppress_before: EventTime,
    /// Every member of the cluster has written windows before this (the
    /// least of their checkpoints); alone, no bound (`EventTime::MAX`).
    /// Journey states are stored only as far.
    /// A member's readings feed windows that other members' workers close
    /// and other members' stores write: its WAL keeps them until those
    /// stores have.
    everywhere: EventTime,
    /// Every member's journey states are of days before this (the least
    /// of what their checkpoints say); alone, no bound. Each member's WAL
    /// keeps the records behind it, so a restart replays whole every day
    /// after a restored state, whichever member stored it.
    replayable: EventTime,
    /// Customers taken back into the customers file after days out of it:
    /// the days their journeys close again at the start (the days they
    /// were out) were never written, so none of their records is
    /// suppressed.
    returning: std::collections::HashSet<fleetpulse_engine::Id>,
}

impl Ledger {
    /// Starts from the checkpoint an earlier run stored, with `workers`
    /// engine workers, the WAL starting at `first_lsn`, and records kept
    /// `retention_ms` of event time behind the checkpoint.
    pub fn new(workers: usize, stored: Checkpoint, first_lsn: Lsn, retention_ms: u64) -> Self {
        Self {
            progress: WriteProgress::new(workers, stored.written_before),
            retention: Retention::new(first_lsn, retention_ms),
            stored,
            suppress_before: stored.written_before,
            everywhere: EventTime::MAX,
            replayable: EventTime::MAX,
            returning: Default::default(),
        }
    }

    /// Also keeps every record of `customers` ([`Ledger::keep`]).
    pub fn returning(&mut self, customers: std::collections::HashSet<fleetpulse_engine::Id>) {
        self.returning = customers;
    }

    /// Every member of the cluster has stored a checkpoint at least as far
    /// as `least` (this one's included; see
    /// [`super::rescale::Layout::members_least`]): where the WAL may now be
    /// cut, if anywhere. Once called, no cut passes what the least advanced
    /// member's stores have yet to write, nor the days after the oldest
    /// journey state a member stored.
    pub fn everywhere(&mut self, least: Checkpoint) -> Option<Lsn> {
        let (written, replayable) = (least.written_before, least.journeys_cover());
        if self.everywhere != EventTime::MAX {
            if written <= self.everywhere && replayable <= self.replayable {
                return None;
            }
            self.everywhere = self.everywhere.max(written);
            self.replayable = self.replayable.max(replayable);
        } else {
            (self.everywhere, self.replayable) = (written, replayable);
        }
        self.retention.cut(self.cut_before())
    }

    /// How far journey states may be stored with a checkpoint at `before`:
    /// in a cluster, no further than every member's checkpoint. A restart
    /// suppresses by the least advanced member's checkpoint and replays
    /// every customer's days from there; a state restored past it closes
    /// none of them, so its customers' health is missing from the
    /// portfolio figures the replay writes, and a state days ahead of the
    /// others makes those look like customers back in the customers file,
    /// whose records are not suppressed.
    pub fn journeys_before(&self, before: EventTime) -> EventTime {
        before.min(self.everywhere)
    }

    /// Windows before this are in every store of every member.
    fn cut_before(&self) -> EventTime {
        self.stored.written_before.min(self.replayable)
    }

    /// WAL records `lsns` are durable; their newest reading is at `newest`.
    pub fn durable(&mut self, lsns: Range<Lsn>, newest: EventTime) {
        self.retention.durable(lsns.start, lsns.end, newest);
    }

    /// Engine worker `worker` may emit nothing before `frontier` any more,
    /// and no window or journey record before `journeys`.
    pub fn frontier(
        &mut self,
        worker: usize,
        frontier: Option<EventTime>,
        journeys: Option<EventTime>,
    ) {
        self.progress.frontier(worker, frontier, journeys);
    }

    /// False for a record every store already held before the restart: the
    /// replay recomputed it and it is not written again.
    pub fn keep(&self, record: &Output) -> bool {
        record_time(record) >= self.suppress_before
            || (!self.returning.is_empty()
                && record
                    .customer()
                    .is_some_and(|c| self.returning.contains(c)))
    }

    /// Every window ending before this has been handed to the sinks (see
    /// [`super::progress::WriteProgress::emitted_before`]).
    pub fn emitted_before(&self) -> Option<EventTime> {
        self.progress.emitted_before()
    }

    /// Every window and journey record ending before this has been handed
    /// to the sinks; portfolio figures may still come.
    pub fn journeys_emitted_before(&self) -> Option<EventTime> {
        self.progress.journeys_emitted_before()
    }

    /// The fan-out handed one more batch to every sink.
    pub fn sent_batch(&mut self) {
        self.progress.sent_batch();
    }

    /// Batches handed to every sink so far.
    pub fn sent(&self) -> u64 {
        self.progress.sent()
    }

    /// A checkpoint to store, if the sinks (`written`: batches written, one
    /// count per sink) got further than the stored one.
    pub fn plan(&mut self, written: &[u64]) -> Option<Checkpoint> {
        let durable = self.progress.durable(written);
        (durable > self.stored.written_before).then_some(Checkpoint::at(durable))
    }

    /// `checkpoint` is on disk: where the WAL may now be cut (every record
    /// below the returned LSN), if anywhere.
    pub fn stored(&mut self, checkpoint: Checkpoint) -> Option<Lsn> {
        // A member's file may say only how far its journey states now go.
        self.stored.journeys_before = checkpoint.journeys_before;
        if checkpoint.written_before <= self.stored.written_before {
            return None;
        }
        self.stored = checkpoint;
        self.retention.cut(self.cut_before())
    }

    /// A restart now loads the device snapshot at `at`: the WAL is cut
    /// only behind it. Returns where it may now be cut, if anywhere.
    pub fn follow_snapshot(&mut self, at: EventTime) -> Option<Lsn> {
        self.retention.follow_snapshot(at);
        self.retention.cut(self.cut_before())
    }

    /// The checkpoint on disk.
    pub fn checkpoint(&self) -> Checkpoint {
        self.stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RETENTION: u64 = 50;

    #[test]
    fn in_a_cluster_the_cut_waits_for_the_least_advanced_member() {
        let mut ledger = Ledger::new(1, Checkpoint::default(), Lsn(1), RETENTION);
        // Another member has stored no checkpoint yet.
        assert_eq!(ledger.everywhere(Checkpoint::default()), None);
        ledger.durable(Lsn(1)..Lsn(3), 100);
        ledger.durable(Lsn(3)..Lsn(5), 300);
        // This member's stores hold every window before 400, but the
        // readings at 100 feed windows the other member's stores may not.
        assert_eq!(ledger.stored(Checkpoint::at(400)), None);
        assert_eq!(ledger.everywhere(Checkpoint::at(200)), Some(Lsn(3)));
        assert_eq!(
            ledger.everywhere(Checkpoint::at(150)),
            None,
            "never backwards"
        );
        assert_eq!(ledger.everywhere(Checkpoint::at(400)), Some(Lsn(5)));
    }

    /// Every member's stores hold the windows before 400, but one stored
    /// its journey states at 200 (its last look at the others came before
    /// theirs caught up): the readings after 200 - RETENTION stay, so a
    /// restart that restores those states replays their days whole.
    #[test]
    fn in_a_cluster_the_cut_waits_for_the_oldest_journey_states() {
        let mut ledger = Ledger::new(1, Checkpoint::default(), Lsn(1), RETENTION);
        ledger.everywhere(Checkpoint::default());
        ledger.durable(Lsn(1)..Lsn(3), 100);
        ledger.durable(Lsn(3)..Lsn(5), 300);
        assert_eq!(ledger.stored(Checkpoint::at(400)), None);
        let least = |journeys| Checkpoint {
            written_before: 400,
            journeys_before: Some(journeys),
        };
        assert_eq!(ledger.everywhere(least(200)), Some(Lsn(3)));
        assert_eq!(ledger.journeys_before(500), 400);
        assert_eq!(
            ledger.everywhere(least(300)),
            None,
            "300 is within the retention"
        );
        assert_eq!(ledger.everywhere(least(400)), Some(Lsn(5)));
        // A file that says only how far the journey states go is taken in.
        let own = least(380);
        assert_eq!(ledger.stored(own), None);
        assert_eq!(ledger.checkpoint(), own);
    }

    /// A member whose stores are days ahead of another's stores journey
    /// states only as far as the other's checkpoint: a restart suppresses
    /// by the least, and every customer's days after it must close again
    /// (their health feeds those dates' portfolio figures).
    #[test]
    fn in_a_cluster_journey_states_wait_for_the_least_advanced_member() {
        let day = 86_400_000;
        let alone = Ledger::new(1, Checkpoint::default(), Lsn(1), RETENTION);
        assert_eq!(alone.journeys_before(30 * day), 30 * day);
        let mut member = Ledger::new(1, Checkpoint::default(), Lsn(1), RETENTION);
        member.everywhere(Checkpoint::default());
        assert_eq!(
            member.journeys_before(30 * day),
            0,
            "the others not read yet"
        );
        member.everywhere(Checkpoint::at(24 * day));
        assert_eq!(member.journeys_before(30 * day), 24 * day);
        assert_eq!(member.journeys_before(20 * day), 20 * day);
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A WAL group of `n` records whose newest reading is `at`.
        Durable { n: u64, at: u64 },
        /// Worker `w` reports frontier `f`.
        Frontier { w: usize, f: u64 },
        /// One batch handed to the sinks.
        Sent,
        /// Sink `s` finishes one more batch (if it has any left).
        Written { s: usize },
        /// Try to checkpoint; `crash`: the store fails before the file is
        /// on disk.
        Checkpoint { crash: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1..4u64, 0..1000u64).prop_map(|(n, at)| Step::Durable { n, at }),
            (0..2usize, 0..1000u64).prop_map(|(w, f)| Step::Frontier { w, f }),
            Just(Step::Sent),
            (0..2usize).prop_map(|s| Step::Written { s }),
            any::<bool>().prop_map(|crash| Step::Checkpoint { crash }),
        ]
    }

    proptest! {
        /// Never cut what a sink has not written, never checkpoint ahead of
        /// a sink, and a restart from the stored checkpoint suppresses
        /// exactly the records written before it.
        #[test]
        fn never_cut_or_suppress_what_a_sink_has_not_written(
            steps in prop::collection::vec(step(), 1..200),
        ) {
            let mut ledger = Ledger::new(2, Checkpoint::default(), Lsn(1), RETENTION);
            let mut next_lsn = 1u64;
            // Model: newest event time per LSN; per sink, batches written;
            // the frontier (min over workers) seen at each batch count.
            let mut at_of = Vec::new();
            let mut written = [0u64; 2];
            let mut frontiers = [None::<u64>; 2];
            // (batches sent when seen, frontier): a window ending before
            // the frontier is in the batches sent up to then.
            let mut seen: Vec<(u64, u64)> = Vec::new();
            let mut on_disk = Checkpoint::default();
            let mut cut_before = 1u64;
            for step in steps {
                match step {
                    Step::Durable { n, at } => {
                        ledger.durable(Lsn(next_lsn)..Lsn(next_lsn + n), at);
                        at_of.extend(std::iter::repeat_n(at, n as usize));
                        next_lsn += n;
                    }
                    Step::Frontier { w, f } => {
                        // Frontiers only move forward.
                        let f = frontiers[w].map_or(f, |old| old.max(f));
                        frontiers[w] = Some(f);
                        ledger.frontier(w, Some(f), Some(f));
                        if let [Some(a), Some(b)] = frontiers {
                            seen.push((ledger.sent(), a.min(b)));
                        }
                    }
                    Step::Sent => ledger.sent_batch(),
                    Step::Written { s } => written[s] = (written[s] + 1).min(ledger.sent()),
                    Step::Checkpoint { crash } => {
                        if let Some(plan) = ledger.plan(&written) {
                            // Every sink holds every window before the plan.
                            let slowest = written.iter().copied().min().unwrap();
                            let justified = seen
                                .iter()
                                .filter(|(needed, _)| *needed <= slowest)
                                .map(|(_, f)| *f)
                                .max()
                                .unwrap_or(0);
                            prop_assert!(plan.written_before <= justified,
                                "checkpoint {} ahead of the sinks ({justified})", plan.written_before);
                            if crash {
                                continue;
                            }
                            on_disk = plan;
                            if let Some(cut) = ledger.stored(plan) {
                                prop_assert!(cut.0 > cut_before - 1);
                                for lsn in cut_before..cut.0 {
                                    let at = at_of[(lsn - 1) as usize];
                                    prop_assert!(at + RETENTION < on_disk.written_before,
                                        "record {lsn} at {at} cut, checkpoint {}", on_disk.written_before);
                                }
                                cut_before = cut.0;
                            }
                        }
                    }
                }
            }
            // A restart suppresses exactly what the checkpoint on disk
            // says every sink held.
            let restarted = Ledger::new(2, on_disk, Lsn(cut_before), RETENTION);
            prop_assert_eq!(restarted.checkpoint(), on_disk);
            prop_assert_eq!(restarted.suppress_before, on_disk.written_before);
        }
    }
}
