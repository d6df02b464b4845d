//! The value types a record column may hold, and how each is stored: one
//! [`Cell`] impl per Rust type, so every store treats a type the same way.

use std::sync::Arc;

use fleetpulse_engine::kpi::forecast::Method;
use fleetpulse_engine::kpi::health::{Band, Stage};
use fleetpulse_engine::kpi::milestone::MilestoneStatus;
use fleetpulse_engine::kpi::outcome::Direction;
use fleetpulse_engine::kpi::revenue_retention::ContractEventKind;
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::kpi::touchpoint::TouchpointKind;
use fleetpulse_engine::{MachineState, Segment};
use rusqlite::Row;
use rusqlite::types::{ToSql, ToSqlOutput, Type};

/// What kind of value a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number, never negative (counts, ms since the epoch).
    Integer,
    /// A float; NaN stands for "undefined".
    Real,
    /// True or false.
    Boolean,
    /// Free text or an id.
    Text,
    /// One of a fixed set of names (the engine's serde names).
    Enum {
        /// The Rust type, also the name of its OpenAPI schema.
        type_name: &'static str,
        /// Every name, in declaration order.
        names: &'static [&'static str],
    },
}

/// A column's type: its kind, and whether it may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellType {
    /// The kind of value.
    pub kind: Kind,
    /// `Option<_>`: absent is a value of its own (NULL, left out, `null`).
    pub optional: bool,
}

impl CellType {
    /// The declared SQLite type. REAL is always nullable: SQLite stores NaN
    /// as NULL.
    pub fn sql(self) -> &'static str {
        match (self.kind, self.optional) {
            (Kind::Real, _) => "REAL",
            (Kind::Integer | Kind::Boolean, true) => "INTEGER",
            (Kind::Integer | Kind::Boolean, false) => "INTEGER NOT NULL",
            (Kind::Text | Kind::Enum { .. }, true) => "TEXT",
            (Kind::Text | Kind::Enum { .. }, false) => "TEXT NOT NULL",
        }
    }

    /// The line-protocol field type.
    pub fn line_protocol(self) -> &'static str {
        match self.kind {
            Kind::Integer => "integer",
            Kind::Real => "float",
            Kind::Boolean => "boolean",
            Kind::Text | Kind::Enum { .. } => "string",
        }
    }
}

/// One value of a record, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A whole number.
    Integer(u64),
    /// A float, possibly not finite.
    Real(f64),
    /// True or false.
    Boolean(bool),
    /// Text, an id or an enum name.
    Text(&'a str),
    /// An absent optional value.
    Absent,
}

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match *self {
            Value::Integer(v) => i64::try_from(v)
                .map(ToSqlOutput::from)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
            // SQLite stores a NaN as NULL.
            Value::Real(v) => Ok(ToSqlOutput::from(v)),
            Value::Boolean(v) => Ok(ToSqlOutput::from(v)),
            Value::Text(v) => Ok(ToSqlOutput::from(v)),
            Value::Absent => Ok(ToSqlOutput::from(rusqlite::types::Null)),
        }
    }
}

impl serde::Serialize for Value<'_> {
    /// Non-finite floats and absent values are `null`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Value::Integer(v) => s.serialize_u64(v),
            Value::Real(v) if v.is_finite() => s.serialize_f64(v),
            Value::Real(_) | Value::Absent => s.serialize_none(),
            Value::Boolean(v) => s.serialize_bool(v),
            Value::Text(v) => s.serialize_str(v),
        }
    }
}

/// A Rust type a record column may have.
pub trait Cell: Sized {
    /// How the type is stored.
    const TYPE: CellType;
    /// The value, borrowed.
    fn value(&self) -> Value<'_>;
    /// Reads the value of column `idx` (named `column`, for errors).
    fn read(row: &Row<'_>, idx: usize, column: &str) -> rusqlite::Result<Self>;
}

const fn plain(kind: Kind) -> CellType {
    CellType {
        kind,
        optional: false,
    }
}

/// `impl Cell for $ty`: its kind, whether it is optional, its value and how
/// it is read (`row.get` unless given).
macro_rules! cell {
    ($ty:ty, $kind:ident, $optional:literal, |$v:ident| $value:expr) => {
        cell!($ty, $kind, $optional, |$v| $value, |row, idx| row.get(idx));
    };
    ($ty:ty, $kind:ident, $optional:literal, |$v:ident| $value:expr, |$row:ident, $idx:ident| $read:expr) => {
        impl Cell for $ty {
            const TYPE: CellType = CellType {
                kind: Kind::$kind,
                optional: $optional,
            };
            fn value(&self) -> Value<'_> {
                let $v = self;
                $value
            }
            fn read($row: &Row<'_>, $idx: usize, _: &str) -> rusqlite::Result<Self> {
                $read
            }
        }
    };
}

cell!(u32, Integer, false, |v| Value::Integer(u64::from(*v)));
cell!(u64, Integer, false, |v| Value::Integer(*v));
cell!(Option<u64>, Integer, true, |v| v
    .map_or(Value::Absent, Value::Integer));
// NULL (stored for a non-finite value) reads back as NaN.
cell!(f64, Real, false, |v| Value::Real(*v), |row, idx| Ok(row
    .get::<_, Option<f64>>(idx)?
    .unwrap_or(f64::NAN)));
cell!(Option<f64>, Real, true, |v| v
    .map_or(Value::Absent, Value::Real));
cell!(bool, Boolean, false, |v| Value::Boolean(*v));
cell!(Arc<str>, Text, false, |v| Value::Text(v), |row, idx| Ok(
    row.get::<_, String>(idx)?.into()
));
cell!(String, Text, false, |v| Value::Text(v));

/// The name an enum value is stored under: its serde name.
pub trait Named: Sized + Copy + 'static {
    /// Every value with its name, in declaration order.
    const ALL: &'static [(Self, &'static str)];
    /// The stored name.
    fn name(self) -> &'static str;
    /// The value stored as `name`.
    fn from_name(name: &str) -> Option<Self>;
}

/// Makes an engine enum a [`Named`] [`Cell`]. The `match` is exhaustive, so
/// a variant the engine adds fails to compile here until it has a name.
macro_rules! enum_cell {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl Named for $ty {
            const ALL: &'static [(Self, &'static str)] = &[$(($ty::$variant, $name)),+];
            fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
            fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }

        impl Cell for $ty {
            const TYPE: CellType = plain(Kind::Enum {
                type_name: stringify!($ty),
                names: &[$($name),+],
            });
            fn value(&self) -> Value<'_> {
                Value::Text(self.name())
            }
            fn read(row: &Row<'_>, idx: usize, column: &str) -> rusqlite::Result<Self> {
                let text: String = row.get(idx)?;
                Self::from_name(&text).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        idx,
                        Type::Text,
                        format!("unknown {column} `{text}`").into(),
                    )
                })
            }
        }
    };
}

enum_cell!(MachineState {
    Unknown => "unknown",
    Running => "running",
    Idle => "idle",
    Off => "off",
    Fault => "fault",
});
enum_cell!(Direction {
    AtMost => "at_most",
    AtLeast => "at_least",
});
enum_cell!(MilestoneStatus {
    Pending => "pending",
    Reached => "reached",
    Overdue => "overdue",
});
enum_cell!(Band {
    Red => "red",
    Yellow => "yellow",
    Green => "green",
});
enum_cell!(Stage {
    Onboard => "onboard",
    Adopt => "adopt",
    Grow => "grow",
    Renew => "renew",
});
enum_cell!(Segment {
    HighTouch => "high-touch",
    LowTouch => "low-touch",
    TechTouch => "tech-touch",
});
enum_cell!(AlertStatus {
    Open => "open",
    Resolved => "resolved",
    Retracted => "retracted",
});
enum_cell!(Rule {
    UsageDrop => "usage_drop",
    DevicesDark => "devices_dark",
    ChampionLost => "champion_lost",
    OutcomeMissed => "outcome_missed",
    OnboardingStalled => "onboarding_stalled",
    FaultSpike => "fault_spike",
    HealthRed => "health_red",
    RenewalAtRisk => "renewal_at_risk",
    CoverageGap => "coverage_gap",
    ForecastRed => "forecast_red",
});
enum_cell!(Method {
    TheilSen => "theil_sen",
    LocalTrend => "local_trend",
    DampedTrend => "damped_trend",
    Projection => "projection",
});
enum_cell!(TouchpointKind {
    Kickoff => "kickoff",
    Training => "training",
    OnsiteVisit => "onsite_visit",
    HealthCheckCall => "health_check_call",
    BusinessReview => "business_review",
    Webinar => "webinar",
    Escalation => "escalation",
});
enum_cell!(ContractEventKind {
    Start => "start",
    Renewal => "renewal",
    Expansion => "expansion",
    Contraction => "contraction",
    Churn => "churn",
});

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::*;

    /// Every stored name is the engine's serde name (`MachineState` has
    /// none: its stored name is its `as_str`), and (where the engine has one)
    /// its `as_str`.
    fn check<T>(as_str: Option<fn(T) -> &'static str>, serde_names: bool)
    where
        T: Named + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        for &(value, name) in T::ALL {
            if serde_names {
                assert_eq!(serde_json::to_value(value).unwrap(), name);
                assert_eq!(serde_json::from_value::<T>(name.into()).unwrap(), value);
            }
            assert_eq!(value.name(), name);
            assert_eq!(T::from_name(name), Some(value));
            if let Some(as_str) = as_str {
                assert_eq!(as_str(value), name);
            }
        }
        assert_eq!(T::from_name("exploded"), None);
    }

    #[test]
    fn stored_names_are_the_engine_names_and_parse_back() {
        check::<MachineState>(Some(MachineState::as_str), false);
        check::<Direction>(None, true);
        check::<MilestoneStatus>(Some(MilestoneStatus::as_str), true);
        check::<Band>(Some(Band::as_str), true);
        check::<Stage>(Some(Stage::as_str), true);
        check::<Segment>(Some(Segment::as_str), true);
        check::<AlertStatus>(Some(AlertStatus::as_str), true);
        check::<Rule>(Some(Rule::as_str), true);
        check::<TouchpointKind>(Some(TouchpointKind::as_str), true);
        check::<ContractEventKind>(Some(ContractEventKind::as_str), true);
        assert_eq!(Rule::ALL.len(), <Rule as Named>::ALL.len());
    }

    #[test]
    fn json_values_turn_undefined_into_null() {
        let json = |v: Value<'_>| serde_json::to_string(&v).unwrap();
        assert_eq!(json(Value::Real(f64::NAN)), "null");
        assert_eq!(json(Value::Real(f64::INFINITY)), "null");
        assert_eq!(json(Value::Absent), "null");
        assert_eq!(json(Value::Real(2.5)), "2.5");
        assert_eq!(json(Value::Integer(7)), "7");
        assert_eq!(json(Value::Text("a\"b")), r#""a\"b""#);
    }
}
