//! Ingest counters and the typed events that bump them. Each event logs once
//! and counts once; metric names are constants; no per-device labels.

use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use crate::wal::writer::WalGauges;

/// A Prometheus metric family: its name, type and help line (the help says
/// what it counts).
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
}

impl Family {
    /// A counter.
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: "counter",
            help,
        }
    }

    /// A gauge.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: "gauge",
            help,
        }
    }

    /// Writes the family's `# HELP` and `# TYPE` lines to `out`.
    pub fn write_head(&self, out: &mut String) {
        let Family { name, kind, help } = self;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
}

/// Why a message was refused. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Topic is not `fleet/{customer}/{site}/{device}/telemetry`.
    Topic,
    /// Payload over the size limit.
    TooLarge,
    /// Payload does not decode (garbage, truncated).
    Decode,
    /// Payload ids disagree with the topic.
    IdMismatch,
    /// Batch without samples.
    EmptyBatch,
    /// Batch over the sample limit.
    TooManySamples,
    /// A sample is malformed.
    InvalidSample,
    /// Customer not in customers.toml.
    UnknownCustomer,
    /// Older than the watermark: its windows are closed.
    TooLate,
    /// A sample lies too far ahead of the wall clock.
    FutureTimestamp,
    /// (device, sequence) seen before: a redelivery or a replay.
    SequenceReplayed,
    /// A new device beyond the per-customer device limit.
    DeviceLimit,
    /// A sample before the customer's contract start (or, without one,
    /// before `limits.earliest_event_time`): a unit with a lost clock.
    BeforeStart,
}

impl RejectReason {
    /// Every reason, in counter order.
    pub const ALL: [RejectReason; 13] = [
        Self::Topic,
        Self::TooLarge,
        Self::Decode,
        Self::IdMismatch,
        Self::EmptyBatch,
        Self::TooManySamples,
        Self::InvalidSample,
        Self::UnknownCustomer,
        Self::TooLate,
        Self::FutureTimestamp,
        Self::SequenceReplayed,
        Self::DeviceLimit,
        Self::BeforeStart,
    ];

    /// Stable label for counters and dead-letter records.
    /// Whether a refused message of this reason may be taken in later,
    /// once its cause is gone (a longer correction horizon, a customer or
    /// device limit added, an earlier start, the host's clock set right):
    /// its dead letter keeps the whole payload and `fleetpulse replay`
    /// sends it again.
    pub fn replayable(self) -> bool {
        matches!(
            self,
            Self::TooLate
                | Self::UnknownCustomer
                | Self::DeviceLimit
                | Self::BeforeStart
                | Self::FutureTimestamp
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::TooLarge => "too_large",
            Self::Decode => "decode",
            Self::IdMismatch => "id_mismatch",
            Self::EmptyBatch => "empty_batch",
            Self::TooManySamples => "too_many_samples",
            Self::InvalidSample => "invalid_sample",
            Self::UnknownCustomer => "unknown_customer",
            Self::TooLate => "too_late",
            Self::FutureTimestamp => "future_timestamp",
            Self::SequenceReplayed => "sequence_replayed",
            Self::DeviceLimit => "device_limit",
            Self::BeforeStart => "before_start",
        }
    }

    /// The reason for a payload validation failure.
    pub fn of(error: &fleetpulse_proto::ValidationError) -> Self {
        use fleetpulse_proto::ValidationError as E;
        match error {
            E::TooLarge { .. } => Self::TooLarge,
            E::Decode(_) => Self::Decode,
            E::IdMismatch { .. } => Self::IdMismatch,
            E::Empty => Self::EmptyBatch,
            E::TooManySamples { .. } => Self::TooManySamples,
            E::Sample { .. } => Self::InvalidSample,
        }
    }
}

impl Reason for RejectReason {
    const VALUES: &'static [Self] = &Self::ALL;
}

/// A reason (for a refusal, a failure) with a counter per value.
pub trait Reason: Copy + PartialEq + fmt::Debug + 'static {
    /// Every value, in counter order.
    const VALUES: &'static [Self];
}

/// One counter per value of the reason `R`.
#[derive(Debug)]
pub struct PerReason<R> {
    counts: Box<[AtomicU64]>,
    reason: PhantomData<R>,
}

impl<R: Reason> Default for PerReason<R> {
    fn default() -> Self {
        Self {
            counts: R::VALUES.iter().map(|_| AtomicU64::new(0)).collect(),
            reason: PhantomData,
        }
    }
}

impl<R: Reason> PerReason<R> {
    fn counter(&self, reason: R) -> &AtomicU64 {
        let i = R::VALUES.iter().position(|r| *r == reason).unwrap_or(0);
        &self.counts[i]
    }

    /// Counts `n` of `reason`; returns its count after.
    pub fn add(&self, reason: R, n: u64) -> u64 {
        self.counter(reason).fetch_add(n, Relaxed) + n
    }

    /// The count of `reason`.
    pub fn get(&self, reason: R) -> u64 {
        self.counter(reason).load(Relaxed)
    }

    /// The counts of every reason together.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// Ingest counters, shared by the source, the pipeline and the HTTP port.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    /// Messages taken from the broker.
    pub messages_received: AtomicU64,
    /// Payload bytes taken from the broker.
    pub bytes_received: AtomicU64,
    /// The budget of payload bytes on their way from the sources to the
    /// engine (`mqtt.queue_bytes`) of the intake running now (a start in
    /// place starts another).
    pub intake_budget: std::sync::Mutex<Option<Arc<crate::delivery::route::Budget>>>,
    /// Messages replayed from the WAL at start.
    pub messages_replayed: AtomicU64,
    /// Messages that passed every check and went to the engine.
    pub messages_accepted: AtomicU64,
    /// Samples in accepted messages.
    pub samples_accepted: AtomicU64,
    rejected: PerReason<RejectReason>,
    /// KPI records the engine emitted.
    pub records_emitted: AtomicU64,
    /// Late batches admitted within the correction horizon (new to the
    /// archive): they restate windows instead of being refused.
    pub late_admitted: AtomicU64,
    /// Devices whose readings arrive steadily behind the fleet (a clock
    /// hours off, [`crate::behind`]), shared by every intake lane.
    pub devices_behind: std::sync::Arc<AtomicU64>,
    /// Restatement passes handed to the stores (one customer each).
    pub restatements: AtomicU64,
    /// Records those passes restated.
    pub records_restated: AtomicU64,
    /// Archive day files the passes read (shared with their threads): a
    /// pass reads through the last window its late data changed.
    pub restatement_days_read: std::sync::Arc<AtomicU64>,
    /// Restatement and recompute attempts that failed and are retried: a
    /// count that keeps rising is a pass that cannot complete (the log
    /// says why), with every other figure still green.
    pub restatements_failed: AtomicU64,
    /// KPI records the sinks wrote.
    pub records_written: AtomicU64,
    /// Failed sink write attempts (each failed retry counts).
    pub sink_write_errors: AtomicU64,
    /// Sinks whose last write attempt failed (their records wait).
    pub sinks_failing: AtomicU64,
    /// Current watermark, ms since the epoch (the most advanced intake
    /// lane's).
    pub watermark: AtomicU64,
    /// Sequence numbers devices skipped that never arrived (upstream loss,
    /// e.g. a broker dropping messages over its queue limit).
    pub sequence_gaps: std::sync::atomic::AtomicI64,
    /// Times the broker connection failed.
    pub connection_errors: AtomicU64,
    /// Times the broker sent a packet above `mqtt.max_packet_bytes`, which
    /// breaks the connection: the broker's and the client's limits disagree.
    pub oversized_packets: AtomicU64,
    /// True once the telemetry subscription is acknowledged.
    pub subscribed: AtomicBool,
    /// Times the broker closed a connection and accepted the next one at
    /// once: most likely another client with the same client id
    /// ([`crate::source::takeover`]).
    pub takeovers: AtomicU64,
    /// True while connections of this service are fought over by another
    /// client with their client id.
    pub session_contested: AtomicBool,
    /// True while a start in place waits for a store that does not
    /// answer (`/readyz` says so; the log names the store).
    pub store_awaited: AtomicBool,
    /// Refused messages whose dead letter could not be written when they
    /// were refused (a full disk). Those still buffered (8 KiB) are written
    /// once there is room; the others are acknowledged, not kept.
    pub dead_letter_write_errors: AtomicU64,
    /// Why the last dead letter could not be written; `None` once one is
    /// written again. `/readyz` says so meanwhile.
    pub dead_letters_failing: std::sync::Mutex<Option<String>>,
    /// Reloads of the customers file that were refused (it did not check,
    /// or named no customer): the previous definitions stay in effect.
    pub customers_reload_errors: AtomicU64,
    /// Why the file on disk is not the one in effect; `None` once a reload
    /// takes it.
    pub customers_reload_failing: std::sync::Mutex<Option<String>>,
    /// The write-ahead log's gauges (size, commits, whether it is full):
    /// the service spawns its WAL writer with these
    /// ([`crate::wal::writer::WalWriter::spawn_with_gauges`]), and
    /// `/metrics` and `/readyz` read them.
    pub wal: Arc<WalGauges>,
    /// Timestamps for the benchmark harness; empty in production.
    pub probe: ProbeSlot,
    /// Counters of the AEMP sources, one set per `[[aemp]]`.
    pub aemp: crate::source::aemp::metrics::AempRegistry,
}

/// Observes the pipeline's hand-over points, for the benchmark harness
/// (`fleetpulse bench`) to measure latency. Nothing is installed in
/// production: each point then costs one check of an empty slot.
pub trait PipelineProbe: Send + Sync {
    /// A batch passed admission and is about to be handed to the engine.
    fn engine_input(&self, device: &str, sequence: u64);
    /// The engine emitted `records` closed-window records.
    fn records_emitted(&self, records: usize);
    /// A sink wrote `records` records (a write request completed).
    fn records_written(&self, records: usize);
}

/// Where a [`PipelineProbe`] is installed, at most once.
#[derive(Default)]
pub struct ProbeSlot(OnceLock<Arc<dyn PipelineProbe>>);

impl ProbeSlot {
    /// Installs `probe`; false if one was already installed.
    pub fn install(&self, probe: Arc<dyn PipelineProbe>) -> bool {
        self.0.set(probe).is_ok()
    }

    /// The installed probe, if any.
    pub fn get(&self) -> Option<&Arc<dyn PipelineProbe>> {
        self.0.get()
    }
}

impl fmt::Debug for ProbeSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "ProbeSlot(installed)"
        } else {
            "ProbeSlot(empty)"
        })
    }
}

impl IngestMetrics {
    /// Payload bytes the running intake holds (see [`Self::intake_budget`]).
    pub fn intake_bytes(&self) -> u64 {
        let budget = self.intake_budget.lock().unwrap_or_else(|e| e.into_inner());
        budget.as_ref().map_or(0, |b| b.held())
    }

    /// Messages refused for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected.get(reason)
    }

    /// Messages refused for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.total()
    }

    /// Messages received so far.
    pub fn received(&self) -> u64 {
        self.messages_received.load(Relaxed)
    }

    /// Messages accepted or rejected: fully handled.
    pub fn handled(&self) -> u64 {
        self.messages_accepted.load(Relaxed) + self.rejected_total()
    }

    /// The WAL refused records for lack of room (`reason`: what is full,
    /// the `reason` of `WriteError::Full`): `/readyz` answers 503 with it and `fleetpulse_wal_full` is 1
    /// until [`IngestMetrics::wal_resumed`]. Logs once per transition. The
    /// WAL writer calls it itself when spawned with [`IngestMetrics::wal`].
    pub fn wal_full(&self, reason: &str) {
        self.wal.full.set_full(reason);
    }

    /// The WAL took records again: ready again. Logs once per transition.
    pub fn wal_resumed(&self) {
        self.wal.full.set_resumed();
    }

    /// What is full while the WAL is; `None` while it is not.
    pub fn wal_full_reason(&self) -> Option<String> {
        self.wal.full.reason()
    }

    /// A refused message's dead letter could not be written (`error`).
    /// Logs once until one is written again: a flood of refusals on a
    /// full disk logged a line each.
    pub fn dead_letter_failed(&self, error: &str) {
        self.dead_letter_write_errors.fetch_add(1, Relaxed);
        let mut failing = self
            .dead_letters_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if failing.is_none() {
            tracing::error!(
                error,
                "cannot write dead letters: with a WAL, intake waits until it can; without one, \
                 refused messages are counted, not kept"
            );
        }
        *failing = Some(error.to_owned());
    }

    /// A dead letter was written.
    pub fn dead_letter_written(&self) {
        let mut failing = self
            .dead_letters_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if failing.take().is_some() {
            tracing::info!("dead letters written again");
        }
    }

    /// A reload of the customers file was refused (`error`): counted, and
    /// said by `/metrics` until one is taken.
    pub fn customers_reload_failed(&self, error: &str) {
        self.customers_reload_errors.fetch_add(1, Relaxed);
        *(self.customers_reload_failing.lock()).unwrap_or_else(|e| e.into_inner()) =
            Some(error.to_owned());
    }

    /// The customers file was reloaded: the one on disk is in effect.
    pub fn customers_reloaded(&self) {
        *(self.customers_reload_failing.lock()).unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Why the customers file on disk is not the one in effect, if so.
    pub fn customers_reload_failing(&self) -> Option<String> {
        (self.customers_reload_failing.lock())
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why dead letters cannot be written now; `None` while they can.
    pub fn dead_letters_failing(&self) -> Option<String> {
        (self
            .dead_letters_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner()))
        .clone()
    }
}

/// Typed event: a message was refused. Logs (the first few per reason, then
/// one in a thousand, so a flood cannot drown the log) and counts.
pub struct MessageRejected<'a> {
    /// Topic it arrived on.
    pub topic: &'a str,
    /// Why.
    pub reason: RejectReason,
    /// Details for the operator.
    pub detail: &'a str,
}

impl MessageRejected<'_> {
    /// Records the event.
    pub fn emit(&self, metrics: &IngestMetrics) {
        let count = metrics.rejected.add(self.reason, 1);
        if count <= 10 || count.is_multiple_of(1000) {
            tracing::warn!(
                topic = self.topic,
                reason = self.reason.as_str(),
                count,
                "message rejected: {}",
                self.detail
            );
        }
    }
}

/// Typed event: the broker sent a packet above the client's limit
/// (`mqtt.max_packet_bytes`). rumqttc cannot skip such a packet: it breaks
/// the connection and the broker redelivers it on the next one, so the
/// limits of broker and client disagree. Logs one line naming both settings
/// and counts.
pub struct OversizedPacket {
    /// The packet's remaining length, bytes.
    pub size: usize,
    /// The client's limit when it arrived, bytes.
    pub limit: usize,
    /// What the client takes from the next connection on.
    pub raised_to: usize,
}

impl OversizedPacket {
    /// Records the event.
    pub fn emit(&self, metrics: &IngestMetrics) {
        metrics.oversized_packets.fetch_add(1, Relaxed);
        tracing::error!(
            size = self.size,
            limit = self.limit,
            raised_to = self.raised_to,
            "the broker sent a {}-byte packet, above mqtt.max_packet_bytes = {}: the connection \
             broke and the broker redelivers it. Make the broker's limit (mosquitto \
             message_size_limit, rumqttd max_payload_size) at most mqtt.max_packet_bytes minus \
             {} bytes of topic overhead, or raise mqtt.max_packet_bytes. Taking packets up to {} \
             bytes from the next connection on, so admission refuses it as too_large and the \
             stream goes on",
            self.size,
            self.limit,
            crate::source::mqtt::PUBLISH_OVERHEAD_BYTES,
            self.raised_to,
        );
    }
}
