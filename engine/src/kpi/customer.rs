//! Per-customer window KPIs: adoption (depth, breadth, utilisation) and value.

use serde::{Deserialize, Serialize};

use super::device::DeviceSeen;
use super::totals::Totals;
use crate::config::{EngineConfig, WindowSpec};
use crate::model::{EventTime, Id, Usage};

/// A customer's KPIs over one closed window. Field names are the store's
/// field names (docs/SCHEMA.md).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CustomerKpi {
    /// Customer id.
    pub customer: Id,
    /// Window label (`1h`, `1d`).
    pub window: Id,
    /// Window start, ms since the epoch.
    pub window_start: EventTime,
    /// Window end (exclusive), ms since the epoch.
    pub window_end: EventTime,
    /// Devices in the contract; utilisation's denominator.
    pub devices_purchased: u32,
    /// Devices that sent at least one reading in the window.
    pub reporting_devices: u32,
    /// Devices that logged operating hours in the window.
    pub active_devices: u32,
    /// Operating hours over available hours of purchased devices (0..1).
    pub utilisation: f64,
    /// Usage summed over the window's readings (hours, fuel, cycles,
    /// output, interventions, faults, readings).
    pub totals: Totals,
    /// Distinct operators logged in.
    pub distinct_operators: u32,
    /// Distinct advanced features used.
    pub advanced_features_used: u32,
    /// Advanced features used over advanced features in the catalog (0..1).
    pub advanced_feature_share: f64,
    /// 0 when first emitted; each restatement (telemetry that arrived after
    /// the window closed, within the correction horizon) raises it.
    pub revision: u32,
    /// Event time of the earliest reading (not stored; activation).
    #[serde(skip)]
    pub first_seen: EventTime,
    /// Operating hours per operator (not stored; champion detection).
    #[serde(skip)]
    pub operator_hours: Vec<(Id, f64)>,
    /// Advanced features used, as a bit set over the catalog (not stored).
    #[serde(skip)]
    pub advanced_features: u32,
}

/// Running totals of one customer in one window, or one worker's part of
/// them. Devices are counted, not collected: a device's readings are all on
/// one worker (the device-state exchange routes by device), which tells
/// (through [`DeviceSeen`]) when a device first reports or works in the
/// window, so the parts of different workers count disjoint devices.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CustomerAccumulator {
    reporting: u32,
    active: u32,
    operators: foldhash::HashMap<Id, f64>,
    advanced_features: u32,
    first_seen: Option<EventTime>,
    totals: Totals,
    customer: Option<Id>,
}

impl CustomerAccumulator {
    /// Adds one reading; `seen` is what it changed about its device's window.
    pub fn add(&mut self, usage: &Usage, seen: DeviceSeen) {
        if self.customer.is_none() {
            self.customer = Some(usage.customer.clone());
        }
        self.reporting += u32::from(seen.first);
        self.active += u32::from(seen.first_active);
        if let Some(operator) = &usage.sample.operator {
            match self.operators.get_mut(operator) {
                Some(hours) => *hours += usage.increments.operating_hours,
                None => {
                    self.operators
                        .insert(operator.clone(), usage.increments.operating_hours);
                }
            }
        }
        self.first_seen = Some(
            self.first_seen
                .map_or(usage.sample.at, |f| f.min(usage.sample.at)),
        );
        self.advanced_features |= usage.sample.advanced_features;
        self.totals.add(usage);
    }

    /// Adds another worker's part of the same customer and window.
    pub fn merge(&mut self, other: Self) {
        if self.customer.is_none() {
            self.customer = other.customer;
        }
        self.reporting += other.reporting;
        self.active += other.active;
        for (operator, hours) in other.operators {
            *self.operators.entry(operator).or_default() += hours;
        }
        self.first_seen = match (self.first_seen, other.first_seen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.advanced_features |= other.advanced_features;
        self.totals.merge(other.totals);
    }

    /// Finishes the window `[start, end)` of `window`.
    pub fn finish(
        self,
        window: &WindowSpec,
        start: EventTime,
        end: EventTime,
        config: &EngineConfig,
    ) -> CustomerKpi {
        let customer = self.customer.unwrap_or_else(|| "".into());
        let reporting_devices = self.reporting;
        let devices_purchased = config
            .customers
            .get(&*customer)
            .map_or(reporting_devices, |c| c.contract.devices_purchased);
        let available_hours =
            f64::from(devices_purchased) * (end - start) as f64 / crate::config::HOUR_MS as f64;
        let advanced_in_catalog = config.features.advanced.len() as u32;
        let advanced_features_used = self.advanced_features.count_ones();
        let mut operator_hours: Vec<(Id, f64)> = self.operators.into_iter().collect();
        operator_hours.sort_by(|a, b| a.0.cmp(&b.0));
        CustomerKpi {
            customer,
            window: window.name.clone(),
            window_start: start,
            window_end: end,
            devices_purchased,
            reporting_devices,
            active_devices: self.active,
            utilisation: ratio(self.totals.operating_hours, available_hours),
            totals: self.totals,
            distinct_operators: operator_hours.len() as u32,
            advanced_features_used,
            advanced_feature_share: ratio(
                f64::from(advanced_features_used),
                f64::from(advanced_in_catalog),
            ),
            revision: 0,
            first_seen: self.first_seen.unwrap_or(start),
            operator_hours,
            advanced_features: self.advanced_features,
        }
    }
}

/// `num / den`, or 0 when there is nothing to divide by.
pub(crate) fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 0.0 }
}
