//! Loading the customers file (parse, check every customer, build the
//! contract book), as the service does at start and on every reload, at
//! 1,000 and 10,000 customers: the time should grow with the file, not with
//! its square (a line count per contract event once made 20,000 customers
//! take ten minutes).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fleetpulse::customers::CustomersFile;

/// The shipped file's first customer (contract events, outcomes,
/// milestones), `n` times under other ids.
fn file_of(n: usize) -> String {
    let shipped = include_str!("../../deploy/config/customers.toml");
    let first = shipped.split("[[customer]]\n").nth(1).expect("a customer");
    let id = first.lines().next().expect("its id line");
    (0..n)
        .map(|i| {
            format!(
                "[[customer]]\n{}",
                first.replacen(id, &format!("id = \"c{i:05}\""), 1)
            )
        })
        .collect()
}

fn customers_file(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("customers_file");
    group.sample_size(10);
    for n in [1_000, 10_000] {
        let path = dir.path().join(format!("customers-{n}.toml"));
        std::fs::write(&path, file_of(n)).expect("write the file");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("load", n), &path, |b, path| {
            b.iter(|| {
                let file = CustomersFile::load(path).expect("a valid file");
                assert_eq!(file.customers.len(), n);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, customers_file);
criterion_main!(benches);
