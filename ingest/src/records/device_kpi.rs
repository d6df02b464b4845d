//! `device_kpi`: one device's rollup over one window.

use fleetpulse_engine::{DeviceKpi, Id, MachineState};

record_kind! {
    DeviceKpi {
        name: "device_kpi",
        api: "DeviceKpi",
        doc: "A device's rollup over one closed window.",
        notes: "",
        columns: {
            customer: Id [Key Tag] "id", "customer id";
            site: Id [Tag] "id", "site of the device (as of the record)";
            device: Id [Key Tag] "id", "device id (unique within its customer)";
            window: Id [Key Tag] "label", "window label";
            window_start: u64 [Key Time] "ms since epoch", "window start (inclusive)";
            window_end: u64 [] "ms since epoch", "window end (exclusive)";
            utilisation: f64 [] "ratio 0..1", "operating hours / window hours";
            operating_hours: f64 [] "hours", "operating hours";
            idle_hours: f64 [] "hours", "idle hours";
            fuel_litres: f64 [] "litres", "fuel used";
            cycles: u64 [] "cycles", "work cycles";
            output_units: f64 [] "output units", "output";
            manual_interventions: u64 [] "interventions", "manual interventions";
            distinct_operators: u32 [] "operators", "distinct operators logged in";
            fault_count: u64 [] "faults", "faults raised";
            samples: u64 [] "readings", "readings received (after deduplication)";
            last_seen: u64 [] "ms since epoch", "event time of the device's last reading in the window";
            last_state: MachineState [] "enum", "machine state at that reading";
        }
    }
}
