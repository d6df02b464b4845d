//! A customer onboarded while the fleet runs, with the real `fleetpulse
//! run` binary, real mosquitto and a real SQLite store: the operator adds it
//! to the customers file and does nothing else. Its telemetry is refused as
//! `unknown_customer` (dead-lettered) until the service takes the file in,
//! which it does by stopping and starting again in the same process; the
//! other customers' telemetry, published across that stop and start, is
//! neither lost nor doubled, and once `fleetpulse replay` sent the refused
//! messages again every customer's KPIs equal the simulator's ground truth,
//! value by value.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::fleets::{fleet, spawn_publisher, write_customers};
use crate::support::servers::{Mosquitto, NO_LOSS, free_port, servers_and_dir};
use crate::support::service::{Service, influx_sections, metric, metrics, write_durable_config};
use crate::support::tables::scalar;
use crate::support::truth::{
    assert_table_equal, equal, sqlite_customer_table, store_days, truth_days, truth_table,
};
use crate::support::users::{add_user, sign_in, token};

const ACCEPTED: &str = "fleetpulse_messages_accepted_total";
const UNKNOWN: &str = "fleetpulse_messages_rejected_total{reason=\"unknown_customer\"}";

/// `text` (a customers file) without the `[[customer]]` block of `id` and
/// the tables under it.
fn without_customer(text: &str, id: &str) -> String {
    let mut kept = String::new();
    let mut skipping = false;
    let mut block = String::new();
    let flush = |block: &mut String, kept: &mut String| {
        if !block.contains(&format!("id = \"{id}\"")) {
            kept.push_str(block);
        }
        block.clear();
    };
    for line in text.split_inclusive('\n') {
        let header = line.trim_start();
        if header.starts_with("[[customer]]") {
            flush(&mut block, &mut kept);
            skipping = true;
        } else if header.starts_with('[')
            && !header.starts_with("[customer.")
            && !header.starts_with("[[customer.")
        {
            flush(&mut block, &mut kept);
            skipping = false;
        }
        if skipping {
            block.push_str(line);
        } else {
            kept.push_str(line);
        }
    }
    flush(&mut block, &mut kept);
    kept
}

/// Waits until `/metrics` on `http_port` satisfies `done` (the service may
/// be between its stop and its start: no answer then).
async fn wait_metrics(http_port: u16, service: &Service, what: &str, done: impl Fn(&str) -> bool) {
    let started = Instant::now();
    loop {
        let text = std::panic::catch_unwind(|| metrics(http_port)).unwrap_or_default();
        if done(&text) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{what}: not within 90 s\n{text}\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The service file in `dir`: WAL, dead letters, `/metrics`, SQLite, and
/// `http` added to `[http]`. Returns the file and the HTTP port.
fn write_config(dir: &Path, mosquitto: &Mosquitto, client: &str, http: &str) -> (PathBuf, u16) {
    let http_port = free_port();
    let sections = format!(
        "[limits]\ndead_letter_file = \"dead-letters.jsonl\"\n\n\
         [http]\nenabled = true\nlisten = \"127.0.0.1:{http_port}\"\n{http}\n\
         [alerts]\nmqtt = false\n\n\
         [[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n"
    );
    let config = write_durable_config(dir, mosquitto, client, 2, "", &sections);
    (config, http_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_added_to_the_file_is_taken_in_without_a_restart_and_nothing_is_lost() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(3, 18, 4, 71);
    write_customers(dir.path(), &fleet);
    let customers = dir.path().join("customers.toml");
    let full = std::fs::read_to_string(&customers).unwrap();
    let newcomer = fleet.customers().last().unwrap().id.clone();
    let without = without_customer(&full, &newcomer);
    assert!(without.len() < full.len() && !without.contains(&format!("\"{newcomer}\"")));
    std::fs::write(&customers, &without).unwrap();

    let (config, http_port) = write_config(dir.path(), &mosquitto, "fleetpulse-onboarding", "");
    let mut service = Service::new(&config, dir.path().join("service.log"));
    service.start_and_wait("subscribed");
    let pid = service.pid();

    // The whole fleet at 150 msg/s (about 12 s): the newcomer's share is
    // refused until the file names it, the rest goes on throughout.
    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "onboarding-sim", 150.0);
    wait_metrics(http_port, &service, "the newcomer refused", |m| {
        metric(m, UNKNOWN) > 0
    })
    .await;
    std::fs::write(&customers, &full).unwrap();
    service.wait_for_log_within("starting again in place", 1, Duration::from_secs(30));
    assert!(
        !publisher.is_finished(),
        "the fleet still publishing across the stop and start"
    );
    service.wait_for_log_within("connected to broker", 2, Duration::from_secs(60));
    assert_eq!(service.pid(), pid, "the same process");
    assert!(service.is_running());
    let log = service.log();
    let said = (log.lines()).find(|l| l.contains("customers added, removed or moved"));
    assert!(
        said.is_some_and(|l| l.contains(&newcomer) && l.contains("starts again in place")),
        "{}",
        service.log_tail()
    );
    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.messages, sent);

    // What was refused goes in again by itself (the newcomer's dead
    // letters, sent again once the new start is subscribed); each message
    // once.
    wait_metrics(http_port, &service, "every message taken in", |m| {
        metric(m, ACCEPTED) >= sent
    })
    .await;
    let log = service.log();
    let replayed = (log.lines())
        .find(|l| l.contains("sent again from the dead letters"))
        .unwrap_or_else(|| panic!("nothing sent again\n{}", service.log_tail()));
    assert!(replayed.contains(&newcomer), "{replayed}");
    let count = |line: &str, key: &str| -> u64 {
        let value = line
            .split(key)
            .nth(1)
            .and_then(|v| v.split_whitespace().next());
        value.unwrap().parse().unwrap()
    };
    let refused_before = count(replayed, "sent=");
    let after = metrics(http_port);
    assert_eq!(metric(&after, ACCEPTED), sent, "each message once");
    assert_eq!(
        metric(&after, UNKNOWN),
        refused_before,
        "the refusals were the newcomer's, before the start in place, and each sent again"
    );
    service.stop();

    let truth = truth_table(&fleet.ground_truth().rows());
    let stored = sqlite_customer_table(&dir.path().join("kpi.sqlite"));
    assert_table_equal("sqlite after onboarding in place", &stored, &truth);
    let newcomer_days = (stored.keys()).filter(|(c, _)| **c == *newcomer).count();
    assert!(newcomer_days >= 4, "{newcomer_days} days of the newcomer");
    println!(
        "{sent} messages; {refused_before} of the newcomer refused, then sent again; {}",
        said.unwrap()
    );
}

/// A customer removed from the file while its devices keep sending: the
/// service starts again in place, refuses its telemetry from then on
/// (dead-lettered, nothing else refused), and the other customers lose
/// nothing. What the store holds of the removed customer stays: its days
/// before the removal as the ground truth has them, the day of the removal
/// with what was taken in before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_removed_from_the_file_is_refused_from_then_on_and_the_rest_loses_nothing() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(3, 18, 4, 72);
    write_customers(dir.path(), &fleet);
    let customers = dir.path().join("customers.toml");
    let full = std::fs::read_to_string(&customers).unwrap();
    let leaver = fleet.customers().last().unwrap().id.clone();
    let (config, http_port) = write_config(dir.path(), &mosquitto, "fleetpulse-leaving", "");
    let mut service = Service::new(&config, dir.path().join("service.log"));
    service.start_and_wait("subscribed");

    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "leaving-sim", 150.0);
    wait_metrics(http_port, &service, "a third taken in", |m| {
        metric(m, ACCEPTED) > sent / 3
    })
    .await;
    std::fs::write(&customers, without_customer(&full, &leaver)).unwrap();
    service.wait_for_log_within("starting again in place", 1, Duration::from_secs(30));
    assert!(!publisher.is_finished());
    let log = service.log();
    assert!(
        (log.lines()).any(
            |l| l.contains("starts again in place") && l.contains(&format!("{leaver} removed"))
        ),
        "{}",
        service.log_tail()
    );
    publisher.await.unwrap().unwrap();
    wait_metrics(http_port, &service, "every message handled", |m| {
        metric(m, ACCEPTED) + metric(m, UNKNOWN) >= sent
    })
    .await;
    let refused = metric(&metrics(http_port), UNKNOWN);
    service.stop();
    assert!(refused > 0);
    let letters = std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap();
    // Besides the removed customer's, only redeliveries of what the first
    // run had made durable and not yet acknowledged at its stop, refused
    // as the replays they are.
    let other = (letters.lines()).find(|l| {
        !l.contains(&format!("/{leaver}/")) && !l.contains("\"reason\":\"sequence_replayed\"")
    });
    assert!(
        other.is_none(),
        "only the removed customer's telemetry is refused: {other:?}"
    );

    let truth = truth_table(&fleet.ground_truth().rows());
    let stored = sqlite_customer_table(&dir.path().join("kpi.sqlite"));
    let (stayed, left): (Vec<_>, Vec<_>) = stored.into_iter().partition(|((c, _), _)| *c != leaver);
    let truth_stayed = (truth.iter())
        .filter(|((c, _), _)| *c != leaver)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_table_equal(
        "the customers that stayed",
        &stayed.into_iter().collect(),
        &truth_stayed,
    );
    // Its days before the removal as the ground truth has them; the day of
    // the removal with what was taken in before it (no more samples than
    // the ground truth's); none after.
    let (last, before) = left.split_last().expect("the removed customer's days stay");
    for (key, row) in before {
        assert_table_equal(
            &format!("{key:?} of the removed customer"),
            &[(key.clone(), row.clone())].into_iter().collect(),
            &[(key.clone(), truth[key].clone())].into_iter().collect(),
        );
    }
    let (key, row) = last;
    assert!(
        row["samples"] <= truth[key]["samples"],
        "{key:?}: {row:?} against {:?}",
        truth[key]
    );
    println!(
        "{sent} messages; {refused} of the removed customer refused after the start in place; {} of its days stored, the last {:?} of {:?} samples",
        left.len(),
        last.1["samples"],
        truth[&last.0]["samples"]
    );
}

/// The customers file emptied while the fleet runs (`> customers.toml`, an
/// export that failed, an editor that truncates before it writes and then
/// stalls): taken in, it would remove every customer, and the service
/// would refuse the whole fleet's telemetry as `unknown_customer` until
/// someone noticed. It is refused instead, named and said once; every
/// customer's telemetry goes on being taken in, and the daily KPIs equal the
/// ground truth. The file written back is taken in as no change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_file_emptied_by_mistake_offboards_no_one() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(3, 18, 4, 73);
    write_customers(dir.path(), &fleet);
    let customers = dir.path().join("customers.toml");
    let full = std::fs::read_to_string(&customers).unwrap();
    let (config, http_port) = write_config(dir.path(), &mosquitto, "fleetpulse-emptied", "");
    let mut service = Service::new(&config, dir.path().join("service.log"));
    service.start_and_wait("subscribed");

    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "emptied-sim", 150.0);
    wait_metrics(http_port, &service, "a third taken in", |m| {
        metric(m, ACCEPTED) > sent / 3
    })
    .await;
    std::fs::write(&customers, "").unwrap();
    let refused = "customers file not reloaded";
    service.wait_for_log_within(refused, 1, Duration::from_secs(30));
    let line = (service.log().lines())
        .find(|l| l.contains(refused))
        .map(str::to_owned)
        .unwrap();
    assert!(
        line.contains("names no customer") && line.contains("customers.toml"),
        "{line}"
    );
    assert!(
        !publisher.is_finished(),
        "refused while the fleet publishes"
    );
    // Another look at the same empty file says nothing more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(service.log().matches(refused).count(), 1, "said once");
    std::fs::write(&customers, &full).unwrap();
    publisher.await.unwrap().unwrap();
    wait_metrics(http_port, &service, "every message taken in", |m| {
        metric(m, ACCEPTED) >= sent
    })
    .await;
    let m = metrics(http_port);
    service.stop();
    assert_eq!(
        metric(&m, UNKNOWN),
        0,
        "nothing refused as unknown_customer"
    );
    let log = service.log();
    assert!(
        !log.contains("starting again in place"),
        "{}",
        service.log_tail()
    );
    let truth = truth_table(&fleet.ground_truth().rows());
    let stored = sqlite_customer_table(&dir.path().join("kpi.sqlite"));
    assert_table_equal("every customer", &stored, &truth);
}

/// A customer added while the store is down: the start in place waits for
/// the store instead of ending the process (`/healthz` answers, `/readyz`
/// says not ready, nothing is taken in), and once the store is back the
/// service goes on by itself: every customer's daily KPIs in InfluxDB equal
/// the ground truth, the newcomer's refused telemetry sent again included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_in_place_waits_for_a_store_that_is_down_and_loses_nothing() {
    let (mosquitto, mut influx, dir) = servers_and_dir(NO_LOSS);
    let fleet = fleet(3, 18, 4, 75);
    write_customers(dir.path(), &fleet);
    let customers = dir.path().join("customers.toml");
    let full = std::fs::read_to_string(&customers).unwrap();
    let newcomer = fleet.customers().last().unwrap().id.clone();
    std::fs::write(&customers, without_customer(&full, &newcomer)).unwrap();
    let http_port = free_port();
    let sections = format!(
        "[limits]\ndead_letter_file = \"dead-letters.jsonl\"\n\n\
         [http]\nenabled = true\nlisten = \"127.0.0.1:{http_port}\"\n\n{}",
        influx_sections(&influx, "onboarding")
    );
    let config = write_durable_config(dir.path(), &mosquitto, "fp-store-down", 2, "", &sections);
    // A top-level key goes before the first table: the stop while the
    // store is down ends at this deadline.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("shutdown_timeout = \"3s\"\n{text}")).unwrap();
    let mut service = Service::new(&config, dir.path().join("service.log"));
    service.start_and_wait("subscribed");
    let pid = service.pid();

    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "store-down-sim", 150.0);
    wait_metrics(http_port, &service, "the newcomer refused", |m| {
        metric(m, UNKNOWN) > 0
    })
    .await;
    influx.stop();
    std::fs::write(&customers, &full).unwrap();
    service.wait_for_log_within(
        "a store does not answer at the start in place",
        2,
        Duration::from_secs(60),
    );
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{http_port}{path}");
        async move { reqwest::get(url).await.unwrap().status() }
    };
    assert_eq!(service.pid(), pid);
    assert!(service.is_running(), "{}", service.log_tail());
    assert_eq!(get("/healthz").await, 200);
    assert_eq!(get("/readyz").await, 503);
    let url = format!("http://127.0.0.1:{http_port}/readyz");
    let why = reqwest::get(url).await.unwrap().text().await.unwrap();
    assert!(
        why.contains("starting again in place: waiting for a store that does not answer"),
        "{why}"
    );
    influx.restart();
    service.wait_for_log_within("the store answers again", 1, Duration::from_secs(60));
    service.wait_for_log_within("connected to broker", 2, Duration::from_secs(60));
    publisher.await.unwrap().unwrap();
    wait_metrics(http_port, &service, "every message taken in", |m| {
        metric(m, ACCEPTED) >= sent
    })
    .await;
    assert_eq!(
        metric(&metrics(http_port), ACCEPTED),
        sent,
        "each message once"
    );
    assert_eq!(service.pid(), pid, "the same process throughout");
    service.stop();
    let stored = store_days(&influx, "onboarding");
    equal(&stored, &truth_days(&fleet)).unwrap_or_else(|e| panic!("{e}\n{}", service.log_tail()));
    let waits = service.log().matches("a store does not answer").count();
    println!(
        "{sent} messages; the start in place asked the store {waits} times while it was down; {} customer-days equal the ground truth",
        stored.len()
    );
}

/// What a user sees across a start in place: the HTTP port never closes (a
/// client asking `/healthz` every 5 ms throughout gets an answer each
/// time), a dashboard sign-in made before it is still valid after it, and
/// the dashboard drops the customer the file removed while it keeps every
/// closed day's health it showed of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_port_and_its_sign_ins_outlast_a_start_in_place() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(3, 9, 3, 73);
    write_customers(dir.path(), &fleet);
    let customers = dir.path().join("customers.toml");
    let full = std::fs::read_to_string(&customers).unwrap();
    let leaver = fleet.customers().last().unwrap().id.clone();
    let users = dir.path().join("users.toml");
    let file = users.to_str().unwrap();
    let password = "root-Pa55word-for-the-test";
    add_user(file, "root", "admin", Some(password));
    let ops = token(file, "ops", "admin");
    let (config, http_port) = write_config(
        dir.path(),
        &mosquitto,
        "fleetpulse-port-kept",
        "users_file = \"users.toml\"\n",
    );
    let mut service = Service::new(&config, dir.path().join("service.log"));
    service.start_and_wait("subscribed");
    let pid = service.pid();

    let base = format!("http://127.0.0.1:{http_port}");
    let client = reqwest::Client::new();
    let get = |path: &str, auth: (&str, String)| {
        (client.get(format!("{base}{path}")))
            .header(auth.0, auth.1)
            .send()
    };
    let bearer = || ("authorization", format!("Bearer {ops}"));
    let api = async |path: &str| -> serde_json::Value {
        let response = get(path, bearer()).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    };
    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "port-kept-sim", 2_000.0);
    publisher.await.unwrap().unwrap();
    crate::support::poll::until_settled(
        async || api("/api/status").await,
        |status| status["messages_accepted"].as_u64() == Some(sent),
        || service.log_tail(),
    )
    .await;
    let session = sign_in(&base, "root", password).await;
    let before = api("/api/customers").await;
    let listed = |list: &serde_json::Value| -> Vec<String> {
        (list["customers"].as_array().unwrap().iter())
            .map(|c| c["customer"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&before).len(), 3, "{before}");

    // Ask the port every 5 ms from before the change until the new start
    // is connected.
    let polling = tokio_util::sync::CancellationToken::new();
    let poller = tokio::spawn({
        let (client, url, polling) = (client.clone(), format!("{base}/healthz"), polling.clone());
        let ready = format!("{base}/readyz");
        async move {
            let (mut answered, mut failed, mut not_ready) = (0u64, Vec::new(), 0u64);
            while !polling.is_cancelled() {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => answered += 1,
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
                if let Ok(r) = client.get(&ready).send().await
                    && r.status() == 503
                {
                    not_ready += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (answered, failed, not_ready)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&customers, without_customer(&full, &leaver)).unwrap();
    service.wait_for_log_within("starting again in place", 1, Duration::from_secs(30));
    service.wait_for_log_within("connected to broker", 2, Duration::from_secs(60));
    polling.cancel();
    let (answered, failed, not_ready) = poller.await.unwrap();
    assert_eq!(service.pid(), pid, "the same process");
    assert!(
        failed.is_empty(),
        "{} of {} requests to /healthz failed across the start in place: {:?}",
        failed.len(),
        answered + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        service.log().matches("http listening").count(),
        1,
        "the port opened once"
    );

    // The sign-in made before still holds.
    let me = get("/api/me", ("cookie", session.clone())).await.unwrap();
    assert_eq!(me.status(), 200, "the session outlasts the start in place");
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(
        (me["user"].as_str(), me["via"].as_str()),
        (Some("root"), Some("session"))
    );

    // The removed customer is gone from the dashboard; every daily health
    // shown of the others is still shown.
    let after = api("/api/customers").await;
    let kept: Vec<String> = (listed(&before).into_iter())
        .filter(|c| *c != *leaver)
        .collect();
    let mut now = listed(&after);
    now.sort();
    let mut wanted = kept.clone();
    wanted.sort();
    assert_eq!(now, wanted, "{after}");
    let alerts = api("/api/alerts").await.to_string();
    assert!(!alerts.contains(&format!("\"{leaver}\"")), "{alerts}");
    let history = |list: &serde_json::Value, id: &str| -> Vec<serde_json::Value> {
        let row = (list["customers"].as_array().unwrap().iter())
            .find(|c| c["customer"] == id)
            .unwrap();
        row["health_history"].as_array().unwrap().clone()
    };
    // The open day's provisional score is judged again after the stop;
    // the closed days' are final.
    let mut closed_days = 0;
    for id in &kept {
        let (shown, still) = (history(&before, id), history(&after, id));
        for day in shown.iter().rev().skip(1) {
            assert!(still.contains(day), "{id}: {day} shown before, not after");
            closed_days += 1;
        }
    }
    assert!(closed_days > 0, "no closed day's health shown: {before}");
    service.stop();
    println!(
        "/healthz answered {answered} times across the start in place, none failed; /readyz 503 {not_ready} times; {} customers shown after, {leaver} gone; {closed_days} closed days' health kept",
        kept.len()
    );
}

#[test]
fn a_customer_block_is_cut_with_its_tables() {
    let text = "[[customer]]\nid = \"a\"\n\n[customer.contract]\narr = 1\n\n\
                [[customer]]\nid = \"b\"\n\n[[customer.outcome]]\nname = \"x\"\n\n\
                [[customer]]\nid = \"c\"\n";
    assert_eq!(
        without_customer(text, "b"),
        "[[customer]]\nid = \"a\"\n\n[customer.contract]\narr = 1\n\n[[customer]]\nid = \"c\"\n"
    );
}

/// `customer`'s `onboarding_stalled` episodes in the SQLite store at `db`:
/// episode, status, customer name, opened at, resolved at, evidence.
type Episode = (u32, String, String, i64, Option<i64>, String);

fn stalled_episodes(db: &Path, customer: &str) -> Vec<Episode> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut query) = conn.prepare(
        "SELECT episode, status, customer_name, opened_at, resolved_at, evidence FROM alert \
         WHERE customer = ?1 AND rule = 'onboarding_stalled' ORDER BY opened_at",
    ) else {
        return Vec::new();
    };
    let rows = query.query_map([customer], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    });
    rows.map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// The alerts of `qt` the session `leaver-alert-reader` has been sent
/// since it last asked (within 5 s).
fn heard_by_qt(mosquitto: &Mosquitto) -> Vec<serde_json::Value> {
    let messages = mosquitto.receive(
        "leaver-alert-reader",
        "cs/alerts/#",
        10,
        Duration::from_secs(5),
    );
    (messages.iter())
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .filter(|a: &serde_json::Value| a["customer"] == "qt")
        .collect()
}

/// Polls the store until `customer`'s episodes satisfy `done`.
async fn until_episodes(
    db: &Path,
    customer: &str,
    service: &Service,
    what: &str,
    done: impl Fn(&[Episode]) -> bool,
) -> Vec<Episode> {
    let started = Instant::now();
    loop {
        let episodes = stalled_episodes(db, customer);
        if done(&episodes) {
            return episodes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{what}: not within 90 s: {episodes:?}\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A customer taken out of the customers file while one of its alerts is
/// open (`onboarding_stalled`: its machines never reported): no day of it
/// closes any more, so the alert would stay open in the store and at every
/// receiver for good. The start in place resolves it, at the end of the
/// customer's last closed day, under the name it had, and says why; a
/// restart does not send it again; taken back into the file, the customer
/// goes on from its last day, and its silence, still there, opens a second
/// episode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_taken_out_of_the_file_has_its_open_alert_resolved_once() {
    use crate::support::late::{DARK_CUSTOMERS, hour, quiet_customer};
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    mosquitto.subscribe_session("leaver-alert-reader", "cs/alerts/#");
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.toml");
    let full = format!("{DARK_CUSTOMERS}{}", quiet_customer(1));
    std::fs::write(&customers, &full).unwrap();
    let sections = "[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n";
    let config = write_durable_config(dir.path(), &mosquitto, "fleetpulse-leaver", 2, "", sections);
    let mut service = Service::new(&config, dir.path().join("service.log"));
    service.start_and_wait("subscribed");
    let db = dir.path().join("kpi.sqlite");
    let publish = async |hours: std::ops::Range<u64>, client: &str| {
        let messages = hours.flat_map(|h| ["d1", "d2", "d3"].map(|d| hour(d, h)));
        let options = crate::support::fleets::publish_options(&mosquitto, client);
        fleetpulse_sim::publish(options, messages.collect::<Vec<_>>(), |_| {})
            .await
            .unwrap();
    };

    // `dk`'s fleet reports two and a half days; `qt`'s never does, and its
    // one onboarding day passes.
    publish(0..60, "leaver-sim-1").await;
    let opened = until_episodes(&db, "qt", &service, "qt's silence opened", |e| {
        e.len() == 1 && e[0].1 == "open"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let health_end = "SELECT max(window_end) FROM health WHERE customer = ?1";
    let last_day_end = scalar(&db, health_end, ["qt"]);

    std::fs::write(&customers, DARK_CUSTOMERS).unwrap();
    service.wait_for_log_within("starting again in place", 1, Duration::from_secs(30));
    let resolved = until_episodes(&db, "qt", &service, "qt's alert resolved", |e| {
        e.len() == 1 && e[0].1 == "resolved"
    })
    .await;
    let (episode, _, name, opened_at, resolved_at, evidence) = &resolved[0];
    assert_eq!((*episode, *opened_at), (opened[0].0, opened[0].3));
    assert_eq!(name, "Quiet Quarry", "the name it had");
    // At the end of its last day the service made durable: the stores may
    // hold one more (a day's state is kept once every store holds all of
    // its records, which the next day's close tells).
    let resolved_at = resolved_at.expect("resolved");
    let kept = (resolved_at - *opened_at) % 86_400_000 == 0;
    assert!(
        kept && *opened_at <= resolved_at && resolved_at <= last_day_end,
        "{resolved:?}: the last day stored ends at {last_day_end}"
    );
    assert!(
        evidence.contains("removed from the customers file"),
        "{evidence}"
    );
    service.wait_for_log_within("their open alerts resolve", 1, Duration::from_secs(5));

    // The journey, its episode ended, is stored with the next checkpoint:
    // a restart has nothing to resolve.
    tokio::time::sleep(Duration::from_secs(3)).await;
    service.stop();
    // One connection per start: the first, the start in place, this one.
    service.start();
    service.wait_for_log_within("connected to broker", 3, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let said = service.log().matches("their open alerts resolve").count();
    assert_eq!(said, 1, "resolved once\n{}", service.log_tail());
    let heard = heard_by_qt(&mosquitto);
    let statuses: Vec<&str> = heard
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["open", "resolved"], "{heard:?}");
    let last = &heard[1];
    assert_eq!(last["alert_id"], heard[0]["alert_id"]);
    assert_eq!(last["customer_name"], "Quiet Quarry");
    assert_eq!(last["resolved_at_ms"], resolved_at);
    let id = last["alert_id"].as_str().unwrap();
    assert_eq!(
        last["notification_id"],
        format!("{id}-resolved-{resolved_at}").as_str()
    );

    // Four days out of the file while `dk`'s fleet goes on: the checkpoint
    // passes the days it was out.
    publish(60..160, "leaver-sim-2").await;
    let started = Instant::now();
    while scalar(&db, health_end, ["dk"]) < last_day_end + 3 * 86_400_000 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Back in the file: its days close again from its last one (those it
    // was out included, and written), still silent, and a second episode
    // opens, sent and stored.
    std::fs::write(&customers, &full).unwrap();
    service.wait_for_log_within("starting again in place", 2, Duration::from_secs(30));
    service.wait_for_log_within("connected to broker", 4, Duration::from_secs(60));
    let episodes = until_episodes(&db, "qt", &service, "a second episode", |e| e.len() == 2).await;
    assert!(
        service
            .log()
            .contains("back in the customers file after days out of it")
    );
    let heard = heard_by_qt(&mosquitto);
    service.stop();
    assert_eq!(episodes[0], resolved[0], "the first stays resolved");
    let (episode, status, _, opened_at, resolved_at, _) = &episodes[1];
    assert_eq!((*episode, status.as_str()), (2, "open"), "{episodes:?}");
    assert!(*opened_at > resolved[0].3 && resolved_at.is_none());
    assert!(
        heard
            .iter()
            .any(|a| a["status"] == "open" && a["opened_at_ms"] == *opened_at),
        "the second episode sent: {heard:?}"
    );
    let days_out = "SELECT count(*) FROM health WHERE customer = 'qt' AND window_end > ?1";
    let days = scalar(&db, days_out, [last_day_end]);
    assert!(days >= 3, "{days} of the days it was out written");
    println!("qt's episodes: {episodes:?}");
}
