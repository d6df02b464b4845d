//! The WAL's directory and disk, as a careless operator treats them, with the
//! real `fleetpulse run` binary, real mosquitto and InfluxDB 1.x:
//!
//! - a second service started on the same WAL directory refuses to start,
//!   exits non-zero and names the directory and the first one's PID; the
//!   first goes on and loses nothing;
//! - the WAL's disk (a small tmpfs) fills up mid-run: `/readyz` goes red with
//!   the reason, intake pauses, and once a filler file is deleted intake
//!   resumes by itself, without a restart;
//! - the embedded default with everything on that disk (WAL, archive and the
//!   SQLite store): the same, and a start on the full disk fails saying so;
//! - the SQLite store's file removed while the service writes to it: a new
//!   file is started at the path, and said; the WAL's directory removed:
//!   intake pauses, and `/readyz` says why; the dead-letter file removed:
//!   the later letters go into a new one;
//!
//! and each time the KPIs stored equal the simulator's ground truth, value by
//! value.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use std::time::{Duration, Instant};

use fleetpulse_sim::Fleet;

use crate::support::fleets::{Publishing, fleet, spawn_publisher, write_customers};
use crate::support::servers::{
    InfluxDb1, Mosquitto, NO_LOSS, free_port, http_get, servers_and_dir,
};
use crate::support::service::{
    Service, influx_sections, metric, metrics, wait_until, write_service_config,
};
use crate::support::small_disk::{SmallDisk, fill_disk, rerun_in_namespace, shrink_by};
use crate::support::truth::{
    assert_table_equal, equal, sqlite_customer_table, store_days, truth_days, truth_table,
};

const ACCEPTED: &str = "fleetpulse_messages_accepted_total";
const WAL_FULL: &str = "fleetpulse_wal_full";
const SINKS_FAILING: &str = "fleetpulse_sinks_failing";

/// The service file: the WAL in `wal_dir`, `/metrics` and `/readyz` on a
/// free port, KPIs to InfluxDB 1.x. Returns the file and the port.
fn write_config(
    dir: &Path,
    wal_dir: &Path,
    mosquitto: &Mosquitto,
    influx: &InfluxDb1,
) -> (PathBuf, u16) {
    let http_port = free_port();
    let rest = format!(
        r#"
[wal]
dir = "{wal}"
segment_bytes = 65536

[http]
enabled = true
listen = "127.0.0.1:{http_port}"

{influx}"#,
        wal = wal_dir.display(),
        influx = influx_sections(influx, "fleetpulse")
    );
    let config = write_service_config(dir, mosquitto, "fleetpulse-disk-test", &rest);
    (config, http_port)
}

/// Starts the service and waits until it is subscribed.
fn start(config: &Path, log: &Path) -> Service {
    let mut service = Service::new(config, log);
    service.start_and_wait("subscribed");
    service
}

/// The fleet of the disk tests, its `customers.toml` written to `dir`.
fn fleet_in(dir: &Path, seed: u64) -> Fleet {
    let fleet = fleet(4, 20, 4, seed);
    write_customers(dir, &fleet);
    fleet
}

/// [`fleet_in`] with devices that lose coverage and upload their buffers
/// late: those go to the archive, on the same full disk as the WAL.
fn fleet_with_late_data_in(dir: &Path, seed: u64) -> Fleet {
    let fleet = Fleet::generate(&fleetpulse_sim::FleetSpec {
        customers: 4,
        devices: 20,
        days: 4,
        seed,
        store_and_forward: 6,
        ..fleetpulse_sim::FleetSpec::default()
    });
    write_customers(dir, &fleet);
    fleet
}

/// Waits until the service has accepted `sent` messages: every message of
/// the fleet, exactly once.
async fn wait_accepted(http_port: u16, sent: u64, service: &Service) {
    let started = Instant::now();
    loop {
        let text = metrics(http_port);
        if metric(&text, ACCEPTED) >= sent {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}/{sent} accepted in 60 s\n{}",
            metric(&text, ACCEPTED),
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_service_on_one_wal_dir_refuses_to_start_and_the_first_loses_nothing() {
    let (mosquitto, influx, dir) = servers_and_dir(NO_LOSS);
    let fleet = fleet_in(dir.path(), 31);
    let wal_dir = dir.path().join("wal");
    // One file for both: the second unit started by mistake.
    let (config, http_port) = write_config(dir.path(), &wal_dir, &mosquitto, &influx);
    let mut first = start(&config, &dir.path().join("first.log"));

    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "disk-test-fleet", 600.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !publisher.is_finished(),
        "the fleet was out before the second start"
    );

    let mut second = Service::new(&config, dir.path().join("second.log"));
    second.start();
    let limit = Duration::from_secs(30);
    let status = tokio::task::block_in_place(|| second.wait_exit(limit))
        .unwrap_or_else(|| panic!("still running after {limit:?}:\n{}", second.log_tail()));
    let log = second.log();
    assert!(
        !status.success(),
        "the second service exited with {status}:\n{log}"
    );
    let pid = first.pid().expect("running");
    assert!(
        log.contains(&wal_dir.display().to_string()) && log.contains(&format!("PID {pid}")),
        "the error names neither {} nor PID {pid}:\n{log}",
        wal_dir.display()
    );
    assert!(
        !log.contains("connected to broker") && !log.contains("sink open"),
        "the second service got further than its WAL:\n{log}"
    );
    assert!(first.is_running(), "{}", first.log_tail());

    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.messages, sent);
    wait_accepted(http_port, sent, &first).await;
    first.stop();
    equal(&store_days(&influx, "fleetpulse"), &truth_days(&fleet))
        .unwrap_or_else(|e| panic!("{e}\n{}", first.log_tail()));
    println!(
        "second service refused: {}",
        log.lines()
            .find(|l| l.contains("in use by another process"))
            .unwrap_or_default()
    );
}

/// `GET /readyz`: status and body.
fn readyz(http_port: u16) -> (u16, String) {
    let response = http_get(&format!("http://127.0.0.1:{http_port}/readyz")).unwrap();
    (response.status, response.text())
}

/// With the service ready, fills the disk of `filler` but for room for a
/// few dozen messages and publishes `fleet` at 400 msg/s; returns the
/// messages sent, the publisher, and `/readyz` once it went red.
async fn fill_and_publish(
    filler: &Path,
    mosquitto: &Mosquitto,
    fleet: &Fleet,
    http_port: u16,
    service: &Service,
) -> (u64, Publishing, (u16, String)) {
    assert_eq!(readyz(http_port).0, 200, "{}", service.log_tail());
    fill_disk(filler);
    shrink_by(filler, 32 * 1024);
    let (sent, publisher) = spawn_publisher(mosquitto, fleet, "disk-test-fleet", 400.0);
    let started = Instant::now();
    loop {
        let (status, body) = readyz(http_port);
        if status != 200 {
            return (sent, publisher, (status, body));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still ready after 30 s on a full disk\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The WAL's disk fills up (the archive of late data shares it: some devices
/// upload their buffers late): intake pauses, readiness turns red, and
/// freeing space resumes it; the store then equals the ground truth, late
/// data restated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_intake_and_freed_space_resumes_it_without_a_restart() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return rerun_in_namespace(
            "disk::a_full_disk_pauses_intake_and_freed_space_resumes_it_without_a_restart",
        );
    };
    let (mosquitto, influx, dir) = servers_and_dir(NO_LOSS);
    let fleet = fleet_with_late_data_in(dir.path(), 32);
    assert!(fleet.devices().iter().any(|d| d.outage.is_some()));
    let wal_dir = disk.path().join("wal");
    let (config, http_port) = write_config(dir.path(), &wal_dir, &mosquitto, &influx);
    let mut service = start(&config, &dir.path().join("service.log"));
    let filler = disk.path().join("filler");
    let (sent, publisher, (status, body)) =
        fill_and_publish(&filler, &mosquitto, &fleet, http_port, &service).await;

    // Readiness goes red with the reason, and the gauge says so.
    assert_eq!(status, 503);
    assert!(
        body.contains("the write-ahead log is full")
            && body.contains("No space left on device")
            && body.contains("intake paused"),
        "{body}"
    );
    assert_eq!(metric(&metrics(http_port), WAL_FULL), 1);

    // Intake pauses: nothing more is accepted while the disk stays full.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paused_at = metric(&metrics(http_port), ACCEPTED);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = metrics(http_port);
    assert_eq!(
        metric(&text, ACCEPTED),
        paused_at,
        "accepted while the WAL was full"
    );
    assert_eq!(metric(&text, WAL_FULL), 1);
    assert!(
        paused_at < sent,
        "everything went in before the disk was full"
    );
    assert_eq!(readyz(http_port).0, 503);

    // Space returns: intake resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    while readyz(http_port).0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not ready 15 s after the disk was freed: {:?}\n{}",
            readyz(http_port),
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&metrics(http_port), WAL_FULL), 0);
    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.messages, sent);
    wait_accepted(http_port, sent, &service).await;
    assert!(service.is_running(), "{}", service.log_tail());

    // One log line per transition.
    let log = service.log();
    let paused = log.matches("intake paused until it has room").count();
    let resumed = log.matches("intake resumed").count();
    assert_eq!((paused, resumed), (1, 1), "{}", service.log_tail());
    // Not one line per retry: the WAL says it once, and the checkpoint, the
    // device snapshot and the view's files, written beside it, at most once.
    let beside = [
        "cannot write the checkpoint",
        "cannot write a device snapshot",
        "cannot write the view's snapshot",
    ];
    let wal_full = log
        .lines()
        .filter(|l| l.contains("No space left on device") && !beside.iter().any(|b| l.contains(b)))
        .count();
    assert_eq!(wal_full, 1, "{}", service.log_tail());
    for beside in beside {
        let full = log
            .lines()
            .filter(|l| l.contains("No space left on device") && l.contains(beside))
            .count();
        assert!(full <= 1, "{beside}: {}", service.log_tail());
    }

    // The same process all along, and nothing lost or doubled.
    service.stop();
    equal(&store_days(&influx, "fleetpulse"), &truth_days(&fleet))
        .unwrap_or_else(|e| panic!("{e}\n{}", service.log_tail()));
    println!("{sent} messages; {paused_at} accepted before the pause; readiness said: {body}");
}

/// The embedded default as an operator installs it: the WAL, the archive,
/// the alerts' outbox and the SQLite store on one disk. It fills up mid-run:
/// intake pauses and resumes once space returns, and the store equals the
/// ground truth. A start on the still-full disk fails saying the disk is
/// full (SQLite's own error names only an `xShmMap` I/O error), and a start
/// once it has room loses and doubles nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_store_on_a_full_disk_pauses_intake_and_a_start_on_it_names_the_disk() {
    let Some(disk) = SmallDisk::mount("16m") else {
        return rerun_in_namespace(
            "disk::the_default_store_on_a_full_disk_pauses_intake_and_a_start_on_it_names_the_disk",
        );
    };
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet_with_late_data_in(dir.path(), 33);
    let store = disk.path().join("kpi.sqlite");
    let http_port = free_port();
    let rest = format!(
        "[wal]\ndir = \"{wal}\"\nsegment_bytes = 65536\n\n[http]\nenabled = true\n\
         listen = \"127.0.0.1:{http_port}\"\n\n[alerts]\nmqtt = false\n\n\
         [[sinks]]\ntype = \"sqlite\"\npath = \"{store}\"\n",
        wal = disk.path().join("wal").display(),
        store = store.display(),
    );
    let config = write_service_config(dir.path(), &mosquitto, "fleetpulse-full-store", &rest);
    let mut service = start(&config, &dir.path().join("service.log"));
    let filler = disk.path().join("filler");
    let (sent, publisher, _) =
        fill_and_publish(&filler, &mosquitto, &fleet, http_port, &service).await;
    let paused_at = metric(&metrics(http_port), ACCEPTED);
    assert!(
        paused_at < sent,
        "everything went in before the disk was full"
    );

    std::fs::remove_file(&filler).unwrap();
    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.messages, sent);
    wait_accepted(http_port, sent, &service).await;
    service.stop();
    let truth = truth_table(&fleet.ground_truth().rows());
    assert_table_equal(
        "sqlite after the full disk",
        &sqlite_customer_table(&store),
        &truth,
    );

    // The disk full again, and the service started on it: it does not start,
    // and says why in words an operator acts on.
    fill_disk(&filler);
    service.start();
    let status = service.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()),
        "started on a full disk: {status:?}\n{}",
        service.log_tail()
    );
    let log = service.log();
    let said = (log.lines()).find(|l| l.contains("cannot open sink"));
    assert!(
        said.is_some_and(|l| l.contains(&store.display().to_string())
            && l.contains("the disk holding it is full: 0 of")),
        "{}",
        service.log_tail()
    );

    // Room again: it starts, and the store is unchanged.
    std::fs::remove_file(&filler).unwrap();
    service.start();
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{http_port}/readyz");
    while http_get(&url).map(|r| r.status).ok() != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ready 30 s after a start with room\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service.stop();
    assert_table_equal(
        "sqlite after the restarts",
        &sqlite_customer_table(&store),
        &truth,
    );
    println!(
        "{sent} messages; {paused_at} accepted before the pause; at the full start: {}",
        said.unwrap()
    );
}

/// A service on a fresh directory: the fleet of [`fleet_in`] (seed `seed`)
/// in its customers file, the WAL in `wal/`, the SQLite store
/// `kpi.sqlite`, `/metrics` and `/readyz` on a free port, and the further
/// `sections` (e.g. `[limits]`). Returns the broker, the directory, the
/// fleet, the running service and its HTTP port.
fn sqlite_service(
    client: &str,
    seed: u64,
    sections: &str,
) -> (Mosquitto, tempfile::TempDir, Fleet, Service, u16) {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet_in(dir.path(), seed);
    let http_port = free_port();
    let rest = format!(
        "{sections}\n[wal]\ndir = \"wal\"\n\n[http]\nenabled = true\n\
         listen = \"127.0.0.1:{http_port}\"\n\n[alerts]\nmqtt = false\n\n\
         [[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n"
    );
    let config = write_service_config(dir.path(), &mosquitto, client, &rest);
    let service = start(&config, &dir.path().join("service.log"));
    (mosquitto, dir, fleet, service, http_port)
}

/// Starts publishing `fleet` at 150 msg/s (client `store-{name}-sim`) and
/// waits until `store` holds four customer-days: a store being written.
async fn publishing_with_days_stored(
    mosquitto: &Mosquitto,
    fleet: &Fleet,
    store: &Path,
    name: &str,
) -> (u64, Publishing) {
    let publishing = spawn_publisher(mosquitto, fleet, &format!("store-{name}-sim"), 150.0);
    let started = Instant::now();
    while sqlite_customer_table(store).len() < 4 {
        assert!(started.elapsed() < Duration::from_secs(60), "no day stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publishing
}

/// The SQLite store's file removed while the service writes to it (`rm
/// kpi.sqlite`, to start the store afresh, its `-wal` and `-shm` left
/// beside it): the service must not go on writing into the removed file,
/// where every record after the removal would be lost unseen. It notices at
/// its next write, says so naming the file, and starts a sound file at the
/// path (`PRAGMA integrity_check`), not one made of the old file's log:
/// every day it holds equals the ground truth, and the days closed after
/// the removal are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_removed_while_written_is_started_again_and_said() {
    let (mosquitto, dir, fleet, mut service, http_port) =
        sqlite_service("fleetpulse-store-removed", 41, "");
    let store = dir.path().join("kpi.sqlite");
    let (sent, publisher) =
        publishing_with_days_stored(&mosquitto, &fleet, &store, "removed").await;
    std::fs::remove_file(&store).unwrap();
    let removed_at = metric(&metrics(http_port), ACCEPTED);
    assert!(removed_at < sent, "removed while the fleet publishes");
    publisher.await.unwrap().unwrap();
    wait_accepted(http_port, sent, &service).await;
    service.stop();
    let said = "the store's file was removed or replaced while the service wrote to it";
    let lines: Vec<_> = (service.log().lines())
        .filter(|l| l.contains(said))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1, "{}", service.log_tail());
    assert!(lines[0].contains("kpi.sqlite"), "{}", lines[0]);
    let conn = rusqlite::Connection::open(&store).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (held, days) = assert_holds_the_truth_to_the_last_day("the new file", &store, &fleet);
    println!(
        "removed after {removed_at} of {sent} messages; the new file holds {held} of the {days} \
         customer-days"
    );
}

/// The store started again at `store` (`name` in messages) after its file
/// went: it holds the fleet's last day, and every customer-day it holds
/// equals the ground truth. Returns how many it holds, of how many.
fn assert_holds_the_truth_to_the_last_day(
    name: &str,
    store: &Path,
    fleet: &Fleet,
) -> (usize, usize) {
    let truth = truth_table(&fleet.ground_truth().rows());
    let stored = sqlite_customer_table(store);
    let last_day = truth.keys().map(|(_, day)| *day).max().unwrap();
    assert!(
        stored.keys().any(|(_, day)| *day == last_day),
        "{name} lacks the last day: {:?}",
        stored.keys().collect::<Vec<_>>()
    );
    let days = truth.len();
    let kept = (truth.into_iter())
        .filter(|(key, _)| stored.contains_key(key))
        .collect();
    assert_table_equal(name, &stored, &kept);
    (stored.len(), days)
}

/// Waits up to `within` until the store has written every record the
/// engine emitted (one store) and, for `quiet`, no record came meanwhile.
async fn until_all_written(http_port: u16, service: &Service, within: Duration, quiet: Duration) {
    let mut last = (u64::MAX, Instant::now());
    wait_until("every record emitted written", within, service, || {
        let text = metrics(http_port);
        let emitted = metric(&text, "fleetpulse_records_emitted_total");
        let written = metric(&text, "fleetpulse_sink_records_written_total");
        if emitted != last.0 || written < emitted {
            last = (emitted, Instant::now());
        }
        written == emitted && last.1.elapsed() >= quiet
    })
    .await;
}

/// Renames a file that is no database over `store`, as restoring the
/// wrong backup does (`mv backup.tar kpi.sqlite`).
fn put_no_database_over(store: &Path) {
    let wrong = store.with_file_name("backup.tar");
    std::fs::write(
        &wrong,
        "not a database, a tar of something else\n".repeat(200),
    )
    .unwrap();
    std::fs::rename(&wrong, store).unwrap();
}

/// Waits (30 s at most) for the log to say the store is no database.
async fn until_said_not_a_database(service: &Service) {
    let said = "file is not a database";
    wait_until(said, Duration::from_secs(30), service, || {
        service.log().contains(said)
    })
    .await;
}

/// The SQLite store's file replaced, while written, by one that is no
/// database (the wrong file restored over it: `mv backup.tar kpi.sqlite`).
/// The sink cannot open it; before, each batch failed at once as not
/// retryable and was dropped ("batch dropped", records emitted and never
/// written), and once the file was mended the store lacked those days for
/// good. Now the batches wait (the log says why, naming the file), and
/// when the operator removes the wrong file the sink starts a sound one
/// and writes them: every record emitted is written, and the days the new
/// file holds equal the ground truth up to the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_replaced_by_no_database_holds_the_records_until_mended() {
    let (mosquitto, dir, fleet, mut service, http_port) =
        sqlite_service("fleetpulse-store-replaced", 47, "");
    let store = dir.path().join("kpi.sqlite");
    let (sent, publisher) =
        publishing_with_days_stored(&mosquitto, &fleet, &store, "replaced").await;
    put_no_database_over(&store);
    let replaced_at = metric(&metrics(http_port), ACCEPTED);
    assert!(replaced_at < sent, "replaced while the fleet publishes");
    publisher.await.unwrap().unwrap();
    wait_accepted(http_port, sent, &service).await;
    until_said_not_a_database(&service).await;
    let text = metrics(http_port);
    let emitted = metric(&text, "fleetpulse_records_emitted_total");
    assert!(
        metric(&text, "fleetpulse_sink_records_written_total") < emitted,
        "records wait for the store"
    );
    assert_eq!(
        metric(&text, SINKS_FAILING),
        1,
        "the failing store is counted"
    );

    // Mended: the wrong file removed.
    std::fs::remove_file(&store).unwrap();
    until_all_written(http_port, &service, Duration::from_secs(90), Duration::ZERO).await;
    assert_eq!(metric(&metrics(http_port), SINKS_FAILING), 0, "mended");
    service.stop();
    assert!(
        !service.log().contains("batch dropped"),
        "{}",
        service.log_tail()
    );
    let (held, days) = assert_holds_the_truth_to_the_last_day("the mended file", &store, &fleet);
    println!(
        "replaced after {replaced_at} of {sent} messages; the mended file holds {held} of the \
         {days} customer-days"
    );
}

/// The same wrong file over the store, and the service killed (SIGKILL)
/// while its records wait for it: the WAL still holds them (the checkpoint
/// does not pass what a store has not written), so a start once the wrong
/// file is gone writes them into a new file: every day it holds equals the
/// ground truth up to the last (emitted at the stop), nothing dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_the_store_file_is_no_database_loses_nothing() {
    let (mosquitto, dir, fleet, mut service, http_port) =
        sqlite_service("fleetpulse-store-replaced-kill", 53, "");
    let store = dir.path().join("kpi.sqlite");
    let (sent, publisher) =
        publishing_with_days_stored(&mosquitto, &fleet, &store, "replaced-kill").await;
    put_no_database_over(&store);
    publisher.await.unwrap().unwrap();
    wait_accepted(http_port, sent, &service).await;
    until_said_not_a_database(&service).await;
    service.kill();

    std::fs::remove_file(&store).unwrap();
    service.start_and_wait("WAL replayed");
    until_all_written(
        http_port,
        &service,
        Duration::from_secs(90),
        Duration::from_secs(3),
    )
    .await;
    service.stop();
    assert!(
        !service.log().contains("batch dropped"),
        "{}",
        service.log_tail()
    );
    let (held, days) = assert_holds_the_truth_to_the_last_day("the new file", &store, &fleet);
    println!("killed while the store was no database; the new file holds {held} of {days} days");
}

/// The SQLite store's file removed while the service is quiet (`rm
/// kpi.sqlite`, its `-wal` left beside it), and the API asked before the
/// sink writes again: every route that reads the store (health validation,
/// contract events, touchpoints) answers 503 naming the file, and none
/// makes a store at the path (which would take in the removed file's log).
/// The readers checked the path before opening it; they now open only a
/// file that exists, with no moment between the check and the open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_removed_while_quiet_is_made_by_no_reader() {
    let (mosquitto, dir, fleet, mut service, http_port) = sqlite_service(
        "fleetpulse-store-quiet",
        43,
        "[engine]\nidle_after = \"1s\"\n",
    );
    let store = dir.path().join("kpi.sqlite");
    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "store-quiet-sim", 400.0);
    publisher.await.unwrap().unwrap();
    wait_accepted(http_port, sent, &service).await;
    // Quiet: every record emitted is written, and no more come.
    let (within, quiet) = (Duration::from_secs(60), Duration::from_secs(3));
    until_all_written(http_port, &service, within, quiet).await;
    let log = PathBuf::from(format!("{}-wal", store.display()));
    std::fs::remove_file(&store).unwrap();
    assert!(log.exists(), "the removed file's log stays beside it");
    let customer = &fleet.customers()[0].id;
    for route in [
        "/api/health-validation".to_owned(),
        "/api/contract-events".to_owned(),
        format!("/api/customers/{customer}/touchpoints"),
    ] {
        let response = http_get(&format!("http://127.0.0.1:{http_port}{route}")).unwrap();
        let body = response.text();
        assert_eq!(response.status, 503, "{route}: {body}");
        assert!(
            body.contains("kpi.sqlite is missing (removed?)"),
            "{route}: {body}"
        );
        assert!(!store.exists(), "{route} made a store at the path");
    }
    service.stop();
}

/// The WAL's directory removed while the service runs (`rm -rf wal`, to
/// start afresh): the log's next commit is refused as on a full disk and
/// intake pauses, so nothing is acknowledged into the removed files (the
/// open segment took every record before, `/readyz` green); `/readyz` says
/// the directory is gone and what to do, not that a disk is full (an
/// operator would look for space that is there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_directory_removed_while_running_is_named_by_readiness() {
    let (mosquitto, dir, fleet, mut service, http_port) =
        sqlite_service("fleetpulse-wal-removed", 43, "");
    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "wal-removed-sim", 150.0);
    let started = Instant::now();
    while metric(&metrics(http_port), ACCEPTED) < sent / 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing taken in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wal = dir.path().join("wal");
    std::fs::remove_dir_all(&wal).unwrap();
    let started = Instant::now();
    let reason = loop {
        let (status, body) = readyz(http_port);
        if status == 503 {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still ready with the WAL directory gone\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        reason.contains(&format!("the WAL directory {} is gone", wal.display())),
        "{reason}"
    );
    let paused_at = metric(&metrics(http_port), ACCEPTED);
    publisher.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = metric(&metrics(http_port), ACCEPTED);
    assert!(after < sent, "{after} of {sent} taken in with the WAL gone");
    println!("paused at {paused_at} of {sent}; {after} taken in by the end: {reason}");
    service.kill();
}

/// The dead-letter file removed while the service runs (deleted once its
/// letters were replayed): the letters of the messages refused after it,
/// often the only copy of refused data, go into a new file at the path,
/// not into the removed one, and the service says so once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_file_removed_while_running_is_started_again() {
    let limits = "[limits]\ndead_letter_file = \"dead-letters.jsonl\"\n";
    let (mosquitto, dir, _, mut service, http_port) =
        sqlite_service("fleetpulse-letters-gone", 47, limits);
    let refused = "fleetpulse_messages_rejected_total{reason=\"decode\"}";
    let letters = dir.path().join("dead-letters.jsonl");
    let garbage = |from: u64, n: u64| -> Vec<(String, Vec<u8>)> {
        (from..from + n)
            .map(|i| {
                (
                    format!("fleet/c01/s/d{i}/telemetry"),
                    vec![0xff, 0x01, i as u8],
                )
            })
            .collect()
    };
    let send = async |messages, client: &str| {
        let options = crate::support::fleets::publish_options(&mosquitto, client);
        fleetpulse_sim::publish(options, messages, |_| {})
            .await
            .unwrap();
    };
    let lines = |path: &Path| std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
    send(garbage(0, 5), "letters-gone-0").await;
    let started = Instant::now();
    while metric(&metrics(http_port), refused) < 5 || lines(&letters) < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_file(&letters).unwrap();
    send(garbage(5, 3), "letters-gone-1").await;
    let started = Instant::now();
    while lines(&letters) < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the letters after the removal are not in {}\n{}",
            letters.display(),
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service.stop();
    let read = fleetpulse::dead_letter::read_file(&letters).unwrap();
    let topics: Vec<&str> = read.iter().map(|l| l.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "fleet/c01/s/d5/telemetry",
            "fleet/c01/s/d6/telemetry",
            "fleet/c01/s/d7/telemetry"
        ]
    );
    let said = "the dead-letter file was removed or replaced while the service wrote to it";
    assert_eq!(
        service.log().matches(said).count(),
        1,
        "{}",
        service.log_tail()
    );
}

/// The dead-letter file's disk fills up: a refused message, whose letter
/// is often its only copy, is not acknowledged until the letter is on disk.
/// Its lane pauses as when the WAL is full (the telemetry behind waits too),
/// `/readyz` says why, and room on the disk resumes it by itself: every
/// letter written once, whole, in order, and the telemetry taken in. Before,
/// each refused message was acknowledged and its letter lost (all but the
/// 8 KiB the writer still buffered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_dead_letter_disk_holds_the_refused_messages_until_their_letters_are_written() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return rerun_in_namespace(
            "disk::a_full_dead_letter_disk_holds_the_refused_messages_until_their_letters_are_written",
        );
    };
    let mosquitto = crate::support::servers::Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet_in(dir.path(), 33);
    let letters = disk.path().join("dead-letters.jsonl");
    let mut config = crate::support::in_process::durable(
        mosquitto.host(),
        mosquitto.port(),
        "dead-letter-disk",
        &dir.path().join("customers.toml"),
        dir.path(),
    );
    config.limits.dead_letter_file = Some(letters.clone());
    let (service, hub) = crate::support::in_process::serving(config, "dead-letter-disk").await;
    let garbage = |what: &str, n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let topic = "fleet/c01-northwind-quarry/s1/d1/telemetry".to_string();
                (topic, format!("{what} {i}").into_bytes())
            })
            .collect()
    };
    let publish = |messages, client: &'static str| {
        let options = crate::support::fleets::publish_options(&mosquitto, client);
        fleetpulse_sim::publish(options, messages, |_| {})
    };
    let refused = |n: u64| {
        let metrics = service.metrics.clone();
        crate::support::poll::wait_for("the messages refused", move || {
            metrics.rejected_total() >= n
        })
    };
    let filler = disk.path().join("filler");
    fill_disk(&filler);
    publish(garbage("not protobuf", 40), "dead-letter-garbage-0")
        .await
        .unwrap();
    refused(40).await;
    let metrics = service.metrics.clone();
    crate::support::poll::wait_for("the dead letters failing", move || {
        metrics.dead_letters_failing().is_some()
    })
    .await;
    let reason = hub.not_ready_reason().unwrap_or_default();
    assert!(reason.contains("No space left on device"), "{reason}");
    let telemetry: Vec<(String, Vec<u8>)> = fleet.encoded_messages().take(20).collect();
    publish(telemetry, "dead-letter-telemetry").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = || service.metrics.messages_accepted.load(Relaxed);
    // The lane of the refused messages waits; the other lanes go on.
    assert!(accepted() < 20, "all taken in behind letters not written");
    assert!(service.metrics.dead_letter_write_errors.load(Relaxed) >= 1);

    shrink_by(&filler, 256 * 1024);
    let metrics = service.metrics.clone();
    crate::support::poll::wait_for("the telemetry behind the letters", move || {
        metrics.messages_accepted.load(Relaxed) >= 20
    })
    .await;
    assert_eq!(service.metrics.dead_letters_failing(), None);
    assert_eq!(hub.not_ready_reason(), None);
    let kept = fleetpulse::dead_letter::read_file(&letters).unwrap();
    let payload = |text: &str| text.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let got: Vec<&str> = kept.iter().map(|l| l.payload_hex.as_str()).collect();
    let want: Vec<String> = (0..40)
        .map(|i| payload(&format!("not protobuf {i}")))
        .collect();
    assert_eq!(got, want);
    assert_eq!(service.metrics.rejected_total(), 40);
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
}
