//! A device snapshot taken at a point and restored, with the replay of every
//! batch: the usage KPIs of the windows after the point equal those of a run
//! that never stopped, at another worker count too (rescale), including a
//! device that was silent across the point.

mod common;

use common::{T0, normalise};
use fleetpulse_engine::config::HOUR_MS;
use fleetpulse_engine::run::run_batches;
use fleetpulse_engine::{
    DeviceBatch, DeviceBoard, DeviceSnapshot, EngineConfig, MachineState, Output, Sample, Taken,
};
use std::sync::Arc;

const DAY: u64 = 24 * HOUR_MS;
const LATENESS: u64 = 30 * 60_000;

/// Four days of a small fleet: devices report hourly with running meters,
/// each from a meter value of its own; `quiet` reports only on the first and
/// the last day (its meters ran while it was silent). Two customers share
/// the device id `exc-1`.
fn fleet() -> Vec<DeviceBatch> {
    let devices = [
        ("acme", "exc-1", 100.0),
        ("acme", "exc-2", 2_000.0),
        ("acme", "quiet", 50.0),
        ("bolt", "exc-1", 7.5),
        ("bolt", "exc-3", 0.0),
    ];
    let mut batches = Vec::new();
    for hour in 0..4 * 24u64 {
        for (n, &(customer, device, meter)) in devices.iter().enumerate() {
            let day = hour / 24;
            if device == "quiet" && day != 0 && day != 3 {
                continue;
            }
            let at = T0 + hour * HOUR_MS + n as u64 * 60_000;
            let running = (hour + n as u64) % 5 != 0;
            let hours = meter + hour as f64 * 0.75;
            let sample = |offset: u64, extra: f64| Sample {
                at: at + offset,
                state: if running {
                    MachineState::Running
                } else {
                    MachineState::Idle
                },
                operating_hours: hours + extra,
                idle_hours: hours / 8.0 + extra,
                fuel_litres: hours * 12.0 + extra,
                cycles: (hour % 7) as u32,
                ..Sample::default()
            };
            let sequence = hour + 1;
            let batch = common::batch(customer, device, 0, sequence, {
                vec![sample(0, 0.0), sample(20 * 60_000, 0.25)]
            });
            batches.push(batch);
        }
    }
    // A redelivery after the point of a batch from before it: still a
    // duplicate after the restore.
    let redelivered = batches[7].clone();
    batches.insert(3 * 24 * 5, redelivered);
    common::interleave(batches)
}

fn config(devices: DeviceBoard) -> EngineConfig {
    EngineConfig {
        devices: Arc::new(devices),
        ..EngineConfig::default()
    }
}

/// The usage records of windows starting at or after `from`.
fn after(outputs: &[Output], from: u64) -> Vec<String> {
    let kept: Vec<Output> = outputs
        .iter()
        .filter(|o| match o {
            Output::Customer(k) => k.window_start >= from,
            Output::Device(k) => k.window_start >= from,
            _ => false,
        })
        .cloned()
        .collect();
    normalise(&kept)
}

/// Runs the fleet with a snapshot requested at `at`.
fn snapshot_at(at: u64, workers: usize) -> DeviceSnapshot {
    let board = Arc::new(DeviceBoard::default());
    board.request(at);
    let config = EngineConfig {
        devices: board.clone(),
        ..EngineConfig::default()
    };
    let run = run_batches(config, workers, LATENESS, fleet()).unwrap();
    assert!(run.late.is_empty());
    match board.take(workers) {
        Taken::Complete(snapshot) => snapshot,
        other => panic!("snapshot at {at}: {other:?}"),
    }
}

#[test]
fn a_restored_snapshot_continues_like_a_run_that_never_stopped_at_any_worker_count() {
    let point = T0 + DAY + 6 * HOUR_MS;
    let uninterrupted = run_batches(config(DeviceBoard::default()), 2, LATENESS, fleet()).unwrap();
    assert!(uninterrupted.late.is_empty());
    let want = after(&uninterrupted.outputs, point);
    assert!(want.len() > 100, "{} records", want.len());
    for (before, after_restart) in [(2, 1), (1, 2), (2, 2)] {
        let snapshot = snapshot_at(point, before);
        assert_eq!(snapshot.at, point);
        let keys: Vec<_> = snapshot.devices.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys.len(), 5, "one memory per (customer, device): {keys:?}");
        let restored = config(DeviceBoard::restoring(snapshot));
        let replayed = run_batches(restored, after_restart, LATENESS, fleet()).unwrap();
        assert_eq!(
            after(&replayed.outputs, point),
            want,
            "{before} worker(s) before, {after_restart} after"
        );
        assert_eq!(
            replayed.stats.duplicates, 0,
            "the redelivered batch is before the point: in the snapshot, skipped"
        );
    }
    // Without the snapshot the silent device's first reading after the
    // point is a baseline, and its work while silent is lost: the test can
    // tell.
    let from_point: Vec<DeviceBatch> = fleet()
        .into_iter()
        .filter(|b| b.first_at() >= point)
        .collect();
    let forgetful = run_batches(config(DeviceBoard::default()), 1, LATENESS, from_point).unwrap();
    assert_ne!(after(&forgetful.outputs, point), want);
}

#[test]
fn a_point_a_worker_has_passed_is_missed_not_taken_inexactly() {
    let board = Arc::new(DeviceBoard::default());
    let config = EngineConfig {
        devices: board.clone(),
        ..EngineConfig::default()
    };
    let mut engine_batches = fleet();
    // Without the redelivery, so that every sample counts.
    let mut seen = std::collections::HashSet::new();
    engine_batches.retain(|b| seen.insert((b.customer.clone(), b.device.clone(), b.sequence)));
    let late_request = engine_batches.split_off(engine_batches.len() / 2);
    // The first half is processed before the point is asked for.
    let point = T0 + HOUR_MS;
    let (events, mut received) = tokio::sync::mpsc::channel(64);
    let options = fleetpulse_engine::EngineOptions {
        workers: 1,
        ..Default::default()
    };
    let mut engine = fleetpulse_engine::Engine::start(config, &options, events).unwrap();
    let drain = std::thread::spawn(move || while received.blocking_recv().is_some() {});
    let watermark = engine_batches.iter().map(|b| b.last_at()).max().unwrap() - LATENESS;
    let tick = EngineConfig::default().tick_ms;
    let processed: u64 = (engine_batches.iter())
        .filter(|b| b.first_at() - b.first_at() % tick < watermark)
        .map(|b| b.samples.len() as u64)
        .sum();
    engine.blocking_send_all(engine_batches).unwrap();
    engine.blocking_advance(watermark).unwrap();
    while engine.stats().snapshot().samples < processed {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    board.request(point);
    engine.blocking_send_all(late_request).unwrap();
    engine.finish().unwrap();
    drain.join().unwrap();
    assert_eq!(board.take(1), Taken::Missed);
}
