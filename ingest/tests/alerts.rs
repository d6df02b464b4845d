//! Alert delivery against a real mosquitto and a local webhook receiver: the
//! JSON messages on `cs/alerts/{customer}`, the Slack-compatible POSTs,
//! segment routing, webhook retries (503, 429 with Retry-After), no retry on
//! other 4xx, MQTT delivery across a broker restart, and a stop with the
//! broker down and nothing to send.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetpulse::alerts::{AlertsConfig, AlertsReport, ChannelReport, run_alerts};
use fleetpulse::config::MqttConfig;
use fleetpulse_engine::kpi::health::Stage;
use fleetpulse_engine::kpi::risk::{AlertStatus, Rule};
use fleetpulse_engine::{AlertRecord, Output, Segment};
use serde_json::Value;
use support::servers::Mosquitto;
use support::webhook::{read_request, respond};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// 2024-03-01T00:00:00Z.
const T0: u64 = 1_709_251_200_000;
const DAY: u64 = 86_400_000;

fn alert(customer: &str, name: &str, status: AlertStatus, segment: Segment) -> AlertRecord {
    AlertRecord {
        customer: customer.into(),
        customer_name: name.into(),
        rule: Rule::UsageDrop,
        episode: 1,
        status,
        provisional: false,
        opened_at: T0,
        resolved_at: (status == AlertStatus::Resolved).then_some(T0 + 6 * DAY),
        evidence: "operating hours 31% below the 28-day baseline".into(),
        metric: 0.31,
        threshold: 0.25,
        stage: Stage::Adopt,
        segment,
        arr_at_risk: 120_000.0,
        next_action: Rule::UsageDrop.next_action().into(),
    }
}

/// An alert of the customer most tests use.
fn acme(status: AlertStatus, segment: Segment) -> AlertRecord {
    alert("c01-acme", "Acme Quarry", status, segment)
}

fn broker(mosquitto: &Mosquitto, client_id: &str) -> MqttConfig {
    MqttConfig {
        host: mosquitto.host().into(),
        port: mosquitto.port(),
        client_id: client_id.into(),
        ..MqttConfig::default()
    }
}

/// Fast retries, so the tests take milliseconds per retry.
fn fast(config: AlertsConfig) -> AlertsConfig {
    AlertsConfig {
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        max_retries: 4,
        webhook_timeout: Duration::from_secs(5),
        flush_timeout: Duration::from_secs(30),
        ..config
    }
}

/// Runs the alerts task over `batches`, then closes its input.
async fn deliver(
    config: AlertsConfig,
    broker: MqttConfig,
    batches: Vec<Vec<Output>>,
) -> AlertsReport {
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(run_alerts(config, broker, rx, CancellationToken::new()));
    for batch in batches {
        tx.send(batch.into()).await.unwrap();
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("alerts task ends once its input closes")
        .unwrap()
        .expect("alerts set up")
}

// ---------------------------------------------------------------------------
// A webhook receiver: raw HTTP/1.1 over tokio, keep-alive, scripted answers.
// ---------------------------------------------------------------------------

/// Scripted answers: status and `Retry-After`, one per request.
type Script = Arc<Mutex<VecDeque<(u16, Option<&'static str>)>>>;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    content_type: String,
    body: Value,
}

/// Answers each POST with the next scripted `(status, Retry-After)`, then
/// 200; records every request. Stops on drop.
struct WebhookReceiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    async fn start(script: Vec<(u16, Option<&'static str>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/services/T0/B0/secret",
            listener.local_addr().unwrap()
        );
        let received = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(Mutex::new(VecDeque::from(script)));
        let task = tokio::spawn({
            let received = received.clone();
            async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    connections.spawn(serve(stream, script.clone(), received.clone()));
                }
            }
        });
        Self {
            url,
            received,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: TcpStream, script: Script, received: Arc<Mutex<Vec<Received>>>) {
    let mut stream = BufReader::new(stream);
    while let Some(request) = read_request(&mut stream).await {
        received.lock().unwrap().push(Received {
            path: request.path.clone(),
            content_type: request
                .header("content-type")
                .unwrap_or_default()
                .to_owned(),
            body: request.json(),
        });
        let (status, retry_after) = script.lock().unwrap().pop_front().unwrap_or((200, None));
        let retry_after = retry_after
            .map(|v| format!("retry-after: {v}\r\n"))
            .unwrap_or_default();
        let answer = if status == 200 { "ok" } else { "no" };
        if !respond(&mut stream, status, &retry_after, answer).await {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_resolved_alerts_reach_mqtt_and_the_webhook() {
    let mosquitto = Mosquitto::start();
    mosquitto.subscribe_session("cs-team", "cs/alerts/#");
    let hook = WebhookReceiver::start(Vec::new()).await;
    let config = fast(AlertsConfig {
        webhook_url: Some(hook.url.clone().into()),
        // Tech-touch accounts get automated nudges: MQTT only.
        route_segments: Some(vec![Segment::HighTouch, Segment::LowTouch]),
        ..AlertsConfig::default()
    });
    let open = acme(AlertStatus::Open, Segment::LowTouch);
    let resolved = acme(AlertStatus::Resolved, Segment::LowTouch);
    let nudge = alert(
        "c09-tiny",
        "Tiny Works",
        AlertStatus::Open,
        Segment::TechTouch,
    );
    let batches = vec![
        vec![Output::Alert(open.clone())],
        vec![Output::Alert(resolved.clone()), Output::Alert(nudge)],
    ];

    let report = deliver(config, broker(&mosquitto, "fleetpulse-test"), batches).await;

    assert_eq!(
        report,
        AlertsReport {
            alerts: 3,
            mqtt: ChannelReport {
                delivered: 3,
                ..ChannelReport::default()
            },
            webhook: ChannelReport {
                delivered: 2,
                ..ChannelReport::default()
            },
            not_routed: 1,
        }
    );

    // MQTT: one JSON message per transition, on the customer's topic, in order.
    let messages = tokio::task::spawn_blocking(move || {
        let got = mosquitto.receive("cs-team", "cs/alerts/#", 3, Duration::from_secs(10));
        // Not retained: a new subscriber gets nothing.
        let late = mosquitto.receive("late-joiner", "cs/alerts/#", 1, Duration::from_secs(1));
        (got, late)
    })
    .await
    .unwrap();
    let (messages, late) = messages;
    assert!(late.is_empty(), "alerts must not be retained: {late:?}");
    let acme: Vec<Value> = messages
        .iter()
        .filter(|m| m.topic == "cs/alerts/c01-acme")
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(acme.len(), 2, "{messages:?}");
    assert!(messages.iter().any(|m| m.topic == "cs/alerts/c09-tiny"));
    let (first, second) = (&acme[0], &acme[1]);
    assert_eq!(first["customer"], "c01-acme");
    assert_eq!(first["customer_name"], "Acme Quarry");
    assert_eq!(first["rule"], "usage_drop");
    assert_eq!(first["status"], "open");
    assert_eq!(first["episode"], 1);
    assert_eq!(first["opened_at"], "2024-03-01T00:00:00Z");
    assert_eq!(first["opened_at_ms"], T0);
    assert!(first["resolved_at"].is_null());
    assert_eq!(first["evidence"], open.evidence);
    assert_eq!(first["metric"], 0.31);
    assert_eq!(first["threshold"], 0.25);
    assert_eq!(first["stage"], "adopt");
    assert_eq!(first["segment"], "low-touch");
    assert_eq!(first["arr_at_risk"], 120_000.0);
    assert_eq!(first["next_action"], open.next_action);
    assert_eq!(second["status"], "resolved");
    assert_eq!(second["resolved_at"], "2024-03-07T00:00:00Z");
    assert_eq!(second["resolved_at_ms"], T0 + 6 * DAY);

    // Webhook: one Slack-compatible POST per routed transition, in order.
    let posts = hook.received();
    assert_eq!(posts.len(), 2, "{posts:?}");
    for post in &posts {
        assert_eq!(post.path, "/services/T0/B0/secret");
        assert_eq!(post.content_type, "application/json");
        assert!(
            post.body["blocks"]
                .as_array()
                .is_some_and(|b| !b.is_empty())
        );
    }
    let text = |i: usize| posts[i].body["text"].as_str().unwrap().to_owned();
    assert_eq!(
        text(0),
        format!(
            ":rotating_light: Acme Quarry — usage_drop opened (low-touch, ARR 120,000 at stake): \
             operating hours 31% below the 28-day baseline. Next: {}",
            open.next_action
        )
    );
    assert!(
        text(1).starts_with(":white_check_mark: Acme Quarry — usage_drop resolved after 6 days"),
        "{}",
        text(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answering_503_twice_is_retried_until_it_succeeds() {
    // The first 503 asks for 1 s, which the 50 ms cap shortens.
    let hook = WebhookReceiver::start(vec![(503, Some("1")), (503, None)]).await;
    let config = fast(AlertsConfig {
        mqtt: false,
        webhook_url: Some(hook.url.clone().into()),
        ..AlertsConfig::default()
    });
    let open = acme(AlertStatus::Open, Segment::HighTouch);
    let started = std::time::Instant::now();
    let report = deliver(
        config,
        MqttConfig::default(),
        vec![vec![Output::Alert(open)]],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "Retry-After is capped"
    );
    assert_eq!(
        report.webhook,
        ChannelReport {
            delivered: 1,
            failed: 0,
            retries: 2,
            kept: 0,
        }
    );
    let posts = hook.received();
    assert_eq!(posts.len(), 3);
    assert!(
        posts.iter().all(|p| p.body == posts[0].body),
        "the same body each time"
    );
    assert!(posts[0].body["text"].is_string());
}

/// An alert's open and its resolve through the webhook at `url` alone,
/// with fast retries; how the webhook channel fared.
async fn open_then_resolved(url: String) -> ChannelReport {
    let config = fast(AlertsConfig {
        mqtt: false,
        webhook_url: Some(url.into()),
        ..AlertsConfig::default()
    });
    let open = acme(AlertStatus::Open, Segment::HighTouch);
    let resolved = acme(AlertStatus::Resolved, Segment::HighTouch);
    let batch = vec![Output::Alert(open), Output::Alert(resolved)];
    deliver(config, MqttConfig::default(), vec![batch])
        .await
        .webhook
}

/// A receiver answering the first alert with a redirect to another host:
/// not followed (the URL's secret would go there as the Referer, and the
/// POST turned into a GET answering 200 would count as delivered while
/// nobody got the alert): refused, as any 4xx is. Answering the second with
/// 200 and a gigabyte announced, a little of it sent, then silence: taken
/// as delivered once the status is in, without waiting for the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_a_huge_answer_is_not_read_whole() {
    use tokio::io::AsyncWriteExt as _;
    let thief = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let thief_addr = thief.local_addr().unwrap();
    let stolen = Arc::new(Mutex::new(Vec::<String>::new()));
    let _thief = tokio::spawn({
        let stolen = stolen.clone();
        async move {
            while let Ok((stream, _)) = thief.accept().await {
                let mut stream = BufReader::new(stream);
                if let Some(r) = read_request(&mut stream).await {
                    let referer = r.header("referer").unwrap_or_default().to_owned();
                    stolen
                        .lock()
                        .unwrap()
                        .push(format!("{} referer {referer}", r.line));
                }
                respond(&mut stream, 200, "", "ok").await;
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/services/T0/B0/secret",
        listener.local_addr().unwrap()
    );
    let _hook = tokio::spawn(async move {
        let mut answered = 0;
        while let Ok((stream, _)) = listener.accept().await {
            let mut stream = BufReader::new(stream);
            while read_request(&mut stream).await.is_some() {
                answered += 1;
                if answered == 1 {
                    let location = format!("location: http://{thief_addr}/\r\n");
                    if !respond(&mut stream, 301, &location, "moved").await {
                        break;
                    }
                    continue;
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n";
                let raw = stream.get_mut();
                raw.write_all(head.as_bytes()).await.unwrap();
                raw.write_all(&vec![b'x'; 64 * 1024]).await.unwrap();
                std::future::pending::<()>().await;
            }
        }
    });
    let started = std::time::Instant::now();
    assert_eq!(
        open_then_resolved(url).await,
        ChannelReport {
            delivered: 1,
            failed: 1,
            retries: 0,
            kept: 0,
        }
    );
    assert!(
        stolen.lock().unwrap().is_empty(),
        "{:?}",
        stolen.lock().unwrap()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_4xx_are_not_retried_and_later_alerts_still_go_out() {
    let hook = WebhookReceiver::start(vec![(400, None), (429, Some("0"))]).await;
    // 400 on the first: failed at once. 429 then 200 on the second.
    assert_eq!(
        open_then_resolved(hook.url.clone()).await,
        ChannelReport {
            delivered: 1,
            failed: 1,
            retries: 1,
            kept: 0,
        }
    );
    let statuses: Vec<String> = hook
        .received()
        .iter()
        .map(|p| {
            p.body["text"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ":rotating_light:",
            ":white_check_mark:",
            ":white_check_mark:"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_alerts_wait_for_a_broker_restart() {
    let mut mosquitto = Mosquitto::start();
    mosquitto.subscribe_session("cs-team", "cs/alerts/#");
    let config = fast(AlertsConfig::default());
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(run_alerts(
        config,
        broker(&mosquitto, "fleetpulse-restart"),
        rx,
        CancellationToken::new(),
    ));
    let open = acme(AlertStatus::Open, Segment::HighTouch);
    tx.send(vec![Output::Alert(open.clone())].into())
        .await
        .unwrap();

    // Broker down: the next alert waits in the queue, then goes out.
    let mut mosquitto = tokio::task::spawn_blocking(move || {
        // Give the first alert time to be acknowledged before the stop.
        std::thread::sleep(Duration::from_millis(500));
        mosquitto.stop();
        mosquitto
    })
    .await
    .unwrap();
    let resolved = acme(AlertStatus::Resolved, Segment::HighTouch);
    tx.send(vec![Output::Alert(resolved)].into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mosquitto = tokio::task::spawn_blocking(move || {
        mosquitto.restart();
        mosquitto
    })
    .await
    .unwrap();
    drop(tx);
    let report = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("alerts task ends")
        .unwrap()
        .unwrap();
    assert_eq!(report.mqtt.delivered, 2, "{report:?}");
    assert_eq!(report.mqtt.failed, 0, "{report:?}");

    let messages = tokio::task::spawn_blocking(move || {
        mosquitto.receive("cs-team", "cs/alerts/#", 2, Duration::from_secs(10))
    })
    .await
    .unwrap();
    let statuses: Vec<String> = messages
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(&m.payload).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(statuses, ["open", "resolved"], "{messages:?}");
}

/// The broker down and no alert to send: the alerts task stops as soon as
/// its input closes, not at the shutdown deadline (it waited the whole
/// `flush_timeout` for a connection, delaying every stop while the broker
/// was down, and warned that alerts were left in the outbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_and_nothing_to_send_the_alerts_stop_at_once() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down = MqttConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: "fleetpulse-down".into(),
        ..MqttConfig::default()
    };
    let config = AlertsConfig {
        flush_timeout: Duration::from_secs(600),
        ..fast(AlertsConfig::default())
    };
    // `deliver` gives the task 60 s: far less than the deadline.
    let report = deliver(config, down, vec![vec![]]).await;
    assert_eq!(report, AlertsReport::default());
}
