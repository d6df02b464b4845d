//! SQLite stores compared row by row: a run with late, buffered or
//! backfilled data against one that had every reading in time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleetpulse_sim::{Fleet, FleetSpec};

use super::servers::Mosquitto;

/// The window and journey tables, and the portfolio folded from every
/// customer's health.
pub const TABLES: [&str; 8] = [
    "customer_kpi",
    "device_kpi",
    "health",
    "forecast",
    "outcome",
    "milestone",
    "alert",
    "portfolio",
];

/// Every window and journey row of the store at `db` equals the one of
/// the store at `reference_db` (the same readings in event-time order), key
/// by key, revisions aside.
pub fn assert_same_as_in_order(db: &Path, reference_db: &Path) {
    if let Err(e) = same_as_in_order(db, reference_db) {
        panic!("{e}");
    }
}

/// [`assert_same_as_in_order`], saying what differs first instead.
pub fn same_as_in_order(db: &Path, reference_db: &Path) -> Result<(), String> {
    for table in TABLES {
        let (got, _) = rows(db, table);
        let (want, _) = rows(reference_db, table);
        if got.len() != want.len() {
            let only = |a: &BTreeMap<String, _>, b: &BTreeMap<String, _>| {
                a.keys()
                    .filter(|k| !b.contains_key(*k))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            return Err(format!(
                "{table}: {} rows, {} in order; only here {:?}, only in order {:?}",
                got.len(),
                want.len(),
                (only(&got, &want).iter())
                    .map(|k| (k, &got[k]))
                    .collect::<Vec<_>>(),
                only(&want, &got)
            ));
        }
        for (key, row) in &want {
            // A provisional row is the open day as of the stop, the hours
            // each run had judged by then: present in both, its values
            // not compared. A closed row against a provisional one is a
            // day closed before its time.
            let both_provisional = provisional(row) && got.get(key).is_some_and(|r| provisional(r));
            if got.get(key) != Some(row) && !both_provisional {
                return Err(format!(
                    "{table} {key}: {:?}, in order {row:?}",
                    got.get(key)
                ));
            }
        }
        println!("{table}: {} rows equal the in-order run", want.len());
    }
    Ok(())
}

/// Whether a row is provisional (the open day's score or alert).
fn provisional(row: &[(String, String)]) -> bool {
    row.iter()
        .any(|(c, v)| c == "provisional" && v == "Integer(1)")
}

/// Every row of `table` in the SQLite store at `path`, keyed by its
/// primary key, without the revision (and without retracted alerts); and
/// the highest revision.
pub fn rows(path: &Path, table: &str) -> (BTreeMap<String, Vec<(String, String)>>, i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let key_columns: Vec<String> = conn
        .prepare(&format!(
            "SELECT name FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk"
        ))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut select = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
    let names: Vec<String> = select
        .column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let mut out = BTreeMap::new();
    let mut revision = 0;
    let mut query = select.query([]).unwrap();
    while let Some(row) = query.next().unwrap() {
        let mut fields = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let value: rusqlite::types::Value = row.get(i).unwrap();
            if name == "revision" {
                if let rusqlite::types::Value::Integer(r) = value {
                    revision = revision.max(r);
                }
                continue;
            }
            let text = match value {
                // The sign of a value that rounds to zero is the order a
                // sum was taken in (restated: 2.6e-11 against -5.6e-16).
                rusqlite::types::Value::Real(x) => match format!("{x:.6}") {
                    zero if zero == "-0.000000" => "0.000000".to_string(),
                    text => text,
                },
                other => format!("{other:?}"),
            };
            fields.push((name.clone(), text));
        }
        if fields
            .iter()
            .any(|(n, v)| n == "status" && v.contains("retracted"))
        {
            continue;
        }
        let key = (key_columns.iter())
            .filter_map(|k| fields.iter().find(|(n, _)| n == k))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("/");
        out.insert(key, fields);
    }
    (out, revision)
}

/// The fleet of `spec` without its outages (every reading in event-time
/// order) run in process as `client` into a SQLite store: its directory
/// and store, the reference of [`assert_same_as_in_order`]. With
/// `customers`, that customers file instead of the fleet's.
pub async fn in_order(
    mosquitto: &Mosquitto,
    spec: &FleetSpec,
    client: &str,
    customers: Option<&str>,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::generate(&FleetSpec {
        store_and_forward: 0,
        ..spec.clone()
    });
    let file = dir.path().join("customers.toml");
    match customers {
        Some(text) => std::fs::write(&file, text).unwrap(),
        None => fleetpulse::sim::write_files(&fleet, None, Some(&file)).unwrap(),
    }
    let customers = file;
    let (host, port) = (mosquitto.host(), mosquitto.port());
    let config = super::in_process::durable(host, port, client, &customers, dir.path());
    let publish = super::fleets::publish_options(mosquitto, &format!("{client}-sim"));
    let run = fleetpulse::drive::drive(config, &fleet, publish)
        .await
        .unwrap();
    assert_eq!(run.metrics.rejected_total(), 0);
    let late = run
        .metrics
        .late_admitted
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(late, 0, "the reference has every reading in time");
    let db = dir.path().join("kpi.sqlite");
    (dir, db)
}

/// The one number `sql` (with `params`) answers from the SQLite file `db`.
pub fn scalar(db: &Path, sql: &str, params: impl rusqlite::Params) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, params, |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
