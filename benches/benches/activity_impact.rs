//! The impact of CS activities (`/api/impact`, on the dashboard's home
//! page): difference in differences over every touchpoint against the
//! comparable customers, for fleets of 500, 2,000 and 10,000 customers with 180
//! days each and four touchpoints per customer.

use std::collections::BTreeMap;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse_engine::Segment;
use fleetpulse_engine::kpi::activity_impact::{DEFAULT_WINDOW_DAYS, DailyUsage, impact};
use fleetpulse_engine::kpi::health::Stage;
use fleetpulse_engine::kpi::touchpoint::{Touchpoint, TouchpointKind};

const DAY_MS: u64 = 86_400_000;
const DAYS: u64 = 180;

/// `customers` customers over three segments and two stages, with hours
/// and attainment every day (a deterministic wobble), and four
/// touchpoints each spread over days 40 to 140.
fn fleet(customers: usize) -> (Vec<Touchpoint>, Vec<DailyUsage>) {
    let start = 1_767_225_600_000; // 2026-01-01
    let segments = [Segment::HighTouch, Segment::LowTouch, Segment::TechTouch];
    let mut usage = Vec::new();
    let mut touchpoints = Vec::new();
    for c in 0..customers {
        let id: fleetpulse_engine::Id = format!("c{c:05}").into();
        let day = |d: u64| start + d * DAY_MS;
        let wobble = |d: u64| ((c as u64 * 7919 + d * 104_729) % 97) as f64;
        usage.push(DailyUsage {
            customer: id.clone(),
            segment: segments[c % 3],
            hours: (0..DAYS).map(|d| (day(d), 50.0 + wobble(d))).collect(),
            stages: (0..DAYS)
                .map(|d| {
                    (
                        day(d),
                        if (c + d as usize / 60).is_multiple_of(2) {
                            Stage::Adopt
                        } else {
                            Stage::Grow
                        },
                    )
                })
                .collect(),
            attainment: (0..DAYS)
                .map(|d| (day(d), wobble(d)))
                .collect::<BTreeMap<_, _>>(),
        });
        for t in 0..4u64 {
            touchpoints.push(Touchpoint {
                customer: id.clone(),
                kind: TouchpointKind::ALL[(c + t as usize) % TouchpointKind::ALL.len()],
                at: day(40 + (c as u64 * 13 + t * 29) % 100),
                csm: "csm".into(),
                attendees: String::new(),
                decision_maker_present: false,
                notes: String::new(),
                recorded_by: "bench".into(),
            });
        }
    }
    (touchpoints, usage)
}

fn activity_impact(c: &mut Criterion) {
    let mut group = c.benchmark_group("activity_impact");
    group.sample_size(10);
    for customers in [500, 2_000, 10_000] {
        let (touchpoints, usage) = fleet(customers);
        group.throughput(Throughput::Elements(touchpoints.len() as u64));
        group.bench_with_input(BenchmarkId::new("impact", customers), &customers, |b, _| {
            b.iter(|| std::hint::black_box(impact(&touchpoints, &usage, DEFAULT_WINDOW_DAYS)))
        });
    }
    group.finish();
}

criterion_group!(benches, activity_impact);
criterion_main!(benches);
