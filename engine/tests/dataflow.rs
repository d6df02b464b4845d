//! The dataflow, fed in-memory batches, against exact hand-computed answers
//! and against the reference fold, at 1 and 2 workers.

mod common;

use common::{MIN, T0, device_rows, interleave, normalise};
use fleetpulse_engine::config::HOUR_MS;
use fleetpulse_engine::run::{RunOutcome, run_batches};
use fleetpulse_engine::{
    Contract, CustomerKpi, CustomerSpec, DeviceBatch, EngineConfig, MachineState, Sample, Segment,
    WindowSpec, reference,
};
use proptest::prelude::*;

fn config() -> EngineConfig {
    let mut config = EngineConfig::default();
    let contract = Contract {
        arr: 100_000.0,
        start: T0,
        renewal: T0 + 365 * 24 * HOUR_MS,
        devices_purchased: 4,
        operator_seats: 4,
    };
    config.customers.insert(
        "acme".into(),
        CustomerSpec::new("acme", Segment::LowTouch, contract),
    );
    config
}

fn sample(at: u64, hours: f64, cycles: u32, operator: &str) -> Sample {
    Sample {
        at,
        state: MachineState::Running,
        operating_hours: hours,
        idle_hours: hours / 10.0,
        fuel_litres: hours * 20.0,
        cycles,
        output_units: f64::from(cycles) * 1.5,
        manual_interventions: cycles / 4,
        operator: (!operator.is_empty()).then(|| operator.into()),
        advanced_features: if cycles > 5 { 0b10 } else { 0 },
        faults: u32::from(cycles == 7),
        ..Sample::default()
    }
}

/// A batch of the original unit (epoch 0).
fn batch(customer: &str, device: &str, sequence: u64, samples: Vec<Sample>) -> DeviceBatch {
    common::batch(customer, device, 0, sequence, samples)
}

fn customers(outcome: &RunOutcome, window: &str) -> Vec<CustomerKpi> {
    common::customer_rows(&outcome.outputs, window)
}

/// Two devices of one customer over two hours, with a redelivered batch and
/// batches arriving out of order within the lateness.
fn scenario() -> Vec<DeviceBatch> {
    // (device, sequence, readings as (minutes after T0, hours, cycles, operator))
    let [a1, a2, b1] = [
        ("d1", 1, [(0, 100.0, 0, ""), (30, 100.5, 6, "ann")]),
        ("d1", 2, [(60, 101.0, 4, "ann"), (90, 101.25, 7, "bob")]),
        ("d2", 1, [(10, 50.0, 2, "cy"), (70, 51.0, 3, "cy")]),
    ]
    .map(|(device, sequence, readings)| {
        let samples = readings
            .iter()
            .map(|&(minutes, hours, cycles, operator)| {
                sample(T0 + minutes * MIN, hours, cycles, operator)
            })
            .collect();
        batch("acme", device, sequence, samples)
    });
    // d1's second batch overtakes its first on the wire, and the first is
    // delivered twice.
    vec![b1, a2, a1.clone(), a1]
}

#[test]
fn exact_kpis_with_duplicates_and_reordering() {
    for workers in [1, 2] {
        let outcome = run_batches(config(), workers, 2 * HOUR_MS, scenario()).unwrap();
        assert!(outcome.late.is_empty());
        assert_eq!(outcome.stats.duplicates, 1, "workers={workers}");
        assert_eq!(outcome.stats.samples, 6);

        let hourly = customers(&outcome, "1h");
        assert_eq!(hourly.len(), 2, "workers={workers}: {hourly:#?}");
        let h0 = &hourly[0];
        assert_eq!(h0.window_start, T0);
        // d1: baseline at T0, then +0.5h at T0+30m; d2: baseline at T0+10m.
        assert!((h0.totals.operating_hours - 0.5).abs() < 1e-12);
        assert_eq!(h0.totals.cycles, 8);
        assert_eq!(h0.reporting_devices, 2);
        assert_eq!(h0.active_devices, 1);
        assert_eq!(h0.distinct_operators, 2);
        assert_eq!(h0.advanced_features_used, 1);
        assert!((h0.advanced_feature_share - 0.25).abs() < 1e-12);
        assert!((h0.utilisation - 0.5 / 4.0).abs() < 1e-12);
        assert_eq!(h0.totals.samples, 3);

        let h1 = &hourly[1];
        // d1: +0.5 at T0+60m, +0.25 at T0+90m; d2: +1.0 at T0+70m.
        assert!((h1.totals.operating_hours - 1.75).abs() < 1e-12);
        assert_eq!(h1.totals.cycles, 14);
        assert_eq!(h1.totals.manual_interventions, 1 + 1);
        assert_eq!(h1.totals.fault_count, 1);
        assert_eq!(h1.active_devices, 2);
        assert_eq!(h1.distinct_operators, 3);

        let daily = customers(&outcome, "1d");
        assert_eq!(daily.len(), 1);
        assert!((daily[0].totals.operating_hours - 2.25).abs() < 1e-12);
        assert!((daily[0].totals.fuel_litres - 45.0).abs() < 1e-9);
        assert_eq!(daily[0].totals.cycles, 22);
        assert_eq!(daily[0].devices_purchased, 4);

        let d1 = device_rows(&outcome.outputs, "1h");
        assert_eq!(d1.len(), 4);
        assert_eq!(&*d1[0].device, "d1");
        assert_eq!(d1[1].last_seen, T0 + 90 * MIN);
        assert_eq!(d1[1].last_state, MachineState::Running);
    }
}

#[test]
fn data_older_than_the_watermark_is_refused_not_counted() {
    let early = batch("acme", "d1", 1, vec![sample(T0, 10.0, 1, "")]);
    let newer = batch("acme", "d2", 1, vec![sample(T0 + 5 * HOUR_MS, 10.0, 1, "")]);
    let late = batch("acme", "d1", 2, vec![sample(T0 + HOUR_MS, 11.0, 1, "")]);
    let outcome = run_batches(config(), 1, HOUR_MS, [early, newer, late.clone()]).unwrap();
    assert_eq!(outcome.late, vec![late]);
    let daily = customers(&outcome, "1d");
    assert_eq!(daily[0].totals.cycles, 2);
}

#[test]
fn windows_are_configurable() {
    let mut config = config();
    config.windows = vec![WindowSpec::new("15m", 15 * MIN)];
    let outcome = run_batches(config, 2, 2 * HOUR_MS, scenario()).unwrap();
    let rows = customers(&outcome, "15m");
    assert_eq!(rows.iter().map(|r| r.totals.cycles).sum::<u64>(), 22);
    assert!(
        rows.iter()
            .all(|r| r.window_end - r.window_start == 15 * MIN)
    );
}

fn arbitrary_fleet() -> impl Strategy<Value = Vec<DeviceBatch>> {
    // Per device: a customer, an id that other customers' devices may share,
    // a run of batches (each a few readings 10 min apart) and maybe a unit
    // replacement: from that batch on, the sequence restarts at 1 under a
    // higher unit epoch and the counters carry on or restart from 0.
    let device = (
        (0..3usize, 0..3usize),
        1..6usize,
        prop::collection::vec((0..4u32, 0..9u32, 0..3usize), 1..40),
        prop::option::of((1..8usize, any::<bool>())),
    );
    prop::collection::vec(device, 1..6).prop_map(|devices| {
        let mut batches = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for (d, ((customer, id), per_batch, readings, replaced)) in devices.into_iter().enumerate()
        {
            if !ids.insert((customer, id)) {
                continue;
            }
            let mut hours = 1000.0 * d as f64;
            let (mut seq, mut epoch) = (0, 0);
            for (i, chunk) in readings.chunks(per_batch).enumerate() {
                seq += 1;
                if let Some((at, from_zero)) = replaced
                    && at == i
                {
                    (seq, epoch) = (1, 1_767_571_200 + i as u64);
                    if from_zero {
                        hours = 0.0;
                    }
                }
                let samples = chunk
                    .iter()
                    .enumerate()
                    .map(|(j, &(dh, cycles, op))| {
                        hours += f64::from(dh) * 0.25;
                        let at = T0 + ((i * per_batch + j) as u64) * 10 * MIN;
                        sample(at, hours, cycles, ["", "ann", "bob"][op])
                    })
                    .collect();
                let mut b = batch(&format!("c{customer}"), &format!("d{id}"), seq, samples);
                b.unit_epoch = epoch;
                batches.push(b);
            }
        }
        interleave(batches)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn dataflow_equals_reference_fold(batches in arbitrary_fleet(), duplicate in 0..5usize) {
        let mut fed = batches.clone();
        if let Some(b) = batches.get(duplicate) {
            fed.push(b.clone());
        }
        let expected = normalise(&reference::fold(&config(), batches));
        for workers in [1, 2] {
            // Lateness longer than the whole run: nothing is late.
            let outcome = run_batches(config(), workers, 1000 * HOUR_MS, fed.clone()).unwrap();
            prop_assert!(outcome.late.is_empty());
            prop_assert_eq!(&normalise(&outcome.outputs), &expected);
        }
    }
}

#[test]
fn same_results_at_one_and_two_workers() {
    let one = run_batches(config(), 1, 2 * HOUR_MS, scenario()).unwrap();
    let two = run_batches(config(), 2, 2 * HOUR_MS, scenario()).unwrap();
    assert_eq!(normalise(&one.outputs), normalise(&two.outputs));
}

#[test]
fn daily_windows_follow_the_customers_local_day() {
    let mut config = config();
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    config.customers.get_mut("acme").unwrap().timezone = berlin;
    // 2026-01-05T23:30Z is 00:30 on 6 January in Berlin (UTC+1).
    let winter = T0 + 23 * HOUR_MS + 30 * MIN;
    // 2026-03-29 is the day clocks go forward: a 23-hour local day.
    let spring = 1_774_742_400_000 + 12 * HOUR_MS; // 2026-03-29T12:00Z
    let batches = vec![
        batch("acme", "d1", 1, vec![sample(winter, 10.0, 1, "")]),
        batch("acme", "d1", 2, vec![sample(spring, 11.0, 1, "")]),
    ];
    let outcome = run_batches(config, 1, 2 * HOUR_MS, batches).unwrap();
    let days = customers(&outcome, "1d");
    assert_eq!(days.len(), 2);
    assert_eq!(days[0].window_start, T0 + 23 * HOUR_MS);
    assert_eq!(days[0].window_end - days[0].window_start, 24 * HOUR_MS);
    assert_eq!(days[1].window_start, 1_774_742_400_000 - HOUR_MS);
    assert_eq!(days[1].window_end - days[1].window_start, 23 * HOUR_MS);
    // In a whole-hour zone the day's hours are UTC hours.
    let hours = customers(&outcome, "1h");
    assert_eq!(hours[0].window_start, T0 + 23 * HOUR_MS);
}

/// Ms since the epoch of `y-m-d h:00` UTC.
fn utc(y: i16, m: i8, d: i8, h: i8) -> u64 {
    jiff::civil::date(y, m, d)
        .at(h, 0, 0, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_millisecond() as u64
}

/// The consecutive days of `customer` between `bounds`: `(customer, start,
/// end)` for each pair of neighbours.
fn days<'a>(customer: &'a str, bounds: &[u64]) -> Vec<(&'a str, u64, u64)> {
    bounds.windows(2).map(|w| (customer, w[0], w[1])).collect()
}

/// `config()` with one more customer per `(id, time zone)`, each with acme's
/// contract.
fn with_zones(zones: &[(&str, &str)]) -> EngineConfig {
    let mut config = config();
    for (id, zone) in zones {
        let mut spec = CustomerSpec::new(
            id,
            Segment::LowTouch,
            config.customers["acme"].contract.clone(),
        );
        spec.timezone = jiff::tz::TimeZone::get(zone).unwrap();
        config.customers.insert((*id).into(), spec);
    }
    config
}

/// One machine per customer (the same device id everywhere) running around
/// the clock over `spans`: a reading every 30 min, the hour meter +0.5 h
/// each, in batches of 3 (a batch spans less than the lateness).
fn around_the_clock(customers: &[&str], spans: &[(u64, u64)]) -> Vec<DeviceBatch> {
    let mut batches = Vec::new();
    for customer in customers {
        let mut meter = 1000.0;
        let mut sequence = 0;
        let mut samples = Vec::new();
        for &(from, to) in spans {
            let mut at = from;
            while at < to {
                samples.push(sample(at, meter, 1, "ann"));
                meter += 0.5;
                at += 30 * MIN;
                if samples.len() == 3 || at >= to {
                    sequence += 1;
                    batches.push(batch(
                        customer,
                        "exc-1",
                        sequence,
                        std::mem::take(&mut samples),
                    ));
                }
            }
        }
    }
    batches.sort_by_key(|b| (b.first_at(), b.customer.clone()));
    batches
}

/// Runs `batches` at 1 and 2 workers and checks each expected local day
/// `(customer, start, end)`: a customer and a device window of exactly those
/// bounds, holding every hour of it, with utilisation over its own length.
/// Returns the daily customer windows of each run.
fn check_local_days(
    config: &EngineConfig,
    batches: &[DeviceBatch],
    expected: &[(&str, u64, u64)],
) -> Vec<Vec<CustomerKpi>> {
    let mut runs = Vec::new();
    for workers in [1, 2] {
        let outcome = run_batches(config.clone(), workers, 2 * HOUR_MS, batches.to_vec()).unwrap();
        assert!(outcome.late.is_empty(), "workers={workers}");
        let days = customers(&outcome, "1d");
        let device_days = device_rows(&outcome.outputs, "1d");
        for &(customer, start, end) in expected {
            let ctx = format!("workers={workers} {customer} day from {start}");
            let hours = (end - start) as f64 / HOUR_MS as f64;
            let day = days
                .iter()
                .find(|d| &*d.customer == customer && d.window_start == start)
                .unwrap_or_else(|| panic!("{ctx}: no such window in {days:#?}"));
            assert_eq!(day.window_end, end, "{ctx}");
            assert!(
                (day.totals.operating_hours - hours).abs() < 1e-9,
                "{ctx}: {day:?}"
            );
            let purchased = f64::from(day.devices_purchased);
            let utilisation = hours / (purchased * hours);
            assert!(
                (day.utilisation - utilisation).abs() < 1e-9,
                "{ctx}: {day:?}"
            );
            let device = device_days
                .iter()
                .find(|d| &*d.customer == customer && d.window_start == start)
                .unwrap_or_else(|| panic!("{ctx}: no device window"));
            assert_eq!(device.window_end, end, "{ctx}");
            assert!(
                (device.totals.operating_hours - hours).abs() < 1e-9,
                "{ctx}: {device:?}"
            );
            assert!((device.utilisation - 1.0).abs() < 1e-9, "{ctx}: {device:?}");
        }
        runs.push(days);
    }
    runs
}

/// A machine that runs around the clock for a customer in Europe/Berlin and,
/// with the same device id, for a customer on UTC, across both of Berlin's
/// 2026 daylight-saving changes. Each local day must be a window of its own
/// length (23 h on 29 March, 25 h on 25 October) holding exactly the hours
/// run in it; the UTC customer's days stay 24 h. The expected bounds are
/// written out from the time-zone rules (CET = UTC+1, CEST = UTC+2), not
/// computed by the engine's own code.
#[test]
fn daylight_saving_days_are_23_and_25_hours_and_stay_with_their_customer() {
    let config = with_zones(&[("berlin", "Europe/Berlin")]);
    let spans = [
        (utc(2026, 3, 27, 22), utc(2026, 3, 31, 0)),
        (utc(2026, 10, 24, 20), utc(2026, 10, 26, 2)),
    ];
    let batches = around_the_clock(&["berlin", "acme"], &spans);
    let expected = [
        days(
            "acme",
            &[
                utc(2026, 3, 28, 0),
                utc(2026, 3, 29, 0),
                utc(2026, 3, 30, 0),
            ],
        ),
        days("acme", &[utc(2026, 10, 25, 0), utc(2026, 10, 26, 0)]),
        days(
            "berlin",
            &[
                utc(2026, 3, 27, 23),
                utc(2026, 3, 28, 23),
                utc(2026, 3, 29, 22), // 23 h
                utc(2026, 3, 30, 22),
            ],
        ),
        days("berlin", &[utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)]), // 25 h
    ]
    .concat();
    for days in check_local_days(&config, &batches, &expected) {
        // No window of one customer took the other's bounds.
        for d in &days {
            let local = &*d.customer == "berlin";
            let on_utc_midnight = d.window_start % (24 * HOUR_MS) == 0;
            assert_eq!(on_utc_midnight, !local, "{d:?}");
        }
    }
}

/// The same around the clock for Europe/London, America/New_York and UTC
/// customers, one device id for all. On 25 October London's 25-hour day ends
/// at the same instant as the UTC customer's 24-hour day (both at
/// 2026-10-26T00:00Z) but starts an hour earlier; on 29 March London's
/// 23-hour day starts with the UTC one and ends an hour earlier. Each
/// customer keeps its own bounds and its own utilisation. Bounds from the
/// zone rules: GMT = UTC, BST = UTC+1; EST = UTC-5, EDT = UTC-4; in 2026 the
/// US changes on 8 March and 1 November.
#[test]
fn london_and_new_york_daylight_saving_days_keep_their_own_bounds_beside_utc() {
    let config = with_zones(&[("london", "Europe/London"), ("newyork", "America/New_York")]);
    let spans = [
        (utc(2026, 3, 7, 20), utc(2026, 3, 10, 8)),
        (utc(2026, 3, 27, 20), utc(2026, 3, 31, 2)),
        (utc(2026, 10, 24, 20), utc(2026, 10, 26, 8)),
        (utc(2026, 10, 30, 20), utc(2026, 11, 2, 10)),
    ];
    let batches = around_the_clock(&["london", "newyork", "acme"], &spans);
    let expected = [
        days("acme", &[utc(2026, 3, 29, 0), utc(2026, 3, 30, 0)]),
        days("acme", &[utc(2026, 10, 25, 0), utc(2026, 10, 26, 0)]),
        days(
            "london",
            &[
                utc(2026, 3, 28, 0),
                utc(2026, 3, 29, 0),
                utc(2026, 3, 29, 23), // 23 h
                utc(2026, 3, 30, 23),
            ],
        ),
        days("london", &[utc(2026, 10, 24, 23), utc(2026, 10, 26, 0)]), // 25 h
        days(
            "newyork",
            &[utc(2026, 3, 8, 5), utc(2026, 3, 9, 4), utc(2026, 3, 10, 4)], // 23 h, 24 h
        ),
        days(
            "newyork",
            &[
                utc(2026, 10, 31, 4),
                utc(2026, 11, 1, 4),
                utc(2026, 11, 2, 5),
            ], // 24 h, 25 h
        ),
    ]
    .concat();
    for days in check_local_days(&config, &batches, &expected) {
        // The two days ending at 2026-10-26T00:00Z are two windows.
        let ending = |customer: &str| {
            days.iter()
                .find(|d| &*d.customer == customer && d.window_end == utc(2026, 10, 26, 0))
                .map(|d| d.window_start)
        };
        assert_eq!(ending("acme"), Some(utc(2026, 10, 25, 0)));
        assert_eq!(ending("london"), Some(utc(2026, 10, 24, 23)));
    }
}

/// Ms since the epoch of `y-m-d h:mm` UTC.
fn utc_hm(y: i16, m: i8, d: i8, h: i8, minute: i8) -> u64 {
    utc(y, m, d, h) + minute as u64 * MIN
}

/// Customers in Asia/Kolkata (UTC+5:30), Asia/Kathmandu (UTC+5:45) and
/// Australia/Adelaide (UTC+9:30, +10:30 in summer: a 25-hour day on 5 April
/// 2026 and a 23-hour one on 4 October), and one on UTC, running one machine
/// (the same device id) around the clock. Every hourly window lies in one
/// local day: a local day is its hours, one after another from its start,
/// and they add up to it. Aligned to UTC hours, the hour across a
/// half-hour zone's midnight lay in two days: the open day left it out (a
/// provisional score short of an hour, a usual day never learned) and a
/// day's hours did not add up to it. Bounds from the zone rules: IST = UTC+5:30,
/// NPT = UTC+5:45; ACDT = UTC+10:30 until 03:00 on 5 April, ACST = UTC+9:30
/// from 02:00 on 4 October.
#[test]
fn hours_lie_in_the_local_day_in_half_and_quarter_hour_time_zones() {
    let config = with_zones(&[
        ("kolkata", "Asia/Kolkata"),
        ("kathmandu", "Asia/Kathmandu"),
        ("adelaide", "Australia/Adelaide"),
    ]);
    let spans = [
        (utc(2026, 1, 5, 12), utc(2026, 1, 7, 12)),
        (utc(2026, 4, 4, 0), utc(2026, 4, 6, 0)),
        (utc(2026, 10, 3, 0), utc(2026, 10, 5, 0)),
    ];
    let batches = around_the_clock(&["kolkata", "kathmandu", "adelaide", "acme"], &spans);
    let expected = [
        days("acme", &[utc(2026, 1, 6, 0), utc(2026, 1, 7, 0)]),
        days(
            "kolkata",
            &[utc_hm(2026, 1, 5, 18, 30), utc_hm(2026, 1, 6, 18, 30)],
        ),
        days(
            "kathmandu",
            &[utc_hm(2026, 1, 5, 18, 15), utc_hm(2026, 1, 6, 18, 15)],
        ),
        days(
            "adelaide",
            &[
                utc_hm(2026, 4, 4, 13, 30),
                utc_hm(2026, 4, 5, 14, 30), // 25 h
            ],
        ),
        days(
            "adelaide",
            &[
                utc_hm(2026, 10, 3, 14, 30),
                utc_hm(2026, 10, 4, 13, 30), // 23 h
            ],
        ),
    ]
    .concat();
    check_local_days(&config, &batches, &expected);
    for workers in [1, 2] {
        let outcome = run_batches(config.clone(), workers, 2 * HOUR_MS, batches.clone()).unwrap();
        let hours = customers(&outcome, "1h");
        let device_hours = device_rows(&outcome.outputs, "1h");
        for &(customer, start, end) in &expected {
            let ctx = format!("workers={workers} {customer} day from {start}");
            let held: Vec<_> = (hours.iter())
                .filter(|h| &*h.customer == customer && h.window_start < end)
                .filter(|h| h.window_end > start)
                .collect();
            let bounds: Vec<_> = held
                .iter()
                .map(|h| (h.window_start, h.window_end))
                .collect();
            let want: Vec<_> = (start..end)
                .step_by(HOUR_MS as usize)
                .map(|s| (s, s + HOUR_MS))
                .collect();
            assert_eq!(bounds, want, "{ctx}: the day's hours");
            for h in &held {
                assert!(
                    (h.totals.operating_hours - 1.0).abs() < 1e-9,
                    "{ctx}: {h:?}"
                );
            }
            let devices = (device_hours.iter())
                .filter(|h| &*h.customer == customer && h.window_start >= start)
                .filter(|h| h.window_end <= end)
                .count();
            assert_eq!(devices, want.len(), "{ctx}: device hours");
        }
    }
}

/// A customer in Pacific/Auckland (UTC+12, +13 in summer) and one on UTC,
/// both around the clock, across New Zealand's 23-hour day of 27 September
/// 2026 and 25-hour day of 5 April 2026: the portfolio of every date counts
/// each customer once, at 1 and 2 workers. Filed by the UTC day of its noon,
/// the local days of 27 and 28 September both fell on 27 September (the
/// customer counted twice) and no local day on 5 April.
#[test]
fn the_portfolio_counts_a_new_zealand_customer_once_a_day_across_its_clock_changes() {
    use fleetpulse_engine::Output;
    let config = with_zones(&[("auckland", "Pacific/Auckland")]);
    let spans = [
        (utc(2026, 4, 1, 0), utc(2026, 4, 9, 0)),
        (utc(2026, 9, 23, 0), utc(2026, 10, 1, 0)),
    ];
    let batches = around_the_clock(&["auckland", "acme"], &spans);
    for workers in [1, 2] {
        let outcome = run_batches(config.clone(), workers, 2 * HOUR_MS, batches.clone()).unwrap();
        let counted: std::collections::BTreeMap<u64, u32> = (outcome.outputs.iter())
            .filter_map(|o| match o {
                Output::Portfolio(p) => Some((p.window_start, p.customers)),
                _ => None,
            })
            .collect();
        let days = |from: u64, to: u64| (from..to).step_by(24 * HOUR_MS as usize);
        for date in days(utc(2026, 4, 2, 0), utc(2026, 4, 8, 0))
            .chain(days(utc(2026, 9, 24, 0), utc(2026, 9, 30, 0)))
        {
            assert_eq!(
                counted.get(&date),
                Some(&2),
                "workers={workers}: the portfolio of {date}: {counted:?}"
            );
        }
    }
}
