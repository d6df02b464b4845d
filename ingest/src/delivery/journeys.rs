//! The persisted journey states: per customer, the journey as it stood at the
//! end of its last day that every store holds, written beside the WAL just
//! before each checkpoint, and when a journey folded again by late data
//! replaced the states of its days. A restart restores them, so a customer's history
//! (baselines, streaks, milestones, alert episodes, activation) survives
//! although the WAL keeps only a few days; the replay then skips the days a
//! state already covers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fleetpulse_engine::{Id, JourneyState};
use serde::{Deserialize, Serialize};

/// The file format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Where the states live, beside the WAL segments and the checkpoint.
pub fn path(wal_dir: &Path) -> PathBuf {
    wal_dir.join("journeys.json")
}

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    journeys: HashMap<Id, JourneyState>,
}

/// Reads the states; a missing file is none. A file of another format is
/// refused with what to do.
pub fn load(wal_dir: &Path) -> Result<HashMap<Id, JourneyState>, String> {
    let path = path(wal_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let shown = path.display();
    let format: Format =
        serde_json::from_slice(&bytes).map_err(|e| format!("{shown}: not a journeys file: {e}"))?;
    if format.format != FORMAT {
        return Err(format!(
            "{shown}: journey states of format {} (this build reads {FORMAT}); run the build \
             that wrote them, or move the file away to start the journeys afresh from what \
             the WAL holds (their history before it is then lost)",
            format.format
        ));
    }
    let file: File = serde_json::from_slice(&bytes).map_err(|e| format!("{shown}: {e}"))?;
    Ok(file.journeys)
}

/// Writes the states atomically ([`crate::files::replace_with`], streamed:
/// thousands of customers' states are not held twice in memory).
pub fn store(wal_dir: &Path, journeys: HashMap<Id, JourneyState>) -> std::io::Result<()> {
    let file = File {
        format: FORMAT,
        journeys,
    };
    crate::files::replace_with(&path(wal_dir), |w| {
        serde_json::to_writer(w, &file).map_err(std::io::Error::other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_none_and_another_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        store(dir.path(), HashMap::new()).unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        std::fs::write(path(dir.path()), r#"{"format": 2, "journeys": {}}"#).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(
            err.contains("format 2") && err.contains("move the file away"),
            "{err}"
        );
        std::fs::write(path(dir.path()), "garbage").unwrap();
        assert!(
            load(dir.path())
                .unwrap_err()
                .contains("not a journeys file")
        );
    }

    /// A customer whose machines never reported has health with its days
    /// since activation undefined (NaN), which JSON writes as null: the
    /// state reads back (a restart once refused to start on it), the NaN
    /// still NaN, and the bincode of the archive agrees.
    #[test]
    fn the_state_of_a_journey_that_never_activated_reads_back() {
        use fleetpulse_engine::config::DAY_MS;
        use fleetpulse_engine::kpi::journey::Journey;
        use fleetpulse_engine::{Contract, CustomerKpi, CustomerSpec, Output, Segment};
        let t0 = 1_767_571_200_000;
        let contract = Contract {
            arr: 1000.0,
            start: t0,
            renewal: t0 + 400 * DAY_MS,
            devices_purchased: 2,
            operator_seats: 2,
        };
        let mut journey = Journey::new(CustomerSpec::new("ghost", Segment::LowTouch, contract));
        let mut out = Vec::new();
        for d in 0..50 {
            let day = CustomerKpi {
                customer: "ghost".into(),
                window: "1d".into(),
                window_start: t0 + d * DAY_MS,
                window_end: t0 + (d + 1) * DAY_MS,
                ..CustomerKpi::default()
            };
            journey.close_day(&day, &mut out);
        }
        let health = out.iter().find_map(|o| match o {
            Output::Health(h) => Some(h),
            _ => None,
        });
        assert!(health.is_some_and(|h| h.days_since_activation.is_nan()));
        let dir = tempfile::tempdir().unwrap();
        let state = journey.snapshot();
        store(dir.path(), HashMap::from([("ghost".into(), state.clone())])).unwrap();
        let back = load(dir.path()).unwrap().remove("ghost").unwrap();
        let text = |s: &JourneyState| format!("{s:?}");
        assert_eq!(text(&back), text(&state));
        assert!(text(&back).contains("days_since_activation: NaN"));
        let bytes = bincode::serialize(&state).unwrap();
        let binary: JourneyState = bincode::deserialize(&bytes).unwrap();
        assert_eq!(text(&binary), text(&state));
    }
}
