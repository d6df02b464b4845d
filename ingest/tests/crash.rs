//! Nothing lost: `fleetpulse run` (the real binary, with its WAL) is killed
//! with SIGKILL at random points while a simulated fleet publishes through a
//! real mosquitto, and restarted each time; the broker is restarted too. The
//! per-customer-day KPIs that end up in a real InfluxDB 1.x equal the
//! simulator's ground truth exactly.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetpulse_sim::Fleet;
use rand::{Rng, SeedableRng};
use support::fleets::{fleet, publish_options, spawn_publisher, write_customers};
use support::servers::{InfluxDb1, Mosquitto, NO_LOSS, servers_and_dir};
use support::service::{Service, influx_sections, write_durable_config};
use support::truth::{equal, store_days, truth_days};

/// Logged once per start, when the service is ready for telemetry.
const CONNECTED: &str = "subscribed";

fn write_config(dir: &Path, mosquitto: &Mosquitto, influx: &InfluxDb1) -> PathBuf {
    write_durable_config(
        dir,
        mosquitto,
        "fleetpulse-crash-test",
        2,
        "segment_bytes = 262144\n",
        &influx_sections(influx, "fleetpulse"),
    )
}

/// The service on [`write_config`]'s file in `dir`, started and connected.
fn start_service(dir: &Path, mosquitto: &Mosquitto, influx: &InfluxDb1) -> Service {
    let config = write_config(dir, mosquitto, influx);
    let mut service = Service::new(config, dir.join("service.log"));
    service.start_and_wait(CONNECTED);
    service
}

/// Lets the service catch up, then stops it gracefully so the last windows
/// are flushed; repeats (for up to 120 s) until the store settles on the
/// fleet's ground truth. `each_round` runs before every stop.
async fn settle(
    service: &mut Service,
    influx: &InfluxDb1,
    fleet: &Fleet,
    mut each_round: impl FnMut(),
) -> Result<(), String> {
    let truth = truth_days(fleet);
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        each_round();
        service.stop();
        let result = equal(&store_days(influx, "fleetpulse"), &truth);
        if result.is_ok() || started.elapsed() > Duration::from_secs(120) {
            return result;
        }
        service.start_and_wait(CONNECTED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_broker_restarts_lose_nothing_and_count_nothing_twice() {
    let (mut mosquitto, influx, dir) =
        servers_and_dir(&format!("{NO_LOSS}\nautosave_interval 1\n"));
    let fleet = fleet(6, 36, 8, 11);
    write_customers(dir.path(), &fleet);
    let mut service = start_service(dir.path(), &mosquitto, &influx);

    // Publish at a modest rate so the run spans the kills.
    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "crash-test-sim", 1500.0);

    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    let mut kills = 0;
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        if round == 3 {
            // The broker goes down too, with persistence on.
            service.kill();
            kills += 1;
            mosquitto.stop();
            tokio::time::sleep(Duration::from_millis(300)).await;
            mosquitto.restart();
            service.start_and_wait(CONNECTED);
            continue;
        }
        service.kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        service.start_and_wait(CONNECTED);
    }
    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.messages, sent);

    let result = settle(&mut service, &influx, &fleet, || {}).await;
    let log = service.log();
    let replayed: Vec<&str> = log.lines().filter(|l| l.contains("WAL replayed")).collect();
    println!(
        "messages sent {sent}, service killed {kills} times (once with the broker), started {} times; lost = {}",
        service.starts(),
        if result.is_ok() { 0 } else { 1 }
    );
    for line in replayed.iter().chain(
        log.lines()
            .filter(|l| l.contains(" stopped "))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        println!("  {line}");
    }
    result.unwrap_or_else(|e| panic!("{e}\n{}", service.log_tail()));
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The store goes away for 35 s mid-run: the sinks retry with backoff, the
/// pipeline pushes back on the broker instead of buffering without bound,
/// and once the store is back every KPI arrives, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_loses_nothing_and_memory_stays_bounded() {
    let (mosquitto, mut influx, dir) = servers_and_dir(NO_LOSS);
    let fleet = fleet(6, 36, 8, 12);
    write_customers(dir.path(), &fleet);
    let mut service = start_service(dir.path(), &mosquitto, &influx);
    let pid = service.pid().expect("running");

    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "outage-test-sim", 400.0);

    tokio::time::sleep(Duration::from_secs(2)).await;
    influx.stop();
    let outage = Instant::now();
    let mut peak = 0.0f64;
    while outage.elapsed() < Duration::from_secs(35) {
        peak = peak.max(rss_mb(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    influx.restart();
    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.messages, sent);

    let result = settle(&mut service, &influx, &fleet, || {
        peak = peak.max(rss_mb(pid))
    })
    .await;
    let log = service.log();
    let retries = log.matches("retrying").count();
    println!(
        "messages sent {sent}, store down 35 s, write retries logged {retries}, peak RSS {peak:.0} MiB; lost = {}",
        if result.is_ok() { 0 } else { 1 }
    );
    result.unwrap_or_else(|e| panic!("{e}\n{}", service.log_tail()));
    assert!(
        retries > 0,
        "the outage was not noticed:\n{}",
        service.log_tail()
    );
    assert!(peak < 256.0, "peak RSS {peak:.0} MiB during the outage");
}

/// The service on [`write_config`]'s file with `shutdown_timeout = "3s"`
/// and the sections `more`, started and connected.
fn start_with_deadline(
    dir: &Path,
    mosquitto: &Mosquitto,
    influx: &InfluxDb1,
    more: &str,
) -> Service {
    let config = write_config(dir, mosquitto, influx);
    // A top-level key goes before the first table.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("shutdown_timeout = \"3s\"\n{text}{more}")).unwrap();
    let mut service = Service::new(config, dir.join("service.log"));
    service.start_and_wait(CONNECTED);
    service
}

/// SIGINT with the store down: the service exits by itself, successfully,
/// within 10 s (3 s of `shutdown_timeout`, 2 s for threads still waiting on
/// the store, slack for a loaded machine), having said that the deadline
/// came (`what` still going). Then the store comes back, a run writes what
/// stayed in the WAL, and the KPIs equal the ground truth. Returns how
/// long the stop took.
async fn stop_at_the_deadline_then_settle(
    service: &mut Service,
    influx: &mut InfluxDb1,
    fleet: &Fleet,
    what: &str,
) -> Duration {
    let asked = Instant::now();
    service.interrupt();
    let status = service
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running 30 s after SIGINT\n{}", service.log_tail()));
    let took = asked.elapsed();
    assert!(status.success(), "{status}\n{}", service.log_tail());
    assert!(
        service
            .log()
            .contains(&format!("shutdown deadline reached{what}")),
        "no deadline reached{what}\n{}",
        service.log_tail()
    );
    assert!(
        took < Duration::from_secs(10),
        "stop took {took:?}\n{}",
        service.log_tail()
    );
    influx.restart();
    service.start_and_wait(CONNECTED);
    tokio::time::sleep(Duration::from_secs(2)).await;
    service.stop();
    equal(&store_days(influx, "fleetpulse"), &truth_days(fleet))
        .unwrap_or_else(|e| panic!("{e}\n{}", service.log_tail()));
    took
}

/// A stop (SIGINT) while the store is down: the service does not wait for
/// the store; it exits within `shutdown_timeout`, and what it had not
/// written stays in the WAL (the checkpoint did not pass it). The next run,
/// with the store back, writes it: the KPIs equal the ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_store_is_down_ends_at_the_deadline_and_loses_nothing() {
    let (mosquitto, mut influx, dir) = servers_and_dir(NO_LOSS);
    let fleet = fleet(4, 16, 5, 21);
    write_customers(dir.path(), &fleet);
    let mut service = start_with_deadline(dir.path(), &mosquitto, &influx, "");

    let messages: Vec<(String, Vec<u8>)> = fleet.encoded_messages().collect();
    let options = publish_options(&mosquitto, "deadline-test-sim");
    fleetpulse_sim::publish(options, messages, |_| {})
        .await
        .unwrap();
    // Everything received and some of it written, then the store goes.
    let started = Instant::now();
    while store_days(&influx, "fleetpulse").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing written"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    influx.stop();
    let took = stop_at_the_deadline_then_settle(&mut service, &mut influx, &fleet, "").await;
    println!("stopped {took:?} after SIGINT with the store down");
}

/// A stop while the store is down and the fan-out waits on a full sink
/// queue, with the dashboard on: the dashboard's view waits for records
/// the stuck fan-out still holds, and used to hold the stop past its
/// deadline until the store came back. It now ends at `shutdown_timeout`
/// like the rest; restarted with the store back, the KPIs equal the
/// ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_a_full_sink_queue_and_the_dashboard_on_ends_at_the_deadline() {
    let (mosquitto, mut influx, dir) = servers_and_dir(NO_LOSS);
    // Enough records that the sink's batch (up to 5,000 taken before its
    // first write) and its queue (64 hand-overs) both fill: with 4 days
    // (1,805 records) the first batch could take nearly all of them, the
    // engine was then not held, and the stop ended on another deadline.
    let fleet = fleet(3, 30, 12, 26);
    write_customers(dir.path(), &fleet);
    let http_port = support::servers::free_port();
    let http = format!("\n[http]\nenabled = true\nlisten = \"127.0.0.1:{http_port}\"\n");
    let mut service = start_with_deadline(dir.path(), &mosquitto, &influx, &http);

    // The store goes before anything is written: every record the engine
    // emits piles up in front of the sink.
    influx.stop();
    let messages: Vec<(String, Vec<u8>)> = fleet.encoded_messages().collect();
    let sent = messages.len() as u64;
    let options = publish_options(&mosquitto, "full-queue-sim");
    fleetpulse_sim::publish(options, messages, |_| {})
        .await
        .unwrap();
    let accepted = "fleetpulse_messages_accepted_total";
    support::poll::until(
        "every message taken in",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || support::service::metric(&support::service::metrics(http_port), accepted) >= sent,
    );
    let held = ": the engine is still handing records to a sink";
    let took = stop_at_the_deadline_then_settle(&mut service, &mut influx, &fleet, held).await;
    println!("stopped {took:?} after SIGINT with the store down and the sink queue full");
}

/// A stop while telemetry still arrives and the store takes nothing (its
/// SQLite file locked by another process, as a backup or a hand-run query
/// holds it): the intake is held behind the store, and the stop waited in
/// its hand-over to the engine for as long as the lock held (81 s with a
/// deadline of 5 s, deaf to a second signal). It now ends at
/// `shutdown_timeout`; started again with the lock gone, every customer-day
/// equals the ground truth (what was not handed over stayed in the WAL,
/// or unacknowledged at the broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_intake_waits_on_a_locked_store_ends_at_the_deadline() {
    use support::truth::{assert_table_equal, sqlite_customer_table, truth_table};
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    // Twenty days: more than the engine and the sink's queue take in while
    // the store is locked (with ten, a loaded machine's run took in every
    // message before the first look).
    let fleet = fleet(4, 60, 20, 7);
    write_customers(dir.path(), &fleet);
    let http_port = support::servers::free_port();
    let config = write_durable_config(
        dir.path(),
        &mosquitto,
        "fleetpulse-locked-store",
        2,
        "",
        &format!(
            "[alerts]\nmqtt = false\n\n[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n\n\
             [http]\nenabled = true\nlisten = \"127.0.0.1:{http_port}\"\n"
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("shutdown_timeout = \"3s\"\n{text}")).unwrap();
    let mut service = Service::new(&config, dir.path().join("service.log"));
    service.start_and_wait(CONNECTED);
    let db = dir.path().join("kpi.sqlite");
    support::poll::wait_for("the store made", || db.exists()).await;
    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "locked-store-sim", 1500.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // The intake stalls short of the last message: held behind the store.
    let accepted = || {
        let text = support::service::metrics(http_port);
        support::service::metric(&text, "fleetpulse_messages_accepted_total")
    };
    let mut last = accepted();
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = accepted();
        assert!(
            now < sent,
            "every message taken in: the intake was not held"
        );
        if now == last {
            break;
        }
        last = now;
    }
    println!("intake held at {last} of {sent} messages");
    let asked = Instant::now();
    service.interrupt();
    let status = service
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still running 60 s after SIGINT\n{}", service.log_tail()));
    let took = asked.elapsed();
    println!("stopped {took:?} after SIGINT with the intake held behind the locked store");
    assert!(status.success(), "{status}\n{}", service.log_tail());
    assert!(
        service.log().contains("the engine still takes no records"),
        "{}",
        service.log_tail()
    );
    assert!(took < Duration::from_secs(10), "{}", service.log_tail());

    // The lock gone: the restart replays the WAL, the broker delivers the
    // rest, and every customer-day equals the ground truth.
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    publisher.await.unwrap().unwrap();
    service.start_and_wait(CONNECTED);
    support::poll::until(
        "every message taken in or replayed",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let text = support::service::metrics(http_port);
            let taken = support::service::metric(&text, "fleetpulse_messages_accepted_total")
                + support::service::metric(&text, "fleetpulse_messages_replayed_total");
            taken >= sent
        },
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    service.stop();
    let truth = truth_table(&fleet.ground_truth().rows());
    assert_table_equal("sqlite", &sqlite_customer_table(&db), &truth);
}

/// Buffered uploads (devices back from 6 to 72 h without coverage, their
/// hours arriving late, within the correction horizon) while the service
/// is killed at random points: a late batch acknowledged before a kill is
/// only in the archive, not the WAL. Every customer-day in SQLite ends equal
/// to the ground truth: nothing lost, nothing counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_amid_buffered_uploads_loses_and_doubles_nothing() {
    use support::truth::{assert_table_equal, sqlite_customer_table, table_equal, truth_table};
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let spec = fleetpulse_sim::FleetSpec {
        customers: 4,
        devices: 24,
        days: 7,
        seed: 11,
        store_and_forward: 8,
        ..fleetpulse_sim::FleetSpec::default()
    };
    let fleet = Fleet::generate(&spec);
    write_customers(dir.path(), &fleet);
    let config = write_durable_config(
        dir.path(),
        &mosquitto,
        "fleetpulse-crash-late",
        2,
        "segment_bytes = 262144\n",
        "[alerts]\nmqtt = false\n\n[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n",
    );
    let mut service = Service::new(config, dir.path().join("service.log"));
    service.start_and_wait(CONNECTED);
    // About 11 s of publishing: the kills fall amid the uploads.
    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "crash-late-sim", 300.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261130);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        service.kill();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        service.start_and_wait(CONNECTED);
    }
    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.messages, sent);

    let truth = truth_table(&fleet.ground_truth().rows());
    let db = dir.path().join("kpi.sqlite");
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        service.stop();
        let settled = table_equal("sqlite", &sqlite_customer_table(&db), &truth).is_ok();
        if settled || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        service.start_and_wait(CONNECTED);
    }
    // Late data did restate windows (it was not refused, nor absent).
    let restated: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM customer_kpi WHERE revision > 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    println!("messages sent {sent}, 5 kills, {restated} customer windows restated");
    assert!(
        restated > 0,
        "no window was restated: no late data came through"
    );
    assert_table_equal("sqlite", &sqlite_customer_table(&db), &truth);
    // Window by window, hourly device windows and the journey included:
    // what a run with every reading in time stores (a pass cut short by a
    // kill, or one that wrote only the windows its late data changed,
    // leaves none behind).
    let (_reference, reference_db) =
        support::tables::in_order(&mosquitto, &spec, "crash-late-reference", None).await;
    support::tables::assert_same_as_in_order(&db, &reference_db);
}

/// A clean stop while the fleet publishes: what the lanes had taken in
/// when the stop came is made durable and acknowledged before the
/// connection closes. The connection's task used to leave at once, so the
/// acks of every message still on its way through the lanes went nowhere
/// and the broker sent them all again to the next start, each refused
/// there as `sequence_replayed` and dead-lettered (8,057 at one stop in a
/// hostile pass); the acks it then sent were lost at the broker when the
/// connection closed with messages unread. Three stops amid the
/// publishing: no message comes back as a replay, and every customer-day
/// equals the ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_acknowledges_what_it_took_in() {
    use support::truth::{sqlite_customer_table, table_equal, truth_table};
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(6, 200, 20, 13);
    write_customers(dir.path(), &fleet);
    let config = write_durable_config(
        dir.path(),
        &mosquitto,
        "fleetpulse-clean-stop",
        2,
        "",
        "[alerts]\nmqtt = false\n\n[limits]\ndead_letter_file = \"dead-letters.jsonl\"\n\n\
         [[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n",
    );
    let mut service = Service::new(&config, dir.path().join("service.log"));
    service.start_and_wait(CONNECTED);
    // As fast as the broker takes them: it sends more than the service
    // reads, and a connection closed with them unread was reset, the last
    // acks lost at the broker.
    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "clean-stop-sim", 1e9);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        service.stop();
        service.start_and_wait(CONNECTED);
    }
    publisher.await.unwrap().unwrap();
    let truth = truth_table(&fleet.ground_truth().rows());
    let db = dir.path().join("kpi.sqlite");
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        service.stop();
        let result = table_equal("sqlite", &sqlite_customer_table(&db), &truth);
        if result.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{}",
            result.unwrap_err()
        );
        service.start_and_wait(CONNECTED);
    }
    let letters =
        std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap_or_default();
    let replays = letters
        .lines()
        .filter(|l| l.contains("sequence_replayed"))
        .count();
    println!(
        "{sent} messages, {} starts, {replays} replays refused",
        service.starts()
    );
    assert_eq!(
        replays,
        0,
        "redelivered after a clean stop:\n{}",
        service.log_tail()
    );
}
