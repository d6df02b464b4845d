//! The delivery core: from the MQTT acknowledgement to the store, nothing
//! acknowledged is lost (docs/DELIVERY.md states each guarantee and its
//! test).
//!
//! ```text
//! source --messages--> intake lane --group--> WAL (one fsync per group)
//!    ^                     |  durable: engine, then acks
//!    +--------acks---------+
//! engine --records--> fan-out --> sinks, alerts outbox, API view
//!                        |  every sink wrote further: checkpoint, then cut
//!                        +--cut--> WAL
//! ```
//!
//! The decisions are synchronous state machines with no I/O, tested
//! without a broker: [`in_order::InOrder`] (never hand to the engine or
//! acknowledge before durable, always in arrival order, per lane and per
//! MQTT connection) and [`ledger::Ledger`]
//! (never checkpoint ahead of a sink, never cut what a sink has not written,
//! suppress exactly what was written before a restart). The async tasks in
//! [`intake`], [`fan_out`] and [`replay`] carry events to them and perform
//! the I/O they ask for.

pub mod checkpoint;
pub mod devices;
pub mod fan_out;
pub mod in_order;
pub mod intake;
pub mod journeys;
pub mod ledger;
pub mod progress;
pub mod provisional;
pub mod replay;
pub mod rescale;
pub mod retention;
pub mod route;
pub mod untracked;

use std::sync::Arc;

pub use untracked::Untracked;

use fleetpulse_engine::EngineError;
use thiserror::Error;
use tokio::sync::watch;

use crate::wal::Lsn;
use crate::wal::writer::WalWriter;

/// The delivery path failed.
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(String),
}

/// Cuts the WAL wherever the fan-out allows, until the fan-out stops;
/// with an archive, only once it holds every batch before the cut.
pub async fn cut_wal(
    wal: Arc<WalWriter>,
    mut cut: watch::Receiver<Lsn>,
    archive: Option<crate::corrections::Corrections>,
) {
    while cut.changed().await.is_ok() {
        let before = *cut.borrow_and_update();
        if let Some(archive) = &archive
            && !archive.sync().await
        {
            continue; // The archive would miss what the WAL drops.
        }
        if let Err(e) = wal.truncate_before(before).await {
            tracing::error!(error = %e, "cannot cut the WAL");
        }
    }
}
