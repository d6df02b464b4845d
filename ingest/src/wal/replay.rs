//! Reading the log back: an iterator over the durable records from an LSN.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::error::WalError;
use super::frame::{self, Lsn, Read1};
use super::record::WalRecord;
use super::segment::{SEGMENT_HEADER, Segment};

/// The records of a log from some LSN on, in LSN order: each item is
/// `(lsn, record)`. Owns what it needs (it does not borrow the [`super::Wal`]),
/// so it can run on another thread; it sees the records that were durable
/// when it was made. Deleting segments (`truncate_before`) while it runs
/// makes it fail with a read error.
///
/// After an error the iterator ends.
#[derive(Debug)]
pub struct Replay {
    /// Segments still to read, in order, each with the bytes to read.
    segments: std::vec::IntoIter<Segment>,
    current: Option<Current>,
    from: Lsn,
    max_body: u32,
    failed: bool,
}

#[derive(Debug)]
struct Current {
    path: PathBuf,
    reader: BufReader<std::io::Take<File>>,
    offset: u64,
    next: Lsn,
    end: Lsn,
}

impl Replay {
    pub(crate) fn new(segments: Vec<Segment>, from: Lsn, max_body: u32) -> Self {
        Self {
            segments: segments.into_iter(),
            current: None,
            from,
            max_body,
            failed: false,
        }
    }

    fn open(&self, segment: Segment) -> Result<Current, WalError> {
        let read_err = |source| WalError::Read {
            file: segment.path.clone(),
            source,
        };
        let mut file = File::open(&segment.path).map_err(read_err)?;
        file.seek(SeekFrom::Start(SEGMENT_HEADER))
            .map_err(read_err)?;
        let take = file.take(segment.len.saturating_sub(SEGMENT_HEADER));
        Ok(Current {
            path: segment.path,
            reader: BufReader::with_capacity(256 * 1024, take),
            offset: SEGMENT_HEADER,
            next: segment.base,
            end: segment.next,
        })
    }

    fn next_record(&mut self) -> Result<Option<(Lsn, WalRecord)>, WalError> {
        loop {
            if self.current.is_none() {
                let Some(segment) = self.segments.next() else {
                    return Ok(None);
                };
                if segment.next <= self.from || !segment.has_records() {
                    continue;
                }
                self.current = Some(self.open(segment)?);
            }
            let current = self.current.as_mut().expect("opened above");
            if current.next >= current.end {
                self.current = None;
                continue;
            }
            let corrupt = |current: &Current, reason: String| WalError::Corrupt {
                file: current.path.clone(),
                offset: current.offset,
                reason,
            };
            let read = frame::read(&mut current.reader, self.max_body).map_err(|source| {
                WalError::Read {
                    file: current.path.clone(),
                    source,
                }
            })?;
            let (lsn, body) = match read {
                Read1::Frame { lsn, body } => (lsn, body),
                Read1::End => {
                    return Err(corrupt(
                        current,
                        format!("segment ends before LSN {}", current.next),
                    ));
                }
                Read1::Invalid(invalid) => return Err(corrupt(current, invalid.to_string())),
            };
            if lsn != current.next {
                let reason = format!("record has LSN {lsn} where {} was expected", current.next);
                return Err(corrupt(current, reason));
            }
            let frame_len = (frame::FRAME_HEADER + body.len()) as u64;
            current.next = lsn.next();
            if lsn < self.from {
                current.offset += frame_len;
                continue;
            }
            let record =
                WalRecord::decode(body).map_err(|reason| corrupt(current, reason.to_owned()))?;
            current.offset += frame_len;
            return Ok(Some((lsn, record)));
        }
    }
}

impl Iterator for Replay {
    type Item = Result<(Lsn, WalRecord), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_record() {
            Ok(item) => item.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
