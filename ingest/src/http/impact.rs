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
use super::view::View;

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
    let usage = daily_usage(&hub.read_view(), |id| everyone || access.sees(id));
    let shown: std::collections::HashSet<&str> = usage.iter().map(|u| &*u.customer).collect();
    let touchpoints: Vec<_> = touchpoints
        .into_iter()
        .filter(|t| shown.contains(&*t.customer))
        .collect();
    let doc = ImpactDoc {
        window_days,
        customers: usage.len(),
        touchpoints: touchpoints.len(),
        kinds: impact(&touchpoints, &usage, window_days),
    };
    Ok(json(&doc))
}

/// Each customer's daily hours, stages and attainment that `sees` lets
/// through, keyed by local date (00:00 UTC of the date, as touchpoints are
/// dated): a touchpoint on a customer's 29 March splits its days at its own
/// 29 March in any time zone, and its stage the day before is found.
fn daily_usage(view: &View, sees: impl Fn(&str) -> bool) -> Vec<DailyUsage> {
    let day = view.day_window();
    view.customers()
        .iter()
        .filter(|(id, _)| sees(id))
        .filter_map(|(id, c)| {
            let kpis = c.kpis.get(day)?;
            let attainment = daily_attainment(
                c.outcomes
                    .iter()
                    .filter(|((_, window), _)| **window == *day)
                    .flat_map(|(_, s)| s.iter()),
            );
            Some(DailyUsage {
                customer: id.clone(),
                segment: c.info.as_ref().map(|i| i.segment).unwrap_or_default(),
                hours: kpis
                    .iter()
                    .map(|k| (c.date_of(k.window_start), k.totals.operating_hours))
                    .collect(),
                stages: (c.health.iter().flat_map(|s| s.iter()))
                    .map(|h| (c.date_of(h.window_start), h.stage))
                    .collect(),
                attainment: attainment
                    .into_iter()
                    .map(|(start, a)| (c.date_of(start), a))
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use fleetpulse_engine::kpi::health::Stage;
    use fleetpulse_engine::kpi::touchpoint::{Touchpoint, TouchpointKind};
    use fleetpulse_engine::{
        Contract, CustomerKpi, CustomerSpec, HealthRecord, Output, Segment, Totals,
    };

    use super::*;

    const DAYS: i64 = 56;

    /// 00:00 of the `n`th day from 1 March 2026 in Auckland, ms since the
    /// epoch (from the zone rules: UTC+13 until 5 April, +12 after).
    fn auckland_midnight(n: i64) -> u64 {
        let zone = jiff::tz::TimeZone::get("Pacific/Auckland").unwrap();
        let date = jiff::civil::date(2026, 3, 1) + jiff::Span::new().days(n);
        let at = date.to_zoned(zone).unwrap().timestamp().as_millisecond();
        u64::try_from(at).unwrap()
    }

    /// A customer of Auckland working `hours(n)` on its `n`th day, in
    /// stage `stage` throughout.
    fn customer(id: &str, stage: Stage, hours: impl Fn(i64) -> f64) -> (CustomerSpec, Vec<Output>) {
        let contract = Contract {
            arr: 100_000.0,
            start: 1_767_225_600_000, // 2026-01-01
            renewal: 1_798_761_600_000,
            devices_purchased: 5,
            operator_seats: 5,
        };
        let mut spec = CustomerSpec::new(id, Segment::HighTouch, contract);
        spec.timezone = jiff::tz::TimeZone::get("Pacific/Auckland").unwrap();
        let records = (0..DAYS).flat_map(|n| {
            let (start, end) = (auckland_midnight(n), auckland_midnight(n + 1));
            let kpi = CustomerKpi {
                customer: id.into(),
                window: "1d".into(),
                window_start: start,
                window_end: end,
                totals: Totals {
                    operating_hours: hours(n),
                    ..Totals::default()
                },
                ..CustomerKpi::default()
            };
            let health = HealthRecord {
                customer: id.into(),
                window_start: start,
                window_end: end,
                stage,
                ..HealthRecord::default()
            };
            [Output::Customer(kpi), Output::health(health)]
        });
        (spec, records.collect())
    }

    /// A training on kiwi's 29 March (day 28), 28-day windows across
    /// Auckland's 25-hour 5 April: kiwi works 4 h a day before it and 8 h
    /// from that day on; tui, in kiwi's stage, 5 h throughout; kea, in
    /// another stage, doubles too. The estimate is kiwi's doubling against
    /// tui alone: +100%. Keyed by the days' UTC starts, the training's own
    /// day fell in the window before it, the window after lacked a day
    /// (the case was left out), and no stage was found to match on.
    #[test]
    fn a_touchpoint_splits_the_customers_own_days_in_a_zone_east_of_utc() {
        assert_eq!(auckland_midnight(0), 1_772_276_400_000); // 2026-02-28T11:00Z
        assert_eq!(auckland_midnight(36), 1_775_390_400_000); // 2026-04-05T12:00Z
        let fleet = [
            customer("kiwi", Stage::Adopt, |n| if n < 28 { 4.0 } else { 8.0 }),
            customer("tui", Stage::Adopt, |_| 5.0),
            customer("kea", Stage::Grow, |n| if n < 28 { 5.0 } else { 10.0 }),
        ];
        let mut view = View::default();
        let roster: HashMap<String, CustomerSpec> = fleet
            .iter()
            .map(|(s, _)| (s.id.to_string(), s.clone()))
            .collect();
        view.set_roster(&roster);
        for (_, records) in &fleet {
            view.apply(records);
        }
        let training = Touchpoint {
            customer: "kiwi".into(),
            kind: TouchpointKind::Training,
            at: 1_774_742_400_000, // 2026-03-29, as the API keeps a date
            ..Touchpoint::default()
        };
        let usage = daily_usage(&view, |_| true);
        let estimates = impact(&[training], &usage, 28);
        let [training] = estimates.as_slice() else {
            panic!("{estimates:?}");
        };
        assert_eq!((training.cases, training.left_out), (1, 0), "{training:?}");
        assert_eq!(training.controls, 1.0, "tui only: kea is in another stage");
        assert!((training.effect - 1.0).abs() < 1e-9, "{training:?}");
    }
}
