//! Criterion benchmarks of the padding family (`cargo bench --bench padding`).

mod support;

use criterion::{Criterion, criterion_group, criterion_main};

fn padding(c: &mut Criterion) {
    support::bench_family(c, "padding");
}

criterion_group!(benches, padding);
criterion_main!(benches);
