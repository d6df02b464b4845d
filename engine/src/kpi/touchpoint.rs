//! Touchpoints: what the CS team did with a customer (a kickoff, a
//! training, a business review, ...), when, who from the vendor, who from
//! the customer, and whether a decision-maker was there. The CS team's own
//! work is data too: coverage cadences are checked against it
//! ([`coverage_gap`](super::coverage_gap)), managed accounts are those with
//! touchpoints, and the impact of each kind of activity is measured from it.

use serde::{Deserialize, Serialize};

use crate::model::{EventTime, Id};

/// The kinds of CSM activity.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TouchpointKind {
    /// The start of the rollout with the customer's team.
    #[default]
    Kickoff,
    /// Operator or administrator training.
    Training,
    /// A visit to the customer's site.
    OnsiteVisit,
    /// A call to review health and usage.
    HealthCheckCall,
    /// A quarterly or executive business review (QBR / EBR).
    BusinessReview,
    /// A webinar or content sent (tech-touch).
    Webinar,
    /// An escalation handled for the customer.
    Escalation,
}

impl TouchpointKind {
    /// Every kind.
    pub const ALL: [Self; 7] = [
        Self::Kickoff,
        Self::Training,
        Self::OnsiteVisit,
        Self::HealthCheckCall,
        Self::BusinessReview,
        Self::Webinar,
        Self::Escalation,
    ];

    /// The name in files, stores and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kickoff => "kickoff",
            Self::Training => "training",
            Self::OnsiteVisit => "onsite_visit",
            Self::HealthCheckCall => "health_check_call",
            Self::BusinessReview => "business_review",
            Self::Webinar => "webinar",
            Self::Escalation => "escalation",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One touchpoint. Field names are store field names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Touchpoint {
    /// Customer id.
    pub customer: Id,
    /// What kind of activity.
    pub kind: TouchpointKind,
    /// The day it took place: midnight UTC, ms since the epoch.
    pub at: EventTime,
    /// The CS manager who held it (a user name of the HTTP port).
    pub csm: Id,
    /// Who attended from the customer, `;`-separated.
    pub attendees: String,
    /// A decision-maker of the customer attended.
    pub decision_maker_present: bool,
    /// Free text.
    pub notes: String,
    /// The user who recorded it (API), or `cli` / `csv:FILE`.
    pub recorded_by: Id,
}
