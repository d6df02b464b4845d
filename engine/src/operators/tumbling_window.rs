//! Event-time tumbling windows of every device and customer, from one pass
//! over the usage: each worker accumulates the readings it holds (a
//! device's readings are all on its worker) and, when the input frontier
//! passes a window's end, hands on its devices' records and its parts of
//! the customers' windows (merged by `super::window_merge`).

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::config::{EngineConfig, LocalDays};
use crate::kpi::{OpenWindow, WindowIds, WindowPart};
use crate::model::{EventTime, Usage};

/// Open windows of one length, by end time, each with the capability to
/// hand it on at `end - 1` (the merge may then close it as soon as the
/// frontier reaches the end, as one step would).
type OpenWindows = BTreeMap<EventTime, (Capability<EventTime>, OpenWindow)>;

/// Extension trait adding the per-worker tumbling windows to a usage stream.
pub trait TumblingWindowExt<'scope> {
    /// Accumulates every configured window length per device and customer;
    /// emits a closed window's parts at its end minus one.
    fn tumbling_windows(
        self,
        config: Arc<EngineConfig>,
    ) -> StreamVec<'scope, EventTime, WindowPart>;
}

impl<'scope> TumblingWindowExt<'scope> for StreamVec<'scope, EventTime, Usage> {
    fn tumbling_windows(
        self,
        config: Arc<EngineConfig>,
    ) -> StreamVec<'scope, EventTime, WindowPart> {
        self.unary_frontier(Pipeline, "Windows", move |_, _| {
            let mut ids = WindowIds::default();
            let specs: Vec<_> = config.windows.iter().map(|w| w.own_copy()).collect();
            let mut days = LocalDays::default();
            let mut open: Vec<OpenWindows> =
                config.windows.iter().map(|_| BTreeMap::new()).collect();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for usage in data.iter() {
                        let device = ids.device(usage);
                        let bounds =
                            days.window_bounds(&config, device, &usage.customer, usage.sample.at);
                        for ((start, end), windows) in bounds.zip(open.iter_mut()) {
                            let (_, window) = windows.entry(end).or_insert_with(|| {
                                (cap.delayed(&(end - 1), 0), OpenWindow::default())
                            });
                            window.add(&mut ids, device, start, usage);
                        }
                    }
                });
                for (index, (spec, windows)) in specs.iter().zip(open.iter_mut()).enumerate() {
                    while let Some(entry) = windows.first_entry() {
                        // Open while a reading before its end may still come.
                        if frontier.less_than(entry.key()) {
                            break;
                        }
                        let end = *entry.key();
                        let (cap, window) = entry.remove();
                        let mut session = output.session(&cap);
                        window.finish(&ids, index, spec, end, |part| session.give(part));
                    }
                }
            }
        })
    }
}
