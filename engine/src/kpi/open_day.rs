//! The open day so far, for the provisional health score: a customer's
//! hourly windows of the day not closed yet, summed, and read as a whole
//! day at the pace so far. The day's close replaces the provisional score
//! with the real one.
//!
//! At the pace so far: every additive figure (hours, fuel, cycles, faults,
//! readings) is scaled by the day's length over the hours taken in, so
//! utilisation, the usage trend and daily outcome totals are not read as a
//! collapse in the morning. Ratios (faults per hour) are unchanged by it.
//! A fleet that works in one shift is still under-read before the shift and
//! over-read after it: the score is marked provisional for that reason.

use std::collections::{HashMap, HashSet};

use super::customer::ratio;
use super::{CustomerKpi, DeviceKpi, Totals};
use crate::config::HOUR_MS;
use crate::model::{EventTime, Id};

/// One customer's open day, as far as its hourly windows have closed.
#[derive(Debug, Clone)]
pub struct OpenDay {
    start: EventTime,
    end: EventTime,
    /// End of the latest hour taken in.
    through: EventTime,
    totals: Totals,
    reporting: HashSet<Id>,
    active: HashSet<Id>,
    operators: HashMap<Id, f64>,
    advanced_features: u32,
    advanced_in_catalog: u32,
    first_seen: Option<EventTime>,
    devices_purchased: u32,
    /// Hours taken in since the last provisional score.
    pub changed: bool,
}

impl OpenDay {
    /// The day `[start, end)`, nothing taken in yet.
    pub fn new(start: EventTime, end: EventTime) -> Self {
        Self {
            start,
            end,
            through: start,
            totals: Totals::default(),
            reporting: HashSet::new(),
            active: HashSet::new(),
            operators: HashMap::new(),
            advanced_features: 0,
            advanced_in_catalog: 0,
            first_seen: None,
            devices_purchased: 0,
            changed: false,
        }
    }

    /// Start of the day.
    pub fn start(&self) -> EventTime {
        self.start
    }

    /// Whether `[start, end)` lies in the day.
    pub fn holds(&self, start: EventTime, end: EventTime) -> bool {
        start >= self.start && end <= self.end
    }

    /// Adds one of the customer's hourly windows.
    pub fn add_hour(&mut self, hour: &CustomerKpi) {
        self.through = self.through.max(hour.window_end);
        self.totals.merge(hour.totals);
        for (operator, hours) in &hour.operator_hours {
            *self.operators.entry(operator.clone()).or_default() += hours;
        }
        self.advanced_features |= hour.advanced_features;
        if hour.advanced_feature_share > 0.0 {
            let catalog = f64::from(hour.advanced_features_used) / hour.advanced_feature_share;
            self.advanced_in_catalog = catalog.round() as u32;
        }
        if hour.totals.samples > 0 {
            let first = self
                .first_seen
                .map_or(hour.first_seen, |f| f.min(hour.first_seen));
            self.first_seen = Some(first);
        }
        self.devices_purchased = hour.devices_purchased;
        self.changed = true;
    }

    /// Adds one of the customer's devices' hourly windows: which devices
    /// reported and worked, counted once over the day.
    pub fn add_device_hour(&mut self, hour: &DeviceKpi) {
        if hour.totals.samples > 0 {
            self.reporting.insert(hour.device.clone());
        }
        if hour.totals.operating_hours > 0.0 {
            self.active.insert(hour.device.clone());
        }
    }

    /// The day as a daily window at the pace so far; `None` before an hour
    /// with readings.
    pub fn at_pace(&self, customer: &Id, window: &Id) -> Option<CustomerKpi> {
        let elapsed = self.through.saturating_sub(self.start);
        if elapsed == 0 {
            return None;
        }
        self.scaled(
            customer,
            window,
            (self.end - self.start) as f64 / elapsed as f64,
        )
    }

    /// The day as a daily window holding what its hours so far hold, not
    /// extrapolated: what a rule may fire on before the day closes (its
    /// counts are those of readings that arrived).
    pub fn so_far(&self, customer: &Id, window: &Id) -> Option<CustomerKpi> {
        self.scaled(customer, window, 1.0)
    }

    fn scaled(&self, customer: &Id, window: &Id, pace: f64) -> Option<CustomerKpi> {
        if self.totals.samples == 0 {
            return None;
        }
        let scale = |n: u64| (n as f64 * pace).round() as u64;
        let t = &self.totals;
        let totals = Totals {
            operating_hours: t.operating_hours * pace,
            idle_hours: t.idle_hours * pace,
            fuel_litres: t.fuel_litres * pace,
            cycles: scale(t.cycles),
            output_units: t.output_units * pace,
            manual_interventions: scale(t.manual_interventions),
            fault_count: scale(t.fault_count),
            samples: scale(t.samples),
        };
        let available =
            f64::from(self.devices_purchased) * (self.end - self.start) as f64 / HOUR_MS as f64;
        let mut operator_hours: Vec<(Id, f64)> = (self.operators.iter())
            .map(|(o, h)| (o.clone(), h * pace))
            .collect();
        operator_hours.sort_by(|a, b| a.0.cmp(&b.0));
        let used = self.advanced_features.count_ones();
        Some(CustomerKpi {
            customer: customer.clone(),
            window: window.clone(),
            window_start: self.start,
            window_end: self.end,
            devices_purchased: self.devices_purchased,
            reporting_devices: self.reporting.len() as u32,
            active_devices: self.active.len() as u32,
            utilisation: ratio(totals.operating_hours, available),
            totals,
            distinct_operators: operator_hours.len() as u32,
            advanced_features_used: used,
            advanced_feature_share: ratio(f64::from(used), f64::from(self.advanced_in_catalog)),
            revision: 0,
            first_seen: self.first_seen.unwrap_or(self.start),
            operator_hours,
            advanced_features: self.advanced_features,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(h: u64, operating_hours: f64, faults: u64) -> CustomerKpi {
        CustomerKpi {
            customer: "c".into(),
            window: "1h".into(),
            window_start: h * HOUR_MS,
            window_end: (h + 1) * HOUR_MS,
            devices_purchased: 4,
            totals: Totals {
                operating_hours,
                fault_count: faults,
                samples: 8,
                ..Totals::default()
            },
            first_seen: h * HOUR_MS + 60_000,
            ..CustomerKpi::default()
        }
    }

    #[test]
    fn six_hours_of_a_day_are_read_at_their_pace() {
        let mut day = OpenDay::new(0, 24 * HOUR_MS);
        assert!(day.at_pace(&"c".into(), &"1d".into()).is_none());
        // Hours 0-5, with hour 3 silent (no window): through 06:00.
        for h in [0, 1, 2, 4, 5] {
            day.add_hour(&hour(h, 2.0, 1));
        }
        let kpi = day.at_pace(&"c".into(), &"1d".into()).unwrap();
        // 10 operating hours in 6 hours: 40 in the day; 4 devices x 24 h.
        assert_eq!(kpi.totals.operating_hours, 40.0);
        assert_eq!(kpi.utilisation, 40.0 / 96.0);
        assert_eq!(kpi.totals.fault_count, 20);
        assert_eq!(kpi.first_seen, 60_000);
        assert_eq!((kpi.window_start, kpi.window_end), (0, 24 * HOUR_MS));
        // Faults per operating hour are what the hours had.
        assert_eq!(
            kpi.totals.fault_count as f64 / kpi.totals.operating_hours,
            0.5
        );
    }
}
