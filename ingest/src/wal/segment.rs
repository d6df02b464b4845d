//! Segment files: naming, header, creation and the recovery scan.
//!
//! A segment is named after the LSN of its first record, zero-padded so
//! that names sort in log order (`00000000000000000001.wal`), and starts
//! with a 16-byte header: the magic `FPWAL\0v1` and that LSN again (u64 LE).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::error::WalError;
use super::frame::{self, Invalid, Lsn, Read1};

/// Bytes of a segment header.
pub(crate) const SEGMENT_HEADER: u64 = 16;
/// First bytes of every segment file.
const MAGIC: &[u8; 8] = b"FPWAL\0v1";
/// File name extension of segments.
const EXTENSION: &str = "wal";

/// The file name of the segment whose first record is `base`.
pub(crate) fn file_name(base: Lsn) -> String {
    format!("{:020}.{EXTENSION}", base.0)
}

/// The base LSN a segment file name stands for; `None` if the name is not
/// that of a segment. `Some(Err)` for a `.wal` file with a malformed name.
pub(crate) fn parse_name(name: &str) -> Option<Result<Lsn, ()>> {
    let stem = name.strip_suffix(&format!(".{EXTENSION}"))?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(()));
    }
    Some(stem.parse().map(Lsn).map_err(|_| ()))
}

/// One segment as the log keeps it in memory.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub path: PathBuf,
    /// LSN of its first record (also when it has none yet).
    pub base: Lsn,
    /// One past its last record (`base` if it has none).
    pub next: Lsn,
    /// Bytes in the file that hold the header and whole, written records.
    pub len: u64,
}

impl Segment {
    /// Whether the segment holds at least one record.
    pub fn has_records(&self) -> bool {
        self.next > self.base
    }
}

/// Creates the segment file for `base` in `dir`, writes and syncs its
/// header, then syncs the directory so that the file itself survives a
/// crash. Fails if the file exists.
pub(crate) fn create(dir: &Path, base: Lsn) -> Result<(Segment, File), WalError> {
    let path = dir.join(file_name(base));
    let create = |source| WalError::CreateSegment {
        file: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(create)?;
    let mut header = [0u8; SEGMENT_HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&base.0.to_le_bytes());
    file.write_all(&header).map_err(create)?;
    file.sync_data().map_err(create)?;
    sync_dir(dir)?;
    let segment = Segment {
        path,
        base,
        next: base,
        len: SEGMENT_HEADER,
    };
    Ok((segment, file))
}

/// Makes the directory's entries (created, renamed or removed files)
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WalError::SyncDir {
            dir: dir.to_owned(),
            source,
        })
}

/// What the recovery scan found in one segment file.
#[derive(Debug)]
pub(crate) struct Scan {
    /// The intact part.
    pub segment: Segment,
    /// Length of the file.
    pub file_len: u64,
    /// Where the intact part ends if it is not the whole file, and why.
    pub damage: Option<Damage>,
}

/// Bytes after the intact part of a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Damage {
    /// Offset of the first byte that is not part of an intact record.
    pub offset: u64,
    pub kind: DamageKind,
}

/// Why a scan stopped before the end of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DamageKind {
    /// The file is shorter than a segment header.
    ShortHeader,
    /// The header is not that of a segment with the file's name.
    BadHeader,
    /// A frame is cut short, has a bad length or a bad checksum.
    Frame(Invalid),
    /// An intact frame carries an LSN out of sequence.
    Sequence { expected: Lsn, found: Lsn },
}

impl std::fmt::Display for DamageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ShortHeader => f.write_str("file shorter than the segment header"),
            Self::BadHeader => f.write_str("segment header does not match the file name"),
            Self::Frame(invalid) => invalid.fmt(f),
            Self::Sequence { expected, found } => {
                write!(f, "record has LSN {found} where {expected} was expected")
            }
        }
    }
}

/// Reads a whole segment file, checking its header and every frame, and
/// stops at the first thing that is not an intact record in sequence.
pub(crate) fn scan(path: &Path, base: Lsn, max_body: u32) -> Result<Scan, WalError> {
    let read_err = |source| WalError::Read {
        file: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let file_len = file.metadata().map_err(read_err)?.len();
    let mut segment = Segment {
        path: path.to_owned(),
        base,
        next: base,
        len: 0,
    };
    let damaged = |segment, kind| Scan {
        segment,
        file_len,
        damage: Some(Damage { offset: 0, kind }),
    };
    if file_len < SEGMENT_HEADER {
        return Ok(damaged(segment, DamageKind::ShortHeader));
    }
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut header = [0u8; SEGMENT_HEADER as usize];
    reader.read_exact(&mut header).map_err(read_err)?;
    if &header[..8] != MAGIC || header[8..] != base.0.to_le_bytes() {
        return Ok(damaged(segment, DamageKind::BadHeader));
    }
    segment.len = SEGMENT_HEADER;
    loop {
        let kind = match frame::read(&mut reader, max_body).map_err(read_err)? {
            Read1::End => break,
            Read1::Invalid(invalid) => DamageKind::Frame(invalid),
            Read1::Frame { lsn, body } if lsn == segment.next => {
                segment.next = lsn.next();
                segment.len += (frame::FRAME_HEADER + body.len()) as u64;
                continue;
            }
            Read1::Frame { lsn, .. } => DamageKind::Sequence {
                expected: segment.next,
                found: lsn,
            },
        };
        let offset = segment.len;
        return Ok(Scan {
            segment,
            file_len,
            damage: Some(Damage { offset, kind }),
        });
    }
    Ok(Scan {
        segment,
        file_len,
        damage: None,
    })
}

/// The segment files in `dir`, sorted by base LSN. Other files are left
/// alone; a `.wal` file whose name is not a segment name is an error.
pub(crate) fn list(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, WalError> {
    let list_err = |source| WalError::ListDir {
        dir: dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_name(name) {
            None => {}
            Some(Ok(base)) => found.push((base, entry.path())),
            Some(Err(())) => return Err(WalError::UnknownFile { file: entry.path() }),
        }
    }
    found.sort_by_key(|(base, _)| *base);
    Ok(found)
}

/// Cuts a file at `len` and syncs it.
pub(crate) fn cut(path: &Path, len: u64) -> Result<(), WalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(len)?;
            f.sync_all()
        })
        .map_err(|source: io::Error| WalError::RepairTail {
            file: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_log_order_and_parse_back() {
        assert_eq!(file_name(Lsn(1)), "00000000000000000001.wal");
        assert!(file_name(Lsn(9)) < file_name(Lsn(10)));
        assert_eq!(file_name(Lsn(u64::MAX)).len(), 24);
        for lsn in [1, 10, 12345, u64::MAX] {
            assert_eq!(parse_name(&file_name(Lsn(lsn))), Some(Ok(Lsn(lsn))));
        }
        assert_eq!(parse_name("notes.txt"), None);
        assert_eq!(parse_name("1.wal"), Some(Err(())));
        assert_eq!(parse_name("0000000000000000000x.wal"), Some(Err(())));
        assert_eq!(parse_name("99999999999999999999.wal"), Some(Err(())));
    }
}
