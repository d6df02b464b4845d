//! `fleetpulse backfill` on real parts: 90 days of a simulated fleet through
//! real mosquitto into SQLite. One customer's history is loaded after the
//! rest of the fleet ran live for 85 days (the customer brand new), another's
//! while its machines have sent live telemetry for five days (its first
//! earlier days from a CSV of readings). Both then go live with the others.
//! Every window and journey row equals a run that had every reading live in
//! event-time order. A customer live since day 0 cannot be backfilled: the
//! archive no longer holds its first days, and the history is refused,
//! saying why.

mod support;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use fleetpulse::config::ServiceConfig;
use fleetpulse::metrics::RejectReason;
use fleetpulse_proto::v1;
use fleetpulse_sim::{Fleet, FleetSpec};
use support::fleets::publish_options;
use support::in_process;
use support::servers::{Mosquitto, NO_LOSS};
use support::tables::{assert_same_as_in_order, rows, same_as_in_order};

const DAY_MS: i64 = 86_400_000;

fn fleet() -> Fleet {
    Fleet::generate(&FleetSpec {
        customers: 4,
        devices: 16,
        days: 90,
        seed: 23,
        ..FleetSpec::default()
    })
}

/// The service's config for `fleet` on `dir`, its customers file giving
/// the customers of `zones` their time zones.
fn config(
    mosquitto: &Mosquitto,
    dir: &Path,
    fleet: &Fleet,
    zones: &[(String, &str)],
    client: &str,
) -> ServiceConfig {
    let customers = dir.join("customers.toml");
    let mut file = fleetpulse::sim::customers_file(fleet);
    for c in &mut file.customers {
        if let Some((_, zone)) = zones.iter().find(|(id, _)| *id == c.id) {
            c.timezone = Some(toml::Spanned::new(0..0, zone.to_string()));
        }
    }
    std::fs::write(&customers, file.to_toml()).unwrap();
    let (host, port) = (mosquitto.host(), mosquitto.port());
    let mut config = in_process::durable(host, port, client, &customers, dir);
    config.limits.dead_letter_file = Some(dir.join("dead-letters.jsonl"));
    config
}

/// Publishes `messages` and waits until the service handled `handled`
/// messages in all and its restatements are done.
async fn feed(
    service: &in_process::InProcess,
    mosquitto: &Mosquitto,
    client: &str,
    messages: Vec<(String, Vec<u8>)>,
    handled: u64,
) {
    let settle = std::time::Duration::from_secs(4);
    in_process::publish_and_settle(service, mosquitto, client, messages, handled, settle).await;
}

async fn settle(service: &in_process::InProcess, handled: u64) {
    let metrics = service.metrics.clone();
    support::poll::wait_for("the messages handled", move || metrics.handled() >= handled).await;
    // Restatement passes run once a second.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
}

fn first_at(b: &v1::TelemetryBatch) -> i64 {
    b.samples.iter().map(|s| s.event_time_ms).min().unwrap()
}

/// `batches`' readings as a CSV of readings (the columns of
/// `fleetpulse::backfill::CSV_COLUMNS`).
fn readings_csv(path: &Path, batches: &[&v1::TelemetryBatch]) {
    let mut out = csv::Writer::from_path(path).unwrap();
    out.write_record(fleetpulse::backfill::CSV_COLUMNS).unwrap();
    for b in batches {
        for s in &b.samples {
            let state = match v1::MachineState::try_from(s.state).unwrap() {
                v1::MachineState::Unspecified => "",
                v1::MachineState::Running => "running",
                v1::MachineState::Idle => "idle",
                v1::MachineState::Off => "off",
                v1::MachineState::Fault => "fault",
            };
            let features: Vec<String> = (s.features.iter())
                .map(|f| format!("{}:{}", f.feature, f.active_seconds))
                .collect();
            let faults: Vec<String> = (s.fault_codes.iter())
                .map(|f| format!("{}:{}", f.code, f.severity))
                .collect();
            out.write_record([
                b.customer_id.clone(),
                b.site_id.clone(),
                b.device_id.clone(),
                jiff::Timestamp::from_millisecond(s.event_time_ms)
                    .unwrap()
                    .to_string(),
                state.to_string(),
                s.cumulative_operating_hours.to_string(),
                s.cumulative_idle_hours.to_string(),
                s.cumulative_fuel_used_litres.to_string(),
                s.cycles.to_string(),
                s.output_units.to_string(),
                s.manual_interventions.to_string(),
                s.operator_id.clone(),
                features.join(";"),
                faults.join(";"),
            ])
            .unwrap();
        }
    }
    out.flush().unwrap();
}

/// `fleetpulse backfill FILES -c CONFIG`, the binary; what it said.
fn backfill(config: &Path, files: &[&Path]) -> String {
    let mut args: Vec<&std::ffi::OsStr> = vec!["backfill".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    args.extend(["-c".as_ref(), config.as_os_str()]);
    in_process::fleetpulse(args)
}

/// The fleet split as the tests load it.
struct Scenario {
    mosquitto: Mosquitto,
    fleet: Fleet,
    all: Vec<v1::TelemetryBatch>,
    /// No live telemetry before its history is loaded.
    fresh: String,
    /// Live from day 80, its first 80 days loaded from a CSV.
    joined: String,
    /// Live from day 0.
    old: String,
    day80: i64,
    day85: i64,
    /// Customers' time zones (none: UTC days).
    zones: Vec<(String, &'static str)>,
}

impl Scenario {
    fn new() -> Self {
        let fleet = fleet();
        let all: Vec<v1::TelemetryBatch> =
            fleet.messages_in_event_time().map(|m| m.batch).collect();
        let ids: Vec<String> = fleet.customers().iter().map(|c| c.id.clone()).collect();
        let start = all.iter().map(first_at).min().unwrap();
        Self {
            mosquitto: Mosquitto::start_with_config(NO_LOSS),
            fresh: ids[1].clone(),
            joined: ids[2].clone(),
            old: ids[3].clone(),
            fleet,
            all,
            day80: start + 80 * DAY_MS,
            day85: start + 85 * DAY_MS,
            zones: Vec::new(),
        }
    }

    /// The reference: every reading live, in event-time order; its store.
    async fn reference(&self, dir: &Path) -> std::path::PathBuf {
        let cfg = config(
            &self.mosquitto,
            dir,
            &self.fleet,
            &self.zones,
            "backfill-reference",
        );
        let service = in_process::subscribed(cfg, "backfill-reference").await;
        let everything: Vec<&v1::TelemetryBatch> = self.all.iter().collect();
        let n = everything.len() as u64;
        let messages = in_process::encoded(&everything);
        feed(&service, &self.mosquitto, "backfill-ref-sim", messages, n).await;
        service.shutdown.cancel();
        service.task.await.unwrap().unwrap();
        dir.join("kpi.sqlite")
    }

    /// Until day 85: every customer's telemetry but `fresh`'s, and
    /// `joined`'s from day 80 only.
    fn live_before(&self) -> Vec<&v1::TelemetryBatch> {
        (self.all.iter())
            .filter(|b| first_at(b) < self.day85)
            .filter(|b| {
                b.customer_id != self.fresh
                    && (b.customer_id != self.joined || first_at(b) >= self.day80)
            })
            .collect()
    }

    /// From day 85, everyone's.
    fn live_after(&self) -> Vec<&v1::TelemetryBatch> {
        (self.all.iter())
            .filter(|b| first_at(b) >= self.day85)
            .collect()
    }

    /// A service on `dir` (and the CLI's config file naming its broker),
    /// fed [`Self::live_before`]; how many messages it handled.
    async fn live_until_day_85(
        &self,
        dir: &Path,
    ) -> (
        ServiceConfig,
        std::path::PathBuf,
        in_process::InProcess,
        u64,
    ) {
        let (cfg, config_file) = self.service_config(dir);
        let service = in_process::subscribed(cfg.clone(), "backfill-fleet").await;
        let live = self.live_before();
        let handled = live.len() as u64;
        let messages = in_process::encoded(&live);
        feed(
            &service,
            &self.mosquitto,
            "backfill-sim-1",
            messages,
            handled,
        )
        .await;
        (cfg, config_file, service, handled)
    }

    /// Everyone live from day 85 to the end (`handled`: what the service
    /// handled before), then the service stopped.
    async fn finish(&self, service: in_process::InProcess, handled: u64) {
        let live = self.live_after();
        let handled = handled + live.len() as u64;
        let messages = in_process::encoded(&live);
        feed(
            &service,
            &self.mosquitto,
            "backfill-sim-2",
            messages,
            handled,
        )
        .await;
        service.shutdown.cancel();
        service.task.await.unwrap().unwrap();
    }

    /// The history files in `dir`: `fresh`'s 85 days as recorded batches,
    /// `joined`'s first 80 as a CSV of readings; how many batches they make.
    fn histories(&self, dir: &Path) -> (Vec<std::path::PathBuf>, u64) {
        let recorded = dir.join("fresh.binpb");
        let fresh: Vec<&v1::TelemetryBatch> = (self.all.iter())
            .filter(|b| b.customer_id == self.fresh && first_at(b) < self.day85)
            .collect();
        fleetpulse::backfill::write_batches(&recorded, fresh.iter().copied()).unwrap();
        let csv = dir.join("joined.csv");
        let joined: Vec<&v1::TelemetryBatch> = (self.all.iter())
            .filter(|b| b.customer_id == self.joined && first_at(b) < self.day80)
            .collect();
        readings_csv(&csv, &joined);
        let files = vec![recorded, csv];
        let n = batches_in(&files);
        (files, n)
    }

    /// The service's config, and a config file for the CLI naming its broker.
    fn service_config(&self, dir: &Path) -> (ServiceConfig, std::path::PathBuf) {
        let cfg = config(
            &self.mosquitto,
            dir,
            &self.fleet,
            &self.zones,
            "backfill-fleet",
        );
        let file = dir.join("fleetpulse.toml");
        let text = format!(
            "[mqtt]\nhost = \"{}\"\nport = {}\nclient_id = \"backfill-cli\"\n",
            self.mosquitto.host(),
            self.mosquitto.port()
        );
        std::fs::write(&file, text).unwrap();
        (cfg, file)
    }
}

/// How many batches `fleetpulse backfill` makes of `files`.
fn batches_in(files: &[std::path::PathBuf]) -> u64 {
    let args = fleetpulse::backfill::BackfillArgs {
        files: files.to_vec(),
        config: "unused".into(),
        customer: Vec::new(),
        publish_as: Default::default(),
        unit_epoch: None,
        beyond_retention: false,
    };
    fleetpulse::backfill::history(&args, &Default::default())
        .unwrap()
        .summary()
        .batches
}

fn refusals(service: &in_process::InProcess) -> Vec<(&'static str, u64)> {
    (RejectReason::ALL.iter())
        .map(|r| (r.as_str(), service.metrics.rejected(*r)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilled_history_equals_the_live_run_over_it() {
    backfilled_equals_live(Scenario::new()).await;
}

/// The same with the customers in time zones whose clocks change within
/// their histories: `fresh` in Berlin (summer time from 29 March, day 83
/// of its 85), `joined` in St. John's (half an hour off the UTC hour, from
/// 8 March, day 62 of its 80), `old` in Kathmandu (a quarter hour off).
/// A pass in parts ends at UTC midnights, inside their local days; every
/// row still equals the live run in event-time order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilled_history_in_customers_time_zones_equals_the_live_run() {
    let mut s = Scenario::new();
    s.zones = vec![
        (s.fresh.clone(), "Europe/Berlin"),
        (s.joined.clone(), "America/St_Johns"),
        (s.old.clone(), "Asia/Kathmandu"),
    ];
    backfilled_equals_live(s).await;
}

/// `s`'s histories of `fresh` and `joined` backfilled into a service that
/// took the rest live; a history of `old`, pruned, refused; every row
/// against the run that took everything live in event-time order.
async fn backfilled_equals_live(s: Scenario) {
    let reference = tempfile::tempdir().unwrap();
    let reference_db = s.reference(reference.path()).await;

    let dir = tempfile::tempdir().unwrap();
    let (_, config_file, service, mut handled) = s.live_until_day_85(dir.path()).await;
    assert_eq!(service.metrics.rejected_total(), 0);

    let (files, sent) = s.histories(dir.path());
    let files: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    let said = backfill(&config_file, &files);
    println!("{said}");
    assert!(
        said.contains(&s.fresh) && said.contains(&s.joined),
        "{said}"
    );
    handled += sent;
    settle(&service, handled).await;
    assert!(
        refusals(&service).is_empty(),
        "refused: {:?}",
        refusals(&service)
    );
    // All late but the newest hours, within the allowed lateness of the
    // live fleet's watermark: those are taken in live.
    let late = service.metrics.late_admitted.load(Relaxed);
    assert!(late <= sent && late >= sent - 100, "{late} of {sent} late");

    // A customer live since day 0: its first days are pruned from the
    // archive; a history of it is refused, saying why.
    let old_history: Vec<&v1::TelemetryBatch> = (s.all.iter())
        .filter(|b| b.customer_id == s.old && first_at(b) < s.day80 - 79 * DAY_MS)
        .collect();
    let again = dir.path().join("old.csv");
    readings_csv(&again, &old_history);
    backfill(&config_file, &[&again]);
    let refused = batches_in(std::slice::from_ref(&again));
    handled += refused;
    settle(&service, handled).await;
    assert_eq!(service.metrics.rejected(RejectReason::TooLate), refused);
    let letters = std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap();
    let why = format!("backfill of customer `{}` refused", s.old);
    assert!(
        letters.contains(&why) && letters.contains("pruned"),
        "{letters}"
    );

    s.finish(service, handled).await;

    for customer in [&s.fresh, &s.joined] {
        let (rows, _) = rows(&reference_db, "health");
        assert!(
            rows.keys().any(|k| k.contains(customer.as_str())),
            "{customer}"
        );
    }
    assert_same_as_in_order(&dir.path().join("kpi.sqlite"), &reference_db);
    // The zones took: each zoned customer's days start at its local
    // midnight, and one of them (its clocks changed) is not 24 hours long.
    let db = rusqlite::Connection::open(dir.path().join("kpi.sqlite")).unwrap();
    for (customer, zone) in &s.zones {
        let tz = jiff::tz::TimeZone::get(zone).unwrap();
        let mut days = db
            .prepare(
                "SELECT window_start, window_end FROM customer_kpi \
                 WHERE customer = ?1 AND window = '1d' ORDER BY window_start",
            )
            .unwrap();
        let days: Vec<(i64, i64)> = (days.query_map([customer], |r| Ok((r.get(0)?, r.get(1)?))))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(days.len() >= 85, "{customer}: {} days", days.len());
        for (start, _) in &days {
            let local = jiff::Timestamp::from_millisecond(*start)
                .unwrap()
                .to_zoned(tz.clone());
            assert_eq!((local.hour(), local.minute()), (0, 0), "{customer} {local}");
        }
        let changed = days.iter().filter(|(a, b)| b - a != DAY_MS).count();
        assert_eq!(
            changed,
            usize::from(*zone != "Asia/Kathmandu"),
            "{customer}"
        );
    }
}

/// A long history reaches the service in parts: a big file takes longer
/// to publish than a restatement waits (30 s), a broker redelivers a
/// session's queue in bursts, an operator exports a year as two files and
/// runs `fleetpulse backfill` on each, with the default options. A
/// pass restates the first part; live telemetry goes on meanwhile, and the
/// archive drops the days past the horizon. The rest of the history, older
/// than the horizon, must still be taken in and restated, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_sent_in_two_parts_with_a_pass_between_them_is_taken_in_whole() {
    let s = Scenario::new();
    let reference = tempfile::tempdir().unwrap();
    let reference_db = s.reference(reference.path()).await;

    let dir = tempfile::tempdir().unwrap();
    let (_, config_file, service, mut handled) = s.live_until_day_85(dir.path()).await;
    // `fresh`'s 85 days of recorded batches and `joined`'s 80 days of
    // readings (a CSV), each split at day 40.
    let day40 = s.day80 - 40 * DAY_MS;
    let history = |customer: &str, end: i64| -> (Vec<&v1::TelemetryBatch>, Vec<_>) {
        (s.all.iter())
            .filter(|b| b.customer_id == customer && first_at(b) < end)
            .partition(|b| first_at(b) < day40)
    };
    let (fresh, joined) = (history(&s.fresh, s.day85), history(&s.joined, s.day80));
    let part = |name: &str, batches: &[&v1::TelemetryBatch], readings: &[&v1::TelemetryBatch]| {
        let recorded = dir.path().join(format!("{name}.binpb"));
        fleetpulse::backfill::write_batches(&recorded, batches.iter().copied()).unwrap();
        let csv = dir.path().join(format!("{name}.csv"));
        readings_csv(&csv, readings);
        [recorded, csv]
    };
    let first_part = part("first", &fresh.0, &joined.0);
    let second_part = part("second", &fresh.1, &joined.1);

    backfill(&config_file, &[&first_part[0], &first_part[1]]);
    handled += batches_in(&first_part);
    settle(&service, handled).await;
    let metrics = service.metrics.clone();
    support::poll::wait_for("the first part restated", move || {
        metrics.restatements.load(Relaxed) > 0
    })
    .await;
    // Half a day of everyone's live telemetry: the watermark moves and the
    // archive prunes past the horizon.
    let (soon, later): (Vec<_>, Vec<_>) =
        (s.live_after().into_iter()).partition(|b| first_at(b) < s.day85 + DAY_MS / 2);
    feed(
        &service,
        &s.mosquitto,
        "backfill-sim-2",
        in_process::encoded(&soon),
        handled + soon.len() as u64,
    )
    .await;
    handled += soon.len() as u64;

    backfill(&config_file, &[&second_part[0]]);
    backfill(&config_file, &[&second_part[1]]);
    handled += batches_in(&second_part);
    settle(&service, handled).await;
    assert!(
        refusals(&service).is_empty(),
        "refused: {:?}\n{}",
        refusals(&service),
        std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap_or_default()
    );

    let n = handled + later.len() as u64;
    feed(
        &service,
        &s.mosquitto,
        "backfill-sim-3",
        in_process::encoded(&later),
        n,
    )
    .await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    assert_same_as_in_order(&dir.path().join("kpi.sqlite"), &reference_db);
    // `fresh` and `joined` were silent live for more than the onboarding
    // days: each had onboarding_stalled opened for a fleet that never
    // reported, which its history retracted (the run in order has none).
    let db = rusqlite::Connection::open(dir.path().join("kpi.sqlite")).unwrap();
    for customer in [&s.fresh, &s.joined] {
        let retracted: i64 = db
            .query_row(
                "SELECT count(*) FROM alert WHERE customer = ?1 \
                 AND rule = 'onboarding_stalled' AND status = 'retracted'",
                [customer],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(retracted, 1, "{customer}: its silence's alert, retracted");
    }
}

/// A careless export: `joined`'s readings up to day 85, five days past the
/// day its machines went live (day 80). Those readings are the live units'
/// again; taken in, they would count twice (a run of this export before
/// the check doubled the samples, cycles, output and interventions of the
/// five days). Each batch reaching into the live telemetry is refused,
/// saying from when; the rest is taken, and every row equals the run with
/// every reading once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_that_overlaps_the_live_telemetry_is_refused_where_it_does() {
    let s = Scenario::new();
    let reference = tempfile::tempdir().unwrap();
    let reference_db = s.reference(reference.path()).await;

    let dir = tempfile::tempdir().unwrap();
    let (_, config_file, service, mut handled) = s.live_until_day_85(dir.path()).await;
    let (files, _) = s.histories(dir.path());
    let joined = |from: i64| -> Vec<&v1::TelemetryBatch> {
        (s.all.iter())
            .filter(|b| b.customer_id == s.joined && (from..s.day85).contains(&first_at(b)))
            .collect()
    };
    let export = dir.path().join("joined-to-day-85.csv");
    readings_csv(&export, &joined(0));
    let overlap = dir.path().join("overlap.csv");
    readings_csv(&overlap, &joined(s.day80));
    let refused = batches_in(std::slice::from_ref(&overlap));
    assert!(refused > 0);

    backfill(&config_file, &[&files[0], &export]);
    handled += batches_in(&[files[0].clone(), export.clone()]);
    settle(&service, handled).await;
    assert_eq!(refusals(&service), [("too_late", refused)]);
    let letters = std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap();
    let why = format!("backfill of customer `{}` refused", s.joined);
    assert!(
        letters.contains(&why) && letters.contains("live telemetry began at"),
        "{letters}"
    );

    s.finish(service, handled).await;
    assert_same_as_in_order(&dir.path().join("kpi.sqlite"), &reference_db);
}

/// The worst moments for an operator's backfill: the service stops right
/// after the history is sent (archived, not yet restated), and the
/// operator, unsure, sends it all again after the restart, while the
/// restart's replay restates the first copy and the archive then prunes
/// its days past the horizon. Nothing changes: what the archive holds is
/// known, what it pruned meanwhile is refused (before, a batch admitted
/// just before its day was pruned was restated from that day alone, and
/// the customer's windows of it lost the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_before_the_restatement_and_a_second_backfill_change_nothing() {
    let s = Scenario::new();
    let reference = tempfile::tempdir().unwrap();
    let reference_db = s.reference(reference.path()).await;

    let dir = tempfile::tempdir().unwrap();
    let (cfg, config_file, service, handled) = s.live_until_day_85(dir.path()).await;

    let (files, sent) = s.histories(dir.path());
    let files: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    backfill(&config_file, &files);
    let metrics = service.metrics.clone();
    support::poll::wait_for("the history handled", move || {
        metrics.handled() >= handled + sent
    })
    .await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();

    let service = in_process::subscribed(cfg, "backfill-fleet").await;
    backfill(&config_file, &files);
    settle(&service, sent).await;
    // The second copy: the newest sequences of each unit are refused as
    // replayed, the older ones are in the archive already or, once the
    // first copy's restatement is done, pruned from it and refused.
    let refused = refusals(&service);
    assert!(
        (refused.iter()).all(|(reason, _)| ["sequence_replayed", "too_late"].contains(reason)),
        "{refused:?}"
    );
    let letters = std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap();
    for letter in letters.lines() {
        let letter: serde_json::Value = serde_json::from_str(letter).unwrap();
        let detail = letter["detail"].as_str().unwrap();
        assert!(
            detail.contains("was delivered before")
                || detail.contains("were pruned from the archive"),
            "{detail}"
        );
    }
    assert_eq!(
        service.metrics.late_admitted.load(Relaxed),
        0,
        "nothing new"
    );

    let handled = service.metrics.handled();
    s.finish(service, handled).await;
    assert_same_as_in_order(&dir.path().join("kpi.sqlite"), &reference_db);
}

/// SIGKILL at the worst moments of a backfill: right after the history is
/// sent (taken in, archived or not, restated or not), and again a moment
/// after the restart (a restatement under way). The real binary with its
/// WAL and a persistent session; restarted each time. Every row ends equal
/// to the live run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_while_the_history_is_taken_in_loses_and_doubles_nothing() {
    const CONNECTED: &str = "subscribed";
    let s = Scenario::new();
    let reference = tempfile::tempdir().unwrap();
    let reference_db = s.reference(reference.path()).await;

    let (dir, config, mut service) = live_until_day_85_in_a_process(&s, "backfill-kill").await;

    let (files, _) = s.histories(dir.path());
    let files: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    backfill(&config, &files);
    service.kill();
    service.start_and_wait(CONNECTED);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    service.kill();
    service.start_and_wait(CONNECTED);
    publish_live(&s, s.live_after(), "backfill-kill-sim-2").await;

    let dir = settled(&mut service, dir, &reference_db).await;
    let (_, revision) = rows(&dir.path().join("kpi.sqlite"), "customer_kpi");
    assert!(revision > 0, "the history was restated into its windows");
    println!("started {} times", service.starts());
}

/// An export of 150,000 readings, time by time across 20 machines (the
/// order a portal exports them in), is more than one run of the CLI's sort:
/// on a temporary disk of 1 MB the run does not fit, and `fleetpulse
/// backfill` says so, naming the disk, before anything is sent (the tmpfs is
/// left empty); with room, every reading reaches the broker once, each
/// machine's in its hourly batches numbered 1, 2, 3..., all in event-time
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_larger_than_a_sort_run_spills_to_tmpdir_and_a_full_one_is_named() {
    use support::small_disk::{SmallDisk, rerun_in_namespace};
    let Some(disk) = SmallDisk::mount("1m") else {
        return rerun_in_namespace(
            "a_history_larger_than_a_sort_run_spills_to_tmpdir_and_a_full_one_is_named",
        );
    };
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let (devices, minutes) = (20, 7_500i64);
    let start = "2026-06-01T00:00:00Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond();
    let mut csv = String::from("customer,site,device,time,state,operating_hours,cycles\n");
    for m in 0..minutes {
        for d in 0..devices {
            let at = start + m * 60_000;
            csv += &format!(
                "acme,quarry,exc-{d:02},{at},running,{},1\n",
                m as f64 / 60.0
            );
        }
    }
    let file = dir.path().join("export.csv");
    std::fs::write(&file, csv).unwrap();
    let config = dir.path().join("fleetpulse.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n",
            mosquitto.port()
        ),
    )
    .unwrap();
    let topic = "fleet/+/+/+/backfill";
    mosquitto.subscribe_session("counter", topic);
    let backfill = |tmp: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
            .arg("backfill")
            .arg(&file)
            .arg("-c")
            .arg(&config)
            .env("TMPDIR", tmp)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };

    let full = backfill(disk.path());
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(!full.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "export.csv: sorting its readings in runs under {}",
            disk.path().display()
        )) && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(disk.path()).unwrap().count(), 0);
    let none = mosquitto.receive("counter", topic, 1, std::time::Duration::from_secs(2));
    assert!(
        none.is_empty(),
        "sent before the history was read: {none:?}"
    );

    let roomy = dir.path().join("tmp");
    std::fs::create_dir(&roomy).unwrap();
    let done = backfill(&roomy);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let hours = minutes / 60 + i64::from(minutes % 60 != 0);
    let batches = (devices * hours) as usize;
    let got = mosquitto.receive(
        "counter",
        topic,
        batches + 1,
        std::time::Duration::from_secs(5),
    );
    assert_eq!(got.len(), batches);
    let mut previous_first = i64::MIN;
    let mut next_sequence = std::collections::HashMap::new();
    let mut readings = std::collections::HashSet::new();
    for message in &got {
        use prost::Message as _;
        let batch = v1::TelemetryBatch::decode(&message.payload[..]).unwrap();
        let first = batch.samples[0].event_time_ms;
        assert!(first >= previous_first, "out of event-time order");
        previous_first = first;
        let expected = next_sequence.entry(batch.device_id.clone()).or_insert(1);
        assert_eq!(batch.sequence, *expected, "{}", batch.device_id);
        *expected += 1;
        assert!(
            batch
                .samples
                .iter()
                .all(|s| s.event_time_ms.div_euclid(3_600_000) == first.div_euclid(3_600_000))
        );
        for s in &batch.samples {
            assert!(
                readings.insert((batch.device_id.clone(), s.event_time_ms)),
                "twice"
            );
        }
    }
    assert_eq!(readings.len(), (devices * minutes) as usize);
    assert_eq!(std::fs::read_dir(&roomy).unwrap().count(), 0);
}

/// The service binary on real mosquitto, with two customers: `acme`, whose
/// history is loaded, and `bolt`, live.
struct TwoCustomers {
    mosquitto: Mosquitto,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    http: u16,
    service: support::service::Service,
}

impl TwoCustomers {
    fn start(client: &str) -> Self {
        Self::start_with_wal(client, None)
    }

    /// [`Self::start`] with the WAL directory (and the archive in it) at
    /// `wal`, if given.
    fn start_with_wal(client: &str, wal: Option<&Path>) -> Self {
        let mut run = Self::configured(client, wal);
        run.service.start_and_wait("subscribed");
        run
    }

    /// [`Self::start_with_wal`] without the start: the broker has never
    /// seen the service.
    fn configured(client: &str, wal: Option<&Path>) -> Self {
        let mosquitto = Mosquitto::start_with_config(NO_LOSS);
        let dir = tempfile::tempdir().unwrap();
        let wal = wal.map_or(dir.path().join("wal"), Path::to_path_buf);
        let customers = dir.path().join("customers.toml");
        let customer = |id: &str| {
            format!(
                "[[customer]]\nid = \"{id}\"\nname = \"{id}\"\nsegment = \"low-touch\"\n\
                 [customer.contract]\narr = 1000\nstart = \"2024-01-01\"\nrenewal = \"2030-01-01\"\n\
                 devices_purchased = 4\noperator_seats = 4\n"
            )
        };
        std::fs::write(&customers, customer("acme") + &customer("bolt")).unwrap();
        let http = support::servers::free_port();
        let config = dir.path().join("fleetpulse.toml");
        std::fs::write(
            &config,
            format!(
                "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"{client}\"\n\
                 [customers]\nfile = {:?}\n[wal]\ndir = {:?}\n\
                 [http]\nenabled = true\nlisten = \"127.0.0.1:{http}\"\n\
                 [[sinks]]\ntype = \"sqlite\"\npath = {:?}\n",
                mosquitto.port(),
                customers.display().to_string(),
                wal.display().to_string(),
                dir.path().join("kpi.sqlite").display().to_string(),
            ),
        )
        .unwrap();
        let log = dir.path().join("service.log");
        let service = support::service::Service::new(&config, &log);
        Self {
            mosquitto,
            dir,
            config,
            http,
            service,
        }
    }

    /// One reading of `bolt`'s at `at`: the history is older than the
    /// horizon behind it, archived day by day and restated.
    fn live(&self, at: i64) {
        use prost::Message as _;
        let live = v1::TelemetryBatch {
            device_id: "live-1".into(),
            customer_id: "bolt".into(),
            site_id: "s".into(),
            sequence: 1,
            firmware_version: "t".into(),
            samples: vec![v1::Sample {
                event_time_ms: at,
                state: v1::MachineState::Running as i32,
                ..Default::default()
            }],
            unit_epoch: 1,
        };
        (self.mosquitto).publish("fleet/bolt/s/live-1/telemetry", &live.encode_to_vec(), 1);
    }

    /// `acme`'s two machines, a reading an hour for `days` days from
    /// `start`, through `fleetpulse backfill`.
    fn backfill(&self, start: i64, days: i64) {
        self.backfill_part(start, 0..days);
    }

    /// Days `days` (counted from `start`) of the history of
    /// [`Self::backfill`], as a file of their own through `fleetpulse
    /// backfill`: a history exported in parts.
    fn backfill_part(&self, start: i64, days: std::ops::Range<i64>) {
        let sent = self.send_history(start, days);
        assert!(
            sent.status.success(),
            "{}",
            String::from_utf8_lossy(&sent.stderr)
        );
    }

    /// What `fleetpulse backfill` of [`Self::backfill_part`]'s file did.
    fn send_history(&self, start: i64, days: std::ops::Range<i64>) -> std::process::Output {
        self.send_history_with(start, days, &[])
    }

    /// [`Self::send_history`] with more of the command's arguments.
    fn send_history_with(
        &self,
        start: i64,
        days: std::ops::Range<i64>,
        args: &[&str],
    ) -> std::process::Output {
        let mut csv = String::from("customer,site,device,time,state,operating_hours\n");
        for h in days.start * 24..days.end * 24 {
            for d in 0..2 {
                let at = start + h * 3_600_000;
                csv += &format!("acme,s,exc-{d},{at},running,{}\n", h as f64 * 0.5);
            }
        }
        let file = (self.dir.path()).join(format!("history-{}-{}.csv", days.start, days.end));
        std::fs::write(&file, csv).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
            .arg("backfill")
            .arg(&file)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn metric(&self, name: &str) -> u64 {
        support::service::metric(&support::service::metrics(self.http), name)
    }

    /// Started; `bolt`'s reading four hours past today's midnight (UTC),
    /// `acme`'s twelve days ending three days before it backfilled, and
    /// restated into the store; the midnight.
    fn twelve_days_restated(client: &str) -> (Self, i64) {
        let run = Self::start(client);
        let hour = 3_600_000;
        let now = jiff::Timestamp::now().as_millisecond();
        let midnight = (now - 4 * hour).div_euclid(DAY_MS) * DAY_MS;
        run.live(midnight + 4 * hour);
        run.backfill(midnight - 15 * DAY_MS, 12);
        run.until_metric("fleetpulse_restatements_total", 1, 60);
        // Counted as handed to the store: read the store once it wrote them.
        let handed = run.metric("fleetpulse_records_emitted_total")
            + run.metric("fleetpulse_records_restated_total");
        run.until_metric("fleetpulse_sink_records_written_total", handed, 30);
        (run, midnight)
    }

    /// Waits (up to `within` seconds) until metric `name` reaches
    /// `least`.
    fn until_metric(&self, name: &str, least: u64, within: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(within);
        while self.metric(name) < least {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: {} after {within} s, {least} expected\n{}",
                self.metric(name),
                self.service.log_tail()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// A history of 150 days loaded into a service held to 200 open files
/// (systemd's default is 1,024; a year's day files, three descriptors each
/// for the archive and as many for a pass, went past it and the service
/// stopped with "Too many open files"): every day file is read by the
/// restatement and nothing fails to open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_of_many_days_fits_the_open_file_limit() {
    let mut run = TwoCustomers::start("many-days");
    let pid = run.service.pid().unwrap().to_string();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=200:200"])
        .status()
        .unwrap();
    assert!(limited.success());

    let now = jiff::Timestamp::now().as_millisecond() - 60_000;
    run.live(now);
    let days = 150;
    run.backfill(now - (days + 10) * DAY_MS, days);
    let days = days as u64;
    run.until_metric("fleetpulse_restatement_days_read_total", days, 90);
    assert_eq!(
        run.metric("fleetpulse_messages_accepted_total"),
        days * 24 * 2 + 1
    );
    let text = run.service.log();
    assert!(!text.contains("Too many open files"), "{text}");
    assert!(!text.contains("unable to open database file"), "{text}");
    run.service.stop();
}

/// The portfolio holds the engine's frontier at the last closed day until
/// every time zone's day of that date has closed: from midnight UTC to
/// 14:00 plus the allowed lateness. A restatement covers that day (the
/// backfilled customer's empty days are closed up to it), and the fan-out
/// held the pass until the frontier passed it: a history loaded in the
/// morning was restated in the afternoon, and on a quiet fleet not at all
/// (found on a busy host, whose slow intake let the first pass start while
/// the history still came). Here the live reading sets the watermark two
/// hours past a midnight: the pass must be written within seconds, and a
/// stop must change none of the rows it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restatement_of_the_last_closed_day_does_not_wait_for_the_portfolio() {
    let days = 12;
    let (mut run, midnight) = TwoCustomers::twelve_days_restated("portfolio-wait");

    // `acme`'s rows of the closed days, by key, revisions aside.
    let db = run.dir.path().join("kpi.sqlite");
    let closed = |table: &str| {
        let end = |row: &Vec<(String, String)>| {
            let (_, v) = row.iter().find(|(n, _)| n == "window_end").unwrap();
            v.trim_start_matches("Integer(")
                .trim_end_matches(')')
                .parse::<i64>()
                .unwrap()
        };
        let (rows, _) = rows(&db, table);
        (rows.into_iter())
            .filter(|(k, row)| k.starts_with("Text(\"acme\")") && end(row) <= midnight)
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let health = closed("health");
    assert_eq!(health.len() as i64, days + 3, "{health:?}");
    let written = ["customer_kpi", "device_kpi", "health"].map(|t| (t, closed(t)));
    run.service.stop();
    for (table, before) in written {
        assert!(!before.is_empty(), "{table}");
        assert_eq!(closed(table), before, "{table}: changed at the stop");
    }
}

/// Each date's portfolio figures fold every customer's health of that date
/// (the live portfolio operator's rule). The days of a backfilled history,
/// and its empty days up to where its journey was adopted, are dates on
/// which no live customer had health: they got no figures (the pass folded
/// a date's figures again only where the live dataflow had emitted some).
/// Here `bolt` has sent one reading today; `acme`'s fifteen days before it
/// are `acme`'s alone. Every date's row is checked against a fold of the
/// health table done here, in SQL. (A date's first figures came from a
/// pass that ran once the engine's frontier passed the date's end, but the
/// live operator waits for the day of the date in every time zone: the
/// store then held yesterday's figures or not depending on when the pass
/// ran, and a run compared with another one differed by that row.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilled_customer_s_dates_alone_get_their_portfolio_figures() {
    let days = 12;
    let (mut run, _) = TwoCustomers::twelve_days_restated("portfolio-alone");
    run.service.stop();

    let db = rusqlite::Connection::open(run.dir.path().join("kpi.sqlite")).unwrap();
    let table = |sql: &str| -> Vec<String> {
        let mut select = db.prepare(sql).unwrap();
        let rows = select.query_map([], |r| {
            let row: Vec<String> = (0..7)
                .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect();
            Ok(row.join(" "))
        });
        rows.unwrap().map(Result::unwrap).collect()
    };
    let folded = table(
        "SELECT window_start, count(*), sum(arr), sum(arr_at_risk), \
         sum(band = 'green'), sum(band = 'yellow'), sum(band = 'red') \
         FROM health WHERE provisional = 0 GROUP BY window_start ORDER BY window_start",
    );
    let stored = table(
        "SELECT window_start, customers, arr_total, arr_at_risk, green, yellow, red \
         FROM portfolio ORDER BY window_start",
    );
    // The history's days and the empty ones up to today; today's is still
    // open (a stop closes no day). Yesterday's figures wait for every time
    // zone's day of it (until 14:00 UTC today), which the engine has not
    // passed: none yet, as in a live run, whenever the pass ran.
    assert_eq!(folded.len() as i64, days + 3, "{folded:#?}");
    assert_eq!(stored, folded[..folded.len() - 1]);
}

/// `acme`'s daily windows in the store of `run`.
fn acme_days(run: &TwoCustomers) -> i64 {
    let db = rusqlite::Connection::open(run.dir.path().join("kpi.sqlite")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    (db.query_row(
        "SELECT count(*) FROM customer_kpi WHERE customer = 'acme' AND window = '1d'",
        [],
        |r| r.get(0),
    ))
    .unwrap_or(0)
}

/// Waits (up to `within` seconds) until the store of `run` holds `days` of
/// `acme`'s daily windows.
fn until_acme_days(run: &TwoCustomers, days: i64, within: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(within);
    while acme_days(run) < days {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {days} days\n{}",
            acme_days(run),
            run.service.log_tail()
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// `days` of `acme`'s two machines, backfilled four hours after today's
/// midnight of `bolt`'s live reading, ending three days before it, all in
/// the store; the midnight and the history's first day.
fn history_reference(client: &str, days: i64) -> (TwoCustomers, i64, i64) {
    let hour = 3_600_000;
    let now = jiff::Timestamp::now().as_millisecond();
    let midnight = (now - 4 * hour).div_euclid(DAY_MS) * DAY_MS;
    let start = midnight - (days + 3) * DAY_MS;
    let reference = TwoCustomers::start(client);
    reference.live(midnight + 4 * hour);
    reference.backfill(start, days);
    until_acme_days(&reference, days, 120);
    (reference, midnight, start)
}

/// Two hundred days of `acme`'s two machines, backfilled four hours after
/// today's midnight of `bolt`'s live reading: the reference run of the
/// parts tests, stopped; the midnight and the history's first day.
fn parts_reference() -> (TwoCustomers, i64, i64) {
    let (mut reference, midnight, start) = history_reference("parts-reference", PARTS_DAYS);
    // A part a month at most: seven passes at least.
    let parts = (PARTS_DAYS as u64).div_ceil(31);
    let passes = reference.metric("fleetpulse_restatements_total");
    assert!(passes >= parts, "{passes} passes");
    reference.service.stop();
    (reference, midnight, start)
}

const PARTS_DAYS: i64 = 200;

/// A history of 200 days goes to the stores in parts of at most a month,
/// each written before the next is read: a pass holds a part's windows,
/// not the whole history's (BENCHMARKS.md, section 35). The service is
/// killed (SIGKILL) once the store holds the first part and not the last;
/// started again, it restates the rest without a stop, and the store
/// equals, value by value, a run that took the same history without the
/// kill. (Before, a backfilled customer adopted after such a restart got
/// no health for its empty days up to the restart: the service took them
/// for records written before its checkpoint.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_is_restated_in_parts_and_a_kill_between_them_loses_nothing() {
    parts_after_fault("parts-kill", None, |run| {
        run.service.kill();
        run.service.start_and_wait("subscribed");
    });
}

/// The same history, the service killed (SIGKILL) again and again at the
/// worst moments of its passes: three times within milliseconds of a part
/// of the pass being handed to the store, before the store wrote it (the
/// first, third and fourth part since the start), and once while a clean
/// stop (SIGINT) is writing the parts it still owes. Each time it is started again at once. The store equals,
/// value by value, the run without a fault: no pass is taken for written
/// that the store lacks, and none restates from past what the store holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_killed_at_its_passes_hand_offs_and_during_a_stop_loses_nothing() {
    let (reference, midnight, start) = parts_reference();
    let mut run = TwoCustomers::start("parts-kills");
    run.live(midnight + 4 * 3_600_000);
    run.backfill(start, PARTS_DAYS);
    let mut killed = Vec::new();
    // The first part handed on since the start, the third, the second
    // (and stopped), the fourth.
    for (fault, passes) in [1, 3, 2, 4].into_iter().enumerate() {
        // A pass handed to the store: the metric counts it as it goes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while run.metric("fleetpulse_restatements_total") < passes {
            if acme_days(&run) >= PARTS_DAYS || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        if fault == 2 {
            // A clean stop writes what it owes; killed while it does.
            run.service.interrupt();
            std::thread::sleep(std::time::Duration::from_millis(150));
        }
        killed.push(acme_days(&run));
        run.service.kill();
        run.service.start_and_wait("subscribed");
    }
    until_acme_days(&run, PARTS_DAYS, 180);
    println!("days in the store at each kill: {killed:?}");
    run.service.stop();
    assert!(
        killed.iter().any(|&days| days < PARTS_DAYS),
        "every part was written before the first kill: {killed:?}"
    );
    assert_same_as_in_order(
        &run.dir.path().join("kpi.sqlite"),
        &reference.dir.path().join("kpi.sqlite"),
    );
}

/// A simulated fleet's service binary on its own broker, with a WAL, the
/// SQLite store and `/metrics`: the kill tests' runs.
struct FleetRun {
    mosquitto: Mosquitto,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    http: u16,
    service: support::service::Service,
}

impl FleetRun {
    fn start(fleet: &Fleet, client: &str) -> Self {
        use support::service::write_durable_config;
        let mosquitto = Mosquitto::start_with_config(NO_LOSS);
        let dir = tempfile::tempdir().unwrap();
        support::fleets::write_customers(dir.path(), fleet);
        let http = support::servers::free_port();
        let sections = format!(
            "[alerts]\nmqtt = false\n\n[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n\n\
             [http]\nenabled = true\nlisten = \"127.0.0.1:{http}\"\n"
        );
        let config = write_durable_config(dir.path(), &mosquitto, client, 2, "", &sections);
        let mut service = support::service::Service::new(&config, dir.path().join("service.log"));
        service.start_and_wait("subscribed");
        Self {
            mosquitto,
            dir,
            config,
            http,
            service,
        }
    }

    fn metric(&self, name: &str) -> u64 {
        support::service::metric(&support::service::metrics(self.http), name)
    }

    /// Publishes `batches` as a simulator does (as `client`) and waits
    /// until this run of the service took in as many messages.
    async fn publish(&self, batches: &[&v1::TelemetryBatch], client: &str) {
        let messages = in_process::encoded(batches);
        let n = messages.len() as u64;
        let options = publish_options(&self.mosquitto, client);
        fleetpulse_sim::publish(options, messages, |_| {})
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while self.metric("fleetpulse_messages_accepted_total") < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} messages taken in\n{}",
                self.metric("fleetpulse_messages_accepted_total"),
                self.service.log_tail()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The count `query` makes of `customer`'s rows in the store (0 while
    /// it has no such table).
    fn count(&self, query: &str, customer: &str) -> i64 {
        let db = rusqlite::Connection::open(self.dir.path().join("kpi.sqlite")).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        (db.query_row(query, [customer], |r| r.get(0))).unwrap_or(0)
    }

    /// `customer`'s daily windows in the store.
    fn days(&self, customer: &str) -> i64 {
        let query = "SELECT count(*) FROM customer_kpi WHERE customer = ?1 AND window = '1d'";
        self.count(query, customer)
    }
}

/// A simulated fleet of three customers over 60 days: one of them brand
/// new, its first 40 days loaded as a history (two parts of a pass) while
/// the others' first 40 days are in; then the last 20 days of every
/// customer published live while the service is killed (SIGKILL) within
/// milliseconds of the history's passes being handed to the store (the
/// first, then the second after a start), and once while a clean stop
/// writes what it owes, each time started again at once. Every table,
/// the journey records (outcomes, milestones, health, forecasts, alerts)
/// among them, equals, value by value, the run that took every reading
/// live in event-time order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_s_history_restated_through_kills_equals_the_live_run() {
    let fleet = support::fleets::fleet(3, 12, 60, 41);
    let all: Vec<v1::TelemetryBatch> = fleet.messages_in_event_time().map(|m| m.batch).collect();
    let fresh = fleet.customers()[1].id.clone();
    let day40 = all.iter().map(first_at).min().unwrap() + 40 * DAY_MS;
    let (before, after): (Vec<&v1::TelemetryBatch>, Vec<_>) =
        all.iter().partition(|b| first_at(b) < day40);
    let (history, before): (Vec<&v1::TelemetryBatch>, Vec<_>) =
        before.into_iter().partition(|b| b.customer_id == fresh);

    let mut reference = FleetRun::start(&fleet, "kills-reference");
    reference
        .publish(&all.iter().collect::<Vec<_>>(), "kills-reference-sim")
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let want = reference.days(&fresh);
    reference.service.stop();

    let mut run = FleetRun::start(&fleet, "kills-run");
    run.publish(&before, "kills-sim-1").await;
    let file = run.dir.path().join("history.binpb");
    fleetpulse::backfill::write_batches(&file, history.iter().copied()).unwrap();
    println!("{}", backfill(&run.config, &[&file]));
    // The live days go on meanwhile, across the kills.
    let options = fleetpulse_sim::PublishOptions {
        rate: Some(400.0),
        give_up_after: std::time::Duration::from_secs(120),
        ..publish_options(&run.mosquitto, "kills-sim-2")
    };
    let live = tokio::spawn(fleetpulse_sim::publish(
        options,
        in_process::encoded(&after),
        |_| {},
    ));
    let mut killed = Vec::new();
    for (fault, passes) in [1, 2, 1, 1].into_iter().enumerate() {
        // A pass handed to the store: the metric counts it as it goes.
        // (None within 20 s: the history's passes are done.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while run.metric("fleetpulse_restatements_total") < passes {
            if std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        if fault == 2 {
            // A clean stop writes what it owes; killed while it does.
            run.service.interrupt();
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
        killed.push(run.days(&fresh));
        run.service.kill();
        // Its session kept: it subscribes no more.
        run.service.start_and_wait("subscribed");
    }
    println!("days of {fresh} in the store at each kill: {killed:?}");
    assert!(
        killed.iter().any(|&days| days < 40),
        "the history was written before the first kill: {killed:?}"
    );
    live.await.unwrap().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while run.days(&fresh) < want {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {want} days\n{}",
            run.days(&fresh),
            run.service.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    run.service.stop();
    assert_same_as_in_order(
        &run.dir.path().join("kpi.sqlite"),
        &reference.dir.path().join("kpi.sqlite"),
    );
}

/// `customer`'s health days in the store of `run`.
fn health_days(run: &FleetRun, customer: &str) -> i64 {
    run.count("SELECT count(*) FROM health WHERE customer = ?1", customer)
}

/// A fleet of two customers over 80 days, one live throughout, the other's
/// first 21 days loaded as a history once the live days are in (its
/// machines silent since): a pass in three parts, the history's month,
/// a month of nothing, and the rest folded by the live journey. With
/// `kill`, the service is killed (SIGKILL) within milliseconds of the
/// third part being handed to the store, and started again. The run,
/// stopped once the store holds `days` of the silent customer's health
/// (if given); the silent customer; its health days at the kill.
async fn a_silent_history(client: &str, kill: bool, days: Option<i64>) -> (FleetRun, String, i64) {
    let fleet = support::fleets::fleet(2, 8, 80, 43);
    let all: Vec<v1::TelemetryBatch> = fleet.messages_in_event_time().map(|m| m.batch).collect();
    let silent = fleet.customers()[1].id.clone();
    let day21 = all.iter().map(first_at).min().unwrap() + 21 * DAY_MS;
    let history: Vec<&v1::TelemetryBatch> = (all.iter())
        .filter(|b| b.customer_id == silent && first_at(b) < day21)
        .collect();
    let live: Vec<&v1::TelemetryBatch> = all.iter().filter(|b| b.customer_id != silent).collect();
    let mut run = FleetRun::start(&fleet, client);
    run.publish(&live, &format!("{client}-sim")).await;
    let file = run.dir.path().join("history.binpb");
    fleetpulse::backfill::write_batches(&file, history.iter().copied()).unwrap();
    backfill(&run.config, &[&file]);
    let mut at_kill = 0;
    if kill {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while run.metric("fleetpulse_restatements_total") < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                run.service.log_tail()
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        at_kill = health_days(&run, &silent);
        run.service.kill();
        run.service.start_and_wait("subscribed");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let want = days.unwrap_or(80);
    while health_days(&run, &silent) < want {
        if days.is_none() && std::time::Instant::now() > deadline {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {want} health days of {silent}\n{}",
            health_days(&run, &silent),
            run.service.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    run.service.stop();
    (run, silent, at_kill)
}

/// A kill between the hand-off of a history's last part and the store's
/// write of it: that part, folded by the live journey, holds the silent
/// days after the history (a month of them in the empty part before it),
/// and the pass noted their journey states in the archive before the
/// store wrote them. Run again after the start, it folded on from those
/// states, from where the empty part had moved its row, and the store
/// never got the silent customer's health, outcomes, milestones,
/// forecasts and alerts of those days (seen in a hostile pass: 23 health,
/// 41 forecast, 82 outcome, 123 milestone rows and 5 of 6 alerts, with
/// the live journey's "never reported" values after them). The states
/// are now kept once the store wrote the pass: every table equals the
/// run without the kill, value by value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_as_the_last_part_of_a_history_is_handed_on_loses_none_of_its_days() {
    let (reference, silent, _) = a_silent_history("silent-reference", false, None).await;
    let days = health_days(&reference, &silent);
    let (run, _, at_kill) = a_silent_history("silent-kill", true, Some(days)).await;
    println!("{at_kill} of {days} health days of {silent} in the store at the kill");
    assert!(at_kill < days, "the store held every day at the kill");
    assert_same_as_in_order(
        &run.dir.path().join("kpi.sqlite"),
        &reference.dir.path().join("kpi.sqlite"),
    );
}

/// The history taken in whole (every batch archived and acknowledged) by
/// a service that cannot store its checkpoint (a directory squats on
/// `checkpoint.json`, as a full disk or a careless hand would leave it);
/// then the service is killed, the squatter removed, and the service
/// started again without a checkpoint. The start replays everything and
/// the history's passes start over from its first day: the store equals,
/// value by value, the run without the kill. (Before, a start without a
/// checkpoint moved the passes back to 1970, and they went forward a month
/// a second: 0 of 200 days after 120 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_before_any_checkpoint_restates_the_history_from_its_first_day() {
    let (reference, midnight, start) = parts_reference();
    let mut run = TwoCustomers::start("parts-no-checkpoint");
    let checkpoint = run.dir.path().join("wal").join("checkpoint.json");
    std::fs::create_dir_all(checkpoint.join("squatter")).unwrap();
    run.live(midnight + 4 * 3_600_000);
    run.backfill(start, PARTS_DAYS);
    // Every reading acknowledged: bolt's and the history's, a batch an
    // hour and machine.
    let batches = (PARTS_DAYS * 24 * 2 + 1) as u64;
    run.until_metric("fleetpulse_messages_accepted_total", batches, 60);
    // Tried within a second of bolt's reading moving the frontier.
    let tried = std::time::Duration::from_secs(10);
    (run.service).wait_for_log_within("cannot write the checkpoint", 1, tried);
    run.service.kill();
    std::fs::remove_dir_all(&checkpoint).unwrap();
    run.service.start_and_wait("subscribed");
    until_acme_days(&run, PARTS_DAYS, 120);
    run.service.stop();
    assert_same_as_in_order(
        &run.dir.path().join("kpi.sqlite"),
        &reference.dir.path().join("kpi.sqlite"),
    );
}

/// The same history with the WAL directory, and the archive the parts are
/// read from and noted in, on a disk that fills once the first part is in
/// the store: the archive's writes fail ("database or disk is full") while
/// it stays full; three seconds after the service first says so, the space
/// comes back. The service
/// runs on, the passes are tried again, and the store equals the run
/// without the fault, value by value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_between_the_parts_of_a_history_loses_nothing() {
    use support::small_disk::{SmallDisk, fill_disk, rerun_in_namespace};
    let Some(disk) = SmallDisk::mount("64m") else {
        return rerun_in_namespace(
            "a_disk_that_fills_between_the_parts_of_a_history_loses_nothing",
        );
    };
    let wal = disk.path().join("wal");
    parts_after_fault("parts-full", Some(&wal), |run| {
        let filler = disk.path().join("filler");
        fill_disk(&filler);
        // Full until the service has met it (SQLite may say only "disk
        // I/O error": the archive's message then says the disk is full),
        // and three seconds more.
        let full = |log: &str| {
            [
                "database or disk is full",
                "disk holding it is full",
                "No space left on device",
            ]
            .iter()
            .any(|said| log.contains(said))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !full(&run.service.log()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the disk never filled:\n{}",
                run.service.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let log = run.service.log();
        let said = log.lines().find(|l| full(l)).unwrap_or_default();
        println!("the disk full: {said}");
        std::thread::sleep(std::time::Duration::from_secs(3));
        std::fs::remove_file(&filler).unwrap();
    });
}

/// The parts history again (`wal`: the WAL directory, if not the run's
/// own), with `fault` done once the store holds its first part and not
/// its last; then, once every day is in, stopped, and every table against
/// the run without the fault.
fn parts_after_fault(client: &str, wal: Option<&Path>, fault: impl FnOnce(&mut TwoCustomers)) {
    let (reference, midnight, start) = parts_reference();
    let mut run = TwoCustomers::start_with_wal(client, wal);
    run.live(midnight + 4 * 3_600_000);
    run.backfill(start, PARTS_DAYS);
    // The first part in the store (a day or two of the history may come
    // the live way before it, and are no part).
    run.until_metric("fleetpulse_records_restated_total", 1, 60);
    let handed = run.metric("fleetpulse_records_emitted_total")
        + run.metric("fleetpulse_records_restated_total");
    run.until_metric("fleetpulse_sink_records_written_total", handed, 60);
    let at_fault = acme_days(&run);
    fault(&mut run);
    assert!(
        at_fault < PARTS_DAYS,
        "every part was written before the fault"
    );
    until_acme_days(&run, PARTS_DAYS, 120);
    println!("{at_fault} of {PARTS_DAYS} days written at the fault");
    run.service.stop();
    assert_same_as_in_order(
        &run.dir.path().join("kpi.sqlite"),
        &reference.dir.path().join("kpi.sqlite"),
    );
}

/// A new installation: the operator loads a customer's history before the
/// service ever connected to the broker. The broker has no session to keep
/// it for and dropped every batch, while `fleetpulse backfill` said "sent"
/// (over MQTT 3.1.1 a publish no one subscribes to is acknowledged all the
/// same). It stops at the first batch, saying the service has never
/// connected; sent again once the service runs, the whole history is taken
/// in (the dropped first batch is no replay) and the store equals the run
/// that had the service running from the start, value by value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_sent_before_the_service_ever_connected_stops_and_is_sent_again() {
    let days = 12;
    let (mut reference, midnight, start) = history_reference("early-reference", days);
    reference.service.stop();
    let mut run = TwoCustomers::configured("sent-too-early", None);
    let early = run.send_history(start, 0..days);
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert!(!early.status.success(), "sent: {stderr}");
    assert!(
        stderr.contains("has no subscriber for `fleet/acme/s/exc-0/backfill`")
            && stderr.contains("Start `fleetpulse run`"),
        "{stderr}"
    );
    run.service.start_and_wait("subscribed");
    run.live(midnight + 4 * 3_600_000);
    run.backfill(start, days);
    until_acme_days(&run, days, 120);
    let metrics = support::service::metrics(run.http);
    let refused: Vec<&str> = (metrics.lines())
        .filter(|l| l.starts_with("fleetpulse_messages_rejected_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    run.service.stop();
    assert_same_as_in_order(
        &run.dir.path().join("kpi.sqlite"),
        &reference.dir.path().join("kpi.sqlite"),
    );
}

/// Stores keep a history only as far back as their retention:
/// VictoriaMetrics keeps a month unless told otherwise and drops older
/// samples answering 204, an InfluxDB database keeps what its default
/// retention policy says. A history of two months ago is refused before
/// anything is sent, naming the store, from when it keeps and what to do;
/// once the InfluxDB policy keeps everything, VictoriaMetrics is named
/// next, and for dead letters of that age sent again by `fleetpulse
/// replay`. Sent all the same (`--beyond-retention`), SQLite and InfluxDB
/// hold every day of it, VictoriaMetrics none, and no sink saw an error:
/// what the refusal spares the operator. A history of ten days ago goes
/// through as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_older_than_a_store_keeps_is_refused_naming_the_store() {
    let influx = support::servers::InfluxDb1::start();
    influx.query("_internal", "CREATE DATABASE kept WITH DURATION 30d");
    let vm = support::servers::VictoriaMetrics::start_with_args(&["-retentionPeriod=1"]);
    let run = TwoCustomers::configured("retention", None);
    let mut config = std::fs::read_to_string(&run.config).unwrap();
    config += &format!(
        "[[sinks]]\ntype = \"influxdb_v1\"\nurl = \"{}\"\ndatabase = \"kept\"\n\
         [[sinks]]\ntype = \"influxdb_v1\"\nurl = \"{}\"\ndatabase = \"fleet\"\n",
        influx.url(),
        vm.url()
    );
    std::fs::write(&run.config, config).unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    let midnight = now.div_euclid(DAY_MS) * DAY_MS;
    let old = midnight - 60 * DAY_MS;
    let refused = |sent: &std::process::Output, store: &[&str]| {
        let stderr = String::from_utf8_lossy(&sent.stderr);
        assert!(!sent.status.success(), "sent: {stderr}");
        let said = ["keeps nothing before", "--beyond-retention"];
        assert!(
            (store.iter().chain(&said)).all(|s| stderr.contains(s))
                && !stderr.contains("subscriber"),
            "{stderr}"
        );
    };
    refused(
        &run.send_history(old, 0..5),
        &[
            "[[sinks]] 2 (influxdb_v1 http://127.0.0.1",
            "(the default retention policy of InfluxDB database `kept`)",
        ],
    );
    influx.query(
        "kept",
        "ALTER RETENTION POLICY autogen ON kept DURATION INF",
    );
    refused(
        &run.send_history(old, 0..5),
        &["[[sinks]] 3", "(VictoriaMetrics -retentionPeriod=1)"],
    );
    // Dead letters of the same age, sent again: the same check.
    let letter = {
        use prost::Message as _;
        let batch = v1::TelemetryBatch {
            device_id: "exc-0".into(),
            customer_id: "acme".into(),
            site_id: "s".into(),
            sequence: 1,
            firmware_version: "t".into(),
            samples: vec![v1::Sample {
                event_time_ms: old,
                ..Default::default()
            }],
            unit_epoch: 1,
        };
        let payload = batch.encode_to_vec();
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{{\"received_ms\":{now},\"reason\":\"too_late\",\"topic\":\"fleet/acme/s/exc-0/telemetry\",\
             \"detail\":\"\",\"payload_bytes\":{},\"payload_hex\":\"{hex}\"}}\n",
            payload.len()
        )
    };
    let letters = run.dir.path().join("letters.jsonl");
    std::fs::write(&letters, letter).unwrap();
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .arg("replay")
        .arg(&letters)
        .arg("-c")
        .arg(&run.config)
        .output()
        .unwrap();
    refused(
        &replay,
        &["[[sinks]] 3", "the dead letters' oldest reading starts"],
    );

    let mut run = run;
    run.service.start_and_wait("subscribed");
    // The service says what each store keeps (the log's fields are quoted).
    run.service
        .wait_for_log_within("store retention", 3, std::time::Duration::from_secs(30));
    let log = run.service.log();
    for kept in [
        "keeps everything",
        "keeps 31 days (VictoriaMetrics -retentionPeriod=1)",
    ] {
        assert!(log.contains(kept), "{kept}:\n{log}");
    }
    run.live(now);
    let sent = run.send_history_with(old, 0..5, &["--beyond-retention"]);
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert!(sent.status.success(), "{stderr}");
    assert!(
        stderr.contains("sent all the same (--beyond-retention)"),
        "{stderr}"
    );
    until_acme_days(&run, 5, 120);
    let recent = run.send_history(midnight - 10 * DAY_MS, 0..5);
    let stderr = String::from_utf8_lossy(&recent.stderr);
    assert!(recent.status.success(), "{stderr}");
    until_acme_days(&run, 10, 120);
    let errors = run.metric("fleetpulse_sink_write_errors_total");
    run.service.stop();
    assert_eq!(errors, 0, "no store said anything");
    let days = |rows: Vec<i64>| {
        let mut days: Vec<i64> = rows.iter().map(|t| (t - old).div_euclid(DAY_MS)).collect();
        days.sort();
        days.dedup();
        days
    };
    let influx_rows = influx.query(
        "kept",
        "SELECT operating_hours FROM customer_kpi WHERE customer = 'acme' AND \"window\" = '1d'",
    );
    let influx_days = (influx_rows.pointer("/results/0/series/0/values"))
        .and_then(|v| v.as_array())
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let at: jiff::Timestamp = r[0].as_str().unwrap().parse().unwrap();
                    at.as_millisecond()
                })
                .collect()
        })
        .unwrap_or_default();
    let both: Vec<i64> = (0..5).chain(50..55).collect();
    assert_eq!(days(influx_days), both, "InfluxDB keeps both histories");
    vm.force_flush();
    let vm_days = (vm.export("customer_kpi_operating_hours{customer=\"acme\",window=\"1d\"}"))
        .iter()
        .flat_map(|series| series["timestamps"].as_array().unwrap().clone())
        .map(|t| t.as_i64().unwrap())
        .collect();
    assert_eq!(
        days(vm_days),
        (50..55).collect::<Vec<_>>(),
        "VictoriaMetrics the recent one"
    );
    assert_eq!(acme_days(&run), 10, "SQLite both");
}

/// A history exported as five monthly files and loaded newest first (a
/// shell loop over `ls -r`), each by its own `fleetpulse backfill`. Each
/// file's readings get a unit epoch of their own (the hour of its first
/// reading), lower with every file sent, while the sequence windows
/// remember the four highest epochs of a device: the fifth file is older
/// than all of them, and only the archive can tell it from a replay.
/// Nothing may be refused, and every row equals the run that took the
/// history as one file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_in_monthly_files_loaded_newest_first_is_taken_in_whole() {
    let days = 150;
    let (mut reference, midnight, start) = history_reference("monthly-reference", days);
    reference.service.stop();

    let mut run = TwoCustomers::start("monthly-newest-first");
    run.live(midnight + 4 * 3_600_000);
    for month in (0..days / 30).rev() {
        run.backfill_part(start, month * 30..(month + 1) * 30);
    }
    // Every reading accepted (a batch an hour and machine), none refused.
    let batches = (days * 24 * 2 + 1) as u64;
    run.until_metric("fleetpulse_messages_accepted_total", batches, 60);
    let metrics = support::service::metrics(run.http);
    let refused: Vec<&str> = (metrics.lines())
        .filter(|l| l.starts_with("fleetpulse_messages_rejected_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    until_acme_days(&run, days, 120);
    run.service.stop();
    assert_same_as_in_order(
        &run.dir.path().join("kpi.sqlite"),
        &reference.dir.path().join("kpi.sqlite"),
    );
}

/// Six customers' histories loaded together, more than the passes under
/// way at once (4): the others wait their turn, and every customer's rows
/// equal a run that took everything live in event-time order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_s_histories_loaded_together_equal_the_live_run() {
    histories_loaded_together("fleet", |_| {}).await;
}

/// The same, with every customer's machines numbered alike (`exc-001` at
/// each, as a dealer numbers them, not `c02-exc-001`): six histories whose
/// device ids clash, restated in parts (35 days of three machines: two),
/// four passes at once. Each customer's windows, sequences and journey
/// stay its own: every row equals the run in event-time order with the
/// same ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_whose_device_ids_clash_across_customers_stay_apart() {
    histories_loaded_together("clash", |b| {
        let (_, local) = b.device_id.split_once('-').unwrap();
        b.device_id = local.to_string();
    })
    .await;
}

/// Seven customers over 40 days (`rename` applied to every batch), the
/// first live throughout, the others' first 35 days loaded as one file of
/// recorded batches; every table against the run in event-time order.
async fn histories_loaded_together(name: &str, rename: impl Fn(&mut v1::TelemetryBatch)) {
    let fleet = support::fleets::fleet(7, 21, 40, 31);
    let mut all: Vec<v1::TelemetryBatch> =
        fleet.messages_in_event_time().map(|m| m.batch).collect();
    all.iter_mut().for_each(rename);
    // A service's name is its config path, kept for the test's length.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let ids: Vec<String> = fleet.customers().iter().map(|c| c.id.clone()).collect();
    let start = all.iter().map(first_at).min().unwrap();
    let day35 = start + 35 * DAY_MS;
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);

    let reference = tempfile::tempdir().unwrap();
    let cfg = config(
        &mosquitto,
        reference.path(),
        &fleet,
        &[],
        &format!("{name}-reference"),
    );
    let service = in_process::subscribed(cfg, leak(format!("{name}-reference"))).await;
    let everything: Vec<&v1::TelemetryBatch> = all.iter().collect();
    let n = everything.len() as u64;
    feed(
        &service,
        &mosquitto,
        &format!("{name}-ref-sim"),
        in_process::encoded(&everything),
        n,
    )
    .await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();

    // The first customer live throughout; the others live from day 35,
    // their first 35 days loaded as one file of recorded batches.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &mosquitto,
        dir.path(),
        &fleet,
        &[],
        &format!("{name}-backfill"),
    );
    let config_file = dir.path().join("fleetpulse.toml");
    let text = format!(
        "[mqtt]\nhost = \"{}\"\nport = {}\nclient_id = \"{name}-cli\"\n",
        mosquitto.host(),
        mosquitto.port()
    );
    std::fs::write(&config_file, text).unwrap();
    let service = in_process::subscribed(cfg, leak(format!("{name}-backfill"))).await;
    let live = |b: &&v1::TelemetryBatch| b.customer_id == ids[0] || first_at(b) >= day35;
    let (before, after): (Vec<&v1::TelemetryBatch>, Vec<&v1::TelemetryBatch>) =
        (all.iter()).filter(live).partition(|b| first_at(b) < day35);
    let mut handled = before.len() as u64;
    feed(
        &service,
        &mosquitto,
        &format!("{name}-sim-1"),
        in_process::encoded(&before),
        handled,
    )
    .await;
    let history: Vec<&v1::TelemetryBatch> = all.iter().filter(|b| !live(b)).collect();
    let file = dir.path().join("fleet.binpb");
    fleetpulse::backfill::write_batches(&file, history.iter().copied()).unwrap();
    let said = backfill(&config_file, &[&file]);
    assert!(
        ids[1..].iter().all(|id| said.contains(id.as_str())),
        "{said}"
    );
    handled += history.len() as u64;
    settle(&service, handled).await;
    assert!(
        refusals(&service).is_empty(),
        "refused: {:?}",
        refusals(&service)
    );
    handled += after.len() as u64;
    feed(
        &service,
        &mosquitto,
        &format!("{name}-sim-2"),
        in_process::encoded(&after),
        handled,
    )
    .await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    assert_same_as_in_order(
        &dir.path().join("kpi.sqlite"),
        &reference.path().join("kpi.sqlite"),
    );
}

/// A unit epoch given by hand that lies in the future (a typo, milliseconds
/// for seconds): every batch would reach the service and be refused as
/// `future_timestamp` while the command said it sent them. It is refused
/// before anything is sent, naming the flag and the time it stands for.
#[test]
fn a_unit_epoch_ahead_of_the_clock_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.csv");
    std::fs::write(
        &file,
        "customer,site,device,time,operating_hours\nacme,pit,d1,2026-06-01T00:00:00Z,1\n",
    )
    .unwrap();
    let config = dir.path().join("fleetpulse.toml");
    // Port 1: nothing listens; the check comes before any connection.
    std::fs::write(&config, "[mqtt]\nhost = \"127.0.0.1\"\nport = 1\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args(["backfill", "--unit-epoch", "1780272000000"])
        .arg(&file)
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--unit-epoch 1780272000000 s")
            && stderr.contains("future_timestamp")
            && !stderr.contains("sent"),
        "{stderr}"
    );
}

/// SIGKILL while a history still arrives: the service has archived the
/// first of it (a restatement is pending), the rest waits at the broker in
/// its session. The restart replays the WAL before it takes the rest in;
/// the pending restatement must not run and its days be pruned meanwhile
/// (the rest of a day would then be refused as past the horizon). Killed
/// again 1.5 s after the restart. Every row ends equal to the live run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_while_the_history_still_arrives_refuses_none_of_it() {
    let s = Scenario::new();
    let reference = tempfile::tempdir().unwrap();
    let reference_db = s.reference(reference.path()).await;

    let (dir, config, mut service) = live_until_day_85_in_a_process(&s, "backfill-arrives").await;

    let (files, _) = s.histories(dir.path());
    let sending = {
        let config = config.clone();
        std::thread::spawn(move || {
            let files: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
            backfill(&config, &files)
        })
    };
    // Killed once the archive notes a restatement of the history.
    let state = dir.path().join("wal/archive/state.sqlite");
    let pending = || {
        let db = rusqlite::Connection::open_with_flags(
            &state,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        db.query_row("SELECT COUNT(*) FROM pending", [], |r| r.get::<_, i64>(0))
            .ok()
    };
    let started = std::time::Instant::now();
    while pending().unwrap_or(0) == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no restatement pending:\n{}",
            service.log_tail()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    service.kill();
    sending.join().unwrap();
    service.start_and_wait("subscribed");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    service.kill();
    service.start_and_wait("subscribed");
    publish_live(&s, s.live_after(), "backfill-arrives-sim-2").await;

    settled(&mut service, dir, &reference_db).await;
}

/// The real binary with its WAL and a persistent session on a directory
/// of its own (as `name`), subscribed and given [`Scenario::live_before`].
async fn live_until_day_85_in_a_process(
    s: &Scenario,
    name: &'static str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    support::service::Service,
) {
    use support::service::{Service, write_durable_config};
    let dir = tempfile::tempdir().unwrap();
    fleetpulse::sim::write_files(&s.fleet, None, Some(&dir.path().join("customers.toml"))).unwrap();
    let sinks = "[alerts]\nmqtt = false\n\n[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n";
    let config = write_durable_config(dir.path(), &s.mosquitto, name, 2, "", sinks);
    let mut service = Service::new(&config, dir.path().join("service.log"));
    service.start_and_wait("subscribed");
    publish_live(s, s.live_before(), &format!("{name}-sim-1")).await;
    (dir, config, service)
}

/// Publishes `batches` to the scenario's broker as `client`.
async fn publish_live(s: &Scenario, batches: Vec<&v1::TelemetryBatch>, client: &str) {
    fleetpulse_sim::publish(
        publish_options(&s.mosquitto, client),
        in_process::encoded(&batches),
        |_| {},
    )
    .await
    .unwrap();
}

/// Stops `service` gracefully once it had time to catch up, and again
/// (started in between) until its store equals the live run's at
/// `reference_db`, two minutes at most; then `dir` back. A failure shows
/// the dead letters and keeps `dir`.
async fn settled(
    service: &mut support::service::Service,
    dir: tempfile::TempDir,
    reference_db: &Path,
) -> tempfile::TempDir {
    let db = dir.path().join("kpi.sqlite");
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        service.stop();
        match same_as_in_order(&db, reference_db) {
            Ok(()) => return dir,
            Err(e) if started.elapsed() > std::time::Duration::from_secs(120) => {
                panic!("{e}\n{}\n{}", service.log_tail(), letters_and_kept(dir))
            }
            Err(_) => service.start_and_wait("subscribed"),
        }
    }
}

/// For a failure: the first dead letters found under `dir` (a refusal
/// names its reason), and where the directory is kept for a look.
fn letters_and_kept(dir: tempfile::TempDir) -> String {
    let letters: String = (walk(dir.path()).into_iter())
        .filter(|p| p.to_string_lossy().contains("dead"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect::<Vec<_>>()
        .join("\n")
        .chars()
        .take(3000)
        .collect();
    format!("dead letters:\n{letters}\nkept in {:?}", dir.keep())
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
