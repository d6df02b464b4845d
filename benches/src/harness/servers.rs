//! The servers the harness starts itself when no address is given: mosquitto
//! (with deploy/mosquitto/no-loss.conf) and VictoriaMetrics, each a child
//! process on a free loopback port with its files in the bench directory,
//! killed when dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// mosquitto limits without which a subscriber that falls behind loses
/// messages (max_queued_messages 1000 by default) or is throttled (20
/// messages in flight by default).
pub const NO_LOSS: &str = include_str!("../../../deploy/mosquitto/no-loss.conf");

/// A server process of ours.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its log (stderr).
    pub log: PathBuf,
}

impl Server {
    /// Process id, for CPU accounting.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// `name` in PATH or the sbin directories (mosquitto is in /usr/sbin).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn spawn(
    program: &Path,
    args: &[String],
    dir: &Path,
    name: &str,
) -> anyhow::Result<(Child, PathBuf)> {
    let log = dir.join(format!("{name}.log"));
    let stderr =
        std::fs::File::create(&log).with_context(|| format!("{}: cannot create", log.display()))?;
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    Ok((child, log))
}

fn wait_accepting(addr: SocketAddr, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "server exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("server on {addr} did not accept connections within 30 s")
}

/// Starts mosquitto with the no-loss limits; subscriptions are logged (the
/// harness reads them to know when a subscriber is ready).
pub fn mosquitto(dir: &Path) -> anyhow::Result<Server> {
    let program = find_binary("mosquitto").context(
        "mosquitto not found (apt-get install mosquitto, or ./deploy/test.sh installs it); \
         or use --broker embedded, or --host/--port for a running broker",
    )?;
    let port = free_port()?;
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "# Written by fleetpulse bench.\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type subscribe\n\
             user root\n\
             {NO_LOSS}\n"
        ),
    )
    .with_context(|| format!("{}: cannot write", config.display()))?;
    let (mut child, log) = spawn(
        &program,
        &["-c".into(), config.display().to_string()],
        dir,
        "mosquitto",
    )?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_accepting(addr, &mut child, &log)?;
    Ok(Server { child, addr, log })
}

/// Starts VictoriaMetrics with its data in `dir`.
pub async fn victoria_metrics(dir: &Path) -> anyhow::Result<Server> {
    let program = find_binary("victoria-metrics").context(
        "victoria-metrics not found (apt-get install victoria-metrics, or ./deploy/test.sh \
         installs it); or use --store sqlite, or --store-url for a running store",
    )?;
    let port = free_port()?;
    let data = dir.join("victoria-metrics-data");
    let (mut child, log) = spawn(
        &program,
        &[
            format!("-storageDataPath={}", data.display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-retentionPeriod=100y".into(),
            "-dedup.minScrapeInterval=1ms".into(),
            "-loggerOutput=stderr".into(),
            "-loggerLevel=WARN".into(),
        ],
        dir,
        "victoria-metrics",
    )?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_accepting(addr, &mut child, &log)?;
    let health = format!("http://{addr}/health");
    let started = Instant::now();
    loop {
        if let Ok(resp) = reqwest::get(&health).await
            && resp.status().is_success()
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("VictoriaMetrics on {addr} not healthy within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Server { child, addr, log })
}

/// Waits until mosquitto's log shows `client_id` subscribed (needs
/// `log_type subscribe`), at most `patience`.
pub fn wait_subscribed(log: &Path, client_id: &str, patience: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < patience {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains(client_id) && l.contains("fleet/+/+/+/telemetry"))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
