//! `fleetpulse demo`: the whole path on one machine with nothing installed.
//! Embedded broker, simulated fleet, engine, SQLite store; ends with a
//! per-customer table read back from the store. The dashboard is served from
//! the start (it follows the run live) and until Ctrl-C, or `--exit`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

use anyhow::Context;
use clap::Args;
use fleetpulse_engine::kpi::health::Band;
use fleetpulse_engine::{AlertRecord, CustomerKpi, HealthRecord};
use fleetpulse_sim::{Fleet, PublishOptions};

use crate::alerts::format::money;
use crate::config::{CustomersRef, ServiceConfig};
use crate::sim::FleetArgs;
use crate::sinks::SinkConfig;
use crate::sinks::sqlite::{SqliteConfig, SqliteStore};

/// `fleetpulse demo` arguments.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The fleet.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Timely worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Where the SQLite store, the customers file and the ground truth go
    /// (one demo at a time in a directory).
    #[arg(long, default_value = "fleetpulse-data")]
    pub data_dir: PathBuf,
    /// Address of the dashboard and API (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http: SocketAddr,
    /// Exit once the tables are printed instead of serving the dashboard
    /// until Ctrl-C (for scripts).
    #[arg(long)]
    pub exit: bool,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let spec = args.fleet.spec();
    let fleet = Fleet::try_generate(&spec).context("invalid fleet")?;
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("{}: cannot create", data_dir.display()))?;
    // One demo per data directory: a second one would delete the store of
    // the first under it, while the first still serves it.
    let _lock = crate::wal::lock_dir(data_dir, "demo.lock").map_err(|e| match e {
        crate::wal::WalError::Locked { holder_pid, .. } => anyhow::anyhow!(
            "{}: in use by another `fleetpulse demo` (PID {}): stop it, or give this one \
             another --data-dir",
            data_dir.display(),
            holder_pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
        ),
        other => anyhow::Error::new(other),
    })?;
    let store = data_dir.join("kpi.sqlite");
    for stale in ["kpi.sqlite", "kpi.sqlite-wal", "kpi.sqlite-shm"] {
        let _ = std::fs::remove_file(data_dir.join(stale));
    }
    let customers_path = data_dir.join("customers.toml");
    let truth_path = data_dir.join("ground-truth.csv");
    crate::sim::write_files(&fleet, Some(&truth_path), Some(&customers_path))?;

    let broker = crate::broker::start(0)?;
    eprintln!(
        "fleetpulse demo: {} customers, {} devices, {} days; embedded broker on {}; {} workers",
        spec.customers, spec.devices, spec.days, broker.addr, args.workers
    );
    let mut config = ServiceConfig::default();
    config.mqtt.host = broker.addr.ip().to_string();
    config.mqtt.port = broker.addr.port();
    config.mqtt.client_id = "fleetpulse-demo".into();
    config.engine.workers = args.workers;
    config.customers = Some(CustomersRef {
        file: customers_path.clone(),
    });
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: store.clone(),
    })];
    let publish = PublishOptions {
        host: broker.addr.ip().to_string(),
        port: broker.addr.port(),
        client_id: "fleetpulse-demo-sim".into(),
        ..PublishOptions::default()
    };
    let hub = crate::http::Hub::new();
    let stop_http = tokio_util::sync::CancellationToken::new();
    let http = crate::http::HttpConfig::on(args.http);
    http.check(std::path::Path::new("--http"))?;
    let (addr, server) = crate::http::start(&http, hub.clone(), stop_http.clone())
        .await
        .with_context(|| format!("--http {}: cannot listen", args.http))?;
    let url = format!("http://{addr}/");
    eprintln!("dashboard: {url} (live while the demo runs)");
    let run = crate::drive::drive_with(config, &fleet, publish, Some(hub)).await?;
    let metrics = &run.metrics;
    eprintln!(
        "{} messages ({} samples) in {:.1} s: {:.0} messages/s end to end; rejected {}, duplicates {}, KPI records {}",
        run.published.messages,
        run.published.samples,
        run.elapsed.as_secs_f64(),
        run.published.messages as f64 / run.elapsed.as_secs_f64().max(1e-9),
        metrics.rejected_total(),
        run.service.engine.duplicates,
        metrics.records_emitted.load(Relaxed),
    );

    let store_reader = SqliteStore::open(&store)?;
    let daily = store_reader.customer_kpis("1d")?;
    let health = store_reader.latest_health()?;
    println!();
    print!("{}", summary_table(&fleet, &daily, &health));
    println!();
    let alerts = store_reader.alerts(true)?;
    print!("{}", at_risk_list(&health, &alerts));
    println!();
    println!("KPI store:      {}", store.display());
    println!("dashboard:      {url}");
    println!("customers file: {}", customers_path.display());
    println!("ground truth:   {}", truth_path.display());
    if !args.exit {
        use std::io::Write;
        println!();
        println!("Serving the dashboard on {url} until Ctrl-C (--exit to skip).");
        let _ = std::io::stdout().flush();
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
    }
    stop_http.cancel();
    server
        .await
        .context("dashboard server task")?
        .context("dashboard server")?;
    Ok(())
}

/// The ranked at-risk list: customers with revenue at stake first (red
/// before yellow, lowest score first), each with its open alerts' evidence
/// and the next action.
pub fn at_risk_list(health: &[HealthRecord], alerts: &[AlertRecord]) -> String {
    let mut ranked: Vec<&HealthRecord> = health.iter().collect();
    let severity = |h: &HealthRecord| match h.band {
        Band::Red => 0,
        Band::Yellow => 1,
        Band::Green => 2,
    };
    ranked.sort_by(|a, b| {
        (b.arr_at_risk > 0.0)
            .cmp(&(a.arr_at_risk > 0.0))
            .then(severity(a).cmp(&severity(b)))
            .then(a.score.total_cmp(&b.score))
    });
    let at_risk: f64 = health.iter().map(|h| h.arr_at_risk).sum();
    let total: f64 = health.iter().map(|h| h.arr).sum();
    let mut out = format!(
        "At-risk customers: ARR at risk {} of {} ({:.0}%)\n",
        money(at_risk),
        money(total),
        100.0 * at_risk / total.max(1.0)
    );
    out.push_str(&format!(
        "{:>2}  {:<26} {:>6} {:<6} {:>6}  {:<7} {:>9} {:>12}\n",
        "#", "customer", "health", "band", "7d", "stage", "TTV days", "ARR at risk"
    ));
    for (i, h) in ranked.iter().enumerate() {
        out.push_str(&format!(
            "{:>2}  {:<26} {:>6.0} {:<6} {:>+6.0}  {:<7} {:>9} {:>12}\n",
            i + 1,
            h.customer,
            h.score,
            h.band.as_str(),
            h.score_trend,
            h.stage.as_str(),
            h.time_to_value_days
                .map_or("-".to_string(), |d| format!("{d:.1}")),
            money(h.arr_at_risk),
        ));
        for a in alerts.iter().filter(|a| a.customer == h.customer) {
            out.push_str(&format!(
                "      ! {} (since {}): {}\n        next: {}\n",
                a.rule.as_str(),
                date(a.opened_at),
                a.evidence,
                a.next_action
            ));
        }
    }
    out
}

fn date(at: u64) -> String {
    fleetpulse_sim::calendar::date_of(at)
}

/// The per-customer table printed at the end: the last 7 of the engine's
/// daily KPI records (their means) and the engine's usage growth from the
/// latest health record. No KPI is computed here.
pub fn summary_table(fleet: &Fleet, daily: &[CustomerKpi], health: &[HealthRecord]) -> String {
    let mut by_customer: BTreeMap<&str, Vec<&CustomerKpi>> = BTreeMap::new();
    for row in daily {
        by_customer.entry(&row.customer).or_default().push(row);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{:<26} {:>5} {:>7} {:>9} {:>9} {:>7} {:>8} {:>7}  {}\n",
        "customer",
        "days",
        "util7d",
        "active7d",
        "online7d",
        "ops7d",
        "faults7d",
        "growth",
        "simulated profile"
    ));
    for customer in fleet.customers() {
        let mut rows = by_customer.remove(customer.id.as_str()).unwrap_or_default();
        rows.sort_by_key(|r| r.window_start);
        let last7 = &rows[rows.len().saturating_sub(7)..];
        let mean = |f: fn(&CustomerKpi) -> f64| {
            if last7.is_empty() {
                0.0
            } else {
                last7.iter().map(|r| f(r)).sum::<f64>() / last7.len() as f64
            }
        };
        let growth = health
            .iter()
            .find(|h| *h.customer == *customer.id)
            .map_or("-".into(), |h| format!("{:+.0}%", h.usage_growth * 100.0));
        let last = rows.last();
        let purchased = last.map_or(customer.contract.devices_purchased, |r| r.devices_purchased);
        out.push_str(&format!(
            "{:<26} {:>5} {:>6.1}% {:>9} {:>9} {:>7.1} {:>8} {:>7}  {}\n",
            customer.id,
            rows.len(),
            mean(|r| r.utilisation) * 100.0,
            format!("{:.0}/{purchased}", mean(|r| f64::from(r.active_devices))),
            format!(
                "{:.0}/{purchased}",
                mean(|r| f64::from(r.reporting_devices))
            ),
            mean(|r| f64::from(r.distinct_operators)),
            last7.iter().map(|r| r.totals.fault_count).sum::<u64>(),
            growth,
            customer.profile.name(),
        ));
    }
    out
}
