//! devices_dark: telematics units that reported before and went silent, told
//! apart from parked machines that still send heartbeats.

use super::{Today, verdict};
use crate::config::DAY_MS;
use crate::kpi::risk::Reading;

pub(super) fn reading(today: &Today<'_>) -> Option<Reading> {
    let t = today.thresholds();
    let silent_since = today
        .end
        .saturating_sub(u64::from(t.dark_after_days) * DAY_MS);
    let known = today.journey.devices_seen();
    let dark = today.journey.devices_silent_since(silent_since);
    let fire_at = (t.dark_share * known as f64).max(f64::from(t.dark_min_devices));
    (known > 0).then(|| Reading {
        breached: verdict(dark as f64 >= fire_at, (dark as f64) < fire_at / 2.0),
        metric: dark as f64,
        threshold: fire_at,
        evidence: format!(
            "{dark} of {known} devices that reported before have sent nothing for {} days or more (parked machines that still send heartbeats are not counted)",
            t.dark_after_days
        ),
    })
}
