//! Merges the workers' parts of each customer's window into its record;
//! devices' records pass through. Parts are exchanged by customer, so the
//! work per reading stays on the worker that holds it and only one part per
//! customer, worker and window crosses workers.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::route;
use crate::config::EngineConfig;
use crate::kpi::{CustomerPart, Output, WindowPart};
use crate::model::{EventTime, Id};

/// Parts of one end time, merged by (window index, customer).
type Merging = BTreeMap<
    EventTime,
    (
        Capability<EventTime>,
        foldhash::HashMap<(usize, Id), CustomerPart>,
    ),
>;

/// Extension trait adding the merge of window parts.
pub trait WindowMergeExt<'scope> {
    /// Customer records once every worker's part of a window is in (at the
    /// window's end), device records as they come (at their window's end).
    fn merge_windows(self, config: Arc<EngineConfig>) -> StreamVec<'scope, EventTime, Output>;
}

impl<'scope> WindowMergeExt<'scope> for StreamVec<'scope, EventTime, WindowPart> {
    fn merge_windows(self, config: Arc<EngineConfig>) -> StreamVec<'scope, EventTime, Output> {
        let pact = Exchange::new(|p: &WindowPart| match p {
            WindowPart::Device(d) => route(&*d.customer),
            WindowPart::Customer(c) => route(&*c.customer),
        });
        self.unary_frontier(pact, "WindowMerge", move |_, _| {
            let mut merging: Merging = BTreeMap::new();
            let specs: Vec<_> = config.windows.iter().map(|w| w.own_copy()).collect();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    // Parts are sent at their window's end minus one.
                    let time = *cap.least().expect("a batch has a time");
                    let (held, by_key) = merging
                        .entry(time)
                        .or_insert_with(|| (cap.delayed(&time, 0), foldhash::HashMap::default()));
                    let mut devices = Vec::new();
                    for part in data.drain(..) {
                        match part {
                            WindowPart::Device(d) => devices.push(Output::Device(d)),
                            WindowPart::Customer(c) => {
                                match by_key.entry((c.window, c.customer.clone())) {
                                    Entry::Occupied(mut merged) => {
                                        merged.get_mut().totals.merge(c.totals)
                                    }
                                    Entry::Vacant(slot) => {
                                        slot.insert(c);
                                    }
                                }
                            }
                        }
                    }
                    if !devices.is_empty() {
                        output
                            .session(&held.delayed(&(time + 1)))
                            .give_container(&mut devices);
                    }
                });
                while let Some(entry) = merging.first_entry() {
                    // Every worker's part for this end is in.
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let end = *entry.key() + 1;
                    let (cap, by_key) = entry.remove();
                    let cap = cap.delayed(&end);
                    let mut session = output.session(&cap);
                    for part in by_key.into_values() {
                        let spec = &specs[part.window];
                        session.give(Output::Customer(
                            part.totals.finish(spec, part.start, end, &config),
                        ));
                    }
                }
            }
        })
    }
}
