//! The engine alone, fed in-process (no broker, no decode): samples/s
//! through dedup, per-device state and the 1h + 1d windowed KPIs, at 1 and 2
//! timely workers, with every customer in UTC and with customers in time
//! zones (`_zoned`), against the single-threaded fold that computes the same
//! records (`fleetpulse_engine::reference::fold`).
//!
//! Every iteration starts the workers, feeds the whole capture, closes the
//! input and collects every record, so worker start-up is included (about a
//! millisecond against hundreds for the capture).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse_benches::{Capture, LATENESS_MS, default_spec, engine_config};
use fleetpulse_engine::reference::fold;
use fleetpulse_engine::run::run_batches;
use fleetpulse_engine::{EngineConfig, Output};

fn engine(c: &mut Criterion) {
    let capture = Capture::new(&default_spec());
    let config = engine_config(&capture.fleet);
    let batches = &capture.batches;
    // Same records from both, or the comparison means nothing.
    let dataflow = run_batches(config.clone(), 1, LATENESS_MS, batches.clone()).expect("engine");
    let reference = fold(&config, batches.clone());
    assert!(dataflow.late.is_empty(), "the capture is in order");
    // The fold computes the windowed KPIs (customer_kpi, device_kpi); the
    // dataflow also runs the per-day customer-success journey on top
    // (outcomes, milestones, health, alerts: a few records per customer-day).
    let windowed = |outputs: &[Output]| {
        outputs
            .iter()
            .filter(|o| matches!(o, Output::Customer(_) | Output::Device(_)))
            .count()
    };
    assert_eq!(windowed(&dataflow.outputs), windowed(&reference));
    eprintln!(
        "dataflow: {} records, of which {} customer-success journey records",
        dataflow.outputs.len(),
        dataflow.outputs.len() - windowed(&dataflow.outputs)
    );
    eprintln!(
        "capture: {} batches, {} samples -> {} KPI records",
        batches.len(),
        capture.samples,
        reference.len()
    );

    // Customers in time zones (daily windows are their local days), as most
    // real customers are: half an hour apart from UTC in Adelaide, east
    // and west, with and without daylight saving; the same records as the
    // fold.
    let zoned = in_time_zones(&config);
    let dataflow = run_batches(zoned.clone(), 2, LATENESS_MS, batches.clone()).expect("engine");
    assert_eq!(
        windowed(&dataflow.outputs),
        windowed(&fold(&zoned, batches.clone()))
    );

    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(capture.samples));
    for (customers, config) in [("", &config), ("_zoned", &zoned)] {
        for workers in [1, 2] {
            let name = format!("dataflow/{workers}_workers{customers}/samples");
            group.bench_function(name, |b| {
                b.iter_batched(
                    || batches.clone(),
                    |input| {
                        run_batches(config.clone(), workers, LATENESS_MS, input)
                            .expect("engine run")
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    // Timely timestamp granularity: the service's 1 min tick against 1 s
    // (every distinct timestamp costs progress tracking).
    let mut fine = config.clone();
    fine.tick_ms = 1_000;
    group.bench_function("dataflow/1_workers_tick_1s/samples", |b| {
        b.iter_batched(
            || batches.clone(),
            |input| run_batches(fine.clone(), 1, LATENESS_MS, input).expect("engine run"),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("reference_fold/samples", |b| {
        b.iter_batched(
            || batches.clone(),
            |input| fold(&config, input),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// `config` with its customers spread over time zones.
fn in_time_zones(config: &EngineConfig) -> EngineConfig {
    const ZONES: [&str; 6] = [
        "Europe/Berlin",
        "America/Chicago",
        "Australia/Adelaide",
        "Asia/Kolkata",
        "America/Sao_Paulo",
        "UTC",
    ];
    let mut zoned = config.clone();
    let mut ids: Vec<_> = zoned.customers.keys().cloned().collect();
    ids.sort();
    for (id, zone) in ids.iter().zip(ZONES.iter().cycle()) {
        let spec = zoned.customers.get_mut(id).expect("listed");
        spec.timezone = jiff::tz::TimeZone::get(zone).expect("a zone of the bundled database");
    }
    zoned
}

criterion_group!(benches, engine);
criterion_main!(benches);
