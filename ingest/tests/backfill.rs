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

use fleetpulse::config::{ServiceConfig, WalConfig};
use fleetpulse::metrics::RejectReason;
use fleetpulse::sinks::SinkConfig;
use fleetpulse::sinks::sqlite::SqliteConfig;
use fleetpulse_proto::v1;
use fleetpulse_sim::{Fleet, FleetSpec};
use support::fleets::publish_options;
use support::in_process;
use support::servers::{Mosquitto, NO_LOSS};
use support::tables::{assert_same_as_in_order, rows};

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

fn config(mosquitto: &Mosquitto, dir: &Path, fleet: &Fleet, client: &str) -> ServiceConfig {
    let customers = dir.join("customers.toml");
    fleetpulse::sim::write_files(fleet, None, Some(&customers)).unwrap();
    let mut config = in_process::config(mosquitto.host(), mosquitto.port(), client, 2, &customers);
    config.wal = Some(WalConfig {
        dir: dir.join("wal"),
        ..toml::from_str("dir = \"x\"").unwrap()
    });
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: dir.join("kpi.sqlite"),
    })];
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
    fleetpulse_sim::publish(publish_options(mosquitto, client), messages, |_| {})
        .await
        .unwrap();
    settle(service, handled).await;
}

async fn settle(service: &in_process::InProcess, handled: u64) {
    let metrics = service.metrics.clone();
    support::poll::wait_for("the messages handled", move || metrics.handled() >= handled).await;
    // Restatement passes run once a second.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
}

fn encoded(batches: &[&v1::TelemetryBatch]) -> Vec<(String, Vec<u8>)> {
    (batches.iter())
        .map(|b| {
            let topic = fleetpulse_proto::telemetry_topic(&b.customer_id, &b.site_id, &b.device_id);
            (topic, prost::Message::encode_to_vec(*b))
        })
        .collect()
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

/// `fleetpulse backfill FILES -c CONFIG`, the binary; its output.
fn backfill(config: &Path, files: &[&Path]) -> std::process::Output {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .arg("backfill")
        .args(files)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilled_history_equals_the_live_run_over_it() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let fleet = fleet();
    let all: Vec<v1::TelemetryBatch> = fleet.messages_in_event_time().map(|m| m.batch).collect();
    let ids: Vec<String> = fleet.customers().iter().map(|c| c.id.clone()).collect();
    let (fresh, joined, old) = (&ids[1], &ids[2], &ids[3]);
    let start = all.iter().map(first_at).min().unwrap();
    let (day80, day85) = (start + 80 * DAY_MS, start + 85 * DAY_MS);

    // The reference: every reading live, in event-time order.
    let reference = tempfile::tempdir().unwrap();
    let cfg = config(&mosquitto, reference.path(), &fleet, "backfill-reference");
    let service = in_process::subscribed(cfg, "backfill-reference").await;
    let everything: Vec<&v1::TelemetryBatch> = all.iter().collect();
    let n = everything.len() as u64;
    feed(
        &service,
        &mosquitto,
        "backfill-ref-sim",
        encoded(&everything),
        n,
    )
    .await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();

    // Live until day 85: the others; `joined` from day 80 on; `fresh` not.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&mosquitto, dir.path(), &fleet, "backfill-fleet");
    let config_file = dir.path().join("fleetpulse.toml");
    std::fs::write(
        &config_file,
        format!(
            "[mqtt]\nhost = \"{}\"\nport = {}\nclient_id = \"backfill-cli\"\n",
            mosquitto.host(),
            mosquitto.port()
        ),
    )
    .unwrap();
    let service = in_process::subscribed(cfg, "backfill-fleet").await;
    let live_before: Vec<&v1::TelemetryBatch> = (all.iter())
        .filter(|b| first_at(b) < day85)
        .filter(|b| &b.customer_id != fresh && (&b.customer_id != joined || first_at(b) >= day80))
        .collect();
    let mut handled = live_before.len() as u64;
    feed(
        &service,
        &mosquitto,
        "backfill-sim-1",
        encoded(&live_before),
        handled,
    )
    .await;
    assert_eq!(service.metrics.rejected_total(), 0);

    // The histories: `fresh`'s recorded batches, `joined`'s readings as CSV.
    let recorded = dir.path().join("fresh.binpb");
    let fresh_history: Vec<&v1::TelemetryBatch> = (all.iter())
        .filter(|b| &b.customer_id == fresh && first_at(b) < day85)
        .collect();
    fleetpulse::backfill::write_batches(&recorded, fresh_history.iter().copied()).unwrap();
    let csv = dir.path().join("joined.csv");
    let joined_history: Vec<&v1::TelemetryBatch> = (all.iter())
        .filter(|b| &b.customer_id == joined && first_at(b) < day80)
        .collect();
    readings_csv(&csv, &joined_history);
    let output = backfill(&config_file, &[&recorded, &csv]);
    let said = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    println!("{said}");
    assert!(said.contains(fresh) && said.contains(joined), "{said}");
    let sent = fleetpulse::backfill::history(
        &fleetpulse::backfill::BackfillArgs {
            files: vec![recorded.clone(), csv.clone()],
            config: config_file.clone(),
            customer: Vec::new(),
            username: None,
            password_env: None,
            unit_epoch: 1,
        },
        &Default::default(),
    )
    .unwrap()
    .len() as u64;
    handled += sent;
    settle(&service, handled).await;
    let refused: Vec<_> = (RejectReason::ALL.iter())
        .map(|r| (r.as_str(), service.metrics.rejected(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    // All late but the newest hours, within the allowed lateness of the
    // live fleet's watermark: those are taken in live.
    let late = service.metrics.late_admitted.load(Relaxed);
    assert!(late <= sent && late >= sent - 100, "{late} of {sent} late");

    // A customer live since day 0: its first days are pruned from the
    // archive; a history of it is refused, saying why.
    let old_history: Vec<&v1::TelemetryBatch> = (all.iter())
        .filter(|b| &b.customer_id == old && first_at(b) < start + DAY_MS)
        .collect();
    let again = dir.path().join("old.csv");
    readings_csv(&again, &old_history);
    backfill(&config_file, &[&again]);
    let refused_n = fleetpulse::backfill::history(
        &fleetpulse::backfill::BackfillArgs {
            files: vec![again.clone()],
            config: config_file.clone(),
            customer: Vec::new(),
            username: None,
            password_env: None,
            unit_epoch: 1,
        },
        &Default::default(),
    )
    .unwrap()
    .len() as u64;
    handled += refused_n;
    settle(&service, handled).await;
    assert_eq!(service.metrics.rejected(RejectReason::TooLate), refused_n);
    let letters = std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap();
    assert!(
        letters.contains(&format!("backfill of customer `{old}` refused"))
            && letters.contains("pruned"),
        "{letters}"
    );

    // Then everyone live to the end.
    let live_after: Vec<&v1::TelemetryBatch> =
        all.iter().filter(|b| first_at(b) >= day85).collect();
    handled += live_after.len() as u64;
    feed(
        &service,
        &mosquitto,
        "backfill-sim-2",
        encoded(&live_after),
        handled,
    )
    .await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();

    let (db, reference_db) = (
        dir.path().join("kpi.sqlite"),
        reference.path().join("kpi.sqlite"),
    );
    for customer in [fresh, joined] {
        let (rows, _) = rows(&reference_db, "health");
        assert!(
            rows.keys().any(|k| k.contains(customer.as_str())),
            "{customer}"
        );
    }
    assert_same_as_in_order(&db, &reference_db);
}
