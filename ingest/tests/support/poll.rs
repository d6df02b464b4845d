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
