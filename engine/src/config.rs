//! What the engine needs to know besides telemetry: windows, timestamp
//! granularity, the feature catalog and the customers' contracts.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::customer::CustomerSpec;
use crate::model::EventTime;

/// One hour in event-time milliseconds.
pub const HOUR_MS: u64 = 3_600_000;
/// One day in event-time milliseconds.
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// A tumbling event-time window length, with the label stores and APIs use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Label, e.g. `1h` or `1d`.
    pub name: Arc<str>,
    /// Length in milliseconds.
    pub length_ms: u64,
}

impl WindowSpec {
    /// A window of `length_ms`, labelled `name`.
    pub fn new(name: &str, length_ms: u64) -> Self {
        Self {
            name: name.into(),
            length_ms,
        }
    }

    /// The same window with a label of its own: each worker stamps its
    /// records with its own copy, so cloning and dropping the label for every
    /// record does not bounce one reference count between cores.
    pub fn own_copy(&self) -> Self {
        Self {
            name: Arc::from(&*self.name),
            length_ms: self.length_ms,
        }
    }

    /// Start of the window that holds `at`, aligned to the epoch.
    pub fn start_of(&self, at: EventTime) -> EventTime {
        at - at % self.length_ms
    }

    /// Whether a day holds a whole number of these windows (`1h`, `15m`, the
    /// day itself): such a window follows a customer's local day.
    pub fn nests_in_day(&self) -> bool {
        self.length_ms <= DAY_MS && DAY_MS.is_multiple_of(self.length_ms)
    }

    /// Bounds of the window that holds `at`: given `day` (the local day
    /// holding `at`, 23 to 25 hours long), the day itself for a daily
    /// window, or for one that nests in a day, counted from the day's start
    /// (the last one cut at its end); else aligned to the epoch.
    pub fn bounds(
        &self,
        day: Option<(EventTime, EventTime)>,
        at: EventTime,
    ) -> (EventTime, EventTime) {
        match day {
            Some(day) if self.length_ms == DAY_MS => day,
            Some((start, end)) if self.nests_in_day() => {
                let from = start + (at - start) / self.length_ms * self.length_ms;
                (from, (from + self.length_ms).min(end))
            }
            _ => {
                let start = self.start_of(at);
                (start, start + self.length_ms)
            }
        }
    }

    /// Length in hours.
    pub fn hours(&self) -> f64 {
        self.length_ms as f64 / HOUR_MS as f64
    }
}

/// Which features count as advanced (the rest are basic). Bits in
/// [`crate::Sample::advanced_features`] index this list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureCatalog {
    /// Advanced feature names, at most 32.
    pub advanced: Vec<String>,
}

impl Default for FeatureCatalog {
    fn default() -> Self {
        Self {
            advanced: [
                "eco_mode",
                "auto_grade_assist",
                "payload_weighing",
                "remote_diagnostics",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl FeatureCatalog {
    /// Bit of an advanced feature, `None` for a basic one.
    pub fn advanced_bit(&self, feature: &str) -> Option<u32> {
        self.advanced
            .iter()
            .position(|f| f == feature)
            .map(|i| 1u32 << i)
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Tumbling windows computed for every customer and device.
    pub windows: Vec<WindowSpec>,
    /// Granularity of timely timestamps, ms. Event times are floored to it, so
    /// progress tracking handles one timestamp per tick, not per sample.
    /// Every window length must be a multiple of it.
    pub tick_ms: u64,
    /// Advanced vs basic features.
    pub features: FeatureCatalog,
    /// Customers by id: contract, time zone, outcomes, milestones. A
    /// customer missing here gets usage KPIs only (devices purchased = devices
    /// reporting, UTC days) and no customer-success records.
    pub customers: HashMap<String, CustomerSpec>,
    /// Journey states restored at start and noted as days close.
    pub journeys: std::sync::Arc<crate::journeys::JourneyBoard>,
    /// Device memories restored at start and snapshotted on request.
    pub devices: std::sync::Arc<crate::devices::DeviceBoard>,
    /// Restated journeys handed to the customer-success operators.
    pub adoptions: std::sync::Arc<crate::adoption::AdoptionBoard>,
    /// How far the watermark trails the newest event time (ingest's
    /// `engine.allowed_lateness`): readings that recent may still arrive
    /// live, so a worker whose input is at `t` has seen everything before
    /// `t` plus it (the intraday rules judge the open day there).
    pub allowed_lateness_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            windows: vec![
                WindowSpec::new("1h", HOUR_MS),
                WindowSpec::new("1d", DAY_MS),
            ],
            tick_ms: 60_000,
            features: FeatureCatalog::default(),
            customers: HashMap::new(),
            journeys: Default::default(),
            devices: Default::default(),
            adoptions: Default::default(),
            allowed_lateness_ms: 2 * HOUR_MS,
        }
    }
}

/// An engine setting that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `tick_ms` is zero.
    #[error("engine tick must be longer than 0 ms")]
    ZeroTick,
    /// No window is configured.
    #[error("at least one window is required")]
    NoWindows,
    /// A window is not a whole number of ticks.
    #[error("window `{window}` ({length_ms} ms) is not a multiple of the tick ({tick_ms} ms)")]
    WindowNotMultipleOfTick {
        /// The window label.
        window: String,
        /// Its length.
        length_ms: u64,
        /// The tick.
        tick_ms: u64,
    },
    /// Two windows share a label.
    #[error("window label `{0}` is used twice")]
    DuplicateWindow(String),
    /// More than 32 advanced features.
    #[error("at most 32 advanced features are supported, {0} configured")]
    TooManyFeatures(usize),
}

impl EngineConfig {
    /// Checks the settings the dataflow relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tick_ms == 0 {
            return Err(ConfigError::ZeroTick);
        }
        if self.windows.is_empty() {
            return Err(ConfigError::NoWindows);
        }
        for (i, w) in self.windows.iter().enumerate() {
            if w.length_ms == 0 || w.length_ms % self.tick_ms != 0 {
                return Err(ConfigError::WindowNotMultipleOfTick {
                    window: w.name.to_string(),
                    length_ms: w.length_ms,
                    tick_ms: self.tick_ms,
                });
            }
            if self.windows[..i].iter().any(|o| o.name == w.name) {
                return Err(ConfigError::DuplicateWindow(w.name.to_string()));
            }
        }
        if self.features.advanced.len() > 32 {
            return Err(ConfigError::TooManyFeatures(self.features.advanced.len()));
        }
        Ok(())
    }

    /// The daily window, if one is configured: customer-success logic
    /// (health, milestones, alerts) runs once per closed day.
    pub fn day_window(&self) -> Option<&WindowSpec> {
        self.windows.iter().find(|w| w.length_ms == DAY_MS)
    }

    /// The hourly window, if configured: the open day is read from it.
    pub fn hour_window(&self) -> Option<&WindowSpec> {
        self.windows.iter().find(|w| w.length_ms == HOUR_MS)
    }

    /// Bounds of the window of `spec` that holds `at` for `customer`. For a
    /// customer with a time zone, the daily window is the local day (23 or
    /// 25 hours long on daylight-saving changes) and a shorter window that
    /// nests in a day (`1h`) is counted from its start, so every hour lies
    /// in one local day, in India's and central Australia's half-hour zones
    /// too (in a whole-hour zone, the hours are UTC hours). Other windows,
    /// and every window of a customer without a time zone, are aligned to
    /// the epoch (UTC).
    pub fn window_bounds(
        &self,
        spec: &WindowSpec,
        customer: &str,
        at: EventTime,
    ) -> (EventTime, EventTime) {
        let day = (spec.nests_in_day())
            .then(|| self.local_day(customer, at))
            .flatten();
        spec.bounds(day, at)
    }

    /// The local day holding `at` of a customer with a time zone other
    /// than UTC.
    fn local_day(&self, customer: &str, at: EventTime) -> Option<(EventTime, EventTime)> {
        local_day(self.zone(customer)?, at)
    }

    /// The time zone of `customer`, unless it has none or UTC.
    fn zone(&self, customer: &str) -> Option<&jiff::tz::TimeZone> {
        let zone = &self.customers.get(customer)?.timezone;
        (*zone != jiff::tz::TimeZone::UTC).then_some(zone)
    }

    /// The day of the portfolio a day of `customer` starting at `start`
    /// counts in: its local date ([`dated`]; UTC for a customer without a
    /// time zone).
    pub fn portfolio_day(&self, customer: &str, start: EventTime) -> EventTime {
        match self.customers.get(customer) {
            Some(c) => dated(&c.timezone, start),
            None => dated(&jiff::tz::TimeZone::UTC, start),
        }
    }

    /// Floors an event time to the tick.
    pub fn tick_of(&self, at: EventTime) -> EventTime {
        at - at % self.tick_ms
    }
}

/// The local day each device's newest reading fell in, by the device's
/// dense index: readings come in order, nearly all in the day of the one
/// before, and working a reading's day out from its customer's time zone
/// (the customer's lookup and a zone conversion) cost more than all the
/// rest of its windows' work.
#[derive(Debug, Default)]
pub struct LocalDays(Vec<KnownDay>);

/// A device's day: none known (`end` 0), a customer without a zone
/// (`start` `u64::MAX`), or `start..end`.
#[derive(Debug, Clone, Copy, Default)]
struct KnownDay {
    start: EventTime,
    end: EventTime,
}

impl LocalDays {
    /// Bounds of every window in [`EngineConfig::windows`] that holds a
    /// reading at `at` of `device` (its dense index) of `customer`, in that
    /// order, as [`EngineConfig::window_bounds`] gives them.
    pub fn window_bounds<'c>(
        &mut self,
        config: &'c EngineConfig,
        device: u32,
        customer: &str,
        at: EventTime,
    ) -> impl Iterator<Item = (EventTime, EventTime)> + 'c {
        let i = device as usize;
        if i >= self.0.len() {
            self.0.resize(i + 1, KnownDay::default());
        }
        let known = &mut self.0[i];
        let day = if known.start == EventTime::MAX {
            None
        } else if known.start <= at && at < known.end {
            Some((known.start, known.end))
        } else {
            match config.zone(customer) {
                None => {
                    known.start = EventTime::MAX;
                    None
                }
                Some(zone) => {
                    let day = local_day(zone, at);
                    if let Some((start, end)) = day {
                        *known = KnownDay { start, end };
                    }
                    day
                }
            }
        };
        config.windows.iter().map(move |spec| spec.bounds(day, at))
    }
}

/// The date of the local day starting at `start` in `zone`, as 00:00 UTC of
/// that date: what the portfolio files the day under. Every local day has a
/// date of its own; the UTC day its noon falls in had not (a New Zealand
/// customer's 23-hour day of 27 September 2026 and the next both had their
/// noon on 27 September UTC, and the 25-hour day of 5 April none on the 5th).
pub fn dated(zone: &jiff::tz::TimeZone, start: EventTime) -> EventTime {
    (i64::try_from(start).ok())
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .and_then(|t| {
            t.to_zoned(zone.clone())
                .date()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .ok()
        })
        .and_then(|day| u64::try_from(day.timestamp().as_millisecond()).ok())
        .unwrap_or(start - start % DAY_MS)
}

/// The start of the local day in `zone` of the date `date` (00:00 UTC of
/// it, as dates entered as dates are kept): the inverse of [`dated`]. A
/// Los Angeles touchpoint of 10 March (00:00 UTC, 16:00 on the 9th there)
/// belongs to the day starting at 07:00 UTC on the 10th.
pub fn date_start(zone: &jiff::tz::TimeZone, date: EventTime) -> EventTime {
    (i64::try_from(date).ok())
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .and_then(|t| {
            t.to_zoned(jiff::tz::TimeZone::UTC)
                .date()
                .to_zoned(zone.clone())
                .ok()
        })
        .and_then(|day| u64::try_from(day.timestamp().as_millisecond()).ok())
        .unwrap_or(date)
}

/// The local day holding `at` in `tz` (23 to 25 hours long), as UTC
/// milliseconds.
pub fn local_day(tz: &jiff::tz::TimeZone, at: EventTime) -> Option<(EventTime, EventTime)> {
    let zoned = jiff::Timestamp::from_millisecond(i64::try_from(at).ok()?)
        .ok()?
        .to_zoned(tz.clone());
    let start = zoned.start_of_day().ok()?;
    let end = start.tomorrow().ok()?.start_of_day().ok()?;
    Some((
        u64::try_from(start.timestamp().as_millisecond()).ok()?,
        u64::try_from(end.timestamp().as_millisecond()).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-device day cache gives every reading the windows the
    /// customer's zone gives it, whatever the order of the readings: in
    /// order, across the nights the clocks change (23- and 25-hour days, a
    /// half-hour zone, one east of UTC), jumping back days and forth again,
    /// and for customers without a zone or unknown to the file.
    #[test]
    fn cached_local_days_give_the_windows_the_zone_gives() {
        use crate::customer::{Contract, CustomerSpec, Segment};
        let mut config = EngineConfig {
            windows: vec![
                WindowSpec::new("1h", HOUR_MS),
                WindowSpec::new("8h", 8 * HOUR_MS),
                WindowSpec::new("1d", DAY_MS),
            ],
            ..EngineConfig::default()
        };
        let zones = ["Europe/Berlin", "America/Los_Angeles", "Australia/Adelaide"];
        let contract = Contract {
            arr: 1.0,
            start: 0,
            renewal: 400 * DAY_MS,
            devices_purchased: 1,
            operator_seats: 1,
        };
        for (i, zone) in zones.iter().chain(&["UTC"]).enumerate() {
            let mut spec = CustomerSpec::new(&format!("c{i}"), Segment::LowTouch, contract.clone());
            spec.timezone = jiff::tz::TimeZone::get(zone).unwrap();
            config.customers.insert(format!("c{i}"), spec);
        }
        let march_27 = 1_774_569_600_000; // 2026-03-27T00:00Z, Europe springs forward on the 29th
        let oct_23 = 1_792_713_600_000; // 2026-10-23T00:00Z, falls back on the 25th
        let mut days = LocalDays::default();
        let customers = ["c0", "c1", "c2", "c3", "nobody"];
        for from in [march_27, oct_23] {
            // Every 7 minutes over four days, each half hour and the
            // millisecond before it, then back to the start and forth by
            // 5 h 13 min steps.
            let times = (0..4 * 24 * 60 / 7).map(|k| from + k * 7 * 60_000);
            let times = times.chain((1..4 * 48).flat_map(|k| {
                let half_hour = from + k * 30 * 60_000;
                [half_hour - 1, half_hour]
            }));
            let times = times.chain((0..20).map(|k| from + k * (5 * HOUR_MS + 13 * 60_000)));
            for at in times {
                for (device, customer) in customers.iter().enumerate() {
                    let cached: Vec<_> =
                        (days.window_bounds(&config, device as u32, customer, at)).collect();
                    let fresh: Vec<_> = (config.windows.iter())
                        .map(|spec| config.window_bounds(spec, customer, at))
                        .collect();
                    assert_eq!(cached, fresh, "{customer} at {at}");
                    assert!(cached.iter().all(|&(start, end)| start <= at && at < end));
                }
            }
        }
    }

    /// A 25-hour day and a 23-hour one, written out: the daily window is
    /// the day, whichever of its hours; shorter windows count from its
    /// start and the last one ends with it.
    #[test]
    fn windows_nest_in_days_of_23_and_25_hours() {
        let day = WindowSpec::new("1d", DAY_MS);
        let hour = WindowSpec::new("1h", HOUR_MS);
        let shift = WindowSpec::new("8h", 8 * HOUR_MS);
        let start = 1_000 * HOUR_MS + 30 * 60_000;
        let long = (start, start + 25 * HOUR_MS);
        let short = (start, start + 23 * HOUR_MS);
        let last_hour = start + 24 * HOUR_MS + 5;
        assert_eq!(day.bounds(Some(long), last_hour), long);
        assert_eq!(
            hour.bounds(Some(long), last_hour),
            (start + 24 * HOUR_MS, long.1)
        );
        assert_eq!(hour.bounds(Some(long), start), (start, start + HOUR_MS));
        assert_eq!(
            shift.bounds(Some(short), start + 22 * HOUR_MS),
            (start + 16 * HOUR_MS, short.1)
        );
        // A week does not nest in a day; nor does any window without a day.
        let week = WindowSpec::new("7d", 7 * DAY_MS);
        assert_eq!(
            week.bounds(Some(long), start),
            (week.start_of(start), week.start_of(start) + 7 * DAY_MS)
        );
        assert_eq!(hour.bounds(None, start), (1_000 * HOUR_MS, 1_001 * HOUR_MS));
    }

    /// Dates of local days, written out: Auckland's day of 27 September
    /// 2026 starts at 12:00 UTC on the 26th (NZST, UTC+12) and the next at
    /// 11:00 UTC on the 27th (NZDT, UTC+13); Los Angeles' day of 1 March at
    /// 08:00 UTC that day.
    #[test]
    fn local_days_are_dated_by_their_local_date() {
        let auckland = jiff::tz::TimeZone::get("Pacific/Auckland").unwrap();
        let la = jiff::tz::TimeZone::get("America/Los_Angeles").unwrap();
        let sept_26 = 1_790_380_800_000; // 2026-09-26T00:00Z
        assert_eq!(dated(&auckland, sept_26 + 12 * HOUR_MS), sept_26 + DAY_MS);
        assert_eq!(
            dated(&auckland, sept_26 + DAY_MS + 11 * HOUR_MS),
            sept_26 + 2 * DAY_MS
        );
        let march_1 = 1_772_323_200_000; // 2026-03-01T00:00Z
        assert_eq!(dated(&la, march_1 + 8 * HOUR_MS), march_1);
        assert_eq!(dated(&jiff::tz::TimeZone::UTC, march_1), march_1);
        // And back: each local date's day starts where the zone rules say.
        assert_eq!(date_start(&la, march_1), march_1 + 8 * HOUR_MS);
        assert_eq!(
            date_start(&la, march_1 + 9 * DAY_MS),
            march_1 + 9 * DAY_MS + 7 * HOUR_MS
        );
        assert_eq!(
            date_start(&auckland, sept_26 + DAY_MS),
            sept_26 + 12 * HOUR_MS
        );
        for day in [sept_26, sept_26 + DAY_MS, sept_26 + 2 * DAY_MS] {
            assert_eq!(dated(&auckland, date_start(&auckland, day)), day);
        }
    }
}
