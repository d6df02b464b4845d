//! The simulated fleet of the end-to-end tests, and how it reaches the
//! broker.

use std::path::Path;
use std::time::Duration;

use fleetpulse_sim::{Fleet, FleetSpec, PublishOptions, PublishReport, SimError};

use super::servers::Mosquitto;

/// A publisher running in the background.
pub type Publishing = tokio::task::JoinHandle<Result<PublishReport, SimError>>;

/// A seeded fleet: `customers` sharing `devices` over `days`, the other
/// settings the simulator's defaults.
pub fn fleet(customers: usize, devices: usize, days: u32, seed: u64) -> Fleet {
    Fleet::generate(&FleetSpec {
        customers,
        devices,
        days,
        seed,
        ..FleetSpec::default()
    })
}

/// Writes the fleet's `customers.toml` into `dir`, where the service's
/// config looks for it.
pub fn write_customers(dir: &Path, fleet: &Fleet) {
    fleetpulse::sim::write_files(fleet, None, Some(&dir.join("customers.toml"))).unwrap();
}

/// How the simulator reaches `mosquitto` as `client_id`; the rest as the
/// simulator's defaults (as fast as it can, 60 s of patience).
pub fn publish_options(mosquitto: &Mosquitto, client_id: &str) -> PublishOptions {
    PublishOptions {
        host: mosquitto.host().to_string(),
        port: mosquitto.port(),
        client_id: client_id.to_string(),
        ..PublishOptions::default()
    }
}

/// Starts publishing every message of `fleet` at `rate` messages a second,
/// waiting up to 120 s for a broker that is down (the tests restart it);
/// returns how many messages it sends.
pub fn spawn_publisher(
    mosquitto: &Mosquitto,
    fleet: &Fleet,
    client_id: &str,
    rate: f64,
) -> (u64, Publishing) {
    let messages: Vec<(String, Vec<u8>)> = fleet.encoded_messages().collect();
    let sent = messages.len() as u64;
    let options = PublishOptions {
        rate: Some(rate),
        give_up_after: Duration::from_secs(120),
        ..publish_options(mosquitto, client_id)
    };
    (
        sent,
        tokio::spawn(fleetpulse_sim::publish(options, messages, |_| {})),
    )
}

/// Publishes every message of `fleet` to the broker at `addr` as
/// `client_id`, as `fleetpulse sim` does; returns what was sent.
pub async fn publish_all(
    addr: std::net::SocketAddr,
    fleet: &Fleet,
    client_id: &str,
) -> PublishReport {
    let options = PublishOptions {
        host: addr.ip().to_string(),
        port: addr.port(),
        client_id: client_id.into(),
        ..PublishOptions::default()
    };
    fleetpulse::sim::publish_fleet(fleet, options)
        .await
        .unwrap()
}
