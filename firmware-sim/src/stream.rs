//! The fleet's telemetry as a lazy, deterministic, event-time ordered stream
//! of MQTT messages.
//!
//! Devices come online and go dark on batch-slot boundaries, so every message
//! of slot `b` carries samples `b * samples_per_batch ..` of the grid and is
//! published at the same event time. The stream walks the slots in order and,
//! within a slot, the devices in fleet order: only one slot's worth of state
//! (one `DeviceSim` per device) is ever in memory.

use fleetpulse_proto::v1::TelemetryBatch;
use prost::Message;

use crate::calendar::EventTime;
use crate::device::DeviceSim;
use crate::fleet::Fleet;

/// One MQTT message of a simulated device.
#[derive(Debug, Clone, PartialEq)]
pub struct SimMessage {
    /// `fleet/{customer}/{site}/{device}/telemetry`.
    pub topic: String,
    /// The payload, before encoding.
    pub batch: TelemetryBatch,
}

impl SimMessage {
    /// When the device publishes the message: the event time of its last
    /// sample. The stream is ordered by it.
    pub fn publish_time(&self) -> EventTime {
        self.batch
            .samples
            .last()
            .map_or(0, |s| s.event_time_ms as EventTime)
    }

    /// The payload encoded with prost.
    pub fn encode(&self) -> Vec<u8> {
        self.batch.encode_to_vec()
    }

    /// `(topic, payload)`, ready to publish.
    pub fn into_encoded(self) -> (String, Vec<u8>) {
        let payload = self.encode();
        (self.topic, payload)
    }
}

/// Iterator over a fleet's messages; see [`Fleet::messages`].
#[derive(Debug, Clone)]
pub struct Messages {
    fleet: Fleet,
    sims: Vec<DeviceSim>,
    /// Current batch slot.
    slot: u64,
    /// Next device to ask in the current slot.
    next_device: usize,
    slots: u64,
}

impl Messages {
    pub(crate) fn new(fleet: Fleet) -> Self {
        let seed = fleet.spec().seed;
        Self {
            sims: fleet
                .devices()
                .iter()
                .map(|d| DeviceSim::new(seed, d))
                .collect(),
            slot: 0,
            next_device: 0,
            slots: fleet.spec().batches_per_device(),
            fleet,
        }
    }
}

impl Iterator for Messages {
    type Item = SimMessage;

    fn next(&mut self) -> Option<SimMessage> {
        let fleet = &self.fleet;
        let devices = fleet.devices();
        while self.slot < self.slots {
            while self.next_device < devices.len() {
                let device = &devices[self.next_device];
                let sim = &mut self.sims[self.next_device];
                self.next_device += 1;
                let customer = fleet.customer_of(device);
                if let Some(batch) = sim.batch(fleet.spec(), customer, device, self.slot) {
                    return Some(SimMessage {
                        topic: device.topic().to_owned(),
                        batch,
                    });
                }
            }
            self.slot += 1;
            self.next_device = 0;
        }
        None
    }
}
