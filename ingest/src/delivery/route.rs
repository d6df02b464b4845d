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

/// Payload bytes allowed on their way from the sources to the engine
/// (`mqtt.queue_bytes`), in KiB: the lanes' queues and groups count
/// messages, and a message may be 4,000 times the size of another.
#[derive(Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    kib: u32,
}

impl Budget {
    /// A budget of `bytes` (at least 1 KiB).
    pub fn new(bytes: usize) -> Self {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            permits: Arc::new(Semaphore::new(kib as usize)),
            kib,
        }
    }

    /// Bytes held now (`/metrics`), in whole KiB per message.
    pub fn held(&self) -> u64 {
        let free = self.permits.available_permits() as u64;
        u64::from(self.kib).saturating_sub(free) * 1024
    }
}

/// Hands messages to the lanes, within a budget of payload bytes.
#[derive(Debug, Clone)]
pub struct Router {
    lanes: Vec<mpsc::Sender<Message>>,
    workers: usize,
    /// Held from the socket until a message's group is handed to the
    /// engine.
    budget: Arc<Budget>,
}

/// Every lane has stopped.
#[derive(Debug)]
pub struct Closed;

impl Router {
    /// Routes to `lanes` (lane `k` owns the engine workers `w % lanes == k`
    /// of `workers`), holding at most `budget` of payload in them.
    pub fn new(lanes: Vec<mpsc::Sender<Message>>, workers: usize, budget: Arc<Budget>) -> Self {
        Self {
            lanes,
            workers,
            budget,
        }
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
            .clamp(1, self.budget.kib);
        let permits = self.budget.permits.clone();
        message.budget = Some(permits.acquire_many_owned(kib).await.map_err(|_| Closed)?);
        self.lanes[lane].send(message).await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_always_reaches_the_lane_of_its_engine_workers() {
        let lanes: Vec<_> = (0..2).map(|_| mpsc::channel(1).0).collect();
        let router = Router::new(lanes, 4, Arc::new(Budget::new(1 << 20)));
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

    fn message(bytes: usize) -> Message {
        Message {
            topic: "fleet/c1/s1/exc-1/telemetry".into(),
            payload: vec![0; bytes].into(),
            ack: None,
            budget: None,
        }
    }

    #[tokio::test]
    async fn a_message_waits_for_its_share_and_one_above_the_budget_for_all_of_it() {
        let (tx, mut rx) = mpsc::channel(16);
        let budget = Arc::new(Budget::new(4096));
        let router = Router::new(vec![tx], 1, budget.clone());
        let waits = std::time::Duration::from_millis(50);
        router.send(message(3000)).await.unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(budget.held(), 3 * 1024);
        // 3 KiB held, 2 more do not fit: until the first's share is back.
        let second = router.send(message(2000));
        tokio::pin!(second);
        assert!(tokio::time::timeout(waits, &mut second).await.is_err());
        drop(first);
        second.await.unwrap();
        drop(rx.recv().await.unwrap());
        // A message above the whole budget takes all of it.
        router.send(message(1 << 20)).await.unwrap();
        let big = rx.recv().await.unwrap();
        assert!(
            tokio::time::timeout(waits, router.send(message(1)))
                .await
                .is_err()
        );
        drop(big);
        router.send(message(1)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().payload.len(), 1);
        assert_eq!(budget.held(), 0);
    }
}
