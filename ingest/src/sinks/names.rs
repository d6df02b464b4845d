//! The names under which the engine's enums are stored (band, stage,
//! segment, rule, status, direction): their serde names, the same in every
//! sink and in JSON.

use fleetpulse_engine::kpi::outcome::Direction;
use serde::de::{DeserializeOwned, IntoDeserializer, value::Error};

/// `at_most` or `at_least` (the serde name; `Direction` has no `as_str`).
pub(crate) fn direction_str(direction: Direction) -> &'static str {
    match direction {
        Direction::AtMost => "at_most",
        Direction::AtLeast => "at_least",
    }
}

/// The unit variant of `T` whose serde name is `name`, if any.
pub(crate) fn parse_name<T: DeserializeOwned>(name: &str) -> Option<T> {
    T::deserialize(IntoDeserializer::<Error>::into_deserializer(name)).ok()
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::Segment;
    use fleetpulse_engine::kpi::health::{Band, Stage};
    use fleetpulse_engine::kpi::milestone::MilestoneStatus;
    use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
    use serde::Serialize;

    use super::*;

    /// The name serde gives `value`.
    fn serde_name<T: Serialize>(value: T) -> String {
        match serde_json::to_value(value).unwrap() {
            serde_json::Value::String(s) => s,
            other => panic!("not a unit variant: {other}"),
        }
    }

    /// Each stored name is the serde name and parses back.
    fn check<T>(values: &[T], stored: impl Fn(T) -> &'static str)
    where
        T: Serialize + DeserializeOwned + Copy + PartialEq + std::fmt::Debug,
    {
        for &value in values {
            let name = stored(value);
            assert_eq!(name, serde_name(value));
            assert_eq!(parse_name::<T>(name), Some(value));
        }
        assert_eq!(parse_name::<T>("exploded"), None);
    }

    #[test]
    fn stored_names_are_the_serde_names_and_parse_back() {
        check(&[Direction::AtMost, Direction::AtLeast], direction_str);
        check(&[Band::Red, Band::Yellow, Band::Green], Band::as_str);
        check(
            &[Stage::Onboard, Stage::Adopt, Stage::Grow, Stage::Renew],
            Stage::as_str,
        );
        check(
            &[Segment::HighTouch, Segment::LowTouch, Segment::TechTouch],
            Segment::as_str,
        );
        check(&Rule::ALL, Rule::as_str);
        check(
            &[AlertStatus::Open, AlertStatus::Resolved],
            AlertStatus::as_str,
        );
        check(
            &[
                MilestoneStatus::Pending,
                MilestoneStatus::Reached,
                MilestoneStatus::Overdue,
            ],
            MilestoneStatus::as_str,
        );
    }
}
