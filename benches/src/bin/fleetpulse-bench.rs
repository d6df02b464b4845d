//! `fleetpulse-bench`: end-to-end throughput on real parts (broker, service,
//! store), side by side with the broker's ceiling and the Python peers
//! (BENCHMARKS.md). `fleetpulse bench` runs this binary.

use anyhow::Context;
use clap::Parser;
use fleetpulse_benches::harness::{self, BenchArgs};

/// End-to-end throughput on real parts, side by side with the broker's
/// ceiling and the Python peers (BENCHMARKS.md).
#[derive(Parser)]
#[command(name = "fleetpulse-bench", version)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    fleetpulse::logging::init("warn,rumqttd=off");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(harness::run(cli.args));
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
