//! Usage growth: mean daily operating hours of the last 7 days against the
//! up to 28 days before them. It drives the health trend component, the
//! usage_drop rule and the portfolio's managed-against-unmanaged figures.

use std::collections::VecDeque;

use super::journey::Day;

/// Growth (minus 1: 0 is flat) over the closed `days`, oldest first; `None`
/// without two weeks of baseline or with an idle baseline.
pub(crate) fn of(days: &VecDeque<Day>) -> Option<f64> {
    before(days, 0)
}

/// [`of`] as it was `back` days ago (the newest `back` days left out).
pub(crate) fn before(days: &VecDeque<Day>, back: usize) -> Option<f64> {
    if days.len() < back + 7 + 14 {
        return None;
    }
    let mean = |skip: usize, take: usize| {
        let (sum, n) = days
            .iter()
            .rev()
            .skip(back + skip)
            .take(take)
            .fold((0.0, 0usize), |(s, n), d| (s + d.operating_hours, n + 1));
        if n == 0 { 0.0 } else { sum / n as f64 }
    };
    let (recent, baseline) = (mean(0, 7), mean(7, 28));
    (baseline > 0.0).then(|| recent / baseline - 1.0)
}
