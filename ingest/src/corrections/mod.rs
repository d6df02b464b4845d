//! Corrections: telemetry that arrives after its windows closed, within the
//! correction horizon (`engine.correction_horizon`), restates them instead
//! of being refused.
//!
//! ```text
//! intake lane --every admitted batch--> archive (a day file per UTC day)
//!     |  late batch: archived (fsync) before it is acknowledged, then to the
//!     |  engine, which only updates the device's memory with it
//! fan-out --windows closed through T--> restatement pass per customer:
//!     archive -> engine::restatement (same arithmetic) -> records with a
//!     higher revision --> fan-out --> every sink (overwrite by key)
//! ```
//!
//! One thread owns the archive and takes commands in order, so a pass reads
//! every batch handed to the engine before the windows it restates closed;
//! the pass then reads those batches and computes its windows on a thread
//! of its own.
//! A customer gets two passes per late episode: at once, for the windows
//! already closed, and once every window open at the last late arrival has
//! closed (`due`), for a later reading whose increment the live dataflow
//! took before the late one arrived. The dataflow stays pure: this module
//! does the reading and hands the engine's restatement its batches.

pub mod archive;
mod live;
mod open_days;
mod portfolio;

pub use live::LiveBatches;

use std::collections::{HashMap, HashSet};
use std::ops::{ControlFlow, RangeInclusive};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc as std_mpsc;

use fleetpulse_engine::adoption::{JourneyAnswer, JourneyRequest};
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::operators::portfolio::figures_emitted_through;
use fleetpulse_engine::restatement::{Restatement, journey_records, refold};
use fleetpulse_engine::{
    AlertRecord, CustomerSpec, DeviceBatch, EngineConfig, EventTime, Id, JourneyState, Output,
};
use tokio::sync::{mpsc, oneshot};

use archive::DAY_MS;
pub use archive::{
    Archive, ArchiveError, Held, Pending, Recompute, lapse, open_alerts_of, request_recompute,
    unsettled_alerts,
};

use crate::metrics::IngestMetrics;
use crate::retry::Failing;

/// Slack for a customer's local day around the UTC day (time zones).
const ZONE_SLACK_MS: u64 = 14 * 3_600_000;

/// Restated records on their way to the stores, with the passes they
/// complete (confirmed to the archive once every store wrote them).
#[derive(Debug)]
pub struct Restated {
    /// The records, revision above 0.
    pub records: Vec<Output>,
    /// The passes it completes.
    pub passes: Vec<Pass>,
}

/// A pass, confirmed to the archive once every store wrote its records.
#[derive(Debug, Clone)]
pub enum Pass {
    /// Late data's.
    Late {
        /// The pending row read.
        pending: Pending,
        /// Whether it is the final pass.
        last: bool,
        /// The windows ending by this are restated (known once the journey
        /// is folded again).
        covered: EventTime,
        /// A part of a longer pass ([`part_end`]): the pass goes on from
        /// `covered`, and whether the first pass ran is not changed.
        part: bool,
    },
    /// A journey folded again from its kept inputs.
    Recompute(Recompute),
    /// Portfolio dates folded again, each with its revision: owed to the
    /// stores (and folded again after a restart) until they wrote it.
    Portfolio(Vec<(EventTime, u32)>),
}

impl Pass {
    /// The customer restated; none for the portfolio's dates.
    fn customer(&self) -> Option<&Id> {
        match self {
            Pass::Late { pending, .. } => Some(&pending.customer),
            Pass::Recompute(r) => Some(&r.customer),
            Pass::Portfolio(_) => None,
        }
    }
}

enum Command {
    /// Batches the live dataflow takes in (already durable in the WAL).
    Append(LiveBatches),
    /// Late batches: archived and noted before the lane acknowledges them.
    Late {
        batches: Vec<DeviceBatch>,
        watermark: EventTime,
        done: oneshot::Sender<Result<Vec<Taken>, String>>,
    },
    /// The engine emitted every window ending by `through`, and none of its
    /// operators has taken in one ending after `bound`; every store holds
    /// the windows ending before `checkpoint`.
    Restate {
        through: EventTime,
        bound: EventTime,
        checkpoint: EventTime,
    },
    /// Every store wrote these passes.
    Passed(Vec<Pass>),
    /// Records the engine emitted; answered once their alert transitions
    /// are kept (only asked for when there are some), with the records to
    /// send instead when some of them a pass superseded.
    Emitted(Arc<[Output]>, Option<oneshot::Sender<Kept>>),
    /// The customers file changed: the definitions to fold with from now
    /// on; a changed customer's journey is folded again.
    Customers(std::collections::HashMap<String, CustomerSpec>),
    /// Answers once every command before it is durable (`false`: it is not).
    Sync(oneshot::Sender<bool>),
    /// Keeps the records emitted before it (as any command but the quick
    /// ones does) and the states of the days the live journeys closed so
    /// far, and answers once they are durable (`false`: they are not).
    KeepJourneys(oneshot::Sender<bool>),
    /// The checkpoint that asked last ([`Command::KeepJourneys`]) is
    /// stored, with the journey states it took then.
    JourneysStored,
    /// The engine finished and emitted every window (the last ones
    /// partial when the input did not end): every pending customer is
    /// restated through all of them, its row kept for a final pass after a
    /// restart. Answers when the records are handed on.
    Flush(oneshot::Sender<()>),
}

/// The handle to the corrections thread; cheap to clone.
#[derive(Clone)]
pub struct Corrections {
    commands: std_mpsc::Sender<Command>,
}

/// What the corrections thread needs.
pub struct Settings {
    /// The archive directory.
    pub dir: std::path::PathBuf,
    /// How far behind the watermark late data is still admitted.
    pub horizon_ms: u64,
    /// `engine.allowed_lateness`.
    pub lateness_ms: u64,
    /// The engine's configuration (windows, customers, time zones).
    pub engine: Arc<EngineConfig>,
    /// What the archive can restate (admission reads it).
    pub reach: Arc<Reach>,
    /// The stored checkpoint: the WAL's replay emits the windows ending at
    /// or after it again, without the late data, and passes restate them.
    /// 0 (none stored): everything taken in is archived (the WAL replays it
    /// all), so the archive is complete from the start; otherwise from the
    /// first windows emitted.
    pub replayed_from: EventTime,
}

/// Late data is taken in only this long after the archive began: the day
/// (in any time zone) that holds it then starts after the archive's start.
pub const BEGIN_SLACK_MS: u64 = 2 * 86_400_000;

/// What the archive can restate, kept by the corrections thread and read by
/// admission (every lane) before it takes late data in.
#[derive(Debug)]
pub struct Reach {
    /// Late data starting before this is refused: its windows may hold
    /// batches from before the archive began.
    correctable_from: AtomicU64,
    /// What the archive holds of each customer it has met.
    held: std::sync::RwLock<HashMap<Id, Reached>>,
    /// Each device's first reading from its telemetry topic, by
    /// [`archive::device_key`]: a backfill stops before it.
    live_devices: std::sync::RwLock<HashMap<u64, EventTime>>,
}

/// What the archive holds of a customer, as admission reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    /// Its first batch the live dataflow took in from its telemetry
    /// topics.
    pub first_live_at: Option<EventTime>,
    /// Every batch of it from here on is in the archive (0: every one): the
    /// end of the customer's window that holds its latest pruned batch, so
    /// a restatement from here reads none of those.
    pub whole_from: EventTime,
}

impl Reached {
    /// `held` in `engine`'s windows and the customer's time zone.
    fn of(engine: &EngineConfig, customer: &str, held: Held) -> Self {
        let whole_from = held.cut_through.map_or(0, |at| {
            if at == EventTime::MAX {
                return at; // pruned, an earlier build did not say when
            }
            (engine.windows.iter())
                .map(|spec| engine.window_bounds(spec, customer, at).1)
                .fold(at.saturating_add(1), EventTime::max)
        });
        Self {
            first_live_at: held.first_live_at,
            whole_from,
        }
    }
}

impl Default for Reach {
    /// Nothing is correctable until the archive says where it begins.
    fn default() -> Self {
        Self {
            correctable_from: AtomicU64::new(EventTime::MAX),
            held: Default::default(),
            live_devices: Default::default(),
        }
    }
}

/// Why a customer's history cannot be backfilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotWhole {
    /// Day files holding its batches before `from` were pruned (past the
    /// correction horizon): what starts from there is still taken.
    Cut {
        /// Where the archive holds every batch of it again.
        from: EventTime,
    },
    /// Its live telemetry began (at `first`) before the archive did.
    Before {
        /// Its first batch the live dataflow took in.
        first: EventTime,
    },
}

impl Reach {
    /// Everything from `from` is correctable (tests).
    pub fn from(from: EventTime) -> Self {
        let reach = Self::default();
        reach.correctable_from.store(from, Relaxed);
        reach
    }

    /// Late data starting before this is refused.
    pub fn correctable_from(&self) -> EventTime {
        self.correctable_from.load(Relaxed)
    }

    /// `Ok` when the archive holds every batch of `customer` from `at` on
    /// (it is new, its first telemetry is within the horizon, or the days
    /// pruned of it end before `at`), so its journey can be folded again
    /// from there: a backfill of its history, which may come in parts with
    /// passes and prunes between them.
    pub fn whole(&self, customer: &str, at: EventTime) -> Result<(), NotWhole> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        match held.get(customer) {
            Some(h) if at < h.whole_from => Err(NotWhole::Cut { from: h.whole_from }),
            Some(Reached {
                first_live_at: Some(first),
                ..
            }) if *first < self.correctable_from() => Err(NotWhole::Before { first: *first }),
            _ => Ok(()),
        }
    }

    /// When `device` of `customer` first sent on its telemetry topic, if
    /// the archive has seen it do so.
    pub fn first_live_at(&self, customer: &str, device: &str) -> Option<EventTime> {
        let devices = self.live_devices.read().unwrap_or_else(|e| e.into_inner());
        devices.get(&archive::device_key(customer, device)).copied()
    }

    /// Notes that `device` of `customer` first sent live at `at`, for tests
    /// of admission.
    #[cfg(test)]
    pub(crate) fn pretend_live(&self, customer: &str, device: &str, at: EventTime) {
        let mut devices = self.live_devices.write().unwrap();
        devices.insert(archive::device_key(customer, device), at);
    }

    /// Sets what the archive holds, for tests of admission.
    #[cfg(test)]
    pub(crate) fn pretend(&self, customer: &str, reached: Reached) {
        let mut map = self.held.write().unwrap();
        map.insert(Id::from(customer), reached);
    }

    fn note(&self, archive: &mut Archive, engine: &EngineConfig) {
        let live = archive.take_live_devices();
        if !live.is_empty() {
            let mut devices = self.live_devices.write().unwrap_or_else(|e| e.into_inner());
            devices.extend(live);
        }
        let moved = archive.take_held();
        if !moved.is_empty() {
            let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
            held.extend(moved.into_iter().map(|(c, h)| {
                let reached = Reached::of(engine, &c, h);
                (c, reached)
            }));
        }
    }
}

impl Corrections {
    /// Opens the archive and starts its thread; restated records go to
    /// `restated`.
    pub fn start(
        settings: Settings,
        restated: mpsc::Sender<Restated>,
        metrics: Arc<IngestMetrics>,
    ) -> Result<(Self, std::thread::JoinHandle<()>), ArchiveError> {
        let mut archive = Archive::open(&settings.dir)?;
        archive.restarted(settings.replayed_from)?;
        if settings.replayed_from == 0 {
            archive.begin_at(0)?;
        }
        let from = archive.complete_from()?;
        (settings.reach.correctable_from)
            .store(from.map_or(EventTime::MAX, |f| f + BEGIN_SLACK_MS), Relaxed);
        settings.reach.note(&mut archive, &settings.engine);
        let (commands, received) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("corrections".into())
            .spawn(move || run(archive, settings, received, restated, metrics))
            .expect("spawn the corrections thread");
        Ok((Self { commands }, thread))
    }

    /// Archives batches the live dataflow takes in, encoded where it
    /// takes them ([`LiveBatches`]).
    pub fn append(&self, batches: LiveBatches) {
        if !batches.is_empty() {
            let _ = self.commands.send(Command::Append(batches));
        }
    }

    /// Archives late batches (durably) and notes their customers for
    /// restatement; says what became of each. `watermark`: the lane's,
    /// when they arrived.
    pub async fn late(
        &self,
        batches: Vec<DeviceBatch>,
        watermark: EventTime,
    ) -> Result<Vec<Taken>, String> {
        let (done, answer) = oneshot::channel();
        let command = Command::Late {
            batches,
            watermark,
            done,
        };
        if self.commands.send(command).is_err() {
            return Err("the corrections thread stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the corrections thread stopped".into()))
    }

    /// Runs the passes that are due now that the engine emitted every
    /// window ending by `through` (and took in none ending after `bound`,
    /// the most advanced input's watermark).
    pub fn restate(&self, through: EventTime, bound: EventTime, checkpoint: EventTime) {
        let _ = self.commands.send(Command::Restate {
            through,
            bound,
            checkpoint,
        });
    }

    /// Records on their way to the stores: alert transitions (a
    /// restatement retracts those that no longer happen) and what journeys
    /// fold (kept for a recompute). With alert transitions among them, the
    /// answer comes once they are kept: a receiver told of an alert the
    /// archive does not know would never hear of its retraction if a kill
    /// came between the two and the journey folded differently after it.
    /// The answer holds the records to send instead, if a pass superseded
    /// some of them ([`superseded`]).
    pub fn emitted(&self, records: Arc<[Output]>) -> Option<oneshot::Receiver<Kept>> {
        if !records.iter().any(|r| matches!(r, Output::Alert(_))) {
            let _ = self.commands.send(Command::Emitted(records, None));
            return None;
        }
        let (kept, answer) = oneshot::channel();
        let _ = self.commands.send(Command::Emitted(records, Some(kept)));
        Some(answer)
    }

    /// The customers file changed: these are the definitions now.
    pub fn customers(&self, specs: std::collections::HashMap<String, CustomerSpec>) {
        let _ = self.commands.send(Command::Customers(specs));
    }

    /// Every store wrote these passes.
    pub fn passed(&self, passes: Vec<Pass>) {
        let _ = self.commands.send(Command::Passed(passes));
    }

    /// Asks the archive to hold, durably, the state of every day the live
    /// journeys closed so far, and what was sent to it before: the
    /// checkpoint stores the journey states it covers only then. Stored
    /// before, a kill left a restart restoring a customer after days whose
    /// states the archive never got, and late data of those days folded
    /// its journey again from nothing. The answer (`false`: not durable)
    /// comes on the receiver; `None` when the archive is gone (nothing to
    /// wait for).
    pub fn ask_to_keep_journeys(&self) -> Option<oneshot::Receiver<bool>> {
        self.asking(Command::KeepJourneys)
    }

    /// The checkpoint that last asked the archive to keep the journeys'
    /// days is stored, the journey states it took then with it: the
    /// passes written before it asked are now part of what a restart
    /// restores.
    pub fn journeys_stored(&self) {
        let _ = self.commands.send(Command::JourneysStored);
    }

    /// Restates every pending customer through every window the finished
    /// engine emitted; the caller keeps taking records from `restated`
    /// until this returns.
    pub async fn flush(&self) {
        let (done, answer) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_ok() {
            let _ = answer.await;
        }
    }

    /// Waits until everything sent before is durable (before the WAL is
    /// cut behind live batches); `false` when it is not.
    pub async fn sync(&self) -> bool {
        self.ask(Command::Sync, false).await
    }

    /// Sends `command` and waits for its answer; `gone` when the
    /// corrections thread stopped.
    async fn ask(&self, command: fn(oneshot::Sender<bool>) -> Command, gone: bool) -> bool {
        match self.asking(command) {
            Some(answer) => answer.await.unwrap_or(gone),
            None => gone,
        }
    }

    /// Sends `command`; its answer comes on the receiver (`None`: the
    /// corrections thread stopped).
    fn asking(
        &self,
        command: fn(oneshot::Sender<bool>) -> Command,
    ) -> Option<oneshot::Receiver<bool>> {
        let (done, answer) = oneshot::channel();
        self.commands.send(command(done)).ok()?;
        Some(answer)
    }
}

fn run(
    mut archive: Archive,
    settings: Settings,
    commands: std_mpsc::Receiver<Command>,
    restated: mpsc::Sender<Restated>,
    metrics: Arc<IngestMetrics>,
) {
    let longest = (settings.engine.windows.iter().map(|w| w.length_ms))
        .max()
        .unwrap_or(0);
    let mut pruned_before: EventTime = 0;
    let mut prune_failing = Failing::new(
        "archive prune failed; retried",
        "archive prune succeeded again",
    );
    let mut failing = Failing::new(
        "cannot archive live batches; kept and tried again",
        "archive written again",
    );
    // Live batches not archived yet: kept (and the WAL not cut behind them)
    // while the archive cannot take them, e.g. on a full disk.
    let mut live = Vec::new();
    // When the oldest of them came.
    let mut waiting_since = std::time::Instant::now();
    // Late batches archived, their lanes waiting for one sync of them all.
    let mut unsynced: Vec<LateAnswer> = Vec::new();
    // Records the engine emitted, kept together (a transaction each was
    // about a tenth of this thread's time with late data coming).
    let mut emitted: Vec<Emitted> = Vec::new();
    let mut state = Passes {
        days_read: metrics.restatement_days_read.clone(),
        specs: settings.engine.customers.clone(),
        day: settings.engine.day_window().map(|d| d.name.clone()),
        ..Passes::default()
    };
    let journeys = &settings.engine.journeys;
    if let Err(e) = redefined_while_stopped(&mut archive, journeys, &state.specs) {
        tracing::error!(error = %e, "cannot compare the customers' definitions with the archive's");
    }
    // Portfolio figures folded again before a stop, not written by every
    // store.
    match archive.owed_portfolio() {
        Ok(figures) => state.portfolio(figures),
        Err(e) => tracing::error!(error = %e, "cannot read the portfolio dates owed"),
    }
    loop {
        let first = match commands.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(command) => command,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                flush(&mut archive, &settings, &mut live, &mut failing);
                // Passes put off while late data kept coming, now it paused.
                if let Some(limits) = state.deferred.take()
                    && let Err(e) = passes(&mut archive, &settings, limits, &mut state, false)
                {
                    failed(&metrics, "restatement", &e);
                }
                if let Err(e) = computed(&mut archive, &settings, &mut state)
                    .and_then(|()| answered(&settings.engine, &mut archive, &mut state))
                {
                    failed(&metrics, "restatement", &e);
                }
                hand_on(&mut state, &restated);
                continue;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
        };
        // Live batches go in one transaction per `LIVE_TRANSACTION` or
        // `LIVE_DELAY` (small ones cost twice the CPU per batch), before any
        // command that reads the day files.
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append(batches) => {
                    if live.is_empty() {
                        waiting_since = std::time::Instant::now();
                    }
                    live.push(batches)
                }
                Command::Emitted(records, kept) => emitted.push((records, kept)),
                other => {
                    if !matches!(other, Command::Passed(_) | Command::JourneysStored) {
                        flush(&mut archive, &settings, &mut live, &mut failing);
                    }
                    // Late batches share one sync while only other late
                    // batches and confirmations come between them; any other
                    // command answers them first, and reads what the engine
                    // emitted before it.
                    let quick = matches!(
                        other,
                        Command::Late { .. } | Command::Passed(_) | Command::JourneysStored
                    );
                    if !quick || unsynced.len() >= MAX_UNSYNCED {
                        answer_late(&mut archive, &mut unsynced);
                    }
                    if !quick {
                        keep_emitted(&settings.engine, &mut state, &mut archive, &mut emitted);
                    }
                    match other {
                        Command::Late {
                            batches,
                            watermark,
                            done,
                        } => {
                            let due = watermark + settings.lateness_ms + longest + ZONE_SLACK_MS;
                            match late(&mut archive, &settings.engine, &batches, due) {
                                Ok(taken) => {
                                    let new = |t: &&Taken| **t == Taken::New;
                                    let n = taken.iter().filter(new).count() as u64;
                                    metrics.late_admitted.fetch_add(n, Relaxed);
                                    for (b, _) in batches.iter().zip(&taken).filter(|(_, t)| new(t))
                                    {
                                        state.arrived(&b.customer);
                                    }
                                    unsynced.push((done, taken));
                                }
                                Err(e) => {
                                    let _ = done.send(Err(e.to_string()));
                                }
                            }
                        }
                        Command::Restate {
                            through,
                            bound,
                            checkpoint,
                        } => {
                            // The portfolio's figures wait for every time
                            // zone's day of their date.
                            let emitted = figures_emitted_through(through.saturating_add(1));
                            pass_dates(&mut archive, &mut state, emitted);
                            // Not a row whose final pass no stored
                            // checkpoint's journey states hold yet.
                            let unstored = |c: &str| state.waits_for_checkpoint(c);
                            if let Err(e) = archive.forget(checkpoint, unstored) {
                                tracing::error!(error = %e, "archive");
                            }
                            // On a service that ran without it, the archive
                            // holds nothing before the replay's checkpoint
                            // (and the first frontier after a start can be 0).
                            match archive.begin_at(through.max(settings.replayed_from)) {
                                Ok(from) => (settings.reach.correctable_from)
                                    .store(from.saturating_add(BEGIN_SLACK_MS), Relaxed),
                                Err(e) => tracing::error!(error = %e, "archive"),
                            }
                            let limits = (through, bound.max(through));
                            if let Err(e) =
                                passes(&mut archive, &settings, limits, &mut state, false)
                            {
                                failed(&metrics, "restatement", &e);
                            }
                            if let Err(e) = recomputes(&mut archive, &settings, &mut state) {
                                failed(&metrics, "recompute", &e);
                            }
                            // A pending restatement (a backfill's, older than the
                            // horizon) keeps the days it reads, and those the
                            // rest of a backfill under way reads, until its row
                            // goes. And nothing the checkpoint has not passed:
                            // after a kill the replay emits those windows again
                            // without the late data, and the passes that run
                            // again read it here (pruned while the checkpoint
                            // lagged, a late batch's hour went back to its
                            // live value for good).
                            let keep_from = match archive.pending() {
                                Ok(pending) => (pending.iter())
                                    .map(|p| p.keeps_from().saturating_sub(KEEP_SLACK_MS))
                                    .fold(
                                        through.saturating_sub(settings.horizon_ms + KEEP_SLACK_MS),
                                        EventTime::min,
                                    )
                                    .min(checkpoint.saturating_sub(KEEP_SLACK_MS)),
                                Err(e) => {
                                    tracing::error!(error = %e, "archive");
                                    0
                                }
                            };
                            if keep_from > pruned_before {
                                match archive.prune(keep_from) {
                                    Ok(n) => {
                                        if n > 0 {
                                            tracing::info!(
                                                days = n,
                                                "archive days past the horizon removed"
                                            )
                                        }
                                        prune_failing.stored();
                                        pruned_before = keep_from;
                                    }
                                    Err(e) => prune_failing.failed(&e),
                                }
                            }
                        }
                        Command::Customers(specs) => {
                            if let Err(e) = redefine(&mut archive, &settings, &mut state, specs) {
                                tracing::error!(error = %e, "cannot note the customers to recompute");
                            }
                        }
                        Command::Passed(done) => {
                            state.confirmations += 1;
                            for pass in done {
                                // The journey states the pass folded, kept
                                // now the stores hold its records: a pass
                                // after a kill folds on from what they hold.
                                let days = state.confirmed(&pass);
                                if let Err(e) = archive.keep_journeys(&days) {
                                    // Not marked: it runs again.
                                    tracing::error!(error = %e, "cannot keep a restatement's journey states");
                                    continue;
                                }
                                let marked = match &pass {
                                    Pass::Late {
                                        pending,
                                        last,
                                        covered,
                                        part,
                                    } => archive.passed(pending, *last, *covered, *part),
                                    // Its row goes once a checkpoint holds
                                    // the journey it folded.
                                    Pass::Recompute(_) => Ok(()),
                                    Pass::Portfolio(dates) => archive.portfolio_written(dates),
                                };
                                match marked {
                                    Ok(()) => state.written(pass),
                                    Err(e) => {
                                        tracing::error!(error = %e, "cannot mark a restatement done")
                                    }
                                }
                            }
                        }
                        Command::JourneysStored => {
                            for pass in state.checkpoint_stored() {
                                if let Pass::Recompute(r) = &pass
                                    && let Err(e) = archive.recomputed(r)
                                {
                                    // Run again after a restart.
                                    tracing::error!(error = %e, "cannot mark a recompute done");
                                }
                            }
                        }
                        Command::Sync(done) => {
                            let synced = archive.durable();
                            if let Err(e) = &synced {
                                tracing::error!(error = %e, "cannot sync the archive; the WAL is not cut");
                            }
                            let _ = done.send(synced.is_ok() && live.is_empty());
                        }
                        Command::KeepJourneys(done) => {
                            state.checkpoint_asked();
                            let kept = keep_live_journeys(&mut archive, &settings.engine)
                                .and_then(|()| archive.durable());
                            if let Err(e) = &kept {
                                tracing::error!(error = %e, "cannot keep the journey states; the checkpoint waits");
                            }
                            let _ = done.send(kept.is_ok());
                        }
                        Command::Flush(done) => {
                            // The engine finished: nothing more is asked of it.
                            state.asked.clear();
                            state.computing.clear();
                            let limits = (EventTime::MAX, EventTime::MAX);
                            // A pass (a part of a long one) at a time, each
                            // taken by the fan-out (which writes them while it
                            // waits) before the next is read: a pass starts
                            // where those on their way end.
                            // The engine finished: no live figures come; at a
                            // stop, the dates it left open get none from a
                            // pass either (the next start emits them).
                            let emitted = (settings.engine.journeys.portfolio_passed())
                                .unwrap_or(EventTime::MAX);
                            pass_dates(&mut archive, &mut state, emitted);
                            let passed: Vec<Restated> = state.ready.drain(..).collect();
                            loop {
                                match passes(&mut archive, &settings, limits, &mut state, true) {
                                    Ok(true) => {}
                                    Ok(false) => break,
                                    Err(e) => {
                                        tracing::error!(error = %e, "restatement at shutdown failed");
                                        break;
                                    }
                                }
                                let taken = (state.ready.drain(..))
                                    .all(|pass| restated.blocking_send(pass).is_ok());
                                if !taken {
                                    break;
                                }
                            }
                            for figures in passed {
                                if restated.blocking_send(figures).is_err() {
                                    break;
                                }
                            }
                            let _ = done.send(());
                        }
                        Command::Append(_) | Command::Emitted(..) => {
                            unreachable!("matched above")
                        }
                    }
                }
            }
            next = commands.try_recv().ok();
        }
        keep_emitted(&settings.engine, &mut state, &mut archive, &mut emitted);
        answer_late(&mut archive, &mut unsynced);
        if count(&live) >= LIVE_TRANSACTION || waiting_since.elapsed() >= LIVE_DELAY {
            flush(&mut archive, &settings, &mut live, &mut failing);
        }
        settings.reach.note(&mut archive, &settings.engine);
        if let Err(e) = computed(&mut archive, &settings, &mut state)
            .and_then(|()| answered(&settings.engine, &mut archive, &mut state))
        {
            failed(&metrics, "restatement", &e);
        }
        hand_on(&mut state, &restated);
    }
}

/// Records the engine emitted, and who waits until their alert
/// transitions are kept.
type Emitted = (Arc<[Output]>, Option<oneshot::Sender<Kept>>);

/// The records to send instead of those emitted, when a pass superseded
/// some of their alert transitions.
pub type Kept = Option<Arc<[Output]>>;

/// Whether `alert`, a live transition, is one of a journey a pass has
/// replaced since: a day's close dated by the last day of `customer`'s
/// journey the pass folded again (`adopted`). The live journey closed that
/// day before the pass was adopted, and the pass's fold judged it again;
/// the transition, still on its way from the engine when the pass read
/// the episodes to retract, would otherwise reach the stores with nothing
/// to retract it. A provisional alert, or a close's retraction of one, is
/// its open day's to settle, as before.
fn superseded(adopted: &HashMap<Id, EventTime>, alert: &AlertRecord) -> bool {
    let at = alert.resolved_at.unwrap_or(alert.opened_at);
    !alert.provisional
        && alert.status != AlertStatus::Retracted
        && adopted
            .get(&alert.customer)
            .is_some_and(|through| at <= *through)
}

/// The engine emitted every portfolio figure ending by `emitted`: the
/// dates it passed since the last call that only passes' rows hold get
/// their first figures.
fn pass_dates(archive: &mut Archive, state: &mut Passes, emitted: EventTime) {
    if emitted <= state.emitted_through {
        return;
    }
    // Raised only once folded: a failure is tried again at the next call.
    match archive.portfolio_passed(state.emitted_through, emitted) {
        Ok(figures) => {
            state.emitted_through = emitted;
            state.portfolio(figures);
        }
        Err(e) => tracing::error!(error = %e, "cannot fold the portfolio of the dates passed"),
    }
}

/// Keeps what the engine emitted since the last call, all in one go. A
/// failure leaves a gap in what journeys fold: passes compute every window
/// again from then on ([`Passes::kept_gap`]).
fn keep_emitted(
    engine: &EngineConfig,
    state: &mut Passes,
    archive: &mut Archive,
    emitted: &mut Vec<Emitted>,
) {
    if emitted.is_empty() {
        return;
    }
    let stale = |r: &Output| matches!(r, Output::Alert(a) if superseded(&state.adopted, a));
    let mut instead: Vec<Kept> = Vec::with_capacity(emitted.len());
    for (records, kept) in emitted.iter_mut() {
        // Only a batch with alert transitions waits for an answer.
        if kept.is_none() || state.adopted.is_empty() || !records.iter().any(stale) {
            instead.push(None);
            continue;
        }
        let (dropped, current): (Vec<&Output>, Vec<&Output>) =
            records.iter().partition(|r| stale(r));
        for r in dropped {
            if let Output::Alert(a) = r {
                tracing::info!(customer = %a.customer, rule = ?a.rule, opened_at = a.opened_at, "a live alert transition a restatement superseded: not sent");
            }
        }
        let current: Arc<[Output]> = current.into_iter().cloned().collect();
        *records = current.clone();
        instead.push(Some(current));
    }
    let records = emitted.iter().flat_map(|(records, _)| records.iter());
    if let Err(e) = keep(archive, state.day.as_deref(), records.clone()) {
        tracing::error!(error = %e, "cannot keep alerts and journey inputs");
        state.kept_gap = true;
    }
    // Live figures of a date some customer's health was restated in.
    state.portfolio(archive.keep_portfolio(engine, records));
    for ((_, kept), instead) in emitted.drain(..).zip(instead) {
        if let Some(kept) = kept {
            let _ = kept.send(instead);
        }
    }
}

/// A lane waiting for its late batches to be durable, and which were new.
type LateAnswer = (oneshot::Sender<Result<Vec<Taken>, String>>, Vec<Taken>);

/// Late commands archived before one sync answers them, at most.
const MAX_UNSYNCED: usize = 256;

/// Makes the late batches archived so far durable with one sync, and
/// answers their lanes.
fn answer_late(archive: &mut Archive, unsynced: &mut Vec<LateAnswer>) {
    if unsynced.is_empty() {
        return;
    }
    let synced = archive.durable().map_err(|e| e.to_string());
    for (done, new) in unsynced.drain(..) {
        let _ = done.send(synced.clone().map(|()| new));
    }
}

/// Live batches archived in one transaction at most (about 1 MiB).
const LIVE_TRANSACTION: usize = 1024;

/// Longest wait of a live batch for the archive while others keep coming
/// (an idle thread archives after 100 ms: see the timeout above).
const LIVE_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// Kept beyond the horizon: a correction's floor is the start of its
/// customer's local day (and the carried baselines cover what is older).
const KEEP_SLACK_MS: u64 = 2 * 86_400_000;

/// Live batches held at most while the archive cannot take them; then
/// they are given up and late data for their days refused.
const MAX_UNARCHIVED: usize = 200_000;

/// Batches in the groups.
fn count(live: &[LiveBatches]) -> usize {
    live.iter().map(LiveBatches::len).sum()
}

/// Archives the live batches waiting; on failure keeps them for the next
/// try (the WAL, not cut behind them, still holds them).
fn flush(
    archive: &mut Archive,
    settings: &Settings,
    live: &mut Vec<LiveBatches>,
    failing: &mut Failing,
) {
    if live.is_empty() {
        return;
    }
    match archive
        .append_live(live)
        .and_then(|()| archive.note_live(live))
    {
        Ok(()) => {
            failing.stored();
            live.clear();
        }
        Err(e) => {
            failing.failed(&e);
            if count(live) > MAX_UNARCHIVED {
                // A restatement of their days would miss them: late data
                // for those days is refused from now on.
                let newest = live.iter().map(LiveBatches::newest).max().unwrap_or(0);
                let from = newest.saturating_add(BEGIN_SLACK_MS);
                settings.reach.correctable_from.fetch_max(from, Relaxed);
                if let Err(e) = archive.begin_after(newest) {
                    tracing::error!(error = %e, "cannot note the archive's gap");
                }
                tracing::error!(
                    batches = count(live),
                    "live batches given up by the archive: late data before them is refused"
                );
                live.clear();
            }
        }
    }
}

/// Archives the new late batches and notes their customers for
/// restatement; says what became of each.
fn late(
    archive: &mut Archive,
    engine: &EngineConfig,
    batches: &[DeviceBatch],
    due: EventTime,
) -> Result<Vec<Taken>, ArchiveError> {
    // A redelivery of what the archive holds restates nothing. The rest is
    // noted first: a crash between the two leaves a pass with nothing new
    // (harmless) and an unacknowledged batch the broker sends again.
    let taken: Vec<Taken> = (archive.contains(batches)?.into_iter().zip(batches))
        .map(|(held, b)| {
            if held {
                return Taken::Held;
            }
            // Only a customer with pruned days has a point to be before.
            let Some(cut_through) = archive.cut_through(&b.customer) else {
                return Taken::New;
            };
            let cut = Held {
                cut_through: Some(cut_through),
                first_live_at: None,
            };
            let whole_from = Reached::of(engine, &b.customer, cut).whole_from;
            match b.first_at() < whole_from {
                true => Taken::Pruned { from: whole_from },
                false => Taken::New,
            }
        })
        .collect();
    let new = |t: &&Taken| **t == Taken::New;
    // Each customer's devices, each with its earliest and latest new late
    // reading.
    let mut spans: std::collections::BTreeMap<&str, HashMap<&str, RangeInclusive<EventTime>>> =
        Default::default();
    for (b, _) in batches.iter().zip(&taken).filter(|(_, t)| new(t)) {
        let devices = spans.entry(&b.customer).or_default();
        let late = devices
            .entry(&b.device)
            .or_insert(b.first_at()..=b.last_at());
        *late = (*late.start()).min(b.first_at())..=(*late.end()).max(b.last_at());
    }
    for (customer, devices) in spans {
        let devices: Vec<(&str, RangeInclusive<EventTime>)> = devices.into_iter().collect();
        archive.note_late(customer, &devices, due)?;
    }
    let fresh: Vec<&DeviceBatch> = (batches.iter().zip(&taken))
        .filter(|(_, t)| new(t))
        .map(|(b, _)| b)
        .collect();
    archive.append(&fresh)?;
    // Acknowledged once synced ([`answer_late`]): they are in no other log.
    Ok(taken)
}

/// What became of a late batch handed to the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Archived, and its customer noted for restatement.
    New,
    /// The archive held it already (a redelivery): nothing to restate.
    Held,
    /// Refused: the days before `from` of its customer were pruned from
    /// the archive after admission let it in (a backfill racing the prune
    /// that follows its customer's restatement). A restatement from it
    /// would fold it without the other batches of its windows.
    Pruned {
        /// Where the archive holds every batch of the customer again.
        from: EventTime,
    },
}

/// Passes under way: asked of the customer-success operator, or ready for
/// the fan-out. The corrections thread never waits for either: a late
/// batch's acknowledgement and the archive's commits go on meanwhile.
#[derive(Default)]
struct Passes {
    /// Adoptions asked for, by customer.
    asked: Vec<Asked>,
    /// Passes the fan-out has not taken yet, oldest first.
    ready: std::collections::VecDeque<Restated>,
    /// The customers' definitions (the customers file, as reloaded).
    specs: std::collections::HashMap<String, CustomerSpec>,
    /// The day window's name.
    day: Option<Id>,
    /// Customers whose retractions a pass has sent again since the start.
    resent: HashSet<Id>,
    /// Late data taken in since each customer's last first pass: when the
    /// first and the latest of it came.
    arrivals: HashMap<Id, (std::time::Instant, std::time::Instant)>,
    /// The limits of the latest passes put off while late data came.
    deferred: Option<(EventTime, EventTime)>,
    /// The engine emitted every window and portfolio figure ending by this:
    /// a date of it with no live figures gets none.
    emitted_through: EventTime,
    /// Late data's passes handed on and not yet written by every store, by
    /// customer: the generation of the row each read, and the windows it
    /// covers. A customer's next pass waits for them (it starts where they
    /// end), except at the stop, when they are all on their way before it.
    handed: HashMap<Id, Vec<(u64, EventTime)>>,
    /// Passes whose windows are being computed.
    computing: Vec<Computing>,
    /// The journey states of each customer's passes handed on and not yet
    /// written by every store, in the order they were handed on (the
    /// fan-out confirms them in that order): kept in the archive once
    /// written.
    unwritten: HashMap<Id, std::collections::VecDeque<Vec<JourneyState>>>,
    /// Windows emitted since the start may be missing from those the
    /// archive kept for journeys (a write failed): no pass folds them.
    kept_gap: bool,
    /// The customer whose late-data pass started last: the next start goes
    /// to the customers after it first.
    last_started: Option<Id>,
    /// Archive day files the passes read (`/metrics`).
    days_read: Arc<AtomicU64>,
    /// The end of the newest window of each customer's journey a pass
    /// folded again and the live journey adopted ([`superseded`]).
    adopted: HashMap<Id, EventTime>,
    /// Confirmations ([`Command::Passed`]) taken since the start.
    confirmations: u64,
    /// `confirmations` when the checkpoint last asked the archive to keep
    /// the journeys' days: the journey states it took then hold what those
    /// passes folded (each was adopted before its records went out).
    asked_at: u64,
    /// Final passes and recomputes every store wrote, with the number of
    /// the confirmation that brought each, until a checkpoint that took
    /// the journey states after it is stored. Till then a restart restores
    /// the journey from before the pass: the row stays (a late row is not
    /// forgotten, a recompute's is not removed) and the pass runs again
    /// after one. Forgotten at once, a kill in between left the stale
    /// journey for good.
    unstored: Vec<(u64, Pass)>,
}

impl Passes {
    /// A pass's records are ready for the fan-out, with the journey states
    /// it folded (`days`).
    fn ready(&mut self, records: Vec<Output>, pass: Pass, days: Vec<JourneyState>) {
        if let Some(customer) = pass.customer() {
            let unwritten = self.unwritten.entry(customer.clone()).or_default();
            unwritten.push_back(days);
        }
        if let Pass::Late {
            pending, covered, ..
        } = &pass
        {
            let handed = self.handed.entry(pending.customer.clone()).or_default();
            handed.push((pending.generation, *covered));
        }
        self.ready.push_back(Restated {
            records,
            passes: vec![pass],
        });
    }

    /// Portfolio dates folded again are ready for the fan-out.
    fn portfolio(&mut self, figures: Vec<fleetpulse_engine::PortfolioRecord>) {
        if figures.is_empty() {
            return;
        }
        let dates = figures.iter().map(|p| (p.window_start, p.revision));
        let pass = Pass::Portfolio(dates.collect());
        self.ready.push_back(Restated {
            records: figures.into_iter().map(Output::Portfolio).collect(),
            passes: vec![pass],
        });
    }

    /// Late-data passes started and not yet written by every store.
    fn in_flight(&self) -> usize {
        self.computing.len() + self.asked.len() + self.handed.len()
    }

    /// Every store wrote `pass` (its row marked).
    fn written(&mut self, pass: Pass) {
        let folded = match &pass {
            Pass::Late { last, part, .. } => *last && !*part,
            Pass::Recompute(_) => true,
            Pass::Portfolio(_) => false,
        };
        if folded {
            self.unstored.push((self.confirmations, pass));
        }
    }

    /// The checkpoint asks the archive to keep the journeys' days, having
    /// taken the journey states.
    fn checkpoint_asked(&mut self) {
        self.asked_at = self.confirmations;
    }

    /// The checkpoint that asked last is stored: the passes written before
    /// it asked, which a restart no longer runs again.
    fn checkpoint_stored(&mut self) -> Vec<Pass> {
        let asked_at = self.asked_at;
        let (held, waiting) = (self.unstored.drain(..)).partition(|(n, _)| *n <= asked_at);
        self.unstored = waiting;
        held.into_iter().map(|(_, pass)| pass).collect()
    }

    /// Whether `customer`'s final pass waits for a checkpoint to hold it.
    fn waits_for_checkpoint(&self, customer: &str) -> bool {
        (self.unstored.iter())
            .any(|(_, p)| matches!(p, Pass::Late { pending, .. } if &*pending.customer == customer))
    }

    /// Whether `r`'s pass is written and waits for a checkpoint.
    fn recomputed_unstored(&self, r: &Recompute) -> bool {
        (self.unstored.iter()).any(|(_, p)| matches!(p, Pass::Recompute(w) if w == r))
    }

    /// Whether a pass of `customer` is being computed or folded.
    fn under_way(&self, customer: &Id) -> bool {
        (self.asked.iter()).any(|a| a.pass.customer() == Some(customer))
            || (self.computing.iter()).any(|c| c.pass.pending.customer == *customer)
    }

    /// Every store wrote `pass`: the journey states it folded, to keep.
    fn confirmed(&mut self, pass: &Pass) -> Vec<(Id, JourneyState)> {
        let Some(customer) = pass.customer() else {
            return Vec::new();
        };
        let days = match self.unwritten.get_mut(customer) {
            Some(unwritten) => {
                let days = unwritten.pop_front().unwrap_or_default();
                if unwritten.is_empty() {
                    self.unwritten.remove(customer);
                }
                days
            }
            None => Vec::new(),
        };
        if let Pass::Late {
            pending, covered, ..
        } = pass
            && let Some(handed) = self.handed.get_mut(&pending.customer)
        {
            let this = (pending.generation, *covered);
            if let Some(at) = handed.iter().position(|h| *h == this) {
                handed.remove(at);
            }
            if handed.is_empty() {
                self.handed.remove(&pending.customer);
            }
        }
        (days.into_iter()).map(|d| (customer.clone(), d)).collect()
    }

    /// `customer`'s newest journey state whose last day ended by `by` among
    /// those of its passes on their way to the stores.
    fn unwritten_at(&self, customer: &Id, by: EventTime) -> Option<&JourneyState> {
        (self.unwritten.get(customer)?.iter().flatten())
            .filter(|d| d.last_day_end.is_some_and(|end| end <= by))
            .max_by_key(|d| d.last_day_end)
    }

    /// Notes late data of `customer` taken in now.
    fn arrived(&mut self, customer: &Id) {
        let now = std::time::Instant::now();
        let at = self.arrivals.entry(customer.clone()).or_insert((now, now));
        at.1 = now;
    }

    /// Whether `customer`'s first pass waits: its late data still comes
    /// (the latest within [`QUIET`]) and the first of it came within
    /// [`MOST_DELAY`]. A site whose devices upload their buffers one after
    /// another gets one pass for the lot, not one for each (each reads
    /// every batch of the customer from its earliest late reading).
    fn waits(&self, customer: &Id) -> bool {
        self.arrivals
            .get(customer)
            .is_some_and(|(first, latest)| latest.elapsed() < QUIET && first.elapsed() < MOST_DELAY)
    }
}

/// A customer's first pass waits until its late data paused this long ...
const QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// ... or came for this long.
const MOST_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

/// Device-days of windows a pass restates at once at most. A longer pass
/// (a backfill of months, a late episode of a large fleet) goes in parts
/// of whole UTC days, each handed to the stores and written before the
/// next is read: a pass holds a part's windows (about 40 KB a device-day
/// with hourly windows), not those of the whole history.
const PART_DEVICE_DAYS: u64 = 2_048;

/// Days of a part at most, however few the devices.
const PART_MOST_DAYS: u64 = 31;

/// Customers' late-data passes under way at once at most (computed, folded
/// or on their way to the stores): a fleet's histories loaded together
/// hold this many parts, not one for each customer. The stores write them
/// one after another anyway; the others start, in turn, as these are
/// written.
const MOST_PASSES: usize = 4;

/// Where the part of `pending`'s pass that starts now ends, when the pass
/// is longer than one part (it restates windows ending by `through`): at
/// a UTC midnight after its earliest reading owed. The journey of a part
/// is folded over its days; the last part's, by the live operator.
fn part_end(pending: &Pending, through: EventTime) -> Option<EventTime> {
    let devices = pending.devices.len().max(1) as u64;
    let days = (PART_DEVICE_DAYS / devices).clamp(1, PART_MOST_DAYS);
    let end = (pending.from / DAY_MS)
        .saturating_add(days)
        .saturating_mul(DAY_MS);
    (end < through).then_some(end)
}

/// A pass whose journey the live operator folds again.
struct Asked {
    pass: Pass,
    floor: EventTime,
    records: Vec<Output>,
    answer: std_mpsc::Receiver<JourneyAnswer>,
    since: std::time::Instant,
}

/// Starts every pass due by `through` (`bound`: no operator took in a
/// window ending after it); `flush`: the next pending customer's (or part
/// of it), none of them the final pass, the engine having finished
/// (journeys are folded here), and says whether there was one.
fn passes(
    archive: &mut Archive,
    settings: &Settings,
    (through, bound): (EventTime, EventTime),
    state: &mut Passes,
    flush: bool,
) -> Result<bool, ArchiveError> {
    keep_live_journeys(archive, &settings.engine)?;
    let mut rows = archive.pending()?;
    if let Some(last) = &state.last_started {
        // In turn: those after the last one started first.
        rows.sort_by(|a, b| {
            (a.customer <= *last, &a.customer).cmp(&(b.customer <= *last, &b.customer))
        });
    }
    for mut pending in rows {
        let last = through >= pending.due && !flush;
        if pending.final_done || (pending.first_pass_done && !last && !flush) {
            continue;
        }
        if state.under_way(&pending.customer) {
            continue;
        }
        if let Some(handed) = state.handed.get(&pending.customer) {
            if !flush {
                // It starts where the passes on their way end.
                state.deferred = Some((through, bound));
                continue;
            }
            // At the stop they are all on their way, ahead of this one.
            for &(generation, covered) in handed {
                let owed = archive.owed_after(&pending.customer, generation, covered)?;
                pending.from = pending.from.max(owed);
            }
        }
        if through <= pending.from {
            continue; // Nothing of it closed yet.
        }
        if !last && !flush {
            if state.waits(&pending.customer) {
                state.deferred = Some((through, bound));
                continue;
            }
            state.arrivals.remove(&pending.customer);
        }
        if !flush && state.in_flight() >= MOST_PASSES {
            // The others' turn comes as these are written.
            state.deferred = Some((through, bound));
            break;
        }
        state.last_started = Some(pending.customer.clone());
        // A long pass goes in parts, each written before the next is read
        // (at the stop, each on its way to the stores before the next).
        let part = match flush {
            false => part_end(&pending, through),
            true => (archive.newest_day_end()).and_then(|end| part_end(&pending, end)),
        };
        let limits = part.map_or((through, bound), |end| (end, end));
        let (inputs, base) = read_pass(archive, settings, &pending, limits, part, state)?;
        let pass = Started {
            pending,
            last: last && part.is_none(),
            limits,
            floor: inputs.restatement.from,
            base,
            part,
        };
        if flush {
            // At the stop: no lane waits any more. One pass at a time, on
            // its way to the stores before the next is read.
            let records = inputs.windows(&settings.engine)?;
            go_on(archive, settings, state, pass, records, true)?;
            return Ok(true);
        } else {
            let computing = inputs.spawn(settings.engine.clone(), pass);
            state.computing.push(computing);
        }
    }
    Ok(false)
}

/// Keeps the states of the days the live journey closed since the last
/// call (a pass's own wait for the stores: [`Passes::confirmed`]).
fn keep_live_journeys(archive: &mut Archive, engine: &EngineConfig) -> Result<(), ArchiveError> {
    archive.keep_journeys(&engine.journeys.take_days())
}

/// A restatement or recompute attempt failed: said, counted, retried.
fn failed(metrics: &IngestMetrics, what: &str, e: &ArchiveError) {
    tracing::error!(error = %e, "{what} failed; retried");
    metrics.restatements_failed.fetch_add(1, Relaxed);
}

/// A pass once its windows (`records`) are computed: the journey folded
/// again (by the live operator, or here at the stop, `flush`), or the
/// windows handed on as they are without one.
fn go_on(
    archive: &mut Archive,
    settings: &Settings,
    state: &mut Passes,
    pass: Started,
    windows: Windows,
    flush: bool,
) -> Result<(), ArchiveError> {
    let Started {
        pending,
        last,
        limits: (through, bound),
        floor,
        base,
        part,
    } = pass;
    let engine = &settings.engine;
    let spec = state.specs.get(&*pending.customer).cloned();
    let journey = spec.zip(engine.day_window());
    // The journey folds every window; other devices' windows go to the
    // stores as the live dataflow emitted them.
    let kept = match (&journey, windows.kept) {
        (Some((_, day)), Some((after, by))) => {
            (archive.inputs(engine, day, &pending.customer, after)?)
                .into_iter()
                .filter(|r| window_end(r) <= by)
                .collect()
        }
        _ => Vec::new(),
    };
    let open_day = windows.kept.is_none();
    let folded = (journey.as_ref()).map(|_| {
        let all: Vec<Output> = (windows.records.iter()).chain(&kept).cloned().collect();
        journey_records(engine, &all)
    });
    let records = windows.changed(&pending);
    let (Some((spec, _)), Some(folded)) = (journey, folded) else {
        // No journey to fold: the windows the engine emitted only.
        let records = records
            .into_iter()
            .filter(|r| window_end(r) <= through)
            .collect();
        let pass = Pass::Late {
            pending,
            last,
            covered: through,
            part: part.is_some(),
        };
        state.ready(records, pass, Vec::new());
        return Ok(());
    };
    if flush || part.is_some() {
        // At the stop, up to the live journey's last closed day; a part,
        // over its own days only: the live journey takes in the last part's.
        let until = match part {
            Some(_) => None,
            None => (journey_at(archive, state, &pending.customer, EventTime::MAX)?)
                .and_then(|s| s.last_day_end),
        };
        let mut refolded = refold(engine, spec, base, folded, until);
        // At a stop the engine left the days its input had not passed open
        // (`JourneyBoard::stopped_at`): the pass closes none of them on the
        // readings so far either (its windows go to the stores as they
        // stand, as the engine's do).
        if let Some(at) = engine.journeys.stopped_at().filter(|_| flush) {
            refolded.outputs.retain(|r| r.kept_at_stop(at));
        }
        let covered = part.unwrap_or(EventTime::MAX);
        // A part closes only the days its readings reach: an episode opened
        // on a silent day after them is not its to judge (it was retracted,
        // and no later part raised it again).
        let judged_through = match part {
            Some(_) => (refolded.days.iter().filter_map(|d| d.last_day_end)).max(),
            None => Some(EventTime::MAX),
        };
        let answer = JourneyAnswer::Adopted {
            outputs: refolded.outputs,
            days: refolded.days,
            observed: covered,
        };
        let judged = Judged {
            floor,
            through: judged_through.unwrap_or(floor),
            last: part.is_none(),
        };
        if let Some((records, days)) = complete(
            engine,
            archive,
            &pending.customer,
            judged,
            records,
            answer,
            state,
        )? {
            let pass = Pass::Late {
                pending,
                last,
                covered,
                part: part.is_some(),
            };
            state.ready(records, pass, days);
        }
        return Ok(());
    }
    let request = JourneyRequest {
        customer: pending.customer.clone(),
        base,
        records: folded,
        through: bound,
        spec: None,
        from: None,
        open_day,
    };
    let answer = engine.adoptions.submit(request);
    state.asked.push(Asked {
        pass: Pass::Late {
            pending,
            last,
            covered: 0,
            part: false,
        },
        floor,
        records,
        answer,
        since: std::time::Instant::now(),
    });
    Ok(())
}

/// Starts a pass for every recompute asked for (a changed definition, or
/// `fleetpulse recompute`): the customer's journey folded again, with its
/// definition in the customers file, from the start of the day of the
/// request's `from`, over the inputs kept for it.
fn recomputes(
    archive: &mut Archive,
    settings: &Settings,
    state: &mut Passes,
) -> Result<(), ArchiveError> {
    let engine = &settings.engine;
    let Some(day) = engine.day_window() else {
        return Ok(());
    };
    let folds_from = archive.folds_from()?;
    for r in archive.recomputes()? {
        if state.under_way(&r.customer) || state.recomputed_unstored(&r) {
            continue;
        }
        // The day after the archive began again: its state is kept.
        let from = match folds_from {
            Some(begun) if r.from < begun + DAY_MS => {
                tracing::info!(customer = %r.customer, from = begun + DAY_MS, "recompute from the day after the archive began again: it holds nothing before (a run with engine.correction_horizon 0 did not keep it up, or it began on a running service)");
                begun + DAY_MS
            }
            _ => r.from,
        };
        let Some(spec) = state.specs.get(&*r.customer).cloned() else {
            tracing::warn!(customer = %r.customer, "recompute of a customer not in the customers file: dropped");
            archive.recomputed(&r)?;
            continue;
        };
        let floor = engine.window_bounds(day, &r.customer, from).0;
        let base = journey_at(archive, state, &r.customer, floor)?;
        let after = base.as_ref().and_then(|b| b.last_day_end).unwrap_or(0);
        let records = archive.inputs(engine, day, &r.customer, after)?;
        let through = match records.iter().map(window_end).max() {
            Some(through) => through,
            // Its fleet never reported: its silent days close again.
            None if (engine.journeys)
                .silent_start(&r.customer, EventTime::MAX)
                .is_some() =>
            {
                0
            }
            None => {
                tracing::warn!(customer = %r.customer, "recompute: nothing kept to fold again from");
                archive.recomputed(&r)?;
                continue;
            }
        };
        tracing::info!(customer = %r.customer, from = floor, windows = records.len(), "journey folded again");
        let request = JourneyRequest {
            customer: r.customer.clone(),
            base,
            records,
            through,
            spec: Some(spec),
            from: Some(floor),
            // The kept windows hold no device's hours: the live open day
            // stays, read again with the new definition.
            open_day: false,
        };
        let answer = engine.adoptions.submit(request);
        state.asked.push(Asked {
            pass: Pass::Recompute(r),
            floor,
            records: Vec::new(),
            answer,
            since: std::time::Instant::now(),
        });
    }
    Ok(())
}

/// Keeps what the stores are about to get that a later pass needs: alert
/// transitions, and what journeys fold.
fn keep<'a>(
    archive: &mut Archive,
    day: Option<&str>,
    records: impl Iterator<Item = &'a Output> + Clone,
) -> Result<(), ArchiveError> {
    let alerts: Vec<AlertRecord> = (records.clone())
        .filter_map(|r| match r {
            Output::Alert(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    if !alerts.is_empty() {
        archive.keep_alerts(&alerts)?;
    }
    match day {
        Some(day) => archive.keep_inputs(records, day),
        None => Ok(()),
    }
}

/// What a customer's journey depends on in its definition, as a digest:
/// everything but the time zone (a new zone moves every day; the start
/// warns of it and keeps the days closed before). The digest of the
/// definition's `Debug` text, which names every field: a release that adds
/// one folds every journey again once, to the same values.
fn definition_digest(spec: &CustomerSpec) -> Vec<u8> {
    use blake2::digest::{Digest, consts::U32};
    let mut spec = spec.clone();
    spec.timezone = jiff::tz::TimeZone::UTC;
    blake2::Blake2b::<U32>::digest(format!("{spec:?}")).to_vec()
}

/// Asks for a recompute of each customer whose definition in the customers
/// file is not the one its kept journey was folded with: changed while the
/// service was stopped (a deploy that ships the file and restarts it), or
/// by a reload a kill cut short. A customer without a digest yet (new, or
/// an archive of a release before this) gets one, and nothing is folded.
fn redefined_while_stopped(
    archive: &mut Archive,
    journeys: &fleetpulse_engine::JourneyBoard,
    specs: &std::collections::HashMap<String, CustomerSpec>,
) -> Result<(), ArchiveError> {
    let known = archive.definitions()?;
    for (id, spec) in specs {
        let digest = definition_digest(spec);
        match known.get(id) {
            Some(kept) if *kept == digest => continue,
            Some(_) => {
                fold_again(archive, journeys, id, &digest)?;
                tracing::info!(customer = %id, "definition changed in the customers file since the last start: its journey is folded again");
            }
            None => archive.define(id, &digest)?,
        }
    }
    Ok(())
}

/// Asks for `customer`'s journey to be folded again from its first kept
/// window with the definition of `digest`, and notes that digest. Asked
/// first: a kill between the two asks again at the next start. A customer
/// tracked silent before its first telemetry (by its journey's newest
/// state, in `journeys`) from its silence's first day (the day after the
/// archive began, at the earliest): the days of its silence are its too.
fn fold_again(
    archive: &mut Archive,
    journeys: &fleetpulse_engine::JourneyBoard,
    customer: &str,
    digest: &[u8],
) -> Result<(), ArchiveError> {
    let first = archive.first_input(customer)?;
    let silent_before = |end: EventTime| {
        let day_before = end.saturating_sub(DAY_MS);
        journeys
            .silent_start(&customer.into(), day_before)
            .is_some()
    };
    let from = match first {
        Some(end) if !silent_before(end) => end,
        _ => 0,
    };
    archive.note_recompute(customer, from.saturating_sub(1))?;
    archive.define(customer, digest)
}

/// The customers file changed: later passes fold with the new definitions,
/// and each customer whose definition changed is recomputed from its first
/// kept day. A new time zone would move every day: it needs a restart, as
/// does a customer added or removed.
fn redefine(
    archive: &mut Archive,
    settings: &Settings,
    state: &mut Passes,
    mut specs: std::collections::HashMap<String, CustomerSpec>,
) -> Result<(), ArchiveError> {
    let engine = &settings.engine;
    for (id, old) in &state.specs {
        let Some(new) = specs.get(id) else {
            tracing::warn!(customer = %id, "customer removed from the customers file: kept until a restart");
            specs.insert(id.clone(), old.clone());
            continue;
        };
        if new == old {
            continue;
        }
        if new.timezone != old.timezone {
            tracing::warn!(customer = %id, "time zone changed in the customers file: the service keeps the old one until a restart");
            specs.insert(id.clone(), old.clone());
            continue;
        }
        fold_again(archive, &engine.journeys, id, &definition_digest(new))?;
        tracing::info!(customer = %id, "definition changed in the customers file: its journey is folded again");
    }
    specs.retain(|id, _| {
        let known = engine.customers.contains_key(id);
        if !known {
            tracing::warn!(customer = %id, "customer added to the customers file: taken in at the next start (a single process starts again in place)");
        }
        known
    });
    state.specs = specs;
    Ok(())
}

/// Longest wait for the customer-success operator to fold a journey again;
/// then the pass is dropped and started again at a later tick.
const ADOPTION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Completes the passes whose journey the operator has folded again.
fn answered(
    engine: &EngineConfig,
    archive: &mut Archive,
    state: &mut Passes,
) -> Result<(), ArchiveError> {
    let mut waiting = Vec::new();
    for asked in std::mem::take(&mut state.asked) {
        let answer = match asked.answer.try_recv() {
            Ok(answer) => answer,
            Err(std_mpsc::TryRecvError::Empty) if asked.since.elapsed() < ADOPTION_PATIENCE => {
                waiting.push(asked);
                continue;
            }
            // Stopped, or stuck: again at a later tick.
            Err(_) => continue,
        };
        let Asked {
            mut pass,
            floor,
            records,
            ..
        } = asked;
        if let (Pass::Late { covered, .. }, JourneyAnswer::Adopted { observed, .. }) =
            (&mut pass, &answer)
        {
            // What the pass hands on: see [`complete`].
            *covered = *observed;
        }
        let Some(customer) = pass.customer().cloned() else {
            continue;
        };
        if let JourneyAnswer::Adopted { observed, .. } = &answer {
            let through = state.adopted.entry(customer.clone()).or_insert(0);
            *through = (*through).max(*observed);
        }
        let whole = Judged::whole(floor);
        if let Some((records, days)) =
            complete(engine, archive, &customer, whole, records, answer, state)?
        {
            state.ready(records, pass, days);
        }
    }
    state.asked = waiting;
    Ok(())
}

/// Hands ready passes to the fan-out, as many as it takes now.
fn hand_on(state: &mut Passes, restated: &mpsc::Sender<Restated>) {
    while let Some(pass) = state.ready.pop_front() {
        match restated.try_send(pass) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(pass)) => {
                state.ready.push_front(pass);
                return;
            }
            // The fan-out stopped: the rows stay pending.
            Err(mpsc::error::TrySendError::Closed(_)) => state.ready.clear(),
        }
    }
}

/// `customer`'s newest journey state whose last day ended by `by`: the
/// archive's, or one a pass folded that the stores have not written yet
/// (at the stop, a part is read while the one before it is on its way).
fn journey_at(
    archive: &Archive,
    state: &Passes,
    customer: &Id,
    by: EventTime,
) -> Result<Option<JourneyState>, ArchiveError> {
    let kept = archive.journey_at(customer, by)?;
    Ok(match (kept, state.unwritten_at(customer, by)) {
        (Some(kept), Some(owed)) if owed.last_day_end < kept.last_day_end => Some(kept),
        (_, Some(owed)) => Some(owed.clone()),
        (kept, None) => kept,
    })
}

/// One pass's inputs: `pending.customer`'s windows ending by `bound`,
/// from the start of the day of its earliest late reading owed; and the
/// journey's state at the end of the day before them.
fn read_pass(
    archive: &mut Archive,
    settings: &Settings,
    pending: &Pending,
    (through, bound): (EventTime, EventTime),
    part: Option<EventTime>,
    state: &Passes,
) -> Result<(PassInputs, Option<JourneyState>), ArchiveError> {
    // Up to `bound`: the live journey may have taken in windows the fan-out
    // has not seen all of yet; what goes to the stores waits for them.
    let mut restatement = Restatement {
        customer: pending.customer.clone(),
        from: pending.from,
        through: bound,
        revision: 0,
    };
    restatement.from = restatement.floor(&settings.engine);
    restatement.revision = archive.next_revision(&pending.customer)?;
    // The archive kept every window the fan-out took in before it asked
    // for this pass (those ending by `through`; at the stop, every one the
    // engine emitted): the journey may fold those after the late data's
    // changes as kept (not after a failed write). Not for a journey with
    // no day closed before the floor (a backfill: its open day is the
    // restatement's). Not for a part either: its journey is folded here,
    // over its own windows.
    let base = journey_at(archive, state, &pending.customer, restatement.from)?;
    let kept_through = (!state.kept_gap && base.is_some() && part.is_none()).then_some(through);
    // A customer silent until the late data: from its silence, as the
    // live journey that had it in time would have gone on.
    let base = base
        .or_else(|| (settings.engine.journeys).silent_start(&pending.customer, restatement.from));
    let inputs = PassInputs {
        restatement,
        late: pending.devices.clone(),
        reader: archive.reader(),
        kept_through,
        part,
        days_read: state.days_read.clone(),
    };
    Ok((inputs, base))
}

/// What a pass's windows are computed from: the restatement, whose `from`
/// is the start of the first window restated (the floor), the devices'
/// late readings ([`Pending::devices`]), a reader, and the windows the
/// archive kept for the journey (those ending by `kept_through`), which
/// need not be computed again where the late data changed nothing.
struct PassInputs {
    restatement: Restatement,
    late: HashMap<Id, RangeInclusive<EventTime>>,
    reader: archive::Reader,
    kept_through: Option<EventTime>,
    /// A part's end: no day after it is read.
    part: Option<EventTime>,
    days_read: Arc<AtomicU64>,
}

/// A pass's windows: every one of the customer's from the floor (its
/// journey folds them all) but those ending within `kept`, which the
/// journey folds as the archive kept them; and, for each device with late
/// data, its first reading after its latest late one: its windows starting
/// after that hold what they held (absent: none after it yet).
struct Windows {
    records: Vec<Output>,
    changed_through: HashMap<Id, EventTime>,
    /// `(after, by)`: the windows ending after the first and by the second
    /// are the archive's ([`Archive::inputs`]); the late data changed none.
    kept: Option<(EventTime, EventTime)>,
}

impl Windows {
    /// Keeps what the late data changed: the windows of the devices with
    /// late data from their earliest late reading through their first
    /// reading after the latest, and the customer's windows holding one of
    /// those. The stores keep the others as they are, and a pass of a
    /// week-old reading writes a few windows, not a week of them.
    fn changed(mut self, pending: &Pending) -> Vec<Output> {
        let device_changed = |d: &fleetpulse_engine::DeviceKpi| {
            let through = self.changed_through.get(&d.device);
            pending.restates(&d.device, d.window_end)
                && through.is_none_or(|through| d.window_start <= *through)
        };
        if pending.devices.is_empty() {
            // A row of an earlier build: which devices is not known.
            return self.records;
        }
        let holding: HashSet<(Id, EventTime)> = (self.records.iter())
            .filter_map(|r| match r {
                Output::Device(d) if device_changed(d) => Some((d.window.clone(), d.window_end)),
                _ => None,
            })
            .collect();
        self.records.retain(|r| match r {
            Output::Device(d) => device_changed(d),
            Output::Customer(k) => holding.contains(&(k.window.clone(), k.window_end)),
            _ => true,
        });
        self.records
    }
}

impl PassInputs {
    /// The customer's batches from the floor (and each device's last one
    /// before), read, and its windows computed again with the engine's
    /// arithmetic.
    fn windows(self, engine: &EngineConfig) -> Result<Windows, ArchiveError> {
        let started = std::time::Instant::now();
        let Self {
            restatement,
            late,
            mut reader,
            kept_through,
            part,
            days_read,
        } = self;
        let (customer, floor) = (&restatement.customer, restatement.from);
        let mut changed_through: HashMap<Id, EventTime> = HashMap::new();
        let mut fold = restatement.fold(engine);
        let (mut changes_end, mut days) = (None, 0);
        reader.each_day_from(customer, floor, |mut batches, day, given_before| {
            days += 1;
            batches.extend(day);
            for b in &batches {
                let Some(late) = late.get(&b.device).filter(|_| b.customer == *customer) else {
                    continue;
                };
                let after = b.samples.partition_point(|s| s.at <= *late.end());
                if let Some(next) = b.samples.get(after) {
                    let through = changed_through.entry(b.device.clone()).or_insert(next.at);
                    *through = (*through).min(next.at);
                }
            }
            fold.add(batches);
            if part.is_some_and(|end| given_before >= end) {
                // Every reading of the part's windows is given.
                return ControlFlow::Break(());
            }
            // Every window the late data changed is whole now: those after
            // it are the archive's up to `kept_through`.
            changes_end = kept_through
                .and(last_changed(engine, customer, &late, &changed_through))
                .filter(|end| *end <= given_before && Some(*end) < kept_through);
            match changes_end {
                Some(_) => ControlFlow::Break(()),
                None => ControlFlow::Continue(()),
            }
        })?;
        let mut records = fold.finish();
        let kept = changes_end.zip(kept_through);
        if let Some((changed, kept)) = kept {
            records.retain(|r| window_end(r) <= changed);
            // The windows the fan-out had not taken in yet, from scratch.
            if kept < restatement.through {
                let after = Restatement {
                    from: kept,
                    ..restatement.clone()
                };
                let mut fold = after.fold(engine);
                reader.each_day_from(customer, after.floor(engine), |mut batches, day, _| {
                    days += 1;
                    batches.extend(day);
                    fold.add(batches);
                    ControlFlow::Continue(())
                })?;
                records.extend(fold.finish());
            }
        }
        days_read.fetch_add(days, Relaxed);
        tracing::debug!(
            customer = %restatement.customer,
            from = restatement.from,
            bound = restatement.through,
            revision = restatement.revision,
            windows = records.len(),
            days,
            ?kept,
            micros = started.elapsed().as_micros() as u64,
            "windows restated"
        );
        Ok(Windows {
            records,
            changed_through,
            kept,
        })
    }

    /// Reads and computes on a thread of its own: the corrections thread
    /// goes on answering late batches (their lanes, and the WAL behind
    /// them, wait for that answer) and archiving live ones.
    fn spawn(self, engine: Arc<EngineConfig>, pass: Started) -> Computing {
        let (done, records) = std_mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("restatement".into())
            .spawn(move || {
                let _ = done.send(self.windows(&engine));
            });
        if let Err(e) = spawned {
            // The receiver reports it gone: the pass runs again later.
            tracing::error!(error = %e, "cannot start a restatement thread");
        }
        Computing { pass, records }
    }
}

/// The end of the last window holding a reading the late data changed:
/// each device's with late data, through its first reading after its
/// latest late one. `None` while one of them has none yet (its next
/// reading's increment is still to be split), or which devices is not known.
fn last_changed(
    engine: &EngineConfig,
    customer: &Id,
    late: &HashMap<Id, RangeInclusive<EventTime>>,
    changed_through: &HashMap<Id, EventTime>,
) -> Option<EventTime> {
    if late.is_empty() {
        return None;
    }
    let mut last = 0;
    for device in late.keys() {
        let at = *changed_through.get(device)?;
        for spec in &engine.windows {
            last = last.max(engine.window_bounds(spec, customer, at).1);
        }
    }
    Some(last)
}

/// A late-data pass as [`passes`] started it.
struct Started {
    pending: Pending,
    last: bool,
    /// `through` and `bound` of [`passes`].
    limits: (EventTime, EventTime),
    /// The start of the first window restated.
    floor: EventTime,
    /// The journey's state at the floor (read once, by [`read_pass`]).
    base: Option<JourneyState>,
    /// The end of the part this is of a longer pass ([`part_end`]).
    part: Option<EventTime>,
}

/// A pass whose windows a thread of its own computes.
struct Computing {
    pass: Started,
    records: std_mpsc::Receiver<Result<Windows, ArchiveError>>,
}

/// Goes on with the passes whose windows are computed.
fn computed(
    archive: &mut Archive,
    settings: &Settings,
    state: &mut Passes,
) -> Result<(), ArchiveError> {
    for computing in std::mem::take(&mut state.computing) {
        match computing.records.try_recv() {
            Ok(Err(e)) => {
                // A day file pruned under it, say: the row stays.
                let customer = &computing.pass.pending.customer;
                tracing::warn!(customer = %customer, error = %e, "restatement pass read failed; retried");
            }
            Ok(Ok(records)) => go_on(archive, settings, state, computing.pass, records, false)?,
            Err(std_mpsc::TryRecvError::Empty) => state.computing.push(computing),
            // The thread failed: the row stays, the pass runs again.
            Err(std_mpsc::TryRecvError::Disconnected) => {
                tracing::error!(customer = %computing.pass.pending.customer, "a restatement thread failed; retried");
            }
        }
    }
    Ok(())
}

/// What a pass judges of a customer's journey.
#[derive(Debug, Clone, Copy)]
struct Judged {
    /// Where its fold starts.
    floor: EventTime,
    /// Episodes opened after this are left alone: a part's fold closed no
    /// day after it.
    through: EventTime,
    /// The pass ends the customer's pending restatement (it is whole, or
    /// its last part).
    last: bool,
}

impl Judged {
    /// A whole pass from `floor`, or the last part: it judges every
    /// episode.
    fn whole(floor: EventTime) -> Self {
        Self {
            floor,
            through: EventTime::MAX,
            last: true,
        }
    }
}

/// A pass's records for the fan-out, and the journey states it folded, to
/// keep once the stores wrote them.
type Completed = (Vec<Output>, Vec<JourneyState>);

/// A pass's records once its journey is folded again: the windows the live
/// journey took in, the journey's records, and the retractions of the
/// episodes it no longer raises. `None` when the live journey was ahead.
/// The first pass of each customer after the start also sends again the
/// retractions the archive noted before. The portfolio dates whose
/// figures the restated health changes go to the stores beside it; the
/// journey states folded are kept once the stores wrote the pass.
fn complete(
    engine: &EngineConfig,
    archive: &mut Archive,
    customer: &Id,
    judged: Judged,
    mut records: Vec<Output>,
    answer: JourneyAnswer,
    state: &mut Passes,
) -> Result<Option<Completed>, ArchiveError> {
    let JourneyAnswer::Adopted {
        outputs,
        days,
        observed,
    } = answer
    else {
        return Ok(None);
    };
    let floor = judged.floor;
    // The windows the live journey took in: later ones it emits itself.
    records.retain(|r| window_end(r) <= observed);
    let days: Vec<(Id, JourneyState)> = days.into_iter().map(|d| (customer.clone(), d)).collect();
    // Not the silent days a fold closed again before the first telemetry,
    // as the live journey's are not (`JourneyBoard::note`). Kept once the
    // stores wrote the pass ([`Passes::confirmed`]); the live journey's
    // states noted before it go to the archive first, so that they do not
    // replace these.
    let activated: Vec<JourneyState> = (days.iter())
        .filter(|(_, d)| d.activated())
        .map(|(_, d)| d.clone())
        .collect();
    keep_live_journeys(archive, engine)?;
    // Every part of a customer's first pass after a start sends
    // everything (see below): a kill may have come after the archive noted
    // a later part's transitions, and before the stores wrote them.
    let again = !state.resent.contains(customer);
    if judged.last {
        state.resent.insert(customer.clone());
    }
    // Alerts dated after the days the live journey closed are provisional
    // ones of its open day: that day's close settles them, not this pass.
    let mut before = archive.alerts_from(customer, floor, again)?;
    before.retain(|a| a.opened_at <= observed.min(judged.through));
    let resolution = |a: &AlertRecord| {
        // What the states kept before the floor say: the pass's own start.
        archive.resolved_by_states(customer, a.rule, a.opened_at, floor)
    };
    let retracted = retractions(before.clone(), &outputs, &days, floor, again, resolution)?;
    // The first pass after a start sends everything: one that ran before
    // a kill noted its transitions in the archive, and the stores may not
    // have written them.
    records.extend(if again {
        outputs
    } else {
        unsent(&before, outputs)
    });
    records.extend(retracted);
    keep(archive, state.day.as_deref(), records.iter())?;
    let passed = state.emitted_through;
    state.portfolio(archive.keep_restated_portfolio(engine, records.iter(), passed)?);
    Ok(Some((records, activated)))
}

/// The fold's records less the alert transitions the stores need not
/// get again: of an episode they hold (`before`, not retracted), only its
/// last transition in the fold, and not that either when they hold it
/// already. A fold from a customer's silence closes its silent days
/// again; sent every transition anew, receivers saw a resolved episode
/// open again before it resolved once more. An episode new to them gets
/// each of its transitions. Not for the first pass of a customer after a
/// start (see [`complete`]): the archive notes a pass's transitions before
/// the stores write them, so after a kill it may hold what they lack.
fn unsent(before: &[AlertRecord], outputs: Vec<Output>) -> Vec<Output> {
    let held: HashMap<(Rule, EventTime), &AlertRecord> = (before.iter())
        .filter(|a| a.status != AlertStatus::Retracted)
        .map(|a| ((a.rule, a.opened_at), a))
        .collect();
    let mut last: HashMap<(Rule, EventTime), usize> = HashMap::new();
    for (i, record) in outputs.iter().enumerate() {
        if let Output::Alert(a) = record {
            last.insert((a.rule, a.opened_at), i);
        }
    }
    (outputs.into_iter().enumerate())
        .filter(|(i, record)| match record {
            Output::Alert(a) => {
                let episode = (a.rule, a.opened_at);
                held.get(&episode)
                    .is_none_or(|stored| last[&episode] == *i && **stored != *a)
            }
            _ => true,
        })
        .map(|(_, record)| record)
        .collect()
}

fn window_end(record: &Output) -> EventTime {
    match record {
        Output::Customer(k) => k.window_end,
        Output::Device(d) => d.window_end,
        _ => 0,
    }
}

/// The episodes stored before (`before`, see [`Archive::alerts_from`])
/// that the journey folded again from `floor` does not hold: retracted.
/// One opened after `floor` must be among the fold's alerts (`folded`);
/// one opened before and open at `floor` must be too (resolved on a
/// restated day), or still open in the fold's states (`days`), and if it
/// is while the store has it resolved, it is sent open again. The live
/// journey emits the transitions of episodes of any age: one restored
/// from a state folded without the history a pass then brought, before
/// the pass's last part replaced it, resolved an episode the history never
/// opened, and a last part restating from its own first day left that
/// alone. With `again`, those the archive holds as retracted already are
/// sent again: a pass is handed on after the archive noted its
/// retractions, and a kill before every store wrote them runs it again
/// after the restart, which must not leave them open there.
///
/// One opened before `floor` that the fold's states do not hold may have
/// been resolved before it, and a wrong journey moved its resolution (or
/// kept it open) in the store: `resolution` tells when the journey states
/// kept before the floor resolved it, and it is sent resolved then,
/// instead of retracted.
fn retractions<E>(
    before: Vec<AlertRecord>,
    folded: &[Output],
    days: &[(Id, JourneyState)],
    floor: EventTime,
    again: bool,
    resolution: impl Fn(&AlertRecord) -> Result<Option<EventTime>, E>,
) -> Result<Vec<Output>, E> {
    let opened: HashSet<(Rule, EventTime)> = (folded.iter())
        .filter_map(|r| match r {
            Output::Alert(a) => Some((a.rule, a.opened_at)),
            _ => None,
        })
        .collect();
    let open_in =
        |state: &JourneyState, a: &AlertRecord| state.open_since(a.rule) == Some(a.opened_at);
    let mut out = Vec::new();
    for a in before {
        if opened.contains(&(a.rule, a.opened_at)) {
            continue;
        }
        if a.opened_at <= floor {
            // Coverage gaps come from touchpoints, not a journey; a
            // provisional alert is its open day's close's to settle.
            if a.rule == Rule::CoverageGap || a.provisional {
                continue;
            }
            // Without a day folded there is nothing to judge it by.
            let Some((_, last)) = days.last() else {
                continue;
            };
            if days.iter().any(|(_, d)| open_in(d, &a)) {
                // Resolved by the time the fold ends, by the store's
                // account, and open there: open again. (A part ends before
                // the resolution a later part folds again.)
                let end = last.last_day_end.unwrap_or(0);
                if a.resolved_at.is_some_and(|at| at <= end) && open_in(last, &a) {
                    out.push(Output::Alert(AlertRecord {
                        status: AlertStatus::Open,
                        resolved_at: None,
                        ..a
                    }));
                }
                continue;
            }
            if a.status != AlertStatus::Retracted
                && let Some(at) = resolution(&a)?
            {
                if a.resolved_at != Some(at) {
                    out.push(Output::Alert(AlertRecord {
                        status: AlertStatus::Resolved,
                        resolved_at: Some(at),
                        evidence: "telemetry that arrived late restated the days after it: \
                                   the history resolved it on this day"
                            .into(),
                        ..a
                    }));
                }
                continue;
            }
        }
        match a.status {
            AlertStatus::Retracted if again => out.push(Output::Alert(a)),
            AlertStatus::Retracted => {}
            _ => out.push(Output::Alert(AlertRecord {
                status: AlertStatus::Retracted,
                evidence: "telemetry that arrived late restated the days that raised it: \
                           the episode did not happen"
                    .into(),
                ..a
            })),
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_long_pass_goes_in_parts_of_whole_days_that_shrink_with_the_devices() {
        let day = DAY_MS;
        let pending = |from: EventTime, devices: usize| Pending {
            customer: "a".into(),
            from,
            due: 0,
            first_pass_done: false,
            final_done: false,
            generation: 1,
            devices: (0..devices)
                .map(|d| (Id::from(format!("d{d}")), from..=from))
                .collect(),
        };
        let from = 100 * day + 5 * 3_600_000;
        // A few devices: a month a part, ending at a UTC midnight.
        assert_eq!(part_end(&pending(from, 2), 200 * day), Some(131 * day));
        // A fleet: fewer days, never less than one past the reading owed.
        assert_eq!(part_end(&pending(from, 512), 200 * day), Some(104 * day));
        assert_eq!(part_end(&pending(from, 50_000), 200 * day), Some(101 * day));
        // A row of an earlier build names no device: as one.
        assert_eq!(part_end(&pending(from, 0), 200 * day), Some(131 * day));
        // What fits in one part is one pass.
        assert_eq!(part_end(&pending(from, 2), 131 * day), None);
        assert_eq!(part_end(&pending(from, 2), 102 * day), None);
    }

    /// A customer's final pass (or a recompute) written by every store is
    /// held by a stored checkpoint only if the checkpoint took the journey
    /// states after it was confirmed: its row stays until then (a restart
    /// before restores the journey from before the pass, and runs it again).
    #[test]
    fn a_final_pass_waits_for_a_checkpoint_that_took_the_states_after_it() {
        let row = |customer: &str| Pending {
            customer: customer.into(),
            from: 0,
            due: 0,
            first_pass_done: false,
            final_done: false,
            generation: 1,
            devices: HashMap::new(),
        };
        let late = |customer: &str, last, part| Pass::Late {
            pending: row(customer),
            last,
            covered: 0,
            part,
        };
        let recompute = Recompute {
            customer: "r".into(),
            from: 0,
            generation: 3,
        };
        let mut state = Passes::default();
        // Confirmed before the checkpoint asks: held once it is stored.
        state.confirmations += 1;
        state.written(late("a", true, false));
        state.written(late("b", false, false));
        state.written(late("c", true, true));
        state.written(Pass::Portfolio(vec![(0, 1)]));
        state.checkpoint_asked();
        // Confirmed after it asked: its states may be newer than those taken.
        state.confirmations += 1;
        state.written(late("d", true, false));
        state.written(Pass::Recompute(recompute.clone()));
        let waits = |state: &Passes| ["a", "b", "c", "d"].map(|c| state.waits_for_checkpoint(c));
        assert_eq!(waits(&state), [true, false, false, true]);
        assert!(state.recomputed_unstored(&recompute));
        let other = Recompute {
            generation: 4,
            ..recompute.clone()
        };
        assert!(!state.recomputed_unstored(&other), "asked again since");

        let held = state.checkpoint_stored();
        assert!(matches!(&held[..], [Pass::Late { pending, .. }] if &*pending.customer == "a"));
        assert_eq!(waits(&state), [false, false, false, true]);
        // The next checkpoint asks, and is stored.
        state.checkpoint_asked();
        let held = state.checkpoint_stored();
        assert_eq!(held.len(), 2);
        assert!(matches!(&held[1], Pass::Recompute(r) if *r == recompute));
        assert_eq!(waits(&state), [false; 4]);
        assert!(!state.recomputed_unstored(&recompute));
    }

    /// States that never resolved an episode.
    fn never(_: &AlertRecord) -> Result<Option<EventTime>, ()> {
        Ok(None)
    }

    fn alert(rule: Rule, opened_at: EventTime, status: AlertStatus) -> AlertRecord {
        AlertRecord {
            customer: "c1".into(),
            rule,
            opened_at,
            status,
            ..AlertRecord::default()
        }
    }

    /// A live alert transition the engine emitted before a pass's fold was
    /// adopted, still on its way when the pass read the episodes to
    /// retract, goes to no store and is not kept: the fold judged its day
    /// again. A later day's transition, another customer's, and a
    /// provisional alert (its open day's close settles it) go as emitted.
    #[test]
    fn a_live_transition_a_pass_superseded_on_its_way_goes_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let engine = EngineConfig::default();
        let mut state = Passes::default();
        state.adopted.insert("c1".into(), 5);
        let other = AlertRecord {
            customer: "c2".into(),
            ..alert(Rule::HealthRed, 3, AlertStatus::Open)
        };
        let provisional = AlertRecord {
            provisional: true,
            ..alert(Rule::DevicesDark, 4, AlertStatus::Open)
        };
        let records: Arc<[Output]> = [
            alert(Rule::UsageDrop, 2, AlertStatus::Open),
            resolved(Rule::UsageDrop, 2, 4),
            resolved(Rule::HealthRed, 1, 6),
            other.clone(),
            provisional.clone(),
        ]
        .into_iter()
        .map(Output::Alert)
        .collect();
        let (kept, answer) = oneshot::channel();
        let mut emitted = vec![(records, Some(kept))];
        keep_emitted(&engine, &mut state, &mut archive, &mut emitted);
        let instead = answer.blocking_recv().unwrap().expect("some superseded");
        assert_eq!(
            transitions(instead.to_vec()),
            [
                (Rule::HealthRed, 1, AlertStatus::Resolved, Some(6)),
                (Rule::HealthRed, 3, AlertStatus::Open, None),
                (Rule::DevicesDark, 4, AlertStatus::Open, None),
            ]
        );
        let mut kept = archive.alerts_from("c1", 0, true).unwrap();
        kept.sort_by_key(|a| a.opened_at);
        assert_eq!(kept, [resolved(Rule::HealthRed, 1, 6), provisional]);
        assert_eq!(archive.alerts_from("c2", 0, true).unwrap(), [other]);

        // Nothing superseded: sent as emitted.
        let records: Arc<[Output]> =
            [Output::Alert(alert(Rule::FaultSpike, 7, AlertStatus::Open))].into();
        let (kept, answer) = oneshot::channel();
        keep_emitted(
            &engine,
            &mut state,
            &mut archive,
            &mut vec![(records, Some(kept))],
        );
        assert_eq!(answer.blocking_recv().unwrap(), None);
    }

    /// A fold sends what the stores lack: of an episode they hold, its
    /// last transition if it differs from theirs; a new or retracted
    /// one's every transition.
    #[test]
    fn a_fold_sends_only_the_alert_transitions_the_stores_lack() {
        let before = vec![
            // Resolved live on day 6; the fold resolves it on day 5.
            resolved(Rule::OnboardingStalled, 2, 6),
            // Open, and still open in the fold.
            alert(Rule::RenewalAtRisk, 2, AlertStatus::Open),
            // Resolved on day 4, as in the fold.
            resolved(Rule::HealthRed, 1, 4),
            // Retracted by an earlier pass, raised by this fold.
            alert(Rule::FaultSpike, 3, AlertStatus::Retracted),
        ];
        let folded: Vec<Output> = [
            alert(Rule::OnboardingStalled, 2, AlertStatus::Open),
            alert(Rule::RenewalAtRisk, 2, AlertStatus::Open),
            alert(Rule::HealthRed, 1, AlertStatus::Open),
            alert(Rule::FaultSpike, 3, AlertStatus::Open),
            resolved(Rule::HealthRed, 1, 4),
            resolved(Rule::OnboardingStalled, 2, 5),
            resolved(Rule::FaultSpike, 3, 5),
            alert(Rule::UsageDrop, 5, AlertStatus::Open),
        ]
        .into_iter()
        .map(Output::Alert)
        .collect();
        let sent = transitions(unsent(&before, folded));
        assert_eq!(
            sent,
            [
                (Rule::FaultSpike, 3, AlertStatus::Open, None),
                (Rule::OnboardingStalled, 2, AlertStatus::Resolved, Some(5)),
                (Rule::FaultSpike, 3, AlertStatus::Resolved, Some(5)),
                (Rule::UsageDrop, 5, AlertStatus::Open, None),
            ]
        );
    }

    /// Each record of `records`, an alert transition, as (rule, opened
    /// at, status, resolved at).
    fn transitions(records: Vec<Output>) -> Vec<(Rule, EventTime, AlertStatus, Option<EventTime>)> {
        (records.into_iter())
            .map(|r| match r {
                Output::Alert(a) => (a.rule, a.opened_at, a.status, a.resolved_at),
                other => panic!("not an alert: {other:?}"),
            })
            .collect()
    }

    fn resolved(rule: Rule, opened_at: EventTime, at: EventTime) -> AlertRecord {
        AlertRecord {
            resolved_at: Some(at),
            ..alert(rule, opened_at, AlertStatus::Resolved)
        }
    }

    #[test]
    fn an_episode_no_longer_raised_is_retracted_and_after_a_start_one_retracted_before_too() {
        let before = vec![
            alert(Rule::HealthRed, 10, AlertStatus::Open),
            alert(Rule::UsageDrop, 10, AlertStatus::Retracted),
            alert(Rule::DevicesDark, 20, AlertStatus::Resolved),
            alert(Rule::FaultSpike, 30, AlertStatus::Retracted),
        ];
        // The fold raises the devices-dark episode again, and reopens the
        // fault spike that an earlier pass retracted.
        let folded = vec![
            Output::Alert(alert(Rule::DevicesDark, 20, AlertStatus::Open)),
            Output::Alert(alert(Rule::FaultSpike, 30, AlertStatus::Open)),
        ];
        let retracted = |again| -> Vec<(Rule, EventTime, AlertStatus)> {
            (retractions(before.clone(), &folded, &[], 0, again, never)
                .unwrap()
                .into_iter())
            .map(|r| match r {
                Output::Alert(a) => (a.rule, a.opened_at, a.status),
                other => panic!("not an alert: {other:?}"),
            })
            .collect()
        };
        // The first pass after a start sends the earlier retraction again.
        assert_eq!(
            retracted(true),
            [
                (Rule::HealthRed, 10, AlertStatus::Retracted),
                (Rule::UsageDrop, 10, AlertStatus::Retracted),
            ]
        );
        assert_eq!(
            retracted(false),
            [(Rule::HealthRed, 10, AlertStatus::Retracted)]
        );
    }

    /// A high-touch customer `id` of a nominal contract (ARR 1, one device).
    pub(crate) fn spec(id: &str) -> CustomerSpec {
        let contract = fleetpulse_engine::Contract {
            arr: 1.0,
            start: 0,
            renewal: 1,
            devices_purchased: 1,
            operator_seats: 1,
        };
        CustomerSpec::new(id, fleetpulse_engine::Segment::HighTouch, contract)
    }

    /// A journey state whose episodes of `open` rules are open since the
    /// given times.
    fn state_with_open(open: &[(Rule, EventTime)]) -> JourneyState {
        let journey = fleetpulse_engine::kpi::journey::Journey::new(spec("c1"));
        let mut state = serde_json::to_value(journey.snapshot()).unwrap();
        let episodes: serde_json::Map<String, serde_json::Value> = (open.iter())
            .map(|(rule, since)| {
                let key = serde_json::to_value(rule).unwrap();
                let episode = serde_json::json!({"count": 1, "open_since": since});
                (key.as_str().unwrap().to_string(), episode)
            })
            .collect();
        state["episodes"] = episodes.into();
        state["last_day_end"] = 100.into();
        serde_json::from_value(state).unwrap()
    }

    /// An episode opened before the restated days and open at their start
    /// is judged by the fold's states: retracted when they do not hold it
    /// (the live journey, restored from a state folded without the history
    /// a pass then brought, resolved an episode that history never
    /// opened), sent open again when they do through the day the store
    /// has it resolved on, left alone when they hold it or the fold
    /// resolves it; sent resolved on the day the states kept before the
    /// floor resolved it, when they did (a wrong journey resolved it later
    /// in the store, or kept it open).
    #[test]
    fn an_episode_opened_before_the_floor_is_judged_by_the_fold_s_states() {
        let before = vec![
            resolved(Rule::RenewalAtRisk, 10, 90),
            resolved(Rule::HealthRed, 20, 80),
            alert(Rule::UsageDrop, 30, AlertStatus::Open),
            resolved(Rule::DevicesDark, 40, 70),
            alert(Rule::CoverageGap, 5, AlertStatus::Open),
            // Resolved after the fold's last day (100): a later part's.
            resolved(Rule::ChampionLost, 45, 120),
            // Truly resolved before the floor (at 35 and 40, by the states
            // kept), later or never in the store.
            resolved(Rule::FaultSpike, 15, 95),
            alert(Rule::ForecastRed, 12, AlertStatus::Open),
            // Already right in the store.
            resolved(Rule::OutcomeMissed, 14, 38),
        ];
        let kept = |a: &AlertRecord| -> Result<Option<EventTime>, ()> {
            Ok(match a.rule {
                Rule::FaultSpike => Some(35),
                Rule::ForecastRed => Some(40),
                Rule::OutcomeMissed => Some(38),
                _ => None,
            })
        };
        let days = vec![(
            Id::from("c1"),
            state_with_open(&[
                (Rule::HealthRed, 20),
                (Rule::UsageDrop, 30),
                (Rule::ChampionLost, 45),
            ]),
        )];
        let folded = vec![Output::Alert(resolved(Rule::DevicesDark, 40, 60))];
        let sent =
            transitions(retractions(before.clone(), &folded, &days, 50, false, kept).unwrap());
        assert_eq!(
            sent,
            [
                (Rule::RenewalAtRisk, 10, AlertStatus::Retracted, Some(90)),
                (Rule::HealthRed, 20, AlertStatus::Open, None),
                (Rule::FaultSpike, 15, AlertStatus::Resolved, Some(35)),
                (Rule::ForecastRed, 12, AlertStatus::Resolved, Some(40)),
            ]
        );
        // No day folded: nothing to judge them by.
        let none = retractions(before, &folded, &[], 50, false, kept).unwrap();
        assert!(none.is_empty());
    }

    /// A pass reads the archive through the last window holding a reading
    /// the late data changed (each late device's next reading after its
    /// late ones, in the customer's local day), not every day since.
    #[test]
    fn late_data_changes_the_windows_through_each_late_device_s_next_reading() {
        const H: EventTime = 3_600_000;
        // 2026-01-05T00:00Z; Berlin is an hour ahead in January.
        const T0: EventTime = 1_767_571_200_000;
        let mut engine = EngineConfig::default();
        let contract = fleetpulse_engine::Contract {
            arr: 1.0,
            start: T0,
            renewal: T0 + 365 * 24 * H,
            devices_purchased: 2,
            operator_seats: 1,
        };
        let mut spec = CustomerSpec::new("b", fleetpulse_engine::Segment::LowTouch, contract);
        spec.timezone = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        engine.customers.insert("b".into(), spec);
        let late: HashMap<Id, RangeInclusive<EventTime>> = [
            ("d1".into(), T0 + 10 * H..=T0 + 12 * H),
            ("d2".into(), T0 + 30 * H..=T0 + 30 * H),
        ]
        .into();
        let mut next: HashMap<Id, EventTime> = [("d1".into(), T0 + 13 * H)].into();
        let (utc, berlin) = (Id::from("a"), Id::from("b"));
        assert_eq!(
            last_changed(&engine, &utc, &late, &next),
            None,
            "d2's is to come"
        );
        next.insert("d2".into(), T0 + 31 * H);
        assert_eq!(last_changed(&engine, &utc, &late, &next), Some(T0 + 48 * H));
        assert_eq!(
            last_changed(&engine, &berlin, &late, &next),
            Some(T0 + 47 * H)
        );
        // A row of an earlier build, without its devices: every window.
        assert_eq!(last_changed(&engine, &utc, &HashMap::new(), &next), None);
    }

    /// A device late by one reading a week ago: the pass computes every
    /// window since, the stores get only those the reading changed.
    #[test]
    fn a_pass_writes_only_the_windows_its_late_readings_changed() {
        const H: EventTime = 3_600_000;
        let device = |id: &str, window: &str, start: EventTime, end: EventTime| {
            Output::Device(fleetpulse_engine::DeviceKpi {
                customer: "a".into(),
                device: id.into(),
                window: window.into(),
                window_start: start,
                window_end: end,
                ..Default::default()
            })
        };
        let customer = |window: &str, start: EventTime, end: EventTime| {
            Output::Customer(fleetpulse_engine::CustomerKpi {
                customer: "a".into(),
                window: window.into(),
                window_start: start,
                window_end: end,
                ..Default::default()
            })
        };
        let mut records = Vec::new();
        for hour in 9..14 {
            for id in ["d1", "d2", "d3"] {
                records.push(device(id, "1h", hour * H, (hour + 1) * H));
            }
            records.push(customer("1h", hour * H, (hour + 1) * H));
        }
        for day in 0..7 {
            records.push(device("d1", "1d", day * 24 * H, (day + 1) * 24 * H));
            records.push(customer("1d", day * 24 * H, (day + 1) * 24 * H));
        }
        let pending = Pending {
            customer: "a".into(),
            from: 10 * H + H / 2,
            due: 0,
            first_pass_done: false,
            final_done: false,
            generation: 1,
            // d1 late at 10:30, its next reading at 11:05; d3 late at
            // 12:10, nothing after it yet.
            devices: [
                ("d1".into(), 10 * H + H / 2..=10 * H + H / 2),
                ("d3".into(), 12 * H + H / 6..=12 * H + H / 6),
            ]
            .into(),
        };
        let windows = Windows {
            records,
            changed_through: [("d1".into(), 11 * H + H / 12)].into(),
            kept: None,
        };
        let kept: Vec<(String, String, EventTime)> = (windows.changed(&pending).iter())
            .map(|r| match r {
                Output::Device(d) => (d.device.to_string(), d.window.to_string(), d.window_end / H),
                Output::Customer(k) => ("*".into(), k.window.to_string(), k.window_end / H),
                other => panic!("not a window: {other:?}"),
            })
            .collect();
        let want: Vec<(String, String, EventTime)> = [
            ("d1", "1h", 11),
            ("*", "1h", 11),
            ("d1", "1h", 12),
            ("*", "1h", 12),
            ("d3", "1h", 13),
            ("*", "1h", 13),
            ("d3", "1h", 14),
            ("*", "1h", 14),
            ("d1", "1d", 24),
            ("*", "1d", 24),
        ]
        .iter()
        .map(|(d, w, end)| (d.to_string(), w.to_string(), *end))
        .collect();
        assert_eq!(kept, want);
        // A row of an earlier build, without its devices: all of them.
        let all = Windows {
            records: vec![
                device("d2", "1h", 20 * H, 21 * H),
                customer("1h", 20 * H, 21 * H),
            ],
            changed_through: HashMap::new(),
            kept: None,
        };
        let earlier = Pending {
            devices: HashMap::new(),
            ..pending
        };
        assert_eq!(all.changed(&earlier).len(), 2);
    }

    /// A start compares each customer's definition with the one its kept
    /// journey was folded with: the first start notes them, an unchanged
    /// one (or one in another time zone only) asks for nothing, a changed
    /// one for a recompute from before its first kept window.
    #[test]
    fn a_start_folds_again_the_journeys_whose_definition_changed_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let contract = fleetpulse_engine::Contract {
            arr: 100.0,
            start: 0,
            renewal: 1,
            devices_purchased: 1,
            operator_seats: 1,
        };
        let spec = |id: &str, arr: f64, zone: &str| {
            let contract = fleetpulse_engine::Contract { arr, ..contract };
            let mut spec = CustomerSpec::new(id, fleetpulse_engine::Segment::LowTouch, contract);
            spec.timezone = jiff::tz::TimeZone::get(zone).unwrap();
            (id.to_string(), spec)
        };
        let asked = |archive: &Archive| -> Vec<String> {
            let asked = archive.recomputes().unwrap();
            asked.iter().map(|r| r.customer.to_string()).collect()
        };
        let board = fleetpulse_engine::JourneyBoard::default();
        let first = [spec("a", 100.0, "UTC"), spec("b", 100.0, "UTC")].into();
        redefined_while_stopped(&mut archive, &board, &first).unwrap();
        assert!(asked(&archive).is_empty());
        assert_eq!(archive.definitions().unwrap().len(), 2);

        let moved = [spec("a", 100.0, "Europe/Berlin"), spec("b", 100.0, "UTC")].into();
        redefined_while_stopped(&mut archive, &board, &moved).unwrap();
        assert!(asked(&archive).is_empty());

        let changed = [spec("a", 100.0, "UTC"), spec("b", 150.0, "UTC")].into();
        redefined_while_stopped(&mut archive, &board, &changed).unwrap();
        assert_eq!(asked(&archive), ["b"]);
        // Noted: the same file again asks for nothing more.
        let generation = archive.recomputes().unwrap()[0].generation;
        redefined_while_stopped(&mut archive, &board, &changed).unwrap();
        assert_eq!(archive.recomputes().unwrap()[0].generation, generation);
    }

    /// A backfill admitted while the archive still held its days, archived
    /// after they were pruned (its customer's restatement done): its new
    /// batches are refused, not folded from a day that lost the others of
    /// its windows; a redelivery of a batch still held is only known.
    #[test]
    fn a_late_batch_of_a_day_pruned_after_admission_is_refused_and_restates_nothing() {
        const H: EventTime = 3_600_000;
        const T0: EventTime = 1_767_571_200_000;
        let batch = |sequence: u64, at: EventTime| DeviceBatch {
            customer: "a".into(),
            site: "s".into(),
            device: "d1".into(),
            unit_epoch: 0,
            sequence,
            samples: vec![fleetpulse_engine::Sample {
                at,
                operating_hours: sequence as f64,
                ..Default::default()
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let engine = EngineConfig::default();
        let history: Vec<DeviceBatch> = (0..72).map(|h| batch(h + 1, T0 + h * H)).collect();
        let due = T0 + 100 * H;
        let taken = late(&mut archive, &engine, &history, due).unwrap();
        assert!(taken.iter().all(|t| *t == Taken::New));
        archive.forget(EventTime::MAX, |_| false).unwrap();
        assert_eq!(archive.prune(T0 + 2 * DAY_MS).unwrap(), 2);
        let pending = archive.pending().unwrap();

        // The same history again, and a batch never seen, of a pruned day.
        let mut again = history.clone();
        again.push(batch(100, T0 + 5 * H + 30 * 60_000));
        let taken = late(&mut archive, &engine, &again, due).unwrap();
        let from = T0 + 2 * DAY_MS;
        assert!(
            taken[..48].iter().all(|t| *t == Taken::Pruned { from }),
            "{taken:?}"
        );
        assert!(taken[48..72].iter().all(|t| *t == Taken::Held), "{taken:?}");
        assert_eq!(taken[72], Taken::Pruned { from });
        assert_eq!(archive.pending().unwrap(), pending, "nothing to restate");
        assert_eq!(archive.batches("a", 0).unwrap(), history[48..]);
    }
}
