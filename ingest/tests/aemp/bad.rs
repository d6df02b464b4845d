//! Acceptance 4: bad answers (malformed documents, paging that never ends,
//! a body over 10 MB, running totals going backwards, readings dated in the
//! future) are counted per reason, and the good source beside them polls
//! its machines to KPIs equal to the ground truth.

use fleetpulse::aemp_sim::{AempFleet, BadAnswer, Quirks, Selection};
use fleetpulse::customers::CustomersFile;
use fleetpulse::source::aemp::AempEquipment;
use fleetpulse::source::aemp::metrics::AempError;
use fleetpulse_sim::{Fleet, FleetSpec};

use super::common::*;
use super::support::in_process;

/// The customer the bad sources' machines are mapped to, apart from the
/// fleet whose KPIs are compared.
const BAD_CUSTOMER: &str = "zz-bad-oem";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_counted_and_never_stop_the_other_sources() {
    let setup = Setup::new(6);
    let served = AempFleet::new(&setup.fleet, Selection::default(), false);
    let truth = served.ground_truth();
    let points = served.points() as u64;
    let mut equipment: Vec<AempEquipment> = served.equipment(Some("good"));
    let good = serve(served, Quirks::default()).await;

    // A small fleet of its own behind each bad server.
    let bad_fleet = Fleet::generate(&FleetSpec {
        customers: 1,
        devices: 2,
        days: 1,
        seed: 99,
        ..FleetSpec::default()
    });
    let modes = [
        ("malformed", BadAnswer::Malformed, AempError::Malformed),
        (
            "endless",
            BadAnswer::EndlessPaging,
            AempError::EndlessPaging,
        ),
        ("huge", BadAnswer::Huge, AempError::TooLarge),
        (
            "backwards",
            BadAnswer::Backwards,
            AempError::CounterBackwards,
        ),
        ("future", BadAnswer::Future, AempError::FutureDatetime),
    ];
    let mut servers = Vec::new();
    for (name, bad, _) in modes {
        let served = AempFleet::new(&bad_fleet, Selection::default(), false);
        for mut e in served.equipment(Some(name)) {
            e.customer = BAD_CUSTOMER.into();
            e.device = format!("{name}-{}", e.device);
            equipment.push(e);
        }
        let quirks = Quirks {
            bad: Some(bad),
            ..Quirks::default()
        };
        servers.push(serve(served, quirks).await);
    }
    let mut file: CustomersFile = fleetpulse::sim::customers_file(&setup.fleet);
    let mut bad_customer = file.customers[0].clone();
    bad_customer.id = BAD_CUSTOMER.into();
    bad_customer.name = "Bad OEM answers".into();
    file.customers.push(bad_customer);
    file.aemp_equipment = equipment;
    std::fs::write(setup.customers(), file.to_toml()).unwrap();

    let mut config = setup.service_config("bad");
    config.aemp = vec![source("good", &good.url(), &setup.spec)];
    for ((name, _, _), server) in modes.iter().zip(&servers) {
        let mut source = source(name, &server.url(), &setup.spec);
        source.max_pages = 20;
        // Whatever goes wrong is tried again next poll, not retried now.
        source.attempts = 1;
        config.aemp.push(source);
    }
    let mut service = in_process::spawn(config, "<aemp bad answers>");
    let good_metrics = source_metrics(&service.metrics, "good").await;
    wait_caught_up(&service.metrics, &good_metrics, points, 0).await;
    // Every bad source met its bad answer, at least twice: it keeps polling.
    for (name, _, reason) in modes {
        let metrics = source_metrics(&service.metrics, name).await;
        super::support::poll::wait_for(&format!("{name}: {}", reason.as_str()), || {
            metrics.errors(reason) >= 2
        })
        .await;
        println!("{name}: {:?}", metrics.status());
    }
    assert!(
        !service.task.is_finished(),
        "the service stopped on bad answers"
    );
    let text = service.metrics.aemp.render();
    for (name, _, reason) in modes {
        assert!(
            text.contains(&format!(
                "fleetpulse_aemp_errors_total{{source=\"{name}\",reason=\"{}\"}}",
                reason.as_str()
            )),
            "{text}"
        );
    }
    stop(&mut service).await;
    assert!(
        good_metrics.status().errors.is_empty(),
        "{:?}",
        good_metrics.status()
    );

    let store: Table = sqlite_customer_table(&sqlite_path(setup.dir.path()))
        .into_iter()
        .filter(|((customer, _), _)| customer != BAD_CUSTOMER)
        .collect();
    assert_table_equal("beside bad answers", &store, &truth_table(&truth.rows()));
}
