//! Domain types the engine consumes: device telemetry already decoded and
//! validated by ingest. No wire types here (see `ingest/src/convert.rs`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Event time: milliseconds since the Unix epoch, UTC.
pub type EventTime = u64;

/// An id shared by many records (customer, site, device, operator): cloning is
/// a reference-count bump, not an allocation.
pub type Id = Arc<str>;

/// A device's identity: (customer, device id). Device ids are unique only
/// within a customer, so every piece of per-device state is keyed by both.
pub type DeviceKey = (Id, Id);

/// What a machine was doing at a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum MachineState {
    /// State not reported.
    #[default]
    Unknown,
    /// Doing work.
    Running,
    /// Powered and manned, not working.
    Idle,
    /// Powered down; the telematics unit still sends heartbeats.
    Off,
    /// Stopped by a fault.
    Fault,
}

impl MachineState {
    /// Lower-case name used in stores and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Running => "running",
            Self::Idle => "idle",
            Self::Off => "off",
            Self::Fault => "fault",
        }
    }
}

/// One reading of a machine, as reported (cumulative counters still cumulative).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Sample {
    /// Event time of the reading.
    pub at: EventTime,
    /// Machine state at the reading.
    pub state: MachineState,
    /// Cumulative operating hours over the machine's life.
    pub operating_hours: f64,
    /// Cumulative idle hours over the machine's life.
    pub idle_hours: f64,
    /// Cumulative fuel used over the machine's life, litres.
    pub fuel_litres: f64,
    /// Work cycles since the previous reading.
    pub cycles: u32,
    /// Output since the previous reading (tons, parts, inspections).
    pub output_units: f64,
    /// Manual interventions since the previous reading.
    pub manual_interventions: u32,
    /// Operator logged in, if any.
    pub operator: Option<Id>,
    /// Advanced features active since the previous reading, as a bit set over
    /// the indices of [`crate::FeatureCatalog::advanced`].
    pub advanced_features: u32,
    /// Seconds any feature was active since the previous reading.
    pub feature_seconds: u32,
    /// Seconds an advanced feature was active since the previous reading.
    pub advanced_feature_seconds: u32,
    /// Faults raised since the previous reading.
    pub faults: u32,
}

/// One telemetry message of one device: the unit of deduplication. A device
/// is identified by (`customer`, `device`): two customers may use the same
/// device id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceBatch {
    /// Customer the device belongs to.
    pub customer: Id,
    /// Site of the device.
    pub site: Id,
    /// Device id.
    pub device: Id,
    /// Unit epoch: when the device's telematics unit started its sequence
    /// (Unix seconds; 0 when not sent). A replaced or reset unit has a higher
    /// one and restarts its sequence.
    pub unit_epoch: u64,
    /// Per-unit sequence number: the dedup key with (`customer`, `device`,
    /// `unit_epoch`).
    pub sequence: u64,
    /// Readings in event-time order; never empty.
    pub samples: Vec<Sample>,
}

impl DeviceBatch {
    /// Event time of the earliest reading.
    pub fn first_at(&self) -> EventTime {
        self.samples.first().map_or(0, |s| s.at)
    }

    /// Event time of the latest reading.
    pub fn last_at(&self) -> EventTime {
        self.samples.last().map_or(0, |s| s.at)
    }
}

/// A device's newest reading in one input container, taken as it arrives,
/// before the watermark lets its windows close: how the intraday rules see
/// the open day (`crate::operators::sightings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// Customer the device belongs to.
    pub customer: Id,
    /// Device id.
    pub device: Id,
    /// Event time of the device's newest reading.
    pub at: EventTime,
}

/// A reading after per-device state: the sample as reported, with the
/// increments of its cumulative counters since the device's previous
/// reading. The sample's other counters already count since the previous
/// reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Customer of the device.
    pub customer: Id,
    /// Site of the device.
    pub site: Id,
    /// Device id.
    pub device: Id,
    /// The reading as reported (cumulative counters still cumulative).
    pub sample: Sample,
    /// What the sample's cumulative counters added since the device's
    /// previous reading.
    pub increments: Increments,
}

/// The increments of a reading's cumulative counters: 0 for a device's
/// first reading (the baseline) and for a counter that went backwards.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Increments {
    /// Operating hours since the previous reading.
    pub operating_hours: f64,
    /// Idle hours since the previous reading.
    pub idle_hours: f64,
    /// Fuel used since the previous reading, litres.
    pub fuel_litres: f64,
}
