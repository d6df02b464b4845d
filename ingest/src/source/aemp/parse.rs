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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// Reads a fleet snapshot page.
pub fn fleet_page(body: &[u8]) -> Result<FleetPage, ParseError> {
    let root = tree::parse(body)?;
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
    for entry in entries {
        match reading(element, entry) {
            Some(reading) => page.readings.push(reading),
            None => page.unreadable += 1,
        }
    }
    Ok(page)
}

fn reading(element: Element, entry: &Node) -> Option<Reading> {
    let at = timestamp(entry.text_of("datetime")?)?;
    let number = |names: &[&str]| -> Option<f64> {
        let text = names.iter().find_map(|n| entry.text_of(n))?;
        text.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let value = match element {
        Element::CumulativeOperatingHours | Element::CumulativeIdleHours => {
            Value::Total(number(&["Hour", "Hours"])?)
        }
        Element::CumulativeFuelUsed => {
            let amount = number(&["FuelConsumed", "FuelUsed", "Fuel"])?;
            let litres = match entry.text_of("FuelUnits") {
                None => amount,
                Some(unit) => amount * litres_per(unit)?,
            };
            Value::Total(litres)
        }
        Element::CumulativeLoadCount => Value::Total(number(&["Count"])?.floor()),
        Element::EngineStatus => Value::Running(boolean(entry.text_of("Running")?)?),
        Element::Faults => Value::Fault {
            code: entry.text_of("CodeIdentifier")?.to_owned(),
            severity: entry.text_of("CodeSeverity").map_or(Some(2), severity)?,
        },
    };
    Some(Reading { at, value })
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

/// Severity as the wire's 1..=3.
fn severity(text: &str) -> Option<u32> {
    let text = text.trim().to_ascii_lowercase();
    if let Ok(n) = text.parse::<u32>() {
        return Some(n.clamp(1, 3));
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
}
