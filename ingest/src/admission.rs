//! Everything a message must pass before it enters the engine, as one
//! synchronous step: topic, size, decode, ids, customer, watermark. Kept out
//! of the network loop so it is tested directly.

use std::collections::{HashMap, HashSet};

use fleetpulse_engine::operators::device_state::{self, SequenceWindow};
use fleetpulse_engine::{DeviceBatch, FeatureCatalog, Id, Watermark};
use fleetpulse_proto::{Limits, TopicIds, decode_and_validate};

use crate::convert::Converter;
use crate::metrics::RejectReason;

/// A refused message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why, as a counter label.
    pub reason: RejectReason,
    /// Details for the log and the dead-letter record.
    pub detail: String,
}

/// Bounds admission enforces besides the payload limits.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Milliseconds a sample may lie ahead of the wall clock.
    pub max_future_ms: u64,
    /// Most devices per customer.
    pub max_devices_per_customer: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_future_ms: 600_000,
            max_devices_per_customer: 100_000,
        }
    }
}

/// Decides whether a message may enter the engine.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    bounds: Bounds,
    customers: Option<HashSet<String>>,
    converter: Converter,
    watermark: Watermark,
    /// Sequences seen per device: redeliveries and replays are refused here
    /// (the engine deduplicates too, for what slips through).
    sequences: HashMap<Id, SequenceWindow>,
    devices_per_customer: HashMap<Id, usize>,
    sequence_gaps: i64,
}

impl Admission {
    /// `customers`: the known customer ids, or `None` to accept any.
    pub fn new(
        limits: Limits,
        customers: Option<HashSet<String>>,
        catalog: FeatureCatalog,
        lateness_ms: u64,
    ) -> Self {
        Self {
            limits,
            bounds: Bounds::default(),
            customers,
            converter: Converter::new(catalog),
            watermark: Watermark::new(lateness_ms),
            sequences: HashMap::new(),
            devices_per_customer: HashMap::new(),
            sequence_gaps: 0,
        }
    }

    /// Sets the bounds.
    pub fn with_bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// Sequence numbers skipped by devices and not delivered (yet): upstream
    /// loss made visible.
    pub fn sequence_gaps(&self) -> i64 {
        self.sequence_gaps
    }

    /// The watermark after everything admitted so far.
    pub fn watermark(&self) -> &Watermark {
        &self.watermark
    }

    /// Lets the watermark creep forward after `idle_ms` of silence.
    pub fn idle_for(&mut self, idle_ms: u64) {
        self.watermark.idle_for(idle_ms);
    }

    /// Raises the watermark to where the rest of the cluster stands (this
    /// input has been idle); data older than it is late from now on.
    pub fn follow(&mut self, cluster_watermark: fleetpulse_engine::EventTime) {
        self.watermark.raise_to(cluster_watermark);
    }

    /// Checks and converts one message received at wall time `now_ms`.
    pub fn admit(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<DeviceBatch, Rejection> {
        let ids = TopicIds::parse(topic).map_err(|e| Rejection {
            reason: RejectReason::Topic,
            detail: e.to_string(),
        })?;
        let batch = decode_and_validate(&ids, payload, &self.limits).map_err(|e| Rejection {
            reason: RejectReason::of(&e),
            detail: e.to_string(),
        })?;
        if let Some(known) = &self.customers
            && !known.contains(&batch.customer_id)
        {
            return Err(Rejection {
                reason: RejectReason::UnknownCustomer,
                detail: format!(
                    "customer `{}` is not in the customers file",
                    batch.customer_id
                ),
            });
        }
        let batch = self.converter.batch(batch);
        let newest = batch.last_at();
        if newest > now_ms.saturating_add(self.bounds.max_future_ms) {
            return Err(Rejection {
                reason: RejectReason::FutureTimestamp,
                detail: format!(
                    "sample at {newest} ms is {} ms ahead of the clock (limit {} ms)",
                    newest - now_ms,
                    self.bounds.max_future_ms
                ),
            });
        }
        if !self.sequences.contains_key(&batch.device) {
            let count = self
                .devices_per_customer
                .entry(batch.customer.clone())
                .or_default();
            if *count >= self.bounds.max_devices_per_customer {
                return Err(Rejection {
                    reason: RejectReason::DeviceLimit,
                    detail: format!(
                        "customer `{}` already has {} devices, the limit; device `{}` refused",
                        batch.customer, count, batch.device
                    ),
                });
            }
            *count += 1;
        }
        let window = self.sequences.entry(batch.device.clone()).or_default();
        let mut probe = *window;
        let mut gaps = 0;
        match probe.admit(batch.sequence, &mut gaps) {
            device_state::Admission::New => {}
            verdict => {
                return Err(Rejection {
                    reason: RejectReason::SequenceReplayed,
                    detail: format!(
                        "device `{}` sequence {} was {}",
                        batch.device,
                        batch.sequence,
                        if verdict == device_state::Admission::Duplicate {
                            "delivered before"
                        } else {
                            "older than the replay window"
                        }
                    ),
                });
            }
        }
        self.watermark
            .admit(batch.first_at(), batch.last_at())
            .map_err(|late| Rejection {
                reason: RejectReason::TooLate,
                detail: format!(
                    "batch {} of device `{}` starts at {} ms, {} ms behind the watermark; its windows are closed",
                    batch.sequence,
                    batch.device,
                    late.first_at,
                    late.watermark - late.first_at
                ),
            })?;
        // Record the sequence only once the batch is in.
        *self
            .sequences
            .get_mut(&batch.device)
            .expect("inserted above") = probe;
        self.sequence_gaps += gaps;
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::v1;
    use prost::Message;

    const NOW: u64 = 1_000_000;

    fn payload_of(customer: &str, device: &str, sequence: u64, at: i64) -> Vec<u8> {
        v1::TelemetryBatch {
            device_id: device.into(),
            customer_id: customer.into(),
            site_id: "s".into(),
            sequence,
            firmware_version: "1".into(),
            samples: vec![v1::Sample {
                event_time_ms: at,
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn payload(customer: &str, at: i64) -> Vec<u8> {
        payload_of(customer, "d", 1, at)
    }

    fn admission() -> Admission {
        let known = ["c".to_string()].into_iter().collect();
        Admission::new(
            Limits::default(),
            Some(known),
            FeatureCatalog::default(),
            1000,
        )
        .with_bounds(Bounds {
            max_future_ms: 60_000,
            max_devices_per_customer: 2,
        })
    }

    fn reason(a: &mut Admission, topic: &str, payload: &[u8]) -> RejectReason {
        a.admit(topic, payload, NOW).unwrap_err().reason
    }

    #[test]
    fn each_failure_has_its_reason() {
        let mut a = admission();
        let t = "fleet/c/s/d/telemetry";
        assert_eq!(
            reason(&mut a, "fleet/c/s/d", &payload("c", 5000)),
            RejectReason::Topic
        );
        assert_eq!(reason(&mut a, t, b"\x0a\xff"), RejectReason::Decode);
        assert_eq!(
            reason(&mut a, "fleet/x/s/d/telemetry", &payload("c", 5000)),
            RejectReason::IdMismatch
        );
        assert_eq!(
            reason(&mut a, "fleet/x/s/d/telemetry", &payload("x", 5000)),
            RejectReason::UnknownCustomer
        );
        assert_eq!(
            reason(&mut a, t, &payload("c", (NOW + 120_000) as i64)),
            RejectReason::FutureTimestamp
        );
        assert!(a.admit(t, &payload("c", 5000), NOW).is_ok());
        assert_eq!(a.watermark().current(), 4000);
        assert_eq!(
            reason(&mut a, t, &payload("c", 5000)),
            RejectReason::SequenceReplayed
        );
        assert_eq!(
            reason(&mut a, t, &payload_of("c", "d", 2, 3000)),
            RejectReason::TooLate
        );
        // The late batch did not consume its sequence number.
        assert!(a.admit(t, &payload_of("c", "d", 2, 5000), NOW).is_ok());
        assert!(
            a.admit("fleet/c/s/e/telemetry", &payload_of("c", "e", 1, 5000), NOW)
                .is_ok()
        );
        assert_eq!(
            reason(
                &mut a,
                "fleet/c/s/f/telemetry",
                &payload_of("c", "f", 1, 5000)
            ),
            RejectReason::DeviceLimit
        );
    }

    #[test]
    fn sequence_gaps_are_counted() {
        let mut a = admission();
        let t = "fleet/c/s/d/telemetry";
        a.admit(t, &payload_of("c", "d", 1, 5000), NOW).unwrap();
        a.admit(t, &payload_of("c", "d", 4, 6000), NOW).unwrap();
        assert_eq!(a.sequence_gaps(), 2);
    }
}
