//! A device is (customer, device id), and a replaced telematics unit (its
//! sequence back at 1 under a higher unit epoch) loses nothing: the dataflow
//! at 1 and 2 workers against the reference fold and against the same
//! readings without the clash or the replacement.

mod common;

use common::{MIN, T0, batch, customer_rows, device_rows, interleave, normalise};
use fleetpulse_engine::config::HOUR_MS;
use fleetpulse_engine::run::run_batches;
use fleetpulse_engine::{DeviceBatch, EngineConfig, MachineState, Sample, reference};
/// 2026-01-05T12:00:00Z in Unix seconds: when the replacement unit started.
const NEW_UNIT: u64 = 1_767_614_400;

fn sample(at: u64, hours: f64, cycles: u32) -> Sample {
    Sample {
        at,
        state: MachineState::Running,
        operating_hours: hours,
        idle_hours: hours / 4.0,
        fuel_litres: hours * 12.0,
        cycles,
        ..Sample::default()
    }
}

/// `n` hourly batches of 6 readings 10 minutes apart from `start`, with
/// cumulative hours rising from `hours` by `step` per reading.
fn readings(
    customer: &str,
    device: &str,
    start: u64,
    n: u64,
    hours: f64,
    step: f64,
) -> Vec<DeviceBatch> {
    (0..n)
        .map(|b| {
            let samples = (0..6)
                .map(|j| {
                    let k = b * 6 + j;
                    sample(
                        start + k * 10 * MIN,
                        hours + k as f64 * step,
                        (k % 5) as u32,
                    )
                })
                .collect();
            batch(customer, device, 0, b + 1, samples)
        })
        .collect()
}

#[test]
fn two_customers_with_the_same_device_id_are_both_counted() {
    // Customer B's exc-07 is far ahead in its sequence (1000..) and works
    // twice as hard; A's exc-07 starts at 1.
    let mut b: Vec<DeviceBatch> = readings("bolt", "exc-07", T0, 6, 5000.0, 0.2);
    for batch in &mut b {
        batch.sequence += 999;
    }
    let a = readings("acme", "exc-07", T0 + 5 * MIN, 6, 100.0, 0.1);
    let fed = interleave([a.clone(), b.clone()].concat());
    // The same fleet without the clash: B's unit under another id.
    let renamed = |batches: &[DeviceBatch]| {
        batches
            .iter()
            .map(|x| DeviceBatch {
                device: "exc-07-bolt".into(),
                ..x.clone()
            })
            .collect::<Vec<_>>()
    };
    let apart = interleave([a.clone(), renamed(&b)].concat());
    let expected = normalise(&reference::fold(&EngineConfig::default(), fed.clone()));
    let without_clash = run_batches(EngineConfig::default(), 1, 2 * HOUR_MS, apart).unwrap();
    for workers in [1, 2] {
        let outcome =
            run_batches(EngineConfig::default(), workers, 2 * HOUR_MS, fed.clone()).unwrap();
        assert!(outcome.late.is_empty());
        assert_eq!(outcome.stats.duplicates, 0, "workers={workers}");
        assert_eq!(outcome.stats.samples, 72, "workers={workers}");
        assert_eq!(normalise(&outcome.outputs), expected, "workers={workers}");

        // Customer by customer, the same as without the clash.
        let days = customer_rows(&outcome.outputs, "1d");
        assert_eq!(days, customer_rows(&without_clash.outputs, "1d"));
        assert_eq!(days.len(), 2);
        let (acme, bolt) = (&days[0], &days[1]);
        // 36 readings each, the first the baseline: 35 increments.
        assert!(
            (acme.totals.operating_hours - 35.0 * 0.1).abs() < 1e-9,
            "{acme:?}"
        );
        assert!(
            (bolt.totals.operating_hours - 35.0 * 0.2).abs() < 1e-9,
            "{bolt:?}"
        );
        assert_eq!((acme.reporting_devices, bolt.reporting_devices), (1, 1));
        assert_eq!((acme.totals.samples, bolt.totals.samples), (36, 36));

        // Device rows: one exc-07 per customer, each with its own hours.
        let devices = device_rows(&outcome.outputs, "1d");
        assert_eq!(devices.len(), 2);
        assert_eq!(&*devices[0].customer, "acme");
        assert_eq!(&*devices[1].customer, "bolt");
        assert!(devices.iter().all(|d| &*d.device == "exc-07"));
        assert!((devices[0].totals.operating_hours - acme.totals.operating_hours).abs() < 1e-9);
        assert!((devices[1].totals.operating_hours - bolt.totals.operating_hours).abs() < 1e-9);
    }
}

/// A unit that works 6 hours of readings, is replaced at T0+3h by one whose
/// sequence restarts at 1 under a higher epoch, and the old unit's last batch
/// arrives after the new unit's first (store-and-forward).
fn replaced(new_hours_from_zero: bool) -> (Vec<DeviceBatch>, Vec<DeviceBatch>) {
    let continuous = readings("acme", "exc-07", T0, 6, 100.0, 0.1);
    let mut fed = Vec::new();
    for (b, original) in continuous.iter().enumerate() {
        let mut x = original.clone();
        if b >= 3 {
            x.unit_epoch = NEW_UNIT;
            x.sequence = b as u64 - 2;
            if new_hours_from_zero {
                // The new unit's own counters start at 0 at its epoch,
                // 10 minutes of work after the old unit's last reading.
                let base = continuous[2].samples[5].operating_hours;
                for s in &mut x.samples {
                    let work = s.operating_hours - base;
                    *s = sample(s.at, work, s.cycles);
                }
            }
        } else {
            x.unit_epoch = 1_700_000_000;
        }
        fed.push(x);
    }
    // Old unit's batch 3 delivered after the new unit's first batch, and the
    // new unit's first batch redelivered.
    fed.swap(2, 3);
    fed.insert(4, fed[2].clone());
    (continuous, fed)
}

#[test]
fn a_replaced_unit_loses_nothing() {
    for from_zero in [false, true] {
        let (continuous, fed) = replaced(from_zero);
        let baseline = run_batches(EngineConfig::default(), 1, 2 * HOUR_MS, continuous).unwrap();
        let expected = normalise(&reference::fold(&EngineConfig::default(), fed.clone()));
        for workers in [1, 2] {
            let outcome =
                run_batches(EngineConfig::default(), workers, 2 * HOUR_MS, fed.clone()).unwrap();
            let ctx = format!("from_zero={from_zero} workers={workers}");
            assert!(outcome.late.is_empty(), "{ctx}");
            assert_eq!(outcome.stats.samples, 36, "{ctx}");
            assert_eq!(outcome.stats.duplicates, 1, "{ctx}");
            assert_eq!(outcome.stats.replays_too_old, 0, "{ctx}");
            assert_eq!(outcome.stats.counter_resets, 0, "{ctx}");
            assert_eq!(normalise(&outcome.outputs), expected, "{ctx}");
            // Every hour as if the unit had never been replaced.
            let got = customer_rows(&outcome.outputs, "1h");
            let want = customer_rows(&baseline.outputs, "1h");
            assert_eq!(got.len(), want.len(), "{ctx}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.window_start, w.window_start, "{ctx}");
                assert!(
                    (g.totals.operating_hours - w.totals.operating_hours).abs() < 1e-9,
                    "{ctx}: {g:?} {w:?}"
                );
                assert!(
                    (g.totals.idle_hours - w.totals.idle_hours).abs() < 1e-9,
                    "{ctx}"
                );
                assert!(
                    (g.totals.fuel_litres - w.totals.fuel_litres).abs() < 1e-9,
                    "{ctx}"
                );
                assert_eq!(
                    (g.totals.cycles, g.totals.samples),
                    (w.totals.cycles, w.totals.samples),
                    "{ctx}"
                );
            }
            let day = &customer_rows(&outcome.outputs, "1d")[0];
            assert!(
                (day.totals.operating_hours - 35.0 * 0.1).abs() < 1e-9,
                "{ctx}: {day:?}"
            );
        }
    }
}

#[test]
fn an_old_units_replay_is_still_refused_after_the_replacement() {
    let (_, mut fed) = replaced(false);
    // The old unit's batch 1 and the new unit's batch 2 come again.
    let old = fed[0].clone();
    let new = fed
        .iter()
        .find(|b| b.unit_epoch == NEW_UNIT && b.sequence == 2)
        .unwrap()
        .clone();
    fed.push(old);
    fed.push(new);
    let lateness = 24 * HOUR_MS;
    let outcome = run_batches(EngineConfig::default(), 2, lateness, fed.clone()).unwrap();
    assert_eq!(outcome.stats.duplicates, 3);
    assert_eq!(outcome.stats.samples, 36);
    assert_eq!(
        normalise(&outcome.outputs),
        normalise(&reference::fold(&EngineConfig::default(), fed))
    );
}

/// A unit whose sequences jump about (glitching firmware, or a stranger
/// on an open broker): 200 batches, each numbered a million or more from
/// the last, in no order, with readings in yet another order. Admission,
/// telling each new in arrival order, keeps at most 64 missing ranges and
/// forgets the oldest; the dataflow, which applies a tick's batches in
/// event-time order, used to tell them new in that order too, forgot other
/// ranges, and dropped as too old batches admission had acknowledged (21
/// in a hostile run). Every batch admission takes is applied, at 1 and 2
/// workers: as many samples as it took, none too old.
#[test]
fn a_unit_whose_sequences_jump_about_loses_nothing_admission_took() {
    use fleetpulse_engine::operators::device_state::{Admission, UnitSequences};
    let n = 200u64;
    // Two unrelated orders: arrival (the index), sequences and readings.
    let spread = |i: u64, by: u64| (i * by) % n;
    let fed: Vec<DeviceBatch> = (0..n)
        .map(|i| {
            let at = T0 + spread(i, 37) * MIN;
            let sequence = 1_000_000 * (1 + spread(i, 71)) + i;
            batch("acme", "exc-1", 1, sequence, vec![sample(at, i as f64, 1)])
        })
        .collect();
    let mut admission = UnitSequences::default();
    let mut gaps = 0;
    let taken: Vec<DeviceBatch> = (fed.iter())
        .filter(|b| admission.admit(b.unit_epoch, b.sequence, &mut gaps, true) == Admission::New)
        .cloned()
        .collect();
    assert!(taken.len() < fed.len(), "admission forgot no range");
    for workers in [1, 2] {
        let outcome = run_batches(
            EngineConfig::default(),
            workers,
            24 * HOUR_MS,
            taken.clone(),
        )
        .unwrap();
        assert!(outcome.late.is_empty());
        assert_eq!(outcome.stats.replays_too_old, 0, "workers={workers}");
        assert_eq!(
            outcome.stats.samples,
            taken.len() as u64,
            "workers={workers}"
        );
    }
}

/// A unit that uploads its buffer newest first while its sequences skip
/// one at every batch: sequences rise in arrival as event times fall.
/// Admission, in arrival order, takes every batch; the dataflow used to
/// tell them new in event-time order, where each batch split the missing
/// range again, and past its 1,024 ranges it dropped as too old 133 of
/// 1,246 acknowledged batches in a hostile run. Told in arrival order it
/// applies them all, at 1 and 2 workers, and its records equal the
/// reference fold's.
#[test]
fn a_buffer_uploaded_newest_first_with_a_sequence_gap_at_every_batch_loses_nothing() {
    use fleetpulse_engine::operators::device_state::{Admission, UnitSequences};
    let n = 1_300u64;
    let fed: Vec<DeviceBatch> = (0..n)
        .map(|i| {
            let at = T0 + (n - i) * MIN;
            let hours = (n - i) as f64 / 60.0;
            batch("acme", "exc-1", 1, 2 * i + 1, vec![sample(at, hours, 1)])
        })
        .collect();
    let mut admission = UnitSequences::default();
    let mut gaps = 0;
    for b in &fed {
        let told = admission.admit(b.unit_epoch, b.sequence, &mut gaps, true);
        assert_eq!(told, Admission::New, "admission refused {}", b.sequence);
    }
    let expected = normalise(&reference::fold(&EngineConfig::default(), fed.clone()));
    for workers in [1, 2] {
        let outcome =
            run_batches(EngineConfig::default(), workers, 24 * HOUR_MS, fed.clone()).unwrap();
        assert!(outcome.late.is_empty());
        assert_eq!(outcome.stats.replays_too_old, 0, "workers={workers}");
        assert_eq!(outcome.stats.samples, n, "workers={workers}");
        assert_eq!(normalise(&outcome.outputs), expected, "workers={workers}");
    }
}
