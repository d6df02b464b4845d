//! KPI records as InfluxDB line protocol. Pure functions, no I/O.
//!
//! ```text
//! customer_kpi,customer=acme,window=1h active_devices=2i,...,utilisation=0.25,window_end=1700003600000i 1700000000000000000
//! ```
//!
//! - Measurement `customer_kpi`, tags `customer`, `window`; measurement
//!   `device_kpi`, tags `customer`, `device`, `site`, `window` (tags sorted by
//!   key, as InfluxDB prefers).
//! - Every other field of the record is a field: integers with the `i`
//!   suffix, floats always with a decimal point or an exponent (`3.0`, never
//!   `3`, so no reader mistakes them for integers), `last_state` as a string.
//!   `window_end` and `last_seen` are integer fields in ms since the epoch.
//! - The timestamp is `window_start` in nanoseconds (write with
//!   `precision=ns`).
//! - A non-finite float (NaN, ±inf) has no line-protocol form: that one field
//!   is left out of the line. The engine does not produce them.
//!
//! Escaping follows the line-protocol reference: in the measurement, commas
//! and spaces; in tag keys, tag values and field keys, commas, equals signs
//! and spaces; in string field values, double quotes and backslashes. Tag
//! values pass through byte for byte otherwise, so UTF-8 round-trips.
//!
//! A backslash in a tag value is written as is, because InfluxDB does not
//! unescape `\\` in tags while VictoriaMetrics does. That leaves a few values
//! that no encoding stores identically in both: a backslash at the end, or
//! followed by another backslash, a comma, an equals sign or a space. Those
//! records, and records with an empty id, are refused with [`EncodeError`].

use std::fmt::Write as _;

use fleetpulse_engine::{CustomerKpi, DeviceKpi, Output};
use thiserror::Error;

/// Measurement of [`CustomerKpi`] records.
pub const CUSTOMER_MEASUREMENT: &str = "customer_kpi";
/// Measurement of [`DeviceKpi`] records.
pub const DEVICE_MEASUREMENT: &str = "device_kpi";

/// Why a record has no line-protocol form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A tag value is empty; line protocol has no empty tag values.
    #[error("tag `{tag}` is empty")]
    EmptyTag {
        /// The tag key.
        tag: &'static str,
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

/// Refuses tag values that have no faithful encoding (see the module docs).
fn check_tag(tag: &'static str, value: &str) -> Result<(), EncodeError> {
    if value.is_empty() {
        return Err(EncodeError::EmptyTag { tag });
    }
    let bytes = value.as_bytes();
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
/// backslashes.
pub fn escape_string_field(text: &str, out: &mut String) {
    out.push('"');
    escape(text, &['"', '\\'], out);
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
    use fleetpulse_engine::MachineState;

    use super::*;
    use crate::sinks::fixtures::{customer, device};

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
