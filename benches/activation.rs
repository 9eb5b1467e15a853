//! Criterion benchmarks of the activation family (`cargo bench --bench activation`).

mod support;

use criterion::{Criterion, criterion_group, criterion_main};

fn activation(c: &mut Criterion) {
    support::bench_family(c, "activation");
}

criterion_group!(benches, activation);
criterion_main!(benches);
