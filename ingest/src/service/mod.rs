//! `fleetpulse run`: the service. Wiring only: the delivery core
//! ([`crate::delivery`]) decides what is durable, acknowledged, written and
//! cut; this file opens the parts, connects them, and stops them in order
//! (stop intake, hand over what is durable, drain the engine, flush the
//! sinks) within `shutdown_timeout`.

mod parts;
mod reload;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use fleetpulse_engine::Output;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::DeviceCounts;
use crate::alerts::Alerts;
use crate::config::ServiceConfig;
use crate::dead_letter::{DeadLetterOptions, DeadLetterStore};
use crate::delivery::checkpoint::Checkpoint;
use crate::delivery::fan_out::FanOut;
use crate::delivery::intake::{self, IntakeParts};
use crate::delivery::ledger::Ledger;
use crate::delivery::{self, DeliveryError, replay, rescale};
use crate::sinks::Sink;
use crate::sinks::writer::{SinkSettings, run_sink_counted};
use crate::wal::Lsn;
use crate::wal::writer::WalWriter;

pub use parts::{LoadedCustomers, RunReport, Runtime, ServiceError, load_customers};

/// Runs the service until `runtime.shutdown` is cancelled, then drains.
pub async fn run(
    mut config: ServiceConfig,
    config_path: &Path,
    runtime: Runtime,
) -> Result<RunReport, ServiceError> {
    config.check_cluster(config_path)?;
    config.http.check(config_path)?;
    config.http.warn_if_set_but_off(config_path);
    let pseudonyms =
        config
            .privacy
            .pseudonyms()
            .map_err(|message| crate::config::ConfigError::Invalid {
                path: config_path.to_owned(),
                field: "privacy".into(),
                message,
            })?;
    let layout = parts::layout(&config);
    config.apply_cluster_member();
    let mut engine_config = config.engine_config(config_path)?;
    let customers = load_customers(&config, &engine_config)?;
    if let Some((file, specs, _)) = &customers {
        file.warn();
        engine_config.customers = specs.clone();
    }
    let (customers, contracts) = match customers {
        Some((file, _, book)) => (Some(file), Some(book)),
        None => (None, None),
    };
    let journeys = parts::restore_state(&config, layout.as_ref(), &mut engine_config)?;
    // AEMP sources next: a missing secret or a damaged position file must
    // fail the start. In a cluster only process 0 polls: each member has its
    // own WAL and position, so two pollers would count every reading twice.
    let polls = (config.cluster.as_ref()).is_none_or(|c| !c.is_multi_process() || c.process == 0);
    if !polls && !config.aemp.is_empty() {
        tracing::info!("AEMP sources are polled by process 0 of the cluster");
    }
    let pollers = crate::source::aemp::pollers(
        if polls { &config.aemp } else { &[] },
        customers
            .as_ref()
            .map_or(&[][..], |c| c.aemp_equipment.as_slice()),
        config.wal.as_ref().map(|w| w.dir.as_path()),
        config.limits.max_future.as_millis() as u64,
        config.engine.allowed_lateness,
        &runtime.metrics,
    )?;
    let metrics = runtime.metrics;
    let tasks = TaskTracker::new();
    let deadline = config.shutdown_timeout;

    // The WAL first: a second process on the same directory must fail
    // before it opens anything else.
    let mut wal = config.wal.as_ref().map(replay::open).transpose()?;
    // Every member suppresses what the least advanced member's checkpoint
    // covers: after a rescale its customers may be another's.
    if let (Some((_, stored)), Some(layout)) = (&mut wal, &layout) {
        *stored = layout.checkpoint().map_err(DeliveryError::Wal)?;
    }

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
    // Alerts a removed member had not delivered, into this process's outbox
    // before the alerts task opens it.
    let own_outbox = (config.alerts).outbox_dir(config.wal.as_ref().map(|w| w.dir.as_path()));
    if let (Some(layout), Some(own)) = (&layout, &own_outbox) {
        let moved = rescale::take_over_outboxes(layout, own)?;
        if moved > 0 {
            tracing::info!(alerts = moved, "took over removed members' pending alerts");
        }
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
    let (mut engine, workers) = parts::start_engine(&config, &engine_config, events_tx).await?;
    let stats = engine.stats();
    tracing::info!(workers, "engine started");
    // Every member has joined, so has read the state it needs: process 0
    // takes over what members the cluster no longer has left.
    if let (Some((own, stored)), Some(layout)) = (&mut wal, &layout) {
        let orphans = layout.orphans();
        if !orphans.is_empty() {
            let moved = rescale::take_over(own, &orphans, &config.mqtt, journeys, *stored).await?;
            tracing::info!(
                records = moved.records,
                drained = moved.drained,
                "rescaled: the state of removed members is this process's"
            );
        }
    }
    let http = crate::http::attach(
        &config,
        crate::http::People {
            customers: customers.as_ref(),
            contracts: contracts.as_ref(),
            pseudonyms: pseudonyms.clone(),
        },
        runtime.http.clone(),
        &metrics,
        &engine_config,
        stats.clone(),
        &mut outputs,
    )
    .await
    .map_err(ServiceError::Http)?;
    // A view that keeps its own snapshot is one more checkpointed receiver.
    written.extend(http.as_ref().and_then(|h| h.view_written.clone()));

    let lateness = config.engine.allowed_lateness.as_millis() as u64;

    // Windows (and a device's previous reading) a restart must be able to
    // recompute: two of the longest window, two hours of time-zone slack,
    // and the lateness.
    let longest = engine_config
        .windows
        .iter()
        .map(|w| w.length_ms)
        .max()
        .unwrap_or(0);
    let retention_ms = 2 * longest + 2 * 3_600_000 + lateness;
    let (stored, first) = wal
        .as_ref()
        .map_or((Checkpoint::default(), Lsn::FIRST), |(w, c)| {
            (*c, w.first_lsn())
        });
    let corrections = parts::corrections(
        &config,
        stored.written_before,
        layout.as_ref(),
        &engine_config,
        &metrics,
    )?;
    let horizon_ms = config.engine.correction_horizon.as_millis() as u64;
    let (correctable, corrections, restated, corrections_thread) = match corrections {
        Some((from, c, r, t)) => (Some((horizon_ms, from)), Some(c), Some(r), Some(t)),
        None => (None, None, None, None),
    };
    let mut ledger = Ledger::new(workers, stored, first, retention_ms);
    // A member's readings feed windows other members close and write: its
    // WAL is cut only behind the least advanced member's checkpoint.
    let members = (layout.clone()).filter(|l| l.processes > 1);
    if members.is_some() {
        // Nothing known of the others until the first look at their
        // checkpoints.
        let _ = ledger.everywhere(0);
    }
    let schedule = parts::device_snapshots(&config, &engine_config, retention_ms, &mut ledger)?;
    let ledger = Arc::new(Mutex::new(ledger));
    let (cut_tx, cut_rx) = watch::channel(first);
    let fan_out = FanOut {
        sinks: outputs,
        written,
        ledger: ledger.clone(),
        wal_dir: config.wal.as_ref().map(|w| w.dir.clone()),
        cut: cut_tx,
        metrics: metrics.clone(),
        journeys: engine_config.journeys.clone(),
        devices: engine_config.devices.clone(),
        schedule,
        workers,
        corrections: corrections.clone().zip(restated),
        members,
    };
    let fan_out = tasks.spawn(fan_out.run(events_rx));
    let devices = DeviceCounts::default();
    let mut lanes: Vec<_> = (engine.split(workers).into_iter())
        .map(|input| {
            (
                parts::admission(
                    &config,
                    &engine_config,
                    customers.as_ref(),
                    &devices,
                    pseudonyms.as_ref(),
                    correctable.as_ref().map(|(h, from)| (*h, from)),
                )
                .with_devices_behind(metrics.devices_behind.clone()),
                input,
            )
        })
        .collect();
    let mut watermark = 0;
    let writer = match wal {
        Some((wal, _)) => {
            let replayed;
            (replayed, watermark) = replay::replay(
                &wal,
                &mut lanes,
                workers,
                &ledger,
                &metrics,
                corrections.as_ref(),
            )
            .await?;
            tracing::info!(replayed, "WAL replayed");
            let gauges = metrics.wal.clone();
            let writer = Arc::new(WalWriter::spawn_with_gauges(wal, 4096, 1024, gauges));
            tasks.spawn(delivery::cut_wal(
                writer.clone(),
                cut_rx,
                corrections.clone(),
            ));
            Some(writer)
        }
        None => None,
    };
    let dead_letters = (config.limits.dead_letter_file.as_ref())
        .map(|path| DeadLetterStore::open(path, DeadLetterOptions::default()))
        .transpose()
        .map_err(|e| ServiceError::Task(format!("dead-letter file: {e}")))?;
    let intake_stop = CancellationToken::new();
    if let Some(corrections) = &corrections {
        let watch = reload::watch(
            config.clone(),
            engine_config.clone(),
            corrections.clone(),
            intake_stop.clone(),
        );
        tasks.spawn(watch);
    }
    let parts = IntakeParts {
        wal: writer,
        ledger,
        dead_letters,
        metrics: metrics.clone(),
        stop: intake_stop.clone(),
        deadline,
        watermark,
        pollers,
        corrections,
    };
    let idle_after = config.engine.idle_after;
    let mut intake = intake::spawn(&tasks, &config.mqtt, lanes, workers, idle_after, parts);
    tasks.close();

    // Runs until asked to stop, or until a lane fails.
    let ended = tokio::select! {
        _ = runtime.shutdown.cancelled() => None,
        Some(result) = intake.lanes.join_next() => Some(result),
    };
    tracing::info!("stopping: intake");
    let stop_by = tokio::time::Instant::now() + deadline;
    intake_stop.cancel();
    if let Some(http) = &http {
        http.intake_stopped();
    }
    for source in intake.sources {
        join(source).await??;
    }
    for poller in intake.pollers {
        join(poller).await?;
    }
    let mut results: Vec<_> = ended.into_iter().collect();
    while let Some(result) = intake.lanes.join_next().await {
        results.push(result);
    }
    for result in results {
        result.map_err(|e| ServiceError::Task(e.to_string()))??;
    }
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
            Ok(result) => report
                .sinks
                .push(result.map_err(|e| ServiceError::Task(e.to_string()))?),
            Err(_) => late("a sink is still writing"),
        }
    }
    if let Some(task) = alerts_task {
        match tokio::time::timeout_at(stop_by, task).await {
            Ok(result) => {
                report.alerts = Some(result.map_err(|e| ServiceError::Task(e.to_string()))?)
            }
            Err(_) => late("alerts are still being delivered"),
        }
    }
    if let Some(thread) = corrections_thread {
        // Ends once every handle is gone: its last commits are in.
        let joined = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout_at(stop_by, joined).await.is_err() {
            late("the archive is still committing");
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
        wal_commits = metrics.wal.commits.load(Relaxed),
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
