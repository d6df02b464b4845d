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
