//! Devices whose readings arrive steadily behind the rest of the fleet: a
//! unit whose clock, or time-zone setting, is hours off (local time sent as
//! UTC), not one uploading the buffer of an outage. Every batch of such a
//! device is late, so its windows are restated again and again within the
//! correction horizon, or refused as `too_late` beyond it, and nothing else
//! points at the unit. A device is named once it has been behind the
//! watermark by a steady lag (within [`SPREAD_MS`]) for [`HELD_MS`] of
//! wall-clock time and [`BATCHES`] batches: a buffer upload is over in
//! seconds and its lag shrinks batch by batch, and a replay at a restart
//! takes no wall-clock time. Only devices behind are held.

use fleetpulse_engine::{DeviceKey, EventTime};

/// How much a steady lag may vary between batches.
pub const SPREAD_MS: u64 = 15 * 60_000;
/// How long (wall clock) a device must stay behind to be named.
pub const HELD_MS: u64 = 30 * 60_000;
/// How many batches it must send meanwhile.
pub const BATCHES: u32 = 10;

/// A device behind, as it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Now named behind, by this lag (ms behind the watermark).
    Behind(u64),
    /// Named before, now on time.
    Back,
}

/// The run of late batches of one device.
#[derive(Debug, Clone, Copy)]
struct Run {
    since: u64,
    min_lag: u64,
    max_lag: u64,
    batches: u32,
    named: bool,
}

/// The devices behind the watermark, and which are named.
#[derive(Debug, Default)]
pub struct BehindClock {
    runs: foldhash::HashMap<DeviceKey, Run>,
}

impl BehindClock {
    /// Takes a batch of `key` whose newest reading is at `newest`, admitted
    /// at wall-clock `now_ms` against `watermark`; says when the device is
    /// named behind, or back on time after it was.
    pub fn observe(
        &mut self,
        key: &DeviceKey,
        newest: EventTime,
        watermark: EventTime,
        now_ms: u64,
    ) -> Option<Change> {
        if newest >= watermark {
            // The usual case, with no device behind: no hashing.
            if self.runs.is_empty() {
                return None;
            }
            let run = self.runs.remove(key)?;
            return run.named.then_some(Change::Back);
        }
        let lag = watermark - newest;
        let fresh = Run {
            since: now_ms,
            min_lag: lag,
            max_lag: lag,
            batches: 0,
            named: false,
        };
        let run = self.runs.entry(key.clone()).or_insert(fresh);
        let (min_lag, max_lag) = (run.min_lag.min(lag), run.max_lag.max(lag));
        if max_lag - min_lag > SPREAD_MS {
            // Not steady (a buffer catching up): start again from here,
            // still named if it was.
            *run = Run {
                named: run.named,
                ..fresh
            };
        } else {
            (run.min_lag, run.max_lag) = (min_lag, max_lag);
        }
        run.batches += 1;
        let held = now_ms.saturating_sub(run.since) >= HELD_MS && run.batches >= BATCHES;
        if held && !run.named {
            run.named = true;
            return Some(Change::Behind(lag));
        }
        None
    }

    /// Devices named behind now.
    pub fn named(&self) -> usize {
        self.runs.values().filter(|r| r.named).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const HOUR: u64 = 60 * MIN;

    fn key(device: &str) -> DeviceKey {
        ("acme".into(), device.into())
    }

    /// A unit sending local time as UTC, 5 hours behind, a batch a minute:
    /// named after 30 minutes, once; back on time once its clock is set.
    /// The fleet's watermark trails the clock by the 2 h lateness.
    #[test]
    fn a_unit_steadily_hours_behind_is_named_once_and_back_when_set() {
        let mut behind = BehindClock::default();
        let now0 = 1_000 * HOUR;
        let mut changes = Vec::new();
        for m in 0..45 {
            let now = now0 + m * MIN;
            let watermark = now - 2 * HOUR;
            let newest = now - 5 * HOUR;
            if let Some(c) = behind.observe(&key("skewed"), newest, watermark, now) {
                changes.push((m, c));
            }
        }
        assert_eq!(changes, [(30, Change::Behind(3 * HOUR))]);
        assert_eq!(behind.named(), 1);
        let now = now0 + 46 * MIN;
        let on_time = behind.observe(&key("skewed"), now, now - 2 * HOUR, now);
        assert_eq!(on_time, Some(Change::Back));
        assert_eq!(behind.named(), 0);
    }

    /// A unit uploading 26 hours of buffer after an outage, a batch every
    /// 100 ms, then live: never named, and nothing held for it after.
    #[test]
    fn a_buffer_upload_is_not_a_clock_behind() {
        let mut behind = BehindClock::default();
        let now0 = 1_000 * HOUR;
        for b in 0..26 * 60 {
            let now = now0 + b * 100;
            let newest = now0 - 26 * HOUR + b * MIN;
            let change = behind.observe(&key("buffered"), newest, now - 2 * HOUR, now);
            assert_eq!(change, None, "batch {b}");
        }
        // Live again for an hour.
        for m in 0..60 {
            let now = now0 + 3 * MIN + m * MIN;
            assert_eq!(
                behind.observe(&key("buffered"), now, now - 2 * HOUR, now),
                None
            );
        }
        assert!(behind.runs.is_empty());
    }

    /// A replay at a restart (the WAL's batches, hours old, in a second)
    /// names nothing however many batches: no wall-clock time passes.
    #[test]
    fn a_replay_takes_no_time_and_names_nothing() {
        let mut behind = BehindClock::default();
        let now = 1_000 * HOUR;
        for b in 0..10_000 {
            assert_eq!(
                behind.observe(&key("d"), now - 5 * HOUR, now - 2 * HOUR, now + b / 10),
                None
            );
        }
    }
}
