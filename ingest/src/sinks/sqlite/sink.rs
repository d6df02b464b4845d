//! Writing KPI records to SQLite.

use std::path::{Path, PathBuf};

use fleetpulse_engine::Output;
use rusqlite::Connection;

use super::SqliteConfig;
use super::schema::{open_connection, upsert_sql};
use crate::records::{RecordKind, RecordVisitor, with_record};
use crate::sinks::SinkError;

/// An open SQLite sink. The connection lives here between writes and moves
/// into a blocking task for each one.
#[derive(Debug)]
pub struct SqliteSink {
    path: PathBuf,
    /// `None` only after a blocking task was lost (panicked or cancelled);
    /// the next write reopens the file.
    conn: Option<Connection>,
    /// The identity of the file `conn` writes to.
    file: Option<crate::files::FileId>,
}

/// The connection to write with: `conn` while the file at `path` is still
/// the one it opened (`file`). A file removed or replaced meanwhile (`rm
/// kpi.sqlite` to start afresh) would take every later record with it,
/// unseen: the old connection's log is folded into the old file and
/// emptied, the connection closed, a log a removed file left behind is
/// removed, and the path opened again: a new file where there is none; a
/// file there that is no database fails each write (retried: the records
/// wait) until the operator moves it. Blocking.
fn connection(
    path: &Path,
    conn: Option<Connection>,
    file: Option<crate::files::FileId>,
) -> Result<(Connection, Option<crate::files::FileId>), SinkError> {
    let now = crate::files::id(path);
    match conn {
        // A file that could not be told apart at its opening is kept.
        Some(conn) if file.is_none() || now == file => return Ok((conn, file)),
        Some(conn) => {
            let then = match now {
                None => "a new file is started there",
                Some(_) => "the file now there is written to",
            };
            tracing::error!(
                path = %path.display(),
                "the store's file was removed or replaced while the service wrote to it: {then}, \
                 without what was written before (the service does not write that again; \
                 `fleetpulse backfill` or `fleetpulse replay` fills past days)"
            );
            // Folded into the old file and emptied through the connection's
            // own handle: a log left at the path would be read as the new
            // file's (a file that is no database would then take writes
            // over its own bytes, and a backup put there would show the
            // old file's last pages).
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(path = %path.display(), error = %e,
                    "the replaced store's log could not be emptied");
            }
            drop(conn);
            if !path.exists() {
                for log in ["-wal", "-shm"] {
                    let mut name = path.as_os_str().to_owned();
                    name.push(log);
                    let _ = std::fs::remove_file(PathBuf::from(name));
                }
            }
        }
        None => {}
    }
    let conn = open_connection(path)?;
    Ok((conn, crate::files::id(path)))
}

impl SqliteSink {
    /// Opens or creates the database file and its schema, in WAL mode.
    pub async fn open(config: &SqliteConfig) -> Result<SqliteSink, SinkError> {
        let path = config.path.clone();
        let (conn, file) = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || connection(&path, None, None))
                .await
                .map_err(SinkError::SqliteTask)??
        };
        Ok(SqliteSink {
            path,
            conn: Some(conn),
            file,
        })
    }

    /// Writes the batch in one transaction (all or nothing); existing rows
    /// with the same primary key are overwritten in every column (except
    /// that an open alert never overwrites its resolved episode).
    pub async fn write(&mut self, records: &[Output]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let (conn, file) = (self.conn.take(), self.file);
        let path = self.path.clone();
        let records = records.to_vec();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let (mut conn, file) = match connection(&path, conn, file) {
                Ok(opened) => opened,
                Err(e) => return (None, Err(e)),
            };
            let result = write_batch(&mut conn, &records).map_err(SinkError::SqliteWrite);
            (Some((conn, file)), result)
        })
        .await
        .map_err(SinkError::SqliteTask)?;
        let (conn, file) = conn.unzip();
        (self.conn, self.file) = (conn, file.flatten());
        result
    }

    /// `sqlite <path>`.
    pub fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }
}

/// Upserts every record in one transaction, in order. Blocking.
pub(crate) fn write_batch(conn: &mut Connection, records: &[Output]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = Upsert { tx: &tx };
        for record in records {
            with_record(record, &mut upsert)?;
        }
    }
    tx.commit()
}

/// Writes one record with its kind's upsert.
struct Upsert<'t> {
    tx: &'t rusqlite::Transaction<'t>,
}

impl RecordVisitor for Upsert<'_> {
    type Out = rusqlite::Result<usize>;

    fn record<R: RecordKind>(&mut self, record: &R) -> Self::Out {
        // Cached: each statement is compiled once per connection.
        let mut stmt = self.tx.prepare_cached(upsert_sql::<R>())?;
        stmt.execute(rusqlite::params_from_iter(record.values()))
    }
}
