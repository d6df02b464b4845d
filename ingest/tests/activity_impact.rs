//! The impact estimate of each CS activity recovers what the simulator
//! planted: on fleets of several seeds (72 customers of 5 machines, 64
//! days), trainings that lift the chance of a shift by 30% from three days
//! after them, and webinars planted with no effect at all, go through the
//! engine; the difference-in-differences estimate
//! (`fleetpulse_engine::kpi::activity_impact`) from the engine's daily KPIs
//! must hold the planted effect of the trainings in its 95% interval, and
//! find no significant effect of webinars. The planted effect on operating
//! hours is the simulator's own expected value (`Fleet::expected_effect`),
//! not a number written here.
//!
//! The intervals are wide (about -0.3 to +0.5 around the estimate): the
//! simulated customers' own courses (a fleet coming online, usage falling
//! after a turn day) differ far more than a training moves them, and only
//! a quarter of the customers are left as controls. The printed figures are
//! in docs/CUSTOMER_SUCCESS.md.

use std::collections::BTreeMap;
use std::path::Path;

use fleetpulse::convert::Converter;
use fleetpulse::customers::CheckContext;
use fleetpulse_engine::kpi::activity_impact::{DailyUsage, Impact, impact};
use fleetpulse_engine::kpi::touchpoint::{Touchpoint, TouchpointKind};
use fleetpulse_engine::run::run_batches;
use fleetpulse_engine::{EngineConfig, Output};
use fleetpulse_sim::{Fleet, FleetSpec, IMPACT_WINDOW_DAYS, PlantedActivity};

fn spec(seed: u64) -> FleetSpec {
    FleetSpec {
        customers: 72,
        devices: 72 * 5,
        days: 64,
        seed,
        activities: vec![
            PlantedActivity {
                kind: "training".into(),
                share_percent: 40,
                lift_percent: 30,
                delay_days: 3,
                decision_maker: false,
            },
            PlantedActivity {
                kind: "webinar".into(),
                share_percent: 35,
                lift_percent: 0,
                delay_days: 0,
                decision_maker: false,
            },
        ],
        ..FleetSpec::default()
    }
}

/// The estimates for `seed`, and the planted effect of its trainings (the
/// mean of the simulator's expected effect over them).
fn estimate(seed: u64) -> (Vec<Impact>, f64) {
    let fleet = Fleet::generate(&spec(seed));
    let customers = fleetpulse::sim::customers_file(&fleet);
    let text = customers.to_toml();
    let specs = customers
        .specs(Path::new("sim.toml"), &text, &CheckContext::default())
        .unwrap();
    let segments: BTreeMap<String, fleetpulse_engine::Segment> = specs
        .iter()
        .map(|(id, s)| (id.clone(), s.segment))
        .collect();
    let config = EngineConfig {
        customers: specs,
        ..EngineConfig::default()
    };
    let mut converter = Converter::new(config.features.clone());
    let batches: Vec<_> = fleet.messages().map(|m| converter.batch(m.batch)).collect();
    let outcome = run_batches(config, 2, 2 * 3_600_000, batches).unwrap();

    let mut usage: BTreeMap<String, DailyUsage> = BTreeMap::new();
    for o in &outcome.outputs {
        let Some(customer) = o.customer() else {
            continue;
        };
        let u = usage
            .entry(customer.to_string())
            .or_insert_with(|| DailyUsage {
                customer: customer.clone(),
                segment: segments[&**customer],
                ..DailyUsage::default()
            });
        match o {
            Output::Customer(k) if &*k.window == "1d" => {
                u.hours.insert(k.window_start, k.totals.operating_hours);
            }
            Output::Health(h) => {
                u.stages.insert(h.window_start, h.stage);
            }
            _ => {}
        }
    }
    let mut touchpoints = Vec::new();
    let mut planted = Vec::new();
    for c in fleet.customers() {
        for t in &c.touchpoints {
            touchpoints.push(Touchpoint {
                customer: c.id.as_str().into(),
                kind: TouchpointKind::parse(&t.kind).unwrap(),
                at: t.at,
                csm: "sim".into(),
                ..Touchpoint::default()
            });
            if t.kind == "training" {
                planted.push(fleet.expected_effect(c, t, IMPACT_WINDOW_DAYS));
            }
        }
    }
    let usage: Vec<DailyUsage> = usage.into_values().collect();
    let estimates = impact(&touchpoints, &usage, IMPACT_WINDOW_DAYS);
    let planted = planted.iter().sum::<f64>() / planted.len() as f64;
    (estimates, planted)
}

#[test]
fn the_estimate_recovers_planted_effects_on_several_seeds() {
    for seed in [1, 2, 3] {
        let (estimates, planted) = estimate(seed);
        let of = |kind| *estimates.iter().find(|i| i.kind == kind).unwrap();
        let training = of(TouchpointKind::Training);
        let webinar = of(TouchpointKind::Webinar);
        println!(
            "seed {seed}: training planted {planted:+.3}, estimated {:+.3} [{:+.3}, {:+.3}] n = {} \
             ({} left out, {:.1} controls/case); webinar {:+.3} [{:+.3}, {:+.3}] n = {}",
            training.effect,
            training.ci_low.unwrap(),
            training.ci_high.unwrap(),
            training.cases,
            training.left_out,
            training.controls,
            webinar.effect,
            webinar.ci_low.unwrap(),
            webinar.ci_high.unwrap(),
            webinar.cases,
        );
        assert!(training.cases >= 5, "seed {seed}: {training:?}");
        assert!(webinar.cases >= 5, "seed {seed}: {webinar:?}");
        let (lo, hi) = (training.ci_low.unwrap(), training.ci_high.unwrap());
        assert!(
            lo <= planted && planted <= hi,
            "seed {seed}: planted {planted} outside [{lo}, {hi}]"
        );
        assert!(!webinar.significant(), "seed {seed}: {webinar:?}");
    }
}
