//! The dashboard and the business-review report as a user sees them, in
//! headless Chromium (Debian `chromium`, which deploy/test.sh installs):
//!
//! - `fleetpulse demo` (the real binary) serves its dashboard while it runs
//!   and follows the run live; once done, the at-risk list shows the
//!   customers the simulator made at risk, each with the evidence of its
//!   open alerts, the alerts page has every at-risk profile's signature
//!   rule, and a customer page renders its charts and journey;
//! - `fleetpulse report` writes a self-contained HTML file whose charts
//!   render;
//! - Ctrl-C stops the demo cleanly;
//! - late data: restated windows (`revision` above 0) are marked on the
//!   customer page's charts and devices, retracted alert episodes are shown
//!   as retracted and counted nowhere as open, both from records fed to the
//!   API's view and from a real restatement through mosquitto and the
//!   service (whose business review then has the restatement footnote).
//!
//! Screenshots (and the report) are kept in `target/artifacts/`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse::sinks::SqliteStore;
use fleetpulse_sim::Profile;
use support::cdp::artifacts;
use support::truth::signature;

fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("chromium not found: install the Debian package `chromium` (deploy/test.sh does)");
}

/// Runs headless Chromium on `url` with `extra` arguments; returns stdout.
fn run_chromium(url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Containers often have a small /dev/shm.
            "--disable-dev-shm-usage",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The DOM of `url` after its scripts ran; retried until it holds `marker`.
fn dump_dom(url: &str, marker: &str) -> String {
    let mut dom = String::new();
    for _ in 0..3 {
        dom = run_chromium(url, &["--dump-dom".to_string()]);
        if dom.contains(marker) {
            return dom;
        }
    }
    panic!("{url}: `{marker}` never appeared; last DOM:\n{dom}");
}

fn screenshot(url: &str, name: &str, height: u32) -> PathBuf {
    let file = artifacts().join(name);
    let _ = std::fs::remove_file(&file);
    run_chromium(
        url,
        &[
            format!("--screenshot={}", file.display()),
            format!("--window-size=1400,{height}"),
        ],
    );
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "{}: screenshot of {size} bytes",
        file.display()
    );
    println!("screenshot: {}", file.display());
    file
}

/// Text as Chromium serialises it in the DOM.
fn html_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The part of `dom` from the element with `attribute` to the end of its
/// table row (good enough for the rows the dashboard writes).
fn row<'a>(dom: &'a str, attribute: &str) -> Option<&'a str> {
    let start = dom.find(attribute)?;
    let rest = &dom[start..];
    let end = rest.find("</tr>").unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Lines a child writes, collected by a thread.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(self, stream: impl std::io::Read + Send + 'static) {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                self.0.lock().unwrap().push(line);
            }
        });
    }

    fn find(&self, needle: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// Kills the demo if the test fails half-way.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn status(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/api/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_dashboard_shows_the_at_risk_customers_and_the_report_renders() {
    chromium();
    let fleet = support::fleets::fleet(6, 120, 75, 42);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args([
            "demo",
            "--customers",
            "6",
            "--devices",
            "120",
            "--days",
            "75",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (Lines::default(), Lines::default());
    stdout.clone().collect(child.stdout.take().unwrap());
    stderr.clone().collect(child.stderr.take().unwrap());
    let mut demo = Demo(child);

    // The URL is printed first; the dashboard follows the run live.
    let started = Instant::now();
    let base = loop {
        if let Some(line) = stderr.find("dashboard: http://") {
            let url = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .unwrap();
            break url.trim_end_matches('/').to_string();
        }
        assert!(
            demo.0.try_wait().unwrap().is_none(),
            "demo exited:\n{}",
            stderr.all()
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no URL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut live = Vec::new();
    while stdout.find("Serving the dashboard on").is_none() {
        assert!(
            demo.0.try_wait().unwrap().is_none(),
            "demo exited:\n{}\n{}",
            stdout.all(),
            stderr.all()
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "demo did not finish"
        );
        let s = status(&base).await;
        live.push((s["running"] == true, s["records"].as_u64().unwrap()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = status(&base).await;
    let total = done["records"].as_u64().unwrap();
    assert_eq!(done["running"], false);
    assert!(
        live.iter()
            .any(|(running, r)| *running && *r > 0 && *r < total),
        "never saw the run in progress: {live:?}"
    );

    // What the store says, to compare the page with.
    let store = SqliteStore::open(data.join("kpi.sqlite")).unwrap();
    let open = store.alerts(true).unwrap();
    let every = store.alerts(false).unwrap();
    let health = store.latest_health().unwrap();
    let profile_of = |id: &str| fleet.customer(id).unwrap().profile;
    let at_risk_with_open: Vec<&str> = health
        .iter()
        .map(|h| &*h.customer)
        .filter(|c| profile_of(c).is_at_risk() && open.iter().any(|a| &*a.customer == *c))
        .collect();
    assert!(
        at_risk_with_open.len() >= 3,
        "the simulator's at-risk customers have open alerts: {at_risk_with_open:?}"
    );
    assert!(
        open.iter().all(|a| profile_of(&a.customer).is_at_risk()),
        "only at-risk customers have open alerts"
    );

    // The at-risk list: every customer; each open alert with its evidence
    // under its customer; the healthy one without alerts; revenue at stake
    // first.
    let home = format!("{base}/");
    let dom = dump_dom(&home, "data-rendered=\"home\"");
    screenshot(&home, "dashboard-at-risk.png", 1000);
    let list_start = dom.find("id=\"at-risk\"").expect("at-risk table");
    let list = &dom[list_start..];
    for h in &health {
        assert!(
            list.contains(&format!("data-customer=\"{}\"", h.customer)),
            "{} not listed",
            h.customer
        );
    }
    for a in &open {
        let alerts = row(
            list,
            &format!("class=\"alerts-row\" data-customer=\"{}\"", a.customer),
        )
        .unwrap_or_else(|| panic!("no alerts under {}", a.customer));
        assert!(
            alerts.contains(&format!("data-rule=\"{}\"", a.rule.as_str())),
            "{}: {} missing",
            a.customer,
            a.rule.as_str()
        );
        assert!(
            alerts.contains(&html_text(&a.evidence)),
            "{}: evidence `{}` missing in {alerts}",
            a.customer,
            a.evidence
        );
    }
    let healthy = &fleet.customers()[0];
    assert_eq!(healthy.profile, Profile::HealthyGrowing);
    assert!(!list.contains(&format!(
        "class=\"alerts-row\" data-customer=\"{}\"",
        healthy.id
    )));
    let first = list
        .split("class=\"customer-row\" data-customer=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    assert!(
        at_risk_with_open.contains(&first),
        "first row `{first}` is not at risk"
    );
    assert!(dom.contains("id=\"portfolio\""));
    assert!(dom.contains("data-chart=\"sparkline\""));

    // The alerts page: every at-risk profile raised its rule (open or
    // resolved), with its evidence.
    let alerts_url = format!("{base}/#/alerts?status=all");
    let dom = dump_dom(&alerts_url, "data-rendered=\"alerts\"");
    screenshot(&alerts_url, "dashboard-alerts.png", 1000);
    for customer in fleet.customers() {
        let Some(rule) = signature(customer.profile) else {
            continue;
        };
        let episode = every
            .iter()
            .find(|a| *a.customer == *customer.id && a.rule == rule)
            .unwrap_or_else(|| panic!("{}: no {} in the store", customer.id, rule.as_str()));
        assert!(
            dom.contains(&html_text(&episode.evidence)),
            "{} {}: evidence missing on the alerts page",
            customer.id,
            rule.as_str()
        );
    }

    // A customer page: charts with lines, outcomes against targets, the
    // journey, the devices.
    let customer = first;
    let page = format!("{base}/#/customer/{customer}");
    let dom = dump_dom(&page, "data-rendered=\"customer\"");
    screenshot(&page, "dashboard-customer.png", 2600);
    for chart in ["health", "usage", "breadth", "hours", "faults"] {
        let at = dom
            .find(&format!("data-chart=\"{chart}\""))
            .unwrap_or_else(|| panic!("chart {chart} missing"));
        let svg = &dom[at..at + dom[at..].find("</svg>").unwrap()];
        assert!(
            svg.contains("class=\"series\""),
            "chart {chart} has no line"
        );
    }
    // The latest forecast, as stored: the score expected in 30 days and
    // the probability of red.
    let forecast = (store.forecasts(Some(customer)).unwrap())
        .into_iter()
        .max_by_key(|f| f.window_start)
        .expect("a forecast after 75 days");
    let shown = |x: f64| format!("{x:.0}");
    assert!(
        dom.contains(&format!(
            "forecast in 30 d<b>{} <span class=\"small\">({}–{})</span>",
            shown(forecast.expected_30),
            shown(forecast.low_30),
            shown(forecast.high_30)
        )),
        "forecast missing on the customer page: {forecast:?}"
    );
    assert!(dom.contains(&format!(
        "p {}% in {} d",
        shown(forecast.probability_red * 100.0),
        forecast.forecast_days
    )));
    // Why the latest score moved, as stored: the score the day before (and
    // a week before) and the components that moved it, largest first. The
    // points sum to the change between the stored scores.
    let health = store.health(Some(customer)).unwrap();
    let [.., week_before, _, _, _, _, _, day_before, latest] = &health[..] else {
        panic!("fewer than 8 days of health")
    };
    let tenth = |x: f64| format!("{x:.1}");
    for (moved, before, span) in [
        (&latest.moved_1d, day_before, "since yesterday"),
        (&latest.moved_7d, week_before, "over 7 days"),
    ] {
        assert!(
            (latest.score - before.score - moved.total()).abs() < 1e-6,
            "{span}: {moved:?} does not add up to {} -> {}",
            before.score,
            latest.score
        );
        let label = |name| if name == "outcome" { "outcomes" } else { name };
        let mut parts: Vec<_> = (moved.named().into_iter())
            .filter(|(_, p)| p.abs() >= 0.05)
            .collect();
        parts.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        let parts: Vec<String> = (parts.iter())
            .map(|(name, p)| format!("{} {}{p:.1}", label(name), if *p > 0.0 { "+" } else { "" }))
            .collect();
        let text = format!(
            "{span} {} → {}: {}",
            tenth(latest.score - moved.total()),
            tenth(latest.score),
            if parts.is_empty() {
                "no component moved".to_string()
            } else {
                parts.join(", ")
            }
        );
        assert!(dom.contains(&text), "`{text}` missing on the customer page");
    }
    let outcomes = store.outcomes(Some(customer)).unwrap();
    assert!(!outcomes.is_empty());
    for o in &outcomes {
        assert!(
            dom.contains(&format!("data-chart=\"outcome-{}\"", o.outcome)),
            "outcome chart {} missing",
            o.outcome
        );
    }
    for m in store.latest_milestones(Some(customer)).unwrap() {
        assert!(
            dom.contains(&format!(
                "class=\"step {}\" data-milestone=\"{}\"",
                m.status.as_str(),
                m.milestone
            )),
            "milestone {} missing",
            m.milestone
        );
    }
    let devices = dom.matches("data-device=\"").count();
    let expected = store
        .device_kpis("1d")
        .unwrap()
        .iter()
        .filter(|d| &*d.customer == customer)
        .map(|d| d.device.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(devices, expected, "device rows");
    for a in open.iter().filter(|a| &*a.customer == customer) {
        assert!(dom.contains(&html_text(&a.evidence)));
    }

    // The business-review report, rendered.
    let report = artifacts().join(format!("report-{customer}.html"));
    let store_path = data.join("kpi.sqlite");
    let report_args: [&std::ffi::OsStr; 7] = [
        "report".as_ref(),
        "--customer".as_ref(),
        customer.as_ref(),
        "--store".as_ref(),
        store_path.as_os_str(),
        "--out".as_ref(),
        report.as_os_str(),
    ];
    support::in_process::fleetpulse(report_args);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        !html.contains("<script") && !html.contains(" src="),
        "self-contained"
    );
    let url = format!("file://{}", report.display());
    let dom = dump_dom(&url, "id=\"risks\"");
    screenshot(&url, "report.png", 3600);
    for section in [
        "summary", "outcomes", "adoption", "health", "journey", "risks",
    ] {
        assert!(
            dom.contains(&format!("<section id=\"{section}\">")),
            "report section {section}"
        );
    }
    for chart in ["adoption-depth", "adoption-breadth", "health", "journey"] {
        assert!(
            dom.contains(&format!("data-chart=\"{chart}\"")),
            "report chart {chart}"
        );
    }
    assert!(dom.matches("class=\"series\"").count() >= 8, "report lines");
    // The score points the components won or lost over the period add up
    // to the score's change (start and end shown rounded).
    let row = dom
        .split("<td><b>score</b></td>")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("a score row in the health table");
    let cells: Vec<f64> = (row.split("<td class=\"num\">").skip(1))
        .filter_map(|c| c.split('<').next()?.trim_start_matches('+').parse().ok())
        .collect();
    let [start, end, .., points] = cells[..] else {
        panic!("score row {row}")
    };
    assert!(
        (points - (end - start)).abs() <= 1.05,
        "score {start} -> {end}, the components' points sum to {points}"
    );
    let name = &fleet.customer(customer).unwrap().name;
    assert!(dom.contains(&html_text(name)));
    for a in open.iter().filter(|a| &*a.customer == customer) {
        assert!(
            dom.contains(&html_text(&a.next_action)),
            "next action in the report"
        );
    }

    // Ctrl-C ends the demo cleanly.
    let pid = demo.0.id().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(killed.success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "demo ignored Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "demo exit after Ctrl-C: {status}");
}

// ---- late data: restated windows and retracted alerts -------------------

mod late {
    use fleetpulse_engine::kpi::health::{Band, HealthComponents, Stage};
    use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
    use fleetpulse_engine::{
        AlertRecord, CustomerKpi, DeviceKpi, HealthRecord, MachineState, Output, PortfolioRecord,
        Segment, Totals,
    };

    /// 2026-01-05 00:00 UTC.
    pub const DAY0: u64 = 1_767_571_200_000;
    pub const DAY: u64 = 86_400_000;
    pub const DAYS: u64 = 10;

    pub fn day(d: u64) -> u64 {
        DAY0 + d * DAY
    }

    pub fn health(customer: &str, d: u64, arr_at_risk: f64) -> Output {
        Output::health(HealthRecord {
            customer: customer.into(),
            window_start: day(d),
            window_end: day(d + 1),
            score: 55.0,
            band: Band::of(55.0),
            score_trend: -2.0,
            components: HealthComponents::default(),
            moved_1d: Default::default(),
            moved_7d: Default::default(),
            stage: Stage::Adopt,
            segment: Segment::HighTouch,
            arr: 90_000.0,
            arr_at_risk,
            open_alerts: u32::from(arr_at_risk > 0.0),
            days_since_activation: 30.0 + d as f64,
            days_to_renewal: 200.0 - d as f64,
            time_to_value_days: Some(9.0),
            usage_growth: -0.1,
            milestones_reached: 1,
            milestones_total: 3,
            provisional: false,
        })
    }

    /// The date's figures over both customers (90,000 of ARR each).
    pub fn portfolio(d: u64, arr_at_risk: f64, revision: u32) -> Output {
        Output::Portfolio(PortfolioRecord {
            window_start: day(d),
            window_end: day(d + 1),
            customers: 2,
            arr_total: 180_000.0,
            arr_at_risk,
            yellow: 2,
            managed_customers: 2,
            revision,
            ..PortfolioRecord::default()
        })
    }

    pub fn customer_kpi(customer: &str, d: u64, revision: u32) -> Output {
        Output::Customer(CustomerKpi {
            customer: customer.into(),
            window: "1d".into(),
            window_start: day(d),
            window_end: day(d + 1),
            devices_purchased: 2,
            reporting_devices: 2,
            active_devices: 2,
            utilisation: 0.2 + d as f64 / 100.0,
            totals: Totals {
                operating_hours: 8.0 + d as f64,
                idle_hours: 1.0,
                fault_count: d % 3,
                samples: 96,
                ..Totals::default()
            },
            distinct_operators: 2,
            revision,
            ..CustomerKpi::default()
        })
    }

    pub fn device_kpi(customer: &str, device: &str, d: u64, revision: u32) -> Output {
        Output::Device(DeviceKpi {
            customer: customer.into(),
            site: "pit".into(),
            device: device.into(),
            window: "1d".into(),
            window_start: day(d),
            window_end: day(d + 1),
            utilisation: 0.25,
            totals: Totals {
                operating_hours: 6.0,
                fault_count: 1,
                samples: 48,
                ..Totals::default()
            },
            distinct_operators: 1,
            last_seen: day(d + 1) - 60_000,
            last_state: MachineState::Running,
            revision,
        })
    }

    pub fn episode(customer: &str, rule: Rule, status: AlertStatus, opened: u64) -> Output {
        let retracted = status == AlertStatus::Retracted;
        Output::Alert(AlertRecord {
            customer: customer.into(),
            customer_name: format!("{customer} name").into(),
            rule,
            episode: 1,
            status,
            provisional: false,
            opened_at: day(opened),
            resolved_at: (status == AlertStatus::Resolved).then(|| day(opened + 2)),
            evidence: if retracted {
                // What the restatement writes.
                "telemetry that arrived late restated the days that raised it: the episode did \
                 not happen"
                    .into()
            } else {
                format!("{} evidence of {customer}", rule.as_str())
            },
            metric: 1.0,
            threshold: 0.5,
            stage: Stage::Adopt,
            segment: Segment::HighTouch,
            arr_at_risk: 90_000.0,
            next_action: format!("act on {}", rule.as_str()),
        })
    }
}

/// A restatement's records as the service's fan-out delivers them to the
/// API's view (windows with `revision` above 0, a retracted episode), served
/// by the real HTTP server and drawn by the real dashboard in headless
/// Chromium: restated windows are marked on every KPI chart and in the
/// devices table, the customer page says how many were restated, retracted
/// episodes are shown as retracted and counted nowhere as open or at risk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restated_windows_and_retracted_alerts_are_marked_and_not_counted() {
    use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
    use late::*;
    use serde_json::Value;
    use support::cdp::Browser;

    let Served {
        addr,
        hub,
        stop,
        server,
    } = serve().await;
    let base = format!("http://{addr}");

    // "c-late": ten days, of which days 3-5 were restated twice (revision
    // 2) and day 6 once; devices d1 (days 3-6 restated) and d2 (its last
    // two days restated); an open usage_drop, a resolved fault_spike and a
    // devices_dark the late telemetry retracted. "c-quiet": nothing
    // restated, its only episode retracted, no ARR at risk. The portfolio:
    // the figures of day 3 and of the latest day restated (the latest now
    // with c-late's ARR at risk), 90,000 at risk on day 3 before.
    let revision = |d: u64| match d {
        3..=5 => 2,
        6 => 1,
        _ => 0,
    };
    let mut records = Vec::new();
    for d in 0..DAYS {
        let last = d == DAYS - 1;
        records.push(health("c-late", d, if last { 90_000.0 } else { 0.0 }));
        records.push(health("c-quiet", d, 0.0));
        records.push(customer_kpi("c-late", d, revision(d)));
        records.push(customer_kpi("c-quiet", d, 0));
        records.push(device_kpi("c-late", "d1", d, revision(d)));
        records.push(device_kpi("c-late", "d2", d, u32::from(d >= DAYS - 2)));
        records.push(device_kpi("c-quiet", "q1", d, 0));
        records.push(portfolio(d, if d == 3 { 90_000.0 } else { 0.0 }, 0));
    }
    let portfolio_restated = [(3, 0.0, 1), (DAYS - 1, 90_000.0, 2)];
    for (d, arr_at_risk, revision) in portfolio_restated {
        records.push(portfolio(d, arr_at_risk, revision));
    }
    records.push(episode("c-late", Rule::UsageDrop, AlertStatus::Open, 7));
    records.push(episode(
        "c-late",
        Rule::FaultSpike,
        AlertStatus::Resolved,
        1,
    ));
    // Raised open first, then retracted by the restatement.
    records.push(episode("c-late", Rule::DevicesDark, AlertStatus::Open, 3));
    records.push(episode("c-quiet", Rule::DevicesDark, AlertStatus::Open, 4));
    let retractions: Vec<_> = vec![
        episode("c-late", Rule::DevicesDark, AlertStatus::Retracted, 3),
        episode("c-quiet", Rule::DevicesDark, AlertStatus::Retracted, 4),
    ];
    show(&hub, vec![records, retractions]).await;

    // The API: the devices carry their restated days; retracted episodes
    // are not open.
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            let response = reqwest::get(&url).await.unwrap();
            assert!(response.status().is_success(), "{url}");
            response.json::<Value>().await.unwrap()
        }
    };
    let portfolio = get("/api/portfolio").await;
    assert_eq!(portfolio["open_alerts"], 1, "{portfolio}");
    let at_risk = get("/api/customers?at_risk=true").await;
    let ids: Vec<&str> = (at_risk["customers"].as_array().unwrap().iter())
        .map(|c| c["customer"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c-late"]);
    let detail = get("/api/customers/c-late").await;
    let device = |id: &str| {
        detail["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (
            device("d1")["revision"].as_u64(),
            device("d1")["restated_days"].as_u64()
        ),
        (Some(0), Some(4))
    );
    assert_eq!(
        (
            device("d2")["revision"].as_u64(),
            device("d2")["restated_days"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(device("d2")["daily_records"], 7);

    let restated_starts: Vec<u64> = (0..DAYS).filter(|&d| revision(d) > 0).map(day).collect();
    let base_url = base.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        let eval_str = |browser: &mut Browser, js: &str| -> String {
            let v = browser.eval(js);
            v.as_str().map_or_else(|| v.to_string(), str::to_string)
        };

        // The at-risk list: one open alert; the quiet customer has none.
        visit(
            &mut browser,
            &format!("{base_url}/#/"),
            "document.body.dataset.rendered === 'home' && document.getElementById('at-risk')",
        );
        let open_tile = eval_str(
            &mut browser,
            "[...document.querySelectorAll('.tile')].find((t) => t.querySelector('.label')\
             .textContent === 'Open alerts').querySelector('.value').textContent",
        );
        assert_eq!(open_tile, "1");
        assert_eq!(
            eval_str(&mut browser, "document.getElementById('arr-at-risk').textContent"),
            "90,000"
        );
        // The portfolio: the latest date restated, marked on its tile; the
        // chart of the period marks exactly the restated dates, and draws
        // each date's figures as last restated.
        assert_eq!(
            browser.eval(
                "(() => { const b = document.getElementById('arr-at-risk').parentElement\
                 .querySelector('.label span.restated'); return b && [b.dataset.revision, b.title]; })()"
            ),
            serde_json::json!([
                "2",
                "restated (revision 2): telemetry arrived after the window closed"
            ])
        );
        let marks = browser.eval(
            "[...document.querySelectorAll('svg[data-chart=\"portfolio-history\"] g.restated-mark')]\
             .map((g) => [Number(g.dataset.windowStart), Number(g.dataset.revision)])",
        );
        let expected: Vec<(u64, u32)> = portfolio_restated.iter().map(|&(d, _, r)| (day(d), r)).collect();
        assert_eq!(marks, serde_json::json!(expected));
        let ys = eval_str(
            &mut browser,
            "document.querySelector('svg[data-chart=\"portfolio-history\"] path[data-series=\"ARR at risk\"]')\
             .getAttribute('d').split(/[ML]/).filter(Boolean).map((p) => p.split(',')[1]).join(' ')",
        );
        let ys: Vec<&str> = ys.split(' ').collect();
        let zero = ys[0];
        let at_risk: Vec<bool> = ys.iter().map(|&y| y != zero).collect();
        assert_eq!(
            at_risk,
            (0..DAYS).map(|d| d == DAYS - 1).collect::<Vec<_>>(),
            "zero on every date but the latest: day 3's 90,000 was restated away ({ys:?})"
        );
        browser.eval("document.getElementById('portfolio').scrollIntoView(); true");
        assert!(browser.screenshot(&artifacts().join("dashboard-portfolio-restated.png")) > 10_000);
        let alert_cells = eval_str(
            &mut browser,
            "[...document.querySelectorAll('tr.customer-row')].map((r) => r.dataset.customer + \
             '=' + r.cells[r.cells.length - 1].textContent).join(',')",
        );
        assert_eq!(alert_cells, "c-late=1,c-quiet=0");
        assert_eq!(
            browser.eval("document.querySelectorAll('tr.alerts-row[data-customer=\"c-quiet\"]').length"),
            0
        );
        assert_eq!(
            browser.eval("document.querySelectorAll('#at-risk [data-rule=\"devices_dark\"]').length"),
            0,
            "a retracted episode is not under the customer's open alerts"
        );

        // The customer page.
        visit(
            &mut browser,
            &format!("{base_url}/#/customer/c-late"),
            "document.body.dataset.rendered === 'customer' && document.getElementById('restated-windows')",
        );
        let note = browser.eval(
            "(() => { const p = document.getElementById('restated-windows'); \
             return [p.dataset.restated, p.dataset.windows, p.textContent, p.className]; })()",
        );
        assert_eq!(note[0], "4");
        assert_eq!(note[1], "10");
        assert_eq!(
            note[2],
            "4 of 10 1d windows shown restated by late telemetry (latest revision 2; marked ▼ \
             on the charts) · device days: 6 of 14 restated"
        );
        assert_eq!(note[3], "restated-note");
        for chart in ["usage", "breadth", "hours", "faults", "touchpoints-timeline"] {
            let marks = browser.eval(&format!(
                "[...document.querySelectorAll('svg[data-chart=\"{chart}\"] g.restated-mark')]\
                 .map((g) => [Number(g.dataset.windowStart), Number(g.dataset.revision), \
                 g.querySelector('title').textContent])"
            ));
            let marks = marks.as_array().unwrap();
            let starts: Vec<u64> = marks.iter().map(|m| m[0].as_u64().unwrap()).collect();
            assert_eq!(starts, restated_starts, "{chart}");
            let revisions: Vec<u64> = marks.iter().map(|m| m[1].as_u64().unwrap()).collect();
            assert_eq!(revisions, [2, 2, 2, 1], "{chart}");
            assert_eq!(
                marks[0][2],
                "2026-01-08: restated (revision 2): telemetry arrived after the window closed",
                "{chart}"
            );
            let legend = eval_str(
                &mut browser,
                &format!(
                    "document.querySelector('svg[data-chart=\"{chart}\"]').parentElement\
                     .querySelector('.legend').textContent"
                ),
            );
            assert!(legend.contains("restated window"), "{chart}: {legend}");
        }
        // Health is not a KPI window: no marks there.
        assert_eq!(
            browser.eval("document.querySelectorAll('svg[data-chart=\"health\"] g.restated-mark').length"),
            0
        );
        // The devices: d2's latest day restated, d1 four of its seven days.
        let d2 = browser.eval(
            "(() => { const b = document.querySelector('tr[data-device=\"d2\"] span.restated[data-revision]'); \
             return b && [b.textContent, b.title]; })()",
        );
        assert_eq!(
            d2,
            serde_json::json!([
                "restated",
                "restated (revision 1): telemetry arrived after the window closed"
            ])
        );
        assert_eq!(
            browser.eval("document.querySelectorAll('tr[data-device=\"d1\"] span.restated[data-revision]').length"),
            0,
            "d1's latest day was not restated"
        );
        assert_eq!(
            eval_str(
                &mut browser,
                "document.querySelector('tr[data-device=\"d1\"] span.restated[data-restated-days]').textContent"
            ),
            "4 restated"
        );
        // The alerts: the retracted episode in its own list, not among the
        // open or the resolved ones.
        let sections = browser.eval(
            "['open-alerts', 'retracted-alerts', 'resolved-alerts'].map((id) => \
             [...document.querySelectorAll('#' + id + ' .alert')].map((a) => a.dataset.rule + ' ' + \
             a.className).join(','))",
        );
        assert_eq!(
            sections,
            serde_json::json!([
                "usage_drop alert",
                "devices_dark alert retracted",
                "fault_spike alert resolved"
            ])
        );
        let retracted = eval_str(
            &mut browser,
            "document.querySelector('#retracted-alerts .alert').innerText",
        );
        assert!(
            retracted.contains("retracted: telemetry that arrived late showed it did not happen")
                && retracted.contains("not counted as open or at risk"),
            "{retracted}"
        );
        let style = eval_str(
            &mut browser,
            "(() => { const a = getComputedStyle(document.querySelector('#retracted-alerts .alert')), \
             o = getComputedStyle(document.querySelector('#open-alerts .alert')); \
             return [a.borderLeftStyle, a.backgroundColor === o.backgroundColor].join(' '); })()",
        );
        assert_eq!(style, "dashed false", "a distinct style");
        browser.eval("document.getElementById('restated-windows').scrollIntoView(); true");
        assert!(browser.screenshot(&artifacts().join("dashboard-restated.png")) > 10_000);

        // The quiet customer: nothing restated, one retracted episode, no
        // open alert.
        open_customer(&mut browser, &base_url, "c-quiet");
        let quiet = browser.eval(
            "[document.getElementById('restated-windows').textContent, \
             document.querySelectorAll('g.restated-mark').length, \
             document.getElementById('open-alerts').textContent, \
             document.querySelectorAll('#retracted-alerts .alert.retracted').length]",
        );
        assert_eq!(
            quiet,
            serde_json::json!([
                "0 of 10 1d windows shown restated by late telemetry · device days: 0 of 7 restated",
                0,
                "None.",
                1
            ])
        );

        // The alerts page: open by default, with a note on the retracted.
        visit(
            &mut browser,
            &format!("{base_url}/#/alerts"),
            "document.body.dataset.rendered === 'alerts' && location.hash === '#/alerts'",
        );
        let open_page = browser.eval(
            "[[...document.querySelectorAll('#alerts tbody tr')].map((r) => r.dataset.status).join(','), \
             document.getElementById('retracted-note').dataset.retracted, \
             document.getElementById('retracted-note').textContent]",
        );
        assert_eq!(open_page[0], "open");
        assert_eq!(open_page[1], "2");
        assert!(
            open_page[2]
                .as_str()
                .unwrap()
                .starts_with("2 episodes retracted (telemetry that arrived late showed they did not happen), not counted as open"),
            "{open_page}"
        );
        visit(
            &mut browser,
            &format!("{base_url}/#/alerts?status=all"),
            "document.body.dataset.rendered === 'alerts' && document.querySelectorAll('#alerts tbody tr').length === 4",
        );
        let rows = browser.eval(
            "[...document.querySelectorAll('#alerts tbody tr')].filter((r) => r.classList.contains('retracted'))\
             .map((r) => [r.dataset.customer, r.cells[2].textContent, r.cells[6].textContent, \
             r.querySelector('.next').textContent])",
        );
        let retracted_text = "retracted: telemetry that arrived late showed it did not happen";
        assert_eq!(
            rows,
            serde_json::json!([
                ["c-quiet", "retracted", "–", retracted_text],
                ["c-late", "retracted", "–", retracted_text]
            ])
        );
        assert!(browser.screenshot(&artifacts().join("dashboard-retracted-alerts.png")) > 10_000);
        visit(
            &mut browser,
            &format!("{base_url}/#/alerts?status=retracted"),
            "document.body.dataset.rendered === 'alerts' && location.hash.includes('retracted') \
             && document.querySelectorAll('#alerts tbody tr').length === 2 \
             && document.querySelectorAll('#alerts tbody tr.retracted').length === 2",
        );
        browser.eval("document.querySelector('select[data-filter=\"status\"]').value")
    })
    .await
    .unwrap();
    assert_eq!(seen, "retracted");
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// Opens `url` and waits (up to 30 s) until `ready` (JavaScript) holds.
fn visit(browser: &mut support::cdp::Browser, url: &str, ready: &str) {
    browser.navigate(url);
    browser.wait_for(ready, Duration::from_secs(30));
}

/// Opens the customer page of `id` at `base` and waits until it is drawn.
fn open_customer(browser: &mut support::cdp::Browser, base: &str, id: &str) {
    let ready = format!(
        "document.body.dataset.rendered === 'customer' && document.querySelector('h1') \
         && document.querySelector('h1').textContent.includes('{id}')"
    );
    visit(browser, &format!("{base}/#/customer/{id}"), &ready);
}

/// The real HTTP server on a free loopback port, over a hub the test feeds
/// (Chromium checked to be there first).
struct Served {
    addr: std::net::SocketAddr,
    hub: std::sync::Arc<fleetpulse::http::Hub>,
    stop: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Hands each of `batches` to `hub`'s view, in order, as the service's
/// fan-out does, and waits until it took them in.
async fn show(hub: &Arc<fleetpulse::http::Hub>, batches: Vec<Vec<fleetpulse_engine::Output>>) {
    let (feed, task) = fleetpulse::http::feed(hub.clone(), fleetpulse::http::Fill::Nothing);
    for records in batches {
        feed.send(records.into()).await.unwrap();
    }
    drop(feed);
    task.await.unwrap();
}

/// GETs `url` as JSON.
async fn get_json(url: String) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn serve() -> Served {
    chromium();
    let hub = fleetpulse::http::Hub::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let config = fleetpulse::http::HttpConfig::on("127.0.0.1:0".parse().unwrap());
    let (addr, server) = fleetpulse::http::start(&config, hub.clone(), stop.clone())
        .await
        .unwrap();
    Served {
        addr,
        hub,
        stop,
        server,
    }
}

/// A provisional alert (raised from the open day, before its close) is
/// marked provisional on the customer page and the alerts page, in headless
/// Chromium; one the day's close did not confirm is shown retracted, saying
/// so, and counted nowhere as open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisional_alerts_are_marked_until_their_day_closes() {
    use fleetpulse_engine::Output;
    use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
    use late::*;
    use support::cdp::Browser;

    let Served {
        addr,
        hub,
        stop,
        server,
    } = serve().await;
    let provisional = |customer: &str, status: AlertStatus| {
        let Output::Alert(mut a) = episode(customer, Rule::DevicesDark, status, DAYS) else {
            unreachable!()
        };
        a.provisional = true;
        Output::Alert(a)
    };
    let mut records: Vec<Output> = (0..DAYS)
        .flat_map(|d| [health("c-dark", d, 0.0), health("c-back", d, 0.0)])
        .collect();
    // c-dark's open day so far: a provisional score.
    let Output::Health(mut today) = health("c-dark", DAYS, 0.0) else {
        unreachable!()
    };
    today.provisional = true;
    records.push(Output::Health(today));
    records.push(provisional("c-dark", AlertStatus::Open));
    records.push(provisional("c-back", AlertStatus::Open));
    records.push(provisional("c-back", AlertStatus::Retracted));
    show(&hub, vec![records]).await;

    let alerts = get_json(format!("http://{addr}/api/alerts?status=all")).await;
    let flags: Vec<_> = (alerts["alerts"].as_array().unwrap().iter())
        .map(|a| {
            (
                a["customer"].as_str().unwrap(),
                a["status"].as_str().unwrap(),
                a["provisional"].as_bool(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            ("c-back", "retracted", Some(true)),
            ("c-dark", "open", Some(true))
        ],
        "{alerts}"
    );
    let base = format!("http://{addr}");
    tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        visit(
            &mut browser,
            &format!("{base}/#/customer/c-dark"),
            "document.body.dataset.rendered === 'customer' && document.querySelector('#open-alerts .alert')",
        );
        let open = browser.eval(
            "[document.querySelector('#open-alerts .alert').dataset.provisional, \
             document.querySelector('#open-alerts .provisional-label').textContent, \
             document.querySelector('#open-alerts .provisional-label').title]",
        );
        assert_eq!(
            open,
            serde_json::json!([
                "true",
                "provisional",
                "provisional: raised before the day closed, which confirms or retracts it"
            ])
        );
        let score = browser.eval(
            "[document.getElementById('health-score').dataset.provisional, \
             document.querySelector('#health-score .provisional-label').title]",
        );
        assert_eq!(
            score,
            serde_json::json!([
                "true",
                "provisional: today so far, read at its pace; the day's close replaces it"
            ])
        );
        assert!(browser.screenshot(&artifacts().join("dashboard-provisional.png")) > 10_000);
        open_customer(&mut browser, &base, "c-back");
        let back = browser.eval(
            "[document.getElementById('open-alerts').textContent, \
             document.querySelector('#retracted-alerts .alert .next').textContent.split(' · ')[0]]",
        );
        assert_eq!(
            back,
            serde_json::json!(["None.", "retracted: the day's close did not confirm it"])
        );
        assert_eq!(
            browser.eval("document.getElementById('health-score').dataset.provisional"),
            "false"
        );
        visit(
            &mut browser,
            &format!("{base}/#/"),
            "document.body.dataset.rendered === 'home' && document.querySelector('tr.customer-row')",
        );
        let list = browser.eval(
            "[...document.querySelectorAll('tr.customer-row')].map((r) => \
             r.dataset.customer + '=' + r.querySelector('td.score').dataset.provisional).sort().join(',')",
        );
        assert_eq!(list, "c-back=false,c-dark=true");
        visit(
            &mut browser,
            &format!("{base}/#/alerts"),
            "document.body.dataset.rendered === 'alerts' && document.querySelectorAll('#alerts tbody tr').length === 1",
        );
        let row = browser.eval(
            "[...document.querySelectorAll('#alerts tbody tr')].map((r) => \
             [r.dataset.customer, r.dataset.provisional, r.cells[2].textContent])",
        );
        assert_eq!(row, serde_json::json!([["c-dark", "true", "openprovisional"]]));
    })
    .await
    .unwrap();
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// The same marks from a real restatement: a fleet that goes dark for three
/// days (two of its three devices) raises `devices_dark` through mosquitto
/// and the service; when the buffers arrive, the service restates the
/// customer's windows and retracts the episode, and the dashboard it serves
/// shows exactly the restated windows the API has, and the episode as
/// retracted, not open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_restatement_shows_on_the_dashboard() {
    use fleetpulse::config::WalConfig;
    use serde_json::Value;
    use support::cdp::Browser;
    use support::late::{DARK_CUSTOMERS, dark_fleet};
    use support::servers::{Mosquitto, NO_LOSS};

    chromium();
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.toml");
    std::fs::write(&customers, DARK_CUSTOMERS).unwrap();
    let mut config = support::in_process::config(
        mosquitto.host(),
        mosquitto.port(),
        "dashboard-late",
        1,
        &customers,
    );
    config.wal = Some(WalConfig {
        dir: dir.path().join("wal"),
        ..toml::from_str("dir = \"x\"").unwrap()
    });
    config.sinks = vec![fleetpulse::sinks::SinkConfig::Sqlite(
        fleetpulse::sinks::sqlite::SqliteConfig {
            path: dir.path().join("kpi.sqlite"),
        },
    )];
    let hub = fleetpulse::http::Hub::new();
    config.http.enabled = true;
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    let runtime = fleetpulse::service::Runtime::new(Some(hub.clone()));
    let (metrics, shutdown) = (runtime.metrics.clone(), runtime.shutdown.clone());
    let service = tokio::spawn(async move {
        fleetpulse::service::run(config, Path::new("<test>"), runtime).await
    });
    let m = metrics.clone();
    support::poll::wait_for("subscription", move || {
        m.subscribed.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    let base = format!("http://{}", hub.local_addr().expect("the service listens"));

    let (before, after) = dark_fleet();
    let mut sent = 0;
    for (i, messages) in [before, after].into_iter().enumerate() {
        sent += messages.len() as u64;
        let options =
            support::fleets::publish_options(&mosquitto, &format!("dashboard-late-sim-{i}"));
        fleetpulse_sim::publish(options, messages, |_| {})
            .await
            .unwrap();
        let m = metrics.clone();
        support::poll::wait_for("the messages handled", move || m.handled() >= sent).await;
    }
    assert!(
        metrics
            .late_admitted
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    // The restatement pass runs once a second: wait until the view has the
    // retraction.
    let get = |path: String| async move {
        reqwest::get(&path)
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let started = Instant::now();
    let retracted = loop {
        let doc = get(format!("{base}/api/alerts?status=retracted")).await;
        if let Some(a) = doc["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["rule"] == "devices_dark")
        {
            break a.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no retracted devices_dark in the view: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Let the passes settle: the view's version stops changing.
    let mut version = get(format!("{base}/api/status")).await["version"].clone();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = get(format!("{base}/api/status")).await["version"].clone();
        if now == version {
            break;
        }
        version = now;
    }
    let open = get(format!("{base}/api/alerts?status=open")).await;
    assert!(
        !open["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["opened_at"] == retracted["opened_at"] && a["rule"] == "devices_dark"),
        "the retracted episode is not open: {open}"
    );
    let detail = get(format!("{base}/api/customers/dk?days=120")).await;
    let restated: Vec<(u64, u64)> = (detail["kpis"].as_array().unwrap().iter())
        .filter(|k| k["revision"].as_u64().unwrap() > 0)
        .map(|k| {
            (
                k["window_start"].as_u64().unwrap(),
                k["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    let windows = detail["kpis"].as_array().unwrap().len();
    assert!(!restated.is_empty(), "no restated window: {detail}");
    let device_days: u64 = (detail["devices"].as_array().unwrap().iter())
        .map(|d| d["restated_days"].as_u64().unwrap())
        .sum();
    let open_in_view = get(format!("{base}/api/portfolio")).await["open_alerts"]
        .as_u64()
        .unwrap();

    let page = format!("{base}/#/customer/dk");
    let alerts_page = format!("{base}/#/alerts?status=retracted");
    let shown = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        visit(
            &mut browser,
            &page,
            "document.body.dataset.rendered === 'customer' && document.getElementById('restated-windows')",
        );
        let shown = browser.eval(
            "[document.getElementById('restated-windows').dataset.restated, \
             document.getElementById('restated-windows').dataset.windows, \
             document.getElementById('restated-windows').dataset.deviceDaysRestated, \
             [...document.querySelectorAll('svg[data-chart=\"hours\"] g.restated-mark')]\
             .map((g) => [Number(g.dataset.windowStart), Number(g.dataset.revision)]), \
             [...document.querySelectorAll('#retracted-alerts .alert.retracted')].map((a) => a.dataset.rule), \
             [...document.querySelectorAll('#open-alerts .alert')].map((a) => a.dataset.rule)]",
        );
        browser.eval("document.getElementById('restated-windows').scrollIntoView(); true");
        assert!(browser.screenshot(&artifacts().join("dashboard-late-dark.png")) > 10_000);
        visit(
            &mut browser,
            &alerts_page,
            "document.body.dataset.rendered === 'alerts' && location.hash.includes('retracted') \
             && document.querySelector('#alerts tbody tr.retracted[data-customer=\"dk\"]')",
        );
        let tile = {
            visit(
                &mut browser,
                &page.replace("#/customer/dk", "#/"),
                "document.body.dataset.rendered === 'home'",
            );
            browser.eval(
                "[...document.querySelectorAll('.tile')].find((t) => t.querySelector('.label')\
                 .textContent === 'Open alerts').querySelector('.value').textContent",
            )
        };
        (shown, tile)
    })
    .await
    .unwrap();
    let (shown, tile) = shown;
    assert_eq!(shown[0], restated.len().to_string());
    assert_eq!(shown[1], windows.to_string());
    assert_eq!(shown[2], device_days.to_string());
    assert!(device_days > 0);
    let marks: Vec<(u64, u64)> = (shown[3].as_array().unwrap().iter())
        .map(|m| (m[0].as_u64().unwrap(), m[1].as_u64().unwrap()))
        .collect();
    assert_eq!(
        marks, restated,
        "the hours chart marks the restated windows"
    );
    assert!(
        shown[4]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "devices_dark"),
        "{shown}"
    );
    assert!(
        !shown[5]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "devices_dark"),
        "{shown}"
    );
    assert_eq!(tile, open_in_view.to_string());

    shutdown.cancel();
    service.await.unwrap().unwrap();

    // The business review from the store has the footnote, with the
    // store's count of restated days.
    let store = dir.path().join("kpi.sqlite");
    // The report's period ends with the last closed day: the stop closed
    // none (the window of the day still open is its hours so far).
    let closed: u64 = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row(
            "SELECT max(window_end) FROM health WHERE customer = 'dk' AND NOT provisional",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let kpis: Vec<_> = SqliteStore::open(&store)
        .unwrap()
        .customer_kpis("1d")
        .unwrap()
        .into_iter()
        .filter(|k| k.window_end <= closed)
        .collect();
    let restated_days = kpis.iter().filter(|k| k.revision > 0).count();
    assert!(restated_days > 0);
    let report = artifacts().join("report-late-dark.html");
    let report_args: [&std::ffi::OsStr; 9] = [
        "report".as_ref(),
        "--customer".as_ref(),
        "dk".as_ref(),
        "--store".as_ref(),
        store.as_os_str(),
        "--customers".as_ref(),
        customers.as_os_str(),
        "--out".as_ref(),
        report.as_os_str(),
    ];
    support::in_process::fleetpulse(report_args);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains(&format!(
            "{restated_days} of {} daily windows restated by late telemetry (",
            kpis.len()
        )),
        "no footnote in {}",
        report.display()
    );
    assert!(html.contains("retracted: telemetry that arrived late showed it did not happen"));
}

/// A customer's days are dated by its local dates (customers.toml
/// `timezone`): a Berlin customer's day starts at 23:00 UTC the day before,
/// so dated as UTC every chart and alert of it said the day before. Its page
/// names the zone; its charts, its alerts there, on the home list and on the
/// alerts page carry its dates; a customer without a zone keeps UTC dates.
/// A Los Angeles customer's days start at 08:00 UTC, and its touchpoints
/// (dates) mark its own days as Berlin's do. Dates written out from the
/// zone rules (CET = UTC+1, PST = UTC-8 in January).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_days_are_dated_in_its_time_zone() {
    use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
    use fleetpulse_engine::{Contract, CustomerSpec, EngineConfig, Output, Segment};
    use late::*;
    use support::cdp::Browser;

    const HOUR: u64 = 3_600_000;
    let Served {
        addr,
        hub,
        stop,
        server,
    } = serve().await;
    let mut engine = EngineConfig::default();
    const ZONES: [(&str, &str, i64); 3] = [
        ("berlin", "Europe/Berlin", HOUR as i64),
        ("plain", "UTC", 0),
        ("west", "America/Los_Angeles", -8 * HOUR as i64),
    ];
    for (id, zone, _) in ZONES {
        let contract = Contract {
            arr: 90_000.0,
            start: day(0) - 30 * DAY,
            renewal: day(0) + 300 * DAY,
            devices_purchased: 2,
            operator_seats: 2,
        };
        let mut spec = CustomerSpec::new(id, Segment::HighTouch, contract);
        spec.timezone = jiff::tz::TimeZone::get(zone).unwrap();
        engine.customers.insert(id.into(), spec);
    }
    hub.attach(
        Arc::new(fleetpulse::metrics::IngestMetrics::default()),
        &engine,
    );
    // Berlin's days start an hour before the UTC ones, Los Angeles' 8
    // hours after (PST in January).
    let earlier = |at: u64, by: i64| at.checked_add_signed(-by).unwrap();
    let shifted = |record: Output, by: i64| match record {
        Output::Health(mut h) => {
            (h.window_start, h.window_end) =
                (earlier(h.window_start, by), earlier(h.window_end, by));
            Output::Health(h)
        }
        Output::Customer(mut k) => {
            (k.window_start, k.window_end) =
                (earlier(k.window_start, by), earlier(k.window_end, by));
            Output::Customer(k)
        }
        Output::Alert(mut a) => {
            a.opened_at = earlier(a.opened_at, by);
            Output::Alert(a)
        }
        other => other,
    };
    let mut records = Vec::new();
    for (customer, _, by) in ZONES {
        for d in 0..DAYS {
            records.push(shifted(health(customer, d, 90_000.0), by));
            records.push(shifted(customer_kpi(customer, d, 0), by));
        }
        // Opened at the close of the last day, 14 January (00:00 on 15
        // January, local): dated by the day it fired, in its zone.
        records.push(shifted(
            episode(customer, Rule::UsageDrop, AlertStatus::Open, DAYS),
            by,
        ));
    }
    show(&hub, vec![records]).await;
    // A training on 10 January (day 5) of each: a date, kept as 00:00 UTC
    // (16:00 on the 9th in Los Angeles, 01:00 on the 10th in Berlin).
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("kpi.sqlite");
    let trainings: Vec<_> = (ZONES.iter())
        .map(
            |(customer, _, _)| fleetpulse_engine::kpi::touchpoint::Touchpoint {
                customer: (*customer).into(),
                kind: fleetpulse_engine::kpi::touchpoint::TouchpointKind::Training,
                at: day(5),
                csm: "alice".into(),
                ..Default::default()
            },
        )
        .collect();
    (fleetpulse::sinks::SqliteStore::open(&store).unwrap())
        .record_touchpoints(&trainings)
        .unwrap();
    hub.set_touchpoint_store(Some(store));
    let doc = get_json(format!("http://{addr}/api/customers/berlin")).await;
    assert_eq!(doc["timezone"], "Europe/Berlin");

    let base = format!("http://{addr}");
    tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        for (customer, zone, _) in ZONES {
            visit(
                &mut browser,
                &format!("{base}/#/customer/{customer}"),
                &format!(
                    "document.body.dataset.rendered === 'customer' \
                     && document.querySelector('h1').textContent.includes('{customer}') \
                     && document.querySelector('#open-alerts .alert')"
                ),
            );
            let seen = browser.eval(
                "[document.getElementById('customer-zone').textContent, \
                 document.querySelector('svg[data-chart=\"health\"] text[text-anchor=\"start\"]').textContent, \
                 document.querySelector('#open-alerts .alert .next').textContent.split(' · ')[0]]",
            );
            assert_eq!(
                seen,
                serde_json::json!([zone, "01-05", "since 2026-01-14"]),
                "{customer}"
            );
            // The training is marked on the customer's 10 January, with
            // that day's hours (8 + 5): keyed by UTC dates, Los Angeles'
            // mark sat on the 9th and Berlin's took the 11th's hours.
            let mark = browser.eval(
                "[...document.querySelectorAll('svg[data-chart=\"touchpoints-timeline\"] circle.mark')]\
                 .map((c) => c.dataset.day + ' ' + c.dataset.value)",
            );
            assert_eq!(mark, serde_json::json!(["2026-01-10 13"]), "{customer}");
        }
        visit(
            &mut browser,
            &format!("{base}/#/"),
            "document.body.dataset.rendered === 'home' && document.querySelectorAll('tr.alerts-row').length === 3",
        );
        let home = browser.eval(
            "[...document.querySelectorAll('tr.alerts-row')].map((r) => \
             r.dataset.customer + ' ' + r.querySelector('.alert .next').textContent.split(' · ')[0]).sort()",
        );
        assert_eq!(
            home,
            serde_json::json!([
                "berlin since 2026-01-14",
                "plain since 2026-01-14",
                "west since 2026-01-14"
            ])
        );
        visit(
            &mut browser,
            &format!("{base}/#/alerts"),
            "document.body.dataset.rendered === 'alerts' && document.querySelectorAll('#alerts tbody tr').length === 3",
        );
        let rows = browser.eval(
            "[...document.querySelectorAll('#alerts tbody tr')].map((r) => \
             r.dataset.customer + ' ' + r.cells[3].textContent).sort()",
        );
        assert_eq!(
            rows,
            serde_json::json!(["berlin 2026-01-14", "plain 2026-01-14", "west 2026-01-14"])
        );
    })
    .await
    .unwrap();
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// A customer in the file whose machines never report, as the real engine
/// judges it (onboarding_stalled once its onboarding days passed, a red
/// health a day with its days since activation undefined): the API gives
/// that as null, the home page lists it red with its ARR, and its page
/// says no machine reported yet (not "first day") beside the open alert,
/// in headless Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_whose_machines_never_reported_is_shown_as_such() {
    use fleetpulse_engine::config::{DAY_MS, HOUR_MS};
    use fleetpulse_engine::{
        Contract, CustomerSpec, DeviceBatch, EngineConfig, MachineState, Output, Sample, Segment,
    };
    use support::cdp::Browser;

    const T0: u64 = 1_767_571_200_000;
    let mut config = EngineConfig::default();
    for (id, arr) in [("acme", 120_000.0), ("ghost", 250_000.0)] {
        let contract = Contract {
            arr,
            start: T0 + 5 * DAY_MS,
            renewal: T0 + 800 * DAY_MS,
            devices_purchased: 2,
            operator_seats: 4,
        };
        let spec = CustomerSpec::new(id, Segment::HighTouch, contract);
        config.customers.insert(id.into(), spec);
    }
    let batches: Vec<DeviceBatch> = (0..60 * 24)
        .step_by(2)
        .flat_map(|h: u64| {
            (0..2).map(move |d| DeviceBatch {
                customer: "acme".into(),
                site: "pit".into(),
                device: format!("d{d}").into(),
                unit_epoch: 0,
                sequence: h + 1,
                samples: vec![Sample {
                    at: T0 + h * HOUR_MS + 420_000,
                    state: MachineState::Running,
                    operating_hours: 100.0 + h as f64,
                    ..Sample::default()
                }],
            })
        })
        .collect();
    let keep = |r: &Output| !matches!(r, Output::Device(_) | Output::Customer(_));
    let outcome = tokio::task::spawn_blocking(move || {
        fleetpulse_engine::run::run_batches_keeping(config, 2, 2 * HOUR_MS, batches, keep)
    })
    .await
    .unwrap()
    .unwrap();

    let Served {
        addr,
        hub,
        stop,
        server,
    } = serve().await;
    show(&hub, vec![outcome.outputs]).await;
    let ghost = get_json(format!("http://{addr}/api/customers/ghost")).await;
    let health = &ghost["health"];
    let latest = health.as_array().and_then(|h| h.last()).unwrap_or(health);
    assert!(latest["days_since_activation"].is_null(), "{ghost}");
    assert_eq!(latest["band"], "red", "{ghost}");
    assert_eq!(latest["arr_at_risk"], 250_000.0, "{ghost}");

    let base = format!("http://{addr}");
    tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        visit(
            &mut browser,
            &format!("{base}/#/"),
            "document.body.dataset.rendered === 'home' && document.querySelector('tr.customer-row')",
        );
        let rows = browser.eval(
            "[...document.querySelectorAll('tr.customer-row')].map((r) => \
             r.dataset.customer + '=' + r.dataset.band).sort().join(',')",
        );
        let rows = rows.as_str().unwrap();
        assert!(rows.starts_with("acme=") && rows.ends_with(",ghost=red"), "{rows}");
        open_customer(&mut browser, &base, "ghost");
        let page = browser.eval(
            "[document.getElementById('moved-1d').textContent, \
             document.querySelector('#open-alerts .alert').dataset.rule, \
             document.querySelector('#open-alerts .alert .evidence').textContent]",
        );
        assert_eq!(
            page[0], "no telemetry yet: none of its machines has reported",
            "{page}"
        );
        assert_eq!(page[1], "onboarding_stalled", "{page}");
        assert!(
            (page[2].as_str().unwrap())
                .starts_with("no telemetry at all in the 45 days since the contract started"),
            "{page}"
        );
        assert!(browser.screenshot(&artifacts().join("dashboard-never-reported.png")) > 10_000);
    })
    .await
    .unwrap();
    stop.cancel();
    server.await.unwrap().unwrap();
}
