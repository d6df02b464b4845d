//! The open day so far, for the provisional health score: a customer's
//! hourly windows of the day not closed yet, summed, and read as a whole
//! day at the pace of the customer's usual day. The day's close replaces
//! the provisional score with the real one.
//!
//! At that pace: every additive figure (hours, fuel, cycles, faults,
//! readings) is scaled by one over the share of the customer's usual day
//! its hours so far cover ([`super::day_shape::DayShape`]: a one-shift
//! fleet has done half its day by mid-shift), or, before a day was learned,
//! by the day's length over the hours taken in; so utilisation, the usage
//! trend and daily outcome totals are not read as a collapse in the
//! morning. Ratios (faults per hour) are unchanged by it. Before a tenth of
//! the usual day's work is due, no score is read.

use std::collections::{HashMap, HashSet};

use super::customer::ratio;
use super::day_shape::{DayShape, TOO_EARLY};
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
    /// Operating hours per hour of the day, for the customer's [`DayShape`].
    hours: Vec<f64>,
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
            hours: Vec::new(),
            changed: false,
        }
    }

    /// Operating hours per hour of the day taken in (hour 0 the first).
    pub fn hours(&self) -> &[f64] {
        &self.hours
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
        let slot = (hour.window_start.saturating_sub(self.start) / HOUR_MS) as usize;
        if self.hours.len() <= slot {
            self.hours.resize(slot + 1, 0.0);
        }
        self.hours[slot] += hour.totals.operating_hours;
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

    /// The day as a daily window at the pace of the customer's usual day
    /// (`shape`; uniform before one was learned); `None` before an hour with
    /// readings, or while less than [`TOO_EARLY`] of the usual day's work
    /// is due.
    pub fn at_pace(&self, customer: &Id, window: &Id, shape: &DayShape) -> Option<CustomerKpi> {
        let elapsed = self.through.saturating_sub(self.start);
        if elapsed == 0 {
            return None;
        }
        let pace = match shape.done_by(elapsed.div_ceil(HOUR_MS) as usize) {
            None => (self.end - self.start) as f64 / elapsed as f64,
            Some(done) if done < TOO_EARLY => return None,
            Some(done) => 1.0 / done,
        };
        self.scaled(customer, window, pace)
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
        let uniform = DayShape::default();
        assert!(day.at_pace(&"c".into(), &"1d".into(), &uniform).is_none());
        // Hours 0-5, with hour 3 silent (no window): through 06:00.
        for h in [0, 1, 2, 4, 5] {
            day.add_hour(&hour(h, 2.0, 1));
        }
        let kpi = day.at_pace(&"c".into(), &"1d".into(), &uniform).unwrap();
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

    #[test]
    fn a_one_shift_fleet_is_read_at_the_pace_of_its_usual_day() {
        // Usually 8 operating hours from 08:00 to 16:00.
        let mut usual = OpenDay::new(0, 24 * HOUR_MS);
        for h in 8..16 {
            usual.add_hour(&hour(h, 1.0, 0));
        }
        let mut shape = DayShape::default();
        shape.learn(usual.hours(), 8.0);
        let (c, d) = (&"c".into(), &"1d".into());
        let mut day = OpenDay::new(0, 24 * HOUR_MS);
        // Heartbeats only before the shift: none of the usual work is due.
        for h in 0..8 {
            day.add_hour(&hour(h, 0.0, 0));
        }
        assert!(day.at_pace(c, d, &shape).is_none());
        // Two hours into the shift, a quarter of the day's work is done: a
        // whole day at this pace is the usual 8 hours (read uniformly, 2 h
        // in 10 h make 4.8).
        let uniform = DayShape::default();
        for h in 8..10 {
            day.add_hour(&hour(h, 1.0, 0));
        }
        assert_eq!(
            day.at_pace(c, d, &shape).unwrap().totals.operating_hours,
            8.0
        );
        assert_eq!(
            day.at_pace(c, d, &uniform).unwrap().totals.operating_hours,
            4.8
        );
        // After the shift: the day's 8 hours (read uniformly, 12).
        for h in 10..16 {
            day.add_hour(&hour(h, 1.0, 0));
        }
        let at_16 = day.at_pace(c, d, &shape).unwrap();
        assert_eq!(at_16.totals.operating_hours, 8.0);
        assert_eq!(
            day.at_pace(c, d, &uniform).unwrap().totals.operating_hours,
            12.0
        );
    }
}
