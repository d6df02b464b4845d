//! What an AEMP answer says, read from the document tree ([`super::tree`])
//! of either format: fleet snapshot pages (for discovery and the snapshot
//! time) and time-series pages (the readings). Vendor spellings are
//! accepted here: `Links`/`links`, `datetime` as attribute or element,
//! `litre`/`liter`/`L` and gallons, severities as numbers or words.

use thiserror::Error;

use super::config::Element;
use super::tree::{self, Node};

/// US gallon in litres.
const LITRES_PER_US_GALLON: f64 = 3.785_411_784;
/// Imperial gallon in litres.
const LITRES_PER_IMPERIAL_GALLON: f64 = 4.546_09;

/// More operating or idle hours than any meter reaches (over a century of
/// running): a larger value is malformed, not a reading.
const MAX_HOURS: f64 = 1e6;
/// More litres than any machine burns in its life (4,000 a day for 680
/// years).
const MAX_LITRES: f64 = 1e9;
/// More loads than any machine counts (one a second for 31 years).
const MAX_COUNT: f64 = 1e9;
/// Severity of a fault whose `CodeSeverity` is absent or not understood:
/// the wire's "warning", the middle of 1..=3.
const UNKNOWN_SEVERITY: u32 = 2;

/// Names whose presence at the root makes an answer an AEMP document.
const AEMP_ROOT_MEMBERS: [&str; 3] = ["snapshotTime", "version", "Links"];

/// An answer that cannot be read.
#[derive(Debug, Error)]
pub enum ParseError {
    /// Not a well-formed document.
    #[error(transparent)]
    Malformed(#[from] tree::Malformed),
    /// Well formed, but not what the standard describes.
    #[error("{0}")]
    Content(String),
}

/// One page of the fleet snapshot (`/Fleet/{page}`).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPage {
    /// `snapshotTime`, ms since the epoch.
    pub snapshot_ms: Option<u64>,
    /// The `next` link, if there is a further page.
    pub next: Option<String>,
    /// The machines on this page.
    pub equipment: Vec<EquipmentHeader>,
}

/// Who a machine is (`EquipmentHeader`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EquipmentHeader {
    /// `OEMName`.
    pub oem: String,
    /// `Model`.
    pub model: String,
    /// `EquipmentID`: the vendor's id, used in `/Equipment/ID/...` URLs.
    pub id: String,
    /// `SerialNumber`.
    pub serial: String,
    /// `PIN`: product identification number.
    pub pin: String,
    /// The newest `datetime` of the machine's sections in the snapshot:
    /// a machine whose position is there already is not polled.
    pub latest_ms: Option<u64>,
}

/// One page of a time series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPage {
    /// The `next` link, if there is a further page.
    pub next: Option<String>,
    /// Readings that could be read.
    pub readings: Vec<Reading>,
    /// Entries that could not be read (no or a bad `datetime` or value):
    /// counted as `malformed`, skipped.
    pub unreadable: u64,
    /// Faults whose `CodeSeverity` is not 1-3 or a known word: taken with
    /// severity 2, counted as `unknown_severity`.
    pub unknown_severity: u64,
}

/// One reading of one element.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// `datetime`, ms since the epoch.
    pub at: u64,
    /// What was read.
    pub value: Value,
}

/// The value of a reading, in fleetpulse's units.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A running total: hours, litres or a count.
    Total(f64),
    /// Engine running.
    Running(bool),
    /// A fault code.
    Fault {
        /// `CodeIdentifier`.
        code: String,
        /// 1 = info, 2 = warning, 3 = critical.
        severity: u32,
    },
}

impl FleetPage {
    /// A digest of the machines on the page, to tell a page that repeats
    /// an earlier one of its chain; `None` for an empty page.
    pub fn fingerprint(&self) -> Option<u64> {
        (!self.equipment.is_empty()).then(|| digest(&self.equipment))
    }
}

impl SeriesPage {
    /// A digest of the page's entries, to tell a page that repeats an
    /// earlier one of its chain; `None` for an empty page.
    pub fn fingerprint(&self) -> Option<u64> {
        if self.readings.is_empty() && self.unreadable == 0 {
            return None;
        }
        let entries: Vec<(u64, u64, &str)> = (self.readings.iter())
            .map(|r| match &r.value {
                Value::Total(v) => (r.at, v.to_bits(), ""),
                Value::Running(b) => (r.at, u64::from(*b), ""),
                Value::Fault { code, severity } => (r.at, u64::from(*severity), code.as_str()),
            })
            .collect();
        Some(digest(&(entries, self.unreadable)))
    }
}

fn digest(value: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

/// Reads a fleet snapshot page.
pub fn fleet_page(body: &[u8]) -> Result<FleetPage, ParseError> {
    let root = tree::parse(body)?;
    if !is_aemp(&root, &["Fleet"], root.child("Equipment").is_some()) {
        return Err(not_aemp(&root));
    }
    if root.child("Equipment").is_none() && root.child("EquipmentHeader").is_some() {
        return Err(ParseError::Content(
            "EquipmentHeader outside Equipment".into(),
        ));
    }
    let mut equipment = Vec::new();
    for item in root.children_named("Equipment") {
        let Some(header) = item.child("EquipmentHeader") else {
            return Err(ParseError::Content(
                "Equipment without EquipmentHeader".into(),
            ));
        };
        let field = |name: &str| header.text_of(name).unwrap_or_default().to_owned();
        let latest_ms = item
            .children
            .iter()
            .filter_map(|section| section.text_of("datetime").and_then(timestamp))
            .max();
        equipment.push(EquipmentHeader {
            latest_ms,
            oem: field("OEMName"),
            model: field("Model"),
            id: field("EquipmentID"),
            serial: field("SerialNumber"),
            pin: field("PIN"),
        });
    }
    Ok(FleetPage {
        snapshot_ms: root.text_of("snapshotTime").and_then(timestamp),
        next: next_link(&root),
        equipment,
    })
}

/// Reads a time-series page of `element`: every entry carrying a
/// `datetime`, wherever the vendor nests it (directly under the root, or
/// under one container of the element's name).
pub fn series_page(element: Element, body: &[u8]) -> Result<SeriesPage, ParseError> {
    let root = tree::parse(body)?;
    let mut page = SeriesPage {
        next: next_link(&root),
        readings: Vec::new(),
        unreadable: 0,
        unknown_severity: 0,
    };
    let mut entries: Vec<&Node> = Vec::new();
    for child in &root.children {
        if child.name.eq_ignore_ascii_case("Links") {
            continue;
        }
        if child.child("datetime").is_some() {
            entries.push(child);
        } else {
            // A container (`<Faults><FaultCode datetime=..>...`).
            entries.extend(
                child
                    .children
                    .iter()
                    .filter(|c| c.child("datetime").is_some()),
            );
        }
    }
    let names = [element.as_str(), "Faults", "FaultCode"];
    if !is_aemp(&root, &names, !entries.is_empty()) {
        return Err(not_aemp(&root));
    }
    for entry in entries {
        match reading(element, entry) {
            Some((reading, known_severity)) => {
                page.unknown_severity += u64::from(!known_severity);
                page.readings.push(reading);
            }
            None => page.unreadable += 1,
        }
    }
    Ok(page)
}

/// Whether `root` is an AEMP document: not a web page, and it holds
/// what was asked for (`content`), carries the standard's
/// `snapshotTime`, `version` or `Links`, or (XML) is named one of
/// `names`. A maintenance page or an error object answered with 200 is
/// not "no data": taken as that, the time range it stood for would never
/// be asked for again.
fn is_aemp(root: &Node, names: &[&str], content: bool) -> bool {
    if root.name.eq_ignore_ascii_case("html") {
        return false;
    }
    content
        || names.iter().any(|n| root.name.eq_ignore_ascii_case(n))
        || AEMP_ROOT_MEMBERS.iter().any(|n| root.child(n).is_some())
}

fn not_aemp(root: &Node) -> ParseError {
    let what = if root.name.is_empty() {
        let members: Vec<&str> = root
            .children
            .iter()
            .map(|c| c.name.as_str())
            .take(4)
            .collect();
        format!("a JSON object of `{}`", members.join("`, `"))
    } else {
        format!("XML rooted at `{}`", root.name)
    };
    ParseError::Content(format!("not an AEMP document: {what}"))
}

/// One entry's reading, and whether its fault severity (if any) was
/// understood; `None` when it cannot be read.
fn reading(element: Element, entry: &Node) -> Option<(Reading, bool)> {
    let at = timestamp(entry.text_of("datetime")?)?;
    let number = |names: &[&str], most: f64| -> Option<f64> {
        let text = names.iter().find_map(|n| entry.text_of(n))?;
        text.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && (0.0..=most).contains(v))
    };
    let mut known_severity = true;
    let value = match element {
        Element::CumulativeOperatingHours | Element::CumulativeIdleHours => {
            Value::Total(number(&["Hour", "Hours"], MAX_HOURS)?)
        }
        Element::CumulativeFuelUsed => {
            let amount = number(&["FuelConsumed", "FuelUsed", "Fuel"], f64::MAX)?;
            let litres = match entry.text_of("FuelUnits") {
                None => amount,
                Some(unit) => amount * litres_per(unit)?,
            };
            Value::Total(Some(litres).filter(|l| *l <= MAX_LITRES)?)
        }
        Element::CumulativeLoadCount => Value::Total(number(&["Count"], MAX_COUNT)?.floor()),
        Element::EngineStatus => Value::Running(boolean(entry.text_of("Running")?)?),
        Element::Faults => Value::Fault {
            code: entry.text_of("CodeIdentifier")?.to_owned(),
            severity: match entry.text_of("CodeSeverity") {
                None => UNKNOWN_SEVERITY,
                Some(text) => severity(text).unwrap_or_else(|| {
                    known_severity = false;
                    UNKNOWN_SEVERITY
                }),
            },
        },
    };
    Some((Reading { at, value }, known_severity))
}

/// Litres per unit of `unit`; `None` for a unit that is not a volume.
pub fn litres_per(unit: &str) -> Option<f64> {
    match unit.trim().to_ascii_lowercase().as_str() {
        "litre" | "liter" | "litres" | "liters" | "l" => Some(1.0),
        "gallon" | "gallons" | "us gallon" | "us gallons" | "gal" | "gallon us" => {
            Some(LITRES_PER_US_GALLON)
        }
        "imperial gallon" | "imperial gallons" | "gallon uk" | "uk gallon" => {
            Some(LITRES_PER_IMPERIAL_GALLON)
        }
        _ => None,
    }
}

fn boolean(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Severity as the wire's 1..=3; `None` for a number outside it or a
/// word not known (a vendor's own scale is not guessed at).
fn severity(text: &str) -> Option<u32> {
    let text = text.trim().to_ascii_lowercase();
    if let Ok(n) = text.parse::<u32>() {
        return (1..=3).contains(&n).then_some(n);
    }
    match text.as_str() {
        "low" | "info" | "information" => Some(1),
        "medium" | "moderate" | "warning" => Some(2),
        "high" | "critical" | "severe" => Some(3),
        _ => None,
    }
}

/// The `href` of the `Links` entry whose `rel` is `next`.
fn next_link(root: &Node) -> Option<String> {
    root.children_named("Links")
        .find(|l| {
            l.text_of("rel")
                .is_some_and(|r| r.eq_ignore_ascii_case("next"))
        })
        .and_then(|l| l.text_of("href"))
        .map(str::to_owned)
}

/// An ISO 8601 / RFC 3339 time in ms since the epoch.
pub fn timestamp(text: &str) -> Option<u64> {
    let t: jiff::Timestamp = text.trim().parse().ok()?;
    u64::try_from(t.as_millisecond()).ok()
}

/// A time as the standard writes it in URLs: `YYYY-MM-DDThh:mm:ssZ`.
pub fn url_time(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_page_in_either_format_reads_the_same() {
        let xml = br#"<Fleet version="2" snapshotTime="2026-01-05T10:00:00Z">
            <Links><rel>self</rel><href>/Fleet/1</href></Links>
            <Links><rel>next</rel><href>/Fleet/2</href></Links>
            <Equipment><EquipmentHeader><OEMName>Acme</OEMName><Model>X1</Model>
              <EquipmentID>E#1</EquipmentID><SerialNumber>S1</SerialNumber><PIN>P1</PIN>
            </EquipmentHeader></Equipment></Fleet>"#;
        let json = br#"{"version":"2","snapshotTime":"2026-01-05T10:00:00Z",
            "links":[{"rel":"self","href":"/Fleet/1"},{"rel":"next","href":"/Fleet/2"}],
            "Equipment":[{"EquipmentHeader":{"OEMName":"Acme","Model":"X1","EquipmentID":"E#1",
              "SerialNumber":"S1","PIN":"P1"}}]}"#;
        let a = fleet_page(xml).unwrap();
        let b = fleet_page(json).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.next.as_deref(), Some("/Fleet/2"));
        assert_eq!(a.snapshot_ms, Some(1_767_607_200_000));
        assert_eq!(a.equipment[0].id, "E#1");
    }

    #[test]
    fn series_entries_with_units_severities_and_bad_ones() {
        let xml = br#"<CumulativeFuelUsed>
            <CumulativeFuelUsed datetime="2026-01-05T00:10:00Z"><FuelUnits>liter</FuelUnits><FuelConsumed>10</FuelConsumed></CumulativeFuelUsed>
            <CumulativeFuelUsed datetime="2026-01-05T00:20:00Z"><FuelUnits>litre</FuelUnits><FuelConsumed>12.5</FuelConsumed></CumulativeFuelUsed>
            <CumulativeFuelUsed datetime="2026-01-05T00:30:00Z"><FuelUnits>gallon</FuelUnits><FuelConsumed>1</FuelConsumed></CumulativeFuelUsed>
            <CumulativeFuelUsed datetime="yesterday"><FuelConsumed>1</FuelConsumed></CumulativeFuelUsed>
            <CumulativeFuelUsed datetime="2026-01-05T00:40:00Z"><FuelUnits>kWh</FuelUnits><FuelConsumed>1</FuelConsumed></CumulativeFuelUsed>
        </CumulativeFuelUsed>"#;
        let page = series_page(Element::CumulativeFuelUsed, xml).unwrap();
        let litres: Vec<_> = page.readings.iter().map(|r| r.value.clone()).collect();
        assert_eq!(
            litres,
            [
                Value::Total(10.0),
                Value::Total(12.5),
                Value::Total(LITRES_PER_US_GALLON)
            ]
        );
        assert_eq!(page.unreadable, 2);

        let json = br#"{"Links":[],"Faults":{"FaultCode":[
            {"datetime":"2026-01-05T00:10:00Z","CodeIdentifier":"SPN 100","CodeSeverity":"High"},
            {"datetime":"2026-01-05T00:10:00Z","CodeIdentifier":"E7","CodeSeverity":"1"}]}}"#;
        let page = series_page(Element::Faults, json).unwrap();
        assert_eq!(page.readings.len(), 2);
        assert_eq!(
            page.readings[0].value,
            Value::Fault {
                code: "SPN 100".into(),
                severity: 3
            }
        );
    }

    #[test]
    fn times_round_trip_through_url_form() {
        let ms = 1_767_571_800_000;
        assert_eq!(url_time(ms), "2026-01-05T00:10:00Z");
        assert_eq!(timestamp(&url_time(ms)), Some(ms));
        assert_eq!(timestamp("2026-01-05T01:10:00+01:00"), Some(ms));
    }

    #[test]
    fn answers_that_are_not_aemp_documents_are_refused() {
        let html = br#"<?xml version="1.0"?><!DOCTYPE html>
            <html xmlns="http://www.w3.org/1999/xhtml"><head><title>Maintenance</title>
            <link rel="stylesheet" href="/s.css"/></head><body><p>Back soon</p></body></html>"#;
        let error = br#"{"error": "maintenance", "retry": "later"}"#;
        for body in [&html[..], &error[..]] {
            let e = fleet_page(body).unwrap_err().to_string();
            assert!(e.contains("not an AEMP document"), "{e}");
            let e = series_page(Element::CumulativeOperatingHours, body)
                .unwrap_err()
                .to_string();
            assert!(e.contains("not an AEMP document"), "{e}");
        }
        // Empty answers that are AEMP documents are "no data".
        let empty_fleet = br#"<Fleet version="2" snapshotTime="2026-01-05T10:00:00Z"/>"#;
        assert!(fleet_page(empty_fleet).unwrap().equipment.is_empty());
        let json = br#"{"version": "2", "Links": []}"#;
        assert!(fleet_page(json).unwrap().equipment.is_empty());
        for body in [&b"<CumulativeOperatingHours/>"[..], json] {
            let page = series_page(Element::CumulativeOperatingHours, body).unwrap();
            assert!(page.readings.is_empty());
        }
    }

    #[test]
    fn values_no_meter_reaches_are_unreadable() {
        let xml = br#"<CumulativeOperatingHours>
            <CumulativeOperatingHours datetime="2026-01-05T00:10:00Z"><Hour>99999</Hour></CumulativeOperatingHours>
            <CumulativeOperatingHours datetime="2026-01-05T00:20:00Z"><Hour>1e308</Hour></CumulativeOperatingHours>
            <CumulativeOperatingHours datetime="2026-01-05T00:30:00Z"><Hour>inf</Hour></CumulativeOperatingHours>
        </CumulativeOperatingHours>"#;
        let page = series_page(Element::CumulativeOperatingHours, xml).unwrap();
        assert_eq!(page.readings.len(), 1);
        assert_eq!(page.unreadable, 2);
        let json = br#"{"Links":[],"CumulativeFuelUsed":[
            {"datetime":"2026-01-05T00:10:00Z","FuelUnits":"gallon","FuelConsumed":1e300}]}"#;
        assert_eq!(
            series_page(Element::CumulativeFuelUsed, json)
                .unwrap()
                .unreadable,
            1
        );
    }

    #[test]
    fn a_severity_not_understood_is_taken_as_2_and_counted() {
        let json = br#"{"Links":[],"FaultCode":[
            {"datetime":"2026-01-05T00:10:00Z","CodeIdentifier":"A","CodeSeverity":"9"},
            {"datetime":"2026-01-05T00:10:00Z","CodeIdentifier":"B","CodeSeverity":"urgent"},
            {"datetime":"2026-01-05T00:10:00Z","CodeIdentifier":"C","CodeSeverity":"3"},
            {"datetime":"2026-01-05T00:10:00Z","CodeIdentifier":"D"}]}"#;
        let page = series_page(Element::Faults, json).unwrap();
        let severities: Vec<u32> = (page.readings.iter())
            .map(|r| match r.value {
                Value::Fault { severity, .. } => severity,
                _ => 0,
            })
            .collect();
        assert_eq!(severities, [2, 2, 3, 2]);
        assert_eq!((page.unknown_severity, page.unreadable), (2, 0));
    }

    #[test]
    fn pages_with_the_same_entries_have_the_same_fingerprint() {
        let page = |hour: &str| {
            let body = format!(
                r#"<CumulativeOperatingHours snapshotTime="2026-01-05T10:00:0{hour}Z">
                <CumulativeOperatingHours datetime="2026-01-05T00:10:00Z"><Hour>{hour}</Hour></CumulativeOperatingHours>
                </CumulativeOperatingHours>"#
            );
            series_page(Element::CumulativeOperatingHours, body.as_bytes())
                .unwrap()
                .fingerprint()
        };
        assert_eq!(page("1"), page("1"));
        assert_ne!(page("1"), page("2"));
        let empty = series_page(Element::Faults, b"<Faults/>").unwrap();
        assert_eq!(empty.fingerprint(), None);
    }
}
