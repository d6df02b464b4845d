//! Alert notifications against a hostile network: the real `fleetpulse run`
//! (WAL on, SQLite store) on a simulated fleet through real mosquitto, with a
//! local Slack-style webhook receiver whose URL holds a secret.
//!
//! - The webhook refuses connections, then answers 500 echoing the secret
//!   path, then answers slower than the timeout: the secret (and the MQTT
//!   password) appears in no line of the service's debug log and in nothing
//!   the HTTP API serves, while the failures themselves are logged.
//! - The webhook is down while the alerts are produced, the service is
//!   SIGKILLed and restarted with the webhook up: every alert transition the
//!   store holds reaches the webhook, duplicates carry the same id.
//!
//! Expected notifications come from the store's alert rows (one row per
//! episode, expanded into its open and resolve transitions), and their ids
//! are recomputed here from the documented formula.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetpulse::sinks::sqlite::SqliteStore;
use fleetpulse_engine::kpi::risk::AlertStatus;
use fleetpulse_sim::{Fleet, FleetSpec};
use serde_json::Value;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::fleets::{publish_options, write_customers};
use crate::support::poll::{PATIENCE, until};
use crate::support::servers::{Mosquitto, NO_LOSS, free_port, http_get};
use crate::support::service::{Service, write_durable_config};
use crate::support::webhook::{read_request, respond};

/// Logged once per start, with the outbox's backlog.
const ALERTS_STARTED: &str = "alerts started";

/// Six customers, 45 days: nine alert transitions from day 1 to day 33.
fn fleet() -> Fleet {
    Fleet::generate(&FleetSpec {
        customers: 6,
        devices: 24,
        days: 45,
        seed: 7,
        samples_per_batch: 36,
        ..FleetSpec::default()
    })
}

/// A broker with the shipped settings (with mosquitto's defaults a
/// subscriber that falls behind loses messages at the broker's queue
/// limit), a directory holding the fleet's `customers.toml`, and a webhook
/// receiver not listening yet.
fn setup() -> (Mosquitto, tempfile::TempDir, Fleet, Hook) {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet();
    write_customers(dir.path(), &fleet);
    (mosquitto, dir, fleet, Hook::new())
}

async fn publish(mosquitto: &Mosquitto, fleet: &Fleet, client_id: &str) {
    let options = publish_options(mosquitto, client_id);
    let messages: Vec<(String, Vec<u8>)> = fleet.encoded_messages().collect();
    let sent = messages.len();
    let report = fleetpulse_sim::publish(options, messages, |_| {})
        .await
        .unwrap();
    assert_eq!(report.messages as usize, sent);
}

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/// The real binary at debug level, so the secret test sees every line.
fn debug_service(config: PathBuf, log: PathBuf) -> Service {
    Service::new(config, log).env("RUST_LOG", "debug")
}

/// Polls `done` for up to 60 s.
fn wait(what: &str, done: impl FnMut() -> bool) {
    until(what, PATIENCE, Duration::from_millis(50), done);
}

fn write_config(dir: &Path, mosquitto: &Mosquitto, extra: &str) -> PathBuf {
    write_durable_config(
        dir,
        mosquitto,
        &format!("fleetpulse-alerts-{}", mosquitto.port()),
        1,
        "",
        &format!("[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n\n{extra}\n"),
    )
}

// ---------------------------------------------------------------------------
// A Slack-style webhook receiver
// ---------------------------------------------------------------------------

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 200.
    Ok,
    /// 500, the body echoing the request line (path included).
    Fail,
    /// Waits this long before answering 200 (longer than the client's
    /// timeout).
    Slow(Duration),
}

/// One request.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    idempotency_key: Option<String>,
    body: Value,
    mode: Mode,
}

/// An HTTP/1.1 receiver on a fixed port; not listening until started, so
/// the client first meets a refused connection.
struct Hook {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    posts: Arc<Mutex<Vec<Post>>>,
    task: Option<JoinHandle<()>>,
}

impl Hook {
    fn new() -> Self {
        Self {
            port: free_port(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            posts: Arc::default(),
            task: None,
        }
    }

    async fn listen(&mut self, mode: Mode) {
        self.set(mode);
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let (mode, posts) = (self.mode.clone(), self.posts.clone());
        self.task = Some(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, mode.clone(), posts.clone()));
            }
        }));
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    fn count(&self, mode: Mode) -> usize {
        self.posts().iter().filter(|p| p.mode == mode).count()
    }

    /// Notification ids the receiver took (answered 200 in time), with how
    /// many times each came.
    fn delivered(&self) -> BTreeMap<String, usize> {
        let mut ids = BTreeMap::new();
        for post in self.posts().iter().filter(|p| p.mode == Mode::Ok) {
            let id = post.body["notification_id"].as_str().unwrap().to_owned();
            *ids.entry(id).or_default() += 1;
        }
        ids
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve(stream: TcpStream, mode: Arc<Mutex<Mode>>, posts: Arc<Mutex<Vec<Post>>>) {
    let mut stream = BufReader::new(stream);
    while let Some(request) = read_request(&mut stream).await {
        let mode = *mode.lock().unwrap();
        posts.lock().unwrap().push(Post {
            path: request.path.clone(),
            idempotency_key: request.header("idempotency-key").map(str::to_owned),
            body: request.json(),
            mode,
        });
        let (status, answer) = match mode {
            Mode::Ok => (200, "ok".to_owned()),
            Mode::Fail => (500, format!("no handler for {}", request.line)),
            Mode::Slow(delay) => {
                tokio::time::sleep(delay).await;
                (200, "ok".to_owned())
            }
        };
        if !respond(&mut stream, status, "", &answer).await {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Expected notifications, from the store
// ---------------------------------------------------------------------------

/// FNV-1a, 128 bit, as documented for `alert_id` (docs/CUSTOMER_SUCCESS.md).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for &byte in bytes {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul((1u128 << 88) + 0x13b);
    }
    hash
}

/// What the store says was sent: notification id -> (customer, rule, status).
fn expected(store: &Path) -> BTreeMap<String, (String, String, String)> {
    let store = SqliteStore::open(store).unwrap();
    let mut expected = BTreeMap::new();
    for alert in store.alerts(false).unwrap() {
        let key = format!(
            "{}\0{}\0{}",
            alert.customer,
            alert.rule.as_str(),
            alert.opened_at
        );
        let alert_id = format!("{:032x}", fnv1a_128(key.as_bytes()));
        // A retracted episode (late data restated its days) was opened and
        // retracted; whether its resolve went out before depends on when the
        // late data came (see `unknown` below).
        // A resolve's id holds its date.
        let mut statuses = vec![("open", String::new())];
        match (alert.status, alert.resolved_at) {
            (AlertStatus::Resolved, Some(at)) => statuses.push(("resolved", format!("-{at}"))),
            (AlertStatus::Retracted, _) => statuses.push(("retracted", String::new())),
            _ => {}
        }
        for (status, date) in statuses {
            expected.insert(
                format!("{alert_id}-{status}{date}"),
                (
                    alert.customer.to_string(),
                    alert.rule.as_str().to_owned(),
                    status.to_owned(),
                ),
            );
        }
    }
    expected
}

/// Event time of the checkpoint (ms), 0 without one.
fn checkpoint(wal: &Path) -> u64 {
    std::fs::read(wal.join("checkpoint.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|json| json["written_before"].as_u64())
        .unwrap_or(0)
}

/// Every webhook post is well formed: the secret path, the id in the body
/// and the header, and text that names the transition.
fn check_posts(hook: &Hook, path: &str, expected: &BTreeMap<String, (String, String, String)>) {
    for post in hook.posts() {
        assert_eq!(post.path, path);
        let id = post.body["notification_id"].as_str().unwrap();
        assert_eq!(post.idempotency_key.as_deref(), Some(id));
        let alert_id = post.body["alert_id"].as_str().unwrap();
        assert!(id.starts_with(alert_id), "{id} / {alert_id}");
        let Some((_, rule, status)) = expected.get(id) else {
            // A transition of an episode that late data restated since
            // (retracted, or back open).
            assert!(
                expected.keys().any(|k| k.starts_with(alert_id)),
                "{id} is no alert of the store: {:?}",
                post.body
            );
            continue;
        };
        let text = post.body["text"].as_str().unwrap();
        assert!(text.contains(rule.as_str()), "{text}");
        let verb = match status.as_str() {
            "open" => "opened",
            "retracted" => "retracted",
            _ => "resolved",
        };
        assert!(text.contains(verb), "{text}");
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_never_puts_its_secret_in_a_log_or_the_api() {
    let (mosquitto, dir, fleet, mut hook) = setup();
    let secret = format!("SECRETxyz{}q7", hook.port);
    let path = format!("/hooks/T000/B000/{secret}");
    let url = format!("http://127.0.0.1:{}{path}", hook.port);
    let password = format!("mqtt-pw-{}-s3cr3t", hook.port);
    let http = free_port();
    let config = write_config(
        dir.path(),
        &mosquitto,
        &format!(
            r#"
[http]
enabled = true
listen = "127.0.0.1:{http}"

[alerts]
mqtt = true
webhook_url_env = "FLEETPULSE_TEST_WEBHOOK"
webhook_timeout = "300ms"
retry_initial = "50ms"
retry_max = "300ms"
max_retries = 3
"#
        ),
    );
    // The broker takes any credentials; the password still travels.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "persistent_session = true",
        "persistent_session = true\nusername = \"fleetpulse\"\npassword_env = \"FLEETPULSE_TEST_MQTT_PASSWORD\"",
    );
    std::fs::write(&config, text).unwrap();
    let mut service = debug_service(config, dir.path().join("service.log"))
        .env("FLEETPULSE_TEST_WEBHOOK", &url)
        .env("FLEETPULSE_TEST_MQTT_PASSWORD", &password);
    service.start_and_wait(ALERTS_STARTED);
    service.wait_for_log("connected to broker", 1);
    publish(&mosquitto, &fleet, "alerts-secret-sim").await;

    // Connection refused, retried many times.
    let failed = "alert webhook failed";
    let failures = |needle: &str| {
        let log = service.log();
        log.lines()
            .filter(|l| l.contains(failed) && l.contains(needle))
            .count()
    };
    wait("refused attempts", || failures("Connection refused") >= 6);
    // 500 with the path echoed in the body.
    hook.listen(Mode::Fail).await;
    wait("500s", || {
        hook.count(Mode::Fail) >= 6 && failures("HTTP 500") >= 6
    });
    // Slower than the client's timeout.
    hook.set(Mode::Slow(Duration::from_secs(1)));
    wait("timeouts", || {
        hook.count(Mode::Slow(Duration::from_secs(1))) >= 3 && failures("timed out") >= 3
    });
    hook.set(Mode::Ok);
    let store = dir.path().join("kpi.sqlite");
    wait("every alert of the store delivered", || {
        let expected = expected(&store);
        let delivered = hook.delivered();
        !expected.is_empty() && expected.keys().all(|id| delivered.contains_key(id))
    });

    // Nothing the API serves holds the secret.
    let mut api = vec![
        "/healthz".to_owned(),
        "/readyz".to_owned(),
        "/metrics".to_owned(),
        "/api/customers".to_owned(),
        "/api/alerts?status=all".to_owned(),
        "/api/portfolio".to_owned(),
        "/".to_owned(),
    ];
    for customer in fleet.customers() {
        api.push(format!("/api/customers/{}", customer.id));
    }
    for endpoint in &api {
        let response = http_get(&format!("http://127.0.0.1:{http}{endpoint}")).unwrap();
        let text = response.text();
        for needle in [secret.as_str(), "T000/B000", password.as_str()] {
            assert!(!text.contains(needle), "{endpoint} serves `{needle}`");
        }
    }
    service.stop();

    let log = service.log();
    // The failures were logged (each kind, waited for above), the body the
    // receiver echoed redacted...
    assert!(log.contains("HTTP 500: no handler for POST *** HTTP/1.1"));
    assert!(log.contains("still failing"), "{}", service.log_tail());
    // ...and no line holds a secret, whole or in part.
    for (number, line) in log.lines().enumerate() {
        for needle in [secret.as_str(), "T000/B000", password.as_str()] {
            assert!(
                !line.contains(needle),
                "line {} holds `{needle}`: {line}",
                number + 1
            );
        }
    }
    check_posts(&hook, &path, &expected(&store));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_waiting_for_a_dead_webhook_survive_a_kill_9() {
    let (mosquitto, dir, fleet, mut hook) = setup();
    let path = "/services/T1/B1/kill9-secret";
    let config = write_config(
        dir.path(),
        &mosquitto,
        &format!(
            r#"
[alerts]
mqtt = false
webhook_url = "http://127.0.0.1:{port}{path}"
retry_initial = "50ms"
retry_max = "200ms"
max_retries = 2
"#,
            port = hook.port
        ),
    );
    let mut service = debug_service(config, dir.path().join("service.log"));
    service.start_and_wait(ALERTS_STARTED);
    service.wait_for_log("connected to broker", 1);
    publish(&mosquitto, &fleet, "alerts-kill9-sim").await;

    // The webhook is down (nothing listens) while the alerts are produced
    // and the checkpoint moves past some of them.
    let store = dir.path().join("kpi.sqlite");
    let wal = dir.path().join("wal");
    let behind_the_checkpoint = || {
        let written_before = checkpoint(&wal);
        let expected = expected(&store);
        expected.len() >= 4
            && SqliteStore::open(&store)
                .unwrap()
                .alerts(false)
                .unwrap()
                .iter()
                .any(|a| a.opened_at < written_before)
            && service.log().matches("still failing").count() >= 1
    };
    let started = std::time::Instant::now();
    while !behind_the_checkpoint() {
        if started.elapsed() > PATIENCE {
            let alerts = SqliteStore::open(&store).unwrap().alerts(false).unwrap();
            panic!(
                "timed out waiting for alerts behind the checkpoint: {} expected, checkpoint {}, \
                 alerts opened at {:?}, {} \"still failing\" lines\n{}",
                expected(&store).len(),
                checkpoint(&wal),
                alerts.iter().map(|a| a.opened_at).collect::<Vec<_>>(),
                service.log().matches("still failing").count(),
                service.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let before_kill = expected(&store);
    service.kill();
    assert!(hook.posts().is_empty());

    // Restarted with the webhook up: the outbox goes out first.
    hook.listen(Mode::Ok).await;
    service.start_and_wait(ALERTS_STARTED);
    let waiting = service
        .log()
        .lines()
        .filter(|l| l.contains(ALERTS_STARTED))
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(!waiting.contains("waiting_webhook=0"), "{waiting}");
    wait("every alert of the store delivered", || {
        let delivered = hook.delivered();
        let expected = expected(&store);
        expected.keys().all(|id| delivered.contains_key(id))
    });
    service.stop();

    // Every transition the store holds was delivered, at least once; each
    // duplicate carries the id of its original.
    let expected = expected(&store);
    // Every episode the store held before the kill is there still (late
    // data may have retracted it, or restated it back open: restatements
    // run again after a restart).
    // The alert id: 32 hex digits before the transition.
    let episode = |id: &str| id[..32].to_owned();
    let episodes: BTreeSet<String> = expected.keys().map(|id| episode(id)).collect();
    assert!(before_kill.keys().all(|id| episodes.contains(&episode(id))));
    let retracted = |id: &str| episodes.contains(&episode(id)) && !expected.contains_key(id);
    let delivered = hook.delivered();
    let missing: Vec<_> = expected
        .iter()
        .filter(|(id, _)| !delivered.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "not delivered: {missing:?}\n{}",
        service.log_tail()
    );
    let unknown: BTreeSet<_> = delivered
        .keys()
        .filter(|id| !expected.contains_key(*id) && !retracted(id))
        .collect();
    assert!(
        unknown.is_empty(),
        "not in the store: {unknown:?}\n{:?}\n{}",
        (hook.posts().iter())
            .filter(|p| (p.body["notification_id"].as_str())
                .is_some_and(|id| unknown.contains(&id.to_string())))
            .map(|p| p.body.to_string())
            .collect::<Vec<_>>(),
        service.log_tail()
    );
    check_posts(&hook, path, &expected);
}
