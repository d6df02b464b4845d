//! The `fleetpulse` command: parses arguments and calls into the library.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetpulse::config::{ClusterConfig, ServiceConfig};
use fleetpulse::service::{self, Runtime};
use tokio_util::sync::CancellationToken;

/// fleetpulse: machine telemetry in, customer-success signals out.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: subscribe to telemetry, compute KPIs, write them to the sinks.
    Run {
        /// Service configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Timely worker threads (overrides engine.workers).
        #[arg(long)]
        workers: Option<usize>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Validate a service file or a customers file without running.
    CheckConfig {
        /// The file to check; its kind is recognised by its content.
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The same, named as the other commands name the service's file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Check the file alone, not whether this machine can write the
        /// places it names (WAL, stores, dead letters, outbox): for a file
        /// meant for another machine.
        #[arg(long)]
        file_only: bool,
    },
    /// Simulate a fleet and publish its telemetry to a broker.
    Sim(Box<fleetpulse::sim::SimArgs>),
    /// Everything on one machine with nothing installed: embedded broker,
    /// simulated fleet, engine, SQLite store; prints a per-customer table.
    Demo(fleetpulse::demo::DemoArgs),
    /// End-to-end throughput on real parts (broker, service, store), side by
    /// side with the broker's ceiling and the Python peers (BENCHMARKS.md).
    /// Runs the `fleetpulse-bench` binary beside this one (`cargo build
    /// --release -p fleetpulse-benches`) with the same arguments; `fleetpulse
    /// bench --help` lists them.
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments of `fleetpulse-bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Send refused messages again (dead letters of reasons that may have
    /// gone away, e.g. `too_late` beyond a correction horizon since raised)
    /// to the service's broker: `fleetpulse replay dead-letters.jsonl -c
    /// fleetpulse.toml`.
    Replay(fleetpulse::replay::ReplayArgs),
    /// Load a customer's history (recorded batches, or a CSV of readings)
    /// into the running service, however old: its windows and journey are
    /// computed again from its first reading: `fleetpulse backfill
    /// history.csv -c fleetpulse.toml`.
    Backfill(fleetpulse::backfill::BackfillArgs),
    /// Fold a customer's journey again from a date with its definition in
    /// the customers file (the service also does it when the file changes):
    /// `fleetpulse recompute --customer acme --from 2026-03-01 -c
    /// fleetpulse.toml`.
    Recompute(fleetpulse::recompute::RecomputeArgs),
    /// Write a customer's business-review report (self-contained HTML:
    /// outcomes, adoption, milestones, time to value) from the SQLite store.
    Report(fleetpulse::report::ReportArgs),
    /// Users and API tokens of the HTTP port (users.toml): `users add`,
    /// `users token`, `users list`, `users remove`.
    Users(fleetpulse::http::auth::cli::UsersArgs),
    /// The CS team's touchpoints in the SQLite store: `touchpoints add`,
    /// `touchpoints import FILE.csv`, `touchpoints list`.
    Touchpoints(fleetpulse::touchpoints::cli::TouchpointsArgs),
    /// Contract events recorded in the SQLite store, beside the customers
    /// file's, for revenue retention: `contracts add`, `contracts import
    /// FILE.csv`, `contracts list`.
    Contracts(fleetpulse::contracts::cli::ContractsArgs),
    /// Is the health score any good? Runs simulated fleets whose customers
    /// all come to renewal (churn odds by profile) through the engine and
    /// prints the score's ROC AUC 30, 60 and 90 days before each decision,
    /// and the churn rate per band (docs/CUSTOMER_SUCCESS.md).
    HealthValidation(fleetpulse::health_validation::HealthValidationArgs),
    /// Replay simulated fleets over many seeds through the engine and score
    /// the `forecast_red` rule: precision, recall, lead time before
    /// `health_red`, false alarms on healthy customers (BENCHMARKS.md).
    Backtest(fleetpulse::backtest::BacktestArgs),
}

/// Timely's cluster settings (docs/SCALING.md); they override `[cluster]`.
#[derive(clap::Args)]
struct ClusterArgs {
    /// This process's index in the cluster, from 0.
    #[arg(long, short = 'p')]
    process: Option<usize>,
    /// Number of processes; checked against the host list.
    #[arg(long, short = 'n')]
    processes: Option<usize>,
    /// Every member's host:port, in process order, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "hostfile")]
    hosts: Option<Vec<String>>,
    /// Timely hosts file: one host:port a line, in process order.
    #[arg(long)]
    hostfile: Option<PathBuf>,
}

impl ClusterArgs {
    fn apply(self, config: &mut ServiceConfig) -> anyhow::Result<()> {
        let addresses = match (self.hosts, &self.hostfile) {
            (Some(hosts), _) => Some(hosts),
            (None, Some(file)) => Some(ClusterConfig::addresses_from_file(file)?),
            (None, None) => None,
        };
        if addresses.is_none() && self.process.is_none() && self.processes.is_none() {
            return Ok(());
        }
        let cluster = config.cluster.get_or_insert_with(ClusterConfig::default);
        if let Some(addresses) = addresses {
            cluster.addresses = addresses;
        }
        if let Some(process) = self.process {
            cluster.process = process;
        }
        if let Some(n) = self.processes
            && n != cluster.addresses.len()
        {
            anyhow::bail!(
                "--processes {n} but {} host addresses were given",
                cluster.addresses.len()
            );
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    fleetpulse::logging::init(default_log_filter(&cli));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run {
                config,
                workers,
                cluster,
            } => run(config, workers, cluster).await,
            Command::CheckConfig {
                file,
                config,
                file_only,
            } => check_config(file.or(config).expect("clap requires one"), !file_only),
            Command::Sim(args) => fleetpulse::sim::run(*args).await,
            Command::Demo(args) => fleetpulse::demo::run(args).await,
            Command::Bench { args } => bench(args),
            Command::Replay(args) => fleetpulse::replay::run(&args).await.map(|_| ()),
            Command::Backfill(args) => fleetpulse::backfill::run(&args).await.map(|_| ()),
            Command::Recompute(args) => fleetpulse::recompute::run(&args).map(|_| ()),
            Command::Report(args) => fleetpulse::report::run(args),
            Command::Users(args) => fleetpulse::http::auth::cli::run(args),
            Command::Touchpoints(args) => fleetpulse::touchpoints::cli::run(args),
            Command::Contracts(args) => fleetpulse::contracts::cli::run(args),
            Command::HealthValidation(args) => fleetpulse::health_validation::run(args).await,
            // The engine's input blocks: off the async runtime's threads.
            Command::Backtest(args) => {
                tokio::task::spawn_blocking(move || fleetpulse::backtest::run(args)).await?
            }
        }
    });
    // A stop that hit `shutdown_timeout` may leave a thread waiting on a
    // store that is down; what it holds is in the WAL. Do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    // The error chain printed at exit bypasses the log: redact it too.
    result.map_err(|e| anyhow::anyhow!("{}", fleetpulse::secrets::redact(&chain(&e))))
}

/// The error and its causes on one line, each cause once: many of the
/// service's errors end their message with their source's, which `{:#}`
/// would print a second time ("...: No such file or directory (os error
/// 2): No such file or directory (os error 2)").
fn chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if line.ends_with(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}

/// The demo and the simulator draw progress bars; keep the log to warnings
/// there unless RUST_LOG says otherwise.
fn default_log_filter(cli: &Cli) -> &'static str {
    match cli.command {
        Command::Run { .. } => "info,rumqttd=warn",
        // rumqttd logs every client disconnect as an error.
        _ => "warn,rumqttd=off",
    }
}

async fn run(path: PathBuf, workers: Option<usize>, cluster: ClusterArgs) -> anyhow::Result<()> {
    let mut config = ServiceConfig::load(&path)?;
    if let Some(workers) = workers {
        config.engine.workers = workers;
    }
    cluster.apply(&mut config)?;
    config.check_cluster(&path)?;
    if config
        .cluster
        .as_ref()
        .is_some_and(ClusterConfig::is_multi_process)
    {
        exit_on_panic();
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        // SIGHUP rereads the HTTP port's users file and certificate (the
        // server listens for it itself); it never stops the service.
        let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = hangup.recv() => continue,
            }
            break;
        }
        on_signal.cancel();
    });
    // One set of counters for the process: a start in place goes on
    // counting, as `/metrics` readers expect of a process that did not exit.
    let metrics: Arc<fleetpulse::metrics::IngestMetrics> = Arc::new(Default::default());
    // A start in place keeps the HTTP port open and its sign-ins.
    let (mut http, mut in_place, mut names) = (None, false, Default::default());
    loop {
        let runtime = Runtime {
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            http,
            in_place,
            names,
        };
        let mut report = service::run(config.clone(), &path, runtime).await?;
        http = report.http.take();
        names = std::mem::take(&mut report.names);
        if !report.restart || shutdown.is_cancelled() {
            // A SIGTERM during the stop of a start in place.
            if let Some(server) = http.and_then(|kept| kept.server) {
                server.stop().await;
            }
            return Ok(());
        }
        tracing::info!("starting again in place");
        in_place = true;
        if !report.added.is_empty() {
            let (config, metrics) = (config.clone(), metrics.clone());
            tokio::spawn(fleetpulse::replay::resend_onboarded(
                config,
                report.added,
                metrics,
            ));
        }
    }
}

/// A timely cluster does not survive the loss of a member: its network
/// threads panic when a peer goes away, and the dataflow can no longer make
/// progress. Exit instead of hanging, so the supervisor (systemd,
/// Kubernetes) restarts the whole cluster, which then recovers from the
/// members' WALs.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!(
            "cluster member failed ({info}); exiting so the cluster restarts as a unit"
        );
        std::process::exit(EXIT_CLUSTER_LOST);
    }));
}

/// Exit status after a cluster member was lost.
const EXIT_CLUSTER_LOST: i32 = 75;

/// Runs `fleetpulse-bench` from this binary's directory with `args`, and
/// exits with its status.
fn bench(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the fleetpulse binary")?;
    let harness = exe.with_file_name("fleetpulse-bench");
    if !harness.exists() {
        anyhow::bail!(
            "{} not found: the benchmark harness is its own binary; build it with \
             `cargo build --release -p fleetpulse-benches` (or run \
             `cargo run --release -p fleetpulse-benches --bin fleetpulse-bench -- ...`)",
            harness.display()
        );
    }
    let status = std::process::Command::new(&harness)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", harness.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// The top-level keys of a customers file.
const CUSTOMERS_KEYS: [&str; 4] = [
    "customer",
    "contract_events_csv",
    "coverage",
    "aemp_equipment",
];

/// The top-level keys of a service file (`ServiceConfig`).
const SERVICE_KEYS: [&str; 12] = [
    "mqtt",
    "engine",
    "customers",
    "limits",
    "sinks",
    "alerts",
    "http",
    "wal",
    "cluster",
    "shutdown_timeout",
    "aemp",
    "privacy",
];

/// What `check-config` takes a file for.
#[derive(Debug, PartialEq)]
enum ConfigKind {
    Customers,
    Service,
}

/// Whether `text` (TOML) is a customers file or a service file, by its
/// top-level keys: `customer` (or only other keys of a customers file)
/// makes a customers file, a key of the service's (`mqtt`, `sinks`, ...)
/// a service file. A file with neither is refused, saying what each
/// needs; one that is not TOML is named at its mistake.
fn config_kind(file: &std::path::Path, text: &str) -> anyhow::Result<ConfigKind> {
    let table: std::collections::BTreeMap<String, toml::Spanned<toml::Value>> =
        fleetpulse::config::parse_toml(file, text)?;
    let has = |keys: &[&str]| table.keys().any(|k| keys.contains(&k.as_str()));
    if table.contains_key("customer") {
        return Ok(ConfigKind::Customers);
    }
    if has(&SERVICE_KEYS) {
        return Ok(ConfigKind::Service);
    }
    if has(&CUSTOMERS_KEYS) {
        return Ok(ConfigKind::Customers);
    }
    let needs = format!(
        "a customers file names its customers in `[[customer]]` tables (top-level keys: {}); \
         a service file has the sections of deploy/config/fleetpulse.toml (top-level keys: {})",
        CUSTOMERS_KEYS.join(", "),
        SERVICE_KEYS.join(", ")
    );
    match table.iter().min_by_key(|(_, v)| v.span().start) {
        None => anyhow::bail!(
            "{}: neither a customers file nor a service file: it holds no setting (empty, or \
             only comments; as a customers file it would name no customer): {needs}",
            file.display()
        ),
        Some((key, value)) => {
            let (line, column) = fleetpulse::config::line_column(text, value.span().start);
            anyhow::bail!(
                "{}:{line}:{column}: neither a customers file nor a service file: unknown \
                 top-level key `{key}`: {needs}",
                file.display()
            )
        }
    }
}

/// Checks `file`; a service file's written places too (`places`), as
/// `run` would use them.
fn check_config(file: PathBuf, places: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    if config_kind(&file, &text)? == ConfigKind::Customers {
        let customers = fleetpulse::customers::CustomersFile::parse(&file, &text)?;
        println!(
            "{}: ok, {} customers",
            file.display(),
            customers.customers.len()
        );
        for warning in customers.warnings() {
            println!("warning: {warning}");
        }
    } else {
        let config = ServiceConfig::load(&file)?;
        let engine = config.engine_config(&file)?;
        let unwritable = if places {
            config.unwritable(&file)
        } else {
            Vec::new()
        };
        if !unwritable.is_empty() {
            return Err(fleetpulse::config::ConfigError::Several(unwritable).into());
        }
        if let Some((customers, _, _)) = service::load_customers(&config, &engine)? {
            println!(
                "customers file: ok, {} customers",
                customers.customers.len()
            );
            for warning in customers.warnings() {
                println!("warning: {warning}");
            }
        }
        println!("{}: ok, {} sinks", file.display(), config.sinks.len());
    }
    Ok(())
}
