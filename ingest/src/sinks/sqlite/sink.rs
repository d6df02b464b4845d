//! Writing KPI records to SQLite.

use std::path::PathBuf;

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
}

impl SqliteSink {
    /// Opens or creates the database file and its schema, in WAL mode.
    pub async fn open(config: &SqliteConfig) -> Result<SqliteSink, SinkError> {
        let path = config.path.clone();
        let conn = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || open_connection(&path))
                .await
                .map_err(SinkError::SqliteTask)??
        };
        Ok(SqliteSink {
            path,
            conn: Some(conn),
        })
    }

    /// Writes the batch in one transaction (all or nothing); existing rows
    /// with the same primary key are overwritten in every column (except
    /// that an open alert never overwrites its resolved episode).
    pub async fn write(&mut self, records: &[Output]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let conn = self.conn.take();
        let path = self.path.clone();
        let records = records.to_vec();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let mut conn = match conn {
                Some(conn) => conn,
                None => match open_connection(&path) {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err(e)),
                },
            };
            let result = write_batch(&mut conn, &records).map_err(SinkError::SqliteWrite);
            (Some(conn), result)
        })
        .await
        .map_err(SinkError::SqliteTask)?;
        self.conn = conn;
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
