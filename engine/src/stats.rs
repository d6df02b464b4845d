//! Counters the engine keeps for observability. Shared with the host through
//! an `Arc`; atomics only, so reading them never stalls the dataflow.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::operators::device_state::MeterFaults;

/// What the engine has seen and absorbed, summed over all workers.
#[derive(Debug, Default)]
pub struct EngineStats {
    samples: AtomicU64,
    duplicates: AtomicU64,
    replays_too_old: AtomicU64,
    sequence_gaps: AtomicI64,
    counter_resets: AtomicU64,
    counter_jumps: AtomicU64,
    devices: AtomicI64,
    late_absorbed: AtomicU64,
    late_samples: AtomicU64,
}

/// A point-in-time copy of [`EngineStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Readings turned into usage (after dedup).
    pub samples: u64,
    /// Batches dropped as already seen.
    pub duplicates: u64,
    /// Batches dropped as older than the replay window.
    pub replays_too_old: u64,
    /// Sequence numbers skipped by devices and not (yet) delivered.
    pub sequence_gaps: i64,
    /// Cumulative counters that went backwards.
    pub counter_resets: u64,
    /// Cumulative counters that rose more than the time elapsed allows.
    pub counter_jumps: u64,
    /// Devices the engine holds state for.
    pub devices: i64,
    /// Late batches (restated by ingest) whose readings only updated their
    /// device's memory.
    pub late_absorbed: u64,
    /// Their readings (counted in their windows by ingest's restatement,
    /// not in `samples`).
    pub late_samples: u64,
}

impl EngineStats {
    pub(crate) fn record_device_state(
        &self,
        samples: u64,
        duplicates: u64,
        too_old: u64,
        gaps: i64,
        faults: MeterFaults,
    ) {
        self.samples.fetch_add(samples, Relaxed);
        self.duplicates.fetch_add(duplicates, Relaxed);
        self.replays_too_old.fetch_add(too_old, Relaxed);
        self.sequence_gaps.fetch_add(gaps, Relaxed);
        self.counter_resets.fetch_add(faults.resets, Relaxed);
        self.counter_jumps.fetch_add(faults.jumps, Relaxed);
    }

    pub(crate) fn record_late(&self, batches: u64, samples: u64, gaps: i64) {
        self.late_absorbed.fetch_add(batches, Relaxed);
        self.late_samples.fetch_add(samples, Relaxed);
        self.sequence_gaps.fetch_add(gaps, Relaxed);
    }

    pub(crate) fn add_sequence_gaps(&self, gaps: i64) {
        self.sequence_gaps.fetch_add(gaps, Relaxed);
    }

    pub(crate) fn add_devices(&self, delta: i64) {
        self.devices.fetch_add(delta, Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            samples: self.samples.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            replays_too_old: self.replays_too_old.load(Relaxed),
            sequence_gaps: self.sequence_gaps.load(Relaxed),
            counter_resets: self.counter_resets.load(Relaxed),
            counter_jumps: self.counter_jumps.load(Relaxed),
            devices: self.devices.load(Relaxed),
            late_absorbed: self.late_absorbed.load(Relaxed),
            late_samples: self.late_samples.load(Relaxed),
        }
    }
}
