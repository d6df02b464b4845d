//! The delivery promise under a hostile operator: each module tries one way
//! to lose or stall acknowledged telemetry against real mosquitto and a real
//! store, and compares what was stored with an independent computation.

#[path = "../support/mod.rs"]
mod support;

mod alerts;
mod budget;
mod disk;
mod identity;
mod onboarding;
mod poison;
mod session;
