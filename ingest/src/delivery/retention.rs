//! Which WAL records a restart still needs. A record may be cut once every
//! window it feeds is in every store: its newest reading lies more than the
//! retention before the durable point. Records become durable out of order
//! when several intake lanes share the log, so the cut never passes a
//! record whose durability has not been reported yet.

use std::collections::BTreeMap;

use fleetpulse_engine::EventTime;

use crate::wal::Lsn;

/// Durable WAL records and the newest event time of each.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Oldest LSN not cut yet.
    first: Lsn,
    /// Durable records at or after `first`: start LSN -> (end LSN exclusive,
    /// newest event time of the range).
    durable: BTreeMap<u64, (u64, EventTime)>,
    /// Event time a record must be older than, relative to the durable
    /// point, to be cut.
    retention_ms: u64,
    /// Records must also be older than the device snapshot a restart
    /// loads: the replay starts from its point.
    snapshot_at: EventTime,
}

impl Retention {
    /// The log starts at `first`; records are kept `retention_ms` behind the
    /// durable point (windows, and a device's previous reading, that a
    /// restart must be able to recompute).
    pub fn new(first: Lsn, retention_ms: u64) -> Self {
        Self {
            first,
            durable: BTreeMap::new(),
            retention_ms,
            snapshot_at: EventTime::MAX,
        }
    }

    /// A restart now loads the device snapshot at `at`: records at or
    /// after it stay.
    pub fn follow_snapshot(&mut self, at: EventTime) {
        self.snapshot_at = at;
    }

    /// Records `start..end` are durable; their newest reading is at `newest`.
    pub fn durable(&mut self, start: Lsn, end: Lsn, newest: EventTime) {
        if end.0 > start.0 && end.0 > self.first.0 {
            self.durable
                .insert(start.0.max(self.first.0), (end.0, newest));
        }
    }

    /// Where the log may be cut once windows before `written_before` are in
    /// every store: every record below the returned LSN is durable and no
    /// longer needed. `None`: nothing to cut.
    pub fn cut(&mut self, written_before: EventTime) -> Option<Lsn> {
        let cutoff = (written_before.saturating_sub(self.retention_ms)).min(self.snapshot_at);
        let mut at = self.first.0;
        while let Some((&start, &(end, newest))) = self.durable.first_key_value() {
            if start != at || newest >= cutoff {
                break;
            }
            at = end;
            self.durable.pop_first();
        }
        if at == self.first.0 {
            return None;
        }
        self.first = Lsn(at);
        Some(self.first)
    }

    /// Oldest LSN not cut.
    pub fn first(&self) -> Lsn {
        self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_only_a_durable_prefix_older_than_the_retention() {
        let mut r = Retention::new(Lsn(1), 10);
        r.durable(Lsn(1), Lsn(3), 100);
        // Records 3..5 not reported yet: durable out of order.
        r.durable(Lsn(5), Lsn(6), 100);
        assert_eq!(r.cut(105), None, "100 is within the retention of 105");
        assert_eq!(r.cut(111), Some(Lsn(3)));
        assert_eq!(r.cut(1000), None, "3..5 not durable: the cut waits");
        r.durable(Lsn(3), Lsn(5), 500);
        assert_eq!(r.cut(505), None);
        assert_eq!(r.cut(511), Some(Lsn(6)));
        assert_eq!(r.first(), Lsn(6));
    }

    #[test]
    fn cuts_only_behind_the_device_snapshot() {
        let mut r = Retention::new(Lsn(1), 10);
        r.follow_snapshot(0);
        r.durable(Lsn(1), Lsn(3), 100);
        r.durable(Lsn(3), Lsn(5), 200);
        assert_eq!(r.cut(1000), None, "no snapshot yet");
        r.follow_snapshot(150);
        assert_eq!(r.cut(1000), Some(Lsn(3)));
        r.follow_snapshot(201);
        assert_eq!(r.cut(1000), Some(Lsn(5)));
    }
}
