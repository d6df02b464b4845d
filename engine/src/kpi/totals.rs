//! The additive usage totals a customer window and a device window both
//! keep: summed reading by reading, merged across workers, and carried as
//! they are in [`CustomerKpi`](super::CustomerKpi) and
//! [`DeviceKpi`](super::DeviceKpi).

use serde::{Deserialize, Serialize};

use crate::model::Usage;

/// Sums over the readings of one window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Operating hours.
    pub operating_hours: f64,
    /// Idle hours.
    pub idle_hours: f64,
    /// Fuel used, litres.
    pub fuel_litres: f64,
    /// Work cycles.
    pub cycles: u64,
    /// Output units (tons, parts, inspections: per customer).
    pub output_units: f64,
    /// Manual interventions.
    pub manual_interventions: u64,
    /// Faults raised.
    pub fault_count: u64,
    /// Readings received (after deduplication).
    pub samples: u64,
}

impl Totals {
    /// Adds one reading.
    pub fn add(&mut self, usage: &Usage) {
        let (added, sample) = (&usage.increments, &usage.sample);
        self.operating_hours += added.operating_hours;
        self.idle_hours += added.idle_hours;
        self.fuel_litres += added.fuel_litres;
        self.cycles += u64::from(sample.cycles);
        self.output_units += sample.output_units;
        self.manual_interventions += u64::from(sample.manual_interventions);
        self.fault_count += u64::from(sample.faults);
        self.samples += 1;
    }

    /// Adds another window part's totals.
    pub fn merge(&mut self, other: Totals) {
        self.operating_hours += other.operating_hours;
        self.idle_hours += other.idle_hours;
        self.fuel_litres += other.fuel_litres;
        self.cycles += other.cycles;
        self.output_units += other.output_units;
        self.manual_interventions += other.manual_interventions;
        self.fault_count += other.fault_count;
        self.samples += other.samples;
    }
}
