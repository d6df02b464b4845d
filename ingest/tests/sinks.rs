//! The InfluxDB sinks against real servers: InfluxDB 1.x through the v1
//! `/write` API, VictoriaMetrics through the v2 API (and the v1 API, which it
//! serves too). Checks the public schema of docs/SCHEMA.md: measurement, tags,
//! field names and types, timestamps, escaping, and overwrite on rewrite.

mod support;

/// The sample records of the sinks' unit tests.
#[allow(dead_code)]
#[path = "../src/sinks/fixtures.rs"]
mod fixtures;

use std::num::NonZeroUsize;
use std::sync::Arc;

use fleetpulse::records::RecordKind;
use fleetpulse::sinks::{
    InfluxDbV1Config, InfluxDbV2Config, Sink, SinkConfig, SinkError, SinkSettings, run_sink,
};
use fleetpulse_engine::kpi::health::{Band, HealthComponents, HealthPoints, Stage};
use fleetpulse_engine::kpi::milestone::MilestoneStatus;
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::{
    AlertRecord, CustomerKpi, DeviceKpi, HealthRecord, MachineState, MilestoneRecord,
    OutcomeRecord, Output, PortfolioRecord, Segment,
};
use serde_json::{Value, json};
use support::servers::{InfluxDb1, VictoriaMetrics};

/// Needs every line-protocol tag escape (space, comma, equals sign), holds a
/// backslash and is not ASCII.
const CUSTOMER: &str = r"Müller Maschinenbau, Werk=Süd\Nord";
/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000_000;
const T0_RFC3339: &str = "2023-11-14T22:13:20Z";

/// The sinks' unit-test record with this file's names and times; its
/// `operating_hours` is a whole number (3.0): it must still be stored as a
/// float.
fn customer_kpi(cycles: u64) -> CustomerKpi {
    CustomerKpi {
        advanced_feature_share: 0.5,
        ..fixtures::customer(CUSTOMER, T0, cycles)
    }
}

fn device_kpi(state: MachineState) -> DeviceKpi {
    DeviceKpi {
        customer: CUSTOMER.into(),
        site: "Zürich Nord".into(),
        ..fixtures::device("exc=07", T0, state)
    }
}

/// 2023-11-14T00:00:00Z: the UTC day holding [`T0`].
const D0: u64 = 1_699_920_000_000;
const D0_RFC3339: &str = "2023-11-14T00:00:00Z";
const DAY: u64 = 86_400_000;
/// Names with every tag escape.
const OUTCOME: &str = "manual interventions, share=low";
const MILESTONE: &str = "first 100 hours";

fn outcome_record() -> OutcomeRecord {
    OutcomeRecord {
        outcome: OUTCOME.into(),
        consecutive_met: 4,
        ..fixtures::outcome(CUSTOMER, D0, 0.125)
    }
}

fn milestone_record() -> MilestoneRecord {
    MilestoneRecord {
        customer: CUSTOMER.into(),
        due_at: D0 + 30 * DAY,
        reached_at: Some(D0 + DAY),
        status: MilestoneStatus::Reached,
        ..fixtures::milestone(MILESTONE, 2, D0)
    }
}

fn health_record() -> HealthRecord {
    HealthRecord {
        customer: CUSTOMER.into(),
        window_start: D0,
        window_end: D0 + DAY,
        score: 72.5,
        band: Band::Yellow,
        score_trend: -4.5,
        components: HealthComponents {
            depth: 25.5,
            breadth: 80.5,
            utilisation: 62.5,
            outcome: Some(90.5),
            reliability: 95.5,
            trend: 40.5,
            maturity: None,
        },
        moved_1d: HealthPoints {
            depth: 0.5,
            breadth: -1.25,
            utilisation: -2.5,
            outcome: 0.75,
            reliability: 0.125,
            trend: -3.5,
            maturity: 0.25,
        },
        moved_7d: HealthPoints {
            depth: 1.5,
            breadth: -0.5,
            utilisation: -4.5,
            outcome: 2.25,
            reliability: 0.375,
            trend: -6.5,
            maturity: 0.125,
        },
        stage: Stage::Adopt,
        segment: Segment::HighTouch,
        arr: 250_000.5,
        arr_at_risk: 0.5,
        open_alerts: 1,
        days_since_activation: 42.5,
        days_to_renewal: 323.5,
        time_to_value_days: Some(12.5),
        usage_growth: -0.125,
        milestones_reached: 2,
        milestones_total: 4,
        provisional: false,
    }
}

/// Episode 3 of `usage_drop`, opened at the end of [`D0`]; resolved five
/// days later with `resolved`.
fn alert_record(resolved: bool) -> AlertRecord {
    AlertRecord {
        customer: CUSTOMER.into(),
        customer_name: "Müller \"Maschinenbau\" GmbH".into(),
        rule: Rule::UsageDrop,
        episode: 3,
        status: if resolved {
            AlertStatus::Resolved
        } else {
            AlertStatus::Open
        },
        provisional: false,
        opened_at: D0 + DAY,
        resolved_at: resolved.then_some(D0 + 6 * DAY),
        evidence: if resolved {
            "usage back to 5% below baseline".into()
        } else {
            "usage 31% below the 28-day baseline, \"12.0 h/day\" against 17.4 \\ C:\\".into()
        },
        metric: if resolved { 0.05 } else { 0.31 },
        threshold: if resolved { 0.1 } else { 0.2 },
        stage: Stage::Adopt,
        segment: Segment::HighTouch,
        arr_at_risk: 250_000.5,
        next_action: Rule::UsageDrop.next_action().into(),
    }
}

fn portfolio_record() -> PortfolioRecord {
    PortfolioRecord {
        arr_total: 1_500_000.5,
        arr_at_risk: 400_000.5,
        managed_outcome_attainment: 80.5,
        ..fixtures::portfolio(D0, 6)
    }
}

/// The fields (neither tags nor the timestamp) each measurement of
/// [`customer_success_records`] is stored with once the alert resolved, and
/// their values (`null`: absent).
fn stored_fields() -> Vec<(&'static str, Vec<(&'static str, Value)>)> {
    vec![
        (
            "outcome",
            vec![
                ("value", json!(0.125)),
                ("target", json!(0.2)),
                ("direction", json!("at_most")),
                ("met", json!(true)),
                ("consecutive_met", json!(4)),
                ("consecutive_missed", json!(0)),
                ("window_end", json!(D0 + DAY)),
            ],
        ),
        (
            "milestone",
            vec![
                ("position", json!(2)),
                ("value_milestone", json!(true)),
                ("status", json!("reached")),
                ("due_at", json!(D0 + 30 * DAY)),
                ("reached_at", json!(D0 + DAY)),
                ("window_end", json!(D0 + DAY)),
            ],
        ),
        (
            "health",
            vec![
                ("score", json!(72.5)),
                ("band", json!("yellow")),
                ("score_trend", json!(-4.5)),
                ("depth", json!(25.5)),
                ("breadth", json!(80.5)),
                ("utilisation", json!(62.5)),
                ("outcome_attainment", json!(90.5)),
                ("reliability", json!(95.5)),
                ("trend", json!(40.5)),
                ("maturity", Value::Null),
                ("moved_1d_depth", json!(0.5)),
                ("moved_1d_breadth", json!(-1.25)),
                ("moved_1d_utilisation", json!(-2.5)),
                ("moved_1d_outcome", json!(0.75)),
                ("moved_1d_reliability", json!(0.125)),
                ("moved_1d_trend", json!(-3.5)),
                ("moved_1d_maturity", json!(0.25)),
                ("moved_7d_depth", json!(1.5)),
                ("moved_7d_breadth", json!(-0.5)),
                ("moved_7d_utilisation", json!(-4.5)),
                ("moved_7d_outcome", json!(2.25)),
                ("moved_7d_reliability", json!(0.375)),
                ("moved_7d_trend", json!(-6.5)),
                ("moved_7d_maturity", json!(0.125)),
                ("stage", json!("adopt")),
                ("arr", json!(250_000.5)),
                ("arr_at_risk", json!(0.5)),
                ("open_alerts", json!(1)),
                ("days_since_activation", json!(42.5)),
                ("days_to_renewal", json!(323.5)),
                ("time_to_value_days", json!(12.5)),
                ("usage_growth", json!(-0.125)),
                ("milestones_reached", json!(2)),
                ("milestones_total", json!(4)),
                ("provisional", json!(false)),
                ("window_end", json!(D0 + DAY)),
            ],
        ),
        (
            "alert",
            vec![
                ("customer_name", json!("Müller \"Maschinenbau\" GmbH")),
                ("episode", json!(3)),
                ("status", json!("resolved")),
                ("provisional", json!(false)),
                ("resolved_at", json!(D0 + 6 * DAY)),
                ("evidence", json!("usage back to 5% below baseline")),
                ("metric", json!(0.05)),
                ("threshold", json!(0.1)),
                ("stage", json!("adopt")),
                ("arr_at_risk", json!(250_000.5)),
                ("next_action", json!(Rule::UsageDrop.next_action())),
            ],
        ),
        (
            "portfolio",
            vec![
                ("customers", json!(6)),
                ("arr_total", json!(1_500_000.5)),
                ("arr_at_risk", json!(400_000.5)),
                ("green", json!(3)),
                ("yellow", json!(2)),
                ("red", json!(1)),
                ("managed_customers", json!(2)),
                ("managed_usage_growth", json!(0.05)),
                ("unmanaged_usage_growth", json!(-0.02)),
                ("managed_outcome_attainment", json!(80.5)),
                ("unmanaged_outcome_attainment", json!(55.5)),
                ("revision", json!(0)),
                ("window_end", json!(D0 + DAY)),
            ],
        ),
    ]
}

/// One record of each customer-success kind; the alert opens and then
/// resolves.
fn customer_success_records() -> Vec<Output> {
    vec![
        Output::Outcome(outcome_record()),
        Output::Milestone(milestone_record()),
        Output::health(health_record()),
        Output::Alert(alert_record(false)),
        Output::Alert(alert_record(true)),
        Output::Portfolio(portfolio_record()),
    ]
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

fn v2_config(url: String) -> SinkConfig {
    SinkConfig::InfluxDbV2(InfluxDbV2Config {
        url,
        org: "acme".into(),
        bucket: "fleetpulse".into(),
        token_env: "FLEETPULSE_TEST_TOKEN_THAT_IS_NOT_SET".into(),
        batch_size: NonZeroUsize::new(100).unwrap(),
        restatements: Default::default(),
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

/// A database whose retention policy keeps an hour: InfluxDB stores the
/// batch's recent point, drops the old one and answers 400 ("partial
/// write"). The write succeeds, the dropped point is counted as rejected,
/// and the store holds the recent one: nothing to retry, no batch lost.
#[tokio::test]
async fn influxdb1_beyond_its_retention_policy_keeps_the_rest_of_the_batch() {
    let server = InfluxDb1::start();
    server.query("_internal", "CREATE DATABASE fleet WITH DURATION 1h");
    let mut sink = Sink::open(&v1_config(server.url())).await.unwrap();
    let now = jiff::Timestamp::now().as_millisecond() as u64;
    let hour = now - now % 3_600_000;
    let recent = fixtures::customer("recent", hour, 7);
    sink.write(&[Output::Customer(customer_kpi(10)), Output::Customer(recent)])
        .await
        .unwrap();
    assert_eq!(sink.take_rejected(), 1);
    let stored = rows(&server.query("fleet", "SELECT * FROM customer_kpi"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["customer"], json!("recent"));
    assert_eq!(stored[0]["cycles"], json!(7));
    let retention = fleetpulse::sinks::retention::of(&v1_config(server.url())).await;
    assert_eq!(
        retention.to_string(),
        "keeps 1h (the default retention policy of InfluxDB database `fleet`)"
    );
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
    let mut sink = Sink::open(&v2_config(server.url())).await.unwrap();
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
    // Every field of the record kind (neither a tag nor the timestamp).
    let fields = <CustomerKpi as RecordKind>::COLUMNS
        .iter()
        .filter(|c| c.is_field());
    for field in fields.map(|c| c.name) {
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

/// `{fieldKey: fieldType}` of a measurement.
fn field_types(server: &InfluxDb1, measurement: &str) -> Vec<(String, String)> {
    rows(&server.query("fleet", &format!("SHOW FIELD KEYS FROM \"{measurement}\"")))
        .iter()
        .map(|r| {
            (
                r["fieldKey"].as_str().unwrap().to_owned(),
                r["fieldType"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The tag keys of a measurement.
fn tag_keys(server: &InfluxDb1, measurement: &str) -> Vec<String> {
    rows(&server.query("fleet", &format!("SHOW TAG KEYS FROM \"{measurement}\"")))
        .iter()
        .map(|r| r["tagKey"].as_str().unwrap().to_owned())
        .collect()
}

/// The only row of `SELECT * FROM measurement`.
fn only_row(server: &InfluxDb1, measurement: &str) -> serde_json::Map<String, Value> {
    let mut all = rows(&server.query("fleet", &format!("SELECT * FROM \"{measurement}\"")));
    assert_eq!(all.len(), 1, "{measurement}: {all:?}");
    all.pop().unwrap()
}

#[tokio::test]
async fn influxdb1_stores_the_customer_success_records() {
    let server = InfluxDb1::start();
    let mut sink = Sink::open(&v1_config(server.url())).await.unwrap();
    let records = customer_success_records();
    sink.write(&records).await.unwrap();
    // A replay changes nothing.
    sink.write(&records).await.unwrap();
    assert_eq!(sink.take_rejected(), 0);

    // Tags and timestamps.
    let o = only_row(&server, "outcome");
    assert_eq!(o["time"], json!(D0_RFC3339));
    assert_eq!(o["customer"], json!(CUSTOMER));
    assert_eq!(o["outcome"], json!(OUTCOME));
    assert_eq!(o["window"], json!("1d"));
    assert_eq!(
        tag_keys(&server, "outcome"),
        ["customer", "outcome", "window"]
    );
    let m = only_row(&server, "milestone");
    assert_eq!(m["time"], json!(D0_RFC3339));
    assert_eq!(m["customer"], json!(CUSTOMER));
    assert_eq!(m["milestone"], json!(MILESTONE));
    assert_eq!(tag_keys(&server, "milestone"), ["customer", "milestone"]);
    let h = only_row(&server, "health");
    assert_eq!(h["time"], json!(D0_RFC3339));
    assert_eq!(h["customer"], json!(CUSTOMER));
    assert_eq!(h["segment"], json!("high-touch"));
    assert_eq!(tag_keys(&server, "health"), ["customer", "segment"]);
    // The resolve landed on the open's point: one row, resolved.
    let a = only_row(&server, "alert");
    let opened = rows(&server.query(
        "fleet",
        &format!("SELECT episode FROM \"alert\" WHERE time = {}ms", D0 + DAY),
    ));
    assert_eq!(opened.len(), 1, "timestamp is opened_at: {opened:?}");
    assert_eq!(a["customer"], json!(CUSTOMER));
    assert_eq!(a["rule"], json!("usage_drop"));
    assert_eq!(a["segment"], json!("high-touch"));
    assert_eq!(tag_keys(&server, "alert"), ["customer", "rule", "segment"]);
    let p = only_row(&server, "portfolio");
    assert_eq!(p["time"], json!(D0_RFC3339));
    assert!(tag_keys(&server, "portfolio").is_empty());

    // Every field's value (an absent one reads as null).
    for (measurement, fields) in stored_fields() {
        let row = only_row(&server, measurement);
        for (field, value) in fields {
            assert_eq!(
                row.get(field).unwrap_or(&Value::Null),
                &value,
                "{measurement} {field}"
            );
        }
    }

    // Field types as documented (a few of each kind).
    for (measurement, field, expected) in [
        ("outcome", "value", "float"),
        ("outcome", "met", "boolean"),
        ("outcome", "direction", "string"),
        ("outcome", "consecutive_met", "integer"),
        ("milestone", "value_milestone", "boolean"),
        ("milestone", "reached_at", "integer"),
        ("milestone", "status", "string"),
        ("health", "score", "float"),
        ("health", "band", "string"),
        ("health", "open_alerts", "integer"),
        ("alert", "episode", "integer"),
        ("alert", "resolved_at", "integer"),
        ("alert", "evidence", "string"),
        ("alert", "metric", "float"),
        ("portfolio", "green", "integer"),
        ("portfolio", "arr_total", "float"),
    ] {
        let types = field_types(&server, measurement);
        assert!(
            types.contains(&(field.to_owned(), expected.to_owned())),
            "{measurement}.{field}: {types:?}"
        );
    }
}

#[tokio::test]
async fn influxdb1_keeps_an_alert_open_until_it_resolves() {
    let server = InfluxDb1::start();
    let mut sink = Sink::open(&v1_config(server.url())).await.unwrap();
    sink.write(&[Output::Alert(alert_record(false))])
        .await
        .unwrap();
    let a = only_row(&server, "alert");
    assert_eq!(a["status"], json!("open"));
    assert_eq!(a.get("resolved_at"), None, "{a:?}");
    // Quotes and backslashes in a text field come back as written.
    assert_eq!(
        a["evidence"],
        json!("usage 31% below the 28-day baseline, \"12.0 h/day\" against 17.4 \\ C:\\")
    );
}

#[tokio::test]
async fn victoria_metrics_stores_the_customer_success_records() {
    let server = VictoriaMetrics::start();
    let mut sink = Sink::open(&v2_config(server.url())).await.unwrap();
    sink.write(&customer_success_records()).await.unwrap();
    assert_eq!(sink.take_rejected(), 0);

    // The one series named `name`: its labels (without `__name__`), values
    // and timestamps.
    let series = |name: &str| {
        let all = server.export(&format!("{{__name__={name:?}}}"));
        assert_eq!(all.len(), 1, "{name}: {all:?}");
        let mut labels = all[0]["metric"].as_object().unwrap().clone();
        labels.remove("__name__");
        (
            Value::Object(labels),
            all[0]["values"].clone(),
            all[0]["timestamps"].clone(),
        )
    };

    let outcome_labels = json!({"customer": CUSTOMER, "outcome": OUTCOME, "window": "1d"});
    assert_eq!(
        series("outcome_value"),
        (outcome_labels.clone(), json!([0.125]), json!([D0]))
    );
    // Booleans become 1 / 0, strings 0.
    assert_eq!(
        series("outcome_met"),
        (outcome_labels.clone(), json!([1]), json!([D0]))
    );
    assert_eq!(series("outcome_direction").1, json!([0]));

    let milestone_labels = json!({"customer": CUSTOMER, "milestone": MILESTONE});
    assert_eq!(
        series("milestone_reached_at"),
        (milestone_labels, json!([D0 + DAY]), json!([D0]))
    );
    assert_eq!(series("milestone_value_milestone").1, json!([1]));

    let health_labels = json!({"customer": CUSTOMER, "segment": "high-touch"});
    assert_eq!(
        series("health_score"),
        (health_labels.clone(), json!([72.5]), json!([D0]))
    );
    assert_eq!(series("health_outcome_attainment").1, json!([90.5]));
    assert!(
        server
            .export_once(r#"{__name__="health_maturity"}"#)
            .is_empty(),
        "no maturity score, no series"
    );

    let alert_labels = json!({"customer": CUSTOMER, "rule": "usage_drop", "segment": "high-touch"});
    assert_eq!(
        series("alert_resolved_at"),
        (
            alert_labels.clone(),
            json!([D0 + 6 * DAY]),
            json!([D0 + DAY])
        )
    );
    assert_eq!(
        series("alert_episode"),
        (alert_labels, json!([3]), json!([D0 + DAY]))
    );

    assert_eq!(
        series("portfolio_customers"),
        (json!({}), json!([6]), json!([D0]))
    );

    // Every documented metric name exists (string fields included, as 0).
    let names: Vec<String> = server
        .export(r#"{__name__=~"(outcome|milestone|health|alert|portfolio)_.*"}"#)
        .iter()
        .map(|s| s["metric"]["__name__"].as_str().unwrap().to_owned())
        .collect();
    let mut want: Vec<String> = stored_fields()
        .into_iter()
        .flat_map(|(m, fields)| {
            fields
                .into_iter()
                .filter(|(_, value)| !value.is_null())
                .map(move |(f, _)| format!("{m}_{f}"))
        })
        .collect();
    want.sort();
    let mut got = names;
    got.sort();
    assert_eq!(got, want);
}
