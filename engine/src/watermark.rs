//! The watermark: how far event time has provably progressed.
//!
//! `watermark = max event time seen - allowed lateness`, plus the time the
//! input has been idle (up to the lateness), so a quiet fleet still closes its
//! windows. Data older than the watermark is late: the dataflow has already
//! closed its windows, so ingest must refuse it explicitly (counted,
//! dead-lettered), never slip it in silently. Pure logic; the caller supplies
//! idle time from its own clock.

use crate::model::EventTime;

/// Tracks the watermark for one input.
#[derive(Debug, Clone)]
pub struct Watermark {
    lateness_ms: u64,
    max_event: Option<EventTime>,
    idle_ms: u64,
    /// Never moves backwards, whatever the inputs do.
    current: EventTime,
    /// Held at or below this (a replay that knows older data follows).
    ceiling: EventTime,
}

/// A batch older than the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    /// Earliest reading of the refused batch.
    pub first_at: EventTime,
    /// The watermark it fell behind.
    pub watermark: EventTime,
}

impl Watermark {
    /// A watermark that trails the newest event time by `lateness_ms`.
    pub fn new(lateness_ms: u64) -> Self {
        Self {
            lateness_ms,
            max_event: None,
            idle_ms: 0,
            current: 0,
            ceiling: EventTime::MAX,
        }
    }

    /// Holds the watermark at or below `ceiling` from now on (it does not
    /// move back if it is past it already); `EventTime::MAX` releases it.
    pub fn hold_below(&mut self, ceiling: EventTime) {
        self.ceiling = ceiling;
        self.recompute();
    }

    /// Starts from a known position (e.g. recovered after a restart).
    pub fn resume_at(mut self, watermark: EventTime) -> Self {
        self.current = watermark;
        self
    }

    /// The current watermark.
    pub fn current(&self) -> EventTime {
        self.current
    }

    /// Newest event time seen.
    pub fn max_event(&self) -> Option<EventTime> {
        self.max_event
    }

    /// Admits a batch spanning `first_at..=last_at`, or refuses it as late.
    /// Admission ends any idle period.
    pub fn admit(&mut self, first_at: EventTime, last_at: EventTime) -> Result<(), Late> {
        if first_at < self.current {
            return Err(Late {
                first_at,
                watermark: self.current,
            });
        }
        self.max_event = Some(self.max_event.map_or(last_at, |m| m.max(last_at)));
        self.idle_ms = 0;
        self.recompute();
        Ok(())
    }

    /// Notes that the input has been quiet for `idle_ms` in total: the
    /// watermark creeps forward, at most up to the newest event time.
    pub fn idle_for(&mut self, idle_ms: u64) {
        self.idle_ms = idle_ms.min(self.lateness_ms);
        self.recompute();
    }

    /// Raises the watermark to `watermark` if that is ahead: an input that
    /// has been idle follows the rest of its cluster (see
    /// [`crate::workers::Engine::cluster_watermark`]). Data older than the
    /// new position is late from now on.
    pub fn raise_to(&mut self, watermark: EventTime) {
        self.current = self.current.max(watermark);
    }

    fn recompute(&mut self) {
        if let Some(max) = self.max_event {
            let candidate = max.saturating_sub(self.lateness_ms) + self.idle_ms;
            self.current = self.current.max(candidate.min(max).min(self.ceiling));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trails_max_event_by_lateness() {
        let mut w = Watermark::new(100);
        assert_eq!(w.current(), 0);
        w.admit(1_000, 1_050).unwrap();
        assert_eq!(w.current(), 950);
        // An earlier batch within lateness is fine and does not move it back.
        w.admit(960, 1_000).unwrap();
        assert_eq!(w.current(), 950);
        assert_eq!(
            w.admit(900, 1_000),
            Err(Late {
                first_at: 900,
                watermark: 950
            })
        );
    }

    #[test]
    fn idle_advances_up_to_the_newest_event() {
        let mut w = Watermark::new(100);
        w.admit(1_000, 1_000).unwrap();
        w.idle_for(30);
        assert_eq!(w.current(), 930);
        w.idle_for(10_000);
        assert_eq!(w.current(), 1_000);
        // New data ends the idle period without moving the watermark back.
        w.admit(1_000, 1_010).unwrap();
        assert_eq!(w.current(), 1_000);
    }

    #[test]
    fn an_idle_input_follows_its_cluster() {
        let mut w = Watermark::new(100);
        w.raise_to(5_000);
        assert_eq!(w.current(), 5_000);
        assert!(w.admit(4_000, 4_100).is_err());
        w.raise_to(10);
        assert_eq!(w.current(), 5_000);
        w.admit(5_000, 6_000).unwrap();
        assert_eq!(w.current(), 5_900);
    }
}
