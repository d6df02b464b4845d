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
//! fan-out --(batches)--> router --(append, fsync)--> outbox --> MQTT publisher
//!                          |                                \-> webhook poster
//!                          \-- `written` += 1 per batch, for the checkpoint
//! ```
//!
//! **Outbox.** Every notification (one per alert transition and channel) is
//! written to the [`outbox`] (fsync) before the batch that carried it counts
//! as written, like a sink's write: the checkpoint waits for it, and once it
//! has passed, a restart does not recompute the alert but the outbox still
//! has it. A notification leaves the outbox once its channel confirmed it
//! (MQTT PubAck, webhook 2xx); after a crash or a restart, what is left is
//! delivered first. Each one carries a stable `notification_id` (and the
//! webhook an `Idempotency-Key`), so a receiver drops the duplicates that
//! at-least-once delivery brings. Without an outbox directory (no `[wal]`
//! and no `outbox_dir`) the outbox lives in memory.
//!
//! **Queues.** The two channels are independent: a webhook retrying does not
//! hold up MQTT. When a channel has `queue` notifications waiting, the router
//! stops taking batches, which makes the fan-out (and so the engine) wait:
//! backpressure, nothing is dropped while the service runs.
//!
//! **Failures.** Connection errors, timeouts, 5xx and 429 are retried until
//! delivered (the webhook with backoff within `retry_initial`..`retry_max`,
//! MQTT reconnecting); a webhook 4xx other than 429 drops the notification
//! and counts it as failed. Both are logged and counted in [`AlertsReport`].
//! An outbox write that fails is retried with backoff; until it succeeds the
//! batch is not written, so the checkpoint does not move past it.
//!
//! **Shutdown.** Once the record stream ends (after the engine's drain,
//! which closes the last days and may open alerts), each channel has
//! `flush_timeout` to deliver what is waiting; then it stops, and what is
//! left stays in the outbox for the next start (in memory: counted as
//! failed). From `flush_timeout` after `shutdown` is cancelled, the router
//! takes batches without waiting for room until the stream ends, so a
//! channel that is down never blocks the drain. The service's
//! `shutdown_timeout` bounds it all.
//!
//! **Secrets.** The webhook URL is a [`crate::secrets::SecretUrl`]; errors
//! are redacted before they are logged ([`crate::secrets`]).
//!
//! Formatting ([`mod@format`]), routing ([`alerts_in`],
//! [`AlertsConfig::routes_to_webhook`]), the retry schedule
//! ([`crate::retry::Backoff::delay_honouring`]), the outbox file and the publish bookkeeping
//! are plain code with unit tests; the loops only move alerts between them.

pub mod config;
pub mod format;
pub mod mqtt;
pub mod outbox;
pub mod webhook;

use fleetpulse_engine::kpi::risk::AlertStatus;
use fleetpulse_engine::{AlertRecord, Output};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub use config::{AlertsConfig, InvalidField};
pub use format::AlertMessage;
pub use mqtt::MqttPublisher;
pub use outbox::{Channel, Outbox};
pub use webhook::Webhook;

use crate::config::{MqttConfig, ServiceConfig};
use crate::retry::{Backoff, jitter};
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
    /// The outbox directory cannot be opened.
    #[error("alerts.outbox_dir: {dir}: {source}")]
    Outbox {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What one delivery channel did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelReport {
    /// Notifications the receiver confirmed (MQTT PubAck, webhook 2xx).
    pub delivered: u64,
    /// Notifications given up: refused by the webhook (4xx other than 429),
    /// or, without an outbox on disk, undelivered at the shutdown deadline.
    pub failed: u64,
    /// Repeated attempts: webhook retries, MQTT reconnections with an alert
    /// in flight.
    pub retries: u64,
    /// Undelivered at the end and kept in the outbox on disk: delivered
    /// after the next start.
    pub kept: u64,
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
    outbox: Outbox,
}

impl Alerts {
    /// [`Alerts::new`] for the service: the broker of `[mqtt]`, and the
    /// outbox in `alerts.outbox_dir`, else `{wal.dir}/alerts-outbox`.
    pub fn for_service(config: &ServiceConfig) -> Result<Self, AlertsError> {
        let outbox_dir = config
            .alerts
            .outbox_dir(config.wal.as_ref().map(|w| w.dir.as_path()));
        Self::with_outbox(&config.alerts, &config.mqtt, outbox_dir.as_deref())
    }

    /// Checks `config`, reads the webhook URL variable if one is named,
    /// prepares the MQTT publisher on `broker` (the service's `[mqtt]`) and
    /// opens the outbox in `config.outbox_dir` (in memory when unset).
    /// Fails here, before the service starts, rather than while running.
    pub fn new(config: &AlertsConfig, broker: &MqttConfig) -> Result<Self, AlertsError> {
        Self::with_outbox(config, broker, config.outbox_dir.as_deref())
    }

    fn with_outbox(
        config: &AlertsConfig,
        broker: &MqttConfig,
        outbox_dir: Option<&Path>,
    ) -> Result<Self, AlertsError> {
        config.validate().map_err(AlertsError::Invalid)?;
        let mqtt = config
            .mqtt
            .then(|| MqttPublisher::new(broker, &config.topic_prefix))
            .transpose()?;
        let url = match (&config.webhook_url, &config.webhook_url_env) {
            (Some(url), _) => Some(config::check_url(url.expose()).map_err(|message| {
                AlertsError::Invalid(InvalidField {
                    field: "alerts.webhook_url",
                    message,
                })
            })?),
            (None, Some(var)) => {
                let url = crate::secrets::Secret::new(
                    std::env::var(var).map_err(|_| AlertsError::MissingWebhookUrl(var.clone()))?,
                );
                Some(config::check_url(url.expose()).map_err(|message| {
                    AlertsError::BadWebhookUrl {
                        var: var.clone(),
                        message,
                    }
                })?)
            }
            (None, None) => None,
        };
        let webhook = url
            .map(|url| Webhook::new(url, config.webhook_timeout, config.backoff()))
            .transpose()?;
        let outbox = match outbox_dir {
            Some(dir) => {
                let (outbox, recovered) =
                    Outbox::open(dir).map_err(|source| AlertsError::Outbox {
                        dir: dir.to_owned(),
                        source,
                    })?;
                if recovered.torn_tail || recovered.corrupt > 0 {
                    tracing::warn!(
                        dir = %dir.display(), torn_tail = recovered.torn_tail,
                        corrupt_lines = recovered.corrupt,
                        "alert outbox: skipped damaged lines (a crash mid-write)"
                    );
                }
                outbox
            }
            None => Outbox::in_memory(),
        };
        Ok(Self {
            config: config.clone(),
            mqtt,
            webhook,
            outbox,
        })
    }

    /// Delivers the alerts in `rx` until it closes (see the module docs for
    /// the outbox, queues, failures and the shutdown deadline), then
    /// reports. `written` counts the batches taken from `rx` whose
    /// notifications are durably in the outbox (or that held none), like a
    /// sink's written count: the checkpoint waits for it.
    pub async fn run(
        self,
        rx: mpsc::Receiver<Arc<[Output]>>,
        shutdown: CancellationToken,
        written: Arc<AtomicU64>,
    ) -> AlertsReport {
        let Alerts {
            config,
            mqtt,
            webhook,
            outbox,
        } = self;
        let durable = outbox.dir().is_some();
        let waiting = |channel| outbox.pending_for(channel);
        tracing::info!(
            mqtt = mqtt.is_some(),
            topic_prefix = %config.topic_prefix,
            webhook = webhook.as_ref().map(Webhook::describe),
            route_segments = ?config.route_segments,
            outbox = outbox.dir().map(|d| d.display().to_string()),
            waiting_mqtt = waiting(Channel::Mqtt),
            waiting_webhook = waiting(Channel::Webhook),
            "alerts started"
        );
        for (channel, on) in [
            (Channel::Mqtt, mqtt.is_some()),
            (Channel::Webhook, webhook.is_some()),
        ] {
            if !on && waiting(channel) > 0 {
                tracing::warn!(
                    channel = channel.as_str(),
                    alerts = waiting(channel),
                    "the outbox holds alerts for a channel that is not configured; \
                     they are kept until it is"
                );
            }
        }
        let shared = Arc::new(Shared::new(outbox));
        // The router stops waiting (for room, for the outbox) a flush time
        // after the stop began; the channels stop delivering a flush time
        // after the last record came, so the alerts of the last days the
        // drain closes get the whole time too.
        let gave_up = CancellationToken::new();
        let delivered_by = CancellationToken::new();

        let mqtt_side = async {
            match mqtt {
                Some(publisher) => {
                    mqtt::publish_all(publisher, shared.clone(), delivered_by.clone()).await
                }
                None => ChannelReport::default(),
            }
        };
        let webhook_side = async {
            match webhook {
                Some(webhook) => post_all(webhook, shared.clone(), delivered_by.clone()).await,
                None => ChannelReport::default(),
            }
        };
        let channels = Channels {
            mqtt: config.mqtt,
            webhook: config.has_webhook(),
        };
        let router = route(rx, &shared, channels, &config, &written, &gave_up);
        let work = async { tokio::join!(router, mqtt_side, webhook_side) };
        let deadline = async {
            let routing = async {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = shared.input_done.cancelled() => {}
                }
                tokio::time::sleep(config.flush_timeout).await;
                gave_up.cancel();
            };
            let delivering = async {
                shared.input_done.cancelled().await;
                tokio::time::sleep(config.flush_timeout).await;
                delivered_by.cancel();
            };
            tokio::join!(routing, delivering);
            std::future::pending::<std::convert::Infallible>().await
        };
        let (routed, mut mqtt, mut webhook) = tokio::select! {
            done = work => done,
            never = deadline => match never {},
        };

        // What is still waiting: kept on disk for the next start, or lost.
        for (report, channel, on) in [
            (&mut mqtt, Channel::Mqtt, channels.mqtt),
            (&mut webhook, Channel::Webhook, channels.webhook),
        ] {
            let left = if on {
                shared.lock().pending_for(channel) as u64
            } else {
                0
            };
            if durable {
                report.kept += left;
            } else {
                report.failed += left;
            }
            if channel == Channel::Mqtt {
                report.failed += routed.lost_mqtt;
            } else {
                report.failed += routed.lost_webhook;
            }
            if left > 0 {
                tracing::warn!(
                    channel = channel.as_str(),
                    alerts = left,
                    kept_in_outbox = durable,
                    "alerts not delivered before the shutdown deadline"
                );
            }
        }
        let report = AlertsReport {
            alerts: routed.alerts,
            mqtt,
            webhook,
            not_routed: routed.not_routed,
        };
        tracing::info!(
            alerts = report.alerts,
            mqtt_delivered = report.mqtt.delivered,
            mqtt_failed = report.mqtt.failed,
            mqtt_kept = report.mqtt.kept,
            webhook_delivered = report.webhook.delivered,
            webhook_failed = report.webhook.failed,
            webhook_retries = report.webhook.retries,
            webhook_kept = report.webhook.kept,
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
    let written = Arc::new(AtomicU64::new(0));
    Ok(Alerts::new(&config, &broker)?
        .run(rx, shutdown, written)
        .await)
}

/// The outbox, shared by the router (which adds) and the channels (which
/// take and remove), with the wake-ups between them.
pub(crate) struct Shared {
    outbox: Mutex<Outbox>,
    /// Wakes the MQTT publisher: notifications were added.
    wake_mqtt: Notify,
    /// Wakes the webhook poster: notifications were added.
    wake_webhook: Notify,
    /// Wakes the router: a notification left the outbox.
    room: Notify,
    /// The record stream ended: nothing more will be added.
    input_done: CancellationToken,
}

impl Shared {
    fn new(outbox: Outbox) -> Self {
        Self {
            outbox: Mutex::new(outbox),
            wake_mqtt: Notify::new(),
            wake_webhook: Notify::new(),
            room: Notify::new(),
            input_done: CancellationToken::new(),
        }
    }

    /// The outbox. Never held across an `.await`.
    fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self, channel: Channel) -> &Notify {
        match channel {
            Channel::Mqtt => &self.wake_mqtt,
            Channel::Webhook => &self.wake_webhook,
        }
    }

    /// The next notification for `channel` after position `after`, waiting
    /// for one; `None` once the input ended and none is left.
    pub(crate) async fn next(&self, channel: Channel, after: u64) -> Option<outbox::Entry> {
        loop {
            if let Some(entry) = self.lock().next_for(channel, after) {
                return Some(entry);
            }
            if self.input_done.is_cancelled() {
                return None;
            }
            // `notify_one` keeps a permit when nobody waits: no wake-up is
            // missed between the check above and this wait.
            tokio::select! {
                _ = self.wake(channel).notified() => {}
                _ = self.input_done.cancelled() => {}
            }
        }
    }

    /// Resolves once the input ended with nothing for `channel` after
    /// position `after`: a publisher that cannot reach its receiver has
    /// nothing to wait for then.
    pub(crate) async fn drained(&self, channel: Channel, after: u64) {
        self.input_done.cancelled().await;
        if self.lock().next_for(channel, after).is_some() {
            std::future::pending::<()>().await;
        }
    }

    /// Removes a notification that was delivered (or refused for good).
    pub(crate) fn delivered(&self, seq: u64) {
        if let Err(e) = self.lock().delivered(seq) {
            // The notification would be delivered once more after a restart.
            tracing::error!(error = %e, "alert outbox: cannot record a delivery");
        }
        self.room.notify_one();
    }
}

/// Which channels are configured.
#[derive(Debug, Clone, Copy)]
struct Channels {
    mqtt: bool,
    webhook: bool,
}

#[derive(Debug, Default)]
struct Routed {
    alerts: u64,
    not_routed: u64,
    /// Notifications that could not be written to the outbox before the
    /// deadline.
    lost_mqtt: u64,
    lost_webhook: u64,
}

/// The provisional alerts notified and not settled yet: the day's close that
/// confirms one sends the same open again, no longer provisional, which
/// receivers already have. In memory: after a restart a confirmation is
/// sent (same `notification_id`, which receivers deduplicate by).
#[derive(Debug, Default)]
struct Provisional(std::collections::HashSet<String>);

impl Provisional {
    /// Whether `message` is news to the receivers.
    fn notify(&mut self, message: &AlertMessage) -> bool {
        let open = message.status == AlertStatus::Open.as_str();
        match (open, message.provisional) {
            (true, true) => {
                self.0.insert(message.alert_id.clone());
                true
            }
            (true, false) => !self.0.remove(&message.alert_id),
            (false, _) => {
                self.0.remove(&message.alert_id);
                true
            }
        }
    }
}

/// Takes alerts from the record stream and adds a notification per channel
/// to the outbox, durably, in order; then counts the batch as written. Ends
/// when the stream ends.
async fn route(
    mut rx: mpsc::Receiver<Arc<[Output]>>,
    shared: &Arc<Shared>,
    channels: Channels,
    config: &AlertsConfig,
    written: &AtomicU64,
    gave_up: &CancellationToken,
) -> Routed {
    let mut routed = Routed::default();
    // False once a batch could not be made durable: later batches must not
    // count as written either, or the checkpoint would pass it.
    let mut durable = true;
    let queue = config.queue.get();
    let mut provisional = Provisional::default();
    while let Some(batch) = rx.recv().await {
        let mut items = Vec::new();
        for record in alerts_in(&batch) {
            routed.alerts += 1;
            let message = Arc::new(AlertMessage::from_record(record));
            if !provisional.notify(&message) {
                continue;
            }
            if channels.mqtt {
                items.push((Channel::Mqtt, message.clone()));
            }
            if channels.webhook {
                if config.routes_to_webhook(record.segment) {
                    items.push((Channel::Webhook, message));
                } else {
                    routed.not_routed += 1;
                }
            }
        }
        // A replay after a restart recomputes alerts the outbox still holds.
        {
            let outbox = shared.lock();
            items.retain(|(channel, m)| !outbox.holds(*channel, m));
        }
        if !items.is_empty() {
            for channel in [Channel::Mqtt, Channel::Webhook] {
                if items.iter().any(|(c, _)| *c == channel) {
                    wait_for_room(shared, channel, queue, gave_up).await;
                }
            }
            let lost = |items: &[(Channel, Arc<AlertMessage>)], channel| {
                items.iter().filter(|(c, _)| *c == channel).count() as u64
            };
            let (mqtt, webhook) = (lost(&items, Channel::Mqtt), lost(&items, Channel::Webhook));
            if append(shared, items, gave_up).await {
                for channel in [Channel::Mqtt, Channel::Webhook] {
                    shared.wake(channel).notify_one();
                }
            } else {
                durable = false;
                routed.lost_mqtt += mqtt;
                routed.lost_webhook += webhook;
            }
        }
        if durable {
            written.fetch_add(1, Relaxed);
        }
    }
    shared.input_done.cancel();
    routed
}

/// Waits while `channel` has `queue` notifications waiting, until the
/// deadline (after it, the router no longer waits: it must drain).
async fn wait_for_room(
    shared: &Shared,
    channel: Channel,
    queue: usize,
    gave_up: &CancellationToken,
) {
    while shared.lock().pending_for(channel) >= queue && !gave_up.is_cancelled() {
        tokio::select! {
            _ = shared.room.notified() => {}
            _ = gave_up.cancelled() => {}
        }
    }
}

/// Appends to the outbox (fsync) on a blocking thread, retrying with backoff
/// until it works or the deadline passed; `false`: not written.
async fn append(
    shared: &Arc<Shared>,
    items: Vec<(Channel, Arc<AlertMessage>)>,
    gave_up: &CancellationToken,
) -> bool {
    let mut failures = 0u32;
    loop {
        let task = {
            let shared = shared.clone();
            let items = items.clone();
            tokio::task::spawn_blocking(move || shared.lock().append(items).map(|_| ()))
        };
        let error = match task.await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        failures = failures.saturating_add(1);
        let dir = shared.lock().dir().map(|d| d.display().to_string());
        if gave_up.is_cancelled() {
            tracing::error!(
                outbox = dir,
                alerts = items.len(),
                "alert outbox write failed at the shutdown deadline ({error}); \
                 the alerts are recomputed from the WAL after a restart"
            );
            return false;
        }
        let delay = Backoff::RECONNECT.delay(failures - 1, 1.0);
        if failures <= 3 || failures.is_multiple_of(20) {
            tracing::error!(
                outbox = dir,
                failures,
                retry_in_ms = delay.as_millis() as u64,
                "alert outbox write failed ({error}); retrying"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = gave_up.cancelled() => {}
        }
    }
}

/// Posts every webhook notification of the outbox, in order, each removed
/// once the webhook took (or refused) it, until the input ended and nothing
/// is left, or until `deadline` is cancelled; what is left then stays in the
/// outbox.
async fn post_all(
    webhook: Webhook,
    shared: Arc<Shared>,
    deadline: CancellationToken,
) -> ChannelReport {
    let mut report = ChannelReport::default();
    let mut jitter = jitter;
    let mut cursor = 0;
    loop {
        let next = tokio::select! {
            biased;
            _ = deadline.cancelled() => break,
            next = shared.next(Channel::Webhook, cursor) => next,
        };
        let Some(entry) = next else { break };
        cursor = entry.seq;
        tokio::select! {
            biased;
            _ = deadline.cancelled() => break,
            _ = webhook.deliver(&entry.message, &mut report, &mut jitter) => {
                shared.delivered(entry.seq);
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::Segment;

    use std::time::Duration;

    use super::*;
    use crate::alerts::format::tests::record;
    use crate::sinks::fixtures::customer;

    #[test]
    fn a_provisional_alert_is_notified_once_and_its_retraction_too() {
        let mut provisional = Provisional::default();
        let message = |status, provisional| {
            AlertMessage::from_record(&AlertRecord {
                provisional,
                ..record(status)
            })
        };
        // Opened provisionally, then confirmed by the day's close: once.
        assert!(provisional.notify(&message(AlertStatus::Open, true)));
        assert!(!provisional.notify(&message(AlertStatus::Open, false)));
        // An open that was never provisional is news.
        assert!(provisional.notify(&message(AlertStatus::Open, false)));
        // Opened provisionally, then retracted: both.
        assert!(provisional.notify(&message(AlertStatus::Open, true)));
        assert!(provisional.notify(&message(AlertStatus::Retracted, true)));
        assert!(provisional.0.is_empty());
    }

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
        let written = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(alerts.run(rx, CancellationToken::new(), written.clone()));
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
        assert_eq!(written.load(Relaxed), 1);
    }

    fn alert_at(opened_at: u64) -> Output {
        let mut record = record(AlertStatus::Open);
        record.opened_at = opened_at;
        Output::Alert(record)
    }

    type Running = (
        mpsc::Sender<Arc<[Output]>>,
        CancellationToken,
        Arc<AtomicU64>,
        tokio::task::JoinHandle<AlertsReport>,
    );

    /// The alerts task of `config` running: its record stream (room for
    /// `capacity` batches), its stop, its written count and its report.
    fn running(config: &AlertsConfig, capacity: usize) -> Running {
        let alerts = Alerts::new(config, &MqttConfig::default()).unwrap();
        let (tx, rx) = mpsc::channel(capacity);
        let shutdown = CancellationToken::new();
        let written = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(alerts.run(rx, shutdown.clone(), written.clone()));
        (tx, shutdown, written, task)
    }

    /// A webhook that never answers is given up at the deadline, and alerts
    /// arriving afterwards are drained and counted, not blocked on.
    #[tokio::test]
    async fn the_deadline_bounds_the_flush() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let config = AlertsConfig {
            mqtt: false,
            webhook_url: Some(url.into()),
            webhook_timeout: Duration::from_secs(600),
            flush_timeout: Duration::from_millis(200),
            queue: std::num::NonZeroUsize::new(1).unwrap(),
            ..AlertsConfig::default()
        };
        let (tx, shutdown, written, task) = running(&config, 1);
        let batch = |i: u64| -> Arc<[Output]> { vec![alert_at(2 * i), alert_at(2 * i + 1)].into() };
        tx.send(batch(0)).await.unwrap();
        shutdown.cancel();
        tx.send(batch(1)).await.unwrap();
        tx.send(batch(2)).await.unwrap();
        drop(tx);
        let report = task.await.unwrap();
        drop(listener);
        assert_eq!(report.alerts, 6);
        assert_eq!(report.webhook.delivered, 0);
        assert_eq!(report.webhook.failed, 6, "in memory: what is left is lost");
        assert_eq!(written.load(Relaxed), 3);
    }

    /// Alerts the drain brings after the stop began, later than the flush
    /// time, are still delivered: the channels' time runs from the end of
    /// the stream.
    #[tokio::test]
    async fn alerts_of_a_long_drain_get_the_whole_flush_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(answer_all(listener, 200, seen.clone()));
        let config = AlertsConfig {
            mqtt: false,
            webhook_url: Some(format!("http://{address}/hook").into()),
            flush_timeout: Duration::from_millis(300),
            ..AlertsConfig::default()
        };
        let (tx, shutdown, written, task) = running(&config, 1);
        tx.send(vec![alert_at(1)].into()).await.unwrap();
        shutdown.cancel();
        // The engine drains for longer than the flush time, then its last
        // records end the stream.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let drained: Arc<[Output]> = vec![alert_at(2), alert_at(3)].into();
        tx.send(drained).await.unwrap();
        drop(tx);
        let report = task.await.unwrap();
        server.abort();
        assert_eq!(report.alerts, 3);
        assert_eq!(report.webhook.delivered, 3, "{report:?}");
        assert_eq!(report.webhook.failed, 0);
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert_eq!(written.load(Relaxed), 2);
    }

    /// An answer to each request of a raw HTTP/1.1 client, from `status`.
    async fn answer_all(
        listener: tokio::net::TcpListener,
        status: u16,
        seen: Arc<Mutex<Vec<serde_json::Value>>>,
    ) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut length, mut key) = (0, String::new());
                    loop {
                        let mut header = String::new();
                        stream.read_line(&mut header).await.unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        let (name, value) = header.split_once(':').unwrap();
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.trim().parse().unwrap(),
                            "idempotency-key" => key = value.trim().to_owned(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(body["notification_id"], key.as_str());
                    if status == 200 {
                        seen.lock().unwrap().push(body);
                    }
                    let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    if stream
                        .get_mut()
                        .write_all(response.as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    }

    /// Alerts to a webhook at `address` (path `/hook/{secret}`), retried
    /// within milliseconds, kept in an outbox in `dir`.
    fn webhook_with_outbox(
        address: std::net::SocketAddr,
        secret: &str,
        dir: &Path,
    ) -> AlertsConfig {
        AlertsConfig {
            mqtt: false,
            webhook_url: Some(format!("http://{address}/hook/{secret}").into()),
            retry_initial: Duration::from_millis(5),
            retry_max: Duration::from_millis(20),
            flush_timeout: Duration::from_millis(300),
            outbox_dir: Some(dir.to_owned()),
            ..AlertsConfig::default()
        }
    }

    /// Alerts the webhook did not take before the deadline stay in the
    /// outbox on disk, count as written, and go out on the next run, first.
    #[tokio::test]
    async fn the_outbox_keeps_what_was_not_delivered_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let config = webhook_with_outbox(address, "outbox-unit-secret", dir.path());
        let refused = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(answer_all(listener, 503, refused.clone()));
        let (tx, shutdown, written, task) = running(&config, 4);
        let first: Arc<[Output]> = vec![alert_at(1), alert_at(2)].into();
        tx.send(first.clone()).await.unwrap();
        tx.send(vec![Output::Customer(customer("acme", 0, 0))].into())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        shutdown.cancel();
        drop(tx);
        let report = task.await.unwrap();
        assert_eq!(report.webhook.delivered, 0);
        assert_eq!(report.webhook.failed, 0);
        assert_eq!(report.webhook.kept, 2);
        assert!(report.webhook.retries > 0);
        assert_eq!(written.load(Relaxed), 2, "both batches are durable");
        server.abort();
        let _ = server.await;

        // The next run: the webhook answers; the kept alerts go out before
        // a new one, and the same alert recomputed by a replay is not added
        // twice.
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(answer_all(listener, 200, seen.clone()));
        let (tx, _, written, task) = running(&config, 4);
        tx.send(vec![alert_at(2), alert_at(3)].into())
            .await
            .unwrap();
        drop(tx);
        let report = task.await.unwrap();
        server.abort();
        assert_eq!(report.webhook.delivered, 3);
        assert_eq!(report.webhook.kept, 0);
        let id = |at| match alert_at(at) {
            Output::Alert(a) => AlertMessage::from_record(&a).notification_id,
            _ => unreachable!(),
        };
        let seen: Vec<String> = (seen.lock().unwrap().iter())
            .map(|body| body["notification_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(seen, [id(1), id(2), id(3)]);
        assert_eq!(written.load(Relaxed), 1);
        let (outbox, _) = Outbox::open(dir.path()).unwrap();
        assert!(outbox.is_empty(), "delivered alerts leave the outbox");
    }

    /// A restatement that moves an episode's resolution sends the resolve
    /// again, a transition of its own (its `notification_id` holds the
    /// date: under the first one's, a receiver dropping what it has seen
    /// kept the first date). While the first still waits in the outbox
    /// (the webhook down), the corrected one is queued after it; the same
    /// resolve recomputed by a replay is not added twice. (Before, the
    /// outbox kept only the first date, and the receiver never heard of
    /// the correction.)
    #[tokio::test]
    async fn a_corrected_resolution_is_queued_behind_the_first_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let config = webhook_with_outbox(address, "corrected-unit-secret", dir.path());
        let resolved_on = |day: u64| {
            let mut record = record(AlertStatus::Resolved);
            record.resolved_at = Some(record.opened_at + day * 86_400_000);
            Output::Alert(record)
        };
        let refused = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(answer_all(listener, 503, refused.clone()));
        let (tx, shutdown, _, task) = running(&config, 4);
        tx.send(vec![resolved_on(9)].into()).await.unwrap();
        tx.send(vec![resolved_on(6)].into()).await.unwrap();
        tx.send(vec![resolved_on(6)].into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        shutdown.cancel();
        drop(tx);
        let report = task.await.unwrap();
        assert_eq!(report.webhook.kept, 2);
        server.abort();
        let _ = server.await;

        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(answer_all(listener, 200, seen.clone()));
        let (tx, _, _, task) = running(&config, 4);
        drop(tx);
        let report = task.await.unwrap();
        server.abort();
        assert_eq!(report.webhook.delivered, 2);
        let seen = seen.lock().unwrap();
        let ids: std::collections::HashSet<&str> = (seen.iter())
            .map(|b| b["notification_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 2, "two transitions: {seen:?}");
        // The first date, then the corrected one.
        let body = |day| match resolved_on(day) {
            Output::Alert(a) => format::slack_body(&AlertMessage::from_record(&a)),
            _ => unreachable!(),
        };
        assert_ne!(body(9), body(6));
        assert_eq!(*seen, [body(9), body(6)]);
    }
}
