//! Touchpoints and coverage end to end: a simulated fleet through the
//! service (embedded broker, SQLite store, `[http]` with users and tokens);
//! touchpoints posted through the authenticated API (a CSM for their own
//! customer only), the `coverage_gap` rule opening and resolving on the
//! cadence, and the touchpoints on the customer's page (headless Chromium)
//! and in the business-review report. Expected gaps are worked out below
//! from the contract start and the newest day, not with the rule's code.

mod support;

use std::time::Duration;

use fleetpulse::config::{CustomersRef, ServiceConfig};
use fleetpulse::customers::CustomersFile;
use fleetpulse::sinks::SinkConfig;
use fleetpulse::sinks::sqlite::SqliteConfig;
use fleetpulse_sim::Segment;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::cdp::{Browser, artifacts};
use support::users::token;

const DAY: u64 = 86_400_000;

/// High-touch coverage of this test: a business review with a
/// decision-maker every 14 days, the first within 10 of the contract start.
const COVERAGE: &str = r#"
[[coverage]]
segment = "high-touch"
kind = "business_review"
every_days = 14
first_within_days = 10
decision_maker = true
"#;

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, token: Option<&str>, customer: &str, body: Value) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!(
                "{}/api/customers/{customer}/touchpoints",
                self.base
            ))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn date(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string()
}

/// (opened_at, resolved_at) of each `coverage_gap` episode.
fn gaps(doc: &Value) -> Vec<(u64, Option<u64>)> {
    doc["coverage_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|a| assert_eq!(a["rule"], "coverage_gap", "{a}"))
        .map(|a| (a["opened_at"].as_u64().unwrap(), a["resolved_at"].as_u64()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touchpoints_through_the_api_drive_coverage_gaps_and_show_in_page_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = support::fleets::fleet(6, 36, 40, 42);
    let customers_path = dir.path().join("customers.toml");
    fleetpulse::sim::write_files(&fleet, None, Some(&customers_path)).unwrap();
    // Alice is the CSM of the first high-touch customer; another high-touch
    // customer is not hers.
    let high: Vec<&str> = fleet
        .customers()
        .iter()
        .filter(|c| c.segment == Segment::HighTouch)
        .map(|c| c.id.as_str())
        .collect();
    assert!(high.len() >= 2, "{high:?}");
    let (mine, other) = (high[0].to_string(), high[1].to_string());
    let mut file = CustomersFile::load(&customers_path).unwrap();
    file.customers
        .iter_mut()
        .find(|c| c.id == mine)
        .unwrap()
        .csm = Some("alice".into());
    std::fs::write(&customers_path, format!("{}{COVERAGE}", file.to_toml())).unwrap();
    let start_date = &file.get(&mine).unwrap().contract.start;
    let contract_start = fleetpulse::customers::date_ms(start_date).unwrap();

    let users_file = dir.path().join("users.toml");
    let users_path = users_file.to_str().unwrap();
    let admin = token(users_path, "admin", "admin");
    let alice = token(users_path, "alice", "csm");
    let viewer = token(users_path, "vic", "viewer");

    let broker = fleetpulse::broker::start(0).unwrap();
    let store = dir.path().join("kpi.sqlite");
    let mut config = ServiceConfig::default();
    config.mqtt.host = broker.addr.ip().to_string();
    config.mqtt.port = broker.addr.port();
    config.mqtt.client_id = "fleetpulse-touchpoints-test".into();
    config.engine.workers = 2;
    config.engine.idle_after = Duration::from_secs(1);
    config.customers = Some(CustomersRef {
        file: customers_path.clone(),
    });
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: store.clone(),
    })];
    config.http.enabled = true;
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.http.users_file = Some(users_file.clone());

    let (service, hub) = support::in_process::serving(config, "<test>").await;
    let metrics = service.metrics.clone();
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", hub.local_addr().unwrap()),
    };
    let published =
        support::fleets::publish_all(broker.addr, &fleet, "fleetpulse-touchpoints-sim").await;
    support::poll::until_settled(
        async || api.get(&admin, "/api/status").await.1,
        |_| metrics.handled() >= published.messages,
        String::new,
    )
    .await;

    // Before any touchpoint: the first review was due 10 days after the
    // contract start, so a gap is open since the end of that day.
    let path = format!("/api/customers/{mine}/touchpoints");
    let (status, doc) = api.get(&alice, &path).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let as_of = doc["as_of"].as_u64().expect("data has arrived");
    assert_eq!(as_of % DAY, 0, "UTC customers: as_of is a midnight");
    let first_due = contract_start + 10 * DAY;
    assert!(
        as_of > first_due + 30 * DAY,
        "the data reaches past the first due day"
    );
    assert_eq!(gaps(&doc), [(first_due + DAY, None)]);
    assert_eq!(doc["coverage"][0]["kind"], "business_review");
    assert_eq!(doc["coverage"][0]["status"], "overdue");
    assert!(doc["touchpoints"].as_array().unwrap().is_empty());

    // Who may write: not anonymous, not a viewer, not alice for a customer
    // that is not hers; a bad field is named.
    let review = |day: u64, decision_maker: bool| {
        json!({
            "kind": "business_review",
            "date": date(day),
            "attendees": "Jo Bloggs (CEO); ops lead",
            "decision_maker_present": decision_maker,
            "notes": "quarterly review"
        })
    };
    let r = as_of - 20 * DAY;
    assert_eq!(
        api.post(None, &mine, review(r, true)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.post(Some(&viewer), &mine, review(r, true)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.post(Some(&alice), &other, review(r, true)).await.0,
        StatusCode::NOT_FOUND
    );
    // Not JSON, or from another site (another port of the same host is
    // another origin): refused (cross-site requests). One JSON document:
    // anything after it is refused, not ignored.
    let host = api.base.trim_start_matches("http://");
    let (name, port) = host.rsplit_once(':').unwrap();
    let sibling = format!("http://{name}:{}", port.parse::<u16>().unwrap() ^ 1);
    let body = review(r, true).to_string();
    let trailing_body = format!("{body} trailing");
    let json = "application/json";
    let cases = [
        (
            "text/plain",
            None,
            &body,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            json,
            Some("https://attacker.example"),
            &body,
            StatusCode::FORBIDDEN,
        ),
        (json, Some(sibling.as_str()), &body, StatusCode::FORBIDDEN),
        (json, None, &trailing_body, StatusCode::BAD_REQUEST),
    ];
    let mut trailing = None;
    for (content_type, origin, body, want) in cases {
        let mut request = (api.http)
            .post(format!("{}/api/customers/{mine}/touchpoints", api.base))
            .bearer_auth(&alice)
            .header("content-type", content_type)
            .body(body.clone());
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), want, "{content_type} {origin:?} {body}");
        trailing = Some(response);
    }
    let trailing = trailing.unwrap();
    let said = trailing.text().await.unwrap();
    assert!(said.contains("trailing characters"), "{said}");
    let (status, error) = api
        .post(Some(&alice), &mine, json!({"kind": "qbr", "date": date(r)}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"].as_str().unwrap().contains("field `kind`"),
        "{error}"
    );
    let (status, error) = api
        .post(
            Some(&alice),
            &mine,
            json!({"kind": "training", "day": date(r)}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["error"].as_str().unwrap().contains("day"), "{error}");

    // A review without the decision-maker does not count; one with them
    // 20 days before the newest day resolves the first gap at the end of
    // its day, and the next (due 14 days later) is open since the end of
    // that due day.
    let (status, stored) = api
        .post(Some(&alice), &mine, review(r - 5 * DAY, false))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(stored["csm"], "alice");
    assert_eq!(stored["recorded_by"], "alice");
    let (_, doc) = api.get(&alice, &path).await;
    assert_eq!(gaps(&doc), [(first_due + DAY, None)]);
    let (status, _) = api.post(Some(&alice), &mine, review(r, true)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, doc) = api.get(&alice, &path).await;
    assert_eq!(
        gaps(&doc),
        [(first_due + DAY, Some(r + DAY)), (r + 15 * DAY, None)]
    );
    assert_eq!(doc["coverage_gaps"][0]["status"], "resolved");
    assert_eq!(doc["coverage_gaps"][1]["status"], "open");
    assert_eq!(doc["coverage"][0]["last_at"].as_u64(), Some(r));
    assert_eq!(doc["coverage"][0]["due_at"].as_u64(), Some(r + 14 * DAY));

    // Three days late, the next review closes the second gap: nothing is
    // overdue, the next one is due 14 days after it.
    let (status, _) = api
        .post(Some(&admin), &mine, review(r + 17 * DAY, true))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, doc) = api.get(&alice, &path).await;
    assert_eq!(
        gaps(&doc),
        [
            (first_due + DAY, Some(r + DAY)),
            (r + 15 * DAY, Some(r + 18 * DAY))
        ]
    );
    assert_eq!(doc["coverage"][0]["status"], "ok");
    assert_eq!(doc["coverage"][0]["due_at"].as_u64(), Some(r + 31 * DAY));
    assert_eq!(doc["touchpoints"].as_array().unwrap().len(), 3);
    // The admin recorded the last one: the CSM defaults to the user.
    assert_eq!(doc["touchpoints"][2]["csm"], "admin");

    // Managed accounts for revenue retention are now those with touchpoints.
    let (_, retention) = api.get(&admin, "/api/retention").await;
    assert_eq!(retention["managed"], "touchpoints");
    // The impact estimate takes the three reviews; with 28-day windows none
    // has a full window after it (the data ends 20 days after the second),
    // with 7-day windows the two earlier ones do.
    let (_, impact) = api.get(&admin, "/api/impact").await;
    assert_eq!(impact["touchpoints"], 3);
    let review = &impact["kinds"][0];
    assert_eq!(review["kind"], "business_review");
    assert_eq!(
        (review["cases"].as_u64(), review["left_out"].as_u64()),
        (Some(0), Some(3))
    );
    // The outcome side beside it: no case either, so no effect.
    assert_eq!(
        (
            review["outcome_cases"].as_u64(),
            review["outcome_left_out"].as_u64()
        ),
        (Some(0), Some(3))
    );
    assert!(review["outcome_effect"].is_null(), "{review}");
    let (_, impact) = api.get(&alice, "/api/impact?window_days=7").await;
    assert_eq!(impact["customers"], 1, "alice sees her customer only");
    let review = &impact["kinds"][0];
    assert_eq!(
        review["cases"].as_u64().unwrap() + review["left_out"].as_u64().unwrap(),
        3
    );
    // Health validation over the customers each user sees: alice her one,
    // the viewer every one (figures, no names).
    for (token, customers) in [(&alice, 1), (&viewer, 6), (&admin, 6)] {
        let (status, doc) = api.get(token, "/api/health-validation").await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        assert_eq!(doc["customers"], customers, "{doc}");
    }

    // Contract events are scoped as touchpoints: alice may record one for
    // her customer only, a viewer for none; each user lists what they see.
    let expansion = |customer: &str| json!({"customer": customer, "kind": "expansion", "date": date(r), "arr_change": 1000});
    for (token, customer, status) in [
        (&viewer, &mine, StatusCode::NOT_FOUND),
        (&alice, &other, StatusCode::NOT_FOUND),
        (&alice, &mine, StatusCode::CREATED),
        (&admin, &other, StatusCode::CREATED),
    ] {
        let response = api
            .http
            .post(format!("{}/api/contract-events", api.base))
            .bearer_auth(token)
            .json(&expansion(customer))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{customer}");
    }
    for (token, events) in [(&alice, 1), (&viewer, 0), (&admin, 2)] {
        let (status, doc) = api.get(token, "/api/contract-events").await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        assert_eq!(doc["events"].as_array().unwrap().len(), events, "{doc}");
    }

    // The customer's page shows them (a token sent by the browser).
    let page = format!("{}/#/customer/{mine}", api.base);
    let home = format!("{}/#/", api.base);
    let token_header = format!("Bearer {alice}");
    let shown = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        browser.set_headers(json!({ "Authorization": token_header }));
        browser.navigate(&page);
        browser.wait_for(
            "document.querySelectorAll('#touchpoints tr[data-touchpoint]').length === 3",
            Duration::from_secs(30),
        );
        let shown = browser.eval(
            "[...document.querySelectorAll('#touchpoints tr[data-touchpoint]')]\
             .map((r) => r.dataset.touchpoint + ' ' + r.cells[0].textContent).join(',')",
        );
        let status = browser.eval(
            "document.querySelector('#coverage tr[data-cadence=\"business_review\"]').dataset.status",
        );
        let marks = browser.eval(
            "document.querySelectorAll('svg[data-chart=\"touchpoints-timeline\"] circle').length",
        );
        // The form records one more: a training today-ish, with notes.
        browser.eval(
            "const f = document.getElementById('touchpoint-form');\
             f.kind.value = 'training'; f.notes.value = 'form-made'; \
             f.requestSubmit(); true",
        );
        browser.wait_for(
            "document.querySelectorAll('#touchpoints tr[data-touchpoint]').length === 4",
            Duration::from_secs(30),
        );
        browser.eval("document.getElementById('touchpoints').scrollIntoView(); true");
        assert!(browser.screenshot(&artifacts().join("touchpoints-customer.png")) > 5_000);
        // The portfolio page has the impact table.
        browser.navigate(&home);
        browser.wait_for(
            "document.querySelector('#impact tr[data-kind=\"business_review\"]')",
            Duration::from_secs(30),
        );
        // with the outcome attainment columns beside those of hours.
        assert_eq!(
            browser.eval(
                "document.querySelector('#impact tr[data-kind=\"business_review\"] td.outcome-cases').textContent"
            ),
            "0"
        );
        (shown, status, marks)
    })
    .await
    .unwrap();
    assert_eq!(
        shown.0.as_str().unwrap(),
        format!(
            "business_review {},business_review {},business_review {}",
            date(r + 17 * DAY),
            date(r),
            date(r - 5 * DAY)
        )
    );
    // The form's training is in the store, recorded by alice (her token).
    let (_, doc) = api.get(&alice, &path).await;
    let made: Vec<&Value> = doc["touchpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["notes"] == "form-made")
        .collect();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["kind"], "training");
    assert_eq!(made[0]["csm"], "alice");
    assert_eq!(
        made[0]["at"].as_u64(),
        Some(as_of - DAY),
        "the form's default day"
    );
    assert_eq!(shown.1, "ok");
    assert_eq!(shown.2, 3);

    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();

    // The business-review report has them as a timeline against usage.
    let out = dir.path().join("review.html");
    fleetpulse::report::run(fleetpulse::report::ReportArgs {
        customer: mine.clone(),
        out: out.clone(),
        store,
        from: None,
        to: None,
        customers: Some(customers_path),
    })
    .unwrap();
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains(r#"<section id="touchpoints">"#));
    assert!(html.contains(r#"data-chart="touchpoints-timeline""#));
    assert_eq!(
        html.matches(r#"<tr data-touchpoint="business_review">"#)
            .count(),
        3
    );
    assert!(html.contains("Jo Bloggs (CEO); ops lead"));
}

/// `touchpoints add` without `--customers` checks the customer against
/// the customers.toml beside the store, as `report` reads it: a customer
/// no file names is refused, one it names is recorded; without that file,
/// the command is refused.
/// The customers file of a simulated fleet of one customer.
fn one_customer_file() -> fleetpulse::customers::CustomersFile {
    let fleet = fleetpulse_sim::Fleet::generate(&fleetpulse_sim::FleetSpec {
        customers: 1,
        devices: 1,
        days: 1,
        ..fleetpulse_sim::FleetSpec::default()
    });
    fleetpulse::sim::customers_file(&fleet)
}

#[test]
fn a_touchpoint_of_a_customer_the_file_beside_the_store_does_not_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("kpi.sqlite");
    drop(fleetpulse::sinks::SqliteStore::open(&store).unwrap());
    let file = one_customer_file();
    let named = file.customers[0].id.clone();
    std::fs::write(dir.path().join("customers.toml"), file.to_toml()).unwrap();
    let add = |customer: &str| {
        let args = [
            "touchpoints",
            "add",
            "--customer",
            customer,
            "--kind",
            "training",
            "--date",
            "2026-03-02",
            "--csm",
            "alice",
            "--store",
            store.to_str().unwrap(),
        ];
        let (ok, _, stderr) = support::in_process::cli(args);
        (ok, stderr)
    };
    let (ok, stderr) = add("nobody");
    assert!(
        !ok && stderr.contains("`nobody` is not in the customers file"),
        "{stderr}"
    );
    let (ok, stderr) = add(&named);
    assert!(ok, "{stderr}");
    // No file beside the store and none named: nothing to check a typo
    // against, refused (it was recorded unchecked).
    std::fs::remove_file(dir.path().join("customers.toml")).unwrap();
    let (ok, stderr) = add(&named);
    assert!(
        !ok && stderr.contains("no customers file to check the customer against"),
        "{stderr}"
    );
}

/// `fleetpulse touchpoints`, `contracts` and `report` with a `--store`
/// that names no store (a typo, the wrong directory): refused naming the path, and no
/// file is made there. Before, each made an empty store at the path: a
/// list showed nothing, and what a CSM added went where no dashboard reads.
#[test]
fn a_store_path_that_names_no_store_is_refused_and_nothing_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("kpi.sqltie");
    let store = typo.to_str().unwrap();
    for args in [
        vec!["touchpoints", "list", "--store", store],
        vec![
            "touchpoints",
            "add",
            "--customer",
            "acme",
            "--kind",
            "business_review",
            "--date",
            "2026-03-02",
            "--csm",
            "alice",
            "--store",
            store,
        ],
        vec!["contracts", "list", "--store", store],
        vec![
            "report",
            "--customer",
            "acme",
            "--out",
            "acme.html",
            "--store",
            store,
        ],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(&format!("{store}: no such store")),
            "{args:?}: {stderr}"
        );
        assert!(!typo.exists(), "{args:?} made {store}");
    }
}

/// A store on a read-only mount (a backup or snapshot mounted to look at):
/// `touchpoints list` and `contracts list` read it as it is. Before, SQLite
/// could not make the shared memory its WAL journal mode needs and every
/// reader failed with "unable to open database file". What cannot be read
/// there is refused saying why: a write-ahead log holding writes with no
/// shared memory beside it, a schema that needs an upgrade, and a write.
#[test]
fn a_store_on_a_read_only_mount_is_read_as_it_is() {
    use support::small_disk::{SmallDisk, rerun_in_namespace};
    let Some(disk) = SmallDisk::mount("64m") else {
        return rerun_in_namespace("a_store_on_a_read_only_mount_is_read_as_it_is");
    };
    let file = one_customer_file();
    let customer = file.customers[0].id.clone();
    let run = |args: &[&str]| support::in_process::cli(args);
    let store_in = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("customers.toml"), file.to_toml()).unwrap();
        dir.join("kpi.sqlite")
    };
    let add = |store: &std::path::Path, date: &str, csm: &str| {
        run(&[
            "touchpoints",
            "add",
            "--customer",
            &customer,
            "--kind",
            "training",
            "--date",
            date,
            "--csm",
            csm,
            "--store",
            store.to_str().unwrap(),
        ])
    };
    let list =
        |store: &std::path::Path| run(&["touchpoints", "list", "--store", store.to_str().unwrap()]);

    // A store closed cleanly, and a copy of one taken while a connection
    // held writes in its log: the store file and its `-wal`, no `-shm`.
    let clean = store_in(&disk.path().join("clean"));
    drop(fleetpulse::sinks::SqliteStore::open(&clean).unwrap());
    assert!(add(&clean, "2026-03-02", "alice").0);
    let logged = store_in(&disk.path().join("logged"));
    drop(fleetpulse::sinks::SqliteStore::open(&logged).unwrap());
    let holder = rusqlite::Connection::open(&logged).unwrap();
    holder.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    // A read joins the log: the add's close is then not the last one, and
    // leaves its write in the log.
    let _: i64 = holder
        .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert!(add(&logged, "2026-03-02", "alice").0);
    let copy = store_in(&disk.path().join("copy"));
    std::fs::copy(&logged, &copy).unwrap();
    let wal = |p: &std::path::Path| std::path::PathBuf::from(format!("{}-wal", p.display()));
    std::fs::copy(wal(&logged), wal(&copy)).unwrap();
    assert!(std::fs::metadata(wal(&copy)).unwrap().len() > 0);
    drop(holder);
    // A store a newer build would have to upgrade first.
    let old = store_in(&disk.path().join("old"));
    drop(fleetpulse::sinks::SqliteStore::open(&old).unwrap());
    rusqlite::Connection::open(&old)
        .unwrap()
        .execute_batch("UPDATE schema_version SET version = version - 1")
        .unwrap();

    disk.remount(true);
    let (ok, out, err) = list(&clean);
    assert!(ok, "{err}");
    assert!(
        out.contains(&customer) && out.contains("csm alice"),
        "{out}"
    );
    let (ok, out, err) = run(&["contracts", "list", "--store", clean.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = add(&clean, "2026-03-03", "bob");
    assert!(!ok && err.contains("readonly"), "{err}");
    let (ok, _, err) = list(&copy);
    assert!(
        !ok && err.contains("is on a read-only file system and its write-ahead log"),
        "{err}"
    );
    let (ok, _, err) = list(&old);
    assert!(
        !ok && err.contains("is on a read-only file system and has schema version"),
        "{err}"
    );
    disk.remount(false);
    // Where it can be written, the same files open as before.
    let (ok, out, err) = list(&copy);
    assert!(ok && out.contains("csm alice"), "{out}{err}");
    assert!(list(&old).0);
}
