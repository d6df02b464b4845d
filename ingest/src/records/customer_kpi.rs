//! `customer_kpi`: a customer's adoption and value KPIs over one window.

use fleetpulse_engine::{CustomerKpi, Id};

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
            utilisation: f64 [] "ratio 0..1", "operating hours / (devices purchased x window hours)";
            operating_hours: f64 [] "hours", "operating hours";
            idle_hours: f64 [] "hours", "idle hours";
            fuel_litres: f64 [] "litres", "fuel used";
            cycles: u64 [] "cycles", "work cycles";
            output_units: f64 [] "output units", "output (tons, parts, inspections: per customer)";
            manual_interventions: u64 [] "interventions", "manual interventions";
            distinct_operators: u32 [] "operators", "distinct operators logged in";
            advanced_features_used: u32 [] "features", "distinct advanced features used";
            advanced_feature_share: f64 [] "ratio 0..1", "advanced features used / advanced features in the catalog";
            fault_count: u64 [] "faults", "faults raised";
            samples: u64 [] "readings", "readings received (after deduplication)";
        }
    }
}
