//! The health score: a weighted mean (0-100) of documented components, each
//! itself 0-100, banded red / yellow / green. The components are kept in the
//! record so that every score can be explained.

use serde::{Deserialize, Serialize};

use crate::customer::Segment;
use crate::model::{EventTime, Id};

/// One number per component of the score: its weight ([`HealthWeights`])
/// or its points ([`HealthPoints`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerComponent {
    /// Adoption depth: advanced features used.
    pub depth: f64,
    /// Adoption breadth: devices in use of devices purchased.
    pub breadth: f64,
    /// Utilisation against the segment's target.
    pub utilisation: f64,
    /// Outcome attainment.
    pub outcome: f64,
    /// Machine reliability (fault rate).
    pub reliability: f64,
    /// Usage trend against the customer's own baseline.
    pub trend: f64,
    /// Maturity score from outside telemetry, when the customer has one.
    pub maturity: f64,
}

/// Weights of the components; they need not sum to 1 (they are normalised).
pub type HealthWeights = PerComponent;

/// Score points per component: what each adds to the score, or how much
/// that moved between two days (0 for a component without data).
pub type HealthPoints = PerComponent;

impl PerComponent {
    /// Segment defaults. High-touch accounts are judged more on outcomes (a
    /// CS manager works on them), tech-touch more on plain usage.
    pub fn for_segment(segment: Segment) -> Self {
        match segment {
            Segment::HighTouch => Self {
                depth: 0.15,
                breadth: 0.15,
                utilisation: 0.15,
                outcome: 0.25,
                reliability: 0.1,
                trend: 0.2,
                maturity: 0.0,
            },
            Segment::LowTouch => Self {
                depth: 0.15,
                breadth: 0.2,
                utilisation: 0.2,
                outcome: 0.2,
                reliability: 0.1,
                trend: 0.15,
                maturity: 0.0,
            },
            Segment::TechTouch => Self {
                depth: 0.1,
                breadth: 0.25,
                utilisation: 0.25,
                outcome: 0.15,
                reliability: 0.1,
                trend: 0.15,
                maturity: 0.0,
            },
        }
    }

    /// Each component's points with their names, in the record's order.
    pub fn named(&self) -> [(&'static str, f64); 7] {
        [
            ("depth", self.depth),
            ("breadth", self.breadth),
            ("utilisation", self.utilisation),
            ("outcome", self.outcome),
            ("reliability", self.reliability),
            ("trend", self.trend),
            ("maturity", self.maturity),
        ]
    }

    /// The sum over the components.
    pub fn total(&self) -> f64 {
        self.named().iter().map(|(_, p)| p).sum()
    }

    /// Component by component, `self` less `before`: what moved the score.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            depth: self.depth - before.depth,
            breadth: self.breadth - before.breadth,
            utilisation: self.utilisation - before.utilisation,
            outcome: self.outcome - before.outcome,
            reliability: self.reliability - before.reliability,
            trend: self.trend - before.trend,
            maturity: self.maturity - before.maturity,
        }
    }
}

/// Component values, each 0-100.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct HealthComponents {
    /// Adoption depth.
    pub depth: f64,
    /// Adoption breadth.
    pub breadth: f64,
    /// Utilisation.
    pub utilisation: f64,
    /// Outcome attainment, when the customer has outcomes evaluated.
    pub outcome: Option<f64>,
    /// Machine reliability.
    pub reliability: f64,
    /// Usage trend.
    pub trend: f64,
    /// Maturity (external), if known.
    pub maturity: Option<f64>,
}

/// Red / yellow / green.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    /// 0-50.
    #[default]
    Red,
    /// 51-75.
    Yellow,
    /// 76-100.
    Green,
}

impl Band {
    /// Band of a score (rounded to a whole number first): 0-50 red, 51-75
    /// yellow, 76-100 green.
    pub fn of(score: f64) -> Self {
        let s = score.round();
        if s <= 50.0 {
            Self::Red
        } else if s <= 75.0 {
            Self::Yellow
        } else {
            Self::Green
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Red => "red",
            Self::Yellow => "yellow",
            Self::Green => "green",
        }
    }
}

/// Each component's value with its weight (0 for a component without
/// data), in the record's order, and the sum of the weights present.
fn weighted(components: &HealthComponents, weights: &HealthWeights) -> ([(f64, f64); 7], f64) {
    let optional = |v: Option<f64>, w: f64| (v.unwrap_or(0.0), if v.is_some() { w } else { 0.0 });
    let parts = [
        (components.depth, weights.depth),
        (components.breadth, weights.breadth),
        (components.utilisation, weights.utilisation),
        optional(components.outcome, weights.outcome),
        (components.reliability, weights.reliability),
        (components.trend, weights.trend),
        optional(components.maturity, weights.maturity),
    ]
    .map(|(v, w)| (v, w.max(0.0)));
    let total = parts.iter().map(|(_, w)| w).sum();
    (parts, total)
}

/// The weighted score, 0-100. Components are clamped to 0-100; a missing
/// component (outcome, maturity) drops out together with its weight.
pub fn score(components: &HealthComponents, weights: &HealthWeights) -> f64 {
    let (parts, total) = weighted(components, weights);
    if total <= 0.0 {
        return 0.0;
    }
    let sum: f64 = parts.iter().map(|(v, w)| clamp100(*v) * w).sum();
    clamp100(sum / total)
}

/// What each component adds to [`score`]: its clamped value times its share
/// of the weights present. They sum to the score, so the change of each
/// between two days explains the change of the score exactly, even on a day
/// a component appears (its weight then comes from the others' shares).
pub fn contributions(components: &HealthComponents, weights: &HealthWeights) -> HealthPoints {
    let (parts, total) = weighted(components, weights);
    let point = |(v, w): (f64, f64)| {
        if total <= 0.0 {
            0.0
        } else {
            clamp100(v) * w / total
        }
    };
    HealthPoints {
        depth: point(parts[0]),
        breadth: point(parts[1]),
        utilisation: point(parts[2]),
        outcome: point(parts[3]),
        reliability: point(parts[4]),
        trend: point(parts[5]),
        maturity: point(parts[6]),
    }
}

/// Clamps to 0..=100 (NaN becomes 0).
pub fn clamp100(v: f64) -> f64 {
    if v.is_nan() { 0.0 } else { v.clamp(0.0, 100.0) }
}

/// Where the customer is in its lifecycle.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Before the first value milestone.
    #[default]
    Onboard,
    /// Value reached, not every milestone yet.
    Adopt,
    /// Every milestone reached.
    Grow,
    /// Within the renewal window before the renewal date.
    Renew,
}

impl Stage {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Onboard => "onboard",
            Self::Adopt => "adopt",
            Self::Grow => "grow",
            Self::Renew => "renew",
        }
    }

    /// The stage from the facts it depends on: `renew` within
    /// `renew_window_days` of renewal; otherwise `onboard` until the first
    /// value milestone, `grow` once every milestone is reached, `adopt` in
    /// between.
    pub fn of(
        days_to_renewal: f64,
        renew_window_days: f64,
        value_reached: bool,
        all_reached: bool,
    ) -> Self {
        if days_to_renewal <= renew_window_days {
            Self::Renew
        } else if !value_reached {
            Self::Onboard
        } else if all_reached {
            Self::Grow
        } else {
            Self::Adopt
        }
    }
}

/// A customer's health at the end of one day. Field names are store field
/// names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HealthRecord {
    /// Customer id.
    pub customer: Id,
    /// Start of the day, ms.
    pub window_start: EventTime,
    /// End of the day, ms.
    pub window_end: EventTime,
    /// Weighted score, 0-100.
    pub score: f64,
    /// Band of the score.
    pub band: Band,
    /// Score change against seven days before (0 when unknown).
    pub score_trend: f64,
    /// The components the score is made of.
    pub components: HealthComponents,
    /// Why the score moved since the day before: the points each component
    /// gained or lost (they sum to the change; 0 on the first day).
    #[serde(default)]
    pub moved_1d: HealthPoints,
    /// The same over seven days (0 until there are eight days).
    #[serde(default)]
    pub moved_7d: HealthPoints,
    /// Lifecycle stage.
    pub stage: Stage,
    /// Coverage segment.
    pub segment: Segment,
    /// Annual recurring revenue.
    pub arr: f64,
    /// ARR counted at risk: all of it when red or with an open alert.
    pub arr_at_risk: f64,
    /// Alerts open at the end of the day.
    pub open_alerts: u32,
    /// Days since activation (first telemetry); undefined (NaN) for a
    /// customer none of whose machines ever reported.
    #[serde(deserialize_with = "undefined_as_null")]
    pub days_since_activation: f64,
    /// Days until the renewal date (negative once passed).
    pub days_to_renewal: f64,
    /// Time to value in days, once the first value milestone is reached.
    pub time_to_value_days: Option<f64>,
    /// Mean daily operating hours of the last 7 days against the 28 before,
    /// minus 1 (0 until there is a baseline).
    pub usage_growth: f64,
    /// Milestones reached.
    pub milestones_reached: u32,
    /// Milestones in the journey.
    pub milestones_total: u32,
    /// The day is still open: the score reads its hours so far at their
    /// pace (`super::open_day`), and the day's close replaces it.
    #[serde(default)]
    pub provisional: bool,
}

/// A float that may be undefined (NaN): JSON writes NaN as `null`, so a
/// human-readable format reads `null` back as NaN (a journey state in
/// journeys.json); a binary one (bincode) holds the float as it is.
fn undefined_as_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    if d.is_human_readable() {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    } else {
        f64::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn components() -> impl Strategy<Value = HealthComponents> {
        (
            -50.0..150.0f64,
            -50.0..150.0f64,
            -50.0..150.0f64,
            -50.0..150.0f64,
            -50.0..150.0f64,
            -50.0..150.0f64,
            proptest::option::of(0.0..100.0f64),
        )
            .prop_map(|(a, b, c, d, e, f, g)| HealthComponents {
                depth: a,
                breadth: b,
                utilisation: c,
                outcome: Some(d),
                reliability: e,
                trend: f,
                maturity: g,
            })
    }

    fn weights() -> impl Strategy<Value = HealthWeights> {
        (
            0.0..1.0f64,
            0.0..1.0f64,
            0.0..1.0f64,
            0.0..1.0f64,
            0.0..1.0f64,
            0.0..1.0f64,
            0.0..1.0f64,
        )
            .prop_map(|(a, b, c, d, e, f, g)| HealthWeights {
                depth: a,
                breadth: b,
                utilisation: c,
                outcome: d,
                reliability: e,
                trend: f,
                maturity: g,
            })
    }

    proptest! {
        #[test]
        fn score_stays_in_0_to_100(c in components(), w in weights()) {
            let s = score(&c, &w);
            prop_assert!((0.0..=100.0).contains(&s), "{s}");
        }

        #[test]
        fn improving_one_component_never_lowers_the_score(
            c in components(), w in weights(), which in 0..6usize, delta in 0.0..50.0f64
        ) {
            let mut better = c;
            let field = match which {
                0 => &mut better.depth,
                1 => &mut better.breadth,
                2 => &mut better.utilisation,
                3 => better.outcome.as_mut().expect("generated as Some"),
                4 => &mut better.reliability,
                _ => &mut better.trend,
            };
            *field += delta;
            let (before, after) = (score(&c, &w), score(&better, &w));
            prop_assert!(after >= before - 1e-9, "{before} -> {after}");
            let weight = [w.depth, w.breadth, w.utilisation, w.outcome, w.reliability, w.trend][which];
            let old = [c.depth, c.breadth, c.utilisation, c.outcome.unwrap_or(0.0), c.reliability, c.trend][which];
            // Strictly better when the component has weight and room to grow.
            if weight > 0.01 && delta > 1.0 && (0.0..99.0).contains(&old) {
                prop_assert!(after > before, "{before} -> {after}");
            }
        }

        #[test]
        fn what_moved_the_score_adds_up_to_its_change(
            today in components(), before in components(), w in weights(),
            outcome_before in any::<bool>(),
        ) {
            // The outcome may appear from one day to the next: its weight
            // then comes from the other components' shares.
            let before = HealthComponents {
                outcome: before.outcome.filter(|_| outcome_before),
                ..before
            };
            let now = contributions(&today, &w);
            prop_assert!((now.total() - score(&today, &w)).abs() < 1e-9);
            let moved = now.since(&contributions(&before, &w));
            let change = score(&today, &w) - score(&before, &w);
            prop_assert!((moved.total() - change).abs() < 1e-9, "{moved:?} vs {change}");
        }

        #[test]
        fn bands_follow_the_thresholds(s in 0.0..100.0f64) {
            let band = Band::of(s);
            let r = s.round();
            let expected = if r <= 50.0 { Band::Red } else if r <= 75.0 { Band::Yellow } else { Band::Green };
            prop_assert_eq!(band, expected);
        }
    }

    #[test]
    fn band_edges() {
        assert_eq!(Band::of(50.0), Band::Red);
        assert_eq!(Band::of(51.0), Band::Yellow);
        assert_eq!(Band::of(75.0), Band::Yellow);
        assert_eq!(Band::of(76.0), Band::Green);
        assert_eq!(Band::of(100.0), Band::Green);
    }
}
