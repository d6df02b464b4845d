//! Is the health score any good, end to end: a small simulated fleet whose
//! customers all come to renewal (`FleetSpec::renewals`, churn drawn from
//! odds by profile) goes through the engine in-process (the
//! `fleetpulse health-validation` path) and through the service (embedded
//! broker, SQLite store, `/api/health-validation`, the portfolio page in
//! headless Chromium). Every figure is compared with one counted here,
//! independently: the simulator's own decisions (`Fleet::churns` on the
//! contract's renewal date), the daily health rows (the engine's, or the
//! store's), the score of the last day ended by the cutoff looked up by
//! a plain scan, and the AUC by comparing every churned case with every
//! renewed one.

mod support;

use std::time::Duration;

use fleetpulse::config::{CustomersRef, ServiceConfig};
use fleetpulse::customers::{CheckContext, CustomersFile};
use fleetpulse::health_validation::{HealthValidationArgs, render, simulate};
use fleetpulse::sinks::SinkConfig;
use fleetpulse::sinks::sqlite::{SqliteConfig, SqliteStore};
use fleetpulse_engine::kpi::health::Band;
use fleetpulse_engine::{HealthRecord, Output};
use fleetpulse_sim::{Fleet, FleetSpec};
use serde_json::Value;
use support::cdp::{Browser, artifacts};

const DAY: u64 = 86_400_000;
const HORIZONS: [u32; 3] = [30, 60, 90];

fn spec(seed: u64) -> FleetSpec {
    FleetSpec {
        customers: 18,
        devices: 36,
        days: 120,
        seed,
        renewals: true,
        ..FleetSpec::default()
    }
}

/// One horizon's figures, counted by hand.
#[derive(Debug, PartialEq)]
struct Expected {
    churned: u64,
    renewed: u64,
    without_history: u64,
    auc: Option<f64>,
    /// Green, yellow, red: (cases, churned).
    bands: [(u64, u64); 3],
}

/// The figures of `horizon` days from the simulator's decisions and the
/// health rows `health`.
fn expected(fleet: &Fleet, health: &[HealthRecord], horizon: u32) -> Expected {
    let mut cases: Vec<(f64, Band, bool)> = Vec::new();
    let mut without = 0;
    for c in fleet.customers() {
        let Some(churned) = fleet.churns(c) else {
            continue;
        };
        let cutoff = c.contract.renewal_ms - u64::from(horizon) * DAY;
        // The last day that ended by the cutoff, if it ended within a day
        // of it.
        let last = health
            .iter()
            .filter(|h| *h.customer == *c.id && h.window_end <= cutoff)
            .max_by_key(|h| h.window_end)
            .filter(|h| cutoff - h.window_end <= DAY);
        match last {
            Some(h) => cases.push((h.score, h.band, churned)),
            None => without += 1,
        }
    }
    let (mut pairs, mut wins) = (0u64, 0.0);
    for (churned_score, _, _) in cases.iter().filter(|c| c.2) {
        for (renewed_score, _, _) in cases.iter().filter(|c| !c.2) {
            pairs += 1;
            if churned_score < renewed_score {
                wins += 1.0;
            } else if churned_score == renewed_score {
                wins += 0.5;
            }
        }
    }
    let band = |b: Band| {
        let of: Vec<_> = cases.iter().filter(|c| c.1 == b).collect();
        (of.len() as u64, of.iter().filter(|c| c.2).count() as u64)
    };
    Expected {
        churned: cases.iter().filter(|c| c.2).count() as u64,
        renewed: cases.iter().filter(|c| !c.2).count() as u64,
        without_history: without,
        auc: (pairs > 0).then(|| wins / pairs as f64),
        bands: [band(Band::Green), band(Band::Yellow), band(Band::Red)],
    }
}

/// `horizon`'s figures as the API or the CLI gives them.
fn given(h: &Value) -> Expected {
    let bands = h["bands"].as_array().unwrap();
    let names: Vec<&str> = bands.iter().map(|b| b["band"].as_str().unwrap()).collect();
    assert_eq!(names, ["green", "yellow", "red"]);
    let band = |i: usize| {
        let b = &bands[i];
        let (cases, churned) = (b["cases"].as_u64().unwrap(), b["churned"].as_u64().unwrap());
        match b["churn_rate"].as_f64() {
            Some(rate) => assert!((rate - churned as f64 / cases as f64).abs() < 1e-12),
            None => assert_eq!(cases, 0),
        }
        (cases, churned)
    };
    Expected {
        churned: h["churned"].as_u64().unwrap(),
        renewed: h["renewed"].as_u64().unwrap(),
        without_history: h["without_history"].as_u64().unwrap(),
        auc: h["auc"].as_f64(),
        bands: [band(0), band(1), band(2)],
    }
}

fn assert_same(got: &Expected, want: &Expected, at: &str) {
    assert_eq!(
        (
            got.churned,
            got.renewed,
            got.without_history,
            got.bands,
            got.auc.is_some()
        ),
        (
            want.churned,
            want.renewed,
            want.without_history,
            want.bands,
            want.auc.is_some()
        ),
        "{at}"
    );
    if let (Some(a), Some(b)) = (got.auc, want.auc) {
        assert!((a - b).abs() < 1e-12, "{at}: AUC {a} != {b}");
    }
}

/// The engine's daily health of `fleet`, run here, apart from the CLI.
fn engine_health(fleet: &Fleet) -> Vec<HealthRecord> {
    let file = fleetpulse::sim::customers_file(fleet);
    let text = file.to_toml();
    let file = CustomersFile::parse(std::path::Path::new("sim.toml"), &text).unwrap();
    let path = std::path::Path::new("sim.toml");
    let specs = file.specs(path, &text, &CheckContext::default()).unwrap();
    fleetpulse::sim::through_engine(fleet, specs, 1, |_| true)
        .unwrap()
        .outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Health(h) if !h.provisional => Some(*h),
            _ => None,
        })
        .collect()
}

/// The CLI's figures (two workers) equal those counted here from the
/// engine's health (one worker) and the simulator's decisions.
#[test]
fn the_cli_figures_equal_an_independent_count() {
    let spec = spec(3);
    let fleet = Fleet::generate(&spec);
    let decided = fleet
        .customers()
        .iter()
        .filter(|c| fleet.churns(c).is_some())
        .count();
    assert_eq!(decided, 18, "every renewal falls inside the simulation");
    let churned = fleet
        .customers()
        .iter()
        .filter(|c| fleet.churns(c) == Some(true))
        .count();
    assert!(churned > 0 && churned < 18, "both classes: {churned}");

    let result = simulate(&spec, 2).unwrap();
    assert_eq!(result.validation.decisions, 18);
    assert_eq!(result.validation.customers_with_decisions, 18);
    let health = engine_health(&fleet);
    for (i, horizon) in HORIZONS.into_iter().enumerate() {
        let doc = serde_json::to_value(&result.validation.horizons[i]).unwrap();
        assert_eq!(doc["horizon_days"], horizon);
        let want = expected(&fleet, &health, horizon);
        println!("{horizon} days: {want:?}");
        assert_same(&given(&doc), &want, &format!("{horizon} days"));
    }
    // The report prints the AUCs it computed.
    let args = HealthValidationArgs {
        seeds: 1,
        first_seed: 3,
        customers: 18,
        devices: 36,
        days: 120,
        workers: 2,
    };
    let report = render(&args, std::slice::from_ref(&result));
    for h in &result.validation.horizons {
        if let Some(auc) = h.auc {
            assert!(report.contains(&format!("{auc:.3}")), "{report}");
        }
    }
}

/// The service's `/api/health-validation` over the stored health rows and
/// the contract events of its customers file equals the count here from
/// the store's rows and the simulator's decisions; the portfolio page
/// shows the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_figures_equal_an_independent_count_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(5);
    let fleet = Fleet::generate(&spec);
    let customers_path = dir.path().join("customers.toml");
    let customers =
        fleetpulse::sim::with_contract_events(fleetpulse::sim::customers_file(&fleet), &fleet);
    std::fs::write(&customers_path, customers.to_toml()).unwrap();

    let broker = fleetpulse::broker::start(0).unwrap();
    let store = dir.path().join("kpi.sqlite");
    let mut config = ServiceConfig::default();
    config.mqtt.host = broker.addr.ip().to_string();
    config.mqtt.port = broker.addr.port();
    config.mqtt.client_id = "fleetpulse-health-validation-test".into();
    config.engine.workers = 2;
    config.engine.idle_after = Duration::from_secs(1);
    config.customers = Some(CustomersRef {
        file: customers_path,
    });
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: store.clone(),
    })];
    config.http.enabled = true;
    config.http.listen = "127.0.0.1:0".parse().unwrap();

    let (service, hub) = support::in_process::serving(config, "<test>").await;
    let metrics = service.metrics.clone();
    let base = format!("http://{}", hub.local_addr().unwrap());
    let get = async |path: &str| -> Value {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    };
    let published =
        support::fleets::publish_all(broker.addr, &fleet, "fleetpulse-health-validation-sim").await;
    support::poll::until_settled(
        async || get("/api/status").await,
        |_| metrics.handled() >= published.messages,
        String::new,
    )
    .await;

    let doc = get("/api/health-validation").await;
    assert_eq!(doc["health_source"], "store");
    assert_eq!(doc["customers"], 18);
    assert_eq!(doc["decisions"], 18);
    assert_eq!(doc["customers_with_decisions"], 18);
    let health = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || SqliteStore::open(&store).unwrap().health(None))
            .await
            .unwrap()
            .unwrap()
    };
    assert!(!health.is_empty());
    let horizons = doc["horizons"].as_array().unwrap();
    for (i, horizon) in HORIZONS.into_iter().enumerate() {
        assert_eq!(horizons[i]["horizon_days"], horizon);
        let want = expected(&fleet, &health, horizon);
        println!("{horizon} days: {want:?}");
        assert_same(&given(&horizons[i]), &want, &format!("{horizon} days"));
    }
    let at_30 = given(&horizons[0]);
    assert!(at_30.churned > 0 && at_30.renewed > 0, "{at_30:?}");

    // The portfolio page shows the same.
    let page = format!("{base}/");
    let shown: Vec<(String, String)> = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        browser.navigate(&page);
        browser.wait_for(
            "document.querySelector('#health-validation tr[data-horizon=\"90\"] .auc')",
            Duration::from_secs(30),
        );
        let shown = HORIZONS
            .iter()
            .map(|h| {
                let mut text = |class: &str| {
                    browser
                        .eval(&format!(
                            "document.querySelector('#health-validation tr[data-horizon=\"{h}\"] .{class}').textContent"
                        ))
                        .as_str()
                        .unwrap()
                        .to_string()
                };
                (text("auc"), text("churned"))
            })
            .collect();
        browser.eval("document.querySelector('#health-validation').scrollIntoView()");
        assert!(browser.screenshot(&artifacts().join("health-validation.png")) > 5_000);
        shown
    })
    .await
    .unwrap();
    for (i, (auc, churned)) in shown.iter().enumerate() {
        let want = given(&horizons[i]);
        let auc_text = want.auc.map_or("–".to_string(), |a| format!("{a:.2}"));
        assert_eq!((auc, churned), (&auc_text, &want.churned.to_string()));
    }

    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
}
