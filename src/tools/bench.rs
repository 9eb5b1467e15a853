//! Timing ops for `kiln bench` and the criterion benches: CUDA events after a warm-up,
//! median of many runs (GPU); wall clock (CPU, and the emulator, which runs synchronously).
//! Results are GB/s against the bytes model and, beside them, the device-to-device copy
//! bandwidth measured in the same run. What is timed is always one of the op's fixed, named
//! [`BenchCase`]s (its problem built from [`crate::ops::registry::BENCH_SEED`]), never a
//! random problem, so every figure names a problem another run can time again.

use std::time::Instant;

use cudarc::driver::sys::CUevent_flags;

use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::emu::EmuBuffer;
use crate::core::error::Result;
use crate::core::tensor::Tensor;
use crate::ops::params::Params;
use crate::ops::registry::{BenchCase, Direction, Op, Problem, Tensors};

/// Runs before timing starts, to reach steady clocks and warm caches of code, not data.
const WARMUP_RUNS: usize = 5;

/// One timed configuration.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// `<family>/<op>`.
    pub op: String,
    /// `fwd` or `bwd`.
    pub dir: String,
    /// Storage dtype.
    pub dtype: DType,
    /// The bench case's label: its shape and options (`16384x4096`,
    /// `B8xS2048xH16xD128 causal alibi`).
    pub case: String,
    /// The bench case's main-input shape.
    pub shape: Vec<usize>,
    /// `""`, or `no-dparam` for a backward timed without its parameter reduction.
    pub variant: String,
    /// Median time of one run, in microseconds.
    pub median_us: f64,
    /// Bytes model / median time.
    pub gbps: f64,
    /// FLOP model / median time, in TFLOP/s.
    pub tflops: f64,
}

/// Median seconds of `runs` calls of `f` on `device` (CUDA events on the device's stream).
///
/// On a GPU every call is queued between its own pair of events and the stream is synchronised
/// once, after the last: the host prepares call i + 1 (validation, output allocation, launch)
/// while the GPU runs call i, as in a framework's step. Synchronising after each call instead
/// (kiln up to 175276e) started every timed interval on an idle GPU, so each one also held the
/// host's preparation of its call. A call that synchronises by design (the synchronising
/// `unpad`) still pays for its own wait, as its users do.
pub fn median_seconds(device: &Device, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..WARMUP_RUNS {
        f()?;
    }
    device.synchronize()?;
    let runs = runs.max(1);
    let mut times = Vec::with_capacity(runs);
    match device {
        Device::Cpu | Device::Emu(_) => {
            for _ in 0..runs {
                let t = Instant::now();
                f()?;
                times.push(t.elapsed().as_secs_f64());
            }
        }
        Device::Cuda(d) => {
            let s = d.stream();
            let mut events = Vec::with_capacity(runs);
            for _ in 0..runs {
                let start = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
                f()?;
                events.push((start, s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?));
            }
            s.synchronize()?;
            for (start, end) in &events {
                times.push(start.elapsed_ms(end)? as f64 * 1e-3);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Copy bandwidth (read + write bytes per second) of `bytes` on `device`: the ceiling of
/// every memory-bound kernel. On a GPU a device-to-device copy; on the CPU a memcpy; on the
/// emulator a copy between two emulated buffers (its memcpy, which also marks the bytes written).
pub fn copy_bandwidth(device: &Device, bytes: usize, runs: usize) -> Result<f64> {
    let n = bytes / 4;
    let seconds = match device {
        Device::Cpu => {
            let src = vec![1.0f32; n];
            let mut dst = vec![0.0f32; n];
            median_seconds(device, runs, || {
                dst.copy_from_slice(std::hint::black_box(&src));
                std::hint::black_box(&mut dst);
                Ok(())
            })?
        }
        Device::Cuda(d) => {
            let s = d.stream();
            let src = s.alloc_zeros::<f32>(n)?;
            let mut dst = s.alloc_zeros::<f32>(n)?;
            median_seconds(device, runs, || Ok(s.memcpy_dtod(&src, &mut dst)?))?
        }
        Device::Emu(_) => {
            let src = EmuBuffer::zeroed(n * 4)?;
            let mut dst = EmuBuffer::zeroed(n * 4)?;
            median_seconds(device, runs, || dst.copy_from(&src))?
        }
    };
    Ok(2.0 * (n * 4) as f64 / seconds / 1e9)
}

/// An op with its inputs uploaded and outputs allocated, ready to be run repeatedly.
pub struct Prepared<'a> {
    op: &'a dyn Op,
    dir: Direction,
    /// The problem's params, which [`Prepared::set_param`] may change between runs.
    params: Params,
    inputs: Tensors,
    outputs: Tensors,
}

impl<'a> Prepared<'a> {
    /// Uploads `problem`'s inputs to `device` in `dtype` (rounding them) and allocates the
    /// outputs; without `with_reductions` the reduction outputs (dα, dslope, dθ) are left out.
    pub fn new(
        op: &'a dyn Op,
        dir: Direction,
        dtype: DType,
        problem: &'a Problem,
        device: &Device,
        with_reductions: bool,
    ) -> Result<Prepared<'a>> {
        let mut inputs = problem.tensors(op, dir, dtype, device)?;
        op.prepare(dir, &mut inputs, &problem.params)?;
        let mut outputs = Tensors::new();
        for (spec, shape) in op.outputs(dir, problem)? {
            if with_reductions || !spec.reduction {
                outputs.insert(spec.name.to_string(), Tensor::zeros(&shape, spec.storage.dtype(dtype), device)?);
            }
        }
        Ok(Prepared { op, dir, params: problem.params.clone(), inputs, outputs })
    }

    /// Sets param `name` for the following runs (the inputs stay uploaded): the sweep's tile
    /// variant, say.
    pub fn set_param(&mut self, name: &str, value: f64) {
        self.params.insert(name.to_string(), value);
    }

    /// One run of the op (queued on the device's stream).
    pub fn run(&mut self) -> Result<()> {
        self.op.run(self.dir, &self.inputs, &self.params, &mut self.outputs)
    }
}

/// Times `op` in `dir` and `dtype` on `problem`, the problem of `case` in `dir` (inputs are
/// rounded on upload): the median of `runs`. With `with_reductions == false`, reduction
/// outputs are not requested.
#[allow(clippy::too_many_arguments)] // each is one axis of a bench row
pub fn time_op(
    op: &dyn Op,
    dir: Direction,
    dtype: DType,
    case: &BenchCase,
    problem: &Problem,
    device: &Device,
    runs: usize,
    with_reductions: bool,
) -> Result<BenchRow> {
    let mut prepared = Prepared::new(op, dir, dtype, problem, device, with_reductions)?;
    let seconds = median_seconds(device, runs, || prepared.run())?;
    Ok(BenchRow {
        op: op.full_name(),
        dir: dir.name().into(),
        dtype,
        case: case.label.clone(),
        shape: case.shape.clone(),
        variant: if with_reductions { String::new() } else { "no-dparam".into() },
        median_us: seconds * 1e6,
        gbps: op.bytes(dir, problem, dtype) as f64 / seconds / 1e9,
        tflops: op.flops(dir, problem) as f64 / seconds / 1e12,
    })
}
