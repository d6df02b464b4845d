//! A customer's touchpoints: `GET` lists them with where each coverage
//! cadence stands and the `coverage_gap` episodes; `POST` records one.
//!
//! Touchpoints live in the service's SQLite store (the first SQLite sink),
//! read and written on a blocking thread per request, so one recorded with
//! `fleetpulse touchpoints` shows up too. `coverage_gap` is evaluated here,
//! over the touchpoints up to the newest day of data (`as_of`), with the
//! engine's rule (`fleetpulse_engine::kpi::coverage_gap`).
//!
//! Who may write: an admin for any customer, a CSM for the customers they
//! see; a viewer sees no customer at all. Against cross-site requests the
//! body must be `application/json` (a browser asks the server first, and
//! this one never says yes), an `Origin` must be this server, and a
//! dashboard session sends its CSRF token in `X-CSRF-Token`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetpulse_engine::AlertRecord;
use fleetpulse_engine::config::date_start;
use fleetpulse_engine::kpi::coverage::{Cadence, CoverageModel};
use fleetpulse_engine::kpi::coverage_gap::{self, Gap};
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::kpi::touchpoint::Touchpoint;
use serde::Serialize;
use utoipa::ToSchema;

use super::Hub;
use super::api::{
    ApiError, ApiQuery, CustomerId, ErrorBody, NoQuery, Unauthorized, as_of, json, on_store,
};
use super::auth::login::same_origin;
use super::auth::session::same_secret;
use super::auth::{Access, Via};
use super::view::CustomerView;
use crate::records::Doc;
use crate::records::openapi::{AlertSchema, TouchpointSchema};
use crate::touchpoints::TouchpointInput;

/// The header a dashboard session sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

const DAY_MS: u64 = 86_400_000;

/// A customer's touchpoints and coverage.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CustomerTouchpoints)]
struct TouchpointsDoc<'a> {
    /// Customer id.
    customer: &'a str,
    /// The end of the newest day of data: coverage is evaluated up to it
    /// (null before any data: nothing is overdue yet).
    as_of: Option<u64>,
    /// Oldest first.
    #[schema(value_type = Vec<TouchpointSchema>)]
    touchpoints: Vec<Doc<'a, Touchpoint>>,
    /// The segment's cadences and where each stands.
    coverage: Vec<CadenceDoc>,
    /// `coverage_gap` episodes, oldest first (`alert` records).
    #[schema(value_type = Vec<AlertSchema>)]
    coverage_gaps: Vec<Doc<'a, AlertRecord>>,
}

/// One cadence of the coverage model, for this customer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CadenceDoc {
    #[serde(flatten)]
    cadence: Cadence,
    /// The last qualifying touchpoint (its day, ms since the Unix epoch).
    last_at: Option<u64>,
    /// The day the next one is due.
    due_at: u64,
    /// `ok`, `overdue`, or `unknown` before any data.
    status: &'static str,
}

/// The customer's touchpoints, coverage cadences and coverage gaps
///
/// A coverage gap opens at the end of a cadence's due day without a
/// qualifying touchpoint and resolves at the end of the day one took place.
#[utoipa::path(get, path = "/api/customers/{id}/touchpoints", operation_id = "listTouchpoints", tag = "api",
    params(("id" = String, Path, description = "customer id")),
    responses((status = 200, description = "touchpoints and coverage", body = TouchpointsDoc),
        (status = 400, description = "a query string, or a customer id that is not UTF-8", body = ErrorBody),
        (status = 404, description = "no such customer, or not one of the user's", body = ErrorBody),
        Unauthorized))]
pub async fn list(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    CustomerId(id): CustomerId,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Response, ApiError> {
    known(&hub, &access, &id)?;
    let customer = id.clone();
    let touchpoints = on_store(&hub, move |s| s.touchpoints(Some(&customer)))
        .await?
        .unwrap_or_default();
    let model = hub.coverage();
    let view = hub.read_view();
    let as_of = as_of(&view);
    let Some(c) = view.customers().get(id.as_str()) else {
        return Err(ApiError::not_found(format!("no customer `{id}`")));
    };
    let (cadences, gaps) = coverage(&id, c, &model, &touchpoints, as_of);
    let doc = TouchpointsDoc {
        customer: &id,
        as_of,
        touchpoints: touchpoints.iter().map(Doc).collect(),
        coverage: cadences,
        coverage_gaps: gaps.iter().map(Doc).collect(),
    };
    Ok(json(&doc))
}

/// Where each cadence of `c`'s segment stands, and its `coverage_gap`
/// episodes (numbered, oldest first), over `touchpoints` up to `as_of` (the
/// end of the newest day of data; `None` before any).
fn coverage(
    id: &str,
    c: &CustomerView,
    model: &CoverageModel,
    touchpoints: &[Touchpoint],
    as_of: Option<u64>,
) -> (Vec<CadenceDoc>, Vec<AlertRecord>) {
    // Touchpoints and due days are dates: the customer's days over are
    // counted by its local dates too, those before the date holding
    // `as_of` (a gap is due by the end of its own day, east of UTC as west).
    let as_of = as_of.map(|t| c.date_of(t));
    let mut cadences = Vec::new();
    let mut gaps = Vec::new();
    if let Some(info) = &c.info {
        for cadence in model.cadences(info.segment) {
            let state = as_of.map(|as_of| {
                (
                    coverage_gap::evaluate(cadence, info.start, touchpoints, as_of),
                    as_of,
                )
            });
            let status = match &state {
                None => "unknown",
                Some((s, _)) if s.open().is_some() => "overdue",
                Some(_) => "ok",
            };
            let (last_at, due_at) = match &state {
                Some((s, _)) => (s.last, s.due_at),
                None => (
                    None,
                    info.start + u64::from(cadence.first_within_days) * DAY_MS,
                ),
            };
            cadences.push(CadenceDoc {
                cadence: *cadence,
                last_at,
                due_at,
                status,
            });
            if let Some((state, as_of)) = state {
                gaps.extend(
                    state
                        .gaps
                        .iter()
                        .map(|g| gap_alert(id, c, cadence, g, as_of)),
                );
            }
        }
    }
    gaps.sort_by_key(|a| a.opened_at);
    for (i, a) in gaps.iter_mut().enumerate() {
        a.episode = u32::try_from(i + 1).unwrap_or(u32::MAX);
    }
    (cadences, gaps)
}

/// A coverage gap as an alert episode of `coverage_gap`.
fn gap_alert(id: &str, c: &CustomerView, cadence: &Cadence, gap: &Gap, as_of: u64) -> AlertRecord {
    let what = format!(
        "{}{}",
        cadence.kind.as_str(),
        if cadence.decision_maker {
            " with a decision-maker"
        } else {
            ""
        }
    );
    let (mut evidence, threshold) = match gap.after {
        Some(last) => (
            format!(
                "no {what} since {} (due every {} days, by {})",
                crate::touchpoints::day(last),
                cadence.every_days,
                crate::touchpoints::day(gap.due_at)
            ),
            cadence.every_days,
        ),
        None => (
            format!(
                "no {what} within {} days of the contract start (due by {})",
                cadence.first_within_days,
                crate::touchpoints::day(gap.due_at)
            ),
            cadence.first_within_days,
        ),
    };
    if let Some(resolved) = gap.resolved_at {
        evidence.push_str(&format!(
            "; held {}",
            crate::touchpoints::day(resolved - DAY_MS)
        ));
    }
    let info = c.info.as_ref();
    let latest = c.latest_health();
    AlertRecord {
        customer: id.into(),
        rule: Rule::CoverageGap,
        episode: 0,
        customer_name: info.map_or_else(|| id.into(), |i| i.name.clone()),
        status: if gap.resolved_at.is_some() {
            AlertStatus::Resolved
        } else {
            AlertStatus::Open
        },
        provisional: false,
        // The gap's days are dates; as an episode it opens and resolves at
        // the customer's own midnights, dated in its zone as other alerts.
        opened_at: date_start(c.zone(), gap.opened_at),
        resolved_at: gap.resolved_at.map(|r| date_start(c.zone(), r)),
        evidence,
        metric: gap.days_overdue(as_of) as f64,
        threshold: f64::from(threshold),
        stage: latest.map(|h| h.stage).unwrap_or_default(),
        segment: info.map(|i| i.segment).unwrap_or_default(),
        arr_at_risk: info.map_or(0.0, |i| i.arr),
        next_action: Rule::CoverageGap.next_action().to_string(),
    }
}

/// Records a touchpoint
///
/// The body is a `NewTouchpoint`; `csm` defaults to the user. Recording the
/// same customer, kind, day and CSM again overwrites it. A dashboard
/// session sends its CSRF token (`csrf_token` of `/api/me`) in
/// `X-CSRF-Token`.
#[utoipa::path(post, path = "/api/customers/{id}/touchpoints", operation_id = "recordTouchpoint", tag = "api",
    params(("id" = String, Path, description = "customer id")),
    request_body(content = TouchpointInput, content_type = "application/json"),
    responses((status = 201, description = "the touchpoint as stored", body = TouchpointSchema),
        (status = 400, description = "a field is missing or wrong; the message names it", body = ErrorBody),
        (status = 403, description = "a dashboard session without its CSRF token, or another origin", body = ErrorBody),
        (status = 404, description = "no such customer, or not one of the user's", body = ErrorBody),
        (status = 415, description = "a body that is not `application/json`", body = ErrorBody),
        (status = 503, description = "the service has no SQLite store to keep touchpoints in", body = ErrorBody),
        Unauthorized))]
pub async fn record(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    CustomerId(id): CustomerId,
    headers: HeaderMap,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_write(&headers, &access)?;
    known(&hub, &access, &id)?;
    let input: TouchpointInput = super::api::json_body(&body)?;
    let touchpoint = input
        .check(&id, Some(&access.principal.name), &access.principal.name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let stored = touchpoint.clone();
    if on_store(&hub, move |s| s.record_touchpoints(&[stored]))
        .await?
        .is_none()
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "touchpoints are kept in a SQLite store: configure a [[sinks]] of type sqlite",
        ));
    }
    tracing::info!(
        target: "audit",
        event = "touchpoint",
        user = %access.principal.name,
        customer = %id,
        kind = touchpoint.kind.as_str(),
        "touchpoint recorded"
    );
    Ok((StatusCode::CREATED, json(&Doc(&touchpoint))).into_response())
}

/// The checks of a write through the API (touchpoints, contract events)
/// against cross-site requests: a JSON body (a page of another site can
/// POST only simple content types without asking first), the same origin,
/// and a dashboard session's CSRF token.
pub(super) fn check_write(headers: &HeaderMap, access: &Access) -> Result<(), ApiError> {
    // A page of another site can POST only simple content types without
    // asking first, and names itself in `Origin`.
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body is JSON: Content-Type: application/json",
        ));
    }
    if !same_origin(headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a request from another origin",
        ));
    }
    if access.principal.via == Via::Session {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        let expected = access.csrf.as_deref();
        if !matches!((sent, expected), (Some(s), Some(e)) if same_secret(s, e)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("a dashboard session sends its CSRF token in {CSRF_HEADER}"),
            ));
        }
    }
    Ok(())
}

/// 404 unless `id` is a customer in the user's scope.
fn known(hub: &Hub, access: &Access, id: &str) -> Result<(), ApiError> {
    if access.sees(id) && hub.read_view().customers().contains_key(id) {
        return Ok(());
    }
    tracing::warn!(target: "audit", event = "denied", status = 404, user = %access.principal.name,
        path = "/api/customers/{id}/touchpoints", reason = "customer not in scope", "request denied");
    Err(ApiError::not_found(format!("no customer `{id}`")))
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::{Contract, CustomerSpec, Segment};

    use super::*;
    use crate::http::view::CustomerInfo;

    /// A high-touch customer of `zone` whose contract started on 1 January
    /// 2026.
    fn high_touch_in(zone: &str) -> CustomerView {
        let contract = Contract {
            arr: 100_000.0,
            start: 1_767_225_600_000, // 2026-01-01, as a date
            renewal: 1_798_761_600_000,
            devices_purchased: 5,
            operator_seats: 5,
        };
        let mut spec = CustomerSpec::new("c", Segment::HighTouch, contract);
        spec.timezone = jiff::tz::TimeZone::get(zone).unwrap();
        CustomerView {
            info: Some(CustomerInfo::of(&spec)),
            ..CustomerView::default()
        }
    }

    /// A high-touch customer of Auckland from 1 January 2026 owes its first
    /// business review with a decision-maker by 30 June (180 days). Its
    /// 30 June ends at 12:00 UTC (NZST, UTC+12): with that day known the
    /// review is overdue. Counted by UTC instants it was not until the UTC
    /// 30 June had ended too, on Auckland's 1 July: a day late.
    #[test]
    fn a_cadence_is_overdue_at_the_end_of_the_customers_own_due_day() {
        let c = high_touch_in("Pacific/Auckland");
        let june_30_ends = 1_782_820_800_000; // 2026-06-30T12:00Z
        let model = CoverageModel::default();
        let (cadences, gaps) = coverage("kiwi", &c, &model, &[], Some(june_30_ends));
        let due = 1_782_777_600_000; // 2026-06-30
        assert_eq!((cadences[0].due_at, cadences[0].status), (due, "overdue"));
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        // The episode opens at the end of the customer's own 30 June.
        assert_eq!(gaps[0].opened_at, june_30_ends);
        // An hour earlier Auckland's 30 June is not over: nothing is due yet.
        let (cadences, gaps) = coverage("kiwi", &c, &model, &[], Some(june_30_ends - 3_600_000));
        assert_eq!((cadences[0].status, gaps.len()), ("ok", 0));
    }

    /// The same cadence for a customer of Los Angeles: its gap opens at the
    /// end of its own 30 June, 07:00 UTC on 1 July (PDT), so the dashboard,
    /// which dates its alerts in its zone, says "since 2026-07-01"; opened
    /// at 00:00 UTC on 1 July it said 30 June, 17:00 there.
    #[test]
    fn a_coverage_gap_opens_at_the_customers_own_midnight_west_of_utc() {
        let c = high_touch_in("America/Los_Angeles");
        let july_1_07z = 1_782_889_200_000; // 2026-07-01T07:00Z, LA midnight
        let (_, gaps) = coverage("west", &c, &CoverageModel::default(), &[], Some(july_1_07z));
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].opened_at, july_1_07z);
    }
}
