//! The SQLite schema, derived from the record definitions (`crate::records`,
//! which also generate its tables in `docs/SCHEMA.md`), and the connection
//! set-up shared by the sink and the read API.
//!
//! Times are INTEGER milliseconds since the Unix epoch, UTC. Ratios, hours,
//! scores and money are REAL; SQLite stores NaN as NULL, so a REAL column is
//! NULL when the value was not finite (an undefined outcome value is NaN),
//! and read back as NaN. The optional values (`outcome_attainment`,
//! `maturity`, `time_to_value_days`, `reached_at`, `resolved_at`) are NULL
//! when absent and read back as `None`. Booleans are INTEGER 0 or 1, enums
//! TEXT with the engine's serde names. `window` is an SQL keyword, so it is
//! always written quoted: `"window"`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use rusqlite::Connection;

use crate::records::{self, KindVisitor, RecordKind, Role};
use crate::sinks::SinkError;

/// The schema version this build writes and reads, kept in the one-row table
/// `schema_version`. Version 1: `customer_kpi`, `device_kpi`. Version 2 adds
/// the customer-success tables `outcome`, `milestone`, `health`, `alert` and
/// `portfolio`. Version 3 keys `alert` by (customer, rule, opened_at)
/// instead of the episode count. A build refuses a file of a higher version.
/// The `touchpoint` and `contract_event` tables (not engine outputs) and the
/// `forecast` table came later without a new version: each only adds a
/// table, which older builds ignore and an older file gains when it is
/// opened.
pub const SCHEMA_VERSION: i64 = 3;

/// How long a statement waits for another connection's lock before failing
/// with `SQLITE_BUSY` (which the sink then retries).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `name` quoted as an SQL identifier (`window` is a keyword).
fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// The column list of `R`, quoted, in stored order.
fn column_list<R: RecordKind>() -> String {
    let names: Vec<String> = R::COLUMNS.iter().map(|c| quoted(c.name)).collect();
    names.join(", ")
}

/// `CREATE TABLE IF NOT EXISTS` for `R`: one column per definition, the key
/// columns as primary key, `WITHOUT ROWID`.
pub fn create_table<R: RecordKind>() -> String {
    let columns: Vec<String> = R::COLUMNS
        .iter()
        .map(|c| format!("    {} {}", quoted(c.name), c.ty.sql()))
        .collect();
    let key: Vec<String> = R::COLUMNS
        .iter()
        .filter(|c| c.is(Role::Key))
        .map(|c| quoted(c.name))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{},\n    PRIMARY KEY ({})\n) WITHOUT ROWID;\n",
        quoted(R::NAME),
        columns.join(",\n"),
        key.join(", ")
    )
}

/// Upsert of one `R` row: the primary key decides, every other column is
/// overwritten (when [`RecordKind::OVERWRITE_IF`] holds). Parameters in
/// column order.
pub(crate) fn upsert<R: RecordKind>() -> String {
    let table = quoted(R::NAME);
    let params: Vec<String> = (1..=R::COLUMNS.len()).map(|i| format!("?{i}")).collect();
    let key: Vec<String> = R::COLUMNS
        .iter()
        .filter(|c| c.is(Role::Key))
        .map(|c| quoted(c.name))
        .collect();
    let set: Vec<String> = R::COLUMNS
        .iter()
        .filter(|c| !c.is(Role::Key))
        .map(|c| format!("{0} = excluded.{0}", quoted(c.name)))
        .collect();
    let action = if set.is_empty() {
        "NOTHING".to_owned()
    } else {
        format!("UPDATE SET {}", set.join(", "))
    };
    let guard = R::OVERWRITE_IF.map_or(String::new(), |c| format!(" WHERE {c}"));
    format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}{guard}",
        column_list::<R>(),
        params.join(", "),
        key.join(", ")
    )
}

/// The SQL of every kind, built once.
struct Statements {
    /// Upsert per table name.
    upsert: HashMap<&'static str, String>,
    /// `SELECT <columns> FROM <table>` per table name.
    select: HashMap<&'static str, String>,
    /// Every `CREATE TABLE`.
    create: Vec<String>,
}

impl KindVisitor for Statements {
    fn kind<R: RecordKind>(&mut self) {
        self.upsert.insert(R::NAME, upsert::<R>());
        self.select.insert(
            R::NAME,
            format!("SELECT {} FROM {}", column_list::<R>(), quoted(R::NAME)),
        );
        self.create.push(create_table::<R>());
    }
}

fn statements() -> &'static Statements {
    static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
        let mut s = Statements {
            upsert: HashMap::new(),
            select: HashMap::new(),
            create: Vec::new(),
        };
        records::each_kind(&mut s);
        s
    });
    &STATEMENTS
}

/// The upsert of `R`'s table.
pub(crate) fn upsert_sql<R: RecordKind>() -> &'static str {
    &statements().upsert[R::NAME]
}

/// `SELECT <every column of R> FROM <R's table>`, to be followed by `WHERE`
/// and `ORDER BY` clauses.
pub(crate) fn select_sql<R: RecordKind>() -> &'static str {
    &statements().select[R::NAME]
}

/// The columns of `R` that its table in `conn` lacks, as `ADD COLUMN`
/// definitions, with a default for `NOT NULL` columns so that rows already
/// there (and writers that predate the column) stay valid. None when the
/// table does not exist yet (`create_table` makes it whole).
pub(crate) fn missing_columns_of<R: RecordKind>(
    conn: &Connection,
) -> rusqlite::Result<Vec<String>> {
    let present: Vec<String> = conn
        .prepare_cached("SELECT name FROM pragma_table_info(?1)")?
        .query_map([R::NAME], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if present.is_empty() {
        return Ok(Vec::new());
    }
    Ok(R::COLUMNS
        .iter()
        .filter(|c| !present.iter().any(|p| p == c.name))
        .map(|c| {
            // The rows written before the column existed read as the
            // field's "unknown": 0 or '' (a plain float too), NULL for an
            // optional field.
            let default = match (c.ty.sql(), c.ty.optional) {
                ("INTEGER NOT NULL", _) => " DEFAULT 0",
                ("TEXT NOT NULL", _) => " DEFAULT ''",
                ("REAL", false) => " DEFAULT 0",
                _ => "",
            };
            format!("{} {}{default}", quoted(c.name), c.ty.sql())
        })
        .collect())
}

/// Columns of every kind that `conn`'s tables lack: `(table, column
/// definition)`.
fn missing_columns(conn: &Connection) -> rusqlite::Result<Vec<(&'static str, String)>> {
    struct Missing<'c> {
        conn: &'c Connection,
        found: rusqlite::Result<Vec<(&'static str, String)>>,
    }
    impl KindVisitor for Missing<'_> {
        fn kind<R: RecordKind>(&mut self) {
            if let Ok(found) = &mut self.found {
                match missing_columns_of::<R>(self.conn) {
                    Ok(columns) => found.extend(columns.into_iter().map(|c| (R::NAME, c))),
                    Err(e) => self.found = Err(e),
                }
            }
        }
    }
    let mut v = Missing {
        conn,
        found: Ok(Vec::new()),
    };
    records::each_kind(&mut v);
    v.found
}

/// Opens (creating if needed) the database at `path`: parent directories,
/// WAL journal mode, busy timeout, and the schema. Blocking.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, SinkError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // A failure here shows up as SQLITE_CANTOPEN just below, with the path.
        let _ = std::fs::create_dir_all(parent);
    }
    set_up(path, Connection::open(path))
}

/// Opens the database at `path` only if it exists: a reader's open, which
/// must not make an empty store where a path is mistyped, nor one from the
/// log a removed file left behind (the sink starts that file again).
/// Blocking.
pub(crate) fn open_existing(path: &Path) -> Result<Connection, SinkError> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    match Connection::open_with_flags(path, flags) {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::CannotOpen && !path.exists() =>
        {
            Err(SinkError::SqliteMissing {
                path: path.display().to_string(),
            })
        }
        Ok(conn) => match not_another_database(&conn, path).and_then(|()| set_up(path, Ok(conn))) {
            Err(e) if on_read_only_mount(path) => open_read_only(path, e),
            done => done,
        },
        Err(e) => match set_up(path, Err(e)) {
            Err(e) if on_read_only_mount(path) => open_read_only(path, e),
            failed => failed,
        },
    }
}

/// Whether `path` lies on a file system mounted read-only, where SQLite
/// cannot make the shared-memory file its WAL journal mode needs.
fn on_read_only_mount(path: &Path) -> bool {
    rustix::fs::statvfs(path)
        .is_ok_and(|fs| fs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// Opens a store on a read-only mount (a backup, a snapshot) for reading:
/// as immutable when no write-ahead log beside it holds anything, else
/// read-only with the log's shared memory, which SQLite can read only
/// where it finds it. Its schema must be this build's: an upgrade needs a
/// write. `first`: the error of the ordinary open, said when this fails
/// too for another reason.
fn open_read_only(path: &Path, first: SinkError) -> Result<Connection, SinkError> {
    use rusqlite::OpenFlags;
    let shown = path.display().to_string();
    let refuse = |why: String| SinkError::SqliteReadOnly {
        path: shown.clone(),
        why,
    };
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    let logged = std::fs::metadata(&log).is_ok_and(|m| m.len() > 0);
    let uri = format!(
        "file:{}{}",
        uri_path(path),
        if logged { "" } else { "?immutable=1" }
    );
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match Connection::open_with_flags(uri, flags) {
        Ok(conn) => conn,
        Err(_) => return Err(first),
    };
    let version: rusqlite::Result<Option<i64>> =
        conn.query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get(0)
        });
    match version {
        Ok(Some(SCHEMA_VERSION)) if tables_complete(&conn).unwrap_or(false) => Ok(conn),
        Ok(found) => Err(refuse(format!(
            "has schema version {}, this build reads {SCHEMA_VERSION}: open it once where it \
             can be written to upgrade it, or read it with the build that wrote it",
            found.unwrap_or(0)
        ))),
        Err(_) if logged => Err(refuse(format!(
            "its write-ahead log {} holds what is not yet in the file, which SQLite reads only \
             with write access beside it: copy the store and its log to a writable place",
            std::path::Path::new(&log).display()
        ))),
        Err(_) => not_another_database(&conn, path).and(Err(first)),
    }
}

/// `path` as the path of an SQLite `file:` URI: every byte but the
/// unreserved ones and `/` percent-encoded (a `?` or `#` in a directory
/// name would start the query or fragment).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Refuses a file a reader was pointed at that holds no store: an empty
/// file, or another program's database, which setting up would fill with
/// this schema and switch to WAL journal mode.
fn not_another_database(conn: &Connection, path: &Path) -> Result<(), SinkError> {
    let shown = path.display().to_string();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|source| SinkError::SqliteOpen {
            path: shown.clone(),
            source,
            disk: super::DiskNote::of(path),
        })?;
    if tables.iter().any(|t| t == "schema_version") {
        return Ok(());
    }
    let found = match tables.len() {
        0 => "it holds no table (an empty file?)".to_string(),
        n => {
            let some: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
            let more = if n > 5 {
                format!(" and {} more", n - 5)
            } else {
                String::new()
            };
            format!(
                "it holds other tables ({}{more}), none of this schema",
                some.join(", ")
            )
        }
    };
    Err(SinkError::SqliteNotAStore { path: shown, found })
}

/// The settings and schema every connection gets.
fn set_up(path: &Path, opened: rusqlite::Result<Connection>) -> Result<Connection, SinkError> {
    let shown = path.display().to_string();
    let open_err = |source| SinkError::SqliteOpen {
        path: shown.clone(),
        source,
        disk: super::DiskNote::of(path),
    };
    let conn = opened.map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let mode = wal_mode(&conn).map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %shown, journal_mode = %mode, "SQLite did not switch to WAL journal mode");
    }
    ensure_schema(&conn, &shown)?;
    Ok(conn)
}

/// Switches the file to WAL journal mode; returns the mode it is in. The
/// switch of a fresh file takes its exclusive lock, and SQLite answers
/// "database is locked" at once, without the busy timeout, to a second
/// process doing the same: retried here for as long as that timeout.
fn wal_mode(conn: &Connection) -> rusqlite::Result<String> {
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            done => return done,
        }
    }
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
    if matches!(current, Ok(Some(SCHEMA_VERSION))) && tables_complete(conn).map_err(schema_err)? {
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
        // Every migration so far only adds: the tables a file lacks, then
        // the columns its tables lack.
        for create in &statements().create {
            conn.execute_batch(create).map_err(schema_err)?;
        }
        for (table, column) in missing_columns(conn).map_err(schema_err)? {
            tracing::info!(path, table, column = %column, "adding a column to the KPI store");
            conn.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN {column}",
                quoted(table)
            ))
            .map_err(schema_err)?;
        }
        let mut rekey = Rekey {
            conn,
            path,
            result: Ok(()),
        };
        records::each_kind(&mut rekey);
        rekey.result.map_err(schema_err)?;
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

/// The primary key columns of `table` in `conn`, in key order.
fn primary_key(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?
        .query_map([table], |r| r.get(0))?
        .collect()
}

/// The key columns of `R`'s definition.
fn key_of<R: RecordKind>() -> Vec<String> {
    R::COLUMNS
        .iter()
        .filter(|c| c.is(Role::Key))
        .map(|c| c.name.to_owned())
        .collect()
}

/// Rebuilds each table whose primary key is not its definition's (an older
/// file), keeping its rows: renamed, created anew, copied in old key order
/// (where two old rows share the new key, the later one stays), dropped.
struct Rekey<'c> {
    conn: &'c Connection,
    path: &'c str,
    result: rusqlite::Result<()>,
}

impl KindVisitor for Rekey<'_> {
    fn kind<R: RecordKind>(&mut self) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            let old = primary_key(self.conn, R::NAME)?;
            if old.is_empty() || old == key_of::<R>() {
                return Ok(());
            }
            tracing::info!(
                path = self.path,
                table = R::NAME,
                from = ?old,
                to = ?key_of::<R>(),
                "re-keying a table of the KPI store"
            );
            let table = quoted(R::NAME);
            let moved = quoted(&format!("{}_rekey", R::NAME));
            let old_order: Vec<String> = old.iter().map(|c| quoted(c)).collect();
            self.conn.execute_batch(&format!(
                "ALTER TABLE {table} RENAME TO {moved};\n{}\
                 INSERT OR REPLACE INTO {table} ({columns}) \
                 SELECT {columns} FROM {moved} ORDER BY {order};\n\
                 DROP TABLE {moved};",
                create_table::<R>(),
                columns = column_list::<R>(),
                order = old_order.join(", "),
            ))
        })();
    }
}

/// Whether every table of the definitions exists with every column and its
/// definition's primary key.
fn tables_complete(conn: &Connection) -> rusqlite::Result<bool> {
    let mut stmt = conn
        .prepare_cached("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1")?;
    for table in statements().select.keys() {
        if stmt.query_row([table], |r| r.get::<_, i64>(0))? == 0 {
            return Ok(false);
        }
    }
    struct Keys<'c>(&'c Connection, rusqlite::Result<bool>);
    impl KindVisitor for Keys<'_> {
        fn kind<R: RecordKind>(&mut self) {
            if let Ok(true) = self.1 {
                self.1 = primary_key(self.0, R::NAME).map(|k| k == key_of::<R>());
            }
        }
    }
    let mut keys = Keys(conn, Ok(true));
    records::each_kind(&mut keys);
    Ok(keys.1? && missing_columns(conn)?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes started together on one store (a cluster's members, a
    /// unit and its timer) all open a fresh file: none may fail with
    /// "database is locked" while another switches it to WAL or creates
    /// its tables.
    #[test]
    fn many_opening_a_fresh_file_at_once_all_open_it() {
        for round in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("kpi.sqlite");
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        open_connection(&path).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                let opened = opener.join().unwrap();
                assert!(opened.is_ok(), "round {round}: {:?}", opened.err());
            }
        }
    }

    /// Version 1 of the schema, as fleetpulse wrote it: the two tables of
    /// then, whose columns the definitions still have unchanged.
    fn schema_v1() -> String {
        // Without the columns added since (`revision`).
        format!(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);\n{}{}",
            create_table::<fleetpulse_engine::CustomerKpi>(),
            create_table::<fleetpulse_engine::DeviceKpi>()
        )
        .replace(",\n    \"revision\" INTEGER NOT NULL", "")
    }

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
        crate::records::docs::table_rows(doc, &format!("`{table}`"))
            .into_iter()
            .map(|row| (row[0].clone(), row[1].clone()))
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
            v1.execute_batch(&schema_v1()).unwrap();
            v1.execute("INSERT INTO schema_version (version) VALUES (1)", [])
                .unwrap();
            v1.execute(
                "INSERT INTO customer_kpi (customer, window, window_start, window_end, \
                 devices_purchased, reporting_devices, active_devices, utilisation, \
                 operating_hours, idle_hours, fuel_litres, cycles, output_units, \
                 manual_interventions, distinct_operators, advanced_features_used, \
                 advanced_feature_share, fault_count, samples) VALUES \
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
                "contract_event",
                "customer_kpi",
                "device_kpi",
                "forecast",
                "health",
                "milestone",
                "outcome",
                "portfolio",
                "schema_version",
                "touchpoint"
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
        assert_eq!(tables(&conn).len(), 11);
    }

    #[test]
    fn a_fresh_file_gets_every_table_at_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("kpi.sqlite")).unwrap();
        assert_eq!(tables(&conn).len(), 11);
        assert_eq!(version(&conn), [SCHEMA_VERSION]);
    }
}
