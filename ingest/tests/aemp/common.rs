//! What the AEMP tests share: a small fleet, the service config around an
//! embedded broker and a simulated AEMP server, the KPIs read back from
//! SQLite, and their comparison with the simulator's ground truth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetpulse::config::{CustomersRef, ServiceConfig, WalConfig};
use fleetpulse::metrics::IngestMetrics;
use fleetpulse::sinks::{SinkConfig, SqliteConfig, SqliteStore};
use fleetpulse::source::aemp::AempConfig;
use fleetpulse::source::aemp::metrics::SourceMetrics;
use fleetpulse_sim::{DayTruth, Fleet, FleetSpec, GroundTruth};

pub const DAY_MS: u64 = 86_400_000;

/// A fleet small enough for a debug build: two customers, a few machines,
/// three days of 10-minute samples.
pub fn spec(devices: usize) -> FleetSpec {
    FleetSpec {
        customers: 2,
        devices,
        days: 3,
        seed: 11,
        ..FleetSpec::default()
    }
}

/// The whole simulation lies behind this much event time, and AEMP
/// machines are polled a day (`max_span`) at a time while MQTT machines
/// arrive at once: the lateness covers the simulation and a day more, so
/// nothing is refused as too late (docs/AEMP.md).
pub fn lateness(spec: &FleetSpec) -> Duration {
    Duration::from_millis((u64::from(spec.days) + 1) * DAY_MS)
}

/// From the wall clock back to a day before the simulation starts.
pub fn history(spec: &FleetSpec) -> Duration {
    let now = fleetpulse::delivery::intake::wall_clock_ms();
    Duration::from_millis(now - spec.start + DAY_MS)
}

/// A fast-polling source for `url`.
pub fn source(name: &str, url: &str, spec: &FleetSpec) -> AempConfig {
    let mut config = AempConfig::new(name, url.parse().unwrap());
    config.poll_interval = Duration::from_millis(200);
    config.history = history(spec);
    config.max_span = Duration::from_millis(DAY_MS);
    config.timeout = Duration::from_secs(20);
    config
}

/// A service on the embedded broker at `broker`, the customers file
/// `customers`, a WAL and SQLite in `dir`.
pub fn service_config(
    dir: &Path,
    broker: std::net::SocketAddr,
    customers: &Path,
    spec: &FleetSpec,
    client: &str,
) -> ServiceConfig {
    let mut config = ServiceConfig::default();
    config.mqtt.host = broker.ip().to_string();
    config.mqtt.port = broker.port();
    config.mqtt.client_id = client.into();
    config.engine.workers = 2;
    config.engine.allowed_lateness = lateness(spec);
    config.customers = Some(CustomersRef {
        file: customers.to_owned(),
    });
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: sqlite_path(dir),
    })];
    config.wal = Some(WalConfig {
        dir: dir.join("wal"),
        segment_bytes: 16 * 1024 * 1024,
        max_bytes: None,
    });
    config
}

pub fn sqlite_path(dir: &Path) -> PathBuf {
    dir.join("kpi.sqlite")
}

/// Writes the simulated customers with `equipment` mapped.
pub fn write_customers(
    fleet: &Fleet,
    equipment: Vec<fleetpulse::source::aemp::AempEquipment>,
    path: &Path,
) {
    let mut customers = fleetpulse::sim::customers_file(fleet);
    customers.aemp_equipment = equipment;
    std::fs::write(path, customers.to_toml()).unwrap();
}

/// The source's counters, once the service registered them.
pub async fn source_metrics(metrics: &IngestMetrics, name: &str) -> Arc<SourceMetrics> {
    for _ in 0..500 {
        if let Some(found) = metrics.aemp.sources().into_iter().find(|s| s.name == name) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("AEMP source `{name}` never registered");
}

/// Waits until the source has polled every machine up to the clock and
/// handed over `messages` messages, and the intake has handled all the
/// service received (`extra`: messages from MQTT).
pub async fn wait_caught_up(
    metrics: &IngestMetrics,
    source: &SourceMetrics,
    messages: u64,
    extra: u64,
) {
    let started = std::time::Instant::now();
    loop {
        let handled = metrics.handled();
        if source.caught_up.load(Relaxed)
            && source.messages.load(Relaxed) >= messages
            && handled >= messages + extra
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "source {} not caught up: {:?}, handled {handled} of {}",
            source.name,
            source.status(),
            messages + extra
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per key (customer or customer/device, day start): field -> value.
pub type Table = BTreeMap<(String, u64), BTreeMap<&'static str, f64>>;

/// Compared exactly.
const EXACT: [&str; 8] = [
    "cycles",
    "manual_interventions",
    "fault_count",
    "distinct_operators",
    "active_devices",
    "reporting_devices",
    "advanced_features_used",
    "samples",
];

/// The ground truth's daily rows as a table.
pub fn truth_table(rows: &[DayTruth]) -> Table {
    rows.iter()
        .map(|r| {
            let fields = BTreeMap::from([
                ("operating_hours", r.operating_hours),
                ("idle_hours", r.idle_hours),
                ("fuel_litres", r.fuel_litres),
                ("output_units", r.output_units),
                ("cycles", r.cycles as f64),
                ("manual_interventions", r.manual_interventions as f64),
                ("fault_count", r.fault_count as f64),
                ("distinct_operators", f64::from(r.distinct_operators)),
                ("active_devices", f64::from(r.active_devices)),
                ("reporting_devices", f64::from(r.reporting_devices)),
                (
                    "advanced_features_used",
                    f64::from(r.advanced_features_used),
                ),
                ("samples", r.samples as f64),
            ]);
            ((r.customer.clone(), r.day_start_ms), fields)
        })
        .collect()
}

/// The daily customer KPIs in the store.
pub fn customer_table(path: &Path) -> Table {
    let store = SqliteStore::open(path).unwrap();
    store
        .customer_kpis("1d")
        .unwrap()
        .into_iter()
        .map(|k| {
            let fields = BTreeMap::from([
                ("operating_hours", k.operating_hours),
                ("idle_hours", k.idle_hours),
                ("fuel_litres", k.fuel_litres),
                ("output_units", k.output_units),
                ("cycles", k.cycles as f64),
                ("manual_interventions", k.manual_interventions as f64),
                ("fault_count", k.fault_count as f64),
                ("distinct_operators", f64::from(k.distinct_operators)),
                ("active_devices", f64::from(k.active_devices)),
                ("reporting_devices", f64::from(k.reporting_devices)),
                (
                    "advanced_features_used",
                    f64::from(k.advanced_features_used),
                ),
                ("samples", k.samples as f64),
            ]);
            ((k.customer.to_string(), k.window_start), fields)
        })
        .collect()
}

/// The daily device KPIs in the store, keyed `customer/device`; devices
/// without a sample that day are left out (the truth has no row for them).
pub fn device_table(path: &Path) -> Table {
    let store = SqliteStore::open(path).unwrap();
    store
        .device_kpis("1d")
        .unwrap()
        .into_iter()
        .filter(|k| k.samples > 0)
        .map(|k| {
            let fields = BTreeMap::from([
                ("operating_hours", k.operating_hours),
                ("idle_hours", k.idle_hours),
                ("fuel_litres", k.fuel_litres),
                ("output_units", k.output_units),
                ("utilisation", k.utilisation),
                ("cycles", k.cycles as f64),
                ("manual_interventions", k.manual_interventions as f64),
                ("fault_count", k.fault_count as f64),
                ("distinct_operators", f64::from(k.distinct_operators)),
                ("samples", k.samples as f64),
            ]);
            (
                (format!("{}/{}", k.customer, k.device), k.window_start),
                fields,
            )
        })
        .collect()
}

/// The per-device ground truth as a table (utilisation: hours over the
/// 24-hour UTC day).
pub fn device_truth_table(truth: &GroundTruth) -> Table {
    truth
        .rows()
        .iter()
        .map(|r| {
            let fields = BTreeMap::from([
                ("operating_hours", r.operating_hours),
                ("idle_hours", r.idle_hours),
                ("fuel_litres", r.fuel_litres),
                ("output_units", r.output_units),
                ("utilisation", r.operating_hours / 24.0),
                ("cycles", r.cycles as f64),
                ("manual_interventions", r.manual_interventions as f64),
                ("fault_count", r.fault_count as f64),
                ("distinct_operators", f64::from(r.distinct_operators)),
                ("samples", r.samples as f64),
            ]);
            ((r.customer.clone(), r.day_start_ms), fields)
        })
        .collect()
}

/// Every row and field of `truth` equals the store's: counts exactly,
/// hours, litres and shares within 1e-6 relative.
pub fn assert_equal(what: &str, store: &Table, truth: &Table) {
    assert_eq!(
        store.keys().collect::<Vec<_>>(),
        truth.keys().collect::<Vec<_>>(),
        "{what}: the rows differ from the ground truth"
    );
    for (key, expected) in truth {
        let row = &store[key];
        for (field, e) in expected {
            let g = row[field];
            if EXACT.contains(field) {
                assert_eq!(g, *e, "{what} {key:?} {field}");
            } else {
                assert!(
                    (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                    "{what} {key:?} {field}: store {g}, ground truth {e}"
                );
            }
        }
    }
    println!("{what}: {} rows equal the ground truth", truth.len());
}

/// `[[aemp]]` for the binary's config file, as [`source`] sets it up;
/// more keys (e.g. `auth`) may follow.
pub fn source_toml(name: &str, url: &str, spec: &FleetSpec) -> String {
    format!(
        "[[aemp]]\nname = \"{name}\"\nurl = \"{url}\"\npoll_interval = \"200ms\"\n\
         history = \"{}ms\"\nmax_span = \"1day\"\ntimeout = \"20s\"\n",
        history(spec).as_millis()
    )
}

/// A service file for the binary: the embedded broker at `broker`, a WAL
/// and SQLite in `dir`, the customers file `dir/customers.toml`, HTTP on
/// `http_port`, then `sources`.
pub fn write_config_file(
    dir: &Path,
    broker: std::net::SocketAddr,
    spec: &FleetSpec,
    client: &str,
    http_port: u16,
    sources: &str,
) -> PathBuf {
    let path = dir.join("fleetpulse.toml");
    let text = format!(
        "[mqtt]\nhost = \"{}\"\nport = {}\nclient_id = \"{client}\"\n\n\
         [engine]\nworkers = 2\nallowed_lateness = \"{}ms\"\n\n\
         [customers]\nfile = \"customers.toml\"\n\n\
         [[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n\n\
         [wal]\ndir = \"wal\"\n\n\
         [http]\nenabled = true\nlisten = \"127.0.0.1:{http_port}\"\n\n{sources}",
        broker.ip(),
        broker.port(),
        lateness(spec).as_millis(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `/api/status` of a service on `http_port`, once its first AEMP source
/// is caught up with `messages` handed over and everything handled.
pub async fn wait_status_caught_up(http_port: u16, messages: u64) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{http_port}/api/status");
    let started = std::time::Instant::now();
    loop {
        let status = tokio::task::spawn_blocking({
            let url = url.clone();
            move || super::support::servers::http_get(&url)
        })
        .await
        .unwrap();
        if let Ok(response) = status
            && response.status == 200
        {
            let doc: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
            let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
            let source = &doc["aemp"][0];
            if source["caught_up"] == true
                && n(&source["messages"]) >= messages
                && n(&doc["messages_accepted"]) + n(&doc["messages_rejected"]) >= messages
            {
                return doc;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "not caught up: {doc}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no status at {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
