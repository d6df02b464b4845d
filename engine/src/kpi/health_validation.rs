//! Is the health score any good? For every renewal decision in the contract
//! events (a `churn`, or a `renewal`), the customer's score some days
//! before it: does a lower score go with churn (ROC AUC), and does each
//! band churn as often as its colour says (calibration)?
//!
//! For a decision on day `d` and a horizon of `h` days (30, 60 and 90 by
//! default), the score counted is that of the last day that ended by
//! `d - h days`: what the CS team could see then. A decision without such a
//! score (the customer's history starts later, or has a gap on that day)
//! is left out of that horizon and counted. Customers without a decision
//! are not cases at all.
//!
//! The AUC is the chance that a churned case scored lower than a renewed
//! one, ties counted half: the Mann-Whitney U statistic of the renewed
//! cases over `churned x renewed`, computed exactly over sorted scores (no
//! sampling, no interpolation). 0.5 is a coin; 1 means every churned
//! customer scored below every renewed one. With no case of one class the
//! AUC is undefined (`None`), never NaN.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::health::Band;
use super::revenue_retention::{ArrHistory, ContractEventKind};
use crate::model::{EventTime, Id};

/// Days before the decision looked at when none are asked for.
pub const DEFAULT_HORIZONS_DAYS: [u32; 3] = [30, 60, 90];

const DAY_MS: u64 = 86_400_000;

/// A score counts for a cutoff only if its day ended at most this long
/// before it: a customer-local day ends up to a day before a UTC midnight.
const MAX_SCORE_AGE_MS: u64 = DAY_MS;

/// What a customer decided at renewal.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Left: all ARR lost.
    Churn,
    /// Stayed: the contract renewed.
    Renewal,
}

/// One decision of one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionEvent {
    /// Churn or renewal.
    pub decision: Decision,
    /// When it took effect, ms since the epoch.
    pub at: EventTime,
}

/// The decisions in a customer's contract events, oldest first: every
/// `churn` and every `renewal`. Expansions and contractions are not
/// decisions to stay or leave.
pub fn decisions(history: &ArrHistory) -> Vec<DecisionEvent> {
    history
        .steps()
        .iter()
        .filter_map(|s| {
            let decision = match s.kind {
                ContractEventKind::Churn => Decision::Churn,
                ContractEventKind::Renewal => Decision::Renewal,
                _ => return None,
            };
            Some(DecisionEvent { decision, at: s.at })
        })
        .collect()
}

/// A customer's daily health scores and its decisions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScoreHistory {
    /// Customer id.
    pub customer: Id,
    /// Score and band per day, keyed by the end of the day (ms).
    pub scores: BTreeMap<EventTime, (f64, Band)>,
    /// Its decisions (see [`decisions`]); empty: not a case.
    pub decisions: Vec<DecisionEvent>,
}

impl ScoreHistory {
    /// The score (and band) of the last day that ended by `cutoff`, if that
    /// day ended no more than a day before it.
    pub fn score_at(&self, cutoff: EventTime) -> Option<(f64, Band)> {
        let (end, value) = self.scores.range(..=cutoff).next_back()?;
        (cutoff - end <= MAX_SCORE_AGE_MS).then_some(*value)
    }
}

/// How often one band churned.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BandCalibration {
    /// The band of the score at the horizon.
    pub band: Band,
    /// Decisions whose customer was in the band then.
    pub cases: u32,
    /// Of them, churned.
    pub churned: u32,
    /// `churned / cases`; `None` without cases.
    pub churn_rate: Option<f64>,
}

/// The score's record at one horizon.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HorizonValidation {
    /// Days before the decision.
    pub horizon_days: u32,
    /// Churn decisions with a score then.
    pub churned: u32,
    /// Renewal decisions with a score then.
    pub renewed: u32,
    /// Decisions left out: no score that many days before (history too
    /// short, or a gap on that day).
    pub without_history: u32,
    /// ROC AUC of the score predicting churn (lower score, churn); ties
    /// half. `None` unless both classes have a case.
    pub auc: Option<f64>,
    /// Green, yellow, red, in this order.
    pub bands: Vec<BandCalibration>,
}

/// The score's record over all horizons.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthValidation {
    /// Customers with at least one decision.
    pub customers_with_decisions: u32,
    /// Customers without any: not cases.
    pub customers_without_decision: u32,
    /// Decisions over all customers.
    pub decisions: u32,
    /// One per horizon, in the order asked.
    pub horizons: Vec<HorizonValidation>,
}

/// One case: the score at the horizon and whether the customer churned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Case {
    /// Score then.
    pub score: f64,
    /// Band then.
    pub band: Band,
    /// The customer churned.
    pub churned: bool,
}

/// The cases of `horizon_days`, and how many decisions had no score then.
pub fn cases(customers: &[ScoreHistory], horizon_days: u32) -> (Vec<Case>, u32) {
    let back = u64::from(horizon_days) * DAY_MS;
    let mut out = Vec::new();
    let mut without = 0;
    for c in customers {
        for d in &c.decisions {
            match d.at.checked_sub(back).and_then(|cutoff| c.score_at(cutoff)) {
                Some((score, band)) if score.is_finite() => out.push(Case {
                    score,
                    band,
                    churned: d.decision == Decision::Churn,
                }),
                _ => without += 1,
            }
        }
    }
    (out, without)
}

/// ROC AUC of `cases`, exactly: sort by score, and for each group of equal
/// scores count the renewed cases in it against the churned ones below
/// (each pair 1) and in it (each pair 1/2). `None` without both classes.
pub fn auc(cases: &[Case]) -> Option<f64> {
    let churned = cases.iter().filter(|c| c.churned).count() as u64;
    let renewed = cases.len() as u64 - churned;
    if churned == 0 || renewed == 0 {
        return None;
    }
    let mut sorted: Vec<&Case> = cases.iter().collect();
    sorted.sort_by(|a, b| a.score.total_cmp(&b.score));
    // Twice U, so that ties stay whole numbers.
    let mut twice_u: u64 = 0;
    let mut churned_below: u64 = 0;
    let mut i = 0;
    while i < sorted.len() {
        let score = sorted[i].score;
        let group = sorted[i..]
            .iter()
            .take_while(|c| c.score.total_cmp(&score).is_eq())
            .count();
        let c = sorted[i..i + group].iter().filter(|c| c.churned).count() as u64;
        let r = group as u64 - c;
        twice_u += r * (2 * churned_below + c);
        churned_below += c;
        i += group;
    }
    Some(twice_u as f64 / (2 * churned * renewed) as f64)
}

/// Cases and churn rate per band: green, yellow, red.
pub fn calibration(cases: &[Case]) -> Vec<BandCalibration> {
    [Band::Green, Band::Yellow, Band::Red]
        .into_iter()
        .map(|band| {
            let (n, churned) = cases
                .iter()
                .filter(|c| c.band == band)
                .fold((0u32, 0u32), |(n, k), c| (n + 1, k + u32::from(c.churned)));
            BandCalibration {
                band,
                cases: n,
                churned,
                churn_rate: (n > 0).then(|| f64::from(churned) / f64::from(n)),
            }
        })
        .collect()
}

/// The score's record at `horizon_days` over `customers`.
pub fn validate_horizon(customers: &[ScoreHistory], horizon_days: u32) -> HorizonValidation {
    let (cases, without_history) = cases(customers, horizon_days);
    let churned = cases.iter().filter(|c| c.churned).count() as u32;
    HorizonValidation {
        horizon_days,
        churned,
        renewed: cases.len() as u32 - churned,
        without_history,
        auc: auc(&cases),
        bands: calibration(&cases),
    }
}

/// The score's record at each of `horizons_days` over `customers`.
pub fn validate(customers: &[ScoreHistory], horizons_days: &[u32]) -> HealthValidation {
    let with = customers.iter().filter(|c| !c.decisions.is_empty()).count() as u32;
    HealthValidation {
        customers_with_decisions: with,
        customers_without_decision: customers.len() as u32 - with,
        decisions: customers.iter().map(|c| c.decisions.len() as u32).sum(),
        horizons: horizons_days
            .iter()
            .map(|&h| validate_horizon(customers, h))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customer::Segment;
    use crate::kpi::revenue_retention::ContractEvent;
    use proptest::prelude::*;

    /// The definition, pair by pair: churned below renewed 1, equal 1/2.
    fn brute_force(cases: &[Case]) -> Option<f64> {
        let (mut pairs, mut wins) = (0u64, 0.0);
        for c in cases.iter().filter(|c| c.churned) {
            for r in cases.iter().filter(|c| !c.churned) {
                pairs += 1;
                if c.score < r.score {
                    wins += 1.0;
                } else if c.score == r.score {
                    wins += 0.5;
                }
            }
        }
        (pairs > 0).then(|| wins / pairs as f64)
    }

    fn case(score: f64, churned: bool) -> Case {
        Case {
            score,
            band: Band::of(score),
            churned,
        }
    }

    #[test]
    fn auc_by_hand_with_ties() {
        // Churned 20, 50; renewed 50, 80, 90. Pairs: 20 below all three
        // (3); 50 ties one (1/2) and is below two (2): 5.5 of 6.
        let cases = [
            case(20.0, true),
            case(50.0, true),
            case(50.0, false),
            case(80.0, false),
            case(90.0, false),
        ];
        assert_eq!(auc(&cases), Some(5.5 / 6.0));
        // All tied: a coin.
        let tied = [case(60.0, true), case(60.0, false), case(60.0, false)];
        assert_eq!(auc(&tied), Some(0.5));
        // Perfectly wrong: churned customers scored higher.
        let wrong = [case(90.0, true), case(10.0, false)];
        assert_eq!(auc(&wrong), Some(0.0));
    }

    #[test]
    fn one_class_only_has_no_auc() {
        assert_eq!(auc(&[]), None);
        assert_eq!(auc(&[case(30.0, true), case(40.0, true)]), None);
        assert_eq!(auc(&[case(30.0, false)]), None);
        let v = validate_horizon(&[], 30);
        assert_eq!((v.auc, v.churned, v.renewed), (None, 0, 0));
        assert!(v.bands.iter().all(|b| b.churn_rate.is_none()));
    }

    proptest! {
        /// Scores from a small set so that ties are common.
        #[test]
        fn auc_equals_the_pairwise_count(
            cases in proptest::collection::vec((0u8..12, any::<bool>()), 0..60)
        ) {
            let cases: Vec<Case> = cases
                .into_iter()
                .map(|(s, churned)| case(f64::from(s) * 7.5, churned))
                .collect();
            let fast = auc(&cases);
            let slow = brute_force(&cases);
            prop_assert_eq!(fast.is_some(), slow.is_some());
            if let (Some(a), Some(b)) = (fast, slow) {
                prop_assert!((a - b).abs() < 1e-12, "{} != {}", a, b);
                prop_assert!((0.0..=1.0).contains(&a));
            }
        }

        #[test]
        fn calibration_counts_every_case_once(
            cases in proptest::collection::vec((0.0..100.0f64, any::<bool>()), 0..40)
        ) {
            let cases: Vec<Case> = cases.into_iter().map(|(s, c)| case(s, c)).collect();
            let bands = calibration(&cases);
            prop_assert_eq!(bands.iter().map(|b| b.cases as usize).sum::<usize>(), cases.len());
            prop_assert_eq!(
                bands.iter().map(|b| b.churned as usize).sum::<usize>(),
                cases.iter().filter(|c| c.churned).count()
            );
        }
    }

    const D0: u64 = 1_767_571_200_000; // 2026-01-05

    /// Daily scores from day `from` to `to` (exclusive), days ending at
    /// 22:00 UTC (a UTC+2 customer), the score given by `f(day)`.
    fn scores(from: u64, to: u64, f: impl Fn(u64) -> f64) -> BTreeMap<EventTime, (f64, Band)> {
        (from..to)
            .map(|d| {
                let end = D0 + (d + 1) * DAY_MS - 2 * 3_600_000;
                (end, (f(d), Band::of(f(d))))
            })
            .collect()
    }

    fn decision(decision: Decision, day: u64) -> DecisionEvent {
        DecisionEvent {
            decision,
            at: D0 + day * DAY_MS,
        }
    }

    #[test]
    fn each_horizon_reads_the_score_of_the_day_before_its_cutoff() {
        // Score = the day number: 30 days before day 100 reads day 69.
        let c = ScoreHistory {
            customer: "a".into(),
            scores: scores(0, 200, |d| d as f64),
            decisions: vec![decision(Decision::Churn, 100)],
        };
        assert_eq!(c.score_at(D0 + 70 * DAY_MS).unwrap().0, 69.0);
        let (cases, without) = cases(&[c], 30);
        assert_eq!((cases[0].score, without), (69.0, 0));
    }

    #[test]
    fn decisions_before_enough_history_are_left_out_and_counted() {
        // History from day 39 (it ends 2 h before day 40, the 60-day
        // cutoff): a decision on day 100 has a score 30 and 60 days
        // before, not 90. A gap on day 69 loses the 30-day case of b.
        let a = ScoreHistory {
            customer: "a".into(),
            scores: scores(39, 120, |_| 30.0),
            decisions: vec![decision(Decision::Churn, 100)],
        };
        let mut b = ScoreHistory {
            customer: "b".into(),
            scores: scores(0, 120, |_| 90.0),
            decisions: vec![decision(Decision::Renewal, 100)],
        };
        b.scores.remove(&(D0 + 70 * DAY_MS - 2 * 3_600_000));
        let none = ScoreHistory {
            customer: "n".into(),
            scores: scores(0, 120, |_| 50.0),
            decisions: vec![],
        };
        let v = validate(&[a, b, none], &DEFAULT_HORIZONS_DAYS);
        assert_eq!(
            (
                v.customers_with_decisions,
                v.customers_without_decision,
                v.decisions
            ),
            (2, 1, 2)
        );
        let h = |days| v.horizons.iter().find(|h| h.horizon_days == days).unwrap();
        assert_eq!(
            (h(30).churned, h(30).renewed, h(30).without_history),
            (1, 0, 1)
        );
        assert_eq!(h(30).auc, None);
        assert_eq!(
            (h(60).churned, h(60).renewed, h(60).without_history),
            (1, 1, 0)
        );
        assert_eq!(h(60).auc, Some(1.0));
        assert_eq!(
            (h(90).churned, h(90).renewed, h(90).without_history),
            (0, 1, 1)
        );
        // Calibration at 60: red 1 case churned, green 1 renewed.
        let band = |b: Band| *h(60).bands.iter().find(|c| c.band == b).unwrap();
        assert_eq!(band(Band::Red).churn_rate, Some(1.0));
        assert_eq!(band(Band::Green).churn_rate, Some(0.0));
        assert_eq!(band(Band::Yellow).churn_rate, None);
    }

    #[test]
    fn decisions_are_the_churns_and_renewals_of_the_contract_events() {
        let at = |day: u64| D0 + day * DAY_MS;
        let event = |kind, day, change| ContractEvent {
            kind,
            at: at(day),
            arr_change: change,
        };
        let h = ArrHistory::new(
            "x".into(),
            Segment::LowTouch,
            &[
                event(ContractEventKind::Start, 0, Some(100.0)),
                event(ContractEventKind::Expansion, 10, Some(20.0)),
                event(ContractEventKind::Renewal, 365, None),
                event(ContractEventKind::Churn, 730, None),
            ],
        )
        .unwrap();
        assert_eq!(
            decisions(&h),
            [
                decision(Decision::Renewal, 365),
                decision(Decision::Churn, 730)
            ]
        );
    }
}
