//! The whole engine over an in-memory list of batches: the same workers,
//! dataflow and watermark rule the service uses, minus the network. For
//! tests, benchmarks and replays.

use tokio::sync::mpsc;

use crate::config::EngineConfig;
use crate::kpi::Output;
use crate::model::DeviceBatch;
use crate::stats::StatsSnapshot;
use crate::watermark::Watermark;
use crate::workers::{Engine, EngineError, EngineEvent, EngineOptions};

/// Batches handed to the engine at once.
const GROUP: usize = 256;

/// What a run produced.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// Every closed window, in no particular order.
    pub outputs: Vec<Output>,
    /// Batches refused as older than the watermark.
    pub late: Vec<DeviceBatch>,
    /// Engine counters at the end.
    pub stats: StatsSnapshot,
}

/// Feeds `batches` in order through `workers` workers, advancing the
/// watermark as ingest would (newest event time minus `lateness_ms`), then
/// closes the input so every window is emitted.
pub fn run_batches(
    config: EngineConfig,
    workers: usize,
    lateness_ms: u64,
    batches: impl IntoIterator<Item = DeviceBatch>,
) -> Result<RunOutcome, EngineError> {
    run_batches_keeping(config, workers, lateness_ms, batches, |_| true)
}

/// [`run_batches`], keeping only the records `keep` accepts: a long run
/// that needs one kind of record (e.g. daily health) does not hold every
/// hourly device window in memory.
pub fn run_batches_keeping(
    config: EngineConfig,
    workers: usize,
    lateness_ms: u64,
    batches: impl IntoIterator<Item = DeviceBatch>,
    keep: impl Fn(&Output) -> bool + Send + 'static,
) -> Result<RunOutcome, EngineError> {
    let (events, mut received) = mpsc::channel(64);
    let options = EngineOptions {
        workers,
        ..EngineOptions::default()
    };
    let mut engine = Engine::start(config, &options, events)?;
    let stats = engine.stats();
    let collector = std::thread::spawn(move || {
        let mut outputs = Vec::new();
        while let Some(event) = received.blocking_recv() {
            if let EngineEvent::Records(records) = event {
                outputs.extend(records.into_iter().filter(|r| keep(r)));
            }
        }
        outputs
    });
    let mut watermark = Watermark::new(lateness_ms);
    let mut late = Vec::new();
    // In groups, as the service's intake lanes hand them over: one channel
    // hand-over per worker per group, then the group's watermark.
    let mut group = Vec::with_capacity(GROUP);
    for batch in batches {
        match watermark.admit(batch.first_at(), batch.last_at()) {
            Ok(()) => group.push(batch),
            Err(_) => late.push(batch),
        }
        if group.len() == GROUP {
            engine.blocking_send_all(std::mem::take(&mut group))?;
            engine.blocking_advance(watermark.current())?;
        }
    }
    engine.blocking_send_all(group)?;
    engine.blocking_advance(watermark.current())?;
    engine.finish()?;
    let outputs = collector
        .join()
        .map_err(|_| EngineError::Worker("result collector panicked".into()))?;
    Ok(RunOutcome {
        outputs,
        late,
        stats: stats.snapshot(),
    })
}
