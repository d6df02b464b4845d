//! Timely's cluster mode in one test process: two engines, each one
//! "process" of a two-process cluster over loopback TCP, fed round-robin as
//! a shared subscription would, produce the same windows as one process;
//! and a process that receives nothing follows the cluster watermark so the
//! windows close while the input is still open.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_engine::run::run_batches;
use fleetpulse_engine::{
    Cluster, DeviceBatch, Engine, EngineConfig, EngineEvent, EngineOptions, MachineState, Output,
    Sample, Watermark,
};
use tokio::sync::mpsc;

const T0: u64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z
const MIN: u64 = 60_000;
const DAY: u64 = 86_400_000;
const LATENESS: u64 = 120 * MIN;

fn batches() -> Vec<DeviceBatch> {
    let devices = [
        ("acme", "a1"),
        ("acme", "a2"),
        ("bolt", "b1"),
        ("bolt", "b2"),
    ];
    let mut out = Vec::new();
    // 3 days, a sample every 10 minutes, six samples a batch: time-ordered
    // across devices, as a fleet publishes.
    for batch_index in 0..(3 * 24) {
        for (d, (customer, device)) in devices.iter().enumerate() {
            let samples = (0..6)
                .map(|i| {
                    let n = batch_index * 6 + i;
                    Sample {
                        at: T0 + n * 10 * MIN,
                        state: MachineState::Running,
                        operating_hours: n as f64 * 0.1 * (d + 1) as f64,
                        cycles: (n % 5) as u32,
                        ..Sample::default()
                    }
                })
                .collect();
            out.push(DeviceBatch {
                customer: (*customer).into(),
                site: "pit".into(),
                device: (*device).into(),
                unit_epoch: 0,
                sequence: batch_index,
                samples,
            });
        }
    }
    out
}

/// Customer windows as comparable text (f64 fields make `Output` not `Ord`).
fn customer_windows(outputs: &[Output]) -> BTreeSet<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Customer(k) => Some(format!("{k:?}")),
            _ => None,
        })
        .collect()
}

fn free_addresses(n: usize) -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// Starts both processes (each waits for the other) and a collector per
/// process.
type Member = (Engine, std::thread::JoinHandle<()>, Arc<Mutex<Vec<Output>>>);

fn start_cluster() -> Vec<Member> {
    start_cluster_with(EngineConfig::default())
}

fn start_cluster_with(config: EngineConfig) -> Vec<Member> {
    let addresses = free_addresses(2);
    let starting: Vec<_> = (0..2)
        .map(|process| {
            let addresses = addresses.clone();
            let config = config.clone();
            std::thread::spawn(move || {
                let (events, mut received) = mpsc::channel(64);
                let options = EngineOptions {
                    workers: 1,
                    cluster: Some(Cluster { process, addresses }),
                    ..EngineOptions::default()
                };
                let engine = Engine::start(config, &options, events).unwrap();
                let outputs = Arc::new(Mutex::new(Vec::new()));
                let collected = outputs.clone();
                let collector = std::thread::spawn(move || {
                    while let Some(event) = received.blocking_recv() {
                        if let EngineEvent::Records(records) = event {
                            collected.lock().unwrap().extend(records);
                        }
                    }
                });
                (engine, collector, outputs)
            })
        })
        .collect();
    starting.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Closes both inputs at once (a process's drain waits for the other) and
/// returns everything emitted.
fn finish(members: Vec<Member>) -> Vec<Output> {
    let finishing: Vec<_> = members
        .into_iter()
        .map(|(engine, collector, outputs)| {
            std::thread::spawn(move || {
                engine.finish().unwrap();
                collector.join().unwrap();
                std::mem::take(&mut *outputs.lock().unwrap())
            })
        })
        .collect();
    finishing
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Hands the batches to the members in turn, as a shared subscription
/// does, each member's watermark following what it took in.
fn feed_round_robin(members: &mut [Member], batches: Vec<DeviceBatch>) {
    let mut watermarks = vec![Watermark::new(LATENESS); members.len()];
    for (i, batch) in batches.into_iter().enumerate() {
        let member = i % members.len();
        let watermark = &mut watermarks[member];
        watermark.admit(batch.first_at(), batch.last_at()).unwrap();
        let engine = &mut members[member].0;
        engine.blocking_send(batch).unwrap();
        engine.blocking_advance(watermark.current()).unwrap();
    }
}

#[test]
fn two_processes_fed_round_robin_equal_one_process() {
    let single = run_batches(EngineConfig::default(), 2, LATENESS, batches()).unwrap();
    let mut members = start_cluster();
    feed_round_robin(&mut members, batches());
    let outputs = finish(members);
    let (one, two) = (
        customer_windows(&single.outputs),
        customer_windows(&outputs),
    );
    assert!(one.len() >= 2 * 3 * 25, "{} customer windows", one.len());
    assert_eq!(one, two);
}

/// A customer whose fleet goes quiet after its first day still has its
/// days closed at the end of input up to the newest record of the whole
/// cluster, though the process that owns it took in nothing that late: its
/// journey records equal one process's, value by value.
#[test]
fn a_quiet_customer_s_days_close_up_to_the_cluster_s_newest_record() {
    use fleetpulse_engine::operators::route;
    use fleetpulse_engine::{Contract, CustomerSpec, Segment};
    let owner = |c: &str| route(c) % 2;
    // Quiet customers owned by the worker that owns neither active one.
    let busy = [owner("acme"), owner("bolt")];
    assert_eq!(busy[0], busy[1], "pick active customers on one worker");
    let quiet: Vec<String> = (0..)
        .map(|i| format!("quiet-{i}"))
        .filter(|c| owner(c) != busy[0])
        .take(2)
        .collect();
    let mut config = EngineConfig::default();
    for customer in ["acme", "bolt"]
        .iter()
        .copied()
        .chain(quiet.iter().map(|c| &**c))
    {
        let contract = Contract {
            arr: 50_000.0,
            start: T0,
            renewal: T0 + 365 * DAY,
            devices_purchased: 2,
            operator_seats: 2,
        };
        let spec = CustomerSpec::new(customer, Segment::LowTouch, contract);
        config.customers.insert(customer.into(), spec);
    }
    let mut all = batches();
    for (sequence, customer) in quiet.iter().enumerate() {
        let samples = (0..6)
            .map(|i| Sample {
                at: T0 + i * 10 * MIN,
                state: MachineState::Running,
                operating_hours: i as f64 * 0.1,
                ..Sample::default()
            })
            .collect();
        all.insert(
            sequence,
            DeviceBatch {
                customer: customer.as_str().into(),
                site: "pit".into(),
                device: "q1".into(),
                unit_epoch: 0,
                sequence: 0,
                samples,
            },
        );
    }
    // Provisional records left out: how many an open day gets depends on
    // how the engine's steps fell, and its close settles them.
    let journeys = |outputs: &[Output]| -> BTreeSet<String> {
        (outputs.iter())
            .filter(|o| !matches!(o, Output::Customer(_) | Output::Device(_)))
            .filter(|o| match o {
                Output::Health(h) => !h.provisional,
                Output::Alert(a) => !a.provisional,
                _ => true,
            })
            .map(|o| format!("{o:?}"))
            .collect()
    };
    let single = run_batches(config.clone(), 2, LATENESS, all.clone()).unwrap();
    let mut members = start_cluster_with(config);
    feed_round_robin(&mut members, all);
    let (one, two) = (journeys(&single.outputs), journeys(&finish(members)));
    let last_day = format!("window_end: {}", T0 + 3 * DAY);
    for customer in &quiet {
        let closed = |records: &BTreeSet<String>| {
            records
                .iter()
                .any(|r| r.contains(&format!("\"{customer}\"")) && r.contains(&last_day))
        };
        assert!(
            closed(&one),
            "{customer}: no record of its last day in one process"
        );
        assert!(
            closed(&two),
            "{customer}: no record of its last day in the cluster"
        );
    }
    assert_eq!(one, two);
}

#[test]
fn an_idle_process_follows_the_cluster_watermark() {
    let days_closed = |members: &[Member]| -> BTreeSet<u64> {
        members
            .iter()
            .flat_map(|m| m.2.lock().unwrap().clone())
            .filter_map(|o| match o {
                Output::Customer(k) if &*k.window == "1d" => Some(k.window_start),
                _ => None,
            })
            .collect()
    };
    let mut members = start_cluster();
    let mut busy = Watermark::new(LATENESS);
    let all = batches();
    let newest = all.iter().map(DeviceBatch::last_at).max().unwrap();
    for batch in all {
        busy.admit(batch.first_at(), batch.last_at()).unwrap();
        members[0].0.blocking_send(batch).unwrap();
        members[0].0.blocking_advance(busy.current()).unwrap();
    }
    // Process 1 received nothing. Without following, its input stays at 0
    // and holds every window of the cluster back.
    let mut idle = Watermark::new(LATENESS);
    let started = Instant::now();
    while members[1].0.cluster_watermark() < busy.current() - busy.current() % 60_000 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the proposal did not arrive"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    idle.raise_to(members[1].0.cluster_watermark());
    members[1].0.blocking_advance(idle.current()).unwrap();
    assert!(idle.current() >= newest - LATENESS - 60_000);
    // The first two days ended before the watermark: they close now, with
    // both inputs still open.
    let started = Instant::now();
    while days_closed(&members) != BTreeSet::from([T0, T0 + DAY]) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "windows held back: {:?}",
            days_closed(&members)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let outputs = finish(members);
    let days: BTreeSet<u64> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Customer(k) if &*k.window == "1d" => Some(k.window_start),
            _ => None,
        })
        .collect();
    assert_eq!(days, BTreeSet::from([T0, T0 + DAY, T0 + 2 * DAY]));
}
