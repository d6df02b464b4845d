//! The HTTP API against a running service (embedded broker, simulated fleet,
//! `[http]` on a free port): every endpoint, the filters, 404 for an unknown
//! customer and 400 for bad query parameters; every JSON response is
//! validated against the OpenAPI document the service serves (with a small
//! JSON-schema subset validator below: `type` (one or a list), `enum`,
//! `properties`, `required`, `additionalProperties`, `items`, `minimum`,
//! `maximum`, `allOf`, `oneOf`, `$ref`, which is all the document uses; a full
//! validator crate would pull in a regex engine, an HTTP client and more for
//! the same checks), and every path of the document is exercised.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use fleetpulse::config::{CustomersRef, ServiceConfig};
use fleetpulse::http::Hub;
use fleetpulse::service::{self, Runtime};
use fleetpulse::sinks::SinkConfig;
use fleetpulse::sinks::sqlite::SqliteConfig;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

// ---- a JSON-schema subset validator for OpenAPI 3.1 schemas -------------

/// Problems of `value` against `schema` (resolving `$ref` in `doc`), each
/// with the JSON path where it is.
fn validate(doc: &Value, schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = resolve(doc, reference);
        return validate(doc, target, value, path, out);
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            validate(doc, s, value, path, out);
        }
    }
    if let Some(one_of) = schema["oneOf"].as_array() {
        let matching = one_of
            .iter()
            .filter(|s| {
                let mut problems = Vec::new();
                validate(doc, s, value, path, &mut problems);
                problems.is_empty()
            })
            .count();
        if matching != 1 {
            out.push(format!("{path}: {value} matches {matching} of oneOf"));
        }
    }
    // `type` is one name or a list of them (`["number", "null"]`).
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if value.is_null() {
        if !types.is_empty() && !types.contains(&"null") {
            out.push(format!("{path}: null but not nullable"));
        }
        return;
    }
    if !types.is_empty() && types.iter().all(|t| *t == "null") {
        out.push(format!("{path}: {value} is not null"));
        return;
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        out.push(format!("{path}: {value} not in {values:?}"));
    }
    let number = |v: &Value| v.as_f64();
    if let (Some(min), Some(v)) = (number(&schema["minimum"]), number(value))
        && v < min
    {
        out.push(format!("{path}: {v} < minimum {min}"));
    }
    if let (Some(max), Some(v)) = (number(&schema["maximum"]), number(value))
        && v > max
    {
        out.push(format!("{path}: {v} > maximum {max}"));
    }
    match types.into_iter().find(|t| *t != "null") {
        None => {}
        Some("object") => {
            let Some(object) = value.as_object() else {
                out.push(format!("{path}: not an object"));
                return;
            };
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                if !object.contains_key(name) {
                    out.push(format!("{path}: missing `{name}`"));
                }
            }
            for (name, v) in object {
                match properties.and_then(|p| p.get(name)) {
                    Some(s) => validate(doc, s, v, &format!("{path}.{name}"), out),
                    None if schema["additionalProperties"] == Value::Bool(false) => {
                        out.push(format!("{path}: unexpected property `{name}`"))
                    }
                    None => {}
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                out.push(format!("{path}: not an array"));
                return;
            };
            for (i, item) in items.iter().enumerate() {
                validate(doc, &schema["items"], item, &format!("{path}[{i}]"), out);
            }
        }
        Some("string") if !value.is_string() => out.push(format!("{path}: not a string")),
        Some("boolean") if !value.is_boolean() => out.push(format!("{path}: not a boolean")),
        Some("number") if !value.is_number() => out.push(format!("{path}: not a number")),
        Some("integer") if !(value.is_u64() || value.is_i64()) => {
            out.push(format!("{path}: {value} not an integer"))
        }
        Some(_) => {}
    }
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.strip_prefix('#').expect("local $ref");
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("unresolved $ref {reference}"))
}

/// The document path (`/api/customers/{id}`) a request path matches.
fn template_of(doc: &Value, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').collect();
    doc["paths"].as_object()?.keys().find_map(|template| {
        let t: Vec<&str> = template.split('/').collect();
        (t.len() == parts.len()
            && t.iter()
                .zip(&parts)
                .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}'))))
        .then(|| template.clone())
    })
}

#[test]
fn the_validator_catches_what_it_should() {
    let doc: Value = serde_json::from_str(fleetpulse::http::api::openapi_json()).unwrap();
    let alert = &doc["components"]["schemas"]["Alert"];
    let mut good = serde_json::json!({
        "customer": "a", "customer_name": "A", "rule": "usage_drop", "episode": 1,
        "status": "open", "provisional": false, "opened_at": 1, "resolved_at": null, "evidence": "e",
        "metric": null, "threshold": 0.2, "stage": "adopt", "segment": "low-touch",
        "arr_at_risk": 1.0, "next_action": "n"
    });
    let mut out = Vec::new();
    validate(&doc, alert, &good, "$", &mut out);
    assert!(out.is_empty(), "{out:?}");
    good["rule"] = "bogus".into();
    good["episode"] = (-1).into();
    good["extra"] = 1.into();
    good.as_object_mut().unwrap().remove("evidence");
    good["customer"] = Value::Null;
    validate(&doc, alert, &good, "$", &mut out);
    assert_eq!(out.len(), 5, "{out:#?}");
}

// ---- the running service ------------------------------------------------

struct Api {
    client: reqwest::Client,
    base: String,
    doc: Value,
    /// (document path, status) pairs seen.
    seen: BTreeSet<(String, u16)>,
}

impl Api {
    /// GETs `path_and_query`, checks the status is `status` and is
    /// documented, validates a JSON body against the documented schema, and
    /// returns the body.
    async fn get(&mut self, path_and_query: &str, status: u16) -> Value {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap();
        let got = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response.text().await.unwrap();
        assert_eq!(got, status, "GET {path_and_query}: {body}");
        let path = path_and_query.split('?').next().unwrap();
        let template = template_of(&self.doc, path)
            .unwrap_or_else(|| panic!("{path} is not in the OpenAPI document"));
        self.seen.insert((template.clone(), status));
        let documented = &self.doc["paths"][&template]["get"]["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "GET {path_and_query}: status {status} not documented"
        );
        if content_type.starts_with("application/json") {
            let value: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("GET {path_and_query}: bad JSON: {e}"));
            let schema = &documented["content"]["application/json"]["schema"];
            assert!(
                schema.is_object(),
                "GET {path_and_query}: JSON not documented"
            );
            let mut problems = Vec::new();
            validate(&self.doc, schema, &value, "$", &mut problems);
            assert!(
                problems.is_empty(),
                "GET {path_and_query} does not match the OpenAPI document:\n{}",
                problems.join("\n")
            );
            value
        } else {
            assert!(
                documented["content"]["text/plain"].is_object(),
                "GET {path_and_query}: {content_type} not documented"
            );
            Value::String(body)
        }
    }
}

const BAD_QUERIES: &[&str] = &[
    "/api/customers?segment=gold",
    "/api/customers?band=blue",
    "/api/customers?at_risk=maybe",
    "/api/customers?limit=0",
    "/api/customers?limit=abc",
    "/api/customers?limit=1&limit=2",
    "/api/customers?sort=name",
    "/api/alerts?status=closed",
    "/api/alerts?rule=bogus",
    "/api/alerts?segment=vip",
    "/api/portfolio?days=0",
    "/api/portfolio?days=x",
    "/api/retention?period=month",
    "/api/retention?periods=41",
    "/api/impact?window_days=3",
    "/api/contract-events?since=2026",
    "/api/status?verbose=1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = support::fleets::fleet(6, 36, 40, 42);
    let customers_path = dir.path().join("customers.toml");
    fleetpulse::sim::write_files(&fleet, None, Some(&customers_path)).unwrap();
    let broker = fleetpulse::broker::start(0).unwrap();

    let mut config = ServiceConfig::default();
    config.mqtt.host = broker.addr.ip().to_string();
    config.mqtt.port = broker.addr.port();
    config.mqtt.client_id = "fleetpulse-http-test".into();
    config.engine.workers = 2;
    config.engine.idle_after = Duration::from_secs(1);
    config.customers = Some(CustomersRef {
        file: customers_path,
    });
    config.sinks = vec![SinkConfig::Sqlite(SqliteConfig {
        path: dir.path().join("kpi.sqlite"),
    })];
    config.http.enabled = true;
    config.http.listen = "127.0.0.1:0".parse().unwrap();

    let hub = Hub::new();
    let runtime = Runtime::new(Some(hub.clone()));
    let (metrics, shutdown) = (runtime.metrics.clone(), runtime.shutdown.clone());
    let service =
        tokio::spawn(async move { service::run(config, Path::new("<test>"), runtime).await });
    let waited = Instant::now();
    while !metrics.subscribed.load(Relaxed) {
        assert!(
            !service.is_finished(),
            "service stopped: {:?}",
            service.await
        );
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no subscription"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = hub.local_addr().expect("the service listens");
    let mut api = Api {
        client: reqwest::Client::new(),
        base: format!("http://{addr}"),
        doc: serde_json::from_str(fleetpulse::http::api::openapi_json()).unwrap(),
        seen: BTreeSet::new(),
    };

    // Ready before any data: subscribed and running.
    assert_eq!(api.get("/readyz", 200).await, "ready\n");
    assert_eq!(api.get("/healthz", 200).await, "ok\n");

    let published =
        support::fleets::publish_all(broker.addr, &fleet, "fleetpulse-http-test-sim").await;
    // Everything handled, and the view has settled (the watermark closes
    // the days after one idle second).
    support::poll::until_settled(
        async || api.get("/api/status", 200).await,
        |_| metrics.handled() >= published.messages,
        String::new,
    )
    .await;
    let status = api.get("/api/status", 200).await;
    assert_eq!(status["running"], true);
    assert_eq!(status["ready"], true);
    // Every message taken in once: none refused, none counted twice.
    let rejected: Vec<_> = (fleetpulse::metrics::RejectReason::ALL.iter())
        .map(|r| (*r, metrics.rejected(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        status["messages_accepted"].as_u64() == Some(published.messages) && rejected.is_empty(),
        "{} published ({} reconnects), {status}\nrejected: {rejected:?}",
        published.messages,
        published.reconnects
    );
    // One store, caught up: it wrote every record the engine emitted.
    assert!(status["records_emitted"].as_u64() > Some(0), "{status}");
    assert_eq!(status["records_written"], status["records_emitted"]);

    // The ranked list: every customer, ranked.
    let list = api.get("/api/customers", 200).await;
    let rows = list["customers"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["rank"].as_u64(), Some(i as u64 + 1));
        assert!(row["health"].is_object(), "{row}");
        assert!(!row["health_history"].as_array().unwrap().is_empty());
    }
    let at_risk = |row: &Value| {
        !row["alerts"].as_array().unwrap().is_empty()
            || row["health"]["arr_at_risk"].as_f64().unwrap() > 0.0
    };
    // Revenue at stake comes first.
    let first_safe = rows.iter().position(|r| !at_risk(r)).unwrap_or(rows.len());
    assert!(rows[first_safe..].iter().all(|r| !at_risk(r)));
    assert!(first_safe > 0, "the simulator makes customers at risk");
    let healthy = fleet.customers()[0].id.clone();
    let healthy_row = rows.iter().find(|r| r["customer"] == *healthy).unwrap();
    assert!(healthy_row["alerts"].as_array().unwrap().is_empty());

    // Filters.
    let filtered = api.get("/api/customers?at_risk=true", 200).await;
    assert_eq!(filtered["customers"].as_array().unwrap().len(), first_safe);
    let filtered = api.get("/api/customers?at_risk=false&limit=1", 200).await;
    assert!(filtered["customers"].as_array().unwrap().len() <= 1);
    for segment in ["high-touch", "low-touch", "tech-touch"] {
        let filtered = api
            .get(&format!("/api/customers?segment={segment}"), 200)
            .await;
        for row in filtered["customers"].as_array().unwrap() {
            assert_eq!(row["segment"], segment);
        }
    }
    for band in ["red", "yellow", "green"] {
        let filtered = api.get(&format!("/api/customers?band={band}"), 200).await;
        for row in filtered["customers"].as_array().unwrap() {
            assert_eq!(row["health"]["band"], band);
        }
    }

    // One customer, each of them.
    for customer in fleet.customers() {
        let page = api
            .get(&format!("/api/customers/{}", customer.id), 200)
            .await;
        assert_eq!(page["customer"], *customer.id);
        assert_eq!(page["name"], *customer.name);
        let kpis = page["kpis"].as_array().unwrap();
        assert!(
            kpis.len() >= 30,
            "{}: {} daily KPIs",
            customer.id,
            kpis.len()
        );
        assert!(kpis.iter().all(|k| k["window"] == "1d"));
        // Every device that reported (a stalled rollout has some that never did).
        let devices = page["devices"].as_array().unwrap();
        assert!(!devices.is_empty() && devices.len() <= fleet.devices_of(customer).len());
        for d in devices {
            let id = d["device"].as_str().unwrap();
            assert!(fleet.device(id).is_some(), "{id}");
            assert!(d["last_seen"].as_u64().unwrap() > fleet.spec().start);
        }
        assert!(!page["milestones"].as_array().unwrap().is_empty());
        assert!(!page["outcomes"].as_array().unwrap().is_empty());
        for outcome in page["outcomes"].as_array().unwrap() {
            assert!(outcome["target"].is_number(), "{outcome}");
        }
    }
    let id = &fleet.customers()[2].id;
    let week = api
        .get(&format!("/api/customers/{id}?days=7&window=1h"), 200)
        .await;
    assert_eq!(week["window"], "1h");
    let hourly = week["kpis"].as_array().unwrap();
    assert!(!hourly.is_empty() && hourly.len() <= 7);
    assert!(hourly.iter().all(|k| k["window"] == "1h"));
    assert_eq!(week["health_history"].as_array().unwrap().len(), 7);
    api.get("/api/customers/no-such-customer", 404).await;
    // An id that is not UTF-8 once decoded: refused in JSON, as the rest.
    let bad = api.get("/api/customers/%FF", 400).await;
    assert!(
        bad["error"].as_str().unwrap().starts_with("customer id:"),
        "{bad}"
    );
    api.get("/api/customers/%FF/touchpoints", 400).await;
    // A mistyped customer filter is said, not answered with no alerts.
    let typo = api.get("/api/alerts?customer=no-such-customer", 404).await;
    assert!(
        typo["error"].as_str().unwrap().contains("no-such-customer"),
        "{typo}"
    );
    let theirs = api
        .get(&format!("/api/alerts?status=all&customer={id}"), 200)
        .await;
    let theirs = theirs["alerts"].as_array().unwrap();
    assert!(theirs.iter().all(|a| a["customer"] == id.as_str()));
    // Touchpoints: none recorded; the segment's default cadences, with the
    // gaps of a contract that started before the data.
    let tp = api
        .get(&format!("/api/customers/{id}/touchpoints"), 200)
        .await;
    assert!(tp["touchpoints"].as_array().unwrap().is_empty());
    assert!(!tp["coverage"].as_array().unwrap().is_empty());
    api.get("/api/customers/no-such-customer/touchpoints", 404)
        .await;
    api.get(&format!("/api/customers/{id}?days=0"), 400).await;
    api.get(&format!("/api/customers/{id}?days=1000"), 400)
        .await;
    api.get(&format!("/api/customers/{id}?window=5m"), 400)
        .await;
    api.get(&format!("/api/customers/{id}?page=2"), 400).await;

    // Alerts: the same episodes as the store, filtered.
    let store = fleetpulse::sinks::SqliteStore::open(dir.path().join("kpi.sqlite")).unwrap();
    let all = api.get("/api/alerts?status=all", 200).await;
    let all = all["alerts"].as_array().unwrap().clone();
    assert!(!all.is_empty(), "the simulator raises alerts");
    let stored_open = store.alerts(true).unwrap().len();
    let open = api.get("/api/alerts", 200).await;
    let open = open["alerts"].as_array().unwrap().clone();
    assert_eq!(open.len(), stored_open, "open alerts as in the store");
    assert!(open.iter().all(|a| a["status"] == "open"));
    let resolved = api.get("/api/alerts?status=resolved", 200).await;
    // Retracted: provisional alerts their day's close did not confirm.
    let retracted = api.get("/api/alerts?status=retracted", 200).await;
    assert_eq!(
        resolved["alerts"].as_array().unwrap().len()
            + retracted["alerts"].as_array().unwrap().len()
            + open.len(),
        all.len()
    );
    let a = &all[0];
    let rule = a["rule"].as_str().unwrap();
    let segment = a["segment"].as_str().unwrap();
    let customer = a["customer"].as_str().unwrap();
    let by = api
        .get(
            &format!("/api/alerts?status=all&rule={rule}&segment={segment}&customer={customer}"),
            200,
        )
        .await;
    let by = by["alerts"].as_array().unwrap();
    assert!(!by.is_empty());
    assert!(
        by.iter()
            .all(|x| x["rule"] == rule && x["segment"] == segment && x["customer"] == customer)
    );
    let limited = api.get("/api/alerts?status=all&limit=1", 200).await;
    assert_eq!(limited["alerts"].as_array().unwrap().len(), 1);

    // Portfolio.
    let portfolio = api.get("/api/portfolio?days=5", 200).await;
    assert!(portfolio["latest"].is_object());
    assert_eq!(portfolio["history"].as_array().unwrap().len(), 5);
    assert_eq!(portfolio["customers"], 6);
    assert_eq!(portfolio["open_alerts"].as_u64(), Some(open.len() as u64));
    api.get("/api/portfolio", 200).await;

    // Revenue retention: the simulated contracts only start customers.
    let retention = api.get("/api/retention?period=year", 200).await;
    assert_eq!(retention["customers"], 6);
    assert!(!retention["periods"].as_array().unwrap().is_empty());
    api.get("/api/retention", 200).await;
    assert_eq!(retention["recorded_events"], 0);
    // Contract events recorded at runtime: none yet.
    let events = api.get("/api/contract-events", 200).await;
    assert!(events["events"].as_array().unwrap().is_empty());
    // A mistyped customer is said, as for alerts.
    let typo = api
        .get("/api/contract-events?customer=no-such-customer", 404)
        .await;
    assert!(
        typo["error"].as_str().unwrap().contains("no-such-customer"),
        "{typo}"
    );
    // Impact of CS activities: no touchpoints, no kinds.
    let impact = api.get("/api/impact?window_days=14", 200).await;
    assert_eq!(impact["window_days"], 14);
    assert!(impact["kinds"].as_array().unwrap().is_empty());
    api.get("/api/impact", 200).await;
    // Health validation: the simulated contracts only start customers, so
    // there is no decision to validate against.
    let validation = api.get("/api/health-validation", 200).await;
    assert_eq!(validation["customers"], 6);
    assert_eq!(validation["decisions"], 0);
    let horizons: Vec<u64> = validation["horizons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["horizon_days"].as_u64().unwrap())
        .collect();
    assert_eq!(horizons, [30, 60, 90]);
    api.get("/api/health-validation?x=1", 400).await;

    // Without authentication configured, on loopback, everyone is an admin.
    let me = api.get("/api/me", 200).await;
    assert_eq!(me["role"], "admin");
    assert_eq!(me["via"], "anonymous");
    api.get("/api/me?x=1", 400).await;

    // Bad query parameters.
    for query in BAD_QUERIES {
        let error = api.get(query, 400).await;
        assert!(!error["error"].as_str().unwrap().is_empty());
    }

    // The document itself, and the one in the repository.
    let served = api.get("/api/openapi.json", 200).await;
    assert_eq!(served, api.doc);
    let in_repo: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(served, in_repo);

    // Prometheus text: the counters, per reason, no device labels.
    let text = api.get("/metrics", 200).await;
    let text = text.as_str().unwrap();
    for name in [
        "fleetpulse_messages_received_total",
        "fleetpulse_messages_decoded_total",
        "fleetpulse_messages_rejected_total{reason=\"decode\"}",
        "fleetpulse_engine_watermark_lag_seconds",
        "fleetpulse_sink_queue_depth{sink=\"0-sqlite\"}",
        "fleetpulse_sink_write_errors_total",
        "fleetpulse_sinks_failing 0",
        "fleetpulse_sink_records_written_total",
        "fleetpulse_ready 1",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("fleetpulse_messages_received_total"),
        published.messages as f64
    );
    assert!(value("fleetpulse_sink_records_written_total") > 0.0);
    assert!(!text.contains("device="), "no per-device labels");

    // The dashboard and its assets; unknown routes.
    let index = reqwest::get(format!("{}/", api.base)).await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(index.text().await.unwrap().contains("/assets/app.js"));
    for asset in ["/assets/app.js", "/assets/app.css"] {
        let response = reqwest::get(format!("{}{asset}", api.base)).await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
    }
    let missing = reqwest::get(format!("{}/no/such/route", api.base))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Every documented path was exercised, with each documented status.
    let mut documented = BTreeSet::new();
    for (path, item) in api.doc["paths"].as_object().unwrap() {
        for status in item["get"]["responses"].as_object().unwrap().keys() {
            documented.insert((path.clone(), status.parse::<u16>().unwrap()));
        }
    }
    // 503 is checked in `readyz_is_503_when_not_running`; 401 and 403 (no
    // credentials, a viewer's refusals) in tests/auth.rs, since this
    // loopback service asks nobody.
    documented.remove(&("/readyz".to_string(), 503));
    documented.retain(|(_, status)| *status != 401 && *status != 403);
    let missed: Vec<_> = documented.difference(&api.seen).collect();
    assert!(missed.is_empty(), "not exercised: {missed:?}");

    shutdown.cancel();
    let report = service.await.unwrap().unwrap();
    assert!(report.sinks[0].records_written > 0);
    // The server stopped with the service.
    assert!(
        reqwest::get(format!("{}/healthz", api.base)).await.is_err(),
        "still serving after the service stopped"
    );
}

#[tokio::test]
async fn readyz_is_503_when_not_running() {
    let hub = Hub::new();
    let stop = CancellationToken::new();
    let config = fleetpulse::http::HttpConfig::on("127.0.0.1:0".parse().unwrap());
    let (addr, server) = fleetpulse::http::start(&config, hub, stop.clone())
        .await
        .unwrap();
    let mut api = Api {
        client: reqwest::Client::new(),
        base: format!("http://{addr}"),
        doc: serde_json::from_str(fleetpulse::http::api::openapi_json()).unwrap(),
        seen: BTreeSet::new(),
    };
    let body = api.get("/readyz", 503).await;
    assert!(body.as_str().unwrap().starts_with("not ready"), "{body}");
    let empty = api.get("/api/customers", 200).await;
    assert!(empty["customers"].as_array().unwrap().is_empty());
    let portfolio = api.get("/api/portfolio", 200).await;
    assert!(portfolio["latest"].is_null());
    let metrics = api.get("/metrics", 200).await;
    assert!(metrics.as_str().unwrap().contains("fleetpulse_ready 0"));
    stop.cancel();
    server.await.unwrap().unwrap();
}
