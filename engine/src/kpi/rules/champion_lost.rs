//! champion_lost: the operator who dominated the 28-day baseline stopped
//! appearing. An open episode follows its champion until they are back,
//! whoever leads the baseline meanwhile.

use std::collections::HashMap;

use super::Today;
use crate::kpi::risk::Reading;
use crate::model::Id;

/// The reading and the champion it is about.
pub(super) fn reading(today: &Today<'_>) -> Option<(Reading, Id)> {
    if !today.settled {
        return None;
    }
    let t = today.thresholds();
    let journey = today.journey;
    let absent = t.champion_absent_days as usize;
    if let Some(champion) = journey.lost_champion() {
        let recent = journey.hours_of(champion, absent);
        return Some((
            Reading {
                breached: (recent > 0.0).then_some(false),
                metric: recent,
                threshold: 0.0,
                evidence: format!(
                    "champion {champion} is back: {recent:.0} h in the last {absent} days"
                ),
            },
            champion.clone(),
        ));
    }
    let days = journey.days();
    if days.len() < absent + 14 {
        return None;
    }
    let mut baseline: HashMap<&Id, f64> = HashMap::new();
    for day in days.iter().rev().skip(absent).take(28) {
        for (op, h) in day.operator_hours.iter() {
            *baseline.entry(op).or_default() += h;
        }
    }
    let total: f64 = baseline.values().sum();
    let mut ranked: Vec<(&Id, f64)> = baseline.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let (top, top_hours) = *ranked.first()?;
    let second = ranked.get(1).map_or(0.0, |r| r.1);
    let average = total / ranked.len() as f64;
    if top_hours < t.champion_dominance * average
        || top_hours < t.champion_lead * second
        || top_hours < t.champion_min_hours
    {
        // No operator stands out: there is no champion to lose.
        return None;
    }
    let recent = journey.hours_of(top, absent);
    Some((
        Reading {
            breached: (recent == 0.0).then_some(true),
            metric: recent,
            threshold: 0.0,
            evidence: format!(
                "champion {top} logged {top_hours:.0} h in the 28-day baseline ({:.1}x the next operator) and none in the last {absent} days",
                top_hours / second.max(1e-9)
            ),
        },
        top.clone(),
    ))
}
