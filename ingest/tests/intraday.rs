//! Intraday `devices_dark` through real mosquitto: a fleet of ten devices,
//! two of which fall silent. The hour whose readings pass the two-day
//! threshold is published on its own, and the provisional alert must reach
//! an MQTT subscriber within 60 s of it, while its day is still open
//! (its health in the store only as a provisional score). The day's close
//! then confirms the same episode in the store without notifying receivers
//! again, and replaces the provisional score.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::fleets::publish_options;
use support::in_process;
use support::late::{HOUR_MS, Published, T0, hour_of};
use support::servers::{Mosquitto, NO_LOSS, find_binary};

const CUSTOMERS: &str = r#"
[[customer]]
id = "ix"
name = "Tunnel Works"
segment = "high-touch"

[customer.contract]
arr = 150000
start = "2026-01-05"
renewal = "2027-01-05"
devices_purchased = 10
operator_seats = 4
"#;

/// `d0` and `d1` report for the last time in hour 35 (35:37); two days
/// later, at 83:37, two of ten devices are dark (the default share needs
/// 2). The first readings after that are the others' at 84:07.
fn hours(range: std::ops::Range<u64>) -> Vec<Published> {
    let mut out = Vec::new();
    for h in range {
        for d in 0..10 {
            if d >= 2 || h < 36 {
                out.push(hour_of("ix", &format!("d{d}"), h));
            }
        }
    }
    out
}

async fn publish(
    mosquitto: &Mosquitto,
    service: &in_process::InProcess,
    client: &str,
    messages: Vec<Published>,
) {
    let handled = service.metrics.handled() + messages.len() as u64;
    let options = publish_options(mosquitto, client);
    fleetpulse_sim::publish(options, messages, |_| {})
        .await
        .unwrap();
    let metrics = service.metrics.clone();
    support::poll::wait_for("the messages handled", move || metrics.handled() >= handled).await;
}

/// Starts a subscriber of the persistent session `reader` that waits (up to
/// 120 s) for one alert; returns it and when it arrived.
fn first_alert(mosquitto: &Mosquitto, reader: &str) -> std::thread::JoinHandle<(Instant, String)> {
    let mut sub = Command::new(find_binary("mosquitto_sub", "FLEETPULSE_MOSQUITTO_SUB"));
    sub.args(["-h", mosquitto.host(), "-p", &mosquitto.port().to_string()])
        .args(["-i", reader, "-c", "-q", "1", "-t", "cs/alerts/ix"])
        .args(["-C", "1", "-W", "120", "-F", "%p"])
        .stdin(Stdio::null());
    std::thread::spawn(move || {
        let out = sub.output().expect("run mosquitto_sub");
        (
            Instant::now(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_going_dark_is_alerted_on_mqtt_within_a_minute_of_the_threshold() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    mosquitto.subscribe_session("ix-reader", "cs/alerts/ix");
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.toml");
    std::fs::write(&customers, CUSTOMERS).unwrap();
    let db = dir.path().join("kpi.sqlite");
    let config = in_process::durable(
        mosquitto.host(),
        mosquitto.port(),
        "ix",
        &customers,
        dir.path(),
    );
    let service = in_process::subscribed(config, "intraday").await;

    // Up to the threshold: nothing dark yet.
    publish(&mosquitto, &service, "ix-sim-0", hours(0..84)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = mosquitto.receive("ix-reader", "cs/alerts/ix", 100, Duration::from_secs(2));
    let dark = |payload: &[u8]| {
        let alert: serde_json::Value = serde_json::from_slice(payload).unwrap();
        (alert["rule"] == "devices_dark").then_some(alert)
    };
    assert!(
        before.iter().all(|m| dark(&m.payload).is_none()),
        "devices_dark before the threshold: {before:?}"
    );

    // The next hour of the devices still reporting: their readings (84:07)
    // pass it.
    let reader = first_alert(&mosquitto, "ix-reader");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = Instant::now();
    publish(&mosquitto, &service, "ix-sim-1", hours(84..85)).await;
    let (arrived, payload) = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let latency = arrived.saturating_duration_since(sent);
    println!("devices_dark on MQTT {latency:?} after the messages that crossed the threshold");
    let alert = dark(payload.trim().as_bytes()).unwrap_or_else(|| panic!("{payload}"));
    assert!(latency <= Duration::from_secs(60), "{latency:?}");
    assert_eq!(alert["status"], "open");
    assert_eq!(alert["provisional"], true);
    let day_3_end = T0 + 96 * HOUR_MS;
    assert_eq!(alert["opened_at_ms"], day_3_end);
    assert_eq!(alert["metric"], 2.0);
    // The day is open: its health is in the store as provisional only (the
    // hours so far), the alert as provisional.
    let health =
        format!("SELECT COUNT(*) FROM health WHERE window_end = {day_3_end} AND NOT provisional");
    assert_eq!(count(&db, &health), 0);
    let so_far =
        format!("SELECT COUNT(*) FROM health WHERE window_end = {day_3_end} AND provisional");
    support::poll::wait_for("a provisional score of day 3", || count(&db, &so_far) == 1).await;
    let provisional = "SELECT COUNT(*) FROM alert WHERE rule = 'devices_dark' AND status = 'open' AND provisional = 1";
    support::poll::wait_for("the provisional alert stored", || {
        count(&db, provisional) == 1
    })
    .await;

    // The rest of the day and two hours more: the day closes and confirms.
    publish(&mosquitto, &service, "ix-sim-2", hours(85..99)).await;
    support::poll::wait_for("day 3 closed", || count(&db, &health) == 1).await;
    assert_eq!(
        count(&db, &so_far),
        0,
        "the close replaced the provisional score"
    );
    let confirmed = "SELECT COUNT(*) FROM alert WHERE rule = 'devices_dark' AND status = 'open' AND provisional = 0";
    support::poll::wait_for("the alert confirmed", || count(&db, confirmed) == 1).await;
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM alert WHERE rule = 'devices_dark'"
        ),
        1
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = mosquitto.receive("ix-reader", "cs/alerts/ix", 100, Duration::from_secs(2));
    let again: Vec<_> = after.iter().filter_map(|m| dark(&m.payload)).collect();
    assert!(again.is_empty(), "notified again: {again:?}");

    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
}

/// A stop (SIGTERM, SIGINT) while a day is open closes nothing: every
/// journey record the store holds after the stop is the one it held
/// before it, value by value, and no alert goes out at the stop. Before,
/// closing the engine's input passed every open day, which closed on the
/// hours so far as if none were to come: the provisional score and alert
/// of day 3 were written as the day's closed score and a confirmed alert,
/// sent to receivers (a close on fewer hours can as well open alerts the
/// whole day does not, never resolved after). After the next start the day
/// closes on all its hours, and confirms the one episode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_a_day_is_open_closes_nothing_and_sends_nothing() {
    // The journey tables: all but the two of windows.
    let journey_tables = &support::tables::TABLES[2..];
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    mosquitto.subscribe_session("ix-stop-reader", "cs/alerts/ix");
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.toml");
    std::fs::write(&customers, CUSTOMERS).unwrap();
    let db = dir.path().join("kpi.sqlite");
    let config = || {
        in_process::durable(
            mosquitto.host(),
            mosquitto.port(),
            "ix-stop",
            &customers,
            dir.path(),
        )
    };
    let service = in_process::subscribed(config(), "intraday-stop").await;
    publish(&mosquitto, &service, "ix-stop-sim-0", hours(0..85)).await;
    let day_3_end = T0 + 96 * HOUR_MS;
    let provisional = "SELECT COUNT(*) FROM alert WHERE rule = 'devices_dark' AND provisional = 1";
    support::poll::wait_for("the provisional alert stored", || {
        count(&db, provisional) == 1
    })
    .await;
    let so_far =
        format!("SELECT COUNT(*) FROM health WHERE window_end = {day_3_end} AND provisional");
    support::poll::wait_for("a provisional score of day 3", || count(&db, &so_far) == 1).await;
    // Whatever follows the readings (a pass, the portfolio) has settled.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent = mosquitto.receive(
        "ix-stop-reader",
        "cs/alerts/ix",
        100,
        Duration::from_secs(2),
    );
    let note = |m: &support::servers::Message| {
        let alert: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        (
            alert["notification_id"].as_str().unwrap().to_owned(),
            alert["status"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(sent.len(), 1, "{sent:?}");
    let opened = note(&sent[0]);
    assert_eq!(opened.1, "open");
    let before: Vec<_> = journey_tables
        .iter()
        .map(|t| support::tables::rows(&db, t).0)
        .collect();

    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    // The open day's provisional score may take in the hours the stop cut
    // short, as the next hour's close would have: it stays provisional.
    let provisional = |row: &Vec<(String, String)>| {
        row.iter()
            .any(|(c, v)| c == "provisional" && v == "Integer(1)")
    };
    for (table, before) in journey_tables.iter().zip(&before) {
        let (after, _) = support::tables::rows(&db, table);
        for (key, row) in &after {
            let was = before.get(key);
            assert!(
                Some(row) == was || (provisional(row) && was.is_some_and(provisional)),
                "{table} {key}: {row:?} written by the stop, before {was:?}"
            );
        }
        assert_eq!(after.len(), before.len(), "{table}");
    }
    let at_stop = mosquitto.receive(
        "ix-stop-reader",
        "cs/alerts/ix",
        100,
        Duration::from_secs(2),
    );
    assert!(at_stop.is_empty(), "sent at the stop: {at_stop:?}");

    // Started again, the day closes on all its hours: its score closed,
    // the one episode confirmed; receivers hear of it at most once more,
    // as after a kill, under the same id (they drop a repeat).
    let service = in_process::subscribed(config(), "intraday-stop").await;
    publish(&mosquitto, &service, "ix-stop-sim-1", hours(85..99)).await;
    let closed =
        format!("SELECT COUNT(*) FROM health WHERE window_end = {day_3_end} AND NOT provisional");
    support::poll::wait_for("day 3 closed", || count(&db, &closed) == 1).await;
    let confirmed = "SELECT COUNT(*) FROM alert WHERE rule = 'devices_dark' AND status = 'open' AND provisional = 0";
    support::poll::wait_for("the alert confirmed", || count(&db, confirmed) == 1).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM alert"), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = mosquitto.receive(
        "ix-stop-reader",
        "cs/alerts/ix",
        100,
        Duration::from_secs(2),
    );
    let after: Vec<_> = after.iter().map(note).collect();
    assert!(
        after.len() <= 1 && after.iter().all(|n| *n == opened),
        "after the restart: {after:?}"
    );
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
}

/// The same fleet through a `fleetpulse run` process, killed (SIGKILL) or
/// not right after the provisional alert went out, before its day closed;
/// returns the store and the devices_dark notifications MQTT carried.
async fn run_process(
    dir: &Path,
    mosquitto: &Mosquitto,
    client: &str,
    kill: bool,
) -> (PathBuf, Vec<serde_json::Value>) {
    use support::service::{Service, write_durable_config};
    std::fs::write(dir.join("customers.toml"), CUSTOMERS).unwrap();
    let reader = format!("{client}-reader");
    mosquitto.subscribe_session(&reader, "cs/alerts/ix");
    let sinks = "[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n";
    let config = write_durable_config(dir, mosquitto, client, 2, "", sinks);
    let mut service = Service::new(&config, dir.join("service.log"));
    service.start_and_wait("subscribed");
    let db = dir.join("kpi.sqlite");
    let publish = |messages, n: usize| {
        let options = publish_options(mosquitto, &format!("{client}-sim-{n}"));
        fleetpulse_sim::publish(options, messages, |_| {})
    };
    publish(hours(0..85), 0).await.unwrap();
    let provisional = "SELECT COUNT(*) FROM alert WHERE rule = 'devices_dark' AND provisional = 1";
    support::poll::wait_for("the provisional alert stored", || {
        db.exists() && count(&db, provisional) == 1
    })
    .await;
    if kill {
        service.kill();
        service.start_and_wait("subscribed");
    }
    publish(hours(85..99), 1).await.unwrap();
    let day_3_end = T0 + 96 * HOUR_MS;
    let health = format!("SELECT COUNT(*) FROM health WHERE window_end = {day_3_end}");
    support::poll::wait_for("day 3 closed", || count(&db, &health) == 1).await;
    let confirmed = "SELECT COUNT(*) FROM alert WHERE rule = 'devices_dark' AND provisional = 0";
    support::poll::wait_for("the alert confirmed", || count(&db, confirmed) == 1).await;
    service.interrupt();
    assert!(
        service
            .wait_exit(Duration::from_secs(60))
            .is_some_and(|s| s.success()),
        "{}",
        service.log_tail()
    );
    let notified = mosquitto.receive(&reader, "cs/alerts/ix", 100, Duration::from_secs(2));
    let dark = (notified.iter())
        .map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap())
        .filter(|a| a["rule"] == "devices_dark")
        .collect();
    (db, dark)
}

/// A kill -9 after the provisional alert went out and before its day
/// closed: after the restart, the close confirms the same episode; no
/// receiver hears of a retraction, and every journey record in the store
/// equals a run without the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_provisional_alert_and_the_close_changes_nothing_stored() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let (calm, killed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (reference, calm_notes) = run_process(calm.path(), &mosquitto, "ix-calm", false).await;
    let (db, notes) = run_process(killed.path(), &mosquitto, "ix-killed", true).await;
    let summary = |notes: &[serde_json::Value]| -> Vec<(String, String, bool)> {
        (notes.iter())
            .map(|a| {
                (
                    a["notification_id"].as_str().unwrap().to_owned(),
                    a["status"].as_str().unwrap().to_owned(),
                    a["provisional"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    // Without the kill: the provisional open, once.
    let calm_notes = summary(&calm_notes);
    assert_eq!(calm_notes.len(), 1, "{calm_notes:?}");
    assert_eq!((calm_notes[0].1.as_str(), calm_notes[0].2), ("open", true));
    // With it: the same notification, perhaps again (at least once, same
    // id: receivers drop the second), and no retraction.
    let notes = summary(&notes);
    println!("after the kill: {notes:?}");
    assert!(!notes.is_empty(), "nothing notified");
    assert!(
        (notes.iter()).all(|n| n.0 == calm_notes[0].0 && n.1 == "open"),
        "{notes:?}"
    );
    support::tables::assert_same_as_in_order(&db, &reference);
}

/// The store behind the alert channels at a kill: the provisional
/// devices_dark alert stored, then the store locked (another connection
/// holds an exclusive lock, as a backup or a hand-run query can) while the
/// dark devices come back and their day's close retracts the alert. MQTT
/// carries the retraction, the store cannot take it, and the service is
/// killed (SIGKILL). After the restart the store must hold the episode
/// retracted, as the receivers were told. Before, the archive (which notes
/// what receivers are told) held it retracted, so the restart handed that
/// day's close nothing to settle, the replay of the day (the devices back
/// by then) did not raise the alert again, and the store kept it open and
/// provisional for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retraction_the_store_missed_at_a_kill_reaches_it_after_the_restart() {
    use support::service::{Service, write_durable_config};
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let client = "ix-behind";
    std::fs::write(dir.path().join("customers.toml"), CUSTOMERS).unwrap();
    let reader = format!("{client}-reader");
    mosquitto.subscribe_session(&reader, "cs/alerts/ix");
    let sinks = "[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n";
    let config = write_durable_config(dir.path(), &mosquitto, client, 2, "", sinks);
    let mut service = Service::new(&config, dir.path().join("service.log"));
    service.start_and_wait("subscribed");
    let db = dir.path().join("kpi.sqlite");
    let publish = |messages, n: usize| {
        let options = publish_options(&mosquitto, &format!("{client}-sim-{n}"));
        fleetpulse_sim::publish(options, messages, |_| {})
    };
    publish(hours(0..85), 0).await.unwrap();
    let provisional = vec![("open".to_owned(), true)];
    support::poll::wait_for("the provisional alert stored", || {
        sqlite_episodes(&db) == provisional
    })
    .await;

    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // Every device reports again from hour 85: day 3 (closed by hour 98)
    // does not see two of them dark.
    let back: Vec<Published> = (85..99)
        .flat_map(|h| (0..10).map(move |d| hour_of("ix", &format!("d{d}"), h)))
        .collect();
    publish(back, 1).await.unwrap();
    let mut told = Vec::new();
    let waited = Instant::now();
    while !told.contains(&"retracted".to_owned()) {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no retraction on MQTT: {told:?}\n{}",
            service.log_tail()
        );
        let received = mosquitto.receive(&reader, "cs/alerts/ix", 100, Duration::from_secs(2));
        told.extend(
            (received.iter())
                .map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap())
                .filter(|a| a["rule"] == "devices_dark")
                .map(|a| a["status"].as_str().unwrap().to_owned()),
        );
    }
    service.kill();
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    // The store missed it: still as before the lock.
    assert_eq!(
        sqlite_episodes(&db),
        provisional,
        "the store was not behind"
    );

    service.start_and_wait("subscribed");
    let settled = vec![("retracted".to_owned(), true)];
    let restarted = Instant::now();
    while sqlite_episodes(&db) != settled && restarted.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sqlite_episodes(&db),
        settled,
        "MQTT said retracted, the store did not\n{}",
        service.log_tail()
    );
    service.stop();
}

/// The devices_dark episodes a store holds: (status, provisional).
type Episodes = Vec<(String, bool)>;

fn sqlite_episodes(db: &Path) -> Episodes {
    if !db.exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut rows = (conn.prepare(
        "SELECT status, provisional FROM alert WHERE rule = 'devices_dark' ORDER BY opened_at",
    ))
    .unwrap();
    rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn influx_episodes(influx: &support::servers::InfluxDb1, db: &str) -> Episodes {
    let answer = influx.query(
        db,
        "SELECT status, provisional FROM alert WHERE rule = 'devices_dark'",
    );
    let Some(series) = answer["results"][0]["series"][0].as_object() else {
        return Vec::new();
    };
    // A query amid a write can see a point's status before its other
    // fields (InfluxDB 1.x keeps each field as a series of its own): such a row reads as not
    // yet written, so a poll asks again.
    (series["values"].as_array().unwrap().iter())
        .map(|v| match (v[1].as_str(), v[2].as_bool()) {
            (Some(status), Some(provisional)) => (status.to_owned(), provisional),
            _ => (format!("half-written {v}"), false),
        })
        .collect()
}

/// The provisional devices_dark alert stored, then a kill and a threshold
/// raised while the service was down (`dark_min_devices = 3`, a CSM
/// quieting the rule): the replay of the open day no longer raises the
/// alert, and its day's close must still settle the one the store holds:
/// retracted. With the late-data archive, and without it
/// (`correction_horizon = "0s"`) into SQLite, and into InfluxDB 1.x alone
/// (the view's files hold what was sent, but a few seconds behind the
/// store). Without the archive the service handed the close nothing to
/// settle, and the false alert stayed open and provisional in the store
/// for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisional_alert_the_restart_no_longer_raises_is_settled_by_its_day_s_close() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let influx = support::servers::InfluxDb1::start();
    let sqlite = "[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n";
    let influx_only = format!(
        "[http]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\n{}",
        support::service::influx_sections(&influx, "quieted")
    );
    for (name, horizon, sinks) in [
        ("sqlite-archive", "7d", sqlite),
        ("sqlite", "0s", sqlite),
        ("influxdb", "0s", &influx_only),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kpi.sqlite");
        let episodes = || match name {
            "influxdb" => influx_episodes(&influx, "quieted"),
            _ => sqlite_episodes(&db),
        };
        let sections =
            format!("[engine]\nworkers = 2\ncorrection_horizon = \"{horizon}\"\n\n{sinks}");
        quieted_across_a_kill(&mosquitto, dir.path(), name, &sections, 1, episodes).await;
    }
}

/// The same in a cluster of two processes (no archive there) restarted as
/// one: the alert was noted by the member that owned the customer, in its
/// own directory, which the single process reads with the others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisional_alert_a_cluster_sent_is_settled_after_a_rescale() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kpi.sqlite");
    let sections = "shared_group = \"quieted\"\n\n[engine]\nworkers = 1\n\n\
                    [[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n";
    let episodes = || sqlite_episodes(&db);
    quieted_across_a_kill(&mosquitto, dir.path(), "cluster", sections, 2, episodes).await;
}

/// The fleet of [`hours`] through `processes` processes of the service file
/// of `sections` in `dir` (a persistent session, the WAL in `wal/`) up to
/// the provisional devices_dark alert in the store `episodes` reads, a kill,
/// the rule quieted, one process on the rest: the store's episode must come
/// out retracted.
async fn quieted_across_a_kill(
    mosquitto: &Mosquitto,
    dir: &Path,
    name: &str,
    sections: &str,
    processes: usize,
    episodes: impl Fn() -> Episodes,
) {
    use support::service::{Service, write_service_config};
    let client = format!("ix-quieted-{name}");
    std::fs::write(dir.join("customers.toml"), CUSTOMERS).unwrap();
    let rest = format!("persistent_session = true\n{sections}\n[wal]\ndir = \"wal\"\n");
    let config = write_service_config(dir, mosquitto, &client, &rest);
    let hosts = (support::servers::free_ports(processes).into_iter())
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Service> = (0..processes)
        .map(|i| match processes {
            1 => Service::new(&config, dir.join("service.log")),
            _ => Service::new(&config, dir.join(format!("member-{i}.log"))).args([
                "--process",
                &i.to_string(),
                "--hosts",
                &hosts,
            ]),
        })
        .collect();
    members.iter_mut().for_each(Service::start);
    for member in &members {
        member.wait_for_log("connected to broker", 1);
    }
    let publish = |messages, n: usize| {
        let options = publish_options(mosquitto, &format!("{client}-sim-{n}"));
        fleetpulse_sim::publish(options, messages, |_| {})
    };
    publish(hours(0..85), 0).await.unwrap();
    let provisional = vec![("open".to_owned(), true)];
    support::poll::wait_for("the provisional alert stored", || episodes() == provisional).await;
    members.iter_mut().for_each(Service::kill);
    let quieted = format!("{CUSTOMERS}\n[customer.thresholds]\ndark_min_devices = 3\n");
    std::fs::write(dir.join("customers.toml"), quieted).unwrap();
    let mut service = Service::new(&config, dir.join("service.log"));
    service.start_and_wait("subscribed");
    publish(hours(85..99), 1).await.unwrap();
    // Day 3 closes with the first reading of hour 98 (2 h lateness).
    let settled = vec![("retracted".to_owned(), true)];
    let published = Instant::now();
    while episodes() != settled && published.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        episodes(),
        settled,
        "{name}: the provisional alert not settled\n{}",
        service.log_tail()
    );
    service.stop();
}
