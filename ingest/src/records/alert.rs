//! `alert`: one at-risk alert episode, kept current.

use fleetpulse_engine::kpi::health::Stage;
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::{AlertRecord, Id, Segment};

record_kind! {
    AlertRecord {
        name: "alert",
        api: "Alert",
        doc: "One alert episode, written when it opens and updated in every column when it resolves.",
        notes: "An `open` record never overwrites a `resolved` one (see [Series identity](#series-identity-and-idempotency)). The other columns hold the latest transition's values: after the resolve, `evidence`, `metric` and `threshold` describe why it resolved.",
        overwrite_if: "NOT (alert.status = 'resolved' AND excluded.status = 'open')",
        columns: {
            customer: Id [Key Tag] "id", "customer id";
            rule: Rule [Key Tag] "enum", "the at-risk rule (see Conventions)";
            episode: u32 [Key] "1-based", "episode number of this rule for this customer";
            customer_name: Id [] "text", "customer display name";
            status: AlertStatus [] "enum", "`open` or `resolved`";
            opened_at: u64 [Time] "ms since epoch", "when the episode opened (end of the day it fired)";
            resolved_at: Option<u64> [] "ms since epoch", "when it resolved (end of that day); absent while open";
            evidence: String [] "text", "the numbers that fired (or resolved) it, in words";
            metric: f64 [] "rule's unit", "the measured value behind the rule";
            threshold: f64 [] "rule's unit", "the threshold it was compared with";
            stage: Stage [] "enum", "lifecycle stage at the transition";
            segment: Segment [Tag] "enum", "coverage segment (alert routing)";
            arr_at_risk: f64 [] "money", "revenue at stake: the customer's ARR";
            next_action: String [] "text", "suggested next action for the CS team";
        }
    }
}
