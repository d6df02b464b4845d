//! Acceptance 1: against the simulated server in each quirk mode, every
//! per-device and per-customer KPI of the polled machines equals the
//! ground truth.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetpulse::aemp_sim::{self, AempFleet, AempServer, Quirks, Selection, SimAuth};
use fleetpulse::source::aemp::AempConfig;
use fleetpulse::source::aemp::config::Format;
use fleetpulse_sim::Fleet;

use super::common::*;
use super::support::in_process;

/// Serves a small fleet with `quirks`, polls it with a source that
/// `configure` adjusts, and compares the store with the ground truth.
async fn polled_kpis_equal_ground_truth(
    name: &'static str,
    quirks: Quirks,
    configure: impl FnOnce(&mut AempConfig, &AempServer),
) -> AempServerStats {
    let broker = fleetpulse::broker::start(0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(6);
    let fleet = Fleet::generate(&spec);
    let served = AempFleet::new(&fleet, Selection::default(), quirks.pin_ids);
    let truth = served.ground_truth();
    let devices = served.device_truth();
    let points = served.points() as u64;
    let customers = dir.path().join("customers.toml");
    write_customers(&fleet, served.equipment(None), &customers);
    let server = aemp_sim::start(SocketAddr::from(([127, 0, 0, 1], 0)), served, quirks)
        .await
        .unwrap();

    let mut config = service_config(dir.path(), broker.addr, &customers, &spec, name);
    let mut source = source("oem", &server.url(), &spec);
    configure(&mut source, &server);
    config.aemp = vec![source];
    let service = in_process::spawn(config, "<aemp test>");
    let polled = source_metrics(&service.metrics, "oem").await;
    wait_caught_up(&service.metrics, &polled, points, 0).await;
    let status = polled.status();
    service.shutdown.cancel();
    service.task.await.unwrap().unwrap();
    println!("{name}: {status:?}");
    assert!(status.errors.is_empty(), "{name}: {:?}", status.errors);
    assert_eq!(status.messages, points);
    assert_eq!(service.metrics.rejected_total(), 0);

    let sqlite = sqlite_path(dir.path());
    assert_equal(
        &format!("{name} customers"),
        &customer_table(&sqlite),
        &truth_table(&truth.rows()),
    );
    assert_equal(
        &format!("{name} devices"),
        &device_table(&sqlite),
        &device_truth_table(&devices),
    );
    AempServerStats {
        throttled: server.stats.throttled.load(Relaxed),
        throttled_again: server.stats.throttled_again.load(Relaxed),
        tokens: server.stats.tokens.load(Relaxed),
        requests: server.stats.requests.load(Relaxed),
        unauthorized: server.stats.unauthorized.load(Relaxed),
    }
}

/// What the server saw.
#[derive(Debug)]
struct AempServerStats {
    throttled: u64,
    throttled_again: u64,
    tokens: u64,
    requests: u64,
    unauthorized: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml() {
    let seen = polled_kpis_equal_ground_truth("xml", Quirks::default(), |_, _| {}).await;
    assert!(seen.requests > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_with_liter() {
    let quirks = Quirks {
        liter: true,
        ..Quirks::default()
    };
    polled_kpis_equal_ground_truth("json", quirks, |s, _| s.format = Format::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_wrapped_in_an_array() {
    let quirks = Quirks {
        wrap_array: true,
        ..Quirks::default()
    };
    polled_kpis_equal_ground_truth("wrapped", quirks, |s, _| s.format = Format::Json).await;
}

/// Lower-case `links`, with small pages so every answer is paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_case_links_and_small_pages() {
    let quirks = Quirks {
        lowercase_links: true,
        page_size: 7,
        ..Quirks::default()
    };
    polled_kpis_equal_ground_truth("links", quirks, |_, _| {}).await;
}

/// Equipment ids with `#`: the poller must address them by PIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_need_pin_addressing() {
    let quirks = Quirks {
        pin_ids: true,
        ..Quirks::default()
    };
    polled_kpis_equal_ground_truth("pin", quirks, |_, _| {}).await;
}

/// One request per URL per 2 s: polls every 200 ms get 429 and wait out
/// `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_of_one_request_per_url() {
    let quirks = Quirks {
        rate_limit: Some(Duration::from_secs(2)),
        page_size: 500,
        ..Quirks::default()
    };
    let seen = polled_kpis_equal_ground_truth("rate-limit", quirks, |_, _| {}).await;
    assert!(seen.throttled > 0, "{seen:?}");
    // Each 429 was waited out as its Retry-After said: never two in a row.
    assert_eq!(seen.throttled_again, 0, "{seen:?}");
}

/// Basic auth, the password from the environment of the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth() {
    let quirks = Quirks {
        auth: SimAuth::Basic {
            username: "fleet".into(),
            password: "basic-secret-1234".into(),
        },
        ..Quirks::default()
    };
    let auth = "auth = { type = \"basic\", username = \"fleet\", password_env = \"OEM_PASSWORD\" }";
    let seen = binary_kpis_equal_ground_truth(
        "basic",
        quirks,
        |_| auth.to_string(),
        ("OEM_PASSWORD", "basic-secret-1234"),
    )
    .await;
    assert_eq!(seen.unauthorized, 0, "{seen:?}");
}

/// OAuth2 client credentials, the secret from the environment of the real
/// binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_client_credentials() {
    let quirks = Quirks {
        auth: SimAuth::Oauth2 {
            client_id: "fleetpulse".into(),
            client_secret: "oauth-secret-5678".into(),
            token_life: Duration::from_secs(31),
        },
        ..Quirks::default()
    };
    let seen = binary_kpis_equal_ground_truth(
        "oauth2",
        quirks,
        |server| {
            format!(
                "auth = {{ type = \"oauth2\", token_url = \"{}\", client_id = \"fleetpulse\", client_secret_env = \"OEM_SECRET\" }}",
                server.token_url()
            )
        },
        ("OEM_SECRET", "oauth-secret-5678"),
    )
    .await;
    assert!(seen.tokens >= 1, "{seen:?}");
    assert_eq!(seen.unauthorized, 0, "{seen:?}");
}

/// Like [`polled_kpis_equal_ground_truth`], through the `fleetpulse run`
/// binary with a config file and a secret in its environment.
async fn binary_kpis_equal_ground_truth(
    name: &'static str,
    quirks: Quirks,
    auth: impl FnOnce(&AempServer) -> String,
    (var, secret): (&str, &str),
) -> AempServerStats {
    let broker = fleetpulse::broker::start(0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(6);
    let fleet = Fleet::generate(&spec);
    let served = AempFleet::new(&fleet, Selection::default(), false);
    let truth = served.ground_truth();
    let points = served.points() as u64;
    let customers = dir.path().join("customers.toml");
    write_customers(&fleet, served.equipment(None), &customers);
    let server = aemp_sim::start(SocketAddr::from(([127, 0, 0, 1], 0)), served, quirks)
        .await
        .unwrap();
    let http_port = super::support::servers::free_port();
    let source = format!(
        "{}{}\n",
        source_toml("oem", &server.url(), &spec),
        auth(&server)
    );
    let config = write_config_file(dir.path(), broker.addr, &spec, name, http_port, &source);
    let mut service =
        super::support::service::Service::new(&config, dir.path().join("log")).env(var, secret);
    service.start_and_wait("AEMP source polling");
    let status = wait_status_caught_up(http_port, points).await;
    let metrics = super::support::service::metrics(http_port);
    for family in [
        "fleetpulse_aemp_polls_total",
        "fleetpulse_aemp_readings_total",
    ] {
        assert!(
            metrics.contains(&format!("{family}{{source=\"oem\"}}")),
            "{metrics}"
        );
    }
    service.stop();
    let log = service.log();
    assert!(!log.contains(secret), "the secret is in the log");
    assert!(
        status["aemp"][0]["errors"].as_object().unwrap().is_empty(),
        "{status}"
    );
    assert_equal(
        &format!("{name} customers"),
        &customer_table(&sqlite_path(dir.path())),
        &truth_table(&truth.rows()),
    );
    AempServerStats {
        throttled: server.stats.throttled.load(Relaxed),
        throttled_again: server.stats.throttled_again.load(Relaxed),
        tokens: server.stats.tokens.load(Relaxed),
        requests: server.stats.requests.load(Relaxed),
        unauthorized: server.stats.unauthorized.load(Relaxed),
    }
}
