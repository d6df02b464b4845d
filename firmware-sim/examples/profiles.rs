//! Prints each customer of a fleet with the numbers that show its profile:
//! the quickest way to see what the simulator produces.
//!
//! ```text
//! cargo run --release -p fleetpulse-sim --example profiles -- [seed] [devices] [days]
//! ```

use fleetpulse_sim::calendar::{DAY_MS, date_of};
use fleetpulse_sim::{DayTruth, Fleet, FleetSpec};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("numbers"));
    let spec = FleetSpec {
        seed: args.next().unwrap_or(42),
        devices: args.next().unwrap_or(300) as usize,
        days: args.next().unwrap_or(90) as u32,
        ..FleetSpec::default()
    };
    let fleet = Fleet::generate(&spec);
    let truth = fleet.ground_truth();
    let rows = truth.rows();
    println!(
        "{:<26} {:<19} {:<11} {:>8} {:>8} {:>5} {:>7} {:>7} {:>7} {:>7} {:>6}",
        "customer",
        "profile",
        "segment",
        "arr",
        "renewal",
        "turn",
        "ops/d<",
        "ops/d>",
        "flt/d<",
        "flt/d>",
        "adv"
    );
    for c in fleet.customers() {
        let turn = c.turn_day.unwrap_or(spec.days / 2);
        let mine: Vec<&DayTruth> = rows.iter().filter(|r| r.customer == c.id).collect();
        let day = |r: &DayTruth| ((r.day_start_ms - spec.start) / DAY_MS) as u32;
        let mean = |lo: u32, hi: u32, f: &dyn Fn(&DayTruth) -> f64| {
            let v: Vec<f64> = mine
                .iter()
                .filter(|r| (lo..hi).contains(&day(r)))
                .map(|r| f(r))
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let before = turn.saturating_sub(14);
        let after = (turn + 14).min(spec.days);
        println!(
            "{:<26} {:<19} {:<11} {:>8} {:>8} {:>5} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>6}",
            c.id,
            c.profile.name(),
            c.segment.name(),
            c.contract.arr,
            date_of(c.contract.renewal_ms),
            c.turn_day.map_or("-".to_owned(), |d| d.to_string()),
            mean(before, turn, &|r| r.operating_hours),
            mean(turn, after, &|r| r.operating_hours),
            mean(before, turn, &|r| r.fault_count as f64),
            mean(turn, after, &|r| r.fault_count as f64),
            mine.iter()
                .map(|r| r.advanced_features_used)
                .max()
                .unwrap_or(0),
        );
    }
    println!(
        "{} messages, {} samples",
        fleet.message_count(),
        fleet.sample_count()
    );
}
