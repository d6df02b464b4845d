//! Store and forward: devices that lose coverage (a quarry, a tunnel, a
//! remote site) keep measuring, buffer their messages, and upload the
//! buffer when they reconnect, after the reconnect hour's own message. The
//! readings are the same as with coverage; only when they arrive changes,
//! so the ground truth is the event-time order's.

use serde::{Deserialize, Serialize};

use crate::random::mix;
use crate::spec::FleetSpec;

/// How a reconnecting device sends its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upload {
    /// Oldest first, as most telematics units do.
    InOrder,
    /// Newest first (units that send the latest state first).
    NewestFirst,
    /// In no particular order (several upload threads, retries).
    Shuffled,
}

/// A device's one loss of coverage, in batch slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    /// First slot whose message is buffered.
    pub from_slot: u64,
    /// Slots buffered; the message of slot `from_slot + slots` is the first
    /// sent live again, and the buffer follows it.
    pub slots: u64,
    /// Order of the buffer's upload.
    pub upload: Upload,
}

impl Outage {
    /// Shortest and longest loss of coverage, hours.
    pub const HOURS: (u64, u64) = (6, 72);

    /// Whether the message of `slot` waits in the buffer.
    pub fn holds(&self, slot: u64) -> bool {
        (self.from_slot..self.from_slot + self.slots).contains(&slot)
    }

    /// The slot at which the buffer is uploaded.
    pub fn reconnect_slot(&self) -> u64 {
        self.from_slot + self.slots
    }

    /// Puts a buffer (oldest first) in upload order; `salt` shuffles.
    pub fn order<T>(&self, mut buffer: Vec<T>, salt: u64) -> Vec<T> {
        match self.upload {
            Upload::InOrder => {}
            Upload::NewestFirst => buffer.reverse(),
            Upload::Shuffled => {
                for i in (1..buffer.len()).rev() {
                    let j = (mix(salt ^ i as u64) % (i as u64 + 1)) as usize;
                    buffer.swap(i, j);
                }
            }
        }
        buffer
    }
}

/// The outage of device `index`, online over slots `online..end`, when it
/// is one of the [`FleetSpec::store_and_forward`] devices (spread evenly over
/// the fleet): 6 to 72 hours, starting somewhere in its time online, the
/// upload order cycling through [`Upload`]'s.
pub(crate) fn outage_of(spec: &FleetSpec, index: usize, online: u64, end: u64) -> Option<Outage> {
    let n = spec.store_and_forward.min(spec.devices);
    if n == 0 {
        return None;
    }
    let i = (index * n).div_ceil(spec.devices);
    if i >= n || i * spec.devices / n != index {
        return None;
    }
    let hash = mix(spec.seed ^ mix(index as u64 ^ 0x5afe_f0de));
    let (lo, hi) = Outage::HOURS;
    let hours = lo + hash % (hi - lo + 1);
    let slots = (hours * 3_600_000)
        .div_ceil(spec.batch_interval_ms())
        .max(1);
    let span = end.checked_sub(online)?;
    if span <= slots + 1 {
        return None;
    }
    let from_slot = online + 1 + (hash >> 20) % (span - slots - 1);
    let upload = [Upload::InOrder, Upload::NewestFirst, Upload::Shuffled][i % 3];
    Some(Outage {
        from_slot,
        slots,
        upload,
    })
}

#[cfg(test)]
mod tests {
    use crate::{Fleet, FleetSpec};

    #[test]
    fn buffers_arrive_after_their_reconnect_and_nothing_is_lost() {
        let spec = FleetSpec {
            customers: 3,
            devices: 12,
            days: 8,
            store_and_forward: 6,
            ..FleetSpec::default()
        };
        let fleet = Fleet::generate(&spec);
        let outages: Vec<_> = fleet.devices().iter().filter_map(|d| d.outage).collect();
        assert_eq!(outages.len(), 6);
        let uploads: std::collections::HashSet<_> = outages.iter().map(|o| o.upload).collect();
        assert_eq!(uploads.len(), 3, "every upload order is exercised");
        for o in &outages {
            let hours = o.slots * spec.batch_interval_ms() / 3_600_000;
            assert!((6..=72).contains(&hours), "{o:?}");
        }

        let published: Vec<_> = fleet.messages().collect();
        let in_time: Vec<_> = fleet.messages_in_event_time().collect();
        assert_eq!(published.len() as u64, fleet.message_count());
        let key = |m: &crate::SimMessage| (m.topic.clone(), m.batch.sequence);
        let mut a: Vec<_> = published.iter().map(key).collect();
        let mut b: Vec<_> = in_time.iter().map(key).collect();
        assert_ne!(a, b, "store and forward reorders the stream");
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same messages");

        // A buffered message comes after its device's reconnect message,
        // and some arrive more than a day behind the newest event time.
        let mut newest = 0;
        let mut behind = 0;
        for m in &published {
            let at = m.publish_time();
            if at + 24 * 3_600_000 < newest {
                behind += 1;
            }
            newest = newest.max(at);
        }
        assert!(behind > 0);
        for device in fleet.devices().iter().filter(|d| d.outage.is_some()) {
            let outage = device.outage.unwrap();
            let reconnect = spec.batch_time(outage.reconnect_slot());
            let first_held = spec.batch_time(outage.from_slot);
            let position = |pred: &dyn Fn(&crate::SimMessage) -> bool| {
                published
                    .iter()
                    .position(|m| m.topic == device.topic() && pred(m))
            };
            let live = position(&|m| m.batch.samples[0].event_time_ms as u64 >= reconnect).unwrap();
            let held = position(&|m| {
                let at = m.batch.samples[0].event_time_ms as u64;
                at >= first_held && at < reconnect
            })
            .unwrap();
            assert!(held > live, "{}", device.id);
        }
    }
}
