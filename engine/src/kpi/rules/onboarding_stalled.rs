//! onboarding_stalled: a milestone is overdue, or the purchased devices
//! never came online.

use super::Today;
use crate::kpi::risk::Reading;

pub(super) fn reading(today: &Today<'_>) -> Reading {
    let t = today.thresholds();
    let journey = today.journey;
    let overdue: Vec<&str> = journey
        .overdue_milestones(today.end, today.activation)
        .collect();
    let purchased = journey.spec().contract.devices_purchased;
    let known = journey.devices_seen();
    let online_needed = t.onboarding_online_share * f64::from(purchased);
    let past_onboarding =
        today.end >= today.activation + u64::from(t.onboarding_days) * crate::config::DAY_MS;
    let never_online = past_onboarding && (known as f64) < online_needed;
    Reading {
        breached: Some(!overdue.is_empty() || never_online),
        metric: overdue.len() as f64,
        threshold: 0.0,
        evidence: format!(
            "{known} of {purchased} purchased devices ever online; overdue milestones: {}",
            if overdue.is_empty() {
                "none".to_string()
            } else {
                overdue.join(", ")
            }
        ),
    }
}
