//! Event time and UTC calendar days, without a date-time dependency: the
//! simulator only needs day numbers, weekdays and `YYYY-MM-DD` labels.

/// Event time: milliseconds since the Unix epoch, UTC (the same unit as
/// `fleetpulse_engine::EventTime`; the wire carries it as `int64`).
pub type EventTime = u64;

/// One second in milliseconds.
pub const SECOND_MS: u64 = 1_000;
/// One minute in milliseconds.
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
/// One hour in milliseconds.
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
/// One day in milliseconds.
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// UTC day number (days since 1970-01-01) of an event time.
pub fn day_number(at: EventTime) -> u64 {
    at / DAY_MS
}

/// Start (00:00 UTC) of the day that holds `at`.
pub fn day_start(at: EventTime) -> EventTime {
    at - at % DAY_MS
}

/// Day of the week of a day number, 0 = Monday ... 6 = Sunday.
pub fn weekday(day: i64) -> u32 {
    // 1970-01-01 was a Thursday.
    (day + 3).rem_euclid(7) as u32
}

/// `YYYY-MM-DD` of a UTC day number.
pub fn date_label(day: u64) -> String {
    let (y, m, d) = civil_from_days(day as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD` of the UTC day that holds `at`.
pub fn date_of(at: EventTime) -> String {
    date_label(day_number(at))
}

/// Parses `YYYY-MM-DD` into the event time of 00:00 UTC that day; `None` when
/// it is not a date on or after 1970-01-01.
pub fn parse_date(text: &str) -> Option<EventTime> {
    let mut parts = text.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || d == 0 || d > 31 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject 2026-02-31 and friends: they would not round-trip.
    if days < 0 || civil_from_days(days) != (y, m, d) {
        return None;
    }
    Some(days as u64 * DAY_MS)
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of a day number.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Howard Hinnant's `days_from_civil`: day number of (year, month, day).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_known_days() {
        assert_eq!(date_label(0), "1970-01-01");
        assert_eq!(date_of(1_767_571_200_000), "2026-01-05");
        assert_eq!(date_of(1_709_164_800_000), "2024-02-29");
        assert_eq!(
            weekday(day_number(1_767_571_200_000) as i64),
            0,
            "2026-01-05 is a Monday"
        );
    }

    #[test]
    fn parses_what_it_prints() {
        for day in [0, 1, 59, 60, 365, 10_956, 19_782, 20_458, 40_000] {
            let label = date_label(day);
            assert_eq!(parse_date(&label), Some(day * DAY_MS), "{label}");
        }
        assert_eq!(parse_date("2026-02-31"), None);
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("1969-12-31"), None);
        assert_eq!(parse_date("2026-01"), None);
    }
}
