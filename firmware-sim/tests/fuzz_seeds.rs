//! Writes the seed inputs of the proto fuzz target (`proto/fuzz/seeds/`):
//! real simulator messages, in the fuzz input format `topic NUL payload`.
//! The fuzzers start from them, so their mutations stay close to what
//! devices really send. Regenerate after a change of the wire format:
//!
//! ```sh
//! cargo test -p fleetpulse-sim --test fuzz_seeds -- --ignored
//! ```

use std::fs;
use std::path::Path;

use fleetpulse_proto::v1::{MachineState, TelemetryBatch};
use fleetpulse_sim::{Fleet, FleetSpec, SimMessage};

type Pick = (&'static str, fn(&TelemetryBatch) -> bool);

#[test]
#[ignore = "writes proto/fuzz/seeds; run by hand after a wire-format change"]
fn write_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/fuzz/seeds");
    fs::create_dir_all(&dir).unwrap();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            fs::remove_file(path).unwrap();
        }
    }

    let mut seeds: Vec<(String, SimMessage)> = Vec::new();
    // One message per customer profile, then the first with each feature
    // of the schema in use.
    let spec = FleetSpec {
        customers: 6,
        devices: 12,
        days: 3,
        ..FleetSpec::default()
    };
    let fleet = Fleet::generate(&spec);
    for customer in fleet.customers() {
        let first = fleet
            .messages()
            .find(|m| m.batch.customer_id == customer.id)
            .expect("every customer sends");
        seeds.push((format!("first-{}", customer.id), first));
    }
    let picks: [Pick; 5] = [
        ("features", |b| {
            b.samples.iter().any(|s| !s.features.is_empty())
        }),
        ("faults", |b| {
            b.samples.iter().any(|s| !s.fault_codes.is_empty())
        }),
        ("operator", |b| {
            b.samples.iter().any(|s| !s.operator_id.is_empty())
        }),
        ("location", |b| {
            b.samples.iter().any(|s| s.location.is_some())
        }),
        ("fault-state", |b| {
            b.samples
                .iter()
                .any(|s| s.state == MachineState::Fault as i32)
        }),
    ];
    for (name, pick) in picks {
        let taken = |m: &SimMessage| {
            seeds
                .iter()
                .any(|(_, s)| s.topic == m.topic && s.batch.sequence == m.batch.sequence)
        };
        if let Some(message) = fleet.messages().find(|m| pick(&m.batch) && !taken(m)) {
            seeds.push((name.to_owned(), message));
        }
    }
    // Smallest and largest batches.
    for (name, samples_per_batch) in [("one-sample", 1), ("day-batch", 144)] {
        let spec = FleetSpec {
            customers: 1,
            devices: 2,
            days: 30,
            samples_per_batch,
            ..FleetSpec::default()
        };
        let message = Fleet::generate(&spec).messages().next().expect("a message");
        seeds.push((name.to_owned(), message));
    }

    for (i, (name, message)) in seeds.into_iter().enumerate() {
        let (topic, payload) = message.into_encoded();
        let mut input = topic.into_bytes();
        input.push(0);
        input.extend_from_slice(&payload);
        fs::write(dir.join(format!("sim-{i:02}-{name}.bin")), input).unwrap();
    }
}
