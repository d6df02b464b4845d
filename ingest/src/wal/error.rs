//! The WAL's errors: one variant per step that can fail, with the file.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use super::frame::Lsn;

/// A WAL operation failed.
#[derive(Debug, Error)]
pub enum WalError {
    /// The WAL directory could not be created.
    #[error("cannot create the WAL directory {dir}: {source}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The WAL directory could not be listed.
    #[error("cannot list the WAL directory {dir}: {source}")]
    ListDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The directory could not be synced after a segment was created or
    /// deleted.
    #[error("cannot sync the WAL directory {dir}: {source}")]
    SyncDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A `.wal` file whose name is not a segment name: not ours, or damaged.
    #[error("{file} is not a WAL segment name (expected 20 digits, e.g. 00000000000000000001.wal)")]
    UnknownFile {
        /// The file.
        file: PathBuf,
    },
    /// A segment could not be read.
    #[error("cannot read WAL segment {file}: {source}")]
    Read {
        /// The segment.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A segment that is not the last one is damaged: records that were
    /// durable are unreadable. Never repaired automatically.
    #[error("WAL segment {file} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The segment.
        file: PathBuf,
        /// Offset of the first bad byte.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// Two consecutive segments do not continue each other: a segment is
    /// missing or was cut.
    #[error(
        "WAL segment {file} starts at LSN {found}, but the segment before it ends before LSN {expected}: records are missing"
    )]
    Gap {
        /// The later segment.
        file: PathBuf,
        /// The LSN the earlier segment ends before.
        expected: Lsn,
        /// The LSN the later one starts at.
        found: Lsn,
    },
    /// The torn tail of the last segment could not be cut off.
    #[error("cannot cut the torn tail of WAL segment {file}: {source}")]
    RepairTail {
        /// The segment.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A new segment could not be created.
    #[error("cannot create WAL segment {file}: {source}")]
    CreateSegment {
        /// The segment.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Records could not be written.
    #[error("cannot write WAL segment {file}: {source}")]
    Write {
        /// The segment.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `fsync` failed: what was written may or may not be on disk.
    #[error("cannot sync WAL segment {file}: {source}")]
    Sync {
        /// The segment.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A segment no longer needed could not be deleted.
    #[error("cannot delete WAL segment {file}: {source}")]
    Delete {
        /// The segment.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The record is larger than the configured limit.
    #[error("WAL record of {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: u32,
    },
    /// The topic is longer than MQTT allows (65535 bytes).
    #[error("topic of {len} bytes is longer than 65535 bytes")]
    TopicTooLong {
        /// Topic length.
        len: usize,
    },
    /// The lock file of the directory could not be opened or locked.
    #[error("cannot lock the WAL directory with {file}: {source}")]
    Lock {
        /// The lock file.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Another process holds the directory's lock: two writers would
    /// interleave records in one segment and cut each other's data.
    #[error(
        "the WAL directory {dir} is in use by another process (PID {}): only one fleetpulse \
         process may use a WAL directory; stop the other one or give this one its own wal.dir",
        .holder_pid.map_or_else(|| "unknown".to_owned(), |pid| pid.to_string())
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The PID the holder wrote into the lock file, if it could be read.
        holder_pid: Option<u32>,
    },
    /// The records do not fit: the log would pass `max_bytes`, or the disk
    /// is full. Nothing of the refused group is durable and the log is as it
    /// was after its last commit, so the same records can be retried once
    /// there is room (segments cut by `truncate_before`, disk freed).
    #[error("the write-ahead log is full ({reason})")]
    Full {
        /// What is full, e.g. `max_bytes of 4 MiB reached` or the disk's
        /// error.
        reason: String,
    },
    /// An earlier write or sync failed, so what is on disk is unknown; the
    /// log refuses further work. Reopen it to recover (the recovery scan
    /// keeps every intact record and cuts the rest).
    #[error("the WAL is unusable after an earlier write or sync failure; reopen it to recover")]
    Poisoned,
}
