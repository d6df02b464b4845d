//! Late data on real parts: a fleet whose devices lose coverage for 6 to 72
//! hours and upload their buffers on reconnect (in order, newest first,
//! shuffled, amid live traffic) goes through real mosquitto into SQLite,
//! InfluxDB 1.x and VictoriaMetrics. The late batches are not refused: they
//! restate their windows, and every store ends up with the ground truth, and
//! SQLite with exactly what a run of the same readings in event-time order
//! stores, window by window.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use fleetpulse::config::{ServiceConfig, WalConfig};
use fleetpulse::drive::drive;
use fleetpulse::sinks::SinkConfig;
use fleetpulse::sinks::sqlite::SqliteConfig;
use fleetpulse_sim::{Fleet, FleetSpec};
use support::fleets::publish_options;
use support::in_process;
use support::late::{DARK_CUSTOMERS, dark_fleet, hour, hour_of, quiet_customer};
use support::servers::{InfluxDb1, Mosquitto, NO_LOSS, VictoriaMetrics};
use support::tables::{assert_same_as_in_order, in_order, rows};
use support::truth::{
    assert_table_equal, every_store, influx_table, sqlite_customer_table, truth_table,
    victoria_table,
};

fn spec(store_and_forward: usize) -> FleetSpec {
    FleetSpec {
        customers: 4,
        devices: 24,
        days: 7,
        seed: 11,
        store_and_forward,
        ..FleetSpec::default()
    }
}

/// A service with a WAL (the archive lives beside it) writing to `sinks`.
fn config(
    mosquitto: &Mosquitto,
    dir: &Path,
    fleet: &Fleet,
    client: &str,
    sinks: Vec<SinkConfig>,
) -> ServiceConfig {
    let customers = dir.join("customers.toml");
    fleetpulse::sim::write_files(fleet, None, Some(&customers)).unwrap();
    let (host, port) = (mosquitto.host(), mosquitto.port());
    let mut config = in_process::durable(host, port, client, &customers, dir);
    config.sinks = sinks;
    config
}

fn sqlite(path: &Path) -> SinkConfig {
    SinkConfig::Sqlite(SqliteConfig {
        path: path.to_owned(),
    })
}

/// Publishes `messages`, waits until the service handled `handled` in all,
/// then long enough for a restatement pass (once a second) and what it
/// sends.
async fn feed(
    service: &in_process::InProcess,
    options: fleetpulse_sim::PublishOptions,
    messages: Vec<(String, Vec<u8>)>,
    handled: u64,
) {
    fleetpulse_sim::publish(options, messages, |_| {})
        .await
        .unwrap();
    let metrics = service.metrics.clone();
    support::poll::wait_for("the messages handled", move || metrics.handled() >= handled).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_uploads_restate_every_store_to_the_ground_truth() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let influx = InfluxDb1::start();
    let vm = VictoriaMetrics::start();

    // The reference: the same readings, in event-time order.
    let (_reference_dir, reference_db) =
        in_order(&mosquitto, &spec(8), "late-reference", None).await;

    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::generate(&spec(8));
    let outages: Vec<_> = fleet.devices().iter().filter_map(|d| d.outage).collect();
    assert!(outages.len() >= 6, "{outages:?}");
    let db = dir.path().join("kpi.sqlite");
    let later_sample = fleetpulse::sinks::influxdb::Restatements::LaterSample;
    let sinks = every_store(&db, &influx, "late", &vm, later_sample);
    let cfg = config(&mosquitto, dir.path(), &fleet, "late-fleet", sinks);
    // Slow enough that restatements run while the fleet publishes, and
    // again at the stop.
    let mut publish = publish_options(&mosquitto, "late-fleet-sim");
    publish.rate = Some(1500.0);
    let run = drive(cfg, &fleet, publish).await.unwrap();
    let (late, restatements) = (
        run.metrics.late_admitted.load(Relaxed),
        run.metrics.restatements.load(Relaxed),
    );
    println!(
        "{} messages, {late} late, {restatements} restatement passes, {} records restated",
        run.published.messages,
        run.metrics.records_restated.load(Relaxed)
    );
    assert_eq!(run.metrics.rejected_total(), 0, "nothing refused");
    assert!(late > 0 && restatements > 0);
    assert_eq!(
        run.metrics.messages_accepted.load(Relaxed),
        run.published.messages
    );

    let truth = truth_table(&fleet.ground_truth().rows());
    assert_table_equal("sqlite", &sqlite_customer_table(&db), &truth);
    assert_table_equal("influxdb 1.x", &influx_table(&influx, "late"), &truth);
    assert_table_equal("victoriametrics", &victoria_table(&vm), &truth);

    for table in ["customer_kpi", "device_kpi"] {
        let (_, revision) = rows(&db, table);
        assert!(revision > 0, "{table}: some windows were restated");
    }
    // Windows, the journey folded over them (health, outcomes, milestones
    // and alerts) and the portfolio of every date equal the run in
    // event-time order.
    assert_same_as_in_order(&db, &reference_db);
}

async fn run_dark(
    mosquitto: &Mosquitto,
    dir: &Path,
    client: &str,
    phases: Vec<Vec<(String, Vec<u8>)>>,
) -> Arc<fleetpulse::metrics::IngestMetrics> {
    run_dark_as(mosquitto, dir, client, DARK_CUSTOMERS, phases).await
}

/// [`run_dark`] with the customers file `customers_toml`.
async fn run_dark_as(
    mosquitto: &Mosquitto,
    dir: &Path,
    client: &str,
    customers_toml: &str,
    phases: Vec<Vec<(String, Vec<u8>)>>,
) -> Arc<fleetpulse::metrics::IngestMetrics> {
    run_with(mosquitto, dir, client, customers_toml, phases, |_| {}).await
}

/// [`run_dark_as`], the service's configuration changed by `tune` first.
async fn run_with(
    mosquitto: &Mosquitto,
    dir: &Path,
    client: &str,
    customers_toml: &str,
    phases: Vec<Vec<(String, Vec<u8>)>>,
    tune: impl FnOnce(&mut ServiceConfig),
) -> Arc<fleetpulse::metrics::IngestMetrics> {
    let customers = dir.join("customers.toml");
    std::fs::write(&customers, customers_toml).unwrap();
    let mut config = in_process::config(mosquitto.host(), mosquitto.port(), client, 1, &customers);
    tune(&mut config);
    config.wal = Some(WalConfig {
        dir: dir.join("wal"),
        ..toml::from_str("dir = \"x\"").unwrap()
    });
    config.sinks = vec![sqlite(&dir.join("kpi.sqlite"))];
    let service = in_process::subscribed(config, "late-dark").await;
    let mut sent = 0;
    for (i, messages) in phases.into_iter().enumerate() {
        sent += messages.len() as u64;
        let options = publish_options(mosquitto, &format!("{client}-sim-{i}"));
        feed(&service, options, messages, sent).await;
    }
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    service.metrics
}

/// A fleet that goes dark for three days raises devices_dark; when its
/// buffers arrive (within the horizon) the episode is retracted: on MQTT,
/// where the alert was published, and in the store, whose journey then
/// equals a run that had the readings in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_dark_raised_during_an_outage_is_retracted_when_the_buffer_arrives() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    mosquitto.subscribe_session("alert-reader", "cs/alerts/#");
    let (before, after) = dark_fleet();

    let dir = tempfile::tempdir().unwrap();
    let metrics = run_dark(
        &mosquitto,
        dir.path(),
        "late-dark",
        vec![before.clone(), after.clone()],
    )
    .await;
    assert_eq!(metrics.rejected_total(), 0);
    assert!(metrics.late_admitted.load(Relaxed) > 0);

    let messages = mosquitto.receive(
        "alert-reader",
        "cs/alerts/#",
        20,
        std::time::Duration::from_secs(5),
    );
    let alerts: Vec<serde_json::Value> = (messages.iter())
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .filter(|a: &serde_json::Value| a["rule"] == "devices_dark")
        .collect();
    // Opened while the fleet was dark; maybe resolved live when it came
    // back before the restatement ran; retracted in the end.
    let statuses: Vec<&str> = alerts
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses == ["open", "retracted"] || statuses == ["open", "resolved", "retracted"],
        "{statuses:?}"
    );
    assert!(
        alerts
            .iter()
            .all(|a| a["alert_id"] == alerts[0]["alert_id"])
    );

    // The reference: every reading in event-time order.
    let reference = tempfile::tempdir().unwrap();
    let mut in_time: Vec<(String, Vec<u8>)> = before.into_iter().chain(after).collect();
    in_time.sort_by_key(|(topic, payload)| {
        let batch =
            <fleetpulse_proto::v1::TelemetryBatch as prost::Message>::decode(&payload[..]).unwrap();
        (batch.samples[0].event_time_ms, topic.clone())
    });
    run_dark(&mosquitto, reference.path(), "late-dark-ref", vec![in_time]).await;

    let (db, reference_db) = (
        dir.path().join("kpi.sqlite"),
        reference.path().join("kpi.sqlite"),
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let retracted: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM alert WHERE rule = 'devices_dark' AND status = 'retracted'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(retracted, 1);
    // The dates the open alert put the customer's ARR at risk: their
    // portfolio figures are restated too.
    let (_, revision) = rows(&db, "portfolio");
    assert!(revision > 0, "the portfolio was restated");
    assert_same_as_in_order(&db, &reference_db);
}

/// A customer silent past its onboarding days (`qt`) whose machines then
/// work from day 4, but whose units buffered their first two days and a
/// half and upload them on day 6, within the horizon. The silence's
/// onboarding_stalled went out open; the late first telemetry resolves it
/// on the activation day, as a run that had it in time does (a fold from
/// the late first day, as if listening began then, retracted it: the
/// silence did happen), and every row equals that run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_customer_s_late_first_telemetry_resolves_its_silence() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    mosquitto.subscribe_session("quiet-alert-reader", "cs/alerts/#");
    let customers = format!("{DARK_CUSTOMERS}{}", quiet_customer(2));
    let quiet = |h: u64| ["q1", "q2"].map(|q| hour_of("qt", q, h));
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for h in 0..192 {
        let out = if h < 150 { &mut before } else { &mut after };
        out.extend(["d1", "d2", "d3"].map(|d| hour(d, h)));
        if h >= 150 {
            out.extend(quiet(h));
        }
        if h == 150 {
            after.extend((96..150).flat_map(quiet));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let phases = vec![before.clone(), after.clone()];
    let metrics = run_dark_as(&mosquitto, dir.path(), "late-quiet", &customers, phases).await;
    assert_eq!(metrics.rejected_total(), 0);
    assert!(metrics.late_admitted.load(Relaxed) > 0);

    let messages = mosquitto.receive(
        "quiet-alert-reader",
        "cs/alerts/#",
        20,
        std::time::Duration::from_secs(5),
    );
    let alerts: Vec<serde_json::Value> = (messages.iter())
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .filter(|a: &serde_json::Value| a["customer"] == "qt")
        .collect();
    let seen: Vec<(&str, &str)> = (alerts.iter())
        .map(|a| (a["rule"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    // Opened in the silence; resolved (by the live journey when the
    // newest readings came, then again on the activation day by the
    // restatement, or by the restatement alone; the first pass after a
    // start sends the open again too); never retracted.
    assert_eq!(
        seen.first(),
        Some(&("onboarding_stalled", "open")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|s| s.0 == "onboarding_stalled" && s.1 != "retracted")
            && seen.last() == Some(&("onboarding_stalled", "resolved")),
        "{seen:?}"
    );
    assert!(
        alerts
            .iter()
            .all(|a| a["alert_id"] == alerts[0]["alert_id"])
    );
    // The resolution on the activation day is the last word, under an id
    // of its own: a receiver that kept a live resolve of day 6 hears it.
    let midnight = |days: u64| (support::late::T0 + days * 86_400_000) as i64;
    let last = alerts.last().unwrap();
    assert_eq!(last["resolved_at_ms"], midnight(5));
    let id = last["alert_id"].as_str().unwrap();
    let resolved = format!("{id}-resolved-{}", midnight(5));
    assert_eq!(last["notification_id"], resolved.as_str());

    let reference = tempfile::tempdir().unwrap();
    let in_time = in_event_time_order(before.into_iter().chain(after).collect());
    let client = "late-quiet-ref";
    run_dark_as(
        &mosquitto,
        reference.path(),
        client,
        &customers,
        vec![in_time],
    )
    .await;
    let (db, reference_db) = (
        dir.path().join("kpi.sqlite"),
        reference.path().join("kpi.sqlite"),
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (status, opened_at, resolved_at): (String, i64, Option<i64>) = conn
        .query_row(
            "SELECT status, opened_at, resolved_at FROM alert WHERE customer = 'qt' \
             AND rule = 'onboarding_stalled'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(status, "resolved");
    // Two onboarding days from the contract's start; the first reading on
    // day 4 resolves it when that day closes.
    assert_eq!((opened_at, resolved_at), (midnight(2), Some(midnight(5))));
    assert_same_as_in_order(&db, &reference_db);
}

/// Runs the service on `cfg` over `fleet`, published through `mosquitto`
/// as `client`; returns how many messages it refused as `reason`.
async fn refused_in_a_run(
    cfg: &ServiceConfig,
    fleet: &Fleet,
    mosquitto: &Mosquitto,
    client: &str,
    reason: fleetpulse::metrics::RejectReason,
) -> u64 {
    let publish = publish_options(mosquitto, client);
    let run = drive(cfg.clone(), fleet, publish).await.unwrap();
    run.metrics.rejected(reason)
}

/// Sends the letters of `reasons` in `dead_letters` (every one of the
/// `refused` kept whole) again, as `fleetpulse replay` does, to `service`,
/// and stops it. The broker may hand the restarted service what the first
/// run had taken in but not yet acknowledged when it stopped: duplicates,
/// refused as such. Nothing else may be refused.
async fn replay_into(
    service: in_process::InProcess,
    cfg: &ServiceConfig,
    dead_letters: &Path,
    reasons: &[fleetpulse::metrics::RejectReason],
    refused: u64,
) -> Arc<fleetpulse::metrics::IngestMetrics> {
    let files = [dead_letters.to_owned()];
    let (messages, replayed) = fleetpulse::replay::letters(&files, reasons).unwrap();
    assert_eq!(
        (replayed.sent as u64, replayed.incomplete),
        (refused, 0),
        "every refused message kept whole"
    );
    let options = fleetpulse::replay::publish_options(cfg).unwrap();
    feed(&service, options, messages, refused).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    let refused_again: Vec<_> = (fleetpulse::metrics::RejectReason::ALL.iter())
        .filter(|r| **r != fleetpulse::metrics::RejectReason::SequenceReplayed)
        .map(|r| (r.as_str(), service.metrics.rejected(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(refused_again.is_empty(), "refused again: {refused_again:?}");
    service.metrics
}

/// Late data refused by a short correction horizon is dead-lettered with
/// its whole payload; with the horizon raised and the service restarted on
/// the same WAL, archive and store, `fleetpulse replay` sends it again and
/// every window and journey record ends as in a run that had it in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_dead_letters_restores_data_refused_as_too_late() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let (_reference_dir, reference_db) =
        in_order(&mosquitto, &spec(0), "replay-reference", None).await;

    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::generate(&spec(8));
    let db = dir.path().join("kpi.sqlite");
    let dead_letters = dir.path().join("dead-letters.jsonl");
    let mut cfg = config(
        &mosquitto,
        dir.path(),
        &fleet,
        "replay-fleet",
        vec![sqlite(&db)],
    );
    cfg.engine.correction_horizon = std::time::Duration::from_secs(30 * 60);
    cfg.limits.dead_letter_file = Some(dead_letters.clone());
    let too_late = fleetpulse::metrics::RejectReason::TooLate;
    let refused = refused_in_a_run(&cfg, &fleet, &mosquitto, "replay-fleet-sim", too_late).await;
    assert!(refused > 0, "the short horizon refused late data");

    // The horizon raised; the refused messages sent again.
    cfg.engine.correction_horizon = std::time::Duration::from_secs(7 * 86_400);
    let service = in_process::subscribed(cfg.clone(), "replay").await;
    let reasons = [fleetpulse::metrics::RejectReason::TooLate];
    let metrics = replay_into(service, &cfg, &dead_letters, &reasons, refused).await;
    assert_eq!(metrics.late_admitted.load(Relaxed), refused);

    let truth = truth_table(&fleet.ground_truth().rows());
    assert_table_equal("sqlite", &sqlite_customer_table(&db), &truth);
    assert_same_as_in_order(&db, &reference_db);
}

/// This host's clock a day behind the fleet's (or every unit's clock a
/// day ahead): what lies more than `limits.max_future` ahead of it is
/// refused as `future_timestamp`, and its letter kept a 256-byte payload
/// prefix only: the telemetry was lost for good. Its letters keep the whole
/// payload now; with the clock set right (here `limits.max_future`
/// widened) and the service restarted on the same WAL, archive and store,
/// `fleetpulse replay`'s default reasons send them again, and every day
/// equals the ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_refused_as_ahead_of_the_clock_is_taken_in_by_a_replay() {
    const DAY: u64 = 86_400_000;
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let now = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .unwrap()
        .as_millis() as u64;
    // Yesterday, today and tomorrow: from about the middle on, ahead.
    let fleet = Fleet::generate(&FleetSpec {
        customers: 2,
        devices: 8,
        days: 3,
        seed: 17,
        start: now - now % DAY - DAY,
        ..FleetSpec::default()
    });
    let db = dir.path().join("kpi.sqlite");
    let dead_letters = dir.path().join("dead-letters.jsonl");
    let mut cfg = config(&mosquitto, dir.path(), &fleet, "ahead", vec![sqlite(&db)]);
    cfg.limits.dead_letter_file = Some(dead_letters.clone());
    let ahead = fleetpulse::metrics::RejectReason::FutureTimestamp;
    let refused = refused_in_a_run(&cfg, &fleet, &mosquitto, "ahead-sim", ahead).await;
    assert!(refused > 0, "nothing lay ahead of the clock");

    cfg.limits.max_future = std::time::Duration::from_secs(3 * 86_400);
    let service = in_process::subscribed(cfg.clone(), "ahead-replay").await;
    let reasons: Vec<_> = (fleetpulse::metrics::RejectReason::ALL.into_iter())
        .filter(|r| r.replayable())
        .collect();
    replay_into(service, &cfg, &dead_letters, &reasons, refused).await;
    let truth = truth_table(&fleet.ground_truth().rows());
    assert_table_equal("sqlite", &sqlite_customer_table(&db), &truth);
    println!("{refused} messages ahead of the clock refused, all taken in by the replay");
}

/// Day `day` of the dark quarry's three devices, one of which (`d1` and
/// `d2` in turn, from day 3) loses coverage from 08:00 to 14:00 and
/// uploads those six hours after its 16:00 reading: late data every day.
fn a_late_day(day: u64) -> Vec<(String, Vec<u8>)> {
    let dark = (day >= 3).then(|| ["d1", "d2"][day as usize % 2]);
    let (mut live, mut buffered) = (Vec::new(), Vec::new());
    for h in 24 * day..24 * (day + 1) {
        for device in ["d1", "d2", "d3"] {
            let out = if Some(device) == dark && (8..14).contains(&(h % 24)) {
                &mut buffered
            } else {
                &mut live
            };
            out.push(support::late::hour(device, h));
        }
        if h % 24 == 16 {
            live.append(&mut buffered);
        }
    }
    live
}

/// A customer with late data every day never lets its pending restatement
/// settle (each arrival moves the final pass further out). Each pass still
/// restates only from where the previous one ended, or from the new late
/// data: not from the first late reading weeks ago, which made every pass
/// longer than the last and kept the archive's days past the horizon. A
/// restart in the middle restates what the WAL's replay emits again. The
/// store ends as a run with every reading in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_data_every_day_restates_a_day_at_a_time_and_the_archive_keeps_only_the_horizon() {
    const DAYS: u64 = 14;
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.toml");
    std::fs::write(&customers, DARK_CUSTOMERS).unwrap();
    let (host, port) = (mosquitto.host(), mosquitto.port());
    let mut config = in_process::durable(host, port, "late-daily", &customers, dir.path());
    config.engine.correction_horizon = std::time::Duration::from_secs(2 * 86_400);

    // Records restated while each day's data went through.
    let mut restated_by_day = Vec::new();
    let mut service = in_process::subscribed(config.clone(), "late-daily").await;
    let (mut sent, mut restated) = (0u64, 0u64);
    for day in 0..DAYS {
        if day == 8 {
            service.shutdown.cancel();
            service.task.await.unwrap().unwrap();
            restated += service.metrics.records_restated.load(Relaxed);
            service = in_process::subscribed(config.clone(), "late-daily").await;
            sent = 0;
        }
        let messages = a_late_day(day);
        sent += messages.len() as u64;
        let options = publish_options(&mosquitto, &format!("late-daily-sim-{day}"));
        feed(&service, options, messages, sent).await;
        let now = restated + service.metrics.records_restated.load(Relaxed);
        restated_by_day.push(now - restated_by_day.iter().sum::<u64>());
    }
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    assert_eq!(service.metrics.rejected_total(), 0);
    println!("records restated by day: {restated_by_day:?}");

    // A pass covers about a day: its customer's windows since the last
    // pass and its late device's, with the journey's records. From the
    // first days to the last its size stays the same (restating from the
    // first late reading, each of the last days' passes restated six to
    // ten days).
    let steady = *restated_by_day[4..8].iter().max().unwrap();
    let last: u64 = restated_by_day[9..].iter().sum();
    assert!(
        steady > 0 && last <= 5 * steady * 3 / 2,
        "{last} records restated in the last five days, {steady} a day before: {restated_by_day:?}"
    );
    // The archive keeps the horizon (2 days) and its slack (2 days), not
    // every day since the first late reading.
    let days_kept = std::fs::read_dir(dir.path().join("wal/archive"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".sqlite") && name != "state.sqlite")
        .count();
    assert!(
        days_kept <= 7,
        "{days_kept} day files kept after {DAYS} days"
    );

    // The reference: every reading in event-time order.
    let reference = tempfile::tempdir().unwrap();
    let in_time = in_event_time_order((0..DAYS).flat_map(a_late_day).collect());
    run_dark(
        &mosquitto,
        reference.path(),
        "late-daily-ref",
        vec![in_time],
    )
    .await;
    assert_same_as_in_order(
        &dir.path().join("kpi.sqlite"),
        &reference.path().join("kpi.sqlite"),
    );
}

/// A machine out of coverage one night (21:00 to 03:00 in New York, across
/// the local midnight) and live again from then on, whose buffered night
/// comes six days later, within the correction horizon (a backlog synced
/// at the depot): its pass reads the archive through the local day of its
/// first reading after the outage, not every day since, and the journey
/// folds the days after as the service kept them. Every window and
/// journey record equals the run with the night in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_synced_days_after_the_machine_came_back_restates_only_the_outage() {
    const DAYS: u64 = 12;
    // On contract from the day before (its first readings, at 00:00 UTC,
    // are on the 4th in New York).
    let customers = (DARK_CUSTOMERS.replace(
        "segment = \"low-touch\"",
        "segment = \"low-touch\"\ntimezone = \"America/New_York\"",
    ))
    .replace("start = \"2026-01-05\"", "start = \"2026-01-04\"");
    // UTC hours 26 to 32: 21:00 on the 5th to 03:00 on the 6th, New York.
    let out = |device: &str, h: u64| device == "d1" && (26..32).contains(&h);
    let (mut before, mut buffered, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for h in 0..24 * DAYS {
        for device in ["d1", "d2", "d3"] {
            let message = support::late::hour(device, h);
            match h {
                _ if out(device, h) => buffered.push(message),
                ..170 => before.push(message),
                _ => after.push(message),
            }
        }
    }
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let phases = vec![before.clone(), buffered.clone(), after.clone()];
    let metrics = run_dark_as(&mosquitto, dir.path(), "synced", &customers, phases).await;
    assert_eq!(metrics.rejected_total(), 0);
    assert!(metrics.late_admitted.load(Relaxed) > 0);
    let passes = metrics.restatements.load(Relaxed);
    let days_read = metrics.restatement_days_read.load(Relaxed);
    println!("{passes} passes read {days_read} archive days");
    // The first pass reads the three UTC days that hold the local days of
    // the outage and of the first reading after it, then the two of the
    // local day the fan-out had not taken in whole; the final pass, a day
    // from where the first ended and the two of the day then open. Reading
    // on from the outage, the two read fourteen.
    assert!(
        passes >= 2 && days_read <= 8,
        "{passes} passes, {days_read} days"
    );

    let reference = tempfile::tempdir().unwrap();
    let in_time = in_event_time_order([before, buffered, after].concat());
    run_dark_as(
        &mosquitto,
        reference.path(),
        "synced-ref",
        &customers,
        vec![in_time],
    )
    .await;
    assert_same_as_in_order(
        &dir.path().join("kpi.sqlite"),
        &reference.path().join("kpi.sqlite"),
    );
}

/// `messages` by their first reading's time.
fn in_event_time_order(mut messages: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    messages.sort_by_key(|(topic, payload)| {
        let batch =
            <fleetpulse_proto::v1::TelemetryBatch as prost::Message>::decode(&payload[..]).unwrap();
        (batch.samples[0].event_time_ms, topic.clone())
    });
    messages
}

/// A New York customer whose fleet goes dark across the night its clocks
/// go forward (8 March 2026: a local day of 23 hours) beside a UTC
/// customer: see [`dark_across_a_clock_change`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_across_a_daylight_saving_night_restates_the_portfolio_of_its_dates() {
    // From 2026-03-05 (59 days after T0); the 8th is the day of 23 hours.
    dark_across_a_clock_change("America/New_York", 59, "2026-03-04", 36..114, Some(3)).await;
}

/// The outage ends on the day of 23 hours (10:00 UTC, 06:00 local after
/// the clocks went forward): a pass reads the archive through the local
/// day of the first reading after the outage, and that day is the short
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_that_stops_on_the_day_the_clocks_go_forward_restates_it_whole() {
    dark_across_a_clock_change("America/New_York", 59, "2026-03-04", 12..82, Some(2)).await;
}

/// The same on Auckland's day of 25 hours (05:00 UTC on the 5th, 17:00
/// local after the clocks went back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_that_stops_on_the_day_the_clocks_go_back_restates_it_whole() {
    // Back before the long day closed: no day closed with them dark.
    dark_across_a_clock_change("Pacific/Auckland", 87, "2026-04-02", 12..77, None).await;
}

/// The same east of UTC, where a local day starts on the UTC date before:
/// Auckland's clocks go back on 5 April 2026 (a local day of 25 hours, 11:00
/// UTC on the 4th to 12:00 UTC on the 5th).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_across_a_night_the_clocks_go_back_east_of_utc_restates_its_dates() {
    // From 2026-04-02 (87 days after T0); the 5th is the day of 25 hours.
    dark_across_a_clock_change("Pacific/Auckland", 87, "2026-04-02", 36..114, Some(3)).await;
}

/// Customer `dk` in `zone` with three devices, two of which go silent for
/// the hours `outage` of the run (from `first_day` days after `T0`; 36..114
/// is 12:00 UTC on the second day to 18:00 UTC on the fifth), across or
/// into the local day of the clock change (filed under the fourth day's
/// date), and upload their buffers at 10:00 UTC on the sixth (d1's newest
/// first); customer `ut` in UTC alongside. With `restated` (a day closed
/// with them dark), the devices_dark episode the outage raised is
/// retracted when the buffer arrives and the portfolio of that day of the
/// run (3: the clock change's date) is restated. Each date folds each customer's one local day of it; every
/// window, journey and portfolio row equals the run with the readings in
/// time.
async fn dark_across_a_clock_change(
    zone: &str,
    first_day: u64,
    contract_start: &str,
    outage: std::ops::Range<u64>,
    restated: Option<u64>,
) {
    use support::late::{HOUR_MS, T0, hour_of};
    let h0 = first_day * 24;
    let day = |d: u64| T0 + (h0 + 24 * d) * HOUR_MS;
    let customers = format!(
        r#"
[[customer]]
id = "dk"
name = "Dark Quarry"
segment = "low-touch"
timezone = "{zone}"

[customer.contract]
arr = 90000
start = "{contract_start}"
renewal = "2027-12-31"
devices_purchased = 3
operator_seats = 3

[[customer]]
id = "ut"
name = "UTC Works"
segment = "low-touch"

[customer.contract]
arr = 50000
start = "{contract_start}"
renewal = "2027-12-31"
devices_purchased = 1
operator_seats = 1
"#
    );
    let outage = (h0 + outage.start)..(h0 + outage.end);
    let reconnect = h0 + 130;
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for h in h0..h0 + 8 * 24 {
        let out = if h < reconnect {
            &mut before
        } else {
            &mut after
        };
        for device in ["d1", "d2", "d3"] {
            if device == "d3" || !outage.contains(&h) {
                out.push(hour_of("dk", device, h));
            }
        }
        out.push(hour_of("ut", "u1", h));
        if h == reconnect {
            after.extend(outage.clone().rev().map(|h| hour_of("dk", "d1", h)));
            after.extend(outage.clone().map(|h| hour_of("dk", "d2", h)));
        }
    }

    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let phases = vec![before.clone(), after.clone()];
    let metrics = run_dark_as(&mosquitto, dir.path(), "dst-dark", &customers, phases).await;
    assert_eq!(metrics.rejected_total(), 0);
    assert!(metrics.late_admitted.load(Relaxed) > 0);
    println!(
        "{zone}: {} passes read {} archive days",
        metrics.restatements.load(Relaxed),
        metrics.restatement_days_read.load(Relaxed)
    );

    let reference = tempfile::tempdir().unwrap();
    let in_time = in_event_time_order([before, after].concat());
    run_dark_as(
        &mosquitto,
        reference.path(),
        "dst-dark-ref",
        &customers,
        vec![in_time],
    )
    .await;

    let db = dir.path().join("kpi.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    // The episode a day's close raised (and the pass retracts), and the
    // provisional ones: whether the open day was judged while the devices
    // were dark past the threshold depends on how far the engine's input
    // had moved each time it judged (a faster build judges more often).
    // Whichever were raised are retracted: the in-order run raised none,
    // and any left open or resolved would differ from it below.
    let retracted = |provisional: bool| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM alert WHERE customer = 'dk' AND rule = 'devices_dark' \
             AND status = 'retracted' AND provisional = ?1",
            [provisional],
            |r| r.get(0),
        )
        .unwrap()
    };
    let dark = restated.is_some();
    println!(
        "{zone}: devices_dark retracted: {} closed, {} provisional",
        retracted(false),
        retracted(true)
    );
    assert_eq!(
        retracted(false),
        i64::from(dark),
        "the outage's episode is retracted"
    );
    assert!(retracted(true) <= 1, "one provisional episode at most");
    let dates: Vec<(u64, u32, u32, f64)> = conn
        .prepare(
            "SELECT window_start, customers, revision, arr_at_risk FROM portfolio \
             ORDER BY window_start",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    println!("{zone}: portfolio (date, customers, revision, ARR at risk): {dates:?}");
    let middle: Vec<_> = (dates.iter())
        .filter(|r| (day(1)..=day(7)).contains(&r.0))
        .collect();
    // The last date, 7, is still open at the stop: no figures for it yet.
    assert_eq!(
        middle.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        (1..=6).map(|d| (day(d), 2)).collect::<Vec<_>>(),
        "both customers on every date: {dates:?}"
    );
    if let Some(d) = restated {
        let changed = middle.iter().find(|r| r.0 == day(d)).unwrap();
        assert!(changed.2 > 0, "day {d}'s date was restated: {dates:?}");
    }
    assert!(
        middle.iter().all(|r| r.3 == 0.0),
        "no ARR at risk once the episode is retracted: {dates:?}"
    );
    assert_same_as_in_order(&db, &reference.path().join("kpi.sqlite"));
}

/// An operator turns late-data correction off for a while
/// (`engine.correction_horizon = "0s"`, to save the archive's CPU) and on
/// again. Runs without the horizon do not keep the archive up: it misses
/// their live batches. A buffer of one of those days that arrives once the
/// horizon is back cannot be restated from it: the day's windows came out
/// right (the WAL's replay at the start had the day's other readings), but
/// the journey was folded from the days the archive had, and the day's
/// health and milestones differed from the run in event-time order. It
/// must be refused as too late, and every row equal the run of the same
/// readings in event-time order without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_of_a_day_run_without_the_horizon_is_refused_not_restated_from_a_gap() {
    horizon_gap("gap", [7, 0, 7]).await;
}

/// The same with the horizon turned on for the first time on a service
/// that ran without it: the new archive begins where the start's replay
/// does, not at the beginning of time (the first frontier after a start
/// can be 0, and the archive took it for its start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_horizon_turned_on_takes_no_buffer_of_the_days_before_it() {
    horizon_gap("turned-on", [0, 0, 7]).await;
}

/// Three runs of a 7-day fleet with `horizons` (days; the runs take days
/// 0-3, 3-5 and 5-7), the third sent a buffer of day 4 at its end.
async fn horizon_gap(name: &str, horizons: [u64; 3]) {
    const DAY: i64 = 86_400_000;
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let fleet = Fleet::generate(&spec(0));
    let messages: Vec<(String, Vec<u8>, i64)> = (fleet.messages_in_event_time())
        .map(|m| {
            let at = m
                .batch
                .samples
                .iter()
                .map(|s| s.event_time_ms)
                .min()
                .unwrap();
            (m.topic, prost::Message::encode_to_vec(&m.batch), at)
        })
        .collect();
    let t0 = messages.iter().map(|m| m.2).min().unwrap();
    // The buffer: one device's first six hours of day 4.
    let device = messages[0].0.clone();
    let buffered = |(topic, _, at): &(String, Vec<u8>, i64)| {
        *topic == device && (t0 + 4 * DAY..t0 + 4 * DAY + 6 * 3_600_000).contains(at)
    };
    let (buffer, rest): (Vec<_>, Vec<_>) = messages.into_iter().partition(buffered);
    assert!(!buffer.is_empty());
    let period = |from: i64, to: i64| -> Vec<(String, Vec<u8>)> {
        (rest.iter())
            .filter(|m| (from..to).contains(&m.2))
            .map(|(t, p, _)| (t.clone(), p.clone()))
            .collect()
    };

    // The reference: every reading but the buffer, in event-time order.
    let reference = tempfile::tempdir().unwrap();
    let reference_db = reference.path().join("kpi.sqlite");
    let sinks = vec![sqlite(&reference_db)];
    let client = format!("{name}-reference");
    let cfg = config(&mosquitto, reference.path(), &fleet, &client, sinks);
    let service = in_process::subscribed(cfg, "gap-reference").await;
    let everything = period(i64::MIN, i64::MAX);
    let n = everything.len() as u64;
    let options = publish_options(&mosquitto, &format!("{name}-ref-sim"));
    feed(&service, options, everything, n).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kpi.sqlite");
    let client = format!("{name}-fleet");
    let mut cfg = config(&mosquitto, dir.path(), &fleet, &client, vec![sqlite(&db)]);
    let periods = [
        (i64::MIN, t0 + 3 * DAY),
        (t0 + 3 * DAY, t0 + 5 * DAY),
        (t0 + 5 * DAY, i64::MAX),
    ];
    for (run, (horizon, (from, to))) in horizons.into_iter().zip(periods).enumerate() {
        cfg.engine.correction_horizon = std::time::Duration::from_secs(horizon * 86_400);
        let service = in_process::subscribed(cfg.clone(), "gap-fleet").await;
        let messages = period(from, to);
        let handled = service.metrics.handled() + messages.len() as u64;
        let client = format!("{name}-sim-{run}");
        feed(
            &service,
            publish_options(&mosquitto, &client),
            messages,
            handled,
        )
        .await;
        if run == 2 {
            let handled = service.metrics.handled() + buffer.len() as u64;
            let sent = (buffer.iter())
                .map(|(t, p, _)| (t.clone(), p.clone()))
                .collect();
            let options = publish_options(&mosquitto, &format!("{name}-buffer"));
            feed(&service, options, sent, handled).await;
            let too_late = (service.metrics).rejected(fleetpulse::metrics::RejectReason::TooLate);
            assert_eq!(too_late, buffer.len() as u64, "the buffer refused");
        }
        service.shutdown.cancel();
        service.task.await.unwrap().unwrap();
    }
    assert_same_as_in_order(&db, &reference_db);
}

/// Late telemetry right after a restart, on a lane the WAL's replay gave
/// nothing (its devices had sent nothing since the last cut): that lane's
/// watermark started at 0, so it took the batch as on time, and the
/// engine's records of the days it touched were suppressed as written
/// before the restart: accepted, counted, and in no store. It is late
/// from the start, and restates its days as in a run without the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_telemetry_on_a_lane_the_restart_replayed_nothing_to_is_restated() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let lane = |device: &str| {
        let (topic, _) = hour(device, 0);
        fleetpulse::delivery::route::lane(&topic, 2, 2)
    };
    let names: Vec<String> = (1..40).map(|i| format!("d{i}")).collect();
    let live: Vec<&str> = (names.iter())
        .filter(|d| lane(d) == 0)
        .take(2)
        .map(String::as_str)
        .collect();
    let late = names.iter().find(|d| lane(d) == 1).unwrap().as_str();
    let before: Vec<_> = (0..100)
        .flat_map(|h| live.iter().map(move |d| hour(d, h)))
        .collect();
    // Day 2 of a device on the other lane, two days behind.
    let buffered: Vec<_> = (48..72).map(|h| hour(late, h)).collect();

    let dir = tempfile::tempdir().unwrap();
    let client = "late-after-restart";
    // Two lanes; an idle lane follows the other after a second, so the
    // days close and the checkpoint moves past them.
    let two_lanes = |config: &mut ServiceConfig| {
        config.engine.workers = 2;
        config.engine.idle_after = std::time::Duration::from_secs(1);
    };
    let first = vec![before.clone()];
    run_with(
        &mosquitto,
        dir.path(),
        client,
        DARK_CUSTOMERS,
        first,
        two_lanes,
    )
    .await;
    let checkpoint = std::fs::read_to_string(dir.path().join("wal/checkpoint.json")).unwrap();
    let checkpoint: serde_json::Value = serde_json::from_str(&checkpoint).unwrap();
    let written_before = checkpoint["written_before"].as_u64().unwrap();
    assert!(
        written_before >= support::late::T0 + 72 * support::late::HOUR_MS,
        "{checkpoint}"
    );
    let then = vec![buffered.clone()];
    let metrics = run_with(
        &mosquitto,
        dir.path(),
        client,
        DARK_CUSTOMERS,
        then,
        two_lanes,
    )
    .await;
    assert_eq!(metrics.rejected_total(), 0);

    let reference = tempfile::tempdir().unwrap();
    let in_time = in_event_time_order(before.into_iter().chain(buffered).collect());
    let client = "late-after-restart-ref";
    run_with(
        &mosquitto,
        reference.path(),
        client,
        DARK_CUSTOMERS,
        vec![in_time],
        two_lanes,
    )
    .await;
    let (db, reference_db) = (
        dir.path().join("kpi.sqlite"),
        reference.path().join("kpi.sqlite"),
    );
    let late_day = "SELECT coalesce(sum(samples), 0) FROM device_kpi WHERE device = ?1 \
                    AND window = '1d'";
    let samples = |path: &Path| support::tables::scalar(path, late_day, [late]);
    assert_eq!(samples(&db), 48, "the late device's day");
    assert_eq!(metrics.late_admitted.load(Relaxed), 24);
    assert_eq!(samples(&reference_db), 48);
    for table in ["device_kpi", "customer_kpi"] {
        let strip = |(rows, _): (
            std::collections::BTreeMap<String, Vec<(String, String)>>,
            i64,
        )| {
            (rows.into_iter())
                .map(|(k, v)| (k, v.into_iter().filter(|(c, _)| c != "revision").collect()))
                .collect::<std::collections::BTreeMap<String, Vec<(String, String)>>>()
        };
        assert_eq!(
            strip(rows(&db, table)),
            strip(rows(&reference_db, table)),
            "{table}"
        );
    }
}
