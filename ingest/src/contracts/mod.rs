//! Contract events: each customer's revenue history (start, renewal,
//! expansion, contraction, churn; date; ARR change), from the customers
//! file's `[[customer.contract_event]]` tables and from the CSV file it
//! names in `contract_events_csv`, and those recorded while the service
//! runs (`POST /api/contract-events`, `fleetpulse contracts add|import`),
//! kept in the SQLite store. What revenue retention is computed from
//! (`fleetpulse_engine::kpi::revenue_retention`). Every error names the
//! file, the line and the field.
//!
//! **Recorded events against the file's.** [`ContractBook::merged`] adds
//! the recorded events to each customer's file events. A recorded event
//! with the same customer, kind and day as one of the file (or the `start`
//! implied by `contract.start`) **replaces** it: the store is where a
//! correction goes without editing the customers file (recording it again
//! overwrites the stored row), while the file stays as the CRM exported
//! it. A customer whose events no longer add up with the recorded ones
//! (the file changed under them) keeps its file history; its recorded
//! events are left out and reported as a conflict. The `contract.arr`
//! check (the ARR after the last event) is over the file's events only:
//! recorded events change the ARR from then on.

pub mod cli;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fleetpulse_engine::kpi::revenue_retention::{
    ArrHistory, ContractEvent, ContractEventError, ContractEventKind, RecordedContractEvent,
};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::{ConfigError, line_column};
use crate::customers::{CustomersFile, date_ms};

/// `[[customer.contract_event]]`: one change of the customer's ARR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractEventConfig {
    /// `start`, `renewal`, `expansion`, `contraction` or `churn`.
    pub kind: Spanned<String>,
    /// When it takes effect, `YYYY-MM-DD`.
    pub date: Spanned<String>,
    /// The change of ARR: positive for start and expansion, negative for
    /// contraction; a renewal without it changes nothing, a churn without
    /// it loses all of the ARR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arr_change: Option<f64>,
}

/// The largest ARR, and ARR change, accepted (10^15 in the currency's
/// units): far above any real contract, and far enough below `f64`'s range
/// that sums of ARR over a portfolio stay finite (two changes of `1e308`
/// made `/api/retention` show `null` everywhere).
pub const MAX_ARR: f64 = 1e15;

/// [`ArrHistory::new`], with every ARR change and the ARR after each
/// event at most [`MAX_ARR`].
fn checked_history(
    customer: fleetpulse_engine::Id,
    segment: fleetpulse_engine::Segment,
    events: &[ContractEvent],
) -> Result<ArrHistory, ContractEventError> {
    for (index, e) in events.iter().enumerate() {
        if let Some(c) = e.arr_change
            && c.abs() > MAX_ARR
        {
            return Err(ContractEventError {
                index,
                field: "arr_change",
                message: too_large(c),
            });
        }
    }
    let history = ArrHistory::new(customer, segment, events)?;
    // The steps are the events sorted by date, same-day ones in order.
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].at);
    for (step, index) in history.steps().iter().zip(order) {
        if step.arr_after > MAX_ARR {
            return Err(ContractEventError {
                index,
                field: "arr_change",
                message: format!(
                    "takes the customer's ARR to {}, above the most accepted ({MAX_ARR:e})",
                    step.arr_after
                ),
            });
        }
    }
    Ok(history)
}

/// Why an ARR (change) of `value` is refused.
pub(crate) fn too_large(value: f64) -> String {
    format!("`{value:e}` is beyond the most an ARR (change) may be, {MAX_ARR:e} either way")
}

/// The columns of a contract events CSV file, in this order, with a header.
pub const CSV_HEADER: [&str; 4] = ["customer", "kind", "date", "arr_change"];

/// Where an event came from, to name it in errors.
#[derive(Debug, Clone)]
enum Source {
    /// `customer[i].contract_event[j]` at a byte offset of the customers
    /// file (its line and column are worked out only for an error: counting
    /// lines for every event made a file of 20,000 customers take minutes).
    Inline { field: String, offset: usize },
    /// A line of the CSV file.
    Csv { line: u64 },
    /// Implied by `customer[i].contract`: no events were given.
    Contract,
}

/// Every customer's ARR history, in the order of the customers file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContractBook {
    /// One per customer.
    pub histories: Vec<ArrHistory>,
    /// The events each history is made of, as given (same order).
    pub events: Vec<Vec<ContractEvent>>,
}

/// A customer whose recorded contract events do not add up with its file
/// events: they are left out of its history.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// Customer id.
    pub customer: String,
    /// Why, naming the recorded event.
    pub message: String,
}

impl ContractBook {
    /// The history of `customer`.
    pub fn get(&self, customer: &str) -> Option<&ArrHistory> {
        self.histories.iter().find(|h| &*h.customer == customer)
    }

    /// The book with `recorded` events added to the file's (a recorded
    /// event replaces a file event of the same customer, kind and day), and
    /// the customers whose recorded events were left out because they do
    /// not add up. Recorded events of customers not in the book are left
    /// out too (a customer removed from the file).
    pub fn merged(&self, recorded: &[RecordedContractEvent]) -> (ContractBook, Vec<Conflict>) {
        let mut book = self.clone();
        let mut conflicts = Vec::new();
        let mut recorded = by_customer(recorded);
        for (i, history) in self.histories.iter().enumerate() {
            let Some(mine) = recorded.remove(&*history.customer) else {
                continue;
            };
            match merge(&self.events[i], &mine, history) {
                Ok((events, merged)) => {
                    book.events[i] = events;
                    book.histories[i] = merged;
                }
                Err(message) => conflicts.push(Conflict {
                    customer: history.customer.to_string(),
                    message,
                }),
            }
        }
        (book, conflicts)
    }

    /// Checks that `new` events add up with each customer's events so far
    /// (the file's and `recorded`): `Err((index in new, field, message))`
    /// for the first that does not, or names a customer not in the book.
    pub fn check_new(
        &self,
        recorded: &[RecordedContractEvent],
        new: &[RecordedContractEvent],
    ) -> Result<(), (usize, &'static str, String)> {
        let known: HashSet<&str> = self.histories.iter().map(|h| &*h.customer).collect();
        for (n, e) in new.iter().enumerate() {
            if !known.contains(&*e.customer) {
                return Err((
                    n,
                    "customer",
                    format!("`{}` is not in the customers file", e.customer),
                ));
            }
        }
        // Later rows replace earlier ones of the same key, as in the store:
        // a row stays unless a new row after it has its key.
        let key = |e: &RecordedContractEvent| (e.customer.clone(), e.kind, e.at);
        let chain: Vec<&RecordedContractEvent> = recorded.iter().chain(new).collect();
        let last_new: HashMap<_, usize> = (recorded.len()..chain.len())
            .map(|k| (key(chain[k]), k))
            .collect();
        let all = (chain.iter().enumerate())
            .filter(|(k, e)| last_new.get(&key(e)).is_none_or(|last| last == k))
            .map(|(_, e)| *e);
        let mut all = by_customer(all);
        let touched: HashSet<&str> = new.iter().map(|e| &*e.customer).collect();
        for (i, history) in self.histories.iter().enumerate() {
            if !touched.contains(&*history.customer) {
                continue;
            }
            let mine = all.remove(&*history.customer).unwrap_or_default();
            if let Err((culprit, e)) = merged_history(&self.events[i], &mine, history) {
                let n = culprit
                    .and_then(|k| mine.get(k))
                    .and_then(|r| new.iter().rposition(|x| same_key(x, r)))
                    .or_else(|| new.iter().position(|x| *x.customer == *history.customer))
                    .unwrap_or(0);
                return Err((
                    n,
                    e.field,
                    format!("customer `{}`: {}", history.customer, e.message),
                ));
            }
        }
        Ok(())
    }
}

/// `events` by customer, each customer's in their order.
fn by_customer<'a>(
    events: impl IntoIterator<Item = &'a RecordedContractEvent>,
) -> HashMap<&'a str, Vec<&'a RecordedContractEvent>> {
    let mut out: HashMap<&str, Vec<&RecordedContractEvent>> = HashMap::new();
    for e in events {
        out.entry(&*e.customer).or_default().push(e);
    }
    out
}

/// The order in which `recorded` events take effect (indices into it),
/// after the file's `events`: by day, and a day's by kind, whatever the
/// order they were recorded in. The store gives them back in no order of
/// their recording, so what a recording is checked against must be what
/// every later read replays (a day's start and expansion, accepted in that
/// order, came back expansion first and the customer's whole recorded
/// history was left out). A customer with a contract at the day's start
/// has it changed, then ended, then a new one started (a churn and a
/// re-signing on one day); one without starts first.
fn day_order(events: &[ContractEvent], recorded: &[&RecordedContractEvent]) -> Vec<usize> {
    use ContractEventKind::*;
    const HELD: [ContractEventKind; 5] = [Renewal, Expansion, Contraction, Churn, Start];
    const NONE: [ContractEventKind; 5] = [Start, Renewal, Expansion, Contraction, Churn];
    let mut order: Vec<usize> = (0..recorded.len()).collect();
    order.sort_by_key(|&k| recorded[k].at);
    // Each day's events: whether one starts and one ends a contract.
    let mut days: std::collections::BTreeMap<fleetpulse_engine::EventTime, (bool, bool)> =
        Default::default();
    let kinds =
        (events.iter().map(|e| (e.at, e.kind))).chain(recorded.iter().map(|r| (r.at, r.kind)));
    for (at, kind) in kinds {
        let day = days.entry(at).or_default();
        day.0 |= kind == Start;
        day.1 |= kind == Churn;
    }
    let (mut held, mut first) = (false, 0);
    for (day, (started, churned)) in days {
        let rank = if held { HELD } else { NONE };
        let last = first + order[first..].partition_point(|&k| recorded[k].at <= day);
        order[first..last].sort_by_key(|&k| rank.iter().position(|x| *x == recorded[k].kind));
        held = if held {
            started || !churned
        } else {
            started && !churned
        };
        first = last;
    }
    order
}

fn same_key(a: &RecordedContractEvent, b: &RecordedContractEvent) -> bool {
    a.customer == b.customer && a.kind == b.kind && a.at == b.at
}

/// Why merged events do not add up: the recorded event at fault (its
/// position in the recorded events given; `None`: a file event), and the
/// error.
type MergeError = (Option<usize>, ContractEventError);

/// The file's `events` with `recorded` ones (replacing a file event of the
/// same kind and day), checked into a history.
fn merged_history(
    events: &[ContractEvent],
    recorded: &[&RecordedContractEvent],
    history: &ArrHistory,
) -> Result<(Vec<ContractEvent>, ArrHistory), MergeError> {
    let mut all: Vec<ContractEvent> = events
        .iter()
        .filter(|e| !recorded.iter().any(|r| r.kind == e.kind && r.at == e.at))
        .copied()
        .collect();
    let kept = all.len();
    let order = day_order(&all, recorded);
    all.extend(order.iter().map(|&k| recorded[k].event()));
    match checked_history(history.customer.clone(), history.segment, &all) {
        Ok(merged) => Ok((all, merged)),
        Err(e) => Err((e.index.checked_sub(kept).map(|k| order[k]), e)),
    }
}

fn merge(
    events: &[ContractEvent],
    recorded: &[&RecordedContractEvent],
    history: &ArrHistory,
) -> Result<(Vec<ContractEvent>, ArrHistory), String> {
    merged_history(events, recorded, history).map_err(|(at, e)| {
        let what = match at.and_then(|k| recorded.get(k)) {
            Some(r) => format!(
                "recorded {} of {}",
                r.kind.as_str(),
                crate::touchpoints::day(r.at)
            ),
            None => "a file event".to_string(),
        };
        format!(
            "{what}: field `{}`: {}; its recorded events are left out",
            e.field, e.message
        )
    })
}

/// One contract event as given to the API (`POST /api/contract-events`).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewContractEvent)]
pub struct ContractEventInput {
    /// Customer id.
    pub customer: String,
    /// `start`, `renewal`, `expansion`, `contraction` or `churn`.
    pub kind: String,
    /// The day it takes effect, `YYYY-MM-DD`.
    pub date: String,
    /// The change of ARR: positive for start and expansion, negative for
    /// contraction; left out, a renewal changes nothing and a churn loses
    /// all of the ARR.
    #[serde(default)]
    pub arr_change: Option<f64>,
}

impl ContractEventInput {
    /// The event, recorded by `recorded_by`; errors name the field. Whether
    /// it adds up with the customer's other events is
    /// [`ContractBook::check_new`]'s.
    pub fn check(
        &self,
        recorded_by: &str,
    ) -> Result<RecordedContractEvent, crate::touchpoints::FieldError> {
        let fail = |field: &'static str, message: String| crate::touchpoints::FieldError {
            field,
            message,
        };
        let customer = self.customer.trim();
        if customer.is_empty() {
            return Err(fail("customer", "is missing".into()));
        }
        let kind = ContractEventKind::parse(self.kind.trim())
            .ok_or_else(|| fail("kind", unknown_kind(self.kind.trim())))?;
        let at = date_ms(self.date.trim()).map_err(|e| fail("date", e))?;
        if let Some(v) = self.arr_change {
            if !v.is_finite() {
                return Err(fail("arr_change", "must be a number".into()));
            }
            if v.abs() > MAX_ARR {
                return Err(fail("arr_change", too_large(v)));
            }
        }
        Ok(RecordedContractEvent {
            customer: customer.into(),
            kind,
            at,
            arr_change: self.arr_change,
            recorded_by: recorded_by.into(),
        })
    }
}

/// Reads a contract events CSV file (`customer,kind,date,arr_change`, the
/// format of `contract_events_csv`) for `fleetpulse contracts import`: every
/// line is checked, and must add up with `book` and the `recorded` events,
/// before anything is returned; errors name the file, the line and the
/// column.
pub fn import_csv(
    path: &Path,
    book: &ContractBook,
    recorded: &[RecordedContractEvent],
) -> Result<Vec<RecordedContractEvent>, ConfigError> {
    let rows = read_csv(path)?;
    // The store keeps one event per customer, kind and day: two rows of
    // one key would be checked as adding up and stored as the last.
    let mut lines: HashMap<(&str, ContractEventKind, u64), u64> = HashMap::new();
    for row in &rows {
        let key = (row.customer.as_str(), row.event.kind, row.event.at);
        if let Some(first) = lines.insert(key, row.line) {
            return Err(csv_error(
                path,
                row.line,
                "row",
                format!(
                    "repeats line {first}: customer `{}` has one {} event a day (the store \
                     keeps one row of them); merge the two lines into one",
                    row.customer,
                    row.event.kind.as_str()
                ),
            ));
        }
    }
    let file_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let events: Vec<RecordedContractEvent> = rows
        .iter()
        .map(|r| RecordedContractEvent {
            customer: r.customer.as_str().into(),
            kind: r.event.kind,
            at: r.event.at,
            arr_change: r.event.arr_change,
            recorded_by: format!("csv:{file_name}").into(),
        })
        .collect();
    book.check_new(recorded, &events)
        .map_err(|(n, field, message)| csv_error(path, rows[n].line, field, message))?;
    Ok(events)
}

impl CustomersFile {
    /// Where `contract_events_csv` is, for the customers file at `path`
    /// (relative to it).
    pub fn contract_events_path(&self, path: &Path) -> Option<std::path::PathBuf> {
        let csv = self.contract_events_csv.as_ref()?;
        Some((path.parent().unwrap_or_else(|| Path::new(""))).join(csv.get_ref()))
    }

    /// Each customer's contract events, checked: the inline ones, and those
    /// of `contract_events_csv` (a path relative to the customers file at
    /// `path`; `text` is that file's content, for line numbers). A customer
    /// with no events at all has one implied `start` on `contract.start`
    /// with `contract.arr`; one with events must not contradict
    /// `contract.arr`: the ARR after its last event is its ARR (unless it
    /// churned).
    pub fn contract_book(&self, path: &Path, text: &str) -> Result<ContractBook, ConfigError> {
        let csv_path = self.contract_events_path(path);
        let mut from_csv: HashMap<&str, Vec<(ContractEvent, Source)>> = HashMap::new();
        let csv_rows = match &csv_path {
            Some(csv) => read_csv(csv)?,
            None => Vec::new(),
        };
        let ids: HashSet<&str> = self.customers.iter().map(|c| c.id.as_str()).collect();
        for row in &csv_rows {
            if !ids.contains(row.customer.as_str()) {
                return Err(csv_error(
                    csv_path.as_deref().unwrap_or(path),
                    row.line,
                    "customer",
                    format!("`{}` is not in {}", row.customer, path.display()),
                ));
            }
            from_csv
                .entry(row.customer.as_str())
                .or_default()
                .push((row.event, Source::Csv { line: row.line }));
        }
        let mut book = ContractBook::default();
        for (i, c) in self.customers.iter().enumerate() {
            let mut events: Vec<(ContractEvent, Source)> = Vec::new();
            for (j, e) in c.contract_events.iter().enumerate() {
                let field = format!("customer[{i}].contract_event[{j}]");
                let at = |f: &str, span: std::ops::Range<usize>, message: String| {
                    let (line, column) = line_column(text, span.start);
                    ConfigError::Parse {
                        path: path.to_owned(),
                        line,
                        column,
                        message: format!("field `{field}.{f}`: {message}"),
                    }
                };
                let kind = ContractEventKind::parse(e.kind.get_ref())
                    .ok_or_else(|| at("kind", e.kind.span(), unknown_kind(e.kind.get_ref())))?;
                let date = date_ms(e.date.get_ref()).map_err(|m| at("date", e.date.span(), m))?;
                events.push((
                    ContractEvent {
                        kind,
                        at: date,
                        arr_change: e.arr_change,
                    },
                    Source::Inline {
                        field,
                        offset: e.kind.span().start,
                    },
                ));
            }
            events.extend(from_csv.remove(c.id.as_str()).unwrap_or_default());
            let implied = events.is_empty();
            if implied {
                let start = date_ms(&c.contract.start).map_err(|message| ConfigError::Invalid {
                    path: path.to_owned(),
                    field: format!("customer[{i}].contract.start"),
                    message,
                })?;
                events.push((
                    ContractEvent {
                        kind: ContractEventKind::Start,
                        at: start,
                        arr_change: Some(c.contract.arr),
                    },
                    Source::Contract,
                ));
            }
            let plain: Vec<ContractEvent> = events.iter().map(|(e, _)| *e).collect();
            let history = checked_history(c.id.as_str().into(), c.segment, &plain).map_err(
                |ContractEventError {
                     index,
                     field,
                     message,
                 }| match &events[index].1 {
                    Source::Inline { field: at, offset } => {
                        let (line, column) = line_column(text, *offset);
                        ConfigError::Parse {
                            path: path.to_owned(),
                            line,
                            column,
                            message: format!("field `{at}.{field}`: {message}"),
                        }
                    }
                    Source::Csv { line } => csv_error(
                        csv_path.as_deref().unwrap_or(path),
                        *line,
                        field,
                        format!("customer `{}`: {message}", c.id),
                    ),
                    Source::Contract => crate::customers::contract_arr_error(
                        path,
                        text,
                        i,
                        if field == "arr_change" {
                            format!(
                                "is {}: a customer with no contract event starts on \
                                 contract.start with contract.arr, which must be positive \
                                 (or list its contract events: a `start`, then a `churn`)",
                                c.contract.arr
                            )
                        } else {
                            message
                        },
                    ),
                },
            )?;
            let last = history.steps().last().map(|s| s.kind);
            if !implied
                && last != Some(ContractEventKind::Churn)
                && (history.arr() - c.contract.arr).abs() > 0.005
            {
                return Err(crate::customers::contract_arr_error(
                    path,
                    text,
                    i,
                    format!(
                        "{} differs from the ARR after the customer's last contract event ({})",
                        c.contract.arr,
                        history.arr()
                    ),
                ));
            }
            book.histories.push(history);
            book.events.push(plain);
        }
        Ok(book)
    }
}

/// One data row of the CSV file.
#[derive(Debug)]
struct CsvRow {
    line: u64,
    customer: String,
    event: ContractEvent,
}

fn read_csv(path: &Path) -> Result<Vec<CsvRow>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_csv(path, &text)
}

/// Parses contract events CSV text (`path` is for messages).
fn parse_csv(path: &Path, text: &str) -> Result<Vec<CsvRow>, ConfigError> {
    if let Some(open) = crate::csv_check::unclosed_quote(text.as_bytes()) {
        let column = crate::csv_check::column_name(&CSV_HEADER, open.field);
        return Err(csv_error(path, open.line, column, open.message()));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| csv_error(path, 1, "header", e.to_string()))?;
    if header.iter().collect::<Vec<_>>() != CSV_HEADER {
        return Err(csv_error(
            path,
            1,
            "header",
            format!(
                "expected `{}`, found `{}`",
                CSV_HEADER.join(","),
                header.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e
                .position()
                .map_or(0, |p| crate::csv_check::line_of(text, p));
            csv_error(path, line, "row", e.to_string())
        })?;
        let line = (record.position()).map_or(0, |p| crate::csv_check::line_of(text, p));
        let cell = |i: usize| record.get(i).unwrap_or("");
        let kind = ContractEventKind::parse(cell(1))
            .ok_or_else(|| csv_error(path, line, "kind", unknown_kind(cell(1))))?;
        let at = date_ms(cell(2)).map_err(|e| csv_error(path, line, "date", e))?;
        let arr_change = match cell(3) {
            "" => None,
            v => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        csv_error(path, line, "arr_change", format!("`{v}` is not a number"))
                    })?,
            ),
        };
        if let Some(v) = arr_change
            && v.abs() > MAX_ARR
        {
            return Err(csv_error(path, line, "arr_change", too_large(v)));
        }
        if cell(0).is_empty() {
            return Err(csv_error(path, line, "customer", "is empty".into()));
        }
        rows.push(CsvRow {
            line,
            customer: cell(0).to_string(),
            event: ContractEvent {
                kind,
                at,
                arr_change,
            },
        });
    }
    Ok(rows)
}

fn csv_error(path: &Path, line: u64, field: &str, message: String) -> ConfigError {
    ConfigError::Parse {
        path: path.to_owned(),
        line: usize::try_from(line).unwrap_or(usize::MAX),
        column: 1,
        message: format!("field `{field}`: {message}"),
    }
}

fn unknown_kind(name: &str) -> String {
    let known: Vec<&str> = ContractEventKind::ALL.iter().map(|k| k.as_str()).collect();
    format!("`{name}` is not one of {}", known.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
contract_events_csv = "events.csv"

[[customer]]
id = "acme"
name = "Acme"
segment = "high-touch"
[customer.contract]
arr = 150
start = "2026-01-01"
renewal = "2027-01-01"
devices_purchased = 5

[[customer.contract_event]]
kind = "start"
date = "2026-01-01"
arr_change = 100

[[customer.contract_event]]
kind = "expansion"
date = "2026-05-01"
arr_change = 50

[[customer]]
id = "bolt"
name = "Bolt"
segment = "low-touch"
[customer.contract]
arr = 300
start = "2025-01-01"
renewal = "2026-01-01"
devices_purchased = 5

[[customer]]
id = "cube"
name = "Cube"
segment = "tech-touch"
[customer.contract]
arr = 80
start = "2025-03-01"
renewal = "2026-03-01"
devices_purchased = 5
"#;

    const CSV: &str = "customer,kind,date,arr_change\n\
        bolt,start,2025-01-01,300\n\
        bolt,churn,2026-04-15,\n\
        \n";

    fn book(file: &str, csv: &str) -> Result<ContractBook, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("customers.toml");
        std::fs::write(&path, file).unwrap();
        std::fs::write(dir.path().join("events.csv"), csv).unwrap();
        let customers: CustomersFile =
            crate::config::parse_toml(&path, file).map_err(|e| e.to_string())?;
        customers.contract_book(&path, file).map_err(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
    }

    #[test]
    fn events_come_from_the_file_the_csv_and_the_contract() {
        let book = book(FILE, CSV).unwrap();
        let acme = book.get("acme").unwrap();
        assert_eq!(acme.steps().len(), 2);
        assert_eq!(acme.arr(), 150.0);
        let bolt = book.get("bolt").unwrap();
        assert_eq!(bolt.steps()[1].kind, ContractEventKind::Churn);
        assert_eq!(bolt.steps()[1].arr_change, -300.0);
        assert_eq!(bolt.arr(), 0.0);
        // No events: one start on contract.start with contract.arr.
        let cube = book.get("cube").unwrap();
        assert_eq!(cube.steps().len(), 1);
        assert_eq!(cube.arr_before(date_ms("2025-03-02").unwrap()), 80.0);
    }

    #[test]
    fn mistakes_name_file_line_and_field() {
        let cases: [(&str, &str, &str, &[&str]); 6] = [
            (
                FILE,
                &CSV.replace("churn", "chrun"),
                "DIR/events.csv:3:1:",
                &["field `kind`", "`chrun`"],
            ),
            (
                FILE,
                &CSV.replace("bolt,start", "blot,start"),
                "DIR/events.csv:2:1:",
                &["field `customer`", "`blot`"],
            ),
            (
                FILE,
                &CSV.replace(",300", ",lots"),
                "DIR/events.csv:2:1:",
                &["field `arr_change`"],
            ),
            (
                FILE,
                &CSV.replace("2026-04-15", "15/04/2026"),
                "DIR/events.csv:3:1:",
                &["field `date`"],
            ),
            (
                FILE,
                &CSV.replace("churn,2026-04-15,", "churn,2026-04-15,-10"),
                "DIR/events.csv:3:1:",
                &["field `arr_change`", "all of the ARR"],
            ),
            (
                &FILE.replace("\"expansion\"", "\"contraction\""),
                CSV,
                "DIR/customers.toml:20:",
                &["customer[0].contract_event[1].arr_change", "negative"],
            ),
        ];
        for (file, csv, at, named) in cases {
            let err = book(file, csv).unwrap_err();
            assert!(err.starts_with(at), "{err}");
            for name in named {
                assert!(err.contains(name), "{err}");
            }
        }
        let err = book(&FILE.replace("arr = 150", "arr = 140"), CSV).unwrap_err();
        assert!(err.contains("customer[0].contract.arr"), "{err}");
        let err = book(FILE, "customer,date,kind,arr_change\n").unwrap_err();
        assert!(
            err.starts_with("DIR/events.csv:1:1: field `header`"),
            "{err}"
        );
    }

    fn recorded(
        customer: &str,
        kind: ContractEventKind,
        date: &str,
        arr: Option<f64>,
    ) -> RecordedContractEvent {
        RecordedContractEvent {
            customer: customer.into(),
            kind,
            at: date_ms(date).unwrap(),
            arr_change: arr,
            recorded_by: "test".into(),
        }
    }

    #[test]
    fn recorded_events_add_to_the_file_and_replace_its_same_day_kind() {
        use ContractEventKind::*;
        let file = book(FILE, CSV).unwrap();
        let (merged, conflicts) = file.merged(&[
            // acme's file expansion of 50 on 1 May, recorded again as 80.
            recorded("acme", Expansion, "2026-05-01", Some(80.0)),
            // cube's implied start stays; a contraction is added.
            recorded("cube", Contraction, "2026-06-01", Some(-30.0)),
            // Not in the file: left out.
            recorded("gone", Expansion, "2026-06-01", Some(1.0)),
        ]);
        assert!(conflicts.is_empty(), "{conflicts:?}");
        let acme = merged.get("acme").unwrap();
        assert_eq!(acme.steps().len(), 2);
        assert_eq!(acme.arr(), 180.0);
        let cube = merged.get("cube").unwrap();
        assert_eq!(cube.steps().len(), 2);
        assert_eq!(cube.arr(), 50.0);
        // The file's book is untouched.
        assert_eq!(file.get("acme").unwrap().arr(), 150.0);
    }

    /// A book of 5,000 customers with two inline events each, and as many
    /// recorded events: a mistake in the last customer still names its
    /// line (counting lines for every event took minutes at 20,000
    /// customers), and every customer's recorded event is merged and
    /// checked with its own history.
    #[test]
    fn a_book_of_thousands_of_customers_names_its_last_mistake_and_merges_every_customer() {
        use ContractEventKind::*;
        let start = FILE.find("[[customer]]").unwrap();
        let acme = &FILE[start..FILE.find("[[customer]]\nid = \"bolt\"").unwrap()];
        let mut file = String::from("contract_events_csv = \"events.csv\"\n\n");
        for i in 0..5000 {
            file.push_str(&acme.replace("\"acme\"", &format!("\"c{i:04}\"")));
        }
        let header = "customer,kind,date,arr_change\n";
        let good = book(&file, header).unwrap();
        assert_eq!(good.histories.len(), 5000);

        let events: Vec<_> = (0..5000)
            .map(|i| recorded(&format!("c{i:04}"), Expansion, "2026-05-01", Some(80.0)))
            .collect();
        let (merged, conflicts) = good.merged(&events);
        assert!(conflicts.is_empty(), "{conflicts:?}");
        assert!(merged.histories.iter().all(|h| h.arr() == 180.0));
        assert!(good.check_new(&[], &events).is_ok());
        // A later row of one key replaces the earlier: the error names
        // the later (the earlier used to be named, a line it did not come from).
        let mut twice = events.clone();
        twice.push(recorded("c4321", Expansion, "2026-05-01", Some(-900.0)));
        let (n, _, message) = good.check_new(&[], &twice).unwrap_err();
        assert_eq!(n, 5000, "{message}");
        assert!(message.contains("`c4321`"), "{message}");

        let at = file.rfind("\"expansion\"").unwrap();
        file.replace_range(at..at + "\"expansion\"".len(), "\"contraction\"");
        let line = file[..at].lines().count();
        let err = book(&file, header).unwrap_err();
        assert!(
            err.starts_with(&format!("DIR/customers.toml:{line}:")),
            "line {line}: {err}"
        );
        assert!(
            err.contains("customer[4999].contract_event[1].arr_change"),
            "{err}"
        );
    }

    /// `contracts import` of `csv` against the book of [`FILE`]: the
    /// events, or the error with the directory as `DIR`.
    fn import(csv: &str) -> Result<Vec<RecordedContractEvent>, String> {
        let file = book(FILE, CSV).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("import.csv");
        std::fs::write(&path, csv).unwrap();
        import_csv(&path, &file, &[]).map_err(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
    }

    /// An unterminated quote used to swallow the rows after it; refused at
    /// the line it opened, in an import and in `contract_events_csv`.
    #[test]
    fn an_unterminated_quote_is_refused_at_its_line() {
        let err = import(
            "customer,kind,date,arr_change\n\
             cube,expansion,2026-03-01,10\n\
             \"cube,contraction,2026-04-01,-10\n\
             cube,expansion,2026-05-01,10\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("DIR/import.csv:3:1: field `customer`"),
            "{err}"
        );
        assert!(err.contains("never comes"), "{err}");
        let err = book(FILE, &CSV.replace("bolt,churn", "bolt,\"churn")).unwrap_err();
        assert!(err.starts_with("DIR/events.csv:3:1: field `kind`"), "{err}");
        assert!(err.contains("never comes"), "{err}");
    }

    /// Two rows of one key (customer, kind, day) in one import were checked
    /// as adding up (+100 and +200) and stored as the last (+200): refused,
    /// naming both lines. Importing a file again stays a no-op overwrite.
    #[test]
    fn a_key_repeated_in_one_import_is_refused_naming_both_lines() {
        let header = "customer,kind,date,arr_change\n";
        let err = import(&format!(
            "{header}cube,expansion,2026-03-01,100\nacme,expansion,2026-03-01,5\n\
             cube,expansion,2026-03-01,200\n"
        ))
        .unwrap_err();
        assert!(
            err.starts_with("DIR/import.csv:4:1: field `row`: repeats line 2"),
            "{err}"
        );
        let once = format!("{header}cube,expansion,2026-03-01,100\n");
        let events = import(&once).unwrap();
        let file = book(FILE, CSV).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("again.csv");
        std::fs::write(&path, &once).unwrap();
        assert_eq!(import_csv(&path, &file, &events).unwrap().len(), 1);
    }

    /// ARR and ARR changes are at most `MAX_ARR`, and so is the ARR they
    /// add up to: two expansions of 1e308 made every retention figure null.
    #[test]
    fn arr_beyond_the_maximum_is_refused_naming_the_field() {
        let file = book(FILE, CSV).unwrap();
        let input = |arr: f64| ContractEventInput {
            customer: "cube".into(),
            kind: "expansion".into(),
            date: "2026-06-01".into(),
            arr_change: Some(arr),
        };
        let err = input(1e308).check("cli").unwrap_err();
        assert_eq!(err.field, "arr_change");
        assert!(err.message.contains("1e15"), "{}", err.message);
        // Each below the maximum, their sum above it.
        let half = input(6e14).check("cli").unwrap();
        let mut later = half.clone();
        later.at = date_ms("2026-07-01").unwrap();
        assert!(file.check_new(&[], std::slice::from_ref(&half)).is_ok());
        let (n, field, message) = file.check_new(&[half], &[later]).unwrap_err();
        assert_eq!((n, field), (0, "arr_change"));
        assert!(message.contains("above the most accepted"), "{message}");
        // In a CSV: the line and the column, whatever its line ends.
        let err =
            import("customer,kind,date,arr_change\ncube,expansion,2026-06-01,1e308\n").unwrap_err();
        assert!(
            err.starts_with("DIR/import.csv:2:1: field `arr_change`"),
            "{err}"
        );
        let crlf = "customer,kind,date,arr_change\r\ncube,renewal,2026-05-01,\r\n\
                    cube,expansion,2026-06-01,1e308\r\n";
        let err = import(crlf).unwrap_err();
        assert!(
            err.starts_with("DIR/import.csv:3:1: field `arr_change`"),
            "{err}"
        );
        // In the customers file: contract.arr, and an inline event's change.
        let text = FILE.replace("arr = 80", "arr = 1e308");
        let line = text[..text.find("arr = 1e308").unwrap()].lines().count() + 1;
        let err = CustomersFile::parse(Path::new("customers.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "customers.toml:{line}:7: field `customer[2].contract.arr`"
            )),
            "{err}"
        );
        assert!(err.contains("1e15"), "{err}");
        let text = FILE.replace("arr_change = 50", "arr_change = 1e300");
        let err = book(&text, CSV).unwrap_err();
        assert!(err.starts_with("DIR/customers.toml:20:"), "{err}");
        assert!(
            err.contains("customer[0].contract_event[1].arr_change"),
            "{err}"
        );
    }

    /// `contract.arr` that is not the ARR its events add up to: named at
    /// its line and column, as every other mistake in the file is.
    #[test]
    fn a_contract_arr_its_events_do_not_add_up_to_names_its_line() {
        let file = FILE.replacen("arr = 150", "arr = 170", 1);
        let line = file[..file.find("arr = 170").unwrap()].lines().count() + 1;
        let err = book(&file, CSV).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "DIR/customers.toml:{line}:7: field `customer[0].contract.arr`: 170 differs"
            )),
            "{err}"
        );
    }

    /// `arr = 0` on a customer with no contract event: named at its line,
    /// as `contract.arr`, not as an implied start's "ARR change".
    #[test]
    fn a_zero_arr_without_events_names_contract_arr_at_its_line() {
        let file = FILE.replace("arr = 80", "arr = 0");
        let line = file[..file.find("arr = 0").unwrap()].lines().count() + 1;
        let err = book(&file, CSV).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "DIR/customers.toml:{line}:7: field `customer[2].contract.arr`: is 0"
            )),
            "{err}"
        );
        assert!(!err.contains("ARR change"), "{err}");
    }

    /// A day's events are checked in the order every read replays them,
    /// whatever the order they came in: accepted, they are never left out
    /// later (a start and an expansion of one day, accepted in that order,
    /// were read back expansion first and the customer's recorded history
    /// dropped, its churn with it).
    #[test]
    fn a_day_s_events_are_checked_in_the_order_they_are_read_back() {
        use ContractEventKind::*;
        let file = book(FILE, CSV).unwrap();
        let back = [
            recorded("bolt", Start, "2026-06-01", Some(500.0)),
            recorded("bolt", Expansion, "2026-06-01", Some(10.0)),
        ];
        // Given either way round, accepted; read back as the store orders
        // them (by day, then kind's name), nothing is left out.
        for given in [back.to_vec(), back.iter().rev().cloned().collect()] {
            file.check_new(&[], &given).unwrap();
            let mut stored = given.clone();
            stored.sort_by(|a, b| (a.at, a.kind.as_str()).cmp(&(b.at, b.kind.as_str())));
            let (merged, conflicts) = file.merged(&stored);
            assert!(conflicts.is_empty(), "{conflicts:?}");
            let after = date_ms("2026-06-02").unwrap();
            assert_eq!(merged.get("bolt").unwrap().arr_before(after), 510.0);
        }
        // An active customer's contract ended and a new one signed on one
        // day, recorded either way round: the churn first, then the start.
        let resigned = [
            recorded("cube", Churn, "2026-04-01", None),
            recorded("cube", Start, "2026-04-01", Some(12.0)),
        ];
        for given in [resigned.to_vec(), resigned.iter().rev().cloned().collect()] {
            file.check_new(&[], &given).unwrap();
            let (merged, conflicts) = file.merged(&given);
            assert!(conflicts.is_empty(), "{conflicts:?}");
            let after = date_ms("2026-04-02").unwrap();
            assert_eq!(merged.get("cube").unwrap().arr_before(after), 12.0);
        }
        // A product swap: more ARR and less on one day, the more first.
        let swap = [
            recorded("cube", Contraction, "2026-06-01", Some(-150.0)),
            recorded("cube", Expansion, "2026-06-01", Some(100.0)),
        ];
        file.check_new(&[], &swap).unwrap();
        assert!(file.merged(&swap).1.is_empty());
        // Recorded one at a time, the same.
        file.check_new(&swap[..1], &swap[1..]).unwrap();
    }

    #[test]
    fn recorded_events_that_do_not_add_up_are_refused_or_left_out() {
        use ContractEventKind::*;
        let file = book(FILE, CSV).unwrap();
        // bolt churned on 15 April 2026: an expansion after it is refused.
        let late = recorded("bolt", Expansion, "2026-05-01", Some(10.0));
        let (n, field, message) = file
            .check_new(&[], std::slice::from_ref(&late))
            .unwrap_err();
        assert_eq!((n, field), (0, "kind"));
        assert!(message.contains("`bolt`"), "{message}");
        // An unknown customer names the field.
        let stranger = recorded("nobody", Start, "2026-05-01", Some(10.0));
        assert_eq!(file.check_new(&[], &[stranger]).unwrap_err().1, "customer");
        // A second row of the same key replaces the first, as in the store.
        let small = recorded("cube", Contraction, "2026-06-01", Some(-90.0));
        let fixed = recorded("cube", Contraction, "2026-06-01", Some(-30.0));
        assert!(file.check_new(&[], &[small.clone(), fixed]).is_ok());
        assert!(file.check_new(&[], std::slice::from_ref(&small)).is_err());
        // Stored events the file no longer agrees with are left out of the
        // merge and reported.
        let (merged, conflicts) = file.merged(&[late]);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].customer, "bolt");
        assert!(
            conflicts[0]
                .message
                .contains("recorded expansion of 2026-05-01"),
            "{conflicts:?}"
        );
        assert_eq!(merged.get("bolt"), file.get("bolt"));
    }
}
