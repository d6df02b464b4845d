//! `milestone`: a milestone's state at the end of one customer day.

use fleetpulse_engine::kpi::milestone::MilestoneStatus;
use fleetpulse_engine::{Id, MilestoneRecord};

record_kind! {
    MilestoneRecord {
        name: "milestone",
        api: "Milestone",
        doc: "A milestone's state at the end of one customer day.",
        notes: "",
        columns: {
            customer: Id [Key Tag] "id", "customer id";
            milestone: Id [Key Tag] "name", "milestone name from `customers.toml`, unique per customer";
            window_start: u64 [Key Time] "ms since epoch", "start of the customer's day";
            window_end: u64 [] "ms since epoch", "end of that day (exclusive)";
            position: u32 [] "1-based", "position in the journey";
            value_milestone: bool [] "boolean", "reaching it delivers value (the first such milestone ends time to value)";
            due_at: u64 [] "ms since epoch", "due date: activation + the milestone's due days";
            reached_at: Option<u64> [] "ms since epoch", "when it was reached (end of that day); absent while not reached";
            status: MilestoneStatus [] "enum", "`pending` (not reached, not due), `reached`, `overdue` (not reached, past due)";
        }
    }
}
