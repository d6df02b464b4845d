//! devices_dark: telematics units that reported before and went silent, told
//! apart from parked machines that still send heartbeats.

use std::collections::HashMap;

use super::{IntradayVerdict, Today, verdict};
use crate::config::DAY_MS;
use crate::kpi::journey::Journey;
use crate::kpi::risk::Reading;
use crate::model::{EventTime, Id};

pub(super) fn reading(today: &Today<'_>) -> Option<Reading> {
    let t = today.thresholds();
    let silent_since = today
        .end
        .saturating_sub(u64::from(t.dark_after_days) * DAY_MS);
    let known = today.journey.devices_seen();
    let dark = today.journey.devices_silent_since(silent_since);
    let fire_at = (t.dark_share * known as f64).max(f64::from(t.dark_min_devices));
    (known > 0).then(|| Reading {
        breached: verdict(dark as f64 >= fire_at, (dark as f64) < fire_at / 2.0),
        metric: dark as f64,
        threshold: fire_at,
        evidence: evidence(dark, known, t.dark_after_days),
    })
}

fn evidence(dark: usize, known: usize, days: u32) -> String {
    format!(
        "{dark} of {known} devices that reported before have sent nothing for {days} days or more (parked machines that still send heartbeats are not counted)"
    )
}

/// The same rule on the open day, at event time `now`: each device's last
/// message is the newer of what the closed days hold and what was
/// `sighted` since. The share is crossed when the k-th longest silent
/// device (k the devices the share needs) passes `dark_after_days`; the
/// day's close, which sees no newer message from those devices unless one
/// arrives late, finds at least as many dark devices against a threshold
/// no higher (it knows no more devices), so it confirms the breach.
pub(super) fn intraday(
    journey: &Journey,
    sighted: &HashMap<Id, EventTime>,
    now: EventTime,
) -> IntradayVerdict {
    let t = &journey.spec().thresholds;
    let silence = u64::from(t.dark_after_days) * DAY_MS;
    let mut last: Vec<EventTime> = journey
        .last_seen()
        .map(|(id, at)| sighted.get(id).map_or(at, |s| at.max(*s)))
        .collect();
    let new_devices = sighted.keys().filter(|id| !journey.knows_device(id));
    last.extend(new_devices.map(|id| sighted[id]));
    let known = last.len();
    let fire_at = (t.dark_share * known as f64).max(f64::from(t.dark_min_devices));
    let needed = fire_at.ceil() as usize;
    if known == 0 || needed > known {
        return Err(EventTime::MAX);
    }
    let (_, kth, _) = last.select_nth_unstable(needed.max(1) - 1);
    // Dark once its silence is longer than the threshold, as the day's
    // close counts it (`last_seen < end - silence`).
    let crossed = kth.saturating_add(silence).saturating_add(1);
    if now < crossed {
        return Err(crossed);
    }
    let since = now.saturating_sub(silence);
    let dark = last.iter().filter(|&&at| at < since).count();
    let reading = Reading {
        breached: Some(true),
        metric: dark as f64,
        threshold: fire_at,
        evidence: evidence(dark, known, t.dark_after_days),
    };
    Ok((crossed, reading))
}
