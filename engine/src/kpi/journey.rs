//! The customer journey, closed day by day: outcomes against targets,
//! milestones, time to value, lifecycle stage, health score and at-risk
//! alerts. Plain Rust; the `customer_success` operator feeds it closed daily
//! windows in event-time order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::day_shape::DayShape;
use super::forecast::{self, Forecast, Method};
use super::health::{self, Band, HealthComponents, HealthPoints, HealthRecord, Stage};
use super::milestone::{MilestoneKind, MilestoneRecord, MilestoneStatus};
use super::outcome::{OutcomeSpec, OutcomeTracker};
use super::risk::{AlertRecord, AlertStatus, Episode, Reading, Rule};
use super::rules::{self, BaselineMemo, Today};
use super::{CustomerKpi, DeviceKpi, Output, projection, time_to_value, usage_growth};
use crate::config::DAY_MS;
use crate::customer::CustomerSpec;
use crate::model::{EventTime, Id};

/// Days of history kept per customer (baselines need 35).
const HISTORY_DAYS: usize = 42;

/// One closed day, as the rules need it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Day {
    pub operating_hours: f64,
    pub fault_count: u64,
    pub active_devices: u32,
    pub utilisation: f64,
    pub advanced_features: u32,
    /// Shared, not copied, by the probe journeys the open day is judged
    /// with every hour (serialised as the list it was).
    pub operator_hours: std::sync::Arc<[(Id, f64)]>,
    pub outcomes_met: u32,
    pub outcomes_evaluated: u32,
}

/// What the journey remembers of a device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Seen {
    last_seen: EventTime,
}

/// One customer's journey state.
#[derive(Debug, Clone)]
pub struct Journey {
    spec: CustomerSpec,
    activation: Option<EventTime>,
    last_day_end: Option<EventTime>,
    days: VecDeque<Day>,
    devices: HashMap<Id, Seen>,
    cumulative_hours: f64,
    outcomes: Vec<OutcomeTracker>,
    reached: Vec<Option<EventTime>>,
    /// The episodes of each rule.
    episodes: BTreeMap<Rule, Episode>,
    /// Daily health scores, newest last: the last 8 give the score trend,
    /// all of them (up to [`forecast::MAX_FIT_DAYS`]) the forecast.
    scores: VecDeque<f64>,
    /// The champion whose absence opened the current champion_lost episode:
    /// followed until they reappear, whoever leads the baseline meanwhile.
    lost_champion: Option<Id>,
    /// The health records of the last days closed, newest last: a restart
    /// that replays a day already closed hands its health on again (the
    /// portfolio of that day may still be open) instead of judging it twice.
    recent_health: VecDeque<HealthRecord>,
    /// When in its day the fleet usually works: the pace the open day's
    /// provisional score is read at. Kept with the journey, so a restart
    /// or a restatement reads the open day as a run without them would.
    shape: DayShape,
    /// The champion baseline last drawn, shared with the probe journeys
    /// the open day is judged with: drawn once a day instead of twice an
    /// hour.
    champion_baseline: Arc<BaselineMemo>,
    /// Start of the first day closed: from then on the engine was
    /// listening, so a customer silent since is silent in fact.
    tracked_since: Option<EventTime>,
}

/// How the evidence of an onboarding_stalled episode of a fleet that never
/// reported begins.
const SILENCE: &str = "no telemetry at all";

/// Health records a journey keeps for replayed days.
const RECENT_HEALTH: usize = 3;

/// Everything a journey has learnt, without its customer's spec: what a
/// restart restores instead of rebuilding it from the few days the WAL still
/// holds. Outcomes and milestones are keyed by name, so a customers file
/// that gained or lost one still restores the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JourneyState {
    activation: Option<EventTime>,
    /// End of the last closed day: the state covers every day up to it.
    pub last_day_end: Option<EventTime>,
    days: VecDeque<Day>,
    devices: HashMap<Id, Seen>,
    cumulative_hours: f64,
    outcomes: Vec<(Id, OutcomeTracker)>,
    reached: Vec<(Id, Option<EventTime>)>,
    episodes: BTreeMap<Rule, Episode>,
    scores: VecDeque<f64>,
    lost_champion: Option<Id>,
    recent_health: VecDeque<HealthRecord>,
    /// Last, and empty in a state written before it was kept (the
    /// archive's reader appends an empty one to such a state's bytes).
    #[serde(default)]
    shape: DayShape,
    /// Last too, and `None` in a state written before it was kept: such
    /// a journey is not judged as never onboarded.
    #[serde(default)]
    tracked_since: Option<EventTime>,
}

/// What becomes of `open`, an episode of a customer taken out of the
/// customers file, at `at`: resolved then (not before it opened), its
/// evidence saying why; there is no reading (metric and threshold 0: a NaN
/// has no JSON form, and receivers parse these). A provisional one, raised
/// from a day that will not close now, is retracted, as a close that did
/// not confirm it would: the customer taken back, the day judged again
/// may raise it again under the same id, which a store takes over a
/// retraction and never over a resolution.
pub fn ended_by_removal(open: &AlertRecord, at: EventTime) -> AlertRecord {
    const WHY: &str = "customer removed from the customers file: its journey is no longer tracked";
    if open.provisional {
        return AlertRecord {
            status: AlertStatus::Retracted,
            resolved_at: None,
            evidence: format!("{WHY}; not confirmed: {}", open.evidence),
            ..open.clone()
        };
    }
    AlertRecord {
        status: AlertStatus::Resolved,
        resolved_at: Some(at.max(open.opened_at)),
        evidence: WHY.to_string(),
        metric: 0.0,
        threshold: 0.0,
        ..open.clone()
    }
}

impl JourneyState {
    /// Whether the customer's fleet had sent telemetry by this state's
    /// last day.
    pub fn activated(&self) -> bool {
        self.activation.is_some()
    }

    /// When `rule`'s episode open at the end of this state's last day
    /// opened; `None` when none was open.
    pub fn open_since(&self, rule: Rule) -> Option<EventTime> {
        self.episodes.get(&rule).and_then(|e| e.open_since)
    }

    /// Ends the episodes open at the end of this state's last day, for a
    /// customer taken out of the customers file (`name`: its display name
    /// as last known): no day of it closes any more, so nothing else would
    /// resolve them, and a receiver would keep them open for good. Each
    /// resolves at the end of that last day ([`ended_by_removal`]), so
    /// ending them again (a start that did not store this state) sends the
    /// same transitions. Taken back into the file, the customer goes on
    /// from here: a rule still breached opens a new episode.
    pub fn end_tracking(&mut self, customer: &Id, name: &str) -> Vec<AlertRecord> {
        let Some(end) = self.last_day_end else {
            return Vec::new();
        };
        let last = self.recent_health.back();
        let mut ended = Vec::new();
        for (rule, episode) in &mut self.episodes {
            let Some(opened_at) = episode.open_since.take() else {
                continue;
            };
            let open = AlertRecord {
                customer: customer.clone(),
                customer_name: Id::from(name),
                rule: *rule,
                episode: episode.count,
                status: AlertStatus::Open,
                provisional: false,
                opened_at,
                resolved_at: None,
                evidence: String::new(),
                metric: 0.0,
                threshold: 0.0,
                stage: last.map(|h| h.stage).unwrap_or_default(),
                segment: last.map(|h| h.segment).unwrap_or_default(),
                arr_at_risk: last.map_or(0.0, |h| h.arr),
                next_action: rule.next_action().to_string(),
            };
            ended.push(ended_by_removal(&open, end));
        }
        if !ended.is_empty() {
            self.lost_champion = None;
        }
        ended
    }

    /// Where a fold of the customer's days from `first` (a window start)
    /// begins when no state before it is at hand: the journey as it was
    /// when the engine began closing its days, if that was by `first` and
    /// its fleet had sent nothing before (by this state's account). Its
    /// silent days are then closed again as they were (the silence alerts
    /// they opened stay, and the late first telemetry resolves them),
    /// instead of the first day folded being taken for the day listening
    /// began. `None`: from scratch.
    pub fn silent_start(&self, first: EventTime) -> Option<JourneyState> {
        silent_start(self.tracked_since, self.activation, first)
    }
}

/// [`JourneyState::silent_start`] of a journey tracked since
/// `tracked_since` and activated at `activation`.
fn silent_start(
    tracked_since: Option<EventTime>,
    activation: Option<EventTime>,
    first: EventTime,
) -> Option<JourneyState> {
    let since = tracked_since.filter(|since| *since <= first)?;
    if activation.is_some_and(|a| a < first) {
        return None;
    }
    Some(JourneyState {
        activation: None,
        last_day_end: Some(since),
        days: VecDeque::new(),
        devices: HashMap::new(),
        cumulative_hours: 0.0,
        outcomes: Vec::new(),
        reached: Vec::new(),
        episodes: BTreeMap::new(),
        scores: VecDeque::new(),
        lost_champion: None,
        recent_health: VecDeque::new(),
        shape: DayShape::default(),
        tracked_since: Some(since),
    })
}

/// Mean of `f` over `days`, 0 for none.
fn mean<'a>(days: impl Iterator<Item = &'a Day>, f: impl Fn(&Day) -> f64) -> f64 {
    let (sum, n) = days.fold((0.0, 0usize), |(s, n), d| (s + f(d), n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The health components of the customer `spec` as they were `back` of
/// `days` ago (0: the newest day): the score's arithmetic, shared by the
/// close and the projected forecast.
pub(crate) fn components_of(
    days: &VecDeque<Day>,
    spec: &CustomerSpec,
    back: usize,
) -> HealthComponents {
    let recent = |n: usize| days.iter().rev().skip(back).take(n);
    let t = &spec.thresholds;
    let purchased = f64::from(spec.contract.devices_purchased.max(1));
    let advanced = recent(7).fold(0u32, |m, d| m | d.advanced_features);
    let catalog = f64::from(spec.features_in_catalog.max(advanced.count_ones()).max(1));
    let depth = 100.0 * f64::from(advanced.count_ones()) / catalog;
    let breadth = 100.0
        * recent(7)
            .map(|d| f64::from(d.active_devices))
            .fold(0.0, f64::max)
        / purchased;
    let utilisation = 100.0 * mean(recent(7), |d| d.utilisation) / t.utilisation_target;
    let (met, evaluated) = recent(7).fold((0, 0), |(m, e), d| {
        (m + d.outcomes_met, e + d.outcomes_evaluated)
    });
    let outcome = (evaluated > 0).then(|| 100.0 * f64::from(met) / f64::from(evaluated));
    let hours: f64 = recent(7).map(|d| d.operating_hours).sum();
    let faults: u64 = recent(7).map(|d| d.fault_count).sum();
    let rate = if hours > 0.0 {
        faults as f64 / hours
    } else {
        0.0
    };
    let reliability = 100.0 * (1.0 - rate / t.max_fault_rate);
    let trend = usage_growth::before(days, back).map_or(50.0, |g| 50.0 + 100.0 * g);
    HealthComponents {
        depth: health::clamp100(depth),
        breadth: health::clamp100(breadth),
        utilisation: health::clamp100(utilisation),
        outcome: outcome.map(health::clamp100),
        reliability: health::clamp100(reliability),
        trend: health::clamp100(trend),
        maturity: spec.maturity,
    }
}

impl Journey {
    /// A journey with nothing seen yet.
    pub fn new(spec: CustomerSpec) -> Self {
        let outcomes = vec![OutcomeTracker::default(); spec.outcomes.len()];
        let reached = vec![None; spec.milestones.len()];
        Self {
            spec,
            activation: None,
            last_day_end: None,
            days: VecDeque::new(),
            devices: HashMap::new(),
            cumulative_hours: 0.0,
            outcomes,
            reached,
            episodes: BTreeMap::new(),
            scores: VecDeque::new(),
            lost_champion: None,
            recent_health: VecDeque::new(),
            shape: DayShape::default(),
            champion_baseline: Arc::default(),
            tracked_since: None,
        }
    }

    /// The journey's state, to restore it after a restart.
    pub fn snapshot(&self) -> JourneyState {
        JourneyState {
            activation: self.activation,
            last_day_end: self.last_day_end,
            days: self.days.clone(),
            devices: self.devices.clone(),
            cumulative_hours: self.cumulative_hours,
            outcomes: (self.spec.outcomes.iter().map(|o| o.name.clone()))
                .zip(self.outcomes.iter().cloned())
                .collect(),
            reached: (self.spec.milestones.iter().map(|m| m.name.clone()))
                .zip(self.reached.iter().copied())
                .collect(),
            episodes: self.episodes.clone(),
            scores: self.scores.clone(),
            lost_champion: self.lost_champion.clone(),
            recent_health: self.recent_health.clone(),
            shape: self.shape.clone(),
            tracked_since: self.tracked_since,
        }
    }

    /// The journey of `spec` as `state` left it. An outcome or milestone
    /// `state` does not know starts afresh.
    pub fn restore(spec: CustomerSpec, state: JourneyState) -> Self {
        let mut journey = Self::new(spec);
        let outcomes: HashMap<Id, OutcomeTracker> = state.outcomes.into_iter().collect();
        for (o, tracker) in journey.spec.outcomes.iter().zip(&mut journey.outcomes) {
            if let Some(held) = outcomes.get(&o.name) {
                *tracker = held.clone();
            }
        }
        let reached: HashMap<Id, Option<EventTime>> = state.reached.into_iter().collect();
        for (m, at) in journey.spec.milestones.iter().zip(&mut journey.reached) {
            *at = reached.get(&m.name).copied().flatten();
        }
        Self {
            activation: state.activation,
            last_day_end: state.last_day_end,
            days: state.days,
            devices: state.devices,
            cumulative_hours: state.cumulative_hours,
            episodes: state.episodes,
            scores: state.scores,
            lost_champion: state.lost_champion,
            recent_health: state.recent_health,
            shape: state.shape,
            tracked_since: state.tracked_since,
            ..journey
        }
    }

    /// The customer.
    pub fn spec(&self) -> &CustomerSpec {
        &self.spec
    }

    /// The champion baseline last drawn (see [`BaselineMemo`]).
    pub(crate) fn champion_baseline(&self) -> &BaselineMemo {
        &self.champion_baseline
    }

    /// When in its day the fleet usually works.
    pub fn shape(&self) -> &DayShape {
        &self.shape
    }

    /// Learns the day just closed from its `hours`, as the open day took
    /// them in ([`DayShape::learn`]).
    pub fn learn_shape(&mut self, hours: &[f64], closed: f64) {
        self.shape.learn(hours, closed);
    }

    /// End of the last closed day.
    pub fn last_day_end(&self) -> Option<EventTime> {
        self.last_day_end
    }

    /// First telemetry of the customer's fleet.
    pub fn activation(&self) -> Option<EventTime> {
        self.activation
    }

    /// Where a fold of this customer's days from `first` (a window start)
    /// begins when no state before it is at hand (see
    /// [`JourneyState::silent_start`]).
    pub fn silent_start(&self, first: EventTime) -> Option<JourneyState> {
        silent_start(self.tracked_since, self.activation, first)
    }

    /// Judges the open day as far as it has arrived (`sighted`: devices'
    /// newest readings since the last closed day) at event time `now`, by
    /// the rules that need no closed day ([`rules::intraday`]): an alert
    /// for each whose episode is not open and whose breach was crossed,
    /// dated by `day_end` (the end of the open day the crossing lies in, as
    /// the day's close would date it) and marked provisional. Also returns
    /// the earliest time a verdict could change without new data.
    pub fn judge_intraday(
        &self,
        sighted: &HashMap<Id, EventTime>,
        now: EventTime,
        day_end: impl Fn(EventTime) -> EventTime,
    ) -> (Vec<AlertRecord>, EventTime) {
        let (Some(_), Some(last)) = (self.activation, self.last_day_end) else {
            // Nothing judged before the first closed day with telemetry.
            return (Vec::new(), EventTime::MAX);
        };
        let mut alerts = Vec::new();
        let mut due = EventTime::MAX;
        for (rule, verdict) in rules::intraday(self, sighted, now) {
            let episode = self.episodes.get(&rule).cloned().unwrap_or_default();
            match verdict {
                Err(at) => due = due.min(at),
                Ok(_) if episode.open_since.is_some() => {}
                Ok((crossed, reading)) => alerts.push(AlertRecord {
                    customer: self.spec.id.clone(),
                    customer_name: self.spec.name.clone(),
                    rule,
                    episode: episode.count + 1,
                    status: AlertStatus::Open,
                    provisional: true,
                    opened_at: day_end(crossed.max(last)),
                    resolved_at: None,
                    evidence: format!(
                        "{} (provisional: judged before the day closed, which confirms or retracts it)",
                        reading.evidence
                    ),
                    metric: reading.metric,
                    threshold: reading.threshold,
                    stage: self.recent_health.back().map(|h| h.stage).unwrap_or_default(),
                    segment: self.spec.segment,
                    arr_at_risk: self.spec.contract.arr,
                    next_action: rule.next_action().to_string(),
                }),
            }
        }
        (alerts, due)
    }

    /// The health the open day would close with if it went on at the pace
    /// of its hours so far (`day`: [`super::open_day::OpenDay::at_pace`]),
    /// marked provisional; the journey itself is left as it is.
    pub fn provisional_health(&self, day: &CustomerKpi) -> Option<HealthRecord> {
        if self.last_day_end.is_some_and(|last| day.window_end <= last) {
            return None;
        }
        let mut probe = self.clone();
        let mut out = Vec::new();
        probe.close_day(day, &mut out);
        out.into_iter().find_map(|o| match o {
            Output::Health(h) => Some(HealthRecord {
                provisional: true,
                ..*h
            }),
            _ => None,
        })
    }

    /// The alerts `rules` would open when the open day closes with what it
    /// holds so far (`day`: [`super::open_day::OpenDay::so_far`]): each
    /// dated by the day, marked provisional. The journey is left as it is.
    pub fn provisional_alerts(&self, day: &CustomerKpi, rules: &[Rule]) -> Vec<AlertRecord> {
        if self.last_day_end.is_some_and(|last| day.window_end <= last) {
            return Vec::new();
        }
        let mut probe = self.clone();
        let mut out = Vec::new();
        probe.close_day(day, &mut out);
        // An absence is only telling once the crew has done half a usual
        // day's work without the champion: before the shift, everyone is.
        let usual = mean(self.days.iter().rev().take(7), |d| d.operating_hours);
        let half_done = day.totals.operating_hours >= 0.5 * usual;
        (out.into_iter())
            .filter_map(|o| match o {
                Output::Alert(a)
                    if a.status == AlertStatus::Open
                        && a.opened_at == day.window_end
                        && rules.contains(&a.rule)
                        && (a.rule != Rule::ChampionLost || half_done) =>
                {
                    Some(AlertRecord {
                        provisional: true,
                        evidence: format!(
                            "{} (provisional: the day so far, before it closed, which confirms or retracts it)",
                            a.evidence
                        ),
                        ..a
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// When the current episode of `rule` opened; `None` when none is open.
    pub fn open_since(&self, rule: Rule) -> Option<EventTime> {
        self.episodes.get(&rule).and_then(|e| e.open_since)
    }

    /// Each device that ever reported, with its last message as of the last
    /// closed day.
    pub(crate) fn last_seen(&self) -> impl Iterator<Item = (&Id, EventTime)> {
        self.devices.iter().map(|(id, s)| (id, s.last_seen))
    }

    /// Evaluates outcomes defined over a window other than the day.
    pub fn observe_window(&mut self, kpi: &CustomerKpi, out: &mut Vec<Output>) {
        if self.last_day_end.is_some_and(|last| kpi.window_end <= last) {
            return; // Evaluated before a restart (windows of days closed).
        }
        for (spec, tracker) in self.spec.outcomes.iter().zip(&mut self.outcomes) {
            if spec.window == kpi.window {
                out.push(Output::Outcome(tracker.observe(spec, kpi)));
            }
        }
    }

    /// Notes a device's daily rollup (before its day is closed).
    pub fn observe_device(&mut self, kpi: &DeviceKpi) {
        let seen = self.devices.entry(kpi.device.clone()).or_insert(Seen {
            last_seen: kpi.last_seen,
        });
        seen.last_seen = seen.last_seen.max(kpi.last_seen);
    }

    /// Closes one day. `kpi` is the customer's daily window (zeros when the
    /// fleet sent nothing that day). `false` for a day closed before (a
    /// replay after a restart), which changes nothing.
    pub fn close_day(&mut self, kpi: &CustomerKpi, out: &mut Vec<Output>) -> bool {
        let end = kpi.window_end;
        if self.last_day_end.is_some_and(|last| end <= last) {
            // A day closed before a restart, replayed: judged once already.
            // Its health goes on to the portfolio again, unchanged.
            let again = self.recent_health.iter().find(|h| h.window_end == end);
            out.extend(again.cloned().map(Output::health));
            return false;
        }
        if kpi.totals.samples > 0 && self.activation.is_none() {
            self.activation = Some(kpi.first_seen);
        }
        if self.last_day_end.is_none() {
            self.tracked_since = Some(kpi.window_start);
        }
        self.last_day_end = Some(end);
        let Some(activation) = self.activation else {
            self.close_silent_day(kpi, out);
            return true;
        };
        self.cumulative_hours += kpi.totals.operating_hours;

        let (mut met, mut evaluated) = (0, 0);
        for (spec, tracker) in self.spec.outcomes.iter().zip(&mut self.outcomes) {
            if spec.window == kpi.window {
                let record = tracker.observe(spec, kpi);
                if !record.value.is_nan() {
                    evaluated += 1;
                    met += u32::from(record.met);
                }
                out.push(Output::Outcome(record));
            }
        }
        self.days.push_back(Day {
            operating_hours: kpi.totals.operating_hours,
            fault_count: kpi.totals.fault_count,
            active_devices: kpi.active_devices,
            utilisation: kpi.utilisation,
            advanced_features: kpi.advanced_features,
            operator_hours: kpi.operator_hours.as_slice().into(),
            outcomes_met: met,
            outcomes_evaluated: evaluated,
        });
        while self.days.len() > HISTORY_DAYS {
            self.days.pop_front();
        }

        self.update_milestones(kpi, activation, out);
        let days_since_activation = (end.saturating_sub(activation)) as f64 / DAY_MS as f64;
        let days_to_renewal = self.days_to_renewal(end);
        let value_at = time_to_value::value_reached_at(&self.spec.milestones, &self.reached);
        let all_reached = self.reached.iter().all(Option::is_some);
        let stage = Stage::of(
            days_to_renewal,
            f64::from(self.spec.thresholds.renewal_window_days),
            value_at.is_some() || !self.spec.milestones.iter().any(|m| m.value),
            all_reached,
        );

        let components = self.components_back(0);
        let score = health::score(&components, &self.spec.weights);
        let (moved_1d, moved_7d) = (self.moved(&components, 1), self.moved(&components, 7));
        let band = Band::of(score);
        self.scores.push_back(score);
        while self.scores.len() > forecast::MAX_FIT_DAYS {
            self.scores.pop_front();
        }
        let score_trend = match self.scores.len() {
            n @ 8.. => score - self.scores[n - 8],
            _ => 0.0,
        };
        let t = &self.spec.thresholds;
        let fit_days = t.forecast_fit_days as usize;
        let forecast = match t.forecast_method {
            Method::Projection => projection::outlook(&self.days, &self.spec, fit_days),
            method => Forecast::fit(self.scores.make_contiguous(), fit_days, method)
                .map(|f| f.outlook(t.forecast_days)),
        };

        let settled = days_since_activation >= f64::from(self.spec.thresholds.settle_days);
        let today = Today {
            journey: self,
            end,
            activation,
            score,
            band,
            days_to_renewal,
            settled,
            forecast: forecast.as_ref(),
        };
        let readings: Vec<_> = Rule::ALL
            .into_iter()
            .filter_map(|rule| rules::reading(rule, &today).map(|r| (rule, r)))
            .collect();
        for (rule, (reading, subject)) in readings {
            self.judge(rule, reading, subject, end, stage, out);
        }
        let open_alerts = self.open_alerts();
        let at_risk = band == Band::Red || open_alerts > 0;
        let health = HealthRecord {
            score_trend,
            moved_1d,
            moved_7d,
            arr_at_risk: if at_risk { self.spec.contract.arr } else { 0.0 },
            days_since_activation,
            time_to_value_days: value_at.map(|at| time_to_value::days(activation, at)),
            usage_growth: self.usage_growth().unwrap_or(0.0),
            ..self.health_of(kpi, score, components, stage, days_to_renewal)
        };
        if let Some(f) = &forecast {
            out.push(Output::Forecast(forecast::ForecastRecord::of(
                f,
                self.spec.id.clone(),
                (kpi.window_start, end),
                score,
                self.spec.thresholds.forecast_days,
            )));
        }
        self.emit_health(health, out);
        true
    }

    /// Applies `rule`'s reading of the day ending at `end` to its episode,
    /// and sends the alert when the episode opens, resolves or retracts.
    fn judge(
        &mut self,
        rule: Rule,
        reading: Reading,
        subject: Option<Id>,
        end: EventTime,
        stage: Stage,
        out: &mut Vec<Output>,
    ) {
        let episode = self.episodes.entry(rule).or_default();
        let opened = episode.open_since;
        let Some(status) = episode.apply(&reading, end) else {
            return;
        };
        if rule == Rule::ChampionLost {
            self.lost_champion = match status {
                AlertStatus::Open => subject,
                AlertStatus::Resolved | AlertStatus::Retracted => None,
            };
        }
        out.push(Output::Alert(AlertRecord {
            customer: self.spec.id.clone(),
            customer_name: self.spec.name.clone(),
            rule,
            episode: episode.count,
            status,
            provisional: false,
            opened_at: opened.unwrap_or(end),
            resolved_at: (status == AlertStatus::Resolved).then_some(end),
            evidence: reading.evidence,
            metric: reading.metric,
            threshold: reading.threshold,
            stage,
            segment: self.spec.segment,
            arr_at_risk: self.spec.contract.arr,
            next_action: rule.next_action().to_string(),
        }));
    }

    /// Days from `end` to the renewal date (negative once passed).
    fn days_to_renewal(&self, end: EventTime) -> f64 {
        (self.spec.contract.renewal as f64 - end as f64) / DAY_MS as f64
    }

    fn open_alerts(&self) -> u32 {
        (self.episodes.values())
            .filter(|e| e.open_since.is_some())
            .count() as u32
    }

    /// A day of a customer in the customers file none of whose devices has
    /// ever reported. Nothing is judged until the onboarding days have
    /// passed since the contract started, or since the engine began closing
    /// the customer's days if that is later (a contract older than the
    /// deployment is not the fleet's silence); then onboarding_stalled
    /// opens and the day gets a health record (no usage at all), so the
    /// customer and its ARR count in the portfolio, at risk. The first
    /// telemetry activates the journey, which then resolves the episode.
    fn close_silent_day(&mut self, kpi: &CustomerKpi, out: &mut Vec<Output>) {
        let Some(tracked) = self.tracked_since else {
            return;
        };
        let end = kpi.window_end;
        // The contract's start date begins at the customer's midnight.
        let start = crate::config::date_start(&self.spec.timezone, self.spec.contract.start);
        let since = tracked.max(start);
        let t = &self.spec.thresholds;
        if end < since.saturating_add(u64::from(t.onboarding_days) * DAY_MS) {
            return;
        }
        let days_to_renewal = self.days_to_renewal(end);
        // No value delivered without a reading: onboard, or renew.
        let stage = Stage::of(
            days_to_renewal,
            f64::from(t.renewal_window_days),
            false,
            false,
        );
        let components = self.components_back(0);
        let score = health::score(&components, &self.spec.weights);
        let band = Band::of(score);
        let today = Today {
            journey: self,
            end,
            activation: since,
            score,
            band,
            days_to_renewal,
            settled: false,
            forecast: None,
        };
        if let Some((mut reading, subject)) = rules::reading(Rule::OnboardingStalled, &today) {
            let silent_days = (end - since) / DAY_MS;
            let from = if since == start {
                "the contract started"
            } else {
                "fleetpulse began listening"
            };
            reading.evidence = format!(
                "{SILENCE} in the {silent_days} days since {from}; {}",
                reading.evidence
            );
            let renewal = rules::reading(Rule::RenewalAtRisk, &today);
            self.judge(Rule::OnboardingStalled, reading, subject, end, stage, out);
            // A renewal near with nothing used is the plainest risk of all.
            if let Some((reading, subject)) = renewal {
                self.judge(Rule::RenewalAtRisk, reading, subject, end, stage, out);
            }
        }
        let health = HealthRecord {
            arr_at_risk: self.spec.contract.arr,
            // Undefined: there was no activation.
            days_since_activation: f64::NAN,
            ..self.health_of(kpi, score, components, stage, days_to_renewal)
        };
        self.emit_health(health, out);
    }

    /// The day's health record with what every day's has; the rest at
    /// their defaults (nothing moved, no time to value, no ARR at risk).
    fn health_of(
        &self,
        kpi: &CustomerKpi,
        score: f64,
        components: HealthComponents,
        stage: Stage,
        days_to_renewal: f64,
    ) -> HealthRecord {
        HealthRecord {
            customer: self.spec.id.clone(),
            window_start: kpi.window_start,
            window_end: kpi.window_end,
            score,
            band: Band::of(score),
            components,
            stage,
            segment: self.spec.segment,
            arr: self.spec.contract.arr,
            open_alerts: self.open_alerts(),
            days_to_renewal,
            milestones_reached: self.reached.iter().filter(|r| r.is_some()).count() as u32,
            milestones_total: self.reached.len() as u32,
            ..HealthRecord::default()
        }
    }

    /// Sends the day's health on, kept for a replay of the day.
    fn emit_health(&mut self, health: HealthRecord, out: &mut Vec<Output>) {
        self.recent_health.push_back(health.clone());
        while self.recent_health.len() > RECENT_HEALTH {
            self.recent_health.pop_front();
        }
        out.push(Output::health(health));
    }

    fn recent(&self, n: usize) -> impl Iterator<Item = &Day> {
        self.days.iter().rev().take(n)
    }

    /// See [`usage_growth::of`].
    pub(crate) fn usage_growth(&self) -> Option<f64> {
        usage_growth::of(&self.days)
    }

    /// Closed days kept, oldest first.
    pub(crate) fn days(&self) -> &VecDeque<Day> {
        &self.days
    }

    /// Devices that ever reported.
    pub(crate) fn devices_seen(&self) -> usize {
        self.devices.len()
    }

    /// Whether `device` reported on a closed day.
    pub(crate) fn knows_device(&self, device: &Id) -> bool {
        self.devices.contains_key(device)
    }

    /// Devices whose last message is older than `since`.
    pub(crate) fn devices_silent_since(&self, since: EventTime) -> usize {
        self.devices
            .values()
            .filter(|d| d.last_seen < since)
            .count()
    }

    /// Each outcome with its streaks.
    pub(crate) fn outcomes(&self) -> impl Iterator<Item = (&OutcomeSpec, &OutcomeTracker)> + Clone {
        self.spec.outcomes.iter().zip(&self.outcomes)
    }

    /// Names of the milestones not reached and past due at `end`.
    pub(crate) fn overdue_milestones(
        &self,
        end: EventTime,
        activation: EventTime,
    ) -> impl Iterator<Item = &str> {
        self.spec
            .milestones
            .iter()
            .zip(&self.reached)
            .filter(move |(m, r)| r.is_none() && end > activation + u64::from(m.due_days) * DAY_MS)
            .map(|(m, _)| &*m.name)
    }

    /// The champion an open champion_lost episode follows.
    pub(crate) fn lost_champion(&self) -> Option<&Id> {
        self.lost_champion.as_ref()
    }

    /// The health components as they were `back` closed days ago (0:
    /// today), from the days kept: exact while the days cover the 35-day
    /// usage baseline (`back` <= 7), the trend component neutral beyond.
    /// The points each component of today's score (`today`) gained or lost
    /// since `back` days before; zeros while the history is shorter.
    fn moved(&self, today: &HealthComponents, back: usize) -> HealthPoints {
        if self.days.len() <= back {
            return HealthPoints::default();
        }
        let weights = &self.spec.weights;
        let before = health::contributions(&self.components_back(back), weights);
        health::contributions(today, weights).since(&before)
    }

    pub(crate) fn components_back(&self, back: usize) -> HealthComponents {
        components_of(&self.days, &self.spec, back)
    }

    fn update_milestones(
        &mut self,
        kpi: &CustomerKpi,
        activation: EventTime,
        out: &mut Vec<Output>,
    ) {
        let end = kpi.window_end;
        for (i, spec) in self.spec.milestones.iter().enumerate() {
            if self.reached[i].is_none() {
                let done = match &spec.kind {
                    MilestoneKind::DevicesOnline { share } => {
                        let need = (share * f64::from(self.spec.contract.devices_purchased)).ceil();
                        self.devices.len() as f64 >= need.max(1.0)
                    }
                    MilestoneKind::OperatingHours { hours } => self.cumulative_hours >= *hours,
                    MilestoneKind::FeatureWeekly {
                        feature_bit, weeks, ..
                    } => {
                        let weeks = *weeks as usize;
                        self.days.len() >= 7 * weeks
                            && (0..weeks).all(|w| {
                                self.days
                                    .iter()
                                    .rev()
                                    .skip(7 * w)
                                    .take(7)
                                    .any(|d| d.advanced_features & feature_bit != 0)
                            })
                    }
                    MilestoneKind::OutcomeStreak { outcome, windows } => self
                        .spec
                        .outcomes
                        .iter()
                        .zip(&self.outcomes)
                        .any(|(o, t)| o.name == *outcome && t.consecutive_met >= *windows),
                };
                if done {
                    self.reached[i] = Some(end);
                }
            }
            let due_at = activation + u64::from(spec.due_days) * DAY_MS;
            let status = match self.reached[i] {
                Some(_) => MilestoneStatus::Reached,
                None if end > due_at => MilestoneStatus::Overdue,
                None => MilestoneStatus::Pending,
            };
            out.push(Output::Milestone(MilestoneRecord {
                customer: self.spec.id.clone(),
                milestone: spec.name.clone(),
                position: i as u32 + 1,
                value_milestone: spec.value,
                window_start: kpi.window_start,
                window_end: end,
                due_at,
                reached_at: self.reached[i],
                status,
            }));
        }
    }

    /// Hours `operator` logged over the last `days` days.
    pub(crate) fn hours_of(&self, operator: &Id, days: usize) -> f64 {
        self.recent(days)
            .flat_map(|d| d.operator_hours.iter())
            .filter(|(op, _)| op == operator)
            .map(|(_, h)| h)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customer::{Contract, Segment};
    use crate::kpi::Totals;

    /// 60 days of a fleet of 8 whose use, faults and features vary from
    /// day to day; the health records in order.
    fn health_over_60_days() -> Vec<HealthRecord> {
        let contract = Contract {
            arr: 50_000.0,
            start: 0,
            renewal: 400 * DAY_MS,
            devices_purchased: 8,
            operator_seats: 4,
        };
        let mut journey = Journey::new(CustomerSpec::new("c", Segment::HighTouch, contract));
        let mut out = Vec::new();
        for d in 0..60u64 {
            let wave = ((d * 7919) % 13) as f64 / 13.0;
            // Use falls off after day 40: the utilisation and trend move.
            let share = if d < 40 { 0.5 + 0.4 * wave } else { 0.2 * wave };
            let kpi = CustomerKpi {
                customer: "c".into(),
                window: "1d".into(),
                window_start: d * DAY_MS,
                window_end: (d + 1) * DAY_MS,
                devices_purchased: 8,
                reporting_devices: 8,
                active_devices: (share * 8.0).round() as u32,
                utilisation: 0.3 * share,
                totals: Totals {
                    operating_hours: 0.3 * share * 24.0 * 8.0,
                    fault_count: d % 5,
                    samples: 500,
                    ..Totals::default()
                },
                first_seen: d * DAY_MS,
                advanced_features: if d % 9 == 0 { 0b111 } else { 0b1 },
                ..CustomerKpi::default()
            };
            journey.close_day(&kpi, &mut out);
        }
        (out.into_iter())
            .filter_map(|o| match o {
                Output::Health(h) => Some(*h),
                _ => None,
            })
            .collect()
    }

    /// Adoption depth is the share of the engine's catalog used in the
    /// last 7 days, whatever its size: both of a catalog of 2 is 100, 5 of
    /// 8 is 62.5 (it was taken over at least 4, whatever the catalog).
    #[test]
    fn depth_is_the_share_of_the_configured_catalog() {
        for (catalog, used, depth) in [(2, 0b11, 100.0), (8, 0b1_1111, 62.5), (4, 0b1, 25.0)] {
            let spec = CustomerSpec {
                features_in_catalog: catalog,
                ..crate::kpi::fleet_days::spec(1)
            };
            let days: VecDeque<Day> = (0..7)
                .map(|_| Day {
                    advanced_features: used,
                    ..Day::default()
                })
                .collect();
            assert_eq!(
                components_of(&days, &spec, 0).depth,
                depth,
                "{used:b} of {catalog}"
            );
        }
    }

    #[test]
    fn what_moved_the_score_adds_up_to_the_change_of_the_stored_scores() {
        let health = health_over_60_days();
        assert_eq!(health.len(), 60);
        assert_eq!(health[0].moved_1d, HealthPoints::default());
        for (d, h) in health.iter().enumerate() {
            for (back, moved) in [(1, &h.moved_1d), (7, &h.moved_7d)] {
                let Some(before) = d.checked_sub(back).map(|b| &health[b]) else {
                    assert_eq!(*moved, HealthPoints::default(), "day {d}");
                    continue;
                };
                let change = h.score - before.score;
                assert!(
                    (moved.total() - change).abs() < 1e-9,
                    "day {d}, {back} back: {moved:?} sums to {} where the score moved {change}",
                    moved.total()
                );
            }
        }
        // The week use fell off, utilisation and trend lost the most.
        let fell = &health[44].moved_7d;
        let worst = (fell.named().into_iter())
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert!(
            ["utilisation", "trend", "breadth"].contains(&worst.0),
            "{fell:?}"
        );
        assert!(worst.1 < -1.0, "{fell:?}");
    }
}

#[cfg(test)]
mod removal_tests {
    use super::*;

    /// A removed customer's episode resolves at its last day (never before
    /// it opened); a provisional one, whose day will not close, is
    /// retracted, so a store takes it again if the customer comes back and
    /// the day raises it again.
    #[test]
    fn a_removed_customer_s_episodes_resolve_and_its_provisional_ones_retract() {
        let open = AlertRecord {
            customer: "c".into(),
            rule: Rule::DevicesDark,
            episode: 2,
            status: AlertStatus::Open,
            opened_at: 5_000,
            evidence: "3 of 4 devices dark".into(),
            metric: 3.0,
            threshold: 2.0,
            ..AlertRecord::default()
        };
        let resolved = ended_by_removal(&open, 9_000);
        assert_eq!(
            (resolved.status, resolved.resolved_at, resolved.episode),
            (AlertStatus::Resolved, Some(9_000), 2)
        );
        assert!(resolved.evidence.starts_with("customer removed"));
        assert_eq!((resolved.metric, resolved.threshold), (0.0, 0.0));
        assert_eq!(ended_by_removal(&open, 1_000).resolved_at, Some(5_000));
        let provisional = AlertRecord {
            provisional: true,
            ..open
        };
        let retracted = ended_by_removal(&provisional, 9_000);
        assert_eq!(
            (retracted.status, retracted.resolved_at, retracted.opened_at),
            (AlertStatus::Retracted, None, 5_000)
        );
        assert!(
            retracted
                .evidence
                .ends_with("not confirmed: 3 of 4 devices dark")
        );
    }
}
