//! `fleetpulse::service::run` as a task of the test's runtime, for the tests
//! that read its counters directly instead of through a child process.

use std::path::Path;
use std::sync::Arc;

use fleetpulse::config::{CustomersRef, ServiceConfig};
use fleetpulse::metrics::IngestMetrics;
use fleetpulse::service::{self, RunReport, Runtime, ServiceError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::poll::wait_for;

/// The running service: its counters, the token that stops it, its task.
pub struct InProcess {
    pub metrics: Arc<IngestMetrics>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<RunReport, ServiceError>>,
}

/// A service on the broker at `host`:`port` as `client`, with `workers`
/// engine workers and the customers file `customers`; the rest default.
pub fn config(
    host: &str,
    port: u16,
    client: &str,
    workers: usize,
    customers: &Path,
) -> ServiceConfig {
    let mut config = ServiceConfig::default();
    config.mqtt.host = host.to_string();
    config.mqtt.port = port;
    config.mqtt.client_id = client.to_string();
    config.engine.workers = workers;
    config.customers = Some(CustomersRef {
        file: customers.to_owned(),
    });
    config
}

/// [`config`] with 2 workers, its WAL (and the archive beside it) in
/// `dir/wal` and a SQLite store at `dir/kpi.sqlite`.
pub fn durable(host: &str, port: u16, client: &str, customers: &Path, dir: &Path) -> ServiceConfig {
    let mut config = config(host, port, client, 2, customers);
    config.wal = Some(fleetpulse::config::WalConfig {
        dir: dir.join("wal"),
        ..toml::from_str("dir = \"x\"").unwrap()
    });
    config.sinks = vec![fleetpulse::sinks::SinkConfig::Sqlite(
        fleetpulse::sinks::sqlite::SqliteConfig {
            path: dir.join("kpi.sqlite"),
        },
    )];
    config
}

/// Runs the `fleetpulse` binary with `args`, which must succeed; what it
/// printed (stdout, then stderr).
pub fn fleetpulse<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args(args)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    said
}

/// Runs the `fleetpulse` binary with `args`, stdin closed: whether it
/// succeeded, what it printed to stdout and to stderr.
pub fn cli<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Spawns the service on `config`; `name` stands for the config file's path
/// in its messages.
pub fn spawn(config: ServiceConfig, name: &'static str) -> InProcess {
    spawn_with(config, name, None)
}

/// [`spawn`], the records also going to `http` (see [`Runtime::http`]).
pub fn spawn_with(
    config: ServiceConfig,
    name: &'static str,
    http: Option<Arc<fleetpulse::http::Hub>>,
) -> InProcess {
    let runtime = Runtime::new(http);
    let (metrics, shutdown) = (runtime.metrics.clone(), runtime.shutdown.clone());
    let task = tokio::spawn(async move { service::run(config, Path::new(name), runtime).await });
    InProcess {
        metrics,
        shutdown,
        task,
    }
}

/// [`spawn`], then waits until the service is subscribed to the broker.
pub async fn subscribed(config: ServiceConfig, name: &'static str) -> InProcess {
    until_subscribed(spawn(config, name)).await
}

/// A service with its HTTP port on a hub of the test's, subscribed.
pub async fn serving(
    config: ServiceConfig,
    name: &'static str,
) -> (InProcess, Arc<fleetpulse::http::Hub>) {
    let hub = fleetpulse::http::Hub::new();
    let service = until_subscribed(spawn_with(config, name, Some(hub.clone()))).await;
    (service, hub)
}

async fn until_subscribed(service: InProcess) -> InProcess {
    wait_for("subscription", || {
        service
            .metrics
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    service
}

/// Publishes `messages` through `mosquitto` as `client`, waits until
/// `service` handled `handled` messages in all, then `settle` for what
/// follows them (a day's close; a restatement pass runs once a second).
pub async fn publish_and_settle(
    service: &InProcess,
    mosquitto: &super::servers::Mosquitto,
    client: &str,
    messages: Vec<(String, Vec<u8>)>,
    handled: u64,
    settle: std::time::Duration,
) {
    let options = super::fleets::publish_options(mosquitto, client);
    fleetpulse_sim::publish(options, messages, |_| {})
        .await
        .unwrap();
    let metrics = service.metrics.clone();
    wait_for("the messages handled", move || metrics.handled() >= handled).await;
    tokio::time::sleep(settle).await;
}

/// `batches` as the messages their devices publish: topic and payload.
pub fn encoded(batches: &[&fleetpulse_proto::v1::TelemetryBatch]) -> Vec<(String, Vec<u8>)> {
    (batches.iter())
        .map(|b| {
            let topic = fleetpulse_proto::telemetry_topic(&b.customer_id, &b.site_id, &b.device_id);
            (topic, prost::Message::encode_to_vec(*b))
        })
        .collect()
}
