//! coverage_gap: a cadence of the segment's coverage model is overdue (no
//! qualifying touchpoint in time); resolves when one lands.
//!
//! Unlike the other rules it reads the CS team's touchpoints and the
//! calendar, not telemetry, so it is evaluated over a customer's
//! touchpoints up to a day (`as_of`) rather than as a telemetry day closes.
//!
//! Days are midnight UTC (ms). The first touchpoint is due on
//! `contract start + first_within_days`, each next one `every_days` after
//! the last; a touchpoint on the due day is in time. A gap opens at the end
//! of the due day and resolves at the end of the day a qualifying touchpoint
//! took place.

use crate::kpi::coverage::Cadence;
use crate::kpi::touchpoint::Touchpoint;
use crate::model::EventTime;

const DAY_MS: u64 = 86_400_000;

/// One episode of an overdue cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The day the touchpoint was due (midnight UTC).
    pub due_at: EventTime,
    /// When the gap opened: the end of the due day.
    pub opened_at: EventTime,
    /// The end of the day the qualifying touchpoint took place; `None`
    /// while open.
    pub resolved_at: Option<EventTime>,
    /// The touchpoint before the gap; `None` for the first one.
    pub after: Option<EventTime>,
}

impl Gap {
    /// Whole days overdue at `as_of` (or at resolution).
    pub fn days_overdue(&self, as_of: EventTime) -> u64 {
        let until = self.resolved_at.unwrap_or(as_of).max(self.opened_at);
        (until - self.opened_at) / DAY_MS + 1
    }
}

/// Where a cadence stands at `as_of`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CadenceState {
    /// Its episodes, oldest first; the last is open when overdue now.
    pub gaps: Vec<Gap>,
    /// The last qualifying touchpoint (its day).
    pub last: Option<EventTime>,
    /// The next due day.
    pub due_at: EventTime,
}

impl CadenceState {
    /// The open gap, if the cadence is overdue at `as_of`.
    pub fn open(&self) -> Option<&Gap> {
        self.gaps.last().filter(|g| g.resolved_at.is_none())
    }
}

/// Whether `t` counts for `cadence`.
pub fn qualifies(cadence: &Cadence, t: &Touchpoint) -> bool {
    t.kind == cadence.kind && (t.decision_maker_present || !cadence.decision_maker)
}

/// The episodes of `cadence` for a customer whose contract started on
/// `contract_start`, from its `touchpoints` (any order, any kind) up to
/// `as_of` (exclusive: the end of the newest day known).
pub fn evaluate(
    cadence: &Cadence,
    contract_start: EventTime,
    touchpoints: &[Touchpoint],
    as_of: EventTime,
) -> CadenceState {
    let mut days: Vec<EventTime> = touchpoints
        .iter()
        .filter(|t| qualifies(cadence, t) && t.at >= contract_start && t.at < as_of)
        .map(|t| t.at - t.at % DAY_MS)
        .collect();
    days.sort_unstable();
    days.dedup();
    let mut state = CadenceState {
        gaps: Vec::new(),
        last: None,
        due_at: contract_start - contract_start % DAY_MS
            + u64::from(cadence.first_within_days) * DAY_MS,
    };
    for day in days {
        if day > state.due_at {
            state.gaps.push(Gap {
                due_at: state.due_at,
                opened_at: state.due_at + DAY_MS,
                resolved_at: Some(day + DAY_MS),
                after: state.last,
            });
        }
        state.last = Some(day);
        state.due_at = day + u64::from(cadence.every_days) * DAY_MS;
    }
    if as_of >= state.due_at + DAY_MS {
        state.gaps.push(Gap {
            due_at: state.due_at,
            opened_at: state.due_at + DAY_MS,
            resolved_at: None,
            after: state.last,
        });
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpi::touchpoint::TouchpointKind::{self, *};

    /// 2026-01-01, a Thursday.
    const START: u64 = 1_767_225_600_000;

    fn day(n: u64) -> EventTime {
        START + n * DAY_MS
    }

    fn review(n: u64, decision_maker: bool) -> Touchpoint {
        touch(BusinessReview, n, decision_maker)
    }

    fn touch(kind: TouchpointKind, n: u64, decision_maker: bool) -> Touchpoint {
        Touchpoint {
            customer: "acme".into(),
            kind,
            at: day(n),
            csm: "alice".into(),
            decision_maker_present: decision_maker,
            ..Touchpoint::default()
        }
    }

    /// High-touch: a business review with a decision-maker every 90 days,
    /// the first within 180.
    const EBR: Cadence = Cadence {
        kind: BusinessReview,
        every_days: 90,
        first_within_days: 180,
        decision_maker: true,
    };

    #[test]
    fn the_first_review_is_due_180_days_after_the_start() {
        // Day 180 is the due day: nothing is open at its end...
        let state = evaluate(&EBR, START, &[], day(180));
        assert_eq!(state.due_at, day(180));
        assert!(state.gaps.is_empty());
        // ...until the day has passed.
        let state = evaluate(&EBR, START, &[], day(181));
        assert_eq!(
            state.gaps,
            [Gap {
                due_at: day(180),
                opened_at: day(181),
                resolved_at: None,
                after: None
            }]
        );
        assert_eq!(state.open().unwrap().days_overdue(day(185)), 5);
    }

    #[test]
    fn a_review_on_the_due_day_is_in_time_and_sets_the_next_due_day() {
        let state = evaluate(&EBR, START, &[review(180, true)], day(300));
        assert_eq!(state.last, Some(day(180)));
        assert_eq!(state.due_at, day(270));
        // Day 270 passed at day 271: open since then.
        assert_eq!(state.gaps.len(), 1);
        assert_eq!(state.open().unwrap().opened_at, day(271));
        assert_eq!(state.open().unwrap().after, Some(day(180)));
    }

    #[test]
    fn a_late_review_resolves_the_gap_at_the_end_of_its_day() {
        let touchpoints = [review(100, true), review(200, true), review(250, true)];
        let state = evaluate(&EBR, START, &touchpoints, day(360));
        // 100 in time (due 180); next due 190: 200 is late (open 191 to
        // 201); next due 290: 250 in time; next due 340: open since 341.
        assert_eq!(
            state.gaps,
            [
                Gap {
                    due_at: day(190),
                    opened_at: day(191),
                    resolved_at: Some(day(201)),
                    after: Some(day(100))
                },
                Gap {
                    due_at: day(340),
                    opened_at: day(341),
                    resolved_at: None,
                    after: Some(day(250))
                },
            ]
        );
        assert_eq!(state.gaps[0].days_overdue(day(360)), 11);
        // Before the review of day 200 is known, the first gap is open.
        let state = evaluate(&EBR, START, &touchpoints, day(195));
        assert_eq!(state.open().unwrap().opened_at, day(191));
    }

    #[test]
    fn only_the_cadences_kind_with_a_decision_maker_counts() {
        let touchpoints = [
            review(50, false),
            touch(HealthCheckCall, 60, true),
            touch(Training, 70, true),
        ];
        let state = evaluate(&EBR, START, &touchpoints, day(200));
        assert_eq!(state.last, None);
        assert_eq!(state.open().unwrap().due_at, day(180));
        // Without the decision-maker requirement the review of day 50 counts.
        let any = Cadence {
            decision_maker: false,
            ..EBR
        };
        let state = evaluate(&any, START, &touchpoints, day(200));
        assert_eq!(state.last, Some(day(50)));
        assert_eq!(state.open().unwrap().due_at, day(140));
    }

    #[test]
    fn touchpoints_before_the_contract_or_after_as_of_do_not_count() {
        let before = Touchpoint {
            at: START - 10 * DAY_MS,
            ..review(0, true)
        };
        let state = evaluate(&EBR, START, &[before, review(150, true)], day(100));
        assert_eq!(state.last, None);
        assert!(state.gaps.is_empty());
    }
}
