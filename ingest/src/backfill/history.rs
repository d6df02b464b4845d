//! A history's batches, checked one at a time as they are read and put in
//! event-time order on disk: a year of a fleet does not fit in memory (held
//! decoded, 2.6 million readings took 683 MB), so the batches are sorted in
//! runs of [`RUN_BATCHES`] and merged from files in the temporary directory
//! (`TMPDIR`) as they are published. What the summary and the refusal check
//! need is kept per customer and device, not per batch.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use fleetpulse_proto::{Limits, TopicIds, backfill_topic, decode_and_validate, v1};
use prost::Message as _;

use super::spill::{self, Sorter, Spilled, get_bytes, put_bytes, take};

/// Batches sorted in memory before a run goes to disk: with an hour of
/// one-a-minute readings a batch (about 3 KB), some 30 MB.
pub const RUN_BATCHES: usize = 10_000;

/// One batch to publish, checked as the service will, with what orders it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Its first reading.
    pub first_at: i64,
    unit_epoch: u64,
    sequence: u64,
    /// Its place among the batches read: equal keys keep the files' order.
    ordinal: u64,
    /// Its backfill topic.
    topic: String,
    /// Encoded once: validated, then published.
    payload: Vec<u8>,
}

impl Recorded {
    /// `batch`, if it passes the service's validation.
    fn checked(batch: &v1::TelemetryBatch, limits: &Limits) -> anyhow::Result<Self> {
        let topic = backfill_topic(&batch.customer_id, &batch.site_id, &batch.device_id);
        let payload = batch.encode_to_vec();
        decode_and_validate(&TopicIds::parse(&topic)?, &payload, limits)?;
        let first_at = (batch.samples.iter().map(|s| s.event_time_ms))
            .min()
            .unwrap_or(0);
        Ok(Self {
            first_at,
            unit_epoch: batch.unit_epoch,
            sequence: batch.sequence,
            ordinal: 0,
            topic,
            payload,
        })
    }

    /// The batch it carries.
    pub fn batch(&self) -> v1::TelemetryBatch {
        v1::TelemetryBatch::decode(&self.payload[..]).expect("a checked batch decodes")
    }

    /// Its backfill topic and payload.
    pub fn into_message(self) -> (String, Vec<u8>) {
        (self.topic, self.payload)
    }

    /// Event-time order; each device's batches in its order.
    fn order(a: &Self, b: &Self) -> Ordering {
        let key = |r: &Self| (r.first_at, r.unit_epoch, r.sequence, r.ordinal);
        key(a).cmp(&key(b))
    }
}

/// A sorted run on disk: the fixed fields, then the topic and payload,
/// each after its length.
impl Spilled for Recorded {
    fn encode(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.first_at.to_le_bytes())?;
        for n in [self.unit_epoch, self.sequence, self.ordinal] {
            out.write_all(&n.to_le_bytes())?;
        }
        put_bytes(out, self.topic.as_bytes())?;
        put_bytes(out, &self.payload)
    }

    fn decode(input: &mut impl Read) -> io::Result<Option<Self>> {
        let Some(first_at) = spill::take_first(input)? else {
            return Ok(None);
        };
        let first_at = i64::from_le_bytes(first_at);
        let [unit_epoch, sequence, ordinal] = [(); 3].map(|()| take(input).map(u64::from_le_bytes));
        let topic = String::from_utf8(get_bytes(input)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some(Self {
            first_at,
            unit_epoch: unit_epoch?,
            sequence: sequence?,
            ordinal: ordinal?,
            topic,
            payload: get_bytes(input)?,
        }))
    }
}

/// A customer's earliest reading in the history, and its device.
#[derive(Debug, Clone)]
pub struct Earliest {
    pub at: i64,
    pub device: String,
}

/// What a history holds, for the summary line and the refusal check.
#[derive(Debug, Default)]
pub struct Summary {
    /// Batches.
    pub batches: u64,
    /// Each customer's earliest reading.
    pub customers: BTreeMap<String, Earliest>,
    /// Devices, by customer and id.
    pub devices: HashSet<(String, String)>,
    /// First and last reading.
    pub period: Option<(i64, i64)>,
}

impl Summary {
    fn add(&mut self, batch: &v1::TelemetryBatch, first_at: i64) {
        self.batches += 1;
        let earliest = Earliest {
            at: first_at,
            device: batch.device_id.clone(),
        };
        (self.customers)
            .entry(batch.customer_id.clone())
            .and_modify(|e| {
                if first_at < e.at {
                    *e = earliest.clone();
                }
            })
            .or_insert(earliest);
        (self.devices).insert((batch.customer_id.clone(), batch.device_id.clone()));
        let last_at = (batch.samples.iter().map(|s| s.event_time_ms))
            .max()
            .unwrap_or(first_at);
        self.period = Some(match self.period {
            Some((from, to)) => (from.min(first_at), to.max(last_at)),
            None => (first_at, last_at),
        });
    }
}

/// The batches read so far, to be published in event-time order.
pub struct History {
    sorter: Sorter<Recorded>,
    /// Only these customers' batches (every one when empty).
    only: Vec<String>,
    limits: Limits,
    summary: Summary,
}

impl History {
    pub fn new(only: Vec<String>, limits: Limits) -> Self {
        Self::with_run(only, limits, RUN_BATCHES)
    }

    /// With runs of `run` batches (tests make them small).
    pub fn with_run(only: Vec<String>, limits: Limits, run: usize) -> Self {
        let sorter = Sorter::new(run, Recorded::order);
        Self {
            sorter,
            only,
            limits,
            summary: Summary::default(),
        }
    }

    /// Checks `batch` as the service will and keeps it, unless it is
    /// another customer's than those asked for.
    pub fn push(&mut self, batch: &v1::TelemetryBatch) -> anyhow::Result<()> {
        if !self.only.is_empty() && !self.only.contains(&batch.customer_id) {
            return Ok(());
        }
        let mut recorded = Recorded::checked(batch, &self.limits)?;
        recorded.ordinal = self.summary.batches;
        self.summary.add(batch, recorded.first_at);
        self.sorter.push(recorded).map_err(spill_error)
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The batches in event-time order, read back from the runs as they are
    /// taken: an error reading them ends the iteration and stays in `failed`.
    pub fn sorted(self) -> anyhow::Result<(Summary, Sorted)> {
        let batches = self.sorter.sorted().map_err(spill_error)?;
        let sorted = Sorted {
            batches,
            failed: None,
        };
        Ok((self.summary, sorted))
    }
}

/// A history's batches in order, read from its runs on disk.
pub struct Sorted {
    batches: spill::Merge<Recorded>,
    /// What ended the iteration early, if anything did.
    pub failed: Option<io::Error>,
}

impl Iterator for Sorted {
    type Item = Recorded;

    fn next(&mut self) -> Option<Recorded> {
        if self.failed.is_some() {
            return None;
        }
        match self.batches.next()? {
            Ok(r) => Some(r),
            Err(e) => {
                self.failed = Some(e);
                None
            }
        }
    }
}

fn spill_error(e: io::Error) -> anyhow::Error {
    spill::failed(e, "sorting the history")
}

/// Writes batches as a recorded-batches file (length-delimited protobuf).
pub fn write_batches<'a>(
    path: &Path,
    batches: impl IntoIterator<Item = &'a v1::TelemetryBatch>,
) -> anyhow::Result<usize> {
    let mut out = Vec::new();
    let mut n = 0;
    for batch in batches {
        batch.encode_length_delimited(&mut out)?;
        n += 1;
    }
    std::fs::write(path, out).with_context(|| format!("{}", path.display()))?;
    Ok(n)
}

/// Reads a recorded-batches file a batch at a time into `history`; every
/// batch must validate. `read` is told the bytes read so far.
/// Whether `path` names a dead-letter file (`limits.dead_letter_file`,
/// JSON lines, and its `.1`) rather than recorded batches.
pub fn is_dead_letter_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
    name.is_some_and(|n| n.ends_with(".jsonl") || n.ends_with(".jsonl.1"))
}

/// Reads the batches of the dead letters of `path` that a backfill takes:
/// those refused as `too_late` (behind the watermark, beyond the correction
/// horizon) or `unknown_customer` (a customer added since) whose whole
/// payload the letter kept. A new customer's history refused before it was
/// added goes in whole this way, however old, as `fleetpulse replay`
/// (which sends to the telemetry topics) cannot. Returns the letters left
/// out: of another reason, or cut.
pub fn read_letters(path: &Path, history: &mut History) -> anyhow::Result<usize> {
    use crate::metrics::RejectReason;
    let reasons = [RejectReason::TooLate, RejectReason::UnknownCustomer];
    let (messages, read) = crate::replay::letters(&[path.to_path_buf()], &reasons)?;
    for (topic, payload) in messages {
        let batch = v1::TelemetryBatch::decode(&payload[..]).with_context(|| {
            format!(
                "{}: the letter of {topic} holds no telemetry batch",
                path.display()
            )
        })?;
        history.push(&batch)?;
    }
    Ok(read.other_reason + read.incomplete + read.not_letters)
}

pub fn read_batches(
    path: &Path,
    history: &mut History,
    mut read: impl FnMut(u64),
) -> anyhow::Result<()> {
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("{name}"))?;
    let mut input = BufReader::with_capacity(1 << 16, file);
    let (mut offset, mut n) = (0u64, 0u64);
    let mut payload = Vec::new();
    while let Some((len, prefix)) =
        length_prefix(&mut input).with_context(|| format!("{name}: at byte {offset}"))?
    {
        n += 1;
        let not_batches = || {
            format!(
                "{name}: batch {n} at byte {offset} does not decode (a file of \
                 length-delimited TelemetryBatch messages, or a .csv of readings)"
            )
        };
        // A length past the payload limit is no batch the service would
        // take, and would be read whole before it could be refused.
        if len > history.limits.max_payload_bytes as u64 {
            bail!(
                "{}: a length of {len} bytes, above limits.max_payload_bytes ({})",
                not_batches(),
                history.limits.max_payload_bytes
            );
        }
        payload.resize(len as usize, 0);
        input.read_exact(&mut payload).with_context(not_batches)?;
        let batch = v1::TelemetryBatch::decode(&payload[..]).with_context(not_batches)?;
        history
            .push(&batch)
            .with_context(|| format!("{name}: batch {n} at byte {offset}"))?;
        offset += prefix + len;
        read(offset);
    }
    Ok(())
}

/// The next message's length and the bytes of its prefix (a varint), or
/// `None` at the end of the file.
fn length_prefix<R: Read>(input: &mut R) -> anyhow::Result<Option<(u64, u64)>> {
    let mut len = 0u64;
    for i in 0..10u32 {
        let mut byte = [0];
        if input.read(&mut byte)? == 0 {
            if i == 0 {
                return Ok(None);
            }
            bail!("the file ends inside a batch's length");
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some((len, u64::from(i) + 1)));
        }
    }
    bail!("a batch's length runs past 10 bytes: not a recorded-batches file")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(customer: &str, device: &str, sequence: u64, at: &[i64]) -> v1::TelemetryBatch {
        v1::TelemetryBatch {
            device_id: device.into(),
            customer_id: customer.into(),
            site_id: "s".into(),
            sequence,
            firmware_version: "t".into(),
            samples: (at.iter())
                .map(|&event_time_ms| v1::Sample {
                    event_time_ms,
                    ..Default::default()
                })
                .collect(),
            unit_epoch: 1,
        }
    }

    const DAY: i64 = 86_400_000;
    const START: i64 = 1_767_225_600_000; // 2026-01-01

    /// Many runs on disk merge into the order one sort in memory gives,
    /// batch for batch (ties between devices keep the order read), and the
    /// summary counts every batch, customer and device.
    #[test]
    fn runs_on_disk_merge_into_the_order_of_one_sort_in_memory() {
        let mut batches = Vec::new();
        // Three devices over 40 days, read device by device, some hours
        // shared so that keys tie on time.
        for (c, d) in [("a", "x"), ("b", "x"), ("a", "y")] {
            for seq in 1..=40u64 {
                let at = START + (seq as i64 - 1) * DAY + if d == "y" { 3_600_000 } else { 0 };
                batches.push(batch(c, d, seq, &[at, at + 60_000]));
            }
        }
        let mut spilled = History::with_run(Vec::new(), Limits::default(), 7);
        for b in &batches {
            spilled.push(b).unwrap();
        }
        let (summary, sorted) = spilled.sorted().unwrap();
        let got: Vec<v1::TelemetryBatch> = sorted.map(|r| r.batch()).collect();

        let mut want = batches.clone();
        want.sort_by_key(|b| (b.samples[0].event_time_ms, b.unit_epoch, b.sequence));
        assert_eq!(got, want);
        assert_eq!(summary.batches, 120);
        assert_eq!(summary.devices.len(), 3);
        assert_eq!(summary.customers["a"].at, START);
        assert_eq!(summary.customers["a"].device, "x");
        assert_eq!(
            summary.period,
            Some((START, START + 39 * DAY + 3_600_000 + 60_000))
        );
    }

    /// `--customer` keeps only its batches; another customer's invalid batch
    /// is not even checked.
    #[test]
    fn only_the_customers_asked_for_are_kept() {
        let mut history = History::with_run(vec!["a".into()], Limits::default(), 2);
        history.push(&batch("a", "x", 1, &[START])).unwrap();
        history.push(&batch("b", "x", 1, &[])).unwrap();
        let (summary, sorted) = history.sorted().unwrap();
        assert_eq!(summary.batches, 1);
        assert_eq!(sorted.count(), 1);
    }

    /// A recorded file read a batch at a time equals what was written; a
    /// file cut inside a batch, or one that is not batches, is named with
    /// the batch and byte where it goes wrong.
    #[test]
    fn a_recorded_file_is_read_a_batch_at_a_time_and_a_bad_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.binpb");
        let batches: Vec<_> = (1..=5)
            .map(|s| batch("a", "x", s, &[START + s as i64]))
            .collect();
        write_batches(&path, &batches).unwrap();
        let mut history = History::new(Vec::new(), Limits::default());
        let mut read = 0;
        read_batches(&path, &mut history, |b| read = b).unwrap();
        assert_eq!(read, std::fs::metadata(&path).unwrap().len());
        let (_, sorted) = history.sorted().unwrap();
        assert_eq!(sorted.map(|r| r.batch()).collect::<Vec<_>>(), batches);

        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let mut history = History::new(Vec::new(), Limits::default());
        let e = format!(
            "{:#}",
            read_batches(&path, &mut history, |_| ()).unwrap_err()
        );
        assert!(e.contains("batch 5 at byte"), "{e}");
        assert!(e.contains("does not decode"), "{e}");

        std::fs::write(&path, b"customer,site,device,time\n").unwrap();
        let mut history = History::new(Vec::new(), Limits::default());
        let e = format!(
            "{:#}",
            read_batches(&path, &mut history, |_| ()).unwrap_err()
        );
        assert!(e.contains("batch 1 at byte 0"), "{e}");
    }
}
