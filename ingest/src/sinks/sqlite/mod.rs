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

use rusqlite::ErrorCode;

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
