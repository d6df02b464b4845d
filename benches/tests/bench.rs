//! A few-second smoke run of `fleetpulse-bench`, so the harness cannot rot:
//! the whole side-by-side run (broker ceiling with mosquitto_sub, then the
//! fleetpulse consumer in its own process) through the embedded broker and
//! through a real mosquitto the harness starts with
//! deploy/mosquitto/no-loss.conf, into SQLite, with zero loss against the
//! simulator's ground truth asserted.

use fleetpulse_benches::harness::{BenchArgs, BenchReport, BrokerKind, StoreKind, bench, table};

fn args(broker: BrokerKind) -> BenchArgs {
    BenchArgs {
        customers: 2,
        devices: 8,
        days: 2,
        broker,
        store: StoreKind::Sqlite,
        workers: 2,
        consumer_exe: Some(env!("CARGO_BIN_EXE_fleetpulse-bench").into()),
        ..BenchArgs::default()
    }
}

fn check(report: &BenchReport) {
    eprintln!("{}", table(report));
    let messages = report.capture.messages;
    assert!(messages > 100, "a capture of {messages} messages");
    let ceiling = report
        .runs
        .iter()
        .find(|r| r.contender.starts_with("mosquitto_sub"))
        .expect("the broker ceiling ran");
    assert!(ceiling.speed.messages_per_sec > 0.0);
    let fp = report.fleetpulse().expect("fleetpulse ran");
    assert_eq!(fp.counts.lost_messages, Some(0), "no message lost");
    assert_eq!(fp.counts.lost_samples, Some(0), "no sample lost");
    assert_eq!(fp.counts.duplicates, 0);
    assert!(fp.counts.records_emitted > 0);
    assert_eq!(
        fp.counts.records_written, fp.counts.records_emitted,
        "every record stored"
    );
    assert!(
        fp.speed.messages_per_sec > 0.0 && fp.speed.samples_per_sec > fp.speed.messages_per_sec
    );
    assert!(fp.cost.cpu_seconds.is_some_and(|c| c > 0.0));
    assert!(fp.cost.peak_rss_bytes.is_some_and(|b| b > 1 << 20));
    let input = fp.input_latency.expect("publish -> engine latency");
    assert_eq!(input.count, messages, "every message stamped at both ends");
    assert!(input.p50_ms <= input.p99_ms && input.p99_ms <= input.max_ms);
    let store = fp.store_latency.expect("window close -> store latency");
    assert_eq!(store.count, fp.counts.records_written);
    assert_eq!(report.ratios.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_end_to_end_without_loss() {
    let report = bench(args(BrokerKind::Embedded)).await.expect("bench runs");
    assert!(report.broker.contains("embedded"));
    check(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_end_to_end_without_loss() {
    let report = bench(args(BrokerKind::Mosquitto))
        .await
        .expect("bench runs");
    assert!(report.broker.contains("mosquitto"));
    let fp = report.fleetpulse().expect("fleetpulse ran");
    assert!(
        fp.cost.broker_cpu_seconds.is_some(),
        "the harness's own broker"
    );
    check(&report);
}
