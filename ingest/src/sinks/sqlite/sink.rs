//! Writing KPI records to SQLite.

use std::path::PathBuf;

use fleetpulse_engine::{CustomerKpi, DeviceKpi, Output};
use rusqlite::{Connection, params};

use super::SqliteConfig;
use super::schema::{UPSERT_CUSTOMER, UPSERT_DEVICE, open_connection};
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
    /// with the same primary key are overwritten in every column.
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

/// Upserts every record in one transaction. Blocking.
pub(crate) fn write_batch(conn: &mut Connection, records: &[Output]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut customer = tx.prepare_cached(UPSERT_CUSTOMER)?;
        let mut device = tx.prepare_cached(UPSERT_DEVICE)?;
        for record in records {
            match record {
                Output::Customer(k) => upsert_customer(&mut customer, k)?,
                Output::Device(k) => upsert_device(&mut device, k)?,
            };
        }
    }
    tx.commit()
}

fn upsert_customer(
    stmt: &mut rusqlite::CachedStatement<'_>,
    k: &CustomerKpi,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        &*k.customer,
        &*k.window,
        k.window_start,
        k.window_end,
        k.devices_purchased,
        k.reporting_devices,
        k.active_devices,
        k.utilisation,
        k.operating_hours,
        k.idle_hours,
        k.fuel_litres,
        k.cycles,
        k.output_units,
        k.manual_interventions,
        k.distinct_operators,
        k.advanced_features_used,
        k.advanced_feature_share,
        k.fault_count,
        k.samples,
    ])
}

fn upsert_device(
    stmt: &mut rusqlite::CachedStatement<'_>,
    k: &DeviceKpi,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        &*k.customer,
        &*k.site,
        &*k.device,
        &*k.window,
        k.window_start,
        k.window_end,
        k.utilisation,
        k.operating_hours,
        k.idle_hours,
        k.fuel_litres,
        k.cycles,
        k.output_units,
        k.manual_interventions,
        k.distinct_operators,
        k.fault_count,
        k.samples,
        k.last_seen,
        k.last_state.as_str(),
    ])
}
