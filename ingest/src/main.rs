//! The `fleetpulse` command: parses arguments and calls into the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetpulse::config::ServiceConfig;
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
    },
    /// Validate a service file or a customers file without running.
    CheckConfig {
        /// The file to check; its kind is recognised by its content.
        file: PathBuf,
    },
    /// Simulate a fleet and publish its telemetry to a broker.
    Sim(fleetpulse::sim::SimArgs),
    /// Everything on one machine with nothing installed: embedded broker,
    /// simulated fleet, engine, SQLite store; prints a per-customer table.
    Demo(fleetpulse::demo::DemoArgs),
    /// End-to-end throughput on real parts (broker, service, store), side by
    /// side with the broker's ceiling and the Python peers (BENCHMARKS.md).
    Bench(fleetpulse::bench::BenchArgs),
    /// Write a customer's business-review report (self-contained HTML:
    /// outcomes, adoption, milestones, time to value) from the SQLite store.
    Report(fleetpulse::report::ReportArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log_filter(&cli))),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run { config, workers } => run(config, workers).await,
            Command::CheckConfig { file } => check_config(file),
            Command::Sim(args) => fleetpulse::sim::run(args).await,
            Command::Demo(args) => fleetpulse::demo::run(args).await,
            Command::Bench(args) => fleetpulse::bench::run(args).await,
            Command::Report(args) => fleetpulse::report::run(args),
        }
    })
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

async fn run(path: PathBuf, workers: Option<usize>) -> anyhow::Result<()> {
    let mut config = ServiceConfig::load(&path)?;
    if let Some(workers) = workers {
        config.engine.workers = workers;
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C: shutting down");
            on_signal.cancel();
        }
    });
    let runtime = Runtime {
        metrics: Arc::new(Default::default()),
        shutdown,
        http: None,
    };
    service::run(config, &path, runtime).await?;
    Ok(())
}

fn check_config(file: PathBuf) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    if text.contains("[[customer]]") {
        let customers = fleetpulse::customers::CustomersFile::parse(&file, &text)?;
        println!(
            "{}: ok, {} customers",
            file.display(),
            customers.customers.len()
        );
    } else {
        let config = ServiceConfig::load(&file)?;
        let engine = config.engine_config(&file)?;
        if let Some((customers, _)) = service::load_customers(&config, &engine)? {
            println!(
                "customers file: ok, {} customers",
                customers.customers.len()
            );
        }
        println!("{}: ok, {} sinks", file.display(), config.sinks.len());
    }
    Ok(())
}
