//! `GET /api/retention`: gross and net revenue retention and logo retention
//! per period, for all customers, each segment, and managed against
//! unmanaged accounts, side by side (the arithmetic is
//! `fleetpulse_engine::kpi::revenue_retention`). A CSM gets the figures over
//! their own customers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::response::Response;
use fleetpulse_engine::Segment;
use fleetpulse_engine::kpi::revenue_retention::{
    ArrHistory, Period, PeriodKind, RecordedContractEvent, Retention, retention_table,
};
use fleetpulse_engine::kpi::touchpoint::Touchpoint;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Hub;
use super::api::{ApiError, ApiQuery, BadQuery, Bounded, Unauthorized, as_of, json, on_store};
use super::auth::{Access, Role};
use crate::contracts::{Conflict, ContractBook};

/// Periods returned when `periods` is not given.
pub const DEFAULT_PERIODS: usize = 8;

/// Most periods: ten years of quarters.
type Periods = Bounded<1, 40>;

const DAY_MS: u64 = 86_400_000;

/// `GET /api/retention` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RetentionQuery {
    /// `quarter` (default) or `year`: calendar periods, UTC.
    period: Option<PeriodKind>,
    /// The latest this many periods.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 40, default = 8)]
    periods: Option<Periods>,
}

/// Revenue and logo retention, per period and group.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RetentionReport)]
struct RetentionDoc {
    /// `quarter` or `year`.
    period: PeriodKind,
    /// What makes an account managed: `touchpoints` (one in the period)
    /// once any of the customers shown has one recorded, `high-touch` (a
    /// named CS manager) before.
    managed: &'static str,
    /// Customers with contract events that this user sees.
    customers: usize,
    /// Contract events recorded through the API or the CLI, of those
    /// customers, counted in (beside the customers file's).
    recorded_events: usize,
    /// Customers whose recorded events do not add up with the customers
    /// file's (it changed under them): those are left out, and why (for a
    /// viewer, without naming them).
    conflicts: Vec<String>,
    /// Oldest first.
    periods: Vec<PeriodDoc>,
}

/// One period's figures.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PeriodDoc {
    /// `2026-Q1` or `2026`.
    label: String,
    /// First ms of the period (ms since the Unix epoch).
    start: u64,
    /// First ms after it.
    end: u64,
    /// The data reaches the end of the period; otherwise the figures are
    /// so far.
    complete: bool,
    /// The ARR at risk on the period's first day against the ARR lost in
    /// the period: does the health score see losses coming? Null without
    /// health records that day.
    risk: Option<RiskCheck>,
    /// `all`, `high-touch`, `low-touch`, `tech-touch`, `managed`,
    /// `unmanaged`, then `cohort YYYY` (year of the first contract), in
    /// this order.
    groups: Vec<GroupDoc>,
}

/// ARR at risk then, ARR lost later.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RiskCheck {
    /// Customers with a health record on the period's first day.
    customers: u32,
    /// Of them, those at risk (red, or an open alert) that day.
    customers_at_risk: u32,
    /// Their ARR: the ARR at risk.
    arr_at_risk: f64,
    /// ARR lost in the period (churned, or net contraction) by the
    /// customers at risk on the first day.
    lost_at_risk: f64,
    /// ARR lost in the period by the other customers: losses the score did
    /// not flag.
    lost_elsewhere: f64,
}

/// One group's figures over one period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupDoc {
    /// Whom the figures cover.
    group: String,
    #[serde(flatten)]
    figures: Retention,
}

/// Gross and net revenue retention and logo retention, per period
///
/// From each customer's contract events: customers.toml and its CSV, and
/// those recorded through `POST /api/contract-events` or `fleetpulse
/// contracts` (one with the customer, kind and day of a file event
/// replaces it). The
/// cohort of a period is the customers with ARR at its start; churned
/// customers count 0 at its end; new logos are counted beside, never in the
/// ratios. A ratio is null when the cohort has no ARR. Admins and viewers
/// get every customer; a CSM their own.
#[utoipa::path(get, path = "/api/retention", operation_id = "getRetention", tag = "api", params(RetentionQuery),
    responses((status = 200, description = "the periods, oldest first", body = RetentionDoc), BadQuery,
        Unauthorized))]
pub async fn retention(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    ApiQuery(q): ApiQuery<RetentionQuery>,
) -> Result<Response, ApiError> {
    let kind = q.period.unwrap_or_default();
    let count = q.periods.map_or(DEFAULT_PERIODS, |p| p.0);
    let as_of = as_of(&hub.read_view());
    let everyone = sees_everyone(&access);
    let (book, recorded, conflicts) = contract_book(&hub).await?;
    let customers = visible(&book.histories, &access);
    let shown: HashSet<&str> = customers.iter().map(|c| &*c.customer).collect();
    // Those counted in: a customer's left out with its conflict are not.
    let left_out: HashSet<&str> = conflicts.iter().map(|c| c.customer.as_str()).collect();
    let recorded_events = (recorded.iter())
        .filter(|e| shown.contains(&*e.customer) && !left_out.contains(&*e.customer))
        .count();
    // A viewer sees every customer's figures but none by name: told only
    // that some were left out.
    let named = access.principal.role != Role::Viewer;
    let conflicts: Vec<String> = conflicts
        .into_iter()
        .filter(|c| everyone || access.sees(&c.customer))
        .map(|c| match named {
            true => format!("customer `{}`: {}", c.customer, c.message),
            false => "a customer's recorded contract events do not add up with the customers \
                      file; left out (an admin sees which)"
                .to_string(),
        })
        .collect();
    // Only the shown customers' touchpoints: whether others have any is
    // not this user's to learn.
    let touchpoints: Vec<Touchpoint> = on_store(&hub, |s| s.touchpoints(None))
        .await?
        .unwrap_or_default()
        .into_iter()
        .filter(|t| shown.contains(&*t.customer))
        .collect();
    let at_risk = at_risk_by_day(&hub.read_view());
    let mut doc = report(&customers, &touchpoints, &at_risk, kind, count, as_of);
    doc.recorded_events = recorded_events;
    doc.conflicts = conflicts;
    Ok(json(&doc))
}

/// The customers file's contract book with the events recorded in the
/// store merged in (`ContractBook::merged`), the recorded events, and the
/// customers whose recorded events were left out.
pub(super) async fn contract_book(
    hub: &Hub,
) -> Result<(ContractBook, Vec<RecordedContractEvent>, Vec<Conflict>), ApiError> {
    let recorded = on_store(hub, |s| s.contract_events(None))
        .await?
        .unwrap_or_default();
    let (book, conflicts) = hub.contracts().merged(&recorded);
    for c in &conflicts {
        tracing::warn!(customer = %c.customer, "recorded contract events left out: {}", c.message);
    }
    Ok((book, recorded, conflicts))
}

/// Each customer's ARR at risk per day (its local date, as the portfolio
/// files it), from the view's health records.
fn at_risk_by_day(view: &super::View) -> HashMap<String, BTreeMap<u64, f64>> {
    view.customers()
        .iter()
        .map(|(id, c)| {
            let days = c
                .health
                .iter()
                .flat_map(|s| s.iter())
                .map(|h| (c.date_of(h.window_start), h.arr_at_risk))
                .collect();
            (id.to_string(), days)
        })
        .collect()
}

/// The risk check of `period`: customers with a health record on its first
/// day, split by whether they were at risk, against what each lost in it.
fn risk_check(
    period: Period,
    customers: &[ArrHistory],
    at_risk: &HashMap<String, BTreeMap<u64, f64>>,
) -> Option<RiskCheck> {
    let mut check = RiskCheck {
        customers: 0,
        customers_at_risk: 0,
        arr_at_risk: 0.0,
        lost_at_risk: 0.0,
        lost_elsewhere: 0.0,
    };
    for c in customers {
        let Some(risk) = at_risk.get(&*c.customer).and_then(|d| d.get(&period.start)) else {
            continue;
        };
        let figures = fleetpulse_engine::kpi::revenue_retention::retention(period, [c]);
        let lost = figures.churned_arr + figures.contraction_arr;
        check.customers += 1;
        if *risk > 0.0 {
            check.customers_at_risk += 1;
            check.arr_at_risk += risk;
            check.lost_at_risk += lost;
        } else {
            check.lost_elsewhere += lost;
        }
    }
    (check.customers > 0).then_some(check)
}

/// The latest `count` periods of `kind` up to `as_of` (the end of the
/// newest data; without data, the day after the latest event). Managed
/// accounts: those with a touchpoint in the period, once any touchpoint is
/// recorded; until then the high-touch ones (a named CS manager).
fn report(
    customers: &[ArrHistory],
    touchpoints: &[Touchpoint],
    at_risk: &HashMap<String, BTreeMap<u64, f64>>,
    kind: PeriodKind,
    count: usize,
    as_of: Option<u64>,
) -> RetentionDoc {
    let steps = customers.iter().flat_map(|c| c.steps());
    let first = steps.clone().map(|s| s.at).min();
    let last = steps.map(|s| s.at).max();
    let periods = match (first, as_of.or(last.map(|l| l + DAY_MS))) {
        (Some(from), Some(to)) if to > from => Period::covering(kind, from, to),
        _ => Vec::new(),
    };
    let periods = &periods[periods.len().saturating_sub(count)..];
    let by_touchpoints = !touchpoints.is_empty();
    let touched = TouchedDays::of(touchpoints);
    let rows = retention_table(periods, customers, |c, period| {
        if by_touchpoints {
            touched.within(&c.customer, period.start..period.end)
        } else {
            c.segment == Segment::HighTouch
        }
    });
    let reached = as_of.or(last.map(|l| l + DAY_MS)).unwrap_or(0);
    RetentionDoc {
        period: kind,
        managed: if by_touchpoints {
            "touchpoints"
        } else {
            "high-touch"
        },
        customers: customers.len(),
        recorded_events: 0,
        conflicts: Vec::new(),
        periods: periods
            .iter()
            .map(|p| PeriodDoc {
                label: p.label(),
                start: p.start,
                end: p.end,
                complete: p.end <= reached,
                risk: risk_check(*p, customers, at_risk),
                groups: rows
                    .iter()
                    .filter(|r| r.period == *p)
                    .map(|r| GroupDoc {
                        group: r.group.label(),
                        figures: r.figures,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Each customer's touchpoint days, in order: whether one falls in a
/// period is a binary search, not a pass over every touchpoint for every
/// customer and period (5,000 customers with 20,000 touchpoints took 4 s
/// a request, BENCHMARKS.md section 30).
struct TouchedDays<'a>(HashMap<&'a str, Vec<u64>>);

impl<'a> TouchedDays<'a> {
    fn of(touchpoints: &'a [Touchpoint]) -> Self {
        let mut days: HashMap<&str, Vec<u64>> = HashMap::new();
        for t in touchpoints {
            days.entry(&*t.customer).or_default().push(t.at);
        }
        days.values_mut().for_each(|d| d.sort_unstable());
        Self(days)
    }

    /// `customer` had a touchpoint within `span`.
    fn within(&self, customer: &str, span: std::ops::Range<u64>) -> bool {
        self.0.get(customer).is_some_and(|days| {
            let first = days.partition_point(|&d| d < span.start);
            days.get(first).is_some_and(|&d| d < span.end)
        })
    }
}

/// Whether `access` sees every customer's contracts: admins and viewers.
pub(super) fn sees_everyone(access: &Access) -> bool {
    access.sees_all() || access.principal.role == Role::Viewer
}

/// The contract histories of `histories` that `access` may see: every
/// customer's for admins and viewers, a CSM's own.
pub(super) fn visible(histories: &[ArrHistory], access: &Access) -> Vec<ArrHistory> {
    let everyone = sees_everyone(access);
    (histories.iter())
        .filter(|h| everyone || access.sees(&h.customer))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::kpi::revenue_retention::{ContractEvent, ContractEventKind};
    use fleetpulse_engine::kpi::touchpoint::TouchpointKind;

    use super::*;

    /// Whether a customer had a touchpoint in a span, from the sorted
    /// days, equals a pass over every touchpoint: spans that start or end
    /// on a touchpoint, empty spans, customers without any.
    #[test]
    fn touched_days_agree_with_a_pass_over_every_touchpoint() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let touchpoints: Vec<Touchpoint> = (0..400)
            .map(|_| Touchpoint {
                customer: format!("c{}", next(12)).into(),
                at: next(100) * 10,
                ..Touchpoint::default()
            })
            .collect();
        let touched = TouchedDays::of(&touchpoints);
        for c in 0..14 {
            let customer = format!("c{c}");
            for start in (0..1000).step_by(7) {
                for end in [start, start + 1, start + 10, start + 33, start + 400] {
                    let want = (touchpoints.iter())
                        .any(|t| *t.customer == *customer && (start..end).contains(&t.at));
                    assert_eq!(
                        touched.within(&customer, start..end),
                        want,
                        "{customer} {start}..{end}"
                    );
                }
            }
        }
    }

    fn day(date: &str) -> u64 {
        crate::customers::date_ms(date).unwrap()
    }

    /// Two low-touch customers, 100 each on 1 Jan 2026; x grows to 150 in
    /// Q1, y churns. x had a training in Q1, y none: managed NRR 1.5,
    /// unmanaged 0.
    #[test]
    fn managed_accounts_are_those_with_touchpoints_in_the_period() {
        let history = |id: &str, second: ContractEvent| {
            let start = ContractEvent {
                kind: ContractEventKind::Start,
                at: day("2025-12-01"),
                arr_change: Some(100.0),
            };
            ArrHistory::new(id.into(), Segment::LowTouch, &[start, second]).unwrap()
        };
        let customers = [
            history(
                "x",
                ContractEvent {
                    kind: ContractEventKind::Expansion,
                    at: day("2026-02-01"),
                    arr_change: Some(50.0),
                },
            ),
            history(
                "y",
                ContractEvent {
                    kind: ContractEventKind::Churn,
                    at: day("2026-03-01"),
                    arr_change: None,
                },
            ),
        ];
        let training = Touchpoint {
            customer: "x".into(),
            kind: TouchpointKind::Training,
            at: day("2026-01-20"),
            ..Touchpoint::default()
        };
        let doc = report(
            &customers,
            &[training],
            &HashMap::new(),
            PeriodKind::Quarter,
            1,
            Some(day("2026-04-01")),
        );
        assert_eq!(doc.managed, "touchpoints");
        let q1 = &doc.periods[0];
        assert_eq!(q1.label, "2026-Q1");
        let group = |name: &str| q1.groups.iter().find(|g| g.group == name).unwrap().figures;
        assert_eq!(group("managed").nrr, Some(1.5));
        assert_eq!(group("unmanaged").nrr, Some(0.0));
        // Without touchpoints, managed means high-touch: none here.
        let doc = report(
            &customers,
            &[],
            &HashMap::new(),
            PeriodKind::Quarter,
            1,
            Some(day("2026-04-01")),
        );
        assert_eq!(doc.managed, "high-touch");
        let managed = doc.periods[0]
            .groups
            .iter()
            .find(|g| g.group == "managed")
            .unwrap();
        assert_eq!(managed.figures.logos_start, 0);
    }

    /// x was at risk on 1 Jan (ARR at risk 100) and grew; y was not and
    /// churned: the score flagged nothing that was lost and missed 100.
    #[test]
    fn arr_at_risk_then_is_set_against_arr_lost_later() {
        let start = ContractEvent {
            kind: ContractEventKind::Start,
            at: day("2025-12-01"),
            arr_change: Some(100.0),
        };
        let x = ArrHistory::new(
            "x".into(),
            Segment::LowTouch,
            &[
                start,
                ContractEvent {
                    kind: ContractEventKind::Expansion,
                    at: day("2026-02-01"),
                    arr_change: Some(50.0),
                },
            ],
        )
        .unwrap();
        let y = ArrHistory::new(
            "y".into(),
            Segment::LowTouch,
            &[
                start,
                ContractEvent {
                    kind: ContractEventKind::Churn,
                    at: day("2026-03-01"),
                    arr_change: None,
                },
            ],
        )
        .unwrap();
        let q1 = day("2026-01-01");
        let at_risk: HashMap<String, BTreeMap<u64, f64>> = [
            ("x".to_string(), [(q1, 100.0)].into()),
            ("y".to_string(), [(q1, 0.0)].into()),
        ]
        .into();
        let doc = report(
            &[x, y],
            &[],
            &at_risk,
            PeriodKind::Quarter,
            1,
            Some(day("2026-04-01")),
        );
        let risk = doc.periods[0].risk.as_ref().unwrap();
        assert_eq!((risk.customers, risk.customers_at_risk), (2, 1));
        assert_eq!(risk.arr_at_risk, 100.0);
        assert_eq!((risk.lost_at_risk, risk.lost_elsewhere), (0.0, 100.0));
    }
}
