//! The customers file, reloaded on SIGHUP and when it changes on disk: a
//! changed definition (outcome target, milestone, contract dates, weights,
//! thresholds) folds the customer's journey again from its first kept day
//! (the corrections thread's recompute). A file that does not check keeps
//! the old definitions, and says why.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fleetpulse_engine::EngineConfig;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;
use crate::corrections::Corrections;

/// How often the file's modification time is looked at.
const POLL: Duration = Duration::from_secs(2);

/// Watches `config`'s customers file until `stop`.
pub async fn watch(
    config: ServiceConfig,
    engine: EngineConfig,
    corrections: Corrections,
    stop: CancellationToken,
) {
    let Some(path) = config.customers.as_ref().map(|c| c.file.clone()) else {
        return;
    };
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: the customers file is reloaded when it changes only");
            None
        }
    };
    let mut seen = modified(&path);
    loop {
        let signalled = async {
            match &mut hangup {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = signalled => {}
            _ = tokio::time::sleep(POLL) => {
                let now = modified(&path);
                if now == seen {
                    continue;
                }
            }
        }
        seen = modified(&path);
        match super::load_customers(&config, &engine) {
            Ok(Some((_, specs, _))) => {
                tracing::info!(file = %path.display(), customers = specs.len(), "customers file reloaded");
                corrections.customers(specs);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "customers file not reloaded; the previous definitions stay")
            }
        }
    }
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
