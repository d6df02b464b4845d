//! The coverage models of the customers file: `[[coverage]]` tables, one
//! cadence each, e.g. high-touch accounts get a business review with their
//! decision-maker every 90 days, the first within 180 days of the contract
//! start. A segment with no `[[coverage]]` keeps the engine's defaults
//! (`fleetpulse_engine::kpi::coverage::CoverageModel::default`).

use std::path::Path;

use fleetpulse_engine::Segment;
use fleetpulse_engine::kpi::coverage::{Cadence, CoverageModel};
use fleetpulse_engine::kpi::touchpoint::TouchpointKind;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::customers::CustomersFile;

/// `[[coverage]]`: one cadence of a segment's coverage model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CadenceConfig {
    /// `high-touch`, `low-touch` or `tech-touch`.
    pub segment: Segment,
    /// The touchpoint kind that is due, e.g. `business_review`.
    pub kind: String,
    /// Due again this many days after the last one.
    pub every_days: u32,
    /// The first is due this many days after the contract start
    /// (default: `every_days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_within_days: Option<u32>,
    /// Only touchpoints with a decision-maker of the customer count.
    #[serde(default)]
    pub decision_maker: bool,
}

impl CustomersFile {
    /// The coverage model: the `[[coverage]]` cadences of each segment that
    /// has some, the defaults for the others.
    pub fn coverage_model(&self, path: &Path) -> Result<CoverageModel, ConfigError> {
        let mut model = CoverageModel::default();
        let mut given: Vec<(Segment, Vec<Cadence>)> = Vec::new();
        for (i, c) in self.coverage.iter().enumerate() {
            let at = |field: &str, message: String| ConfigError::Invalid {
                path: path.to_owned(),
                field: format!("coverage[{i}].{field}"),
                message,
            };
            let kind = TouchpointKind::parse(&c.kind).ok_or_else(|| {
                let known: Vec<&str> = TouchpointKind::ALL.iter().map(|k| k.as_str()).collect();
                at(
                    "kind",
                    format!("`{}` is not one of {}", c.kind, known.join(", ")),
                )
            })?;
            if c.every_days == 0 {
                return Err(at("every_days", "must be at least 1".into()));
            }
            let cadence = Cadence {
                kind,
                every_days: c.every_days,
                first_within_days: c.first_within_days.unwrap_or(c.every_days),
                decision_maker: c.decision_maker,
            };
            match given.iter_mut().find(|(s, _)| *s == c.segment) {
                Some((_, cadences)) => cadences.push(cadence),
                None => given.push((c.segment, vec![cadence])),
            }
        }
        for (segment, cadences) in given {
            model.set(segment, cadences);
        }
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(text: &str) -> Result<CoverageModel, String> {
        let path = Path::new("c.toml");
        let file: CustomersFile =
            crate::config::parse_toml(path, text).map_err(|e| e.to_string())?;
        file.coverage_model(path).map_err(|e| e.to_string())
    }

    #[test]
    fn given_segments_replace_their_defaults() {
        let m = model(
            r#"
[[coverage]]
segment = "low-touch"
kind = "health_check_call"
every_days = 30

[[coverage]]
segment = "low-touch"
kind = "training"
every_days = 365
first_within_days = 60
"#,
        )
        .unwrap();
        let low = m.cadences(Segment::LowTouch);
        assert_eq!(low.len(), 2);
        assert_eq!(low[0].first_within_days, 30);
        assert_eq!(
            (low[1].kind, low[1].first_within_days),
            (TouchpointKind::Training, 60)
        );
        assert_eq!(
            m.cadences(Segment::HighTouch),
            CoverageModel::default().cadences(Segment::HighTouch)
        );
        let high = CoverageModel::default();
        let ebr = high.cadences(Segment::HighTouch)[0];
        assert_eq!(
            (
                ebr.kind,
                ebr.every_days,
                ebr.first_within_days,
                ebr.decision_maker
            ),
            (TouchpointKind::BusinessReview, 90, 180, true)
        );
    }

    #[test]
    fn mistakes_name_the_field() {
        let err =
            model("[[coverage]]\nsegment = \"high-touch\"\nkind = \"qbr\"\nevery_days = 90\n")
                .unwrap_err();
        assert!(
            err.contains("coverage[0].kind") && err.contains("`qbr`"),
            "{err}"
        );
        let err =
            model("[[coverage]]\nsegment = \"high-touch\"\nkind = \"webinar\"\nevery_days = 0\n")
                .unwrap_err();
        assert!(err.contains("coverage[0].every_days"), "{err}");
        let err = model("[[coverage]]\nsegment = \"gold\"\nkind = \"webinar\"\nevery_days = 9\n")
            .unwrap_err();
        assert!(err.starts_with("c.toml:2:"), "{err}");
    }
}
