//! The contract history the simulator plants for each customer, following
//! its profile: the ground truth for revenue retention. Deterministic (no
//! random draw), so a fleet's events follow from its spec.
//!
//! | profile | events after the `start` |
//! |---|---|
//! | healthy-growing | expansion of 20% of the ARR at 60% of the simulation |
//! | slow-onboarding | none |
//! | declining-usage | churn on the renewal date |
//! | champion-leaves | contraction of 25% two weeks after the turn day |
//! | devices-going-dark | contraction of 30% three weeks after the turn day |
//! | fault-prone | flat renewal on the renewal date |
//!
//! Events after the simulation's last day are left out. Amounts are rounded
//! to 100, like the contract's ARR.

use crate::calendar::{DAY_MS, EventTime};
use crate::fleet::{Customer, Fleet};
use crate::profile::Profile;

/// One planted contract event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimContractEvent {
    /// `start`, `renewal`, `expansion`, `contraction` or `churn` (as
    /// fleetpulse names them).
    pub kind: &'static str,
    /// 00:00 UTC of the day it takes effect.
    pub at: EventTime,
    /// The change of ARR (a churn loses all of it).
    pub arr_change: f64,
}

impl Fleet {
    /// `customer`'s contract history, oldest first: its `start` (contract
    /// start, the contract's ARR), then what its profile brings.
    pub fn contract_events(&self, customer: &Customer) -> Vec<SimContractEvent> {
        let spec = self.spec();
        let end = spec.start + u64::from(spec.days) * DAY_MS;
        let arr = customer.contract.arr as f64;
        let round = |v: f64| (v / 100.0).round() * 100.0;
        let day_of = |at: EventTime| at - at % DAY_MS;
        let after_turn = |days: u64| customer.turn_at.map(|t| t + days * DAY_MS);
        let mut events = vec![SimContractEvent {
            kind: "start",
            at: day_of(customer.contract.start_ms),
            arr_change: arr,
        }];
        let next = match customer.profile {
            Profile::HealthyGrowing => Some((
                "expansion",
                spec.start + u64::from(spec.days) * 6 / 10 * DAY_MS,
                round(0.2 * arr),
            )),
            Profile::SlowOnboarding => None,
            Profile::DecliningUsage => Some(("churn", customer.contract.renewal_ms, -arr)),
            Profile::ChampionLeaves => {
                after_turn(14).map(|at| ("contraction", at, -round(0.25 * arr)))
            }
            Profile::DevicesGoingDark => {
                after_turn(21).map(|at| ("contraction", at, -round(0.3 * arr)))
            }
            Profile::FaultProne => Some(("renewal", customer.contract.renewal_ms, 0.0)),
        };
        if let Some((kind, at, arr_change)) = next
            && at < end
        {
            events.push(SimContractEvent {
                kind,
                at: day_of(at),
                arr_change,
            });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FleetSpec;

    #[test]
    fn each_profile_gets_its_history() {
        let fleet = Fleet::generate(&FleetSpec {
            customers: 6,
            devices: 36,
            days: 90,
            ..FleetSpec::default()
        });
        let end = fleet.spec().start + 90 * DAY_MS;
        for c in fleet.customers() {
            let events = fleet.contract_events(c);
            assert_eq!(events[0].kind, "start");
            assert_eq!(events[0].arr_change, c.contract.arr as f64);
            assert!(events.iter().all(|e| e.at < end && e.at % DAY_MS == 0));
            let kinds: Vec<&str> = events[1..].iter().map(|e| e.kind).collect();
            let expected: &[&str] = match c.profile {
                Profile::HealthyGrowing => &["expansion"],
                Profile::SlowOnboarding => &[],
                // Its renewal falls inside a 90-day simulation.
                Profile::DecliningUsage => &["churn"],
                Profile::ChampionLeaves | Profile::DevicesGoingDark => &["contraction"],
                Profile::FaultProne => &[],
            };
            assert_eq!(kinds, expected, "{}", c.profile.name());
        }
    }
}
