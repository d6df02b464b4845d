//! The fleetpulse engine: a timely dataflow that turns device telemetry into
//! per-customer KPIs over event-time windows. Pure: no sockets, files or
//! clocks; time arrives as data.
//!
//! - [`kpi`]: KPI arithmetic, plain Rust;
//! - [`operators`]: one timely operator per file;
//! - [`dataflow`]: wires them;
//! - [`device_map`]: per-device state laid out for a million devices;
//! - [`workers`]: runs the dataflow on W worker threads behind channels;
//! - [`watermark`]: when event time has provably advanced;
//! - [`restatement`]: closed windows computed again when late telemetry
//!   arrives within the correction horizon;
//! - [`adoption`]: restated journeys handed to the customer-success operators;
//! - [`journeys`]: journey states a restart restores and the service persists;
//! - [`devices`]: device memories a restart restores, snapshotted on request;
//! - [`run`]: the whole engine over an in-memory list of batches, for tests
//!   and benchmarks.
#![deny(missing_docs)]

pub mod adoption;
pub mod config;
pub mod customer;
pub mod dataflow;
pub mod device_map;
pub mod devices;
pub mod journeys;
pub mod kpi;
pub mod model;
pub mod operators;
pub mod reference;
pub mod restatement;
pub mod run;
pub mod stats;
pub mod watermark;
pub mod workers;

pub use config::{EngineConfig, FeatureCatalog, WindowSpec};
pub use customer::{Contract, CustomerSpec, Segment};
pub use devices::{DeviceBoard, DeviceSnapshot};
pub use journeys::JourneyBoard;
pub use kpi::journey::JourneyState;
pub use kpi::{
    AlertRecord, CustomerKpi, DeviceKpi, ForecastRecord, HealthRecord, MilestoneRecord,
    OutcomeRecord, Output, PortfolioRecord, Totals,
};
pub use model::{DeviceBatch, DeviceKey, EventTime, Id, Increments, MachineState, Sample, Usage};
pub use operators::device_state::{DeviceMemory, MeterFaults, MostGain};
pub use stats::{EngineStats, StatsSnapshot};
pub use watermark::{Late, Watermark};
pub use workers::{Cluster, Engine, EngineError, EngineEvent, EngineInput, EngineOptions, lane_of};
