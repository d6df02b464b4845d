//! Event-time tumbling windows: accumulate usage per key and window, emit one
//! record per key when the input frontier passes the window's end.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::config::EngineConfig;
use crate::kpi::WindowAccumulator;
use crate::model::{EventTime, Usage};

/// Extension trait adding tumbling windows to a usage stream.
pub trait TumblingWindowExt<'scope> {
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
        P: ParallelizationContract<EventTime, Vec<Usage>>;
}

/// Open windows of one length, by end time.
type OpenWindows<K, A> =
    BTreeMap<EventTime, (Capability<EventTime>, EventTime, foldhash::HashMap<K, A>)>;

impl<'scope> TumblingWindowExt<'scope> for StreamVec<'scope, EventTime, Usage> {
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
        self.unary_frontier(pact, name, move |_cap, _info| {
            let mut open: Vec<OpenWindows<K, A>> =
                config.windows.iter().map(|_| BTreeMap::new()).collect();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for usage in data.iter() {
                        let k = key(usage);
                        for (spec, windows) in config.windows.iter().zip(open.iter_mut()) {
                            let (start, end) =
                                config.window_bounds(spec, &usage.customer, usage.at);
                            let (_, _, by_key) = windows.entry(end).or_insert_with(|| {
                                (cap.delayed(&end, 0), start, foldhash::HashMap::default())
                            });
                            by_key.entry(k.clone()).or_default().add(usage);
                        }
                    }
                });
                for (spec, windows) in config.windows.iter().zip(open.iter_mut()) {
                    while let Some(entry) = windows.first_entry() {
                        // Closed once no future record can be earlier than its end.
                        if frontier.less_than(entry.key()) {
                            break;
                        }
                        let end = *entry.key();
                        let (cap, start, by_key) = entry.remove();
                        let mut session = output.session(&cap);
                        for (_, acc) in by_key {
                            session.give(wrap(acc.finish(spec, start, end, &config)));
                        }
                    }
                }
            }
        })
    }
}
