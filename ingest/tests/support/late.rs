//! A customer whose fleet goes dark: three devices of customer `dk`, two of
//! which lose coverage for three days and upload their buffers when they
//! reconnect (late data within the correction horizon). Used by
//! `late_data.rs` (the stores) and `dashboard.rs` (what the page shows).

/// 2026-01-05T00:00:00Z.
pub const T0: u64 = 1_767_571_200_000;
pub const HOUR_MS: u64 = 3_600_000;

pub const DARK_CUSTOMERS: &str = r#"
[[customer]]
id = "dk"
name = "Dark Quarry"
segment = "low-touch"

[customer.contract]
arr = 90000
start = "2026-01-05"
renewal = "2027-01-05"
devices_purchased = 3
operator_seats = 3
"#;

/// `qt`: two machines bought with the contract `dk`'s started with, and
/// `onboarding_days` to bring them online.
pub fn quiet_customer(onboarding_days: u32) -> String {
    format!(
        r#"
[[customer]]
id = "qt"
name = "Quiet Quarry"
segment = "low-touch"

[customer.contract]
arr = 60000
start = "2026-01-05"
renewal = "2027-01-05"
devices_purchased = 2
operator_seats = 2

[customer.thresholds]
onboarding_days = {onboarding_days}
"#
    )
}

/// Hour `h` of device `device` of customer `dk`: two readings, meters
/// climbing, some cycles.
pub fn hour(device: &str, h: u64) -> (String, Vec<u8>) {
    hour_of("dk", device, h)
}

/// [`hour`] of a device of `customer`.
pub fn hour_of(customer: &str, device: &str, h: u64) -> (String, Vec<u8>) {
    use fleetpulse_proto::v1;
    use prost::Message;
    let meter = 100.0 + h as f64 * 0.5;
    let samples = (0..2)
        .map(|i| v1::Sample {
            event_time_ms: (T0 + h * HOUR_MS + 7 * 60_000 + i * 30 * 60_000) as i64,
            state: 1,
            cumulative_operating_hours: meter + i as f64 * 0.25,
            cumulative_idle_hours: meter / 10.0,
            cumulative_fuel_used_litres: meter * 9.0,
            cycles: 3,
            operator_id: "op-1".into(),
            ..Default::default()
        })
        .collect();
    let batch = v1::TelemetryBatch {
        device_id: device.into(),
        customer_id: customer.into(),
        site_id: "pit".into(),
        sequence: h + 1,
        unit_epoch: 1,
        firmware_version: "1".into(),
        samples,
    };
    (
        format!("fleet/{customer}/pit/{device}/telemetry"),
        batch.encode_to_vec(),
    )
}

/// A message: topic and payload.
pub type Published = (String, Vec<u8>);

/// Eight days of three devices; `d1` and `d2` lose coverage from hour 48
/// to hour 130 and upload their buffers after the reconnect hour (d1 newest
/// first). Returns the messages published before the reconnect and after.
pub fn dark_fleet() -> (Vec<Published>, Vec<Published>) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for h in 0..192 {
        let out = if h < 130 { &mut before } else { &mut after };
        for device in ["d1", "d2", "d3"] {
            if device == "d3" || !(48..130).contains(&h) {
                out.push(hour(device, h));
            }
        }
        if h == 130 {
            after.extend((48..130).rev().map(|h| hour("d1", h)));
            after.extend((48..130).map(|h| hour("d2", h)));
        }
    }
    (before, after)
}
