//! Customer-defined outcomes: a named expression over window aggregates with
//! a target and a direction, e.g. `manual_interventions / cycles <= 0.20` over
//! one day. Expressions are parsed and evaluated by `evalexpr`.

use std::sync::Arc;

use evalexpr::{
    DefaultNumericTypes, EvalexprError, EvalexprResult, Node, Value, error::EvalexprResultValue,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::CustomerKpi;
use crate::model::{EventTime, Id};

/// Which side of the target is success.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Met when value <= target.
    #[default]
    AtMost,
    /// Met when value >= target.
    AtLeast,
}

impl Direction {
    /// `<=` or `>=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::AtMost => "<=",
            Self::AtLeast => ">=",
        }
    }

    /// Whether `value` meets `target`.
    pub fn met(self, value: f64, target: f64) -> bool {
        match self {
            Self::AtMost => value <= target,
            Self::AtLeast => value >= target,
        }
    }
}

/// The window aggregates an outcome expression may name: the numeric fields
/// of [`CustomerKpi`].
pub const AGGREGATES: [&str; 16] = [
    "devices_purchased",
    "reporting_devices",
    "active_devices",
    "utilisation",
    "operating_hours",
    "idle_hours",
    "fuel_litres",
    "cycles",
    "output_units",
    "manual_interventions",
    "distinct_operators",
    "advanced_features_used",
    "advanced_feature_share",
    "fault_count",
    "samples",
    "window_hours",
];

/// A window's aggregates as an expression's variables, each with its
/// name: read where the expression names one, with no map built per
/// window (outcomes are judged at every day's close and in each hourly
/// provisional probe).
struct Aggregates([(&'static str, Value); AGGREGATES.len()]);

impl evalexpr::Context for Aggregates {
    type NumericTypes = DefaultNumericTypes;

    fn get_value(&self, identifier: &str) -> Option<&Value> {
        let (_, value) = self.0.iter().find(|(name, _)| *name == identifier)?;
        Some(value)
    }

    fn call_function(&self, identifier: &str, _argument: &Value) -> EvalexprResultValue {
        Err(EvalexprError::FunctionIdentifierNotFound(
            identifier.to_string(),
        ))
    }

    /// An expression names no function ([`Expression::parse`] refuses one).
    fn are_builtin_functions_disabled(&self) -> bool {
        true
    }

    fn set_builtin_functions_disabled(&mut self, disabled: bool) -> EvalexprResult<()> {
        match disabled {
            true => Ok(()),
            false => Err(EvalexprError::BuiltinFunctionsCannotBeEnabled),
        }
    }
}

/// An outcome expression that cannot be used.
#[derive(Debug, Error, PartialEq)]
pub enum ExpressionError {
    /// Not an expression.
    #[error("does not parse: {0}")]
    Parse(String),
    /// Names something that is not a window aggregate.
    #[error("names `{0}`, which is not a window aggregate (known: {list})", list = AGGREGATES.join(", "))]
    UnknownAggregate(String),
}

/// A parsed expression, checked to name only window aggregates.
#[derive(Debug, Clone)]
pub struct Expression {
    source: Arc<str>,
    tree: Arc<Node>,
}

/// Two expressions are the same when their source is.
impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Expression {
    /// Parses and checks `source`.
    pub fn parse(source: &str) -> Result<Self, ExpressionError> {
        let tree = evalexpr::build_operator_tree(source)
            .map_err(|e| ExpressionError::Parse(e.to_string()))?;
        if let Some(unknown) = tree
            .iter_variable_identifiers()
            .find(|name| !AGGREGATES.contains(name))
        {
            return Err(ExpressionError::UnknownAggregate(unknown.to_string()));
        }
        if tree.iter_function_identifiers().next().is_some() {
            return Err(ExpressionError::Parse("functions are not supported".into()));
        }
        // evalexpr builds some incomplete trees (`cycles /`) and fails only
        // when evaluating: evaluate once with every aggregate set to 1.
        match tree.eval_with_context(&Aggregates(
            AGGREGATES.map(|name| (name, Value::Float(1.0))),
        )) {
            Ok(Value::Float(_) | Value::Int(_) | Value::Boolean(_)) => {}
            Ok(other) => {
                return Err(ExpressionError::Parse(format!(
                    "evaluates to {other:?}, not a number"
                )));
            }
            Err(e) => return Err(ExpressionError::Parse(e.to_string())),
        }
        Ok(Self {
            source: source.into(),
            tree: Arc::new(tree),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates over a closed window; `None` when undefined (e.g. a ratio
    /// over a window with no cycles).
    pub fn eval(&self, kpi: &CustomerKpi) -> Option<f64> {
        let hours = (kpi.window_end - kpi.window_start) as f64 / 3_600_000.0;
        // Floats throughout, so `a / b` never truncates.
        let aggregates = [
            ("devices_purchased", f64::from(kpi.devices_purchased)),
            ("reporting_devices", f64::from(kpi.reporting_devices)),
            ("active_devices", f64::from(kpi.active_devices)),
            ("utilisation", kpi.utilisation),
            ("operating_hours", kpi.totals.operating_hours),
            ("idle_hours", kpi.totals.idle_hours),
            ("fuel_litres", kpi.totals.fuel_litres),
            ("cycles", kpi.totals.cycles as f64),
            ("output_units", kpi.totals.output_units),
            (
                "manual_interventions",
                kpi.totals.manual_interventions as f64,
            ),
            ("distinct_operators", f64::from(kpi.distinct_operators)),
            (
                "advanced_features_used",
                f64::from(kpi.advanced_features_used),
            ),
            ("advanced_feature_share", kpi.advanced_feature_share),
            ("fault_count", kpi.totals.fault_count as f64),
            ("samples", kpi.totals.samples as f64),
            ("window_hours", hours),
        ]
        .map(|(name, value)| (name, Value::Float(value)));
        let value = match self.tree.eval_with_context(&Aggregates(aggregates)).ok()? {
            Value::Float(f) => f,
            Value::Int(i) => i as f64,
            Value::Boolean(b) => f64::from(u8::from(b)),
            _ => return None,
        };
        value.is_finite().then_some(value)
    }
}

/// One customer-defined outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeSpec {
    /// Name, unique per customer.
    pub name: Id,
    /// What is measured.
    pub expression: Expression,
    /// Success side.
    pub direction: Direction,
    /// Target value.
    pub target: f64,
    /// Window label it is evaluated over (e.g. `1d`).
    pub window: Id,
}

/// Outcome attainment over one window. Field names are store field names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// Customer id.
    pub customer: Id,
    /// Outcome name.
    pub outcome: Id,
    /// Window label.
    pub window: Id,
    /// Window start, ms.
    pub window_start: EventTime,
    /// Window end, ms.
    pub window_end: EventTime,
    /// Measured value; NaN when undefined (nothing to measure).
    pub value: f64,
    /// Target.
    pub target: f64,
    /// `at_most` or `at_least`.
    pub direction: Direction,
    /// Target met in this window.
    pub met: bool,
    /// Windows met in a row, this one included.
    pub consecutive_met: u32,
    /// Windows missed in a row, this one included.
    pub consecutive_missed: u32,
}

/// Running streaks of one outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutcomeTracker {
    /// Windows met in a row.
    pub consecutive_met: u32,
    /// Windows missed in a row.
    pub consecutive_missed: u32,
    /// Windows evaluated (with a defined value).
    pub evaluated: u32,
    /// Of those, met.
    pub met: u32,
}

impl OutcomeTracker {
    /// Evaluates `spec` over a closed window. An undefined value (no data)
    /// counts as neither met nor missed and leaves the streaks as they are.
    pub fn observe(&mut self, spec: &OutcomeSpec, kpi: &CustomerKpi) -> OutcomeRecord {
        let value = spec.expression.eval(kpi);
        let met = value.is_some_and(|v| spec.direction.met(v, spec.target));
        if value.is_some() {
            self.evaluated += 1;
            if met {
                self.met += 1;
                self.consecutive_met += 1;
                self.consecutive_missed = 0;
            } else {
                self.consecutive_missed += 1;
                self.consecutive_met = 0;
            }
        }
        OutcomeRecord {
            customer: kpi.customer.clone(),
            outcome: spec.name.clone(),
            window: kpi.window.clone(),
            window_start: kpi.window_start,
            window_end: kpi.window_end,
            value: value.unwrap_or(f64::NAN),
            target: spec.target,
            direction: spec.direction,
            met,
            consecutive_met: self.consecutive_met,
            consecutive_missed: self.consecutive_missed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpi::Totals;

    #[test]
    fn ratios_are_float_and_unknown_names_refused() {
        let e = Expression::parse("manual_interventions / cycles").unwrap();
        let kpi = CustomerKpi {
            totals: Totals {
                manual_interventions: 1,
                cycles: 5,
                ..Totals::default()
            },
            window_end: 3_600_000,
            ..CustomerKpi::default()
        };
        assert_eq!(e.eval(&kpi), Some(0.2));
        let empty = CustomerKpi::default();
        assert_eq!(e.eval(&empty), None);
        assert_eq!(
            Expression::parse("interventions / cycles").unwrap_err(),
            ExpressionError::UnknownAggregate("interventions".into())
        );
        assert!(matches!(
            Expression::parse("cycles / "),
            Err(ExpressionError::Parse(_))
        ));
    }
}
