//! Engine state per device at 10k, 100k and 1M devices.
//!
//! `cargo bench -p fleetpulse-benches --bench memory [-- 10000 100000 1000000]`
//!
//! Every device sends two hourly batches (6 samples each, taken from a real
//! simulator capture of a working morning, so operators and features are
//! realistic), 100 customers. The engine runs with 1 worker and no allowed
//! lateness and the watermark is advanced to the newest sample, so the state
//! measured is the steady state of a fleet that reports every hour:
//!
//! - per device: dedup window and last cumulative counters (device state),
//!   the open 1h window of the current hour and the open 1d window
//!   (per-device accumulators),
//! - per customer: the open windows' sets of reporting / active devices and
//!   operators,
//! - no buffered input (the watermark has passed every batch) and the hour
//!   before closed and emitted.
//!
//! With the service's default 2 h lateness the engine also holds up to two
//! hours of input batches per device until the watermark passes them; that
//! buffer is reported on its own line.
//!
//! Heap bytes are counted exactly by a counting allocator (stats_alloc);
//! malloc's own per-chunk overhead is not in them, so the RSS growth is
//! printed beside them. The ids (one `Arc<str>` per device, interned by
//! ingest and shared with the engine) are allocated before the measurement
//! starts and reported separately.

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use fleetpulse_benches::Capture;
use fleetpulse_engine::{
    DeviceBatch, Engine, EngineConfig, EngineEvent, EngineOptions, EventTime, Id, Sample,
};
use fleetpulse_sim::FleetSpec;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::sync::mpsc;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CUSTOMERS: usize = 100;
const HOURS: [u64; 2] = [8, 9];
/// Minutes over which devices' reports are spread within the hour. The
/// template's last reading is at minute 50, so with 9 the newest reading is
/// at minute 58 and the watermark can pass it (at minute 59) while the hour
/// is still open.
const SPREAD_MINUTES: usize = 9;

/// Bytes allocated and not freed. stats_alloc already adds a `realloc`'s
/// growth to `bytes_allocated` (and its shrinking to `bytes_deallocated`);
/// `bytes_reallocated` is the same growth again, so it is not added.
fn live_heap() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Waits until the live heap stops moving (the workers are done): a
/// second without a change of more than 4 KiB in any fifth of it (one
/// quiet fifth was once a worker descheduled mid-merge on this 2-core
/// machine, and read 930 B per device at 1M for 491).
fn settle() -> i64 {
    let mut last = live_heap();
    let mut quiet = 0;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = live_heap();
        quiet = if (now - last).abs() <= 4096 {
            quiet + 1
        } else {
            0
        };
        if quiet == 5 {
            return now;
        }
        last = now;
    }
}

struct Measurement {
    devices: usize,
    state_bytes: i64,
    rss_bytes: i64,
    buffered_bytes: i64,
    id_bytes: i64,
    samples_per_sec: f64,
}

fn measure(devices: usize, templates: &[Vec<DeviceBatch>]) -> Measurement {
    let before_ids = live_heap();
    let customers: Vec<Id> = (0..CUSTOMERS).map(|c| format!("c{c:03}").into()).collect();
    let sites: Vec<Id> = (0..CUSTOMERS)
        .map(|c| format!("c{c:03}-site").into())
        .collect();
    let ids: Vec<Id> = (0..devices).map(|d| format!("dev-{d:07}").into()).collect();
    let id_bytes = live_heap() - before_ids;

    let batch = |hour: usize, d: usize| -> DeviceBatch {
        let template = &templates[hour][d % templates[hour].len()];
        DeviceBatch {
            customer: customers[d % CUSTOMERS].clone(),
            site: sites[d % CUSTOMERS].clone(),
            device: ids[d].clone(),
            unit_epoch: 0,
            sequence: hour as u64 + 1,
            // Devices spread over the first 9 minutes of the hour (9
            // ticks), as real devices are, instead of all on one tick.
            samples: template
                .samples
                .iter()
                .map(|s| Sample {
                    at: s.at + (d % SPREAD_MINUTES) as u64 * 60_000,
                    ..s.clone()
                })
                .collect(),
        }
    };

    // The state the engine holds in steady state (no lateness).
    let heap_before = live_heap();
    let rss_before = rss_bytes();
    let started = Instant::now();
    let (state_bytes, rss_growth, took) = {
        let (engine, records) = start_engine();
        let mut engine = engine;
        for hour in 0..HOURS.len() {
            let mut newest = 0;
            for d in 0..devices {
                let b = batch(hour, d);
                newest = newest.max(b.last_at());
                engine.blocking_send(b).expect("engine");
            }
            // Past every sample of this hour, not past the hour's end.
            let hour_end = newest - newest % 3_600_000 + 3_600_000;
            assert!(newest + 60_000 < hour_end, "the hour stays open");
            engine.blocking_advance(newest + 60_000).expect("engine");
        }
        let samples = (devices * 12) as u64;
        while engine.stats().snapshot().samples < samples {
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        let state = settle() - heap_before;
        let rss = rss_bytes() - rss_before;
        assert_eq!(engine.stats().snapshot().devices as usize, devices);
        assert!(records.load(Relaxed) > 0, "the first hour was emitted");
        engine.finish().expect("engine stops");
        (state, rss, took)
    };
    let samples_per_sec = (devices * 12) as f64 / took.as_secs_f64();

    // The input the default 2 h lateness keeps buffered on top: feed the same
    // two hours with the watermark held back.
    let heap_before = live_heap();
    let buffered_bytes = {
        let (mut engine, _records) = start_engine();
        for hour in 0..HOURS.len() {
            for d in 0..devices {
                engine.blocking_send(batch(hour, d)).expect("engine");
            }
        }
        let held = settle() - heap_before;
        engine.blocking_advance(EventTime::MAX / 2).expect("engine");
        engine.finish().expect("engine stops");
        held
    };
    drop(ids);
    Measurement {
        devices,
        state_bytes,
        rss_bytes: rss_growth,
        buffered_bytes,
        id_bytes,
        samples_per_sec,
    }
}

/// One worker; results counted and dropped by a collector thread.
fn start_engine() -> (Engine, Arc<AtomicU64>) {
    let (events, mut received) = mpsc::channel(64);
    let engine = Engine::start(EngineConfig::default(), &EngineOptions::default(), events)
        .expect("engine starts");
    let records = Arc::new(AtomicU64::new(0));
    let counted = records.clone();
    std::thread::spawn(move || {
        while let Some(event) = received.blocking_recv() {
            if let EngineEvent::Records(r) = event {
                counted.fetch_add(r.len() as u64, Relaxed);
            }
        }
    });
    (engine, records)
}

fn main() {
    let sizes = fleetpulse_benches::sizes_from_args(&[10_000, 100_000, 1_000_000]);
    // Two working hours of a real capture, as templates.
    let capture = Capture::new(&FleetSpec {
        customers: 6,
        devices: 300,
        days: 1,
        ..FleetSpec::default()
    });
    let start = capture.fleet.spec().start;
    let templates: Vec<Vec<DeviceBatch>> = HOURS
        .iter()
        .map(|h| {
            capture
                .batches
                .iter()
                .filter(|b| (b.first_at() - start) / 3_600_000 == *h)
                .cloned()
                .collect()
        })
        .collect();
    assert!(templates.iter().all(|t| !t.is_empty()));
    drop(capture);

    println!(
        "{:>10} {:>14} {:>12} {:>14} {:>14} {:>12} {:>14}",
        "devices",
        "state B/dev",
        "RSS B/dev",
        "+2h input B/dev",
        "ids B/dev",
        "state MiB",
        "samples/s"
    );
    let mut results = Vec::new();
    for devices in sizes {
        let m = measure(devices, &templates);
        let per = |b: i64| b as f64 / m.devices as f64;
        println!(
            "{:>10} {:>14.0} {:>12.0} {:>14.0} {:>14.0} {:>12.1} {:>14.0}",
            m.devices,
            per(m.state_bytes),
            per(m.rss_bytes),
            per(m.buffered_bytes),
            per(m.id_bytes),
            m.state_bytes as f64 / (1 << 20) as f64,
            m.samples_per_sec
        );
        results.push(m);
    }
    if let (Some(first), Some(last)) = (results.first(), results.last())
        && last.devices > first.devices
    {
        let a = first.state_bytes as f64 / first.devices as f64;
        let b = last.state_bytes as f64 / last.devices as f64;
        println!(
            "growth: {:.2}x bytes per device from {} to {} devices (1.00 = linear)",
            b / a,
            first.devices,
            last.devices
        );
    }
}
