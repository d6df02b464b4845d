//! Config of the SQLite sink.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sinks::SinkError;

/// `type = "sqlite"`: write KPI records to a local SQLite file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file. Created, with its parent directories, if missing.
    #[serde(default = "default_path")]
    pub path: PathBuf,
}

/// `fleetpulse-data/kpi.sqlite`, relative to the working directory.
fn default_path() -> PathBuf {
    PathBuf::from("fleetpulse-data/kpi.sqlite")
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: default_path(),
        }
    }
}

impl SqliteConfig {
    pub(crate) fn validate(&self) -> Result<(), SinkError> {
        if self.path.as_os_str().is_empty() {
            return Err(SinkError::Config {
                field: "path",
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }
}
