//! Reading KPI records back from the SQLite store, for the demo, the HTTP API
//! and tests. Blocking: call it from a blocking task inside async code.

use std::path::Path;

use fleetpulse_engine::{CustomerKpi, DeviceKpi, MachineState};
use rusqlite::types::Type;
use rusqlite::{Connection, Row};

use super::schema::{SELECT_CUSTOMER, SELECT_DEVICE, open_connection};
use crate::sinks::SinkError;

/// Read access to a SQLite KPI store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and schema if missing
    /// (so a reader may start before the sink has written anything).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, SinkError> {
        Ok(SqliteStore {
            conn: open_connection(path.as_ref())?,
        })
    }

    /// Every customer record of the window label `window` (e.g. `1h`),
    /// ordered by customer, then window start.
    pub fn customer_kpis(&self, window: &str) -> Result<Vec<CustomerKpi>, SinkError> {
        let mut stmt = self
            .conn
            .prepare_cached(SELECT_CUSTOMER)
            .map_err(SinkError::SqliteRead)?;
        let rows = stmt
            .query_map([window], customer_from_row)
            .map_err(SinkError::SqliteRead)?;
        rows.collect::<Result<_, _>>()
            .map_err(SinkError::SqliteRead)
    }

    /// Every device record of the window label `window`, ordered by customer,
    /// device, then window start.
    pub fn device_kpis(&self, window: &str) -> Result<Vec<DeviceKpi>, SinkError> {
        let mut stmt = self
            .conn
            .prepare_cached(SELECT_DEVICE)
            .map_err(SinkError::SqliteRead)?;
        let rows = stmt
            .query_map([window], device_from_row)
            .map_err(SinkError::SqliteRead)?;
        rows.collect::<Result<_, _>>()
            .map_err(SinkError::SqliteRead)
    }
}

/// A REAL column; NULL (stored for a non-finite value) reads back as NaN.
fn real(row: &Row<'_>, idx: usize) -> rusqlite::Result<f64> {
    Ok(row.get::<_, Option<f64>>(idx)?.unwrap_or(f64::NAN))
}

fn text(row: &Row<'_>, idx: usize) -> rusqlite::Result<std::sync::Arc<str>> {
    Ok(row.get::<_, String>(idx)?.into())
}

fn customer_from_row(row: &Row<'_>) -> rusqlite::Result<CustomerKpi> {
    Ok(CustomerKpi {
        customer: text(row, 0)?,
        window: text(row, 1)?,
        window_start: row.get(2)?,
        window_end: row.get(3)?,
        devices_purchased: row.get(4)?,
        reporting_devices: row.get(5)?,
        active_devices: row.get(6)?,
        utilisation: real(row, 7)?,
        operating_hours: real(row, 8)?,
        idle_hours: real(row, 9)?,
        fuel_litres: real(row, 10)?,
        cycles: row.get(11)?,
        output_units: real(row, 12)?,
        manual_interventions: row.get(13)?,
        distinct_operators: row.get(14)?,
        advanced_features_used: row.get(15)?,
        advanced_feature_share: real(row, 16)?,
        fault_count: row.get(17)?,
        samples: row.get(18)?,
    })
}

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<DeviceKpi> {
    let state: String = row.get(17)?;
    let last_state = parse_state(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            17,
            Type::Text,
            format!("unknown last_state `{state}`").into(),
        )
    })?;
    Ok(DeviceKpi {
        customer: text(row, 0)?,
        site: text(row, 1)?,
        device: text(row, 2)?,
        window: text(row, 3)?,
        window_start: row.get(4)?,
        window_end: row.get(5)?,
        utilisation: real(row, 6)?,
        operating_hours: real(row, 7)?,
        idle_hours: real(row, 8)?,
        fuel_litres: real(row, 9)?,
        cycles: row.get(10)?,
        output_units: real(row, 11)?,
        manual_interventions: row.get(12)?,
        distinct_operators: row.get(13)?,
        fault_count: row.get(14)?,
        samples: row.get(15)?,
        last_seen: row.get(16)?,
        last_state,
    })
}

/// Every machine state; [`_all_states_listed`] fails to compile when the
/// engine adds one that is missing here.
const ALL_STATES: [MachineState; 5] = [
    MachineState::Unknown,
    MachineState::Running,
    MachineState::Idle,
    MachineState::Off,
    MachineState::Fault,
];

fn _all_states_listed(state: MachineState) {
    match state {
        MachineState::Unknown
        | MachineState::Running
        | MachineState::Idle
        | MachineState::Off
        | MachineState::Fault => {}
    }
}

/// The state whose [`MachineState::as_str`] is `text`.
fn parse_state(text: &str) -> Option<MachineState> {
    ALL_STATES.into_iter().find(|s| s.as_str() == text)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fleetpulse_engine::Output;

    use super::*;
    use crate::sinks::fixtures::{customer, device};
    use crate::sinks::sqlite::schema::SCHEMA_VERSION;
    use crate::sinks::{Sink, SinkConfig, SqliteConfig};

    async fn open_sink(path: &Path) -> Sink {
        Sink::open(&SinkConfig::Sqlite(SqliteConfig {
            path: path.to_owned(),
        }))
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn round_trips_through_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/kpi.sqlite");
        let mut sink = open_sink(&path).await;
        assert_eq!(sink.describe(), format!("sqlite {}", path.display()));

        let t0 = 1_700_000_000_000;
        let records = vec![
            Output::Customer(customer("zeta", t0, 10)),
            Output::Device(device("exc-02", t0 + 3_600_000, MachineState::Fault)),
            Output::Customer(customer("acme", t0 + 3_600_000, 11)),
            Output::Customer(customer("acme", t0, 12)),
            Output::Device(device("exc-01", t0, MachineState::Running)),
            Output::Device(device("exc-02", t0, MachineState::Off)),
        ];
        sink.write(&records).await.unwrap();

        let store = SqliteStore::open(&path).unwrap();
        let customers = store.customer_kpis("1h").unwrap();
        assert_eq!(
            customers,
            vec![
                customer("acme", t0, 12),
                customer("acme", t0 + 3_600_000, 11),
                customer("zeta", t0, 10),
            ]
        );
        let devices = store.device_kpis("1h").unwrap();
        assert_eq!(
            devices,
            vec![
                device("exc-01", t0, MachineState::Running),
                device("exc-02", t0, MachineState::Off),
                device("exc-02", t0 + 3_600_000, MachineState::Fault),
            ]
        );
        assert!(store.customer_kpis("1d").unwrap().is_empty());

        let journal: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let version: i64 = store
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn rewriting_a_window_overwrites_every_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpi.sqlite");
        let mut sink = open_sink(&path).await;
        let t0 = 1_700_000_000_000;

        let first = customer("acme", t0, 10);
        let first_device = device("exc-01", t0, MachineState::Running);
        sink.write(&[
            Output::Customer(first.clone()),
            Output::Device(first_device),
        ])
        .await
        .unwrap();
        // The same records again (a replay) change nothing...
        sink.write(&[Output::Customer(first.clone())])
            .await
            .unwrap();

        // ...and a correction of the closed window overwrites all of it.
        let mut corrected = first.clone();
        corrected.cycles = 99;
        corrected.utilisation = 0.5;
        corrected.reporting_devices = 4;
        corrected.samples = 999;
        let mut corrected_device = device("exc-01", t0, MachineState::Idle);
        corrected_device.site = "south-pit".into();
        corrected_device.fuel_litres = 13.0;
        sink.write(&[
            Output::Customer(corrected.clone()),
            Output::Device(corrected_device.clone()),
        ])
        .await
        .unwrap();

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.customer_kpis("1h").unwrap(), vec![corrected]);
        assert_eq!(store.device_kpis("1h").unwrap(), vec![corrected_device]);
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpi.sqlite");
        let t0 = 1_700_000_000_000;
        {
            let mut sink = open_sink(&path).await;
            sink.write(&[Output::Customer(customer("acme", t0, 1))])
                .await
                .unwrap();
        }
        let mut sink = open_sink(&path).await;
        sink.write(&[Output::Customer(customer("acme", t0 + 1, 2))])
            .await
            .unwrap();
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.customer_kpis("1h").unwrap().len(), 2);
        let versions: i64 = store
            .conn
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, 1);

        store
            .conn
            .execute(
                "UPDATE schema_version SET version = ?1",
                [SCHEMA_VERSION + 1],
            )
            .unwrap();
        drop(store);
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(err, SinkError::SqliteSchemaVersion { found, .. } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn non_finite_floats_read_back_as_nan_and_ids_keep_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpi.sqlite");
        let mut sink = open_sink(&path).await;
        let mut kpi = customer("Bäckerei Müller, \"Süd\" = 北", 0, 1);
        kpi.utilisation = f64::NAN;
        kpi.window = Arc::from("1h");
        sink.write(&[Output::Customer(kpi.clone())]).await.unwrap();

        let back = SqliteStore::open(&path)
            .unwrap()
            .customer_kpis("1h")
            .unwrap();
        assert_eq!(back.len(), 1);
        assert!(back[0].utilisation.is_nan());
        assert_eq!(back[0].customer, kpi.customer);
        assert_eq!(back[0].fuel_litres, kpi.fuel_litres);
    }

    #[test]
    fn every_state_parses_back() {
        for state in ALL_STATES {
            assert_eq!(parse_state(state.as_str()), Some(state));
        }
        assert_eq!(parse_state("exploded"), None);
    }
}
