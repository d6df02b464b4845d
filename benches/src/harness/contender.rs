//! A contender process of the harness: the fleetpulse consumer or a Python
//! peer, speaking JSON lines (see [`super::consumer`]), or the do-nothing C
//! subscriber (`mosquitto_sub`), which only exits after its count.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::consumer::ConsumerReport;

/// A running contender.
pub struct Contender {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    handled: Arc<AtomicU64>,
    events: mpsc::Receiver<serde_json::Value>,
    /// Its stderr.
    pub log: PathBuf,
}

impl Contender {
    /// Starts `command` with piped stdin/stdout and stderr to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> anyhow::Result<Contender> {
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("{}: cannot create", log.display()))?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("stdout")?;
        let handled = Arc::new(AtomicU64::new(0));
        let (tx, events) = mpsc::channel();
        let counter = handled.clone();
        std::thread::Builder::new()
            .name(format!("bench-{name}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    if value["event"] == "progress" {
                        counter.store(value["handled"].as_u64().unwrap_or(0), Relaxed);
                    } else if tx.send(value).is_err() {
                        break;
                    }
                }
            })
            .context("reader thread")?;
        Ok(Contender {
            name: name.to_owned(),
            child,
            stdin,
            handled,
            events,
            log,
        })
    }

    /// Messages handled so far.
    pub fn handled(&self) -> u64 {
        self.handled.load(Relaxed)
    }

    /// True once the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn wait_event(
        &mut self,
        event: &str,
        patience: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        loop {
            match self.events.try_recv() {
                Ok(value) if value["event"] == event => return Ok(value),
                Ok(_) => {}
                Err(mpsc::TryRecvError::Disconnected) => bail!(
                    "{} stopped before `{event}`:\n{}",
                    self.name,
                    self.log_tail()
                ),
                Err(mpsc::TryRecvError::Empty) => {
                    if started.elapsed() > patience {
                        bail!(
                            "{} sent no `{event}` within {patience:?}:\n{}",
                            self.name,
                            self.log_tail()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Waits for the `ready` line (subscribed).
    pub async fn ready(&mut self, patience: Duration) -> anyhow::Result<()> {
        self.wait_event("ready", patience).await.map(|_| ())
    }

    /// Closes stdin (stop), waits for the `done` report and the exit.
    pub async fn stop(mut self, patience: Duration) -> anyhow::Result<ConsumerReport> {
        drop(self.stdin.take());
        let done = self.wait_event("done", patience).await;
        let _ = self.child.wait();
        let done = done?;
        serde_json::from_value(done).with_context(|| format!("{}: bad `done` line", self.name))
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The broker's ceiling: `mosquitto_sub` at QoS 1 writing every payload to
/// /dev/null, exiting after `count` messages. Run through `sh` so that the
/// subscriber's CPU time can be read from the shell's children times.
pub struct Ceiling {
    child: Child,
    log: PathBuf,
}

impl Ceiling {
    /// Starts the subscriber.
    pub fn spawn(
        program: &std::path::Path,
        host: &str,
        port: u16,
        client_id: &str,
        count: u64,
        timeout: u64,
        log: PathBuf,
    ) -> anyhow::Result<Ceiling> {
        let stderr = std::fs::File::create(&log)?;
        let script = format!(
            "'{}' -h '{host}' -p {port} -i '{client_id}' -q 1 -t 'fleet/+/+/+/telemetry' -C {count} -W {timeout} \
             > /dev/null; status=$?; cat /proc/$$/stat >&2; exit $status",
            program.display()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("cannot start mosquitto_sub through sh")?;
        Ok(Ceiling { child, log })
    }

    /// Exit status once exited.
    pub fn exited(&mut self) -> Option<bool> {
        self.child.try_wait().ok().flatten().map(|s| s.success())
    }

    /// CPU seconds of the subscriber (after it exited).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let stat = text.lines().last()?;
        super::procfs::cpu_from_stat(stat, true)
    }

    /// Kills it (it did not get its count).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill();
        }
    }
}
