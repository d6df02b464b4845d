//! champion_lost: the operator who dominated the 28-day baseline stopped
//! appearing. An open episode follows its champion until they are back,
//! whoever leads the baseline meanwhile.

use std::cmp::Ordering;
use std::sync::{Arc, Mutex};

use super::Today;
use crate::kpi::journey::Day;
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
    let Leaders {
        top,
        top_hours,
        second,
        average,
    } = journey
        .champion_baseline()
        .leaders(days.iter().rev().skip(absent).take(28))?;
    if top_hours < t.champion_dominance * average
        || top_hours < t.champion_lead * second
        || top_hours < t.champion_min_hours
    {
        // No operator stands out: there is no champion to lose.
        return None;
    }
    let recent = journey.hours_of(&top, absent);
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
        top,
    ))
}

/// Who leads a baseline: its first operator, their hours, the runner-up's
/// hours, and the mean over its operators.
#[derive(Debug, Clone)]
struct Leaders {
    top: Id,
    top_hours: f64,
    second: f64,
    average: f64,
}

/// The leaders of the last baseline drawn, with the days' operator lists
/// they were drawn from. The open day is judged twice an hour on a probe
/// copy of the journey whose baseline is the same closed days all day, so
/// a journey and its probes share one memo; holding the lists keeps their
/// addresses from being reused, so lists at the same addresses are the same
/// lists.
#[derive(Debug, Default)]
pub(crate) struct BaselineMemo(Mutex<Option<Drawn>>);

/// The days' operator lists a baseline was drawn from, and its leaders.
type Drawn = (Vec<Arc<[(Id, f64)]>>, Option<Leaders>);

impl BaselineMemo {
    /// The leaders of `days`, drawn again only for other days.
    fn leaders<'a>(&self, days: impl Iterator<Item = &'a Day> + Clone) -> Option<Leaders> {
        let mut memo = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let lists = || days.clone().map(|d| Arc::as_ptr(&d.operator_hours));
        if let Some((drawn_from, leaders)) = memo.as_ref()
            && drawn_from.iter().map(Arc::as_ptr).eq(lists())
        {
            return leaders.clone();
        }
        let hours = hours_per_operator(days.clone());
        let total: f64 = hours.iter().map(|(_, h)| h).sum();
        let leaders = ranked(&hours).map(|(top, top_hours, second)| Leaders {
            top: top.clone(),
            top_hours,
            second,
            average: total / hours.len() as f64,
        });
        let drawn_from = days.map(|d| d.operator_hours.clone()).collect();
        *memo = Some((drawn_from, leaders.clone()));
        leaders
    }
}

/// Each operator's hours over `days`, sorted by operator. The days a
/// worker closed share one allocation per operator, so the hours are added
/// up by address, and only the few ids of other allocations (days restored
/// from a file) are then compared by name.
fn hours_per_operator<'a>(days: impl Iterator<Item = &'a Day>) -> Vec<(&'a Id, f64)> {
    let mut by_address: foldhash::HashMap<*const u8, (&Id, f64)> = Default::default();
    for day in days {
        for (op, h) in day.operator_hours.iter() {
            let address = Arc::as_ptr(op).cast::<u8>();
            by_address.entry(address).or_insert((op, 0.0)).1 += h;
        }
    }
    let mut hours: Vec<_> = by_address.into_values().collect();
    add_up_by_operator(&mut hours);
    hours
}

/// Sorts `hours` by operator, one entry per operator.
fn add_up_by_operator(hours: &mut Vec<(&Id, f64)>) {
    hours.sort_by(|a, b| a.0.cmp(b.0));
    hours.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 += later.1;
        }
        same
    });
}

/// The operator with the most hours (the first by id among equals), their
/// hours, and the runner-up's hours (0 without one).
fn ranked<'a>(hours: &[(&'a Id, f64)]) -> Option<(&'a Id, f64, f64)> {
    let ahead = |a: &(&Id, f64), b: &(&Id, f64)| match a.1.total_cmp(&b.1) {
        Ordering::Equal => a.0 < b.0,
        more_or_less => more_or_less == Ordering::Greater,
    };
    let mut top = *hours.first()?;
    let mut second: Option<(&Id, f64)> = None;
    for &entry in &hours[1..] {
        if ahead(&entry, &top) {
            second = Some(top);
            top = entry;
        } else if second.is_none_or(|s| ahead(&entry, &s)) {
            second = Some(entry);
        }
    }
    Some((top.0, top.1, second.map_or(0.0, |s| s.1)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// The baseline as a map and a full sort: what the merge must equal.
    fn by_map(days: &[Day]) -> Option<(&Id, f64, f64, f64)> {
        let mut baseline: HashMap<&Id, f64> = HashMap::new();
        for day in days {
            for (op, h) in day.operator_hours.iter() {
                *baseline.entry(op).or_default() += h;
            }
        }
        let count = baseline.len() as f64;
        let total: f64 = baseline.values().sum();
        let mut ranked: Vec<(&Id, f64)> = baseline.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let (top, top_hours) = *ranked.first()?;
        Some((
            top,
            top_hours,
            ranked.get(1).map_or(0.0, |r| r.1),
            total / count,
        ))
    }

    /// One allocation per operator, as the days a worker closed share.
    static SHARED: std::sync::LazyLock<Vec<Id>> =
        std::sync::LazyLock::new(|| (0..12).map(|op| Id::from(format!("op-{op:02}"))).collect());

    /// Days of up to 8 of 12 operators, in whole quarter hours (sums exact
    /// in any order, ties common); some days with ids of their own
    /// allocations (read from a file), some lists unsorted or repeating an
    /// operator, as a file from an older version may hold.
    fn days() -> impl Strategy<Value = Vec<Day>> {
        let day = (
            prop::collection::vec((0..12usize, 0..40u32), 0..8),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(entries, keep_order, shared)| {
                let id = |op: usize| match shared {
                    true => SHARED[op].clone(),
                    false => Id::from(format!("op-{op:02}")),
                };
                let mut hours: Vec<(Id, f64)> = entries
                    .into_iter()
                    .map(|(op, quarters)| (id(op), quarters as f64 / 4.0))
                    .collect();
                if !keep_order {
                    hours.sort_by(|a, b| a.0.cmp(&b.0));
                    hours.dedup_by(|a, b| a.0 == b.0);
                }
                Day {
                    operator_hours: Arc::from(hours),
                    ..Day::default()
                }
            });
        prop::collection::vec(day, 0..30)
    }

    proptest! {
        #[test]
        fn the_baseline_ranks_as_a_map_of_names_and_a_sort(days in days()) {
            let hours = hours_per_operator(days.iter());
            prop_assert!(hours.is_sorted_by(|a, b| a.0 < b.0));
            let total: f64 = hours.iter().map(|(_, h)| h).sum();
            let ours = ranked(&hours)
                .map(|(top, top_hours, second)| (top, top_hours, second, total / hours.len() as f64));
            prop_assert_eq!(ours, by_map(&days));
        }

        #[test]
        fn the_memo_answers_for_the_days_asked_about(
            first in days(),
            mut second in days(),
            changed in 0..30usize,
        ) {
            // The second days are the first with one day's hours raised
            // (its list replaced), when there is a day to change.
            if !first.is_empty() {
                second = first.clone();
                let i = changed % second.len();
                let raised: Vec<(Id, f64)> = (second[i].operator_hours.iter())
                    .map(|(op, h)| (op.clone(), 2.0 * h + 0.25))
                    .collect();
                second[i].operator_hours = Arc::from(raised);
            }
            let memo = BaselineMemo::default();
            for days in [&first, &first, &second, &first] {
                let ours = memo
                    .leaders(days.iter())
                    .map(|l| (l.top, l.top_hours, l.second, l.average));
                let expected = by_map(days).map(|(top, hours, second, average)| {
                    (top.clone(), hours, second, average)
                });
                prop_assert_eq!(ours, expected);
            }
        }
    }
}
