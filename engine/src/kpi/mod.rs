//! KPI arithmetic in plain Rust, no timely types: accumulate [`Usage`] into a
//! window, then finish the window into a record. The operators in
//! `crate::operators` only decide *when* a window is complete.

mod customer;
mod device;

pub use customer::{CustomerAccumulator, CustomerKpi};
pub use device::{DeviceAccumulator, DeviceKpi};

use serde::{Deserialize, Serialize};

use crate::config::{EngineConfig, WindowSpec};
use crate::model::{EventTime, Usage};

/// A window's running totals for one key (a customer or a device).
pub trait WindowAccumulator: Default + 'static {
    /// The record a finished window becomes.
    type Record;
    /// Adds one reading.
    fn add(&mut self, usage: &Usage);
    /// Finishes the window that starts at `start`.
    fn finish(self, window: &WindowSpec, start: EventTime, config: &EngineConfig) -> Self::Record;
}

/// Everything the engine emits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// A customer's KPIs over one closed window.
    Customer(CustomerKpi),
    /// A device's rollup over one closed window.
    Device(DeviceKpi),
}
