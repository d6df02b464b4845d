//! AEMP readings of one machine -> the telemetry messages the MQTT
//! machines send, so they take the same admission, WAL and engine path.
//!
//! - Readings are merged by `datetime`: one sample per distinct time, one
//!   message per sample. A message's content then depends only on the
//!   readings up to its time, so a re-poll after a crash rebuilds the same
//!   messages under the same sequences, and admission refuses the ones
//!   already in as duplicates.
//! - Running totals (operating hours, idle hours, fuel) carry forward to
//!   samples that lack them, relative to the element's first value
//!   ([`ElementPosition::base`]); the engine takes the increments.
//! - `CumulativeLoadCount` becomes the cycles since the previous count; a
//!   machine's first count is the baseline (0 cycles).
//! - `Faults` become fault codes; `EngineStatus` the machine state
//!   (running, or off), carried forward.
//! - A reading at or before the element's position was taken before:
//!   dropped (dedup by machine, element, `datetime`). A running total below
//!   its previous value (`counter_backwards`), one that gained more than
//!   the time since it allows (`counter_jump`, the engine's bounds), or a
//!   time beyond the clock's allowance (`future_datetime`) is refused and
//!   counted; the next plausible reading goes on from the last good value,
//!   and two readings in a row that agree with each other and not with it
//!   are a new level of the meter (a replaced or reset one).
//! - More faults at one time than a message may carry are dropped beyond
//!   the limit and counted (`too_many_faults`).
//!
//! Synchronous, no I/O: the poller calls it between the HTTP requests and
//! the intake.

use std::collections::BTreeMap;

use fleetpulse_engine::MostGain;
use fleetpulse_proto::v1;

use super::config::Element;
use super::parse::{Reading, Value};
use super::position::{ElementPosition, MachinePosition, Suspect};

/// Firmware version the messages carry: where they came from.
pub const FIRMWARE: &str = "aemp";

/// Most faults one sample carries (`max_faults_per_sample`, not
/// configurable): a message with more is refused whole by validation,
/// which would lose the sample's other readings too.
pub fn max_faults() -> usize {
    fleetpulse_proto::Limits::default().max_faults_per_sample
}

const HOUR_MS: f64 = 3_600_000.0;

/// No machine loads more than once a second; 100 for a coarse counter
/// (hours and fuel take the engine's bounds, docs/KPIS.md, implausible
/// gains).
const LOADS: MostGain = MostGain {
    per_hour: 3_600.0,
    slack: 100.0,
};

/// The bound of an element's running total; `None` for one that is not.
fn most_gain(element: Element) -> Option<MostGain> {
    use fleetpulse_engine::operators::device_state::{HOURS, LITRES};
    match element {
        Element::CumulativeOperatingHours | Element::CumulativeIdleHours => Some(HOURS),
        Element::CumulativeFuelUsed => Some(LITRES),
        Element::CumulativeLoadCount => Some(LOADS),
        Element::EngineStatus | Element::Faults => None,
    }
}

/// Whether a meter bounded by `most` at `from` can read `to` (time, value)
/// later.
fn allows(most: MostGain, from: (u64, f64), to: (u64, f64)) -> bool {
    let hours = to.0.saturating_sub(from.0) as f64 / HOUR_MS;
    to.1 >= from.1 && to.1 - from.1 <= hours * most.per_hour + most.slack
}

/// Takes a running total's reading into its element: the gain since the
/// last good value, or why it is refused. A refused reading becomes the
/// suspect; a next reading that agrees with the suspect and not with the
/// last good value confirms a new level, from which the meter goes on
/// (the step to it counts nothing, as in the engine).
fn take_total(
    slot: &mut ElementPosition,
    most: MostGain,
    at: u64,
    total: f64,
) -> Result<f64, Refusal> {
    let Some(last) = slot.value else {
        slot.base = Some(total);
        slot.value = Some(total);
        slot.value_at = Some(at);
        return Ok(0.0);
    };
    let last_at = slot.value_at.unwrap_or(slot.at);
    let from = match slot.suspect {
        _ if allows(most, (last_at, last), (at, total)) => last,
        Some(s) if allows(most, (s.at, s.value), (at, total)) => {
            let base = slot.base.unwrap_or(last);
            slot.base = Some(base + (s.value - last));
            s.value
        }
        _ => {
            slot.suspect = Some(Suspect { at, value: total });
            return Err(if total < last {
                Refusal::CounterBackwards
            } else {
                Refusal::CounterJump
            });
        }
    };
    slot.suspect = None;
    slot.value = Some(total);
    slot.value_at = Some(at);
    Ok(total - from)
}

/// Where a machine's readings belong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Customer id.
    pub customer: String,
    /// Site id.
    pub site: String,
    /// Device id.
    pub device: String,
}

/// Why a reading was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// A running total below its previous value.
    CounterBackwards,
    /// A running total that gained more than the time since allows.
    CounterJump,
    /// A fault beyond [`max_faults`] at one time.
    TooManyFaults,
    /// A `datetime` beyond the wall clock plus `limits.max_future`.
    FutureDatetime,
}

/// What [`convert`] made of a machine's readings.
#[derive(Debug, Default, PartialEq)]
pub struct Converted {
    /// One message per sample, in time order, sequences from the position.
    pub batches: Vec<v1::TelemetryBatch>,
    /// Readings taken into the samples.
    pub taken: u64,
    /// Readings refused, with why.
    pub refused: Vec<(Refusal, u64)>,
}

/// Turns `readings` (any order, of the elements polled) into messages,
/// advancing `position`; `epoch`: the unit epoch of the source's messages;
/// `latest_ms`: the newest `datetime` accepted.
pub fn convert(
    target: &Target,
    epoch: u64,
    position: &mut MachinePosition,
    readings: Vec<(Element, Reading)>,
    latest_ms: u64,
) -> Converted {
    let mut out = Converted::default();
    // What was taken before this call: a reading at or before it is a
    // repeat (several faults may share one time, so not the running one).
    let before: BTreeMap<Element, u64> = Element::ALL
        .into_iter()
        .filter_map(|e| position.elements.get(e.as_str()).map(|p| (e, p.at)))
        .collect();
    let mut by_time: BTreeMap<u64, Vec<(Element, Value)>> = BTreeMap::new();
    let max_faults = max_faults();
    let mut future = 0;
    let mut refused: BTreeMap<Refusal, u64> = BTreeMap::new();
    for (element, reading) in readings {
        if before.get(&element).is_some_and(|at| reading.at <= *at) {
            continue;
        }
        if reading.at > latest_ms {
            future += 1;
            continue;
        }
        by_time
            .entry(reading.at)
            .or_default()
            .push((element, reading.value));
    }
    for (at, mut readings) in by_time {
        readings.sort_by_key(|(e, _)| *e);
        let mut sample = v1::Sample {
            event_time_ms: at as i64,
            ..v1::Sample::default()
        };
        let mut taken = 0;
        for (element, value) in readings {
            let slot = position
                .elements
                .entry(element.as_str().to_owned())
                .or_insert(ElementPosition {
                    at,
                    ..ElementPosition::default()
                });
            match (value, most_gain(element)) {
                (Value::Total(total), Some(most)) => match take_total(slot, most, at, total) {
                    Ok(gained) => {
                        if element == Element::CumulativeLoadCount {
                            sample.cycles = sample
                                .cycles
                                .saturating_add(gained.min(f64::from(u32::MAX)) as u32);
                        }
                    }
                    Err(refusal) => {
                        *refused.entry(refusal).or_default() += 1;
                        slot.at = slot.at.max(at);
                        continue;
                    }
                },
                (Value::Running(running), _) => position.running = Some(running),
                (Value::Fault { code, severity }, _) => {
                    if sample.fault_codes.len() >= max_faults {
                        *refused.entry(Refusal::TooManyFaults).or_default() += 1;
                        continue;
                    }
                    sample.fault_codes.push(v1::FaultCode { code, severity });
                }
                // A value of the wrong kind for its element: nothing to take.
                (Value::Total(_), None) => continue,
            }
            let slot = position
                .elements
                .get_mut(element.as_str())
                .expect("inserted above");
            slot.at = slot.at.max(at);
            taken += 1;
        }
        if taken == 0 {
            continue;
        }
        let total = |element: Element| {
            position
                .elements
                .get(element.as_str())
                .and_then(|p| Some(p.value? - p.base?))
                .unwrap_or(0.0)
        };
        sample.cumulative_operating_hours = total(Element::CumulativeOperatingHours);
        sample.cumulative_idle_hours = total(Element::CumulativeIdleHours);
        sample.cumulative_fuel_used_litres = total(Element::CumulativeFuelUsed);
        sample.state = match position.running {
            Some(true) => v1::MachineState::Running,
            Some(false) => v1::MachineState::Off,
            None => v1::MachineState::Unspecified,
        } as i32;
        position.sequence += 1;
        out.taken += taken;
        out.batches.push(v1::TelemetryBatch {
            device_id: target.device.clone(),
            customer_id: target.customer.clone(),
            site_id: target.site.clone(),
            sequence: position.sequence,
            firmware_version: FIRMWARE.into(),
            samples: vec![sample],
            unit_epoch: epoch,
        });
    }
    if future > 0 {
        refused.insert(Refusal::FutureDatetime, future);
    }
    out.refused = refused.into_iter().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_571_200_000;
    const MIN: u64 = 60_000;

    fn target() -> Target {
        Target {
            customer: "c1".into(),
            site: "s1".into(),
            device: "d1".into(),
        }
    }

    fn total(element: Element, minute: u64, value: f64) -> (Element, Reading) {
        (
            element,
            Reading {
                at: T0 + minute * MIN,
                value: Value::Total(value),
            },
        )
    }

    fn hours(batches: &[v1::TelemetryBatch]) -> Vec<f64> {
        batches
            .iter()
            .map(|b| b.samples[0].cumulative_operating_hours)
            .collect()
    }

    #[test]
    fn readings_merge_by_time_into_one_message_each() {
        use Element::*;
        let mut position = MachinePosition::default();
        let readings = vec![
            total(CumulativeOperatingHours, 10, 100.5),
            total(CumulativeOperatingHours, 0, 100.0),
            total(CumulativeLoadCount, 0, 40.0),
            total(CumulativeLoadCount, 10, 47.0),
            (
                EngineStatus,
                Reading {
                    at: T0,
                    value: Value::Running(true),
                },
            ),
            (
                Faults,
                Reading {
                    at: T0 + 10 * MIN,
                    value: Value::Fault {
                        code: "E1".into(),
                        severity: 3,
                    },
                },
            ),
            (
                Faults,
                Reading {
                    at: T0 + 10 * MIN,
                    value: Value::Fault {
                        code: "E2".into(),
                        severity: 1,
                    },
                },
            ),
        ];
        let out = convert(&target(), 5, &mut position, readings, u64::MAX);
        assert_eq!(out.taken, 7);
        let b = &out.batches;
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].sequence, b[1].sequence, b[0].unit_epoch), (1, 2, 5));
        assert_eq!(hours(b), [0.0, 0.5]);
        assert_eq!((b[0].samples[0].cycles, b[1].samples[0].cycles), (0, 7));
        assert_eq!(b[1].samples[0].fault_codes.len(), 2);
        // Engine status carries forward.
        assert_eq!(b[1].samples[0].state, v1::MachineState::Running as i32);
        assert_eq!(position.sequence, 2);
    }

    #[test]
    fn a_repoll_takes_only_what_is_new_and_a_crash_repoll_rebuilds_the_same_messages() {
        use Element::CumulativeOperatingHours as H;
        let first = vec![total(H, 0, 10.0), total(H, 10, 11.0)];
        let mut position = MachinePosition::default();
        let saved = position.clone();
        let a = convert(&target(), 1, &mut position, first.clone(), u64::MAX);
        // Not saved (crash): the same readings and one more, from the old
        // position, give the same first messages.
        let mut again = saved;
        let mut more = first.clone();
        more.push(total(H, 20, 12.0));
        let b = convert(&target(), 1, &mut again, more.clone(), u64::MAX);
        assert_eq!(a.batches[..], b.batches[..2]);
        // Saved: the overlap is dropped, the new reading goes on.
        let c = convert(&target(), 1, &mut position, more, u64::MAX);
        assert_eq!(c.batches.len(), 1);
        assert_eq!(c.batches[0].sequence, 3);
        assert_eq!(hours(&c.batches), [2.0]);
    }

    #[test]
    fn backwards_and_future_readings_are_refused_and_counted() {
        use Element::CumulativeOperatingHours as H;
        let mut position = MachinePosition::default();
        let readings = vec![
            total(H, 0, 10.0),
            total(H, 10, 9.0),
            total(H, 20, 11.0),
            total(H, 10_000, 12.0),
        ];
        let out = convert(&target(), 1, &mut position, readings, T0 + 60 * MIN);
        assert_eq!(hours(&out.batches), [0.0, 1.0]);
        assert_eq!(
            out.refused,
            [(Refusal::CounterBackwards, 1), (Refusal::FutureDatetime, 1)]
        );
    }

    #[test]
    fn an_element_that_starts_late_adds_no_jump() {
        use Element::{CumulativeFuelUsed as F, CumulativeOperatingHours as H};
        let mut position = MachinePosition::default();
        let out = convert(
            &target(),
            1,
            &mut position,
            vec![total(H, 0, 10.0), total(H, 10, 11.0), total(F, 10, 5000.0)],
            u64::MAX,
        );
        let fuel: Vec<f64> = out
            .batches
            .iter()
            .map(|b| b.samples[0].cumulative_fuel_used_litres)
            .collect();
        assert_eq!(fuel, [0.0, 0.0]);
        let out = convert(
            &target(),
            1,
            &mut position,
            vec![total(F, 20, 5012.0)],
            u64::MAX,
        );
        assert_eq!(out.batches[0].samples[0].cumulative_fuel_used_litres, 12.0);
        assert_eq!(out.batches[0].samples[0].cumulative_operating_hours, 1.0);
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn a_spike_is_refused_and_the_next_reading_goes_on_from_the_last_good_one() {
        use Element::{CumulativeLoadCount as L, CumulativeOperatingHours as H};
        let mut position = MachinePosition::default();
        let out = convert(
            &target(),
            1,
            &mut position,
            vec![
                total(H, 0, 100.0),
                total(L, 0, 40.0),
                total(H, 10, 99_999.0),
                total(L, 10, 99_999.0),
            ],
            u64::MAX,
        );
        assert_eq!(out.refused, [(Refusal::CounterJump, 2)]);
        assert_eq!(hours(&out.batches), [0.0]);
        // The next poll (the position saved in between) goes on from 100.
        let out = convert(
            &target(),
            1,
            &mut position,
            vec![total(H, 20, 100.4), total(L, 20, 47.0), total(H, 30, 100.5)],
            u64::MAX,
        );
        assert!(out.refused.is_empty(), "{:?}", out.refused);
        assert!(close(&hours(&out.batches), &[0.4, 0.5]));
        assert_eq!(out.batches[0].samples[0].cycles, 7);
    }

    #[test]
    fn two_readings_that_agree_on_a_new_level_are_a_changed_meter() {
        use Element::CumulativeOperatingHours as H;
        let mut position = MachinePosition::default();
        let readings = vec![
            total(H, 0, 100.0),
            total(H, 10, 5_000.0),
            total(H, 20, 5_000.1),
            total(H, 30, 5_000.2),
        ];
        let out = convert(&target(), 1, &mut position, readings, u64::MAX);
        assert_eq!(out.refused, [(Refusal::CounterJump, 1)]);
        assert!(close(&hours(&out.batches), &[0.0, 0.1, 0.2]));
    }

    /// A position an earlier build left with a spike as the last value
    /// (value 99,999 over a true 100): it heals instead of refusing every
    /// later reading as backwards.
    #[test]
    fn a_position_holding_a_spike_heals() {
        use Element::CumulativeOperatingHours as H;
        let mut position = MachinePosition::default();
        position.elements.insert(
            H.as_str().into(),
            ElementPosition {
                at: T0,
                value: Some(99_999.0),
                base: Some(99.0),
                ..ElementPosition::default()
            },
        );
        let readings = vec![
            total(H, 10, 100.2),
            total(H, 20, 100.3),
            total(H, 30, 100.5),
        ];
        let out = convert(&target(), 1, &mut position, readings, u64::MAX);
        assert_eq!(out.refused, [(Refusal::CounterBackwards, 1)]);
        // Sent relative to the base: the meter goes on from what the
        // engine last saw (99,900), by the true gains.
        assert!(close(&hours(&out.batches), &[99_900.1, 99_900.3]));
    }

    #[test]
    fn faults_beyond_the_limit_of_a_sample_are_dropped_and_counted() {
        let mut position = MachinePosition::default();
        let mut readings = vec![total(Element::CumulativeOperatingHours, 0, 1.0)];
        readings.extend((0..max_faults() + 6).map(|i| {
            (
                Element::Faults,
                Reading {
                    at: T0,
                    value: Value::Fault {
                        code: format!("E{i}"),
                        severity: 1,
                    },
                },
            )
        }));
        let out = convert(&target(), 1, &mut position, readings, u64::MAX);
        assert_eq!(out.refused, [(Refusal::TooManyFaults, 6)]);
        let faults = &out.batches[0].samples[0].fault_codes;
        assert_eq!(faults.len(), max_faults());
        assert_eq!(
            (faults[0].code.as_str(), faults[63].code.as_str()),
            ("E0", "E63")
        );
        assert_eq!(out.taken, 1 + max_faults() as u64);
    }
}
