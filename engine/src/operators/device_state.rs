//! Per-device state: deduplicates batches by (customer, device, unit epoch,
//! sequence) and turns cumulative counters into increments, in event-time
//! order. A device is (customer, device id): two customers may both have an
//! `exc-07`.
//!
//! A batch is told new or a duplicate as it arrives (the order admission
//! took it in), held until the input frontier passes its first reading's
//! tick, then processed per device in (event time, sequence) order, so a
//! batch that overtook an earlier one on the wire still yields the right
//! increments.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::route;
use crate::config::{EngineConfig, HOUR_MS};
use crate::device_map::DeviceMap;
use crate::model::{DeviceBatch, DeviceKey, EventTime, Id, Increments, Usage};
use crate::stats::EngineStats;

/// What dedup decided about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not seen before: process it.
    New,
    /// Seen before (broker redelivery, replay): drop it.
    Duplicate,
    /// Older than the replay window: cannot tell, treat as a replay and drop.
    TooOld,
}

/// Sequence numbers a device has delivered: a high-water mark, a bit set of
/// the [`Self::WINDOW`] sequences below it (the anti-replay window of IPsec),
/// and, further back, the ranges still missing. A unit that uploads a buffer
/// of days after its reconnect message fills its missing range from either
/// end, so its old batches count and their replays are still refused,
/// however far behind the newest they are. 16 bytes per device plus a range
/// list that is empty (no allocation) unless something is missing beyond the
/// bit set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceWindow {
    high: u64,
    /// Bit `i` set: sequence `high - i` was seen. Bit 0 is `high` itself.
    seen: u64,
    /// The lowest sequence known: what lies below it and beyond the bit set
    /// is new if [`Self::open_below`], and too old otherwise (it cannot be
    /// told from a replay).
    floor: u64,
    /// The first sequence seen: gaps are counted from it.
    first: u64,
    /// Whether a sequence below the floor is new: the engine's memory of a
    /// device holds every batch it took in since it first met the unit, so
    /// one below is one it never took in (a unit first met at its
    /// reconnect, its buffer behind). Admission, per lane and rebuilt from
    /// the WAL, is open too and leaves a replay from before its memory to
    /// the engine. Closed once a range is forgotten, and in a memory
    /// restored from a format-1 snapshot.
    open_below: bool,
    /// Missing sequences below the bit set, as inclusive ranges in ascending
    /// order, none adjacent; at most [`Self::MISSING_RANGES`].
    missing: Vec<(u64, u64)>,
}

impl SequenceWindow {
    /// How far below the high-water mark a sequence is told by the bit set.
    pub const WINDOW: u64 = 64;

    /// How many missing ranges are remembered: a device whose buffer comes
    /// back in no order splits its range, and past this the oldest range is
    /// forgotten (its sequences stay counted as gaps and are then too old).
    pub const MISSING_RANGES: usize = 64;

    /// How many the dataflow's memory of a device remembers
    /// ([`DeviceMemory::admit`]): more than admission's, whose window per
    /// lane sees part of a device's batches (a shared subscription spreads
    /// them over the lanes) while the dataflow sees them all, interleaved,
    /// and a snapshot takes the waiting ones out again
    /// ([`SequenceWindow::unsee`]). Only a unit whose sequences jump about
    /// holds many (16 bytes each).
    pub const ENGINE_MISSING_RANGES: usize = 1024;

    /// A window that has seen only `sequence`; `open_below`: see the field.
    pub fn fresh(sequence: u64, open_below: bool) -> Self {
        Self {
            high: sequence,
            seen: 1,
            floor: sequence,
            first: sequence,
            open_below,
            missing: Vec::new(),
        }
    }

    /// Records `sequence`, saying whether it is new. `gaps` is raised by the
    /// sequences skipped over and lowered when a skipped one turns up (one
    /// below the first sequence seen was never skipped: it changes nothing).
    pub fn admit(&mut self, sequence: u64, gaps: &mut i64) -> Admission {
        self.admit_keeping(sequence, gaps, Self::MISSING_RANGES)
    }

    /// [`Self::admit`], remembering at most `ranges` missing ranges.
    pub fn admit_keeping(&mut self, sequence: u64, gaps: &mut i64, ranges: usize) -> Admission {
        if self.seen == 0 {
            *self = Self::fresh(sequence, self.open_below);
            return Admission::New;
        }
        if sequence > self.high {
            let shift = sequence - self.high;
            *gaps += (shift - 1) as i64;
            self.slide(shift, ranges);
            return Admission::New;
        }
        let age = self.high - sequence;
        if age < Self::WINDOW {
            if self.seen & (1 << age) != 0 {
                return Admission::Duplicate;
            }
            self.seen |= 1 << age;
            // Below the first sequence seen it was never counted as skipped.
            if sequence >= self.first {
                *gaps -= 1;
            }
            if self.open_below && sequence < self.floor {
                // Known from now on: the unseen between it and the floor go
                // missing as they leave the bit set.
                self.floor = sequence;
            }
            return Admission::New;
        }
        if sequence < self.floor {
            if !self.open_below {
                return Admission::TooOld;
            }
            // Never taken in: new, and what lies between it and the floor
            // (below the bit set) is missing, not skipped.
            let last = (self.floor - 1).min(self.high - Self::WINDOW);
            if sequence < last {
                match self.missing.first_mut() {
                    Some(range) if range.0 == last + 1 => range.0 = sequence + 1,
                    _ => self.missing.insert(0, (sequence + 1, last)),
                }
            }
            self.floor = sequence;
            self.bound(ranges);
            return Admission::New;
        }
        let at = self.missing.partition_point(|&(_, last)| last < sequence);
        match self.missing.get(at) {
            Some(&(first, last)) if first <= sequence => {
                match (first < sequence, sequence < last) {
                    (false, false) => {
                        self.missing.remove(at);
                    }
                    (true, false) => self.missing[at].1 = sequence - 1,
                    (false, true) => self.missing[at].0 = sequence + 1,
                    (true, true) => {
                        self.missing[at].1 = sequence - 1;
                        self.missing.insert(at + 1, (sequence + 1, last));
                        self.bound(ranges);
                    }
                }
                if sequence >= self.first {
                    *gaps -= 1;
                }
                Admission::New
            }
            _ => Admission::Duplicate,
        }
    }

    /// Moves the high-water mark up by `shift` to `high + shift`: sequences
    /// leaving the bit set unseen, and those skipped over beyond it, become
    /// missing ranges.
    fn slide(&mut self, shift: u64, ranges: usize) {
        let old_high = self.high;
        // Bits i in [WINDOW - shift, WINDOW) leave, oldest (highest i) first.
        let leaving_from = Self::WINDOW.saturating_sub(shift);
        for i in (leaving_from..Self::WINDOW).rev() {
            if self.seen & (1 << i) == 0 && i <= old_high - self.floor {
                self.note_missing(old_high - i, old_high - i, ranges);
            }
        }
        let new_high = old_high + shift;
        // Skipped sequences that never enter the bit set.
        if shift > Self::WINDOW {
            self.note_missing(old_high + 1, new_high - Self::WINDOW, ranges);
        }
        self.seen = if shift >= Self::WINDOW {
            0
        } else {
            self.seen << shift
        };
        self.seen |= 1;
        self.high = new_high;
    }

    /// Appends a missing range above every one held.
    fn note_missing(&mut self, first: u64, last: u64, ranges: usize) {
        match self.missing.last_mut() {
            Some(range) if range.1 + 1 == first => range.1 = last,
            _ => {
                self.missing.push((first, last));
                self.bound(ranges);
            }
        }
    }

    /// Forgets the oldest ranges past `ranges`: the floor moves above them.
    fn bound(&mut self, ranges: usize) {
        if self.missing.len() > ranges {
            let forgotten = self.missing.len() - ranges;
            self.floor = self.missing[forgotten - 1].1 + 1;
            self.open_below = false;
            self.missing.drain(..forgotten);
        }
    }

    /// Whether `sequence` was seen. Below the floor a closed window cannot
    /// tell (too old: as good as seen), an open one never took it in.
    fn holds(&self, sequence: u64) -> bool {
        if self.seen == 0 || sequence > self.high {
            return false;
        }
        let age = self.high - sequence;
        if age < Self::WINDOW {
            return self.seen & (1 << age) != 0;
        }
        if sequence < self.floor {
            return !self.open_below;
        }
        let at = self.missing.partition_point(|&(_, last)| last < sequence);
        (self.missing.get(at)).is_none_or(|&(first, _)| first > sequence)
    }

    /// The highest sequence seen below the high-water mark, at or above
    /// the floor.
    fn next_below_high(&self) -> Option<u64> {
        let older = self.seen >> 1;
        if older != 0 {
            return Some(self.high - 1 - u64::from(older.trailing_zeros()));
        }
        let below = self.high.checked_sub(Self::WINDOW)?;
        if below < self.floor {
            return None;
        }
        let at = self.missing.partition_point(|&(_, last)| last < below);
        match self.missing.get(at) {
            Some(&(first, _)) if first <= below => {
                // Ranges are never adjacent: the one below a range is seen.
                first.checked_sub(1).filter(|&s| s >= self.floor)
            }
            _ => Some(below),
        }
    }

    /// Forgets that `sequence` was seen: it was told new and not yet
    /// applied when a snapshot was taken, and the replay after a restore
    /// brings it again. Exact: the window then holds the same sequences
    /// as one that never saw it. `false` where it cannot: below the floor
    /// of a window that forgot ranges (a unit whose sequences jump about),
    /// where it cannot tell one sequence from another, and the last one a
    /// closed window holds above its floor.
    pub fn unsee(&mut self, sequence: u64) -> bool {
        if !self.holds(sequence) {
            return true;
        }
        let age = self.high - sequence;
        if age >= Self::WINDOW {
            if sequence < self.floor {
                return false;
            }
            self.insert_missing(sequence);
        } else if age > 0 {
            self.seen &= !(1 << age);
            // Missing, not too old, once it leaves the bit set (a closed
            // window's bit set takes one below its floor).
            self.floor = self.floor.min(sequence);
        } else if let Some(next) = self.next_below_high() {
            self.lower_high_to(next);
        } else if self.open_below {
            *self = Self {
                open_below: true,
                ..Self::default()
            };
        } else {
            // Nothing seen at or above a closed window's floor but the
            // high-water mark: emptied, it would forget what lies below.
            return false;
        }
        true
    }

    /// The high-water mark down to `next`, the next sequence seen: the bit
    /// set takes in from below what it then covers.
    fn lower_high_to(&mut self, next: u64) {
        let shift = self.high - next;
        let mut seen = if shift >= Self::WINDOW {
            0
        } else {
            self.seen >> shift
        };
        for age in Self::WINDOW.saturating_sub(shift)..Self::WINDOW {
            // Below a closed window's floor: too old, held as seen.
            if let Some(sequence) = next.checked_sub(age)
                && self.holds(sequence)
            {
                seen |= 1 << age;
            }
        }
        // Missing ranges lie below the bit set only.
        match next.checked_sub(Self::WINDOW) {
            Some(top) => {
                self.missing.retain(|&(first, _)| first <= top);
                if let Some(last) = self.missing.last_mut() {
                    last.1 = last.1.min(top);
                }
            }
            None => self.missing.clear(),
        }
        self.high = next;
        self.seen = seen;
        // A closed window takes in a sequence below its floor that its bit
        // set still covers (the floor stays): the floor is never above the
        // high-water mark.
        self.floor = self.floor.min(next);
    }

    /// The sequences skipped since the first one seen that are missing
    /// still, as far as it remembers (a forgotten range is not): what the
    /// gaps gauge held of it when it was saved.
    pub fn missing_count(&self) -> u64 {
        if self.seen == 0 {
            return 0;
        }
        let low = (self.high.saturating_sub(Self::WINDOW - 1)).max(self.first);
        let span = self.high.saturating_sub(low) + 1;
        let mask = if span >= Self::WINDOW {
            u64::MAX
        } else {
            (1 << span) - 1
        };
        let in_bits = u64::from((!self.seen & mask).count_ones());
        let below: u64 = (self.missing.iter())
            .map(|&(first, last)| (last + 1).saturating_sub(first.max(self.first)))
            .sum();
        in_bits + below
    }

    /// Marks `sequence`, below the bit set, missing again.
    fn insert_missing(&mut self, sequence: u64) {
        let at = self.missing.partition_point(|&(_, last)| last < sequence);
        let joins_below = at > 0 && self.missing[at - 1].1 + 1 == sequence;
        let joins_above = (self.missing.get(at)).is_some_and(|r| r.0 == sequence + 1);
        match (joins_below, joins_above) {
            (true, true) => {
                self.missing[at - 1].1 = self.missing[at].1;
                self.missing.remove(at);
            }
            (true, false) => self.missing[at - 1].1 = sequence,
            (false, true) => self.missing[at].0 = sequence,
            (false, false) => self.missing.insert(at, (sequence, sequence)),
        }
    }
}

/// The sequence windows of a device's telematics units, one per unit epoch:
/// a replaced or factory-reset unit restarts its sequence at 1 under a higher
/// epoch and gets a fresh window, while the [`Self::RECENT_EPOCHS`] highest
/// epochs stay recognised, so the old unit's delayed batches still count and
/// its replays are still refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSequences {
    /// The highest epoch seen and its window (`None` before the first batch).
    current: Option<(u64, SequenceWindow)>,
    /// Earlier epochs still recognised, highest first; empty (no allocation)
    /// for a unit never replaced.
    older: Vec<(u64, SequenceWindow)>,
}

impl UnitSequences {
    /// How many unit epochs of one device are remembered; a batch of an
    /// older epoch is [`Admission::TooOld`].
    pub const RECENT_EPOCHS: usize = 4;

    /// Records `sequence` of unit `epoch`, saying whether it is new. `gaps`
    /// as in [`SequenceWindow::admit`]; a new epoch starts without gaps.
    /// `open_below`: a unit's window takes sequences below the first it saw
    /// as new ([`SequenceWindow::fresh`]).
    pub fn admit(
        &mut self,
        epoch: u64,
        sequence: u64,
        gaps: &mut i64,
        open_below: bool,
    ) -> Admission {
        self.admit_keeping(
            epoch,
            sequence,
            gaps,
            open_below,
            SequenceWindow::MISSING_RANGES,
        )
    }

    /// [`Self::admit`], each window remembering at most `ranges` missing
    /// ranges.
    pub fn admit_keeping(
        &mut self,
        epoch: u64,
        sequence: u64,
        gaps: &mut i64,
        open_below: bool,
        ranges: usize,
    ) -> Admission {
        let Some((high, window)) = &mut self.current else {
            self.current = Some((epoch, SequenceWindow::fresh(sequence, open_below)));
            return Admission::New;
        };
        if epoch == *high {
            return window.admit_keeping(sequence, gaps, ranges);
        }
        if epoch > *high {
            let previous = (*high, std::mem::take(window));
            self.current = Some((epoch, SequenceWindow::fresh(sequence, open_below)));
            self.older.insert(0, previous);
            self.older.truncate(Self::RECENT_EPOCHS - 1);
            return Admission::New;
        }
        let at = self.older.partition_point(|(e, _)| *e > epoch);
        if let Some((e, window)) = self.older.get_mut(at)
            && *e == epoch
        {
            return window.admit_keeping(sequence, gaps, ranges);
        }
        if at >= Self::RECENT_EPOCHS - 1 {
            return Admission::TooOld;
        }
        // An earlier unit not seen before (its batches were delayed past
        // the replacement's first one): remember it among the recent ones.
        self.older
            .insert(at, (epoch, SequenceWindow::fresh(sequence, open_below)));
        self.older.truncate(Self::RECENT_EPOCHS - 1);
        Admission::New
    }

    /// The sequences missing in every unit's window
    /// ([`SequenceWindow::missing_count`]).
    pub fn missing_count(&self) -> u64 {
        (self.current.iter().chain(&self.older))
            .map(|(_, window)| window.missing_count())
            .sum()
    }

    /// The highest unit epoch seen.
    pub fn current_epoch(&self) -> Option<u64> {
        self.current.as_ref().map(|(epoch, _)| *epoch)
    }

    /// Forgets that `sequence` of unit `epoch` was seen
    /// ([`SequenceWindow::unsee`]); `false` where it cannot, or the unit
    /// is no longer remembered.
    pub fn unsee(&mut self, epoch: u64, sequence: u64) -> bool {
        match &mut self.current {
            Some((high, window)) if *high == epoch => window.unsee(sequence),
            _ => (self.older.iter_mut().find(|(e, _)| *e == epoch))
                .is_some_and(|(_, window)| window.unsee(sequence)),
        }
    }
}

/// What the engine remembers of one device between batches (and a
/// snapshot keeps across a restart).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceMemory {
    /// The device's batches whose first tick is before this are in the
    /// memory (set in snapshots; a replay skips them after a restore).
    covered_to: EventTime,
    sequences: UnitSequences,
    /// Last cumulative readings; `None` before the first reading.
    last: Option<Cumulative>,
    /// The newest reading of the late batches absorbed since, not yet
    /// placed: it becomes `last` when a reading at or after it is applied.
    /// Batches still waiting for the frontier (another worker's input holds
    /// it back) may be older than a late one, and count from `last`.
    /// Not in snapshots: see [`Self::for_snapshot`].
    #[serde(skip)]
    ahead: Option<Cumulative>,
    /// Batches told new and still waiting when the snapshot it came from
    /// was taken, which its windows could not forget
    /// ([`SequenceWindow::unsee`]): new once more when the replay brings
    /// them. `None` (no allocation) but for a unit whose sequences jump
    /// about past the windows' ranges.
    unapplied: Option<Box<[(u64, u64)]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Cumulative {
    at: EventTime,
    /// Unit epoch of the reading.
    epoch: u64,
    operating_hours: f64,
    idle_hours: f64,
    fuel_litres: f64,
}

/// Cumulative-counter readings that could not count as work, summed over
/// the batches applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterFaults {
    /// A counter went backwards without a new unit epoch (a reset the
    /// protocol does not announce, or a reading of 0 from a unit whose bus
    /// was not ready).
    pub resets: u64,
    /// A counter rose more than the time since the previous reading allows
    /// (a corrupt value, or the true value again after a reading of 0).
    pub jumps: u64,
}

/// This worker's own copies of the customer and site ids its usage carries.
/// Intake shares one `Arc<str>` per customer (and site) among all its
/// batches, which land on every worker; each reading's usage clones and
/// drops them, so with shared copies the workers fight over one reference
/// count per customer (its cache line moving between cores at each
/// reading). Copies made here are touched by this worker alone.
#[derive(Debug, Default)]
struct OwnIds(foldhash::HashSet<Id>);

impl OwnIds {
    /// Puts this worker's copies of `batch`'s customer and site in place of
    /// intake's.
    fn take_over(&mut self, batch: &mut DeviceBatch) {
        for id in [&mut batch.customer, &mut batch.site] {
            *id = self.own(id);
        }
    }

    fn own(&mut self, id: &Id) -> Id {
        if let Some(own) = self.0.get(&**id) {
            return own.clone();
        }
        let own: Id = Arc::from(&**id);
        self.0.insert(own.clone());
        own
    }
}

/// The most a cumulative counter can gain: `per_hour` of the time elapsed,
/// and `slack` for the meter's resolution. Other sources of running totals
/// (AEMP) judge them by the same bounds.
#[derive(Debug, Clone, Copy)]
pub struct MostGain {
    /// Gain per hour elapsed.
    pub per_hour: f64,
    /// Gain on top, for the meter's resolution.
    pub slack: f64,
}

/// An hour meter gains at most the hours elapsed, and one more: meters that
/// count whole hours step by 1 between two close readings.
pub const HOURS: MostGain = MostGain {
    per_hour: 1.0,
    slack: 1.0,
};

/// No machine burns 1,000 litres an hour (the largest haul trucks burn a
/// few hundred); 100 litres for the meter's resolution.
pub const LITRES: MostGain = MostGain {
    per_hour: 1_000.0,
    slack: 100.0,
};

/// Hours from the previous reading to this one, and from the unit's epoch
/// to this one (what a unit that restarted its counters at its epoch can
/// have worked).
#[derive(Debug, Clone, Copy)]
struct Elapsed {
    since_last: f64,
    since_epoch: f64,
}

/// Increment of a cumulative counter. A counter below the previous reading
/// of the same unit went backwards (reset without a new epoch): it restarts
/// from its new value and contributes nothing. Below the reading of an
/// earlier unit (`new_unit`), the replacement counts from 0 at its epoch, so
/// all of its value is work; a replacement carrying on from the machine's
/// own meters is above the old reading and counts the difference. A gain
/// above `most` of the time elapsed is no work a machine can do: the counter
/// restarts from its new value and contributes nothing, so a reading of 0
/// between two true ones costs the two intervals around it instead of
/// adding the machine's whole life to one.
fn increment(
    now: f64,
    before: f64,
    new_unit: bool,
    elapsed: Elapsed,
    most: MostGain,
    faults: &mut MeterFaults,
) -> f64 {
    let (gained, hours) = if now >= before {
        (now - before, elapsed.since_last)
    } else if new_unit {
        (now, elapsed.since_epoch)
    } else {
        faults.resets += 1;
        return 0.0;
    };
    if gained > hours * most.per_hour + most.slack {
        faults.jumps += 1;
        return 0.0;
    }
    gained
}

impl DeviceMemory {
    /// Turns a batch into usage records, or `Err` with the dedup verdict when
    /// the batch must be dropped.
    pub fn apply(
        &mut self,
        batch: DeviceBatch,
        gaps: &mut i64,
        faults: &mut MeterFaults,
        out: &mut Vec<Usage>,
    ) -> Result<(), Admission> {
        match self.admit(&batch, gaps) {
            Admission::New => {}
            verdict => return Err(verdict),
        }
        self.apply_new(batch, faults, out);
        Ok(())
    }

    /// Records `batch`'s sequence, saying whether it is new (nothing else
    /// of the memory changes).
    pub fn admit(&mut self, batch: &DeviceBatch, gaps: &mut i64) -> Admission {
        let ranges = SequenceWindow::ENGINE_MISSING_RANGES;
        let (epoch, sequence) = (batch.unit_epoch, batch.sequence);
        let told = (self.sequences).admit_keeping(epoch, sequence, gaps, true, ranges);
        if told != Admission::New && self.take_unapplied(epoch, sequence) {
            return Admission::New;
        }
        told
    }

    /// Whether (`epoch`, `sequence`) waited unapplied at the snapshot this
    /// memory came from; no longer once asked.
    fn take_unapplied(&mut self, epoch: u64, sequence: u64) -> bool {
        let Some(unapplied) = &self.unapplied else {
            return false;
        };
        if !unapplied.contains(&(epoch, sequence)) {
            return false;
        }
        let rest: Box<[(u64, u64)]> = (unapplied.iter())
            .filter(|&&told| told != (epoch, sequence))
            .copied()
            .collect();
        self.unapplied = (!rest.is_empty()).then_some(rest);
        true
    }

    /// [`Self::admit`] forgetting no missing range: for a fold that holds
    /// every batch it tells (a restatement), in event-time order, where a
    /// unit whose sequences rise as its readings go back in time splits
    /// its window into a range a batch.
    pub fn admit_all(&mut self, batch: &DeviceBatch, gaps: &mut i64) -> Admission {
        (self.sequences).admit_keeping(batch.unit_epoch, batch.sequence, gaps, true, usize::MAX)
    }

    /// Turns a batch [`Self::admit`] found new into usage records.
    pub fn apply_new(
        &mut self,
        batch: DeviceBatch,
        faults: &mut MeterFaults,
        out: &mut Vec<Usage>,
    ) {
        let DeviceBatch {
            customer,
            site,
            device,
            unit_epoch,
            samples,
            ..
        } = batch;
        for sample in samples {
            self.place_ahead(sample.at);
            let increments = match self.last {
                Some(last) if sample.at >= last.at => {
                    let new_unit = unit_epoch > last.epoch;
                    let hours =
                        |from: EventTime| sample.at.saturating_sub(from) as f64 / HOUR_MS as f64;
                    let elapsed = Elapsed {
                        since_last: hours(last.at),
                        // Only a new unit's restart is measured from it,
                        // and no further back than the last reading: what
                        // the machine worked before that, the old unit
                        // counted (a unit whose clock says 2000 does not
                        // bring the machine's lifetime in one hour).
                        since_epoch: if new_unit {
                            hours(unit_epoch.saturating_mul(1000).max(last.at))
                        } else {
                            0.0
                        },
                    };
                    let mut counter =
                        |now, before, most| increment(now, before, new_unit, elapsed, most, faults);
                    Increments {
                        operating_hours: counter(
                            sample.operating_hours,
                            last.operating_hours,
                            HOURS,
                        ),
                        idle_hours: counter(sample.idle_hours, last.idle_hours, HOURS),
                        fuel_litres: counter(sample.fuel_litres, last.fuel_litres, LITRES),
                    }
                }
                // The first reading is the baseline; an out-of-order one
                // (older than what we hold) cannot be placed and adds nothing.
                _ => Increments::default(),
            };
            if self.last.is_none_or(|last| sample.at >= last.at) {
                self.last = Some(Cumulative {
                    at: sample.at,
                    epoch: unit_epoch,
                    operating_hours: sample.operating_hours,
                    idle_hours: sample.idle_hours,
                    fuel_litres: sample.fuel_litres,
                });
            }
            out.push(Usage {
                customer: customer.clone(),
                site: site.clone(),
                device: device.clone(),
                sample,
                increments,
            });
        }
    }
}

impl DeviceMemory {
    /// The memory with every unit's window closed below its floor (a
    /// sequence below it too old, not new): what a format-1 snapshot
    /// restores, having kept nothing further back than its bit set.
    pub fn closed_below(mut self) -> Self {
        let units = &mut self.sequences;
        for (_, window) in units.current.iter_mut().chain(units.older.iter_mut()) {
            window.open_below = false;
        }
        self
    }

    /// Takes in a batch that arrived after its windows closed (ingest
    /// archived it and restates those windows): its sequence is marked
    /// seen, and its last reading becomes the device's baseline for the
    /// first reading applied after it, so the next live reading's increment
    /// starts from it; readings still waiting that are older keep theirs.
    /// Nothing goes to a window. `Err` with the dedup verdict for a batch
    /// seen before.
    pub fn absorb(&mut self, batch: &DeviceBatch, gaps: &mut i64) -> Result<(), Admission> {
        match self.admit(batch, gaps) {
            Admission::Duplicate => return Err(Admission::Duplicate),
            Admission::New | Admission::TooOld => {}
        }
        if let Some(sample) = batch.samples.last()
            && self.last.is_none_or(|last| sample.at > last.at)
            && self.ahead.is_none_or(|ahead| sample.at > ahead.at)
        {
            self.ahead = Some(Cumulative {
                at: sample.at,
                epoch: batch.unit_epoch,
                operating_hours: sample.operating_hours,
                idle_hours: sample.idle_hours,
                fuel_litres: sample.fuel_litres,
            });
        }
        Ok(())
    }

    /// Makes the absorbed reading the baseline once a reading at `at` (not
    /// older) is applied.
    fn place_ahead(&mut self, at: EventTime) {
        if let Some(ahead) = self.ahead.take_if(|ahead| ahead.at <= at)
            && self.last.is_none_or(|last| ahead.at > last.at)
        {
            self.last = Some(ahead);
        }
    }

    /// The memory as a snapshot at `point` keeps it: every batch still
    /// waiting starts at or after the point (the WAL replays them after a
    /// restart), so an absorbed reading before it is placed; one after it
    /// is left out, and the window of the next reading is restated from
    /// the archive like the late batch's own. `waiting`: the (unit epoch,
    /// sequence) of the device's batches told new and still waiting, which
    /// the replay brings again: the snapshot has not seen them.
    pub fn for_snapshot(&self, point: EventTime, waiting: &[(u64, u64)]) -> Self {
        let mut memory = self.clone();
        if let Some(ahead) = memory.ahead.filter(|ahead| ahead.at < point) {
            memory.place_ahead(ahead.at);
        }
        memory.ahead = None;
        let kept_back =
            (waiting.iter()).filter(|&&(epoch, sequence)| !memory.sequences.unsee(epoch, sequence));
        let unapplied: Vec<(u64, u64)> = (memory.unapplied.iter().flatten())
            .chain(kept_back)
            .copied()
            .collect();
        memory.unapplied = (!unapplied.is_empty()).then(|| unapplied.into());
        memory
    }
}

/// The device memory as snapshot format 1 wrote it, before the window kept
/// missing ranges: read so that an upgrade keeps every device's sequences.
pub mod format_1 {
    use serde::Deserialize;

    use super::{Cumulative, EventTime, SequenceWindow, UnitSequences};

    #[derive(Deserialize)]
    struct Window {
        high: u64,
        seen: u64,
    }

    #[derive(Deserialize)]
    struct Units {
        current: Option<(u64, Window)>,
        older: Vec<(u64, Window)>,
    }

    /// One device's memory in format 1.
    #[derive(Deserialize)]
    pub struct DeviceMemory {
        covered_to: EventTime,
        sequences: Units,
        last: Option<Cumulative>,
    }

    /// The oldest sequence the bit set holds becomes the floor: format 1
    /// could tell nothing older either.
    fn window(Window { high, seen }: Window) -> SequenceWindow {
        if seen == 0 {
            return SequenceWindow::default();
        }
        let floor = high - u64::from(63 - seen.leading_zeros());
        SequenceWindow {
            high,
            seen,
            floor,
            first: floor,
            // What lay further back may have been taken in: too old.
            open_below: false,
            missing: Vec::new(),
        }
    }

    impl From<DeviceMemory> for super::DeviceMemory {
        fn from(old: DeviceMemory) -> Self {
            let Units { current, older } = old.sequences;
            Self {
                covered_to: old.covered_to,
                sequences: UnitSequences {
                    current: current.map(|(epoch, w)| (epoch, window(w))),
                    older: older.into_iter().map(|(e, w)| (e, window(w))).collect(),
                },
                last: old.last,
                ahead: None,
                unapplied: None,
            }
        }
    }
}

/// The device memory as snapshot format 2 wrote it, before a memory kept
/// the batches a snapshot could not take out of its windows.
pub mod format_2 {
    use serde::Deserialize;

    use super::{Cumulative, EventTime, UnitSequences};

    /// One device's memory in format 2.
    #[derive(Deserialize)]
    pub struct DeviceMemory {
        covered_to: EventTime,
        sequences: UnitSequences,
        last: Option<Cumulative>,
    }

    impl From<DeviceMemory> for super::DeviceMemory {
        fn from(old: DeviceMemory) -> Self {
            Self {
                covered_to: old.covered_to,
                sequences: old.sequences,
                last: old.last,
                ahead: None,
                unapplied: None,
            }
        }
    }
}

/// The worker a device's batches go to: by (customer, device), the same on
/// every worker and process. The engine's inputs use it too, so a batch
/// usually stays on the worker it entered.
pub fn route_device(batch: &DeviceBatch) -> u64 {
    route(&(&*batch.customer, &*batch.device))
}

/// The order a device's batches are applied in: by event time, then unit
/// epoch, then sequence (a batch that overtook an earlier one on the wire
/// still yields the right increments).
pub fn processing_order(batch: &DeviceBatch) -> (&str, &str, EventTime, u64, u64) {
    (
        &batch.customer,
        &batch.device,
        batch.first_at(),
        batch.unit_epoch,
        batch.sequence,
    )
}

/// Usage records the operator's buffer keeps capacity for between ticks.
const USAGE_KEPT: usize = 4096;

/// Extension trait adding the per-device state operator to a batch stream.
pub trait DeviceStateExt<'scope> {
    /// Routes batches by device, drops duplicates and emits one [`Usage`] per
    /// reading with cumulative counters turned into increments.
    fn device_usage(
        self,
        config: Arc<EngineConfig>,
        stats: Arc<EngineStats>,
    ) -> StreamVec<'scope, EventTime, Usage>;
}

impl<'scope> DeviceStateExt<'scope> for StreamVec<'scope, EventTime, DeviceBatch> {
    fn device_usage(
        self,
        config: Arc<EngineConfig>,
        stats: Arc<EngineStats>,
    ) -> StreamVec<'scope, EventTime, Usage> {
        let pact = Exchange::new(route_device);
        let (index, peers) = (self.scope().index() as u64, self.scope().peers() as u64);
        let worker = self.scope().worker();
        self.unary_frontier(pact, "DeviceState", move |_cap, info| {
            let mut pending: BTreeMap<EventTime, (Capability<EventTime>, Vec<DeviceBatch>)> =
                BTreeMap::new();
            let mut devices: DeviceMap<DeviceMemory> = DeviceMap::default();
            // The devices this worker owns (the exchange's rule) start from
            // the restored snapshot, whatever the worker count that took it;
            // the batches a memory covers are skipped when the WAL replays
            // them.
            let board = config.devices.clone();
            board.wake_on_request(worker.sync_activator_for(info.address.to_vec()));
            let mine = |key: &DeviceKey| route(&(&*key.0, &*key.1)) % peers == index;
            devices.extend(board.take_restored_where(mine));
            stats.add_devices(devices.len() as i64);
            // The gauge starts from what the snapshot's windows miss: the
            // replay and the devices' next batches fill them.
            let missing = devices
                .values()
                .map(|m| m.sequences.missing_count())
                .sum::<u64>();
            stats.add_sequence_gaps(missing as i64);
            let replay_until = devices.values().map(|m| m.covered_to).max().unwrap_or(0);
            // Batches before this are all processed: a snapshot covers them.
            let mut covered_to = board.restored_at();
            let mut answered = 0;
            let mut usage = Vec::new();
            let mut own = OwnIds::default();
            move |(input, frontier), output| {
                let known = devices.len();
                let (mut late, mut late_samples, mut gaps) = (0, 0, 0i64);
                let (mut duplicates, mut too_old) = (0, 0);
                input.for_each(|cap, data| {
                    for batch in data.drain(..) {
                        let tick = config.tick_of(batch.first_at());
                        let memory = devices.get_or_default(&batch.customer, &batch.device);
                        if cap.least().is_some_and(|at| tick < *at) {
                            // Sent below its own time: late data whose
                            // windows ingest restates from its archive. A
                            // redelivery of a batch still waiting here (the
                            // WAL's replay handed it over live; the broker
                            // sent it again, older than ingest's sequence
                            // window) was told new already: a duplicate.
                            if memory.absorb(&batch, &mut gaps).is_ok() {
                                late += 1;
                                late_samples += batch.samples.len() as u64;
                            }
                            continue;
                        }
                        if tick < replay_until && tick < memory.covered_to {
                            continue;
                        }
                        // Told new or not as it arrives, in the order
                        // admission took it in: a unit's window then
                        // forgets the ranges admission's forgets (a unit
                        // whose sequences jump about), and drops none of
                        // what admission acknowledged. Told in event-time
                        // order, a buffer uploaded newest first split the
                        // window into a range per batch.
                        match memory.admit(&batch, &mut gaps) {
                            Admission::New => (pending.entry(tick))
                                .or_insert_with(|| (cap.delayed(&tick, 0), Vec::new()))
                                .1
                                .push(batch),
                            Admission::Duplicate => duplicates += 1,
                            Admission::TooOld => too_old += 1,
                        }
                    }
                });
                if late > 0 || gaps != 0 {
                    stats.record_late(late, late_samples, gaps);
                }
                if duplicates > 0 || too_old > 0 {
                    stats.record_device_state(0, duplicates, too_old, 0, MeterFaults::default());
                }
                stats.add_devices(devices.len() as i64 - known as i64);
                // A snapshot request is answered before anything more is
                // processed: every pending batch is at or after the point.
                let request = board.requested();
                if request != answered {
                    let mut waiting: DeviceMap<Vec<(u64, u64)>> = DeviceMap::default();
                    for batch in pending.values().flat_map(|(_, batches)| batches) {
                        (waiting.get_or_default(&batch.customer, &batch.device))
                            .push((batch.unit_epoch, batch.sequence));
                    }
                    // Every batch before the first waiting and before the
                    // frontier is in: a worker with no device (more workers
                    // than devices) no longer holds the point, and with it
                    // the WAL's cut, at its start.
                    let first_waiting = pending.first_key_value().map(|(tick, _)| *tick);
                    let point = (first_waiting.into_iter())
                        .chain(frontier.frontier().iter().copied())
                        .min()
                        .map_or(covered_to, |point| point.max(covered_to));
                    let memories = devices.iter().map(|(key, memory)| {
                        let covered_to = memory.covered_to.max(point);
                        let waiting = waiting.get(&key.0, &key.1).map_or(&[][..], Vec::as_slice);
                        (
                            key.clone(),
                            DeviceMemory {
                                covered_to,
                                ..memory.for_snapshot(covered_to, waiting)
                            },
                        )
                    });
                    board.hand_in(request, point, memories);
                    answered = request;
                }
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    covered_to = covered_to.max(*entry.key() + 1);
                    let (cap, mut batches) = entry.remove();
                    let mut faults = MeterFaults::default();
                    let mut samples = 0;
                    batches.sort_by(|a, b| processing_order(a).cmp(&processing_order(b)));
                    for mut batch in batches {
                        own.take_over(&mut batch);
                        let memory = devices.get_or_default(&batch.customer, &batch.device);
                        samples += batch.samples.len() as u64;
                        memory.apply_new(batch, &mut faults, &mut usage);
                    }
                    stats.record_device_state(samples, 0, 0, 0, faults);
                    output.session(&cap).give_iterator(usage.drain(..));
                    // A big tick's capacity is not kept for the small ones.
                    usage.shrink_to(USAGE_KEPT);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DAY_MS;

    #[test]
    fn sequence_window_detects_duplicates_and_gaps() {
        let mut w = SequenceWindow::default();
        let mut gaps = 0;
        assert_eq!(w.admit(1, &mut gaps), Admission::New);
        assert_eq!(w.admit(2, &mut gaps), Admission::New);
        assert_eq!(w.admit(2, &mut gaps), Admission::Duplicate);
        assert_eq!(w.admit(5, &mut gaps), Admission::New);
        assert_eq!(gaps, 2);
        assert_eq!(w.admit(4, &mut gaps), Admission::New);
        assert_eq!(gaps, 1);
        assert_eq!(w.admit(4, &mut gaps), Admission::Duplicate);
        assert_eq!(w.admit(1, &mut gaps), Admission::Duplicate);
        assert_eq!(w.admit(200, &mut gaps), Admission::New);
        assert_eq!(gaps, 1 + 194);
        // Far behind the newest: a missing one counts, a replay does not.
        assert_eq!(w.admit(100, &mut gaps), Admission::New);
        assert_eq!(w.admit(100, &mut gaps), Admission::Duplicate);
        assert_eq!(w.admit(3, &mut gaps), Admission::New);
        assert_eq!(w.admit(2, &mut gaps), Admission::Duplicate);
        assert_eq!(w.admit(199, &mut gaps), Admission::New);
        assert_eq!(gaps, 192);
        // Before the first sequence seen and beyond the bit set: unknown.
        assert_eq!(w.admit(0, &mut gaps), Admission::TooOld);
    }

    /// A unit that lost coverage for days sends its reconnect message, then
    /// its buffer of hundreds of batches, oldest or newest first: every one
    /// counts once, and nothing is left counted as a gap.
    #[test]
    fn a_buffer_of_hundreds_of_batches_uploaded_after_the_reconnect_counts() {
        for newest_first in [false, true] {
            let mut w = SequenceWindow::default();
            let mut gaps = 0;
            for sequence in 1..=100 {
                assert_eq!(w.admit(sequence, &mut gaps), Admission::New);
            }
            // 432 ten-minute batches (72 h) buffered, then the reconnect.
            assert_eq!(w.admit(533, &mut gaps), Admission::New);
            assert_eq!(gaps, 432);
            let mut buffer: Vec<u64> = (101..=532).collect();
            if newest_first {
                buffer.reverse();
            }
            for &sequence in &buffer {
                assert_eq!(w.admit(sequence, &mut gaps), Admission::New, "{sequence}");
            }
            assert_eq!(gaps, 0);
            assert!(w.missing.is_empty());
            for &sequence in &buffer {
                assert_eq!(w.admit(sequence, &mut gaps), Admission::Duplicate);
            }
        }
    }

    /// A buffer coming back in no order splits the missing range; past
    /// [`SequenceWindow::MISSING_RANGES`] the oldest ranges are forgotten:
    /// their sequences turn too old, never new twice.
    #[test]
    fn a_shuffled_buffer_splits_the_missing_range_within_its_bound() {
        let mut w = SequenceWindow::fresh(1, false);
        let mut gaps = 0;
        assert_eq!(w.admit(1_000, &mut gaps), Admission::New);
        // Every other sequence from the newest end: one range per hole.
        for sequence in (2..=900).rev().step_by(2) {
            w.admit(sequence, &mut gaps);
        }
        assert!(w.missing.len() <= SequenceWindow::MISSING_RANGES);
        assert_eq!(w.admit(899, &mut gaps), Admission::New);
        assert_eq!(w.admit(3, &mut gaps), Admission::TooOld);
        assert_eq!(w.admit(900, &mut gaps), Admission::Duplicate);
    }

    proptest::proptest! {
        /// A window that forgets sequences seen, as a snapshot does with
        /// the batches still waiting, holds exactly the rest: each forgotten
        /// one is new again, once, and everything else it held is still a
        /// duplicate (told against a plain set, with ranges enough never to
        /// forget one).
        #[test]
        fn unseeing_takes_out_exactly_the_sequences_unseen(
            told in proptest::collection::vec(0u64..400, 1..120),
            unseen in proptest::collection::vec(proptest::bool::weighted(0.3), 120),
            open_below: bool,
        ) {
            let mut w = SequenceWindow {
                open_below,
                ..SequenceWindow::default()
            };
            let mut gaps = 0;
            let mut held = std::collections::BTreeSet::new();
            let mut waiting = Vec::new();
            for (i, &sequence) in told.iter().enumerate() {
                if w.admit_keeping(sequence, &mut gaps, 4096) == Admission::New {
                    held.insert(sequence);
                    if unseen[i] {
                        waiting.push(sequence);
                    }
                }
            }
            // Below a closed window's floor nothing can be told: too old,
            // or seen (both dropped).
            let unknown_below = if w.open_below { 0 } else { w.floor };
            let mut kept_back = Vec::new();
            for &sequence in &waiting {
                if w.unsee(sequence) {
                    held.remove(&sequence);
                } else {
                    kept_back.push(sequence);
                }
            }
            for sequence in unknown_below..420 {
                proptest::prop_assert_eq!(w.holds(sequence), held.contains(&sequence), "{}", sequence);
            }
            // Only in a closed window (the snapshot keeps those in the
            // memory's list).
            for &sequence in &kept_back {
                proptest::prop_assert!(!w.open_below);
                proptest::prop_assert_ne!(w.admit_keeping(sequence, &mut gaps, 4096), Admission::New);
            }
            for &sequence in waiting.iter().filter(|s| !kept_back.contains(s)) {
                proptest::prop_assert_eq!(w.admit_keeping(sequence, &mut gaps, 4096), Admission::New);
                proptest::prop_assert_eq!(w.admit_keeping(sequence, &mut gaps, 4096), Admission::Duplicate);
            }
        }
    }

    /// A unit numbering its batches up with a gap at each (a buffer sent
    /// newest first) splits its window past the engine's ranges, which then
    /// forgets the oldest and raises its floor: a snapshot taken while the
    /// first of them wait cannot take those out of its windows, and keeps
    /// them in the memory instead. After the restore each waiting batch is
    /// new once, and none applied before is new again (before, the replay
    /// dropped 143 of 1,200 as too old and their hours were counted twice).
    #[test]
    fn a_snapshot_past_the_forgotten_ranges_keeps_the_waiting_batches_new() {
        let mut memory = DeviceMemory::default();
        let mut gaps = 0;
        let told = |memory: &mut DeviceMemory, gaps: &mut i64, sequence| {
            memory.admit(&ten_minute_batch(sequence), gaps)
        };
        let sequences: Vec<u64> = (0..1_300).map(|i| 26 + 2 * i).collect();
        for &sequence in &sequences {
            assert_eq!(told(&mut memory, &mut gaps, sequence), Admission::New);
        }
        assert!(!memory.sequences.current.as_ref().unwrap().1.open_below);
        // The first 200 told and the last 3 wait; the rest were applied.
        let waiting: Vec<(u64, u64)> = (sequences[..200].iter())
            .chain(&sequences[1_297..])
            .map(|&sequence| (0, sequence))
            .collect();
        let mut restored = memory.for_snapshot(0, &waiting);
        assert!(restored.unapplied.is_some());
        let mut again = restored.clone();
        for &(_, sequence) in &waiting {
            assert_eq!(
                told(&mut restored, &mut gaps, sequence),
                Admission::New,
                "{sequence}"
            );
            assert_ne!(
                told(&mut restored, &mut gaps, sequence),
                Admission::New,
                "{sequence}"
            );
        }
        assert_eq!(restored.unapplied, None);
        for &sequence in &sequences[200..1_297] {
            assert_ne!(
                told(&mut again, &mut gaps, sequence),
                Admission::New,
                "{sequence}"
            );
        }
        // A snapshot of the restored memory before the replay keeps them.
        assert_eq!(again.for_snapshot(0, &[]).unapplied, again.unapplied);
    }

    /// The snapshot's memory has not seen the batches still waiting, of
    /// whichever unit: their replay after a restore is new, what was
    /// applied before is not.
    #[test]
    fn a_snapshot_forgets_the_waiting_batches_and_only_them() {
        let mut memory = DeviceMemory::default();
        let mut gaps = 0;
        let mut told = |memory: &mut DeviceMemory, epoch, sequence| {
            let mut batch = ten_minute_batch(sequence);
            batch.unit_epoch = epoch;
            memory.admit(&batch, &mut gaps)
        };
        for sequence in 1..=200 {
            assert_eq!(told(&mut memory, 1, sequence), Admission::New);
        }
        assert_eq!(told(&mut memory, 2, 1), Admission::New);
        let waiting = [(1, 200), (1, 199), (1, 120), (1, 3), (2, 1)];
        let mut restored = memory.for_snapshot(0, &waiting);
        for &(epoch, sequence) in &waiting {
            assert_eq!(told(&mut restored, epoch, sequence), Admission::New);
        }
        for sequence in [1, 2, 4, 119, 121, 198] {
            assert_eq!(told(&mut restored, 1, sequence), Admission::Duplicate);
        }
        assert_eq!(memory.for_snapshot(0, &[]), memory);
    }

    /// Batch `sequence` of a unit sending one every ten minutes, working
    /// all the time.
    fn ten_minute_batch(sequence: u64) -> DeviceBatch {
        one_reading(sequence, sequence * 600_000, sequence as f64 / 6.0)
    }

    /// Batch `sequence` of device `d` with one reading of its hour meter.
    fn one_reading(sequence: u64, at: EventTime, operating_hours: f64) -> DeviceBatch {
        DeviceBatch {
            customer: "c".into(),
            site: "s".into(),
            device: "d".into(),
            unit_epoch: 0,
            sequence,
            samples: vec![crate::Sample {
                at,
                operating_hours,
                ..Default::default()
            }],
        }
    }

    /// A lane ahead of the others hands the engine the newest part of a
    /// unit's buffer below its time (absorbed), and a lane behind hands it
    /// the older part live: those batches are more than the bit set behind
    /// the absorbed newest and still count, once.
    #[test]
    fn live_batches_far_behind_an_absorbed_newer_one_count() {
        let batch = ten_minute_batch;
        let mut memory = DeviceMemory::default();
        let (mut gaps, mut faults, mut out) = (0, MeterFaults::default(), Vec::new());
        memory
            .apply(batch(1), &mut gaps, &mut faults, &mut out)
            .unwrap();
        memory.absorb(&batch(400), &mut gaps).unwrap();
        assert_eq!(gaps, 398);
        for sequence in 2..300 {
            let taken = memory.apply(batch(sequence), &mut gaps, &mut faults, &mut out);
            assert_eq!(taken, Ok(()), "sequence {sequence}");
        }
        assert_eq!(out.len(), 299);
        assert_eq!(gaps, 100);
        let again = memory.apply(batch(150), &mut gaps, &mut faults, &mut out);
        assert_eq!(again, Err(Admission::Duplicate));
    }

    /// The engine's memory of a unit first met at its reconnect (its newest
    /// batch absorbed as late data) takes the buffer behind it, however
    /// far, once each; none of it counts as a gap.
    #[test]
    fn a_unit_first_met_at_its_reconnect_takes_its_whole_buffer() {
        let batch = ten_minute_batch;
        let mut memory = DeviceMemory::default();
        let (mut gaps, mut faults, mut out) = (0, MeterFaults::default(), Vec::new());
        memory.absorb(&batch(500), &mut gaps).unwrap();
        for sequence in (100..500).rev().chain(1..100) {
            let taken = memory.apply(batch(sequence), &mut gaps, &mut faults, &mut out);
            assert_eq!(taken, Ok(()), "sequence {sequence}");
        }
        assert_eq!((out.len(), gaps), (499, 0));
        for sequence in [1, 99, 250, 499] {
            let again = memory.apply(batch(sequence), &mut gaps, &mut faults, &mut out);
            assert_eq!(again, Err(Admission::Duplicate), "sequence {sequence}");
        }
        // A window closed below (a format-1 memory's) refuses it as too old.
        let mut units = UnitSequences::default();
        assert_eq!(units.admit(0, 500, &mut gaps, false), Admission::New);
        assert_eq!(units.admit(0, 100, &mut gaps, false), Admission::TooOld);
    }

    /// What a window says, checked against a set of every sequence taken.
    mod against_a_set {
        use std::collections::BTreeSet;

        use proptest::prelude::*;

        use super::super::{Admission, SequenceWindow};

        /// The verdict the window's contract gives: exact while nothing is
        /// forgotten; before the first sequence and beyond the bit set,
        /// too old.
        fn expected(taken: &BTreeSet<u64>, first: Option<u64>, sequence: u64) -> Admission {
            let (Some(first), Some(&high)) = (first, taken.last()) else {
                return Admission::New;
            };
            if sequence + SequenceWindow::WINDOW <= high && sequence < first {
                Admission::TooOld
            } else if taken.contains(&sequence) {
                Admission::Duplicate
            } else {
                Admission::New
            }
        }

        proptest! {
            /// Up to 60 sequences taken (so at most 61 missing ranges, within
            /// the bound): every verdict as the set says, and the gaps are
            /// the sequences from the first to the newest not taken (never
            /// below 0).
            #[test]
            fn verdicts_and_gaps_are_exact_within_the_bound(
                sequences in prop::collection::vec(
                    prop_oneof![0u64..200, 0u64..5_000, 4_900u64..5_000],
                    1..60,
                ),
            ) {
                let mut w = SequenceWindow::default();
                let (mut gaps, mut taken, mut first) = (0i64, BTreeSet::new(), None);
                for sequence in sequences {
                    let want = expected(&taken, first, sequence);
                    prop_assert_eq!(w.admit(sequence, &mut gaps), want, "sequence {}", sequence);
                    if want == Admission::New {
                        taken.insert(sequence);
                        first.get_or_insert(sequence);
                    }
                    let (first, high) = (first.unwrap(), *taken.last().unwrap());
                    let span = (high - first + 1) as i64;
                    let counted = taken.range(first..).count() as i64;
                    prop_assert_eq!(gaps, span - counted);
                    // What a restore starts the gauge from.
                    prop_assert_eq!(w.missing_count() as i64, gaps);
                }
            }

            /// Open below (the engine's memory): every verdict as the set
            /// says, nothing too old, and the gaps as above.
            #[test]
            fn open_below_the_verdicts_are_those_of_the_set(
                sequences in prop::collection::vec(
                    prop_oneof![0u64..200, 0u64..5_000, 4_900u64..5_000],
                    1..60,
                ),
            ) {
                let mut w = SequenceWindow::fresh(sequences[0], true);
                let (mut gaps, mut taken) = (0i64, BTreeSet::from([sequences[0]]));
                let first = sequences[0];
                for &sequence in &sequences[1..] {
                    let want = if taken.contains(&sequence) {
                        Admission::Duplicate
                    } else {
                        Admission::New
                    };
                    prop_assert_eq!(w.admit(sequence, &mut gaps), want, "sequence {}", sequence);
                    taken.insert(sequence);
                    let high = *taken.last().unwrap();
                    let counted = taken.range(first..).count() as i64;
                    prop_assert_eq!(gaps, (high - first + 1) as i64 - counted);
                    prop_assert_eq!(w.missing_count() as i64, gaps);
                }
            }

            /// However many sequences and in whatever order: none is new
            /// twice, and a replay is only ever of one taken.
            #[test]
            fn no_sequence_is_new_twice(
                sequences in prop_oneof![
                    prop::collection::vec(0u64..3_000, 1..2_000),
                    // Close together: below the first within the bit set,
                    // then far behind the newest.
                    prop::collection::vec(0u64..200, 1..400),
                ],
                open_below in any::<bool>(),
            ) {
                let mut w = SequenceWindow { open_below, ..SequenceWindow::default() };
                let (mut gaps, mut taken) = (0i64, BTreeSet::new());
                for sequence in sequences {
                    match w.admit(sequence, &mut gaps) {
                        Admission::New => prop_assert!(taken.insert(sequence), "{} twice", sequence),
                        Admission::Duplicate => prop_assert!(taken.contains(&sequence)),
                        Admission::TooOld => {}
                    }
                    prop_assert!(w.missing.len() <= SequenceWindow::MISSING_RANGES);
                }
            }
        }
    }

    #[test]
    fn a_new_unit_epoch_starts_a_fresh_window_and_old_ones_are_kept() {
        use Admission::{Duplicate, New, TooOld};
        /// Admits each (epoch, sequence) in turn, checking how.
        fn admit(units: &mut UnitSequences, gaps: &mut i64, steps: &[(u64, u64, Admission)]) {
            for &(epoch, sequence, want) in steps {
                let got = units.admit(epoch, sequence, gaps, false);
                assert_eq!(got, want, "epoch {epoch}, sequence {sequence}");
            }
        }
        let mut units = UnitSequences::default();
        let mut gaps = 0;
        admit(&mut units, &mut gaps, &[(10, 500, New), (10, 501, New)]);
        // Replacement: sequence back at 1 under a higher epoch.
        admit(&mut units, &mut gaps, &[(20, 1, New), (20, 1, Duplicate)]);
        // The old unit's delayed batch still counts; its replay does not.
        admit(
            &mut units,
            &mut gaps,
            &[(10, 502, New), (10, 500, Duplicate)],
        );
        assert_eq!(units.current_epoch(), Some(20));
        assert_eq!(gaps, 0);
        // An earlier unit first heard of after the replacement is kept too.
        admit(&mut units, &mut gaps, &[(5, 9, New), (5, 9, Duplicate)]);
        // Beyond RECENT_EPOCHS epochs the oldest is forgotten: too old.
        let steps = [
            (30, 1, New),
            (5, 10, New),
            (40, 1, New),
            (5, 11, TooOld),
            (1, 1, TooOld),
            (10, 503, New),
        ];
        admit(&mut units, &mut gaps, &steps);
        assert_eq!(units.older.len(), UnitSequences::RECENT_EPOCHS - 1);
    }

    #[test]
    fn a_new_units_counters_carry_on_or_restart_from_zero() {
        let sample = |at, hours| crate::Sample {
            at,
            operating_hours: hours,
            ..Default::default()
        };
        let batch = |epoch, sequence, samples| DeviceBatch {
            customer: "c".into(),
            site: "s".into(),
            device: "d".into(),
            unit_epoch: epoch,
            sequence,
            samples,
        };
        for (new_unit_hours, expected) in
            [([300.5, 301.0], [0.5, 0.5]), ([0.25, 0.75], [0.25, 0.5])]
        {
            let mut memory = DeviceMemory::default();
            let (mut gaps, mut faults, mut out) = (0, MeterFaults::default(), Vec::new());
            let old = batch(1, 40, vec![sample(10, 299.0), sample(20, 300.0)]);
            memory.apply(old, &mut gaps, &mut faults, &mut out).unwrap();
            let new = batch(
                2,
                1,
                vec![sample(30, new_unit_hours[0]), sample(40, new_unit_hours[1])],
            );
            memory.apply(new, &mut gaps, &mut faults, &mut out).unwrap();
            let hours: Vec<f64> = out.iter().map(|u| u.increments.operating_hours).collect();
            assert_eq!(hours, [0.0, 1.0, expected[0], expected[1]]);
            assert_eq!(faults, MeterFaults::default());
        }
    }

    /// A replacement unit that reads the machine's own meter (just under
    /// the old unit's last value) and whose clock says 2000-01-01: its
    /// first reading would add the machine's lifetime if measured from that
    /// epoch; measured from the old unit's last reading it is a jump, and
    /// the readings after it count as usual.
    #[test]
    fn a_new_unit_with_an_old_clock_does_not_bring_the_machines_lifetime() {
        const T: EventTime = 1_780_000_000_000;
        const HALF_HOUR: EventTime = HOUR_MS / 2;
        let batch = |epoch, sequence, at, hours| DeviceBatch {
            customer: "c".into(),
            site: "s".into(),
            device: "d".into(),
            unit_epoch: epoch,
            sequence,
            samples: vec![crate::Sample {
                at,
                operating_hours: hours,
                ..Default::default()
            }],
        };
        let (mut gaps, mut faults, mut out) = (0, MeterFaults::default(), Vec::new());
        let mut memory = DeviceMemory::default();
        for b in [
            batch(0, 1, T, 5000.0),
            batch(0, 2, T + HALF_HOUR, 5000.5),
            batch(946_684_800, 1, T + 2 * HALF_HOUR, 5000.45),
            batch(946_684_800, 2, T + 3 * HALF_HOUR, 5000.95),
        ] {
            memory.apply(b, &mut gaps, &mut faults, &mut out).unwrap();
        }
        let hours: Vec<f64> = out.iter().map(|u| u.increments.operating_hours).collect();
        assert_eq!(hours, [0.0, 0.5, 0.0, 0.5]);
        assert_eq!(faults.jumps, 1);
    }

    /// A late reading absorbed while older batches still wait is their
    /// baseline only once they are applied; a snapshot places it only when
    /// it lies before the snapshot's point (every waiting batch is after).
    #[test]
    fn an_absorbed_reading_is_the_baseline_of_the_readings_after_it_only() {
        let batch = one_reading;
        let (mut gaps, mut faults, mut out) = (0, MeterFaults::default(), Vec::new());
        let mut memory = DeviceMemory::default();
        memory
            .apply(batch(1, 10, 100.0), &mut gaps, &mut faults, &mut out)
            .unwrap();
        memory.absorb(&batch(5, 50, 105.0), &mut gaps).unwrap();
        memory.absorb(&batch(4, 40, 104.0), &mut gaps).unwrap();
        assert_eq!(
            memory.for_snapshot(50, &[]).last.unwrap().at,
            10,
            "at the point: left out"
        );
        assert_eq!(
            memory.for_snapshot(51, &[]).last.unwrap().at,
            50,
            "before it: placed"
        );
        for (sequence, at, hours) in [(2, 20, 101.0), (3, 30, 102.0), (6, 60, 106.0)] {
            memory
                .apply(batch(sequence, at, hours), &mut gaps, &mut faults, &mut out)
                .unwrap();
        }
        let hours: Vec<f64> = out.iter().map(|u| u.increments.operating_hours).collect();
        assert_eq!(hours, [0.0, 1.0, 1.0, 1.0]);
        assert_eq!(faults, MeterFaults::default());
        assert!(memory.ahead.is_none());
    }

    #[test]
    fn first_reading_is_the_baseline_and_resets_count() {
        let mut memory = DeviceMemory::default();
        let sample = |at, hours| crate::Sample {
            at,
            operating_hours: hours,
            cycles: 2,
            ..Default::default()
        };
        let batch = DeviceBatch {
            customer: "c".into(),
            site: "s".into(),
            device: "d".into(),
            unit_epoch: 0,
            sequence: 1,
            samples: vec![
                sample(10, 100.0),
                sample(20, 100.5),
                sample(30, 90.0),
                sample(40, 91.0),
            ],
        };
        let (mut gaps, mut faults, mut out) = (0, MeterFaults::default(), Vec::new());
        memory
            .apply(batch.clone(), &mut gaps, &mut faults, &mut out)
            .unwrap();
        let hours: Vec<f64> = out.iter().map(|u| u.increments.operating_hours).collect();
        assert_eq!(hours, [0.0, 0.5, 0.0, 1.0]);
        assert_eq!(out.iter().map(|u| u.sample.cycles).sum::<u32>(), 8);
        assert_eq!(faults.resets, 1);
        assert_eq!(
            memory.apply(batch, &mut gaps, &mut faults, &mut out),
            Err(Admission::Duplicate)
        );
    }

    /// Applies one reading an hour of `(operating hours, idle hours, fuel)`
    /// from `start` (unit epoch `epoch`); the increments of each.
    fn hourly(
        memory: &mut DeviceMemory,
        epoch: u64,
        start: EventTime,
        readings: &[(f64, f64, f64)],
        faults: &mut MeterFaults,
    ) -> Vec<(f64, f64, f64)> {
        let mut out = Vec::new();
        for (i, &(operating_hours, idle_hours, fuel_litres)) in readings.iter().enumerate() {
            let batch = DeviceBatch {
                customer: "c".into(),
                site: "s".into(),
                device: "d".into(),
                unit_epoch: epoch,
                sequence: start / HOUR_MS + i as u64,
                samples: vec![crate::Sample {
                    at: start + i as u64 * HOUR_MS,
                    operating_hours,
                    idle_hours,
                    fuel_litres,
                    ..Default::default()
                }],
            };
            memory.apply(batch, &mut 0, faults, &mut out).unwrap();
        }
        let increments = out.iter().map(|u| u.increments);
        increments
            .map(|i| (i.operating_hours, i.idle_hours, i.fuel_litres))
            .collect()
    }

    /// A unit whose bus was not ready reports its meters as 0 once, or a
    /// corrupt value: neither adds the machine's life to one hour. The
    /// glitch and the reading after it count nothing (each counted as a
    /// reset or a jump); the readings before and after are exact.
    #[test]
    fn a_meter_read_as_zero_or_corrupt_once_adds_no_phantom_work() {
        let day = 20_000 * DAY_MS;
        let true_meters = |h: f64| (5_000.0 + h * 0.5, 800.0 + h * 0.25, 90_000.0 + h * 10.0);
        let worked = (0.5, 0.25, 10.0);
        for (glitch, faults_expected) in [
            (
                (0.0, 0.0, 0.0),
                MeterFaults {
                    resets: 3,
                    jumps: 3,
                },
            ),
            (
                (1e9, 1e9, 1e12),
                MeterFaults {
                    resets: 3,
                    jumps: 3,
                },
            ),
        ] {
            let mut readings: Vec<(f64, f64, f64)> =
                (0..6).map(|h| true_meters(h as f64)).collect();
            readings[3] = glitch;
            let mut faults = MeterFaults::default();
            let got = hourly(&mut DeviceMemory::default(), 0, day, &readings, &mut faults);
            let nothing = (0.0, 0.0, 0.0);
            assert_eq!(
                got,
                [nothing, worked, worked, nothing, nothing, worked],
                "glitch {glitch:?}"
            );
            assert_eq!(faults, faults_expected, "glitch {glitch:?}");
        }
    }

    /// What real meters do is no jump: a whole-hour meter read every ten
    /// minutes steps by 1, a machine silent for three days reports the work
    /// of those days at once, and a replacement unit that restarted its
    /// meters at its epoch counts what it has done since.
    #[test]
    fn coarse_meters_long_silences_and_new_units_are_no_jumps() {
        let day = 20_000 * DAY_MS;
        let mut faults = MeterFaults::default();
        let mut memory = DeviceMemory::default();
        let mut out = Vec::new();
        for (i, hours) in [100.0, 100.0, 101.0, 101.0, 102.0, 102.0]
            .into_iter()
            .enumerate()
        {
            let batch = one_reading(i as u64 + 1, day + i as u64 * 600_000, hours);
            memory.apply(batch, &mut 0, &mut faults, &mut out).unwrap();
        }
        let total: f64 = out.iter().map(|u| u.increments.operating_hours).sum();
        assert_eq!(total, 2.0);
        // Three days without a reading, 60 hours worked and 1,200 litres.
        let later = day + 3 * DAY_MS;
        let silent = hourly(
            &mut memory,
            0,
            later,
            &[(162.0, 10.0, 1_200.0)],
            &mut faults,
        );
        assert_eq!(silent, [(60.0, 10.0, 1_200.0)]);
        // A unit fitted two hours before its first reading, its meters
        // restarted at 0: up to two hours (and the slack) are its work.
        let epoch = (later + 2 * HOUR_MS) / 1000;
        let fitted = hourly(
            &mut memory,
            epoch,
            later + 4 * HOUR_MS,
            &[(2.5, 0.5, 30.0)],
            &mut faults,
        );
        assert_eq!(fitted, [(2.5, 0.5, 30.0)]);
        assert_eq!(faults, MeterFaults::default());
        // A new unit whose meters restarted an hour before its first
        // reading did not work the 500 hours it claims; its fuel and the
        // readings after it count.
        let mut memory = DeviceMemory::default();
        hourly(
            &mut memory,
            0,
            later,
            &[(10_000.0, 2_000.0, 50_000.0)],
            &mut faults,
        );
        let epoch = (later + 10 * HOUR_MS) / 1000;
        let readings = [(500.0, 0.0, 30.0), (500.5, 0.0, 40.0)];
        let claimed = hourly(
            &mut memory,
            epoch,
            later + 11 * HOUR_MS,
            &readings,
            &mut faults,
        );
        assert_eq!(claimed, [(0.0, 0.0, 30.0), (0.5, 0.0, 10.0)]);
        assert_eq!(
            faults,
            MeterFaults {
                resets: 0,
                jumps: 1
            }
        );
    }
}
