//! The fleetpulse wire format, shared by devices (firmware-sim) and ingest.
//!
//! - [`v1`]: the generated prost types of package `fleetpulse.v1`;
//! - [`topic`]: the MQTT topic scheme `fleet/{customer}/{site}/{device}/telemetry`;
//! - [`validate`]: the checks every payload passes before it may enter the engine.
#![deny(missing_docs)]

pub mod topic;
pub mod validate;

/// Generated types of protobuf package `fleetpulse.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/fleetpulse.v1.rs"));
}

pub use topic::{
    BACKFILL_FILTER, TELEMETRY_FILTER, TopicError, TopicIds, TopicKind, backfill_topic,
    telemetry_topic,
};
pub use validate::{
    Limits, Reading, ValidationError, check_reading, decode_and_validate, validate,
};
