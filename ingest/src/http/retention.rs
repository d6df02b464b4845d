//! `GET /api/retention`: gross and net revenue retention and logo retention
//! per period, for all customers, each segment, and managed against
//! unmanaged accounts, side by side (the arithmetic is
//! `fleetpulse_engine::kpi::revenue_retention`). A CSM gets the figures over
//! their own customers.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use fleetpulse_engine::Segment;
use fleetpulse_engine::kpi::revenue_retention::{
    ArrHistory, Period, PeriodKind, Retention, retention_table,
};
use fleetpulse_engine::kpi::touchpoint::Touchpoint;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Hub;
use super::api::{ApiError, ApiQuery, BadQuery, Bounded, Unauthorized, as_of, json};
use super::auth::{Access, Role};
use crate::sinks::SqliteStore;

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
    /// once any is recorded, `high-touch` (a named CS manager) before.
    managed: &'static str,
    /// Customers with contract events that this user sees.
    customers: usize,
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
    /// `all`, `high-touch`, `low-touch`, `tech-touch`, `managed`,
    /// `unmanaged`, then `cohort YYYY` (year of the first contract), in
    /// this order.
    groups: Vec<GroupDoc>,
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
/// From each customer's contract events (customers.toml and its CSV). The
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
    let everyone = access.sees_all() || access.principal.role == Role::Viewer;
    let book = hub.contracts();
    let customers: Vec<ArrHistory> = book
        .histories
        .iter()
        .filter(|h| everyone || access.sees(&h.customer))
        .cloned()
        .collect();
    let touchpoints = match hub.touchpoint_store() {
        Some(path) => tokio::task::spawn_blocking(move || {
            SqliteStore::open(&path).and_then(|s| s.touchpoints(None))
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        None => Vec::new(),
    };
    let doc = report(&customers, &touchpoints, kind, count, as_of);
    Ok(json(&doc))
}

/// The latest `count` periods of `kind` up to `as_of` (the end of the
/// newest data; without data, the day after the latest event). Managed
/// accounts: those with a touchpoint in the period, once any touchpoint is
/// recorded; until then the high-touch ones (a named CS manager).
fn report(
    customers: &[ArrHistory],
    touchpoints: &[Touchpoint],
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
    let rows = retention_table(periods, customers, |c, period| {
        if by_touchpoints {
            touchpoints
                .iter()
                .any(|t| t.customer == c.customer && (period.start..period.end).contains(&t.at))
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
        periods: periods
            .iter()
            .map(|p| PeriodDoc {
                label: p.label(),
                start: p.start,
                end: p.end,
                complete: p.end <= reached,
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

#[cfg(test)]
mod tests {
    use fleetpulse_engine::kpi::revenue_retention::{ContractEvent, ContractEventKind};
    use fleetpulse_engine::kpi::touchpoint::TouchpointKind;

    use super::*;

    fn day(date: &str) -> u64 {
        crate::touchpoints::day_ms(date).unwrap()
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
}
