//! The SQLite schema (documented in `docs/SCHEMA.md`; keep the two in step)
//! and the connection set-up shared by the sink and the read API.
//!
//! Times are INTEGER milliseconds since the Unix epoch, UTC. Ratios and hours
//! are REAL; a REAL column is NULL only if the engine produced a non-finite
//! value (SQLite stores NaN as NULL). `window` is an SQL keyword, so it is
//! always written quoted: `"window"`.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::sinks::SinkError;

/// The schema version this build writes and reads, kept in the one-row table
/// `schema_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for another connection's lock before failing
/// with `SQLITE_BUSY` (which the sink then retries).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Version 1 of the schema. Every statement is idempotent.
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

/// Creates the tables if missing and checks the schema version.
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
    // IMMEDIATE: two processes opening a fresh file at once must not both
    // insert a version row.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(schema_err)?;
    let result = (|| {
        conn.execute_batch(SCHEMA_V1).map_err(schema_err)?;
        // `max` over no rows is NULL: a fresh file.
        let found: Option<i64> = conn
            .query_row("SELECT max(version) FROM schema_version", [], |row| {
                row.get(0)
            })
            .map_err(schema_err)?;
        match found {
            None => {
                conn.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(schema_err)?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(SinkError::SqliteSchemaVersion {
                    path: path.to_owned(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(_) => {}
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
