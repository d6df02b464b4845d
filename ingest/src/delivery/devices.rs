//! The persisted device memories (last counters, sequence windows): a
//! snapshot of every device at a point in event time, beside the WAL. The
//! engine hands one in on request; it is written as pending at once and
//! becomes the snapshot a restart loads once the stores have caught up with
//! the point by the retention (every window still open at a restart then
//! starts after it, so the replay of the batches after the point recomputes
//! them whole). The WAL is cut only behind the loaded snapshot's point, so a
//! device silent for longer than the WAL keeps still counts its work.
//!
//! File: `FPDEVSNP`, format (u32 LE), earliest and latest point (u64 LE
//! each), body length (u64 LE), CRC-32 of the body (u32 LE), body (bincode
//! of the memories).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetpulse_engine::operators::device_state::{format_1, format_2};
use fleetpulse_engine::{DeviceKey, DeviceSnapshot, EventTime};

/// The file format this build writes; it reads this one, format 2 (whose
/// memories kept no batches a snapshot could not take out of its windows)
/// and format 1 (whose sequence windows kept no missing ranges).
pub const FORMAT: u32 = 3;

const MAGIC: &[u8; 8] = b"FPDEVSNP";
const HEADER: usize = 8 + 4 + 8 + 8 + 8 + 4;

/// The fixed part of a snapshot file.
struct Header {
    format: u32,
    at: EventTime,
    newest: EventTime,
    len: u64,
    crc: u32,
}

impl Header {
    /// The header of `bytes`; `None` when they are not a snapshot's.
    fn read(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        Some(Self {
            format: u32_at(8),
            at: u64_at(12),
            newest: u64_at(20),
            len: u64_at(28),
            crc: u32_at(36),
        })
    }
}

/// The snapshot a restart loads.
pub fn path(wal_dir: &Path) -> PathBuf {
    wal_dir.join("devices.snapshot")
}

/// A snapshot waiting for the stores to catch up with its latest point.
pub fn pending_path(wal_dir: &Path, newest: EventTime) -> PathBuf {
    wal_dir.join(format!("devices-{newest}.pending"))
}

/// The file's bytes.
pub fn encode(snapshot: &DeviceSnapshot) -> Vec<u8> {
    let body = bincode::serialize(&snapshot.devices).expect("device memories serialise");
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&snapshot.at.to_le_bytes());
    out.extend_from_slice(&snapshot.newest.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads a file's bytes; `shown` names it in errors, which say what to do.
pub fn decode(bytes: &[u8], shown: &str) -> Result<DeviceSnapshot, String> {
    let afresh = "move the file away to start the device memories afresh from what the WAL \
                  holds (a device silent since before it then counts its next reading as a \
                  baseline)";
    let Some(header) = Header::read(bytes) else {
        return Err(format!("{shown}: not a device snapshot; {afresh}"));
    };
    if !(1..=FORMAT).contains(&header.format) {
        return Err(format!(
            "{shown}: device snapshot of format {} (this build reads formats 1 to {FORMAT}); run the \
             build that wrote it, or {afresh}",
            header.format
        ));
    }
    let Header {
        at,
        newest,
        len,
        crc,
        ..
    } = header;
    let body = &bytes[HEADER..];
    if body.len() as u64 != len || crc32fast::hash(body) != crc {
        return Err(format!(
            "{shown}: device snapshot damaged (length or checksum); {afresh}"
        ));
    }
    let damaged = |e: bincode::Error| format!("{shown}: device snapshot: {e}");
    let devices = match header.format {
        1 => bincode::deserialize::<Vec<(DeviceKey, format_1::DeviceMemory)>>(body)
            .map_err(damaged)?
            .into_iter()
            .map(|(key, memory)| (key, memory.into()))
            .collect(),
        2 => bincode::deserialize::<Vec<(DeviceKey, format_2::DeviceMemory)>>(body)
            .map_err(damaged)?
            .into_iter()
            .map(|(key, memory)| (key, memory.into()))
            .collect(),
        _ => bincode::deserialize(body).map_err(damaged)?,
    };
    Ok(DeviceSnapshot {
        at,
        newest,
        devices,
    })
}

/// The snapshot a restart loads; none when there is no file.
pub fn load(wal_dir: &Path) -> Result<Option<DeviceSnapshot>, String> {
    let path = path(wal_dir);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The latest points of the pending snapshots in `wal_dir`, oldest first.
pub fn pending(wal_dir: &Path) -> std::io::Result<Vec<EventTime>> {
    let mut points: Vec<EventTime> = std::fs::read_dir(wal_dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let name = name.to_str()?;
            name.strip_prefix("devices-")?
                .strip_suffix(".pending")?
                .parse()
                .ok()
        })
        .collect();
    points.sort_unstable();
    Ok(points)
}

/// Writes `snapshot` as pending, atomically ([`crate::files::replace`]).
pub fn store_pending(wal_dir: &Path, snapshot: &DeviceSnapshot) -> std::io::Result<()> {
    crate::files::replace(&pending_path(wal_dir, snapshot.newest), &encode(snapshot))
}

/// Makes the pending snapshot up to `newest` the one a restart loads and
/// removes the pending ones before it; the directory is synced. Returns
/// its earliest point (the WAL may be cut behind it).
pub fn promote(wal_dir: &Path, newest: EventTime) -> std::io::Result<EventTime> {
    let pending_path = pending_path(wal_dir, newest);
    let mut header = [0; HEADER];
    std::io::Read::read_exact(&mut std::fs::File::open(&pending_path)?, &mut header)?;
    let at = Header::read(&header)
        .ok_or_else(|| {
            std::io::Error::other(format!("{}: not a device snapshot", pending_path.display()))
        })?
        .at;
    std::fs::rename(pending_path, path(wal_dir))?;
    for older in pending(wal_dir)?.into_iter().filter(|p| *p < newest) {
        std::fs::remove_file(self::pending_path(wal_dir, older))?;
    }
    std::fs::File::open(wal_dir)?.sync_all()?;
    Ok(at)
}

/// When to ask the engine for a snapshot, and which pending one the stores
/// have caught up with. Synchronous; the fan-out does the I/O it asks for.
#[derive(Debug)]
pub struct Schedule {
    every: Duration,
    retention_ms: u64,
    /// Latest points of the pending snapshots on disk, oldest first.
    pending: Vec<EventTime>,
    /// A request is out.
    asked: bool,
    last_asked: Option<Instant>,
    /// Latest point of the snapshot last promoted: an idle fleet's next
    /// one would be the same, every device's memory written again.
    promoted: Option<EventTime>,
}

/// Pending snapshots kept at most (each is every device's memory).
const MAX_PENDING: usize = 3;

impl Schedule {
    /// At most one request per `every`; a snapshot is promoted once the
    /// stores hold everything `retention_ms` after its latest point;
    /// `pending`: the pending snapshots on disk.
    pub fn new(every: Duration, retention_ms: u64, pending: Vec<EventTime>) -> Self {
        Self {
            every,
            retention_ms,
            pending,
            asked: false,
            last_asked: None,
            promoted: None,
        }
    }

    /// Whether to ask for a snapshot now, the engine's frontier being at
    /// `frontier`: one request at a time, at most one per `every`, and
    /// spaced by half the retention (from the pending ones, or the one
    /// promoted last), so the pending ones span it.
    pub fn ask(&mut self, now: Instant, frontier: EventTime) -> bool {
        let latest = self.pending.last().copied().or(self.promoted);
        let due = !self.asked
            && self.pending.len() < MAX_PENDING
            && self
                .last_asked
                .is_none_or(|t| now.duration_since(t) >= self.every)
            && latest.is_none_or(|p| frontier >= p + self.retention_ms / 2);
        if due {
            self.asked = true;
            self.last_asked = Some(now);
        }
        due
    }

    /// The snapshot up to `newest` is on disk as pending.
    pub fn stored(&mut self, newest: EventTime) {
        self.asked = false;
        self.pending.push(newest);
    }

    /// Storing the snapshot failed: ask again later.
    pub fn failed(&mut self) {
        self.asked = false;
    }

    /// The newest pending snapshot the stores have caught up with, once
    /// everything before `written_before` is in every store.
    pub fn promotable(&self, written_before: EventTime) -> Option<EventTime> {
        let caught_up = |p: &&EventTime| **p + self.retention_ms <= written_before;
        self.pending.iter().rev().find(caught_up).copied()
    }

    /// The snapshot up to `newest` was promoted; older pending ones are
    /// gone.
    pub fn promoted(&mut self, newest: EventTime) {
        self.pending.retain(|p| *p > newest);
        self.promoted = self.promoted.max(Some(newest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_engine::operators::device_state::MeterFaults;
    use fleetpulse_engine::{DeviceBatch, DeviceMemory, Sample};

    fn snapshot() -> DeviceSnapshot {
        DeviceSnapshot {
            at: 42,
            newest: 50,
            devices: vec![(("acme".into(), "exc-1".into()), DeviceMemory::default())],
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_damage_or_another_format_is_refused_with_what_to_do() {
        let bytes = encode(&snapshot());
        assert_eq!(decode(&bytes, "f").unwrap(), snapshot());
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let err = decode(&flipped, "f").unwrap_err();
        assert!(
            err.contains("checksum") && err.contains("move the file away"),
            "{err}"
        );
        let err = decode(&bytes[..bytes.len() - 1], "f").unwrap_err();
        assert!(err.contains("damaged"), "{err}");
        let mut newer = bytes.clone();
        newer[8] = 4;
        let err = decode(&newer, "f").unwrap_err();
        assert!(
            err.contains("format 4") && err.contains("this build reads formats 1 to 3"),
            "{err}"
        );
        assert!(
            decode(b"garbage", "f")
                .unwrap_err()
                .contains("not a device snapshot")
        );
    }

    #[test]
    fn pending_snapshots_are_promoted_once_the_stores_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        for newest in [10, 20] {
            let s = DeviceSnapshot {
                newest,
                at: newest - 5,
                ..snapshot()
            };
            store_pending(dir.path(), &s).unwrap();
        }
        assert_eq!(pending(dir.path()).unwrap(), [10, 20]);
        let mut schedule = Schedule::new(Duration::ZERO, 100, vec![10, 20]);
        assert_eq!(schedule.promotable(115), Some(10));
        assert_eq!(schedule.promotable(125), Some(20));
        assert_eq!(promote(dir.path(), 20).unwrap(), 15);
        schedule.promoted(20);
        assert_eq!(load(dir.path()).unwrap().unwrap().newest, 20);
        assert!(pending(dir.path()).unwrap().is_empty());
        assert_eq!(schedule.promotable(1000), None);
    }

    #[test]
    fn requests_are_one_at_a_time_and_spaced_in_wall_and_event_time() {
        const HOUR: u64 = 3_600_000;
        let start = Instant::now();
        let every = Duration::from_secs(60);
        let mut schedule = Schedule::new(every, 48 * HOUR, Vec::new());
        assert!(schedule.ask(start, 10 * HOUR));
        assert!(!schedule.ask(start + every, 10 * HOUR), "one out at a time");
        schedule.failed();
        assert!(!schedule.ask(start, 11 * HOUR), "not before `every`");
        let later = start + every;
        assert!(schedule.ask(later, 11 * HOUR));
        schedule.stored(11 * HOUR);
        let much_later = later + every;
        assert!(
            !schedule.ask(much_later, 20 * HOUR),
            "spaced by half the retention"
        );
        assert!(schedule.ask(much_later, 35 * HOUR));
    }

    /// A fleet gone quiet: the frontier stays where the last snapshot was
    /// taken. Once it is promoted, no other is asked for until the
    /// frontier moves half the retention on (each promotion wrote every
    /// device's memory again and logged it, once per `every`).
    #[test]
    fn an_idle_fleet_s_promoted_snapshot_is_not_taken_again() {
        const HOUR: u64 = 3_600_000;
        let start = Instant::now();
        let every = Duration::from_secs(60);
        let mut schedule = Schedule::new(every, 48 * HOUR, Vec::new());
        assert!(schedule.ask(start, 10 * HOUR));
        schedule.stored(10 * HOUR);
        assert_eq!(schedule.promotable(58 * HOUR), Some(10 * HOUR));
        schedule.promoted(10 * HOUR);
        for minutes in 1..10 {
            assert!(!schedule.ask(start + every * minutes, 10 * HOUR));
        }
        assert!(schedule.ask(start + every * 10, 34 * HOUR));
    }

    /// Memories of two devices, one with a replaced unit, as a fleet leaves
    /// them.
    fn remembered() -> DeviceSnapshot {
        let batch = |device: &str, epoch, sequence, at, hours| DeviceBatch {
            customer: "acme".into(),
            site: "pit".into(),
            device: device.into(),
            unit_epoch: epoch,
            sequence,
            samples: vec![Sample {
                at,
                operating_hours: hours,
                idle_hours: hours / 4.0,
                fuel_litres: hours * 9.5,
                ..Sample::default()
            }],
        };
        let mut devices = Vec::new();
        for (device, batches) in [
            (
                "exc-1",
                vec![
                    batch("exc-1", 0, 1, 1_000, 10.0),
                    batch("exc-1", 0, 3, 2_000, 11.5),
                ],
            ),
            (
                "exc-2",
                vec![
                    batch("exc-2", 1, 70, 1_500, 99.0),
                    batch("exc-2", 2, 1, 2_500, 0.5),
                ],
            ),
        ] {
            let mut memory = DeviceMemory::default();
            let (mut gaps, mut faults, mut usage) = (0, MeterFaults::default(), Vec::new());
            for b in batches {
                memory.apply(b, &mut gaps, &mut faults, &mut usage).unwrap();
            }
            devices.push((("acme".into(), device.into()), memory));
        }
        DeviceSnapshot {
            at: 2_000,
            newest: 3_000,
            devices,
        }
    }

    /// A snapshot written by format 1 (checked in) is read by this build:
    /// an upgrade keeps every device's memory. `FLEETPULSE_BLESS=1` writes
    /// the fixture when it is missing; a new format adds a fixture, it
    /// never replaces one.
    #[test]
    fn a_format_1_snapshot_from_an_earlier_build_is_read() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/devices-v1.snapshot");
        if std::env::var_os("FLEETPULSE_BLESS").is_some() && !fixture.exists() {
            std::fs::write(&fixture, encode(&remembered())).unwrap();
        }
        let bytes = std::fs::read(&fixture).unwrap();
        let mut closed = remembered();
        for (_, memory) in &mut closed.devices {
            *memory = std::mem::take(memory).closed_below();
        }
        assert_eq!(decode(&bytes, "fixture").unwrap(), closed);
    }

    /// The snapshot `fixture` holds, equal to `written` (which
    /// `FLEETPULSE_BLESS=1` writes there when it is missing).
    fn checked_in(fixture: &Path, written: &DeviceSnapshot) -> DeviceSnapshot {
        if std::env::var_os("FLEETPULSE_BLESS").is_some() && !fixture.exists() {
            std::fs::write(fixture, encode(written)).unwrap();
        }
        let read = decode(&std::fs::read(fixture).unwrap(), "fixture").unwrap();
        assert_eq!(&read, written);
        read
    }

    /// Batch `sequence` of `device` of acme, one reading at `at`.
    fn one_reading(device: &str, sequence: u64, at: EventTime) -> DeviceBatch {
        DeviceBatch {
            customer: "acme".into(),
            site: "quarry".into(),
            device: device.into(),
            unit_epoch: 0,
            sequence,
            samples: vec![Sample {
                at,
                ..Sample::default()
            }],
        }
    }

    /// Format 2 (checked in) keeps a device's missing sequences far behind
    /// its newest: after a restart its buffered batches still count and
    /// their replays are still refused.
    #[test]
    fn a_format_2_snapshot_keeps_missing_sequences_far_behind_the_newest() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/devices-v2.snapshot");
        let batch = |sequence, at| one_reading("drill-3", sequence, at);
        let mut written = remembered();
        let mut memory = DeviceMemory::default();
        let (mut gaps, mut faults, mut usage) = (0, MeterFaults::default(), Vec::new());
        for (sequence, at) in [(1, 1_000), (300, 3_000), (100, 1_500)] {
            let batch = batch(sequence, at);
            memory
                .apply(batch, &mut gaps, &mut faults, &mut usage)
                .unwrap();
        }
        assert_eq!(gaps, 297);
        written
            .devices
            .push((("acme".into(), "drill-3".into()), memory));
        let mut read = checked_in(&fixture, &written);
        let (_, memory) = read.devices.last_mut().unwrap();
        let (mut gaps, mut faults, mut usage) = (0, MeterFaults::default(), Vec::new());
        assert_eq!(
            memory.apply(batch(50, 1_200), &mut gaps, &mut faults, &mut usage),
            Ok(())
        );
        assert_eq!(
            memory.apply(batch(100, 1_200), &mut gaps, &mut faults, &mut usage),
            Err(fleetpulse_engine::operators::device_state::Admission::Duplicate)
        );
        assert_eq!(gaps, -1);
    }

    /// Format 3 (checked in) keeps the batches a snapshot could not take
    /// out of a window that forgot ranges: after a restart the replay of
    /// one still counts, once.
    #[test]
    fn a_format_3_snapshot_keeps_the_waiting_batches_its_windows_could_not_forget() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/devices-v3.snapshot");
        let batch = |sequence| one_reading("drill-4", sequence, 1_000 + sequence);
        let mut written = remembered();
        let mut memory = DeviceMemory::default();
        let (mut gaps, mut faults, mut usage) = (0, MeterFaults::default(), Vec::new());
        // Numbered up with a gap at each: more missing ranges than kept.
        for i in 0..1_100 {
            memory
                .apply(batch(2 + 2 * i), &mut gaps, &mut faults, &mut usage)
                .unwrap();
        }
        let memory = memory.for_snapshot(0, &[(0, 2), (0, 2_198)]);
        written
            .devices
            .push((("acme".into(), "drill-4".into()), memory));
        let mut read = checked_in(&fixture, &written);
        let (_, memory) = read.devices.last_mut().unwrap();
        for sequence in [2, 2_198] {
            let replayed = memory.apply(batch(sequence), &mut gaps, &mut faults, &mut usage);
            assert_eq!(replayed, Ok(()), "{sequence}");
            assert!(
                memory
                    .apply(batch(sequence), &mut gaps, &mut faults, &mut usage)
                    .is_err()
            );
        }
        assert!(
            memory
                .apply(batch(4), &mut gaps, &mut faults, &mut usage)
                .is_err()
        );
    }
}
