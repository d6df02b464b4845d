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
use crate::support::servers::{Mosquitto, NO_LOSS, free_port};
use crate::support::service::{Service, metric, metrics, write_durable_config};
use crate::support::truth::{assert_table_equal, sqlite_customer_table, truth_table};

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

/// The service file in `dir`: WAL, dead letters, `/metrics`, SQLite.
/// Returns the file and the HTTP port.
fn write_config(dir: &Path, mosquitto: &Mosquitto, client: &str) -> (PathBuf, u16) {
    let http_port = free_port();
    let sections = format!(
        "[limits]\ndead_letter_file = \"dead-letters.jsonl\"\n\n\
         [http]\nenabled = true\nlisten = \"127.0.0.1:{http_port}\"\n\n\
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

    let (config, http_port) = write_config(dir.path(), &mosquitto, "fleetpulse-onboarding");
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
    let (config, http_port) = write_config(dir.path(), &mosquitto, "fleetpulse-leaving");
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
