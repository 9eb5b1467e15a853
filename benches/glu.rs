//! Criterion benchmarks of the glu family (`cargo bench --bench glu`).

mod support;

use criterion::{Criterion, criterion_group, criterion_main};

fn glu(c: &mut Criterion) {
    support::bench_family(c, "glu");
}

criterion_group!(benches, glu);
criterion_main!(benches);
