//! A hostile tester's answers: a meter that reads 99,999 once (or
//! `1e308`), a maintenance page answered 200, a `next` link that only
//! changes a query the vendor ignores. Each is counted, and the KPIs of
//! the machines behind it still equal the ground truth.

use std::sync::atomic::Ordering::Relaxed;

use fleetpulse::aemp_sim::{BadAnswer, MAINTENANCE, Quirks};
use fleetpulse::source::aemp::config::Format;
use fleetpulse::source::aemp::metrics::AempError;

use super::common::*;
use super::support::in_process;

/// Machines served.
const MACHINES: usize = 6;

/// A spike in an hour meter is refused as a jump, `1e308` as malformed,
/// and the machine's hours go on from the last good reading: before, the
/// spike became the last value and every true reading after it was
/// refused as going backwards, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_spike_is_refused_and_counting_goes_on() {
    let setup = Setup::new(MACHINES);
    let served = setup
        .serve_all(Quirks {
            bad: Some(BadAnswer::Spike),
            ..Quirks::default()
        })
        .await;
    let mut config = setup.service_config("spike");
    let mut oem = source("oem", &served.server.url(), &setup.spec);
    // Each bad reading counted once: without the vendor-delay overlap, no
    // poll asks for one a second time (the figures are the same with it).
    oem.vendor_delay = std::time::Duration::ZERO;
    config.aemp = vec![oem];
    let mut service = in_process::spawn(config, "<aemp spike>");
    let polled = source_metrics(&service.metrics, "oem").await;
    wait_caught_up(&service.metrics, &polled, served.points, 0).await;
    stop(&mut service).await;
    let status = polled.status();
    println!("{status:?}");
    let spiked = served.server.stats.spiked.load(Relaxed);
    assert!(spiked > 0);
    assert_eq!(polled.errors(AempError::CounterJump), spiked);
    assert_eq!(polled.errors(AempError::Malformed), spiked);
    assert_eq!(polled.errors(AempError::CounterBackwards), 0);

    setup.assert_customers_equal("spike customers", &served.truth);
    assert_table_equal(
        "spike devices",
        &device_table(&sqlite_path(setup.dir.path())),
        &device_truth_table(&served.devices),
    );
}

/// A 200 answer that is a maintenance page (XHTML, or a JSON error
/// object), for series and fleet pages alike, is `malformed` and asked
/// again next poll: before, it was "no data", the machine's position moved
/// past the time range, and that history was never fetched.
async fn a_maintenance_page_is_malformed_and_asked_again(format: Format) {
    let setup = Setup::new(MACHINES);
    let served = setup
        .serve_all(Quirks {
            bad: Some(BadAnswer::Maintenance),
            ..Quirks::default()
        })
        .await;
    let mut config = setup.service_config("maintenance");
    let mut source = source("oem", &served.server.url(), &setup.spec);
    source.format = format;
    config.aemp = vec![source];
    let mut service = in_process::spawn(config, "<aemp maintenance>");
    let polled = source_metrics(&service.metrics, "oem").await;
    wait_caught_up(&service.metrics, &polled, served.points, 0).await;
    stop(&mut service).await;
    let status = polled.status();
    println!("{format:?}: {status:?}");
    let pages = served.server.stats.maintenance.load(Relaxed);
    assert_eq!(pages, MAINTENANCE.count() as u64);
    assert_eq!(status.errors, [("malformed", pages)].into_iter().collect());

    setup.assert_customers_equal("maintenance customers", &served.truth);
    assert_table_equal(
        "maintenance devices",
        &device_table(&sqlite_path(setup.dir.path())),
        &device_truth_table(&served.devices),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xhtml_maintenance_page_is_malformed_and_asked_again() {
    a_maintenance_page_is_malformed_and_asked_again(Format::Xml).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_error_object_is_malformed_and_asked_again() {
    a_maintenance_page_is_malformed_and_asked_again(Format::Json).await;
}

/// `Fleet/1` linking on to `Fleet/1?again=n`, the same page each time, is
/// endless paging at its second page: before, it took `max_pages` (1000)
/// requests of the vendor in every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_that_only_changes_an_ignored_query_is_a_loop() {
    let setup = Setup::new(MACHINES);
    let served = setup
        .serve_all(Quirks {
            bad: Some(BadAnswer::QueryLoop),
            ..Quirks::default()
        })
        .await;
    let mut config = setup.service_config("query-loop");
    config.aemp = vec![source("oem", &served.server.url(), &setup.spec)];
    let mut service = in_process::spawn(config, "<aemp query loop>");
    let polled = source_metrics(&service.metrics, "oem").await;
    super::support::poll::wait_for("endless_paging twice", || {
        polled.errors(AempError::EndlessPaging) >= 2
    })
    .await;
    stop(&mut service).await;
    let loops = polled.errors(AempError::EndlessPaging);
    let requests = served.server.stats.requests.load(Relaxed);
    println!(
        "{loops} loops in {requests} requests: {:?}",
        polled.status()
    );
    // Two pages a poll, and a poll stopped after its first page.
    assert!(requests <= 2 * loops + 1, "{requests} requests");
    assert!(!polled.caught_up.load(Relaxed));
}

/// Fleet pages that link on under another origin (the same server as
/// `localhost`): the link is not followed, so neither the source's
/// credentials nor a request reach that origin, and each poll says why.
/// Before, every page of it was fetched with the source's credentials and
/// its machines merged in as the vendor's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_to_another_origin_is_not_followed() {
    let setup = Setup::new(MACHINES);
    let served = setup
        .serve_all(Quirks {
            bad: Some(BadAnswer::Elsewhere),
            page_size: 2,
            ..Quirks::default()
        })
        .await;
    let mut config = setup.service_config("elsewhere");
    config.aemp = vec![source("oem", &served.server.url(), &setup.spec)];
    let mut service = in_process::spawn(config, "<aemp elsewhere>");
    let polled = source_metrics(&service.metrics, "oem").await;
    super::support::poll::wait_for("malformed twice", || {
        polled.errors(AempError::Malformed) >= 2
    })
    .await;
    stop(&mut service).await;
    println!("{:?}", polled.status());
    assert_eq!(served.server.stats.elsewhere.load(Relaxed), 0);
    assert_eq!(
        polled.status().messages,
        0,
        "nothing of a broken chain is taken"
    );
}

/// Every request redirected to another origin (the same server as
/// `localhost`): not followed, nothing reaches that origin and nothing is
/// taken. Before, the redirect was followed (without the credentials) and
/// every KPI came from the other host's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_is_not_followed() {
    let setup = Setup::new(MACHINES);
    let served = setup
        .serve_all(Quirks {
            bad: Some(BadAnswer::RedirectElsewhere),
            ..Quirks::default()
        })
        .await;
    let mut config = setup.service_config("redirect");
    config.aemp = vec![source("oem", &served.server.url(), &setup.spec)];
    let mut service = in_process::spawn(config, "<aemp redirect>");
    let polled = source_metrics(&service.metrics, "oem").await;
    super::support::poll::wait_for("two polls", || polled.polls.load(Relaxed) >= 2).await;
    stop(&mut service).await;
    println!("{:?}", polled.status());
    assert_eq!(served.server.stats.elsewhere.load(Relaxed), 0);
    assert!(served.server.stats.requests.load(Relaxed) >= 2);
    assert_eq!(polled.status().messages, 0);
}

/// A machine with more readings in one time range than `max_readings` is
/// `too_large` as soon as that many are held, and that range is not
/// delivered (the simulation's first, partial day may fit): an endless
/// chain of big pages no longer grows memory up to `max_pages` of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_held_for_one_time_range_are_bounded() {
    let setup = Setup::new(MACHINES);
    let served = setup.serve_all(Quirks::default()).await;
    let mut config = setup.service_config("max-readings");
    let mut source = source("oem", &served.server.url(), &setup.spec);
    // A day of the simulation is 144 readings of each element.
    source.max_readings = 100;
    config.aemp = vec![source];
    let mut service = in_process::spawn(config, "<aemp max readings>");
    let polled = source_metrics(&service.metrics, "oem").await;
    super::support::poll::wait_for("too_large for every machine", || {
        polled.errors(AempError::TooLarge) >= MACHINES as u64
    })
    .await;
    stop(&mut service).await;
    let status = polled.status();
    println!("{status:?}");
    assert!(status.messages < served.points, "{status:?}");
}
