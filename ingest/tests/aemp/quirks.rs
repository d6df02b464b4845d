//! Acceptance 1: against the simulated server in each quirk mode, every
//! per-device and per-customer KPI of the polled machines equals the
//! ground truth.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetpulse::aemp_sim::{AempServer, Quirks, SimAuth};
use fleetpulse::source::aemp::AempConfig;
use fleetpulse::source::aemp::config::Format;

use super::common::*;
use super::support::in_process;

/// Serves a small fleet with `quirks`, polls it with a source that
/// `configure` adjusts, and compares the store with the ground truth.
async fn polled_kpis_equal_ground_truth(
    name: &'static str,
    quirks: Quirks,
    configure: impl FnOnce(&mut AempConfig, &AempServer),
) -> AempServerStats {
    let setup = Setup::new(6);
    let served = setup.serve_all(quirks).await;
    let (server, points) = (&served.server, served.points);

    let mut config = setup.service_config(name);
    let mut source = source("oem", &server.url(), &setup.spec);
    configure(&mut source, server);
    config.aemp = vec![source];
    let mut service = in_process::spawn(config, "<aemp test>");
    let polled = source_metrics(&service.metrics, "oem").await;
    wait_caught_up(&service.metrics, &polled, points, 0).await;
    let status = polled.status();
    stop(&mut service).await;
    println!("{name}: {status:?}");
    assert!(status.errors.is_empty(), "{name}: {:?}", status.errors);
    assert_eq!(status.messages, points);
    assert_eq!(service.metrics.rejected_total(), 0);

    setup.assert_customers_equal(&format!("{name} customers"), &served.truth);
    assert_table_equal(
        &format!("{name} devices"),
        &device_table(&sqlite_path(setup.dir.path())),
        &device_truth_table(&served.devices),
    );
    AempServerStats::of(server)
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

impl AempServerStats {
    fn of(server: &AempServer) -> Self {
        Self {
            throttled: server.stats.throttled.load(Relaxed),
            throttled_again: server.stats.throttled_again.load(Relaxed),
            tokens: server.stats.tokens.load(Relaxed),
            requests: server.stats.requests.load(Relaxed),
            unauthorized: server.stats.unauthorized.load(Relaxed),
        }
    }
}

/// The source as [`source`] sets it up, reading JSON.
fn json(source: &mut AempConfig, _: &AempServer) {
    source.format = Format::Json;
}

/// The source as [`source`] sets it up.
fn as_is(_: &mut AempConfig, _: &AempServer) {}

/// One test per quirk mode whose check is the comparison alone: the test,
/// its name in the messages, the quirks set (the others default), and how
/// the source is set up for them.
macro_rules! quirk_tests {
    ($($(#[$doc:meta])* $test:ident: $name:literal, { $($quirk:ident: $value:expr),* }, $configure:expr;)*) => {$(
        $(#[$doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let quirks = Quirks { $($quirk: $value,)* ..Quirks::default() };
            polled_kpis_equal_ground_truth($name, quirks, $configure).await;
        }
    )*};
}

quirk_tests! {
    json_with_liter: "json", { liter: true }, json;
    json_wrapped_in_an_array: "wrapped", { wrap_array: true }, json;
    /// Lower-case `links`, with small pages so every answer is paged.
    lower_case_links_and_small_pages: "links", { lowercase_links: true, page_size: 7 }, as_is;
    /// Equipment ids with `#`: the poller must address them by PIN.
    ids_that_need_pin_addressing: "pin", { pin_ids: true }, as_is;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml() {
    let seen = polled_kpis_equal_ground_truth("xml", Quirks::default(), as_is).await;
    assert!(seen.requests > 0);
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
    let seen = polled_kpis_equal_ground_truth("rate-limit", quirks, as_is).await;
    assert!(seen.throttled > 0, "{seen:?}");
    // Each 429 was waited out as its Retry-After said: never two in a row.
    assert_eq!(seen.throttled_again, 0, "{seen:?}");
}

/// Basic auth, the password from the environment of the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth() {
    let auth = SimAuth::Basic {
        username: "fleet".into(),
        password: "basic-secret-1234".into(),
    };
    let key = "auth = { type = \"basic\", username = \"fleet\", password_env = \"OEM_PASSWORD\" }";
    binary_kpis_equal_ground_truth(
        "basic",
        auth,
        |_| key.to_string(),
        ("OEM_PASSWORD", "basic-secret-1234"),
    )
    .await;
}

/// OAuth2 client credentials, the secret from the environment of the real
/// binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_client_credentials() {
    let auth = SimAuth::Oauth2 {
        client_id: "fleetpulse".into(),
        client_secret: "oauth-secret-5678".into(),
        token_life: Duration::from_secs(31),
    };
    let seen = binary_kpis_equal_ground_truth(
        "oauth2",
        auth,
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
}

/// Like [`polled_kpis_equal_ground_truth`], through the `fleetpulse run`
/// binary with a config file and a secret in its environment, against a
/// server that requires `auth`; no request may be refused as unauthorised.
async fn binary_kpis_equal_ground_truth(
    name: &'static str,
    auth: SimAuth,
    auth_toml: impl FnOnce(&AempServer) -> String,
    (var, secret): (&str, &str),
) -> AempServerStats {
    let setup = Setup::new(6);
    let quirks = Quirks {
        auth,
        ..Quirks::default()
    };
    let served = setup.serve_all(quirks).await;
    let (server, points) = (&served.server, served.points);
    let http_port = super::support::servers::free_port();
    let source = format!(
        "{}{}\n",
        source_toml("oem", &server.url(), &setup.spec),
        auth_toml(server)
    );
    let config = setup.write_config_file(name, http_port, &source);
    let mut service = super::support::service::Service::new(&config, setup.dir.path().join("log"))
        .env(var, secret);
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
    setup.assert_customers_equal(&format!("{name} customers"), &served.truth);
    let seen = AempServerStats::of(server);
    assert_eq!(seen.unauthorized, 0, "{seen:?}");
    seen
}
