//! Criterion benchmarks of the equivariant family (`cargo bench --bench equivariant`): the
//! registry entries (spherical harmonics, Hessian assembly) in GB/s, and the fused convolution
//! of the MACE-large configuration (REFERENCE.md §5) in FLOP/s counted as OpenEquivariance
//! does (forward 3·nnz(C)·m1·m2 per path and edge plus the weight contraction; the backward
//! model is twice that, the double backward's nine times the forward's), on a random graph:
//! 100k edges on a GPU, a small one on the host.

mod support;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln::bench::median_seconds;
use kiln::equivariant::{self, Irreps, PathNormalization, TpPlan};
use kiln::{DType, Device, Tensor, build_info};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn registry_ops(c: &mut Criterion) {
    support::bench_family(c, "equivariant");
}

fn irreps(s: &str) -> Irreps {
    s.parse().expect("a valid irreps string")
}

/// A random graph of `edges` edges over `nodes` nodes, sorted by receiver.
fn graph(rng: &mut StdRng, nodes: usize, edges: usize) -> (Vec<i32>, Vec<i32>) {
    let mut pairs: Vec<(i32, i32)> =
        (0..edges).map(|_| (rng.random_range(0..nodes as i32), rng.random_range(0..nodes as i32))).collect();
    pairs.sort_by_key(|p| p.1);
    pairs.into_iter().unzip()
}

fn random(rng: &mut StdRng, shape: &[usize], device: &Device) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_f64(&v, shape, DType::F32).and_then(|t| t.to_device(device)).expect("upload")
}

fn mace_large_conv(c: &mut Criterion) {
    let plan = TpPlan::channelwise(
        &irreps("128x0e+128x1o+128x2e"),
        &irreps("0e+1o+2e+3o"),
        &irreps("128x0e+128x1o+128x2e+128x3o"),
        PathNormalization::Element,
    )
    .expect("the MACE-large plan");
    let mut devices = vec![Device::Cpu];
    if build_info::CUDA_COMPILED {
        devices.extend(Device::cuda(0).ok());
    }
    let mut rng = StdRng::seed_from_u64(rand::random());
    for device in &devices {
        let (nodes, edges) = if device.is_cuda() { (5_000, 100_000) } else { (8, 32) };
        let mut group = c.benchmark_group(format!("equivariant/conv-mace-large/{device}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        let (src, dst) = graph(&mut rng, nodes, edges);
        let src = Tensor::from_vec(src, &[edges]).and_then(|t| t.to_device(device)).expect("upload");
        let dst = Tensor::from_vec(dst, &[edges]).and_then(|t| t.to_device(device)).expect("upload");
        let x = random(&mut rng, &[nodes, plan.irreps_in1.dim()], device);
        let y = random(&mut rng, &[edges, plan.irreps_in2.dim()], device);
        let w = random(&mut rng, &[edges, plan.weight_numel], device);
        let dout = random(&mut rng, &[nodes, plan.irreps_out.dim()], device);
        let flops = edges as u64 * plan.flops_forward();
        group.throughput(Throughput::Elements(flops));
        group.bench_function(BenchmarkId::new("fwd", edges), |b| {
            b.iter_custom(|iters| {
                let s = median_seconds(device, iters as usize, || {
                    equivariant::conv(&plan, &x, &y, &w, &src, &dst).map(drop)
                })
                .expect("benchmark run");
                Duration::from_secs_f64(s * iters as f64)
            })
        });
        group.throughput(Throughput::Elements(2 * flops));
        group.bench_function(BenchmarkId::new("bwd", edges), |b| {
            b.iter_custom(|iters| {
                let s = median_seconds(device, iters as usize, || {
                    equivariant::conv_backward(&plan, (&x, &y, &w), &src, &dst, &dout).map(drop)
                })
                .expect("benchmark run");
                Duration::from_secs_f64(s * iters as f64)
            })
        });
        // The double backward with every upstream gradient (force training through the layer).
        let (gdx, gdy, gdw) = (
            random(&mut rng, &[nodes, plan.irreps_in1.dim()], device),
            random(&mut rng, &[edges, plan.irreps_in2.dim()], device),
            random(&mut rng, &[edges, plan.weight_numel], device),
        );
        let up = equivariant::UpstreamGrads { gdx1: Some(&gdx), gdx2: Some(&gdy), gdw: Some(&gdw) };
        group.throughput(Throughput::Elements(9 * flops));
        group.bench_function(BenchmarkId::new("bwd2", edges), |b| {
            b.iter_custom(|iters| {
                let s = median_seconds(device, iters as usize, || {
                    equivariant::conv_double_backward(&plan, (&x, &y, &w), &src, &dst, &dout, up).map(drop)
                })
                .expect("benchmark run");
                Duration::from_secs_f64(s * iters as f64)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, registry_ops, mace_large_conv);
criterion_main!(benches);
