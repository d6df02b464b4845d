//! The health forecast: where a customer's score is heading over the next 30
//! days, with a confidence band, the days until it turns red and the
//! probability that it does within a horizon.
//!
//! Method (chosen with the backtest, docs/CUSTOMER_SUCCESS.md): a robust
//! linear trend over the last `fit_days` daily scores, Theil–Sen slope (the
//! median of the pairwise slopes) and a median intercept, so one odd day (a
//! holiday, a burst of late data) moves neither. The spread of the forecast
//! at `h` days ahead combines the residuals' robust scale (1.4826 × their
//! median absolute deviation) with the slope's own uncertainty, both
//! inflated for the residuals' lag-1 autocorrelation: daily scores are made
//! of 7-day windows, so neighbouring days are far from independent and a
//! plain standard error would be overconfident. Deterministic and cheap: at
//! most 378 pairwise slopes per customer and day.

use serde::{Deserialize, Serialize};

use super::health::{HealthComponents, HealthWeights};
use crate::model::{EventTime, Id};

/// Days ahead the expected score is given for.
pub const HORIZON_DAYS: u32 = 30;

/// Fewest daily scores a forecast is fitted to.
pub const MIN_FIT_DAYS: usize = 14;

/// Most daily scores a forecast is fitted to (the journey keeps this many).
pub const MAX_FIT_DAYS: usize = 28;

/// The score at or below which (rounded) the band is red: a score under
/// this is red.
const RED_BELOW: f64 = 50.5;

/// z of the 80% central band (10% and 90% quantiles).
const BAND_Z: f64 = 1.281_551_565_545;

/// How the trend is fitted (`forecast_method`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Theil–Sen slope and median intercept over the window: robust, slow
    /// to follow a turn (half the window must have turned).
    TheilSen,
    /// Local linear trend (Holt's exponential smoothing, ETS(A,A,N)) run
    /// over the window: level and slope follow a turn within days.
    #[default]
    LocalTrend,
    /// The local trend with its slope damped day by day (ETS(A,Ad,N),
    /// damping `DAMPING`): it expects a fall to level off.
    DampedTrend,
    /// The day-by-day figures the score is made of projected one by one and
    /// run through the score's own 7-day windows (`kpi::projection`): a fall
    /// of the days the score has yet to follow is foreseen, a fall the days
    /// no longer show is not extended.
    Projection,
}

/// What a forecast says about the days ahead, whichever method drew it: the
/// expected score and its 80% band for each day `h` = 0 (today) to at least
/// [`HORIZON_DAYS`], the days until red and the probability of red within
/// the customer's `forecast_days`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlook {
    /// How it was drawn.
    pub method: Method,
    /// Days of history it was fitted to.
    pub fitted_days: u32,
    /// Points per day: the trend's slope, or the expected path's mean
    /// slope over its first week.
    pub slope: f64,
    /// Expected score `h` days on, within 0-100.
    pub expected: Vec<f64>,
    /// 10% quantile of the score `h` days on.
    pub low: Vec<f64>,
    /// 90% quantile of the score `h` days on.
    pub high: Vec<f64>,
    /// Days until the expected score turns red, when within
    /// [`HORIZON_DAYS`]; 0 when red already.
    pub days_to_red: Option<f64>,
    /// Probability of a red score on a day within `forecast_days`.
    pub probability_red: f64,
}

impl Outlook {
    /// The 80% band `days` on (the last day drawn, past it).
    pub fn band(&self, days: u32) -> (f64, f64) {
        let h = (days as usize).min(self.low.len() - 1);
        (self.low[h], self.high[h])
    }

    /// The expected score `days` on (the last day drawn, past it).
    pub fn expected(&self, days: u32) -> f64 {
        self.expected[(days as usize).min(self.expected.len() - 1)]
    }

    /// Days until the path `scores` (today first) falls under red, the day
    /// interpolated along its step; 0 when red today.
    pub fn days_to_red_of(scores: &[f64]) -> Option<f64> {
        if scores.first()? < &RED_BELOW {
            return Some(0.0);
        }
        let day = scores.iter().position(|s| *s < RED_BELOW)?;
        let (before, after) = (scores[day - 1], scores[day]);
        Some((day - 1) as f64 + (before - RED_BELOW) / (before - after))
    }
}

/// The score under which (rounded to 50 or below) a day is red.
pub(crate) const RED_LINE: f64 = RED_BELOW;

/// Smoothing of the local trend's level.
const LOCAL_ALPHA: f64 = 0.5;
/// Smoothing of the local trend's slope.
const LOCAL_BETA: f64 = 0.15;
/// Share of the slope a damped trend keeps from one day to the next.
const DAMPING: f64 = 0.9;

/// A fitted trend of the health score, as of the day it was fitted.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Forecast {
    /// How it was fitted.
    pub method: Method,
    /// The trend's score today (not today's raw score).
    pub level: f64,
    /// Points per day.
    pub slope: f64,
    /// Robust scale of a day's score around the trend.
    pub spread: f64,
    /// Standard error of the slope, points per day.
    pub slope_spread: f64,
    /// Scores the trend was fitted to.
    pub fitted_days: u32,
}

impl Forecast {
    /// Fits the trend to the daily `scores`, oldest first, today last; the
    /// last `fit_days` (within [`MIN_FIT_DAYS`]..=[`MAX_FIT_DAYS`]) are
    /// used. `None` with fewer than [`MIN_FIT_DAYS`], and for
    /// [`Method::Projection`], which is not a trend of scores.
    pub fn fit(scores: &[f64], fit_days: usize, method: Method) -> Option<Self> {
        let n = fit_days.clamp(MIN_FIT_DAYS, MAX_FIT_DAYS).min(scores.len());
        if n < MIN_FIT_DAYS {
            return None;
        }
        let y = &scores[scores.len() - n..];
        match method {
            Method::TheilSen => Some(Self::theil_sen(y)),
            Method::LocalTrend => Some(Self::local_trend(y, 1.0)),
            Method::DampedTrend => Some(Self::local_trend(y, DAMPING)),
            // Drawn from the days, not from the scores: `kpi::projection`.
            Method::Projection => None,
        }
    }

    /// Holt's linear method in error-correction form, its slope damped by
    /// `phi` a day (1: not damped), started from the Theil–Sen line of the
    /// window's first half; the spread is the robust scale of the
    /// one-day-ahead errors.
    fn local_trend(y: &[f64], phi: f64) -> Self {
        let start = Self::theil_sen(&y[..y.len() / 2]);
        let (mut level, mut slope) = (start.level, start.slope);
        let mut errors = Vec::with_capacity(y.len() - y.len() / 2);
        for &value in &y[y.len() / 2..] {
            let error = value - (level + phi * slope);
            errors.push(error);
            level += phi * slope + LOCAL_ALPHA * error;
            slope = phi * slope + LOCAL_BETA * error;
        }
        let mut deviations: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
        Self {
            method: if phi < 1.0 {
                Method::DampedTrend
            } else {
                Method::LocalTrend
            },
            level,
            slope,
            spread: (1.4826 * median(&mut deviations)).max(0.5),
            slope_spread: 0.0,
            fitted_days: y.len() as u32,
        }
    }

    fn theil_sen(y: &[f64]) -> Self {
        let n = y.len();
        // x = days relative to today: today is 0, the oldest -(n-1).
        let x = |i: usize| i as f64 - (n - 1) as f64;
        let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
        for i in 0..n {
            for j in i + 1..n {
                slopes.push((y[j] - y[i]) / (x(j) - x(i)));
            }
        }
        let slope = median(&mut slopes);
        let mut intercepts: Vec<f64> = (0..n).map(|i| y[i] - slope * x(i)).collect();
        let level = median(&mut intercepts);
        let residuals: Vec<f64> = (0..n).map(|i| y[i] - (level + slope * x(i))).collect();
        let mut deviations: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
        // A floor of half a point: a perfectly flat history (an idle fleet,
        // a test) is not a certain future.
        let scale = (1.4826 * median(&mut deviations)).max(0.5);
        let inflation = autocorrelation_inflation(&residuals);
        let mean_x = -((n - 1) as f64) / 2.0;
        let sxx: f64 = (0..n).map(|i| (x(i) - mean_x).powi(2)).sum();
        Self {
            method: Method::TheilSen,
            level,
            slope,
            spread: scale * inflation,
            slope_spread: scale * inflation / sxx.sqrt(),
            fitted_days: n as u32,
        }
    }

    /// The expected score `days` ahead, within 0-100.
    pub fn expected(&self, days: f64) -> f64 {
        self.mean(days).clamp(0.0, 100.0)
    }

    /// The trend `days` ahead, unclamped.
    fn mean(&self, days: f64) -> f64 {
        match self.method {
            Method::DampedTrend => self.level + self.slope * damped_sum(days),
            _ => self.level + self.slope * days,
        }
    }

    /// Standard deviation of the score `days` ahead. Theil–Sen: the day's
    /// own scatter plus the slope's uncertainty carried forward. Local
    /// trend: the one-day error accumulated as level and slope absorb it,
    /// σ²(1 + Σ_{j<h} (α + jβ)²).
    pub fn sigma(&self, days: f64) -> f64 {
        match self.method {
            Method::TheilSen => (self.spread.powi(2) + (days * self.slope_spread).powi(2)).sqrt(),
            Method::LocalTrend => {
                let h = days.max(1.0);
                // Σ_{j=1}^{h-1} (α + jβ)², in closed form for a real h.
                let m = h - 1.0;
                let sum = m * LOCAL_ALPHA.powi(2)
                    + LOCAL_ALPHA * LOCAL_BETA * m * (m + 1.0)
                    + LOCAL_BETA.powi(2) * m * (m + 1.0) * (2.0 * m + 1.0) / 6.0;
                self.spread * (1.0 + sum).sqrt()
            }
            Method::DampedTrend | Method::Projection => {
                // Σ_{j<h} (α + β Σ_{i=1}^{j} φ^i)², whole days.
                let sum: f64 = (1..days.max(1.0).ceil() as u32)
                    .map(|j| (LOCAL_ALPHA + LOCAL_BETA * damped_sum(f64::from(j))).powi(2))
                    .sum();
                self.spread * (1.0 + sum).sqrt()
            }
        }
    }

    /// The 80% band (10% and 90% quantiles) of the score `days` ahead.
    pub fn band(&self, days: f64) -> (f64, f64) {
        let (mean, width) = (self.mean(days), BAND_Z * self.sigma(days));
        (
            (mean - width).clamp(0.0, 100.0),
            (mean + width).clamp(0.0, 100.0),
        )
    }

    /// Days until the trend crosses into red; `None` when it does not fall
    /// or does not reach red within [`HORIZON_DAYS`]. 0 when the trend is
    /// red already.
    pub fn days_to_red(&self) -> Option<f64> {
        // The trend's path, unclamped: interpolation along the crossing
        // day's step is exact for a straight trend.
        let path: Vec<f64> = (0..=HORIZON_DAYS)
            .map(|h| self.mean(f64::from(h)))
            .collect();
        Outlook::days_to_red_of(&path)
    }

    /// The outlook of this trend, its probability of red within
    /// `forecast_days`.
    pub fn outlook(&self, forecast_days: u32) -> Outlook {
        let days = 0..=HORIZON_DAYS.max(forecast_days);
        let bands: Vec<(f64, f64)> = days.clone().map(|h| self.band(f64::from(h))).collect();
        Outlook {
            method: self.method,
            fitted_days: self.fitted_days,
            slope: self.slope,
            expected: days.map(|h| self.expected(f64::from(h))).collect(),
            low: bands.iter().map(|b| b.0).collect(),
            high: bands.iter().map(|b| b.1).collect(),
            days_to_red: self.days_to_red(),
            probability_red: self.probability_red_within(forecast_days),
        }
    }

    /// Probability that the score is red on a day within the next `days`:
    /// the largest of the daily probabilities (a lower bound of the chance
    /// of touching red at all, so the rule errs on the side of silence).
    pub fn probability_red_within(&self, days: u32) -> f64 {
        (1..=days)
            .map(|h| {
                let h = f64::from(h);
                normal_cdf((RED_BELOW - self.mean(h)) / self.sigma(h))
            })
            .fold(0.0, f64::max)
    }
}

/// The component that cost the score the most points between `then` and
/// `now` (its change times its share of the weights), with those points
/// (negative); `None` when no component lost any.
pub fn driver(
    then: &HealthComponents,
    now: &HealthComponents,
    weights: &HealthWeights,
) -> Option<(&'static str, f64)> {
    let both = |a: Option<f64>, b: Option<f64>, w: f64| match (a, b) {
        (Some(a), Some(b)) => (a, b, w),
        _ => (0.0, 0.0, 0.0),
    };
    let parts = [
        ("depth", (then.depth, now.depth, weights.depth)),
        ("breadth", (then.breadth, now.breadth, weights.breadth)),
        (
            "utilisation",
            (then.utilisation, now.utilisation, weights.utilisation),
        ),
        ("outcome", both(then.outcome, now.outcome, weights.outcome)),
        (
            "reliability",
            (then.reliability, now.reliability, weights.reliability),
        ),
        ("trend", (then.trend, now.trend, weights.trend)),
        (
            "maturity",
            both(then.maturity, now.maturity, weights.maturity),
        ),
    ];
    // Normalised as the score is: over the weights of the components present.
    let present = [
        weights.depth,
        weights.breadth,
        weights.utilisation,
        if now.outcome.is_some() {
            weights.outcome
        } else {
            0.0
        },
        weights.reliability,
        weights.trend,
        if now.maturity.is_some() {
            weights.maturity
        } else {
            0.0
        },
    ];
    let total: f64 = present.iter().map(|w| w.max(0.0)).sum();
    if total <= 0.0 {
        return None;
    }
    parts
        .into_iter()
        .map(|(name, (a, b, w))| (name, (b - a) * w.max(0.0) / total))
        .filter(|(_, points)| *points < 0.0)
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// A customer's health forecast at the end of one of its days. Field names
/// are store field names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ForecastRecord {
    /// Customer id.
    pub customer: Id,
    /// Start of the day, ms.
    pub window_start: EventTime,
    /// End of the day, ms.
    pub window_end: EventTime,
    /// The day's health score.
    pub score: f64,
    /// How the trend was fitted.
    pub method: Method,
    /// Daily scores the trend was fitted to.
    pub fitted_days: u32,
    /// The trend's slope, points per day.
    pub slope: f64,
    /// Expected score 7, 14 and 30 days on.
    pub expected_7: f64,
    /// See `expected_7`.
    pub expected_14: f64,
    /// See `expected_7`.
    pub expected_30: f64,
    /// 80% band of the score 7, 14 and 30 days on (10% and 90% quantiles).
    pub low_7: f64,
    /// See `low_7`.
    pub high_7: f64,
    /// See `low_7`.
    pub low_14: f64,
    /// See `low_7`.
    pub high_14: f64,
    /// See `low_7`.
    pub low_30: f64,
    /// See `low_7`.
    pub high_30: f64,
    /// Days until the trend turns red, when within the 30 days.
    pub days_to_red: Option<f64>,
    /// Probability of a red score within `forecast_days`.
    pub probability_red: f64,
    /// The customer's `forecast_days`.
    pub forecast_days: u32,
}

impl ForecastRecord {
    /// The record of `outlook` for the day `window_start..window_end`.
    pub fn of(
        outlook: &Outlook,
        customer: Id,
        (window_start, window_end): (EventTime, EventTime),
        score: f64,
        forecast_days: u32,
    ) -> Self {
        let band = |h: u32| outlook.band(h);
        let ((low_7, high_7), (low_14, high_14), (low_30, high_30)) =
            (band(7), band(14), band(HORIZON_DAYS));
        Self {
            customer,
            window_start,
            window_end,
            score,
            method: outlook.method,
            fitted_days: outlook.fitted_days,
            slope: outlook.slope,
            expected_7: outlook.expected(7),
            expected_14: outlook.expected(14),
            expected_30: outlook.expected(HORIZON_DAYS),
            low_7,
            high_7,
            low_14,
            high_14,
            low_30,
            high_30,
            days_to_red: outlook.days_to_red,
            probability_red: outlook.probability_red,
            forecast_days,
        }
    }
}

impl Method {
    /// Snake-case name, as in config and stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TheilSen => "theil_sen",
            Self::LocalTrend => "local_trend",
            Self::DampedTrend => "damped_trend",
            Self::Projection => "projection",
        }
    }
}

/// φ + φ² + ... + φ^days for the damping φ (fractional days interpolate).
fn damped_sum(days: f64) -> f64 {
    DAMPING * (1.0 - DAMPING.powf(days)) / (1.0 - DAMPING)
}

/// Median; sorts `values` in place. 0 for none.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// sqrt((1 + ρ) / (1 - ρ)) for the lag-1 autocorrelation ρ of `residuals`
/// (clamped to 0..0.9): how much wider an AR(1) series' uncertainty is than
/// that of as many independent days.
fn autocorrelation_inflation(residuals: &[f64]) -> f64 {
    let n = residuals.len();
    let mean = residuals.iter().sum::<f64>() / n as f64;
    let var: f64 = residuals.iter().map(|r| (r - mean).powi(2)).sum();
    if var <= f64::EPSILON {
        return 1.0;
    }
    let cov: f64 = residuals
        .windows(2)
        .map(|w| (w[0] - mean) * (w[1] - mean))
        .sum();
    let rho = (cov / var).clamp(0.0, 0.9);
    ((1.0 + rho) / (1.0 - rho)).sqrt()
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26, error under 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return 0.5;
    }
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Ordinary least squares, the independent reference on noiseless lines.
    fn least_squares(y: &[f64]) -> (f64, f64) {
        let n = y.len() as f64;
        let xs: Vec<f64> = (0..y.len()).map(|i| i as f64 - (n - 1.0)).collect();
        let (mx, my) = (xs.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
        let sxy: f64 = xs.iter().zip(y).map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        let slope = sxy / sxx;
        (my - slope * mx, slope)
    }

    #[test]
    fn too_few_days_give_no_forecast() {
        assert!(Forecast::fit(&[70.0; 13], 21, Method::TheilSen).is_none());
        assert!(Forecast::fit(&[70.0; 14], 21, Method::TheilSen).is_some());
    }

    #[test]
    fn a_line_is_recovered_like_least_squares() {
        let y: Vec<f64> = (0..21).map(|d| 80.0 - 1.25 * f64::from(d)).collect();
        let f = Forecast::fit(&y, 21, Method::TheilSen).unwrap();
        let (level, slope) = least_squares(&y);
        assert!((f.level - level).abs() < 1e-9 && (f.slope - slope).abs() < 1e-9);
        // 80 - 1.25 * 20 = 55 today; red (under 50.5) 3.6 days on.
        assert!((f.days_to_red().unwrap() - 4.5 / 1.25).abs() < 1e-9);
        assert!(f.probability_red_within(21) > 0.99);
        assert_eq!(f.expected(100.0), 0.0);
    }

    #[test]
    fn one_outlier_does_not_move_the_trend() {
        let mut y: Vec<f64> = (0..21).map(|d| 70.0 + 0.2 * f64::from(d)).collect();
        y[10] = 5.0;
        let f = Forecast::fit(&y, 21, Method::TheilSen).unwrap();
        assert!((f.slope - 0.2).abs() < 1e-9, "{}", f.slope);
        assert!(f.days_to_red().is_none());
        assert!(f.probability_red_within(21) < 1e-6);
    }

    #[test]
    fn the_driver_is_the_component_that_cost_most_points() {
        let weights = HealthWeights::for_segment(crate::customer::Segment::LowTouch);
        let then = HealthComponents {
            depth: 60.0,
            breadth: 90.0,
            utilisation: 80.0,
            outcome: Some(100.0),
            reliability: 90.0,
            trend: 50.0,
            maturity: None,
        };
        let mut now = then;
        now.utilisation = 50.0; // -30 x 0.2 = -6 points
        now.trend = 20.0; // -30 x 0.15 = -4.5 points
        now.depth = 80.0;
        let (name, points) = driver(&then, &now, &weights).unwrap();
        assert_eq!(name, "utilisation");
        let total = 0.15 + 0.2 + 0.2 + 0.2 + 0.1 + 0.15;
        assert!((points + 30.0 * 0.2 / total).abs() < 1e-9, "{points}");
        assert!(driver(&now, &now, &weights).is_none());
    }

    #[test]
    fn the_local_trend_follows_a_line_and_a_turn() {
        let line: Vec<f64> = (0..21).map(|d| 80.0 - 1.25 * f64::from(d)).collect();
        let f = Forecast::fit(&line, 21, Method::LocalTrend).unwrap();
        assert!(
            (f.level - 55.0).abs() < 1e-9 && (f.slope + 1.25).abs() < 1e-9,
            "{f:?}"
        );
        // Flat for 16 days, then 2 points a day lost for 5: the local
        // trend is already falling, Theil–Sen's median barely.
        let turn: Vec<f64> = (0..21)
            .map(|d| 80.0 - 2.0 * f64::from((d - 15).max(0)))
            .collect();
        let local = Forecast::fit(&turn, 21, Method::LocalTrend).unwrap();
        let robust = Forecast::fit(&turn, 21, Method::TheilSen).unwrap();
        assert!(
            local.slope < -1.0 && robust.slope > -0.5,
            "{local:?} {robust:?}"
        );
    }

    #[test]
    fn a_damped_trend_expects_a_fall_to_level_off() {
        let line: Vec<f64> = (0..21).map(|d| 90.0 - 1.0 * f64::from(d)).collect();
        let local = Forecast::fit(&line, 21, Method::LocalTrend).unwrap();
        let damped = Forecast::fit(&line, 21, Method::DampedTrend).unwrap();
        // Never below the level plus the slope's whole damped sum.
        let floor = damped.level + damped.slope * DAMPING / (1.0 - DAMPING);
        assert!(damped.expected(30.0) > local.expected(30.0));
        assert!(damped.expected(30.0) >= floor - 1e-9, "{damped:?}");
        assert!(local.days_to_red().is_some());
        assert_eq!(damped.days_to_red(), None, "{damped:?}");
    }

    #[test]
    fn normal_cdf_matches_known_values() {
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746),
            (-1.959_964, 0.025),
            (BAND_Z, 0.9),
        ] {
            assert!((normal_cdf(z) - p).abs() < 1e-6, "{z}: {}", normal_cdf(z));
        }
    }

    proptest! {
        #[test]
        fn the_band_holds_the_expected_score_and_widens_with_the_horizon(
            y in proptest::collection::vec(0.0..100.0f64, 14..40), days in 14..28usize, h in 0.0..30.0f64,
            method in proptest::sample::select(vec![Method::TheilSen, Method::LocalTrend, Method::DampedTrend])
        ) {
            let f = Forecast::fit(&y, days, method).unwrap();
            let (low, high) = f.band(h);
            let (low2, high2) = f.band(h + 1.0);
            prop_assert!(low <= f.expected(h) + 1e-9 && f.expected(h) <= high + 1e-9);
            prop_assert!(high2 - low2 >= (high - low) - 1e-9 || low2 == 0.0 || high2 == 100.0);
        }

        #[test]
        fn the_probability_of_red_grows_with_the_horizon(
            y in proptest::collection::vec(0.0..100.0f64, 14..40), days in 1..30u32,
            method in proptest::sample::select(vec![Method::TheilSen, Method::LocalTrend, Method::DampedTrend])
        ) {
            let f = Forecast::fit(&y, 21, method).unwrap();
            let (p, later) = (f.probability_red_within(days), f.probability_red_within(days + 1));
            prop_assert!((0.0..=1.0).contains(&p) && later >= p);
        }
    }
}
