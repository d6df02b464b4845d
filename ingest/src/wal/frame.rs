//! How records sit in a segment file: one frame each.
//!
//! ```text
//! crc32   u32 LE   CRC-32 (IEEE) of everything after it: len, lsn, body
//! len     u32 LE   body length
//! lsn     u64 LE   log sequence number
//! body    len bytes (see record.rs)
//! ```
//!
//! The checksum covers the length, so a flipped length is caught like a
//! flipped payload byte.

use std::fmt;
use std::io::{self, Read};

use bytes::Bytes;

use super::record::{BODY_FIXED, WalRecord};

/// Bytes of a frame before its body.
pub(crate) const FRAME_HEADER: usize = 4 + 4 + 8;

/// Log sequence number: the position of a record in the log. The first
/// record of a new log is 1; each append takes the next number. `Lsn(0)`
/// stands for "no record".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// "No record": below every real LSN.
    pub const ZERO: Lsn = Lsn(0);
    /// The first LSN of a new log.
    pub const FIRST: Lsn = Lsn(1);

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }

    /// The LSN before this one (`ZERO` stays `ZERO`).
    pub fn prev(self) -> Lsn {
        Lsn(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Appends the frame of `record` at `lsn` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, lsn: Lsn, record: &WalRecord) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]); // crc, filled in below
    out.extend_from_slice(&(record.encoded_len() as u32).to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    record.encode(out);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The result of reading one frame.
#[derive(Debug)]
pub(crate) enum Read1 {
    /// A frame whose checksum matches.
    Frame { lsn: Lsn, body: Bytes },
    /// Clean end of data, exactly at a frame boundary.
    End,
    /// Something that is not a whole, intact frame.
    Invalid(Invalid),
}

/// Why the bytes at an offset are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// The data ends inside the frame header or body.
    Truncated,
    /// The length field is below the smallest body or above the limit.
    BadLength(u32),
    /// The checksum does not match.
    Checksum,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Truncated => f.write_str("frame cut short by the end of the file"),
            Invalid::BadLength(len) => write!(f, "implausible frame length {len}"),
            Invalid::Checksum => f.write_str("frame checksum mismatch"),
        }
    }
}

/// Reads the frame at the reader's position. `max_body` bounds the length
/// field, so a garbage length cannot make us allocate gigabytes.
pub(crate) fn read(reader: &mut impl Read, max_body: u32) -> io::Result<Read1> {
    let mut header = [0u8; FRAME_HEADER];
    match read_full(reader, &mut header)? {
        0 => return Ok(Read1::End),
        n if n < FRAME_HEADER => return Ok(Read1::Invalid(Invalid::Truncated)),
        _ => {}
    }
    let crc = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let lsn = Lsn(u64::from_le_bytes(header[8..].try_into().expect("8 bytes")));
    if (len as usize) < BODY_FIXED || len > max_body {
        return Ok(Read1::Invalid(Invalid::BadLength(len)));
    }
    let mut body = vec![0u8; len as usize];
    if read_full(reader, &mut body)? < body.len() {
        return Ok(Read1::Invalid(Invalid::Truncated));
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[4..]);
    hasher.update(&body);
    if hasher.finalize() != crc {
        return Ok(Read1::Invalid(Invalid::Checksum));
    }
    Ok(Read1::Frame {
        lsn,
        body: Bytes::from(body),
    })
}

/// Reads until `buf` is full or the data ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> WalRecord {
        WalRecord {
            topic: "fleet/c/s/d/telemetry".into(),
            payload: Bytes::from_static(b"payload"),
            received_ms: 42,
        }
    }

    fn framed() -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, Lsn(7), &record());
        out
    }

    #[test]
    fn frame_round_trips() {
        let bytes = framed();
        assert_eq!(bytes.len(), FRAME_HEADER + record().encoded_len());
        let mut reader = &bytes[..];
        match read(&mut reader, 1024).unwrap() {
            Read1::Frame { lsn, body } => {
                assert_eq!(lsn, Lsn(7));
                assert_eq!(WalRecord::decode(body).unwrap(), record());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(read(&mut reader, 1024).unwrap(), Read1::End));
    }

    #[test]
    fn every_cut_is_truncated() {
        let bytes = framed();
        for cut in 1..bytes.len() {
            let got = read(&mut &bytes[..cut], 1024).unwrap();
            assert!(
                matches!(got, Read1::Invalid(Invalid::Truncated)),
                "cut at {cut}: {got:?}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = framed();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let got = read(&mut &flipped[..], 1024).unwrap();
            assert!(matches!(got, Read1::Invalid(_)), "bit {bit}: {got:?}");
        }
    }

    #[test]
    fn lengths_outside_the_limits_are_refused_before_reading() {
        let bytes = framed();
        let got = read(&mut &bytes[..], 8).unwrap();
        assert!(matches!(got, Read1::Invalid(Invalid::BadLength(_))));
        let zeros = [0u8; 64];
        let got = read(&mut &zeros[..], 1024).unwrap();
        assert!(matches!(got, Read1::Invalid(Invalid::BadLength(0))));
    }
}
