//! InfluxDB sinks: the same line protocol ([`encode`]) written through the v1
//! `/write` API ([`v1`], InfluxDB 1.x) or the v2 `/api/v2/write` API ([`v2`],
//! InfluxDB 2.x and VictoriaMetrics, which names series
//! `{measurement}_{field}`).
//!
//! Series identity is measurement + tag set, the timestamp is the window
//! start: writing a record again overwrites its fields in InfluxDB. (In
//! VictoriaMetrics see `docs/SCHEMA.md` for how duplicates resolve.)

mod config;
pub mod encode;
pub mod v1;
pub mod v2;

use std::time::Duration;

use reqwest::{StatusCode, Url};
use thiserror::Error;
use tracing::warn;

pub use config::{DEFAULT_BATCH_SIZE, InfluxDbV1Config, InfluxDbV2Config, Restatements};
pub use v1::InfluxDbV1Sink;
pub use v2::InfluxDbV2Sink;

use crate::sinks::SinkError;
use encode::EncodeError;

/// Longest time to establish a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time for one whole request, response included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest server response body kept in an error.
const MAX_ERROR_BODY: usize = 1024;

/// Why an HTTP exchange with the store failed.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The request did not complete: connection refused or reset, timeout,
    /// or a broken response.
    /// Its text is redacted ([`crate::secrets`]).
    #[error("request failed: {}", crate::secrets::redact(&.0.to_string()))]
    Transport(#[source] reqwest::Error),
    /// The server answered with an error status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The response body (truncated).
        body: String,
    },
    /// The server answered with success but reported an error in the body
    /// (InfluxQL statements), or the body did not parse.
    #[error("{0}")]
    Response(String),
}

impl HttpError {
    /// Connection problems, timeouts, 5xx, 429 and 408 are retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Transport(e) => !e.is_builder(),
            HttpError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            HttpError::Response(_) => false,
        }
    }
}

/// The error for a write answered with a non-success status: 413 means the
/// batch must be split, everything else is an [`HttpError::Status`].
pub(crate) fn write_status_error(
    status: StatusCode,
    body: String,
    lines: usize,
    bytes: usize,
) -> SinkError {
    let body = truncate(body);
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        SinkError::WriteTooLarge { lines, bytes, body }
    } else {
        SinkError::InfluxWrite {
            lines,
            source: HttpError::Status {
                status: status.as_u16(),
                body,
            },
        }
    }
}

/// Keeps the first [`MAX_ERROR_BODY`] bytes (on a char boundary).
pub(crate) fn truncate(mut body: String) -> String {
    if body.len() > MAX_ERROR_BODY {
        let mut end = MAX_ERROR_BODY;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
        body.push('…');
    }
    body.trim_end().to_owned()
}

/// Parses the configured base URL: http or https, no credentials (they come
/// from the environment), and a path ending in `/` so endpoints join below
/// any prefix (e.g. VictoriaMetrics' `/influx/`).
pub(crate) fn parse_base_url(url: &str) -> Result<Url, SinkError> {
    let bad = |reason: String| SinkError::Config {
        field: "url",
        reason,
    };
    let mut parsed = Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme must be http or https, not `{}`",
            parsed.scheme()
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "must not hold credentials; use the username/password_env or token_env fields".into(),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("must not have a query or fragment".into()));
    }
    if !parsed.path().ends_with('/') {
        let path = format!("{}/", parsed.path());
        parsed.set_path(&path);
    }
    Ok(parsed)
}

/// The HTTP client both sinks use: bounded connect and request times.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
}

/// Logs each record the encoder refused; returns how many there were.
pub(crate) fn log_rejected(sink: &str, rejected: &[(usize, EncodeError)]) -> u64 {
    for (index, error) in rejected {
        warn!(sink, index, %error, "record cannot be written as line protocol; skipped");
    }
    rejected.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_gets_a_trailing_slash_and_keeps_its_prefix() {
        let url = parse_base_url("http://127.0.0.1:8428").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8428/");
        assert_eq!(
            url.join("write").unwrap().as_str(),
            "http://127.0.0.1:8428/write"
        );
        let url = parse_base_url("https://vm.example/influx").unwrap();
        assert_eq!(
            url.join("write").unwrap().as_str(),
            "https://vm.example/influx/write"
        );
    }

    #[test]
    fn base_url_refuses_credentials_and_other_schemes() {
        for bad in [
            "http://u:p@host",
            "http://u@host",
            "ftp://host",
            "host:8086",
            "http://host/?db=x",
        ] {
            assert!(
                matches!(
                    parse_base_url(bad),
                    Err(SinkError::Config { field: "url", .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn write_status_maps_413_to_split_needed() {
        let err = write_status_error(StatusCode::PAYLOAD_TOO_LARGE, "too big".into(), 10, 2000);
        assert!(matches!(
            err,
            SinkError::WriteTooLarge {
                lines: 10,
                bytes: 2000,
                ..
            }
        ));
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("split needed"), "{err}");

        let err = write_status_error(StatusCode::BAD_REQUEST, "field type conflict".into(), 1, 1);
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("field type conflict"), "{err}");
        let err = write_status_error(StatusCode::SERVICE_UNAVAILABLE, String::new(), 1, 1);
        assert!(err.is_retryable());
        let err = write_status_error(StatusCode::TOO_MANY_REQUESTS, String::new(), 1, 1);
        assert!(err.is_retryable());
        let err = write_status_error(StatusCode::UNAUTHORIZED, String::new(), 1, 1);
        assert!(!err.is_retryable());
    }

    #[test]
    fn long_bodies_are_truncated_on_a_char_boundary() {
        let body = "é".repeat(MAX_ERROR_BODY);
        let short = truncate(body);
        assert!(short.len() <= MAX_ERROR_BODY + '…'.len_utf8());
        assert!(short.ends_with('…'));
    }
}
