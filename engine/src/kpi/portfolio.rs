//! Portfolio figures over all customers for one day: ARR at risk, customers
//! per band, and managed (high-touch) against unmanaged accounts, which is
//! how a CS leader shows what the team is worth.

use serde::{Deserialize, Serialize};

use super::health::{Band, HealthRecord};
use crate::customer::Segment;
use crate::model::EventTime;

/// One day of portfolio figures. Field names are store field names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PortfolioRecord {
    /// 00:00 UTC of the date (each customer's local day of it), ms.
    pub window_start: EventTime,
    /// 24 hours later, ms.
    pub window_end: EventTime,
    /// Customers with a health record that day.
    pub customers: u32,
    /// Their ARR.
    pub arr_total: f64,
    /// ARR of customers in red or with an open alert.
    pub arr_at_risk: f64,
    /// Customers in the green band.
    pub green: u32,
    /// Customers in the yellow band.
    pub yellow: u32,
    /// Customers in the red band.
    pub red: u32,
    /// High-touch customers (managed by a named CS manager).
    pub managed_customers: u32,
    /// Mean usage growth of managed customers (7 days against 28).
    pub managed_usage_growth: f64,
    /// Mean usage growth of the other customers.
    pub unmanaged_usage_growth: f64,
    /// Mean outcome attainment (0-100) of managed customers with outcomes.
    pub managed_outcome_attainment: f64,
    /// Mean outcome attainment of the other customers with outcomes.
    pub unmanaged_outcome_attainment: f64,
    /// 0 when first written; raised each time a customer's health of the
    /// date was restated (late telemetry, a changed definition).
    pub revision: u32,
}

/// Folds one day's health records (one per customer, in customer order:
/// the sums then come out the same, bit for bit, wherever they are folded)
/// into portfolio figures.
pub fn portfolio(start: EventTime, end: EventTime, health: &[HealthRecord]) -> PortfolioRecord {
    let mut record = PortfolioRecord {
        window_start: start,
        window_end: end,
        ..PortfolioRecord::default()
    };
    let (mut growth, mut attainment) = ([(0.0, 0u32); 2], [(0.0, 0u32); 2]);
    for h in health {
        record.customers += 1;
        record.arr_total += h.arr;
        record.arr_at_risk += h.arr_at_risk;
        match h.band {
            Band::Green => record.green += 1,
            Band::Yellow => record.yellow += 1,
            Band::Red => record.red += 1,
        }
        let group = usize::from(h.segment != Segment::HighTouch);
        if group == 0 {
            record.managed_customers += 1;
        }
        growth[group].0 += h.usage_growth;
        growth[group].1 += 1;
        if let Some(outcome) = h.components.outcome {
            attainment[group].0 += outcome;
            attainment[group].1 += 1;
        }
    }
    let mean = |(sum, n): (f64, u32)| if n == 0 { 0.0 } else { sum / f64::from(n) };
    record.managed_usage_growth = mean(growth[0]);
    record.unmanaged_usage_growth = mean(growth[1]);
    record.managed_outcome_attainment = mean(attainment[0]);
    record.unmanaged_outcome_attainment = mean(attainment[1]);
    record
}
