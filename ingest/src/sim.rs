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
    /// Devices that lose coverage once for 6 to 72 hours and upload their
    /// buffer on reconnect (in order, newest first or shuffled): late data
    /// the service restates within `engine.correction_horizon`.
    #[arg(long, default_value_t = 0)]
    pub store_and_forward: usize,
    /// Every customer's renewal falls late in the simulation (75-95% of
    /// its days), so each ends with a planted churn or renewal: the fleet
    /// the health score is validated on (`fleetpulse health-validation`).
    #[arg(long)]
    pub renewals: bool,
}

impl FleetArgs {
    /// The simulator spec.
    pub fn spec(&self) -> FleetSpec {
        FleetSpec {
            customers: self.customers,
            devices: self.devices,
            days: self.days,
            seed: self.seed,
            store_and_forward: self.store_and_forward,
            renewals: self.renewals,
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
    /// Write the fleet's batches, in event-time order, as a recorded-batches
    /// file (length-delimited protobuf) that `fleetpulse backfill` loads.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Put each customer's contract history, as its profile plants it
    /// (renewals, expansions, contractions, churn), in `--write-customers`.
    #[arg(long)]
    pub contract_events: bool,
    /// Serve the fleet (or the part `--aemp-every` selects) as an ISO
    /// 15143-3 (AEMP 2.0) API on this address instead of publishing it;
    /// `--ground-truth` is then what an AEMP client can know, and
    /// `--write-customers` maps the machines in `[[aemp_equipment]]`.
    #[arg(long)]
    pub aemp: Option<std::net::SocketAddr>,
    /// The simulated AEMP server's quirks.
    #[command(flatten)]
    pub aemp_options: AempSimArgs,
}

/// Quirks of `fleetpulse sim --aemp` (docs/AEMP.md).
#[derive(Debug, Clone, Args)]
pub struct AempSimArgs {
    /// Serve device i (fleet order) when i % every == offset. Without
    /// --aemp, publish only the devices such a server does not serve (the
    /// MQTT half of a mixed fleet).
    #[arg(long, default_value_t = 1)]
    pub aemp_every: usize,
    /// See --aemp-every.
    #[arg(long, default_value_t = 0)]
    pub aemp_offset: usize,
    /// JSON bodies wrapped in a top-level array.
    #[arg(long)]
    pub aemp_wrap_array: bool,
    /// `links` instead of `Links`.
    #[arg(long)]
    pub aemp_lowercase_links: bool,
    /// Equipment ids with `#`: machines must be addressed by PIN.
    #[arg(long)]
    pub aemp_pin_ids: bool,
    /// `liter` instead of `litre`.
    #[arg(long)]
    pub aemp_liter: bool,
    /// One request per URL per this long (e.g. `15m`); more get 429.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub aemp_rate_limit: Option<std::time::Duration>,
    /// Entries per page.
    #[arg(long, default_value_t = 100)]
    pub aemp_page_size: usize,
    /// Require HTTP Basic with this user (password from --aemp-secret-env).
    #[arg(long, conflicts_with = "aemp_oauth2_client")]
    pub aemp_basic_user: Option<String>,
    /// Require OAuth2 bearer tokens issued to this client id (secret from
    /// --aemp-secret-env) at `/aemp/oauth/token`.
    #[arg(long)]
    pub aemp_oauth2_client: Option<String>,
    /// Environment variable with the Basic password or the client secret.
    #[arg(long, default_value = "FLEETPULSE_AEMP_SECRET")]
    pub aemp_secret_env: String,
    /// Answer badly: malformed, endless, huge, backwards or future.
    #[arg(long, value_parser = parse_bad)]
    pub aemp_bad: Option<crate::aemp_sim::BadAnswer>,
    /// `source` of the `[[aemp_equipment]]` written by --write-customers.
    #[arg(long)]
    pub aemp_source: Option<String>,
}

fn parse_bad(name: &str) -> Result<crate::aemp_sim::BadAnswer, String> {
    crate::aemp_sim::BadAnswer::parse(name)
        .ok_or_else(|| "one of malformed, endless, huge, backwards, future".into())
}

impl AempSimArgs {
    /// The server's quirks; secrets from the environment.
    pub fn quirks(&self) -> anyhow::Result<crate::aemp_sim::Quirks> {
        use crate::aemp_sim::SimAuth;
        let secret = || {
            std::env::var(&self.aemp_secret_env).with_context(|| {
                format!("--aemp-secret-env: `{}` is not set", self.aemp_secret_env)
            })
        };
        let auth = match (&self.aemp_basic_user, &self.aemp_oauth2_client) {
            (Some(user), _) => SimAuth::Basic {
                username: user.clone(),
                password: secret()?,
            },
            (None, Some(client)) => SimAuth::Oauth2 {
                client_id: client.clone(),
                client_secret: secret()?,
                token_life: std::time::Duration::from_secs(3600),
            },
            (None, None) => SimAuth::None,
        };
        Ok(crate::aemp_sim::Quirks {
            wrap_array: self.aemp_wrap_array,
            lowercase_links: self.aemp_lowercase_links,
            pin_ids: self.aemp_pin_ids,
            liter: self.aemp_liter,
            rate_limit: self.aemp_rate_limit,
            page_size: self.aemp_page_size,
            auth,
            bad: self.aemp_bad,
        })
    }

    /// Which devices are served.
    pub fn selection(&self) -> crate::aemp_sim::Selection {
        crate::aemp_sim::Selection {
            every: self.aemp_every.max(1),
            offset: self.aemp_offset,
        }
    }
}

/// Runs `fleetpulse sim`.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let spec = args.fleet.spec();
    let fleet = Fleet::try_generate(&spec).context("invalid fleet")?;
    if let Some(addr) = args.aemp {
        return serve_aemp(&args, &fleet, addr).await;
    }
    write_files(&fleet, args.ground_truth.as_deref(), None)?;
    if let Some(path) = &args.write_customers {
        let mut customers = customers_file(&fleet);
        if args.contract_events {
            customers = with_contract_events(customers, &fleet);
        }
        std::fs::write(path, customers.to_toml())
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    if let Some(path) = &args.record {
        let batches: Vec<_> = fleet.messages_in_event_time().map(|m| m.batch).collect();
        let n = crate::backfill::write_batches(path, &batches)?;
        println!("{n} batches recorded in {}", path.display());
    }
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
    let selection = args.aemp_options.selection();
    let report = if selection.every > 1 {
        // The other half of a mixed fleet: the machines an `--aemp` server
        // with the same selection does not serve.
        let devices: std::collections::HashSet<(String, String)> = fleet
            .devices()
            .iter()
            .filter(|d| !selection.serves(d))
            .map(|d| (fleet.customer_of(d).id.clone(), d.id.clone()))
            .collect();
        let messages: Vec<(String, Vec<u8>)> = fleet
            .messages()
            .filter(|m| devices.contains(&(m.batch.customer_id.clone(), m.batch.device_id.clone())))
            .map(|m| m.into_encoded())
            .collect();
        fleetpulse_sim::publish(options, messages, |_| {})
            .await
            .context("publishing")?
    } else {
        publish_fleet(&fleet, options).await?
    };
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

/// `fleetpulse sim --aemp ADDR`: serves the fleet until Ctrl-C.
async fn serve_aemp(
    args: &SimArgs,
    fleet: &Fleet,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let options = &args.aemp_options;
    let quirks = options.quirks()?;
    let served = crate::aemp_sim::AempFleet::new(fleet, options.selection(), quirks.pin_ids);
    if let Some(path) = &args.ground_truth {
        served
            .ground_truth()
            .write_csv(path)
            .with_context(|| format!("{}: cannot write the ground truth", path.display()))?;
    }
    if let Some(path) = &args.write_customers {
        let mut customers = customers_file(fleet);
        customers.aemp_equipment = served.equipment(options.aemp_source.as_deref());
        std::fs::write(path, customers.to_toml())
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    let machines = served.machines.len();
    let readings = served.points();
    let server = crate::aemp_sim::start(addr, served, quirks)
        .await
        .with_context(|| format!("cannot serve AEMP on {addr}"))?;
    println!(
        "serving {machines} machines ({readings} readings) as AEMP 2.0 at {} (token endpoint {}); Ctrl-C stops",
        server.url(),
        server.token_url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
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

/// `fleet`'s telemetry through the engine as a live run takes it in (the
/// default windows, 2 h of allowed lateness, `workers` workers) with the
/// customers `specs`, keeping the records `keep` accepts: the backtests'
/// and the simulated checks' run.
pub fn through_engine(
    fleet: &Fleet,
    specs: std::collections::HashMap<String, fleetpulse_engine::CustomerSpec>,
    workers: usize,
    keep: impl Fn(&fleetpulse_engine::Output) -> bool + Send + 'static,
) -> Result<fleetpulse_engine::run::RunOutcome, fleetpulse_engine::EngineError> {
    let config = fleetpulse_engine::EngineConfig {
        customers: specs,
        ..fleetpulse_engine::EngineConfig::default()
    };
    let mut converter = crate::convert::Converter::new(config.features.clone());
    let batches = fleet.messages().map(move |m| converter.batch(m.batch));
    fleetpulse_engine::run::run_batches_keeping(config, workers, 2 * 3_600_000, batches, keep)
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
                csm: None,
                timezone: None,
                maturity: None,
                outcomes: demo_outcomes(),
                milestones: demo_milestones(),
                health_weights: None,
                thresholds: None,
                contract_events: Vec::new(),
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
        contract_events_csv: None,
        coverage: Vec::new(),
    }
}

/// `customers` with each simulated customer's contract history as its
/// profile plants it (`Fleet::contract_events`): `[[customer.contract_event]]`
/// tables, and `contract.arr` the ARR after the last one (kept as it was
/// for a churned customer).
pub fn with_contract_events(mut customers: CustomersFile, fleet: &Fleet) -> CustomersFile {
    for c in fleet.customers() {
        let Some(config) = customers.customers.iter_mut().find(|x| x.id == c.id) else {
            continue;
        };
        let events = fleet.contract_events(c);
        let arr: f64 = events.iter().map(|e| e.arr_change).sum();
        if events.last().is_some_and(|e| e.kind != "churn") {
            config.contract.arr = arr;
        }
        config.contract_events = events
            .iter()
            .map(|e| crate::contracts::ContractEventConfig {
                kind: Spanned::new(0..0, e.kind.to_string()),
                date: Spanned::new(0..0, calendar::date_of(e.at)),
                arr_change: Some(e.arr_change),
            })
            .collect();
    }
    customers
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
