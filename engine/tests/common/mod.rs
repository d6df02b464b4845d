//! Helpers shared by the engine's integration tests. Include with
//! `mod common;`.
#![allow(dead_code)]

use fleetpulse_engine::{CustomerKpi, DeviceBatch, DeviceKpi, Output, Sample};

/// 2026-01-05T00:00:00Z.
pub const T0: u64 = 1_767_571_200_000;
pub const MIN: u64 = 60_000;

/// A batch from the device `device` of `customer` at site "pit".
pub fn batch(
    customer: &str,
    device: &str,
    epoch: u64,
    sequence: u64,
    samples: Vec<Sample>,
) -> DeviceBatch {
    DeviceBatch {
        customer: customer.into(),
        site: "pit".into(),
        device: device.into(),
        unit_epoch: epoch,
        sequence,
        samples,
    }
}

/// Interleaves batches by publish time, as a broker would.
pub fn interleave(mut batches: Vec<DeviceBatch>) -> Vec<DeviceBatch> {
    batches.sort_by_key(|b| (b.last_at(), b.customer.clone(), b.device.clone()));
    batches
}

/// The records `pick` takes out of `outputs`, ordered by `key`.
fn rows<T, K: Ord>(
    outputs: &[Output],
    pick: impl Fn(&Output) -> Option<T>,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut rows: Vec<T> = outputs.iter().filter_map(pick).collect();
    rows.sort_by_key(key);
    rows
}

/// The customer rows of `window`, by customer and start.
pub fn customer_rows(outputs: &[Output], window: &str) -> Vec<CustomerKpi> {
    let pick = |o: &Output| match o {
        Output::Customer(k) if &*k.window == window => Some(k.clone()),
        _ => None,
    };
    rows(outputs, pick, |k| (k.customer.clone(), k.window_start))
}

/// The device rows of `window`, by customer, device and start.
pub fn device_rows(outputs: &[Output], window: &str) -> Vec<DeviceKpi> {
    let pick = |o: &Output| match o {
        Output::Device(k) if &*k.window == window => Some(k.clone()),
        _ => None,
    };
    rows(outputs, pick, |k| {
        (k.customer.clone(), k.device.clone(), k.window_start)
    })
}

/// The customer and device records as comparable text, sorted, floats to 6
/// decimals (sums may differ in the last bits with summation order).
pub fn normalise(outputs: &[Output]) -> Vec<String> {
    let mut rows: Vec<String> = outputs
        .iter()
        .filter(|o| matches!(o, Output::Customer(_) | Output::Device(_)))
        .map(|o| {
            format!("{o:?}")
                .split(", ")
                .map(|field| match field.split_once(": ") {
                    Some((k, v)) if v.contains('.') => match v.parse::<f64>() {
                        Ok(x) => format!("{k}: {x:.6}"),
                        Err(_) => field.to_string(),
                    },
                    _ => field.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    rows.sort();
    rows
}
