//! usage_drop: the last 7 days' operating hours against the customer's own
//! 28-day baseline.

use super::{Today, verdict};
use crate::kpi::risk::Reading;

pub(super) fn reading(today: &Today<'_>) -> Option<Reading> {
    let t = today.thresholds();
    let growth = today.journey.usage_growth().filter(|_| today.settled)?;
    let drop = -growth;
    Some(Reading {
        breached: verdict(drop >= t.usage_drop, drop < t.usage_drop_resolve),
        metric: drop,
        threshold: t.usage_drop,
        evidence: format!(
            "operating hours over the last 7 days are {:.0}% {} the customer's 28-day baseline",
            drop.abs() * 100.0,
            if drop >= 0.0 { "below" } else { "above" }
        ),
    })
}
