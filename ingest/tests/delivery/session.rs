//! Two `fleetpulse run`, each with its own WAL directory, but one
//! `mqtt.client_id` (a copied service file): the WAL's lock cannot see it,
//! and the broker hands the session to one and then the other, each taking
//! a part of every window. Both must say so (one error line, `/readyz` red
//! with the reason, the gauge), and the one left must settle once the
//! other stops; a broker restart must not pass for a takeover. The alerts
//! publishers (client id `{client_id}-alerts`) fight too, and say it once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::fleets::{fleet, spawn_publisher, write_customers};
use crate::support::servers::{Mosquitto, NO_LOSS, free_port, http_get};
use crate::support::service::{
    Service, metric, metrics, wait_until as wait, write_service_config_at,
};
use crate::support::truth::{assert_table_equal, sqlite_customer_table, truth_table};

const CLIENT_ID: &str = "fleetpulse-twice";
const CONTESTED: &str = "fleetpulse_mqtt_session_contested";
const TAKEOVERS: &str = "fleetpulse_mqtt_takeovers_total";
const SAID: &str = "another MQTT client uses client_id `fleetpulse-twice`";

/// A service in `dir` (its own WAL and SQLite store there), client id
/// [`CLIENT_ID`]; returns the service file and its HTTP port.
fn service_in(dir: &Path, mosquitto: &Mosquitto) -> (PathBuf, u16) {
    let http_port = free_port();
    let rest = format!(
        "persistent_session = true\n\n[wal]\ndir = \"wal\"\n\n[http]\nenabled = true\n\
         listen = \"127.0.0.1:{http_port}\"\n\n[alerts]\nmqtt = true\n\n\
         [[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n"
    );
    let config = write_service_config_at(&dir.join("fleetpulse.toml"), mosquitto, CLIENT_ID, &rest);
    (config, http_port)
}

/// `GET /readyz`: status and body; `None` before the port listens.
fn readyz(http_port: u16) -> Option<(u16, String)> {
    let response = http_get(&format!("http://127.0.0.1:{http_port}/readyz")).ok()?;
    Some((response.status, response.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_with_one_client_id_say_so_and_the_one_left_settles() {
    let mut mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let fleet = fleet(3, 15, 3, 41);
    let mut services = Vec::new();
    for dir in &dirs {
        write_customers(dir.path(), &fleet);
        let (config, port) = service_in(dir.path(), &mosquitto);
        let mut service = Service::new(config, dir.path().join("service.log"));
        service.start();
        services.push((service, port));
        // The first holds the session before the second comes.
        let (service, port) = services.last().unwrap();
        wait("ready", Duration::from_secs(30), service, || {
            services.len() > 1 || readyz(*port).is_some_and(|(s, _)| s == 200)
        })
        .await;
    }

    // Both see the fight, and say it once.
    for (service, port) in &services {
        wait("contested", Duration::from_secs(20), service, || {
            metric(&metrics(*port), CONTESTED) == 1
        })
        .await;
        let (status, body) = readyz(*port).unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("another MQTT client uses this service's mqtt.client_id"),
            "{body}"
        );
        assert!(metric(&metrics(*port), TAKEOVERS) >= 3);
    }
    // Backoff, not a reconnect every 100 ms: few takeovers in 10 s more.
    let before = metric(&metrics(services[0].1), TAKEOVERS);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = metric(&metrics(services[0].1), TAKEOVERS) - before;
    assert!(during <= 8, "{during} takeovers in 10 s of a fight");
    for (service, _) in &services {
        assert_eq!(
            service.log().matches(SAID).count(),
            1,
            "{}",
            service.log_tail()
        );
    }

    // The second stops: the first settles, ready again, and takes in the
    // whole fleet by itself.
    let (mut second, _) = services.pop().unwrap();
    second.stop();
    let (first, port) = &services[0];
    wait("ready again", Duration::from_secs(45), first, || {
        readyz(*port).is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert_eq!(metric(&metrics(*port), CONTESTED), 0);
    assert!(
        first.log().contains("no longer taken over"),
        "{}",
        first.log_tail()
    );

    // A broker restart is no takeover.
    let takeovers = metric(&metrics(*port), TAKEOVERS);
    mosquitto.restart();
    wait(
        "ready after the broker restart",
        Duration::from_secs(30),
        first,
        || readyz(*port).is_some_and(|(s, _)| s == 200),
    )
    .await;
    assert!(metric(&metrics(*port), TAKEOVERS) <= takeovers + 1);
    assert_eq!(metric(&metrics(*port), CONTESTED), 0);

    let (sent, publisher) = spawn_publisher(&mosquitto, &fleet, "twice-fleet", 2000.0);
    assert_eq!(publisher.await.unwrap().unwrap().messages, sent);
    wait(
        "every message accepted",
        Duration::from_secs(60),
        first,
        || metric(&metrics(*port), "fleetpulse_messages_accepted_total") >= sent,
    )
    .await;
    let (mut first, _) = services.pop().unwrap();
    first.stop();
    let truth = truth_table(&fleet.ground_truth().rows());
    assert_table_equal(
        "the service left",
        &sqlite_customer_table(&dirs[0].path().join("kpi.sqlite")),
        &truth,
    );
}
