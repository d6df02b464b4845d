//! One open window (one length, one end) of every device and customer a
//! worker holds, laid out for a million devices: device accumulators in one
//! dense vector, found through a table of 4-byte positions keyed by the
//! device's index, instead of a hash map entry per device with its ids.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

use super::chunked::Chunked;
use super::customer::CustomerAccumulator;
use super::device::{DeviceAccumulator, DeviceKpi};
use super::interner::WindowIds;
use crate::config::WindowSpec;
use crate::model::{EventTime, Id, Usage};

/// What a worker hands on when one of its windows closes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WindowPart {
    /// A device's finished window: a device's readings are all on one worker.
    Device(DeviceKpi),
    /// This worker's part of a customer's window, to merge with the other
    /// workers' parts.
    Customer(CustomerPart),
}

/// One worker's part of a customer's window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomerPart {
    /// Customer id.
    pub customer: Id,
    /// Index of the window's length in `EngineConfig::windows`.
    pub window: usize,
    /// The customer's window start (days follow the customer's time zone).
    pub start: EventTime,
    /// The part's totals.
    pub totals: CustomerAccumulator,
}

/// Open window of every device and customer of one worker.
#[derive(Debug, Default)]
pub struct OpenWindow {
    /// Positions in `devices`, hashed by device index.
    positions: HashTable<u32>,
    /// (device index, accumulator), in order of first reading.
    devices: Chunked<(u32, DeviceAccumulator)>,
    /// Per customer: its window start and totals.
    customers: foldhash::HashMap<Id, (EventTime, CustomerAccumulator)>,
}

/// Hashes device indices for `positions` (fixed: indices are not chosen by
/// anyone outside).
fn hash_index(device: u32) -> u64 {
    foldhash::fast::FixedState::default().hash_one(device)
}

impl OpenWindow {
    /// Adds a reading of `device` (its index in `ids`) to the window that
    /// starts at `start` for the reading's customer.
    pub fn add(&mut self, ids: &mut WindowIds, device: u32, start: EventTime, usage: &Usage) {
        let devices = &self.devices;
        let position = match self
            .positions
            .find(hash_index(device), |&p| devices.get(p as usize).0 == device)
        {
            Some(&p) => p as usize,
            None => {
                let p = self.devices.push((device, DeviceAccumulator::default()));
                let devices = &self.devices;
                self.positions
                    .insert_unique(hash_index(device), p as u32, |&q| {
                        hash_index(devices.get(q as usize).0)
                    });
                p
            }
        };
        let seen = self.devices.get_mut(position).1.add(usage, ids);
        match self.customers.get_mut(&usage.customer) {
            Some((_, customer)) => customer.add(usage, seen),
            None => {
                let mut customer = CustomerAccumulator::default();
                customer.add(usage, seen);
                self.customers
                    .insert(usage.customer.clone(), (start, customer));
            }
        }
    }

    /// Closes the window of length `spec` (index `window` in the config)
    /// ending at `end`: every device's record, then every customer's part.
    pub fn finish(
        self,
        ids: &WindowIds,
        window: usize,
        spec: &WindowSpec,
        end: EventTime,
        mut give: impl FnMut(WindowPart),
    ) {
        let Self {
            positions,
            devices,
            customers,
        } = self;
        drop(positions);
        for (device, acc) in devices {
            let customer = &ids.device_ids(device).0;
            let start = customers.get(customer).map_or(end, |(start, _)| *start);
            give(WindowPart::Device(
                acc.finish(ids, device, spec, start, end),
            ));
        }
        for (customer, (start, totals)) in customers {
            give(WindowPart::Customer(CustomerPart {
                customer,
                window,
                start,
                totals,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Increments, MachineState, Sample};

    fn usage(customer: &str, device: &str, at: EventTime, hours: f64) -> Usage {
        Usage {
            customer: customer.into(),
            site: "s".into(),
            device: device.into(),
            sample: Sample {
                at,
                state: MachineState::Running,
                cycles: 1,
                ..Sample::default()
            },
            increments: Increments {
                operating_hours: hours,
                ..Increments::default()
            },
        }
    }

    #[test]
    fn devices_are_counted_once_per_window_and_customer() {
        let (mut ids, mut window) = (WindowIds::default(), OpenWindow::default());
        let readings = [
            usage("a", "d1", 10, 0.0),
            usage("a", "d1", 20, 0.5),
            usage("a", "d2", 30, 0.0),
            usage("b", "d1", 40, 0.25),
            usage("a", "d1", 50, 0.5),
        ];
        for u in &readings {
            let device = ids.device(u);
            window.add(&mut ids, device, 0, u);
        }
        let mut parts = Vec::new();
        let spec = WindowSpec::new("1h", crate::config::HOUR_MS);
        window.finish(&ids, 0, &spec, 100, |p| parts.push(p));
        let devices: Vec<(String, String, u64)> = parts
            .iter()
            .filter_map(|p| match p {
                WindowPart::Device(d) => Some((
                    d.customer.to_string(),
                    d.device.to_string(),
                    d.totals.samples,
                )),
                WindowPart::Customer(_) => None,
            })
            .collect();
        assert_eq!(
            devices,
            [("a", "d1", 3), ("a", "d2", 1), ("b", "d1", 1)].map(|(c, d, n)| (
                c.into(),
                d.into(),
                n
            ))
        );
        let config = crate::EngineConfig::default();
        let mut customers: Vec<(String, u32, u32)> = parts
            .into_iter()
            .filter_map(|p| match p {
                WindowPart::Customer(c) => {
                    let k = c.totals.finish(&spec, c.start, 100, &config);
                    Some((
                        k.customer.to_string(),
                        k.reporting_devices,
                        k.active_devices,
                    ))
                }
                WindowPart::Device(_) => None,
            })
            .collect();
        customers.sort();
        assert_eq!(customers, [("a".into(), 2, 1), ("b".into(), 1, 1)]);
    }
}
