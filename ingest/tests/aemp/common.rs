//! What the AEMP tests share: a small fleet, the service config around an
//! embedded broker and a simulated AEMP server, the KPIs read back from
//! SQLite, and their comparison with the simulator's ground truth.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetpulse::aemp_sim::{self, AempFleet, AempServer, Quirks, Selection};
use fleetpulse::broker::EmbeddedBroker;
use fleetpulse::config::{ServiceConfig, WalConfig};
use fleetpulse::metrics::IngestMetrics;
use fleetpulse::sinks::{SinkConfig, SqliteConfig, SqliteStore};
use fleetpulse::source::aemp::AempConfig;
use fleetpulse::source::aemp::metrics::SourceMetrics;
use fleetpulse_sim::{Fleet, FleetSpec, GroundTruth};

use super::support::in_process::{self, InProcess};
use super::support::truth::usage_fields;
pub use super::support::truth::{Table, assert_table_equal, sqlite_customer_table, truth_table};
use tempfile::TempDir;

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

/// What every AEMP test starts from: the embedded broker, a temporary
/// directory and a simulated fleet of [`spec`]`(devices)`.
pub struct Setup {
    pub broker: EmbeddedBroker,
    pub dir: TempDir,
    pub spec: FleetSpec,
    pub fleet: Fleet,
}

impl Setup {
    pub fn new(devices: usize) -> Self {
        let spec = spec(devices);
        Self {
            broker: fleetpulse::broker::start(0).unwrap(),
            dir: tempfile::tempdir().unwrap(),
            fleet: Fleet::generate(&spec),
            spec,
        }
    }

    /// Where the tests write the customers file.
    pub fn customers(&self) -> PathBuf {
        self.dir.path().join("customers.toml")
    }

    /// [`service_config`] on this setup's broker, directory and customers
    /// file.
    pub fn service_config(&self, client: &str) -> ServiceConfig {
        let customers = self.customers();
        service_config(
            self.dir.path(),
            self.broker.addr,
            &customers,
            &self.spec,
            client,
        )
    }

    /// [`write_config_file`] on this setup's broker and directory.
    pub fn write_config_file(&self, client: &str, http_port: u16, sources: &str) -> PathBuf {
        write_config_file(
            self.dir.path(),
            self.broker.addr,
            &self.spec,
            client,
            http_port,
            sources,
        )
    }

    /// Serves the whole fleet with `quirks` and writes the customers file
    /// with every machine mapped.
    pub async fn serve_all(&self, quirks: Quirks) -> Served {
        let served = AempFleet::new(&self.fleet, Selection::default(), quirks.pin_ids);
        let truth = served.ground_truth();
        let devices = served.device_truth();
        let points = served.points() as u64;
        write_customers(&self.fleet, served.equipment(None), &self.customers());
        Served {
            server: serve(served, quirks).await,
            truth,
            devices,
            points,
        }
    }

    /// The customers' daily KPIs in the store equal `truth`.
    pub fn assert_customers_equal(&self, what: &str, truth: &GroundTruth) {
        assert_table_equal(
            what,
            &sqlite_customer_table(&sqlite_path(self.dir.path())),
            &truth_table(&truth.rows()),
        );
    }
}

/// A simulated AEMP server and what it serves.
pub struct Served {
    pub server: AempServer,
    /// The customers' ground truth of what it serves.
    pub truth: GroundTruth,
    /// The per-device ground truth.
    pub devices: GroundTruth,
    /// The readings times it serves (the messages a source hands over).
    pub points: u64,
}

/// Starts the simulated AEMP server for `served` on a loopback port.
pub async fn serve(served: AempFleet, quirks: Quirks) -> AempServer {
    aemp_sim::start(SocketAddr::from(([127, 0, 0, 1], 0)), served, quirks)
        .await
        .unwrap()
}

/// Stops an in-process service; it must end without an error.
pub async fn stop(service: &mut InProcess) {
    service.shutdown.cancel();
    (&mut service.task).await.unwrap().unwrap();
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
    let host = broker.ip().to_string();
    let mut config = in_process::config(&host, broker.port(), client, 2, customers);
    config.engine.allowed_lateness = lateness(spec);
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: sqlite_path(dir),
    })];
    config.wal = Some(WalConfig {
        dir: dir.join("wal"),
        segment_bytes: 16 * 1024 * 1024,
        max_bytes: None,
        snapshot_every: std::time::Duration::from_secs(1),
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

/// The daily device KPIs in the store, keyed `customer/device`; devices
/// without a sample that day are left out (the truth has no row for them).
pub fn device_table(path: &Path) -> Table {
    let store = SqliteStore::open(path).unwrap();
    store
        .device_kpis("1d")
        .unwrap()
        .into_iter()
        .filter(|k| k.totals.samples > 0)
        .map(|k| {
            let key = (format!("{}/{}", k.customer, k.device), k.window_start);
            (
                key,
                device_fields(usage_fields!(k.totals, k), k.utilisation),
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
            let key = (r.customer.clone(), r.day_start_ms);
            (
                key,
                device_fields(usage_fields!(r, r), r.operating_hours / 24.0),
            )
        })
        .collect()
}

/// A device-day's compared fields: the usage fields and the utilisation.
fn device_fields(usage: [(&str, f64); 9], utilisation: f64) -> BTreeMap<String, f64> {
    usage
        .into_iter()
        .chain([("utilisation", utilisation)])
        .map(|(name, value)| (name.to_string(), value))
        .collect()
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
