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

/// Whether a SQLite error is the store's rather than the batch's, so that
/// writing the same batch again may succeed: a lock, a full disk, an I/O
/// error, and also a file an operator can mend (made read-only, replaced by
/// one that is no database, corrupt, of a newer build): the batch waits
/// for it in the WAL instead of being dropped. Only what is wrong with the
/// records themselves (a constraint, a value too big or of the wrong type)
/// and errors that are no SQLite result are not retried.
pub(crate) fn is_retryable(error: &rusqlite::Error) -> bool {
    match error.sqlite_error_code() {
        None => false,
        Some(code) => !matches!(
            code,
            ErrorCode::ConstraintViolation
                | ErrorCode::TooBig
                | ErrorCode::TypeMismatch
                | ErrorCode::ParameterOutOfRange
                | ErrorCode::ApiMisuse
        ),
    }
}
