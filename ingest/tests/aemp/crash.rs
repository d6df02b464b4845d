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

/// The dangerous moment made certain: a position older than what the WAL
/// holds, as a crash between the WAL's acks and the position write leaves
/// it. The next start re-polls those readings, admission refuses every one
/// of them as a duplicate, and the KPIs equal the ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_behind_the_wal_repolls_duplicates_that_are_refused() {
    use fleetpulse::metrics::RejectReason;

    let broker = fleetpulse::broker::start(0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(6);
    let fleet = Fleet::generate(&spec);
    let served = AempFleet::new(&fleet, Selection::default(), false);
    let truth = served.ground_truth();
    let points = served.points() as u64;
    let customers = dir.path().join("customers.toml");
    write_customers(&fleet, served.equipment(None), &customers);
    let server = aemp_sim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        served,
        Quirks::default(),
    )
    .await
    .unwrap();
    let mut config = service_config(dir.path(), broker.addr, &customers, &spec, "behind");
    config.aemp = vec![source("oem", &server.url(), &spec)];
    let position = dir.path().join("wal").join("aemp-oem.json");
    let old = dir.path().join("old-position.json");

    let first = super::support::in_process::spawn(config.clone(), "<first>");
    let polled = source_metrics(&first.metrics, "oem").await;
    // A copy of the position taken mid-run (it is replaced atomically, so
    // any copy is a position that was current at some moment).
    super::support::poll::wait_for("a third of the readings", || {
        polled.messages.load(Relaxed) >= points / 3 && position.exists()
    })
    .await;
    std::fs::copy(&position, &old).unwrap();
    wait_caught_up(&first.metrics, &polled, points, 0).await;
    first.shutdown.cancel();
    first.task.await.unwrap().unwrap();
    assert_eq!(first.metrics.rejected_total(), 0);

    // As if the process had died before writing the later positions.
    std::fs::copy(&old, &position).unwrap();
    let second = super::support::in_process::spawn(config, "<second>");
    let polled = source_metrics(&second.metrics, "oem").await;
    let again = wait_repolled(&second.metrics, &polled).await;
    second.shutdown.cancel();
    second.task.await.unwrap().unwrap();
    let refused = second.metrics.rejected(RejectReason::SequenceReplayed);
    println!("re-polled {again} messages, refused as duplicates {refused}");
    assert!(again > 0);
    assert_eq!(refused, again, "every re-polled message is a duplicate");
    assert_eq!(second.metrics.rejected_total(), refused);
    assert_equal(
        "after a position behind the WAL",
        &customer_table(&sqlite_path(dir.path())),
        &truth_table(&truth.rows()),
    );
}

/// Waits until the source is caught up again and everything it handed over
/// was handled; returns the messages it handed over.
async fn wait_repolled(
    metrics: &fleetpulse::metrics::IngestMetrics,
    polled: &fleetpulse::source::aemp::metrics::SourceMetrics,
) -> u64 {
    let started = std::time::Instant::now();
    loop {
        let sent = polled.messages.load(Relaxed);
        if polled.caught_up.load(Relaxed)
            && polled.polls.load(Relaxed) > 0
            && metrics.handled() >= sent
        {
            return sent;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            polled.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
