//! Revenue retention end to end: a small fleet's contract events, given in
//! the customers file and in the CSV file it names, loaded by the service
//! (embedded broker, `[http]` on a free port), served by `/api/retention`
//! and shown on the dashboard's portfolio page in headless Chromium. Every
//! figure is compared with one worked out by hand below.

mod support;

use std::time::{Duration, Instant};

use fleetpulse::config::{CustomersRef, ServiceConfig};
use fleetpulse::sinks::SinkConfig;
use fleetpulse::sinks::sqlite::SqliteConfig;
use serde_json::{Value, json};
use support::cdp::{Browser, artifacts};

/// Five customers; ARR in thousands.
///
/// | customer | segment | events | ARR 1 Apr 2026 | in 2026-Q2 | counted 1 Jul |
/// |---|---|---|---|---|---|
/// | a | high-touch | start 2026-01-10 100 (file) | 100 | expansion +50 | 150 |
/// | b | high-touch | start 2025-06-01 200 (CSV) | 200 | contraction -80 (shrinks, stays) | 120 |
/// | c | low-touch | start 2025-01-01 300 (CSV) | 300 | churn 2026-04-01 | 0 |
/// | d | tech-touch | none: the contract (2025-04-01, 400) | 400 | - | 400 |
/// | e | low-touch | start 2026-05-15 70 (file) | - | new logo | - |
const CUSTOMERS: &str = r#"
contract_events_csv = "contract-events.csv"

[[customer]]
id = "a"
name = "Alder Quarry"
segment = "high-touch"
[customer.contract]
arr = 150
start = "2026-01-10"
renewal = "2027-01-10"
devices_purchased = 4
[[customer.contract_event]]
kind = "start"
date = "2026-01-10"
arr_change = 100
[[customer.contract_event]]
kind = "expansion"
date = "2026-05-01"
arr_change = 50

[[customer]]
id = "b"
name = "Birch Aggregates"
segment = "high-touch"
[customer.contract]
arr = 120
start = "2025-06-01"
renewal = "2026-06-01"
devices_purchased = 4

[[customer]]
id = "c"
name = "Cedar Mining"
segment = "low-touch"
[customer.contract]
arr = 300
start = "2025-01-01"
renewal = "2026-01-01"
devices_purchased = 4

[[customer]]
id = "d"
name = "Dogwood Civil"
segment = "tech-touch"
[customer.contract]
arr = 400
start = "2025-04-01"
renewal = "2026-04-01"
devices_purchased = 4

[[customer]]
id = "e"
name = "Elm Earthworks"
segment = "low-touch"
[customer.contract]
arr = 70
start = "2026-05-15"
renewal = "2027-05-15"
devices_purchased = 4
[[customer.contract_event]]
kind = "start"
date = "2026-05-15"
arr_change = 70
"#;

const EVENTS_CSV: &str = "customer,kind,date,arr_change
b,start,2025-06-01,200
b,renewal,2026-06-01,
b,contraction,2026-06-30,-80
c,start,2025-01-01,300
c,churn,2026-04-01,
";

/// The hand-computed figures: (period, group, GRR, NRR, logo retention,
/// start ARR, new logos); `None`: no cohort.
#[allow(clippy::type_complexity)]
const EXPECTED: &[(&str, &str, Option<(f64, f64, f64)>, f64, u64)] = &[
    // 2026-Q2. Cohort a 100, b 200, c 300, d 400 = 1000. Contraction 80
    // (b), churned 300 (c), expansion 50 (a). GRR (1000-80-300)/1000;
    // NRR (150+120+0+400)/1000; logos 3 of 4; e is new.
    ("2026-Q2", "all", Some((0.62, 0.67, 0.75)), 1000.0, 1),
    // Managed = high-touch: a and b. GRR (300-80)/300; NRR 270/300.
    (
        "2026-Q2",
        "managed",
        Some((220.0 / 300.0, 0.9, 1.0)),
        300.0,
        0,
    ),
    // c churned 300, d flat 400: GRR = NRR = 400/700; logos 1 of 2.
    (
        "2026-Q2",
        "unmanaged",
        Some((400.0 / 700.0, 400.0 / 700.0, 0.5)),
        700.0,
        1,
    ),
    // High-touch is a and b: as managed.
    (
        "2026-Q2",
        "high-touch",
        Some((220.0 / 300.0, 0.9, 1.0)),
        300.0,
        0,
    ),
    ("2026-Q2", "tech-touch", Some((1.0, 1.0, 1.0)), 400.0, 0),
    // Cohort 2025 (first contract that year): b, c, d: start 900, b ends at
    // 120, c churned; cohort 2026: a grows 100 -> 150, e is new.
    (
        "2026-Q2",
        "cohort 2025",
        Some((520.0 / 900.0, 520.0 / 900.0, 2.0 / 3.0)),
        900.0,
        0,
    ),
    ("2026-Q2", "cohort 2026", Some((1.0, 1.5, 1.0)), 100.0, 1),
    // 2026-Q1: cohort b 200, c 300, d 400, nothing changes; a is new.
    ("2026-Q1", "all", Some((1.0, 1.0, 1.0)), 900.0, 1),
    // 2025-Q1: no ARR on 1 Jan 2025 (c starts that day): no ratios.
    ("2025-Q1", "all", None, 0.0, 1),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revenue_retention_from_contract_events_in_the_api_and_the_portfolio_page() {
    let dir = tempfile::tempdir().unwrap();
    let customers_path = dir.path().join("customers.toml");
    std::fs::write(&customers_path, CUSTOMERS).unwrap();
    std::fs::write(dir.path().join("contract-events.csv"), EVENTS_CSV).unwrap();
    let broker = fleetpulse::broker::start(0).unwrap();

    let mut config = ServiceConfig::default();
    config.mqtt.host = broker.addr.ip().to_string();
    config.mqtt.port = broker.addr.port();
    config.mqtt.client_id = "fleetpulse-retention-test".into();
    config.engine.workers = 1;
    config.customers = Some(CustomersRef {
        file: customers_path,
    });
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: dir.path().join("kpi.sqlite"),
    })];
    config.http.enabled = true;
    config.http.listen = "127.0.0.1:0".parse().unwrap();

    let (service, hub) = support::in_process::serving(config, "<test>").await;
    let _metrics = service.metrics.clone();
    let base = format!("http://{}", hub.local_addr().expect("the service listens"));
    let get = async |query: &str| -> Value {
        let response = reqwest::get(format!("{base}{query}")).await.unwrap();
        assert_eq!(response.status(), 200, "{query}");
        response.json().await.unwrap()
    };

    // Quarters: from the first event (2025-01-01) to the day after the last
    // (no telemetry yet): 2025-Q1 .. 2026-Q2, all complete.
    let quarters = get("/api/retention?period=quarter&periods=40").await;
    assert_eq!(quarters["customers"], 5);
    assert_eq!(quarters["managed"], "high-touch");
    let periods = quarters["periods"].as_array().unwrap();
    let labels: Vec<&str> = periods
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4", "2026-Q1", "2026-Q2"
        ]
    );
    assert!(periods.iter().all(|p| p["complete"] == true));
    let figures = |label: &str, group: &str| -> Value {
        let period = periods.iter().find(|p| p["label"] == label).unwrap();
        let groups = period["groups"].as_array().unwrap();
        let names: Vec<&str> = groups
            .iter()
            .map(|g| g["group"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "all",
                "high-touch",
                "low-touch",
                "tech-touch",
                "managed",
                "unmanaged",
                "cohort 2025",
                "cohort 2026"
            ]
        );
        groups.iter().find(|g| g["group"] == group).unwrap().clone()
    };
    for &(label, group, ratios, start_arr, new_logos) in EXPECTED {
        let f = figures(label, group);
        let at = format!("{label} {group}: {f}");
        assert_eq!(f["start_arr"].as_f64(), Some(start_arr), "{at}");
        assert_eq!(f["new_logos"].as_u64(), Some(new_logos), "{at}");
        match ratios {
            None => {
                for r in ["grr", "nrr", "logo_retention"] {
                    assert!(f[r].is_null(), "{at}");
                }
            }
            Some((grr, nrr, logos)) => {
                for (name, want) in [("grr", grr), ("nrr", nrr), ("logo_retention", logos)] {
                    let got = f[name].as_f64().unwrap_or(f64::NAN);
                    assert!((got - want).abs() < 1e-9, "{at}: {name} {got} != {want}");
                }
            }
        }
    }
    // b shrinks without churning: high-touch NRR falls below 100% (a grew
    // 50, b lost 80) while every logo is kept.
    let high = figures("2026-Q2", "high-touch");
    assert_eq!(high["contraction_arr"].as_f64(), Some(80.0));
    assert_eq!(high["expansion_arr"].as_f64(), Some(50.0));
    assert_eq!(high["logos_churned"].as_u64(), Some(0));

    // Years: 2026 so far (to 1 Jul). Cohort b 200, c 300, d 400 = 900; a and
    // e are new (170). b ends at 120, c churned: GRR = NRR = 520/900,
    // logos 2 of 3.
    let years = get("/api/retention?period=year").await;
    let year = years["periods"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(year["label"], "2026");
    assert_eq!(year["complete"], false);
    let all = &year["groups"][0];
    assert_eq!(all["start_arr"].as_f64(), Some(900.0));
    assert_eq!(all["new_arr"].as_f64(), Some(170.0));
    for (name, want) in [
        ("grr", 520.0 / 900.0),
        ("nrr", 520.0 / 900.0),
        ("logo_retention", 2.0 / 3.0),
    ] {
        let got = all[name].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "2026 {name} {got} != {want}");
    }
    let last_two = get("/api/retention?periods=2").await;
    assert_eq!(last_two["periods"].as_array().unwrap().len(), 2);
    for bad in [
        "/api/retention?period=month",
        "/api/retention?periods=0",
        "/api/retention?x=1",
    ] {
        let response = reqwest::get(format!("{base}{bad}")).await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }

    // Two decisions (c's churn, b's renewal) and no telemetry: no health
    // score before either, so both are left out at every horizon, no AUC.
    let validation = get("/api/health-validation").await;
    assert_eq!(validation["decisions"], 2);
    assert_eq!(validation["customers_with_decisions"], 2);
    assert_eq!(validation["health_source"], "store");
    for h in validation["horizons"].as_array().unwrap() {
        let counts = ["churned", "renewed", "without_history"].map(|k| h[k].as_u64().unwrap());
        assert_eq!(counts, [0, 0, 2], "{h}");
        assert!(h["auc"].is_null(), "{h}");
    }

    // The portfolio page shows the same figures side by side.
    let page = format!("{base}/");
    let (nrr, grr, logos) = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        browser.navigate(&page);
        browser.wait_for(
            "document.querySelector('#retention td[data-period=\"2026-Q2\"][data-group=\"all\"] .nrr')",
            Duration::from_secs(30),
        );
        let cell = "#retention td[data-period=\"2026-Q2\"][data-group=\"all\"]";
        let mut text = |class: &str| {
            browser
                .eval(&format!("document.querySelector('{cell} .{class}').textContent"))
                .as_str()
                .unwrap()
                .to_string()
        };
        let figures = (text("nrr"), text("grr"), text("logos"));
        // The health validation panel: both decisions left out, no AUC.
        let row = "#health-validation tr[data-horizon=\"30\"]";
        let cell = |browser: &mut Browser, class: &str| {
            browser
                .eval(&format!("document.querySelector('{row} .{class}').textContent"))
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(cell(&mut browser, "left-out"), "2");
        assert_eq!(cell(&mut browser, "auc"), "–");
        assert!(browser.screenshot(&artifacts().join("revenue-retention.png")) > 5_000);
        figures
    })
    .await
    .unwrap();
    assert_eq!(
        (nrr.as_str(), grr.as_str(), logos.as_str()),
        ("67%", "62%", "75%")
    );

    // A CRM export that rewrites only the contract events file: d churns
    // on 1 May 2026. Taken in without a SIGHUP or a touch of the customers
    // file (it was not: the figures stayed as before). 2026: b ends at
    // 120, c and d churned: GRR = NRR = 120/900, logos 1 of 3.
    let csv = dir.path().join("contract-events.csv");
    let next = dir.path().join("contract-events.csv.new");
    std::fs::write(
        &next,
        format!("{EVENTS_CSV}d,start,2025-04-01,400\nd,churn,2026-05-01,\n"),
    )
    .unwrap();
    std::fs::rename(&next, &csv).unwrap();
    let want = 120.0 / 900.0;
    let changed = Instant::now();
    let year = loop {
        let years = get("/api/retention?period=year").await;
        let all = years["periods"].as_array().unwrap().last().unwrap()["groups"][0].clone();
        if all["grr"].as_f64().is_some_and(|g| (g - want).abs() < 1e-9) {
            break all;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(30),
            "the rewritten contract events file not taken in: {all}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        (year["nrr"].as_f64().unwrap() - want).abs() < 1e-9,
        "{year}"
    );
    assert!(
        (year["logo_retention"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9,
        "{year}"
    );

    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
}

/// `fleetpulse contracts ARGS` (the real binary): success, stdout, stderr.
fn contracts(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let contracts: &std::ffi::OsStr = "contracts".as_ref();
    support::in_process::cli(std::iter::once(contracts).chain(args.iter().copied()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_events_recorded_through_the_api_and_a_csv_import_change_retention() {
    let dir = tempfile::tempdir().unwrap();
    let customers_path = dir.path().join("customers.toml");
    std::fs::write(&customers_path, CUSTOMERS).unwrap();
    std::fs::write(dir.path().join("contract-events.csv"), EVENTS_CSV).unwrap();
    let store = dir.path().join("kpi.sqlite");
    let broker = fleetpulse::broker::start(0).unwrap();
    let mut config = ServiceConfig::default();
    config.mqtt.host = broker.addr.ip().to_string();
    config.mqtt.port = broker.addr.port();
    config.mqtt.client_id = "fleetpulse-contract-events-test".into();
    config.engine.workers = 1;
    config.customers = Some(CustomersRef {
        file: customers_path.clone(),
    });
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: store.clone(),
    })];
    config.http.enabled = true;
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    let (service, hub) = support::in_process::serving(config, "<test>").await;
    let base = format!("http://{}", hub.local_addr().expect("the service listens"));
    let http = reqwest::Client::new();
    let post = async |body: Value| -> (u16, Value) {
        let response = http
            .post(format!("{base}/api/contract-events"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    };
    let q2 = async || -> Value {
        let doc: Value = reqwest::get(format!("{base}/api/retention?period=quarter&periods=40"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let period = doc["periods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["label"] == "2026-Q2")
            .unwrap()
            .clone();
        let mut all = period["groups"][0].clone();
        assert_eq!(all["group"], "all");
        all["recorded_events"] = doc["recorded_events"].clone();
        all["conflicts"] = doc["conflicts"].clone();
        all
    };
    let close = |got: &Value, want: f64| {
        let got = got.as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "{got} != {want}");
    };

    // As the file has it (see EXPECTED): NRR 670/1000, logos 3 of 4.
    let before = q2().await;
    close(&before["nrr"], 0.67);
    close(&before["logo_retention"], 0.75);
    assert_eq!(before["recorded_events"], 0);

    // Mistakes name the field, and record nothing.
    for (body, status, named) in [
        (
            json!({"customer": "d", "kind": "expansion", "date": "2026-05-10"}),
            400,
            "field `arr_change`",
        ),
        (
            json!({"customer": "d", "kind": "upsell", "date": "2026-05-10", "arr_change": 100}),
            400,
            "field `kind`",
        ),
        (
            json!({"customer": "d", "kind": "expansion", "date": "10/05/2026", "arr_change": 100}),
            400,
            "field `date`",
        ),
        (
            json!({"customer": "d", "kind": "contraction", "date": "2026-05-10", "arr_change": -400}),
            400,
            "field `arr_change`",
        ),
        (
            json!({"customer": "zz", "kind": "expansion", "date": "2026-05-10", "arr_change": 100}),
            404,
            "`zz`",
        ),
        (
            json!({"customer": "d", "kind": "expansion", "date": "2026-05-10", "arr": 100}),
            400,
            "arr",
        ),
    ] {
        let (got, doc) = post(body.clone()).await;
        assert_eq!(got, status, "{body}: {doc}");
        let message = doc["error"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{body}: {message}");
    }

    // d (tech-touch, 400, flat in the file) expands by 100 on 10 May: the
    // cohort's ARR at the end is a 150 + b 120 + c 0 + d 500 = 770 of the
    // 1000 it started with; GRR (no more contraction or churn) and logos
    // stay.
    let (status, doc) = post(
        json!({"customer": "d", "kind": "expansion", "date": "2026-05-10", "arr_change": 100}),
    )
    .await;
    assert_eq!(status, 201, "{doc}");
    assert_eq!(doc["recorded_by"], "anonymous");
    let expanded = q2().await;
    close(&expanded["nrr"], 0.77);
    close(&expanded["grr"], 0.62);
    close(&expanded["expansion_arr"], 150.0);
    close(&expanded["logo_retention"], 0.75);
    assert_eq!(expanded["recorded_events"], 1);
    let listed: Value = reqwest::get(format!("{base}/api/contract-events?customer=d"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = listed["events"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["kind"], "expansion");
    assert_eq!(listed[0]["arr_change"].as_f64(), Some(100.0));

    // A CSV file with a bad line: refused with file, line and column, and
    // its good first line is not written either.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "customer,kind,date,arr_change
d,churn,2026-06-15,
b,grow,2026-06-20,10
",
    )
    .unwrap();
    let args = |file: &std::path::Path| {
        vec![
            std::ffi::OsString::from("import"),
            file.as_os_str().to_owned(),
            "--customers".into(),
            customers_path.as_os_str().to_owned(),
            "--store".into(),
            store.as_os_str().to_owned(),
        ]
    };
    let run = |v: Vec<std::ffi::OsString>| {
        let refs: Vec<&std::ffi::OsStr> = v.iter().map(|s| s.as_os_str()).collect();
        contracts(&refs)
    };
    let (ok, _, stderr) = run(args(&bad));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{}:3:1: field `kind`: `grow`", bad.display())),
        "{stderr}"
    );
    // A churn before any ARR does not add up: named too.
    std::fs::write(
        &bad,
        "customer,kind,date,arr_change
e,churn,2026-03-01,
",
    )
    .unwrap();
    let (ok, _, stderr) = run(args(&bad));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{}:2:1: field `kind`", bad.display())) && stderr.contains("`e`"),
        "{stderr}"
    );
    assert_eq!(q2().await["recorded_events"], 1, "nothing written");

    // d churns on 15 June (imported): all of its 500 is lost. The cohort
    // ends at 150 + 120 + 0 + 0 = 270 of 1000, and keeps 2 logos of 4.
    let good = dir.path().join("churn.csv");
    std::fs::write(
        &good,
        "customer,kind,date,arr_change
d,churn,2026-06-15,
",
    )
    .unwrap();
    let (ok, stdout, stderr) = run(args(&good));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("recorded 1 contract events"), "{stdout}");
    let churned = q2().await;
    close(&churned["logo_retention"], 0.5);
    close(&churned["nrr"], 0.27);
    assert_eq!(churned["logos_churned"].as_u64(), Some(2));
    assert_eq!(churned["recorded_events"], 2);
    assert_eq!(churned["conflicts"], json!([]));
    let (ok, stdout, _) = run(vec![
        "list".into(),
        "--store".into(),
        store.as_os_str().to_owned(),
    ]);
    assert!(ok);
    assert!(
        stdout.contains("expansion") && stdout.contains("churn"),
        "{stdout}"
    );
    assert!(stdout.contains("csv:churn.csv"), "{stdout}");

    // The file changes under them: d churned on 1 May, so its recorded
    // expansion of 10 May no longer adds up. Its recorded events are left
    // out, named under conflicts, and not counted as counted in.
    let csv = dir.path().join("contract-events.csv");
    let next = dir.path().join("contract-events.csv.new");
    let events = format!("{EVENTS_CSV}d,start,2025-04-01,400\nd,churn,2026-05-01,\n");
    std::fs::write(&next, events).unwrap();
    std::fs::rename(&next, &csv).unwrap();
    let changed = Instant::now();
    let conflicted = loop {
        let doc = q2().await;
        if doc["conflicts"].as_array().is_some_and(|c| !c.is_empty()) {
            break doc;
        }
        assert!(changed.elapsed() < Duration::from_secs(30), "{doc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(conflicted["conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(conflicted["recorded_events"], 0, "{conflicted}");

    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
}

/// `fleetpulse sim --contract-events` plants each profile's contract
/// history in the customers file it writes; the retention of the simulated
/// days equals the figures added up by hand from the simulator's contract
/// ARR, the profile rules and the planted decisions (docs:
/// firmware-sim/src/contract_events.rs): healthy-growing customers expand
/// by 20%, champion-leaves and devices-going-dark ones shrink by 25% and
/// 30% and stay, and a customer whose renewal falls inside the simulation
/// churns or renews as the simulator drew it (`Fleet::churns`).
#[test]
fn the_simulators_contract_history_gives_the_expected_retention() {
    use fleetpulse::customers::CustomersFile;
    use fleetpulse_engine::kpi::revenue_retention::{Period, retention};
    use fleetpulse_sim::{Fleet, FleetSpec, Profile};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.toml");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args([
            "sim",
            "--customers",
            "12",
            "--devices",
            "48",
            "--days",
            "90",
        ])
        .args([
            "--seed",
            "7",
            "--no-publish",
            "--contract-events",
            "--write-customers",
        ])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let file = CustomersFile::parse(&path, &text).unwrap();
    let book = file.contract_book(&path, &text).unwrap();

    let spec = FleetSpec {
        customers: 12,
        devices: 48,
        days: 90,
        seed: 7,
        ..FleetSpec::default()
    };
    let fleet = Fleet::generate(&spec);
    let round = |v: f64| (v / 100.0).round() * 100.0;
    let (mut start, mut expansion, mut contraction, mut churned, mut lost, mut decided) =
        (0.0, 0.0, 0.0, 0.0, 0u32, 0u32);
    for c in fleet.customers() {
        let arr = c.contract.arr as f64;
        start += arr;
        decided += u32::from(fleet.churns(c).is_some());
        if fleet.churns(c) == Some(true) {
            churned += arr;
            lost += 1;
            continue;
        }
        match c.profile {
            Profile::HealthyGrowing => expansion += round(0.2 * arr),
            Profile::ChampionLeaves => contraction += round(0.25 * arr),
            Profile::DevicesGoingDark => contraction += round(0.3 * arr),
            Profile::SlowOnboarding | Profile::DecliningUsage | Profile::FaultProne => {}
        }
    }
    assert_eq!(
        decided, 2,
        "two declining-usage customers come to renewal inside 90 days"
    );
    let period = Period {
        start: spec.start,
        end: spec.start + 90 * 86_400_000,
    };
    let r = retention(period, &book.histories);
    assert_eq!((r.logos_start, r.logos_churned), (12, lost));
    assert!((r.start_arr - start).abs() < 1e-6);
    assert!((r.expansion_arr - expansion).abs() < 1e-6);
    assert!((r.contraction_arr - contraction).abs() < 1e-6);
    assert!((r.churned_arr - churned).abs() < 1e-6);
    let close = |got: Option<f64>, want: f64| assert!((got.unwrap() - want).abs() < 1e-12);
    close(r.grr, (start - contraction - churned) / start);
    close(r.nrr, (start + expansion - contraction - churned) / start);
    close(r.logo_retention, f64::from(12 - lost) / 12.0);
    // The customers file's ARR is each customer's ARR after its events.
    for c in fleet.customers() {
        let written = file.get(&c.id).unwrap().contract.arr;
        let history = book.get(&c.id).unwrap();
        if fleet.churns(c) != Some(true) {
            assert_eq!(written, history.arr(), "{}", c.id);
        }
    }
}
