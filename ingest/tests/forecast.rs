//! The `forecast_red` rule on the simulator's fleets over several seeds,
//! scored by the backtest's own replay (`fleetpulse::backtest`) and checked
//! against the daily health scores the engine emitted: every customer whose
//! score turns red after settling was forecast red ahead of it, within its
//! `forecast_days`; no healthy-growing customer is; a forecast opens only on
//! a day that is not red.

use fleetpulse::backtest::{BacktestArgs, CustomerRun, Intraday, run_seed};
use fleetpulse_engine::kpi::health::Band;

fn runs() -> Vec<CustomerRun> {
    let args = BacktestArgs::default();
    (1..=3)
        .flat_map(|seed| run_seed(&args, seed).unwrap())
        .collect()
}

/// The first settled day whose score is red, from the scores alone.
fn first_red_day(run: &CustomerRun) -> Option<f64> {
    let settled = run.settled_day?;
    run.scores
        .iter()
        .filter(|(day, score)| *day >= settled && Band::of(*score) == Band::Red)
        .map(|(day, _)| *day)
        .min_by(f64::total_cmp)
}

fn score_on(run: &CustomerRun, day: f64) -> f64 {
    run.scores
        .iter()
        .find(|(d, _)| (d - day).abs() < 1e-9)
        .map(|(_, s)| *s)
        .expect("a health record on every day a rule is judged")
}

#[test]
fn forecast_red_comes_ahead_of_red_and_never_on_healthy_customers() {
    let runs = runs();
    let mut red = 0;
    for run in &runs {
        println!(
            "{:<26} {:<18} red {:?} forecast {:?}",
            run.customer, run.profile, run.red_opened, run.forecast_opened
        );
        // The engine's health_red opens on the first red day the scores show.
        assert_eq!(run.red_at(), first_red_day(run), "{}", run.customer);
        for opened in &run.forecast_opened {
            assert!(
                Band::of(score_on(run, *opened)) != Band::Red,
                "{}: forecast_red opened on a red day {opened}",
                run.customer
            );
        }
        if run.profile == "healthy-growing" {
            assert!(
                run.forecast_opened.is_empty(),
                "{}: healthy, forecast red on {:?}",
                run.customer,
                run.forecast_opened
            );
        }
        if let Some(day) = first_red_day(run).filter(|_| !run.red_when_settled()) {
            red += 1;
            let lead = run
                .lead()
                .unwrap_or_else(|| panic!("{}: red on {day} without a forecast", run.customer));
            assert!(
                lead >= 1.0 && lead <= f64::from(run.forecast_days),
                "{}: lead {lead}",
                run.customer
            );
        }
    }
    assert!(
        red > 0,
        "some simulated customer turns red: the test tests something"
    );
}

/// Intraday `devices_dark` against its daily version on the same fleets:
/// every provisional alert is settled by its day's close (confirmed or
/// retracted), and every daily episode was alerted intraday first.
#[test]
fn every_daily_devices_dark_episode_was_alerted_intraday_and_every_provisional_one_settled() {
    let runs = runs();
    let (mut provisional, mut settled, mut daily, mut first) = (0, 0, 0, 0);
    for run in &runs {
        let i = run.intraday;
        provisional += i.provisional;
        settled += i.confirmed + i.retracted;
        daily += i.confirmed + i.daily_only;
        first += i.confirmed;
    }
    assert!(daily > 0, "the fleets go dark: the test tests something");
    assert_eq!(settled, provisional);
    assert_eq!(first, daily);
    // fault_spike and champion_lost, judged from the open day's hours:
    // each provisional alert settled too.
    let rules: [fn(&CustomerRun) -> Intraday; 2] = [|r| r.intraday_faults, |r| r.intraday_champion];
    let mut raised = 0;
    for rule in rules {
        let (provisional, settled) = runs.iter().map(rule).fold((0, 0), |(p, s), i| {
            (p + i.provisional, s + i.confirmed + i.retracted)
        });
        raised += provisional;
        assert_eq!(settled, provisional);
    }
    assert!(
        raised > 0,
        "the fleets raise them: the test tests something"
    );
}

/// `fleetpulse backtest --runs FILE` writes each customer's run, daily
/// scores included, as the report counted it: the file reads back to the
/// runs of the same seed replayed again.
#[test]
fn the_runs_file_holds_every_customer_with_its_daily_scores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.json");
    let args = BacktestArgs {
        seeds: 1,
        customers: 6,
        devices: 60,
        days: 40,
        json: true,
        runs: Some(path.clone()),
        ..BacktestArgs::default()
    };
    fleetpulse::backtest::run(args.clone()).unwrap();
    let written: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let replayed = run_seed(&args, 1).unwrap();
    assert_eq!(written.len(), replayed.len());
    for (file, run) in written.iter().zip(&replayed) {
        assert_eq!(file["customer"], run.customer.as_str());
        assert_eq!(file["profile"], run.profile);
        let scores: Vec<(f64, f64)> = serde_json::from_value(file["scores"].clone()).unwrap();
        // serde_json reads a float back to within an ulp (no float_roundtrip).
        assert_eq!(scores.len(), run.scores.len(), "{}", run.customer);
        for ((day, score), (d, s)) in scores.iter().zip(&run.scores) {
            assert_eq!(day, d, "{}", run.customer);
            assert!(
                (score - s).abs() < 1e-9,
                "{} day {d}: {score} vs {s}",
                run.customer
            );
        }
        assert!(
            scores.len() >= 30,
            "{}: {} days",
            run.customer,
            scores.len()
        );
        let red: Vec<f64> = serde_json::from_value(file["red_opened"].clone()).unwrap();
        assert_eq!(red, run.red_opened);
    }
}
