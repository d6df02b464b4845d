//! The ISO 15143-3 (AEMP 2.0) source: other brands' machines, polled over
//! HTTP from their manufacturers' telematics APIs, fed into the same
//! admission, WAL and engine as the MQTT machines (docs/AEMP.md).
//!
//! One file per concern: [`config`] (`[[aemp]]`), [`mapping`] (machine ->
//! customer, site, device), [`client`] (HTTP, auth, retries), [`tree`] and
//! [`parse`] (XML and JSON answers), [`convert`] (readings -> messages),
//! [`position`] (durable poll position), [`metrics`], and [`poller`], the
//! loop that only moves data between them.

pub mod client;
pub mod config;
pub mod convert;
pub mod mapping;
pub mod metrics;
pub mod parse;
pub mod poller;
pub mod position;
pub mod tree;

use std::path::Path;

use thiserror::Error;

pub use config::AempConfig;
pub use mapping::AempEquipment;
pub use poller::Poller;

use crate::metrics::IngestMetrics;

/// An AEMP source cannot start.
#[derive(Debug, Error)]
pub enum AempSetupError {
    /// Its position file cannot be read.
    #[error(transparent)]
    Position(#[from] position::PositionError),
    /// Its secrets or HTTP client.
    #[error(transparent)]
    Client(#[from] client::SetupError),
}

/// The pollers of every `[[aemp]]` source; `equipment`: the customers
/// file's `[[aemp_equipment]]`.
pub fn pollers(
    sources: &[AempConfig],
    equipment: &[AempEquipment],
    wal_dir: Option<&Path>,
    max_future_ms: u64,
    allowed_lateness: std::time::Duration,
    metrics: &IngestMetrics,
) -> Result<Vec<Poller>, AempSetupError> {
    let claims = poller::Claims::default();
    sources
        .iter()
        .map(|config| {
            if config.poll_interval >= allowed_lateness {
                tracing::warn!(
                    source = %config.name,
                    poll_interval = ?config.poll_interval,
                    allowed_lateness = ?allowed_lateness,
                    "AEMP poll_interval is not below engine.allowed_lateness: beside live MQTT \
                     machines its readings will be refused as too_late (docs/AEMP.md, late by nature)"
                );
            }
            let file = position::PositionFile::new(config.position_file(wal_dir));
            Poller::new(
                config.clone(),
                equipment,
                file,
                metrics.aemp.source(&config.name),
                max_future_ms,
                claims.clone(),
            )
        })
        .collect()
}
