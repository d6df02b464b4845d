//! Identity and event-time sanity through real mosquitto and the real
//! service (in process, SQLite store):
//!
//! - two customers whose devices have the same ids (one of them far ahead in
//!   its sequence) are both counted: customer and device KPIs equal the
//!   simulator's ground truth of the same fleet with distinct ids;
//! - replaced telematics units (sequence back at 1 under a higher unit
//!   epoch, counters carried on or restarted from 0, the old unit's last
//!   batch delivered after the new unit's first) lose nothing: the KPIs
//!   equal the ground truth of the same fleet without replacements;
//! - a first message dated 1970 after a fresh start is refused as
//!   `before_start`, dead-lettered, and creates no day, health or portfolio
//!   row before the contract start.
//! - meters read as 0 once or corrupt once add no phantom work, and a
//!   corrupt output is refused naming its field.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use fleetpulse::config::{CustomersRef, ServiceConfig};
use fleetpulse::metrics::{IngestMetrics, RejectReason};
use fleetpulse::sinks::SinkConfig;
use fleetpulse::sinks::sqlite::{SqliteConfig, SqliteStore};
use fleetpulse_proto::v1::TelemetryBatch;
use fleetpulse_sim::{Fleet, FleetSpec, GroundTruth};
use prost::Message;

use crate::support::fleets::publish_options;
use crate::support::in_process::{self, InProcess};
use crate::support::poll::wait_for;
use crate::support::servers::{Mosquitto, NO_LOSS};
use crate::support::truth::{assert_same_rows, close};

/// (customer, device or "", day start) -> (operating hours, idle hours,
/// cycles, samples).
type Days = BTreeMap<(String, String, u64), (f64, f64, u64, u64)>;

fn spec() -> FleetSpec {
    FleetSpec {
        customers: 2,
        devices: 8,
        days: 2,
        seed: 11,
        ..FleetSpec::default()
    }
}

/// A broker, a directory, and the fleet of [`spec`] with its messages.
fn start() -> (Mosquitto, tempfile::TempDir, Fleet, Vec<TelemetryBatch>) {
    let fleet = Fleet::generate(&spec());
    let batches = fleet.messages().map(|m| m.batch).collect();
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    (mosquitto, tempfile::tempdir().unwrap(), fleet, batches)
}

/// The service with a SQLite store fed `batches` through mosquitto, in
/// order; returns its counters once it handled them all and stopped (sinks
/// flushed).
async fn serve(
    mosquitto: &Mosquitto,
    dir: &Path,
    fleet: &Fleet,
    batches: &[TelemetryBatch],
) -> Arc<IngestMetrics> {
    let messages: Vec<(String, Vec<u8>)> = batches.iter().map(encode).collect();
    let customers = dir.join("customers.toml");
    fleetpulse::sim::write_files(fleet, None, Some(&customers)).unwrap();
    let mut config = ServiceConfig::default();
    config.mqtt.host = mosquitto.host().to_string();
    config.mqtt.port = mosquitto.port();
    config.mqtt.client_id = "fleetpulse-identity".into();
    config.engine.workers = 2;
    config.customers = Some(CustomersRef { file: customers });
    config.limits.dead_letter_file = Some(dir.join("dead-letter.jsonl"));
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: dir.join("kpi.sqlite"),
    })];
    let InProcess {
        metrics,
        shutdown,
        task: service,
    } = in_process::subscribed(config, "<identity>").await;
    let total = messages.len() as u64;
    let publisher = publish_options(mosquitto, "identity-sim");
    fleetpulse_sim::publish(publisher, messages, |_| {})
        .await
        .unwrap();
    wait_for("every message handled", || metrics.handled() >= total).await;
    shutdown.cancel();
    service.await.unwrap().unwrap();
    metrics
}

fn encode(batch: &TelemetryBatch) -> (String, Vec<u8>) {
    let topic =
        fleetpulse_proto::telemetry_topic(&batch.customer_id, &batch.site_id, &batch.device_id);
    (topic, batch.encode_to_vec())
}

/// Daily rows of the ground truth of `batches`, per customer (device "")
/// and, with `per_device`, per (customer, device) too.
fn truth(batches: &[TelemetryBatch], per_device: bool) -> Days {
    let mut days = Days::new();
    let mut customers = GroundTruth::default();
    let mut devices: HashMap<(String, String), GroundTruth> = HashMap::new();
    for b in batches {
        customers.observe(b);
        if per_device {
            devices
                .entry((b.customer_id.clone(), b.device_id.clone()))
                .or_default()
                .observe(b);
        }
    }
    let rows = |truth: &GroundTruth, device: &str, days: &mut Days| {
        for r in truth.rows() {
            days.insert(
                (r.customer, device.to_string(), r.day_start_ms),
                (r.operating_hours, r.idle_hours, r.cycles, r.samples),
            );
        }
    };
    rows(&customers, "", &mut days);
    for ((_, device), t) in &devices {
        rows(t, device, &mut days);
    }
    days
}

/// The store's daily rows in the same shape.
fn stored(path: &Path, per_device: bool) -> Days {
    let store = SqliteStore::open(path).unwrap();
    let mut days = Days::new();
    for k in store.customer_kpis("1d").unwrap() {
        days.insert(
            (k.customer.to_string(), String::new(), k.window_start),
            (
                k.totals.operating_hours,
                k.totals.idle_hours,
                k.totals.cycles,
                k.totals.samples,
            ),
        );
    }
    if per_device {
        for k in store.device_kpis("1d").unwrap() {
            days.insert(
                (k.customer.to_string(), k.device.to_string(), k.window_start),
                (
                    k.totals.operating_hours,
                    k.totals.idle_hours,
                    k.totals.cycles,
                    k.totals.samples,
                ),
            );
        }
    }
    days
}

/// Counts equal, hours within 1e-6 relative.
fn assert_equal(store: &Days, truth: &Days) {
    assert_same_rows("the store", store, truth);
    for (key, t) in truth {
        let s = &store[key];
        assert!(
            close(s.0, t.0) && close(s.1, t.1) && (s.2, s.3) == (t.2, t.3),
            "{key:?}: store {s:?}, ground truth {t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_customers_with_the_same_device_ids_are_both_counted() {
    let (mosquitto, dir, fleet, original) = start();
    // Every customer's devices become exc-01, exc-02, ...; the second
    // customer's sequences run 1000 ahead (customer B's exc-01 at 1000 must
    // not make customer A's exc-01 at 3 a replay).
    let mut renamed = HashMap::new();
    for customer in fleet.customers() {
        for (i, device) in fleet.devices_of(customer).iter().enumerate() {
            renamed.insert(device.id.clone(), format!("exc-{:02}", i + 1));
        }
    }
    let clashing: Vec<TelemetryBatch> = original
        .iter()
        .map(|b| {
            let mut b = b.clone();
            if b.customer_id != fleet.customers()[0].id {
                b.sequence += 999;
            }
            b.device_id = renamed[&b.device_id].clone();
            b
        })
        .collect();
    let metrics = serve(&mosquitto, dir.path(), &fleet, &clashing).await;
    assert_eq!(metrics.rejected_total(), 0);
    assert_eq!(
        metrics.messages_accepted.load(Relaxed),
        clashing.len() as u64
    );

    // Independent: the ground truth of the fleet as generated (distinct
    // ids), device rows under their new names.
    let mut expected = truth(&original, true);
    expected = expected
        .into_iter()
        .map(|((c, d, t), v)| {
            let d = if d.is_empty() { d } else { renamed[&d].clone() };
            ((c, d, t), v)
        })
        .collect();
    let store = stored(&dir.path().join("kpi.sqlite"), true);
    let clashes = store
        .keys()
        .filter(|(c, d, _)| c != &fleet.customers()[0].id && d == "exc-01")
        .count();
    assert!(clashes > 0, "the second customer's exc-01 is stored");
    assert_equal(&store, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_unit_loses_no_data() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::generate(&FleetSpec {
        unit_replacements: 4,
        ..spec()
    });
    let mut sent: Vec<TelemetryBatch> = fleet.messages().map(|m| m.batch).collect();
    // Store-and-forward: each old unit's last batch arrives after the new
    // unit's first, which the broker also delivers twice.
    let mut replaced = 0;
    for device in fleet.devices() {
        let Some(from) = device.replaced_from else {
            continue;
        };
        replaced += 1;
        let new = sent
            .iter()
            .position(|b| b.device_id == device.id && b.samples[0].event_time_ms as u64 == from)
            .unwrap();
        assert_eq!(sent[new].sequence, 1);
        let old = sent[..new]
            .iter()
            .rposition(|b| b.device_id == device.id)
            .unwrap();
        assert!(sent[old].unit_epoch < sent[new].unit_epoch);
        let moved = sent.remove(old);
        let again = sent[new - 1].clone();
        sent.insert(new, moved);
        sent.insert(new + 1, again);
    }
    assert!(replaced >= 3, "{replaced} units replaced");
    let metrics = serve(&mosquitto, dir.path(), &fleet, &sent).await;
    assert_eq!(
        metrics.rejected(RejectReason::SequenceReplayed),
        replaced,
        "only the redeliveries are refused"
    );
    assert_eq!(metrics.rejected_total(), replaced);
    assert_eq!(
        metrics.messages_accepted.load(Relaxed),
        sent.len() as u64 - replaced
    );

    let store = stored(&dir.path().join("kpi.sqlite"), false);
    // The same machines doing the same work without replacements: nothing
    // lost, nothing counted twice.
    let plain: Vec<TelemetryBatch> = Fleet::generate(&spec())
        .messages()
        .map(|m| m.batch)
        .collect();
    assert_equal(&store, &truth(&plain, false));
    let generated: Vec<TelemetryBatch> = fleet.messages().map(|m| m.batch).collect();
    assert_equal(&store, &truth(&generated, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_dated_1970_is_refused_and_opens_no_days() {
    let (mosquitto, dir, fleet, batches) = start();
    // A unit that lost its clock: its first batch, an hour after 1970.
    let mut lost = batches[0].clone();
    lost.sequence = 1_000;
    for (i, s) in lost.samples.iter_mut().enumerate() {
        s.event_time_ms = 3_600_000 + i as i64 * 600_000;
    }
    let sent: Vec<TelemetryBatch> = std::iter::once(lost).chain(batches.clone()).collect();
    let metrics = serve(&mosquitto, dir.path(), &fleet, &sent).await;
    assert_eq!(metrics.rejected(RejectReason::BeforeStart), 1);
    assert_eq!(metrics.rejected_total(), 1);
    assert_eq!(
        metrics.messages_accepted.load(Relaxed),
        batches.len() as u64
    );

    let letters = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).unwrap();
    let letters: Vec<serde_json::Value> = letters
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["reason"], "before_start");
    assert!(
        letters[0]["detail"]
            .as_str()
            .unwrap()
            .contains("1970-01-01T01:00:00Z"),
        "{}",
        letters[0]
    );

    // No day before the contract start: the days are exactly the ground
    // truth's, and no health or portfolio row predates the earliest contract.
    let path = dir.path().join("kpi.sqlite");
    assert_equal(&stored(&path, true), &truth(&batches, true));
    let contract_start = fleet
        .customers()
        .iter()
        .map(|c| c.contract.start_ms)
        .min()
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let health = store.health(None).unwrap();
    let portfolio = store.portfolio().unwrap();
    assert!(!health.is_empty() && !portfolio.is_empty());
    assert!(health.iter().all(|h| h.window_start >= contract_start));
    assert!(portfolio.iter().all(|p| p.window_start >= contract_start));
    assert!(
        store
            .alerts(false)
            .unwrap()
            .iter()
            .all(|a| a.opened_at >= contract_start)
    );
    let first_day = batches[0].samples[0].event_time_ms as u64 / 86_400_000 * 86_400_000;
    assert!(health.iter().all(|h| h.window_start >= first_day));
}

/// Units whose meters read 0 once (a bus not ready at boot) or a corrupt
/// value once add no phantom work: the KPIs equal the ground truth of the
/// messages as sent (which counts neither the glitch nor the reading after
/// it), and no device-day lost more than those two hours against the same
/// fleet without glitches. Before the rule the reading after a 0 added the
/// machine's meters since the start to one hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_read_as_zero_or_corrupt_once_adds_no_phantom_hours() {
    let (mosquitto, dir, fleet, clean) = start();
    let mut sent = clean.clone();
    // A reading in the second day of three devices that worked by then.
    let second_day = fleet.spec().start + 86_400_000;
    let mut glitched = Vec::new();
    for (device, glitch) in fleet.devices().iter().zip([0.0, 1e7, 0.0]) {
        let Some(batch) = sent.iter_mut().find(|b| {
            b.device_id == device.id
                && b.samples[0].event_time_ms as u64 > second_day + 6 * 3_600_000
                && b.samples[0].cumulative_operating_hours > 2.0
        }) else {
            continue;
        };
        let sample = &mut batch.samples[0];
        sample.cumulative_operating_hours = glitch;
        sample.cumulative_idle_hours = glitch;
        glitched.push(device.id.clone());
    }
    assert_eq!(glitched.len(), 3, "three devices glitch");
    let metrics = serve(&mosquitto, dir.path(), &fleet, &sent).await;
    assert_eq!(metrics.rejected_total(), 0);

    let store = stored(&dir.path().join("kpi.sqlite"), true);
    assert_equal(&store, &truth(&sent, true));
    let without = truth(&clean, true);
    for (key, s) in &store {
        let lost = without[key].0 - s.0;
        let glitching = glitched.contains(&key.1) || key.1.is_empty();
        let most = if glitching {
            2.0 * glitched.len() as f64
        } else {
            0.0
        };
        assert!(
            (-1e-6..=most + 1e-6).contains(&lost),
            "{key:?}: {} operating hours, {} without the glitches",
            s.0,
            without[key].0
        );
    }
}

/// A corrupt output (1e308 tons in one reading) or count (a bus's "not
/// available", 4,294,967,295 cycles) is refused as `invalid_sample`,
/// dead-lettered naming the field, and the rest of the fleet counts: two
/// such outputs summed to infinity in the customer's day, which SQLite
/// stored and line protocol cannot express.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_output_or_count_is_refused_naming_its_field() {
    let (mosquitto, dir, fleet, mut sent) = start();
    let customer = sent[0].customer_id.clone();
    let corrupt: Vec<usize> = (sent.iter().enumerate())
        .filter(|(_, b)| b.customer_id == customer)
        .map(|(i, _)| i)
        .skip(20)
        .take(3)
        .collect();
    sent[corrupt[0]].samples[0].output_units = 1e308;
    sent[corrupt[1]].samples[0].output_units = 1e308;
    sent[corrupt[2]].samples[0].cycles = u32::MAX;
    let metrics = serve(&mosquitto, dir.path(), &fleet, &sent).await;
    assert_eq!(metrics.rejected(RejectReason::InvalidSample), 3);
    assert_eq!(metrics.rejected_total(), 3);
    let letters = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).unwrap();
    assert_eq!(letters.lines().count(), 3);
    let named = |field: &str| letters.lines().filter(|l| l.contains(field)).count();
    assert_eq!(
        (named("output_units"), named("cycles")),
        (2, 1),
        "{letters}"
    );

    let kept: Vec<TelemetryBatch> = (sent.iter().enumerate())
        .filter(|(i, _)| !corrupt.contains(i))
        .map(|(_, b)| b.clone())
        .collect();
    let path = dir.path().join("kpi.sqlite");
    assert_equal(&stored(&path, true), &truth(&kept, true));
    let store = SqliteStore::open(&path).unwrap();
    for k in store.customer_kpis("1d").unwrap() {
        assert!(k.totals.output_units.is_finite(), "{k:?}");
    }
}
