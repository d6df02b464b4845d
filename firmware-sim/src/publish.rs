//! Publishing a message stream to an MQTT broker (rumqttc).
//!
//! Two futures run concurrently in one task, neither ever cancelled:
//! - the *feeder* paces the messages (`Pacer`) and hands them to the
//!   client's bounded request channel, which blocks it while the broker is
//!   `max_inflight` acknowledgements behind;
//! - the *driver* polls the event loop, counts deliveries (PubAck for QoS 1,
//!   PubComp for QoS 2, the write itself for QoS 0), reports progress, and on
//!   connection errors backs off (`Reconnect`) and reconnects.
//!
//! rumqttc moves unacknowledged publishes into `EventLoop::pending` when a
//! connection fails, but drops them again when the broker answers the next
//! CONNECT without a session (always, with a clean session). The driver
//! therefore takes them out after each error and puts them back after the
//! next CONNACK, so every message is delivered (at least once) and delivered
//! messages are counted once each. The bookkeeping lives in plain types
//! (`Pacer`, `Reconnect`, `ProgressClock`, [`count_samples`]) with unit
//! tests; the async code only moves data between them.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Request,
};
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info, warn};

use crate::SimError;

pub use rumqttc::QoS;

/// Where and how to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishOptions {
    /// Broker host name or IP address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id.
    pub client_id: String,
    /// User name, if the broker wants credentials.
    pub username: Option<String>,
    /// Password (needs `username`).
    pub password: Option<String>,
    /// Delivery guarantee; with QoS 1 and 2 `publish` returns only once every
    /// message is acknowledged.
    pub qos: QoS,
    /// Target rate in messages per second; `None` publishes as fast as the
    /// broker acknowledges.
    pub rate: Option<f64>,
    /// Messages handed to the broker and not yet acknowledged, at most.
    pub max_inflight: NonZeroU16,
    /// Largest MQTT packet (fixed header, topic and payload), bytes.
    /// rumqttc's default (10 KiB) is too small for long batches.
    pub max_packet_bytes: usize,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// How long to keep retrying a broker that cannot be reached, or that
    /// acknowledges nothing, before failing.
    pub give_up_after: Duration,
    /// How often the progress callback is called at most.
    pub progress_every: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            host: "localhost".to_owned(),
            port: 1883,
            client_id: "fleetpulse-sim".to_owned(),
            username: None,
            password: None,
            qos: QoS::AtLeastOnce,
            rate: None,
            max_inflight: NonZeroU16::new(1000).expect("1000 is not zero"),
            max_packet_bytes: fleetpulse_proto::Limits::default().max_payload_bytes + 4096,
            keep_alive: Duration::from_secs(30),
            give_up_after: Duration::from_secs(60),
            progress_every: Duration::from_secs(1),
        }
    }
}

impl PublishOptions {
    /// Checks the options; the error names the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |field, reason: &str| {
            Err(SimError::Options {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.host.is_empty() {
            return bad("host", "must not be empty");
        }
        if self.password.is_some() && self.username.is_none() {
            return bad("password", "needs a username");
        }
        if self
            .rate
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            return bad("rate", "must be a positive number of messages per second");
        }
        if self.max_packet_bytes < 1024 {
            return bad("max_packet_bytes", "must be at least 1024");
        }
        if self.keep_alive < Duration::from_secs(1) {
            return bad("keep_alive", "must be at least 1 s");
        }
        Ok(())
    }

    /// `host:port`, for messages.
    pub fn broker(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn mqtt_options(&self) -> MqttOptions {
        let mut mqtt = MqttOptions::new(&self.client_id, &self.host, self.port);
        mqtt.set_keep_alive(self.keep_alive)
            .set_clean_session(true)
            .set_inflight(self.max_inflight.get())
            .set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes);
        if let Some(user) = &self.username {
            mqtt.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        mqtt
    }
}

/// Where a publish run stands; passed to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishProgress {
    /// Messages handed to the MQTT client.
    pub sent: u64,
    /// Messages delivered (acknowledged, for QoS 1 and 2).
    pub delivered: u64,
    /// Samples in the messages sent.
    pub samples: u64,
    /// Payload bytes sent.
    pub bytes: u64,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Times the connection was re-established.
    pub reconnects: u32,
}

/// What a finished publish run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishReport {
    /// Messages delivered (all of them).
    pub messages: u64,
    /// Samples in those messages.
    pub samples: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// `messages / elapsed`.
    pub messages_per_sec: f64,
    /// Times the connection was re-established.
    pub reconnects: u32,
}

/// Publishes `messages` (`(topic, payload)`) to the broker and returns once
/// every one is delivered, calling `progress` now and then.
///
/// Connection errors are retried with backoff; the run fails when the broker
/// refuses the connection, when it cannot be reached (or acknowledges
/// nothing) for `give_up_after`, or when a message is larger than
/// `max_packet_bytes`.
pub async fn publish<I, P>(
    options: PublishOptions,
    messages: I,
    mut progress: P,
) -> Result<PublishReport, SimError>
where
    I: IntoIterator<Item = (String, Vec<u8>)>,
    P: FnMut(PublishProgress),
{
    options.validate()?;
    let (client, mut eventloop) = AsyncClient::new(
        options.mqtt_options(),
        usize::from(options.max_inflight.get()),
    );
    let feed = Feed::default();
    let started = Instant::now();
    let feeder = feed_messages(&client, &options, messages, &feed, started);
    let driver = drive(
        &mut eventloop,
        &client,
        &options,
        &feed,
        started,
        &mut progress,
    );
    let ((), report) = tokio::try_join!(feeder, driver)?;
    Ok(report)
}

/// What the feeder has handed to the client so far.
#[derive(Debug, Default)]
struct Feed {
    sent: AtomicU64,
    samples: AtomicU64,
    bytes: AtomicU64,
    /// Every message has been counted in `sent`.
    done: AtomicBool,
}

impl Feed {
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    fn progress(&self, delivered: u64, elapsed: Duration, reconnects: u32) -> PublishProgress {
        PublishProgress {
            sent: self.sent(),
            delivered,
            samples: self.samples.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            elapsed,
            reconnects,
        }
    }
}

async fn feed_messages<I>(
    client: &AsyncClient,
    options: &PublishOptions,
    messages: I,
    feed: &Feed,
    started: Instant,
) -> Result<(), SimError>
where
    I: IntoIterator<Item = (String, Vec<u8>)>,
{
    let mut pacer = options.rate.map(Pacer::new);
    let mut messages = messages.into_iter().peekable();
    while let Some((topic, payload)) = messages.next() {
        let size = packet_size(&topic, &payload);
        if size > options.max_packet_bytes {
            return Err(SimError::MessageTooLarge {
                topic,
                size,
                limit: options.max_packet_bytes,
            });
        }
        if let Some(pacer) = &mut pacer {
            let wait = pacer.wait(started.elapsed());
            if !wait.is_zero() {
                sleep(wait).await;
            }
            pacer.sent(started.elapsed());
        }
        feed.samples
            .fetch_add(count_samples(&payload), Ordering::Relaxed);
        feed.bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        feed.sent.fetch_add(1, Ordering::Relaxed);
        // Say "done" before the last hand-over: its delivery is still to
        // come, so the driver cannot miss the moment everything is delivered.
        if messages.peek().is_none() {
            feed.done.store(true, Ordering::Relaxed);
        }
        client
            .publish(topic, options.qos, false, payload)
            .await
            .map_err(|e| SimError::Enqueue(Box::new(e)))?;
    }
    feed.done.store(true, Ordering::Relaxed);
    Ok(())
}

async fn drive<P: FnMut(PublishProgress)>(
    eventloop: &mut EventLoop,
    client: &AsyncClient,
    options: &PublishOptions,
    feed: &Feed,
    started: Instant,
    progress: &mut P,
) -> Result<PublishReport, SimError> {
    let broker = options.broker();
    let mut delivered = 0u64;
    let mut reconnects = 0u32;
    let mut connected = false;
    let mut resend: VecDeque<Request> = VecDeque::new();
    let mut reconnect = Reconnect::new(options.give_up_after);
    let mut last_delivery = Instant::now();
    let mut clock = ProgressClock::new(options.progress_every);
    while !(feed.done() && delivered >= feed.sent()) {
        match eventloop.poll().await {
            Ok(event) => {
                let now = Instant::now();
                if let Event::Incoming(Packet::ConnAck(_)) = event {
                    if connected {
                        reconnects += 1;
                        info!(%broker, reconnects, "reconnected to the MQTT broker");
                    }
                    connected = true;
                    reconnect.on_connected(feed.sent() == delivered);
                    last_delivery = now;
                    // What the failed connection left unacknowledged goes out
                    // first; rumqttc forgot it on the clean session.
                    let mut pending = std::mem::take(&mut resend);
                    pending.extend(eventloop.pending.drain(..));
                    eventloop.pending = pending;
                }
                if is_delivery(options.qos, &event) {
                    delivered += 1;
                    last_delivery = now;
                    reconnect.on_delivery();
                }
                let outstanding = feed.sent().saturating_sub(delivered);
                if outstanding > 0 && now - last_delivery > options.give_up_after {
                    return Err(SimError::AckTimeout {
                        broker,
                        after: options.give_up_after,
                        outstanding,
                    });
                }
                if clock.due(started.elapsed()) {
                    progress(feed.progress(delivered, started.elapsed(), reconnects));
                }
            }
            Err(ConnectionError::ConnectionRefused(code)) => {
                return Err(SimError::ConnectionRefused {
                    broker,
                    code: format!("{code:?}"),
                });
            }
            Err(error) => {
                resend.extend(eventloop.pending.drain(..));
                match reconnect.on_error(Instant::now()) {
                    Some(delay) => {
                        warn!(%broker, %error, ?delay, "MQTT connection failed, retrying");
                        sleep(delay).await;
                    }
                    None => {
                        return Err(SimError::BrokerUnreachable {
                            broker,
                            after: options.give_up_after,
                            source: Box::new(error),
                        });
                    }
                }
            }
        }
    }
    if connected {
        disconnect(eventloop, client).await;
    }
    let elapsed = started.elapsed();
    progress(feed.progress(delivered, elapsed, reconnects));
    let report = PublishReport {
        messages: delivered,
        samples: feed.samples.load(Ordering::Relaxed),
        bytes: feed.bytes.load(Ordering::Relaxed),
        elapsed,
        messages_per_sec: rate(delivered, elapsed),
        reconnects,
    };
    info!(%broker, messages = report.messages, samples = report.samples,
        messages_per_sec = report.messages_per_sec, "published");
    Ok(report)
}

/// Says goodbye once everything is delivered; a broker that closes first
/// costs nothing, so failures here are only logged.
async fn disconnect(eventloop: &mut EventLoop, client: &AsyncClient) {
    if let Err(error) = client.try_disconnect() {
        debug!(%error, "could not request an MQTT disconnect");
        return;
    }
    let flushed = timeout(DISCONNECT_GRACE, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(error) => {
                    debug!(%error, "connection closed while disconnecting");
                    break;
                }
            }
        }
    })
    .await;
    if flushed.is_err() {
        debug!("MQTT disconnect not flushed within {DISCONNECT_GRACE:?}");
    }
}

const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// Whether an event is the delivery of one message at `qos`.
fn is_delivery(qos: QoS, event: &Event) -> bool {
    matches!(
        (qos, event),
        (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
            | (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
            | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_)))
    )
}

/// Size of the MQTT PUBLISH packet carrying `payload` on `topic` (fixed
/// header up to 5 bytes, topic length 2, packet id 2).
fn packet_size(topic: &str, payload: &[u8]) -> usize {
    topic.len() + payload.len() + 9
}

fn rate(messages: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        messages as f64 / secs
    } else {
        0.0
    }
}

/// Spaces messages `1 / rate` apart. After a stall (the broker was slow) it
/// catches up for at most [`Pacer::CATCH_UP`], not with a burst of
/// everything that was missed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pacer {
    interval: Duration,
    /// When the next message is due, since the start.
    next_due: Duration,
}

impl Pacer {
    const CATCH_UP: Duration = Duration::from_secs(1);

    fn new(rate: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / rate),
            next_due: Duration::ZERO,
        }
    }

    /// How long to wait before the next message, `elapsed` after the start.
    fn wait(&self, elapsed: Duration) -> Duration {
        self.next_due.saturating_sub(elapsed)
    }

    /// Records a message sent `elapsed` after the start.
    fn sent(&mut self, elapsed: Duration) {
        let floor = elapsed.saturating_sub(Self::CATCH_UP);
        self.next_due = self.next_due.max(floor) + self.interval;
    }
}

/// Backoff and give-up bookkeeping of the connection.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reconnect {
    give_up_after: Duration,
    delay: Duration,
    /// Start of the current stretch without progress (no delivery and no
    /// connection with nothing outstanding).
    failing_since: Option<Instant>,
}

impl Reconnect {
    const FIRST_DELAY: Duration = Duration::from_millis(100);
    const MAX_DELAY: Duration = Duration::from_secs(5);

    fn new(give_up_after: Duration) -> Self {
        Self {
            give_up_after,
            delay: Self::FIRST_DELAY,
            failing_since: None,
        }
    }

    /// A connection error at `now`: how long to wait before retrying, or
    /// `None` to give up.
    fn on_error(&mut self, now: Instant) -> Option<Duration> {
        let since = *self.failing_since.get_or_insert(now);
        if now - since >= self.give_up_after {
            return None;
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(Self::MAX_DELAY);
        Some(delay)
    }

    /// The broker accepted a connection. It only counts as progress when
    /// nothing is waiting for delivery: a broker that accepts and then drops
    /// every connection must still be given up on.
    fn on_connected(&mut self, nothing_outstanding: bool) {
        self.delay = Self::FIRST_DELAY;
        if nothing_outstanding {
            self.failing_since = None;
        }
    }

    /// A message was delivered.
    fn on_delivery(&mut self) {
        self.failing_since = None;
    }
}

/// Decides when the progress callback is due.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProgressClock {
    every: Duration,
    last: Option<Duration>,
}

impl ProgressClock {
    fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Whether to report now (`elapsed` since the start); records it if so.
    fn due(&mut self, elapsed: Duration) -> bool {
        let due = self.last.is_none_or(|last| elapsed >= last + self.every);
        if due {
            self.last = Some(elapsed);
        }
        due
    }
}

/// Samples in an encoded `TelemetryBatch` (field 6 occurrences), found by
/// walking the top-level protobuf fields without decoding them. A malformed
/// payload counts the samples before the damage.
pub fn count_samples(payload: &[u8]) -> u64 {
    use prost::encoding::decode_varint;
    const SAMPLES_FIELD: u64 = 6;
    let mut buf = payload;
    let mut count = 0;
    while !buf.is_empty() {
        let Ok(key) = decode_varint(&mut buf) else {
            return count;
        };
        let skip = match key & 7 {
            0 => match decode_varint(&mut buf) {
                Ok(_) => 0,
                Err(_) => return count,
            },
            1 => 8,
            2 => match decode_varint(&mut buf) {
                Ok(len) => len as usize,
                Err(_) => return count,
            },
            5 => 4,
            _ => return count,
        };
        if skip > buf.len() {
            return count;
        }
        count += u64::from(key & 7 == 2 && key >> 3 == SAMPLES_FIELD);
        buf = &buf[skip..];
    }
    count
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::BytesMut;
    use fleetpulse_proto::v1::{Sample, TelemetryBatch};
    use prost::Message;
    use rumqttc::{ConnAck, ConnectReturnCode, PubAck};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn paces_to_the_target_rate() {
        let mut pacer = Pacer::new(100.0);
        let ms = Duration::from_millis;
        assert_eq!(pacer.wait(ms(0)), ms(0));
        pacer.sent(ms(0));
        assert_eq!(pacer.wait(ms(0)), ms(10));
        assert_eq!(pacer.wait(ms(4)), ms(6));
        pacer.sent(ms(10));
        assert_eq!(pacer.wait(ms(10)), ms(10));
        // A 5 s stall: catch up for 1 s (100 messages) at most, not 500.
        let mut sent = 0;
        while pacer.wait(ms(5_020)).is_zero() {
            pacer.sent(ms(5_020));
            sent += 1;
        }
        assert!((99..=101).contains(&sent), "{sent}");
    }

    #[test]
    fn backs_off_then_gives_up() {
        let start = Instant::now();
        let mut r = Reconnect::new(Duration::from_secs(10));
        let delays: Vec<_> = (0..8)
            .map(|i| r.on_error(start + Duration::from_millis(i)).unwrap())
            .collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[7], Duration::from_secs(5), "capped");
        assert_eq!(r.on_error(start + Duration::from_secs(10)), None);

        // A connection with messages outstanding resets the delay, not the clock.
        let mut r = Reconnect::new(Duration::from_secs(10));
        r.on_error(start).unwrap();
        r.on_error(start).unwrap();
        r.on_connected(false);
        assert_eq!(
            r.on_error(start + Duration::from_secs(1)),
            Some(Duration::from_millis(100))
        );
        assert_eq!(r.on_error(start + Duration::from_secs(11)), None);

        // A delivery does reset the clock.
        let mut r = Reconnect::new(Duration::from_secs(10));
        r.on_error(start).unwrap();
        r.on_delivery();
        assert!(r.on_error(start + Duration::from_secs(11)).is_some());
    }

    #[test]
    fn reports_progress_at_most_every_interval() {
        let mut clock = ProgressClock::new(Duration::from_secs(1));
        let at = |ms| Duration::from_millis(ms);
        assert!(clock.due(at(0)));
        assert!(!clock.due(at(999)));
        assert!(clock.due(at(1000)));
        assert!(!clock.due(at(1500)));
    }

    #[test]
    fn counts_deliveries_by_qos() {
        let puback = Event::Incoming(Packet::PubAck(PubAck::new(1)));
        let written = Event::Outgoing(Outgoing::Publish(1));
        assert!(is_delivery(QoS::AtLeastOnce, &puback));
        assert!(!is_delivery(QoS::AtLeastOnce, &written));
        assert!(is_delivery(QoS::AtMostOnce, &written));
        assert!(!is_delivery(QoS::ExactlyOnce, &puback));
    }

    fn payload(samples: usize, sequence: u64) -> Vec<u8> {
        TelemetryBatch {
            device_id: "d".into(),
            customer_id: "c".into(),
            site_id: "s".into(),
            sequence,
            unit_epoch: 0,
            firmware_version: "1".into(),
            samples: (0..samples)
                .map(|i| Sample {
                    event_time_ms: 1_000 + i as i64,
                    cumulative_operating_hours: 1.5,
                    ..Sample::default()
                })
                .collect(),
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_samples_without_decoding() {
        for n in [0, 1, 6, 200] {
            assert_eq!(count_samples(&payload(n, 300)), n as u64);
        }
        let p = payload(6, 300);
        assert!(count_samples(&p[..p.len() - 3]) < 6);
        assert_eq!(count_samples(b"\xff\xff"), 0);
    }

    #[test]
    fn publishing_a_fleet_can_be_spawned() {
        fn spawnable<T: Send + 'static>(_: &T) {}
        let fleet = crate::Fleet::generate(&crate::FleetSpec {
            customers: 1,
            devices: 1,
            days: 1,
            ..crate::FleetSpec::default()
        });
        let run = publish(PublishOptions::default(), fleet.encoded_messages(), |_| {});
        spawnable(&run);
    }

    #[test]
    fn rejects_unusable_options() {
        let options = PublishOptions {
            rate: Some(0.0),
            ..PublishOptions::default()
        };
        assert!(matches!(
            options.validate(),
            Err(SimError::Options { field: "rate", .. })
        ));
        let options = PublishOptions {
            password: Some("x".into()),
            ..PublishOptions::default()
        };
        assert!(matches!(
            options.validate(),
            Err(SimError::Options {
                field: "password",
                ..
            })
        ));
        PublishOptions::default().validate().unwrap();
    }

    /// How the fake broker behaves.
    #[derive(Clone, Copy)]
    enum Broker {
        /// Acknowledges everything.
        Acks,
        /// Drops the first connection after this many publishes, unacknowledged.
        DropsFirstConnectionAfter(usize),
        /// Refuses every connection.
        Refuses,
    }

    /// A minimal MQTT 3.1.1 broker on port 0 that records the payloads it
    /// receives.
    async fn fake_broker(behaviour: Broker) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((socket, _)) = listener.accept().await {
                connection += 1;
                let drop_after = match behaviour {
                    Broker::DropsFirstConnectionAfter(n) if connection == 1 => Some(n),
                    _ => None,
                };
                serve(socket, behaviour, drop_after, log.clone()).await;
            }
        });
        (port, received)
    }

    async fn serve(
        mut socket: TcpStream,
        behaviour: Broker,
        drop_after: Option<usize>,
        log: Arc<Mutex<Vec<Vec<u8>>>>,
    ) {
        let mut buf = BytesMut::new();
        let mut out = BytesMut::new();
        let mut publishes = 0;
        loop {
            match Packet::read(&mut buf, 1 << 20) {
                Ok(packet) => {
                    let reply = match packet {
                        Packet::Connect(_) if matches!(behaviour, Broker::Refuses) => Some(
                            Packet::ConnAck(ConnAck::new(ConnectReturnCode::NotAuthorized, false)),
                        ),
                        Packet::Connect(_) => Some(Packet::ConnAck(ConnAck::new(
                            ConnectReturnCode::Success,
                            false,
                        ))),
                        Packet::Publish(p) => {
                            publishes += 1;
                            if drop_after == Some(publishes) {
                                return;
                            }
                            log.lock().unwrap().push(p.payload.to_vec());
                            Some(Packet::PubAck(PubAck::new(p.pkid)))
                        }
                        Packet::PingReq => Some(Packet::PingResp),
                        Packet::Disconnect => return,
                        _ => None,
                    };
                    if let Some(reply) = reply {
                        reply.write(&mut out, 1 << 20).unwrap();
                        if socket.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
                Err(rumqttc::Error::InsufficientBytes(_)) => {
                    let mut chunk = [0u8; 8192];
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn messages(n: usize) -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                (
                    format!("fleet/c/s/d{i}/telemetry"),
                    payload(6, i as u64 + 1),
                )
            })
            .collect()
    }

    fn options(port: u16) -> PublishOptions {
        PublishOptions {
            host: "127.0.0.1".into(),
            port,
            max_inflight: NonZeroU16::new(8).unwrap(),
            give_up_after: Duration::from_secs(5),
            ..PublishOptions::default()
        }
    }

    #[tokio::test]
    async fn publishes_everything_and_waits_for_acks() {
        let (port, received) = fake_broker(Broker::Acks).await;
        let mut calls = 0;
        let report = publish(options(port), messages(50), |_| calls += 1)
            .await
            .unwrap();
        assert_eq!(report.messages, 50);
        assert_eq!(report.samples, 300);
        assert_eq!(report.reconnects, 0);
        assert!(calls >= 1);
        assert_eq!(received.lock().unwrap().len(), 50);
    }

    #[tokio::test]
    async fn resends_what_a_dropped_connection_lost() {
        let (port, received) = fake_broker(Broker::DropsFirstConnectionAfter(10)).await;
        let sent = messages(40);
        let report = publish(options(port), sent.clone(), |_| {}).await.unwrap();
        assert_eq!(report.messages, 40);
        assert_eq!(report.reconnects, 1);
        let mut got = received.lock().unwrap().clone();
        got.sort();
        got.dedup();
        let mut want: Vec<_> = sent.into_iter().map(|(_, p)| p).collect();
        want.sort();
        assert_eq!(got, want, "every message arrives (at least once)");
    }

    #[tokio::test]
    async fn fails_fast_when_refused() {
        let (port, _) = fake_broker(Broker::Refuses).await;
        let err = publish(options(port), messages(3), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, SimError::ConnectionRefused { .. }), "{err}");
    }

    #[tokio::test]
    async fn gives_up_on_an_unreachable_broker() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let options = PublishOptions {
            give_up_after: Duration::from_millis(300),
            ..options(port)
        };
        let err = publish(options, messages(3), |_| {}).await.unwrap_err();
        assert!(matches!(err, SimError::BrokerUnreachable { .. }), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }

    #[tokio::test]
    async fn refuses_messages_above_the_packet_limit() {
        let (port, _) = fake_broker(Broker::Acks).await;
        let options = PublishOptions {
            max_packet_bytes: 1024,
            ..options(port)
        };
        let err = publish(options, vec![("t".to_owned(), vec![0; 2000])], |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, SimError::MessageTooLarge { .. }), "{err}");
    }
}
