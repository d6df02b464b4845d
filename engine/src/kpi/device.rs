//! Per-device window rollups, for fleet dashboards and device drill-down.

use serde::{Deserialize, Serialize};

use super::customer::ratio;
use super::interner::WindowIds;
use super::totals::Totals;
use crate::config::WindowSpec;
use crate::model::{EventTime, Id, MachineState, Usage};

/// A device's rollup over one closed window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceKpi {
    /// Customer id.
    pub customer: Id,
    /// Site id.
    pub site: Id,
    /// Device id.
    pub device: Id,
    /// Window label.
    pub window: Id,
    /// Window start, ms since the epoch.
    pub window_start: EventTime,
    /// Window end (exclusive), ms since the epoch.
    pub window_end: EventTime,
    /// Operating hours over the window's hours (0..1).
    pub utilisation: f64,
    /// Usage summed over the window's readings (hours, fuel, cycles,
    /// output, interventions, faults, readings).
    pub totals: Totals,
    /// Distinct operators logged in.
    pub distinct_operators: u32,
    /// Event time of the last reading in the window.
    pub last_seen: EventTime,
    /// Machine state at the last reading in the window.
    pub last_state: MachineState,
    /// 0 when first emitted; each restatement (telemetry that arrived after
    /// the window closed, within the correction horizon) raises it.
    pub revision: u32,
}

/// What a reading changed about its device in a window: the customer's
/// window counts a device once as reporting and once as active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSeen {
    /// The device's first reading in the window.
    pub first: bool,
    /// The device's first reading with operating hours in the window.
    pub first_active: bool,
}

/// Running totals of one device in one window: 96 bytes and no heap (up to
/// two operators), since a worker holds one per device and open window.
/// Sites and operators are indices into the worker's [`WindowIds`].
#[derive(Debug, Default, Clone)]
pub struct DeviceAccumulator {
    totals: Totals,
    last_seen: EventTime,
    operators: Operators,
    /// Site of the first reading in the window.
    site: u32,
    last_state: MachineState,
    /// Some reading had operating hours.
    active: bool,
}

impl DeviceAccumulator {
    /// Adds one reading, interning its site and operator in `ids`.
    pub fn add(&mut self, usage: &Usage, ids: &mut WindowIds) -> DeviceSeen {
        let first = self.totals.samples == 0;
        if first {
            self.site = ids.site(&usage.site);
        }
        if let Some(operator) = &usage.sample.operator {
            self.operators.insert(ids.operator(operator));
        }
        let first_active = usage.increments.operating_hours > 0.0 && !self.active;
        self.active |= first_active;
        self.totals.add(usage);
        if usage.sample.at >= self.last_seen {
            self.last_seen = usage.sample.at;
            self.last_state = usage.sample.state;
        }
        DeviceSeen {
            first,
            first_active,
        }
    }

    /// Finishes the window `[start, end)` of `window` for `device` (an index
    /// of `ids`).
    pub fn finish(
        self,
        ids: &WindowIds,
        device: u32,
        window: &WindowSpec,
        start: EventTime,
        end: EventTime,
    ) -> DeviceKpi {
        let (customer, device) = ids.device_ids(device).clone();
        DeviceKpi {
            customer,
            site: ids.site_id(self.site).clone(),
            device,
            window: window.name.clone(),
            window_start: start,
            window_end: end,
            utilisation: ratio(
                self.totals.operating_hours,
                (end - start) as f64 / crate::config::HOUR_MS as f64,
            ),
            totals: self.totals,
            distinct_operators: self.operators.len(),
            last_seen: self.last_seen,
            last_state: self.last_state,
            revision: 0,
        }
    }
}

/// A set of operator indices: two inline (0 = empty, else index + 1), more
/// in a boxed list (a machine changes hands a few times a day at most).
#[derive(Debug, Default, Clone)]
struct Operators {
    inline: [u32; 2],
    more: Option<Box<MoreOperators>>,
}

/// Operators beyond the first two, behind one pointer in [`Operators`].
#[derive(Debug, Default, Clone)]
struct MoreOperators(Vec<u32>);

impl Operators {
    fn insert(&mut self, operator: u32) {
        let id = operator + 1;
        for slot in &mut self.inline {
            if *slot == id {
                return;
            }
            if *slot == 0 {
                *slot = id;
                return;
            }
        }
        let more = &mut self.more.get_or_insert_default().0;
        if !more.contains(&id) {
            more.push(id);
        }
    }

    fn len(&self) -> u32 {
        let inline = self.inline.iter().filter(|&&id| id != 0).count();
        (inline + self.more.as_ref().map_or(0, |m| m.0.len())) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_are_counted_once_inline_and_beyond() {
        let mut set = Operators::default();
        for op in [3, 0, 3, 7, 0, 7, 9, 9, 3] {
            set.insert(op);
        }
        assert_eq!(set.len(), 4);
        assert_eq!(std::mem::size_of::<DeviceAccumulator>(), 96);
    }
}
