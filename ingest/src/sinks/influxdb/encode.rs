//! KPI records as InfluxDB line protocol. Pure functions, no I/O.
//!
//! ```text
//! customer_kpi,customer=acme,window=1h window_end=1700003600000i,devices_purchased=4i,...,samples=360i 1700000000000000000
//! ```
//!
//! The measurement is the record kind's name, its tags and timestamp are the
//! columns its definition marks `Tag` and `Time` (`crate::records`; the
//! tables are in `docs/SCHEMA.md`), and every other column is a field.
//!
//! - Tags are sorted by key, as InfluxDB prefers.
//! - Every other column is a field, in column order: integers with the `i`
//!   suffix, floats always with a decimal point or an exponent (`3.0`, never
//!   `3`, so no reader mistakes them for integers), booleans as `true` /
//!   `false`, enums (`last_state`, `direction`, `status`, `band`, `stage`)
//!   and texts as strings. Times (`window_end`, `last_seen`, `due_at`,
//!   `reached_at`, `resolved_at`) are integer fields in ms since the epoch.
//! - The timestamp is in nanoseconds (write with `precision=ns`). An alert's
//!   timestamp is `opened_at`, so the resolve of an episode lands on the
//!   point of its open and overwrites it.
//! - A non-finite float (NaN, ±inf) has no line-protocol form: that one field
//!   is left out of the line (an undefined outcome `value` is NaN, and the
//!   `days_since_activation` of a fleet that never reported). Absent
//!   optional values (`outcome_attainment`, `maturity`, `time_to_value_days`,
//!   `reached_at`, `resolved_at`) are left out the same way.
//!
//! Escaping follows the line-protocol reference: in the measurement, commas
//! and spaces; in tag keys, tag values and field keys, commas, equals signs
//! and spaces; in string field values, double quotes and backslashes (and a
//! line break in a string field becomes a space). Tag values pass through
//! byte for byte otherwise, so UTF-8 round-trips.
//!
//! A backslash in a tag value is written as is, because InfluxDB does not
//! unescape `\\` in tags while VictoriaMetrics does. That leaves a few values
//! that no encoding stores identically in both: a backslash at the end, or
//! followed by another backslash, a comma, an equals sign or a space. Those
//! records, records with an empty tag value and records with a line break in
//! a tag value are refused with [`EncodeError`].

use fleetpulse_engine::Output;
use thiserror::Error;

use crate::records::{Column, RecordKind, RecordVisitor, Role, Value, with_record};

/// Why a record has no line-protocol form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A tag value is empty; line protocol has no empty tag values.
    #[error("tag `{tag}` is empty")]
    EmptyTag {
        /// The tag key.
        tag: &'static str,
    },
    /// A tag value holds a line break, which ends a line in line protocol.
    #[error("tag `{tag}` value {value:?} holds a line break")]
    LineBreak {
        /// The tag key.
        tag: &'static str,
        /// The tag value.
        value: String,
    },
    /// A tag value holds a backslash that InfluxDB and VictoriaMetrics would
    /// read back differently.
    #[error(
        "tag `{tag}` value {value:?} has a backslash at its end or before `\\`, `,`, `=` or a space"
    )]
    AmbiguousBackslash {
        /// The tag key.
        tag: &'static str,
        /// The tag value.
        value: String,
    },
}

/// A batch of records as one request body.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EncodedBatch {
    /// The lines, each ending in `\n`.
    pub body: String,
    /// Number of lines in `body`.
    pub lines: usize,
    /// Records left out, by their index in the input, with the reason.
    pub rejected: Vec<(usize, EncodeError)>,
}

/// Encodes every record it can; the others are listed in
/// [`EncodedBatch::rejected`].
pub fn encode_batch(records: &[Output]) -> EncodedBatch {
    let mut batch = EncodedBatch {
        body: String::with_capacity(records.len() * 360),
        ..EncodedBatch::default()
    };
    for (index, record) in records.iter().enumerate() {
        match encode_record(record, &mut batch.body) {
            Ok(()) => batch.lines += 1,
            Err(e) => batch.rejected.push((index, e)),
        }
    }
    batch
}

/// Appends the record's line (with its `\n`) to `out`. On error nothing is
/// appended.
pub fn encode_record(record: &Output, out: &mut String) -> Result<(), EncodeError> {
    with_record(record, &mut Line { out })
}

/// Encodes one record of any kind.
struct Line<'o> {
    out: &'o mut String,
}

impl RecordVisitor for Line<'_> {
    type Out = Result<(), EncodeError>;

    fn record<R: RecordKind>(&mut self, record: &R) -> Self::Out {
        encode(record, self.out)
    }
}

/// The line of `record`: its kind's name as measurement, its tag columns
/// sorted by key, every other column but the timestamp as a field, in
/// column order.
pub(crate) fn encode<R: RecordKind>(record: &R, out: &mut String) -> Result<(), EncodeError> {
    if const { tags_lead(R::COLUMNS) } {
        encode_in_one_visit(record, out)
    } else {
        encode_by_table(record, out)
    }
}

/// Most tags a kind whose tags lead its columns may have.
const MAX_TAGS: usize = 8;

/// Whether every tag column comes before every field column (and there are
/// at most [`MAX_TAGS`]): then the tags are known when the first field is
/// written, and a record is written as it is visited.
const fn tags_lead(columns: &[Column]) -> bool {
    let (mut i, mut tags, mut fields_began) = (0, 0, false);
    while i < columns.len() {
        let (mut tag, mut time, mut r) = (false, false, 0);
        while r < columns[i].roles.len() {
            tag |= matches!(columns[i].roles[r], Role::Tag);
            time |= matches!(columns[i].roles[r], Role::Time);
            r += 1;
        }
        if tag {
            if fields_began {
                return false;
            }
            tags += 1;
        } else if !time {
            fields_began = true;
        }
        i += 1;
    }
    tags <= MAX_TAGS
}

/// [`encode`] for a kind whose tags lead: the measurement and the sorted
/// tags at the first field, then each field as it is visited (no copy of
/// the values, every device-hour of the fleet goes through here).
fn encode_in_one_visit<R: RecordKind>(record: &R, out: &mut String) -> Result<(), EncodeError> {
    let start = out.len();
    let mut tags = [("", ""); MAX_TAGS];
    let mut tag_count = 0;
    let mut time = 0;
    let mut columns = R::COLUMNS.iter();
    let (mut head_written, mut first) = (false, true);
    let mut failed = None;
    record.visit(&mut |value| {
        let column = columns.next().expect("one value per column");
        if failed.is_some() {
            return;
        }
        if column.is(Role::Tag) {
            match value {
                Value::Text(text) => tags[tag_count] = (column.name, text),
                other => unreachable!("tag `{}` is text, not {other:?}", column.name),
            }
            tag_count += 1;
            return;
        }
        if column.is(Role::Time) {
            if let Value::Integer(t) = value {
                time = t;
            }
            return;
        }
        if !head_written {
            head_written = true;
            if let Err(e) = head(R::NAME, &mut tags[..tag_count], out) {
                failed = Some(e);
                return;
            }
        }
        let mut fields = Fields { out, first };
        match value {
            Value::Integer(v) => fields.int(column.name, v),
            Value::Real(v) => fields.float(column.name, v),
            Value::Boolean(v) => fields.bool(column.name, v),
            Value::Text(v) => fields.string(column.name, v),
            Value::Absent => {}
        }
        first = fields.first;
    });
    if !head_written {
        failed = head(R::NAME, &mut tags[..tag_count], out).err();
    }
    if let Some(e) = failed {
        out.truncate(start);
        return Err(e);
    }
    timestamp(out, time);
    Ok(())
}

/// [`encode`] for any kind, from a table of its values.
fn encode_by_table<R: RecordKind>(record: &R, out: &mut String) -> Result<(), EncodeError> {
    let values = record.values();
    let columns = || R::COLUMNS.iter().zip(values.iter().copied());
    let mut tags: Vec<(&'static str, &str)> = columns()
        .filter(|(c, _)| c.is(Role::Tag))
        .map(|(c, v)| match v {
            Value::Text(text) => (c.name, text),
            other => unreachable!("tag `{}` is text, not {other:?}", c.name),
        })
        .collect();
    head(R::NAME, &mut tags, out)?;
    let mut time = 0;
    let mut fields = Fields::new(out);
    for (column, value) in columns() {
        match value {
            Value::Integer(t) if column.is(Role::Time) => time = t,
            _ if !column.is_field() => {}
            Value::Integer(v) => fields.int(column.name, v),
            Value::Real(v) => fields.float(column.name, v),
            Value::Boolean(v) => fields.bool(column.name, v),
            Value::Text(v) => fields.string(column.name, v),
            Value::Absent => {}
        }
    }
    timestamp(out, time);
    Ok(())
}

/// Appends the measurement and the tags, sorted by key; nothing when a tag
/// value has no faithful encoding.
fn head(
    measurement: &str,
    tags: &mut [(&'static str, &str)],
    out: &mut String,
) -> Result<(), EncodeError> {
    tags.sort_unstable_by_key(|(key, _)| *key);
    for &(key, value) in tags.iter() {
        check_tag(key, value)?;
    }
    escape_measurement(measurement, out);
    for &(key, value) in tags.iter() {
        tag(out, key, value);
    }
    Ok(())
}

/// Refuses tag values that have no faithful encoding (see the module docs).
fn check_tag(tag: &'static str, value: &str) -> Result<(), EncodeError> {
    if value.is_empty() {
        return Err(EncodeError::EmptyTag { tag });
    }
    let bytes = value.as_bytes();
    if bytes.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Err(EncodeError::LineBreak {
            tag,
            value: value.to_owned(),
        });
    }
    let ambiguous = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'\\' && matches!(bytes.get(i + 1), None | Some(b'\\' | b',' | b'=' | b' '))
    });
    if ambiguous {
        return Err(EncodeError::AmbiguousBackslash {
            tag,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Appends `,key=value`. Keys are column names, which are plain
/// (`[a-z0-9_]`, `records::tests::every_kind_is_well_formed`): written as
/// they are.
fn tag(out: &mut String, key: &str, value: &str) {
    out.push(',');
    out.push_str(key);
    out.push('=');
    escape_tag(value, out);
}

/// Appends a measurement name, escaping commas and spaces.
pub fn escape_measurement(name: &str, out: &mut String) {
    escape(name, |b| matches!(b, b',' | b' '), out);
}

/// Appends a tag key, tag value or field key, escaping commas, equals signs
/// and spaces.
pub fn escape_tag(text: &str, out: &mut String) {
    escape(text, |b| matches!(b, b',' | b'=' | b' '), out);
}

/// Appends a string field value in double quotes, escaping double quotes and
/// backslashes. A line break (`\n`, `\r`) is written as a space: a line
/// ends at a line break in VictoriaMetrics even inside quotes.
pub fn escape_string_field(text: &str, out: &mut String) {
    out.push('"');
    let mut rest = text;
    // The special characters are ASCII: a byte found is a whole character.
    while let Some(i) = rest
        .bytes()
        .position(|b| matches!(b, b'"' | b'\\' | b'\n' | b'\r'))
    {
        out.push_str(&rest[..i]);
        match rest.as_bytes()[i] {
            b'\n' | b'\r' => out.push(' '),
            c => {
                out.push('\\');
                out.push(char::from(c));
            }
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// Appends `text` with a backslash before each ASCII byte that is
/// `special` (the runs between them copied whole: most names have none).
fn escape(text: &str, special: impl Fn(u8) -> bool, out: &mut String) {
    let mut rest = text;
    while let Some(i) = rest.bytes().position(&special) {
        out.push_str(&rest[..i]);
        out.push('\\');
        out.push(char::from(rest.as_bytes()[i]));
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

/// Appends a float so it always reads back as a float: the shortest
/// digits that read back as the same value (`ryu`), `3.0`, `0.25`, `1e-7`,
/// `1e16`, each with a decimal point or an exponent. False (nothing
/// written) for NaN and infinities, which line protocol cannot express.
fn write_float(value: f64, out: &mut String) -> bool {
    if !value.is_finite() {
        return false;
    }
    out.push_str(ryu::Buffer::new().format_finite(value));
    true
}

/// The field set of one line: handles the separators.
struct Fields<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut String) -> Self {
        Self { out, first: true }
    }

    /// A column name: plain, written as it is (see [`tag`]).
    fn key(&mut self, key: &str) {
        self.out.push(if self.first { ' ' } else { ',' });
        self.first = false;
        self.out.push_str(key);
        self.out.push('=');
    }

    /// An integer field; values above `i64::MAX` (never produced) saturate.
    fn int(&mut self, key: &str, value: u64) {
        self.key(key);
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        self.out.push_str(itoa::Buffer::new().format(value));
        self.out.push('i');
    }

    fn float(&mut self, key: &str, value: f64) {
        if value.is_finite() {
            self.key(key);
            write_float(value, self.out);
        }
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        escape_string_field(value, self.out);
    }
}

/// Appends ` <ms * 1e6>\n`: the timestamp in nanoseconds.
fn timestamp(out: &mut String, ms: u64) {
    let ns = ms.saturating_mul(1_000_000).min(i64::MAX as u64);
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(ns));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::MachineState;
    use fleetpulse_engine::kpi::milestone::MilestoneStatus;

    use super::*;
    use crate::sinks::fixtures::{
        alert, customer, device, health, milestone, onboarding_health, outcome, portfolio, resolved,
    };

    /// 2023-11-14T22:13:20Z, ms.
    const T: u64 = 1_700_000_000_000;

    /// The series key (measurement and tags) and the timestamp of a line.
    fn identity(line: &str) -> (&str, &str) {
        let series = line.split_once(' ').unwrap().0;
        let time = line.trim_end().rsplit_once(' ').unwrap().1;
        (series, time)
    }

    fn line(record: Output) -> String {
        let mut out = String::new();
        encode_record(&record, &mut out).unwrap();
        out
    }

    #[test]
    fn encodes_a_customer_record() {
        let mut kpi = customer("acme", 1_700_000_000_000, 10);
        kpi.totals.operating_hours = 3.0;
        kpi.totals.output_units = 120.0;
        kpi.advanced_feature_share = 0.5;
        assert_eq!(
            line(Output::Customer(kpi)),
            "customer_kpi,customer=acme,window=1h \
             window_end=1700003600000i,devices_purchased=4i,reporting_devices=3i,\
             active_devices=2i,utilisation=0.25,operating_hours=3.0,idle_hours=0.5,\
             fuel_litres=41.25,cycles=10i,output_units=120.0,manual_interventions=7i,\
             distinct_operators=2i,advanced_features_used=1i,advanced_feature_share=0.5,\
             fault_count=1i,samples=360i,revision=0i 1700000000000000000\n"
        );
    }

    #[test]
    fn encodes_a_device_record() {
        let kpi = device("exc-07", 1_700_000_000_000, MachineState::Running);
        assert_eq!(
            line(Output::Device(kpi)),
            "device_kpi,customer=acme,device=exc-07,site=north-pit,window=1h \
             window_end=1700003600000i,utilisation=0.75,operating_hours=0.75,\
             idle_hours=0.25,fuel_litres=12.5,cycles=40i,output_units=30.0,\
             manual_interventions=2i,distinct_operators=1i,fault_count=0i,samples=120i,\
             last_seen=1700003599000i,last_state=\"running\",revision=1i 1700000000000000000\n"
        );
    }

    #[test]
    fn encodes_an_outcome_record() {
        assert_eq!(
            line(Output::Outcome(outcome("acme", T, 0.1))),
            "outcome,customer=acme,outcome=interventions,window=1d \
             window_end=1700086400000i,value=0.1,target=0.2,direction=\"at_most\",\
             met=true,consecutive_met=3i,consecutive_missed=0i 1700000000000000000\n"
        );
        // An undefined value (NaN) is left out; the rest stays.
        let mut undefined = outcome("acme", T, f64::NAN);
        undefined.met = false;
        let text = line(Output::Outcome(undefined));
        assert!(
            text.starts_with(
                "outcome,customer=acme,outcome=interventions,window=1d \
                 window_end=1700086400000i,target=0.2,"
            ),
            "{text}"
        );
        assert!(text.contains(",met=false,"), "{text}");
        assert!(!text.contains("value="), "{text}");
    }

    #[test]
    fn encodes_a_milestone_record() {
        assert_eq!(
            line(Output::Milestone(milestone("all-online", 1, T))),
            "milestone,customer=acme,milestone=all-online \
             window_end=1700086400000i,position=1i,value_milestone=false,\
             due_at=2592000000i,status=\"pending\" 1700000000000000000\n"
        );
        let mut reached = milestone("first 100 hours", 2, T);
        reached.status = MilestoneStatus::Reached;
        reached.reached_at = Some(T + 86_400_000);
        assert_eq!(
            line(Output::Milestone(reached)),
            "milestone,customer=acme,milestone=first\\ 100\\ hours \
             window_end=1700086400000i,position=2i,value_milestone=true,\
             due_at=2592000000i,reached_at=1700086400000i,status=\"reached\" \
             1700000000000000000\n"
        );
    }

    #[test]
    fn encodes_a_health_record() {
        assert_eq!(
            line(Output::health(health("acme", T, 80.0))),
            "health,customer=acme,segment=high-touch \
             window_end=1700086400000i,score=80.0,band=\"green\",score_trend=-4.5,\
             depth=25.0,breadth=80.0,utilisation=62.5,outcome_attainment=100.0,\
             reliability=90.0,trend=40.0,\
             moved_1d_depth=0.0,moved_1d_breadth=0.0,moved_1d_utilisation=-1.5,\
             moved_1d_outcome=0.0,moved_1d_reliability=0.25,moved_1d_trend=-0.75,\
             moved_1d_maturity=0.0,moved_7d_depth=1.0,moved_7d_breadth=0.0,\
             moved_7d_utilisation=-3.0,moved_7d_outcome=0.0,moved_7d_reliability=0.0,\
             moved_7d_trend=-2.5,moved_7d_maturity=0.0,\
             stage=\"adopt\",arr=250000.0,arr_at_risk=0.0,\
             open_alerts=1i,days_since_activation=42.0,days_to_renewal=323.0,\
             time_to_value_days=12.0,usage_growth=-0.125,milestones_reached=2i,\
             milestones_total=4i,provisional=false 1700000000000000000\n"
        );
        // Absent components and time to value are left out; a known
        // maturity is written.
        let h = onboarding_health("acme", T, 30.0);
        let text = line(Output::health(h));
        assert!(
            text.starts_with(
                "health,customer=acme,segment=tech-touch \
                 window_end=1700086400000i,score=30.0,band=\"red\","
            ),
            "{text}"
        );
        assert!(
            text.contains(",trend=40.0,maturity=70.0,moved_1d_depth="),
            "{text}"
        );
        assert!(
            text.contains(",moved_7d_maturity=0.0,stage=\"onboard\","),
            "{text}"
        );
        assert!(!text.contains("outcome_attainment"), "{text}");
        assert!(!text.contains("time_to_value_days"), "{text}");
    }

    #[test]
    fn encodes_an_alert_and_its_resolve_on_the_same_point() {
        let open = alert("acme", 1, T);
        let open_line = line(Output::Alert(open.clone()));
        assert_eq!(
            open_line,
            "alert,customer=acme,rule=usage_drop,segment=high-touch \
             episode=1i,customer_name=\"Acme \\\"Quarry\\\" Ltd\",status=\"open\",\
             provisional=false,evidence=\"operating hours 31% below the 28-day baseline (12.0 h/day against 17.4)\",\
             metric=0.31,threshold=0.2,stage=\"adopt\",arr_at_risk=250000.0,\
             next_action=\"Call the sponsor: ask what changed (project ended, seasonality, staff) \
             and book a usage review\" 1700000000000000000\n"
        );
        let resolved_line = line(Output::Alert(resolved(open, T + 5 * 86_400_000)));
        assert!(
            resolved_line.contains(
                " episode=1i,customer_name=\"Acme \\\"Quarry\\\" Ltd\",status=\"resolved\",\
                 provisional=false,resolved_at=1700432000000i,evidence=\"operating hours 5% below"
            ),
            "{resolved_line}"
        );
        // Same series, same timestamp (opened_at): the resolve overwrites.
        assert_eq!(identity(&open_line), identity(&resolved_line));
    }

    #[test]
    fn line_breaks_in_texts_become_spaces_and_in_tags_are_refused() {
        let mut a = alert("acme", 1, T);
        a.evidence = "first line\nsecond\r\nthird".into();
        let text = line(Output::Alert(a));
        assert!(
            text.contains("evidence=\"first line second  third\""),
            "{text}"
        );
        assert_eq!(text.matches('\n').count(), 1);

        let mut o = outcome("acme", T, 0.1);
        o.outcome = "two\nlines".into();
        let mut out = String::new();
        assert!(matches!(
            encode_record(&Output::Outcome(o), &mut out),
            Err(EncodeError::LineBreak { tag: "outcome", .. })
        ));
        let mut m = milestone("", 1, T);
        m.milestone = "".into();
        assert_eq!(
            encode_record(&Output::Milestone(m), &mut out),
            Err(EncodeError::EmptyTag { tag: "milestone" })
        );
        assert_eq!(
            encode_record(&Output::health(health("", T, 80.0)), &mut out),
            Err(EncodeError::EmptyTag { tag: "customer" })
        );
        assert_eq!(out, "", "nothing appended on error");
    }

    #[test]
    fn encodes_a_portfolio_record_without_tags() {
        assert_eq!(
            line(Output::Portfolio(portfolio(T, 6))),
            "portfolio window_end=1700086400000i,customers=6i,arr_total=1500000.0,\
             arr_at_risk=400000.0,green=3i,yellow=2i,red=1i,managed_customers=2i,\
             managed_usage_growth=0.05,unmanaged_usage_growth=-0.02,\
             managed_outcome_attainment=80.0,unmanaged_outcome_attainment=55.5,revision=0i \
             1700000000000000000\n"
        );
    }

    #[test]
    fn a_batch_of_every_kind_has_one_line_each() {
        let records = vec![
            Output::Customer(customer("acme", T, 1)),
            Output::Device(device("exc-01", T, MachineState::Off)),
            Output::Outcome(outcome("acme", T, 0.1)),
            Output::Milestone(milestone("all-online", 1, T)),
            Output::health(health("acme", T, 80.0)),
            Output::Alert(alert("acme", 1, T)),
            Output::Portfolio(portfolio(T, 6)),
        ];
        let batch = encode_batch(&records);
        assert_eq!(batch.lines, 7);
        assert!(batch.rejected.is_empty());
        let measurements: Vec<&str> = batch
            .body
            .lines()
            .map(|l| l.split([',', ' ']).next().unwrap())
            .collect();
        assert_eq!(
            measurements,
            [
                "customer_kpi",
                "device_kpi",
                "outcome",
                "milestone",
                "health",
                "alert",
                "portfolio"
            ]
        );
    }

    /// docs/SCHEMA.md, the public schema.
    const SCHEMA_MD: &str = include_str!("../../../../docs/SCHEMA.md");

    /// One record of each kind with every optional field present: the
    /// records of the example lines in docs/SCHEMA.md.
    fn documented_records() -> Vec<Output> {
        let mut kpi = customer("acme", T, 10);
        kpi.advanced_feature_share = 0.5;
        let mut reached = milestone("first-100-hours", 2, T);
        reached.status = MilestoneStatus::Reached;
        reached.reached_at = Some(T + 86_400_000);
        vec![
            Output::Customer(kpi),
            Output::Device(device("exc-07", T, MachineState::Running)),
            Output::Outcome(outcome("acme", T, 0.1)),
            Output::Milestone(reached),
            Output::health(health("acme", T, 80.0)),
            Output::Alert(alert("acme", 1, T)),
            Output::Portfolio(portfolio(T, 6)),
        ]
    }

    /// The example block of docs/SCHEMA.md is what the encoder writes for
    /// [`documented_records`]; with `FLEETPULSE_BLESS=1` the test writes it.
    #[test]
    fn the_documented_example_lines_are_what_the_encoder_writes() {
        let lines: String = documented_records().into_iter().map(line).collect();
        let region = [("line-protocol-examples", format!("```text\n{lines}```"))];
        let spliced = crate::records::docs::splice(SCHEMA_MD, &region).unwrap();
        if std::env::var_os("FLEETPULSE_BLESS").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/SCHEMA.md");
            std::fs::write(path, spliced).unwrap();
        } else {
            assert!(
                spliced == SCHEMA_MD,
                "docs/SCHEMA.md lacks the lines\n{lines}run `FLEETPULSE_BLESS=1 cargo test -p \
                 fleetpulse --lib the_documented_example_lines`"
            );
        }
    }

    /// `(key, kind, type)` of every tag and field of a line, in order:
    /// kind `tag` or `field`, type `string`, `integer`, `float` or `boolean`.
    fn keys_of(line: &str) -> Vec<(String, &'static str, &'static str)> {
        let (series, rest) = line.split_once(' ').unwrap();
        let fields = rest.trim_end().rsplit_once(' ').unwrap().0;
        let mut keys: Vec<_> = series
            .split(',')
            .skip(1)
            .map(|t| (t.split_once('=').unwrap().0.to_owned(), "tag", "string"))
            .collect();
        let (mut current, mut quoted, mut escaped) = (String::new(), false, false);
        let mut push = |field: &str| {
            let (key, value) = field.split_once('=').unwrap();
            let kind = if value.starts_with('"') {
                "string"
            } else if value == "true" || value == "false" {
                "boolean"
            } else if value.ends_with('i') {
                "integer"
            } else {
                "float"
            };
            keys.push((key.to_owned(), "field", kind));
        };
        for c in fields.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    push(&current);
                    current.clear();
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        push(&current);
        keys
    }

    /// The `(key, kind, type)` rows of the table under `### {heading}` in
    /// docs/SCHEMA.md, without the *time* row.
    fn documented_keys(heading: &str) -> Vec<(String, String, String)> {
        crate::records::docs::table_rows(SCHEMA_MD, heading)
            .into_iter()
            .map(|row| (row[0].clone(), row[1].clone(), row[2].clone()))
            .collect()
    }

    #[test]
    fn the_documented_measurements_are_what_the_encoder_writes() {
        for record in documented_records() {
            // Every optional field present.
            let record = match record {
                Output::Health(mut h) => {
                    h.components.maturity = Some(70.0);
                    Output::Health(h)
                }
                Output::Alert(a) => Output::Alert(resolved(a, T + 86_400_000)),
                other => other,
            };
            let text = line(record);
            let measurement = text.split([',', ' ']).next().unwrap();
            let mut written: Vec<(String, String, String)> = keys_of(&text)
                .into_iter()
                .map(|(k, kind, ty)| (k, kind.to_owned(), ty.to_owned()))
                .collect();
            let mut documented = documented_keys(&format!("Measurement `{measurement}`"));
            written.sort();
            documented.sort();
            assert_eq!(written, documented, "measurement `{measurement}`");
        }
    }

    fn format_float(value: f64) -> Option<String> {
        let mut out = String::new();
        write_float(value, &mut out).then_some(out)
    }

    #[test]
    fn floats_always_look_like_floats() {
        for (value, text) in [
            (3.0, "3.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.25, "0.25"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e-7, "1e-7"),
            (1e16, "1e16"),
            (123456789.0, "123456789.0"),
        ] {
            assert_eq!(format_float(value).as_deref(), Some(text));
            let back: f64 = text.parse().unwrap();
            assert_eq!(back.to_bits(), value.to_bits(), "{text}");
        }
        assert_eq!(format_float(f64::NAN), None);
        assert_eq!(format_float(f64::INFINITY), None);
    }

    proptest::proptest! {
        #[test]
        fn every_finite_float_reads_back_as_the_same_float(value in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
            let text = format_float(value).unwrap();
            proptest::prop_assert!(text.contains('.') || text.contains('e'), "{}", text);
            proptest::prop_assert_eq!(text.parse::<f64>().unwrap().to_bits(), value.to_bits());
        }
    }

    #[test]
    fn non_finite_fields_are_left_out() {
        let mut kpi = customer("acme", 0, 1);
        kpi.utilisation = f64::NAN;
        kpi.advanced_feature_share = f64::INFINITY;
        let text = line(Output::Customer(kpi));
        assert!(!text.contains("utilisation"), "{text}");
        assert!(!text.contains("advanced_feature_share"), "{text}");
        assert!(text.contains(",devices_purchased=4i,"), "{text}");
    }

    proptest::proptest! {
        /// The byte-run escaping against the rule written a character at a
        /// time, on any text (separators, quotes, line breaks, UTF-8).
        #[test]
        fn escaping_follows_the_rule_character_by_character(text in "[a-z ,=\"\\\\\n\rä北]{0,24}") {
            let reference = |special: &[char]| -> String {
                (text.chars())
                    .flat_map(|c| special.contains(&c).then_some('\\').into_iter().chain([c]))
                    .collect()
            };
            let mut out = String::new();
            escape_tag(&text, &mut out);
            proptest::prop_assert_eq!(out, reference(&[',', '=', ' ']));
            let mut out = String::new();
            escape_measurement(&text, &mut out);
            proptest::prop_assert_eq!(out, reference(&[',', ' ']));
            let mut out = String::new();
            escape_string_field(&text, &mut out);
            let quoted: String = (text.chars())
                .flat_map(|c| match c {
                    '"' | '\\' => vec!['\\', c],
                    '\n' | '\r' => vec![' '],
                    c => vec![c],
                })
                .collect();
            proptest::prop_assert_eq!(out, format!("\"{quoted}\""));
        }
    }

    #[test]
    fn escapes_measurement_tags_and_fields() {
        let mut out = String::new();
        escape_measurement("a b,c=d", &mut out);
        assert_eq!(out, r"a\ b\,c=d");

        let mut out = String::new();
        escape_tag("a b,c=d\"e", &mut out);
        assert_eq!(out, r#"a\ b\,c\=d"e"#);

        let mut out = String::new();
        escape_string_field(r#"say "hi" \o/"#, &mut out);
        assert_eq!(out, r#""say \"hi\" \\o/""#);
    }

    #[test]
    fn tag_values_with_separators_and_utf8_round_trip() {
        let name = "Bäckerei Müller, Süd=北京 \"Ost\"";
        let kpi = device(name, 0, MachineState::Idle);
        let mut kpi = kpi;
        kpi.customer = name.into();
        let text = line(Output::Device(kpi));
        let escaped = r#"Bäckerei\ Müller\,\ Süd\=北京\ "Ost""#;
        assert!(
            text.starts_with(&format!(
                "device_kpi,customer={escaped},device={escaped},site=north-pit,window=1h "
            )),
            "{text}"
        );
        assert_eq!(
            parse_tags(&text)[0],
            ("customer".to_owned(), name.to_owned())
        );
        assert_eq!(parse_tags(&text)[1], ("device".to_owned(), name.to_owned()));
    }

    #[test]
    fn backslashes_pass_through_unless_ambiguous() {
        let kpi = customer(r"dom\user", 0, 1);
        let text = line(Output::Customer(kpi));
        assert!(
            text.starts_with(r"customer_kpi,customer=dom\user,window=1h "),
            "{text}"
        );

        for bad in [r"end\", r"two\\b", r"a\,b", r"a\=b", r"a\ b"] {
            let mut out = String::from("kept");
            let err = encode_record(&Output::Customer(customer(bad, 0, 1)), &mut out).unwrap_err();
            assert!(matches!(
                err,
                EncodeError::AmbiguousBackslash {
                    tag: "customer",
                    ..
                }
            ));
            assert_eq!(out, "kept", "nothing appended on error");
        }
    }

    #[test]
    fn batch_lists_rejected_records_and_keeps_the_rest() {
        let records = vec![
            Output::Customer(customer("acme", 0, 1)),
            Output::Customer(customer("", 0, 1)),
            Output::Device(device("exc-01", 0, MachineState::Off)),
        ];
        let batch = encode_batch(&records);
        assert_eq!(batch.lines, 2);
        assert_eq!(batch.body.lines().count(), 2);
        assert!(batch.body.ends_with('\n'));
        assert_eq!(
            batch.rejected,
            vec![(1, EncodeError::EmptyTag { tag: "customer" })]
        );
    }

    #[test]
    fn timestamp_is_window_start_in_nanoseconds() {
        let text = line(Output::Customer(customer("acme", 1_234, 1)));
        assert!(text.ends_with(" 1234000000\n"), "{text}");
    }

    /// A reference reader of the tag set, the way InfluxDB's parser reads it:
    /// a backslash escapes the next `,`, `=` or space, otherwise it is kept.
    fn parse_tags(line: &str) -> Vec<(String, String)> {
        let mut chars = line.chars().peekable();
        let mut tags = Vec::new();
        let mut current = String::new();
        let mut key = None;
        // Skip the measurement.
        while let Some(c) = chars.next() {
            if c == '\\' {
                chars.next();
            } else if c == ',' {
                break;
            }
        }
        while let Some(c) = chars.next() {
            match c {
                '\\' if matches!(chars.peek(), Some(',' | '=' | ' ')) => {
                    current.push(chars.next().unwrap());
                }
                '=' => key = Some(std::mem::take(&mut current)),
                ',' | ' ' => {
                    tags.push((key.take().unwrap(), std::mem::take(&mut current)));
                    if c == ' ' {
                        break;
                    }
                }
                _ => current.push(c),
            }
        }
        tags
    }

    /// A line as written (as visited where the kind's tags lead, else from
    /// the table) and from the table, each after text already in the body.
    struct BothWays;

    impl RecordVisitor for BothWays {
        type Out = [(Result<(), EncodeError>, String); 2];

        fn record<R: RecordKind>(&mut self, record: &R) -> Self::Out {
            let (mut visited, mut tabled) = (String::from("x\n"), String::from("x\n"));
            [
                (encode(record, &mut visited), visited),
                (encode_by_table(record, &mut tabled), tabled),
            ]
        }
    }

    #[test]
    fn a_line_written_as_visited_equals_the_line_from_the_table() {
        let forecast = fleetpulse_engine::ForecastRecord {
            customer: "acme west".into(),
            ..Default::default()
        };
        let mut records = vec![
            Output::Customer(customer("acme", T, 10)),
            Output::Device(device("exc,01", T, MachineState::Running)),
            Output::Outcome(outcome("acme", T, f64::NAN)),
            Output::Milestone(milestone("first=value", 2, T)),
            Output::health(health("acme", T, 71.5)),
            Output::health(onboarding_health("acme", T, 40.0)),
            Output::Forecast(forecast),
            Output::Alert(alert("acme", 1, T)),
            Output::Alert(resolved(alert("acme", 2, T), T + 3_600_000)),
            Output::Portfolio(portfolio(T, 12)),
        ];
        // Refused tags: nothing written, the same error both ways.
        records.push(Output::Customer(customer("", T, 1)));
        records.push(Output::Device(device("exc\n02", T, MachineState::Idle)));
        records.push(Output::Alert(alert("trailing\\", 1, T)));
        for record in records {
            let [visited, tabled] = with_record(&record, &mut BothWays);
            assert_eq!(visited, tabled, "{record:?}");
            if visited.0.is_err() {
                assert_eq!(visited.1, "x\n", "nothing written for a refused record");
            }
        }
        // The kinds of every window go the fast way.
        assert!(const { tags_lead(<fleetpulse_engine::CustomerKpi as RecordKind>::COLUMNS) });
        assert!(const { tags_lead(<fleetpulse_engine::DeviceKpi as RecordKind>::COLUMNS) });
    }
}
