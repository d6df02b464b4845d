//! `fleetpulse bench`: end-to-end throughput on real parts, side by side with
//! the peers, in one run.
//!
//! ```text
//! harness (this process)                      contenders, one after another
//!   simulator capture, pre-encoded              mosquitto_sub -C N > /dev/null   (broker ceiling)
//!   publisher (rumqttc, QoS 1) --> broker -->   fleetpulse-bench consume          (the service)
//!   stamps every publish                        benches/peers/pipeline.py          (Python)
//!   mosquitto | embedded rumqttd                benches/peers/bytewax_flow.py     (Bytewax)
//!   VictoriaMetrics | SQLite  <------------------ every contender writes its KPIs here
//! ```
//!
//! For each contender: start it, wait until it is subscribed, publish the
//! whole capture (as fast as the broker takes it, or at `--rate`), wait until
//! it has handled every message, stop it (it drains its windows and flushes
//! its writes) and collect its report. The sustained rate is messages from
//! the first publish to the last message handed to the aggregation; loss is
//! counted against the simulator's ground truth.
//!
//! The fleetpulse consumer is [`fleetpulse::service::run`] (what `fleetpulse run`
//! runs) in a child process, so its CPU time and peak RSS are its own; a
//! probe ([`fleetpulse::metrics::PipelineProbe`]) stamps each batch entering the
//! engine and each completed store write, for the latencies.

pub mod consumer;
mod contender;
pub mod probe;
mod procfs;
mod servers;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use fleetpulse_sim::{Fleet, FleetSpec, PublishOptions, QoS};
use serde::Serialize;

use self::consumer::ConsumeArgs;
use self::contender::{Ceiling, Contender};
use self::probe::{LatencySummary, message_key, now_ns};
use fleetpulse::progress::Progress;

/// Which broker the run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerKind {
    /// mosquitto 2, started by the harness with deploy/mosquitto/no-loss.conf
    /// (or the one at `--host`/`--port`).
    Mosquitto,
    /// The embedded rumqttd, in the harness process.
    Embedded,
}

/// Which store every contender writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// VictoriaMetrics through the InfluxDB v2 write API, started by the
    /// harness (or the one at `--store-url`). The peers need it.
    Victoriametrics,
    /// A SQLite file in the bench directory (fleetpulse only).
    Sqlite,
}

/// `fleetpulse bench` arguments.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Internal roles of the harness's child processes.
    #[command(subcommand)]
    pub role: Option<BenchRole>,
    /// Customers in the capture.
    #[arg(long, default_value_t = 6)]
    pub customers: usize,
    /// Devices in the capture.
    #[arg(long, default_value_t = 300)]
    pub devices: usize,
    /// Days of event time in the capture (one message per device per hour).
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Simulator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Broker to go through.
    #[arg(long, value_enum, default_value_t = BrokerKind::Mosquitto)]
    pub broker: BrokerKind,
    /// Host of a running mosquitto (default: the harness starts one).
    #[arg(long)]
    pub host: Option<String>,
    /// Port of the running mosquitto at `--host`.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Store every contender writes to.
    #[arg(long, value_enum, default_value_t = StoreKind::Victoriametrics)]
    pub store: StoreKind,
    /// URL of a running VictoriaMetrics (default: the harness starts one).
    #[arg(long)]
    pub store_url: Option<String>,
    /// Timely workers of the fleetpulse consumer (also its intake lanes).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// MQTT connections of the fleetpulse consumer (`mqtt.connections`).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Publish rate, messages/s (default: as fast as the broker takes them).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Also run fleetpulse once more at this publish rate, for latency below
    /// saturation (at full speed latency is queueing).
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Devices that lose coverage once for 6 to 72 hours and upload their
    /// buffer on reconnect: late traffic (about 37 late messages each; 256
    /// of the default 300 devices make some 5% of the messages late).
    #[arg(long, default_value_t = 0)]
    pub store_and_forward: usize,
    /// The consumer's `engine.correction_horizon`: `0s` refuses late data
    /// and keeps no archive (the delivery core alone).
    #[arg(long, default_value = "7d")]
    pub correction_horizon: String,
    /// Run the fleetpulse consumer without its write-ahead log (by default
    /// every batch is in the WAL before it is acknowledged, as in production).
    #[arg(long)]
    pub no_wal: bool,
    /// Skip the broker ceiling (mosquitto_sub to /dev/null).
    #[arg(long)]
    pub no_ceiling: bool,
    /// Also run the Python and Bytewax peers (install them first with
    /// `benches/peers/run.sh --install`).
    #[arg(long)]
    pub peers: bool,
    /// Where the peers and their virtualenv are.
    #[arg(long, default_value = "benches/peers")]
    pub peers_dir: PathBuf,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Keep the bench directory (configs, logs, stamps, stores) here instead
    /// of a temporary one that is removed at the end.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// The fleetpulse binary that runs the consumer (default: this one).
    #[arg(long, hide = true)]
    pub consumer_exe: Option<PathBuf>,
}

impl Default for BenchArgs {
    /// The command line's defaults, as `fleetpulse bench` alone gives them.
    fn default() -> Self {
        use clap::{Command, FromArgMatches};
        let matches = Self::augment_args(Command::new("bench")).get_matches_from(["bench"]);
        Self::from_arg_matches(&matches).expect("the defaults parse")
    }
}

/// Child-process roles.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchRole {
    /// The fleetpulse consumer (started by the harness).
    #[command(hide = true)]
    Consume(ConsumeArgs),
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// UTC date and time of the run.
    pub date: String,
}

/// The capture every contender gets.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureInfo {
    /// Simulator spec.
    pub spec: FleetSpec,
    /// Messages (ground truth).
    pub messages: u64,
    /// Samples (ground truth).
    pub samples: u64,
    /// Payload bytes.
    pub payload_bytes: u64,
}

/// One contender's run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Who.
    pub contender: String,
    /// Publish rate asked for (`None`: as fast as the broker takes them).
    pub publish_rate: Option<f64>,
    /// How fast it went.
    #[serde(flatten)]
    pub speed: Speed,
    /// What it cost.
    #[serde(flatten)]
    pub cost: Cost,
    /// What it lost, dropped and produced.
    #[serde(flatten)]
    pub counts: Counts,
    /// Publish (hand-over to the MQTT client) to engine input.
    pub input_latency: Option<LatencySummary>,
    /// Window close (engine emission) to store write completed.
    pub store_latency: Option<LatencySummary>,
}

/// How fast a run went.
#[derive(Debug, Clone, Serialize)]
pub struct Speed {
    /// First publish to the last message handed to the aggregation, s.
    pub seconds: f64,
    /// Sustained messages/s over `seconds`.
    pub messages_per_sec: f64,
    /// Sustained samples/s over `seconds`.
    pub samples_per_sec: f64,
    /// How long the publisher took, s.
    pub publish_seconds: f64,
    /// Stop to done: closing windows and flushing writes, s.
    pub drain_seconds: f64,
}

/// What a run cost (`None`: not measured).
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Contender CPU seconds (all threads) from subscribed to done.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds` per million samples.
    pub cpu_per_million_samples: Option<f64>,
    /// Contender peak RSS, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Broker CPU seconds during the run (a broker the harness started).
    pub broker_cpu_seconds: Option<f64>,
}

impl Cost {
    /// The cost of a run over `samples`, with the CPU per million of them.
    fn of(
        cpu_seconds: Option<f64>,
        samples: u64,
        peak_rss_bytes: Option<u64>,
        broker_cpu_seconds: Option<f64>,
    ) -> Cost {
        Cost {
            cpu_seconds,
            cpu_per_million_samples: cpu_seconds.map(|c| c / samples as f64 * 1e6),
            peak_rss_bytes,
            broker_cpu_seconds,
        }
    }
}

/// What a run lost, dropped and produced.
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    /// Messages of the ground truth not handled (None: cannot tell).
    pub lost_messages: Option<i64>,
    /// Samples of the ground truth not aggregated (after dedup).
    pub lost_samples: Option<i64>,
    /// Duplicates dropped (redeliveries).
    pub duplicates: u64,
    /// fleetpulse's sequence and restatement counters.
    #[serde(flatten)]
    pub late: consumer::LateCounters,
    /// KPI records produced and written.
    pub records_emitted: u64,
    /// See `records_emitted`.
    pub records_written: u64,
}

/// Throughput of fleetpulse over another contender, from one run.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The other contender.
    pub against: String,
    /// fleetpulse samples/s over theirs.
    pub throughput: f64,
    /// Their CPU per million samples over fleetpulse's.
    pub cpu_advantage: Option<f64>,
}

/// Everything a bench run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Where.
    pub machine: Machine,
    /// What was published.
    pub capture: CaptureInfo,
    /// Through which broker.
    pub broker: String,
    /// Into which store.
    pub store: String,
    /// fleetpulse's timely workers.
    pub workers: usize,
    /// One entry per contender run.
    pub runs: Vec<RunResult>,
    /// fleetpulse against each other contender.
    pub ratios: Vec<Ratio>,
}

impl BenchReport {
    /// The first full-speed fleetpulse run.
    pub fn fleetpulse(&self) -> Option<&RunResult> {
        self.runs
            .iter()
            .find(|r| r.contender.starts_with("fleetpulse") && r.publish_rate.is_none())
    }
}

/// Runs `fleetpulse bench` (or a child role) and prints the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchRole::Consume(consume)) = args.role {
        return consumer::consume(consume).await;
    }
    let json = args.json;
    let report = bench(args).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    let lossy: Vec<&str> = report
        .runs
        .iter()
        .filter(|r| r.contender.starts_with("fleetpulse"))
        .filter(|r| r.counts.lost_messages != Some(0) || r.counts.lost_samples != Some(0))
        .map(|r| r.contender.as_str())
        .collect();
    if !lossy.is_empty() {
        bail!("loss in {}", lossy.join(", "));
    }
    Ok(())
}

/// The pre-encoded capture and its ground truth.
struct Capture {
    messages: Arc<Vec<(String, Vec<u8>)>>,
    keys: Vec<u64>,
    info: CaptureInfo,
}

fn capture(spec: &FleetSpec) -> anyhow::Result<(Fleet, Capture)> {
    let fleet = Fleet::try_generate(spec).context("invalid fleet")?;
    let mut messages = Vec::with_capacity(fleet.message_count() as usize);
    let mut keys = Vec::with_capacity(messages.capacity());
    let (mut samples, mut bytes) = (0u64, 0u64);
    for message in fleet.messages() {
        keys.push(message_key(
            &message.batch.device_id,
            message.batch.sequence,
        ));
        samples += message.batch.samples.len() as u64;
        let (topic, payload) = message.into_encoded();
        bytes += payload.len() as u64;
        messages.push((topic, payload));
    }
    let info = CaptureInfo {
        spec: spec.clone(),
        messages: messages.len() as u64,
        samples,
        payload_bytes: bytes,
    };
    Ok((
        fleet,
        Capture {
            messages: Arc::new(messages),
            keys,
            info,
        },
    ))
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".into(), |m| m.trim().to_owned());
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        date,
    }
}

/// Where the contenders connect and write.
struct Setup {
    host: String,
    port: u16,
    broker_pid: Option<u32>,
    broker_log: Option<PathBuf>,
    store_url: Option<String>,
    sqlite: PathBuf,
    customers_file: PathBuf,
    dir: PathBuf,
    consumer_exe: PathBuf,
    wal: bool,
    connections: usize,
    correction_horizon: String,
}

/// Runs every contender and returns the report (nothing printed on stdout).
pub async fn bench(args: BenchArgs) -> anyhow::Result<BenchReport> {
    let spec = FleetSpec {
        customers: args.customers,
        devices: args.devices,
        days: args.days,
        seed: args.seed,
        store_and_forward: args.store_and_forward,
        ..FleetSpec::default()
    };
    let (temp, dir) = match &args.work_dir {
        Some(dir) => (false, dir.clone()),
        None => (
            true,
            std::env::temp_dir().join(format!("fleetpulse-bench-{}", std::process::id())),
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let result = bench_in(&args, &spec, &dir).await;
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn bench_in(args: &BenchArgs, spec: &FleetSpec, dir: &Path) -> anyhow::Result<BenchReport> {
    eprintln!(
        "fleetpulse bench: simulating {} customers, {} devices, {} days",
        spec.customers, spec.devices, spec.days
    );
    let (fleet, capture) = capture(spec)?;
    if spec.store_and_forward > 0 {
        // Late as admission sees it: older than the newest reading so far
        // minus the default allowed lateness (2 h).
        let (mut newest, mut late, mut all) = (0u64, 0u64, 0u64);
        for message in fleet.messages() {
            let first = message
                .batch
                .samples
                .first()
                .map_or(0, |s| s.event_time_ms as u64);
            all += 1;
            late += u64::from(first + 2 * 3_600_000 < newest);
            newest = newest.max(message.publish_time());
        }
        eprintln!(
            "fleetpulse bench: {late} of {all} messages late ({:.1}%), from {} devices out of coverage",
            100.0 * late as f64 / all.max(1) as f64,
            spec.store_and_forward
        );
    }
    let customers_file = dir.join("customers.toml");
    fleetpulse::sim::write_files(&fleet, None, Some(&customers_file))?;

    // The broker.
    let mut _mosquitto = None;
    let (host, port, broker_pid, broker_log, broker_name) = match (args.broker, &args.host) {
        (BrokerKind::Mosquitto, Some(host)) => (
            host.clone(),
            args.port,
            None,
            None,
            format!("mosquitto at {host}:{}", args.port),
        ),
        (BrokerKind::Mosquitto, None) => {
            let server = servers::mosquitto(dir)?;
            let described = format!(
                "mosquitto ({}), deploy/mosquitto/no-loss.conf",
                mosquitto_version()
            );
            let r = (
                server.addr.ip().to_string(),
                server.addr.port(),
                Some(server.pid()),
                Some(server.log.clone()),
                described,
            );
            _mosquitto = Some(server);
            r
        }
        (BrokerKind::Embedded, _) => {
            let broker = fleetpulse::broker::start(0)?;
            (
                broker.addr.ip().to_string(),
                broker.addr.port(),
                None,
                None,
                "embedded rumqttd (in the harness process)".to_owned(),
            )
        }
    };

    // The store.
    let mut _vm = None;
    let (store_url, store_name) = match (args.store, &args.store_url) {
        (StoreKind::Sqlite, _) => (None, "SQLite file".to_owned()),
        (StoreKind::Victoriametrics, Some(url)) => {
            (Some(url.clone()), format!("VictoriaMetrics at {url}"))
        }
        (StoreKind::Victoriametrics, None) => {
            let server = servers::victoria_metrics(dir).await?;
            let url = format!("http://{}", server.addr);
            _vm = Some(server);
            (
                Some(url),
                "VictoriaMetrics (InfluxDB v2 write API)".to_owned(),
            )
        }
    };
    if args.peers && store_url.is_none() {
        bail!("--peers needs --store victoriametrics: the peers write through the InfluxDB v2 API");
    }

    let consumer_exe = match &args.consumer_exe {
        Some(exe) => exe.clone(),
        // This very image, even if a rebuild replaced the file meanwhile.
        None if Path::new("/proc/self/exe").exists() => PathBuf::from("/proc/self/exe"),
        None => std::env::current_exe().context("cannot find the fleetpulse-bench binary")?,
    };
    let setup = Setup {
        host,
        port,
        broker_pid,
        broker_log,
        store_url,
        sqlite: dir.join("kpi.sqlite"),
        customers_file,
        dir: dir.to_owned(),
        consumer_exe,
        wal: !args.no_wal,
        correction_horizon: args.correction_horizon.clone(),
        connections: args.connections,
    };

    let mut runs = Vec::new();
    if !args.no_ceiling {
        match servers::find_binary("mosquitto_sub") {
            Some(program) => runs.push(run_ceiling(&setup, &capture, &program, args.rate).await?),
            None => eprintln!(
                "mosquitto_sub not found (apt-get install mosquitto-clients): no broker ceiling"
            ),
        }
    }
    runs.push(run_fleetpulse(&setup, &capture, args.workers, args.rate, 1).await?);
    if args.peers {
        for peer in [Peer::Python, Peer::Bytewax] {
            runs.push(run_peer(&setup, &capture, args, peer).await?);
        }
    }
    if let Some(rate) = args.latency_rate {
        runs.push(run_fleetpulse(&setup, &capture, args.workers, Some(rate), 2).await?);
    }

    let ratios = ratios(&runs);
    Ok(BenchReport {
        machine: machine(),
        capture: capture.info,
        broker: broker_name,
        store: store_name,
        workers: args.workers,
        runs,
        ratios,
    })
}

fn mosquitto_version() -> String {
    servers::find_binary("mosquitto")
        .and_then(|p| Command::new(p).arg("-h").output().ok())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "mosquitto".into())
}

fn ratios(runs: &[RunResult]) -> Vec<Ratio> {
    let Some(fp) = runs
        .iter()
        .find(|r| r.contender.starts_with("fleetpulse") && r.publish_rate.is_none())
        .or_else(|| runs.iter().find(|r| r.contender.starts_with("fleetpulse")))
    else {
        return Vec::new();
    };
    runs.iter()
        .filter(|r| !r.contender.starts_with("fleetpulse"))
        .map(|other| Ratio {
            against: other.contender.clone(),
            throughput: fp.speed.samples_per_sec / other.speed.samples_per_sec.max(1e-9),
            cpu_advantage: match (
                other.cost.cpu_per_million_samples,
                fp.cost.cpu_per_million_samples,
            ) {
                (Some(theirs), Some(ours)) if ours > 0.0 && theirs > 0.0 => Some(theirs / ours),
                _ => None,
            },
        })
        .collect()
}

/// Publish options for one contender run.
fn publish_options(setup: &Setup, client: &str, rate: Option<f64>) -> PublishOptions {
    PublishOptions {
        host: setup.host.clone(),
        port: setup.port,
        client_id: format!("fleetpulse-bench-pub-{client}"),
        qos: QoS::AtLeastOnce,
        rate,
        give_up_after: Duration::from_secs(120),
        ..PublishOptions::default()
    }
}

/// A publish run in flight: hand-over stamps per capture index.
struct Publishing {
    stamps: Arc<Vec<AtomicU64>>,
    task: tokio::task::JoinHandle<Result<fleetpulse_sim::PublishReport, fleetpulse_sim::SimError>>,
    started: Instant,
    started_ns: u64,
}

fn start_publishing(capture: &Capture, options: PublishOptions) -> Publishing {
    let n = capture.messages.len();
    let stamps: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let messages = capture.messages.clone();
    let marks = stamps.clone();
    let feed = (0..n).map(move |i| {
        marks[i].store(now_ns(), Relaxed);
        messages[i].clone()
    });
    let started_ns = now_ns();
    let task = tokio::spawn(fleetpulse_sim::publish(options, feed, |_| {}));
    Publishing {
        stamps,
        task,
        started: Instant::now(),
        started_ns,
    }
}

/// Waits until `handled()` reaches `total`; fails after `PATIENCE` without
/// progress once publishing is over, or if the contender exits.
async fn wait_handled(
    label: &'static str,
    total: u64,
    mut handled: impl FnMut() -> (u64, bool),
) -> anyhow::Result<()> {
    const PATIENCE: Duration = Duration::from_secs(120);
    let mut progress = Progress::new(label, "messages", total);
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let (now, exited) = handled();
        progress.set(now);
        if now >= total {
            progress.finish(&format!("{now} messages handled"));
            return Ok(());
        }
        if exited {
            bail!("{label}: the contender exited after {now} of {total} messages");
        }
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > PATIENCE {
            bail!("{label}: stuck at {now} of {total} messages for {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn broker_cpu(setup: &Setup) -> Option<f64> {
    setup
        .broker_pid
        .and_then(|pid| procfs::cpu_seconds(&pid.to_string()))
}

async fn run_ceiling(
    setup: &Setup,
    capture: &Capture,
    program: &Path,
    rate: Option<f64>,
) -> anyhow::Result<RunResult> {
    eprintln!("-- broker ceiling: mosquitto_sub -q 1 > /dev/null");
    let total = capture.info.messages;
    let client = "fleetpulse-bench-ceiling";
    let mut sub = Ceiling::spawn(
        program,
        &setup.host,
        setup.port,
        client,
        total,
        600,
        setup.dir.join("ceiling.log"),
    )?;
    match &setup.broker_log {
        Some(log) => {
            if !servers::wait_subscribed(log, client, Duration::from_secs(10)) {
                bail!("mosquitto_sub did not subscribe within 10 s");
            }
        }
        // No broker log to read: give it a moment.
        None => tokio::time::sleep(Duration::from_secs(1)).await,
    }
    let broker_cpu_before = broker_cpu(setup);
    let publishing = start_publishing(capture, publish_options(setup, "ceiling", rate));
    let exited_at;
    let mut progress = Progress::new("ceiling", "messages", total);
    loop {
        if let Some(ok) = sub.exited() {
            exited_at = now_ns();
            if !ok {
                bail!(
                    "mosquitto_sub failed: {}",
                    std::fs::read_to_string(setup.dir.join("ceiling.log")).unwrap_or_default()
                );
            }
            break;
        }
        if publishing.started.elapsed() > Duration::from_secs(600) {
            sub.kill();
            bail!("mosquitto_sub did not get {total} messages within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    progress.set(total);
    progress.finish("mosquitto_sub got every message");
    let published = publishing.task.await.context("publisher")??;
    let broker_cpu_seconds = broker_cpu_before.zip(broker_cpu(setup)).map(|(a, b)| b - a);
    let seconds = (exited_at - publishing.started_ns) as f64 / 1e9;
    Ok(RunResult {
        contender: "mosquitto_sub (broker ceiling)".into(),
        publish_rate: rate,
        speed: Speed {
            seconds,
            messages_per_sec: total as f64 / seconds,
            samples_per_sec: capture.info.samples as f64 / seconds,
            publish_seconds: published.elapsed.as_secs_f64(),
            drain_seconds: 0.0,
        },
        cost: Cost::of(
            sub.cpu_seconds(),
            capture.info.samples,
            None,
            broker_cpu_seconds,
        ),
        counts: Counts {
            lost_messages: Some(0),
            lost_samples: None,
            duplicates: 0,
            late: Default::default(),
            records_emitted: 0,
            records_written: 0,
        },
        input_latency: None,
        store_latency: None,
    })
}

fn fleetpulse_config(setup: &Setup, client_id: &str, workers: usize, wal: Option<&Path>) -> String {
    let wal = wal.map_or_else(String::new, |dir| {
        format!("[wal]\ndir = \"{}\"\n\n", dir.display())
    });
    let sink = match &setup.store_url {
        Some(url) => format!(
            "[[sinks]]\ntype = \"influxdb_v2\"\nurl = \"{url}\"\norg = \"fleetpulse\"\nbucket = \"fleetpulse\"\n"
        ),
        None => format!(
            "[[sinks]]\ntype = \"sqlite\"\npath = \"{}\"\n",
            setup.sqlite.display()
        ),
    };
    format!(
        "# Written by fleetpulse bench.\n\
         [mqtt]\n\
         host = \"{host}\"\n\
         port = {port}\n\
         client_id = \"{client_id}\"\n\
         # A clean session: a bench subscription must not outlive its run\n\
         # and queue every later run's messages on the broker.\n\
         persistent_session = false\n\
         connections = {connections}\n\n\
         [engine]\n\
         workers = {workers}\n\
         correction_horizon = \"{horizon}\"\n\n\
         [customers]\n\
         file = \"{customers}\"\n\n\
         {wal}\
         {sink}",
        host = setup.host,
        port = setup.port,
        customers = setup.customers_file.display(),
        connections = setup.connections,
        horizon = setup.correction_horizon,
    )
}

async fn run_fleetpulse(
    setup: &Setup,
    capture: &Capture,
    workers: usize,
    rate: Option<f64>,
    run: u32,
) -> anyhow::Result<RunResult> {
    let wal = if setup.wal { ", WAL" } else { ", no WAL" };
    let contender = match rate {
        None => format!("fleetpulse ({workers} workers{wal})"),
        Some(r) => format!("fleetpulse ({workers} workers{wal}) at {r:.0} msg/s"),
    };
    eprintln!("-- {contender}: fleetpulse run, full pipeline");
    let client_id = format!("fleetpulse-bench-{run}");
    let config = setup.dir.join(format!("fleetpulse-{run}.toml"));
    let wal = setup.wal.then(|| setup.dir.join(format!("wal-{run}")));
    std::fs::write(
        &config,
        fleetpulse_config(setup, &client_id, workers, wal.as_deref()),
    )?;
    let stamps_file = setup.dir.join(format!("engine-input-{run}.txt"));
    let mut command = Command::new(&setup.consumer_exe);
    command
        .arg("consume")
        .arg("--config")
        .arg(&config)
        .arg("--stamps")
        .arg(&stamps_file)
        // `FLEETPULSE_BENCH_LOG`: the consumer's filter, to look inside a
        // run (its log is in the work directory).
        .env(
            "RUST_LOG",
            std::env::var("FLEETPULSE_BENCH_LOG").unwrap_or_else(|_| "warn,rumqttd=off".into()),
        );
    let consumer = Contender::spawn(
        "fleetpulse",
        command,
        setup.dir.join(format!("fleetpulse-{run}.log")),
    )?;
    let (mut result, stamps) = measure(
        setup,
        capture,
        consumer,
        "fleetpulse",
        contender,
        &client_id,
        rate,
    )
    .await?;

    // publish -> engine input, joined on (device, sequence).
    let inputs: HashMap<u64, u64> = std::fs::read_to_string(&stamps_file)
        .with_context(|| format!("{}: cannot read", stamps_file.display()))?
        .lines()
        .filter_map(|l| {
            let (k, t) = l.split_once(' ')?;
            Some((k.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    let latencies: Vec<(u64, u64)> = capture
        .keys
        .iter()
        .enumerate()
        .filter_map(|(i, key)| {
            let input = inputs.get(key)?;
            let published = stamps[i].load(Relaxed);
            Some((input.saturating_sub(published), 1))
        })
        .collect();
    result.input_latency = Some(LatencySummary::of(latencies));
    Ok(result)
}

/// Runs a spawned contender through the capture: waits until it is ready,
/// publishes, waits until it has handled every message, stops it and reads
/// its report. Returns its result (no input latency: only fleetpulse stamps
/// it) and the publish stamps, one per message.
async fn measure(
    setup: &Setup,
    capture: &Capture,
    mut consumer: Contender,
    label: &'static str,
    contender: String,
    client_id: &str,
    rate: Option<f64>,
) -> anyhow::Result<(RunResult, Arc<Vec<AtomicU64>>)> {
    consumer.ready(Duration::from_secs(60)).await?;
    let broker_cpu_before = broker_cpu(setup);
    let publishing = start_publishing(capture, publish_options(setup, client_id, rate));
    wait_handled(label, capture.info.messages, || {
        (consumer.handled(), consumer.exited())
    })
    .await?;
    let stop_requested = Instant::now();
    let published = publishing.task.await.context("publisher")??;
    let report = consumer.stop(Duration::from_secs(600)).await?;
    let drain_seconds = stop_requested.elapsed().as_secs_f64();
    let broker_cpu_seconds = broker_cpu_before.zip(broker_cpu(setup)).map(|(a, b)| b - a);
    let seconds = report.last_input_ns.saturating_sub(publishing.started_ns) as f64 / 1e9;
    let truth = &capture.info;
    let unique = report
        .handled
        .saturating_sub(report.duplicates + report.rejected);
    let result = RunResult {
        contender,
        publish_rate: rate,
        speed: Speed {
            seconds,
            messages_per_sec: truth.messages as f64 / seconds.max(1e-9),
            samples_per_sec: truth.samples as f64 / seconds.max(1e-9),
            publish_seconds: published.elapsed.as_secs_f64(),
            drain_seconds,
        },
        cost: Cost::of(
            Some(report.cpu_seconds),
            truth.samples,
            Some(report.peak_rss_bytes),
            broker_cpu_seconds,
        ),
        counts: Counts {
            lost_messages: Some(truth.messages as i64 - unique as i64),
            lost_samples: Some(truth.samples as i64 - report.samples as i64),
            duplicates: report.duplicates,
            late: report.late,
            records_emitted: report.records_emitted,
            records_written: report.records_written,
        },
        input_latency: None,
        store_latency: (report.store_latency.count > 0).then_some(report.store_latency),
    };
    Ok((result, publishing.stamps))
}

/// The Python peers in `benches/peers/`.
#[derive(Debug, Clone, Copy)]
enum Peer {
    Python,
    Bytewax,
}

async fn run_peer(
    setup: &Setup,
    capture: &Capture,
    args: &BenchArgs,
    peer: Peer,
) -> anyhow::Result<RunResult> {
    let (name, script, contender) = match peer {
        Peer::Python => (
            "python",
            "pipeline.py",
            "Python (paho-mqtt + protobuf + influxdb-client)",
        ),
        Peer::Bytewax => ("bytewax", "bytewax_flow.py", "Bytewax dataflow"),
    };
    eprintln!("-- {contender}");
    let python = args.peers_dir.join(".venv/bin/python");
    if !python.is_file() {
        bail!(
            "{} missing: run benches/peers/run.sh --install first",
            python.display()
        );
    }
    let client_id = format!("fleetpulse-bench-{name}");
    let mut command = Command::new(&python);
    command
        .arg(args.peers_dir.join(script))
        .arg("--host")
        .arg(&setup.host)
        .arg("--port")
        .arg(setup.port.to_string())
        .arg("--client-id")
        .arg(&client_id)
        .arg("--store-url")
        .arg(setup.store_url.as_deref().unwrap_or_default())
        .arg("--customers")
        .arg(&setup.customers_file)
        .arg("--workers")
        .arg(args.workers.to_string());
    let consumer = Contender::spawn(name, command, setup.dir.join(format!("{name}.log")))?;
    let (result, _) = measure(
        setup,
        capture,
        consumer,
        name,
        contender.into(),
        &client_id,
        args.rate,
    )
    .await?;
    Ok(result)
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn fmt_latency(l: &Option<LatencySummary>) -> String {
    l.map_or_else(
        || "-".into(),
        |l| format!("{:.1} / {:.1} / {:.1}", l.p50_ms, l.p99_ms, l.max_ms),
    )
}

/// The report as a terminal table.
pub fn table(report: &BenchReport) -> String {
    let c = &report.capture;
    let mut out = String::new();
    out.push_str(&format!(
        "\nfleetpulse bench, {}\nmachine: {} cores, {}\ncapture: {} customers, {} devices, {} days: {} messages, {} samples, {:.1} MB payload\nbroker:  {} (QoS 1)\nstore:   {}\n\n",
        report.machine.date,
        report.machine.cores,
        report.machine.cpu_model,
        c.spec.customers,
        c.spec.devices,
        c.spec.days,
        c.messages,
        c.samples,
        c.payload_bytes as f64 / 1e6,
        report.broker,
        report.store,
    ));
    out.push_str(&format!(
        "{:<48} {:>9} {:>10} {:>7} {:>7} {:>9} {:>8} {:>7} {:>7} {:>22} {:>22}\n",
        "contender",
        "msgs/s",
        "samples/s",
        "secs",
        "CPU s",
        "CPU s/M",
        "RSS MiB",
        "brk CPU",
        "lost",
        "pub->engine p50/99/max",
        "close->store p50/99/max",
    ));
    for r in &report.runs {
        out.push_str(&format!(
            "{:<48} {:>9.0} {:>10.0} {:>7.2} {:>7} {:>9} {:>8} {:>7} {:>7} {:>22} {:>22}\n",
            r.contender,
            r.speed.messages_per_sec,
            r.speed.samples_per_sec,
            r.speed.seconds,
            fmt_opt(r.cost.cpu_seconds, 2),
            fmt_opt(r.cost.cpu_per_million_samples, 2),
            fmt_opt(
                r.cost.peak_rss_bytes.map(|b| b as f64 / (1 << 20) as f64),
                0
            ),
            fmt_opt(r.cost.broker_cpu_seconds, 2),
            match (r.counts.lost_messages, r.counts.lost_samples) {
                (Some(m), Some(s)) => format!("{m}/{s}"),
                (Some(m), None) => format!("{m}/-"),
                _ => "-".into(),
            },
            fmt_latency(&r.input_latency),
            fmt_latency(&r.store_latency),
        ));
    }
    out.push('\n');
    for ratio in &report.ratios {
        out.push_str(&format!(
            "fleetpulse vs {:<48} {:>6.2}x samples/s{}\n",
            ratio.against,
            ratio.throughput,
            ratio
                .cpu_advantage
                .map_or(String::new(), |a| format!(", {a:.1}x less CPU per sample")),
        ));
    }
    out.push_str(
        "\nsecs: first publish to last message into the aggregation; CPU s: the contender's, \
         subscribed to done; CPU s/M: per million samples; brk CPU: the broker's; lost: \
         messages/samples of the ground truth; latencies in ms.\n",
    );
    if std::io::stdout().is_terminal() {
        out.push_str("(--json for machines)\n");
    }
    out
}
