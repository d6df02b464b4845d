//! The customers file (`customers.toml`): who the customers are and what
//! they bought. The engine needs devices purchased (utilisation's
//! denominator); ingest needs the list to refuse telemetry of unknown
//! customers.

use std::collections::HashMap;
use std::path::Path;

use fleetpulse_engine::CustomerContract;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, parse_toml};

/// The whole file: `[[customer]]` tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomersFile {
    /// One entry per customer.
    #[serde(default, rename = "customer")]
    pub customers: Vec<CustomerConfig>,
}

/// Coverage model, usually by contract value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Segment {
    /// A named CS manager.
    HighTouch,
    /// A pooled CS team.
    LowTouch,
    /// Automated nudges only.
    TechTouch,
}

impl Segment {
    /// The name used in config, stores and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HighTouch => "high-touch",
            Self::LowTouch => "low-touch",
            Self::TechTouch => "tech-touch",
        }
    }
}

/// One customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerConfig {
    /// Id, as in the telemetry topic.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Coverage segment.
    pub segment: Segment,
    /// IANA time zone of the customer's operations; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// What the customer bought.
    pub contract: Contract,
}

/// Contract facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// Annual recurring revenue.
    pub arr: f64,
    /// Contract start date, `YYYY-MM-DD`.
    pub start: String,
    /// Renewal date, `YYYY-MM-DD`.
    pub renewal: String,
    /// Machines bought; utilisation is measured against them.
    pub devices_purchased: u32,
    /// Operator seats bought.
    #[serde(default)]
    pub operator_seats: u32,
}

impl CustomersFile {
    /// Reads and checks a customers file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks customers TOML text (`path` is for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: Self = parse_toml(path, text)?;
        let invalid = |i: usize, field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: format!("customer[{i}].{field}"),
            message,
        };
        let mut seen = HashMap::new();
        for (i, c) in file.customers.iter().enumerate() {
            fleetpulse_proto::topic::check_id(&c.id)
                .map_err(|reason| invalid(i, "id", format!("`{}` {reason}", c.id)))?;
            if let Some(first) = seen.insert(c.id.as_str(), i) {
                return Err(invalid(
                    i,
                    "id",
                    format!("`{}` is also customer[{first}]", c.id),
                ));
            }
            for (field, date) in [
                ("contract.start", &c.contract.start),
                ("contract.renewal", &c.contract.renewal),
            ] {
                if !is_date(date) {
                    return Err(invalid(
                        i,
                        field,
                        format!("`{date}` is not a YYYY-MM-DD date"),
                    ));
                }
            }
            if c.contract.renewal < c.contract.start {
                return Err(invalid(
                    i,
                    "contract.renewal",
                    "is before contract.start".into(),
                ));
            }
            if !(c.contract.arr.is_finite() && c.contract.arr >= 0.0) {
                return Err(invalid(
                    i,
                    "contract.arr",
                    "must be a non-negative number".into(),
                ));
            }
        }
        Ok(file)
    }

    /// Devices purchased per customer, for the engine.
    pub fn contracts(&self) -> HashMap<String, CustomerContract> {
        self.customers
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    CustomerContract {
                        devices_purchased: c.contract.devices_purchased,
                    },
                )
            })
            .collect()
    }

    /// Looks a customer up by id.
    pub fn get(&self, id: &str) -> Option<&CustomerConfig> {
        self.customers.iter().find(|c| c.id == id)
    }

    /// Renders the file as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("customers serialise to TOML")
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && (1..=12).contains(&s[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&s[8..10].parse::<u32>().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[customer]]
id = "acme"
name = "Acme Quarry"
segment = "high-touch"
[customer.contract]
arr = 120000
start = "2026-01-01"
renewal = "2027-01-01"
devices_purchased = 50
operator_seats = 40
"#;

    #[test]
    fn parses_and_round_trips() {
        let file = CustomersFile::parse(Path::new("c.toml"), GOOD).unwrap();
        assert_eq!(file.customers[0].segment, Segment::HighTouch);
        assert_eq!(file.contracts()["acme"].devices_purchased, 50);
        let again = CustomersFile::parse(Path::new("c.toml"), &file.to_toml()).unwrap();
        assert_eq!(again, file);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = GOOD.replace("operator_seats", "operator_sets");
        let err = CustomersFile::parse(Path::new("c.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:11:"), "{err}");
        assert!(err.contains("operator_sets"), "{err}");
        let bad = GOOD.replace("2027-01-01", "next year");
        let err = CustomersFile::parse(Path::new("c.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("customer[0].contract.renewal"), "{err}");
    }
}
