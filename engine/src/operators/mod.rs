//! One timely operator per file. Operators only buffer by event time and
//! decide when a window is complete; the arithmetic lives in `crate::kpi`.
//!
//! Invariant every operator relies on: a record's timely timestamp is never
//! later than its event time. Inputs are advanced to the watermark (floored to
//! the tick), and ingest refuses data older than the watermark, so once the
//! input frontier passes `t`, no record with event time before `t` can arrive.

pub mod customer_success;
pub mod device_state;
pub mod portfolio;
pub mod sightings;
pub mod tumbling_window;
pub mod window_merge;

pub use customer_success::CustomerSuccessExt;
pub use device_state::DeviceStateExt;
pub use portfolio::PortfolioExt;
pub use sightings::SightingsExt;
pub use tumbling_window::TumblingWindowExt;
pub use window_merge::WindowMergeExt;

use std::hash::{BuildHasher, Hash};

/// A hash that is the same on every worker and every process, for routing
/// records (`RandomState` differs between processes). Computed once per
/// record at every exchange: foldhash's quality variant, whose low bits
/// spread well under `% workers`, at a fraction of SipHash's cost.
pub fn route<K: Hash + ?Sized>(key: &K) -> u64 {
    foldhash::quality::FixedState::with_seed(0x666c_6565_7470_756c).hash_one(key)
}
