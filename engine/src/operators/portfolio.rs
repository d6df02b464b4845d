//! Portfolio figures: every customer's daily health, gathered on one worker
//! and folded per UTC day once every customer's local day has closed.

use std::collections::BTreeMap;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::config::{DAY_MS, HOUR_MS};
use crate::kpi::portfolio::portfolio;
use crate::kpi::{HealthRecord, Output};
use crate::model::EventTime;

/// Local days end at most this long after the UTC day (UTC-12 and beyond).
const LATEST_LOCAL_END: u64 = 14 * HOUR_MS;

/// Extension trait adding the portfolio operator.
pub trait PortfolioExt<'scope> {
    /// Folds health records into one portfolio record per UTC day.
    fn portfolio(self) -> StreamVec<'scope, EventTime, Output>;
}

impl<'scope> PortfolioExt<'scope> for StreamVec<'scope, EventTime, Output> {
    fn portfolio(self) -> StreamVec<'scope, EventTime, Output> {
        self.unary_frontier(Exchange::new(|_: &Output| 0), "Portfolio", |_cap, _info| {
            let mut days: BTreeMap<EventTime, (Capability<EventTime>, Vec<HealthRecord>)> =
                BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(held) = cap.retain_least(0) else {
                        return;
                    };
                    for record in data.drain(..) {
                        // A provisional score is replaced by its day's close.
                        if let Output::Health(h) = record
                            && !h.provisional
                        {
                            // The UTC day the local day mostly falls on.
                            let noon = h.window_start + 12 * HOUR_MS;
                            let day = noon - noon % DAY_MS;
                            days.entry(day)
                                .or_insert_with(|| (held.clone(), Vec::new()))
                                .1
                                .push(h);
                        }
                    }
                });
                while let Some(entry) = days.first_entry() {
                    let close = *entry.key() + DAY_MS + LATEST_LOCAL_END;
                    if frontier.less_equal(&close) && !frontier.frontier().is_empty() {
                        break;
                    }
                    let start = *entry.key();
                    let (cap, records) = entry.remove();
                    output.session(&cap).give(Output::Portfolio(portfolio(
                        start,
                        start + DAY_MS,
                        &records,
                    )));
                }
            }
        })
    }
}
