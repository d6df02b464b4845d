//! Time to value: days from activation (first telemetry) to the end of the
//! day the first value milestone was reached.

use super::milestone::MilestoneSpec;
use crate::config::DAY_MS;
use crate::model::EventTime;

/// When the first value milestone was reached (`reached` in milestone
/// order), if it was.
pub(crate) fn value_reached_at(
    milestones: &[MilestoneSpec],
    reached: &[Option<EventTime>],
) -> Option<EventTime> {
    milestones
        .iter()
        .zip(reached)
        .find(|(m, _)| m.value)
        .and_then(|(_, r)| *r)
}

/// Days from `activation` to `reached_at`.
pub(crate) fn days(activation: EventTime, reached_at: EventTime) -> f64 {
    reached_at.saturating_sub(activation) as f64 / DAY_MS as f64
}
