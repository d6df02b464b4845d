//! Payload validation: the checks a telemetry message passes before its
//! samples may enter the engine. Each failure has a stable reason label that
//! ingest uses for its rejection counters and dead-letter records.

use prost::Message;
use thiserror::Error;

use crate::topic::{MAX_ID_BYTES, TopicIds, check_id};
use crate::v1::TelemetryBatch;

/// Bounds on a single message, so one bad client cannot exhaust memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest encoded payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Most samples one batch may carry.
    pub max_samples: usize,
    /// Most features one sample may list.
    pub max_features_per_sample: usize,
    /// Most fault codes one sample may list.
    pub max_faults_per_sample: usize,
    /// Most output one reading may report since the previous one: above it
    /// the value is corrupt (a billion tons or parts in one interval), and
    /// a few such readings would sum to infinity in a window, which line
    /// protocol cannot express.
    pub max_output_units: f64,
    /// Most cycles or manual interventions one reading may report since the
    /// previous one: above it the value is corrupt (a bus's "not available",
    /// all bits set, passed on as 4,294,967,295 cycles).
    pub max_count: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
            max_samples: 4096,
            max_features_per_sample: 32,
            max_faults_per_sample: 64,
            max_output_units: 1e9,
            max_count: 1_000_000,
        }
    }
}

/// Why a message was rejected.
#[derive(Debug, Error, PartialEq)]
pub enum ValidationError {
    /// The payload is larger than [`Limits::max_payload_bytes`].
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload is not a `fleetpulse.v1.TelemetryBatch`.
    #[error("payload does not decode as fleetpulse.v1.TelemetryBatch: {0}")]
    Decode(String),
    /// An id in the payload is not the one the topic names.
    #[error("payload {field} `{payload}` does not match topic {field} `{topic}`")]
    IdMismatch {
        /// Which id: customer_id, site_id or device_id.
        field: &'static str,
        /// The id in the payload.
        payload: String,
        /// The id in the topic.
        topic: String,
    },
    /// The batch carries no samples.
    #[error("batch has no samples")]
    Empty,
    /// The batch carries more samples than [`Limits::max_samples`].
    #[error("batch has {count} samples, more than the limit of {limit}")]
    TooManySamples {
        /// Samples in the batch.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A sample is malformed.
    #[error("sample {index}: {field} {reason}")]
    Sample {
        /// Position of the sample in the batch.
        index: usize,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ValidationError {
    /// A short, stable label for counters and dead-letter records.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Decode(_) => "decode",
            Self::IdMismatch { .. } => "id_mismatch",
            Self::Empty => "empty_batch",
            Self::TooManySamples { .. } => "too_many_samples",
            Self::Sample { .. } => "invalid_sample",
        }
    }
}

/// Decodes a payload received on a telemetry topic and validates it.
pub fn decode_and_validate(
    topic: &TopicIds<'_>,
    payload: &[u8],
    limits: &Limits,
) -> Result<TelemetryBatch, ValidationError> {
    if payload.len() > limits.max_payload_bytes {
        return Err(ValidationError::TooLarge {
            size: payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    // An empty message is a valid protobuf of a batch with no ids: said as
    // what it is, not as ids that differ from the topic's.
    if payload.is_empty() {
        return Err(ValidationError::Decode(
            "the payload is empty (0 bytes), not a TelemetryBatch".into(),
        ));
    }
    // Counted before anything is decoded: a payload of many tiny samples
    // is refused without the allocations of decoding them; prost grows
    // `samples` one push at a time, so the vector is reserved once.
    let count = count_samples(payload);
    if let Some(count) = count.filter(|c| *c > limits.max_samples) {
        return Err(ValidationError::TooManySamples {
            count,
            limit: limits.max_samples,
        });
    }
    let reserve = count.unwrap_or(0);
    let mut batch = TelemetryBatch {
        samples: Vec::with_capacity(reserve),
        ..TelemetryBatch::default()
    };
    (batch.merge(payload)).map_err(|e| ValidationError::Decode(e.to_string()))?;
    validate(topic, &batch, limits)?;
    Ok(batch)
}

/// Field number of `TelemetryBatch.samples`.
const SAMPLES_FIELD: u32 = 6;

/// The samples an encoded batch holds, from a walk over its top-level field
/// keys (nothing decoded). `None` where the walk meets anything but
/// well-formed fields: the decode then says what is wrong.
fn count_samples(mut buf: &[u8]) -> Option<usize> {
    use prost::encoding::{DecodeContext, WireType, decode_key, skip_field};
    let mut samples = 0;
    while !buf.is_empty() {
        let (field, wire) = decode_key(&mut buf).ok()?;
        samples += usize::from(field == SAMPLES_FIELD && wire == WireType::LengthDelimited);
        skip_field(wire, field, &mut buf, DecodeContext::default()).ok()?;
    }
    Some(samples)
}

/// Validates a decoded batch against the topic it arrived on.
pub fn validate(
    topic: &TopicIds<'_>,
    batch: &TelemetryBatch,
    limits: &Limits,
) -> Result<(), ValidationError> {
    // Bytes of something else often parse as a batch of unknown fields:
    // with no id at all it is no batch, not one that names another device.
    if batch.customer_id.is_empty() && batch.site_id.is_empty() && batch.device_id.is_empty() {
        return Err(ValidationError::Decode(
            "no customer, site or device id: not a fleetpulse.v1.TelemetryBatch".into(),
        ));
    }
    for (field, payload, topic) in [
        ("customer_id", &batch.customer_id, topic.customer),
        ("site_id", &batch.site_id, topic.site),
        ("device_id", &batch.device_id, topic.device),
    ] {
        if payload != topic {
            return Err(ValidationError::IdMismatch {
                field,
                payload: truncate(payload, MAX_ID_BYTES).to_owned(),
                topic: topic.to_owned(),
            });
        }
    }
    if batch.samples.is_empty() {
        return Err(ValidationError::Empty);
    }
    if batch.samples.len() > limits.max_samples {
        return Err(ValidationError::TooManySamples {
            count: batch.samples.len(),
            limit: limits.max_samples,
        });
    }
    let mut previous_time = i64::MIN;
    for (index, sample) in batch.samples.iter().enumerate() {
        let reading = Reading::of(sample, previous_time);
        check_reading(&reading, limits).map_err(|(field, reason)| ValidationError::Sample {
            index,
            field,
            reason,
        })?;
        previous_time = sample.event_time_ms;
    }
    Ok(())
}

/// What the checks of one sample read, however it was decoded (prost's
/// types here, the bytes themselves in ingest's direct reader): one set of
/// rules for both.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    /// `event_time_ms`.
    pub event_time_ms: i64,
    /// The batch's previous sample's event time (`i64::MIN` for the first).
    pub previous_time: i64,
    /// `cumulative_operating_hours`.
    pub operating_hours: f64,
    /// `cumulative_idle_hours`.
    pub idle_hours: f64,
    /// `cumulative_fuel_used_litres`.
    pub fuel_used_litres: f64,
    /// `output_units`.
    pub output_units: f64,
    /// `cycles`.
    pub cycles: u32,
    /// `manual_interventions`.
    pub manual_interventions: u32,
    /// `operator_id` (empty: nobody logged in).
    pub operator_id: &'a str,
    /// How many `features`.
    pub features: usize,
    /// Whether every feature's name passes [`check_id`].
    pub feature_names_valid: bool,
    /// How many `fault_codes`.
    pub faults: usize,
}

impl<'a> Reading<'a> {
    /// The reading of a decoded `sample`, after one at `previous_time`.
    pub fn of(sample: &'a crate::v1::Sample, previous_time: i64) -> Self {
        Reading {
            event_time_ms: sample.event_time_ms,
            previous_time,
            operating_hours: sample.cumulative_operating_hours,
            idle_hours: sample.cumulative_idle_hours,
            fuel_used_litres: sample.cumulative_fuel_used_litres,
            output_units: sample.output_units,
            cycles: sample.cycles,
            manual_interventions: sample.manual_interventions,
            operator_id: &sample.operator_id,
            features: sample.features.len(),
            feature_names_valid: sample.features.iter().all(|f| check_id(&f.feature).is_ok()),
            faults: sample.fault_codes.len(),
        }
    }
}

/// The checks of one sample: `Err((field, reason))` names the first that
/// fails.
#[inline]
pub fn check_reading(r: &Reading<'_>, limits: &Limits) -> Result<(), (&'static str, &'static str)> {
    if r.event_time_ms <= 0 {
        return Err(("event_time_ms", "is not a positive Unix time"));
    }
    if r.event_time_ms < r.previous_time {
        return Err(("event_time_ms", "goes backwards within the batch"));
    }
    for (field, value) in [
        ("cumulative_operating_hours", r.operating_hours),
        ("cumulative_idle_hours", r.idle_hours),
        ("cumulative_fuel_used_litres", r.fuel_used_litres),
        ("output_units", r.output_units),
    ] {
        if !value.is_finite() || value < 0.0 {
            return Err((field, "is negative or not finite"));
        }
    }
    let corrupt = "is above the most one reading may report (a corrupt value)";
    if r.output_units > limits.max_output_units {
        return Err(("output_units", corrupt));
    }
    for (field, count) in [
        ("cycles", r.cycles),
        ("manual_interventions", r.manual_interventions),
    ] {
        if count > limits.max_count {
            return Err((field, corrupt));
        }
    }
    if !r.operator_id.is_empty() && check_id(r.operator_id).is_err() {
        return Err(("operator_id", "is too long or holds a forbidden character"));
    }
    if r.features > limits.max_features_per_sample {
        return Err(("features", "lists more features than the limit"));
    }
    if !r.feature_names_valid {
        return Err(("features", "has an empty, too long or malformed name"));
    }
    if r.faults > limits.max_faults_per_sample {
        return Err(("fault_codes", "lists more faults than the limit"));
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{FeatureUsage, MachineState, Sample};

    fn batch() -> TelemetryBatch {
        TelemetryBatch {
            device_id: "d1".into(),
            customer_id: "c1".into(),
            site_id: "s1".into(),
            sequence: 7,
            unit_epoch: 1_690_000_000,
            firmware_version: "1.2.3".into(),
            samples: vec![Sample {
                event_time_ms: 1_700_000_000_000,
                state: MachineState::Running as i32,
                cumulative_operating_hours: 10.5,
                cycles: 3,
                operator_id: "op-1".into(),
                features: vec![FeatureUsage {
                    feature: "eco_mode".into(),
                    active_seconds: 60,
                }],
                ..Default::default()
            }],
        }
    }

    const TOPIC: TopicIds<'static> = TopicIds {
        customer: "c1",
        site: "s1",
        device: "d1",
        kind: crate::topic::TopicKind::Telemetry,
    };

    #[test]
    fn accepts_a_valid_batch() {
        let bytes = batch().encode_to_vec();
        let decoded = decode_and_validate(&TOPIC, &bytes, &Limits::default()).unwrap();
        assert_eq!(decoded, batch());
    }

    #[test]
    fn the_key_walk_counts_the_samples_prost_decodes() {
        let mut empty = batch();
        empty.samples.clear();
        assert_eq!(count_samples(&empty.encode_to_vec()), Some(0));
        for n in [1, 6, 300] {
            let mut b = batch();
            let first = b.samples[0].clone();
            b.samples = (0..n)
                .map(|i| Sample {
                    event_time_ms: first.event_time_ms + 60_000 * i as i64,
                    ..first.clone()
                })
                .collect();
            let bytes = b.encode_to_vec();
            assert_eq!(count_samples(&bytes), Some(n));
            let decoded = decode_and_validate(&TOPIC, &bytes, &Limits::default()).unwrap();
            assert_eq!((decoded.samples.len(), decoded.samples.capacity()), (n, n));
            assert_eq!(decoded, b);
        }
        let bytes = batch().encode_to_vec();
        assert_eq!(count_samples(&bytes[..bytes.len() - 3]), None);
    }

    /// A payload of more samples than allowed is refused before decoding:
    /// here one of them would not even decode.
    #[test]
    fn too_many_samples_are_refused_before_decoding() {
        let mut b = batch();
        let first = b.samples[0].clone();
        b.samples = (0..5).map(|_| first.clone()).collect();
        let mut bytes = b.encode_to_vec();
        // A sixth sample whose body is a field of an unknown wire type.
        bytes.extend_from_slice(&[(6 << 3) | 2, 1, 0x07]);
        let limits = Limits {
            max_samples: 4,
            ..Limits::default()
        };
        let err = decode_and_validate(&TOPIC, &bytes, &limits).unwrap_err();
        assert_eq!(err, ValidationError::TooManySamples { count: 6, limit: 4 });
        let generous = Limits {
            max_samples: 6,
            ..Limits::default()
        };
        let err = decode_and_validate(&TOPIC, &bytes, &generous).unwrap_err();
        assert_eq!(err.reason(), "decode");
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        let err = decode_and_validate(&TOPIC, b"\xff\xff\xff", &Limits::default()).unwrap_err();
        assert_eq!(err.reason(), "decode");
        let bytes = batch().encode_to_vec();
        let err =
            decode_and_validate(&TOPIC, &bytes[..bytes.len() - 3], &Limits::default()).unwrap_err();
        assert_eq!(err.reason(), "decode");
    }

    #[test]
    fn rejects_oversized_payloads_before_decoding() {
        let limits = Limits {
            max_payload_bytes: 8,
            ..Limits::default()
        };
        let err = decode_and_validate(&TOPIC, &batch().encode_to_vec(), &limits).unwrap_err();
        assert_eq!(err.reason(), "too_large");
    }

    #[test]
    fn rejects_ids_that_disagree_with_the_topic() {
        let mut b = batch();
        b.customer_id = "someone-else".into();
        let err = validate(&TOPIC, &b, &Limits::default()).unwrap_err();
        assert_eq!(err.reason(), "id_mismatch");
        assert!(err.to_string().contains("customer_id"), "{err}");
    }

    #[test]
    fn rejects_malformed_samples() {
        let mut b = batch();
        b.samples[0].cumulative_idle_hours = f64::NAN;
        let err = validate(&TOPIC, &b, &Limits::default()).unwrap_err();
        assert_eq!(
            err,
            ValidationError::Sample {
                index: 0,
                field: "cumulative_idle_hours",
                reason: "is negative or not finite"
            }
        );
        let mut b = batch();
        b.samples.push(Sample {
            event_time_ms: 1,
            ..Default::default()
        });
        assert_eq!(
            validate(&TOPIC, &b, &Limits::default())
                .unwrap_err()
                .reason(),
            "invalid_sample"
        );
        let mut b = batch();
        b.samples.clear();
        assert_eq!(
            validate(&TOPIC, &b, &Limits::default()).unwrap_err(),
            ValidationError::Empty
        );
        // A corrupt output: finite, but a few of them sum to infinity.
        let mut b = batch();
        b.samples[0].output_units = 1e308;
        assert_eq!(
            validate(&TOPIC, &b, &Limits::default()).unwrap_err(),
            ValidationError::Sample {
                index: 0,
                field: "output_units",
                reason: "is above the most one reading may report (a corrupt value)"
            }
        );
        b.samples[0].output_units = 1e9;
        validate(&TOPIC, &b, &Limits::default()).unwrap();
        // A bus's "not available" passed on as a count.
        let mut b = batch();
        b.samples[0].manual_interventions = u32::MAX;
        let err = validate(&TOPIC, &b, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ValidationError::Sample {
                    field: "manual_interventions",
                    ..
                }
            ),
            "{err:?}"
        );
        b.samples[0].manual_interventions = 1_000_000;
        validate(&TOPIC, &b, &Limits::default()).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_and_validate(&TOPIC, &bytes, &Limits::default());
        }
    }
}
