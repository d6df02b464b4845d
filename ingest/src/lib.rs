//! fleetpulse ingest: the service and the `fleetpulse` CLI. MQTT source,
//! decode and admission, the engine host, sinks, the embedded broker and the
//! demo. `main.rs` only parses arguments and calls into here.

pub mod admission;
pub mod aemp_sim;
pub mod alerts;
pub mod backfill;
pub mod backtest;
pub mod behind;
pub mod broker;
pub mod config;
pub mod contracts;
pub mod convert;
pub mod corrections;
pub mod coverage;
pub mod csv_check;
pub mod customers;
pub mod dead_letter;
pub mod delivery;
pub mod demo;
pub mod drive;
pub mod files;
pub mod handover;
pub mod health_validation;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod privacy;
pub mod progress;
pub mod recompute;
pub mod records;
pub mod replay;
pub mod report;
pub mod retry;
pub mod secrets;
pub mod service;
pub mod sim;
pub mod sinks;
pub mod source;
pub mod text;
pub mod touchpoints;
pub mod wal;

/// A disk that really fills up, for the unit tests of what writes to one.
#[cfg(test)]
#[path = "../tests/support/small_disk.rs"]
#[allow(dead_code)]
mod small_disk;
