//! `[alerts]` in the service config: where at-risk alerts are delivered.
//!
//! ```toml
//! [alerts]
//! mqtt = true                          # cs/alerts/{customer} on the service's broker
//! topic_prefix = "cs/alerts"
//! webhook_url_env = "FLEETPULSE_ALERTS_WEBHOOK"   # or webhook_url = "https://..."
//! webhook_timeout = "10s"
//! route_segments = ["high-touch", "low-touch"]    # tech-touch: MQTT only
//! # outbox_dir = "/var/lib/fleetpulse/wal/alerts-outbox"   # default with [wal]
//! ```

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetpulse_engine::Segment;
use serde::Deserialize;

use crate::retry::Backoff;
use crate::secrets::Secret;

/// Alert delivery settings. Every alert transition (an episode opening or
/// resolving) goes to MQTT when `mqtt` is on, and to the webhook when one is
/// configured and the customer's segment is routed there.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Publish every alert transition as JSON to `{topic_prefix}/{customer}`
    /// (QoS 1, not retained) on the broker the service reads telemetry from,
    /// with the same credentials and the client id `{mqtt.client_id}-alerts`.
    /// MQTT gets every segment: it is the feed for automation (tech-touch
    /// nudges, CRM sync).
    pub mqtt: bool,
    /// Topic prefix for MQTT alerts; no wildcards, no trailing `/` needed.
    pub topic_prefix: String,
    /// Slack-compatible incoming-webhook URL that receives a message per
    /// alert transition. A webhook URL usually embeds a secret: prefer
    /// `webhook_url_env`. At most one of the two. Held as a [`Secret`]: it
    /// never appears in a log line, an error or the HTTP API.
    pub webhook_url: Option<Secret>,
    /// Name of the environment variable holding the webhook URL.
    pub webhook_url_env: Option<String>,
    /// Longest time one webhook request may take (connect to response).
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Delay before the first webhook retry; doubles per retry, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest delay between two webhook attempts; also the longest
    /// `Retry-After` that is honoured as given.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Webhook retries on connection errors, timeouts, 5xx and 429 before
    /// the failure is logged as an error; the notification then stays in the
    /// outbox and is retried every `retry_max` until the webhook takes it.
    /// Other 4xx are not retried: the notification is dropped and counted as
    /// failed.
    pub max_retries: u32,
    /// Segments whose alerts go to the webhook; absent means every segment.
    /// E.g. `["high-touch", "low-touch"]` keeps tech-touch accounts (handled
    /// by automated nudges) out of the CS channel; they still go to MQTT.
    pub route_segments: Option<Vec<Segment>>,
    /// Notifications waiting per channel (MQTT, webhook) in the outbox while
    /// a channel is slow or down. When a channel has this many, the alerts
    /// task stops taking records from the engine, which then waits:
    /// backpressure, nothing is dropped.
    pub queue: NonZeroUsize,
    /// How long waiting notifications may still take to be delivered once
    /// the record stream ends (at a stop: after the engine's drain, whose
    /// last days may open alerts; within `shutdown_timeout`). What is left
    /// stays in the outbox for the next start (without an outbox it is
    /// counted as failed).
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Directory of the alert outbox: every notification is written there
    /// (fsync) before its record batch counts as written, and removed once
    /// delivered, so notifications survive a crash or restart and are
    /// retried. Default: `{wal.dir}/alerts-outbox` when a `[wal]` is
    /// configured; without either, notifications wait in memory only.
    /// Relative paths are relative to the config file. One process per
    /// directory.
    pub outbox_dir: Option<PathBuf>,
}

fn default_mqtt() -> bool {
    true
}
fn default_topic_prefix() -> String {
    "cs/alerts".into()
}
fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}
fn default_max_retries() -> u32 {
    8
}
fn default_queue() -> NonZeroUsize {
    NonZeroUsize::new(1024).expect("non-zero")
}
fn default_flush_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            mqtt: default_mqtt(),
            topic_prefix: default_topic_prefix(),
            webhook_url: None,
            webhook_url_env: None,
            webhook_timeout: default_webhook_timeout(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            max_retries: default_max_retries(),
            route_segments: None,
            queue: default_queue(),
            flush_timeout: default_flush_timeout(),
            outbox_dir: None,
        }
    }
}

/// Name of the default outbox directory inside the WAL directory.
pub const OUTBOX_DIR_IN_WAL: &str = "alerts-outbox";

/// A field of `[alerts]` that parses but cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// Dotted path of the field, e.g. `alerts.webhook_url`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl AlertsConfig {
    /// True when alerts go anywhere: MQTT on, or a webhook configured.
    pub fn enabled(&self) -> bool {
        self.mqtt || self.has_webhook()
    }

    /// True when a webhook URL (or its variable) is configured.
    pub fn has_webhook(&self) -> bool {
        self.webhook_url.is_some() || self.webhook_url_env.is_some()
    }

    /// Whether alerts of `segment` go to the webhook.
    pub fn routes_to_webhook(&self, segment: Segment) -> bool {
        self.route_segments
            .as_ref()
            .is_none_or(|routed| routed.contains(&segment))
    }

    /// The outbox directory: `outbox_dir`, else `{wal_dir}/alerts-outbox`
    /// when the service has a WAL; `None`: in memory only.
    pub fn outbox_dir(&self, wal_dir: Option<&Path>) -> Option<PathBuf> {
        self.outbox_dir
            .clone()
            .or_else(|| wal_dir.map(|dir| dir.join(OUTBOX_DIR_IN_WAL)))
    }

    /// The webhook retry schedule.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.retry_initial,
            max: self.retry_max,
            max_retries: self.max_retries,
        }
    }

    /// Cross-field checks; the error names the field. Does not read the
    /// environment (that happens when the alerts task is set up).
    pub fn validate(&self) -> Result<(), InvalidField> {
        let invalid = |field, message: &str| {
            Err(InvalidField {
                field,
                message: message.to_owned(),
            })
        };
        let prefix = self.topic_prefix.trim_end_matches('/');
        if self.mqtt && prefix.is_empty() {
            return invalid("alerts.topic_prefix", "must not be empty");
        }
        if prefix.contains(['+', '#']) {
            return invalid(
                "alerts.topic_prefix",
                "must not contain MQTT wildcards (`+`, `#`)",
            );
        }
        if self.webhook_url.is_some() && self.webhook_url_env.is_some() {
            return invalid(
                "alerts.webhook_url",
                "set either `webhook_url` or `webhook_url_env`, not both",
            );
        }
        if let Some(url) = &self.webhook_url {
            check_url(url.expose()).map_err(|message| InvalidField {
                field: "alerts.webhook_url",
                message,
            })?;
        }
        if self.webhook_timeout.is_zero() {
            return invalid("alerts.webhook_timeout", "must be more than 0");
        }
        if self.retry_initial > self.retry_max {
            return invalid("alerts.retry_initial", "must not exceed `retry_max`");
        }
        if let Some(segments) = &self.route_segments
            && segments.is_empty()
            && self.has_webhook()
        {
            return invalid(
                "alerts.route_segments",
                "is empty, so the webhook would get nothing; remove the webhook or list segments",
            );
        }
        Ok(())
    }
}

/// An absolute http(s) URL, or why not.
pub(crate) fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(format!("scheme `{other}` is not http or https")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AlertsConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_publish_to_mqtt_only() {
        let config = parse("").unwrap();
        assert_eq!(config, AlertsConfig::default());
        assert!(config.enabled());
        assert!(!config.has_webhook());
        assert_eq!(config.topic_prefix, "cs/alerts");
        assert_eq!(config.queue.get(), 1024);
        config.validate().unwrap();
    }

    #[test]
    fn parses_every_field() {
        let config = parse(
            r#"
            mqtt = false
            topic_prefix = "acme/cs"
            webhook_url = "https://hooks.example.com/T000/B000/xyz"
            webhook_timeout = "3s"
            retry_initial = "100ms"
            retry_max = "5s"
            max_retries = 2
            route_segments = ["high-touch", "low-touch"]
            queue = 16
            flush_timeout = "2s"
            outbox_dir = "/var/lib/fleetpulse/outbox"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert!(config.enabled());
        assert_eq!(config.webhook_timeout, Duration::from_secs(3));
        assert_eq!(
            config.backoff(),
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
                max_retries: 2,
            }
        );
        assert!(config.routes_to_webhook(Segment::HighTouch));
        assert!(config.routes_to_webhook(Segment::LowTouch));
        assert!(!config.routes_to_webhook(Segment::TechTouch));
        assert_eq!(
            config.outbox_dir(Some(Path::new("/wal"))),
            Some(PathBuf::from("/var/lib/fleetpulse/outbox"))
        );
        assert!(
            !format!("{config:?}").contains("xyz"),
            "the URL is a secret"
        );
    }

    #[test]
    fn the_outbox_defaults_to_the_wal_directory() {
        let config = AlertsConfig::default();
        assert_eq!(config.outbox_dir(None), None);
        assert_eq!(
            config.outbox_dir(Some(Path::new("/var/wal"))),
            Some(PathBuf::from("/var/wal/alerts-outbox"))
        );
    }

    #[test]
    fn no_route_list_routes_every_segment() {
        let config = AlertsConfig::default();
        assert!(config.routes_to_webhook(Segment::TechTouch));
    }

    #[test]
    fn nothing_configured_is_disabled() {
        let config = parse("mqtt = false").unwrap();
        assert!(!config.enabled());
        config.validate().unwrap();
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(parse("webhook = \"x\"").is_err());
        assert!(parse("queue = 0").is_err());
        assert!(parse("route_segments = [\"vip\"]").is_err());
        assert!(parse("webhook_timeout = \"soon\"").is_err());
    }

    #[test]
    fn cross_field_errors_name_the_field() {
        let field = |text: &str| parse(text).unwrap().validate().unwrap_err().field;
        assert_eq!(field("webhook_url = \"not a url\""), "alerts.webhook_url");
        assert_eq!(field("webhook_url = \"ftp://x/y\""), "alerts.webhook_url");
        assert_eq!(
            field("webhook_url = \"http://x/\"\nwebhook_url_env = \"X\""),
            "alerts.webhook_url"
        );
        assert_eq!(field("topic_prefix = \"cs/#\""), "alerts.topic_prefix");
        assert_eq!(field("topic_prefix = \"/\""), "alerts.topic_prefix");
        assert_eq!(field("webhook_timeout = \"0s\""), "alerts.webhook_timeout");
        assert_eq!(
            field("retry_initial = \"1m\"\nretry_max = \"1s\""),
            "alerts.retry_initial"
        );
        assert_eq!(
            field("webhook_url_env = \"X\"\nroute_segments = []"),
            "alerts.route_segments"
        );
    }
}
