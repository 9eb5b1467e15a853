//! Shared criterion driver: every op of a family from the registry, forward and
//! backward, on the CPU reference (always) and the CUDA kernels (when a device exists),
//! with throughput from the op's bytes model (or its FLOP model, for compute-bound ops), on the
//! op's fixed, named bench cases (`Op::bench_cases`, seeded with `BENCH_SEED`), as `kiln bench`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use kiln::bench::{Prepared, median_seconds};
use kiln::registry::{Direction, Op, Problem, select};
use kiln::{DType, Device, build_info};

/// Benchmarks every op whose name starts with `family/`, with throughput in bytes (GB/s).
#[allow(dead_code)] // each bench binary uses one of the two
pub fn bench_family(c: &mut Criterion, family: &str) {
    bench_with(c, family, |op, dir, problem, dtype| Throughput::Bytes(op.bytes(dir, problem, dtype)));
}

/// Benchmarks every op whose name starts with `family/`, with throughput in FLOPs from the op's
/// model (criterion's "elem/s" read as FLOP/s: Telem/s is TFLOP/s), for compute-bound ops.
#[allow(dead_code)] // each bench binary uses one of the two
pub fn bench_family_flops(c: &mut Criterion, family: &str) {
    bench_with(c, family, |op, dir, problem, _| Throughput::Elements(op.flops(dir, problem)));
}

fn bench_with(c: &mut Criterion, family: &str, throughput: impl Fn(&dyn Op, Direction, &Problem, DType) -> Throughput) {
    let mut devices = vec![Device::Cpu];
    if build_info::CUDA_COMPILED {
        devices.extend(Device::cuda(0).ok());
    }
    for device in &devices {
        let mut group = c.benchmark_group(format!("{family}/{device}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        for op in select(&[format!("{family}/")]) {
            // The reference in one dtype: f32 where the op takes it.
            let dtypes: &[DType] = if device.is_cuda() {
                op.dtypes()
            } else if op.dtypes().contains(&DType::F32) {
                &[DType::F32]
            } else {
                &op.dtypes()[..1]
            };
            for case in op.bench_cases(device.is_cuda()) {
                for &dir in op.directions() {
                    let problem = case.problem(dir);
                    for &dtype in dtypes {
                        group.throughput(throughput(op.as_ref(), dir, &problem, dtype));
                        let id = BenchmarkId::new(format!("{}/{dir}/{}", op.name(), case.label), dtype);
                        let mut prepared =
                            Prepared::new(op.as_ref(), dir, dtype, &problem, device, true).expect("inputs upload");
                        // Each sample times `iters` runs with the clock kiln bench uses (CUDA
                        // events on a GPU), reported as their median times `iters`.
                        group.bench_function(id, |b| {
                            b.iter_custom(|iters| {
                                let s =
                                    median_seconds(device, iters as usize, || prepared.run()).expect("benchmark run");
                                Duration::from_secs_f64(s * iters as f64)
                            })
                        });
                    }
                }
            }
        }
        group.finish();
    }
}
