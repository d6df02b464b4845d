//! `fleetpulse sim`: simulate a fleet and publish it to a broker, writing the
//! ground truth (and the matching customers file) for checks.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use fleetpulse_sim::{Fleet, FleetSpec, PublishOptions, PublishReport, QoS, calendar};

use crate::customers::{
    Contract, CustomerConfig, CustomersFile, MilestoneConfig, OutcomeConfig, OutcomeStreak, Segment,
};
use crate::progress::Progress;
use fleetpulse_engine::kpi::outcome::Direction;
use toml::Spanned;

/// Which fleet to simulate.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Customers.
    #[arg(long, default_value_t = 6)]
    pub customers: usize,
    /// Devices in the whole fleet.
    #[arg(long, default_value_t = 300)]
    pub devices: usize,
    /// Days of event time.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Seed: same seed, same fleet, same messages.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl FleetArgs {
    /// The simulator spec.
    pub fn spec(&self) -> FleetSpec {
        FleetSpec {
            customers: self.customers,
            devices: self.devices,
            days: self.days,
            seed: self.seed,
            ..FleetSpec::default()
        }
    }
}

/// `fleetpulse sim` arguments.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// The fleet.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT client id.
    #[arg(long, default_value = "fleetpulse-sim")]
    pub client_id: String,
    /// User name for the broker.
    #[arg(long)]
    pub username: Option<String>,
    /// Environment variable holding the broker password.
    #[arg(long)]
    pub password_env: Option<String>,
    /// QoS (0 or 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Target rate, messages per second (default: as fast as the broker takes them).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Where to write the ground truth (CSV, one row per customer and UTC day).
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
    /// Where to write a customers.toml matching the simulated customers.
    #[arg(long)]
    pub write_customers: Option<PathBuf>,
    /// Only write the files, publish nothing.
    #[arg(long)]
    pub no_publish: bool,
}

/// Runs `fleetpulse sim`.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let spec = args.fleet.spec();
    let fleet = Fleet::try_generate(&spec).context("invalid fleet")?;
    write_files(
        &fleet,
        args.ground_truth.as_deref(),
        args.write_customers.as_deref(),
    )?;
    if args.no_publish {
        return Ok(());
    }
    let password = args
        .password_env
        .as_ref()
        .map(|var| {
            std::env::var(var).with_context(|| format!("--password-env: `{var}` is not set"))
        })
        .transpose()?;
    let options = PublishOptions {
        host: args.host.clone(),
        port: args.port,
        client_id: args.client_id.clone(),
        username: args.username.clone(),
        password,
        qos: if args.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        rate: args.rate,
        ..PublishOptions::default()
    };
    let report = publish_fleet(&fleet, options).await?;
    println!(
        "published {} messages ({} samples, {:.1} MB) in {:.1} s: {:.0} messages/s",
        report.messages,
        report.samples,
        report.bytes as f64 / 1e6,
        report.elapsed.as_secs_f64(),
        report.messages_per_sec
    );
    Ok(())
}

/// Publishes the whole fleet with a progress display.
pub async fn publish_fleet(
    fleet: &Fleet,
    options: PublishOptions,
) -> anyhow::Result<PublishReport> {
    let broker = options.broker();
    let mut progress = Progress::new("publishing", "messages", fleet.message_count());
    let report = fleetpulse_sim::publish(options, fleet.encoded_messages(), |p| {
        progress.set(p.delivered)
    })
    .await
    .with_context(|| format!("publishing to {broker}"))?;
    progress.finish(&format!(
        "{} messages in {:.1} s",
        report.messages,
        report.elapsed.as_secs_f64()
    ));
    Ok(report)
}

/// Writes the ground truth and the customers file, when asked for.
pub fn write_files(
    fleet: &Fleet,
    ground_truth: Option<&Path>,
    customers: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(path) = ground_truth {
        fleet
            .ground_truth()
            .write_csv(path)
            .with_context(|| format!("{}: cannot write the ground truth", path.display()))?;
    }
    if let Some(path) = customers {
        std::fs::write(path, customers_file(fleet).to_toml())
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

/// The customers file that describes a simulated fleet.
pub fn customers_file(fleet: &Fleet) -> CustomersFile {
    CustomersFile {
        customers: fleet
            .customers()
            .iter()
            .map(|c| CustomerConfig {
                id: c.id.clone(),
                name: c.name.clone(),
                segment: match c.segment {
                    fleetpulse_sim::Segment::HighTouch => Segment::HighTouch,
                    fleetpulse_sim::Segment::LowTouch => Segment::LowTouch,
                    fleetpulse_sim::Segment::TechTouch => Segment::TechTouch,
                },
                timezone: None,
                maturity: None,
                outcomes: demo_outcomes(),
                milestones: demo_milestones(),
                health_weights: None,
                thresholds: None,
                contract: Contract {
                    arr: c.contract.arr as f64,
                    start: calendar::date_of(c.contract.start_ms),
                    renewal: calendar::date_of(c.contract.renewal_ms),
                    devices_purchased: c.contract.devices_purchased,
                    operator_seats: c.contract.operator_seats,
                },
            })
            .collect(),
        aemp_equipment: Vec::new(),
    }
}

/// The outcomes every simulated customer signs up for: few manual
/// interventions per cycle (the automation works) and output per operating
/// hour (the machines are productive).
pub fn demo_outcomes() -> Vec<OutcomeConfig> {
    let outcome = |name: &str, expression: &str, direction, target| OutcomeConfig {
        name: name.into(),
        expression: Spanned::new(0..0, expression.into()),
        direction,
        target,
        window: Spanned::new(0..0, "1d".into()),
    };
    vec![
        outcome(
            "intervention_rate",
            "manual_interventions / cycles",
            Direction::AtMost,
            0.03,
        ),
        outcome(
            "output_per_hour",
            "output_units / operating_hours",
            Direction::AtLeast,
            60.0,
        ),
    ]
}

/// The journey every simulated customer is on, in due order.
pub fn demo_milestones() -> Vec<MilestoneConfig> {
    let milestone = |name: &str, due_days: u32| MilestoneConfig {
        name: name.into(),
        due_days: Spanned::new(0..0, due_days),
        value: false,
        devices_online: None,
        operating_hours: None,
        feature_weekly: None,
        outcome_streak: None,
    };
    vec![
        MilestoneConfig {
            operating_hours: Some(1000.0),
            value: true,
            ..milestone("first_1000_operating_hours", 21)
        },
        MilestoneConfig {
            outcome_streak: Some(OutcomeStreak {
                outcome: "intervention_rate".into(),
                windows: 5,
            }),
            ..milestone("intervention_target_5_days", 30)
        },
        MilestoneConfig {
            devices_online: Some(0.9),
            ..milestone("fleet_online", 45)
        },
    ]
}
