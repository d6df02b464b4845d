//! Group commit for async callers: a thread owns the [`Wal`], takes every
//! append request that is queued, appends them all, commits once (one
//! fsync), and only then answers each request with its LSN.
//!
//! There is no timer: while one fsync runs, new requests queue up, and the
//! next group takes all of them (up to `max_group`). Under light load each
//! record gets its own fsync at once; under heavy load groups grow by
//! themselves to whatever arrives during one fsync. The request queue is
//! bounded: when it is full, [`WalWriter::submit`] waits (backpressure, not
//! loss).
//!
//! [`WalWriter::submit_batch`] appends a batch of records in one piece: the
//! whole batch becomes durable in one commit, or fails as a whole. When the
//! log is full ([`WalError::Full`]: `max_bytes`, or the disk) the requests
//! concerned fail with [`WriteError::Full`], the log is not poisoned and the
//! same records can be submitted again later; [`WalGauges::full`] says so
//! (and logs once per transition) until a commit succeeds again. Batches
//! are independent: a later, smaller batch may fit where an earlier one did
//! not, so a caller that needs arrival order stops submitting on `Full` and
//! retries the refused batch first.
//!
//! ```no_run
//! # async fn example(wal: fleetpulse::wal::Wal, record: fleetpulse::wal::WalRecord) -> Result<(), fleetpulse::wal::writer::WriteError> {
//! use fleetpulse::wal::writer::WalWriter;
//! let writer = WalWriter::spawn(wal, 1024, 4096);
//! // Queue the record now; await its durability later, e.g. in an ordered
//! // set of pending broker acknowledgements.
//! let durable = writer.submit(record).await?;
//! let lsn = durable.await?;
//! # let _ = lsn;
//! let wal = writer.close().await?;
//! # let _ = wal;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use super::{Lsn, Wal, WalError, WalRecord};

/// A request failed.
#[derive(Debug, Clone, Error)]
pub enum WriteError {
    /// The log failed; every waiter of the same group gets the same error.
    #[error(transparent)]
    Wal(Arc<WalError>),
    /// The log is full (`max_bytes`, or the disk): nothing of the request
    /// is durable and the log is usable; submit the same records again once
    /// there is room.
    #[error("the write-ahead log is full ({reason})")]
    Full {
        /// What is full.
        reason: String,
    },
    /// The writer thread is gone (closed, or it panicked).
    #[error("the WAL writer has stopped")]
    Closed,
}

/// Counters the writer keeps up to date, for metrics and tests.
#[derive(Debug, Default)]
pub struct WalGauges {
    /// Bytes of the segment files.
    pub bytes: AtomicU64,
    /// Segment files.
    pub segments: AtomicU64,
    /// Every record up to this LSN is durable.
    pub durable_lsn: AtomicU64,
    /// Groups committed (one fsync each, plus segment creation).
    pub commits: AtomicU64,
    /// Records committed.
    pub records: AtomicU64,
    /// Whether the log refuses records for lack of room.
    pub full: WalPressure,
}

impl WriteError {
    /// The log is full: retry the same records later.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full { .. })
    }

    fn from_wal(e: WalError) -> Self {
        match e {
            WalError::Full { reason } => Self::Full { reason },
            e => Self::Wal(Arc::new(e)),
        }
    }
}

/// Whether the WAL is full, and why: drives readiness and the
/// `fleetpulse_wal_full` gauge. Logs one line per transition, however many
/// requests are refused in between.
#[derive(Debug, Default)]
pub struct WalPressure {
    full: AtomicBool,
    reason: Mutex<String>,
}

impl WalPressure {
    /// The log refused records: `reason` says what is full (the `reason`
    /// of [`WriteError::Full`]).
    pub fn set_full(&self, reason: &str) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.to_owned();
        if !self.full.swap(true, Relaxed) {
            tracing::warn!(
                "the write-ahead log is full ({reason}): intake paused until it has room"
            );
        }
    }

    /// The log took records again.
    pub fn set_resumed(&self) {
        if self.full.swap(false, Relaxed) {
            tracing::info!("write-ahead log has room again: intake resumed");
        }
    }

    /// True while the log refuses records.
    pub fn is_full(&self) -> bool {
        self.full.load(Relaxed)
    }

    /// What is full (e.g. `max_bytes of 4 MiB reached: ...`, or the
    /// disk's error); `None` while the log is not full.
    pub fn reason(&self) -> Option<String> {
        self.is_full().then(|| {
            self.reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }
}

type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

enum Command {
    Append(WalRecord, Reply<Lsn>),
    AppendBatch(Arc<[WalRecord]>, Reply<Range<Lsn>>),
    TruncateBefore(Lsn, Reply<usize>),
}

/// A request appended to the running group, answered after its commit.
enum Waiter {
    One(Lsn, Reply<Lsn>),
    Batch(Range<Lsn>, Reply<Range<Lsn>>),
}

/// Handle to the writer thread. Dropping it without [`WalWriter::close`]
/// also stops the thread once the queue is drained.
pub struct WalWriter {
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<Wal>>,
    gauges: Arc<WalGauges>,
}

impl WalWriter {
    /// Starts the writer thread. `queue`: requests waiting at most (then
    /// `submit` waits); `max_group`: records per commit at most.
    pub fn spawn(wal: Wal, queue: usize, max_group: usize) -> Self {
        Self::spawn_with_gauges(wal, queue, max_group, Arc::default())
    }

    /// [`WalWriter::spawn`], keeping `gauges` up to date: e.g. the ones in
    /// [`crate::metrics::IngestMetrics::wal`], which `/metrics` and
    /// `/readyz` read.
    pub fn spawn_with_gauges(
        wal: Wal,
        queue: usize,
        max_group: usize,
        gauges: Arc<WalGauges>,
    ) -> Self {
        let (commands, rx) = mpsc::channel(queue.max(1));
        update(&gauges, &wal);
        let thread_gauges = gauges.clone();
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || run(wal, rx, max_group.max(1), thread_gauges))
            .expect("spawn the WAL writer thread");
        Self {
            commands,
            thread: Some(thread),
            gauges,
        }
    }

    /// Queues a record (waiting while the queue is full) and returns a
    /// future that resolves to its LSN once it is durable.
    pub async fn submit(&self, record: WalRecord) -> Result<Durable, WriteError> {
        let rx = self.send(|tx| Command::Append(record, tx)).await?;
        Ok(Durable(rx))
    }

    /// Appends a record and waits until it is durable.
    pub async fn append(&self, record: WalRecord) -> Result<Lsn, WriteError> {
        self.submit(record).await?.await
    }

    /// Queues a batch (waiting while the queue is full) and returns a future
    /// that resolves to the LSNs of its records once all of them are
    /// durable, or to an error for the batch as a whole: none of it is
    /// durable then ([`WriteError::Full`]: submit it again later). An empty
    /// batch resolves to an empty range.
    pub async fn submit_batch(
        &self,
        records: impl Into<Arc<[WalRecord]>>,
    ) -> Result<DurableBatch, WriteError> {
        let rx = self
            .send(|tx| Command::AppendBatch(records.into(), tx))
            .await?;
        Ok(DurableBatch(rx))
    }

    /// [`Wal::truncate_before`] on the writer thread.
    pub async fn truncate_before(&self, lsn: Lsn) -> Result<usize, WriteError> {
        let rx = self.send(|tx| Command::TruncateBefore(lsn, tx)).await?;
        rx.await.map_err(|_| WriteError::Closed)?
    }

    /// Queues the command `with_reply` makes (waiting while the queue is
    /// full); the receiver of its reply.
    async fn send<T>(
        &self,
        with_reply: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<oneshot::Receiver<Result<T, WriteError>>, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(with_reply(tx))
            .await
            .map_err(|_| WriteError::Closed)?;
        Ok(rx)
    }

    /// The counters, shared with the thread.
    pub fn gauges(&self) -> Arc<WalGauges> {
        self.gauges.clone()
    }

    /// Stops taking requests, lets the thread finish what is queued, and
    /// returns the log.
    pub async fn close(mut self) -> Result<Wal, WriteError> {
        let thread = self.thread.take().expect("close runs once");
        drop(self.commands);
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|_| WriteError::Closed)?
            .map_err(|_| WriteError::Closed)
    }
}

/// Resolves to the LSN of a submitted record once it is durable.
#[must_use = "a record is durable only when this resolves to Ok"]
pub struct Durable(oneshot::Receiver<Result<Lsn, WriteError>>);

impl Future for Durable {
    type Output = Result<Lsn, WriteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(WriteError::Closed)))
    }
}

/// Resolves to the LSNs of a submitted batch once all of it is durable.
#[must_use = "a batch is durable only when this resolves to Ok"]
pub struct DurableBatch(oneshot::Receiver<Result<Range<Lsn>, WriteError>>);

impl Future for DurableBatch {
    type Output = Result<Range<Lsn>, WriteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(WriteError::Closed)))
    }
}

/// How long a commit waits for more records once the queue is empty: a
/// fsync costs the same for one record as for a thousand, and CPU (kernel
/// time in the block layer) goes with the number of fsyncs, not of records.
/// Adds at most this much to the acknowledgement latency.
const COMMIT_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

fn run(
    mut wal: Wal,
    mut commands: mpsc::Receiver<Command>,
    max_group: usize,
    gauges: Arc<WalGauges>,
) -> Wal {
    let mut waiting: Vec<Waiter> = Vec::with_capacity(max_group);
    while let Some(first) = commands.blocking_recv() {
        let mut next = Some(first);
        let mut records = 0;
        let mut lingered = false;
        while let Some(command) = next.take() {
            match command {
                Command::Append(record, reply) => match wal.append(&record) {
                    Ok(lsn) => {
                        waiting.push(Waiter::One(lsn, reply));
                        records += 1;
                    }
                    Err(e) => {
                        let _ = reply.send(Err(refused(e, &gauges)));
                    }
                },
                Command::AppendBatch(batch, reply) => match wal.append_all(&batch) {
                    Ok(lsns) if lsns.is_empty() => {
                        let _ = reply.send(Ok(lsns));
                    }
                    Ok(lsns) => {
                        waiting.push(Waiter::Batch(lsns, reply));
                        records += batch.len();
                    }
                    Err(e) => {
                        let _ = reply.send(Err(refused(e, &gauges)));
                    }
                },
                Command::TruncateBefore(lsn, reply) => {
                    let result = wal.truncate_before(lsn).map_err(WriteError::from_wal);
                    let _ = reply.send(result);
                }
            }
            if records < max_group {
                next = commands.try_recv().ok();
                if next.is_none() && records > 0 && !lingered {
                    // One short wait for more before the fsync: under load
                    // it turns many small commits into few large ones.
                    lingered = true;
                    std::thread::sleep(COMMIT_LINGER);
                    next = commands.try_recv().ok();
                }
            }
        }
        if !waiting.is_empty() {
            match wal.commit() {
                Ok(_) => {
                    gauges.commits.fetch_add(1, Relaxed);
                    gauges.records.fetch_add(records as u64, Relaxed);
                    gauges.full.set_resumed();
                    // Before the replies: whoever holds its acknowledgement
                    // sees the durable LSN at or past its record.
                    update(&gauges, &wal);
                    for waiter in waiting.drain(..) {
                        match waiter {
                            Waiter::One(lsn, reply) => {
                                let _ = reply.send(Ok(lsn));
                            }
                            Waiter::Batch(lsns, reply) => {
                                let _ = reply.send(Ok(lsns));
                            }
                        }
                    }
                }
                Err(e) => {
                    if !matches!(e, WalError::Full { .. }) {
                        tracing::error!("WAL commit failed: {e}");
                    }
                    let e = refused(e, &gauges);
                    for waiter in waiting.drain(..) {
                        match waiter {
                            Waiter::One(_, reply) => {
                                let _ = reply.send(Err(e.clone()));
                            }
                            Waiter::Batch(_, reply) => {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            }
        }
        update(&gauges, &wal);
    }
    wal
}

/// The error for a refused request; a full log shows in the gauges.
fn refused(e: WalError, gauges: &WalGauges) -> WriteError {
    if let WalError::Full { reason } = &e {
        gauges.full.set_full(reason);
    }
    WriteError::from_wal(e)
}

fn update(gauges: &WalGauges, wal: &Wal) {
    gauges.bytes.store(wal.bytes(), Relaxed);
    gauges.segments.store(wal.segment_count() as u64, Relaxed);
    gauges.durable_lsn.store(wal.durable_lsn().get(), Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalOptions;
    use bytes::Bytes;

    fn record(i: u64) -> WalRecord {
        WalRecord {
            topic: format!("fleet/c/s/d{i}/telemetry"),
            payload: Bytes::from(i.to_le_bytes().to_vec()),
            received_ms: i,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_fsyncs_and_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let writer = Arc::new(WalWriter::spawn(wal, 256, 1024));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..8u64 {
            let writer = writer.clone();
            tasks.spawn(async move {
                // Submit a burst, then await them all: pipelined like the
                // service's pending acknowledgements.
                let mut durable = Vec::new();
                for i in 0..250 {
                    durable.push(writer.submit(record(t * 1000 + i)).await.unwrap());
                }
                let mut lsns = Vec::new();
                for d in durable {
                    lsns.push(d.await.unwrap());
                }
                lsns
            });
        }
        let mut lsns = Vec::new();
        while let Some(result) = tasks.join_next().await {
            lsns.extend(result.unwrap());
        }
        lsns.sort();
        assert_eq!(lsns, (1..=2000).map(Lsn).collect::<Vec<_>>());
        let gauges = writer.gauges();
        assert_eq!(gauges.records.load(Relaxed), 2000);
        assert_eq!(gauges.durable_lsn.load(Relaxed), 2000);
        let commits = gauges.commits.load(Relaxed);
        assert!(commits < 2000, "{commits} commits for 2000 records");

        let writer = Arc::into_inner(writer).expect("all tasks done");
        let wal = writer.close().await.unwrap();
        assert_eq!(wal.durable_lsn(), Lsn(2000));
        let replayed: Vec<_> = wal
            .replay(Lsn::FIRST)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(replayed.len(), 2000);
    }

    #[tokio::test]
    async fn a_rejected_record_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            max_record_bytes: 64,
            ..WalOptions::default()
        };
        let writer = WalWriter::spawn(Wal::open(dir.path(), options).unwrap(), 16, 16);
        let big = WalRecord {
            payload: Bytes::from(vec![0u8; 100]),
            ..record(0)
        };
        let err = writer.append(big).await.unwrap_err();
        assert!(
            matches!(&err, WriteError::Wal(e) if matches!(**e, WalError::RecordTooLarge { .. }))
        );
        assert_eq!(writer.append(record(1)).await.unwrap(), Lsn(1));
        assert_eq!(writer.truncate_before(Lsn(2)).await.unwrap(), 0);
        writer.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_is_durable_whole_or_refused_whole_until_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            segment_bytes: 512,
            max_bytes: Some(2048),
            ..WalOptions::default()
        };
        let gauges = Arc::new(WalGauges::default());
        let writer = WalWriter::spawn_with_gauges(
            Wal::open(dir.path(), options).unwrap(),
            16,
            64,
            gauges.clone(),
        );
        let batch = |from: u64| (from..from + 5).map(record).collect::<Vec<_>>();

        // Batches of five until the bound refuses one.
        let mut next = 1;
        let refused = loop {
            match writer.submit_batch(batch(next)).await.unwrap().await {
                Ok(lsns) => {
                    assert_eq!(lsns, Lsn(next)..Lsn(next + 5));
                    assert!(!gauges.full.is_full());
                    next += 5;
                }
                Err(e) => break e,
            }
        };
        assert!(next > 10, "{next}");
        assert!(refused.is_full(), "{refused}");
        assert!(gauges.full.is_full());
        let reason = gauges.full.reason().unwrap();
        assert!(reason.contains("max_bytes"), "{reason}");
        assert!(gauges.bytes.load(Relaxed) <= 2048);
        // Refused whole: still refused, and a single record after it gets
        // the LSN the batch would have had.
        let again = writer.submit_batch(batch(next)).await.unwrap().await;
        assert!(again.is_err_and(|e| e.is_full()));

        // The checkpoint cuts the log: the same batch goes in, LSNs without
        // a gap, and the gauge clears.
        assert!(writer.truncate_before(Lsn(next)).await.unwrap() > 0);
        let lsns = writer
            .submit_batch(batch(next))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(lsns, Lsn(next)..Lsn(next + 5));
        assert!(!gauges.full.is_full());
        assert_eq!(gauges.full.reason(), None);
        let empty = writer
            .submit_batch(Vec::new())
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(empty, Lsn(next + 5)..Lsn(next + 5));

        let wal = writer.close().await.unwrap();
        let first = wal.first_lsn().get();
        let replayed: Vec<_> = wal
            .replay(Lsn::FIRST)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let expected: Vec<_> = (first..next + 5).map(|i| (Lsn(i), record(i))).collect();
        assert_eq!(replayed, expected);
    }

    #[tokio::test]
    async fn the_writer_holds_the_directory_lock_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let writer = WalWriter::spawn(
            Wal::open(dir.path(), WalOptions::default()).unwrap(),
            16,
            16,
        );
        assert_eq!(writer.append(record(0)).await.unwrap(), Lsn(1));
        assert!(matches!(
            Wal::open(dir.path(), WalOptions::default()),
            Err(WalError::Locked { holder_pid: Some(pid), .. }) if pid == std::process::id()
        ));
        drop(writer.close().await.unwrap());
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(wal.durable_lsn(), Lsn(1));
    }
}
