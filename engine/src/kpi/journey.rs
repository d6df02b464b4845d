//! The customer journey, closed day by day: outcomes against targets,
//! milestones, time to value, lifecycle stage, health score and at-risk
//! alerts. Plain Rust; the `customer_success` operator feeds it closed daily
//! windows in event-time order.

use std::collections::{HashMap, VecDeque};

use super::health::{self, Band, HealthComponents, HealthRecord, Stage};
use super::milestone::{MilestoneKind, MilestoneRecord, MilestoneStatus};
use super::outcome::OutcomeTracker;
use super::risk::{AlertRecord, AlertStatus, Episode, Reading, Rule};
use super::{CustomerKpi, DeviceKpi, Output};
use crate::config::DAY_MS;
use crate::customer::CustomerSpec;
use crate::model::{EventTime, Id};

/// A rule's reading, with the operator it is about (champion_lost).
type RuleReading = (Rule, Option<(Reading, Option<Id>)>);

/// Days of history kept per customer (baselines need 35).
const HISTORY_DAYS: usize = 42;

/// One closed day, as the rules need it.
#[derive(Debug, Clone, Default)]
struct Day {
    operating_hours: f64,
    fault_count: u64,
    active_devices: u32,
    utilisation: f64,
    advanced_features: u32,
    operator_hours: Vec<(Id, f64)>,
    outcomes_met: u32,
    outcomes_evaluated: u32,
}

/// What the journey remembers of a device.
#[derive(Debug, Clone, Copy)]
struct Seen {
    last_seen: EventTime,
}

/// One customer's journey state.
#[derive(Debug)]
pub struct Journey {
    spec: CustomerSpec,
    activation: Option<EventTime>,
    last_day_end: Option<EventTime>,
    days: VecDeque<Day>,
    devices: HashMap<Id, Seen>,
    cumulative_hours: f64,
    outcomes: Vec<OutcomeTracker>,
    reached: Vec<Option<EventTime>>,
    episodes: Vec<Episode>,
    scores: VecDeque<f64>,
    /// The champion whose absence opened the current champion_lost episode:
    /// followed until they reappear, whoever leads the baseline meanwhile.
    lost_champion: Option<Id>,
}

/// Mean of `f` over `days`, 0 for none.
fn mean<'a>(days: impl Iterator<Item = &'a Day>, f: impl Fn(&Day) -> f64) -> f64 {
    let (sum, n) = days.fold((0.0, 0usize), |(s, n), d| (s + f(d), n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// A rule's verdict with hysteresis: breached once it `fires`, clear once
/// it `resolves`, unchanged (`None`) in between.
fn verdict(fires: bool, resolves: bool) -> Option<bool> {
    if fires {
        Some(true)
    } else if resolves {
        Some(false)
    } else {
        None
    }
}

impl Journey {
    /// A journey with nothing seen yet.
    pub fn new(spec: CustomerSpec) -> Self {
        let outcomes = vec![OutcomeTracker::default(); spec.outcomes.len()];
        let reached = vec![None; spec.milestones.len()];
        let episodes = vec![Episode::default(); Rule::ALL.len()];
        Self {
            spec,
            activation: None,
            last_day_end: None,
            days: VecDeque::new(),
            devices: HashMap::new(),
            cumulative_hours: 0.0,
            outcomes,
            reached,
            episodes,
            scores: VecDeque::new(),
            lost_champion: None,
        }
    }

    /// The customer.
    pub fn spec(&self) -> &CustomerSpec {
        &self.spec
    }

    /// End of the last closed day.
    pub fn last_day_end(&self) -> Option<EventTime> {
        self.last_day_end
    }

    /// First telemetry of the customer's fleet.
    pub fn activation(&self) -> Option<EventTime> {
        self.activation
    }

    /// Evaluates outcomes defined over a window other than the day.
    pub fn observe_window(&mut self, kpi: &CustomerKpi, out: &mut Vec<Output>) {
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
    /// fleet sent nothing that day).
    pub fn close_day(&mut self, kpi: &CustomerKpi, out: &mut Vec<Output>) {
        let end = kpi.window_end;
        if kpi.samples > 0 && self.activation.is_none() {
            self.activation = Some(kpi.first_seen);
        }
        self.last_day_end = Some(end);
        let Some(activation) = self.activation else {
            return; // Nothing to judge before the first telemetry.
        };
        self.cumulative_hours += kpi.operating_hours;

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
            operating_hours: kpi.operating_hours,
            fault_count: kpi.fault_count,
            active_devices: kpi.active_devices,
            utilisation: kpi.utilisation,
            advanced_features: kpi.advanced_features,
            operator_hours: kpi.operator_hours.clone(),
            outcomes_met: met,
            outcomes_evaluated: evaluated,
        });
        while self.days.len() > HISTORY_DAYS {
            self.days.pop_front();
        }

        self.update_milestones(kpi, activation, out);
        let days_since_activation = (end.saturating_sub(activation)) as f64 / DAY_MS as f64;
        let days_to_renewal = (self.spec.contract.renewal as f64 - end as f64) / DAY_MS as f64;
        let value_at = self
            .spec
            .milestones
            .iter()
            .zip(&self.reached)
            .find(|(m, _)| m.value)
            .and_then(|(_, r)| *r);
        let all_reached = self.reached.iter().all(Option::is_some);
        let stage = Stage::of(
            days_to_renewal,
            f64::from(self.spec.thresholds.renewal_window_days),
            value_at.is_some() || !self.spec.milestones.iter().any(|m| m.value),
            all_reached,
        );

        let components = self.components();
        let score = health::score(&components, &self.spec.weights);
        let band = Band::of(score);
        self.scores.push_back(score);
        while self.scores.len() > 8 {
            self.scores.pop_front();
        }
        let score_trend = if self.scores.len() == 8 {
            score - self.scores[0]
        } else {
            0.0
        };

        let settled = days_since_activation >= f64::from(self.spec.thresholds.settle_days);
        let readings = self.readings(end, activation, score, band, days_to_renewal, settled);
        for (i, (rule, reading)) in readings.into_iter().enumerate() {
            let Some((reading, subject)) = reading else {
                continue;
            };
            let episode = &mut self.episodes[i];
            let opened = episode.open_since;
            if let Some(status) = episode.apply(&reading, end) {
                if rule == Rule::ChampionLost {
                    self.lost_champion = match status {
                        AlertStatus::Open => subject,
                        AlertStatus::Resolved => None,
                    };
                }
                out.push(Output::Alert(AlertRecord {
                    customer: self.spec.id.clone(),
                    customer_name: self.spec.name.clone(),
                    rule,
                    episode: episode.count,
                    status,
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
        }
        let open_alerts = self
            .episodes
            .iter()
            .filter(|e| e.open_since.is_some())
            .count() as u32;
        let at_risk = band == Band::Red || open_alerts > 0;
        out.push(Output::Health(HealthRecord {
            customer: self.spec.id.clone(),
            window_start: kpi.window_start,
            window_end: end,
            score,
            band,
            score_trend,
            components,
            stage,
            segment: self.spec.segment,
            arr: self.spec.contract.arr,
            arr_at_risk: if at_risk { self.spec.contract.arr } else { 0.0 },
            open_alerts,
            days_since_activation,
            days_to_renewal,
            time_to_value_days: value_at
                .map(|at| at.saturating_sub(activation) as f64 / DAY_MS as f64),
            usage_growth: self.usage_growth().unwrap_or(0.0),
            milestones_reached: self.reached.iter().filter(|r| r.is_some()).count() as u32,
            milestones_total: self.reached.len() as u32,
        }));
    }

    fn recent(&self, n: usize) -> impl Iterator<Item = &Day> {
        self.days.iter().rev().take(n)
    }

    /// Mean daily hours of the last 7 days against the up to 28 before them,
    /// minus 1; `None` without two weeks of baseline.
    fn usage_growth(&self) -> Option<f64> {
        let n = self.days.len();
        if n < 7 + 14 {
            return None;
        }
        let recent = mean(self.recent(7), |d| d.operating_hours);
        let baseline = mean(self.days.iter().rev().skip(7).take(28), |d| {
            d.operating_hours
        });
        (baseline > 0.0).then(|| recent / baseline - 1.0)
    }

    fn components(&self) -> HealthComponents {
        let t = &self.spec.thresholds;
        let purchased = f64::from(self.spec.contract.devices_purchased.max(1));
        let advanced = self.recent(7).fold(0u32, |m, d| m | d.advanced_features);
        let catalog = 4.0f64.max(f64::from(advanced.count_ones()));
        let depth = 100.0 * f64::from(advanced.count_ones()) / catalog;
        let breadth = 100.0
            * self
                .recent(7)
                .map(|d| f64::from(d.active_devices))
                .fold(0.0, f64::max)
            / purchased;
        let utilisation = 100.0 * mean(self.recent(7), |d| d.utilisation) / t.utilisation_target;
        let (met, evaluated) = self.recent(7).fold((0, 0), |(m, e), d| {
            (m + d.outcomes_met, e + d.outcomes_evaluated)
        });
        let outcome = (evaluated > 0).then(|| 100.0 * f64::from(met) / f64::from(evaluated));
        let hours: f64 = self.recent(7).map(|d| d.operating_hours).sum();
        let faults: u64 = self.recent(7).map(|d| d.fault_count).sum();
        let rate = if hours > 0.0 {
            faults as f64 / hours
        } else {
            0.0
        };
        let reliability = 100.0 * (1.0 - rate / t.max_fault_rate);
        let trend = self.usage_growth().map_or(50.0, |g| 50.0 + 100.0 * g);
        HealthComponents {
            depth: health::clamp100(depth),
            breadth: health::clamp100(breadth),
            utilisation: health::clamp100(utilisation),
            outcome: outcome.map(health::clamp100),
            reliability: health::clamp100(reliability),
            trend: health::clamp100(trend),
            maturity: self.spec.maturity,
        }
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

    /// Today's reading of every rule, in [`Rule::ALL`] order.
    fn readings(
        &self,
        end: EventTime,
        activation: EventTime,
        score: f64,
        band: Band,
        days_to_renewal: f64,
        settled: bool,
    ) -> Vec<RuleReading> {
        let t = &self.spec.thresholds;
        let mut readings: Vec<(Rule, Option<Reading>)> = Vec::with_capacity(Rule::ALL.len());

        // usage_drop: last 7 days against the 28 before.
        readings.push((Rule::UsageDrop, self.usage_growth().filter(|_| settled).map(|g| {
            let drop = -g;
            Reading {
                breached: verdict(drop >= t.usage_drop, drop < t.usage_drop_resolve),
                metric: drop,
                threshold: t.usage_drop,
                evidence: format!(
                    "operating hours over the last 7 days are {:.0}% {} the customer's 28-day baseline",
                    drop.abs() * 100.0,
                    if drop >= 0.0 { "below" } else { "above" }
                ),
            }
        })));

        // devices_dark: silent units, told apart from parked ones that still
        // send heartbeats.
        let silent_since = end.saturating_sub(u64::from(t.dark_after_days) * DAY_MS);
        let dark = self
            .devices
            .values()
            .filter(|d| d.last_seen < silent_since)
            .count();
        let known = self.devices.len();
        let fire_at = (t.dark_share * known as f64).max(f64::from(t.dark_min_devices));
        readings.push((
            Rule::DevicesDark,
            (known > 0).then(|| Reading {
                breached: verdict(dark as f64 >= fire_at, (dark as f64) < fire_at / 2.0),
                metric: dark as f64,
                threshold: fire_at,
                evidence: format!(
                    "{dark} of {known} devices that reported before have sent nothing for {} days or more (parked machines that still send heartbeats are not counted)",
                    t.dark_after_days
                ),
            }),
        ));

        // champion_lost: the dominant operator of the baseline stopped
        // appearing (pushed at the end, with the champion's id).
        let champion = self.champion_reading().filter(|_| settled);

        // outcome_missed.
        let worst = self
            .spec
            .outcomes
            .iter()
            .zip(&self.outcomes)
            .max_by_key(|(_, tr)| tr.consecutive_missed);
        readings.push((
            Rule::OutcomeMissed,
            worst.map(|(spec, tr)| Reading {
                breached: verdict(
                    tr.consecutive_missed >= t.outcome_missed_windows,
                    self.outcomes.iter().all(|o| {
                        o.consecutive_missed == 0 && o.consecutive_met >= t.outcome_met_to_resolve
                    }),
                ),
                metric: f64::from(tr.consecutive_missed),
                threshold: f64::from(t.outcome_missed_windows),
                evidence: if tr.consecutive_missed > 0 {
                    format!(
                        "outcome `{}` ({} {} {}) missed {} windows in a row",
                        spec.name,
                        spec.expression.source(),
                        spec.direction.symbol(),
                        spec.target,
                        tr.consecutive_missed
                    )
                } else {
                    "every outcome met its target in the latest windows".to_string()
                },
            }),
        ));

        // onboarding_stalled: a milestone overdue, or devices never online.
        let overdue: Vec<&str> = self
            .spec
            .milestones
            .iter()
            .zip(&self.reached)
            .filter(|(m, r)| r.is_none() && end > activation + u64::from(m.due_days) * DAY_MS)
            .map(|(m, _)| &*m.name)
            .collect();
        let purchased = self.spec.contract.devices_purchased;
        let online_needed = t.onboarding_online_share * f64::from(purchased);
        let past_onboarding = end >= activation + u64::from(t.onboarding_days) * DAY_MS;
        let never_online = past_onboarding && (known as f64) < online_needed;
        let stalled = !overdue.is_empty() || never_online;
        readings.push((
            Rule::OnboardingStalled,
            Some(Reading {
                breached: Some(stalled),
                metric: overdue.len() as f64,
                threshold: 0.0,
                evidence: format!(
                    "{} of {purchased} purchased devices ever online; overdue milestones: {}",
                    known,
                    if overdue.is_empty() {
                        "none".to_string()
                    } else {
                        overdue.join(", ")
                    }
                ),
            }),
        ));

        // fault_spike: last 3 days' fault rate against the 28 days before.
        readings.push((Rule::FaultSpike, self.fault_reading()));

        // health_red.
        readings.push((
            Rule::HealthRed,
            settled.then(|| Reading {
                breached: verdict(band == Band::Red, score >= t.health_red_resolve),
                metric: score,
                threshold: 50.0,
                evidence: format!("health score {score:.0} (red at 50 or below)"),
            }),
        ));

        // renewal_at_risk.
        let in_window = (0.0..=f64::from(t.renewal_window_days)).contains(&days_to_renewal);
        readings.push((
            Rule::RenewalAtRisk,
            Some(Reading {
                breached: Some(in_window && band != Band::Green),
                metric: days_to_renewal,
                threshold: f64::from(t.renewal_window_days),
                evidence: format!(
                    "renewal in {days_to_renewal:.0} days with health {score:.0} ({})",
                    band.as_str()
                ),
            }),
        ));
        let mut readings: Vec<RuleReading> = readings
            .into_iter()
            .map(|(rule, r)| (rule, r.map(|r| (r, None))))
            .collect();
        readings.insert(
            2,
            (Rule::ChampionLost, champion.map(|(r, id)| (r, Some(id)))),
        );
        readings
    }

    fn champion_reading(&self) -> Option<(Reading, Id)> {
        let t = &self.spec.thresholds;
        let absent = t.champion_absent_days as usize;
        if let Some(champion) = &self.lost_champion {
            // An open episode follows its champion until they are back.
            let recent = self.hours_of(champion, absent);
            return Some((
                Reading {
                    breached: (recent > 0.0).then_some(false),
                    metric: recent,
                    threshold: 0.0,
                    evidence: format!(
                        "champion {champion} is back: {recent:.0} h in the last {absent} days"
                    ),
                },
                champion.clone(),
            ));
        }
        if self.days.len() < absent + 14 {
            return None;
        }
        let mut baseline: HashMap<&Id, f64> = HashMap::new();
        for day in self.days.iter().rev().skip(absent).take(28) {
            for (op, h) in &day.operator_hours {
                *baseline.entry(op).or_default() += h;
            }
        }
        let total: f64 = baseline.values().sum();
        let mut ranked: Vec<(&Id, f64)> = baseline.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let (top, top_hours) = *ranked.first()?;
        let second = ranked.get(1).map_or(0.0, |r| r.1);
        let average = total / ranked.len() as f64;
        if top_hours < t.champion_dominance * average
            || top_hours < t.champion_lead * second
            || top_hours < t.champion_min_hours
        {
            // No operator stands out: there is no champion to lose.
            return None;
        }
        let recent = self.hours_of(top, absent);
        Some((
            Reading {
                breached: (recent == 0.0).then_some(true),
                metric: recent,
                threshold: 0.0,
                evidence: format!(
                    "champion {top} logged {top_hours:.0} h in the 28-day baseline ({:.1}x the next operator) and none in the last {absent} days",
                    top_hours / second.max(1e-9)
                ),
            },
            top.clone(),
        ))
    }

    /// Hours `operator` logged over the last `days` days.
    fn hours_of(&self, operator: &Id, days: usize) -> f64 {
        self.recent(days)
            .flat_map(|d| d.operator_hours.iter())
            .filter(|(op, _)| op == operator)
            .map(|(_, h)| h)
            .sum()
    }

    fn fault_reading(&self) -> Option<Reading> {
        let t = &self.spec.thresholds;
        if self.days.len() < 3 + 14 {
            return None;
        }
        let (faults, hours) = self.recent(3).fold((0u64, 0.0), |(f, h), d| {
            (f + d.fault_count, h + d.operating_hours)
        });
        let (base_faults, base_hours) = self
            .days
            .iter()
            .rev()
            .skip(3)
            .take(28)
            .fold((0u64, 0.0), |(f, h), d| {
                (f + d.fault_count, h + d.operating_hours)
            });
        // A floor on the baseline rate, so a customer with almost no faults
        // does not spike on a handful.
        let base_rate = (base_faults as f64 / base_hours.max(1.0)).max(0.02);
        let rate = faults as f64 / hours.max(1.0);
        let ratio = rate / base_rate;
        Some(Reading {
            breached: verdict(
                ratio >= t.fault_spike_ratio && faults >= t.fault_spike_min_faults,
                ratio < t.fault_spike_resolve_ratio,
            ),
            metric: ratio,
            threshold: t.fault_spike_ratio,
            evidence: format!(
                "{faults} faults in the last 3 days: {rate:.2} per operating hour, {ratio:.1}x the 28-day baseline of {base_rate:.2}"
            ),
        })
    }
}
