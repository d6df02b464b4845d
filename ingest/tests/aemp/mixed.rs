//! Acceptance 2: a mixed fleet. Every second machine of each customer
//! publishes over MQTT (the embedded broker), the others are polled from
//! the simulated AEMP API; the customers' KPIs equal the ground truth of
//! both together.

use fleetpulse::aemp_sim::{AempFleet, Quirks, Selection};
use fleetpulse_sim::{GroundTruth, PublishOptions};
use prost::Message as _;

use super::common::*;
use super::support::in_process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_and_aemp_machines_of_one_customer_add_up() {
    let setup = Setup::new(8);
    let fleet = &setup.fleet;
    let polled = Selection {
        every: 2,
        offset: 1,
    };
    let served = AempFleet::new(fleet, polled, false);
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
    write_customers(fleet, served.equipment(None), &setup.customers());
    let server = serve(served, Quirks::default()).await;

    let mut config = setup.service_config("mixed");
    config.aemp = vec![source("oem", &server.url(), &setup.spec)];
    let mut service = in_process::subscribed(config, "<aemp mixed>").await;
    let published = mqtt.len() as u64;
    let options = PublishOptions {
        host: setup.broker.addr.ip().to_string(),
        port: setup.broker.addr.port(),
        client_id: "mixed-sim".into(),
        ..PublishOptions::default()
    };
    fleetpulse_sim::publish(options, mqtt, |_| {})
        .await
        .unwrap();
    let polled_metrics = source_metrics(&service.metrics, "oem").await;
    wait_caught_up(&service.metrics, &polled_metrics, points, published).await;
    stop(&mut service).await;
    assert_eq!(service.metrics.rejected_total(), 0);
    println!(
        "mixed: {published} MQTT messages, {points} AEMP readings times, {:?}",
        polled_metrics.status()
    );
    setup.assert_customers_equal("mixed customers", &truth);
}
