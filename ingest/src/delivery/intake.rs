//! One intake lane: messages from the MQTT source, in groups, through
//! admission, into the WAL (one append and one fsync per group), and only
//! then into the engine and back to the broker as acknowledgements. The
//! order and the waiting are [`Handover`]'s; this loop only moves data.
//!
//! When the WAL cannot take a group (its bound or the disk is full) the lane
//! pauses: it stops reading (the source's queue fills, the broker keeps the
//! unacknowledged messages), retries the group every second, and resumes by
//! itself once the append succeeds.

use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_engine::{DeviceBatch, Engine, EventTime};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::DeliveryError;
use super::handover::{GroupId, Handover};
use super::ledger::Ledger;
use crate::admission::Admission;
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::metrics::{IngestMetrics, MessageRejected};
use crate::source::mqtt::{AckToken, Message};
use crate::wal::writer::{WalWriter, WriteError};
use crate::wal::{Lsn, WalRecord};

/// Messages taken from the source per group at most.
const GROUP_MESSAGES: usize = 1024;
/// Groups waiting for the WAL at most before the lane stops reading.
const GROUPS_IN_FLIGHT: usize = 8;
/// Delay between two attempts to write a group the WAL refused as full.
const RETRY_FULL: Duration = Duration::from_secs(1);

/// What one lane needs.
pub struct Lane {
    /// Admission state of the messages this lane receives.
    pub admission: Admission,
    /// Where admitted batches go once durable.
    pub engine: Engine,
    /// `None`: no WAL, messages are acknowledged by the client on receipt.
    pub wal: Option<Arc<WalWriter>>,
    /// The write side, told which WAL records became durable.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Refused messages, kept for inspection.
    pub dead_letters: Option<DeadLetterStore>,
    /// Counters.
    pub metrics: Arc<IngestMetrics>,
    /// Acknowledgements back to the source.
    pub acks: Option<mpsc::Sender<AckToken>>,
    /// Silence after which the watermark creeps forward.
    pub idle_after: Duration,
}

/// A group of received messages on its way to the engine.
struct Group {
    acks: Vec<AckToken>,
    batches: Vec<DeviceBatch>,
    /// The admitted messages as WAL records, kept until durable for a retry.
    records: Vec<WalRecord>,
    /// Newest reading of the group, for the WAL cut.
    newest: EventTime,
    /// Admission's watermark after the group: the engine may advance to it
    /// once the group is in.
    watermark: EventTime,
}

type Pending =
    std::pin::Pin<Box<dyn Future<Output = (GroupId, Result<Range<Lsn>, WriteError>)> + Send>>;

impl Lane {
    /// Runs until the source closes `messages` (after `stop`), then hands
    /// over what is durable and returns the engine for draining. After
    /// `stop`, waits at most `deadline` for the WAL; what is not durable by
    /// then stays unacknowledged at the broker.
    pub async fn run(
        mut self,
        mut messages: mpsc::Receiver<Message>,
        stop: CancellationToken,
        deadline: Duration,
    ) -> Result<Engine, DeliveryError> {
        let mut handover: Handover<Group> = Handover::default();
        let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
        let mut full: Vec<GroupId> = Vec::new();
        let mut retry_at: Option<Instant> = None;
        let mut received: Vec<Message> = Vec::with_capacity(GROUP_MESSAGES);
        let mut source_open = true;
        let mut last_message = Instant::now();
        let mut stopping_since: Option<Instant> = None;
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            let reading = source_open && full.is_empty() && in_flight.len() < GROUPS_IN_FLIGHT;
            if !source_open && handover.is_empty() {
                break;
            }
            if stopping_since.is_some_and(|t| t.elapsed() > deadline) {
                tracing::warn!(
                    groups = handover.len(),
                    "shutdown deadline: messages not yet durable stay unacknowledged at the broker"
                );
                break;
            }
            tokio::select! {
                biased;
                Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    match result {
                        Ok(lsns) => {
                            if let Some(group) = handover.get(id) {
                                self.ledger
                                    .lock()
                                    .expect("ledger poisoned")
                                    .durable(lsns, group.newest);
                            }
                            handover.durable(id);
                            if full.is_empty() {
                                self.metrics.wal_resumed();
                            }
                        }
                        Err(WriteError::Full { reason }) => {
                            self.metrics.wal_full(&reason);
                            full.push(id);
                            retry_at.get_or_insert_with(|| Instant::now() + RETRY_FULL);
                        }
                        Err(e) => return Err(DeliveryError::Wal(e.to_string())),
                    }
                    self.hand_over(&mut handover).await?;
                }
                n = messages.recv_many(&mut received, GROUP_MESSAGES), if reading => {
                    if n == 0 {
                        source_open = false;
                        stopping_since.get_or_insert_with(Instant::now);
                        continue;
                    }
                    last_message = Instant::now();
                    let group = self.admit(&mut received);
                    match (&self.wal, group.records.is_empty()) {
                        (Some(wal), false) => {
                            let records = group.records.clone();
                            let id = handover.push(group, false);
                            in_flight.push_back(submit(wal.clone(), id, records));
                        }
                        _ => {
                            handover.push(group, true);
                        }
                    }
                    self.hand_over(&mut handover).await?;
                }
                _ = stop.cancelled(), if stopping_since.is_none() => {
                    stopping_since = Some(Instant::now());
                }
                _ = ticker.tick() => {
                    if let Some(at) = retry_at
                        && at <= Instant::now()
                        && in_flight.is_empty()
                        && let Some(wal) = &self.wal
                    {
                        // Again, in order: the groups the WAL refused.
                        retry_at = None;
                        for id in full.drain(..) {
                            if let Some(group) = handover.get(id) {
                                in_flight.push_back(submit(wal.clone(), id, group.records.clone()));
                            }
                        }
                    }
                    if handover.is_empty() {
                        self.idle(last_message.elapsed()).await?;
                    }
                }
            }
        }
        Ok(self.engine)
    }

    /// Admission of one group of messages; refusals are counted and
    /// dead-lettered here.
    fn admit(&mut self, received: &mut Vec<Message>) -> Group {
        let received_ms = wall_clock_ms();
        let mut group = Group {
            acks: Vec::with_capacity(received.len()),
            batches: Vec::with_capacity(received.len()),
            records: Vec::with_capacity(received.len()),
            newest: 0,
            watermark: 0,
        };
        for message in received.drain(..) {
            match self
                .admission
                .admit(&message.topic, &message.payload, received_ms)
            {
                Ok(batch) => {
                    group.newest = group.newest.max(batch.last_at());
                    group.batches.push(batch);
                    if self.wal.is_some() {
                        group.records.push(WalRecord {
                            topic: message.topic,
                            payload: message.payload,
                            received_ms,
                        });
                    }
                }
                Err(rejection) => {
                    MessageRejected {
                        topic: &message.topic,
                        reason: rejection.reason,
                        detail: &rejection.detail,
                    }
                    .emit(&self.metrics);
                    if let Some(store) = &mut self.dead_letters {
                        let letter = DeadLetter {
                            topic: &message.topic,
                            reason: rejection.reason,
                            detail: &rejection.detail,
                            received_ms,
                            payload: &message.payload,
                        };
                        if let Err(e) = store.record(&letter).and_then(|()| store.flush()) {
                            tracing::error!(error = %e, "cannot write the dead-letter record");
                        }
                    }
                }
            }
            // Refused messages are acknowledged too (they would be refused
            // again), but in order, behind the durable ones before them.
            if let Some(ack) = message.ack {
                group.acks.push(ack);
            }
        }
        group.watermark = self.admission.watermark().current();
        self.metrics
            .sequence_gaps
            .store(self.admission.sequence_gaps(), Relaxed);
        group
    }

    /// Feeds the engine and acknowledges every group that may go now.
    async fn hand_over(&mut self, handover: &mut Handover<Group>) -> Result<(), DeliveryError> {
        for group in handover.release() {
            let samples: usize = group.batches.iter().map(|b| b.samples.len()).sum();
            self.metrics
                .messages_accepted
                .fetch_add(group.batches.len() as u64, Relaxed);
            self.metrics
                .samples_accepted
                .fetch_add(samples as u64, Relaxed);
            if let Some(probe) = self.metrics.probe.get() {
                for batch in &group.batches {
                    probe.engine_input(&batch.device, batch.sequence);
                }
            }
            if !group.batches.is_empty() {
                self.engine.send_all(group.batches).await?;
            }
            self.engine.advance(group.watermark).await?;
            self.metrics.watermark.store(group.watermark, Relaxed);
            if let Some(acks) = &self.acks {
                for ack in group.acks {
                    // The source is gone at shutdown: the broker redelivers,
                    // and the WAL's replay makes the redelivery a duplicate.
                    let _ = acks.send(ack).await;
                }
            }
        }
        Ok(())
    }

    /// Nothing received for `idle`: let event time creep forward, and follow
    /// the rest of the cluster when subscribed with no backlog.
    async fn idle(&mut self, idle: Duration) -> Result<(), DeliveryError> {
        if idle <= self.idle_after {
            return Ok(());
        }
        self.admission
            .idle_for((idle - self.idle_after).as_millis() as u64);
        // With traffic, a member keeps its own watermark, so nothing it still
        // receives is refused because another member ran ahead.
        if self.metrics.subscribed.load(Relaxed) {
            self.admission.follow(self.engine.cluster_watermark());
        }
        let watermark = self.admission.watermark().current();
        self.engine.advance(watermark).await?;
        self.metrics.watermark.store(watermark, Relaxed);
        Ok(())
    }
}

/// Appends a group's records as one WAL group and waits until durable.
fn submit(wal: Arc<WalWriter>, id: GroupId, records: Vec<WalRecord>) -> Pending {
    Box::pin(async move {
        let result = match wal.submit_batch(records).await {
            Ok(durable) => durable.await,
            Err(e) => Err(e),
        };
        (id, result)
    })
}

/// Wall-clock time in ms since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
