//! What has been written where: the point in event time before which every
//! window is in every store, so the WAL can be cut and a restart need not
//! write those windows again.
//!
//! The engine reports, per worker, the lower bound of what it may still emit
//! (its output frontier). The fan-out numbers the record batches it hands the
//! sinks; each sink reports how many of them it has fully written. A window
//! that ended before frontier `F` was handed out in a batch numbered at most
//! `n`, where `n` is the count sent when `F` was seen; once every sink has
//! written `n` batches, windows ending before `F` are durable everywhere.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use fleetpulse_engine::{EventTime, Output};
use serde::{Deserialize, Serialize};

/// Event time a record belongs to, for suppression after a restart: a
/// window's end, an alert transition's time.
pub fn record_time(record: &Output) -> EventTime {
    match record {
        Output::Customer(r) => r.window_end,
        Output::Device(r) => r.window_end,
        Output::Outcome(r) => r.window_end,
        Output::Milestone(r) => r.window_end,
        Output::Health(r) => r.window_end,
        Output::Alert(r) => r.resolved_at.unwrap_or(r.opened_at),
        Output::Portfolio(r) => r.window_end,
    }
}

/// Tracks engine progress against what the sinks have written.
#[derive(Debug)]
pub struct WriteProgress {
    /// Output frontier per worker; `None` until the worker first reports.
    frontiers: Vec<Option<Option<EventTime>>>,
    /// Batches handed to the sinks so far.
    sent: u64,
    /// (batches sent when a frontier was reached, that frontier).
    marks: VecDeque<(u64, EventTime)>,
    /// Per sink: batches fully written.
    written: Vec<Arc<AtomicU64>>,
    durable: EventTime,
}

impl WriteProgress {
    /// Progress of `workers` engine workers into sinks with these counters.
    pub fn new(workers: usize, written: Vec<Arc<AtomicU64>>, durable: EventTime) -> Self {
        Self {
            frontiers: vec![None; workers],
            sent: 0,
            marks: VecDeque::new(),
            written,
            durable,
        }
    }

    /// A batch was handed to every sink.
    pub fn sent_batch(&mut self) {
        self.sent += 1;
    }

    /// A worker reported its output frontier. `None` (the worker is done
    /// because the input closed) says nothing about event time: windows
    /// flushed at shutdown may be partial and are written again after a
    /// restart, so it is ignored.
    pub fn frontier(&mut self, worker: usize, frontier: Option<EventTime>) {
        if frontier.is_none() {
            return;
        }
        if let Some(slot) = self.frontiers.get_mut(worker) {
            *slot = Some(frontier);
        }
        if self.frontiers.iter().any(Option::is_none) {
            return;
        }
        let global = self
            .frontiers
            .iter()
            .map(|f| f.flatten().unwrap_or(EventTime::MAX))
            .min()
            .unwrap_or(EventTime::MAX);
        if self.marks.back().is_none_or(|(_, f)| *f < global) {
            self.marks.push_back((self.sent, global));
        }
    }

    /// Windows ending before the returned time are in every sink.
    pub fn durable(&mut self) -> EventTime {
        let written = self
            .written
            .iter()
            .map(|w| w.load(Relaxed))
            .min()
            .unwrap_or(self.sent);
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

/// The persisted checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Windows (and alert transitions) before this event time are in every
    /// sink; after a restart they are not written again.
    pub written_before: EventTime,
}

/// Where the checkpoint lives, beside the WAL segments.
pub fn path(wal_dir: &Path) -> PathBuf {
    wal_dir.join("checkpoint.json")
}

impl Checkpoint {
    /// Reads the checkpoint; a missing file is the empty checkpoint.
    pub fn load(wal_dir: &Path) -> std::io::Result<Self> {
        match std::fs::read(path(wal_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the checkpoint atomically: a temporary file, fsync, rename,
    /// fsync of the directory.
    pub fn store(&self, wal_dir: &Path) -> std::io::Result<()> {
        let target = path(wal_dir);
        let tmp = wal_dir.join("checkpoint.json.tmp");
        let file = std::fs::File::create(&tmp)?;
        serde_json::to_writer(&file, self)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(wal_dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_waits_for_every_sink_and_every_worker() {
        let a = Arc::new(AtomicU64::new(0));
        let b = Arc::new(AtomicU64::new(0));
        let mut p = WriteProgress::new(2, vec![a.clone(), b.clone()], 0);
        p.sent_batch();
        p.frontier(0, Some(100));
        assert_eq!(p.durable(), 0, "worker 1 has not reported");
        p.frontier(1, Some(50));
        p.sent_batch();
        p.frontier(1, Some(200));
        a.store(2, Relaxed);
        b.store(1, Relaxed);
        assert_eq!(p.durable(), 50);
        b.store(2, Relaxed);
        assert_eq!(p.durable(), 100);
        // The end of input is no progress in event time.
        p.frontier(0, None);
        p.frontier(1, None);
        assert_eq!(p.durable(), 100);
    }

    #[test]
    fn checkpoint_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Checkpoint::default());
        let c = Checkpoint { written_before: 42 };
        c.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), c);
    }
}
