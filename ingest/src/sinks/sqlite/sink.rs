//! Writing KPI records to SQLite.

use std::path::PathBuf;

use fleetpulse_engine::{
    AlertRecord, CustomerKpi, DeviceKpi, HealthRecord, MilestoneRecord, OutcomeRecord, Output,
    PortfolioRecord,
};
use rusqlite::{CachedStatement, Connection, params};

use super::SqliteConfig;
use super::schema::{
    UPSERT_ALERT, UPSERT_CUSTOMER, UPSERT_DEVICE, UPSERT_HEALTH, UPSERT_MILESTONE, UPSERT_OUTCOME,
    UPSERT_PORTFOLIO, open_connection,
};
use crate::sinks::SinkError;
use crate::sinks::names::direction_str;

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
        // Cached: each statement is compiled once per connection.
        let mut customer = tx.prepare_cached(UPSERT_CUSTOMER)?;
        let mut device = tx.prepare_cached(UPSERT_DEVICE)?;
        let mut outcome = tx.prepare_cached(UPSERT_OUTCOME)?;
        let mut milestone = tx.prepare_cached(UPSERT_MILESTONE)?;
        let mut health = tx.prepare_cached(UPSERT_HEALTH)?;
        let mut alert = tx.prepare_cached(UPSERT_ALERT)?;
        let mut portfolio = tx.prepare_cached(UPSERT_PORTFOLIO)?;
        for record in records {
            match record {
                Output::Customer(k) => upsert_customer(&mut customer, k)?,
                Output::Device(k) => upsert_device(&mut device, k)?,
                Output::Outcome(r) => upsert_outcome(&mut outcome, r)?,
                Output::Milestone(r) => upsert_milestone(&mut milestone, r)?,
                Output::Health(r) => upsert_health(&mut health, r)?,
                Output::Alert(r) => upsert_alert(&mut alert, r)?,
                Output::Portfolio(r) => upsert_portfolio(&mut portfolio, r)?,
            };
        }
    }
    tx.commit()
}

fn upsert_customer(stmt: &mut CachedStatement<'_>, k: &CustomerKpi) -> rusqlite::Result<usize> {
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

fn upsert_device(stmt: &mut CachedStatement<'_>, k: &DeviceKpi) -> rusqlite::Result<usize> {
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

fn upsert_outcome(stmt: &mut CachedStatement<'_>, r: &OutcomeRecord) -> rusqlite::Result<usize> {
    stmt.execute(params![
        &*r.customer,
        &*r.outcome,
        &*r.window,
        r.window_start,
        r.window_end,
        r.value,
        r.target,
        direction_str(r.direction),
        r.met,
        r.consecutive_met,
        r.consecutive_missed,
    ])
}

fn upsert_milestone(
    stmt: &mut CachedStatement<'_>,
    r: &MilestoneRecord,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        &*r.customer,
        &*r.milestone,
        r.window_start,
        r.window_end,
        r.position,
        r.value_milestone,
        r.due_at,
        r.reached_at,
        r.status.as_str(),
    ])
}

fn upsert_health(stmt: &mut CachedStatement<'_>, r: &HealthRecord) -> rusqlite::Result<usize> {
    let c = &r.components;
    stmt.execute(params![
        &*r.customer,
        r.window_start,
        r.window_end,
        r.score,
        r.band.as_str(),
        r.score_trend,
        c.depth,
        c.breadth,
        c.utilisation,
        c.outcome,
        c.reliability,
        c.trend,
        c.maturity,
        r.stage.as_str(),
        r.segment.as_str(),
        r.arr,
        r.arr_at_risk,
        r.open_alerts,
        r.days_since_activation,
        r.days_to_renewal,
        r.time_to_value_days,
        r.usage_growth,
        r.milestones_reached,
        r.milestones_total,
    ])
}

fn upsert_alert(stmt: &mut CachedStatement<'_>, r: &AlertRecord) -> rusqlite::Result<usize> {
    stmt.execute(params![
        &*r.customer,
        r.rule.as_str(),
        r.episode,
        &*r.customer_name,
        r.status.as_str(),
        r.opened_at,
        r.resolved_at,
        &r.evidence,
        r.metric,
        r.threshold,
        r.stage.as_str(),
        r.segment.as_str(),
        r.arr_at_risk,
        &r.next_action,
    ])
}

fn upsert_portfolio(
    stmt: &mut CachedStatement<'_>,
    r: &PortfolioRecord,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        r.window_start,
        r.window_end,
        r.customers,
        r.arr_total,
        r.arr_at_risk,
        r.green,
        r.yellow,
        r.red,
        r.managed_customers,
        r.managed_usage_growth,
        r.unmanaged_usage_growth,
        r.managed_outcome_attainment,
        r.unmanaged_outcome_attainment,
    ])
}
