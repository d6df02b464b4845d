//! Handing a history (`fleetpulse backfill`) or dead letters (`fleetpulse
//! replay`) to the service through its broker, with the broker's word that
//! someone takes them.
//!
//! Over MQTT 3.1.1 a broker acknowledges a publish that no one subscribes
//! to, or that the user may not send (mosquitto's ACLs), and drops it: a
//! history sent before the service ever connected to that broker, or sent
//! as the service's own user, was lost while the command said "sent". MQTT
//! 5's acknowledgement carries a reason (no matching subscribers, not
//! authorized), so the first message goes out over MQTT 5 and the command
//! stops, naming the cause, unless the broker took it; the rest follow over
//! the publisher every tool shares. A stopped service's session still
//! matches (the broker queues for it), so a history sent while the service
//! restarts is kept. A broker without MQTT 5 gets the first message with
//! the others, unchecked.

use std::time::Duration;

use anyhow::{Context, bail};
use fleetpulse_sim::{PublishOptions, PublishProgress, PublishReport};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};

use crate::retry::{Backoff, jitter};

/// The broker user a tool publishes as, when not the service's own.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PublishAs {
    /// Broker user (default: the service's `mqtt.username`). With
    /// deploy/mosquitto's access control: `fleetpulse-backfill` for
    /// `backfill`, `fleetpulse-replay` for `replay`.
    #[arg(long)]
    pub username: Option<String>,
    /// Environment variable holding that user's password.
    #[arg(long)]
    pub password_env: Option<String>,
}

impl PublishAs {
    /// `options` with this user, if one is given.
    pub fn apply(&self, options: &mut PublishOptions) -> anyhow::Result<()> {
        if let Some(user) = &self.username {
            options.username = Some(user.clone());
            options.password = None;
        }
        if let Some(var) = &self.password_env {
            let password =
                std::env::var(var).with_context(|| format!("--password-env: ${var} is not set"))?;
            options.password = Some(password);
        }
        Ok(())
    }
}

/// Publishes `messages` (`(topic, payload)`) to the broker of `options`,
/// the first checked as above; `progress` counts every message delivered.
pub async fn publish<I>(
    options: PublishOptions,
    messages: I,
    mut progress: impl FnMut(PublishProgress),
) -> anyhow::Result<PublishReport>
where
    I: IntoIterator<Item = (String, Vec<u8>)>,
{
    let broker = options.broker();
    let mut messages = messages.into_iter();
    let Some((topic, payload)) = messages.next() else {
        let none = std::iter::empty::<(String, Vec<u8>)>();
        return Ok(fleetpulse_sim::publish(options, none, progress).await?);
    };
    let first = match send_first(&options, &topic, &payload).await? {
        Sent::Taken => None,
        Sent::NotChecked(why) => {
            tracing::warn!(%broker, reason = %why, "cannot ask the broker with MQTT 5 whether the service takes what is sent: sent unchecked");
            Some((topic, payload))
        }
    };
    let checked = u64::from(first.is_none());
    let mut report = fleetpulse_sim::publish(options, first.into_iter().chain(messages), |p| {
        progress(PublishProgress {
            delivered: p.delivered + checked,
            sent: p.sent + checked,
            ..p
        })
    })
    .await
    .with_context(|| format!("publishing to {broker}"))?;
    report.messages += checked;
    Ok(report)
}

/// What became of the first message.
#[derive(Debug, PartialEq)]
enum Sent {
    /// The broker took it for a subscriber.
    Taken,
    /// Not sent: the broker cannot be asked (why).
    NotChecked(String),
}

/// How long the broker may take to answer the first message, once
/// reached.
const FIRST_WITHIN: Duration = Duration::from_secs(10);

/// Sends one message over MQTT 5 and reads the broker's reason code; a
/// broker that cannot be reached is tried again as the publisher does,
/// for `give_up_after`.
async fn send_first(options: &PublishOptions, topic: &str, payload: &[u8]) -> anyhow::Result<Sent> {
    let broker = options.broker();
    let started = tokio::time::Instant::now();
    let mut retry = 0;
    let answer = loop {
        match ask(options, topic, payload).await {
            Some(Err(ConnectionError::Io(e))) if started.elapsed() < options.give_up_after => {
                let delay = Backoff::RECONNECT.delay(retry, jitter());
                tracing::warn!(%broker, error = %e, ?delay, "MQTT connection failed, retrying");
                tokio::time::sleep(delay).await;
                retry += 1;
            }
            Some(Err(ConnectionError::Io(e))) => bail!(
                "cannot reach the MQTT broker at {broker} for {:?}: {e}",
                options.give_up_after
            ),
            answer => break answer,
        }
    };
    let user = options.username.as_deref().unwrap_or("(anonymous)");
    let reason = match answer {
        None => {
            return Ok(Sent::NotChecked(format!(
                "no answer within {FIRST_WITHIN:?}"
            )));
        }
        Some(Err(ConnectionError::ConnectionRefused(code))) => match code {
            ConnectReturnCode::UnsupportedProtocolVersion => {
                return Ok(Sent::NotChecked("the broker does not speak MQTT 5".into()));
            }
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => bail!(
                "{broker} refused the connection of user `{user}` ({code:?}): check the \
                 user and its password (mqtt.username and mqtt.password_env, or --username \
                 and --password-env)"
            ),
            code => bail!("{broker} refused the connection: {code:?}"),
        },
        Some(Err(e)) => return Ok(Sent::NotChecked(e.to_string())),
        Some(Ok(reason)) => reason,
    };
    match reason {
        PubAckReason::Success => Ok(Sent::Taken),
        PubAckReason::NoMatchingSubscribers => bail!(
            "{broker} has no subscriber for `{topic}`: the service has never connected to \
             this broker with its client id, so the broker drops what is sent (it keeps \
             messages only for a session it knows). Start `fleetpulse run` with this \
             configuration, then send again; nothing was taken in"
        ),
        PubAckReason::NotAuthorized => {
            // deploy/mosquitto/fleetpulse.acl's operator users.
            let who = if topic.ends_with("/backfill") {
                "`fleetpulse-backfill` publishes to backfill topics"
            } else {
                "devices and `fleetpulse-replay` publish to telemetry topics"
            };
            bail!(
                "{broker} does not let user `{user}` publish to `{topic}` (not authorized): \
                 the broker drops what it sends. With deploy/mosquitto's access control \
                 only {who}: pass --username and --password-env; nothing was taken in"
            )
        }
        other => bail!("{broker} did not take the message to `{topic}`: {other:?}"),
    }
}

/// One try: the broker's answer to the message, or why there is none
/// (`None`: no answer in time).
async fn ask(
    options: &PublishOptions,
    topic: &str,
    payload: &[u8],
) -> Option<Result<PubAckReason, ConnectionError>> {
    let mut mqtt = MqttOptions::new(
        format!("{}-check", options.client_id),
        &options.host,
        options.port,
    );
    mqtt.set_keep_alive(options.keep_alive)
        .set_clean_start(true)
        .set_max_packet_size(u32::try_from(options.max_packet_bytes).ok());
    if let Some(user) = &options.username {
        mqtt.set_credentials(user, options.password.clone().unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, 4);
    // A new client's request channel has room: this does not wait.
    if (client.try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec())).is_err() {
        return None;
    }
    let answer = tokio::time::timeout(FIRST_WITHIN, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => return Ok(ack.reason),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    answer.ok()
}

/// Whether every store keeps windows from `from` (the earliest reading to
/// be sent, of `what`) on: one whose retention starts later
/// (VictoriaMetrics keeps a month by default) would drop the earlier
/// windows, VictoriaMetrics without an error, while the command said them
/// sent. Refused, saying which store, from when it keeps and what to do,
/// unless `anyway`; a store whose retention is not known is named and not
/// held against what is sent.
pub async fn stores_keep(
    what: &str,
    from: i64,
    config: &crate::config::ServiceConfig,
    anyway: bool,
) -> anyhow::Result<()> {
    use crate::sinks::retention::{self, Retention};
    let now = jiff::Timestamp::now().as_millisecond();
    for (i, sink) in config.sinks.iter().enumerate() {
        let name = format!("[[sinks]] {} ({})", i + 1, sink.describe());
        match retention::of(sink).await {
            Retention::Forever => {}
            Retention::Unknown(why) => {
                eprintln!("{name}: not asked how far back it keeps: {why}");
            }
            Retention::For { period, setting } => {
                let keeps =
                    now.saturating_sub(i64::try_from(period.as_millis()).unwrap_or(i64::MAX));
                if from >= keeps {
                    continue;
                }
                let said = format!(
                    "{name} keeps nothing before {} ({setting}); {what} starts {}: that \
                     store would not keep its windows before then (VictoriaMetrics drops them \
                     without an error)",
                    crate::backfill::stamp(keeps - keeps.rem_euclid(1000)),
                    crate::backfill::stamp(from)
                );
                if anyway {
                    eprintln!("{said}; sent all the same (--beyond-retention)");
                    continue;
                }
                let day = fleetpulse_engine::config::DAY_MS as i64;
                let next = (keeps.div_euclid(day) + 1) * day;
                bail!(
                    "{said}. Raise the store's retention, send only what is from {} on, or \
                     pass --beyond-retention to send it all the same (the other stores keep the \
                     earlier windows)",
                    crate::backfill::stamp(next).trim_end_matches("T00:00:00Z")
                );
            }
        }
    }
    Ok(())
}
