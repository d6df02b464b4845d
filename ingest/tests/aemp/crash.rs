//! Acceptance 3: the `fleetpulse run` binary killed (SIGKILL) mid-poll,
//! twice, and restarted: the KPIs equal the ground truth, so no reading
//! was lost or counted twice. The position is written only after the WAL
//! made the readings durable; re-polled readings come back under the same
//! sequences and are refused as duplicates.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetpulse::aemp_sim::{self, AempFleet, Quirks, Selection};
use fleetpulse_sim::Fleet;

use super::common::*;
use super::support::service::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_poll_and_restarted_loses_and_doubles_nothing() {
    let broker = fleetpulse::broker::start(0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(6);
    let fleet = Fleet::generate(&spec);
    let served = AempFleet::new(&fleet, Selection::default(), false);
    let truth = served.ground_truth();
    let customers = dir.path().join("customers.toml");
    write_customers(&fleet, served.equipment(None), &customers);
    // Small pages: many requests, so the kills land inside a machine's
    // poll.
    let quirks = Quirks {
        page_size: 10,
        ..Quirks::default()
    };
    let server = aemp_sim::start(SocketAddr::from(([127, 0, 0, 1], 0)), served, quirks)
        .await
        .unwrap();
    let http_port = super::support::servers::free_port();
    let source = source_toml("oem", &server.url(), &spec);
    let config = write_config_file(dir.path(), broker.addr, &spec, "crash", http_port, &source);
    let mut service = Service::new(&config, dir.path().join("log"));

    for kill_after in [60u64, 150] {
        service.start_and_wait("AEMP source polling");
        let before = server.stats.requests.load(Relaxed);
        super::support::poll::until(
            "requests to the AEMP server",
            Duration::from_secs(60),
            Duration::from_millis(5),
            || server.stats.requests.load(Relaxed) >= before + kill_after,
        );
        service.kill();
        println!(
            "killed after {} requests",
            server.stats.requests.load(Relaxed) - before
        );
    }
    service.start_and_wait("AEMP source polling");
    let status = wait_status_caught_up(http_port, 0).await;
    service.stop();
    println!("after the restart: {}", status["aemp"][0]);
    assert_equal(
        "after two kills",
        &customer_table(&sqlite_path(dir.path())),
        &truth_table(&truth.rows()),
    );
}
