//! The consumer side of `fleetpulse bench`: the service (`fleetpulse run`'s
//! [`service::run`], the whole pipeline) in its own process, with the latency
//! probe installed, talking to the harness in JSON lines:
//!
//! - stdout `{"event":"ready",...}` once subscribed, then
//!   `{"event":"progress","handled":N,...}` as messages are handled;
//! - stdin closed by the harness: stop (drain the engine, flush the sinks),
//!   write the engine-input stamps to `--stamps`, print
//!   `{"event":"done",...}` (a [`ConsumerReport`]) and exit.
//!
//! The Python peers in `benches/peers/` speak the same protocol.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::probe::{LatencySummary, Probe, now_ns};
use super::procfs;
use fleetpulse::config::ServiceConfig;
use fleetpulse::metrics::IngestMetrics;
use fleetpulse::service::{self, Runtime};

/// `fleetpulse bench consume` arguments (started by the harness).
#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    /// Service configuration file.
    #[arg(long)]
    pub config: PathBuf,
    /// Where to write the engine-input stamps (`key ns` per line).
    #[arg(long)]
    pub stamps: PathBuf,
}

/// fleetpulse's counters of sequences and late data (0 for the peers).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LateCounters {
    /// Sequences skipped by devices and not delivered.
    pub sequence_gaps: i64,
    /// Batches the engine dropped as older than the sequences it remembers.
    pub replays_too_old: u64,
    /// Restatement passes run for late data.
    pub restatements: u64,
    /// Records those passes restated.
    pub records_restated: u64,
}

/// What a contender reports when it stops (the `done` line). The Python
/// peers fill the fields they have; the rest stay 0.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerReport {
    /// Messages taken from the broker and handled (accepted or rejected).
    pub handled: u64,
    /// Messages rejected.
    pub rejected: u64,
    /// Samples counted by the aggregation after deduplication (late ones
    /// included: restated into their windows).
    pub samples: u64,
    /// Duplicate messages dropped.
    pub duplicates: u64,
    /// fleetpulse's sequence and restatement counters.
    #[serde(flatten)]
    pub late: LateCounters,
    /// KPI records produced.
    pub records_emitted: u64,
    /// KPI records the store accepted.
    pub records_written: u64,
    /// Records the sinks gave up on.
    pub records_dropped: u64,
    /// CPU seconds from ready to done (all threads).
    pub cpu_seconds: f64,
    /// Peak resident set size, bytes.
    pub peak_rss_bytes: u64,
    /// Wall clock of the first and last message handed to the aggregation,
    /// ns since the epoch.
    pub first_input_ns: u64,
    /// See `first_input_ns`.
    pub last_input_ns: u64,
    /// Wall clock of the last completed store write.
    pub last_write_ns: u64,
    /// Window close to store, per record.
    pub store_latency: LatencySummary,
}

fn line(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Runs the consumer until stdin closes.
pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let config = ServiceConfig::load(&args.config)?;
    let metrics = Arc::new(IngestMetrics::default());
    let probe = Arc::new(Probe::default());
    metrics.probe.install(probe.clone());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    std::thread::Builder::new()
        .name("bench-stdin".into())
        .spawn(move || {
            let mut buf = String::new();
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            while matches!(lock.read_line(&mut buf), Ok(n) if n > 0) {
                buf.clear();
            }
            stop.cancel();
        })
        .context("cannot watch stdin")?;

    let runtime = Runtime {
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        http: None,
        in_place: false,
        names: Default::default(),
    };
    let path = args.config.clone();
    let mut service = tokio::spawn(async move { service::run(config, &path, runtime).await });

    let mut cpu_at_ready = None;
    let mut reported = u64::MAX;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            result = &mut service => break result,
            _ = ticker.tick() => {
                if cpu_at_ready.is_none() && metrics.subscribed.load(Relaxed) {
                    cpu_at_ready = procfs::cpu_seconds("self");
                    line(&serde_json::json!({"event": "ready"}));
                }
                let handled = metrics.handled();
                if handled != reported {
                    reported = handled;
                    line(&serde_json::json!({
                        "event": "progress",
                        "handled": handled,
                        "samples": metrics.samples_accepted.load(Relaxed),
                    }));
                }
            }
        }
    };
    let run = result.context("service task")??;
    let cpu = procfs::cpu_seconds("self").unwrap_or(0.0) - cpu_at_ready.unwrap_or(0.0);

    let inputs = probe.inputs();
    let mut text = String::with_capacity(inputs.len() * 32);
    for (key, ns) in &inputs {
        text.push_str(&format!("{key} {ns}\n"));
    }
    std::fs::write(&args.stamps, text)
        .with_context(|| format!("{}: cannot write", args.stamps.display()))?;

    let report = ConsumerReport {
        handled: metrics.handled(),
        rejected: metrics.rejected_total(),
        // Late readings count in their windows through the restatement.
        samples: run.engine.samples + run.engine.late_samples,
        duplicates: run.engine.duplicates,
        late: LateCounters {
            sequence_gaps: run.engine.sequence_gaps,
            replays_too_old: run.engine.replays_too_old,
            restatements: metrics.restatements.load(Relaxed),
            records_restated: metrics.records_restated.load(Relaxed),
        },
        records_emitted: metrics.records_emitted.load(Relaxed),
        records_written: run.sinks.iter().map(|s| s.records_written).sum(),
        records_dropped: run.sinks.iter().map(|s| s.records_dropped).sum(),
        cpu_seconds: cpu,
        peak_rss_bytes: procfs::peak_rss_bytes("self").unwrap_or(0),
        first_input_ns: inputs.iter().map(|(_, t)| *t).min().unwrap_or(0),
        last_input_ns: inputs.iter().map(|(_, t)| *t).max().unwrap_or(0),
        last_write_ns: probe.last_write_ns(),
        store_latency: probe.store_latency(),
    };
    let mut done = serde_json::to_value(&report)?;
    done["event"] = "done".into();
    done["at_ns"] = now_ns().into();
    line(&done);
    Ok(())
}
