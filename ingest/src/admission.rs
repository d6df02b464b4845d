//! Everything a message must pass before it enters the engine, as one
//! synchronous step: topic, size, decode, ids, customer, event-time bounds,
//! sequence, watermark. Kept out of the network loop so it is tested
//! directly. A device is (customer, device id) throughout: two customers may
//! both have an `exc-07`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use fleetpulse_engine::operators::device_state::{self, UnitSequences};
use fleetpulse_engine::{DeviceBatch, DeviceKey, EventTime, FeatureCatalog, Id, Watermark};
use fleetpulse_proto::{Limits, TopicIds, TopicKind, decode_and_validate};

use crate::behind::{BehindClock, Change};
use crate::config::LimitsConfig;
use crate::convert::{Converter, wire};
use crate::corrections::{NotWhole, Reach};
use crate::customers::CustomersFile;
use crate::metrics::RejectReason;

/// A refused message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why, as a counter label.
    pub reason: RejectReason,
    /// Details for the log and the dead-letter record.
    pub detail: String,
}

/// Bounds admission enforces besides the payload limits.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Milliseconds a sample may lie ahead of the wall clock.
    pub max_future_ms: u64,
    /// Most devices per customer.
    pub max_devices_per_customer: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_future_ms: 600_000,
            max_devices_per_customer: 100_000,
        }
    }
}

/// The earliest event time admitted per customer: data before it comes from
/// a unit whose clock was lost (a first message dated 1970 would open every
/// day since), and is refused as `before_start`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Earliest {
    /// For customers without a contract start.
    pub default_ms: EventTime,
    /// Per customer id: its contract start.
    pub contract_starts: HashMap<String, EventTime>,
}

impl Earliest {
    /// From `[limits] earliest_event_time` and the customers file's contract
    /// starts, when the service has one.
    pub fn from_config(limits: &LimitsConfig, customers: Option<&CustomersFile>) -> Self {
        let default_ms = limits
            .earliest_event_time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as EventTime);
        Self {
            default_ms,
            contract_starts: customers
                .map(CustomersFile::contract_starts)
                .unwrap_or_default(),
        }
    }

    /// The earliest event time admitted from `customer`.
    pub fn of(&self, customer: &str) -> EventTime {
        self.contract_starts
            .get(customer)
            .copied()
            .unwrap_or(self.default_ms)
    }
}

/// An admitted message.
#[derive(Debug, Clone, PartialEq)]
pub enum Admitted {
    /// At or after the watermark: the live dataflow counts it.
    Live(DeviceBatch),
    /// Older than the watermark, within the correction horizon: archived,
    /// and the windows it touches are restated (`crate::corrections`).
    Late(DeviceBatch),
}

impl Admitted {
    /// The batch.
    pub fn batch(&self) -> &DeviceBatch {
        match self {
            Self::Live(b) | Self::Late(b) => b,
        }
    }
}

/// Decides whether a message may enter the engine.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    bounds: Bounds,
    customers: Option<HashSet<String>>,
    converter: Converter,
    watermark: Watermark,
    earliest: Earliest,
    /// Sequences seen per device and unit epoch: redeliveries and replays
    /// are refused here (the engine deduplicates too, for what slips
    /// through).
    sequences: foldhash::HashMap<DeviceKey, UnitSequences>,
    devices_per_customer: DeviceCounts,
    sequence_gaps: i64,
    /// How far behind the watermark data is still admitted as late (0:
    /// refused, as without an archive).
    correction_horizon_ms: u64,
    /// What the archive can restate: late data starting before its start
    /// is refused, and a backfill older than the horizon needs the
    /// customer's every batch in it.
    reach: std::sync::Arc<Reach>,
    /// Devices steadily behind the watermark (a clock hours off).
    behind: BehindClock,
    /// How many this lane names now, added to the lanes' shared gauge.
    behind_gauge: std::sync::Arc<AtomicU64>,
}

/// Devices seen per customer, shared by the admissions of every intake lane
/// so that `max_devices_per_customer` bounds the customer, not each lane.
/// Taken only when a lane meets a device for the first time.
pub type DeviceCounts = std::sync::Arc<std::sync::Mutex<HashMap<Id, usize>>>;

impl Admission {
    /// `customers`: the known customer ids, or `None` to accept any.
    pub fn new(
        limits: Limits,
        customers: Option<HashSet<String>>,
        catalog: FeatureCatalog,
        lateness_ms: u64,
    ) -> Self {
        Self {
            limits,
            bounds: Bounds::default(),
            customers,
            converter: Converter::new(catalog),
            watermark: Watermark::new(lateness_ms),
            earliest: Earliest::default(),
            sequences: foldhash::HashMap::default(),
            devices_per_customer: DeviceCounts::default(),
            sequence_gaps: 0,
            correction_horizon_ms: 0,
            reach: Default::default(),
            behind: BehindClock::default(),
            behind_gauge: Default::default(),
        }
    }

    /// Counts the devices named behind ([`crate::behind`]) in `gauge`,
    /// shared with the other lanes (`fleetpulse_devices_behind`).
    pub fn with_devices_behind(mut self, gauge: std::sync::Arc<AtomicU64>) -> Self {
        self.behind_gauge = gauge;
        self
    }

    /// Names a device whose batches stay behind the watermark by a steady
    /// lag, once, and says when it is back on time.
    fn watch_behind(
        &mut self,
        key: &DeviceKey,
        newest: EventTime,
        watermark: EventTime,
        now_ms: u64,
    ) {
        match self.behind.observe(key, newest, watermark, now_ms) {
            Some(Change::Behind(lag)) => {
                self.behind_gauge.fetch_add(1, Relaxed);
                tracing::warn!(
                    customer = %key.0,
                    device = %key.1,
                    behind = %jiff::SignedDuration::from_millis(lag as i64),
                    "the device's readings arrive steadily behind the rest of the fleet, \
                     for 30 minutes now: its clock or time-zone setting is off (local time \
                     sent as UTC?), and every batch of it is late (restated within \
                     engine.correction_horizon, refused as too_late beyond)"
                );
            }
            Some(Change::Back) => {
                self.behind_gauge.fetch_sub(1, Relaxed);
                tracing::info!(customer = %key.0, device = %key.1, "the device is on time again");
            }
            None => {}
        }
    }

    /// Replaces operator ids by pseudonyms (`[privacy]`).
    pub fn with_pseudonyms(
        mut self,
        pseudonyms: Option<std::sync::Arc<crate::privacy::Pseudonyms>>,
    ) -> Self {
        self.converter = std::mem::take(&mut self.converter).with_pseudonyms(pseudonyms);
        self
    }

    /// Shares the per-customer device counts with the other lanes.
    pub fn with_device_counts(mut self, counts: DeviceCounts) -> Self {
        self.devices_per_customer = counts;
        self
    }

    /// Sets the bounds.
    pub fn with_bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// Admits data up to `horizon_ms` behind the watermark as late (see
    /// [`Self::admit_or_correct`]); 0 refuses it.
    pub fn with_correction_horizon(
        mut self,
        horizon_ms: u64,
        reach: std::sync::Arc<Reach>,
    ) -> Self {
        self.correction_horizon_ms = horizon_ms;
        self.reach = reach;
        self
    }

    /// Sets the earliest event times; without it any time is admitted.
    pub fn with_earliest(mut self, earliest: Earliest) -> Self {
        self.earliest = earliest;
        self
    }

    /// Sequence numbers skipped by devices and not delivered (yet): upstream
    /// loss made visible.
    pub fn sequence_gaps(&self) -> i64 {
        self.sequence_gaps
    }

    /// The watermark after everything admitted so far.
    pub fn watermark(&self) -> &Watermark {
        &self.watermark
    }

    /// Lets the watermark creep forward after `idle_ms` of silence.
    pub fn idle_for(&mut self, idle_ms: u64) {
        self.watermark.idle_for(idle_ms);
    }

    /// Raises the watermark to where the rest of the cluster stands (this
    /// input has been idle); data older than it is late from now on.
    pub fn follow(&mut self, cluster_watermark: fleetpulse_engine::EventTime) {
        self.watermark.raise_to(cluster_watermark);
    }

    /// Holds the watermark at or below `ceiling` (see
    /// [`Watermark::hold_below`]).
    pub fn hold_watermark_below(&mut self, ceiling: fleetpulse_engine::EventTime) {
        self.watermark.hold_below(ceiling);
    }

    /// The earliest reading of a message, if it decodes; nothing is
    /// recorded (no sequence, no watermark).
    pub fn first_at(
        &mut self,
        topic: &str,
        payload: &[u8],
    ) -> Option<fleetpulse_engine::EventTime> {
        let ids = TopicIds::parse(topic).ok()?;
        let catalog = self.converter.catalog();
        if let Some(parsed) = wire::parse(&ids, payload, &self.limits, catalog) {
            return parsed.samples.first().map(|s| s.at);
        }
        let batch = decode_and_validate(&ids, payload, &self.limits).ok()?;
        Some(self.converter.batch(batch).first_at())
    }

    /// The batch `payload` holds, read straight from its bytes, or decoded
    /// by prost where that reader leaves it (which then says what is
    /// wrong); refused when its customer is not in the customers file.
    fn read(&mut self, ids: &TopicIds<'_>, payload: &[u8]) -> Result<DeviceBatch, Rejection> {
        let unknown = |customer: &str| Rejection {
            reason: RejectReason::UnknownCustomer,
            detail: format!("customer `{customer}` is not in the customers file"),
        };
        let known = |customer: &str| (self.customers.as_ref()).is_none_or(|k| k.contains(customer));
        if let Some(parsed) = wire::parse(ids, payload, &self.limits, self.converter.catalog()) {
            if !known(ids.customer) {
                return Err(unknown(ids.customer));
            }
            return Ok(self.converter.parsed(ids, parsed));
        }
        let batch = decode_and_validate(ids, payload, &self.limits).map_err(|e| Rejection {
            reason: RejectReason::of(&e),
            detail: e.to_string(),
        })?;
        if !known(&batch.customer_id) {
            return Err(unknown(&batch.customer_id));
        }
        Ok(self.converter.batch(batch))
    }

    /// Checks and converts one message received at wall time `now_ms`;
    /// data older than the watermark is refused (`too_late`), whatever the
    /// correction horizon (a WAL replay's rule).
    pub fn admit(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<DeviceBatch, Rejection> {
        match self.check(topic, payload, now_ms, false)? {
            Admitted::Live(batch) | Admitted::Late(batch) => Ok(batch),
        }
    }

    /// Like [`Self::admit`], but a batch older than the watermark and
    /// within the correction horizon is admitted as [`Admitted::Late`].
    pub fn admit_or_correct(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Admitted, Rejection> {
        let corrections = self.correction_horizon_ms > 0;
        self.check(topic, payload, now_ms, corrections)
    }

    fn check(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
        corrections: bool,
    ) -> Result<Admitted, Rejection> {
        let ids = TopicIds::parse(topic).map_err(|e| Rejection {
            reason: RejectReason::Topic,
            detail: e.to_string(),
        })?;
        let backfill = ids.kind == TopicKind::Backfill;
        let batch = self.read(&ids, payload)?;
        let newest = batch.last_at();
        if newest > now_ms.saturating_add(self.bounds.max_future_ms) {
            return Err(Rejection {
                reason: RejectReason::FutureTimestamp,
                detail: format!(
                    "sample at {newest} ms is {} ms ahead of the clock (limit {} ms; every \
                     device ahead by about as much: this host's clock is behind)",
                    newest - now_ms,
                    self.bounds.max_future_ms
                ),
            });
        }
        // A unit cannot have started after now: an epoch ahead (a clock
        // glitch, a GPS week rollover) would take the device's sequence
        // window and refuse its true epoch's batches from then on.
        let started = batch.unit_epoch.saturating_mul(1000);
        if started > now_ms.saturating_add(self.bounds.max_future_ms) {
            return Err(Rejection {
                reason: RejectReason::FutureTimestamp,
                detail: format!(
                    "unit epoch {} s ({}) is ahead of the clock: the unit cannot have started yet \
                     (limit {} ms)",
                    batch.unit_epoch,
                    timestamp(started),
                    self.bounds.max_future_ms
                ),
            });
        }
        let oldest = batch.samples.iter().map(|s| s.at).min().unwrap_or(0);
        let earliest = self.earliest.of(&batch.customer);
        if oldest < earliest {
            return Err(Rejection {
                reason: RejectReason::BeforeStart,
                detail: format!(
                    "sample at {} is before {} ({}) of customer `{}`",
                    timestamp(oldest),
                    timestamp(earliest),
                    if self.earliest.contract_starts.contains_key(&*batch.customer) {
                        "the contract start"
                    } else {
                        "limits.earliest_event_time"
                    },
                    batch.customer
                ),
            });
        }
        let key = (batch.customer.clone(), batch.device.clone());
        if !self.sequences.contains_key(&key) {
            let mut counts = self
                .devices_per_customer
                .lock()
                .expect("device counts poisoned");
            let count = counts.entry(batch.customer.clone()).or_default();
            if *count >= self.bounds.max_devices_per_customer {
                return Err(Rejection {
                    reason: RejectReason::DeviceLimit,
                    detail: format!(
                        "customer `{}` already has {} devices, the limit; device `{}` refused",
                        batch.customer, count, batch.device
                    ),
                });
            }
            *count += 1;
        }
        let watermark = self.watermark.current();
        let late = batch.first_at() < watermark;
        let within = batch.first_at().saturating_add(self.correction_horizon_ms) >= watermark;
        let mut correctable =
            corrections && late && within && batch.first_at() >= self.reach.correctable_from();
        if backfill && late && !corrections {
            return Err(Rejection {
                reason: RejectReason::TooLate,
                detail: format!(
                    "backfill of customer `{}` refused: the service keeps no archive to fold \
                     it in (engine.correction_horizon is 0, or no [wal], or a cluster of \
                     several processes)",
                    batch.customer
                ),
            });
        }
        if backfill && late && !correctable {
            // History older than the horizon: taken in when the journey can
            // be folded again from it (the archive holds all the rest).
            if let Err(why) = self.reach.whole(&batch.customer, batch.first_at()) {
                return Err(Rejection {
                    reason: RejectReason::TooLate,
                    detail: backfill_refused(&batch.customer, why),
                });
            }
            correctable = true;
        }
        if !backfill {
            self.watch_behind(&key, batch.last_at(), watermark, now_ms);
        }
        let window = self.sequences.entry(key.clone()).or_default();
        let mut probe = window.clone();
        let mut gaps = 0;
        // Open below the first sequence of a unit this admission saw: its
        // memory starts at the WAL's replay, so such a batch is a unit's
        // buffer behind the reconnect message it first heard, or a replay
        // of one taken before the WAL's cut, which the engine (whose memory
        // holds every batch since it met the unit) and, for late data, the
        // archive tell apart. Admitted once either way: the floor moves.
        match probe.admit(batch.unit_epoch, batch.sequence, &mut gaps, true) {
            device_state::Admission::New => {}
            // In a range of missing sequences forgotten past the bound: the
            // archive tells a redelivery.
            device_state::Admission::TooOld if correctable => {}
            verdict => {
                return Err(Rejection {
                    reason: RejectReason::SequenceReplayed,
                    detail: format!(
                        "device `{}` of customer `{}` unit epoch {} sequence {} was {}",
                        batch.device,
                        batch.customer,
                        batch.unit_epoch,
                        batch.sequence,
                        if verdict == device_state::Admission::Duplicate {
                            "delivered before"
                        } else {
                            "older than the sequences it remembers"
                        }
                    ),
                });
            }
        }
        // History that reaches into the device's live telemetry: its
        // readings are a second unit's copy of the live unit's, and would
        // count twice.
        if backfill
            && let Some(live) = self.reach.first_live_at(&batch.customer, &batch.device)
            && batch.last_at() >= live
        {
            return Err(Rejection {
                reason: RejectReason::TooLate,
                detail: format!(
                    "backfill of customer `{}` refused: device `{}`'s batch reaches {}, and its \
                     live telemetry began at {}: its readings would count twice; backfill only \
                     the history before that",
                    batch.customer,
                    batch.device,
                    timestamp(batch.last_at()),
                    timestamp(live)
                ),
            });
        }
        let admitted = if correctable {
            Admitted::Late(batch)
        } else {
            let horizon = self.correction_horizon_ms;
            let archive_from = self.reach.correctable_from();
            self.watermark
                .admit(batch.first_at(), batch.last_at())
                .map_err(|late| Rejection {
                    reason: RejectReason::TooLate,
                    detail: format!(
                        "batch {} of device `{}` starts at {}, {} behind the watermark; its windows are closed{}",
                        batch.sequence,
                        batch.device,
                        timestamp(late.first_at),
                        jiff::SignedDuration::from_millis((late.watermark - late.first_at) as i64),
                        if horizon > 0 && corrections && within {
                            format!(
                                " and it starts before {}, where the archive begins (it holds \
                                 nothing older: a horizon raised since keeps more from then on)",
                                timestamp(archive_from)
                            )
                        } else if horizon > 0 && corrections {
                            format!(
                                " and it is beyond engine.correction_horizon ({}); `fleetpulse backfill` of the dead-letter file takes it in (a new customer's history, however old), `fleetpulse replay` once a horizon covers it",
                                jiff::SignedDuration::from_millis(horizon as i64)
                            )
                        } else {
                            String::new()
                        }
                    ),
                })?;
            Admitted::Live(batch)
        };
        // Record the sequence only once the batch is in.
        *self.sequences.get_mut(&key).expect("inserted above") = probe;
        self.sequence_gaps += gaps;
        Ok(admitted)
    }
}

/// An event time as RFC 3339, for messages.
fn timestamp(ms: EventTime) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map_or_else(|_| format!("{ms} ms"), |t| t.to_string())
}

/// Why a backfilled batch of `customer` is refused as too late: its
/// journey cannot be folded again from it.
pub fn backfill_refused(customer: &str, why: NotWhole) -> String {
    let why = match why {
        NotWhole::Cut { from } if from == EventTime::MAX => {
            "days of its telemetry past the correction horizon were pruned from the archive"
                .to_string()
        }
        NotWhole::Cut { from } => format!(
            "days of its telemetry past the correction horizon were pruned from the archive \
             (it takes the customer's batches from {} on)",
            timestamp(from)
        ),
        NotWhole::Before { first } => format!(
            "its telemetry since {} began before the archive did",
            timestamp(first)
        ),
    };
    format!(
        "backfill of customer `{customer}` refused: {why}; backfill a customer's history \
         before, or within engine.correction_horizon of, its first telemetry"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::v1;
    use prost::Message;

    const NOW: u64 = 1_000_000;

    fn payload_of(customer: &str, device: &str, sequence: u64, at: i64) -> Vec<u8> {
        unit_payload(customer, device, 0, sequence, at)
    }

    fn unit_payload(customer: &str, device: &str, epoch: u64, sequence: u64, at: i64) -> Vec<u8> {
        v1::TelemetryBatch {
            device_id: device.into(),
            customer_id: customer.into(),
            site_id: "s".into(),
            sequence,
            unit_epoch: epoch,
            firmware_version: "1".into(),
            samples: vec![v1::Sample {
                event_time_ms: at,
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn payload(customer: &str, at: i64) -> Vec<u8> {
        payload_of(customer, "d", 1, at)
    }

    fn admission() -> Admission {
        let known = ["c".to_string()].into_iter().collect();
        Admission::new(
            Limits::default(),
            Some(known),
            FeatureCatalog::default(),
            1000,
        )
        .with_bounds(Bounds {
            max_future_ms: 60_000,
            max_devices_per_customer: 2,
        })
    }

    fn reason(a: &mut Admission, topic: &str, payload: &[u8]) -> RejectReason {
        a.admit(topic, payload, NOW).unwrap_err().reason
    }

    /// Batches of a unit whose clock jumped years ahead are refused, so
    /// they cannot push the unit's true epoch out of the sequence windows
    /// the engine keeps: its next batches go on being taken.
    #[test]
    fn a_unit_epoch_ahead_of_the_clock_is_refused_and_the_true_one_goes_on() {
        let mut a = admission();
        let t = "fleet/c/s/d/telemetry";
        let epoch = NOW / 1000 - 100;
        assert!(
            a.admit(t, &unit_payload("c", "d", epoch, 1, 5000), NOW)
                .is_ok()
        );
        for sequence in 1..=5 {
            let ahead = unit_payload("c", "d", epoch + 620_000_000, sequence, 6000);
            let refused = a.admit(t, &ahead, NOW).unwrap_err();
            assert_eq!(refused.reason, RejectReason::FutureTimestamp);
            assert!(refused.detail.contains("unit epoch"), "{}", refused.detail);
        }
        // Within the clock's tolerance: a unit that just started.
        let just = unit_payload("c", "e", NOW / 1000 + 30, 1, 5000);
        assert!(a.admit("fleet/c/s/e/telemetry", &just, NOW).is_ok());
        assert!(
            a.admit(t, &unit_payload("c", "d", epoch, 2, 6000), NOW)
                .is_ok()
        );
    }

    #[test]
    fn each_failure_has_its_reason() {
        let mut a = admission();
        let t = "fleet/c/s/d/telemetry";
        assert_eq!(
            reason(&mut a, "fleet/c/s/d", &payload("c", 5000)),
            RejectReason::Topic
        );
        assert_eq!(reason(&mut a, t, b"\x0a\xff"), RejectReason::Decode);
        // Empty is no batch, not one whose ids differ from the topic's.
        assert_eq!(reason(&mut a, t, b""), RejectReason::Decode);
        // Text that parses as unknown fields (tag 13, a string): no ids.
        assert_eq!(reason(&mut a, t, b"j\x03abc"), RejectReason::Decode);
        assert_eq!(
            reason(&mut a, "fleet/x/s/d/telemetry", &payload("c", 5000)),
            RejectReason::IdMismatch
        );
        assert_eq!(
            reason(&mut a, "fleet/x/s/d/telemetry", &payload("x", 5000)),
            RejectReason::UnknownCustomer
        );
        assert_eq!(
            reason(&mut a, t, &payload("c", (NOW + 120_000) as i64)),
            RejectReason::FutureTimestamp
        );
        assert!(a.admit(t, &payload("c", 5000), NOW).is_ok());
        assert_eq!(a.watermark().current(), 4000);
        assert_eq!(
            reason(&mut a, t, &payload("c", 5000)),
            RejectReason::SequenceReplayed
        );
        assert_eq!(
            reason(&mut a, t, &payload_of("c", "d", 2, 3000)),
            RejectReason::TooLate
        );
        // The late batch did not consume its sequence number.
        assert!(a.admit(t, &payload_of("c", "d", 2, 5000), NOW).is_ok());
        assert!(
            a.admit("fleet/c/s/e/telemetry", &payload_of("c", "e", 1, 5000), NOW)
                .is_ok()
        );
        assert_eq!(
            reason(
                &mut a,
                "fleet/c/s/f/telemetry",
                &payload_of("c", "f", 1, 5000)
            ),
            RejectReason::DeviceLimit
        );
    }

    #[test]
    fn late_data_before_the_archive_is_refused_naming_where_it_begins() {
        // A horizon of 1,000 s, an archive that begins at 400 s (a horizon
        // raised since: what the archive pruned before is gone).
        let reach = std::sync::Arc::new(Reach::from(400_000));
        let mut a = admission().with_correction_horizon(1_000_000, reach);
        let live = "fleet/c/s/d/telemetry";
        a.admit_or_correct(live, &payload_of("c", "d", 100, 900_000), NOW)
            .unwrap();
        let taken = a.admit_or_correct(live, &payload_of("c", "d", 50, 450_000), NOW);
        assert!(matches!(taken, Ok(Admitted::Late(_))));
        let refused =
            (a.admit_or_correct(live, &payload_of("c", "d", 20, 300_000), NOW)).unwrap_err();
        assert_eq!(refused.reason, RejectReason::TooLate);
        assert!(
            refused.detail.contains("where the archive begins")
                && refused.detail.contains("1970-01-01T00:06:40Z")
                && !refused.detail.contains("beyond engine.correction_horizon"),
            "{}",
            refused.detail
        );
    }

    #[test]
    fn backfill_beyond_the_horizon_needs_the_customers_whole_history() {
        let reach = std::sync::Arc::new(Reach::from(0));
        let mut a = admission().with_correction_horizon(10_000, reach.clone());
        let (live, backfill) = ("fleet/c/s/d/telemetry", "fleet/c/s/d/backfill");
        a.admit_or_correct(live, &payload_of("c", "d", 100, 500_000), NOW)
            .unwrap();
        // Telemetry beyond the horizon: refused.
        let old = payload_of("c", "d", 99, 1_000);
        let refused = a.admit_or_correct(live, &old, NOW).unwrap_err();
        assert_eq!(refused.reason, RejectReason::TooLate);
        let old = payload_of("c", "d", 1, 1_000);
        // The same as backfill, every batch of the customer archived: late.
        let taken = a.admit_or_correct(backfill, &old, NOW).unwrap();
        assert!(matches!(taken, Admitted::Late(_)));
        // Once the archive pruned days of the customer, refused, saying why.
        let cut = crate::corrections::Reached {
            first_live_at: Some(2_000),
            whole_from: 1_800,
        };
        reach.pretend("c", cut);
        let old = payload_of("c", "d", 2, 1_500);
        let refused = a.admit_or_correct(backfill, &old, NOW).unwrap_err();
        assert_eq!(refused.reason, RejectReason::TooLate);
        assert!(
            refused.detail.contains("backfill of customer `c`"),
            "{}",
            refused.detail
        );
        assert!(refused.detail.contains("pruned"), "{}", refused.detail);
        // What starts after the pruned days is held whole: taken (the rest
        // of a backfill that a pass and a prune came in the middle of).
        let after = payload_of("c", "d", 3, 1_800);
        let taken = a.admit_or_correct(backfill, &after, NOW).unwrap();
        assert!(matches!(taken, Admitted::Late(_)));
        // History that reaches into the device's live telemetry (from
        // 2,000) would count its readings twice: refused, saying from when.
        // Another device of the customer, live later, is not held to it,
        // nor is the same id of another customer.
        reach.pretend_live("c", "d", 2_000);
        reach.pretend_live("c", "e", 9_000);
        reach.pretend_live("x", "d", 1_000);
        let before = payload_of("c", "e", 1, 2_500);
        let taken = a
            .admit_or_correct("fleet/c/s/e/backfill", &before, NOW)
            .unwrap();
        assert!(matches!(taken, Admitted::Late(_)));
        let overlap = payload_of("c", "d", 4, 2_000);
        let refused = a.admit_or_correct(backfill, &overlap, NOW).unwrap_err();
        assert_eq!(refused.reason, RejectReason::TooLate);
        assert!(
            refused
                .detail
                .contains("live telemetry began at 1970-01-01T00:00:02Z"),
            "{}",
            refused.detail
        );
        // Refused, its sequence is not taken: sent again, refused the same.
        let again = a.admit_or_correct(backfill, &overlap, NOW).unwrap_err();
        assert_eq!(again.detail, refused.detail);
        // Without an archive: refused, saying so.
        let mut plain = admission();
        plain
            .admit(live, &payload_of("c", "d", 100, 500_000), NOW)
            .unwrap();
        let refused = plain.admit(backfill, &old, NOW).unwrap_err();
        assert!(refused.detail.contains("no archive"), "{}", refused.detail);
    }

    #[test]
    fn sequence_gaps_are_counted() {
        let mut a = admission();
        let t = "fleet/c/s/d/telemetry";
        a.admit(t, &payload_of("c", "d", 1, 5000), NOW).unwrap();
        a.admit(t, &payload_of("c", "d", 4, 6000), NOW).unwrap();
        assert_eq!(a.sequence_gaps(), 2);
    }

    const DAY: u64 = 86_400_000;
    /// 2026-01-05T00:00:00Z.
    const T0: u64 = 1_767_571_200_000;

    /// Two units of one customer, a batch a minute each: `ok` on time,
    /// `skew` sending local time as UTC, 5 hours behind. Every batch of
    /// `skew` is refused as `too_late` (no correction horizon here), and
    /// after 30 minutes it is named in the shared gauge, `ok` never; set
    /// right, it leaves the gauge.
    #[test]
    fn a_unit_steadily_hours_behind_is_counted_in_the_gauge() {
        let gauge = std::sync::Arc::new(AtomicU64::new(0));
        let mut a = open_admission(&["acme"]).with_devices_behind(gauge.clone());
        let topic = |d: &str| format!("fleet/acme/s/{d}/telemetry");
        let (t0, min, hour) = (1_800_000_000_000_i64, 60_000_i64, 3_600_000_i64);
        let mut named_at = None;
        for m in 0..45 {
            let now = t0 + m * min;
            let seq = m as u64 + 1;
            a.admit(
                &topic("ok"),
                &payload_of("acme", "ok", seq, now - 1_000),
                now as u64,
            )
            .unwrap();
            let late = payload_of("acme", "skew", seq, now - 5 * hour);
            let refused = a.admit(&topic("skew"), &late, now as u64).unwrap_err();
            assert_eq!(refused.reason, RejectReason::TooLate);
            if named_at.is_none() && gauge.load(Relaxed) == 1 {
                named_at = Some(m);
            }
        }
        assert_eq!(named_at, Some(30));
        assert_eq!(gauge.load(Relaxed), 1);
        let now = t0 + 46 * min;
        a.admit(
            &topic("skew"),
            &payload_of("acme", "skew", 50, now),
            now as u64,
        )
        .unwrap();
        assert_eq!(gauge.load(Relaxed), 0);
    }

    fn open_admission(customers: &[&str]) -> Admission {
        let known = customers.iter().map(|c| c.to_string()).collect();
        Admission::new(
            Limits::default(),
            Some(known),
            FeatureCatalog::default(),
            3_600_000,
        )
    }

    #[test]
    fn the_same_device_id_of_two_customers_is_two_devices() {
        let mut a = open_admission(&["acme", "bolt"]).with_bounds(Bounds {
            max_devices_per_customer: 1,
            ..Bounds::default()
        });
        let now = T0 + DAY;
        let bolt = "fleet/bolt/s/exc-07/telemetry";
        let acme = "fleet/acme/s/exc-07/telemetry";
        a.admit(bolt, &payload_of("bolt", "exc-07", 1000, T0 as i64), now)
            .unwrap();
        a.admit(acme, &payload_of("acme", "exc-07", 3, T0 as i64 + 1), now)
            .unwrap();
        a.admit(acme, &payload_of("acme", "exc-07", 4, T0 as i64 + 2), now)
            .unwrap();
        // Each customer's exc-07 is its first device, and keeps its own
        // replay window.
        assert_eq!(
            a.admit(acme, &payload_of("acme", "exc-07", 3, T0 as i64 + 3), now)
                .unwrap_err()
                .reason,
            RejectReason::SequenceReplayed
        );
        a.admit(
            bolt,
            &payload_of("bolt", "exc-07", 1001, T0 as i64 + 4),
            now,
        )
        .unwrap();
        assert_eq!(a.sequence_gaps(), 0);
    }

    /// A unit's buffer of hundreds of batches after its reconnect message:
    /// each is admitted once, however far behind the newest, and counted
    /// out of the gaps.
    #[test]
    fn a_buffer_far_behind_the_reconnect_is_admitted_once() {
        let mut a = open_admission(&["acme"]);
        let t = "fleet/acme/s/exc-07/telemetry";
        let at = |seq: u64| (T0 + seq * 1_000) as i64;
        let now = T0 + DAY;
        a.admit(t, &payload_of("acme", "exc-07", 1, at(1)), now)
            .unwrap();
        a.admit(t, &payload_of("acme", "exc-07", 300, at(300)), now)
            .unwrap();
        assert_eq!(a.sequence_gaps(), 298);
        for seq in (2..300).rev() {
            a.admit(t, &payload_of("acme", "exc-07", seq, at(seq)), now)
                .unwrap();
        }
        assert_eq!(a.sequence_gaps(), 0);
        let replay = a
            .admit(t, &payload_of("acme", "exc-07", 20, at(20)), now)
            .unwrap_err();
        assert_eq!(replay.reason, RejectReason::SequenceReplayed);
        assert!(
            replay.detail.contains("delivered before"),
            "{}",
            replay.detail
        );
    }

    /// A unit first heard at its reconnect message, with a buffer of 109
    /// half-minute batches behind it (all within `allowed_lateness`): each is
    /// admitted once, none refused as a replay for lying below the first
    /// sequence admission saw; a replay of one is refused.
    #[test]
    fn a_unit_first_met_at_its_reconnect_has_its_whole_buffer_admitted() {
        let mut a = open_admission(&["acme"]);
        let t = "fleet/acme/s/exc-07/telemetry";
        let at = |seq: u64| (T0 + seq * 30_000) as i64;
        let now = T0 + 120 * 30_000;
        a.admit(t, &payload_of("acme", "exc-07", 110, at(110)), now)
            .unwrap();
        for seq in (1..110).rev() {
            let admitted = a.admit(t, &payload_of("acme", "exc-07", seq, at(seq)), now);
            assert!(admitted.is_ok(), "sequence {seq}: {admitted:?}");
        }
        assert_eq!(a.sequence_gaps(), 0);
        for seq in [1, 40, 109] {
            let replay = a
                .admit(t, &payload_of("acme", "exc-07", seq, at(seq)), now)
                .unwrap_err();
            assert_eq!(replay.reason, RejectReason::SequenceReplayed, "{seq}");
        }
    }

    #[test]
    fn a_replaced_unit_restarts_its_sequence_under_a_higher_epoch() {
        let mut a = open_admission(&["acme"]);
        let now = T0 + DAY;
        let t = "fleet/acme/s/exc-07/telemetry";
        let at = |m: u64| (T0 + m * 60_000) as i64;
        let (old, new) = (1_700_000_000, 1_767_600_000);
        for seq in 41..=43 {
            a.admit(t, &unit_payload("acme", "exc-07", old, seq, at(seq)), now)
                .unwrap();
        }
        // The new unit's sequence 1 is admitted, not a replay of the old 1.
        a.admit(t, &unit_payload("acme", "exc-07", new, 1, at(50)), now)
            .unwrap();
        a.admit(t, &unit_payload("acme", "exc-07", new, 2, at(51)), now)
            .unwrap();
        // The old unit's last, delayed batch still counts.
        a.admit(t, &unit_payload("acme", "exc-07", old, 44, at(44)), now)
            .unwrap();
        // Replays within either epoch are still refused.
        for (epoch, seq, m) in [(old, 42, 42), (old, 44, 44), (new, 1, 50), (new, 2, 51)] {
            let err = a
                .admit(t, &unit_payload("acme", "exc-07", epoch, seq, at(m)), now)
                .unwrap_err();
            assert_eq!(err.reason, RejectReason::SequenceReplayed, "{epoch} {seq}");
            assert!(
                err.detail.contains(&format!("unit epoch {epoch}")),
                "{}",
                err.detail
            );
        }
        // A legacy unit (no epoch) is older than any real one.
        assert_eq!(
            a.admit(t, &unit_payload("acme", "exc-07", 0, 1, at(52)), now)
                .map(|b| b.unit_epoch),
            Ok(0)
        );
        assert_eq!(a.sequence_gaps(), 0);
    }

    fn earliest(default_ms: u64, starts: &[(&str, u64)]) -> Earliest {
        Earliest {
            default_ms,
            contract_starts: starts.iter().map(|(c, t)| (c.to_string(), *t)).collect(),
        }
    }

    #[test]
    fn a_batch_dated_1970_is_refused_before_it_moves_anything() {
        let limits = LimitsConfig::default();
        let mut a = Admission::new(Limits::default(), None, FeatureCatalog::default(), 1000)
            .with_earliest(Earliest::from_config(&limits, None));
        let now = T0;
        let t = "fleet/c/s/d/telemetry";
        let err = a
            .admit(t, &payload_of("c", "d", 1, 5_000), now)
            .unwrap_err();
        assert_eq!(err.reason, RejectReason::BeforeStart);
        assert!(
            err.detail.contains("1970-01-01T00:00:05Z"),
            "{}",
            err.detail
        );
        assert!(
            err.detail.contains("2015-01-01T00:00:00Z"),
            "{}",
            err.detail
        );
        // Nothing moved: no watermark, no sequence, no device counted.
        assert_eq!(a.watermark().current(), Watermark::new(1000).current());
        a.admit(t, &payload_of("c", "d", 1, T0 as i64), now)
            .unwrap();
        assert_eq!(a.sequence_gaps(), 0);
        // One old sample among new ones refuses the whole batch.
        let mut mixed = v1::TelemetryBatch::decode(&*payload_of("c", "d", 2, T0 as i64)).unwrap();
        mixed.samples.insert(
            0,
            v1::Sample {
                event_time_ms: 1_000,
                ..Default::default()
            },
        );
        let err = a.admit(t, &mixed.encode_to_vec(), now).unwrap_err();
        assert_eq!(err.reason, RejectReason::BeforeStart);
    }

    #[test]
    fn data_before_the_contract_start_is_refused_per_customer() {
        let start = T0 + 2 * DAY;
        let mut a = open_admission(&["acme", "bolt"])
            .with_earliest(earliest(T0 - 400 * DAY, &[("acme", start)]));
        let now = T0 + 10 * DAY;
        let acme = "fleet/acme/s/d/telemetry";
        let err = a
            .admit(acme, &payload_of("acme", "d", 1, (start - 1) as i64), now)
            .unwrap_err();
        assert_eq!(err.reason, RejectReason::BeforeStart);
        assert!(err.detail.contains("contract start"), "{}", err.detail);
        // bolt has no contract start: the configured earliest applies.
        a.admit(
            "fleet/bolt/s/d/telemetry",
            &payload_of("bolt", "d", 1, (start - DAY) as i64),
            now,
        )
        .unwrap();
        a.admit(acme, &payload_of("acme", "d", 1, start as i64), now)
            .unwrap();
    }
}
