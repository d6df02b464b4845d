//! Dead letters: every message ingest refuses is kept for inspection, with
//! its topic, the reason label, the detail and the start of its payload, as
//! one JSON object per line:
//!
//! ```json
//! {"received_ms":1767571200123,"reason":"decode","topic":"fleet/c/s/d/telemetry","detail":"payload does not decode ...","payload_bytes":3,"payload_hex":"0aff01"}
//! ```
//!
//! The store is bounded so that a flood of bad messages cannot fill the
//! disk: once the current file would grow past
//! [`DeadLetterOptions::max_file_bytes`], it is renamed to `<file>.1`
//! (replacing the previous one) and a new file is started. At most two files
//! exist, so the disk used stays below about twice the bound. Topic and
//! detail are cut to a bounded length and only a prefix of the payload is
//! kept, so one line is bounded too. What a rotation drops is the oldest
//! letters; the rejection counters keep counting every message. A message
//! the two files hold whole already, refused again for the same reason (a
//! replay that the correction horizon still refuses), is not written again:
//! replays do not grow the file until the rotation drops the first copies.
//!
//! Lines go through a buffer: [`DeadLetterStore::flush`] hands them to the
//! OS, [`DeadLetterStore::sync`] makes them durable (for a caller that
//! acknowledges a refused message only once its dead letter is on disk).
//! What the OS does not take (a full disk) stays in the buffer, to the
//! byte: a retry goes on where the write stopped, so no letter is lost,
//! cut or written twice.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::metrics::{MessageRejected, RejectReason};

/// Bounds of a dead-letter store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterOptions {
    /// The current file is rotated before it would grow past this many
    /// bytes. Disk use stays below about twice this.
    pub max_file_bytes: u64,
    /// Payload bytes kept per letter (hex-encoded, so twice as many
    /// characters).
    pub payload_prefix_bytes: usize,
    /// Payload bytes kept per letter whose reason may be replayed
    /// ([`RejectReason::replayable`]): the whole payload up to this, so
    /// `fleetpulse replay` can send it again.
    pub replayable_payload_bytes: usize,
    /// Topic bytes kept per letter (MQTT allows 65535).
    pub max_topic_bytes: usize,
    /// Detail bytes kept per letter.
    pub max_detail_bytes: usize,
}

impl Default for DeadLetterOptions {
    fn default() -> Self {
        Self {
            max_file_bytes: 64 * 1024 * 1024,
            payload_prefix_bytes: 256,
            replayable_payload_bytes: 1024 * 1024,
            max_topic_bytes: 512,
            max_detail_bytes: 1024,
        }
    }
}

/// A refused message, as the pipeline hands it over.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Topic it arrived on.
    pub topic: &'a str,
    /// Why it was refused.
    pub reason: RejectReason,
    /// Details for the operator.
    pub detail: &'a str,
    /// Wall-clock receive time, ms since the Unix epoch.
    pub received_ms: u64,
    /// The whole payload (only a prefix is kept).
    pub payload: &'a [u8],
}

impl<'a> DeadLetter<'a> {
    /// The refusal as the counters and the log take it.
    pub fn rejected(&self) -> MessageRejected<'a> {
        MessageRejected {
            topic: self.topic,
            reason: self.reason,
            detail: self.detail,
        }
    }
}

/// One line of a dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    /// Wall-clock receive time, ms since the Unix epoch.
    pub received_ms: u64,
    /// Reason label, as in the rejection counters (`decode`, `too_late`, ..).
    pub reason: String,
    /// Topic, cut to the bound (ending in `…` when cut).
    pub topic: String,
    /// Detail, cut to the bound (ending in `…` when cut).
    pub detail: String,
    /// Size of the whole payload.
    pub payload_bytes: usize,
    /// The first payload bytes, lower-case hex.
    pub payload_hex: String,
}

impl DeadLetterRecord {
    /// The whole payload, when the letter kept all of it (and its topic
    /// whole): what `fleetpulse replay` can send again.
    pub fn payload(&self) -> Option<Vec<u8>> {
        if self.payload_hex.len() != 2 * self.payload_bytes || self.topic.ends_with('…') {
            return None;
        }
        (0..self.payload_bytes)
            .map(|i| u8::from_str_radix(self.payload_hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect()
    }
}

/// A dead-letter file could not be opened, written or rotated.
#[derive(Debug, Error)]
pub enum DeadLetterError {
    /// Opening (or creating) the file failed.
    #[error("cannot open dead-letter file {file}: {source}")]
    Open {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing, flushing or syncing failed.
    #[error("cannot write dead-letter file {file}: {source}")]
    Write {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Renaming the full file or starting a new one failed.
    #[error("cannot rotate dead-letter file {file}: {source}")]
    Rotate {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Reading a file back failed.
    #[error("cannot read dead-letter file {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The bounded, rotating dead-letter file.
#[derive(Debug)]
pub struct DeadLetterStore {
    path: PathBuf,
    previous: PathBuf,
    options: DeadLetterOptions,
    file: File,
    /// Lines recorded and not yet taken by the OS.
    pending: Vec<u8>,
    /// Bytes in the current file, buffered ones included.
    len: u64,
    previous_len: u64,
    written: u64,
    rotations: u64,
    line: String,
    /// [`letter_key`]s of the whole-payload letters the current file and
    /// the previous one hold: a message refused again for the same reason
    /// (a replay the horizon still refuses) is kept once, not appended at
    /// each replay until the rotation drops the first copies.
    held: [std::collections::HashSet<u64>; 2],
    /// Letters not written because those files hold them already.
    already_held: u64,
}

impl DeadLetterStore {
    /// Opens (or creates) the store at `path`; the previous file is
    /// `<path>.1`. Appends to what is there. The parent directory is created
    /// if needed.
    pub fn open(
        path: impl Into<PathBuf>,
        options: DeadLetterOptions,
    ) -> Result<Self, DeadLetterError> {
        let path = path.into();
        let open_err = |source| DeadLetterError::Open {
            file: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(open_err)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(open_err)?;
        let mut len = file.metadata().map_err(open_err)?.len();
        if len > 0 {
            // A crash may have cut the last line: end it, so the next letter
            // starts on a line of its own.
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1)).map_err(open_err)?;
            file.read_exact(&mut last).map_err(open_err)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(open_err)?;
                len += 1;
            }
        }
        let previous = previous_path(&path);
        let previous_len = fs::metadata(&previous).map(|m| m.len()).unwrap_or(0);
        let held = [held_keys(&path)?, held_keys(&previous)?];
        Ok(Self {
            path,
            previous,
            options,
            file,
            pending: Vec::new(),
            len,
            previous_len,
            written: 0,
            rotations: 0,
            line: String::new(),
            held,
            already_held: 0,
        })
    }

    /// Adds one letter, rotating first if the current file would grow past
    /// the bound.
    pub fn record(&mut self, letter: &DeadLetter<'_>) -> Result<(), DeadLetterError> {
        let keep = if letter.reason.replayable() {
            self.options.replayable_payload_bytes
        } else {
            self.options.payload_prefix_bytes
        };
        let prefix = &letter.payload[..letter.payload.len().min(keep)];
        let mut payload_hex = String::with_capacity(prefix.len() * 2);
        for b in prefix {
            let _ = write!(payload_hex, "{b:02x}");
        }
        let whole = prefix.len() == letter.payload.len() && letter.reason.replayable();
        let key = whole.then(|| letter_key(letter.reason.as_str(), letter.topic, &payload_hex));
        if key.is_some_and(|k| self.held.iter().any(|h| h.contains(&k))) {
            self.already_held += 1;
            return Ok(());
        }
        let record = DeadLetterRecord {
            received_ms: letter.received_ms,
            reason: letter.reason.as_str().to_owned(),
            topic: cut(letter.topic, self.options.max_topic_bytes),
            detail: cut(letter.detail, self.options.max_detail_bytes),
            payload_bytes: letter.payload.len(),
            payload_hex,
        };
        self.line.clear();
        self.line
            .push_str(&serde_json::to_string(&record).expect("a record serializes"));
        self.line.push('\n');
        let line_len = self.line.len() as u64;
        let max = self.options.max_file_bytes;
        let full = |len: u64| len > 0 && len + line_len > max;
        if full(self.len) {
            // A full file removed meanwhile is full no longer, and rotating
            // the new one would replace the previous file's letters.
            self.reopen_if_removed()?;
            if full(self.len) {
                self.rotate()?;
            }
        }
        if self.pending.len() as u64 > max {
            // The OS takes nothing (a full disk): bounded like the file.
            return Err(self.write_err(io::Error::other(
                "as many letters as the file holds wait for the disk",
            )));
        }
        self.pending.extend_from_slice(self.line.as_bytes());
        if self.pending.len() >= PENDING_WRITTEN_AT {
            self.write_pending()?;
        }
        self.len += line_len;
        self.written += 1;
        if let Some(key) = key {
            self.held[0].insert(key);
        }
        Ok(())
    }

    /// Letters not written since the store was opened because it held the
    /// same message, refused for the same reason, already.
    pub fn already_held(&self) -> u64 {
        self.already_held
    }

    /// Hands buffered letters to the OS.
    pub fn flush(&mut self) -> Result<(), DeadLetterError> {
        self.reopen_if_removed()?;
        self.write_pending()
    }

    /// Writes the pending lines; what the OS does not take stays pending.
    fn write_pending(&mut self) -> Result<(), DeadLetterError> {
        while !self.pending.is_empty() {
            match self.file.write(&self.pending) {
                Ok(0) => return Err(self.write_err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.write_err(e)),
            }
        }
        Ok(())
    }

    fn write_err(&self, source: io::Error) -> DeadLetterError {
        DeadLetterError::Write {
            file: self.path.clone(),
            source,
        }
    }

    /// The file at the path, if it is no longer the one being written
    /// (removed once replayed, or moved away, while the service runs):
    /// every later letter, often the only copy of refused data, would go
    /// with it. Says so and starts a new file there with the letters not
    /// handed to the OS yet.
    fn reopen_if_removed(&mut self) -> Result<(), DeadLetterError> {
        let open = self.file.metadata().ok();
        let open = open.as_ref().map(crate::files::id_of);
        if open.is_some() && open == crate::files::id(&self.path) {
            return Ok(());
        }
        tracing::error!(
            file = %self.path.display(),
            "the dead-letter file was removed or replaced while the service wrote to it: a new one \
             is started there (the letters written before went with the old one)"
        );
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|source| DeadLetterError::Open {
                file: self.path.clone(),
                source,
            })?;
        let len = file.metadata().map_or(0, |m| m.len());
        self.file = file;
        self.len = len + self.pending.len() as u64;
        Ok(())
    }

    /// Flushes and syncs the current file: every letter recorded so far is
    /// durable.
    pub fn sync(&mut self) -> Result<(), DeadLetterError> {
        self.flush()?;
        self.file
            .sync_data()
            .map_err(|source| self.write_err(source))
    }

    /// Bytes of both files, buffered letters included.
    pub fn bytes(&self) -> u64 {
        self.len + self.previous_len
    }

    /// Letters recorded since the store was opened.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Rotations since the store was opened.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The previous file (`<path>.1`), which may not exist.
    pub fn previous_path(&self) -> &Path {
        &self.previous
    }

    /// Flushes, then reads back every letter of both files, oldest first.
    pub fn read_all(&mut self) -> Result<Vec<DeadLetterRecord>, DeadLetterError> {
        self.flush()?;
        let mut records = read_file(&self.previous)?;
        records.extend(read_file(&self.path)?);
        Ok(records)
    }

    fn rotate(&mut self) -> Result<(), DeadLetterError> {
        self.sync()?;
        let file_path = self.path.clone();
        let rotate_err = |source| DeadLetterError::Rotate {
            file: file_path.clone(),
            source,
        };
        fs::rename(&self.path, &self.previous).map_err(rotate_err)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(rotate_err)?;
        // Nothing is pending after sync().
        self.file = file;
        self.previous_len = self.len;
        self.len = 0;
        self.rotations += 1;
        self.held[1] = std::mem::take(&mut self.held[0]);
        tracing::info!(
            file = %self.path.display(),
            previous = %self.previous.display(),
            "dead-letter file rotated"
        );
        Ok(())
    }
}

/// Pending bytes written out as a letter is recorded, short of a flush: a
/// group of big letters is not held whole in memory.
const PENDING_WRITTEN_AT: usize = 64 * 1024;

impl Drop for DeadLetterStore {
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

/// The letters of one file; a missing file has none, and lines that do not
/// parse (a line cut by a crash) are skipped.
pub fn read_file(path: &Path) -> Result<Vec<DeadLetterRecord>, DeadLetterError> {
    read_file_counting(path).map(|(records, _)| records)
}

/// [`read_file`], with the number of lines skipped: a file of something
/// else has only those.
pub fn read_file_counting(path: &Path) -> Result<(Vec<DeadLetterRecord>, usize), DeadLetterError> {
    let read_err = |source| DeadLetterError::Read {
        file: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(read_err(e)),
    };
    let mut records = Vec::new();
    let mut skipped = 0;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(read_err)?;
        match serde_json::from_str(&line) {
            Ok(record) => records.push(record),
            Err(_) => skipped += usize::from(!line.trim().is_empty()),
        }
    }
    Ok((records, skipped))
}

/// What identifies a letter kept whole: its reason, topic and payload.
fn letter_key(reason: &str, topic: &str, payload_hex: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (reason, topic, payload_hex).hash(&mut hasher);
    hasher.finish()
}

/// The [`letter_key`]s of the whole-payload letters of `path` (none when it
/// is missing), read a line at a time.
fn held_keys(path: &Path) -> Result<std::collections::HashSet<u64>, DeadLetterError> {
    let mut keys = std::collections::HashSet::new();
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(keys),
        Err(source) => {
            return Err(DeadLetterError::Read {
                file: path.to_owned(),
                source,
            });
        }
    };
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|source| DeadLetterError::Read {
            file: path.to_owned(),
            source,
        })?;
        if let Ok(r) = serde_json::from_str::<DeadLetterRecord>(&line)
            && r.payload_hex.len() == 2 * r.payload_bytes
        {
            keys.insert(letter_key(&r.reason, &r.topic, &r.payload_hex));
        }
    }
    Ok(keys)
}

/// The rotated file beside `path` (`{path}.1`), which holds older letters.
pub fn previous_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// `s` cut to at most `max` bytes at a character boundary, with `…` added
/// when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter<'a>(topic: &'a str, payload: &'a [u8], at: u64) -> DeadLetter<'a> {
        DeadLetter {
            topic,
            reason: RejectReason::Decode,
            detail: "payload does not decode",
            received_ms: at,
            payload,
        }
    }

    #[test]
    fn letters_round_trip_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl/dead-letters.jsonl");
        let mut store = DeadLetterStore::open(&path, DeadLetterOptions::default()).unwrap();
        store
            .record(&letter("fleet/c/s/d/telemetry", b"\x0a\xff\x01", 5))
            .unwrap();
        store
            .record(&DeadLetter {
                reason: RejectReason::TooLate,
                detail: "batch 3 of device `d` is \"late\"\nvery",
                ..letter("fleet/c/s/d/telemetry", b"", 6)
            })
            .unwrap();
        store.sync().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.starts_with(
            r#"{"received_ms":5,"reason":"decode","topic":"fleet/c/s/d/telemetry","detail":"payload does not decode","payload_bytes":3,"payload_hex":"0aff01"}"#
        ));
        let records = store.read_all().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].reason, "too_late");
        assert_eq!(records[1].detail, "batch 3 of device `d` is \"late\"\nvery");
        assert_eq!(store.bytes(), text.len() as u64);
        assert_eq!(store.written(), 2);
    }

    #[test]
    fn payload_topic_and_detail_are_cut_to_their_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let options = DeadLetterOptions {
            payload_prefix_bytes: 4,
            max_topic_bytes: 10,
            max_detail_bytes: 5,
            ..DeadLetterOptions::default()
        };
        let mut store = DeadLetterStore::open(dir.path().join("dl.jsonl"), options).unwrap();
        let payload = vec![0xabu8; 100_000];
        let topic = "ü".repeat(40_000);
        store
            .record(&DeadLetter {
                detail: "äääää",
                ..letter(&topic, &payload, 1)
            })
            .unwrap();
        let records = store.read_all().unwrap();
        let r = &records[0];
        assert_eq!(r.payload_bytes, 100_000);
        assert_eq!(r.payload_hex, "abababab");
        assert_eq!(r.topic, format!("{}…", "ü".repeat(5)));
        assert_eq!(r.detail, "ää…");
        assert!(store.bytes() < 200);
    }

    /// A store at `dl.jsonl` in a fresh directory that rotates past
    /// `max_file_bytes`.
    fn rotating_store(max_file_bytes: u64) -> (tempfile::TempDir, PathBuf, DeadLetterStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let options = DeadLetterOptions {
            max_file_bytes,
            ..DeadLetterOptions::default()
        };
        let store = DeadLetterStore::open(&path, options).unwrap();
        (dir, path, store)
    }

    /// A message refused again for the same reason (a replay the horizon
    /// still refuses) is kept once, in this run and after a reopen, while
    /// either file holds it; a rotation keeps the first copies, since no
    /// second copy pushed them out. Refused for another reason, or another
    /// message, it is written.
    #[test]
    fn a_message_refused_again_for_the_same_reason_is_kept_once() {
        let (_dir, path, mut store) = rotating_store(4096);
        let late = |payload: &'static [u8], at| DeadLetter {
            reason: RejectReason::TooLate,
            ..letter("fleet/c/s/d/telemetry", payload, at)
        };
        for round in 0..3 {
            store.record(&late(b"first", round)).unwrap();
            store.record(&late(b"second", round)).unwrap();
        }
        store
            .record(&DeadLetter {
                reason: RejectReason::UnknownCustomer,
                ..late(b"first", 9)
            })
            .unwrap();
        assert_eq!((store.written(), store.already_held()), (3, 4));
        store.sync().unwrap();
        drop(store);
        let options = DeadLetterOptions {
            max_file_bytes: 4096,
            ..DeadLetterOptions::default()
        };
        let mut store = DeadLetterStore::open(&path, options).unwrap();
        store.record(&late(b"second", 10)).unwrap();
        assert_eq!(
            store.already_held(),
            1,
            "held in the file before the reopen"
        );
        // Rotated out of the current file into the previous: still held.
        let filler = vec![1u8; 1500];
        for at in 0..8 {
            store
                .record(&letter("fleet/c/s/d/telemetry", &filler, 20 + at))
                .unwrap();
        }
        assert_eq!(store.rotations(), 1);
        store.record(&late(b"first", 30)).unwrap();
        assert_eq!(store.already_held(), 2);
        let kept: Vec<u64> = store
            .read_all()
            .unwrap()
            .iter()
            .map(|r| r.received_ms)
            .collect();
        let mut want = vec![0, 0, 9];
        want.extend(20..28);
        assert_eq!(kept, want);
    }

    #[test]
    fn a_flood_rotates_and_stays_bounded() {
        let (dir, path, mut store) = rotating_store(4096);
        let payload = vec![7u8; 1000];
        for i in 0..1000 {
            store
                .record(&letter("fleet/c/s/d/telemetry", &payload, i))
                .unwrap();
            assert!(store.bytes() <= 2 * 4096, "after {i}: {}", store.bytes());
        }
        store.flush().unwrap();
        assert!(store.rotations() > 100);
        let mut files: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, ["dl.jsonl", "dl.jsonl.1"]);
        let on_disk =
            fs::metadata(&path).unwrap().len() + fs::metadata(store.previous_path()).unwrap().len();
        assert_eq!(on_disk, store.bytes());
        assert!(fs::metadata(&path).unwrap().len() <= 4096);
        // The newest letters are kept, in order, ending with the last one.
        let records = store.read_all().unwrap();
        assert!(!records.is_empty());
        let times: Vec<u64> = records.iter().map(|r| r.received_ms).collect();
        assert_eq!(*times.last().unwrap(), 999);
        assert!(times.windows(2).all(|w| w[1] == w[0] + 1), "{times:?}");
    }

    #[test]
    fn reopening_appends_and_ends_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let mut store = DeadLetterStore::open(&path, DeadLetterOptions::default()).unwrap();
        store.record(&letter("t1", b"a", 1)).unwrap();
        store.sync().unwrap();
        drop(store);
        // A crash in the middle of the next line.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"received_ms":2,"rea"#)
            .unwrap();
        let mut store = DeadLetterStore::open(&path, DeadLetterOptions::default()).unwrap();
        store.record(&letter("t3", b"c", 3)).unwrap();
        let records = store.read_all().unwrap();
        let times: Vec<u64> = records.iter().map(|r| r.received_ms).collect();
        assert_eq!(times, [1, 3]);
        assert_eq!(store.bytes(), fs::metadata(&path).unwrap().len());
    }

    /// The disk takes nothing (the path turned into `/dev/full`): every
    /// flush fails, the letters stay buffered, and once there is room (a
    /// plain file at the path again) they are written whole, once, in order.
    #[test]
    fn letters_the_disk_does_not_take_stay_buffered_and_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let mut store = DeadLetterStore::open(&path, DeadLetterOptions::default()).unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        for at in 1..=3 {
            store.record(&letter("t", b"x", at)).unwrap();
        }
        assert!(store.flush().is_err());
        assert!(store.sync().is_err());
        store.record(&letter("t", b"x", 4)).unwrap();
        assert!(store.sync().is_err());
        fs::remove_file(&path).unwrap();
        store.sync().unwrap();
        let times: Vec<u64> = (read_file(&path).unwrap().iter())
            .map(|r| r.received_ms)
            .collect();
        assert_eq!(times, [1, 2, 3, 4]);
        assert_eq!(store.bytes(), fs::metadata(&path).unwrap().len());
    }

    /// The file removed while the store writes to it (deleted once
    /// replayed): the next flush starts a new file at the path, with the
    /// letters recorded since, instead of writing them into the removed one.
    #[test]
    fn a_file_removed_while_written_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead-letters.jsonl");
        let mut store = DeadLetterStore::open(&path, DeadLetterOptions::default()).unwrap();
        store
            .record(&letter("fleet/a/s/d/telemetry", b"a", 1))
            .unwrap();
        store.sync().unwrap();
        fs::remove_file(&path).unwrap();
        store
            .record(&letter("fleet/a/s/d/telemetry", b"b", 2))
            .unwrap();
        store.sync().unwrap();
        store
            .record(&letter("fleet/a/s/d/telemetry", b"c", 3))
            .unwrap();
        store.flush().unwrap();
        let read: Vec<u64> = (read_file(&path).unwrap().iter())
            .map(|l| l.received_ms)
            .collect();
        assert_eq!(read, [2, 3]);
        assert_eq!(store.bytes(), fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn an_oversized_single_letter_still_goes_into_a_fresh_file() {
        let (_dir, _path, mut store) = rotating_store(50);
        store.record(&letter("t", b"x", 1)).unwrap();
        store.record(&letter("t", b"y", 2)).unwrap();
        let records = store.read_all().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(store.rotations(), 1);
    }
}
