//! Per customer, once per closed day: outcomes, milestones, time to value,
//! lifecycle stage, health score and at-risk alerts (`crate::kpi::journey`).
//!
//! Window records are routed by customer and held until the frontier passes
//! their time, so each customer's days are closed in order with the day's
//! device rollups already seen. A day on which a customer's fleet sent
//! nothing has no window record; once the frontier is past such a day it is
//! closed as an empty day (that is when dark fleets and falling usage show).
//!
//! Between closes, the devices sighted as their batches arrive
//! (`super::sightings`) and the newest event time any worker took in let the
//! intraday rules judge the open day: a breach they see is sent at once as a
//! provisional alert, dated as the day's close would date it, and that close
//! confirms it (the same episode) or retracts it.

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Capability, Concat, Exchange as _};

use super::route;
use crate::adoption::{JourneyAnswer, JourneyRequest};
use crate::config::EngineConfig;
use crate::config::HOUR_MS;
use crate::kpi::journey::{Journey, JourneyState};
use crate::kpi::open_day::OpenDay;
use crate::kpi::risk::AlertRecord;
use crate::kpi::{CustomerKpi, Output};
use crate::model::{EventTime, Id, Sighting};
use crate::restatement::{Refolded, refold};

/// Extension trait adding the customer-success operator.
pub trait CustomerSuccessExt<'scope> {
    /// Turns closed customer and device windows into outcome, milestone,
    /// health and alert records; the devices `sightings` raise provisional
    /// alerts on the open day, judged as far as the windows' `times` (each
    /// worker's newest, from the merge) and the sightings have come.
    fn customer_success(
        self,
        times: StreamVec<'scope, EventTime, EventTime>,
        sightings: StreamVec<'scope, EventTime, Sighting>,
        config: Arc<EngineConfig>,
    ) -> StreamVec<'scope, EventTime, Output>;
}

/// What the operator hears besides the windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Signal {
    /// A worker took in windows up to this time (every worker hears it).
    Windows(EventTime),
    /// How far in event time a worker has taken in its devices' readings
    /// (every worker hears it): the open day is judged at the least of them.
    Progress { worker: usize, at: EventTime },
    /// A device of one of this worker's customers reported.
    Sighted(Sighting),
}

/// A journey and the capability it holds for closing its next day empty.
struct Tracked {
    journey: Journey,
    next_day: Option<(EventTime, EventTime, Capability<EventTime>)>,
    /// The latest window end taken in: every window of the customer ending
    /// by it has been folded (records are taken in event-time order).
    observed: EventTime,
    /// Devices' newest readings sighted after the last closed day.
    sighted: std::collections::HashMap<Id, EventTime>,
    /// Alerts sent provisionally for days not closed yet.
    provisional: Vec<AlertRecord>,
    /// No intraday verdict changes before this event time unless a day
    /// closes (sightings only delay one).
    due: EventTime,
    /// The open day's hourly windows so far (provisional health).
    open_day: Option<OpenDay>,
}

impl Tracked {
    fn new(
        journey: Journey,
        next_day: Option<(EventTime, EventTime, Capability<EventTime>)>,
        observed: EventTime,
    ) -> Self {
        Self {
            journey,
            next_day,
            observed,
            sighted: std::collections::HashMap::new(),
            provisional: Vec::new(),
            due: 0,
            open_day: None,
        }
    }

    /// After its journey was folded again: the open day as its restated
    /// hours fill it (`open`; the live one when the restatement held none
    /// of them), to be read again.
    fn reopen(&mut self, open: Option<OpenDay>) {
        let start = self.next_day.as_ref().map(|(start, _, _)| *start);
        if let Some(open) = open.filter(|o| Some(o.start()) == start) {
            self.open_day = Some(open);
        }
        if let Some(open) = &mut self.open_day {
            open.changed = true;
        }
    }
}

impl<'scope> CustomerSuccessExt<'scope> for StreamVec<'scope, EventTime, Output> {
    fn customer_success(
        self,
        times: StreamVec<'scope, EventTime, EventTime>,
        sightings: StreamVec<'scope, EventTime, Sighting>,
        config: Arc<EngineConfig>,
    ) -> StreamVec<'scope, EventTime, Output> {
        let pact = Exchange::new(|o: &Output| o.customer().map_or(0, |c| route(&**c)));
        let (index, peers) = (self.scope().index() as u64, self.scope().peers() as u64);
        let signals = sighting_signals(sightings, config.allowed_lateness_ms, config.tick_ms);
        // Each worker's newest window time, to every worker.
        let seen = times.broadcast().map(Signal::Windows).concat(signals);
        let name = "CustomerSuccess";
        let worker = self.scope().worker();
        self.binary_frontier(seen, pact, Pipeline, name, move |cap, info| {
            let adoptions = config.adoptions.clone();
            adoptions.wake_on_request(worker.sync_activator_for(info.address.to_vec()));
            let day = config.day_window().cloned();
            // The hourly windows the open day is read from, if configured.
            let hour = (config.windows.iter())
                .find(|w| w.length_ms == HOUR_MS)
                .map(|w| w.name.clone());
            let mut hours_taken: Vec<Id> = Vec::new();
            let mut pending: BTreeMap<EventTime, (Capability<EventTime>, Vec<Output>)> =
                BTreeMap::new();
            let mut tracked: HashMap<Id, Tracked> = HashMap::default();
            // Restored journeys of the customers this worker owns (the
            // exchange's rule), each waiting for its next day as before the
            // restart, whether or not its fleet sends anything.
            if let Some(day) = &day {
                let mine = |c: &Id| owner(c, peers) == index;
                for (customer, state) in config.journeys.take_restored_where(mine) {
                    let Some(spec) = config.customers.get(&*customer).cloned() else {
                        continue;
                    };
                    let next_day = state.last_day_end.map(|last| {
                        let (start, end) = config.window_bounds(day, &customer, last);
                        (start, end, cap.delayed(&end))
                    });
                    let observed = state.last_day_end.unwrap_or(0);
                    let journey = Journey::restore(spec, state);
                    tracked.insert(customer, Tracked::new(journey, next_day, observed));
                }
                // Sent before the restart and not settled: the close of
                // their day confirms or retracts them, as if sent now.
                for (customer, alerts) in config.journeys.take_unsettled_where(mine) {
                    if let Some(t) = tracked_for(&mut tracked, &config, &customer) {
                        t.provisional.extend(alerts);
                    }
                }
            }
            // The customers in the customers file this worker owns that no
            // restored journey covers: tracked once the input's frontier
            // first moves, whether or not their fleets ever send anything.
            let mut untracked: Vec<Id> = (config.customers.keys())
                .map(|c| Id::from(c.as_str()))
                .filter(|c| day.is_some() && owner(c, peers) == index && !tracked.contains_key(c))
                .collect();
            // Held at the input's frontier (which holds the output there
            // anyway), for a customer whose whole journey is adopted from a
            // backfill, or that has sent nothing yet: its next day needs a
            // capability of its own.
            let mut ambient = day.as_ref().map(|_| cap);
            let mut latest_seen: EventTime = 0;
            // How far each worker has taken in readings, and the earliest
            // time an intraday verdict of one of this worker's customers
            // changes.
            let mut progress: Vec<EventTime> = vec![0; peers as usize];
            let mut next_due: EventTime = 0;
            let mut out = Vec::new();
            move |(input, frontier), (seen, seen_frontier), output| {
                seen.for_each(|_, signals| {
                    for signal in signals.drain(..) {
                        match signal {
                            Signal::Windows(time) => latest_seen = latest_seen.max(time),
                            Signal::Progress { worker, at } => {
                                progress[worker] = progress[worker].max(at)
                            }
                            Signal::Sighted(s) if day.is_some() => {
                                if let Some(t) = tracked_for(&mut tracked, &config, &s.customer)
                                    && t.journey.last_day_end().is_none_or(|last| s.at >= last)
                                {
                                    let at = t.sighted.entry(s.device).or_insert(0);
                                    *at = (*at).max(s.at);
                                }
                            }
                            Signal::Sighted(_) => {}
                        }
                    }
                });
                let Some(day) = &day else {
                    input.for_each(|_, data| data.clear());
                    for (_, reply) in adoptions.take_where(|_| true) {
                        let (outputs, days) = (Vec::new(), Vec::new());
                        let observed = EventTime::MAX;
                        let answer = JourneyAnswer::Adopted {
                            outputs,
                            days,
                            observed,
                        };
                        let _ = reply.send(answer);
                    }
                    return;
                };
                input.for_each(|cap, data| {
                    let Some(held) = cap.retain_least(0) else {
                        return;
                    };
                    let time = *held.time();
                    pending
                        .entry(time)
                        .or_insert_with(|| (held, Vec::new()))
                        .1
                        .append(data);
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (cap, mut records) = entry.remove();
                    // Device rollups first: a day is judged with its devices
                    // seen; then windows other than the day (an hour ending
                    // with the day belongs to it, before and after a restart).
                    records.sort_by_key(|r| match r {
                        Output::Device(_) => 0,
                        Output::Customer(k) if k.window != day.name => 1,
                        _ => 2,
                    });
                    for record in records {
                        match record {
                            Output::Device(d) if d.window == day.name => {
                                if let Some(t) = tracked_for(&mut tracked, &config, &d.customer) {
                                    // The empty days before it first: a
                                    // device seen on a later day was not
                                    // seen on them (a fleet silent until
                                    // then, taken in at one step).
                                    close_empty_days_before(
                                        t,
                                        &config,
                                        day,
                                        d.window_start,
                                        &mut out,
                                        output,
                                    );
                                    t.observed = t.observed.max(d.window_end);
                                    t.journey.observe_device(&d);
                                }
                            }
                            Output::Device(d) if Some(&d.window) == hour.as_ref() => {
                                if let Some(open) = (tracked.get_mut(&d.customer))
                                    .and_then(|t| open_day(t, &config, &d.customer))
                                    .filter(|o| o.holds(d.window_start, d.window_end))
                                {
                                    open.add_device_hour(&d);
                                }
                            }
                            Output::Customer(k) => {
                                let Some(t) = tracked_for(&mut tracked, &config, &k.customer)
                                else {
                                    continue;
                                };
                                t.observed = t.observed.max(k.window_end);
                                if k.window == day.name {
                                    close_empty_days_before(
                                        t,
                                        &config,
                                        day,
                                        k.window_start,
                                        &mut out,
                                        output,
                                    );
                                    if !t.journey.close_day(&k, &mut out) {
                                        // Replayed and judged before the
                                        // restart: its hours taught the day
                                        // shape then, and the next day
                                        // stays the restored one.
                                        output.session(&cap).give_iterator(out.drain(..));
                                        continue;
                                    }
                                    if let Some(open) = &t.open_day
                                        && open.start() == k.window_start
                                    {
                                        let closed = k.totals.operating_hours;
                                        t.journey.learn_shape(open.hours(), closed);
                                    }
                                    settle_provisional(t, k.window_end, &mut out);
                                    next_due = 0;
                                    config.journeys.closed(&t.journey);
                                    output.session(&cap).give_iterator(out.drain(..));
                                    let (start, end) =
                                        config.window_bounds(day, &k.customer, k.window_end);
                                    t.next_day = Some((start, end, cap.delayed(&end)));
                                } else {
                                    if Some(&k.window) == hour.as_ref()
                                        && let Some(open) = open_day(t, &config, &k.customer)
                                        && open.holds(k.window_start, k.window_end)
                                    {
                                        if !open.changed {
                                            hours_taken.push(k.customer.clone());
                                        }
                                        open.add_hour(&k);
                                    }
                                    t.journey.observe_window(&k, &mut out);
                                    output.session(&cap).give_iterator(out.drain(..));
                                }
                            }
                            _ => {}
                        }
                    }
                    // The open days that took in hours at this time, judged
                    // before any later hour (a replay may close many at once).
                    for customer in hours_taken.drain(..) {
                        if let Some(t) = tracked.get_mut(&customer) {
                            judge_open_day(t, &customer, &day.name, output);
                        }
                    }
                }
                // Restated journeys, folded again where every window this
                // operator took in is known.
                match frontier.frontier().iter().min() {
                    Some(at) => {
                        if let Some(c) = &mut ambient
                            && c.time() < at
                        {
                            c.downgrade(at);
                        }
                    }
                    None => ambient = None,
                }
                if let Some(c) = &ambient
                    && *c.time() > 0
                    && !untracked.is_empty()
                {
                    // The frontier is the newest reading less the allowed
                    // lateness: listening began on the day that reading
                    // was heard, not the day before it.
                    let heard = c.time().saturating_add(config.allowed_lateness_ms);
                    let from = heard.max(config.journeys.restored_through().unwrap_or(0));
                    track_silent(&mut tracked, &config, day, c, from, untracked.drain(..));
                }
                let mine = |c: &Id| owner(c, peers) == index;
                for (request, reply) in adoptions.take_where(mine) {
                    let customer = request.customer.clone();
                    let answer = adopt(&mut tracked, &config, request, ambient.as_ref());
                    if let (JourneyAnswer::Adopted { .. }, Some(t)) =
                        (&answer, tracked.get_mut(&customer))
                    {
                        // The open day read again, against the journey
                        // folded again and its restated hours.
                        judge_open_day(t, &customer, &day.name, output);
                    }
                    let _ = reply.send(answer);
                    next_due = 0;
                }
                // Days the frontier has passed with no telemetry at all; at
                // the end, up to the newest record any worker of any process
                // saw, so the last day a quiet customer gets does not depend
                // on the worker or process count. An empty frontier passes
                // every day: wait for every worker's newest time first.
                let done = frontier.frontier().is_empty();
                if done && !seen_frontier.frontier().is_empty() {
                    return;
                }
                for t in tracked.values_mut() {
                    while let Some((start, end, _)) = &t.next_day {
                        let (start, end) = (*start, *end);
                        let passed = !frontier.less_equal(&end)
                            && end <= latest_seen.max(if done { 0 } else { EventTime::MAX });
                        if !passed {
                            break;
                        }
                        close_empty_day(t, &config, day, start, end, &mut out, output);
                        next_due = 0;
                    }
                    if done {
                        t.next_day = None;
                    }
                }
                // The open days, judged where every worker has taken in
                // readings: a worker behind (a backlog, a replay) has not
                // sighted its devices' newer ones yet.
                let now = progress.iter().copied().min().unwrap_or(0);
                if now >= next_due && !done {
                    next_due = EventTime::MAX;
                    for t in tracked.values_mut() {
                        if now >= t.due {
                            judge_intraday(t, &config, day, now, &mut out);
                            if let Some((_, _, cap)) = &t.next_day {
                                output.session(cap).give_iterator(out.drain(..));
                            }
                            out.clear();
                        }
                        next_due = next_due.min(t.due);
                    }
                }
            }
        })
    }
}

/// The open day's provisional health and the provisional alerts of the
/// rules judged from its hours ([`FROM_HOURS`]), if it took in hours since
/// the last time.
fn judge_open_day(t: &mut Tracked, customer: &Id, day: &Id, output: &mut Out<'_, '_>) {
    let (Some(open), Some((_, _, cap))) = (&mut t.open_day, &t.next_day) else {
        return;
    };
    if !std::mem::take(&mut open.changed) {
        return;
    }
    let health = (open.at_pace(customer, day, t.journey.shape()))
        .and_then(|kpi| t.journey.provisional_health(&kpi));
    let alerts = (open.so_far(customer, day))
        .map(|kpi| t.journey.provisional_alerts(&kpi, FROM_HOURS))
        .unwrap_or_default();
    let mut session = output.session(cap);
    if let Some(health) = health {
        session.give(Output::health(health));
    }
    for alert in alerts {
        if !t.provisional.iter().any(|p| p.rule == alert.rule) {
            t.provisional.push(alert.clone());
            session.give(Output::Alert(alert));
        }
    }
}

/// The rules judged from the open day's hourly windows so far (the
/// allowed lateness behind), before the day closes: faults and operators
/// need readings, which sightings do not carry. champion_lost fires on the
/// last day of the champion's absence once half a usual day's work is done
/// without them; their return later that day retracts it at the close.
const FROM_HOURS: &[crate::kpi::risk::Rule] = &[
    crate::kpi::risk::Rule::FaultSpike,
    crate::kpi::risk::Rule::ChampionLost,
];

/// Judges `t`'s open day at `now`: the provisional alerts not sent yet go
/// to `out`; `t.due` becomes the earliest time a verdict may change.
fn judge_intraday(
    t: &mut Tracked,
    config: &EngineConfig,
    day: &crate::WindowSpec,
    now: EventTime,
    out: &mut Vec<Output>,
) {
    let customer = &t.journey.spec().id;
    let day_end = |at| config.window_bounds(day, customer, at).1;
    let (alerts, due) = t.journey.judge_intraday(&t.sighted, now, day_end);
    t.due = due;
    for alert in alerts {
        if t.provisional.iter().any(|p| p.rule == alert.rule) {
            continue; // Sent already; the day's close settles it.
        }
        t.provisional.push(alert.clone());
        out.push(Output::Alert(alert));
    }
}

/// After the day ending at `end` closed: each provisional alert dated by it
/// is confirmed (the close opened the same episode, no longer provisional)
/// or retracted, and the sightings the closed days now hold are dropped.
fn settle_provisional(t: &mut Tracked, end: EventTime, out: &mut Vec<Output>) {
    let journey = &t.journey;
    t.provisional.retain(|alert| {
        if alert.opened_at > end {
            return true;
        }
        if journey.open_since(alert.rule) != Some(alert.opened_at) {
            out.push(Output::Alert(alert.retracted_by_close()));
        }
        false
    });
    t.sighted.retain(|_, at| *at >= end);
    t.due = 0;
    t.open_day = None;
}

/// The open day of `t` (the one after its last closed day), started
/// afresh when the days moved on; `None` before a day has closed.
fn open_day<'t>(
    t: &'t mut Tracked,
    config: &EngineConfig,
    customer: &str,
) -> Option<&'t mut OpenDay> {
    let (start, end, _) = t.next_day.as_ref()?;
    if t.open_day.as_ref().is_none_or(|o| o.start() != *start) {
        let zone = config.customers.get(customer).map(|c| &c.timezone);
        t.open_day = Some(OpenDay::new(*start, *end).in_zone(zone));
    }
    t.open_day.as_mut()
}

/// Each sighting, to the worker that owns its customer, and how far in
/// event time this worker has taken in readings, to every worker whenever
/// it moves: its newest sighting, kept between the input frontier plus the
/// allowed lateness and a tick past that. A reading older than the
/// frontier is refused as late, so none older is still on its way to any
/// worker; one within the lateness may be, live as in a replay. The
/// frontier is the least of all workers' inputs, so a worker with a backlog
/// holds it back, and a replay holds it below the earliest reading still
/// to come.
///
/// Live, the newest sighting is at most a tick past that bound (inputs
/// advance in whole ticks), and judging at it sends the alert with the
/// first reading past the crossing, not a tick later. A replay is not in
/// event-time order (a take-over appends a removed member's records after
/// the process's own), and judged at its newest reading, devices whose
/// readings were still to come looked dark for days (a provisional
/// devices_dark, retracted at the close): hence the ceiling.
///
/// Both go through one exchange: a channel between two workers keeps its
/// order, two channels do not. Sent apart, a worker's progress overtook its
/// sightings in a fast catch-up, and the open day was judged without a
/// device's newest readings (a false provisional devices_dark, retracted at
/// the close).
fn sighting_signals<'scope>(
    sightings: StreamVec<'scope, EventTime, Sighting>,
    lateness_ms: u64,
    tick_ms: u64,
) -> StreamVec<'scope, EventTime, Signal> {
    let (worker, peers) = (sightings.scope().index(), sightings.scope().peers());
    sightings
        .unary_frontier(Pipeline, "SightingSignals", move |cap, _| {
            let mut held = Some(cap);
            let (mut newest, mut sent): (EventTime, EventTime) = (0, 0);
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(at) = cap.retain_least(0) else {
                        data.clear();
                        return;
                    };
                    let mut session = output.session(&at);
                    for s in data.drain(..) {
                        newest = newest.max(s.at);
                        let to = owner(&s.customer, peers as u64);
                        session.give((to, Signal::Sighted(s)));
                    }
                });
                let Some(&at) = frontier.frontier().first() else {
                    held = None; // Finished: every day closes now.
                    return;
                };
                let Some(cap) = &mut held else { return };
                if *cap.time() < at {
                    cap.downgrade(&at);
                }
                let floor = at.saturating_add(lateness_ms);
                let progress = newest.min(floor.saturating_add(tick_ms)).max(floor);
                if progress > sent {
                    sent = progress;
                    let mut session = output.session(&*cap);
                    for peer in 0..peers as u64 {
                        let at = progress;
                        session.give((peer, Signal::Progress { worker, at }));
                    }
                }
            }
        })
        .exchange(|(to, _): &(u64, Signal)| *to)
        .map(|(_, signal)| signal)
}

/// The worker (of `peers`) that owns `customer`'s journey: the rule of the
/// exchange that routes its records here. A cluster member's view holds
/// the records of the customers its workers own.
pub fn owner(customer: &str, peers: u64) -> u64 {
    route(customer) % peers
}

fn tracked_for<'a>(
    tracked: &'a mut HashMap<Id, Tracked>,
    config: &EngineConfig,
    customer: &Id,
) -> Option<&'a mut Tracked> {
    if !tracked.contains_key(customer) {
        let spec = config.customers.get(&**customer)?.clone();
        // A restored journey was tracked from the operator's start.
        tracked.insert(customer.clone(), Tracked::new(Journey::new(spec), None, 0));
    }
    tracked.get_mut(customer)
}

/// Tracks each of `customers` (in the customers file, with no day closed
/// yet) from the day holding `listening` (the engine listens from then on:
/// the first reading heard, or where the restored journeys end after a
/// restart), or its contract's start if later: its days close
/// whether or not its fleet ever sends anything, so a fleet that never
/// comes online is judged ([`Journey::close_day`]: onboarding_stalled).
/// The first telemetry finds the journey tracked, its empty days closed.
fn track_silent(
    tracked: &mut HashMap<Id, Tracked>,
    config: &EngineConfig,
    day: &crate::WindowSpec,
    ambient: &Capability<EventTime>,
    listening: EventTime,
    customers: impl Iterator<Item = Id>,
) {
    for customer in customers {
        let Some(t) = tracked_for(tracked, config, &customer) else {
            continue;
        };
        // A journey a sighting created waits for its first day too.
        if t.next_day.is_some() || t.journey.last_day_end().is_some() {
            continue;
        }
        let from = listening.max(t.journey.spec().contract.start);
        let (start, end) = config.window_bounds(day, &customer, from);
        t.next_day = Some((start, end, ambient.delayed(&end.max(*ambient.time()))));
    }
}

/// Folds a restated journey again over the windows this operator has taken
/// in, and adopts it; `Behind` when it took in windows the restatement
/// does not cover yet, or cannot start from what the request holds.
///
/// A customer with no telemetry taken in live (its history came as a
/// backfill) is folded through every window the input's frontier has
/// passed, its empty days closed as far as the live journeys' are
/// (`ambient`: the capability at that frontier), and tracked from then on.
fn adopt(
    tracked: &mut HashMap<Id, Tracked>,
    config: &EngineConfig,
    request: JourneyRequest,
    ambient: Option<&Capability<EventTime>>,
) -> JourneyAnswer {
    let Some(t) = tracked_for(tracked, config, &request.customer) else {
        // Not in the customers file: no journey to restate.
        return JourneyAnswer::Adopted {
            outputs: Vec::new(),
            days: Vec::new(),
            observed: request.through,
        };
    };
    if t.journey.activation().is_none() {
        let history =
            request.base.is_some() || request.records.iter().any(|r| window_end(r).is_some());
        if !history && t.journey.last_day_end().is_some() {
            return redefine_silent(t, config, request);
        }
        // Never seen live, or tracked silent: its history is the request's.
        return adopt_backfilled(t, config, request, ambient);
    }
    if t.observed > request.through {
        return JourneyAnswer::Behind;
    }
    let first = (request.records.iter())
        .filter_map(window_start)
        .min()
        .unwrap_or(EventTime::MAX);
    if request.base.is_none() && t.journey.activation().is_some_and(|a| a < first) {
        // Days were closed before the restated ones, and their state is
        // not at hand: the journey cannot be folded again.
        return JourneyAnswer::Behind;
    }
    let observed = t.observed;
    let base = (request.base).or_else(|| from_silence(t, config, first, request.from));
    let records = (request.records.into_iter())
        .filter(|r| window_end(r).is_some_and(|end| end <= observed))
        .collect();
    let until = t.journey.last_day_end();
    let spec = request.spec.unwrap_or_else(|| t.journey.spec().clone());
    let refolded = refold(config, spec, base.clone(), records, until);
    if refolded.journey.last_day_end() != until {
        return JourneyAnswer::Behind;
    }
    adopted(t, config, refolded, base, observed, request.open_day)
}

/// [`adopt`] for a customer tracked silent, with nothing to fold: its
/// days from the request's `from` closed again under the request's
/// definition (a changed onboarding_days moves its silence's alert), those
/// before as they were, under the live one.
fn redefine_silent(
    t: &mut Tracked,
    config: &EngineConfig,
    request: JourneyRequest,
) -> JourneyAnswer {
    let observed = t.observed;
    let unchanged = JourneyAnswer::Adopted {
        outputs: Vec::new(),
        days: Vec::new(),
        observed,
    };
    let Some(spec) = request.spec else {
        return unchanged;
    };
    let from = request.from.or(Some(0));
    let Some(base) = from_silence(t, config, EventTime::MAX, from) else {
        // A state kept before silences were tracked: it goes on as it is,
        // under the request's definition.
        t.journey = Journey::restore(spec, t.journey.snapshot());
        return unchanged;
    };
    let until = t.journey.last_day_end();
    let refolded = refold(config, spec, Some(base.clone()), Vec::new(), until);
    adopted(t, config, refolded, Some(base), observed, false)
}

/// Where `t`'s journey is folded again from when no state before `first`
/// (the first window folded) is at hand: its silence
/// ([`Journey::silent_start`]), the days of it before a recompute's `from`
/// closed again as they were, under the live definition (a recompute
/// restates from its day).
fn from_silence(
    t: &Tracked,
    config: &EngineConfig,
    first: EventTime,
    from: Option<EventTime>,
) -> Option<JourneyState> {
    let start = t.journey.silent_start(first)?;
    let Some(from) = from else {
        return Some(start);
    };
    let spec = t.journey.spec().clone();
    let kept = refold(config, spec, Some(start), Vec::new(), Some(from.min(first)));
    Some(kept.journey.snapshot())
}

/// `t` goes on with `refolded`, its journey folded again from `base`
/// through `observed`: the open day read again (the refolded one if
/// `open_day`), the states of the days folded again noted in place of the
/// live ones; answered with its records.
///
/// A fold that closed no day (late data of the open day only) goes on
/// from `base` itself, which is noted in place of the live state of that
/// day: the live one may be a checkpoint's from before a pass a kill cut
/// off, and once the customer's late data is forgotten a later start
/// would restore it and read the open day against its stale days.
fn adopted(
    t: &mut Tracked,
    config: &EngineConfig,
    refolded: Refolded,
    base: Option<JourneyState>,
    observed: EventTime,
    open_day: bool,
) -> JourneyAnswer {
    t.journey = refolded.journey;
    t.due = 0;
    t.reopen(refolded.open_day.filter(|_| open_day));
    let base = base.filter(|b| b.last_day_end == t.journey.last_day_end());
    let noted = if refolded.days.is_empty() {
        base.as_slice()
    } else {
        &refolded.days
    };
    (config.journeys).refolded(&t.journey.spec().id, noted);
    JourneyAnswer::Adopted {
        outputs: refolded.outputs,
        days: refolded.days,
        observed,
    }
}

/// [`adopt`] for a customer the live journey has never seen.
fn adopt_backfilled(
    t: &mut Tracked,
    config: &EngineConfig,
    request: JourneyRequest,
    ambient: Option<&Capability<EventTime>>,
) -> JourneyAnswer {
    // The engine finished: the corrections thread folds it at its flush.
    let (Some(cap), Some(day)) = (ambient, config.day_window()) else {
        return JourneyAnswer::Behind;
    };
    // Every window ending before the frontier has been taken in.
    let observed = cap.time().saturating_sub(1);
    if observed > request.through {
        return JourneyAnswer::Behind;
    }
    // Tracked silent before its history begins: its silent days as they
    // were, the history resolving their alerts (see Journey::silent_start).
    let first = (request.records.iter()).filter_map(window_start).min();
    let base = (request.base).or_else(|| from_silence(t, config, first?, request.from));
    let records = (request.records.into_iter())
        .filter(|r| window_end(r).is_some_and(|end| end <= observed))
        .collect();
    let spec = request.spec.unwrap_or_else(|| t.journey.spec().clone());
    let open_day = request.open_day;
    // Its empty days closed here, not by this operator as the frontier has
    // passed them: those records go to the stores with the pass's, and
    // after a restart the service would take the operator's for ones
    // written before it (it suppresses records dated before its
    // checkpoint) and write none.
    let refolded = refold(config, spec, base.clone(), records, Some(observed));
    t.observed = observed;
    t.next_day = refolded.journey.last_day_end().map(|last| {
        let (start, end) = config.window_bounds(day, &refolded.journey.spec().id, last);
        (start, end, cap.delayed(&end.max(*cap.time())))
    });
    adopted(t, config, refolded, base, observed, open_day)
}

fn window_start(record: &Output) -> Option<EventTime> {
    match record {
        Output::Customer(k) => Some(k.window_start),
        Output::Device(d) => Some(d.window_start),
        _ => None,
    }
}

fn window_end(record: &Output) -> Option<EventTime> {
    match record {
        Output::Customer(k) => Some(k.window_end),
        Output::Device(d) => Some(d.window_end),
        _ => None,
    }
}

type Out<'a, 'b> = timely::dataflow::operators::generic::OutputBuilderSession<
    'a,
    EventTime,
    timely::container::CapacityContainerBuilder<Vec<Output>>,
>;

/// Closes, as empty, every day between the last closed one and `before`.
fn close_empty_days_before(
    t: &mut Tracked,
    config: &EngineConfig,
    day: &crate::WindowSpec,
    before: EventTime,
    out: &mut Vec<Output>,
    output: &mut Out<'_, '_>,
) {
    while let Some((start, end, _)) = &t.next_day {
        let (start, end) = (*start, *end);
        if end > before {
            break;
        }
        close_empty_day(t, config, day, start, end, out, output);
    }
}

fn close_empty_day(
    t: &mut Tracked,
    config: &EngineConfig,
    day: &crate::WindowSpec,
    start: EventTime,
    end: EventTime,
    out: &mut Vec<Output>,
    output: &mut Out<'_, '_>,
) {
    let empty = CustomerKpi {
        customer: t.journey.spec().id.clone(),
        window: day.name.clone(),
        window_start: start,
        window_end: end,
        devices_purchased: t.journey.spec().contract.devices_purchased,
        ..CustomerKpi::default()
    };
    t.journey.close_day(&empty, out);
    settle_provisional(t, end, out);
    t.observed = t.observed.max(end);
    config.journeys.closed(&t.journey);
    let Some((_, _, cap)) = t.next_day.take() else {
        return;
    };
    output.session(&cap).give_iterator(out.drain(..));
    let (next_start, next_end) = config.window_bounds(day, &empty.customer, end);
    // A journey folded again by a restatement may wait for days behind
    // the capability it was given (the frontier's, when its history ended
    // days before): those days go out at the capability's time.
    t.next_day = Some((
        next_start,
        next_end,
        cap.delayed(&next_end.max(*cap.time())),
    ));
}
