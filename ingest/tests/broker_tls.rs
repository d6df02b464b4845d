//! The service reads telemetry from mosquitto over TLS, verifying the
//! broker with the CA from `mqtt.tls_ca_file`.

mod support;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use fleetpulse::config::ServiceConfig;
use fleetpulse_sim::{Fleet, FleetSpec};
use support::fleets::publish_options;
use support::in_process::{self, InProcess};
use support::servers::{Mosquitto, free_port, make_test_certs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_subscribes_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_test_certs(&certs);
    let tls_port = free_port();
    let mosquitto = Mosquitto::start_with_config(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {c}/ca.crt\ncertfile {c}/server.crt\nkeyfile {c}/server.key\n",
        c = certs.display()
    ));

    let fleet = Fleet::generate(&FleetSpec {
        customers: 2,
        devices: 4,
        days: 2,
        ..FleetSpec::default()
    });
    let mut config = ServiceConfig::default();
    config.mqtt.host = "127.0.0.1".into();
    config.mqtt.port = tls_port;
    config.mqtt.client_id = "fleetpulse-tls".into();
    config.mqtt.tls_ca_file = Some(certs.join("ca.crt"));
    config.alerts.mqtt = false;
    config.sinks = vec![fleetpulse::sinks::SinkConfig::Sqlite(
        fleetpulse::sinks::sqlite::SqliteConfig {
            path: dir.path().join("kpi.sqlite"),
        },
    )];
    let InProcess {
        metrics,
        shutdown,
        task: service,
    } = in_process::spawn(config, "<tls>");
    let started = Instant::now();
    while !metrics.subscribed.load(Relaxed) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no TLS subscription"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Devices publish on the plain listener; the service reads over TLS.
    let options = publish_options(&mosquitto, "tls-test-sim");
    let report = fleetpulse_sim::publish(options, fleet.encoded_messages(), |_| {})
        .await
        .unwrap();
    while metrics.handled() < report.messages {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "messages did not arrive over TLS"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metrics.messages_accepted.load(Relaxed), report.messages);
    shutdown.cancel();
    service.await.unwrap().unwrap();
}

#[test]
fn a_missing_ca_file_is_named() {
    let config = fleetpulse::config::MqttConfig {
        tls_ca_file: Some("/nonexistent/ca.crt".into()),
        ..Default::default()
    };
    let err = fleetpulse::source::mqtt::options(&config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mqtt.tls_ca_file") && err.contains("/nonexistent/ca.crt"),
        "{err}"
    );
}
