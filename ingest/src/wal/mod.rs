//! Write-ahead log: ingest acknowledges a message to the broker only after
//! its record is durable here, and replays the log into the engine on start.
//!
//! # Layout
//!
//! A directory of segment files, each named after the LSN of its first
//! record (`00000000000000000001.wal`, zero-padded so names sort in log
//! order). A segment starts with a 16-byte header (magic `FPWAL\0v1`, base
//! LSN) followed by frames, one per record: CRC-32, body length, LSN, body
//! (`frame.rs`, `record.rs`). A segment is closed once the next record would
//! take it past [`WalOptions::segment_bytes`] (a record larger than that gets
//! a segment of its own). LSNs start at 1 and increase by one per record,
//! across segments, for the life of the directory.
//!
//! # Durability
//!
//! [`Wal::append`] only encodes into memory and hands out the next LSN.
//! [`Wal::commit`] writes everything appended since the last commit and
//! calls `fsync` once (`File::sync_data`, i.e. `fdatasync(2)`: file data
//! plus the metadata needed to read it back, such as its length). Many
//! appends, one fsync: that is the group commit; [`writer::WalWriter`] runs
//! it on a thread of its own for async callers. A record is **durable** when
//! a `commit` that covers its LSN has returned `Ok`: then it survives a
//! process crash and a power loss, as far as the disk honours flushes.
//! Creating a segment also syncs the new file's header and then the
//! directory, so the file itself survives; before a new segment receives
//! records, the one it follows is synced, so only the last segment can ever
//! hold a torn write. Deleting segments syncs the directory after each one,
//! oldest first, so a crash leaves a suffix of the log, never a hole.
//!
//! If a write or an fsync fails, the log is *poisoned*: every later call
//! returns [`WalError::Poisoned`]. After a failed fsync Linux may already
//! have dropped the dirty pages, so retrying could report success for data
//! that never reached the disk; the only safe continuation is to reopen the
//! directory, which rescans what is really there. A full disk is the
//! exception (see *Full* below).
//!
//! # Full
//!
//! Two things make the log refuse records without being poisoned, both as
//! [`WalError::Full`]:
//!
//! - [`WalOptions::max_bytes`]: an append that would take the segment files
//!   (headers included, uncommitted appends counted) past the bound is
//!   refused before anything is written.
//! - A full disk or quota: a write, sync or segment creation in
//!   [`Wal::commit`] fails with `ENOSPC`/`EDQUOT`. The commit rolls the log
//!   back to its last committed state: segments created for the group are
//!   deleted (newest first, then the directory is synced), the active
//!   segment is cut back to its committed length and synced, and the group's
//!   records and LSNs are forgotten. Nothing of the group is durable; the
//!   next append gets the LSN after the last durable one, so LSNs never
//!   have a gap. If the rollback itself fails, the log is poisoned.
//!
//! Either way the caller may retry the same records later: after
//! [`Wal::truncate_before`] freed segments, or once an operator freed disk.
//! [`Wal::append_all`] appends a batch all or nothing.
//!
//! # Recovery
//!
//! [`Wal::open`] reads every segment in order and checks each header, frame
//! length, checksum and LSN:
//!
//! - In the **last** segment, the first frame that is not intact (cut short,
//!   implausible length, checksum or LSN mismatch) and everything after it
//!   is a torn tail: records whose commit never returned. The file is cut
//!   there (and synced), so later appends follow clean data; the cut is
//!   reported in [`Wal::recovery`] and logged. A last segment shorter than
//!   its header (a crash while creating it) is created again.
//! - In any **other** segment, damage means records that were durable are
//!   unreadable: [`WalError::Corrupt`], naming the file and the offset.
//!   Nothing is deleted; an operator decides (move the directory away to
//!   start empty, or cut the file by hand).
//! - Consecutive segments must continue each other's LSNs, otherwise
//!   [`WalError::Gap`].
//!
//! Limitation: bit rot inside the *last* segment looks exactly like a torn
//! tail and is cut like one, losing the records after it.
//!
//! # Deleting
//!
//! [`Wal::truncate_before`] deletes whole segments whose records all have
//! an LSN below the given one, e.g. once every window those records feed is
//! closed and written to the sinks. The last (active) segment is never
//! deleted, so the log is never empty of segments and the next LSN is never
//! forgotten.
//!
//! # One process per directory
//!
//! [`Wal::open`] takes an exclusive lock on `wal.lock` in the directory
//! (`flock(2)`) before it reads anything, writes its PID there, and holds it
//! for the life of the [`Wal`] (so of a [`writer::WalWriter`]'s thread). A
//! second process fails with [`WalError::Locked`], naming the directory and
//! the holder's PID. The kernel releases the lock when the holder exits,
//! killed or not. Other files the service keeps in the directory (the
//! checkpoint) are written only by the holder of a [`Wal`].
//!
//! # Limits
//!
//! Appended but uncommitted records are held in memory until the next
//! commit: the caller bounds them by committing. [`Wal::bytes`] is the size
//! on disk, for a metric; [`WalOptions::max_bytes`] bounds it. The lock is
//! advisory: it keeps out fleetpulse processes, not a person with `rm`.

mod error;
mod frame;
mod lock;
mod record;
mod replay;
mod segment;
pub mod writer;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use error::WalError;
pub use frame::Lsn;
pub use lock::LOCK_FILE;
pub(crate) use lock::acquire_with as lock_dir;
pub use record::WalRecord;
pub use replay::Replay;

use segment::{DamageKind, SEGMENT_HEADER, Segment};

/// Sizes of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is closed once the next record would take it past this
    /// many bytes. Smaller segments free disk sooner after
    /// [`Wal::truncate_before`]; larger ones mean fewer files.
    pub segment_bytes: u64,
    /// Largest record body accepted by [`Wal::append`], in bytes; also the
    /// largest frame length believed when reading.
    pub max_record_bytes: u32,
    /// Most bytes the segment files may hold (headers included); an append
    /// past it fails with [`WalError::Full`]. `None`: only the disk bounds
    /// the log. The active segment is never deleted, so a bound below two
    /// segments could stay full for good.
    pub max_bytes: Option<u64>,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            max_record_bytes: 16 * 1024 * 1024,
            max_bytes: None,
        }
    }
}

/// What [`Wal::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files kept.
    pub segments: usize,
    /// LSN of the oldest record kept (equals `next_lsn` when there is none).
    pub first_lsn: Lsn,
    /// LSN the next append gets.
    pub next_lsn: Lsn,
    /// Bytes cut off the last segment, if any.
    pub torn_tail: Option<TornTail>,
}

impl Recovery {
    /// Records kept.
    pub fn records(&self) -> u64 {
        self.next_lsn.0 - self.first_lsn.0
    }
}

/// The end of the last segment that was not intact and was cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub file: PathBuf,
    /// Where it was cut.
    pub offset: u64,
    /// Bytes removed.
    pub dropped_bytes: u64,
    /// What was found at `offset`.
    pub reason: String,
}

/// An append-only, segmented write-ahead log with group commit. See the
/// module documentation for the format and the durability rules.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// Oldest first; the last one is the active segment `active` appends to.
    /// Lengths and LSN ranges cover what is written and synced.
    segments: VecDeque<Segment>,
    active: File,
    /// Whether `active` has writes that are not synced yet.
    active_dirty: bool,
    pending: Vec<Chunk>,
    pending_bytes: usize,
    next_lsn: Lsn,
    durable: Lsn,
    poisoned: bool,
    recovery: Recovery,
    /// Segment files the running commit tried to create, for its rollback.
    creating: Vec<PathBuf>,
    /// Held for the life of the log: one process per directory.
    _lock: lock::DirLock,
}

/// Where the uncommitted appends stood, to go back to (see
/// [`Wal::append_all`]).
#[derive(Debug, Clone, Copy)]
struct Mark {
    chunks: usize,
    /// Bytes and next LSN of the last chunk then.
    last: Option<(usize, Lsn)>,
    next_lsn: Lsn,
    pending_bytes: usize,
}

/// Appended bytes waiting for the next commit, for one segment.
#[derive(Debug)]
struct Chunk {
    /// `Some(base)` if these bytes start a new segment.
    new_segment: Option<Lsn>,
    bytes: Vec<u8>,
    /// One past the last LSN in `bytes`.
    next: Lsn,
}

impl Wal {
    /// Locks the directory for this process (or fails with
    /// [`WalError::Locked`]), creating it and a first segment if needed, and
    /// recovers the log (see the module documentation).
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<Self, WalError> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(|source| WalError::CreateDir {
            dir: dir.clone(),
            source,
        })?;
        // Before reading anything: recovery cuts files.
        let lock = lock::acquire(&dir)?;
        let found = segment::list(&dir)?;
        let count = found.len();
        let mut segments = VecDeque::with_capacity(count.max(1));
        let mut torn_tail = None;
        for (i, (base, path)) in found.into_iter().enumerate() {
            let last = i + 1 == count;
            if let Some(previous) = segments.back().map(|s: &Segment| s.next)
                && previous != base
            {
                return Err(WalError::Gap {
                    file: path,
                    expected: previous,
                    found: base,
                });
            }
            let scan = segment::scan(&path, base, options.max_record_bytes)?;
            let mut kept = scan.segment;
            if let Some(damage) = scan.damage {
                let corrupt = || WalError::Corrupt {
                    file: path.clone(),
                    offset: damage.offset,
                    reason: damage.kind.to_string(),
                };
                if !last {
                    return Err(corrupt());
                }
                match damage.kind {
                    DamageKind::ShortHeader | DamageKind::BadHeader
                        if scan.file_len <= SEGMENT_HEADER =>
                    {
                        // A crash while the segment was being created: it
                        // never held a record.
                        fs::remove_file(&path).map_err(|source| WalError::RepairTail {
                            file: path.clone(),
                            source,
                        })?;
                        kept = segment::create(&dir, base)?.0;
                    }
                    DamageKind::BadHeader => return Err(corrupt()),
                    _ => segment::cut(&path, damage.offset)?,
                }
                let tail = TornTail {
                    file: path.clone(),
                    offset: damage.offset,
                    dropped_bytes: scan.file_len - damage.offset,
                    reason: damage.kind.to_string(),
                };
                tracing::warn!(
                    file = %tail.file.display(),
                    offset = tail.offset,
                    dropped_bytes = tail.dropped_bytes,
                    "WAL: cut the torn tail of the last segment: {}",
                    tail.reason
                );
                torn_tail = Some(tail);
            }
            segments.push_back(kept);
        }
        if segments.is_empty() {
            segments.push_back(segment::create(&dir, Lsn::FIRST)?.0);
        }
        let last = segments.back().expect("at least one segment");
        let active = OpenOptions::new()
            .append(true)
            .open(&last.path)
            .map_err(|source| WalError::Write {
                file: last.path.clone(),
                source,
            })?;
        let next_lsn = last.next;
        let recovery = Recovery {
            segments: segments.len(),
            first_lsn: segments.front().expect("at least one segment").base,
            next_lsn,
            torn_tail,
        };
        Ok(Self {
            dir,
            options,
            segments,
            active,
            active_dirty: false,
            pending: Vec::new(),
            pending_bytes: 0,
            next_lsn,
            durable: next_lsn.prev(),
            poisoned: false,
            recovery,
            creating: Vec::new(),
            _lock: lock,
        })
    }

    /// Adds a record to the current group and returns its LSN. Nothing is
    /// written yet: the record is durable only after the next successful
    /// [`Wal::commit`]. Fails (and the log stays usable) if the record is too
    /// large, or with [`WalError::Full`] if it would take the log past
    /// [`WalOptions::max_bytes`].
    pub fn append(&mut self, record: &WalRecord) -> Result<Lsn, WalError> {
        self.check_usable()?;
        if record.topic.len() > u16::MAX as usize {
            return Err(WalError::TopicTooLong {
                len: record.topic.len(),
            });
        }
        let body = record.encoded_len();
        if body > self.options.max_record_bytes as usize {
            return Err(WalError::RecordTooLarge {
                size: body,
                limit: self.options.max_record_bytes,
            });
        }
        let frame_len = (frame::FRAME_HEADER + body) as u64;
        let lsn = self.next_lsn;
        let (tail_len, tail_has_records) = self.planned_tail();
        let new_segment = tail_has_records && tail_len + frame_len > self.options.segment_bytes;
        if let Some(max) = self.options.max_bytes {
            let header = if new_segment { SEGMENT_HEADER } else { 0 };
            let after = self.planned_bytes() + header + frame_len;
            if after > max {
                return Err(WalError::Full {
                    reason: format!(
                        "max_bytes of {} reached: {} in the log, a record of {} bytes does not fit",
                        human_bytes(max),
                        human_bytes(self.planned_bytes()),
                        frame_len
                    ),
                });
            }
        }
        if new_segment {
            self.pending.push(Chunk {
                new_segment: Some(lsn),
                bytes: Vec::new(),
                next: lsn,
            });
        } else if self.pending.is_empty() {
            self.pending.push(Chunk {
                new_segment: None,
                bytes: Vec::new(),
                next: lsn,
            });
        }
        let chunk = self.pending.last_mut().expect("pushed above");
        frame::encode(&mut chunk.bytes, lsn, record);
        chunk.next = lsn.next();
        self.pending_bytes += frame_len as usize;
        self.next_lsn = lsn.next();
        Ok(lsn)
    }

    /// Appends `records` in order, all or nothing: if one is refused (too
    /// large, [`WalError::Full`]), the ones before it are taken back and the
    /// log is as before the call. Returns their LSNs.
    pub fn append_all(&mut self, records: &[WalRecord]) -> Result<Range<Lsn>, WalError> {
        let mark = self.mark();
        let first = self.next_lsn;
        for record in records {
            if let Err(e) = self.append(record) {
                self.roll_back_appends(mark);
                return Err(e);
            }
        }
        Ok(first..self.next_lsn)
    }

    /// Writes every record appended since the last commit and syncs: one
    /// `fsync` for the whole group (plus one for a segment that fills up
    /// and one for each segment created). Returns the LSN the log is durable
    /// up to (inclusive; [`Lsn::ZERO`] for an empty log). A full disk rolls
    /// the group back and returns [`WalError::Full`]; any other failure
    /// poisons the log (see the module documentation).
    pub fn commit(&mut self) -> Result<Lsn, WalError> {
        self.check_usable()?;
        if self.pending.is_empty() {
            return Ok(self.durable);
        }
        // A directory removed under the log (`rm -rf wal`, to start afresh)
        // would take every record written through the open segment with
        // it: refused as on a full disk (intake pauses, nothing is
        // acknowledged), not written.
        if !self.dir.is_dir() {
            self.pending.clear();
            self.pending_bytes = 0;
            self.next_lsn = self.durable.next();
            return Err(WalError::Full {
                reason: format!(
                    "its directory {} is gone (removed while the service ran?); restart the \
                     service to start a new one there",
                    self.dir.display()
                ),
            });
        }
        let segments = self.segments.len();
        let active = self.segments.back().expect("at least one segment").clone();
        self.creating.clear();
        match self.write_pending(None) {
            Ok(()) => {
                self.durable = self.next_lsn.prev();
                Ok(self.durable)
            }
            Err(e) if is_storage_full(&e) => match self.roll_back_commit(segments, active) {
                Ok(()) => {
                    // Debug only: a caller retrying every second would
                    // repeat it; the caller logs the transition once.
                    tracing::debug!(
                        "WAL commit refused, log rolled back to LSN {}: {e}",
                        self.durable
                    );
                    Err(WalError::Full {
                        reason: e.to_string(),
                    })
                }
                Err(rollback) => {
                    tracing::error!(
                        "WAL: cannot roll back a commit the disk refused ({e}): {rollback}"
                    );
                    self.poisoned = true;
                    Err(e)
                }
            },
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// The durable records with an LSN of at least `from`, in order.
    pub fn replay(&self, from: Lsn) -> Result<Replay, WalError> {
        self.check_usable()?;
        Ok(Replay::new(
            self.segments.iter().cloned().collect(),
            from,
            self.options.max_record_bytes,
        ))
    }

    /// Deletes the segments whose records all have an LSN below `lsn`; never
    /// the active segment. Returns how many were deleted.
    pub fn truncate_before(&mut self, lsn: Lsn) -> Result<usize, WalError> {
        self.check_usable()?;
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[1].base <= lsn {
            let oldest = &self.segments[0];
            match fs::remove_file(&oldest.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(WalError::Delete {
                        file: oldest.path.clone(),
                        source,
                    });
                }
            }
            segment::sync_dir(&self.dir)?;
            self.segments.pop_front();
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Bytes of the segment files (headers included), not counting
    /// uncommitted appends.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Bytes appended and not committed yet (held in memory).
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Segment files in the directory.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// LSN of the oldest record still in the log (equals
    /// [`Wal::next_lsn`] when no record is left).
    pub fn first_lsn(&self) -> Lsn {
        self.segments.front().expect("at least one segment").base
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Every record up to and including this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    /// What [`Wal::open`] found.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sizes it was opened with.
    pub fn options(&self) -> &WalOptions {
        &self.options
    }

    /// Bytes the segment files would hold after the pending appends are
    /// committed, headers of planned segments included.
    fn planned_bytes(&self) -> u64 {
        let new_segments = self
            .pending
            .iter()
            .filter(|c| c.new_segment.is_some())
            .count();
        self.bytes() + self.pending_bytes as u64 + new_segments as u64 * SEGMENT_HEADER
    }

    fn mark(&self) -> Mark {
        Mark {
            chunks: self.pending.len(),
            last: self.pending.last().map(|c| (c.bytes.len(), c.next)),
            next_lsn: self.next_lsn,
            pending_bytes: self.pending_bytes,
        }
    }

    /// Forgets the appends made since `mark`.
    fn roll_back_appends(&mut self, mark: Mark) {
        self.pending.truncate(mark.chunks);
        if let (Some(chunk), Some((len, next))) = (self.pending.last_mut(), mark.last) {
            chunk.bytes.truncate(len);
            chunk.next = next;
        }
        self.next_lsn = mark.next_lsn;
        self.pending_bytes = mark.pending_bytes;
    }

    /// After a commit the disk refused: deletes the segments it created,
    /// newest first (a crash in between leaves a suffix of the log, never a
    /// hole), cuts the segment that was active back to `active.len`, syncs,
    /// and forgets the group, so the log is as after the last commit.
    fn roll_back_commit(&mut self, segments: usize, active: Segment) -> Result<(), WalError> {
        self.pending.clear();
        self.pending_bytes = 0;
        self.next_lsn = self.durable.next();
        for path in std::mem::take(&mut self.creating).iter().rev() {
            match fs::remove_file(path) {
                Ok(()) => segment::sync_dir(&self.dir)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(WalError::Delete {
                        file: path.clone(),
                        source,
                    });
                }
            }
        }
        self.segments.truncate(segments);
        let repair = |source| WalError::RepairTail {
            file: active.path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .append(true)
            .open(&active.path)
            .map_err(repair)?;
        file.set_len(active.len).map_err(repair)?;
        file.sync_all().map_err(repair)?;
        self.active = file;
        self.active_dirty = false;
        *self.segments.back_mut().expect("at least one segment") = active;
        Ok(())
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Length of the segment the next append would go to, after the
    /// pending bytes, and whether it would already hold a record.
    fn planned_tail(&self) -> (u64, bool) {
        let active = self.segments.back().expect("at least one segment");
        match self.pending.last() {
            None => (active.len, active.has_records()),
            Some(chunk) if chunk.new_segment.is_some() => (
                SEGMENT_HEADER + chunk.bytes.len() as u64,
                !chunk.bytes.is_empty(),
            ),
            Some(chunk) => (
                active.len + chunk.bytes.len() as u64,
                active.has_records() || !chunk.bytes.is_empty(),
            ),
        }
    }

    /// Writes the pending chunks, creating segments as planned, then syncs.
    /// `budget` (tests only) stops after that many bytes without syncing,
    /// as a crash in the middle of a commit would.
    fn write_pending(&mut self, mut budget: Option<usize>) -> Result<(), WalError> {
        let chunks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        for chunk in chunks {
            if budget == Some(0) {
                return Ok(());
            }
            if let Some(base) = chunk.new_segment {
                // The segment being closed must be durable before the next
                // one holds anything: only the last segment may be torn.
                self.sync_active()?;
                self.creating.push(self.dir.join(segment::file_name(base)));
                let (created, file) = segment::create(&self.dir, base)?;
                self.segments.push_back(created);
                self.active = file;
            }
            let take = budget.map_or(chunk.bytes.len(), |b| b.min(chunk.bytes.len()));
            let active = self.segments.back_mut().expect("at least one segment");
            self.active
                .write_all(&chunk.bytes[..take])
                .map_err(|source| WalError::Write {
                    file: active.path.clone(),
                    source,
                })?;
            self.active_dirty = true;
            if let Some(b) = budget.as_mut() {
                *b -= take;
                if take < chunk.bytes.len() {
                    return Ok(());
                }
            }
            active.len += chunk.bytes.len() as u64;
            active.next = chunk.next;
        }
        if budget.is_some() {
            return Ok(());
        }
        self.sync_active()
    }

    fn sync_active(&mut self) -> Result<(), WalError> {
        if self.active_dirty {
            self.active.sync_data().map_err(|source| WalError::Sync {
                file: self
                    .segments
                    .back()
                    .expect("at least one segment")
                    .path
                    .clone(),
                source,
            })?;
            self.active_dirty = false;
        }
        Ok(())
    }

    /// Test hook: writes only the first `bytes` bytes of the pending group
    /// and never syncs, then drops the log, like a crash in mid-commit.
    #[cfg(test)]
    fn crash_during_commit(mut self, bytes: usize) {
        self.write_pending(Some(bytes))
            .expect("partial write in a test");
    }
}

/// Whether `e` failed because the disk or a quota is full: retryable once
/// there is room, so the commit is rolled back rather than the log poisoned.
fn is_storage_full(e: &WalError) -> bool {
    let source = match e {
        WalError::Write { source, .. }
        | WalError::Sync { source, .. }
        | WalError::CreateSegment { source, .. }
        | WalError::SyncDir { source, .. } => source,
        _ => return false,
    };
    matches!(
        source.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// `4 MiB`, `1.5 KiB`, `100 bytes`: sizes for people.
pub(crate) fn human_bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let n_f = n as f64;
    if n_f >= KIB * KIB * KIB {
        format!("{:.1} GiB", n_f / (KIB * KIB * KIB)).replace(".0 ", " ")
    } else if n_f >= KIB * KIB {
        format!("{:.1} MiB", n_f / (KIB * KIB)).replace(".0 ", " ")
    } else if n_f >= KIB {
        format!("{:.1} KiB", n_f / KIB).replace(".0 ", " ")
    } else {
        format!("{n} bytes")
    }
}
