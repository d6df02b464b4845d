//! One customer's restatement pass, as the corrections thread runs it: read
//! its week of batches from the archive (SQLite day files), compute its
//! device and customer windows again, fold its journey again over them.
//! Throughput is in device-days restated; the bound is 5 ms per
//! device-day. And what archiving a live batch costs.

use std::collections::HashSet;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse::corrections::{Archive, LiveBatches};
use fleetpulse_benches::{Capture, engine_config};
use fleetpulse_engine::restatement::{Restatement, journey_records, refold};
use fleetpulse_sim::FleetSpec;

const DAY_MS: u64 = 86_400_000;

fn restatement(c: &mut Criterion) {
    let spec = FleetSpec {
        customers: 1,
        devices: 50,
        days: 8,
        seed: 42,
        ..FleetSpec::default()
    };
    let capture = Capture::new(&spec);
    let config = engine_config(&capture.fleet);
    let customer = capture.batches[0].customer.clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut archive = Archive::open(dir.path()).expect("archive");
    archive
        .append(&capture.batches)
        .expect("archive the capture");
    // Late data on day 1: every window of days 1..8 is restated.
    let from = spec.start + DAY_MS + 7 * 3_600_000;
    let restatement = Restatement {
        customer: customer.clone(),
        from,
        through: u64::MAX,
        revision: 1,
    };
    let floor = restatement.floor(&config);
    let devices: HashSet<_> = capture.batches.iter().map(|b| b.device.clone()).collect();
    let device_days = devices.len() as u64 * (u64::from(spec.days) - 1);
    let spec_of = config.customers[&*customer].clone();

    let pass = |archive: &mut Archive| {
        let read = archive.from_floor(&customer, floor).expect("read");
        let windows = restatement.windows(&config, read.earlier, read.batches);
        let folded = journey_records(&config, &windows);
        let refolded = refold(&config, spec_of.clone(), None, folded, None);
        (windows.len(), refolded.outputs.len())
    };
    let (windows, journey) = pass(&mut archive);
    eprintln!(
        "one pass: {} devices x {} days = {device_days} device-days, {windows} windows, {journey} journey records",
        devices.len(),
        spec.days - 1
    );

    let mut group = c.benchmark_group("restatement");
    group.sample_size(20);
    group.throughput(Throughput::Elements(device_days));
    group.bench_function("pass/device_days", |b| b.iter(|| pass(&mut archive)));
    group.bench_function("windows_only/device_days", |b| {
        let batches = archive.batches(&customer, floor).expect("read");
        let earlier = archive.earlier(&customer, &devices, floor).expect("read");
        b.iter(|| restatement.windows(&config, earlier.clone(), batches.clone()))
    });
    group.finish();

    // The read alone, as a pass did it before (two reads, the floor's day
    // file decoded by both) and as it does now (one), over the archive as
    // above (late rows) and as the service writes live data (chunks of up
    // to 1024 batches, which straddle the floor).
    let chunked_dir = tempfile::tempdir().expect("temp dir");
    let mut chunked = Archive::open(chunked_dir.path()).expect("archive");
    for flush in capture.batches.chunks(1024) {
        (chunked.append_live(&[LiveBatches::encode(flush)])).expect("archive live");
    }
    let mut group = c.benchmark_group("restatement_read");
    group.sample_size(20);
    group.throughput(Throughput::Elements(device_days));
    for (name, archive) in [("rows", &archive), ("chunks", &chunked)] {
        group.bench_function(format!("{name}/two_reads/device_days"), |b| {
            b.iter(|| {
                let batches = archive.batches(&customer, floor).expect("read");
                let devices: HashSet<_> = batches.iter().map(|b| b.device.clone()).collect();
                let earlier = archive.earlier(&customer, &devices, floor).expect("read");
                (batches.len(), earlier.len())
            })
        });
        group.bench_function(format!("{name}/from_floor/device_days"), |b| {
            b.iter(|| {
                let read = archive.from_floor(&customer, floor).expect("read");
                (read.batches.len(), read.earlier.len())
            })
        });
    }
    group.finish();
}

/// What every live batch costs with the correction horizon on: the intake
/// encodes it, the corrections thread archives it, `LIVE_TRANSACTION`
/// (1024) batches per transaction at most. Throughput in batches.
fn archive_append(c: &mut Criterion) {
    let spec = FleetSpec {
        customers: 6,
        devices: 300,
        days: 10,
        seed: 42,
        ..FleetSpec::default()
    };
    let capture = Capture::new(&spec);
    let mut group = c.benchmark_group("archive");
    group.sample_size(10);
    group.throughput(Throughput::Elements(capture.batches.len() as u64));
    for chunk in [64, 1024] {
        group.bench_function(format!("append_live/{chunk}_per_transaction"), |b| {
            b.iter_batched(
                || tempfile::tempdir().expect("temp dir"),
                |dir| {
                    let mut archive = Archive::open(dir.path()).expect("archive");
                    for batches in capture.batches.chunks(chunk) {
                        let live = [LiveBatches::encode(batches)];
                        archive.append_live(&live).expect("append");
                        archive.note_live(&live).expect("note");
                    }
                    dir
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, restatement, archive_append);
criterion_main!(benches);
