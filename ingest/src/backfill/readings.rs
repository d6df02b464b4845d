//! A CSV of readings into hourly batches. The rows may come in any order;
//! they are sorted by device and time on disk in runs of [`RUN_READINGS`]
//! (an export of a year does not fit in memory), then each device's
//! readings are cut into batches an hour at a time.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use fleetpulse_proto::{Limits, v1};
use prost::Message as _;

use super::spill::{self, Sorter, Spilled, get_bytes, put_bytes, take};
use crate::csv_check::Scanned;

/// An hour, in the CSV's signed milliseconds.
const HOUR_MS: i64 = fleetpulse_engine::config::HOUR_MS as i64;

/// Readings sorted in memory before a run goes to disk (some 10 MB).
pub const RUN_READINGS: usize = 100_000;

/// The columns of a CSV of readings; `customer`, `site`, `device` and
/// `time` are required, the rest default to 0 or empty.
pub const CSV_COLUMNS: [&str; 14] = [
    "customer",
    "site",
    "device",
    "time",
    "state",
    "operating_hours",
    "idle_hours",
    "fuel_litres",
    "cycles",
    "output_units",
    "manual_interventions",
    "operator",
    "features",
    "faults",
];

/// The meters a row may leave blank.
const METERS: [&str; 3] = ["operating_hours", "idle_hours", "fuel_litres"];

/// One row: its device and site (by their places among the file's), its
/// time and line (equal times keep the file's order), which meters it left
/// blank, and the reading, encoded.
struct Reading {
    device: u32,
    site: u32,
    at: i64,
    line: u64,
    blank: u8,
    sample: Vec<u8>,
}

impl Reading {
    fn order(a: &Self, b: &Self) -> Ordering {
        (a.device, a.at, a.line).cmp(&(b.device, b.at, b.line))
    }
}

impl Spilled for Reading {
    fn encode(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.device.to_le_bytes())?;
        out.write_all(&self.site.to_le_bytes())?;
        out.write_all(&self.at.to_le_bytes())?;
        out.write_all(&self.line.to_le_bytes())?;
        out.write_all(&[self.blank])?;
        put_bytes(out, &self.sample)
    }

    fn decode(input: &mut impl Read) -> io::Result<Option<Self>> {
        let Some(device) = spill::take_first(input)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            device: u32::from_le_bytes(device),
            site: u32::from_le_bytes(take(input)?),
            at: i64::from_le_bytes(take(input)?),
            line: u64::from_le_bytes(take(input)?),
            blank: take::<1>(input)?[0],
            sample: get_bytes(input)?,
        }))
    }
}

/// Reads a CSV of readings into batches, handed to `batch` in device
/// order: each device's readings of one UTC hour at one site make a batch
/// (more than `limits.max_samples` make several; a device that moves makes
/// one per site), numbered from 1 per device, across its sites, under
/// `unit_epoch` (default: see [`super::BackfillArgs::unit_epoch`]). `read`
/// is told the bytes read so far.
///
/// Every row is checked as the service checks a sample (a meter negative
/// or not finite, a count above the limits, ...) and, with `latest_ms`,
/// against the latest event time the service accepts (its clock plus
/// `limits.max_future`, or it refuses the batch as `future_timestamp`):
/// errors name the file, the line and the column. A row repeated
/// exactly (same device, time and values) is dropped, said on stderr; two
/// rows of one device and time with different values are refused, naming
/// both lines.
pub fn read_csv(
    path: &Path,
    unit_epoch: Option<u64>,
    limits: &Limits,
    latest_ms: Option<i64>,
    read: impl FnMut(u64),
    batch: impl FnMut(&v1::TelemetryBatch) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let rows = Rows {
        unit_epoch,
        limits,
        latest_ms,
        run: RUN_READINGS,
    };
    let dropped = read_csv_in_runs(path, &rows, read, batch)?;
    if let Some(note) = dropped.note(&path.display().to_string()) {
        eprintln!("{note}");
    }
    Ok(())
}

/// How [`read_csv_in_runs`] reads rows.
struct Rows<'a> {
    unit_epoch: Option<u64>,
    limits: &'a Limits,
    latest_ms: Option<i64>,
    /// Readings sorted in memory at a time (tests make runs small).
    run: usize,
}

/// Rows dropped as exact repeats of an earlier row.
#[derive(Debug, Default, PartialEq)]
struct Dropped {
    /// How many.
    count: u64,
    /// The first few: (line dropped, the earlier line it repeats).
    first: Vec<(u64, u64)>,
}

/// Repeated rows listed by line in the note on stderr.
const DROPPED_SHOWN: usize = 5;

impl Dropped {
    fn note(&self, name: &str) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let lines: Vec<String> = (self.first.iter())
            .map(|(line, of)| format!("line {line} repeats line {of}"))
            .collect();
        let more = if self.count > self.first.len() as u64 {
            ", ..."
        } else {
            ""
        };
        Some(format!(
            "{name}: dropped {} row{} that repeat{} an earlier row exactly (same device, time \
             and values): {}{more}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            if self.count == 1 { "s" } else { "" },
            lines.join(", ")
        ))
    }
}

/// The CSV column of a field of the service's sample checks.
fn column_of(field: &str) -> &str {
    match field {
        "event_time_ms" => "time",
        "cumulative_operating_hours" => "operating_hours",
        "cumulative_idle_hours" => "idle_hours",
        "cumulative_fuel_used_litres" => "fuel_litres",
        "operator_id" => "operator",
        "fault_codes" => "faults",
        other => other,
    }
}

/// [`read_csv`] with `rows.run` readings sorted at a time; what it dropped.
fn read_csv_in_runs(
    path: &Path,
    rows: &Rows<'_>,
    mut read: impl FnMut(u64),
    mut batch: impl FnMut(&v1::TelemetryBatch) -> anyhow::Result<()>,
) -> anyhow::Result<Dropped> {
    let Rows {
        unit_epoch,
        limits,
        latest_ms,
        run,
    } = *rows;
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("{name}"))?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(Scanned::new(file));
    let headers = reader.headers().with_context(|| format!("{name}"))?.clone();
    let unclosed = |reader: &csv::Reader<Scanned<std::fs::File>>| -> anyhow::Result<()> {
        if let Some(open) = reader.get_ref().unclosed() {
            let header: Vec<&str> = headers.iter().collect();
            bail!(
                "{name}: line {}, column `{}`: {}",
                open.line,
                crate::csv_check::column_name(&header, open.field),
                open.message()
            );
        }
        Ok(())
    };
    unclosed(&reader)?;
    let column = |c: &str| headers.iter().position(|h| h == c);
    for (i, h) in headers.iter().enumerate() {
        if headers.iter().take(i).any(|earlier| earlier == h) {
            bail!("{name}: the column `{h}` is named twice in the header: keep one");
        }
        // A spreadsheet's export in a locale with decimal commas.
        if let Some(sep) = [';', '\t'].into_iter().find(|sep| h.contains(*sep)) {
            bail!(
                "{name}: the header `{h}` is one column: its columns are separated by \
                 {sep:?}, not commas; export the file as comma-separated values, numbers \
                 with a decimal point"
            );
        }
        if !CSV_COLUMNS.contains(&h) {
            bail!(
                "{name}: unknown column `{h}` (columns: {})",
                CSV_COLUMNS.join(", ")
            );
        }
    }
    for required in &CSV_COLUMNS[..4] {
        if column(required).is_none() {
            bail!("{name}: no `{required}` column");
        }
    }
    let spill = |e: io::Error| spill::failed(e, &format!("{name}: sorting its readings"));
    let mut sorter = Sorter::new(run, Reading::order);
    // (customer, device) by first appearance: a device that moves between
    // sites is one unit, its batches numbered on across them; and the
    // sites, each batch naming its reading's.
    let mut devices: Vec<[String; 2]> = Vec::new();
    let mut known: HashMap<String, u32> = HashMap::new();
    let mut sites: Vec<String> = Vec::new();
    let mut known_sites: HashMap<String, u32> = HashMap::new();
    let mut key = String::new();
    let mut row = csv::StringRecord::new();
    let mut line = 1;
    loop {
        let more = reader
            .read_record(&mut row)
            .with_context(|| format!("{name}: line {}", line + 1))?;
        unclosed(&reader)?;
        if !more {
            break;
        }
        line += 1;
        let get = |c: &str| column(c).and_then(|i| row.get(i)).unwrap_or("");
        for id in ["customer", "site", "device"] {
            if let Err(why) = fleetpulse_proto::topic::check_id(get(id)) {
                bail!(
                    "{name}: line {line}, column `{id}`: `{}` {why}",
                    get(id).escape_debug()
                );
            }
        }
        let ids = ["customer", "device"].map(get);
        key.clear();
        for id in ids {
            key.push_str(id);
            key.push('\0');
        }
        let device = match known.get(&key) {
            Some(&d) => d,
            None => {
                let d = u32::try_from(devices.len()).context("more than 4 billion devices")?;
                devices.push(ids.map(str::to_owned));
                known.insert(key.clone(), d);
                d
            }
        };
        let site = match known_sites.get(get("site")) {
            Some(&s) => s,
            None => {
                let s = u32::try_from(sites.len()).context("more than 4 billion sites")?;
                sites.push(get("site").to_owned());
                known_sites.insert(get("site").to_owned(), s);
                s
            }
        };
        let at = |what: &str| format!("{name}: line {line}, column `{what}`");
        let sample = sample(&get, &at)?;
        let checked = fleetpulse_proto::Reading::of(&sample, i64::MIN);
        if let Err((field, reason)) = fleetpulse_proto::check_reading(&checked, limits) {
            let column = column_of(field);
            bail!("{}: `{}` {reason}", at(column), get(column));
        }
        if let Some(latest) = latest_ms
            && sample.event_time_ms > latest
        {
            bail!(
                "{}: `{}` ({}) is in the future: later than this host's clock plus \
                 limits.max_future ({}); the service would refuse it as future_timestamp",
                at("time"),
                get("time"),
                super::stamp(sample.event_time_ms),
                super::stamp(latest),
            );
        }
        let blank = (METERS.iter().enumerate())
            .filter(|(_, m)| get(m).is_empty())
            .fold(0u8, |bits, (i, _)| bits | 1 << i);
        let reading = Reading {
            device,
            site,
            at: sample.event_time_ms,
            line,
            blank,
            sample: sample.encode_to_vec(),
        };
        sorter.push(reading).map_err(spill)?;
        if line % 4096 == 0 {
            read(reader.position().byte());
        }
    }
    read(reader.position().byte());
    let mut emit = |done: Cut| {
        let ids = &devices[done.device as usize];
        let site = &sites[done.site as usize];
        batch(&done.into_batch(ids, site))
            .with_context(|| format!("{name}: device `{}` of customer `{}`", ids[1], ids[0]))
    };
    let mut cut = Batches::new(limits.max_samples.max(1), unit_epoch);
    let mut dropped = Dropped::default();
    // The last reading kept: (device, time, line, site, blank meters,
    // sample).
    let mut last: Option<(u32, i64, u64, u32, u8, Vec<u8>)> = None;
    for reading in sorter.sorted().map_err(spill)? {
        let reading = reading.map_err(spill)?;
        if let Some((device, at, first, site, blank, sample)) = &last
            && (*device, *at) == (reading.device, reading.at)
        {
            if (*site, *blank, sample) == (reading.site, reading.blank, &reading.sample) {
                dropped.count += 1;
                if dropped.first.len() < DROPPED_SHOWN {
                    dropped.first.push((reading.line, *first));
                }
                continue;
            }
            let ids = &devices[reading.device as usize];
            bail!(
                "{name}: lines {first} and {}: device `{}` of customer `{}` has two different \
                 readings at {} (one device reads once at a time): keep one of them",
                reading.line,
                ids[1],
                ids[0],
                super::stamp(reading.at)
            );
        }
        last = Some((
            reading.device,
            reading.at,
            reading.line,
            reading.site,
            reading.blank,
            reading.sample.clone(),
        ));
        let sample = v1::Sample::decode(&reading.sample[..])
            .with_context(|| format!("{name}: a sorted reading does not decode"))?;
        if let Some(done) = cut.add(reading.device, reading.site, reading.blank, sample) {
            emit(done)?;
        }
    }
    if let Some(done) = cut.finish() {
        emit(done)?;
    }
    Ok(dropped)
}

/// A row's reading; an error names its column (`at`).
fn sample<'a>(
    get: &dyn Fn(&str) -> &'a str,
    at: &dyn Fn(&str) -> String,
) -> anyhow::Result<v1::Sample> {
    Ok(v1::Sample {
        event_time_ms: time_ms(get("time")).with_context(|| at("time"))?,
        state: state(get("state")).with_context(|| at("state"))? as i32,
        cumulative_operating_hours: number(get("operating_hours"))
            .with_context(|| at("operating_hours"))?,
        cumulative_idle_hours: number(get("idle_hours")).with_context(|| at("idle_hours"))?,
        cumulative_fuel_used_litres: number(get("fuel_litres"))
            .with_context(|| at("fuel_litres"))?,
        cycles: count(get("cycles")).with_context(|| at("cycles"))?,
        output_units: number(get("output_units")).with_context(|| at("output_units"))?,
        manual_interventions: count(get("manual_interventions"))
            .with_context(|| at("manual_interventions"))?,
        operator_id: get("operator").to_owned(),
        features: pairs(get("features"))
            .with_context(|| at("features"))?
            .into_iter()
            .map(|(feature, active_seconds)| v1::FeatureUsage {
                feature,
                active_seconds,
            })
            .collect(),
        fault_codes: pairs(get("faults"))
            .with_context(|| at("faults"))?
            .into_iter()
            .map(|(code, severity)| v1::FaultCode { code, severity })
            .collect(),
        location: None,
    })
}

/// Cuts one device's readings after another, in time order, into batches.
struct Batches {
    max_samples: usize,
    unit_epoch: Option<u64>,
    /// The batch being filled.
    open: Option<Cut>,
}

/// A batch of one device's readings of one hour at one site.
struct Cut {
    device: u32,
    site: u32,
    hour: i64,
    unit_epoch: u64,
    sequence: u64,
    samples: Vec<v1::Sample>,
    /// The device's meters as of its latest reading: a meter a row left
    /// blank was not read, and carries the reading before it (0 before the
    /// first), since a 0 there would make the next gain the meter's whole
    /// value.
    meters: [f64; 3],
}

impl Batches {
    fn new(max_samples: usize, unit_epoch: Option<u64>) -> Self {
        Self {
            max_samples,
            unit_epoch,
            open: None,
        }
    }

    /// Adds the next reading; returns the batch it closes, if any.
    fn add(&mut self, device: u32, site: u32, blank: u8, mut sample: v1::Sample) -> Option<Cut> {
        let hour = sample.event_time_ms.div_euclid(HOUR_MS);
        let mut closed = None;
        let mut next = match self.open.take() {
            Some(open) if open.device == device => {
                if open.hour == hour && open.site == site && open.samples.len() < self.max_samples {
                    open
                } else {
                    let next = Cut {
                        device,
                        site,
                        hour,
                        unit_epoch: open.unit_epoch,
                        sequence: open.sequence + 1,
                        samples: Vec::new(),
                        meters: open.meters,
                    };
                    closed = Some(open);
                    next
                }
            }
            other => {
                closed = other;
                // The hour of the device's first reading since 1970.
                let first_hour = u64::try_from(hour).unwrap_or(0).max(1);
                Cut {
                    device,
                    site,
                    hour,
                    unit_epoch: self.unit_epoch.unwrap_or(first_hour),
                    sequence: 1,
                    samples: Vec::new(),
                    meters: [0.0; 3],
                }
            }
        };
        let meters = [
            &mut sample.cumulative_operating_hours,
            &mut sample.cumulative_idle_hours,
            &mut sample.cumulative_fuel_used_litres,
        ];
        for (i, (meter, last)) in meters.into_iter().zip(&mut next.meters).enumerate() {
            if blank & (1 << i) != 0 {
                *meter = *last;
            }
            *last = *meter;
        }
        next.samples.push(sample);
        self.open = Some(next);
        closed
    }

    fn finish(self) -> Option<Cut> {
        self.open
    }
}

impl Cut {
    fn into_batch(self, [customer, device]: &[String; 2], site: &str) -> v1::TelemetryBatch {
        v1::TelemetryBatch {
            device_id: device.clone(),
            customer_id: customer.clone(),
            site_id: site.to_owned(),
            sequence: self.sequence,
            firmware_version: "backfill".into(),
            samples: self.samples,
            unit_epoch: self.unit_epoch,
        }
    }
}

fn time_ms(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        // Ten digits: seconds since the epoch (2001 to 2286), which read as
        // milliseconds lie in January 1970, and the service would refuse.
        if (1_000_000_000..10_000_000_000).contains(&ms) {
            bail!(
                "`{text}` looks like seconds since the epoch ({}); give Unix milliseconds or RFC 3339",
                super::stamp(ms * 1000)
            );
        }
        return Ok(ms);
    }
    let at: jiff::Timestamp = text
        .parse()
        .with_context(|| format!("`{text}` is neither RFC 3339 nor milliseconds"))?;
    Ok(at.as_millisecond())
}

fn state(text: &str) -> anyhow::Result<v1::MachineState> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "" | "unspecified" => v1::MachineState::Unspecified,
        "running" => v1::MachineState::Running,
        "idle" => v1::MachineState::Idle,
        "off" => v1::MachineState::Off,
        "fault" => v1::MachineState::Fault,
        other => bail!("`{other}` is not running, idle, off or fault"),
    })
}

fn number(text: &str) -> anyhow::Result<f64> {
    if text.is_empty() {
        return Ok(0.0);
    }
    text.parse()
        .map_err(|_| anyhow::anyhow!("`{text}` is not a number"))
}

/// A count: a whole number from 0 to `u32::MAX`; an error says which of
/// these a number is not.
fn count(text: &str) -> anyhow::Result<u32> {
    if text.is_empty() {
        return Ok(0);
    }
    if let Ok(n) = text.parse::<u32>() {
        return Ok(n);
    }
    let whole = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()) {
        if text.starts_with('-') {
            if whole.bytes().all(|b| b == b'0') {
                return Ok(0);
            }
            bail!("`{text}` is negative: a count is 0 or more");
        }
        bail!("`{text}` is too large: a count is at most {}", u32::MAX);
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v.fract() != 0.0 => {
            bail!("`{text}` is not a whole number: a count has no fraction")
        }
        Ok(v) if v < 0.0 => bail!("`{text}` is negative: a count is 0 or more"),
        Ok(v) if v.is_finite() => {
            bail!("`{text}` is not a whole number as written: give it as digits only")
        }
        Ok(_) => bail!("`{text}` is not a finite number"),
        Err(_) => bail!("`{text}` is not a number"),
    }
}

/// `name:value;name:value`.
fn pairs(text: &str) -> anyhow::Result<Vec<(String, u32)>> {
    (text.split(';').filter(|p| !p.trim().is_empty()))
        .map(|pair| {
            let (name, value) = pair
                .rsplit_once(':')
                .with_context(|| format!("`{pair}` is not name:number"))?;
            Ok((name.trim().to_owned(), count(value.trim())?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(path: &Path, run: usize) -> Vec<v1::TelemetryBatch> {
        let mut out = Vec::new();
        let keep = |b: &v1::TelemetryBatch| {
            out.push(b.clone());
            Ok(())
        };
        let rows = Rows {
            unit_epoch: None,
            limits: &Limits::default(),
            latest_ms: None,
            run,
        };
        read_csv_in_runs(path, &rows, |_| (), keep).unwrap();
        out
    }

    fn read_dropped(text: &str) -> anyhow::Result<(Dropped, Vec<v1::TelemetryBatch>)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("readings.csv");
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        let keep = |b: &v1::TelemetryBatch| {
            out.push(b.clone());
            Ok(())
        };
        let rows = Rows {
            unit_epoch: Some(1),
            limits: &Limits::default(),
            latest_ms: None,
            run: 2,
        };
        let dropped = read_csv_in_runs(&path, &rows, |_| (), keep)?;
        Ok((dropped, out))
    }

    /// A row repeated exactly was counted twice (its cycles twice); it is
    /// dropped, and said with its line and the line it repeats. Two rows
    /// of one device and time with different values are refused, naming
    /// both lines.
    #[test]
    fn a_repeated_row_is_dropped_and_a_contradicting_one_refused() {
        let header = "customer,site,device,time,cycles,operating_hours\n";
        let (dropped, got) = read_dropped(&format!(
            "{header}a,s,d,2026-03-01T10:00:00Z,5,1\n\
             a,s,d,2026-03-01T10:10:00Z,5,2\n\
             a,s,d,2026-03-01T10:00:00Z,5,1\n\
             a,s,e,2026-03-01T10:00:00Z,5,1\n\
             a,s,d,2026-03-01T10:00:00Z,5,1\n"
        ))
        .unwrap();
        assert_eq!(
            dropped,
            Dropped {
                count: 2,
                first: vec![(4, 2), (6, 2)]
            }
        );
        let cycles: u32 = got.iter().flat_map(|b| &b.samples).map(|s| s.cycles).sum();
        assert_eq!(cycles, 15);
        let note = dropped.note("r.csv").unwrap();
        assert!(
            note.starts_with("r.csv: dropped 2 rows that repeat an earlier row exactly"),
            "{note}"
        );
        assert!(note.contains("line 4 repeats line 2"), "{note}");
        let err = read_dropped(&format!(
            "{header}a,s,d,2026-03-01T10:00:00Z,5,1\n\
             a,s,d,2026-03-01T10:10:00Z,5,2\n\
             a,s,d,2026-03-01T10:00:00Z,7,1\n"
        ))
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("readings.csv: lines 2 and 4: device `d`"),
            "{err}"
        );
        assert!(err.contains("two different readings"), "{err}");
        assert_eq!(Dropped::default().note("r.csv"), None);
    }

    /// A device that moves between sites is one unit: its batches are
    /// numbered on across them under one epoch, each naming its site. One
    /// unit per site let a device's two sites of one hour share a sequence
    /// (the second refused as a replay) and a device of five sites lose
    /// the first's return (the device remembers four epochs): silently.
    #[test]
    fn a_device_that_moves_between_sites_is_one_unit() {
        let header = "customer,site,device,time,cycles\n";
        let mut text = header.to_string();
        // Half an hour at s1, then s2 in the same hour; then s3, s4, s5
        // and back to s1, an hour each.
        let stints = [
            ("s1", "10:00"),
            ("s1", "10:20"),
            ("s2", "10:40"),
            ("s3", "11:00"),
            ("s4", "12:00"),
            ("s5", "13:00"),
            ("s1", "14:00"),
            ("s1", "14:30"),
        ];
        for (site, at) in stints {
            text.push_str(&format!("a,{site},d,2026-03-01T{at}:00Z,1\n"));
        }
        // The same site name at another customer's device: its own unit.
        text.push_str("b,s1,d,2026-03-01T10:00:00Z,1\n");
        let (_, got) = read_dropped(&text).unwrap();
        let of = |customer: &str| -> Vec<(String, u64, u64, usize)> {
            (got.iter().filter(|b| b.customer_id == customer))
                .map(|b| (b.site_id.clone(), b.unit_epoch, b.sequence, b.samples.len()))
                .collect()
        };
        let site = |s: &str, sequence, samples| (s.to_string(), 1, sequence, samples);
        assert_eq!(
            of("a"),
            [
                site("s1", 1, 2),
                site("s2", 2, 1),
                site("s3", 3, 1),
                site("s4", 4, 1),
                site("s5", 5, 1),
                site("s1", 6, 2),
            ]
        );
        assert_eq!(of("b"), [site("s1", 1, 1)]);
    }

    /// An id the service would refuse (a topic separator, empty, a control
    /// character) is named at its line and column; a column named twice in
    /// the header (the second was ignored) is refused.
    #[test]
    fn bad_ids_and_a_column_named_twice_are_named() {
        let header = "customer,site,device,time\n";
        for (row, column) in [
            ("a,s,d/1,2026-03-01T10:00:00Z", "device"),
            ("a,,d,2026-03-01T10:00:00Z", "site"),
            ("a+b,s,d,2026-03-01T10:00:00Z", "customer"),
        ] {
            let text = format!("{header}a,s,d,2026-03-01T09:00:00Z\n{row}\n");
            let err = format!("{:#}", read_dropped(&text).unwrap_err());
            assert!(
                err.contains(&format!("readings.csv: line 3, column `{column}`")),
                "{err}"
            );
        }
        let err = read_dropped("customer,site,device,time,time\na,s,d,1780272000000,5\n");
        let err = format!("{:#}", err.unwrap_err());
        assert!(err.contains("the column `time` is named twice"), "{err}");
    }

    /// Counts say what is wrong with a number that is not one.
    #[test]
    fn a_count_that_is_not_one_says_why() {
        assert_eq!(count("12").unwrap(), 12);
        assert_eq!(count("").unwrap(), 0);
        assert_eq!(count("-0").unwrap(), 0);
        for (text, why) in [
            ("-5", "is negative"),
            ("2.5", "is not a whole number"),
            ("99999999999999999999", "is too large"),
            ("4294967296", "is too large"),
            ("-2.5", "is not a whole number"),
            ("lots", "is not a number"),
        ] {
            let e = count(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    /// Rows in no order, sorted in runs of 37 on disk, make the batches one
    /// sort in memory makes, reading for reading: hours cut, meters left
    /// blank carried, equal times in the file's order, a long hour split at
    /// `max_samples`.
    #[test]
    fn readings_sorted_on_disk_make_the_batches_of_one_sort_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("readings.csv");
        let mut rows = Vec::new();
        let start = 1_772_323_200_000i64; // 2026-03-01
        for (d, device) in ["x", "y", "z"].iter().enumerate() {
            for i in 0..600i64 {
                // Every 7 minutes, and two readings at each 50th minute.
                let at = start + (i * 7 - i % 50 / 49) * 60_000 + d as i64;
                let hours = if i % 5 == 0 {
                    String::new()
                } else {
                    format!("{}", i as f64 / 10.0)
                };
                rows.push(format!(
                    "c,s,{device},{at},running,{hours},,,{i},,,op-{}\n",
                    i % 3
                ));
            }
        }
        // A shuffle that needs no generator: a stride through the rows.
        let n = rows.len();
        let shuffled: String = (0..n).map(|i| rows[i * 797 % n].as_str()).collect();
        std::fs::write(
            &path,
            format!(
                "customer,site,device,time,state,operating_hours,idle_hours,fuel_litres,\
                 cycles,output_units,manual_interventions,operator\n{shuffled}"
            ),
        )
        .unwrap();
        let on_disk = cut(&path, 37);
        let in_memory = cut(&path, usize::MAX);
        assert_eq!(on_disk, in_memory);
        assert_eq!(
            on_disk.iter().map(|b| b.samples.len()).sum::<usize>(),
            1_800
        );
        for b in &on_disk {
            let hours = (b.samples.iter()).map(|s| s.event_time_ms.div_euclid(HOUR_MS));
            assert_eq!(hours.clone().min(), hours.max(), "a batch is one hour");
            assert!(b.samples.is_sorted_by_key(|s| s.event_time_ms));
        }
        // A blank meter carries the reading before it.
        let x: Vec<&v1::Sample> = (on_disk.iter())
            .filter(|b| b.device_id == "x")
            .flat_map(|b| &b.samples)
            .collect();
        assert_eq!(
            x[5].cumulative_operating_hours,
            x[4].cumulative_operating_hours
        );
    }
}
