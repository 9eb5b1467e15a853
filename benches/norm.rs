//! Criterion benchmarks of the norm family (`cargo bench --bench norm`).

mod support;

use criterion::{Criterion, criterion_group, criterion_main};

fn norm(c: &mut Criterion) {
    support::bench_family(c, "norm");
}

criterion_group!(benches, norm);
criterion_main!(benches);
