//! Restart from a device snapshot at 10k, 100k and 1M devices: every
//! device's memory written beside the WAL as the service writes it, then
//! read back, checked, decoded and handed to the engine's workers.
//!
//! `cargo bench -p fleetpulse-benches --bench restore [-- 10000 100000 1000000]`
//!
//! Per size it prints the file's bytes per device, the time to write it
//! (encode, fsync, rename, promote) and the time from reading the file to an
//! engine whose 2 workers hold every device (read, CRC, decode, start,
//! take). For the largest size it then times a whole restart: the
//! `fleetpulse` binary beside this one (`cargo build --release` first)
//! started with that snapshot in its WAL directory, an empty WAL, SQLite
//! and the embedded broker, until `/readyz` answers 200.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetpulse::delivery::devices;
use fleetpulse_engine::{
    DeviceBatch, DeviceBoard, DeviceMemory, DeviceSnapshot, Engine, EngineConfig, EngineOptions,
    Id, MeterFaults, Sample,
};
use tokio::sync::mpsc;

const WORKERS: usize = 2;

/// `n` devices of 100 customers, each remembering one batch of two readings.
fn memories(n: usize) -> DeviceSnapshot {
    let customers: Vec<Id> = (0..100)
        .map(|c| format!("customer-{c:03}").into())
        .collect();
    let devices = (0..n)
        .map(|i| {
            let customer = customers[i % customers.len()].clone();
            let device: Id = format!("dev-{i:07}").into();
            let sample = |at, hours| Sample {
                at,
                operating_hours: hours,
                idle_hours: hours / 5.0,
                fuel_litres: hours * 11.0,
                ..Sample::default()
            };
            let at = 1_767_571_200_000 + (i as u64 % 600) * 1_000;
            let batch = DeviceBatch {
                customer: customer.clone(),
                site: "site".into(),
                device: device.clone(),
                unit_epoch: 1_767_484_800,
                sequence: 40 + i as u64 % 7,
                samples: vec![
                    sample(at, 1_000.0 + i as f64),
                    sample(at + 600_000, 1_000.2),
                ],
            };
            let mut memory = DeviceMemory::default();
            let (mut gaps, mut faults, mut usage) = (0, MeterFaults::default(), Vec::new());
            memory
                .apply(batch, &mut gaps, &mut faults, &mut usage)
                .expect("a new batch");
            ((customer, device), memory)
        })
        .collect();
    DeviceSnapshot {
        at: 1_767_574_800_000,
        newest: 1_767_574_800_000,
        devices,
    }
}

fn main() {
    let sizes = fleetpulse_benches::sizes_from_args(&[10_000, 100_000, 1_000_000]);
    println!("| devices | file, bytes/device | write | read to engine ready ({WORKERS} workers) |");
    println!("|---:|---:|---:|---:|");
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for n in sizes {
        let dir = std::env::temp_dir().join(format!(
            "fleetpulse-restore-bench-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let snapshot = memories(n);
        let newest = snapshot.newest;
        let started = Instant::now();
        devices::store_pending(&dir, &snapshot).expect("write the snapshot");
        devices::promote(&dir, newest).expect("promote it");
        let write = started.elapsed();
        drop(snapshot);
        let bytes = std::fs::metadata(devices::path(&dir))
            .expect("the file")
            .len();

        let started = Instant::now();
        let loaded = devices::load(&dir).expect("readable").expect("present");
        let config = EngineConfig {
            devices: Arc::new(DeviceBoard::restoring(loaded)),
            ..EngineConfig::default()
        };
        let (events, mut received) = mpsc::channel(64);
        let drain = std::thread::spawn(move || while received.blocking_recv().is_some() {});
        let options = EngineOptions {
            workers: WORKERS,
            ..EngineOptions::default()
        };
        let engine = Engine::start(config, &options, events).expect("engine starts");
        let stats = engine.stats();
        while stats.snapshot().devices < n as i64 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let ready = started.elapsed();
        engine.finish().expect("engine stops");
        drain.join().expect("drained");
        let whole = (n == largest).then(|| whole_restart(&dir));
        std::fs::remove_dir_all(&dir).expect("clean up");
        println!(
            "| {n} | {:.0} | {:.2} s | {:.2} s |",
            bytes as f64 / n as f64,
            write.as_secs_f64(),
            ready.as_secs_f64()
        );
        match whole {
            Some(Ok(took)) => println!(
                "\nwhole restart of `fleetpulse run` with {n} devices in its snapshot, start to /readyz 200: {:.2} s",
                took.as_secs_f64()
            ),
            Some(Err(why)) => println!("\nwhole restart not measured: {why}"),
            None => {}
        }
    }
}

/// Starts the `fleetpulse` binary with the snapshot in `dir` as its WAL
/// directory's and times it to ready.
fn whole_restart(dir: &std::path::Path) -> Result<Duration, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let binary = (exe.parent().and_then(|deps| deps.parent()))
        .map(|release| release.join("fleetpulse"))
        .filter(|b| b.exists())
        .ok_or("no target/release/fleetpulse beside this bench: run `cargo build --release`")?;
    let wal = dir.join("wal");
    std::fs::create_dir_all(&wal).map_err(|e| e.to_string())?;
    std::fs::rename(devices::path(dir), devices::path(&wal)).map_err(|e| e.to_string())?;
    let broker = fleetpulse::broker::start(0).map_err(|e| e.to_string())?;
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let config = format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"restore-bench\"\n\n\
         [engine]\nworkers = {WORKERS}\n\n[http]\nenabled = true\nlisten = \"{http}\"\n\n\
         [wal]\ndir = \"wal\"\n\n[[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n",
        broker.addr.port()
    );
    let config_path = dir.join("fleetpulse.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = std::process::Command::new(binary)
        .args(["run", "--config"])
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("service.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| e.to_string())?;
    let ready = loop {
        if ready(http) {
            break Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
            break Err(format!("the service exited ({status}): {log}"));
        }
        if started.elapsed() > Duration::from_secs(120) {
            break Err("not ready within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
    if ready.is_ok() && !log.contains("device memories restored") {
        return Err(format!("ready, but no device memories restored: {log}"));
    }
    ready
}

/// Whether `/readyz` at `addr` answers 200.
fn ready(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}
