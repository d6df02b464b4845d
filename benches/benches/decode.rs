//! Wire to engine input: protobuf decode + validate (prost's, and the
//! reader admission uses, straight into engine readings), and the whole admission
//! step the service runs per message (topic, decode, validate, customer
//! check, conversion to engine types, watermark). Throughput in messages/s and
//! payload MB/s; samples/s = messages/s x 6 for this capture.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse_benches::{Capture, admission, default_spec, now_ms};
use fleetpulse_proto::{Limits, TopicIds, decode_and_validate};

fn decode(c: &mut Criterion) {
    let capture = Capture::new(&default_spec());
    let messages = &capture.messages;
    eprintln!(
        "capture: {} messages, {} samples, {:.1} MB payload",
        messages.len(),
        capture.samples,
        capture.payload_bytes as f64 / 1e6
    );
    let limits = Limits::default();
    let now_ms = now_ms();

    let mut group = c.benchmark_group("decode");
    group.sample_size(10);
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("decode_validate/messages", |b| {
        b.iter(|| {
            for (topic, payload) in messages {
                let ids = TopicIds::parse(topic).expect("valid topic");
                std::hint::black_box(decode_and_validate(&ids, payload, &limits).expect("valid"));
            }
        })
    });
    // What admission reads payloads with: straight into engine readings.
    let catalog = fleetpulse_engine::FeatureCatalog::default();
    group.bench_function("read_validate/messages", |b| {
        b.iter(|| {
            for (topic, payload) in messages {
                let ids = TopicIds::parse(topic).expect("valid topic");
                let read = fleetpulse::convert::wire::parse(&ids, payload, &limits, &catalog);
                std::hint::black_box(read.expect("valid"));
            }
        })
    });
    // The same run, in messages/s and in payload bytes/s.
    for (name, throughput) in [
        (
            "admission/messages",
            Throughput::Elements(messages.len() as u64),
        ),
        ("admission/bytes", Throughput::Bytes(capture.payload_bytes)),
    ] {
        group.throughput(throughput);
        group.bench_function(name, |b| {
            b.iter_batched(
                || admission(&capture.fleet),
                |mut admission| {
                    for (topic, payload) in messages {
                        std::hint::black_box(
                            admission.admit(topic, payload, now_ms).expect("admitted"),
                        );
                    }
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
