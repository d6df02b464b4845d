//! Alert delivery: at-risk alerts pushed to where the CS team works.
//!
//! The engine emits an [`AlertRecord`] (as `Output::Alert`) each time an
//! at-risk episode opens or resolves. The alerts task is one more receiver
//! of the service's fan-out: it takes the same record batches as the sinks,
//! keeps the alerts, and delivers each one, in order, to
//!
//! - **MQTT** ([`mqtt`]): JSON [`AlertMessage`] on `cs/alerts/{customer}`,
//!   QoS 1, every segment;
//! - **a webhook** ([`webhook`]): a Slack-compatible message, for the
//!   segments in `route_segments` (default: all).
//!
//! ```text
//! fan-out --(batches)--> router --(bounded, `queue` alerts)--> MQTT publisher
//!                              \--(bounded, `queue` alerts)--> webhook poster
//! ```
//!
//! **Queues.** The two channels are independent: a webhook retrying does not
//! hold up MQTT. When a channel's queue is full, the router stops taking
//! batches, which makes the fan-out (and so the engine) wait: backpressure,
//! nothing is dropped while the service runs.
//!
//! **Failures.** The webhook gives an alert up after its retries (or at once
//! on a 4xx other than 429); MQTT retries the broker without limit. Both are
//! logged and counted in [`AlertsReport`].
//!
//! **Shutdown.** Once `shutdown` is cancelled or the record stream ends,
//! whichever comes first, each channel has `flush_timeout` to deliver what it
//! still gets; then what is left is counted as failed, and the task keeps
//! draining its input (without delivering) until the stream ends, so it
//! never blocks the engine's drain.
//!
//! Formatting ([`mod@format`]), routing ([`alerts_in`],
//! [`AlertsConfig::routes_to_webhook`]), the retry schedule
//! ([`webhook::retry_delay`]) and the publish bookkeeping are plain
//! functions with unit tests; the loops only move alerts between them.

pub mod config;
pub mod format;
pub mod mqtt;
pub mod webhook;

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_engine::{AlertRecord, Output};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{AlertsConfig, InvalidField};
pub use format::AlertMessage;
pub use mqtt::MqttPublisher;
pub use webhook::Webhook;

use crate::config::MqttConfig;
use crate::source::mqtt::SourceError;

/// The alerts task cannot start.
#[derive(Debug, Error)]
pub enum AlertsError {
    /// A field of `[alerts]` cannot work.
    #[error("field `{}`: {}", .0.field, .0.message)]
    Invalid(InvalidField),
    /// The variable named in `alerts.webhook_url_env` is not set.
    #[error("alerts.webhook_url_env: environment variable `{0}` is not set")]
    MissingWebhookUrl(String),
    /// The variable named in `alerts.webhook_url_env` is not a usable URL.
    #[error("alerts.webhook_url_env: `{var}`: {message}")]
    BadWebhookUrl {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// The MQTT publisher's settings (e.g. the broker password variable).
    #[error("alerts MQTT publisher: {0}")]
    Mqtt(#[from] SourceError),
    /// The HTTP client for the webhook cannot be built.
    #[error("alerts webhook client: {0}")]
    WebhookClient(#[from] reqwest::Error),
}

/// What one delivery channel did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelReport {
    /// Alerts the receiver confirmed (MQTT PubAck, webhook 2xx).
    pub delivered: u64,
    /// Alerts given up: webhook rejected or out of retries, or left
    /// undelivered at the shutdown deadline.
    pub failed: u64,
    /// Repeated attempts: webhook retries, MQTT reconnections with an alert
    /// in flight.
    pub retries: u64,
}

/// What the alerts task did, returned when its input ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertsReport {
    /// Alert transitions taken from the record stream.
    pub alerts: u64,
    /// MQTT delivery (all zero when `mqtt = false`).
    pub mqtt: ChannelReport,
    /// Webhook delivery (all zero without a webhook).
    pub webhook: ChannelReport,
    /// Alerts kept from the webhook by `route_segments`.
    pub not_routed: u64,
}

/// The alert records in a batch of engine output, in order.
pub fn alerts_in(batch: &[Output]) -> impl Iterator<Item = &AlertRecord> {
    batch.iter().filter_map(|record| match record {
        Output::Alert(alert) => Some(alert),
        _ => None,
    })
}

/// The alerts task, set up and checked; [`Alerts::run`] delivers.
#[derive(Debug)]
pub struct Alerts {
    config: AlertsConfig,
    mqtt: Option<MqttPublisher>,
    webhook: Option<Webhook>,
}

impl Alerts {
    /// Checks `config`, reads the webhook URL variable if one is named, and
    /// prepares the MQTT publisher on `broker` (the service's `[mqtt]`).
    /// Fails here, before the service starts, rather than while running.
    pub fn new(config: &AlertsConfig, broker: &MqttConfig) -> Result<Self, AlertsError> {
        config.validate().map_err(AlertsError::Invalid)?;
        let mqtt = config
            .mqtt
            .then(|| MqttPublisher::new(broker, &config.topic_prefix))
            .transpose()?;
        let url = match (&config.webhook_url, &config.webhook_url_env) {
            (Some(url), _) => Some(config::check_url(url).map_err(|message| {
                AlertsError::Invalid(InvalidField {
                    field: "alerts.webhook_url",
                    message,
                })
            })?),
            (None, Some(var)) => {
                let url =
                    std::env::var(var).map_err(|_| AlertsError::MissingWebhookUrl(var.clone()))?;
                Some(
                    config::check_url(&url).map_err(|message| AlertsError::BadWebhookUrl {
                        var: var.clone(),
                        message,
                    })?,
                )
            }
            (None, None) => None,
        };
        let webhook = url
            .map(|url| Webhook::new(url, config.webhook_timeout, config.backoff()))
            .transpose()?;
        Ok(Self {
            config: config.clone(),
            mqtt,
            webhook,
        })
    }

    /// Delivers the alerts in `rx` until it closes (see the module docs for
    /// queues, failures and the shutdown deadline), then reports.
    pub async fn run(
        self,
        rx: mpsc::Receiver<Arc<[Output]>>,
        shutdown: CancellationToken,
    ) -> AlertsReport {
        let Alerts {
            config,
            mqtt,
            webhook,
        } = self;
        tracing::info!(
            mqtt = mqtt.is_some(),
            topic_prefix = %config.topic_prefix,
            webhook = webhook.as_ref().map(Webhook::describe),
            route_segments = ?config.route_segments,
            "alerts started"
        );
        let input_done = CancellationToken::new();
        let deadline =
            || flush_deadline(shutdown.clone(), input_done.clone(), config.flush_timeout);
        let queue = config.queue.get();

        let (mqtt_tx, mqtt_side) = match mqtt {
            Some(publisher) => {
                let (tx, rx) = mpsc::channel(queue);
                let side = mqtt::publish_all(publisher, rx, deadline());
                (Some(tx), futures::future::Either::Left(side))
            }
            None => (
                None,
                futures::future::Either::Right(async { ChannelReport::default() }),
            ),
        };
        let (webhook_tx, webhook_side) = match webhook {
            Some(webhook) => {
                let (tx, rx) = mpsc::channel(queue);
                let side = post_all(webhook, rx, deadline());
                (Some(tx), futures::future::Either::Left(side))
            }
            None => (
                None,
                futures::future::Either::Right(async { ChannelReport::default() }),
            ),
        };
        let router = route(rx, mqtt_tx, webhook_tx, &config, input_done.clone());
        let (routed, mqtt, webhook) = tokio::join!(router, mqtt_side, webhook_side);

        let report = AlertsReport {
            alerts: routed.alerts,
            mqtt: ChannelReport {
                failed: mqtt.failed + routed.mqtt_lost,
                ..mqtt
            },
            webhook: ChannelReport {
                failed: webhook.failed + routed.webhook_lost,
                ..webhook
            },
            not_routed: routed.not_routed,
        };
        tracing::info!(
            alerts = report.alerts,
            mqtt_delivered = report.mqtt.delivered,
            mqtt_failed = report.mqtt.failed,
            webhook_delivered = report.webhook.delivered,
            webhook_failed = report.webhook.failed,
            webhook_retries = report.webhook.retries,
            not_routed = report.not_routed,
            "alerts stopped"
        );
        report
    }
}

/// Sets up and runs the alerts task: [`Alerts::new`] then [`Alerts::run`].
/// `broker` is the service's `[mqtt]` section (host, port, credentials,
/// client id). Setup errors are returned before anything is read.
pub async fn run_alerts(
    config: AlertsConfig,
    broker: MqttConfig,
    rx: mpsc::Receiver<Arc<[Output]>>,
    shutdown: CancellationToken,
) -> Result<AlertsReport, AlertsError> {
    Ok(Alerts::new(&config, &broker)?.run(rx, shutdown).await)
}

/// Completes `flush_timeout` after `shutdown` is cancelled or the input
/// ended, whichever is first.
async fn flush_deadline(
    shutdown: CancellationToken,
    input_done: CancellationToken,
    flush_timeout: Duration,
) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = input_done.cancelled() => {}
    }
    tokio::time::sleep(flush_timeout).await;
}

#[derive(Debug, Default)]
struct Routed {
    alerts: u64,
    not_routed: u64,
    mqtt_lost: u64,
    webhook_lost: u64,
}

/// Takes alerts from the record stream and hands each to the channels it is
/// routed to, in order. Ends when the stream ends; closing the queues then
/// tells the channels to finish.
async fn route(
    mut rx: mpsc::Receiver<Arc<[Output]>>,
    mqtt: Option<mpsc::Sender<Arc<AlertMessage>>>,
    webhook: Option<mpsc::Sender<Arc<AlertMessage>>>,
    config: &AlertsConfig,
    input_done: CancellationToken,
) -> Routed {
    let mut routed = Routed::default();
    while let Some(batch) = rx.recv().await {
        for record in alerts_in(&batch) {
            routed.alerts += 1;
            let message = Arc::new(AlertMessage::from_record(record));
            if let Some(tx) = &mqtt
                && tx.send(message.clone()).await.is_err()
            {
                routed.mqtt_lost += 1;
            }
            if let Some(tx) = &webhook {
                if !config.routes_to_webhook(record.segment) {
                    routed.not_routed += 1;
                } else if tx.send(message).await.is_err() {
                    routed.webhook_lost += 1;
                }
            }
        }
    }
    input_done.cancel();
    routed
}

/// Posts every alert from `queue` to the webhook, in order, until the queue
/// closes or `deadline` completes; then what is left is counted as failed.
async fn post_all(
    webhook: Webhook,
    mut queue: mpsc::Receiver<Arc<AlertMessage>>,
    deadline: impl Future<Output = ()>,
) -> ChannelReport {
    tokio::pin!(deadline);
    let mut report = ChannelReport::default();
    let mut jitter = jitter;
    let mut left = 0u64;
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut deadline => break,
            next = queue.recv() => next,
        };
        let Some(message) = next else { break };
        tokio::select! {
            biased;
            _ = &mut deadline => {
                left += 1;
                break;
            }
            _ = webhook.deliver(&message, &mut report, &mut jitter) => {}
        }
    }
    // Keep taking from the queue so the router is never blocked by a
    // channel that gave up.
    while queue.recv().await.is_some() {
        left += 1;
    }
    if left > 0 {
        report.failed += left;
        tracing::error!(
            webhook = %webhook.describe(),
            alerts = left,
            "alerts not posted to the webhook before the shutdown deadline"
        );
    }
    report
}

/// A uniform-ish number in `[0, 1)` for jitter. std's `RandomState` is seeded
/// randomly per process and per call, which is all jitter needs.
fn jitter() -> f64 {
    let bits = RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::Segment;
    use fleetpulse_engine::kpi::risk::AlertStatus;

    use super::*;
    use crate::alerts::format::tests::record;
    use crate::sinks::fixtures::customer;

    #[test]
    fn only_alerts_are_taken_from_a_batch_in_order() {
        let open = record(AlertStatus::Open);
        let resolved = record(AlertStatus::Resolved);
        let batch = vec![
            Output::Customer(customer("acme", 0, 0)),
            Output::Alert(open.clone()),
            Output::Customer(customer("acme", 1, 1)),
            Output::Alert(resolved.clone()),
        ];
        let alerts: Vec<&AlertRecord> = alerts_in(&batch).collect();
        assert_eq!(alerts, [&open, &resolved]);
        assert_eq!(alerts_in(&[]).count(), 0);
    }

    #[test]
    fn jitter_stays_in_range() {
        assert!((0..64).map(|_| jitter()).all(|j| (0.0..1.0).contains(&j)));
    }

    #[test]
    fn setup_reads_the_webhook_url_from_the_environment() {
        let config = AlertsConfig {
            mqtt: false,
            webhook_url_env: Some("FLEETPULSE_TEST_ALERTS_WEBHOOK_UNSET".into()),
            ..AlertsConfig::default()
        };
        let err = Alerts::new(&config, &MqttConfig::default()).unwrap_err();
        assert!(
            matches!(err, AlertsError::MissingWebhookUrl(ref var) if var == "FLEETPULSE_TEST_ALERTS_WEBHOOK_UNSET"),
            "{err}"
        );
        let config = AlertsConfig {
            webhook_url: Some("mailto:cs@example.com".into()),
            webhook_url_env: None,
            ..config
        };
        let err = Alerts::new(&config, &MqttConfig::default()).unwrap_err();
        assert!(err.to_string().contains("alerts.webhook_url"), "{err}");
    }

    /// With nothing to deliver to, alerts are still counted and routing is
    /// applied; the task ends when the stream ends.
    #[tokio::test]
    async fn routing_counts_without_channels() {
        let alerts = Alerts::new(
            &AlertsConfig {
                mqtt: false,
                ..AlertsConfig::default()
            },
            &MqttConfig::default(),
        )
        .unwrap();
        let (tx, rx) = mpsc::channel(2);
        let task = tokio::spawn(alerts.run(rx, CancellationToken::new()));
        let mut tech = record(AlertStatus::Open);
        tech.segment = Segment::TechTouch;
        tx.send(vec![Output::Alert(tech)].into()).await.unwrap();
        drop(tx);
        let report = task.await.unwrap();
        assert_eq!(
            report,
            AlertsReport {
                alerts: 1,
                ..AlertsReport::default()
            }
        );
    }

    /// A webhook that never answers is given up at the deadline, and alerts
    /// arriving afterwards are drained and counted, not blocked on.
    #[tokio::test]
    async fn the_deadline_bounds_the_flush() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let config = AlertsConfig {
            mqtt: false,
            webhook_url: Some(url),
            webhook_timeout: Duration::from_secs(600),
            flush_timeout: Duration::from_millis(200),
            queue: std::num::NonZeroUsize::new(1).unwrap(),
            ..AlertsConfig::default()
        };
        let alerts = Alerts::new(&config, &MqttConfig::default()).unwrap();
        let (tx, rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(alerts.run(rx, shutdown.clone()));
        let batch: Arc<[Output]> = vec![Output::Alert(record(AlertStatus::Open)); 2].into();
        tx.send(batch.clone()).await.unwrap();
        shutdown.cancel();
        tx.send(batch.clone()).await.unwrap();
        tx.send(batch).await.unwrap();
        drop(tx);
        let report = task.await.unwrap();
        drop(listener);
        assert_eq!(report.alerts, 6);
        assert_eq!(report.webhook.delivered, 0);
        assert_eq!(report.webhook.failed, 6);
    }
}
