//! Fixtures that run real servers for integration tests: mosquitto 2, InfluxDB
//! 1.x and VictoriaMetrics.
//!
//! Each fixture starts its server on 127.0.0.1 with free ports and a temporary
//! data directory, waits until the server answers (or panics with the tail of
//! its log), and kills and reaps it on drop. `stop()` and `restart()` keep the
//! ports and the data directory, for broker-restart and store-outage tests.
//!
//! The binaries come from the Debian packages that `./deploy/test.sh`
//! installs. A missing binary fails the test; it is never skipped. Each binary
//! is looked up in `PATH` and the sbin directories, or taken from an
//! environment variable (`FLEETPULSE_MOSQUITTO`, `FLEETPULSE_MOSQUITTO_PUB`,
//! `FLEETPULSE_MOSQUITTO_SUB`, `FLEETPULSE_INFLUXD`,
//! `FLEETPULSE_VICTORIA_METRICS`).
//!
//! HTTP goes through the small blocking client at the end of this file
//! (std only), so the fixtures need no extra dependency.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The address every fixture listens on.
pub const HOST: &str = "127.0.0.1";

/// How long a server may take to answer its readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop()` waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How often a fresh start is tried when another process took the free port
/// between `free_port()` and the server's bind.
const START_ATTEMPTS: usize = 5;
/// How many log lines a failure message shows.
const LOG_TAIL_LINES: usize = 40;
/// Timeout of one HTTP request made by the helpers.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str = "run ./deploy/test.sh, which installs the Debian packages \
     mosquitto, mosquitto-clients, influxdb and victoria-metrics";

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Another process may take it before the server binds it; the fixtures
/// detect that ("address already in use") and retry with a new port.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago.
///
/// They are drawn below the kernel's ephemeral range: a server that is
/// stopped and restarted on its port (the outage tests) must find it free
/// again, and a port of the ephemeral range is handed to any outgoing
/// connection or `bind(0)` of the suite's parallel tests meanwhile (CI saw
/// influxd's restart fail with "address already in use").
pub fn free_ports(n: usize) -> Vec<u16> {
    let (low, high) = fixture_port_range();
    let mut rng = rand::rng();
    // Hold every listener until all are bound, so the ports differ.
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(n);
    let mut tries = 0;
    while listeners.len() < n {
        tries += 1;
        assert!(
            tries < 10_000,
            "no free TCP port on {HOST} in {low}..{high} after {tries} tries"
        );
        let port = rand::Rng::random_range(&mut rng, low..high);
        if let Ok(listener) = TcpListener::bind((HOST, port)) {
            listeners.push(listener);
        }
    }
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("local_addr of a bound listener")
                .port()
        })
        .collect()
}

/// The ports the fixtures draw from: from 10000 up to the start of the
/// kernel's ephemeral range (`ip_local_port_range`, 32768..=60999 by
/// default), or above its end where it starts too low to leave room.
fn fixture_port_range() -> (u16, u16) {
    const LOW: u16 = 10_000;
    const ROOM: u16 = 2_000;
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = range.split_whitespace().map(|s| s.parse::<u16>().ok());
    let (start, end) = match (bounds.next().flatten(), bounds.next().flatten()) {
        (Some(start), Some(end)) => (start, end),
        _ => (32_768, 60_999),
    };
    if start >= LOW + ROOM {
        (LOW, start)
    } else if end <= u16::MAX - ROOM {
        (end + 1, u16::MAX)
    } else {
        // The whole range is ephemeral: nothing to avoid.
        (LOW, u16::MAX)
    }
}

/// The path of a server or client binary: `$env_var` if set, otherwise the
/// first `name` in `PATH` or the sbin directories (often not in a non-root
/// `PATH`). Panics, telling to run `./deploy/test.sh`, when there is none.
pub fn find_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_var}={} is not a file: {INSTALL_HINT}, or fix {env_var}",
            path.display()
        );
        return path;
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path_var).collect();
    for extra in [
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/bin",
    ] {
        dirs.push(PathBuf::from(extra));
    }
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` was not found in PATH or the sbin directories: {INSTALL_HINT} \
                 (or set {env_var} to its path)"
            )
        })
}

/// The process controls every fixture shares, so the three servers behave
/// alike under `stop()`/`restart()`. `$port` names the field that the
/// readiness probe `$probe` is called with.
macro_rules! process_controls {
    ($server:ty, $port:ident, $probe:expr) => {
        impl $server {
            /// How long the last start took until the readiness probe answered.
            pub fn ready_in(&self) -> Duration {
                self.process.ready_in
            }

            /// Whether the server process is running.
            pub fn is_running(&mut self) -> bool {
                self.process.is_running()
            }

            /// Stops the server gracefully (SIGTERM: mosquitto saves its
            /// persistence file, VictoriaMetrics flushes its buffers),
            /// SIGKILL after a grace period. Does nothing if it is stopped.
            pub fn stop(&mut self) {
                self.process.stop();
            }

            /// Kills the server (SIGKILL): a crash, what it had not saved
            /// is lost.
            pub fn kill(&mut self) {
                self.process.kill();
            }

            /// Starts the server again with the same ports and data
            /// directory; stops it first if it is running.
            pub fn restart(&mut self) {
                let port = self.$port;
                self.process.restart(&|| $probe(port));
            }

            /// The last lines of the server's log.
            pub fn log_tail(&self) -> String {
                self.process.log_tail()
            }
        }
    };
}

process_controls!(Mosquitto, port, tcp_accepts);
process_controls!(InfluxDb1, http_port, influx_ping);
process_controls!(VictoriaMetrics, port, vm_health);

// ---------------------------------------------------------------------------
// mosquitto
// ---------------------------------------------------------------------------

/// A mosquitto 2 broker: one anonymous listener on 127.0.0.1, persistence in
/// its temporary directory.
pub struct Mosquitto {
    // Fields drop in order: the process dies before its directory goes.
    process: Process,
    port: u16,
    dir: TempDir,
}

/// One message read by [`Mosquitto::receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The shipped no-loss broker settings (deploy/mosquitto/no-loss.conf), for
/// [`Mosquitto::start_with_config`]: mosquitto's defaults drop QoS 1
/// messages of a subscriber that falls behind.
pub const NO_LOSS: &str = include_str!("../../../deploy/mosquitto/no-loss.conf");

impl Mosquitto {
    /// Starts a broker with the generated config.
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts a broker whose generated config ends with `extra` (mosquitto
    /// config lines, e.g. `"max_queued_messages 0\n"` or a second listener).
    pub fn start_with_config(extra: &str) -> Self {
        let dir = temp_dir("mosquitto");
        let program = find_binary("mosquitto", "FLEETPULSE_MOSQUITTO");
        let (port, process) = launch(
            || {
                let port = free_port();
                let config = dir.path().join("mosquitto.conf");
                write_file(&config, &mosquitto_config(port, dir.path(), extra));
                let args = vec!["-c".into(), config.into_os_string()];
                (port, Process::new("mosquitto", &program, args, dir.path()))
            },
            tcp_accepts,
        );
        Self { process, port, dir }
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The MQTT listener's port (kept across `stop()`/`restart()`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The persistence directory (also holds `mosquitto.conf` and the log).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Publishes one message with `mosquitto_pub`.
    pub fn publish(&self, topic: &str, payload: &[u8], qos: u8) {
        if let Err(e) = self.try_publish_with(&ClientOptions::default(), topic, payload, qos) {
            panic!("{e}");
        }
    }

    /// Publishes one message with `mosquitto_pub` as `client` says (user,
    /// port, TLS, protocol). `Ok` holds what mosquitto_pub printed on stderr
    /// (with MQTT 5, a publish the ACL denies shows up there as "Not
    /// authorized" while the exit status is still success); `Err` says why
    /// it failed, e.g. a connection refused for bad credentials.
    pub fn try_publish_with(
        &self,
        client: &ClientOptions<'_>,
        topic: &str,
        payload: &[u8],
        qos: u8,
    ) -> Result<String, String> {
        let program = find_binary("mosquitto_pub", "FLEETPULSE_MOSQUITTO_PUB");
        let mut cmd = Command::new(&program);
        self.client_args(&mut cmd, client);
        let mut child = cmd
            .args(["-t", topic, "-q", &qos.to_string(), "-s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(payload)
            .expect("write the payload to mosquitto_pub");
        let out = child.wait_with_output().expect("wait for mosquitto_pub");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(stderr)
        } else {
            Err(format!(
                "mosquitto_pub to {topic:?} failed ({}): {stderr}\n{}",
                out.status,
                self.log_tail()
            ))
        }
    }

    /// Creates (or resumes) the persistent session `client_id` subscribed to
    /// `topic` at QoS 1, then disconnects: messages published from now on are
    /// queued for it by the broker, also across a graceful restart.
    pub fn subscribe_session(&self, client_id: &str, topic: &str) {
        self.subscribe_session_with(&ClientOptions::default(), client_id, topic);
    }

    /// [`Mosquitto::subscribe_session`] as `client` says.
    pub fn subscribe_session_with(&self, client: &ClientOptions<'_>, client_id: &str, topic: &str) {
        let out = self
            .sub_command(client, client_id, topic)
            .arg("-E")
            .output()
            .expect("run mosquitto_sub");
        assert!(
            out.status.success(),
            "mosquitto_sub -E for {client_id} on {topic:?} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// Reads up to `count` messages for the persistent session `client_id`
    /// subscribed to `topic` (QoS 1), waiting at most `timeout` (rounded up to
    /// whole seconds). Returns what arrived, which may be fewer on timeout.
    pub fn receive(
        &self,
        client_id: &str,
        topic: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Message> {
        self.receive_with(&ClientOptions::default(), client_id, topic, count, timeout)
    }

    /// [`Mosquitto::receive`] as `client` says.
    pub fn receive_with(
        &self,
        client: &ClientOptions<'_>,
        client_id: &str,
        topic: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Message> {
        let seconds = timeout.as_millis().div_ceil(1000).max(1);
        let out = self
            .sub_command(client, client_id, topic)
            .args(["-C", &count.to_string(), "-W", &seconds.to_string()])
            .args(["-F", "%t\t%x"])
            .output()
            .expect("run mosquitto_sub");
        // 27 is mosquitto_sub's "timed out" exit code.
        assert!(
            out.status.success() || out.status.code() == Some(27),
            "mosquitto_sub for {client_id} on {topic:?} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (topic, hex) = line.rsplit_once('\t').unwrap_or((line, ""));
                Message {
                    topic: topic.to_owned(),
                    payload: decode_hex(hex),
                }
            })
            .collect()
    }

    fn sub_command(&self, client: &ClientOptions<'_>, client_id: &str, topic: &str) -> Command {
        let program = find_binary("mosquitto_sub", "FLEETPULSE_MOSQUITTO_SUB");
        let mut cmd = Command::new(program);
        self.client_args(&mut cmd, client);
        cmd.args(["-i", client_id, "-c", "-q", "1", "-t", topic])
            .stdin(Stdio::null());
        cmd
    }

    /// Host, port, credentials, TLS and protocol arguments of
    /// mosquitto_pub and mosquitto_sub.
    fn client_args(&self, cmd: &mut Command, client: &ClientOptions<'_>) {
        let port = client.port.unwrap_or(self.port);
        cmd.args(["-h", HOST, "-p", &port.to_string()]);
        if let Some((username, password)) = client.credentials {
            cmd.args(["-u", username, "-P", password]);
        }
        if let Some(cafile) = client.cafile {
            cmd.arg("--cafile").arg(cafile);
        }
        if let Some(protocol) = client.protocol {
            cmd.args(["-V", protocol]);
        }
    }
}

/// How a mosquitto_pub or mosquitto_sub of the fixture connects; the
/// default is anonymous MQTT 3.1.1 to the main listener.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientOptions<'a> {
    /// User name and password (`-u`, `-P`).
    pub credentials: Option<(&'a str, &'a str)>,
    /// Another listener's port, e.g. one added by the extra config.
    pub port: Option<u16>,
    /// CA certificate of a TLS listener (`--cafile`); turns TLS on.
    pub cafile: Option<&'a Path>,
    /// MQTT version (`-V`): `mqttv311` (mosquitto's default) or `mqttv5`.
    pub protocol: Option<&'a str>,
}

fn mosquitto_config(port: u16, dir: &Path, extra: &str) -> String {
    format!(
        "# Generated by ingest/tests/support/servers.rs for one test.\n\
         listener {port} {HOST}\n\
         allow_anonymous true\n\
         persistence true\n\
         persistence_location {dir}/\n\
         log_dest stderr\n\
         log_timestamp_format %Y-%m-%dT%H:%M:%S\n\
         # mosquitto started as root switches to the `mosquitto` user, which\n\
         # cannot write the 0700 temp dir; `root` keeps the current user (and\n\
         # is ignored when not started as root).\n\
         user root\n\
         {extra}\n",
        dir = dir.display(),
    )
}

/// The project's test CA, server and client certificates, written into
/// `dir` by `deploy/mosquitto/make-test-certs.sh` (`ca.crt`, `server.crt`,
/// `server.key`, ...).
pub fn make_test_certs(dir: &Path) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/make-test-certs.sh");
    let status = Command::new("bash").arg(script).arg(dir).status().unwrap();
    assert!(status.success(), "make-test-certs.sh failed ({status})");
}

/// The servers of an end-to-end run around the real service: a broker whose
/// config ends with `broker_config` (e.g. [`NO_LOSS`]), an InfluxDB 1.x, and
/// a working directory for the service's files.
pub fn servers_and_dir(broker_config: &str) -> (Mosquitto, InfluxDb1, TempDir) {
    let mosquitto = Mosquitto::start_with_config(broker_config);
    let influx = InfluxDb1::start();
    (mosquitto, influx, temp_dir("service"))
}

// ---------------------------------------------------------------------------
// InfluxDB 1.x
// ---------------------------------------------------------------------------

/// An InfluxDB 1.x server (`influxd` from the Debian package) with a
/// generated config: meta, data and WAL in its temporary directory, HTTP and
/// RPC on free loopback ports, everything else off.
pub struct InfluxDb1 {
    process: Process,
    http_port: u16,
    rpc_port: u16,
    dir: TempDir,
}

impl InfluxDb1 {
    /// Starts `influxd` and waits until `/ping` answers 204.
    pub fn start() -> Self {
        let dir = temp_dir("influxdb1");
        let program = find_binary("influxd", "FLEETPULSE_INFLUXD");
        let ((http_port, rpc_port), process) = launch(
            || {
                let ports = free_ports(2);
                let config = dir.path().join("influxdb.conf");
                write_file(&config, &influxdb_config(ports[0], ports[1], dir.path()));
                let args = vec!["run".into(), "-config".into(), config.into_os_string()];
                (
                    (ports[0], ports[1]),
                    Process::new("influxd", &program, args, dir.path()),
                )
            },
            |(http_port, _)| influx_ping(http_port),
        );
        Self {
            process,
            http_port,
            rpc_port,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT` (kept across `stop()`/`restart()`).
    pub fn url(&self) -> String {
        format!("http://{HOST}:{}", self.http_port)
    }

    /// The HTTP API's port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The RPC (backup/restore) port, bound to 127.0.0.1 too.
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// The directory with `meta/`, `data/`, `wal/`, the config and the log.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `CREATE DATABASE "name"` (a no-op if it exists).
    pub fn create_database(&self, name: &str) {
        self.query_inner(None, &format!("CREATE DATABASE {}", quote_ident(name)));
    }

    /// Writes line protocol through `/write?db=..&precision=..` (`precision`
    /// is `ns`, `u`, `ms` or `s`); panics unless the answer is 204.
    pub fn write_lines(&self, db: &str, precision: &str, lines: &str) {
        let url = format!(
            "{}/write?db={}&precision={}",
            self.url(),
            url_encode(db),
            url_encode(precision)
        );
        post_line_protocol(&self.process, &url, lines);
    }

    /// Runs InfluxQL against `db` through `/query` and returns the JSON answer
    /// (`{"results":[{"statement_id":0,"series":[...]}]}`, times as RFC 3339).
    /// Panics on an HTTP error or a statement error.
    pub fn query(&self, db: &str, influxql: &str) -> serde_json::Value {
        self.query_inner(Some(db), influxql)
    }

    fn query_inner(&self, db: Option<&str>, influxql: &str) -> serde_json::Value {
        let url = format!("{}/query", self.url());
        let mut form = format!("q={}", url_encode(influxql));
        if let Some(db) = db {
            let _ = write!(form, "&db={}", url_encode(db));
        }
        let resp = http_post(&url, "application/x-www-form-urlencoded", form.as_bytes())
            .unwrap_or_else(|e| panic!("POST {url} ({influxql}): {e}\n{}", self.log_tail()));
        assert_eq!(
            resp.status,
            200,
            "query {influxql:?} answered {}: {}",
            resp.status,
            resp.text()
        );
        let json: serde_json::Value = serde_json::from_slice(&resp.body)
            .unwrap_or_else(|e| panic!("query {influxql:?}: bad JSON ({e}): {}", resp.text()));
        let errors: Vec<&serde_json::Value> = json["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("error"))
            .chain(json.get("error"))
            .collect();
        assert!(errors.is_empty(), "query {influxql:?} failed: {errors:?}");
        json
    }
}

fn influx_ping(port: u16) -> bool {
    let url = format!("http://{HOST}:{port}/ping");
    matches!(http_request("GET", &url, None, &[], PROBE_TIMEOUT), Ok(r) if r.status == 204)
}

fn influxdb_config(http_port: u16, rpc_port: u16, dir: &Path) -> String {
    let dir = dir.display();
    format!(
        r#"# Generated by ingest/tests/support/servers.rs for one test.
# influxd ignores unknown keys: the first is upstream's, the second Debian's.
reporting-disabled = true
reporting-enabled = false
# RPC service (backup/restore); the default ":8088" would listen on every
# interface and clash between tests.
bind-address = "{HOST}:{rpc_port}"

[meta]
  dir = "{dir}/meta"
  retention-autocreate = true
  logging-enabled = true

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = true

[monitor]
  # No _internal database filled every 10s.
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{HOST}:{http_port}"
  auth-enabled = false
  log-enabled = true
  pprof-enabled = false

[logging]
  suppress-logo = true

# graphite, collectd, opentsdb and udp are disabled unless configured.
"#
    )
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

// ---------------------------------------------------------------------------
// VictoriaMetrics
// ---------------------------------------------------------------------------

/// A single-node VictoriaMetrics with its storage in a temporary directory.
///
/// Flags beyond data path and listen address:
/// - `-retentionPeriod=100y`: simulated history decades in the past is kept
///   (samples older than the retention are dropped silently).
/// - `-dedup.minScrapeInterval=1ms`: one sample per series and millisecond,
///   so writing the same point again is idempotent (without it,
///   VictoriaMetrics keeps and returns every duplicate). Which of two
///   *different* values for the same millisecond survives is not defined in
///   1.79 (seen both ways), so a correction is not a reliable overwrite.
/// - `-search.latencyOffset=0s`, `-search.disableCache`: queries see fresh
///   and back-filled samples at once.
pub struct VictoriaMetrics {
    process: Process,
    port: u16,
    dir: TempDir,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics and waits until `/health` says `OK`.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like [`VictoriaMetrics::start`] with extra command-line flags
    /// (`"-flag=value"`), which override the defaults above.
    pub fn start_with_args(extra: &[&str]) -> Self {
        let dir = temp_dir("victoria-metrics");
        let program = find_binary("victoria-metrics", "FLEETPULSE_VICTORIA_METRICS");
        let (port, process) = launch(
            || {
                let port = free_port();
                let mut args: Vec<OsString> = vec![
                    format!("-storageDataPath={}", dir.path().join("data").display()).into(),
                    format!("-httpListenAddr={HOST}:{port}").into(),
                    "-retentionPeriod=100y".into(),
                    "-dedup.minScrapeInterval=1ms".into(),
                    "-search.latencyOffset=0s".into(),
                    "-search.disableCache".into(),
                    "-loggerOutput=stderr".into(),
                ];
                args.extend(extra.iter().map(OsString::from));
                (
                    port,
                    Process::new("victoria-metrics", &program, args, dir.path()),
                )
            },
            vm_health,
        );
        Self { process, port, dir }
    }

    /// `http://127.0.0.1:PORT` (kept across `stop()`/`restart()`).
    pub fn url(&self) -> String {
        format!("http://{HOST}:{}", self.port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory with `data/` and the log.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes line protocol through the InfluxDB v2 API
    /// (`/api/v2/write?precision=..`, `precision` is `ns`, `us`, `ms` or `s`).
    /// Panics unless the answer is 204. Note: VictoriaMetrics also answers 204
    /// when it skips malformed lines (it only logs them), so check with
    /// [`VictoriaMetrics::export`].
    pub fn write_lines(&self, precision: &str, lines: &str) {
        let url = format!(
            "{}/api/v2/write?precision={}",
            self.url(),
            url_encode(precision)
        );
        post_line_protocol(&self.process, &url, lines);
    }

    /// Makes every sample written so far visible to queries
    /// (`/internal/force_flush`; otherwise that takes up to a second or two).
    pub fn force_flush(&self) {
        let url = format!("{}/internal/force_flush", self.url());
        let resp = http_get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status, 200, "GET {url}: {}", resp.text());
    }

    /// Flushes, then returns `/api/v1/export?match[]=<selector>`: one JSON
    /// object per series, `{"metric":{"__name__":..,labels..},
    /// "values":[..],"timestamps":[ms..]}`. Line protocol becomes
    /// `<measurement>_<field>` with the tags as labels.
    pub fn export(&self, match_selector: &str) -> Vec<serde_json::Value> {
        // Series registered just before may take a moment to be found by
        // a search even after the flush (seen once under a full test run):
        // an empty answer is asked again for up to 10 s.
        let started = std::time::Instant::now();
        loop {
            let found = self.export_once(match_selector);
            if !found.is_empty() || started.elapsed() > Duration::from_secs(10) {
                return found;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// [`Self::export`] asked once: for a series that must not exist.
    pub fn export_once(&self, match_selector: &str) -> Vec<serde_json::Value> {
        self.force_flush();
        let url = format!(
            "{}/api/v1/export?match[]={}",
            self.url(),
            url_encode(match_selector)
        );
        let resp = http_get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(
            resp.status,
            200,
            "export {match_selector:?} answered {}: {}",
            resp.status,
            resp.text()
        );
        resp.text()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("export {match_selector:?}: bad JSON line ({e}): {line}")
                })
            })
            .collect()
    }
}

fn vm_health(port: u16) -> bool {
    let url = format!("http://{HOST}:{port}/health");
    matches!(
        http_request("GET", &url, None, &[], PROBE_TIMEOUT),
        Ok(r) if r.status == 200 && r.text().trim() == "OK"
    )
}

// ---------------------------------------------------------------------------
// Process supervision
// ---------------------------------------------------------------------------

/// Timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One server process: how to start it, where it logs, the running child.
/// Killed and reaped on drop.
struct Process {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    /// stdout and stderr of every start, appended.
    log_path: PathBuf,
    /// Length of the log when the current child was started.
    log_offset: u64,
    child: Option<Child>,
    ready_in: Duration,
}

/// Why a start did not end with a ready server.
enum NotReady {
    Exited(ExitStatus),
    Timeout,
}

impl Process {
    fn new(name: &'static str, program: &Path, args: Vec<OsString>, dir: &Path) -> Self {
        Self {
            name,
            program: program.to_owned(),
            args,
            log_path: dir.join(format!("{name}.log")),
            log_offset: 0,
            child: None,
            ready_in: Duration::ZERO,
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path.display()));
        self.log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stdout = log.try_clone().expect("clone the log file handle");
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log);
        // influxd lets INFLUXDB_* variables override its config file.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("INFLUXDB_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({}): {e}: {INSTALL_HINT}",
                self.name,
                self.program.display()
            )
        });
        self.child = Some(child);
    }

    /// Polls `probe` until it succeeds while the child is alive.
    fn wait_ready(&mut self, probe: &dyn Fn() -> bool) -> Result<(), NotReady> {
        let started = Instant::now();
        let child = self.child.as_mut().expect("wait_ready after spawn");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait on the server") {
                return Err(NotReady::Exited(status));
            }
            // A probe could reach another process that holds our port, so the
            // child must still be alive after it.
            if probe() && child.try_wait().expect("try_wait on the server").is_none() {
                self.ready_in = started.elapsed();
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(NotReady::Timeout);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the child's log since its start says its port was taken.
    fn port_was_taken(&self) -> bool {
        self.log_since_start()
            .to_ascii_lowercase()
            .contains("address already in use")
    }

    fn failure_message(&self, why: &NotReady) -> String {
        let what = match why {
            NotReady::Exited(status) => format!("exited ({status}) before it was ready"),
            NotReady::Timeout => format!("was not ready within {READY_TIMEOUT:?}"),
        };
        format!(
            "{} {what}\ncommand: {} {}\n--- last lines of {} ---\n{}",
            self.name,
            self.program.display(),
            self.args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            self.log_path.display(),
            tail(&self.log_since_start(), LOG_TAIL_LINES)
        )
    }

    /// Starts the (stopped) process again and waits with `probe`; panics with
    /// the log tail if it does not get ready.
    ///
    /// The port is kept; if something holds it for a moment (a connection
    /// of a parallel test), the start is tried again for a while.
    fn restart(&mut self, probe: &dyn Fn() -> bool) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.spawn();
            match self.wait_ready(probe) {
                Ok(()) => return,
                Err(NotReady::Exited(_)) if self.port_was_taken() && Instant::now() < deadline => {
                    self.kill();
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(why) => {
                    let message = self.failure_message(&why);
                    self.kill();
                    panic!("restart: {message}");
                }
            }
        }
    }

    fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait on the server").is_none(),
            None => false,
        }
    }

    /// SIGTERM, wait up to STOP_GRACE, then SIGKILL; reaps the child.
    fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if child.try_wait().expect("try_wait on the server").is_none() {
            // No libc (unsafe is forbidden): the shell's builtin kill is
            // everywhere, even where procps is not installed.
            let _ = Command::new("sh")
                .args(["-c", "kill -TERM \"$1\"", "sh", &child.id().to_string()])
                .stdin(Stdio::null())
                .status();
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if child.try_wait().expect("try_wait on the server").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_since_start(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let _ = file.seek(SeekFrom::Start(self.log_offset));
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    fn log_tail(&self) -> String {
        let text = fs::read(&self.log_path).unwrap_or_default();
        format!(
            "--- last lines of {} ---\n{}",
            self.log_path.display(),
            tail(&String::from_utf8_lossy(&text), LOG_TAIL_LINES)
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a server, retrying with fresh ports while its port was taken by
/// someone else; panics with the log tail on any other failure.
fn launch<P: Copy>(
    mut prepare: impl FnMut() -> (P, Process),
    probe: impl Fn(P) -> bool,
) -> (P, Process) {
    let mut attempt = 1;
    loop {
        let (ports, mut process) = prepare();
        process.spawn();
        match process.wait_ready(&|| probe(ports)) {
            Ok(()) => return (ports, process),
            Err(NotReady::Exited(_)) if process.port_was_taken() && attempt < START_ATTEMPTS => {
                attempt += 1;
            }
            Err(why) => {
                let message = process.failure_message(&why);
                process.kill();
                panic!("{message}");
            }
        }
    }
}

fn temp_dir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("fleetpulse-{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir for {name}: {e}"))
}

fn write_file(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex from mosquitto_sub"))
        .collect()
}

/// POSTs line protocol to a write endpoint of `server` (InfluxDB 1.x and
/// VictoriaMetrics alike); panics with its log tail unless the answer is 204.
fn post_line_protocol(server: &Process, url: &str, lines: &str) {
    let resp = http_post(url, "text/plain; charset=utf-8", lines.as_bytes())
        .unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", server.log_tail()));
    assert_eq!(
        resp.status,
        204,
        "POST {url} answered {}: {}",
        resp.status,
        resp.text()
    );
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn tcp_accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok()
}

// ---------------------------------------------------------------------------
// A minimal blocking HTTP/1.1 client (std only)
// ---------------------------------------------------------------------------

/// An HTTP answer, body already de-chunked.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET url` (`http://host:port/path?query` only).
pub fn http_get(url: &str) -> io::Result<HttpResponse> {
    http_request("GET", url, None, &[], HTTP_TIMEOUT)
}

/// `POST url` with a body.
pub fn http_post(url: &str, content_type: &str, body: &[u8]) -> io::Result<HttpResponse> {
    http_request("POST", url, Some(content_type), body, HTTP_TIMEOUT)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for query
/// string values and form bodies.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn http_request(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{msg}: {url}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs"))?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid("no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: fleetpulse-tests\r\n\
         Connection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "malformed HTTP response from {url}: {}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            ),
        )
    })
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if resp
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body)?;
    } else if let Some(len) = resp.header("content-length").and_then(|v| v.parse().ok()) {
        body.truncate(len);
    }
    resp.body = body;
    Some(resp)
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
