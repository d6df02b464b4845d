//! The sink task: takes KPI records from the engine's channel, writes them in
//! batches, retries what may succeed later, and reports when the channel
//! closes.
//!
//! The batching (`Batcher`) and the retry schedule ([`Backoff::delay`]) are
//! plain functions; the loop in [`run_sink`] only moves records between them
//! and the store.
//!
//! **Backpressure.** While a batch is being written or retried the task does
//! not read the channel, so a slow or unreachable store fills the bounded
//! channel and blocks the sender: nothing is dropped on the way in, and memory
//! stays bounded by the channel capacity plus one batch.
//!
//! **Failures.** A retryable error ([`SinkError::is_retryable`]) is retried
//! with exponential backoff and jitter, up to [`Backoff::max_retries`] times.
//! A non-retryable error, or a retryable one that outlasts the retries, is
//! logged and counted, and **that batch is dropped** (counted in
//! [`SinkReport::records_dropped`]): a record the store will never take
//! (an HTTP 400 line, a SQLite constraint). The service retries without
//! limit, so a store that is down or a SQLite file an operator broke holds
//! the batch (and, behind it, the WAL) until it is mended.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_engine::Output;
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::{Sink, SinkConfig, SinkError};
pub use crate::retry::Backoff;
use crate::retry::jitter;

/// Default longest wait for a batch to fill.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(200);

/// How the sink task batches and retries.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSettings {
    /// Records per write request; a fuller buffer is written at once.
    pub batch_size: NonZeroUsize,
    /// Longest time a record waits for its batch to fill before the batch is
    /// written anyway.
    pub linger: Duration,
    /// Retry schedule for retryable errors.
    pub backoff: Backoff,
}

impl SinkSettings {
    /// The config's batch size with the default linger and backoff.
    pub fn for_config(config: &SinkConfig) -> SinkSettings {
        SinkSettings {
            batch_size: config.batch_size(),
            ..SinkSettings::default()
        }
    }
}

impl Default for SinkSettings {
    fn default() -> Self {
        Self {
            batch_size: SinkConfig::default().batch_size(),
            linger: DEFAULT_LINGER,
            backoff: Backoff::default(),
        }
    }
}

/// What the sink task did, returned when its channel closes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Records the store accepted.
    pub records_written: u64,
    /// Write requests (transactions) that succeeded.
    pub batches_written: u64,
    /// Attempts repeated after a retryable error.
    pub retries: u64,
    /// Batches given up: a non-retryable error, or retries exhausted.
    pub errors: u64,
    /// Records in the batches given up.
    pub records_dropped: u64,
    /// Records the store cannot represent, skipped within otherwise written
    /// batches (see [`Sink::take_rejected`]).
    pub records_rejected: u64,
}

/// Runs the sink until `rx` closes, then writes what is buffered and returns
/// the report. Non-retryable errors drop their batch (logged and counted in
/// the report): records the store will never take.
pub async fn run_sink(
    sink: Sink,
    rx: Receiver<Arc<[Output]>>,
    settings: SinkSettings,
) -> SinkReport {
    run_writer(sink, rx, settings, jitter).await
}

/// [`run_sink`], also counting in `written` the channel messages whose
/// records are all written (or given up), for the checkpoint.
pub async fn run_sink_tracked(
    sink: Sink,
    rx: Receiver<Arc<[Output]>>,
    settings: SinkSettings,
    written: Arc<std::sync::atomic::AtomicU64>,
) -> SinkReport {
    run_writer_tracked(sink, rx, settings, jitter, Some(written)).await
}

/// [`run_sink_tracked`], also counting in `metrics` the records written
/// (`records_written`) and the failed write attempts (`sink_write_errors`),
/// for `/metrics`.
pub async fn run_sink_counted(
    sink: Sink,
    rx: Receiver<Arc<[Output]>>,
    settings: SinkSettings,
    written: Arc<std::sync::atomic::AtomicU64>,
    metrics: Arc<crate::metrics::IngestMetrics>,
) -> SinkReport {
    let counted = CountedSink {
        sink,
        metrics,
        rejected: 0,
        failing: false,
    };
    run_writer_tracked(counted, rx, settings, jitter, Some(written)).await
}

/// A sink that counts its writes and failures in the service's metrics.
struct CountedSink {
    sink: Sink,
    metrics: Arc<crate::metrics::IngestMetrics>,
    /// Taken from the sink after a successful write, handed on by
    /// `take_rejected`.
    rejected: u64,
    /// Whether the last write attempt failed (counted once in
    /// `sinks_failing` until one succeeds).
    failing: bool,
}

/// A sink that stops while failing (a stop, a start in place) is no
/// longer counted: the metrics outlive it.
impl Drop for CountedSink {
    fn drop(&mut self) {
        if self.failing {
            (self.metrics.sinks_failing).fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl BatchWrite for CountedSink {
    async fn write_batch(&mut self, records: &[Output]) -> Result<(), SinkError> {
        use std::sync::atomic::Ordering::Relaxed;
        let result = self.sink.write(records).await;
        self.rejected += self.sink.take_rejected();
        if result.is_err() != self.failing {
            self.failing = result.is_err();
            match self.failing {
                true => self.metrics.sinks_failing.fetch_add(1, Relaxed),
                false => self.metrics.sinks_failing.fetch_sub(1, Relaxed),
            };
        }
        match &result {
            Ok(()) => {
                let written = (records.len() as u64).saturating_sub(self.rejected);
                self.metrics.records_written.fetch_add(written, Relaxed);
                if let Some(probe) = self.metrics.probe.get() {
                    probe.records_written(records.len());
                }
            }
            Err(_) => {
                self.metrics.sink_write_errors.fetch_add(1, Relaxed);
            }
        }
        result
    }

    fn take_rejected(&mut self) -> u64 {
        std::mem::take(&mut self.rejected)
    }

    fn describe(&self) -> String {
        self.sink.describe()
    }
}

/// What [`run_writer`] needs from a store; [`Sink`] in production, a fake in
/// tests.
pub(crate) trait BatchWrite {
    fn write_batch(
        &mut self,
        records: &[Output],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    fn take_rejected(&mut self) -> u64;
    fn describe(&self) -> String;
}

impl BatchWrite for Sink {
    fn write_batch(
        &mut self,
        records: &[Output],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        self.write(records)
    }

    fn take_rejected(&mut self) -> u64 {
        Sink::take_rejected(self)
    }

    fn describe(&self) -> String {
        Sink::describe(self)
    }
}

pub(crate) async fn run_writer<W: BatchWrite>(
    writer: W,
    rx: Receiver<Arc<[Output]>>,
    settings: SinkSettings,
    jitter: impl FnMut() -> f64,
) -> SinkReport {
    run_writer_tracked(writer, rx, settings, jitter, None).await
}

async fn run_writer_tracked<W: BatchWrite>(
    writer: W,
    mut rx: Receiver<Arc<[Output]>>,
    settings: SinkSettings,
    mut jitter: impl FnMut() -> f64,
    written: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> SinkReport {
    let mut messages = 0u64;
    // Every message received so far is written once nothing is buffered.
    let mark = |batcher: &Batcher, messages: u64| {
        if let Some(w) = &written
            && batcher.is_empty()
        {
            w.store(messages, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let name = writer.describe();
    info!(sink = %name, batch_size = settings.batch_size.get(), "sink started");
    let mut batcher = Batcher::new(settings.batch_size, settings.linger);
    let mut out = Retrying {
        writer,
        name,
        settings: &settings,
        jitter: &mut jitter,
        report: SinkReport::default(),
    };
    loop {
        let received = match batcher.deadline() {
            Some(deadline) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(received) => received,
                Err(_lingered) => {
                    let batch = batcher.take_all();
                    out.write(&batch).await;
                    mark(&batcher, messages);
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(records) = received else { break };
        messages += 1;
        batcher.push(&records, Instant::now());
        while let Some(batch) = batcher.pop_full() {
            out.write(&batch).await;
        }
        mark(&batcher, messages);
    }
    let rest = batcher.take_all();
    if !rest.is_empty() {
        out.write(&rest).await;
    }
    mark(&batcher, messages);
    let Retrying { name, report, .. } = out;
    info!(
        sink = %name,
        records_written = report.records_written,
        batches_written = report.batches_written,
        retries = report.retries,
        errors = report.errors,
        records_dropped = report.records_dropped,
        records_rejected = report.records_rejected,
        "sink stopped: channel closed and buffer flushed"
    );
    report
}

/// A sink's writer with what every write needs: its name for the log, the
/// retry settings, the jitter source and the report it updates.
struct Retrying<'a, W, J> {
    writer: W,
    name: String,
    settings: &'a SinkSettings,
    jitter: J,
    report: SinkReport,
}

impl<W: BatchWrite, J: FnMut() -> f64> Retrying<'_, W, J> {
    /// Writes one batch, retrying retryable errors; updates the report.
    async fn write(&mut self, batch: &[Output]) {
        let Self {
            writer,
            name,
            settings,
            jitter,
            report,
        } = self;
        let records = batch.len() as u64;
        let mut retry = 0;
        loop {
            let started = Instant::now();
            let result = writer.write_batch(batch).await;
            let rejected = writer.take_rejected();
            report.records_rejected += rejected;
            match result {
                Ok(()) => {
                    report.records_written += records - rejected.min(records);
                    report.batches_written += 1;
                    debug!(sink = %name, records, rejected, elapsed = ?started.elapsed(), "batch written");
                    return;
                }
                Err(err) if err.is_retryable() && retry < settings.backoff.max_retries => {
                    let delay = settings.backoff.delay(retry, jitter());
                    retry += 1;
                    report.retries += 1;
                    warn!(
                        sink = %name, records, retry, max_retries = settings.backoff.max_retries,
                        ?delay, error = %err, "batch write failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(err) => {
                    report.errors += 1;
                    report.records_dropped += records;
                    error!(
                        sink = %name, records, retries = retry, retryable = err.is_retryable(),
                        error = %err, "batch write failed; batch dropped"
                    );
                    return;
                }
            }
        }
    }
}

/// Collects records into batches of at most `batch_size`, and knows when the
/// oldest buffered record has waited `linger`. No I/O and no clock of its
/// own: callers pass the time in.
#[derive(Debug)]
pub(crate) struct Batcher {
    pending: Vec<Output>,
    batch_size: usize,
    linger: Duration,
    deadline: Option<Instant>,
}

impl Batcher {
    pub(crate) fn new(batch_size: NonZeroUsize, linger: Duration) -> Self {
        Self {
            pending: Vec::new(),
            batch_size: batch_size.get(),
            linger,
            deadline: None,
        }
    }

    /// Buffers `records`, received at `now`.
    pub(crate) fn push(&mut self, records: &[Output], now: Instant) {
        if records.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            self.deadline = Some(now + self.linger);
        }
        self.pending.extend_from_slice(records);
    }

    /// A full batch, if at least `batch_size` records are buffered.
    pub(crate) fn pop_full(&mut self) -> Option<Vec<Output>> {
        if self.pending.len() < self.batch_size {
            return None;
        }
        let rest = self.pending.split_off(self.batch_size);
        let batch = std::mem::replace(&mut self.pending, rest);
        if self.pending.is_empty() {
            self.deadline = None;
        }
        Some(batch)
    }

    /// When the buffered records must be written, if any are buffered. (Left
    /// over from a full batch, the rest keeps the earlier deadline: it is
    /// written early, never late.)
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Everything buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub(crate) fn take_all(&mut self) -> Vec<Output> {
        self.deadline = None;
        std::mem::take(&mut self.pending)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use super::*;
    use crate::sinks::HttpError;
    use crate::sinks::fixtures::customer;

    fn records(n: u64) -> Vec<Output> {
        (0..n)
            .map(|i| Output::Customer(customer("acme", i, i)))
            .collect()
    }

    fn starts(batch: &[Output]) -> Vec<u64> {
        batch
            .iter()
            .map(|r| match r {
                Output::Customer(k) => k.window_start,
                Output::Device(k) => k.window_start,
                Output::Outcome(k) => k.window_start,
                Output::Milestone(k) => k.window_start,
                Output::Health(k) => k.window_start,
                Output::Forecast(k) => k.window_start,
                Output::Alert(k) => k.opened_at,
                Output::Portfolio(k) => k.window_start,
            })
            .collect()
    }

    #[test]
    fn default_backoff_retries_as_long_as_the_store_is_down_at_most_30_s_apart() {
        let backoff = Backoff::default();
        assert_eq!(backoff.max_retries, u32::MAX);
        assert_eq!(backoff.delay(0, 1.0), Duration::from_millis(100));
        for n in [9, 20, 1_000, u32::MAX - 1] {
            assert!(backoff.delay(n, 1.0) <= Duration::from_secs(30));
            assert!(backoff.delay(n, 0.0) >= Duration::from_secs(15));
        }
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let samples: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn batcher_splits_at_batch_size_and_tracks_the_deadline() {
        let t0 = Instant::now();
        let linger = Duration::from_millis(200);
        let mut batcher = Batcher::new(NonZeroUsize::new(3).unwrap(), linger);
        assert_eq!(batcher.deadline(), None);
        assert!(batcher.pop_full().is_none());

        batcher.push(&records(2), t0);
        assert_eq!(batcher.deadline(), Some(t0 + linger));
        assert!(batcher.pop_full().is_none());
        // A later push does not move the deadline of the oldest record.
        batcher.push(&records(5), t0 + Duration::from_millis(50));
        assert_eq!(batcher.deadline(), Some(t0 + linger));

        assert_eq!(starts(&batcher.pop_full().unwrap()), [0, 1, 0]);
        assert_eq!(starts(&batcher.pop_full().unwrap()), [1, 2, 3]);
        assert!(batcher.pop_full().is_none());
        assert_eq!(batcher.len(), 1);
        assert_eq!(batcher.deadline(), Some(t0 + linger));

        assert_eq!(starts(&batcher.take_all()), [4]);
        assert_eq!(batcher.deadline(), None);

        batcher.push(&records(3), t0 + Duration::from_secs(1));
        assert_eq!(batcher.pop_full().map(|b| b.len()), Some(3));
        assert_eq!(batcher.deadline(), None, "empty again");
        batcher.push(&[], t0);
        assert_eq!(batcher.deadline(), None, "nothing buffered");
    }

    /// A store that fails with the queued errors first, then succeeds.
    #[derive(Clone, Default)]
    struct FakeStore {
        failures: Arc<Mutex<VecDeque<SinkError>>>,
        written: Arc<Mutex<Vec<Vec<u64>>>>,
        attempts: Arc<Mutex<u32>>,
    }

    impl BatchWrite for FakeStore {
        async fn write_batch(&mut self, records: &[Output]) -> Result<(), SinkError> {
            *self.attempts.lock().unwrap() += 1;
            if let Some(err) = self.failures.lock().unwrap().pop_front() {
                return Err(err);
            }
            self.written.lock().unwrap().push(starts(records));
            Ok(())
        }

        fn take_rejected(&mut self) -> u64 {
            0
        }

        fn describe(&self) -> String {
            "fake".into()
        }
    }

    impl FakeStore {
        /// A store whose first writes fail with `failures`, in order.
        fn failing(failures: impl IntoIterator<Item = SinkError>) -> Self {
            let store = Self::default();
            store.failures.lock().unwrap().extend(failures);
            store
        }
    }

    /// Runs a writer on `store` with `settings`, sends it one batch of
    /// `records(n)` per `n` in `sends`, closes the channel and returns the
    /// writer's report.
    async fn write_all(store: &FakeStore, settings: SinkSettings, sends: &[u64]) -> SinkReport {
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(run_writer(store.clone(), rx, settings, || 0.5));
        for n in sends {
            tx.send(records(*n).into()).await.unwrap();
        }
        drop(tx);
        task.await.unwrap()
    }

    fn status(code: u16) -> SinkError {
        SinkError::InfluxWrite {
            lines: 1,
            source: HttpError::Status {
                status: code,
                body: String::new(),
            },
        }
    }

    fn fast(batch_size: usize, max_retries: u32) -> SinkSettings {
        SinkSettings {
            batch_size: NonZeroUsize::new(batch_size).unwrap(),
            linger: Duration::from_millis(20),
            backoff: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(4),
                max_retries,
            },
        }
    }

    #[tokio::test]
    async fn writes_full_batches_and_flushes_the_rest_on_close() {
        let store = FakeStore::default();
        let report = write_all(&store, fast(3, 3), &[2, 5]).await;
        assert_eq!(
            *store.written.lock().unwrap(),
            vec![vec![0, 1, 0], vec![1, 2, 3], vec![4]]
        );
        assert_eq!(
            report,
            SinkReport {
                records_written: 7,
                batches_written: 3,
                ..SinkReport::default()
            }
        );
    }

    #[tokio::test]
    async fn a_partial_batch_is_written_after_the_linger() {
        let store = FakeStore::default();
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(run_writer(store.clone(), rx, fast(100, 3), || 0.5));
        tx.send(records(2).into()).await.unwrap();
        // The channel stays open: only the linger can flush.
        let waited = Instant::now();
        while store.written.lock().unwrap().is_empty() {
            assert!(waited.elapsed() < Duration::from_secs(5), "never flushed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(waited.elapsed() >= Duration::from_millis(15));
        assert_eq!(*store.written.lock().unwrap(), vec![vec![0, 1]]);
        drop(tx);
        assert_eq!(task.await.unwrap().records_written, 2);
    }

    #[tokio::test]
    async fn retryable_errors_are_retried_then_written() {
        let store = FakeStore::failing([status(503), status(429)]);
        let report = write_all(&store, fast(10, 3), &[4]).await;
        assert_eq!(*store.attempts.lock().unwrap(), 3);
        assert_eq!(
            report,
            SinkReport {
                records_written: 4,
                batches_written: 1,
                retries: 2,
                ..SinkReport::default()
            }
        );
    }

    #[tokio::test]
    async fn non_retryable_errors_drop_the_batch_at_once() {
        let store = FakeStore::failing([status(400)]);
        let report = write_all(&store, fast(2, 3), &[4]).await;
        assert_eq!(*store.attempts.lock().unwrap(), 2);
        assert_eq!(*store.written.lock().unwrap(), vec![vec![2, 3]]);
        assert_eq!(
            report,
            SinkReport {
                records_written: 2,
                batches_written: 1,
                errors: 1,
                records_dropped: 2,
                ..SinkReport::default()
            }
        );
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let store = FakeStore::failing((0..10).map(|_| status(502)));
        let report = write_all(&store, fast(10, 2), &[3]).await;
        assert_eq!(
            *store.attempts.lock().unwrap(),
            3,
            "one attempt + 2 retries"
        );
        assert_eq!(report.retries, 2);
        assert_eq!(report.errors, 1);
        assert_eq!(report.records_dropped, 3);
        assert_eq!(report.records_written, 0);
    }

    #[tokio::test]
    async fn run_sink_writes_to_a_real_sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpi.sqlite");
        let config = SinkConfig::Sqlite(crate::sinks::SqliteConfig { path: path.clone() });
        let sink = Sink::open(&config).await.unwrap();
        let (tx, rx) = mpsc::channel(2);
        let task = tokio::spawn(run_sink(sink, rx, SinkSettings::for_config(&config)));
        tx.send(records(3).into()).await.unwrap();
        tx.send(records(3).into()).await.unwrap(); // a replay: same keys
        drop(tx);
        let report = task.await.unwrap();
        assert_eq!(report.records_written, 6);
        assert_eq!(report.errors, 0);
        let store = crate::sinks::SqliteStore::open(&path).unwrap();
        assert_eq!(store.customer_kpis("1h").unwrap().len(), 3);
    }
}
