//! Sample KPI records shared by the sink tests.

use fleetpulse_engine::{CustomerKpi, DeviceKpi, MachineState};

/// A customer record of the `1h` window starting at `start`.
pub(crate) fn customer(name: &str, start: u64, cycles: u64) -> CustomerKpi {
    CustomerKpi {
        customer: name.into(),
        window: "1h".into(),
        window_start: start,
        window_end: start + 3_600_000,
        devices_purchased: 4,
        reporting_devices: 3,
        active_devices: 2,
        utilisation: 0.25,
        operating_hours: 3.0,
        idle_hours: 0.5,
        fuel_litres: 41.25,
        cycles,
        output_units: 120.0,
        manual_interventions: 7,
        distinct_operators: 2,
        advanced_features_used: 1,
        advanced_feature_share: 1.0 / 3.0,
        fault_count: 1,
        samples: 360,
    }
}

/// A device record of customer `acme`, site `north-pit`, window `1h`.
pub(crate) fn device(name: &str, start: u64, state: MachineState) -> DeviceKpi {
    DeviceKpi {
        customer: "acme".into(),
        site: "north-pit".into(),
        device: name.into(),
        window: "1h".into(),
        window_start: start,
        window_end: start + 3_600_000,
        utilisation: 0.75,
        operating_hours: 0.75,
        idle_hours: 0.25,
        fuel_litres: 12.5,
        cycles: 40,
        output_units: 30.0,
        manual_interventions: 2,
        distinct_operators: 1,
        fault_count: 0,
        samples: 120,
        last_seen: start + 3_599_000,
        last_state: state,
    }
}
