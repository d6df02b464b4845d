//! The persisted checkpoint: the point in event time before which every
//! window is in every store (and every alert in the outbox), so the WAL can
//! be cut behind it and a restart need not write those windows again.

use std::path::{Path, PathBuf};

use fleetpulse_engine::{EventTime, Output};
use serde::{Deserialize, Serialize};

/// Event time a record belongs to, for suppression after a restart: a
/// window's end, an alert transition's time.
pub fn record_time(record: &Output) -> EventTime {
    record.event_time()
}

/// The persisted checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Windows (and alert transitions) before this event time are in every
    /// sink; after a restart they are not written again.
    pub written_before: EventTime,
    /// A cluster member's journey states (beside it) are of days before
    /// this, at most `written_before`; `None`: as far as `written_before`
    /// (a single process, or a file of an earlier build). Every member
    /// keeps its WAL records behind the least of these, so the days after
    /// each restored state replay whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journeys_before: Option<EventTime>,
}

/// Where the checkpoint lives, beside the WAL segments.
pub fn path(wal_dir: &Path) -> PathBuf {
    wal_dir.join("checkpoint.json")
}

impl Checkpoint {
    /// The checkpoint at `written_before`, its journey states as far.
    pub fn at(written_before: EventTime) -> Self {
        Self {
            written_before,
            journeys_before: None,
        }
    }

    /// The journey states beside it are of days before this.
    pub fn journeys_cover(&self) -> EventTime {
        (self.journeys_before)
            .unwrap_or(self.written_before)
            .min(self.written_before)
    }

    /// Reads the checkpoint; a missing file is the empty checkpoint.
    pub fn load(wal_dir: &Path) -> std::io::Result<Self> {
        match std::fs::read(path(wal_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the checkpoint atomically ([`crate::files::replace`]).
    pub fn store(&self, wal_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::files::replace(&path(wal_dir), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Checkpoint::default());
        let c = Checkpoint::at(42);
        c.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), c);
        // A single process's file says nothing of its journey states: the
        // format of earlier builds.
        let file = std::fs::read_to_string(path(dir.path())).unwrap();
        assert_eq!(file, r#"{"written_before":42}"#);
        let member = Checkpoint {
            written_before: 42,
            journeys_before: Some(40),
        };
        member.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), member);
        assert_eq!(member.journeys_cover(), 40);
    }
}
