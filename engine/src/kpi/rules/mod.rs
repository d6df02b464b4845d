//! The at-risk rules, one file each, named after the rule. Each reads the
//! customer's journey on the day being closed and says whether its episode
//! should open, resolve or stay as it is ([`Reading`]); the journey keeps the
//! episodes, matched to rules by [`Rule`], not by position.

mod champion_lost;
pub mod coverage_gap;
mod devices_dark;
mod fault_spike;
mod forecast_red;
mod health_red;
mod onboarding_stalled;
mod outcome_missed;
mod renewal_at_risk;
mod usage_drop;

pub(crate) use champion_lost::BaselineMemo;

use super::forecast::Outlook;
use super::health::Band;
use super::journey::Journey;
use super::risk::{Reading, RiskThresholds, Rule};
use crate::model::{EventTime, Id};

/// What a rule sees when one of the customer's days closes.
pub(crate) struct Today<'a> {
    /// The journey up to and including the day.
    pub journey: &'a Journey,
    /// End of the day.
    pub end: EventTime,
    /// First telemetry of the customer.
    pub activation: EventTime,
    /// The day's health score and band.
    pub score: f64,
    pub band: Band,
    /// Days until renewal (negative once passed).
    pub days_to_renewal: f64,
    /// Past the settling days after activation: baselines exist.
    pub settled: bool,
    /// The health forecast drawn from the days up to today, once there
    /// are enough of them.
    pub forecast: Option<&'a Outlook>,
}

impl Today<'_> {
    /// The customer's thresholds.
    pub fn thresholds(&self) -> &RiskThresholds {
        &self.journey.spec().thresholds
    }
}

/// A rule's verdict with hysteresis: breached once it `fires`, clear once
/// it `resolves`, unchanged (`None`) in between.
pub(crate) fn verdict(fires: bool, resolves: bool) -> Option<bool> {
    if fires {
        Some(true)
    } else if resolves {
        Some(false)
    } else {
        None
    }
}

/// A rule judged from the open day: breached, with the event time the
/// breach was crossed at; or not (yet), with the earliest event time it
/// could be without new data (`EventTime::MAX`: not before more data).
pub(crate) type IntradayVerdict = Result<(EventTime, Reading), EventTime>;

/// The rules that can be judged before the day closes, judged at event time
/// `now` from the closed days and the devices `sighted` since (their newest
/// readings). Each breach they report, the day's close judges again.
pub(crate) fn intraday(
    journey: &Journey,
    sighted: &std::collections::HashMap<Id, EventTime>,
    now: EventTime,
) -> Vec<(Rule, IntradayVerdict)> {
    vec![(
        Rule::DevicesDark,
        devices_dark::intraday(journey, sighted, now),
    )]
}

/// `rule`'s reading today, with the operator it is about (champion_lost
/// only); `None` when the rule does not apply yet.
pub(crate) fn reading(rule: Rule, today: &Today<'_>) -> Option<(Reading, Option<Id>)> {
    let plain = |r: Reading| (r, None);
    match rule {
        Rule::UsageDrop => usage_drop::reading(today).map(plain),
        Rule::DevicesDark => devices_dark::reading(today).map(plain),
        Rule::ChampionLost => champion_lost::reading(today).map(|(r, id)| (r, Some(id))),
        Rule::OutcomeMissed => outcome_missed::reading(today).map(plain),
        Rule::OnboardingStalled => Some(plain(onboarding_stalled::reading(today))),
        Rule::FaultSpike => fault_spike::reading(today).map(plain),
        Rule::HealthRed => health_red::reading(today).map(plain),
        Rule::ForecastRed => forecast_red::reading(today).map(plain),
        Rule::RenewalAtRisk => Some(plain(renewal_at_risk::reading(today))),
        // Read from touchpoints and the calendar, not a telemetry day:
        // `coverage_gap::evaluate`.
        Rule::CoverageGap => None,
    }
}
