//! HTTP for one AEMP source: authentication (Basic, or an OAuth2
//! client-credentials token renewed before expiry and after a 401), the
//! source's request spacing, a bounded body, and retries of 429 and 5xx
//! answers that honour `Retry-After` (seconds or an HTTP date) and back off
//! exponentially without one. Secrets come from the environment and are
//! registered for redaction before first use.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, RETRY_AFTER};
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{AempAuth, AempConfig};
use super::metrics::{AempError, SourceMetrics};
use crate::retry::{Backoff, parse_retry_after};
use crate::secrets::Secret;

/// The source cannot be set up.
#[derive(Debug, Error)]
pub enum SetupError {
    /// A secret's environment variable is not set.
    #[error("aemp source `{source_name}`: {field}: environment variable `{var}` is not set")]
    MissingSecret {
        /// The source.
        source_name: String,
        /// `auth.password_env` or `auth.client_secret_env`.
        field: &'static str,
        /// The variable.
        var: String,
    },
    /// The HTTP client cannot be built.
    #[error("aemp source `{source_name}`: HTTP client: {message}")]
    Client {
        /// The source.
        source_name: String,
        /// Why.
        message: String,
    },
}

/// A request that failed for good (after its attempts).
#[derive(Debug, Error)]
pub enum FetchError {
    /// The service is stopping.
    #[error("stopping")]
    Stopped,
    /// Failed with `reason`.
    #[error("{url}: {message}")]
    Failed {
        /// Counter it goes to.
        reason: AempError,
        /// The URL (no secret: AEMP URLs carry none).
        url: String,
        /// What happened.
        message: String,
    },
}

impl FetchError {
    fn failed(reason: AempError, url: &reqwest::Url, message: impl Into<String>) -> Self {
        Self::Failed {
            reason,
            url: url.to_string(),
            message: message.into(),
        }
    }
}

enum Credentials {
    None,
    Basic {
        username: String,
        password: Secret,
    },
    Oauth2 {
        token_url: reqwest::Url,
        client_id: String,
        secret: Secret,
        scope: Option<String>,
        token: Option<(Secret, Instant)>,
    },
}

/// The HTTP side of one source.
pub struct Client {
    http: reqwest::Client,
    config: Arc<AempConfig>,
    credentials: Credentials,
    next_request: Instant,
    metrics: Arc<SourceMetrics>,
}

/// Retries without a `Retry-After`: 1 s doubling to 60 s.
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(60),
    max_retries: u32::MAX,
};

/// Delay before attempt `attempt + 1` without a `Retry-After`.
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF.delay(attempt, 1.0)
}

impl Client {
    /// A client for `config`, its secrets read from the environment.
    pub fn new(config: Arc<AempConfig>, metrics: Arc<SourceMetrics>) -> Result<Self, SetupError> {
        let secret = |field: &'static str, var: &str| {
            std::env::var(var)
                .map(Secret::new)
                .map_err(|_| SetupError::MissingSecret {
                    source_name: config.name.clone(),
                    field,
                    var: var.to_owned(),
                })
        };
        let credentials = match &config.auth {
            AempAuth::None => Credentials::None,
            AempAuth::Basic {
                username,
                password_env,
            } => Credentials::Basic {
                username: username.clone(),
                password: secret("auth.password_env", password_env)?,
            },
            AempAuth::Oauth2 {
                token_url,
                client_id,
                client_secret_env,
                scope,
            } => Credentials::Oauth2 {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                secret: secret("auth.client_secret_env", client_secret_env)?,
                scope: scope.clone(),
                token: None,
            },
        };
        // A redirect stays within the source's origin, as its `next` links
        // must: another host's answers were taken as the vendor's.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let same = (attempt.previous().first())
                .is_none_or(|first| first.origin() == attempt.url().origin());
            match (same, attempt.previous().len()) {
                (false, _) => attempt.error("a redirect to another origin, not followed"),
                (true, 10..) => attempt.error("more than 10 redirects"),
                (true, _) => attempt.follow(),
            }
        });
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(redirects)
            .user_agent(concat!("fleetpulse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError::Client {
                source_name: config.name.clone(),
                message: crate::secrets::http_error(e),
            })?;
        Ok(Self {
            http,
            config,
            credentials,
            next_request: Instant::now(),
            metrics,
        })
    }

    /// GETs `url`, retrying 429 and 5xx, and returns the body.
    pub async fn get(
        &mut self,
        url: &reqwest::Url,
        stop: &CancellationToken,
    ) -> Result<Vec<u8>, FetchError> {
        let attempts = self.config.attempts.max(1);
        let mut last = None;
        for attempt in 0..attempts {
            let wait = match self.attempt(url, stop).await {
                Ok(body) => return Ok(body),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry { error, after }) => {
                    last = Some(error);
                    after.unwrap_or_else(|| backoff(attempt))
                }
            };
            if wait > self.config.max_retry_after {
                break;
            }
            if attempt + 1 < attempts {
                tokio::select! {
                    _ = stop.cancelled() => return Err(FetchError::Stopped),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        Err(last.unwrap_or_else(|| FetchError::failed(AempError::Transport, url, "no attempt")))
    }

    async fn attempt(
        &mut self,
        url: &reqwest::Url,
        stop: &CancellationToken,
    ) -> Result<Vec<u8>, Attempt> {
        // The source's own spacing of requests (its rate limit).
        let spacing = self.config.min_request_interval;
        let start = self.next_request.max(Instant::now());
        self.next_request = start + spacing;
        tokio::select! {
            _ = stop.cancelled() => return Err(Attempt::Fatal(FetchError::Stopped)),
            _ = tokio::time::sleep_until(start) => {}
        }
        let mut request = self
            .http
            .get(url.clone())
            .header(ACCEPT, self.config.format.accept());
        match &self.credentials {
            Credentials::None => {}
            Credentials::Basic { username, password } => {
                request = request.basic_auth(username, Some(password.expose()));
            }
            Credentials::Oauth2 { .. } => {
                let token = self.token(stop).await.map_err(Attempt::Fatal)?;
                request = request.bearer_auth(token.expose());
            }
        }
        self.metrics.requests.fetch_add(1, Relaxed);
        let transport = |e: reqwest::Error| Attempt::Retry {
            error: FetchError::failed(AempError::Transport, url, crate::secrets::http_error(e)),
            after: None,
        };
        let response = tokio::select! {
            _ = stop.cancelled() => return Err(Attempt::Fatal(FetchError::Stopped)),
            response = request.send() => response.map_err(transport)?,
        };
        let status = response.status();
        let after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.metrics.throttled.fetch_add(1, Relaxed);
            return Err(Attempt::Retry {
                error: FetchError::failed(AempError::Throttled, url, "429 Too Many Requests"),
                after,
            });
        }
        if status.is_server_error() {
            return Err(Attempt::Retry {
                error: FetchError::failed(AempError::Http5xx, url, status.to_string()),
                after,
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // A token may have been revoked early: a fresh one next time.
            if let Credentials::Oauth2 { token, .. } = &mut self.credentials {
                let had = token.take().is_some();
                if had && status == StatusCode::UNAUTHORIZED {
                    return Err(Attempt::Retry {
                        error: FetchError::failed(AempError::Auth, url, status.to_string()),
                        after: Some(Duration::ZERO),
                    });
                }
            }
            return Err(Attempt::Fatal(FetchError::failed(
                AempError::Auth,
                url,
                status.to_string(),
            )));
        }
        if !status.is_success() {
            return Err(Attempt::Fatal(FetchError::failed(
                AempError::HttpStatus,
                url,
                status.to_string(),
            )));
        }
        self.body(url, response).await.map_err(Attempt::Fatal)
    }

    /// Reads at most `max_body_bytes`; a longer body is refused without
    /// reading the rest.
    async fn body(
        &self,
        url: &reqwest::Url,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, FetchError> {
        let limit = self.config.max_body_bytes;
        let too_large = |n: u64| {
            FetchError::failed(
                AempError::TooLarge,
                url,
                format!("body of {n} bytes or more, over max_body_bytes ({limit})"),
            )
        };
        if let Some(length) = response.content_length()
            && length > limit as u64
        {
            return Err(too_large(length));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            FetchError::failed(AempError::Transport, url, crate::secrets::http_error(e))
        })? {
            if body.len() + chunk.len() > limit {
                return Err(too_large((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The current bearer token, fetched when missing or about to expire.
    async fn token(&mut self, stop: &CancellationToken) -> Result<Secret, FetchError> {
        let Credentials::Oauth2 {
            token_url,
            client_id,
            secret,
            scope,
            token,
        } = &mut self.credentials
        else {
            unreachable!("token() is only called for OAuth2");
        };
        if let Some((value, expires)) = token
            && *expires > Instant::now()
        {
            return Ok(value.clone());
        }
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if let Some(scope) = scope {
            form.push(("scope", scope.clone()));
        }
        let request = self
            .http
            .post(token_url.clone())
            .basic_auth(&*client_id, Some(secret.expose()))
            .form(&form);
        self.metrics.requests.fetch_add(1, Relaxed);
        let failed = |message: String| FetchError::failed(AempError::Auth, token_url, message);
        let response = tokio::select! {
            _ = stop.cancelled() => return Err(FetchError::Stopped),
            response = request.send() => response.map_err(|e| failed(crate::secrets::http_error(e)))?,
        };
        if !response.status().is_success() {
            return Err(failed(format!("token endpoint: {}", response.status())));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            access_token: String,
            /// Seconds, a number or (some vendors) a string of one.
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| failed(format!("token answer: {}", crate::secrets::http_error(e))))?;
        if answer.access_token.trim().is_empty() {
            return Err(failed("token answer: an empty access_token".into()));
        }
        let value = Secret::new(answer.access_token);
        // Renewed a little before it expires, and at least daily: an
        // `expires_in` of 2^64 - 1 overflowed the clock and killed the
        // source.
        let expires_in = (answer.expires_in.as_ref()).and_then(|v| match v {
            serde_json::Value::String(text) => text.trim().parse::<u64>().ok(),
            number => number.as_u64(),
        });
        // At least a minute (`expires_in: 0` fetched a token for every
        // request), at most a day.
        let life = expires_in.unwrap_or(3600).saturating_sub(30);
        let life = Duration::from_secs(life.clamp(MIN_TOKEN_LIFE_S, MAX_TOKEN_LIFE_S));
        *token = Some((value.clone(), Instant::now() + life));
        Ok(value)
    }
}

/// The longest a token is kept before it is fetched again, seconds.
const MAX_TOKEN_LIFE_S: u64 = 86_400;
/// The shortest, seconds: a 401 fetches one again at once anyway.
const MIN_TOKEN_LIFE_S: u64 = 60;

enum Attempt {
    Retry {
        error: FetchError,
        after: Option<Duration>,
    },
    Fatal(FetchError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), Duration::from_secs(60));
    }
}
