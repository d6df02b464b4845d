//! Revenue retention: gross and net revenue retention (GRR, NRR) and logo
//! retention per period, from each customer's contract events. Logo
//! retention alone flatters (a customer can stay and still shrink), so the
//! three are computed from the same cohort and shown side by side.
//!
//! Per period `[start, end)`, the **cohort** is the customers with ARR at
//! `start`. For each of them the ARR at `end` counts, except that a customer
//! who churned during the period counts 0: what they sign after the churn is
//! a new logo, not retained revenue. Then
//!
//! - GRR = (start ARR - contraction - churned ARR) / start ARR
//! - NRR = (start ARR + expansion - contraction - churned ARR) / start ARR
//! - logo retention = cohort customers not churned / cohort customers
//!
//! where expansion and contraction are each customer's net change over the
//! period (a contraction won back in the same quarter is no loss). A period
//! whose cohort has no ARR has no ratios (`None`), never 0 or NaN. Customers
//! who start in the period are new logos: counted, never in the ratios.

use serde::{Deserialize, Serialize};

use crate::customer::Segment;
use crate::model::{EventTime, Id};

/// What happened to a contract.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractEventKind {
    /// A new logo: ARR from zero (the first contract, or a return after churn).
    #[default]
    Start,
    /// The contract renewed, possibly at another ARR.
    Renewal,
    /// More ARR: machines, seats or modules added.
    Expansion,
    /// Less ARR, the customer stays.
    Contraction,
    /// The customer left: all ARR lost.
    Churn,
}

impl ContractEventKind {
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::Start,
        Self::Renewal,
        Self::Expansion,
        Self::Contraction,
        Self::Churn,
    ];

    /// The name in files and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Renewal => "renewal",
            Self::Expansion => "expansion",
            Self::Contraction => "contraction",
            Self::Churn => "churn",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A contract event as given: `arr_change` may be left out for a renewal
/// (no change) and a churn (all of the ARR).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContractEvent {
    /// What happened.
    pub kind: ContractEventKind,
    /// When it takes effect, ms since the epoch (a day's midnight, UTC).
    pub at: EventTime,
    /// The change of ARR it makes.
    pub arr_change: Option<f64>,
}

/// A contract event recorded while the service runs (the API, `fleetpulse
/// contracts add` or a CSV import) and kept in the store, beside those of
/// the customers file. Field names are store field names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RecordedContractEvent {
    /// Customer id.
    pub customer: Id,
    /// What happened.
    pub kind: ContractEventKind,
    /// When it takes effect, ms since the epoch (a day's midnight, UTC).
    pub at: EventTime,
    /// The change of ARR it makes (none: a renewal without change, or a
    /// churn of all the ARR).
    pub arr_change: Option<f64>,
    /// Who recorded it: the user, `cli`, or `csv:FILE`.
    pub recorded_by: Id,
}

impl RecordedContractEvent {
    /// The event, without who recorded it.
    pub fn event(&self) -> ContractEvent {
        ContractEvent {
            kind: self.kind,
            at: self.at,
            arr_change: self.arr_change,
        }
    }
}

/// One step of a customer's ARR, checked.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArrStep {
    /// What happened.
    pub kind: ContractEventKind,
    /// When it takes effect, ms since the epoch.
    pub at: EventTime,
    /// The change of ARR.
    pub arr_change: f64,
    /// ARR after it.
    pub arr_after: f64,
}

/// Why a customer's contract events do not add up; `index` is the event's
/// position as given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("contract event {index}: field `{field}`: {message}")]
pub struct ContractEventError {
    /// Position of the event, as given.
    pub index: usize,
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// A customer's ARR over time: the contract events in date order.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrHistory {
    /// Customer id.
    pub customer: Id,
    /// Coverage segment.
    pub segment: Segment,
    steps: Vec<ArrStep>,
}

/// ARR is money: changes smaller than a cent are rounding.
const CENT: f64 = 0.005;

impl ArrHistory {
    /// Checks `events` (sorted by date here; same-day events keep their
    /// order): a `start` only when the customer has no ARR, everything else
    /// only while it has some; expansion adds, contraction removes without
    /// reaching zero, churn removes all of it.
    pub fn new(
        customer: Id,
        segment: Segment,
        events: &[ContractEvent],
    ) -> Result<Self, ContractEventError> {
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| events[i].at);
        let mut arr = 0.0_f64;
        let mut steps = Vec::with_capacity(events.len());
        for i in order {
            let e = events[i];
            let fail = |field: &'static str, message: String| ContractEventError {
                index: i,
                field,
                message,
            };
            if let Some(change) = e.arr_change
                && !change.is_finite()
            {
                return Err(fail("arr_change", "must be a number".into()));
            }
            let active = arr > CENT;
            let kind = e.kind;
            if kind == ContractEventKind::Start && active {
                return Err(fail(
                    "kind",
                    format!("`start` while the customer already has ARR {arr}; use `expansion`"),
                ));
            }
            if kind != ContractEventKind::Start && !active {
                return Err(fail(
                    "kind",
                    format!(
                        "`{}` before the customer has ARR; the first event (and the first after a churn) is `start`",
                        kind.as_str()
                    ),
                ));
            }
            let required =
                |what: &str| fail("arr_change", format!("a `{}` needs {what}", kind.as_str()));
            let change = match kind {
                ContractEventKind::Start | ContractEventKind::Expansion => {
                    let c = e
                        .arr_change
                        .ok_or_else(|| required("a positive ARR change"))?;
                    if c <= 0.0 {
                        return Err(required("a positive ARR change"));
                    }
                    c
                }
                ContractEventKind::Contraction => {
                    let c = e
                        .arr_change
                        .ok_or_else(|| required("a negative ARR change"))?;
                    if c >= 0.0 {
                        return Err(required("a negative ARR change"));
                    }
                    if arr + c <= CENT {
                        return Err(fail(
                            "arr_change",
                            format!("{c} leaves no ARR (was {arr}); that is a `churn`"),
                        ));
                    }
                    c
                }
                ContractEventKind::Renewal => {
                    let c = e.arr_change.unwrap_or(0.0);
                    if arr + c <= CENT {
                        return Err(fail(
                            "arr_change",
                            format!("{c} leaves no ARR (was {arr}); that is a `churn`"),
                        ));
                    }
                    c
                }
                ContractEventKind::Churn => {
                    let c = e.arr_change.unwrap_or(-arr);
                    if (arr + c).abs() > CENT {
                        return Err(fail(
                            "arr_change",
                            format!("a `churn` loses all of the ARR ({}), not {c}", -arr),
                        ));
                    }
                    -arr
                }
            };
            arr = if kind == ContractEventKind::Churn {
                0.0
            } else {
                arr + change
            };
            steps.push(ArrStep {
                kind,
                at: e.at,
                arr_change: change,
                arr_after: arr,
            });
        }
        Ok(Self {
            customer,
            segment,
            steps,
        })
    }

    /// The steps, in date order.
    pub fn steps(&self) -> &[ArrStep] {
        &self.steps
    }

    /// ARR in force just before `at` (events dated `at` not yet applied).
    pub fn arr_before(&self, at: EventTime) -> f64 {
        self.steps
            .iter()
            .take_while(|s| s.at < at)
            .last()
            .map_or(0.0, |s| s.arr_after)
    }

    /// ARR now: after the last event.
    pub fn arr(&self) -> f64 {
        self.steps.last().map_or(0.0, |s| s.arr_after)
    }

    fn during(&self, period: Period) -> impl Iterator<Item = &ArrStep> {
        self.steps
            .iter()
            .filter(move |s| (period.start..period.end).contains(&s.at))
    }
}

/// A span of time, `[start, end)` in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    /// First ms of the period.
    pub start: EventTime,
    /// First ms after it.
    pub end: EventTime,
}

/// How long the periods are: calendar quarters or years, UTC.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// January-March, April-June, ...
    #[default]
    Quarter,
    /// A calendar year.
    Year,
}

impl PeriodKind {
    /// Months in one period.
    fn months(self) -> i8 {
        match self {
            Self::Quarter => 3,
            Self::Year => 12,
        }
    }

    /// The name in queries and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quarter => "quarter",
            Self::Year => "year",
        }
    }
}

impl Period {
    /// The periods of `kind` that overlap `[from, to)`, oldest first.
    pub fn covering(kind: PeriodKind, from: EventTime, to: EventTime) -> Vec<Period> {
        let Some(mut date) = civil(from) else {
            return Vec::new();
        };
        let months = kind.months();
        let month = (date.month() - 1) / months * months + 1;
        date = jiff::civil::date(date.year(), month, 1);
        let mut out = Vec::new();
        while let (Some(start), Some(next)) = (ms(date), next_period(date, months)) {
            if start >= to {
                break;
            }
            let Some(end) = ms(next) else { break };
            out.push(Period { start, end });
            date = next;
        }
        out
    }

    /// `2026-Q1` for a quarter, `2026` for a year.
    pub fn label(self) -> String {
        let Some(start) = civil(self.start) else {
            return self.start.to_string();
        };
        let months = civil(self.end).map_or(0, |end| {
            (i32::from(end.year()) - i32::from(start.year())) * 12 + i32::from(end.month())
                - i32::from(start.month())
        });
        if months == 3 {
            format!("{}-Q{}", start.year(), (start.month() - 1) / 3 + 1)
        } else {
            start.year().to_string()
        }
    }
}

/// The first day `months` months after `date` (the first of a month).
fn next_period(date: jiff::civil::Date, months: i8) -> Option<jiff::civil::Date> {
    let month = date.month() + months;
    let (year, month) = if month > 12 {
        (date.year().checked_add(1)?, month - 12)
    } else {
        (date.year(), month)
    };
    jiff::civil::Date::new(year, month, 1).ok()
}

fn civil(at: EventTime) -> Option<jiff::civil::Date> {
    let ts = jiff::Timestamp::from_millisecond(i64::try_from(at).ok()?).ok()?;
    Some(ts.to_zoned(jiff::tz::TimeZone::UTC).date())
}

fn ms(date: jiff::civil::Date) -> Option<EventTime> {
    let ts = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    u64::try_from(ts.as_millisecond()).ok()
}

/// Retention figures of a group of customers over one period.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Retention {
    /// ARR of the cohort at the period's start.
    pub start_arr: f64,
    /// The cohort's ARR at the end (churned customers count 0).
    pub end_arr: f64,
    /// Net growth of the cohort customers who grew.
    pub expansion_arr: f64,
    /// Net shrinkage of the cohort customers who shrank without leaving.
    pub contraction_arr: f64,
    /// Start ARR of the cohort customers who churned.
    pub churned_arr: f64,
    /// Customers with ARR at the start: the cohort.
    pub logos_start: u32,
    /// Of them, those who churned in the period.
    pub logos_churned: u32,
    /// Customers who started in the period (new, or back after a churn).
    pub new_logos: u32,
    /// Their starting ARR.
    pub new_arr: f64,
    /// Gross revenue retention; `None` without start ARR.
    pub grr: Option<f64>,
    /// Net revenue retention; `None` without start ARR.
    pub nrr: Option<f64>,
    /// Logo retention; `None` without a cohort.
    pub logo_retention: Option<f64>,
}

/// Retention of `customers` over `period`.
pub fn retention<'a>(
    period: Period,
    customers: impl IntoIterator<Item = &'a ArrHistory>,
) -> Retention {
    let mut r = Retention::default();
    for history in customers {
        for s in history.during(period) {
            if s.kind == ContractEventKind::Start {
                r.new_logos += 1;
                r.new_arr += s.arr_change;
            }
        }
        let start = history.arr_before(period.start);
        if start <= CENT {
            continue;
        }
        r.logos_start += 1;
        r.start_arr += start;
        let churned = history
            .during(period)
            .any(|s| s.kind == ContractEventKind::Churn);
        if churned {
            r.logos_churned += 1;
            r.churned_arr += start;
            continue;
        }
        let end = history.arr_before(period.end);
        r.end_arr += end;
        if end > start {
            r.expansion_arr += end - start;
        } else {
            r.contraction_arr += start - end;
        }
    }
    if r.start_arr > CENT {
        r.grr = Some((r.start_arr - r.contraction_arr - r.churned_arr) / r.start_arr);
        r.nrr = Some(r.end_arr / r.start_arr);
    }
    if r.logos_start > 0 {
        r.logo_retention =
            Some(f64::from(r.logos_start - r.logos_churned) / f64::from(r.logos_start));
    }
    r
}

/// Which customers a row of figures covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Every customer.
    All,
    /// One coverage segment.
    Segment(Segment),
    /// Accounts the CS team worked in the period.
    Managed,
    /// The others.
    Unmanaged,
    /// The customers whose first contract started in this year (UTC).
    Cohort(i16),
}

impl Group {
    /// The name in APIs and pages: `all`, `high-touch`, `managed`,
    /// `cohort 2025`, ...
    pub fn label(self) -> String {
        match self {
            Self::All => "all".into(),
            Self::Segment(s) => s.as_str().into(),
            Self::Managed => "managed".into(),
            Self::Unmanaged => "unmanaged".into(),
            Self::Cohort(year) => format!("cohort {year}"),
        }
    }
}

impl ArrHistory {
    /// The year (UTC) of the customer's first `start`: its cohort.
    pub fn cohort(&self) -> Option<i16> {
        self.steps
            .iter()
            .find(|s| s.kind == ContractEventKind::Start)
            .and_then(|s| civil(s.at))
            .map(|d| d.year())
    }
}

/// One period's figures for one group.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRow {
    /// The period.
    pub period: Period,
    /// Whom it covers.
    pub group: Group,
    /// The figures.
    pub figures: Retention,
}

/// Every period's figures for all customers, each segment, managed
/// against unmanaged accounts, and each cohort (year of the first
/// contract), side by side; `managed(customer, period)` says whether the CS
/// team worked the account in the period.
pub fn retention_table(
    periods: &[Period],
    customers: &[ArrHistory],
    managed: impl Fn(&ArrHistory, Period) -> bool,
) -> Vec<RetentionRow> {
    let mut cohorts: Vec<i16> = customers.iter().filter_map(ArrHistory::cohort).collect();
    cohorts.sort_unstable();
    cohorts.dedup();
    let mut rows = Vec::new();
    for &period in periods {
        let mut push = |group: Group, keep: &dyn Fn(&ArrHistory) -> bool| {
            rows.push(RetentionRow {
                period,
                group,
                figures: retention(period, customers.iter().filter(|c| keep(c))),
            });
        };
        push(Group::All, &|_| true);
        for segment in [Segment::HighTouch, Segment::LowTouch, Segment::TechTouch] {
            push(Group::Segment(segment), &|c| c.segment == segment);
        }
        push(Group::Managed, &|c| managed(c, period));
        push(Group::Unmanaged, &|c| !managed(c, period));
        for year in &cohorts {
            push(Group::Cohort(*year), &|c| c.cohort() == Some(*year));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::ContractEventKind::*;
    use super::*;

    const DAY: u64 = 86_400_000;

    fn at(date: &str) -> EventTime {
        ms(date.parse().unwrap()).unwrap()
    }

    fn event(kind: ContractEventKind, date: &str, change: Option<f64>) -> ContractEvent {
        ContractEvent {
            kind,
            at: at(date),
            arr_change: change,
        }
    }

    fn history(id: &str, segment: Segment, events: &[ContractEvent]) -> ArrHistory {
        ArrHistory::new(id.into(), segment, events).unwrap()
    }

    /// 2026-Q2.
    fn q2() -> Period {
        Period {
            start: at("2026-04-01"),
            end: at("2026-07-01"),
        }
    }

    /// A small fleet over 2026-Q2, with every figure worked out by hand:
    ///
    /// | customer | ARR 1 Apr | in Q2 | ARR 1 Jul (counted) |
    /// |---|---|---|---|
    /// | a | 100 | expansion +50 | 150 |
    /// | b | 200 | contraction -80 | 120 |
    /// | c | 300 | churn | 0 |
    /// | d | 400 | renewal flat | 400 |
    /// | e | - | start 70 (new logo) | not in cohort |
    ///
    /// Start 1000; expansion 50; contraction 80; churned 300.
    /// GRR = (1000 - 80 - 300) / 1000 = 0.62; NRR = (150+120+0+400)/1000 = 0.67;
    /// logos 3 of 4 = 0.75; one new logo with 70.
    fn fleet() -> Vec<ArrHistory> {
        vec![
            history(
                "a",
                Segment::HighTouch,
                &[
                    event(Start, "2026-01-10", Some(100.0)),
                    event(Expansion, "2026-05-01", Some(50.0)),
                ],
            ),
            history(
                "b",
                Segment::HighTouch,
                &[
                    event(Start, "2025-06-01", Some(200.0)),
                    event(Contraction, "2026-06-30", Some(-80.0)),
                ],
            ),
            history(
                "c",
                Segment::LowTouch,
                &[
                    event(Start, "2025-01-01", Some(300.0)),
                    event(Churn, "2026-04-01", None),
                ],
            ),
            history(
                "d",
                Segment::TechTouch,
                &[
                    event(Start, "2025-04-01", Some(400.0)),
                    event(Renewal, "2026-04-01", None),
                ],
            ),
            history(
                "e",
                Segment::LowTouch,
                &[event(Start, "2026-05-15", Some(70.0))],
            ),
        ]
    }

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("defined");
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn grr_nrr_and_logo_retention_equal_the_hand_computed_values() {
        let r = retention(q2(), &fleet());
        assert_eq!(r.start_arr, 1000.0);
        assert_eq!(r.expansion_arr, 50.0);
        assert_eq!(r.contraction_arr, 80.0);
        assert_eq!(r.churned_arr, 300.0);
        assert_eq!(r.end_arr, 670.0);
        assert_eq!((r.logos_start, r.logos_churned), (4, 1));
        assert_eq!((r.new_logos, r.new_arr), (1, 70.0));
        close(r.grr, 0.62);
        close(r.nrr, 0.67);
        close(r.logo_retention, 0.75);
    }

    #[test]
    fn a_customer_that_shrinks_lowers_nrr_but_not_logo_retention() {
        let b = &fleet()[1];
        let r = retention(q2(), [b]);
        close(r.logo_retention, 1.0);
        close(r.nrr, 120.0 / 200.0);
        close(r.grr, 120.0 / 200.0);
    }

    #[test]
    fn expansion_beyond_the_start_arr_counts_in_nrr_only() {
        let h = history(
            "x",
            Segment::HighTouch,
            &[
                event(Start, "2026-01-01", Some(100.0)),
                event(Expansion, "2026-04-02", Some(250.0)),
            ],
        );
        let r = retention(q2(), [&h]);
        close(r.nrr, 3.5);
        close(r.grr, 1.0);
        close(r.logo_retention, 1.0);
    }

    #[test]
    fn a_contraction_won_back_within_the_period_is_no_loss() {
        let h = history(
            "x",
            Segment::HighTouch,
            &[
                event(Start, "2026-01-01", Some(100.0)),
                event(Contraction, "2026-04-10", Some(-40.0)),
                event(Expansion, "2026-06-10", Some(40.0)),
            ],
        );
        let r = retention(q2(), [&h]);
        close(r.grr, 1.0);
        close(r.nrr, 1.0);
    }

    #[test]
    fn no_arr_at_the_start_gives_no_ratios() {
        let e = &fleet()[4];
        let r = retention(q2(), [e]);
        assert_eq!((r.grr, r.nrr, r.logo_retention), (None, None, None));
        assert_eq!((r.new_logos, r.new_arr), (1, 70.0));
        let r = retention(q2(), []);
        assert_eq!(r, Retention::default());
    }

    #[test]
    fn churn_then_a_new_logo_loses_the_logo_and_adds_a_new_one() {
        let h = history(
            "x",
            Segment::LowTouch,
            &[
                event(Start, "2025-01-01", Some(100.0)),
                event(Churn, "2026-04-15", Some(-100.0)),
                event(Start, "2026-06-01", Some(60.0)),
            ],
        );
        let r = retention(q2(), [&h]);
        close(r.grr, 0.0);
        close(r.nrr, 0.0);
        close(r.logo_retention, 0.0);
        assert_eq!((r.new_logos, r.new_arr), (1, 60.0));
        // Next quarter the returned customer is in the cohort with 60.
        let q3 = Period {
            start: at("2026-07-01"),
            end: at("2026-10-01"),
        };
        let r = retention(q3, [&h]);
        assert_eq!((r.start_arr, r.logos_start), (60.0, 1));
        close(r.nrr, 1.0);
    }

    #[test]
    fn an_event_on_the_first_day_belongs_to_the_period_it_opens() {
        let c = &fleet()[2];
        assert_eq!(c.arr_before(at("2026-04-01")), 300.0);
        assert_eq!(c.arr_before(at("2026-04-01") + DAY), 0.0);
        let q1 = Period {
            start: at("2026-01-01"),
            end: at("2026-04-01"),
        };
        close(retention(q1, [c]).logo_retention, 1.0);
    }

    #[test]
    fn events_that_do_not_add_up_are_refused_naming_the_event_and_field() {
        let bad: [(&[ContractEvent], usize, &str); 6] = [
            (&[event(Expansion, "2026-01-01", Some(10.0))], 0, "kind"),
            (
                &[
                    event(Start, "2026-01-01", Some(10.0)),
                    event(Start, "2026-02-01", Some(10.0)),
                ],
                1,
                "kind",
            ),
            (&[event(Start, "2026-01-01", None)], 0, "arr_change"),
            (
                &[
                    event(Start, "2026-01-01", Some(10.0)),
                    event(Contraction, "2026-02-01", Some(-10.0)),
                ],
                1,
                "arr_change",
            ),
            (
                &[
                    event(Start, "2026-01-01", Some(10.0)),
                    event(Churn, "2026-02-01", Some(-5.0)),
                ],
                1,
                "arr_change",
            ),
            // Given out of order: the churn (index 0) comes before any start.
            (
                &[
                    event(Churn, "2025-01-01", None),
                    event(Start, "2026-01-01", Some(10.0)),
                ],
                0,
                "kind",
            ),
        ];
        for (events, index, field) in bad {
            let err = ArrHistory::new("x".into(), Segment::HighTouch, events).unwrap_err();
            assert_eq!((err.index, err.field), (index, field), "{err}");
        }
    }

    #[test]
    fn quarters_and_years_cover_the_span_and_are_labelled() {
        let qs = Period::covering(PeriodKind::Quarter, at("2025-11-20"), at("2026-04-01"));
        let labels: Vec<String> = qs.iter().map(|p| p.label()).collect();
        assert_eq!(labels, ["2025-Q4", "2026-Q1"]);
        assert_eq!(
            qs[1],
            Period {
                start: at("2026-01-01"),
                end: at("2026-04-01")
            }
        );
        let ys = Period::covering(PeriodKind::Year, at("2025-11-20"), at("2026-04-02"));
        let labels: Vec<String> = ys.iter().map(|p| p.label()).collect();
        assert_eq!(labels, ["2025", "2026"]);
    }

    #[test]
    fn the_table_puts_segments_and_managed_accounts_side_by_side() {
        let fleet = fleet();
        let rows = retention_table(&[q2()], &fleet, |c, _| c.segment == Segment::HighTouch);
        let row = |g: Group| rows.iter().find(|r| r.group == g).unwrap().figures;
        // Managed: a (100 -> 150) and b (200 -> 120): NRR 270/300, GRR 220/300.
        close(row(Group::Managed).nrr, 0.9);
        close(row(Group::Managed).grr, 220.0 / 300.0);
        // Unmanaged: c churned 300, d flat 400, e new: NRR 400/700.
        close(row(Group::Unmanaged).nrr, 400.0 / 700.0);
        close(row(Group::Unmanaged).logo_retention, 0.5);
        close(row(Group::Segment(Segment::TechTouch)).nrr, 1.0);
        assert_eq!(row(Group::All), retention(q2(), &fleet));
        // Cohorts by the year of the first start: 2025 is b, c, d (start
        // 900: b 120, c churned, d 400); 2026 is a (100 -> 150) and e (new).
        close(row(Group::Cohort(2025)).nrr, 520.0 / 900.0);
        close(row(Group::Cohort(2025)).logo_retention, 2.0 / 3.0);
        close(row(Group::Cohort(2026)).nrr, 1.5);
        assert_eq!(row(Group::Cohort(2026)).new_logos, 1);
        assert_eq!(Group::Cohort(2025).label(), "cohort 2025");
        assert_eq!(rows.len(), 8);
    }
}
