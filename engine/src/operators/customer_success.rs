//! Per customer, once per closed day: outcomes, milestones, time to value,
//! lifecycle stage, health score and at-risk alerts (`crate::kpi::journey`).
//!
//! Window records are routed by customer and held until the frontier passes
//! their time, so each customer's days are closed in order with the day's
//! device rollups already seen. A day on which a customer's fleet sent
//! nothing has no window record; once the frontier is past such a day it is
//! closed as an empty day (that is when dark fleets and falling usage show).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;

use super::route;
use crate::adoption::{JourneyAnswer, JourneyRequest};
use crate::config::EngineConfig;
use crate::kpi::journey::Journey;
use crate::kpi::{CustomerKpi, Output};
use crate::model::{EventTime, Id};
use crate::restatement::refold;

/// Extension trait adding the customer-success operator.
pub trait CustomerSuccessExt<'scope> {
    /// Turns closed customer and device windows into outcome, milestone,
    /// health and alert records.
    fn customer_success(self, config: Arc<EngineConfig>) -> StreamVec<'scope, EventTime, Output>;
}

/// A journey and the capability it holds for closing its next day empty.
struct Tracked {
    journey: Journey,
    next_day: Option<(EventTime, EventTime, Capability<EventTime>)>,
    /// The latest window end taken in: every window of the customer ending
    /// by it has been folded (records are taken in event-time order).
    observed: EventTime,
}

impl<'scope> CustomerSuccessExt<'scope> for StreamVec<'scope, EventTime, Output> {
    fn customer_success(self, config: Arc<EngineConfig>) -> StreamVec<'scope, EventTime, Output> {
        let pact = Exchange::new(|o: &Output| o.customer().map_or(0, |c| route(&**c)));
        let (index, peers) = (self.scope().index() as u64, self.scope().peers() as u64);
        let seen = newest_seen(self.clone());
        let name = "CustomerSuccess";
        let worker = self.scope().worker();
        self.binary_frontier(seen, pact, Pipeline, name, move |cap, info| {
            let adoptions = config.adoptions.clone();
            adoptions.wake_on_request(worker.sync_activator_for(info.address.to_vec()));
            let day = config.day_window().cloned();
            let mut pending: BTreeMap<EventTime, (Capability<EventTime>, Vec<Output>)> =
                BTreeMap::new();
            let mut tracked: HashMap<Id, Tracked> = HashMap::new();
            // Restored journeys of the customers this worker owns (the
            // exchange's rule), each waiting for its next day as before the
            // restart, whether or not its fleet sends anything.
            if let Some(day) = &day {
                let mine = |c: &Id| route(&**c) % peers == index;
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
                    tracked.insert(
                        customer,
                        Tracked {
                            journey,
                            next_day,
                            observed,
                        },
                    );
                }
            }
            // Held at the input's frontier (which holds the output there
            // anyway), for a customer whose whole journey is adopted from a
            // backfill: its next day needs a capability of its own.
            let mut ambient = day.as_ref().map(|_| cap);
            let mut latest_seen: EventTime = 0;
            let mut out = Vec::new();
            move |(input, frontier), (seen, seen_frontier), output| {
                seen.for_each(|_, times| {
                    latest_seen = times.drain(..).fold(latest_seen, EventTime::max);
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
                                    t.observed = t.observed.max(d.window_end);
                                    t.journey.observe_device(&d);
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
                                    t.journey.close_day(&k, &mut out);
                                    config.journeys.closed(&t.journey);
                                    output.session(&cap).give_iterator(out.drain(..));
                                    let (start, end) =
                                        config.window_bounds(day, &k.customer, k.window_end);
                                    t.next_day = Some((start, end, cap.delayed(&end)));
                                } else {
                                    t.journey.observe_window(&k, &mut out);
                                    output.session(&cap).give_iterator(out.drain(..));
                                }
                            }
                            _ => {}
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
                let mine = |c: &Id| route(&**c) % peers == index;
                for (request, reply) in adoptions.take_where(mine) {
                    let ambient = ambient.as_ref().map(|c| (c, latest_seen));
                    let answer = adopt(&mut tracked, &config, request, ambient);
                    let _ = reply.send(answer);
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
                    }
                    if done {
                        t.next_day = None;
                    }
                }
            }
        })
    }
}

/// The newest record time each worker takes in, broadcast to every
/// worker: one record per new newest time.
fn newest_seen<'scope>(
    windows: StreamVec<'scope, EventTime, Output>,
) -> StreamVec<'scope, EventTime, EventTime> {
    let mut newest: EventTime = 0;
    windows
        .unary(Pipeline, "NewestSeen", |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    data.clear();
                    let Some(held) = cap.retain_least(0) else {
                        return;
                    };
                    if *held.time() > newest {
                        newest = *held.time();
                        output.session(&held).give(newest);
                    }
                });
            }
        })
        .broadcast()
}

fn tracked_for<'a>(
    tracked: &'a mut HashMap<Id, Tracked>,
    config: &EngineConfig,
    customer: &Id,
) -> Option<&'a mut Tracked> {
    if !tracked.contains_key(customer) {
        let spec = config.customers.get(&**customer)?.clone();
        // A restored journey was tracked from the operator's start.
        tracked.insert(
            customer.clone(),
            Tracked {
                journey: Journey::new(spec),
                next_day: None,
                observed: 0,
            },
        );
    }
    tracked.get_mut(customer)
}

/// Folds a restated journey again over the windows this operator has taken
/// in, and adopts it; `Behind` when it took in windows the restatement
/// does not cover yet, or cannot start from what the request holds.
///
/// A customer with no telemetry taken in live (its history came as a
/// backfill) is folded through every window the input's frontier has
/// passed, its empty days closed as far as the live journeys' are
/// (`ambient`: the capability at that frontier, and the newest record time
/// seen), and tracked from then on.
fn adopt(
    tracked: &mut HashMap<Id, Tracked>,
    config: &EngineConfig,
    request: JourneyRequest,
    ambient: Option<(&Capability<EventTime>, EventTime)>,
) -> JourneyAnswer {
    let Some(t) = tracked_for(tracked, config, &request.customer) else {
        // Not in the customers file: no journey to restate.
        return JourneyAnswer::Adopted {
            outputs: Vec::new(),
            days: Vec::new(),
            observed: request.through,
        };
    };
    if t.journey.activation().is_none() && t.next_day.is_none() {
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
    let records = (request.records.into_iter())
        .filter(|r| window_end(r).is_some_and(|end| end <= observed))
        .collect();
    let until = t.journey.last_day_end();
    let spec = request.spec.unwrap_or_else(|| t.journey.spec().clone());
    let refolded = refold(config, spec, request.base, records, until);
    if refolded.journey.last_day_end() != until {
        return JourneyAnswer::Behind;
    }
    t.journey = refolded.journey;
    config.journeys.closed(&t.journey);
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
    ambient: Option<(&Capability<EventTime>, EventTime)>,
) -> JourneyAnswer {
    // The engine finished: the corrections thread folds it at its flush.
    let (Some((cap, latest_seen)), Some(day)) = (ambient, config.day_window()) else {
        return JourneyAnswer::Behind;
    };
    // Every window ending before the frontier has been taken in.
    let observed = cap.time().saturating_sub(1);
    if observed > request.through {
        return JourneyAnswer::Behind;
    }
    let records = (request.records.into_iter())
        .filter(|r| window_end(r).is_some_and(|end| end <= observed))
        .collect();
    let until = observed.min(latest_seen);
    let spec = request.spec.unwrap_or_else(|| t.journey.spec().clone());
    let refolded = refold(config, spec, request.base, records, Some(until));
    t.journey = refolded.journey;
    t.observed = observed;
    t.next_day = t.journey.last_day_end().map(|last| {
        let (start, end) = config.window_bounds(day, &t.journey.spec().id, last);
        (start, end, cap.delayed(&end.max(*cap.time())))
    });
    config.journeys.closed(&t.journey);
    JourneyAnswer::Adopted {
        outputs: refolded.outputs,
        days: refolded.days,
        observed,
    }
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
    t.observed = t.observed.max(end);
    config.journeys.closed(&t.journey);
    let Some((_, _, cap)) = t.next_day.take() else {
        return;
    };
    output.session(&cap).give_iterator(out.drain(..));
    let (next_start, next_end) = config.window_bounds(day, &empty.customer, end);
    t.next_day = Some((next_start, next_end, cap.delayed(&next_end)));
}
