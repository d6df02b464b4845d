//! Device memories between the engine and the service: the snapshot a
//! restart restores, and the snapshots the service asks for. Each worker
//! answers a request before it processes anything more, so no worker waits
//! or has to agree on a point with the others: each memory carries the
//! point it covers (every batch of the device whose first reading's tick is
//! before it, none after). A restart that restores the memories and skips,
//! per device, the batches before its point ends where an uninterrupted run
//! does: a device silent for longer than the WAL keeps still has its last
//! counters and its sequence windows. Memory only: the engine does no I/O.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use crate::model::{DeviceKey, EventTime};
use crate::operators::device_state::DeviceMemory;

/// Every device's memory, each at its worker's point.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceSnapshot {
    /// The earliest point of any memory: the WAL must keep every batch from
    /// here on.
    pub at: EventTime,
    /// The latest point: windows that start after it are whole in a replay.
    pub newest: EventTime,
    /// Every device's memory, each with the point it covers.
    pub devices: Vec<(DeviceKey, DeviceMemory)>,
}

/// Device memories shared by the device-state operators (on every worker)
/// and the service.
#[derive(Debug, Default)]
pub struct DeviceBoard {
    /// Memories to start from, taken once by the worker that owns the
    /// device.
    restored: Mutex<Vec<(DeviceKey, DeviceMemory)>>,
    /// The earliest point of the restored memories.
    restored_at: EventTime,
    /// The number of the latest request; 0: none yet.
    requested: AtomicU64,
    /// The parts of the latest request the workers have handed in.
    parts: Mutex<Parts>,
    /// Wakes each worker's device-state operator, so an idle one answers.
    wake: Mutex<Vec<timely::scheduling::SyncActivator>>,
}

#[derive(Debug, Default)]
struct Parts {
    request: u64,
    workers: usize,
    snapshot: DeviceSnapshot,
}

impl DeviceBoard {
    /// A board restoring `snapshot`.
    pub fn restoring(snapshot: DeviceSnapshot) -> Self {
        Self {
            restored: Mutex::new(snapshot.devices),
            restored_at: snapshot.at,
            ..Self::default()
        }
    }

    /// The earliest point of the restored memories (0 without).
    pub fn restored_at(&self) -> EventTime {
        self.restored_at
    }

    /// Takes the restored memories of the devices `mine` picks (those a
    /// worker owns).
    pub fn take_restored_where(
        &self,
        mine: impl Fn(&DeviceKey) -> bool,
    ) -> Vec<(DeviceKey, DeviceMemory)> {
        let mut restored = lock(&self.restored);
        let (taken, kept) = std::mem::take(&mut *restored)
            .into_iter()
            .partition(|(key, _)| mine(key));
        *restored = kept;
        taken
    }

    /// Asks every worker for its memories, dropping the parts of an
    /// earlier request.
    pub fn request(&self) {
        let mut parts = lock(&self.parts);
        let request = self.requested.load(SeqCst) + 1;
        *parts = Parts {
            request,
            ..Parts::default()
        };
        self.requested.store(request, SeqCst);
        drop(parts);
        for operator in lock(&self.wake).iter() {
            // A worker that has stopped answers nothing, whatever is done.
            let _ = operator.activate();
        }
    }

    /// Registers an operator to wake when a snapshot is requested.
    pub fn wake_on_request(&self, operator: timely::scheduling::SyncActivator) {
        lock(&self.wake).push(operator);
    }

    /// The number of the latest request, 0 when none.
    pub fn requested(&self) -> u64 {
        self.requested.load(SeqCst)
    }

    /// A worker hands in its part of `request`: its memories, covering its
    /// batches before `at`.
    pub fn hand_in(
        &self,
        request: u64,
        at: EventTime,
        devices: impl IntoIterator<Item = (DeviceKey, DeviceMemory)>,
    ) {
        let mut parts = lock(&self.parts);
        if parts.request != request {
            return;
        }
        let first = parts.workers == 0;
        let snapshot = &mut parts.snapshot;
        snapshot.at = if first { at } else { snapshot.at.min(at) };
        snapshot.newest = snapshot.newest.max(at);
        snapshot.devices.extend(devices);
        parts.workers += 1;
    }

    /// The requested snapshot once `workers` workers handed in their parts
    /// (the parts are then cleared).
    pub fn take(&self, workers: usize) -> Option<DeviceSnapshot> {
        let mut parts = lock(&self.parts);
        if parts.request == 0 || parts.workers < workers {
            return None;
        }
        parts.request = 0;
        parts.workers = 0;
        Some(std::mem::take(&mut parts.snapshot))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
