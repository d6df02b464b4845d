//! The customers file (`customers.toml`): who the customers are, what they
//! bought, and what success means to each of them (outcomes with targets,
//! milestones, health weights, alert thresholds). Validated at start; every
//! error names the file, the line and the field.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use fleetpulse_engine::kpi::health::HealthWeights;
use fleetpulse_engine::kpi::milestone::{MilestoneKind, MilestoneSpec};
use fleetpulse_engine::kpi::outcome::{Direction, Expression, OutcomeSpec};
use fleetpulse_engine::kpi::risk::RiskThresholds;
use fleetpulse_engine::{CustomerSpec, FeatureCatalog};
use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use fleetpulse_engine::Segment;

use crate::config::{ConfigError, LineStarts, parse_toml};

/// The whole file: `[[customer]]` tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomersFile {
    /// One entry per customer.
    #[serde(default, rename = "customer")]
    pub customers: Vec<CustomerConfig>,
    /// Machines polled from AEMP sources and where they belong
    /// (`[[aemp_equipment]]`, docs/AEMP.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aemp_equipment: Vec<crate::source::aemp::AempEquipment>,
    /// A CSV file of contract events (`customer,kind,date,arr_change`),
    /// relative to this file; added to each customer's
    /// `[[customer.contract_event]]` (docs/CUSTOMER_SUCCESS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_events_csv: Option<Spanned<String>>,
    /// Coverage cadences per segment (`[[coverage]]`); a segment with none
    /// keeps the defaults (docs/CUSTOMER_SUCCESS.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coverage: Vec<crate::coverage::CadenceConfig>,
}

/// One customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerConfig {
    /// Id, as in the telemetry topic.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Coverage segment: `high-touch`, `low-touch` or `tech-touch`.
    pub segment: Segment,
    /// The CS manager who owns the account: a user name of the HTTP port
    /// (users.toml or the proxy's user), who then sees this customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csm: Option<String>,
    /// IANA time zone of the customer's operations (e.g. `Europe/Berlin`);
    /// daily windows follow its local day. UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Spanned<String>>,
    /// Maturity score 0-100 from outside telemetry (CRM, surveys), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maturity: Option<f64>,
    /// What the customer bought.
    pub contract: Contract,
    /// Customer-defined outcomes.
    #[serde(default, rename = "outcome", skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<OutcomeConfig>,
    /// Ordered milestones (due days must not decrease).
    #[serde(default, rename = "milestone", skip_serializing_if = "Vec::is_empty")]
    pub milestones: Vec<MilestoneConfig>,
    /// Overrides of the segment's health weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_weights: Option<WeightsOverride>,
    /// The revenue history: start, renewal, expansion, contraction, churn.
    /// None given: one `start` on `contract.start` with `contract.arr`.
    #[serde(
        default,
        rename = "contract_event",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub contract_events: Vec<crate::contracts::ContractEventConfig>,
    /// Overrides of the segment's alert thresholds (fields of
    /// `RiskThresholds`, see docs/CUSTOMER_SUCCESS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<toml::Table>,
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

/// A customer-defined outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeConfig {
    /// Name, unique per customer.
    pub name: String,
    /// Expression over window aggregates, e.g. `manual_interventions / cycles`.
    pub expression: Spanned<String>,
    /// `at_most` or `at_least`.
    pub direction: Direction,
    /// Target value.
    pub target: f64,
    /// Window label (one of the service's `engine.windows`).
    #[serde(default = "default_outcome_window")]
    pub window: Spanned<String>,
}

fn default_outcome_window() -> Spanned<String> {
    Spanned::new(0..0, "1d".to_string())
}

/// A milestone: exactly one of the condition fields is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilestoneConfig {
    /// Name, unique per customer.
    pub name: String,
    /// Due this many days after activation (first telemetry).
    pub due_days: Spanned<u32>,
    /// Reaching it delivers value; the first such milestone ends time to value.
    #[serde(default)]
    pub value: bool,
    /// Reached when this share (0-1) of purchased devices has reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices_online: Option<f64>,
    /// Reached when operating hours since activation reach this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_hours: Option<f64>,
    /// Reached when an advanced feature is used every week for some weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_weekly: Option<FeatureWeekly>,
    /// Reached when an outcome is met some windows in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_streak: Option<OutcomeStreak>,
}

/// `feature_weekly = { feature = "eco_mode", weeks = 4 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureWeekly {
    /// Advanced feature name.
    pub feature: String,
    /// Consecutive weeks.
    pub weeks: u32,
}

/// `outcome_streak = { outcome = "intervention_rate", windows = 4 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeStreak {
    /// Outcome name.
    pub outcome: String,
    /// Windows met in a row.
    pub windows: u32,
}

/// Health weights to override; missing ones keep the segment default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsOverride {
    /// Adoption depth.
    pub depth: Option<f64>,
    /// Adoption breadth.
    pub breadth: Option<f64>,
    /// Utilisation.
    pub utilisation: Option<f64>,
    /// Outcome attainment.
    pub outcome: Option<f64>,
    /// Machine reliability.
    pub reliability: Option<f64>,
    /// Usage trend.
    pub trend: Option<f64>,
    /// Maturity.
    pub maturity: Option<f64>,
}

/// What a customers file is checked against: the service's windows and
/// feature catalog.
#[derive(Debug, Clone)]
pub struct CheckContext {
    /// Window labels the engine computes.
    pub windows: Vec<String>,
    /// Advanced features.
    pub features: FeatureCatalog,
}

impl Default for CheckContext {
    fn default() -> Self {
        Self {
            windows: vec!["1h".into(), "1d".into()],
            features: FeatureCatalog::default(),
        }
    }
}

impl CustomersFile {
    /// Reads and checks a customers file against the default windows.
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
        file.specs(path, text, &CheckContext::default())?;
        Ok(file)
    }

    /// Checks every customer and turns it into the engine's spec. `text` is
    /// the file's content, for line numbers.
    pub fn specs(
        &self,
        path: &Path,
        text: &str,
        context: &CheckContext,
    ) -> Result<HashMap<String, CustomerSpec>, ConfigError> {
        let mut specs = HashMap::new();
        let mut seen = HashMap::new();
        let places = Places::of(text);
        let mut errors = Vec::new();
        for (i, c) in self.customers.iter().enumerate() {
            match customer_spec(i, c, path, text, context, &places, &mut seen) {
                Ok(spec) => {
                    specs.insert(c.id.clone(), spec);
                }
                Err(e) => errors.push(e),
            }
        }
        // Every customer's first mistake at once, not one per try.
        if errors.len() > 1 {
            return Err(ConfigError::Several(errors));
        }
        if let Some(e) = errors.pop() {
            return Err(e);
        }
        self.contract_book(path, text)?;
        self.coverage_model(path)?;
        let ids: Vec<&str> = self.customers.iter().map(|c| c.id.as_str()).collect();
        crate::source::aemp::mapping::check(&self.aemp_equipment, &ids, path)?;
        Ok(specs)
    }

    /// When each customer's contract starts: midnight of `contract.start` in
    /// the customer's time zone, ms since the epoch. Telemetry before it is
    /// refused (a unit whose clock was lost). Customers whose dates do not
    /// parse are left out; [`Self::specs`] refuses them at start.
    pub fn contract_starts(&self) -> HashMap<String, u64> {
        self.customers
            .iter()
            .filter_map(|c| {
                let timezone = match &c.timezone {
                    None => jiff::tz::TimeZone::UTC,
                    Some(name) => jiff::tz::TimeZone::get(name.get_ref()).ok()?,
                };
                let date: jiff::civil::Date = c.contract.start.parse().ok()?;
                let midnight = date.to_zoned(timezone).ok()?.timestamp();
                Some((c.id.clone(), u64::try_from(midnight.as_millisecond()).ok()?))
            })
            .collect()
    }

    /// What checks but is likely a mistake, one line each: a file with no
    /// customer (every message refused as `unknown_customer`), a time zone
    /// named by a legacy abbreviation (`EST` is a fixed UTC-05:00 all year,
    /// no daylight saving) or an `Etc/GMT` offset (whose sign is inverted).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.customers.is_empty() {
            out.push(
                "the customers file names no customer: the service refuses every message as \
                 unknown_customer (dead-lettered)"
                    .to_string(),
            );
        }
        for c in &self.customers {
            if let Some(zone) = c.timezone.as_ref().map(|z| z.get_ref().as_str())
                && let Some(why) = zone_trap(zone)
            {
                out.push(format!("customer `{}`: time zone `{zone}` {why}", c.id));
            }
        }
        out
    }

    /// Logs [`Self::warnings`]: at start and on reload.
    pub fn warn(&self) {
        for warning in self.warnings() {
            tracing::warn!("{warning}");
        }
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

fn milestone_kind(
    m: &MilestoneConfig,
    spec: &CustomerSpec,
    features: &FeatureCatalog,
) -> Result<MilestoneKind, (&'static str, String)> {
    let set = [
        m.devices_online.is_some(),
        m.operating_hours.is_some(),
        m.feature_weekly.is_some(),
        m.outcome_streak.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        return Err((
            "name",
            format!(
                "`{}` needs exactly one of devices_online, operating_hours, feature_weekly, outcome_streak ({set} given)",
                m.name
            ),
        ));
    }
    if let Some(share) = m.devices_online {
        if !(share > 0.0 && share <= 1.0) {
            return Err(("devices_online", "must be a share between 0 and 1".into()));
        }
        return Ok(MilestoneKind::DevicesOnline { share });
    }
    if let Some(hours) = m.operating_hours {
        if !(hours.is_finite() && hours > 0.0) {
            return Err((
                "operating_hours",
                "must be a positive number of hours".into(),
            ));
        }
        return Ok(MilestoneKind::OperatingHours { hours });
    }
    if let Some(f) = &m.feature_weekly {
        let bit = features.advanced_bit(&f.feature).ok_or_else(|| {
            (
                "feature_weekly.feature",
                format!(
                    "`{}` is not an advanced feature ({})",
                    f.feature,
                    features.advanced.join(", ")
                ),
            )
        })?;
        if f.weeks == 0 {
            return Err(("feature_weekly.weeks", "must be at least 1".into()));
        }
        return Ok(MilestoneKind::FeatureWeekly {
            feature_bit: bit,
            feature: f.feature.as_str().into(),
            weeks: f.weeks,
        });
    }
    let s = m.outcome_streak.as_ref().expect("exactly one kind is set");
    if !spec.outcomes.iter().any(|o| *o.name == *s.outcome) {
        return Err((
            "outcome_streak.outcome",
            format!("`{}` is not an outcome of this customer", s.outcome),
        ));
    }
    if s.windows == 0 {
        return Err(("outcome_streak.windows", "must be at least 1".into()));
    }
    Ok(MilestoneKind::OutcomeStreak {
        outcome: s.outcome.as_str().into(),
        windows: s.windows,
    })
}

/// Overlays a `[customer.thresholds]` table on segment defaults.
fn thresholds(base: RiskThresholds, overrides: &toml::Table) -> Result<RiskThresholds, String> {
    let mut table = match toml::Value::try_from(base).map_err(|e| e.to_string())? {
        toml::Value::Table(t) => t,
        _ => unreachable!("a struct serialises to a table"),
    };
    for (key, value) in overrides {
        if !table.contains_key(key) {
            let known: Vec<&str> = table.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown threshold `{key}` (known: {})",
                known.join(", ")
            ));
        }
        table.insert(key.clone(), value.clone());
    }
    let overlaid: RiskThresholds = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    overlaid.check()?;
    Ok(overlaid)
}

/// What two ids that read alike have in common: compatibility-composed
/// (NFKC folds full-width and composed/decomposed letters together) and
/// lowercased.
fn look_alike_key(id: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    id.nfkc().collect::<String>().to_lowercase()
}

/// Checks customer `i` of the file (`c`) and turns it into the engine's
/// spec. `seen`: the ids of the customers before it, lowercased, with
/// their index (a clash is refused). `places`: where its keys are, for
/// the errors' lines.
fn customer_spec<'a>(
    i: usize,
    c: &'a CustomerConfig,
    path: &Path,
    text: &str,
    context: &CheckContext,
    places: &Places,
    seen: &mut HashMap<String, (usize, &'a str)>,
) -> Result<CustomerSpec, ConfigError> {
    let at = |field: &str, span: Option<std::ops::Range<usize>>, message: String| {
        let span = span.or_else(|| places.find(i, field));
        at_span(
            path,
            text,
            places.lines(),
            &format!("customer[{i}].{field}"),
            span,
            message,
        )
    };
    fleetpulse_proto::topic::check_id(&c.id)
        .map_err(|reason| at("id", None, format!("`{}` {reason}", c.id)))?;
    if c.id.trim() != c.id {
        return Err(at(
            "id",
            None,
            format!(
                "`{}` starts or ends with a space: its devices' topics would not match it",
                c.id
            ),
        ));
    }
    // Ids are exact in topics; two that differ only in case, or in how
    // Unicode writes the same letters (`café` composed and decomposed,
    // full-width `ａcme`), are one customer written twice, or two that
    // people will mix up.
    if let Some((first, id)) = seen.insert(look_alike_key(&c.id), (i, c.id.as_str())) {
        let message = if id == c.id {
            format!("`{}` is also customer[{first}]", c.id)
        } else if id.to_lowercase() == c.id.to_lowercase() {
            format!(
                "`{}` differs from customer[{first}] `{id}` only in case",
                c.id
            )
        } else {
            format!(
                "`{}` reads like customer[{first}] `{id}` (they differ only in Unicode form \
                 or case: {:?} against {:?})",
                c.id, c.id, id
            )
        };
        return Err(at("id", None, message));
    }
    let timezone = match &c.timezone {
        None => jiff::tz::TimeZone::UTC,
        Some(name) => jiff::tz::TimeZone::get(name.get_ref()).map_err(|e| {
            at(
                "timezone",
                Some(name.span()),
                format!("`{}`: {e}", name.get_ref()),
            )
        })?,
    };
    let date = |field: &str, value: &str| date_ms(value).map_err(|e| at(field, None, e));
    let start = date("contract.start", &c.contract.start)?;
    // The renewal passes at the customer's midnight, not UTC's: a customer
    // at -12 was past its renewal half a day early (renewal_at_risk
    // resolved on the eve, `renewal in -0 days`).
    let renewal = local_date_ms(&c.contract.renewal, &timezone)
        .map_err(|e| at("contract.renewal", None, e))?;
    if renewal < start {
        return Err(at(
            "contract.renewal",
            None,
            "is before contract.start".into(),
        ));
    }
    if !(c.contract.arr.is_finite() && c.contract.arr >= 0.0) {
        return Err(at(
            "contract.arr",
            None,
            "must be a non-negative number".into(),
        ));
    }
    if c.contract.arr > crate::contracts::MAX_ARR {
        return Err(at(
            "contract.arr",
            None,
            crate::contracts::too_large(c.contract.arr),
        ));
    }
    // Utilisation is measured against the machines bought: with none,
    // a fleet at work would read 0% used, red, and at risk.
    if c.contract.devices_purchased == 0 {
        return Err(at(
            "contract.devices_purchased",
            None,
            "must be at least 1: utilisation is measured against the machines bought".into(),
        ));
    }
    if let Some(m) = c.maturity
        && !(0.0..=100.0).contains(&m)
    {
        return Err(at("maturity", None, "must be between 0 and 100".into()));
    }
    let mut spec = CustomerSpec::new(
        &c.id,
        c.segment,
        fleetpulse_engine::Contract {
            arr: c.contract.arr,
            start,
            renewal,
            devices_purchased: c.contract.devices_purchased,
            operator_seats: c.contract.operator_seats,
        },
    );
    if let Some(why) = crate::text::name_refusal(&c.name) {
        return Err(at(
            "name",
            None,
            format!("`{}` {why}", c.name.escape_debug()),
        ));
    }
    if let Some(why) = c.csm.as_deref().and_then(crate::text::name_refusal) {
        return Err(at("csm", None, why));
    }
    spec.name = c.name.as_str().into();
    spec.timezone = timezone;
    spec.maturity = c.maturity;
    spec.features_in_catalog = context.features.advanced.len() as u32;

    let used_twice = |field: &str, name: &str| at(field, None, format!("`{name}` is used twice"));
    let mut outcome_names = HashSet::new();
    for (j, o) in c.outcomes.iter().enumerate() {
        let field = |f: &str| format!("outcome[{j}].{f}");
        if !outcome_names.insert(o.name.as_str()) {
            return Err(used_twice(&field("name"), &o.name));
        }
        if let Some(why) = crate::text::name_refusal(&o.name) {
            return Err(at(&field("name"), None, why));
        }
        let expression = Expression::parse(o.expression.get_ref()).map_err(|e| {
            at(
                &field("expression"),
                Some(o.expression.span()),
                format!("`{}` {e}", o.expression.get_ref()),
            )
        })?;
        if !context.windows.contains(o.window.get_ref()) {
            return Err(at(
                &field("window"),
                Some(o.window.span()),
                format!(
                    "`{}` is not one of the engine windows ({})",
                    o.window.get_ref(),
                    context.windows.join(", ")
                ),
            ));
        }
        if !o.target.is_finite() {
            return Err(at(&field("target"), None, "must be a number".into()));
        }
        spec.outcomes.push(OutcomeSpec {
            name: o.name.as_str().into(),
            expression,
            direction: o.direction,
            target: o.target,
            window: o.window.get_ref().as_str().into(),
        });
    }

    let mut milestone_names = HashSet::new();
    let mut previous_due = 0;
    for (j, m) in c.milestones.iter().enumerate() {
        let field = |f: &str| format!("milestone[{j}].{f}");
        if !milestone_names.insert(m.name.as_str()) {
            return Err(used_twice(&field("name"), &m.name));
        }
        if let Some(why) = crate::text::name_refusal(&m.name) {
            return Err(at(&field("name"), None, why));
        }
        let due = *m.due_days.get_ref();
        if due < previous_due {
            return Err(at(
                &field("due_days"),
                Some(m.due_days.span()),
                format!(
                    "milestone order broken: `{}` is due after {due} days, before the milestone listed above it ({previous_due} days); list milestones in journey order",
                    m.name
                ),
            ));
        }
        previous_due = due;
        let kind = milestone_kind(m, &spec, &context.features)
            .map_err(|(f, message)| at(&field(f), None, message))?;
        spec.milestones.push(MilestoneSpec {
            name: m.name.as_str().into(),
            kind,
            due_days: due,
            value: m.value,
        });
    }

    if let Some(w) = &c.health_weights {
        let d = &mut spec.weights;
        for (name, value, target) in [
            ("depth", w.depth, &mut d.depth),
            ("breadth", w.breadth, &mut d.breadth),
            ("utilisation", w.utilisation, &mut d.utilisation),
            ("outcome", w.outcome, &mut d.outcome),
            ("reliability", w.reliability, &mut d.reliability),
            ("trend", w.trend, &mut d.trend),
            ("maturity", w.maturity, &mut d.maturity),
        ] {
            if let Some(v) = value {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(at(
                        &format!("health_weights.{name}"),
                        None,
                        format!("weight {v} must be a non-negative number"),
                    ));
                }
                *target = v;
            }
        }
        spec.weights = *d;
        let HealthWeights { .. } = spec.weights;
        // Outcome and maturity drop out on a day without them: with
        // the others all 0 the score would then be 0, red.
        let w = &spec.weights;
        if w.depth + w.breadth + w.utilisation + w.reliability + w.trend <= 0.0 {
            return Err(at(
                "health_weights",
                None,
                "depth, breadth, utilisation, reliability and trend must not all be 0 \
                 (outcome and maturity drop out on days without them)"
                    .into(),
            ));
        }
    }
    if let Some(overrides) = &c.thresholds {
        spec.thresholds = thresholds(spec.thresholds, overrides)
            .map_err(|message| at("thresholds", None, message))?;
    }
    Ok(spec)
}

/// Where each customer's fields are in the file, for the errors of checks
/// made after parsing: a second, lenient read of the same text (any other
/// key ignored, nothing converted), so such an error names its line too.
/// Read at the first error only: a file without one is parsed once.
struct Places<'t> {
    text: &'t str,
    read: std::cell::OnceCell<(Spans, LineStarts)>,
}

#[derive(Debug, Default, Deserialize)]
struct Spans {
    #[serde(default)]
    customer: Vec<CustomerPlaces>,
}

/// The keys of one customer, and of its tables, with their places.
#[derive(Debug, Default, Deserialize)]
struct CustomerPlaces {
    id: Option<Spanned<toml::Value>>,
    maturity: Option<Spanned<toml::Value>>,
    #[serde(default)]
    contract: Table,
    #[serde(default)]
    health_weights: Table,
    #[serde(default)]
    thresholds: Table,
    #[serde(default)]
    outcome: Vec<Table>,
    #[serde(default)]
    milestone: Vec<Table>,
}

type Table = HashMap<String, Spanned<toml::Value>>;

impl<'t> Places<'t> {
    fn of(text: &'t str) -> Self {
        Self {
            text,
            read: std::cell::OnceCell::new(),
        }
    }

    fn read(&self) -> &(Spans, LineStarts) {
        self.read.get_or_init(|| {
            let spans = toml::from_str(self.text).unwrap_or_default();
            (spans, LineStarts::of(self.text))
        })
    }

    fn lines(&self) -> &LineStarts {
        &self.read().1
    }

    /// The place of `field` (`contract.arr`, `outcome[0].target`,
    /// `thresholds`) of customer `i`; a table's is its first key's.
    fn find(&self, i: usize, field: &str) -> Option<std::ops::Range<usize>> {
        let c = self.read().0.customer.get(i)?;
        let first = |t: &Table| t.values().map(Spanned::span).min_by_key(|s| s.start);
        let (table, key) = match field.split_once('.') {
            Some((table, key)) => (table, Some(key)),
            None => (field, None),
        };
        let table = match table {
            "contract" => &c.contract,
            "health_weights" => &c.health_weights,
            "thresholds" => &c.thresholds,
            _ => match listed(&c.outcome, table, "outcome[")
                .or_else(|| listed(&c.milestone, table, "milestone["))
            {
                Some(table) => table,
                None => {
                    let key = match field {
                        "id" => &c.id,
                        "maturity" => &c.maturity,
                        _ => return None,
                    };
                    return key.as_ref().map(Spanned::span);
                }
            },
        };
        match key {
            Some(key) => table.get(key).map(Spanned::span).or_else(|| first(table)),
            None => first(table),
        }
    }
}

/// Entry `name` (`outcome[2]`) of `list`, named with `prefix` (`outcome[`).
fn listed<'a>(list: &'a [Table], name: &str, prefix: &str) -> Option<&'a Table> {
    let index = name.strip_prefix(prefix)?.strip_suffix(']')?;
    list.get(index.parse::<usize>().ok()?)
}

/// An error of customer `i`'s `contract.arr` in the customers file at
/// `path` (`text`), at its line.
pub(crate) fn contract_arr_error(
    path: &Path,
    text: &str,
    i: usize,
    message: String,
) -> ConfigError {
    let places = Places::of(text);
    at_span(
        path,
        text,
        places.lines(),
        &format!("customer[{i}].contract.arr"),
        places.find(i, "contract.arr"),
        message,
    )
}

fn at_span(
    path: &Path,
    text: &str,
    lines: &LineStarts,
    field: &str,
    span: Option<std::ops::Range<usize>>,
    message: String,
) -> ConfigError {
    match span.filter(|s| s.end > 0) {
        Some(span) => {
            let (line, column) = lines.line_column(text, span.start);
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: format!("field `{field}`: {message}"),
            }
        }
        None => ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            message,
        },
    }
}

/// Why the time zone `name` is likely not what was meant, if it is one of
/// the tz database's legacy names: an abbreviation kept for old systems
/// (`EST`, `MST`, `HST` are fixed offsets all year; `EST5EDT` and the like
/// follow old US rules) or an `Etc/GMT` offset, whose sign is inverted
/// (`Etc/GMT+5` is UTC-05:00). `UTC`, `GMT` and place names are not.
fn zone_trap(name: &str) -> Option<String> {
    if let Some(offset) = name.strip_prefix("Etc/GMT")
        && let Some(sign) = offset.chars().next().filter(|c| *c == '+' || *c == '-')
    {
        let flipped = if sign == '+' { '-' } else { '+' };
        return Some(format!(
            "is UTC{flipped}{} (the sign of Etc/GMT zones is inverted): name the place \
             instead (e.g. America/Bogota)",
            &offset[1..]
        ));
    }
    if name.contains('/') || matches!(name, "UTC" | "GMT" | "Zulu") {
        return None;
    }
    let fixed = jiff::tz::TimeZone::get(name).is_ok_and(|z| {
        let jan = jiff::civil::date(2026, 1, 15).to_zoned(z.clone());
        let jul = jiff::civil::date(2026, 7, 15).to_zoned(z);
        matches!((jan, jul), (Ok(a), Ok(b)) if a.offset() == b.offset())
    });
    Some(format!(
        "is a legacy abbreviation{}: name the place instead (e.g. America/New_York, \
         Europe/Berlin), whose daylight saving follows the local rules",
        if fixed {
            " with one offset all year (no daylight saving)"
        } else {
            ""
        }
    ))
}

/// 00:00 UTC of a `YYYY-MM-DD` date, ms since the epoch: how every date
/// entered as a date is kept (contracts, touchpoints, contract events). The
/// error says what is wrong with `text`: not a date, or a date before 1970
/// or after 9999-12-30 (outside what a time in the stores can be).
pub fn date_ms(text: &str) -> Result<u64, String> {
    local_date_ms(text, &jiff::tz::TimeZone::UTC)
}

/// 00:00 of a `YYYY-MM-DD` date in `zone`, ms since the epoch (the
/// earlier of two midnights, or the first instant after a skipped one).
pub fn local_date_ms(text: &str, zone: &jiff::tz::TimeZone) -> Result<u64, String> {
    // A date and nothing else: jiff also reads `2026-02-04T23:30-05:00` as
    // a date, and the time and offset dropped moved it to another day (and
    // an event across a quarter's end).
    let digit_or_dash = |(i, b): (usize, &u8)| match i {
        4 | 7 => *b == b'-',
        _ => b.is_ascii_digit(),
    };
    let shaped = text.len() == 10 && text.as_bytes().iter().enumerate().all(digit_or_dash);
    let date: jiff::civil::Date = (text.parse().ok())
        .filter(|_| shaped)
        .ok_or_else(|| format!("`{text}` is not a YYYY-MM-DD date"))?;
    (date.to_zoned(zone.clone()).ok())
        .and_then(|t| u64::try_from(t.timestamp().as_millisecond()).ok())
        .ok_or_else(|| format!("`{text}` is outside 1970-01-01 to 9999-12-30"))
}

/// Shared ids for the engine's `Id` type.
pub fn id(s: &str) -> Arc<str> {
    s.into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A customers file that checks: acme in Europe/Berlin from 2026-01-01.
    pub(crate) const GOOD: &str = r#"
[[customer]]
id = "acme"
name = "Acme Quarry"
segment = "high-touch"
timezone = "Europe/Berlin"
[customer.contract]
arr = 120000
start = "2026-01-01"
renewal = "2027-01-01"
devices_purchased = 50
operator_seats = 40

[[customer.outcome]]
name = "intervention_rate"
expression = "manual_interventions / cycles"
direction = "at_most"
target = 0.20
window = "1d"

[[customer.milestone]]
name = "all_devices_online"
devices_online = 1.0
due_days = 14

[[customer.milestone]]
name = "first_100_hours"
operating_hours = 100
due_days = 30
value = true

[[customer.milestone]]
name = "intervention_rate_4_days"
outcome_streak = { outcome = "intervention_rate", windows = 4 }
due_days = 45

[customer.thresholds]
usage_drop = 0.3
"#;

    /// A date a store cannot hold is said to be out of range, not "not a
    /// date" (`9999-12-31` is one); so is one before 1970, which read as
    /// not a date either. Every date entered as a date goes through here:
    /// contracts, contract events, touchpoints (API, CLI, CSV).
    #[test]
    fn a_date_out_of_range_is_named_as_such() {
        assert_eq!(date_ms("2026-03-01"), Ok(1_772_323_200_000));
        let zone = |name| jiff::tz::TimeZone::get(name).unwrap();
        let twelve_hours = 12 * 3_600_000;
        assert_eq!(
            local_date_ms("2026-03-01", &zone("Etc/GMT+12")),
            Ok(1_772_323_200_000 + twelve_hours)
        );
        assert_eq!(
            local_date_ms("2026-03-01", &zone("Pacific/Kiritimati")),
            Ok(1_772_323_200_000 - 14 * 3_600_000)
        );
        assert_eq!(
            local_date_ms("2026-03-01", &zone("UTC")),
            date_ms("2026-03-01")
        );
        assert_eq!(date_ms("1970-01-01"), Ok(0));
        assert!(date_ms("9999-12-30").is_ok());
        let with_more = [
            "2026-02-04T23:30:00-05:00",
            "2026-02-05 12:00",
            "20260204",
            "+002026-02-04",
            " 2026-02-04",
        ];
        for bad in ["2026-02-30", "01/03/2026", "2026-3-1x", ""]
            .into_iter()
            .chain(with_more)
        {
            assert_eq!(
                date_ms(bad),
                Err(format!("`{bad}` is not a YYYY-MM-DD date"))
            );
        }
        for far in ["1969-12-31", "9999-12-31", "0001-01-01"] {
            assert_eq!(
                date_ms(far),
                Err(format!("`{far}` is outside 1970-01-01 to 9999-12-30"))
            );
        }
        let input = crate::touchpoints::TouchpointInput {
            kind: "training".into(),
            date: "9999-12-31".into(),
            ..Default::default()
        };
        let err = input.check("acme", Some("alice"), "test").unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `date`: `9999-12-31` is outside 1970-01-01 to 9999-12-30"
        );
    }

    /// Time zones that check but are likely not what was meant are said,
    /// naming the customer: `EST` (a fixed UTC-05:00 all year: New York's
    /// summer days would start an hour late), `EST5EDT`, `CET`,
    /// `Etc/GMT+5` (UTC-05:00). Place names, `UTC` and `GMT` are not.
    #[test]
    fn a_legacy_time_zone_name_is_warned_of() {
        let warnings = |zone: &str| {
            let text = GOOD.replace("Europe/Berlin", zone);
            let file = CustomersFile::parse(Path::new("c.toml"), &text).unwrap();
            assert!(specs(&text).is_ok(), "{zone} checks");
            file.warnings()
        };
        let est = warnings("EST");
        assert_eq!(est.len(), 1, "{est:?}");
        assert!(
            est[0].starts_with("customer `acme`: time zone `EST` is a legacy abbreviation with one offset all year (no daylight saving)"),
            "{est:?}"
        );
        for zone in ["EST5EDT", "CET"] {
            let w = warnings(zone);
            assert!(
                w.len() == 1 && w[0].contains("is a legacy abbreviation: name the place"),
                "{w:?}"
            );
        }
        assert_eq!(
            warnings("Etc/GMT+5"),
            [
                "customer `acme`: time zone `Etc/GMT+5` is UTC-5 (the sign of Etc/GMT zones is \
              inverted): name the place instead (e.g. America/Bogota)"
            ]
        );
        for zone in [
            "Europe/Berlin",
            "America/New_York",
            "Asia/Kolkata",
            "UTC",
            "GMT",
        ] {
            assert!(warnings(zone).is_empty(), "{zone}");
        }
        let empty = CustomersFile::parse(Path::new("c.toml"), "").unwrap();
        assert_eq!(empty.warnings().len(), 1);
    }

    #[test]
    fn a_contract_starts_at_midnight_of_the_customers_day() {
        let mut file: CustomersFile = parse_toml(Path::new("c.toml"), GOOD).unwrap();
        // 2026-01-01 00:00 in Berlin (UTC+1) is 2025-12-31T23:00Z.
        let berlin = 1_767_225_600_000 - 3_600_000;
        assert_eq!(file.contract_starts()["acme"], berlin);
        file.customers[0].timezone = None;
        assert_eq!(file.contract_starts()["acme"], 1_767_225_600_000);
    }

    fn specs(text: &str) -> Result<HashMap<String, CustomerSpec>, String> {
        let path = Path::new("c.toml");
        let file: CustomersFile = parse_toml(path, text).map_err(|e| e.to_string())?;
        file.specs(path, text, &CheckContext::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_a_full_customer() {
        let specs = specs(GOOD).unwrap();
        let acme = &specs["acme"];
        assert_eq!(acme.contract.devices_purchased, 50);
        assert_eq!(acme.outcomes.len(), 1);
        assert_eq!(acme.milestones.len(), 3);
        assert_eq!(acme.thresholds.usage_drop, 0.3);
        assert_eq!(acme.segment, Segment::HighTouch);
        let file = CustomersFile::parse(Path::new("c.toml"), GOOD).unwrap();
        let again = CustomersFile::parse(Path::new("c.toml"), &file.to_toml()).unwrap();
        assert_eq!(again.customers.len(), 1);
    }

    /// Each mistake, made by replacing `from` with `to` in `GOOD`, is refused
    /// with an error that starts with the file and line `at` and names every
    /// one of `named`.
    #[test]
    fn mistakes_name_file_line_and_field() {
        let cases: [(&str, &str, &str, &[&str]); 6] = [
            // Only outcome weighs: a day without outcomes would score 0.
            (
                "[customer.contract]",
                "[customer.health_weights]\ndepth = 0\nbreadth = 0\nutilisation = 0\n\
                 reliability = 0\ntrend = 0\noutcome = 1\n[customer.contract]",
                "c.toml:8:",
                &["health_weights", "must not all be 0"],
            ),
            // No machine bought: every customer would read 0% used, red.
            (
                "devices_purchased = 50",
                "devices_purchased = 0",
                "c.toml:11:21:",
                &["customer[0].contract.devices_purchased", "at least 1"],
            ),
            // An unknown field.
            (
                "operator_seats",
                "operator_sets",
                "c.toml:12:",
                &["operator_sets"],
            ),
            // A bad expression.
            (
                "manual_interventions / cycles",
                "manual_interventions / ",
                "c.toml:16:",
                &["customer[0].outcome[0].expression"],
            ),
            // An unknown aggregate.
            (
                "manual_interventions / cycles",
                "interventions / cycles",
                "c.toml:16:",
                &["`interventions`"],
            ),
            // Milestones out of order.
            (
                "due_days = 30",
                "due_days = 10",
                "c.toml:29:",
                &["customer[0].milestone[1].due_days", "order"],
            ),
        ];
        for (from, to, at, named) in cases {
            let err = specs(&GOOD.replace(from, to)).unwrap_err();
            assert!(err.starts_with(at), "{err}");
            for name in named {
                assert!(err.contains(name), "{err}");
            }
        }
    }

    /// Ids that clash: written twice, only in case apart, or with a space
    /// a device's topic would not carry.
    #[test]
    fn clashing_ids_are_named() {
        let second = GOOD.replacen("[[customer]]", "", 1);
        let twice = |id: &str| format!("{GOOD}\n[[customer]]{}", second.replace("\"acme\"", id));
        let err = specs(&twice("\"acme\"")).unwrap_err();
        assert!(
            err.contains("`customer[1].id`: `acme` is also customer[0]"),
            "{err}"
        );
        let err = specs(&twice("\"ACME\"")).unwrap_err();
        assert!(
            err.contains("`customer[1].id`: `ACME` differs from customer[0] `acme` only in case"),
            "{err}"
        );
        assert!(specs(&twice("\"acme-2\"")).is_ok());
        // Full-width letters and a decomposed accent read as the id before.
        let err = specs(&twice("\"\u{ff41}cme\"")).unwrap_err();
        assert!(
            err.contains("`customer[1].id`: `\u{ff41}cme` reads like customer[0] `acme`"),
            "{err}"
        );
        let cafe = GOOD.replace("\"acme\"", "\"caf\u{e9}\"");
        let decomposed = format!(
            "{cafe}\n[[customer]]{}",
            second.replace("\"acme\"", "\"cafe\u{301}\"")
        );
        let err = specs(&decomposed).unwrap_err();
        assert!(err.contains("reads like customer[0] `caf\u{e9}`"), "{err}");
        // Ids in other scripts are ids.
        assert!(specs(&twice("\"\u{30a2}\u{30af}\u{30e1}\"")).is_ok());
        let err = specs(&GOOD.replace("\"acme\"", "\"acme \"")).unwrap_err();
        assert!(
            err.contains("`customer[0].id`: `acme ` starts or ends with a space"),
            "{err}"
        );
    }

    /// A name that would drive a terminal, read backwards or hide the
    /// dashboard's columns is refused, naming the field; names in other
    /// scripts are names.
    #[test]
    fn names_are_one_line_of_text() {
        let named = |name: &str| GOOD.replacen("name = \"Acme", &format!("name = \"{name}"), 1);
        for (name, said) in [
            ("\\u001b[31m", "holds a control character"),
            ("\\u202Eevil", "holds a direction override"),
            (&"x".repeat(300), "characters, at most 200"),
        ] {
            let err = specs(&named(name)).unwrap_err();
            assert!(
                err.contains("`customer[0].name`") && err.contains(said),
                "{err}"
            );
        }
        assert!(specs(&named("Ölwerk 出租车")).is_ok());
    }

    /// Each customer's first mistake is said at once, each on its line:
    /// an operator fixing a file of many customers does not learn them one
    /// try at a time.
    #[test]
    fn every_customer_s_mistake_is_said_at_once() {
        let second = GOOD
            .replacen("[[customer]]", "", 1)
            .replace("\"acme\"", "\"bolt\"");
        let text = format!("{GOOD}\n[[customer]]{second}")
            .replacen("renewal = \"2027-01-01\"", "renewal = \"2025-01-01\"", 1)
            .replacen("devices_purchased = 50", "devices_purchased = 0", 2)
            .replacen("devices_purchased = 0", "devices_purchased = 50", 1);
        let err = specs(&text).unwrap_err();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(
            lines[0].starts_with("c.toml:10:11: field `customer[0].contract.renewal`"),
            "{err}"
        );
        assert!(
            lines[1].contains("field `customer[1].contract.devices_purchased`"),
            "{err}"
        );
        assert!(lines[1].starts_with("c.toml:"), "{err}");
    }

    /// The same mistake in each of 3,000 customers: the first 50 are said,
    /// each at its own line (found from a count of the text's lines, not
    /// from the checks' spans), then how many more.
    #[test]
    fn a_mistake_in_every_one_of_thousands_of_customers_is_said_briefly_and_at_its_line() {
        let one = GOOD.replacen(
            "segment = \"high-touch\"",
            "segment = \"high-touch\"\nmaturity = 200",
            1,
        );
        let text: String = (0..3000)
            .map(|i| one.replace("\"acme\"", &format!("\"c{i:04}\"")))
            .collect();
        let err = specs(&text).unwrap_err();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 51, "{err}");
        assert_eq!(lines[50], "... and 2950 more (3000 mistakes in all)");
        let mistakes = (text.lines().enumerate())
            .filter(|(_, l)| *l == "maturity = 200")
            .map(|(n, _)| n + 1);
        for (i, (said, line)) in lines[..50].iter().zip(mistakes).enumerate() {
            assert_eq!(
                *said,
                format!(
                    "c.toml:{line}:12: field `customer[{i}].maturity`: must be between 0 and 100"
                )
            );
        }
    }

    #[test]
    fn other_mistakes_are_named() {
        let err = specs(&GOOD.replace("Europe/Berlin", "Europe/Atlantis")).unwrap_err();
        assert!(err.contains("customer[0].timezone"), "{err}");
        let err = specs(&GOOD.replace("2027-01-01", "next year")).unwrap_err();
        assert!(err.starts_with("c.toml:10:11:"), "{err}");
        assert!(err.contains("customer[0].contract.renewal"), "{err}");
        // Checks made after parsing name the line too: a weight, a date.
        let weights = "[customer.health_weights]\ntrend = -1\n[customer.contract]";
        let err = specs(&GOOD.replace("[customer.contract]", weights)).unwrap_err();
        assert!(err.starts_with("c.toml:8:9:"), "{err}");
        assert!(err.contains("customer[0].health_weights.trend"), "{err}");
        let err = specs(&GOOD.replace("2026-01-01", "2028-01-01")).unwrap_err();
        assert!(err.starts_with("c.toml:10:11:"), "{err}");
        assert!(err.contains("is before contract.start"), "{err}");
        let err = specs(&GOOD.replace("usage_drop = 0.3", "usage_fall = 0.3")).unwrap_err();
        assert!(err.contains("usage_fall"), "{err}");
        // A threshold out of its range: a forecast 100,000 days ahead held
        // a worker, and every customer's days, for minutes at each close.
        for (set, said) in [
            (
                "forecast_days = 100000",
                "forecast_days: 100000 is not in 1-90",
            ),
            (
                "forecast_confidence = nan",
                "forecast_confidence: NaN is not a share",
            ),
            (
                "forecast_fit_days = 13",
                "forecast_fit_days: 13 is not in 14-28",
            ),
            (
                "forecast_resolve = -1.0",
                "forecast_resolve: -1 is not a share",
            ),
            ("usage_drop = 1.5", "usage_drop: 1.5 is not a share"),
        ] {
            let err = specs(&GOOD.replace("usage_drop = 0.3", set)).unwrap_err();
            assert!(
                err.contains("customer[0].thresholds") && err.contains(said),
                "{set}: {err}"
            );
        }
        let err = specs(&GOOD.replace("outcome = \"intervention_rate\"", "outcome = \"uptime\""))
            .unwrap_err();
        assert!(
            err.contains("customer[0].milestone[2].outcome_streak.outcome"),
            "{err}"
        );
        let err = specs(&GOOD.replace("window = \"1d\"", "window = \"1w\"")).unwrap_err();
        assert!(err.contains("customer[0].outcome[0].window"), "{err}");
    }
}
