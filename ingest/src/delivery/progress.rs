//! What has been written where. The engine reports, per worker, the lower
//! bound of what it may still emit (its output frontier). The fan-out
//! numbers the record batches it hands the sinks; each sink reports how many
//! of them it has fully written. A window that ended before frontier `F` was
//! handed out in a batch numbered at most `n`, where `n` is the count sent
//! when `F` was seen; once every sink has written `n` batches, windows ending
//! before `F` are in every store.

use std::collections::VecDeque;

use fleetpulse_engine::EventTime;

/// Engine progress against what the sinks have written.
#[derive(Debug, Clone)]
pub struct WriteProgress {
    /// Output frontier per worker; `None` until the worker first reports.
    frontiers: Vec<Option<EventTime>>,
    /// The same for windows and journey records (all but the portfolio's).
    journeys: Vec<Option<EventTime>>,
    /// Batches handed to the sinks so far.
    sent: u64,
    /// (batches sent when a frontier was reached, that frontier).
    marks: VecDeque<(u64, EventTime)>,
    durable: EventTime,
}

impl WriteProgress {
    /// Progress of `workers` engine workers, starting from what an earlier
    /// run already made durable.
    pub fn new(workers: usize, durable: EventTime) -> Self {
        Self {
            frontiers: vec![None; workers],
            journeys: vec![None; workers],
            sent: 0,
            marks: VecDeque::new(),
            durable,
        }
    }

    /// Batches handed to every sink so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// A batch was handed to every sink.
    pub fn sent_batch(&mut self) {
        self.sent += 1;
    }

    /// A worker reported its output frontier. `None` (the worker is done
    /// because the input closed) says nothing about event time: windows
    /// flushed at shutdown may be partial and are written again after a
    /// restart, so it is ignored.
    /// `journeys`: the worker's frontier of the windows and journey
    /// records alone.
    pub fn frontier(
        &mut self,
        worker: usize,
        frontier: Option<EventTime>,
        journeys: Option<EventTime>,
    ) {
        if let (Some(journeys), Some(slot)) = (journeys, self.journeys.get_mut(worker)) {
            *slot = Some(journeys);
        }
        let Some(frontier) = frontier else { return };
        if let Some(slot) = self.frontiers.get_mut(worker) {
            *slot = Some(frontier);
        }
        let Some(global) = self.emitted_before() else {
            return;
        };
        if self.marks.back().is_none_or(|(_, f)| *f < global) {
            self.marks.push_back((self.sent, global));
        }
    }

    /// The least output frontier over the workers, once each reported:
    /// every window ending before it has been handed out.
    pub fn emitted_before(&self) -> Option<EventTime> {
        least(&self.frontiers)
    }

    /// [`Self::emitted_before`] for the windows and journey records alone:
    /// the portfolio's frontier waits for every customer's local day of a
    /// date (up to 38 h behind the windows).
    pub fn journeys_emitted_before(&self) -> Option<EventTime> {
        least(&self.journeys)
    }

    /// Windows ending before the returned time are in every sink, given how
    /// many batches each sink has written (`written`, one count per sink).
    pub fn durable(&mut self, written: &[u64]) -> EventTime {
        let written = written.iter().copied().min().unwrap_or(self.sent);
        while let Some(&(needed, frontier)) = self.marks.front() {
            if needed > written {
                break;
            }
            self.durable = self.durable.max(frontier);
            self.marks.pop_front();
        }
        self.durable
    }
}

/// The least of the workers' frontiers, once each reported.
fn least(frontiers: &[Option<EventTime>]) -> Option<EventTime> {
    frontiers
        .iter()
        .try_fold(EventTime::MAX, |least, f| Some(least.min((*f)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_waits_for_every_sink_and_every_worker() {
        let mut p = WriteProgress::new(2, 0);
        p.sent_batch();
        p.frontier(0, Some(100), Some(100));
        assert_eq!(p.durable(&[1, 1]), 0, "worker 1 has not reported");
        p.frontier(1, Some(50), Some(50));
        p.sent_batch();
        p.frontier(1, Some(200), Some(200));
        assert_eq!(p.durable(&[2, 1]), 50);
        assert_eq!(p.durable(&[2, 2]), 100);
        // The end of input is no progress in event time.
        p.frontier(0, None, None);
        p.frontier(1, None, None);
        assert_eq!(p.durable(&[2, 2]), 100);
    }

    #[test]
    fn the_journeys_frontier_is_the_least_over_the_workers_and_apart_from_the_portfolio() {
        let mut p = WriteProgress::new(2, 0);
        p.frontier(0, Some(100), Some(500));
        assert_eq!(
            p.journeys_emitted_before(),
            None,
            "worker 1 has not reported"
        );
        p.frontier(1, Some(100), Some(400));
        assert_eq!(p.emitted_before(), Some(100));
        assert_eq!(p.journeys_emitted_before(), Some(400));
        // Done: no bound on either, and the last ones stand.
        p.frontier(1, None, None);
        assert_eq!(p.journeys_emitted_before(), Some(400));
    }
}
