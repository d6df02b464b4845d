//! Restating a customer's closed windows: telemetry that arrives after its
//! windows closed, but within the correction horizon, is not refused;
//! ingest keeps every admitted batch on disk (the archive) and hands the
//! customer's batches here, and the windows it touches are computed again
//! from all of them, as if everything had arrived in event-time order.
//!
//! The same arithmetic as the live dataflow, on one thread: batches are
//! applied per device in the order `device_state` applies them (so a late
//! reading between two known ones splits their increment), then fed to the
//! same window accumulators. Pure: the caller reads the archive.

use std::collections::BTreeMap;

use crate::config::EngineConfig;
use crate::device_map::DeviceMap;
use crate::kpi::{OpenWindow, Output, WindowIds, WindowPart};
use crate::model::{DeviceBatch, EventTime, Id};
use crate::operators::device_state::{DeviceMemory, processing_order};

/// What to restate: one customer's windows that end after `from` and by
/// `through`.
#[derive(Debug, Clone)]
pub struct Restatement {
    /// The customer.
    pub customer: Id,
    /// Earliest reading that arrived late: windows ending at or before it
    /// are untouched.
    pub from: EventTime,
    /// Windows ending after this are still open in the live dataflow, which
    /// emits them itself.
    pub through: EventTime,
    /// Stamped on every restated record.
    pub revision: u32,
}

impl Restatement {
    /// Readings before this are not needed beyond each device's last batch
    /// before it (the baseline of its first increment): the start of the
    /// longest window that holds `from`.
    pub fn floor(&self, config: &EngineConfig) -> EventTime {
        config
            .windows
            .iter()
            .map(|spec| config.window_bounds(spec, &self.customer, self.from).0)
            .min()
            .unwrap_or(self.from)
    }

    /// The customer's restated device and customer records. `earlier`: each
    /// device's last batch that starts before [`Self::floor`] (or more of
    /// them: only the last counts); `batches`: every batch of the customer
    /// that starts at or after it, in any order, duplicates included.
    pub fn windows(
        &self,
        config: &EngineConfig,
        earlier: Vec<DeviceBatch>,
        batches: Vec<DeviceBatch>,
    ) -> Vec<Output> {
        let floor = self.floor(config);
        let mut all: Vec<DeviceBatch> = earlier
            .into_iter()
            .chain(batches)
            .filter(|b| b.customer == self.customer && !b.samples.is_empty())
            .collect();
        all.sort_by(|a, b| processing_order(a).cmp(&processing_order(b)));

        let mut memories: DeviceMap<DeviceMemory> = DeviceMap::default();
        let mut ids = WindowIds::default();
        let mut open: Vec<BTreeMap<EventTime, OpenWindow>> =
            config.windows.iter().map(|_| BTreeMap::new()).collect();
        let (mut gaps, mut resets, mut usage) = (0i64, 0u64, Vec::new());
        for batch in all {
            let memory = memories.get_or_default(&batch.customer, &batch.device);
            // A duplicate or a batch too old to place adds nothing, as live.
            let _ = memory.apply(batch, &mut gaps, &mut resets, &mut usage);
            for reading in usage.drain(..) {
                if reading.sample.at < floor {
                    continue; // Only the baseline of the next increment.
                }
                let device = ids.device(&reading);
                for (spec, windows) in config.windows.iter().zip(open.iter_mut()) {
                    let (start, end) =
                        config.window_bounds(spec, &reading.customer, reading.sample.at);
                    if end <= self.from || end > self.through {
                        continue;
                    }
                    windows
                        .entry(end)
                        .or_default()
                        .add(&mut ids, device, start, &reading);
                }
            }
        }

        let mut out = Vec::new();
        for (index, (spec, windows)) in config.windows.iter().zip(open).enumerate() {
            for (end, window) in windows {
                window.finish(&ids, index, spec, end, |part| {
                    out.push(match part {
                        WindowPart::Device(mut d) => {
                            d.revision = self.revision;
                            Output::Device(d)
                        }
                        WindowPart::Customer(c) => {
                            let mut k = c.totals.finish(spec, c.start, end, config);
                            k.revision = self.revision;
                            Output::Customer(k)
                        }
                    })
                });
            }
        }
        out
    }
}
