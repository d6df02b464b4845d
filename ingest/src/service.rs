//! `fleetpulse run`: the service. Wires source -> admission -> engine ->
//! sinks and stops them in order: stop intake, drain the engine (every open
//! window is emitted), flush the sinks.
//!
//! ```text
//! mqtt task --(bounded)--> pipeline loop --(bounded, per worker)--> engine workers
//!                                                                      |
//!            sink tasks <--(bounded, per sink)-- fan-out task <--(bounded)
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use fleetpulse_engine::{
    Cluster, CustomerSpec, Engine, EngineError, EngineEvent, EngineOptions, EventTime, Output,
    StatsSnapshot,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Bounds};
use crate::alerts::{Alerts, AlertsError, AlertsReport};
use crate::checkpoint::{self, Checkpoint, WriteProgress};
use crate::config::{ConfigError, ServiceConfig};
use crate::customers::{CheckContext, CustomersFile};
use crate::dead_letter::{DeadLetter, DeadLetterOptions, DeadLetterStore};
use crate::metrics::{IngestMetrics, MessageRejected};
use crate::sinks::writer::{SinkReport, SinkSettings, run_sink_counted};
use crate::sinks::{Sink, SinkError};
use crate::source::mqtt::AckToken;
use crate::source::{self, mqtt::Message};
use crate::wal::writer::{Durable, WalWriter};
use crate::wal::{Lsn, Wal, WalOptions, WalRecord};

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
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(String),
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

    // Sinks first: a store that cannot be reached should fail the start.
    let mut sink_inputs = Vec::new();
    let mut sink_written = Vec::new();
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
            None => {
                let written = Arc::new(AtomicU64::new(0));
                sink_written.push(written.clone());
                sink_tasks.spawn(run_sink_counted(
                    sink,
                    rx,
                    settings,
                    written,
                    metrics.clone(),
                ))
            }
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
    let cluster = config
        .cluster
        .as_ref()
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
        let engine_config = engine_config.clone();
        let options = options.clone();
        tokio::task::spawn_blocking(move || Engine::start(engine_config, &options, events_tx))
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))??
    };
    let stats = engine.stats();
    tracing::info!(
        workers = options.workers,
        processes = cluster.as_ref().map_or(1, |c| c.addresses.len()),
        "engine started"
    );
    // The API's view: one more receiver of the fan-out; and the HTTP port.
    let http = crate::http::attach(
        &config,
        runtime.http.clone(),
        &metrics,
        &engine_config,
        stats.clone(),
        &mut sink_inputs,
    )
    .await
    .map_err(ServiceError::Http)?;

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
    )
    .with_bounds(Bounds {
        max_future_ms: config.limits.max_future.as_millis() as u64,
        max_devices_per_customer: config.limits.max_devices_per_customer,
    });

    // The WAL: the checkpoint says what the stores already hold; the fan-out
    // must run before the replay, which produces records.
    let retained: Retained = Arc::new(std::sync::Mutex::new(VecDeque::new()));
    let checkpoint = match &config.wal {
        Some(w) => {
            std::fs::create_dir_all(&w.dir)
                .map_err(|e| ServiceError::Wal(format!("{}: {e}", w.dir.display())))?;
            Checkpoint::load(&w.dir).map_err(|e| {
                ServiceError::Wal(format!("{}: {e}", checkpoint::path(&w.dir).display()))
            })?
        }
        None => Checkpoint::default(),
    };
    let wal_slot: Arc<std::sync::OnceLock<Arc<WalWriter>>> = Arc::default();
    let longest_window = engine_config
        .windows
        .iter()
        .map(|w| w.length_ms)
        .max()
        .unwrap_or(0);
    let durability = Durability {
        progress: WriteProgress::new(options.workers, sink_written, checkpoint.written_before),
        suppress_before: checkpoint.written_before,
        stored: checkpoint,
        wal: wal_slot.clone(),
        wal_dir: config.wal.as_ref().map(|w| w.dir.clone()),
        retained: retained.clone(),
        // Windows (and a device's previous reading) a restart must be able
        // to recompute: two of the longest window, two hours of time-zone
        // slack, and the lateness.
        retention_ms: 2 * longest_window
            + 2 * 3_600_000
            + config.engine.allowed_lateness.as_millis() as u64,
    };
    let fan_out = tokio::spawn(fan_out(events_rx, sink_inputs, metrics.clone(), durability));
    let wal = match &config.wal {
        Some(wal_config) => {
            let writer =
                open_and_replay(wal_config, &mut admission, &mut engine, &metrics, &retained)
                    .await?;
            let writer = Arc::new(writer);
            let _ = wal_slot.set(writer.clone());
            Some(writer)
        }
        None => None,
    };

    let (messages_tx, mut messages) = mpsc::channel::<Message>(config.mqtt.queue.max(1));
    let intake_stop = CancellationToken::new();
    // With a WAL, acks go back to the source once a message is durable.
    let (acks, ack_task) = match &wal {
        Some(wal) => {
            let (to_source, from_pipeline) = mpsc::channel(config.mqtt.queue.max(1));
            let (pending_tx, pending_rx) = mpsc::channel(config.mqtt.queue.max(1));
            let task = tokio::spawn(acknowledge(pending_rx, to_source, retained.clone()));
            (Some((from_pipeline, pending_tx)), Some((task, wal.clone())))
        }
        None => (None, None),
    };
    let (source_acks, mut pending_acks) = match acks {
        Some((rx, tx)) => (Some(rx), Some(tx)),
        None => (None, None),
    };
    let source_task = tokio::spawn(source::mqtt::run(
        config.mqtt.clone(),
        messages_tx,
        source_acks,
        metrics.clone(),
        intake_stop.clone(),
    ));
    let dead_letters = config
        .limits
        .dead_letter_file
        .as_ref()
        .map(|path| DeadLetterStore::open(path, DeadLetterOptions::default()))
        .transpose()
        .map_err(|e| ServiceError::Task(format!("dead-letter file: {e}")))?;
    let mut intake = Intake {
        wal: wal.clone(),
        dead_letters,
        pending_acks: pending_acks.take(),
    };
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
                handle(&mut admission, &mut engine, &metrics, &mut intake, message).await?;
            }
            _ = ticker.tick() => {
                let idle = last_message.elapsed();
                if idle > idle_after {
                    admission.idle_for((idle - idle_after).as_millis() as u64);
                    // Idle and subscribed (no backlog waiting at the broker):
                    // follow the rest of the cluster instead of holding its
                    // windows back. With traffic, a member keeps its own
                    // watermark, so nothing it still receives is refused
                    // because another member ran ahead.
                    if metrics.subscribed.load(Relaxed) {
                        admission.follow(engine.cluster_watermark());
                    }
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
    if let Some(http) = &http {
        http.intake_stopped();
    }
    join(source_task).await??;
    while let Ok(message) = messages.try_recv() {
        handle(&mut admission, &mut engine, &metrics, &mut intake, message).await?;
    }
    drop(intake);
    if let Some((task, _)) = ack_task {
        join(task).await?;
    }
    tracing::info!("stopping: draining engine");
    tokio::task::spawn_blocking(move || engine.finish())
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))??;
    join(fan_out).await?;
    drop(wal);
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

/// Where an admitted message goes besides the engine.
struct Intake {
    wal: Option<Arc<WalWriter>>,
    /// Refused messages, kept for inspection.
    dead_letters: Option<DeadLetterStore>,
    /// (durable when this resolves, token to ack, last event time): the
    /// ack task acknowledges in order as records become durable.
    pending_acks: Option<mpsc::Sender<PendingAck>>,
}

type PendingAck = (Option<Durable>, Option<AckToken>, EventTime);

/// (WAL position, newest event time of its batch), oldest first: what the
/// checkpoint cuts the WAL by.
type Retained = Arc<std::sync::Mutex<VecDeque<(Lsn, EventTime)>>>;

async fn handle(
    admission: &mut Admission,
    engine: &mut Engine,
    metrics: &IngestMetrics,
    intake: &mut Intake,
    message: Message,
) -> Result<(), ServiceError> {
    let received_ms = wall_clock_ms();
    let admitted = admission.admit(&message.topic, &message.payload, received_ms);
    if let (Some(wal), Some(pending)) = (&intake.wal, &intake.pending_acks) {
        // Admitted messages become durable before they are acknowledged;
        // refused ones are acknowledged right away (they are counted and
        // logged, and would be refused again).
        let (durable, last_at) = match &admitted {
            Ok(batch) => {
                let record = WalRecord {
                    topic: message.topic.clone(),
                    payload: message.payload.clone(),
                    received_ms,
                };
                let durable = wal
                    .submit(record)
                    .await
                    .map_err(|e| ServiceError::Wal(e.to_string()))?;
                (Some(durable), batch.last_at())
            }
            Err(_) => (None, 0),
        };
        if pending
            .send((durable, message.ack.clone(), last_at))
            .await
            .is_err()
        {
            return Err(ServiceError::Task("the acknowledging task stopped".into()));
        }
    }
    match admitted {
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
        Err(rejection) => {
            MessageRejected {
                topic: &message.topic,
                reason: rejection.reason,
                detail: &rejection.detail,
            }
            .emit(metrics);
            if let Some(store) = &mut intake.dead_letters {
                let letter = DeadLetter {
                    topic: &message.topic,
                    reason: rejection.reason,
                    detail: &rejection.detail,
                    received_ms,
                    payload: &message.payload,
                };
                if let Err(e) = store.record(&letter).and_then(|()| store.flush()) {
                    tracing::error!(error = %e, "cannot write the dead-letter record");
                }
            }
        }
    }
    metrics
        .sequence_gaps
        .store(admission.sequence_gaps(), Relaxed);
    Ok(())
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Acknowledges messages in arrival order, each once its record is durable.
async fn acknowledge(
    mut pending: mpsc::Receiver<PendingAck>,
    to_source: mpsc::Sender<AckToken>,
    retained: Retained,
) {
    while let Some((durable, token, last_at)) = pending.recv().await {
        if let Some(durable) = durable {
            match durable.await {
                Ok(lsn) => retained
                    .lock()
                    .expect("retained list poisoned")
                    .push_back((lsn, last_at)),
                Err(e) => {
                    // Not durable: do not acknowledge; the broker redelivers.
                    tracing::error!(error = %e, "WAL write failed; message left unacknowledged");
                    continue;
                }
            }
        }
        if let Some(token) = token {
            let _ = to_source.send(token).await;
        }
    }
}

/// Opens the WAL, replays it into the engine, and starts its writer.
async fn open_and_replay(
    config: &crate::config::WalConfig,
    admission: &mut Admission,
    engine: &mut Engine,
    metrics: &IngestMetrics,
    retained: &Retained,
) -> Result<WalWriter, ServiceError> {
    let options = WalOptions {
        segment_bytes: config.segment_bytes,
        ..WalOptions::default()
    };
    let wal = Wal::open(&config.dir, options).map_err(|e| ServiceError::Wal(e.to_string()))?;
    let mut replayed = 0u64;
    let mut progress = crate::progress::Progress::new(
        "replaying",
        "WAL records",
        wal.next_lsn().0.saturating_sub(wal.first_lsn().0),
    );
    for entry in wal
        .replay(wal.first_lsn())
        .map_err(|e| ServiceError::Wal(e.to_string()))?
    {
        let (lsn, record) = entry.map_err(|e| ServiceError::Wal(e.to_string()))?;
        progress.set(lsn.0.saturating_sub(wal.first_lsn().0) + 1);
        match admission.admit(&record.topic, &record.payload, record.received_ms) {
            Ok(batch) => {
                retained
                    .lock()
                    .expect("retained list poisoned")
                    .push_back((lsn, batch.last_at()));
                engine.send(batch).await?;
                engine.advance(admission.watermark().current()).await?;
                replayed += 1;
            }
            Err(rejection) => tracing::warn!(
                %lsn, reason = rejection.reason.as_str(),
                "WAL record refused on replay: {}", rejection.detail
            ),
        }
    }
    metrics.messages_replayed.fetch_add(replayed, Relaxed);
    progress.finish(&format!("{replayed} WAL records replayed"));
    tracing::info!(dir = %config.dir.display(), replayed, "WAL replayed");
    Ok(WalWriter::spawn(wal, 4096, 1024))
}

/// What the fan-out needs to checkpoint and to skip what is already written.
struct Durability {
    progress: WriteProgress,
    /// Records before this time were written before a restart.
    suppress_before: EventTime,
    stored: Checkpoint,
    /// Set once the replay is done.
    wal: Arc<std::sync::OnceLock<Arc<WalWriter>>>,
    wal_dir: Option<std::path::PathBuf>,
    retained: Retained,
    retention_ms: u64,
}

impl Durability {
    /// Persists progress and cuts the WAL behind it.
    async fn checkpoint(&mut self) {
        let (Some(wal), Some(dir)) = (self.wal.get().cloned(), &self.wal_dir) else {
            return;
        };
        let durable = self.progress.durable();
        if durable <= self.stored.written_before {
            return;
        }
        let next = Checkpoint {
            written_before: durable,
        };
        if let Err(e) = next.store(dir) {
            tracing::error!(error = %e, "cannot write the checkpoint");
            return;
        }
        self.stored = next;
        let cutoff = durable.saturating_sub(self.retention_ms);
        let keep_from = {
            let mut retained = self.retained.lock().expect("retained list poisoned");
            while retained.front().is_some_and(|(_, at)| *at < cutoff) {
                retained.pop_front();
            }
            retained.front().map(|(lsn, _)| *lsn)
        };
        if let Some(lsn) = keep_from
            && let Err(e) = wal.truncate_before(lsn).await
        {
            tracing::error!(error = %e, "cannot cut the WAL");
        }
    }
}

/// Hands every closed window to every sink. A full sink queue makes this
/// wait, which makes the engine wait: backpressure, not loss.
async fn fan_out(
    mut events: mpsc::Receiver<EngineEvent>,
    sinks: Vec<mpsc::Sender<Arc<[Output]>>>,
    metrics: Arc<IngestMetrics>,
    mut durability: Durability,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = ticker.tick() => {
                durability.checkpoint().await;
                continue;
            }
        };
        let Some(event) = event else { break };
        if let EngineEvent::Progress { worker, frontier } = &event {
            durability.progress.frontier(*worker, *frontier);
            continue;
        }
        if let EngineEvent::Records(mut records) = event {
            // Already written before a restart: the WAL replay recomputed it.
            let before = durability.suppress_before;
            if before > 0 {
                records.retain(|r| checkpoint::record_time(r) >= before);
            }
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
            durability.progress.sent_batch();
        }
    }
}

async fn join<T>(task: tokio::task::JoinHandle<T>) -> Result<T, ServiceError> {
    task.await.map_err(|e| ServiceError::Task(e.to_string()))
}
