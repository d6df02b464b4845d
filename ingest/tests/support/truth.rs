//! Per-customer-day KPIs read back from the stores, the simulator's ground
//! truth in the same shape, and the comparisons the end-to-end tests assert
//! on.

use std::collections::BTreeMap;
use std::path::Path;

use fleetpulse::sinks::SqliteStore;
use fleetpulse_sim::{DayTruth, Fleet};

use super::servers::{InfluxDb1, VictoriaMetrics};

const DAY_MS: u64 = 86_400_000;

/// (customer, day start) -> (operating hours, cycles, samples, interventions, faults, active devices).
pub type Days = BTreeMap<(String, u64), (f64, u64, u64, u64, u64, u64)>;

/// The three stores of the end-to-end tests: SQLite at `sqlite`, InfluxDB
/// 1.x database `database`, and VictoriaMetrics writing restatements as
/// `restatements` says.
pub fn every_store(
    sqlite: &Path,
    influx: &InfluxDb1,
    database: &str,
    vm: &VictoriaMetrics,
    restatements: fleetpulse::sinks::influxdb::Restatements,
) -> Vec<fleetpulse::sinks::SinkConfig> {
    use fleetpulse::sinks::{InfluxDbV1Config, InfluxDbV2Config, SinkConfig};
    let batch_size = std::num::NonZeroUsize::new(5000).unwrap();
    vec![
        SinkConfig::Sqlite(fleetpulse::sinks::sqlite::SqliteConfig {
            path: sqlite.to_owned(),
        }),
        SinkConfig::InfluxDbV1(InfluxDbV1Config {
            url: influx.url(),
            database: database.into(),
            username: None,
            password_env: None,
            batch_size,
        }),
        SinkConfig::InfluxDbV2(InfluxDbV2Config {
            url: vm.url(),
            org: "fleetpulse".into(),
            bucket: "fleetpulse".into(),
            token_env: "FLEETPULSE_TEST_NO_TOKEN".into(),
            batch_size,
            restatements,
        }),
    ]
}

/// The daily `customer_kpi` rows of database `db`.
pub fn store_days(influx: &InfluxDb1, db: &str) -> Days {
    let answer = influx.query(
        db,
        "SELECT operating_hours, cycles, samples, manual_interventions, fault_count, active_devices, window_end FROM customer_kpi WHERE \"window\" = '1d' GROUP BY customer",
    );
    let mut days = Days::new();
    for series in answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let customer = series["tags"]["customer"].as_str().unwrap().to_string();
        for v in series["values"].as_array().unwrap() {
            // A point being written shows its fields one by one to a query
            // that runs meanwhile (InfluxDB 1.x): a row with a null is one
            // the store does not hold whole yet; its day counts as missing.
            if v.as_array().unwrap().iter().any(|x| x.is_null()) {
                continue;
            }
            let n = |i: usize| v[i].as_f64().unwrap();
            days.insert(
                (customer.clone(), n(7) as u64 - DAY_MS),
                (
                    n(1),
                    n(2) as u64,
                    n(3) as u64,
                    n(4) as u64,
                    n(5) as u64,
                    n(6) as u64,
                ),
            );
        }
    }
    days
}

/// The simulator's ground truth in the same shape.
pub fn truth_days(fleet: &Fleet) -> Days {
    fleet
        .ground_truth()
        .rows()
        .into_iter()
        .map(|r| {
            (
                (r.customer, r.day_start_ms),
                (
                    r.operating_hours,
                    r.cycles,
                    r.samples,
                    r.manual_interventions,
                    r.fault_count,
                    u64::from(r.active_devices),
                ),
            )
        })
        .collect()
}

/// The rule each at-risk profile must raise (docs/CUSTOMER_SUCCESS.md).
#[allow(unused_imports)]
pub use fleetpulse::backtest::signature;

/// Whether a stored sum equals the ground truth's within 1e-6 relative:
/// hours, litres and units are sums of floats in another order.
pub fn close(stored: f64, truth: f64) -> bool {
    (stored - truth).abs() <= 1e-6 * truth.abs().max(1.0)
}

/// Asserts that `store` holds exactly the rows (keys) of `truth`; `what`
/// names the store in the message.
pub fn assert_same_rows<K: Ord + std::fmt::Debug, A, B>(
    what: &str,
    store: &BTreeMap<K, A>,
    truth: &BTreeMap<K, B>,
) {
    assert_eq!(
        store.keys().collect::<Vec<_>>(),
        truth.keys().collect::<Vec<_>>(),
        "{what}: the rows differ from the ground truth's"
    );
}

/// Counts exactly equal, hours within 1e-6 relative.
pub fn equal(store: &Days, truth: &Days) -> Result<(), String> {
    if store.len() != truth.len() {
        return Err(format!(
            "{} customer-days in the store, {} in the ground truth",
            store.len(),
            truth.len()
        ));
    }
    for (key, t) in truth {
        let Some(s) = store.get(key) else {
            return Err(format!("{key:?} missing"));
        };
        if !close(s.0, t.0) || (s.1, s.2, s.3, s.4, s.5) != (t.1, t.2, t.3, t.4, t.5) {
            return Err(format!("{key:?}: store {s:?}, ground truth {t:?}"));
        }
    }
    Ok(())
}

/// Per key (customer or `customer/device`, day start): field -> value.
pub type Table = BTreeMap<(String, u64), BTreeMap<String, f64>>;

/// Fields compared exactly (counts); the others within 1e-6 relative
/// ([`close`]).
pub const EXACT: [&str; 8] = [
    "cycles",
    "manual_interventions",
    "fault_count",
    "distinct_operators",
    "active_devices",
    "reporting_devices",
    "advanced_features_used",
    "samples",
];

/// The usage fields of a day, by name, as `f64`: one list for the ground
/// truth's rows and the stores' records, customer or device (their fields
/// share names). `$totals` holds the summed fields (a ground-truth row
/// itself, a record's `totals`), `$row` the distinct operators.
#[allow(unused_macros)]
macro_rules! usage_fields {
    ($totals:expr, $row:expr) => {{
        let (t, r) = (&$totals, &$row);
        [
            ("operating_hours", t.operating_hours),
            ("idle_hours", t.idle_hours),
            ("fuel_litres", t.fuel_litres),
            ("output_units", t.output_units),
            ("cycles", t.cycles as f64),
            ("manual_interventions", t.manual_interventions as f64),
            ("fault_count", t.fault_count as f64),
            ("distinct_operators", f64::from(r.distinct_operators)),
            ("samples", t.samples as f64),
        ]
    }};
}
#[allow(unused_imports)]
pub(crate) use usage_fields;

/// The compared fields of a customer-day: the usage fields, the devices and
/// the advanced features (`$totals` and `$row` as for [`usage_fields`]).
#[allow(unused_macros)]
macro_rules! customer_fields {
    ($totals:expr, $row:expr) => {{
        let r = &$row;
        $crate::support::truth::usage_fields!($totals, r)
            .into_iter()
            .chain([
                ("active_devices", f64::from(r.active_devices)),
                ("reporting_devices", f64::from(r.reporting_devices)),
                (
                    "advanced_features_used",
                    f64::from(r.advanced_features_used),
                ),
            ])
            .map(|(name, value)| (name.to_string(), value))
            .collect::<::std::collections::BTreeMap<String, f64>>()
    }};
}
#[allow(unused_imports)]
pub(crate) use customer_fields;

/// The ground truth's customer-days as a table.
pub fn truth_table(rows: &[DayTruth]) -> Table {
    rows.iter()
        .map(|r| ((r.customer.clone(), r.day_start_ms), customer_fields!(r, r)))
        .collect()
}

/// The daily customer KPIs in the SQLite store at `path`.
pub fn sqlite_customer_table(path: &Path) -> Table {
    let store = SqliteStore::open(path).unwrap();
    store
        .customer_kpis("1d")
        .unwrap()
        .into_iter()
        .map(|k| {
            (
                (k.customer.to_string(), k.window_start),
                customer_fields!(k.totals, k),
            )
        })
        .collect()
}

/// Every row and field of `truth` equals the store's (`what` names it in
/// the messages): counts ([`EXACT`]) exactly, hours, litres, units and
/// shares within 1e-6 relative.
pub fn assert_table_equal(what: &str, store: &Table, truth: &Table) {
    if let Err(e) = table_equal(what, store, truth) {
        panic!("{e}");
    }
    println!("{what}: {} rows equal the ground truth", truth.len());
}

/// [`assert_table_equal`], saying what differs first instead.
pub fn table_equal(what: &str, store: &Table, truth: &Table) -> Result<(), String> {
    if !store.keys().eq(truth.keys()) {
        return Err(format!(
            "{what}: the rows differ from the ground truth's: {:?} against {:?}",
            store.keys().collect::<Vec<_>>(),
            truth.keys().collect::<Vec<_>>()
        ));
    }
    for (key, expected) in truth {
        let row = &store[key];
        for (field, e) in expected {
            let g = row.get(field).copied();
            let same = if EXACT.contains(&field.as_str()) {
                g == Some(*e)
            } else {
                g.is_some_and(|g| close(g, *e))
            };
            if !same {
                return Err(format!(
                    "{what} {key:?} {field}: store {g:?}, ground truth {e}"
                ));
            }
        }
    }
    Ok(())
}

/// The daily `customer_kpi` rows of InfluxDB 1.x database `db`, as a table
/// (a restated window's point holds its newest values).
pub fn influx_table(influx: &InfluxDb1, db: &str) -> Table {
    let answer = influx.query(
        db,
        "SELECT * FROM customer_kpi WHERE \"window\" = '1d' GROUP BY customer",
    );
    let mut table = Table::new();
    for series in answer["results"][0]["series"].as_array().expect("series") {
        let customer = series["tags"]["customer"].as_str().unwrap().to_string();
        let columns: Vec<&str> = (series["columns"].as_array().unwrap().iter())
            .map(|c| c.as_str().unwrap())
            .collect();
        for values in series["values"].as_array().unwrap() {
            let mut fields = BTreeMap::new();
            for (column, value) in columns.iter().zip(values.as_array().unwrap()) {
                if let Some(v) = value.as_f64() {
                    fields.insert(column.to_string(), v);
                }
            }
            let start = fields["window_end"] as u64 - DAY_MS;
            fields.remove("revision");
            table.insert((customer.clone(), start), fields);
        }
    }
    table
}

/// The daily `customer_kpi` series of VictoriaMetrics, as a table: a
/// restated window (`restatements = "later_sample"`) is its newest sample
/// in the second of its start.
pub fn victoria_table(vm: &VictoriaMetrics) -> Table {
    let mut table = Table::new();
    for series in vm.export(r#"{__name__=~"customer_kpi_.*", window="1d"}"#) {
        let name = series["metric"]["__name__"].as_str().unwrap();
        let field = name.strip_prefix("customer_kpi_").unwrap().to_string();
        if field == "revision" {
            continue;
        }
        let customer = series["metric"]["customer"].as_str().unwrap().to_string();
        let values = series["values"].as_array().unwrap();
        let times = series["timestamps"].as_array().unwrap();
        // Revision r of a window is a sample r ms after its start: the
        // newest is the latest sample in the start's second.
        let mut newest: BTreeMap<u64, (u64, f64)> = BTreeMap::new();
        for (value, time) in values.iter().zip(times) {
            let time = time.as_u64().unwrap();
            let slot = newest.entry(time - time % 1000).or_insert((time, 0.0));
            if time >= slot.0 {
                *slot = (time, value.as_f64().unwrap());
            }
        }
        for (start, (_, value)) in newest {
            table
                .entry((customer.clone(), start))
                .or_default()
                .insert(field.clone(), value);
        }
    }
    table
}
