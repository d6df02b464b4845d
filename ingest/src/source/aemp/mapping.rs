//! Which customer, site and device an AEMP machine is: the
//! `[[aemp_equipment]]` table of the customers file, matched by PIN or by
//! serial number. A machine that is not in it is counted and left alone:
//! an OEM account often holds machines of several customers.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::parse::EquipmentHeader;
use crate::config::ConfigError;

/// One machine of an AEMP source and where its readings belong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AempEquipment {
    /// The `[[aemp]]` source it is polled from (its `name`); any source
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Product identification number (`PIN`), the preferred key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Serial number (`SerialNumber`), for vendors without PINs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Customer id (as in `[[customer]]`).
    pub customer: String,
    /// Site id.
    pub site: String,
    /// Device id the machine's KPIs are reported under.
    pub device: String,
}

impl AempEquipment {
    /// The key this entry matches and its position is kept under.
    pub fn key(&self) -> String {
        match (&self.pin, &self.serial) {
            (Some(pin), _) => format!("PIN:{pin}"),
            (None, Some(serial)) => format!("SN:{serial}"),
            (None, None) => String::new(),
        }
    }
}

/// Checks the table: a PIN or a serial number in each entry, known
/// customers, ids that fit a topic, no machine or device twice. A machine
/// may have one entry for any source and others naming a source: the
/// named one is used for its source ([`EquipmentMap::for_source`]).
pub fn check(
    entries: &[AempEquipment],
    customers: &[&str],
    path: &Path,
) -> Result<(), ConfigError> {
    let mut keys = HashMap::new();
    let mut devices = HashMap::new();
    // A set: a mapping of 100,000 machines to 20,000 customers is checked
    // at every start and reload.
    let customers: HashSet<&str> = customers.iter().copied().collect();
    for (i, e) in entries.iter().enumerate() {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: format!("aemp_equipment[{i}].{field}"),
            message,
        };
        if e.pin.as_deref().is_none_or(str::is_empty)
            && e.serial.as_deref().is_none_or(str::is_empty)
        {
            return Err(invalid(
                "pin",
                "give the machine's `pin` or its `serial`".into(),
            ));
        }
        if !customers.contains(&e.customer.as_str()) {
            return Err(invalid(
                "customer",
                format!("`{}` is not a [[customer]] of this file", e.customer),
            ));
        }
        for (field, id) in [("site", &e.site), ("device", &e.device)] {
            fleetpulse_proto::topic::check_id(id)
                .map_err(|reason| invalid(field, format!("`{id}` {reason}")))?;
        }
        let key = (e.source.clone(), e.key());
        if let Some(first) = keys.insert(key, i) {
            return Err(invalid(
                if e.pin.is_some() { "pin" } else { "serial" },
                format!("the same machine is aemp_equipment[{first}]"),
            ));
        }
        if let Some(first) = devices.insert((&e.customer, &e.device), i) {
            return Err(invalid(
                "device",
                format!(
                    "`{}` of customer `{}` is also aemp_equipment[{first}]",
                    e.device, e.customer
                ),
            ));
        }
    }
    Ok(())
}

/// The entries of one source, looked up by PIN, then serial number.
#[derive(Debug, Clone, Default)]
pub struct EquipmentMap {
    by_pin: HashMap<String, AempEquipment>,
    by_serial: HashMap<String, AempEquipment>,
}

impl EquipmentMap {
    /// The entries of `entries` that belong to `source`. An entry that
    /// names the source wins over one for any source of the same machine,
    /// wherever each stands in the file: it says more.
    pub fn for_source(entries: &[AempEquipment], source: &str) -> Self {
        let mut map = Self::default();
        let any = entries.iter().filter(|e| e.source.is_none());
        let named = entries
            .iter()
            .filter(|e| e.source.as_deref() == Some(source));
        for e in any.chain(named) {
            if let Some(pin) = &e.pin {
                map.by_pin.insert(pin.clone(), e.clone());
            } else if let Some(serial) = &e.serial {
                map.by_serial.insert(serial.clone(), e.clone());
            }
        }
        map
    }

    /// Where a machine belongs, if it is mapped.
    pub fn find(&self, header: &EquipmentHeader) -> Option<&AempEquipment> {
        (!header.pin.is_empty())
            .then(|| self.by_pin.get(&header.pin))
            .flatten()
            .or_else(|| {
                (!header.serial.is_empty())
                    .then(|| self.by_serial.get(&header.serial))
                    .flatten()
            })
    }

    /// Machines mapped.
    pub fn len(&self) -> usize {
        self.by_pin.len() + self.by_serial.len()
    }

    /// No machine mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pin: Option<&str>, serial: Option<&str>, device: &str) -> AempEquipment {
        AempEquipment {
            source: None,
            pin: pin.map(Into::into),
            serial: serial.map(Into::into),
            customer: "c1".into(),
            site: "s1".into(),
            device: device.into(),
        }
    }

    #[test]
    fn machines_match_by_pin_then_serial() {
        let entries = [
            entry(Some("P1"), None, "d1"),
            entry(None, Some("S2"), "d2"),
            AempEquipment {
                source: Some("other".into()),
                ..entry(Some("P3"), None, "d3")
            },
        ];
        check(&entries, &["c1"], Path::new("customers.toml")).unwrap();
        let map = EquipmentMap::for_source(&entries, "oem");
        let header = |pin: &str, serial: &str| EquipmentHeader {
            pin: pin.into(),
            serial: serial.into(),
            ..EquipmentHeader::default()
        };
        assert_eq!(map.find(&header("P1", "x")).unwrap().device, "d1");
        assert_eq!(map.find(&header("", "S2")).unwrap().device, "d2");
        assert_eq!(map.find(&header("P9", "S2")).unwrap().device, "d2");
        assert!(map.find(&header("P3", "")).is_none());
        assert_eq!(map.len(), 2);
    }

    /// An entry naming the source is used for it, before or after the
    /// entry for any source; other sources take the latter.
    #[test]
    fn an_entry_naming_its_source_wins_over_one_for_any_source() {
        let any = entry(Some("P1"), None, "any-source");
        let named = AempEquipment {
            source: Some("oem-b".into()),
            ..entry(Some("P1"), None, "oem-b-machine")
        };
        let header = EquipmentHeader {
            pin: "P1".into(),
            ..EquipmentHeader::default()
        };
        for entries in [[any.clone(), named.clone()], [named, any]] {
            check(&entries, &["c1"], Path::new("customers.toml")).unwrap();
            let oem_b = EquipmentMap::for_source(&entries, "oem-b");
            assert_eq!(oem_b.find(&header).unwrap().device, "oem-b-machine");
            assert_eq!(oem_b.len(), 1);
            let oem_c = EquipmentMap::for_source(&entries, "oem-c");
            assert_eq!(oem_c.find(&header).unwrap().device, "any-source");
        }
    }

    #[test]
    fn errors_name_the_entry_and_field() {
        let path = Path::new("customers.toml");
        let e = check(&[entry(None, None, "d")], &["c1"], path).unwrap_err();
        assert!(e.to_string().contains("aemp_equipment[0].pin"), "{e}");
        let e = check(&[entry(Some("P"), None, "d")], &["c2"], path).unwrap_err();
        assert!(e.to_string().contains("aemp_equipment[0].customer"), "{e}");
        let e = check(&[entry(Some("P"), None, "a/b")], &["c1"], path).unwrap_err();
        assert!(e.to_string().contains("aemp_equipment[0].device"), "{e}");
        let twice = [entry(Some("P"), None, "d"), entry(Some("P"), None, "e")];
        let e = check(&twice, &["c1"], path).unwrap_err();
        assert!(e.to_string().contains("aemp_equipment[1].pin"), "{e}");
    }
}
