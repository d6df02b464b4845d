//! The view after a restart. The view is fed by the fan-out, and a restart
//! writes nothing again that the stores already hold (the checkpoint), so a
//! restarted service would show no customer, health or open alert until
//! windows closed again: a day for health. When the service has a SQLite
//! store, the view is first filled from it with what it keeps (the newest
//! records of each customer, window, outcome and device, every open alert
//! episode and the newest resolved ones), before the first live record.
//! Every read walks a primary key's index, so the time it takes grows with
//! customers, devices and windows, not with the history stored.

use std::path::Path;

use fleetpulse_engine::{
    AlertRecord, CustomerKpi, DeviceKpi, EngineConfig, ForecastRecord, HealthRecord, OutcomeRecord,
    Output, PortfolioRecord,
};

use super::view::{DEVICE_DAYS, HISTORY_DAYS, HISTORY_HOURS, MAX_RESOLVED_ALERTS};
use crate::sinks::{SinkError, SqliteStore};

/// A cluster member's part of the records: those of the customers its
/// workers own (the engine's exchange by customer), and the portfolio when
/// it runs worker 0 (which gathers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Workers in the cluster.
    pub peers: u64,
    /// This member's workers: `first..first + workers`.
    pub first: u64,
    /// Workers per member.
    pub workers: u64,
}

impl Share {
    /// Member `process` of `processes`, each with `workers` workers (timely
    /// numbers a member's workers after those of the members before it).
    pub fn of_member(process: usize, processes: usize, workers: usize) -> Self {
        Self {
            peers: (processes * workers) as u64,
            first: (process * workers) as u64,
            workers: workers as u64,
        }
    }

    /// Whether this member's workers own `customer`'s records.
    pub fn owns(&self, customer: &str) -> bool {
        let owner = fleetpulse_engine::operators::customer_success::owner(customer, self.peers);
        (self.first..self.first + self.workers).contains(&owner)
    }

    /// Whether this member gathers the portfolio.
    pub fn gathers_portfolio(&self) -> bool {
        self.first == 0
    }
}

/// What the view held of the store at `path`, as records to apply: of the
/// customers of `engine`'s roster (of the store without one), whose day
/// window `engine` names.
pub fn from_store(
    path: &Path,
    engine: &EngineConfig,
    share: Option<&Share>,
) -> Result<Vec<Output>, SinkError> {
    let store = SqliteStore::open(path)?;
    let day = engine.day_window().map(|w| w.name.to_string());
    let kept = |window: &str| {
        if Some(window) == day.as_deref() {
            HISTORY_DAYS
        } else {
            HISTORY_HOURS
        }
    };
    // The roster's customers: one removed from the customers file is gone
    // from the dashboard after the restart, as it was before the view was
    // filled. Without a roster, every customer of the store.
    let mut customers: Vec<String> = engine.customers.keys().cloned().collect();
    if customers.is_empty() {
        customers = store.distinct("customer_kpi", "customer", &[])?;
        customers.extend(store.distinct("health", "customer", &[])?);
    }
    if let Some(share) = share {
        customers.retain(|c| share.owns(c));
    }
    customers.sort();
    customers.dedup();

    let mut out = Vec::new();
    for c in &customers {
        let c = c.as_str();
        for w in store.distinct("customer_kpi", "window", &[("customer", c)])? {
            let key = [("customer", c), ("window", w.as_str())];
            let kpis = store.newest::<CustomerKpi>(&key, kept(&w))?;
            out.extend(kpis.into_iter().map(Output::Customer));
        }
        for outcome in store.distinct("outcome", "outcome", &[("customer", c)])? {
            let key = [("customer", c), ("outcome", outcome.as_str())];
            for w in store.distinct("outcome", "window", &key)? {
                let key = [key[0], key[1], ("window", w.as_str())];
                let records = store.newest::<OutcomeRecord>(&key, kept(&w))?;
                out.extend(records.into_iter().map(Output::Outcome));
            }
        }
        for device in store.distinct("device_kpi", "device", &[("customer", c)])? {
            let key = [("customer", c), ("device", device.as_str())];
            for w in store.distinct("device_kpi", "window", &key)? {
                // The daily records the device page lists; of shorter
                // windows the newest, for the last reading and state.
                let n = if Some(w.as_str()) == day.as_deref() {
                    DEVICE_DAYS
                } else {
                    1
                };
                let key = [key[0], key[1], ("window", w.as_str())];
                let records = store.newest::<DeviceKpi>(&key, n)?;
                out.extend(records.into_iter().map(Output::Device));
            }
        }
        let health = store.newest::<HealthRecord>(&[("customer", c)], HISTORY_DAYS)?;
        out.extend(health.into_iter().map(Output::health));
        let forecast = store.newest::<ForecastRecord>(&[("customer", c)], 1)?;
        out.extend(forecast.into_iter().map(Output::Forecast));
        let milestones = store.latest_milestones(Some(c))?;
        out.extend(milestones.into_iter().map(Output::Milestone));
    }
    if share.is_none_or(Share::gathers_portfolio) {
        let portfolio = store.newest::<PortfolioRecord>(&[], HISTORY_DAYS)?;
        out.extend(portfolio.into_iter().map(Output::Portfolio));
    }
    let alerts = store.current_alerts(MAX_RESOLVED_ALERTS)?;
    let listed = |a: &AlertRecord| {
        customers
            .binary_search_by(|c| (**c).cmp(&*a.customer))
            .is_ok()
    };
    out.extend(alerts.into_iter().filter(listed).map(Output::Alert));
    Ok(out)
}
