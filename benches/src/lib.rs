//! Fixtures shared by the fleetpulse micro-benchmarks (`cargo bench -p
//! fleetpulse-benches`): one realistic capture from the simulator, decoded
//! and converted exactly as ingest does, and the engine configuration that
//! matches it. The end-to-end harness is [`harness`] (the `fleetpulse-bench`
//! binary, which `fleetpulse bench` runs); its Python peers live in
//! `benches/peers/`.

pub mod harness;

use std::collections::HashSet;
use std::path::Path;

use fleetpulse::admission::Admission;
use fleetpulse::config::{CustomersRef, ServiceConfig};
use fleetpulse_engine::{DeviceBatch, EngineConfig, FeatureCatalog};
use fleetpulse_sim::{Fleet, FleetSpec};

/// Allowed lateness the service uses by default (2 h).
pub const LATENESS_MS: u64 = 2 * 3_600_000;

/// The capture every micro-benchmark uses unless it says otherwise: the
/// demo's 6 customer profiles, 300 machines, 14 days, one message per machine
/// per hour with 6 samples: 86,515 messages, 519,090 samples (some
/// machines come online late or go dark, as the customer profiles say).
pub fn default_spec() -> FleetSpec {
    FleetSpec {
        customers: 6,
        devices: 300,
        days: 14,
        seed: 42,
        ..FleetSpec::default()
    }
}

/// A simulator capture, as bytes on the wire and as engine input.
pub struct Capture {
    /// The fleet it came from.
    pub fleet: Fleet,
    /// `(topic, payload)` in publish order.
    pub messages: Vec<(String, Vec<u8>)>,
    /// The same messages after admission (decode, validate, convert).
    pub batches: Vec<DeviceBatch>,
    /// Samples in the capture.
    pub samples: u64,
    /// Payload bytes in the capture.
    pub payload_bytes: u64,
}

impl Capture {
    /// Simulates `spec` and runs every message through admission.
    pub fn new(spec: &FleetSpec) -> Capture {
        let fleet = Fleet::generate(spec);
        let messages: Vec<_> = fleet.encoded_messages().collect();
        let mut admission = admission(&fleet);
        let now_ms = now_ms();
        let batches: Vec<DeviceBatch> = messages
            .iter()
            .map(|(topic, payload)| {
                admission
                    .admit(topic, payload, now_ms)
                    .unwrap_or_else(|r| panic!("the simulator's message was refused: {r:?}"))
            })
            .collect();
        let samples = batches.iter().map(|b| b.samples.len() as u64).sum();
        let payload_bytes = messages.iter().map(|(_, p)| p.len() as u64).sum();
        Capture {
            fleet,
            messages,
            batches,
            samples,
            payload_bytes,
        }
    }
}

/// Wall clock, ms since the epoch (admission bounds sample times by it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Admission as the service sets it up for this fleet: default limits,
/// the fleet's customers known, default lateness.
pub fn admission(fleet: &Fleet) -> Admission {
    let known: HashSet<String> = fleet.customers().iter().map(|c| c.id.clone()).collect();
    Admission::new(
        fleetpulse_proto::Limits::default(),
        Some(known),
        FeatureCatalog::default(),
        LATENESS_MS,
    )
}

/// The service's default engine configuration (1h and 1d windows, 1 min
/// tick) with the fleet's customers file, built the way the service builds
/// it (so customer-success logic runs as in production).
pub fn engine_config(fleet: &Fleet) -> EngineConfig {
    let dir = std::env::temp_dir().join(format!("fleetpulse-benches-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("customers.toml");
    fleetpulse::sim::write_files(fleet, None, Some(&file)).expect("customers file");
    let config = ServiceConfig {
        customers: Some(CustomersRef { file }),
        ..ServiceConfig::default()
    };
    let mut engine = config
        .engine_config(Path::new("<benches>"))
        .expect("default engine config");
    if let Some((_, specs, _)) =
        fleetpulse::service::load_customers(&config, &engine).expect("customers file loads")
    {
        engine.customers = specs;
    }
    let _ = std::fs::remove_dir_all(&dir);
    engine
}

/// Fleet sizes from the command line (`-- 10000 100000`), or `default`:
/// the scale benchmarks (memory, restore) measure once per size.
pub fn sizes_from_args(default: &[usize]) -> Vec<usize> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        default.to_vec()
    } else {
        sizes
    }
}
