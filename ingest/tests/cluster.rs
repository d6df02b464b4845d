//! Scale-out: two `fleetpulse run` processes (the real binary) form one
//! timely cluster and split the telemetry through an MQTT shared
//! subscription on a real mosquitto 2; their KPIs go to a real InfluxDB 1.x.
//!
//! 1. The per-customer-day KPIs in the store equal the simulator's ground
//!    truth, and equal what a single process writes for the same fleet.
//! 2. One member is killed with SIGKILL mid-run (three times): the other
//!    exits by itself, the cluster is started again as a unit, recovers from
//!    the members' WALs, and the store still equals the ground truth.
//! 3. One member receives no traffic at all: the windows still close while
//!    the fleet publishes, not only when the service stops.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetpulse_sim::{Fleet, PublishOptions};
use support::fleets::{Publishing, fleet, publish_options, spawn_publisher, write_customers};
use support::servers::{InfluxDb1, Mosquitto, NO_LOSS, free_ports, servers_and_dir};
use support::service::{Service, influx_sections, write_service_config_at};
use support::truth::{Days, equal, store_days, truth_days};

const DAY_MS: u64 = 86_400_000;

/// The members of one deployment, started and stopped together.
struct Deployment {
    members: Vec<Service>,
}

impl Deployment {
    /// `configs[i]` is member i's file; with more than one, they form a
    /// cluster on free loopback ports.
    fn new(dir: &Path, configs: &[PathBuf]) -> Self {
        let hosts = free_ports(configs.len())
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = configs
            .iter()
            .enumerate()
            .map(|(i, config)| {
                let member = Service::new(config, dir.join(format!("member-{i}.log")));
                if configs.len() > 1 {
                    member.args(["--process", &i.to_string(), "--hosts", &hosts])
                } else {
                    member
                }
            })
            .collect();
        Self { members }
    }

    /// Starts every member (they wait for each other), then waits until all
    /// are connected to the broker; if one is not, says what every member
    /// logged (one that never joins holds up the others).
    fn start(&mut self) {
        for member in &mut self.members {
            member.start();
        }
        let started = Instant::now();
        for i in 0..self.members.len() {
            let connected = |m: &Service| m.log().matches("connected to broker").count();
            while connected(&self.members[i]) < self.members[i].starts() {
                if started.elapsed() > support::poll::PATIENCE {
                    let running = self.members[i].is_running();
                    panic!(
                        "member {i} not connected to the broker (running: {running})\n{}",
                        self.logs()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGINT to all: stop intake, drain the engine, flush the sinks.
    fn stop(&mut self) {
        for member in &self.members {
            member.interrupt();
        }
        for member in &mut self.members {
            let status = member
                .wait_exit(Duration::from_secs(60))
                .unwrap_or_else(|| panic!("member did not stop:\n{}", member.log_tail()));
            assert!(
                status.success(),
                "graceful stop failed: {status}\n{}",
                member.log_tail()
            );
        }
    }

    /// Stops gracefully and restarts until the store equals the ground
    /// truth (the last windows close on the drain).
    fn settle(&mut self, influx: &InfluxDb1, db: &str, truth: &Days) -> Result<(), String> {
        let started = Instant::now();
        loop {
            std::thread::sleep(Duration::from_secs(3));
            self.stop();
            let result = equal(&store_days(influx, db), truth);
            if result.is_ok() || started.elapsed() > Duration::from_secs(120) {
                return result;
            }
            self.start();
        }
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {}\n{}", m.log_path().display(), m.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

struct ConfigOptions<'a> {
    name: &'a str,
    /// With the write-ahead log (acknowledge only once durable).
    wal: bool,
    workers: usize,
    client_id: &'a str,
    shared_group: Option<&'a str>,
    topic: Option<&'a str>,
    database: &'a str,
}

impl<'a> ConfigOptions<'a> {
    /// A member of a shared subscription ("fleetpulse") with one worker and
    /// the WAL, writing to `database`.
    fn member(name: &'a str, client_id: &'a str, database: &'a str) -> Self {
        Self {
            name,
            wal: true,
            workers: 1,
            client_id,
            shared_group: Some("fleetpulse"),
            topic: None,
            database,
        }
    }
}

fn write_config(
    dir: &Path,
    mosquitto: &Mosquitto,
    influx: &InfluxDb1,
    options: &ConfigOptions<'_>,
) -> PathBuf {
    let shared = options
        .shared_group
        .map(|g| format!("shared_group = \"{g}\"\n"))
        .unwrap_or_default();
    let topic = options
        .topic
        .map(|t| format!("topic = \"{t}\"\n"))
        .unwrap_or_default();
    let rest = format!(
        r#"persistent_session = true
{shared}{topic}
[engine]
workers = {workers}
idle_after = "2s"

{wal}
{influx}"#,
        influx = influx_sections(influx, options.database),
        workers = options.workers,
        wal = if options.wal {
            format!(
                "[wal]\ndir = \"wal-{}\"\nsegment_bytes = 262144\n",
                options.client_id
            )
        } else {
            String::new()
        },
    );
    write_service_config_at(&dir.join(options.name), mosquitto, options.client_id, &rest)
}

/// Starts a cluster of two members from one file: each gets its own client
/// id and WAL directory from its process index.
fn start_cluster(
    dir: &Path,
    mosquitto: &Mosquitto,
    influx: &InfluxDb1,
    client_id: &str,
    database: &str,
) -> Deployment {
    let shared = write_config(
        dir,
        mosquitto,
        influx,
        &ConfigOptions::member("cluster.toml", client_id, database),
    );
    let mut cluster = Deployment::new(dir, &[shared.clone(), shared]);
    cluster.start();
    cluster
}

/// The fleet of the cluster tests, its `customers.toml` written to `dir`.
fn fleet_in(dir: &Path, seed: u64) -> Fleet {
    let fleet = fleet(6, 36, 8, seed);
    write_customers(dir, &fleet);
    fleet
}

/// Publishes the whole fleet at `rate` in the background.
fn publisher(mosquitto: &Mosquitto, fleet: &Fleet, client_id: &str, rate: f64) -> Publishing {
    spawn_publisher(mosquitto, fleet, client_id, rate).1
}

/// The days that must reach the store while the service runs: those that
/// ended before the `newest` event time, the lateness (2 h) and a tick.
fn due_while_running(truth: &Days, newest: u64) -> Days {
    truth
        .iter()
        .filter(|((_, start), _)| start + DAY_MS + 2 * 3_600_000 + 60_000 <= newest)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Messages each member took in, from its `stopped` log lines.
fn accepted_per_member(deployment: &Deployment) -> Vec<u64> {
    deployment
        .members
        .iter()
        .map(|m| {
            m.log()
                .lines()
                .filter(|l| l.contains(" stopped") && l.contains("accepted="))
                .filter_map(|l| {
                    let rest = &l[l.find("accepted=")? + "accepted=".len()..];
                    rest.split_whitespace().next()?.parse::<u64>().ok()
                })
                .sum()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_a_shared_subscription_equal_the_ground_truth_and_one_process() {
    let (mosquitto, influx, dir) = servers_and_dir(NO_LOSS);
    let fleet = fleet_in(dir.path(), 21);
    let truth = truth_days(&fleet);
    let sent = fleet.encoded_messages().count();

    let mut cluster = start_cluster(dir.path(), &mosquitto, &influx, "fp-cluster", "cluster");
    let started = Instant::now();
    let report = publisher(&mosquitto, &fleet, "cluster-sim", 3000.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.messages as usize, sent);
    let result = cluster.settle(&influx, "cluster", &truth);
    let split = accepted_per_member(&cluster);
    println!(
        "cluster of 2: {sent} messages in {:.1} s, accepted per member {split:?}",
        started.elapsed().as_secs_f64()
    );
    result.unwrap_or_else(|e| panic!("cluster: {e}\n{}", cluster.logs()));
    assert!(
        split.iter().all(|n| *n > sent as u64 / 4),
        "the shared subscription did not split the load: {split:?}"
    );

    // The same fleet through one process, into its own database.
    let single_broker = Mosquitto::start_with_config(NO_LOSS);
    let single = write_config(
        dir.path(),
        &single_broker,
        &influx,
        &ConfigOptions {
            shared_group: None,
            ..ConfigOptions::member("single.toml", "fp-single", "single")
        },
    );
    let mut alone = Deployment {
        members: vec![Service::new(single, dir.path().join("single.log"))],
    };
    alone.start();
    let report = publisher(&single_broker, &fleet, "single-sim", 3000.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.messages as usize, sent);
    alone
        .settle(&influx, "single", &truth)
        .unwrap_or_else(|e| panic!("single process: {e}\n{}", alone.logs()));
    let (a, b) = (
        store_days(&influx, "cluster"),
        store_days(&influx, "single"),
    );
    equal(&a, &b).unwrap();
    println!(
        "{} customer-days: cluster == single process == ground truth",
        a.len()
    );
}

/// `GET /api/customers` of a member on `port`: each customer whose view
/// there has a health, with its daily scores but the newest (the open
/// day's provisional score), and whether it shows portfolio days.
async fn member_view(port: u16) -> (std::collections::BTreeMap<String, Vec<String>>, bool) {
    let get = async |path: &str| -> serde_json::Value {
        let url = format!("http://127.0.0.1:{port}{path}");
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        response.json().await.unwrap()
    };
    let list = get("/api/customers").await;
    let mut shown = std::collections::BTreeMap::new();
    for row in list["customers"].as_array().unwrap() {
        if row["health"].is_null() {
            continue;
        }
        let mut days: Vec<String> = (row["health_history"].as_array().unwrap().iter())
            .map(|d| format!("{} {}", d["window_start"], d["score"]))
            .collect();
        days.pop();
        shown.insert(row["customer"].as_str().unwrap().to_string(), days);
    }
    let portfolio = get("/api/portfolio").await.to_string();
    (shown, portfolio.contains("window_start"))
}

/// A cluster member's dashboard after the cluster restarts: each member
/// fills its view from the SQLite store the members share, with its own
/// customers only (those its workers own: the others' records would never
/// be updated there) and the portfolio on the member that gathers it. What
/// each member showed before the restart, it shows again: the same
/// customers, every closed day's health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_shows_each_member_its_own_customers_again() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet_in(dir.path(), 23);
    let sent = fleet.encoded_messages().count() as u64;
    let ports = free_ports(2);
    let configs: Vec<PathBuf> = (0..2)
        .map(|i| {
            let rest = format!(
                "persistent_session = true\nshared_group = \"fleetpulse\"\n\n\
                 [engine]\nworkers = 1\nidle_after = \"2s\"\n\n\
                 [wal]\ndir = \"wal-{i}\"\n\n\
                 [http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\n\
                 [alerts]\nmqtt = false\n\n\
                 [[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n",
                port = ports[i]
            );
            let path = dir.path().join(format!("member-{i}.toml"));
            write_service_config_at(&path, &mosquitto, &format!("fp-view-{i}"), &rest)
        })
        .collect();
    let mut cluster = Deployment::new(dir.path(), &configs);
    cluster.start();
    let report = publisher(&mosquitto, &fleet, "view-sim", 3000.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.messages, sent);
    let status = async |port: u16| -> serde_json::Value {
        let url = format!("http://127.0.0.1:{port}/api/status");
        reqwest::get(&url).await.unwrap().json().await.unwrap()
    };
    let started = Instant::now();
    loop {
        let mut accepted = 0;
        for port in &ports {
            accepted += status(*port).await["messages_accepted"].as_u64().unwrap();
        }
        if accepted == sent {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{accepted} of {sent} taken in\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for port in &ports {
        support::poll::until_settled(async || status(*port).await, |_| true, || cluster.logs())
            .await;
    }
    let mut before = Vec::new();
    for port in &ports {
        before.push(member_view(*port).await);
    }
    for (i, (shown, _)) in before.iter().enumerate() {
        assert!(!shown.is_empty(), "member {i} shows no customer's health");
    }
    let owners: usize = before.iter().map(|(shown, _)| shown.len()).sum();
    assert_eq!(owners, 6, "each customer on one member: {before:?}");

    cluster.stop();
    cluster.start();
    for (i, port) in ports.iter().enumerate() {
        let (wanted, portfolio) = &before[i];
        let started = Instant::now();
        loop {
            let (shown, shows_portfolio) = member_view(*port).await;
            let same_customers = shown.keys().eq(wanted.keys());
            let kept = (wanted.iter()).all(|(c, days)| {
                (shown.get(c)).is_some_and(|s| days.iter().all(|d| s.contains(d)))
            });
            if same_customers && kept && shows_portfolio == *portfolio {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "member {i} after the restart shows {shown:?} (portfolio {shows_portfolio}), \
                 before {wanted:?} (portfolio {portfolio})\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    cluster.stop();
    let split: Vec<usize> = before.iter().map(|(shown, _)| shown.len()).collect();
    let gathers: Vec<bool> = before.iter().map(|(_, p)| *p).collect();
    println!(
        "customers per member {split:?}, portfolio on {gathers:?}: each member shows them again after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_mid_run_the_cluster_restarts_and_loses_nothing() {
    let (mosquitto, influx, dir) = servers_and_dir(&format!("{NO_LOSS}\nautosave_interval 1\n"));
    let fleet = fleet_in(dir.path(), 22);
    let truth = truth_days(&fleet);
    let sent = fleet.encoded_messages().count();
    let mut cluster = start_cluster(dir.path(), &mosquitto, &influx, "fp-kill", "kill");
    let publishing = publisher(&mosquitto, &fleet, "kill-sim", 1500.0);

    let mut survivors_exited = Vec::new();
    for round in 0..3usize {
        tokio::time::sleep(Duration::from_millis(900 + 500 * round as u64)).await;
        // Kill one member; the other notices the lost peer and exits.
        let victim = round % 2;
        cluster.members[victim].kill();
        let other = &mut cluster.members[1 - victim];
        let status = other.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "the surviving member kept running without its peer:\n{}",
                other.log_tail()
            )
        });
        survivors_exited.push(status.code());
        cluster.start();
    }
    let report = publishing.await.unwrap().unwrap();
    assert_eq!(report.messages as usize, sent);
    let result = cluster.settle(&influx, "kill", &truth);
    let replayed: Vec<String> = cluster
        .members
        .iter()
        .flat_map(|m| {
            m.log()
                .lines()
                .filter(|l| l.contains("WAL replayed"))
                .map(|l| l[l.find("replayed=").unwrap_or(0)..].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    println!(
        "messages sent {sent}; 3 kills, survivors exited with {survivors_exited:?}; WAL replays: {replayed:?}; lost = {}",
        if result.is_ok() { 0 } else { 1 }
    );
    result.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert!(survivors_exited.iter().all(|c| *c == Some(75)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_close_on_time_while_one_member_receives_nothing() {
    let (mosquitto, influx, dir) = servers_and_dir(NO_LOSS);
    let fleet = fleet_in(dir.path(), 23);
    let truth = truth_days(&fleet);
    let newest = fleet
        .messages()
        .map(|m| m.publish_time())
        .max()
        .unwrap_or(0);
    let busy = write_config(
        dir.path(),
        &mosquitto,
        &influx,
        &ConfigOptions::member("busy.toml", "fp-busy", "idle"),
    );
    // Member 1 shares a topic nobody publishes on: it is idle all along.
    let idle = write_config(
        dir.path(),
        &mosquitto,
        &influx,
        &ConfigOptions {
            topic: Some("quiet/+/+/+/telemetry"),
            ..ConfigOptions::member("idle.toml", "fp-idle", "idle")
        },
    );
    let mut cluster = Deployment::new(dir.path(), &[busy, idle]);
    cluster.start();
    let report = publisher(&mosquitto, &fleet, "idle-sim", 3000.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.messages as usize, fleet.encoded_messages().count());

    // Without stopping anything: every day that ended before the newest
    // event time minus the lateness (2 h) and a tick must reach the store.
    let due = due_while_running(&truth, newest);
    let waited = Instant::now();
    let closed = loop {
        let store = store_days(&influx, "idle");
        let closed: Days = store
            .iter()
            .filter(|(k, _)| due.contains_key(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if equal(&closed, &due).is_ok() || waited.elapsed() > Duration::from_secs(30) {
            break closed;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "idle member: {} of {} customer-days closed while running, {:.1} s after the last publish; {} left for the drain",
        closed.len(),
        truth.len(),
        waited.elapsed().as_secs_f64(),
        truth.len() - due.len()
    );
    equal(&closed, &due).unwrap_or_else(|e| panic!("windows held back: {e}\n{}", cluster.logs()));
    cluster
        .settle(&influx, "idle", &truth)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let split = accepted_per_member(&cluster);
    assert_eq!(split[1], 0, "the idle member received traffic: {split:?}");
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 12th, stime the 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of the processes whose command line mentions `needle` (a
/// fixture's data directory): the broker's and the store's share.
fn cpu_seconds_of(needle: &str) -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            total += cpu_seconds(pid);
        }
    }
    total
}

/// Not part of the suite: the figures in docs/SCALING.md. The broker holds
/// the whole fleet's messages (queued for the members' persistent
/// sessions), then the members start and drain it; timed until every
/// closable day is in InfluxDB.
///
/// `cargo test --release -p fleetpulse --test cluster -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_of_one_and_two_processes() {
    let devices = std::env::var("FLEETPULSE_SCALING_DEVICES")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(300);
    let days = 30;
    let influx = InfluxDb1::start();
    let fleet = fleet(6, devices, days, 24);
    let truth = truth_days(&fleet);
    let messages: Vec<(String, Vec<u8>)> = fleet.encoded_messages().collect();
    let samples: usize = fleet.messages().map(|m| m.batch.samples.len()).sum();
    let newest = fleet
        .messages()
        .map(|m| m.publish_time())
        .max()
        .unwrap_or(0);
    let due = due_while_running(&truth, newest);
    let bytes: usize = messages.iter().map(|(_, p)| p.len()).sum();
    println!(
        "fleet: {devices} devices, {days} days, {} messages ({} bytes of payload each on average), {samples} samples",
        messages.len(),
        bytes / messages.len().max(1)
    );
    let cases = [
        (1usize, 1usize, true),
        (1, 2, true),
        (2, 1, true),
        (1, 1, false),
        (2, 1, false),
    ];
    for (processes, workers, wal) in cases {
        let mosquitto = Mosquitto::start_with_config(NO_LOSS);
        let dir = tempfile::tempdir().unwrap();
        write_customers(dir.path(), &fleet);
        let database = format!("scaling_{processes}x{workers}_{wal}");
        let config = write_config(
            dir.path(),
            &mosquitto,
            &influx,
            &ConfigOptions {
                workers,
                wal,
                ..ConfigOptions::member("scaling.toml", "fp-scaling", &database)
            },
        );
        let mut deployment = Deployment::new(dir.path(), &vec![config; processes]);
        // Create the sessions, then let the broker queue the whole fleet.
        deployment.start();
        for member in &deployment.members {
            member.wait_for_log("subscribed", 1);
        }
        deployment.stop();
        let published = Instant::now();
        let options = PublishOptions {
            give_up_after: Duration::from_secs(300),
            ..publish_options(
                &mosquitto,
                &format!("scaling-sim-{processes}x{workers}-{wal}"),
            )
        };
        fleetpulse_sim::publish(options, messages.clone(), |_| {})
            .await
            .unwrap();
        let publish_s = published.elapsed().as_secs_f64();

        let broker_dir = mosquitto.data_dir().to_string_lossy().into_owned();
        let store_dir = influx.data_dir().to_string_lossy().into_owned();
        let (broker_before, store_before) =
            (cpu_seconds_of(&broker_dir), cpu_seconds_of(&store_dir));
        deployment.start();
        let started = Instant::now();
        loop {
            let store = store_days(&influx, &database);
            let closed = due.keys().filter(|k| store.contains_key(*k)).count();
            if closed == due.len() || started.elapsed() > Duration::from_secs(600) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu: f64 = deployment
            .members
            .iter()
            .filter_map(Service::pid)
            .map(cpu_seconds)
            .sum();
        let broker_cpu = cpu_seconds_of(&broker_dir) - broker_before;
        let store_cpu = cpu_seconds_of(&store_dir) - store_before;
        // The tail (the last open day) closes on the drain; not timed.
        let result = deployment.settle(&influx, &database, &truth);
        println!(
            "{processes} process(es) x {workers} worker(s), WAL {wal}: {:.0} messages/s ({:.0} samples/s) drained in {seconds:.1} s, \
             service CPU {cpu:.1} s ({:.2} s per million samples), mosquitto CPU {broker_cpu:.1} s, InfluxDB CPU {store_cpu:.1} s; \
             broker took the publish at {:.0} messages/s; equal to ground truth: {}",
            messages.len() as f64 / seconds,
            samples as f64 / seconds,
            cpu / (samples as f64 / 1e6),
            messages.len() as f64 / publish_s,
            result.is_ok()
        );
    }
}
