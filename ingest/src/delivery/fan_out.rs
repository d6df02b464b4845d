//! Hands every closed window to every sink and keeps the checkpoint: the
//! engine's records go to each sink's queue (a full queue makes this wait,
//! which makes the engine wait: backpressure, not loss); once a second the
//! [`Ledger`] is asked whether the sinks got further, the checkpoint is
//! stored, and the WAL cut it allows is handed to the WAL's side.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetpulse_engine::{
    DeviceBoard, EngineEvent, EventTime, Id, JourneyBoard, JourneyState, Output,
};
use tokio::sync::{mpsc, watch};

use super::checkpoint::{Checkpoint, record_time};
use super::devices::Schedule;
use super::ledger::Ledger;
use crate::corrections::{Corrections, Pass, Restated};
use crate::metrics::IngestMetrics;
use crate::retry::Failing;
use crate::wal::Lsn;

/// Journeys of customers taken out of the customers file, their episodes
/// ended.
type Ended = std::collections::HashMap<fleetpulse_engine::Id, fleetpulse_engine::JourneyState>;

/// Where records go and how far each receiver got.
pub struct FanOut {
    /// One queue per sink (and the alerts, and the API's view).
    pub sinks: Vec<mpsc::Sender<Arc<[Output]>>>,
    /// Batches each checkpointed receiver has fully written.
    pub written: Vec<Arc<AtomicU64>>,
    /// The write side of the delivery promise.
    pub ledger: Arc<Mutex<Ledger>>,
    /// The WAL directory, where the checkpoint is stored; `None`: no WAL.
    pub wal_dir: Option<PathBuf>,
    /// The WAL may be cut before this LSN.
    pub cut: watch::Sender<Lsn>,
    /// Counters.
    pub metrics: Arc<IngestMetrics>,
    /// The journey states the engine notes as days close; those the
    /// checkpoint covers are stored with it.
    pub journeys: Arc<JourneyBoard>,
    /// Where the engine hands in device snapshots.
    pub devices: Arc<DeviceBoard>,
    /// When to ask for one and promote it; `None`: no device snapshots.
    pub schedule: Option<Schedule>,
    /// Engine workers of this process (each hands in its part).
    pub workers: usize,
    /// Restatements, when late data within the correction horizon restates
    /// windows: asked for as windows close, their records come back on
    /// `restated`.
    pub corrections: Option<(Corrections, mpsc::Receiver<Restated>)>,
    /// In a cluster of several processes, where every member keeps its
    /// checkpoint: the WAL is cut only behind the least advanced, whose
    /// stores may still need this member's readings.
    pub members: Option<super::rescale::Layout>,
    /// Customers taken out of the customers file: their open alerts'
    /// resolutions go out first.
    pub untracked: super::Untracked,
}

/// How long a checkpoint waits for the archive to keep what it covers.
const KEEP_WAIT: Duration = Duration::from_millis(100);

/// A checkpoint and the journey states it goes with, once the archive
/// holds what they cover: what they cover was computed when the archive
/// was asked, and its answer covers only that.
struct Keeping {
    /// The archive's answer (`None`: no archive to wait for).
    answer: Option<tokio::sync::oneshot::Receiver<bool>>,
    plan: Option<Checkpoint>,
    journeys: Option<HashMap<Id, JourneyState>>,
}

impl FanOut {
    /// Runs until the engine's event channel closes (the engine finished),
    /// with a last checkpoint.
    pub async fn run(mut self, mut events: mpsc::Receiver<EngineEvent>) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = Failing::new(
            "cannot write the checkpoint; retrying every second",
            "checkpoint written again",
        );
        let mut snapshots_failing = Failing::new(
            "cannot write a device snapshot; asking again",
            "device snapshot written again",
        );
        let mut schedule = self.schedule.take();
        let mut keeping: Option<Keeping> = None;
        let mut newest_frontier: EventTime = 0;
        let (corrections, mut restated) = match self.corrections.take() {
            Some((c, r)) => (Some(c), Some(r)),
            None => (None, None),
        };
        // Without the archive, the provisional alerts sent are noted here.
        let mut sent = match (&corrections, &self.wal_dir) {
            (None, Some(dir)) => Some(super::provisional::Sent::load(dir)),
            _ => None,
        };
        let mut sent_failing = Failing::new(
            "cannot note the provisional alerts sent; they go out unnoted",
            "provisional alerts noted again",
        );
        // Passes handed out, waiting for every store: (batches sent, passes).
        let mut unconfirmed: std::collections::VecDeque<(u64, Vec<Pass>)> = Default::default();
        // Passes whose records the engine may still emit live versions of:
        // they go out after those, so the stores keep the restated ones.
        let mut held: Vec<Restated> = Vec::new();
        let mut untracked = self.hand_out_untracked().await;
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                Some(pass) = recv(&mut restated) => {
                    held.push(pass);
                    self.release(&mut held, &mut unconfirmed, false).await;
                    continue;
                }
                _ = ticker.tick() => {
                    if let Some(corrections) = &corrections {
                        self.confirm(corrections, &mut unconfirmed);
                        // One lock, released before the next: a guard in an
                        // `if let` lives to the end of its block.
                        let (before, checkpoint) = {
                            let ledger = self.ledger();
                            (ledger.emitted_before(), ledger.checkpoint().written_before)
                        };
                        if let Some(before) = before {
                            let bound = self.metrics.watermark.load(Relaxed);
                            corrections.restate(before.saturating_sub(1), bound, checkpoint);
                        }
                    }
                    if let Some((batches, ..)) = &untracked
                        && (self.written.iter()).all(|w| w.load(Relaxed) >= *batches)
                    {
                        // Every receiver holds the resolutions: a later
                        // start must not send them again.
                        let (_, states, resolutions) = untracked.take().expect("checked");
                        self.journeys.ended(states);
                        if let Some(corrections) = &corrections {
                            let _ = corrections.emitted(resolutions);
                        }
                    }
                    (self.checkpoint(&mut failing, corrections.as_ref(), &mut keeping)).await;
                    if let Some(schedule) = &mut schedule {
                        (self.snapshot_devices(schedule, newest_frontier, &mut snapshots_failing))
                            .await;
                    }
                    continue;
                }
            };
            let Some(event) = event else { break };
            match event {
                EngineEvent::Progress {
                    worker,
                    frontier,
                    journeys,
                } => {
                    newest_frontier = newest_frontier.max(frontier.unwrap_or(0));
                    self.ledger().frontier(worker, frontier, journeys);
                    if !held.is_empty() {
                        self.release(&mut held, &mut unconfirmed, false).await;
                    }
                }
                EngineEvent::Records(mut records) => {
                    {
                        let ledger = self.ledger();
                        records.retain(|r| ledger.keep(r));
                    }
                    if records.is_empty() {
                        continue;
                    }
                    self.metrics
                        .records_emitted
                        .fetch_add(records.len() as u64, Relaxed);
                    if let Some(probe) = self.metrics.probe.get() {
                        probe.records_emitted(records.len());
                    }
                    let mut records: Arc<[Output]> = records.into();
                    // Alert transitions go out only once the archive knows
                    // them, so a later restatement can retract them (and
                    // not those a restatement superseded on their way).
                    if let Some(kept) =
                        (corrections.as_ref()).and_then(|c| c.emitted(records.clone()))
                        && let Ok(Some(instead)) = kept.await
                    {
                        records = instead;
                    }
                    if let Some(sent) = &mut sent {
                        self.note_provisional(sent, &records, &mut sent_failing)
                            .await;
                    }
                    self.to_every_sink(records).await;
                }
            }
        }
        // The engine emitted everything: the customers still pending are
        // restated through all of it before the sinks close.
        self.release(&mut held, &mut unconfirmed, true).await;
        if let (Some(corrections), Some(restated)) = (&corrections, &mut restated) {
            let flushed = corrections.flush();
            tokio::pin!(flushed);
            loop {
                tokio::select! {
                    biased;
                    Some(pass) = restated.recv() => {
                        self.restated(pass, &mut unconfirmed).await;
                        // They come as fast as they are read: each written
                        // before the next is taken, so the stores' queues
                        // hold one pass, not dozens.
                        self.all_written().await;
                    }
                    () = &mut flushed => break,
                }
            }
            while let Ok(pass) = restated.try_recv() {
                self.restated(pass, &mut unconfirmed).await;
            }
        }
    }

    /// Hands on the held passes whose every record the engine has emitted
    /// the live version of (`all`: the engine finished).
    async fn release(
        &self,
        held: &mut Vec<Restated>,
        unconfirmed: &mut std::collections::VecDeque<(u64, Vec<Pass>)>,
        all: bool,
    ) {
        let (before, journeys) = {
            let ledger = self.ledger();
            let before = ledger.emitted_before().unwrap_or(0);
            (before, ledger.journeys_emitted_before().unwrap_or(before))
        };
        // A portfolio figure waits for the portfolio's frontier; any other
        // record only for the windows' and journeys': the portfolio holds
        // its frontier at the last closed day until every time zone's day
        // of it closed, and a pass restating that day waited as long.
        let emitted = |r: &Output| match r {
            Output::Portfolio(_) => record_time(r) < before,
            _ => record_time(r) < journeys,
        };
        // In the order they came: a later pass may restate a portfolio date
        // an earlier one did (another customer's health, or the live
        // figures that came after a restated one), with the next revision,
        // and the stores keep the last written.
        let waiting = (held.iter())
            .position(|pass| !all && !pass.records.iter().all(emitted))
            .unwrap_or(held.len());
        for pass in held.drain(..waiting) {
            self.restated(pass, unconfirmed).await;
        }
    }

    /// Hands a restatement pass to every sink. Not subject to the
    /// suppression after a restart: these records are new.
    async fn restated(
        &self,
        pass: Restated,
        unconfirmed: &mut std::collections::VecDeque<(u64, Vec<Pass>)>,
    ) {
        let n = pass.records.len() as u64;
        // Customers' passes; the portfolio's dates ride along.
        let customers = (pass.passes.iter())
            .filter(|p| !matches!(p, Pass::Portfolio(_)))
            .count();
        self.metrics
            .restatements
            .fetch_add(customers as u64, Relaxed);
        self.metrics.records_restated.fetch_add(n, Relaxed);
        if n > 0 {
            let records: Arc<[Output]> = pass.records.into();
            self.to_every_sink(records).await;
        }
        unconfirmed.push_back((self.ledger().sent(), pass.passes));
    }

    /// Hands every receiver the resolutions of the alerts the customers
    /// taken out of the customers file had open; returns, for when every
    /// receiver wrote that many batches, the journeys to store and the
    /// resolutions for the archive to note.
    async fn hand_out_untracked(&mut self) -> Option<(u64, Ended, Arc<[Output]>)> {
        let untracked = std::mem::take(&mut self.untracked);
        // Before the engine's first record: none of theirs is suppressed.
        self.ledger().returning(untracked.returning);
        if untracked.resolutions.is_empty() {
            // Nothing the receivers hold open (the archive says): the
            // journeys' episodes end all the same.
            if !untracked.states.is_empty() {
                self.journeys.ended(untracked.states);
            }
            return None;
        }
        let records: Arc<[Output]> = untracked.resolutions.into();
        (self.metrics.records_emitted).fetch_add(records.len() as u64, Relaxed);
        self.to_every_sink(records.clone()).await;
        Some((self.ledger().sent(), untracked.states, records))
    }

    /// Hands `records` to every sink (and the alerts, and the view) as one
    /// batch, and counts it.
    async fn to_every_sink(&self, records: Arc<[Output]>) {
        for sink in &self.sinks {
            if sink.send(records.clone()).await.is_err() {
                tracing::error!("a sink stopped; its records are not written");
            }
        }
        self.ledger().sent_batch();
    }

    /// Notes the provisional alerts opened among `records` before any store
    /// gets them, forgetting those whose settlement every store holds.
    async fn note_provisional(
        &self,
        sent: &mut super::provisional::Sent,
        records: &[Output],
        failing: &mut Failing,
    ) {
        if !sent.note(records) {
            return;
        }
        sent.settled_before(self.ledger().checkpoint().written_before);
        let noted = sent.clone();
        match blocking(move || noted.store()).await {
            Ok(()) => failing.stored(),
            Err(e) => failing.failed(&e),
        }
    }

    /// Waits until every checkpointed receiver wrote every batch sent.
    async fn all_written(&self) {
        let sent = self.ledger().sent();
        while (self.written.iter()).any(|w| w.load(Relaxed) < sent) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Tells the archive which passes every store has written.
    fn confirm(
        &self,
        corrections: &Corrections,
        unconfirmed: &mut std::collections::VecDeque<(u64, Vec<Pass>)>,
    ) {
        let written = self.written.iter().map(|w| w.load(Relaxed)).min();
        let written = written.unwrap_or(u64::MAX);
        let mut done = Vec::new();
        while unconfirmed
            .front()
            .is_some_and(|(sent, _)| *sent <= written)
        {
            done.extend(unconfirmed.pop_front().expect("checked").1);
        }
        if !done.is_empty() {
            corrections.passed(done);
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("ledger poisoned")
    }

    /// Stores a checkpoint if the sinks got further, then allows the cut;
    /// in a cluster, only as far as every member's checkpoint allows.
    async fn checkpoint(
        &self,
        failing: &mut Failing,
        corrections: Option<&Corrections>,
        keeping: &mut Option<Keeping>,
    ) {
        let Some(dir) = self.wal_dir.clone() else {
            return;
        };
        self.store_checkpoint(dir, failing, corrections, keeping)
            .await;
        if let Some(members) = self.members.clone() {
            match blocking(move || members.members_least().map_err(std::io::Error::other)).await {
                Ok(least) => {
                    if let Some(cut) = self.ledger().everywhere(least) {
                        let _ = self.cut.send(cut);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the members' checkpoints"),
            }
        }
    }

    async fn store_checkpoint(
        &self,
        dir: PathBuf,
        failing: &mut Failing,
        corrections: Option<&Corrections>,
        keeping: &mut Option<Keeping>,
    ) {
        // A checkpoint asked of the archive at an earlier tick goes on
        // waiting for that answer, with what it covered then: asked again
        // at every tick, a busy archive (a long pass, a slow disk) answered
        // none of them within the wait, and no checkpoint was stored while
        // it stayed busy (the WAL only grew). A busy archive puts the
        // checkpoint off to a later tick instead of holding up the records
        // behind it.
        let Some(mut asked) = keeping.take().or_else(|| self.covered(corrections)) else {
            return;
        };
        if let Some(answer) = &mut asked.answer {
            match tokio::time::timeout(KEEP_WAIT, answer).await {
                Err(_) => {
                    *keeping = Some(asked);
                    return;
                }
                Ok(Ok(false)) => return,
                // Kept, or the archive is gone: nothing to wait for.
                Ok(_) => {}
            }
        }
        let Keeping {
            plan,
            journeys,
            answer,
        } = asked;
        let with_journeys = journeys.is_some();
        let checkpoint = plan;
        let stored = blocking(move || {
            if let Some(journeys) = journeys {
                super::journeys::store(&dir, journeys)?;
            }
            checkpoint.map_or(Ok(()), |plan| plan.store(&dir))
        })
        .await;
        match stored {
            Ok(()) => {
                failing.stored();
                if with_journeys {
                    self.journeys.stored();
                }
                // The archive took what this checkpoint covers: the passes
                // written before it asked are held by the states stored.
                if let (Some(corrections), Some(_)) = (corrections, answer) {
                    corrections.journeys_stored();
                }
                if let Some(cut) = plan.and_then(|plan| self.ledger().stored(plan)) {
                    let _ = self.cut.send(cut);
                }
            }
            Err(e) => failing.failed(&e),
        }
    }

    /// What a new checkpoint covers, the archive asked to keep it; `None`
    /// when there is nothing new.
    fn covered(&self, corrections: Option<&Corrections>) -> Option<Keeping> {
        let written: Vec<u64> = self.written.iter().map(|w| w.load(Relaxed)).collect();
        let (plan, before, stored) = {
            let mut ledger = self.ledger();
            let (plan, stored) = (ledger.plan(&written), ledger.checkpoint());
            let before = plan.map_or(stored.written_before, |p| p.written_before);
            (plan, ledger.journeys_before(before), stored)
        };
        // Journey states first: a state is never behind the checkpoint it
        // goes with (a crash between the two leaves states the stores
        // already cover, which the replay then skips); in a cluster, never
        // past the least advanced member's ([`Ledger::journeys_before`]).
        // Without a new
        // checkpoint too: a journey folded again by late data replaces the
        // states of its days, and a restart must not restore the old ones
        // (its pass, until every store wrote it, runs again after one).
        let journeys = self.journeys.covered_before(before);
        if plan.is_none() && journeys.is_none() {
            return None;
        }
        // A member's checkpoint also says how far its journey states go
        // (the others keep their WAL records behind it), even when only
        // they moved.
        let plan = match (&self.members, &journeys) {
            (None, _) => plan,
            (Some(_), Some(_)) => Some(Checkpoint {
                journeys_before: Some(before),
                ..plan.unwrap_or(stored)
            }),
            (Some(_), None) => plan.map(|p| Checkpoint {
                journeys_before: stored.journeys_before,
                ..p
            }),
        };
        // The archive holds first what the checkpoint covers: the states of
        // those days (each noted as its day closed) and the records it
        // keeps (health for the portfolio), all sent to it before they went
        // to the stores the plan found written. A restart replays nothing
        // the checkpoint covers: a customer restored after days the archive
        // lacked had late data of them folded from nothing (its journey
        // began again), and their dates' portfolio figures lost customers.
        Some(Keeping {
            answer: corrections.and_then(Corrections::ask_to_keep_journeys),
            plan,
            journeys,
        })
    }

    /// Stores the device snapshot the engine handed in, promotes the newest
    /// pending one the stores have caught up with (the WAL is then cut
    /// behind it), and asks for the next when one is due.
    async fn snapshot_devices(
        &self,
        schedule: &mut Schedule,
        frontier: EventTime,
        failing: &mut Failing,
    ) {
        let Some(dir) = self.wal_dir.clone() else {
            return;
        };
        if let Some(snapshot) = self.devices.take(self.workers) {
            let (newest, devices) = (snapshot.newest, snapshot.devices.len());
            let dir = dir.clone();
            match blocking(move || super::devices::store_pending(&dir, &snapshot)).await {
                Ok(()) => {
                    failing.stored();
                    schedule.stored(newest);
                    tracing::debug!(newest, devices, "device snapshot written");
                }
                Err(e) => {
                    failing.failed(&e);
                    schedule.failed();
                }
            }
        }
        let written_before = self.ledger().checkpoint().written_before;
        if let Some(newest) = schedule.promotable(written_before) {
            let promoted = blocking(move || super::devices::promote(&dir, newest)).await;
            match promoted {
                Ok(at) => {
                    failing.stored();
                    schedule.promoted(newest);
                    if let Some(cut) = self.ledger().follow_snapshot(at) {
                        let _ = self.cut.send(cut);
                    }
                    tracing::info!(at, newest, "device snapshot promoted");
                }
                Err(e) => failing.failed(&e),
            }
        }
        if schedule.ask(std::time::Instant::now(), frontier) {
            self.devices.request();
        }
    }
}

/// The next restatement pass, or never without corrections.
async fn recv(restated: &mut Option<mpsc::Receiver<Restated>>) -> Option<Restated> {
    match restated {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs file I/O off the async threads.
async fn blocking<T: Send + 'static>(
    io: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(io)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}
