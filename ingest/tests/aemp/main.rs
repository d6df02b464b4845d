//! The AEMP 2.0 source end to end on real parts: the simulated OEM API
//! (`fleetpulse sim --aemp`, in process on a loopback port), the service
//! with its embedded broker, WAL, engine and SQLite store; every KPI read
//! back is compared with the simulator's ground truth, value by value.

#[path = "../support/mod.rs"]
mod support;

mod bad;
mod common;
mod crash;
mod hostile;
mod mixed;
mod quirks;
