//! `fleetpulse run`: the service. Wires source -> admission -> engine ->
//! sinks and stops them in order: stop intake, drain the engine (every open
//! window is emitted), flush the sinks.
//!
//! ```text
//! mqtt task --(bounded)--> pipeline loop --(bounded, per worker)--> engine workers
//!                                                                      |
//!            sink tasks <--(bounded, per sink)-- fan-out task <--(bounded)
//! ```

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use fleetpulse_engine::{
    CustomerSpec, Engine, EngineError, EngineEvent, EngineOptions, Output, StatsSnapshot,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::alerts::{Alerts, AlertsError, AlertsReport};
use crate::config::{ConfigError, ServiceConfig};
use crate::customers::{CheckContext, CustomersFile};
use crate::metrics::{IngestMetrics, MessageRejected};
use crate::sinks::writer::{SinkReport, SinkSettings, run_sink};
use crate::sinks::{Sink, SinkError};
use crate::source::{self, mqtt::Message};

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
}

/// What a run did, for the CLI and tests.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Engine counters at the end.
    pub engine: StatsSnapshot,
    /// One report per sink.
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
    config: ServiceConfig,
    config_path: &Path,
    runtime: Runtime,
) -> Result<RunReport, ServiceError> {
    let mut engine_config = config.engine_config(config_path)?;
    let customers = load_customers(&config, &engine_config)?;
    if let Some((_, specs)) = &customers {
        engine_config.customers = specs.clone();
    }
    let customers = customers.map(|(file, _)| file);
    let metrics = runtime.metrics;

    // Sinks first: a store that cannot be reached should fail the start.
    let mut sink_inputs = Vec::new();
    let mut sink_tasks = JoinSet::new();
    for sink_config in &config.sinks {
        let sink = Sink::open(sink_config).await?;
        tracing::info!(sink = %sink.describe(), "sink open");
        let (tx, rx) = mpsc::channel::<Arc<[Output]>>(64);
        sink_inputs.push(tx);
        let settings = SinkSettings::for_config(sink_config);
        match metrics.probe.get() {
            Some(probe) => sink_tasks.spawn(crate::bench::probe::run_probed_sink(
                sink,
                rx,
                settings,
                probe.clone(),
            )),
            None => sink_tasks.spawn(run_sink(sink, rx, settings)),
        };
    }
    // Alerts: one more receiver of the fan-out, when they go anywhere.
    let alerts_task = if config.alerts.enabled() {
        let alerts = Alerts::new(&config.alerts, &config.mqtt)?;
        let (tx, rx) = mpsc::channel::<Arc<[Output]>>(64);
        sink_inputs.push(tx);
        Some(tokio::spawn(alerts.run(rx, runtime.shutdown.clone())))
    } else {
        None
    };

    let (events_tx, events_rx) = mpsc::channel(256);
    let options = EngineOptions {
        workers: config.engine.workers,
        ..EngineOptions::default()
    };
    let mut engine = Engine::start(engine_config.clone(), &options, events_tx)?;
    let stats = engine.stats();
    tracing::info!(workers = options.workers, "engine started");
    let fan_out = tokio::spawn(fan_out(events_rx, sink_inputs, metrics.clone()));

    let (messages_tx, mut messages) = mpsc::channel::<Message>(config.mqtt.queue.max(1));
    let intake_stop = CancellationToken::new();
    let source_task = tokio::spawn(source::mqtt::run(
        config.mqtt.clone(),
        messages_tx,
        metrics.clone(),
        intake_stop.clone(),
    ));

    let known = customers.as_ref().map(|c| {
        c.customers
            .iter()
            .map(|c| c.id.clone())
            .collect::<HashSet<_>>()
    });
    let mut admission = Admission::new(
        config.limits(),
        known,
        engine_config.features.clone(),
        config.engine.allowed_lateness.as_millis() as u64,
    );
    let idle_after = config.engine.idle_after;
    let mut last_message = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = runtime.shutdown.cancelled() => break,
            message = messages.recv() => {
                let Some(message) = message else { break };
                last_message = Instant::now();
                handle(&mut admission, &mut engine, &metrics, message).await?;
            }
            _ = ticker.tick() => {
                let idle = last_message.elapsed();
                if idle > idle_after {
                    admission.idle_for((idle - idle_after).as_millis() as u64);
                    engine.advance(admission.watermark().current()).await?;
                    metrics.watermark.store(admission.watermark().current(), Relaxed);
                }
            }
        }
    }

    // Ordered shutdown: stop intake, handle what was already received, drain
    // the engine, flush the sinks.
    tracing::info!("stopping: intake");
    intake_stop.cancel();
    join(source_task).await??;
    while let Ok(message) = messages.try_recv() {
        handle(&mut admission, &mut engine, &metrics, message).await?;
    }
    tracing::info!("stopping: draining engine");
    tokio::task::spawn_blocking(move || engine.finish())
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))??;
    join(fan_out).await?;
    tracing::info!("stopping: flushing sinks");
    let mut report = RunReport {
        engine: stats.snapshot(),
        sinks: Vec::new(),
        alerts: None,
    };
    while let Some(result) = sink_tasks.join_next().await {
        report
            .sinks
            .push(result.map_err(|e| ServiceError::Task(e.to_string()))?);
    }
    if let Some(task) = alerts_task {
        report.alerts = Some(join(task).await?);
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

async fn handle(
    admission: &mut Admission,
    engine: &mut Engine,
    metrics: &IngestMetrics,
    message: Message,
) -> Result<(), ServiceError> {
    match admission.admit(&message.topic, &message.payload) {
        Ok(batch) => {
            metrics.messages_accepted.fetch_add(1, Relaxed);
            metrics
                .samples_accepted
                .fetch_add(batch.samples.len() as u64, Relaxed);
            if let Some(probe) = metrics.probe.get() {
                probe.engine_input(&batch.device, batch.sequence);
            }
            engine.send(batch).await?;
            let watermark = admission.watermark().current();
            engine.advance(watermark).await?;
            metrics.watermark.store(watermark, Relaxed);
        }
        Err(rejection) => MessageRejected {
            topic: &message.topic,
            reason: rejection.reason,
            detail: &rejection.detail,
        }
        .emit(metrics),
    }
    Ok(())
}

/// Hands every closed window to every sink. A full sink queue makes this
/// wait, which makes the engine wait: backpressure, not loss.
async fn fan_out(
    mut events: mpsc::Receiver<EngineEvent>,
    sinks: Vec<mpsc::Sender<Arc<[Output]>>>,
    metrics: Arc<IngestMetrics>,
) {
    while let Some(event) = events.recv().await {
        if let EngineEvent::Records(records) = event {
            if records.is_empty() {
                continue;
            }
            metrics
                .records_emitted
                .fetch_add(records.len() as u64, Relaxed);
            if let Some(probe) = metrics.probe.get() {
                probe.records_emitted(records.len());
            }
            let records: Arc<[Output]> = records.into();
            for sink in &sinks {
                if sink.send(records.clone()).await.is_err() {
                    tracing::error!("a sink stopped; its records are not written");
                }
            }
        }
    }
}

async fn join<T>(task: tokio::task::JoinHandle<T>) -> Result<T, ServiceError> {
    task.await.map_err(|e| ServiceError::Task(e.to_string()))
}
