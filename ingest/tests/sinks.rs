//! The InfluxDB sinks against real servers: InfluxDB 1.x through the v1
//! `/write` API, VictoriaMetrics through the v2 API (and the v1 API, which it
//! serves too). Checks the public schema of docs/SCHEMA.md: measurement, tags,
//! field names and types, timestamps, escaping, and overwrite on rewrite.

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;

use fleetpulse::sinks::{
    InfluxDbV1Config, InfluxDbV2Config, Sink, SinkConfig, SinkError, SinkSettings, run_sink,
};
use fleetpulse_engine::{CustomerKpi, DeviceKpi, MachineState, Output};
use serde_json::{Value, json};
use support::servers::{InfluxDb1, VictoriaMetrics};

/// Needs every line-protocol tag escape (space, comma, equals sign), holds a
/// backslash and is not ASCII.
const CUSTOMER: &str = r"Müller Maschinenbau, Werk=Süd\Nord";
/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000_000;
const T0_RFC3339: &str = "2023-11-14T22:13:20Z";

fn customer_kpi(cycles: u64) -> CustomerKpi {
    CustomerKpi {
        customer: CUSTOMER.into(),
        window: "1h".into(),
        window_start: T0,
        window_end: T0 + 3_600_000,
        devices_purchased: 4,
        reporting_devices: 3,
        active_devices: 2,
        utilisation: 0.25,
        // A whole number: must still be stored as a float.
        operating_hours: 3.0,
        idle_hours: 0.5,
        fuel_litres: 41.25,
        cycles,
        output_units: 120.0,
        manual_interventions: 7,
        distinct_operators: 2,
        advanced_features_used: 1,
        advanced_feature_share: 0.5,
        fault_count: 1,
        samples: 360,
    }
}

fn device_kpi(state: MachineState) -> DeviceKpi {
    DeviceKpi {
        customer: CUSTOMER.into(),
        site: "Zürich Nord".into(),
        device: "exc=07".into(),
        window: "1h".into(),
        window_start: T0,
        window_end: T0 + 3_600_000,
        utilisation: 0.75,
        operating_hours: 0.75,
        idle_hours: 0.25,
        fuel_litres: 12.5,
        cycles: 40,
        output_units: 30.0,
        manual_interventions: 2,
        distinct_operators: 1,
        fault_count: 0,
        samples: 120,
        last_seen: T0 + 3_599_000,
        last_state: state,
    }
}

fn v1_config(url: String) -> SinkConfig {
    SinkConfig::InfluxDbV1(InfluxDbV1Config {
        url,
        database: "fleet".into(),
        username: None,
        password_env: None,
        batch_size: NonZeroUsize::new(100).unwrap(),
    })
}

/// The rows of an InfluxQL answer as `{column: value}` objects.
fn rows(answer: &Value) -> Vec<serde_json::Map<String, Value>> {
    let series = &answer["results"][0]["series"];
    let Some(series) = series.as_array() else {
        return Vec::new();
    };
    series
        .iter()
        .flat_map(|s| {
            let columns: Vec<String> = s["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |v| {
                    columns
                        .iter()
                        .cloned()
                        .zip(v.as_array().unwrap().iter().cloned())
                        .collect()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn influxdb1_stores_the_schema_and_overwrites_on_rewrite() {
    let server = InfluxDb1::start();
    // The database does not exist yet: open creates it.
    let mut sink = Sink::open(&v1_config(server.url())).await.unwrap();
    assert!(sink.describe().starts_with("influxdb_v1 http://127.0.0.1:"));

    sink.write(&[
        Output::Customer(customer_kpi(10)),
        Output::Device(device_kpi(MachineState::Running)),
    ])
    .await
    .unwrap();
    // A replay, then a correction of the same window.
    sink.write(&[Output::Customer(customer_kpi(10))])
        .await
        .unwrap();
    sink.write(&[
        Output::Customer(customer_kpi(11)),
        Output::Device(device_kpi(MachineState::Fault)),
    ])
    .await
    .unwrap();
    assert_eq!(sink.take_rejected(), 0);

    let customers = rows(&server.query("fleet", "SELECT * FROM customer_kpi"));
    assert_eq!(customers.len(), 1, "{customers:?}");
    let c = &customers[0];
    assert_eq!(c["time"], json!(T0_RFC3339));
    assert_eq!(c["customer"], json!(CUSTOMER));
    assert_eq!(c["window"], json!("1h"));
    assert_eq!(c["cycles"], json!(11));
    assert_eq!(c["operating_hours"], json!(3));
    assert_eq!(c["window_end"], json!(T0 + 3_600_000));
    assert_eq!(c["advanced_feature_share"], json!(0.5));

    let devices = rows(&server.query("fleet", "SELECT * FROM device_kpi"));
    assert_eq!(devices.len(), 1, "{devices:?}");
    let d = &devices[0];
    assert_eq!(d["customer"], json!(CUSTOMER));
    assert_eq!(d["site"], json!("Zürich Nord"));
    assert_eq!(d["device"], json!("exc=07"));
    assert_eq!(d["last_state"], json!("fault"));
    assert_eq!(d["last_seen"], json!(T0 + 3_599_000));

    // Field types: floats stay floats even for whole numbers.
    let types: Vec<(String, String)> =
        rows(&server.query("fleet", "SHOW FIELD KEYS FROM customer_kpi"))
            .iter()
            .map(|r| {
                (
                    r["fieldKey"].as_str().unwrap().to_owned(),
                    r["fieldType"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
    for (field, expected) in [
        ("operating_hours", "float"),
        ("output_units", "float"),
        ("utilisation", "float"),
        ("cycles", "integer"),
        ("window_end", "integer"),
        ("samples", "integer"),
    ] {
        assert!(
            types.contains(&(field.to_owned(), expected.to_owned())),
            "{field}: {types:?}"
        );
    }
    let device_types = rows(&server.query("fleet", "SHOW FIELD KEYS FROM device_kpi"));
    assert!(
        device_types
            .iter()
            .any(|r| r["fieldKey"] == json!("last_state") && r["fieldType"] == json!("string")),
        "{device_types:?}"
    );
    let tags = rows(&server.query("fleet", "SHOW TAG KEYS FROM device_kpi"));
    let tags: Vec<&str> = tags.iter().map(|r| r["tagKey"].as_str().unwrap()).collect();
    assert_eq!(tags, ["customer", "device", "site", "window"]);

    // Opening again finds the database and does not fail.
    Sink::open(&v1_config(server.url())).await.unwrap();
}

#[tokio::test]
async fn influxdb1_outage_is_retryable_and_run_sink_recovers() {
    let mut server = InfluxDb1::start();
    let config = v1_config(server.url());
    let mut sink = Sink::open(&config).await.unwrap();
    server.stop();
    let err = sink
        .write(&[Output::Customer(customer_kpi(1))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SinkError::InfluxWrite { .. }) && err.is_retryable(),
        "{err}"
    );
    server.restart();
    sink.write(&[Output::Customer(customer_kpi(1))])
        .await
        .unwrap();

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(run_sink(sink, rx, SinkSettings::for_config(&config)));
    let batch: Arc<[Output]> = vec![
        Output::Customer(customer_kpi(5)),
        Output::Device(device_kpi(MachineState::Idle)),
    ]
    .into();
    tx.send(batch).await.unwrap();
    drop(tx);
    let report = task.await.unwrap();
    assert_eq!(report.records_written, 2);
    assert_eq!(report.errors, 0);
    let customers = rows(&server.query("fleet", "SELECT cycles FROM customer_kpi"));
    assert_eq!(customers[0]["cycles"], json!(5));
}

#[tokio::test]
async fn victoria_metrics_takes_the_v2_api() {
    let server = VictoriaMetrics::start();
    let mut sink = Sink::open(&SinkConfig::InfluxDbV2(InfluxDbV2Config {
        url: server.url(),
        org: "acme".into(),
        bucket: "fleetpulse".into(),
        token_env: "FLEETPULSE_TEST_TOKEN_THAT_IS_NOT_SET".into(),
        batch_size: NonZeroUsize::new(100).unwrap(),
    }))
    .await
    .unwrap();
    let records = [
        Output::Customer(customer_kpi(10)),
        Output::Device(device_kpi(MachineState::Running)),
    ];
    sink.write(&records).await.unwrap();
    assert_eq!(sink.take_rejected(), 0);
    // A replay of the same points stays one sample per series.
    sink.write(&records).await.unwrap();

    let cycles = server.export(r#"{__name__="customer_kpi_cycles"}"#);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(cycles[0]["metric"]["customer"], json!(CUSTOMER));
    assert_eq!(cycles[0]["metric"]["window"], json!("1h"));
    assert_eq!(
        cycles[0]["metric"].get("db"),
        None,
        "no db label on v2 writes"
    );
    assert_eq!(cycles[0]["values"], json!([10]));
    assert_eq!(cycles[0]["timestamps"], json!([T0]));

    let utilisation = server.export(r#"{__name__="device_kpi_utilisation"}"#);
    assert_eq!(utilisation.len(), 1, "{utilisation:?}");
    let labels = &utilisation[0]["metric"];
    assert_eq!(labels["site"], json!("Zürich Nord"));
    assert_eq!(labels["device"], json!("exc=07"));
    assert_eq!(utilisation[0]["values"], json!([0.75]));
    // VictoriaMetrics keeps numbers only: the string field `last_state`
    // becomes a series stuck at 0 (docs/SCHEMA.md says so).
    let state = server.export(r#"{__name__="device_kpi_last_state"}"#);
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state[0]["values"], json!([0]));

    let names: Vec<String> = server
        .export(r#"{__name__=~"customer_kpi_.*"}"#)
        .iter()
        .map(|s| s["metric"]["__name__"].as_str().unwrap().to_owned())
        .collect();
    for field in [
        "devices_purchased",
        "reporting_devices",
        "active_devices",
        "utilisation",
        "operating_hours",
        "idle_hours",
        "fuel_litres",
        "cycles",
        "output_units",
        "manual_interventions",
        "distinct_operators",
        "advanced_features_used",
        "advanced_feature_share",
        "fault_count",
        "samples",
        "window_end",
    ] {
        assert!(
            names.contains(&format!("customer_kpi_{field}")),
            "{field}: {names:?}"
        );
    }
}

#[tokio::test]
async fn victoria_metrics_takes_the_v1_api_too() {
    let server = VictoriaMetrics::start();
    let mut sink = Sink::open(&v1_config(server.url())).await.unwrap();
    sink.write(&[Output::Customer(customer_kpi(3))])
        .await
        .unwrap();
    let cycles = server.export(r#"{__name__="customer_kpi_cycles"}"#);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(cycles[0]["values"], json!([3]));
    // VictoriaMetrics turns the `db` query argument into a label.
    assert_eq!(cycles[0]["metric"]["db"], json!("fleet"));
}
