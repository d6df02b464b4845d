//! What fleet to simulate.

use serde::{Deserialize, Serialize};

use crate::SimError;
use crate::calendar::{DAY_MS, EventTime, MINUTE_MS};

/// 2026-01-05T00:00:00Z, a Monday: weeks in the simulation start on Monday.
pub const DEFAULT_START_MS: EventTime = 1_767_571_200_000;

/// The shape of a simulated fleet. Same spec (seed included) gives the same
/// fleet and a byte-identical message stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSpec {
    /// Customers (accounts). Customer `i` gets profile `i % 6`, see
    /// [`crate::Profile::for_customer`].
    pub customers: usize,
    /// Devices in the whole fleet, split evenly over the customers; the first
    /// `devices % customers` customers get one more. Includes devices that a
    /// slow-onboarding customer bought but never brings online.
    pub devices: usize,
    /// Days of telemetry to simulate.
    pub days: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Event time of the first possible sample (ms since the epoch, UTC);
    /// day 0 of the simulation starts here.
    pub start: EventTime,
    /// Time between two samples of a device (ms); every sample lies on the
    /// grid `start + k * sample_interval_ms`.
    pub sample_interval_ms: u64,
    /// Samples per MQTT message. The default (6 samples of 10 minutes) is one
    /// message per device per hour.
    pub samples_per_batch: u32,
    /// Devices whose telematics unit is replaced halfway through their time
    /// online: from then on they send under a new, higher unit epoch with
    /// the sequence back at 1, every second one with its cumulative counters
    /// restarted from 0 (the others carry on from the machine's meters).
    /// Spread evenly over the fleet by device index.
    pub unit_replacements: usize,
    /// Devices that lose coverage once, for 6 to 72 hours, buffer their
    /// messages and upload them on reconnect (in order, newest first or
    /// shuffled, interleaved with the rest of the fleet's live traffic);
    /// spread evenly over the fleet by device index. See
    /// [`crate::coverage`].
    #[serde(default)]
    pub store_and_forward: usize,
    /// CS activities planted with known effects on usage
    /// ([`crate::activity`]); none by default, and then the stream is
    /// exactly what it is without them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<crate::activity::PlantedActivity>,
    /// Every customer's renewal falls late in the simulation, between 75%
    /// and 95% of its days (after the turn day of every profile), so each
    /// customer ends with a decision to churn or renew whose run-up the
    /// telemetry covers: the fleet the health score is validated on. The
    /// contract starts 365 days before the renewal, whatever the profile.
    /// Off by default: contract ages then follow the profile (see
    /// [`crate::Profile`]) and the stream is exactly what it is without.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub renewals: bool,
}

impl Default for FleetSpec {
    fn default() -> Self {
        Self {
            customers: 6,
            devices: 300,
            days: 90,
            seed: 42,
            start: DEFAULT_START_MS,
            sample_interval_ms: 10 * MINUTE_MS,
            samples_per_batch: 6,
            unit_replacements: 0,
            store_and_forward: 0,
            activities: Vec::new(),
            renewals: false,
        }
    }
}

impl FleetSpec {
    /// Most samples one message may carry (the ingest default limit).
    pub const MAX_SAMPLES_PER_BATCH: u32 = 4096;

    /// Checks that the spec describes a fleet; the error names the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |field, reason: &str| {
            Err(SimError::Spec {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.customers == 0 {
            return bad("customers", "must be at least 1");
        }
        if self.devices < self.customers {
            return bad("devices", "must be at least one per customer");
        }
        if self.days == 0 {
            return bad("days", "must be at least 1");
        }
        if self.start == 0 || self.start > i64::MAX as u64 / 2 {
            return bad("start", "must be a positive Unix time in ms");
        }
        if self.sample_interval_ms < 1_000 || self.sample_interval_ms > DAY_MS {
            return bad("sample_interval_ms", "must be between 1 s and 1 day");
        }
        if self.samples_per_batch == 0 || self.samples_per_batch > Self::MAX_SAMPLES_PER_BATCH {
            return bad("samples_per_batch", "must be between 1 and 4096");
        }
        Ok(())
    }

    /// Devices of customer `customer` (0-based).
    pub fn devices_of_customer(&self, customer: usize) -> usize {
        let base = self.devices / self.customers;
        base + usize::from(customer < self.devices % self.customers)
    }

    /// Samples on each device's grid over the whole simulation.
    pub fn samples_per_device(&self) -> u64 {
        u64::from(self.days) * DAY_MS / self.sample_interval_ms
    }

    /// Messages on each device's grid over the whole simulation (the last one
    /// may carry fewer samples).
    pub fn batches_per_device(&self) -> u64 {
        self.samples_per_device()
            .div_ceil(u64::from(self.samples_per_batch))
    }

    /// Time one message covers (ms).
    pub fn batch_interval_ms(&self) -> u64 {
        self.sample_interval_ms * u64::from(self.samples_per_batch)
    }

    /// Event time of sample `k` of the grid.
    pub fn sample_time(&self, k: u64) -> EventTime {
        self.start + k * self.sample_interval_ms
    }

    /// End of the simulation (exclusive).
    pub fn end(&self) -> EventTime {
        self.start + u64::from(self.days) * DAY_MS
    }

    /// First batch that starts at or after `at`, clamped to the last batch:
    /// devices come online and go dark on batch boundaries, so every message
    /// of one batch slot is published at the same event time.
    pub(crate) fn batch_at_or_after(&self, at: EventTime) -> u64 {
        let last = self.batches_per_device().saturating_sub(1);
        at.saturating_sub(self.start)
            .div_ceil(self.batch_interval_ms())
            .min(last)
    }

    /// Event time of the first sample of batch `batch`.
    pub(crate) fn batch_time(&self, batch: u64) -> EventTime {
        self.sample_time(batch * u64::from(self.samples_per_batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::date_of;

    #[test]
    fn defaults_are_the_documented_ones() {
        let spec = FleetSpec::default();
        assert_eq!(date_of(spec.start), "2026-01-05");
        assert_eq!(spec.batch_interval_ms(), 3_600_000);
        assert_eq!(spec.samples_per_device(), 90 * 144);
        assert_eq!(spec.batches_per_device(), 90 * 24);
        spec.validate().unwrap();
    }

    #[test]
    fn splits_devices_with_remainder_first() {
        let spec = FleetSpec {
            customers: 4,
            devices: 10,
            ..FleetSpec::default()
        };
        let split: Vec<_> = (0..4).map(|c| spec.devices_of_customer(c)).collect();
        assert_eq!(split, [3, 3, 2, 2]);
    }

    #[test]
    fn rejects_specs_that_cannot_work() {
        // The default spec with one field spoiled, and the field the error names.
        let spoiled = |spoil: fn(&mut FleetSpec)| {
            let mut spec = FleetSpec::default();
            spoil(&mut spec);
            spec
        };
        for (spec, field) in [
            (spoiled(|s| s.customers = 0), "customers"),
            (spoiled(|s| s.devices = 5), "devices"),
            (spoiled(|s| s.days = 0), "days"),
            (spoiled(|s| s.sample_interval_ms = 0), "sample_interval_ms"),
            (spoiled(|s| s.samples_per_batch = 0), "samples_per_batch"),
        ] {
            match spec.validate() {
                Err(SimError::Spec { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn rounds_activation_to_batch_boundaries() {
        let spec = FleetSpec::default();
        assert_eq!(spec.batch_at_or_after(spec.start), 0);
        assert_eq!(spec.batch_at_or_after(spec.start + 1), 1);
        assert_eq!(spec.batch_at_or_after(spec.start + 3_600_000), 1);
        assert_eq!(spec.batch_at_or_after(spec.end() + DAY_MS), 90 * 24 - 1);
    }
}
