//! A second client with this service's client id. The broker hands a
//! session to whichever client connected last and closes the other's
//! connection; that one reconnects at once and takes the session back. Each
//! message then goes to one of the two, so each computes a part of every
//! window, and two processes writing one store overwrite each other's
//! windows with parts. MQTT 3.1.1 does not say why a connection closed:
//! what tells a takeover from a broker restart or a network fault is that
//! the broker closes an accepted connection and accepts the next one at
//! once, again and again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rumqttc::{ConnectionError, StateError};

/// Drops followed by an accept within [`AT_ONCE`] that make a fight.
const LIKELY: usize = 3;
/// How far back those are counted.
const WINDOW: Duration = Duration::from_secs(60);
/// A reconnect this soon after the drop: the broker was never down.
const AT_ONCE: Duration = Duration::from_secs(2);
/// A connection held this long ends the fight: longer than the reconnect
/// backoff's 5 s ceiling, which the other client would have come back in.
pub const SETTLED: Duration = Duration::from_secs(20);

/// What one connection's events say of a fight over its session.
#[derive(Debug, Default)]
pub struct Takeovers {
    /// When the current connection was accepted.
    connected_at: Option<Instant>,
    /// When the broker closed an accepted connection, until the next
    /// attempt says whether it is still there.
    dropped_at: Option<Instant>,
    /// Likely takeovers within [`WINDOW`].
    recent: VecDeque<Instant>,
    contested: bool,
}

/// A change worth one log line.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The session is fought over: this many takeovers within [`WINDOW`].
    Contested(usize),
    /// The connection held for [`SETTLED`]: the other client is gone.
    Settled,
}

impl Takeovers {
    /// The broker accepted a connection. Returns whether that counted as a
    /// takeover (the last connection was closed by the broker just before),
    /// and the change it makes.
    pub fn connected(&mut self, now: Instant) -> (bool, Option<Change>) {
        self.connected_at = Some(now);
        let Some(dropped) = self.dropped_at.take() else {
            return (false, None);
        };
        if now.duration_since(dropped) > AT_ONCE {
            return (false, None);
        }
        self.recent.push_back(now);
        while (self.recent.front()).is_some_and(|&t| now.duration_since(t) > WINDOW) {
            self.recent.pop_front();
        }
        if !self.contested && self.recent.len() >= LIKELY {
            self.contested = true;
            return (true, Some(Change::Contested(self.recent.len())));
        }
        (true, None)
    }

    /// The connection failed with `error`: the broker closed it, or it
    /// failed otherwise.
    pub fn lost(&mut self, error: &ConnectionError, now: Instant) {
        if closed_by_broker(error) {
            self.closed_by_broker(now);
        } else {
            self.failed();
        }
    }

    /// The broker closed the connection.
    fn closed_by_broker(&mut self, now: Instant) {
        if self.connected_at.take().is_some() {
            self.dropped_at = Some(now);
        }
    }

    /// Any other failure (the broker cannot be reached, a refused connect,
    /// a protocol error): not a takeover.
    fn failed(&mut self) {
        self.connected_at = None;
        self.dropped_at = None;
    }

    /// Looked at while connected: a fight ends once the connection held
    /// for [`SETTLED`].
    pub fn tick(&mut self, now: Instant) -> Option<Change> {
        let held = self.connected_at?;
        if self.contested && now.duration_since(held) >= SETTLED {
            self.contested = false;
            self.recent.clear();
            return Some(Change::Settled);
        }
        None
    }

    /// Whether the session is being fought over now.
    pub fn contested(&self) -> bool {
        self.contested
    }

    /// When [`Self::tick`] could next end the fight.
    pub fn settles_at(&self) -> Option<Instant> {
        self.connected_at
            .filter(|_| self.contested)
            .map(|t| t + SETTLED)
    }
}

/// The broker closed an established connection (what it does to the older
/// of two clients with one client id).
fn closed_by_broker(error: &ConnectionError) -> bool {
    match error {
        ConnectionError::MqttState(StateError::ConnectionAborted) => true,
        ConnectionError::MqttState(StateError::Io(e)) | ConnectionError::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_session_taken_over_and_back_again_and_again_is_a_fight_until_it_holds() {
        let t0 = Instant::now();
        let mut t = Takeovers::default();
        assert_eq!(t.connected(t0), (false, None));
        // Kicked out, back in 100 ms later: twice is not yet a fight.
        let mut at = 0;
        for _ in 0..2 {
            at += 500;
            t.closed_by_broker(ms(t0, at));
            at += 100;
            assert_eq!(t.connected(ms(t0, at)), (true, None));
        }
        at += 500;
        t.closed_by_broker(ms(t0, at));
        at += 100;
        assert_eq!(t.connected(ms(t0, at)), (true, Some(Change::Contested(3))));
        assert!(t.contested());
        // Further takeovers say nothing more.
        t.closed_by_broker(ms(t0, at + 500));
        assert_eq!(t.connected(ms(t0, at + 600)), (true, None));
        at += 600;
        // Held for less than SETTLED: still fought over.
        assert_eq!(t.tick(ms(t0, at + 19_000)), None);
        assert_eq!(t.settles_at(), Some(ms(t0, at) + SETTLED));
        assert_eq!(t.tick(ms(t0, at + 20_000)), Some(Change::Settled));
        assert!(!t.contested());
        assert_eq!(t.tick(ms(t0, at + 30_000)), None);
        assert_eq!(t.settles_at(), None);
    }

    #[test]
    fn a_broker_restart_or_drops_far_apart_are_no_fight() {
        let t0 = Instant::now();
        let mut t = Takeovers::default();
        t.connected(t0);
        // The broker restarts: closed, refused for a while, then back.
        for round in 0..5u64 {
            let at = round * 10_000;
            t.closed_by_broker(ms(t0, at + 1));
            t.failed();
            t.failed();
            assert_eq!(t.connected(ms(t0, at + 50)), (false, None));
        }
        // Closed, and back only after 3 s: a broker that was down.
        let mut t = Takeovers::default();
        t.connected(t0);
        for round in 0..5u64 {
            let at = round * 5_000;
            t.closed_by_broker(ms(t0, at + 1));
            assert_eq!(t.connected(ms(t0, at + 3_001)), (false, None));
        }
        // Quick reconnects a minute and more apart: never three in a window.
        let mut t = Takeovers::default();
        t.connected(t0);
        for round in 1..10u64 {
            let at = round * 31_000;
            t.closed_by_broker(ms(t0, at));
            t.connected(ms(t0, at + 100));
        }
        assert!(!t.contested());
        // A drop before any accept is not a takeover either.
        let mut t = Takeovers::default();
        t.closed_by_broker(t0);
        assert_eq!(t.connected(ms(t0, 10)), (false, None));
    }
}
