//! `fleetpulse sim --aemp ADDR`: the simulated fleet (or part of it) served
//! as an ISO 15143-3 (AEMP 2.0) API, the way OEM telematics portals serve
//! other brands' machines: fleet snapshot pages, time series per machine
//! and element, paging, XML by default and JSON on `Accept`. The quirks
//! real vendors show can be switched on one by one (JSON wrapped in an
//! array, lower-case `links`, ids that need PIN addressing, a strict rate
//! limit with 429 and `Retry-After`, Basic or OAuth2 client credentials,
//! `liter`), and so can bad answers, so the poller is tested against each.
//! [`data`] holds the projection and its ground truth, [`render`] the
//! documents.

pub mod data;
pub mod render;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio_util::sync::CancellationToken;

pub use data::{AempFleet, Selection};

use crate::delivery::intake::wall_clock_ms;
use crate::source::aemp::config::Element;
use crate::source::aemp::parse::timestamp;

/// How clients must authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SimAuth {
    /// Anyone may read.
    #[default]
    None,
    /// HTTP Basic with these credentials.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// Bearer tokens from `POST .../oauth/token` (client credentials in
    /// Basic, `grant_type=client_credentials`).
    Oauth2 {
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: String,
        /// Token lifetime.
        token_life: Duration,
    },
}

/// A bad answer the server gives on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadAnswer {
    /// Every body cut in half.
    Malformed,
    /// Every fleet page links to a next one.
    EndlessPaging,
    /// Every fleet page over 10 MB.
    Huge,
    /// Running totals that go backwards now and then.
    Backwards,
    /// A reading dated a day ahead of the clock on every series page.
    Future,
    /// One operating-hours reading of each machine reads 99,999 and a
    /// later one `1e308`, each between true readings of the same day.
    Spike,
    /// Requests [`MAINTENANCE`] are answered 200 with a maintenance page
    /// (XHTML, or `{"error": ...}` on `Accept: application/json`).
    Maintenance,
    /// Every fleet page links on to itself under a new query
    /// (`?again=n`), which the server ignores.
    QueryLoop,
    /// Fleet pages link on to the next under another origin (`localhost`
    /// for `127.0.0.1`, the same server): a client that follows hands the
    /// source's credentials to a host it was not given.
    Elsewhere,
    /// Every request under `127.0.0.1` is redirected (302) to the same
    /// path under `localhost`: another origin.
    RedirectElsewhere,
}

/// The requests (numbered from 1) a [`BadAnswer::Maintenance`] server
/// answers with its maintenance page: the first poll's series requests
/// and the next polls' fleet pages.
pub const MAINTENANCE: std::ops::RangeInclusive<u64> = 2..=13;

impl BadAnswer {
    /// From its command-line name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "malformed" => Self::Malformed,
            "endless" => Self::EndlessPaging,
            "huge" => Self::Huge,
            "backwards" => Self::Backwards,
            "future" => Self::Future,
            "spike" => Self::Spike,
            "maintenance" => Self::Maintenance,
            "query-loop" => Self::QueryLoop,
            "elsewhere" => Self::Elsewhere,
            "redirect-elsewhere" => Self::RedirectElsewhere,
            _ => return None,
        })
    }
}

/// The server's behaviour.
#[derive(Debug, Clone)]
pub struct Quirks {
    /// JSON bodies wrapped in a one-item array.
    pub wrap_array: bool,
    /// `links` instead of `Links`.
    pub lowercase_links: bool,
    /// Equipment ids hold `#`: `/Equipment/ID/...` answers 404 for them,
    /// only `/Equipment/PIN/...` works.
    pub pin_ids: bool,
    /// `liter` instead of `litre`.
    pub liter: bool,
    /// One request per URL per this long; more are answered 429 with
    /// `Retry-After`.
    pub rate_limit: Option<Duration>,
    /// Entries per page.
    pub page_size: usize,
    /// Authentication.
    pub auth: SimAuth,
    /// A bad answer, if any.
    pub bad: Option<BadAnswer>,
}

impl Default for Quirks {
    fn default() -> Self {
        Self {
            wrap_array: false,
            lowercase_links: false,
            pin_ids: false,
            liter: false,
            rate_limit: None,
            page_size: 100,
            auth: SimAuth::None,
            bad: None,
        }
    }
}

/// What the server answered, for tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests received.
    pub requests: AtomicU64,
    /// Answered 429.
    pub throttled: AtomicU64,
    /// Answered 429 to a URL whose previous request was answered 429 too:
    /// a client that honours `Retry-After` never gets one.
    pub throttled_again: AtomicU64,
    /// Answered 401.
    pub unauthorized: AtomicU64,
    /// Tokens issued.
    pub tokens: AtomicU64,
    /// Answered with the maintenance page.
    pub maintenance: AtomicU64,
    /// Machines given a spike and a `1e308` ([`BadAnswer::Spike`]).
    pub spiked: AtomicU64,
    /// Requests that came under the other origin a [`BadAnswer::Elsewhere`]
    /// link names.
    pub elsewhere: AtomicU64,
}

struct SimState {
    fleet: AempFleet,
    quirks: Quirks,
    /// Per URL: when its last request was served, and whether the last
    /// answer to it was a 429.
    last_request: Mutex<HashMap<String, (Instant, bool)>>,
    tokens: Mutex<HashMap<String, Instant>>,
    stats: Arc<ServerStats>,
}

/// A running simulated AEMP server; stops on drop.
pub struct AempServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<ServerStats>,
    stop: CancellationToken,
}

impl AempServer {
    /// The base URL clients configure.
    pub fn url(&self) -> String {
        format!("http://{}/aemp/v2", self.addr)
    }

    /// The token endpoint (OAuth2).
    pub fn token_url(&self) -> String {
        format!("http://{}/aemp/oauth/token", self.addr)
    }
}

impl Drop for AempServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a server on `addr` (port 0: any) on the current runtime.
pub async fn start(
    addr: SocketAddr,
    fleet: AempFleet,
    quirks: Quirks,
) -> std::io::Result<AempServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let stats = Arc::new(ServerStats::default());
    let app = app(fleet, quirks, stats.clone());
    let until = stop.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(until.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "simulated AEMP server stopped");
        }
    });
    Ok(AempServer { addr, stats, stop })
}

/// The server's routes.
fn app(mut fleet: AempFleet, quirks: Quirks, stats: Arc<ServerStats>) -> Router {
    if quirks.bad == Some(BadAnswer::Backwards) {
        // Every fifth reading's totals fall below the one before.
        for machine in &mut fleet.machines {
            for i in (5..machine.points.len()).step_by(5) {
                let before = machine.points[i - 1].clone();
                let p = &mut machine.points[i];
                p.hours = (before.hours - 1.0).max(0.0);
                p.loads = before.loads.saturating_sub(1);
            }
        }
    }
    if quirks.bad == Some(BadAnswer::Spike) {
        for machine in &mut fleet.machines {
            let day = |at: u64| at / 86_400_000;
            let points = &mut machine.points;
            // Points whose neighbours lie in their day: the daily totals
            // stay those of the truth when the spike is skipped.
            let inside: Vec<usize> = (5..points.len().saturating_sub(1))
                .filter(|&i| day(points[i - 1].at) == day(points[i + 1].at))
                .collect();
            if let (Some(&i), Some(&j)) = (inside.first(), inside.get(10)) {
                points[i].hours = 99_999.0;
                points[j].hours = 1e308;
                stats.spiked.fetch_add(1, Relaxed);
            }
        }
    }
    let state = Arc::new(SimState {
        fleet,
        quirks,
        last_request: Mutex::new(HashMap::new()),
        tokens: Mutex::new(HashMap::new()),
        stats,
    });
    Router::new().fallback(handle).with_state(state)
}

async fn handle(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let number = state.stats.requests.fetch_add(1, Relaxed) + 1;
    let path = uri.path().to_owned();
    let host = (headers.get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if host.starts_with("localhost") {
        state.stats.elsewhere.fetch_add(1, Relaxed);
    } else if state.quirks.bad == Some(BadAnswer::RedirectElsewhere) {
        let to = format!("http://{}{uri}", host.replace("127.0.0.1", "localhost"));
        return (StatusCode::FOUND, [(header::LOCATION, to)], "moved").into_response();
    }
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    if method == Method::POST && segments.ends_with(&["oauth".into(), "token".into()]) {
        return token(&state, &headers, &body);
    }
    if method != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, "GET only").into_response();
    }
    if !authorized(&state, &headers) {
        state.stats.unauthorized.fetch_add(1, Relaxed);
        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    }
    if let Some(limit) = state.quirks.rate_limit {
        let now = Instant::now();
        let mut last = state.last_request.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, throttled)) = last.get_mut(&path)
            && now.duration_since(*at) < limit
        {
            state.stats.throttled.fetch_add(1, Relaxed);
            if *throttled {
                state.stats.throttled_again.fetch_add(1, Relaxed);
            }
            *throttled = true;
            let wait = (limit - now.duration_since(*at))
                .as_secs_f64()
                .ceil()
                .max(1.0);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, format!("{wait}"))],
                "rate limit: one request per URL",
            )
                .into_response();
        }
        last.insert(path.clone(), (now, false));
    }
    let style = render::Style {
        json: headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json")),
        wrap_array: state.quirks.wrap_array,
        lowercase_links: state.quirks.lowercase_links,
        liter: state.quirks.liter,
    };
    if state.quirks.bad == Some(BadAnswer::Maintenance) && MAINTENANCE.contains(&number) {
        state.stats.maintenance.fetch_add(1, Relaxed);
        return maintenance_page(style.json);
    }
    let Some(fleet_at) = segments.iter().position(|s| s == "Fleet") else {
        return not_found("no /Fleet in the path").into_response();
    };
    let prefix = format!("/{}", segments[..fleet_at].join("/"));
    let rest = &segments[fleet_at + 1..];
    let body = match rest {
        [page] => {
            let elsewhere = format!("http://{}", host.replace("127.0.0.1", "localhost"));
            fleet_page(&state, style, (&prefix, &elsewhere), page)
        }
        [equipment, kind, id, element, start, end, page] if equipment == "Equipment" => {
            series_page(
                &state,
                style,
                &path,
                (kind, id),
                element,
                (start, end),
                page,
            )
        }
        _ => Err(not_found("unknown resource")),
    };
    let body = match body {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    let body = match state.quirks.bad {
        Some(BadAnswer::Malformed) => body[..body.len() / 2].to_vec(),
        _ => body,
    };
    let content_type = if style.json {
        "application/json"
    } else {
        "application/xml"
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A request the server refuses: status and reason.
type Refused = (StatusCode, String);

fn not_found(why: &str) -> Refused {
    (StatusCode::NOT_FOUND, why.to_owned())
}

fn bad_request(why: String) -> Refused {
    (StatusCode::BAD_REQUEST, why)
}

fn page_number(page: &str) -> Result<usize, Refused> {
    page.parse::<usize>()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| bad_request(format!("page `{page}`: a number from 1")))
}

/// One page of the fleet; `prefix`: the path before `/Fleet`, and the
/// other origin a [`BadAnswer::Elsewhere`] page links to.
fn fleet_page(
    state: &SimState,
    style: render::Style,
    (prefix, elsewhere): (&str, &str),
    page: &str,
) -> Result<Vec<u8>, Refused> {
    let n = page_number(page)?;
    let size = state.quirks.page_size.max(1);
    let machines: Vec<&data::SimMachine> = state
        .fleet
        .machines
        .iter()
        .skip((n - 1) * size)
        .take(size)
        .collect();
    let more =
        state.fleet.machines.len() > n * size || state.quirks.bad == Some(BadAnswer::EndlessPaging);
    let this = format!("{prefix}/Fleet/{n}");
    let next = if state.quirks.bad == Some(BadAnswer::QueryLoop) {
        let again = state.stats.requests.load(Relaxed);
        Some(format!("{this}?again={again}"))
    } else if state.quirks.bad == Some(BadAnswer::Elsewhere) {
        more.then(|| format!("{elsewhere}{prefix}/Fleet/{}", n + 1))
    } else {
        more.then(|| format!("{prefix}/Fleet/{}", n + 1))
    };
    let doc = render::Page {
        this,
        next,
        snapshot_ms: wall_clock_ms(),
        items: &machines,
    };
    let mut body = render::fleet(style, &doc);
    if state.quirks.bad == Some(BadAnswer::Huge) {
        body = pad(body, style.json, 10 * 1024 * 1024 + 1);
    }
    Ok(body)
}

/// A portal's maintenance page, answered 200 as some vendors do.
fn maintenance_page(json: bool) -> Response {
    if json {
        let body = serde_json::json!({"error": "service unavailable",
                                      "message": "scheduled maintenance"});
        return axum::Json(body).into_response();
    }
    let page = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Scheduled maintenance</title>
<link rel="stylesheet" href="/static/portal.css"/></head>
<body><h1>We will be back soon</h1><p>The telematics portal is under maintenance.</p></body></html>"#;
    (
        [(header::CONTENT_TYPE, "application/xhtml+xml")],
        page.to_owned(),
    )
        .into_response()
}

/// Pads a document past `size` bytes without breaking it.
fn pad(body: Vec<u8>, json: bool, size: usize) -> Vec<u8> {
    let filler = " ".repeat(size);
    if json {
        let mut text = String::from_utf8(body).expect("rendered as UTF-8");
        text.push_str(&filler);
        text.into_bytes()
    } else {
        let mut text = String::from_utf8(body).expect("rendered as UTF-8");
        text.push_str(&format!("<!--{filler}-->"));
        text.into_bytes()
    }
}

fn series_page(
    state: &SimState,
    style: render::Style,
    path: &str,
    (kind, id): (&str, &str),
    element: &str,
    (start, end): (&str, &str),
    page: &str,
) -> Result<Vec<u8>, Refused> {
    let element =
        Element::parse(element).ok_or_else(|| not_found(&format!("no element `{element}`")))?;
    let n = page_number(page)?;
    let (Some(start), Some(end)) = (timestamp(start), timestamp(end)) else {
        return Err(bad_request("dates: YYYY-MM-DDThh:mm:ssZ".into()));
    };
    let machine = state
        .fleet
        .machines
        .iter()
        .find(|m| match kind {
            "ID" => m.header.id == id,
            "PIN" => m.header.pin == id,
            _ => false,
        })
        .ok_or_else(|| not_found(&format!("no equipment {kind} `{id}`")))?;
    if kind == "ID" && state.quirks.pin_ids && id.contains('#') {
        return Err(not_found(
            "this equipment id cannot be addressed; use its PIN",
        ));
    }
    let mut entries: Vec<render::Entry<'_>> = Vec::new();
    for p in machine
        .points
        .iter()
        .filter(|p| p.at >= start && p.at <= end)
    {
        if element == Element::Faults {
            entries.extend((0..p.faults.len()).map(|i| (p.at, p, Some(i))));
        } else {
            entries.push((p.at, p, None));
        }
    }
    let size = state.quirks.page_size.max(1);
    let mut items: Vec<render::Entry<'_>> = entries
        .iter()
        .skip((n - 1) * size)
        .take(size)
        .cloned()
        .collect();
    let future_point;
    if state.quirks.bad == Some(BadAnswer::Future)
        && n == 1
        && let Some(last) = machine.points.last()
        && element != Element::Faults
    {
        future_point = data::Point {
            at: wall_clock_ms() + 86_400_000,
            hours: last.hours + 1.0,
            idle: last.idle + 1.0,
            fuel: last.fuel + 1.0,
            loads: last.loads + 1,
            ..last.clone()
        };
        items.push((future_point.at / 1000 * 1000, &future_point, None));
    }
    let base = path.rsplit_once('/').map_or(path, |(base, _)| base);
    let doc = render::Page {
        this: format!("{base}/{n}"),
        next: (entries.len() > n * size).then(|| format!("{base}/{}", n + 1)),
        snapshot_ms: wall_clock_ms(),
        items: &items,
    };
    Ok(render::series(style, element, &doc))
}

fn authorized(state: &SimState, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match &state.quirks.auth {
        SimAuth::None => true,
        SimAuth::Basic { username, password } => given == basic(username, password),
        SimAuth::Oauth2 { .. } => given.strip_prefix("Bearer ").is_some_and(|token| {
            let tokens = state.tokens.lock().unwrap_or_else(|e| e.into_inner());
            tokens
                .get(token)
                .is_some_and(|until| *until > Instant::now())
        }),
    }
}

fn basic(username: &str, password: &str) -> String {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

/// `POST .../oauth/token`: client credentials in Basic, a bearer token out.
fn token(state: &SimState, headers: &HeaderMap, body: &str) -> Response {
    let SimAuth::Oauth2 {
        client_id,
        client_secret,
        token_life,
    } = &state.quirks.auth
    else {
        return not_found("no token endpoint: OAuth2 is off").into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let form: HashSet<&str> = body.split('&').collect();
    if given != basic(client_id, client_secret) || !form.contains("grant_type=client_credentials") {
        state.stats.unauthorized.fetch_add(1, Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let n = state.stats.tokens.fetch_add(1, Relaxed) + 1;
    let token = format!("sim-token-{n}-{}", wall_clock_ms());
    state
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(token.clone(), Instant::now() + *token_life);
    axum::Json(serde_json::json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": token_life.as_secs(),
    }))
    .into_response()
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&segment[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoded_segments_decode() {
        assert_eq!(percent_decode("EXC%2300001"), "EXC#00001");
        assert_eq!(
            percent_decode("2026-01-05T00:00:00Z"),
            "2026-01-05T00:00:00Z"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
