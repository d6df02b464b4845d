//! Full-size batches in a flood hold a bounded share of memory. The lanes'
//! queues and groups are counted in messages (thousands of them), and a
//! message may be one reading or 4,000: a store-and-forward fleet uploading
//! full buffers once made a service reading a 480 MB history peak at 1 GB,
//! most of it messages received and not yet handed to the engine
//! (BENCHMARKS.md section 34). The sources now stop reading once
//! `mqtt.queue_bytes` of payload are on their way.

use std::sync::atomic::Ordering::Relaxed;

use fleetpulse_proto::v1;
use prost::Message as _;

use crate::support::fleets::publish_options;
use crate::support::in_process;
use crate::support::servers::{Mosquitto, NO_LOSS};

/// Readings a second, a full batch of them: about 200 KB encoded.
const SAMPLES: usize = 3_000;

fn full_batch(device: usize, sequence: u64, start: i64) -> v1::TelemetryBatch {
    let samples = (0..SAMPLES)
        .map(|i| {
            let s = (sequence as usize - 1) * SAMPLES + i;
            let hours = s as f64 / 3600.0;
            v1::Sample {
                event_time_ms: start + s as i64 * 1000,
                state: v1::MachineState::Running as i32,
                cumulative_operating_hours: hours,
                cumulative_idle_hours: hours * 0.2,
                cumulative_fuel_used_litres: hours * 12.0,
                cycles: 1,
                output_units: 2.0,
                operator_id: format!("operator-{}", device % 4),
                features: vec![v1::FeatureUsage {
                    feature: "eco_mode".into(),
                    active_seconds: 1,
                }],
                ..Default::default()
            }
        })
        .collect();
    v1::TelemetryBatch {
        device_id: format!("exc-{device:02}"),
        customer_id: "acme".into(),
        site_id: "s".into(),
        sequence,
        firmware_version: "t".into(),
        samples,
        unit_epoch: 1,
    }
}

/// A budget below one message: each message waits for all of it, so the
/// service holds one at a time, between its arrival from the socket and
/// its hand-over to the engine; and every one is still taken in (a share
/// not given back would stop intake for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_batches_above_the_byte_budget_are_taken_in_one_at_a_time() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.toml");
    std::fs::write(
        &customers,
        "[[customer]]\nid = \"acme\"\nname = \"acme\"\nsegment = \"low-touch\"\n\
         [customer.contract]\narr = 1000\nstart = \"2024-01-01\"\nrenewal = \"2030-01-01\"\n\
         devices_purchased = 8\noperator_seats = 4\n",
    )
    .unwrap();
    let (host, port) = (mosquitto.host(), mosquitto.port());
    let mut config = in_process::durable(host, port, "budget", &customers, dir.path());
    config.mqtt.queue_bytes = 64 * 1024;
    let service = in_process::subscribed(config, "budget").await;

    let start = jiff::Timestamp::now().as_millisecond() - 30 * 86_400_000;
    let (devices, per_device) = (8, 15);
    let mut messages = Vec::new();
    for sequence in 1..=per_device {
        for device in 0..devices {
            let batch = full_batch(device, sequence, start);
            let topic = format!("fleet/acme/s/{}/telemetry", batch.device_id);
            messages.push((topic, batch.encode_to_vec()));
        }
    }
    let n = messages.len() as u64;
    let bytes: usize = messages.iter().map(|(_, p)| p.len()).sum();
    assert!(bytes / messages.len() > 150_000, "{bytes} bytes");

    let publish = tokio::spawn(fleetpulse_sim::publish(
        publish_options(&mosquitto, "budget-sim"),
        messages,
        |_| {},
    ));
    let metrics = service.metrics.clone();
    let mut most = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while metrics.messages_accepted.load(Relaxed) < n {
        let accepted = metrics.messages_accepted.load(Relaxed);
        let received = metrics.messages_received.load(Relaxed);
        most = most.max(received.saturating_sub(accepted));
        assert!(
            std::time::Instant::now() < deadline,
            "{accepted} of {n} taken in after 120 s ({received} received)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    publish.await.unwrap().unwrap();
    // One in its lane, one received and waiting for the budget.
    assert!(most <= 2, "{most} messages held at once");
    assert_eq!(service.metrics.rejected_total(), 0);
    // Every share given back, once the last group is handed over.
    let metrics = service.metrics.clone();
    crate::support::poll::wait_for("every share given back", move || {
        metrics.intake_bytes() == 0
    })
    .await;
    assert_eq!(
        service.metrics.samples_accepted.load(Relaxed),
        n * SAMPLES as u64
    );
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
}
