//! Config of the InfluxDB sinks.

use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};

use super::parse_base_url;
use crate::sinks::SinkError;

/// Lines per write request unless configured: InfluxDB's recommended batch.
pub const DEFAULT_BATCH_SIZE: usize = 5000;

/// `type = "influxdb_v1"`: InfluxDB 1.x through `/write?db=...&precision=ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxDbV1Config {
    /// Base URL of the server, e.g. `http://127.0.0.1:8086`. Must not hold
    /// credentials; a path prefix is kept.
    pub url: String,
    /// Database to write to; created at start if missing.
    pub database: String,
    /// User for HTTP basic authentication; none when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable that holds `username`'s password
    /// (the password itself never appears in config). Needs `username`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Records (lines) per write request.
    #[serde(default = "default_batch_size")]
    pub batch_size: NonZeroUsize,
}

/// `type = "influxdb_v2"`: InfluxDB 2.x, or VictoriaMetrics, through
/// `/api/v2/write?org=...&bucket=...&precision=ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxDbV2Config {
    /// Base URL of the server, e.g. `http://127.0.0.1:8086`. Must not hold
    /// credentials.
    pub url: String,
    /// Organization name.
    pub org: String,
    /// Bucket to write to (must exist).
    pub bucket: String,
    /// Name of the environment variable that holds the API token. When it is
    /// not set, requests carry no token (fine for VictoriaMetrics without
    /// auth; InfluxDB 2 will answer 401) and a warning is logged at start.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Records (lines) per write request.
    #[serde(default = "default_batch_size")]
    pub batch_size: NonZeroUsize,
    /// How a restated window (late telemetry, `engine.correction_horizon`)
    /// reaches the store: `overwrite` (InfluxDB) or `later_sample`
    /// (VictoriaMetrics, which does not overwrite a sample).
    #[serde(default)]
    pub restatements: Restatements,
}

/// How a line-protocol store takes a restated record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restatements {
    /// The same point again, with the new values and its `revision`:
    /// InfluxDB overwrites the point's fields.
    #[default]
    Overwrite,
    /// A later sample of the same series: the point's timestamp plus its
    /// revision in milliseconds. VictoriaMetrics keeps one value per
    /// millisecond and does not reliably replace it, so the newest revision
    /// is the window's last sample (`last_over_time`, or the highest
    /// timestamp below the window start's next second in an export).
    LaterSample,
}

/// [`DEFAULT_BATCH_SIZE`].
fn default_batch_size() -> NonZeroUsize {
    NonZeroUsize::new(DEFAULT_BATCH_SIZE).expect("constant is non-zero")
}

/// `INFLUXDB_TOKEN`, the variable the influx CLI uses too.
fn default_token_env() -> String {
    "INFLUXDB_TOKEN".to_owned()
}

fn non_empty(field: &'static str, value: &str) -> Result<(), SinkError> {
    if value.trim().is_empty() {
        return Err(SinkError::Config {
            field,
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

/// The base URL parses and none of the named `fields` is empty.
fn required(url: &str, fields: &[(&'static str, &str)]) -> Result<(), SinkError> {
    parse_base_url(url)?;
    fields
        .iter()
        .try_for_each(|(field, value)| non_empty(field, value))
}

impl InfluxDbV1Config {
    pub(crate) fn validate(&self) -> Result<(), SinkError> {
        required(&self.url, &[("database", &self.database)])?;
        if let Some(username) = &self.username {
            non_empty("username", username)?;
        }
        if let Some(var) = &self.password_env {
            non_empty("password_env", var)?;
            if self.username.is_none() {
                return Err(SinkError::Config {
                    field: "password_env",
                    reason: "needs `username`".into(),
                });
            }
        }
        Ok(())
    }
}

impl InfluxDbV2Config {
    pub(crate) fn validate(&self) -> Result<(), SinkError> {
        required(
            &self.url,
            &[
                ("org", &self.org),
                ("bucket", &self.bucket),
                ("token_env", &self.token_env),
            ],
        )
    }
}
