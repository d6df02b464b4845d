//! Wires the operators into the fleetpulse dataflow. No logic here.

use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Concat;

use crate::config::EngineConfig;
use crate::kpi::{CustomerAccumulator, DeviceAccumulator, Output};
use crate::model::{DeviceBatch, EventTime, Id, Usage};
use crate::operators::{
    CombinedWindowExt, CustomerSuccessExt, DeviceStateExt, PortfolioExt, TumblingWindowExt,
};
use crate::stats::EngineStats;

/// Builds the dataflow over a stream of device batches:
///
/// ```text
/// batches -> exchange by device -> dedup + per-device increments (usage)
///   usage -> per-device windows (same worker)              -> Output::Device
///   usage -> per-worker partial customer windows
///         -> exchange partials by customer -> merge       -> Output::Customer
///   windows -> exchange by customer -> customer success    -> Outcome, Milestone, Health, Alert
///   health  -> one worker -> portfolio                       -> Output::Portfolio
/// ```
pub fn build<'scope>(
    batches: StreamVec<'scope, EventTime, DeviceBatch>,
    config: Arc<EngineConfig>,
    stats: Arc<EngineStats>,
) -> StreamVec<'scope, EventTime, Output> {
    let usage = batches.device_usage(config.clone(), stats);
    let devices = usage
        .clone()
        .tumbling_windows::<_, DeviceAccumulator, _, _>(
            Pipeline,
            "DeviceWindows",
            config.clone(),
            device_key,
            Output::Device,
        );
    let customers = usage.combined_windows::<_, CustomerAccumulator, _>(
        "CustomerWindows",
        config.clone(),
        |u: &Usage| u.customer.clone(),
        Output::Customer,
    );
    let windows = devices.concat(customers);
    let success = windows.clone().customer_success(config);
    let portfolio = success.clone().portfolio();
    windows.concat(success).concat(portfolio)
}

fn device_key(usage: &Usage) -> (Id, Id) {
    (usage.customer.clone(), usage.device.clone())
}
