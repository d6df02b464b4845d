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
//! - Ctrl-C stops the demo cleanly.
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
    let output = Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args(["report", "--customer", customer])
        .arg("--store")
        .arg(data.join("kpi.sqlite"))
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
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
