//! The customer-success engine on the simulator's fleet: each at-risk
//! profile raises its rule for the right customer near the day its problem
//! begins, healthy customers raise none, episodes resolve once; time to
//! value, milestone dates and lifecycle stages equal values computed
//! independently from what the simulator sent.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use fleetpulse::customers::CheckContext;
use fleetpulse_engine::config::DAY_MS;
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::{AlertRecord, HealthRecord, MilestoneRecord, Output};
use fleetpulse_sim::{Fleet, FleetSpec};
use support::truth::signature;

fn spec() -> FleetSpec {
    FleetSpec {
        customers: 6,
        devices: 120,
        days: 75,
        seed: 42,
        ..FleetSpec::default()
    }
}

struct Run {
    fleet: Fleet,
    outputs: Vec<Output>,
}

fn run(spec: &FleetSpec) -> Run {
    let fleet = Fleet::generate(spec);
    let customers = fleetpulse::sim::customers_file(&fleet);
    let text = customers.to_toml();
    let specs = customers
        .specs(
            Path::new("sim-customers.toml"),
            &text,
            &CheckContext::default(),
        )
        .unwrap();
    let outcome = fleetpulse::sim::through_engine(&fleet, specs, 2, |_| true).unwrap();
    assert!(outcome.late.is_empty());
    Run {
        fleet,
        outputs: outcome.outputs,
    }
}

fn alerts(run: &Run) -> Vec<AlertRecord> {
    let mut alerts: Vec<AlertRecord> = run
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Alert(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    alerts.sort_by_key(|a| {
        (
            a.customer.clone(),
            a.rule,
            a.episode,
            a.resolved_at.is_some(),
        )
    });
    alerts
}

fn day_of(fleet: &Fleet, at: u64) -> f64 {
    (at as f64 - fleet.spec().start as f64) / DAY_MS as f64
}

/// How many days after the turn day a rule may fire. Usage and champion
/// rules compare a 7-day window with a baseline, so they need about a week;
/// a stalled rollout shows when the fleet-online milestone falls due.
fn tolerance_days(rule: Rule) -> (f64, f64) {
    match rule {
        Rule::UsageDrop => (0.0, 14.0),
        Rule::ChampionLost => (0.0, 10.0),
        Rule::DevicesDark => (0.0, 5.0),
        Rule::FaultSpike => (0.0, 5.0),
        Rule::OnboardingStalled => (-10.0, 14.0),
        _ => (0.0, 14.0),
    }
}

#[test]
fn each_profile_raises_its_rule_near_its_turn_and_healthy_customers_none() {
    let run = run(&spec());
    check_profiles(&run.fleet, &alerts(&run));
}

/// The same, through the whole pipeline: simulator -> real mosquitto ->
/// service -> SQLite, alerts read back from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_full_pipeline_profiles_raise_their_rules() {
    let mosquitto = support::servers::Mosquitto::start_with_config(include_str!(
        "../../deploy/mosquitto/no-loss.conf"
    ));
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::generate(&spec());
    let customers = dir.path().join("customers.toml");
    fleetpulse::sim::write_files(&fleet, None, Some(&customers)).unwrap();
    let store = dir.path().join("kpi.sqlite");
    let mut config = fleetpulse::config::ServiceConfig::default();
    config.mqtt.host = mosquitto.host().to_string();
    config.mqtt.port = mosquitto.port();
    config.mqtt.client_id = "fleetpulse-cs".into();
    config.engine.workers = 2;
    config.customers = Some(fleetpulse::config::CustomersRef { file: customers });
    config.sinks = vec![fleetpulse::sinks::SinkConfig::Sqlite(
        fleetpulse::sinks::sqlite::SqliteConfig {
            path: store.clone(),
        },
    )];
    let publish = fleetpulse_sim::PublishOptions {
        host: mosquitto.host().to_string(),
        port: mosquitto.port(),
        client_id: "fleetpulse-cs-sim".into(),
        ..fleetpulse_sim::PublishOptions::default()
    };
    let driven = fleetpulse::drive::drive(config, &fleet, publish)
        .await
        .unwrap();
    assert_eq!(driven.metrics.rejected_total(), 0);
    let store = fleetpulse::sinks::sqlite::SqliteStore::open(&store).unwrap();
    // The store keeps one row per episode with its latest state: expand it
    // back into transitions.
    let mut transitions = Vec::new();
    for a in store.alerts(false).unwrap() {
        let mut open = a.clone();
        open.status = AlertStatus::Open;
        open.resolved_at = None;
        transitions.push(open);
        if a.status == AlertStatus::Resolved {
            transitions.push(a);
        }
    }
    check_profiles(&fleet, &transitions);
    assert!(!store.latest_health().unwrap().is_empty());
}

mod support;

fn check_profiles(fleet: &Fleet, alerts: &[AlertRecord]) {
    let run = Run {
        fleet: fleet.clone(),
        outputs: Vec::new(),
    };
    for a in alerts {
        println!(
            "{:<26} {:<20} #{} {:<8} day {:>5.1}{} {}",
            a.customer,
            a.rule.as_str(),
            a.episode,
            a.status.as_str(),
            day_of(&run.fleet, a.opened_at),
            a.resolved_at
                .map(|r| format!(" -> {:.1}", day_of(&run.fleet, r)))
                .unwrap_or_default(),
            a.evidence
        );
    }
    for customer in run.fleet.customers() {
        let mine: Vec<&AlertRecord> = alerts
            .iter()
            .filter(|a| *a.customer == *customer.id)
            .collect();
        match signature(customer.profile) {
            None => assert!(
                mine.is_empty(),
                "{} ({}) is healthy but raised {:?}",
                customer.id,
                customer.profile.name(),
                mine.iter().map(|a| a.rule.as_str()).collect::<Vec<_>>()
            ),
            Some(rule) => {
                let turn = f64::from(customer.turn_day.expect("at-risk profiles turn"));
                let (early, late) = tolerance_days(rule);
                let opened: Vec<f64> = mine
                    .iter()
                    .filter(|a| a.rule == rule && a.status == AlertStatus::Open)
                    .map(|a| day_of(&run.fleet, a.opened_at))
                    .collect();
                assert!(
                    opened
                        .iter()
                        .any(|d| *d >= turn + early && *d <= turn + late),
                    "{} ({}): {} should open within [{}, {}] days of turn day {turn}; opened at {opened:?}",
                    customer.id,
                    customer.profile.name(),
                    rule.as_str(),
                    early,
                    late
                );
            }
        }
    }
    // Every episode opens once and resolves at most once. One raised from
    // the open day opens provisionally first, and its day's close confirms
    // it; none is retracted (these fleets send in time).
    let mut transitions: HashMap<(String, Rule, u32), Vec<(AlertStatus, bool)>> = HashMap::new();
    for a in alerts {
        transitions
            .entry((a.customer.to_string(), a.rule, a.episode))
            .or_default()
            .push((a.status, a.provisional));
    }
    let (open, provisional, resolved) = (
        (AlertStatus::Open, false),
        (AlertStatus::Open, true),
        (AlertStatus::Resolved, false),
    );
    for (key, statuses) in transitions {
        assert!(
            [
                &[open][..],
                &[open, resolved],
                &[provisional, open],
                &[provisional, open, resolved]
            ]
            .contains(&&statuses[..]),
            "{key:?}: {statuses:?}"
        );
    }
}

#[test]
fn time_to_value_milestones_and_stages_match_the_simulated_fleet() {
    let run = run(&spec());
    let fleet = &run.fleet;
    // Independently of the engine: per customer, per UTC day, operating
    // hours and the devices seen so far, from what the simulator sent.
    let truth = fleet.ground_truth();
    let facts: HashMap<String, u64> = truth
        .customers()
        .into_iter()
        .map(|c| (c.customer, c.activation_ms))
        .collect();
    let mut first_seen: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for m in fleet.messages() {
        let day_end = (m.batch.samples[0].event_time_ms as u64 / DAY_MS + 1) * DAY_MS;
        first_seen
            .entry(m.batch.customer_id.clone())
            .or_default()
            .entry(m.batch.device_id.clone())
            .or_insert(day_end);
    }
    let mut hours: HashMap<String, BTreeMap<u64, f64>> = HashMap::new();
    for row in truth.rows() {
        hours
            .entry(row.customer.clone())
            .or_default()
            .insert(row.day_start_ms + DAY_MS, row.operating_hours);
    }

    let mut health: Vec<&HealthRecord> = Vec::new();
    let mut milestones: Vec<&MilestoneRecord> = Vec::new();
    for output in &run.outputs {
        match output {
            Output::Health(h) if !h.provisional => health.push(h),
            Output::Milestone(m) => milestones.push(m),
            _ => {}
        }
    }

    for customer in fleet.customers() {
        let activation = facts[&customer.id];
        // first_1000_operating_hours: the end of the day cumulative hours reach 1000.
        let mut cumulative = 0.0;
        let hours_day = hours[&customer.id]
            .iter()
            .find(|(_, h)| {
                cumulative += **h;
                cumulative >= 1000.0 - 1e-9
            })
            .map(|(end, _)| *end);
        // fleet_online: the end of the day 90% of purchased devices have reported.
        let need = (0.9 * f64::from(customer.contract.devices_purchased)).ceil() as usize;
        let mut days: Vec<u64> = first_seen[&customer.id].values().copied().collect();
        days.sort();
        let online_day = days.get(need.saturating_sub(1)).copied();

        let last = |name: &str| {
            milestones
                .iter()
                .filter(|m| *m.customer == *customer.id && &*m.milestone == name)
                .max_by_key(|m| m.window_end)
                .copied()
        };
        let hours_milestone = last("first_1000_operating_hours").expect("milestone records");
        assert_eq!(
            hours_milestone.reached_at, hours_day,
            "{}: first_1000_operating_hours",
            customer.id
        );
        assert_eq!(hours_milestone.due_at, activation + 21 * DAY_MS);
        let online = last("fleet_online").unwrap();
        assert_eq!(
            online.reached_at, online_day,
            "{}: fleet_online",
            customer.id
        );

        let latest = health
            .iter()
            .filter(|h| *h.customer == *customer.id)
            .max_by_key(|h| h.window_end)
            .unwrap();
        let ttv = hours_day.map(|d| (d - activation) as f64 / DAY_MS as f64);
        assert_eq!(
            latest.time_to_value_days, ttv,
            "{}: time to value",
            customer.id
        );

        // Stage on every day, from the same facts.
        for h in health.iter().filter(|h| *h.customer == *customer.id) {
            let to_renewal =
                (customer.contract.renewal_ms as f64 - h.window_end as f64) / DAY_MS as f64;
            let value = hours_day.is_some_and(|d| d <= h.window_end);
            let reached = milestones
                .iter()
                .filter(|m| *m.customer == *customer.id && m.window_end == h.window_end)
                .all(|m| m.reached_at.is_some());
            let expected = if to_renewal <= 90.0 {
                "renew"
            } else if !value {
                "onboard"
            } else if reached {
                "grow"
            } else {
                "adopt"
            };
            assert_eq!(
                h.stage.as_str(),
                expected,
                "{} on {}",
                customer.id,
                h.window_end
            );
        }
        println!(
            "{:<26} ttv {:?} days, stage {}",
            customer.id,
            ttv,
            latest.stage.as_str()
        );
    }
}
