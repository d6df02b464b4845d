//! The SQLite sink: the embedded default store, one local file, no server.
//!
//! Tables `customer_kpi`, `device_kpi`, `outcome`, `milestone`, `health`,
//! `alert` and `portfolio` (see [`schema`] and `docs/SCHEMA.md`), WAL journal
//! mode so readers (the HTTP API, the demo) never block the writer, one
//! transaction per batch, and upserts keyed by each table's primary key so a
//! rewrite overwrites. rusqlite is blocking, so
//! all its work runs on tokio's blocking pool, with the connection moved into
//! the task and back.

mod config;
pub mod schema;
mod sink;
mod store;

pub use config::SqliteConfig;
pub use sink::SqliteSink;
pub use store::SqliteStore;

use std::path::Path;

use rusqlite::ErrorCode;

/// What a failed open says of the disk holding the file. SQLite on a full
/// disk may fail with an error that does not name it ("I/O error within the
/// xShmMap method" when the shared-memory index cannot grow).
#[derive(Debug, Default)]
pub struct DiskNote(Option<String>);

/// Below this many bytes free the disk counts as full: SQLite needs a few
/// pages to open a file in WAL mode.
const FULL_BELOW: u64 = 1 << 20;

impl DiskNote {
    /// Looks at the file system holding `path` (its directory when the file
    /// is not there yet).
    pub fn of(path: &Path) -> Self {
        let at = if path.exists() {
            path
        } else {
            (path.parent())
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        };
        let Ok(fs) = rustix::fs::statvfs(at) else {
            return Self(None);
        };
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        Self((free < FULL_BELOW).then(|| {
            format!(
                " (the disk holding it is full: {} of {} KiB free)",
                free / 1024,
                fs.f_blocks.saturating_mul(fs.f_frsize) / 1024
            )
        }))
    }
}

impl std::fmt::Display for DiskNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or(""))
    }
}

/// Whether a SQLite error may go away on its own: another connection holds a
/// lock, the disk is full, or an I/O error occurred.
pub(crate) fn is_retryable(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
        )
    )
}
