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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
}

type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

enum Command {
    Append(WalRecord, Reply<Lsn>),
    TruncateBefore(Lsn, Reply<usize>),
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
        let (commands, rx) = mpsc::channel(queue.max(1));
        let gauges = Arc::new(WalGauges::default());
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
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Append(record, tx))
            .await
            .map_err(|_| WriteError::Closed)?;
        Ok(Durable(rx))
    }

    /// Appends a record and waits until it is durable.
    pub async fn append(&self, record: WalRecord) -> Result<Lsn, WriteError> {
        self.submit(record).await?.await
    }

    /// [`Wal::truncate_before`] on the writer thread.
    pub async fn truncate_before(&self, lsn: Lsn) -> Result<usize, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::TruncateBefore(lsn, tx))
            .await
            .map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)?
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

fn run(
    mut wal: Wal,
    mut commands: mpsc::Receiver<Command>,
    max_group: usize,
    gauges: Arc<WalGauges>,
) -> Wal {
    let mut waiting: Vec<(Lsn, Reply<Lsn>)> = Vec::with_capacity(max_group);
    while let Some(first) = commands.blocking_recv() {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append(record, reply) => match wal.append(&record) {
                    Ok(lsn) => waiting.push((lsn, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(WriteError::Wal(Arc::new(e))));
                    }
                },
                Command::TruncateBefore(lsn, reply) => {
                    let result = wal
                        .truncate_before(lsn)
                        .map_err(|e| WriteError::Wal(Arc::new(e)));
                    let _ = reply.send(result);
                }
            }
            if waiting.len() < max_group {
                next = commands.try_recv().ok();
            }
        }
        if !waiting.is_empty() {
            match wal.commit() {
                Ok(_) => {
                    gauges.commits.fetch_add(1, Relaxed);
                    gauges.records.fetch_add(waiting.len() as u64, Relaxed);
                    for (lsn, reply) in waiting.drain(..) {
                        let _ = reply.send(Ok(lsn));
                    }
                }
                Err(e) => {
                    tracing::error!("WAL commit failed: {e}");
                    let e = Arc::new(e);
                    for (_, reply) in waiting.drain(..) {
                        let _ = reply.send(Err(WriteError::Wal(e.clone())));
                    }
                }
            }
        }
        update(&gauges, &wal);
    }
    wal
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
}
