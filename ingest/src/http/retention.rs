//! `GET /api/retention`: gross and net revenue retention and logo retention
//! per period, for all customers, each segment, and managed against
//! unmanaged accounts, side by side (the arithmetic is
//! `fleetpulse_engine::kpi::revenue_retention`). A CSM gets the figures over
//! their own customers.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::response::Response;
use fleetpulse_engine::Segment;
use fleetpulse_engine::kpi::revenue_retention::{
    ArrHistory, Period, PeriodKind, Retention, retention_table,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Hub;
use super::api::{ApiError, ApiQuery, BadQuery, Bounded, Unauthorized, as_of, json};
use super::auth::{Access, Role};

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
    /// What makes an account managed: `high-touch` (a named CS manager)
    /// until touchpoints are recorded.
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
    /// `unmanaged`, in this order.
    groups: Vec<GroupDoc>,
}

/// One group's figures over one period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupDoc {
    /// Whom the figures cover.
    group: &'static str,
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
    let doc = report(&customers, kind, count, as_of);
    Ok(json(&doc))
}

/// The latest `count` periods of `kind` up to `as_of` (the end of the
/// newest data; without data, the day after the latest event).
fn report(
    customers: &[ArrHistory],
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
    let rows = retention_table(periods, customers, |c, _| c.segment == Segment::HighTouch);
    let reached = as_of.or(last.map(|l| l + DAY_MS)).unwrap_or(0);
    RetentionDoc {
        period: kind,
        managed: "high-touch",
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
