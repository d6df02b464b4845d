//! Acceptance 2: a mixed fleet. Every second machine of each customer
//! publishes over MQTT (the embedded broker), the others are polled from
//! the simulated AEMP API; the customers' KPIs equal the ground truth of
//! both together.

use std::net::SocketAddr;

use fleetpulse::aemp_sim::{self, AempFleet, Quirks, Selection};
use fleetpulse_sim::{Fleet, GroundTruth, PublishOptions};
use prost::Message as _;

use super::common::*;
use super::support::in_process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_and_aemp_machines_of_one_customer_add_up() {
    let broker = fleetpulse::broker::start(0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(8);
    let fleet = Fleet::generate(&spec);
    let polled = Selection {
        every: 2,
        offset: 1,
    };
    let served = AempFleet::new(&fleet, polled, false);
    let aemp_devices: std::collections::HashSet<(String, String)> = served
        .machines
        .iter()
        .map(|m| (m.customer.clone(), m.device.clone()))
        .collect();
    // MQTT: the machines the AEMP server does not serve.
    let mqtt: Vec<(String, Vec<u8>)> = fleet
        .messages()
        .filter(|m| {
            !aemp_devices.contains(&(m.batch.customer_id.clone(), m.batch.device_id.clone()))
        })
        .map(|m| m.into_encoded())
        .collect();
    let mut truth = GroundTruth::default();
    for (_, payload) in &mqtt {
        truth.observe(&fleetpulse_proto::v1::TelemetryBatch::decode(&payload[..]).unwrap());
    }
    served.observe_into(&mut truth);
    // Both kinds in each customer.
    for customer in fleet.customers() {
        let devices = fleet.devices_of(customer);
        assert!(
            devices.iter().any(|d| polled.serves(d)) && devices.iter().any(|d| !polled.serves(d))
        );
    }
    let points = served.points() as u64;
    let customers = dir.path().join("customers.toml");
    write_customers(&fleet, served.equipment(None), &customers);
    let server = aemp_sim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        served,
        Quirks::default(),
    )
    .await
    .unwrap();

    let mut config = service_config(dir.path(), broker.addr, &customers, &spec, "mixed");
    config.aemp = vec![source("oem", &server.url(), &spec)];
    let service = in_process::spawn(config, "<aemp mixed>");
    super::support::poll::wait_for("subscription", || {
        service
            .metrics
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    let published = mqtt.len() as u64;
    let options = PublishOptions {
        host: broker.addr.ip().to_string(),
        port: broker.addr.port(),
        client_id: "mixed-sim".into(),
        ..PublishOptions::default()
    };
    fleetpulse_sim::publish(options, mqtt, |_| {})
        .await
        .unwrap();
    let polled_metrics = source_metrics(&service.metrics, "oem").await;
    wait_caught_up(&service.metrics, &polled_metrics, points, published).await;
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    assert_eq!(service.metrics.rejected_total(), 0);
    println!(
        "mixed: {published} MQTT messages, {points} AEMP readings times, {:?}",
        polled_metrics.status()
    );
    assert_equal(
        "mixed customers",
        &customer_table(&sqlite_path(dir.path())),
        &truth_table(&truth.rows()),
    );
}
