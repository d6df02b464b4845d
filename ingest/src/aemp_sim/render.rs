//! AEMP 2.0 documents as the simulated server writes them, in XML or JSON,
//! with the spelling quirks of real vendors switchable.

use std::fmt::Write as _;

use serde_json::{Value as Json, json};

use super::data::{Point, SimMachine};
use crate::source::aemp::config::Element;
use crate::source::aemp::parse::url_time;

/// How a document is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// JSON instead of XML.
    pub json: bool,
    /// JSON body wrapped in a one-item array.
    pub wrap_array: bool,
    /// `links` instead of `Links`.
    pub lowercase_links: bool,
    /// `liter` instead of `litre`.
    pub liter: bool,
}

/// One page: its links and entries.
pub struct Page<'a, T> {
    /// This page's path.
    pub this: String,
    /// The next page's path, if any.
    pub next: Option<String>,
    /// `snapshotTime`, ms.
    pub snapshot_ms: u64,
    /// Entries on the page.
    pub items: &'a [T],
}

fn esc(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

impl<T> Page<'_, T> {
    /// An XML document up to its entries: the declaration, the root
    /// element `root` with `snapshotTime`, and the links.
    fn xml_head(&self, style: Style, root: &str) -> String {
        let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        let snapshot = url_time(self.snapshot_ms);
        let _ = write!(out, r#"<{root} version="2" snapshotTime="{snapshot}">"#);
        let tag = if style.lowercase_links {
            "links"
        } else {
            "Links"
        };
        let _ = write!(
            out,
            "<{tag}><rel>self</rel><href>{}</href></{tag}>",
            esc(&self.this)
        );
        if let Some(next) = &self.next {
            let _ = write!(
                out,
                "<{tag}><rel>next</rel><href>{}</href></{tag}>",
                esc(next)
            );
        }
        out
    }

    /// A JSON document's members before its entries: `version`,
    /// `snapshotTime` and the links.
    fn json_head(&self, style: Style) -> serde_json::Map<String, Json> {
        let mut doc = serde_json::Map::new();
        doc.insert("version".into(), json!("2"));
        doc.insert("snapshotTime".into(), json!(url_time(self.snapshot_ms)));
        let mut links = vec![json!({"rel": "self", "href": self.this})];
        if let Some(next) = &self.next {
            links.push(json!({"rel": "next", "href": next}));
        }
        let key = if style.lowercase_links {
            "links"
        } else {
            "Links"
        };
        doc.insert(key.into(), Json::Array(links));
        doc
    }
}

fn finish_json(style: Style, doc: serde_json::Map<String, Json>) -> Vec<u8> {
    let doc = Json::Object(doc);
    let doc = if style.wrap_array {
        Json::Array(vec![doc])
    } else {
        doc
    };
    serde_json::to_vec(&doc).expect("JSON serialises")
}

/// A fleet snapshot page: headers and each machine's latest readings.
pub fn fleet(style: Style, page: &Page<'_, &SimMachine>) -> Vec<u8> {
    if style.json {
        let mut doc = page.json_head(style);
        let equipment: Vec<Json> = page
            .items
            .iter()
            .map(|m| {
                let h = &m.header;
                let mut e = serde_json::Map::new();
                e.insert(
                    "EquipmentHeader".into(),
                    json!({"OEMName": h.oem, "Model": h.model, "EquipmentID": h.id,
                           "SerialNumber": h.serial, "PIN": h.pin}),
                );
                if let Some(p) = m.points.last() {
                    let at = url_time(p.at);
                    e.insert(
                        "CumulativeOperatingHours".into(),
                        json!({"datetime": at, "Hour": p.hours}),
                    );
                    e.insert(
                        "CumulativeIdleHours".into(),
                        json!({"datetime": at, "Hour": p.idle}),
                    );
                    e.insert(
                        "FuelUsed".into(),
                        json!({"datetime": at, "FuelUnits": litre(style), "FuelConsumed": p.fuel}),
                    );
                    e.insert(
                        "EngineStatus".into(),
                        json!({"datetime": at, "Running": p.running}),
                    );
                }
                Json::Object(e)
            })
            .collect();
        doc.insert("Equipment".into(), Json::Array(equipment));
        return finish_json(style, doc);
    }
    let mut out = page.xml_head(style, "Fleet");
    for m in page.items {
        let h = &m.header;
        let _ = write!(
            out,
            "<Equipment><EquipmentHeader><OEMName>{}</OEMName><Model>{}</Model>\
             <EquipmentID>{}</EquipmentID><SerialNumber>{}</SerialNumber><PIN>{}</PIN>\
             </EquipmentHeader>",
            esc(&h.oem),
            esc(&h.model),
            esc(&h.id),
            esc(&h.serial),
            esc(&h.pin)
        );
        if let Some(p) = m.points.last() {
            let at = url_time(p.at);
            let _ = write!(
                out,
                r#"<CumulativeOperatingHours datetime="{at}"><Hour>{}</Hour></CumulativeOperatingHours><CumulativeIdleHours datetime="{at}"><Hour>{}</Hour></CumulativeIdleHours><FuelUsed datetime="{at}"><FuelUnits>{}</FuelUnits><FuelConsumed>{}</FuelConsumed></FuelUsed><EngineStatus datetime="{at}"><Running>{}</Running></EngineStatus>"#,
                p.hours,
                p.idle,
                litre(style),
                p.fuel,
                p.running
            );
        }
        out.push_str("</Equipment>");
    }
    out.push_str("</Fleet>");
    out.into_bytes()
}

fn litre(style: Style) -> &'static str {
    if style.liter { "liter" } else { "litre" }
}

/// One entry of a time series: (datetime, point, fault index for Faults).
pub type Entry<'a> = (u64, &'a Point, Option<usize>);

/// A time-series page of `element`.
pub fn series(style: Style, element: Element, page: &Page<'_, Entry<'_>>) -> Vec<u8> {
    let name = element.as_str();
    if style.json {
        let mut doc = page.json_head(style);
        let entries: Vec<Json> = page
            .items
            .iter()
            .map(|(at, p, fault)| {
                let at = url_time(*at);
                match element {
                    Element::CumulativeOperatingHours => json!({"datetime": at, "Hour": p.hours}),
                    Element::CumulativeIdleHours => json!({"datetime": at, "Hour": p.idle}),
                    Element::CumulativeFuelUsed => {
                        json!({"datetime": at, "FuelUnits": litre(style), "FuelConsumed": p.fuel})
                    }
                    Element::CumulativeLoadCount => json!({"datetime": at, "Count": p.loads}),
                    Element::EngineStatus => json!({"datetime": at, "Running": p.running}),
                    Element::Faults => {
                        let (code, severity) = &p.faults[fault.unwrap_or(0)];
                        json!({"datetime": at, "CodeIdentifier": code,
                               "CodeDescription": format!("simulated fault {code}"),
                               "CodeSeverity": severity.to_string(), "CodeSource": "ECM"})
                    }
                }
            })
            .collect();
        let key = if element == Element::Faults {
            "FaultCode"
        } else {
            name
        };
        doc.insert(key.into(), Json::Array(entries));
        return finish_json(style, doc);
    }
    let mut out = page.xml_head(style, name);
    for (at, p, fault) in page.items {
        let at = url_time(*at);
        // The elements with one value: its tag and the value.
        let single = match element {
            Element::CumulativeOperatingHours => Some(("Hour", p.hours.to_string())),
            Element::CumulativeIdleHours => Some(("Hour", p.idle.to_string())),
            Element::CumulativeLoadCount => Some(("Count", p.loads.to_string())),
            Element::EngineStatus => Some(("Running", p.running.to_string())),
            Element::CumulativeFuelUsed | Element::Faults => None,
        };
        let _ = match (single, element) {
            (Some((tag, value)), _) => write!(
                out,
                r#"<{name} datetime="{at}"><{tag}>{value}</{tag}></{name}>"#
            ),
            (None, Element::CumulativeFuelUsed) => write!(
                out,
                r#"<{name} datetime="{at}"><FuelUnits>{}</FuelUnits><FuelConsumed>{}</FuelConsumed></{name}>"#,
                litre(style),
                p.fuel
            ),
            // Faults.
            (None, _) => {
                let (code, severity) = &p.faults[fault.unwrap_or(0)];
                write!(
                    out,
                    r#"<FaultCode datetime="{at}"><CodeIdentifier>{}</CodeIdentifier><CodeDescription>simulated fault {}</CodeDescription><CodeSeverity>{severity}</CodeSeverity><CodeSource>ECM</CodeSource></FaultCode>"#,
                    esc(code),
                    esc(code)
                )
            }
        };
    }
    let _ = write!(out, "</{name}>");
    out.into_bytes()
}
