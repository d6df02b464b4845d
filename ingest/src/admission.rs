//! Everything a message must pass before it enters the engine, as one
//! synchronous step: topic, size, decode, ids, customer, watermark. Kept out
//! of the network loop so it is tested directly.

use std::collections::HashSet;

use fleetpulse_engine::{DeviceBatch, FeatureCatalog, Watermark};
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

/// Decides whether a message may enter the engine.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    customers: Option<HashSet<String>>,
    converter: Converter,
    watermark: Watermark,
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
            customers,
            converter: Converter::new(catalog),
            watermark: Watermark::new(lateness_ms),
        }
    }

    /// The watermark after everything admitted so far.
    pub fn watermark(&self) -> &Watermark {
        &self.watermark
    }

    /// Lets the watermark creep forward after `idle_ms` of silence.
    pub fn idle_for(&mut self, idle_ms: u64) {
        self.watermark.idle_for(idle_ms);
    }

    /// Checks and converts one message.
    pub fn admit(&mut self, topic: &str, payload: &[u8]) -> Result<DeviceBatch, Rejection> {
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
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::v1;
    use prost::Message;

    fn payload(customer: &str, at: i64) -> Vec<u8> {
        v1::TelemetryBatch {
            device_id: "d".into(),
            customer_id: customer.into(),
            site_id: "s".into(),
            sequence: 1,
            firmware_version: "1".into(),
            samples: vec![v1::Sample {
                event_time_ms: at,
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn admission() -> Admission {
        let known = ["c".to_string()].into_iter().collect();
        Admission::new(
            Limits::default(),
            Some(known),
            FeatureCatalog::default(),
            1000,
        )
    }

    #[test]
    fn each_failure_has_its_reason() {
        let mut a = admission();
        let reason = |a: &mut Admission, topic: &str, payload: &[u8]| {
            a.admit(topic, payload).unwrap_err().reason
        };
        assert_eq!(
            reason(&mut a, "fleet/c/s/d", &payload("c", 5000)),
            RejectReason::Topic
        );
        assert_eq!(
            reason(&mut a, "fleet/c/s/d/telemetry", b"\x0a\xff"),
            RejectReason::Decode
        );
        assert_eq!(
            reason(&mut a, "fleet/x/s/d/telemetry", &payload("c", 5000)),
            RejectReason::IdMismatch
        );
        assert_eq!(
            reason(&mut a, "fleet/x/s/d/telemetry", &payload("x", 5000)),
            RejectReason::UnknownCustomer
        );
        assert!(
            a.admit("fleet/c/s/d/telemetry", &payload("c", 5000))
                .is_ok()
        );
        assert_eq!(a.watermark().current(), 4000);
        assert_eq!(
            reason(&mut a, "fleet/c/s/d/telemetry", &payload("c", 3000)),
            RejectReason::TooLate
        );
    }
}
