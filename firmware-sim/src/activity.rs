//! CS activities planted with known effects, the ground truth for the
//! impact estimate: a [`PlantedActivity`] of the spec gives a share of the
//! customers one touchpoint of its kind on a random day, and from
//! `delay_days` after it multiplies the chance that each of the customer's
//! machines works a shift by `1 + lift_percent / 100` (an activity planted
//! with `lift_percent = 0` has no effect: the control). With
//! `intervention_cut_percent`, from the same day the customer's machines
//! also need that percent fewer manual interventions per work cycle (the
//! trained operators handle the line themselves): the effect on outcomes.
//! More shifts alone move no outcome (the demo outcomes are rates per cycle
//! and per hour), so the outcome effect is planted on its own. Each
//! intervention is kept with chance `1 - cut` by a hash of the sample, not
//! the device's random stream, so a spec that differs only in the cut
//! simulates the very same fleet but for those counts: the counterfactual
//! that the realised effect on outcome attainment is measured against.
//!
//! A customer gets at most one planted touchpoint, placed so that the
//! [`IMPACT_WINDOW_DAYS`] before and after it lie inside the simulation.
//! [`Fleet::expected_effect`] says what the lift does to the customer's
//! operating hours over the window after the touchpoint (the chance of a
//! shift is capped at 0.98, so a lift on busy machines realises less).

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::calendar::{DAY_MS, EventTime, weekday};
use crate::device::shift_chance;
use crate::fleet::{Customer, Fleet};
use crate::random::{Domain, rng_for};
use crate::spec::FleetSpec;

/// Days before and after a touchpoint that its impact is measured over.
pub const IMPACT_WINDOW_DAYS: u32 = 28;

/// One kind of activity to plant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantedActivity {
    /// Touchpoint kind, e.g. `training` (as fleetpulse names them).
    pub kind: String,
    /// Percent of the customers that get one.
    pub share_percent: u32,
    /// Change of the chance to work a shift, percent (0: no effect).
    pub lift_percent: i32,
    /// Days from the touchpoint until the lift starts.
    pub delay_days: u32,
    /// A decision-maker of the customer attends.
    #[serde(default)]
    pub decision_maker: bool,
    /// Percent fewer manual interventions per cycle from `delay_days` after
    /// it (0: no effect on outcomes).
    #[serde(default)]
    pub intervention_cut_percent: u32,
}

/// A touchpoint the simulator planted, with its effect.
#[derive(Debug, Clone, PartialEq)]
pub struct SimTouchpoint {
    /// Touchpoint kind.
    pub kind: String,
    /// Simulation day (0 = the first) it took place.
    pub day: u32,
    /// 00:00 UTC of that day.
    pub at: EventTime,
    /// A decision-maker attended.
    pub decision_maker: bool,
    /// Multiplier on the chance of working a shift, from `day + delay_days`.
    pub lift: f64,
    /// Days until the lift starts.
    pub delay_days: u32,
    /// Share of manual interventions still needed from `day + delay_days`
    /// (1: no effect).
    pub interventions_kept: f64,
}

/// The touchpoints of customer `index`: at most one, of the first planted
/// activity whose share its draw falls in. Draws from its own random stream,
/// so a spec without activities simulates exactly as before.
pub(crate) fn plan(spec: &FleetSpec, index: usize) -> Vec<SimTouchpoint> {
    let window = IMPACT_WINDOW_DAYS;
    if spec.activities.is_empty() || spec.days < 2 * window + 1 {
        return Vec::new();
    }
    let mut rng = rng_for(spec.seed, Domain::Activity, index as u64);
    let draw = rng.random_range(0..100u32);
    let day = rng.random_range(window..=spec.days - window);
    let mut from = 0;
    for a in &spec.activities {
        if (from..from + a.share_percent).contains(&draw) {
            return vec![SimTouchpoint {
                kind: a.kind.clone(),
                day,
                at: spec.start + u64::from(day) * DAY_MS,
                decision_maker: a.decision_maker,
                lift: 1.0 + f64::from(a.lift_percent) / 100.0,
                delay_days: a.delay_days,
                interventions_kept: 1.0 - f64::from(a.intervention_cut_percent.min(100)) / 100.0,
            }];
        }
        from += a.share_percent;
    }
    Vec::new()
}

impl Customer {
    /// Multiplier on the chance of working a shift on simulation `day`
    /// (fractional) from the planted touchpoints' lifts.
    pub(crate) fn activity_factor(&self, day: f64) -> f64 {
        self.touchpoints
            .iter()
            .filter(|t| day >= f64::from(t.day + t.delay_days))
            .map(|t| t.lift)
            .product()
    }

    /// Share of manual interventions still needed on simulation `day`
    /// (fractional) after the planted touchpoints' cuts.
    pub(crate) fn intervention_factor(&self, day: f64) -> f64 {
        self.touchpoints
            .iter()
            .filter(|t| day >= f64::from(t.day + t.delay_days))
            .map(|t| t.interventions_kept)
            .product()
    }
}

impl Fleet {
    /// What `touchpoint` of `customer` does to the customer's expected
    /// operating hours over the `window_days` from its day: expected hours
    /// with its lift over expected hours without, minus 1 (0.2: +20%). The
    /// hours of a working shift do not depend on the lift, so this is the
    /// ratio of the shift chances summed over the machines working then.
    pub fn expected_effect(
        &self,
        customer: &Customer,
        touchpoint: &SimTouchpoint,
        window_days: u32,
    ) -> f64 {
        let spec = self.spec();
        let turn = customer.turn_day.map_or(f64::INFINITY, f64::from);
        let (mut with, mut without) = (0.0, 0.0);
        for device in self.devices_of(customer) {
            for d in touchpoint.day..(touchpoint.day + window_days).min(spec.days) {
                let day_start = spec.start + u64::from(d) * DAY_MS;
                let live = |from: Option<EventTime>| from.is_none_or(|t| t > day_start);
                let online = device.online_from.is_some_and(|t| t <= day_start);
                if !online || !live(device.dark_from) || !live(device.parked_from) {
                    continue;
                }
                let local_day = (day_start / DAY_MS) as i64;
                for shift in 0..customer.shifts_per_day as usize {
                    let day = f64::from(d) + [0.25, 0.6][shift];
                    let p =
                        shift_chance(spec, customer, device, weekday(local_day), shift, day, turn);
                    let lifted = if day >= f64::from(touchpoint.day + touchpoint.delay_days) {
                        touchpoint.lift
                    } else {
                        1.0
                    };
                    without += p.min(0.98);
                    with += (p * lifted).min(0.98);
                }
            }
        }
        if without > 0.0 {
            with / without - 1.0
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(activities: Vec<PlantedActivity>) -> FleetSpec {
        FleetSpec {
            customers: 12,
            devices: 48,
            days: 60,
            activities,
            ..FleetSpec::default()
        }
    }

    fn training(share_percent: u32, lift_percent: i32) -> PlantedActivity {
        PlantedActivity {
            kind: "training".into(),
            share_percent,
            lift_percent,
            delay_days: 3,
            decision_maker: false,
            intervention_cut_percent: 0,
        }
    }

    #[test]
    fn without_activities_the_stream_is_unchanged() {
        let plain = Fleet::generate(&spec(Vec::new()));
        let with_null = Fleet::generate(&spec(vec![training(100, 0)]));
        assert!(plain.customers().iter().all(|c| c.touchpoints.is_empty()));
        assert!(
            with_null
                .customers()
                .iter()
                .all(|c| c.touchpoints.len() == 1)
        );
        // A planted activity without effect changes no message.
        assert!(plain.encoded_messages().eq(with_null.encoded_messages()));
    }

    #[test]
    fn touchpoints_leave_a_full_window_on_both_sides_and_lift_after_the_delay() {
        let fleet = Fleet::generate(&spec(vec![training(50, 30)]));
        let planted: Vec<&Customer> = fleet
            .customers()
            .iter()
            .filter(|c| !c.touchpoints.is_empty())
            .collect();
        assert!(
            !planted.is_empty() && planted.len() < 12,
            "{}",
            planted.len()
        );
        for c in planted {
            let t = &c.touchpoints[0];
            assert!(t.day >= IMPACT_WINDOW_DAYS && t.day + IMPACT_WINDOW_DAYS <= 60);
            assert_eq!(c.activity_factor(f64::from(t.day + 2)), 1.0);
            assert!((c.activity_factor(f64::from(t.day + 3)) - 1.3).abs() < 1e-12);
            let effect = fleet.expected_effect(c, t, IMPACT_WINDOW_DAYS);
            // 25 of 28 days lifted, some shifts capped at 0.98.
            assert!(
                effect > 0.0 && effect <= 0.3 * 25.0 / 28.0 + 1e-9,
                "{effect}"
            );
        }
    }

    #[test]
    fn an_intervention_cut_changes_only_the_interventions_after_the_delay() {
        let cut = |percent| {
            let mut a = training(50, 30);
            a.intervention_cut_percent = percent;
            Fleet::generate(&spec(vec![a]))
        };
        let (plain, cut) = (cut(0), cut(60));
        let interventions = |fleet: &Fleet, before: bool| {
            let mut n = 0u64;
            for m in fleet.messages() {
                let customer = fleet
                    .customers()
                    .iter()
                    .find(|c| c.id == m.batch.customer_id)
                    .unwrap();
                for s in &m.batch.samples {
                    let from = customer
                        .touchpoints
                        .first()
                        .map_or(u64::MAX, |t| t.at + u64::from(t.delay_days) * DAY_MS);
                    if ((s.event_time_ms as u64) < from) == before {
                        n += u64::from(s.manual_interventions);
                    }
                }
            }
            n
        };
        assert_eq!(interventions(&plain, true), interventions(&cut, true));
        let (was, is) = (interventions(&plain, false), interventions(&cut, false));
        assert!(was > 100, "{was}");
        // "After" holds the trained customers' samples from the delay on
        // only: about 40% of their interventions are kept.
        let kept = is as f64 / was as f64;
        assert!((0.3..0.5).contains(&kept), "{was} -> {is}");
        // Everything else is the same fleet.
        for (a, b) in plain.messages().zip(cut.messages()) {
            assert_eq!(a.batch.samples.len(), b.batch.samples.len());
            for (x, y) in a.batch.samples.iter().zip(&b.batch.samples) {
                assert_eq!(
                    (x.cycles, x.state, x.event_time_ms),
                    (y.cycles, y.state, y.event_time_ms)
                );
                assert!(y.manual_interventions <= x.manual_interventions);
            }
        }
    }
}
