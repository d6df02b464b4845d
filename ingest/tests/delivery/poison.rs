//! Poison messages never stall the stream. A 70 MiB publish and a few
//! payloads just above `limits.max_payload_bytes` land in the middle of a
//! simulated fleet's telemetry, through real mosquitto into the real
//! `fleetpulse run` (WAL on, InfluxDB 1.x store):
//!
//! - with the shipped broker limit (`deploy/mosquitto/no-loss.conf`), the
//!   broker drops the 70 MiB one and says so in its log; the service refuses
//!   the ones the broker delivers as `too_large` and dead-letters them;
//! - with a broker without a limit, the client still takes the 70 MiB packet
//!   and admission refuses it;
//! - with a client limit below what the broker delivers (a misconfiguration),
//!   the connection breaks once, the oversized packet is counted and logged,
//!   and the next connection takes it;
//!
//! and each time every other message is stored: the KPIs equal the
//! simulator's ground truth value by value.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetpulse::config::{LimitsConfig, MqttConfig};
use fleetpulse::dead_letter::DeadLetterRecord;
use fleetpulse::source::mqtt::PUBLISH_OVERHEAD_BYTES;
use fleetpulse_sim::PublishOptions;

use crate::support::fleets::{fleet, publish_options, write_customers};
use crate::support::servers::{InfluxDb1, Mosquitto, NO_LOSS, free_port};
use crate::support::service::{Service, influx_sections, metric, metrics, write_service_config};
use crate::support::truth::{equal, store_days, truth_days};

/// mosquitto logs a dropped oversized publish at debug level only.
const DEBUG_LOG: &str = "log_type error\nlog_type warning\nlog_type notice\n\
                         log_type information\nlog_type debug\n";

/// 70 MiB, the publish of the original report.
const HUGE: usize = 70 * 1024 * 1024;

/// The service file: WAL (so acknowledgement waits for durability and a
/// refused message is acknowledged on refusal), dead letters, `/metrics`.
fn write_config(
    dir: &Path,
    mosquitto: &Mosquitto,
    influx: &InfluxDb1,
    http_port: u16,
    mqtt_extra: &str,
) -> PathBuf {
    let rest = format!(
        r#"{mqtt_extra}

[limits]
dead_letter_file = "dead-letters.jsonl"

[wal]
dir = "wal"

[http]
enabled = true
listen = "127.0.0.1:{http_port}"

{influx}"#,
        influx = influx_sections(influx, "fleetpulse")
    );
    write_service_config(dir, mosquitto, "fleetpulse-poison-test", &rest)
}

const TOO_LARGE: &str = "fleetpulse_messages_rejected_total{reason=\"too_large\"}";
const ACCEPTED: &str = "fleetpulse_messages_accepted_total";
const RECEIVED: &str = "fleetpulse_messages_received_total";
const CONNECTION_ERRORS: &str = "fleetpulse_mqtt_connection_errors_total";
const OVERSIZED: &str = "fleetpulse_mqtt_oversized_packets_total";

/// What a run saw: `/metrics` once everything was handled, the service log
/// and the dead letters.
struct Run {
    metrics: String,
    log: String,
    letters: Vec<DeadLetterRecord>,
    sent: u64,
    dead_letter_bytes: u64,
}

/// Runs the fleet through `mosquitto` into a fresh service with
/// `mqtt_extra` in its `[mqtt]` section; `poison` payload sizes are
/// published (QoS 1, on a real device's topic) once about a third of the
/// fleet is out, `delivered` of them expected at the service as too_large.
/// Asserts the stored KPIs equal the ground truth.
async fn run_with_poison(
    mosquitto: &Mosquitto,
    mqtt_extra: &str,
    poison: &[usize],
    delivered: u64,
    seed: u64,
) -> Run {
    let influx = InfluxDb1::start();
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(4, 20, 4, seed);
    write_customers(dir.path(), &fleet);
    let http_port = free_port();
    let config = write_config(dir.path(), mosquitto, &influx, http_port, mqtt_extra);
    let mut service = Service::new(config, dir.path().join("service.log")).env("RUST_LOG", "info");
    service.start_and_wait("subscribed");

    let messages: Vec<(String, Vec<u8>)> = fleet.encoded_messages().collect();
    let sent = messages.len() as u64;
    let topic = messages[0].0.clone();
    let options = PublishOptions {
        rate: Some(600.0),
        ..publish_options(mosquitto, "poison-test-fleet")
    };
    let publisher = tokio::spawn(fleetpulse_sim::publish(options, messages, |_| {}));
    tokio::time::sleep(Duration::from_millis(sent * 1000 / 600 / 3)).await;
    assert!(
        !publisher.is_finished(),
        "the fleet was out before the poison"
    );
    for (i, &size) in poison.iter().enumerate() {
        let payload = vec![0x0a ^ (i as u8); size];
        tokio::task::block_in_place(|| mosquitto.publish(&topic, &payload, 1));
    }
    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.messages, sent);

    // Everything handled: every fleet message accepted, every delivered
    // poison refused.
    let started = Instant::now();
    let handled = loop {
        let text = metrics(http_port);
        if metric(&text, ACCEPTED) >= sent && metric(&text, TOO_LARGE) >= delivered {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not handled in 60 s: {}/{sent} accepted, {}/{delivered} too_large\n{}",
            metric(&text, ACCEPTED),
            metric(&text, TOO_LARGE),
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    service.stop();
    equal(&store_days(&influx, "fleetpulse"), &truth_days(&fleet))
        .unwrap_or_else(|e| panic!("{e}\n{}", service.log_tail()));

    let letters_path = dir.path().join("dead-letters.jsonl");
    let letters = fleetpulse::dead_letter::read_file(&letters_path).unwrap();
    Run {
        metrics: handled,
        log: service.log(),
        letters,
        sent,
        dead_letter_bytes: std::fs::metadata(&letters_path).map_or(0, |m| m.len()),
    }
}

/// The too_large letters are exactly `sizes`, each with a bounded payload
/// prefix, so the file stays small whatever the payload size.
fn assert_letters(run: &Run, sizes: &[usize]) {
    let mut found: Vec<usize> = run
        .letters
        .iter()
        .filter(|l| l.reason == "too_large")
        .map(|l| l.payload_bytes)
        .collect();
    found.sort_unstable();
    let mut expected = sizes.to_vec();
    expected.sort_unstable();
    assert_eq!(found, expected, "too_large dead letters");
    for letter in &run.letters {
        assert!(letter.payload_hex.len() <= 2 * 256, "{letter:?}");
    }
    // A line is bounded whatever the payload (a 70 MiB one included).
    assert!(
        run.dead_letter_bytes <= 2048 * run.letters.len() as u64,
        "dead-letter file of {} bytes for {} letters",
        run.dead_letter_bytes,
        run.letters.len()
    );
}

fn connects(log: &str) -> usize {
    log.matches("connected to broker").count()
}

/// The broker limit every shipped config sets.
fn shipped_limit() -> usize {
    fleetpulse::broker::MESSAGE_SIZE_LIMIT
}

/// The shipped broker config without its payload limit.
fn without_broker_limit() -> String {
    NO_LOSS
        .lines()
        .filter(|l| !l.starts_with("message_size_limit"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_70_mib_publish_is_dropped_by_the_broker_and_the_stream_goes_on() {
    let mosquitto = Mosquitto::start_with_config(&format!("{NO_LOSS}\n{DEBUG_LOG}"));
    let max_payload = LimitsConfig::default().max_payload_bytes;
    // Above the service's limit, below the broker's: delivered, refused.
    let delivered = [max_payload + 1, max_payload + 40_000, shipped_limit()];
    let mut poison = vec![HUGE];
    poison.extend(delivered);
    let run = run_with_poison(&mosquitto, "", &poison, delivered.len() as u64, 21).await;

    let broker_log = std::fs::read_to_string(mosquitto.data_dir().join("mosquitto.log")).unwrap();
    let dropped: Vec<&str> = broker_log
        .lines()
        .filter(|l| l.contains("Dropped too large PUBLISH"))
        .collect();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(
        dropped[0].contains(&format!("({HUGE} bytes)")),
        "{}",
        dropped[0]
    );

    assert_eq!(metric(&run.metrics, TOO_LARGE), delivered.len() as u64);
    assert_eq!(
        metric(&run.metrics, RECEIVED),
        run.sent + delivered.len() as u64,
        "the 70 MiB publish reached the service"
    );
    assert_letters(&run, &delivered);
    assert_eq!(metric(&run.metrics, CONNECTION_ERRORS), 0);
    assert_eq!(metric(&run.metrics, OVERSIZED), 0);
    assert_eq!(connects(&run.log), 1, "reconnected:\n{}", run.log);
    println!(
        "sent {} + {} poison; broker dropped 1 ({HUGE} bytes), service refused {} as too_large; \
         1 connect; KPIs equal the ground truth",
        run.sent,
        poison.len(),
        delivered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_limit_the_service_refuses_70_mib_and_the_stream_goes_on() {
    let mosquitto = Mosquitto::start_with_config(&without_broker_limit());
    let max_payload = LimitsConfig::default().max_payload_bytes;
    let poison = [HUGE, max_payload + 1];
    let run = run_with_poison(&mosquitto, "", &poison, poison.len() as u64, 22).await;

    assert_eq!(metric(&run.metrics, TOO_LARGE), poison.len() as u64);
    assert_eq!(
        metric(&run.metrics, RECEIVED),
        run.sent + poison.len() as u64
    );
    assert_letters(&run, &poison);
    assert_eq!(metric(&run.metrics, CONNECTION_ERRORS), 0);
    assert_eq!(metric(&run.metrics, OVERSIZED), 0);
    assert_eq!(connects(&run.log), 1, "reconnected:\n{}", run.log);
    println!(
        "sent {} + {} poison, no broker limit; service refused {} as too_large (dead-letter \
         file {} bytes); 1 connect; KPIs equal the ground truth",
        run.sent,
        poison.len(),
        poison.len(),
        run.dead_letter_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_above_the_client_limit_breaks_the_connection_once_and_is_counted() {
    let mosquitto = Mosquitto::start_with_config(&without_broker_limit());
    // The smallest limit the config check lets through.
    let limit = LimitsConfig::default().max_payload_bytes + PUBLISH_OVERHEAD_BYTES;
    let poison = [2 * 1024 * 1024];
    let run = run_with_poison(
        &mosquitto,
        &format!("max_packet_bytes = {limit}"),
        &poison,
        1,
        23,
    )
    .await;

    assert_eq!(metric(&run.metrics, OVERSIZED), 1);
    assert_eq!(metric(&run.metrics, CONNECTION_ERRORS), 1);
    assert_eq!(connects(&run.log), 2, "{}", run.log);
    let told: Vec<&str> = run
        .log
        .lines()
        .filter(|l| l.contains("above mqtt.max_packet_bytes"))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains(&limit.to_string()) && told[0].contains("message_size_limit"),
        "{}",
        told[0]
    );
    assert_eq!(metric(&run.metrics, TOO_LARGE), 1);
    assert_letters(&run, &poison);
    println!(
        "sent {} + a {}-byte payload over a client limit of {limit}: 1 broken connection, \
         counted and logged once, then refused as too_large; KPIs equal the ground truth",
        run.sent, poison[0]
    );
}

/// The embedded broker (`fleetpulse demo`) forwards a payload of the
/// shipped limit and disconnects a publisher whose packet exceeds it with
/// the longest topic allowed for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_forwards_up_to_the_shipped_limit_and_no_more() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use tokio::time::timeout;

    let broker = fleetpulse::broker::start(0).unwrap();
    let limit = shipped_limit();
    let client = |id: &str| {
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.addr.port());
        options.set_max_packet_size(4 * limit, 4 * limit);
        AsyncClient::new(options, 10)
    };
    let topic = fleetpulse_proto::telemetry_topic("c", "s", "d");
    let (subscriber, mut sub_events) = client("poison-embedded-sub");
    subscriber
        .subscribe("fleet/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    timeout(Duration::from_secs(10), async {
        while !matches!(
            sub_events.poll().await,
            Ok(Event::Incoming(Packet::SubAck(_)))
        ) {}
    })
    .await
    .expect("subscribed");
    let received = tokio::spawn(async move {
        let mut sizes = Vec::new();
        let _ = timeout(Duration::from_secs(6), async {
            loop {
                match sub_events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => sizes.push(p.payload.len()),
                    Ok(_) => {}
                    Err(e) => panic!("subscriber: {e}"),
                }
            }
        })
        .await;
        sizes
    });

    let (publisher, mut pub_events) = client("poison-embedded-pub");
    publisher
        .publish(&topic, QoS::AtLeastOnce, false, vec![1u8; limit])
        .await
        .unwrap();
    timeout(Duration::from_secs(10), async {
        loop {
            match pub_events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("a payload of the limit was refused: {e}"),
            }
        }
    })
    .await
    .expect("the payload of the limit is acknowledged");
    publisher
        .publish(
            &topic,
            QoS::AtLeastOnce,
            false,
            vec![2u8; limit + PUBLISH_OVERHEAD_BYTES + 1],
        )
        .await
        .unwrap();
    let refused = timeout(Duration::from_secs(10), async {
        loop {
            match pub_events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return false,
                Ok(_) => {}
                Err(_) => return true,
            }
        }
    })
    .await
    .expect("an answer to the oversized publish");
    assert!(refused, "the oversized publish was acknowledged");
    assert_eq!(received.await.unwrap(), [limit]);
}

/// Every shipped mosquitto config sets the same payload limit as the
/// embedded broker, between the service's payload limit and its client's
/// packet limit.
#[test]
fn every_shipped_broker_config_bounds_the_payload_between_the_service_limits() {
    let limit = shipped_limit();
    assert!(limit >= LimitsConfig::default().max_payload_bytes);
    assert!(MqttConfig::default().max_packet_bytes >= limit + PUBLISH_OVERHEAD_BYTES);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".conf") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let settings = |key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
                .map(|v| v.trim().to_owned())
                .collect()
        };
        assert!(settings("max_packet_size").is_empty(), "{name}");
        if name == "auth.conf" {
            // Users and ACL only, included next to one of the others.
            assert!(settings("listener").is_empty(), "{name}");
            continue;
        }
        assert_eq!(
            settings("message_size_limit"),
            [limit.to_string()],
            "{name}"
        );
        checked.push(name);
    }
    checked.sort();
    assert_eq!(
        checked,
        ["docker.conf", "fleetpulse-dev.conf", "no-loss.conf"]
    );
}
