//! Ground truth: what the engine must compute from the messages that were
//! sent, per customer and UTC day, by the engine's own definitions.
//!
//! - A sample belongs to the UTC day of its event time.
//! - A device is (customer, device id): two customers may share an id.
//! - Cumulative counters (operating hours, idle hours, fuel) contribute
//!   `value - previous value` of the same device, attributed to the later
//!   sample; a device's first sample contributes 0. A replacement unit
//!   (higher `unit_epoch`) whose counter is below the previous reading
//!   restarted it from 0 at its epoch and contributes its whole value.
//!   A counter that went backwards otherwise contributes 0, and so does one
//!   that gained more than the time allows: more hours than elapsed plus 1,
//!   more litres than 1,000 an elapsed hour plus 100 (elapsed since the
//!   previous sample, or since the epoch for a unit that restarted at 0).
//! - Interval counters (cycles, output units, manual interventions) sum as
//!   they are.
//! - `fault_count`: fault-code entries.
//! - `distinct_operators`: distinct non-empty `operator_id`s.
//! - `active_devices`: devices whose operating-hours contribution that day
//!   is > 0.
//! - `reporting_devices`: devices with at least one sample that day.
//! - `advanced_features_used`: distinct advanced feature names
//!   ([`ADVANCED_FEATURES`]) listed that day.
//! - `samples`: samples; `messages`: batches whose first sample falls on
//!   that day.
//!
//! Days without samples produce no row. Messages of one device must be
//! observed in sequence order (the order [`crate::Fleet::messages`] yields).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use fleetpulse_proto::v1::TelemetryBatch;
use serde::{Deserialize, Serialize};

use crate::SimError;
use crate::calendar::{DAY_MS, EventTime, date_label};
use crate::machine::ADVANCED_FEATURES;

/// One customer's totals over one UTC day; a row of the ground-truth CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayTruth {
    /// Customer id.
    pub customer: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// 00:00 UTC of the day, ms since the epoch.
    pub day_start_ms: EventTime,
    /// Operating hours (increments of the cumulative counter).
    pub operating_hours: f64,
    /// Idle hours (increments of the cumulative counter).
    pub idle_hours: f64,
    /// Fuel used, litres (increments of the cumulative counter).
    pub fuel_litres: f64,
    /// Work cycles.
    pub cycles: u64,
    /// Output units.
    pub output_units: f64,
    /// Manual interventions.
    pub manual_interventions: u64,
    /// Fault-code entries.
    pub fault_count: u64,
    /// Distinct non-empty operator ids.
    pub distinct_operators: u32,
    /// Devices with an operating-hours increment > 0.
    pub active_devices: u32,
    /// Devices with at least one sample.
    pub reporting_devices: u32,
    /// Distinct advanced features listed.
    pub advanced_features_used: u32,
    /// Samples.
    pub samples: u64,
    /// Messages whose first sample falls on the day.
    pub messages: u64,
}

/// Whole-run facts of one customer that KPIs such as time to value need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerFacts {
    /// Customer id.
    pub customer: String,
    /// Activation: event time of the first sample of any of its devices.
    pub activation_ms: EventTime,
    /// Event time of its last sample.
    pub last_sample_ms: EventTime,
    /// Devices that sent at least one sample.
    pub devices_reporting: u32,
    /// Messages observed.
    pub messages: u64,
    /// Samples observed.
    pub samples: u64,
}

/// Accumulates the ground truth of the messages that were sent.
#[derive(Debug, Clone, Default)]
pub struct GroundTruth {
    /// Last cumulative readings per (customer, device).
    devices: HashMap<(String, String), Cumulative>,
    /// Per customer, per UTC day number.
    days: BTreeMap<String, BTreeMap<u64, DayAccumulator>>,
    customers: BTreeMap<String, FactsAccumulator>,
}

#[derive(Debug, Clone, Copy)]
struct Cumulative {
    at: EventTime,
    unit_epoch: u64,
    operating_hours: f64,
    idle_hours: f64,
    fuel_litres: f64,
}

#[derive(Debug, Clone, Default)]
struct DayAccumulator {
    operating_hours: f64,
    idle_hours: f64,
    fuel_litres: f64,
    cycles: u64,
    output_units: f64,
    manual_interventions: u64,
    fault_count: u64,
    operators: HashSet<String>,
    active: HashSet<String>,
    reporting: HashSet<String>,
    advanced: u32,
    samples: u64,
    messages: u64,
}

#[derive(Debug, Clone)]
struct FactsAccumulator {
    activation_ms: EventTime,
    last_sample_ms: EventTime,
    devices: HashSet<String>,
    messages: u64,
    samples: u64,
}

impl GroundTruth {
    /// Adds one message that was sent.
    pub fn observe(&mut self, batch: &TelemetryBatch) {
        let Some(first) = batch.samples.first() else {
            return;
        };
        let device = &batch.device_id;
        let days = match self.days.get_mut(&batch.customer_id) {
            Some(days) => days,
            None => self.days.entry(batch.customer_id.clone()).or_default(),
        };
        days.entry(first.event_time_ms as u64 / DAY_MS)
            .or_default()
            .messages += 1;
        let key = (batch.customer_id.clone(), device.clone());
        let mut previous = self.devices.get(&key).copied();
        for sample in &batch.samples {
            let at = sample.event_time_ms as EventTime;
            let acc = days.entry(at / DAY_MS).or_default();
            let now = Cumulative {
                at,
                unit_epoch: batch.unit_epoch,
                operating_hours: sample.cumulative_operating_hours,
                idle_hours: sample.cumulative_idle_hours,
                fuel_litres: sample.cumulative_fuel_used_litres,
            };
            if let Some(before) = previous {
                let new_unit = now.unit_epoch > before.unit_epoch;
                let hours_since = |t: EventTime| at.saturating_sub(t) as f64 / 3_600_000.0;
                let since_last = hours_since(before.at);
                // A new unit's meter counts from its start, but no further
                // back than the old unit's last reading.
                let since_epoch = hours_since(batch.unit_epoch.saturating_mul(1000).max(before.at));
                // The most a meter gains: (per elapsed hour, slack).
                let delta = |now: f64, before: f64, (per_hour, slack): (f64, f64)| {
                    let (gain, hours) = if now >= before {
                        (now - before, since_last)
                    } else if new_unit {
                        (now, since_epoch)
                    } else {
                        return 0.0;
                    };
                    if gain > hours * per_hour + slack {
                        0.0
                    } else {
                        gain
                    }
                };
                let (hours, litres) = ((1.0, 1.0), (1_000.0, 100.0));
                let operating = delta(now.operating_hours, before.operating_hours, hours);
                acc.operating_hours += operating;
                acc.idle_hours += delta(now.idle_hours, before.idle_hours, hours);
                acc.fuel_litres += delta(now.fuel_litres, before.fuel_litres, litres);
                if operating > 0.0 && !acc.active.contains(device) {
                    acc.active.insert(device.clone());
                }
            }
            previous = Some(now);
            acc.cycles += u64::from(sample.cycles);
            acc.output_units += sample.output_units;
            acc.manual_interventions += u64::from(sample.manual_interventions);
            acc.fault_count += sample.fault_codes.len() as u64;
            if !sample.operator_id.is_empty() && !acc.operators.contains(&sample.operator_id) {
                acc.operators.insert(sample.operator_id.clone());
            }
            if !acc.reporting.contains(device) {
                acc.reporting.insert(device.clone());
            }
            for f in &sample.features {
                if let Some(i) = ADVANCED_FEATURES.iter().position(|a| *a == f.feature) {
                    acc.advanced |= 1 << i;
                }
            }
            acc.samples += 1;
        }
        if let Some(last) = previous {
            self.devices.insert(key, last);
        }

        let first_at = first.event_time_ms as EventTime;
        let last_at = batch
            .samples
            .last()
            .map_or(first_at, |s| s.event_time_ms as EventTime);
        let facts = match self.customers.get_mut(&batch.customer_id) {
            Some(facts) => facts,
            None => self
                .customers
                .entry(batch.customer_id.clone())
                .or_insert_with(|| FactsAccumulator {
                    activation_ms: first_at,
                    last_sample_ms: last_at,
                    devices: HashSet::new(),
                    messages: 0,
                    samples: 0,
                }),
        };
        facts.activation_ms = facts.activation_ms.min(first_at);
        facts.last_sample_ms = facts.last_sample_ms.max(last_at);
        if !facts.devices.contains(device) {
            facts.devices.insert(device.clone());
        }
        facts.messages += 1;
        facts.samples += batch.samples.len() as u64;
    }

    /// One row per customer per UTC day with samples, ordered by customer id,
    /// then day.
    pub fn rows(&self) -> Vec<DayTruth> {
        let mut rows = Vec::new();
        for (customer, days) in &self.days {
            for (&day, acc) in days {
                if acc.samples == 0 {
                    continue;
                }
                rows.push(DayTruth {
                    customer: customer.clone(),
                    day: date_label(day),
                    day_start_ms: day * DAY_MS,
                    operating_hours: acc.operating_hours,
                    idle_hours: acc.idle_hours,
                    fuel_litres: acc.fuel_litres,
                    cycles: acc.cycles,
                    output_units: acc.output_units,
                    manual_interventions: acc.manual_interventions,
                    fault_count: acc.fault_count,
                    distinct_operators: acc.operators.len() as u32,
                    active_devices: acc.active.len() as u32,
                    reporting_devices: acc.reporting.len() as u32,
                    advanced_features_used: acc.advanced.count_ones(),
                    samples: acc.samples,
                    messages: acc.messages,
                });
            }
        }
        rows
    }

    /// Whole-run facts per customer, ordered by customer id.
    pub fn customers(&self) -> Vec<CustomerFacts> {
        self.customers
            .iter()
            .map(|(customer, f)| CustomerFacts {
                customer: customer.clone(),
                activation_ms: f.activation_ms,
                last_sample_ms: f.last_sample_ms,
                devices_reporting: f.devices.len() as u32,
                messages: f.messages,
                samples: f.samples,
            })
            .collect()
    }

    /// Activation time of a customer: its first sample, if any was observed.
    pub fn activation(&self, customer: &str) -> Option<EventTime> {
        self.customers.get(customer).map(|f| f.activation_ms)
    }

    /// Writes [`GroundTruth::rows`] as CSV, with the header
    /// `customer,day,day_start_ms,operating_hours,...,samples,messages`.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<(), SimError> {
        write_rows(path.as_ref(), &self.rows())
    }

    /// Reads a file [`GroundTruth::write_csv`] wrote.
    pub fn read_csv(path: impl AsRef<Path>) -> Result<Vec<DayTruth>, SimError> {
        read_rows(path.as_ref())
    }

    /// Writes [`GroundTruth::customers`] as CSV.
    pub fn write_customers_csv(&self, path: impl AsRef<Path>) -> Result<(), SimError> {
        write_rows(path.as_ref(), &self.customers())
    }

    /// Reads a file [`GroundTruth::write_customers_csv`] wrote.
    pub fn read_customers_csv(path: impl AsRef<Path>) -> Result<Vec<CustomerFacts>, SimError> {
        read_rows(path.as_ref())
    }
}

fn write_rows<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), SimError> {
    let csv_error = |source| SimError::GroundTruthCsv {
        path: path.to_owned(),
        source,
    };
    let mut writer = csv::Writer::from_path(path).map_err(csv_error)?;
    for row in rows {
        writer.serialize(row).map_err(csv_error)?;
    }
    writer.flush().map_err(|source| SimError::GroundTruthIo {
        path: path.to_owned(),
        source,
    })
}

fn read_rows<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, SimError> {
    let csv_error = |source| SimError::GroundTruthCsv {
        path: path.to_owned(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(csv_error)?;
    reader
        .deserialize()
        .collect::<Result<Vec<T>, _>>()
        .map_err(csv_error)
}

#[cfg(test)]
mod tests {
    use fleetpulse_proto::v1::{FaultCode, FeatureUsage, MachineState, Sample};

    use super::*;
    use crate::calendar::{HOUR_MS, MINUTE_MS};

    const DAY0: u64 = 1_767_571_200_000; // 2026-01-05

    fn sample(at: u64, hours: f64, idle: f64, fuel: f64, cycles: u32, operator: &str) -> Sample {
        Sample {
            event_time_ms: at as i64,
            state: MachineState::Running as i32,
            cumulative_operating_hours: hours,
            cumulative_idle_hours: idle,
            cumulative_fuel_used_litres: fuel,
            cycles,
            output_units: f64::from(cycles) * 2.0,
            operator_id: operator.into(),
            ..Sample::default()
        }
    }

    fn batch(customer: &str, device: &str, sequence: u64, samples: Vec<Sample>) -> TelemetryBatch {
        TelemetryBatch {
            device_id: device.into(),
            customer_id: customer.into(),
            site_id: "s".into(),
            sequence,
            unit_epoch: 0,
            firmware_version: "1".into(),
            samples,
        }
    }

    /// Two devices of one customer, one of another, over a midnight; every
    /// expected number below is worked out by hand.
    fn tiny() -> GroundTruth {
        let late = DAY0 + 23 * HOUR_MS + 30 * MINUTE_MS; // 2026-01-05 23:30
        let next = DAY0 + DAY_MS; // 2026-01-06 00:00
        let mut truth = GroundTruth::default();
        // a1: first sample (contributes nothing but counts), then +0.5 h.
        let mut s1 = sample(late, 100.0, 10.0, 1000.0, 3, "");
        s1.state = MachineState::Off as i32;
        let mut s2 = sample(late + 10 * MINUTE_MS, 100.5, 10.1, 1008.0, 4, "op-1");
        s2.features = vec![
            FeatureUsage {
                feature: "eco_mode".into(),
                active_seconds: 60,
            },
            FeatureUsage {
                feature: "lights".into(),
                active_seconds: 60,
            },
        ];
        s2.fault_codes = vec![FaultCode {
            code: "X".into(),
            severity: 2,
        }];
        truth.observe(&batch("acme", "a1", 1, vec![s1, s2]));
        // a1 again, crossing midnight: +0.25 h on day 0, +0 on day 1.
        let mut s3 = sample(late + 20 * MINUTE_MS, 100.75, 10.1, 1012.0, 1, "op-2");
        s3.manual_interventions = 2;
        let mut s4 = sample(next, 100.75, 10.1, 1012.0, 0, "");
        s4.state = MachineState::Off as i32;
        s4.features = vec![FeatureUsage {
            feature: "payload_weighing".into(),
            active_seconds: 5,
        }];
        truth.observe(&batch("acme", "a1", 2, vec![s3, s4]));
        // a2: first message on day 1 only: contributes nothing, reports.
        truth.observe(&batch(
            "acme",
            "a2",
            1,
            vec![sample(next, 50.0, 5.0, 400.0, 7, "op-1")],
        ));
        // a2: +1 h, +0.5 idle, +20 l on day 1.
        let s5 = sample(next + HOUR_MS, 51.0, 5.5, 420.0, 0, "op-1");
        truth.observe(&batch("acme", "a2", 2, vec![s5]));
        // b1 of another customer.
        truth.observe(&batch(
            "beta",
            "b1",
            1,
            vec![sample(next, 1.0, 0.0, 0.0, 0, "")],
        ));
        truth
    }

    #[test]
    fn computes_a_tiny_fleet_by_hand() {
        let rows = tiny().rows();
        assert_eq!(rows.len(), 3);
        let day0 = &rows[0];
        assert_eq!(
            (day0.customer.as_str(), day0.day.as_str()),
            ("acme", "2026-01-05")
        );
        assert_eq!(day0.day_start_ms, DAY0);
        assert_eq!(day0.operating_hours, 0.75);
        assert!((day0.idle_hours - 0.1).abs() < 1e-9);
        assert_eq!(day0.fuel_litres, 12.0);
        assert_eq!(day0.cycles, 3 + 4 + 1);
        assert_eq!(day0.output_units, 16.0);
        assert_eq!(day0.manual_interventions, 2);
        assert_eq!(day0.fault_count, 1);
        assert_eq!(day0.distinct_operators, 2);
        assert_eq!(day0.active_devices, 1);
        assert_eq!(day0.reporting_devices, 1);
        assert_eq!(day0.advanced_features_used, 1, "eco_mode; lights is basic");
        assert_eq!(day0.samples, 3);
        assert_eq!(day0.messages, 2, "both a1 messages start on day 0");

        let day1 = &rows[1];
        assert_eq!(
            (day1.customer.as_str(), day1.day.as_str()),
            ("acme", "2026-01-06")
        );
        assert_eq!(day1.operating_hours, 1.0);
        assert_eq!(day1.idle_hours, 0.5);
        assert_eq!(day1.fuel_litres, 20.0);
        assert_eq!(day1.cycles, 7);
        assert_eq!(day1.fault_count, 0);
        assert_eq!(day1.distinct_operators, 1);
        assert_eq!(
            day1.active_devices, 1,
            "a1 added 0 h, a2's first sample adds nothing"
        );
        assert_eq!(day1.reporting_devices, 2);
        assert_eq!(day1.advanced_features_used, 1, "payload_weighing");
        assert_eq!(day1.samples, 3);
        assert_eq!(
            day1.messages, 2,
            "a2's two messages; a1's second started on day 0"
        );

        let beta = &rows[2];
        assert_eq!(
            (beta.customer.as_str(), beta.operating_hours, beta.samples),
            ("beta", 0.0, 1)
        );
    }

    #[test]
    fn keeps_activation_per_customer() {
        let truth = tiny();
        let late = DAY0 + 23 * HOUR_MS + 30 * MINUTE_MS;
        assert_eq!(truth.activation("acme"), Some(late));
        assert_eq!(truth.activation("beta"), Some(DAY0 + DAY_MS));
        assert_eq!(truth.activation("nobody"), None);
        let facts = truth.customers();
        assert_eq!(facts[0].devices_reporting, 2);
        assert_eq!(facts[0].messages, 4);
        assert_eq!(facts[0].samples, 6);
    }

    #[test]
    fn csv_round_trips_with_the_documented_header() {
        let truth = tiny();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.csv");
        truth.write_csv(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            "customer,day,day_start_ms,operating_hours,idle_hours,fuel_litres,cycles,\
             output_units,manual_interventions,fault_count,distinct_operators,active_devices,\
             reporting_devices,advanced_features_used,samples,messages"
        );
        assert_eq!(GroundTruth::read_csv(&path).unwrap(), truth.rows());

        let facts = dir.path().join("customers.csv");
        truth.write_customers_csv(&facts).unwrap();
        assert_eq!(
            GroundTruth::read_customers_csv(&facts).unwrap(),
            truth.customers()
        );
    }

    #[test]
    fn names_the_file_when_reading_fails() {
        let err = GroundTruth::read_csv("/nonexistent/truth.csv").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/truth.csv"), "{err}");
    }
}
