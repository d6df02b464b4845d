//! `health`: a customer's health at the end of one of its days.

use fleetpulse_engine::kpi::health::{Band, Stage};
use fleetpulse_engine::{HealthRecord, Id, Segment};

record_kind! {
    HealthRecord {
        name: "health",
        api: "Health",
        doc: "A customer's health at the end of one of its days; the component columns are the parts of the weighted score (weights per segment), so every score can be explained.",
        notes: "",
        columns: {
            customer: Id [Key Tag] "id", "customer id";
            window_start: u64 [Key Time] "ms since epoch", "start of the customer's day";
            window_end: u64 [] "ms since epoch", "end of that day (exclusive)";
            score: f64 [] "score 0..100", "weighted health score";
            band: Band [] "enum", "`red` (0-50), `yellow` (51-75), `green` (76-100), of the rounded score";
            score_trend: f64 [] "score points", "score change against seven days before (0 when unknown)";
            depth = components.depth: f64 [] "score 0..100", "component: adoption depth (advanced features used)";
            breadth = components.breadth: f64 [] "score 0..100", "component: adoption breadth (devices in use of devices purchased)";
            utilisation = components.utilisation: f64 [] "score 0..100", "component: utilisation against the segment's target (not the `customer_kpi` ratio)";
            outcome_attainment = components.outcome: Option<f64> [] "score 0..100", "component: outcome attainment; absent when the customer has no outcome evaluated";
            reliability = components.reliability: f64 [] "score 0..100", "component: machine reliability (fault rate)";
            trend = components.trend: f64 [] "score 0..100", "component: usage trend against the customer's own baseline";
            maturity = components.maturity: Option<f64> [] "score 0..100", "component: maturity score from outside telemetry; absent when the customer has none";
            stage: Stage [] "enum", "lifecycle stage";
            segment: Segment [Tag] "enum", "coverage segment";
            arr: f64 [] "money", "annual recurring revenue";
            arr_at_risk: f64 [] "money", "ARR counted at risk: all of `arr` when red or with an open alert, else 0";
            open_alerts: u32 [] "alerts", "alerts open at the end of the day";
            days_since_activation: f64 [] "days", "since activation (first telemetry)";
            days_to_renewal: f64 [] "days", "until the renewal date (negative once passed)";
            time_to_value_days: Option<f64> [] "days", "time to value, once the first value milestone is reached; absent before";
            usage_growth: f64 [] "ratio", "mean daily operating hours of the last 7 days against the 28 before, minus 1 (0 until there is a baseline)";
            milestones_reached: u32 [] "milestones", "milestones reached";
            milestones_total: u32 [] "milestones", "milestones in the journey";
        }
    }
}
