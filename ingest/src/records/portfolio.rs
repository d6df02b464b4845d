//! `portfolio`: figures over all customers for one UTC day.

use fleetpulse_engine::PortfolioRecord;

record_kind! {
    PortfolioRecord {
        name: "portfolio",
        api: "Portfolio",
        doc: "Figures over all customers for one UTC day, from the health records of every customer whose local day falls mostly on it.",
        notes: "",
        columns: {
            window_start: u64 [Key Time] "ms since epoch", "start of the UTC day";
            window_end: u64 [] "ms since epoch", "end of the UTC day (exclusive)";
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
        }
    }
}
