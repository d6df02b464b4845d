//! Event-time tumbling windows: accumulate usage per key and window, emit one
//! record per key when the input frontier passes the window's end.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::Arc;

use timely::ExchangeData;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::config::EngineConfig;
use crate::kpi::WindowAccumulator;
use crate::model::{EventTime, Usage};
use crate::operators::route;

/// Extension trait adding tumbling windows to a usage stream.
pub trait TumblingWindowExt<'scope>: Into<StreamVec<'scope, EventTime, Usage>> {
    /// For every configured window length, accumulates usage per `key` in an
    /// `A` and emits `A::Record` (mapped by `wrap`) once the window is closed.
    /// Records are emitted at the window's end time. `key` must keep a
    /// customer's usage together (windows of a day follow its time zone).
    fn tumbling_windows<K, A, P, R>(
        self,
        pact: P,
        name: &str,
        config: Arc<EngineConfig>,
        key: fn(&Usage) -> K,
        wrap: fn(A::Record) -> R,
    ) -> StreamVec<'scope, EventTime, R>
    where
        K: Hash + Eq + Clone + 'static,
        A: WindowAccumulator,
        R: Clone + 'static,
        P: ParallelizationContract<EventTime, Vec<Usage>>,
    {
        self.into().unary_frontier(pact, name, move |_cap, _info| {
            let mut open: Vec<OpenWindows<K, A>> =
                config.windows.iter().map(|_| BTreeMap::new()).collect();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    accumulate(&mut open, &config, key, data, |end| cap.delayed(&end, 0));
                });
                for (spec, windows) in config.windows.iter().zip(open.iter_mut()) {
                    while let Some((end, (cap, by_key))) = closed(windows, frontier) {
                        let mut session = output.session(&cap);
                        for (_, (start, acc)) in by_key {
                            session.give(wrap(acc.finish(spec, start, end, &config)));
                        }
                    }
                }
            }
        })
    }
}

impl<'scope> TumblingWindowExt<'scope> for StreamVec<'scope, EventTime, Usage> {}

/// The open windows ending at one time: the capability to emit them, and
/// per key its window's start and accumulator. The start is the key's own:
/// two customers' days may end at the same instant and start at different
/// ones (a UTC day and London's 25-hour day on 25 October).
type Window<K, A> = (Capability<EventTime>, foldhash::HashMap<K, (EventTime, A)>);

/// Open windows of one length, by end time.
type OpenWindows<K, A> = BTreeMap<EventTime, Window<K, A>>;

/// Adds readings to the open windows of every configured length; a window
/// opened here holds the capability `hold(end)`.
fn accumulate<K, A>(
    open: &mut [OpenWindows<K, A>],
    config: &EngineConfig,
    key: fn(&Usage) -> K,
    data: &[Usage],
    hold: impl Fn(EventTime) -> Capability<EventTime>,
) where
    K: Hash + Eq + Clone,
    A: WindowAccumulator,
{
    for usage in data {
        let k = key(usage);
        for (spec, windows) in config.windows.iter().zip(open.iter_mut()) {
            let (start, end) = config.window_bounds(spec, &usage.customer, usage.at);
            let (_, by_key) = windows
                .entry(end)
                .or_insert_with(|| (hold(end), foldhash::HashMap::default()));
            by_key
                .entry(k.clone())
                .or_insert_with(|| (start, A::default()))
                .1
                .add(usage);
        }
    }
}

/// The oldest window no future reading can fall into (the frontier reached
/// its end), taken out with its end; `None` while it is still open.
fn closed<K, A>(
    windows: &mut OpenWindows<K, A>,
    frontier: &timely::progress::frontier::MutableAntichain<EventTime>,
) -> Option<(EventTime, Window<K, A>)> {
    let entry = windows.first_entry()?;
    if frontier.less_than(entry.key()) {
        return None;
    }
    let end = *entry.key();
    Some((end, entry.remove()))
}

/// A worker's partial window of one key: (key, window index, window start,
/// accumulator), sent at the window's end minus one.
type Partial<K, A> = (K, usize, EventTime, A);

/// Merged partial windows of one end time, by (window index, key).
type Merging<K, A> = BTreeMap<
    EventTime,
    (
        Capability<EventTime>,
        foldhash::HashMap<(usize, K), (EventTime, A)>,
    ),
>;

/// Tumbling windows computed in two steps: every worker accumulates the
/// readings it already holds (no exchange per reading), and only the
/// partial windows are exchanged by key and merged. The work per reading is
/// spread over every worker whatever the number of keys: a handful of
/// customers no longer puts most readings on one worker.
pub trait CombinedWindowExt<'scope>: Into<StreamVec<'scope, EventTime, Usage>> {
    /// [`TumblingWindowExt::tumbling_windows`], exchanging partial windows
    /// by `key` instead of readings.
    fn combined_windows<K, A, R>(
        self,
        name: &str,
        config: Arc<EngineConfig>,
        key: fn(&Usage) -> K,
        wrap: fn(A::Record) -> R,
    ) -> StreamVec<'scope, EventTime, R>
    where
        K: ExchangeData + Hash + Eq + Clone,
        A: WindowAccumulator + ExchangeData,
        R: Clone + 'static,
    {
        let partial_config = config.clone();
        let partials =
            self.into()
                .unary_frontier(Pipeline, &format!("{name}Partial"), move |_, _| {
                    let config = partial_config;
                    let mut open: Vec<OpenWindows<K, A>> =
                        config.windows.iter().map(|_| BTreeMap::new()).collect();
                    move |(input, frontier), output| {
                        input.for_each(|cap, data| {
                            // Sent at end - 1: the merge may close it as soon as the
                            // frontier reaches the end, as one step does.
                            accumulate(&mut open, &config, key, data, |end| {
                                cap.delayed(&(end - 1), 0)
                            });
                        });
                        for (index, windows) in open.iter_mut().enumerate() {
                            while let Some((_, (cap, by_key))) = closed(windows, frontier) {
                                let mut session = output.session(&cap);
                                for (k, (start, acc)) in by_key {
                                    session.give((k, index, start, acc));
                                }
                            }
                        }
                    }
                });
        let pact = Exchange::new(|p: &Partial<K, A>| route(&p.0));
        partials.unary_frontier(pact, name, move |_, _| {
            let mut merging: Merging<K, A> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let time = *cap.least().expect("a batch has a time");
                    let (_, by_key) = merging
                        .entry(time)
                        .or_insert_with(|| (cap.delayed(&time, 0), foldhash::HashMap::default()));
                    for (k, index, start, acc) in data.drain(..) {
                        match by_key.entry((index, k)) {
                            Entry::Occupied(mut held) => held.get_mut().1.merge(acc),
                            Entry::Vacant(slot) => {
                                slot.insert((start, acc));
                            }
                        }
                    }
                });
                while let Some(entry) = merging.first_entry() {
                    // Every worker's partial for this end is in.
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let end = *entry.key() + 1;
                    let (cap, by_key) = entry.remove();
                    let cap = cap.delayed(&end);
                    let mut session = output.session(&cap);
                    for ((index, _), (start, acc)) in by_key {
                        let spec = &config.windows[index];
                        session.give(wrap(acc.finish(spec, start, end, &config)));
                    }
                }
            }
        })
    }
}

impl<'scope> CombinedWindowExt<'scope> for StreamVec<'scope, EventTime, Usage> {}
