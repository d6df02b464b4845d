//! The InfluxDB v2 sink, through the `influxdb2` crate's
//! `write_line_protocol` (`POST /api/v2/write?org=...&bucket=...&precision=ns`,
//! `Authorization: Token ...`). VictoriaMetrics serves the same endpoint, so
//! this sink writes to it unchanged.

use fleetpulse_engine::Output;
use influxdb2::RequestError;
use tracing::warn;

use super::encode::encode_batch;
use super::{
    HttpError, InfluxDbV2Config, client_builder, log_rejected, parse_base_url, write_status_error,
};
use crate::sinks::{Secret, SinkError};

/// `records` with every restated window moved `revision` ms later (see
/// [`super::Restatements::LaterSample`]); borrowed when none is restated.
fn later_samples(records: &[Output]) -> std::borrow::Cow<'_, [Output]> {
    let restated = |r: &Output| match r {
        Output::Customer(k) => k.revision > 0,
        Output::Device(d) => d.revision > 0,
        Output::Portfolio(p) => p.revision > 0,
        _ => false,
    };
    if !records.iter().any(restated) {
        return std::borrow::Cow::Borrowed(records);
    }
    let moved = records.iter().cloned().map(|mut r| {
        match &mut r {
            Output::Customer(k) => k.window_start += u64::from(k.revision),
            Output::Device(d) => d.window_start += u64::from(d.revision),
            Output::Portfolio(p) => p.window_start += u64::from(p.revision),
            _ => {}
        }
        r
    });
    std::borrow::Cow::Owned(moved.collect())
}

/// An open InfluxDB v2 sink.
#[derive(Debug)]
pub struct InfluxDbV2Sink {
    /// The client keeps the token in a `secrecy::Secret`: its `Debug` is
    /// redacted.
    client: influxdb2::Client,
    org: String,
    bucket: String,
    describe: String,
    rejected: u64,
    restatements: super::Restatements,
}

impl InfluxDbV2Sink {
    /// Reads the token from the environment and builds the client. Makes no
    /// request: the first write shows whether the server is there.
    pub fn open(config: &InfluxDbV2Config) -> Result<InfluxDbV2Sink, SinkError> {
        Self::open_with(config, |var| std::env::var(var).ok())
    }

    /// [`InfluxDbV2Sink::open`] with an injectable environment, for tests.
    pub(crate) fn open_with(
        config: &InfluxDbV2Config,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Result<InfluxDbV2Sink, SinkError> {
        config.validate()?;
        let base = parse_base_url(&config.url)?;
        let token = match Secret::lookup("token_env", &config.token_env, env) {
            Ok(token) => {
                // Redacted from every log line and error from now on.
                crate::secrets::register(token.expose());
                Some(token)
            }
            Err(_) => {
                warn!(
                    var = %config.token_env,
                    url = %base,
                    "API token variable is not set: writing without a token \
                     (fine for VictoriaMetrics; InfluxDB 2 will refuse with 401)"
                );
                None
            }
        };
        // `ClientBuilder` panics on a URL it cannot parse; `base` has parsed.
        let client = influxdb2::ClientBuilder::with_builder(
            client_builder(),
            base.as_str(),
            config.org.clone(),
            token.as_ref().map_or("", Secret::expose),
        )
        .build()
        .map_err(|e| match e {
            influxdb2::BuildError::ReqwestClientError { source } => SinkError::Client(source),
        })?;
        Ok(InfluxDbV2Sink {
            client,
            org: config.org.clone(),
            bucket: config.bucket.clone(),
            describe: format!(
                "influxdb_v2 {base} org={} bucket={}",
                config.org, config.bucket
            ),
            rejected: 0,
            restatements: config.restatements,
        })
    }

    /// Writes the batch as one request; the server answers 204 on success.
    pub async fn write(&mut self, records: &[Output]) -> Result<(), SinkError> {
        let batch = match self.restatements {
            super::Restatements::Overwrite => encode_batch(records),
            super::Restatements::LaterSample => encode_batch(&later_samples(records)),
        };
        self.rejected += log_rejected(&self.describe, &batch.rejected);
        if batch.lines == 0 {
            return Ok(());
        }
        let (lines, bytes) = (batch.lines, batch.body.len());
        self.client
            .write_line_protocol(&self.org, &self.bucket, batch.body)
            .await
            .map_err(|e| map_request_error(e, lines, bytes))
    }

    /// Records skipped as unrepresentable since the last call; resets the count.
    pub fn take_rejected(&mut self) -> u64 {
        std::mem::take(&mut self.rejected)
    }

    /// `influxdb_v2 <url> org=<org> bucket=<bucket>`.
    pub fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// The `influxdb2` error as a [`SinkError`] with the same retry rules as v1.
fn map_request_error(error: RequestError, lines: usize, bytes: usize) -> SinkError {
    match error {
        RequestError::ReqwestProcessing { source } => SinkError::InfluxWrite {
            lines,
            source: HttpError::Transport(source),
        },
        RequestError::Http { status, text } => write_status_error(status, text, lines, bytes),
        RequestError::Serializing { source } => SinkError::InfluxWrite {
            lines,
            source: HttpError::Response(source.to_string()),
        },
        RequestError::Deserializing { text } => SinkError::InfluxWrite {
            lines,
            source: HttpError::Response(text),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use reqwest::StatusCode;

    use super::*;

    fn config(url: &str) -> InfluxDbV2Config {
        InfluxDbV2Config {
            url: url.into(),
            org: "acme".into(),
            bucket: "fleetpulse".into(),
            token_env: "FLEET_TOKEN".into(),
            batch_size: NonZeroUsize::new(100).unwrap(),
            restatements: Default::default(),
        }
    }

    #[test]
    fn open_keeps_the_token_out_of_debug_and_describe() {
        let sink = InfluxDbV2Sink::open_with(&config("http://127.0.0.1:8086"), |var| {
            assert_eq!(var, "FLEET_TOKEN");
            Some("tok-s3cr3t".into())
        })
        .unwrap();
        assert_eq!(
            sink.describe(),
            "influxdb_v2 http://127.0.0.1:8086/ org=acme bucket=fleetpulse"
        );
        assert!(!format!("{sink:?}").contains("tok-s3cr3t"));
        assert_eq!(crate::secrets::redact("token tok-s3cr3t"), "token ***");
    }

    #[test]
    fn open_without_a_token_and_with_a_bad_url() {
        InfluxDbV2Sink::open_with(&config("http://127.0.0.1:8428"), |_| None).unwrap();
        let err = InfluxDbV2Sink::open_with(&config("nope"), |_| None).unwrap_err();
        assert!(
            matches!(err, SinkError::Config { field: "url", .. }),
            "{err}"
        );
    }

    #[test]
    fn maps_influxdb2_errors() {
        let err = map_request_error(
            RequestError::Http {
                status: StatusCode::SERVICE_UNAVAILABLE,
                text: "busy".into(),
            },
            3,
            300,
        );
        assert!(err.is_retryable());
        let err = map_request_error(
            RequestError::Http {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                text: "bad line".into(),
            },
            3,
            300,
        );
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("bad line"), "{err}");
        let err = map_request_error(
            RequestError::Http {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                text: String::new(),
            },
            3,
            300,
        );
        assert!(matches!(err, SinkError::WriteTooLarge { lines: 3, .. }));
    }

    #[tokio::test]
    async fn write_to_a_closed_port_is_retryable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut sink =
            InfluxDbV2Sink::open_with(&config(&format!("http://127.0.0.1:{port}")), |_| None)
                .unwrap();
        let records = [fleetpulse_engine::Output::Customer(
            crate::sinks::fixtures::customer("acme", 0, 1),
        )];
        let err = sink.write(&records).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
}
