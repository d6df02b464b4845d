//! The latency probe the consumer installs (see [`fleetpulse::metrics::PipelineProbe`]):
//! a wall-clock stamp for every batch handed to the engine, and the time from
//! the engine emitting closed-window records to the sink having written them.
//!
//! Wall clock (not `Instant`), because the publisher that stamps the other
//! end of the first latency runs in another process on the same machine.

use std::collections::VecDeque;
use std::hash::Hasher;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use fleetpulse::metrics::PipelineProbe;

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A stable 64-bit key for (device, sequence), the same in the consumer and
/// the harness (FNV-1a over the id, then the sequence).
pub fn message_key(device: &str, sequence: u64) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(device.as_bytes());
    h.write_u64(sequence);
    h.finish()
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// p50 / p99 / max of a latency, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Observations (records or messages).
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl LatencySummary {
    /// Summarises `(latency_ns, weight)` pairs.
    pub fn of(mut values: Vec<(u64, u64)>) -> LatencySummary {
        values.sort_unstable();
        let count: u64 = values.iter().map(|(_, w)| w).sum();
        if count == 0 {
            return LatencySummary::default();
        }
        let at = |q: f64| {
            let rank = ((count as f64 * q).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (v, w) in &values {
                seen += w;
                if seen >= rank {
                    return *v as f64 / 1e6;
                }
            }
            values.last().map_or(0.0, |(v, _)| *v as f64 / 1e6)
        };
        LatencySummary {
            count,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: values.last().map_or(0.0, |(v, _)| *v as f64 / 1e6),
        }
    }
}

/// Records the stamps; one per consumer process.
#[derive(Debug, Default)]
pub struct Probe {
    /// (message key, ns) at engine input, in arrival order.
    inputs: Mutex<Vec<(u64, u64)>>,
    store: Mutex<StoreLatency>,
}

#[derive(Debug, Default)]
struct StoreLatency {
    emitted: u64,
    written: u64,
    /// (cumulative records emitted at the end of an emission, when).
    pending: VecDeque<(u64, u64)>,
    /// (latency ns, records).
    done: Vec<(u64, u64)>,
    last_write_ns: u64,
    /// End of the last emission counted as stored.
    stored_end: u64,
}

impl Probe {
    /// Engine-input stamps so far: (message key, ns since the epoch).
    pub fn inputs(&self) -> Vec<(u64, u64)> {
        self.inputs.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Window close (engine emission) to store (write completed), per record.
    pub fn store_latency(&self) -> LatencySummary {
        let done = self
            .store
            .lock()
            .map(|s| s.done.clone())
            .unwrap_or_default();
        LatencySummary::of(done)
    }

    /// When the last sink write completed, ns since the epoch (0: none).
    pub fn last_write_ns(&self) -> u64 {
        self.store.lock().map_or(0, |s| s.last_write_ns)
    }
}

impl PipelineProbe for Probe {
    fn engine_input(&self, device: &str, sequence: u64) {
        let stamp = (message_key(device, sequence), now_ns());
        if let Ok(mut inputs) = self.inputs.lock() {
            inputs.push(stamp);
        }
    }

    fn records_emitted(&self, records: usize) {
        let now = now_ns();
        if let Ok(mut s) = self.store.lock() {
            s.emitted += records as u64;
            let end = s.emitted;
            s.pending.push_back((end, now));
        }
    }

    fn records_written(&self, records: usize) {
        let now = now_ns();
        if let Ok(mut s) = self.store.lock() {
            s.written += records as u64;
            s.last_write_ns = now;
            // One sink writes in emission order: an emission is stored once
            // the written count passes its end; it weighs its records.
            while let Some(&(end, at)) = s.pending.front() {
                if end > s.written {
                    break;
                }
                s.pending.pop_front();
                let weight = end.saturating_sub(s.stored_end).max(1);
                s.stored_end = end;
                s.done.push((now.saturating_sub(at), weight));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_weighted() {
        let s = LatencySummary::of(vec![(1_000_000, 98), (5_000_000, 1), (9_000_000, 1)]);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 1.0);
        assert_eq!(s.p99_ms, 5.0);
        assert_eq!(s.max_ms, 9.0);
        assert_eq!(LatencySummary::of(vec![]), LatencySummary::default());
    }

    #[test]
    fn store_latency_follows_emission_order() {
        let probe = Probe::default();
        probe.records_emitted(3);
        probe.records_emitted(2);
        probe.records_written(4);
        assert_eq!(probe.store.lock().unwrap().done.len(), 1);
        probe.records_written(1);
        let s = probe.store_latency();
        assert_eq!(s.count, 5);
    }

    #[test]
    fn message_keys_differ_by_device_and_sequence() {
        assert_ne!(message_key("a", 1), message_key("a", 2));
        assert_ne!(message_key("a", 1), message_key("b", 1));
        assert_eq!(message_key("a", 1), message_key("a", 1));
    }
}
