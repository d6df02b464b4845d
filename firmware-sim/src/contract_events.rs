//! The contract history the simulator plants for each customer, following
//! its profile: the ground truth for revenue retention and for the health
//! score's validation. Deterministic: the same spec gives the same events.
//!
//! | profile | events after the `start` | churn at renewal |
//! |---|---|---|
//! | healthy-growing | expansion of 20% of the ARR at 60% of the simulation | 5% |
//! | slow-onboarding | none | 40% |
//! | declining-usage | none | 60% |
//! | champion-leaves | contraction of 25% two weeks after the turn day | 35% |
//! | devices-going-dark | contraction of 30% three weeks after the turn day | 45% |
//! | fault-prone | none | 30% |
//!
//! On the renewal date (when it falls inside the simulation) each customer
//! decides: `churn` with its profile's probability
//! ([`Profile::churn_probability`]), a flat `renewal` otherwise. The draw is
//! the first of the customer's own contract stream of the seed, so it does
//! not change with anything else in the spec. A profile does not decide the
//! outcome: a declining customer may renew and a healthy one may leave, as
//! in life, so a health score can only be as good as these odds allow.
//! Nothing follows a churn. Events after the simulation's last day are left
//! out. Amounts are rounded to 100, like the contract's ARR.

use crate::calendar::{DAY_MS, EventTime};
use crate::fleet::{Customer, Fleet};
use crate::profile::Profile;
use crate::random::{Domain, chance, rng_for};

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
    /// start, the contract's ARR), then what its profile brings, then its
    /// decision at renewal.
    pub fn contract_events(&self, customer: &Customer) -> Vec<SimContractEvent> {
        let spec = self.spec();
        let end = spec.start + u64::from(spec.days) * DAY_MS;
        let arr = customer.contract.arr as f64;
        let round = |v: f64| (v / 100.0).round() * 100.0;
        let day_of = |at: EventTime| at - at % DAY_MS;
        let after_turn = |days: u64| customer.turn_at.map(|t| t + days * DAY_MS);
        let change = match customer.profile {
            Profile::HealthyGrowing => Some((
                "expansion",
                spec.start + u64::from(spec.days) * 6 / 10 * DAY_MS,
                round(0.2 * arr),
            )),
            Profile::SlowOnboarding | Profile::DecliningUsage | Profile::FaultProne => None,
            Profile::ChampionLeaves => {
                after_turn(14).map(|at| ("contraction", at, -round(0.25 * arr)))
            }
            Profile::DevicesGoingDark => {
                after_turn(21).map(|at| ("contraction", at, -round(0.3 * arr)))
            }
        };
        let mut rng = rng_for(spec.seed, Domain::Contract, customer.index as u64);
        let churns = chance(&mut rng, customer.profile.churn_probability());
        let decision = (
            if churns { "churn" } else { "renewal" },
            customer.contract.renewal_ms,
            0.0,
        );
        let mut later: Vec<(&'static str, EventTime, f64)> = change
            .into_iter()
            .chain([decision])
            .filter(|(_, at, _)| *at < end)
            .map(|(kind, at, change)| (kind, day_of(at), change))
            .collect();
        later.sort_by_key(|(_, at, _)| *at);
        let mut events = vec![SimContractEvent {
            kind: "start",
            at: day_of(customer.contract.start_ms),
            arr_change: arr,
        }];
        let mut now = arr;
        for (kind, at, change) in later {
            if kind == "churn" {
                events.push(SimContractEvent {
                    kind,
                    at,
                    arr_change: -now,
                });
                break;
            }
            now += change;
            events.push(SimContractEvent {
                kind,
                at,
                arr_change: change,
            });
        }
        events
    }

    /// Whether `customer` churns at its renewal (when that falls inside
    /// the simulation): the planted decision, the ground truth.
    pub fn churns(&self, customer: &Customer) -> Option<bool> {
        self.contract_events(customer)
            .iter()
            .find(|e| e.kind == "churn" || e.kind == "renewal")
            .map(|e| e.kind == "churn")
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
            let expected: &[&[&str]] = match c.profile {
                Profile::HealthyGrowing => &[&["expansion"]],
                Profile::SlowOnboarding => &[&[]],
                // Its renewal falls inside a 90-day simulation.
                Profile::DecliningUsage => &[&["churn"], &["renewal"]],
                Profile::ChampionLeaves | Profile::DevicesGoingDark => &[&["contraction"]],
                Profile::FaultProne => &[&[]],
            };
            assert!(
                expected.contains(&&kinds[..]),
                "{}: {kinds:?}",
                c.profile.name()
            );
        }
    }

    /// Over many customers each profile churns about as often as its
    /// probability says, and the draw is the same for the same seed.
    #[test]
    fn churn_follows_the_profile_odds() {
        let spec = FleetSpec {
            customers: 600,
            devices: 600,
            days: 180,
            renewals: true,
            ..FleetSpec::default()
        };
        let fleet = Fleet::generate(&spec);
        for profile in Profile::ALL {
            let of: Vec<bool> = fleet
                .customers()
                .iter()
                .filter(|c| c.profile == profile)
                .map(|c| fleet.churns(c).expect("renews inside the simulation"))
                .collect();
            let rate = of.iter().filter(|c| **c).count() as f64 / of.len() as f64;
            let p = profile.churn_probability();
            // 100 customers: 4 standard deviations at most.
            let sd = (p * (1.0 - p) / of.len() as f64).sqrt();
            assert!(
                (rate - p).abs() <= 4.0 * sd + 1e-9,
                "{}: {rate} vs {p}",
                profile.name()
            );
        }
        let again = Fleet::generate(&spec);
        for (a, b) in fleet.customers().iter().zip(again.customers()) {
            assert_eq!(fleet.contract_events(a), again.contract_events(b));
        }
    }

    /// A churn loses the ARR left after a contraction, and ends the
    /// history; the ARR always adds up to zero after it.
    #[test]
    fn a_churn_loses_what_is_left_and_nothing_follows() {
        let fleet = Fleet::generate(&FleetSpec {
            customers: 120,
            devices: 120,
            days: 180,
            renewals: true,
            ..FleetSpec::default()
        });
        let mut churned = 0;
        for c in fleet.customers() {
            let events = fleet.contract_events(c);
            let total: f64 = events.iter().map(|e| e.arr_change).sum();
            if let Some(i) = events.iter().position(|e| e.kind == "churn") {
                churned += 1;
                assert_eq!(i, events.len() - 1);
                assert!(total.abs() < 1e-6, "{}: {total}", c.id);
            } else {
                assert!(total > 0.0);
            }
        }
        assert!(churned > 0);
    }
}
