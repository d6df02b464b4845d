//! The HTTP port: JSON API, dashboard, `/metrics`, health checks.
//!
//! ```text
//! fan-out --(bounded, 64 batches)--> view task --> Hub { View } <-- axum handlers
//! ```
//!
//! The [`Hub`] is what the handlers share: the in-memory [`view::View`] of
//! the record stream (fed by one more receiver of the service's fan-out, so
//! the API works whatever sinks are configured), and handles on the
//! service's counters. A hub outlives the service that feeds it: the demo
//! keeps serving its dashboard after the run.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the dashboard (static assets embedded in the binary) |
//! | `GET /api/customers` | customers ranked by risk |
//! | `GET /api/customers/{id}` | one customer: KPIs over time, outcomes, milestones, devices, alerts |
//! | `GET /api/customers/{id}/touchpoints` | the customer's touchpoints, coverage cadences and `coverage_gap` episodes |
//! | `POST /api/customers/{id}/touchpoints` | records a touchpoint (admin, or the customer's CSM) |
//! | `GET /api/alerts` | alert episodes, filtered by status, segment, rule, customer |
//! | `GET /api/portfolio` | figures over all customers |
//! | `GET /api/impact` | the impact of each kind of CS activity on operating hours and outcome attainment (difference in differences, CI, n) |
//! | `GET /api/contract-events` | contract events recorded through the API and the CLI |
//! | `POST /api/contract-events` | records a contract event (admin, or the customer's CSM) |
//! | `GET /api/retention` | revenue (GRR, NRR) and logo retention per period, segment, managed or not |
//! | `GET /api/health-validation` | the health score 30, 60, 90 days before each churn or renewal: ROC AUC, churn rate per band |
//! | `GET /api/status` | progress counters; the dashboard polls it |
//! | `GET /api/me` | the user, their role and how many customers they see |
//! | `GET /login`, `POST /login`, `POST /logout` | the dashboard's login ([`auth::login`]) |
//! | `GET /api/openapi.json` | the OpenAPI document of the above |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz`, `GET /readyz` | liveness, readiness |
//!
//! **Who may see what** ([`auth`]): every route but the health checks,
//! the login page and the stylesheet sits behind a guard that resolves the
//! user and the customers they see; handlers filter by it. The server
//! ([`server`]) bounds connections, header and request times, concurrency
//! and body sizes, and speaks TLS ([`tls`]) when configured.
//!
//! **Queue.** The view task only updates maps, so it keeps up with the
//! fan-out; if it ever fell behind, its bounded queue would make the fan-out
//! wait (backpressure, like a sink), never drop.

pub mod api;
pub mod auth;
pub mod config;
pub mod contract_events;
pub mod health_validation;
pub mod impact;
pub mod prometheus;
pub mod retention;
pub mod seed;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod touchpoints;
pub mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetpulse_engine::{EngineConfig, EngineStats, Output};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::HttpConfig;
pub use view::View;

use crate::metrics::{IngestMetrics, RejectReason};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// A page in the dashboard's look: the `<head>` of `index.html` (charset,
/// viewport, stylesheet) titled `title`, then `body` (`<body ...>` to the
/// end of the document).
pub(crate) fn html_page(title: &str, body: &str) -> String {
    let (before, rest) = INDEX_HTML
        .split_once("<title>")
        .expect("index.html has a title");
    let (_, after) = rest.split_once("</title>").expect("index.html has a title");
    let (head_end, _) = after.split_once("<body").expect("index.html has a body");
    format!("{before}<title>{title}</title>{head_end}{body}")
}

/// Record batches the view task may have queued.
pub const VIEW_QUEUE: usize = 64;

/// A record queue the service hands batches to, watched for `/metrics`.
#[derive(Debug, Clone)]
pub struct WatchedQueue {
    /// Label, e.g. `0-sqlite`.
    pub name: String,
    /// The sending side; weak, so watching never keeps a queue open.
    pub sender: mpsc::WeakSender<Arc<[Output]>>,
    /// Capacity in batches.
    pub capacity: usize,
}

/// Handles on a running (or finished) service.
#[derive(Debug, Default)]
struct ServiceHandles {
    metrics: Option<Arc<IngestMetrics>>,
    engine: Option<Arc<EngineStats>>,
    queues: Vec<WatchedQueue>,
    wal_dir: Option<PathBuf>,
}

/// What the HTTP handlers share.
#[derive(Debug, Default)]
pub struct Hub {
    view: RwLock<View>,
    service: RwLock<ServiceHandles>,
    running: AtomicBool,
    local_addr: OnceLock<SocketAddr>,
    /// CSM assignments of customers.toml: customer id -> user name.
    csm: RwLock<HashMap<String, String>>,
    /// Operator pseudonyms, for showing admins the clear ids.
    pseudonyms: RwLock<Option<Arc<crate::privacy::Pseudonyms>>>,
    /// Contract events of customers.toml: revenue retention's input.
    contracts: RwLock<Arc<crate::contracts::ContractBook>>,
    /// The SQLite store touchpoints are kept in (the service's SQLite sink).
    touchpoint_store: RwLock<Option<PathBuf>>,
    /// Coverage cadences per segment (customers.toml, or the defaults).
    coverage: RwLock<Arc<fleetpulse_engine::kpi::coverage::CoverageModel>>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Ties the hub to a starting service: its counters, its customers and
    /// its daily window.
    pub fn attach(&self, metrics: Arc<IngestMetrics>, engine: &EngineConfig) {
        self.write_service().metrics = Some(metrics);
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        if let Some(day) = engine.day_window()
            && day.name.as_ref() != view.day_window()
        {
            *view = View::new(&day.name);
        }
        view.set_roster(&engine.customers);
    }

    /// Who manages which customer (`csm` in customers.toml).
    pub fn set_csm_assignments(&self, customers: &crate::customers::CustomersFile) {
        *self.csm.write().unwrap_or_else(|e| e.into_inner()) = customers
            .customers
            .iter()
            .filter_map(|c| Some((c.id.clone(), c.csm.clone()?)))
            .collect();
    }

    /// What the HTTP side reads of the customers file, taken in again at
    /// a reload: who manages which customer (a CSM taken off a customer
    /// loses it at once, not at the next restart), the contract events and
    /// the coverage model.
    pub fn reload_customers(
        &self,
        customers: &crate::customers::CustomersFile,
        path: &std::path::Path,
        contracts: crate::contracts::ContractBook,
    ) {
        self.set_csm_assignments(customers);
        self.set_contracts(contracts);
        // Checked with the rest of the file before it was taken in.
        if let Ok(model) = customers.coverage_model(path) {
            self.set_coverage(model);
        }
    }

    /// The customers' contract events (customers.toml and its CSV).
    pub fn set_contracts(&self, book: crate::contracts::ContractBook) {
        *self.contracts.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(book);
    }

    /// Where touchpoints are kept: a SQLite store (`None`: not recorded).
    pub fn set_touchpoint_store(&self, path: Option<PathBuf>) {
        *self
            .touchpoint_store
            .write()
            .unwrap_or_else(|e| e.into_inner()) = path;
    }

    /// The SQLite store of touchpoints, if any.
    pub fn touchpoint_store(&self) -> Option<PathBuf> {
        self.touchpoint_store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The coverage model the `coverage_gap` rule checks.
    pub fn set_coverage(&self, model: fleetpulse_engine::kpi::coverage::CoverageModel) {
        *self.coverage.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(model);
    }

    /// The coverage model (the defaults until set).
    pub fn coverage(&self) -> Arc<fleetpulse_engine::kpi::coverage::CoverageModel> {
        self.coverage
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The customers' contract events (empty without a customers file).
    pub fn contracts(&self) -> Arc<crate::contracts::ContractBook> {
        self.contracts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The service's operator pseudonyms, and how long evidence may name
    /// an operator.
    pub fn set_privacy(
        &self,
        pseudonyms: Option<Arc<crate::privacy::Pseudonyms>>,
        retention: std::time::Duration,
    ) {
        *self.pseudonyms.write().unwrap_or_else(|e| e.into_inner()) = pseudonyms;
        self.view
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set_operator_retention(retention);
    }

    /// The operator pseudonyms, when the service has a key.
    pub fn pseudonyms(&self) -> Option<Arc<crate::privacy::Pseudonyms>> {
        self.pseudonyms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Customer id -> CSM user name.
    pub fn csm_assignments(&self) -> HashMap<String, String> {
        self.csm.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The engine's counters, once it has started.
    pub fn set_engine_stats(&self, stats: Arc<EngineStats>) {
        self.write_service().engine = Some(stats);
    }

    /// The record queues to show in `/metrics`.
    pub fn watch_queues(&self, queues: Vec<WatchedQueue>) {
        self.write_service().queues = queues;
    }

    /// The write-ahead log's directory, whose size `/metrics` shows.
    pub fn watch_wal(&self, dir: Option<PathBuf>) {
        self.write_service().wal_dir = dir;
    }

    /// Whether the service is taking in telemetry (readiness).
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Relaxed);
    }

    /// True while the service is taking in telemetry.
    pub fn is_running(&self) -> bool {
        self.running.load(Relaxed)
    }

    /// Ready: running, subscribed to the broker, its MQTT session not
    /// fought over by another client, and the write-ahead log takes
    /// records.
    pub fn is_ready(&self) -> bool {
        self.is_running()
            && self.metrics().is_some_and(|m| {
                m.subscribed.load(Relaxed)
                    && !m.session_contested.load(Relaxed)
                    && !m.wal.full.is_full()
                    && m.dead_letters_failing().is_none()
            })
    }

    /// Why the service is not ready; `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        let metrics = self.metrics();
        if metrics
            .as_ref()
            .is_some_and(|m| m.store_awaited.load(Relaxed))
        {
            return Some(format!(
                "starting again in place: waiting for a store that does not answer (the log \
                 names it); asked again every {} s",
                crate::service::parts::STORE_RETRY.as_secs()
            ));
        }
        if !self.is_running() {
            return Some("the service is not taking in telemetry".into());
        }
        if let Some(error) = metrics.as_ref().and_then(|m| m.dead_letters_failing()) {
            let what = if self.read_service().wal_dir.is_some() {
                "intake paused: the refused messages wait at the broker, unacknowledged, until \
                 their letters are written"
            } else {
                "refused messages are counted in fleetpulse_dead_letter_write_errors_total, not kept"
            };
            return Some(format!(
                "the dead-letter file cannot be written ({error}): {what}"
            ));
        }
        if let Some(reason) = metrics.as_ref().and_then(|m| m.wal_full_reason()) {
            // Not full but removed: said as such, or an operator looks for
            // space that is there.
            let wal_dir = self.read_service().wal_dir.clone();
            if let Some(dir) = wal_dir.filter(|dir| !dir.exists()) {
                return Some(format!(
                    "the WAL directory {} is gone (removed while the service ran?): intake \
                     paused; restart the service to start a new one there (the readings it \
                     held since the last checkpoint went with it: the windows and days still \
                     open are written again without them)",
                    dir.display()
                ));
            }
            return Some(format!(
                "the write-ahead log is full ({reason}): intake paused"
            ));
        }
        if metrics
            .as_ref()
            .is_some_and(|m| m.session_contested.load(Relaxed))
        {
            return Some(
                "another MQTT client uses this service's mqtt.client_id: the broker hands the \
                 session to one and then the other, so each computes a part of every window"
                    .into(),
            );
        }
        if !metrics.is_some_and(|m| m.subscribed.load(Relaxed)) {
            return Some("not subscribed to the broker".into());
        }
        None
    }

    /// Where the server listens, once it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr.get().copied()
    }

    /// The view, for reading. Never hold it across an `.await`.
    pub fn read_view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in one batch of records.
    pub fn apply(&self, records: &[Output]) {
        self.view
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(records);
    }

    /// The service's counters, if a service was attached.
    pub fn metrics(&self) -> Option<Arc<IngestMetrics>> {
        self.read_service().metrics.clone()
    }

    fn read_service(&self) -> RwLockReadGuard<'_, ServiceHandles> {
        self.service.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_service(&self) -> std::sync::RwLockWriteGuard<'_, ServiceHandles> {
        self.service.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything `/metrics` shows, read now.
    pub fn snapshot(&self) -> prometheus::Snapshot {
        let service = self.read_service();
        let (view_customers, view_records) = {
            let view = self.read_view();
            (view.customers().len(), view.records())
        };
        let mut s = prometheus::Snapshot {
            now_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            engine: service.engine.as_ref().map(|e| e.snapshot()),
            queues: service
                .queues
                .iter()
                .map(|q| prometheus::QueueSnapshot {
                    sink: q.name.clone(),
                    depth: q
                        .sender
                        .upgrade()
                        .map_or(0, |tx| tx.max_capacity() - tx.capacity()),
                    capacity: q.capacity,
                })
                .collect(),
            view_customers,
            view_records,
            ready: self.is_ready(),
            ..prometheus::Snapshot::default()
        };
        if let Some(m) = &service.metrics {
            s.received = m.received();
            s.bytes = m.bytes_received.load(Relaxed);
            s.intake_bytes = m.intake_bytes();
            s.accepted = m.messages_accepted.load(Relaxed);
            s.replayed = m.messages_replayed.load(Relaxed);
            s.samples = m.samples_accepted.load(Relaxed);
            s.rejected = RejectReason::ALL
                .iter()
                .map(|r| (*r, m.rejected(*r)))
                .collect();
            s.connection_errors = m.connection_errors.load(Relaxed);
            s.oversized_packets = m.oversized_packets.load(Relaxed);
            s.subscribed = m.subscribed.load(Relaxed);
            s.takeovers = m.takeovers.load(Relaxed);
            s.dead_letter_write_errors = m.dead_letter_write_errors.load(Relaxed);
            s.customers_reload_errors = m.customers_reload_errors.load(Relaxed);
            s.customers_reload_failing = m.customers_reload_failing().is_some();
            s.session_contested = m.session_contested.load(Relaxed);
            s.watermark_ms = m.watermark.load(Relaxed);
            s.records_emitted = m.records_emitted.load(Relaxed);
            s.records_written = m.records_written.load(Relaxed);
            s.late_admitted = m.late_admitted.load(Relaxed);
            s.devices_behind = m.devices_behind.load(Relaxed);
            s.restatements = m.restatements.load(Relaxed);
            s.records_restated = m.records_restated.load(Relaxed);
            s.restatement_days_read = m.restatement_days_read.load(Relaxed);
            s.restatements_failed = m.restatements_failed.load(Relaxed);
            s.write_errors = m.sink_write_errors.load(Relaxed);
            s.sinks_failing = m.sinks_failing.load(Relaxed);
            s.wal_full = service.wal_dir.is_some().then(|| m.wal.full.is_full());
            s.aemp = m.aemp.render();
        }
        s.wal_bytes = service.wal_dir.as_deref().map(wal_bytes);
        s
    }
}

/// The HTTP side of a running service: the hub it feeds, the view task, and
/// the server when the service serves it itself.
#[derive(Debug)]
pub struct Attached {
    /// The hub the view task feeds.
    pub hub: Arc<Hub>,
    view_task: tokio::task::JoinHandle<()>,
    /// With a view snapshot: the record batches it holds, which the
    /// checkpoint must not pass (one more checkpointed receiver).
    pub view_written: Option<Arc<AtomicU64>>,
    server: Option<Server>,
}

/// The HTTP port's accept loop, as [`start`] spawned it.
#[derive(Debug)]
pub struct Server {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Stops accepting, lets open requests finish (at most
    /// [`server::DRAIN`]), and logs how the server ended.
    pub async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "http server failed"),
            Err(e) => tracing::error!(error = %e, "http server task failed"),
        }
    }
}

/// What a start in place keeps of the HTTP side: the hub, with its view,
/// and the server on it, so the port never closes and sign-ins stay valid.
#[derive(Debug)]
pub struct Kept {
    /// The hub (its view is kept and filled again at the start).
    pub hub: Arc<Hub>,
    /// The server, when the service serves the hub itself.
    pub server: Option<Server>,
}

impl Attached {
    /// The service stopped taking in telemetry: `/readyz` says so.
    pub fn intake_stopped(&self) {
        self.hub.set_running(false);
    }

    /// After the fan-out ended: waits for the view to take in the last
    /// records (until `by`: a fan-out stuck on a store that is down never
    /// lets the view's channel close), then stops the server (if the
    /// service started it), or hands hub and server on when `keep` (a
    /// start in place follows).
    pub async fn finish(self, keep: bool, by: tokio::time::Instant) -> Option<Kept> {
        let mut view_task = self.view_task;
        if tokio::time::timeout_at(by, &mut view_task).await.is_err() {
            tracing::warn!(
                "shutdown deadline reached: the dashboard's view is still taking in records; a start fills it again"
            );
            view_task.abort();
        }
        if keep {
            return Some(Kept {
                hub: self.hub,
                server: self.server,
            });
        }
        if let Some(server) = self.server {
            server.stop().await;
        }
        None
    }
}

/// Label of output queue `i` in `/metrics`: the sinks of the config in
/// order, then the alerts task.
fn queue_name(config: &crate::config::ServiceConfig, i: usize) -> String {
    use crate::sinks::SinkConfig;
    match config.sinks.get(i) {
        Some(SinkConfig::Sqlite(_)) => format!("{i}-sqlite"),
        Some(SinkConfig::InfluxDbV1(_)) => format!("{i}-influxdb_v1"),
        Some(SinkConfig::InfluxDbV2(_)) => format!("{i}-influxdb_v2"),
        None => "alerts".to_string(),
    }
}

/// Who is who, for the HTTP side: the customers file (its CSM
/// assignments) and the operator pseudonyms.
#[derive(Debug, Default)]
pub struct People<'a> {
    /// The customers file, when the service has one.
    pub customers: Option<&'a crate::customers::CustomersFile>,
    /// Its customers' contract events, for revenue retention.
    pub contracts: Option<&'a crate::contracts::ContractBook>,
    /// The operator pseudonyms, when the service has a key.
    pub pseudonyms: Option<Arc<crate::privacy::Pseudonyms>>,
}

/// Called by the service once its engine has started and before its
/// fan-out does: feeds `hub` (or, when `[http]` is enabled and no hub is
/// given, a new one) from one more fan-out receiver, added to `outputs`, and
/// serves it on `[http] listen` when enabled. `None` when there is nothing
/// to feed.
pub async fn attach(
    config: &crate::config::ServiceConfig,
    people: People<'_>,
    kept: Option<Kept>,
    metrics: &Arc<IngestMetrics>,
    engine_config: &EngineConfig,
    engine: Arc<EngineStats>,
    outputs: &mut Vec<mpsc::Sender<Arc<[Output]>>>,
) -> std::io::Result<Option<Attached>> {
    let (hub, server) = match kept {
        Some(Kept { hub, server }) => (Some(hub), server),
        None => (None, None),
    };
    let Some(hub) = hub.or_else(|| config.http.enabled.then(Hub::new)) else {
        return Ok(None);
    };
    hub.attach(metrics.clone(), engine_config);
    if let Some(customers) = people.customers {
        hub.set_csm_assignments(customers);
    }
    if let Some(contracts) = people.contracts {
        hub.set_contracts(contracts.clone());
    }
    if let (Some(customers), Some(file)) = (people.customers, &config.customers) {
        hub.set_coverage(
            customers.coverage_model(&file.file).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?,
        );
    }
    hub.set_touchpoint_store(config.sinks.iter().find_map(|s| match s {
        crate::sinks::SinkConfig::Sqlite(c) => Some(c.path.clone()),
        _ => None,
    }));
    hub.set_privacy(people.pseudonyms, config.privacy.operator_retention);
    hub.set_engine_stats(engine);
    hub.watch_queues(
        outputs
            .iter()
            .enumerate()
            .map(|(i, tx)| WatchedQueue {
                name: queue_name(config, i),
                sender: tx.downgrade(),
                capacity: tx.max_capacity(),
            })
            .collect(),
    );
    hub.watch_wal(config.wal.as_ref().map(|w| w.dir.clone()));
    let server = if let Some(server) = server {
        Some(server)
    } else if config.http.enabled {
        let stop = CancellationToken::new();
        let (addr, task) = start(&config.http, hub.clone(), stop.clone())
            .await
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("http listen {}: {e}", config.http.listen))
            })?;
        let scheme = if config.http.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(url = %format!("{scheme}://{addr}/"), "dashboard and API");
        Some(Server { stop, task })
    } else {
        None
    };
    // A cluster member's view holds what its own workers emit: it is
    // filled with its share of the store only (the others' customers would
    // never be updated here). A service without a SQLite store keeps a
    // snapshot of its view.
    let member = (config.cluster.as_ref())
        .filter(|c| c.is_multi_process())
        .map(|c| seed::Share::of_member(c.process, c.addresses.len(), config.engine.workers));
    let fill = match (hub.touchpoint_store(), &config.wal) {
        (Some(path), _) => Fill::Store(path, engine_config.clone(), member),
        _ if member.is_some() => Fill::Nothing,
        (None, Some(wal)) => Fill::Snapshot {
            wal_dir: wal.dir.clone(),
            roster: (!engine_config.customers.is_empty())
                .then(|| engine_config.customers.keys().cloned().collect()),
            held: Arc::new(AtomicU64::new(0)),
        },
        (None, None) => Fill::Nothing,
    };
    let view_written = match &fill {
        Fill::Snapshot { held, .. } => Some(held.clone()),
        _ => None,
    };
    let (tx, view_task) = feed(hub.clone(), fill);
    outputs.push(tx);
    hub.set_running(true);
    Ok(Some(Attached {
        hub,
        view_task,
        server,
        view_written,
    }))
}

/// Bytes of the WAL's segment files (`*.wal`) in `dir`; 0 when unreadable.
fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// What the view is filled with at start.
pub enum Fill {
    /// Nothing: it starts empty and fills as windows close.
    Nothing,
    /// The SQLite store at this path, of the customers of this engine's
    /// roster ([`seed`]); of a cluster member, its share of them.
    Store(PathBuf, EngineConfig, Option<seed::Share>),
    /// Its own snapshot and journal in this WAL directory ([`snapshot`]),
    /// kept from then on; `held` counts the record batches they hold.
    Snapshot {
        /// Where the files are.
        wal_dir: PathBuf,
        /// The customers of the customers file (one taken out of it is
        /// gone from the dashboard); `None`: every customer.
        roster: Option<std::collections::HashSet<String>>,
        /// Record batches on disk.
        held: Arc<AtomicU64>,
    },
}

/// How often the view's journal is appended to (one fsync): how far the
/// checkpoint may lag the sinks because of it.
const JOURNAL_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts the view task: returns the sender to add to the fan-out and the
/// task, which ends when every sender is gone. The task first fills the
/// view as `fill` says; live records that arrive meanwhile are held and
/// applied after, so the fan-out (and intake behind it) never waits for
/// the read.
pub fn feed(
    hub: Arc<Hub>,
    fill: Fill,
) -> (mpsc::Sender<Arc<[Output]>>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Arc<[Output]>>(VIEW_QUEUE);
    let task = tokio::spawn(async move {
        let started = std::time::Instant::now();
        type Read = tokio::task::JoinHandle<Result<(Vec<Output>, u64), String>>;
        let (from, read): (String, Option<Read>) = match &fill {
            Fill::Nothing => (String::new(), None),
            Fill::Store(path, engine, share) => {
                let (path, engine, share) = (path.clone(), engine.clone(), share.clone());
                let from = format!("the store {}", path.display());
                let read = tokio::task::spawn_blocking(move || {
                    seed::from_store(&path, &engine, share.as_ref())
                        .map(|records| (records, 0))
                        .map_err(|e| e.to_string())
                });
                (from, Some(read))
            }
            Fill::Snapshot {
                wal_dir, roster, ..
            } => {
                let (dir, roster) = (wal_dir.clone(), roster.clone());
                let from = format!("its snapshot in {}", dir.display());
                let read = tokio::task::spawn_blocking(move || {
                    let (generation, mut records) = snapshot::load(&dir);
                    if let Some(roster) = roster {
                        records.retain(|r| r.customer().is_none_or(|c| roster.contains(&**c)));
                    }
                    Ok((records, generation))
                });
                (from, Some(read))
            }
        };
        // Batches taken in, and the snapshot's generation.
        let (mut taken, mut generation) = (0u64, 0u64);
        if let Some(mut read) = read {
            let mut held = Vec::new();
            let mut open = true;
            let read = loop {
                tokio::select! {
                    read = &mut read => break read,
                    records = rx.recv(), if open => match records {
                        Some(records) => held.push(records),
                        None => open = false,
                    },
                }
            };
            match read {
                Ok(Ok((records, kept))) => {
                    hub.apply(&records);
                    generation = kept;
                    tracing::info!(
                        records = records.len(),
                        held = held.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "view filled from {from}"
                    );
                }
                Ok(Err(e)) => tracing::warn!(
                    error = %e,
                    "the view could not be filled from {from}: it shows records as windows close"
                ),
                Err(e) => tracing::warn!(error = %e, "filling the view from {from} failed"),
            }
            taken += held.len() as u64;
            for records in held {
                hub.apply(&records);
            }
        }
        let Fill::Snapshot {
            wal_dir,
            roster,
            held,
            ..
        } = fill
        else {
            while let Some(records) = rx.recv().await {
                hub.apply(&records);
            }
            return;
        };
        let mut keeper = Keeper {
            hub,
            dir: wal_dir,
            roster,
            held,
            journal: None,
            generation,
            pending: Vec::new(),
            failing: false,
        };
        keeper.keep(taken).await;
        let mut ticker = tokio::time::interval(JOURNAL_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                records = rx.recv() => match records {
                    Some(records) => {
                        keeper.hub.apply(&records);
                        keeper.pending.push(records);
                        taken += 1;
                    }
                    None => break,
                },
                _ = ticker.tick() => keeper.keep(taken).await,
            }
        }
        keeper.keep(taken).await;
    });
    (tx, task)
}

/// Keeps the view's snapshot and journal as batches come in.
struct Keeper {
    hub: Arc<Hub>,
    dir: PathBuf,
    roster: Option<std::collections::HashSet<String>>,
    /// Batches on disk, for the checkpoint.
    held: Arc<AtomicU64>,
    /// `None` until a generation is started (or after a write failed).
    journal: Option<snapshot::Journal>,
    /// The generation of the last snapshot written (the journal's while
    /// there is one; kept for a start after a failed write).
    generation: u64,
    /// Batches taken in and not yet in the journal.
    pending: Vec<Arc<[Output]>>,
    failing: bool,
}

impl Keeper {
    /// Makes the `taken` batches durable: appended to the journal, or, at
    /// the start, after a failure, or once the journal outgrew its
    /// snapshot, in a new snapshot of what the view holds.
    async fn keep(&mut self, taken: u64) {
        let fold = self.journal.as_ref().is_none_or(snapshot::Journal::due);
        if !fold && self.pending.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let journal = self.journal.take();
        let (dir, generation) = (self.dir.clone(), self.generation);
        let written = if fold {
            let records = {
                let view = self.hub.read_view();
                match &self.roster {
                    Some(roster) => view.held(|c| roster.contains(c)),
                    None => view.held(|_| true),
                }
            };
            tokio::task::spawn_blocking(move || match journal {
                Some(journal) => journal.fold(&records),
                None => snapshot::Journal::start(&dir, generation, &records),
            })
            .await
        } else {
            let pending = std::mem::take(&mut self.pending);
            let mut journal = journal.expect("a journal when not folding");
            tokio::task::spawn_blocking(move || journal.append(&pending).map(|()| journal)).await
        };
        match written.map_err(std::io::Error::other).and_then(|r| r) {
            Ok(journal) => {
                if fold {
                    let (snapshot, _) = journal.size();
                    tracing::debug!(
                        bytes = snapshot,
                        ms = started.elapsed().as_millis() as u64,
                        "view snapshot written"
                    );
                    self.pending.clear();
                }
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the view's snapshot is written again");
                }
                self.generation = journal.generation();
                self.journal = Some(journal);
                self.held.store(taken, Relaxed);
            }
            Err(e) => {
                // The batches are in the view: the next snapshot holds them.
                self.pending.clear();
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the view's snapshot; the checkpoint waits for it");
                }
            }
        }
    }
}

/// The whole application over `hub`: routes, the guard in front of them
/// (identity, role, scope, Host), and the request limits of `config`.
pub fn app(hub: Arc<Hub>, auth: Arc<auth::Auth>, config: &HttpConfig) -> Router {
    let guard = auth::Guard {
        auth: auth.clone(),
        hub: hub.clone(),
    };
    let login = Router::new()
        .route("/login", get(auth::login::page).post(auth::login::login))
        .route("/logout", post(auth::login::logout))
        .with_state(auth);
    let routes = router(hub)
        .merge(login)
        .layer(axum::middleware::from_fn_with_state(guard, auth::guard));
    server::harden(routes, config)
}

/// The routes over `hub`; handlers expect the guard's [`auth::Access`].
fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/api/customers", get(api::customers))
        .route("/api/customers/:id", get(api::customer))
        .route(
            "/api/customers/:id/touchpoints",
            get(touchpoints::list).post(touchpoints::record),
        )
        .route("/api/alerts", get(api::alerts))
        .route("/api/portfolio", get(api::portfolio))
        .route(
            "/api/contract-events",
            get(contract_events::list).post(contract_events::record),
        )
        .route("/api/retention", get(retention::retention))
        .route("/api/impact", get(impact::activity_impact))
        .route(
            "/api/health-validation",
            get(health_validation::health_validation),
        )
        .route("/api/status", get(api::status))
        .route("/api/me", get(api::me))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(hub)
}

/// Binds `config.listen` and serves `hub` until `stop` is cancelled, with
/// the authentication, TLS and limits of `config` (checked by the caller
/// with [`HttpConfig::check`]). Returns the bound address (the port, when
/// `listen` asked for port 0) and the server task.
pub async fn start(
    config: &HttpConfig,
    hub: Arc<Hub>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let invalid = |e: crate::config::ConfigError| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
    };
    let auth = Arc::new(auth::Auth::new(config).map_err(invalid)?);
    let tls = config
        .tls
        .as_ref()
        .map(|t| tls::Tls::load(t).map(Arc::new))
        .transpose()?;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let _ = hub.local_addr.set(addr);
    if !auth.required() && !config::is_loopback(config.listen.ip()) {
        tracing::warn!(
            listen = %config.listen,
            "http.allow_anonymous: no authentication on a non-loopback address; anyone who \
             reaches the port reads every customer"
        );
    }
    if config.host_allow_list().is_none() {
        tracing::warn!(
            listen = %config.listen,
            "http.allowed_hosts is empty: any Host is accepted; name the server's host names"
        );
    }
    let app = app(hub, auth.clone(), config);
    let task = tokio::spawn(server::serve(
        listener,
        app,
        config.clone(),
        auth,
        tls,
        stop,
    ));
    tracing::info!(%addr, tls = config.tls.is_some(), authentication = config.authenticates(), "http listening");
    Ok((addr, task))
}

async fn index() -> Response {
    static_asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    static_asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    static_asset("text/css; charset=utf-8", APP_CSS)
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `body` with its content type.
fn typed(content_type: &'static str, body: impl IntoResponse) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// This document
#[utoipa::path(get, path = "/api/openapi.json", operation_id = "getOpenApi", tag = "service",
    responses((status = 200, description = "OpenAPI document", content_type = "application/json", body = Object),
        (status = 401, description = "no valid credentials", body = api::ErrorBody)))]
pub(crate) async fn openapi() -> Response {
    typed("application/json", api::openapi_json())
}

/// Prometheus text format (0.0.4)
///
/// Counters of the service, never a customer or a device; any role (a
/// viewer's API token for the scraper) may read them.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "service",
    responses((status = 200, description = "metrics", content_type = "text/plain", body = String),
        (status = 401, description = "no valid credentials", body = api::ErrorBody)))]
pub(crate) async fn metrics(
    State(hub): State<Arc<Hub>>,
    Extension(_access): Extension<auth::Access>,
) -> Response {
    let text = prometheus::render(&hub.snapshot());
    typed("text/plain; version=0.0.4; charset=utf-8", text)
}

/// Liveness: the process serves HTTP
#[utoipa::path(get, path = "/healthz", operation_id = "getHealthz", tag = "service", security(()),
    responses((status = 200, description = "ok", content_type = "text/plain", body = String)))]
pub(crate) async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// Readiness: the service is running, subscribed to the broker, and its WAL takes records
#[utoipa::path(get, path = "/readyz", operation_id = "getReadyz", tag = "service", security(()), responses(
    (status = 200, description = "ready", content_type = "text/plain", body = String),
    (status = 503, description = "not ready, and why", content_type = "text/plain", body = String)))]
pub(crate) async fn readyz(State(hub): State<Arc<Hub>>) -> Response {
    match hub.not_ready_reason() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn not_found() -> api::ApiError {
    api::ApiError::not_found("no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_wal_makes_the_service_unready_with_the_reason() {
        let hub = Hub::new();
        let metrics = Arc::new(IngestMetrics::default());
        hub.write_service().metrics = Some(metrics.clone());
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        std::fs::create_dir(&wal).unwrap();
        hub.watch_wal(Some(wal.clone()));
        hub.set_running(true);
        metrics.subscribed.store(true, Relaxed);
        assert_eq!(hub.not_ready_reason(), None);
        assert_eq!(readyz(State(hub.clone())).await.status(), StatusCode::OK);
        assert_eq!(hub.snapshot().wal_full, Some(false));

        metrics.wal_full("max_bytes of 4 MiB reached");
        assert!(!hub.is_ready());
        assert_eq!(
            hub.not_ready_reason().as_deref(),
            Some("the write-ahead log is full (max_bytes of 4 MiB reached): intake paused")
        );
        let response = readyz(State(hub.clone())).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Refused because the directory was removed: said as such.
        std::fs::remove_dir(&wal).unwrap();
        let reason = hub.not_ready_reason().unwrap();
        let gone = format!("the WAL directory {} is gone", wal.display());
        assert!(reason.starts_with(&gone), "{reason}");
        std::fs::create_dir(&wal).unwrap();
        let snapshot = hub.snapshot();
        assert_eq!((snapshot.wal_full, snapshot.ready), (Some(true), false));
        let text = prometheus::render(&snapshot);
        assert!(text.contains("fleetpulse_wal_full 1\n"), "{text}");
        assert!(text.contains("fleetpulse_ready 0\n"), "{text}");

        metrics.wal_resumed();
        assert!(hub.is_ready());
        assert_eq!(hub.snapshot().wal_full, Some(false));
    }
}
