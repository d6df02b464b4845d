//! MQTT delivery: each alert transition is published as JSON
//! ([`AlertMessage`]) to `{topic_prefix}/{customer}` at QoS 1, not retained,
//! one at a time and in order, each confirmed by its PubAck before the next.
//!
//! The publisher has its own connection (client id `{mqtt.client_id}-alerts`,
//! clean session) to the broker the service reads telemetry from. rumqttc
//! reconnects on the next `poll()` with no delay of its own, so the
//! connection driver sleeps with backoff after each error; with a clean
//! session rumqttc forgets an unacknowledged publish on reconnect, so
//! `PublishState` publishes it again once connected (QoS 1 is at least
//! once: a subscriber may see an alert twice, never zero times).
//!
//! An unreachable broker is retried without limit while the service runs:
//! notifications wait in the outbox. The shutdown deadline stops the
//! publisher; what it has not published stays in the outbox for the next
//! start. Connection errors are redacted before they are logged.
//!
//! Each payload carries `alert_id` and `notification_id`, the same on every
//! delivery of a notification, so subscribers can drop duplicates.
//!
//! The protocol bookkeeping (`PublishState`) does no I/O and is tested on
//! its own; the eventloop is polled by a driver that is never cancelled while
//! the publisher runs, so no packet is cut in half.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::format::{AlertMessage, alert_topic};
use super::outbox::{Channel, Entry};
use super::{ChannelReport, Shared};
use crate::config::MqttConfig;
use crate::source::mqtt::{SourceError, backoff};
use crate::source::takeover::{Change, Takeovers};

/// Connection settings of the alerts publisher.
#[derive(Debug, Clone)]
pub struct MqttPublisher {
    options: MqttOptions,
    topic_prefix: String,
    broker: String,
}

impl MqttPublisher {
    /// A publisher on the service's broker (`broker`, with its credentials),
    /// client id `{broker.client_id}-alerts`, clean session.
    pub fn new(broker: &MqttConfig, topic_prefix: &str) -> Result<Self, SourceError> {
        let config = MqttConfig {
            client_id: alerts_client_id(&broker.client_id),
            persistent_session: false,
            ..broker.clone()
        };
        let mut options = crate::source::mqtt::options(&config)?;
        options.set_clean_session(true);
        Ok(Self {
            options,
            topic_prefix: topic_prefix.to_owned(),
            broker: format!("{}:{}", broker.host, broker.port),
        })
    }

    /// The client id used on the broker.
    pub fn client_id(&self) -> String {
        self.options.client_id()
    }
}

/// `{service client id}-alerts`.
pub fn alerts_client_id(service: &str) -> String {
    format!("{service}-alerts")
}

/// What the connection driver tells the publisher.
#[derive(Debug)]
enum Link {
    /// Connected (ConnAck received).
    Connected,
    /// The eventloop wrote a publish with this packet id.
    Sent(u16),
    /// The broker acknowledged this packet id.
    Acked(u16),
    /// The connection failed; the driver waits `retry_in` before reconnecting.
    Failed {
        error: String,
        failures: u32,
        retry_in: Duration,
    },
}

/// Publish bookkeeping for one message in flight at a time. No I/O: the
/// caller publishes whatever the methods return.
#[derive(Debug, Default)]
pub(crate) struct PublishState {
    connected: bool,
    in_flight: Option<InFlight>,
}

#[derive(Debug)]
struct InFlight {
    message: Entry,
    /// Packet id of the latest transmission, once the eventloop wrote it.
    pkid: Option<u16>,
}

impl PublishState {
    /// Connected and nothing in flight: the next message may start.
    pub(crate) fn ready(&self) -> bool {
        self.connected && self.in_flight.is_none()
    }

    /// Nothing in flight.
    pub(crate) fn idle(&self) -> bool {
        self.in_flight.is_none()
    }

    /// Starts `message`; returns it to publish.
    pub(crate) fn start(&mut self, message: Entry) -> Entry {
        debug_assert!(self.ready());
        self.in_flight = Some(InFlight {
            message: message.clone(),
            pkid: None,
        });
        message
    }

    /// A (re)connection: returns the unacknowledged message to publish again.
    pub(crate) fn connected(&mut self) -> Option<Entry> {
        self.connected = true;
        self.in_flight.as_mut().map(|f| {
            f.pkid = None;
            f.message.clone()
        })
    }

    /// The connection broke: whatever was sent is forgotten by the clean
    /// session and is published again on the next connection.
    pub(crate) fn disconnected(&mut self) {
        self.connected = false;
        if let Some(f) = &mut self.in_flight {
            f.pkid = None;
        }
    }

    /// The eventloop wrote the in-flight message as packet `pkid`.
    pub(crate) fn sent(&mut self, pkid: u16) {
        if let Some(f) = &mut self.in_flight {
            f.pkid = Some(pkid);
        }
    }

    /// PubAck for `pkid`: returns the delivered message if it was ours.
    pub(crate) fn acked(&mut self, pkid: u16) -> Option<Entry> {
        match &self.in_flight {
            Some(f) if f.pkid == Some(pkid) => self.in_flight.take().map(|f| f.message),
            _ => None,
        }
    }

    /// Gives up the in-flight message, if any.
    pub(crate) fn abandon(&mut self) -> Option<Entry> {
        self.in_flight.take().map(|f| f.message)
    }
}

/// Polls the eventloop and forwards what the publisher needs; sleeps with
/// backoff after errors. Ends when the publisher is gone or after a
/// disconnect was sent.
async fn drive(mut events: EventLoop, link: mpsc::Sender<Link>) {
    let mut failures = 0u32;
    // Another publisher with this client id (a second service with the same
    // file): say it once, and reconnect with backoff rather than at once.
    let mut takeovers = Takeovers::default();
    loop {
        let event = events.poll().await;
        if let Some(Change::Settled) = takeovers.tick(Instant::now()) {
            tracing::info!("alerts publisher: the MQTT session is no longer taken over");
        }
        let forward = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let (_, Some(Change::Contested(times))) = takeovers.connected(Instant::now()) {
                    tracing::error!(
                        client_id = %events.mqtt_options.client_id(),
                        takeovers = times,
                        "alerts publisher: the broker closes this connection and accepts the next \
                         at once, again and again: another MQTT client uses this client_id (a \
                         second fleetpulse with this file?)"
                    );
                }
                if !takeovers.contested() {
                    failures = 0;
                }
                Link::Connected
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => Link::Acked(ack.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Link::Sent(pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(error) => {
                takeovers.lost(&error, Instant::now());
                let retry_in = backoff(failures);
                failures = failures.saturating_add(1);
                if link
                    .send(Link::Failed {
                        error: crate::secrets::redact_error(&error),
                        failures,
                        retry_in,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(retry_in).await;
                continue;
            }
        };
        if link.send(forward).await.is_err() {
            return;
        }
    }
}

/// Publishes every MQTT notification of the outbox, in order, each removed
/// once acknowledged, until the input ended and nothing is left, or until
/// `deadline` is cancelled; what is left then stays in the outbox.
pub(crate) async fn publish_all(
    publisher: MqttPublisher,
    shared: Arc<Shared>,
    deadline: CancellationToken,
) -> ChannelReport {
    let (client, events) = AsyncClient::new(publisher.options.clone(), 16);
    let (link_tx, mut link) = mpsc::channel(16);
    let driver = drive(events, link_tx);
    let deadline = deadline.cancelled();
    tokio::pin!(driver, deadline);
    tracing::info!(broker = %publisher.broker, client_id = %publisher.client_id(), "alerts publisher started");

    let mut report = ChannelReport::default();
    let mut state = PublishState::default();
    let mut input_open = true;
    let mut cursor = 0;
    let publish = |entry: &Entry| {
        let message: &AlertMessage = &entry.message;
        let topic = alert_topic(&publisher.topic_prefix, &message.customer);
        client.try_publish(topic, QoS::AtLeastOnce, false, message.to_json())
    };
    let mut timed_out = false;
    while input_open || !state.idle() {
        tokio::select! {
            biased;
            _ = &mut deadline => {
                timed_out = true;
                break;
            }
            _ = &mut driver => break,
            event = link.recv() => match event {
                Some(Link::Connected) => {
                    tracing::info!(broker = %publisher.broker, "alerts publisher connected");
                    if let Some(message) = state.connected()
                        && let Err(e) = publish(&message)
                    {
                        give_up(&mut state, &e);
                    }
                }
                Some(Link::Sent(pkid)) => state.sent(pkid),
                Some(Link::Acked(pkid)) => {
                    if let Some(entry) = state.acked(pkid) {
                        report.delivered += 1;
                        shared.delivered(entry.seq);
                        let message = &entry.message;
                        tracing::debug!(
                            customer = %message.customer, rule = %message.rule,
                            status = %message.status,
                            notification_id = %message.notification_id, "alert published"
                        );
                    }
                }
                Some(Link::Failed { error, failures, retry_in }) => {
                    if !state.idle() {
                        report.retries += 1;
                    }
                    state.disconnected();
                    if failures <= 3 || failures.is_multiple_of(20) {
                        tracing::warn!(
                            broker = %publisher.broker, failures,
                            retry_in_ms = retry_in.as_millis() as u64,
                            "alerts publisher: broker connection failed: {error}"
                        );
                    }
                }
                None => break,
            },
            next = shared.next(Channel::Mqtt, cursor), if input_open && state.ready() => match next {
                Some(entry) => {
                    cursor = entry.seq;
                    let entry = state.start(entry);
                    if let Err(e) = publish(&entry) {
                        give_up(&mut state, &e);
                    }
                }
                None => input_open = false,
            },
            // Disconnected with nothing in flight: the end of the input is
            // the end (`next` above waits for a connection).
            () = shared.drained(Channel::Mqtt, cursor), if input_open && state.idle() => {
                input_open = false;
            }
        }
    }

    // What was not acknowledged stays in the outbox.
    if state.abandon().is_some() || timed_out {
        tracing::warn!(
            broker = %publisher.broker,
            timed_out,
            "alerts publisher stopped before publishing every alert; the rest stays in the outbox"
        );
    }
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut driver).await;
    }
    tracing::info!(delivered = report.delivered, "alerts publisher stopped");
    report
}

/// The eventloop refused the publish request (only if it is gone): the
/// message cannot be sent now; it stays in the outbox for the next start
/// rather than wait forever.
fn give_up(state: &mut PublishState, error: &rumqttc::ClientError) {
    if let Some(entry) = state.abandon() {
        let message = &entry.message;
        tracing::error!(
            customer = %message.customer, rule = %message.rule,
            error = %crate::secrets::redact(&error.to_string()),
            "cannot hand the alert to the MQTT client; it stays in the outbox"
        );
    }
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::kpi::risk::AlertStatus;

    use super::*;
    use crate::alerts::format::tests::record;

    fn message() -> Entry {
        Entry {
            seq: 1,
            channel: Channel::Mqtt,
            message: Arc::new(AlertMessage::from_record(&record(AlertStatus::Open))),
        }
    }

    #[test]
    fn client_id_is_the_service_id_with_a_suffix() {
        assert_eq!(
            alerts_client_id("fleetpulse-ingest"),
            "fleetpulse-ingest-alerts"
        );
        let publisher = MqttPublisher::new(&MqttConfig::default(), "cs/alerts").unwrap();
        assert_eq!(publisher.client_id(), "fleetpulse-ingest-alerts");
    }

    #[test]
    fn a_message_starts_only_when_connected_and_nothing_is_in_flight() {
        let mut state = PublishState::default();
        assert!(!state.ready() && state.idle());
        assert!(state.connected().is_none(), "nothing to resend");
        assert!(state.ready());
        state.start(message());
        assert!(!state.ready() && !state.idle());
    }

    #[test]
    fn only_the_ack_of_the_latest_transmission_delivers() {
        let mut state = PublishState::default();
        state.connected();
        state.start(message());
        assert!(state.acked(1).is_none(), "not sent yet");
        state.sent(7);
        assert!(state.acked(6).is_none(), "someone else's packet");
        assert!(state.acked(7).is_some());
        assert!(state.ready() && state.idle());
        assert!(state.acked(7).is_none(), "acknowledged once");
    }

    #[test]
    fn an_unacknowledged_message_is_published_again_after_reconnecting() {
        let mut state = PublishState::default();
        state.connected();
        let sent = state.start(message());
        state.sent(1);
        state.disconnected();
        assert!(!state.ready());
        assert!(
            state.acked(1).is_none(),
            "an ack of the old session is void"
        );
        let again = state.connected().expect("resend");
        assert!(Arc::ptr_eq(&sent.message, &again.message));
        state.sent(1);
        assert!(state.acked(1).is_some());
    }

    #[test]
    fn abandon_gives_up_what_is_in_flight() {
        let mut state = PublishState::default();
        assert!(state.abandon().is_none());
        state.connected();
        state.start(message());
        assert!(state.abandon().is_some());
        assert!(state.idle());
    }
}
