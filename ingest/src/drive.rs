//! Drives a running service with a simulated fleet: start the service,
//! wait for its subscription, publish every message, wait until each one has
//! been handled, stop the service (which drains the engine and flushes the
//! sinks). Used by the demo, the benchmarks and the integration tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetpulse_sim::{Fleet, PublishOptions, PublishReport};

use crate::config::ServiceConfig;
use crate::metrics::IngestMetrics;
use crate::progress::Progress;
use crate::service::{self, RunReport, Runtime};

/// What a driven run did.
#[derive(Debug)]
pub struct DrivenRun {
    /// The simulator's side.
    pub published: PublishReport,
    /// The service's side.
    pub service: RunReport,
    /// The service's counters at the end.
    pub metrics: Arc<IngestMetrics>,
    /// Wall time from the first publish to the last record flushed.
    pub elapsed: Duration,
}

/// Longest wait for the service to subscribe, or to handle what was sent.
const PATIENCE: Duration = Duration::from_secs(120);

/// Runs `config` as a service, publishes `fleet` through `publish`, and stops
/// the service once every published message has been handled.
pub async fn drive(
    config: ServiceConfig,
    fleet: &Fleet,
    publish: PublishOptions,
) -> anyhow::Result<DrivenRun> {
    drive_with(config, fleet, publish, None).await
}

/// [`drive`], feeding the records also to `http` (see [`Runtime::http`]).
pub async fn drive_with(
    config: ServiceConfig,
    fleet: &Fleet,
    publish: PublishOptions,
    http: Option<Arc<crate::http::Hub>>,
) -> anyhow::Result<DrivenRun> {
    let runtime = Runtime::new(http);
    let (metrics, shutdown) = (runtime.metrics.clone(), runtime.shutdown.clone());
    let service =
        tokio::spawn(
            async move { service::run(config, &PathBuf::from("<driven>"), runtime).await },
        );

    let waited = Instant::now();
    while !metrics.subscribed.load(Relaxed) {
        if service.is_finished() {
            return Err(service
                .await?
                .err()
                .map(anyhow::Error::from)
                .unwrap_or_else(|| anyhow::anyhow!("the service stopped before subscribing")));
        }
        if waited.elapsed() > PATIENCE {
            bail!("the service did not subscribe within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let published = crate::sim::publish_fleet(fleet, publish).await?;
    let mut progress = Progress::new("processing", "messages", published.messages);
    let mut last_handled = 0;
    let mut stalled_since = Instant::now();
    while metrics.handled() < published.messages {
        let handled = metrics.handled();
        progress.set(handled);
        if handled != last_handled {
            last_handled = handled;
            stalled_since = Instant::now();
        } else if stalled_since.elapsed() > PATIENCE {
            shutdown.cancel();
            bail!(
                "the service handled {handled} of {} messages and made no progress for {PATIENCE:?}",
                published.messages
            );
        }
        if service.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.finish(&format!("{} messages handled", metrics.handled()));
    shutdown.cancel();
    let report = service.await.context("service task")??;
    Ok(DrivenRun {
        published,
        service: report,
        metrics,
        elapsed: started.elapsed(),
    })
}
