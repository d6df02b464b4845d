//! Restatement against the reference fold: a fleet whose devices lose
//! coverage and upload their buffers late (in order, newest first, or
//! shuffled) is run live, its late batches refused by the watermark; the
//! restated windows, laid over the live ones, must equal the fold of every
//! batch in event-time order, value by value.

mod common;

use std::collections::BTreeMap;

use common::{MIN, T0, normalise};
use fleetpulse_engine::config::HOUR_MS;
use fleetpulse_engine::restatement::{Restatement, refold};
use fleetpulse_engine::run::run_batches;
use fleetpulse_engine::{
    Contract, CustomerSpec, DeviceBatch, Engine, EngineConfig, JourneyBoard, MachineState, Output,
    Sample, Segment, reference,
};
use proptest::prelude::*;

fn config() -> EngineConfig {
    let mut config = EngineConfig::default();
    for (id, zone) in [
        ("acme", "UTC"),
        ("bolt", "Europe/Berlin"),
        ("cala", "Australia/Adelaide"),
    ] {
        let contract = Contract {
            arr: 100_000.0,
            start: T0,
            renewal: T0 + 365 * 24 * HOUR_MS,
            devices_purchased: 4,
            operator_seats: 4,
        };
        let mut spec = CustomerSpec::new(id, Segment::LowTouch, contract);
        spec.timezone = jiff::tz::TimeZone::get(zone).unwrap();
        // One device silent for two days is dark: an outage raises it.
        spec.thresholds.dark_min_devices = 1;
        config.customers.insert(id.into(), spec);
    }
    config
}

/// How a device that lost coverage uploads its buffer on reconnect.
#[derive(Debug, Clone, Copy)]
enum Upload {
    InOrder,
    NewestFirst,
    Shuffled(u64),
}

/// One device over `hours` hours: a batch per hour of two readings, the
/// meters climbing by a varying amount, interval counters in every reading.
/// The batches of `outage` (hours) are held back and published at its end,
/// after the reconnect hour's batch, in `upload` order.
fn device(
    customer: &str,
    id: &str,
    hours: u64,
    outage: std::ops::Range<u64>,
    upload: Upload,
) -> Vec<(u64, DeviceBatch)> {
    device_from(T0, customer, id, hours, outage, upload)
}

/// [`device`] from `t0` on.
fn device_from(
    t0: u64,
    customer: &str,
    id: &str,
    hours: u64,
    outage: std::ops::Range<u64>,
    upload: Upload,
) -> Vec<(u64, DeviceBatch)> {
    let mut meter = 500.0;
    let mut out = Vec::new();
    let mut held = Vec::new();
    for h in 0..hours {
        let samples = (0..2)
            .map(|i| {
                let at = t0 + h * HOUR_MS + i * 30 * MIN + 7 * MIN;
                meter += 0.25 * ((h + i) % 3) as f64;
                Sample {
                    at,
                    state: if h % 5 == 0 {
                        MachineState::Idle
                    } else {
                        MachineState::Running
                    },
                    operating_hours: meter,
                    idle_hours: meter / 8.0,
                    fuel_litres: meter * 11.0,
                    cycles: (h % 7) as u32,
                    output_units: (h % 4) as f64 * 2.5,
                    manual_interventions: (h % 3) as u32,
                    operator: Some(["ann", "bob", "cy"][(h % 3) as usize].into()),
                    advanced_features: if h % 6 == 0 { 0b1 } else { 0 },
                    faults: u32::from(h % 11 == 0),
                    ..Sample::default()
                }
            })
            .collect();
        let batch = common::batch(customer, id, 0, h + 1, samples);
        // Published at the end of its hour, or at the end of the outage.
        if outage.contains(&h) {
            held.push(batch);
        } else {
            out.push((t0 + (h + 1) * HOUR_MS, batch));
        }
    }
    match upload {
        Upload::InOrder => {}
        Upload::NewestFirst => held.reverse(),
        Upload::Shuffled(seed) => {
            let mut state = seed | 1;
            for i in (1..held.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                held.swap(i, (state % (i as u64 + 1)) as usize);
            }
        }
    }
    // After the reconnect hour's own batch, one a second.
    let reconnect = t0 + (outage.end + 1) * HOUR_MS;
    out.extend(
        held.into_iter()
            .enumerate()
            .map(|(i, b)| (reconnect + 1 + i as u64, b)),
    );
    out
}

/// Runs `fleet` live (2 h lateness) and restates, per customer, from its
/// earliest refused reading with every batch at hand; returns the live
/// records with the restated ones laid over them, and the reference.
fn live_and_restated(fleet: Vec<(u64, DeviceBatch)>, workers: usize) -> (Vec<String>, Vec<String>) {
    let config = config();
    let mut fleet = fleet;
    fleet.sort_by_key(|(published, b)| (*published, b.customer.clone(), b.device.clone()));
    let batches: Vec<DeviceBatch> = fleet.into_iter().map(|(_, b)| b).collect();
    let live = run_batches(config.clone(), workers, 2 * HOUR_MS, batches.clone()).unwrap();
    let mut from: BTreeMap<String, u64> = BTreeMap::new();
    for late in &live.late {
        let at = from.entry(late.customer.to_string()).or_insert(u64::MAX);
        *at = (*at).min(late.first_at());
    }
    let mut merged: BTreeMap<String, Output> = live
        .outputs
        .iter()
        .filter_map(|o| key(o).map(|k| (k, o.clone())))
        .collect();
    for (customer, from) in from {
        let restatement = Restatement {
            customer: customer.as_str().into(),
            from,
            through: u64::MAX,
            revision: 1,
        };
        let floor = restatement.floor(&config);
        let (earlier, after): (Vec<_>, Vec<_>) = batches
            .iter()
            .filter(|b| *b.customer == *customer)
            .cloned()
            .partition(|b| b.first_at() < floor);
        for record in restatement.windows(&config, earlier, after) {
            assert!(
                matches!(&record, Output::Customer(k) if k.revision == 1)
                    || matches!(&record, Output::Device(d) if d.revision == 1)
            );
            merged.insert(key(&record).unwrap(), strip(record));
        }
    }
    let merged: Vec<Output> = merged.into_values().collect();
    let expected = reference::fold(&config, batches);
    (normalise(&merged), normalise(&expected))
}

/// The store's key of a window record.
fn key(o: &Output) -> Option<String> {
    match o {
        Output::Customer(k) => Some(format!("c/{}/{}/{}", k.customer, k.window, k.window_start)),
        Output::Device(d) => Some(format!(
            "d/{}/{}/{}/{}",
            d.customer, d.device, d.window, d.window_start
        )),
        _ => None,
    }
}

/// A restated record without its revision, to compare with the fold.
fn strip(mut o: Output) -> Output {
    match &mut o {
        Output::Customer(k) => k.revision = 0,
        Output::Device(d) => d.revision = 0,
        _ => {}
    }
    o
}

#[test]
fn a_26_hour_outage_is_restated_exactly_whatever_the_upload_order() {
    for upload in [Upload::InOrder, Upload::NewestFirst, Upload::Shuffled(7)] {
        let mut fleet = device("acme", "exc-1", 72, 10..36, upload);
        fleet.extend(device("acme", "exc-2", 72, 0..0, upload));
        fleet.extend(device("bolt", "exc-1", 72, 20..46, upload));
        let (restated, expected) = live_and_restated(fleet.clone(), 1);
        assert_eq!(restated, expected, "{upload:?}");
        // Without the restatement the live run is wrong: the test can fail.
        let live =
            run_batches(config(), 1, 2 * HOUR_MS, fleet.into_iter().map(|(_, b)| b)).unwrap();
        assert!(!live.late.is_empty());
        assert_ne!(normalise(&live.outputs), expected);
    }
}

/// A unit that numbers its batches as it sends them, skipping one number
/// at each, uploads a 56-day buffer newest first: its sequences rise as its
/// readings go back in time, so in event-time order each batch is a missing
/// range of its own. The restatement forgets none of them (past 1,024 it
/// dropped the oldest as too old) and equals the in-order fold.
#[test]
fn a_long_buffer_numbered_as_sent_and_uploaded_newest_first_is_restated_whole() {
    let mut fleet = device("acme", "exc-1", 1_400, 10..1_350, Upload::NewestFirst);
    fleet.sort_by_key(|(published, _)| *published);
    for (i, (_, batch)) in fleet.iter_mut().enumerate() {
        batch.sequence = 2 * i as u64 + 1;
    }
    let (restated, expected) = live_and_restated(fleet, 1);
    assert_eq!(restated, expected);
}

/// A meter read as 0 inside a buffer uploaded after a 26-hour outage,
/// newest first or shuffled: the restated windows equal the in-order fold,
/// which counts neither the glitch nor the reading after it.
#[test]
fn a_meter_glitch_inside_a_late_buffer_is_restated_like_the_in_order_run() {
    for upload in [Upload::NewestFirst, Upload::Shuffled(11)] {
        let mut fleet = device("acme", "exc-1", 72, 10..36, upload);
        let glitched = (fleet.iter_mut())
            .map(|(_, b)| b)
            .find(|b| b.first_at() >= T0 + 20 * HOUR_MS)
            .unwrap();
        glitched.samples[0].operating_hours = 0.0;
        fleet.extend(device("acme", "exc-2", 72, 0..0, upload));
        let (restated, expected) = live_and_restated(fleet, 1);
        assert_eq!(restated, expected, "{upload:?}");
    }
}

/// Berlin's clocks go forward on 2026-03-29 (a 23-hour local day): an
/// outage across it, its buffer uploaded late, is restated exactly, each
/// customer's days in its own zone.
#[test]
fn an_outage_across_a_daylight_saving_day_is_restated_exactly() {
    // 2026-03-27T00:00:00Z; the switch is at 01:00Z on the 29th.
    let start = 1_774_569_600_000;
    for upload in [Upload::InOrder, Upload::NewestFirst, Upload::Shuffled(11)] {
        let mut fleet = device_from(start, "bolt", "exc-1", 120, 30..80, upload);
        fleet.extend(device_from(start, "bolt", "exc-2", 120, 0..0, upload));
        fleet.extend(device_from(start, "acme", "exc-1", 120, 40..75, upload));
        let (restated, expected) = live_and_restated(fleet.clone(), 2);
        assert_eq!(restated, expected, "{upload:?}");
        // The local day of the switch is a window of 23 hours.
        let short = reference::fold(&config(), fleet.into_iter().map(|(_, b)| b))
            .into_iter()
            .filter(|o| {
                matches!(o, Output::Customer(k)
                if &*k.customer == "bolt" && &*k.window == "1d"
                    && k.window_end - k.window_start == 23 * HOUR_MS)
            })
            .count();
        assert_eq!(short, 1);
    }
}

/// Adelaide (UTC+10:30, +9:30 from 03:00 local on 2026-04-05, a 25-hour
/// day): an outage across its clock change, its buffer uploaded late in
/// order, newest first or shuffled, is restated exactly like the live run,
/// its hours counted from its half-hour midnights.
#[test]
fn an_outage_in_a_half_hour_zone_across_its_clock_change_is_restated_exactly() {
    // 2026-04-02T00:00:00Z; the change is at 16:30Z on the 4th.
    let start = 1_775_088_000_000;
    for upload in [Upload::InOrder, Upload::NewestFirst, Upload::Shuffled(5)] {
        let mut fleet = device_from(start, "cala", "exc-1", 120, 30..80, upload);
        fleet.extend(device_from(start, "cala", "exc-2", 120, 0..0, upload));
        let (restated, expected) = live_and_restated(fleet.clone(), 2);
        assert_eq!(restated, expected, "{upload:?}");
        let folded = reference::fold(&config(), fleet.into_iter().map(|(_, b)| b));
        let windows = |name: &str| -> Vec<(u64, u64)> {
            (folded.iter())
                .filter_map(|o| match o {
                    Output::Customer(k) if &*k.window == name => {
                        Some((k.window_start, k.window_end))
                    }
                    _ => None,
                })
                .collect()
        };
        // 2026-04-04T13:30Z to 2026-04-05T14:30Z, from the zone rules.
        let long = (1_775_309_400_000, 1_775_399_400_000);
        assert!(windows("1d").contains(&long), "{:?}", windows("1d"));
        let hours: Vec<_> = (windows("1h").into_iter())
            .filter(|&(s, e)| s >= long.0 && e <= long.1)
            .collect();
        assert_eq!(hours.len(), 25, "{hours:?}");
        assert!(
            hours
                .iter()
                .all(|(s, e)| e - s == HOUR_MS && s % HOUR_MS == 30 * 60_000)
        );
    }
}

/// A pass reads the archive a day file at a time: the windows folded from
/// the batches in UTC-day parts, each device's baseline with the part it
/// is first met in, equal those folded from all of them at once (a Berlin
/// customer's local days straddle two parts; one device is silent on the
/// floor's day and met again days later).
#[test]
fn windows_folded_a_day_at_a_time_equal_those_folded_at_once() {
    const DAY: u64 = 24 * HOUR_MS;
    let config = config();
    for customer in ["acme", "bolt"] {
        let mut fleet = device(customer, "exc-1", 120, 10..60, Upload::Shuffled(3));
        let silent = device(customer, "exc-2", 120, 0..0, Upload::InOrder);
        fleet.extend((silent.into_iter()).filter(|(_, b)| !(40..75).contains(&(b.sequence - 1))));
        let batches: Vec<DeviceBatch> = fleet.into_iter().map(|(_, b)| b).collect();
        let restatement = Restatement {
            customer: customer.into(),
            from: T0 + 50 * HOUR_MS,
            through: T0 + 110 * HOUR_MS,
            revision: 1,
        };
        let floor = restatement.floor(&config);
        let (before, after): (Vec<_>, Vec<_>) =
            batches.into_iter().partition(|b| b.first_at() < floor);
        let mut earlier: BTreeMap<String, DeviceBatch> = BTreeMap::new();
        for b in before {
            let last = earlier
                .entry(b.device.to_string())
                .or_insert_with(|| b.clone());
            if b.first_at() > last.first_at() {
                *last = b;
            }
        }
        let whole =
            restatement.windows(&config, earlier.values().cloned().collect(), after.clone());

        let mut days: BTreeMap<u64, Vec<DeviceBatch>> = BTreeMap::new();
        for b in after {
            days.entry(b.first_at() / DAY).or_default().push(b);
        }
        assert!(days.len() >= 3, "{customer}: {} days", days.len());
        let mut fold = restatement.fold(&config);
        for (_, day) in days {
            let mut part: Vec<DeviceBatch> = Vec::new();
            for b in &day {
                if let Some(baseline) = earlier.remove(&*b.device) {
                    part.push(baseline);
                }
            }
            part.extend(day);
            fold.add(part);
        }
        let parts = fold.finish();
        assert!(!whole.is_empty());
        assert_eq!(normalise(&parts), normalise(&whole), "{customer}");
    }
}

#[test]
fn windows_still_open_are_left_to_the_live_dataflow() {
    let fleet = device("acme", "exc-1", 48, 5..20, Upload::InOrder);
    let batches: Vec<DeviceBatch> = fleet.into_iter().map(|(_, b)| b).collect();
    let config = config();
    let through = T0 + 30 * HOUR_MS;
    let restatement = Restatement {
        customer: "acme".into(),
        from: T0 + 5 * HOUR_MS,
        through,
        revision: 3,
    };
    let records = restatement.windows(&config, Vec::new(), batches);
    assert!(!records.is_empty());
    for record in &records {
        let (start, end) = match record {
            Output::Customer(k) => (k.window_start, k.window_end),
            Output::Device(d) => (d.window_start, d.window_end),
            _ => unreachable!(),
        };
        assert!(end > T0 + 5 * HOUR_MS && end <= through, "{start}..{end}");
    }
    // Hours 5..30 and day 0 (ends at T0 + 24 h); day 1 is still open.
    let hours = records
        .iter()
        .filter(|r| matches!(r, Output::Customer(k) if &*k.window == "1h"))
        .count();
    assert_eq!(hours, 25);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn restated_windows_equal_the_reference_fold(
        outages in prop::collection::vec((0..40u64, 6..72u64), 1..4),
        order in 0..3u8,
        seed in any::<u64>(),
        workers in 1..3usize,
    ) {
        let upload = match order {
            0 => Upload::InOrder,
            1 => Upload::NewestFirst,
            _ => Upload::Shuffled(seed),
        };
        let mut fleet = Vec::new();
        for (i, (start, length)) in outages.into_iter().enumerate() {
            let customer = ["acme", "bolt"][i % 2];
            let end = (start + length).min(100);
            fleet.extend(device(customer, &format!("d{i}"), 104, start..end, upload));
        }
        let (restated, expected) = live_and_restated(fleet, workers);
        prop_assert_eq!(restated, expected);
    }
}

/// The journey records (outcomes, milestones, health, forecasts, alerts) of `outputs`
/// for days ending after `after`, as sorted text.
fn journey_rows(outputs: &[Output], customer: &str, after: u64) -> Vec<String> {
    let mut rows: Vec<String> = outputs
        .iter()
        .filter(|o| o.customer().is_some_and(|c| &**c == customer))
        // Provisional records (the open day's) are left out: their day's
        // close settles them, and a fold closes days only.
        .filter(|o| match o {
            Output::Health(h) => h.window_end > after && !h.provisional,
            Output::Forecast(f) => f.window_end > after,
            Output::Outcome(r) => r.window_end > after,
            Output::Milestone(r) => r.window_end > after,
            Output::Alert(a) => a.resolved_at.unwrap_or(a.opened_at) > after && !a.provisional,
            _ => false,
        })
        .map(|o| format!("{o:?}"))
        .collect();
    rows.sort();
    rows
}

/// A fleet run live with its buffered uploads refused, then each customer's
/// windows restated and its journey folded again from its state before the
/// first late day: the health, outcome, milestone and alert records of the
/// restated days equal those of the run where everything arrived in
/// event-time order.
#[test]
fn a_journey_folded_again_over_restated_windows_equals_the_in_order_run() {
    // 18 days: the days folded again include forecasts (14 daily scores).
    let hours = 18 * 24;
    let mut fleet = device("acme", "exc-1", hours, 100..190, Upload::NewestFirst);
    fleet.extend(device("acme", "exc-2", hours, 0..0, Upload::InOrder));
    fleet.extend(device("bolt", "exc-1", hours, 120..190, Upload::InOrder));
    fleet.extend(device(
        "bolt",
        "exc-2",
        hours,
        130..140,
        Upload::Shuffled(3),
    ));
    fleet.sort_by_key(|(published, b)| (*published, b.customer.clone(), b.device.clone()));
    let published: Vec<DeviceBatch> = fleet.into_iter().map(|(_, b)| b).collect();
    let mut in_order = published.clone();
    in_order.sort_by_key(|b| (b.first_at(), b.customer.clone(), b.device.clone()));

    let with_board = || {
        let mut config = config();
        config.journeys = std::sync::Arc::new(JourneyBoard::persisted(Default::default()));
        config
    };
    let reference_config = with_board();
    let reference =
        run_batches(reference_config.clone(), 1, 2 * HOUR_MS, in_order.clone()).unwrap();
    let reference_ends = reference_config.journeys.covered_before(u64::MAX).unwrap();
    assert!(reference.late.is_empty());
    let live_config = with_board();
    let live = run_batches(live_config.clone(), 1, 2 * HOUR_MS, published).unwrap();
    assert!(!live.late.is_empty());

    // Each customer's earliest late reading, the floor of its restatement,
    // and the live journey's state at the end of the day before it (the
    // board gives them oldest first).
    let mut plans: Vec<(&str, Restatement, u64)> = ["acme", "bolt"]
        .into_iter()
        .map(|customer| {
            let from = (live.late.iter())
                .filter(|b| &*b.customer == customer)
                .map(DeviceBatch::first_at)
                .min()
                .unwrap();
            let restatement = Restatement {
                customer: customer.into(),
                from,
                through: u64::MAX,
                revision: 1,
            };
            let floor = restatement.floor(&live_config);
            (customer, restatement, floor)
        })
        .collect();
    plans.sort_by_key(|(_, _, floor)| *floor);
    let bases: Vec<_> = (plans.iter())
        .map(|(customer, _, floor)| {
            live_config.journeys.covered_before(floor + 1).unwrap()[*customer].clone()
        })
        .collect();
    let ends = live_config.journeys.covered_before(u64::MAX).unwrap();

    assert!(
        (reference.outputs.iter()).any(|o| matches!(o, Output::Forecast(_))),
        "the journeys run long enough to forecast"
    );
    let mut retracted = 0;
    for ((customer, restatement, floor), base) in plans.into_iter().zip(bases) {
        let (earlier, after): (Vec<_>, Vec<_>) = (in_order.iter())
            .filter(|b| &*b.customer == customer)
            .cloned()
            .partition(|b| b.first_at() < floor);
        let restated = restatement.windows(&live_config, earlier, after);
        assert_eq!(base.last_day_end, Some(floor));
        let until = ends[customer].last_day_end;
        let spec = live_config.customers[customer].clone();
        let refolded = refold(&live_config, spec, Some(base), restated, until);
        assert_eq!(refolded.journey.last_day_end(), until);
        // What the journey goes on from equals the in-order run's, the
        // day shape the open day is read at included (learned from the
        // restated hours: the live run could not learn the days whose
        // hours came late).
        let (state, want_state) = (refolded.journey.snapshot(), &reference_ends[customer]);
        assert_eq!(&state, want_state, "{customer}");
        assert_ne!(
            ends[customer].clone(),
            state,
            "{customer}: the live journey's state differs"
        );
        assert!(refolded.journey.shape().done_by(24).is_some());

        let got = journey_rows(&refolded.outputs, customer, floor);
        let want = journey_rows(&reference.outputs, customer, floor);
        let before = journey_rows(&live.outputs, customer, floor);
        assert!(!want.is_empty());
        assert_ne!(before, want, "{customer}: the live journey differs");
        assert_eq!(got, want, "{customer}");
        // The live run raised devices_dark during the outage; the data was
        // only late, so the journey folded again has none.
        let dark = |rows: &[String]| rows.iter().filter(|r| r.contains("DevicesDark")).count();
        assert_eq!(dark(&want), 0, "{customer}");
        retracted += dark(&before);
    }
    assert!(
        retracted > 0,
        "an outage raised devices_dark in the live run"
    );
}

/// A pass of the open day's late data folds no day again: the live journey
/// goes on from the pass's base (the archive's state of its last day), and
/// that state is the one the next checkpoint stores. The live one of that
/// day may be a checkpoint's from before a pass a kill cut off; stored
/// again, a start after the customer's late data is forgotten restored it
/// and read the open day against its stale days (7-day movements and the
/// score trend of another history).
#[test]
fn a_journey_adopted_without_a_day_to_fold_is_the_one_the_checkpoint_stores() {
    use fleetpulse_engine::adoption::{JourneyAnswer, JourneyRequest};
    use fleetpulse_engine::{EngineEvent, EngineOptions, Watermark};
    use std::time::Duration;

    let day_3_end = T0 + 4 * 24 * HOUR_MS;
    let with_board = || {
        let mut config = config();
        config.journeys = std::sync::Arc::new(JourneyBoard::persisted(Default::default()));
        config
    };
    // The base: the days of a fleet whose second machine never ran.
    let hours = 4 * 24 + 6;
    let alone: Vec<DeviceBatch> = (device("acme", "exc-1", hours, 0..0, Upload::InOrder))
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let reference = with_board();
    run_batches(reference.clone(), 1, 2 * HOUR_MS, alone).unwrap();
    let base = reference.journeys.covered_before(day_3_end + 1).unwrap()["acme"].clone();
    assert_eq!(base.last_day_end, Some(day_3_end));

    // Live: both machines, days 0 to 3 closed, day 4 open.
    let mut fleet = device("acme", "exc-1", hours, 0..0, Upload::InOrder);
    fleet.extend(device("acme", "exc-2", hours, 0..0, Upload::InOrder));
    fleet.sort_by_key(|(published, b)| (*published, b.device.clone()));
    let live = with_board();
    let (board, adoptions) = (live.journeys.clone(), live.adoptions.clone());
    let (events, mut received) = tokio::sync::mpsc::channel(64);
    let mut engine = Engine::start(live, &EngineOptions::default(), events).unwrap();
    let (tx, records) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Some(event) = received.blocking_recv() {
            if let EngineEvent::Records(batch) = event {
                batch.into_iter().for_each(|r| drop(tx.send(r)));
            }
        }
    });
    let mut watermark = Watermark::new(2 * HOUR_MS);
    for (_, batch) in fleet {
        watermark.admit(batch.first_at(), batch.last_at()).unwrap();
        engine.blocking_send_all(vec![batch]).unwrap();
        engine.blocking_advance(watermark.current()).unwrap();
    }
    let day_3_closed =
        |r: &Output| matches!(r, Output::Health(h) if h.window_end == day_3_end && !h.provisional);
    while !day_3_closed(&records.recv_timeout(Duration::from_secs(10)).unwrap()) {}
    let noted = board.covered_before(u64::MAX).unwrap()["acme"].clone();
    assert_eq!(noted.last_day_end, Some(day_3_end));
    assert_ne!(noted, base, "the live journey's day 3 differs");

    let request = JourneyRequest {
        customer: "acme".into(),
        base: Some(base.clone()),
        records: Vec::new(),
        through: u64::MAX,
        spec: None,
        from: None,
        open_day: false,
    };
    let answer = adoptions
        .submit(request)
        .recv_timeout(Duration::from_secs(10));
    let Ok(JourneyAnswer::Adopted { days, .. }) = answer else {
        panic!("not adopted: {answer:?}");
    };
    assert!(days.is_empty(), "no day folded again");
    let stored = board.covered_before(u64::MAX).expect("a state to store");
    assert!(
        stored["acme"] == base,
        "the checkpoint stores the state the live journey goes on from"
    );
    engine.finish().unwrap();
}
