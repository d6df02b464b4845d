//! Per-customer-day KPIs read back from InfluxDB 1.x, the simulator's ground
//! truth in the same shape, and the comparison the crash and cluster tests
//! assert on.

use std::collections::BTreeMap;

use fleetpulse_engine::kpi::risk::Rule;
use fleetpulse_sim::{Fleet, Profile};

use super::servers::InfluxDb1;

const DAY_MS: u64 = 86_400_000;

/// (customer, day start) -> (operating hours, cycles, samples, interventions, faults, active devices).
pub type Days = BTreeMap<(String, u64), (f64, u64, u64, u64, u64, u64)>;

/// The daily `customer_kpi` rows of database `db`.
pub fn store_days(influx: &InfluxDb1, db: &str) -> Days {
    let answer = influx.query(
        db,
        "SELECT operating_hours, cycles, samples, manual_interventions, fault_count, active_devices, window_end FROM customer_kpi WHERE \"window\" = '1d' GROUP BY customer",
    );
    let mut days = Days::new();
    for series in answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let customer = series["tags"]["customer"].as_str().unwrap().to_string();
        for v in series["values"].as_array().unwrap() {
            let n = |i: usize| v[i].as_f64().unwrap_or(f64::NAN);
            days.insert(
                (customer.clone(), n(7) as u64 - DAY_MS),
                (
                    n(1),
                    n(2) as u64,
                    n(3) as u64,
                    n(4) as u64,
                    n(5) as u64,
                    n(6) as u64,
                ),
            );
        }
    }
    days
}

/// The simulator's ground truth in the same shape.
pub fn truth_days(fleet: &Fleet) -> Days {
    fleet
        .ground_truth()
        .rows()
        .into_iter()
        .map(|r| {
            (
                (r.customer, r.day_start_ms),
                (
                    r.operating_hours,
                    r.cycles,
                    r.samples,
                    r.manual_interventions,
                    r.fault_count,
                    u64::from(r.active_devices),
                ),
            )
        })
        .collect()
}

/// The rule each at-risk profile must raise (docs/CUSTOMER_SUCCESS.md).
pub fn signature(profile: Profile) -> Option<Rule> {
    match profile {
        Profile::HealthyGrowing => None,
        Profile::SlowOnboarding => Some(Rule::OnboardingStalled),
        Profile::DecliningUsage => Some(Rule::UsageDrop),
        Profile::ChampionLeaves => Some(Rule::ChampionLost),
        Profile::DevicesGoingDark => Some(Rule::DevicesDark),
        Profile::FaultProne => Some(Rule::FaultSpike),
    }
}

/// Whether a stored sum equals the ground truth's within 1e-6 relative:
/// hours, litres and units are sums of floats in another order.
pub fn close(stored: f64, truth: f64) -> bool {
    (stored - truth).abs() <= 1e-6 * truth.abs().max(1.0)
}

/// Asserts that `store` holds exactly the rows (keys) of `truth`; `what`
/// names the store in the message.
pub fn assert_same_rows<K: Ord + std::fmt::Debug, A, B>(
    what: &str,
    store: &BTreeMap<K, A>,
    truth: &BTreeMap<K, B>,
) {
    assert_eq!(
        store.keys().collect::<Vec<_>>(),
        truth.keys().collect::<Vec<_>>(),
        "{what}: the rows differ from the ground truth's"
    );
}

/// Counts exactly equal, hours within 1e-6 relative.
pub fn equal(store: &Days, truth: &Days) -> Result<(), String> {
    if store.len() != truth.len() {
        return Err(format!(
            "{} customer-days in the store, {} in the ground truth",
            store.len(),
            truth.len()
        ));
    }
    for (key, t) in truth {
        let Some(s) = store.get(key) else {
            return Err(format!("{key:?} missing"));
        };
        if !close(s.0, t.0) || (s.1, s.2, s.3, s.4, s.5) != (t.1, t.2, t.3, t.4, t.5) {
            return Err(format!("{key:?}: store {s:?}, ground truth {t:?}"));
        }
    }
    Ok(())
}
