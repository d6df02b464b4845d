//! Reading KPI records back from the SQLite store, for the demo, the HTTP API
//! and tests. Blocking: call it from a blocking task inside async code.

use std::path::Path;

use fleetpulse_engine::kpi::revenue_retention::RecordedContractEvent;
use fleetpulse_engine::kpi::touchpoint::Touchpoint;
use fleetpulse_engine::{
    AlertRecord, CustomerKpi, DeviceKpi, ForecastRecord, HealthRecord, MilestoneRecord,
    OutcomeRecord, PortfolioRecord,
};
use rusqlite::{Connection, Params};

use super::schema::{open_connection, open_existing, select_sql, upsert_sql};
use crate::records::{RecordKind, Role};
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

    /// Opens the store at `path` only if the file exists
    /// ([`SinkError::SqliteMissing`] if not): for readers that must not
    /// make one (a command given a mistyped path, the API while the file
    /// is removed).
    pub fn open_existing(path: impl AsRef<Path>) -> Result<SqliteStore, SinkError> {
        Ok(SqliteStore {
            conn: open_existing(path.as_ref())?,
        })
    }

    /// Every customer record of the window label `window` (e.g. `1h`),
    /// ordered by customer, then window start.
    pub fn customer_kpis(&self, window: &str) -> Result<Vec<CustomerKpi>, SinkError> {
        self.select(
            r#"WHERE "window" = ?1 ORDER BY customer, window_start"#,
            [window],
        )
    }

    /// Every device record of the window label `window`, ordered by customer,
    /// device, then window start.
    pub fn device_kpis(&self, window: &str) -> Result<Vec<DeviceKpi>, SinkError> {
        self.select(
            r#"WHERE "window" = ?1 ORDER BY customer, device, window_start"#,
            [window],
        )
    }

    /// Daily health records, of one customer or (with `None`) of all,
    /// ordered by customer, then window start.
    pub fn health(&self, customer: Option<&str>) -> Result<Vec<HealthRecord>, SinkError> {
        self.of_customer(customer, "", "ORDER BY customer, window_start")
    }

    /// Daily health forecasts, of one customer or (with `None`) of all,
    /// ordered by customer, then window start.
    pub fn forecasts(&self, customer: Option<&str>) -> Result<Vec<ForecastRecord>, SinkError> {
        self.of_customer(customer, "", "ORDER BY customer, window_start")
    }

    /// The latest health record of each customer (its last day stored),
    /// ordered by customer.
    pub fn latest_health(&self) -> Result<Vec<HealthRecord>, SinkError> {
        self.select(
            "AS h WHERE window_start = \
             (SELECT max(window_start) FROM health WHERE customer = h.customer) \
             ORDER BY customer",
            [],
        )
    }

    /// Alert episodes, one record each in its current state (open, or
    /// resolved with `resolved_at`); with `open_only` only the open ones.
    /// Ordered by opened_at, customer, rule, episode.
    pub fn alerts(&self, open_only: bool) -> Result<Vec<AlertRecord>, SinkError> {
        let filter = if open_only {
            "WHERE status = 'open'"
        } else {
            ""
        };
        self.select(
            &format!("{filter} ORDER BY opened_at, customer, rule, episode"),
            [],
        )
    }

    /// Outcome records, of one customer or (with `None`) of all, ordered by
    /// customer, outcome, window label, then window start.
    pub fn outcomes(&self, customer: Option<&str>) -> Result<Vec<OutcomeRecord>, SinkError> {
        self.of_customer(
            customer,
            "",
            r#"ORDER BY customer, outcome, "window", window_start"#,
        )
    }

    /// Daily milestone records, of one customer or (with `None`) of all,
    /// ordered by customer, position, milestone, then window start.
    pub fn milestones(&self, customer: Option<&str>) -> Result<Vec<MilestoneRecord>, SinkError> {
        self.of_customer(
            customer,
            "",
            "ORDER BY customer, position, milestone, window_start",
        )
    }

    /// The latest record (last day stored) of each milestone: the journey as
    /// it stands, of one customer or (with `None`) of all, ordered by
    /// customer, position, milestone.
    pub fn latest_milestones(
        &self,
        customer: Option<&str>,
    ) -> Result<Vec<MilestoneRecord>, SinkError> {
        self.of_customer(
            customer,
            "window_start = (SELECT max(window_start) FROM milestone \
             WHERE customer = m.customer AND milestone = m.milestone)",
            "ORDER BY customer, position, milestone",
        )
    }

    /// Portfolio figures, one per UTC day, ordered by window start.
    pub fn portfolio(&self) -> Result<Vec<PortfolioRecord>, SinkError> {
        self.select("ORDER BY window_start", [])
    }

    /// Touchpoints, of one customer or (with `None`) of all, ordered by
    /// customer, then day, kind, CSM.
    pub fn touchpoints(&self, customer: Option<&str>) -> Result<Vec<Touchpoint>, SinkError> {
        self.of_customer(customer, "", "ORDER BY customer, at, kind, csm")
    }

    /// Writes `touchpoints` in one transaction (all or none); one recorded
    /// again (same customer, kind, day and CSM) overwrites its row.
    pub fn record_touchpoints(&mut self, touchpoints: &[Touchpoint]) -> Result<(), SinkError> {
        self.record(touchpoints)
    }

    /// Contract events recorded at runtime, of one customer or (with
    /// `None`) of all, ordered by customer, then day, kind.
    pub fn contract_events(
        &self,
        customer: Option<&str>,
    ) -> Result<Vec<RecordedContractEvent>, SinkError> {
        self.of_customer(customer, "", "ORDER BY customer, at, kind")
    }

    /// Writes contract `events` in one transaction (all or none); one
    /// recorded again (same customer, kind and day) overwrites its row.
    pub fn record_contract_events(
        &mut self,
        events: &[RecordedContractEvent],
    ) -> Result<(), SinkError> {
        self.record(events)
    }

    /// Writes `records` of a kind people record (touchpoints, contract
    /// events) in one transaction: all or none, each overwriting the row of
    /// its key.
    fn record<R: RecordKind>(&mut self, records: &[R]) -> Result<(), SinkError> {
        let write = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(upsert_sql::<R>())?;
                for r in records {
                    stmt.execute(rusqlite::params_from_iter(r.values()))?;
                }
            }
            tx.commit()
        };
        write(&mut self.conn).map_err(SinkError::SqliteWrite)
    }

    /// The newest `n` records of `R` whose leading key columns hold the
    /// values in `key` (a prefix of its primary key, e.g. customer and
    /// window), oldest first: a walk down the key's index, however long
    /// the history behind them.
    pub fn newest<R: RecordKind>(
        &self,
        key: &[(&str, &str)],
        n: usize,
    ) -> Result<Vec<R>, SinkError> {
        let time = R::COLUMNS
            .iter()
            .find(|c| c.is(Role::Key) && c.is(Role::Time))
            .map_or("window_start", |c| c.name);
        let filter: Vec<String> = (key.iter().enumerate())
            .map(|(i, (column, _))| format!("\"{column}\" = ?{}", i + 1))
            .collect();
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filter.join(" AND "))
        };
        let mut records: Vec<R> = self.select(
            &format!("{filter} ORDER BY \"{time}\" DESC LIMIT {n}"),
            rusqlite::params_from_iter(key.iter().map(|(_, v)| v)),
        )?;
        records.reverse();
        Ok(records)
    }

    /// The distinct values of `column` in `table` among the rows whose
    /// leading key columns hold the values in `prefix`, in order; `column`
    /// must follow them in the primary key. One index seek per value (a
    /// skip scan), not a pass over the rows.
    pub fn distinct(
        &self,
        table: &str,
        column: &str,
        prefix: &[(&str, &str)],
    ) -> Result<Vec<String>, SinkError> {
        let within: String = (prefix.iter().enumerate())
            .map(|(i, (c, _))| format!("\"{c}\" = ?{} AND ", i + 1))
            .collect();
        let sql = format!(
            "WITH RECURSIVE d(v) AS (\
               SELECT min(\"{column}\") FROM \"{table}\" WHERE {within}1 \
               UNION ALL \
               SELECT (SELECT min(\"{column}\") FROM \"{table}\" \
                       WHERE {within}\"{column}\" > d.v) FROM d WHERE d.v IS NOT NULL) \
             SELECT v FROM d WHERE v IS NOT NULL"
        );
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(SinkError::SqliteRead)?;
        let rows = stmt
            .query_map(
                rusqlite::params_from_iter(prefix.iter().map(|(_, v)| v)),
                |r| r.get::<_, String>(0),
            )
            .map_err(SinkError::SqliteRead)?;
        rows.collect::<Result<_, _>>()
            .map_err(SinkError::SqliteRead)
    }

    /// Open alert episodes, and the `resolved` newest of the others
    /// (resolved or retracted): one record each, in no particular order.
    pub fn current_alerts(&self, resolved: usize) -> Result<Vec<AlertRecord>, SinkError> {
        let mut alerts: Vec<AlertRecord> = self.select("WHERE status = 'open'", [])?;
        alerts.extend(self.select::<AlertRecord>(
            &format!(
                "WHERE status != 'open' \
                 ORDER BY coalesce(resolved_at, opened_at) DESC LIMIT {resolved}"
            ),
            [],
        )?);
        Ok(alerts)
    }

    /// Records of `R` of one customer (or all, with `None`) that meet
    /// `condition` (may be empty), in `order`. The table is aliased `m`.
    fn of_customer<R: RecordKind>(
        &self,
        customer: Option<&str>,
        condition: &str,
        order: &str,
    ) -> Result<Vec<R>, SinkError> {
        let and = if condition.is_empty() { "" } else { " AND " };
        match customer {
            Some(c) => self.select(
                &format!("AS m WHERE customer = ?1{and}{condition} {order}"),
                [c],
            ),
            None if condition.is_empty() => self.select(order, []),
            None => self.select(&format!("AS m WHERE {condition} {order}"), []),
        }
    }

    /// Every column of `R`'s table, in the rows that `clauses` (what follows
    /// `FROM <table>`) select, with `params`. The statement is cached.
    fn select<R: RecordKind>(
        &self,
        clauses: &str,
        params: impl Params,
    ) -> Result<Vec<R>, SinkError> {
        let sql = format!("{} {clauses}", select_sql::<R>());
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(SinkError::SqliteRead)?;
        let rows = stmt
            .query_map(params, R::read)
            .map_err(SinkError::SqliteRead)?;
        rows.collect::<Result<_, _>>()
            .map_err(SinkError::SqliteRead)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fleetpulse_engine::{MachineState, Output};

    use fleetpulse_engine::Segment;
    use fleetpulse_engine::kpi::health::{Band, Stage};
    use fleetpulse_engine::kpi::milestone::MilestoneStatus;
    use fleetpulse_engine::kpi::outcome::Direction;
    use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};

    use super::*;
    use crate::sinks::fixtures::{
        DAY, alert, customer, device, health, milestone, onboarding_health, outcome, portfolio,
        resolved,
    };
    use crate::sinks::sqlite::schema::SCHEMA_VERSION;
    use crate::sinks::{Sink, SinkConfig, SqliteConfig};

    /// A sink on `kpi.sqlite` in a new temporary directory (removed when
    /// the first value is dropped).
    async fn temp_sink() -> (tempfile::TempDir, std::path::PathBuf, Sink) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpi.sqlite");
        let sink = open_sink(&path).await;
        (dir, path, sink)
    }

    #[tokio::test]
    async fn a_reader_makes_no_store_where_there_is_none_nor_one_from_a_removed_file_s_log() {
        let dir = tempfile::tempdir().unwrap();
        let mistyped = dir.path().join("kpi.sqlit");
        let err = SqliteStore::open_existing(&mistyped).unwrap_err();
        assert!(matches!(err, SinkError::SqliteMissing { .. }), "{err}");
        assert!(
            err.to_string().contains("kpi.sqlit does not exist"),
            "{err}"
        );
        assert!(!mistyped.exists());

        // A store with rows in its log, removed while its sink holds it:
        // the log left behind is no store.
        let (_dir, path, mut sink) = temp_sink().await;
        sink.write(&[Output::Customer(customer("acme", 0, 1))])
            .await
            .unwrap();
        assert_eq!(
            SqliteStore::open_existing(&path)
                .unwrap()
                .customer_kpis("1h")
                .unwrap()
                .len(),
            1
        );
        std::fs::remove_file(&path).unwrap();
        let err = SqliteStore::open_existing(&path).unwrap_err();
        assert!(matches!(err, SinkError::SqliteMissing { .. }), "{err}");
        assert!(!path.exists());
        drop(sink);
    }

    /// A reader pointed at an empty file or another program's database
    /// refuses it, naming what it holds, and leaves it as it was (no table
    /// added, the journal mode unchanged).
    #[test]
    fn a_reader_refuses_a_file_that_is_no_store_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, b"").unwrap();
        let err = SqliteStore::open_existing(&empty).unwrap_err();
        assert!(matches!(err, SinkError::SqliteNotAStore { .. }), "{err}");
        assert!(err.to_string().contains("no table"), "{err}");
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);

        let foreign = dir.path().join("foreign.sqlite");
        let other = rusqlite::Connection::open(&foreign).unwrap();
        other
            .execute_batch("CREATE TABLE invoices (id INTEGER); INSERT INTO invoices VALUES (1);")
            .unwrap();
        drop(other);
        let err = SqliteStore::open_existing(&foreign).unwrap_err();
        assert!(err.to_string().contains("(invoices)"), "{err}");
        let other = rusqlite::Connection::open(&foreign).unwrap();
        let tables: i64 = other
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mode: String = other
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!((tables, mode.as_str()), (1, "delete"));
    }

    /// The version in the store's `schema_version` table.
    fn stored_version(store: &SqliteStore) -> i64 {
        store
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap()
    }

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
        assert_eq!(stored_version(&store), SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn rewriting_a_window_overwrites_every_column() {
        let (_dir, path, mut sink) = temp_sink().await;
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
        corrected.totals.cycles = 99;
        corrected.utilisation = 0.5;
        corrected.reporting_devices = 4;
        corrected.totals.samples = 999;
        let mut corrected_device = device("exc-01", t0, MachineState::Idle);
        corrected_device.site = "south-pit".into();
        corrected_device.totals.fuel_litres = 13.0;
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
        // A start refuses it; a sink that finds one put at its path while
        // it runs holds its records until the operator moves it.
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn non_finite_floats_read_back_as_nan_and_ids_keep_their_bytes() {
        let (_dir, path, mut sink) = temp_sink().await;
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
        assert_eq!(back[0].totals.fuel_litres, kpi.totals.fuel_litres);
    }

    #[tokio::test]
    async fn customer_success_records_round_trip_through_a_real_file() {
        let (_dir, path, mut sink) = temp_sink().await;
        let d0 = 19_700 * DAY;

        // Two customers, two days; `zeta` has no outcome component yet and a
        // maturity score, `acme` an undefined outcome value on day 2.
        let zeta_health = onboarding_health("zeta", d0, 42.0);
        let acme_day2 = health("acme", d0 + DAY, 80.0);
        let mut reached = milestone("first-100-hours", 2, d0 + DAY);
        reached.reached_at = Some(d0 + 2 * DAY);
        reached.status = MilestoneStatus::Reached;
        let mut overdue = milestone("all-online", 1, d0 + DAY);
        overdue.status = MilestoneStatus::Overdue;
        let mut undefined = outcome("acme", d0 + DAY, f64::NAN);
        undefined.met = false;
        let mut at_least = outcome("acme", d0, 0.9);
        at_least.outcome = "availability".into();
        at_least.direction = Direction::AtLeast;
        at_least.met = true;
        let open = alert("acme", 1, d0 + DAY);
        let mut other = alert("zeta", 1, d0);
        other.rule = Rule::OnboardingStalled;
        other.stage = Stage::Onboard;

        sink.write(&[
            Output::health(acme_day2.clone()),
            Output::health(zeta_health.clone()),
            Output::health(health("acme", d0, 60.0)),
            Output::Milestone(milestone("all-online", 1, d0)),
            Output::Milestone(milestone("first-100-hours", 2, d0)),
            Output::Milestone(reached.clone()),
            Output::Milestone(overdue.clone()),
            Output::Outcome(outcome("acme", d0, 0.1)),
            Output::Outcome(undefined.clone()),
            Output::Outcome(at_least.clone()),
            Output::Alert(open.clone()),
            Output::Alert(other.clone()),
            Output::Portfolio(portfolio(d0 + DAY, 6)),
            Output::Portfolio(portfolio(d0, 5)),
        ])
        .await
        .unwrap();

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.health(None).unwrap(),
            vec![
                health("acme", d0, 60.0),
                acme_day2.clone(),
                zeta_health.clone()
            ]
        );
        assert_eq!(
            store.health(Some("acme")).unwrap(),
            vec![health("acme", d0, 60.0), acme_day2.clone()]
        );
        assert!(store.health(Some("nobody")).unwrap().is_empty());
        assert_eq!(store.latest_health().unwrap(), vec![acme_day2, zeta_health]);

        assert_eq!(
            store.milestones(Some("acme")).unwrap(),
            vec![
                milestone("all-online", 1, d0),
                overdue.clone(),
                milestone("first-100-hours", 2, d0),
                reached.clone(),
            ]
        );
        assert_eq!(
            store.latest_milestones(None).unwrap(),
            vec![overdue, reached]
        );
        assert!(store.latest_milestones(Some("zeta")).unwrap().is_empty());

        let outcomes = store.outcomes(Some("acme")).unwrap();
        assert_eq!(outcomes.len(), 3);
        assert_eq!(outcomes[0], at_least);
        assert_eq!(outcomes[1], outcome("acme", d0, 0.1));
        assert!(outcomes[2].value.is_nan(), "undefined stays NaN");
        assert_eq!(
            OutcomeRecord {
                value: 0.0,
                ..outcomes[2].clone()
            },
            OutcomeRecord {
                value: 0.0,
                ..undefined
            }
        );
        assert_eq!(store.outcomes(None).unwrap().len(), 3);

        assert_eq!(
            store.alerts(false).unwrap(),
            vec![other.clone(), open.clone()]
        );
        assert_eq!(store.alerts(true).unwrap(), vec![other, open]);
        assert_eq!(
            store.portfolio().unwrap(),
            vec![portfolio(d0, 5), portfolio(d0 + DAY, 6)]
        );
    }

    #[tokio::test]
    async fn an_alert_episode_is_one_row_kept_current() {
        let (_dir, path, mut sink) = temp_sink().await;
        let d0 = 19_700 * DAY;
        let open = alert("acme", 1, d0);
        let closed = resolved(open.clone(), d0 + 5 * DAY);
        let second = alert("acme", 2, d0 + 9 * DAY);

        sink.write(&[Output::Alert(open.clone())]).await.unwrap();
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.alerts(true).unwrap(), vec![open.clone()]);

        // The resolve updates the episode's row; the next episode is a new row.
        sink.write(&[Output::Alert(closed.clone()), Output::Alert(second.clone())])
            .await
            .unwrap();
        assert_eq!(
            store.alerts(false).unwrap(),
            vec![closed.clone(), second.clone()]
        );
        assert_eq!(store.alerts(true).unwrap(), vec![second.clone()]);

        // A replay of the whole history, and of the open alone, leaves it
        // resolved.
        sink.write(&[
            Output::Alert(open.clone()),
            Output::Alert(closed.clone()),
            Output::Alert(second.clone()),
        ])
        .await
        .unwrap();
        sink.write(&[Output::Alert(open)]).await.unwrap();
        let all = store.alerts(false).unwrap();
        assert_eq!(all, vec![closed, second]);
        assert_eq!(all[0].status, AlertStatus::Resolved);
    }

    #[tokio::test]
    async fn rewriting_a_day_overwrites_every_customer_success_column() {
        let (_dir, path, mut sink) = temp_sink().await;
        let d0 = 19_700 * DAY;
        sink.write(&[
            Output::health(health("acme", d0, 80.0)),
            Output::Milestone(milestone("all-online", 1, d0)),
            Output::Outcome(outcome("acme", d0, 0.1)),
            Output::Portfolio(portfolio(d0, 5)),
        ])
        .await
        .unwrap();

        let mut h = health("acme", d0, 30.0);
        h.components.outcome = None;
        h.components.maturity = Some(10.0);
        h.stage = Stage::Renew;
        h.segment = Segment::LowTouch;
        h.open_alerts = 3;
        h.arr_at_risk = h.arr;
        h.time_to_value_days = None;
        assert_eq!(h.band, Band::Red);
        let mut m = milestone("all-online", 3, d0);
        m.status = MilestoneStatus::Reached;
        m.reached_at = Some(d0 + DAY);
        m.value_milestone = true;
        m.due_at = 5;
        let mut o = outcome("acme", d0, 0.5);
        o.consecutive_met = 0;
        o.consecutive_missed = 1;
        o.target = 0.25;
        let mut p = portfolio(d0, 7);
        p.red = 4;
        p.managed_outcome_attainment = 12.5;
        sink.write(&[
            Output::health(h.clone()),
            Output::Milestone(m.clone()),
            Output::Outcome(o.clone()),
            Output::Portfolio(p.clone()),
        ])
        .await
        .unwrap();

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.health(None).unwrap(), vec![h]);
        assert_eq!(store.milestones(None).unwrap(), vec![m]);
        assert_eq!(store.outcomes(None).unwrap(), vec![o]);
        assert_eq!(store.portfolio().unwrap(), vec![p]);
    }

    #[test]
    fn an_unknown_enum_name_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpi.sqlite");
        let mut conn = open_connection(&path).unwrap();
        crate::sinks::sqlite::sink::write_batch(
            &mut conn,
            &[Output::health(health("acme", 0, 80.0))],
        )
        .unwrap();
        conn.execute("UPDATE health SET band = 'purple'", [])
            .unwrap();
        let err = SqliteStore::open(&path).unwrap().health(None).unwrap_err();
        let SinkError::SqliteRead(source) = err else {
            panic!("{err}")
        };
        assert!(
            source.to_string().contains("unknown band `purple`"),
            "{source}"
        );
    }

    /// A store the previous release wrote (`fleetpulse demo`, schema 2,
    /// checked in) opens with this one (migrated to the current schema), and
    /// every record of every kind reads back equal, column by column, to its
    /// raw row in the unmigrated file.
    #[test]
    fn a_store_written_by_the_previous_release_opens_and_reads_back() {
        use crate::records::{Doc, Kind, KindVisitor, Role, each_kind};
        use rusqlite::types::Value as Raw;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpi.sqlite");
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kpi-schema-v2.sqlite");
        std::fs::copy(&fixture, &path).unwrap();
        // The rows as the previous release left them, from a copy this build
        // never opens (opening migrates: `alert` is re-keyed).
        let before = dir.path().join("before.sqlite");
        std::fs::copy(&fixture, &before).unwrap();
        let raw = Connection::open(&before).unwrap();
        let store = SqliteStore::open(&path).unwrap();

        struct Compare<'a> {
            store: &'a SqliteStore,
            raw: &'a Connection,
        }
        impl KindVisitor for Compare<'_> {
            fn kind<R: RecordKind>(&mut self) {
                let key: Vec<String> = R::COLUMNS
                    .iter()
                    .filter(|c| c.is(Role::Key))
                    .map(|c| format!("\"{}\"", c.name))
                    .collect();
                let order = format!("ORDER BY {}", key.join(", "));
                let records: Vec<R> = self.store.select(&order, []).unwrap();
                let in_fixture: bool = self
                    .raw
                    .query_row(
                        "SELECT count(*) > 0 FROM sqlite_master WHERE name = ?1",
                        [R::NAME],
                        |r| r.get(0),
                    )
                    .unwrap();
                if !in_fixture {
                    // A kind newer than the fixture (touchpoint): its table
                    // was added, empty.
                    assert!(records.is_empty(), "{}", R::NAME);
                    return;
                }
                let mut stmt = self
                    .raw
                    .prepare(&format!("SELECT * FROM \"{}\" {order}", R::NAME))
                    .unwrap();
                let names: Vec<String> =
                    stmt.column_names().iter().map(|n| n.to_string()).collect();
                let rows: Vec<Vec<Raw>> = stmt
                    .query_map([], |r| (0..names.len()).map(|i| r.get(i)).collect())
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert!(!rows.is_empty(), "{}: the fixture has rows", R::NAME);
                assert_eq!(records.len(), rows.len(), "{}", R::NAME);
                for (record, row) in records.iter().zip(&rows) {
                    let doc = serde_json::to_value(Doc(record)).unwrap();
                    for (key, value) in doc.as_object().unwrap() {
                        if !names.contains(key) {
                            // A column added since (`revision`, `provisional`):
                            // its default.
                            let default = value.as_f64() == Some(0.0) || *value == false;
                            assert!(default, "{}.{key}: {value}", R::NAME);
                        }
                    }
                    for (name, value) in names.iter().zip(row) {
                        let column = R::COLUMNS.iter().find(|c| c.name == name).unwrap();
                        let expected = match value {
                            Raw::Null => serde_json::Value::Null,
                            Raw::Integer(i) if column.ty.kind == Kind::Boolean => (*i != 0).into(),
                            Raw::Integer(i) => (*i).into(),
                            Raw::Real(f) => (*f).into(),
                            Raw::Text(t) => t.clone().into(),
                            Raw::Blob(_) => panic!("no blobs"),
                        };
                        assert_eq!(doc[name], expected, "{}.{name}", R::NAME);
                    }
                }
            }
        }
        each_kind(&mut Compare {
            store: &store,
            raw: &raw,
        });
        // The file was migrated to the current version.
        assert_eq!(stored_version(&store), SCHEMA_VERSION);
    }

    /// An alert row is identified by (customer, rule, opening time): an
    /// episode numbered 1 again (a journey that restarted its count) but
    /// opened on another day is a row of its own, and never overwrites the
    /// first one; the same episode resolving still updates its row.
    #[tokio::test]
    async fn alert_rows_are_keyed_by_their_opening_time_not_their_number() {
        let (_dir, path, mut sink) = temp_sink().await;
        let d0 = 19_700 * DAY;
        let first = alert("acme", 1, d0);
        let recounted = alert("acme", 1, d0 + 4 * DAY);
        let first_resolved = resolved(first.clone(), d0 + 2 * DAY);
        sink.write(&[Output::Alert(first), Output::Alert(first_resolved.clone())])
            .await
            .unwrap();
        sink.write(&[Output::Alert(recounted.clone())])
            .await
            .unwrap();
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.alerts(false).unwrap(),
            vec![first_resolved, recounted]
        );
    }
}
