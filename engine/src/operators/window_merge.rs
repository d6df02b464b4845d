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
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::route;
use crate::config::EngineConfig;
use crate::kpi::{CustomerPart, Output, WindowPart};
use crate::model::{EventTime, Id};

/// Parts of one end time, merged by (window index, customer), with the
/// capabilities to hand on its customer records and their time.
type Merging = BTreeMap<
    EventTime,
    (
        Capability<EventTime>,
        Capability<EventTime>,
        foldhash::HashMap<(usize, Id), CustomerPart>,
    ),
>;

/// The window records, and the times they come at, beside them.
pub type WithTimes<'scope> = (
    StreamVec<'scope, EventTime, Output>,
    StreamVec<'scope, EventTime, EventTime>,
);

/// Extension trait adding the merge of window parts.
pub trait WindowMergeExt<'scope> {
    /// Customer records once every worker's part of a window is in (at the
    /// window's end), device records as they come (at their window's end);
    /// and beside them each time records come at, when it is this worker's
    /// newest (what the journeys need of the records' times, without a
    /// copy of every record for it).
    fn merge_windows(self, config: Arc<EngineConfig>) -> WithTimes<'scope>;
}

impl<'scope> WindowMergeExt<'scope> for StreamVec<'scope, EventTime, WindowPart> {
    fn merge_windows(self, config: Arc<EngineConfig>) -> WithTimes<'scope> {
        let pact = Exchange::new(|p: &WindowPart| match p {
            WindowPart::Device(d) => route(&*d.customer),
            WindowPart::Customer(c) => route(&*c.customer),
        });
        let mut builder = OperatorBuilder::new("WindowMerge".to_owned(), self.scope());
        let mut input = builder.new_input(self, pact);
        let (records_out, records) = builder.new_output();
        let (times_out, times) = builder.new_output();
        let mut records_out = OutputBuilder::from(records_out);
        let mut times_out = OutputBuilder::from(times_out);
        builder.build(move |_| {
            let mut merging: Merging = BTreeMap::new();
            let specs: Vec<_> = config.windows.iter().map(|w| w.own_copy()).collect();
            let mut newest: EventTime = 0;
            move |frontiers| {
                let mut records_handle = records_out.activate();
                let mut times_handle = times_out.activate();
                let mut came_at = |time: &Capability<EventTime>| {
                    if *time.time() > newest {
                        newest = *time.time();
                        times_handle.session(time).give(newest);
                    }
                };
                input.for_each(|cap, data| {
                    // Parts are sent at their window's end minus one.
                    let time = *cap.least().expect("a batch has a time");
                    let (held, _, by_key) = merging.entry(time).or_insert_with(|| {
                        (
                            cap.delayed(&time, 0),
                            cap.delayed(&time, 1),
                            foldhash::HashMap::default(),
                        )
                    });
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
                        records_handle
                            .session(&held.delayed(&(time + 1)))
                            .give_container(&mut devices);
                        came_at(&cap.delayed(&(time + 1), 1));
                    }
                });
                while let Some(entry) = merging.first_entry() {
                    // Every worker's part for this end is in.
                    if frontiers[0].less_equal(entry.key()) {
                        break;
                    }
                    let end = *entry.key() + 1;
                    let (cap, time, by_key) = entry.remove();
                    if by_key.is_empty() {
                        continue;
                    }
                    let cap = cap.delayed(&end);
                    let mut session = records_handle.session(&cap);
                    for part in by_key.into_values() {
                        let spec = &specs[part.window];
                        session.give(Output::Customer(
                            part.totals.finish(spec, part.start, end, &config),
                        ));
                    }
                    drop(session);
                    came_at(&time.delayed(&end));
                }
            }
        });
        (records, times)
    }
}
