//! The parts the service wires together, each opened from the config.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use fleetpulse_engine::{
    Cluster, CustomerSpec, Engine, EngineConfig, EngineError, EngineEvent, EngineOptions,
    EventTime, Output, StatsSnapshot,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Bounds, DeviceCounts, Earliest};
use crate::alerts::{AlertsError, AlertsReport};
use crate::config::{ConfigError, ServiceConfig};
use crate::customers::{CheckContext, CustomersFile};
use crate::delivery::DeliveryError;
use crate::delivery::ledger::Ledger;
use crate::metrics::IngestMetrics;
use crate::sinks::SinkError;
use crate::sinks::writer::{SinkReport, SinkSettings, run_sink_counted};
use crate::source;

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
    /// An AEMP source could not start.
    #[error(transparent)]
    Aemp(#[from] source::aemp::AempSetupError),
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
    /// Stopped to start again in the same process: the customers file
    /// added, removed or moved customers to another time zone, which
    /// admission, the engine and the view take in only at a start.
    pub restart: bool,
    /// The customers the file added, when it did.
    pub added: Vec<String>,
    /// The display names of the customers this start served, by id: the
    /// next start in place names a customer the file took out by them.
    pub names: HashMap<String, String>,
    /// At a start in place: the HTTP hub and server, for the next run.
    pub http: Option<crate::http::Kept>,
    /// A start in place: a store that does not answer is waited for.
    pub in_place: bool,
}

/// How often a store that does not answer at a start in place is asked
/// again.
pub(crate) const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens a sink. At a start in place (`in_place`) the store answered at
/// the first start, so one that does not answer now is down for a while:
/// it is asked again every [`STORE_RETRY`] until it answers or the
/// service stops, instead of ending the process. Nothing is taken in
/// meanwhile: the broker keeps the telemetry, the WAL what was durable.
async fn open_sink(
    config: &crate::sinks::SinkConfig,
    in_place: bool,
    shutdown: &CancellationToken,
    metrics: &IngestMetrics,
) -> Result<crate::sinks::Sink, ServiceError> {
    let awaited =
        |waiting: bool| (metrics.store_awaited).swap(waiting, std::sync::atomic::Ordering::Relaxed);
    loop {
        match crate::sinks::Sink::open(config).await {
            Ok(sink) => {
                if awaited(false) {
                    tracing::info!("the store answers again: the start in place goes on");
                }
                return Ok(sink);
            }
            Err(e) if in_place && !shutdown.is_cancelled() => {
                awaited(true);
                tracing::warn!(
                    error = %e,
                    "a store does not answer at the start in place; asking again in {} s (nothing is taken in meanwhile)",
                    STORE_RETRY.as_secs()
                );
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        awaited(false);
                        return Err(e.into());
                    }
                    _ = tokio::time::sleep(STORE_RETRY) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Everything `run` needs besides the config.
pub struct Runtime {
    /// Counters shared with whoever watches the service.
    pub metrics: Arc<IngestMetrics>,
    /// Cancelled to stop the service.
    pub shutdown: CancellationToken,
    /// The HTTP hub to feed with the records (the demo serves it itself and
    /// keeps it after the run; a start in place keeps the previous run's
    /// and its server); `None`: the service makes one when `[http]` is
    /// enabled.
    pub http: Option<crate::http::Kept>,
    /// A start in place: a store that does not answer is waited for.
    pub in_place: bool,
    /// The display names the previous start knew ([`RunReport::names`]);
    /// empty at the first.
    pub names: HashMap<String, String>,
}

impl Runtime {
    /// Fresh counters and shutdown token, feeding `http` if given.
    pub fn new(http: Option<Arc<crate::http::Hub>>) -> Self {
        Self {
            metrics: Arc::default(),
            shutdown: CancellationToken::new(),
            http: http.map(|hub| crate::http::Kept { hub, server: None }),
            in_place: false,
            names: HashMap::new(),
        }
    }
}

/// A customers file, the engine specs built from it, and its customers'
/// contract events.
pub type LoadedCustomers = (
    CustomersFile,
    HashMap<String, CustomerSpec>,
    crate::contracts::ContractBook,
);

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
    let book = file.contract_book(path, &text)?;
    Ok(Some((file, specs, book)))
}

/// Starts the engine (joining the cluster when configured, which waits for
/// every member); returns it with its number of workers.
pub async fn start_engine(
    config: &ServiceConfig,
    engine_config: &EngineConfig,
    events: mpsc::Sender<EngineEvent>,
) -> Result<(Engine, usize), ServiceError> {
    let cluster = (config.cluster.as_ref())
        .filter(|c| c.is_multi_process())
        .map(|c| Cluster {
            process: c.process,
            addresses: c.addresses.clone(),
        });
    if let Some(cluster) = &cluster {
        tracing::info!(
            process = cluster.process,
            processes = cluster.addresses.len(),
            listen = %cluster.addresses[cluster.process],
            "joining the timely cluster (waits for every member)"
        );
    }
    let options = EngineOptions {
        workers: config.engine.workers,
        cluster,
        ..EngineOptions::default()
    };
    let workers = options.workers;
    let engine_config = engine_config.clone();
    let engine =
        tokio::task::spawn_blocking(move || Engine::start(engine_config, &options, events))
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))??;
    Ok((engine, workers))
}

/// Admission as the config and the customers file set it up, for one
/// intake lane; `devices`: the device counts every lane shares.
pub fn admission(
    config: &ServiceConfig,
    engine_config: &EngineConfig,
    customers: Option<&CustomersFile>,
    devices: &DeviceCounts,
    pseudonyms: Option<&Arc<crate::privacy::Pseudonyms>>,
    corrections: Option<(u64, &Arc<crate::corrections::Reach>)>,
) -> Admission {
    let (horizon_ms, reach) =
        corrections.map_or((0, Default::default()), |(h, reach)| (h, reach.clone()));
    let known = customers.map(|c| {
        c.customers
            .iter()
            .map(|c| c.id.clone())
            .collect::<HashSet<_>>()
    });
    Admission::new(
        config.limits(),
        known,
        engine_config.features.clone(),
        config.engine.allowed_lateness.as_millis() as u64,
    )
    .with_bounds(Bounds {
        max_future_ms: config.limits.max_future.as_millis() as u64,
        max_devices_per_customer: config.limits.max_devices_per_customer,
    })
    .with_earliest(Earliest::from_config(&config.limits, customers))
    .with_device_counts(devices.clone())
    .with_pseudonyms(pseudonyms.cloned())
    .with_correction_horizon(horizon_ms, reach)
}

/// The corrections handle, where its restated records arrive, its thread.
pub type CorrectionsParts = (
    Arc<crate::corrections::Reach>,
    crate::corrections::Corrections,
    mpsc::Receiver<crate::corrections::Restated>,
    std::thread::JoinHandle<()>,
);

/// The corrections thread and its archive (`{wal.dir}/archive`), when late
/// data within `engine.correction_horizon` restates windows: it needs the
/// WAL directory and one process (a cluster member's archive would hold its
/// own lanes' batches only, so late data is refused there, as before).
pub fn corrections(
    config: &ServiceConfig,
    checkpoint: EventTime,
    layout: Option<&crate::delivery::rescale::Layout>,
    engine_config: &EngineConfig,
    metrics: &Arc<IngestMetrics>,
) -> Result<Option<CorrectionsParts>, ServiceError> {
    let horizon = config.engine.correction_horizon;
    if horizon.is_zero() {
        // An archive of runs with a horizon misses this run's batches.
        if let Some(wal) = &config.wal {
            let dir = wal.dir.join("archive");
            let lapsed =
                crate::corrections::lapse(&dir).map_err(|e| ServiceError::Task(e.to_string()))?;
            if lapsed {
                tracing::warn!(
                    dir = %dir.display(),
                    "engine.correction_horizon is 0: the archive is not kept up; with a horizon again, late data and recomputes reach back to that start only"
                );
            }
        }
        return Ok(None);
    }
    let Some(wal) = &config.wal else {
        tracing::info!(
            "no [wal]: late data is refused (engine.correction_horizon needs the WAL directory for its archive)"
        );
        return Ok(None);
    };
    if (config.cluster.as_ref()).is_some_and(|c| c.is_multi_process()) {
        // A single process's archive misses what the cluster takes in: once
        // it runs alone again, it starts a new one.
        if let Some(layout) = layout.filter(|l| l.process == 0) {
            let stale = layout.base.join("archive");
            if stale.exists() {
                std::fs::remove_dir_all(&stale)
                    .map_err(|e| ServiceError::Task(format!("{}: {e}", stale.display())))?;
                tracing::info!(dir = %stale.display(), "archive removed: the cluster does not keep it up");
            }
        }
        tracing::warn!(
            "late data is refused in a cluster of several processes: engine.correction_horizon \
             restates windows in one process only (docs/KPIS.md, Late data)"
        );
        return Ok(None);
    }
    let settings = crate::corrections::Settings {
        dir: wal.dir.join("archive"),
        horizon_ms: horizon.as_millis() as u64,
        lateness_ms: config.engine.allowed_lateness.as_millis() as u64,
        engine: Arc::new(engine_config.clone()),
        reach: Default::default(),
        replayed_from: checkpoint,
    };
    // Restatement passes on their way to the fan-out: a pass may hold a
    // part of a month's windows, and at the stop they come one after
    // another as fast as they are read.
    let (tx, rx) = mpsc::channel(2);
    let reach = settings.reach.clone();
    let (corrections, thread) =
        crate::corrections::Corrections::start(settings, tx, metrics.clone())
            .map_err(|e| ServiceError::Task(e.to_string()))?;
    Ok(Some((reach, corrections, rx, thread)))
}

/// Where this process's state lives among the cluster members' (`None`
/// without a WAL). Call it before the config is made a member's.
pub fn layout(config: &ServiceConfig) -> Option<crate::delivery::rescale::Layout> {
    let wal = config.wal.as_ref()?;
    let member = (config.cluster.as_ref()).filter(|c| c.is_multi_process());
    Some(crate::delivery::rescale::Layout {
        base: wal.dir.clone(),
        processes: member.map_or(1, |c| c.addresses.len()),
        process: member.map_or(0, |c| c.process),
        client_id: config.mqtt.client_id.clone(),
        outbox: config.alerts.outbox_dir.clone(),
    })
}

/// Restores what the WAL directories keep of the engine's state: journeys
/// (persisted with each checkpoint, each customer's newest over every
/// member's directory, so a rescaled cluster finds them wherever they were)
/// and device memories, so a restart does not forget a customer's history
/// or a silent device's counters. Device snapshots are taken by single
/// processes only: cluster members snapshot apart, which a later version
/// must line up. Returns the journey states restored.
pub fn restore_state(
    config: &ServiceConfig,
    layout: Option<&crate::delivery::rescale::Layout>,
    engine_config: &mut fleetpulse_engine::EngineConfig,
    names: &HashMap<String, String>,
) -> Result<
    (
        HashMap<fleetpulse_engine::Id, fleetpulse_engine::JourneyState>,
        crate::delivery::Untracked,
    ),
    ServiceError,
> {
    let (Some(wal), Some(layout)) = (&config.wal, layout) else {
        return Ok(Default::default());
    };
    let restored = layout.journeys().map_err(DeliveryError::Wal)?;
    if !restored.is_empty() {
        tracing::info!(customers = restored.len(), "journey states restored");
    }
    let alone = (config.cluster.as_ref()).is_none_or(|c| !c.is_multi_process());
    let archive = wal.dir.join("archive");
    let keeps_archive = alone && !config.engine.correction_horizon.is_zero();
    let untracked = if alone {
        let archive = keeps_archive.then_some(archive.as_path());
        // Cluster members' directories (this start's, or a take-over's) say
        // how far each one's journey states go; alone, the newest state is
        // the reference, as ever.
        let cover = match layout.state_dirs().len() {
            1 => None,
            _ => layout.journeys_cover().map_err(DeliveryError::Wal)?,
        };
        crate::delivery::Untracked::of(&restored, &engine_config.customers, names, archive, cover)
            .map_err(|e| ServiceError::Task(e.to_string()))?
    } else {
        Default::default()
    };
    if !untracked.resolutions.is_empty() {
        tracing::info!(
            alerts = untracked.resolutions.len(),
            "customers taken out of the customers file: their open alerts resolve"
        );
    }
    if !untracked.returning.is_empty() {
        tracing::info!(
            customers = ?untracked.returning,
            "customers back in the customers file after days out of it: their journeys go on \
             from their last day, and the days they were out are written"
        );
    }
    for (customer, state) in &restored {
        let (Some(spec), Some(end)) =
            (engine_config.customers.get(&**customer), state.last_day_end)
        else {
            continue;
        };
        if let Some((start, first_end)) = moved_zone(&spec.timezone, end) {
            tracing::warn!(
                customer = %customer,
                timezone = %spec.timezone.iana_name().unwrap_or(""),
                last_day_end = end,
                first_day = %format!("{start}..{first_end}"),
                "the customer's time zone changed since its last closed day (which did not end at a \
                 midnight of this zone): its first day after this restart starts before that end, \
                 so the hours between count in both days (docs/KPIS.md, time zones)"
            );
        }
    }
    // A stop leaves the open days to the next start, which replays their
    // readings from the WAL.
    let board =
        fleetpulse_engine::JourneyBoard::persisted(restored.clone()).stopping_keeps_days_open();
    let sent = sent_unsettled(
        config,
        &wal.dir,
        &layout.state_dirs(),
        &restored,
        engine_config,
    )?;
    // Each day's state goes to the archive, for restatements to start from;
    // the provisional alerts it knows were sent and whose close the stores
    // may lack go to the operators.
    let board = if keeps_archive {
        let unsettled = crate::corrections::unsettled_alerts(&archive, |a| closed(&restored, a))
            .map_err(|e| ServiceError::Task(e.to_string()))?;
        if !unsettled.is_empty() {
            tracing::info!(alerts = unsettled.len(), "provisional alerts to settle");
        }
        board
            .keeping_days()
            .unsettled(noted_unsettled(unsettled, &sent))
    } else {
        if !sent.is_empty() {
            tracing::info!(alerts = sent.len(), "provisional alerts to settle");
        }
        board.unsettled(sent)
    };
    engine_config.journeys = Arc::new(board);
    if config
        .cluster
        .as_ref()
        .is_some_and(|c| c.is_multi_process())
    {
        return Ok((restored, untracked));
    }
    if let Some(snapshot) = crate::delivery::devices::load(&wal.dir).map_err(DeliveryError::Wal)? {
        tracing::info!(
            devices = snapshot.devices.len(),
            at = snapshot.at,
            "device memories restored"
        );
        engine_config.devices = Arc::new(fleetpulse_engine::DeviceBoard::restoring(snapshot));
    }
    Ok((restored, untracked))
}

/// Each customer's display name, by id ([`RunReport::names`]).
pub fn display_names(engine_config: &fleetpulse_engine::EngineConfig) -> HashMap<String, String> {
    (engine_config.customers.iter())
        .map(|(id, spec)| (id.clone(), spec.name.to_string()))
        .collect()
}

/// The provisional alerts noted beside the WAL (`delivery::provisional`)
/// in any of `dirs` (every member's: a customer may have moved since),
/// whose day's close the customer's restored journey state does not hold
/// (it holds the last day every store holds), of this process's customers;
/// its own file keeps only those from now on.
fn sent_unsettled(
    config: &ServiceConfig,
    own: &std::path::Path,
    dirs: &[std::path::PathBuf],
    restored: &HashMap<fleetpulse_engine::Id, fleetpulse_engine::JourneyState>,
    engine_config: &fleetpulse_engine::EngineConfig,
) -> Result<Vec<fleetpulse_engine::AlertRecord>, ServiceError> {
    use crate::delivery::provisional::{Sent, path};
    let mut sent = Sent::load(own);
    let mut changed = false;
    for dir in dirs.iter().filter(|dir| *dir != own) {
        let theirs = Sent::load(dir);
        let theirs: Vec<Output> = theirs.alerts().iter().cloned().map(Output::Alert).collect();
        changed |= sent.note(&theirs);
    }
    let member = (config.cluster.as_ref())
        .filter(|c| c.is_multi_process())
        .map(|c| {
            crate::http::seed::Share::of_member(c.process, c.addresses.len(), config.engine.workers)
        });
    let unsettled = |a: &fleetpulse_engine::AlertRecord| {
        !closed(restored, a)
            && engine_config.customers.contains_key(&*a.customer)
            && member.as_ref().is_none_or(|m| m.owns(&a.customer))
    };
    changed |= sent.retain(unsettled);
    if changed {
        let file = path(own);
        (sent.store()).map_err(|e| DeliveryError::Wal(format!("{}: {e}", file.display())))?;
    }
    Ok(sent.alerts().to_vec())
}

/// Whether the journey `restored` holds of `alert`'s customer closed the
/// day that dates it: the stores hold that close.
fn closed(
    restored: &HashMap<fleetpulse_engine::Id, fleetpulse_engine::JourneyState>,
    alert: &fleetpulse_engine::AlertRecord,
) -> bool {
    (restored.get(&alert.customer))
        .and_then(|state| state.last_day_end)
        .is_some_and(|end| end >= alert.opened_at)
}

/// The archive's unsettled provisional alerts and those noted beside the
/// WAL by a run without it, each once.
fn noted_unsettled(
    mut archived: Vec<fleetpulse_engine::AlertRecord>,
    noted: &[fleetpulse_engine::AlertRecord],
) -> Vec<fleetpulse_engine::AlertRecord> {
    use crate::delivery::provisional::same_episode;
    for a in noted {
        if !archived.iter().any(|b| same_episode(a, b)) {
            archived.push(a.clone());
        }
    }
    archived
}

/// The device snapshot schedule, when the service snapshots device memories
/// (a WAL, one process); the WAL is then cut only behind the restored
/// snapshot (nothing before the first one is promoted).
pub fn device_snapshots(
    config: &ServiceConfig,
    engine_config: &fleetpulse_engine::EngineConfig,
    retention_ms: u64,
    ledger: &mut Ledger,
) -> Result<Option<crate::delivery::devices::Schedule>, ServiceError> {
    let Some(wal) = &config.wal else {
        return Ok(None);
    };
    if config
        .cluster
        .as_ref()
        .is_some_and(|c| c.is_multi_process())
    {
        return Ok(None);
    }
    let _ = ledger.follow_snapshot(engine_config.devices.restored_at());
    let pending = crate::delivery::devices::pending(&wal.dir)
        .map_err(|e| DeliveryError::Wal(format!("{}: {e}", wal.dir.display())))?;
    Ok(Some(crate::delivery::devices::Schedule::new(
        wal.snapshot_every,
        retention_ms,
        pending,
    )))
}

/// The day of `zone` holding `last_day_end` (a restored journey's end of its
/// last closed day) when that end is not one of its midnights: the
/// customer's time zone changed since, and its first day after the restart
/// overlaps the last closed one. `None` when the days line up.
fn moved_zone(
    zone: &jiff::tz::TimeZone,
    last_day_end: EventTime,
) -> Option<(EventTime, EventTime)> {
    let (start, end) = fleetpulse_engine::config::local_day(zone, last_day_end)?;
    (start != last_day_end).then_some((start, end))
}

/// Logs how far back a store keeps: a warning when that is less than the
/// correction horizon, since windows restated before then are not kept
/// there (VictoriaMetrics drops them without an error).
fn say_retention(
    store: &crate::sinks::SinkConfig,
    kept: &crate::sinks::retention::Retention,
    horizon: std::time::Duration,
) {
    use crate::sinks::retention::Retention;
    let sink = store.describe();
    match kept {
        Retention::For { period, .. } if *period < horizon => tracing::warn!(
            %sink, retention = %kept, ?horizon,
            "the store keeps less than the correction horizon: windows restated from before its retention are not kept there"
        ),
        Retention::Unknown(_) => tracing::debug!(%sink, retention = %kept, "store retention"),
        _ => tracing::info!(%sink, retention = %kept, "store retention"),
    }
}

/// Where the engine's records go besides the view: the sinks and the
/// alerts, each with its channel, its count of batches written (the
/// checkpoint's) and its task.
pub struct Receivers {
    pub outputs: Vec<mpsc::Sender<Arc<[Output]>>>,
    pub written: Vec<Arc<AtomicU64>>,
    pub sinks: Vec<tokio::task::JoinHandle<SinkReport>>,
    pub alerts: Option<tokio::task::JoinHandle<AlertsReport>>,
}

impl Receivers {
    /// Opens every sink (one that cannot be reached fails the start), takes
    /// over the alerts a removed cluster member had not delivered, and
    /// starts the alerts task when `[alerts]` is on.
    pub async fn open(
        config: &ServiceConfig,
        layout: Option<&crate::delivery::rescale::Layout>,
        tasks: &tokio_util::task::TaskTracker,
        metrics: &Arc<IngestMetrics>,
        (shutdown, in_place): (&CancellationToken, bool),
    ) -> Result<Self, ServiceError> {
        let mut receivers = Self {
            outputs: Vec::new(),
            written: Vec::new(),
            sinks: Vec::new(),
            alerts: None,
        };
        for sink_config in &config.sinks {
            let sink = open_sink(sink_config, in_place, shutdown, metrics).await?;
            tracing::info!(sink = %sink.describe(), "sink open");
            let (store, stop) = (sink_config.clone(), shutdown.clone());
            let horizon = config.engine.correction_horizon;
            tasks.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    kept = crate::sinks::retention::of(&store) => say_retention(&store, &kept, horizon),
                }
            });
            let (rx, done) = receivers.channel();
            let settings = SinkSettings::for_config(sink_config);
            let task = run_sink_counted(sink, rx, settings, done, metrics.clone());
            receivers.sinks.push(tasks.spawn(task));
        }
        // Alerts a removed member had not delivered, into this process's
        // outbox before the alerts task opens it.
        let own_outbox = (config.alerts).outbox_dir(config.wal.as_ref().map(|w| w.dir.as_path()));
        if let (Some(layout), Some(own)) = (layout, &own_outbox) {
            let moved = crate::delivery::rescale::take_over_outboxes(layout, own)?;
            if moved > 0 {
                tracing::info!(alerts = moved, "took over removed members' pending alerts");
            }
        }
        if config.alerts.enabled() {
            let alerts = crate::alerts::Alerts::for_service(config)?;
            let (rx, done) = receivers.channel();
            receivers.alerts = Some(tasks.spawn(alerts.run(rx, shutdown.clone(), done)));
        }
        Ok(receivers)
    }

    /// One more receiver: its end of the channel and its written count.
    fn channel(&mut self) -> (mpsc::Receiver<Arc<[Output]>>, Arc<AtomicU64>) {
        let (tx, rx) = mpsc::channel(64);
        let done = Arc::new(AtomicU64::new(0));
        self.outputs.push(tx);
        self.written.push(done.clone());
        (rx, done)
    }
}

/// How far back the WAL keeps what a restart must be able to recompute
/// (windows and a device's previous reading): two of the longest window,
/// two hours of time-zone slack, and the allowed lateness.
pub fn retention_ms(config: &ServiceConfig, engine_config: &EngineConfig) -> u64 {
    let longest = (engine_config.windows.iter())
        .map(|w| w.length_ms)
        .max()
        .unwrap_or(0);
    2 * longest + 2 * 3_600_000 + config.engine.allowed_lateness.as_millis() as u64
}

/// The operator pseudonyms, keyed from the environment (`[privacy]`); a
/// key that is set but unusable fails the start, naming the section.
pub fn pseudonyms(
    config: &ServiceConfig,
    config_path: &std::path::Path,
) -> Result<Option<Arc<crate::privacy::Pseudonyms>>, ServiceError> {
    let invalid = |message| ConfigError::Invalid {
        path: config_path.to_owned(),
        field: "privacy".into(),
        message,
    };
    Ok(config.privacy.pseudonyms().map_err(invalid)?)
}

/// The AEMP pollers of `[[aemp]]`. In a cluster only process 0 polls: each
/// member has its own WAL and position, so two pollers would count every
/// reading twice.
pub fn pollers(
    config: &ServiceConfig,
    customers: Option<&CustomersFile>,
    metrics: &IngestMetrics,
) -> Result<Vec<source::aemp::Poller>, ServiceError> {
    let polls = (config.cluster.as_ref()).is_none_or(|c| !c.is_multi_process() || c.process == 0);
    if !polls && !config.aemp.is_empty() {
        tracing::info!("AEMP sources are polled by process 0 of the cluster");
    }
    Ok(source::aemp::pollers(
        if polls { &config.aemp } else { &[] },
        customers.map_or(&[][..], |c| c.aemp_equipment.as_slice()),
        config.wal.as_ref().map(|w| w.dir.as_path()),
        config.limits.max_future.as_millis() as u64,
        config.engine.allowed_lateness,
        metrics,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A customer's last closed day ended at 00:00 UTC on 11 March 2026
    /// (its file had no time zone); the file now says New York, whose 10
    /// March runs from 04:00 UTC (EDT since the 8th) to 04:00 UTC on the
    /// 11th, or Kolkata, whose 11 March starts at 18:30 UTC on the 10th.
    /// Days that line up are no change.
    #[test]
    fn a_time_zone_changed_since_the_last_closed_day_is_found() {
        let zone = |name| jiff::tz::TimeZone::get(name).unwrap();
        let end = 1_773_187_200_000; // 2026-03-11T00:00Z
        assert_eq!(
            moved_zone(&zone("America/New_York"), end),
            Some((1_773_115_200_000, 1_773_201_600_000))
        );
        assert_eq!(
            moved_zone(&zone("Asia/Kolkata"), end),
            Some((1_773_167_400_000, 1_773_253_800_000))
        );
        assert_eq!(moved_zone(&zone("UTC"), end), None);
        assert_eq!(moved_zone(&zone("Europe/London"), end), None);
        assert_eq!(
            moved_zone(&zone("America/New_York"), 1_773_201_600_000),
            None
        );
    }
}
