//! Times generating and encoding a fleet's whole message stream.
//!
//! ```text
//! cargo run --release -p fleetpulse-sim --example generate -- [customers] [devices] [days]
//! ```
//! Defaults: 6 customers, 300 devices, 60 days.

use std::time::Instant;

use fleetpulse_sim::{Fleet, FleetSpec};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let mut next = |default: u64| match args.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => panic!("arguments are [customers] [devices] [days]: {e}"),
        None => default,
    };
    let spec = FleetSpec {
        customers: next(6) as usize,
        devices: next(300) as usize,
        days: next(60) as u32,
        ..FleetSpec::default()
    };
    let started = Instant::now();
    let fleet = Fleet::generate(&spec);
    let (mut messages, mut bytes) = (0u64, 0u64);
    for (_topic, payload) in fleet.encoded_messages() {
        messages += 1;
        bytes += payload.len() as u64;
    }
    let elapsed = started.elapsed();
    println!(
        "{} customers, {} devices, {} days: {messages} messages, {} samples, {:.1} MB encoded in {:.2} s ({:.0} messages/s)",
        spec.customers,
        spec.devices,
        spec.days,
        fleet.sample_count(),
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64(),
    );
}
