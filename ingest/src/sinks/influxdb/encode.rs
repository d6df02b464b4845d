//! KPI records as InfluxDB line protocol. Pure functions, no I/O.
//!
//! ```text
//! customer_kpi,customer=acme,window=1h active_devices=2i,...,utilisation=0.25,window_end=1700003600000i 1700000000000000000
//! ```
//!
//! | measurement | tags | timestamp |
//! |---|---|---|
//! | `customer_kpi` | `customer`, `window` | `window_start` |
//! | `device_kpi` | `customer`, `device`, `site`, `window` | `window_start` |
//! | `outcome` | `customer`, `outcome`, `window` | `window_start` |
//! | `milestone` | `customer`, `milestone` | `window_start` |
//! | `health` | `customer`, `segment` | `window_start` |
//! | `alert` | `customer`, `rule`, `segment` | `opened_at` |
//! | `portfolio` | none | `window_start` |
//!
//! - Tags are sorted by key, as InfluxDB prefers.
//! - Every other field of the record is a field: integers with the `i`
//!   suffix, floats always with a decimal point or an exponent (`3.0`, never
//!   `3`, so no reader mistakes them for integers), booleans as `true` /
//!   `false`, enums (`last_state`, `direction`, `status`, `band`, `stage`)
//!   and texts as strings. Times (`window_end`, `last_seen`, `due_at`,
//!   `reached_at`, `resolved_at`) are integer fields in ms since the epoch.
//! - The timestamp is in nanoseconds (write with `precision=ns`). An alert's
//!   timestamp is `opened_at`, so the resolve of an episode lands on the
//!   point of its open and overwrites it.
//! - A non-finite float (NaN, ±inf) has no line-protocol form: that one field
//!   is left out of the line (an undefined outcome `value` is NaN). Absent
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

use std::fmt::Write as _;

use fleetpulse_engine::{
    AlertRecord, CustomerKpi, DeviceKpi, HealthRecord, MilestoneRecord, OutcomeRecord, Output,
    PortfolioRecord,
};
use thiserror::Error;

use crate::sinks::names::direction_str;

/// Measurement of [`CustomerKpi`] records.
pub const CUSTOMER_MEASUREMENT: &str = "customer_kpi";
/// Measurement of [`DeviceKpi`] records.
pub const DEVICE_MEASUREMENT: &str = "device_kpi";
/// Measurement of [`OutcomeRecord`]s.
pub const OUTCOME_MEASUREMENT: &str = "outcome";
/// Measurement of [`MilestoneRecord`]s.
pub const MILESTONE_MEASUREMENT: &str = "milestone";
/// Measurement of [`HealthRecord`]s.
pub const HEALTH_MEASUREMENT: &str = "health";
/// Measurement of [`AlertRecord`]s.
pub const ALERT_MEASUREMENT: &str = "alert";
/// Measurement of [`PortfolioRecord`]s.
pub const PORTFOLIO_MEASUREMENT: &str = "portfolio";

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
    match record {
        Output::Customer(k) => encode_customer(k, out),
        Output::Device(k) => encode_device(k, out),
        Output::Outcome(r) => encode_outcome(r, out),
        Output::Milestone(r) => encode_milestone(r, out),
        Output::Health(r) => encode_health(r, out),
        Output::Alert(r) => encode_alert(r, out),
        Output::Portfolio(r) => encode_portfolio(r, out),
    }
}

fn encode_customer(k: &CustomerKpi, out: &mut String) -> Result<(), EncodeError> {
    check_tag("customer", &k.customer)?;
    check_tag("window", &k.window)?;
    escape_measurement(CUSTOMER_MEASUREMENT, out);
    tag(out, "customer", &k.customer);
    tag(out, "window", &k.window);
    let mut fields = Fields::new(out);
    fields.int("devices_purchased", k.devices_purchased.into());
    fields.int("reporting_devices", k.reporting_devices.into());
    fields.int("active_devices", k.active_devices.into());
    fields.float("utilisation", k.utilisation);
    fields.float("operating_hours", k.operating_hours);
    fields.float("idle_hours", k.idle_hours);
    fields.float("fuel_litres", k.fuel_litres);
    fields.int("cycles", k.cycles);
    fields.float("output_units", k.output_units);
    fields.int("manual_interventions", k.manual_interventions);
    fields.int("distinct_operators", k.distinct_operators.into());
    fields.int("advanced_features_used", k.advanced_features_used.into());
    fields.float("advanced_feature_share", k.advanced_feature_share);
    fields.int("fault_count", k.fault_count);
    fields.int("samples", k.samples);
    fields.int("window_end", k.window_end);
    timestamp(out, k.window_start);
    Ok(())
}

fn encode_device(k: &DeviceKpi, out: &mut String) -> Result<(), EncodeError> {
    check_tag("customer", &k.customer)?;
    check_tag("device", &k.device)?;
    check_tag("site", &k.site)?;
    check_tag("window", &k.window)?;
    escape_measurement(DEVICE_MEASUREMENT, out);
    tag(out, "customer", &k.customer);
    tag(out, "device", &k.device);
    tag(out, "site", &k.site);
    tag(out, "window", &k.window);
    let mut fields = Fields::new(out);
    fields.float("utilisation", k.utilisation);
    fields.float("operating_hours", k.operating_hours);
    fields.float("idle_hours", k.idle_hours);
    fields.float("fuel_litres", k.fuel_litres);
    fields.int("cycles", k.cycles);
    fields.float("output_units", k.output_units);
    fields.int("manual_interventions", k.manual_interventions);
    fields.int("distinct_operators", k.distinct_operators.into());
    fields.int("fault_count", k.fault_count);
    fields.int("samples", k.samples);
    fields.int("last_seen", k.last_seen);
    fields.string("last_state", k.last_state.as_str());
    fields.int("window_end", k.window_end);
    timestamp(out, k.window_start);
    Ok(())
}

fn encode_outcome(r: &OutcomeRecord, out: &mut String) -> Result<(), EncodeError> {
    check_tag("customer", &r.customer)?;
    check_tag("outcome", &r.outcome)?;
    check_tag("window", &r.window)?;
    escape_measurement(OUTCOME_MEASUREMENT, out);
    tag(out, "customer", &r.customer);
    tag(out, "outcome", &r.outcome);
    tag(out, "window", &r.window);
    let mut fields = Fields::new(out);
    fields.float("value", r.value);
    fields.float("target", r.target);
    fields.string("direction", direction_str(r.direction));
    fields.bool("met", r.met);
    fields.int("consecutive_met", r.consecutive_met.into());
    fields.int("consecutive_missed", r.consecutive_missed.into());
    fields.int("window_end", r.window_end);
    timestamp(out, r.window_start);
    Ok(())
}

fn encode_milestone(r: &MilestoneRecord, out: &mut String) -> Result<(), EncodeError> {
    check_tag("customer", &r.customer)?;
    check_tag("milestone", &r.milestone)?;
    escape_measurement(MILESTONE_MEASUREMENT, out);
    tag(out, "customer", &r.customer);
    tag(out, "milestone", &r.milestone);
    let mut fields = Fields::new(out);
    fields.int("position", r.position.into());
    fields.bool("value_milestone", r.value_milestone);
    fields.string("status", r.status.as_str());
    fields.int("due_at", r.due_at);
    if let Some(reached_at) = r.reached_at {
        fields.int("reached_at", reached_at);
    }
    fields.int("window_end", r.window_end);
    timestamp(out, r.window_start);
    Ok(())
}

fn encode_health(r: &HealthRecord, out: &mut String) -> Result<(), EncodeError> {
    check_tag("customer", &r.customer)?;
    escape_measurement(HEALTH_MEASUREMENT, out);
    tag(out, "customer", &r.customer);
    tag(out, "segment", r.segment.as_str());
    let c = &r.components;
    let mut fields = Fields::new(out);
    fields.float("score", r.score);
    fields.string("band", r.band.as_str());
    fields.float("score_trend", r.score_trend);
    fields.float("depth", c.depth);
    fields.float("breadth", c.breadth);
    fields.float("utilisation", c.utilisation);
    if let Some(outcome) = c.outcome {
        fields.float("outcome_attainment", outcome);
    }
    fields.float("reliability", c.reliability);
    fields.float("trend", c.trend);
    if let Some(maturity) = c.maturity {
        fields.float("maturity", maturity);
    }
    fields.string("stage", r.stage.as_str());
    fields.float("arr", r.arr);
    fields.float("arr_at_risk", r.arr_at_risk);
    fields.int("open_alerts", r.open_alerts.into());
    fields.float("days_since_activation", r.days_since_activation);
    fields.float("days_to_renewal", r.days_to_renewal);
    if let Some(ttv) = r.time_to_value_days {
        fields.float("time_to_value_days", ttv);
    }
    fields.float("usage_growth", r.usage_growth);
    fields.int("milestones_reached", r.milestones_reached.into());
    fields.int("milestones_total", r.milestones_total.into());
    fields.int("window_end", r.window_end);
    timestamp(out, r.window_start);
    Ok(())
}

fn encode_alert(r: &AlertRecord, out: &mut String) -> Result<(), EncodeError> {
    check_tag("customer", &r.customer)?;
    escape_measurement(ALERT_MEASUREMENT, out);
    tag(out, "customer", &r.customer);
    tag(out, "rule", r.rule.as_str());
    tag(out, "segment", r.segment.as_str());
    let mut fields = Fields::new(out);
    fields.string("customer_name", &r.customer_name);
    fields.int("episode", r.episode.into());
    fields.string("status", r.status.as_str());
    if let Some(resolved_at) = r.resolved_at {
        fields.int("resolved_at", resolved_at);
    }
    fields.string("evidence", &r.evidence);
    fields.float("metric", r.metric);
    fields.float("threshold", r.threshold);
    fields.string("stage", r.stage.as_str());
    fields.float("arr_at_risk", r.arr_at_risk);
    fields.string("next_action", &r.next_action);
    timestamp(out, r.opened_at);
    Ok(())
}

fn encode_portfolio(r: &PortfolioRecord, out: &mut String) -> Result<(), EncodeError> {
    escape_measurement(PORTFOLIO_MEASUREMENT, out);
    let mut fields = Fields::new(out);
    fields.int("customers", r.customers.into());
    fields.float("arr_total", r.arr_total);
    fields.float("arr_at_risk", r.arr_at_risk);
    fields.int("green", r.green.into());
    fields.int("yellow", r.yellow.into());
    fields.int("red", r.red.into());
    fields.int("managed_customers", r.managed_customers.into());
    fields.float("managed_usage_growth", r.managed_usage_growth);
    fields.float("unmanaged_usage_growth", r.unmanaged_usage_growth);
    fields.float("managed_outcome_attainment", r.managed_outcome_attainment);
    fields.float(
        "unmanaged_outcome_attainment",
        r.unmanaged_outcome_attainment,
    );
    fields.int("window_end", r.window_end);
    timestamp(out, r.window_start);
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

/// Appends `,key=value`.
fn tag(out: &mut String, key: &str, value: &str) {
    out.push(',');
    escape_tag(key, out);
    out.push('=');
    escape_tag(value, out);
}

/// Appends a measurement name, escaping commas and spaces.
pub fn escape_measurement(name: &str, out: &mut String) {
    escape(name, &[',', ' '], out);
}

/// Appends a tag key, tag value or field key, escaping commas, equals signs
/// and spaces.
pub fn escape_tag(text: &str, out: &mut String) {
    escape(text, &[',', '=', ' '], out);
}

/// Appends a string field value in double quotes, escaping double quotes and
/// backslashes. A line break (`\n`, `\r`) is written as a space: a line
/// ends at a line break in VictoriaMetrics even inside quotes.
pub fn escape_string_field(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out.push('"');
}

fn escape(text: &str, special: &[char], out: &mut String) {
    for c in text.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Writes a float so it always reads back as a float: `{:?}` gives `3.0`,
/// `0.25`, `1e-7`, `1e16`, each with a decimal point or an exponent.
/// `None` for NaN and infinities, which line protocol cannot express.
pub fn format_float(value: f64) -> Option<String> {
    value.is_finite().then(|| format!("{value:?}"))
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

    fn key(&mut self, key: &str) {
        self.out.push(if self.first { ' ' } else { ',' });
        self.first = false;
        escape_tag(key, self.out);
        self.out.push('=');
    }

    /// An integer field; values above `i64::MAX` (never produced) saturate.
    fn int(&mut self, key: &str, value: u64) {
        self.key(key);
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        let _ = write!(self.out, "{value}i");
    }

    fn float(&mut self, key: &str, value: f64) {
        if let Some(text) = format_float(value) {
            self.key(key);
            self.out.push_str(&text);
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
    let _ = writeln!(out, " {ns}");
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::kpi::health::Stage;
    use fleetpulse_engine::kpi::milestone::MilestoneStatus;
    use fleetpulse_engine::{MachineState, Segment};

    use super::*;
    use crate::sinks::fixtures::{
        alert, customer, device, health, milestone, outcome, portfolio, resolved,
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
        kpi.operating_hours = 3.0;
        kpi.output_units = 120.0;
        kpi.advanced_feature_share = 0.5;
        assert_eq!(
            line(Output::Customer(kpi)),
            "customer_kpi,customer=acme,window=1h \
             devices_purchased=4i,reporting_devices=3i,active_devices=2i,\
             utilisation=0.25,operating_hours=3.0,idle_hours=0.5,fuel_litres=41.25,\
             cycles=10i,output_units=120.0,manual_interventions=7i,distinct_operators=2i,\
             advanced_features_used=1i,advanced_feature_share=0.5,fault_count=1i,\
             samples=360i,window_end=1700003600000i 1700000000000000000\n"
        );
    }

    #[test]
    fn encodes_a_device_record() {
        let kpi = device("exc-07", 1_700_000_000_000, MachineState::Running);
        assert_eq!(
            line(Output::Device(kpi)),
            "device_kpi,customer=acme,device=exc-07,site=north-pit,window=1h \
             utilisation=0.75,operating_hours=0.75,idle_hours=0.25,fuel_litres=12.5,\
             cycles=40i,output_units=30.0,manual_interventions=2i,distinct_operators=1i,\
             fault_count=0i,samples=120i,last_seen=1700003599000i,last_state=\"running\",\
             window_end=1700003600000i 1700000000000000000\n"
        );
    }

    #[test]
    fn encodes_an_outcome_record() {
        assert_eq!(
            line(Output::Outcome(outcome("acme", T, 0.1))),
            "outcome,customer=acme,outcome=interventions,window=1d \
             value=0.1,target=0.2,direction=\"at_most\",met=true,consecutive_met=3i,\
             consecutive_missed=0i,window_end=1700086400000i 1700000000000000000\n"
        );
        // An undefined value (NaN) is left out; the rest stays.
        let mut undefined = outcome("acme", T, f64::NAN);
        undefined.met = false;
        let text = line(Output::Outcome(undefined));
        assert!(
            text.starts_with("outcome,customer=acme,outcome=interventions,window=1d target=0.2,"),
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
             position=1i,value_milestone=false,status=\"pending\",due_at=2592000000i,\
             window_end=1700086400000i 1700000000000000000\n"
        );
        let mut reached = milestone("first 100 hours", 2, T);
        reached.status = MilestoneStatus::Reached;
        reached.reached_at = Some(T + 86_400_000);
        assert_eq!(
            line(Output::Milestone(reached)),
            "milestone,customer=acme,milestone=first\\ 100\\ hours \
             position=2i,value_milestone=true,status=\"reached\",due_at=2592000000i,\
             reached_at=1700086400000i,window_end=1700086400000i 1700000000000000000\n"
        );
    }

    #[test]
    fn encodes_a_health_record() {
        assert_eq!(
            line(Output::Health(health("acme", T, 80.0))),
            "health,customer=acme,segment=high-touch \
             score=80.0,band=\"green\",score_trend=-4.5,depth=25.0,breadth=80.0,\
             utilisation=62.5,outcome_attainment=100.0,reliability=90.0,trend=40.0,\
             stage=\"adopt\",arr=250000.0,arr_at_risk=0.0,open_alerts=1i,\
             days_since_activation=42.0,days_to_renewal=323.0,time_to_value_days=12.0,\
             usage_growth=-0.125,milestones_reached=2i,milestones_total=4i,\
             window_end=1700086400000i 1700000000000000000\n"
        );
        // Absent components and time to value are left out; a known
        // maturity is written.
        let mut h = health("acme", T, 30.0);
        h.components.outcome = None;
        h.components.maturity = Some(70.0);
        h.time_to_value_days = None;
        h.segment = Segment::TechTouch;
        h.stage = Stage::Onboard;
        let text = line(Output::Health(h));
        assert!(
            text.starts_with("health,customer=acme,segment=tech-touch score=30.0,band=\"red\","),
            "{text}"
        );
        assert!(
            text.contains(",trend=40.0,maturity=70.0,stage=\"onboard\","),
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
             customer_name=\"Acme \\\"Quarry\\\" Ltd\",episode=1i,status=\"open\",\
             evidence=\"operating hours 31% below the 28-day baseline (12.0 h/day against 17.4)\",\
             metric=0.31,threshold=0.2,stage=\"adopt\",arr_at_risk=250000.0,\
             next_action=\"Call the sponsor: ask what changed (project ended, seasonality, staff) \
             and book a usage review\" 1700000000000000000\n"
        );
        let resolved_line = line(Output::Alert(resolved(open, T + 5 * 86_400_000)));
        assert!(
            resolved_line.contains(
                " customer_name=\"Acme \\\"Quarry\\\" Ltd\",episode=1i,status=\"resolved\",\
                 resolved_at=1700432000000i,evidence=\"operating hours 5% below"
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
            encode_record(&Output::Health(health("", T, 80.0)), &mut out),
            Err(EncodeError::EmptyTag { tag: "customer" })
        );
        assert_eq!(out, "", "nothing appended on error");
    }

    #[test]
    fn encodes_a_portfolio_record_without_tags() {
        assert_eq!(
            line(Output::Portfolio(portfolio(T, 6))),
            "portfolio customers=6i,arr_total=1500000.0,arr_at_risk=400000.0,\
             green=3i,yellow=2i,red=1i,managed_customers=2i,managed_usage_growth=0.05,\
             unmanaged_usage_growth=-0.02,managed_outcome_attainment=80.0,\
             unmanaged_outcome_attainment=55.5,window_end=1700086400000i 1700000000000000000\n"
        );
    }

    #[test]
    fn a_batch_of_every_kind_has_one_line_each() {
        let records = vec![
            Output::Customer(customer("acme", T, 1)),
            Output::Device(device("exc-01", T, MachineState::Off)),
            Output::Outcome(outcome("acme", T, 0.1)),
            Output::Milestone(milestone("all-online", 1, T)),
            Output::Health(health("acme", T, 80.0)),
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
                CUSTOMER_MEASUREMENT,
                DEVICE_MEASUREMENT,
                OUTCOME_MEASUREMENT,
                MILESTONE_MEASUREMENT,
                HEALTH_MEASUREMENT,
                ALERT_MEASUREMENT,
                PORTFOLIO_MEASUREMENT
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
            Output::Health(health("acme", T, 80.0)),
            Output::Alert(alert("acme", 1, T)),
            Output::Portfolio(portfolio(T, 6)),
        ]
    }

    #[test]
    fn the_documented_example_lines_are_what_the_encoder_writes() {
        for record in documented_records() {
            let text = line(record);
            assert!(
                SCHEMA_MD.contains(&text),
                "docs/SCHEMA.md lacks the line\n{text}"
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
        let start = SCHEMA_MD
            .find(&format!("### {heading}\n"))
            .unwrap_or_else(|| panic!("docs/SCHEMA.md has no `### {heading}`"));
        SCHEMA_MD[start..]
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (
                    cells[1].trim_matches('`').to_owned(),
                    cells[2].to_owned(),
                    cells[3].to_owned(),
                )
            })
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

    #[test]
    fn non_finite_fields_are_left_out() {
        let mut kpi = customer("acme", 0, 1);
        kpi.utilisation = f64::NAN;
        kpi.advanced_feature_share = f64::INFINITY;
        let text = line(Output::Customer(kpi));
        assert!(!text.contains("utilisation"), "{text}");
        assert!(!text.contains("advanced_feature_share"), "{text}");
        assert!(text.contains(" devices_purchased=4i,"), "{text}");
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
}
