//! A changed definition restates the journey: a fleet runs live through
//! real mosquitto into SQLite; halfway, one customer's outcome target is
//! changed in the customers file. The service reloads the file by itself,
//! folds that customer's journey again from its first day, and goes on
//! with the new target: every journey row then equals a run that had the
//! new target from the start. `fleetpulse recompute` from a date, asked of
//! a stopped service, runs at its start and changes nothing more.

mod support;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use fleetpulse::config::ServiceConfig;
use fleetpulse_proto::v1;
use fleetpulse_sim::{Fleet, FleetSpec};
use support::in_process;
use support::servers::{Mosquitto, NO_LOSS};
use support::tables::{assert_same_as_in_order, rows};

const DAY_MS: i64 = 86_400_000;

fn config(mosquitto: &Mosquitto, dir: &Path, client: &str) -> ServiceConfig {
    let customers = dir.join("customers.toml");
    in_process::durable(mosquitto.host(), mosquitto.port(), client, &customers, dir)
}

/// The fleet's customers file with the first customer's first outcome
/// target doubled; the customer's id.
fn changed_target(fleet: &Fleet, dir: &Path) -> (String, String) {
    let path = dir.join("original.toml");
    fleetpulse::sim::write_files(fleet, None, Some(&path)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let customer = fleet.customers()[0].id.clone();
    let at = text.find("target = ").unwrap();
    let end = at + text[at..].find('\n').unwrap();
    let target: f64 = text[at + "target = ".len()..end].parse().unwrap();
    let changed = format!("{}target = {:?}{}", &text[..at], target * 2.0, &text[end..]);
    assert!(text[..at].contains(&customer) && text[..at].matches("[[customer]]").count() == 1);
    (changed, customer)
}

async fn feed(
    service: &in_process::InProcess,
    mosquitto: &Mosquitto,
    client: &str,
    batches: &[&v1::TelemetryBatch],
    handled: u64,
) {
    let messages = in_process::encoded(batches);
    publish(service, mosquitto, client, messages, handled).await;
}

fn first_at(b: &v1::TelemetryBatch) -> i64 {
    b.samples.iter().map(|s| s.event_time_ms).min().unwrap()
}

/// A fleet of 4 customers and 16 machines over `days`; its batches in
/// event-time order and the first reading's time.
fn fleet(days: u32, seed: u64) -> (Fleet, Vec<v1::TelemetryBatch>, i64) {
    let fleet = Fleet::generate(&FleetSpec {
        customers: 4,
        devices: 16,
        days,
        seed,
        ..FleetSpec::default()
    });
    let all: Vec<v1::TelemetryBatch> = fleet.messages_in_event_time().map(|m| m.batch).collect();
    let start = all.iter().map(first_at).min().unwrap();
    (fleet, all, start)
}

/// The reference: every batch taken in with the first customer's target
/// changed from the start. Its directory, the changed customers file and
/// the customer.
async fn with_new_target(
    mosquitto: &Mosquitto,
    fleet: &Fleet,
    all: &[v1::TelemetryBatch],
    name: &str,
) -> (tempfile::TempDir, String, String) {
    let reference = tempfile::tempdir().unwrap();
    let (changed, customer) = changed_target(fleet, reference.path());
    std::fs::write(reference.path().join("customers.toml"), &changed).unwrap();
    let cfg = config(mosquitto, reference.path(), &format!("{name}-reference"));
    let service = in_process::subscribed(cfg, "reference").await;
    let everything: Vec<&v1::TelemetryBatch> = all.iter().collect();
    let n = everything.len() as u64;
    feed(
        &service,
        mosquitto,
        &format!("{name}-ref-sim"),
        &everything,
        n,
    )
    .await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    (reference, changed, customer)
}

/// `fleetpulse recompute --customer customer --from from` asked of the
/// stopped service of `dir` (customers file `customers`), which `cfg`
/// then starts (as `name`) and stops once it has done it.
async fn recompute_at_start(
    dir: &Path,
    customers: &Path,
    (cfg, name): (ServiceConfig, &'static str),
    customer: &str,
    from: &str,
) {
    let config_file = dir.join("fleetpulse.toml");
    std::fs::write(
        &config_file,
        format!(
            "customers = {{ file = {:?} }}\n[wal]\ndir = {:?}\n",
            customers.display().to_string(),
            dir.join("wal").display().to_string()
        ),
    )
    .unwrap();
    let args = ["recompute", "--customer", customer, "--from", from, "-c"];
    let said = in_process::fleetpulse(
        args.iter()
            .map(std::ffi::OsStr::new)
            .chain([config_file.as_os_str()]),
    );
    assert!(said.contains("requested"), "{said}");
    let service = in_process::subscribed(cfg, name).await;
    recomputed(&service, "the recompute at start").await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
}

/// Waits for `service`'s first recompute (`what`), then for what it sends.
async fn recomputed(service: &in_process::InProcess, what: &'static str) {
    let metrics = service.metrics.clone();
    support::poll::wait_for(what, move || metrics.restatements.load(Relaxed) >= 1).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
}

/// How many of `before`'s outcome rows the store at `db` holds changed now:
/// `customer`'s, and the other customers'.
fn outcomes_moved(
    before: &std::collections::BTreeMap<String, Vec<(String, String)>>,
    db: &Path,
    customer: &str,
) -> (usize, usize) {
    let (after, _) = rows(db, "outcome");
    let moved = before
        .iter()
        .filter(|(key, row)| after.get(*key) != Some(*row));
    moved.fold((0, 0), |(mine, others), (key, _)| {
        if key.contains(customer) {
            (mine + 1, others)
        } else {
            (mine, others + 1)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_outcome_target_restates_the_journey_from_its_first_day() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let (fleet, all, start) = fleet(40, 29);
    let day25 = start + 25 * DAY_MS;
    let (reference, changed, customer) =
        with_new_target(&mosquitto, &fleet, &all, "recompute").await;
    let reference_db = reference.path().join("kpi.sqlite");

    // The old target for 25 days, then the file changed under the service.
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.toml");
    fleetpulse::sim::write_files(&fleet, None, Some(&customers)).unwrap();
    let cfg = config(&mosquitto, dir.path(), "recompute-fleet");
    let service = in_process::subscribed(cfg.clone(), "recompute-fleet").await;
    let before: Vec<&v1::TelemetryBatch> = (all.iter()).filter(|b| first_at(b) < day25).collect();
    let mut handled = before.len() as u64;
    feed(&service, &mosquitto, "recompute-sim-1", &before, handled).await;
    let db = dir.path().join("kpi.sqlite");
    let (outcomes_before, _) = rows(&db, "outcome");
    assert_eq!(service.metrics.restatements.load(Relaxed), 0);

    std::fs::write(&customers, &changed).unwrap();
    recomputed(&service, "the recompute").await;
    let (moved, others_moved) = outcomes_moved(&outcomes_before, &db, &customer);
    assert!(
        moved > 0,
        "the new target changed no stored outcome of {customer}"
    );
    assert_eq!(others_moved, 0, "other customers' outcomes changed");

    let after: Vec<&v1::TelemetryBatch> = (all.iter()).filter(|b| first_at(b) >= day25).collect();
    handled += after.len() as u64;
    feed(&service, &mosquitto, "recompute-sim-2", &after, handled).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    assert_same_as_in_order(&db, &reference_db);

    // `fleetpulse recompute` of a stopped service, from day 10, with the
    // definition unchanged: done at the next start, and nothing moves.
    let day10 = jiff::Timestamp::from_millisecond(start + 10 * DAY_MS)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let service = (cfg, "recompute-fleet");
    recompute_at_start(
        dir.path(),
        &customers,
        service,
        &customer,
        &day10.to_string(),
    )
    .await;
    assert_same_as_in_order(&db, &reference_db);
}

/// An operator stops the service, doubles a customer's outcome target in
/// the customers file and starts it again (a deploy that ships the file
/// and restarts the unit). No reload saw the change: the start must find
/// it, by the definition the stored journey was folded with, and fold the
/// journey again, so that the store equals a run that had the new target
/// from the start, not old outcomes before the restart and new ones after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_changed_while_the_service_is_stopped_restates_at_the_start() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let (fleet, all, start) = fleet(30, 31);
    let day20 = start + 20 * DAY_MS;
    let (before, after): (Vec<&v1::TelemetryBatch>, Vec<_>) =
        all.iter().partition(|b| first_at(b) < day20);
    let (reference, changed, customer) = with_new_target(&mosquitto, &fleet, &all, "stopped").await;

    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.toml");
    fleetpulse::sim::write_files(&fleet, None, Some(&customers)).unwrap();
    let cfg = config(&mosquitto, dir.path(), "stopped-fleet");
    let service = in_process::subscribed(cfg.clone(), "stopped-fleet").await;
    let handled = before.len() as u64;
    feed(&service, &mosquitto, "stopped-sim-1", &before, handled).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    let db = dir.path().join("kpi.sqlite");
    let (outcomes_before, _) = rows(&db, "outcome");

    std::fs::write(&customers, &changed).unwrap();
    let service = in_process::subscribed(cfg.clone(), "stopped-fleet").await;
    recomputed(&service, "the recompute at the start").await;
    let (moved, _) = outcomes_moved(&outcomes_before, &db, &customer);
    assert!(moved > 0, "the new target changed no stored outcome");
    let handled = service.metrics.handled() + after.len() as u64;
    feed(&service, &mosquitto, "stopped-sim-2", &after, handled).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    assert_same_as_in_order(&db, &reference.path().join("kpi.sqlite"));

    // Started again with the file as it is: nothing to fold again.
    let service = in_process::subscribed(cfg, "stopped-fleet").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(service.metrics.restatements.load(Relaxed), 0);
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    assert_same_as_in_order(&db, &reference.path().join("kpi.sqlite"));
}

/// Publishes `messages` as `client` and waits until `service` handled
/// `handled` in all, then for what follows (a day's close, a pass).
async fn publish(
    service: &in_process::InProcess,
    mosquitto: &Mosquitto,
    client: &str,
    messages: Vec<(String, Vec<u8>)>,
    handled: u64,
) {
    let settle = std::time::Duration::from_secs(3);
    in_process::publish_and_settle(service, mosquitto, client, messages, handled, settle).await;
}

/// `qt`'s onboarding_stalled episodes in the store at `db`: (opened_at,
/// status).
fn silence_alerts(db: &Path) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut select = conn
        .prepare(
            "SELECT opened_at, status FROM alert WHERE customer = 'qt' \
             AND rule = 'onboarding_stalled' ORDER BY opened_at",
        )
        .unwrap();
    select
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A customer whose machines never reported (`qt`) has its onboarding
/// days cut from 3 to 2 in the customers file while the service runs: its
/// silent days close again under the new definition, from the day after
/// the archive began (the alert the old one opened at the end of day 2 is
/// retracted, one opens at the end of day 1, with its health records), and
/// every row equals a run that had 2 days from the start. Before, the
/// recompute found no window to fold and dropped it: the old definition
/// held until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_customer_s_changed_onboarding_days_restate_its_silence() {
    use support::late::{DARK_CUSTOMERS, T0, hour, quiet_customer};
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let customers = |days| format!("{DARK_CUSTOMERS}{}", quiet_customer(days));
    let hours = |range: std::ops::Range<u64>| -> Vec<(String, Vec<u8>)> {
        range
            .flat_map(|h| ["d1", "d2", "d3"].map(|d| hour(d, h)))
            .collect()
    };
    let midnight = |days: i64| T0 as i64 + days * DAY_MS;

    // The reference: two onboarding days from the start.
    let reference = tempfile::tempdir().unwrap();
    let path = reference.path().join("customers.toml");
    std::fs::write(&path, customers(2)).unwrap();
    let cfg = config(&mosquitto, reference.path(), "silent-reference");
    let service = in_process::subscribed(cfg, "silent-reference").await;
    publish(&service, &mosquitto, "silent-ref-sim", hours(0..192), 576).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    let reference_db = reference.path().join("kpi.sqlite");
    assert_eq!(
        silence_alerts(&reference_db),
        [(midnight(2), "open".to_string())]
    );

    // Three days for five days, then two.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.toml");
    std::fs::write(&path, customers(3)).unwrap();
    let cfg = config(&mosquitto, dir.path(), "silent-redefined");
    let service = in_process::subscribed(cfg, "silent-redefined").await;
    publish(&service, &mosquitto, "silent-sim-1", hours(0..120), 360).await;
    let db = dir.path().join("kpi.sqlite");
    assert_eq!(silence_alerts(&db), [(midnight(3), "open".to_string())]);

    std::fs::write(&path, customers(2)).unwrap();
    recomputed(&service, "the recompute").await;
    assert_eq!(
        silence_alerts(&db),
        [
            (midnight(2), "open".to_string()),
            (midnight(3), "retracted".to_string())
        ]
    );
    publish(&service, &mosquitto, "silent-sim-2", hours(120..192), 576).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    assert_same_as_in_order(&db, &reference_db);
}

/// A customer silent for its first four days (past its two onboarding
/// days), then at work, has its ARR changed in the customers file on day 6:
/// its journey is folded again from its silence, not from its first
/// telemetry as if listening began then (which retracted the silence's
/// alert, "the episode did not happen", and left its red days in the
/// portfolio). `fleetpulse recompute --from` a day inside the silence,
/// asked of the stopped service, changes nothing more. Every row equals a
/// run that had the new ARR from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_silent_before_its_first_telemetry_is_recomputed_from_its_silence() {
    use support::late::{DARK_CUSTOMERS, T0, hour, hour_of, quiet_customer};
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let customers = |arr: &str| {
        let quiet = quiet_customer(2).replace("arr = 60000", &format!("arr = {arr}"));
        format!("{DARK_CUSTOMERS}{quiet}")
    };
    let hours = |range: std::ops::Range<u64>| -> Vec<(String, Vec<u8>)> {
        (range.flat_map(|h| {
            let quiet = (h >= 96).then(|| ["q1", "q2"].map(|q| hour_of("qt", q, h)));
            (["d1", "d2", "d3"].map(|d| hour(d, h)).into_iter()).chain(quiet.into_iter().flatten())
        }))
        .collect()
    };
    let midnight = |days: i64| T0 as i64 + days * DAY_MS;
    let resolved = [(midnight(2), "resolved".to_string())];

    let reference = tempfile::tempdir().unwrap();
    let path = reference.path().join("customers.toml");
    std::fs::write(&path, customers("70000")).unwrap();
    let cfg = config(&mosquitto, reference.path(), "was-silent-reference");
    let service = in_process::subscribed(cfg, "was-silent-reference").await;
    let all = hours(0..192);
    let n = all.len() as u64;
    publish(&service, &mosquitto, "was-silent-ref-sim", all, n).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    let reference_db = reference.path().join("kpi.sqlite");
    assert_eq!(silence_alerts(&reference_db), resolved);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.toml");
    std::fs::write(&path, customers("60000")).unwrap();
    let cfg = config(&mosquitto, dir.path(), "was-silent");
    let service = in_process::subscribed(cfg.clone(), "was-silent").await;
    let (first, rest) = (hours(0..150), hours(150..192));
    let mut handled = first.len() as u64;
    publish(&service, &mosquitto, "was-silent-sim-1", first, handled).await;
    std::fs::write(&path, customers("70000")).unwrap();
    recomputed(&service, "the recompute").await;
    let db = dir.path().join("kpi.sqlite");
    assert_eq!(silence_alerts(&db), resolved, "the silence happened");
    handled += rest.len() as u64;
    publish(&service, &mosquitto, "was-silent-sim-2", rest, handled).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    assert_same_as_in_order(&db, &reference_db);

    // From day 2, inside the silence, the definition unchanged.
    recompute_at_start(dir.path(), &path, (cfg, "was-silent"), "qt", "2026-01-07").await;
    assert_eq!(silence_alerts(&db), resolved);
    assert_same_as_in_order(&db, &reference_db);
}

/// A customers file edited into one that does not check (a typo) or
/// emptied (a failed export) is not taken in: the previous definitions
/// stay. Before, only the log said so; `/metrics` now counts each refused
/// reload and says, while it lasts, that the file on disk is not the one
/// in effect, until a reload takes the file again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_file_that_does_not_reload_is_said_by_metrics_until_one_does() {
    let (fleet, _, _) = fleet(3, 5);
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.toml");
    fleetpulse::sim::write_files(&fleet, None, Some(&customers)).unwrap();
    let good = std::fs::read_to_string(&customers).unwrap();
    let broker = fleetpulse::broker::start(0).unwrap();
    let mut config = ServiceConfig::default();
    config.mqtt.host = broker.addr.ip().to_string();
    config.mqtt.port = broker.addr.port();
    config.mqtt.client_id = "fleetpulse-reload-test".into();
    config.engine.workers = 1;
    config.customers = Some(fleetpulse::config::CustomersRef {
        file: customers.clone(),
    });
    config.sinks = vec![fleetpulse::sinks::SinkConfig::Sqlite(
        fleetpulse::sinks::sqlite::SqliteConfig {
            path: dir.path().join("kpi.sqlite"),
        },
    )];
    config.http.enabled = true;
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    let (service, hub) = in_process::serving(config, "<test>").await;
    let url = format!("http://{}/metrics", hub.local_addr().unwrap());
    let said = async |failing: u8, errors: u8| {
        let want = [
            format!("fleetpulse_customers_reload_failing {failing}"),
            format!("fleetpulse_customers_reload_errors_total {errors}"),
        ];
        let started = std::time::Instant::now();
        loop {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            if want.iter().all(|w| text.lines().any(|l| l == w)) {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{want:?} in {text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    said(0, 0).await;
    std::fs::write(&customers, good.replacen("arr = ", "arr = \"many\" #", 1)).unwrap();
    said(1, 1).await;
    std::fs::write(&customers, &good).unwrap();
    said(0, 1).await;
    std::fs::write(&customers, "").unwrap();
    said(1, 2).await;
    std::fs::write(&customers, &good).unwrap();
    said(0, 2).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
}
