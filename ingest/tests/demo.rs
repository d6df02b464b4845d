//! The README's first command, `fleetpulse demo`, as a user runs it: the real
//! binary, embedded broker, simulated fleet, SQLite store. The table is
//! printed and the store holds a daily KPI row for every customer and every
//! simulated day.

use std::process::Command;

use fleetpulse::sinks::sqlite::SqliteStore;
use fleetpulse_sim::{Fleet, FleetSpec};

#[test]
fn demo_prints_the_table_and_stores_every_customer_day() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args([
            "demo",
            "--customers",
            "6",
            "--devices",
            "36",
            "--days",
            "5",
            "--exit",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    println!("{stdout}");

    let fleet = Fleet::generate(&FleetSpec {
        customers: 6,
        devices: 36,
        days: 5,
        ..FleetSpec::default()
    });
    for customer in fleet.customers() {
        assert!(
            stdout.contains(&customer.id),
            "{} missing from the table",
            customer.id
        );
    }
    assert!(stdout.contains("KPI store:"), "{stdout}");

    let store = SqliteStore::open(data.join("kpi.sqlite")).unwrap();
    let daily = store.customer_kpis("1d").unwrap();
    for customer in fleet.customers() {
        let days = daily.iter().filter(|k| *k.customer == *customer.id).count();
        assert_eq!(days, 5, "{}: daily rows", customer.id);
    }
    let hourly = store.customer_kpis("1h").unwrap();
    assert!(hourly.len() >= 6 * 5 * 20, "hourly rows: {}", hourly.len());
    assert!(data.join("ground-truth.csv").exists());
    assert!(data.join("customers.toml").exists());
}

/// The README's first command run twice at once on one data directory (a
/// second terminal, a script started again): the second used to delete the
/// store of the first, which still served its dashboard from it. It now
/// exits non-zero naming the directory and the first one's PID, and the
/// first one's store is untouched; once the first has stopped, a demo runs
/// there again.
#[test]
fn a_second_demo_on_one_data_directory_refuses_and_leaves_the_first_alone() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = |exit: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fleetpulse"));
        command.args(["demo", "--customers", "2", "--devices", "6", "--days", "3"]);
        command.arg("--data-dir").arg(&data);
        if exit {
            command.arg("--exit");
        }
        command
    };
    let mut first = demo(false)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Serving once it printed the dashboard's address.
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().starts_with("Serving the dashboard")),
        "the first demo did not serve"
    );
    let store = data.join("kpi.sqlite");
    let rows = || {
        SqliteStore::open(&store)
            .unwrap()
            .customer_kpis("1d")
            .unwrap()
            .len()
    };
    let (inode, before) = (
        std::os::unix::fs::MetadataExt::ino(&store.metadata().unwrap()),
        rows(),
    );
    assert_eq!(before, 2 * 3);

    let second = demo(true).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    let said = format!(
        "{}: in use by another `fleetpulse demo` (PID {})",
        data.display(),
        first.id()
    );
    assert!(stderr.contains(&said), "{stderr}");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&store.metadata().unwrap()),
        inode
    );
    assert_eq!(rows(), before);

    first.kill().unwrap();
    first.wait().unwrap();
    let again = demo(true).output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
