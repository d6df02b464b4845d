//! The InfluxDB 1.x sink: `POST /write?db=...&precision=ns` with line
//! protocol, HTTP basic authentication when a username is configured.

use fleetpulse_engine::Output;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder, Url};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::encode::encode_batch;
use super::{
    HttpError, InfluxDbV1Config, client_builder, log_rejected, parse_base_url, truncate,
    write_status_error,
};
use crate::sinks::{Secret, SinkError};

/// An open InfluxDB 1.x sink.
#[derive(Debug)]
pub struct InfluxDbV1Sink {
    client: reqwest::Client,
    base: Url,
    write_url: Url,
    database: String,
    auth: Option<BasicAuth>,
    rejected: u64,
    /// Points beyond the retention policy were reported once.
    warned_beyond_retention: bool,
}

/// Basic-auth credentials; the password's `Debug` is redacted.
#[derive(Debug)]
struct BasicAuth {
    username: String,
    password: Option<Secret>,
}

impl InfluxDbV1Sink {
    /// Reads the password from the environment, checks `/ping`, and creates
    /// the database unless `SHOW DATABASES` lists it.
    pub async fn open(config: &InfluxDbV1Config) -> Result<InfluxDbV1Sink, SinkError> {
        let sink = Self::new(config)?;
        sink.ping().await?;
        sink.ensure_database().await?;
        Ok(sink)
    }

    /// The sink for `config`, its password read from the environment;
    /// makes no request.
    pub(crate) fn new(config: &InfluxDbV1Config) -> Result<InfluxDbV1Sink, SinkError> {
        config.validate()?;
        let base = parse_base_url(&config.url)?;
        let auth = match &config.username {
            None => None,
            Some(username) => Some(BasicAuth {
                username: username.clone(),
                password: config
                    .password_env
                    .as_deref()
                    .map(|var| Secret::from_env("password_env", var))
                    .transpose()?
                    // Redacted from every log line and error from now on.
                    .inspect(|password| crate::secrets::register(password.expose())),
            }),
        };
        let client = client_builder().build().map_err(SinkError::Client)?;
        let sink = InfluxDbV1Sink {
            client,
            write_url: base.join("write").expect("relative path joins"),
            base,
            database: config.database.clone(),
            auth,
            rejected: 0,
            warned_beyond_retention: false,
        };
        Ok(sink)
    }

    /// How long the database keeps a point: the duration of its default
    /// retention policy, which `/write` without `rp` writes into (`None`:
    /// forever, InfluxDB's `0s`). An error when the database does not
    /// exist yet (the service creates it, keeping everything).
    pub(crate) async fn default_retention(&self) -> Result<Option<std::time::Duration>, HttpError> {
        let statement = format!("SHOW RETENTION POLICIES ON {}", quote_ident(&self.database));
        let json = self.influxql(Method::GET, &statement).await?;
        let default = default_policy_duration(&json).ok_or_else(|| {
            HttpError::Response(format!("`{statement}`: no default policy in {json}"))
        })?;
        // A Go duration (`720h0m0s`), which humantime reads.
        humantime::parse_duration(default)
            .map(|d| (!d.is_zero()).then_some(d))
            .map_err(|e| HttpError::Response(format!("`{statement}`: `{default}`: {e}")))
    }

    /// The sink's base URL and client, for other requests to its server.
    pub(crate) fn endpoint(&self) -> (&reqwest::Client, &Url) {
        (&self.client, &self.base)
    }

    /// Writes the batch as one request. The server answers 204 when every
    /// line is stored.
    pub async fn write(&mut self, records: &[Output]) -> Result<(), SinkError> {
        let batch = encode_batch(records);
        self.rejected += log_rejected(&self.describe(), &batch.rejected);
        if batch.lines == 0 {
            return Ok(());
        }
        let (lines, bytes) = (batch.lines, batch.body.len());
        let response = self
            .request(Method::POST, self.write_url.clone())
            .query(&[("db", self.database.as_str()), ("precision", "ns")])
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(batch.body)
            .send()
            .await
            .map_err(|e| SinkError::InfluxWrite {
                lines,
                source: HttpError::Transport(e),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::BAD_REQUEST
            && let Some(dropped) = beyond_retention(&body)
        {
            // The rest of the batch is stored: not a failed write, and not
            // one to retry.
            if !self.warned_beyond_retention {
                warn!(
                    sink = %self.describe(), points = dropped, lines,
                    "InfluxDB did not keep points older than the database's retention policy (the rest of the batch is stored; later ones are counted as rejected records only); `fleetpulse backfill` names the policy"
                );
            }
            self.warned_beyond_retention = true;
            self.rejected += dropped;
            return Ok(());
        }
        Err(write_status_error(status, body, lines, bytes))
    }

    /// Records skipped as unrepresentable since the last call; resets the count.
    pub fn take_rejected(&mut self) -> u64 {
        std::mem::take(&mut self.rejected)
    }

    /// `influxdb_v1 <url> db=<database>`.
    pub fn describe(&self) -> String {
        format!("influxdb_v1 {} db={}", self.base, self.database)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.client.request(method, url);
        match &self.auth {
            Some(auth) => {
                request.basic_auth(&auth.username, auth.password.as_ref().map(Secret::expose))
            }
            None => request,
        }
    }

    async fn ping(&self) -> Result<(), SinkError> {
        let url = self.base.join("ping").expect("relative path joins");
        let ping_err = |source| SinkError::Ping {
            url: url.to_string(),
            source,
        };
        let response = self
            .request(Method::GET, url.clone())
            .send()
            .await
            .map_err(|e| ping_err(HttpError::Transport(e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = truncate(response.text().await.unwrap_or_default());
            return Err(ping_err(HttpError::Status {
                status: status.as_u16(),
                body,
            }));
        }
        debug!(url = %url, "InfluxDB answered ping");
        Ok(())
    }

    async fn ensure_database(&self) -> Result<(), SinkError> {
        let create_err = |source| SinkError::CreateDatabase {
            database: self.database.clone(),
            source,
        };
        let listed = self
            .influxql(Method::GET, "SHOW DATABASES")
            .await
            .map_err(create_err)?;
        if database_names(&listed).iter().any(|n| *n == self.database) {
            return Ok(());
        }
        let statement = format!("CREATE DATABASE {}", quote_ident(&self.database));
        self.influxql(Method::POST, &statement)
            .await
            .map_err(create_err)?;
        info!(database = %self.database, url = %self.base, "created InfluxDB database");
        Ok(())
    }

    /// Runs one InfluxQL statement through `/query` and returns its JSON.
    async fn influxql(&self, method: Method, statement: &str) -> Result<Value, HttpError> {
        let response = self
            .request(
                method,
                self.base.join("query").expect("relative path joins"),
            )
            .query(&[("q", statement)])
            .send()
            .await
            .map_err(HttpError::Transport)?;
        let status = response.status();
        let body = response.text().await.map_err(HttpError::Transport)?;
        if !status.is_success() {
            return Err(HttpError::Status {
                status: status.as_u16(),
                body: truncate(body),
            });
        }
        let json: Value = serde_json::from_str(&body).map_err(|e| {
            HttpError::Response(format!(
                "`{statement}` answer is not JSON ({e}): {}",
                truncate(body)
            ))
        })?;
        match statement_error(&json) {
            Some(error) => Err(HttpError::Response(format!("`{statement}`: {error}"))),
            None => Ok(json),
        }
    }
}

/// The database names in a `SHOW DATABASES` answer:
/// `{"results":[{"series":[{"values":[["_internal"],["fleet"]]}]}]}`.
fn database_names(json: &Value) -> Vec<&str> {
    json.pointer("/results/0/series/0/values")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|row| row.get(0).and_then(Value::as_str))
        .collect()
}

/// The points InfluxDB 1.x dropped from a write as older than the
/// retention policy, storing the rest: its 400 answer
/// `{"error":"partial write: points beyond retention policy dropped=2"}`.
/// `None` for any other answer (a partial write for another cause too).
fn beyond_retention(body: &str) -> Option<u64> {
    let json: Value = serde_json::from_str(body).ok()?;
    let error = json.get("error")?.as_str()?;
    let count = error.strip_prefix("partial write: points beyond retention policy dropped=")?;
    count.trim().parse().ok()
}

/// The duration of the default policy in a `SHOW RETENTION POLICIES`
/// answer: columns `name`, `duration`, `shardGroupDuration`, `replicaN`,
/// `default`.
fn default_policy_duration(json: &Value) -> Option<&str> {
    let series = json.pointer("/results/0/series/0")?;
    let columns = series.get("columns")?.as_array()?;
    let at = |name: &str| columns.iter().position(|c| c == name);
    let (duration, default) = (at("duration")?, at("default")?);
    (series.get("values")?.as_array()?.iter())
        .find(|row| row.get(default).and_then(Value::as_bool) == Some(true))?
        .get(duration)?
        .as_str()
}

/// The first statement error in an InfluxQL answer, if any.
fn statement_error(json: &Value) -> Option<String> {
    if let Some(error) = json.get("error").and_then(Value::as_str) {
        return Some(error.to_owned());
    }
    json.get("results")?
        .as_array()?
        .iter()
        .find_map(|r| r.get("error").and_then(Value::as_str))
        .map(str::to_owned)
}

/// An InfluxQL identifier in double quotes.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_database_names() {
        let json: Value = serde_json::from_str(
            r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],
                "values":[["_internal"],["fleet"]]}]}]}"#,
        )
        .unwrap();
        assert_eq!(database_names(&json), ["_internal", "fleet"]);
        let empty: Value = serde_json::from_str(r#"{"results":[{"statement_id":0}]}"#).unwrap();
        assert!(database_names(&empty).is_empty());
        assert_eq!(statement_error(&json), None);
    }

    #[test]
    fn reads_the_default_policy_s_duration() {
        let json: Value = serde_json::from_str(
            r#"{"results":[{"statement_id":0,"series":[{"columns":["name","duration",
                "shardGroupDuration","replicaN","default"],"values":[
                ["autogen","0s","168h0m0s",1,false],["month","720h0m0s","24h0m0s",1,true]]}]}]}"#,
        )
        .unwrap();
        assert_eq!(default_policy_duration(&json), Some("720h0m0s"));
        let none: Value = serde_json::from_str(r#"{"results":[{"statement_id":0}]}"#).unwrap();
        assert_eq!(default_policy_duration(&none), None);
    }

    #[test]
    fn a_partial_write_beyond_the_retention_policy_counts_its_points() {
        let body = r#"{"error":"partial write: points beyond retention policy dropped=3"}"#;
        assert_eq!(beyond_retention(body), Some(3));
        let other =
            r#"{"error":"partial write: field type conflict: input field \"x\" ... dropped=1"}"#;
        assert_eq!(beyond_retention(other), None);
        assert_eq!(beyond_retention("not json"), None);
    }

    #[test]
    fn finds_statement_errors() {
        let json: Value = serde_json::from_str(
            r#"{"results":[{"statement_id":0,"error":"unable to parse authentication credentials"}]}"#,
        )
        .unwrap();
        assert_eq!(
            statement_error(&json).as_deref(),
            Some("unable to parse authentication credentials")
        );
        let json: Value = serde_json::from_str(r#"{"error":"error parsing query"}"#).unwrap();
        assert_eq!(
            statement_error(&json).as_deref(),
            Some("error parsing query")
        );
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("fleet"), r#""fleet""#);
        assert_eq!(quote_ident(r#"we"ird\db"#), r#""we\"ird\\db""#);
    }

    #[tokio::test]
    async fn open_fails_fast_when_nothing_listens() {
        // A port that was free a moment ago: the connection is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = InfluxDbV1Config {
            url: format!("http://127.0.0.1:{port}"),
            database: "fleet".into(),
            username: None,
            password_env: None,
            batch_size: std::num::NonZeroUsize::new(10).unwrap(),
        };
        let err = InfluxDbV1Sink::open(&config).await.unwrap_err();
        assert!(matches!(err, SinkError::Ping { .. }), "{err}");
        assert!(err.is_retryable(), "{err}");
    }
}
