//! Acceptance 3: the `fleetpulse run` binary killed (SIGKILL) mid-poll,
//! twice, and restarted: the KPIs equal the ground truth, so no reading
//! was lost or counted twice. The position is written only after the WAL
//! made the readings durable; re-polled readings come back under the same
//! sequences and are refused as duplicates.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetpulse::aemp_sim::Quirks;

use super::common::*;
use super::support::service::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_poll_and_restarted_loses_and_doubles_nothing() {
    let setup = Setup::new(6);
    // Small pages: many requests, so the kills land inside a machine's
    // poll.
    let quirks = Quirks {
        page_size: 10,
        ..Quirks::default()
    };
    let Served { server, truth, .. } = setup.serve_all(quirks).await;
    let http_port = super::support::servers::free_port();
    let source = source_toml("oem", &server.url(), &setup.spec);
    let config = setup.write_config_file("crash", http_port, &source);
    let mut service = Service::new(&config, setup.dir.path().join("log"));

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
    setup.assert_customers_equal("after two kills", &truth);
}

/// The dangerous moment made certain: a position older than what the WAL
/// holds, as a crash between the WAL's acks and the position write leaves
/// it. The next start re-polls those readings, admission refuses every one
/// of them as a duplicate, and the KPIs equal the ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_behind_the_wal_repolls_duplicates_that_are_refused() {
    use fleetpulse::metrics::RejectReason;

    let setup = Setup::new(6);
    let Served {
        server,
        truth,
        points,
        ..
    } = setup.serve_all(Quirks::default()).await;
    let mut config = setup.service_config("behind");
    config.aemp = vec![source("oem", &server.url(), &setup.spec)];
    let position = setup.dir.path().join("wal").join("aemp-oem.json");
    let old = setup.dir.path().join("old-position.json");

    let mut first = super::support::in_process::spawn(config.clone(), "<first>");
    let polled = source_metrics(&first.metrics, "oem").await;
    // A copy of the position taken mid-run (it is replaced atomically, so
    // any copy is a position that was current at some moment).
    super::support::poll::wait_for("a third of the readings", || {
        polled.messages.load(Relaxed) >= points / 3 && position.exists()
    })
    .await;
    std::fs::copy(&position, &old).unwrap();
    wait_caught_up(&first.metrics, &polled, points, 0).await;
    stop(&mut first).await;
    assert_eq!(first.metrics.rejected_total(), 0);

    // As if the process had died before writing the later positions.
    std::fs::copy(&old, &position).unwrap();
    let mut second = super::support::in_process::spawn(config, "<second>");
    let polled = source_metrics(&second.metrics, "oem").await;
    let again = wait_repolled(&second.metrics, &polled).await;
    stop(&mut second).await;
    let refused = second.metrics.rejected(RejectReason::SequenceReplayed);
    println!("re-polled {again} messages, refused as duplicates {refused}");
    assert!(again > 0);
    assert_eq!(refused, again, "every re-polled message is a duplicate");
    assert_eq!(second.metrics.rejected_total(), refused);
    setup.assert_customers_equal("after a position behind the WAL", &truth);
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
