//! Shared fixtures for the ingest integration tests. Include with `mod support;`.
#![allow(dead_code)]

pub mod servers;
pub mod truth;
