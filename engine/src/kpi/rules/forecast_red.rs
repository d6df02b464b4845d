//! forecast_red: the health forecast (`kpi::forecast`) says the score turns
//! red within `forecast_days`, with at least `forecast_confidence`, while it
//! is not red yet. Resolves when the probability falls under
//! `forecast_resolve`, or when the score turns red (health_red takes over).

use super::{Today, verdict};
use crate::kpi::forecast;
use crate::kpi::health::Band;
use crate::kpi::risk::Reading;

/// Days over which the evidence names the component that moved the score
/// most: the journey's days still hold that week's full usage baseline.
const DRIVER_DAYS: usize = 7;

pub(super) fn reading(today: &Today<'_>) -> Option<Reading> {
    let t = today.thresholds();
    let f = today.forecast.filter(|_| today.settled)?;
    let probability = f.probability_red;
    let red = today.band == Band::Red;
    let journey = today.journey;
    let driver = forecast::driver(
        &journey.components_back(DRIVER_DAYS),
        &journey.components_back(0),
        &journey.spec().weights,
    );
    let driven = match driver {
        Some((name, points)) => {
            format!("; driven by {name} ({points:+.1} points of score over {DRIVER_DAYS} days)")
        }
        None => String::new(),
    };
    let when = match f.days_to_red {
        Some(days) => format!("red (50 or below) expected in {days:.0} days"),
        None => format!("red not expected within {} days", forecast::HORIZON_DAYS),
    };
    let (low, high) = f.band(t.forecast_days);
    Some(Reading {
        breached: verdict(
            !red && probability >= t.forecast_confidence,
            red || probability < t.forecast_resolve,
        ),
        metric: probability,
        threshold: t.forecast_confidence,
        evidence: format!(
            "health score {score:.0}, trend {slope:+.1} points a day over {n} days: {when}; \
             {p:.0}% probability of red within {days} days (score then {low:.0}-{high:.0}, 80% band){driven}",
            score = today.score,
            slope = f.slope,
            n = f.fitted_days,
            p = probability * 100.0,
            days = t.forecast_days,
        ),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::DAY_MS;
    use crate::kpi::health::{Band, HealthRecord};
    use crate::kpi::journey::Journey;
    use crate::kpi::risk::{AlertRecord, AlertStatus, Rule};
    use crate::kpi::{Output, fleet_days};

    const DEVICES: u32 = 10;

    /// A fleet of 10 machines whose day `d` has `share(d)` of them at work
    /// (utilisation scaled alike), with a little day-to-day noise that
    /// depends on `salt`, two advanced features and no faults.
    fn run(
        share: impl Fn(u64) -> f64,
        days: u64,
        salt: u64,
    ) -> (Vec<HealthRecord>, Vec<AlertRecord>) {
        let mut journey = Journey::new(fleet_days::spec(DEVICES));
        let mut out = Vec::new();
        for d in 0..days {
            // Deterministic noise within +-4% of the share.
            let noise = ((d.wrapping_mul(2_654_435_761) ^ salt) % 81) as f64 / 1000.0 - 0.04;
            let share = (share(d) + noise).clamp(0.0, 1.0);
            let kpi = fleet_days::day(d, DEVICES, share, 0.2);
            journey.close_day(&kpi, &mut out);
        }
        let (mut health, mut alerts) = (Vec::new(), Vec::new());
        for o in out {
            match o {
                Output::Health(h) => health.push(*h),
                Output::Alert(a) => alerts.push(a),
                _ => {}
            }
        }
        (health, alerts)
    }

    fn opened(alerts: &[AlertRecord], rule: Rule) -> Vec<u64> {
        alerts
            .iter()
            .filter(|a| a.rule == rule && a.status == AlertStatus::Open)
            .map(|a| a.opened_at / DAY_MS)
            .collect()
    }

    /// Least squares over the last 21 scores: the plain reference trend.
    fn least_squares_days_to_red(scores: &[f64]) -> Option<f64> {
        let y = &scores[scores.len() - 21..];
        let n = y.len() as f64;
        let mx = (n - 1.0) / 2.0;
        let my = y.iter().sum::<f64>() / n;
        let sxy: f64 = y
            .iter()
            .enumerate()
            .map(|(i, y)| (i as f64 - mx) * (y - my))
            .sum();
        let sxx: f64 = (0..y.len()).map(|i| (i as f64 - mx).powi(2)).sum();
        let slope = sxy / sxx;
        let today = my + slope * (n - 1.0 - mx);
        (slope < 0.0).then(|| (50.5 - today) / slope)
    }

    #[test]
    fn a_steady_decline_is_forecast_ahead_of_red() {
        for salt in [1, 7, 42, 1234, 99_991] {
            // Full use for 40 days, then 1.5 points of share lost a day.
            let (health, alerts) = run(
                |d| {
                    if d < 40 {
                        1.0
                    } else {
                        1.0 - 0.015 * (d - 40) as f64
                    }
                },
                110,
                salt,
            );
            // Independently of the rules: the first day the score is red.
            let red_day = health
                .iter()
                .find(|h| h.band == Band::Red)
                .map(|h| h.window_end / DAY_MS)
                .expect("the decline turns red");
            let forecast = opened(&alerts, Rule::ForecastRed);
            let first = *forecast.first().expect("forecast_red opens");
            assert!(
                first + 7 <= red_day,
                "salt {salt}: forecast on day {first}, red on {red_day}"
            );
            assert_eq!(opened(&alerts, Rule::HealthRed).first(), Some(&red_day));
            // The plain least-squares trend on that day also sees red coming
            // within the horizon.
            let scores: Vec<f64> = health
                .iter()
                .take_while(|h| h.window_end / DAY_MS <= first)
                .map(|h| h.score)
                .collect();
            let days = least_squares_days_to_red(&scores).expect("falling");
            assert!(
                days <= 21.0 + 7.0,
                "salt {salt}: least squares says {days:.1} days"
            );
            // Resolved once red: health_red took over.
            let resolved = alerts
                .iter()
                .find(|a| a.rule == Rule::ForecastRed && a.status == AlertStatus::Resolved)
                .expect("resolves");
            assert_eq!(resolved.resolved_at, Some(red_day * DAY_MS));
            let open = alerts.iter().find(|a| a.rule == Rule::ForecastRed).unwrap();
            assert!(open.evidence.contains("driven by"), "{}", open.evidence);
        }
    }

    #[test]
    fn steady_and_growing_customers_are_never_forecast_red() {
        for salt in [1, 7, 42, 1234, 99_991] {
            for grow in [0.0, 0.002] {
                let (health, alerts) = run(|d| (0.75 + grow * d as f64).min(1.0), 110, salt);
                assert!(health.iter().all(|h| h.band != Band::Red));
                assert!(
                    opened(&alerts, Rule::ForecastRed).is_empty(),
                    "salt {salt}, growth {grow}: {alerts:?}"
                );
            }
        }
    }
}
