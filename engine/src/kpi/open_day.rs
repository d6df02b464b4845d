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
//!
//! Hours are placed by the customer's local clock on a day of 23 or 25 hours
//! (a daylight-saving change): 10:00 is 10:00 whether the night was an hour
//! shorter or longer, so the usual day is read at the right hour.

use std::collections::{HashMap, HashSet};

use super::customer::ratio;
use super::day_shape::{DayShape, TOO_EARLY};
use super::{CustomerKpi, DeviceKpi, Totals};
use crate::config::{DAY_MS, HOUR_MS};
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
    /// The customer's time zone, on a day that is not 24 hours long.
    zone: Option<jiff::tz::TimeZone>,
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
            zone: None,
        }
    }

    /// The day in the customer's time zone: on a daylight-saving day its
    /// hours are placed by the local clock.
    pub fn in_zone(mut self, zone: Option<&jiff::tz::TimeZone>) -> Self {
        if self.end - self.start != DAY_MS {
            self.zone = zone.cloned();
        }
        self
    }

    /// The hour of the day that holds `at`: hours since the start, or on a
    /// daylight-saving day the local clock's hour (the repeated hour of a
    /// 25-hour day is one, the skipped hour of a 23-hour day none).
    fn slot(&self, at: EventTime) -> usize {
        let local = self.zone.as_ref().and_then(|zone| {
            let at = jiff::Timestamp::from_millisecond(i64::try_from(at).ok()?).ok()?;
            Some(at.to_zoned(zone.clone()).hour() as usize)
        });
        local.unwrap_or((at.saturating_sub(self.start) / HOUR_MS) as usize)
    }

    /// Operating hours per hour of the day taken in (hour 0 the first; by
    /// the local clock on a daylight-saving day).
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
        let slot = self.slot(hour.window_start);
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
        let pace = match shape.done_by(self.slot(self.through - 1) + 1) {
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

    /// Berlin's days of 2026-03-29 (23 hours) and 2026-10-25 (25 hours): a
    /// fleet working 08:00 to 16:00 local time, read at 12:00 local, has
    /// done half its usual day, as on any other day.
    #[test]
    fn a_daylight_saving_day_is_read_by_the_local_clock() {
        let zone = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let midnight = |date: &str| -> EventTime {
            let day: jiff::civil::Date = date.parse().unwrap();
            let at = day.to_zoned(zone.clone()).unwrap().timestamp();
            at.as_millisecond() as EventTime
        };
        let local_hour = |at: EventTime| {
            let at = jiff::Timestamp::from_millisecond(at as i64).unwrap();
            at.to_zoned(zone.clone()).hour()
        };
        let hour_at = |start: EventTime, operating_hours: f64| CustomerKpi {
            window_start: start,
            window_end: start + HOUR_MS,
            ..hour(0, operating_hours, 0)
        };
        // The usual day, learned on a day of 24 hours.
        let usual_start = midnight("2026-03-27");
        let mut usual = OpenDay::new(usual_start, midnight("2026-03-28")).in_zone(Some(&zone));
        for h in 0..24 {
            let start = usual_start + h * HOUR_MS;
            let working = (8..16).contains(&local_hour(start));
            usual.add_hour(&hour_at(start, if working { 1.0 } else { 0.0 }));
        }
        let mut shape = DayShape::default();
        shape.learn(usual.hours(), 8.0);
        let (c, d) = (&"c".into(), &"1d".into());
        for (date, next, hours) in [
            ("2026-03-29", "2026-03-30", 23),
            ("2026-10-25", "2026-10-26", 25),
        ] {
            let (start, end) = (midnight(date), midnight(next));
            assert_eq!(end - start, hours * HOUR_MS, "{date}");
            let mut day = OpenDay::new(start, end).in_zone(Some(&zone));
            let mut whole = OpenDay::new(start, end).in_zone(Some(&zone));
            for h in 0..hours {
                let start = start + h * HOUR_MS;
                let working = (8..16).contains(&local_hour(start));
                let kpi = hour_at(start, if working { 1.0 } else { 0.0 });
                if local_hour(start) < 12 {
                    day.add_hour(&kpi);
                }
                whole.add_hour(&kpi);
            }
            let read = day.at_pace(c, d, &shape).unwrap().totals.operating_hours;
            assert_eq!(read, 8.0, "{date}: 4 hours by 12:00 local");
            // The day teaches the same shape as a day of 24 hours.
            let mut learned = DayShape::default();
            learned.learn(whole.hours(), 8.0);
            assert_eq!(learned.done_by(12), Some(0.5), "{date}");
            // Without the zone the hours since midnight would be read.
            let naive = OpenDay {
                zone: None,
                ..day.clone()
            };
            let off = naive.at_pace(c, d, &shape).unwrap().totals.operating_hours;
            assert_ne!(off, 8.0, "{date}");
        }
    }
}
