//! Portfolio figures: every customer's daily health, gathered on one worker
//! and folded per date (each customer's local day of that date) once every
//! customer's day of it has closed.

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::config::{DAY_MS, EngineConfig, HOUR_MS};
use crate::kpi::portfolio::portfolio;
use crate::kpi::{HealthRecord, Output};
use crate::model::EventTime;

/// A local day ends at most this long after the UTC day of its date
/// (UTC-12 and beyond).
pub(crate) const LATEST_LOCAL_END: u64 = 14 * HOUR_MS;

/// The end of the last date whose figures the operator has emitted once
/// its output's frontier stands at `frontier`: a date waits for every
/// customer's day of it, in every time zone, so the frontier passing a
/// date's end is not enough.
pub fn figures_emitted_through(frontier: EventTime) -> EventTime {
    frontier.saturating_sub(LATEST_LOCAL_END + 1)
}

/// Extension trait adding the portfolio operator.
pub trait PortfolioExt<'scope> {
    /// Folds health records into one portfolio record per date.
    fn portfolio(self, config: Arc<EngineConfig>) -> StreamVec<'scope, EventTime, Output>;
}

impl<'scope> PortfolioExt<'scope> for StreamVec<'scope, EventTime, Output> {
    fn portfolio(self, config: Arc<EngineConfig>) -> StreamVec<'scope, EventTime, Output> {
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
                            let day = config.portfolio_day(&h.customer, h.window_start);
                            days.entry(day)
                                .or_insert_with(|| (held.clone(), Vec::new()))
                                .1
                                .push(*h);
                        }
                    }
                });
                while let Some(entry) = days.first_entry() {
                    let close = *entry.key() + DAY_MS + LATEST_LOCAL_END;
                    if frontier.less_equal(&close) && !frontier.frontier().is_empty() {
                        break;
                    }
                    let start = *entry.key();
                    let (cap, mut records) = entry.remove();
                    // Arrival order depends on the workers: the fold's does not.
                    records.sort_by(|a, b| a.customer.cmp(&b.customer));
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
