//! The simulator's promises, checked on generated fleets: determinism,
//! event-time order, valid payloads, believable samples, and the signature of
//! every customer profile.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use fleetpulse_proto::v1::MachineState;
use fleetpulse_proto::{Limits, TopicIds, decode_and_validate};
use fleetpulse_sim::calendar::{DAY_MS, weekday};
use fleetpulse_sim::{
    ADVANCED_FEATURES, BASIC_FEATURES, DayTruth, EventTime, Fleet, FleetSpec, GroundTruth, Profile,
};

fn small() -> FleetSpec {
    FleetSpec {
        customers: 6,
        devices: 36,
        days: 8,
        seed: 7,
        ..FleetSpec::default()
    }
}

#[test]
fn same_spec_gives_the_same_bytes_and_another_seed_others() {
    let spec = small();
    let a = Fleet::generate(&spec);
    let b = Fleet::generate(&spec);
    assert!(a.encoded_messages().eq(b.encoded_messages()));
    let other = Fleet::generate(&FleetSpec { seed: 8, ..spec });
    assert!(!a.encoded_messages().eq(other.encoded_messages()));
}

#[test]
fn messages_are_event_time_ordered_and_devices_interleaved() {
    let spec = small();
    let fleet = Fleet::generate(&spec);
    let mut last_publish = 0;
    let mut devices_in_slot = HashSet::new();
    let mut slots = 0;
    for message in fleet.messages() {
        let publish = message.publish_time();
        assert!(publish >= last_publish, "{} before {last_publish}", publish);
        if publish != last_publish {
            devices_in_slot.clear();
            slots += 1;
        }
        assert!(
            devices_in_slot.insert(message.batch.device_id.clone()),
            "one message per device per slot"
        );
        last_publish = publish;
        let times: Vec<EventTime> = message
            .batch
            .samples
            .iter()
            .map(|s| s.event_time_ms as EventTime)
            .collect();
        assert!(
            times
                .windows(2)
                .all(|w| w[1] == w[0] + spec.sample_interval_ms)
        );
        assert!(
            times.iter().all(
                |t| (t - spec.start).is_multiple_of(spec.sample_interval_ms) && *t < spec.end()
            )
        );
        assert_eq!(times.len(), spec.samples_per_batch as usize);
    }
    assert_eq!(slots, u64::from(spec.days) * 24, "one slot per hour");
}

#[test]
fn every_batch_validates() {
    let fleet = Fleet::generate(&small());
    let limits = Limits::default();
    let mut count = 0;
    for (topic, payload) in fleet.encoded_messages() {
        let ids = TopicIds::parse(&topic).unwrap();
        decode_and_validate(&ids, &payload, &limits).unwrap_or_else(|e| panic!("{topic}: {e}"));
        count += 1;
    }
    assert_eq!(count, fleet.message_count());
}

#[test]
fn sequences_start_at_one_and_step_by_one() {
    let fleet = Fleet::generate(&small());
    let mut next: HashMap<String, u64> = HashMap::new();
    for message in fleet.messages() {
        let expected = next.entry(message.batch.device_id.clone()).or_insert(1);
        assert_eq!(
            message.batch.sequence, *expected,
            "{}",
            message.batch.device_id
        );
        *expected += 1;
    }
}

#[test]
fn samples_look_like_machines() {
    let fleet = Fleet::generate(&small());
    let mut last: HashMap<String, (f64, f64, f64)> = HashMap::new();
    for message in fleet.messages() {
        let device = &message.batch.device_id;
        for sample in &message.batch.samples {
            let state = MachineState::try_from(sample.state).unwrap();
            let counters = (
                sample.cumulative_operating_hours,
                sample.cumulative_idle_hours,
                sample.cumulative_fuel_used_litres,
            );
            match last.get(device) {
                None => {
                    // The power-on heartbeat.
                    assert_eq!(state, MachineState::Off, "{device}");
                    assert_eq!((sample.cycles, sample.manual_interventions), (0, 0));
                    assert_eq!(sample.output_units, 0.0);
                    assert!(sample.operator_id.is_empty() && sample.features.is_empty());
                    assert!(counters.0 > 0.0, "a prior machine age");
                }
                Some(before) => {
                    assert!(
                        counters.0 >= before.0 && counters.1 >= before.1 && counters.2 >= before.2
                    );
                    assert!(
                        counters.1 - before.1 <= counters.0 - before.0 + 1e-9,
                        "idle is part of operating"
                    );
                }
            }
            last.insert(device.clone(), counters);
            if state == MachineState::Off {
                assert!(sample.operator_id.is_empty(), "nobody logged in when OFF");
                assert_eq!(sample.cycles, 0);
            } else {
                assert!(!sample.operator_id.is_empty(), "{state:?} has an operator");
            }
            for f in &sample.features {
                assert!(f.active_seconds > 0);
                assert!(
                    BASIC_FEATURES.contains(&f.feature.as_str())
                        || ADVANCED_FEATURES.contains(&f.feature.as_str()),
                    "{}",
                    f.feature
                );
            }
        }
    }
}

/// One pass over a mid-sized fleet, keeping what the profile tests need.
struct Observed {
    fleet: Fleet,
    rows: Vec<DayTruth>,
    truth: GroundTruth,
    /// Per device: first and last sample time.
    seen: HashMap<String, (EventTime, EventTime)>,
    /// Per device: samples from `parked_from` on that were not OFF, or did work.
    parked_violations: HashMap<String, u64>,
    /// Per operator: operating hours they were logged in for, before the
    /// customer's turn, and samples from the turn on.
    operators: HashMap<String, (f64, u64)>,
    /// Per customer: FAULT-state samples before and after its turn.
    fault_states: HashMap<String, (u64, u64)>,
    /// Per customer: operating hours on weekdays and on Sundays.
    weekly: HashMap<String, (f64, f64)>,
    /// Sum of interval cycles over all samples.
    cycles: u64,
}

fn observed() -> &'static Observed {
    static OBSERVED: OnceLock<Observed> = OnceLock::new();
    OBSERVED.get_or_init(|| {
        let spec = FleetSpec {
            customers: 6,
            devices: 120,
            days: 60,
            seed: 42,
            ..FleetSpec::default()
        };
        let fleet = Fleet::generate(&spec);
        let mut o = Observed {
            fleet: fleet.clone(),
            rows: Vec::new(),
            truth: GroundTruth::default(),
            seen: HashMap::new(),
            parked_violations: HashMap::new(),
            operators: HashMap::new(),
            fault_states: HashMap::new(),
            weekly: HashMap::new(),
            cycles: 0,
        };
        let mut last_hours: HashMap<String, f64> = HashMap::new();
        for message in fleet.messages() {
            o.truth.observe(&message.batch);
            let batch = &message.batch;
            let device = fleet.device(&batch.device_id).unwrap();
            let customer = fleet.customer_of(device);
            let turn = customer.turn_at.unwrap_or(EventTime::MAX);
            for sample in &batch.samples {
                let at = sample.event_time_ms as EventTime;
                let seen = o.seen.entry(batch.device_id.clone()).or_insert((at, at));
                seen.1 = at;
                let hours = sample.cumulative_operating_hours;
                let delta = last_hours
                    .insert(batch.device_id.clone(), hours)
                    .map_or(0.0, |h| hours - h);
                o.cycles += u64::from(sample.cycles);
                if device.parked_from.is_some_and(|p| at >= p)
                    && (sample.state != MachineState::Off as i32
                        || delta > 0.0
                        || sample.cycles > 0)
                {
                    *o.parked_violations
                        .entry(batch.device_id.clone())
                        .or_default() += 1;
                }
                if !sample.operator_id.is_empty() {
                    let entry = o.operators.entry(sample.operator_id.clone()).or_default();
                    if at < turn {
                        entry.0 += delta;
                    } else {
                        entry.1 += 1;
                    }
                }
                if sample.state == MachineState::Fault as i32 {
                    let entry = o.fault_states.entry(customer.id.clone()).or_default();
                    if at < turn {
                        entry.0 += 1;
                    } else {
                        entry.1 += 1;
                    }
                }
                let local = at as i64 + i64::from(customer.utc_offset_hours) * 3_600_000;
                let week = o.weekly.entry(customer.id.clone()).or_default();
                match weekday(local.div_euclid(DAY_MS as i64)) {
                    0..=4 => week.0 += delta,
                    6 => week.1 += delta,
                    _ => {}
                }
            }
        }
        o.rows = o.truth.rows();
        o
    })
}

impl Observed {
    fn customer(&self, profile: Profile) -> &fleetpulse_sim::Customer {
        self.fleet
            .customers()
            .iter()
            .find(|c| c.profile == profile)
            .unwrap()
    }

    /// Sum of `field` over the customer's rows with day index in `days`
    /// (counted from the fleet start).
    fn sum(
        &self,
        customer: &str,
        days: std::ops::Range<u32>,
        field: impl Fn(&DayTruth) -> f64,
    ) -> f64 {
        let start = self.fleet.spec().start;
        self.rows
            .iter()
            .filter(|r| r.customer == customer)
            .filter(|r| days.contains(&(((r.day_start_ms - start) / DAY_MS) as u32)))
            .map(field)
            .sum()
    }

    /// Operating hours in the 14 days from `turn` over the 14 days before it.
    fn usage_ratio(&self, customer: &str, turn: u32) -> f64 {
        let hours = |r: &DayTruth| r.operating_hours;
        self.sum(customer, turn..turn + 14, hours) / self.sum(customer, turn - 14..turn, hours)
    }
}

#[test]
fn ground_truth_adds_up() {
    let o = observed();
    let rows_cycles: u64 = o.rows.iter().map(|r| r.cycles).sum();
    assert_eq!(rows_cycles, o.cycles);
    let samples: u64 = o.rows.iter().map(|r| r.samples).sum();
    assert_eq!(samples, o.fleet.sample_count());
    let messages: u64 = o.rows.iter().map(|r| r.messages).sum();
    assert_eq!(messages, o.fleet.message_count());
    for c in o.fleet.customers() {
        let first = o
            .fleet
            .devices_of(c)
            .iter()
            .filter_map(|d| d.online_from)
            .min();
        assert_eq!(o.truth.activation(&c.id), first, "{}", c.id);
    }
}

#[test]
fn weekends_are_quiet() {
    let o = observed();
    for (customer, (weekdays, sundays)) in &o.weekly {
        // Five weekdays against one Sunday, per week.
        assert!(
            *sundays < weekdays / 5.0 * 0.2,
            "{customer}: {weekdays} vs {sundays}"
        );
    }
}

#[test]
fn healthy_growing_onboards_fast_grows_and_adopts() {
    let o = observed();
    let c = o.customer(Profile::HealthyGrowing);
    let start = o.fleet.spec().start;
    for d in o.fleet.devices_of(c) {
        let (first, _) = o.seen[&d.id];
        assert!(
            first < start + 3 * DAY_MS + 3_600_000,
            "{} online late",
            d.id
        );
    }
    let ratio = o.usage_ratio(&c.id, 30);
    assert!(ratio > 0.9, "no drop: {ratio}");
    let advanced: Vec<_> = o
        .rows
        .iter()
        .filter(|r| r.customer == c.id)
        .map(|r| r.advanced_features_used)
        .collect();
    let advanced_late = advanced.iter().skip(45).max().copied();
    assert!(advanced_late >= Some(3), "{advanced_late:?}");
    let advanced_early = advanced.iter().take(3).max().copied();
    assert!(advanced_early < advanced_late, "adopted progressively");
    let faults = o.sum(&c.id, 0..60, |r| r.fault_count as f64);
    let samples = o.sum(&c.id, 0..60, |r| r.samples as f64);
    assert!(
        faults / samples < 0.002,
        "few faults: {faults} in {samples}"
    );
}

#[test]
fn slow_onboarding_brings_devices_online_over_weeks_and_never_all() {
    let o = observed();
    let c = o.customer(Profile::SlowOnboarding);
    let firsts: Vec<EventTime> = o
        .fleet
        .devices_of(c)
        .iter()
        .filter_map(|d| o.seen.get(&d.id))
        .map(|s| s.0)
        .collect();
    assert!(firsts.len() < c.contract.devices_purchased as usize);
    let spread = firsts.iter().max().unwrap() - firsts.iter().min().unwrap();
    assert!(
        spread >= 10 * DAY_MS,
        "gradual rollout: {} days",
        spread / DAY_MS
    );
    assert!(
        firsts.iter().all(|&t| t <= c.turn_at.unwrap()),
        "nothing new after the turn day"
    );
    let max_reporting = o
        .rows
        .iter()
        .filter(|r| r.customer == c.id)
        .map(|r| r.reporting_devices)
        .max()
        .unwrap();
    assert!(max_reporting < c.contract.devices_purchased);
    assert!(
        o.rows
            .iter()
            .filter(|r| r.customer == c.id)
            .all(|r| r.advanced_features_used <= 1)
    );
}

#[test]
fn declining_usage_drops_over_a_quarter_after_its_turn() {
    let o = observed();
    let c = o.customer(Profile::DecliningUsage);
    let turn = c.turn_day.unwrap();
    let ratio = o.usage_ratio(&c.id, turn);
    assert!(ratio < 0.75, "2 weeks after / 2 weeks before = {ratio}");
    let stable = o.usage_ratio(&c.id, turn - 14);
    assert!(stable > 0.85, "healthy before the turn: {stable}");
}

#[test]
fn champion_works_most_then_never_appears_again() {
    let o = observed();
    let c = o.customer(Profile::ChampionLeaves);
    let champion = c.champion.as_ref().unwrap();
    let (champion_hours, after) = o.operators[champion];
    assert_eq!(after, 0, "the champion never appears from the turn day on");
    for op in &c.operators {
        if op != champion {
            let hours = o.operators.get(op).map_or(0.0, |e| e.0);
            assert!(
                hours < champion_hours,
                "{op} {hours} >= champion {champion_hours}"
            );
        }
    }
    let ratio = o.usage_ratio(&c.id, c.turn_day.unwrap());
    assert!(ratio < 0.95, "usage drops somewhat: {ratio}");
}

#[test]
fn devices_go_dark_and_others_park_with_heartbeats() {
    let o = observed();
    let c = o.customer(Profile::DevicesGoingDark);
    let turn_at = c.turn_at.unwrap();
    let end = o.fleet.spec().end();
    let devices = o.fleet.devices_of(c);
    let dark: Vec<_> = devices
        .iter()
        .filter(|d| {
            let (_, last) = o.seen[&d.id];
            last < turn_at + 3 * DAY_MS && last < end - DAY_MS
        })
        .collect();
    assert!(
        dark.len() * 4 >= devices.len(),
        "{} of {} went dark",
        dark.len(),
        devices.len()
    );
    assert!(
        dark.iter()
            .all(|d| d.dark_from.is_some_and(|t| t >= turn_at))
    );
    let parked: Vec<_> = devices.iter().filter(|d| d.parked_from.is_some()).collect();
    assert!(!parked.is_empty());
    for d in parked {
        assert_eq!(
            o.parked_violations.get(&d.id),
            None,
            "{} worked while parked",
            d.id
        );
        assert!(
            o.seen[&d.id].1 >= end - 3_600_000,
            "{} keeps sending heartbeats",
            d.id
        );
    }
}

#[test]
fn fault_prone_faults_rise_sharply_with_downtime() {
    let o = observed();
    let c = o.customer(Profile::FaultProne);
    let turn = c.turn_day.unwrap();
    let faults = |days| o.sum(&c.id, days, |r| r.fault_count as f64);
    let (before, after) = (faults(turn - 14..turn), faults(turn..turn + 14));
    assert!(after > 5.0 * before.max(1.0), "faults {before} -> {after}");
    let (fault_before, fault_after) = o.fault_states[&c.id];
    assert!(
        fault_after > 5 * fault_before.max(1),
        "FAULT samples {fault_before} -> {fault_after}"
    );
}

#[test]
fn ground_truth_round_trips_through_csv() {
    let o = observed();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ground-truth.csv");
    o.truth.write_csv(&path).unwrap();
    assert_eq!(GroundTruth::read_csv(&path).unwrap(), o.rows);
}

#[test]
fn a_replaced_unit_restarts_its_sequence_and_the_truth_loses_nothing() {
    let plain = small();
    let spec = FleetSpec {
        unit_replacements: 6,
        ..plain.clone()
    };
    let fleet = Fleet::generate(&spec);
    // Per device: (epoch, sequence) in publish order.
    let mut units: HashMap<(String, String), Vec<(u64, u64)>> = HashMap::new();
    for message in fleet.messages() {
        let b = &message.batch;
        assert!(b.unit_epoch > 0, "every unit sends its epoch");
        let device = fleet.device(&b.device_id).unwrap();
        if device.replaced_from == Some(b.samples[0].event_time_ms as u64) {
            assert_eq!(b.sequence, 1, "{}", b.device_id);
        }
        units
            .entry((b.customer_id.clone(), b.device_id.clone()))
            .or_default()
            .push((b.unit_epoch, b.sequence));
    }
    let mut replaced = 0;
    for (device, seen) in &units {
        let epochs: Vec<u64> = seen.iter().map(|(e, _)| *e).collect();
        assert!(epochs.is_sorted(), "{device:?}: epochs never go down");
        let mut expected = 0;
        for (i, &(epoch, sequence)) in seen.iter().enumerate() {
            expected = if i > 0 && epoch > seen[i - 1].0 {
                replaced += 1;
                1
            } else {
                expected + 1
            };
            assert_eq!(sequence, expected, "{device:?}");
        }
    }
    let planned = fleet
        .devices()
        .iter()
        .filter(|d| d.replaced_from.is_some())
        .count();
    assert_eq!(replaced, planned);
    assert!(
        planned >= 4,
        "most of the 6 devices picked are online: {planned}"
    );
    // The same machines did the same work: the ground truth (which counts a
    // new unit's counters restarted from 0 as work) equals the fleet's
    // without replacements, row by row.
    let without = Fleet::generate(&plain).ground_truth().rows();
    let with = fleet.ground_truth().rows();
    assert_eq!(with.len(), without.len());
    for (a, b) in with.iter().zip(&without) {
        assert_eq!((&a.customer, &a.day), (&b.customer, &b.day));
        assert!(
            (a.operating_hours - b.operating_hours).abs() < 1e-6,
            "{a:?} {b:?}"
        );
        assert!((a.idle_hours - b.idle_hours).abs() < 1e-6, "{a:?} {b:?}");
        assert!((a.fuel_litres - b.fuel_litres).abs() < 1e-6, "{a:?} {b:?}");
        assert_eq!(
            (a.cycles, a.samples, a.messages, a.active_devices),
            (b.cycles, b.samples, b.messages, b.active_devices)
        );
    }
}
