//! The impact of each kind of CS activity on usage and on outcomes, by
//! difference in differences: did customers use their machines more, and
//! meet more of their outcome targets, after a training (a business
//! review, ...) than comparable customers who had none?
//!
//! For each touchpoint (a **case**) on day `d` of customer `c`, with a
//! window of `N` days (default [`DEFAULT_WINDOW_DAYS`]):
//!
//! - the customer's change: the log of mean daily operating hours over
//!   `[d, d + N)` over those of `[d - N, d)` (logs, so that a fleet
//!   ramping up from almost nothing does not swamp everything else);
//! - the controls' change: the same over the same days for every customer
//!   of the same segment and lifecycle stage (on the day before `d`, when
//!   known) with no touchpoint at all in `[d - N, d + N)`, averaged;
//! - the case's effect: the customer's change minus the controls'.
//!
//! The estimate for a kind is the mean effect over its cases, reported as a
//! change of hours (`exp(mean) - 1`: 0.12 is +12%), with a 95% confidence
//! interval from Student's t. The interval adds to the cases' spread that
//! of the control customers, since one control serves many cases and its
//! noise does not average out over them (Welch-Satterthwaite degrees of
//! freedom). A case needs every day of both windows for the customer and at
//! least one control, each with hours before; cases without are left out
//! (and counted as such).
//!
//! **Outcomes** go through the same machinery with the customer's daily
//! **outcome attainment**: the share (0-100) of its outcomes evaluated on
//! the day window that met their target that day (the outcome records of
//! the day). That is the quantity the health score's outcome component
//! averages, but taken per day: the component is a trailing 7-day mean, so
//! its "after" window would still hold the 6 days before the touchpoint and
//! its days would not be independent. It is the one outcome figure every
//! customer has on the same scale, whatever outcomes it defined. A day with
//! nothing to measure (no cycles, no hours) has no attainment, as the
//! outcome streaks treat it (neither met nor missed); a window's mean is
//! over the days that have one, and needs them on at least half of its
//! days. The change is a **difference** of means in points (not a log
//! ratio as for hours): attainment is a bounded share that is often 0 or
//! 100, where a ratio is undefined or explodes, and "+25 points of outcome
//! attainment" is what a CS team reads. Controls are chosen as for hours.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::health::Stage;
use super::outcome::OutcomeRecord;
use super::touchpoint::{Touchpoint, TouchpointKind};
use crate::customer::Segment;
use crate::model::{EventTime, Id};

/// Days before and after a touchpoint compared when none are asked for.
pub const DEFAULT_WINDOW_DAYS: u32 = 28;

const DAY_MS: u64 = 86_400_000;

/// A customer's daily operating hours: day start (ms) -> hours.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DailyUsage {
    /// Customer id.
    pub customer: Id,
    /// Coverage segment: controls come from the same one.
    pub segment: Segment,
    /// Operating hours per day, keyed by the day's local date (00:00 UTC
    /// of it, as touchpoints are dated), so days and touchpoints meet in
    /// any time zone.
    pub hours: BTreeMap<EventTime, f64>,
    /// Lifecycle stage at the end of each day, keyed as `hours` (from the
    /// health records; may be empty).
    pub stages: BTreeMap<EventTime, Stage>,
    /// Outcome attainment per day (0-100: share of the outcomes evaluated
    /// that day that met their target), keyed as `hours`; days with
    /// nothing evaluated are absent.
    pub attainment: BTreeMap<EventTime, f64>,
}

impl DailyUsage {
    /// Mean hours over the `days` days from `from`; `None` unless every
    /// day is there.
    fn mean(&self, from: EventTime, days: u32) -> Option<f64> {
        let end = from + u64::from(days) * DAY_MS;
        let values: Vec<f64> = self.hours.range(from..end).map(|(_, h)| *h).collect();
        (values.len() == days as usize && days > 0)
            .then(|| values.iter().sum::<f64>() / f64::from(days))
    }

    /// Log of the mean hours after `at` over those before; `None` without
    /// hours on either side.
    fn change(&self, at: EventTime, days: u32) -> Option<f64> {
        let span = u64::from(days) * DAY_MS;
        let before = self.mean(at.checked_sub(span)?, days)?;
        let after = self.mean(at, days)?;
        (before > 0.0 && after > 0.0).then(|| (after / before).ln())
    }

    /// Mean attainment over the `days` days from `from`, over the days
    /// that have one; `None` unless at least half of them do.
    fn mean_attainment(&self, from: EventTime, days: u32) -> Option<f64> {
        let end = from + u64::from(days) * DAY_MS;
        let values: Vec<f64> = self.attainment.range(from..end).map(|(_, a)| *a).collect();
        (days > 0 && 2 * values.len() >= days as usize)
            .then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// Mean attainment after `at` minus that before, in points.
    fn attainment_change(&self, at: EventTime, days: u32) -> Option<f64> {
        let span = u64::from(days) * DAY_MS;
        let before = self.mean_attainment(at.checked_sub(span)?, days)?;
        Some(self.mean_attainment(at, days)? - before)
    }

    /// The change of `measure` around `at`.
    fn change_of(&self, measure: Measure, at: EventTime, days: u32) -> Option<f64> {
        match measure {
            Measure::Hours => self.change(at, days),
            Measure::Attainment => self.attainment_change(at, days),
        }
    }

    /// The stage on the day before `at`.
    fn stage_before(&self, at: EventTime) -> Option<Stage> {
        self.stages.get(&at.checked_sub(DAY_MS)?).copied()
    }
}

/// Daily outcome attainment from a customer's outcome records of the day
/// window: per day start, 100 times the outcomes met over those evaluated
/// (a defined value); days with none evaluated are left out.
pub fn daily_attainment<'a>(
    records: impl IntoIterator<Item = &'a OutcomeRecord>,
) -> BTreeMap<EventTime, f64> {
    let mut days: BTreeMap<EventTime, (u32, u32)> = BTreeMap::new();
    for r in records.into_iter().filter(|r| !r.value.is_nan()) {
        let (met, evaluated) = days.entry(r.window_start).or_default();
        *met += u32::from(r.met);
        *evaluated += 1;
    }
    days.into_iter()
        .map(|(day, (met, evaluated))| (day, 100.0 * f64::from(met) / f64::from(evaluated)))
        .collect()
}

/// The estimated impact of one kind of activity.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    /// The kind of activity.
    pub kind: TouchpointKind,
    /// Days compared before and after.
    pub window_days: u32,
    /// Cases the estimate is made from (customer days with a touchpoint of
    /// the kind).
    pub cases: u32,
    /// Customer days with a touchpoint of the kind left out: a window not
    /// fully in the data, no hours before, or no control.
    pub left_out: u32,
    /// Mean controls per case.
    pub controls: f64,
    /// Estimated change of operating hours against the controls (0.12:
    /// +12%).
    pub effect: f64,
    /// 95% confidence interval, low end; `None` with fewer than 2 cases.
    pub ci_low: Option<f64>,
    /// 95% confidence interval, high end.
    pub ci_high: Option<f64>,
    /// Cases of the outcome estimate (the customer and a control with
    /// attainment on at least half the days of both windows).
    pub outcome_cases: u32,
    /// Customer days with a touchpoint of the kind left out of the outcome
    /// estimate.
    pub outcome_left_out: u32,
    /// Mean controls per case of the outcome estimate.
    pub outcome_controls: f64,
    /// Estimated change of daily outcome attainment against the controls,
    /// in points of 0-100 (25.0: +25 points); `None` without cases.
    pub outcome_effect: Option<f64>,
    /// 95% confidence interval of the outcome effect, low end (points);
    /// `None` with fewer than 2 cases.
    pub outcome_ci_low: Option<f64>,
    /// 95% confidence interval of the outcome effect, high end (points).
    pub outcome_ci_high: Option<f64>,
}

impl Impact {
    /// The interval excludes 0.
    pub fn significant(&self) -> bool {
        matches!((self.ci_low, self.ci_high), (Some(lo), Some(hi)) if lo > 0.0 || hi < 0.0)
    }

    /// The outcome interval excludes 0.
    pub fn outcome_significant(&self) -> bool {
        matches!((self.outcome_ci_low, self.outcome_ci_high), (Some(lo), Some(hi)) if lo > 0.0 || hi < 0.0)
    }
}

/// What a case's change is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// Log of mean daily operating hours.
    Hours,
    /// Mean daily outcome attainment, points.
    Attainment,
}

/// One difference-in-differences estimate, on the measure's own scale.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Estimate {
    cases: u32,
    left_out: u32,
    controls: f64,
    /// Mean effect; NaN without cases.
    mean: f64,
    /// Half the 95% interval; `None` with fewer than 2 cases.
    half: Option<f64>,
}

/// The impact of each kind of activity among `touchpoints`, from `usage`,
/// over windows of `window_days`; kinds in [`TouchpointKind::ALL`] order,
/// those without touchpoints left out.
pub fn impact(touchpoints: &[Touchpoint], usage: &[DailyUsage], window_days: u32) -> Vec<Impact> {
    let mut out = Vec::new();
    let mut hours_of = Controls::new(touchpoints, usage, window_days, Measure::Hours);
    let mut outcome_of = Controls::new(touchpoints, usage, window_days, Measure::Attainment);
    for kind in TouchpointKind::ALL {
        let hours = hours_of.estimate(kind);
        if hours.cases == 0 && hours.left_out == 0 {
            continue;
        }
        let outcome = outcome_of.estimate(kind);
        out.push(Impact {
            kind,
            window_days,
            cases: hours.cases,
            left_out: hours.left_out,
            controls: hours.controls,
            effect: hours.mean.exp_m1(),
            ci_low: hours.half.map(|h| (hours.mean - h).exp_m1()),
            ci_high: hours.half.map(|h| (hours.mean + h).exp_m1()),
            outcome_cases: outcome.cases,
            outcome_left_out: outcome.left_out,
            outcome_controls: outcome.controls,
            outcome_effect: (outcome.cases > 0).then_some(outcome.mean),
            outcome_ci_low: outcome.half.map(|h| outcome.mean - h),
            outcome_ci_high: outcome.half.map(|h| outcome.mean + h),
        });
    }
    out
}

/// The control customers of one measure, found once for every kind of
/// activity. A case's controls depend only on its segment, its day and its
/// stage the day before (the treated customer is never its own control: its
/// touchpoint is in its window), so they are found once per such group,
/// not once per case: the dashboard asks for this on every visit, and case
/// by case it grew with the square of the customers (2,000 customers with
/// four touchpoints each took 0.7 s, BENCHMARKS.md section 30).
struct Controls<'a> {
    touchpoints: &'a [Touchpoint],
    window_days: u32,
    measure: Measure,
    by_customer: HashMap<&'a str, &'a DailyUsage>,
    by_segment: HashMap<Segment, Vec<&'a DailyUsage>>,
    touched: HashMap<&'a str, Vec<EventTime>>,
    /// The quiet customers of a segment on a day with a change, and their
    /// stage the day before.
    quiet: HashMap<(Segment, EventTime), Vec<Quiet<'a>>>,
    groups: HashMap<GroupKey, Group<'a>>,
}

/// A customer without a touchpoint around a day: its id, its stage the
/// day before and its change.
type Quiet<'a> = (&'a str, Option<Stage>, f64);

/// A case's segment, day and stage the day before.
type GroupKey = (Segment, EventTime, Option<Stage>);

impl<'a> Controls<'a> {
    fn new(
        touchpoints: &'a [Touchpoint],
        usage: &'a [DailyUsage],
        window_days: u32,
        measure: Measure,
    ) -> Self {
        let mut touched: HashMap<&str, Vec<EventTime>> = HashMap::new();
        for t in touchpoints {
            touched.entry(&t.customer).or_default().push(t.at);
        }
        let mut by_segment: HashMap<Segment, Vec<&DailyUsage>> = HashMap::new();
        for u in usage {
            by_segment.entry(u.segment).or_default().push(u);
        }
        Self {
            touchpoints,
            window_days,
            measure,
            by_customer: usage.iter().map(|u| (&*u.customer, u)).collect(),
            by_segment,
            touched,
            quiet: HashMap::new(),
            groups: HashMap::new(),
        }
    }

    /// The controls of the cases of `key`.
    fn group(&mut self, key: GroupKey) -> &Group<'a> {
        let (segment, at, stage) = key;
        let Self {
            window_days,
            measure,
            by_segment,
            touched,
            quiet,
            groups,
            ..
        } = self;
        groups.entry(key).or_insert_with(|| {
            let span = u64::from(*window_days) * DAY_MS;
            let quiet_ones = quiet.entry((segment, at)).or_insert_with(|| {
                (by_segment.get(&segment).into_iter().flatten())
                    .filter(|u| {
                        touched.get(&*u.customer).is_none_or(|days| {
                            days.iter().all(|&d| d + span < at || d >= at + span)
                        })
                    })
                    .filter_map(|u| {
                        let c = u.change_of(*measure, at, *window_days)?;
                        Some((&*u.customer, u.stage_before(at), c))
                    })
                    .collect()
            });
            Group::of(
                quiet_ones
                    .iter()
                    .filter(|(_, theirs, _)| match (stage, theirs) {
                        (Some(a), Some(b)) => a == *b,
                        _ => true,
                    })
                    .map(|(customer, _, c)| (*customer, *c))
                    .collect(),
            )
        })
    }

    /// The difference-in-differences estimate of `kind`.
    fn estimate(&mut self, kind: TouchpointKind) -> Estimate {
        let mut effects = Vec::new();
        let mut served: HashMap<GroupKey, u32> = HashMap::new();
        let (mut left_out, mut controls_total) = (0u32, 0usize);
        // A case is a customer's day with a touchpoint of the kind: two
        // CSMs at one review (or one CSM spelled two ways) are one case,
        // not two that look like a significant effect.
        let mut days = std::collections::HashSet::new();
        for t in self.touchpoints.iter().filter(|t| t.kind == kind) {
            let at = t.at - t.at % DAY_MS;
            if !days.insert((&*t.customer, at)) {
                continue;
            }
            let case = self
                .by_customer
                .get(&*t.customer)
                .copied()
                .and_then(|treated| {
                    let change = treated.change_of(self.measure, at, self.window_days)?;
                    let key = (treated.segment, at, treated.stage_before(at));
                    let group = self.group(key);
                    (!group.controls.is_empty()).then_some((
                        change,
                        group.mean,
                        group.controls.len(),
                        key,
                    ))
                });
            let Some((change, mean, k, key)) = case else {
                left_out += 1;
                continue;
            };
            effects.push(change - mean);
            controls_total += k;
            *served.entry(key).or_default() += 1;
        }
        // Each control customer's changes over the cases it served, and its
        // weight in the estimate (1 / controls of each such case).
        let mut control_changes: HashMap<&str, (f64, u32, f64)> = HashMap::new();
        for (key, cases) in &served {
            let group = &self.groups[key];
            let k = group.controls.len() as f64;
            for (customer, c) in &group.controls {
                let (sum, n, w) = control_changes.entry(customer).or_default();
                *sum += c * f64::from(*cases);
                *n += cases;
                *w += f64::from(*cases) / k;
            }
        }
        let per_control: Vec<(f64, f64)> = control_changes
            .values()
            .map(|(sum, cases, w)| (sum / f64::from(*cases), *w))
            .collect();
        Estimate::of(&effects, left_out, controls_total, &per_control)
    }
}

/// The controls of the cases that share a segment, a day and a stage.
struct Group<'a> {
    /// Each control's change.
    controls: Vec<(&'a str, f64)>,
    /// Their mean change.
    mean: f64,
}

impl<'a> Group<'a> {
    fn of(controls: Vec<(&'a str, f64)>) -> Self {
        let mean = controls.iter().map(|(_, c)| c).sum::<f64>() / controls.len() as f64;
        Self { controls, mean }
    }
}

impl Estimate {
    /// The estimate from the cases' effects, the touchpoints left out, the
    /// controls of every case together, and each control customer's mean
    /// change and weight.
    fn of(
        effects: &[f64],
        left_out: u32,
        controls_total: usize,
        per_control: &[(f64, f64)],
    ) -> Self {
        let n = effects.len();
        Self {
            cases: n as u32,
            left_out,
            controls: if n == 0 {
                0.0
            } else {
                controls_total as f64 / n as f64
            },
            mean: mean_of(effects),
            half: interval(effects, per_control),
        }
    }
}

fn mean_of(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

fn variance(values: &[f64]) -> f64 {
    let m = mean_of(values);
    values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64
}

/// Half the 95% interval of the mean effect (log scale): the cases'
/// spread, plus the spread of the control customers (`(mean change,
/// weight)` each): their noise is shared by every case they serve, so it
/// shrinks with their effective number `(sum w)^2 / sum w^2`, not with the
/// cases'; Welch-Satterthwaite degrees of freedom. `None` with fewer than
/// 2 cases.
fn interval(effects: &[f64], controls: &[(f64, f64)]) -> Option<f64> {
    let n = effects.len();
    if n < 2 {
        return None;
    }
    let a = variance(effects) / n as f64;
    let changes: Vec<f64> = controls.iter().map(|(c, _)| *c).collect();
    let (sum, squares) = controls
        .iter()
        .fold((0.0, 0.0), |(s, q), (_, w)| (s + w, q + w * w));
    let effective = if squares > 0.0 {
        sum * sum / squares
    } else {
        0.0
    };
    let b = if controls.len() >= 2 {
        variance(&changes) / effective
    } else {
        0.0
    };
    let df = if b > 0.0 {
        (a + b).powi(2) / (a * a / (n - 1) as f64 + b * b / (effective - 1.0).max(1.0))
    } else {
        (n - 1) as f64
    };
    Some(t_975(df.floor().max(1.0) as usize) * (a + b).sqrt())
}

/// Student's t, 97.5th percentile, for `df` degrees of freedom (two-sided
/// 95%); beyond 30 a close approximation (within 0.002).
fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        _ => 1.96 + 2.5 / df as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D0: u64 = 1_767_225_600_000;

    fn day(n: u64) -> EventTime {
        D0 + n * DAY_MS
    }

    /// `hours(d)` for days 0..days.
    fn usage(id: &str, segment: Segment, days: u64, hours: impl Fn(u64) -> f64) -> DailyUsage {
        DailyUsage {
            customer: id.into(),
            segment,
            hours: (0..days).map(|d| (day(d), hours(d))).collect(),
            stages: BTreeMap::new(),
            attainment: BTreeMap::new(),
        }
    }

    fn touch(id: &str, kind: TouchpointKind, d: u64) -> Touchpoint {
        Touchpoint {
            customer: id.into(),
            kind,
            at: day(d),
            ..Touchpoint::default()
        }
    }

    use TouchpointKind::*;

    #[test]
    fn one_case_worked_out_by_hand() {
        // a: 10 h/day, 13 h/day from its training on day 28 (x1.3); the
        // controls b and c grow x1.1 and x1 over the same days; in logs the
        // effect is ln 1.3 - (ln 1.1 + ln 1) / 2, i.e. 1.3 / sqrt(1.1) - 1.
        // d is of another segment.
        let fleet = [
            usage(
                "a",
                Segment::LowTouch,
                56,
                |d| if d < 28 { 10.0 } else { 13.0 },
            ),
            usage(
                "b",
                Segment::LowTouch,
                56,
                |d| if d < 28 { 20.0 } else { 22.0 },
            ),
            usage("c", Segment::LowTouch, 56, |_| 5.0),
            usage(
                "d",
                Segment::HighTouch,
                56,
                |d| if d < 28 { 1.0 } else { 9.0 },
            ),
        ];
        let got = impact(&[touch("a", Training, 28)], &fleet, 28);
        assert_eq!(got.len(), 1);
        let i = got[0];
        assert_eq!((i.kind, i.cases, i.left_out), (Training, 1, 0));
        assert!(
            (i.effect - (1.3 / 1.1f64.sqrt() - 1.0)).abs() < 1e-12,
            "{}",
            i.effect
        );
        assert_eq!(i.controls, 2.0);
        assert_eq!((i.ci_low, i.ci_high), (None, None));
    }

    #[test]
    fn several_cases_give_a_t_interval() {
        // Three trainings with lifts x1.2, x1.3, x1.4 against flat controls
        // z and y: the log effects, their mean m and sample sd s; the
        // controls do not vary, so the interval is m -/+ t(2) s / sqrt(3).
        let lifted =
            |lift: f64, from: u64| move |d: u64| if d < from { 10.0 } else { 10.0 * (1.0 + lift) };
        let fleet = [
            usage("a", Segment::HighTouch, 60, lifted(0.2, 28)),
            usage("b", Segment::HighTouch, 60, lifted(0.3, 29)),
            usage("c", Segment::HighTouch, 60, lifted(0.4, 30)),
            usage("z", Segment::HighTouch, 60, |_| 7.0),
            usage("y", Segment::HighTouch, 60, |_| 3.0),
        ];
        let touchpoints = [
            touch("a", Training, 28),
            touch("b", Training, 29),
            touch("c", Training, 30),
            touch("z", Webinar, 59),
        ];
        let got = impact(&touchpoints, &fleet, 28);
        let training = got.iter().find(|i| i.kind == Training).unwrap();
        assert_eq!(training.cases, 3);
        // Each case's controls are z and y (the others are treated, and z's
        // webinar lies beyond every window).
        assert_eq!(training.controls, 2.0);
        let logs = [1.2f64.ln(), 1.3f64.ln(), 1.4f64.ln()];
        let m = (logs[0] + logs[1] + logs[2]) / 3.0;
        let s = (logs.iter().map(|l| (l - m).powi(2)).sum::<f64>() / 2.0).sqrt();
        let half = 4.303 * s / 3f64.sqrt();
        assert!((training.effect - (m.exp() - 1.0)).abs() < 1e-9);
        assert!((training.ci_low.unwrap() - ((m - half).exp() - 1.0)).abs() < 1e-9);
        assert!((training.ci_high.unwrap() - ((m + half).exp() - 1.0)).abs() < 1e-9);
        assert!(training.significant());
        // z's webinar has no window after it in the data: left out.
        let webinar = got.iter().find(|i| i.kind == Webinar).unwrap();
        assert_eq!((webinar.cases, webinar.left_out), (0, 1));
    }

    /// Two CSMs at one business review, or one CSM spelled two ways: one
    /// case, the estimate as with one touchpoint (each counted as a case,
    /// one customer's day looked like a significant effect).
    #[test]
    fn a_customer_s_day_is_one_case_however_many_touchpoints_it_holds() {
        // a and c of the case worked out by hand.
        let fleet = [
            usage("a", Segment::LowTouch, 56, |d| 10.0 + 3.0 * (d / 28) as f64),
            usage("c", Segment::LowTouch, 56, |_| 5.0),
        ];
        let once = impact(&[touch("a", Training, 28)], &fleet, 28);
        let csm = |name: &str| Touchpoint {
            csm: name.into(),
            ..touch("a", Training, 28)
        };
        let thrice = impact(&[csm("Alice"), csm("alice"), csm("Bob")], &fleet, 28);
        assert_eq!(once[0].cases, 1);
        assert_eq!(thrice, once);
    }

    #[test]
    fn customers_with_a_touchpoint_in_the_window_are_no_controls() {
        let fleet = [
            usage(
                "a",
                Segment::LowTouch,
                56,
                |d| if d < 28 { 10.0 } else { 12.0 },
            ),
            usage(
                "b",
                Segment::LowTouch,
                56,
                |d| if d < 28 { 10.0 } else { 30.0 },
            ),
        ];
        // b had an escalation inside a's window (on day 40, or on its
        // first and last days, 0 and 55): no control left. A day before it
        // or after it leaves b one.
        for (escalation, controls) in [(40, 0), (0, 0), (55, 0), (56, 1)] {
            let got = impact(
                &[touch("a", Training, 28), touch("b", Escalation, escalation)],
                &fleet,
                28,
            );
            let training = got.iter().find(|i| i.kind == Training).unwrap();
            assert_eq!(
                (training.cases, training.left_out),
                (controls, 1 - controls),
                "escalation on day {escalation}"
            );
        }
    }

    #[test]
    fn controls_share_the_stage_of_the_day_before() {
        let mut fleet = [
            usage(
                "a",
                Segment::LowTouch,
                56,
                |d| if d < 28 { 10.0 } else { 12.0 },
            ),
            usage("b", Segment::LowTouch, 56, |_| 10.0),
            usage(
                "c",
                Segment::LowTouch,
                56,
                |d| if d < 28 { 10.0 } else { 5.0 },
            ),
        ];
        fleet[0].stages.insert(day(27), Stage::Renew);
        fleet[1].stages.insert(day(27), Stage::Renew);
        fleet[2].stages.insert(day(27), Stage::Grow);
        let got = impact(&[touch("a", Training, 28)], &fleet, 28);
        // Only b (renew, flat) is a control: x1.2 against x1.
        assert_eq!(got[0].controls, 1.0);
        assert!((got[0].effect - 0.2).abs() < 1e-12);
    }

    #[test]
    fn noisy_controls_widen_the_interval() {
        // Two controls that disagree (x1.5 and x0.5) serve every case: the
        // interval must cover their disagreement, not only the cases'.
        let lifted = |lift: f64, from: u64| move |d: u64| if d < from { 10.0 } else { 10.0 * lift };
        let fleet = [
            usage("a", Segment::HighTouch, 60, lifted(1.2, 28)),
            usage("b", Segment::HighTouch, 60, lifted(1.2, 28)),
            usage("c", Segment::HighTouch, 60, lifted(1.2, 28)),
            usage("y", Segment::HighTouch, 60, lifted(1.5, 28)),
            usage("z", Segment::HighTouch, 60, lifted(0.5, 28)),
        ];
        let touchpoints = [
            touch("a", Training, 28),
            touch("b", Training, 28),
            touch("c", Training, 28),
        ];
        let training = impact(&touchpoints, &fleet, 28)[0];
        assert_eq!(training.cases, 3);
        // Every case: ln 1.2 - (ln 1.5 + ln 0.5) / 2; no spread among the
        // cases, all of it from the controls: t(1) * sd / sqrt(2).
        let m = 1.2f64.ln() - (1.5f64.ln() + 0.5f64.ln()) / 2.0;
        let sd = (1.5f64.ln() - 0.5f64.ln()).abs() / 2f64.sqrt();
        let half = 12.706 * sd / 2f64.sqrt();
        assert!((training.effect - (m.exp() - 1.0)).abs() < 1e-9);
        assert!((training.ci_low.unwrap() - ((m - half).exp() - 1.0)).abs() < 1e-9);
        assert!(!training.significant());
    }

    #[test]
    fn outcome_attainment_is_a_difference_in_points() {
        // a meets 50% of its outcomes before its training on day 28 and
        // 100% after; control b goes from 50% to 60%, control c stays at
        // 80%: the effect is 50 - (10 + 0) / 2 = 45 points. b has no
        // attainment on its weekends (every 7th day): the mean is over the
        // days that have one.
        let mut fleet = [
            usage("a", Segment::LowTouch, 56, |_| 10.0),
            usage("b", Segment::LowTouch, 56, |_| 10.0),
            usage("c", Segment::LowTouch, 56, |_| 10.0),
        ];
        fleet[0].attainment = (0..56)
            .map(|d| (day(d), if d < 28 { 50.0 } else { 100.0 }))
            .collect();
        fleet[1].attainment = (0..56)
            .filter(|d| d % 7 != 6)
            .map(|d| (day(d), if d < 28 { 50.0 } else { 60.0 }))
            .collect();
        fleet[2].attainment = (0..56).map(|d| (day(d), 80.0)).collect();
        let got = impact(&[touch("a", Training, 28)], &fleet, 28)[0];
        assert_eq!((got.outcome_cases, got.outcome_left_out), (1, 0));
        assert_eq!(got.outcome_controls, 2.0);
        assert!((got.outcome_effect.unwrap() - 45.0).abs() < 1e-9);
        assert_eq!((got.outcome_ci_low, got.outcome_ci_high), (None, None));
        // The usage side is untouched: flat hours everywhere.
        assert!(got.effect.abs() < 1e-12);
    }

    #[test]
    fn outcome_windows_need_attainment_on_half_their_days() {
        let mut fleet = [
            usage("a", Segment::LowTouch, 56, |_| 10.0),
            usage("b", Segment::LowTouch, 56, |_| 10.0),
        ];
        // a has attainment on 13 of the 28 days after: left out of the
        // outcome estimate, kept in the usage one.
        fleet[0].attainment = (0..56)
            .filter(|&d| d < 28 || d % 2 == 0 && d < 54)
            .map(|d| (day(d), 50.0))
            .collect();
        fleet[1].attainment = (0..56).map(|d| (day(d), 50.0)).collect();
        let got = impact(&[touch("a", Training, 28)], &fleet, 28)[0];
        assert_eq!(
            (got.cases, got.outcome_cases, got.outcome_left_out),
            (1, 0, 1)
        );
        assert_eq!(got.outcome_effect, None);
        assert!(!got.outcome_significant());
    }

    #[test]
    fn outcome_intervals_from_several_cases() {
        // Lifts of 20, 30 and 40 points against flat controls: the interval
        // is the plain t interval of the three, in points.
        let fleet: Vec<DailyUsage> = [
            ("a", 20.0, 28),
            ("b", 30.0, 29),
            ("c", 40.0, 30),
            ("z", 0.0, 0),
        ]
        .into_iter()
        .map(|(id, lift, from)| {
            let mut u = usage(id, Segment::HighTouch, 60, |_| 8.0);
            u.attainment = (0..60)
                .map(|d| (day(d), if d < from { 50.0 } else { 50.0 + lift }))
                .collect();
            u
        })
        .collect();
        let touchpoints = [
            touch("a", Training, 28),
            touch("b", Training, 29),
            touch("c", Training, 30),
        ];
        let got = impact(&touchpoints, &fleet, 28)[0];
        assert_eq!(got.outcome_cases, 3);
        let half = 4.303 * 10.0 / 3f64.sqrt();
        assert!((got.outcome_effect.unwrap() - 30.0).abs() < 1e-9);
        assert!((got.outcome_ci_low.unwrap() - (30.0 - half)).abs() < 1e-9);
        assert!((got.outcome_ci_high.unwrap() - (30.0 + half)).abs() < 1e-9);
        assert!(got.outcome_significant());
    }

    #[test]
    fn attainment_counts_the_outcomes_evaluated_each_day() {
        let record = |outcome: &str, d: u64, value: f64, met: bool| OutcomeRecord {
            customer: "a".into(),
            outcome: outcome.into(),
            window: "1d".into(),
            window_start: day(d),
            window_end: day(d + 1),
            value,
            met,
            ..OutcomeRecord::default()
        };
        let records = [
            record("x", 0, 0.01, true),
            record("y", 0, 70.0, false),
            record("x", 1, 0.01, true),
            record("y", 1, f64::NAN, false),
            record("x", 2, f64::NAN, false),
            record("y", 2, f64::NAN, false),
        ];
        let got = daily_attainment(&records);
        assert_eq!(got, BTreeMap::from([(day(0), 50.0), (day(1), 100.0)]));
    }

    /// The estimate as first written, a case at a time: the reference the
    /// grouped one must equal.
    fn reference_estimate(
        touchpoints: &[Touchpoint],
        usage: &[DailyUsage],
        window_days: u32,
        kind: TouchpointKind,
        measure: Measure,
    ) -> Estimate {
        let span = u64::from(window_days) * DAY_MS;
        let by_customer: HashMap<&str, &DailyUsage> =
            usage.iter().map(|u| (&*u.customer, u)).collect();
        let mut touched: HashMap<&str, Vec<EventTime>> = HashMap::new();
        for t in touchpoints {
            touched.entry(&t.customer).or_default().push(t.at);
        }
        let quiet = |customer: &str, at: EventTime| {
            touched
                .get(customer)
                .is_none_or(|days| days.iter().all(|&d| d + span < at || d >= at + span))
        };
        let mut effects = Vec::new();
        // Each control customer's changes over the cases it served, and its
        // weight in the estimate (1 / controls of each such case).
        let mut control_changes: HashMap<&str, (Vec<f64>, f64)> = HashMap::new();
        let (mut left_out, mut controls_total) = (0u32, 0usize);
        let mut days = std::collections::HashSet::new();
        for t in touchpoints.iter().filter(|t| t.kind == kind) {
            let at = t.at - t.at % DAY_MS;
            if !days.insert((&*t.customer, at)) {
                continue; // The customer's day is one case.
            }
            let case = by_customer.get(&*t.customer).and_then(|treated| {
                let change = treated.change_of(measure, at, window_days)?;
                let controls: Vec<(&str, f64)> = usage
                    .iter()
                    .filter(|u| {
                        u.segment == treated.segment
                            && u.customer != treated.customer
                            && quiet(&u.customer, at)
                            && match (treated.stage_before(at), u.stage_before(at)) {
                                (Some(a), Some(b)) => a == b,
                                _ => true,
                            }
                    })
                    .filter_map(|u| Some((&*u.customer, u.change_of(measure, at, window_days)?)))
                    .collect();
                (!controls.is_empty()).then_some((change, controls))
            });
            let Some((change, controls)) = case else {
                left_out += 1;
                continue;
            };
            let k = controls.len() as f64;
            let mean = controls.iter().map(|(_, c)| c).sum::<f64>() / k;
            effects.push(change - mean);
            controls_total += controls.len();
            for (customer, c) in controls {
                let entry = control_changes.entry(customer).or_default();
                entry.0.push(c);
                entry.1 += 1.0 / k;
            }
        }
        let per_control: Vec<(f64, f64)> = control_changes
            .values()
            .map(|(c, w)| (mean_of(c), *w))
            .collect();
        Estimate::of(&effects, left_out, controls_total, &per_control)
    }

    /// Fleets of three segments whose stages change, with hours missing on
    /// some days, attainment on others, touchpoints of every kind on any
    /// day and several on one day: every figure of [`impact`] equals the
    /// one from the estimate made a case at a time (within rounding: the
    /// sums are taken in another order).
    #[test]
    fn grouped_controls_give_what_case_by_case_controls_give() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config::with_cases(64));
        let fleet = (4usize..40, any::<u64>(), 1u32..30, 1usize..120);
        runner
            .run(&fleet, |(customers, seed, window, touches)| {
                let (touchpoints, usage) = random_fleet(customers, seed, touches);
                let got = impact(&touchpoints, &usage, window);
                let mut want = Vec::new();
                for kind in TouchpointKind::ALL {
                    let h = reference_estimate(&touchpoints, &usage, window, kind, Measure::Hours);
                    if h.cases == 0 && h.left_out == 0 {
                        continue;
                    }
                    let o =
                        reference_estimate(&touchpoints, &usage, window, kind, Measure::Attainment);
                    want.push((kind, h, o));
                }
                prop_assert_eq!(got.len(), want.len());
                for (g, (kind, h, o)) in got.iter().zip(&want) {
                    prop_assert_eq!(g.kind, *kind);
                    prop_assert_eq!((g.cases, g.left_out), (h.cases, h.left_out));
                    prop_assert_eq!((g.outcome_cases, g.outcome_left_out), (o.cases, o.left_out));
                    let close = |a: f64, b: f64| {
                        (a.is_nan() && b.is_nan())
                            || a == b
                            || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
                    };
                    let pairs = [
                        (g.controls, h.controls),
                        (g.effect, h.mean.exp_m1()),
                        (g.outcome_controls, o.controls),
                        (
                            g.outcome_effect.unwrap_or(f64::NAN),
                            if o.cases > 0 { o.mean } else { f64::NAN },
                        ),
                        (
                            g.ci_high.unwrap_or(f64::NAN),
                            h.half.map_or(f64::NAN, |x| (h.mean + x).exp_m1()),
                        ),
                        (
                            g.outcome_ci_low.unwrap_or(f64::NAN),
                            o.half.map_or(f64::NAN, |x| o.mean - x),
                        ),
                    ];
                    for (i, (a, b)) in pairs.into_iter().enumerate() {
                        prop_assert!(close(a, b), "{:?} figure {}: {} against {}", kind, i, a, b);
                    }
                }
                Ok(())
            })
            .unwrap();
    }

    /// A fleet from `seed`: 60 days, a few hours and attainments missing,
    /// stages switching, `touches` touchpoints.
    fn random_fleet(
        customers: usize,
        seed: u64,
        touches: usize,
    ) -> (Vec<Touchpoint>, Vec<DailyUsage>) {
        let mut state = seed | 1;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let segments = [Segment::HighTouch, Segment::LowTouch, Segment::TechTouch];
        let stages = [Stage::Onboard, Stage::Adopt, Stage::Grow, Stage::Renew];
        let usage: Vec<DailyUsage> = (0..customers)
            .map(|c| {
                let mut u = usage(&format!("c{c}"), segments[next(3) as usize], 0, |_| 0.0);
                for d in 0..60 {
                    if next(20) > 0 {
                        u.hours.insert(day(d), 1.0 + next(50) as f64);
                    }
                    if next(3) > 0 {
                        u.attainment.insert(day(d), next(101) as f64);
                    }
                    if next(2) > 0 {
                        u.stages.insert(
                            day(d),
                            stages[(c + d as usize / (5 + next(20) as usize)) % 4],
                        );
                    }
                }
                u
            })
            .collect();
        let touchpoints = (0..touches)
            .map(|_| {
                let kind = TouchpointKind::ALL[next(TouchpointKind::ALL.len() as u64) as usize];
                touch(&format!("c{}", next(customers as u64 + 2)), kind, next(60))
            })
            .collect();
        (touchpoints, usage)
    }

    #[test]
    fn the_t_quantiles() {
        assert_eq!(t_975(1), 12.706);
        assert_eq!(t_975(30), 2.042);
        assert!((t_975(60) - 2.000).abs() < 0.002);
        assert!((t_975(120) - 1.980).abs() < 0.002);
    }
}
