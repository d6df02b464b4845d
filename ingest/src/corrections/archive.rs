//! The archive: every admitted batch, kept on disk for the correction
//! horizon, so a window can be computed again when telemetry for it arrives
//! late. One SQLite file per UTC day of the batches' first readings
//! (`archive/2026-11-30.sqlite`), clustered by customer and time, so a
//! customer's week is a few range scans and a day past the horizon is one
//! file deleted. `state.sqlite` holds what outlives the days: each device's
//! last batch before the oldest day kept (the baseline of its next
//! increment), each customer's last revision and earliest batch (a
//! customer whose every batch is still here can be backfilled), and the
//! restatements still to do.
//!
//! Live batches are kept in chunks: one row per customer and day file for
//! each flush of the live buffer (their bodies together, their keys' hashes
//! beside them), so the live path costs one row a customer, not one B-tree
//! entry a batch. Late batches, rare and checked one by one for
//! redeliveries, keep a row each (`batches`; day files of earlier builds
//! hold every batch there). A batch in both, or twice in chunks (the WAL's
//! replay after a restart archives again what it holds), is read once.
//!
//! Commits are not synced one by one (`synchronous = NORMAL`, SQLite's WAL
//! mode: a crash of the process loses nothing committed); [`Archive::durable`]
//! syncs every file's write-ahead log, before late batches are acknowledged
//! (they are in no other WAL) and before fleetpulse's WAL is cut behind live
//! batches.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::{ControlFlow, RangeInclusive};
use std::path::{Path, PathBuf};

use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::{
    AlertRecord, CustomerKpi, DeviceBatch, DeviceKpi, EventTime, Id, JourneyState, Output,
};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};

use super::live::{Filed, LiveBatches};
use super::open_days::OpenDays;

pub(super) const DAY_MS: u64 = 86_400_000;

const DAY_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS batches (
        customer TEXT NOT NULL,
        first_at INTEGER NOT NULL,
        device TEXT NOT NULL,
        unit_epoch INTEGER NOT NULL,
        sequence INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (customer, first_at, device, unit_epoch, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS chunks (
        customer TEXT NOT NULL,
        first_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        keys BLOB NOT NULL,
        body BLOB NOT NULL
    );
    DROP INDEX IF EXISTS chunks_by_customer;
    CREATE INDEX IF NOT EXISTS chunks_by_start ON chunks (customer, first_at);";

const STATE_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS carry (
        customer TEXT NOT NULL,
        device TEXT NOT NULL,
        first_at INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (customer, device)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS revisions (
        customer TEXT PRIMARY KEY,
        revision INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS journey_days (
        customer TEXT NOT NULL,
        day_end INTEGER NOT NULL,
        state BLOB NOT NULL,
        PRIMARY KEY (customer, day_end)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS alerts (
        customer TEXT NOT NULL,
        rule TEXT NOT NULL,
        opened_at INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (customer, rule, opened_at)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS customers (
        customer TEXT PRIMARY KEY,
        first_live_at INTEGER,
        cut INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS live_devices (
        customer TEXT NOT NULL,
        device TEXT NOT NULL,
        first_live_at INTEGER NOT NULL,
        PRIMARY KEY (customer, device)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS journey_windows (
        customer TEXT NOT NULL,
        window_end INTEGER NOT NULL,
        window TEXT NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (customer, window_end, window)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS journey_devices (
        customer TEXT NOT NULL,
        day_end INTEGER NOT NULL,
        device TEXT NOT NULL,
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (customer, day_end, device)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS recomputes (
        customer TEXT PRIMARY KEY,
        from_ms INTEGER NOT NULL,
        generation INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS definitions (
        customer TEXT PRIMARY KEY,
        digest BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS pending (
        customer TEXT PRIMARY KEY,
        from_ms INTEGER NOT NULL,
        due_ms INTEGER NOT NULL,
        first_pass_done INTEGER NOT NULL,
        generation INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS pending_devices (
        customer TEXT NOT NULL,
        device TEXT NOT NULL,
        from_ms INTEGER NOT NULL,
        to_ms INTEGER,
        PRIMARY KEY (customer, device)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS pending_arrivals (
        customer TEXT NOT NULL,
        generation INTEGER NOT NULL,
        from_ms INTEGER NOT NULL,
        PRIMARY KEY (customer, generation)
    ) WITHOUT ROWID;";

/// The archive failed; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("archive {path}: {message}")]
pub struct ArchiveError {
    path: String,
    message: String,
}

/// SQLite on a full disk may say only "disk I/O error": the message then
/// says the disk is full too.
pub(super) fn fail(path: &Path, e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError {
        path: path.display().to_string(),
        message: format!("{e}{}", crate::sinks::sqlite::DiskNote::of(path)),
    }
}

/// A customer with windows to restate: from its earliest late reading;
/// once a first pass restated what had closed, a final pass at `due`
/// catches the windows that were still open when the late data came (a
/// reading after it whose increment the live dataflow had already taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The customer.
    pub customer: Id,
    /// Earliest late reading.
    pub from: EventTime,
    /// When the final pass may run: every window open at the last late
    /// arrival has closed.
    pub due: EventTime,
    /// Whether the first pass ran.
    pub first_pass_done: bool,
    /// Whether the final pass ran; the row is kept until the checkpoint
    /// passes `due`: a restart before that recomputes those windows from the
    /// WAL, which holds no late data, and they are restated again.
    pub final_done: bool,
    /// Raised by every late arrival: a pass only clears the row it read.
    pub generation: u64,
    /// The devices with late data, each with its earliest and latest late
    /// reading: only their windows change, from the earliest to the one
    /// holding their first reading after the latest (whose increment the
    /// late ones split). Empty in a row kept by an earlier build: every
    /// device's, and a latest unknown there is the end of time.
    pub devices: HashMap<Id, RangeInclusive<EventTime>>,
}

impl Pending {
    /// Whether a pass may restate the window of `device` ending at `end`:
    /// one of a device with late data, ending after its earliest late
    /// reading (see [`Self::devices`] for where they stop changing).
    pub fn restates(&self, device: &str, end: EventTime) -> bool {
        self.devices.is_empty()
            || (self.devices.get(device)).is_some_and(|late| end > *late.start())
    }

    /// Where its restatement reads from, or the latest late reading of the
    /// row if earlier: a backfill still arriving (a pass may run between
    /// its parts) goes on from there, and the archive keeps what it reads.
    pub fn keeps_from(&self) -> EventTime {
        let latest = (self.devices.values()).map(|late| *late.end()).max();
        latest.map_or(self.from, |l| l.min(self.from))
    }
}

/// A customer whose journey is folded again from its kept inputs, from
/// `from` (its definition changed, or an operator asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recompute {
    /// The customer.
    pub customer: Id,
    /// The first day folded again starts at or before this.
    pub from: EventTime,
    /// Raised by every request: a pass only clears the row it read.
    pub generation: u64,
}

/// The archive directory.
pub struct Archive {
    dir: PathBuf,
    state: Connection,
    /// Day files, by UTC day number.
    days: BTreeSet<u64>,
    /// Those open (the most recently used).
    open: OpenDays,
    /// Each open day file's widest chunk (last minus first reading): a
    /// chunk holding a time starts at most this much before it, so
    /// lookups are range scans of the index on the start.
    spans: HashMap<u64, EventTime>,
    /// What the archive holds of each customer (`customers` table).
    held: HashMap<Id, Held>,
    /// Customers whose [`Held`] changed since [`Self::take_held`].
    moved: Vec<Id>,
    /// Each device's first reading from its telemetry topic
    /// (`live_devices`), by [`device_key`].
    device_live: HashMap<u64, EventTime>,
    /// Those noted since [`Self::take_live_devices`].
    moved_devices: Vec<(u64, EventTime)>,
    /// A day file was created since the last [`Self::durable`]: the
    /// directory is synced too.
    created: bool,
    /// Day files written since the last [`Self::durable`]: only their logs
    /// are synced (a day file's log holds nothing unsynced otherwise, and a
    /// month of open day files made each sync of late data a month of
    /// fsyncs).
    dirty: std::collections::BTreeSet<u64>,
    /// Live records the portfolio failed to keep, tried again first.
    unkept: super::portfolio::Unkept,
}

/// What the archive holds of a customer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Its earliest batch the live dataflow took in from its telemetry
    /// topics.
    pub first_live_at: Option<EventTime>,
    /// The latest start of its batches in day files pruned since (`None`:
    /// none were): a restatement of it must start after this.
    pub cut_through: Option<EventTime>,
}

/// The archive's format: its tables and the layout of the bincode bodies
/// in them (batches, journey states, windows, alerts), which bincode does
/// not describe. Noted in each file as it is opened (SQLite's
/// `user_version`; 0 in a file of a build before the note, whose layout
/// is this one); a file of another format, from a newer build (a
/// rollback), is refused rather than misread.
pub const FORMAT: i64 = 1;

fn open(path: &Path, schema: &str) -> Result<Connection, ArchiveError> {
    let conn = Connection::open(path).map_err(|e| fail(path, e))?;
    // A busy wait: `fleetpulse recompute` writes to a running service's
    // state file.
    (conn.execute_batch(
        "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
    ))
    .map_err(|e| fail(path, e))?;
    let format: i64 =
        (conn.query_row("PRAGMA user_version", [], |r| r.get(0))).map_err(|e| fail(path, e))?;
    // No note: a new file, or one of a build before the note, whose
    // layout is format 1. Any other format is not read as this one: a
    // change of layout reads the earlier one here, or is refused.
    if format == 0 {
        (conn.pragma_update(None, "user_version", FORMAT)).map_err(|e| fail(path, e))?;
    } else if format != FORMAT {
        let dir = path.parent().unwrap_or(path).display();
        let by = if format > FORMAT {
            "a newer"
        } else {
            "an older"
        };
        return Err(fail(
            path,
            format!(
                "archive of format {format}, written by {by} build (this one reads \
                 {FORMAT}): run that build, or move {dir} away to start without it (the \
                 late data it holds is then not restated again)"
            ),
        ));
    }
    conn.execute_batch(schema).map_err(|e| fail(path, e))?;
    // A file's log is copied into it as it grows, not again at the close:
    // a day file closes to be deleted (the horizon passed it), or at the
    // stop, which a month of day files' checkpoints held up. The log stays
    // beside the file and is read at the next open.
    (conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true))
        .map_err(|e| fail(path, e))?;
    Ok(conn)
}

/// Gives a state file of an earlier build the devices' latest late
/// readings (`to_ms`; unknown, NULL, in the rows it holds).
fn add_late_ends(state: &Connection, path: &Path) -> Result<(), ArchiveError> {
    let has: bool = (state.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('pending_devices') WHERE name = 'to_ms'",
        [],
        |r| r.get(0),
    ))
    .map_err(|e| fail(path, e))?;
    if !has {
        (state.execute_batch("ALTER TABLE pending_devices ADD COLUMN to_ms INTEGER"))
            .map_err(|e| fail(path, e))?;
    }
    Ok(())
}

/// The day file of the UTC day `day` in the archive directory `dir`.
fn day_file(dir: &Path, day: u64) -> PathBuf {
    dir.join(format!("{}.sqlite", day_name(day)))
}

/// `2026-11-30` for the UTC day `day` (days since the epoch).
fn day_name(day: u64) -> String {
    jiff::Timestamp::from_millisecond((day * DAY_MS) as i64)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| format!("day-{day}"))
}

fn day_of_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".sqlite")?;
    let date: jiff::civil::Date = stem.parse().ok()?;
    let at = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    u64::try_from(at.as_millisecond())
        .ok()
        .map(|ms| ms / DAY_MS)
}

/// Adds to `found` the first `(device, body)` row `sql` gives for each of
/// `devices` not in it yet.
fn first_of_each(
    conn: &Connection,
    path: &Path,
    sql: &str,
    args: impl rusqlite::Params,
    devices: &HashSet<Id>,
    found: &mut BTreeMap<Id, DeviceBatch>,
) -> Result<(), ArchiveError> {
    let mut select = conn.prepare_cached(sql).map_err(|e| fail(path, e))?;
    let rows = select
        .query_map(args, |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(|e| fail(path, e))?;
    for row in rows {
        let (device, body) = row.map_err(|e| fail(path, e))?;
        let device: Id = device.into();
        if devices.contains(&device) && !found.contains_key(&device) {
            found.insert(device, decode(path, &body)?);
        }
    }
    Ok(())
}

/// A row's column `i`, a blob, as SQLite holds it (no copy).
fn blob<'r>(path: &Path, row: &'r rusqlite::Row, i: usize) -> Result<&'r [u8], ArchiveError> {
    (row.get_ref(i).and_then(|v| Ok(v.as_blob()?))).map_err(|e| fail(path, e))
}

/// A journey state as [`Archive::keep_journeys`] wrote it. A state kept
/// before its last fields were (the day shape, then the day its tracking
/// began) lacks them: bincode writes fields one after the other, so the
/// old bytes with the missing fields' defaults after them are the state
/// with those still to learn.
fn journey_state(body: Vec<u8>) -> Result<JourneyState, bincode::Error> {
    let first = match bincode::deserialize(&body) {
        Ok(state) => return Ok(state),
        Err(e) => e,
    };
    let untracked = bincode::serialize(&None::<fleetpulse_engine::EventTime>)?;
    let shape = bincode::serialize(&fleetpulse_engine::kpi::day_shape::DayShape::default())?;
    for missing in [untracked.clone(), [shape, untracked].concat()] {
        if let Ok(state) = bincode::deserialize(&[body.as_slice(), &missing].concat()) {
            return Ok(state);
        }
    }
    Err(first)
}

fn decode(path: &Path, body: &[u8]) -> Result<DeviceBatch, ArchiveError> {
    bincode::deserialize(body).map_err(|e| fail(path, format!("damaged batch: {e}")))
}

fn decode_chunk(path: &Path, body: &[u8]) -> Result<Vec<DeviceBatch>, ArchiveError> {
    bincode::deserialize(body).map_err(|e| fail(path, format!("damaged chunk: {e}")))
}

/// What tells a redelivery: the same device, unit epoch, sequence and
/// first reading (the customer is the row's).
fn same_batch(a: &DeviceBatch, b: &DeviceBatch) -> bool {
    (a.device == b.device && a.unit_epoch == b.unit_epoch)
        && (a.sequence == b.sequence && a.first_at() == b.first_at())
}

/// A device's key among every customer's: its customer and id (two
/// customers' devices may share an id). Kept in memory only (the table
/// holds the ids), so the hash need only be fixed within the process.
pub fn device_key(customer: &str, device: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one((customer, device))
}

/// The key's 64-bit FNV-1a hash: stable across builds and runs, since chunk
/// rows keep it. A hit is confirmed against the batch itself.
pub(super) fn key_hash(b: &DeviceBatch) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(b.device.as_bytes());
    eat(&[0xff]);
    eat(&b.unit_epoch.to_le_bytes());
    eat(&b.sequence.to_le_bytes());
    eat(&b.first_at().to_le_bytes());
    hash
}

/// Whether a chunk's sorted key hashes hold `hash`.
fn holds_hash(keys: &[u8], hash: u64) -> bool {
    let at = |i: usize| u64::from_le_bytes(keys[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let (mut lo, mut hi) = (0, keys.len() / 8);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match at(mid).cmp(&hash) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// A chunk row's place, times and key hashes, without its body.
struct ChunkKeys {
    rowid: i64,
    first_at: EventTime,
    last_at: EventTime,
    keys: Vec<u8>,
}

/// The chunks of `customer` in the file of `day` (`conn`) that may hold a
/// batch whose first reading lies in the day: those that begin in it or up
/// to `span` (the file's longest chunk) before it.
fn chunk_keys(
    conn: &Connection,
    path: &Path,
    customer: &str,
    day: u64,
    span: EventTime,
) -> Result<Vec<ChunkKeys>, ArchiveError> {
    let start = day * DAY_MS;
    let mut select = (conn.prepare_cached(
        "SELECT rowid, first_at, last_at, keys FROM chunks \
         WHERE customer = ?1 AND first_at >= ?2 AND first_at < ?3",
    ))
    .map_err(|e| fail(path, e))?;
    let args = params![
        customer,
        sql_time(start.saturating_sub(span)),
        sql_time(start + DAY_MS)
    ];
    let rows = select.query_map(args, |r| {
        Ok(ChunkKeys {
            rowid: r.get(0)?,
            first_at: r.get::<_, i64>(1)? as EventTime,
            last_at: r.get::<_, i64>(2)? as EventTime,
            keys: r.get(3)?,
        })
    });
    (rows.and_then(|rows| rows.collect())).map_err(|e| fail(path, e))
}

/// A time as SQLite's signed integer (the far future saturates).
fn sql_time(at: EventTime) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

/// `customer`'s batches in one day file whose first reading lies in
/// `range`, rows and chunks, each key once (the first kept), in (first
/// reading, device, unit epoch, sequence) order.
fn day_batches(
    conn: &Connection,
    path: &Path,
    customer: &str,
    range: std::ops::Range<EventTime>,
    span: EventTime,
) -> Result<Vec<DeviceBatch>, ArchiveError> {
    let (from, to) = (sql_time(range.start), sql_time(range.end));
    let start = sql_time(range.start.saturating_sub(span));
    let mut out = Vec::new();
    let mut select = (conn.prepare_cached(
        "SELECT body FROM batches WHERE customer = ?1 AND first_at >= ?2 AND first_at < ?3",
    ))
    .map_err(|e| fail(path, e))?;
    // Bodies are decoded where SQLite holds them: a chunk is about a
    // mebibyte, and a copy of each into a buffer of its own was a mebibyte
    // of fresh pages to fault in per chunk.
    let mut rows = (select.query(params![customer, from, to])).map_err(|e| fail(path, e))?;
    while let Some(row) = rows.next().map_err(|e| fail(path, e))? {
        out.push(decode(path, blob(path, row, 0)?)?);
    }
    let mut select = (conn.prepare_cached(
        "SELECT body FROM chunks WHERE customer = ?1 AND first_at >= ?2 AND first_at < ?3 \
         AND last_at >= ?4 ORDER BY rowid",
    ))
    .map_err(|e| fail(path, e))?;
    let mut rows = (select.query(params![customer, start, to, from])).map_err(|e| fail(path, e))?;
    while let Some(row) = rows.next().map_err(|e| fail(path, e))? {
        let chunk = decode_chunk(path, blob(path, row, 0)?)?;
        out.extend(chunk.into_iter().filter(|b| range.contains(&b.first_at())));
    }
    let mut seen = HashSet::with_capacity(out.len());
    out.retain(|b| seen.insert((b.device.clone(), b.unit_epoch, b.sequence, b.first_at())));
    out.sort_by(|a, b| {
        (a.first_at(), &a.device, a.unit_epoch, a.sequence).cmp(&(
            b.first_at(),
            &b.device,
            b.unit_epoch,
            b.sequence,
        ))
    });
    Ok(out)
}

/// Each device's latest batch among `batches`: the one with the latest first
/// reading (then unit epoch, then sequence).
fn latest_of_each(batches: impl IntoIterator<Item = DeviceBatch>) -> HashMap<Id, DeviceBatch> {
    let mut latest = HashMap::new();
    keep_latest(&mut latest, batches);
    latest
}

/// Adds `batches` to each device's latest batch so far.
fn keep_latest(
    latest: &mut HashMap<Id, DeviceBatch>,
    batches: impl IntoIterator<Item = DeviceBatch>,
) {
    let order = |b: &DeviceBatch| (b.first_at(), b.unit_epoch, b.sequence);
    for b in batches {
        match latest.get(&b.device) {
            Some(kept) if order(kept) >= order(&b) => {}
            _ => {
                latest.insert(b.device.clone(), b);
            }
        }
    }
}

/// A chunk's bodies stop growing past this (a chunk is read whole: a
/// redelivery's check decodes it; payloads go up to 256 KiB).
const CHUNK_BYTES: usize = 1 << 20;

/// One chunk row to write: its batches' filings, and their encodings as
/// bincode encodes a `Vec<DeviceBatch>` (a little-endian `u64` count, then
/// each batch), so [`decode_chunk`] reads it back.
#[derive(Default)]
struct Chunk<'a> {
    batches: Vec<&'a Filed>,
    body: Vec<u8>,
}

/// `batches` (filings and encodings) in chunks of about [`CHUNK_BYTES`] of
/// bodies at most (one batch at least).
fn split<'a>(batches: &[(&'a Filed, &[u8])]) -> Vec<Chunk<'a>> {
    let mut chunks = Vec::new();
    let mut chunk = Chunk::default();
    for (i, (filed, bytes)) in batches.iter().enumerate() {
        if chunk.body.is_empty() {
            chunk.body.extend_from_slice(&0u64.to_le_bytes());
        }
        chunk.body.extend_from_slice(bytes);
        chunk.batches.push(filed);
        if chunk.body.len() >= CHUNK_BYTES || i + 1 == batches.len() {
            let count = chunk.batches.len() as u64;
            chunk.body[..8].copy_from_slice(&count.to_le_bytes());
            chunks.push(std::mem::take(&mut chunk));
        }
    }
    chunks
}

/// Carries each device's latest batch in the chunks of the day file
/// attached as `old` (if newer than what is carried), a customer at a time.
fn carry_chunks(tx: &rusqlite::Transaction, path: &Path) -> Result<(), ArchiveError> {
    let customers: Vec<String> = {
        let mut select =
            (tx.prepare("SELECT DISTINCT customer FROM old.chunks")).map_err(|e| fail(path, e))?;
        let rows = (select.query_map([], |r| r.get(0))).map_err(|e| fail(path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| fail(path, e))?
    };
    let mut select = (tx.prepare("SELECT body FROM old.chunks WHERE customer = ?1"))
        .map_err(|e| fail(path, e))?;
    let mut upsert = (tx.prepare(
        "INSERT INTO carry (customer, device, first_at, body) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (customer, device) DO UPDATE SET \
           first_at = excluded.first_at, body = excluded.body \
         WHERE excluded.first_at > carry.first_at",
    ))
    .map_err(|e| fail(path, e))?;
    for customer in customers {
        // A chunk at a time: the customer's devices' latest only are held.
        let mut latest = HashMap::new();
        let rows = (select.query_map(params![customer], |r| r.get::<_, Vec<u8>>(0)))
            .map_err(|e| fail(path, e))?;
        for body in rows {
            keep_latest(
                &mut latest,
                decode_chunk(path, &body.map_err(|e| fail(path, e))?)?,
            );
        }
        for (device, b) in latest {
            let body = bincode::serialize(&b).expect("a batch serialises");
            (upsert.execute(params![customer, &*device, sql_time(b.first_at()), body]))
                .map_err(|e| fail(path, e))?;
        }
    }
    Ok(())
}

impl Archive {
    /// Opens (or creates) the archive in `dir`, with the day files already
    /// there.
    pub fn open(dir: &Path) -> Result<Self, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
        let state = open(
            &dir.join("state.sqlite"),
            &format!("{STATE_SCHEMA}{}", super::portfolio::SCHEMA),
        )?;
        add_late_ends(&state, &dir.join("state.sqlite"))?;
        let held = {
            let path = dir.join("state.sqlite");
            // The carried batches are each device's latest pruned one (an
            // earlier build marked only `cut`; with no carry row, its whole
            // history is taken as pruned).
            let mut select = (state.prepare(
                "SELECT customer, first_live_at, CASE WHEN cut = 0 THEN NULL ELSE \
                   COALESCE((SELECT MAX(first_at) FROM carry \
                             WHERE carry.customer = customers.customer), -1) END \
                 FROM customers",
            ))
            .map_err(|e| fail(&path, e))?;
            let rows = select
                .query_map([], |r| {
                    let held = Held {
                        first_live_at: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                        cut_through: (r.get::<_, Option<i64>>(2)?)
                            .map(|v| u64::try_from(v).unwrap_or(EventTime::MAX)),
                    };
                    Ok((r.get::<_, String>(0)?.into(), held))
                })
                .map_err(|e| fail(&path, e))?;
            rows.collect::<Result<HashMap<Id, Held>, _>>()
                .map_err(|e| fail(&path, e))?
        };
        let device_live: HashMap<u64, EventTime> = {
            let path = dir.join("state.sqlite");
            let mut select = (state
                .prepare("SELECT customer, device, first_live_at FROM live_devices"))
            .map_err(|e| fail(&path, e))?;
            let rows = select
                .query_map([], |r| {
                    let (customer, device): (String, String) = (r.get(0)?, r.get(1)?);
                    Ok((
                        device_key(&customer, &device),
                        r.get::<_, i64>(2)? as EventTime,
                    ))
                })
                .map_err(|e| fail(&path, e))?;
            rows.collect::<Result<_, _>>().map_err(|e| fail(&path, e))?
        };
        let mut archive = Self {
            dir: dir.to_owned(),
            state,
            days: BTreeSet::new(),
            open: OpenDays::default(),
            spans: HashMap::new(),
            moved: held.keys().cloned().collect(),
            held,
            moved_devices: device_live.iter().map(|(k, at)| (*k, *at)).collect(),
            device_live,
            created: false,
            dirty: Default::default(),
            unkept: Default::default(),
        };
        let entries = std::fs::read_dir(dir).map_err(|e| fail(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| fail(dir, e))?;
            if let Some(day) = entry.file_name().to_str().and_then(day_of_name) {
                archive.day(day)?;
            }
        }
        Ok(archive)
    }

    fn day_path(&self, day: u64) -> PathBuf {
        day_file(&self.dir, day)
    }

    fn day(&mut self, day: u64) -> Result<&mut Connection, ArchiveError> {
        if !self.days.contains(&day) {
            let path = self.day_path(day);
            self.created |= !path.exists();
            let conn = self.open.get(day, || open(&path, DAY_SCHEMA))?;
            let span: i64 = (conn.query_row(
                "SELECT COALESCE(MAX(last_at - first_at), 0) FROM chunks",
                [],
                |r| r.get(0),
            ))
            .map_err(|e| fail(&path, e))?;
            self.spans.insert(day, u64::try_from(span).unwrap_or(0));
            self.days.insert(day);
        }
        // Its name is made only when it is opened again: this runs for
        // every live transaction.
        let dir = &self.dir;
        self.open.get(day, || open(&day_file(dir, day), DAY_SCHEMA))
    }

    /// Adds batches, one transaction per day file; returns which were new
    /// (a redelivered batch is there already).
    pub fn append<B: std::borrow::Borrow<DeviceBatch>>(
        &mut self,
        batches: &[B],
    ) -> Result<Vec<bool>, ArchiveError> {
        let mut by_day: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, b) in batches.iter().enumerate() {
            by_day
                .entry(b.borrow().first_at() / DAY_MS)
                .or_default()
                .push(i);
        }
        let mut new = vec![false; batches.len()];
        for (day, indices) in by_day {
            self.in_day(day, |tx, path| {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO batches \
                         (customer, first_at, device, unit_epoch, sequence, body) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(|e| fail(path, e))?;
                for i in indices {
                    let b = batches[i].borrow();
                    let body = bincode::serialize(b).expect("a batch serialises");
                    let inserted = insert
                        .execute(params![
                            &*b.customer,
                            b.first_at() as i64,
                            &*b.device,
                            b.unit_epoch as i64,
                            b.sequence as i64,
                            body
                        ])
                        .map_err(|e| fail(path, e))?;
                    new[i] = inserted == 1;
                }
                Ok(())
            })?;
        }
        Ok(new)
    }

    /// Runs `write` in one transaction of day file `day`.
    fn in_day(
        &mut self,
        day: u64,
        write: impl FnOnce(&rusqlite::Transaction, &Path) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let path = self.day_path(day);
        let conn = self.day(day)?;
        let tx = conn.transaction().map_err(|e| fail(&path, e))?;
        write(&tx, &path)?;
        tx.commit().map_err(|e| fail(&path, e))?;
        self.dirty.insert(day);
        Ok(())
    }

    /// Adds batches the live dataflow took in, encoded where it took them:
    /// one chunk row per customer and day file, one transaction per day
    /// file. Nothing is looked up: a batch archived before (the WAL's
    /// replay) is read once all the same.
    pub fn append_live(&mut self, live: &[LiveBatches]) -> Result<(), ArchiveError> {
        type Chunks<'a> = BTreeMap<&'a str, Vec<(&'a Filed, &'a [u8])>>;
        let mut by_day: BTreeMap<u64, Chunks> = BTreeMap::new();
        for (filed, bytes) in live.iter().flat_map(LiveBatches::iter) {
            let day = by_day.entry(filed.first_at / DAY_MS).or_default();
            day.entry(&filed.customer).or_default().push((filed, bytes));
        }
        for (day, chunks) in by_day {
            let mut span = 0;
            self.in_day(day, |tx, path| {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO chunks (customer, first_at, last_at, keys, body) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(|e| fail(path, e))?;
                for (customer, batches) in chunks {
                    for chunk in split(&batches) {
                        let times = chunk.batches.iter().map(|f| f.first_at);
                        let first = times.clone().min().unwrap_or(0);
                        let last = times.max().unwrap_or(0);
                        span = span.max(last - first);
                        let mut hashes: Vec<u64> = chunk.batches.iter().map(|f| f.key).collect();
                        hashes.sort_unstable();
                        let keys: Vec<u8> = hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
                        let row =
                            params![customer, sql_time(first), sql_time(last), keys, chunk.body];
                        insert.execute(row).map_err(|e| fail(path, e))?;
                    }
                }
                Ok(())
            })?;
            let widest = self.spans.entry(day).or_default();
            *widest = (*widest).max(span);
        }
        Ok(())
    }

    /// Notes the customers' earliest batches the live dataflow took in from
    /// their telemetry topics (a history's newest hours, taken in live from
    /// a backfill topic, are not the customer's live telemetry).
    pub fn note_live(&mut self, live: &[LiveBatches]) -> Result<(), ArchiveError> {
        let mut earlier: HashMap<&Id, EventTime> = HashMap::new();
        let mut devices: HashMap<u64, (&Id, &Id, EventTime)> = HashMap::new();
        let telemetry = (live.iter().flat_map(LiveBatches::iter)).filter(|(f, _)| !f.backfill);
        for (filed, _) in telemetry {
            let at = filed.first_at;
            let key = device_key(&filed.customer, &filed.device);
            if self.device_live.get(&key).is_none_or(|f| at < *f) {
                let e = (devices.entry(key)).or_insert((&filed.customer, &filed.device, at));
                e.2 = e.2.min(at);
            }
            let held = self.held.get(&filed.customer);
            if held.and_then(|h| h.first_live_at).is_none_or(|f| at < f) {
                let e = earlier.entry(&filed.customer).or_insert(at);
                *e = (*e).min(at);
            }
        }
        if !devices.is_empty() {
            let rows: Vec<(u64, String, String, EventTime)> = (devices.into_iter())
                .map(|(k, (c, d, at))| (k, c.to_string(), d.to_string(), at))
                .collect();
            self.write_state(
                "INSERT INTO live_devices (customer, device, first_live_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (customer, device) DO UPDATE SET \
                   first_live_at = MIN(first_live_at, excluded.first_live_at)",
                rows.iter().map(|(_, c, d, at)| (c, d, *at as i64)),
            )?;
            for (key, _, _, at) in rows {
                let first = self.device_live.entry(key).or_insert(at);
                *first = (*first).min(at);
                self.moved_devices.push((key, *first));
            }
        }
        if earlier.is_empty() {
            return Ok(());
        }
        let rows: Vec<(Id, EventTime)> = (earlier.into_iter())
            .map(|(c, at)| (c.clone(), at))
            .collect();
        self.write_state(
            "INSERT INTO customers (customer, first_live_at) VALUES (?1, ?2) \
             ON CONFLICT (customer) DO UPDATE SET \
               first_live_at = MIN(COALESCE(first_live_at, excluded.first_live_at), \
                                   excluded.first_live_at)",
            rows.iter().map(|(c, at)| (c.to_string(), *at as i64)),
        )?;
        for (customer, at) in rows {
            let held = self.held.entry(customer.clone()).or_default();
            held.first_live_at = Some(held.first_live_at.map_or(at, |f| f.min(at)));
            self.moved.push(customer);
        }
        Ok(())
    }

    /// The devices whose first live reading was noted since the last call
    /// (every one at the first), by [`device_key`].
    pub fn take_live_devices(&mut self) -> Vec<(u64, EventTime)> {
        std::mem::take(&mut self.moved_devices)
    }

    /// The latest start of `customer`'s batches in day files pruned since
    /// ([`Held::cut_through`]).
    pub fn cut_through(&self, customer: &str) -> Option<EventTime> {
        self.held.get(customer).and_then(|h| h.cut_through)
    }

    /// The customers whose [`Held`] changed since the last call (every one
    /// at the first).
    pub fn take_held(&mut self) -> Vec<(Id, Held)> {
        let moved = std::mem::take(&mut self.moved);
        (moved.into_iter())
            .filter_map(|c| self.held.get(&c).map(|h| (c, *h)))
            .collect()
    }

    /// Makes every commit so far durable: each file's write-ahead log is
    /// synced, as SQLite's `synchronous = FULL` does at each commit (what a
    /// checkpoint copied into a database file, SQLite synced there): the
    /// state file's and those of the day files written since the last call.
    /// The pages are not copied into the database files here (SQLite's own
    /// checkpoints do that as the logs grow).
    pub fn durable(&mut self) -> Result<(), ArchiveError> {
        let mut files = vec![self.dir.join("state.sqlite")];
        files.extend(self.dirty.iter().map(|day| self.day_path(*day)));
        for file in files {
            let mut log = file.into_os_string();
            log.push("-wal");
            let log = PathBuf::from(log);
            match std::fs::File::open(&log) {
                Ok(opened) => opened.sync_data().map_err(|e| fail(&log, e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(&log, e)),
            }
        }
        if self.created {
            let dir = std::fs::File::open(&self.dir).map_err(|e| fail(&self.dir, e))?;
            dir.sync_all().map_err(|e| fail(&self.dir, e))?;
            self.created = false;
        }
        self.dirty.clear();
        Ok(())
    }

    /// Whether each batch is in the archive already (a redelivery).
    pub fn contains(&mut self, batches: &[DeviceBatch]) -> Result<Vec<bool>, ArchiveError> {
        let mut found = Vec::with_capacity(batches.len());
        // The keys of each day's chunks of a customer, read once for all
        // the batches asked about: a buffer uploaded on reconnect asks
        // about dozens of one device's batches at once, each of which read
        // the same keys again.
        let mut chunks: HashMap<(u64, Id), Vec<ChunkKeys>> = HashMap::new();
        for b in batches {
            let day = b.first_at() / DAY_MS;
            if !self.days.contains(&day) {
                found.push(false);
                continue;
            }
            let path = self.day_path(day);
            let span = self.spans.get(&day).copied().unwrap_or(0);
            let conn = self.day(day)?;
            let mut select = conn
                .prepare_cached(
                    "SELECT 1 FROM batches WHERE customer = ?1 AND first_at = ?2 AND device = ?3 \
                     AND unit_epoch = ?4 AND sequence = ?5",
                )
                .map_err(|e| fail(&path, e))?;
            let mut hit = select
                .exists(params![
                    &*b.customer,
                    b.first_at() as i64,
                    &*b.device,
                    b.unit_epoch as i64,
                    b.sequence as i64
                ])
                .map_err(|e| fail(&path, e))?;
            if !hit {
                let keys = match chunks.entry((day, b.customer.clone())) {
                    Entry::Occupied(held) => held.into_mut(),
                    Entry::Vacant(slot) => {
                        slot.insert(chunk_keys(conn, &path, &b.customer, day, span)?)
                    }
                };
                let (at, hash) = (b.first_at(), key_hash(b));
                // A chunk's body is read (where SQLite holds it) only when
                // its keys' hashes hold the batch's.
                let candidates = keys.iter().filter(|c| {
                    c.first_at.saturating_add(span) >= at && c.first_at <= at && c.last_at >= at
                });
                for chunk in candidates.filter(|c| holds_hash(&c.keys, hash)) {
                    let mut select = (conn
                        .prepare_cached("SELECT body FROM chunks WHERE rowid = ?1"))
                    .map_err(|e| fail(&path, e))?;
                    let mut rows = select.query([chunk.rowid]).map_err(|e| fail(&path, e))?;
                    if let Some(row) = rows.next().map_err(|e| fail(&path, e))?
                        && decode_chunk(&path, blob(&path, row, 0)?)?
                            .iter()
                            .any(|c| same_batch(c, b))
                    {
                        hit = true;
                        break;
                    }
                }
            }
            found.push(hit);
        }
        Ok(found)
    }

    /// The end of the latest UTC day the archive holds batches of.
    pub fn newest_day_end(&self) -> Option<EventTime> {
        self.days.last().map(|day| (day + 1) * DAY_MS)
    }

    /// A reader of the day files as they are now, for a pass on another
    /// thread (see [`Reader`]).
    pub fn reader(&self) -> Reader {
        Reader {
            dir: self.dir.clone(),
            days: self.days.iter().copied().collect(),
            spans: self.spans.clone(),
            open: OpenDays::default(),
        }
    }

    /// [`Reader::batches`] of the archive as it is now (a pass reads
    /// through a [`Reader`] on its own thread).
    pub fn batches(
        &self,
        customer: &str,
        from: EventTime,
    ) -> Result<Vec<DeviceBatch>, ArchiveError> {
        self.reader().batches(customer, from)
    }

    /// [`Reader::earlier`] of the archive as it is now.
    pub fn earlier(
        &self,
        customer: &str,
        devices: &HashSet<Id>,
        before: EventTime,
    ) -> Result<Vec<DeviceBatch>, ArchiveError> {
        self.reader().earlier(customer, devices, before)
    }

    /// [`Reader::from_floor`] of the archive as it is now.
    pub fn from_floor(&self, customer: &str, floor: EventTime) -> Result<FromFloor, ArchiveError> {
        self.reader().from_floor(customer, floor)
    }

    /// Drops the day files before `keep_from`'s day, carrying each device's
    /// last batch in them (if newer than what is carried already). Returns
    /// the files removed. A day that fails (a full disk, a damaged file)
    /// stays in the archive as it was, read as before, and is tried again
    /// by the next call; the days after it are pruned all the same. The
    /// error is the first day's that failed.
    pub fn prune(&mut self, keep_from: EventTime) -> Result<usize, ArchiveError> {
        let old: Vec<u64> = self.days.range(..keep_from / DAY_MS).copied().collect();
        let mut first_error = None;
        let mut removed = 0;
        for day in old {
            match self.prune_day(day) {
                Ok(()) => removed += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(removed), Err)
    }

    /// Carries the last batches of `day`'s file, then removes it.
    fn prune_day(&mut self, day: u64) -> Result<(), ArchiveError> {
        let path = self.day_path(day);
        // Its own connection closed: the file is read through the state's.
        self.open.close(day);
        let carried = self.carry_day(&path);
        // Detached whatever came of it, or the next day cannot attach.
        let detached = self.state.execute("DETACH DATABASE old", []);
        let cut = carried?;
        self.days.remove(&day);
        self.spans.remove(&day);
        for (customer, latest) in cut {
            let held = self.held.entry(customer.clone()).or_default();
            held.cut_through = Some(held.cut_through.map_or(latest, |t| t.max(latest)));
            self.moved.push(customer);
        }
        detached.map_err(|e| fail(&self.dir.join("state.sqlite"), e))?;
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(fail(&file, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Carries the last batches of the day file at `path` (attached as
    /// `old`) and marks its customers cut, in one transaction: each
    /// customer with the start of its latest batch carried.
    fn carry_day(&mut self, path: &Path) -> Result<Vec<(Id, EventTime)>, ArchiveError> {
        let state_path = self.dir.join("state.sqlite");
        let tx = self.state.transaction().map_err(|e| fail(&state_path, e))?;
        tx.execute("ATTACH DATABASE ?1 AS old", params![path.to_string_lossy()])
            .map_err(|e| fail(path, e))?;
        tx.execute(
            "INSERT INTO carry (customer, device, first_at, body) \
             SELECT customer, device, first_at, body FROM old.batches b \
             WHERE first_at = (SELECT MAX(first_at) FROM old.batches \
                               WHERE customer = b.customer AND device = b.device) \
             ON CONFLICT (customer, device) DO UPDATE SET \
               first_at = excluded.first_at, body = excluded.body \
             WHERE excluded.first_at > carry.first_at",
            [],
        )
        .map_err(|e| fail(path, e))?;
        carry_chunks(&tx, path)?;
        // Their journeys can no longer be folded again from before.
        let cut: Vec<String> = {
            let mut select = (tx
                .prepare("SELECT customer FROM old.batches UNION SELECT customer FROM old.chunks"))
            .map_err(|e| fail(path, e))?;
            let rows = (select.query_map([], |r| r.get(0))).map_err(|e| fail(path, e))?;
            rows.collect::<Result<_, _>>().map_err(|e| fail(path, e))?
        };
        let mut carried = Vec::with_capacity(cut.len());
        for customer in cut {
            tx.execute(
                "INSERT INTO customers (customer, cut) VALUES (?1, 1) \
                 ON CONFLICT (customer) DO UPDATE SET cut = 1",
                params![customer],
            )
            .map_err(|e| fail(&state_path, e))?;
            let latest: i64 = (tx.query_row(
                "SELECT MAX(first_at) FROM carry WHERE customer = ?1",
                params![customer],
                |r| r.get(0),
            ))
            .map_err(|e| fail(&state_path, e))?;
            carried.push((customer.into(), latest as EventTime));
        }
        tx.commit().map_err(|e| fail(&state_path, e))?;
        Ok(carried)
    }

    /// Notes late data of `customer`'s `devices`, each from its earliest
    /// late reading, whose effects the live dataflow has taken in by `due`:
    /// merged into its pending row.
    pub fn note_late(
        &mut self,
        customer: &str,
        devices: &[(&str, RangeInclusive<EventTime>)],
        due: EventTime,
    ) -> Result<(), ArchiveError> {
        let Some(from) = devices.iter().map(|(_, late)| *late.start()).min() else {
            return Ok(());
        };
        let path = self.dir.join("state.sqlite");
        let tx = self.state.transaction().map_err(|e| fail(&path, e))?;
        // Generations count up across every row and never start again (a
        // file of an earlier build goes on from its highest): a pass of a
        // row forgotten since can never take a later row's arrivals for
        // its own (see [`Self::passed`]).
        (tx.prepare_cached(
            "INSERT INTO meta (key, value) \
             VALUES ('generation', (SELECT COALESCE(MAX(generation), 0) + 1 FROM pending)) \
             ON CONFLICT (key) DO UPDATE SET value = value + 1",
        ))
        .and_then(|mut s| s.execute([]))
        .map_err(|e| fail(&path, e))?;
        (tx.prepare_cached(
            "INSERT INTO pending (customer, from_ms, due_ms, first_pass_done, generation) \
             VALUES (?1, ?2, ?3, 0, (SELECT value FROM meta WHERE key = 'generation')) \
             ON CONFLICT (customer) DO UPDATE SET \
               from_ms = MIN(from_ms, excluded.from_ms), \
               due_ms = MAX(due_ms, excluded.due_ms), \
               first_pass_done = 0, generation = excluded.generation",
        ))
        .and_then(|mut s| s.execute(params![customer, from as i64, due as i64]))
        .map_err(|e| fail(&path, e))?;
        // What this arrival (this generation) owes, for a pass that read
        // the row before it: see [`Self::passed`].
        (tx.prepare_cached(
            "INSERT INTO pending_arrivals (customer, generation, from_ms) \
             SELECT customer, generation, ?2 FROM pending WHERE customer = ?1",
        ))
        .and_then(|mut s| s.execute(params![customer, from as i64]))
        .map_err(|e| fail(&path, e))?;
        {
            let mut device = tx
                .prepare_cached(
                    "INSERT INTO pending_devices (customer, device, from_ms, to_ms) \
                     VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (customer, device) DO UPDATE SET \
                       from_ms = MIN(from_ms, excluded.from_ms), \
                       to_ms = MAX(to_ms, excluded.to_ms)",
                )
                .map_err(|e| fail(&path, e))?;
            for (id, late) in devices {
                let (from, to) = (sql_time(*late.start()), sql_time(*late.end()));
                device
                    .execute(params![customer, id, from, to])
                    .map_err(|e| fail(&path, e))?;
            }
        }
        tx.commit().map_err(|e| fail(&path, e))
    }

    /// The restatements still to do.
    pub fn pending(&self) -> Result<Vec<Pending>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let mut select = self
            .state
            .prepare_cached(
                "SELECT customer, from_ms, due_ms, first_pass_done, generation FROM pending \
                 ORDER BY customer",
            )
            .map_err(|e| fail(&path, e))?;
        let rows = select
            .query_map([], |r| {
                Ok(Pending {
                    customer: r.get::<_, String>(0)?.into(),
                    from: r.get::<_, i64>(1)? as u64,
                    due: r.get::<_, i64>(2)? as u64,
                    first_pass_done: r.get::<_, i64>(3)? >= 1,
                    final_done: r.get::<_, i64>(3)? >= 2,
                    generation: r.get::<_, i64>(4)? as u64,
                    devices: HashMap::new(),
                })
            })
            .map_err(|e| fail(&path, e))?;
        let mut pending: Vec<Pending> =
            rows.collect::<Result<_, _>>().map_err(|e| fail(&path, e))?;
        let mut devices = self
            .state
            .prepare_cached(
                "SELECT device, from_ms, to_ms FROM pending_devices WHERE customer = ?1",
            )
            .map_err(|e| fail(&path, e))?;
        for row in &mut pending {
            let found = devices
                .query_map(params![&*row.customer], |r| {
                    let from = r.get::<_, i64>(1)? as u64;
                    let to = (r.get::<_, Option<i64>>(2)?).map_or(EventTime::MAX, |t| t as u64);
                    Ok((r.get::<_, String>(0)?.into(), from..=to))
                })
                .map_err(|e| fail(&path, e))?;
            row.devices = found
                .collect::<Result<_, _>>()
                .map_err(|e| fail(&path, e))?;
        }
        Ok(pending)
    }

    /// A pass over `pending` was written to every store: the row is marked
    /// (first or final pass; a `part` of a longer one marks nothing),
    /// unless late data arrived since (another generation). The windows
    /// ending by `covered` hold every late batch of that generation, so the
    /// row owes only the windows after them and those of later arrivals:
    /// its `from` moves up to the earlier of the two. Without this a customer whose late data never pauses long
    /// enough for its row to be forgotten would have every pass restate
    /// from its first late reading ever, and its archive never pruned. (A
    /// row forgotten and started again since has only later generations:
    /// its arrivals are all owed after the pass, which marks nothing.)
    pub fn passed(
        &mut self,
        pending: &Pending,
        last: bool,
        covered: EventTime,
        part: bool,
    ) -> Result<(), ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let state = if part {
            // A part of a longer pass: the pass goes on from `covered`.
            None
        } else if last {
            Some("UPDATE pending SET first_pass_done = 2 WHERE customer = ?1 AND generation = ?2")
        } else {
            Some(
                "UPDATE pending SET first_pass_done = 1 WHERE customer = ?1 AND generation = ?2 \
                 AND first_pass_done < 1",
            )
        };
        let owed = self.owed_after(&pending.customer, pending.generation, covered)?;
        let (customer, generation) = (&*pending.customer, pending.generation as i64);
        let owed = owed.min(i64::MAX as u64) as i64;
        let tx = self.state.transaction().map_err(|e| fail(&path, e))?;
        if let Some(state) = state {
            tx.execute(state, params![customer, generation])
                .map_err(|e| fail(&path, e))?;
        }
        tx.execute(
            "UPDATE pending SET from_ms = MAX(from_ms, ?3) WHERE customer = ?1 AND generation >= ?2",
            params![customer, generation, owed],
        )
        .map_err(|e| fail(&path, e))?;
        tx.execute(
            "DELETE FROM pending_arrivals WHERE customer = ?1 AND generation <= ?2",
            params![customer, generation],
        )
        .map_err(|e| fail(&path, e))?;
        tx.commit().map_err(|e| fail(&path, e))
    }

    /// The earliest late reading of `customer` taken in after a pass read
    /// its row at `generation`: what that pass does not cover.
    pub fn arrived_after(
        &self,
        customer: &str,
        generation: u64,
    ) -> Result<Option<EventTime>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        (self.state.query_row(
            "SELECT MIN(from_ms) FROM pending_arrivals WHERE customer = ?1 AND generation > ?2",
            params![customer, generation as i64],
            |r| r.get::<_, Option<i64>>(0),
        ))
        .map(|at| at.map(|at| at as EventTime))
        .map_err(|e| fail(&path, e))
    }

    /// Where `customer`'s restatement starts once a pass that read its row
    /// at `generation` and restated the windows ending by `covered` is
    /// written: there, or at the earliest late reading taken in since it
    /// read the row, whichever is earlier.
    pub fn owed_after(
        &self,
        customer: &str,
        generation: u64,
        covered: EventTime,
    ) -> Result<EventTime, ArchiveError> {
        let arrived = self.arrived_after(customer, generation)?;
        Ok(arrived.map_or(covered, |at| covered.min(at)))
    }

    /// Drops the rows whose final pass ran and whose windows the checkpoint
    /// has passed (`written_before`): no restart recomputes them any more.
    /// Not those `unstored` picks: no stored checkpoint holds the journey
    /// their final pass folded yet.
    pub fn forget(
        &mut self,
        written_before: EventTime,
        unstored: impl Fn(&str) -> bool,
    ) -> Result<usize, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let before = written_before.min(i64::MAX as u64) as i64;
        let tx = self.state.transaction().map_err(|e| fail(&path, e))?;
        let done: Vec<String> = {
            let mut select = (tx.prepare_cached(
                "SELECT customer FROM pending WHERE first_pass_done = 2 AND due_ms < ?1",
            ))
            .map_err(|e| fail(&path, e))?;
            let rows =
                (select.query_map(params![before], |r| r.get(0))).map_err(|e| fail(&path, e))?;
            rows.collect::<Result<_, _>>().map_err(|e| fail(&path, e))?
        };
        let mut forgotten = 0;
        for customer in done.iter().filter(|c| !unstored(c)) {
            for table in ["pending_devices", "pending_arrivals", "pending"] {
                (tx.prepare_cached(&format!("DELETE FROM {table} WHERE customer = ?1")))
                    .and_then(|mut s| s.execute(params![customer]))
                    .map_err(|e| fail(&path, e))?;
            }
            forgotten += 1;
        }
        tx.commit().map_err(|e| fail(&path, e))?;
        Ok(forgotten)
    }

    /// After a restart the WAL's replay emits the windows that end at or
    /// after the checkpoint (`replayed_from`) again, without the late data
    /// (it is in no WAL): every row's passes run again, from there at the
    /// latest, and from its earliest late reading at the earliest (the
    /// windows before it hold none of the row's data). Without a stored
    /// checkpoint (0: a kill within the first second) the replay emits
    /// everything again: a pass starts over, not at 1970.
    pub fn restarted(&mut self, replayed_from: EventTime) -> Result<(), ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let from = replayed_from.saturating_sub(1).min(i64::MAX as u64) as i64;
        self.state
            .execute(
                "UPDATE pending SET first_pass_done = 0, from_ms = MIN(from_ms, MAX(?1, \
                   COALESCE((SELECT MIN(d.from_ms) FROM pending_devices d \
                             WHERE d.customer = pending.customer), ?1)))",
                params![from],
            )
            .map_err(|e| fail(&path, e))?;
        Ok(())
    }

    /// The next revision of `customer`'s restated records (1 for the first
    /// restatement), recorded before it is used so a restart never reuses
    /// one.
    pub fn next_revision(&mut self, customer: &str) -> Result<u32, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let current: Option<i64> = self
            .state
            .query_row(
                "SELECT revision FROM revisions WHERE customer = ?1",
                params![customer],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| fail(&path, e))?;
        let next = current.unwrap_or(0) + 1;
        self.state
            .execute(
                "INSERT INTO revisions (customer, revision) VALUES (?1, ?2) \
                 ON CONFLICT (customer) DO UPDATE SET revision = excluded.revision",
                params![customer, next],
            )
            .map_err(|e| fail(&path, e))?;
        Ok(next as u32)
    }

    /// Windows starting at or after this hold every batch the archive
    /// should: the engine had emitted everything before it when the archive
    /// began (what it took in earlier was replayed from the WAL into it).
    /// `None` until [`Self::begin_at`].
    pub fn complete_from(&self) -> Result<Option<EventTime>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        self.state
            .query_row(
                "SELECT value FROM meta WHERE key = 'complete_from'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(|v| v as u64))
            .map_err(|e| fail(&path, e))
    }

    /// Sets [`Self::complete_from`] if not set yet; returns it. Begun at a
    /// time after 0, on a service that ran before without keeping it up,
    /// the archive holds no journey days before `at`: [`Self::folds_from`].
    pub fn begin_at(&mut self, at: EventTime) -> Result<EventTime, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let begun = self
            .state
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('complete_from', ?1)",
                params![at as i64],
            )
            .map_err(|e| fail(&path, e))?;
        if begun == 1 && at > 0 {
            self.state
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('folds_from', ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                    params![at as i64],
                )
                .map_err(|e| fail(&path, e))?;
        }
        Ok(self.complete_from()?.unwrap_or(at))
    }

    /// Journeys can be folded again only from after this: the archive began
    /// (again) on a service that had run without keeping it up, and holds
    /// neither the journeys' days nor their inputs before it. `None`: it
    /// was kept from the service's first start.
    pub fn folds_from(&self) -> Result<Option<EventTime>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        self.state
            .query_row("SELECT value FROM meta WHERE key = 'folds_from'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|v| v.map(|v| v as u64))
            .map_err(|e| fail(&path, e))
    }

    /// The archive misses batches up to `at`: it is complete only after
    /// them.
    pub fn begin_after(&mut self, at: EventTime) -> Result<(), ArchiveError> {
        let path = self.dir.join("state.sqlite");
        self.state
            .execute(
                "INSERT INTO meta (key, value) VALUES ('complete_from', ?1) \
                 ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                params![at.saturating_add(1) as i64],
            )
            .map_err(|e| fail(&path, e))?;
        Ok(())
    }

    /// Runs `sql` once per row in one transaction of `state.sqlite`.
    fn write_state<P: rusqlite::Params>(
        &mut self,
        sql: &str,
        rows: impl IntoIterator<Item = P>,
    ) -> Result<(), ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let tx = self.state.transaction().map_err(|e| fail(&path, e))?;
        {
            let mut statement = tx.prepare_cached(sql).map_err(|e| fail(&path, e))?;
            for row in rows {
                statement.execute(row).map_err(|e| fail(&path, e))?;
            }
        }
        tx.commit().map_err(|e| fail(&path, e))
    }

    /// Keeps what the portfolio of past dates is folded again from among
    /// the live dataflow's `records`, and returns the dates' figures to
    /// restate (see `corrections/portfolio.rs`). What cannot be kept now is
    /// held and kept first at the next call.
    pub fn keep_portfolio<'a>(
        &mut self,
        engine: &fleetpulse_engine::EngineConfig,
        records: impl Iterator<Item = &'a Output> + Clone,
    ) -> Vec<fleetpulse_engine::PortfolioRecord> {
        let path = self.dir.join("state.sqlite");
        self.unkept.keep(&mut self.state, &path, engine, records)
    }

    /// [`Self::keep_portfolio`] for a pass's restated `records`: a failure
    /// fails the pass, which is computed again.
    /// `passed`: the engine emitted every portfolio figure ending by it.
    pub fn keep_restated_portfolio<'a>(
        &mut self,
        engine: &fleetpulse_engine::EngineConfig,
        records: impl Iterator<Item = &'a Output>,
        passed: EventTime,
    ) -> Result<Vec<fleetpulse_engine::PortfolioRecord>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        super::portfolio::keep(&mut self.state, &path, engine, records, Some(passed))
    }

    /// The first figures of the dates only restated customers have, whose
    /// end the engine passed after `from`, up to `through`.
    pub fn portfolio_passed(
        &mut self,
        from: EventTime,
        through: EventTime,
    ) -> Result<Vec<fleetpulse_engine::PortfolioRecord>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        super::portfolio::passed(&mut self.state, &path, from, through)
    }

    /// Every store wrote these portfolio dates' figures.
    pub fn portfolio_written(&mut self, dates: &[(EventTime, u32)]) -> Result<(), ArchiveError> {
        let path = self.dir.join("state.sqlite");
        super::portfolio::written(&self.state, &path, dates)
    }

    /// The portfolio dates' figures owed to the stores at a start, folded
    /// again.
    pub fn owed_portfolio(
        &mut self,
    ) -> Result<Vec<fleetpulse_engine::PortfolioRecord>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        super::portfolio::owed(&mut self.state, &path)
    }

    /// Keeps journey states, one per customer and closed day (a later one
    /// for the same day, restated, replaces it).
    pub fn keep_journeys(&mut self, days: &[(Id, JourneyState)]) -> Result<(), ArchiveError> {
        if days.is_empty() {
            // Most calls: no day closed since the last, no pass confirmed
            // with states.
            return Ok(());
        }
        let rows = days.iter().filter_map(|(customer, state)| {
            let end = state.last_day_end?;
            let body = bincode::serialize(state).expect("a journey state serialises");
            Some((customer.to_string(), end as i64, body))
        });
        self.write_state(
            "INSERT OR REPLACE INTO journey_days (customer, day_end, state) VALUES (?1, ?2, ?3)",
            rows,
        )
    }

    /// `customer`'s newest journey state whose last day ended by `by`.
    pub fn journey_at(
        &self,
        customer: &str,
        by: EventTime,
    ) -> Result<Option<JourneyState>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let body: Option<Vec<u8>> = self
            .state
            .query_row(
                "SELECT state FROM journey_days WHERE customer = ?1 AND day_end <= ?2 \
                 ORDER BY day_end DESC LIMIT 1",
                params![customer, by.min(i64::MAX as u64) as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| fail(&path, e))?;
        body.map(|b| journey_state(b).map_err(|e| fail(&path, format!("journey: {e}"))))
            .transpose()
    }

    /// When `customer`'s journey states kept through `by` resolved the
    /// episode of `rule` opened at `opened_at`: the end of the first day
    /// whose state no longer holds it open. `None` when the state of the
    /// day that opened it does not hold it (the states never raised it),
    /// or every state through `by` does. Read only for an episode a
    /// restatement cannot otherwise judge, so the day-by-day scan is rare.
    pub fn resolved_by_states(
        &self,
        customer: &str,
        rule: Rule,
        opened_at: EventTime,
        by: EventTime,
    ) -> Result<Option<EventTime>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let as_sql = |t: EventTime| t.min(i64::MAX as u64) as i64;
        let mut select = (self.state)
            .prepare_cached(
                "SELECT day_end, state FROM journey_days \
                 WHERE customer = ?1 AND day_end >= ?2 AND day_end <= ?3 ORDER BY day_end",
            )
            .map_err(|e| fail(&path, e))?;
        let rows = select
            .query_map(params![customer, as_sql(opened_at), as_sql(by)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| fail(&path, e))?;
        let mut held = false;
        for row in rows {
            let (end, body) = row.map_err(|e| fail(&path, e))?;
            let state = journey_state(body).map_err(|e| fail(&path, format!("journey: {e}")))?;
            if state.open_since(rule) == Some(opened_at) {
                held = true;
                continue;
            }
            // Held since the day that opened it: resolved by this one.
            return Ok(held.then_some(end as EventTime));
        }
        Ok(None)
    }

    /// Keeps what the customers' journeys fold, for the contract's
    /// lifetime: every customer window, and each device's last reading of
    /// each day (`day`: the day window's name). A recompute folds a journey
    /// again from them.
    pub fn keep_inputs<'a>(
        &mut self,
        records: impl Iterator<Item = &'a Output> + Clone,
        day: &str,
    ) -> Result<(), ArchiveError> {
        let kept = |r: &Output| match r {
            Output::Customer(_) => true,
            Output::Device(d) => &*d.window == day,
            _ => false,
        };
        // Most record batches are devices' hours: no transaction for them.
        if !records.clone().any(kept) {
            return Ok(());
        }
        let path = self.dir.join("state.sqlite");
        let tx = self.state.transaction().map_err(|e| fail(&path, e))?;
        {
            let mut windows = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO journey_windows (customer, window_end, window, body) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| fail(&path, e))?;
            let mut devices = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO journey_devices (customer, day_end, device, last_seen) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| fail(&path, e))?;
            for record in records {
                match record {
                    Output::Customer(k) => {
                        // With what the stores leave out and the journey reads.
                        let whole = (k, k.first_seen, &k.operator_hours, k.advanced_features);
                        let body = bincode::serialize(&whole).expect("a window serialises");
                        let row = (&*k.customer, k.window_end as i64, &*k.window, body);
                        windows.execute(row).map_err(|e| fail(&path, e))?;
                    }
                    Output::Device(d) if &*d.window == day => {
                        let end = d.window_end as i64;
                        let row = (&*d.customer, end, &*d.device, d.last_seen as i64);
                        devices.execute(row).map_err(|e| fail(&path, e))?;
                    }
                    _ => {}
                }
            }
        }
        tx.commit().map_err(|e| fail(&path, e))
    }

    /// What `customer`'s journey folded after `after` (exclusive), as the
    /// records it folds: customer windows, and device rollups of the day
    /// window `day` that carry what the journey reads of them (their day's
    /// start too: a fold closes the empty days before it first, and takes
    /// the first window's start for where the folded days begin).
    pub fn inputs(
        &self,
        engine: &fleetpulse_engine::EngineConfig,
        day: &fleetpulse_engine::WindowSpec,
        customer: &str,
        after: EventTime,
    ) -> Result<Vec<Output>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let after = after.min(i64::MAX as u64) as i64;
        let mut out = Vec::new();
        let mut select = (self.state.prepare_cached(
            "SELECT body FROM journey_windows WHERE customer = ?1 AND window_end > ?2",
        ))
        .map_err(|e| fail(&path, e))?;
        let rows = (select.query_map(params![customer, after], |r| r.get::<_, Vec<u8>>(0)))
            .map_err(|e| fail(&path, e))?;
        for body in rows {
            let body = body.map_err(|e| fail(&path, e))?;
            let (mut kpi, first_seen, operator_hours, advanced_features): (CustomerKpi, _, _, _) =
                bincode::deserialize(&body).map_err(|e| fail(&path, format!("window: {e}")))?;
            kpi.first_seen = first_seen;
            kpi.operator_hours = operator_hours;
            kpi.advanced_features = advanced_features;
            out.push(Output::Customer(kpi));
        }
        let mut select = (self.state.prepare_cached(
            "SELECT day_end, device, last_seen FROM journey_devices \
             WHERE customer = ?1 AND day_end > ?2",
        ))
        .map_err(|e| fail(&path, e))?;
        let rows = select
            .query_map(params![customer, after], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| fail(&path, e))?;
        for row in rows {
            let (day_end, device, last_seen) = row.map_err(|e| fail(&path, e))?;
            let window_end = day_end as u64;
            out.push(Output::Device(DeviceKpi {
                customer: customer.into(),
                device: device.into(),
                window: day.name.clone(),
                window_start: engine
                    .window_bounds(day, customer, window_end.saturating_sub(1))
                    .0,
                window_end,
                last_seen: last_seen as u64,
                ..DeviceKpi::default()
            }));
        }
        Ok(out)
    }

    /// The end of `customer`'s first day whose inputs are kept.
    pub fn first_input(&self, customer: &str) -> Result<Option<EventTime>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        self.state
            .query_row(
                "SELECT MIN(window_end) FROM journey_windows WHERE customer = ?1",
                params![customer],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(|v| v as u64))
            .map_err(|e| fail(&path, e))
    }

    /// Asks for `customer`'s journey to be folded again from `from`
    /// (merged with a request not done yet: the earlier start).
    pub fn note_recompute(&mut self, customer: &str, from: EventTime) -> Result<(), ArchiveError> {
        note_recompute(&self.state, &self.dir.join("state.sqlite"), customer, from)
    }

    /// The digest of each customer's definition its kept journey was
    /// folded with ([`Self::define`]).
    pub fn definitions(&self) -> Result<std::collections::HashMap<String, Vec<u8>>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let mut select = (self.state)
            .prepare_cached("SELECT customer, digest FROM definitions")
            .map_err(|e| fail(&path, e))?;
        let rows = select
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| fail(&path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| fail(&path, e))
    }

    /// `customer`'s journey is folded with the definition of `digest` from
    /// now on: a start that finds another in the customers file folds it
    /// again.
    pub fn define(&mut self, customer: &str, digest: &[u8]) -> Result<(), ArchiveError> {
        let path = self.dir.join("state.sqlite");
        (self.state)
            .execute(
                "INSERT INTO definitions (customer, digest) VALUES (?1, ?2) \
                 ON CONFLICT (customer) DO UPDATE SET digest = excluded.digest",
                params![customer, digest],
            )
            .map_err(|e| fail(&path, e))?;
        Ok(())
    }

    /// The recomputes asked for.
    pub fn recomputes(&self) -> Result<Vec<Recompute>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let mut select = (self.state.prepare_cached(
            "SELECT customer, from_ms, generation FROM recomputes ORDER BY customer",
        ))
        .map_err(|e| fail(&path, e))?;
        let rows = select
            .query_map([], |r| {
                Ok(Recompute {
                    customer: r.get::<_, String>(0)?.into(),
                    from: r.get::<_, i64>(1)? as u64,
                    generation: r.get::<_, i64>(2)? as u64,
                })
            })
            .map_err(|e| fail(&path, e))?;
        rows.collect::<Result<_, _>>().map_err(|e| fail(&path, e))
    }

    /// A recompute was written to every store: its row goes, unless asked
    /// again since.
    pub fn recomputed(&mut self, done: &Recompute) -> Result<(), ArchiveError> {
        let path = self.dir.join("state.sqlite");
        self.state
            .execute(
                "DELETE FROM recomputes WHERE customer = ?1 AND generation = ?2",
                params![&*done.customer, done.generation as i64],
            )
            .map_err(|e| fail(&path, e))?;
        Ok(())
    }

    /// Keeps alert transitions (the newest of an episode replaces it), so a
    /// restatement can tell the episodes that no longer happened.
    pub fn keep_alerts(&mut self, alerts: &[AlertRecord]) -> Result<(), ArchiveError> {
        let rows = alerts.iter().map(|alert| {
            let body = bincode::serialize(alert).expect("an alert serialises");
            let rule = alert.rule.as_str();
            (
                alert.customer.to_string(),
                rule,
                alert.opened_at as i64,
                body,
            )
        });
        self.write_state(
            "INSERT OR REPLACE INTO alerts (customer, rule, opened_at, body) \
             VALUES (?1, ?2, ?3, ?4)",
            rows,
        )
    }

    /// `customer`'s alert episodes as last written that a restatement from
    /// `floor` may change: those opened after it, and those opened before
    /// it that it found open (not resolved by then, nor retracted); with
    /// `retracted`, every retracted one too (the first pass after a start
    /// sends them again: a pass before a kill noted the retraction here,
    /// and the stores may never have got it).
    pub fn alerts_from(
        &self,
        customer: &str,
        floor: EventTime,
        retracted: bool,
    ) -> Result<Vec<AlertRecord>, ArchiveError> {
        let path = self.dir.join("state.sqlite");
        let mut select = (self.state)
            .prepare_cached("SELECT body FROM alerts WHERE customer = ?1")
            .map_err(|e| fail(&path, e))?;
        read_alerts(&mut select, params![customer], &path, |alert| {
            let is_retracted = alert.status == AlertStatus::Retracted;
            let open_at_floor = !is_retracted && alert.resolved_at.is_none_or(|at| at > floor);
            alert.opened_at > floor || open_at_floor || (retracted && is_retracted)
        })
    }

    /// Day files kept.
    pub fn days(&self) -> usize {
        self.days.len()
    }
}

/// The provisional alerts the archive in `dir` holds open: sent to the
/// stores before a stop or a kill, and not confirmed or retracted since;
/// and, as they were sent, those it holds retracted by a close of a day
/// `closed` says the restored journeys have not closed: the receivers may
/// have heard of that retraction while the stores, behind them at a kill,
/// lack it, and the replay of that day need not raise the alert again.
/// Read before the engine starts, whose operators settle them when their
/// days close (an archive not made yet holds none).
pub fn unsettled_alerts(
    dir: &Path,
    closed: impl Fn(&AlertRecord) -> bool,
) -> Result<Vec<AlertRecord>, ArchiveError> {
    let path = dir.join("state.sqlite");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let state = open(&path, STATE_SCHEMA)?;
    let mut select = (state.prepare("SELECT body FROM alerts")).map_err(|e| fail(&path, e))?;
    let read = read_alerts(&mut select, [], &path, |alert| {
        alert.provisional && (alert.status == AlertStatus::Open || !closed(alert))
    })?;
    Ok((read.into_iter())
        .filter_map(|alert| match alert.status {
            AlertStatus::Open => Some(alert),
            _ => alert.before_close(),
        })
        .collect())
}

/// The alert episodes the archive in `dir` last sent open (provisional or
/// not) of the customers `of` picks, each with the end of its customer's
/// newest kept journey day: what the receivers and stores hold open of
/// customers taken out of the customers file (the journey states a start
/// restores may be days behind them).
pub fn open_alerts_of(
    dir: &Path,
    of: impl Fn(&str) -> bool,
) -> Result<Vec<(AlertRecord, Option<EventTime>)>, ArchiveError> {
    let path = dir.join("state.sqlite");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let state = open(&path, STATE_SCHEMA)?;
    // The customers first (the table's key): a start with no one taken out
    // of the file reads no alert.
    let mut customers =
        (state.prepare("SELECT DISTINCT customer FROM alerts")).map_err(|e| fail(&path, e))?;
    let customers: Vec<String> = (customers.query_map([], |r| r.get::<_, String>(0)))
        .and_then(|rows| rows.collect())
        .map_err(|e| fail(&path, e))?;
    let picked = customers.iter().filter(|c| of(c));
    let mut select = (state.prepare_cached("SELECT body FROM alerts WHERE customer = ?1"))
        .map_err(|e| fail(&path, e))?;
    let mut open = Vec::new();
    for customer in picked {
        let is_open = |alert: &AlertRecord| alert.status == AlertStatus::Open;
        open.extend(read_alerts(&mut select, params![customer], &path, is_open)?);
    }
    let mut last_day = (state
        .prepare_cached("SELECT max(day_end) FROM journey_days WHERE customer = ?1"))
    .map_err(|e| fail(&path, e))?;
    let mut out = Vec::with_capacity(open.len());
    for alert in open {
        let end: Option<i64> = (last_day.query_row(params![&*alert.customer], |r| r.get(0)))
            .map_err(|e| fail(&path, e))?;
        out.push((alert, end.map(|e| e as EventTime)));
    }
    Ok(out)
}

/// A service starts without keeping the archive in `dir` up (its
/// `engine.correction_horizon` is 0): from now on the archive misses live
/// batches and journey days. Its start is forgotten, so that the next
/// start with a horizon begins it again where that start's engine is
/// ([`Archive::begin_at`]): late data and recomputes do not reach into
/// what it missed. `true` when there was an archive to mark.
pub fn lapse(dir: &Path) -> Result<bool, ArchiveError> {
    let path = dir.join("state.sqlite");
    if !path.exists() {
        return Ok(false);
    }
    let state = open(&path, STATE_SCHEMA)?;
    let forgotten = (state.execute("DELETE FROM meta WHERE key = 'complete_from'", []))
        .map_err(|e| fail(&path, e))?;
    Ok(forgotten > 0)
}

/// The alerts `select` (of the state file at `path`) reads with `args`,
/// those `keep` picks.
fn read_alerts(
    select: &mut rusqlite::Statement<'_>,
    args: impl rusqlite::Params,
    path: &Path,
    keep: impl Fn(&AlertRecord) -> bool,
) -> Result<Vec<AlertRecord>, ArchiveError> {
    let rows = (select.query_map(args, |r| r.get::<_, Vec<u8>>(0))).map_err(|e| fail(path, e))?;
    let mut out = Vec::new();
    for body in rows {
        let body = body.map_err(|e| fail(path, e))?;
        let alert: AlertRecord =
            bincode::deserialize(&body).map_err(|e| fail(path, format!("alert: {e}")))?;
        if keep(&alert) {
            out.push(alert);
        }
    }
    Ok(out)
}

/// Asks the service whose archive is in `dir` to fold `customer`'s journey
/// again from `from` (`fleetpulse recompute`; a running service picks it up
/// within a second, a stopped one at its start).
pub fn request_recompute(dir: &Path, customer: &str, from: EventTime) -> Result<(), ArchiveError> {
    let path = dir.join("state.sqlite");
    if !path.exists() {
        return Err(fail(
            &path,
            "no archive here: the service has not run with engine.correction_horizon and this [wal] dir",
        ));
    }
    let state = open(&path, STATE_SCHEMA)?;
    note_recompute(&state, &path, customer, from)
}

fn note_recompute(
    state: &Connection,
    path: &Path,
    customer: &str,
    from: EventTime,
) -> Result<(), ArchiveError> {
    state
        .execute(
            "INSERT INTO recomputes (customer, from_ms, generation) VALUES (?1, ?2, 1) \
             ON CONFLICT (customer) DO UPDATE SET \
               from_ms = MIN(from_ms, excluded.from_ms), generation = generation + 1",
            params![customer, from.min(i64::MAX as u64) as i64],
        )
        .map_err(|e| fail(path, e))?;
    Ok(())
}

/// One day file's batches already read, with the day.
type DayRead<'a> = (u64, &'a [DeviceBatch]);

/// What a restatement pass reads ([`Reader::from_floor`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FromFloor {
    /// The customer's batches from the floor on, in (first reading,
    /// device, unit epoch, sequence) order.
    pub batches: Vec<DeviceBatch>,
    /// Each of their devices' last batch before the floor, if any.
    pub earlier: Vec<DeviceBatch>,
}

/// Reads what a restatement pass needs on a thread of its own, with
/// connections of its own, while the archive's thread goes on writing (the
/// files' write-ahead logs let readers and a writer work at once). It sees
/// the day files open when it was made, each as of its first read: a batch
/// committed after the pass began may or may not be among what it reads,
/// and either is right (a later pass owes what came after this one read
/// its row). A day file pruned meanwhile is an error: the pass runs again.
pub struct Reader {
    dir: PathBuf,
    days: Vec<u64>,
    spans: HashMap<u64, EventTime>,
    open: OpenDays,
}

impl Reader {
    fn day(&mut self, day: u64) -> Result<(&Connection, PathBuf), ArchiveError> {
        let path = day_file(&self.dir, day);
        let conn = self.open.get(day, || open_existing(&path))?;
        Ok((conn, path))
    }

    /// Every batch of `customer` whose first reading is at or after
    /// `from`, in (first reading, device, unit epoch, sequence) order.
    pub fn batches(
        &mut self,
        customer: &str,
        from: EventTime,
    ) -> Result<Vec<DeviceBatch>, ArchiveError> {
        let mut out = Vec::new();
        for day in self.days_from(from) {
            let span = self.spans.get(&day).copied().unwrap_or(0);
            let (conn, path) = self.day(day)?;
            out.extend(day_batches(
                conn,
                &path,
                customer,
                from..EventTime::MAX,
                span,
            )?);
        }
        Ok(out)
    }

    /// The day files holding batches that start at or after `from`.
    fn days_from(&self, from: EventTime) -> Vec<u64> {
        (self.days.iter().copied())
            .filter(|d| *d >= from / DAY_MS)
            .collect()
    }

    /// What a pass from `floor` reads, a day file at a time: `each` gets,
    /// for each day from the floor's on, the last batch before `floor` of
    /// each device met for the first time that day (the baseline of its
    /// first increment, [`Self::earlier`]), then the day's batches at or
    /// after `floor` ([`Self::batches`]), and the time before which every
    /// reading has now been given (a day file holds the batches whose first
    /// reading is in its UTC day); it reads on while `each` says so. A pass
    /// holds a day of its customer, not every day since its floor; the day
    /// file holding the floor is read once for both (its chunks straddle
    /// the floor).
    pub fn each_day_from(
        &mut self,
        customer: &str,
        floor: EventTime,
        mut each: impl FnMut(Vec<DeviceBatch>, Vec<DeviceBatch>, EventTime) -> ControlFlow<()>,
    ) -> Result<(), ArchiveError> {
        let (mut met, mut below): (_, Option<(u64, Vec<DeviceBatch>)>) = (HashSet::new(), None);
        for day in self.days_from(floor) {
            let span = self.spans.get(&day).copied().unwrap_or(0);
            let (conn, path) = self.day(day)?;
            let batches = if day == floor / DAY_MS {
                let whole = day_batches(conn, &path, customer, 0..EventTime::MAX, EventTime::MAX)?;
                let (after, before) = whole.into_iter().partition(|b| b.first_at() >= floor);
                below = Some((day, before));
                after
            } else {
                day_batches(conn, &path, customer, floor..EventTime::MAX, span)?
            };
            let new: HashSet<Id> = (batches.iter())
                .filter(|b| !met.contains(&b.device))
                .map(|b| b.device.clone())
                .collect();
            let baselines = if new.is_empty() {
                Vec::new()
            } else {
                let read = below
                    .as_ref()
                    .map(|(day, batches)| (*day, batches.as_slice()));
                self.earlier_than(customer, &new, floor, read)?
            };
            met.extend(new);
            if each(baselines, batches, (day + 1) * DAY_MS).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The last batch before `before` of each of `devices` of `customer`
    /// (the baseline of its first increment after it); a device with none
    /// in the archive's days falls back to its carried batch, if any.
    pub fn earlier(
        &mut self,
        customer: &str,
        devices: &HashSet<Id>,
        before: EventTime,
    ) -> Result<Vec<DeviceBatch>, ArchiveError> {
        self.earlier_than(customer, devices, before, None)
    }

    /// What a pass from `floor` reads, all at once: [`Self::each_day_from`]
    /// gathered.
    pub fn from_floor(
        &mut self,
        customer: &str,
        floor: EventTime,
    ) -> Result<FromFloor, ArchiveError> {
        let (mut batches, mut earlier) = (Vec::new(), Vec::new());
        self.each_day_from(customer, floor, |baselines, day, _| {
            earlier.extend(baselines);
            batches.extend(day);
            ControlFlow::Continue(())
        })?;
        earlier.sort_by(|a: &DeviceBatch, b| a.device.cmp(&b.device));
        Ok(FromFloor { batches, earlier })
    }

    /// [`Self::earlier`], with the batches before `before` of one day file
    /// already read (`read`: the day and those batches).
    fn earlier_than(
        &mut self,
        customer: &str,
        devices: &HashSet<Id>,
        before: EventTime,
        mut read: Option<DayRead<'_>>,
    ) -> Result<Vec<DeviceBatch>, ArchiveError> {
        let mut found: BTreeMap<Id, DeviceBatch> = BTreeMap::new();
        let days: Vec<u64> = (self.days.iter().rev().copied())
            .filter(|d| *d <= before / DAY_MS)
            .collect();
        for day in days {
            if found.len() == devices.len() {
                break;
            }
            let batches = match read.take_if(|(at, _)| *at == day) {
                // Only the devices asked for, not a copy of the whole day.
                Some((_, batches)) => (batches.iter())
                    .filter(|b| devices.contains(&b.device))
                    .cloned()
                    .collect(),
                None => {
                    let (conn, path) = self.day(day)?;
                    day_batches(conn, &path, customer, 0..before, EventTime::MAX)?
                }
            };
            let mine = (batches.into_iter()).filter(|b| devices.contains(&b.device));
            for (device, b) in latest_of_each(mine) {
                found.entry(device).or_insert(b);
            }
        }
        if found.len() < devices.len() {
            let path = self.dir.join("state.sqlite");
            let state = open_existing(&path)?;
            let sql = "SELECT device, body FROM carry WHERE customer = ?1";
            first_of_each(&state, &path, sql, params![customer], devices, &mut found)?;
        }
        Ok(found.into_values().collect())
    }
}

/// A connection to an archive file that exists (never creates one).
fn open_existing(path: &Path) -> Result<Connection, ArchiveError> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| fail(path, e))?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")
        .map_err(|e| fail(path, e))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_engine::Sample;

    fn batch(customer: &str, device: &str, sequence: u64, at: u64) -> DeviceBatch {
        DeviceBatch {
            customer: customer.into(),
            site: "s".into(),
            device: device.into(),
            unit_epoch: 0,
            sequence,
            samples: vec![Sample {
                at,
                operating_hours: sequence as f64,
                ..Sample::default()
            }],
        }
    }

    const T0: u64 = 1_767_571_200_000;

    /// Customer `c1`'s journey with nothing seen yet, its contract from T0.
    fn new_journey() -> fleetpulse_engine::kpi::journey::Journey {
        use fleetpulse_engine::{Contract, CustomerSpec, Segment};
        let contract = Contract {
            arr: 1000.0,
            start: T0,
            renewal: T0 + 400 * 86_400_000,
            devices_purchased: 2,
            operator_seats: 2,
        };
        let spec = CustomerSpec::new("c1", Segment::LowTouch, contract);
        fleetpulse_engine::kpi::journey::Journey::new(spec)
    }

    /// A journey state kept before the day shape was part of it (its bytes
    /// end where the shape's begin) still reads, its shape to learn; so
    /// does one kept before the day its tracking began was (it is not
    /// judged as never onboarded); one kept whole reads back whole.
    #[test]
    fn a_journey_state_kept_before_its_last_fields_were_still_reads() {
        use fleetpulse_engine::Totals;
        let mut journey = new_journey();
        let day = CustomerKpi {
            customer: "c1".into(),
            window: "1d".into(),
            window_start: T0,
            window_end: T0 + 86_400_000,
            totals: Totals {
                operating_hours: 8.0,
                samples: 10,
                ..Totals::default()
            },
            ..CustomerKpi::default()
        };
        journey.close_day(&day, &mut Vec::new());
        let unshaped = journey.snapshot();
        let new = bincode::serialize(&unshaped).unwrap();
        // The tracking's start is Some(T0): a tag byte and a u64; an empty
        // shape is its length, a u64 0.
        let (tracked, shape) = (9, 8);
        let untracked = &new[..new.len() - tracked];
        let read = journey_state(untracked.to_vec()).unwrap();
        assert_eq!(
            bincode::serialize(&read).unwrap(),
            [untracked, &[0]].concat()
        );
        let old = &new[..new.len() - tracked - shape];
        let read = journey_state(old.to_vec()).unwrap();
        assert_eq!(
            bincode::serialize(&read).unwrap(),
            [old, &[0; 8], &[0]].concat()
        );
        assert_eq!(read.last_day_end, unshaped.last_day_end);
        journey.learn_shape(&[4.0, 4.0], 8.0);
        let shaped = journey.snapshot();
        assert_ne!(shaped, unshaped);
        let new = bincode::serialize(&shaped).unwrap();
        assert_eq!(journey_state(new.clone()).unwrap(), shaped);
        // Damage is still damage.
        assert!(journey_state(new[..new.len() / 2].to_vec()).is_err());
    }

    /// The day the kept journey states resolved an episode: the first
    /// state after the ones holding it open since it opened; none when the
    /// states hold it through the bound or never held it.
    #[test]
    fn the_kept_states_tell_when_an_episode_was_resolved() {
        const D: u64 = 86_400_000;
        let empty = new_journey().snapshot();
        // The state after the day ending at `end`, fault_spike open since
        // `since`.
        let state = |end: u64, since: Option<u64>| -> (Id, JourneyState) {
            let mut state = serde_json::to_value(&empty).unwrap();
            if let Some(since) = since {
                state["episodes"] =
                    serde_json::json!({"fault_spike": {"count": 1, "open_since": since}});
            }
            state["last_day_end"] = end.into();
            ("c1".into(), serde_json::from_value(state).unwrap())
        };
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let (d1, d3, d4) = (T0 + D, T0 + 3 * D, T0 + 4 * D);
        archive
            .keep_journeys(&[
                state(d1, Some(d1)),
                state(T0 + 2 * D, Some(d1)),
                state(d3, None),
                state(d4, Some(d4)),
                state(T0 + 5 * D, Some(d4)),
            ])
            .unwrap();
        let resolved = |customer: &str, rule, opened_at, by| {
            archive
                .resolved_by_states(customer, rule, opened_at, by)
                .unwrap()
        };
        assert_eq!(resolved("c1", Rule::FaultSpike, d1, T0 + 5 * D), Some(d3));
        assert_eq!(resolved("c1", Rule::FaultSpike, d1, d3), Some(d3));
        // Held through the bound: not resolved by then.
        assert_eq!(resolved("c1", Rule::FaultSpike, d1, T0 + 2 * D), None);
        assert_eq!(resolved("c1", Rule::FaultSpike, d4, T0 + 9 * D), None);
        // Never held: not this episode, not this rule, not this customer.
        assert_eq!(resolved("c1", Rule::FaultSpike, T0 + 2 * D, d4), None);
        assert_eq!(resolved("c1", Rule::HealthRed, d1, d4), None);
        assert_eq!(resolved("c2", Rule::FaultSpike, d1, d4), None);
    }

    /// Each file notes the archive's format; one an earlier build wrote
    /// (no note) is taken as this format, one of a newer build's is
    /// refused, naming the format and what to do.
    #[test]
    fn a_file_of_a_newer_format_is_refused_and_one_without_a_note_is_this_format() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.sqlite");
        let format = |path: &Path| -> i64 {
            let db = Connection::open(path).unwrap();
            db.query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap()
        };
        drop(Archive::open(dir.path()).unwrap());
        assert_eq!(format(&state), FORMAT);
        Connection::open(&state)
            .unwrap()
            .pragma_update(None, "user_version", 0)
            .unwrap();
        drop(Archive::open(dir.path()).unwrap());
        assert_eq!(format(&state), FORMAT, "an earlier build's file");
        Connection::open(&state)
            .unwrap()
            .pragma_update(None, "user_version", FORMAT + 1)
            .unwrap();
        let refused = Archive::open(dir.path()).err().unwrap().to_string();
        assert!(refused.contains("state.sqlite"), "{refused}");
        assert!(
            refused.contains("format 2, written by a newer build"),
            "{refused}"
        );
        assert!(refused.contains("move"), "{refused}");
        assert_eq!(format(&state), FORMAT + 1, "left as it was");
    }

    /// An archive kept from the service's first start folds journeys from
    /// any day; one a run without the horizon left behind, begun again at
    /// the next start with one, only from where it began again.
    #[test]
    fn an_archive_left_behind_begins_again_and_folds_only_from_there() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!lapse(dir.path()).unwrap(), "no archive yet");
        let mut archive = Archive::open(dir.path()).unwrap();
        assert_eq!(archive.begin_at(0).unwrap(), 0);
        assert_eq!(archive.begin_at(5 * DAY_MS).unwrap(), 0, "begun already");
        assert_eq!(archive.folds_from().unwrap(), None);
        drop(archive);

        assert!(lapse(dir.path()).unwrap());
        assert!(!lapse(dir.path()).unwrap(), "lapsed already");
        let mut archive = Archive::open(dir.path()).unwrap();
        assert_eq!(archive.complete_from().unwrap(), None);
        assert_eq!(archive.begin_at(9 * DAY_MS).unwrap(), 9 * DAY_MS);
        assert_eq!(archive.begin_at(12 * DAY_MS).unwrap(), 9 * DAY_MS);
        assert_eq!(archive.folds_from().unwrap(), Some(9 * DAY_MS));
    }

    /// What a restart hands the operators to settle: the provisional
    /// alerts still open as last kept, not those a close confirmed (kept
    /// again as the day's own); those a close retracted, as they were sent,
    /// only while the restored journeys have not closed their day (the
    /// stores may lack the retraction).
    #[test]
    fn the_provisional_alerts_left_open_are_read_back_before_a_start() {
        use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
        let dir = tempfile::tempdir().unwrap();
        assert!(
            unsettled_alerts(dir.path(), |_| false).unwrap().is_empty(),
            "no archive yet"
        );
        let alert = |rule, opened_at, status, provisional| AlertRecord {
            customer: "acme".into(),
            rule,
            opened_at,
            status,
            provisional,
            ..AlertRecord::default()
        };
        let mut archive = Archive::open(dir.path()).unwrap();
        let open = alert(Rule::DevicesDark, T0 + DAY_MS, AlertStatus::Open, true);
        let spike = AlertRecord {
            evidence: "18 faults in the last 3 days".into(),
            ..alert(Rule::FaultSpike, T0, AlertStatus::Open, true)
        };
        archive
            .keep_alerts(&[
                open.clone(),
                spike.clone(),
                alert(Rule::ChampionLost, T0, AlertStatus::Open, true),
                alert(Rule::UsageDrop, T0, AlertStatus::Open, false),
            ])
            .unwrap();
        // Then the closes: one retracted, one confirmed; and a provisional
        // alert a removal of its customer retracted.
        archive
            .keep_alerts(&[
                spike.retracted_by_close(),
                alert(Rule::ChampionLost, T0, AlertStatus::Open, false),
                alert(
                    Rule::ChampionLost,
                    T0 + DAY_MS,
                    AlertStatus::Retracted,
                    true,
                ),
            ])
            .unwrap();
        drop(archive);
        let unsettled = |closed_before| {
            let mut read = unsettled_alerts(dir.path(), |a| a.opened_at < closed_before).unwrap();
            read.sort_by_key(|a| a.opened_at);
            read
        };
        assert_eq!(unsettled(T0 + 1), std::slice::from_ref(&open));
        assert_eq!(unsettled(T0), [spike, open]);
    }

    /// A year of day files, written a day at a time as a backfill writes
    /// them: at most [`MAX_OPEN_DAYS`] stay open (a descriptor each for the
    /// file, its log and shared memory: kept all open, a year did not fit
    /// systemd's default of 1,024), redeliveries of closed days are still
    /// told apart, what was written to closed days is synced and read back
    /// whole, before and after a reopening, and a pass reader opens no more.
    #[test]
    fn a_year_of_day_files_keeps_only_the_most_recent_open() {
        use super::super::open_days::MAX_OPEN_DAYS;
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let all: Vec<DeviceBatch> = (0..365)
            .map(|d| batch("a", "d1", d + 1, T0 + d * DAY_MS + 1))
            .collect();
        for chunk in all.chunks(7) {
            assert!(archive.append(chunk).unwrap().iter().all(|n| *n));
            archive.durable().unwrap();
        }
        assert_eq!(archive.days(), 365);
        assert!(archive.open.len() <= MAX_OPEN_DAYS);
        assert_eq!(archive.append(&all[..40]).unwrap(), vec![false; 40]);
        assert_eq!(archive.contains(&all[300..]).unwrap(), vec![true; 65]);
        let mut reader = archive.reader();
        assert_eq!(reader.batches("a", 0).unwrap(), all);
        assert!(reader.open.len() <= MAX_OPEN_DAYS);
        drop((archive, reader));
        let archive = Archive::open(dir.path()).unwrap();
        assert!(archive.open.len() <= MAX_OPEN_DAYS);
        assert_eq!(archive.batches("a", T0 + 100 * DAY_MS).unwrap(), all[100..]);
    }

    #[test]
    fn batches_by_customer_and_time_across_days_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let hour = 3_600_000;
        let all: Vec<DeviceBatch> = (0..72)
            .flat_map(|h| {
                [
                    batch("a", "d1", h + 1, T0 + h * hour),
                    batch("b", "d1", h + 1, T0 + h * hour + 1),
                ]
            })
            .collect();
        let new = archive.append(&all).unwrap();
        assert!(new.iter().all(|n| *n));
        // Redelivered: nothing new.
        assert_eq!(archive.append(&all[..5]).unwrap(), vec![false; 5]);
        assert_eq!(archive.days(), 3);
        let from = T0 + 30 * hour;
        let got = archive.batches("a", from).unwrap();
        let want: Vec<DeviceBatch> = (30..72)
            .map(|h| batch("a", "d1", h + 1, T0 + h * hour))
            .collect();
        assert_eq!(got, want);
        let devices: HashSet<Id> = ["d1".into(), "ghost".into()].into();
        let earlier = archive.earlier("a", &devices, from).unwrap();
        assert_eq!(earlier, vec![batch("a", "d1", 30, T0 + 29 * hour)]);

        // Reopened: the same; pruned: the device's last batch is carried.
        drop(archive);
        let mut archive = Archive::open(dir.path()).unwrap();
        assert_eq!(archive.batches("a", from).unwrap(), want);
        assert_eq!(archive.prune(T0 + 2 * DAY_MS).unwrap(), 2);
        assert_eq!(archive.days(), 1);
        let earlier = archive.earlier("a", &devices, T0 + 2 * DAY_MS).unwrap();
        assert_eq!(earlier, vec![batch("a", "d1", 48, T0 + 47 * hour)]);
        assert_eq!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("2026-01-05")
                })
                .count(),
            0
        );
    }

    /// A day file that cannot be carried (damaged under the running
    /// archive here; on a full disk the carry's write fails) stays, read as
    /// before, while the days around it are pruned; once it can be read,
    /// the next prune carries its last batches and removes it. (Before, the
    /// failed day was forgotten: its batches were read no more, never
    /// carried, and its file stayed.)
    #[test]
    fn a_day_that_cannot_be_pruned_stays_and_is_pruned_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let hour = 3_600_000;
        let all: Vec<DeviceBatch> = (0..72)
            .map(|h| batch("a", "d1", h + 1, T0 + h * hour))
            .collect();
        archive.append(&all).unwrap();
        // The file and its write-ahead log moved away, garbage in its place.
        let second = day_file(dir.path(), T0 / DAY_MS + 1);
        let kept = dir.path().join("kept");
        std::fs::create_dir(&kept).unwrap();
        let files = |from: &Path, to: &Path| {
            for suffix in ["", "-wal", "-shm"] {
                let name = format!("2026-01-06.sqlite{suffix}");
                std::fs::rename(from.join(&name), to.join(&name)).unwrap();
            }
        };
        files(dir.path(), &kept);
        std::fs::write(&second, vec![7u8; 8192]).unwrap();
        let e = archive.prune(T0 + 2 * DAY_MS).unwrap_err().to_string();
        assert!(e.contains(&second.display().to_string()), "{e}");
        // The first day pruned, the second still there (and failing).
        assert_eq!(archive.days(), 2);
        assert!(archive.batches("a", T0 + DAY_MS).is_err());

        std::fs::remove_file(&second).unwrap();
        files(&kept, dir.path());
        assert_eq!(archive.batches("a", T0 + DAY_MS).unwrap(), all[24..]);
        // The first day's last batch carried.
        let devices: HashSet<Id> = ["d1".into()].into();
        let earlier = archive.earlier("a", &devices, T0 + DAY_MS).unwrap();
        assert_eq!(earlier, vec![all[23].clone()]);
        assert_eq!(archive.prune(T0 + 2 * DAY_MS).unwrap(), 1);
        assert_eq!(archive.days(), 1);
        let earlier = archive.earlier("a", &devices, T0 + 2 * DAY_MS).unwrap();
        assert_eq!(earlier, vec![all[47].clone()]);
        assert!(!second.exists());
        assert_eq!(archive.batches("a", T0 + 2 * DAY_MS).unwrap(), all[48..]);
    }

    /// What the archive must give back of customer "a": one copy of every
    /// distinct batch, in time order.
    fn hourly(customer: &str, hours: std::ops::Range<u64>) -> Vec<DeviceBatch> {
        let hour = 3_600_000;
        (hours.flat_map(|h| {
            [
                batch(customer, "d1", h + 1, T0 + h * hour),
                batch(customer, "d2", h + 1, T0 + h * hour),
            ]
        }))
        .collect()
    }

    /// Customers a and b, `hours` of batches each, archived live in flushes
    /// of `flush` that mix the two and the days, then the flushes' batches
    /// `replayed` again (the WAL's replay); returns each one's batches.
    fn archive_mixed(
        archive: &mut Archive,
        hours: u64,
        flush: usize,
        replayed: std::ops::Range<usize>,
    ) -> (Vec<DeviceBatch>, Vec<DeviceBatch>) {
        let (a, b) = (hourly("a", 0..hours), hourly("b", 0..hours));
        let mixed: Vec<DeviceBatch> = a
            .iter()
            .zip(&b)
            .flat_map(|(x, y)| [x.clone(), y.clone()])
            .collect();
        for batches in mixed.chunks(flush) {
            archive
                .append_live(&[LiveBatches::encode(batches)])
                .unwrap();
        }
        archive
            .append_live(&[LiveBatches::encode(&mixed[replayed])])
            .unwrap();
        (a, b)
    }

    #[test]
    fn live_chunks_are_read_once_beside_rows_and_carried_when_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let hour = 3_600_000;
        // Live, in flushes that mix customers and days; then the WAL's
        // replay archives the first half again, and a late redelivery of
        // some of it gets rows of its own.
        let (a, b) = archive_mixed(&mut archive, 72, 37, 0..144);
        assert_eq!(archive.append(&a[10..20]).unwrap(), vec![true; 10]);
        assert_eq!(archive.days(), 3);
        let from = T0 + 30 * hour;
        let want: Vec<DeviceBatch> = a.iter().filter(|x| x.first_at() >= from).cloned().collect();
        assert_eq!(archive.batches("a", from).unwrap(), want);
        assert_eq!(archive.batches("a", 0).unwrap(), a);
        // A redelivery is known; the same sequence at another time is not.
        let mut moved = a[40].clone();
        moved.samples[0].at += 1;
        let unknown = batch("a", "d3", 41, T0 + 40 * hour);
        assert_eq!(
            archive
                .contains(&[a[40].clone(), a[3].clone(), moved, unknown])
                .unwrap(),
            [true, true, false, false]
        );
        let devices: HashSet<Id> = ["d1".into(), "d2".into(), "ghost".into()].into();
        assert_eq!(
            archive.earlier("a", &devices, from).unwrap(),
            [
                batch("a", "d1", 30, T0 + 29 * hour),
                batch("a", "d2", 30, T0 + 29 * hour)
            ]
        );

        drop(archive);
        let mut archive = Archive::open(dir.path()).unwrap();
        assert_eq!(archive.batches("b", 0).unwrap(), b);
        // Found in a chunk that starts hours before it (the widest chunk of
        // the day file is read again at the open).
        assert_eq!(archive.contains(&a[3..4]).unwrap(), [true]);
        assert_eq!(archive.batches("a", from).unwrap(), want);
        assert_eq!(archive.prune(T0 + 2 * DAY_MS).unwrap(), 2);
        assert_eq!(
            archive.earlier("b", &devices, T0 + 2 * DAY_MS).unwrap(),
            [
                batch("b", "d1", 48, T0 + 47 * hour),
                batch("b", "d2", 48, T0 + 47 * hour)
            ]
        );
        // Each customer's latest pruned batch: a restatement starts after it.
        let held: HashMap<Id, Held> = archive.take_held().into_iter().collect();
        for customer in ["a", "b"] {
            assert_eq!(
                held[customer].cut_through,
                Some(T0 + 47 * hour),
                "{customer}"
            );
        }
    }

    /// A pass's one read from its floor equals the two it replaces, at
    /// floors on, between and across the day files' boundaries, with live
    /// chunks straddling them, late rows, replays and a pruned day.
    #[test]
    fn a_read_from_the_floor_equals_the_batches_and_earlier_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let hour = 3_600_000;
        let (a, _) = archive_mixed(&mut archive, 96, 53, 20..90);
        archive.append(&a[30..40]).unwrap();
        archive
            .append(&[batch("a", "d3", 1, T0 + 50 * hour)])
            .unwrap();
        let check = |archive: &Archive, floors: &[u64]| {
            for &floor in floors {
                for customer in ["a", "b", "nobody"] {
                    let read = archive.from_floor(customer, floor).unwrap();
                    let batches = archive.batches(customer, floor).unwrap();
                    let devices: HashSet<Id> = batches.iter().map(|b| b.device.clone()).collect();
                    let earlier = archive.earlier(customer, &devices, floor).unwrap();
                    assert_eq!(read.batches, batches, "{customer} from {floor}");
                    assert_eq!(read.earlier, earlier, "{customer} before {floor}");
                }
            }
        };
        let floors: Vec<u64> = [0, 1, 23, 24, 25, 47, 48, 50, 51, 71, 72, 95, 96, 200]
            .iter()
            .map(|h| T0 + h * hour)
            .chain([0, T0 + 24 * hour - 1, T0 + 24 * hour + 1])
            .collect();
        check(&archive, &floors);
        assert!(
            !archive
                .from_floor("a", T0 + 30 * hour)
                .unwrap()
                .earlier
                .is_empty()
        );
        archive.prune(T0 + 2 * DAY_MS).unwrap();
        check(&archive, &floors[6..]);
    }

    /// Large batches go in several chunk rows of about a MiB each, read back
    /// whole, each chunk's body as bincode writes the list.
    #[test]
    fn large_batches_are_split_into_chunks_of_about_a_mebibyte() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let big: Vec<DeviceBatch> = (0..40u64)
            .map(|i| {
                let mut b = batch("a", &format!("d{i}"), 1, T0 + i * 60_000);
                let first = b.samples[0].clone();
                b.samples = (0..2_000)
                    .map(|k| Sample {
                        at: first.at + k,
                        ..first.clone()
                    })
                    .collect();
                b
            })
            .collect();
        let live = LiveBatches::encode(&big);
        let filed: Vec<(&Filed, &[u8])> = live.iter().collect();
        let chunks = split(&filed);
        assert!(
            chunks.len() > 1 && chunks.len() < 40,
            "{} chunks",
            chunks.len()
        );
        let mut batches = big.iter();
        for chunk in &chunks {
            let owned: Vec<DeviceBatch> = (batches.by_ref().take(chunk.batches.len()))
                .cloned()
                .collect();
            assert_eq!(chunk.body, bincode::serialize(&owned).unwrap());
            assert!(
                chunk.body.len()
                    < CHUNK_BYTES + 2 * bincode::serialized_size(&big[0]).unwrap() as usize
            );
        }
        archive.append_live(&[LiveBatches::encode(&big)]).unwrap();
        let rows: i64 = Connection::open(dir.path().join("2026-01-05.sqlite"))
            .unwrap()
            .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows as usize, chunks.len());
        let mut got = archive.batches("a", 0).unwrap();
        got.sort_by_key(|b| b.first_at());
        assert_eq!(got, big);
        assert_eq!(archive.contains(&big[39..]).unwrap(), [true]);
    }

    /// A state file whose late devices have no latest reading yet: they
    /// restate to the end of time, and new arrivals merge with them.
    #[test]
    fn a_state_file_of_an_earlier_build_gets_the_latest_late_readings() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("state.sqlite")).unwrap();
            conn.execute_batch(
                "CREATE TABLE pending (customer TEXT PRIMARY KEY, from_ms INTEGER NOT NULL, \
                   due_ms INTEGER NOT NULL, first_pass_done INTEGER NOT NULL, \
                   generation INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE TABLE pending_devices (customer TEXT NOT NULL, device TEXT NOT NULL, \
                   from_ms INTEGER NOT NULL, PRIMARY KEY (customer, device)) WITHOUT ROWID;
                 INSERT INTO pending VALUES ('a', 500, 900, 0, 1);
                 INSERT INTO pending_devices VALUES ('a', 'd1', 500);",
            )
            .unwrap();
        }
        let mut archive = Archive::open(dir.path()).unwrap();
        let [row] = archive.pending().unwrap().try_into().unwrap();
        assert_eq!(row.devices, [("d1".into(), 500..=EventTime::MAX)].into());
        archive
            .note_late("a", &[("d1", 400..=450), ("d2", 600..=700)], 1_000)
            .unwrap();
        let [row] = archive.pending().unwrap().try_into().unwrap();
        let want: HashMap<Id, RangeInclusive<EventTime>> = [
            ("d1".into(), 400..=EventTime::MAX),
            ("d2".into(), 600..=700),
        ]
        .into();
        assert_eq!((row.from, row.devices), (400, want));
        drop(archive);
        // Opened again: the column is there already.
        assert_eq!(
            Archive::open(dir.path()).unwrap().pending().unwrap().len(),
            1
        );
    }

    #[test]
    fn a_day_file_of_an_earlier_build_is_read_and_takes_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let a = hourly("a", 0..12);
        {
            // The previous layout: every batch a row, no chunks table.
            let conn = Connection::open(dir.path().join("2026-01-05.sqlite")).unwrap();
            conn.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE batches (
                    customer TEXT NOT NULL, first_at INTEGER NOT NULL, device TEXT NOT NULL,
                    unit_epoch INTEGER NOT NULL, sequence INTEGER NOT NULL, body BLOB NOT NULL,
                    PRIMARY KEY (customer, first_at, device, unit_epoch, sequence)
                 ) WITHOUT ROWID;",
            )
            .unwrap();
            for x in &a[..12] {
                conn.execute(
                    "INSERT INTO batches VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        &*x.customer,
                        x.first_at() as i64,
                        &*x.device,
                        x.unit_epoch as i64,
                        x.sequence as i64,
                        bincode::serialize(x).unwrap()
                    ],
                )
                .unwrap();
            }
        }
        let mut archive = Archive::open(dir.path()).unwrap();
        assert_eq!(archive.batches("a", 0).unwrap(), a[..12]);
        archive
            .append_live(&[LiveBatches::encode(&a[6..])])
            .unwrap();
        assert_eq!(archive.batches("a", 0).unwrap(), a);
        assert_eq!(archive.contains(&a[..1]).unwrap(), [true]);
        assert_eq!(archive.prune(T0 + DAY_MS).unwrap(), 1);
        let devices: HashSet<Id> = ["d1".into(), "d2".into()].into();
        assert_eq!(
            archive.earlier("a", &devices, T0 + DAY_MS).unwrap(),
            [a[22].clone(), a[23].clone()]
        );
    }

    #[test]
    fn pending_rows_merge_and_survive_only_their_own_generation() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        archive
            .note_late("a", &[("d1", 500..=550), ("d2", 700..=720)], 900)
            .unwrap();
        archive
            .note_late("a", &[("d1", 600..=650), ("d2", 300..=310)], 800)
            .unwrap();
        let [first] = archive.pending().unwrap().try_into().unwrap();
        assert_eq!(
            (first.from, first.due, first.first_pass_done),
            (300, 900, false)
        );
        // Each device from its earliest late reading; the others untouched.
        // Each device from its earliest late reading to its latest.
        let devices: HashMap<Id, RangeInclusive<EventTime>> =
            [("d1".into(), 500..=650), ("d2".into(), 300..=720)].into();
        assert_eq!(first.devices, devices);
        assert!(first.restates("d1", 501) && !first.restates("d1", 500));
        assert!(first.restates("d2", 400) && !first.restates("d3", 1_000));
        archive.passed(&first, false, 0, false).unwrap();
        assert!(archive.pending().unwrap()[0].first_pass_done);
        // Late data after the pass read the row: the final pass keeps it.
        archive.note_late("a", &[("d3", 400..=400)], 950).unwrap();
        archive.passed(&first, true, 0, false).unwrap();
        let [again] = archive.pending().unwrap().try_into().unwrap();
        assert_eq!(
            (again.from, again.due, again.first_pass_done),
            (300, 950, false)
        );
        archive.passed(&again, true, 0, false).unwrap();
        // Kept until the checkpoint passes its windows.
        assert!(archive.pending().unwrap()[0].final_done);
        assert_eq!(archive.forget(950, |_| false).unwrap(), 0);
        archive.restarted(0).unwrap();
        let [reset] = archive.pending().unwrap().try_into().unwrap();
        assert!(!reset.first_pass_done && !reset.final_done);
        archive.passed(&reset, true, 0, false).unwrap();
        // Not while no stored checkpoint holds the journey its final pass
        // folded; its devices and arrivals stay with it.
        assert_eq!(archive.forget(951, |c| c == "a").unwrap(), 0);
        assert_eq!(archive.pending().unwrap()[0].devices, reset.devices);
        assert_eq!(archive.forget(951, |c| c == "b").unwrap(), 1);
        assert!(archive.pending().unwrap().is_empty());
        // A new episode starts with only its own devices.
        archive
            .note_late("a", &[("d4", 2_000..=2_000)], 3_000)
            .unwrap();
        let [next] = archive.pending().unwrap().try_into().unwrap();
        assert_eq!(next.devices.keys().collect::<Vec<_>>(), [&Id::from("d4")]);
        archive.passed(&next, true, 0, false).unwrap();
        archive.forget(3_001, |_| false).unwrap();
        assert_eq!(archive.next_revision("a").unwrap(), 1);
        drop(archive);
        let mut archive = Archive::open(dir.path()).unwrap();
        assert_eq!(archive.next_revision("a").unwrap(), 2);
    }
    #[test]
    fn a_part_of_a_pass_moves_its_row_on_and_marks_no_pass_done() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        archive.note_late("a", &[("d1", 100..=900)], 5_000).unwrap();
        let row = archive.pending().unwrap().remove(0);
        archive.passed(&row, false, 400, true).unwrap();
        let after = archive.pending().unwrap().remove(0);
        assert_eq!((after.from, after.first_pass_done), (400, false));
        // The final pass's parts: the row stays due for the rest.
        archive.passed(&after, false, 700, false).unwrap();
        let first = archive.pending().unwrap().remove(0);
        assert!(first.first_pass_done && !first.final_done);
        archive.passed(&first, true, 800, true).unwrap();
        let part = archive.pending().unwrap().remove(0);
        assert_eq!((part.from, part.final_done), (800, false));
        archive.passed(&part, true, 1_000, false).unwrap();
        assert!(archive.pending().unwrap()[0].final_done);
    }

    #[test]
    fn a_pass_moves_its_row_up_to_what_it_covered_but_never_past_later_arrivals() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let from = |archive: &Archive| archive.pending().unwrap()[0].from;
        archive.note_late("a", &[("d1", 100..=100)], 5_000).unwrap();
        let first = archive.pending().unwrap().remove(0);
        archive.passed(&first, false, 1_000, false).unwrap();
        // The windows through 1,000 hold the late batch: only later ones
        // are owed (the final pass's).
        assert_eq!(from(&archive), 1_000);
        assert!(archive.pending().unwrap()[0].first_pass_done);

        // Two passes under way at once; late data lands during each.
        archive.note_late("a", &[("d2", 300..=300)], 6_000).unwrap();
        assert_eq!(from(&archive), 300);
        let p1 = archive.pending().unwrap().remove(0);
        archive.note_late("a", &[("d3", 450..=450)], 6_000).unwrap();
        let p2 = archive.pending().unwrap().remove(0);
        archive
            .note_late("a", &[("d4", 2_500..=2_500)], 6_000)
            .unwrap();
        assert_eq!(
            archive.arrived_after("a", p1.generation).unwrap(),
            Some(450)
        );
        assert_eq!(
            archive.arrived_after("a", p2.generation).unwrap(),
            Some(2_500)
        );
        // p1 read neither d3's batch nor d4's: the row owes from d3's.
        archive.passed(&p1, false, 2_000, false).unwrap();
        assert_eq!(from(&archive), 450);
        // p2 read d3's, not d4's, and covered up to 3,000.
        archive.passed(&p2, false, 3_000, false).unwrap();
        assert_eq!(from(&archive), 2_500);
        assert!(!archive.pending().unwrap()[0].first_pass_done);

        // A pass that is dropped (never passed) moves nothing; the one
        // after it reads everything and covers it all.
        let p3 = archive.pending().unwrap().remove(0);
        archive.passed(&p3, false, 9_000, false).unwrap();
        assert_eq!(from(&archive), 9_000);
        // A pass that covered less than the row owes does not move it back.
        archive.passed(&p3, true, 4_000, false).unwrap();
        assert_eq!(from(&archive), 9_000);

        // A restart replays the windows from the checkpoint without the
        // late data: owed again from there, and both passes run again.
        archive.restarted(7_000).unwrap();
        let [row] = archive.pending().unwrap().try_into().unwrap();
        assert_eq!((row.from, row.first_pass_done), (6_999, false));
        archive.restarted(20_000).unwrap();
        assert_eq!(from(&archive), 6_999);
        // Never before the row's earliest late reading (d1's, at 100): the
        // windows before it hold none of its data. Not even when nothing
        // was checkpointed (0), which used to start a pass at 1970.
        archive.restarted(0).unwrap();
        assert_eq!(from(&archive), 100);
        // Reopened: the rows and the arrivals are on disk.
        drop(archive);
        let mut archive = Archive::open(dir.path()).unwrap();
        let row = archive.pending().unwrap().remove(0);
        archive
            .note_late("a", &[("d5", 8_000..=8_000)], 30_000)
            .unwrap();
        archive.passed(&row, true, 10_000, false).unwrap();
        assert_eq!(from(&archive), 8_000);
        // Forgotten with its arrivals; a new episode starts clean.
        let row = archive.pending().unwrap().remove(0);
        archive.passed(&row, true, 40_000, false).unwrap();
        assert_eq!(archive.forget(30_001, |_| false).unwrap(), 1);
        archive
            .note_late("a", &[("d6", 50_000..=50_000)], 60_000)
            .unwrap();
        let row = archive.pending().unwrap().remove(0);
        assert_eq!(row.from, 50_000);
        archive.passed(&row, false, 55_000, false).unwrap();
        assert_eq!(from(&archive), 55_000);
    }

    /// A pass still on its way when its row is forgotten, and a new row of
    /// the same customer with as many arrivals since as the old one had:
    /// the stale confirmation moves, marks and drops nothing of the new row
    /// (generations restarting at 1 made it take the new row for its own
    /// and skip its late data).
    #[test]
    fn a_stale_pass_of_a_forgotten_row_leaves_the_next_row_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        for at in 0..5 {
            archive
                .note_late("a", &[("d1", 100 + at..=100 + at)], 1_000)
                .unwrap();
        }
        let stale = archive.pending().unwrap().remove(0);
        archive.passed(&stale, true, 2_000, false).unwrap();
        assert_eq!(archive.forget(1_001, |_| false).unwrap(), 1);
        // The same customer late again, as often as before.
        for at in 0..5 {
            archive
                .note_late("a", &[("d2", 5_000 + at..=5_000 + at)], 9_000)
                .unwrap();
        }
        let [row] = archive.pending().unwrap().try_into().unwrap();
        assert!(row.generation > stale.generation);
        assert_eq!(
            archive.arrived_after("a", stale.generation).unwrap(),
            Some(5_000)
        );
        // The old pass's confirmation arrives late (again).
        archive.passed(&stale, true, 8_000, false).unwrap();
        let [after] = archive.pending().unwrap().try_into().unwrap();
        assert_eq!(after.from, 5_000, "the new row's late data is still owed");
        assert!(!after.first_pass_done && !after.final_done);
        assert_eq!(
            archive.arrived_after("a", stale.generation).unwrap(),
            Some(5_000)
        );
        // Its own pass moves it, and a reopened file counts on from there.
        archive.passed(&after, false, 6_000, false).unwrap();
        assert_eq!(archive.pending().unwrap()[0].from, 6_000);
        drop(archive);
        let mut archive = Archive::open(dir.path()).unwrap();
        archive
            .note_late("b", &[("d3", 7_000..=7_000)], 9_000)
            .unwrap();
        let b = archive
            .pending()
            .unwrap()
            .into_iter()
            .find(|p| &*p.customer == "b")
            .unwrap();
        assert!(b.generation > after.generation);
    }
    #[test]
    fn a_reader_sees_commits_made_after_it_and_a_day_pruned_under_it_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let a = hourly("a", 0..72);
        archive
            .append_live(&[LiveBatches::encode(&a[..30])])
            .unwrap();
        let mut reader = archive.reader();
        // Written after the reader was made, before it read: read (the
        // day files are open at its first read).
        archive
            .append_live(&[LiveBatches::encode(&a[30..48])])
            .unwrap();
        assert_eq!(reader.batches("a", 0).unwrap(), a[..48]);
        // A day file created after the reader was made is not among its
        // days (a later pass owes what came after this one began).
        archive
            .append_live(&[LiveBatches::encode(&a[48..])])
            .unwrap();
        assert_eq!(reader.batches("a", 0).unwrap(), a[..48]);
        // A day pruned under a reader that has not opened it yet: an error
        // naming the file, never an empty answer.
        let mut late = archive.reader();
        assert_eq!(archive.prune(T0 + DAY_MS).unwrap(), 1);
        let e = late.batches("a", 0).unwrap_err().to_string();
        assert!(e.contains(&day_name(T0 / DAY_MS)), "{e}");
        // Read again, the archive carries the pruned day's last batches.
        let devices: HashSet<Id> = ["d1".into(), "d2".into()].into();
        let earlier = archive
            .reader()
            .earlier("a", &devices, T0 + DAY_MS)
            .unwrap();
        assert_eq!(earlier, [a[46].clone(), a[47].clone()]);
    }
}
