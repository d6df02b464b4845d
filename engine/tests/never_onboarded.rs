//! A customer in the customers file whose fleet never sends anything: the
//! engine closes its days anyway, and once the onboarding days have passed
//! since its contract started (or since the engine began listening, for a
//! contract older than that) opens `onboarding_stalled` and gives it a red
//! health record a day, so it and its ARR count in the portfolio, at risk.
//! Its first telemetry resolves the episode. Checked value by value against
//! the dates the thresholds imply, across worker counts, a restart, and a
//! run without the silent customer (which must not change the others').

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::T0;
use fleetpulse_engine::config::{DAY_MS, HOUR_MS};
use fleetpulse_engine::kpi::health::{Band, HealthRecord, Stage};
use fleetpulse_engine::kpi::risk::{AlertRecord, AlertStatus, Rule};
use fleetpulse_engine::run::run_batches_keeping;
use fleetpulse_engine::{
    Contract, CustomerSpec, DeviceBatch, EngineConfig, JourneyBoard, MachineState, Output, Sample,
    Segment,
};

const LATENESS: u64 = 2 * HOUR_MS;
const GHOST_ARR: f64 = 250_000.0;
const ACME_ARR: f64 = 120_000.0;
/// The default onboarding days.
const ONBOARDING_DAYS: u64 = 45;

fn spec(id: &str, arr: f64, start: u64, devices: u32) -> CustomerSpec {
    let contract = Contract {
        arr,
        start,
        renewal: start + 2 * 365 * DAY_MS,
        devices_purchased: devices,
        operator_seats: 4,
    };
    let spec = CustomerSpec::new(id, Segment::HighTouch, contract);
    assert_eq!(u64::from(spec.thresholds.onboarding_days), ONBOARDING_DAYS);
    spec
}

/// acme (two devices, reporting from T0), and `ghost` if given.
fn config(ghost: Option<CustomerSpec>) -> EngineConfig {
    let mut config = EngineConfig::default();
    config
        .customers
        .insert("acme".into(), spec("acme", ACME_ARR, T0, 2));
    if let Some(ghost) = ghost {
        config.customers.insert(ghost.id.to_string(), ghost);
    }
    config
}

/// Every two hours from `from_hour` to `to_hour` (exclusive), a reading of
/// each of `customer`'s two devices.
fn fleet(customer: &str, from_hour: u64, to_hour: u64) -> Vec<DeviceBatch> {
    (from_hour..to_hour)
        .step_by(2)
        .flat_map(|h| {
            (0..2).map(move |d| {
                let sample = Sample {
                    at: T0 + h * HOUR_MS + 7 * 60_000,
                    state: MachineState::Running,
                    operating_hours: 100.0 + h as f64,
                    ..Sample::default()
                };
                common::batch(customer, &format!("d{d}"), 0, h + 1, vec![sample])
            })
        })
        .collect()
}

fn run(config: EngineConfig, workers: usize, batches: Vec<DeviceBatch>) -> Vec<Output> {
    let mut batches = batches;
    batches.sort_by_key(|b| (b.last_at(), b.customer.clone(), b.device.clone()));
    let keep = |r: &Output| !matches!(r, Output::Device(_) | Output::Customer(_));
    let outcome = run_batches_keeping(config, workers, LATENESS, batches, keep).unwrap();
    assert!(outcome.late.is_empty());
    outcome.outputs
}

fn alerts_of<'a>(records: &'a [Output], customer: &str) -> Vec<&'a AlertRecord> {
    let mut alerts: Vec<_> = (records.iter())
        .filter_map(|r| match r {
            Output::Alert(a) if &*a.customer == customer => Some(a),
            _ => None,
        })
        .collect();
    alerts.sort_by_key(|a| (a.opened_at, a.rule, a.resolved_at));
    alerts
}

/// ghost's alerts in `records` are onboarding_stalled opened at `due` and
/// resolved at `resolved`, nothing else.
fn assert_opened_then_resolved(records: &[Output], due: u64, resolved: u64) {
    let summary: Vec<_> = (alerts_of(records, "ghost").iter())
        .map(|a| (a.rule, a.status, a.opened_at, a.resolved_at))
        .collect();
    let stalled = Rule::OnboardingStalled;
    assert_eq!(
        summary,
        [
            (stalled, AlertStatus::Open, due, None),
            (stalled, AlertStatus::Resolved, due, Some(resolved)),
        ]
    );
}

fn health_of(records: &[Output], customer: &str) -> Vec<HealthRecord> {
    let mut health: Vec<_> = (records.iter())
        .filter_map(|r| match r {
            Output::Health(h) if &*h.customer == customer && !h.provisional => Some((**h).clone()),
            _ => None,
        })
        .collect();
    health.sort_by_key(|h| h.window_end);
    health
}

/// Every record but the portfolio's, in a stable order, as text.
fn journeys_of(records: &[Output], customer: &str) -> Vec<String> {
    let mut rows: Vec<String> = (records.iter())
        .filter(|r| r.customer().is_some_and(|c| &**c == customer))
        .map(|r| format!("{r:?}"))
        .collect();
    rows.sort();
    rows
}

/// The journey states a run of `data` before `cut` persisted: what a
/// restart after it restores.
fn persisted_until(
    mut config: EngineConfig,
    data: &[DeviceBatch],
    cut: u64,
) -> HashMap<fleetpulse_engine::Id, fleetpulse_engine::kpi::journey::JourneyState> {
    config.journeys = Arc::new(JourneyBoard::persisted(HashMap::new()));
    let board = config.journeys.clone();
    let first = (data.iter())
        .filter(|b| b.last_at() < cut)
        .cloned()
        .collect();
    run(config, 1, first);
    board.covered_before(cut).unwrap()
}

#[test]
fn a_fleet_that_never_reports_opens_onboarding_stalled_when_its_onboarding_days_pass() {
    // The contract starts on day 10: the engine listens from day 0.
    let start = T0 + 10 * DAY_MS;
    let ghost = spec("ghost", GHOST_ARR, start, 4);
    let days = 70;
    let data = fleet("acme", 0, days * 24);
    let mut by_workers = Vec::new();
    for workers in [1, 2] {
        let records = run(config(Some(ghost.clone())), workers, data.clone());
        let due = start + ONBOARDING_DAYS * DAY_MS;

        let alerts = alerts_of(&records, "ghost");
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let alert = alerts[0];
        assert_eq!(
            (alert.rule, alert.status, alert.opened_at, alert.episode),
            (Rule::OnboardingStalled, AlertStatus::Open, due, 1)
        );
        assert_eq!(
            (alert.stage, alert.arr_at_risk),
            (Stage::Onboard, GHOST_ARR)
        );
        assert!(
            alert.evidence.starts_with(
                "no telemetry at all in the 45 days since the contract started; \
                 0 of 4 purchased devices ever online"
            ),
            "{}",
            alert.evidence
        );

        // A red health record for every day from the one it opened on,
        // through the last day the engine closed; none before.
        let health = health_of(&records, "ghost");
        let last_day = T0 + days * DAY_MS;
        let ends: Vec<u64> = health.iter().map(|h| h.window_end).collect();
        let expected: Vec<u64> = (0..)
            .map(|d| due + d * DAY_MS)
            .take_while(|&end| end <= last_day)
            .collect();
        assert_eq!(ends, expected);
        for h in &health {
            assert_eq!(h.band, Band::Red, "{h:?}");
            assert_eq!((h.stage, h.open_alerts), (Stage::Onboard, 1));
            assert_eq!((h.arr, h.arr_at_risk), (GHOST_ARR, GHOST_ARR));
            assert_eq!(h.time_to_value_days, None);
            assert!(h.days_since_activation.is_nan(), "no activation: undefined");
            assert_eq!((h.milestones_reached, h.components.breadth), (0, 0.0));
        }

        // The portfolio counts it from then on, its ARR at risk.
        let acme_health = health_of(&records, "acme");
        for r in &records {
            let Output::Portfolio(p) = r else { continue };
            let ghost_in = ends.contains(&p.window_end);
            let acme = acme_health.iter().find(|h| h.window_end == p.window_end);
            let acme_risk = acme.map_or(0.0, |h| h.arr_at_risk);
            let (customers, arr, risk) = if ghost_in {
                (2, ACME_ARR + GHOST_ARR, acme_risk + GHOST_ARR)
            } else {
                (1, ACME_ARR, acme_risk)
            };
            assert_eq!(
                (p.customers, p.arr_total, p.arr_at_risk),
                (customers, arr, risk),
                "{p:?}"
            );
        }
        assert!(records.iter().any(|r| matches!(r, Output::Portfolio(p)
            if p.window_end == due && p.customers == 2)));

        // acme's journey is the one a run without ghost computes.
        let alone = run(config(None), workers, data.clone());
        assert_eq!(journeys_of(&records, "acme"), journeys_of(&alone, "acme"));
        by_workers.push(journeys_of(&records, "ghost"));
    }
    assert_eq!(by_workers[0], by_workers[1], "1 worker against 2");
}

#[test]
fn the_first_telemetry_resolves_it_and_onboarding_counts_from_then() {
    let start = T0 + 10 * DAY_MS;
    let ghost = spec("ghost", GHOST_ARR, start, 2);
    let due = start + ONBOARDING_DAYS * DAY_MS;
    // ghost's two devices come online on day 60 (after the alert opened).
    let first_day = 60;
    let mut data = fleet("acme", 0, 80 * 24);
    data.extend(fleet("ghost", first_day * 24, 80 * 24));
    let records = run(config(Some(ghost)), 2, data);

    let activation_day_end = T0 + (first_day + 1) * DAY_MS;
    assert_opened_then_resolved(&records, due, activation_day_end);
    // From its activation on, its health is that of a fleet at work.
    let health = health_of(&records, "ghost");
    let active: Vec<_> = (health.iter())
        .filter(|h| h.window_end >= activation_day_end)
        .collect();
    assert_eq!(active.len(), 80 - first_day as usize);
    assert!(active.iter().all(|h| h.components.breadth == 100.0));
    assert_eq!(active[0].open_alerts, 0);
    assert!(active[0].days_since_activation < 1.0);
}

/// A contract older than the deployment: the onboarding days count from the
/// first day the engine closed, not from the contract's start, and no day
/// before the telemetry is invented.
#[test]
fn a_contract_older_than_the_listening_counts_from_the_listening() {
    let ghost = spec("ghost", GHOST_ARR, T0 - 400 * DAY_MS, 3);
    let records = run(config(Some(ghost)), 1, fleet("acme", 0, 70 * 24));
    let health = health_of(&records, "ghost");
    let alerts = alerts_of(&records, "ghost");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let opened = alerts[0].opened_at;
    // The engine's first frontier falls in the first days (the run feeds
    // 256 batches at a time: about five days of acme's readings).
    assert!(
        (T0 + ONBOARDING_DAYS * DAY_MS..=T0 + (ONBOARDING_DAYS + 6) * DAY_MS).contains(&opened),
        "opened {} days after T0",
        (opened - T0) / DAY_MS
    );
    assert!(
        alerts[0]
            .evidence
            .starts_with("no telemetry at all in the 45 days since fleetpulse began listening"),
        "{}",
        alerts[0].evidence
    );
    assert_eq!(health.first().map(|h| h.window_end), Some(opened));
    assert!(health.iter().all(|h| h.window_end > T0));
}

/// Killed on day 50 and restarted from the journeys persisted then: the
/// silent customer's state (the day its tracking began, its episode) is
/// restored, and the run goes on as one without the restart.
#[test]
fn a_restart_keeps_the_silent_journey() {
    let start = T0 + 10 * DAY_MS;
    let ghost = spec("ghost", GHOST_ARR, start, 4);
    let data = fleet("acme", 0, 70 * 24);
    let whole = run(config(Some(ghost.clone())), 1, data.clone());

    let states = persisted_until(config(Some(ghost.clone())), &data, T0 + 60 * DAY_MS);
    let ghost_state = &states["ghost"];
    // Its last day closed up to the newest record, a day or so before.
    let cut = ghost_state.last_day_end.unwrap();
    assert!(cut > T0 + 58 * DAY_MS, "{}", (cut - T0) / DAY_MS);
    assert!(ghost_state.open_since(Rule::OnboardingStalled).is_some());

    let mut after = config(Some(ghost));
    after.journeys = Arc::new(JourneyBoard::persisted(states));
    let rest: Vec<_> = (data.iter())
        .filter(|b| b.last_at() >= cut - LATENESS)
        .cloned()
        .collect();
    let resumed = run(after, 1, rest);
    let later = |records: &[Output]| -> Vec<String> {
        let mut rows: Vec<String> = (records.iter())
            .filter(|r| r.customer().is_some_and(|c| &**c == "ghost"))
            .filter(|r| match r {
                Output::Health(h) => h.window_end > cut,
                Output::Alert(a) => a.opened_at > cut || a.resolved_at.is_some_and(|t| t > cut),
                _ => true,
            })
            .map(|r| format!("{r:?}"))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(later(&resumed), later(&whole));
    assert!(!later(&whole).is_empty());
    // No second alert after the restart: the episode was restored open.
    assert!(alerts_of(&resumed, "ghost").is_empty());
}

/// A customer added to the file while the service was stopped: tracked
/// from where the restored journeys end (what the stores hold), not from
/// the older records the WAL replays, which the service would suppress as
/// written before the restart (an alert opened there never reached a
/// store, and its episode, open, never fired again).
#[test]
fn a_customer_added_while_stopped_is_tracked_from_the_restart() {
    let data = fleet("acme", 0, 70 * 24);
    let states = persisted_until(config(None), &data, T0 + 30 * DAY_MS);
    let restored = states["acme"].last_day_end.unwrap();

    // Added while stopped, with a contract of years ago; the restart
    // replays the WAL from day 0 (all of it is still there).
    let mut ghost = spec("ghost", GHOST_ARR, T0 - 400 * DAY_MS, 3);
    ghost.thresholds.onboarding_days = 10;
    let mut after = config(Some(ghost));
    after.journeys = Arc::new(JourneyBoard::persisted(states));
    let records = run(after, 2, data);
    let alerts = alerts_of(&records, "ghost");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].opened_at, restored + 10 * DAY_MS);
    let health = health_of(&records, "ghost");
    assert_eq!(
        health.first().map(|h| h.window_end),
        Some(restored + 10 * DAY_MS)
    );
}

/// The contract's start date is the customer's: in a zone east of UTC its
/// onboarding days end a local day earlier than UTC's would.
#[test]
fn the_onboarding_days_count_from_the_customer_s_midnight() {
    let start = T0 + 10 * DAY_MS; // the date, as the customers file keeps it
    for (zone, offset_hours) in [("Pacific/Kiritimati", 14), ("Pacific/Pago_Pago", -11)] {
        let mut ghost = spec("ghost", GHOST_ARR, start, 4);
        ghost.timezone = jiff::tz::TimeZone::get(zone).unwrap();
        let records = run(config(Some(ghost)), 1, fleet("acme", 0, 70 * 24));
        let alerts = alerts_of(&records, "ghost");
        assert_eq!(alerts.len(), 1, "{zone}: {alerts:#?}");
        // The local midnight of the start date, plus 45 days: a local
        // midnight, the end of the 45th local day.
        let local_midnight = (start as i64 - offset_hours * HOUR_MS as i64) as u64;
        assert_eq!(
            alerts[0].opened_at,
            local_midnight + ONBOARDING_DAYS * DAY_MS,
            "{zone}"
        );
    }
}

/// A renewal near and nothing used: renewal_at_risk opens beside
/// onboarding_stalled.
#[test]
fn a_renewal_near_a_fleet_that_never_reported_is_at_risk() {
    let start = T0 + 5 * DAY_MS;
    let mut ghost = spec("ghost", GHOST_ARR, start, 4);
    ghost.contract.renewal = start + 120 * DAY_MS;
    let records = run(config(Some(ghost)), 1, fleet("acme", 0, 70 * 24));
    let rules: Vec<_> = (alerts_of(&records, "ghost").iter())
        .map(|a| (a.rule, a.status, a.opened_at))
        .collect();
    let due = start + ONBOARDING_DAYS * DAY_MS;
    assert_eq!(
        rules,
        [
            (Rule::OnboardingStalled, AlertStatus::Open, due),
            (Rule::RenewalAtRisk, AlertStatus::Open, due)
        ]
    );
}

/// The first telemetry of a customer silent past its onboarding days
/// arrives late (its units buffered their first days): the journey is
/// folded again from its silence (`JourneyState::silent_start`), not from
/// the late first day as if listening began then. The silence's alert
/// stays, resolved on the activation day, and the fold's records and the
/// state it goes on from equal the run that had the telemetry in time.
#[test]
fn late_first_telemetry_is_folded_from_the_silence_and_resolves_it() {
    use fleetpulse_engine::restatement::{Restatement, journey_records, refold};

    let start = T0 + 10 * DAY_MS;
    let ghost = spec("ghost", GHOST_ARR, start, 2);
    let due = start + ONBOARDING_DAYS * DAY_MS;
    // ghost's units work from day 60; what they sent reaches the engine
    // only on day 63, after days 60 to 62 closed silent.
    let (first_day, cut) = (60, T0 + 63 * DAY_MS + 12 * HOUR_MS);
    let acme = fleet("acme", 0, 70 * 24);
    let ghost_data: Vec<_> = (fleet("ghost", first_day * 24, 70 * 24).into_iter())
        .filter(|b| b.last_at() < cut)
        .collect();
    let in_time: Vec<_> = acme.iter().chain(&ghost_data).cloned().collect();

    // The run that had it in time, and its journey's state at the end of
    // each day.
    let reference_states = |through: u64| {
        let mut states = persisted_until(config(Some(ghost.clone())), &in_time, cut);
        assert_eq!(states["ghost"].last_day_end, Some(through));
        states.remove("ghost").unwrap()
    };
    let before_cut = |data: &[DeviceBatch]| -> Vec<DeviceBatch> {
        (data.iter())
            .filter(|b| b.last_at() < cut)
            .cloned()
            .collect()
    };
    let reference = run(config(Some(ghost.clone())), 1, before_cut(&in_time));

    // Live, the engine heard nothing of ghost before the cut.
    let states = persisted_until(config(Some(ghost.clone())), &acme, cut);
    let live = &states["ghost"];
    let until = live.last_day_end.unwrap();
    assert!(live.open_since(Rule::OnboardingStalled) == Some(due));
    assert!(!live.activated());

    // The restatement of ghost's windows from its first reading.
    let config = config(Some(ghost.clone()));
    let restatement = Restatement {
        customer: "ghost".into(),
        from: ghost_data.iter().map(DeviceBatch::first_at).min().unwrap(),
        through: until,
        revision: 1,
    };
    let floor = restatement.floor(&config);
    assert_eq!(floor, T0 + first_day * DAY_MS);
    let windows = restatement.windows(&config, Vec::new(), ghost_data.clone());
    let records = journey_records(&config, &windows);
    let base = live.silent_start(floor);
    assert!(base.is_some(), "tracked silent since before the first day");
    let refolded = refold(&config, ghost.clone(), base, records.clone(), Some(until));

    let rows = |records: &[Output]| -> Vec<String> {
        let mut rows: Vec<String> = (records.iter())
            .filter(|r| r.customer().is_some_and(|c| &**c == "ghost"))
            .filter(|r| match r {
                Output::Health(h) => !h.provisional && h.window_end <= until,
                Output::Alert(a) => !a.provisional && a.opened_at <= until,
                Output::Forecast(f) => f.window_end <= until,
                Output::Outcome(o) => o.window_end <= until,
                Output::Milestone(m) => m.window_end <= until,
                _ => false,
            })
            .map(|r| format!("{r:?}"))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(rows(&refolded.outputs), rows(&reference));
    let activation_day_end = T0 + (first_day + 1) * DAY_MS;
    assert_opened_then_resolved(&refolded.outputs, due, activation_day_end);
    assert_eq!(refolded.journey.snapshot(), reference_states(until));

    // From scratch (what a fold did before), the silence never happened:
    // its alert would be retracted.
    let scratch = refold(&config, ghost, None, records, Some(until));
    assert!(alerts_of(&scratch.outputs, "ghost").is_empty());
}
