//! The log against real files in a temporary directory.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn record(i: u64) -> WalRecord {
    WalRecord {
        topic: format!("fleet/c{}/s/d{i}/telemetry", i % 3),
        payload: Bytes::from(format!("payload-{i}-{}", "x".repeat((i % 17) as usize))),
        received_ms: 1_767_571_200_000 + i,
    }
}

fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 256,
        max_record_bytes: 1024,
        max_bytes: None,
    }
}

/// [`small`] segments, the log bounded to `max_bytes`.
fn bounded(max_bytes: u64) -> WalOptions {
    WalOptions {
        max_bytes: Some(max_bytes),
        ..small()
    }
}

fn all(wal: &Wal) -> Vec<(Lsn, WalRecord)> {
    from(wal, Lsn::ZERO)
}

fn from(wal: &Wal, lsn: Lsn) -> Vec<(Lsn, WalRecord)> {
    wal.replay(lsn)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<(Lsn, WalRecord)> {
    range.map(|i| (Lsn(i), record(i))).collect()
}

/// Appends records `range` (LSN i holds `record(i)`) and commits.
fn fill(wal: &mut Wal, range: std::ops::RangeInclusive<u64>) {
    let last = *range.end();
    for i in range {
        assert_eq!(wal.append(&record(i)).unwrap(), Lsn(i));
    }
    assert_eq!(wal.commit().unwrap(), Lsn(last));
}

/// An empty log in a fresh temporary directory.
fn empty_log(options: WalOptions) -> (tempfile::TempDir, Wal) {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options).unwrap();
    (dir, wal)
}

/// A log in a fresh temporary directory with records `range` committed.
fn open_log(options: WalOptions, range: std::ops::RangeInclusive<u64>) -> (tempfile::TempDir, Wal) {
    let (dir, mut wal) = empty_log(options);
    fill(&mut wal, range);
    (dir, wal)
}

/// A record with only the sizes of topic and payload chosen.
fn bare(topic: String, payload: Bytes) -> WalRecord {
    WalRecord {
        topic,
        payload,
        received_ms: 1,
    }
}

/// [`open_log`], closed again: what a stopped service leaves on disk.
fn closed_log(options: WalOptions, range: std::ops::RangeInclusive<u64>) -> tempfile::TempDir {
    open_log(options, range).0
}

#[path = "../../tests/support/files.rs"]
mod files;

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    files::files_with_extension(dir, "wal")
}

#[test]
fn round_trip_and_reopen() {
    let (dir, mut wal) = empty_log(WalOptions::default());
    assert_eq!(wal.next_lsn(), Lsn(1));
    assert_eq!(wal.durable_lsn(), Lsn::ZERO);
    assert_eq!(wal.commit().unwrap(), Lsn::ZERO, "empty commit");
    assert_eq!(
        segment_files(dir.path()),
        [dir.path().join("00000000000000000001.wal")]
    );
    fill(&mut wal, 1..=3);
    assert_eq!(all(&wal), expected(1..=3));
    assert_eq!(from(&wal, Lsn(3)), expected(3..=3));
    assert_eq!(from(&wal, Lsn(4)), []);
    let bytes = wal.bytes();
    assert_eq!(
        bytes,
        fs::metadata(dir.path().join("00000000000000000001.wal"))
            .unwrap()
            .len()
    );
    drop(wal);

    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(
        wal.recovery(),
        &Recovery {
            segments: 1,
            first_lsn: Lsn(1),
            next_lsn: Lsn(4),
            torn_tail: None
        }
    );
    assert_eq!(wal.durable_lsn(), Lsn(3));
    assert_eq!(wal.bytes(), bytes);
    assert_eq!(all(&wal), expected(1..=3));
    fill(&mut wal, 4..=5);
    assert_eq!(all(&wal), expected(1..=5));
}

/// The directory removed under an open log: a commit is refused as on a
/// full disk, naming it, and nothing of the group counts as durable (the
/// open segment would have taken it to the removed files).
#[test]
fn a_commit_into_a_removed_directory_is_refused_as_full() {
    let (dir, mut wal) = open_log(WalOptions::default(), 1..=2);
    fs::remove_dir_all(dir.path()).unwrap();
    wal.append(&record(3)).unwrap();
    match wal.commit() {
        Err(WalError::Full { reason }) => {
            assert!(reason.contains("is gone"), "{reason}");
            assert!(
                reason.contains(&dir.path().display().to_string()),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(wal.durable_lsn(), Lsn(2));
    assert_eq!(wal.pending_bytes(), 0);
}

#[test]
fn uncommitted_appends_are_not_replayed_nor_kept() {
    let (dir, mut wal) = open_log(WalOptions::default(), 1..=2);
    wal.append(&record(3)).unwrap();
    assert!(wal.pending_bytes() > 0);
    assert_eq!(
        all(&wal),
        expected(1..=2),
        "replay shows only durable records"
    );
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(all(&wal), expected(1..=2));
    assert_eq!(wal.next_lsn(), Lsn(3));
}

#[test]
fn many_segments() {
    let (dir, mut wal) = empty_log(small());
    // Several commits, some spanning segment boundaries.
    fill(&mut wal, 1..=7);
    fill(&mut wal, 8..=8);
    fill(&mut wal, 9..=100);
    let files = segment_files(dir.path());
    assert!(files.len() > 10, "{} segments", files.len());
    assert_eq!(files.len(), wal.segment_count());
    for file in &files {
        let len = fs::metadata(file).unwrap().len();
        assert!(len <= 256, "{} has {len} bytes", file.display());
    }
    let on_disk: u64 = files.iter().map(|f| fs::metadata(f).unwrap().len()).sum();
    assert_eq!(wal.bytes(), on_disk);
    assert_eq!(all(&wal), expected(1..=100));
    assert_eq!(from(&wal, Lsn(57)), expected(57..=100));
    drop(wal);

    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.recovery().segments, files.len());
    assert_eq!(wal.recovery().records(), 100);
    assert_eq!(all(&wal), expected(1..=100));
    // Each file is named after its first record.
    for file in &files {
        let base: u64 = file.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let first = from(&wal, Lsn(base))[0].0;
        assert_eq!(first, Lsn(base));
    }
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own() {
    let (_dir, mut wal) = empty_log(small());
    let big = bare("t".into(), Bytes::from(vec![7u8; 600]));
    wal.append(&record(1)).unwrap();
    wal.append(&big).unwrap();
    wal.append(&record(3)).unwrap();
    wal.commit().unwrap();
    assert_eq!(wal.segment_count(), 3);
    let got = all(&wal);
    assert_eq!(got[1].1, big);
}

#[test]
fn oversized_records_are_refused_and_the_log_stays_usable() {
    let (_dir, mut wal) = empty_log(small());
    let big = bare("t".into(), Bytes::from(vec![0u8; 2000]));
    assert!(matches!(
        wal.append(&big),
        Err(WalError::RecordTooLarge { limit: 1024, .. })
    ));
    let long_topic = bare("t".repeat(70_000), Bytes::new());
    assert!(matches!(
        wal.append(&long_topic),
        Err(WalError::TopicTooLong { len: 70_000 })
    ));
    fill(&mut wal, 1..=2);
    assert_eq!(all(&wal), expected(1..=2));
}

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    let (dir, mut wal) = open_log(WalOptions::default(), 1..=10);
    let durable_len = wal.bytes();
    // Half of record 11 reaches the file, then the process dies.
    wal.append(&record(11)).unwrap();
    let half = wal.pending_bytes() / 2;
    wal.crash_during_commit(half);
    let file = dir.path().join("00000000000000000001.wal");
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        durable_len + half as u64
    );

    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let tail = wal.recovery().torn_tail.clone().expect("a torn tail");
    assert_eq!(tail.file, file);
    assert_eq!(tail.offset, durable_len);
    assert_eq!(tail.dropped_bytes, half as u64);
    assert_eq!(fs::metadata(&file).unwrap().len(), durable_len, "cut");
    assert_eq!(all(&wal), expected(1..=10));
    assert_eq!(wal.next_lsn(), Lsn(11));
    fill(&mut wal, 11..=12);
    drop(wal);

    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(wal.recovery().torn_tail, None, "clean after the cut");
    assert_eq!(all(&wal), expected(1..=12));
}

#[test]
fn whole_frames_of_an_interrupted_commit_are_kept() {
    let (dir, mut wal) = open_log(WalOptions::default(), 1..=2);
    for i in 3..=5 {
        wal.append(&record(i)).unwrap();
    }
    // Records 3 and 4 reach the file whole, 5 only in part.
    let mut frames = Vec::new();
    frame::encode(&mut frames, Lsn(3), &record(3));
    frame::encode(&mut frames, Lsn(4), &record(4));
    wal.crash_during_commit(frames.len() + 5);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(all(&wal), expected(1..=4));
    assert_eq!(wal.recovery().torn_tail.as_ref().unwrap().dropped_bytes, 5);
}

#[test]
fn garbage_and_zeros_after_the_last_record_are_a_torn_tail() {
    for junk in [vec![0u8; 4096], vec![0xa5; 37], b"\x10\x00".to_vec()] {
        let dir = closed_log(WalOptions::default(), 1..=3);
        let file = dir.path().join("00000000000000000001.wal");
        OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(&junk)
            .unwrap();
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(
            wal.recovery().torn_tail.as_ref().unwrap().dropped_bytes,
            junk.len() as u64
        );
        assert_eq!(all(&wal), expected(1..=3));
    }
}

#[test]
fn a_bit_flip_in_the_last_records_of_the_last_segment_cuts_there() {
    let (dir, wal) = open_log(WalOptions::default(), 1..=5);
    let mut before = Vec::new();
    frame::encode(&mut before, Lsn(1), &record(1));
    frame::encode(&mut before, Lsn(2), &record(2));
    frame::encode(&mut before, Lsn(3), &record(3));
    let offset = SEGMENT_HEADER + before.len() as u64;
    drop(wal);
    let file = dir.path().join("00000000000000000001.wal");
    flip_bit(&file, offset + 20);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let tail = wal.recovery().torn_tail.as_ref().unwrap();
    assert_eq!(tail.offset, offset);
    assert_eq!(tail.reason, "frame checksum mismatch");
    assert_eq!(all(&wal), expected(1..=3));
}

fn flip_bit(file: &Path, offset: u64) {
    let mut bytes = fs::read(file).unwrap();
    bytes[offset as usize] ^= 0x10;
    let mut f = OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&bytes).unwrap();
}

#[test]
fn a_bit_flip_in_an_earlier_segment_is_an_error_naming_file_and_offset() {
    let dir = closed_log(small(), 1..=40);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let victim = &files[1];
    let len = fs::metadata(victim).unwrap().len();
    let offset = SEGMENT_HEADER + (len - SEGMENT_HEADER) / 2;
    flip_bit(victim, offset);
    let before: Vec<u64> = files
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .collect();

    let err = Wal::open(dir.path(), small()).unwrap_err();
    match &err {
        WalError::Corrupt {
            file, offset: at, ..
        } => {
            assert_eq!(file, victim);
            assert!(
                *at >= SEGMENT_HEADER && *at <= offset,
                "{at} vs flipped {offset}"
            );
        }
        other => panic!("{other}"),
    }
    let message = err.to_string();
    assert!(message.contains(&victim.display().to_string()), "{message}");
    // Nothing was repaired or deleted.
    let after: Vec<u64> = segment_files(dir.path())
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn a_damaged_header_of_an_earlier_segment_is_an_error() {
    let dir = closed_log(small(), 1..=40);
    let files = segment_files(dir.path());
    flip_bit(&files[0], 2);
    assert!(matches!(
        Wal::open(dir.path(), small()),
        Err(WalError::Corrupt { offset: 0, .. })
    ));
}

#[test]
fn a_missing_segment_is_a_gap() {
    let dir = closed_log(small(), 1..=40);
    let files = segment_files(dir.path());
    fs::remove_file(&files[1]).unwrap();
    match Wal::open(dir.path(), small()).unwrap_err() {
        WalError::Gap { file, .. } => assert_eq!(file, files[2]),
        other => panic!("{other}"),
    }
}

#[test]
fn a_segment_torn_while_being_created_is_created_again() {
    let (dir, wal) = open_log(small(), 1..=20);
    let next = wal.next_lsn();
    drop(wal);
    let torn = dir.path().join(segment::file_name(next));
    fs::write(&torn, b"FPW").unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.recovery().torn_tail.as_ref().unwrap().dropped_bytes, 3);
    assert_eq!(wal.next_lsn(), next);
    fill(&mut wal, 21..=25);
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(all(&wal), expected(1..=25));
}

#[test]
fn foreign_files_are_ignored_but_bad_segment_names_are_not() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("README"), b"hello").unwrap();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    fill(&mut wal, 1..=1);
    drop(wal);
    fs::write(dir.path().join("7.wal"), b"").unwrap();
    assert!(matches!(
        Wal::open(dir.path(), WalOptions::default()),
        Err(WalError::UnknownFile { .. })
    ));
}

#[test]
fn truncate_before_deletes_whole_old_segments_only() {
    let (dir, mut wal) = open_log(small(), 1..=100);
    let files = segment_files(dir.path());
    let bases: Vec<u64> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    let bytes_before = wal.bytes();

    // Below the second segment's base: nothing can go.
    assert_eq!(wal.truncate_before(Lsn(bases[1] - 1)).unwrap(), 0);
    assert_eq!(wal.truncate_before(Lsn(bases[1])).unwrap(), 1);
    assert!(!files[0].exists());
    assert_eq!(wal.first_lsn(), Lsn(bases[1]));
    assert!(wal.bytes() < bytes_before);

    // In the middle of segment 4: segments 2 and 3 go, 4 stays.
    assert_eq!(wal.truncate_before(Lsn(bases[3] + 1)).unwrap(), 2);
    assert_eq!(wal.first_lsn(), Lsn(bases[3]));
    assert_eq!(all(&wal), expected(bases[3]..=100));
    assert_eq!(from(&wal, Lsn(60)), expected(60..=100));

    // Everything: the active segment stays.
    let deleted = wal.truncate_before(Lsn(1000)).unwrap();
    assert_eq!(deleted, files.len() - 4);
    assert_eq!(wal.segment_count(), 1);
    let last = *bases.last().unwrap();
    assert_eq!(all(&wal), expected(last..=100));
    fill(&mut wal, 101..=105);
    drop(wal);

    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.first_lsn(), Lsn(last));
    assert_eq!(all(&wal), expected(last..=105));
}

#[test]
fn a_log_whose_old_segments_were_all_deleted_keeps_counting() {
    let (dir, mut wal) = open_log(small(), 1..=50);
    wal.truncate_before(Lsn(51)).unwrap();
    // Fill the active segment so that the next record starts a new one,
    // then drop the old one too.
    fill(&mut wal, 51..=60);
    wal.truncate_before(Lsn(61)).unwrap();
    drop(wal);
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.next_lsn(), Lsn(61));
    assert_eq!(wal.append(&record(61)).unwrap(), Lsn(61));
}

// ---------------------------------------------------------------------------
// Property: any sequence of appends, commits, crashes in mid-commit,
// reopens and truncations keeps exactly the committed records (plus whole
// frames of an interrupted commit), in order, and never reuses an LSN.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Append { payload: usize },
    Commit,
    Reopen,
    Crash { fraction: u8 },
    Truncate { back: u64 },
    Replay { back: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..300).prop_map(|payload| Op::Append { payload }),
        4 => Just(Op::Commit),
        1 => Just(Op::Reopen),
        1 => (0u8..=100).prop_map(|fraction| Op::Crash { fraction }),
        1 => (0u64..40).prop_map(|back| Op::Truncate { back }),
        1 => (0u64..40).prop_map(|back| Op::Replay { back }),
    ]
}

fn model_record(lsn: u64, payload: usize) -> WalRecord {
    WalRecord {
        topic: format!("fleet/c/s/d{}/telemetry", lsn % 5),
        payload: Bytes::from(vec![(lsn % 251) as u8; payload]),
        received_ms: lsn * 7,
    }
}

/// A log under a random history, and the model it is checked against: the
/// records made durable (LSN i at index i - 1), those appended since, and
/// the lowest LSN a truncation asked to keep.
struct History {
    dir: tempfile::TempDir,
    options: WalOptions,
    wal: Option<Wal>,
    durable: Vec<WalRecord>,
    pending: Vec<WalRecord>,
    keep_from: u64,
}

impl History {
    fn new(options: WalOptions) -> Self {
        let (dir, wal) = empty_log(options);
        Self {
            dir,
            options,
            wal: Some(wal),
            durable: Vec::new(),
            pending: Vec::new(),
            keep_from: 1,
        }
    }

    fn wal(&mut self) -> &mut Wal {
        self.wal.as_mut().unwrap()
    }

    /// The LSN the next append takes.
    fn next(&self) -> u64 {
        (self.durable.len() + self.pending.len() + 1) as u64
    }

    fn commit(&mut self) -> Result<(), TestCaseError> {
        self.durable.append(&mut self.pending);
        let durable = Lsn(self.durable.len() as u64);
        prop_assert_eq!(self.wal().commit().unwrap(), durable);
        Ok(())
    }

    /// Closes and opens the log again: what was not committed is gone.
    fn reopen(&mut self) {
        self.pending.clear();
        drop(self.wal.take());
        self.wal = Some(Wal::open(self.dir.path(), self.options).unwrap());
    }

    /// Cuts segments before the LSN `back` below the next durable one.
    fn truncate(&mut self, back: u64) {
        let lsn = (self.durable.len() as u64 + 1).saturating_sub(back).max(1);
        self.wal().truncate_before(Lsn(lsn)).unwrap();
        self.keep_from = self.keep_from.max(lsn);
    }

    /// The end of every history: the log, and the log reopened, replay
    /// exactly the durable records, and its byte count is what the files
    /// hold (returned).
    fn finish(mut self) -> Result<u64, TestCaseError> {
        let wal = self.wal.take().unwrap();
        check(&wal, &self.durable, self.keep_from, Lsn::ZERO)?;
        drop(wal);
        let reopened = Wal::open(self.dir.path(), self.options).unwrap();
        check(&reopened, &self.durable, self.keep_from, Lsn::ZERO)?;
        let on_disk: u64 = segment_files(self.dir.path())
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum();
        prop_assert_eq!(reopened.bytes(), on_disk);
        Ok(on_disk)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_exactly_the_committed_records(ops in proptest::collection::vec(op(), 1..80)) {
        let mut h = History::new(WalOptions { segment_bytes: 700, max_record_bytes: 4096, max_bytes: None });
        for op in ops {
            match op {
                Op::Append { payload } => {
                    let lsn = h.next();
                    let record = model_record(lsn, payload);
                    prop_assert_eq!(h.wal().append(&record).unwrap(), Lsn(lsn));
                    h.pending.push(record);
                }
                Op::Commit => h.commit()?,
                Op::Reopen => h.reopen(),
                Op::Crash { fraction } => {
                    let bytes = h.wal().pending_bytes() * fraction as usize / 100;
                    h.wal.take().unwrap().crash_during_commit(bytes);
                    let reopened = Wal::open(h.dir.path(), h.options).unwrap();
                    // Whole frames that made it are records like any other.
                    let survived = (reopened.next_lsn().get() - 1) as usize - h.durable.len();
                    prop_assert!(survived <= h.pending.len());
                    if fraction == 100 {
                        prop_assert_eq!(survived, h.pending.len());
                    }
                    let kept: Vec<WalRecord> = h.pending.drain(..survived).collect();
                    h.durable.extend(kept);
                    h.pending.clear();
                    h.wal = Some(reopened);
                }
                Op::Truncate { back } => h.truncate(back),
                Op::Replay { back } => {
                    let lsn = (h.durable.len() as u64 + 1).saturating_sub(back);
                    check(h.wal.as_ref().unwrap(), &h.durable, h.keep_from, Lsn(lsn))?;
                }
            }
        }
        h.finish()?;
    }
}

#[derive(Debug, Clone)]
enum BoundedOp {
    Append { payload: usize },
    Batch { payloads: Vec<usize> },
    Commit,
    Reopen,
    Truncate { back: u64 },
}

fn bounded_op() -> impl Strategy<Value = BoundedOp> {
    prop_oneof![
        6 => (0usize..300).prop_map(|payload| BoundedOp::Append { payload }),
        3 => proptest::collection::vec(0usize..300, 0..12)
            .prop_map(|payloads| BoundedOp::Batch { payloads }),
        4 => Just(BoundedOp::Commit),
        1 => Just(BoundedOp::Reopen),
        2 => (0u64..20).prop_map(|back| BoundedOp::Truncate { back }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Under `max_bytes`: a refused append or batch changes nothing (no
    /// LSN taken, nothing pending), the files never pass the bound, and the
    /// log keeps exactly the committed records.
    #[test]
    fn bounded_histories_refuse_whole_and_keep_exactly_the_committed_records(
        ops in proptest::collection::vec(bounded_op(), 1..100)
    ) {
        let max = 3000;
        let mut h = History::new(WalOptions { segment_bytes: 700, max_record_bytes: 4096, max_bytes: Some(max) });
        for op in ops {
            let next = h.next();
            let before = (h.wal().next_lsn(), h.wal().pending_bytes());
            match op {
                BoundedOp::Append { payload } => {
                    let record = model_record(next, payload);
                    let w = h.wal();
                    match w.append(&record) {
                        Ok(lsn) => {
                            prop_assert_eq!(lsn, Lsn(next));
                            h.pending.push(record);
                        }
                        Err(WalError::Full { .. }) => {
                            prop_assert_eq!((w.next_lsn(), w.pending_bytes()), before);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                BoundedOp::Batch { payloads } => {
                    let records: Vec<WalRecord> = payloads
                        .iter()
                        .enumerate()
                        .map(|(i, p)| model_record(next + i as u64, *p))
                        .collect();
                    let w = h.wal();
                    match w.append_all(&records) {
                        Ok(lsns) => {
                            prop_assert_eq!(lsns, Lsn(next)..Lsn(next + records.len() as u64));
                            h.pending.extend(records);
                        }
                        Err(WalError::Full { .. }) => {
                            prop_assert_eq!((w.next_lsn(), w.pending_bytes()), before);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                BoundedOp::Commit => {
                    h.commit()?;
                    prop_assert!(h.wal().bytes() <= max, "{} bytes", h.wal().bytes());
                }
                BoundedOp::Reopen => h.reopen(),
                BoundedOp::Truncate { back } => h.truncate(back),
            }
        }
        let on_disk = h.finish()?;
        prop_assert!(on_disk <= max);
    }
}

/// Replay from `from` yields the durable records from
/// `max(from, first kept)` on; truncation never dropped one at or above
/// `keep_from`.
fn check(wal: &Wal, durable: &[WalRecord], keep_from: u64, from: Lsn) -> Result<(), TestCaseError> {
    let first = wal.first_lsn().get();
    prop_assert!(
        first <= keep_from,
        "first kept {} above {}",
        first,
        keep_from
    );
    let start = from.get().max(first).max(1);
    let got: Vec<(Lsn, WalRecord)> = wal.replay(from).unwrap().map(Result::unwrap).collect();
    let want: Vec<(Lsn, WalRecord)> = (start..=durable.len() as u64)
        .map(|lsn| (Lsn(lsn), durable[lsn as usize - 1].clone()))
        .collect();
    prop_assert_eq!(got, want);
    prop_assert_eq!(wal.durable_lsn(), Lsn(durable.len() as u64));
    Ok(())
}

// ---------------------------------------------------------------------------
// A real crash: a child process appends and commits as fast as it can and
// reports each durable LSN; it is killed (SIGKILL) mid-stream. Everything it
// reported must come back, intact and in order.
// ---------------------------------------------------------------------------

/// Set for the child: the directory it writes its log to.
const CRASH_DIR_VAR: &str = "FLEETPULSE_WAL_CRASH_CHILD_DIR";

/// Segments of a few dozen commits each: the crash tests cross segments.
fn crash_options() -> WalOptions {
    WalOptions {
        segment_bytes: 16 * 1024,
        max_record_bytes: 1024,
        max_bytes: None,
    }
}

#[test]
#[ignore = "the child process of a_killed_writer_loses_nothing_it_committed"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_VAR) else {
        return;
    };
    let mut wal = Wal::open(dir, crash_options()).unwrap();
    let mut out = std::io::stdout().lock();
    let mut next = wal.next_lsn().get();
    loop {
        // Groups of 1 to 16 records.
        for _ in 0..=(next % 16) {
            assert_eq!(wal.append(&record(next)).unwrap(), Lsn(next));
            next += 1;
        }
        let durable = wal.commit().unwrap();
        writeln!(out, "{durable}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_killed_writer_loses_nothing_it_committed() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let mut reported = Lsn::ZERO;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "wal::tests::crash_child",
                "--ignored",
                "--nocapture",
            ])
            .args(["--test-threads", "1", "-q"])
            .env(CRASH_DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut commits = 0;
        for line in BufReader::new(stdout).lines() {
            let Ok(lsn) = line.unwrap().trim().parse::<u64>() else {
                continue; // libtest's own output
            };
            assert!(
                Lsn(lsn) > reported,
                "round {round}: LSN {lsn} reported twice"
            );
            reported = Lsn(lsn);
            commits += 1;
            if commits == 300 {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(commits, 300, "round {round}: the child stopped early");

        let wal = Wal::open(dir.path(), crash_options()).unwrap();
        assert!(
            wal.segment_count() > round,
            "round {round}: crosses segments"
        );
        // The child may have committed more after its last report, never less.
        assert!(wal.durable_lsn() >= reported, "round {round}");
        let got = all(&wal);
        assert_eq!(got.len() as u64, wal.durable_lsn().get(), "round {round}");
        for (lsn, record_at) in got {
            assert_eq!(record_at, record(lsn.get()), "round {round}, LSN {lsn}");
        }
        reported = wal.durable_lsn();
    }
}

// ---------------------------------------------------------------------------
// One process per directory.
// ---------------------------------------------------------------------------

#[test]
fn a_locked_directory_refuses_a_second_log_naming_the_holder() {
    let (dir, mut wal) = open_log(WalOptions::default(), 1..=3);
    let pid = std::process::id();
    let lock_file = dir.path().join(LOCK_FILE);
    assert_eq!(
        fs::read_to_string(&lock_file).unwrap().trim(),
        pid.to_string()
    );

    let err = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
    match &err {
        WalError::Locked {
            dir: locked,
            holder_pid,
        } => {
            assert_eq!(locked, dir.path());
            assert_eq!(*holder_pid, Some(pid));
        }
        other => panic!("{other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string())
            && message.contains(&format!("PID {pid}")),
        "{message}"
    );
    // The refused open touched nothing: the holder goes on.
    assert_eq!(
        fs::read_to_string(&lock_file).unwrap().trim(),
        pid.to_string()
    );
    fill(&mut wal, 4..=5);
    drop(wal);

    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(all(&wal), expected(1..=5));
    fill(&mut wal, 6..=6);
}

/// The lock file taken for a stale pidfile and removed while the holder
/// runs: the directory's own lock still refuses a second log. Before, the
/// second process locked a new file of that name, and both appended to
/// the same segments.
#[test]
fn a_removed_lock_file_does_not_let_a_second_log_in() {
    let (dir, mut wal) = open_log(WalOptions::default(), 1..=3);
    fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
    let err = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
    assert!(matches!(err, WalError::Locked { .. }), "{err}");
    fill(&mut wal, 4..=5);
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(all(&wal), expected(1..=5));
}

#[test]
fn a_lock_file_left_by_a_dead_holder_does_not_block() {
    let dir = closed_log(WalOptions::default(), 1..=2);
    // What a killed process leaves: the file with its PID, but no lock.
    fs::write(dir.path().join(LOCK_FILE), "4194304\n").unwrap();
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join(LOCK_FILE))
            .unwrap()
            .trim(),
        std::process::id().to_string()
    );
    assert_eq!(all(&wal), expected(1..=2));
}

// ---------------------------------------------------------------------------
// Full: max_bytes and a real full disk. Refused records leave the log as it
// was after its last commit, usable, and LSNs go on without a gap.
// ---------------------------------------------------------------------------

#[test]
fn max_bytes_refuses_appends_without_poisoning_and_cutting_makes_room() {
    let options = bounded(1024);
    let (dir, mut wal) = empty_log(options);
    // One record per commit until the bound refuses one.
    let mut next = 1;
    let refused = loop {
        match wal.append(&record(next)) {
            Ok(lsn) => {
                assert_eq!(lsn, Lsn(next));
                assert_eq!(wal.commit().unwrap(), Lsn(next));
                next += 1;
            }
            Err(e) => break e,
        }
    };
    let last = next - 1;
    assert!(last > 8, "{last} records fit");
    match &refused {
        WalError::Full { reason } => assert!(reason.contains("max_bytes of 1 KiB"), "{reason}"),
        other => panic!("{other}"),
    }
    let frame = (frame::FRAME_HEADER + record(next).encoded_len()) as u64;
    assert!(wal.bytes() <= 1024 && wal.bytes() + frame > 1024 - SEGMENT_HEADER);

    // Not poisoned, and nothing changed: refused again, commits are no-ops,
    // everything committed replays.
    assert_eq!(wal.next_lsn(), Lsn(next));
    assert_eq!(wal.pending_bytes(), 0);
    assert!(matches!(
        wal.append(&record(next)),
        Err(WalError::Full { .. })
    ));
    assert_eq!(wal.commit().unwrap(), Lsn(last));
    assert_eq!(all(&wal), expected(1..=last));

    // The checkpoint cuts old segments: the same record fits now, at the
    // LSN it would have had.
    assert!(wal.truncate_before(Lsn(next)).unwrap() > 0);
    let first = wal.first_lsn().get();
    fill(&mut wal, next..=next + 2);
    drop(wal);
    let wal = Wal::open(dir.path(), options).unwrap();
    assert_eq!(all(&wal), expected(first..=next + 2));
}

#[test]
fn append_all_takes_a_batch_whole_or_not_at_all() {
    let options = bounded(2048);
    let (dir, mut wal) = open_log(options, 1..=3);
    // Another caller's record waits in the same group.
    assert_eq!(wal.append(&record(4)).unwrap(), Lsn(4));
    let pending = wal.pending_bytes();

    // Spans several planned segments before the bound refuses it.
    let too_much: Vec<WalRecord> = (5..=60).map(record).collect();
    assert!(matches!(
        wal.append_all(&too_much),
        Err(WalError::Full { .. })
    ));
    assert_eq!((wal.next_lsn(), wal.pending_bytes()), (Lsn(5), pending));
    // A record that is too large fails the batch too.
    let mut with_a_giant: Vec<WalRecord> = (5..=7).map(record).collect();
    with_a_giant.push(WalRecord {
        payload: Bytes::from(vec![0u8; 2000]),
        ..record(8)
    });
    assert!(matches!(
        wal.append_all(&with_a_giant),
        Err(WalError::RecordTooLarge { .. })
    ));
    assert_eq!((wal.next_lsn(), wal.pending_bytes()), (Lsn(5), pending));

    let fits: Vec<WalRecord> = (5..=9).map(record).collect();
    assert_eq!(wal.append_all(&fits).unwrap(), Lsn(5)..Lsn(10));
    assert_eq!(wal.append_all(&[]).unwrap(), Lsn(10)..Lsn(10));
    assert_eq!(wal.commit().unwrap(), Lsn(9));
    drop(wal);
    let wal = Wal::open(dir.path(), options).unwrap();
    assert_eq!(all(&wal), expected(1..=9));
}

use crate::small_disk::{SmallDisk, fill_disk, rerun_in_namespace, shrink_by};

/// Runs `body` on a tmpfs of `size` (e.g. `1m`), so the disk really fills
/// up; `test` is this test's name, for the run in a namespace.
fn on_small_disk(test: &str, size: &str, body: impl FnOnce(&Path)) {
    match SmallDisk::mount(size) {
        Some(disk) => body(disk.path()),
        None => rerun_in_namespace(test),
    }
}

/// A record of about 1 KiB.
fn sized(i: u64) -> WalRecord {
    WalRecord {
        payload: Bytes::from(vec![(i % 251) as u8; 1000]),
        ..record(i)
    }
}

fn sized_expected(range: std::ops::RangeInclusive<u64>) -> Vec<(Lsn, WalRecord)> {
    range.map(|i| (Lsn(i), sized(i))).collect()
}

fn fill_sized(wal: &mut Wal, range: std::ops::RangeInclusive<u64>) -> Result<Lsn, WalError> {
    for i in range {
        assert_eq!(wal.append(&sized(i)).unwrap(), Lsn(i));
    }
    wal.commit()
}

/// Names and lengths of the segment files.
fn on_disk(dir: &Path) -> Vec<(PathBuf, u64)> {
    segment_files(dir)
        .into_iter()
        .map(|f| {
            let len = fs::metadata(&f).unwrap().len();
            (f, len)
        })
        .collect()
}

/// A log in `disk/wal` with ~1 KiB records 1..=`committed` committed, and
/// the rest of the disk taken by the file `filler`.
struct FullDisk {
    dir: PathBuf,
    options: WalOptions,
    wal: Wal,
    filler: PathBuf,
    filler_len: u64,
}

fn full_disk(disk: &Path, segment_bytes: u64, committed: u64) -> FullDisk {
    let dir = disk.join("wal");
    let options = WalOptions {
        segment_bytes,
        max_record_bytes: 4096,
        max_bytes: None,
    };
    let mut wal = Wal::open(&dir, options).unwrap();
    fill_sized(&mut wal, 1..=committed).unwrap();
    let filler = disk.join("filler");
    let filler_len = fill_disk(&filler);
    FullDisk {
        dir,
        options,
        wal,
        filler,
        filler_len,
    }
}

#[test]
fn a_full_disk_refuses_a_group_without_poisoning_and_freed_space_resumes() {
    on_small_disk(
        "wal::tests::a_full_disk_refuses_a_group_without_poisoning_and_freed_space_resumes",
        "1m",
        |disk| {
            let mut log = full_disk(disk, 16 * 1024, 50);
            let before = on_disk(&log.dir);

            // 40 KiB cannot fit in the slack of the last page.
            for _ in 0..2 {
                match fill_sized(&mut log.wal, 51..=90) {
                    Err(WalError::Full { reason }) => {
                        assert!(reason.contains("No space left on device"), "{reason}")
                    }
                    other => panic!("{other:?}"),
                }
                assert_eq!(on_disk(&log.dir), before, "rolled back");
                assert_eq!(log.wal.durable_lsn(), Lsn(50));
                assert_eq!(log.wal.next_lsn(), Lsn(51));
                assert_eq!(log.wal.pending_bytes(), 0);
                assert_eq!(
                    log.wal.bytes(),
                    before.iter().map(|(_, len)| len).sum::<u64>()
                );
                assert_eq!(all(&log.wal), sized_expected(1..=50));
            }

            // Space returns: the same records go in at the same LSNs.
            fs::remove_file(&log.filler).unwrap();
            assert_eq!(fill_sized(&mut log.wal, 51..=90).unwrap(), Lsn(90));
            drop(log.wal);
            let wal = Wal::open(&log.dir, log.options).unwrap();
            assert_eq!(wal.recovery().torn_tail, None);
            assert_eq!(all(&wal), sized_expected(1..=90));
        },
    );
}

#[test]
fn a_disk_filling_up_in_a_new_segment_rolls_back_to_the_last_commit() {
    on_small_disk(
        "wal::tests::a_disk_filling_up_in_a_new_segment_rolls_back_to_the_last_commit",
        "1m",
        |disk| {
            let mut log = full_disk(disk, 8 * 1024, 20);
            // Room for three pages: the group fills the active segment,
            // starts the next one, and the disk fills up there.
            shrink_by(&log.filler, log.filler_len % 4096 + 3 * 4096);
            let before = on_disk(&log.dir);

            assert!(matches!(
                fill_sized(&mut log.wal, 21..=60),
                Err(WalError::Full { .. })
            ));
            assert_eq!(
                on_disk(&log.dir),
                before,
                "new segments deleted, active cut back"
            );
            assert_eq!(log.wal.segment_count(), before.len());
            assert_eq!(all(&log.wal), sized_expected(1..=20));
            // A crash now would recover exactly the committed records.
            drop(log.wal);
            let mut wal = Wal::open(&log.dir, log.options).unwrap();
            assert_eq!(wal.recovery().torn_tail, None);
            assert_eq!(all(&wal), sized_expected(1..=20));

            // What fits still goes in, with the next LSNs.
            assert_eq!(fill_sized(&mut wal, 21..=22).unwrap(), Lsn(22));
            fs::remove_file(&log.filler).unwrap();
            assert_eq!(fill_sized(&mut wal, 23..=60).unwrap(), Lsn(60));
            drop(wal);
            let wal = Wal::open(&log.dir, log.options).unwrap();
            assert_eq!(all(&wal), sized_expected(1..=60));
        },
    );
}
