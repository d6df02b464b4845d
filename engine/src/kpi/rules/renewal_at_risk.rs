//! renewal_at_risk: renewal is near and the customer is not green.

use super::Today;
use crate::kpi::health::Band;
use crate::kpi::risk::Reading;

pub(super) fn reading(today: &Today<'_>) -> Reading {
    let t = today.thresholds();
    let days = today.days_to_renewal;
    let in_window = (0.0..=f64::from(t.renewal_window_days)).contains(&days);
    Reading {
        breached: Some(in_window && today.band != Band::Green),
        metric: days,
        threshold: f64::from(t.renewal_window_days),
        evidence: format!(
            "renewal in {days:.0} days with health {:.0} ({})",
            today.score,
            today.band.as_str()
        ),
    }
}
