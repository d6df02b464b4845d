//! Milestones: the ordered steps of a customer's journey to its outcome, each
//! with a due offset from activation. Checked once per closed day.

use serde::{Deserialize, Serialize};

use crate::model::{EventTime, Id};

/// What has to happen for a milestone to be reached.
#[derive(Debug, Clone, PartialEq)]
pub enum MilestoneKind {
    /// At least `share` of the purchased devices have reported.
    DevicesOnline {
        /// Fraction of devices purchased, 0..1.
        share: f64,
    },
    /// Operating hours since activation reach `hours`.
    OperatingHours {
        /// Threshold.
        hours: f64,
    },
    /// Advanced feature `feature` used in each of the last `weeks` weeks.
    FeatureWeekly {
        /// Index of the feature in the catalog's advanced list.
        feature_bit: u32,
        /// Name, for messages.
        feature: Id,
        /// Consecutive weeks.
        weeks: u32,
    },
    /// Outcome `outcome` met `windows` windows in a row.
    OutcomeStreak {
        /// Outcome name.
        outcome: Id,
        /// Windows in a row.
        windows: u32,
    },
}

/// One milestone.
#[derive(Debug, Clone, PartialEq)]
pub struct MilestoneSpec {
    /// Name, unique per customer.
    pub name: Id,
    /// What reaches it.
    pub kind: MilestoneKind,
    /// Due this many days after activation.
    pub due_days: u32,
    /// Reaching it delivers value: the first such milestone ends time to value.
    pub value: bool,
}

/// Where a milestone stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MilestoneStatus {
    /// Not reached, not yet due.
    #[default]
    Pending,
    /// Reached.
    Reached,
    /// Not reached and past due.
    Overdue,
}

impl MilestoneStatus {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Reached => "reached",
            Self::Overdue => "overdue",
        }
    }
}

/// A milestone's state at the end of one day. Field names are store field
/// names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MilestoneRecord {
    /// Customer id.
    pub customer: Id,
    /// Milestone name.
    pub milestone: Id,
    /// 1-based position in the journey.
    pub position: u32,
    /// Delivers value (ends time to value).
    pub value_milestone: bool,
    /// Start of the day this record describes, ms.
    pub window_start: EventTime,
    /// End of that day, ms.
    pub window_end: EventTime,
    /// Due date: activation + due days, ms.
    pub due_at: EventTime,
    /// When it was reached (end of the day it was reached), ms.
    pub reached_at: Option<EventTime>,
    /// pending, reached or overdue.
    pub status: MilestoneStatus,
}
