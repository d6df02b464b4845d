//! The fleet's telemetry as a lazy, deterministic, event-time ordered stream
//! of MQTT messages.
//!
//! Devices come online and go dark on batch-slot boundaries, so every message
//! of slot `b` carries samples `b * samples_per_batch ..` of the grid and is
//! published at the same event time. The stream walks the slots in order and,
//! within a slot, the devices in fleet order: only one slot's worth of state
//! (one `DeviceSim` per device) is ever in memory, plus the buffers of
//! devices out of coverage ([`crate::coverage`]): their messages are held
//! and come after the reconnect slot's own message, interleaved with the
//! rest of the fleet's.

use fleetpulse_proto::v1::TelemetryBatch;
use prost::Message;

use std::collections::VecDeque;

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
    /// When the device measured the message's last sample; the stream is
    /// ordered by it, except for buffers uploaded after an outage.
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
    /// Whether outages hold messages back (`false`: event-time order).
    store_and_forward: bool,
    /// Per device, messages buffered during its outage, oldest first.
    held: Vec<Vec<SimMessage>>,
    /// Uploaded buffers, sent before the stream goes on.
    uploading: VecDeque<SimMessage>,
}

impl Messages {
    pub(crate) fn new(fleet: Fleet, store_and_forward: bool) -> Self {
        let seed = fleet.spec().seed;
        Self {
            store_and_forward,
            held: vec![Vec::new(); fleet.devices().len()],
            uploading: VecDeque::new(),
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
        if let Some(message) = self.uploading.pop_front() {
            return Some(message);
        }
        let fleet = &self.fleet;
        let devices = fleet.devices();
        while self.slot < self.slots {
            while self.next_device < devices.len() {
                let index = self.next_device;
                let device = &devices[index];
                let sim = &mut self.sims[index];
                self.next_device += 1;
                let customer = fleet.customer_of(device);
                let message = sim
                    .batch(fleet.spec(), customer, device, self.slot)
                    .map(|batch| SimMessage {
                        topic: device.topic().to_owned(),
                        batch,
                    });
                let outage = device.outage.filter(|_| self.store_and_forward);
                if let Some(outage) = outage {
                    if outage.holds(self.slot) {
                        self.held[index].extend(message);
                        continue;
                    }
                    if outage.reconnect_slot() == self.slot {
                        let buffer = std::mem::take(&mut self.held[index]);
                        let salt = fleet.spec().seed ^ index as u64;
                        self.uploading.extend(outage.order(buffer, salt));
                    }
                }
                if let Some(message) = message.or_else(|| self.uploading.pop_front()) {
                    return Some(message);
                }
            }
            self.slot += 1;
            self.next_device = 0;
        }
        // Buffers of outages that outlast the simulation: sent at its end.
        for (index, device) in devices.iter().enumerate() {
            if let Some(outage) = device.outage.filter(|_| self.store_and_forward) {
                let buffer = std::mem::take(&mut self.held[index]);
                let salt = fleet.spec().seed ^ index as u64;
                self.uploading.extend(outage.order(buffer, salt));
            }
        }
        self.uploading.pop_front()
    }
}
