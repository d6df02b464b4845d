//! Line protocol for the InfluxDB and VictoriaMetrics sinks: points/s, over
//! the KPI records the engine produces from the capture, in requests of 5000
//! points (the sinks' default batch size).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse::sinks::influxdb::encode::encode_batch;
use fleetpulse_benches::{Capture, default_spec, engine_config};
use fleetpulse_engine::reference::fold;

fn encode(c: &mut Criterion) {
    let capture = Capture::new(&default_spec());
    let records = fold(&engine_config(&capture.fleet), capture.batches.clone());
    let bytes: usize = records
        .chunks(5000)
        .map(|chunk| encode_batch(chunk).body.len())
        .sum();
    eprintln!(
        "{} KPI records -> {:.1} MB of line protocol",
        records.len(),
        bytes as f64 / 1e6
    );

    let mut group = c.benchmark_group("encode");
    group.sample_size(10);
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("line_protocol/points", |b| {
        b.iter(|| {
            for chunk in records.chunks(5000) {
                std::hint::black_box(encode_batch(chunk));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
