//! Webhook delivery: one POST of a Slack-compatible JSON body per alert
//! transition.
//!
//! **Retries.** Connection errors, timeouts, 5xx and 429 are retried with
//! exponential backoff and jitter ([`Backoff::delay_honouring`]), honouring `Retry-After`
//! (seconds or an HTTP date) up to the schedule's longest delay, until the
//! webhook takes the notification: it waits in the outbox meanwhile, and
//! after `max_retries` the failure is logged as an error (then every 20th
//! retry, the others at debug level). Any other status (400, 401, 403, 404, ...) will not get better by
//! repeating the request: it is logged and the notification is dropped and
//! counted as failed at once; so is a redirect, which is not followed (the
//! URL's secret would go to another host). Of an answer's body only the
//! first KiB is read, for the log. Deciding ([`classify`]) and waiting
//! ([`Backoff::delay_honouring`], [`parse_retry_after`]) are plain functions; [`Webhook`]
//! only sends.
//!
//! **Idempotency.** Every attempt of a notification carries the same
//! `Idempotency-Key` header, its `notification_id`.
//!
//! **Secrets.** The URL is a [`SecretUrl`]: logs show only its origin.
//! Client errors lose their URL and response bodies are redacted before
//! they are logged (a receiver may echo the path).

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use serde_json::Value;

use super::ChannelReport;
use super::format::{AlertMessage, slack_body};
use crate::retry::{Backoff, parse_retry_after};
use crate::secrets::{self, SecretUrl};

/// The header that carries the notification id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// How one notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The webhook took it (2xx).
    Delivered,
    /// The webhook refused it for good (a 4xx other than 429).
    Rejected,
}

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver took it (2xx).
    Delivered,
    /// Worth another attempt: connection error, timeout, 5xx, 429.
    Retry,
    /// Will not succeed by repeating: other statuses.
    Reject,
}

/// The verdict for an HTTP status code.
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Reject,
    }
}

/// Result of one POST.
#[derive(Debug)]
enum Attempt {
    /// The receiver answered.
    Status {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    /// No answer: connection refused, reset, timed out (redacted text).
    Failed(String),
}

/// A webhook endpoint and the HTTP client that posts to it.
#[derive(Debug, Clone)]
pub struct Webhook {
    client: reqwest::Client,
    url: SecretUrl,
    backoff: Backoff,
}

impl Webhook {
    /// A client for `url` (its secret parts are registered for redaction)
    /// with a per-request `timeout`.
    pub fn new(
        url: reqwest::Url,
        timeout: Duration,
        backoff: Backoff,
    ) -> Result<Self, reqwest::Error> {
        let url = SecretUrl::new(url);
        // A redirect is not followed: the URL's secret would go to another
        // host (as the Referer), and a POST turned into a GET that answers
        // 200 would count as delivered while nobody got the alert.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .user_agent(concat!("fleetpulse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(reqwest::Error::without_url)?;
        Ok(Self {
            client,
            url,
            backoff,
        })
    }

    /// The endpoint without path or query, which may hold a secret.
    pub fn describe(&self) -> String {
        self.url.origin()
    }

    async fn post(&self, body: &Value, key: &str) -> Attempt {
        let request = self
            .client
            .post(self.url.expose().clone())
            .header(IDEMPOTENCY_KEY, key)
            .json(body);
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
                let body = head_of(response).await;
                Attempt::Status {
                    status,
                    retry_after,
                    body,
                }
            }
            Err(error) => Attempt::Failed(secrets::http_error(error)),
        }
    }

    /// Posts one notification, retrying as described in the module docs
    /// until the webhook takes or refuses it; counts in `report`. Cancel it
    /// to give up (the notification then stays in the outbox).
    pub async fn deliver(
        &self,
        message: &AlertMessage,
        report: &mut ChannelReport,
        jitter: &mut impl FnMut() -> f64,
    ) -> Outcome {
        let body = slack_body(message);
        let mut retry = 0u32;
        loop {
            let attempt = self.post(&body, &message.notification_id).await;
            let (verdict, retry_after, why) = match attempt {
                Attempt::Status {
                    status,
                    retry_after,
                    body,
                } => (
                    classify(status),
                    retry_after,
                    match status {
                        300..=399 => format!(
                            "HTTP {status}: a redirect, not followed (the URL's secret would go \
                             to another host): set the URL it leads to"
                        ),
                        _ => format!(
                            "HTTP {status}: {}",
                            secrets::redact(&body.chars().take(200).collect::<String>())
                        ),
                    },
                ),
                Attempt::Failed(error) => (Verdict::Retry, None, error),
            };
            match verdict {
                Verdict::Delivered => {
                    report.delivered += 1;
                    tracing::debug!(
                        webhook = %self.describe(), customer = %message.customer,
                        rule = %message.rule, status = %message.status,
                        notification_id = %message.notification_id, retries = retry,
                        "alert posted"
                    );
                    return Outcome::Delivered;
                }
                Verdict::Retry => {
                    let delay = self.backoff.delay_honouring(retry, jitter(), retry_after);
                    retry = retry.saturating_add(1);
                    report.retries += 1;
                    if retry <= self.backoff.max_retries {
                        tracing::warn!(
                            webhook = %self.describe(), customer = %message.customer,
                            rule = %message.rule, retry, max_retries = self.backoff.max_retries,
                            ?delay, "alert webhook failed ({why}); retrying"
                        );
                    } else if retry == self.backoff.max_retries + 1 || retry.is_multiple_of(20) {
                        tracing::error!(
                            webhook = %self.describe(), customer = %message.customer,
                            rule = %message.rule, status = %message.status, retries = retry,
                            ?delay,
                            "alert webhook still failing ({why}); the alert stays in the \
                             outbox and is retried until the webhook takes it"
                        );
                    } else {
                        tracing::debug!(
                            webhook = %self.describe(), customer = %message.customer,
                            rule = %message.rule, retry, ?delay,
                            "alert webhook failed ({why}); retrying"
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
                Verdict::Reject => {
                    report.failed += 1;
                    tracing::error!(
                        webhook = %self.describe(), customer = %message.customer,
                        rule = %message.rule, status = %message.status, retries = retry,
                        "alert webhook refused the alert ({why}); alert dropped"
                    );
                    return Outcome::Rejected;
                }
            }
        }
    }
}

/// Bytes of an answer's body kept for the log (which shows 200
/// characters): a receiver answering gigabytes costs no memory.
const BODY_KEPT: usize = 1024;

/// The first [`BODY_KEPT`] bytes of `response`'s body; the rest is not read.
async fn head_of(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < BODY_KEPT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = BODY_KEPT - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_delivered_retried_or_rejected() {
        for status in [200, 201, 204] {
            assert_eq!(classify(status), Verdict::Delivered, "{status}");
        }
        for status in [429, 500, 502, 503, 504] {
            assert_eq!(classify(status), Verdict::Retry, "{status}");
        }
        for status in [301, 400, 401, 403, 404, 410, 413] {
            assert_eq!(classify(status), Verdict::Reject, "{status}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now: jiff::Timestamp = "2015-10-21T07:27:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn describe_hides_the_secret_path() {
        let url = reqwest::Url::parse("https://hooks.example.com/services/T0/B0/secret").unwrap();
        let webhook = Webhook::new(url, Duration::from_secs(1), Backoff::default()).unwrap();
        assert_eq!(webhook.describe(), "https://hooks.example.com");
    }
}
