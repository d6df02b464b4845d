//! Waiting for a condition with a deadline, so a stuck test fails instead
//! of hanging.

use std::time::{Duration, Instant};

/// How long the fixtures wait for anything before failing the test.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `done` every `every`, blocking the thread, until it holds; fails
/// after `within`.
pub fn until(what: &str, within: Duration, every: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

/// Polls `done` every 20 ms without blocking the runtime (the service may
/// run on it), for up to [`PATIENCE`].
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `status` (the API's `/api/status`) every 200 ms until the view has
/// settled: `taken_in` holds for it, its record count has not changed for
/// 3 s (the watermark closes the days after the service's idle second), the
/// newest day it holds ends less than a day (25 h, a daylight-saving day)
/// before the watermark, so the engine has emitted the days the watermark
/// closed (under load it can run days behind intake), and the store has
/// written every record the engine emitted (one store). Fails after 300 s
/// with the last status and `context()`, e.g. a log tail.
pub async fn until_settled(
    mut status: impl AsyncFnMut() -> serde_json::Value,
    taken_in: impl Fn(&serde_json::Value) -> bool,
    context: impl Fn() -> String,
) {
    let started = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let status = status().await;
        let records = status["records"].as_u64().unwrap();
        let stored = status["records_written"].as_u64() >= status["records_emitted"].as_u64();
        let emitted = match (status["as_of"].as_u64(), status["watermark"].as_u64()) {
            (Some(as_of), Some(watermark)) => as_of + 25 * 3_600_000 > watermark,
            _ => false,
        };
        if taken_in(&status) && records > 0 && stored && emitted {
            if records != last.0 {
                last = (records, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(3) {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not settled: {status}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
