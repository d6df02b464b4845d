//! Per-device window rollups, for fleet dashboards and device drill-down.

use serde::{Deserialize, Serialize};

use super::WindowAccumulator;
use super::customer::ratio;
use super::totals::Totals;
use crate::config::{EngineConfig, WindowSpec};
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
    /// Operating hours.
    pub operating_hours: f64,
    /// Idle hours.
    pub idle_hours: f64,
    /// Fuel used, litres.
    pub fuel_litres: f64,
    /// Work cycles.
    pub cycles: u64,
    /// Output units.
    pub output_units: f64,
    /// Manual interventions.
    pub manual_interventions: u64,
    /// Distinct operators logged in.
    pub distinct_operators: u32,
    /// Faults raised.
    pub fault_count: u64,
    /// Readings received.
    pub samples: u64,
    /// Event time of the last reading in the window.
    pub last_seen: EventTime,
    /// Machine state at the last reading in the window.
    pub last_state: MachineState,
}

/// Running totals of one device in one window.
#[derive(Debug, Default)]
pub struct DeviceAccumulator {
    ids: Option<(Id, Id, Id)>,
    operators: foldhash::HashSet<Id>,
    totals: Totals,
    last_seen: EventTime,
    last_state: MachineState,
}

impl WindowAccumulator for DeviceAccumulator {
    type Record = DeviceKpi;

    fn add(&mut self, usage: &Usage) {
        if self.ids.is_none() {
            self.ids = Some((
                usage.customer.clone(),
                usage.site.clone(),
                usage.device.clone(),
            ));
        }
        if let Some(operator) = &usage.operator
            && !self.operators.contains(operator)
        {
            self.operators.insert(operator.clone());
        }
        self.totals.add(usage);
        if usage.at >= self.last_seen {
            self.last_seen = usage.at;
            self.last_state = usage.state;
        }
    }

    fn merge(&mut self, other: Self) {
        if self.ids.is_none() {
            self.ids = other.ids;
        }
        self.operators.extend(other.operators);
        self.totals.merge(other.totals);
        if other.totals.samples > 0 && other.last_seen >= self.last_seen {
            self.last_seen = other.last_seen;
            self.last_state = other.last_state;
        }
    }

    fn finish(
        self,
        window: &WindowSpec,
        start: EventTime,
        end: EventTime,
        _config: &EngineConfig,
    ) -> DeviceKpi {
        let (customer, site, device) = self
            .ids
            .unwrap_or_else(|| ("".into(), "".into(), "".into()));
        DeviceKpi {
            customer,
            site,
            device,
            window: window.name.clone(),
            window_start: start,
            window_end: end,
            utilisation: ratio(
                self.totals.operating_hours,
                (end - start) as f64 / crate::config::HOUR_MS as f64,
            ),
            operating_hours: self.totals.operating_hours,
            idle_hours: self.totals.idle_hours,
            fuel_litres: self.totals.fuel_litres,
            cycles: self.totals.cycles,
            output_units: self.totals.output_units,
            manual_interventions: self.totals.manual_interventions,
            distinct_operators: self.operators.len() as u32,
            fault_count: self.totals.fault_count,
            samples: self.totals.samples,
            last_seen: self.last_seen,
            last_state: self.last_state,
        }
    }
}
