//! Device memories between the engine and the service: the snapshot a
//! restart restores, and the snapshots the service asks for. A snapshot at
//! `at` holds every device's memory after every batch whose first reading's
//! tick is before `at` and none after, so a restart that restores it and
//! replays only the later batches ends where an uninterrupted run does: a
//! device silent for longer than the WAL keeps still has its last counters
//! and its sequence windows. Memory only: the engine does no I/O.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use crate::model::{DeviceKey, EventTime};
use crate::operators::device_state::DeviceMemory;

/// A consistent cut of every device's memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSnapshot {
    /// Batches whose first reading's tick is before this are in it.
    pub at: EventTime,
    /// Every device's memory at `at`.
    pub devices: Vec<(DeviceKey, DeviceMemory)>,
}

/// Device memories shared by the device-state operators (on every worker)
/// and the service.
#[derive(Debug, Default)]
pub struct DeviceBoard {
    /// Memories to start from, taken once by the worker that owns the
    /// device; `None` before a restore (or once every worker took its part).
    restored: Mutex<Option<DeviceSnapshot>>,
    /// Batches before this tick are in the restored memories: a replay
    /// skips them.
    restored_at: AtomicU64,
    /// The snapshot point asked for; 0: none.
    requested: AtomicU64,
    /// The parts of the requested snapshot the workers have handed in.
    parts: Mutex<Parts>,
}

#[derive(Debug, Default)]
struct Parts {
    at: EventTime,
    workers: usize,
    devices: Vec<(DeviceKey, DeviceMemory)>,
    /// A worker had passed `at` before it saw the request.
    missed: bool,
}

/// What became of a requested snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// Not every worker has handed in its part yet.
    Waiting,
    /// Every worker handed in its part.
    Complete(DeviceSnapshot),
    /// A worker was already past the point when it saw the request: ask
    /// again further ahead.
    Missed,
}

impl DeviceBoard {
    /// A board restoring `snapshot`.
    pub fn restoring(snapshot: DeviceSnapshot) -> Self {
        let board = Self::default();
        board.restored_at.store(snapshot.at, SeqCst);
        *lock(&board.restored) = Some(snapshot);
        board
    }

    /// Batches whose first tick is before this are in the restored memories.
    pub fn restored_at(&self) -> EventTime {
        self.restored_at.load(SeqCst)
    }

    /// Takes the restored memories of the devices `mine` picks (those a
    /// worker owns).
    pub fn take_restored_where(
        &self,
        mine: impl Fn(&DeviceKey) -> bool,
    ) -> Vec<(DeviceKey, DeviceMemory)> {
        let mut restored = lock(&self.restored);
        let Some(snapshot) = restored.as_mut() else {
            return Vec::new();
        };
        let (taken, kept) = std::mem::take(&mut snapshot.devices)
            .into_iter()
            .partition(|(key, _)| mine(key));
        snapshot.devices = kept;
        taken
    }

    /// Asks every worker for its memories at `at` (a tick), dropping the
    /// parts of an earlier request.
    pub fn request(&self, at: EventTime) {
        *lock(&self.parts) = Parts {
            at,
            ..Parts::default()
        };
        self.requested.store(at, SeqCst);
    }

    /// The point asked for, 0 when none.
    pub fn requested(&self) -> EventTime {
        self.requested.load(SeqCst)
    }

    /// A worker hands in its part of the snapshot at `at`.
    pub fn hand_in(
        &self,
        at: EventTime,
        devices: impl IntoIterator<Item = (DeviceKey, DeviceMemory)>,
    ) {
        let mut parts = lock(&self.parts);
        if parts.at == at {
            parts.workers += 1;
            parts.devices.extend(devices);
        }
    }

    /// A worker had already processed batches at or after `at`.
    pub fn missed(&self, at: EventTime) {
        let mut parts = lock(&self.parts);
        if parts.at == at {
            parts.missed = true;
        }
    }

    /// The requested snapshot once `workers` workers handed in their parts
    /// (the request is then cleared).
    pub fn take(&self, workers: usize) -> Taken {
        let mut parts = lock(&self.parts);
        let taken = if parts.missed {
            Taken::Missed
        } else if parts.workers >= workers && parts.at != 0 {
            Taken::Complete(DeviceSnapshot {
                at: parts.at,
                devices: std::mem::take(&mut parts.devices),
            })
        } else {
            return Taken::Waiting;
        };
        *parts = Parts::default();
        self.requested.store(0, SeqCst);
        taken
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
