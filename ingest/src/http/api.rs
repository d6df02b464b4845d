//! The JSON API: handlers and the documents they return. Field names are
//! the store field names of `docs/SCHEMA.md`; the shapes are described in
//! `openapi.json` (served at `/api/openapi.json`), which the API tests check
//! every response against.
//!
//! Handlers take the view's read lock, build a document, release the lock,
//! then serialise: the lock is never held across an `.await`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetpulse_engine::kpi::health::{Band, Stage};
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::{
    AlertRecord, CustomerKpi, EventTime, HealthRecord, MilestoneRecord, OutcomeRecord,
    PortfolioRecord, Segment,
};
use serde::Serialize;

use super::Hub;
use super::view::{CustomerView, DeviceView, View};

/// Days of history returned when `days` is not given.
pub const DEFAULT_DAYS: usize = 90;
/// Most days of history a request may ask for.
pub const MAX_DAYS: usize = 366;
/// Health scores per customer in the list's sparkline.
pub const SPARKLINE_DAYS: usize = 30;

/// An API error: status and message, as `{"error": ..., "status": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// 400: a query parameter is unknown or has a bad value.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404: no such resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    status: u16,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            status: self.status.as_u16(),
        };
        (self.status, Json(body)).into_response()
    }
}

/// Query parameters as given, in order.
pub type Params = Query<Vec<(String, String)>>;

/// Checked query parameters: each known name at most once, unknown names
/// refused.
struct QueryArgs<'a> {
    params: &'a [(String, String)],
}

impl<'a> QueryArgs<'a> {
    fn new(params: &'a [(String, String)], known: &[&str]) -> Result<Self, ApiError> {
        for (i, (name, _)) in params.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{name}`; known: {}",
                    known.join(", ")
                )));
            }
            if params[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::bad_request(format!(
                    "query parameter `{name}` given twice"
                )));
            }
        }
        Ok(Self { params })
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// An enum parameter: one of `names`.
    fn one_of<T: Copy>(&self, name: &str, values: &[(&str, T)]) -> Result<Option<T>, ApiError> {
        let Some(given) = self.get(name) else {
            return Ok(None);
        };
        values
            .iter()
            .find(|(n, _)| *n == given)
            .map(|(_, v)| Some(*v))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{name}`: `{given}` is not one of {}",
                    values
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// An integer parameter in `min..=max`.
    fn int(&self, name: &str, min: usize, max: usize) -> Result<Option<usize>, ApiError> {
        let Some(given) = self.get(name) else {
            return Ok(None);
        };
        match given.parse::<usize>() {
            Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::bad_request(format!(
                "`{name}`: `{given}` is not a whole number from {min} to {max}"
            ))),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.one_of(name, &[("true", true), ("false", false)])
    }
}

const SEGMENTS: [(&str, Segment); 3] = [
    ("high-touch", Segment::HighTouch),
    ("low-touch", Segment::LowTouch),
    ("tech-touch", Segment::TechTouch),
];
const BANDS: [(&str, Band); 3] = [
    ("red", Band::Red),
    ("yellow", Band::Yellow),
    ("green", Band::Green),
];

fn rules() -> Vec<(&'static str, Rule)> {
    Rule::ALL.iter().map(|r| (r.as_str(), *r)).collect()
}

/// A customer's health on one day: the `health` record of docs/SCHEMA.md,
/// components flattened.
#[derive(Debug, Serialize)]
pub struct HealthDoc {
    customer: String,
    window_start: EventTime,
    window_end: EventTime,
    score: f64,
    band: Band,
    score_trend: f64,
    depth: f64,
    breadth: f64,
    utilisation: f64,
    outcome_attainment: Option<f64>,
    reliability: f64,
    trend: f64,
    maturity: Option<f64>,
    stage: Stage,
    segment: Segment,
    arr: f64,
    arr_at_risk: f64,
    open_alerts: u32,
    days_since_activation: f64,
    days_to_renewal: f64,
    time_to_value_days: Option<f64>,
    usage_growth: f64,
    milestones_reached: u32,
    milestones_total: u32,
}

impl From<&HealthRecord> for HealthDoc {
    fn from(h: &HealthRecord) -> Self {
        Self {
            customer: h.customer.to_string(),
            window_start: h.window_start,
            window_end: h.window_end,
            score: h.score,
            band: h.band,
            score_trend: h.score_trend,
            depth: h.components.depth,
            breadth: h.components.breadth,
            utilisation: h.components.utilisation,
            outcome_attainment: h.components.outcome,
            reliability: h.components.reliability,
            trend: h.components.trend,
            maturity: h.components.maturity,
            stage: h.stage,
            segment: h.segment,
            arr: h.arr,
            arr_at_risk: h.arr_at_risk,
            open_alerts: h.open_alerts,
            days_since_activation: h.days_since_activation,
            days_to_renewal: h.days_to_renewal,
            time_to_value_days: h.time_to_value_days,
            usage_growth: h.usage_growth,
            milestones_reached: h.milestones_reached,
            milestones_total: h.milestones_total,
        }
    }
}

/// One point of the health sparkline.
#[derive(Debug, Serialize)]
struct HealthPoint {
    window_start: EventTime,
    score: f64,
    band: Band,
}

/// One row of the ranked list.
#[derive(Debug, Serialize)]
struct CustomerSummary<'a> {
    rank: usize,
    customer: &'a str,
    name: &'a str,
    segment: Option<Segment>,
    arr: Option<f64>,
    health: Option<HealthDoc>,
    health_history: Vec<HealthPoint>,
    alerts: Vec<&'a AlertRecord>,
}

#[derive(Debug, Serialize)]
struct CustomerList<'a> {
    version: u64,
    as_of: Option<EventTime>,
    customers: Vec<CustomerSummary<'a>>,
}

fn display_name<'a>(id: &'a str, c: &'a CustomerView, view: &'a View) -> &'a str {
    if let Some(info) = &c.info {
        return &info.name;
    }
    view.alerts()
        .find(|a| &*a.customer == id)
        .map_or(id, |a| &a.customer_name)
}

fn segment_of(c: &CustomerView) -> Option<Segment> {
    c.info
        .as_ref()
        .map(|i| i.segment)
        .or_else(|| c.latest_health().map(|h| h.segment))
}

fn arr_of(c: &CustomerView) -> Option<f64> {
    c.info
        .as_ref()
        .map(|i| i.arr)
        .or_else(|| c.latest_health().map(|h| h.arr))
}

/// The newest day the view holds: the end of the latest health record.
fn as_of(view: &View) -> Option<EventTime> {
    view.customers()
        .values()
        .filter_map(|c| c.latest_health().map(|h| h.window_end))
        .max()
}

/// `GET /api/customers`: customers ranked by risk.
pub async fn customers(
    State(hub): State<Arc<Hub>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let args = QueryArgs::new(&params, &["segment", "band", "at_risk", "limit"])?;
    let segment = args.one_of("segment", &SEGMENTS)?;
    let band = args.one_of("band", &BANDS)?;
    let at_risk = args.bool("at_risk")?;
    let limit = args.int("limit", 1, 10_000)?;
    let view = hub.read_view();
    let mut rows = Vec::new();
    for (i, (id, c)) in view.ranked().into_iter().enumerate() {
        let open = view.open_alerts_of(id);
        let latest = c.latest_health();
        if segment.is_some_and(|s| segment_of(c) != Some(s))
            || band.is_some_and(|b| latest.map(|h| h.band) != Some(b))
        {
            continue;
        }
        let risky = !open.is_empty() || latest.is_some_and(|h| h.arr_at_risk > 0.0);
        if at_risk.is_some_and(|wanted| wanted != risky) {
            continue;
        }
        rows.push(CustomerSummary {
            rank: i + 1,
            customer: id,
            name: display_name(id, c, &view),
            segment: segment_of(c),
            arr: arr_of(c),
            health: latest.map(HealthDoc::from),
            health_history: c
                .health
                .iter()
                .flat_map(|s| s.tail(SPARKLINE_DAYS))
                .map(|h| HealthPoint {
                    window_start: h.window_start,
                    score: h.score,
                    band: h.band,
                })
                .collect(),
            alerts: open,
        });
        if limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
    }
    let doc = CustomerList {
        version: view.version(),
        as_of: as_of(&view),
        customers: rows,
    };
    Ok(json(&doc))
}

/// One device's latest state.
#[derive(Debug, Serialize)]
struct DeviceDoc<'a> {
    device: &'a str,
    site: &'a str,
    last_seen: EventTime,
    last_state: &'static str,
    window_start: Option<EventTime>,
    operating_hours: Option<f64>,
    utilisation: Option<f64>,
    fault_count: Option<u64>,
    faults_7d: u64,
    samples: Option<u64>,
}

fn device_doc<'a>(id: &'a str, d: &'a DeviceView) -> DeviceDoc<'a> {
    let latest = d.daily.last();
    DeviceDoc {
        device: id,
        site: &d.site,
        last_seen: d.last_seen,
        last_state: d.last_state.as_str(),
        window_start: latest.map(|k| k.window_start),
        operating_hours: latest.map(|k| k.operating_hours),
        utilisation: latest.map(|k| k.utilisation),
        fault_count: latest.map(|k| k.fault_count),
        faults_7d: d.daily.iter().map(|k| k.fault_count).sum(),
        samples: latest.map(|k| k.samples),
    }
}

/// One outcome: its target and its records over the period.
#[derive(Debug, Serialize)]
struct OutcomeDoc<'a> {
    outcome: &'a str,
    window: &'a str,
    direction: Option<fleetpulse_engine::kpi::outcome::Direction>,
    target: Option<f64>,
    met_windows: usize,
    evaluated_windows: usize,
    latest: Option<&'a OutcomeRecord>,
    history: Vec<&'a OutcomeRecord>,
}

#[derive(Debug, Serialize)]
struct CustomerDetail<'a> {
    version: u64,
    customer: &'a str,
    name: &'a str,
    segment: Option<Segment>,
    arr: Option<f64>,
    devices_purchased: Option<u32>,
    renewal: Option<EventTime>,
    window: &'a str,
    health: Option<HealthDoc>,
    time_to_value_days: Option<f64>,
    health_history: Vec<HealthDoc>,
    kpis: Vec<&'a CustomerKpi>,
    outcomes: Vec<OutcomeDoc<'a>>,
    milestones: Vec<&'a MilestoneRecord>,
    devices: Vec<DeviceDoc<'a>>,
    alerts: Vec<&'a AlertRecord>,
}

/// `GET /api/customers/{id}`: one customer's page.
pub async fn customer(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let args = QueryArgs::new(&params, &["days", "window"])?;
    let days = args.int("days", 1, MAX_DAYS)?.unwrap_or(DEFAULT_DAYS);
    let view = hub.read_view();
    let window = args.get("window").unwrap_or(view.day_window()).to_string();
    let Some((id, c)) = view.customers().get_key_value(id.as_str()) else {
        return Err(ApiError::not_found(format!("no customer `{id}`")));
    };
    let kpis = match c.kpis.get(window.as_str()) {
        Some(series) => series.tail(days).collect(),
        None if window == view.day_window() || c.kpis.is_empty() => Vec::new(),
        None => {
            return Err(ApiError::bad_request(format!(
                "`window`: no `{window}` window; known: {}",
                c.kpis.keys().map(|k| &**k).collect::<Vec<_>>().join(", ")
            )));
        }
    };
    let outcomes = c
        .outcomes
        .iter()
        .map(|((name, window), series)| {
            let history: Vec<&OutcomeRecord> = series.tail(days).collect();
            let evaluated = history.iter().filter(|o| o.value.is_finite()).count();
            OutcomeDoc {
                outcome: name,
                window,
                direction: series.last().map(|o| o.direction),
                target: series.last().map(|o| o.target),
                met_windows: history.iter().filter(|o| o.met).count(),
                evaluated_windows: evaluated,
                latest: series.last(),
                history,
            }
        })
        .collect();
    let mut alerts: Vec<&AlertRecord> = view.alerts().filter(|a| a.customer == *id).collect();
    alerts.sort_by(|a, b| {
        (a.status != AlertStatus::Open)
            .cmp(&(b.status != AlertStatus::Open))
            .then(b.opened_at.cmp(&a.opened_at))
    });
    let latest = c.latest_health();
    let doc = CustomerDetail {
        version: view.version(),
        customer: id,
        name: display_name(id, c, &view),
        segment: segment_of(c),
        arr: arr_of(c),
        devices_purchased: c.info.as_ref().map(|i| i.devices_purchased),
        renewal: c.info.as_ref().map(|i| i.renewal),
        window: &window,
        health: latest.map(HealthDoc::from),
        time_to_value_days: latest.and_then(|h| h.time_to_value_days),
        health_history: c
            .health
            .iter()
            .flat_map(|s| s.tail(days))
            .map(HealthDoc::from)
            .collect(),
        kpis,
        outcomes,
        milestones: c.journey(),
        devices: c.devices.iter().map(|(id, d)| device_doc(id, d)).collect(),
        alerts,
    };
    Ok(json(&doc))
}

#[derive(Debug, Serialize)]
struct AlertList<'a> {
    version: u64,
    alerts: Vec<&'a AlertRecord>,
}

/// `GET /api/alerts`: alert episodes, newest first.
pub async fn alerts(
    State(hub): State<Arc<Hub>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let args = QueryArgs::new(&params, &["status", "segment", "rule", "customer", "limit"])?;
    let status = args.one_of(
        "status",
        &[
            ("open", Some(AlertStatus::Open)),
            ("resolved", Some(AlertStatus::Resolved)),
            ("all", None),
        ],
    )?;
    let status = status.unwrap_or(Some(AlertStatus::Open));
    let segment = args.one_of("segment", &SEGMENTS)?;
    let rule = args.one_of("rule", &rules())?;
    let customer = args.get("customer");
    let limit = args.int("limit", 1, 10_000)?;
    let view = hub.read_view();
    let mut alerts: Vec<&AlertRecord> = view
        .alerts()
        .filter(|a| status.is_none_or(|s| a.status == s))
        .filter(|a| segment.is_none_or(|s| a.segment == s))
        .filter(|a| rule.is_none_or(|r| a.rule == r))
        .filter(|a| customer.is_none_or(|c| &*a.customer == c))
        .collect();
    alerts.sort_by(|a, b| {
        b.opened_at
            .cmp(&a.opened_at)
            .then(b.arr_at_risk.total_cmp(&a.arr_at_risk))
            .then(a.customer.cmp(&b.customer))
            .then(a.rule.cmp(&b.rule))
    });
    if let Some(limit) = limit {
        alerts.truncate(limit);
    }
    Ok(json(&AlertList {
        version: view.version(),
        alerts,
    }))
}

#[derive(Debug, Serialize)]
struct PortfolioDoc<'a> {
    version: u64,
    latest: Option<&'a PortfolioRecord>,
    history: Vec<&'a PortfolioRecord>,
    customers: usize,
    open_alerts: usize,
    open_alerts_by_rule: Vec<RuleCount>,
}

#[derive(Debug, Serialize)]
struct RuleCount {
    rule: Rule,
    open_alerts: usize,
}

/// `GET /api/portfolio`: figures over all customers.
pub async fn portfolio(
    State(hub): State<Arc<Hub>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let args = QueryArgs::new(&params, &["days"])?;
    let days = args.int("days", 1, MAX_DAYS)?.unwrap_or(DEFAULT_DAYS);
    let view = hub.read_view();
    let open: Vec<&AlertRecord> = view
        .alerts()
        .filter(|a| a.status == AlertStatus::Open)
        .collect();
    let doc = PortfolioDoc {
        version: view.version(),
        latest: view.portfolio().last(),
        history: view.portfolio().tail(days).collect(),
        customers: view.customers().len(),
        open_alerts: open.len(),
        open_alerts_by_rule: Rule::ALL
            .iter()
            .map(|r| RuleCount {
                rule: *r,
                open_alerts: open.iter().filter(|a| a.rule == *r).count(),
            })
            .filter(|c| c.open_alerts > 0)
            .collect(),
    };
    Ok(json(&doc))
}

#[derive(Debug, Serialize)]
struct StatusDoc {
    version: u64,
    records: u64,
    as_of: Option<EventTime>,
    running: bool,
    ready: bool,
    watermark: Option<EventTime>,
    messages_received: u64,
    messages_accepted: u64,
    messages_rejected: u64,
    /// One entry per AEMP source.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    aemp: Vec<crate::source::aemp::metrics::SourceStatus>,
}

/// `GET /api/status`: what the service has done so far; the dashboard polls
/// it and fetches again when `version` changes.
pub async fn status(
    State(hub): State<Arc<Hub>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    QueryArgs::new(&params, &[])?;
    let (version, records, as_of) = {
        let view = hub.read_view();
        (view.version(), view.records(), as_of(&view))
    };
    let metrics = hub.metrics();
    let counter = |f: fn(&crate::metrics::IngestMetrics) -> u64| metrics.as_deref().map_or(0, f);
    let watermark = counter(|m| m.watermark.load(std::sync::atomic::Ordering::Relaxed));
    Ok(json(&StatusDoc {
        version,
        records,
        as_of,
        running: hub.is_running(),
        ready: hub.is_ready(),
        watermark: (watermark > 0).then_some(watermark),
        messages_received: counter(|m| m.received()),
        messages_accepted: counter(|m| {
            m.messages_accepted
                .load(std::sync::atomic::Ordering::Relaxed)
        }),
        messages_rejected: counter(|m| m.rejected_total()),
        aemp: metrics
            .as_deref()
            .map_or_else(Vec::new, |m| m.aemp.status()),
    }))
}

/// Serialises `doc` (non-finite numbers become `null`).
fn json<T: Serialize>(doc: &T) -> Response {
    match serde_json::to_vec(doc) {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(ErrorBody {
                error: &format!("cannot serialise: {e}"),
                status: 500,
            }),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn query_args_refuse_unknown_repeated_and_bad_values() {
        let p = params(&[("limit", "5"), ("segment", "high-touch")]);
        let args = QueryArgs::new(&p, &["limit", "segment"]).unwrap();
        assert_eq!(args.int("limit", 1, 10).unwrap(), Some(5));
        assert_eq!(
            args.one_of("segment", &SEGMENTS).unwrap(),
            Some(Segment::HighTouch)
        );
        assert!(QueryArgs::new(&params(&[("x", "1")]), &["limit"]).is_err());
        assert!(QueryArgs::new(&params(&[("limit", "1"), ("limit", "2")]), &["limit"]).is_err());
        let p = params(&[("limit", "0"), ("segment", "gold")]);
        let args = QueryArgs::new(&p, &["limit", "segment"]).unwrap();
        assert!(args.int("limit", 1, 10).is_err());
        let err = args.one_of("segment", &SEGMENTS).unwrap_err();
        assert!(err.message.contains("high-touch"), "{}", err.message);
    }

    #[test]
    fn non_finite_numbers_serialise_as_null() {
        let body = serde_json::to_string(&serde_json::json!({ "v": f64::NAN })).unwrap();
        assert_eq!(body, r#"{"v":null}"#);
        #[derive(Serialize)]
        struct V {
            v: f64,
        }
        assert_eq!(
            serde_json::to_string(&V { v: f64::NAN }).unwrap(),
            r#"{"v":null}"#
        );
    }
}
