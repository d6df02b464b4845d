//! The real `fleetpulse run` binary as a child process, for the tests that
//! kill, restart and stop it the way an operator (or a crash) would.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::poll::PATIENCE;
use super::servers::{InfluxDb1, Mosquitto, http_get};

/// One `fleetpulse run` process, restartable; its stderr is appended to one
/// log file across restarts, so a count of log lines tells the starts apart.
/// Killed on drop.
pub struct Service {
    config: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: usize,
}

impl Service {
    /// Not started yet; `RUST_LOG` is `info,rumqttd=warn` unless [`env`]
    /// sets it.
    ///
    /// [`env`]: Self::env
    pub fn new(config: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        Self {
            config: config.into(),
            log: log.into(),
            args: Vec::new(),
            env: Vec::new(),
            child: None,
            starts: 0,
        }
    }

    /// Arguments after `run --config <file>`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Spawns the process without waiting for it.
    pub fn start(&mut self) {
        self.starts += 1;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_fleetpulse"));
        command
            .args(["run", "--config"])
            .arg(&self.config)
            .args(&self.args)
            .env("RUST_LOG", "info,rumqttd=warn")
            // The error a failed start ends with, not a backtrace of its
            // making, is what the log tail must show (panics keep theirs).
            .env("RUST_LIB_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        self.child = Some(command.spawn().unwrap());
    }

    /// Spawns the process and waits until this start has logged `needle`.
    pub fn start_and_wait(&mut self, needle: &str) {
        self.start();
        self.wait_for_log(needle, self.starts);
    }

    /// How many times it was started.
    pub fn starts(&self) -> usize {
        self.starts
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGKILL: a crash, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGINT without waiting.
    pub fn interrupt(&self) {
        if let Some(child) = &self.child {
            let pid = child.id().to_string();
            Command::new("kill").args(["-INT", &pid]).status().unwrap();
        }
    }

    /// Waits up to `within` for the process to exit; `None` if it is still
    /// running (or was not started).
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGINT (stop intake, drain the engine, flush the sinks), then waits
    /// for the exit, which must be a success.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            Command::new("kill").args(["-INT", &pid]).status().unwrap();
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "graceful stop failed: {status}\n{}",
                self.log_tail()
            );
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log, every start included.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits up to [`PATIENCE`] until the log holds `needle` `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        self.wait_for_log_within(needle, count, PATIENCE);
    }

    pub fn wait_for_log_within(&self, needle: &str, count: usize, within: Duration) {
        let started = Instant::now();
        while self.log().matches(needle).count() < count {
            assert!(
                started.elapsed() < within,
                "not {count} x `{needle}` in {} ({}):\n{}",
                self.log.display(),
                self.config.display(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `fleetpulse.toml` in `dir`; see [`write_service_config_at`].
pub fn write_service_config(
    dir: &Path,
    mosquitto: &Mosquitto,
    client_id: &str,
    sections: &str,
) -> PathBuf {
    write_service_config_at(&dir.join("fleetpulse.toml"), mosquitto, client_id, sections)
}

/// Writes a service file at `path`: `[mqtt]` for `mosquitto` as
/// `client_id`, then `sections` (more `[mqtt]` keys first, if any), then the
/// fleet from the `customers.toml` beside it.
pub fn write_service_config_at(
    path: &Path,
    mosquitto: &Mosquitto,
    client_id: &str,
    sections: &str,
) -> PathBuf {
    let mut file = std::fs::File::create(path).unwrap();
    write!(
        file,
        "\n[mqtt]\nhost = \"{host}\"\nport = {port}\nclient_id = \"{client_id}\"\n{sections}\n\
         [customers]\nfile = \"customers.toml\"\n",
        host = mosquitto.host(),
        port = mosquitto.port(),
    )
    .unwrap();
    path.to_owned()
}

/// Writes `fleetpulse.toml` in `dir` for a service that loses nothing to a
/// restart: a persistent session for `mosquitto` as `client_id`, `workers`
/// engine workers, the WAL in `wal/` (with the further `[wal]` keys
/// `wal_keys`), then `sections`.
pub fn write_durable_config(
    dir: &Path,
    mosquitto: &Mosquitto,
    client_id: &str,
    workers: usize,
    wal_keys: &str,
    sections: &str,
) -> PathBuf {
    let rest = format!(
        "persistent_session = true\n\n[engine]\nworkers = {workers}\n\n\
         [wal]\ndir = \"wal\"\n{wal_keys}\n{sections}"
    );
    write_service_config(dir, mosquitto, client_id, &rest)
}

/// The sections of a file whose KPIs go to InfluxDB 1.x `database` and
/// whose alerts go nowhere else.
pub fn influx_sections(influx: &InfluxDb1, database: &str) -> String {
    format!(
        "[alerts]\nmqtt = false\n\n[[sinks]]\ntype = \"influxdb_v1\"\nurl = \"{}\"\ndatabase = \"{database}\"\n",
        influx.url()
    )
}

/// `GET /metrics` from a service listening on `http_port`.
pub fn metrics(http_port: u16) -> String {
    http_get(&format!("http://127.0.0.1:{http_port}/metrics"))
        .unwrap()
        .text()
}

/// One unlabelled (or exactly labelled) sample of a `/metrics` text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits up to `within` for `done`, polled every 100 ms without blocking
/// the runtime, naming `what` and `service`'s log if it does not come.
pub async fn wait_until(
    what: &str,
    within: Duration,
    service: &Service,
    mut done: impl FnMut() -> bool,
) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < within,
            "not {what} within {within:?}\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
