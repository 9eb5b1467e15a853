//! Criterion benchmarks of the attention family (`cargo bench --bench attention`): TFLOP/s by
//! REFERENCE §4's count (criterion's Telem/s; the backward counts 2.5× the forward's FLOPs,
//! flash-attn's convention), forward and backward, at the H100 shape on a GPU.

mod support;

use criterion::{Criterion, criterion_group, criterion_main};

fn attention(c: &mut Criterion) {
    support::bench_family_flops(c, "attention");
}

criterion_group!(benches, attention);
criterion_main!(benches);
