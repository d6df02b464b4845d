//! Which intake lane a message goes to: the one whose engine workers own its
//! device, decided from the topic's `(customer, device)` before decoding.
//! A device always reaches the same lane, whichever MQTT connection it
//! arrived on, so its sequence window and watermark live in one place.

use fleetpulse_proto::TopicIds;
use tokio::sync::mpsc;

use crate::source::mqtt::Message;

/// The lane (of `lanes`, over `workers` engine workers) for a topic; a
/// topic that does not parse goes to lane 0, whose admission refuses it.
pub fn lane(topic: &str, workers: usize, lanes: usize) -> usize {
    match TopicIds::parse(topic) {
        Ok(ids) => fleetpulse_engine::lane_of(ids.customer, ids.device, workers, lanes),
        Err(_) => 0,
    }
}

/// Hands messages to the lanes.
#[derive(Debug, Clone)]
pub struct Router {
    lanes: Vec<mpsc::Sender<Message>>,
    workers: usize,
}

/// Every lane has stopped.
#[derive(Debug)]
pub struct Closed;

impl Router {
    /// Routes to `lanes` (lane `k` owns the engine workers `w % lanes == k`
    /// of `workers`).
    pub fn new(lanes: Vec<mpsc::Sender<Message>>, workers: usize) -> Self {
        Self { lanes, workers }
    }

    /// The lane for a topic.
    pub fn lane(&self, topic: &str) -> usize {
        lane(topic, self.workers, self.lanes.len())
    }

    /// Queues a message for its lane, waiting while that lane is full.
    pub async fn send(&self, message: Message) -> Result<(), Closed> {
        let lane = if self.lanes.len() == 1 {
            0
        } else {
            self.lane(&message.topic)
        };
        self.lanes[lane].send(message).await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_always_reaches_the_lane_of_its_engine_workers() {
        let lanes: Vec<_> = (0..2).map(|_| mpsc::channel(1).0).collect();
        let router = Router::new(lanes, 4);
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
