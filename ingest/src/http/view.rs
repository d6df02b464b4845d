//! The API's in-memory view of the record stream: one more receiver of the
//! service's fan-out, so the API and the dashboard work whatever sinks are
//! configured. Plain maps, no I/O: [`View::apply`] takes a batch of engine
//! records and is unit-tested directly.
//!
//! **Bounded.** Per customer the view keeps the last [`HISTORY_DAYS`] daily
//! records (health, customer KPIs, each outcome), the last [`HISTORY_HOURS`]
//! records of each shorter window, the latest state of each milestone, and
//! per device the last [`DEVICE_DAYS`] daily records. Alert episodes are kept
//! in their current state (the last [`MAX_RESOLVED_ALERTS`] resolved ones
//! plus every open one); portfolio figures for [`HISTORY_DAYS`] days.
//! Memory therefore grows with the number of customers and devices, never
//! with time.

use std::collections::{BTreeMap, HashMap, VecDeque};

use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::{
    AlertRecord, CustomerKpi, CustomerSpec, DeviceKpi, EventTime, ForecastRecord, HealthRecord, Id,
    MachineState, MilestoneRecord, OutcomeRecord, Output, PortfolioRecord, Segment,
};

/// Daily records kept per customer (and per outcome), and portfolio days.
pub const HISTORY_DAYS: usize = 120;
/// Records kept per customer of each window shorter than a day.
pub const HISTORY_HOURS: usize = 48;
/// Daily records kept per device.
pub const DEVICE_DAYS: usize = 7;
/// Resolved alert episodes kept (open ones are always kept).
pub const MAX_RESOLVED_ALERTS: usize = 1000;
/// Label of the daily window when the engine config does not say otherwise.
pub const DEFAULT_DAY_WINDOW: &str = "1d";

/// Whether an alert episode counts as open, and so as at risk: only an
/// `open` one. A resolved episode is over; a retracted one never happened
/// (telemetry that arrived late restated the days that raised it). Every
/// count of open alerts and every ARR-at-risk figure of the API goes
/// through this.
pub fn counts_as_open(alert: &AlertRecord) -> bool {
    alert.status == AlertStatus::Open
}

/// Whether a window record was restated: written again, with a higher
/// `revision`, because telemetry arrived after the window closed.
pub fn restated(revision: u32) -> bool {
    revision > 0
}

/// What the customers file says about a customer.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerInfo {
    /// Display name.
    pub name: Id,
    /// Coverage segment.
    pub segment: Segment,
    /// Annual recurring revenue.
    pub arr: f64,
    /// Machines bought.
    pub devices_purchased: u32,
    /// Renewal date, ms since the epoch.
    pub renewal: EventTime,
    /// Contract start, ms since the epoch: coverage cadences count from it.
    pub start: EventTime,
    /// Time zone of the customer's days: its dates.
    pub zone: jiff::tz::TimeZone,
}

impl CustomerInfo {
    /// From the engine's customer spec.
    pub fn of(spec: &CustomerSpec) -> Self {
        Self {
            name: spec.name.clone(),
            segment: spec.segment,
            arr: spec.contract.arr,
            devices_purchased: spec.contract.devices_purchased,
            renewal: spec.contract.renewal,
            start: spec.contract.start,
            zone: spec.timezone.clone(),
        }
    }
}

/// Records ordered by window start, one per start (a record with a start
/// already held replaces it: the store's idempotency rule), at most `cap`.
#[derive(Debug, Clone)]
pub struct Series<T> {
    cap: usize,
    items: VecDeque<T>,
}

impl<T> Series<T> {
    /// An empty series keeping at most `cap` records.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            items: VecDeque::new(),
        }
    }

    /// Inserts `record` starting at `start` (`start_of` gives the start of
    /// the records already held).
    fn insert(&mut self, record: T, start: EventTime, start_of: impl Fn(&T) -> EventTime) {
        match self.items.back() {
            Some(last) if start_of(last) < start => self.items.push_back(record),
            None => self.items.push_back(record),
            _ => match self.items.binary_search_by_key(&start, &start_of) {
                Ok(i) => self.items[i] = record,
                Err(i) => self.items.insert(i, record),
            },
        }
        while self.items.len() > self.cap {
            self.items.pop_front();
        }
    }

    /// The records, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.items.iter()
    }

    /// The newest record.
    pub fn last(&self) -> Option<&T> {
        self.items.back()
    }

    /// The last `n` records, oldest first.
    pub fn tail(&self, n: usize) -> impl Iterator<Item = &T> {
        self.items.iter().skip(self.items.len().saturating_sub(n))
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// One device as the view knows it.
#[derive(Debug, Clone)]
pub struct DeviceView {
    /// Site as of the latest record.
    pub site: Id,
    /// Event time of the device's newest reading, any window.
    pub last_seen: EventTime,
    /// Machine state at that reading.
    pub last_state: MachineState,
    /// The last daily records.
    pub daily: Series<DeviceKpi>,
    /// The record that said `last_seen` (of any window): what a snapshot
    /// of the view keeps of the shorter windows.
    latest: Option<DeviceKpi>,
}

/// One customer as the view knows it.
#[derive(Debug, Clone, Default)]
pub struct CustomerView {
    /// From the customers file, when the service has one.
    pub info: Option<CustomerInfo>,
    /// Daily health records.
    pub health: Option<Series<HealthRecord>>,
    /// The latest health forecast (a restated day's replaces it when it is
    /// the newest).
    pub forecast: Option<ForecastRecord>,
    /// Customer KPIs per window label.
    pub kpis: BTreeMap<Id, Series<CustomerKpi>>,
    /// Outcome records per (outcome, window label).
    pub outcomes: BTreeMap<(Id, Id), Series<OutcomeRecord>>,
    /// Latest state of each milestone, by name.
    pub milestones: BTreeMap<Id, MilestoneRecord>,
    /// Devices by id.
    pub devices: BTreeMap<Id, DeviceView>,
}

impl CustomerView {
    /// Time zone of the customer's days (UTC without one).
    pub fn zone(&self) -> &jiff::tz::TimeZone {
        static UTC: jiff::tz::TimeZone = jiff::tz::TimeZone::UTC;
        self.info.as_ref().map_or(&UTC, |i| &i.zone)
    }

    /// The local date of its day starting at `start`, as 00:00 UTC of that
    /// date: the day of the portfolio it counts in (as the engine files it),
    /// and how dates entered as dates (touchpoints, contract events) are kept.
    pub fn date_of(&self, start: EventTime) -> EventTime {
        fleetpulse_engine::config::dated(self.zone(), start)
    }

    /// The latest health record.
    pub fn latest_health(&self) -> Option<&HealthRecord> {
        self.health.as_ref().and_then(Series::last)
    }

    /// Milestones in journey order.
    pub fn journey(&self) -> Vec<&MilestoneRecord> {
        let mut milestones: Vec<&MilestoneRecord> = self.milestones.values().collect();
        milestones.sort_by(|a, b| {
            a.position
                .cmp(&b.position)
                .then(a.milestone.cmp(&b.milestone))
        });
        milestones
    }
}

/// The view: every customer, alert episode and portfolio day it holds.
#[derive(Debug, Clone)]
pub struct View {
    day_window: Id,
    customers: BTreeMap<Id, CustomerView>,
    /// Alert episodes in their current state, by (customer, rule, opening
    /// time): as in the store, not by the episode count.
    alerts: BTreeMap<(Id, Rule, EventTime), AlertRecord>,
    portfolio: Series<PortfolioRecord>,
    records: u64,
    version: u64,
    /// `[privacy] operator_retention` in ms; resolved champion_lost
    /// evidence older than it loses its operator.
    operator_retention: Option<u64>,
    /// The last retention cutoff applied (event time).
    retention_cutoff: EventTime,
    /// The customers of the customers file; `None`: no file, every
    /// customer. Records of another (the resolutions of a removed
    /// customer's alerts) are not shown.
    roster: Option<std::collections::HashSet<Id>>,
}

impl Default for View {
    fn default() -> Self {
        Self::new(DEFAULT_DAY_WINDOW)
    }
}

impl View {
    /// An empty view whose daily window has the label `day_window`.
    pub fn new(day_window: &str) -> Self {
        Self {
            day_window: day_window.into(),
            customers: BTreeMap::new(),
            alerts: BTreeMap::new(),
            portfolio: Series::new(HISTORY_DAYS),
            records: 0,
            version: 0,
            operator_retention: None,
            retention_cutoff: 0,
            roster: None,
        }
    }

    /// Resolved `champion_lost` episodes older than `retention` (event
    /// time, before the newest day held) are shown without their operator.
    pub fn set_operator_retention(&mut self, retention: std::time::Duration) {
        self.operator_retention = Some(retention.as_millis() as u64);
        self.expire_operators();
    }

    fn expire_operators(&mut self) {
        let Some(retention) = self.operator_retention else {
            return;
        };
        let newest = self.portfolio.last().map_or(0, |p| p.window_end);
        let cutoff = newest.saturating_sub(retention);
        if cutoff <= self.retention_cutoff {
            return;
        }
        self.retention_cutoff = cutoff;
        for alert in self.alerts.values_mut() {
            if alert.rule == Rule::ChampionLost && alert.resolved_at.is_some_and(|r| r < cutoff) {
                let expired = crate::privacy::expire_operator(&alert.evidence);
                if let std::borrow::Cow::Owned(text) = expired {
                    alert.evidence = text;
                }
            }
        }
    }

    /// Label of the daily window.
    pub fn day_window(&self) -> &str {
        &self.day_window
    }

    /// Records the customers file's facts; customers in it are listed even
    /// before their first record. A customer the file no longer names (a
    /// start in place keeps the view) goes, with its alerts, as it would
    /// at a fresh start.
    pub fn set_roster(&mut self, roster: &HashMap<String, CustomerSpec>) {
        if !roster.is_empty() {
            self.customers.retain(|id, _| roster.contains_key(&**id));
            self.alerts.retain(|(id, ..), _| roster.contains_key(&**id));
            self.roster = Some(roster.keys().map(|id| Id::from(id.as_str())).collect());
        }
        for (id, spec) in roster {
            let id: Id = id.as_str().into();
            self.customers.entry(id).or_default().info = Some(CustomerInfo::of(spec));
        }
        self.version += 1;
    }

    /// Takes in one batch of engine records.
    pub fn apply(&mut self, records: &[Output]) {
        for record in records {
            if let (Some(roster), Some(customer)) = (&self.roster, record.customer())
                && !roster.contains(customer)
            {
                continue;
            }
            self.apply_one(record);
        }
        self.expire_operators();
        self.records += records.len() as u64;
        self.version += 1;
    }

    fn customer(&mut self, id: &Id) -> &mut CustomerView {
        self.customers.entry(id.clone()).or_default()
    }

    fn cap_of(&self, window: &str) -> usize {
        if window == &*self.day_window {
            HISTORY_DAYS
        } else {
            HISTORY_HOURS
        }
    }

    fn apply_one(&mut self, record: &Output) {
        match record {
            Output::Customer(kpi) => {
                let cap = self.cap_of(&kpi.window);
                self.customer(&kpi.customer)
                    .kpis
                    .entry(kpi.window.clone())
                    .or_insert_with(|| Series::new(cap))
                    .insert(kpi.clone(), kpi.window_start, |r| r.window_start);
            }
            Output::Device(kpi) => {
                let daily = kpi.window == self.day_window;
                let device = self
                    .customer(&kpi.customer)
                    .devices
                    .entry(kpi.device.clone())
                    .or_insert_with(|| DeviceView {
                        site: kpi.site.clone(),
                        last_seen: 0,
                        last_state: MachineState::Unknown,
                        daily: Series::new(DEVICE_DAYS),
                        latest: None,
                    });
                if kpi.last_seen >= device.last_seen {
                    device.last_seen = kpi.last_seen;
                    device.last_state = kpi.last_state;
                    device.site = kpi.site.clone();
                    if !daily {
                        device.latest = Some(kpi.clone());
                    }
                }
                if daily {
                    device
                        .daily
                        .insert(kpi.clone(), kpi.window_start, |r| r.window_start);
                }
            }
            Output::Outcome(outcome) => {
                let cap = self.cap_of(&outcome.window);
                self.customer(&outcome.customer)
                    .outcomes
                    .entry((outcome.outcome.clone(), outcome.window.clone()))
                    .or_insert_with(|| Series::new(cap))
                    .insert(outcome.clone(), outcome.window_start, |r| r.window_start);
            }
            Output::Milestone(milestone) => {
                let milestones = &mut self.customer(&milestone.customer).milestones;
                match milestones.get(&milestone.milestone) {
                    Some(held) if held.window_start > milestone.window_start => {}
                    _ => {
                        milestones.insert(milestone.milestone.clone(), milestone.clone());
                    }
                }
            }
            Output::Health(health) => {
                self.customer(&health.customer)
                    .health
                    .get_or_insert_with(|| Series::new(HISTORY_DAYS))
                    .insert(HealthRecord::clone(health), health.window_start, |r| {
                        r.window_start
                    });
            }
            Output::Forecast(forecast) => {
                let held = &mut self.customer(&forecast.customer).forecast;
                if held
                    .as_ref()
                    .is_none_or(|h| h.window_start <= forecast.window_start)
                {
                    *held = Some(forecast.clone());
                }
            }
            Output::Alert(alert) => {
                self.customer(&alert.customer);
                let key = (alert.customer.clone(), alert.rule, alert.opened_at);
                // As in the store: an episode that resolved stays resolved.
                let keep_held = matches!(
                    self.alerts.get(&key),
                    Some(held) if held.status == AlertStatus::Resolved
                        && alert.status == AlertStatus::Open
                );
                if !keep_held {
                    self.alerts.insert(key, alert.clone());
                }
                self.trim_resolved_alerts();
            }
            Output::Portfolio(portfolio) => {
                self.portfolio
                    .insert(portfolio.clone(), portfolio.window_start, |r| {
                        r.window_start
                    });
            }
        }
    }

    /// Every record the view holds, of the customers `keep` keeps: applied
    /// to an empty view (with the same roster) they make the same view.
    /// What a snapshot of it stores.
    pub fn held(&self, keep: impl Fn(&str) -> bool) -> Vec<Output> {
        let mut out = Vec::new();
        for (_, c) in self.customers.iter().filter(|(id, _)| keep(id)) {
            let health = c.health.iter().flat_map(Series::iter);
            out.extend(health.cloned().map(Output::health));
            out.extend(c.forecast.iter().cloned().map(Output::Forecast));
            let kpis = c.kpis.values().flat_map(Series::iter);
            out.extend(kpis.cloned().map(Output::Customer));
            let outcomes = c.outcomes.values().flat_map(Series::iter);
            out.extend(outcomes.cloned().map(Output::Outcome));
            out.extend(c.milestones.values().cloned().map(Output::Milestone));
            for d in c.devices.values() {
                out.extend(d.daily.iter().cloned().map(Output::Device));
                out.extend(d.latest.iter().cloned().map(Output::Device));
            }
        }
        let alerts = self.alerts.iter().filter(|((c, ..), _)| keep(c));
        out.extend(alerts.map(|(_, a)| Output::Alert(a.clone())));
        out.extend(self.portfolio.iter().cloned().map(Output::Portfolio));
        out
    }

    fn trim_resolved_alerts(&mut self) {
        // Resolved and retracted episodes: done with.
        let resolved = self
            .alerts
            .values()
            .filter(|a| a.status != AlertStatus::Open)
            .count();
        if resolved <= MAX_RESOLVED_ALERTS {
            return;
        }
        let mut oldest: Vec<(EventTime, (Id, Rule, EventTime))> = self
            .alerts
            .iter()
            .filter(|(_, a)| a.status != AlertStatus::Open)
            .map(|(k, a)| (a.resolved_at.unwrap_or(a.opened_at), k.clone()))
            .collect();
        oldest.sort();
        for (_, key) in oldest.into_iter().take(resolved - MAX_RESOLVED_ALERTS) {
            self.alerts.remove(&key);
        }
    }

    /// Customers by id.
    pub fn customers(&self) -> &BTreeMap<Id, CustomerView> {
        &self.customers
    }

    /// One customer.
    pub fn customer_view(&self, id: &str) -> Option<&CustomerView> {
        self.customers.get(id)
    }

    /// Alert episodes in their current state, by customer, rule, opening
    /// time.
    pub fn alerts(&self) -> impl Iterator<Item = &AlertRecord> {
        self.alerts.values()
    }

    /// Open alert episodes of every customer ([`counts_as_open`]).
    pub fn open_alerts(&self) -> impl Iterator<Item = &AlertRecord> {
        self.alerts.values().filter(|a| counts_as_open(a))
    }

    /// Open alert episodes of one customer, oldest first.
    pub fn open_alerts_of(&self, customer: &str) -> Vec<&AlertRecord> {
        // The map is ordered by customer first: read only this one's range.
        let first_rule = Rule::ALL.iter().min().copied().unwrap_or(Rule::UsageDrop);
        let from: (Id, Rule, EventTime) = (customer.into(), first_rule, 0);
        let mut open: Vec<&AlertRecord> = self
            .alerts
            .range(from..)
            .take_while(|((c, _, _), _)| &**c == customer)
            .map(|(_, a)| a)
            .filter(|a| counts_as_open(a))
            .collect();
        open.sort_by_key(|a| (a.opened_at, a.rule));
        open
    }

    /// Portfolio figures, oldest day first.
    pub fn portfolio(&self) -> &Series<PortfolioRecord> {
        &self.portfolio
    }

    /// Records applied so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Changes with every batch applied: clients poll it to know when to
    /// fetch again.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Customers ranked by risk: revenue at stake first, then red before
    /// yellow before green, then the lowest score, then the most open
    /// alerts; customers without a health record yet come last, by id.
    pub fn ranked(&self) -> Vec<(&Id, &CustomerView)> {
        let mut ranked: Vec<(&Id, &CustomerView)> = self.customers.iter().collect();
        let mut open_count: HashMap<&str, usize> = HashMap::new();
        for a in self.open_alerts() {
            *open_count.entry(&*a.customer).or_default() += 1;
        }
        ranked.sort_by(|(a_id, a), (b_id, b)| {
            let key = |id: &str, c: &CustomerView| {
                let open = open_count.get(id).copied().unwrap_or(0);
                match c.latest_health() {
                    Some(h) => (
                        0u8,
                        !(h.arr_at_risk > 0.0 || open > 0),
                        severity(h),
                        h.score,
                        usize::MAX - open,
                    ),
                    None => (1, true, 3, f64::INFINITY, usize::MAX - open),
                }
            };
            let (ka, kb) = (key(a_id, a), key(b_id, b));
            ka.0.cmp(&kb.0)
                .then(ka.1.cmp(&kb.1))
                .then(ka.2.cmp(&kb.2))
                .then(ka.3.total_cmp(&kb.3))
                .then(ka.4.cmp(&kb.4))
                .then(a_id.cmp(b_id))
        });
        ranked
    }
}

/// 0 red, 1 yellow, 2 green.
fn severity(h: &HealthRecord) -> u8 {
    use fleetpulse_engine::kpi::health::Band;
    match h.band {
        Band::Red => 0,
        Band::Yellow => 1,
        Band::Green => 2,
    }
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::Totals;
    use fleetpulse_engine::kpi::health::{Band, Stage};

    use super::*;

    fn health(customer: &str, day: u64, score: f64, arr_at_risk: f64) -> HealthRecord {
        HealthRecord {
            customer: customer.into(),
            window_start: day * 86_400_000,
            window_end: (day + 1) * 86_400_000,
            score,
            band: Band::of(score),
            stage: Stage::Adopt,
            segment: Segment::HighTouch,
            arr: 100.0,
            arr_at_risk,
            days_since_activation: day as f64,
            days_to_renewal: 200.0,
            ..HealthRecord::default()
        }
    }

    fn alert(customer: &str, episode: u32, status: AlertStatus) -> AlertRecord {
        AlertRecord {
            customer: customer.into(),
            customer_name: customer.into(),
            rule: Rule::UsageDrop,
            episode,
            status,
            provisional: false,
            opened_at: 1000 * u64::from(episode),
            resolved_at: (status == AlertStatus::Resolved).then_some(5000),
            evidence: "hours down".into(),
            metric: 0.3,
            threshold: 0.25,
            stage: Stage::Adopt,
            segment: Segment::HighTouch,
            arr_at_risk: 100.0,
            next_action: "call".into(),
        }
    }

    /// A start in place keeps the view: a customer the customers file no
    /// longer names goes, with its alerts, as at a fresh start; the others
    /// keep what they showed.
    #[test]
    fn a_roster_without_a_customer_drops_it_and_its_alerts() {
        let spec = |id: &str| {
            let contract = fleetpulse_engine::Contract {
                arr: 100.0,
                start: 0,
                renewal: 400 * 86_400_000,
                devices_purchased: 1,
                operator_seats: 1,
            };
            (
                id.to_string(),
                CustomerSpec::new(id, Segment::HighTouch, contract),
            )
        };
        let mut view = View::default();
        view.set_roster(&[spec("a"), spec("b")].into_iter().collect());
        view.apply(&[
            Output::health(health("a", 0, 60.0, 0.0)),
            Output::health(health("b", 0, 40.0, 0.0)),
            Output::Alert(alert("a", 1, AlertStatus::Open)),
            Output::Alert(alert("b", 1, AlertStatus::Open)),
        ]);
        let kept = view.customer_view("a").unwrap().clone();
        view.set_roster(&[spec("a")].into_iter().collect());
        assert!(view.customer_view("b").is_none());
        assert!(view.open_alerts_of("b").is_empty());
        assert_eq!(view.open_alerts_of("a").len(), 1);
        let a = view.customer_view("a").unwrap();
        assert_eq!(format!("{a:?}"), format!("{kept:?}"));
        // No customers file (an empty roster): every customer stays.
        view.set_roster(&HashMap::new());
        assert!(view.customer_view("a").is_some());
    }

    #[test]
    fn series_replaces_same_start_keeps_order_and_bound() {
        let mut s: Series<(u64, &str)> = Series::new(3);
        for (start, v) in [(1, "a"), (3, "c"), (2, "b"), (3, "c2"), (4, "d")] {
            s.insert((start, v), start, |r| r.0);
        }
        let got: Vec<_> = s.iter().map(|r| r.1).collect();
        assert_eq!(got, ["b", "c2", "d"]);
        assert_eq!(s.tail(2).map(|r| r.1).collect::<Vec<_>>(), ["c2", "d"]);
    }

    #[test]
    fn history_is_bounded() {
        let mut view = View::default();
        let batch: Vec<Output> = (0..(HISTORY_DAYS as u64 + 30))
            .map(|d| Output::health(health("a", d, 60.0, 0.0)))
            .collect();
        view.apply(&batch);
        let c = view.customer_view("a").unwrap();
        assert_eq!(c.health.as_ref().unwrap().len(), HISTORY_DAYS);
        assert_eq!(
            c.latest_health().unwrap().window_start,
            (HISTORY_DAYS as u64 + 29) * 86_400_000
        );
    }

    /// As in the store, an episode is its opening time: an "episode 1"
    /// opened later (a count that started again) is another episode.
    #[test]
    fn episodes_are_told_apart_by_their_opening_time() {
        let mut view = View::default();
        let first = alert("a", 1, AlertStatus::Resolved);
        let recounted = AlertRecord {
            opened_at: 9000,
            ..alert("a", 1, AlertStatus::Open)
        };
        view.apply(&[
            Output::Alert(first.clone()),
            Output::Alert(recounted.clone()),
        ]);
        assert_eq!(
            view.alerts().cloned().collect::<Vec<_>>(),
            [first, recounted.clone()]
        );
        assert_eq!(view.open_alerts_of("a"), [&recounted]);
    }

    #[test]
    fn resolved_episode_stays_resolved_and_open_ones_are_listed() {
        let mut view = View::default();
        view.apply(&[Output::Alert(alert("a", 1, AlertStatus::Resolved))]);
        view.apply(&[Output::Alert(alert("a", 1, AlertStatus::Open))]);
        assert_eq!(view.alerts().count(), 1);
        assert!(view.open_alerts_of("a").is_empty());
        view.apply(&[Output::Alert(alert("a", 2, AlertStatus::Open))]);
        assert_eq!(view.open_alerts_of("a").len(), 1);
        // Another customer whose id starts the same is not mixed in.
        view.apply(&[Output::Alert(alert("ab", 1, AlertStatus::Open))]);
        view.apply(&[Output::Alert(alert("", 1, AlertStatus::Open))]);
        assert_eq!(view.open_alerts_of("a").len(), 1);
        assert_eq!(view.open_alerts_of("ab").len(), 1);
        assert_eq!(view.version(), 5);
    }

    #[test]
    fn ranking_puts_revenue_at_risk_then_red_first() {
        let mut view = View::default();
        view.apply(&[
            Output::health(health("green", 1, 90.0, 0.0)),
            Output::health(health("yellow-at-risk", 1, 70.0, 100.0)),
            Output::health(health("red", 1, 30.0, 100.0)),
            Output::health(health("yellow", 1, 60.0, 0.0)),
        ]);
        view.customer(&"no-data".into());
        let order: Vec<&str> = view.ranked().iter().map(|(id, _)| &***id).collect();
        assert_eq!(
            order,
            ["red", "yellow-at-risk", "yellow", "green", "no-data"]
        );
    }

    /// A retracted episode is kept (the dashboard shows it) but counts as
    /// open nowhere: not in the customer's open alerts, not in the open
    /// count that ranks customers, not as revenue at risk.
    #[test]
    fn a_retracted_episode_is_kept_but_not_counted_as_open() {
        let mut view = View::default();
        let retracted = AlertRecord {
            rule: Rule::DevicesDark,
            ..alert("quiet", 1, AlertStatus::Retracted)
        };
        view.apply(&[
            // Same health, no ARR at risk in either: only the open count
            // tells them apart.
            Output::health(health("quiet", 1, 60.0, 0.0)),
            Output::health(health("loud", 1, 60.0, 0.0)),
            Output::Alert(retracted.clone()),
            Output::Alert(alert("loud", 1, AlertStatus::Open)),
        ]);
        assert_eq!(view.alerts().count(), 2, "the retracted episode is kept");
        assert!(view.open_alerts_of("quiet").is_empty());
        assert_eq!(
            view.open_alerts().map(|a| &*a.customer).collect::<Vec<_>>(),
            ["loud"]
        );
        assert!(!counts_as_open(&retracted));
        let order: Vec<&str> = view.ranked().iter().map(|(id, _)| &***id).collect();
        assert_eq!(order, ["loud", "quiet"]);

        // An open episode later retracted, and a resolved one retracted
        // after it resolved: both leave the open count.
        let mut view = View::default();
        view.apply(&[Output::Alert(alert("a", 1, AlertStatus::Open))]);
        assert_eq!(view.open_alerts().count(), 1);
        view.apply(&[Output::Alert(alert("a", 1, AlertStatus::Retracted))]);
        view.apply(&[Output::Alert(alert("a", 2, AlertStatus::Resolved))]);
        view.apply(&[Output::Alert(alert("a", 2, AlertStatus::Retracted))]);
        assert_eq!(view.open_alerts().count(), 0);
        assert!(
            view.alerts().all(|a| a.status == AlertStatus::Retracted),
            "{:?}",
            view.alerts().collect::<Vec<_>>()
        );
    }

    #[test]
    fn devices_keep_the_newest_reading_and_daily_records() {
        let mut view = View::default();
        let device = |window: &str, start: u64, last_seen: u64| DeviceKpi {
            customer: "a".into(),
            site: "s".into(),
            device: "d1".into(),
            window: window.into(),
            window_start: start,
            window_end: start + 1,
            utilisation: 0.1,
            totals: Totals {
                operating_hours: 1.0,
                fault_count: 2,
                samples: 3,
                ..Totals::default()
            },
            distinct_operators: 1,
            last_seen,
            last_state: MachineState::Running,
            revision: 0,
        };
        view.apply(&[
            Output::Device(device("1h", 10, 50)),
            Output::Device(device("1d", 0, 40)),
        ]);
        let d = &view.customer_view("a").unwrap().devices["d1"];
        assert_eq!(d.last_seen, 50);
        assert_eq!(d.daily.len(), 1);
    }

    /// What a snapshot keeps: every record the view holds, which applied
    /// to an empty view make the same one (what the API shows of it), of
    /// the customers kept only.
    #[test]
    fn the_records_held_make_the_same_view_again() {
        let mut view = View::default();
        let mut records = Vec::new();
        for day in 0..130u64 {
            for c in ["a", "b"] {
                records.push(Output::health(health(c, day, 50.0 + day as f64 % 7.0, 0.0)));
            }
        }
        for (i, status) in [
            AlertStatus::Open,
            AlertStatus::Resolved,
            AlertStatus::Retracted,
        ]
        .into_iter()
        .enumerate()
        {
            records.push(Output::Alert(alert("a", i as u32 + 1, status)));
            records.push(Output::Alert(alert("b", i as u32 + 1, status)));
        }
        view.apply(&records);
        let held = view.held(|_| true);
        // Bounded as the view is: 120 days of health each, not 130.
        let health_held = held
            .iter()
            .filter(|r| matches!(r, Output::Health(_)))
            .count();
        assert_eq!(health_held, 2 * HISTORY_DAYS);
        let mut again = View::default();
        again.apply(&held);
        assert_eq!(again.held(|_| true), held);
        assert_eq!(again.ranked().len(), view.ranked().len());
        assert_eq!(again.alerts().count(), view.alerts().count());
        // Of the customers kept only.
        let only_a = view.held(|c| c == "a");
        assert!(!only_a.is_empty());
        assert!(only_a.iter().all(|r| match r {
            Output::Health(h) => &*h.customer == "a",
            Output::Alert(a) => &*a.customer == "a",
            _ => true,
        }));
    }
}
