//! Shared fixtures for the ingest integration tests. Include with `mod support;`.
#![allow(dead_code)]

pub mod cdp;
pub mod files;
pub mod fleets;
pub mod in_process;
pub mod late;
pub mod poll;
pub mod servers;
pub mod service;
pub mod small_disk;
pub mod tables;
pub mod truth;
pub mod users;
pub mod webhook;
