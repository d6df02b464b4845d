//! `outcome`: a customer-defined outcome over one window.

use fleetpulse_engine::kpi::outcome::Direction;
use fleetpulse_engine::{Id, OutcomeRecord};

record_kind! {
    OutcomeRecord {
        name: "outcome",
        api: "Outcome",
        doc: "One customer-defined outcome over one window (see [KPIS.md](KPIS.md)).",
        notes: "",
        columns: {
            customer: Id [Key Tag] "id", "customer id";
            outcome: Id [Key Tag] "name", "outcome name from `customers.toml`, unique per customer";
            window: Id [Key Tag] "label", "window label the outcome is evaluated over, e.g. `1d`";
            window_start: u64 [Key Time] "ms since epoch", "window start (inclusive)";
            window_end: u64 [] "ms since epoch", "window end (exclusive)";
            value: f64 [] "outcome's unit", "measured value of the outcome's expression; undefined (NaN) when there is nothing to measure, e.g. a ratio over a window with nothing to divide";
            target: f64 [] "outcome's unit", "target value";
            direction: Direction [] "enum", "`at_most`: met when value <= target; `at_least`: met when value >= target";
            met: bool [] "boolean", "target met in this window (false when the value is undefined)";
            consecutive_met: u32 [] "windows", "windows met in a row, this one included";
            consecutive_missed: u32 [] "windows", "windows missed in a row, this one included (an undefined window leaves both streaks as they were)";
        }
    }
}
