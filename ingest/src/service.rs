//! `fleetpulse run`: the service. Wiring only: the delivery core
//! ([`crate::delivery`]) decides what is durable, acknowledged, written and
//! cut; this file opens the parts, connects them, and stops them in order
//! (stop intake, hand over what is durable, drain the engine, flush the
//! sinks) within `shutdown_timeout`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use fleetpulse_engine::{
    Cluster, CustomerSpec, Engine, EngineError, EngineOptions, Output, StatsSnapshot,
};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Bounds};
use crate::alerts::{Alerts, AlertsError, AlertsReport};
use crate::config::{ConfigError, ServiceConfig};
use crate::customers::{CheckContext, CustomersFile};
use crate::dead_letter::{DeadLetterOptions, DeadLetterStore};
use crate::delivery::checkpoint::Checkpoint;
use crate::delivery::fan_out::FanOut;
use crate::delivery::intake::Lane;
use crate::delivery::ledger::Ledger;
use crate::delivery::{self, DeliveryError, replay};
use crate::metrics::IngestMetrics;
use crate::sinks::writer::{SinkReport, SinkSettings, run_sink_counted};
use crate::sinks::{Sink, SinkError};
use crate::source;
use crate::wal::Lsn;
use crate::wal::writer::WalWriter;

/// The service could not start or failed while running.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A sink could not be opened.
    #[error("cannot open sink: {0}")]
    Sink(#[from] SinkError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The MQTT source could not start.
    #[error(transparent)]
    Source(#[from] source::mqtt::SourceError),
    /// The alerts task could not be set up.
    #[error(transparent)]
    Alerts(#[from] AlertsError),
    /// A task panicked.
    #[error("task failed: {0}")]
    Task(String),
    /// The HTTP port could not be opened.
    #[error("{0}")]
    Http(std::io::Error),
    /// The WAL or the delivery path failed.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// What a run did, for the CLI and tests.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Engine counters at the end.
    pub engine: StatsSnapshot,
    /// One report per sink that finished within the shutdown deadline.
    pub sinks: Vec<SinkReport>,
    /// Alert delivery, when `[alerts]` is enabled.
    pub alerts: Option<AlertsReport>,
}

/// Everything `run` needs besides the config.
pub struct Runtime {
    /// Counters shared with whoever watches the service.
    pub metrics: Arc<IngestMetrics>,
    /// Cancelled to stop the service.
    pub shutdown: CancellationToken,
    /// The HTTP hub to feed with the records (the demo serves it itself and
    /// keeps it after the run); `None`: the service makes one when `[http]`
    /// is enabled.
    pub http: Option<Arc<crate::http::Hub>>,
}

/// A customers file and the engine specs built from it.
pub type LoadedCustomers = (CustomersFile, HashMap<String, CustomerSpec>);

/// Loads the customers file the service config points to, if any, checked
/// against the engine's windows and feature catalog.
pub fn load_customers(
    config: &ServiceConfig,
    engine: &fleetpulse_engine::EngineConfig,
) -> Result<Option<LoadedCustomers>, ConfigError> {
    let Some(customers) = &config.customers else {
        return Ok(None);
    };
    let path = &customers.file;
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let file: CustomersFile = crate::config::parse_toml(path, &text)?;
    let context = CheckContext {
        windows: engine.windows.iter().map(|w| w.name.to_string()).collect(),
        features: engine.features.clone(),
    };
    let specs = file.specs(path, &text, &context)?;
    Ok(Some((file, specs)))
}

/// Runs the service until `runtime.shutdown` is cancelled, then drains.
pub async fn run(
    mut config: ServiceConfig,
    config_path: &Path,
    runtime: Runtime,
) -> Result<RunReport, ServiceError> {
    config.check_cluster(config_path)?;
    config.apply_cluster_member();
    let mut engine_config = config.engine_config(config_path)?;
    let customers = load_customers(&config, &engine_config)?;
    if let Some((_, specs)) = &customers {
        engine_config.customers = specs.clone();
    }
    let customers = customers.map(|(file, _)| file);
    let metrics = runtime.metrics;
    let tasks = TaskTracker::new();
    let deadline = config.shutdown_timeout;

    // The WAL first: a second process on the same directory must fail
    // before it opens anything else.
    let wal = config.wal.as_ref().map(replay::open).transpose()?;

    // Sinks next: a store that cannot be reached should fail the start.
    let (mut outputs, mut written, mut sink_tasks) = (Vec::new(), Vec::new(), Vec::new());
    for sink_config in &config.sinks {
        let sink = Sink::open(sink_config).await?;
        tracing::info!(sink = %sink.describe(), "sink open");
        let (tx, rx) = mpsc::channel::<Arc<[Output]>>(64);
        let done = Arc::new(AtomicU64::new(0));
        outputs.push(tx);
        written.push(done.clone());
        let settings = SinkSettings::for_config(sink_config);
        sink_tasks.push(tasks.spawn(run_sink_counted(sink, rx, settings, done, metrics.clone())));
    }
    let alerts_task = if config.alerts.enabled() {
        let alerts = Alerts::for_service(&config)?;
        let (tx, rx) = mpsc::channel::<Arc<[Output]>>(64);
        let done = Arc::new(AtomicU64::new(0));
        outputs.push(tx);
        written.push(done.clone());
        Some(tasks.spawn(alerts.run(rx, runtime.shutdown.clone(), done)))
    } else {
        None
    };

    let (events_tx, events_rx) = mpsc::channel(256);
    let cluster = (config.cluster.as_ref())
        .filter(|c| c.is_multi_process())
        .map(|c| Cluster {
            process: c.process,
            addresses: c.addresses.clone(),
        });
    let options = EngineOptions {
        workers: config.engine.workers,
        cluster: cluster.clone(),
        ..EngineOptions::default()
    };
    if let Some(cluster) = &cluster {
        tracing::info!(
            process = cluster.process,
            processes = cluster.addresses.len(),
            listen = %cluster.addresses[cluster.process],
            "joining the timely cluster (waits for every member)"
        );
    }
    let mut engine = {
        let (engine_config, options) = (engine_config.clone(), options.clone());
        tokio::task::spawn_blocking(move || Engine::start(engine_config, &options, events_tx))
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))??
    };
    let stats = engine.stats();
    tracing::info!(workers = options.workers, "engine started");
    let http = crate::http::attach(
        &config,
        runtime.http.clone(),
        &metrics,
        &engine_config,
        stats.clone(),
        &mut outputs,
    )
    .await
    .map_err(ServiceError::Http)?;

    let known = (customers.as_ref())
        .map(|c| c.customers.iter().map(|c| c.id.clone()).collect::<HashSet<_>>());
    let lateness = config.engine.allowed_lateness.as_millis() as u64;
    let mut admission = Admission::new(config.limits(), known, engine_config.features.clone(), lateness)
        .with_bounds(Bounds {
            max_future_ms: config.limits.max_future.as_millis() as u64,
            max_devices_per_customer: config.limits.max_devices_per_customer,
        })
        .with_earliest(crate::admission::Earliest::from_config(&config.limits, customers.as_ref()));

    // Windows (and a device's previous reading) a restart must be able to
    // recompute: two of the longest window, two hours of time-zone slack,
    // and the lateness.
    let longest = engine_config.windows.iter().map(|w| w.length_ms).max().unwrap_or(0);
    let retention_ms = 2 * longest + 2 * 3_600_000 + lateness;
    let (stored, first) = wal.as_ref().map_or((Checkpoint::default(), Lsn::FIRST), |(w, c)| (*c, w.first_lsn()));
    let ledger = Arc::new(Mutex::new(Ledger::new(options.workers, stored, first, retention_ms)));
    let (cut_tx, cut_rx) = watch::channel(first);
    let fan_out = FanOut {
        sinks: outputs,
        written,
        ledger: ledger.clone(),
        wal_dir: config.wal.as_ref().map(|w| w.dir.clone()),
        cut: cut_tx,
        metrics: metrics.clone(),
    };
    let fan_out = tasks.spawn(fan_out.run(events_rx));
    let writer = match wal {
        Some((wal, _)) => {
            let replayed = replay::replay(&wal, &mut admission, &mut engine, &ledger, &metrics).await?;
            tracing::info!(replayed, "WAL replayed");
            let writer = Arc::new(WalWriter::spawn_with_gauges(wal, 4096, 1024, metrics.wal.clone()));
            tasks.spawn(delivery::cut_wal(writer.clone(), cut_rx));
            Some(writer)
        }
        None => None,
    };

    let (messages_tx, messages) = mpsc::channel(config.mqtt.queue.max(1));
    let intake_stop = CancellationToken::new();
    let (acks, source_acks) = match &writer {
        Some(_) => {
            let (tx, rx) = mpsc::channel(config.mqtt.queue.max(1));
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let source = tasks.spawn(source::mqtt::run(
        config.mqtt.clone(),
        messages_tx,
        source_acks,
        metrics.clone(),
        intake_stop.clone(),
    ));
    let dead_letters = (config.limits.dead_letter_file.as_ref())
        .map(|path| DeadLetterStore::open(path, DeadLetterOptions::default()))
        .transpose()
        .map_err(|e| ServiceError::Task(format!("dead-letter file: {e}")))?;
    let lane = Lane {
        admission,
        engine,
        wal: writer,
        ledger,
        dead_letters,
        metrics: metrics.clone(),
        acks,
        idle_after: config.engine.idle_after,
    };
    let mut lane = tasks.spawn(lane.run(messages, intake_stop.clone(), deadline));
    tasks.close();

    // Runs until asked to stop, or until intake fails.
    let ended = tokio::select! {
        _ = runtime.shutdown.cancelled() => None,
        result = &mut lane => Some(result),
    };
    tracing::info!("stopping: intake");
    let stop_by = tokio::time::Instant::now() + deadline;
    intake_stop.cancel();
    if let Some(http) = &http {
        http.intake_stopped();
    }
    join(source).await??;
    let ended = match ended {
        Some(result) => result,
        None => lane.await,
    };
    let engine = ended.map_err(|e| ServiceError::Task(e.to_string()))??;
    tracing::info!("stopping: draining engine");
    let drained = async {
        tokio::task::spawn_blocking(move || engine.finish())
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))??;
        join(fan_out).await
    };
    let mut report = RunReport::default();
    match tokio::time::timeout_at(stop_by, drained).await {
        Ok(result) => result?,
        Err(_) => late("the engine is still handing records to a sink"),
    }
    report.engine = stats.snapshot();
    tracing::info!("stopping: flushing sinks");
    for task in sink_tasks {
        match tokio::time::timeout_at(stop_by, task).await {
            Ok(result) => report.sinks.push(result.map_err(|e| ServiceError::Task(e.to_string()))?),
            Err(_) => late("a sink is still writing"),
        }
    }
    if let Some(task) = alerts_task {
        match tokio::time::timeout_at(stop_by, task).await {
            Ok(result) => report.alerts = Some(result.map_err(|e| ServiceError::Task(e.to_string()))?),
            Err(_) => late("alerts are still being delivered"),
        }
    }
    if let Some(http) = http {
        http.finish().await;
    }
    tracing::info!(
        received = metrics.received(),
        accepted = metrics.messages_accepted.load(Relaxed),
        rejected = metrics.rejected_total(),
        duplicates = report.engine.duplicates,
        records = metrics.records_emitted.load(Relaxed),
        "stopped"
    );
    Ok(report)
}

/// The stop took longer than `shutdown_timeout`: what is not written stays
/// in the WAL (the checkpoint did not pass it) and is written after the next
/// start.
fn late(what: &str) {
    tracing::warn!("shutdown deadline reached: {what}; the rest stays in the WAL");
}

async fn join<T>(task: tokio::task::JoinHandle<T>) -> Result<T, ServiceError> {
    task.await.map_err(|e| ServiceError::Task(e.to_string()))
}
