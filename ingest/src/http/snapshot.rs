//! The view kept beside the WAL, for a service whose view cannot be filled
//! from a SQLite store (InfluxDB or VictoriaMetrics only). A restart emits
//! again only what the stores may lack, so without it the dashboard would
//! start empty until windows closed again: a day for health.
//!
//! A snapshot of every record the view holds (`view.snapshot`) and a
//! journal of the record batches taken in since (`view.journal`), both of
//! one generation: the view task appends to the journal every few seconds
//! (one fsync) and counts, like a sink, the batches on disk, so the
//! checkpoint never passes a batch the files lack. Once the journal
//! outgrows the snapshot it is folded into a new snapshot of the next
//! generation, so the disk written stays about twice the record stream the
//! view takes in, not a whole view every few seconds. A journal of another
//! generation than the snapshot's is never read: an older batch applied
//! after a newer snapshot would undo a restatement.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleetpulse_engine::Output;

const SNAPSHOT_MAGIC: &[u8; 8] = b"FPVIEW\0\0";
const JOURNAL_MAGIC: &[u8; 8] = b"FPVJRNL\0";
const FORMAT: u32 = 1;
/// Magic, format, generation, body length, CRC-32 of the body.
const SNAPSHOT_HEADER: usize = 8 + 4 + 8 + 8 + 4;
/// Magic, format, generation.
const JOURNAL_HEADER: usize = 8 + 4 + 8;
/// A journal is folded into a snapshot once it is longer than the snapshot
/// and than this.
const FOLD_ABOVE: u64 = 1 << 20;

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("view.snapshot")
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join("view.journal")
}

fn le(bytes: &[u8], at: usize, n: usize) -> u64 {
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&bytes[at..at + n]);
    u64::from_le_bytes(b)
}

/// A snapshot file's bytes.
fn encode_snapshot(generation: u64, records: &[Output]) -> Vec<u8> {
    let body = bincode::serialize(records).expect("records serialise");
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER + body.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The generation and records of a snapshot file's bytes.
fn decode_snapshot(bytes: &[u8]) -> Result<(u64, Vec<Output>), String> {
    if bytes.len() < SNAPSHOT_HEADER || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err("not a view snapshot".into());
    }
    let format = le(bytes, 8, 4);
    if format != u64::from(FORMAT) {
        return Err(format!("format {format}, this build reads {FORMAT}"));
    }
    let body = &bytes[SNAPSHOT_HEADER..];
    if le(bytes, 20, 8) != body.len() as u64 || u64::from(crc32fast::hash(body)) != le(bytes, 28, 4)
    {
        return Err("cut short or damaged".into());
    }
    let records = bincode::deserialize(body).map_err(|e| format!("damaged: {e}"))?;
    Ok((le(bytes, 12, 8), records))
}

/// One journal entry: length, CRC-32, the batch.
fn encode_entry(records: &[Output], out: &mut Vec<u8>) {
    let body = bincode::serialize(records).expect("records serialise");
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// The records of a journal of `generation`, in order, up to the first
/// entry cut short or damaged (the tail a crash left unsynced: the
/// checkpoint never counted it).
fn decode_journal(bytes: &[u8], generation: u64) -> Vec<Output> {
    journal_batches(bytes, generation).concat()
}

/// The batches of a journal of `generation`, as [`decode_journal`] reads
/// them.
fn journal_batches(bytes: &[u8], generation: u64) -> Vec<Vec<Output>> {
    let mut out = Vec::new();
    if bytes.len() < JOURNAL_HEADER
        || &bytes[..8] != JOURNAL_MAGIC
        || le(bytes, 8, 4) != u64::from(FORMAT)
        || le(bytes, 12, 8) != generation
    {
        return out;
    }
    let mut at = JOURNAL_HEADER;
    while at + 8 <= bytes.len() {
        let len = le(bytes, at, 4) as usize;
        let crc = le(bytes, at + 4, 4);
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if u64::from(crc32fast::hash(body)) != crc {
            break;
        }
        match bincode::deserialize::<Vec<Output>>(body) {
            Ok(records) => out.push(records),
            Err(_) => break,
        }
        at += 8 + len;
    }
    out
}

/// The file's bytes; `None` when there is none.
fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the files in `dir` hold: the snapshot's records then the journal's
/// batches, in the order they were taken in, and the snapshot's generation
/// (0 without one). Unreadable files are said and left: the view then
/// starts with less, as it would without them, and the next start of
/// [`Journal::start`] replaces them.
pub fn load(dir: &Path) -> (u64, Vec<Output>) {
    let warn = |file: &Path, e: &dyn std::fmt::Display| {
        tracing::warn!(file = %file.display(), error = %e, "the view's snapshot is unusable: the dashboard shows records as windows close");
    };
    let file = snapshot_path(dir);
    let (generation, mut records) = match read(&file) {
        Ok(None) => (0, Vec::new()),
        Ok(Some(bytes)) => match decode_snapshot(&bytes) {
            Ok(kept) => kept,
            Err(e) => {
                warn(&file, &e);
                return (0, Vec::new());
            }
        },
        Err(e) => {
            warn(&file, &e);
            return (0, Vec::new());
        }
    };
    let file = journal_path(dir);
    match read(&file) {
        Ok(Some(bytes)) => records.extend(decode_journal(&bytes, generation)),
        Ok(None) => {}
        Err(e) => warn(&file, &e),
    }
    (generation, records)
}

/// The journal being appended to, with the generation of its snapshot.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    generation: u64,
    file: std::fs::File,
    /// Bytes of entries in the journal, and of the snapshot it follows.
    bytes: u64,
    snapshot_bytes: u64,
}

impl Journal {
    /// Starts generation `after + 1` in `dir`: a snapshot of `records` (what
    /// the view holds now) and an empty journal. Whatever the files held
    /// before is in `records` (a journal's torn tail is dropped here).
    pub fn start(dir: &Path, after: u64, records: &[Output]) -> std::io::Result<Self> {
        let generation = after + 1;
        let snapshot = encode_snapshot(generation, records);
        crate::files::replace(&snapshot_path(dir), &snapshot)?;
        let mut header = Vec::with_capacity(JOURNAL_HEADER);
        header.extend_from_slice(JOURNAL_MAGIC);
        header.extend_from_slice(&FORMAT.to_le_bytes());
        header.extend_from_slice(&generation.to_le_bytes());
        crate::files::replace(&journal_path(dir), &header)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(journal_path(dir))?;
        Ok(Self {
            dir: dir.to_owned(),
            generation,
            file,
            bytes: 0,
            snapshot_bytes: snapshot.len() as u64,
        })
    }

    /// Appends `batches` and makes them durable.
    pub fn append(&mut self, batches: &[Arc<[Output]>]) -> std::io::Result<()> {
        let mut out = Vec::new();
        for batch in batches {
            encode_entry(batch, &mut out);
        }
        self.file.write_all(&out)?;
        self.file.sync_data()?;
        self.bytes += out.len() as u64;
        Ok(())
    }

    /// Whether the journal has outgrown its snapshot: time to fold it.
    pub fn due(&self) -> bool {
        self.bytes > self.snapshot_bytes.max(FOLD_ABOVE)
    }

    /// Folds the journal into a new snapshot of `records`, which holds
    /// every batch appended.
    pub fn fold(self, records: &[Output]) -> std::io::Result<Self> {
        Self::start(&self.dir, self.generation, records)
    }

    /// The generation of the snapshot the journal follows.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of the snapshot and the journal.
    pub fn size(&self) -> (u64, u64) {
        (self.snapshot_bytes, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_engine::PortfolioRecord;

    fn day(d: u64, customers: u32) -> Output {
        Output::Portfolio(PortfolioRecord {
            window_start: d * 86_400_000,
            customers,
            ..PortfolioRecord::default()
        })
    }

    #[test]
    fn snapshot_and_journal_give_back_every_batch_in_order() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), (0, Vec::new()), "no files: nothing");
        let mut journal = Journal::start(dir.path(), 0, &[day(0, 1)]).unwrap();
        journal
            .append(&[vec![day(1, 2)].into(), vec![day(2, 3)].into()])
            .unwrap();
        journal.append(&[vec![day(1, 4)].into()]).unwrap();
        let (generation, records) = load(dir.path());
        assert_eq!(generation, 1);
        assert_eq!(records, [day(0, 1), day(1, 2), day(2, 3), day(1, 4)]);

        // Folded: one snapshot, an empty journal of the next generation.
        let journal = journal.fold(&records).unwrap();
        assert_eq!(journal.size().1, 0);
        assert_eq!(load(dir.path()), (2, records.clone()));
    }

    /// The record kind of `output`, by its store name.
    fn kind(output: &Output) -> &'static str {
        struct Name;
        impl crate::records::RecordVisitor for Name {
            type Out = &'static str;
            fn record<R: crate::records::RecordKind>(&mut self, _: &R) -> &'static str {
                R::NAME
            }
        }
        crate::records::with_record(output, &mut Name)
    }

    /// The view files the build of 2026-12-05 left (checked in,
    /// `tests/fixtures/view-v1`: a snapshot and a journal of one generation,
    /// records of every kind the view holds from a store-and-forward fleet's
    /// run, written by that build's [`Journal`] when journeys.rs
    /// `without_a_sqlite_store_the_dashboard_shows_after_a_restart_what_it_showed_before`
    /// ran with `FLEETPULSE_BLESS=1`) read with this one as that build wrote
    /// them: every record of both files, each batch written again, gives
    /// the same bytes. bincode does not describe its bodies, so a record
    /// kind's field added, dropped or retyped fails this, where an upgraded
    /// InfluxDB or VictoriaMetrics deployment would find its view damaged
    /// and start with an empty dashboard (or, a field dropped at a body's
    /// end, read the records shifted). Then read this layout too (a
    /// `FORMAT` 2 beside 1), add a fixture of the new one, and never bless
    /// these files again.
    #[test]
    fn the_view_files_an_earlier_build_left_read_as_it_wrote_them() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/view-v1");
        let snapshot = std::fs::read(snapshot_path(&dir)).unwrap();
        let journal = std::fs::read(journal_path(&dir)).unwrap();
        let (generation, held) = decode_snapshot(&snapshot).unwrap();
        assert_eq!(
            encode_snapshot(generation, &held),
            snapshot,
            "the snapshot's records, written again"
        );
        let batches = journal_batches(&journal, generation);
        let mut again = journal[..JOURNAL_HEADER].to_vec();
        for batch in &batches {
            encode_entry(batch, &mut again);
        }
        assert_eq!(again, journal, "the journal's batches, written again");
        let kinds: std::collections::BTreeSet<_> = held
            .iter()
            .chain(batches.iter().flatten())
            .map(kind)
            .collect();
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            [
                "alert",
                "customer_kpi",
                "device_kpi",
                "forecast",
                "health",
                "milestone",
                "outcome",
                "portfolio"
            ],
            "records of every kind the view holds"
        );
        assert!(batches.len() > 1, "{} batches", batches.len());
        // As the service reads them at a start (compared as bytes: outcome
        // values without cases are NaN).
        let mut records = held;
        records.extend(batches.concat());
        let (read_generation, read) = load(&dir);
        assert_eq!(read_generation, generation);
        let bytes = |r: &[Output]| bincode::serialize(r).unwrap();
        assert!(bytes(&read) == bytes(&records), "the records, as loaded");
    }

    #[test]
    fn a_torn_tail_a_damaged_snapshot_and_a_stale_journal_are_never_misread() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::start(dir.path(), 0, &[day(0, 1)]).unwrap();
        journal.append(&[vec![day(1, 2)].into()]).unwrap();
        journal.append(&[vec![day(2, 3)].into()]).unwrap();
        // The last entry cut short: the ones before it are read.
        let file = journal_path(dir.path());
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert_eq!(load(dir.path()).1, [day(0, 1), day(1, 2)]);

        // A journal of the generation before the snapshot's (a crash between
        // the new snapshot and the new journal): not read.
        let stale = std::fs::read(&file).unwrap();
        let journal = Journal::start(dir.path(), 1, &[day(0, 9)]).unwrap();
        std::fs::write(&file, &stale).unwrap();
        assert_eq!(load(dir.path()), (2, vec![day(0, 9)]));
        drop(journal);

        // A damaged snapshot: nothing, and no journal read on top of it.
        let snapshot = snapshot_path(dir.path());
        let mut bytes = std::fs::read(&snapshot).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&snapshot, &bytes).unwrap();
        assert_eq!(load(dir.path()), (0, Vec::new()));
        assert!(decode_snapshot(b"FPWAL\0\0\0........................").is_err());
    }
}
