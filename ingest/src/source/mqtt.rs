//! The MQTT source: one rumqttc connection (the service runs
//! `mqtt.connections` of them), QoS1 subscription to the telemetry filter,
//! each message handed to the intake lane that owns its device through a
//! bounded channel. When the pipeline is behind, the channel fills, this task stops
//! reading the socket, and TCP pushes back on the broker: nothing is dropped
//! here.
//!
//! rumqttc reconnects on the next `poll()` with no delay of its own, so this
//! loop sleeps with exponential backoff after each error.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, StateError};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::delivery::in_order::InOrder;
use crate::delivery::route::Router;
use crate::metrics::{IngestMetrics, OversizedPacket};
use crate::source::takeover::{Change, Takeovers};

/// A message as received: topic and payload.
#[derive(Debug)]
pub struct Message {
    /// Topic it was published on.
    pub topic: String,
    /// Raw payload.
    pub payload: bytes::Bytes,
    /// With manual acknowledgement: what to hand back once the message is
    /// durable.
    pub ack: Option<AckToken>,
    /// Its share of the intake's byte budget (`mqtt.queue_bytes`), taken
    /// when it is routed to its lane and given back once its group is
    /// handed to the engine.
    pub budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Acknowledges one QoS1 message once it comes back to its connection's
/// task: the ack goes out when every earlier message of that connection is
/// done too (MQTT wants acks in arrival order). Packet ids are reused across
/// connections, so a token from an earlier connection is dropped instead of
/// acknowledging some other message; the broker redelivers the original.
#[derive(Debug, Clone, Copy)]
pub struct AckToken {
    /// Arrival number on its connection ([`InOrder`]).
    number: u64,
    source: usize,
}

impl AckToken {
    /// The token of message `number` of source `source` (an MQTT
    /// connection, or an AEMP poller numbered after them).
    pub fn new(number: u64, source: usize) -> Self {
        Self { number, source }
    }

    /// Which of the service's sources the message came in on.
    pub fn source(&self) -> usize {
        self.source
    }
}

/// What rumqttc acknowledges: only the packet id and QoS matter.
/// The request acknowledging message `pkid` received with `qos`.
fn ack_request(pkid: u16, qos: QoS) -> Option<rumqttc::Request> {
    match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(rumqttc::Request::PubAck(rumqttc::PubAck::new(pkid))),
        QoS::ExactlyOnce => Some(rumqttc::Request::PubRec(rumqttc::PubRec::new(pkid))),
    }
}

/// Writes the acks released in order onto the connection together, with
/// one flush: rumqttc's request queue flushes each request on its own, a
/// system call (and a read at the broker) per message. The event loop is
/// this task's and not being polled, so nothing else writes meanwhile;
/// the state records each ack as rumqttc's own queue would. What cannot be
/// written (no connection, or it broke) is dropped: those packet ids belong
/// to a connection that is gone, and the broker sends their messages again.
async fn send_acks(
    events: &mut rumqttc::EventLoop,
    acks: &mut std::collections::VecDeque<(u16, QoS)>,
) {
    let timeout = Duration::from_secs(events.network_options.connection_timeout());
    let rumqttc::EventLoop { state, network, .. } = events;
    let Some(network) = network.as_mut() else {
        acks.clear();
        return;
    };
    for (pkid, qos) in acks.drain(..) {
        let Some(request) = ack_request(pkid, qos) else {
            continue;
        };
        let written = match state.handle_outgoing_packet(request) {
            Ok(Some(packet)) => network.write(packet).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // The rest of the drain is dropped with it.
            tracing::debug!(error = %e, "acks not written: the connection broke");
            return;
        }
    }
    // A flush that times out leaves the acks buffered: the event loop's
    // next write flushes them, or its read finds the connection broken.
    if let Ok(Err(e)) = tokio::time::timeout(timeout, network.flush()).await {
        tracing::debug!(error = %e, "acks not flushed: the connection broke");
    }
}

/// The source cannot start.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The password variable named in the config is not set.
    #[error("mqtt.password_env: environment variable `{0}` is not set")]
    MissingPassword(String),
    /// A TLS file cannot be read.
    #[error("mqtt.{field}: cannot read {path}: {source}")]
    TlsFile {
        /// Which setting.
        field: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A client certificate without its key, or the other way round.
    #[error("mqtt.tls_client_cert_file and mqtt.tls_client_key_file go together")]
    TlsClientPair,
}

/// The largest packet MQTT can frame (remaining length), and the default of
/// `mqtt.max_packet_bytes`: the client takes any packet a broker may
/// deliver, so an oversized payload is refused (counted, dead-lettered and
/// acknowledged) by admission as `too_large`. A packet above the client's
/// limit cannot be skipped: rumqttc breaks the connection, and the broker
/// redelivers the packet on every reconnect.
pub const MQTT_MAX_PACKET_BYTES: usize = 268_435_455;

/// What a QoS1 PUBLISH carries besides its payload, at most: topic length
/// (2), the longest topic (65,535) and the packet id (2). The client's
/// limit must be the broker's payload limit plus this.
pub const PUBLISH_OVERHEAD_BYTES: usize = 2 + 65_535 + 2;

/// Connection options for `config`, credentials from the environment.
pub fn options(config: &MqttConfig) -> Result<MqttOptions, SourceError> {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options
        .set_keep_alive(config.keep_alive)
        .set_clean_session(!config.persistent_session)
        .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes)
        .set_inflight(config.inflight.max(1));
    if let Some(user) = &config.username {
        let password = match &config.password_env {
            Some(var) => {
                let password =
                    std::env::var(var).map_err(|_| SourceError::MissingPassword(var.clone()))?;
                // Redacted from every log line and error from now on.
                crate::secrets::register(&password);
                password
            }
            None => String::new(),
        };
        options.set_credentials(user, password);
    }
    if let Some(ca) = &config.tls_ca_file {
        let read = |field: &'static str, path: &std::path::PathBuf| {
            std::fs::read(path).map_err(|source| SourceError::TlsFile {
                field,
                path: path.clone(),
                source,
            })
        };
        let ca = read("tls_ca_file", ca)?;
        let client = match (&config.tls_client_cert_file, &config.tls_client_key_file) {
            (Some(cert), Some(key)) => Some((
                read("tls_client_cert_file", cert)?,
                read("tls_client_key_file", key)?,
            )),
            (None, None) => None,
            _ => return Err(SourceError::TlsClientPair),
        };
        options.set_transport(rumqttc::Transport::tls(ca, client, None));
    }
    Ok(options)
}

/// Backoff after consecutive connection failures: 100 ms doubling to 5 s.
pub fn backoff(failures: u32) -> Duration {
    crate::retry::Backoff::RECONNECT.delay(failures, 1.0)
}

/// Runs until `shutdown`, forwarding every telemetry message to the intake
/// lane that owns its device (`out`). `source`: this connection's index
/// among the service's connections, carried in each ack token. With
/// `acks`, messages are acknowledged only when their token comes back
/// on it (manual acknowledgement: after the WAL made them durable);
/// without, rumqttc acknowledges on receipt.
pub async fn run(
    config: MqttConfig,
    source: usize,
    out: Router,
    mut acks: Option<mpsc::UnboundedReceiver<AckToken>>,
    metrics: Arc<IngestMetrics>,
    shutdown: CancellationToken,
) -> Result<(), SourceError> {
    let mut options = options(&config)?;
    options.set_manual_acks(acks.is_some());
    let (client, mut events) = AsyncClient::new(options, 1024);
    let mut failures = 0u32;
    let mut takeovers = Takeovers::default();
    // Messages not acknowledged yet, in arrival order: the lanes finish
    // them out of order, the broker must get the acks in order.
    let mut order: InOrder<(u16, QoS)> = InOrder::default();
    // Acks released in order, written together before the next poll.
    let mut pending_acks: std::collections::VecDeque<(u16, QoS)> =
        std::collections::VecDeque::new();
    loop {
        if !pending_acks.is_empty() {
            send_acks(&mut events, &mut pending_acks).await;
        }
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(token) = async { match acks.as_mut() { Some(a) => a.recv().await, None => None } } => {
                if let Some(more) = acks.as_mut() {
                    release(&mut order, token, more, &mut pending_acks);
                }
                continue;
            }
            event = events.poll() => event,
            () = settles(&takeovers) => {
                if takeovers.tick(Instant::now()) == Some(Change::Settled) {
                    metrics.session_contested.store(false, Relaxed);
                    tracing::info!(
                        client_id = %config.client_id,
                        held_s = crate::source::takeover::SETTLED.as_secs(),
                        "the MQTT session is no longer taken over: the connection held"
                    );
                }
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let (taken, change) = takeovers.connected(Instant::now());
                if taken {
                    metrics.takeovers.fetch_add(1, Relaxed);
                }
                if let Some(Change::Contested(times)) = change {
                    metrics.session_contested.store(true, Relaxed);
                    tracing::error!(
                        client_id = %config.client_id,
                        takeovers = times,
                        "the broker closes this connection and accepts the next at once, again and \
                         again: another MQTT client uses client_id `{}` (a second fleetpulse with \
                         this file?). Each message goes to one of them, so each computes a part of \
                         every window: stop the other, or give each its own mqtt.client_id",
                        config.client_id
                    );
                }
                // While fought over, reconnect with backoff (up to 5 s), not
                // at once: the other client takes the session less often.
                if !takeovers.contested() {
                    failures = 0;
                }
                // Packet ids are reused across connections: what was not
                // acknowledged on the last one is redelivered, never acked.
                order.reset();
                pending_acks.clear();
                tracing::info!(
                    host = %config.host,
                    port = config.port,
                    session_present = ack.session_present,
                    "connected to broker"
                );
                if !ack.session_present {
                    let filters = (config.subscriptions().into_iter())
                        .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        tracing::error!(error = %e, "cannot request subscription");
                    }
                } else {
                    // The broker kept the subscriptions with the session.
                    tracing::info!(topics = ?config.subscriptions(), "subscribed (the session's)");
                    metrics.subscribed.store(true, Relaxed);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                tracing::info!(topics = ?config.subscriptions(), "subscribed");
                metrics.subscribed.store(true, Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                metrics.messages_received.fetch_add(1, Relaxed);
                metrics
                    .bytes_received
                    .fetch_add(publish.payload.len() as u64, Relaxed);
                let ack = (acks.is_some() && publish.qos != QoS::AtMostOnce).then(|| AckToken {
                    number: order.push((publish.pkid, publish.qos), false),
                    source,
                });
                let message = Message {
                    topic: publish.topic,
                    payload: publish.payload,
                    ack,
                    budget: None,
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    sent = out.send(message) => if sent.is_err() { break },
                }
            }
            Ok(_) => {}
            Err(error) => {
                metrics.connection_errors.fetch_add(1, Relaxed);
                // Messages may be queuing for us at the broker: not idle.
                metrics.subscribed.store(false, Relaxed);
                takeovers.lost(&error, Instant::now());
                if let Some(size) = oversized_packet(&error) {
                    // Take it on the next connection: admission refuses it
                    // as too_large and acknowledges it, so it stops looping.
                    let limit = events.mqtt_options.max_packet_size();
                    let raised_to = size.clamp(limit, MQTT_MAX_PACKET_BYTES);
                    events
                        .mqtt_options
                        .set_max_packet_size(raised_to, config.max_packet_bytes);
                    OversizedPacket {
                        size,
                        limit,
                        raised_to,
                    }
                    .emit(&metrics);
                }
                let delay = backoff(failures);
                failures = failures.saturating_add(1);
                log_connection_error(&config, &error, failures, delay);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    // The lanes end once no source feeds them.
    drop(out);
    if let Some(acks) = acks.as_mut() {
        acknowledge_the_rest(&mut events, acks, &mut order).await;
    }
    let _ = client.try_disconnect();
    Ok(())
}

/// Marks `token`'s message done, and those of the tokens queued behind it
/// (a group's come together: their acks go in one write), and queues the
/// acks now released in arrival order.
fn release(
    order: &mut InOrder<(u16, QoS)>,
    token: AckToken,
    acks: &mut mpsc::UnboundedReceiver<AckToken>,
    pending: &mut std::collections::VecDeque<(u16, QoS)>,
) {
    order.done(token.number);
    while let Ok(token) = acks.try_recv() {
        order.done(token.number);
    }
    pending.extend(order.release());
}

/// At a stop the lanes still make durable what they had taken in, and hand
/// its acks back: they go out before the connection closes, or the broker
/// sends every one of those messages again to the next start, where each
/// is refused as `sequence_replayed` (8,057 at one stop in a hostile pass).
/// Ends when every lane has (each within the stop's deadline), with a
/// DISCONNECT: the broker keeps the session for the next start.
async fn acknowledge_the_rest(
    events: &mut rumqttc::EventLoop,
    acks: &mut mpsc::UnboundedReceiver<AckToken>,
    order: &mut InOrder<(u16, QoS)>,
) {
    let mut pending = std::collections::VecDeque::new();
    while let Some(token) = acks.recv().await {
        release(order, token, acks, &mut pending);
        send_acks(events, &mut pending).await;
    }
    let rumqttc::EventLoop { state, network, .. } = events;
    if let Some(network) = network.as_mut()
        && let Ok(Some(packet)) =
            state.handle_outgoing_packet(rumqttc::Request::Disconnect(rumqttc::Disconnect))
        && network.write(packet).await.is_ok()
    {
        // The broker closes the connection once it has read the
        // DISCONNECT, and so every ack before it: read until then. Closed
        // with the messages it sent meanwhile unread (they are not
        // acknowledged: they come again), the connection is reset, and the
        // broker drops what it had not read yet, the last acks among them.
        let closed = async {
            let mut open = network.flush().await;
            while open.is_ok() {
                open = network.read().await.map(drop);
            }
        };
        let _ = tokio::time::timeout(DISCONNECT_WAIT, closed).await;
    }
}

/// How long a stop waits for the broker to close the connection after the
/// DISCONNECT.
const DISCONNECT_WAIT: Duration = Duration::from_secs(2);

/// Resolves when a fight over the session may have ended (never while
/// there is none).
async fn settles(takeovers: &Takeovers) {
    match takeovers.settles_at() {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The size of the packet that broke the connection, when the broker sent
/// one above the client's limit (rumqttc 0.25 reports it as a
/// deserialization error, before reading the packet's body).
pub fn oversized_packet(error: &ConnectionError) -> Option<usize> {
    match error {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) => Some(*size),
        _ => None,
    }
}

fn log_connection_error(
    config: &MqttConfig,
    error: &ConnectionError,
    failures: u32,
    delay: Duration,
) {
    if failures <= 3 || failures.is_multiple_of(20) {
        tracing::warn!(
            host = %config.host,
            port = config.port,
            failures,
            retry_in_ms = delay.as_millis() as u64,
            "broker connection failed: {}",
            crate::secrets::redact_error(error)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_packet_is_told_apart_from_other_errors() {
        let oversized = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(70_000_000),
        ));
        assert_eq!(oversized_packet(&oversized), Some(70_000_000));
        let other = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::MalformedPacket,
        ));
        assert_eq!(oversized_packet(&other), None);
        assert_eq!(oversized_packet(&ConnectionError::NetworkTimeout), None);
    }

    #[test]
    fn the_client_limit_follows_the_config() {
        let config = MqttConfig::default();
        assert_eq!(config.max_packet_bytes, MQTT_MAX_PACKET_BYTES);
        assert_eq!(
            options(&config).unwrap().max_packet_size(),
            MQTT_MAX_PACKET_BYTES
        );
        let config = MqttConfig {
            max_packet_bytes: 2_000_000,
            ..MqttConfig::default()
        };
        assert_eq!(options(&config).unwrap().max_packet_size(), 2_000_000);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(9), Duration::from_secs(5));
    }
}
