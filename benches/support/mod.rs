//! Shared criterion driver: every op of a family from the registry, forward and
//! backward, on the CPU reference (always) and the CUDA kernels (when a device exists),
//! with Throughput::Bytes from the op's bytes model.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use kiln::bench::{Prepared, median_seconds};
use kiln::registry::{Direction, select};
use kiln::{DType, Device, build_info};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Benchmarks every op whose name starts with `family/`.
pub fn bench_family(c: &mut Criterion, family: &str) {
    let mut devices = vec![Device::Cpu];
    if build_info::CUDA_COMPILED {
        devices.extend(Device::cuda(0).ok());
    }
    let mut rng = StdRng::seed_from_u64(rand::random());
    for device in &devices {
        let mut group = c.benchmark_group(format!("{family}/{device}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        for op in select(&[format!("{family}/")]) {
            let shape = if device.is_cuda() { op.bench_shape_gpu() } else { op.bench_shape_cpu() };
            let dtypes: &[DType] = if device.is_cuda() { op.dtypes() } else { &[DType::F32] };
            for dir in Direction::BOTH {
                let problem = op.random_problem(dir, &shape, &mut rng);
                for &dtype in dtypes {
                    group.throughput(Throughput::Bytes(op.bytes(dir, &problem, dtype)));
                    let id = BenchmarkId::new(format!("{}/{dir}", op.name()), dtype);
                    let mut prepared =
                        Prepared::new(op.as_ref(), dir, dtype, &problem, device, true).expect("inputs upload");
                    // Each sample times `iters` runs with the clock kiln bench uses (CUDA
                    // events on a GPU), reported as their median times `iters`.
                    group.bench_function(id, |b| {
                        b.iter_custom(|iters| {
                            let s = median_seconds(device, iters as usize, || prepared.run()).expect("benchmark run");
                            Duration::from_secs_f64(s * iters as f64)
                        })
                    });
                }
            }
        }
        group.finish();
    }
}
