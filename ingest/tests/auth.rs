//! Who may see what, against the real `fleetpulse run` binary (embedded
//! broker, simulated fleet, users created with `fleetpulse users`):
//!
//! - anonymous requests get 401 on every API route, and the dashboard sends
//!   them to the login page;
//! - a CSM's token sees exactly their customers (`csm` in customers.toml)
//!   in `/api/customers`, `/api/alerts` and `/api/portfolio`, and gets 404
//!   for another CSM's customer; a viewer gets the portfolio only;
//! - a wrong `Host` is refused; 300 slow-header connections are closed
//!   within `header_read_timeout` while normal requests are served, and 80
//!   slow bodies hold no request slot (408 after the same timeout);
//! - a token added while running works after SIGHUP;
//! - a customer given to another CSM in customers.toml changes hands at
//!   the reload, without a restart;
//! - revenue retention names a customer whose contract events conflict to
//!   an admin only, and judges "managed" on the user's own customers;
//! - the login flow and the CSM's scoped dashboard in headless Chromium
//!   (screenshots in `target/artifacts/`);
//! - operator ids are pseudonyms in alert evidence and in the store, with
//!   the clear id shown to admins only;
//! - passwords, tokens, the pseudonym key and the hashes never reach the log;
//! - a session ends with the password it was opened with (changed, or the
//!   user removed and added again); a failed sign-in's name is logged only
//!   when it is a user's, escaped;
//!
//! and, on their own: TLS with the project's test certificates
//! (deploy/mosquitto/make-test-certs.sh), and a public listen address
//! without authentication refusing to start.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleetpulse_sim::{Fleet, FleetSpec};
use reqwest::StatusCode;
use serde_json::Value;
use support::cdp::{Browser, artifacts};
use support::servers::{free_port, make_test_certs};
use support::service::Service;
use support::users::{add_user, users};

/// The operator pseudonym key the service runs with.
const OPERATOR_KEY: &str = "operator-key-for-the-auth-test-0123";

/// The slow-header limit the service runs with.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET {base}/api/me` with `headers`.
async fn get_me(
    client: &reqwest::Client,
    base: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client.get(format!("{base}/api/me"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// A client of the service, with or without a token.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    fn with(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }
}

fn ids(list: &Value, array: &str, field: &str) -> BTreeSet<String> {
    list[array]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[field].as_str().unwrap().to_string())
        .collect()
}

struct Running {
    dir: tempfile::TempDir,
    _broker: fleetpulse::broker::EmbeddedBroker,
    service: Service,
    users_file: PathBuf,
    anonymous: Client,
    admin: Client,
    alice: Client,
    viewer: Client,
    alice_password: String,
    secrets: Vec<String>,
    /// alice's customers, as assigned in customers.toml.
    alices: BTreeSet<String>,
    /// bob's customers: all the others.
    bobs: BTreeSet<String>,
    fleet: Fleet,
}

/// Users, customers with CSM assignments, the service on a free port, and
/// the fleet's telemetry taken in and settled.
async fn running_service() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::generate(&FleetSpec {
        customers: 6,
        devices: 30,
        days: 35,
        ..FleetSpec::default()
    });
    // alice manages every other customer and the one whose champion
    // leaves; bob the rest.
    let mut customers = fleetpulse::sim::customers_file(&fleet);
    let (mut alices, mut bobs) = (BTreeSet::new(), BTreeSet::new());
    for (i, c) in customers.customers.iter_mut().enumerate() {
        let champion = fleet.customers()[i].champion.is_some();
        let csm = if i % 2 == 0 || champion {
            "alice"
        } else {
            "bob"
        };
        if csm == "alice" {
            alices.insert(c.id.clone());
        } else {
            bobs.insert(c.id.clone());
        }
        c.csm = Some(csm.into());
    }
    std::fs::write(dir.path().join("customers.toml"), customers.to_toml()).unwrap();

    let users_file = dir.path().join("users.toml");
    let file = users_file.to_str().unwrap();
    let admin_password = "admin-Pa55word-for-the-test";
    let alice_password = "alice-Pa55word-for-the-test".to_string();
    add_user(file, "root", "admin", Some(admin_password));
    add_user(file, "alice", "csm", Some(&alice_password));
    users(&["add", "bob", "--role", "csm", "--file", file], None);
    add_user(file, "vera", "viewer", None);
    let admin_token = users(&["token", "root", "--label", "ops", "--file", file], None);
    let alice_token = users(&["token", "alice", "--file", file], None);
    let viewer_token = users(
        &["token", "vera", "--label", "prometheus", "--file", file],
        None,
    );
    assert!(admin_token.starts_with("fp_"), "{admin_token}");
    let listed = users(&["list", "--file", file], None);
    assert!(listed.contains("alice csm"), "{listed}");
    assert!(!listed.contains("argon2"), "{listed}");

    let broker = fleetpulse::broker::start(0).unwrap();
    let port = free_port();
    let config = dir.path().join("fleetpulse.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nhost = \"{host}\"\nport = {mqtt}\nclient_id = \"fleetpulse-auth-test\"\n\n\
             [engine]\nworkers = 1\nidle_after = \"1s\"\n\n\
             [customers]\nfile = \"customers.toml\"\n\n\
             [http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\nusers_file = \"users.toml\"\n\
             header_read_timeout = \"{timeout}s\"\nmax_connections = 1024\n\n\
             [alerts]\nmqtt = false\n\n\
             [[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n",
            host = broker.addr.ip(),
            mqtt = broker.addr.port(),
            timeout = HEADER_TIMEOUT.as_secs(),
        ),
    )
    .unwrap();
    let mut service = Service::new(&config, dir.path().join("service.log"))
        .env("FLEETPULSE_OPERATOR_KEY", OPERATOR_KEY);
    service.start_and_wait("http listening");
    // Published before the subscription, telemetry would have no receiver.
    service.wait_for_log("subscribed", 1);

    let http = reqwest::Client::new();
    let anonymous = Client {
        http,
        base: format!("http://127.0.0.1:{port}"),
        token: None,
    };
    let admin = anonymous.with(&admin_token);
    let published =
        support::fleets::publish_all(broker.addr, &fleet, "fleetpulse-auth-test-sim").await;
    // Everything taken in and the view settled.
    support::poll::until_settled(
        async || admin.ok("/api/status").await,
        |status| status["messages_accepted"].as_u64() == Some(published.messages),
        || service.log_tail(),
    )
    .await;
    Running {
        alice: anonymous.with(&alice_token),
        viewer: anonymous.with(&viewer_token),
        secrets: vec![
            admin_password.to_string(),
            alice_password.clone(),
            admin_token.clone(),
            alice_token,
            viewer_token,
            OPERATOR_KEY.to_string(),
        ],
        anonymous,
        admin,
        alice_password,
        users_file,
        alices,
        bobs,
        fleet,
        service,
        _broker: broker,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_scope_every_route_and_the_port_defends_itself() {
    let mut s = running_service().await;
    anonymous_requests_are_refused(&s).await;
    roles_see_their_customers_only(&s).await;
    operators_are_pseudonyms_and_only_admins_see_who(&s).await;
    a_wrong_host_is_refused(&s).await;
    slow_header_connections_are_closed_while_others_are_served(&s).await;
    slow_bodies_hold_no_request_slot(&s).await;
    a_token_added_while_running_works_after_sighup(&mut s).await;
    a_customer_given_to_another_csm_moves_at_the_reload(&s).await;
    retention_keeps_to_each_roles_scope(&s).await;
    login_flow_and_a_scoped_dashboard_in_chromium(&s);
    sessions_end_with_their_password_and_failed_names_forge_nothing(&mut s).await;
    failed_sign_ins_at_once_hold_little_memory(&s).await;
    no_secret_in_the_log(&s);
    s.service.stop();
}

/// Every route of the OpenAPI document but the health checks.
fn api_paths() -> Vec<String> {
    let doc: Value = serde_json::from_str(fleetpulse::http::api::openapi_json()).unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|p| !matches!(p.as_str(), "/healthz" | "/readyz"))
        .map(|p| p.replace("{id}", "some-customer"))
        .collect()
}

async fn anonymous_requests_are_refused(s: &Running) {
    let paths = api_paths();
    assert!(paths.len() >= 8, "{paths:?}");
    for path in &paths {
        let (status, body) = s.anonymous.get(path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "GET {path}: {body}");
        assert_eq!(body["status"], 401, "{path}: {body}");
    }
    // A made-up token, a forged session, a route that does not exist.
    let forged = s.anonymous.with("fp_00000000_forged");
    assert_eq!(
        forged.get("/api/customers").await.0,
        StatusCode::UNAUTHORIZED
    );
    let cookie = s
        .anonymous
        .http
        .get(format!("{}/api/customers", s.anonymous.base))
        .header("cookie", "fp_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.anonymous.get("/no/such/route").await.0,
        StatusCode::UNAUTHORIZED,
        "no route enumeration either"
    );
    // Identity headers count only from a configured proxy (none here).
    let proxied = s
        .anonymous
        .http
        .get(format!("{}/api/customers", s.anonymous.base))
        .header("x-forwarded-user", "root")
        .header("x-forwarded-groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::UNAUTHORIZED);
    // The dashboard sends anonymous users to the login page; health checks
    // and the login page itself stay open.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = no_redirects
        .get(format!("{}/", s.anonymous.base))
        .send()
        .await
        .unwrap();
    assert!(page.status().is_redirection(), "{}", page.status());
    assert_eq!(page.headers()["location"], "/login");
    for open in ["/healthz", "/readyz", "/login"] {
        let (status, _) = s.anonymous.get(open).await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }
}

async fn roles_see_their_customers_only(s: &Running) {
    let every: BTreeSet<String> = s
        .fleet
        .customers()
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    let all = s.admin.ok("/api/customers").await;
    assert_eq!(ids(&all, "customers", "customer"), every);
    let all_alerts = s.admin.ok("/api/alerts?status=all").await;
    let all_alert_ids = ids(&all_alerts, "alerts", "customer");
    assert!(!all_alert_ids.is_empty(), "the simulator raises alerts");

    // alice: exactly her customers, everywhere.
    let mine = s.alice.ok("/api/customers").await;
    assert_eq!(ids(&mine, "customers", "customer"), s.alices);
    let ranks: Vec<u64> = mine["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, (1..=s.alices.len() as u64).collect::<Vec<_>>());
    let alerts = s.alice.ok("/api/alerts?status=all").await;
    let expected: BTreeSet<String> = all_alert_ids.intersection(&s.alices).cloned().collect();
    assert_eq!(ids(&alerts, "alerts", "customer"), expected);
    let theirs = all_alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| s.alices.contains(a["customer"].as_str().unwrap()))
        .count();
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), theirs);
    for id in &every {
        let (status, body) = s.alice.get(&format!("/api/customers/{id}")).await;
        if s.alices.contains(id) {
            assert_eq!(status, StatusCode::OK, "{id}: {body}");
        } else {
            // Another CSM's customer answers like one that does not exist.
            assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
            let missing = s.alice.get("/api/customers/no-such-customer").await;
            assert_eq!(missing.0, StatusCode::NOT_FOUND);
            let shape = |b: &Value| b["error"].as_str().unwrap().replace(id.as_str(), "X");
            assert_eq!(
                shape(&body),
                shape(&missing.1).replace("no-such-customer", "X")
            );
        }
        let (status, body) = s
            .alice
            .get(&format!("/api/alerts?customer={id}&status=all"))
            .await;
        if s.alices.contains(id) {
            assert_eq!(status, StatusCode::OK, "{id}: {body}");
        } else {
            // Filtering on another CSM's customer: as on one that does
            // not exist, not an empty list that says it exists.
            assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
            let missing = s.alice.get("/api/alerts?customer=no-such-customer").await;
            let shape = |b: &Value| b["error"].as_str().unwrap().replace(id.as_str(), "X");
            assert_eq!(
                shape(&body),
                shape(&missing.1).replace("no-such-customer", "X")
            );
        }
    }
    // The portfolio over her customers: the engine's figures recomputed.
    let full = s.admin.ok("/api/portfolio?days=7").await;
    let scoped = s.alice.ok("/api/portfolio?days=7").await;
    assert_eq!(full["customers"], every.len());
    assert_eq!(scoped["customers"], s.alices.len());
    let arr = |doc: &Value| doc["latest"]["arr_total"].as_f64().unwrap();
    let expected_arr: f64 = all["customers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| s.alices.contains(c["customer"].as_str().unwrap()))
        .map(|c| c["health"]["arr"].as_f64().unwrap())
        .sum();
    assert!(
        (arr(&scoped) - expected_arr).abs() < 1e-6,
        "{} vs {expected_arr}",
        arr(&scoped)
    );
    assert!(arr(&scoped) < arr(&full));
    assert_eq!(
        scoped["latest"]["customers"].as_u64(),
        Some(s.alices.len() as u64)
    );
    let open_mine = s.alice.ok("/api/alerts").await["alerts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(scoped["open_alerts"], open_mine);
    assert_eq!(scoped["history"].as_array().unwrap().len(), 7);
    // Each date with the revision of its figures over everyone.
    let revisions = |doc: &Value| -> Vec<(u64, u64)> {
        (doc["history"].as_array().unwrap().iter())
            .map(|d| {
                (
                    d["window_start"].as_u64().unwrap(),
                    d["revision"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(revisions(&scoped), revisions(&full));
    let me = s.alice.ok("/api/me").await;
    assert_eq!(me["role"], "csm");
    assert_eq!(me["customers"], s.alices.len());

    // The viewer: the portfolio (over everyone) and the counters only.
    let portfolio = s.viewer.ok("/api/portfolio?days=7").await;
    assert_eq!(portfolio["customers"], every.len());
    assert_eq!(portfolio["latest"], full["latest"]);
    assert_eq!(
        s.viewer.get("/api/customers").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(s.viewer.get("/api/alerts").await.0, StatusCode::FORBIDDEN);
    let first = every.iter().next().unwrap();
    assert_eq!(
        s.viewer.get(&format!("/api/customers/{first}")).await.0,
        StatusCode::NOT_FOUND
    );
    s.viewer.ok("/api/status").await;
    // A machine token reads /metrics, which names no customer.
    let metrics = s.viewer.ok("/metrics").await;
    let text = metrics.as_str().unwrap();
    assert!(text.contains("fleetpulse_messages_received_total"));
    for id in &every {
        assert!(!text.contains(id.as_str()), "{id} in /metrics");
    }
}

async fn operators_are_pseudonyms_and_only_admins_see_who(s: &Running) {
    let champion = s
        .fleet
        .customers()
        .iter()
        .find_map(|c| Some((c.id.to_string(), c.champion.clone()?)))
        .expect("the simulated fleet has a champion-leaves customer");
    let clear: Vec<&str> = s
        .fleet
        .customers()
        .iter()
        .flat_map(|c| c.operators.iter().map(String::as_str))
        .collect();
    let admin = s
        .admin
        .ok("/api/alerts?status=all&rule=champion_lost")
        .await;
    let alerts = admin["alerts"].as_array().unwrap();
    let lost = alerts
        .iter()
        .find(|a| a["customer"] == *champion.0)
        .unwrap_or_else(|| panic!("no champion_lost alert for {}: {admin}", champion.0));
    let evidence = lost["evidence"].as_str().unwrap();
    // The admin sees the pseudonym and, beside it, who it is.
    assert!(evidence.contains(" op-"), "{evidence}");
    assert!(
        evidence.contains(&format!("({})", champion.1)),
        "{evidence}"
    );
    // The customer's CSM sees the pseudonym only, in the list and on the
    // customer's page.
    for path in [
        "/api/alerts?status=all&rule=champion_lost".to_string(),
        format!("/api/customers/{}", champion.0),
    ] {
        let text = s.alice.ok(&path).await.to_string();
        assert!(text.contains(" op-"), "{path}: {text}");
        for id in &clear {
            assert!(!text.contains(id), "{path}: {id} shown to a CSM");
        }
    }
    // The store holds pseudonyms only.
    let store = fleetpulse::sinks::SqliteStore::open(s.dir.path().join("kpi.sqlite")).unwrap();
    let stored = store.alerts(false).unwrap();
    assert!(stored.iter().any(|a| a.evidence.contains(" op-")));
    for alert in &stored {
        for id in &clear {
            assert!(!alert.evidence.contains(id), "{id} stored in clear");
        }
    }
}

async fn a_wrong_host_is_refused(s: &Running) {
    for host in [
        "attacker.example",
        "attacker.example:80",
        "127.0.0.1.nip.io",
    ] {
        let response = s
            .admin
            .http
            .get(format!("{}/api/customers", s.admin.base))
            .bearer_auth(s.admin.token.as_deref().unwrap())
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{host}");
    }
    let response = s
        .admin
        .http
        .get(format!("{}/api/status", s.admin.base))
        .bearer_auth(s.admin.token.as_deref().unwrap())
        .header("host", "localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn slow_header_connections_are_closed_while_others_are_served(s: &Running) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 300;
    let addr = s.admin.base.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // A request line and one header, then nothing.
        stream
            .write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        slow.push(tokio::spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(_) => {}
                }
            }
        }));
    }
    // Normal requests are served while the slow ones hang.
    let mut served = 0;
    while started.elapsed() < HEADER_TIMEOUT {
        let asked = Instant::now();
        s.admin.ok("/api/status").await;
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "slow: {:?}",
            asked.elapsed()
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 5, "{served}");
    let mut latest = started;
    for task in slow {
        let closed = tokio::time::timeout(HEADER_TIMEOUT * 4, task)
            .await
            .expect("a slow-header connection still open")
            .unwrap();
        latest = latest.max(closed);
    }
    let took = latest - started;
    assert!(
        took <= HEADER_TIMEOUT + Duration::from_secs(2),
        "the last of {SLOW} slow connections closed after {took:?}"
    );
    s.admin.ok("/api/status").await;
}

/// 80 clients, more than the 64 request slots, each sending a login form
/// a byte at a time, need no credentials: while they trickle, the probes
/// and an admin's request are answered at once, and each slow one gets 408
/// once `header_read_timeout` has passed (it held a slot until
/// `request_timeout` before, and every other request waited, `/healthz`
/// too).
async fn slow_bodies_hold_no_request_slot(s: &Running) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 80;
    let addr = s.admin.base.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(
                b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                  Content-Type: application/x-www-form-urlencoded\r\n\
                  Content-Length: 16000\r\n\r\nuser=",
            )
            .await
            .unwrap();
        slow.push(tokio::spawn(async move {
            let mut answer = Vec::new();
            for _ in 0..60 {
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
                let mut buf = [0u8; 512];
                let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf));
                match read.await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
                if !answer.is_empty() {
                    break;
                }
            }
            (
                Instant::now(),
                String::from_utf8_lossy(&answer).into_owned(),
            )
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in ["/healthz", "/api/status"] {
        let asked = Instant::now();
        let (status, _) = s.admin.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{path}: {:?}",
            asked.elapsed()
        );
    }
    for task in slow {
        let (at, answer) = tokio::time::timeout(HEADER_TIMEOUT * 4, task)
            .await
            .expect("a slow body still open")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            at - started <= HEADER_TIMEOUT + Duration::from_secs(2),
            "{:?}",
            at - started
        );
    }
}

async fn a_token_added_while_running_works_after_sighup(s: &mut Running) {
    let file = s.users_file.to_str().unwrap();
    let token = users(&["token", "bob", "--file", file], None);
    s.secrets.push(token.clone());
    let bob = s.anonymous.with(&token);
    assert_eq!(bob.get("/api/customers").await.0, StatusCode::UNAUTHORIZED);
    let reloads = s.service.log().matches("users file reloaded").count();
    let pid = s.service.pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    s.service.wait_for_log("users file reloaded", reloads + 1);
    let theirs = bob.ok("/api/customers").await;
    assert_eq!(ids(&theirs, "customers", "customer"), s.bobs);
}

/// Writes customers.toml and sends SIGHUP; returns once the service took
/// the file in and reread the users file (the same signal rereads both).
fn reload_customers(s: &Running, text: &str) {
    let log = s.service.log();
    let customers = log.matches("customers file changed").count();
    let users = log.matches("users file reloaded").count();
    std::fs::write(s.dir.path().join("customers.toml"), text).unwrap();
    let pid = s.service.pid().unwrap().to_string();
    let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(hup.success());
    s.service
        .wait_for_log("customers file changed", customers + 1);
    s.service.wait_for_log("users file reloaded", users + 1);
}

/// A customer of alice's given to bob in customers.toml (no restart, no
/// archive): at the reload alice loses it (404, as any customer not hers)
/// and bob gains it; given back, it is alice's again.
async fn a_customer_given_to_another_csm_moves_at_the_reload(s: &Running) {
    let file = s.dir.path().join("customers.toml");
    let original = std::fs::read_to_string(&file).unwrap();
    let moved = s.alices.first().unwrap().clone();
    let bob = s.anonymous.with(&users(
        &["token", "bob", "--file", s.users_file.to_str().unwrap()],
        None,
    ));
    let path = format!("/api/customers/{moved}");
    assert_eq!(s.alice.get(&path).await.0, StatusCode::OK);
    let mut customers: fleetpulse::customers::CustomersFile = toml::from_str(&original).unwrap();
    for c in &mut customers.customers {
        if c.id == moved {
            c.csm = Some("bob".into());
        }
    }
    reload_customers(s, &customers.to_toml());
    let (status, body) = s.alice.get(&path).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "alice still reads {moved}: {}",
        body["customer"]
    );
    let alices = ids(&s.alice.ok("/api/customers").await, "customers", "customer");
    let mut left = s.alices.clone();
    left.remove(&moved);
    assert_eq!(alices, left);
    let bobs = ids(&bob.ok("/api/customers").await, "customers", "customer");
    assert!(bobs.contains(&moved), "{bobs:?}");
    assert_eq!(bob.get(&path).await.0, StatusCode::OK);

    reload_customers(s, &original);
    assert_eq!(s.alice.get(&path).await.0, StatusCode::OK);
    assert_eq!(bob.get(&path).await.0, StatusCode::NOT_FOUND);
}

/// Revenue retention keeps to each role's scope. A customer of bob's whose
/// recorded contraction no longer adds up with the customers file (its ARR
/// lowered under it, taken in at the reload) is named to an admin, counted
/// without its name to a viewer, and not shown to alice; a touchpoint of
/// bob's customer makes the admin's accounts managed by touchpoints, not
/// alice's, whose customers have none.
async fn retention_keeps_to_each_roles_scope(s: &Running) {
    let file = s.dir.path().join("customers.toml");
    let original = std::fs::read_to_string(&file).unwrap();
    let mut customers: fleetpulse::customers::CustomersFile = toml::from_str(&original).unwrap();
    let theirs = s.bobs.first().unwrap().clone();
    let entry = (customers.customers.iter_mut())
        .find(|c| c.id == theirs)
        .unwrap();
    let start: jiff::civil::Date = entry.contract.start.parse().unwrap();
    let date = start.checked_add(jiff::Span::new().days(30)).unwrap();
    let arr = entry.contract.arr;
    let post = async |path: &str, body: Value| {
        let response = (s.admin.http.post(format!("{}{path}", s.admin.base)))
            .bearer_auth(s.admin.token.as_deref().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{path}: {}",
            response.text().await.unwrap()
        );
    };
    let contraction = serde_json::json!({
        "customer": theirs, "kind": "contraction", "date": date.to_string(),
        "arr_change": -(arr * 0.9),
    });
    post("/api/contract-events", contraction).await;
    let touchpoint = serde_json::json!({
        "kind": "training", "date": date.to_string(), "csm": "bob",
    });
    post(&format!("/api/customers/{theirs}/touchpoints"), touchpoint).await;
    // Its ARR lowered under the contraction: the two no longer add up.
    entry.contract.arr = arr * 0.5;
    reload_customers(s, &customers.to_toml());

    let admins = s.admin.ok("/api/retention").await;
    let conflicts = admins["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert!(
        conflicts[0].as_str().unwrap().contains(&theirs),
        "{conflicts:?}"
    );
    assert_eq!(admins["managed"], "touchpoints");
    let viewers = s.viewer.ok("/api/retention").await;
    let conflicts = viewers["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let names =
        (s.fleet.customers().iter()).filter(|c| conflicts[0].as_str().unwrap().contains(&*c.id));
    assert_eq!(names.count(), 0, "a viewer is told a name: {conflicts:?}");
    let alices = s.alice.ok("/api/retention").await;
    assert_eq!(alices["conflicts"], serde_json::json!([]));
    assert_eq!(
        alices["managed"], "high-touch",
        "bob's touchpoint told alice"
    );

    reload_customers(s, &original);
    let admins = s.admin.ok("/api/retention").await;
    assert_eq!(
        admins["conflicts"],
        serde_json::json!([]),
        "the file as it was"
    );
}

fn login_flow_and_a_scoped_dashboard_in_chromium(s: &Running) {
    let mut browser = Browser::start();
    let patience = Duration::from_secs(30);
    browser.navigate(&format!("{}/", s.anonymous.base));
    browser.wait_for(
        "location.pathname === '/login' && document.getElementById('user')",
        patience,
    );
    assert!(browser.screenshot(&artifacts().join("auth-login.png")) > 5_000);

    // A wrong password: the form again, with a message.
    browser.eval(
        "document.getElementById('user').value = 'alice';\
         document.getElementById('password').value = 'not-her-password';\
         document.getElementById('login').submit(); true",
    );
    browser.wait_for("document.querySelector('.error')", patience);
    assert_eq!(browser.eval("location.pathname"), "/login");

    browser.eval(&format!(
        "document.getElementById('user').value = 'alice';\
         document.getElementById('password').value = {};\
         document.getElementById('login').submit(); true",
        serde_json::to_string(&s.alice_password).unwrap()
    ));
    browser.wait_for(
        "location.pathname === '/' && document.body.dataset.rendered === 'home' \
         && document.querySelectorAll('tr.customer-row').length > 0",
        patience,
    );
    // The session cookie is not readable from the page (HttpOnly).
    assert_eq!(
        browser.eval("document.cookie.includes('fp_session')"),
        false
    );
    let shown: BTreeSet<String> = serde_json::from_value(
        browser
            .eval("[...document.querySelectorAll('tr.customer-row')].map(r => r.dataset.customer)"),
    )
    .unwrap();
    assert_eq!(
        shown, s.alices,
        "the dashboard shows alice's customers only"
    );
    assert_eq!(
        browser.eval("document.getElementById('user-name').textContent"),
        "alice"
    );
    assert!(browser.screenshot(&artifacts().join("auth-csm-dashboard.png")) > 20_000);

    // Another CSM's customer page: not found.
    let other = s.bobs.first().unwrap();
    browser.eval(&format!("location.hash = '#/customer/{other}'; true"));
    browser.wait_for(
        "document.getElementById('app').textContent.includes('Unknown customer')",
        patience,
    );

    // Sign out: back to the login page, and the old session is gone.
    browser.eval("document.getElementById('sign-out').click(); true");
    browser.wait_for("location.pathname === '/login'", patience);
    browser.navigate(&format!("{}/", s.anonymous.base));
    browser.wait_for("location.pathname === '/login'", patience);
}

/// A session lasts only while the password it was opened with does: a new
/// password (`users add --replace`), or the user removed and added again
/// under the same name with another role, ends it at the reload. A failed
/// sign-in logs the name only when it is a user's, escaped: a password
/// typed in the name field stays out of the log, and a name holding a line
/// break forges no audit line.
async fn sessions_end_with_their_password_and_failed_names_forge_nothing(s: &mut Running) {
    let base = s.anonymous.base.clone();
    let file = s.users_file.to_str().unwrap().to_string();
    let pid = s.service.pid().unwrap().to_string();
    let reload = |s: &Running| {
        let reloads = s.service.log().matches("users file reloaded").count();
        let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(hup.success());
        s.service.wait_for_log("users file reloaded", reloads + 1);
    };
    let me = async |cookie: &str| {
        let response = (s.anonymous.http.get(format!("{base}/api/me")))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap_or_default())
    };
    let first = support::users::sign_in(&base, "alice", &s.alice_password).await;
    assert_eq!(me(&first).await.0, StatusCode::OK);
    let second = "alice-second-Pa55word-for-the-test";
    let args = [
        "add",
        "alice",
        "--role",
        "csm",
        "--replace",
        "--password-stdin",
    ];
    users(&[&args[..], &["--file", &file]].concat(), Some(second));
    s.secrets.push(second.to_string());
    reload(s);
    assert_eq!(
        me(&first).await.0,
        StatusCode::UNAUTHORIZED,
        "the old password's session"
    );
    let signed_in = support::users::sign_in(&base, "alice", second).await;
    let (status, who) = me(&signed_in).await;
    assert_eq!(
        (status, who["role"].as_str()),
        (StatusCode::OK, Some("csm"))
    );
    // Removed, then added again as an admin with the very same password.
    users(&["remove", "alice", "--file", &file], None);
    add_user(&file, "alice", "admin", Some(second));
    reload(s);
    let (status, who) = me(&signed_in).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an earlier alice's session: {who}"
    );

    // Taken out of the file, then the same entry put back (a backup
    // restored): the session it had stays ended.
    // One session asked while the user is out, one left idle.
    let kept = support::users::sign_in(&base, "alice", second).await;
    let idle = support::users::sign_in(&base, "alice", second).await;
    assert_eq!(me(&kept).await.0, StatusCode::OK);
    assert_eq!(me(&idle).await.0, StatusCode::OK);
    let backup = std::fs::read_to_string(&s.users_file).unwrap();
    users(&["remove", "alice", "--file", &file], None);
    reload(s);
    assert_eq!(me(&kept).await.0, StatusCode::UNAUTHORIZED, "removed");
    std::fs::write(&s.users_file, &backup).unwrap();
    reload(s);
    for session in [&kept, &idle] {
        let (status, who) = me(session).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "revived by the restored entry: {who}"
        );
    }
    assert_eq!(
        me(&support::users::sign_in(&base, "alice", second).await)
            .await
            .0,
        StatusCode::OK
    );

    // Failed sign-ins: a password typed as the name; a forged audit line.
    let typed = "alice-typed-her-Pa55word-here";
    s.secrets.push(typed.to_string());
    let failed_before = s.service.log().matches("(not a user)").count();
    let forged = "zz\n2026-12-06T03:50:00.000000Z  INFO audit: login event=\"login\" \
                  outcome=\"ok\" user=forged-admin role=admin";
    for name in [typed, forged] {
        let login = support::users::log_in(&base, name, "wrong").await;
        assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
    }
    s.service.wait_for_log("(not a user)", failed_before + 2);
    let log = s.service.log();
    let lines: Vec<&str> = (log.lines())
        .filter(|l| l.contains("forged-admin"))
        .collect();
    assert!(lines.is_empty(), "a forged name reached the log: {lines:?}");
}

/// 320 failed sign-ins at once, by a client with no account (it picks its
/// own CSRF value): each costs an argon2 check of 19 MiB. Run hundreds at
/// a time, their memory stayed with the threads that ran them: 6 GB after
/// these, for good. A few run at once, a short queue waits, the rest are
/// told to try again (503); the process stays small and signs in after.
async fn failed_sign_ins_at_once_hold_little_memory(s: &Running) {
    let base = s.anonymous.base.clone();
    let pid = s.service.pid().unwrap();
    let rss_mb = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb = (status.lines())
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap();
        kb / 1024
    };
    let before = rss_mb();
    let client = (reqwest::Client::builder())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let attempts = (0..320).map(|i| {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let password = format!("wrong-{i}");
            let form = [("user", "alice"), ("password", &password), ("csrf", "x")];
            let response = (client.post(format!("{base}/login")))
                .header("cookie", "fp_login_csrf=x")
                .form(&form)
                .send()
                .await
                .unwrap();
            response.status()
        })
    });
    let mut answers = std::collections::BTreeMap::new();
    for attempt in attempts.collect::<Vec<_>>() {
        *answers.entry(attempt.await.unwrap().as_u16()).or_insert(0) += 1;
    }
    let after = rss_mb();
    assert!(
        answers.keys().all(|code| [401, 503].contains(code)),
        "{answers:?}"
    );
    assert!(
        after < before + 200,
        "{after} MB resident after 320 failed sign-ins at once ({before} MB before): {answers:?}"
    );
    let signed_in = support::users::sign_in(&base, "root", "admin-Pa55word-for-the-test").await;
    assert!(signed_in.starts_with("fp_session="));
    println!("320 failed sign-ins at once: {answers:?}; resident {before} MB -> {after} MB");
}

fn no_secret_in_the_log(s: &Running) {
    let log = s.service.log();
    for secret in &s.secrets {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
        // Nor the secret half of a token (`fp_<id>_<secret>`) on its own;
        // the secret is URL-safe base64 and may itself hold a `_`.
        if let Some((_, tail)) = secret
            .strip_prefix("fp_")
            .and_then(|rest| rest.split_once('_'))
        {
            assert!(!log.contains(tail), "a token's secret is in the log");
        }
    }
    assert!(!log.contains("$argon2"), "a hash is in the log");
    let users = std::fs::read_to_string(&s.users_file).unwrap();
    for line in users.lines().filter(|l| l.contains("$argon2")) {
        let hash = line.split('"').nth(1).unwrap();
        assert!(!log.contains(hash));
    }
    // The audit trail: logins (good and bad) and denied requests.
    assert!(
        log.contains("audit") && log.contains("login"),
        "no audit lines"
    );
    assert!(
        log.contains("outcome=\"failed\"") || log.contains("outcome=failed"),
        "{}",
        s.service.log_tail()
    );
    assert!(log.contains("request denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_projects_test_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_test_certs(&certs);
    let users_file = dir.path().join("users.toml");
    let file = users_file.to_str().unwrap();
    add_user(file, "root", "admin", None);
    let token = users(&["token", "root", "--file", file], None);

    let mut config = fleetpulse::http::HttpConfig::on("127.0.0.1:0".parse().unwrap());
    config.users_file = Some(users_file);
    config.header_read_timeout = Duration::from_secs(2);
    config.tls = Some(fleetpulse::http::config::TlsConfig {
        cert_file: certs.join("server.crt"),
        key_file: certs.join("server.key"),
    });
    config.check(Path::new("<test>")).unwrap();
    let hub = fleetpulse::http::Hub::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, server) = fleetpulse::http::start(&config, hub, stop.clone())
        .await
        .unwrap();

    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.crt")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let status = client
        .get(format!("{base}/api/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    let anonymous = client
        .get(format!("{base}/api/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Cookies are Secure under TLS.
    let login = client.get(format!("{base}/login")).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("; Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    // A client that does not trust the CA, and plain HTTP, get nothing.
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );
    let plain = reqwest::get(format!("http://127.0.0.1:{}/healthz", addr.port())).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // A TLS client that never finishes its handshake is dropped.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let dropped =
        tokio::time::timeout(config.header_read_timeout + Duration::from_secs(5), async {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 16];
            loop {
                match idle.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    assert!(dropped.is_ok(), "a silent TLS client held its connection");
    stop.cancel();
    server.await.unwrap().unwrap();
}

#[test]
fn a_public_listen_address_without_authentication_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleetpulse.toml");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n\n[http]\nenabled = true\n\
                 listen = \"0.0.0.0:{}\"\n{extra}\n[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n",
                free_port(),
                free_port()
            ),
        )
        .unwrap();
    };
    write("");
    let run = |subcommand: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
            .args(subcommand)
            .arg(&config)
            .output()
            .unwrap()
    };
    for command in [&["run", "--config"][..], &["check-config"][..]] {
        let output = run(command);
        assert!(!output.status.success(), "{command:?} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("http.listen"), "{stderr}");
        assert!(stderr.contains("allow_anonymous"), "{stderr}");
    }
    // Opting out explicitly passes the check.
    write("allow_anonymous = true");
    let output = run(&["check-config"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An in-process server on a loopback port with `config`'s users and
/// proxy; stops on drop of the token.
async fn in_process(
    config: fleetpulse::http::HttpConfig,
) -> (
    String,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    config.check(Path::new("<test>")).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, server) =
        fleetpulse::http::start(&config, fleetpulse::http::Hub::new(), stop.clone())
            .await
            .unwrap();
    (format!("http://{addr}"), stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_user_and_forms_need_their_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let users_file = dir.path().join("users.toml");
    let file = users_file.to_str().unwrap();
    let password = "a-Pa55word-for-the-csrf-test";
    add_user(file, "root", "admin", Some(password));

    let mut config = fleetpulse::http::HttpConfig::on("127.0.0.1:0".parse().unwrap());
    config.users_file = Some(users_file);
    // oauth2-proxy's headers are the defaults.
    let proxy = r#"trusted = ["127.0.0.1"]
admin_groups = ["cs-admins"]
csm_groups = ["csm"]
viewer_groups = ["staff"]"#;
    config.proxy = Some(toml::from_str(proxy).unwrap());
    let (base, stop, server) = in_process(config).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The proxy (this loopback peer is trusted) names the user and groups.
    let carol = [
        ("x-forwarded-user", "carol"),
        ("x-forwarded-groups", "staff,csm"),
    ];
    let me: Value = get_me(&client, &base, &carol).await.json().await.unwrap();
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str()),
        (Some("carol"), Some("csm"))
    );
    assert_eq!(me["via"], "proxy");
    let dave = [
        ("x-forwarded-user", "dave"),
        ("x-forwarded-groups", "contractors"),
    ];
    let no_role = get_me(&client, &base, &dave).await;
    assert_eq!(no_role.status(), StatusCode::UNAUTHORIZED);

    // The login form: without its CSRF cookie, or from another origin, no.
    let page = client.get(format!("{base}/login")).send().await.unwrap();
    let set = page.headers()["set-cookie"].to_str().unwrap().to_string();
    let csrf_cookie = set.split(';').next().unwrap().to_string();
    let csrf = csrf_cookie.split_once('=').unwrap().1.to_string();
    let html = page.text().await.unwrap();
    assert!(html.contains(&csrf), "the form carries the token");
    let form = [
        ("user", "root"),
        ("password", password),
        ("csrf", csrf.as_str()),
    ];
    // POST /login with `headers` and `form`.
    let post_login = |headers: &[(&str, &str)], form: &[(&str, &str)]| {
        let mut request = client.post(format!("{base}/login")).form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let with_cookie = [("cookie", csrf_cookie.as_str())];
    let forged = post_login(&[], &form).await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN, "no cookie");
    let from_elsewhere = [with_cookie[0], ("origin", "https://attacker.example")];
    let cross_site = post_login(&from_elsewhere, &form).await.unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN, "another origin");
    let wrong_password = [
        ("user", "root"),
        ("password", "wrong password"),
        ("csrf", csrf.as_str()),
    ];
    let wrong = post_login(&with_cookie, &wrong_password).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let login = post_login(&with_cookie, &form).await.unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let session = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("fp_session="))
        .unwrap()
        .to_string();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "plain HTTP: not Secure");
    let session = session.split(';').next().unwrap().to_string();
    let me: Value = get_me(&client, &base, &[("cookie", &session)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (me["user"].as_str(), me["via"].as_str()),
        (Some("root"), Some("session"))
    );
    let token = me["csrf_token"].as_str().unwrap().to_string();

    // Recording a touchpoint with the session needs its token too (with
    // it, the request gets past the check: no such customer here).
    let touchpoint = |csrf: Option<&str>| {
        let mut request = client
            .post(format!("{base}/api/customers/acme/touchpoints"))
            .header("cookie", &session)
            .json(&serde_json::json!({"kind": "training", "date": "2026-03-01"}));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    assert_eq!(
        touchpoint(None).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        touchpoint(Some("forged")).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        touchpoint(Some(&token)).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // Logout needs the session's own token.
    let logout = |csrf: String| {
        client
            .post(format!("{base}/logout"))
            .header("cookie", &session)
            .form(&[("csrf", csrf)])
            .send()
    };
    assert_eq!(
        logout("forged".into()).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(logout(token).await.unwrap().status(), StatusCode::SEE_OTHER);
    let after = get_me(&client, &base, &[("cookie", &session)]).await;
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "the session is gone"
    );

    // A body over max_body_bytes is refused before anyone reads it.
    let big = client
        .post(format!("{base}/login"))
        .body(vec![b'a'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);

    stop.cancel();
    server.await.unwrap().unwrap();
}
