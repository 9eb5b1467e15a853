//! Criterion benchmarks of the equivariant family's registry entries: spherical harmonics and
//! the Hessian assembly (`cargo bench --bench equivariant`).

mod support;

use criterion::{Criterion, criterion_group, criterion_main};

fn equivariant(c: &mut Criterion) {
    support::bench_family(c, "equivariant");
}

criterion_group!(benches, equivariant);
criterion_main!(benches);
