//! The WAL's directory and disk, as a careless operator treats them, with the
//! real `fleetpulse run` binary, real mosquitto and InfluxDB 1.x:
//!
//! - a second service started on the same WAL directory refuses to start,
//!   exits non-zero and names the directory and the first one's PID; the
//!   first goes on and loses nothing;
//! - the WAL's disk (a small tmpfs) fills up mid-run: `/readyz` goes red with
//!   the reason, intake pauses, and once a filler file is deleted intake
//!   resumes by itself, without a restart;
//!
//! and each time the KPIs stored equal the simulator's ground truth, value by
//! value.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetpulse_sim::{Fleet, FleetSpec, PublishOptions};

use crate::support::servers::{InfluxDb1, Mosquitto, NO_LOSS, free_port, http_get};
use crate::support::service::{Service, influx_sections, metric, metrics, write_service_config};
use crate::support::truth::{equal, store_days, truth_days};

const ACCEPTED: &str = "fleetpulse_messages_accepted_total";
const WAL_FULL: &str = "fleetpulse_wal_full";

/// The service file: the WAL in `wal_dir`, `/metrics` and `/readyz` on
/// `http_port`, KPIs to InfluxDB 1.x.
fn write_config(
    dir: &Path,
    wal_dir: &Path,
    mosquitto: &Mosquitto,
    influx: &InfluxDb1,
    http_port: u16,
) -> PathBuf {
    let rest = format!(
        r#"
[wal]
dir = "{wal}"
segment_bytes = 65536

[http]
enabled = true
listen = "127.0.0.1:{http_port}"

{influx}"#,
        wal = wal_dir.display(),
        influx = influx_sections(influx, "fleetpulse")
    );
    write_service_config(dir, mosquitto, "fleetpulse-disk-test", &rest)
}

/// Starts the service and waits until it is subscribed.
fn start(config: &Path, log: &Path) -> Service {
    let mut service = Service::new(config, log);
    service.start_and_wait("subscribed");
    service
}

fn fleet(seed: u64) -> Fleet {
    Fleet::generate(&FleetSpec {
        customers: 4,
        devices: 20,
        days: 4,
        seed,
        ..FleetSpec::default()
    })
}

fn publish(
    mosquitto: &Mosquitto,
    fleet: &Fleet,
    client_id: &str,
    rate: f64,
) -> (
    u64,
    tokio::task::JoinHandle<Result<fleetpulse_sim::PublishReport, fleetpulse_sim::SimError>>,
) {
    let messages: Vec<(String, Vec<u8>)> = fleet.encoded_messages().collect();
    let sent = messages.len() as u64;
    let options = PublishOptions {
        host: mosquitto.host().to_string(),
        port: mosquitto.port(),
        client_id: client_id.into(),
        rate: Some(rate),
        give_up_after: Duration::from_secs(120),
        ..PublishOptions::default()
    };
    (
        sent,
        tokio::spawn(fleetpulse_sim::publish(options, messages, |_| {})),
    )
}

/// Waits until the service has accepted `sent` messages: every message of
/// the fleet, exactly once.
async fn wait_accepted(http_port: u16, sent: u64, service: &Service) {
    let started = Instant::now();
    loop {
        let text = metrics(http_port);
        if metric(&text, ACCEPTED) >= sent {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}/{sent} accepted in 60 s\n{}",
            metric(&text, ACCEPTED),
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_service_on_one_wal_dir_refuses_to_start_and_the_first_loses_nothing() {
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let influx = InfluxDb1::start();
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(31);
    fleetpulse::sim::write_files(&fleet, None, Some(&dir.path().join("customers.toml"))).unwrap();
    let wal_dir = dir.path().join("wal");
    let http_port = free_port();
    // One file for both: the second unit started by mistake.
    let config = write_config(dir.path(), &wal_dir, &mosquitto, &influx, http_port);
    let mut first = start(&config, &dir.path().join("first.log"));

    let (sent, publisher) = publish(&mosquitto, &fleet, "disk-test-fleet", 600.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !publisher.is_finished(),
        "the fleet was out before the second start"
    );

    let mut second = Service::new(&config, dir.path().join("second.log"));
    second.start();
    let limit = Duration::from_secs(30);
    let status = tokio::task::block_in_place(|| second.wait_exit(limit))
        .unwrap_or_else(|| panic!("still running after {limit:?}:\n{}", second.log_tail()));
    let log = second.log();
    assert!(
        !status.success(),
        "the second service exited with {status}:\n{log}"
    );
    let pid = first.pid().expect("running");
    assert!(
        log.contains(&wal_dir.display().to_string()) && log.contains(&format!("PID {pid}")),
        "the error names neither {} nor PID {pid}:\n{log}",
        wal_dir.display()
    );
    assert!(
        !log.contains("connected to broker") && !log.contains("sink open"),
        "the second service got further than its WAL:\n{log}"
    );
    assert!(first.is_running(), "{}", first.log_tail());

    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.messages, sent);
    wait_accepted(http_port, sent, &first).await;
    first.stop();
    equal(&store_days(&influx, "fleetpulse"), &truth_days(&fleet))
        .unwrap_or_else(|e| panic!("{e}\n{}", first.log_tail()));
    println!(
        "second service refused: {}",
        log.lines()
            .find(|l| l.contains("in use by another process"))
            .unwrap_or_default()
    );
}

/// Set in the copy of a test that runs under `unshare -rm` when the tests
/// are not root.
const IN_NAMESPACE_VAR: &str = "FLEETPULSE_DISK_TEST_IN_NAMESPACE";

/// A tmpfs of `size` mounted on a temporary directory; unmounted (lazily)
/// on drop. `None` when this process may not mount: then the caller runs
/// itself again under `unshare -rm` with [`rerun_in_namespace`].
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            .then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Runs test `test` of this binary again as root of a user and mount
/// namespace of its own, where it may mount a tmpfs.
fn rerun_in_namespace(test: &str) {
    assert!(
        std::env::var_os(IN_NAMESPACE_VAR).is_none(),
        "cannot mount a tmpfs, even in a user namespace"
    );
    let status = Command::new("unshare")
        .args(["-rm", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(IN_NAMESPACE_VAR, "1")
        .status()
        .expect("not root, and `unshare` (util-linux) is not installed");
    assert!(status.success(), "{test} under unshare -rm: {status}");
}

/// Writes zeros to `path` until the disk is full, then gives `room` bytes
/// back.
fn fill_disk_but(path: &Path, room: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    for block in [64 * 1024, 4096, 512, 1] {
        let zeros = vec![0u8; block];
        loop {
            match file.write_all(&zeros) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
    }
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(room)).unwrap();
}

/// `GET /readyz`: status and body.
fn readyz(http_port: u16) -> (u16, String) {
    let response = http_get(&format!("http://127.0.0.1:{http_port}/readyz")).unwrap();
    (response.status, response.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_intake_and_freed_space_resumes_it_without_a_restart() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return rerun_in_namespace(
            "disk::a_full_disk_pauses_intake_and_freed_space_resumes_it_without_a_restart",
        );
    };
    let mosquitto = Mosquitto::start_with_config(NO_LOSS);
    let influx = InfluxDb1::start();
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(32);
    fleetpulse::sim::write_files(&fleet, None, Some(&dir.path().join("customers.toml"))).unwrap();
    let wal_dir = disk.path().join("wal");
    let http_port = free_port();
    let config = write_config(dir.path(), &wal_dir, &mosquitto, &influx, http_port);
    let mut service = start(&config, &dir.path().join("service.log"));
    assert_eq!(readyz(http_port).0, 200, "{}", service.log_tail());

    // Room for a few dozen messages, then the disk is full.
    let filler = disk.path().join("filler");
    fill_disk_but(&filler, 32 * 1024);
    let (sent, publisher) = publish(&mosquitto, &fleet, "disk-test-fleet", 400.0);

    // Readiness goes red with the reason, and the gauge says so.
    let started = Instant::now();
    let (status, body) = loop {
        let (status, body) = readyz(http_port);
        if status != 200 {
            break (status, body);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still ready after 30 s on a full disk\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503);
    assert!(
        body.contains("the write-ahead log is full")
            && body.contains("No space left on device")
            && body.contains("intake paused"),
        "{body}"
    );
    assert_eq!(metric(&metrics(http_port), WAL_FULL), 1);

    // Intake pauses: nothing more is accepted while the disk stays full.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paused_at = metric(&metrics(http_port), ACCEPTED);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = metrics(http_port);
    assert_eq!(
        metric(&text, ACCEPTED),
        paused_at,
        "accepted while the WAL was full"
    );
    assert_eq!(metric(&text, WAL_FULL), 1);
    assert!(
        paused_at < sent,
        "everything went in before the disk was full"
    );
    assert_eq!(readyz(http_port).0, 503);

    // Space returns: intake resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    while readyz(http_port).0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not ready 15 s after the disk was freed: {:?}\n{}",
            readyz(http_port),
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&metrics(http_port), WAL_FULL), 0);
    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.messages, sent);
    wait_accepted(http_port, sent, &service).await;
    assert!(service.is_running(), "{}", service.log_tail());

    // One log line per transition.
    let log = service.log();
    let paused = log.matches("intake paused until it has room").count();
    let resumed = log.matches("intake resumed").count();
    assert_eq!((paused, resumed), (1, 1), "{}", service.log_tail());
    // Not one line per retry: the WAL says it once, and the checkpoint,
    // written beside it, at most once.
    let wal_full = log
        .lines()
        .filter(|l| l.contains("No space left on device") && !l.contains("checkpoint"))
        .count();
    assert_eq!(wal_full, 1, "{}", service.log_tail());
    let checkpoint_full = log
        .lines()
        .filter(|l| l.contains("No space left on device") && l.contains("checkpoint"))
        .count();
    assert!(checkpoint_full <= 1, "{}", service.log_tail());

    // The same process all along, and nothing lost or doubled.
    service.stop();
    equal(&store_days(&influx, "fleetpulse"), &truth_days(&fleet))
        .unwrap_or_else(|e| panic!("{e}\n{}", service.log_tail()));
    println!("{sent} messages; {paused_at} accepted before the pause; readiness said: {body}");
}
