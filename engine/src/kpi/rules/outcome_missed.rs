//! outcome_missed: a customer-defined outcome missed its target several
//! windows in a row.

use super::{Today, verdict};
use crate::kpi::risk::Reading;

pub(super) fn reading(today: &Today<'_>) -> Option<Reading> {
    let t = today.thresholds();
    let outcomes = today.journey.outcomes();
    let (spec, worst) = outcomes
        .clone()
        .max_by_key(|(_, tr)| tr.consecutive_missed)?;
    let all_met = outcomes
        .map(|(_, o)| o)
        .all(|o| o.consecutive_missed == 0 && o.consecutive_met >= t.outcome_met_to_resolve);
    Some(Reading {
        breached: verdict(
            worst.consecutive_missed >= t.outcome_missed_windows,
            all_met,
        ),
        metric: f64::from(worst.consecutive_missed),
        threshold: f64::from(t.outcome_missed_windows),
        evidence: if worst.consecutive_missed > 0 {
            format!(
                "outcome `{}` ({} {} {}) missed {} windows in a row",
                spec.name,
                spec.expression.source(),
                spec.direction.symbol(),
                spec.target,
                worst.consecutive_missed
            )
        } else {
            "every outcome met its target in the latest windows".to_string()
        },
    })
}
