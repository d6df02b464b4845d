//! Wires the operators into the fleetpulse dataflow. No logic here.

use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::Concat;

use crate::config::EngineConfig;
use crate::kpi::Output;
use crate::model::{DeviceBatch, EventTime};
use crate::operators::{
    CustomerSuccessExt, DeviceStateExt, PortfolioExt, SightingsExt, TumblingWindowExt,
    WindowMergeExt,
};
use crate::stats::EngineStats;

/// Builds the dataflow over a stream of device batches:
///
/// ```text
/// batches -> exchange by device -> dedup + per-device increments (usage)
///   usage -> per-worker windows: devices' records, parts of customers' windows
///         -> exchange by customer -> merge parts         -> Output::Device, Output::Customer
///                                          \-> their times (to every worker) --v
///   windows -> exchange by customer -> customer success  -> Outcome, Milestone, Health, Alert
/// batches -> newest reading per device, at once (sightings) ^  (provisional alerts of the open day)
///   health  -> one worker -> portfolio                     -> Output::Portfolio
/// ```
pub fn build<'scope>(
    batches: StreamVec<'scope, EventTime, DeviceBatch>,
    config: Arc<EngineConfig>,
    stats: Arc<EngineStats>,
) -> Built<'scope> {
    let (batches, sightings) = batches.with_sightings();
    let (windows, times) = batches
        .device_usage(config.clone(), stats)
        .tumbling_windows(config.clone())
        .merge_windows(config.clone());
    let success = (windows.clone()).customer_success(times, sightings, config.clone());
    let portfolio = success.clone().portfolio(config);
    Built {
        journeys: windows.concat(success),
        portfolio,
    }
}

/// The dataflow's outputs, apart: the portfolio holds its frontier at a
/// date's health until every customer's local day of it closed (up to 38 h
/// behind), which says nothing of when the windows and journeys are out.
pub struct Built<'scope> {
    /// Device and customer windows; outcomes, milestones, health, alerts.
    pub journeys: StreamVec<'scope, EventTime, Output>,
    /// Portfolio figures.
    pub portfolio: StreamVec<'scope, EventTime, Output>,
}
