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

mod history;
mod readings;
mod spill;

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use fleetpulse_proto::Limits;

use crate::config::ServiceConfig;
use crate::progress::Progress;

pub use history::{
    History, Recorded, Summary, is_dead_letter_file, read_batches, read_letters, write_batches,
};
pub use readings::{CSV_COLUMNS, read_csv};

/// `fleetpulse backfill` arguments.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// History files: recorded batches (length-delimited protobuf
    /// `TelemetryBatch`es, as `fleetpulse sim --record` writes them), a
    /// CSV of readings (`.csv`; docs/KPIS.md, Backfill), or the service's
    /// dead letters (`.jsonl`, `.jsonl.1`: the batches refused as too_late
    /// or unknown_customer, e.g. a customer's history sent before it was
    /// added).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The service's configuration: its broker is where the history goes.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only these customers' batches (default: every one in the files).
    #[arg(long, value_delimiter = ',')]
    pub customer: Vec<String>,
    /// The broker user (`fleetpulse-backfill` with deploy/mosquitto's
    /// access control).
    #[command(flatten)]
    pub publish_as: crate::handover::PublishAs,
    /// Unit epoch of the batches made from CSV readings: a unit of their
    /// own, so their sequence numbers never clash with the live unit's.
    /// Default: per device and file, the hour of its first reading counted
    /// from 1970, so a file of a later period gets a higher epoch than an
    /// earlier one (a history exported in parts), the same file the same
    /// epoch (sent again, it is refused as replayed), and every real unit's
    /// epoch (Unix seconds) is higher still.
    #[arg(long)]
    pub unit_epoch: Option<u64>,
    /// Send a history that starts before a store's retention all the same
    /// (that store drops its older windows; the others keep them).
    #[arg(long)]
    pub beyond_retention: bool,
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

/// Reads `files`' batches into a [`History`] (on disk past a few MB),
/// each checked as the service will; a line of progress by bytes read.
pub fn history(args: &BackfillArgs, limits: &Limits) -> anyhow::Result<History> {
    history_until(args, limits, None)
}

/// [`history`], refusing a CSV reading after `latest_ms` (the service's
/// clock plus `limits.max_future`), which the service would refuse as
/// `future_timestamp`, at its line.
pub fn history_until(
    args: &BackfillArgs,
    limits: &Limits,
    latest_ms: Option<i64>,
) -> anyhow::Result<History> {
    let sizes = (args.files.iter())
        .map(|file| match std::fs::metadata(file) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(anyhow::anyhow!("{}: no such file", file.display()))
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("{}", file.display()))),
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let mut history = History::new(args.customer.clone(), *limits);
    let mut progress = Progress::new("reading", "bytes", sizes.iter().sum());
    let mut before = 0;
    for (file, size) in args.files.iter().zip(&sizes) {
        let csv = file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let read = |n: u64| progress.set(before + n);
        if csv {
            read_csv(file, args.unit_epoch, limits, latest_ms, read, |b| {
                history.push(b)
            })?;
        } else if is_dead_letter_file(file) {
            let left = read_letters(file, &mut history)?;
            if left > 0 {
                eprintln!(
                    "{}: {left} letters left out (refused for another reason than too_late or \
                     unknown_customer, or cut)",
                    file.display()
                );
            }
        } else {
            read_batches(file, &mut history, read)?;
        }
        before += size;
    }
    let summary = history.summary();
    progress.finish(&format!(
        "{} batches of {} devices checked",
        summary.batches,
        summary.devices.len()
    ));
    Ok(history)
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
    let latest = latest_accepted(&config);
    // Seconds since 1970, as a unit's start: one ahead of the clock makes
    // the service refuse every batch.
    if let Some(epoch) = args.unit_epoch
        && i64::try_from(epoch.saturating_mul(1000)).map_or(true, |at| at > latest)
    {
        bail!(
            "--unit-epoch {epoch} s ({}) is later than this host's clock plus limits.max_future \
             ({}): the service would refuse every batch as future_timestamp (a unit cannot \
             have started yet)",
            stamp(i64::try_from(epoch.saturating_mul(1000)).unwrap_or(i64::MAX)),
            stamp(latest)
        );
    }
    let history = history_until(args, &config.limits(), Some(latest))?;
    if history.summary().batches == 0 {
        bail!("no batches to send (files empty, or no batch of --customer)");
    }
    refusals(history.summary(), &config, latest)?;
    if let Some((from, _)) = history.summary().period {
        crate::handover::stores_keep("the history", from, &config, args.beyond_retention).await?;
    }
    let (summary, mut batches) = history.sorted()?;
    let done = Backfilled {
        batches: summary.batches as usize,
        customers: summary.customers.into_keys().collect(),
        devices: summary.devices.len(),
        period: summary.period,
    };
    let options = crate::replay::publish_options(&config)?;
    let mut options = fleetpulse_sim::PublishOptions {
        client_id: format!("{}-backfill", config.mqtt.client_id),
        ..options
    };
    args.publish_as.apply(&mut options)?;
    let mut progress = Progress::new("backfilling", "batches", summary.batches);
    crate::handover::publish(options, (&mut batches).map(Recorded::into_message), |p| {
        progress.set(p.delivered)
    })
    .await?;
    if let Some(e) = batches.failed.take() {
        return Err(anyhow::Error::new(e).context(
            "reading the sorted history back from its runs on disk: the batches before it were \
             sent; send the history again (batches sent twice are refused as replayed)",
        ));
    }
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

/// The latest event time the service accepts now: its admission refuses a
/// batch whose newest sample is more than `limits.max_future` ahead of its
/// clock (`future_timestamp`); this host's clock stands in for it.
fn latest_accepted(config: &ServiceConfig) -> i64 {
    let now = crate::delivery::intake::wall_clock_ms();
    let skew = u64::try_from(config.limits.max_future.as_millis()).unwrap_or(u64::MAX);
    i64::try_from(now.saturating_add(skew)).unwrap_or(i64::MAX)
}

/// What the service would refuse, said before anything is sent: a customer
/// its customers file does not name (`unknown_customer`), a reading before
/// the customer's contract start or `limits.earliest_event_time`
/// (`before_start`: an export in the wrong unit or year), a reading later
/// than `latest` (`future_timestamp`; a CSV's is named at its line as it
/// is read).
fn refusals(history: &Summary, config: &ServiceConfig, latest: i64) -> anyhow::Result<()> {
    if let Some((_, last)) = history.period
        && last > latest
    {
        bail!(
            "a reading at {} is later than this host's clock plus limits.max_future ({}): \
             the service would refuse it as future_timestamp",
            stamp(last),
            stamp(latest)
        );
    }
    let file = match &config.customers {
        Some(c) => Some(crate::customers::CustomersFile::load(&c.file)?),
        None => None,
    };
    // A checked file gives every customer a contract start.
    let earliest = crate::admission::Earliest::from_config(&config.limits, file.as_ref());
    for (customer, first) in &history.customers {
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
        if u64::try_from(first.at).map_or(true, |at| at < floor) {
            bail!(
                "device `{}` of customer `{customer}`: a reading at {} is before {} ({}): \
                 the service would refuse it as before_start",
                first.device,
                stamp(first.at),
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

pub(crate) fn stamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| format!("{ms} ms"), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::v1;
    use std::path::Path;

    /// The batches a CSV makes, in the order they are cut.
    fn batches(path: &Path, unit_epoch: Option<u64>) -> anyhow::Result<Vec<v1::TelemetryBatch>> {
        let mut out = Vec::new();
        let keep = |b: &v1::TelemetryBatch| {
            out.push(b.clone());
            Ok(())
        };
        read_csv(path, unit_epoch, &Limits::default(), None, |_| (), keep)?;
        Ok(out)
    }

    fn csv(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("readings.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// The service's dead letters as a history: the batches it refused as
    /// `too_late` or `unknown_customer` (a customer's history sent before
    /// it was added), each to its device's backfill topic in event-time
    /// order; letters of other reasons left out and counted.
    #[test]
    fn dead_letters_refused_as_too_late_or_unknown_are_a_history() {
        use crate::dead_letter::{DeadLetter, DeadLetterOptions, DeadLetterStore};
        use crate::metrics::RejectReason;
        use prost::Message as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dead-letters.jsonl");
        let mut store = DeadLetterStore::open(&file, DeadLetterOptions::default()).unwrap();
        let t0: i64 = 1_780_000_000_000;
        let letters = [
            (RejectReason::TooLate, 3),
            (RejectReason::UnknownCustomer, 1),
            (RejectReason::SequenceReplayed, 2),
            (RejectReason::UnknownCustomer, 2),
        ];
        for (i, (reason, sequence)) in letters.into_iter().enumerate() {
            let batch = v1::TelemetryBatch {
                device_id: "exc-1".into(),
                customer_id: "newco".into(),
                site_id: "s".into(),
                sequence,
                unit_epoch: 0,
                firmware_version: "1".into(),
                samples: vec![v1::Sample {
                    event_time_ms: t0 + sequence as i64 * 3_600_000,
                    cumulative_operating_hours: sequence as f64,
                    ..Default::default()
                }],
            };
            let payload = batch.encode_to_vec();
            let letter = DeadLetter {
                topic: "fleet/newco/s/exc-1/telemetry",
                reason,
                detail: "refused",
                received_ms: 1_796_400_000_000 + i as u64,
                payload: &payload,
            };
            store.record(&letter).unwrap();
        }
        store.sync().unwrap();
        assert!(is_dead_letter_file(&file) && !is_dead_letter_file(Path::new("a.pb")));
        let mut history = History::new(Vec::new(), Limits::default());
        assert_eq!(
            read_letters(&file, &mut history).unwrap(),
            1,
            "the replayed one"
        );
        let (summary, sorted) = history.sorted().unwrap();
        assert_eq!(summary.batches, 3);
        let sent: Vec<(String, u64)> = sorted
            .map(|r| {
                let (topic, payload) = r.into_message();
                (
                    topic,
                    v1::TelemetryBatch::decode(&payload[..]).unwrap().sequence,
                )
            })
            .collect();
        let topic = "fleet/newco/s/exc-1/backfill".to_string();
        assert_eq!(sent, [(topic.clone(), 1), (topic.clone(), 2), (topic, 3)]);
    }

    /// An export from a spreadsheet set to a locale with decimal commas
    /// separates its columns by `;` (or a tab): the error says so, not
    /// only that the one column it sees is unknown. A UTF-8 byte order
    /// mark and CRLF line ends (the same spreadsheet's) are read as usual.
    #[test]
    fn a_csv_separated_by_semicolons_is_named_as_such() {
        let (_dir, path) = csv("customer;site;device;time;state;operating_hours\n\
             a;s;exc-1;2026-03-01T10:05:00Z;running;10,5\n");
        let e = batches(&path, Some(1)).unwrap_err().to_string();
        assert!(e.contains("separated by ';', not commas"), "{e}");
        let (_dir, path) = csv("customer\tsite\tdevice\ttime\n");
        let e = batches(&path, Some(1)).unwrap_err().to_string();
        assert!(e.contains("separated by '\\t'"), "{e}");
        let (_dir, path) = csv("\u{feff}customer,site,device,time,operating_hours\r\n\
             a,s,exc-1,2026-03-01T10:05:00Z,10.5\r\n");
        let got = batches(&path, Some(1)).unwrap();
        assert_eq!(got[0].samples[0].cumulative_operating_hours, 10.5);
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
        let got = batches(&path, Some(1)).unwrap();
        let keys: Vec<(&str, u64, usize)> = (got.iter())
            .map(|r| (&*r.customer_id, r.sequence, r.samples.len()))
            .collect();
        assert_eq!(keys, [("a", 1, 2), ("a", 2, 1), ("b", 1, 1)]);
        assert!(got.iter().all(|r| r.unit_epoch == 1));
        assert_eq!(got[2].samples[0].cumulative_operating_hours, 99.0);
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
            let got = batches(&path, None).unwrap();
            (got.into_iter())
                .map(|r| (r.device_id, r.unit_epoch, r.sequence))
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
        let got = batches(&path, Some(1)).unwrap();
        let meters: Vec<(&str, f64, f64, f64)> = (got.iter())
            .flat_map(|r| r.samples.iter().map(move |s| (&*r.device_id, s)))
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
        let e = format!("{:#}", batches(&path, Some(1)).unwrap_err());
        assert!(e.contains("readings.csv: line 3, column `time`"), "{e}");
        let (_dir, path) = csv("customer,site,device,when\n");
        let e = format!("{:#}", batches(&path, Some(1)).unwrap_err());
        assert!(e.contains("unknown column `when`"), "{e}");
    }

    /// A value the service refuses was named as `sample 0` of a batch,
    /// after the rows were cut into batches; it is named at its file, line
    /// and column, with the value.
    #[test]
    fn a_value_the_service_refuses_is_named_at_its_line_and_column() {
        let header = "customer,site,device,time,operating_hours,cycles,features\n";
        for (row, column, why) in [
            (
                "a,s,d,2026-03-01T10:05:00Z,NaN,,",
                "operating_hours",
                "`NaN` is negative or not finite",
            ),
            (
                "a,s,d,2026-03-01T10:05:00Z,-1,,",
                "operating_hours",
                "`-1` is negative or not finite",
            ),
            (
                "a,s,d,2026-03-01T10:05:00Z,inf,,",
                "operating_hours",
                "not finite",
            ),
            (
                "a,s,d,2026-03-01T10:05:00Z,1,2000000,",
                "cycles",
                "`2000000` is above the most",
            ),
            (
                "a,s,d,2026-03-01T10:05:00Z,1,-5,",
                "cycles",
                "`-5` is negative",
            ),
            (
                "a,s,d,2026-03-01T10:05:00Z,1,2.5,",
                "cycles",
                "`2.5` is not a whole number",
            ),
            (
                "a,s,d,2026-03-01T10:05:00Z,1,,eco:-1",
                "features",
                "`-1` is negative",
            ),
        ] {
            let (_dir, path) = csv(&format!("{header}a,s,d,2026-03-01T10:00:00Z,1,1,\n{row}\n"));
            let e = format!("{:#}", batches(&path, Some(1)).unwrap_err());
            assert!(
                e.contains(&format!("readings.csv: line 3, column `{column}`: ")),
                "{row}: {e}"
            );
            assert!(e.contains(why), "{row}: {e}");
            assert!(!e.contains("sample 0"), "{row}: {e}");
        }
    }

    /// An unterminated quote used to read every row after it into one
    /// value; it is refused at the line where it opened.
    #[test]
    fn an_unterminated_quote_is_refused_at_its_line() {
        let (_dir, path) = csv("customer,site,device,time,operator\n\
             a,s,d,2026-03-01T10:00:00Z,\"op-1\n\
             a,s,d,2026-03-01T10:05:00Z,op-2\n");
        let e = format!("{:#}", batches(&path, Some(1)).unwrap_err());
        assert!(e.contains("readings.csv: line 2, column `operator`"), "{e}");
        assert!(e.contains("never comes"), "{e}");
        let (_dir, path) = csv("customer,site,device,time,operator\n\
             a,s,d,2026-03-01T10:00:00Z,\"op-1\"\n");
        assert_eq!(
            batches(&path, Some(1)).unwrap()[0].samples[0].operator_id,
            "op-1"
        );
    }

    /// An export in seconds, not milliseconds, is named at its line: read as
    /// milliseconds it lies in January 1970, which the service refuses.
    #[test]
    fn seconds_since_the_epoch_are_named_at_their_line() {
        let (_dir, path) = csv("customer,site,device,time\n\
             a,s,d,1767571200\n");
        let e = format!("{:#}", batches(&path, Some(1)).unwrap_err());
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
                publish_as: Default::default(),
                unit_epoch: None,
                beyond_retention: false,
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
        // A reading later than the clock plus limits.max_future (600 s by
        // default) was sent, and dead-lettered as future_timestamp.
        let e = run(&backfill(
            "acme,s,d,2026-03-01T10:00:00Z\nacme,s,d,2099-01-01T00:00:00Z\n",
        ))
        .await
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("history.csv: line 3, column `time`"), "{e}");
        assert!(e.contains("future_timestamp"), "{e}");
        // Within the tolerance: read.
        let loaded = ServiceConfig::load(&config).unwrap();
        let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
        let args = backfill(&format!("acme,s,d,{soon}\n"));
        let latest = Some(latest_accepted(&loaded));
        assert!(history_until(&args, &loaded.limits(), latest).is_ok());
    }
}
