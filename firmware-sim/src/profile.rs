//! Customer profiles: the six behaviours a Customer Success team recognises,
//! and the curves by which each one shapes its fleet's telemetry.
//!
//! Every curve is a plain function of the simulation day (`day`, fractional,
//! 0 = [`crate::FleetSpec::start`]) and of the customer's turn day (`turn`,
//! the day its problem begins, `f64::INFINITY` when it has none), so the
//! shape of a profile can be read (and tested) here without running a fleet.

use serde::{Deserialize, Serialize};

use crate::machine::ADVANCED_FEATURES;

/// How a customer's fleet behaves over the simulation. Customer `i` of a fleet
/// gets `Profile::ALL[i % 6]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// New customer done right: every machine online within the first days,
    /// usage grows slowly, advanced features adopted one after another, few
    /// faults, a stable crew of operators. No turn day.
    HealthyGrowing,
    /// Implementation stalled: machines come online one by one over weeks,
    /// a share of the purchased machines never does, little advanced feature
    /// use. Turn day: the rollout stalls, no machine comes online after it.
    SlowOnboarding,
    /// Low adoption: healthy at first; from the turn day operating hours fall
    /// steadily, to 30% of the baseline ten days later (the two weeks after
    /// the turn day average about 45% below the two weeks before).
    DecliningUsage,
    /// Sponsor / power user left: one operator (the champion) works the most
    /// hours and drives advanced feature use; from the turn day the champion
    /// never appears again and usage drops somewhat.
    ChampionLeaves,
    /// Devices going dark: from the turn day (within two days of it) about a
    /// third of the machines stop sending anything, and about a fifth are
    /// parked: still sending OFF heartbeats, doing no work.
    DevicesGoingDark,
    /// Quality problems: from the turn day the fault-code rate rises sharply
    /// (about 15x within three days), with FAULT states and downtime.
    FaultProne,
}

impl Profile {
    /// The profiles in the order customers are assigned them.
    pub const ALL: [Profile; 6] = [
        Profile::HealthyGrowing,
        Profile::SlowOnboarding,
        Profile::DecliningUsage,
        Profile::ChampionLeaves,
        Profile::DevicesGoingDark,
        Profile::FaultProne,
    ];

    /// Profile of customer `index` (0-based).
    pub fn for_customer(index: usize) -> Profile {
        Self::ALL[index % Self::ALL.len()]
    }

    /// Kebab-case name, as in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::HealthyGrowing => "healthy-growing",
            Self::SlowOnboarding => "slow-onboarding",
            Self::DecliningUsage => "declining-usage",
            Self::ChampionLeaves => "champion-leaves",
            Self::DevicesGoingDark => "devices-going-dark",
            Self::FaultProne => "fault-prone",
        }
    }

    /// Whether the profile is an at-risk one (it then has a turn day).
    pub fn is_at_risk(self) -> bool {
        self != Self::HealthyGrowing
    }

    /// The at-risk signal an alert should raise for this profile, in the
    /// domain vocabulary (docs: "why customers drift away").
    pub fn risk_signal(self) -> Option<&'static str> {
        match self {
            Self::HealthyGrowing => None,
            Self::SlowOnboarding => Some("implementation stalled"),
            Self::DecliningUsage => Some("low adoption"),
            Self::ChampionLeaves => Some("sponsor or power user left"),
            Self::DevicesGoingDark => Some("devices going dark"),
            Self::FaultProne => Some("quality or performance problems"),
        }
    }

    /// Chance that the customer churns at its renewal rather than renew
    /// (`crate::contract_events`): the profile's problems make leaving
    /// likelier, never certain, and a healthy customer may still leave.
    pub fn churn_probability(self) -> f64 {
        match self {
            Self::HealthyGrowing => 0.05,
            Self::SlowOnboarding => 0.4,
            Self::DecliningUsage => 0.6,
            Self::ChampionLeaves => 0.35,
            Self::DevicesGoingDark => 0.45,
            Self::FaultProne => 0.3,
        }
    }

    /// New customers sign shortly before the simulation and bring their
    /// machines online during it, with a learning curve; the others are
    /// established accounts whose machines report from the first hour.
    pub(crate) fn is_new_customer(self) -> bool {
        matches!(self, Self::HealthyGrowing | Self::SlowOnboarding)
    }

    /// Where the turn day falls, as a fraction of the simulated days.
    pub(crate) fn turn_fraction(self) -> Option<(f64, f64)> {
        match self {
            Self::HealthyGrowing => None,
            Self::SlowOnboarding => Some((0.35, 0.45)),
            _ => Some((0.45, 0.55)),
        }
    }

    /// How many days before the simulation the contract began.
    pub(crate) fn contract_age_days(self) -> (u32, u32) {
        match self {
            Self::HealthyGrowing => (10, 30),
            Self::SlowOnboarding => (5, 20),
            // Renewal falls inside a 90-day simulation: declining usage right
            // before renewal is the classic churn story.
            Self::DecliningUsage => (280, 300),
            Self::ChampionLeaves => (200, 260),
            Self::DevicesGoingDark => (150, 220),
            Self::FaultProne => (90, 150),
        }
    }

    /// Multiplier on the chance that a machine works a given shift.
    pub(crate) fn usage_factor(self, day: f64, turn: f64, days: f64) -> f64 {
        match self {
            Self::HealthyGrowing => 0.85 + 0.2 * (day / days).min(1.0),
            Self::SlowOnboarding => 0.75,
            Self::DecliningUsage => 1.0 - 0.7 * ramp(day, turn, 10.0),
            Self::ChampionLeaves => 1.0 - 0.2 * ramp(day, turn, 7.0),
            Self::DevicesGoingDark => 1.0,
            Self::FaultProne => 1.0 - 0.05 * ramp(day, turn, 3.0),
        }
    }

    /// Chance that a working sample raises a fault.
    pub(crate) fn fault_rate(self, day: f64, turn: f64) -> f64 {
        match self {
            Self::HealthyGrowing => 0.0015,
            Self::FaultProne => 0.003 + 0.045 * ramp(day, turn, 3.0),
            _ => 0.0025,
        }
    }

    /// Share of faults that are critical (stop the machine).
    pub(crate) fn critical_share(self, day: f64, turn: f64) -> f64 {
        match self {
            Self::FaultProne => 0.1 + 0.3 * ramp(day, turn, 3.0),
            _ => 0.1,
        }
    }

    /// Samples a critical fault keeps the machine down (inclusive range).
    pub(crate) fn downtime_samples(self, day: f64, turn: f64) -> (u32, u32) {
        if self == Self::FaultProne && day >= turn {
            (3, 12)
        } else {
            (1, 3)
        }
    }

    /// Manual interventions per work cycle.
    pub(crate) fn interventions_per_cycle(self, day: f64, turn: f64) -> f64 {
        match self {
            Self::FaultProne => 0.01 + 0.02 * ramp(day, turn, 3.0),
            Self::SlowOnboarding => 0.02,
            _ => 0.01,
        }
    }

    /// For each advanced feature ([`ADVANCED_FEATURES`] order): when the
    /// customer adopts it (fraction of the simulated days) and the share of
    /// working samples that use it once adoption has settled.
    pub(crate) fn adoption_plan(self) -> [Option<(f64, f64)>; ADVANCED_FEATURES.len()] {
        // eco_mode, auto_grade_assist, payload_weighing, remote_diagnostics
        match self {
            Self::HealthyGrowing => [
                Some((0.03, 0.55)),
                Some((0.5, 0.35)),
                Some((0.3, 0.4)),
                Some((0.12, 0.45)),
            ],
            Self::SlowOnboarding => [None, None, None, Some((0.5, 0.08))],
            Self::DecliningUsage => [Some((0.0, 0.35)), None, Some((0.0, 0.25)), None],
            Self::ChampionLeaves => [
                Some((0.0, 0.15)),
                Some((0.0, 0.15)),
                Some((0.0, 0.15)),
                None,
            ],
            Self::DevicesGoingDark => [Some((0.0, 0.3)), None, None, Some((0.0, 0.3))],
            Self::FaultProne => [Some((0.0, 0.3)), None, Some((0.0, 0.3)), Some((0.0, 0.2))],
        }
    }

    /// Share of working samples in which the champion (when on shift) uses an
    /// adopted advanced feature.
    pub(crate) const CHAMPION_FEATURE_SHARE: f64 = 0.85;

    /// Multiplier on advanced feature use by everyone but the champion: once
    /// the champion has left, nobody keeps the others going.
    pub(crate) fn advanced_factor(self, day: f64, turn: f64) -> f64 {
        match self {
            Self::ChampionLeaves => 1.0 - 0.5 * ramp(day, turn, 14.0),
            _ => 1.0,
        }
    }

    /// Multiplier on the chance that the champion's machine works a shift.
    pub(crate) fn champion_machine_factor(self, day: f64, turn: f64) -> f64 {
        if self == Self::ChampionLeaves && day >= turn {
            0.6
        } else {
            1.0
        }
    }
}

/// Share of a feature's settled use reached `since` days after adoption: a
/// quarter at once, all of it two weeks later.
pub(crate) fn adoption_ramp(since: f64) -> f64 {
    if since < 0.0 {
        0.0
    } else {
        (0.25 + 0.75 * since / 14.0).min(1.0)
    }
}

/// 0 before `turn`, rising linearly to 1 over `over` days after it.
fn ramp(day: f64, turn: f64, over: f64) -> f64 {
    if day < turn {
        0.0
    } else {
        ((day - turn) / over).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_cycle_through_profiles_in_order() {
        let names: Vec<_> = (0..7).map(|i| Profile::for_customer(i).name()).collect();
        assert_eq!(
            names,
            [
                "healthy-growing",
                "slow-onboarding",
                "declining-usage",
                "champion-leaves",
                "devices-going-dark",
                "fault-prone",
                "healthy-growing"
            ]
        );
        assert!(
            Profile::ALL
                .iter()
                .filter(|p| p.is_at_risk())
                .all(|p| p.turn_fraction().is_some())
        );
    }

    #[test]
    fn declining_usage_loses_over_a_quarter_within_two_weeks() {
        let p = Profile::DecliningUsage;
        let mean_after: f64 = (0..14)
            .map(|d| p.usage_factor(40.0 + f64::from(d), 40.0, 90.0))
            .sum::<f64>()
            / 14.0;
        assert_eq!(p.usage_factor(39.0, 40.0, 90.0), 1.0);
        assert!(mean_after < 0.6, "{mean_after}");
    }

    #[test]
    fn healthy_growth_is_slow_and_upward() {
        let p = Profile::HealthyGrowing;
        let (early, late) = (
            p.usage_factor(10.0, f64::INFINITY, 90.0),
            p.usage_factor(80.0, f64::INFINITY, 90.0),
        );
        assert!(late > early && late < early * 1.25, "{early} {late}");
    }

    #[test]
    fn fault_prone_faults_rise_sharply_after_the_turn() {
        let p = Profile::FaultProne;
        assert!(p.fault_rate(50.0, 40.0) > 10.0 * p.fault_rate(30.0, 40.0));
        assert!(p.critical_share(50.0, 40.0) > p.critical_share(30.0, 40.0));
    }
}
