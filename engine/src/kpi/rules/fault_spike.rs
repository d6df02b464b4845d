//! fault_spike: the last 3 days' faults per operating hour against the 28
//! days before.

use super::{Today, verdict};
use crate::kpi::risk::Reading;

pub(super) fn reading(today: &Today<'_>) -> Option<Reading> {
    let t = today.thresholds();
    let days = today.journey.days();
    if days.len() < 3 + 14 {
        return None;
    }
    let totals = |skip: usize, take: usize| {
        days.iter()
            .rev()
            .skip(skip)
            .take(take)
            .fold((0u64, 0.0), |(f, h), d| {
                (f + d.fault_count, h + d.operating_hours)
            })
    };
    let (faults, hours) = totals(0, 3);
    let (base_faults, base_hours) = totals(3, 28);
    // A floor on the baseline rate, so a customer with almost no faults
    // does not spike on a handful.
    let base_rate = (base_faults as f64 / base_hours.max(1.0)).max(0.02);
    let rate = faults as f64 / hours.max(1.0);
    let ratio = rate / base_rate;
    Some(Reading {
        breached: verdict(
            ratio >= t.fault_spike_ratio && faults >= t.fault_spike_min_faults,
            ratio < t.fault_spike_resolve_ratio,
        ),
        metric: ratio,
        threshold: t.fault_spike_ratio,
        evidence: format!(
            "{faults} faults in the last 3 days: {rate:.2} per operating hour, {ratio:.1}x the 28-day baseline of {base_rate:.2}"
        ),
    })
}
