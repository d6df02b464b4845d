//! `fleetpulse report`: the business-review document of one customer, the
//! page a CS manager brings to an executive business review. One
//! self-contained HTML file (styles and SVG charts inline, no script, no
//! external resource) of the customer's outcomes against their targets,
//! adoption, health, milestones and time to value, and the open risks with
//! their next actions, over a chosen period, read from the SQLite store.
//!
//! [`load`] reads the store, [`render`] is a plain function of the loaded
//! [`ReportData`], so the document is tested without a store.

mod render;
pub mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use fleetpulse_engine::config::{date_start, local_day};
use fleetpulse_engine::{
    AlertRecord, CustomerKpi, EventTime, HealthRecord, MilestoneRecord, OutcomeRecord, Segment,
};
use jiff::tz::TimeZone;

pub use render::render;

use crate::customers::CustomersFile;
use crate::sinks::sqlite::SqliteStore;

const DAY_MS: u64 = 86_400_000;
/// Days covered when `--from` is not given.
pub const DEFAULT_PERIOD_DAYS: u64 = 90;

/// `fleetpulse report` arguments.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Customer id, as in the telemetry topic.
    #[arg(long)]
    pub customer: String,
    /// Where the HTML goes.
    #[arg(long)]
    pub out: PathBuf,
    /// The SQLite KPI store to read.
    #[arg(long, default_value = "fleetpulse-data/kpi.sqlite")]
    pub store: PathBuf,
    /// First day of the period, `YYYY-MM-DD` (default: 90 days before `--to`,
    /// or the customer's first day in the store if that is later).
    #[arg(long)]
    pub from: Option<String>,
    /// Last day of the period, `YYYY-MM-DD`, included (default: the
    /// customer's last day in the store).
    #[arg(long)]
    pub to: Option<String>,
    /// customers.toml for the display name and contract (default:
    /// customers.toml beside the store, if there is one).
    #[arg(long)]
    pub customers: Option<PathBuf>,
}

/// What the report shows, read from the store.
#[derive(Debug, Clone)]
pub struct ReportData {
    /// Customer id.
    pub customer: String,
    /// Display name.
    pub name: String,
    /// Coverage segment, if known.
    pub segment: Option<Segment>,
    /// ARR in force on the last day of the period: the customer's contract
    /// events, the file's and those recorded in the store (or, without the
    /// customers file, the latest health record's).
    pub arr: Option<f64>,
    /// Renewal date from the contract, `YYYY-MM-DD`.
    pub renewal: Option<String>,
    /// First day of the period (start, ms).
    pub from: EventTime,
    /// End of the period (exclusive, ms).
    pub to: EventTime,
    /// Daily health records in the period.
    pub health: Vec<HealthRecord>,
    /// Daily customer KPIs in the period.
    pub kpis: Vec<CustomerKpi>,
    /// Outcome records of the daily window in the period, by outcome.
    pub outcomes: BTreeMap<String, Vec<OutcomeRecord>>,
    /// Each milestone's state at the end of the period, in journey order.
    pub milestones: Vec<MilestoneRecord>,
    /// Alert episodes open at some point in the period.
    pub alerts: Vec<AlertRecord>,
    /// The CS team's touchpoints in the period (by their dates, the
    /// customer's local dates), oldest first.
    pub touchpoints: Vec<fleetpulse_engine::kpi::touchpoint::Touchpoint>,
    /// Where the data came from.
    pub source: String,
    /// The customer's time zone (customers.toml; UTC without one): its days
    /// and dates.
    pub zone: TimeZone,
}

impl ReportData {
    /// Activation (first telemetry), from the health records; none when
    /// the latest was of a fleet that never reported (its days since
    /// activation undefined).
    pub fn activation(&self) -> Option<EventTime> {
        let h = self.health.last()?;
        let days = h.days_since_activation;
        (!days.is_nan()).then(|| {
            h.window_end
                .saturating_sub((days.max(0.0) * DAY_MS as f64) as u64)
        })
    }
}

/// Runs `fleetpulse report`.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let data = load(&args)?;
    let html = render(&data);
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    std::fs::write(&args.out, html)
        .with_context(|| format!("{}: cannot write", args.out.display()))?;
    println!(
        "{}: business review of {} ({}), {} to {}",
        args.out.display(),
        data.name,
        data.customer,
        svg::date(data.from, &data.zone),
        svg::date(data.to - 1, &data.zone)
    );
    Ok(())
}

/// The start of the day `text` (`YYYY-MM-DD`) in `zone`, and of the day
/// after it.
fn parse_day(flag: &str, text: &str, zone: &TimeZone) -> anyhow::Result<(EventTime, EventTime)> {
    let bad = || format!("{flag}: `{text}` is not a date from 1970 on (YYYY-MM-DD)");
    let midnight =
        crate::customers::local_date_ms(text, zone).map_err(|_| anyhow::anyhow!(bad()))?;
    local_day(zone, midnight).with_context(bad)
}

/// Bounds of the day in `zone` that holds `at`.
fn day_of(at: EventTime, zone: &TimeZone) -> (EventTime, EventTime) {
    local_day(zone, at).unwrap_or_else(|| {
        let start = fleetpulse_sim::calendar::day_start(at);
        (start, start + DAY_MS)
    })
}

/// Reads what the report needs from the store named in `args`.
pub fn load(args: &ReportArgs) -> anyhow::Result<ReportData> {
    let store = match SqliteStore::open_existing(&args.store) {
        Err(crate::sinks::SinkError::SqliteMissing { .. }) => bail!(
            "{}: no such store (run `fleetpulse demo` first, or pass --store)",
            args.store.display()
        ),
        opened => opened.with_context(|| format!("{}: cannot open", args.store.display()))?,
    };
    let id = args.customer.as_str();
    // Closed days: a provisional score (the open day so far) is not one.
    let mut all_health = store.health(Some(id))?;
    all_health.retain(|h| !h.provisional);
    let daily: Vec<CustomerKpi> = store
        .customer_kpis("1d")?
        .into_iter()
        .filter(|k| &*k.customer == id)
        .collect();
    let Some(last_day) = all_health
        .last()
        .map(|h| h.window_start)
        .or_else(|| daily.last().map(|k| k.window_start))
    else {
        let known: Vec<String> = store
            .latest_health()?
            .into_iter()
            .map(|h| h.customer.to_string())
            .collect();
        bail!(
            "no data for customer `{id}` in {}; customers there: {}",
            args.store.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let customers_file = args.customers.clone().or_else(|| {
        let beside = args.store.parent()?.join("customers.toml");
        beside.exists().then_some(beside)
    });
    let (contract, history) = match &customers_file {
        Some(path) => {
            let read = || -> Result<_, crate::config::ConfigError> {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    crate::config::ConfigError::Read {
                        path: path.clone(),
                        source,
                    }
                })?;
                let file = CustomersFile::parse(path, &text)?;
                let book = file.contract_book(path, &text)?;
                Ok((file, book))
            };
            let (file, book) =
                read().with_context(|| format!("{}: cannot read", path.display()))?;
            // With the contract events recorded in the store: a churn or an
            // expansion recorded there changes the ARR from its day on.
            let (book, _) = book.merged(&store.contract_events(Some(id))?);
            let contract = file.customers.into_iter().find(|c| c.id == id);
            (contract, book.get(id).cloned())
        }
        None => (None, None),
    };
    // The customer's days: `--from` and `--to` are its local dates.
    let zone = match contract.as_ref().and_then(|c| c.timezone.as_ref()) {
        Some(name) => TimeZone::get(name.get_ref())
            .with_context(|| format!("customer `{id}`: time zone `{}`", name.get_ref()))?,
        None => TimeZone::UTC,
    };
    let to = match &args.to {
        Some(text) => parse_day("--to", text, &zone)?.1,
        None => day_of(last_day, &zone).1,
    };
    let first_day = all_health
        .first()
        .map(|h| h.window_start)
        .into_iter()
        .chain(daily.first().map(|k| k.window_start))
        .min()
        .map_or(0, |at| day_of(at, &zone).0);
    let from = match &args.from {
        Some(text) => parse_day("--from", text, &zone)?.0,
        // The day 90 days before the last: its middle lies in it, whatever
        // the daylight-saving changes between.
        None => day_of(
            (to + DAY_MS / 2).saturating_sub((DEFAULT_PERIOD_DAYS + 1) * DAY_MS),
            &zone,
        )
        .0
        .max(first_day),
    };
    if from >= to {
        bail!("--from must be before --to");
    }
    let within = |start: EventTime| start >= from && start < to;
    if !(all_health.iter().any(|h| within(h.window_start)))
        && !(daily.iter().any(|k| within(k.window_start)))
    {
        let last = day_of(last_day, &zone).0;
        bail!(
            "no data for customer `{id}` from {} to {}: its days in {} run from {} to {}",
            svg::date(from, &zone),
            svg::date(to - 1, &zone),
            args.store.display(),
            svg::date(first_day, &zone),
            svg::date(last, &zone),
        );
    }

    let mut outcomes: BTreeMap<String, Vec<OutcomeRecord>> = BTreeMap::new();
    for o in store.outcomes(Some(id))? {
        if &*o.window == "1d" && within(o.window_start) {
            outcomes.entry(o.outcome.to_string()).or_default().push(o);
        }
    }
    let mut milestones: BTreeMap<String, MilestoneRecord> = BTreeMap::new();
    for m in store.milestones(Some(id))? {
        if m.window_start < to {
            milestones.insert(m.milestone.to_string(), m);
        }
    }
    let mut milestones: Vec<MilestoneRecord> = milestones.into_values().collect();
    milestones.sort_by_key(|m| m.position);
    let alerts: Vec<AlertRecord> = store
        .alerts(false)?
        .into_iter()
        .filter(|a| {
            &*a.customer == id && a.opened_at < to && a.resolved_at.is_none_or(|r| r >= from)
        })
        .collect();
    let health: Vec<HealthRecord> = all_health
        .into_iter()
        .filter(|h| within(h.window_start))
        .collect();

    // Events are dated 00:00 UTC of their date: the ARR after the period's
    // last local date (west of UTC its midnight comes later that day, after
    // the next date's events).
    let through = crate::customers::date_ms(&svg::date(to - 1, &zone)).map_or(to, |d| d + DAY_MS);
    let name = contract
        .as_ref()
        .map(|c| c.name.clone())
        .or_else(|| alerts.first().map(|a| a.customer_name.to_string()))
        .unwrap_or_else(|| id.to_string());
    Ok(ReportData {
        customer: id.to_string(),
        name,
        segment: contract
            .as_ref()
            .map(|c| c.segment)
            .or_else(|| health.last().map(|h| h.segment)),
        arr: (history.as_ref().map(|h| h.arr_before(through)))
            .or_else(|| contract.as_ref().map(|c| c.contract.arr))
            .or_else(|| health.last().map(|h| h.arr)),
        renewal: contract.as_ref().map(|c| c.contract.renewal.clone()),
        from,
        to,
        health,
        kpis: daily
            .into_iter()
            .filter(|k| within(k.window_start))
            .collect(),
        outcomes,
        milestones,
        alerts,
        touchpoints: store
            .touchpoints(Some(id))?
            .into_iter()
            .filter(|t| within(date_start(&zone, t.at)))
            .collect(),
        source: store_label(&args.store),
        zone,
    })
}

fn store_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::fixtures::health;
    use crate::sinks::sqlite::SqliteConfig;
    use crate::sinks::{Sink, SinkConfig};
    use fleetpulse_engine::Output;
    use fleetpulse_engine::kpi::touchpoint::{Touchpoint, TouchpointKind};

    /// acme's report of March 2026 from `store`, with `customers`.
    fn march(dir: &Path, store: PathBuf, customers: PathBuf) -> ReportArgs {
        ReportArgs {
            customer: "acme".into(),
            out: dir.join("report.html"),
            store,
            from: Some("2026-03-01".into()),
            to: Some("2026-03-31".into()),
            customers: Some(customers),
        }
    }

    /// A new SQLite store holding `records`: its directory and path.
    async fn stored(records: &[Output]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("kpi.sqlite");
        let config = SinkConfig::Sqlite(SqliteConfig {
            path: store.clone(),
        });
        let mut sink = Sink::open(&config).await.unwrap();
        sink.write(records).await.unwrap();
        (dir, store)
    }

    /// A report made while a day is open covers the closed days: the open
    /// day's provisional score is not a day of it.
    #[tokio::test]
    async fn a_report_while_a_day_is_open_leaves_its_provisional_score_out() {
        let day = |d: u64| 1_767_571_200_000 + d * DAY_MS;
        let mut open = health("acme", day(2), 40.0);
        open.provisional = true;
        let records: Vec<Output> = [health("acme", day(0), 70.0), health("acme", day(1), 72.0)]
            .into_iter()
            .chain([open])
            .map(Output::health)
            .collect();
        let (dir, store) = stored(&records).await;
        let args = ReportArgs {
            customer: "acme".into(),
            out: dir.path().join("report.html"),
            store,
            from: None,
            to: None,
            customers: None,
        };
        let data = load(&args).unwrap();
        let days: Vec<(u64, f64)> = data
            .health
            .iter()
            .map(|h| (h.window_start, h.score))
            .collect();
        assert_eq!(days, [(day(0), 70.0), (day(1), 72.0)]);
        assert_eq!(data.to, day(2));
    }

    /// A customer in Berlin: its days start at 23:00 UTC the day before (at
    /// 22:00 from the 29 March change to summer time). A report of March
    /// holds March's 31 local days, dated by their local dates: read as UTC
    /// days it lost 1 March, took in 1 April, and dated every day by the day
    /// before.
    #[tokio::test]
    async fn a_report_covers_and_dates_the_customers_local_days() {
        const HOUR: u64 = 3_600_000;
        // 2026-02-25T00:00Z; Berlin's days from 26 February to 3 April,
        // written out from the zone rules (CET = UTC+1, CEST = UTC+2).
        let feb_25 = 1_771_977_600_000;
        let midnight = |d: u64| {
            let utc = feb_25 + d * DAY_MS;
            if d <= 32 { utc - HOUR } else { utc - 2 * HOUR }
        };
        let records: Vec<Output> = (1..38)
            .map(|d| {
                let mut h = health("acme", midnight(d), 60.0 + d as f64 / 10.0);
                h.window_end = midnight(d + 1);
                Output::health(h)
            })
            .collect();
        let (dir, store) = stored(&records).await;
        // acme in Europe/Berlin.
        let customers = dir.path().join("customers.toml");
        std::fs::write(&customers, crate::customers::tests::GOOD).unwrap();
        let args = march(dir.path(), store, customers);
        let data = load(&args).unwrap();
        let starts: Vec<u64> = data.health.iter().map(|h| h.window_start).collect();
        // 1 March is day 4 after 25 February, 31 March day 34.
        assert_eq!(starts, (4..=34).map(midnight).collect::<Vec<_>>());
        assert_eq!((data.from, data.to), (midnight(4), midnight(35)));
        let html = render(&data);
        assert!(html.contains("2026-03-01 to 2026-03-31"), "the period");
        assert!(html.contains(">03-01<"), "the charts' first date");
        // Without --from and --to: the 90 days up to the last day, 3 April,
        // or from the first, 26 February.
        let whole = load(&ReportArgs {
            from: None,
            to: None,
            ..args.clone()
        })
        .unwrap();
        assert_eq!((whole.from, whole.to), (midnight(1), midnight(38)));
        assert_eq!(whole.health.len(), 37);
        // A date that does not exist is refused, naming the flag.
        let err = load(&ReportArgs {
            from: Some("2026-02-30".into()),
            ..args.clone()
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("--from: `2026-02-30`"),
            "{err:#}"
        );
        // A period the store holds nothing of is refused, saying which it
        // holds (a report was written of it, an open alert and all).
        let err = load(&ReportArgs {
            from: Some("2030-01-01".into()),
            to: Some("2030-02-01".into()),
            ..args
        })
        .unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("no data for customer `acme` from 2030-01-01 to 2030-02-01: its days in")
                && format!("{err:#}").contains("run from 2026-02-26 to 2026-04-03"),
            "{err:#}"
        );
    }

    /// The ARR the report shows is the one in force on the period's last
    /// day, from the contract events recorded in the store too: it showed
    /// the customers file's `contract.arr` of a customer that churned and
    /// came back at a tenth of it.
    #[tokio::test]
    async fn the_arr_shown_counts_the_contract_events_recorded_in_the_store() {
        use fleetpulse_engine::kpi::revenue_retention::{ContractEventKind, RecordedContractEvent};
        let march_1 = 1_772_319_600_000; // 2026-03-01T00:00 in Berlin (CET)
        let records: Vec<Output> = (0..20)
            .map(|d| Output::health(health("acme", march_1 + d * DAY_MS, 70.0)))
            .collect();
        let (dir, store) = stored(&records).await;
        let customers = dir.path().join("customers.toml");
        std::fs::write(&customers, crate::customers::tests::GOOD).unwrap();
        let args = march(dir.path(), store.clone(), customers);
        assert_eq!(load(&args).unwrap().arr, Some(120_000.0), "the file's");
        let event = |kind, date: &str, arr_change| RecordedContractEvent {
            customer: "acme".into(),
            kind,
            at: crate::customers::date_ms(date).unwrap(),
            arr_change,
            recorded_by: "test".into(),
        };
        let mut sqlite = SqliteStore::open_existing(&store).unwrap();
        sqlite
            .record_contract_events(&[
                event(ContractEventKind::Churn, "2026-03-10", None),
                event(ContractEventKind::Start, "2026-03-20", Some(12_000.0)),
            ])
            .unwrap();
        assert_eq!(load(&args).unwrap().arr, Some(12_000.0));
        let to_the_15th = ReportArgs {
            to: Some("2026-03-15".into()),
            ..args
        };
        assert_eq!(load(&to_the_15th).unwrap().arr, Some(0.0), "churned");
        // West of UTC: a churn dated the day after the period is not in it
        // (the period's end, 07:00 UTC on 1 April in Los Angeles, is after
        // that date's 00:00 UTC).
        let west = crate::customers::tests::GOOD.replace("Europe/Berlin", "America/Los_Angeles");
        std::fs::write(dir.path().join("customers.toml"), west).unwrap();
        sqlite
            .record_contract_events(&[event(ContractEventKind::Churn, "2026-04-01", None)])
            .unwrap();
        let march = ReportArgs {
            to: Some("2026-03-31".into()),
            ..to_the_15th
        };
        assert_eq!(
            load(&march).unwrap().arr,
            Some(12_000.0),
            "churned after it"
        );
    }

    /// A customer in Los Angeles (UTC-8, UTC-7 from 8 March): its days
    /// start at 08:00 (then 07:00) UTC, and a touchpoint's date (kept as
    /// 00:00 UTC of it, 16:00 the day before there) is its local date. A
    /// report of March lists the touchpoints of 1 and 31 March under their
    /// dates and leaves that of 1 April out; read as instants in the zone,
    /// every one was dated a day early, 1 March's fell out of the period
    /// and 1 April's came in.
    #[tokio::test]
    async fn touchpoints_are_listed_under_their_dates_west_of_utc() {
        const HOUR: u64 = 3_600_000;
        let feb_25 = 1_771_977_600_000; // 2026-02-25T00:00Z
        // Los Angeles' midnight of the `d`th day after 25 February, from
        // the zone rules (PST to 8 March, day 11; PDT after).
        let midnight = |d: u64| feb_25 + d * DAY_MS + if d <= 11 { 8 * HOUR } else { 7 * HOUR };
        let records: Vec<Output> = (1..40)
            .map(|d| {
                let mut h = health("acme", midnight(d), 70.0);
                h.window_end = midnight(d + 1);
                Output::health(h)
            })
            .collect();
        let (dir, store) = stored(&records).await;
        let date = |d: u64| feb_25 + d * DAY_MS; // as dates are kept
        let training = |d: u64, notes: &str| Touchpoint {
            customer: "acme".into(),
            kind: TouchpointKind::Training,
            at: date(d),
            csm: "alice".into(),
            notes: notes.into(),
            ..Touchpoint::default()
        };
        // 1 March is day 4 after 25 February, 31 March day 34.
        let touchpoints = [
            training(4, "first day"),
            training(34, "last day"),
            training(35, "after"),
        ];
        SqliteStore::open(&store)
            .unwrap()
            .record_touchpoints(&touchpoints)
            .unwrap();
        let customers = dir.path().join("customers.toml");
        let la = crate::customers::tests::GOOD.replace("Europe/Berlin", "America/Los_Angeles");
        std::fs::write(&customers, la).unwrap();
        let data = load(&march(dir.path(), store, customers)).unwrap();
        assert_eq!((data.from, data.to), (midnight(4), midnight(35)));
        let listed: Vec<&str> = data.touchpoints.iter().map(|t| t.notes.as_str()).collect();
        assert_eq!(listed, ["first day", "last day"]);
        let html = render(&data);
        for day in ["2026-03-01", "2026-03-31"] {
            assert!(html.contains(&format!("<td>{day}</td>")), "{day}");
        }
        for day in ["2026-02-28", "2026-03-30"] {
            assert!(!html.contains(&format!("<td>{day}</td>")), "{day}");
        }
    }
}
