//! The SQLite schema (documented in `docs/SCHEMA.md`; keep the two in step)
//! and the connection set-up shared by the sink and the read API.
//!
//! Times are INTEGER milliseconds since the Unix epoch, UTC. Ratios, hours,
//! scores and money are REAL; SQLite stores NaN as NULL, so a REAL column is
//! NULL when the value was not finite (an undefined outcome value is NaN),
//! and read back as NaN. The optional values (`outcome_attainment`,
//! `maturity`, `time_to_value_days`, `reached_at`, `resolved_at`) are NULL
//! when absent and read back as `None`. Booleans are INTEGER 0 or 1, enums
//! TEXT with the engine's serde names. `window` is an SQL keyword, so it is
//! always written quoted: `"window"`.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::sinks::SinkError;

/// The schema version this build writes and reads, kept in the one-row table
/// `schema_version`. Version 1: `customer_kpi`, `device_kpi`. Version 2 adds
/// the customer-success tables `outcome`, `milestone`, `health`, `alert` and
/// `portfolio`.
pub const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for another connection's lock before failing
/// with `SQLITE_BUSY` (which the sink then retries).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, in order: `(version, statements)`. A file at version `n`
/// gets every migration above `n`. Every statement is idempotent.
const MIGRATIONS: [(i64, &str); 2] = [(1, SCHEMA_V1), (2, SCHEMA_V2)];

/// Version 1 of the schema.
const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS customer_kpi (
    customer               TEXT    NOT NULL,
    "window"               TEXT    NOT NULL,
    window_start           INTEGER NOT NULL,
    window_end             INTEGER NOT NULL,
    devices_purchased      INTEGER NOT NULL,
    reporting_devices      INTEGER NOT NULL,
    active_devices         INTEGER NOT NULL,
    utilisation            REAL,
    operating_hours        REAL,
    idle_hours             REAL,
    fuel_litres            REAL,
    cycles                 INTEGER NOT NULL,
    output_units           REAL,
    manual_interventions   INTEGER NOT NULL,
    distinct_operators     INTEGER NOT NULL,
    advanced_features_used INTEGER NOT NULL,
    advanced_feature_share REAL,
    fault_count            INTEGER NOT NULL,
    samples                INTEGER NOT NULL,
    PRIMARY KEY (customer, "window", window_start)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS device_kpi (
    customer             TEXT    NOT NULL,
    site                 TEXT    NOT NULL,
    device               TEXT    NOT NULL,
    "window"             TEXT    NOT NULL,
    window_start         INTEGER NOT NULL,
    window_end           INTEGER NOT NULL,
    utilisation          REAL,
    operating_hours      REAL,
    idle_hours           REAL,
    fuel_litres          REAL,
    cycles               INTEGER NOT NULL,
    output_units         REAL,
    manual_interventions INTEGER NOT NULL,
    distinct_operators   INTEGER NOT NULL,
    fault_count          INTEGER NOT NULL,
    samples              INTEGER NOT NULL,
    last_seen            INTEGER NOT NULL,
    last_state           TEXT    NOT NULL,
    PRIMARY KEY (customer, device, "window", window_start)
) WITHOUT ROWID;
"#;

/// Version 2: the customer-success records. Booleans are INTEGER 0 or 1;
/// enums are TEXT with the engine's serde names.
const SCHEMA_V2: &str = r#"
CREATE TABLE IF NOT EXISTS outcome (
    customer           TEXT    NOT NULL,
    outcome            TEXT    NOT NULL,
    "window"           TEXT    NOT NULL,
    window_start       INTEGER NOT NULL,
    window_end         INTEGER NOT NULL,
    value              REAL,
    target             REAL,
    direction          TEXT    NOT NULL,
    met                INTEGER NOT NULL,
    consecutive_met    INTEGER NOT NULL,
    consecutive_missed INTEGER NOT NULL,
    PRIMARY KEY (customer, outcome, "window", window_start)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS milestone (
    customer        TEXT    NOT NULL,
    milestone       TEXT    NOT NULL,
    window_start    INTEGER NOT NULL,
    window_end      INTEGER NOT NULL,
    position        INTEGER NOT NULL,
    value_milestone INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    reached_at      INTEGER,
    status          TEXT    NOT NULL,
    PRIMARY KEY (customer, milestone, window_start)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS health (
    customer              TEXT    NOT NULL,
    window_start          INTEGER NOT NULL,
    window_end            INTEGER NOT NULL,
    score                 REAL,
    band                  TEXT    NOT NULL,
    score_trend           REAL,
    depth                 REAL,
    breadth               REAL,
    utilisation           REAL,
    outcome_attainment    REAL,
    reliability           REAL,
    trend                 REAL,
    maturity              REAL,
    stage                 TEXT    NOT NULL,
    segment               TEXT    NOT NULL,
    arr                   REAL,
    arr_at_risk           REAL,
    open_alerts           INTEGER NOT NULL,
    days_since_activation REAL,
    days_to_renewal       REAL,
    time_to_value_days    REAL,
    usage_growth          REAL,
    milestones_reached    INTEGER NOT NULL,
    milestones_total      INTEGER NOT NULL,
    PRIMARY KEY (customer, window_start)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS alert (
    customer      TEXT    NOT NULL,
    rule          TEXT    NOT NULL,
    episode       INTEGER NOT NULL,
    customer_name TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    opened_at     INTEGER NOT NULL,
    resolved_at   INTEGER,
    evidence      TEXT    NOT NULL,
    metric        REAL,
    threshold     REAL,
    stage         TEXT    NOT NULL,
    segment       TEXT    NOT NULL,
    arr_at_risk   REAL,
    next_action   TEXT    NOT NULL,
    PRIMARY KEY (customer, rule, episode)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS portfolio (
    window_start                 INTEGER NOT NULL PRIMARY KEY,
    window_end                   INTEGER NOT NULL,
    customers                    INTEGER NOT NULL,
    arr_total                    REAL,
    arr_at_risk                  REAL,
    green                        INTEGER NOT NULL,
    yellow                       INTEGER NOT NULL,
    red                          INTEGER NOT NULL,
    managed_customers            INTEGER NOT NULL,
    managed_usage_growth         REAL,
    unmanaged_usage_growth       REAL,
    managed_outcome_attainment   REAL,
    unmanaged_outcome_attainment REAL
) WITHOUT ROWID;
"#;

/// Upsert of one `customer_kpi` row: the primary key decides, every other
/// column is overwritten. Parameters in column order.
pub(crate) const UPSERT_CUSTOMER: &str = r#"
INSERT INTO customer_kpi (
    customer, "window", window_start, window_end, devices_purchased,
    reporting_devices, active_devices, utilisation, operating_hours, idle_hours,
    fuel_litres, cycles, output_units, manual_interventions, distinct_operators,
    advanced_features_used, advanced_feature_share, fault_count, samples
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
ON CONFLICT (customer, "window", window_start) DO UPDATE SET
    window_end = excluded.window_end,
    devices_purchased = excluded.devices_purchased,
    reporting_devices = excluded.reporting_devices,
    active_devices = excluded.active_devices,
    utilisation = excluded.utilisation,
    operating_hours = excluded.operating_hours,
    idle_hours = excluded.idle_hours,
    fuel_litres = excluded.fuel_litres,
    cycles = excluded.cycles,
    output_units = excluded.output_units,
    manual_interventions = excluded.manual_interventions,
    distinct_operators = excluded.distinct_operators,
    advanced_features_used = excluded.advanced_features_used,
    advanced_feature_share = excluded.advanced_feature_share,
    fault_count = excluded.fault_count,
    samples = excluded.samples
"#;

/// Upsert of one `device_kpi` row. Parameters in column order.
pub(crate) const UPSERT_DEVICE: &str = r#"
INSERT INTO device_kpi (
    customer, site, device, "window", window_start, window_end, utilisation,
    operating_hours, idle_hours, fuel_litres, cycles, output_units,
    manual_interventions, distinct_operators, fault_count, samples, last_seen,
    last_state
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
ON CONFLICT (customer, device, "window", window_start) DO UPDATE SET
    site = excluded.site,
    window_end = excluded.window_end,
    utilisation = excluded.utilisation,
    operating_hours = excluded.operating_hours,
    idle_hours = excluded.idle_hours,
    fuel_litres = excluded.fuel_litres,
    cycles = excluded.cycles,
    output_units = excluded.output_units,
    manual_interventions = excluded.manual_interventions,
    distinct_operators = excluded.distinct_operators,
    fault_count = excluded.fault_count,
    samples = excluded.samples,
    last_seen = excluded.last_seen,
    last_state = excluded.last_state
"#;

/// Select of one window's `customer_kpi` rows, in column order.
pub(crate) const SELECT_CUSTOMER: &str = r#"
SELECT customer, "window", window_start, window_end, devices_purchased,
    reporting_devices, active_devices, utilisation, operating_hours, idle_hours,
    fuel_litres, cycles, output_units, manual_interventions, distinct_operators,
    advanced_features_used, advanced_feature_share, fault_count, samples
FROM customer_kpi WHERE "window" = ?1
ORDER BY customer, window_start
"#;

/// Select of one window's `device_kpi` rows, in column order.
pub(crate) const SELECT_DEVICE: &str = r#"
SELECT customer, site, device, "window", window_start, window_end, utilisation,
    operating_hours, idle_hours, fuel_litres, cycles, output_units,
    manual_interventions, distinct_operators, fault_count, samples, last_seen,
    last_state
FROM device_kpi WHERE "window" = ?1
ORDER BY customer, device, window_start
"#;

/// Upsert of one `outcome` row. Parameters in column order.
pub(crate) const UPSERT_OUTCOME: &str = r#"
INSERT INTO outcome (
    customer, outcome, "window", window_start, window_end, value, target,
    direction, met, consecutive_met, consecutive_missed
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
ON CONFLICT (customer, outcome, "window", window_start) DO UPDATE SET
    window_end = excluded.window_end,
    value = excluded.value,
    target = excluded.target,
    direction = excluded.direction,
    met = excluded.met,
    consecutive_met = excluded.consecutive_met,
    consecutive_missed = excluded.consecutive_missed
"#;

/// Upsert of one `milestone` row. Parameters in column order.
pub(crate) const UPSERT_MILESTONE: &str = r#"
INSERT INTO milestone (
    customer, milestone, window_start, window_end, position, value_milestone,
    due_at, reached_at, status
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (customer, milestone, window_start) DO UPDATE SET
    window_end = excluded.window_end,
    position = excluded.position,
    value_milestone = excluded.value_milestone,
    due_at = excluded.due_at,
    reached_at = excluded.reached_at,
    status = excluded.status
"#;

/// Upsert of one `health` row. Parameters in column order.
pub(crate) const UPSERT_HEALTH: &str = r#"
INSERT INTO health (
    customer, window_start, window_end, score, band, score_trend, depth,
    breadth, utilisation, outcome_attainment, reliability, trend, maturity,
    stage, segment, arr, arr_at_risk, open_alerts, days_since_activation,
    days_to_renewal, time_to_value_days, usage_growth, milestones_reached,
    milestones_total
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
    ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)
ON CONFLICT (customer, window_start) DO UPDATE SET
    window_end = excluded.window_end,
    score = excluded.score,
    band = excluded.band,
    score_trend = excluded.score_trend,
    depth = excluded.depth,
    breadth = excluded.breadth,
    utilisation = excluded.utilisation,
    outcome_attainment = excluded.outcome_attainment,
    reliability = excluded.reliability,
    trend = excluded.trend,
    maturity = excluded.maturity,
    stage = excluded.stage,
    segment = excluded.segment,
    arr = excluded.arr,
    arr_at_risk = excluded.arr_at_risk,
    open_alerts = excluded.open_alerts,
    days_since_activation = excluded.days_since_activation,
    days_to_renewal = excluded.days_to_renewal,
    time_to_value_days = excluded.time_to_value_days,
    usage_growth = excluded.usage_growth,
    milestones_reached = excluded.milestones_reached,
    milestones_total = excluded.milestones_total
"#;

/// Upsert of one `alert` row: one row per episode. The resolve record
/// overwrites the open one; an `open` record never overwrites a `resolved`
/// row (a replayed open after the resolve), since an episode that resolved
/// stays resolved. Parameters in column order.
pub(crate) const UPSERT_ALERT: &str = r#"
INSERT INTO alert (
    customer, rule, episode, customer_name, status, opened_at, resolved_at,
    evidence, metric, threshold, stage, segment, arr_at_risk, next_action
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
ON CONFLICT (customer, rule, episode) DO UPDATE SET
    customer_name = excluded.customer_name,
    status = excluded.status,
    opened_at = excluded.opened_at,
    resolved_at = excluded.resolved_at,
    evidence = excluded.evidence,
    metric = excluded.metric,
    threshold = excluded.threshold,
    stage = excluded.stage,
    segment = excluded.segment,
    arr_at_risk = excluded.arr_at_risk,
    next_action = excluded.next_action
WHERE NOT (alert.status = 'resolved' AND excluded.status = 'open')
"#;

/// Upsert of one `portfolio` row. Parameters in column order.
pub(crate) const UPSERT_PORTFOLIO: &str = r#"
INSERT INTO portfolio (
    window_start, window_end, customers, arr_total, arr_at_risk, green, yellow,
    red, managed_customers, managed_usage_growth, unmanaged_usage_growth,
    managed_outcome_attainment, unmanaged_outcome_attainment
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (window_start) DO UPDATE SET
    window_end = excluded.window_end,
    customers = excluded.customers,
    arr_total = excluded.arr_total,
    arr_at_risk = excluded.arr_at_risk,
    green = excluded.green,
    yellow = excluded.yellow,
    red = excluded.red,
    managed_customers = excluded.managed_customers,
    managed_usage_growth = excluded.managed_usage_growth,
    unmanaged_usage_growth = excluded.unmanaged_usage_growth,
    managed_outcome_attainment = excluded.managed_outcome_attainment,
    unmanaged_outcome_attainment = excluded.unmanaged_outcome_attainment
"#;

/// The `outcome` columns, in the order the read API expects.
pub(crate) const OUTCOME_COLUMNS: &str = r#"customer, outcome, "window", window_start, window_end,
    value, target, direction, met, consecutive_met, consecutive_missed"#;

/// The `milestone` columns, in the order the read API expects.
pub(crate) const MILESTONE_COLUMNS: &str = "customer, milestone, window_start, window_end, \
    position, value_milestone, due_at, reached_at, status";

/// The `health` columns, in the order the read API expects.
pub(crate) const HEALTH_COLUMNS: &str = "customer, window_start, window_end, score, band, \
    score_trend, depth, breadth, utilisation, outcome_attainment, reliability, trend, \
    maturity, stage, segment, arr, arr_at_risk, open_alerts, days_since_activation, \
    days_to_renewal, time_to_value_days, usage_growth, milestones_reached, milestones_total";

/// The `alert` columns, in the order the read API expects.
pub(crate) const ALERT_COLUMNS: &str = "customer, rule, episode, customer_name, status, \
    opened_at, resolved_at, evidence, metric, threshold, stage, segment, arr_at_risk, \
    next_action";

/// The `portfolio` columns, in the order the read API expects.
pub(crate) const PORTFOLIO_COLUMNS: &str = "window_start, window_end, customers, arr_total, \
    arr_at_risk, green, yellow, red, managed_customers, managed_usage_growth, \
    unmanaged_usage_growth, managed_outcome_attainment, unmanaged_outcome_attainment";

/// Opens (creating if needed) the database at `path`: parent directories,
/// WAL journal mode, busy timeout, and the schema. Blocking.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, SinkError> {
    let shown = path.display().to_string();
    let open_err = |source| SinkError::SqliteOpen {
        path: shown.clone(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // A failure here shows up as SQLITE_CANTOPEN just below, with the path.
        let _ = std::fs::create_dir_all(parent);
    }
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %shown, journal_mode = %mode, "SQLite did not switch to WAL journal mode");
    }
    ensure_schema(&conn, &shown)?;
    Ok(conn)
}

/// Creates the tables if missing, migrates an older file to
/// [`SCHEMA_VERSION`] and refuses a newer one.
fn ensure_schema(conn: &Connection, path: &str) -> Result<(), SinkError> {
    let schema_err = |source| SinkError::SqliteSchema {
        path: path.to_owned(),
        source,
    };
    // Fast path, no write lock: the schema is there and current (readers
    // open the store while the sink writes).
    let current: rusqlite::Result<Option<i64>> =
        conn.query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get(0)
        });
    if matches!(current, Ok(Some(SCHEMA_VERSION))) {
        return Ok(());
    }
    // IMMEDIATE: two processes opening (or migrating) a file at once must
    // not both insert a version row or both migrate.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(schema_err)?;
    let result = (|| {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")
            .map_err(schema_err)?;
        // `max` over no rows is NULL: a fresh file.
        let found: Option<i64> = conn
            .query_row("SELECT max(version) FROM schema_version", [], |row| {
                row.get(0)
            })
            .map_err(schema_err)?;
        if let Some(found) = found.filter(|&v| v > SCHEMA_VERSION) {
            return Err(SinkError::SqliteSchemaVersion {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let from = found.unwrap_or(0);
        for (version, statements) in MIGRATIONS {
            if version > from {
                conn.execute_batch(statements).map_err(schema_err)?;
            }
        }
        if found.is_none() {
            conn.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )
            .map_err(schema_err)?;
        } else if from < SCHEMA_VERSION {
            conn.execute("UPDATE schema_version SET version = ?1", [SCHEMA_VERSION])
                .map_err(schema_err)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(schema_err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables of a file, sorted.
    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn version(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT version FROM schema_version").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// `(column, declared type)` of the table under `### \`table\`` in the
    /// SQLite section of docs/SCHEMA.md, e.g. `("cycles", "INTEGER NOT NULL")`.
    fn documented_columns(table: &str) -> Vec<(String, String)> {
        let doc = include_str!("../../../../docs/SCHEMA.md");
        let sqlite = &doc[doc.find("\n## SQLite\n").unwrap()..];
        let sqlite = &sqlite[..sqlite.find("\n## InfluxDB").unwrap()];
        let start = sqlite
            .find(&format!("### `{table}`\n"))
            .unwrap_or_else(|| panic!("docs/SCHEMA.md has no table `{table}`"));
        sqlite[start..]
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
            })
            .collect()
    }

    #[test]
    fn every_table_is_documented_column_by_column() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("kpi.sqlite")).unwrap();
        for table in tables(&conn) {
            if table == "schema_version" {
                continue;
            }
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT name, type, \"notnull\" FROM pragma_table_info('{table}') ORDER BY cid"
                ))
                .unwrap();
            let actual: Vec<(String, String)> = stmt
                .query_map([], |r| {
                    let ty: String = r.get(1)?;
                    let not_null: bool = r.get(2)?;
                    Ok((
                        r.get(0)?,
                        if not_null {
                            format!("{ty} NOT NULL")
                        } else {
                            ty
                        },
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(actual, documented_columns(&table), "table `{table}`");
        }
    }

    #[test]
    fn a_version_1_file_is_migrated_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpi.sqlite");
        {
            // A file as fleetpulse with schema version 1 left it.
            let v1 = Connection::open(&path).unwrap();
            v1.execute_batch(SCHEMA_V1).unwrap();
            v1.execute("INSERT INTO schema_version (version) VALUES (1)", [])
                .unwrap();
            v1.execute(
                "INSERT INTO customer_kpi VALUES \
                 ('acme', '1d', 0, 86400000, 4, 3, 2, 0.25, 3.0, 0.5, 41.25, 10, 120.0, 7, 2, 1, 0.5, 1, 360)",
                [],
            )
            .unwrap();
            assert_eq!(
                tables(&v1),
                ["customer_kpi", "device_kpi", "schema_version"]
            );
        }

        let conn = open_connection(&path).unwrap();
        assert_eq!(
            tables(&conn),
            [
                "alert",
                "customer_kpi",
                "device_kpi",
                "health",
                "milestone",
                "outcome",
                "portfolio",
                "schema_version"
            ]
        );
        assert_eq!(version(&conn), [SCHEMA_VERSION]);
        let cycles: i64 = conn
            .query_row("SELECT cycles FROM customer_kpi", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cycles, 10);
        drop(conn);

        // Opening again takes the fast path and changes nothing.
        let conn = open_connection(&path).unwrap();
        assert_eq!(version(&conn), [SCHEMA_VERSION]);
        assert_eq!(tables(&conn).len(), 8);
    }

    #[test]
    fn a_fresh_file_gets_every_table_at_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("kpi.sqlite")).unwrap();
        assert_eq!(tables(&conn).len(), 8);
        assert_eq!(version(&conn), [SCHEMA_VERSION]);
    }
}
