//! At-risk rules: the classic reasons customers drift away, as telemetry sees
//! them. Each rule has documented default thresholds (per segment), fires
//! once per episode and resolves once: firing and resolving thresholds differ
//! (hysteresis), so a customer hovering at the threshold does not flap.

use serde::{Deserialize, Serialize};

use super::health::Stage;
use crate::customer::Segment;
use crate::model::{EventTime, Id};

/// The at-risk rules.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Usage falling against the customer's own trailing baseline.
    #[default]
    UsageDrop,
    /// Telematics units that used to report have gone silent.
    DevicesDark,
    /// The top operator by recent hours stopped appearing.
    ChampionLost,
    /// An outcome missed its target N windows in a row.
    OutcomeMissed,
    /// A milestone is overdue, or purchased devices never came online.
    OnboardingStalled,
    /// The fault rate jumped against its baseline.
    FaultSpike,
    /// The health score entered the red band.
    HealthRed,
    /// Renewal is near and the customer is not green.
    RenewalAtRisk,
    /// A cadence of the segment's coverage model is overdue.
    CoverageGap,
    /// The health forecast says the score turns red within `forecast_days`.
    /// Last, so the stored episodes of older builds keep their indices.
    ForecastRed,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 10] = [
        Self::UsageDrop,
        Self::DevicesDark,
        Self::ChampionLost,
        Self::OutcomeMissed,
        Self::OnboardingStalled,
        Self::FaultSpike,
        Self::HealthRed,
        Self::ForecastRed,
        Self::RenewalAtRisk,
        Self::CoverageGap,
    ];

    /// Stable label for stores, APIs and topics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UsageDrop => "usage_drop",
            Self::DevicesDark => "devices_dark",
            Self::ChampionLost => "champion_lost",
            Self::OutcomeMissed => "outcome_missed",
            Self::OnboardingStalled => "onboarding_stalled",
            Self::FaultSpike => "fault_spike",
            Self::HealthRed => "health_red",
            Self::RenewalAtRisk => "renewal_at_risk",
            Self::CoverageGap => "coverage_gap",
            Self::ForecastRed => "forecast_red",
        }
    }

    /// What a CS manager should do next.
    pub fn next_action(self) -> &'static str {
        match self {
            Self::UsageDrop => {
                "Call the sponsor: ask what changed (project ended, seasonality, staff) and book a usage review"
            }
            Self::DevicesDark => {
                "Open a support case for the silent units (connectivity, power, SIM) and confirm with the site which machines were moved or sold"
            }
            Self::ChampionLost => {
                "Find out whether the champion left; identify and train a new power user, re-run operator onboarding"
            }
            Self::OutcomeMissed => {
                "Review the outcome with the customer: check operator training and machine settings behind the KPI"
            }
            Self::OnboardingStalled => {
                "Escalate the rollout: schedule installation of the offline machines and a kickoff for the overdue milestone"
            }
            Self::FaultSpike => {
                "Alert service engineering: check firmware and maintenance on the affected machines before downtime costs the customer"
            }
            Self::HealthRed => {
                "Put the account on the risk list and agree a recovery plan with the customer"
            }
            Self::RenewalAtRisk => {
                "Prepare the renewal: run an executive business review on outcomes achieved before the renewal date"
            }
            Self::CoverageGap => {
                "Book the overdue touchpoint of the segment's coverage model (for a business review, with the customer's decision-maker) and record it"
            }
            Self::ForecastRed => {
                "Act before the account turns red: call the sponsor about the component driving the decline and agree what to change this week"
            }
        }
    }
}

/// Rule thresholds; defaults per segment, overridable per customer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskThresholds {
    /// usage_drop fires when the last 7 days' mean daily operating hours are
    /// this fraction or more below the 28 days before.
    pub usage_drop: f64,
    /// usage_drop resolves when the drop is back under this fraction.
    pub usage_drop_resolve: f64,
    /// A device is dark after this many days without any message.
    pub dark_after_days: u32,
    /// devices_dark fires when this share of the devices that ever reported
    /// are dark (and at least `dark_min_devices`); resolves below half of it.
    pub dark_share: f64,
    /// Fewest dark devices that fire devices_dark.
    pub dark_min_devices: u32,
    /// champion_lost fires when the top operator of the 28-day baseline has
    /// not appeared for this many days.
    pub champion_absent_days: u32,
    /// The top operator counts as a champion when their baseline hours are
    /// at least this many times the average operator's...
    pub champion_dominance: f64,
    /// ...and at least this many times the second operator's...
    pub champion_lead: f64,
    /// ...and at least this many hours (a part-timer is no champion).
    pub champion_min_hours: f64,
    /// outcome_missed fires after this many windows missed in a row.
    pub outcome_missed_windows: u32,
    /// outcome_missed resolves after this many windows met in a row.
    pub outcome_met_to_resolve: u32,
    /// onboarding_stalled fires when, this many days after activation, less
    /// than `onboarding_online_share` of purchased devices ever reported.
    pub onboarding_days: u32,
    /// See `onboarding_days`.
    pub onboarding_online_share: f64,
    /// fault_spike fires when faults per operating hour over the last 3 days
    /// reach this multiple of the 28-day baseline rate.
    pub fault_spike_ratio: f64,
    /// fault_spike resolves under this multiple.
    pub fault_spike_resolve_ratio: f64,
    /// Fewest faults in the last 3 days that can fire fault_spike.
    pub fault_spike_min_faults: u64,
    /// health_red resolves once the score is back at or above this.
    pub health_red_resolve: f64,
    /// forecast_red looks this many days ahead for a red score.
    pub forecast_days: u32,
    /// forecast_red fires when the probability of a red score within
    /// `forecast_days` reaches this (and the band is not red yet).
    pub forecast_confidence: f64,
    /// forecast_red resolves when that probability falls under this, or
    /// when the score turns red (health_red takes over).
    pub forecast_resolve: f64,
    /// Daily scores the forecast's trend is fitted to (14-28).
    pub forecast_fit_days: u32,
    /// How the forecast is drawn (`kpi::forecast::Method`).
    pub forecast_method: crate::kpi::forecast::Method,
    /// Days before renewal that count as the renewal window (stage `renew`).
    pub renewal_window_days: u32,
    /// Utilisation that scores 100 in the health score.
    pub utilisation_target: f64,
    /// Faults per operating hour that score 0 reliability.
    pub max_fault_rate: f64,
    /// No usage, health or champion alert during the first days after
    /// activation, when there is no baseline yet.
    pub settle_days: u32,
}

impl Default for RiskThresholds {
    fn default() -> Self {
        Self {
            usage_drop: 0.25,
            usage_drop_resolve: 0.125,
            dark_after_days: 2,
            dark_share: 0.10,
            dark_min_devices: 2,
            champion_absent_days: 7,
            champion_dominance: 2.0,
            champion_lead: 1.25,
            champion_min_hours: 60.0,
            outcome_missed_windows: 3,
            outcome_met_to_resolve: 2,
            onboarding_days: 45,
            onboarding_online_share: 0.9,
            fault_spike_ratio: 3.0,
            fault_spike_resolve_ratio: 1.5,
            fault_spike_min_faults: 15,
            health_red_resolve: 56.0,
            forecast_days: 21,
            forecast_confidence: 0.8,
            forecast_resolve: 0.5,
            forecast_fit_days: 21,
            forecast_method: crate::kpi::forecast::Method::LocalTrend,
            renewal_window_days: 90,
            utilisation_target: 0.20,
            max_fault_rate: 0.5,
            settle_days: 21,
        }
    }
}

impl RiskThresholds {
    /// Most days `forecast_days` may look ahead: the band's width is worked
    /// out day by day up to it at every close (a value of 100,000 held a
    /// worker for minutes a day and every customer's days with it).
    pub const MAX_FORECAST_DAYS: u32 = 90;

    /// Checks every threshold is in its range, naming the first that is
    /// not: `forecast_days: 100000 is not in 1-90`.
    pub fn check(&self) -> Result<(), String> {
        let share = |name: &str, v: f64, zero: bool| {
            let ok = v.is_finite() && v <= 1.0 && if zero { v >= 0.0 } else { v > 0.0 };
            let low = if zero { "0" } else { "above 0" };
            ok.then_some(())
                .ok_or_else(|| format!("{name}: {v} is not a share from {low} to 1"))
        };
        let positive = |name: &str, v: f64| {
            (v.is_finite() && v > 0.0)
                .then_some(())
                .ok_or_else(|| format!("{name}: {v} is not a number above 0"))
        };
        let not_negative = |name: &str, v: f64| {
            (v.is_finite() && v >= 0.0)
                .then_some(())
                .ok_or_else(|| format!("{name}: {v} is not a number of 0 or more"))
        };
        let days = |name: &str, v: u32, low: u32, high: u32| {
            (low..=high)
                .contains(&v)
                .then_some(())
                .ok_or_else(|| format!("{name}: {v} is not in {low}-{high}"))
        };
        share("usage_drop", self.usage_drop, false)?;
        share("usage_drop_resolve", self.usage_drop_resolve, true)?;
        days("dark_after_days", self.dark_after_days, 1, 365)?;
        share("dark_share", self.dark_share, false)?;
        days("champion_absent_days", self.champion_absent_days, 1, 365)?;
        not_negative("champion_dominance", self.champion_dominance)?;
        not_negative("champion_lead", self.champion_lead)?;
        not_negative("champion_min_hours", self.champion_min_hours)?;
        days(
            "outcome_missed_windows",
            self.outcome_missed_windows,
            1,
            365,
        )?;
        days(
            "outcome_met_to_resolve",
            self.outcome_met_to_resolve,
            1,
            365,
        )?;
        days("onboarding_days", self.onboarding_days, 0, 3650)?;
        share(
            "onboarding_online_share",
            self.onboarding_online_share,
            true,
        )?;
        positive("fault_spike_ratio", self.fault_spike_ratio)?;
        not_negative("fault_spike_resolve_ratio", self.fault_spike_resolve_ratio)?;
        if !(0.0..=100.0).contains(&self.health_red_resolve) {
            return Err(format!(
                "health_red_resolve: {} is not a score from 0 to 100",
                self.health_red_resolve
            ));
        }
        days(
            "forecast_days",
            self.forecast_days,
            1,
            Self::MAX_FORECAST_DAYS,
        )?;
        share("forecast_confidence", self.forecast_confidence, false)?;
        share("forecast_resolve", self.forecast_resolve, true)?;
        if self.forecast_resolve > self.forecast_confidence {
            return Err(format!(
                "forecast_resolve: {} is above forecast_confidence {} (an alert would resolve \
                 as it opens)",
                self.forecast_resolve, self.forecast_confidence
            ));
        }
        days("forecast_fit_days", self.forecast_fit_days, 14, 28)?;
        days("renewal_window_days", self.renewal_window_days, 0, 3650)?;
        share("utilisation_target", self.utilisation_target, false)?;
        positive("max_fault_rate", self.max_fault_rate)?;
        days("settle_days", self.settle_days, 0, 365)
    }

    /// Segment defaults: high-touch accounts are watched more closely.
    pub fn for_segment(segment: Segment) -> Self {
        let base = Self::default();
        match segment {
            Segment::HighTouch => Self {
                usage_drop: 0.20,
                usage_drop_resolve: 0.10,
                ..base
            },
            Segment::LowTouch => base,
            Segment::TechTouch => Self {
                usage_drop: 0.30,
                usage_drop_resolve: 0.15,
                ..base
            },
        }
    }
}

/// Open, resolved, or retracted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The episode started.
    #[default]
    Open,
    /// The episode ended.
    Resolved,
    /// The episode never happened: telemetry that arrived late (within the
    /// correction horizon) restated the days that raised it.
    Retracted,
}

impl AlertStatus {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "resolved",
            Self::Retracted => "retracted",
        }
    }
}

/// One alert transition (an episode opening or resolving). Field names are
/// store and JSON field names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Customer id.
    pub customer: Id,
    /// Customer display name.
    pub customer_name: Id,
    /// Which rule.
    pub rule: Rule,
    /// Episode number of this rule for this customer, from 1.
    pub episode: u32,
    /// open or resolved.
    pub status: AlertStatus,
    /// Raised from the open day before it closed (an intraday rule): the
    /// day's close confirms it (the same episode, no longer provisional) or
    /// retracts it.
    #[serde(default)]
    pub provisional: bool,
    /// When the episode opened (end of the day it fired), ms.
    pub opened_at: EventTime,
    /// When it resolved, ms.
    pub resolved_at: Option<EventTime>,
    /// The numbers that fired (or resolved) it, in words.
    pub evidence: String,
    /// The measured value behind the rule.
    pub metric: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
    /// Lifecycle stage at the time.
    pub stage: Stage,
    /// Coverage segment (routing).
    pub segment: Segment,
    /// Revenue at stake: the customer's ARR.
    pub arr_at_risk: f64,
    /// Suggested next action.
    pub next_action: String,
}

/// What a day's close says of a provisional alert it did not confirm.
const NOT_CONFIRMED: &str = "not confirmed when the day closed: ";

impl AlertRecord {
    /// The retraction of this provisional alert by its day's close, which
    /// did not open the same episode.
    pub fn retracted_by_close(&self) -> AlertRecord {
        AlertRecord {
            status: AlertStatus::Retracted,
            evidence: format!("{NOT_CONFIRMED}{}", self.evidence),
            ..self.clone()
        }
    }

    /// The provisional alert a day's close retracted, as it was sent before
    /// ([`Self::retracted_by_close`] undone); `None` for any other record.
    /// A restart whose stores may lack the retraction hands it to that
    /// day's close again.
    pub fn before_close(&self) -> Option<AlertRecord> {
        let evidence = self.evidence.strip_prefix(NOT_CONFIRMED)?;
        (self.provisional && self.status == AlertStatus::Retracted).then(|| AlertRecord {
            status: AlertStatus::Open,
            evidence: evidence.to_owned(),
            ..self.clone()
        })
    }
}

/// A rule's reading on one day: `Some(true)` breached, `Some(false)` clear
/// (past the resolve threshold), `None` in between or not applicable (the
/// episode stays as it is).
#[derive(Debug, Clone)]
pub struct Reading {
    /// Breach state, see above.
    pub breached: Option<bool>,
    /// The measured value.
    pub metric: f64,
    /// The threshold.
    pub threshold: f64,
    /// Evidence in words.
    pub evidence: String,
}

/// Episode state of one rule for one customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Episodes so far.
    pub count: u32,
    /// When the current episode opened, if one is open.
    pub open_since: Option<EventTime>,
}

impl Episode {
    /// Applies a reading; returns `Some(status)` on a transition.
    pub fn apply(&mut self, reading: &Reading, at: EventTime) -> Option<AlertStatus> {
        match (self.open_since, reading.breached) {
            (None, Some(true)) => {
                self.count += 1;
                self.open_since = Some(at);
                Some(AlertStatus::Open)
            }
            (Some(_), Some(false)) => {
                self.open_since = None;
                Some(AlertStatus::Resolved)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retraction_by_the_close_is_undone_and_no_other_record_is() {
        let sent = AlertRecord {
            customer: "c1".into(),
            rule: Rule::DevicesDark,
            status: AlertStatus::Open,
            provisional: true,
            opened_at: 86_400_000,
            evidence: "2 of 10 devices dark".into(),
            ..AlertRecord::default()
        };
        let retracted = sent.retracted_by_close();
        assert_eq!(retracted.status, AlertStatus::Retracted);
        assert!(retracted.evidence.ends_with("2 of 10 devices dark"));
        assert_eq!(retracted.before_close(), Some(sent.clone()));
        // Not a close's retraction: an open alert, a confirmed one, one a
        // restatement or a removal retracted.
        assert_eq!(sent.before_close(), None);
        let confirmed = AlertRecord {
            provisional: false,
            ..retracted.clone()
        };
        assert_eq!(confirmed.before_close(), None);
        let by_removal = AlertRecord {
            evidence: "customer removed from the customers file".into(),
            ..retracted
        };
        assert_eq!(by_removal.before_close(), None);
    }
}
