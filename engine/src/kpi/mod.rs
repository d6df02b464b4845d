//! KPI arithmetic in plain Rust, no timely types: accumulate [`Usage`](crate::model::Usage) into a
//! window, then finish the window into a record. The operators in
//! `crate::operators` only decide *when* a window is complete.

pub mod activity_impact;
pub(crate) mod chunked;
pub mod coverage;
mod customer;
pub mod day_shape;
mod device;
pub mod forecast;
pub mod health;
pub mod health_validation;
mod interner;
pub mod journey;
pub mod milestone;
pub mod open_day;
pub mod outcome;
pub mod portfolio;
pub mod projection;
pub mod revenue_retention;
pub mod risk;
mod rules;
mod time_to_value;
mod totals;
pub mod touchpoint;
mod usage_growth;
mod window;

pub use customer::{CustomerAccumulator, CustomerKpi};
pub use device::{DeviceAccumulator, DeviceKpi, DeviceSeen};
pub use forecast::ForecastRecord;
pub use health::HealthRecord;
pub use interner::WindowIds;
pub use milestone::MilestoneRecord;
pub use outcome::OutcomeRecord;
pub use portfolio::PortfolioRecord;
pub use risk::AlertRecord;
pub use rules::coverage_gap;
pub use totals::Totals;
pub use window::{CustomerPart, OpenWindow, WindowPart};

use serde::{Deserialize, Serialize};

/// Everything the engine emits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// A customer's KPIs over one closed window.
    Customer(CustomerKpi),
    /// A device's rollup over one closed window.
    Device(DeviceKpi),
    /// A customer-defined outcome over one closed window.
    Outcome(OutcomeRecord),
    /// A milestone's state at the end of a day.
    Milestone(MilestoneRecord),
    /// A customer's health at the end of a day. Boxed: at 304 bytes the
    /// largest record, and a few per customer-day; unboxed, every output
    /// (the windows' included) would take as much.
    Health(Box<HealthRecord>),
    /// A customer's health forecast at the end of a day.
    Forecast(forecast::ForecastRecord),
    /// An at-risk alert opening or resolving.
    Alert(AlertRecord),
    /// Figures over all customers for one day.
    Portfolio(PortfolioRecord),
}

impl Output {
    /// A health record as an output.
    pub fn health(record: HealthRecord) -> Self {
        Self::Health(Box::new(record))
    }

    /// The event time a record is of: the end of its window or day, or
    /// the day end an alert transition took place at. The frontier passes
    /// it before it is emitted, except at the end of the input.
    pub fn event_time(&self) -> crate::model::EventTime {
        match self {
            Self::Customer(r) => r.window_end,
            Self::Device(r) => r.window_end,
            Self::Outcome(r) => r.window_end,
            Self::Milestone(r) => r.window_end,
            Self::Health(r) => r.window_end,
            Self::Forecast(r) => r.window_end,
            Self::Alert(r) => r.resolved_at.unwrap_or(r.opened_at),
            Self::Portfolio(r) => r.window_end,
        }
    }

    /// Whether this record, emitted after a service's inputs closed at
    /// input time `at` ([`crate::JourneyBoard::stopped_at`]), is one the
    /// frontier had passed: journey records of days still open are not.
    /// Windows are: a window cut short is written again whole after the
    /// next start, and no receiver acts on it (docs/DELIVERY.md, the stop).
    /// So is the open day's provisional judgment of the hours so far (its
    /// score, and an alert it raises), as it would be without the stop;
    /// not a close's (a confirmed or retracted alert).
    pub fn kept_at_stop(&self, at: crate::model::EventTime) -> bool {
        match self {
            Self::Customer(_) | Self::Device(_) => true,
            Self::Health(h) if h.provisional => true,
            Self::Alert(a) if a.provisional && a.status == risk::AlertStatus::Open => true,
            // A date's figures wait for every customer's day of it, in
            // every time zone.
            Self::Portfolio(p) => p.window_end + crate::operators::portfolio::LATEST_LOCAL_END < at,
            _ => self.event_time() < at,
        }
    }

    /// The customer a record is about (`None` for portfolio figures).
    pub fn customer(&self) -> Option<&crate::model::Id> {
        match self {
            Self::Customer(r) => Some(&r.customer),
            Self::Device(r) => Some(&r.customer),
            Self::Outcome(r) => Some(&r.customer),
            Self::Milestone(r) => Some(&r.customer),
            Self::Health(r) => Some(&r.customer),
            Self::Forecast(r) => Some(&r.customer),
            Self::Alert(r) => Some(&r.customer),
            Self::Portfolio(_) => None,
        }
    }
}

/// Days of made-up fleets for the unit tests of the forecasts.
#[cfg(test)]
pub(crate) mod fleet_days {
    use super::{CustomerKpi, Totals};
    use crate::config::DAY_MS;
    use crate::customer::{Contract, CustomerSpec, Segment};

    /// Customer `c`, low-touch, with `devices` machines on a contract that
    /// starts at day 0 and renews after 400 days.
    pub(crate) fn spec(devices: u32) -> CustomerSpec {
        let contract = Contract {
            arr: 100_000.0,
            start: 0,
            renewal: 400 * DAY_MS,
            devices_purchased: devices,
            operator_seats: 10,
        };
        CustomerSpec::new("c", Segment::LowTouch, contract)
    }

    /// Day `d` of a fleet of `devices` machines with `share` of them at
    /// work, each running `utilisation` of the day (operating hours to
    /// match), two advanced features, no faults.
    pub(crate) fn day(d: u64, devices: u32, share: f64, utilisation: f64) -> CustomerKpi {
        CustomerKpi {
            customer: "c".into(),
            window: "1d".into(),
            window_start: d * DAY_MS,
            window_end: (d + 1) * DAY_MS,
            devices_purchased: devices,
            reporting_devices: devices,
            active_devices: (share * f64::from(devices)).round() as u32,
            utilisation: utilisation * share,
            totals: Totals {
                operating_hours: utilisation * share * 24.0 * f64::from(devices),
                samples: 1000,
                ..Totals::default()
            },
            first_seen: d * DAY_MS,
            advanced_features: 0b11,
            ..CustomerKpi::default()
        }
    }
}
