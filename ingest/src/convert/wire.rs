//! Telemetry payloads read straight from their bytes into engine readings:
//! no `TelemetryBatch` in between, no string allocated per reading's
//! operator or feature. Decoding and converting were a sixth of the
//! service's CPU, most of it allocations that the next step dropped.
//!
//! Only what this reader can judge whole is taken here; any other payload
//! (malformed, invalid, or merely unusual: a group in an unknown field)
//! gets `None` and goes the prost way ([`decode_and_validate`]), which
//! says what is wrong. A property test holds the two to the same readings
//! for every payload this reader accepts, and to accepting the same
//! well-formed payloads.
//!
//! [`decode_and_validate`]: fleetpulse_proto::decode_and_validate

use fleetpulse_engine::{FeatureCatalog, Sample};
use fleetpulse_proto::topic::check_id;
use fleetpulse_proto::{Limits, Reading, TopicIds, check_reading, v1};
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

/// A payload read and validated against its topic: its readings, with the
/// operator of each (empty: nobody logged in) still to intern.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// Per-unit sequence number.
    pub sequence: u64,
    /// Unit epoch.
    pub unit_epoch: u64,
    /// The readings, operators not yet set.
    pub samples: Vec<Sample>,
    /// Each reading's operator id as sent.
    pub operators: Vec<&'a str>,
}

/// `payload` read as a `fleetpulse.v1.TelemetryBatch` on `topic`, when it
/// is well formed and passes every check of
/// [`fleetpulse_proto::validate`]; `None` otherwise (the prost way then
/// tells why, or takes what this reader leaves to it).
pub fn parse<'a>(
    topic: &TopicIds<'_>,
    payload: &'a [u8],
    limits: &Limits,
    catalog: &FeatureCatalog,
) -> Option<Parsed<'a>> {
    if payload.len() > limits.max_payload_bytes {
        return None;
    }
    let count = samples_in(payload)?;
    if count == 0 || count > limits.max_samples {
        return None;
    }
    let mut parsed = Parsed {
        sequence: 0,
        unit_epoch: 0,
        samples: Vec::with_capacity(count),
        operators: Vec::with_capacity(count),
    };
    let (mut device, mut customer, mut site) = ("", "", "");
    let mut previous = i64::MIN;
    let mut buf = payload;
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        // Field numbers of `TelemetryBatch` (proto/.../telemetry.proto).
        match tag {
            1 => device = string(wire, &mut buf)?,
            2 => customer = string(wire, &mut buf)?,
            3 => site = string(wire, &mut buf)?,
            4 => parsed.sequence = varint(wire, &mut buf)?,
            5 => _ = string(wire, &mut buf)?,
            6 => {
                let sample = delimited(wire, &mut buf)?;
                let (sample, operator) = reading(sample, previous, limits, catalog)?;
                previous = sample.at as i64;
                parsed.samples.push(sample);
                parsed.operators.push(operator);
            }
            7 => parsed.unit_epoch = varint(wire, &mut buf)?,
            _ => skip(wire, tag, &mut buf)?,
        }
    }
    let matches = customer == topic.customer && site == topic.site && device == topic.device;
    matches.then_some(parsed)
}

/// The samples a batch holds, from a walk over its top-level fields; `None`
/// where the walk meets anything it does not read.
fn samples_in(mut buf: &[u8]) -> Option<usize> {
    let mut count = 0;
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        count += usize::from(tag == 6);
        skip(wire, tag, &mut buf)?;
    }
    Some(count)
}

/// One `Sample` message, its predecessor at `previous`: the reading and its
/// operator id, when it passes the checks of a sample
/// ([`check_reading`], the rules prost's way applies).
fn reading<'a>(
    mut buf: &'a [u8],
    previous: i64,
    limits: &Limits,
    catalog: &FeatureCatalog,
) -> Option<(Sample, &'a str)> {
    let mut at = 0i64;
    let mut state = 0i32;
    let mut operator = "";
    let (mut features, mut faults) = (0usize, 0u32);
    let mut feature_names_valid = true;
    let mut sample = Sample::default();
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        // Field numbers of `Sample`; values truncated as prost does for
        // int64, enum and uint32 fields.
        match tag {
            1 => at = varint(wire, &mut buf)? as i64,
            2 => state = varint(wire, &mut buf)? as i32,
            3 => sample.operating_hours = double(wire, &mut buf)?,
            4 => sample.idle_hours = double(wire, &mut buf)?,
            5 => sample.fuel_litres = double(wire, &mut buf)?,
            6 => sample.cycles = varint(wire, &mut buf)? as u32,
            7 => sample.output_units = double(wire, &mut buf)?,
            8 => sample.manual_interventions = varint(wire, &mut buf)? as u32,
            9 => operator = string(wire, &mut buf)?,
            10 => {
                let (name, seconds) = feature(delimited(wire, &mut buf)?)?;
                feature_names_valid &= check_id(name).is_ok();
                features += 1;
                super::add_feature(&mut sample, catalog, name, seconds);
            }
            11 => {
                fault(delimited(wire, &mut buf)?)?;
                faults += 1;
            }
            12 => location(delimited(wire, &mut buf)?)?,
            _ => skip(wire, tag, &mut buf)?,
        }
    }
    let checked = Reading {
        event_time_ms: at,
        previous_time: previous,
        operating_hours: sample.operating_hours,
        idle_hours: sample.idle_hours,
        fuel_used_litres: sample.fuel_litres,
        output_units: sample.output_units,
        cycles: sample.cycles,
        manual_interventions: sample.manual_interventions,
        operator_id: operator,
        features,
        feature_names_valid,
        faults: faults as usize,
    };
    check_reading(&checked, limits).ok()?;
    sample.at = at as u64;
    let state = v1::MachineState::try_from(state).unwrap_or_default();
    sample.state = super::state(state);
    sample.faults = faults;
    Some((sample, operator))
}

/// A `FeatureUsage`: its name and active seconds.
fn feature(mut buf: &[u8]) -> Option<(&str, u32)> {
    let (mut name, mut seconds) = ("", 0);
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        match tag {
            1 => name = string(wire, &mut buf)?,
            2 => seconds = varint(wire, &mut buf)? as u32,
            _ => skip(wire, tag, &mut buf)?,
        }
    }
    Some((name, seconds))
}

/// A well-formed `FaultCode` (only counted).
fn fault(mut buf: &[u8]) -> Option<()> {
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        match tag {
            1 => _ = string(wire, &mut buf)?,
            2 => _ = varint(wire, &mut buf)?,
            _ => skip(wire, tag, &mut buf)?,
        }
    }
    Some(())
}

/// A well-formed `Location` (not used by the KPIs).
fn location(mut buf: &[u8]) -> Option<()> {
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        match tag {
            1..=3 => _ = double(wire, &mut buf)?,
            _ => skip(wire, tag, &mut buf)?,
        }
    }
    Some(())
}

fn varint(wire: WireType, buf: &mut &[u8]) -> Option<u64> {
    (wire == WireType::Varint).then_some(())?;
    decode_varint(buf).ok()
}

fn double(wire: WireType, buf: &mut &[u8]) -> Option<f64> {
    (wire == WireType::SixtyFourBit).then_some(())?;
    let (bytes, rest) = buf.split_first_chunk::<8>()?;
    *buf = rest;
    Some(f64::from_le_bytes(*bytes))
}

fn delimited<'a>(wire: WireType, buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    (wire == WireType::LengthDelimited).then_some(())?;
    let len = decode_varint(buf).ok()?;
    let len = usize::try_from(len).ok().filter(|len| *len <= buf.len())?;
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Some(field)
}

fn string<'a>(wire: WireType, buf: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(delimited(wire, buf)?).ok()
}

/// Skips a field no check reads. Groups are left to prost, whose
/// recursion limit counts the nesting they sit in.
fn skip(wire: WireType, tag: u32, buf: &mut &[u8]) -> Option<()> {
    (wire != WireType::StartGroup).then_some(())?;
    skip_field(wire, tag, buf, DecodeContext::default()).ok()
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::DeviceBatch;
    use fleetpulse_proto::{ValidationError, decode_and_validate};
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::convert::Converter;

    const TOPIC: TopicIds<'static> = TopicIds {
        customer: "c1",
        site: "s1",
        device: "d1",
        kind: fleetpulse_proto::TopicKind::Telemetry,
    };

    /// Small limits, so that generated batches cross every one of them.
    const LIMITS: Limits = Limits {
        max_payload_bytes: 2048,
        max_samples: 4,
        max_features_per_sample: 3,
        max_faults_per_sample: 2,
        max_output_units: 1e6,
        max_count: 1000,
    };

    /// The batch this reader makes of `payload`, and the one the prost way
    /// makes (or its error), each with a converter of its own.
    fn both(payload: &[u8]) -> (Option<DeviceBatch>, Result<DeviceBatch, ValidationError>) {
        let catalog = FeatureCatalog::default();
        let fast = parse(&TOPIC, payload, &LIMITS, &catalog)
            .map(|p| Converter::new(catalog.clone()).parsed(&TOPIC, p));
        let slow = decode_and_validate(&TOPIC, payload, &LIMITS)
            .map(|b| Converter::new(catalog.clone()).batch(b));
        (fast, slow)
    }

    fn id(ok: &'static str) -> impl Strategy<Value = String> {
        prop_oneof![8 => Just(ok), 1 => Just("c2"), 1 => Just("")].prop_map(String::from)
    }

    /// A valid amount, the limit's edges included.
    fn amount() -> impl Strategy<Value = f64> {
        prop_oneof![6 => 0.0..100.0f64, 1 => Just(0.0), 1 => Just(-0.0), 1 => Just(1e6)]
    }

    fn count() -> impl Strategy<Value = u32> {
        prop_oneof![6 => 0..10u32, 1 => Just(1000u32)]
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("eco_mode"),
            Just("payload_weighing"),
            Just("remote_diagnostics"),
            Just("basic_mode"),
            Just("é"),
        ]
        .prop_map(String::from)
    }

    /// A sample that passes every check (times close together, so that a
    /// batch of several often goes backwards), and then, one time in three,
    /// one fault from the list `spoil` picks from.
    fn sample() -> impl Strategy<Value = v1::Sample> {
        let operator = prop_oneof![Just(""), Just("op-1"), Just("op-2"), Just("é")];
        let features = prop::collection::vec(
            (name(), any::<u32>()).prop_map(|(feature, active_seconds)| v1::FeatureUsage {
                feature,
                active_seconds,
            }),
            0..4,
        );
        let faults = prop::collection::vec(
            (name(), any::<u32>()).prop_map(|(code, severity)| v1::FaultCode { code, severity }),
            0..3,
        );
        let location =
            prop::option::of(
                (amount(), amount(), amount()).prop_map(|(a, b, c)| v1::Location {
                    latitude: a,
                    longitude: b,
                    altitude_m: c,
                }),
            );
        (
            (1_700_000_000_000i64..1_700_000_000_002, -1..7i32),
            (amount(), amount(), amount(), amount()),
            (count(), count(), operator, features, faults, location),
            0..48u8,
        )
            .prop_map(|((time, state), amounts, rest, spoil)| {
                let mut s = v1::Sample {
                    event_time_ms: time,
                    state,
                    cumulative_operating_hours: amounts.0,
                    cumulative_idle_hours: amounts.1,
                    cumulative_fuel_used_litres: amounts.2,
                    output_units: amounts.3,
                    cycles: rest.0,
                    manual_interventions: rest.1,
                    operator_id: rest.2.into(),
                    features: rest.3,
                    fault_codes: rest.4,
                    location: rest.5,
                };
                let feature = |name: &str| v1::FeatureUsage {
                    feature: name.into(),
                    active_seconds: 1,
                };
                match spoil {
                    0 => s.event_time_ms = 0,
                    1 => s.event_time_ms = -5,
                    2 => s.cumulative_operating_hours = f64::NAN,
                    3 => s.cumulative_idle_hours = -1.0,
                    4 => s.cumulative_fuel_used_litres = f64::INFINITY,
                    5 => s.output_units = -0.5,
                    6 => s.output_units = 1.5e6,
                    7 => s.cycles = 1001,
                    8 => s.manual_interventions = 1001,
                    9 => s.manual_interventions = u32::MAX,
                    10 => s.operator_id = "op/1".into(),
                    11 => s.operator_id = "o".repeat(70),
                    12 => s.features.push(feature("")),
                    13 => s.features.push(feature("bad#name")),
                    14 => s.features = vec![feature("eco_mode"); 4],
                    15 => s.fault_codes = vec![v1::FaultCode::default(); 3],
                    _ => {}
                }
                s
            })
    }

    fn batch() -> impl Strategy<Value = v1::TelemetryBatch> {
        (
            (id("c1"), id("s1"), id("d1")),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(sample(), 0..7),
        )
            .prop_map(
                |((customer, site, device), sequence, unit_epoch, samples)| v1::TelemetryBatch {
                    device_id: device,
                    customer_id: customer,
                    site_id: site,
                    sequence,
                    firmware_version: "1.0".into(),
                    samples,
                    unit_epoch,
                },
            )
    }

    /// Unknown fields of every wire type but groups.
    const UNKNOWN: &[u8] = &[
        0xa0, 0x01, 0x07, // 20, varint 7
        0xaa, 0x01, 0x02, b'h', b'i', // 21, length-delimited "hi"
        0xb5, 0x01, 1, 2, 3, 4, // 22, fixed32
        0xb9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, // 23, fixed64
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A batch, two batches in one payload (proto's merge: the last of
        /// a field wins, repeated ones add up), and unknown fields around
        /// them read to the same readings both ways, or are refused both
        /// ways.
        #[test]
        fn the_reader_and_prost_read_well_formed_payloads_alike(
            a in batch(),
            b in batch(),
            shape in 0..4u8,
        ) {
            let mut payload = a.encode_to_vec();
            match shape {
                1 => payload.extend(b.encode_to_vec()),
                2 => payload.extend(UNKNOWN),
                3 => {
                    payload = [UNKNOWN, &payload, UNKNOWN].concat();
                }
                _ => {}
            }
            let (fast, slow) = both(&payload);
            prop_assert_eq!(fast, slow.ok());
        }

        /// A damaged payload (a byte changed, cut short, or one put in)
        /// that this reader accepts is read as prost reads it.
        #[test]
        fn what_the_reader_takes_of_a_damaged_payload_prost_reads_the_same(
            a in batch(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            damage in 0..3u8,
        ) {
            let mut payload = a.encode_to_vec();
            if payload.is_empty() {
                return Ok(());
            }
            let at = at.index(payload.len());
            match damage {
                0 => payload[at] = byte,
                1 => payload.truncate(at),
                _ => payload.insert(at, byte),
            }
            let (fast, slow) = both(&payload);
            if let Some(fast) = fast {
                prop_assert_eq!(Some(fast), slow.ok());
            }
        }
    }

    /// Groups, which proto3 does not write, and a payload over the size
    /// limit are left to prost, which reads the one and refuses the other.
    #[test]
    fn groups_and_oversized_payloads_go_the_prost_way() {
        let batch = v1::TelemetryBatch {
            device_id: "d1".into(),
            customer_id: "c1".into(),
            site_id: "s1".into(),
            samples: vec![v1::Sample {
                event_time_ms: 1_700_000_000_000,
                ..v1::Sample::default()
            }],
            ..v1::TelemetryBatch::default()
        };
        let mut payload = batch.encode_to_vec();
        let (fast, slow) = both(&payload);
        assert!(fast.is_some());
        assert_eq!(fast, slow.ok());
        // Field 20 as an empty group.
        payload.extend([0xa3, 0x01, 0xa4, 0x01]);
        let (fast, slow) = both(&payload);
        assert!(fast.is_none());
        assert!(slow.is_ok(), "prost reads a group in an unknown field");
        let mut large = batch.clone();
        large.firmware_version = "x".repeat(LIMITS.max_payload_bytes);
        let (fast, slow) = both(&large.encode_to_vec());
        assert!(fast.is_none());
        assert_eq!(slow.unwrap_err().reason(), "too_large");
    }
}
