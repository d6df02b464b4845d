//! The stop, in order and within `shutdown_timeout`: intake first (no more
//! acknowledgements), then the engine drains into the fan-out, the sinks
//! and the alerts flush, the archive commits, the HTTP view writes its
//! files. What a part has not written when the deadline passes stays in
//! the WAL (the checkpoint did not pass it) and is written after the next
//! start.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetpulse_engine::{Engine, EngineStats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{RunReport, ServiceError};
use crate::alerts::AlertsReport;
use crate::delivery::intake::Intake;
use crate::metrics::IngestMetrics;
use crate::sinks::writer::SinkReport;

/// The service's running parts, as the stop takes them.
pub(super) struct Running {
    pub intake: Intake,
    /// Stops the intake lanes and the reload watch.
    pub intake_stop: CancellationToken,
    pub http: Option<crate::http::Attached>,
    pub engine: Engine,
    pub stats: Arc<EngineStats>,
    pub fan_out: JoinHandle<()>,
    pub sinks: Vec<JoinHandle<SinkReport>>,
    pub alerts: Option<JoinHandle<AlertsReport>>,
    pub corrections: Option<std::thread::JoinHandle<()>>,
    pub metrics: Arc<IngestMetrics>,
    pub deadline: Duration,
    /// The customers file's watch: ends with the intake, returning the
    /// customers the file added.
    pub watch: JoinHandle<Vec<String>>,
    /// Every task of the run.
    pub tasks: TaskTracker,
    /// The customers' display names, for the next start in place.
    pub names: std::collections::HashMap<String, String>,
}

impl Running {
    /// Runs until `shutdown` is cancelled or a lane fails, then stops. A
    /// stop that is not the `process`'s own is a start in place: the HTTP
    /// side is handed on in the report instead of stopped.
    pub async fn until(
        mut self,
        shutdown: &CancellationToken,
        process: &CancellationToken,
    ) -> Result<RunReport, ServiceError> {
        let ended = tokio::select! {
            _ = shutdown.cancelled() => None,
            Some(result) = self.intake.lanes.join_next() => Some(result),
        };
        tracing::info!("stopping: intake");
        let stop_by = tokio::time::Instant::now() + self.deadline;
        self.intake_stop.cancel();
        if let Some(http) = &self.http {
            http.intake_stopped();
        }
        for source in self.intake.sources {
            join(source).await??;
        }
        // Taking nothing in any more (a start in place subscribes anew).
        self.metrics.subscribed.store(false, Relaxed);
        for poller in self.intake.pollers {
            join(poller).await?;
        }
        let mut results: Vec<_> = ended.into_iter().collect();
        while let Some(result) = self.intake.lanes.join_next().await {
            results.push(result);
        }
        for result in results {
            result.map_err(|e| ServiceError::Task(e.to_string()))??;
        }
        tracing::info!("stopping: draining engine");
        let engine = self.engine;
        let fan_out = self.fan_out;
        // A part still going at the deadline is stopped: what it had not
        // written is in the WAL, and a start in place needs the WAL, the
        // archive and the view it holds.
        let stuck_fan_out = fan_out.abort_handle();
        let drained = async {
            tokio::task::spawn_blocking(move || engine.finish())
                .await
                .map_err(|e| ServiceError::Task(e.to_string()))??;
            join(fan_out).await
        };
        let mut report = RunReport::default();
        match tokio::time::timeout_at(stop_by, drained).await {
            Ok(result) => result?,
            Err(_) => {
                late("the engine is still handing records to a sink");
                stuck_fan_out.abort();
            }
        }
        report.engine = self.stats.snapshot();
        tracing::info!("stopping: flushing sinks");
        for mut task in self.sinks {
            match tokio::time::timeout_at(stop_by, &mut task).await {
                Ok(result) => report.sinks.push(result.map_err(task_error)?),
                Err(_) => {
                    late("a sink is still writing");
                    task.abort();
                }
            }
        }
        if let Some(mut task) = self.alerts {
            match tokio::time::timeout_at(stop_by, &mut task).await {
                Ok(result) => report.alerts = Some(result.map_err(task_error)?),
                Err(_) => {
                    late("alerts are still being delivered");
                    task.abort();
                }
            }
        }
        if let Some(thread) = self.corrections {
            // Ends once every handle is gone: its last commits are in.
            let mut joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout_at(stop_by, &mut joined).await.is_err() {
                late("the archive is still committing");
                // A start in place opens the archive again, and two
                // threads writing it would each miss the other's rows: the
                // pass under way ends first (a stop of the process, which
                // redoes it at the next start, does not wait).
                if !process.is_cancelled() {
                    tracing::info!("the start in place waits for the archive's pass under way");
                    tokio::select! {
                        _ = joined => {}
                        _ = process.cancelled() => {}
                    }
                }
            }
        }
        report.restart = !process.is_cancelled();
        if let Some(http) = self.http {
            report.http = http.finish(report.restart, stop_by).await;
        }
        report.added = self.watch.await.unwrap_or_default();
        report.names = std::mem::take(&mut self.names);
        // A start in place opens the same WAL, archive and port: every task
        // of this run, and what it holds, is gone first.
        if report.restart
            && tokio::time::timeout(self.deadline, self.tasks.wait())
                .await
                .is_err()
        {
            tracing::warn!("tasks of the run still going at the start in place");
        }
        let metrics = &self.metrics;
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
}

/// The stop took longer than `shutdown_timeout`: what is not written stays
/// in the WAL (the checkpoint did not pass it) and is written after the next
/// start.
fn late(what: &str) {
    tracing::warn!("shutdown deadline reached: {what}; the rest stays in the WAL");
}

fn task_error(e: tokio::task::JoinError) -> ServiceError {
    ServiceError::Task(e.to_string())
}

async fn join<T>(task: JoinHandle<T>) -> Result<T, ServiceError> {
    task.await.map_err(task_error)
}
