//! What the engine knows of each customer beyond telemetry: contract,
//! segment, time zone, customer-defined outcomes and milestones, health
//! weights and risk thresholds. Built by ingest from `customers.toml`.

use std::sync::Arc;

use jiff::tz::TimeZone;

use crate::kpi::health::HealthWeights;
use crate::kpi::milestone::MilestoneSpec;
use crate::kpi::outcome::OutcomeSpec;
use crate::kpi::risk::RiskThresholds;
use crate::model::{EventTime, Id};

/// Coverage model, usually by contract value; alert routing follows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Segment {
    /// A named CS manager.
    #[default]
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

/// Contract facts.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    /// Annual recurring revenue.
    pub arr: f64,
    /// Contract start, ms since the epoch.
    pub start: EventTime,
    /// Renewal date, ms since the epoch.
    pub renewal: EventTime,
    /// Machines bought; utilisation's denominator.
    pub devices_purchased: u32,
    /// Operator seats bought.
    pub operator_seats: u32,
}

/// Everything the customer-success logic needs of one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerSpec {
    /// Id, as in the telemetry topic.
    pub id: Id,
    /// Display name.
    pub name: Arc<str>,
    /// Coverage segment.
    pub segment: Segment,
    /// Time zone of the customer's operations: daily windows follow its
    /// local day.
    pub timezone: TimeZone,
    /// Contract.
    pub contract: Contract,
    /// Optional maturity score (0-100) from outside telemetry (CRM, surveys).
    pub maturity: Option<f64>,
    /// Customer-defined outcomes.
    pub outcomes: Vec<OutcomeSpec>,
    /// Ordered milestones of the journey.
    pub milestones: Vec<MilestoneSpec>,
    /// Health weights (segment defaults unless overridden).
    pub weights: HealthWeights,
    /// Risk thresholds (segment defaults unless overridden).
    pub thresholds: RiskThresholds,
    /// Advanced features in the engine's catalog (`engine.advanced_features`):
    /// adoption depth's denominator, as the customer KPI's share has it.
    pub features_in_catalog: u32,
}

impl CustomerSpec {
    /// A customer with segment defaults and no outcomes or milestones.
    pub fn new(id: &str, segment: Segment, contract: Contract) -> Self {
        Self {
            id: id.into(),
            name: id.into(),
            segment,
            timezone: TimeZone::UTC,
            contract,
            maturity: None,
            outcomes: Vec::new(),
            milestones: Vec::new(),
            weights: HealthWeights::for_segment(segment),
            thresholds: RiskThresholds::for_segment(segment),
            features_in_catalog: crate::config::FeatureCatalog::default().advanced.len() as u32,
        }
    }
}
