//! Which intake lane a message goes to: the one whose engine workers own its
//! device, decided from the topic's `(customer, device)` before decoding.
//! A device always reaches the same lane, whichever MQTT connection it
//! arrived on, so its sequence window and watermark live in one place.

use std::sync::Arc;

use fleetpulse_proto::TopicIds;
use tokio::sync::{Semaphore, mpsc};

use crate::source::mqtt::Message;

/// The lane (of `lanes`, over `workers` engine workers) for a topic; a
/// topic that does not parse goes to lane 0, whose admission refuses it.
pub fn lane(topic: &str, workers: usize, lanes: usize) -> usize {
    match TopicIds::parse(topic) {
        Ok(ids) => fleetpulse_engine::lane_of(ids.customer, ids.device, workers, lanes),
        Err(_) => 0,
    }
}

/// Hands messages to the lanes, within a budget of payload bytes.
#[derive(Debug, Clone)]
pub struct Router {
    lanes: Vec<mpsc::Sender<Message>>,
    workers: usize,
    /// Payload KiB the lanes may hold, from the socket until a message's
    /// group is handed to the engine: the lanes' queues and groups count
    /// messages, and a message may be 4,000 times the size of another.
    budget: Arc<Semaphore>,
    budget_kib: u32,
}

/// Every lane has stopped.
#[derive(Debug)]
pub struct Closed;

impl Router {
    /// Routes to `lanes` (lane `k` owns the engine workers `w % lanes == k`
    /// of `workers`), holding at most `budget_bytes` of payload in them.
    pub fn new(lanes: Vec<mpsc::Sender<Message>>, workers: usize, budget_bytes: usize) -> Self {
        let budget_kib = u32::try_from(budget_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        Self {
            lanes,
            workers,
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
        }
    }

    /// Payload bytes the lanes hold now.
    pub fn held_bytes(&self) -> u64 {
        let free = self.budget.available_permits() as u64;
        (u64::from(self.budget_kib).saturating_sub(free)) * 1024
    }

    /// The lane for a topic.
    pub fn lane(&self, topic: &str) -> usize {
        lane(topic, self.workers, self.lanes.len())
    }

    /// Queues a message for its lane, waiting while that lane is full or
    /// the budget spent (a message above the whole budget waits for all of
    /// it).
    pub async fn send(&self, mut message: Message) -> Result<(), Closed> {
        let lane = if self.lanes.len() == 1 {
            0
        } else {
            self.lane(&message.topic)
        };
        let kib = u32::try_from(message.payload.len().div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_kib);
        let share = (self.budget.clone().acquire_many_owned(kib).await).map_err(|_| Closed)?;
        message.budget = Some(share);
        self.lanes[lane].send(message).await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_always_reaches_the_lane_of_its_engine_workers() {
        let lanes: Vec<_> = (0..2).map(|_| mpsc::channel(1).0).collect();
        let router = Router::new(lanes, 4, 1 << 20);
        let mut seen = [0usize; 2];
        for d in 0..200 {
            let device = format!("exc-{d}");
            let lane = router.lane(&format!("fleet/c1/s1/{device}/telemetry"));
            seen[lane] += 1;
            let worker = fleetpulse_engine::lane_of("c1", &device, 4, 4);
            assert_eq!(lane, worker % 2, "{device}");
            // Another customer's device with the same id may go elsewhere,
            // but always to the same place.
            assert_eq!(
                router.lane(&format!("fleet/c2/s1/{device}/telemetry")),
                router.lane(&format!("fleet/c2/s9/{device}/telemetry"))
            );
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
        assert_eq!(router.lane("not/a/topic"), 0);
    }
}
