//! `fleetpulse backfill`: a customer's history into the running service.
//! The recorded batches (or a CSV of readings, grouped into hourly batches)
//! are published in event-time order on the devices' backfill topics
//! (`fleet/{customer}/{site}/{device}/backfill`) through the service's
//! broker. The service archives them like late telemetry and restates the
//! customer's windows and journey from its first reading, however old: the
//! same arithmetic as a live run over the history, so the records equal
//! what that run would have stored (with a revision above 0). It takes a
//! customer whose every batch the archive still holds: a new one, or one
//! whose first telemetry is within `engine.correction_horizon`; the
//! service refuses the rest (`too_late`, dead-lettered, saying why).

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use fleetpulse_proto::{Limits, TopicIds, backfill_topic, decode_and_validate, v1};
use prost::Message as _;

use crate::config::ServiceConfig;

/// An hour, in the CSV's signed milliseconds.
const HOUR_MS: i64 = fleetpulse_engine::config::HOUR_MS as i64;
use crate::progress::Progress;

/// `fleetpulse backfill` arguments.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// History files: recorded batches (length-delimited protobuf
    /// `TelemetryBatch`es, as `fleetpulse sim --record` writes them), or a
    /// CSV of readings (`.csv`; docs/KPIS.md, Backfill).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The service's configuration: its broker is where the history goes.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only these customers' batches (default: every one in the files).
    #[arg(long, value_delimiter = ',')]
    pub customer: Vec<String>,
    /// Broker user (default: the service's `mqtt.username`); with the
    /// deploy/ access control, `fleetpulse-backfill`.
    #[arg(long)]
    pub username: Option<String>,
    /// Environment variable holding that user's password.
    #[arg(long)]
    pub password_env: Option<String>,
    /// Unit epoch of the batches made from CSV readings: a unit of their
    /// own, so their sequence numbers never clash with the live unit's.
    /// Default: per device and file, the hour of its first reading counted
    /// from 1970, so a file of a later period gets a higher epoch than an
    /// earlier one (a history exported in parts), the same file the same
    /// epoch (sent again, it is refused as replayed), and every real unit's
    /// epoch (Unix seconds) is higher still.
    #[arg(long)]
    pub unit_epoch: Option<u64>,
}

/// One batch to publish, checked as the service will, with what orders it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its first reading.
    pub first_at: i64,
    /// The protobuf batch.
    pub batch: v1::TelemetryBatch,
    /// Its backfill topic.
    topic: String,
    /// Encoded once: validated, then published.
    payload: Vec<u8>,
}

impl Recorded {
    /// `batch`, if it passes the service's validation.
    fn checked(batch: v1::TelemetryBatch, limits: &Limits) -> anyhow::Result<Self> {
        let topic = backfill_topic(&batch.customer_id, &batch.site_id, &batch.device_id);
        let payload = batch.encode_to_vec();
        decode_and_validate(&TopicIds::parse(&topic)?, &payload, limits)?;
        let first_at = (batch.samples.iter().map(|s| s.event_time_ms))
            .min()
            .unwrap_or(0);
        Ok(Self {
            first_at,
            batch,
            topic,
            payload,
        })
    }

    /// Its backfill topic and payload.
    pub fn into_message(self) -> (String, Vec<u8>) {
        (self.topic, self.payload)
    }
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

/// Reads a recorded-batches file; every batch must validate.
pub fn read_batches(path: &Path, limits: &Limits) -> anyhow::Result<Vec<Recorded>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("{}", path.display()))?;
    let mut rest = &bytes[..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let batch = v1::TelemetryBatch::decode_length_delimited(&mut rest).with_context(|| {
            format!(
                "{}: batch {} at byte {offset} does not decode (a file of \
                 length-delimited TelemetryBatch messages, or a .csv of readings)",
                path.display(),
                out.len() + 1
            )
        })?;
        let n = out.len() + 1;
        let checked = Recorded::checked(batch, limits)
            .with_context(|| format!("{}: batch {n} at byte {offset}", path.display()))?;
        out.push(checked);
    }
    Ok(out)
}

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

/// Reads a CSV of readings into batches: each device's readings of one
/// UTC hour make a batch, numbered from 1 per device under `unit_epoch`
/// (default: see [`BackfillArgs::unit_epoch`]).
pub fn read_csv(
    path: &Path,
    unit_epoch: Option<u64>,
    limits: &Limits,
) -> anyhow::Result<Vec<Recorded>> {
    let name = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("{name}"))?;
    let headers = reader.headers().with_context(|| format!("{name}"))?.clone();
    let column = |c: &str| headers.iter().position(|h| h == c);
    for h in headers.iter() {
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
    type Key = (String, String, String);
    // Each reading with which of its meters the row left empty.
    let mut readings: BTreeMap<Key, Vec<(v1::Sample, [bool; 3])>> = BTreeMap::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = row.with_context(|| format!("{name}: line {line}"))?;
        let get = |c: &str| column(c).and_then(|i| row.get(i)).unwrap_or("");
        let at = |what: &str| format!("{name}: line {line}, column `{what}`");
        let key = (
            get("customer").to_owned(),
            get("site").to_owned(),
            get("device").to_owned(),
        );
        let empty = ["operating_hours", "idle_hours", "fuel_litres"].map(|c| get(c).is_empty());
        let sample = v1::Sample {
            event_time_ms: time_ms(get("time")).with_context(|| at("time"))?,
            state: state(get("state")).with_context(|| at("state"))? as i32,
            cumulative_operating_hours: number(get("operating_hours"))
                .with_context(|| at("operating_hours"))?,
            cumulative_idle_hours: number(get("idle_hours")).with_context(|| at("idle_hours"))?,
            cumulative_fuel_used_litres: number(get("fuel_litres"))
                .with_context(|| at("fuel_litres"))?,
            cycles: number(get("cycles")).with_context(|| at("cycles"))?,
            output_units: number(get("output_units")).with_context(|| at("output_units"))?,
            manual_interventions: number(get("manual_interventions"))
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
        };
        readings.entry(key).or_default().push((sample, empty));
    }
    let mut out = Vec::new();
    for ((customer, site, device), mut rows) in readings {
        rows.sort_by_key(|(s, _)| s.event_time_ms);
        let samples = carry_meters(rows);
        let first_hour = (samples.first()).map_or(0, |s| s.event_time_ms.div_euclid(HOUR_MS));
        let unit_epoch = unit_epoch.unwrap_or(u64::try_from(first_hour).unwrap_or(0).max(1));
        let mut sequence = 0;
        for hour in samples.chunk_by(|a, b| {
            a.event_time_ms.div_euclid(HOUR_MS) == b.event_time_ms.div_euclid(HOUR_MS)
        }) {
            for part in hour.chunks(limits.max_samples.max(1)) {
                sequence += 1;
                let batch = v1::TelemetryBatch {
                    device_id: device.clone(),
                    customer_id: customer.clone(),
                    site_id: site.clone(),
                    sequence,
                    firmware_version: "backfill".into(),
                    samples: part.to_vec(),
                    unit_epoch,
                };
                let checked = Recorded::checked(batch, limits).with_context(|| {
                    format!("{name}: device `{device}` of customer `{customer}`")
                })?;
                out.push(checked);
            }
        }
    }
    Ok(out)
}

/// A device's readings in time order, each meter its row left empty
/// carried from the reading before (0 before the first): an export that
/// leaves a cell blank did not read the meter, and a 0 there would make the
/// next reading's gain the meter's whole value.
fn carry_meters(rows: Vec<(v1::Sample, [bool; 3])>) -> Vec<v1::Sample> {
    let mut last = [0.0; 3];
    (rows.into_iter())
        .map(|(mut s, empty)| {
            let meters = [
                &mut s.cumulative_operating_hours,
                &mut s.cumulative_idle_hours,
                &mut s.cumulative_fuel_used_litres,
            ];
            for ((meter, empty), last) in meters.into_iter().zip(empty).zip(&mut last) {
                if empty {
                    *meter = *last;
                }
                *last = *meter;
            }
            s
        })
        .collect()
}

fn time_ms(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        // Ten digits: seconds since the epoch (2001 to 2286), which read as
        // milliseconds lie in January 1970, and the service would refuse.
        if (1_000_000_000..10_000_000_000).contains(&ms) {
            bail!(
                "`{text}` looks like seconds since the epoch ({}); give Unix milliseconds or RFC 3339",
                stamp(ms * 1000)
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

fn number<T: std::str::FromStr + Default>(text: &str) -> anyhow::Result<T> {
    if text.is_empty() {
        return Ok(T::default());
    }
    text.parse()
        .map_err(|_| anyhow::anyhow!("`{text}` is not a number"))
}

/// `name:value;name:value`.
fn pairs(text: &str) -> anyhow::Result<Vec<(String, u32)>> {
    (text.split(';').filter(|p| !p.trim().is_empty()))
        .map(|pair| {
            let (name, value) = pair
                .rsplit_once(':')
                .with_context(|| format!("`{pair}` is not name:number"))?;
            Ok((name.trim().to_owned(), number(value.trim())?))
        })
        .collect()
}

/// What a backfill sent.
#[derive(Debug, Default)]
pub struct Backfilled {
    /// Batches sent.
    pub batches: usize,
    /// Their customers.
    pub customers: Vec<String>,
    /// Their devices.
    pub devices: usize,
    /// First and last reading.
    pub period: Option<(i64, i64)>,
}

/// The batches of `files` to send, in event-time order (each device's in
/// its order).
pub fn history(args: &BackfillArgs, limits: &Limits) -> anyhow::Result<Vec<Recorded>> {
    let mut all = Vec::new();
    for file in &args.files {
        if !file.exists() {
            bail!("{}: no such file", file.display());
        }
        let csv = file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        all.extend(if csv {
            read_csv(file, args.unit_epoch, limits)?
        } else {
            read_batches(file, limits)?
        });
    }
    if !args.customer.is_empty() {
        all.retain(|r| args.customer.contains(&r.batch.customer_id));
    }
    all.sort_by(|a, b| {
        let key = |r: &Recorded| (r.first_at, r.batch.unit_epoch, r.batch.sequence);
        key(a).cmp(&key(b))
    });
    Ok(all)
}

/// Sends `args.files`' history to the service's broker; prints what it did.
pub async fn run(args: &BackfillArgs) -> anyhow::Result<Backfilled> {
    let config = ServiceConfig::load(&args.config)?;
    if config.mqtt.backfill_topic().is_none() {
        bail!(
            "{}: mqtt.topic `{}` does not end in /telemetry: the service subscribes to no \
             backfill topic",
            args.config.display(),
            config.mqtt.topic
        );
    }
    let history = history(args, &config.limits())?;
    if history.is_empty() {
        bail!("no batches to send (files empty, or no batch of --customer)");
    }
    refusals(&history, &config)?;
    let customers: std::collections::BTreeSet<String> = (history.iter())
        .map(|r| r.batch.customer_id.clone())
        .collect();
    let devices: HashSet<(&str, &str)> = (history.iter())
        .map(|r| (&*r.batch.customer_id, &*r.batch.device_id))
        .collect();
    let done = Backfilled {
        batches: history.len(),
        customers: customers.into_iter().collect(),
        devices: devices.len(),
        period: Some((
            history.first().map_or(0, |r| r.first_at),
            (history.iter())
                .flat_map(|r| r.batch.samples.iter().map(|s| s.event_time_ms))
                .max()
                .unwrap_or(0),
        )),
    };
    let options = crate::replay::publish_options(&config)?;
    let broker = options.broker();
    let mut options = fleetpulse_sim::PublishOptions {
        client_id: format!("{}-backfill", config.mqtt.client_id),
        ..options
    };
    if let Some(user) = &args.username {
        options.username = Some(user.clone());
        options.password = None;
    }
    if let Some(var) = &args.password_env {
        let password =
            std::env::var(var).with_context(|| format!("--password-env: ${var} is not set"))?;
        options.password = Some(password);
    }
    let mut progress = Progress::new("backfilling", "batches", history.len() as u64);
    fleetpulse_sim::publish(
        options,
        history.into_iter().map(Recorded::into_message),
        |p| progress.set(p.delivered),
    )
    .await
    .with_context(|| format!("publishing to {broker}"))?;
    let (from, to) = done.period.unwrap_or_default();
    progress.finish(&format!(
        "{} batches of {} devices of {} sent ({} to {}); the service restates each \
         customer's journey from its first reading once it has taken them in \
         (fleetpulse_restatements_total; refusals are dead-lettered)",
        done.batches,
        done.devices,
        done.customers.join(", "),
        stamp(from),
        stamp(to),
    ));
    Ok(done)
}

/// What the service would refuse, said before anything is sent: a customer
/// its customers file does not name (`unknown_customer`), a reading before
/// the customer's contract start or `limits.earliest_event_time`
/// (`before_start`: an export in the wrong unit or year).
fn refusals(history: &[Recorded], config: &ServiceConfig) -> anyhow::Result<()> {
    let file = match &config.customers {
        Some(c) => Some(crate::customers::CustomersFile::load(&c.file)?),
        None => None,
    };
    // A checked file gives every customer a contract start.
    let earliest = crate::admission::Earliest::from_config(&config.limits, file.as_ref());
    for r in history {
        let (customer, device) = (&r.batch.customer_id, &r.batch.device_id);
        if let Some(c) = &config.customers
            && !earliest.contract_starts.contains_key(customer)
        {
            bail!(
                "customer `{customer}` is not in {}: the service would refuse its history as \
                 unknown_customer; add it there first",
                c.file.display()
            );
        }
        let floor = earliest.of(customer);
        if u64::try_from(r.first_at).map_or(true, |at| at < floor) {
            bail!(
                "device `{device}` of customer `{customer}`: a reading at {} is before {} ({}): \
                 the service would refuse it as before_start",
                stamp(r.first_at),
                stamp(i64::try_from(floor).unwrap_or(i64::MAX)),
                if earliest.contract_starts.contains_key(customer) {
                    "its contract start"
                } else {
                    "limits.earliest_event_time"
                }
            );
        }
    }
    Ok(())
}

fn stamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| format!("{ms} ms"), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("readings.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// Two customers' devices of the same id are two devices: each gets
    /// its own batches, numbered from 1, one per UTC hour.
    #[test]
    fn the_same_device_id_in_two_customers_makes_two_devices() {
        let (_dir, path) = csv("customer,site,device,time,state,operating_hours\n\
             a,s,exc-1,2026-03-01T10:05:00Z,running,10\n\
             b,s,exc-1,2026-03-01T10:06:00Z,idle,99\n\
             a,s,exc-1,2026-03-01T10:35:00Z,running,10.5\n\
             a,s,exc-1,2026-03-01T11:05:00Z,running,11\n");
        let got = read_csv(&path, Some(1), &Limits::default()).unwrap();
        let keys: Vec<(&str, u64, usize)> = (got.iter())
            .map(|r| {
                (
                    &*r.batch.customer_id,
                    r.batch.sequence,
                    r.batch.samples.len(),
                )
            })
            .collect();
        assert_eq!(keys, [("a", 1, 2), ("a", 2, 1), ("b", 1, 1)]);
        assert!(got.iter().all(|r| r.batch.unit_epoch == 1));
        assert_eq!(got[2].batch.samples[0].cumulative_operating_hours, 99.0);
    }

    /// A history exported in two files of consecutive periods, each sent
    /// with the defaults: the later file's batches are a unit of their own
    /// with a higher epoch (the same numbers again would be refused as
    /// replays), the same file gives the same epochs and numbers (sent
    /// again, it is refused, not doubled), and every epoch is far below a
    /// real unit's (Unix seconds).
    #[test]
    fn each_file_of_a_history_is_a_unit_of_its_own_under_the_default_epoch() {
        let epochs = |rows: &str| -> Vec<(String, u64, u64)> {
            let (_dir, path) = csv(&format!("customer,site,device,time\n{rows}"));
            let got = read_csv(&path, None, &Limits::default()).unwrap();
            (got.into_iter())
                .map(|r| (r.batch.device_id, r.batch.unit_epoch, r.batch.sequence))
                .collect()
        };
        let march = "a,s,d,2026-03-01T10:05:00Z\na,s,e,2026-03-02T00:00:00Z\n\
                     a,s,d,2026-03-31T23:55:00Z\n";
        let april = "a,s,d,2026-04-01T00:05:00Z\na,s,d,2026-04-02T07:00:00Z\n";
        let hour = |at: &str| at.parse::<jiff::Timestamp>().unwrap().as_second() as u64 / 3600;
        let (d, e) = (hour("2026-03-01T10:00:00Z"), hour("2026-03-02T00:00:00Z"));
        assert_eq!(
            epochs(march),
            [("d".into(), d, 1), ("d".into(), d, 2), ("e".into(), e, 1)]
        );
        let later = hour("2026-04-01T00:00:00Z");
        assert_eq!(
            epochs(april),
            [("d".into(), later, 1), ("d".into(), later, 2)]
        );
        assert_eq!(epochs(march), epochs(march));
        assert!(later < 1_000_000_000, "below any real unit's epoch");
    }

    /// A meter an export left blank was not read: it carries the value of
    /// the device's reading before it in time (rows in any order), not 0,
    /// whose next gain would be the meter's whole value.
    #[test]
    fn a_blank_meter_carries_the_reading_before_it() {
        let (_dir, path) = csv(
            "customer,site,device,time,operating_hours,idle_hours,fuel_litres\n\
             a,s,d,2026-03-01T12:00:00Z,102,22,540\n\
             a,s,d,2026-03-01T11:00:00Z,,21,\n\
             a,s,d,2026-03-01T10:00:00Z,100,20,500\n\
             a,s,e,2026-03-01T10:00:00Z,,,\n",
        );
        let got = read_csv(&path, Some(1), &Limits::default()).unwrap();
        let meters: Vec<(&str, f64, f64, f64)> = (got.iter())
            .flat_map(|r| {
                r.batch
                    .samples
                    .iter()
                    .map(move |s| (&*r.batch.device_id, s))
            })
            .map(|(d, s)| {
                let m = (s.cumulative_operating_hours, s.cumulative_idle_hours);
                (d, m.0, m.1, s.cumulative_fuel_used_litres)
            })
            .collect();
        assert_eq!(
            meters,
            [
                ("d", 100.0, 20.0, 500.0),
                ("d", 100.0, 21.0, 500.0),
                ("d", 102.0, 22.0, 540.0),
                ("e", 0.0, 0.0, 0.0),
            ]
        );
    }

    #[test]
    fn a_bad_reading_is_named_by_file_line_and_column() {
        let (_dir, path) = csv("customer,site,device,time,state\n\
             a,s,d,2026-03-01T10:05:00Z,running\n\
             a,s,d,yesterday,running\n");
        let e = format!(
            "{:#}",
            read_csv(&path, Some(1), &Limits::default()).unwrap_err()
        );
        assert!(e.contains("readings.csv: line 3, column `time`"), "{e}");
        let (_dir, path) = csv("customer,site,device,when\n");
        let e = format!(
            "{:#}",
            read_csv(&path, Some(1), &Limits::default()).unwrap_err()
        );
        assert!(e.contains("unknown column `when`"), "{e}");
    }

    /// An export in seconds, not milliseconds, is named at its line: read as
    /// milliseconds it lies in January 1970, which the service refuses.
    #[test]
    fn seconds_since_the_epoch_are_named_at_their_line() {
        let (_dir, path) = csv("customer,site,device,time\n\
             a,s,d,1767571200\n");
        let e = format!(
            "{:#}",
            read_csv(&path, Some(1), &Limits::default()).unwrap_err()
        );
        assert!(e.contains("readings.csv: line 2, column `time`"), "{e}");
        assert!(
            e.contains("looks like seconds since the epoch (2026-01-05T00:00:00Z)"),
            "{e}"
        );
    }

    /// What the service would refuse is said before anything is sent (the
    /// broker here is a closed port: nothing reaches it): a customer the
    /// customers file does not name, a reading before the contract start.
    #[tokio::test]
    async fn history_the_service_would_refuse_is_named_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let customers = dir.path().join("customers.toml");
        std::fs::write(
            &customers,
            "[[customer]]\nid = \"acme\"\nname = \"Acme\"\nsegment = \"low-touch\"\n\
             [customer.contract]\narr = 1000\nstart = \"2026-01-01\"\n\
             renewal = \"2027-01-01\"\ndevices_purchased = 2\noperator_seats = 2\n",
        )
        .unwrap();
        let config = dir.path().join("fleetpulse.toml");
        std::fs::write(
            &config,
            format!(
                "[mqtt]\nhost = \"127.0.0.1\"\nport = 1\n[customers]\nfile = {:?}\n",
                customers.display().to_string()
            ),
        )
        .unwrap();
        let backfill = |rows: &str| {
            let path = dir.path().join("history.csv");
            std::fs::write(&path, format!("customer,site,device,time\n{rows}")).unwrap();
            BackfillArgs {
                files: vec![path],
                config: config.clone(),
                customer: Vec::new(),
                username: None,
                password_env: None,
                unit_epoch: None,
            }
        };
        let e = run(&backfill("bolt,s,d,2026-03-01T10:00:00Z\n"))
            .await
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("customer `bolt` is not in"),
            "{e:#}"
        );
        let e = run(&backfill(
            "acme,s,d,2026-03-01T10:00:00Z\nacme,s,d,2025-12-31T10:00:00Z\n",
        ))
        .await
        .unwrap_err();
        assert!(
            format!("{e:#}").contains(
                "device `d` of customer `acme`: a reading at 2025-12-31T10:00:00Z is before \
                 2026-01-01T00:00:00Z (its contract start)"
            ),
            "{e:#}"
        );
    }
}
