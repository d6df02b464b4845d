//! Where a source's polling stands, kept durably: per machine, the last
//! `datetime` taken of each element (with the last and first value of the
//! running totals) and the last message sequence used. It is written (to a
//! temporary file, fsynced, renamed over the old one) only after the WAL
//! made the machine's readings durable, so a crash at any point either
//! re-polls readings whose messages carry the same sequences (refused as
//! duplicates) or finds them already counted: nothing is lost or counted
//! twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Format of the file; a different one is refused, not guessed at.
const VERSION: u32 = 1;

/// The position file cannot be read or written.
#[derive(Debug, Error)]
pub enum PositionError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The content is not a position (a damaged file is not taken as
    /// "start over", which would count the history twice).
    #[error("{path}: not a poll position: {message}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Every machine of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// File format.
    pub version: u32,
    /// Unit epoch of the messages (Unix seconds at which this file was
    /// made): a new file starts new sequence windows.
    pub epoch: u64,
    /// By machine key (`PIN:...` or `SN:...`).
    pub machines: BTreeMap<String, MachinePosition>,
}

/// One machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachinePosition {
    /// Last message sequence used (0: none yet).
    pub sequence: u64,
    /// By element name.
    pub elements: BTreeMap<String, ElementPosition>,
    /// End of the last time range fetched completely, ms since the epoch
    /// (0: none yet): the next request starts here.
    #[serde(default)]
    pub polled_to: u64,
    /// Last `EngineStatus` taken.
    #[serde(default)]
    pub running: Option<bool>,
}

/// One element of one machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ElementPosition {
    /// Last `datetime` taken, ms since the epoch.
    pub at: u64,
    /// Last value of a running total.
    #[serde(default)]
    pub value: Option<f64>,
    /// First value of a running total: readings are sent relative to it,
    /// so an element that starts reporting after the others adds no jump.
    #[serde(default)]
    pub base: Option<f64>,
    /// `datetime` of `value` (`at` also advances over refused readings);
    /// absent in files of earlier builds, where `at` stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_at: Option<u64>,
    /// The last reading refused as implausible against `value`: a next
    /// reading that agrees with it, and not with `value`, confirms a new
    /// level of the meter (docs/AEMP.md, implausible readings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect: Option<Suspect>,
}

/// A running total's reading held back as implausible.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    /// Its `datetime`, ms since the epoch.
    pub at: u64,
    /// Its value.
    pub value: f64,
}

impl Position {
    /// An empty position whose messages use `epoch`.
    pub fn new(epoch: u64) -> Self {
        Self {
            version: VERSION,
            epoch,
            machines: BTreeMap::new(),
        }
    }
}

/// The file a [`Position`] lives in.
#[derive(Debug, Clone)]
pub struct PositionFile {
    path: PathBuf,
}

impl PositionFile {
    /// The file at `path` (its directory is made when missing).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored position, or a new one with `epoch` when there is no file.
    pub fn load_or_new(&self, epoch: u64) -> Result<Position, PositionError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Position::new(epoch)),
            Err(source) => {
                return Err(PositionError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let position: Position =
            serde_json::from_slice(&text).map_err(|e| PositionError::Content {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        if position.version != VERSION {
            return Err(PositionError::Content {
                path: self.path.clone(),
                message: format!("version {} (this build reads {VERSION})", position.version),
            });
        }
        Ok(position)
    }

    /// Replaces the stored position atomically and durably.
    pub fn save(&self, position: &Position) -> Result<(), PositionError> {
        let io = |source| PositionError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let body = serde_json::to_vec(position).expect("a position serialises");
        crate::files::replace(&self.path, &body).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The position of two machines as the build of 2026-12-05 wrote it.
    fn written() -> Position {
        let mut position = Position::new(1_764_000_000);
        let drill = position.machines.entry("PIN:CAT0320D".into()).or_default();
        drill.sequence = 41;
        drill.polled_to = 1_764_900_000_000;
        drill.running = Some(true);
        drill.elements.insert(
            "CumulativeOperatingHours".into(),
            ElementPosition {
                at: 1_764_899_000_000,
                value: Some(1_234.5),
                base: Some(1_200.0),
                ..ElementPosition::default()
            },
        );
        drill.elements.insert(
            "EngineStatus".into(),
            ElementPosition {
                at: 1_764_899_500_000,
                value: None,
                base: None,
                ..ElementPosition::default()
            },
        );
        position
            .machines
            .insert("SN:77X".into(), MachinePosition::default());
        position
    }

    /// A position file an earlier build left (checked in,
    /// `tests/fixtures/aemp-position-v1.json`) loads as it was written: an
    /// upgrade's first poll goes on from it. A change of format that fails
    /// this makes every AEMP source of an upgraded installation refuse to
    /// start (a damaged file is not taken as "start over"): read the
    /// earlier format too, and never bless this file again.
    #[test]
    fn a_position_an_earlier_build_left_loads_as_written() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aemp-position-v1.json");
        if std::env::var_os("FLEETPULSE_BLESS").is_some() && !fixture.exists() {
            PositionFile::new(&fixture).save(&written()).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("aemp-x.json");
        std::fs::copy(&fixture, &copy).unwrap();
        assert_eq!(PositionFile::new(copy).load_or_new(1).unwrap(), written());
    }

    #[test]
    fn a_saved_position_loads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = PositionFile::new(dir.path().join("sub/aemp-x.json"));
        let fresh = file.load_or_new(42).unwrap();
        assert_eq!(fresh, Position::new(42));
        let mut position = fresh;
        let machine = position.machines.entry("PIN:1".into()).or_default();
        machine.sequence = 7;
        machine.elements.insert(
            "CumulativeOperatingHours".into(),
            ElementPosition {
                at: 1000,
                value: Some(12.5),
                base: Some(10.0),
                value_at: Some(900),
                suspect: Some(Suspect {
                    at: 1000,
                    value: 99_999.0,
                }),
            },
        );
        file.save(&position).unwrap();
        assert_eq!(file.load_or_new(99).unwrap(), position);
        std::fs::write(file.path(), b"{ not json").unwrap();
        let e = file.load_or_new(1).unwrap_err().to_string();
        assert!(
            e.contains("aemp-x.json") && e.contains("not a poll position"),
            "{e}"
        );
    }
}
