//! The broker access control shipped in `deploy/mosquitto/` against a real
//! mosquitto 2: `auth.conf` (with its paths pointed at a temporary
//! directory), `fleetpulse.acl` as it is, and a password file made by
//! `add-users.sh`. A TLS listener with certificates from
//! `make-test-certs.sh` carries the same credentials.
//!
//! What the broker must enforce: a device publishes only to its own
//! telemetry topic and reads nothing; the ingest user reads all telemetry
//! (also as a shared subscription) and publishes alerts; the CS team reads
//! alerts; anonymous clients and wrong passwords are refused at CONNECT.

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fleetpulse_proto::{BACKFILL_FILTER, TELEMETRY_FILTER};
use support::servers::{ClientOptions, Message, Mosquitto, free_port};
use tempfile::TempDir;

const INGEST: (&str, &str) = ("fleetpulse-ingest", "ingest-secret");
const CS_TEAM: (&str, &str) = ("cs-team", "cs-secret");
const BACKFILL: (&str, &str) = ("fleetpulse-backfill", "backfill-secret");
const REPLAY: (&str, &str) = ("fleetpulse-replay", "replay-secret");
const D1: (&str, &str) = ("c1/s1/d1", "d1-secret");
const D2: (&str, &str) = ("c1/s1/d2", "d2-secret");
const D1_TOPIC: &str = "fleet/c1/s1/d1/telemetry";
const D2_TOPIC: &str = "fleet/c1/s1/d2/telemetry";

/// Long enough for a message the broker accepted to arrive; what has not
/// arrived by then was dropped.
const SETTLE: Duration = Duration::from_secs(1);
const ARRIVE: Duration = Duration::from_secs(10);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto")
}

/// A mosquitto with the deploy/ access control and a TLS listener.
struct SecuredBroker {
    broker: Mosquitto,
    tls_port: u16,
    ca: PathBuf,
    _files: TempDir,
}

impl SecuredBroker {
    fn start() -> Self {
        let files = tempfile::Builder::new()
            .prefix("fleetpulse-broker-acl-")
            .tempdir()
            .unwrap();
        let users = [INGEST, CS_TEAM, BACKFILL, REPLAY, D1, D2]
            .iter()
            .map(|(user, password)| format!("{user},{password}\n"))
            .collect::<String>();
        let generated = run_script(
            "add-users.sh",
            &[files.path().join("fleetpulse.passwd").as_os_str()],
            &users,
        );
        assert_eq!(generated, "", "every password was given, none generated");
        fs::copy(
            deploy_dir().join("fleetpulse.acl"),
            files.path().join("fleetpulse.acl"),
        )
        .unwrap();
        let certs = files.path().join("certs");
        run_script("make-test-certs.sh", &[certs.as_os_str()], "");

        // auth.conf as shipped, its two files moved to the temporary dir.
        let dir = format!("{}/", files.path().display());
        let auth: String = fs::read_to_string(deploy_dir().join("auth.conf"))
            .unwrap()
            .lines()
            .map(|line| match line.split_once(' ') {
                Some((key @ ("password_file" | "acl_file"), path)) => {
                    let file = Path::new(path).file_name().unwrap().to_str().unwrap();
                    format!("{key} {dir}{file}\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        assert_eq!(auth.matches(&dir).count(), 2, "auth.conf names two files");
        let tls_port = free_port();
        // "Denied PUBLISH" is a debug message.
        let extra = format!(
            "{auth}\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type debug\n\
             listener {tls_port} 127.0.0.1\n\
             cafile {certs}/ca.crt\n\
             certfile {certs}/server.crt\n\
             keyfile {certs}/server.key\n",
            certs = certs.display()
        );
        Self {
            broker: Mosquitto::start_with_config(&extra),
            tls_port,
            ca: certs.join("ca.crt"),
            _files: files,
        }
    }

    fn publish(&self, who: (&str, &str), topic: &str, payload: &str) -> Result<String, String> {
        let client = ClientOptions {
            credentials: Some(who),
            ..ClientOptions::default()
        };
        self.broker
            .try_publish_with(&client, topic, payload.as_bytes(), 1)
    }

    fn session(&self, who: (&str, &str), client_id: &str, filter: &str) {
        let client = ClientOptions {
            credentials: Some(who),
            ..ClientOptions::default()
        };
        self.broker
            .subscribe_session_with(&client, client_id, filter);
    }

    /// What `who`'s session `client_id` gets within a few seconds, at most
    /// `count` messages.
    fn receive_bytes(
        &self,
        who: (&str, &str),
        client_id: &str,
        filter: &str,
        count: usize,
    ) -> Vec<Message> {
        let client = ClientOptions {
            credentials: Some(who),
            ..ClientOptions::default()
        };
        (self.broker).receive_with(&client, client_id, filter, count, SETTLE * 3)
    }

    fn receive(
        &self,
        who: (&str, &str),
        client_id: &str,
        filter: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<(String, String)> {
        let client = ClientOptions {
            credentials: Some(who),
            ..ClientOptions::default()
        };
        self.broker
            .receive_with(&client, client_id, filter, count, timeout)
            .into_iter()
            .map(|Message { topic, payload }| (topic, String::from_utf8(payload).unwrap()))
            .collect()
    }
}

/// Runs a deploy/mosquitto script with `stdin`; returns its stdout.
fn run_script(name: &str, args: &[&std::ffi::OsStr], stdin: &str) -> String {
    let mut child = Command::new("bash")
        .arg(deploy_dir().join(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn msg(topic: &str, payload: &str) -> (String, String) {
    (topic.to_owned(), payload.to_owned())
}

#[test]
fn a_device_publishes_to_its_own_topic_only() {
    let b = SecuredBroker::start();
    b.session(INGEST, "ingest", TELEMETRY_FILTER);

    b.publish(D1, D1_TOPIC, "d1-own").unwrap();
    // Everything else d1 tries is dropped by the broker. MQTT 3.1.1 gives
    // the publisher no sign of it; MQTT 5 says "not authorized".
    b.publish(D1, D2_TOPIC, "d1-as-d2").unwrap();
    for topic in [
        "fleet/c2/s1/d1/telemetry",
        "fleet/c1/s2/d1/telemetry",
        "fleet/c1/s1/d1/telemetry/extra",
        "fleet/c1/s1/d1/status",
        "cs/alerts/c1",
    ] {
        b.publish(D1, topic, "d1-elsewhere").unwrap();
    }
    let v5 = ClientOptions {
        credentials: Some(D1),
        protocol: Some("mqttv5"),
        ..ClientOptions::default()
    };
    let stderr = b
        .broker
        .try_publish_with(&v5, D2_TOPIC, b"d1-as-d2-v5", 1)
        .unwrap();
    assert!(
        stderr.to_ascii_lowercase().contains("not authorized"),
        "MQTT 5 publisher told: {stderr:?}"
    );
    // A marker last: the ingest session gets messages in broker order.
    b.publish(D2, D2_TOPIC, "d2-own").unwrap();

    let got = b.receive(INGEST, "ingest", TELEMETRY_FILTER, 2, ARRIVE);
    assert_eq!(got, [msg(D1_TOPIC, "d1-own"), msg(D2_TOPIC, "d2-own")]);
    // mosquitto_sub may leave before acknowledging the last message, which
    // then comes again (at least once); nothing new may come.
    let more = b.receive(INGEST, "ingest", TELEMETRY_FILTER, 3, SETTLE);
    assert!(more.iter().all(|m| got.contains(m)), "{more:?}");
    let log = fs::read_to_string(b.broker.data_dir().join("mosquitto.log")).unwrap();
    assert!(
        log.contains("Denied PUBLISH from") && log.contains("'fleet/c1/s1/d2/telemetry'"),
        "{}",
        b.broker.log_tail()
    );
}

#[test]
fn wrong_or_missing_credentials_are_refused_at_connect() {
    let b = SecuredBroker::start();
    b.session(INGEST, "ingest", TELEMETRY_FILTER);

    let refused = [
        b.publish((D1.0, "wrong"), D1_TOPIC, "wrong-password"),
        b.publish(
            ("c1/s1/d9", "d9-secret"),
            "fleet/c1/s1/d9/telemetry",
            "unknown-user",
        ),
        b.publish((INGEST.0, D1.1), D1_TOPIC, "someone-elses-password"),
        b.broker
            .try_publish_with(&ClientOptions::default(), D1_TOPIC, b"anonymous", 1),
    ];
    for result in refused {
        let err = result.expect_err("the broker must refuse the connection");
        assert!(err.contains("not authorised"), "{err}");
    }
    b.publish(D1, D1_TOPIC, "d1-own").unwrap();
    let got = b.receive(INGEST, "ingest", TELEMETRY_FILTER, 2, SETTLE);
    assert_eq!(got, [msg(D1_TOPIC, "d1-own")]);
}

#[test]
fn devices_read_nothing_and_ingest_reads_through_a_shared_subscription() {
    let b = SecuredBroker::start();
    let shared = format!("$share/fleetpulse/{TELEMETRY_FILTER}");
    b.session(INGEST, "ingest-1", &shared);
    // The broker accepts the subscription but never delivers to it.
    b.session(D2, "d2-snoop", TELEMETRY_FILTER);
    b.session(D2, "d2-snoop-own", D2_TOPIC);

    b.publish(D1, D1_TOPIC, "d1-own").unwrap();
    b.publish(D2, D2_TOPIC, "d2-own").unwrap();

    let got = b.receive(INGEST, "ingest-1", &shared, 2, ARRIVE);
    assert_eq!(got, [msg(D1_TOPIC, "d1-own"), msg(D2_TOPIC, "d2-own")]);
    assert_eq!(b.receive(D2, "d2-snoop", TELEMETRY_FILTER, 1, SETTLE), []);
    assert_eq!(b.receive(D2, "d2-snoop-own", D2_TOPIC, 1, SETTLE), []);
}

/// History older than the correction horizon is taken in from the backfill
/// topics: only the operator's backfill user may publish there, not a
/// device (not even on its own ids), nor the service.
#[test]
fn only_the_backfill_user_publishes_history() {
    let b = SecuredBroker::start();
    b.session(INGEST, "ingest", BACKFILL_FILTER);
    let d1_backfill = "fleet/c1/s1/d1/backfill";
    b.publish(D1, d1_backfill, "history-forged-by-d1").unwrap();
    b.publish(INGEST, d1_backfill, "history-forged-by-ingest")
        .unwrap();
    b.publish(BACKFILL, D1_TOPIC, "telemetry-forged-by-backfill")
        .unwrap();
    // Last: the session gets messages in broker order.
    b.publish(BACKFILL, d1_backfill, "history").unwrap();
    let got = b.receive(INGEST, "ingest", BACKFILL_FILTER, 1, ARRIVE);
    assert_eq!(got, [msg(d1_backfill, "history")]);
}

/// `fleetpulse backfill` as the service's own user, which the access
/// control lets subscribe but not publish there: over MQTT 3.1.1 the broker
/// acknowledged every batch and dropped it, and the command said "sent".
/// It stops at the first batch, saying the user may not publish there and
/// how to send as the backfill user; sent as that user, every batch
/// reaches the service's session.
#[test]
fn a_history_sent_as_a_user_that_may_not_publish_it_stops_at_the_first_batch() {
    let (b, tool) = Tool::with_session(BACKFILL_FILTER);
    let history = tool.dir.path().join("history.csv");
    fs::write(
        &history,
        "customer,site,device,time,state,operating_hours\n\
         c1,s1,d1,2026-03-01T10:05:00Z,running,10\n\
         c1,s1,d1,2026-03-01T11:05:00Z,running,11\n\
         c1,s1,d1,2026-03-01T12:05:00Z,running,12\n",
    )
    .unwrap();
    let refused = tool.run("backfill", &history, None);
    assert!(
        refused
            .contains("does not let user `fleetpulse-ingest` publish to `fleet/c1/s1/d1/backfill`")
            && refused.contains("only `fleetpulse-backfill`"),
        "{refused}"
    );
    tool.run("backfill", &history, Some(BACKFILL));
    // The three hourly batches, none dropped, none twice.
    let got = b.receive_bytes(INGEST, "ingest", BACKFILL_FILTER, 4);
    assert_eq!(got.len(), 3, "{got:?}");
}

/// `fleetpulse replay` sends dead letters to the devices' telemetry
/// topics, where the access control lets only devices publish: as the
/// service's user it stopped nowhere and every letter was dropped. It
/// stops at the first letter, naming the replay user; as that user each
/// letter reaches the service's session, byte for byte.
#[test]
fn dead_letters_are_sent_again_only_as_the_replay_user() {
    let (b, tool) = Tool::with_session(TELEMETRY_FILTER);
    let letters = tool.dir.path().join("dead-letters.jsonl");
    let letter = |at: u64, hex: &str| {
        format!(
            r#"{{"received_ms":{at},"reason":"too_late","topic":"{D1_TOPIC}","detail":"","payload_bytes":{},"payload_hex":"{hex}"}}"#,
            hex.len() / 2
        )
    };
    fs::write(
        &letters,
        letter(1, "0a01") + "\n" + &letter(2, "0a02") + "\n",
    )
    .unwrap();
    let refused = tool.run("replay", &letters, None);
    assert!(
        refused.contains(
            "does not let user `fleetpulse-ingest` publish to `fleet/c1/s1/d1/telemetry`"
        ) && refused.contains("`fleetpulse-replay`"),
        "{refused}"
    );
    tool.run("replay", &letters, Some(REPLAY));
    let got = b.receive_bytes(INGEST, "ingest", TELEMETRY_FILTER, 3);
    let payloads: Vec<&[u8]> = got.iter().map(|m| &*m.payload).collect();
    assert_eq!(payloads, [&[0x0a, 0x01], &[0x0a, 0x02]]);
}

/// An operator's command line (`backfill`, `replay`) on the broker of a
/// service whose user is `fleetpulse-ingest`.
struct Tool {
    dir: TempDir,
    config: PathBuf,
}

impl Tool {
    /// A secured broker on which the service's session (`ingest`) reads
    /// `filter`, and the tool for it.
    fn with_session(filter: &str) -> (SecuredBroker, Self) {
        let b = SecuredBroker::start();
        b.session(INGEST, "ingest", filter);
        let tool = Self::new(&b);
        (b, tool)
    }

    fn new(b: &SecuredBroker) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("fleetpulse.toml");
        fs::write(
            &config,
            format!(
                "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"ingest\"\n\
                 username = \"{}\"\npassword_env = \"INGEST_PASSWORD\"\n",
                b.broker.port(),
                INGEST.0
            ),
        )
        .unwrap();
        Self { dir, config }
    }

    /// `fleetpulse {command} {file}`, as `user` if given. Its error when
    /// it failed (as the service's user), else its output.
    fn run(&self, command: &str, file: &Path, user: Option<(&str, &str)>) -> String {
        let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"));
        cli.arg(command)
            .arg(file)
            .arg("-c")
            .arg(&self.config)
            .env("INGEST_PASSWORD", INGEST.1);
        if let Some((name, password)) = user {
            cli.args(["--username", name, "--password-env", "TOOL_PASSWORD"])
                .env("TOOL_PASSWORD", password);
        }
        let out = cli.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.success(), user.is_some(), "{stderr}");
        stderr
    }
}

#[test]
fn ingest_publishes_alerts_that_only_the_cs_team_reads() {
    let b = SecuredBroker::start();
    b.session(CS_TEAM, "cs", "cs/alerts/#");
    b.session(INGEST, "ingest-alerts", "cs/alerts/#");

    b.publish(D1, "cs/alerts/c1", "forged-by-d1").unwrap();
    b.publish(CS_TEAM, "cs/alerts/c1", "forged-by-cs").unwrap();
    b.publish(INGEST, D1_TOPIC, "telemetry-forged-by-ingest")
        .unwrap();
    b.publish(INGEST, "cs/alerts/c1", "at-risk").unwrap();

    let got = b.receive(CS_TEAM, "cs", "cs/alerts/#", 2, ARRIVE);
    assert_eq!(got, [msg("cs/alerts/c1", "at-risk")]);
    assert_eq!(
        b.receive(INGEST, "ingest-alerts", "cs/alerts/#", 1, SETTLE),
        [],
        "ingest does not read alerts"
    );
}

#[test]
fn credentials_work_over_tls() {
    let b = SecuredBroker::start();
    b.session(INGEST, "ingest", TELEMETRY_FILTER);
    let tls = |who| ClientOptions {
        credentials: Some(who),
        port: Some(b.tls_port),
        cafile: Some(b.ca.as_path()),
        ..ClientOptions::default()
    };
    b.broker
        .try_publish_with(&tls(D1), D1_TOPIC, b"over-tls", 1)
        .unwrap();
    let err = b
        .broker
        .try_publish_with(&tls((D1.0, "wrong")), D1_TOPIC, b"bad-password-over-tls", 1)
        .unwrap_err();
    assert!(err.contains("not authorised"), "{err}");
    // Plain MQTT to the TLS port does not get through.
    let plain_to_tls = ClientOptions {
        credentials: Some(D1),
        port: Some(b.tls_port),
        ..ClientOptions::default()
    };
    assert!(
        b.broker
            .try_publish_with(&plain_to_tls, D1_TOPIC, b"plain-to-tls", 1)
            .is_err()
    );

    let tls_ingest = tls(INGEST);
    let got = b
        .broker
        .receive_with(&tls_ingest, "ingest", TELEMETRY_FILTER, 2, SETTLE);
    assert_eq!(
        got,
        [Message {
            topic: D1_TOPIC.into(),
            payload: b"over-tls".to_vec()
        }]
    );
}
