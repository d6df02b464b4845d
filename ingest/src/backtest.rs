//! `fleetpulse backtest`: replays the simulator's fleets through the engine,
//! in process, over many seeds, and scores the `forecast_red` rule against
//! what then happened: precision, recall and lead time before `health_red`
//! (and before each at-risk profile's signature rule), and how many
//! healthy-growing customers it would have alarmed. BENCHMARKS.md records
//! the figures, docs/CUSTOMER_SUCCESS.md the method they justify.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use fleetpulse_engine::config::DAY_MS;
use fleetpulse_engine::kpi::forecast::Method;
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::{EventTime, Output};
use fleetpulse_sim::{Fleet, FleetSpec, Profile};
use serde::Serialize;

use crate::customers::CheckContext;

/// `fleetpulse backtest` arguments.
#[derive(Debug, Clone, Args)]
pub struct BacktestArgs {
    /// Fleets to simulate, one per seed.
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    /// The first seed; the others follow it.
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    /// Customers per fleet (profiles cycle through them: 12 gives two of each).
    #[arg(long, default_value_t = 12)]
    pub customers: usize,
    /// Devices per fleet.
    #[arg(long, default_value_t = 240)]
    pub devices: usize,
    /// Days of event time per fleet.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Timely worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Overrides `forecast_fit_days` for every customer (14-28).
    #[arg(long)]
    pub fit_days: Option<u32>,
    /// Overrides `forecast_method` for every customer.
    #[arg(long, value_parser = parse_method)]
    pub method: Option<Method>,
    /// Overrides `forecast_days` for every customer (1-90).
    #[arg(long)]
    pub forecast_days: Option<u32>,
    /// Overrides `forecast_confidence` for every customer (0-1; below
    /// `forecast_resolve`, that is lowered to it).
    #[arg(long)]
    pub confidence: Option<f64>,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Print every customer's forecast and red days.
    #[arg(long)]
    pub verbose: bool,
    /// Also write every customer's run (profile, turn day, daily scores,
    /// forecast_red and health_red days) to this file as JSON, for analyses
    /// of one's own (`benches/forecast/front.py`).
    #[arg(long, value_name = "FILE")]
    pub runs: Option<std::path::PathBuf>,
}

impl Default for BacktestArgs {
    fn default() -> Self {
        Self {
            seeds: 20,
            first_seed: 1,
            customers: 12,
            devices: 240,
            days: 90,
            workers: 2,
            fit_days: None,
            method: None,
            forecast_days: None,
            confidence: None,
            json: false,
            verbose: false,
            runs: None,
        }
    }
}

fn parse_method(text: &str) -> Result<Method, String> {
    match text {
        "local_trend" => Ok(Method::LocalTrend),
        "theil_sen" => Ok(Method::TheilSen),
        "damped_trend" => Ok(Method::DampedTrend),
        "projection" => Ok(Method::Projection),
        other => Err(format!(
            "`{other}`: projection, local_trend, damped_trend or theil_sen"
        )),
    }
}

/// What happened to one simulated customer, in days since the fleet's start.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerRun {
    /// Seed of the fleet.
    pub seed: u64,
    /// Customer id.
    pub customer: String,
    /// Simulator profile.
    pub profile: &'static str,
    /// The profile's turn day, if it has one.
    pub turn_day: Option<u32>,
    /// Days on which a forecast_red episode opened.
    pub forecast_opened: Vec<f64>,
    /// Days on which a health_red episode opened.
    pub red_opened: Vec<f64>,
    /// First day the profile's signature rule opened.
    pub signature_opened: Option<f64>,
    /// First day the journey was settled (rules that need a baseline
    /// judge from it): the first day with a health_red reading.
    pub settled_day: Option<f64>,
    /// `forecast_days` the customer ran with.
    pub forecast_days: u32,
    /// The daily health scores: (day, score).
    pub scores: Vec<(f64, f64)>,
    /// Intraday `devices_dark`: provisional alerts sent, confirmed by their
    /// day's close, retracted by it; and daily episodes with no provisional
    /// alert before them.
    pub intraday: Intraday,
    /// The same for `fault_spike`, judged from the open day's hours.
    pub intraday_faults: Intraday,
    /// The same for `champion_lost`, judged from the open day's hours.
    pub intraday_champion: Intraday,
    /// Each provisional health score of a day that closed: how far it was
    /// from the score the day closed with, in points.
    #[serde(skip)]
    pub provisional_errors: Vec<f64>,
}

impl Intraday {
    fn sum<'a>(all: impl Iterator<Item = &'a Intraday>) -> Intraday {
        all.fold(Intraday::default(), |t, i| Intraday {
            provisional: t.provisional + i.provisional,
            confirmed: t.confirmed + i.confirmed,
            retracted: t.retracted + i.retracted,
            daily_only: t.daily_only + i.daily_only,
        })
    }
}

/// The intraday rule against its daily version, counted over episodes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Intraday {
    /// Provisional alerts sent.
    pub provisional: usize,
    /// Of them, opened by the day's close (the same episode).
    pub confirmed: usize,
    /// Of them, retracted by the day's close.
    pub retracted: usize,
    /// Daily episodes the intraday judging did not see first.
    pub daily_only: usize,
}

impl CustomerRun {
    /// The first health_red opening.
    pub fn red_at(&self) -> Option<f64> {
        self.red_opened.first().copied()
    }

    /// Days the first forecast_red opening within `forecast_days` before
    /// the first turn to red came before it: the lead time, when the
    /// forecast saw it coming.
    pub fn lead(&self) -> Option<f64> {
        let red = self.red_at()?;
        let horizon = f64::from(self.forecast_days);
        self.forecast_opened
            .iter()
            .filter(|f| **f <= red && red - **f <= horizon)
            .map(|f| red - f)
            .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))))
    }

    /// Whether a forecast_red opening came true: red within `forecast_days`.
    pub fn came_true(&self, opened: f64) -> bool {
        let horizon = f64::from(self.forecast_days);
        self.red_opened
            .iter()
            .any(|r| *r >= opened && *r - opened <= horizon)
    }

    /// Red on the first settled day: nothing to forecast from.
    pub fn red_when_settled(&self) -> bool {
        matches!((self.red_at(), self.settled_day), (Some(r), Some(s)) if r <= s)
    }
}

/// The rule each of the simulator's at-risk profiles must raise
/// (docs/CUSTOMER_SUCCESS.md; the customer-success tests check it).
pub fn signature(profile: Profile) -> Option<Rule> {
    match profile {
        Profile::HealthyGrowing => None,
        Profile::SlowOnboarding => Some(Rule::OnboardingStalled),
        Profile::DecliningUsage => Some(Rule::UsageDrop),
        Profile::ChampionLeaves => Some(Rule::ChampionLost),
        Profile::DevicesGoingDark => Some(Rule::DevicesDark),
        Profile::FaultProne => Some(Rule::FaultSpike),
    }
}

/// Runs one seed's fleet through the engine and tells what happened to
/// each customer.
pub fn run_seed(args: &BacktestArgs, seed: u64) -> anyhow::Result<Vec<CustomerRun>> {
    let spec = FleetSpec {
        customers: args.customers,
        devices: args.devices,
        days: args.days,
        seed,
        ..FleetSpec::default()
    };
    let fleet = Fleet::try_generate(&spec).context("invalid fleet")?;
    let customers = crate::sim::customers_file(&fleet);
    let text = customers.to_toml();
    let mut specs = customers
        .specs(
            Path::new("sim-customers.toml"),
            &text,
            &CheckContext::default(),
        )
        .context("the simulated customers file")?;
    for spec in specs.values_mut() {
        overridden(args, &mut spec.thresholds);
    }
    let thresholds: HashMap<String, (u32, u32)> = specs
        .iter()
        .map(|(id, s)| {
            let t = &s.thresholds;
            (id.clone(), (t.forecast_days, t.settle_days))
        })
        .collect();
    let outcome = crate::sim::through_engine(&fleet, specs, args.workers, |_| true)?;
    let start = fleet.spec().start;
    let day = |at: EventTime| (at as f64 - start as f64) / DAY_MS as f64;
    let mut runs: Vec<CustomerRun> = fleet
        .customers()
        .iter()
        .map(|c| CustomerRun {
            seed,
            customer: c.id.clone(),
            profile: c.profile.name(),
            turn_day: c.turn_day,
            forecast_opened: Vec::new(),
            red_opened: Vec::new(),
            signature_opened: None,
            settled_day: None,
            forecast_days: thresholds[&c.id].0,
            scores: Vec::new(),
            intraday: Intraday::default(),
            intraday_faults: Intraday::default(),
            intraday_champion: Intraday::default(),
            provisional_errors: Vec::new(),
        })
        .collect();
    let index: HashMap<String, usize> = (runs.iter().enumerate())
        .map(|(i, r)| (r.customer.clone(), i))
        .collect();
    let profiles: HashMap<&str, Profile> = (fleet.customers().iter())
        .map(|c| (&*c.id, c.profile))
        .collect();
    // The intraday rule, in emission order: a provisional open comes
    // before its day's close.
    let mut sent: std::collections::HashSet<(&str, Rule, EventTime)> = Default::default();
    for o in &outcome.outputs {
        let Output::Alert(a) = o else { continue };
        let Some(&i) = index.get(&*a.customer) else {
            continue;
        };
        let key = (&*a.customer, a.rule, a.opened_at);
        let counts = match a.rule {
            Rule::DevicesDark => &mut runs[i].intraday,
            Rule::FaultSpike => &mut runs[i].intraday_faults,
            Rule::ChampionLost => &mut runs[i].intraday_champion,
            _ => continue,
        };
        match (a.status, a.provisional) {
            (AlertStatus::Open, true) => {
                counts.provisional += 1;
                sent.insert(key);
            }
            (AlertStatus::Retracted, true) => counts.retracted += 1,
            (AlertStatus::Open, false) => {
                if sent.contains(&key) {
                    counts.confirmed += 1;
                } else {
                    counts.daily_only += 1;
                }
            }
            _ => {}
        }
    }
    // The daily rules' openings (a provisional one is settled by its
    // day's close, which opens the same episode or retracts it).
    let mut alerts: Vec<_> = (outcome.outputs.iter())
        .filter_map(|o| match o {
            Output::Alert(a) if a.status == AlertStatus::Open && !a.provisional => Some(a),
            _ => None,
        })
        .collect();
    alerts.sort_by_key(|a| a.opened_at);
    for a in alerts {
        let Some(&i) = index.get(&*a.customer) else {
            continue;
        };
        let run = &mut runs[i];
        let at = day(a.opened_at);
        if a.rule == Rule::ForecastRed {
            run.forecast_opened.push(at);
        } else if a.rule == Rule::HealthRed {
            run.red_opened.push(at);
        }
        if signature(profiles[&*a.customer]) == Some(a.rule) && run.signature_opened.is_none() {
            run.signature_opened = Some(at);
        }
    }
    // Closed days' scores, and the provisional ones of each day (emitted
    // before its close) against the score it closed with.
    let mut provisional: HashMap<(usize, EventTime), Vec<f64>> = HashMap::new();
    for o in &outcome.outputs {
        let Output::Health(h) = o else { continue };
        let Some(&i) = index.get(&*h.customer) else {
            continue;
        };
        if h.provisional {
            let so_far = provisional.entry((i, h.window_end)).or_default();
            so_far.push(h.score);
            continue;
        }
        let at = day(h.window_end);
        let run = &mut runs[i];
        run.scores.push((at, h.score));
        let so_far = provisional.remove(&(i, h.window_end)).unwrap_or_default();
        (run.provisional_errors).extend(so_far.into_iter().map(|p| (p - h.score).abs()));
        // The first settled day: the journey counts days from activation.
        if h.days_since_activation >= f64::from(thresholds[&*h.customer].1) {
            run.settled_day = Some(run.settled_day.map_or(at, |s: f64| s.min(at)));
        }
    }
    Ok(runs)
}

/// The backtest's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Seeds run.
    pub seeds: u64,
    /// Customers simulated.
    pub customers: usize,
    /// forecast_red episodes opened.
    pub forecasts: usize,
    /// Of them, followed by health_red within `forecast_days`.
    pub came_true: usize,
    /// came_true / forecasts.
    pub precision: f64,
    /// Of the episodes, on customers of an at-risk profile (the
    /// simulator's ground truth that the customer is drifting away, red or
    /// not).
    pub on_at_risk: usize,
    /// on_at_risk / forecasts.
    pub precision_at_risk: f64,
    /// At-risk customers with any forecast_red episode, of all of them.
    pub at_risk_alarmed: usize,
    /// At-risk customers.
    pub at_risk: usize,
    /// Customers that turned red after their first settled day.
    pub turned_red: usize,
    /// Of them, forecast within `forecast_days` before.
    pub forecast_in_time: usize,
    /// forecast_in_time / turned_red.
    pub recall: f64,
    /// Customers red on their first settled day (nothing to forecast from;
    /// not in recall).
    pub red_when_settled: usize,
    /// Median days from forecast_red to health_red, over the customers it
    /// saw coming.
    pub median_lead_days: Option<f64>,
    /// The same on the at-risk (declining) profiles only.
    pub median_lead_days_declining: Option<f64>,
    /// Median days from forecast_red to the profile's signature rule (first
    /// openings; negative: the forecast came after it).
    pub median_lead_over_signature_days: Option<f64>,
    /// Healthy-growing customers simulated.
    pub healthy: usize,
    /// Of them, with any forecast_red episode.
    pub healthy_alarmed: usize,
    /// healthy_alarmed / healthy.
    pub healthy_false_positive_rate: f64,
    /// Per profile: customers, turned red, forecast in time, median lead,
    /// customers with any forecast_red.
    pub profiles: Vec<ProfileFigures>,
    /// Intraday `devices_dark` against the daily rule, over every customer.
    pub intraday: Intraday,
    /// The same for `fault_spike`.
    pub intraday_faults: Intraday,
    /// The same for `champion_lost`.
    pub intraday_champion: Intraday,
    /// Provisional health scores of days that closed.
    pub provisional_scores: usize,
    /// Their mean distance from the score the day closed with, in points.
    pub provisional_mean_error: f64,
    /// The share of them within 5 points of it.
    pub provisional_within_5: f64,
}

/// One profile's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProfileFigures {
    /// Profile name.
    pub profile: &'static str,
    /// Customers.
    pub customers: usize,
    /// Turned red after settling.
    pub turned_red: usize,
    /// Of them, forecast in time.
    pub forecast_in_time: usize,
    /// Customers with any forecast_red episode.
    pub alarmed: usize,
    /// Of their episodes, came true.
    pub forecasts: usize,
    /// Of them, came true.
    pub came_true: usize,
    /// Median lead before health_red.
    pub median_lead_days: Option<f64>,
}

/// Median of `values` (sorted in place).
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn ratio(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

/// Scores the runs.
pub fn score(seeds: u64, runs: &[CustomerRun]) -> Report {
    let errors: Vec<f64> = (runs.iter())
        .flat_map(|r| r.provisional_errors.iter().copied())
        .collect();
    let figures = |runs: &[&CustomerRun]| {
        let forecasts: usize = runs.iter().map(|r| r.forecast_opened.len()).sum();
        let came_true: usize = runs
            .iter()
            .map(|r| {
                r.forecast_opened
                    .iter()
                    .filter(|f| r.came_true(**f))
                    .count()
            })
            .sum();
        let red: Vec<&&CustomerRun> = runs
            .iter()
            .filter(|r| r.red_at().is_some() && !r.red_when_settled())
            .collect();
        let mut leads: Vec<f64> = red.iter().filter_map(|r| r.lead()).collect();
        (
            forecasts,
            came_true,
            red.len(),
            leads.len(),
            median(&mut leads),
        )
    };
    let all: Vec<&CustomerRun> = runs.iter().collect();
    let (forecasts, came_true, turned_red, in_time, median_lead) = figures(&all);
    let declining: Vec<&CustomerRun> = runs
        .iter()
        .filter(|r| r.profile != Profile::HealthyGrowing.name())
        .collect();
    let healthy: Vec<&CustomerRun> = runs
        .iter()
        .filter(|r| r.profile == Profile::HealthyGrowing.name())
        .collect();
    let on_at_risk: usize = declining.iter().map(|r| r.forecast_opened.len()).sum();
    let at_risk_alarmed = declining
        .iter()
        .filter(|r| !r.forecast_opened.is_empty())
        .count();
    let healthy_alarmed = healthy
        .iter()
        .filter(|r| !r.forecast_opened.is_empty())
        .count();
    let mut over_signature: Vec<f64> = runs
        .iter()
        .filter_map(|r| Some(r.signature_opened? - r.forecast_opened.first()?))
        .collect();
    let profiles = Profile::ALL
        .iter()
        .map(|p| {
            let mine: Vec<&CustomerRun> = runs.iter().filter(|r| r.profile == p.name()).collect();
            let (forecasts, came_true, turned_red, forecast_in_time, median_lead_days) =
                figures(&mine);
            ProfileFigures {
                profile: p.name(),
                customers: mine.len(),
                turned_red,
                forecast_in_time,
                alarmed: mine
                    .iter()
                    .filter(|r| !r.forecast_opened.is_empty())
                    .count(),
                forecasts,
                came_true,
                median_lead_days,
            }
        })
        .collect();
    Report {
        seeds,
        customers: runs.len(),
        forecasts,
        came_true,
        precision: ratio(came_true, forecasts),
        on_at_risk,
        precision_at_risk: ratio(on_at_risk, forecasts),
        at_risk_alarmed,
        at_risk: declining.len(),
        turned_red,
        forecast_in_time: in_time,
        recall: ratio(in_time, turned_red),
        red_when_settled: runs.iter().filter(|r| r.red_when_settled()).count(),
        median_lead_days: median_lead,
        median_lead_days_declining: figures(&declining).4,
        median_lead_over_signature_days: median(&mut over_signature),
        healthy: healthy.len(),
        healthy_alarmed,
        healthy_false_positive_rate: ratio(healthy_alarmed, healthy.len()),
        profiles,
        intraday: Intraday::sum(runs.iter().map(|r| &r.intraday)),
        intraday_faults: Intraday::sum(runs.iter().map(|r| &r.intraday_faults)),
        intraday_champion: Intraday::sum(runs.iter().map(|r| &r.intraday_champion)),
        provisional_scores: errors.len(),
        provisional_mean_error: errors.iter().sum::<f64>() / errors.len().max(1) as f64,
        provisional_within_5: ratio(errors.iter().filter(|e| **e <= 5.0).count(), errors.len()),
    }
}

/// Applies the forecast options to a customer's thresholds. The rule
/// resolves under `forecast_resolve`: a confidence below it lowers it.
fn overridden(args: &BacktestArgs, t: &mut fleetpulse_engine::kpi::risk::RiskThresholds) {
    t.forecast_fit_days = args.fit_days.unwrap_or(t.forecast_fit_days);
    t.forecast_method = args.method.unwrap_or(t.forecast_method);
    t.forecast_days = args.forecast_days.unwrap_or(t.forecast_days);
    t.forecast_confidence = args.confidence.unwrap_or(t.forecast_confidence);
    t.forecast_resolve = t.forecast_resolve.min(t.forecast_confidence);
}

/// The seeds to run, once the arguments are known to be in range: a
/// count that ran past the last seed wrapped to none ("18446744073709551615
/// seeds, 0 customers"), and a threshold out of range was clamped or gave
/// no alarm, without a word.
fn check(args: &BacktestArgs) -> anyhow::Result<std::ops::Range<u64>> {
    if args.seeds == 0 {
        anyhow::bail!("--seeds: 0; at least one fleet is needed");
    }
    let end = (args.first_seed.checked_add(args.seeds)).with_context(|| {
        format!(
            "--first-seed {} with --seeds {} runs past the last seed",
            args.first_seed, args.seeds
        )
    })?;
    let mut t = fleetpulse_engine::kpi::risk::RiskThresholds::default();
    overridden(args, &mut t);
    t.check().map_err(|e| {
        let named = e
            .replace("forecast_fit_days", "--fit-days")
            .replace("forecast_days", "--forecast-days")
            .replace("forecast_confidence", "--confidence");
        anyhow::anyhow!(named)
    })?;
    Ok(args.first_seed..end)
}

/// Runs the backtest and prints its report.
pub fn run(args: BacktestArgs) -> anyhow::Result<()> {
    let seeds = check(&args)?;
    let mut runs = Vec::new();
    for seed in seeds {
        runs.extend(run_seed(&args, seed)?);
    }
    let report = score(args.seeds, &runs);
    if let Some(path) = &args.runs {
        let json = serde_json::to_vec(&runs)?;
        (std::fs::write(path, json)).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if args.verbose {
        for r in &runs {
            println!(
                "seed {:>3} {:<26} {:<18} turn {:>4} settled {:>5} red {:<20} forecast {:<24} signature {:?}",
                r.seed,
                r.customer,
                r.profile,
                r.turn_day.map_or("-".into(), |d| d.to_string()),
                r.settled_day.map_or("-".into(), |d| format!("{d:.0}")),
                format!("{:.0?}", r.red_opened),
                format!("{:.0?}", r.forecast_opened),
                r.signature_opened.map(|d| d.round()),
            );
            let mut scores = r.scores.clone();
            scores.sort_by(|a, b| a.0.total_cmp(&b.0));
            let line: Vec<String> = scores
                .iter()
                .step_by(3)
                .map(|(_, s)| format!("{s:.0}"))
                .collect();
            println!("    scores every 3 days: {}", line.join(" "));
        }
    }
    print!("{}", render(&report));
    Ok(())
}

/// The report as text tables.
pub fn render(r: &Report) -> String {
    let days = |d: Option<f64>| d.map_or("-".to_string(), |d| format!("{d:.1}"));
    let mut out = format!(
        "forecast_red backtest: {} seeds, {} customers\n\
         precision          {:.3} ({} of {} episodes followed by health_red within forecast_days)\n\
         precision at-risk  {:.3} ({} of {} episodes on customers of an at-risk profile; {} of {} at-risk customers alarmed)\n\
         recall             {:.3} ({} of {} customers that turned red after settling; {} red when settled)\n\
         median lead        {} days before health_red (declining profiles: {})\n\
         lead over signature {} days (median, first forecast_red to the profile's signature rule)\n\
         healthy-growing FP {:.3} ({} of {} customers)\n\n",
        r.seeds,
        r.customers,
        r.precision,
        r.came_true,
        r.forecasts,
        r.precision_at_risk,
        r.on_at_risk,
        r.forecasts,
        r.at_risk_alarmed,
        r.at_risk,
        r.recall,
        r.forecast_in_time,
        r.turned_red,
        r.red_when_settled,
        days(r.median_lead_days),
        days(r.median_lead_days_declining),
        days(r.median_lead_over_signature_days),
        r.healthy_false_positive_rate,
        r.healthy_alarmed,
        r.healthy,
    );
    out.push_str(
        "profile              customers  red  in time  alarmed  episodes  true  median lead\n",
    );
    for p in &r.profiles {
        out.push_str(&format!(
            "{:<20} {:>9} {:>4} {:>8} {:>8} {:>9} {:>5} {:>12}\n",
            p.profile,
            p.customers,
            p.turned_red,
            p.forecast_in_time,
            p.alarmed,
            p.forecasts,
            p.came_true,
            days(p.median_lead_days)
        ));
    }
    out.push('\n');
    for (rule, i) in [
        ("devices_dark", &r.intraday),
        ("fault_spike", &r.intraday_faults),
        ("champion_lost", &r.intraday_champion),
    ] {
        out.push_str(&format!(
            "intraday {rule}: {} provisional alerts, {} confirmed by the day's close (precision {:.3}), {} retracted; \
             {} of {} daily episodes alerted intraday first (recall {:.3})\n",
            i.provisional,
            i.confirmed,
            ratio(i.confirmed, i.provisional),
            i.retracted,
            i.confirmed,
            i.confirmed + i.daily_only,
            ratio(i.confirmed, i.confirmed + i.daily_only),
        ));
    }
    out.push_str(&format!(
        "provisional health: {} scores of open days; {:.2} points from the score the day closed with on average, {:.3} within 5 points\n",
        r.provisional_scores, r.provisional_mean_error, r.provisional_within_5,
    ));
    out
}
