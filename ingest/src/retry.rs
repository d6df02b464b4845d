//! Retrying with exponential backoff and jitter, for every component that
//! waits out a failure: sinks, the alert webhook and outbox, broker
//! connections.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// Exponential backoff with jitter: retry `n` (0-based) waits
/// `min(initial * 2^n, max)`, scaled by a random factor in `[0.5, 1.0)` so
/// that sinks failing together do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Longest delay between two attempts (before jitter).
    pub max: Duration,
    /// Retries after the first attempt; then the batch is dropped.
    pub max_retries: u32,
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s, retrying for as long as the store stays
    /// down: while it does, the sink stops taking records and the pipeline
    /// slows its intake (backpressure); nothing is given up.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            max_retries: u32::MAX,
        }
    }
}

impl Backoff {
    /// Delay before retry `retry` (0-based). `jitter` in `[0, 1)` picks the
    /// point in the jitter range; values outside are clamped.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let factor = 2u32.checked_pow(retry).unwrap_or(u32::MAX);
        let base = self.initial.saturating_mul(factor).min(self.max);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

impl Backoff {
    /// Broker connections and outbox writes: 100 ms doubling to 5 s, no
    /// limit on retries.
    pub const RECONNECT: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
        max_retries: u32::MAX,
    };

    /// Delay before retry `retry` (0-based): [`Backoff::delay`], but never
    /// less than what the other side asked for (`Retry-After`), itself
    /// capped at `max` so one answer cannot stall a queue for hours.
    pub fn delay_honouring(&self, retry: u32, jitter: f64, asked: Option<Duration>) -> Duration {
        let delay = self.delay(retry, jitter);
        match asked {
            Some(asked) => delay.max(asked.min(self.max)),
            None => delay,
        }
    }
}

/// `Retry-After` as a duration from `now`: either delay-seconds (`120`) or an
/// HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`); a date in the past is 0.
/// `None` if the value is neither.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let ms = at.as_millisecond().saturating_sub(now.as_millisecond());
    Some(Duration::from_millis(ms.max(0) as u64))
}

/// A uniform-ish number in `[0, 1)` for jitter. std's `RandomState` is seeded
/// randomly per process and per call, which is all jitter needs.
pub fn jitter() -> f64 {
    let bits = RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Logs a failing write once, not once a second while the disk is full, and
/// once when it works again.
pub(crate) struct Failing {
    failing: bool,
    /// What failed, and what to say when it works again.
    lines: (&'static str, &'static str),
}

impl Failing {
    pub(crate) fn new(failed: &'static str, recovered: &'static str) -> Self {
        Self {
            failing: false,
            lines: (failed, recovered),
        }
    }

    pub(crate) fn failed(&mut self, error: &dyn std::fmt::Display) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::error!(%error, "{}", self.lines.0);
        }
    }

    pub(crate) fn stored(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("{}", self.lines.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_within_the_jitter_band() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_retries: 10,
        };
        let top: Vec<_> = (0..6).map(|n| backoff.delay(n, 1.0)).collect();
        assert_eq!(
            top,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        let bottom: Vec<_> = (0..6).map(|n| backoff.delay(n, 0.0)).collect();
        assert_eq!(
            bottom,
            [50, 100, 200, 400, 500, 500].map(Duration::from_millis)
        );
        assert_eq!(backoff.delay(2, 0.5), Duration::from_millis(300));
        // Huge retry numbers neither overflow nor exceed the cap.
        assert_eq!(backoff.delay(u32::MAX, 1.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(3, 7.0), Duration::from_millis(800));
    }

    #[test]
    fn delay_honouring_backs_off_and_honours_retry_after_up_to_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_retries: 8,
        };
        let ms = Duration::from_millis;
        // Exponential with jitter in [0.5, 1.0) of the base.
        assert_eq!(backoff.delay_honouring(0, 1.0, None), ms(500));
        assert_eq!(backoff.delay_honouring(0, 0.0, None), ms(250));
        assert_eq!(backoff.delay_honouring(3, 1.0, None), ms(4_000));
        assert_eq!(backoff.delay_honouring(10, 1.0, None), ms(30_000));
        // Retry-After is a floor...
        assert_eq!(backoff.delay_honouring(0, 1.0, Some(ms(7_000))), ms(7_000));
        // ...unless the backoff is already longer...
        assert_eq!(backoff.delay_honouring(5, 1.0, Some(ms(1_000))), ms(16_000));
        // ...and it is capped at the longest delay.
        assert_eq!(
            backoff.delay_honouring(0, 1.0, Some(ms(3_600_000))),
            ms(30_000)
        );
    }

    #[test]
    fn reconnect_doubles_to_five_seconds() {
        let delays: Vec<_> = [0, 1, 5, 9]
            .map(|n| Backoff::RECONNECT.delay(n, 1.0))
            .to_vec();
        assert_eq!(delays, [100, 200, 3200, 5000].map(Duration::from_millis));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let retry_after = |v: &str, now_ms: i64| {
            parse_retry_after(v, jiff::Timestamp::from_millisecond(now_ms).unwrap())
        };
        assert_eq!(retry_after("7", 0), Some(Duration::from_secs(7)));
        let now = 1_767_571_200_000; // Mon, 05 Jan 2026 00:00:00 GMT
        assert_eq!(
            retry_after("Mon, 05 Jan 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 04 Jan 2026 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn jitter_stays_in_range() {
        assert!((0..64).map(|_| jitter()).all(|j| (0.0..1.0).contains(&j)));
    }
}
