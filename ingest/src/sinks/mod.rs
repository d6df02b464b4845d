//! Sinks: where the engine's KPI records go.
//!
//! Every sink writes every record kind the engine emits ([`Output`]: customer
//! and device KPIs, outcomes, milestones, health, alerts, portfolio) under the
//! public schema in `docs/SCHEMA.md`, and every write is idempotent: writing
//! a record again with the same key overwrites all of its fields, so replays
//! and window corrections never duplicate data.
//!
//! - [`sqlite`]: the embedded default store, a local SQLite file.
//! - [`influxdb`]: InfluxDB line protocol, through the v1 `/write` API
//!   (InfluxDB 1.x) or the v2 API (InfluxDB 2.x, VictoriaMetrics).
//! - [`writer`]: the sink task that batches, retries and reports.
//!
//! Secrets (passwords, tokens) are read from environment variables named in
//! the config, never from the config itself, and never logged: they live in
//! [`Secret`], whose `Debug` is redacted.

#[cfg(test)]
pub(crate) mod fixtures;
pub mod influxdb;
pub mod retention;
pub mod sqlite;
pub mod writer;

use std::fmt;
use std::num::NonZeroUsize;

use fleetpulse_engine::Output;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use influxdb::{HttpError, InfluxDbV1Config, InfluxDbV1Sink, InfluxDbV2Config, InfluxDbV2Sink};
pub use sqlite::{SqliteConfig, SqliteSink, SqliteStore};
pub use writer::{Backoff, SinkReport, SinkSettings, run_sink};

/// Records per write when the sink's config has no `batch_size` (SQLite).
pub const DEFAULT_SQLITE_BATCH_SIZE: usize = 1000;

/// Which store the KPI records are written to, and how to reach it.
///
/// In TOML the `type` key picks the store:
///
/// ```toml
/// [[sinks]]
/// type = "influxdb_v2"
/// url = "http://127.0.0.1:8086"
/// org = "acme"
/// bucket = "fleetpulse"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum SinkConfig {
    /// A local SQLite file (the default; no server needed).
    #[serde(rename = "sqlite")]
    Sqlite(SqliteConfig),
    /// InfluxDB 1.x through its `/write` API.
    #[serde(rename = "influxdb_v1")]
    InfluxDbV1(InfluxDbV1Config),
    /// InfluxDB 2.x or VictoriaMetrics through the v2 `/api/v2/write` API.
    #[serde(rename = "influxdb_v2")]
    InfluxDbV2(InfluxDbV2Config),
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self::Sqlite(SqliteConfig::default())
    }
}

impl SinkConfig {
    /// Records per write request.
    pub fn batch_size(&self) -> NonZeroUsize {
        match self {
            Self::Sqlite(_) => {
                NonZeroUsize::new(DEFAULT_SQLITE_BATCH_SIZE).expect("constant is non-zero")
            }
            Self::InfluxDbV1(c) => c.batch_size,
            Self::InfluxDbV2(c) => c.batch_size,
        }
    }

    /// One line naming the store, as [`Sink::describe`] does, from the
    /// config alone.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(c) => format!("sqlite {}", c.path.display()),
            Self::InfluxDbV1(c) => format!("influxdb_v1 {} db={}", c.url, c.database),
            Self::InfluxDbV2(c) => format!("influxdb_v2 {} bucket={}", c.url, c.bucket),
        }
    }

    /// Checks the values a TOML parse cannot (URLs, field combinations)
    /// without touching the network, the file system or the environment.
    /// [`Sink::open`] runs the same checks.
    pub fn validate(&self) -> Result<(), SinkError> {
        match self {
            Self::Sqlite(c) => c.validate(),
            Self::InfluxDbV1(c) => c.validate(),
            Self::InfluxDbV2(c) => c.validate(),
        }
    }
}

/// An open sink, ready to write.
#[derive(Debug)]
pub enum Sink {
    /// See [`SqliteSink`].
    Sqlite(SqliteSink),
    /// See [`InfluxDbV1Sink`].
    InfluxDbV1(InfluxDbV1Sink),
    /// See [`InfluxDbV2Sink`].
    InfluxDbV2(InfluxDbV2Sink),
}

impl Sink {
    /// Opens the sink the config names. SQLite: creates the file and the
    /// schema. InfluxDB v1: checks `/ping` and creates the database if it is
    /// missing. InfluxDB v2: builds the client (no request is made).
    pub async fn open(config: &SinkConfig) -> Result<Sink, SinkError> {
        config.validate()?;
        Ok(match config {
            SinkConfig::Sqlite(c) => Sink::Sqlite(SqliteSink::open(c).await?),
            SinkConfig::InfluxDbV1(c) => Sink::InfluxDbV1(InfluxDbV1Sink::open(c).await?),
            SinkConfig::InfluxDbV2(c) => Sink::InfluxDbV2(InfluxDbV2Sink::open(c)?),
        })
    }

    /// Writes one batch. Idempotent: a record written again with the same
    /// series and window start overwrites every field of the earlier one.
    ///
    /// Records a store cannot represent (see
    /// [`influxdb::encode::EncodeError`]) are skipped with a warning and
    /// counted in [`Sink::take_rejected`]; the rest of the batch is written.
    pub async fn write(&mut self, records: &[Output]) -> Result<(), SinkError> {
        match self {
            Sink::Sqlite(s) => s.write(records).await,
            Sink::InfluxDbV1(s) => s.write(records).await,
            Sink::InfluxDbV2(s) => s.write(records).await,
        }
    }

    /// Records skipped as unrepresentable since the last call; resets the count.
    pub fn take_rejected(&mut self) -> u64 {
        match self {
            Sink::Sqlite(_) => 0,
            Sink::InfluxDbV1(s) => s.take_rejected(),
            Sink::InfluxDbV2(s) => s.take_rejected(),
        }
    }

    /// One line naming the store, for logs: e.g. `sqlite /tmp/x.db`. Never
    /// holds a secret.
    pub fn describe(&self) -> String {
        match self {
            Sink::Sqlite(s) => s.describe(),
            Sink::InfluxDbV1(s) => s.describe(),
            Sink::InfluxDbV2(s) => s.describe(),
        }
    }
}

/// Why a sink step failed. Variants are named after the step.
#[derive(Debug, Error)]
pub enum SinkError {
    /// A config value is invalid.
    #[error("sink config `{field}`: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The environment variable that should hold a secret is not set or not
    /// UTF-8. Only the variable's name is reported.
    #[error("environment variable `{var}` (named by `{field}`) is not set or not valid UTF-8")]
    Secret {
        /// The config field that names the variable.
        field: &'static str,
        /// The variable's name.
        var: String,
    },
    /// Building the HTTP client failed.
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// Opening (or creating) the SQLite file failed.
    #[error("opening SQLite database {path}{disk}: {source}")]
    SqliteOpen {
        /// The database file.
        path: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
        /// Whether the disk holding it is full, which SQLite's error may
        /// not say.
        disk: sqlite::DiskNote,
    },
    /// A reader named a SQLite file that does not exist (mistyped, or
    /// removed while the service runs).
    #[error("SQLite database {path} does not exist")]
    SqliteMissing {
        /// The database file.
        path: String,
    },
    /// A reader named a SQLite file that holds no fleetpulse store: empty,
    /// or another program's database (left as it was).
    #[error("SQLite database {path} is not a fleetpulse store: {found}")]
    SqliteNotAStore {
        /// The database file.
        path: String,
        /// What it holds instead.
        found: String,
    },
    /// Creating or checking the SQLite schema failed.
    #[error("creating the schema in SQLite database {path}: {source}")]
    SqliteSchema {
        /// The database file.
        path: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The SQLite file was written by a newer fleetpulse with a schema this
    /// one does not know.
    #[error(
        "SQLite database {path} has schema version {found}, this build supports up to {supported}"
    )]
    SqliteSchemaVersion {
        /// The database file.
        path: String,
        /// The version in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A reader named a SQLite file on a read-only mount (a backup, a
    /// snapshot) that it cannot read as it is: a schema to upgrade, or a
    /// write-ahead log beside it that needs write access to read.
    #[error("SQLite database {path} is on a read-only file system and {why}")]
    SqliteReadOnly {
        /// The database file.
        path: String,
        /// What reading it would need.
        why: String,
    },
    /// Writing a batch to SQLite failed (the transaction was rolled back).
    #[error("writing a batch to SQLite: {0}")]
    SqliteWrite(#[source] rusqlite::Error),
    /// Reading KPI records back from SQLite failed.
    #[error("reading from SQLite: {0}")]
    SqliteRead(#[source] rusqlite::Error),
    /// The blocking task that runs SQLite panicked or was cancelled.
    #[error("the SQLite task failed: {0}")]
    SqliteTask(#[source] tokio::task::JoinError),
    /// The server did not answer `/ping` with success.
    #[error("pinging {url}: {source}")]
    Ping {
        /// The ping URL (never holds credentials).
        url: String,
        /// The cause.
        #[source]
        source: HttpError,
    },
    /// Listing or creating the InfluxDB database failed.
    #[error("creating database `{database}`: {source}")]
    CreateDatabase {
        /// The database.
        database: String,
        /// The cause.
        #[source]
        source: HttpError,
    },
    /// The write request failed.
    #[error("writing {lines} lines: {source}")]
    InfluxWrite {
        /// Lines in the failed request.
        lines: usize,
        /// The cause.
        #[source]
        source: HttpError,
    },
    /// The server refused the request as too large (HTTP 413): the batch must
    /// be split before it can be written.
    #[error(
        "write of {lines} lines ({bytes} bytes) is too large for the server, split needed: {body}"
    )]
    WriteTooLarge {
        /// Lines in the refused request.
        lines: usize,
        /// Bytes in the refused request.
        bytes: usize,
        /// The server's response body (truncated).
        body: String,
    },
}

impl SinkError {
    /// Whether trying the same step again later may succeed: connection
    /// failures and timeouts, HTTP 5xx, 429 and 408, and any SQLite error of
    /// the store rather than the records (see [`sqlite::is_retryable`]: a
    /// file an operator can mend included). Client errors (400, 401, 403,
    /// 404, 413, 422), bad config and missing secrets are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Config { .. }
            | SinkError::Secret { .. }
            | SinkError::Client(_)
            | SinkError::SqliteTask(_)
            | SinkError::SqliteNotAStore { .. }
            | SinkError::SqliteReadOnly { .. }
            | SinkError::WriteTooLarge { .. } => false,
            // The sink starts a removed file again with its next write; a
            // newer build's file put at the path is the operator's to move.
            SinkError::SqliteMissing { .. } | SinkError::SqliteSchemaVersion { .. } => true,
            SinkError::SqliteOpen { source, .. }
            | SinkError::SqliteSchema { source, .. }
            | SinkError::SqliteWrite(source)
            | SinkError::SqliteRead(source) => sqlite::is_retryable(source),
            SinkError::Ping { source, .. }
            | SinkError::CreateDatabase { source, .. }
            | SinkError::InfluxWrite { source, .. } => source.is_retryable(),
        }
    }
}

/// A secret read from the environment. `Debug` prints `Secret(***)`; there
/// is no `Display`, so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Reads the secret from the environment variable `var`; `field` is the
    /// config field that names it (for the error message).
    pub fn from_env(field: &'static str, var: &str) -> Result<Secret, SinkError> {
        Self::lookup(field, var, |name| std::env::var(name).ok())
    }

    /// [`Secret::from_env`] with an injectable lookup, for tests.
    pub(crate) fn lookup(
        field: &'static str,
        var: &str,
        lookup: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Secret, SinkError> {
        lookup(var).map(Secret).ok_or_else(|| SinkError::Secret {
            field,
            var: var.to_owned(),
        })
    }

    /// The secret itself, for building a request.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<SinkConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn parses_each_sink_type_with_defaults() {
        let sqlite = parse("type = \"sqlite\"\npath = \"/tmp/kpi.sqlite\"\n").unwrap();
        assert_eq!(
            sqlite,
            SinkConfig::Sqlite(SqliteConfig {
                path: "/tmp/kpi.sqlite".into()
            })
        );
        assert_eq!(sqlite.batch_size().get(), DEFAULT_SQLITE_BATCH_SIZE);

        let v1 = parse(
            r#"
            type = "influxdb_v1"
            url = "http://127.0.0.1:8086"
            database = "fleet"
            username = "ingest"
            password_env = "FLEET_INFLUX_PASSWORD"
            "#,
        )
        .unwrap();
        let SinkConfig::InfluxDbV1(c) = &v1 else {
            panic!("{v1:?}")
        };
        assert_eq!(c.database, "fleet");
        assert_eq!(c.username.as_deref(), Some("ingest"));
        assert_eq!(c.password_env.as_deref(), Some("FLEET_INFLUX_PASSWORD"));
        assert_eq!(c.batch_size.get(), influxdb::DEFAULT_BATCH_SIZE);
        v1.validate().unwrap();

        let v2 = parse(
            r#"
            type = "influxdb_v2"
            url = "http://127.0.0.1:8086"
            org = "acme"
            bucket = "fleetpulse"
            batch_size = 500
            "#,
        )
        .unwrap();
        let SinkConfig::InfluxDbV2(c) = &v2 else {
            panic!("{v2:?}")
        };
        assert_eq!(c.token_env, "INFLUXDB_TOKEN");
        assert_eq!(v2.batch_size().get(), 500);
        v2.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_types() {
        let err = parse("type = \"sqlite\"\npath = \"x\"\npassword = \"hunter2\"\n").unwrap_err();
        assert!(err.to_string().contains("password"), "{err}");
        let err = parse("type = \"influxdb_v2\"\nurl = \"http://x\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
        assert!(parse("type = \"postgres\"\n").is_err());
        assert!(
            parse("type = \"influxdb_v1\"\nurl = \"http://x\"\ndatabase = \"d\"\nbatch_size = 0\n")
                .is_err()
        );
    }

    #[test]
    fn validate_names_the_field() {
        let config = SinkConfig::InfluxDbV1(InfluxDbV1Config {
            url: "http://user:pw@127.0.0.1:8086".into(),
            database: "fleet".into(),
            username: None,
            password_env: None,
            batch_size: NonZeroUsize::new(10).unwrap(),
        });
        let err = config.validate().unwrap_err();
        assert!(
            matches!(err, SinkError::Config { field: "url", .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("pw"), "{err}");

        let config = SinkConfig::InfluxDbV1(InfluxDbV1Config {
            url: "http://127.0.0.1:8086".into(),
            database: "fleet".into(),
            username: None,
            password_env: Some("PW".into()),
            batch_size: NonZeroUsize::new(10).unwrap(),
        });
        assert!(matches!(
            config.validate(),
            Err(SinkError::Config {
                field: "password_env",
                ..
            })
        ));

        let config = SinkConfig::InfluxDbV2(InfluxDbV2Config {
            url: "not a url".into(),
            org: "o".into(),
            bucket: "b".into(),
            token_env: "T".into(),
            batch_size: NonZeroUsize::new(10).unwrap(),
            restatements: Default::default(),
        });
        assert!(matches!(
            config.validate(),
            Err(SinkError::Config { field: "url", .. })
        ));
    }

    #[test]
    fn secrets_come_from_the_lookup_and_never_print() {
        let secret = Secret::lookup("token_env", "TOKEN", |var| {
            assert_eq!(var, "TOKEN");
            Some("s3cr3t".into())
        })
        .unwrap();
        assert_eq!(secret.expose(), "s3cr3t");
        assert_eq!(format!("{secret:?}"), "Secret(***)");

        let err = Secret::lookup("token_env", "TOKEN", |_| None).unwrap_err();
        assert!(matches!(err, SinkError::Secret { .. }));
        assert!(err.to_string().contains("`TOKEN`"), "{err}");
    }

    #[test]
    fn retryable_follows_the_status() {
        let status = |status: u16| SinkError::InfluxWrite {
            lines: 1,
            source: HttpError::Status {
                status,
                body: String::new(),
            },
        };
        for code in [500, 502, 503, 504, 429, 408] {
            assert!(status(code).is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!status(code).is_retryable(), "{code}");
        }
        let too_large = SinkError::WriteTooLarge {
            lines: 1,
            bytes: 1,
            body: String::new(),
        };
        assert!(!too_large.is_retryable());
    }
}
