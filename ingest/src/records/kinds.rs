//! The record kinds, one definition each: the engine's output records with
//! their columns (see [`record_kind!`] for the syntax, and `docs/SCHEMA.md`
//! for what they become in each store). A new field is one line here.

use fleetpulse_engine::kpi::forecast::Method;
use fleetpulse_engine::kpi::health::{Band, Stage};
use fleetpulse_engine::kpi::milestone::MilestoneStatus;
use fleetpulse_engine::kpi::outcome::Direction;
use fleetpulse_engine::kpi::revenue_retention::{ContractEventKind, RecordedContractEvent};
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::kpi::touchpoint::{Touchpoint, TouchpointKind};
use fleetpulse_engine::{
    AlertRecord, CustomerKpi, DeviceKpi, ForecastRecord, HealthRecord, Id, MachineState,
    MilestoneRecord, OutcomeRecord, PortfolioRecord, Segment,
};

// `customer_kpi`: a customer's adoption and value KPIs over one window.
record_kind! {
    CustomerKpi {
        name: "customer_kpi",
        api: "CustomerKpi",
        doc: "A customer's KPIs over one closed window (`1h`, and the customer's local day `1d`).",
        notes: "",
        columns: {
            customer: Id [Key Tag] "id", "customer id";
            window: Id [Key Tag] "label", "window label, e.g. `1h`, `1d`";
            window_start: u64 [Key Time] "ms since epoch", "window start (inclusive)";
            window_end: u64 [] "ms since epoch", "window end (exclusive)";
            devices_purchased: u32 [] "devices", "devices in the contract; utilisation's denominator";
            reporting_devices: u32 [] "devices", "devices that sent at least one reading in the window";
            active_devices: u32 [] "devices", "devices that logged operating hours in the window";
            utilisation: f64 [] "ratio", "operating hours / (devices purchased x window hours): 0..1, above 1 only when more devices work than were purchased";
            operating_hours = totals.operating_hours: f64 [] "hours", "operating hours";
            idle_hours = totals.idle_hours: f64 [] "hours", "idle hours";
            fuel_litres = totals.fuel_litres: f64 [] "litres", "fuel used";
            cycles = totals.cycles: u64 [] "cycles", "work cycles";
            output_units = totals.output_units: f64 [] "output units", "output (tons, parts, inspections: per customer)";
            manual_interventions = totals.manual_interventions: u64 [] "interventions", "manual interventions";
            distinct_operators: u32 [] "operators", "distinct operators logged in";
            advanced_features_used: u32 [] "features", "distinct advanced features used";
            advanced_feature_share: f64 [] "ratio 0..1", "advanced features used / advanced features in the catalog";
            fault_count = totals.fault_count: u64 [] "faults", "faults raised";
            samples = totals.samples: u64 [] "readings", "readings received (after deduplication)";
            revision: u32 [] "count", "0 when first written; raised each time telemetry that arrived after the window closed (within `engine.correction_horizon`) restated it";
        }
    }
}

// `device_kpi`: one device's rollup over one window.
record_kind! {
    DeviceKpi {
        name: "device_kpi",
        api: "DeviceKpi",
        doc: "A device's rollup over one closed window.",
        notes: "",
        columns: {
            customer: Id [Key Tag] "id", "customer id";
            site: Id [Tag] "id", "site of the device's first reading in the window (a device moved within it shows the new site from the next window: the site is part of the series' identity)";
            device: Id [Key Tag] "id", "device id (unique within its customer)";
            window: Id [Key Tag] "label", "window label";
            window_start: u64 [Key Time] "ms since epoch", "window start (inclusive)";
            window_end: u64 [] "ms since epoch", "window end (exclusive)";
            utilisation: f64 [] "ratio", "operating hours / window hours: 0..1, above 1 when a meter that counts whole hours steps within a short window (docs/KPIS.md, implausible gains)";
            operating_hours = totals.operating_hours: f64 [] "hours", "operating hours";
            idle_hours = totals.idle_hours: f64 [] "hours", "idle hours";
            fuel_litres = totals.fuel_litres: f64 [] "litres", "fuel used";
            cycles = totals.cycles: u64 [] "cycles", "work cycles";
            output_units = totals.output_units: f64 [] "output units", "output";
            manual_interventions = totals.manual_interventions: u64 [] "interventions", "manual interventions";
            distinct_operators: u32 [] "operators", "distinct operators logged in";
            fault_count = totals.fault_count: u64 [] "faults", "faults raised";
            samples = totals.samples: u64 [] "readings", "readings received (after deduplication)";
            last_seen: u64 [] "ms since epoch", "event time of the device's last reading in the window";
            last_state: MachineState [] "enum", "machine state at that reading";
            revision: u32 [] "count", "0 when first written; raised each time late telemetry restated it";
        }
    }
}

// `outcome`: a customer-defined outcome over one window.
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

// `milestone`: a milestone's state at the end of one customer day.
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

// `health`: a customer's health at the end of one of its days.
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
            moved_1d_depth = moved_1d.depth: f64 [] "score points", "why the score moved: points adoption depth gained or lost since the day before (0 on the first day); the seven sum to the change";
            moved_1d_breadth = moved_1d.breadth: f64 [] "score points", "why the score moved: points adoption breadth gained or lost since the day before (0 on the first day); the seven sum to the change";
            moved_1d_utilisation = moved_1d.utilisation: f64 [] "score points", "why the score moved: points utilisation gained or lost since the day before (0 on the first day); the seven sum to the change";
            moved_1d_outcome = moved_1d.outcome: f64 [] "score points", "why the score moved: points outcome attainment gained or lost since the day before (0 on the first day); the seven sum to the change";
            moved_1d_reliability = moved_1d.reliability: f64 [] "score points", "why the score moved: points reliability gained or lost since the day before (0 on the first day); the seven sum to the change";
            moved_1d_trend = moved_1d.trend: f64 [] "score points", "why the score moved: points usage trend gained or lost since the day before (0 on the first day); the seven sum to the change";
            moved_1d_maturity = moved_1d.maturity: f64 [] "score points", "why the score moved: points maturity gained or lost since the day before (0 on the first day); the seven sum to the change";
            moved_7d_depth = moved_7d.depth: f64 [] "score points", "why the score moved: points adoption depth gained or lost over seven days (0 until the eighth day); the seven sum to the change";
            moved_7d_breadth = moved_7d.breadth: f64 [] "score points", "why the score moved: points adoption breadth gained or lost over seven days (0 until the eighth day); the seven sum to the change";
            moved_7d_utilisation = moved_7d.utilisation: f64 [] "score points", "why the score moved: points utilisation gained or lost over seven days (0 until the eighth day); the seven sum to the change";
            moved_7d_outcome = moved_7d.outcome: f64 [] "score points", "why the score moved: points outcome attainment gained or lost over seven days (0 until the eighth day); the seven sum to the change";
            moved_7d_reliability = moved_7d.reliability: f64 [] "score points", "why the score moved: points reliability gained or lost over seven days (0 until the eighth day); the seven sum to the change";
            moved_7d_trend = moved_7d.trend: f64 [] "score points", "why the score moved: points usage trend gained or lost over seven days (0 until the eighth day); the seven sum to the change";
            moved_7d_maturity = moved_7d.maturity: f64 [] "score points", "why the score moved: points maturity gained or lost over seven days (0 until the eighth day); the seven sum to the change";
            stage: Stage [] "enum", "lifecycle stage";
            segment: Segment [Tag] "enum", "coverage segment";
            arr: f64 [] "money", "annual recurring revenue";
            arr_at_risk: f64 [] "money", "ARR counted at risk: all of `arr` when red or with an open alert, else 0";
            open_alerts: u32 [] "alerts", "alerts open at the end of the day";
            days_since_activation: f64 [] "days", "since activation (first telemetry); undefined (NaN) for a customer whose machines never reported";
            days_to_renewal: f64 [] "days", "until the renewal date, 00:00 in the customer's time zone (negative once passed)";
            time_to_value_days: Option<f64> [] "days", "time to value, once the first value milestone is reached; absent before";
            usage_growth: f64 [] "ratio", "mean daily operating hours of the last 7 days against the 28 before, minus 1 (0 until there is a baseline)";
            milestones_reached: u32 [] "milestones", "milestones reached";
            milestones_total: u32 [] "milestones", "milestones in the journey";
            provisional: bool [] "flag", "the day is still open: the score reads its hours so far at their pace, and the day's close overwrites the row (`false`)";
        }
    }
}

// `forecast`: where a customer's health score is heading, at the end of one
// of its days.
record_kind! {
    ForecastRecord {
        name: "forecast",
        api: "Forecast",
        doc: "Where a customer's health score is heading, as of the end of one of its days: the expected score 7, 14 and 30 days on with an 80% band, the days until it turns red and the probability that it does within the customer's `forecast_days` (docs/CUSTOMER_SUCCESS.md, the forecast).",
        notes: "",
        columns: {
            customer: Id [Key Tag] "id", "customer id";
            window_start: u64 [Key Time] "ms since epoch", "start of the customer's day";
            window_end: u64 [] "ms since epoch", "end of that day (exclusive)";
            score: f64 [] "score 0..100", "the day's health score";
            method: Method [] "enum", "how the forecast was drawn: `local_trend` (Holt's linear trend), `damped_trend` (the same, its slope damped), `theil_sen` or `projection` (the days projected, the score computed over them)";
            fitted_days: u32 [] "days", "daily scores the trend was fitted to";
            slope: f64 [] "score points per day", "the trend's slope";
            expected_7: f64 [] "score 0..100", "expected score 7 days on";
            expected_14: f64 [] "score 0..100", "expected score 14 days on";
            expected_30: f64 [] "score 0..100", "expected score 30 days on";
            low_7: f64 [] "score 0..100", "80% band, low end (10% quantile), 7 days on";
            high_7: f64 [] "score 0..100", "80% band, high end (90% quantile), 7 days on";
            low_14: f64 [] "score 0..100", "80% band, low end, 14 days on";
            high_14: f64 [] "score 0..100", "80% band, high end, 14 days on";
            low_30: f64 [] "score 0..100", "80% band, low end, 30 days on";
            high_30: f64 [] "score 0..100", "80% band, high end, 30 days on";
            days_to_red: Option<f64> [] "days", "days until the trend turns red (0 when it is red); absent when it does not within 30 days";
            probability_red: f64 [] "probability 0..1", "probability of a red score within `forecast_days`";
            forecast_days: u32 [] "days", "the customer's `forecast_days` threshold";
        }
    }
}

// `alert`: one at-risk alert episode, kept current.
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
            episode: u32 [] "1-based", "episode number of this rule for this customer (a count: the row is identified by the opening time)";
            customer_name: Id [] "text", "customer display name";
            status: AlertStatus [] "enum", "`open`, `resolved`, or `retracted` (telemetry that arrived late, within `engine.correction_horizon`, restated the days that raised it: the episode did not happen)";
            provisional: bool [] "flag", "raised from the open day before it closed (intraday: `devices_dark`, `fault_spike`, `champion_lost`); the day's close confirms it (the same row, `false`) or retracts it";
            opened_at: u64 [Key Time] "ms since epoch", "when the episode opened (end of the day it fired)";
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

// `portfolio`: figures over all customers for one date.
record_kind! {
    PortfolioRecord {
        name: "portfolio",
        api: "Portfolio",
        doc: "Figures over all customers for one date, from each customer's health record of its local day of that date.",
        notes: "",
        columns: {
            window_start: u64 [Key Time] "ms since epoch", "00:00 UTC of the date";
            window_end: u64 [] "ms since epoch", "24 hours later (exclusive)";
            customers: u32 [] "customers", "customers with a health record that day";
            arr_total: f64 [] "money", "their ARR";
            arr_at_risk: f64 [] "money", "ARR of customers in red or with an open alert";
            green: u32 [] "customers", "customers in the green band";
            yellow: u32 [] "customers", "customers in the yellow band";
            red: u32 [] "customers", "customers in the red band";
            managed_customers: u32 [] "customers", "high-touch customers (a named CS manager)";
            managed_usage_growth: f64 [] "ratio", "mean `usage_growth` of the managed customers (0 when none)";
            unmanaged_usage_growth: f64 [] "ratio", "mean `usage_growth` of the other customers (0 when none)";
            managed_outcome_attainment: f64 [] "score 0..100", "mean outcome attainment of the managed customers with outcomes (0 when none)";
            unmanaged_outcome_attainment: f64 [] "score 0..100", "mean outcome attainment of the other customers with outcomes (0 when none)";
            revision: u32 [] "count", "0 when first written; raised each time a customer's health of the date was restated (late telemetry, a changed definition)";
        }
    }
}

// `touchpoint`: one activity of the CS team with a customer.
record_kind! {
    Touchpoint {
        name: "touchpoint",
        api: "Touchpoint",
        doc: "One activity of the CS team with a customer (kickoff, training, onsite visit, health-check call, business review, webinar, escalation), recorded through the API, `fleetpulse touchpoints` or a CSV import.",
        notes: "Not an engine output: written to the SQLite store by the API and the CLI only, never to InfluxDB. Recording the same (customer, kind, day, CSM) again overwrites the row, so an import can be repeated.",
        sqlite_only: true,
        columns: {
            customer: Id [Key Tag] "id", "customer id";
            kind: TouchpointKind [Key Tag] "enum", "`kickoff`, `training`, `onsite_visit`, `health_check_call`, `business_review`, `webinar`, `escalation`";
            at: u64 [Key Time] "ms since epoch", "the day it took place (midnight UTC)";
            csm: Id [Key Tag] "name", "the CS manager who held it";
            attendees: String [] "text", "who attended from the customer, `;`-separated";
            decision_maker_present: bool [] "boolean", "a decision-maker of the customer attended";
            notes: String [] "text", "free text";
            recorded_by: Id [] "name", "the user who recorded it, or `cli`, or `csv:FILE`";
        }
    }
}

// `contract_event`: a contract event recorded while the service runs.
record_kind! {
    RecordedContractEvent {
        name: "contract_event",
        api: "ContractEvent",
        doc: "A contract event (start, renewal, expansion, contraction, churn) recorded through the API, `fleetpulse contracts add` or `fleetpulse contracts import`; revenue retention reads these beside the customers file's.",
        notes: "Not an engine output: written to the SQLite store by the API and the CLI only, never to InfluxDB. Recording the same (customer, kind, day) again overwrites the row, and a recorded event with the same customer, kind and day as one of the customers file replaces the file's.",
        sqlite_only: true,
        columns: {
            customer: Id [Key Tag] "id", "customer id";
            kind: ContractEventKind [Key Tag] "enum", "`start`, `renewal`, `expansion`, `contraction`, `churn`";
            at: u64 [Key Time] "ms since epoch", "the day it takes effect (midnight UTC)";
            arr_change: Option<f64> [] "money", "the change of ARR (null: none for a renewal, all of it for a churn)";
            recorded_by: Id [] "name", "the user who recorded it, or `cli`, or `csv:FILE`";
        }
    }
}
