//! The portfolio of past dates, restated: a date's figures fold every
//! customer's health of its local day of that date, so a customer whose
//! health a pass restated (late telemetry, a changed definition) changes
//! them too. The archive keeps each customer's final health of each date
//! (what the figures read of it, not the whole record: a row a customer a
//! day, kept as long as what journeys fold, so that a backfilled
//! customer's history restates the dates it joins) and the dates the live
//! dataflow emitted figures for; a date is folded again
//! from those rows, in customer order as the live operator folds it, when
//! a restated health record of it differs from the one kept, or when its
//! live figures come after such a record (the live operator folded the
//! health it had, not the restated one).
//!
//! A date is left alone when fewer customers are kept for it than its live
//! figures counted (kept by an earlier build, or rows given up after a
//! long failure to write them: see [`Unkept`]): folding them would drop
//! the others.
//!
//! A date's figures folded again are owed to the stores until every store
//! wrote them (the rows that changed them are kept at once, so a kill in
//! between would leave nothing to fold them again): the dates still owed
//! at a start are folded again and sent.

use std::collections::BTreeSet;
use std::path::Path;

use fleetpulse_engine::kpi::health::Band;
use fleetpulse_engine::{EngineConfig, EventTime, HealthRecord, Output, PortfolioRecord, Segment};
use rusqlite::{Connection, OptionalExtension, params};

use super::archive::{ArchiveError, fail};

const DAY_MS: u64 = 86_400_000;

/// The tables, in the archive's `state.sqlite`.
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS portfolio_health (
        day INTEGER NOT NULL,
        customer TEXT NOT NULL,
        arr REAL NOT NULL,
        arr_at_risk REAL NOT NULL,
        band INTEGER NOT NULL,
        managed INTEGER NOT NULL,
        usage_growth REAL NOT NULL,
        outcome REAL,
        restated INTEGER NOT NULL,
        PRIMARY KEY (day, customer)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS portfolio_days (
        day INTEGER PRIMARY KEY,
        customers INTEGER NOT NULL,
        revision INTEGER NOT NULL,
        written INTEGER NOT NULL
    ) WITHOUT ROWID;";

/// What a date's figures read of a customer's health record.
#[derive(Debug, Clone, PartialEq)]
struct Share {
    arr: f64,
    arr_at_risk: f64,
    band: i64,
    managed: bool,
    usage_growth: f64,
    outcome: Option<f64>,
}

impl Share {
    fn of(h: &HealthRecord) -> Self {
        Self {
            arr: h.arr,
            arr_at_risk: h.arr_at_risk,
            band: match h.band {
                Band::Red => 0,
                Band::Yellow => 1,
                Band::Green => 2,
            },
            managed: h.segment == Segment::HighTouch,
            usage_growth: h.usage_growth,
            outcome: h.components.outcome,
        }
    }

    /// The share in `row`'s columns from `at` on (`arr, arr_at_risk, band,
    /// managed, usage_growth, outcome`).
    fn read(row: &rusqlite::Row, at: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            arr: row.get(at)?,
            arr_at_risk: row.get(at + 1)?,
            band: row.get(at + 2)?,
            managed: row.get(at + 3)?,
            usage_growth: row.get(at + 4)?,
            outcome: row.get(at + 5)?,
        })
    }

    /// A health record the fold reads as it read the original.
    fn health(&self, customer: String) -> HealthRecord {
        let mut h = HealthRecord {
            customer: customer.into(),
            arr: self.arr,
            arr_at_risk: self.arr_at_risk,
            band: match self.band {
                0 => Band::Red,
                1 => Band::Yellow,
                _ => Band::Green,
            },
            segment: if self.managed {
                Segment::HighTouch
            } else {
                Segment::LowTouch
            },
            usage_growth: self.usage_growth,
            ..HealthRecord::default()
        };
        h.components.outcome = self.outcome;
        h
    }
}

/// Whether the portfolio keeps `record`: a final health record, or the
/// live figures of a date (`restated`: among a pass's records, which bring
/// no figures of their own).
fn counts(record: &Output, restated: bool) -> bool {
    match record {
        Output::Health(h) => !h.provisional,
        Output::Portfolio(p) => !restated && p.revision == 0,
        _ => false,
    }
}

/// Live records held at most while the archive cannot keep them; beyond,
/// they are given up and their dates left alone (see the module's doc).
const MAX_UNKEPT: usize = 100_000;

/// The live records the archive failed to keep (a full disk), held and
/// kept first, in their order, at the next try: a date whose rows went
/// missing could not be restated any more. A pass's records need no such
/// care: a failed pass is computed again.
#[derive(Default)]
pub(super) struct Unkept {
    records: Vec<Output>,
}

impl Unkept {
    /// [`keep`]s the records held, then the live `records`; when that fails,
    /// holds those of `records` it would have kept and says so once.
    pub(super) fn keep<'a>(
        &mut self,
        state: &mut Connection,
        path: &Path,
        engine: &EngineConfig,
        records: impl Iterator<Item = &'a Output> + Clone,
    ) -> Vec<PortfolioRecord> {
        let kept = if self.records.is_empty() {
            keep(state, path, engine, records.clone(), None)
        } else {
            let mut all: Vec<&Output> = self.records.iter().collect();
            for record in records.clone() {
                all.push(record);
            }
            keep(state, path, engine, all.into_iter(), None)
        };
        match kept {
            Ok(figures) => {
                if !self.records.is_empty() {
                    tracing::info!(records = self.records.len(), "portfolio records held kept");
                    self.records.clear();
                }
                figures
            }
            Err(e) => {
                if self.records.is_empty() {
                    tracing::error!(error = %e, "cannot keep the portfolio's records; held and tried again");
                }
                self.records
                    .extend(records.filter(|r| counts(r, false)).cloned());
                if self.records.len() > MAX_UNKEPT {
                    tracing::error!(
                        records = self.records.len(),
                        "portfolio records given up: their dates are not restated"
                    );
                    self.records.clear();
                }
                Vec::new()
            }
        }
    }
}

/// Keeps the final health records and live portfolio dates among
/// `records` in one transaction of `state` (at `path`), and returns the
/// figures of the dates to restate, each with its next revision.
/// `restated`: a pass's records, the engine having emitted every portfolio
/// figure ending by the time given; `None`: the live dataflow's.
pub(super) fn keep<'a>(
    state: &mut Connection,
    path: &Path,
    engine: &EngineConfig,
    records: impl Iterator<Item = &'a Output>,
    restated: Option<EventTime>,
) -> Result<Vec<PortfolioRecord>, ArchiveError> {
    let passed = restated.unwrap_or(0);
    let restated = restated.is_some();
    let err = |e| fail(path, e);
    // Most record batches are devices' hours: no transaction for them.
    let mut records = records.filter(|r| counts(r, restated)).peekable();
    if records.peek().is_none() {
        return Ok(Vec::new());
    }
    let tx = state.transaction().map_err(err)?;
    let mut dates = BTreeSet::new();
    {
        let mut kept = (tx.prepare_cached(
            "SELECT arr, arr_at_risk, band, managed, usage_growth, outcome \
             FROM portfolio_health WHERE day = ?1 AND customer = ?2",
        ))
        .map_err(err)?;
        // A live row never replaces a restated one: it can only be older
        // (tried again after a failed write, or taken in again after a
        // restart, while the restated row is what the pass found).
        let mut put = (tx.prepare_cached(
            "INSERT INTO portfolio_health \
             (day, customer, arr, arr_at_risk, band, managed, usage_growth, outcome, restated) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (day, customer) DO UPDATE SET arr = excluded.arr, \
             arr_at_risk = excluded.arr_at_risk, band = excluded.band, \
             managed = excluded.managed, usage_growth = excluded.usage_growth, \
             outcome = excluded.outcome, restated = excluded.restated \
             WHERE excluded.restated = 1 OR portfolio_health.restated = 0",
        ))
        .map_err(err)?;
        let mut emitted = (tx.prepare_cached(
            "INSERT INTO portfolio_days (day, customers, revision, written) VALUES (?1, ?2, 0, 0) \
             ON CONFLICT (day) DO UPDATE SET customers = excluded.customers",
        ))
        .map_err(err)?;
        let mut owed = (tx.prepare_cached(
            "SELECT 1 FROM portfolio_health WHERE day = ?1 AND restated = 1 LIMIT 1",
        ))
        .map_err(err)?;
        for record in records {
            match record {
                Output::Health(h) => {
                    let day = engine.portfolio_day(&h.customer, h.window_start);
                    let share = Share::of(h);
                    // A live record replaces the row as it is; a restated
                    // one that changes nothing the figures read is not
                    // worth a fold.
                    if restated {
                        let args = params![day as i64, &*h.customer];
                        let before = (kept.query_row(args, |r| Share::read(r, 0)))
                            .optional()
                            .map_err(err)?;
                        if before.as_ref() == Some(&share) {
                            continue;
                        }
                    }
                    let row = params![
                        day as i64,
                        &*h.customer,
                        share.arr,
                        share.arr_at_risk,
                        share.band,
                        share.managed,
                        share.usage_growth,
                        share.outcome,
                        restated
                    ];
                    put.execute(row).map_err(err)?;
                    if restated {
                        dates.insert(day);
                    }
                }
                Output::Portfolio(p) => {
                    let day = p.window_start as i64;
                    emitted.execute(params![day, p.customers]).map_err(err)?;
                    if owed.exists(params![day]).map_err(err)? {
                        dates.insert(p.window_start);
                    }
                }
                _ => {}
            }
        }
    }
    let mut figures = Vec::new();
    for day in dates {
        if let Some(record) = fold(&tx, day, passed).map_err(err)? {
            figures.push(record);
        }
    }
    tx.commit().map_err(err)?;
    Ok(figures)
}

/// The first figures of the dates only a pass's rows hold whose end the
/// engine passed after `from`, up to `through` (it emitted every figure
/// ending by then): a pass gives a date its first figures only once the
/// engine passed it (a live customer of a later time zone may still bring
/// health of it), so a date a pass restated before gets them when the
/// engine passes it, whenever the pass ran.
pub(super) fn passed(
    state: &mut Connection,
    path: &Path,
    from: EventTime,
    through: EventTime,
) -> Result<Vec<PortfolioRecord>, ArchiveError> {
    let err = |e| fail(path, e);
    // Dates whose end lies in (from, through].
    let first_day = |end: EventTime| i64::try_from(end).unwrap_or(i64::MAX) - DAY_MS as i64;
    let tx = state.transaction().map_err(err)?;
    let days: Vec<i64> = {
        let mut select = (tx.prepare_cached(
            "SELECT DISTINCT day FROM portfolio_health h \
             WHERE day > ?1 AND day <= ?2 AND restated = 1 \
             AND NOT EXISTS (SELECT 1 FROM portfolio_days d WHERE d.day = h.day) ORDER BY day",
        ))
        .map_err(err)?;
        let days = select
            .query_map(params![first_day(from), first_day(through)], |r| r.get(0))
            .map_err(err)?;
        days.collect::<rusqlite::Result<_>>().map_err(err)?
    };
    let mut figures = Vec::new();
    for day in days {
        if let Some(record) = fold(&tx, day as u64, through).map_err(err)? {
            figures.push(record);
        }
    }
    tx.commit().map_err(err)?;
    Ok(figures)
}

/// `day`'s figures folded again from the rows kept, with the next
/// revision; `None` for a date with fewer customers kept than its live
/// figures counted, or without live figures yet: they will come after the
/// restated rows, and fold it then.
///
/// A date without live figures that the engine has passed (`passed`: it
/// emitted every figure ending by then) gets its first ones here: the days
/// of a backfilled history on which no live customer had health (before
/// any did, or up to where its journey was adopted) get none from it.
fn fold(
    tx: &rusqlite::Transaction,
    day: u64,
    passed: EventTime,
) -> rusqlite::Result<Option<PortfolioRecord>> {
    let emitted: Option<(u32, u32)> = (tx.query_row(
        "SELECT customers, revision FROM portfolio_days WHERE day = ?1",
        params![day as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    ))
    .optional()?;
    let (customers, revision) = match emitted {
        Some(emitted) => emitted,
        None if day + DAY_MS <= passed => {
            tx.execute(
                "INSERT INTO portfolio_days (day, customers, revision, written) \
                 VALUES (?1, 0, 0, 0)",
                params![day as i64],
            )?;
            (0, 0)
        }
        None => return Ok(None),
    };
    let mut select = tx.prepare_cached(
        "SELECT customer, arr, arr_at_risk, band, managed, usage_growth, outcome \
         FROM portfolio_health WHERE day = ?1 ORDER BY customer",
    )?;
    let rows = select.query_map(params![day as i64], |r| {
        Ok(Share::read(r, 1)?.health(r.get(0)?))
    })?;
    let health = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    if health.len() < customers as usize {
        return Ok(None);
    }
    let revision = revision + 1;
    tx.execute(
        "UPDATE portfolio_days SET revision = ?2 WHERE day = ?1",
        params![day as i64, revision],
    )?;
    let mut record = fleetpulse_engine::kpi::portfolio::portfolio(day, day + DAY_MS, &health);
    record.revision = revision;
    Ok(Some(record))
}

/// Every store wrote these dates' figures of these revisions.
pub(super) fn written(
    state: &Connection,
    path: &Path,
    dates: &[(EventTime, u32)],
) -> Result<(), ArchiveError> {
    let mut mark = (state
        .prepare_cached("UPDATE portfolio_days SET written = MAX(written, ?2) WHERE day = ?1"))
    .map_err(|e| fail(path, e))?;
    for (day, revision) in dates {
        (mark.execute(params![*day as i64, revision])).map_err(|e| fail(path, e))?;
    }
    Ok(())
}

/// The figures of the dates folded again that no store confirmed (a stop
/// came first), folded again with their next revision.
pub(super) fn owed(
    state: &mut Connection,
    path: &Path,
) -> Result<Vec<PortfolioRecord>, ArchiveError> {
    let err = |e| fail(path, e);
    let tx = state.transaction().map_err(err)?;
    let days: Vec<i64> = {
        let mut select =
            (tx.prepare("SELECT day FROM portfolio_days WHERE revision > written")).map_err(err)?;
        let rows = select.query_map([], |r| r.get(0)).map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)?
    };
    let mut figures = Vec::new();
    for day in days {
        if let Some(record) = fold(&tx, day as u64, 0).map_err(err)? {
            figures.push(record);
        }
    }
    tx.commit().map_err(err)?;
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::small_disk;
    use fleetpulse_engine::kpi::portfolio::portfolio;

    const D: u64 = 20_000 * DAY_MS;

    fn health(customer: &str, arr_at_risk: f64, band: Band) -> HealthRecord {
        HealthRecord {
            customer: customer.into(),
            window_start: D,
            window_end: D + DAY_MS,
            arr: 100_000.0,
            arr_at_risk,
            band,
            segment: Segment::LowTouch,
            usage_growth: 0.125,
            ..HealthRecord::default()
        }
    }

    fn live(health: &[HealthRecord]) -> PortfolioRecord {
        let mut sorted = health.to_vec();
        sorted.sort_by(|a, b| a.customer.cmp(&b.customer));
        portfolio(D, D + DAY_MS, &sorted)
    }

    struct State {
        _dir: tempfile::TempDir,
        conn: Connection,
        path: std::path::PathBuf,
        engine: EngineConfig,
        passed: EventTime,
    }

    impl State {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.sqlite");
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            let engine = EngineConfig::default();
            Self {
                _dir: dir,
                conn,
                path,
                engine,
                passed: EventTime::MAX,
            }
        }

        /// `restated`: a pass's records, every live figure emitted through
        /// `self.passed`.
        fn keep(&mut self, records: &[Output], restated: bool) -> Vec<PortfolioRecord> {
            keep(
                &mut self.conn,
                &self.path,
                &self.engine,
                records.iter(),
                restated.then_some(self.passed),
            )
            .unwrap()
        }

        /// The live dataflow's records of the date: `kept` customers'
        /// health, then the figures it folded from `folded`'s.
        fn live_date(
            &mut self,
            kept: &[HealthRecord],
            folded: &[HealthRecord],
        ) -> Vec<PortfolioRecord> {
            let mut records: Vec<Output> = kept.iter().cloned().map(Output::health).collect();
            records.push(Output::Portfolio(live(folded)));
            self.keep(&records, false)
        }
    }

    #[test]
    fn a_restated_health_folds_its_date_again_with_the_next_revision() {
        let mut state = State::new();
        let before = [
            health("b", 100_000.0, Band::Red),
            health("a", 0.0, Band::Green),
        ];
        assert!(
            state.live_date(&before, &before).is_empty(),
            "the live date as it is"
        );

        // Its alert retracted: "b" holds no ARR at risk that day.
        let after = health("b", 0.0, Band::Yellow);
        let figures = state.keep(&[Output::health(after.clone())], true);
        let want = PortfolioRecord {
            revision: 1,
            ..live(&[before[1].clone(), after.clone()])
        };
        assert_eq!(figures, [want]);
        assert_eq!(figures[0].arr_at_risk, 0.0);

        // Restated again without a change: nothing to write.
        assert!(
            state
                .keep(&[Output::health(after.clone())], true)
                .is_empty()
        );
        // A provisional score is not the day's.
        let provisional = HealthRecord {
            provisional: true,
            ..health("b", 5.0, Band::Red)
        };
        assert!(state.keep(&[Output::health(provisional)], true).is_empty());
        // Changed again: the next revision.
        let again = health("b", 50_000.0, Band::Red);
        let figures = state.keep(&[Output::health(again.clone())], true);
        assert_eq!(figures[0].revision, 2);
        assert_eq!(figures[0].arr_at_risk, 50_000.0);
    }

    #[test]
    fn live_figures_after_a_restated_health_are_folded_again_at_once() {
        let mut state = State::new();
        // The engine has not passed the date yet.
        state.passed = D;
        let live_health = [health("a", 0.0, Band::Green), health("b", 9.0, Band::Red)];
        let records: Vec<Output> = live_health.iter().cloned().map(Output::health).collect();
        assert!(state.keep(&records, false).is_empty());
        // Restated before the date's figures were emitted: they will miss it.
        let restated = health("b", 0.0, Band::Green);
        assert!(
            state
                .keep(&[Output::health(restated.clone())], true)
                .is_empty()
        );
        let figures = state.keep(&[Output::Portfolio(live(&live_health))], false);
        let want = PortfolioRecord {
            revision: 1,
            ..live(&[live_health[0].clone(), restated])
        };
        assert_eq!(figures, [want]);
    }

    /// The days of a backfilled history before any live customer had
    /// health: no live figures come for them once the engine passed them,
    /// the pass's health makes them.
    #[test]
    fn a_date_only_a_restated_customer_has_gets_its_figures_from_it() {
        let mut state = State::new();
        state.passed = D + DAY_MS;
        let alone = health("a", 100_000.0, Band::Red);
        let figures = state.keep(&[Output::health(alone.clone())], true);
        let want = PortfolioRecord {
            revision: 1,
            ..live(std::slice::from_ref(&alone))
        };
        assert_eq!(figures, [want]);
        assert_eq!((figures[0].customers, figures[0].red), (1, 1));
        // Owed until a store wrote them: a start folds them again.
        let owed = owed(&mut state.conn, &state.path).unwrap();
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].revision, 2);
    }

    /// A pass ran before the engine passed the date: no figures then (a
    /// live customer west of it may still bring health of the date); once
    /// the engine passes it, the pass's rows give it its first ones, once.
    #[test]
    fn a_date_a_pass_restated_before_the_engine_passed_it_gets_figures_once_it_does() {
        let mut state = State::new();
        state.passed = D + DAY_MS - 1;
        let alone = health("a", 100_000.0, Band::Red);
        assert!(
            state
                .keep(&[Output::health(alone.clone())], true)
                .is_empty()
        );
        let not_yet = passed(&mut state.conn, &state.path, 0, D + DAY_MS - 1).unwrap();
        assert!(not_yet.is_empty());
        let want = PortfolioRecord {
            revision: 1,
            ..live(std::slice::from_ref(&alone))
        };
        let now = passed(&mut state.conn, &state.path, D + DAY_MS - 1, D + DAY_MS).unwrap();
        assert_eq!(now, [want]);
        // From the start (a restart's first frontier), the same date is not
        // folded twice; to the end of input (`EventTime::MAX`), neither.
        assert!(
            passed(&mut state.conn, &state.path, 0, EventTime::MAX)
                .unwrap()
                .is_empty()
        );
        // A date a live customer has is left to its live figures.
        let mut live_only = health("b", 0.0, Band::Green);
        live_only.window_start += DAY_MS;
        live_only.window_end += DAY_MS;
        assert!(state.keep(&[Output::health(live_only)], false).is_empty());
        assert!(
            passed(&mut state.conn, &state.path, 0, EventTime::MAX)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_date_kept_for_fewer_customers_than_it_counted_is_left_alone() {
        let mut state = State::new();
        // Emitted with three customers; only two kept (an earlier build).
        let three = [
            health("a", 0.0, Band::Green),
            health("b", 0.0, Band::Green),
            health("c", 0.0, Band::Green),
        ];
        assert!(state.live_date(&three[..2], &three).is_empty());
        let restated = health("a", 100_000.0, Band::Red);
        assert!(state.keep(&[Output::health(restated)], true).is_empty());
    }

    /// A date's live records meet a full disk: held, and kept with the next
    /// live records once there is room, so a restated health of the date
    /// folds it again from every customer.
    #[test]
    fn live_records_that_met_a_full_disk_are_kept_once_it_has_room() {
        let Some(disk) = small_disk::SmallDisk::mount("1m") else {
            return small_disk::rerun_in_namespace(
                "corrections::portfolio::tests::live_records_that_met_a_full_disk_are_kept_once_it_has_room",
            );
        };
        let path = disk.path().join("state.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let engine = EngineConfig::default();
        let mut unkept = Unkept::default();
        let rows = |conn: &Connection| -> i64 {
            (conn.query_row("SELECT COUNT(*) FROM portfolio_health", [], |r| r.get(0))).unwrap()
        };

        let filler = disk.path().join("filler");
        small_disk::fill_disk(&filler);
        let before = [health("a", 0.0, Band::Green), health("b", 9.0, Band::Red)];
        let mut records: Vec<Output> = before.iter().cloned().map(Output::health).collect();
        records.push(Output::Portfolio(live(&before)));
        let held = unkept.keep(&mut conn, &path, &engine, records.iter());
        assert!(held.is_empty());
        assert_eq!(
            (rows(&conn), unkept.records.len()),
            (0, 3),
            "held, not kept"
        );
        // Still full: the next records are held behind them.
        let hour = Output::health(HealthRecord {
            provisional: true,
            ..health("a", 0.0, Band::Green)
        });
        unkept.keep(&mut conn, &path, &engine, [hour.clone()].iter());
        assert_eq!((rows(&conn), unkept.records.len()), (0, 3));

        std::fs::remove_file(&filler).unwrap();
        unkept.keep(&mut conn, &path, &engine, [hour].iter());
        assert_eq!(
            (rows(&conn), unkept.records.len()),
            (2, 0),
            "kept once there is room"
        );
        let after = health("b", 0.0, Band::Green);
        let restated = [Output::health(after.clone())];
        let figures = keep(
            &mut conn,
            &path,
            &engine,
            restated.iter(),
            Some(EventTime::MAX),
        )
        .unwrap();
        let want = PortfolioRecord {
            revision: 1,
            ..live(&[before[0].clone(), after])
        };
        assert_eq!(figures, [want]);
    }

    /// A live row taken in after a restated one of the same customer and
    /// date (held through a full disk, or taken in again after a restart)
    /// does not replace it: the restated row is what the pass found.
    #[test]
    fn a_live_row_never_replaces_a_restated_one() {
        let mut state = State::new();
        let before = [health("a", 0.0, Band::Green), health("b", 9.0, Band::Red)];
        state.live_date(&before, &before);
        let after = health("b", 0.0, Band::Green);
        assert_eq!(state.keep(&[Output::health(after.clone())], true).len(), 1);
        assert!(
            state
                .keep(&[Output::health(before[1].clone())], false)
                .is_empty()
        );
        // The same restated record again changes nothing: the row is it.
        assert!(state.keep(&[Output::health(after)], true).is_empty());
    }

    #[test]
    fn figures_no_store_wrote_are_folded_again_at_the_next_start() {
        let mut state = State::new();
        let before = [health("a", 0.0, Band::Green), health("b", 9.0, Band::Red)];
        state.live_date(&before, &before);
        let after = health("b", 0.0, Band::Green);
        let figures = state.keep(&[Output::health(after.clone())], true);
        assert_eq!(figures.len(), 1);

        // Killed before the stores had them: the rows that changed them are
        // kept, so only this brings them back.
        let again = owed(&mut state.conn, &state.path).unwrap();
        let want = PortfolioRecord {
            revision: 2,
            ..live(&[before[0].clone(), after])
        };
        assert_eq!(again, [want]);
        // An older revision written changes nothing; the newest settles it.
        written(&state.conn, &state.path, &[(D, 1)]).unwrap();
        assert_eq!(owed(&mut state.conn, &state.path).unwrap().len(), 1);
        written(&state.conn, &state.path, &[(D, 3)]).unwrap();
        assert!(owed(&mut state.conn, &state.path).unwrap().is_empty());
    }
}
