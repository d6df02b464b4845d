//! `GET /api/impact`: what each kind of CS activity did to usage and to
//! outcome attainment, by difference in differences against comparable
//! customers without any touchpoint in the window (the arithmetic is
//! `fleetpulse_engine::kpi::activity_impact`), from the view's daily KPIs
//! and outcome records and the touchpoints of the SQLite store. A CSM gets the figures over
//! their own customers.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::response::Response;
use fleetpulse_engine::kpi::activity_impact::{
    DEFAULT_WINDOW_DAYS, DailyUsage, Impact, daily_attainment, impact,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Hub;
use super::api::{ApiError, ApiQuery, BadQuery, Bounded, Unauthorized, json, on_store};
use super::auth::{Access, Role};

/// Days compared before and after, as a query parameter.
type WindowDays = Bounded<7, 56>;

/// `GET /api/impact` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImpactQuery {
    /// Days compared before and after each touchpoint.
    #[param(value_type = Option<usize>, minimum = 7, maximum = 56, default = 28)]
    window_days: Option<WindowDays>,
}

/// The impact of each kind of activity.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ActivityImpact)]
struct ImpactDoc {
    /// Days compared before and after.
    window_days: u32,
    /// Customers with daily KPIs that this user sees.
    customers: usize,
    /// Their touchpoints.
    touchpoints: usize,
    /// One per kind with touchpoints: `effect` is the change of operating
    /// hours against the controls (0.12: +12%), `ci_low` / `ci_high` its
    /// 95% interval (null under 2 cases), `cases` the n; `outcome_effect`
    /// the change of daily outcome attainment in points of 0-100 (null
    /// without cases), `outcome_ci_low` / `outcome_ci_high` its interval,
    /// `outcome_cases` its n.
    kinds: Vec<Impact>,
}

/// The impact of each kind of CS activity on operating hours and outcomes
///
/// For each touchpoint, the customer's change of mean daily operating hours
/// over the window after it against the window before, minus that of the
/// customers of the same segment and stage with no touchpoint in either
/// window; per kind the mean, a 95% confidence interval and the number of
/// cases. The same for daily outcome attainment (share of the customer's
/// outcomes met each day), as a difference in points.
#[utoipa::path(get, path = "/api/impact", operation_id = "getImpact", tag = "api", params(ImpactQuery),
    responses((status = 200, description = "per kind of activity", body = ImpactDoc), BadQuery,
        Unauthorized))]
pub async fn activity_impact(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    ApiQuery(q): ApiQuery<ImpactQuery>,
) -> Result<Response, ApiError> {
    let window_days = q.window_days.map_or(DEFAULT_WINDOW_DAYS, |w| w.0 as u32);
    let everyone = access.sees_all() || access.principal.role == Role::Viewer;
    let touchpoints = on_store(&hub, |s| s.touchpoints(None))
        .await?
        .unwrap_or_default();
    let usage: Vec<DailyUsage> = {
        let view = hub.read_view();
        let day = view.day_window().to_string();
        view.customers()
            .iter()
            .filter(|(id, _)| everyone || access.sees(id))
            .filter_map(|(id, c)| {
                let kpis = c.kpis.get(day.as_str())?;
                Some(DailyUsage {
                    customer: id.clone(),
                    segment: c.info.as_ref().map(|i| i.segment).unwrap_or_default(),
                    hours: kpis
                        .iter()
                        .map(|k| (k.window_start, k.totals.operating_hours))
                        .collect(),
                    stages: c
                        .health
                        .iter()
                        .flat_map(|s| s.iter())
                        .map(|h| (h.window_start, h.stage))
                        .collect(),
                    attainment: daily_attainment(
                        c.outcomes
                            .iter()
                            .filter(|((_, window), _)| **window == *day)
                            .flat_map(|(_, s)| s.iter()),
                    ),
                })
            })
            .collect()
    };
    let touchpoints: Vec<_> = touchpoints
        .into_iter()
        .filter(|t| usage.iter().any(|u| u.customer == t.customer))
        .collect();
    let doc = ImpactDoc {
        window_days,
        customers: usage.len(),
        touchpoints: touchpoints.len(),
        kinds: impact(&touchpoints, &usage, window_days),
    };
    Ok(json(&doc))
}
