//! A device snapshot taken at a point and restored, with the replay of every
//! batch: the usage KPIs of the windows after the point equal those of a run
//! that never stopped, at another worker count too (rescale), including a
//! device that was silent across the point.

mod common;

use common::{T0, device_rows, normalise};
use fleetpulse_engine::config::HOUR_MS;
use fleetpulse_engine::run::run_batches;
use fleetpulse_engine::{
    DeviceBatch, DeviceBoard, DeviceSnapshot, Engine, EngineConfig, EngineOptions, MachineState,
    Output, Sample, Watermark,
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
            let running = !(hour + n as u64).is_multiple_of(5);
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

/// Runs the fleet through `workers` workers, asking for a snapshot once
/// `asked_after` of its batches are in: the workers answer as they next
/// wake, wherever each is then.
fn snapshot_midway(workers: usize, asked_after: usize) -> DeviceSnapshot {
    snapshot_of(fleet(), workers, asked_after)
}

/// [`snapshot_midway`] of `batches`.
fn snapshot_of(
    mut batches: Vec<DeviceBatch>,
    workers: usize,
    asked_after: usize,
) -> DeviceSnapshot {
    let board = Arc::new(DeviceBoard::default());
    let config = config_with(board.clone());
    let (events, mut received) = tokio::sync::mpsc::channel(64);
    let options = EngineOptions {
        workers,
        ..Default::default()
    };
    let mut engine = Engine::start(config, &options, events).unwrap();
    let drain = std::thread::spawn(move || while received.blocking_recv().is_some() {});
    let mut watermark = Watermark::new(LATENESS);
    let rest = batches.split_off(asked_after);
    for part in [batches, rest] {
        for batch in &part {
            watermark.admit(batch.first_at(), batch.last_at()).unwrap();
        }
        engine.blocking_send_all(part).unwrap();
        engine.blocking_advance(watermark.current()).unwrap();
        if board.requested() == 0 {
            settle(&engine);
            board.request();
        }
    }
    engine.finish().unwrap();
    drain.join().unwrap();
    board.take(workers).expect("every worker answers")
}

/// More workers than devices (a pilot fleet on a big machine): a worker
/// with no device held the snapshot's point at its start, so the WAL was
/// never cut (15 segments kept in a hostile pass, 4 workers and 2
/// devices). Its point follows its frontier: the snapshot's is where the
/// device's worker is, past the first day.
#[test]
fn a_worker_with_no_device_does_not_hold_the_snapshot_point_back() {
    let one: Vec<DeviceBatch> = (fleet().into_iter())
        .filter(|b| (&*b.customer, &*b.device) == ("acme", "exc-2"))
        .collect();
    let snapshot = snapshot_of(one.clone(), 4, one.len() / 2);
    assert_eq!(snapshot.devices.len(), 1);
    assert!(
        snapshot.at > T0 + DAY,
        "the point is {} h after the first reading",
        (snapshot.at - T0) / HOUR_MS
    );
}

/// Waits until the engine has processed what the watermark lets it.
fn settle(engine: &Engine) {
    let mut seen = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let samples = engine.stats().snapshot().samples;
        if samples > 0 && samples == seen {
            return;
        }
        seen = samples;
    }
}

fn config_with(board: Arc<DeviceBoard>) -> EngineConfig {
    EngineConfig {
        devices: board,
        ..EngineConfig::default()
    }
}

#[test]
fn a_restored_snapshot_continues_like_a_run_that_never_stopped_at_any_worker_count() {
    let uninterrupted = run_batches(config(DeviceBoard::default()), 2, LATENESS, fleet()).unwrap();
    assert!(uninterrupted.late.is_empty());
    let batches = fleet().len();
    for (before, after_restart, asked_after) in [
        (2, 1, batches * 3 / 8),
        (1, 2, batches * 5 / 8),
        (2, 2, batches / 2),
    ] {
        let snapshot = snapshot_midway(before, asked_after);
        let keys: Vec<_> = snapshot.devices.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys.len(), 5, "one memory per (customer, device): {keys:?}");
        assert!(snapshot.at > T0 + DAY && snapshot.at <= snapshot.newest);
        // Windows starting an hour after the latest point hold no reading
        // of a batch a memory covers.
        let from = snapshot.newest + HOUR_MS;
        let want = after(&uninterrupted.outputs, from);
        assert!(want.len() > 50, "{} records", want.len());
        let restored = config(DeviceBoard::restoring(snapshot.clone()));
        let replayed = run_batches(restored, after_restart, LATENESS, fleet()).unwrap();
        assert_eq!(
            after(&replayed.outputs, from),
            want,
            "{before} worker(s) before, {after_restart} after"
        );
        assert_eq!(
            replayed.stats.duplicates, 0,
            "the redelivered batch is before the point: in the snapshot, skipped"
        );
        // Without the snapshot the silent device's first reading after the
        // point is a baseline, and its work while silent is lost: the test
        // can tell.
        let from_point: Vec<DeviceBatch> = fleet()
            .into_iter()
            .filter(|b| b.first_at() >= snapshot.at)
            .collect();
        let forgetful =
            run_batches(config(DeviceBoard::default()), 1, LATENESS, from_point).unwrap();
        assert_ne!(after(&forgetful.outputs, from), want);
    }
}

/// A device that skips sequences: the gaps gauge after a restore is that
/// of a run that never stopped. (It restarted at 0, so the sequences the
/// snapshot's windows still missed were not counted, and those the replay
/// filled took it below 0.)
#[test]
fn the_sequence_gaps_after_a_restore_are_those_of_a_run_that_never_stopped() {
    let skipping = || -> Vec<DeviceBatch> {
        (fleet().into_iter())
            .filter(|b| !(&*b.device == "exc-2" && b.sequence.is_multiple_of(7)))
            .collect()
    };
    let uninterrupted =
        run_batches(config(DeviceBoard::default()), 2, LATENESS, skipping()).unwrap();
    // Every 7th of one device's 96 hourly batches never came (13), and
    // `quiet` numbers the hours it was silent (48).
    assert_eq!(uninterrupted.stats.sequence_gaps, 13 + 48);
    let batches = skipping().len();
    for (before, after_restart) in [(2, 1), (1, 2)] {
        let snapshot = snapshot_of(skipping(), before, batches / 2);
        let restored = config(DeviceBoard::restoring(snapshot));
        let replayed = run_batches(restored, after_restart, LATENESS, skipping()).unwrap();
        assert_eq!(
            replayed.stats.sequence_gaps, uninterrupted.stats.sequence_gaps,
            "{before} worker(s) before, {after_restart} after"
        );
    }
}

/// After a restart the WAL's replay hands a lane's batches to the engine
/// live, where they wait for the other lanes' frontier; the broker then
/// redelivers some of them (durable, not yet acknowledged), older than
/// ingest's sequence window, so ingest passes them on as late data. The
/// waiting copy is still counted, once: the usage KPIs equal a run without
/// the redelivery.
#[test]
fn a_late_redelivery_of_a_batch_still_waiting_for_the_frontier_drops_nothing() {
    let fleet = fleet();
    let reference =
        run_batches(config(DeviceBoard::default()), 2, LATENESS, fleet.clone()).unwrap();
    let lane_0: Vec<DeviceBatch> = fleet.iter().filter(|b| lane(b) == 0).cloned().collect();
    let redelivered = lane_0[..lane_0.len() / 2].to_vec();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outputs = runtime.block_on(through_two_lanes(fleet, redelivered, 0));
    assert_eq!(
        normalise(&outputs),
        normalise(&reference.outputs),
        "the KPIs differ from a run without the redelivery"
    );
}

/// A device's buffer arrives late while its earlier batches still wait for
/// the other lane's frontier (that lane's intake is behind). The late
/// readings are the baseline of the readings after them only: the waiting
/// batches count from their own predecessors (they counted nothing, being
/// older than the absorbed reading), and every device window emitted
/// equals the one of a run with every reading in time.
#[test]
fn a_late_buffer_absorbed_while_earlier_batches_wait_leaves_their_increments_whole() {
    let fleet = fleet();
    let in_order = run_batches(config(DeviceBoard::default()), 2, LATENESS, fleet.clone()).unwrap();
    let device = (fleet.iter())
        .find(|b| lane(b) == 0 && &*b.device != "quiet")
        .map(|b| (b.customer.clone(), b.device.clone()))
        .unwrap();
    let buffered = |b: &DeviceBatch| {
        (b.customer.clone(), b.device.clone()) == device
            && (T0 + 30 * HOUR_MS..T0 + 40 * HOUR_MS).contains(&b.first_at())
    };
    let (late, in_time): (Vec<_>, Vec<_>) = fleet.into_iter().partition(buffered);
    assert_eq!(late.len(), 10);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outputs = runtime.block_on(through_two_lanes(in_time, late, 10));
    let want: std::collections::HashMap<_, _> = device_rows(&in_order.outputs, "1h")
        .into_iter()
        .map(|k| ((k.customer.clone(), k.device.clone(), k.window_start), k))
        .collect();
    let got = device_rows(&outputs, "1h");
    assert_eq!(
        got.len(),
        want.len() - 10,
        "the buffer's windows are restated, not emitted"
    );
    for k in got {
        let key = (k.customer.clone(), k.device.clone(), k.window_start);
        assert_eq!(
            normalise(&[Output::Device(k)]),
            normalise(&[Output::Device(want[&key].clone())]),
            "{key:?}"
        );
    }
}

/// The lane (of two, over two workers) of a batch's device.
fn lane(b: &DeviceBatch) -> usize {
    fleetpulse_engine::lane_of(&b.customer, &b.device, 2, 2)
}

/// `fleet` through two lanes of two workers; then `late` (lane 0's
/// batches) on lane 0 below its time, while lane 0's batches wait for
/// lane 1, which comes in last, once `absorbed` of the late batches were
/// absorbed.
async fn through_two_lanes(
    fleet: Vec<DeviceBatch>,
    late: Vec<DeviceBatch>,
    absorbed: u64,
) -> Vec<Output> {
    assert!(late.iter().all(|b| lane(b) == 0));
    let (events, mut received) = tokio::sync::mpsc::channel(64);
    let options = EngineOptions {
        workers: 2,
        ..Default::default()
    };
    let mut engine = Engine::start(config(DeviceBoard::default()), &options, events).unwrap();
    let collector = tokio::task::spawn_blocking(move || {
        let mut outputs = Vec::new();
        while let Some(event) = received.blocking_recv() {
            if let fleetpulse_engine::EngineEvent::Records(records) = event {
                outputs.extend(records);
            }
        }
        outputs
    });
    let mut lanes = engine.split(2);
    // Lane 0's batches go in and it advances to their watermark: lane 1
    // still holds the frontier back, so they wait.
    let end = fleet.iter().map(DeviceBatch::last_at).max().unwrap() + 1;
    let (first, second): (Vec<_>, Vec<_>) = fleet.into_iter().partition(|b| lane(b) == 0);
    assert!(!first.is_empty() && !second.is_empty());
    lanes[0].send_all(first).await.unwrap();
    lanes[0].advance(end).await.unwrap();
    // The late batches, below lane 0's time now; a tick later, so the
    // input hands them on (it holds what it takes in until its time moves).
    lanes[0].send_all(late).await.unwrap();
    lanes[0].advance(end + 60_000).await.unwrap();
    // Lane 1 comes in once lane 0's worker has taken them in: absorbed as
    // late data (counted), or left to their waiting copies (not counted;
    // given half a second). Before, they went in only as the inputs closed,
    // and under load came after the frontier let the waiting batches
    // through (the test failed once under two full suites at once).
    let started = std::time::Instant::now();
    while engine.stats().snapshot().late_absorbed < absorbed {
        assert!(
            started.elapsed().as_secs() < 60,
            "the late batches were not absorbed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if absorbed == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    lanes[1].send_all(second).await.unwrap();
    lanes[1].advance(end).await.unwrap();
    drop(lanes);
    tokio::task::spawn_blocking(move || engine.finish())
        .await
        .unwrap()
        .unwrap();
    collector.await.unwrap()
}
