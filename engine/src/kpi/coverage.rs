//! Coverage models: per segment, how often each kind of touchpoint is due
//! (a cadence), e.g. a high-touch account gets a business review with its
//! decision-maker every 90 days, the first within 180 days of the contract
//! start. The `coverage_gap` rule checks the touchpoints against them.

use serde::{Deserialize, Serialize};

use super::touchpoint::TouchpointKind;
use crate::customer::Segment;

/// One cadence of a coverage model.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cadence {
    /// The kind of touchpoint that is due.
    pub kind: TouchpointKind,
    /// Due again this many days after the last one.
    pub every_days: u32,
    /// The first is due this many days after the contract start.
    pub first_within_days: u32,
    /// Only touchpoints with a decision-maker of the customer count.
    pub decision_maker: bool,
}

/// The cadences of each segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageModel {
    high_touch: Vec<Cadence>,
    low_touch: Vec<Cadence>,
    tech_touch: Vec<Cadence>,
}

impl Default for CoverageModel {
    /// High-touch: a business review with a decision-maker every 90 days,
    /// the first within 180; low-touch: a health-check call every quarter;
    /// tech-touch: a webinar or content every quarter.
    fn default() -> Self {
        let every = |kind, every_days, first_within_days, decision_maker| Cadence {
            kind,
            every_days,
            first_within_days,
            decision_maker,
        };
        Self {
            high_touch: vec![every(TouchpointKind::BusinessReview, 90, 180, true)],
            low_touch: vec![every(TouchpointKind::HealthCheckCall, 90, 90, false)],
            tech_touch: vec![every(TouchpointKind::Webinar, 90, 90, false)],
        }
    }
}

impl CoverageModel {
    /// The cadences of `segment`.
    pub fn cadences(&self, segment: Segment) -> &[Cadence] {
        match segment {
            Segment::HighTouch => &self.high_touch,
            Segment::LowTouch => &self.low_touch,
            Segment::TechTouch => &self.tech_touch,
        }
    }

    /// Replaces the cadences of `segment`.
    pub fn set(&mut self, segment: Segment, cadences: Vec<Cadence>) {
        match segment {
            Segment::HighTouch => self.high_touch = cadences,
            Segment::LowTouch => self.low_touch = cadences,
            Segment::TechTouch => self.tech_touch = cadences,
        }
    }
}
