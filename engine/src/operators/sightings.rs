//! Devices sighted as their batches arrive: each device's newest reading per
//! input container, handed on at once instead of waiting for the watermark
//! (which trails the newest event time by the allowed lateness). The
//! intraday rules judge the open day from them (`super::customer_success`):
//! a fleet going dark is seen when event time passes the threshold, not
//! when the day closes.

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::progress::operate::FrontierInterest;

use crate::model::{DeviceBatch, EventTime, Id, Sighting};

/// The batches, handed on, and the sightings beside them.
pub type WithSightings<'scope> = (
    StreamVec<'scope, EventTime, DeviceBatch>,
    StreamVec<'scope, EventTime, Sighting>,
);

/// Extension trait adding the sightings to a batch stream.
pub trait SightingsExt<'scope> {
    /// The batches, handed on as they came (moved, not copied: every
    /// reading of the fleet passes here), and one [`Sighting`] per device
    /// and input container: its newest reading.
    fn with_sightings(self) -> WithSightings<'scope>;
}

impl<'scope> SightingsExt<'scope> for StreamVec<'scope, EventTime, DeviceBatch> {
    fn with_sightings(self) -> WithSightings<'scope> {
        let mut builder = OperatorBuilder::new("Sightings".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        builder.set_notify_for(0, FrontierInterest::Never);
        let (batches_out, batches) = builder.new_output();
        let (sightings_out, sightings) = builder.new_output();
        let mut batches_out = OutputBuilder::from(batches_out);
        let mut sightings_out = OutputBuilder::from(sightings_out);
        builder.build(move |_| {
            let mut newest: foldhash::HashMap<(Id, Id), EventTime> = Default::default();
            move |_frontiers| {
                let mut batches_handle = batches_out.activate();
                let mut sightings_handle = sightings_out.activate();
                input.for_each(|cap, data: &mut Vec<DeviceBatch>| {
                    for batch in data.iter() {
                        let at = newest
                            .entry((batch.customer.clone(), batch.device.clone()))
                            .or_insert(0);
                        *at = (*at).max(batch.last_at());
                    }
                    match cap.retain_least(1) {
                        Some(held) => {
                            let mut session = sightings_handle.session(&held);
                            for ((customer, device), at) in newest.drain() {
                                session.give(Sighting {
                                    customer,
                                    device,
                                    at,
                                });
                            }
                        }
                        None => newest.clear(),
                    }
                    batches_handle.session(&cap).give_container(data);
                });
            }
        });
        (batches, sightings)
    }
}
