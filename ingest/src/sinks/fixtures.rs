//! Sample KPI records shared by the sink tests.

use fleetpulse_engine::kpi::health::{Band, HealthComponents, HealthPoints, Stage};
use fleetpulse_engine::kpi::milestone::MilestoneStatus;
use fleetpulse_engine::kpi::outcome::Direction;
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::{
    AlertRecord, CustomerKpi, DeviceKpi, HealthRecord, MachineState, MilestoneRecord,
    OutcomeRecord, PortfolioRecord, Segment, Totals,
};

/// One day, ms.
pub(crate) const DAY: u64 = 86_400_000;

/// A customer record of the `1h` window starting at `start`.
pub(crate) fn customer(name: &str, start: u64, cycles: u64) -> CustomerKpi {
    CustomerKpi {
        customer: name.into(),
        window: "1h".into(),
        window_start: start,
        window_end: start + 3_600_000,
        devices_purchased: 4,
        reporting_devices: 3,
        active_devices: 2,
        utilisation: 0.25,
        totals: Totals {
            operating_hours: 3.0,
            idle_hours: 0.5,
            fuel_litres: 41.25,
            cycles,
            output_units: 120.0,
            manual_interventions: 7,
            fault_count: 1,
            samples: 360,
        },
        distinct_operators: 2,
        advanced_features_used: 1,
        advanced_feature_share: 1.0 / 3.0,
        ..CustomerKpi::default()
    }
}

/// A device record of customer `acme`, site `north-pit`, window `1h`.
pub(crate) fn device(name: &str, start: u64, state: MachineState) -> DeviceKpi {
    DeviceKpi {
        customer: "acme".into(),
        site: "north-pit".into(),
        device: name.into(),
        window: "1h".into(),
        window_start: start,
        window_end: start + 3_600_000,
        utilisation: 0.75,
        totals: Totals {
            operating_hours: 0.75,
            idle_hours: 0.25,
            fuel_litres: 12.5,
            cycles: 40,
            output_units: 30.0,
            manual_interventions: 2,
            fault_count: 0,
            samples: 120,
        },
        distinct_operators: 1,
        last_seen: start + 3_599_000,
        last_state: state,
        // Restated once: every store keeps the revision.
        revision: 1,
    }
}

/// Outcome `interventions` (at most 0.2) of `customer` over the `1d`
/// window starting at `start`, measured at `value`.
pub(crate) fn outcome(customer: &str, start: u64, value: f64) -> OutcomeRecord {
    OutcomeRecord {
        customer: customer.into(),
        outcome: "interventions".into(),
        window: "1d".into(),
        window_start: start,
        window_end: start + DAY,
        value,
        target: 0.2,
        direction: Direction::AtMost,
        met: value <= 0.2,
        consecutive_met: 3,
        consecutive_missed: 0,
    }
}

/// Milestone `name` of `acme` on the day starting at `start`.
pub(crate) fn milestone(name: &str, position: u32, start: u64) -> MilestoneRecord {
    MilestoneRecord {
        customer: "acme".into(),
        milestone: name.into(),
        position,
        value_milestone: position == 2,
        window_start: start,
        window_end: start + DAY,
        due_at: 30 * DAY,
        reached_at: None,
        status: MilestoneStatus::Pending,
    }
}

/// Health of `customer` on the day starting at `start`.
pub(crate) fn health(customer: &str, start: u64, score: f64) -> HealthRecord {
    HealthRecord {
        customer: customer.into(),
        window_start: start,
        window_end: start + DAY,
        score,
        band: Band::of(score),
        score_trend: -4.5,
        components: HealthComponents {
            depth: 25.0,
            breadth: 80.0,
            utilisation: 62.5,
            outcome: Some(100.0),
            reliability: 90.0,
            trend: 40.0,
            maturity: None,
        },
        moved_1d: HealthPoints {
            utilisation: -1.5,
            trend: -0.75,
            reliability: 0.25,
            ..HealthPoints::default()
        },
        moved_7d: HealthPoints {
            utilisation: -3.0,
            trend: -2.5,
            depth: 1.0,
            ..HealthPoints::default()
        },
        stage: Stage::Adopt,
        segment: Segment::HighTouch,
        arr: 250_000.0,
        arr_at_risk: 0.0,
        open_alerts: 1,
        days_since_activation: 42.0,
        days_to_renewal: 323.0,
        time_to_value_days: Some(12.0),
        usage_growth: -0.125,
        milestones_reached: 2,
        milestones_total: 4,
        provisional: false,
    }
}

/// The open record of episode `episode` of `usage_drop` for `customer`,
/// opened at `opened_at`.
pub(crate) fn alert(customer: &str, episode: u32, opened_at: u64) -> AlertRecord {
    AlertRecord {
        customer: customer.into(),
        customer_name: "Acme \"Quarry\" Ltd".into(),
        rule: Rule::UsageDrop,
        episode,
        status: AlertStatus::Open,
        provisional: false,
        opened_at,
        resolved_at: None,
        evidence: "operating hours 31% below the 28-day baseline (12.0 h/day against 17.4)".into(),
        metric: 0.31,
        threshold: 0.2,
        stage: Stage::Adopt,
        segment: Segment::HighTouch,
        arr_at_risk: 250_000.0,
        next_action: Rule::UsageDrop.next_action().into(),
    }
}

/// `alert` resolved at `resolved_at`.
pub(crate) fn resolved(mut alert: AlertRecord, resolved_at: u64) -> AlertRecord {
    alert.status = AlertStatus::Resolved;
    alert.resolved_at = Some(resolved_at);
    alert.evidence = "operating hours 5% below the 28-day baseline".into();
    alert.metric = 0.05;
    alert.threshold = 0.1;
    alert
}

/// Portfolio figures of the UTC day starting at `start`.
pub(crate) fn portfolio(start: u64, customers: u32) -> PortfolioRecord {
    PortfolioRecord {
        window_start: start,
        window_end: start + DAY,
        customers,
        arr_total: 1_500_000.0,
        arr_at_risk: 400_000.0,
        green: 3,
        yellow: 2,
        red: 1,
        managed_customers: 2,
        managed_usage_growth: 0.05,
        unmanaged_usage_growth: -0.02,
        managed_outcome_attainment: 80.0,
        unmanaged_outcome_attainment: 55.5,
        revision: 0,
    }
}

/// A tech-touch customer still onboarding: no outcome evaluated yet, a
/// maturity score from outside telemetry, no time to value yet.
pub(crate) fn onboarding_health(customer: &str, start: u64, score: f64) -> HealthRecord {
    let mut h = health(customer, start, score);
    h.components.outcome = None;
    h.components.maturity = Some(70.0);
    h.time_to_value_days = None;
    h.segment = Segment::TechTouch;
    h.stage = Stage::Onboard;
    h
}
