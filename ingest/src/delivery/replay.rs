//! Start-up: the checkpoint says what the stores already hold; the WAL's
//! records are replayed through admission into the engine, so every window a
//! restart must finish is recomputed from the same data, and the ledger
//! learns which records it may cut later.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_engine::{DeviceBatch, EngineInput, EventTime};

use super::DeliveryError;
use super::checkpoint::{self, Checkpoint};
use super::ledger::Ledger;
use super::route;
use crate::admission::Admission;
use crate::config::WalConfig;
use crate::corrections::LiveBatches;
use crate::metrics::IngestMetrics;
use crate::wal::{Lsn, Wal, WalError};

/// Batches handed to the engine at once during a replay.
const REPLAY_GROUP: usize = 1024;

/// Refused WAL records named in the log per reason during a replay.
const REFUSALS_NAMED: u64 = 5;

/// Opens (and locks) the WAL directory and reads its checkpoint. While
/// this very process holds the lock (a start in place whose previous run
/// is still letting go of a part it stopped at the deadline), it tries
/// again for up to `patience`, if given.
pub fn open(
    config: &WalConfig,
    patience: Option<Duration>,
) -> Result<(Wal, Checkpoint), DeliveryError> {
    let patience = patience.unwrap_or_default();
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| DeliveryError::Wal(format!("{}: {e}", config.dir.display())))?;
    let started = Instant::now();
    let wal = loop {
        match Wal::open(&config.dir, config.options()) {
            Err(WalError::Locked {
                holder_pid: Some(pid),
                ..
            }) if pid == std::process::id() && started.elapsed() < patience => {
                std::thread::sleep(Duration::from_millis(50));
            }
            opened => break opened.map_err(|e| DeliveryError::Wal(e.to_string()))?,
        }
    };
    let stored = Checkpoint::load(&config.dir).map_err(|e| {
        DeliveryError::Wal(format!("{}: {e}", checkpoint::path(&config.dir).display()))
    })?;
    Ok((wal, stored))
}

/// Replays every record of `wal` into the engine, each through the
/// admission and engine input of the lane that owns its device (`lanes[k]`
/// for lane `k`, over `workers` engine workers). Each lane admits against
/// its own watermark, as during intake; at the end every lane starts at
/// least at the checkpoint. Returns how many records were replayed and
/// where the watermark stands.
pub async fn replay(
    wal: &Wal,
    lanes: &mut [(Admission, EngineInput)],
    workers: usize,
    ledger: &Arc<Mutex<Ledger>>,
    metrics: &IngestMetrics,
    archive: Option<&crate::corrections::Corrections>,
) -> Result<(u64, EventTime), DeliveryError> {
    let first = wal.first_lsn();
    let mut replayed = 0u64;
    let mut progress = crate::progress::Progress::new(
        "replaying",
        "WAL records",
        wal.next_lsn().0.saturating_sub(first.0),
    );
    let ahead = earliest_ahead(wal, lanes, workers)?;
    let mut groups: Vec<Vec<DeviceBatch>> = vec![Vec::new(); lanes.len()];
    // Which of each group's batches came on a backfill topic.
    let mut backfilled: Vec<Vec<bool>> = vec![Vec::new(); lanes.len()];
    let mut watermark: EventTime = 0;
    // Durable records reported to the ledger as one range per REPLAY_GROUP
    // (the log is contiguous): one entry each, not one per record.
    let mut range: Option<(Lsn, Lsn, EventTime)> = None;
    // A customer taken out of the file can have thousands of records in
    // the WAL: the first few are named, the rest counted.
    let mut refused: std::collections::BTreeMap<&str, u64> = Default::default();
    let records = wal
        .replay(first)
        .map_err(|e| DeliveryError::Wal(e.to_string()))?;
    for (index, entry) in records.enumerate() {
        let (lsn, record) = entry.map_err(|e| DeliveryError::Wal(e.to_string()))?;
        if index % REPLAY_GROUP == 0
            && let Some(earliest) = ahead.get(index / REPLAY_GROUP)
        {
            for ((admission, _), at) in lanes.iter_mut().zip(earliest) {
                admission.hold_watermark_below(*at);
            }
        }
        progress.set(lsn.0.saturating_sub(first.0) + 1);
        let lane = route::lane(&record.topic, workers, lanes.len());
        let (admission, engine) = &mut lanes[lane];
        let (group, from_backfill) = (&mut groups[lane], &mut backfilled[lane]);
        let admitted = admission.admit(&record.topic, &record.payload, record.received_ms);
        watermark = watermark.max(admission.watermark().current());
        // A refused record is durable too: the cut must be able to pass it.
        let newest = admitted.as_ref().map_or(0, |b| b.last_at());
        let (start, _, at) = range.unwrap_or((lsn, lsn, 0));
        range = Some((start, Lsn(lsn.0 + 1), at.max(newest)));
        if lsn.0 + 1 - start.0 >= REPLAY_GROUP as u64 {
            report(ledger, range.take());
        }
        match admitted {
            Ok(batch) => {
                group.push(batch);
                from_backfill.push(super::intake::is_backfill(&record.topic));
                replayed += 1;
            }
            Err(rejection) => {
                let reason = rejection.reason.as_str();
                let seen = refused.entry(reason).or_insert(0);
                *seen += 1;
                if *seen <= REFUSALS_NAMED {
                    tracing::warn!(
                        %lsn, reason,
                        "WAL record refused on replay: {}", rejection.detail
                    );
                }
            }
        }
        if group.len() >= REPLAY_GROUP {
            if let Some(archive) = archive {
                // Read once where it is already.
                archive.append(LiveBatches::encode_from(group, |i| from_backfill[i]));
            }
            from_backfill.clear();
            engine.send_all(std::mem::take(group)).await?;
            engine.advance(admission.watermark().current()).await?;
        }
    }
    report(ledger, range);
    for (((admission, engine), group), from_backfill) in
        lanes.iter_mut().zip(groups).zip(backfilled)
    {
        admission.hold_watermark_below(EventTime::MAX);
        if !group.is_empty() {
            if let Some(archive) = archive {
                archive.append(LiveBatches::encode_from(&group, |i| from_backfill[i]));
            }
            engine.send_all(group).await?;
        }
        // Each lane from its own records: what the broker redelivers to a
        // lane that was behind is older than what the others replayed.
        engine.advance(admission.watermark().current()).await?;
    }
    // Every window ending before the checkpoint is in every store: telemetry
    // for it is late, on every lane. A lane the replay gave nothing (none of
    // its devices' records left in the WAL) would otherwise start at 0 and
    // take it as on time, and the engine's records of it would be
    // suppressed as written before: accepted, and in no store.
    let floor = ledger
        .lock()
        .expect("ledger poisoned")
        .checkpoint()
        .written_before;
    for (admission, engine) in lanes.iter_mut() {
        admission.follow(floor);
        // The engine's input too, so both judge a first batch alike.
        engine.advance(admission.watermark().current()).await?;
    }
    watermark = watermark.max(floor);
    metrics
        .messages_replayed
        .fetch_add(replayed, std::sync::atomic::Ordering::Relaxed);
    if refused.values().any(|n| *n > REFUSALS_NAMED) {
        tracing::warn!(
            refused = ?refused,
            "WAL records refused on replay, by reason (the first {REFUSALS_NAMED} of each named above)"
        );
    }
    progress.finish(&format!("{replayed} WAL records replayed"));
    Ok((replayed, watermark))
}

/// Tells the ledger that WAL records `start..end`, newest reading `newest`,
/// are durable.
fn report(ledger: &Mutex<Ledger>, range: Option<(Lsn, Lsn, EventTime)>) {
    if let Some((start, end, newest)) = range {
        ledger
            .lock()
            .expect("ledger poisoned")
            .durable(start..end, newest);
    }
}

/// Per group of [`REPLAY_GROUP`] WAL records and per lane, the earliest
/// reading in that group or after it. The WAL holds records in the order
/// they became durable, which is not event time across lanes, and a restart
/// with another worker count routes them to other lanes: a lane's watermark
/// is held below what is still to come to it, so no record is refused that
/// the first run admitted. Costs a first pass over the WAL (decode only).
fn earliest_ahead(
    wal: &Wal,
    lanes: &mut [(Admission, EngineInput)],
    workers: usize,
) -> Result<Vec<Vec<EventTime>>, DeliveryError> {
    let mut groups: Vec<Vec<EventTime>> = Vec::new();
    let records = wal
        .replay(wal.first_lsn())
        .map_err(|e| DeliveryError::Wal(e.to_string()))?;
    for (index, entry) in records.enumerate() {
        let (_, record) = entry.map_err(|e| DeliveryError::Wal(e.to_string()))?;
        if index % REPLAY_GROUP == 0 {
            groups.push(vec![EventTime::MAX; lanes.len()]);
        }
        let lane = route::lane(&record.topic, workers, lanes.len());
        if let Some(at) = lanes[0].0.first_at(&record.topic, &record.payload) {
            let earliest = &mut groups.last_mut().expect("pushed above")[lane];
            *earliest = (*earliest).min(at);
        }
    }
    for g in (0..groups.len().saturating_sub(1)).rev() {
        let (now, later) = groups.split_at_mut(g + 1);
        for (at, after) in now[g].iter_mut().zip(&later[0]) {
            *at = (*at).min(*after);
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start in place may find its own previous run still letting go of
    /// the WAL: it waits for it, within its patience. A fresh start (no
    /// patience) fails at once and names the holder.
    #[test]
    fn a_wal_held_by_this_process_is_waited_for_within_the_patience() {
        let dir = tempfile::tempdir().unwrap();
        let config: WalConfig =
            toml::from_str(&format!("dir = {:?}", dir.path().display().to_string())).unwrap();
        let held = open(&config, None).unwrap();
        let err = open(&config, None).unwrap_err().to_string();
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        assert!(
            open(&config, Some(Duration::from_millis(200))).is_err(),
            "still held after the patience"
        );
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let started = Instant::now();
        open(&config, Some(Duration::from_secs(10))).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        release.join().unwrap();
    }
}
