//! End to end on real parts: simulator -> real mosquitto -> the fleetpulse
//! service -> InfluxDB 1.x (v1 API), VictoriaMetrics (v2 API through the
//! influxdb2 client) and SQLite; every per-customer-day KPI read back from
//! each store must equal the simulator's ground truth.

mod support;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use fleetpulse::config::ServiceConfig;
use fleetpulse::drive::drive;
use fleetpulse::metrics::RejectReason;
use fleetpulse::sinks::SinkConfig;
use fleetpulse::sinks::sqlite::SqliteConfig;
use fleetpulse_sim::{Fleet, FleetSpec};
use prost::Message;
use support::fleets::publish_options;
use support::in_process::{self, InProcess};
use support::poll::wait_for;
use support::servers::{InfluxDb1, Mosquitto, NO_LOSS, VictoriaMetrics};
use support::truth::{
    assert_table_equal, every_store, influx_table, sqlite_customer_table, truth_table,
    victoria_table,
};

fn spec() -> FleetSpec {
    FleetSpec {
        customers: 6,
        devices: 48,
        days: 10,
        seed: 7,
        ..FleetSpec::default()
    }
}

/// A service on `mosquitto` as `client` with `workers` engine workers, and
/// its customers file for `fleet` in `dir`.
fn service_config(
    mosquitto: &Mosquitto,
    dir: &Path,
    fleet: &Fleet,
    client: &str,
    workers: usize,
) -> ServiceConfig {
    let customers = dir.join("customers.toml");
    fleetpulse::sim::write_files(fleet, None, Some(&customers)).unwrap();
    in_process::config(
        mosquitto.host(),
        mosquitto.port(),
        client,
        workers,
        &customers,
    )
}

/// One run per worker count, writing to all three stores at once.
async fn all_stores_equal_ground_truth(workers: usize) {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let influx = InfluxDb1::start();
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::generate(&spec());
    let sqlite = dir.path().join("kpi.sqlite");

    let mut config = service_config(&mosquitto, dir.path(), &fleet, "fleetpulse-e2e", workers);
    config.sinks = every_store(&sqlite, &influx, "fleetpulse", &vm, Default::default());
    let run = drive(
        config,
        &fleet,
        publish_options(&mosquitto, "fleetpulse-e2e-sim"),
    )
    .await
    .unwrap();
    println!(
        "workers={workers}: {} messages, {} samples, {:.1} s, rejected {}, records {}",
        run.published.messages,
        run.published.samples,
        run.elapsed.as_secs_f64(),
        run.metrics.rejected_total(),
        run.metrics.records_emitted.load(Relaxed)
    );
    assert_eq!(run.metrics.rejected_total(), 0);
    assert_eq!(
        run.metrics.messages_accepted.load(Relaxed),
        run.published.messages
    );
    for sink in &run.service.sinks {
        assert_eq!(sink.errors, 0, "{sink:?}");
        assert_eq!(sink.records_dropped, 0, "{sink:?}");
    }

    let truth = truth_table(&fleet.ground_truth().rows());
    assert_table_equal("sqlite", &sqlite_customer_table(&sqlite), &truth);
    assert_table_equal("influxdb 1.x", &influx_table(&influx, "fleetpulse"), &truth);
    assert_table_equal("victoriametrics", &victoria_table(&vm), &truth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_every_store_equals_ground_truth() {
    all_stores_equal_ground_truth(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_every_store_equals_ground_truth() {
    all_stores_equal_ground_truth(2).await;
}

/// Bad payloads sent by a real MQTT client amid valid traffic: each is
/// counted under its reason, the service keeps running, and the valid
/// traffic's KPIs are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_counted_and_the_service_keeps_running() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = support::fleets::fleet(2, 6, 3, 42);
    let sqlite = dir.path().join("kpi.sqlite");
    let mut config = service_config(&mosquitto, dir.path(), &fleet, "fleetpulse-bad-input", 2);
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: sqlite.clone(),
    })];
    let dead_letters = dir.path().join("dead-letter.jsonl");
    config.limits.dead_letter_file = Some(dead_letters.clone());
    config.limits.max_devices_per_customer = fleet
        .customers()
        .iter()
        .map(|c| fleet.devices_of(c).len())
        .max()
        .unwrap();

    let InProcess {
        metrics,
        shutdown,
        task: service,
    } = in_process::subscribed(config, "<test>").await;

    // Valid messages, with bad ones slipped in between them.
    let messages: Vec<(String, Vec<u8>)> = fleet.encoded_messages().collect();
    let (first, rest) = messages.split_at(messages.len() / 2);
    let customer = &fleet.customers()[0];
    let device = &fleet.devices_of(customer)[0];
    let topic = device.topic().to_string();
    let mut other_customers = fleet
        .messages()
        .find(|m| m.batch.customer_id != customer.id)
        .unwrap()
        .batch;
    let mut mismatched = other_customers.clone();
    mismatched.sequence = 1_000_000;
    let (_, valid) = &first[0];

    let publish_all = |batch: &[(String, Vec<u8>)]| {
        for (t, p) in batch {
            mosquitto.publish(t, p, 1);
        }
    };
    publish_all(&first[..first.len().min(50)]);
    mosquitto.publish(&topic, b"\x0a\xff\xff\xff not protobuf", 1);
    mosquitto.publish(&topic, &valid[..valid.len() / 2], 1);
    // Customer B's payload published on customer A's device topic.
    mosquitto.publish(&topic, &mismatched.encode_to_vec(), 1);
    // Matches the subscription filter, but an id is longer than 64 bytes.
    let long_topic = fleetpulse_proto::telemetry_topic(&"x".repeat(65), "s", "d");
    mosquitto.publish(&long_topic, valid, 1);
    other_customers.customer_id = "c99-unknown".into();
    let unknown_topic = fleetpulse_proto::telemetry_topic(
        "c99-unknown",
        &other_customers.site_id,
        &other_customers.device_id,
    );
    mosquitto.publish(&unknown_topic, &other_customers.encode_to_vec(), 1);
    let bad = 5u64;

    // The rest of the valid traffic, through the simulator's own publisher.
    let remaining: Vec<(String, Vec<u8>)> = first[first.len().min(50)..]
        .iter()
        .chain(rest)
        .cloned()
        .collect();
    fleetpulse_sim::publish(
        publish_options(&mosquitto, "bad-input-sim"),
        remaining,
        |_| {},
    )
    .await
    .unwrap();
    let total = messages.len() as u64 + bad;
    wait_for("every message handled", || metrics.handled() >= total).await;

    // After the traffic: a redelivered message, one older than the
    // lateness bound, one from the future, one over the size limit, and a
    // flood of never-seen device ids.
    let replayed = first[10].clone();
    let mut late = fleetpulse_proto::v1::TelemetryBatch::decode(&first[0].1[..]).unwrap();
    late.sequence = 999_999;
    let mut future =
        fleetpulse_proto::v1::TelemetryBatch::decode(&rest[rest.len() - 1].1[..]).unwrap();
    future.sequence = 999_999;
    let tomorrow = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 86_400_000;
    for (i, sample) in future.samples.iter_mut().enumerate() {
        sample.event_time_ms = tomorrow + i as i64;
    }
    let mut after = vec![
        replayed,
        (first[0].0.clone(), late.encode_to_vec()),
        (rest[rest.len() - 1].0.clone(), future.encode_to_vec()),
        (topic.clone(), vec![0x0a; 300 * 1024]),
    ];
    // A customer with every purchased device online, so the limit is reached.
    let full = fleet
        .customers()
        .iter()
        .find(|c| fleet.devices_of(c).iter().all(|d| d.online_from.is_some()))
        .unwrap();
    let template = rest
        .iter()
        .rev()
        .map(|(_, p)| fleetpulse_proto::v1::TelemetryBatch::decode(&p[..]).unwrap())
        .find(|b| b.customer_id == full.id)
        .unwrap();
    for n in 0..5 {
        let mut flood = template.clone();
        flood.device_id = format!("flood-{n}");
        let t =
            fleetpulse_proto::telemetry_topic(&flood.customer_id, &flood.site_id, &flood.device_id);
        after.push((t, flood.encode_to_vec()));
    }
    let after_count = after.len() as u64;
    let mut options = publish_options(&mosquitto, "bad-input-after");
    options.max_packet_bytes = 1024 * 1024;
    fleetpulse_sim::publish(options, after, |_| {})
        .await
        .unwrap();
    wait_for("the bad messages handled", || {
        metrics.handled() >= total + after_count
    })
    .await;
    assert!(!service.is_finished(), "the service stopped on bad input");

    let expected = [
        (RejectReason::Decode, 2),
        (RejectReason::IdMismatch, 1),
        (RejectReason::Topic, 1),
        (RejectReason::UnknownCustomer, 1),
        (RejectReason::SequenceReplayed, 1),
        (RejectReason::TooLate, 1),
        (RejectReason::FutureTimestamp, 1),
        (RejectReason::TooLarge, 1),
        (RejectReason::DeviceLimit, 5),
    ];
    for (reason, count) in expected {
        assert_eq!(metrics.rejected(reason), count, "{}", reason.as_str());
    }
    assert_eq!(
        metrics.messages_accepted.load(Relaxed),
        messages.len() as u64
    );
    // Every refusal is kept for inspection, with its reason.
    let letters: Vec<serde_json::Value> = std::fs::read_to_string(&dead_letters)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (reason, count) in expected {
        let found = letters
            .iter()
            .filter(|l| l["reason"] == reason.as_str())
            .count() as u64;
        assert_eq!(found, count, "dead letters for {}", reason.as_str());
    }
    println!(
        "messages sent {}, accepted {}, rejected {} ({}), duplicates absorbed {}, lost = 0",
        total + after_count,
        metrics.messages_accepted.load(Relaxed),
        metrics.rejected_total(),
        expected
            .iter()
            .map(|(r, c)| format!("{} {c}", r.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
        metrics.rejected(RejectReason::SequenceReplayed),
    );

    shutdown.cancel();
    service.await.unwrap().unwrap();
    let truth = truth_table(&fleet.ground_truth().rows());
    assert_table_equal("sqlite", &sqlite_customer_table(&sqlite), &truth);
}
