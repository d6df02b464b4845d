//! The projected forecast (`forecast_method = "projection"`): instead of
//! extending the line of past scores, it extends the day-by-day figures the
//! score is made of (operating hours, utilisation, machines at work, faults),
//! each freed of its weekday pattern, and runs the score's own arithmetic
//! over the projected days.
//!
//! Why: the score is a mean of 7-day windows and a 7-against-28-day usage
//! trend, so it follows the fleet's days a week late. A trend of scores
//! cannot tell a fall that has levelled off in the days from one that goes
//! on; the days can. When the days have already fallen, the score has yet to
//! follow, and this method says how far it will; when they have stopped
//! falling, it does not extend the score's fall.
//!
//! Uncertainty: each figure's forecast error comes from its one-day-ahead
//! errors over the fit. A scenario moves every projected figure by `z` of
//! its own error, the same `z` for all (the worst case of how they vary
//! together), towards a better score for a larger `z`. The score never falls
//! when a figure improves, so the probability of a red day within `N` days
//! is Φ(z*) for the `z*` at which the scenario's path just touches red, and
//! the 80% band is the paths at z = ±1.28.

use std::collections::VecDeque;

use super::forecast::{self, HORIZON_DAYS, MAX_FIT_DAYS, MIN_FIT_DAYS, Method, Outlook, median};
use super::health;
use super::journey::{Day, components_of};
use crate::customer::CustomerSpec;

/// Smoothing of a figure's level.
const ALPHA: f64 = 0.5;
/// Smoothing of a figure's slope.
const BETA: f64 = 0.15;
/// Share of a figure's slope kept from one day to the next: a change goes on
/// for a while and then levels off (0.8 and 0.95 tried: BENCHMARKS.md
/// section 8).
const DAMPING: f64 = 0.9;
/// Share of a day's own scatter in a 7-day window's: the scenarios move the
/// level, and a week of days averages most of a day's noise out.
const DAY_NOISE: f64 = 1.0 / 7.0;
/// A weekday whose figure is below this share of the week's mean (a fleet's
/// Sunday) says too little about the level: it is not fitted to.
const QUIET_WEEKDAY: f64 = 0.25;
/// Days the score's windows reach back (the usage trend's 7 + 28).
const SCORE_DAYS: usize = 35;
/// z of the 80% central band.
const BAND_Z: f64 = 1.281_551_565_545;
/// Scenarios tried when searching the `z` at which red is just touched.
const SEARCH_STEPS: usize = 24;
/// Most standard errors a scenario moves the figures.
const Z_MAX: f64 = 4.0;

/// The figures projected; the others of a day repeat the same weekday of the
/// week before (advanced features, outcomes).
#[derive(Clone, Copy)]
enum Figure {
    OperatingHours,
    Utilisation,
    ActiveDevices,
    Faults,
}

impl Figure {
    const ALL: [Self; 4] = [
        Self::OperatingHours,
        Self::Utilisation,
        Self::ActiveDevices,
        Self::Faults,
    ];

    fn of(self, day: &Day) -> f64 {
        match self {
            Self::OperatingHours => day.operating_hours,
            Self::Utilisation => day.utilisation,
            Self::ActiveDevices => f64::from(day.active_devices),
            Self::Faults => day.fault_count as f64,
        }
    }

    fn set(self, day: &mut Day, value: f64, purchased: f64) {
        let value = value.max(0.0);
        match self {
            Self::OperatingHours => day.operating_hours = value,
            Self::Utilisation => day.utilisation = value.min(1.0),
            Self::ActiveDevices => day.active_devices = value.min(purchased).round() as u32,
            Self::Faults => day.fault_count = value.round() as u64,
        }
    }

    /// +1 when more of it raises the score, -1 when it lowers it.
    fn better(self) -> f64 {
        match self {
            Self::Faults => -1.0,
            _ => 1.0,
        }
    }
}

/// One figure's damped local trend, fitted to its weekday-adjusted days.
struct Trend {
    /// Weekday factors by day index modulo 7 (index of the newest day
    /// first): the figure's mean on that weekday over its mean.
    weekday: [f64; 7],
    level: f64,
    slope: f64,
    /// Robust scale of the one-day-ahead errors.
    spread: f64,
}

impl Trend {
    /// Fitted to `values`, oldest first; the weekday pattern from the last
    /// up to 28 of them.
    fn fit(values: &[f64], fit_days: usize) -> Self {
        let n = values.len();
        // phase(i): days before the newest, modulo 7.
        let phase = |i: usize| (n - 1 - i) % 7;
        // Each whole week of the last four (ending with the newest day)
        // gives each weekday its share of that week; the median over the
        // weeks, so a week that held a fall or a holiday does not bend it.
        let weeks = (n / 7).min(4);
        let mut weekday = [1.0; 7];
        for (k, factor) in weekday.iter_mut().enumerate() {
            let mut shares: Vec<f64> = (0..weeks)
                .filter_map(|w| {
                    let week = &values[n - 7 * (w + 1)..n - 7 * w];
                    let mean = week.iter().sum::<f64>() / 7.0;
                    // Phase k of this week: k days before its newest.
                    (mean > f64::EPSILON).then(|| week[6 - k] / mean)
                })
                .collect();
            if !shares.is_empty() {
                *factor = median(&mut shares);
            }
        }
        let adjusted: Vec<f64> = (n.saturating_sub(fit_days)..n)
            .filter(|i| weekday[phase(*i)] >= QUIET_WEEKDAY)
            .map(|i| values[i] / weekday[phase(i)])
            .collect();
        let start = adjusted.len().clamp(1, 7);
        let mut first: Vec<f64> = adjusted.iter().take(start).copied().collect();
        let mut level = median(&mut first);
        let mut slope = 0.0;
        let mut errors = Vec::with_capacity(adjusted.len());
        for &value in adjusted.iter().skip(start) {
            let error = value - (level + DAMPING * slope);
            errors.push(error.abs());
            level += DAMPING * slope + ALPHA * error;
            slope = DAMPING * slope + BETA * error;
        }
        // A floor: a perfectly steady history is not a certain future.
        let spread = (1.4826 * median(&mut errors)).max(0.02 * level.abs());
        Self {
            weekday,
            level,
            slope,
            spread,
        }
    }

    /// The figure `h` days after the newest, its level moved by `z` of its
    /// error (`sign` says which way is better).
    fn at(&self, h: usize, z: f64, sign: f64) -> f64 {
        let mut damped = 0.0;
        let mut phi = 1.0;
        // Σ_{i=1..h} φ^i and the level's accumulated error.
        let mut variance = DAY_NOISE;
        for j in 1..=h {
            phi *= DAMPING;
            damped += phi;
            if j < h {
                variance += (ALPHA + BETA * damped).powi(2);
            }
        }
        let mean = self.level + self.slope * damped + sign * z * self.spread * variance.sqrt();
        // The newest day is phase 0, the day before phase 1: h days on is
        // phase -h.
        mean.max(0.0) * self.weekday[(7 - h % 7) % 7]
    }
}

/// The outlook of the customer `spec` from its closed `days` (newest last),
/// the trends fitted to the last `fit_days`; `None` with fewer than
/// [`MIN_FIT_DAYS`].
pub(crate) fn outlook(
    days: &VecDeque<Day>,
    spec: &CustomerSpec,
    fit_days: usize,
) -> Option<Outlook> {
    let fit_days = fit_days.clamp(MIN_FIT_DAYS, MAX_FIT_DAYS);
    if days.len() < MIN_FIT_DAYS {
        return None;
    }
    let days: Vec<&Day> = days.iter().collect();
    let trends: Vec<(Figure, Trend)> = Figure::ALL
        .into_iter()
        .map(|f| {
            let values: Vec<f64> = days.iter().map(|d| f.of(d)).collect();
            (f, Trend::fit(&values, fit_days))
        })
        .collect();
    let forecast_days = spec.thresholds.forecast_days;
    let horizon = HORIZON_DAYS.max(forecast_days) as usize;
    let base: VecDeque<Day> = days[days.len().saturating_sub(SCORE_DAYS)..]
        .iter()
        .map(|d| Day {
            operator_hours: Default::default(),
            ..(*d).clone()
        })
        .collect();
    let purchased = f64::from(spec.contract.devices_purchased);
    // The score path of scenario z, today first.
    let path = |z: f64, until: usize| -> Vec<f64> {
        let mut window = base.clone();
        let mut scores = vec![health::score(
            &components_of(&window, spec, 0),
            &spec.weights,
        )];
        for h in 1..=until {
            let mut day = window[window.len().saturating_sub(7)].clone();
            for (figure, trend) in &trends {
                figure.set(&mut day, trend.at(h, z, figure.better()), purchased);
            }
            window.push_back(day);
            if window.len() > SCORE_DAYS {
                window.pop_front();
            }
            scores.push(health::score(
                &components_of(&window, spec, 0),
                &spec.weights,
            ));
        }
        scores
    };
    let expected = path(0.0, horizon);
    let low = path(-BAND_Z, horizon);
    let high = path(BAND_Z, horizon);
    let probability_red = probability_red(|z| path(z, forecast_days as usize));
    Some(Outlook {
        method: Method::Projection,
        fitted_days: fit_days.min(days.len()) as u32,
        slope: (expected[7.min(horizon)] - expected[0]) / 7.0,
        days_to_red: Outlook::days_to_red_of(&expected[..=HORIZON_DAYS as usize]),
        expected,
        low,
        high,
        probability_red,
    })
}

/// Φ(z*) for the largest `z*` whose path (from `path`) has a red day after
/// today: the paths fall as `z` falls.
fn probability_red(path: impl Fn(f64) -> Vec<f64>) -> f64 {
    let red = |z: f64| path(z).iter().skip(1).any(|s| *s < forecast::RED_LINE);
    if !red(-Z_MAX) {
        return 0.0;
    }
    if red(Z_MAX) {
        return 1.0;
    }
    let (mut lo, mut hi) = (-Z_MAX, Z_MAX);
    for _ in 0..SEARCH_STEPS {
        let mid = (lo + hi) / 2.0;
        if red(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    forecast::normal_cdf((lo + hi) / 2.0)
}

#[cfg(test)]
mod tests {
    use crate::config::DAY_MS;
    use crate::kpi::forecast::{ForecastRecord, Method};
    use crate::kpi::health::HealthRecord;
    use crate::kpi::journey::Journey;
    use crate::kpi::{CustomerKpi, Output, fleet_days};

    const DEVICES: u32 = 20;

    /// Weekday use of a fleet that works Monday to Friday, a little on
    /// Saturday, hardly on Sunday (day 0 a Monday).
    fn weekday(d: u64) -> f64 {
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.35, 0.05][(d % 7) as usize]
    }

    /// The day `d` of a fleet of 20 machines using `share` of its capacity
    /// that day (the weekday pattern applied), no faults.
    fn day(d: u64, share: f64) -> CustomerKpi {
        fleet_days::day(d, DEVICES, (share * weekday(d)).clamp(0.0, 1.0), 0.25)
    }

    /// Closes `days` days of `share(d)`, the forecast drawn by projection:
    /// each day's health and forecast.
    fn run(share: impl Fn(u64) -> f64, days: u64) -> Vec<(HealthRecord, Option<ForecastRecord>)> {
        let mut spec = fleet_days::spec(DEVICES);
        spec.thresholds.forecast_method = Method::Projection;
        let mut journey = Journey::new(spec);
        let mut result = Vec::new();
        for d in 0..days {
            let mut out = Vec::new();
            journey.close_day(&day(d, share(d)), &mut out);
            let health = out.iter().find_map(|o| match o {
                Output::Health(h) => Some(HealthRecord::clone(h)),
                _ => None,
            });
            let forecast = out.into_iter().find_map(|o| match o {
                Output::Forecast(f) => Some(f),
                _ => None,
            });
            result.push((health.expect("a health record a day"), forecast));
        }
        result
    }

    #[test]
    fn a_steady_fleet_with_a_weekly_rhythm_is_expected_to_stay_where_it_is() {
        // Any weekday landing on the wrong day of the projected week would
        // move the 7-day windows of the first six projected days.
        let days = run(|_| 0.8, 60);
        for (health, forecast) in &days[40..] {
            let f = forecast.as_ref().expect("a forecast");
            assert_eq!(f.method, Method::Projection);
            for expected in [f.expected_7, f.expected_14, f.expected_30] {
                assert!(
                    (expected - health.score).abs() < 1.0,
                    "day {}: score {:.2}, expected {expected:.2}",
                    health.window_start / DAY_MS,
                    health.score
                );
            }
            assert!(f.low_7 <= f.expected_7 && f.expected_7 <= f.high_7);
            assert!(f.low_30 <= f.expected_30 && f.expected_30 <= f.high_30);
            assert!(f.probability_red < 0.01, "{f:?}");
            assert_eq!(f.days_to_red, None);
        }
    }

    #[test]
    fn a_fall_the_score_has_yet_to_follow_is_foreseen() {
        // Full use, then within four days down to a quarter, and there it
        // stays: the 7-day windows take a week to follow, the usage trend
        // longer.
        let share = |d: u64| match d {
            0..42 => 0.9,
            42..46 => 0.9 - 0.16 * (d - 41) as f64,
            _ => 0.26,
        };
        let days = run(share, 70);
        // Independently of the forecast: the first red day of the fold.
        let red = days
            .iter()
            .position(|(h, _)| h.score < 50.5)
            .expect("the fall turns red");
        // Two days into the fall, red is foreseen with confidence, while
        // the score itself has lost under 8 points.
        let (today, forecast) = &days[44];
        let f = forecast.as_ref().unwrap();
        assert!(today.score > days[40].0.score - 8.0);
        assert!(f.probability_red >= 0.8, "{f:?}");
        assert!(red >= 44 + 4, "red on day {red}");
        let days_to_red = f.days_to_red.expect("red expected");
        assert!(days_to_red <= (red - 44) as f64, "{days_to_red}");
        // Once the days have stopped falling, the expected score a week on
        // is what the fold then gave, within 5 points, and in the band.
        for d in 51..60 {
            let f = days[d].1.as_ref().unwrap();
            let then = days[d + 7].0.score;
            assert!(
                (f.expected_7 - then).abs() < 5.0,
                "day {d}: expected {:.1} a week on, it was {then:.1}",
                f.expected_7
            );
            assert!(
                f.low_7 <= then && then <= f.high_7,
                "day {d}: {then:.1} {f:?}"
            );
        }
    }

    #[test]
    fn the_probability_of_red_grows_with_the_fall() {
        let probability = |floor: f64| {
            let days = run(
                |d| match d {
                    0..42 => 0.9,
                    42..48 => 0.9 - (0.9 - floor) * (d - 41) as f64 / 6.0,
                    _ => floor,
                },
                49,
            );
            days[48].1.as_ref().unwrap().probability_red
        };
        let ps: Vec<f64> = [0.8, 0.6, 0.4, 0.2, 0.05]
            .into_iter()
            .map(probability)
            .collect();
        assert!(ps.windows(2).all(|w| w[0] <= w[1]), "{ps:?}");
        assert!(ps[0] < 0.05 && ps[4] > 0.95, "{ps:?}");
    }
}
