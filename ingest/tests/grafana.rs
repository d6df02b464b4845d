//! The Grafana dashboards in deploy/grafana/dashboards/ parse, and every query
//! in them (Flux or InfluxQL, in panels and in template variables) names only
//! measurements, tags and fields that docs/SCHEMA.md defines. A renamed field
//! in the schema fails here instead of leaving an empty panel.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fleetpulse::records::{KindVisitor, RecordKind, each_kind};
use regex::Regex;
use serde_json::Value;
use support::files::files_with_extension;

/// Measurement -> its tag and field keys, from docs/SCHEMA.md's
/// "### Measurement `name`" tables.
type Schema = BTreeMap<String, BTreeSet<String>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema() -> Schema {
    let text = std::fs::read_to_string(root().join("docs/SCHEMA.md")).unwrap();
    let heading = Regex::new(r"^### Measurement `([a-z_]+)`").unwrap();
    let row = Regex::new(r"^\| `([a-z_][a-z0-9_]*)` \| (tag|field) \|").unwrap();
    let mut schema = Schema::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(c) = heading.captures(line) {
            current = Some(c[1].to_string());
            schema.entry(c[1].to_string()).or_default();
        } else if line.starts_with('#') {
            current = None;
        } else if let (Some(m), Some(c)) = (&current, row.captures(line)) {
            schema.get_mut(m).unwrap().insert(c[1].to_string());
        }
    }
    schema
}

/// Every query string of a dashboard: panel targets (nested rows too) and
/// query variables.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                for key in ["query", "rawSql"] {
                    if let Some(q) = target[key].as_str() {
                        out.push((format!("panel `{title}`"), q.to_string()));
                    }
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            let q = var["query"]
                .as_str()
                .or_else(|| var["query"]["query"].as_str())
                .unwrap_or_default();
            out.push((
                format!("variable `{}`", var["name"].as_str().unwrap_or("?")),
                q.to_string(),
            ));
        }
    }
    out
}

/// Problems with one query; empty when it only names what the schema has.
fn check(query: &str, schema: &Schema) -> Vec<String> {
    if query.contains("from(bucket") || query.contains("schema.") {
        check_flux(query, schema)
    } else {
        check_influxql(query, schema)
    }
}

fn check_flux(query: &str, schema: &Schema) -> Vec<String> {
    let mut problems = Vec::new();
    let measurements: BTreeSet<String> = Regex::new(r#"_measurement\s*==\s*"([^"]*)""#)
        .unwrap()
        .captures_iter(query)
        .map(|c| c[1].to_string())
        .collect();
    if measurements.is_empty() {
        problems.push("names no measurement (r._measurement == \"...\")".into());
    }
    let mut keys = BTreeSet::new();
    for m in &measurements {
        match schema.get(m) {
            Some(k) => keys.extend(k.iter().cloned()),
            None => problems.push(format!("measurement `{m}` is not in docs/SCHEMA.md")),
        }
    }
    // What the query names, and as what: each pattern's group 1 is a name,
    // or (a list) holds quoted names.
    let quoted = Regex::new(r#""([^"]*)""#).unwrap();
    let mut named = Vec::new();
    for (kind, pattern, list) in [
        ("field", r#"_field\s*==\s*"([^"]*)""#, false),
        ("field", r"r\._field\s*,\s*set:\s*\[([^\]]*)\]", true),
        ("tag", r#"\btag:\s*"([^"]*)""#, false),
        ("column", r"\br\.([A-Za-z_][A-Za-z0-9_]*)", false),
        (
            "column",
            r"\b(?:columns|rowKey|columnKey):\s*\[([^\]]*)\]",
            true,
        ),
        ("column", r#"\b(?:column|valueColumn):\s*"([^"]*)""#, false),
    ] {
        for c in Regex::new(pattern).unwrap().captures_iter(query) {
            if list {
                named.extend(
                    quoted
                        .captures_iter(&c[1])
                        .map(|q| (kind, q[1].to_string())),
                );
            } else {
                named.push((kind, c[1].to_string()));
            }
        }
    }
    for (kind, name) in named {
        // `_time`, `_value`, `_field`, `_measurement`, `_start`, `_stop`:
        // InfluxDB's own columns.
        if name.starts_with('_') || keys.contains(&name) {
            continue;
        }
        problems.push(format!(
            "{kind} `{name}` is not a key of {measurements:?} in docs/SCHEMA.md"
        ));
    }
    problems
}

fn check_influxql(query: &str, schema: &Schema) -> Vec<String> {
    let Some(from) = Regex::new(r#"(?i)\bFROM\s+(?:"[^"]*"\.)*"?([A-Za-z_][A-Za-z0-9_]*)"?"#)
        .unwrap()
        .captures(query)
    else {
        return vec!["neither Flux nor InfluxQL with a FROM clause".into()];
    };
    let m = from[1].to_string();
    let Some(keys) = schema.get(&m) else {
        return vec![format!("measurement `{m}` is not in docs/SCHEMA.md")];
    };
    // Quoted identifiers name tags and fields; a FROM's target is the
    // measurement, and retention policy / database prefixes are skipped.
    let mut problems = Vec::new();
    let (before_from, after_from) = query.split_at(from.get(0).unwrap().start());
    let rest = &after_from[from.get(0).unwrap().len()..];
    let quoted = Regex::new(r#""([^"]+)""#).unwrap();
    for part in [before_from, rest] {
        for c in quoted.captures_iter(part) {
            let name = &c[1];
            if !keys.contains(name) && name != "time" {
                problems.push(format!("`{name}` is not a key of `{m}` in docs/SCHEMA.md"));
            }
        }
    }
    problems
}

fn dashboards() -> Vec<PathBuf> {
    files_with_extension(&root().join("deploy/grafana/dashboards"), "json")
}

#[test]
fn schema_tables_are_read() {
    let schema = schema();
    // Every record kind's measurement (touchpoints stay in SQLite).
    struct Names(Vec<&'static str>);
    impl KindVisitor for Names {
        fn kind<R: RecordKind>(&mut self) {
            if !R::SQLITE_ONLY {
                self.0.push(R::NAME);
            }
        }
    }
    let mut names = Names(Vec::new());
    each_kind(&mut names);
    assert_eq!(names.0.len(), 8);
    for m in names.0 {
        assert!(schema.contains_key(m), "{m} missing: {schema:?}");
    }
    assert!(schema["health"].contains("score"));
    assert!(schema["health"].contains("segment"));
    assert!(schema["device_kpi"].contains("last_seen"));
}

#[test]
fn every_dashboard_parses_and_queries_only_schema_names() {
    let schema = schema();
    let files = dashboards();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for wanted in [
        "fleet-overview",
        "customer-health",
        "device-drilldown",
        "alerts",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted}.json missing");
    }
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    let mut measurements_used = BTreeSet::new();
    let measurement = Regex::new(r#"_measurement\s*==\s*"([^"]*)""#).unwrap();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let dashboard: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        let uid = dashboard["uid"].as_str().expect("uid");
        assert!(uids.insert(uid.to_string()), "duplicate uid {uid}");
        assert!(dashboard["title"].is_string());
        let queries = queries(&dashboard);
        assert!(queries.len() >= 4, "{}: few queries", path.display());
        for (place, query) in queries {
            for c in measurement.captures_iter(&query) {
                measurements_used.insert(c[1].to_string());
            }
            for problem in check(&query, &schema) {
                problems.push(format!("{} {place}: {problem}", path.display()));
            }
        }
        // Every panel queries the provisioned data source.
        for panel in dashboard["panels"].as_array().unwrap() {
            assert_eq!(
                panel["datasource"]["uid"],
                "fleetpulse-influxdb",
                "{}: panel {}",
                path.display(),
                panel["title"]
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The dashboards cover every measurement the schema defines.
    let defined: BTreeSet<String> = schema.keys().cloned().collect();
    assert_eq!(measurements_used, defined);
}

#[test]
fn the_checker_catches_unknown_names() {
    let schema = schema();
    let good = r#"from(bucket: "b") |> filter(fn: (r) => r._measurement == "health" and r.customer == "x") |> filter(fn: (r) => r._field == "score")"#;
    assert!(
        check(good, &schema).is_empty(),
        "{:?}",
        check(good, &schema)
    );
    let bad_field = good.replace("\"score\"", "\"health_score\"");
    assert_eq!(check(&bad_field, &schema).len(), 1);
    let bad_measurement = good.replace("\"health\"", "\"healthz\"");
    assert!(!check(&bad_measurement, &schema).is_empty());
    let bad_tag = good.replace("r.customer", "r.site");
    assert_eq!(check(&bad_tag, &schema).len(), 1);
    let set = r#"from(bucket: "b") |> filter(fn: (r) => r._measurement == "portfolio") |> filter(fn: (r) => contains(value: r._field, set: ["red", "blue"]))"#;
    assert_eq!(check(set, &schema).len(), 1, "{:?}", check(set, &schema));
    let influxql = r#"SELECT last("score") FROM "health" WHERE "customer" = 'a' AND $timeFilter"#;
    assert!(check(influxql, &schema).is_empty());
    let influxql_bad = r#"SELECT mean("scores") FROM "autogen"."health""#;
    assert_eq!(check(influxql_bad, &schema).len(), 1);
}

#[test]
fn provisioning_points_at_the_dashboards_and_the_data_source_uid() {
    let base = root().join("deploy/grafana/provisioning");
    let datasource =
        std::fs::read_to_string(base.join("datasources/influxdb.yaml")).expect("datasource file");
    assert!(datasource.contains("uid: fleetpulse-influxdb"));
    assert!(datasource.contains("version: Flux"));
    assert!(
        !datasource.contains("token: fleetpulse"),
        "no literal token"
    );
    let dashboards =
        std::fs::read_to_string(base.join("dashboards/fleetpulse.yaml")).expect("provider file");
    assert!(dashboards.contains("path: /var/lib/grafana/dashboards"));
    let compose = std::fs::read_to_string(root().join("deploy/docker-compose.yml")).unwrap();
    for service in ["mosquitto:", "influxdb:", "grafana:", "fleetpulse:"] {
        assert!(compose.contains(service), "compose lacks {service}");
    }
    assert!(compose.contains("./grafana/dashboards:/var/lib/grafana/dashboards"));
}
