//! A cluster restarted with another number of processes (Flink's rescale
//! from a savepoint). Each member keeps its state in its own directory under
//! `wal.dir`: the directory itself for a single process, `process-{i}` for
//! member `i` of a cluster. The state is keyed by customer and device, not by
//! member, so any topology can start from it:
//!
//! - every member reads the journey states of every directory, each
//!   customer's newest one (its owner's), and suppresses what the least
//!   advanced checkpoint says every store holds;
//! - process 0 takes over the directories of members the new topology does
//!   not have (orphans): their WAL records are appended to its own WAL and
//!   replayed with it (each record still goes to the worker that owns its
//!   device, in whichever process), their broker sessions are drained into
//!   its WAL and removed (a persistent session left behind would keep its
//!   share of a shared subscription forever), and the orphan is deleted;
//! - process 0 also moves the alerts still pending in an orphan's outbox
//!   into its own, before its alerts task opens that.
//!
//! The orphans are taken over once every member has joined the cluster,
//! so no member reads a directory while it is being deleted (outboxes,
//! which only their owner reads, earlier).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetpulse_engine::{EventTime, Id, JourneyState};
use rumqttc::{AsyncClient, Event, Packet};

use super::DeliveryError;
use super::checkpoint::{self, Checkpoint};
use crate::alerts::outbox::Outbox;
use crate::config::{MqttConfig, member_client_id, member_dir};
use crate::wal::{Wal, WalOptions, WalRecord};

/// Written into an orphan once its records and sessions are in the
/// adopter's WAL: a restart after a crash then only deletes it.
const TAKEN_OVER: &str = "taken-over";

/// How long a drained broker session must stay quiet before it counts as
/// empty.
const QUIET: Duration = Duration::from_millis(1500);

/// Where this process's state lives among the topology's.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `wal.dir` as configured: a single process's directory, and the
    /// parent of the members'.
    pub base: PathBuf,
    /// The processes of the cluster (1 without one).
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// `mqtt.client_id` as configured (members append their index).
    pub client_id: String,
    /// `alerts.outbox_dir` as configured (members append their index);
    /// `None`: each member's outbox is in its WAL directory.
    pub outbox: Option<PathBuf>,
}

/// The state of a member the topology no longer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// Its WAL directory.
    pub dir: PathBuf,
    /// Its index; `None`: it was a single process.
    pub process: Option<usize>,
    /// The broker client id it used.
    pub client_id: String,
}

impl Layout {
    /// This process's own directory.
    pub fn own(&self) -> PathBuf {
        if self.processes > 1 {
            member_dir(&self.base, self.process)
        } else {
            self.base.clone()
        }
    }

    /// Every directory that holds a member's state, this one's included.
    pub fn state_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::iter::once(self.base.clone())
            .chain(members(&self.base).into_iter().map(|(_, dir)| dir))
            .filter(|dir| holds_state(dir))
            .collect();
        let own = self.own();
        if !dirs.contains(&own) {
            dirs.push(own);
        }
        dirs
    }

    /// The members this topology does not have; process 0 takes them over.
    pub fn orphans(&self) -> Vec<Orphan> {
        if self.process != 0 {
            return Vec::new();
        }
        let single = (self.processes > 1).then(|| Orphan {
            dir: self.base.clone(),
            process: None,
            client_id: self.client_id.clone(),
        });
        let members = members(&self.base).into_iter().map(|(index, dir)| Orphan {
            dir,
            process: Some(index),
            client_id: member_client_id(&self.client_id, index),
        });
        let gone = |o: &Orphan| {
            o.process
                .is_none_or(|i| self.processes == 1 || i >= self.processes)
        };
        (single.into_iter().chain(members))
            .filter(|o| gone(o) && holds_state(&o.dir))
            .collect()
    }

    /// Where `orphan` kept its alert outbox.
    pub fn outbox_of(&self, orphan: &Orphan) -> PathBuf {
        match (&self.outbox, orphan.process) {
            (Some(base), Some(index)) => member_dir(base, index),
            (Some(base), None) => base.clone(),
            (None, _) => orphan.dir.join(crate::alerts::config::OUTBOX_DIR_IN_WAL),
        }
    }

    /// Each customer's newest journey state (the one its owner stored last)
    /// over every member's directory.
    pub fn journeys(&self) -> Result<HashMap<Id, JourneyState>, String> {
        let mut newest: HashMap<Id, JourneyState> = HashMap::new();
        for dir in self.state_dirs() {
            for (customer, state) in super::journeys::load(&dir)? {
                let older = |held: &JourneyState| held.last_day_end < state.last_day_end;
                if newest.get(&customer).is_none_or(older) {
                    newest.insert(customer, state);
                }
            }
        }
        Ok(newest)
    }

    /// Windows before `written_before` are in the stores of every member
    /// of this topology, and their journey states are of days before
    /// `journeys_before`: the least of their checkpoints, 0 while one has
    /// stored none. A member's readings feed windows other members close
    /// and write, and days other members' journey states have yet to
    /// close, so its WAL is cut only behind this.
    pub fn members_least(&self) -> Result<Checkpoint, String> {
        let (mut written, mut journeys) = (u64::MAX, u64::MAX);
        for process in 0..self.processes {
            let stored = stored_checkpoint(&member_dir(&self.base, process))?;
            let stored = stored.unwrap_or_default();
            written = written.min(stored.written_before);
            journeys = journeys.min(stored.journeys_cover());
        }
        Ok(Checkpoint {
            written_before: written,
            journeys_before: Some(journeys),
        })
    }

    /// The checkpoints stored in the directories that hold state.
    fn stored_checkpoints(&self) -> Result<Vec<Checkpoint>, String> {
        let mut stored = Vec::new();
        for dir in self.state_dirs() {
            stored.extend(stored_checkpoint(&dir)?);
        }
        Ok(stored)
    }

    /// How far the journey states of every member go, by their checkpoints
    /// (the least); `None` when none stored one.
    pub fn journeys_cover(&self) -> Result<Option<EventTime>, String> {
        Ok(least_cover(&self.stored_checkpoints()?))
    }

    /// What every store holds for sure: the least advanced checkpoint of the
    /// members that wrote one. A member's customers may be another's after a
    /// rescale, so no member may suppress more than the least advanced.
    /// In a cluster it says the journey states go as far as the least of
    /// every directory's ([`Layout::journeys_cover`]): a member carries
    /// that into the checkpoints it stores until it stores states of its
    /// own, and its directory's states may be behind the least advanced
    /// member's.
    pub fn checkpoint(&self) -> Result<Checkpoint, String> {
        let stored = self.stored_checkpoints()?;
        let mut least = (stored.iter().copied())
            .min_by_key(|c| c.written_before)
            .unwrap_or_default();
        if self.processes > 1 {
            least.journeys_before = least_cover(&stored);
        }
        Ok(least)
    }
}

/// The least of what `stored` say their journey states cover.
fn least_cover(stored: &[Checkpoint]) -> Option<EventTime> {
    stored.iter().map(Checkpoint::journeys_cover).min()
}

/// The checkpoint stored in `dir`; `None` when it holds none.
fn stored_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, String> {
    if !checkpoint::path(dir).exists() {
        return Ok(None);
    }
    Checkpoint::load(dir)
        .map(Some)
        .map_err(|e| format!("{}: {e}", checkpoint::path(dir).display()))
}

/// The `process-{i}` directories under `base`.
fn members(base: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut members: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| {
            let entry = e.ok()?;
            let index = entry
                .file_name()
                .to_str()?
                .strip_prefix("process-")?
                .parse();
            Some((index.ok()?, entry.path()))
        })
        .filter(|(_, path)| path.is_dir())
        .collect();
    members.sort();
    members
}

/// Whether `dir` holds a member's state (WAL segments, a checkpoint,
/// journey states).
fn holds_state(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".wal") || name == "checkpoint.json" || name == "journeys.json"
        })
    })
}

/// What a take-over moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TakenOver {
    /// WAL records of the orphans' logs.
    pub records: u64,
    /// Messages drained from their broker sessions.
    pub drained: u64,
}

/// Moves the alerts still pending in each orphan's outbox into `own` (this
/// process's outbox directory), then deletes the orphan's. Runs before
/// this process's alerts task opens its outbox. A crash between the two
/// delivers those alerts once more, which their stable notification ids
/// let receivers drop.
pub fn take_over_outboxes(layout: &Layout, own: &Path) -> Result<usize, DeliveryError> {
    let mut moved = 0;
    for orphan in layout.orphans() {
        let dir = layout.outbox_of(&orphan);
        let fail = |e: std::io::Error| {
            DeliveryError::Wal(format!("taking over the outbox {}: {e}", dir.display()))
        };
        let file = dir.join(crate::alerts::outbox::FILE);
        if dir == own || !file.exists() {
            continue;
        }
        // Its WAL lock first: a member of the old topology still running
        // must be stopped before its state moves.
        let lock = Wal::open(&orphan.dir, WalOptions::default()).map_err(|e| {
            DeliveryError::Wal(format!("taking over {}: {e}", orphan.dir.display()))
        })?;
        let (theirs, _) = Outbox::open(&dir).map_err(fail)?;
        let pending = theirs.pending().map(|e| (e.channel, e.message.clone()));
        let (mut mine, _) = Outbox::open(own).map_err(fail)?;
        moved += mine
            .append(pending.collect::<Vec<_>>())
            .map_err(fail)?
            .len();
        drop((theirs, mine, lock));
        std::fs::remove_file(&file).map_err(fail)?;
        // Left in place if anything else is there.
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(moved)
}

/// Takes over `orphans` into `own` (this process's open WAL): their WAL
/// records, their broker sessions (when sessions are persistent), their
/// poll positions; the merged journey states and the least checkpoint are
/// stored in this process's directory first, then each orphan is deleted.
/// Blocking parts run on this task: it runs once at start, before intake.
pub async fn take_over(
    own: &mut Wal,
    orphans: &[Orphan],
    mqtt: &MqttConfig,
    journeys: HashMap<Id, JourneyState>,
    least: Checkpoint,
) -> Result<TakenOver, DeliveryError> {
    let mut moved = TakenOver::default();
    let own_dir = own.dir().to_owned();
    let fail = |dir: &Path, e: &dyn std::fmt::Display| {
        DeliveryError::Wal(format!("taking over {}: {e}", dir.display()))
    };
    // What an orphan's deletion loses must be here first.
    super::journeys::store(&own_dir, journeys).map_err(|e| fail(&own_dir, &e))?;
    least.store(&own_dir).map_err(|e| fail(&own_dir, &e))?;
    for Orphan { dir, client_id, .. } in orphans {
        if dir.join(TAKEN_OVER).exists() {
            delete_state(dir).map_err(|e| fail(dir, &e))?;
            continue;
        }
        // Its lock first: a member of the old topology still running must
        // be stopped before its state moves.
        let orphan = Wal::open(dir, WalOptions::default()).map_err(|e| fail(dir, &e))?;
        let mut group = Vec::new();
        for entry in orphan
            .replay(orphan.first_lsn())
            .map_err(|e| fail(dir, &e))?
        {
            let (_, record) = entry.map_err(|e| fail(dir, &e))?;
            group.push(record);
            if group.len() >= 1024 {
                moved.records += append(own, &mut group).map_err(|e| fail(dir, &e))?;
            }
        }
        moved.records += append(own, &mut group).map_err(|e| fail(dir, &e))?;
        drop(orphan);
        if mqtt.persistent_session {
            for id in session_ids(client_id, mqtt.connections) {
                moved.drained += drain_session(own, mqtt, &id)
                    .await
                    .map_err(|e| fail(dir, &format!("broker session {id}: {e}")))?;
            }
        }
        move_positions(dir, &own_dir).map_err(|e| fail(dir, &e))?;
        std::fs::write(dir.join(TAKEN_OVER), own_dir.display().to_string())
            .map_err(|e| fail(dir, &e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(dir, &e))?;
        delete_state(dir).map_err(|e| fail(dir, &e))?;
        tracing::info!(
            orphan = %dir.display(),
            session = %client_id,
            records = moved.records,
            drained = moved.drained,
            "took over the state of a member the cluster no longer has"
        );
    }
    Ok(moved)
}

/// Appends `group` to `own` and makes it durable; returns how many.
fn append(own: &mut Wal, group: &mut Vec<WalRecord>) -> Result<u64, crate::wal::WalError> {
    if group.is_empty() {
        return Ok(0);
    }
    own.append_all(group)?;
    own.commit()?;
    Ok(std::mem::take(group).len() as u64)
}

/// The broker client ids a member with client id `client_id` used: one per
/// connection (`{client_id}-{k}` after the first).
fn session_ids(client_id: &str, connections: usize) -> Vec<String> {
    std::iter::once(client_id.to_owned())
        .chain((1..connections).map(|k| format!("{client_id}-{k}")))
        .collect()
}

/// Connects as `client_id` with its persistent session, takes every message
/// queued there into `own` (acknowledged once durable), unsubscribes, and
/// removes the session. Returns how many messages it drained.
async fn drain_session(own: &mut Wal, mqtt: &MqttConfig, client_id: &str) -> Result<u64, String> {
    let mut config = mqtt.clone();
    config.client_id = client_id.to_owned();
    let mut options = crate::source::mqtt::options(&config).map_err(|e| e.to_string())?;
    options.set_manual_acks(true);
    let (client, mut events) = AsyncClient::new(options, 64);
    let mut drained = 0u64;
    let mut unsubscribed = false;
    let mut pending: Vec<rumqttc::Publish> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let event = tokio::time::timeout(QUIET, events.poll()).await;
        let publish = match event {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => Some(p),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                if tokio::time::Instant::now() > deadline {
                    return Err(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            // Quiet: what was queued is here; stop new ones, then finish.
            Err(_) => {
                commit_and_ack(own, &client, &mut pending, &mut drained).await?;
                if unsubscribed {
                    break;
                }
                let plain = std::iter::once(mqtt.topic.clone()).chain(mqtt.backfill_topic());
                for filter in mqtt.subscriptions().into_iter().chain(plain) {
                    client
                        .unsubscribe(filter)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                unsubscribed = true;
                continue;
            }
        };
        if let Some(publish) = publish {
            pending.push(publish);
            if pending.len() >= 1024 {
                commit_and_ack(own, &client, &mut pending, &mut drained).await?;
            }
        }
    }
    client.disconnect().await.map_err(|e| e.to_string())?;
    // Let the disconnect go out, then remove the session itself.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), events.poll()).await {}
    remove_session(&config).await?;
    Ok(drained)
}

/// Makes `pending` durable in `own`, then acknowledges it in order.
async fn commit_and_ack(
    own: &mut Wal,
    client: &AsyncClient,
    pending: &mut Vec<rumqttc::Publish>,
    drained: &mut u64,
) -> Result<(), String> {
    let received_ms = super::intake::wall_clock_ms();
    let mut records: Vec<WalRecord> = (pending.iter())
        .map(|p| WalRecord {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            received_ms,
        })
        .collect();
    append(own, &mut records).map_err(|e| e.to_string())?;
    for publish in pending.drain(..) {
        client.ack(&publish).await.map_err(|e| e.to_string())?;
        *drained += 1;
    }
    Ok(())
}

/// Connects once with a clean session as `config.client_id`: the broker
/// then forgets the session and its subscriptions.
async fn remove_session(config: &MqttConfig) -> Result<(), String> {
    let mut options = crate::source::mqtt::options(config).map_err(|e| e.to_string())?;
    options.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(options, 8);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) if tokio::time::Instant::now() > deadline => return Err(e.to_string()),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => return Err("no CONNACK within 5 s".into()),
        }
    }
    client.disconnect().await.map_err(|e| e.to_string())?;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), events.poll()).await {}
    Ok(())
}

/// Moves the orphan's AEMP poll positions beside this process's WAL, unless
/// it has its own.
fn move_positions(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_position = name
            .to_str()
            .is_some_and(|n| n.starts_with("aemp-") && n.ends_with(".json"));
        if is_position && !to.join(&name).exists() {
            std::fs::rename(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

/// Deletes a taken-over member's state: its segments, checkpoint, journey
/// states, device snapshots, lock and marker; a `process-{i}` directory
/// itself once empty (the base directory holds the members').
fn delete_state(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let state = name.ends_with(".wal")
            || name.ends_with(".tmp")
            || name.starts_with("devices")
            || [
                "checkpoint.json",
                "journeys.json",
                crate::wal::LOCK_FILE,
                TAKEN_OVER,
            ]
            .contains(&name.as_ref());
        if state {
            std::fs::remove_file(entry.path())?;
        }
    }
    let member = dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("process-"));
    if member {
        // Left in place if anything else is there.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_cut_waits_for_every_member_of_the_topology() {
        let base = tempfile::tempdir().unwrap();
        let members = layout(base.path(), 2, 0);
        let at = |process: usize, written_before: u64| {
            with_state(&member_dir(base.path(), process), written_before);
        };
        at(0, 500);
        // Member 1 has stored nothing yet: its stores may need everything.
        assert_eq!(members.members_least().map(|c| c.written_before), Ok(0));
        at(1, 300);
        assert_eq!(members.members_least().map(|c| c.written_before), Ok(300));
        // A member the topology no longer has is process 0's to take over,
        // not a bound.
        at(2, 100);
        assert_eq!(members.members_least().map(|c| c.written_before), Ok(300));
    }

    fn layout(base: &Path, processes: usize, process: usize) -> Layout {
        Layout {
            base: base.to_owned(),
            processes,
            process,
            client_id: "fp".into(),
            outbox: None,
        }
    }

    fn with_state(dir: &Path, written_before: u64) {
        std::fs::create_dir_all(dir).unwrap();
        Checkpoint::at(written_before).store(dir).unwrap();
    }

    #[test]
    fn orphans_are_the_members_a_topology_no_longer_has_and_process_0_takes_them() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        with_state(base, 10);
        with_state(&base.join("process-0"), 30);
        with_state(&base.join("process-2"), 20);
        std::fs::create_dir_all(base.join("process-1")).unwrap();
        // One process: every member's directory, with its client id.
        let names = |o: Vec<Orphan>| {
            o.into_iter()
                .map(|o| {
                    (
                        o.dir.strip_prefix(base).unwrap().display().to_string(),
                        o.client_id,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(layout(base, 1, 0).orphans()),
            [
                ("process-0".into(), "fp-0".into()),
                ("process-2".into(), "fp-2".into())
            ]
        );
        // Two: the single process's state and member 2's (member 1 has none).
        assert_eq!(
            names(layout(base, 2, 0).orphans()),
            [
                (String::new(), "fp".into()),
                ("process-2".into(), "fp-2".into())
            ]
        );
        assert!(layout(base, 2, 1).orphans().is_empty());
        // Every member suppresses only what the least advanced checkpoint
        // covers.
        assert_eq!(layout(base, 2, 1).checkpoint().unwrap().written_before, 10);
        // And carries the least of what every directory's journey states
        // cover, not the least advanced member's.
        let behind = Checkpoint {
            written_before: 30,
            journeys_before: Some(5),
        };
        behind.store(&base.join("process-2")).unwrap();
        let least = layout(base, 2, 1).checkpoint().unwrap();
        assert_eq!((least.written_before, least.journeys_before), (10, Some(5)));
        assert_eq!(
            layout(base, 1, 0).checkpoint().unwrap().journeys_before,
            None
        );
    }

    #[test]
    fn a_removed_members_pending_alerts_move_into_process_0s_outbox() {
        use crate::alerts::outbox::Channel;
        use fleetpulse_engine::kpi::risk::AlertStatus;
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let member = base.join("process-1");
        with_state(&member, 5);
        let theirs = member.join(crate::alerts::config::OUTBOX_DIR_IN_WAL);
        let message = |status| {
            let record = crate::alerts::format::tests::record(status);
            std::sync::Arc::new(crate::alerts::format::AlertMessage::from_record(&record))
        };
        let (mut outbox, _) = Outbox::open(&theirs).unwrap();
        let sent = outbox
            .append([
                (Channel::Mqtt, message(AlertStatus::Open)),
                (Channel::Webhook, message(AlertStatus::Resolved)),
            ])
            .unwrap();
        outbox.delivered(sent[0].seq).unwrap();
        drop(outbox);
        let own = base.join("alerts-outbox");
        assert_eq!(take_over_outboxes(&layout(base, 1, 0), &own).unwrap(), 1);
        let (mine, _) = Outbox::open(&own).unwrap();
        let pending: Vec<_> = (mine.pending())
            .map(|e| (e.channel, e.message.notification_id.clone()))
            .collect();
        assert_eq!(
            pending,
            [(Channel::Webhook, sent[1].message.notification_id.clone())]
        );
        assert!(!theirs.exists(), "the orphan's outbox is deleted");
        // Nothing left to move a second time.
        assert_eq!(take_over_outboxes(&layout(base, 1, 0), &own).unwrap(), 0);
    }

    #[tokio::test]
    async fn a_member_of_the_old_topology_still_running_stops_the_take_over() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let member = base.join("process-1");
        with_state(&member, 5);
        let _running = Wal::open(&member, WalOptions::default()).unwrap();
        let mut own = Wal::open(base, WalOptions::default()).unwrap();
        let orphans = layout(base, 1, 0).orphans();
        let mqtt = MqttConfig {
            persistent_session: false,
            ..MqttConfig::default()
        };
        let least = Checkpoint::default();
        let taken = take_over(&mut own, &orphans, &mqtt, HashMap::new(), least).await;
        let err = taken.unwrap_err().to_string();
        assert!(err.contains("in use by another process"), "{err}");
        assert!(member.join("checkpoint.json").exists(), "nothing deleted");
    }

    #[test]
    fn a_taken_over_member_is_deleted_but_not_what_else_its_directory_holds() {
        let base = tempfile::tempdir().unwrap();
        let member = base.path().join("process-1");
        with_state(&member, 5);
        std::fs::write(member.join("devices.snapshot"), b"x").unwrap();
        std::fs::write(member.join("notes.txt"), b"mine").unwrap();
        delete_state(&member).unwrap();
        let left: Vec<_> = std::fs::read_dir(&member)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["notes.txt"]);
    }
}
