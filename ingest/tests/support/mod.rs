//! Shared fixtures for the ingest integration tests. Include with `mod support;`.
#![allow(dead_code)]

pub mod in_process;
pub mod poll;
pub mod servers;
pub mod service;
pub mod truth;
