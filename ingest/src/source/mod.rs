//! Where telemetry comes from: the MQTT broker, and AEMP APIs polled over
//! HTTP.

pub mod aemp;
pub mod mqtt;
pub mod takeover;
