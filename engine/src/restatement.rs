//! Restating a customer's closed windows: telemetry that arrives after its
//! windows closed, but within the correction horizon, is not refused;
//! ingest keeps every admitted batch on disk (the archive) and hands the
//! customer's batches here, and the windows it touches are computed again
//! from all of them, as if everything had arrived in event-time order.
//!
//! The same arithmetic as the live dataflow, on one thread: batches are
//! applied per device in the order `device_state` applies them (so a late
//! reading between two known ones splits their increment), then fed to the
//! same window accumulators. Pure: the caller reads the archive.

use std::collections::BTreeMap;

use crate::config::{EngineConfig, LocalDays};
use crate::customer::CustomerSpec;
use crate::device_map::DeviceMap;
use crate::kpi::journey::{Journey, JourneyState};
use crate::kpi::open_day::OpenDay;
use crate::kpi::{CustomerKpi, OpenWindow, Output, WindowIds, WindowPart};
use crate::model::{DeviceBatch, EventTime, Id};
use crate::operators::device_state::{Admission, DeviceMemory, MeterFaults, processing_order};

/// What to restate: one customer's windows that end after `from` and by
/// `through`.
#[derive(Debug, Clone)]
pub struct Restatement {
    /// The customer.
    pub customer: Id,
    /// Earliest reading that arrived late: windows ending at or before it
    /// are untouched.
    pub from: EventTime,
    /// Windows ending after this are still open in the live dataflow, which
    /// emits them itself.
    pub through: EventTime,
    /// Stamped on every restated record.
    pub revision: u32,
}

impl Restatement {
    /// Readings before this are not needed beyond each device's last batch
    /// before it (the baseline of its first increment): the start of the
    /// longest window that holds `from`.
    pub fn floor(&self, config: &EngineConfig) -> EventTime {
        config
            .windows
            .iter()
            .map(|spec| config.window_bounds(spec, &self.customer, self.from).0)
            .min()
            .unwrap_or(self.from)
    }

    /// The customer's restated device and customer records. `earlier`: each
    /// device's last batch that starts before [`Self::floor`] (or more of
    /// them: only the last counts); `batches`: every batch of the customer
    /// that starts at or after it, in any order, duplicates included.
    pub fn windows(
        &self,
        config: &EngineConfig,
        earlier: Vec<DeviceBatch>,
        batches: Vec<DeviceBatch>,
    ) -> Vec<Output> {
        let mut fold = self.fold(config);
        fold.add(earlier.into_iter().chain(batches).collect());
        fold.finish()
    }

    /// [`Self::windows`] taking the batches in parts, so a caller need not
    /// hold them all: each device's batches must come in parts of
    /// increasing time (its part holding its baseline first), which a day
    /// at a time, each device's baseline with its first day, is.
    pub fn fold<'c>(&self, config: &'c EngineConfig) -> Fold<'c> {
        Fold {
            restatement: self.clone(),
            config,
            floor: self.floor(config),
            memories: DeviceMap::default(),
            ids: WindowIds::default(),
            days: LocalDays::default(),
            open: config.windows.iter().map(|_| BTreeMap::new()).collect(),
        }
    }
}

/// A restatement under way: the devices' memories and the windows open so
/// far ([`Restatement::fold`]).
pub struct Fold<'c> {
    restatement: Restatement,
    config: &'c EngineConfig,
    floor: EventTime,
    memories: DeviceMap<DeviceMemory>,
    ids: WindowIds,
    days: LocalDays,
    open: Vec<BTreeMap<EventTime, OpenWindow>>,
}

impl Fold<'_> {
    /// Applies a part of the batches, each device's in processing order.
    pub fn add(&mut self, mut batches: Vec<DeviceBatch>) {
        let Self {
            restatement,
            config,
            floor,
            memories,
            ids,
            days,
            open,
        } = self;
        batches.retain(|b| b.customer == restatement.customer && !b.samples.is_empty());
        batches.sort_by(|a, b| processing_order(a).cmp(&processing_order(b)));
        let (mut gaps, mut faults, mut usage) = (0i64, MeterFaults::default(), Vec::new());
        for batch in batches {
            let memory = memories.get_or_default(&batch.customer, &batch.device);
            // A duplicate adds nothing, as live.
            if memory.admit_all(&batch, &mut gaps) == Admission::New {
                memory.apply_new(batch, &mut faults, &mut usage);
            }
            for reading in usage.drain(..) {
                if reading.sample.at < *floor {
                    continue; // Only the baseline of the next increment.
                }
                let device = ids.device(&reading);
                let bounds =
                    days.window_bounds(config, device, &reading.customer, reading.sample.at);
                for ((start, end), windows) in bounds.zip(open.iter_mut()) {
                    if end <= restatement.from || end > restatement.through {
                        continue;
                    }
                    windows
                        .entry(end)
                        .or_default()
                        .add(ids, device, start, &reading);
                }
            }
        }
    }

    /// The restated records of every window the batches touched.
    pub fn finish(self) -> Vec<Output> {
        let Self {
            restatement,
            config,
            ids,
            open,
            ..
        } = self;
        let mut out = Vec::new();
        for (index, (spec, windows)) in config.windows.iter().zip(open).enumerate() {
            for (end, window) in windows {
                window.finish(&ids, index, spec, end, |part| {
                    out.push(match part {
                        WindowPart::Device(mut d) => {
                            d.revision = restatement.revision;
                            Output::Device(d)
                        }
                        WindowPart::Customer(c) => {
                            let mut k = c.totals.finish(spec, c.start, end, config);
                            k.revision = restatement.revision;
                            Output::Customer(k)
                        }
                    })
                });
            }
        }
        out
    }
}

/// The restated records a journey is folded over: customer windows of
/// every length, the devices' daily rollups, and their hourly windows after
/// the last day (those the open day reads which devices reported).
pub fn journey_records(config: &EngineConfig, records: &[Output]) -> Vec<Output> {
    let Some(day) = config.day_window().map(|d| &d.name) else {
        return Vec::new();
    };
    let hour = config.hour_window().map(|h| &h.name);
    let last_day = (records.iter())
        .filter_map(|r| match r {
            Output::Customer(k) if &k.window == day => Some(k.window_end),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    (records.iter())
        .filter(|r| match r {
            Output::Customer(_) => true,
            Output::Device(d) if &d.window == day => true,
            Output::Device(d) => Some(&d.window) == hour && d.window_start >= last_day,
            _ => false,
        })
        .cloned()
        .collect()
}

/// A customer's journey folded again over its restated windows.
#[derive(Debug)]
pub struct Refolded {
    /// Outcome, milestone, health and alert records of the days folded
    /// again, in the order the live dataflow would have emitted them.
    pub outputs: Vec<Output>,
    /// The journey's state after each day it closed, oldest first (what a
    /// later restatement starts from).
    pub days: Vec<JourneyState>,
    /// Where it ended.
    pub journey: Journey,
    /// The day after the last one closed, as far as its restated hourly
    /// windows go: what the provisional score reads.
    pub open_day: Option<OpenDay>,
}

impl Refolded {
    /// The open day `next_day`, as the operator starts it: once a day has
    /// closed.
    fn open_day_at(
        &mut self,
        next_day: Option<(EventTime, EventTime)>,
        zone: &jiff::tz::TimeZone,
    ) -> Option<&mut OpenDay> {
        let (start, end) = next_day?;
        if self.open_day.as_ref().is_none_or(|o| o.start() != start) {
            self.open_day = Some(OpenDay::new(start, end).in_zone(Some(zone)));
        }
        self.open_day.as_mut()
    }
}

/// Folds `spec`'s journey again from `base` (its state at the end of the
/// day before the restated ones; `None`: nothing closed before) over
/// `records` (its restated device and customer windows), as the
/// customer-success operator folds them: in emission order, a day's device
/// rollups before its other windows before the day itself, and the days
/// without telemetry closed empty, up to `until` (the live journey's last
/// closed day). The hourly windows fill each open day as the operator's
/// do: the day's shape is learned from them at its close, and the last
/// one is handed back for the provisional score.
pub fn refold(
    config: &EngineConfig,
    spec: CustomerSpec,
    base: Option<JourneyState>,
    mut records: Vec<Output>,
    until: Option<EventTime>,
) -> Refolded {
    let customer = spec.id.clone();
    let zone = spec.timezone.clone();
    let mut fold = Refolded {
        outputs: Vec::new(),
        days: Vec::new(),
        journey: match base {
            Some(state) => Journey::restore(spec, state),
            None => Journey::new(spec),
        },
        open_day: None,
    };
    let Some(day) = config.day_window() else {
        return fold;
    };
    let hour = config.hour_window().map(|h| &h.name);
    let emitted = |r: &Output| match r {
        Output::Device(d) => (d.window_end, 0),
        Output::Customer(k) if k.window != day.name => (k.window_end, 1),
        Output::Customer(k) => (k.window_end, 2),
        _ => (EventTime::MAX, 3),
    };
    records.sort_by_key(emitted);
    let mut next_day =
        (fold.journey.last_day_end()).map(|last| config.window_bounds(day, &customer, last));
    let close_empty_until =
        |fold: &mut Refolded, next_day: &mut Option<(EventTime, EventTime)>, bound: EventTime| {
            while let Some((start, end)) = *next_day {
                if end > bound {
                    break;
                }
                let empty = CustomerKpi {
                    customer: customer.clone(),
                    window: day.name.clone(),
                    window_start: start,
                    window_end: end,
                    devices_purchased: fold.journey.spec().contract.devices_purchased,
                    ..CustomerKpi::default()
                };
                fold.journey.close_day(&empty, &mut fold.outputs);
                fold.open_day = None;
                fold.days.push(fold.journey.snapshot());
                *next_day = Some(config.window_bounds(day, &customer, end));
            }
        };
    for record in records {
        match record {
            Output::Device(d) if d.window == day.name => {
                // The empty days before it first, as the operator closes
                // them: a device seen on a later day was not seen on them.
                close_empty_until(&mut fold, &mut next_day, d.window_start);
                fold.journey.observe_device(&d);
            }
            Output::Device(d) if Some(&d.window) == hour => {
                if let Some(open) = fold.open_day_at(next_day, &zone)
                    && open.holds(d.window_start, d.window_end)
                {
                    open.add_device_hour(&d);
                }
            }
            Output::Customer(k) if k.window == day.name => {
                close_empty_until(&mut fold, &mut next_day, k.window_start);
                fold.journey.close_day(&k, &mut fold.outputs);
                if let Some(open) = fold.open_day.take()
                    && open.start() == k.window_start
                {
                    (fold.journey).learn_shape(open.hours(), k.totals.operating_hours);
                }
                fold.days.push(fold.journey.snapshot());
                next_day = Some(config.window_bounds(day, &customer, k.window_end));
            }
            Output::Customer(k) => {
                if Some(&k.window) == hour
                    && let Some(open) = fold.open_day_at(next_day, &zone)
                    && open.holds(k.window_start, k.window_end)
                {
                    open.add_hour(&k);
                }
                fold.journey.observe_window(&k, &mut fold.outputs);
            }
            _ => {}
        }
    }
    if let Some(until) = until {
        close_empty_until(&mut fold, &mut next_day, until);
    }
    fold
}
