//! Is the health score any good? `fleetpulse health-validation` runs
//! simulated fleets whose customers all come to a renewal decision
//! (`FleetSpec::renewals`: churn or renew, drawn from odds that depend on
//! the profile) through the engine in-process, and prints, per horizon
//! before the decision, how well the daily score separated the churned
//! from the renewed (ROC AUC) and how often each band churned. The
//! arithmetic is `fleetpulse_engine::kpi::health_validation`; the service
//! serves the same over its own health records and contract events at
//! `GET /api/health-validation`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use fleetpulse_engine::kpi::health::Band;
use fleetpulse_engine::kpi::health_validation::{
    Case, DEFAULT_HORIZONS_DAYS, Decision, HealthValidation, ScoreHistory, auc, decisions, validate,
};
use fleetpulse_engine::kpi::revenue_retention::ArrHistory;
use fleetpulse_engine::{HealthRecord, Output};
use fleetpulse_sim::{Fleet, FleetSpec};

use crate::customers::{CheckContext, CustomersFile};

/// `fleetpulse health-validation` arguments.
#[derive(Debug, Clone, Args)]
pub struct HealthValidationArgs {
    /// Simulated fleets, one per seed.
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// The first seed; the others follow it.
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    /// Customers per fleet.
    #[arg(long, default_value_t = 60)]
    pub customers: usize,
    /// Machines per fleet.
    #[arg(long, default_value_t = 180)]
    pub devices: usize,
    /// Days simulated; every renewal falls between 75% and 95% of them.
    #[arg(long, default_value_t = 180)]
    pub days: u32,
    /// Timely worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

impl HealthValidationArgs {
    /// The fleet of `seed`.
    pub fn spec(&self, seed: u64) -> FleetSpec {
        FleetSpec {
            customers: self.customers,
            devices: self.devices,
            days: self.days,
            seed,
            renewals: true,
            ..FleetSpec::default()
        }
    }
}

/// The figures of one simulated fleet.
#[derive(Debug, Clone)]
pub struct SeedValidation {
    /// Its seed.
    pub seed: u64,
    /// Each customer's scores and decisions.
    pub histories: Vec<ScoreHistory>,
    /// The score's record over them.
    pub validation: HealthValidation,
    /// Each decision scored by its customer's churn odds instead
    /// (`1 - Profile::churn_probability`): the best any score can do on
    /// this fleet, since the simulator draws the decision from those odds.
    pub ceiling: Vec<Case>,
}

/// Each customer's daily scores (from `health`, keyed by the end of the
/// day) and decisions (from its contract events): the input of the
/// validation, shared by the CLI and the API. One entry per contract
/// history.
pub fn score_histories<'a>(
    health: impl IntoIterator<Item = &'a HealthRecord>,
    contracts: &[ArrHistory],
) -> Vec<ScoreHistory> {
    let mut scores: BTreeMap<&str, BTreeMap<u64, _>> = BTreeMap::new();
    for h in health {
        scores
            .entry(&*h.customer)
            .or_default()
            .insert(h.window_end, (h.score, h.band));
    }
    contracts
        .iter()
        .map(|c| ScoreHistory {
            customer: c.customer.clone(),
            scores: scores.remove(&*c.customer).unwrap_or_default(),
            decisions: decisions(c),
        })
        .collect()
}

/// The customers file of a simulated fleet with its planted contract
/// history, checked as the service would.
fn customers_of(fleet: &Fleet) -> anyhow::Result<(CustomersFile, String)> {
    let file = crate::sim::with_contract_events(crate::sim::customers_file(fleet), fleet);
    let text = file.to_toml();
    let file = CustomersFile::parse(Path::new("sim.toml"), &text)
        .context("the simulated customers file")?;
    Ok((file, text))
}

/// Runs the fleet of `spec` through the engine (`workers` workers) and
/// validates its daily health against its planted decisions.
pub fn simulate(spec: &FleetSpec, workers: usize) -> anyhow::Result<SeedValidation> {
    let fleet = Fleet::try_generate(spec).context("invalid fleet")?;
    let (file, text) = customers_of(&fleet)?;
    let path = Path::new("sim.toml");
    let book = file.contract_book(path, &text)?;
    let specs = file.specs(path, &text, &CheckContext::default())?;
    let outcome = crate::sim::through_engine(
        &fleet,
        specs,
        workers,
        |o| matches!(o, Output::Health(h) if !h.provisional),
    )
    .context("engine")?;
    let health = outcome.outputs.iter().filter_map(|o| match o {
        Output::Health(h) => Some(&**h),
        _ => None,
    });
    let histories = score_histories(health, &book.histories);
    let validation = validate(&histories, &DEFAULT_HORIZONS_DAYS);
    let ceiling = fleet
        .customers()
        .iter()
        .filter_map(|c| {
            let churned = fleet.churns(c)?;
            let score = 1.0 - c.profile.churn_probability();
            Some(Case {
                score,
                band: Band::of(100.0 * score),
                churned,
            })
        })
        .collect();
    Ok(SeedValidation {
        seed: spec.seed,
        histories,
        validation,
        ceiling,
    })
}

/// Runs `fleetpulse health-validation`: prints per seed and pooled. The
/// engine's input blocks, so it runs off the async workers.
pub async fn run(args: HealthValidationArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .context("health validation")?
}

fn run_blocking(args: HealthValidationArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seeds > 0, "--seeds must be at least 1");
    let mut seeds = Vec::new();
    for seed in args.first_seed..args.first_seed + args.seeds {
        let started = std::time::Instant::now();
        let result = simulate(&args.spec(seed), args.workers)?;
        eprintln!("seed {seed}: {:.1} s", started.elapsed().as_secs_f64());
        seeds.push(result);
    }
    print!("{}", render(&args, &seeds));
    Ok(())
}

fn shown(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |a| format!("{a:.3}"))
}

/// The report: one line per seed, then the cases of every seed pooled.
pub fn render(args: &HealthValidationArgs, seeds: &[SeedValidation]) -> String {
    let mut out = String::new();
    let last = args.first_seed + args.seeds.saturating_sub(1);
    let _ = writeln!(
        out,
        "health validation: {} simulated fleets (seeds {}-{last}) of {} customers, {} machines, {} days;\n\
         every renewal between 75% and 95% of the days, churn drawn from odds by profile\n",
        seeds.len(),
        args.first_seed,
        args.customers,
        args.devices,
        args.days,
    );
    let horizons = DEFAULT_HORIZONS_DAYS;
    let mut header = "| seed | decisions | churned |".to_string();
    for h in horizons {
        let _ = write!(header, " AUC {h} d (n) |");
    }
    header.push_str(" ceiling |");
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "|---|---|---|{}", "---|".repeat(horizons.len() + 1));
    for s in seeds {
        let churned = s
            .histories
            .iter()
            .flat_map(|h| &h.decisions)
            .filter(|d| d.decision == Decision::Churn)
            .count();
        let mut line = format!("| {} | {} | {churned} |", s.seed, s.validation.decisions);
        for h in &s.validation.horizons {
            let _ = write!(line, " {} ({}) |", shown(h.auc), h.churned + h.renewed);
        }
        let _ = write!(line, " {} |", shown(auc(&s.ceiling)));
        let _ = writeln!(out, "{line}");
    }
    let pooled: Vec<ScoreHistory> = seeds.iter().flat_map(|s| s.histories.clone()).collect();
    let all = validate(&pooled, &horizons);
    let per_seed = |i: usize| -> Vec<f64> {
        seeds
            .iter()
            .filter_map(|s| s.validation.horizons[i].auc)
            .collect()
    };
    let _ = writeln!(
        out,
        "\npooled over the seeds ({} decisions):\n\n\
         | horizon | churned | renewed | left out | AUC | AUC per seed: mean (min-max) | green: cases, churn | yellow: cases, churn | red: cases, churn |\n\
         |---|---|---|---|---|---|---|---|---|",
        all.decisions
    );
    for (i, h) in all.horizons.iter().enumerate() {
        let each = per_seed(i);
        let spread = if each.is_empty() {
            "-".to_string()
        } else {
            let mean = each.iter().sum::<f64>() / each.len() as f64;
            let min = each.iter().copied().fold(f64::INFINITY, f64::min);
            let max = each.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{mean:.3} ({min:.3}-{max:.3})")
        };
        let mut line = format!(
            "| {} d | {} | {} | {} | {} | {spread} |",
            h.horizon_days,
            h.churned,
            h.renewed,
            h.without_history,
            shown(h.auc)
        );
        for b in &h.bands {
            let rate = b
                .churn_rate
                .map_or_else(|| "-".into(), |r| format!("{:.0}%", 100.0 * r));
            let _ = write!(line, " {}, {rate} |", b.cases);
        }
        let _ = writeln!(out, "{line}");
    }
    let ceiling: Vec<Case> = seeds.iter().flat_map(|s| s.ceiling.clone()).collect();
    let _ = writeln!(
        out,
        "\nceiling: a score that knew each customer's churn odds (its profile) would reach AUC {} \
         on the same decisions; the decision itself is a draw.",
        shown(auc(&ceiling))
    );
    out
}
