//! What must hold for any input, shared by the libFuzzer target
//! (`fuzz_targets/decode_and_validate.rs`) and the bounded stable-Rust fuzz
//! test (`proto/tests/fuzz.rs`), which include this file by path.
//!
//! An input is `topic NUL payload`: the bytes up to the first 0 byte are the
//! topic (MQTT topics cannot contain U+0000; invalid UTF-8 is replaced, as a
//! broker would refuse it), the rest is the payload. Without a 0 byte the
//! whole input is the payload.
//!
//! For every input:
//! - nothing panics (topic parsing, decoding, validation, error messages);
//! - a topic that parses is rebuilt exactly by `telemetry_topic`;
//! - an accepted payload re-encodes canonically and the re-decoded batch
//!   validates again against the same topic.
//!
//! The payload is checked against the input's topic and, so that payload
//! mutations are not wasted on a bad topic, also against the topic its own
//! ids name.

use fleetpulse_proto::v1::TelemetryBatch;
use fleetpulse_proto::{Limits, TopicIds, decode_and_validate, telemetry_topic, validate};
use prost::Message;

/// Splits an input into topic and payload (see the module documentation).
pub fn split(data: &[u8]) -> (String, &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(nul) => (
            String::from_utf8_lossy(&data[..nul]).into_owned(),
            &data[nul + 1..],
        ),
        None => (String::new(), data),
    }
}

/// Joins a topic and a payload into an input.
#[allow(dead_code)] // used by the stable test only
pub fn join(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(topic.len() + 1 + payload.len());
    input.extend_from_slice(topic.as_bytes());
    input.push(0);
    input.extend_from_slice(payload);
    input
}

/// Runs every check on one input; panics if a property fails.
pub fn check(data: &[u8]) {
    let (topic, payload) = split(data);
    check_payload(&topic, payload);
    if let Ok(batch) = TelemetryBatch::decode(payload) {
        let own = telemetry_topic(&batch.customer_id, &batch.site_id, &batch.device_id);
        check_payload(&own, payload);
    }
}

fn check_payload(topic: &str, payload: &[u8]) {
    let ids = match TopicIds::parse(topic) {
        Ok(ids) => ids,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(
        telemetry_topic(ids.customer, ids.site, ids.device),
        topic,
        "a parsed topic rebuilds exactly"
    );
    // Default limits and tight ones, so the limit checks run too.
    let tight = Limits {
        max_payload_bytes: 512,
        max_samples: 3,
        max_features_per_sample: 1,
        max_faults_per_sample: 1,
        max_output_units: 10.0,
        max_count: 10,
    };
    for limits in [Limits::default(), tight] {
        match decode_and_validate(&ids, payload, &limits) {
            Ok(batch) => {
                let encoded = batch.encode_to_vec();
                let again = TelemetryBatch::decode(encoded.as_slice())
                    .expect("an accepted batch re-decodes after encoding");
                assert_eq!(
                    again.encode_to_vec(),
                    encoded,
                    "encoding an accepted batch is canonical"
                );
                validate(&ids, &again, &limits).expect("a re-decoded batch validates again");
            }
            Err(e) => {
                let _ = (e.to_string(), e.reason());
            }
        }
    }
}
