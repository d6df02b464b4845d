//! The JSON API: handlers and the documents they return. Record documents
//! are the record definitions' columns ([`Doc`], the store field names of
//! `docs/SCHEMA.md`); the OpenAPI document ([`ApiDoc`], served at
//! `/api/openapi.json`) is generated from these types, and the API tests
//! check every response against it.
//!
//! Query parameters are typed structs that refuse unknown and repeated
//! names. Handlers take the view's read lock, build a document, release the
//! lock, then serialise: the lock is never held across an `.await`.

use std::sync::Arc;

use axum::extract::{Extension, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::{Json, http::header};
use fleetpulse_engine::kpi::health::Band;
use fleetpulse_engine::kpi::outcome::Direction;
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::{
    AlertRecord, CustomerKpi, EventTime, ForecastRecord, HealthRecord, MilestoneRecord,
    OutcomeRecord, PortfolioRecord, Segment,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::Hub;
use super::auth::{Access, Role};
use super::view::{CustomerView, DeviceView, View, counts_as_open, restated};
use crate::records::Doc;
use crate::records::openapi::{
    AlertSchema, CustomerKpiSchema, ForecastSchema, HealthSchema, MilestoneSchema, OutcomeSchema,
    PortfolioSchema,
};

/// Days of history returned when `days` is not given.
pub const DEFAULT_DAYS: usize = 90;
/// Most days of history a request may ask for.
pub const MAX_DAYS: usize = 366;
/// Most rows a list may be limited to.
pub const MAX_LIMIT: usize = 10_000;
/// Health scores per customer in the list's sparkline.
pub const SPARKLINE_DAYS: usize = 30;

/// The OpenAPI document of the JSON API and the plain-text endpoints.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "fleetpulse API",
        description = "Customer-success signals from machine telemetry. Field names are the \
            store field names of docs/SCHEMA.md; times are ms since the Unix epoch; a number \
            the engine could not define (NaN) is null."
    ),
    servers((url = "/")),
    paths(customers, customer, super::touchpoints::list, super::touchpoints::record, alerts,
        portfolio, super::contract_events::list, super::contract_events::record,
        super::retention::retention, super::impact::activity_impact,
        super::health_validation::health_validation, status, me, super::openapi, super::metrics,
        super::healthz, super::readyz),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("session" = []), ("proxy" = [])),
)]
pub struct ApiDoc;

/// The ways to authenticate, in the document's components (docs/HTTP.md).
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("fp_<id>_<secret>, from `fleetpulse users token`")
                    .description(Some("An API token (machine access: Prometheus, scripts)."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::auth::session::SESSION_COOKIE,
                "The dashboard's session cookie, set by POST /login.",
            ))),
        );
        components.add_security_scheme(
            "proxy",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Forwarded-User",
                "Set by a trusted authenticating reverse proxy ([http.proxy]; the header names \
                 are configurable), honoured only from the proxy's addresses.",
            ))),
        );
    }
}

/// The OpenAPI document as JSON, built once.
pub fn openapi_json() -> &'static str {
    static JSON: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    });
    &JSON
}

/// Runs `f` on the service's SQLite store (where touchpoints and contract
/// events are kept) on a blocking thread; `None` when the service has none.
pub async fn on_store<T: Send + 'static>(
    hub: &Hub,
    f: impl FnOnce(&mut crate::sinks::SqliteStore) -> Result<T, crate::sinks::SinkError>
    + Send
    + 'static,
) -> Result<Option<T>, ApiError> {
    let Some(path) = hub.touchpoint_store() else {
        return Ok(None);
    };
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    tokio::task::spawn_blocking(move || {
        crate::sinks::SqliteStore::open_existing(&path).and_then(|mut s| f(&mut s))
    })
    .await
    .map_err(|e| internal(e.to_string()))?
    .map(Some)
    .map_err(store_error)
}

/// A store read's error as an answer. The sink made the file at the start:
/// gone, it was removed (a file made by a reader would pick up the removed
/// one's log), and the sink's next write starts it again.
pub(crate) fn store_error(e: crate::sinks::SinkError) -> ApiError {
    match e {
        crate::sinks::SinkError::SqliteMissing { path } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the SQLite store {path} is missing (removed?); the service starts it again \
                 with its next write"
            ),
        ),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// An API error: status and message, as `{"error": ..., "status": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// Any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

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

/// An error answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub(crate) struct ErrorBody<'a> {
    /// What is wrong.
    error: &'a str,
    /// HTTP status.
    #[schema(minimum = 400)]
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

/// Query parameters of type `T`: a bad query string (an unknown or repeated
/// name, a bad value) is a 400 [`ApiError`] naming the parameter.
pub struct ApiQuery<T>(pub T);

#[axum::async_trait]
impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or(""))
            .map(ApiQuery)
            .map_err(ApiError::bad_request)
    }
}

/// A customer id from the path: one that is not UTF-8 once decoded
/// (`%FF`) is a 400 [`ApiError`] in JSON, as every other refusal.
pub struct CustomerId(pub String);

#[axum::async_trait]
impl<S: Send + Sync> FromRequestParts<S> for CustomerId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(e) => Err(ApiError::bad_request(format!(
                "customer id: {}",
                e.body_text()
            ))),
        }
    }
}

/// A request's JSON body as `T`; the error names the field
/// (`body: kind: unknown variant ...`).
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let bad = |e: &dyn std::fmt::Display| ApiError::bad_request(format!("body: {e}"));
    let input = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| bad(&e))?;
    // One document: anything after it (but white space) is refused too.
    deserializer.end().map_err(|e| bad(&e))?;
    Ok(input)
}

/// Parses a query string; the error names the parameter at fault.
pub fn parse_query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, String> {
    let pairs = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(pairs).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => format!("query: {}", e.inner()),
            _ => format!("query parameter `{path}`: {}", e.inner()),
        }
    })
}

/// A whole number in `MIN..=MAX` given as a query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Bounded<const MIN: usize, const MAX: usize>(pub usize);

impl<'de, const MIN: usize, const MAX: usize> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.parse::<usize>() {
            Ok(v) if (MIN..=MAX).contains(&v) => Ok(Self(v)),
            _ => Err(serde::de::Error::custom(format!(
                "`{text}` is not a whole number from {MIN} to {MAX}"
            ))),
        }
    }
}

/// Days of history.
type Days = Bounded<1, MAX_DAYS>;
/// Most rows to return.
type Limit = Bounded<1, MAX_LIMIT>;

/// `GET /api/customers` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomersQuery {
    /// Only this segment.
    segment: Option<Segment>,
    /// Only this band.
    band: Option<Band>,
    /// Only customers with an open alert or ARR at risk (`true`), or only
    /// those without (`false`).
    at_risk: Option<bool>,
    /// At most this many customers.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 10000)]
    limit: Option<Limit>,
}

/// `GET /api/customers/{id}` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerQuery {
    /// Days of history.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 366, default = 90)]
    days: Option<Days>,
    /// Window label of the KPI series (default: the customer day).
    window: Option<String>,
}

/// Which alert episodes.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Open episodes.
    #[default]
    Open,
    /// Resolved episodes.
    Resolved,
    /// Episodes retracted: telemetry that arrived late showed they did not
    /// happen, or a provisional alert was not confirmed when its day closed.
    Retracted,
    /// Every episode.
    All,
}

/// `GET /api/alerts` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// Episode status (default `open`).
    status: Option<StatusFilter>,
    /// Only this segment.
    segment: Option<Segment>,
    /// Only this rule.
    rule: Option<Rule>,
    /// Only this customer.
    customer: Option<String>,
    /// At most this many episodes.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 10000)]
    limit: Option<Limit>,
}

/// `GET /api/portfolio` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PortfolioQuery {
    /// Days of history.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 366, default = 90)]
    days: Option<Days>,
}

/// No parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// One point of the health sparkline.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct HealthPoint {
    /// Start of the day (ms since the Unix epoch).
    window_start: u64,
    /// Health score 0..100.
    #[schema(value_type = Option<f64>)]
    score: f64,
    band: Band,
    /// The day is still open: the score of its hours so far (the last
    /// point only).
    provisional: bool,
}

/// One row of the ranked list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CustomerSummary<'a> {
    /// 1-based position in the risk ranking.
    #[schema(minimum = 1)]
    rank: usize,
    /// Customer id.
    customer: &'a str,
    /// Display name.
    name: &'a str,
    /// Time zone of the customer's days (IANA name, `UTC` without one in
    /// customers.toml): its dates are local dates there.
    timezone: &'a str,
    segment: Option<Segment>,
    /// Annual recurring revenue.
    arr: Option<f64>,
    /// The latest health record.
    #[schema(value_type = Option<HealthSchema>)]
    health: Option<Doc<'a, HealthRecord>>,
    /// Last 30 daily scores, oldest first.
    health_history: Vec<HealthPoint>,
    /// Open alert episodes with their evidence.
    #[schema(value_type = Vec<AlertSchema>)]
    alerts: Vec<Doc<'a, AlertRecord>>,
}

/// The customers, ranked by risk.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CustomerList<'a> {
    /// Changes whenever the data does.
    version: u64,
    /// End of the newest day held (ms since the Unix epoch).
    as_of: Option<u64>,
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

/// The customer's segment (customers file, else its latest health record).
pub(crate) fn segment_of(c: &CustomerView) -> Option<Segment> {
    c.info
        .as_ref()
        .map(|i| i.segment)
        .or_else(|| c.latest_health().map(|h| h.segment))
}

fn timezone_of(c: &CustomerView) -> &str {
    c.zone().iana_name().unwrap_or("UTC")
}

fn arr_of(c: &CustomerView) -> Option<f64> {
    c.info
        .as_ref()
        .map(|i| i.arr)
        .or_else(|| c.latest_health().map(|h| h.arr))
}

/// The newest day the view holds: the end of the latest health record.
pub(crate) fn as_of(view: &View) -> Option<EventTime> {
    view.customers()
        .values()
        .filter_map(|c| c.latest_health().map(|h| h.window_end))
        .max()
}

/// Customers ranked by risk
///
/// Revenue at stake first, then red before yellow before green, then the
/// lowest score. Each with its latest health, a 30-day sparkline and its open
/// alerts.
#[utoipa::path(get, path = "/api/customers", operation_id = "listCustomers", tag = "api", params(CustomersQuery),
    responses((status = 200, description = "the ranked list", body = CustomerList), BadQuery,
        Unauthorized, ViewerRefused))]
pub async fn customers(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    ApiQuery(q): ApiQuery<CustomersQuery>,
) -> Result<Response, ApiError> {
    let view = hub.read_view();
    let mut rows = Vec::new();
    let visible = view.ranked().into_iter().filter(|(id, _)| access.sees(id));
    for (i, (id, c)) in visible.enumerate() {
        let open = view.open_alerts_of(id);
        let latest = c.latest_health();
        if q.segment.is_some_and(|s| segment_of(c) != Some(s))
            || q.band.is_some_and(|b| latest.map(|h| h.band) != Some(b))
        {
            continue;
        }
        let risky = !open.is_empty() || latest.is_some_and(|h| h.arr_at_risk > 0.0);
        if q.at_risk.is_some_and(|wanted| wanted != risky) {
            continue;
        }
        rows.push(CustomerSummary {
            rank: i + 1,
            customer: id,
            name: display_name(id, c, &view),
            timezone: timezone_of(c),
            segment: segment_of(c),
            arr: arr_of(c),
            health: latest.map(Doc),
            health_history: c
                .health
                .iter()
                .flat_map(|s| s.tail(SPARKLINE_DAYS))
                .map(|h| HealthPoint {
                    window_start: h.window_start,
                    score: h.score,
                    band: h.band,
                    provisional: h.provisional,
                })
                .collect(),
            alerts: open.into_iter().map(Doc).collect(),
        });
        if q.limit.is_some_and(|l| rows.len() >= l.0) {
            break;
        }
    }
    let doc = CustomerList {
        version: view.version(),
        as_of: as_of(&view),
        customers: rows,
    };
    Ok(json_for(&doc, &access, &hub))
}

/// Error answers the document names, each an [`ErrorBody`] with its status.
macro_rules! error_responses {
    ($($(#[doc = $doc:literal])* $name:ident = $status:literal, $description:literal;)+) => {$(
        $(#[doc = $doc])*
        #[derive(utoipa::IntoResponses)]
        #[response(status = $status, description = $description)]
        #[allow(dead_code)] // a type for the document only
        pub(crate) struct $name(ErrorBody<'static>);
    )+};
}

error_responses! {
    /// The answer to a query string that is not understood.
    BadQuery = 400, "a query parameter is unknown, repeated or has a bad value";
    /// The answer to a request without valid credentials.
    Unauthorized = 401,
        "no valid credentials: a Bearer token, the session cookie or a trusted proxy's headers";
    /// A viewer asking for customers.
    ViewerRefused = 403, "the viewer role sees the portfolio only";
}

/// Machine states by their stored names.
fn machine_state_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use crate::records::Named;
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(
            <fleetpulse_engine::MachineState as Named>::ALL
                .iter()
                .map(|(_, name)| *name),
        ))
        .into()
}

/// One device's latest state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Device)]
struct DeviceDoc<'a> {
    /// Device id.
    device: &'a str,
    /// Site id.
    site: &'a str,
    /// Event time of the newest reading (ms since the Unix epoch).
    last_seen: u64,
    /// Machine state at that reading.
    #[schema(schema_with = machine_state_schema)]
    last_state: &'static str,
    /// Start of the latest daily record.
    window_start: Option<u64>,
    /// Latest day.
    operating_hours: Option<f64>,
    /// Latest day, ratio 0..1.
    utilisation: Option<f64>,
    /// Faults on the latest day.
    fault_count: Option<u64>,
    /// Faults over the last 7 daily records.
    faults_7d: u64,
    /// Readings on the latest day.
    samples: Option<u64>,
    /// `revision` of the latest daily record: above 0 when telemetry that
    /// arrived after the day closed restated it.
    revision: Option<u32>,
    /// Daily records held (at most 7: the days `faults_7d` sums).
    daily_records: usize,
    /// How many of them were restated (`revision` above 0).
    restated_days: usize,
}

fn device_doc<'a>(id: &'a str, d: &'a DeviceView) -> DeviceDoc<'a> {
    let latest = d.daily.last();
    DeviceDoc {
        device: id,
        site: &d.site,
        last_seen: d.last_seen,
        last_state: d.last_state.as_str(),
        window_start: latest.map(|k| k.window_start),
        operating_hours: latest.map(|k| k.totals.operating_hours),
        utilisation: latest.map(|k| k.utilisation),
        fault_count: latest.map(|k| k.totals.fault_count),
        faults_7d: d.daily.iter().map(|k| k.totals.fault_count).sum(),
        samples: latest.map(|k| k.totals.samples),
        revision: latest.map(|k| k.revision),
        daily_records: d.daily.len(),
        restated_days: d.daily.iter().filter(|k| restated(k.revision)).count(),
    }
}

/// One outcome: its target and its records over the period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OutcomeSeries)]
struct OutcomeDoc<'a> {
    /// Outcome name.
    outcome: &'a str,
    /// Window label.
    window: &'a str,
    direction: Option<Direction>,
    /// Target value.
    target: Option<f64>,
    /// Windows met in the period.
    met_windows: usize,
    /// Windows with a defined value in the period.
    evaluated_windows: usize,
    /// The latest record.
    #[schema(value_type = Option<OutcomeSchema>)]
    latest: Option<Doc<'a, OutcomeRecord>>,
    /// The records of the period, oldest first.
    #[schema(value_type = Vec<OutcomeSchema>)]
    history: Vec<Doc<'a, OutcomeRecord>>,
}

/// One customer's page.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CustomerDetail<'a> {
    /// Changes whenever the data does.
    version: u64,
    /// Customer id.
    customer: &'a str,
    /// Display name.
    name: &'a str,
    /// Time zone of the customer's days (IANA name, `UTC` without one in
    /// customers.toml): its dates are local dates there.
    timezone: &'a str,
    segment: Option<Segment>,
    /// Annual recurring revenue.
    arr: Option<f64>,
    /// Devices in the contract.
    devices_purchased: Option<u32>,
    /// Renewal date (ms since the Unix epoch).
    renewal: Option<u64>,
    /// Window label of `kpis`.
    window: &'a str,
    /// The latest health record.
    #[schema(value_type = Option<HealthSchema>)]
    health: Option<Doc<'a, HealthRecord>>,
    /// Time to value in days, once reached.
    time_to_value_days: Option<f64>,
    /// The latest health forecast: expected score, 80% band, days to red.
    #[schema(value_type = Option<ForecastSchema>)]
    forecast: Option<Doc<'a, ForecastRecord>>,
    /// Daily health records, oldest first.
    #[schema(value_type = Vec<HealthSchema>)]
    health_history: Vec<Doc<'a, HealthRecord>>,
    /// KPI records of `window`, oldest first.
    #[schema(value_type = Vec<CustomerKpiSchema>)]
    kpis: Vec<Doc<'a, CustomerKpi>>,
    outcomes: Vec<OutcomeDoc<'a>>,
    /// The journey: each milestone's latest record, in order.
    #[schema(value_type = Vec<MilestoneSchema>)]
    milestones: Vec<Doc<'a, MilestoneRecord>>,
    devices: Vec<DeviceDoc<'a>>,
    /// Alert episodes, open ones first, newest first.
    #[schema(value_type = Vec<AlertSchema>)]
    alerts: Vec<Doc<'a, AlertRecord>>,
}

/// One customer
///
/// KPIs over time, health history, outcomes against their targets,
/// milestones with dates, time to value, devices with last-seen and faults,
/// alert episodes.
#[utoipa::path(get, path = "/api/customers/{id}", operation_id = "getCustomer", tag = "api",
    params(("id" = String, Path, description = "customer id"), CustomerQuery),
    responses((status = 200, description = "the customer", body = CustomerDetail), BadQuery,
        (status = 404, description = "no such customer, or not one of the user's", body = ErrorBody),
        Unauthorized))]
pub async fn customer(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    CustomerId(id): CustomerId,
    ApiQuery(q): ApiQuery<CustomerQuery>,
) -> Result<Response, ApiError> {
    let days = q.days.map_or(DEFAULT_DAYS, |d| d.0);
    if !access.sees(&id) {
        // The same answer as for a customer that does not exist.
        tracing::warn!(target: "audit", event = "denied", status = 404, user = %access.principal.name,
            path = "/api/customers/{id}", reason = "customer not in scope", "request denied");
        return Err(ApiError::not_found(format!("no customer `{id}`")));
    }
    let view = hub.read_view();
    let window = q.window.unwrap_or_else(|| view.day_window().to_string());
    let Some((id, c)) = view.customers().get_key_value(id.as_str()) else {
        return Err(ApiError::not_found(format!("no customer `{id}`")));
    };
    let kpis = match c.kpis.get(window.as_str()) {
        Some(series) => series.tail(days).map(Doc).collect(),
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
                latest: series.last().map(Doc),
                history: history.into_iter().map(Doc).collect(),
            }
        })
        .collect();
    let mut alerts: Vec<&AlertRecord> = view.alerts().filter(|a| a.customer == *id).collect();
    alerts.sort_by(|a, b| {
        (!counts_as_open(a))
            .cmp(&!counts_as_open(b))
            .then(b.opened_at.cmp(&a.opened_at))
    });
    let latest = c.latest_health();
    let doc = CustomerDetail {
        version: view.version(),
        customer: id,
        name: display_name(id, c, &view),
        timezone: timezone_of(c),
        segment: segment_of(c),
        arr: arr_of(c),
        devices_purchased: c.info.as_ref().map(|i| i.devices_purchased),
        renewal: c.info.as_ref().map(|i| i.renewal),
        window: &window,
        health: latest.map(Doc),
        time_to_value_days: latest.and_then(|h| h.time_to_value_days),
        forecast: c.forecast.as_ref().map(Doc),
        health_history: c
            .health
            .iter()
            .flat_map(|s| s.tail(days))
            .map(Doc)
            .collect(),
        kpis,
        outcomes,
        milestones: c.journey().into_iter().map(Doc).collect(),
        devices: c.devices.iter().map(|(id, d)| device_doc(id, d)).collect(),
        alerts: alerts.into_iter().map(Doc).collect(),
    };
    Ok(json_for(&doc, &access, &hub))
}

/// Alert episodes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AlertList<'a> {
    /// Changes whenever the data does.
    version: u64,
    #[schema(value_type = Vec<AlertSchema>)]
    alerts: Vec<Doc<'a, AlertRecord>>,
}

/// Alert episodes, newest first
#[utoipa::path(get, path = "/api/alerts", operation_id = "listAlerts", tag = "api", params(AlertsQuery),
    responses((status = 200, description = "the episodes", body = AlertList), BadQuery,
        (status = 404, description = "`customer` names no customer, or not one of the user's", body = ErrorBody),
        Unauthorized, ViewerRefused))]
pub async fn alerts(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.unwrap_or_default() {
        StatusFilter::Open => Some(AlertStatus::Open),
        StatusFilter::Resolved => Some(AlertStatus::Resolved),
        StatusFilter::Retracted => Some(AlertStatus::Retracted),
        StatusFilter::All => None,
    };
    let view = hub.read_view();
    if let Some(c) = &q.customer
        && !(access.sees(c) && view.customers().contains_key(c.as_str()))
    {
        // A mistyped id is said, not answered with an empty list; one
        // out of the user's scope gets the same answer.
        return Err(ApiError::not_found(format!(
            "`customer`: no customer `{c}`"
        )));
    }
    let mut alerts: Vec<&AlertRecord> = view
        .alerts()
        .filter(|a| access.sees(&a.customer))
        .filter(|a| status.is_none_or(|s| a.status == s))
        .filter(|a| q.segment.is_none_or(|s| a.segment == s))
        .filter(|a| q.rule.is_none_or(|r| a.rule == r))
        .filter(|a| q.customer.as_deref().is_none_or(|c| &*a.customer == c))
        .collect();
    alerts.sort_by(|a, b| {
        b.opened_at
            .cmp(&a.opened_at)
            .then(b.arr_at_risk.total_cmp(&a.arr_at_risk))
            .then(a.customer.cmp(&b.customer))
            .then(a.rule.cmp(&b.rule))
    });
    if let Some(limit) = q.limit {
        alerts.truncate(limit.0);
    }
    Ok(json_for(
        &AlertList {
            version: view.version(),
            alerts: alerts.into_iter().map(Doc).collect(),
        },
        &access,
        &hub,
    ))
}

/// Figures over all customers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PortfolioDoc<'a> {
    /// Changes whenever the data does.
    version: u64,
    /// The latest day.
    #[schema(value_type = Option<PortfolioSchema>)]
    latest: Option<Doc<'a, PortfolioRecord>>,
    /// The days of the period, oldest first.
    #[schema(value_type = Vec<PortfolioSchema>)]
    history: Vec<Doc<'a, PortfolioRecord>>,
    /// Customers in the view.
    customers: usize,
    /// Alert episodes open now.
    open_alerts: usize,
    /// Open episodes per rule, rules with none left out.
    open_alerts_by_rule: Vec<RuleCount>,
}

/// Open episodes of one rule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RuleCount {
    rule: Rule,
    /// Open episodes.
    open_alerts: usize,
}

/// Figures over all customers (a CSM's: over their customers)
///
/// Admins and viewers get the figures over every customer; a CSM gets the
/// same figures computed over their own customers only, each date with the
/// `revision` of that date's figures over every customer.
#[utoipa::path(get, path = "/api/portfolio", operation_id = "getPortfolio", tag = "api", params(PortfolioQuery),
    responses((status = 200, description = "latest and past days", body = PortfolioDoc), BadQuery,
        Unauthorized))]
pub async fn portfolio(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    ApiQuery(q): ApiQuery<PortfolioQuery>,
) -> Result<Response, ApiError> {
    let days = q.days.map_or(DEFAULT_DAYS, |d| d.0);
    let view = hub.read_view();
    let everyone = access.sees_all() || access.principal.role == Role::Viewer;
    let sees = |customer: &str| everyone || access.sees(customer);
    // Resolved and retracted episodes count nowhere.
    let open: Vec<&AlertRecord> = view.open_alerts().filter(|a| sees(&a.customer)).collect();
    let scoped = (!everyone).then(|| scoped_portfolio(&view, &access, days));
    let (latest, history) = match &scoped {
        None => (
            view.portfolio().last().map(Doc),
            view.portfolio().tail(days).map(Doc).collect(),
        ),
        Some(records) => (records.last().map(Doc), records.iter().map(Doc).collect()),
    };
    let doc = PortfolioDoc {
        version: view.version(),
        latest,
        history,
        customers: view.customers().keys().filter(|id| sees(id)).count(),
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

/// The portfolio records of the last `days` days (at least the latest),
/// recomputed over the customers `access` sees, with the engine's own fold.
/// A date's revision is the one over every customer: the health it folds
/// carries none of its own.
fn scoped_portfolio(view: &View, access: &Access, days: usize) -> Vec<PortfolioRecord> {
    let mine: Vec<&CustomerView> = view
        .customers()
        .iter()
        .filter(|(id, _)| access.sees(id))
        .map(|(_, c)| c)
        .collect();
    view.portfolio()
        .tail(days.max(1))
        .map(|day| {
            let health: Vec<HealthRecord> = mine
                .iter()
                .filter_map(|c| {
                    (c.health.as_ref()?.iter().rev())
                        .find(|h| c.date_of(h.window_start) == day.window_start)
                })
                .cloned()
                .collect();
            PortfolioRecord {
                revision: day.revision,
                ..fleetpulse_engine::kpi::portfolio::portfolio(
                    day.window_start,
                    day.window_end,
                    &health,
                )
            }
        })
        .collect()
}

/// Who is asking.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Me)]
struct MeDoc<'a> {
    /// User name (`anonymous` when the server asks nobody).
    user: &'a str,
    /// `admin`, `csm` or `viewer`.
    #[schema(value_type = String)]
    role: Role,
    /// `anonymous`, `session`, `token` or `proxy`.
    via: &'static str,
    /// Customers this user sees; null for all.
    customers: Option<usize>,
    /// The CSRF token to send with `POST /logout` (dashboard sessions).
    csrf_token: Option<&'a str>,
}

/// The user making the request, their role and scope
#[utoipa::path(get, path = "/api/me", operation_id = "getMe", tag = "api",
    responses((status = 200, description = "the user", body = MeDoc), BadQuery, Unauthorized))]
pub async fn me(
    Extension(access): Extension<Access>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Response, ApiError> {
    let customers = match &access.scope {
        super::auth::Scope::All => None,
        super::auth::Scope::Only(ids) => Some(ids.len()),
    };
    let mut response = json(&MeDoc {
        user: &access.principal.name,
        role: access.principal.role,
        via: access.principal.via.as_str(),
        customers,
        csrf_token: access.csrf.as_deref(),
    });
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// Progress counters.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Status)]
struct StatusDoc {
    /// Changes whenever the data does.
    version: u64,
    /// Records the view took in.
    records: u64,
    /// End of the newest day held (ms since the Unix epoch).
    as_of: Option<u64>,
    /// The service is running.
    running: bool,
    /// Running, subscribed, and the WAL takes records.
    ready: bool,
    /// The engine's watermark (ms since the Unix epoch).
    watermark: Option<u64>,
    /// Messages taken from the broker.
    messages_received: u64,
    /// Messages accepted.
    messages_accepted: u64,
    /// Messages refused.
    messages_rejected: u64,
    /// KPI records the engine emitted (restatements not counted).
    records_emitted: u64,
    /// KPI records the stores wrote, summed over the stores (restated ones
    /// too): below `records_emitted` times their number, the stores are
    /// behind what the API shows.
    records_written: u64,
    /// One entry per AEMP source.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    aemp: Vec<crate::source::aemp::metrics::SourceStatus>,
}

/// Progress counters; `version` changes whenever the data does
///
/// The dashboard polls it and fetches again when `version` changes.
#[utoipa::path(get, path = "/api/status", operation_id = "getStatus", tag = "api",
    responses((status = 200, description = "counters", body = StatusDoc), BadQuery, Unauthorized))]
pub async fn status(
    State(hub): State<Arc<Hub>>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Response, ApiError> {
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
        records_emitted: counter(|m| m.records_emitted.load(std::sync::atomic::Ordering::Relaxed)),
        records_written: counter(|m| m.records_written.load(std::sync::atomic::Ordering::Relaxed)),
        aemp: metrics
            .as_deref()
            .map_or_else(Vec::new, |m| m.aemp.status()),
    }))
}

/// [`json`], with operators' clear ids next to their pseudonyms for an
/// admin (held in memory only, see `crate::privacy`).
fn json_for<T: Serialize>(doc: &T, access: &Access, hub: &Hub) -> Response {
    let pseudonyms = hub.pseudonyms().filter(|_| access.sees_operators());
    let Some(pseudonyms) = pseudonyms else {
        return json(doc);
    };
    match serde_json::to_string(doc) {
        Ok(body) => (
            [(header::CONTENT_TYPE, "application/json")],
            pseudonyms.reveal(&body).into_owned(),
        )
            .into_response(),
        Err(_) => json(doc),
    }
}

/// Serialises `doc` (non-finite numbers become `null`).
pub(crate) fn json<T: Serialize>(doc: &T) -> Response {
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
    use fleetpulse_engine::Output;

    use super::*;

    fn query<T: serde::de::DeserializeOwned>(q: &str) -> Result<T, String> {
        parse_query(q)
    }

    #[test]
    fn queries_refuse_unknown_repeated_and_bad_values() {
        let q: CustomersQuery = query("limit=5&segment=high-touch").unwrap();
        assert_eq!(q.limit.map(|l| l.0), Some(5));
        assert_eq!(q.segment, Some(Segment::HighTouch));
        let err = query::<CustomersQuery>("x=1").unwrap_err();
        assert!(err.contains("unknown field `x`"), "{err}");
        let err = query::<CustomersQuery>("limit=1&limit=2").unwrap_err();
        assert!(err.contains("duplicate field `limit`"), "{err}");
        let err = query::<CustomersQuery>("limit=0").unwrap_err();
        assert_eq!(
            err,
            "query parameter `limit`: `0` is not a whole number from 1 to 10000"
        );
        let err = query::<CustomersQuery>("segment=gold").unwrap_err();
        assert!(err.contains("high-touch"), "{err}");
        let err = query::<NoQuery>("verbose=1").unwrap_err();
        assert!(err.contains("verbose"), "{err}");
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

    fn health(customer: &str, arr_at_risk: f64) -> HealthRecord {
        use fleetpulse_engine::kpi::health::Stage;
        HealthRecord {
            customer: customer.into(),
            window_start: 86_400_000,
            window_end: 2 * 86_400_000,
            score: 60.0,
            band: Band::of(60.0),
            stage: Stage::Adopt,
            segment: Segment::HighTouch,
            arr: 100_000.0,
            arr_at_risk,
            days_since_activation: 30.0,
            days_to_renewal: 200.0,
            ..HealthRecord::default()
        }
    }

    fn episode(customer: &str, rule: Rule, status: AlertStatus) -> AlertRecord {
        use fleetpulse_engine::kpi::health::Stage;
        AlertRecord {
            customer: customer.into(),
            customer_name: customer.into(),
            rule,
            episode: 1,
            status,
            provisional: false,
            opened_at: 86_400_000,
            resolved_at: None,
            evidence: "evidence".into(),
            metric: 1.0,
            threshold: 0.5,
            stage: Stage::Adopt,
            segment: Segment::HighTouch,
            arr_at_risk: 100_000.0,
            next_action: "call".into(),
        }
    }

    async fn body(response: Response) -> serde_json::Value {
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The handlers count only open episodes: a customer whose only episode
    /// was retracted (late telemetry showed it did not happen) has no open
    /// alert, is not at risk, and adds nothing to the portfolio's open
    /// counts; its episode is still listed where retracted ones are asked
    /// for.
    #[tokio::test]
    async fn retracted_episodes_count_neither_as_open_nor_at_risk() {
        let hub = crate::http::Hub::new();
        hub.apply(&[
            Output::health(health("quiet", 0.0)),
            Output::health(health("loud", 100_000.0)),
            Output::Alert(episode("quiet", Rule::DevicesDark, AlertStatus::Retracted)),
            Output::Alert(episode("loud", Rule::UsageDrop, AlertStatus::Open)),
            Output::Alert(AlertRecord {
                opened_at: 0,
                resolved_at: Some(86_400_000),
                ..episode("loud", Rule::FaultSpike, AlertStatus::Resolved)
            }),
        ]);
        let access = || Extension(Access::anonymous());
        fn q<T: serde::de::DeserializeOwned>(text: &str) -> ApiQuery<T> {
            ApiQuery(parse_query(text).unwrap())
        }

        let doc = body(
            portfolio(State(hub.clone()), access(), q(""))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(doc["open_alerts"], 1, "{doc}");
        assert_eq!(
            doc["open_alerts_by_rule"],
            serde_json::json!([{ "rule": "usage_drop", "open_alerts": 1 }])
        );

        let doc = body(
            customers(State(hub.clone()), access(), q(""))
                .await
                .unwrap(),
        )
        .await;
        let rows = doc["customers"].as_array().unwrap();
        let row = |id: &str| rows.iter().find(|r| r["customer"] == id).unwrap();
        assert_eq!(row("quiet")["alerts"], serde_json::json!([]));
        assert_eq!(row("loud")["alerts"].as_array().unwrap().len(), 1);
        let doc = body(
            customers(State(hub.clone()), access(), q("at_risk=true"))
                .await
                .unwrap(),
        )
        .await;
        let at_risk: Vec<&str> = (doc["customers"].as_array().unwrap().iter())
            .map(|r| r["customer"].as_str().unwrap())
            .collect();
        assert_eq!(at_risk, ["loud"]);

        for (status, want) in [("open", 1), ("retracted", 1), ("resolved", 1), ("all", 3)] {
            let doc = body(
                alerts(State(hub.clone()), access(), q(&format!("status={status}")))
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(
                doc["alerts"].as_array().unwrap().len(),
                want,
                "{status}: {doc}"
            );
        }
        let doc = body(
            alerts(State(hub.clone()), access(), q("status=retracted"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(doc["alerts"][0]["customer"], "quiet");

        // The customer page lists it after the open ones, as retracted.
        let doc = body(
            customer(
                State(hub.clone()),
                access(),
                CustomerId("quiet".into()),
                q(""),
            )
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(doc["alerts"][0]["status"], "retracted");
    }

    /// docs/openapi.json is the generated document, for readers of the
    /// repository; with `FLEETPULSE_BLESS=1` the test writes it.
    #[test]
    fn the_document_in_docs_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let generated = format!("{}\n", openapi_json());
        if std::env::var_os("FLEETPULSE_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        } else {
            let in_repo = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                in_repo == generated,
                "docs/openapi.json is out of date: run `FLEETPULSE_BLESS=1 cargo test -p \
                 fleetpulse --lib the_document_in_docs`"
            );
        }
    }
}
