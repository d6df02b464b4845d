//! Touchpoints as people give them: a JSON body of the API, the arguments
//! of `fleetpulse touchpoints add`, a row of a CSV import. Each is checked
//! into the engine's [`Touchpoint`] here, with errors that name the field
//! (and for a CSV file, the file and the line); the SQLite store keeps them
//! (`SqliteStore::record_touchpoints`).

pub mod cli;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fleetpulse_engine::kpi::touchpoint::{Touchpoint, TouchpointKind};
use serde::Deserialize;

use crate::customers::date_ms;

/// The columns of a touchpoints CSV file, in this order, with a header.
pub const CSV_HEADER: [&str; 7] = [
    "customer",
    "kind",
    "date",
    "csm",
    "attendees",
    "decision_maker_present",
    "notes",
];

/// One touchpoint as given (the API's JSON body).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewTouchpoint)]
pub struct TouchpointInput {
    /// `kickoff`, `training`, `onsite_visit`, `health_check_call`,
    /// `business_review`, `webinar` or `escalation`.
    pub kind: String,
    /// The day it took place, `YYYY-MM-DD`.
    pub date: String,
    /// The CS manager who held it; the API defaults to the user.
    #[serde(default)]
    pub csm: Option<String>,
    /// Who attended from the customer, `;`-separated.
    #[serde(default)]
    pub attendees: String,
    /// A decision-maker of the customer attended.
    #[serde(default)]
    pub decision_maker_present: bool,
    /// Free text.
    #[serde(default)]
    pub notes: String,
}

/// A field that does not check, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FieldError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn field(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// Longest free text kept (attendees, notes), in bytes.
pub const MAX_TEXT: usize = 2000;

impl TouchpointInput {
    /// The touchpoint of `customer`, recorded by `recorded_by`; `csm`
    /// stands in when the input names none.
    pub fn check(
        &self,
        customer: &str,
        csm: Option<&str>,
        recorded_by: &str,
    ) -> Result<Touchpoint, FieldError> {
        let kind = TouchpointKind::parse(self.kind.trim()).ok_or_else(|| {
            let known: Vec<&str> = TouchpointKind::ALL.iter().map(|k| k.as_str()).collect();
            field(
                "kind",
                format!("`{}` is not one of {}", self.kind, known.join(", ")),
            )
        })?;
        let at = date_ms(self.date.trim()).map_err(|e| field("date", e))?;
        let csm = self
            .csm
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .or(csm)
            .ok_or_else(|| field("csm", "is missing"))?;
        if let Some(why) = crate::text::name_refusal(csm) {
            return Err(field("csm", why));
        }
        for (name, text) in [("attendees", &self.attendees), ("notes", &self.notes)] {
            if text.len() > MAX_TEXT {
                return Err(field(
                    name,
                    format!("{} bytes, at most {MAX_TEXT}", text.len()),
                ));
            }
            if let Some(why) = crate::text::refusal(text, name == "notes") {
                return Err(field(name, why));
            }
        }
        Ok(Touchpoint {
            customer: customer.into(),
            kind,
            at,
            csm: csm.into(),
            attendees: self.attendees.trim().to_string(),
            decision_maker_present: self.decision_maker_present,
            notes: self.notes.trim().to_string(),
            recorded_by: recorded_by.into(),
        })
    }
}

/// `YYYY-MM-DD` of a day (ms since the epoch, UTC).
pub fn day(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// A touchpoints CSV file that does not check: `file:line: field ...`.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is wrong.
    #[error("{path}:{line}: field `{field}`: {message}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line.
        line: u64,
        /// The column at fault (`header`, `row` for the shape).
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads and checks a touchpoints CSV file; with `known`, every customer
/// must be one of them. Nothing is returned unless every line checks.
pub fn read_csv(
    path: &Path,
    known: Option<&HashSet<String>>,
) -> Result<Vec<Touchpoint>, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_csv(path, &text, known)
}

/// [`read_csv`] over text (`path` is for messages).
pub fn parse_csv(
    path: &Path,
    text: &str,
    known: Option<&HashSet<String>>,
) -> Result<Vec<Touchpoint>, ImportError> {
    let shown = path.display().to_string();
    let at = |line: u64, f: &str, message: String| ImportError::Line {
        path: shown.clone(),
        line,
        field: f.to_string(),
        message,
    };
    let file_name = path
        .file_name()
        .map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned());
    let recorded_by = format!("csv:{file_name}");
    if let Some(open) = crate::csv_check::unclosed_quote(text.as_bytes()) {
        let column = crate::csv_check::column_name(&CSV_HEADER, open.field);
        return Err(at(open.line, column, open.message()));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| at(1, "header", e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    if header != CSV_HEADER {
        return Err(at(
            1,
            "header",
            format!(
                "expected `{}`, found `{}`",
                CSV_HEADER.join(","),
                header.join(",")
            ),
        ));
    }
    let mut out = Vec::new();
    // The store keeps one touchpoint per key: two rows of one key would be
    // counted as two and stored as one.
    let mut lines: HashMap<(String, TouchpointKind, u64, String), u64> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e
                .position()
                .map_or(0, |p| crate::csv_check::line_of(text, p));
            at(line, "row", e.to_string())
        })?;
        let line = (record.position()).map_or(0, |p| crate::csv_check::line_of(text, p));
        let cell = |i: usize| record.get(i).unwrap_or("").to_string();
        let customer = cell(0);
        if customer.is_empty() {
            return Err(at(line, "customer", "is empty".into()));
        }
        if let Some(known) = known
            && !known.contains(&customer)
        {
            return Err(at(
                line,
                "customer",
                format!("`{customer}` is not in the customers file"),
            ));
        }
        let decision_maker_present = match cell(5).to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => true,
            "false" | "no" | "0" | "" => false,
            other => {
                return Err(at(
                    line,
                    "decision_maker_present",
                    format!("`{other}` is not true or false"),
                ));
            }
        };
        let input = TouchpointInput {
            kind: cell(1),
            date: cell(2),
            csm: Some(cell(3)),
            attendees: cell(4),
            decision_maker_present,
            notes: cell(6),
        };
        let touchpoint = input
            .check(&customer, None, &recorded_by)
            .map_err(|e| at(line, e.field, e.message))?;
        let key = (
            touchpoint.customer.to_string(),
            touchpoint.kind,
            touchpoint.at,
            touchpoint.csm.to_string(),
        );
        if let Some(first) = lines.insert(key, line) {
            return Err(at(
                line,
                "row",
                format!(
                    "repeats line {first}: the same customer, kind, date and csm are one \
                     touchpoint (the store keeps one row of them); merge the two lines into one"
                ),
            ));
        }
        out.push(touchpoint);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "customer,kind,date,csm,attendees,decision_maker_present,notes\n\
        acme,business_review,2026-03-02,alice,CEO Jo Bloggs;ops lead,true,EBR Q1\n\
        acme,training,2026-03-10,alice,12 operators,false,\n";

    fn known() -> HashSet<String> {
        ["acme".to_string()].into()
    }

    #[test]
    fn a_csv_file_becomes_touchpoints() {
        let got = parse_csv(Path::new("dir/tp.csv"), CSV, Some(&known())).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].kind, TouchpointKind::BusinessReview);
        assert_eq!(got[0].at, date_ms("2026-03-02").unwrap());
        assert!(got[0].decision_maker_present);
        assert_eq!(got[0].attendees, "CEO Jo Bloggs;ops lead");
        assert_eq!(&*got[0].recorded_by, "csv:tp.csv");
        assert_eq!(got[1].kind, TouchpointKind::Training);
        assert!(!got[1].decision_maker_present);
    }

    #[test]
    fn mistakes_name_file_line_and_field() {
        let cases = [
            (
                "business_review",
                "qbr",
                "dir/tp.csv:2: field `kind`: `qbr`",
            ),
            ("2026-03-10", "10.3.2026", "dir/tp.csv:3: field `date`"),
            (
                "true,EBR",
                "perhaps,EBR",
                "dir/tp.csv:2: field `decision_maker_present`",
            ),
            (
                "acme,training",
                "acne,training",
                "dir/tp.csv:3: field `customer`: `acne`",
            ),
            (",alice,12", ",,12", "dir/tp.csv:3: field `csm`: is missing"),
            // An escape sequence would drive the terminal of whoever lists
            // it; a direction override shows the name backwards.
            (
                "EBR Q1",
                "EBR \u{1b}[31mQ1",
                "dir/tp.csv:2: field `notes`: holds a control",
            ),
            (
                ",alice,12",
                ",al\u{202e}ice,12",
                "dir/tp.csv:3: field `csm`: holds a direction",
            ),
            (
                "customer,kind",
                "client,kind",
                "dir/tp.csv:1: field `header`",
            ),
        ];
        for (from, to, expected) in cases {
            let text = CSV.replace(from, to);
            let err = parse_csv(Path::new("dir/tp.csv"), &text, Some(&known()))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err}");
        }
    }

    /// An unterminated quote used to swallow the rows after it into one
    /// touchpoint's notes ("recorded 1 touchpoints"); it is refused at the
    /// line it opened. Quoted notes of several lines and `""` still read.
    #[test]
    fn an_unterminated_quote_is_refused_at_its_line() {
        let text = format!(
            "{}acme,webinar,2026-03-12,bob,Jo,true,\"oops\n\
             acme,kickoff,2026-03-13,bob,Jo,true,x\n\
             acme,escalation,2026-03-14,bob,Jo,true,x\n",
            CSV
        );
        let err = parse_csv(Path::new("dir/tp.csv"), &text, Some(&known()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("dir/tp.csv:4: field `notes`:"), "{err}");
        assert!(err.contains("never comes"), "{err}");
        let text = format!(
            "{}acme,webinar,2026-03-12,bob,Jo,true,\"line one\nsaid \"\"hi\"\"\"\n\
             acme,kickoff,2026-03-13,bob,Jo,true,x\n",
            CSV
        );
        let got = parse_csv(Path::new("dir/tp.csv"), &text, Some(&known())).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[2].notes, "line one\nsaid \"hi\"");
    }

    /// Two rows of one key (customer, kind, day, csm) were counted as two
    /// and stored as one: refused, naming both lines.
    #[test]
    fn a_key_repeated_in_one_file_is_refused_naming_both_lines() {
        let text = format!("{CSV}acme,training,2026-03-10,alice,ops,true,again\n");
        let err = parse_csv(Path::new("dir/tp.csv"), &text, Some(&known()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("dir/tp.csv:4: field `row`: repeats line 3"),
            "{err}"
        );
        // Another CSM on the same day is another touchpoint.
        let text = format!("{CSV}acme,training,2026-03-10,bob,ops,true,again\n");
        assert_eq!(
            parse_csv(Path::new("dir/tp.csv"), &text, Some(&known()))
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn the_api_body_defaults_the_csm_to_the_user() {
        let input: TouchpointInput = serde_json::from_str(
            r#"{"kind": "onsite_visit", "date": "2026-04-01", "decision_maker_present": true}"#,
        )
        .unwrap();
        let t = input.check("acme", Some("alice"), "alice").unwrap();
        assert_eq!((&*t.csm, &*t.recorded_by), ("alice", "alice"));
        let err = input.check("acme", None, "cli").unwrap_err();
        assert_eq!(err.field, "csm");
        assert!(
            serde_json::from_str::<TouchpointInput>(
                r#"{"kind": "training", "date": "2026-04-01", "when": 1}"#
            )
            .is_err()
        );
    }
}
