//! health_red: the health score entered the red band.

use super::{Today, verdict};
use crate::kpi::health::Band;
use crate::kpi::risk::Reading;

pub(super) fn reading(today: &Today<'_>) -> Option<Reading> {
    let t = today.thresholds();
    let score = today.score;
    today.settled.then(|| Reading {
        breached: verdict(today.band == Band::Red, score >= t.health_red_resolve),
        metric: score,
        threshold: 50.0,
        evidence: format!("health score {score:.0} (red at 50 or below)"),
    })
}
