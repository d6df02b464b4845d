//! libFuzzer target: topic parsing, payload decoding and validation, as
//! ingest's admission runs them on every message. See ../README.md.
#![no_main]

#[path = "../src/check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
