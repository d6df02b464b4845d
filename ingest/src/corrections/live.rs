//! Live batches on their way to the archive, encoded where the intake hands
//! them to the engine. The engine takes the batches themselves; a copy of
//! each for the archive, made on the intake and dropped on the corrections
//! thread, cost more CPU than archiving it (BENCHMARKS.md, section 27).
//! Encoding them there costs one buffer per group, and the archive writes
//! the bytes as they are.

use fleetpulse_engine::{DeviceBatch, EventTime, Id};

use super::archive::key_hash;

/// A group of live batches, encoded: each batch as bincode encodes it, one
/// after the other, and what the archive files it under.
#[derive(Debug, Default)]
pub struct LiveBatches {
    bytes: Vec<u8>,
    index: Vec<Filed>,
}

/// What the archive files one encoded batch under.
#[derive(Debug)]
pub(super) struct Filed {
    pub(super) customer: Id,
    pub(super) device: Id,
    pub(super) first_at: EventTime,
    pub(super) last_at: EventTime,
    /// [`key_hash`]: what tells a redelivery.
    pub(super) key: u64,
    /// It came on a backfill topic (history taken in live, its newest
    /// hours): not the customer's live telemetry.
    pub(super) backfill: bool,
    /// Where its encoding ends in the group's bytes.
    end: usize,
}

/// Bytes an encoded reading takes at most but for its operator's name (a
/// first guess of the buffer's size).
const SAMPLE_BYTES: usize = 96;

impl LiveBatches {
    /// Encodes `batches` (the customer, site, device and sequence of each,
    /// and its readings), all from telemetry topics.
    pub fn encode(batches: &[DeviceBatch]) -> Self {
        Self::encode_from(batches, |_| false)
    }

    /// [`Self::encode`]; `backfill(i)`: batch `i` came on a backfill topic.
    pub fn encode_from(batches: &[DeviceBatch], backfill: impl Fn(usize) -> bool) -> Self {
        let samples: usize = batches.iter().map(|b| b.samples.len()).sum();
        let mut bytes = Vec::with_capacity(samples * SAMPLE_BYTES + batches.len() * 64);
        let mut index = Vec::with_capacity(batches.len());
        for (i, b) in batches.iter().enumerate() {
            bincode::serialize_into(&mut bytes, b).expect("a batch serialises");
            index.push(Filed {
                customer: b.customer.clone(),
                device: b.device.clone(),
                first_at: b.first_at(),
                last_at: b.last_at(),
                key: key_hash(b),
                backfill: backfill(i),
                end: bytes.len(),
            });
        }
        Self { bytes, index }
    }

    /// Batches in the group.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the group holds none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Each batch's filing and encoding.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Filed, &[u8])> {
        let starts = std::iter::once(0).chain(self.index.iter().map(|f| f.end));
        (self.index.iter().zip(starts)).map(|(f, start)| (f, &self.bytes[start..f.end]))
    }

    /// The latest reading of the group.
    pub fn newest(&self) -> EventTime {
        self.index.iter().map(|f| f.last_at).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_engine::Sample;

    #[test]
    fn each_batch_reads_back_from_its_bytes_and_is_filed_by_its_readings() {
        let batch = |device: &str, sequence: u64, at: &[u64]| DeviceBatch {
            customer: "acme".into(),
            site: "north".into(),
            device: device.into(),
            unit_epoch: 7,
            sequence,
            samples: (at.iter())
                .map(|at| Sample {
                    at: *at,
                    operator: Some("ana".into()),
                    ..Sample::default()
                })
                .collect(),
        };
        let batches = vec![
            batch("a", 1, &[10, 20]),
            batch("b", 9, &[5]),
            batch("a", 2, &[30]),
        ];
        let live = LiveBatches::encode(&batches);
        assert_eq!(live.len(), 3);
        assert_eq!(live.newest(), 30);
        for ((filed, bytes), b) in live.iter().zip(&batches) {
            let back: DeviceBatch = bincode::deserialize(bytes).unwrap();
            assert_eq!(&back, b);
            assert_eq!((filed.first_at, filed.last_at), (b.first_at(), b.last_at()));
            assert_eq!((&filed.customer, filed.key), (&b.customer, key_hash(b)));
        }
        assert!(LiveBatches::encode(&[]).is_empty());
    }
}
