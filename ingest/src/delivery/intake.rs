//! One intake lane: messages from the MQTT source, in groups, through
//! admission, into the WAL (one append and one fsync per group), and only
//! then into the engine and back to the broker as acknowledgements. The
//! order and the waiting are [`InOrder`]'s; this loop only moves data.
//!
//! When the WAL cannot take a group (its bound or the disk is full) the lane
//! pauses: it stops reading (the source's queue fills, the broker keeps the
//! unacknowledged messages), retries the group every second, and resumes by
//! itself once the append succeeds. The same when the dead-letter file
//! cannot take the letters of a group's refused messages: a refused message
//! is acknowledged once its letter is on disk, often the only copy of it.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_engine::{DeviceBatch, EngineInput, EventTime};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::DeliveryError;
use super::in_order::InOrder;
use super::ledger::Ledger;
use super::route::Router;
use crate::admission::{Admission, Admitted};
use crate::corrections::{Corrections, LiveBatches, NotWhole, Taken};
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::metrics::{IngestMetrics, RejectReason};
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
    /// Admission state of the devices this lane owns.
    pub admission: Admission,
    /// This lane's engine workers: admitted batches go there once durable.
    pub engine: EngineInput,
    /// `None`: no WAL, messages are acknowledged by the client on receipt.
    pub wal: Option<Arc<WalWriter>>,
    /// The write side, told which WAL records became durable.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Refused messages, kept for inspection (one file for every lane).
    pub dead_letters: Option<Arc<Mutex<DeadLetterStore>>>,
    /// Counters.
    pub metrics: Arc<IngestMetrics>,
    /// Acknowledgements back to the sources, one queue per MQTT
    /// connection (empty: the client acknowledges on receipt). Unbounded so
    /// that a lane never waits on a source that waits on the lane; it holds
    /// at most the messages the broker has in flight to us.
    pub acks: Vec<mpsc::UnboundedSender<AckToken>>,
    /// Silence after which the watermark creeps forward.
    pub idle_after: Duration,
    /// Sequence gaps of this lane already added to the metric.
    pub gaps_reported: i64,
    /// The most advanced lane's watermark. A lane admits against its own
    /// (messages of different lanes overtake each other on the way), and
    /// follows this one whenever it has nothing waiting.
    pub watermark: Arc<AtomicU64>,
    /// The archive, when late data within the correction horizon restates
    /// windows: every batch handed to the engine is archived, and a late
    /// batch is archived (durably) instead of written to the WAL.
    pub corrections: Option<Corrections>,
}

/// A group of received messages on its way to the engine.
struct Group {
    acks: Vec<AckToken>,
    batches: Vec<DeviceBatch>,
    /// Which of `batches` came on a backfill topic (the archive tells them
    /// from the customer's live telemetry).
    backfilled: Vec<bool>,
    /// Admitted late, within the correction horizon: archived before the
    /// acknowledgement, then handed to the engine (which only updates the
    /// devices' memories with them).
    late: Arc<[DeviceBatch]>,
    /// The messages of `late`, one each, for the dead letter of one the
    /// archive refuses ([`Taken::Pruned`]).
    late_messages: Arc<[LateMessage]>,
    /// Refused messages whose dead letters are written with the group's
    /// durability.
    refused: Arc<[Refused]>,
    /// When the group's messages were received.
    received_ms: u64,
    /// The admitted messages as WAL records, shared with the WAL writer and
    /// kept until durable for a retry.
    records: Arc<[WalRecord]>,
    /// Newest reading of the group, for the WAL cut.
    newest: EventTime,
    /// Admission's watermark after the group: the engine may advance to it
    /// once the group is in.
    watermark: EventTime,
    /// Its messages' shares of the byte budget, given back (dropped) once
    /// the group is handed to the engine.
    budget: Vec<tokio::sync::OwnedSemaphorePermit>,
}

/// A message admitted late, as it came, in case the archive refuses it.
struct LateMessage {
    topic: String,
    payload: bytes::Bytes,
    /// The archive refused it (counted once, if the group is tried again).
    refused: AtomicBool,
    /// Its dead letter is written (on a retry, the rest).
    kept: AtomicBool,
}

/// A message admission refused, with what its dead letter says.
struct Refused {
    topic: String,
    reason: RejectReason,
    detail: String,
    payload: bytes::Bytes,
    /// Its letter is written (a retry writes the rest).
    kept: AtomicBool,
}

impl Refused {
    fn letter(&self, received_ms: u64) -> DeadLetter<'_> {
        DeadLetter {
            topic: &self.topic,
            reason: self.reason,
            detail: &self.detail,
            received_ms,
            payload: &self.payload,
        }
    }
}

type Pending =
    std::pin::Pin<Box<dyn Future<Output = (u64, Result<Option<Range<Lsn>>, WriteError>)> + Send>>;

impl Lane {
    /// Runs until the sources close `messages` (after `stop`), then hands
    /// over what is durable and drops its engine input. After
    /// `stop`, waits at most `deadline` for the WAL; what is not durable by
    /// then stays unacknowledged at the broker.
    pub async fn run(
        mut self,
        mut messages: mpsc::Receiver<Message>,
        stop: CancellationToken,
        deadline: Duration,
    ) -> Result<(), DeliveryError> {
        let mut handover: InOrder<Group> = InOrder::default();
        let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
        let mut full: Vec<u64> = Vec::new();
        // Whether the group submitted last is queued for the WAL.
        let mut wal_turn: Option<oneshot::Receiver<bool>> = None;
        let mut retry_at: Option<Instant> = None;
        let mut received: Vec<Message> = Vec::with_capacity(GROUP_MESSAGES);
        let mut source_open = true;
        let mut last_message = Instant::now();
        // What the broker redelivers after a restart arrived before what
        // other lanes replayed from the WAL: until it is in (it comes right
        // after the reconnect), a lane keeps its own watermark.
        let following_from = Instant::now() + self.idle_after;
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
                            if let (Some(lsns), Some(group)) = (lsns, handover.get(id)) {
                                self.ledger
                                    .lock()
                                    .expect("ledger poisoned")
                                    .durable(lsns, group.newest);
                            }
                            handover.done(id);
                            if full.is_empty() {
                                self.metrics.wal_resumed();
                            }
                        }
                        Err(WriteError::Full { reason }) => {
                            if full.is_empty() {
                                // The first refusal in order says why; the
                                // groups after it are refused behind it.
                                self.metrics.wal_full(&reason);
                            }
                            full.push(id);
                            retry_at.get_or_insert_with(|| Instant::now() + RETRY_FULL);
                        }
                        Err(e) => return Err(DeliveryError::Wal(e.to_string())),
                    }
                    let handed = self.hand_over(&mut handover);
                    match until_stopped(handed, &stop, &mut stopping_since, deadline).await {
                        Some(handed) => handed?,
                        None => break,
                    }
                }
                n = messages.recv_many(&mut received, GROUP_MESSAGES), if reading => {
                    if n == 0 {
                        source_open = false;
                        stopping_since.get_or_insert_with(Instant::now);
                        continue;
                    }
                    last_message = Instant::now();
                    let group = self.admit(&mut received);
                    let durable = self.wal.is_none()
                        || (group.records.is_empty()
                            && group.late.is_empty()
                            && group.refused.is_empty());
                    if durable {
                        handover.push(group, true);
                    } else {
                        let submitted = self.submit(&group, &mut wal_turn);
                        let id = handover.push(group, false);
                        in_flight.push_back(submitted(id));
                    }
                    let handed = self.hand_over(&mut handover);
                    match until_stopped(handed, &stop, &mut stopping_since, deadline).await {
                        Some(handed) => handed?,
                        None => break,
                    }
                }
                _ = stop.cancelled(), if stopping_since.is_none() => {
                    stopping_since = Some(Instant::now());
                }
                _ = ticker.tick() => {
                    if let Some(at) = retry_at
                        && at <= Instant::now()
                        && in_flight.is_empty()
                        && self.wal.is_some()
                    {
                        // Again, in order: the groups the WAL refused.
                        retry_at = None;
                        wal_turn = None;
                        for id in full.drain(..) {
                            if let Some(group) = handover.get(id) {
                                in_flight.push_back(self.submit(group, &mut wal_turn)(id));
                            }
                        }
                    }
                    if handover.is_empty() && messages.is_empty() {
                        // Nothing of this lane's is on its way: whatever
                        // reaches it from now on arrived after what the other
                        // lanes admitted, so it may follow them at once, as
                        // one admission for all devices would have.
                        if Instant::now() >= following_from {
                            self.admission.follow(self.watermark.load(Relaxed));
                        }
                        let idle = self.idle(last_message.elapsed());
                        match until_stopped(idle, &stop, &mut stopping_since, deadline).await {
                            Some(idled) => idled?,
                            None => break,
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Admission of one group of messages; refusals are counted and
    /// dead-lettered here.
    fn admit(&mut self, received: &mut Vec<Message>) -> Group {
        let received_ms = wall_clock_ms();
        let mut records = Vec::with_capacity(if self.wal.is_some() {
            received.len()
        } else {
            0
        });
        let mut late = Vec::new();
        let mut late_messages = Vec::new();
        let mut refused = Vec::new();
        let mut group = Group {
            acks: Vec::with_capacity(received.len()),
            batches: Vec::with_capacity(received.len()),
            backfilled: Vec::with_capacity(received.len()),
            late: Arc::new([]),
            late_messages: Arc::new([]),
            refused: Arc::new([]),
            received_ms,
            records: Arc::new([]),
            newest: 0,
            watermark: 0,
            budget: Vec::with_capacity(received.len()),
        };
        for mut message in received.drain(..) {
            group.budget.extend(message.budget.take());
            let admitted = if self.corrections.is_some() {
                (self.admission).admit_or_correct(&message.topic, &message.payload, received_ms)
            } else {
                (self.admission)
                    .admit(&message.topic, &message.payload, received_ms)
                    .map(Admitted::Live)
            };
            match admitted {
                Ok(Admitted::Late(batch)) => {
                    late.push(batch);
                    late_messages.push(LateMessage {
                        topic: message.topic,
                        payload: message.payload,
                        refused: AtomicBool::new(false),
                        kept: AtomicBool::new(false),
                    });
                }
                Ok(Admitted::Live(batch)) => {
                    group.newest = group.newest.max(batch.last_at());
                    group.batches.push(batch);
                    group.backfilled.push(is_backfill(&message.topic));
                    if self.wal.is_some() {
                        records.push(WalRecord {
                            topic: message.topic,
                            payload: message.payload,
                            received_ms,
                        });
                    }
                }
                Err(rejection) => {
                    let refusal = Refused {
                        topic: message.topic,
                        reason: rejection.reason,
                        detail: rejection.detail,
                        payload: message.payload,
                        kept: AtomicBool::new(false),
                    };
                    let letter = refusal.letter(received_ms);
                    letter.rejected().emit(&self.metrics);
                    // Without a WAL the client acknowledged it on receipt.
                    match &self.dead_letters {
                        Some(_) if self.wal.is_some() => refused.push(refusal),
                        Some(store) => keep_now(&self.metrics, store, &letter),
                        None => {}
                    }
                }
            }
            // Refused messages are acknowledged too (they would be refused
            // again), but in order, behind the durable ones before them.
            if let Some(ack) = message.ack {
                group.acks.push(ack);
            }
        }
        group.records = records.into();
        group.refused = refused.into();
        group.late = late.into();
        group.late_messages = late_messages.into();
        group.watermark = self.admission.watermark().current();
        self.watermark.fetch_max(group.watermark, Relaxed);
        let gaps = self.admission.sequence_gaps();
        self.metrics.sequence_gaps.fetch_add(
            gaps - std::mem::replace(&mut self.gaps_reported, gaps),
            Relaxed,
        );
        group
    }

    /// Makes a group durable: its late batches in the archive, then its
    /// live ones in the WAL once every earlier group's are queued there
    /// (`turn`: the previous group's word); again on a retry (the archive
    /// ignores what it has).
    fn submit(
        &self,
        group: &Group,
        turn: &mut Option<oneshot::Receiver<bool>>,
    ) -> impl FnOnce(u64) -> Pending + use<> {
        let (queued, next) = oneshot::channel();
        let after = turn.replace(next);
        let wal = self.wal.clone();
        let corrections = self.corrections.clone();
        let (records, late) = (group.records.clone(), group.late.clone());
        let messages = group.late_messages.clone();
        let refused = group.refused.clone();
        let (metrics, dead_letters) = (self.metrics.clone(), self.dead_letters.clone());
        let (watermark, received_ms) = (group.watermark, group.received_ms);
        move |id| {
            Box::pin(async move {
                // The WAL takes groups in the order they were admitted,
                // whatever an earlier one's late batches wait for, and none
                // after one it refused: a crash never leaves a later group
                // durable and an earlier one lost (its redelivery would be
                // judged against the later one's sequences and watermark).
                let earlier_queued = match after {
                    Some(earlier) => earlier.await.unwrap_or(false),
                    None => true,
                };
                if !earlier_queued {
                    let reason = "an earlier group was refused; taken again in order".to_string();
                    return (id, Err(WriteError::Full { reason }));
                }
                let mut pruned = Vec::new();
                if let Some(corrections) = corrections.filter(|_| !late.is_empty()) {
                    let taken = match corrections.late(late.to_vec(), watermark).await {
                        Ok(taken) => taken,
                        Err(e) => {
                            let reason = format!("archive of late data: {e}");
                            return (id, Err(WriteError::Full { reason }));
                        }
                    };
                    // Admission let these in before the archive pruned their
                    // days: refused as it would now refuse them (once, if
                    // the group is tried again).
                    for (i, taken) in taken.iter().enumerate() {
                        if let Taken::Pruned { from } = taken {
                            let message = &messages[i];
                            let why = NotWhole::Cut { from: *from };
                            let refusal = Refused {
                                topic: message.topic.clone(),
                                reason: RejectReason::TooLate,
                                detail: crate::admission::backfill_refused(&late[i].customer, why),
                                payload: message.payload.clone(),
                                kept: AtomicBool::new(false),
                            };
                            if !message.refused.swap(true, Relaxed) {
                                refusal.letter(received_ms).rejected().emit(&metrics);
                            }
                            pruned.push((i, refusal));
                        }
                    }
                }
                if let Some(store) = dead_letters
                    && (!refused.is_empty() || !pruned.is_empty())
                {
                    let kept = tokio::task::spawn_blocking(move || {
                        let letters = (refused.iter().map(|refusal| (refusal, &refusal.kept)))
                            .chain(
                                pruned
                                    .iter()
                                    .map(|(i, refusal)| (refusal, &messages[*i].kept)),
                            );
                        keep(&store, letters, received_ms)
                    });
                    let kept = kept.await.unwrap_or_else(|e| Err(e.to_string()));
                    match kept {
                        Ok(()) => metrics.dead_letter_written(),
                        Err(e) => {
                            metrics.dead_letter_failed(&e);
                            let reason = format!("dead letters of refused messages: {e}");
                            return (id, Err(WriteError::Full { reason }));
                        }
                    }
                }
                let lsns = match wal.filter(|_| !records.is_empty()) {
                    Some(wal) => match wal.submit_batch(records).await {
                        Ok(durable) => {
                            let _ = queued.send(true);
                            durable.await.map(Some)
                        }
                        Err(e) => Err(e),
                    },
                    None => {
                        let _ = queued.send(true);
                        Ok(None)
                    }
                };
                (id, lsns)
            })
        }
    }

    /// Feeds the engine and acknowledges every group that may go now.
    async fn hand_over(&mut self, handover: &mut InOrder<Group>) -> Result<(), DeliveryError> {
        for group in handover.release() {
            // Late batches the archive refused were counted as refused.
            let late: Vec<DeviceBatch> = (group.late.iter().zip(group.late_messages.iter()))
                .filter(|(_, message)| !message.refused.load(Relaxed))
                .map(|(b, _)| b.clone())
                .collect();
            let samples: usize = (group.batches.iter().chain(late.iter()))
                .map(|b| b.samples.len())
                .sum();
            self.metrics
                .messages_accepted
                .fetch_add((group.batches.len() + late.len()) as u64, Relaxed);
            self.metrics
                .samples_accepted
                .fetch_add(samples as u64, Relaxed);
            if let Some(probe) = self.metrics.probe.get() {
                for batch in &group.batches {
                    probe.engine_input(&batch.device, batch.sequence);
                }
            }
            if let Some(corrections) = &self.corrections {
                // Archived before the engine may close a window with them:
                // a restatement reads everything its windows held.
                let backfilled = &group.backfilled;
                corrections.append(LiveBatches::encode_from(&group.batches, |i| backfilled[i]));
            }
            if !group.batches.is_empty() {
                self.engine.send_all(group.batches).await?;
            }
            if !late.is_empty() {
                // Below the engine's time: it updates the devices' last
                // readings and sequences, and adds nothing to a window.
                self.engine.send_all(late).await?;
            }
            self.engine.advance(group.watermark).await?;
            self.metrics.watermark.fetch_max(group.watermark, Relaxed);
            for ack in group.acks {
                // The source is gone at shutdown: the broker redelivers, and
                // the WAL's replay makes the redelivery a duplicate.
                if let Some(acks) = self.acks.get(ack.source()) {
                    let _ = acks.send(ack);
                }
            }
        }
        Ok(())
    }

    /// Advances this lane's workers to its watermark; after `idle_after`
    /// without a message, lets event time creep forward and follows the rest
    /// of the cluster when subscribed with no backlog.
    async fn idle(&mut self, idle: Duration) -> Result<(), DeliveryError> {
        if idle > self.idle_after {
            self.admission
                .idle_for((idle - self.idle_after).as_millis() as u64);
            // With traffic, a member keeps its own watermark, so nothing it
            // still receives is refused because another member ran ahead.
            if self.metrics.subscribed.load(Relaxed) {
                self.admission.follow(self.engine.cluster_watermark());
            }
        }
        let watermark = self.admission.watermark().current();
        self.watermark.fetch_max(watermark, Relaxed);
        self.engine.advance(watermark).await?;
        self.metrics.watermark.fetch_max(watermark, Relaxed);
        Ok(())
    }
}

/// Keeps a refused message's dead letter at once (no WAL: nothing waits
/// for it); one that cannot be written is counted.
fn keep_now(metrics: &IngestMetrics, store: &Mutex<DeadLetterStore>, letter: &DeadLetter) {
    let mut store = store.lock().expect("dead-letter store poisoned");
    match store.record(letter).and_then(|()| store.flush()) {
        Ok(()) => metrics.dead_letter_written(),
        Err(e) => metrics.dead_letter_failed(&e.to_string()),
    }
}

/// Writes the letters not yet kept, then makes the file durable: the
/// group's acknowledgement waits for it. A failed try leaves what the OS
/// did not take in the store's buffer and the letters after it unmarked,
/// so the next try writes each letter once.
fn keep<'a>(
    store: &Mutex<DeadLetterStore>,
    letters: impl Iterator<Item = (&'a Refused, &'a AtomicBool)>,
    received_ms: u64,
) -> Result<(), String> {
    let mut store = store.lock().expect("dead-letter store poisoned");
    for (refusal, kept) in letters {
        if !kept.load(Relaxed) {
            (store.record(&refusal.letter(received_ms))).map_err(|e| e.to_string())?;
            kept.store(true, Relaxed);
        }
    }
    store.sync().map_err(|e| e.to_string())
}

/// Runs `work`, a hand-over to the engine (which waits while the engine
/// waits on a store that takes nothing), until it ends or, once `stop` is
/// cancelled, until `deadline` after that. `None`: left at the deadline.
/// Before, a stop while a store was locked waited in the hand-over for as
/// long as the lock held (81 s with a deadline of 5), deaf to a second
/// signal. What is left is in the WAL and unacknowledged at the broker,
/// as at a kill: the next start replays it.
async fn until_stopped<T>(
    work: impl Future<Output = T>,
    stop: &CancellationToken,
    stopping_since: &mut Option<Instant>,
    deadline: Duration,
) -> Option<T> {
    tokio::pin!(work);
    loop {
        let stop_by = stopping_since.map(|since| since + deadline);
        tokio::select! {
            done = &mut work => return Some(done),
            _ = stop.cancelled(), if stopping_since.is_none() => {
                *stopping_since = Some(Instant::now());
            }
            _ = tokio::time::sleep_until(stop_by.unwrap_or_else(Instant::now).into()),
                if stop_by.is_some() => {
                tracing::warn!(
                    "shutdown deadline: the engine still takes no records (a store behind); \
                     what it was not handed stays in the WAL, unacknowledged at the broker"
                );
                return None;
            }
        }
    }
}

/// Wall-clock time in ms since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What [`spawn`] needs besides the lanes' admissions and engine inputs.
pub struct IntakeParts {
    /// Group commit; `None`: no WAL.
    pub wal: Option<Arc<WalWriter>>,
    /// The write side.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Refused messages, kept for inspection.
    pub dead_letters: Option<DeadLetterStore>,
    /// Counters.
    pub metrics: Arc<IngestMetrics>,
    /// Cancelled to stop intake.
    pub stop: CancellationToken,
    /// Longest wait for the WAL after `stop`.
    pub deadline: Duration,
    /// Where the replay left the watermark.
    pub watermark: EventTime,
    /// The AEMP sources: each hands its messages to the lanes like an MQTT
    /// connection, and gets its acks on its own queue.
    pub pollers: Vec<crate::source::aemp::Poller>,
    /// The archive, when late data restates windows.
    pub corrections: Option<Corrections>,
}

/// Running intake: the MQTT connections and the lanes.
pub struct Intake {
    /// One task per MQTT connection.
    pub sources: Vec<tokio::task::JoinHandle<Result<(), crate::source::mqtt::SourceError>>>,
    /// One task per lane; each ends when every source has stopped.
    pub lanes: tokio::task::JoinSet<Result<(), DeliveryError>>,
    /// One task per AEMP source.
    pub pollers: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts `mqtt.connections` MQTT connections and one lane per
/// `(admission, engine input)`, connected by a [`Router`] over `workers`
/// engine workers; every task is tracked by `tasks`.
pub fn spawn(
    tasks: &tokio_util::task::TaskTracker,
    mqtt: &crate::config::MqttConfig,
    lanes: Vec<(Admission, EngineInput)>,
    workers: usize,
    idle_after: Duration,
    parts: IntakeParts,
) -> Intake {
    let queue = mqtt.queue.max(1);
    let (senders, receivers): (Vec<_>, Vec<_>) = lanes.iter().map(|_| mpsc::channel(queue)).unzip();
    let budget = Arc::new(super::route::Budget::new(mqtt.queue_bytes));
    *(parts.metrics.intake_budget.lock()).unwrap_or_else(|e| e.into_inner()) = Some(budget.clone());
    let router = Router::new(senders, workers, budget);
    let connections = mqtt.connections.max(1);
    if connections > 1 {
        tracing::warn!(
            connections,
            "several MQTT connections share the subscription: a broker that spreads its \
             messages one by one (mosquitto) lets a device's messages overtake each other, \
             by hours of event time while a backlog drains, and those are refused as \
             too_late; use it only with a broker that dispatches by topic \
             (docs/DELIVERY.md, known limits)"
        );
    }
    // Ack queues: the MQTT connections first, then the AEMP sources.
    let ack_sources = connections + parts.pollers.len();
    let (ack_senders, mut ack_receivers): (Vec<_>, Vec<_>) = match parts.wal {
        Some(_) => (0..ack_sources)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Some(rx))
            })
            .unzip(),
        None => (Vec::new(), (0..ack_sources).map(|_| None).collect()),
    };
    let sources = (0..connections)
        .map(|i| {
            tasks.spawn(crate::source::mqtt::run(
                mqtt.connection(i),
                i,
                router.clone(),
                ack_receivers[i].take(),
                parts.metrics.clone(),
                parts.stop.clone(),
            ))
        })
        .collect();
    let pollers = (parts.pollers.into_iter().enumerate())
        .map(|(i, poller)| {
            let source = connections + i;
            let intake = crate::source::aemp::poller::Intake {
                router: router.clone(),
                acks: ack_receivers[source].take(),
                source,
            };
            tasks.spawn(poller.run(intake, parts.stop.clone()))
        })
        .collect();
    drop(router);
    let dead_letters = parts.dead_letters.map(|d| Arc::new(Mutex::new(d)));
    let watermark = Arc::new(AtomicU64::new(parts.watermark));
    let mut running = tokio::task::JoinSet::new();
    for ((admission, engine), messages) in lanes.into_iter().zip(receivers) {
        let lane = Lane {
            admission,
            engine,
            wal: parts.wal.clone(),
            ledger: parts.ledger.clone(),
            dead_letters: dead_letters.clone(),
            metrics: parts.metrics.clone(),
            acks: ack_senders.clone(),
            idle_after,
            gaps_reported: 0,
            watermark: watermark.clone(),
            corrections: parts.corrections.clone(),
        };
        running.spawn(tasks.track_future(lane.run(messages, parts.stop.clone(), parts.deadline)));
    }
    Intake {
        sources,
        lanes: running,
        pollers,
    }
}

/// Whether `topic` is a device's backfill topic (`.../backfill`).
pub(super) fn is_backfill(topic: &str) -> bool {
    fleetpulse_proto::TopicKind::of(topic) == Some(fleetpulse_proto::TopicKind::Backfill)
}
