//! Devices sighted as their batches arrive: each device's newest reading per
//! input container, handed on at once instead of waiting for the watermark
//! (which trails the newest event time by the allowed lateness). The
//! intraday rules judge the open day from them (`super::customer_success`):
//! a fleet going dark is seen when event time passes the threshold, not
//! when the day closes.

use std::collections::HashMap;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::model::{DeviceBatch, EventTime, Id, Sighting};

/// Extension trait adding the sightings to a batch stream.
pub trait SightingsExt<'scope> {
    /// One [`Sighting`] per device and input container: its newest reading.
    fn sightings(self) -> StreamVec<'scope, EventTime, Sighting>;
}

impl<'scope> SightingsExt<'scope> for StreamVec<'scope, EventTime, DeviceBatch> {
    fn sightings(self) -> StreamVec<'scope, EventTime, Sighting> {
        self.unary(Pipeline, "Sightings", |_, _| {
            let mut newest: HashMap<(Id, Id), EventTime> = HashMap::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    for batch in data.iter() {
                        let at = newest
                            .entry((batch.customer.clone(), batch.device.clone()))
                            .or_insert(0);
                        *at = (*at).max(batch.last_at());
                    }
                    let Some(held) = cap.retain_least(0) else {
                        newest.clear();
                        return;
                    };
                    let mut session = output.session(&held);
                    for ((customer, device), at) in newest.drain() {
                        session.give(Sighting {
                            customer,
                            device,
                            at,
                        });
                    }
                });
            }
        })
    }
}
