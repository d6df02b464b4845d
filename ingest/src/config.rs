//! The service configuration (`fleetpulse.toml`): broker, engine, customers
//! file, sinks, alerts, HTTP port. Typed so that parsing is validation;
//! errors name the file, line and field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetpulse_engine::{EngineConfig, FeatureCatalog, WindowSpec};
use serde::Deserialize;
use thiserror::Error;

use crate::alerts::AlertsConfig;
use crate::http::HttpConfig;
use crate::sinks::SinkConfig;

/// The whole service configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Where telemetry comes from.
    pub mqtt: MqttConfig,
    /// How KPIs are computed.
    pub engine: EngineSection,
    /// Per-customer contract data (`customers.toml`), relative to this file.
    pub customers: Option<CustomersRef>,
    /// Payload bounds.
    pub limits: LimitsConfig,
    /// Where KPIs are written; at least one.
    pub sinks: Vec<SinkConfig>,
    /// Where at-risk alerts are delivered (MQTT topic, webhook).
    pub alerts: AlertsConfig,
    /// The HTTP port: API, dashboard, `/metrics`, health checks.
    pub http: HttpConfig,
    /// Write-ahead log. With it, a message is acknowledged to the broker
    /// only once it is durable on disk, and a restart replays it: nothing is
    /// lost to a crash. Without it, messages are acknowledged on receipt.
    pub wal: Option<WalConfig>,
    /// Several processes as one timely cluster (docs/SCALING.md). Usually
    /// given on the command line (`--process`, `--hosts`/`--hostfile`) so
    /// every member can share this file.
    pub cluster: Option<ClusterConfig>,
    /// Longest a stop may take: intake stops, what is durable is processed,
    /// the stores are flushed. A store that is down delays the stop only
    /// this long; what is unwritten then stays in the WAL for the next
    /// start.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// ISO 15143-3 (AEMP 2.0) APIs polled for other brands' machines, one
    /// per OEM endpoint (docs/AEMP.md); their machines are mapped to
    /// customers in the customers file's `[[aemp_equipment]]`.
    pub aemp: Vec<crate::source::aemp::AempConfig>,
    /// Operator pseudonyms and how long evidence may name an operator
    /// (docs/SECURITY.md).
    #[serde(default)]
    pub privacy: crate::privacy::PrivacyConfig,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Timely cluster membership.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This process's index into `addresses`, from 0.
    #[serde(default)]
    pub process: usize,
    /// `host:port` of every member, in process order; the same list on
    /// every member. Timely listens on this process's own entry.
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl ClusterConfig {
    /// Reads a timely hosts file: one `host:port` a line, blank lines and
    /// `#` comments ignored.
    pub fn addresses_from_file(path: &Path) -> Result<Vec<String>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// More than one process.
    pub fn is_multi_process(&self) -> bool {
        self.addresses.len() > 1
    }
}

/// Write-ahead log settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// Directory of the segment files and the checkpoint; relative paths
    /// start at the service file. One process per directory: a second one
    /// refuses to start (`wal.lock`).
    pub dir: PathBuf,
    /// Size at which a segment file is closed and a new one started.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Most bytes the segment files may take. When the next batch would
    /// pass it (or the disk is full), intake pauses: nothing is
    /// acknowledged, `/readyz` answers 503, and intake resumes by itself
    /// once the checkpoint cuts old segments or disk is freed. At least two
    /// segments; none: only the disk bounds the log.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// How often (wall clock) every device's memory (last counters,
    /// sequence windows) is snapshotted beside the log. The log is cut only
    /// behind the newest snapshot the stores have caught up with, so a
    /// device silent for longer than the log keeps still counts its work.
    #[serde(default = "default_snapshot_every", with = "humantime_serde")]
    pub snapshot_every: std::time::Duration,
}

fn default_segment_bytes() -> u64 {
    16 * 1024 * 1024
}

fn default_snapshot_every() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

impl WalConfig {
    /// The log's options.
    pub fn options(&self) -> crate::wal::WalOptions {
        crate::wal::WalOptions {
            segment_bytes: self.segment_bytes,
            max_bytes: self.max_bytes,
            ..crate::wal::WalOptions::default()
        }
    }

    /// Sizes that can work: the active segment is never cut, so a bound
    /// below two segments could stay full for good.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        if let Some(max) = self.max_bytes
            && max < 2 * self.segment_bytes
        {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "wal.max_bytes".into(),
                message: format!(
                    "{max} is below two segments (2 x wal.segment_bytes = {}): the active \
                     segment is never cut, so the log could stay full for good",
                    2 * self.segment_bytes
                ),
            });
        }
        Ok(())
    }
}

/// Pointer to the customers file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomersRef {
    /// Path of `customers.toml`; relative paths start at the service file.
    pub file: PathBuf,
}

/// MQTT source settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port.
    pub port: u16,
    /// Client id; stable, so the broker keeps the session across restarts.
    pub client_id: String,
    /// Topic filter to subscribe to.
    pub topic: String,
    /// Subscribe through the MQTT shared subscription
    /// `$share/{shared_group}/{topic}`: the broker hands each message to one
    /// member of the group, so several processes split the load (mosquitto
    /// 2, EMQX; MQTT 3.1.1 clients included).
    pub shared_group: Option<String>,
    /// Keep the session (and queued QoS1 messages) on the broker while
    /// disconnected.
    pub persistent_session: bool,
    /// User name, if the broker requires one.
    pub username: Option<String>,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// CA certificate (PEM) to verify the broker with: connects over TLS
    /// when set.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require one (with
    /// `tls_client_key_file`).
    pub tls_client_cert_file: Option<PathBuf>,
    /// Client private key (PEM).
    pub tls_client_key_file: Option<PathBuf>,
    /// MQTT keep-alive interval.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// QoS1 messages the broker may have in flight to us.
    pub inflight: u16,
    /// Messages buffered between the network task and decoding.
    pub queue: usize,
    /// Payload bytes taken from the broker and not yet handed to the
    /// engine (queued, decoded, on their way to the WAL), over every
    /// connection and lane: the sources stop reading beyond it. Decoded,
    /// a batch takes about twice its payload.
    pub queue_bytes: usize,
    /// Largest MQTT packet the client takes from the broker (remaining
    /// length: topic, packet id and payload), bytes. Must be at least the
    /// broker's `message_size_limit` plus
    /// [`PUBLISH_OVERHEAD_BYTES`](crate::source::mqtt::PUBLISH_OVERHEAD_BYTES):
    /// a packet above it breaks the connection, and the broker would
    /// redeliver it on every reconnect. The default is the MQTT maximum,
    /// so any packet a broker can deliver is taken and too large a payload
    /// is refused by admission (`too_large`) instead. Lower it only to bound
    /// memory, and the broker's limit with it.
    pub max_packet_bytes: usize,
    /// MQTT connections of this process, each its own session on a shared
    /// subscription (`$share/{shared_group or client_id}/{topic}`), so the
    /// socket reads and acknowledgements spread over cores. Connection `i`
    /// uses the client id `{client_id}-{i}` (the first keeps `client_id`).
    /// Each message goes to the intake lane that owns its device, whichever
    /// connection brought it. Needs a broker that dispatches a shared
    /// subscription by topic, or a device's messages can overtake each
    /// other beyond `allowed_lateness` while a backlog drains.
    pub connections: usize,
}

fn default_connections() -> usize {
    1
}

/// Engine settings as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Timely worker threads.
    pub workers: usize,
    /// Tumbling window lengths, e.g. `["1h", "1d"]`; each is also its label.
    pub windows: Vec<String>,
    /// How far behind the newest event time data may arrive and still count.
    /// Must exceed the longest span a device buffers before publishing.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// How far behind the watermark telemetry is still taken in after its
    /// windows closed: it is archived and the windows it touches are
    /// restated with a higher revision (docs/KPIS.md, "Late data"). Older
    /// data is refused as `too_late`. Needs `[wal]` (the archive lives in
    /// its directory) and one process; `0s` refuses all late data.
    #[serde(with = "humantime_serde")]
    pub correction_horizon: Duration,
    /// Granularity of the engine's progress tracking.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// After this long without any message, the watermark starts to advance
    /// with wall time so quiet fleets still close windows.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Features that count as advanced (the rest are basic).
    pub advanced_features: Vec<String>,
}

/// Payload bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest payload accepted, bytes.
    pub max_payload_bytes: usize,
    /// Most samples in one message.
    pub max_samples: usize,
    /// How far ahead of the wall clock a sample may be (clock skew of the
    /// telematics unit); later ones are refused as `future_timestamp`.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Most distinct devices per customer; telemetry from further new
    /// devices is refused as `device_limit`, so one misbehaving client
    /// cannot grow memory or the store's series count without bound.
    pub max_devices_per_customer: usize,
    /// Earliest event time accepted from a customer without a contract start
    /// (RFC 3339); a customer in the customers file is refused data before
    /// its `contract.start` instead. Earlier samples are refused as
    /// `before_start`: a unit whose clock was lost would otherwise open
    /// decades of empty days.
    #[serde(with = "humantime_serde")]
    pub earliest_event_time: std::time::SystemTime,
    /// Where refused messages are kept for inspection (JSON lines, rotated
    /// at 64 MiB, payload prefix only); none when absent.
    pub dead_letter_file: Option<PathBuf>,
}

fn default_max_future() -> Duration {
    Duration::from_secs(600)
}
fn default_max_devices() -> usize {
    100_000
}
/// 2015-01-01T00:00:00Z: before any telematics unit speaking this protocol.
fn default_earliest_event_time() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(1_420_070_400)
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_client_id() -> String {
    "fleetpulse-ingest".into()
}
fn default_topic() -> String {
    fleetpulse_proto::TELEMETRY_FILTER.into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(60)
}
fn default_inflight() -> u16 {
    1000
}
fn default_queue() -> usize {
    4096
}
fn default_queue_bytes() -> usize {
    64 << 20
}
fn default_max_packet_bytes() -> usize {
    crate::source::mqtt::MQTT_MAX_PACKET_BYTES
}
fn default_workers() -> usize {
    1
}
fn default_windows() -> Vec<String> {
    vec!["1h".into(), "1d".into()]
}
fn default_lateness() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_correction_horizon() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_tick() -> Duration {
    Duration::from_secs(60)
}
fn default_idle_after() -> Duration {
    Duration::from_secs(30)
}
fn default_advanced_features() -> Vec<String> {
    FeatureCatalog::default().advanced
}
fn default_max_payload() -> usize {
    fleetpulse_proto::Limits::default().max_payload_bytes
}
fn default_max_samples() -> usize {
    fleetpulse_proto::Limits::default().max_samples
}
fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig::default()]
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: default_host(),
            port: default_port(),
            client_id: default_client_id(),
            topic: default_topic(),
            shared_group: None,
            persistent_session: true,
            username: None,
            password_env: None,
            tls_ca_file: None,
            tls_client_cert_file: None,
            tls_client_key_file: None,
            keep_alive: default_keep_alive(),
            inflight: default_inflight(),
            queue: default_queue(),
            queue_bytes: default_queue_bytes(),
            max_packet_bytes: default_max_packet_bytes(),
            connections: default_connections(),
        }
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            windows: default_windows(),
            allowed_lateness: default_lateness(),
            correction_horizon: default_correction_horizon(),
            tick: default_tick(),
            idle_after: default_idle_after(),
            advanced_features: default_advanced_features(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: default_max_payload(),
            max_samples: default_max_samples(),
            max_future: default_max_future(),
            max_devices_per_customer: default_max_devices(),
            earliest_event_time: default_earliest_event_time(),
            dead_letter_file: None,
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            mqtt: MqttConfig::default(),
            engine: EngineSection::default(),
            customers: None,
            limits: LimitsConfig::default(),
            sinks: default_sinks(),
            alerts: AlertsConfig::default(),
            http: HttpConfig::default(),
            wal: None,
            cluster: None,
            shutdown_timeout: default_shutdown_timeout(),
            aemp: Vec::new(),
            privacy: crate::privacy::PrivacyConfig::default(),
        }
    }
}

/// Whether this process can write at `place` (a directory if `dir`, else
/// a file; created with its parents if missing): `Err` says why not.
fn writable(place: &Path, dir: bool) -> Result<(), String> {
    if place.symlink_metadata().is_ok() && !place.exists() {
        return Err("is a symbolic link to nothing".to_string());
    }
    if dir && place.exists() && !place.is_dir() {
        return Err("is not a directory".to_string());
    }
    if !dir && place.is_dir() {
        return Err("is a directory, where a file goes".to_string());
    }
    let from = if place.is_file() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(place)
            .map_err(|e| format!("cannot be written: {e}"))?;
        // Its directory is written too: SQLite makes its journal beside
        // the store, the dead letters rotate there.
        place.parent().unwrap_or(Path::new("."))
    } else {
        place
    };
    let existing = from
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    let dir = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    tempfile::Builder::new()
        .prefix(".fleetpulse-check-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("cannot be written in {}: {e}", dir.display()))
}

/// A configuration file that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending item.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A value parses but cannot work.
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Several mistakes (each customer's first), one per line.
    #[error("{}", several(.0))]
    Several(Vec<ConfigError>),
}

/// Mistakes said at most: the same mistake made in each of 20,000
/// customers is read from the first ones and the count.
const SEVERAL_SHOWN: usize = 50;

fn several(errors: &[ConfigError]) -> String {
    let mut lines: Vec<String> = (errors.iter().take(SEVERAL_SHOWN))
        .map(ToString::to_string)
        .collect();
    if errors.len() > SEVERAL_SHOWN {
        lines.push(format!(
            "... and {} more ({} mistakes in all)",
            errors.len() - SEVERAL_SHOWN,
            errors.len()
        ));
    }
    lines.join("\n")
}

/// Parses TOML text into `T`, turning errors into `file:line:column: message`.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_column(text, span.start))
            .unwrap_or((1, 1));
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where each line of a text starts, for many [`line_column`]s over one
/// large file: each is then a binary search, not a count from the top (a
/// mistake made in each of 20,000 customers is named in seconds).
#[derive(Debug, Default)]
pub struct LineStarts(Vec<usize>);

impl LineStarts {
    pub fn of(text: &str) -> Self {
        let breaks = text.match_indices('\n').map(|(at, _)| at + 1);
        Self(std::iter::once(0).chain(breaks).collect())
    }

    /// [`line_column`] of `offset` in `text`, the text this was made of.
    pub fn line_column(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.0.partition_point(|&start| start <= offset);
        let start = self.0[line - 1];
        (line, text[start..offset].chars().count() + 1)
    }
}

impl MqttConfig {
    /// The settings of connection `index` of [`Self::connections`]: its own
    /// client id, and a shared subscription when there are several.
    pub fn connection(&self, index: usize) -> MqttConfig {
        let mut config = self.clone();
        if self.connections > 1 {
            config
                .shared_group
                .get_or_insert_with(|| self.client_id.clone());
            if index > 0 {
                config.client_id = format!("{}-{index}", self.client_id);
            }
        }
        config
    }

    /// The filter actually subscribed to: `topic`, or its shared form.
    pub fn subscription(&self) -> String {
        self.shared(&self.topic)
    }

    /// `topic`'s backfill twin (`.../telemetry` → `.../backfill`), where
    /// `fleetpulse backfill` publishes; `None` for a topic of another shape.
    pub fn backfill_topic(&self) -> Option<String> {
        (self.topic.strip_suffix("/telemetry")).map(|stem| format!("{stem}/backfill"))
    }

    /// Every filter subscribed to: telemetry and backfill, shared when
    /// [`Self::subscription`] is.
    pub fn subscriptions(&self) -> Vec<String> {
        std::iter::once(self.subscription())
            .chain(self.backfill_topic().map(|t| self.shared(&t)))
            .collect()
    }

    fn shared(&self, filter: &str) -> String {
        match &self.shared_group {
            Some(group) => format!("$share/{group}/{filter}"),
            None => filter.to_owned(),
        }
    }
}

/// Cluster member `process`'s own directory under a configured one
/// (`wal.dir`, `alerts.outbox_dir`).
pub fn member_dir(base: &Path, process: usize) -> PathBuf {
    base.join(format!("process-{process}"))
}

/// Cluster member `process`'s broker client id.
pub fn member_client_id(client_id: &str, process: usize) -> String {
    format!("{client_id}-{process}")
}

impl ServiceConfig {
    /// With a cluster of more than one member, appends the process index
    /// to the MQTT client id and the WAL directory (`{client_id}-{process}`,
    /// `{wal.dir}/process-{process}`), so members sharing one file keep
    /// their own broker session and their own WAL. The service calls it
    /// once at start.
    pub fn apply_cluster_member(&mut self) {
        let Some(cluster) = self.cluster.clone().filter(ClusterConfig::is_multi_process) else {
            return;
        };
        self.mqtt.client_id = member_client_id(&self.mqtt.client_id, cluster.process);
        if let Some(wal) = &mut self.wal {
            wal.dir = member_dir(&wal.dir, cluster.process);
        }
        // The alert outbox belongs to one process too.
        if let Some(outbox) = &mut self.alerts.outbox_dir {
            *outbox = member_dir(outbox, cluster.process);
        }
    }

    /// The cluster settings, checked.
    pub fn check_cluster(&self, path: &Path) -> Result<(), ConfigError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            message,
        };
        if cluster.addresses.is_empty() {
            return Err(invalid(
                "cluster.addresses",
                "name every member's host:port".into(),
            ));
        }
        if cluster.process >= cluster.addresses.len() {
            return Err(invalid(
                "cluster.process",
                format!(
                    "{} is not below the number of members ({})",
                    cluster.process,
                    cluster.addresses.len()
                ),
            ));
        }
        if cluster.is_multi_process() && self.mqtt.shared_group.is_none() {
            return Err(invalid(
                "mqtt.shared_group",
                "a cluster of several processes needs a shared subscription, \
                 or every member would receive every message"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The client's packet limit, checked against the payload limit: a
    /// payload the service would accept must never break the connection.
    pub fn check_packet_limit(&self, path: &Path) -> Result<(), ConfigError> {
        let overhead = crate::source::mqtt::PUBLISH_OVERHEAD_BYTES;
        let least = self.limits.max_payload_bytes.saturating_add(overhead);
        if self.mqtt.max_packet_bytes < least {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: "mqtt.max_packet_bytes".into(),
                message: format!(
                    "{} is below limits.max_payload_bytes ({}) plus {overhead} bytes of topic \
                     overhead: set it to at least {least}, and at least the broker's \
                     message_size_limit plus {overhead}",
                    self.mqtt.max_packet_bytes, self.limits.max_payload_bytes
                ),
            });
        }
        Ok(())
    }

    /// Reads and validates a service file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Self = parse_toml(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.engine_config(path)?;
        config.check_cluster(path)?;
        config.check_packet_limit(path)?;
        config.http.check(path)?;
        if let Some(wal) = &config.wal {
            wal.check(path)?;
        }
        crate::source::aemp::config::check_all(
            &config.aemp,
            path,
            config.wal.as_ref().map(|w| w.dir.as_path()),
        )?;
        Ok(config)
    }

    /// Makes relative paths in the file relative to the file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(customers) = &mut self.customers
            && customers.file.is_relative()
        {
            customers.file = base.join(&customers.file);
        }
        if let Some(wal) = &mut self.wal
            && wal.dir.is_relative()
        {
            wal.dir = base.join(&wal.dir);
        }
        for file in [
            self.limits.dead_letter_file.as_mut(),
            self.mqtt.tls_ca_file.as_mut(),
            self.mqtt.tls_client_cert_file.as_mut(),
            self.mqtt.tls_client_key_file.as_mut(),
            self.alerts.outbox_dir.as_mut(),
        ]
        .into_iter()
        .chain(self.aemp.iter_mut().map(|a| a.position_dir.as_mut()))
        .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        self.http.resolve_paths(base);
        for sink in &mut self.sinks {
            if let SinkConfig::Sqlite(sqlite) = sink
                && sqlite.path.is_relative()
            {
                sqlite.path = base.join(&sqlite.path);
            }
        }
    }

    /// The places the service writes (`wal.dir`, each SQLite sink's file,
    /// `limits.dead_letter_file`, `alerts.outbox_dir`, each AEMP
    /// `position_dir`), each named by its field.
    pub fn written_paths(&self) -> Vec<(String, PathBuf)> {
        let mut paths = Vec::new();
        if let Some(wal) = &self.wal {
            paths.push(("wal.dir".to_string(), wal.dir.clone()));
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            if let SinkConfig::Sqlite(sqlite) = sink {
                paths.push((format!("sinks[{i}].path"), sqlite.path.clone()));
            }
        }
        if let Some(file) = &self.limits.dead_letter_file {
            paths.push(("limits.dead_letter_file".to_string(), file.clone()));
        }
        // The outbox the service opens: its default lies in the WAL's.
        let wal_dir = self.wal.as_ref().map(|wal| wal.dir.as_path());
        if let Some(dir) = self.alerts.outbox_dir(wal_dir) {
            paths.push(("alerts.outbox_dir".to_string(), dir));
        }
        for (i, aemp) in self.aemp.iter().enumerate() {
            if let Some(dir) = &aemp.position_dir {
                paths.push((format!("aemp[{i}].position_dir"), dir.clone()));
            }
        }
        paths
    }

    /// The places of [`Self::written_paths`] this process cannot write (a
    /// read-only mount, a directory of another user, a file where a
    /// directory goes), each with why: checked by writing there, as the
    /// service will (an existing file opened for appending, nothing
    /// written; in the nearest existing directory, a temporary file made
    /// and removed), so `check-config` fails where `run` would.
    pub fn unwritable(&self, path: &Path) -> Vec<ConfigError> {
        let mut refused = Vec::new();
        for (field, place) in self.written_paths() {
            // The WAL, the outbox and the AEMP positions are directories;
            // the stores and the dead letters, files.
            let dir = field == "wal.dir" || field.ends_with("_dir");
            if let Err(message) = writable(&place, dir) {
                refused.push(ConfigError::Invalid {
                    path: path.to_owned(),
                    field,
                    message: format!("{}: {message}", place.display()),
                });
            }
        }
        refused
    }

    /// The engine settings, checked.
    pub fn engine_config(&self, path: &Path) -> Result<EngineConfig, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            message,
        };
        let mut windows = Vec::new();
        for (i, label) in self.engine.windows.iter().enumerate() {
            let length = humantime::parse_duration(label)
                .map_err(|e| invalid(&format!("engine.windows[{i}]"), format!("`{label}`: {e}")))?;
            windows.push(WindowSpec::new(label, length.as_millis() as u64));
        }
        if self.engine.workers == 0 {
            return Err(invalid("engine.workers", "must be at least 1".into()));
        }
        if self.sinks.is_empty() {
            return Err(invalid("sinks", "at least one sink is required".into()));
        }
        self.alerts
            .validate()
            .map_err(|e| invalid(e.field, e.message))?;
        let config = EngineConfig {
            windows,
            tick_ms: self.engine.tick.as_millis() as u64,
            features: FeatureCatalog {
                advanced: self.engine.advanced_features.clone(),
            },
            customers: Default::default(),
            journeys: Default::default(),
            devices: Default::default(),
            adoptions: Default::default(),
            allowed_lateness_ms: self.engine.allowed_lateness.as_millis() as u64,
        };
        config
            .validate()
            .map_err(|e| invalid("engine", e.to_string()))?;
        Ok(config)
    }

    /// Payload limits for validation.
    pub fn limits(&self) -> fleetpulse_proto::Limits {
        fleetpulse_proto::Limits {
            max_payload_bytes: self.limits.max_payload_bytes,
            max_samples: self.limits.max_samples,
            ..fleetpulse_proto::Limits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Line and column from the index of line starts equal those counted
    /// from the top, at every offset of a text with empty lines, CRLF,
    /// several-byte characters and no final newline, and past its end.
    #[test]
    fn line_starts_agree_with_counting_from_the_top() {
        let text = "a = 1\n\n\r\nname = \"Zürich — 東京\"\n\tkey = 'é'\nlast";
        let starts = LineStarts::of(text);
        for offset in (0..=text.len() + 3).filter(|&o| o > text.len() || text.is_char_boundary(o)) {
            assert_eq!(
                starts.line_column(text, offset),
                line_column(text, offset),
                "offset {offset}"
            );
        }
        assert_eq!(LineStarts::of("").line_column("", 0), (1, 1));
    }

    /// `text` parsed as the service file `svc.toml`.
    fn service(text: &str) -> ServiceConfig {
        parse_toml(Path::new("svc.toml"), text).unwrap()
    }

    /// `check` refuses the service file `text` with a message naming
    /// `needle`.
    fn assert_refused<E: std::fmt::Display>(
        text: &str,
        check: impl Fn(&ServiceConfig, &Path) -> Result<(), E>,
        needle: &str,
    ) {
        let Err(err) = check(&service(text), Path::new("svc.toml")) else {
            panic!("accepted: {text}");
        };
        assert!(err.to_string().contains(needle), "{err}");
    }

    #[test]
    fn defaults_are_valid() {
        let config: ServiceConfig = parse_toml(Path::new("x.toml"), "").unwrap();
        config.engine_config(Path::new("x.toml")).unwrap();
        assert_eq!(config.mqtt.port, 1883);
        assert_eq!(config.engine.allowed_lateness, Duration::from_secs(7200));
    }

    #[test]
    fn earliest_event_time_is_an_rfc3339_time() {
        let config: ServiceConfig = parse_toml(Path::new("x.toml"), "").unwrap();
        let default = config.limits.earliest_event_time;
        assert_eq!(
            humantime::format_rfc3339(default).to_string(),
            "2015-01-01T00:00:00Z"
        );
        let text = "[limits]\nearliest_event_time = \"2020-06-01T00:00:00Z\"\n";
        let config: ServiceConfig = parse_toml(Path::new("x.toml"), text).unwrap();
        let ms = config
            .limits
            .earliest_event_time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert_eq!(ms.as_millis(), 1_590_969_600_000);
        let text = "[limits]\nearliest_event_time = \"last year\"\n";
        let err = parse_toml::<ServiceConfig>(Path::new("x.toml"), text).unwrap_err();
        assert!(err.to_string().starts_with("x.toml:2:"), "{err}");
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let text = "[mqtt]\nhost = \"h\"\nprot = 1\n";
        let err = parse_toml::<ServiceConfig>(Path::new("svc.toml"), text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("svc.toml:3:"), "{msg}");
        assert!(msg.contains("prot"), "{msg}");
    }

    #[test]
    fn bad_windows_name_the_field() {
        let windows = |c: &ServiceConfig, path: &Path| c.engine_config(path).map(drop);
        let text = "[engine]\nwindows = [\"1h\", \"soon\"]\n";
        assert_refused(text, windows, "engine.windows[1]");
        let text = "[engine]\nwindows = [\"90s\"]\n";
        assert_refused(text, windows, "multiple of the tick");
    }

    #[test]
    fn a_packet_limit_below_the_payload_limit_is_refused() {
        let path = Path::new("svc.toml");
        let config = service("");
        config.check_packet_limit(path).unwrap();
        let text = "[mqtt]\nmax_packet_bytes = 300000\n[limits]\nmax_payload_bytes = 262144\n";
        let config = service(text);
        let err = config.check_packet_limit(path).unwrap_err().to_string();
        assert!(
            err.contains("mqtt.max_packet_bytes") && err.contains("327683"),
            "{err}"
        );
        let text = "[mqtt]\nmax_packet_bytes = 327683\n";
        let config = service(text);
        config.check_packet_limit(path).unwrap();
    }

    #[test]
    fn cluster_members_get_their_own_session_and_wal() {
        let text = "[mqtt]\nclient_id = \"fp\"\nshared_group = \"g\"\n[wal]\ndir = \"/var/wal\"\n\
                    [cluster]\nprocess = 1\naddresses = [\"a:1\", \"b:1\"]\n";
        let mut config = service(text);
        config.check_cluster(Path::new("svc.toml")).unwrap();
        assert_eq!(config.mqtt.subscription(), "$share/g/fleet/+/+/+/telemetry");
        assert_eq!(
            config.mqtt.subscriptions(),
            [
                "$share/g/fleet/+/+/+/telemetry",
                "$share/g/fleet/+/+/+/backfill"
            ]
        );
        config.apply_cluster_member();
        assert_eq!(config.mqtt.client_id, "fp-1");
        assert_eq!(config.wal.unwrap().dir, PathBuf::from("/var/wal/process-1"));
    }

    #[test]
    fn wal_sizes_are_checked_and_reach_the_log() {
        let text = "[wal]\ndir = \"w\"\nsegment_bytes = 1048576\nmax_bytes = 4194304\n";
        let config = service(text);
        let wal = config.wal.unwrap();
        wal.check(Path::new("svc.toml")).unwrap();
        let options = wal.options();
        assert_eq!(options.segment_bytes, 1 << 20);
        assert_eq!(options.max_bytes, Some(4 << 20));
        let text = "[wal]\ndir = \"w\"\nsegment_bytes = 1048576\nmax_bytes = 1048576\n";
        let config = service(text);
        let err = config
            .wal
            .unwrap()
            .check(Path::new("svc.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("wal.max_bytes"), "{err}");
        let text = "[wal]\ndir = \"w\"\n";
        let config = service(text);
        assert_eq!(config.wal.unwrap().options().max_bytes, None);
    }

    #[test]
    fn a_cluster_without_a_shared_subscription_is_refused() {
        let cluster = ServiceConfig::check_cluster;
        let text = "[cluster]\nprocess = 2\naddresses = [\"a:1\", \"b:1\"]\n";
        assert_refused(text, cluster, "cluster.process");
        let text = "[cluster]\nprocess = 1\naddresses = [\"a:1\", \"b:1\"]\n";
        assert_refused(text, cluster, "mqtt.shared_group");
    }
}
