//! `fleetpulse run`: the service. Wiring only: the delivery core
//! ([`crate::delivery`]) decides what is durable, acknowledged, written and
//! cut; this file opens the parts, connects them, and stops them in order
//! (stop intake, hand over what is durable, drain the engine, flush the
//! sinks) within `shutdown_timeout`.

pub(crate) mod parts;
mod reload;
mod stop;

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::DeviceCounts;
use crate::config::ServiceConfig;
use crate::dead_letter::{DeadLetterOptions, DeadLetterStore};
use crate::delivery::checkpoint::Checkpoint;
use crate::delivery::fan_out::FanOut;
use crate::delivery::intake::{self, IntakeParts};
use crate::delivery::ledger::Ledger;
use crate::delivery::{self, DeliveryError, replay, rescale};
use crate::wal::{Lsn, writer::WalWriter};

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
    let pseudonyms = parts::pseudonyms(&config, config_path)?;
    let layout = parts::layout(&config);
    config.apply_cluster_member();
    let mut engine_config = config.engine_config(config_path)?;
    let customers = load_customers(&config, &engine_config)?;
    if let Some((file, specs, _)) = &customers {
        file.warn();
        engine_config.customers = specs.clone();
    }
    let (customers, contracts) = customers.map(|(file, _, book)| (file, book)).unzip();
    let (journeys, untracked) =
        parts::restore_state(&config, layout.as_ref(), &mut engine_config, &runtime.names)?;
    // AEMP sources next: a missing secret or a damaged position file must
    // fail the start.
    let pollers = parts::pollers(&config, customers.as_ref(), &runtime.metrics)?;
    let metrics = runtime.metrics;
    let tasks = TaskTracker::new();
    let deadline = config.shutdown_timeout;

    // The WAL first: a second process on the same directory must fail
    // before it opens anything else (a start in place waits for its last).
    let open = |w| replay::open(w, runtime.in_place.then_some(deadline));
    let mut wal = config.wal.as_ref().map(open).transpose()?;
    // Every member suppresses what the least advanced member's checkpoint
    // covers: after a rescale its customers may be another's.
    if let (Some((_, stored)), Some(layout)) = (&mut wal, &layout) {
        *stored = layout.checkpoint().map_err(DeliveryError::Wal)?;
    }

    // Sinks next: a store that cannot be reached fails a start, and is
    // waited for at a start in place.
    let receivers = parts::Receivers::open(
        &config,
        layout.as_ref(),
        &tasks,
        &metrics,
        (&runtime.shutdown, runtime.in_place),
    )
    .await?;
    let (mut outputs, mut written) = (receivers.outputs, receivers.written);

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
        runtime.http,
        &metrics,
        &engine_config,
        stats.clone(),
        &mut outputs,
    )
    .await
    .map_err(ServiceError::Http)?;
    // A view that keeps its own snapshot is one more checkpointed receiver.
    written.extend(http.as_ref().and_then(|h| h.view_written.clone()));

    let retention_ms = parts::retention_ms(&config, &engine_config);
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
        let _ = ledger.everywhere(Checkpoint::default());
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
        untracked,
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
    // Cancelled by a shutdown, or by the customers file changing who is
    // served (a start in place follows).
    let stop = runtime.shutdown.child_token();
    let watch = tasks.spawn(reload::watch(
        config.clone(),
        engine_config.clone(),
        corrections.clone(),
        http.as_ref().map(|h| h.hub.clone()),
        intake_stop.clone(),
        stop.clone(),
    ));
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
    let intake = intake::spawn(&tasks, &config.mqtt, lanes, workers, idle_after, parts);
    tasks.close();
    let running = stop::Running {
        intake,
        intake_stop,
        http,
        engine,
        stats,
        fan_out,
        sinks: receivers.sinks,
        alerts: receivers.alerts,
        corrections: corrections_thread,
        metrics,
        deadline,
        watch,
        tasks,
        names: parts::display_names(&engine_config),
    };
    running.until(&stop, &runtime.shutdown).await
}
