//! A plain single-threaded fold that computes the same windows as the
//! dataflow, with no timely, no watermark and no streaming: sort, dedup,
//! accumulate. It is the oracle for property tests and the baseline that
//! benchmarks compare the dataflow against.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::config::EngineConfig;
use crate::kpi::{CustomerAccumulator, DeviceAccumulator, Output, WindowIds};
use crate::model::{DeviceBatch, DeviceKey, EventTime, Id};
use crate::operators::device_state::{DeviceMemory, MeterFaults};

/// Computes every window's records from all batches at once.
pub fn fold(config: &EngineConfig, batches: impl IntoIterator<Item = DeviceBatch>) -> Vec<Output> {
    let mut by_device: HashMap<DeviceKey, Vec<DeviceBatch>> = HashMap::new();
    for batch in batches {
        by_device
            .entry((batch.customer.clone(), batch.device.clone()))
            .or_default()
            .push(batch);
    }
    type Window = (usize, EventTime, EventTime);
    let mut customers: BTreeMap<(Window, Id), CustomerAccumulator> = BTreeMap::new();
    let mut devices: BTreeMap<(Window, Id, Id), DeviceAccumulator> = BTreeMap::new();
    let mut ids = WindowIds::default();
    let mut usage = Vec::new();
    for (_, mut list) in by_device {
        list.sort_by_key(|b| (b.first_at(), b.unit_epoch, b.sequence));
        let mut seen = HashSet::new();
        let mut memory = DeviceMemory::default();
        let mut faults = MeterFaults::default();
        for batch in list {
            if !seen.insert((batch.unit_epoch, batch.sequence)) {
                continue;
            }
            // `seen` dropped the duplicates: no sequence window to outgrow.
            memory.apply_new(batch, &mut faults, &mut usage);
        }
        for u in usage.drain(..) {
            for (i, spec) in config.windows.iter().enumerate() {
                let (start, end) = config.window_bounds(spec, &u.customer, u.sample.at);
                let seen = devices
                    .entry(((i, start, end), u.customer.clone(), u.device.clone()))
                    .or_default()
                    .add(&u, &mut ids);
                customers
                    .entry(((i, start, end), u.customer.clone()))
                    .or_default()
                    .add(&u, seen);
            }
        }
    }
    let customer_records = customers.into_iter().map(|(((i, start, end), _), acc)| {
        Output::Customer(acc.finish(&config.windows[i], start, end, config))
    });
    let device_records = devices
        .into_iter()
        .map(move |(((i, start, end), c, d), acc)| {
            let device = ids.device_of(&c, &d);
            Output::Device(acc.finish(&ids, device, &config.windows[i], start, end))
        });
    customer_records.chain(device_records).collect()
}
