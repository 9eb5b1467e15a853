//! Checking kernels against references: runs an op's kernels on a device and compares every
//! output with the f64 reference by the rules of [`crate::ops::check_row`].
//!
//! Layer: tools. Imports core and ops.

use rand::rngs::StdRng;

use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::tensor::Tensor;
use crate::ops::check_row::{CheckRow, compare_elementwise, compare_reduction, rms_key};
use crate::ops::registry::{Direction, Op, Problem, Tensors};

/// Runs `op` in `dir` on `device` in `dtype` on a fresh random problem whose main input
/// has `shape`, with every output poisoned (NaN) first, and compares each output with the
/// f64 reference computed from the same rounded inputs.
pub fn check_op(
    op: &dyn Op,
    dir: Direction,
    dtype: DType,
    shape: &[usize],
    device: &Device,
    rng: &mut StdRng,
) -> Result<Vec<CheckRow>> {
    let problem = op.random_problem(dir, shape, rng);
    check_problem(op, dir, dtype, &problem, device, &format!("{shape:?}"))
}

/// Like [`check_op`] on a given problem (rounded to `dtype` here); `label` goes in each row.
pub fn check_problem(
    op: &dyn Op,
    dir: Direction,
    dtype: DType,
    problem: &Problem,
    device: &Device,
    label: &str,
) -> Result<Vec<CheckRow>> {
    let problem = problem.rounded(op, dir, dtype);
    let reference = op.reference(dir, &problem)?;
    let naive = op.naive_reductions(dir, &problem, dtype)?;
    let inputs = problem.tensors(op, dir, dtype, device)?;
    let outputs_spec = op.outputs(dir, &problem)?;
    let mut outputs = Tensors::new();
    for (spec, shape) in &outputs_spec {
        outputs.insert(spec.name.to_string(), Tensor::full(shape, spec.storage.dtype(dtype), f64::NAN, device)?);
    }
    op.run(dir, &inputs, &problem.params, &mut outputs)?;
    let factor = match dir {
        Direction::Fwd => 2.0,
        // The double backward sums passes like the backward's (naive_reductions sums the same
        // passes naively).
        Direction::Bwd | Direction::Bwd2 => 3.0,
    };
    let mut rows = Vec::new();
    for (spec, _) in &outputs_spec {
        let got = outputs[spec.name].to_f64_vec()?;
        let want = reference
            .get(spec.name)
            .ok_or(Error::InvalidValue { arg: "reference", reason: format!("no `{}`", spec.name) })?;
        let c = if spec.reduction {
            let naive_values = naive.get(spec.name).unwrap_or(want);
            let rms = naive.get(&rms_key(spec.name)).map(|a| a.data.as_slice());
            compare_reduction(&got, &want.data, &naive_values.data, factor, dtype, rms)
        } else {
            compare_elementwise(&got, &want.data, spec.storage.dtype(dtype))
        };
        rows.push(CheckRow {
            op: op.full_name(),
            dir: dir.name().into(),
            dtype: dtype.name().into(),
            what: format!("{} {label}", spec.name),
            max_err: c.max_err,
            tol: c.tol,
            pass: c.pass,
        });
    }
    Ok(rows)
}

/// All rows of `check_op` over `shapes`, every direction of `op`, every dtype in `dtypes`.
pub fn check_shapes(
    op: &dyn Op,
    device: &Device,
    dtypes: &[DType],
    shapes: &[Vec<usize>],
    rng: &mut StdRng,
) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for &dir in op.directions() {
        for &dtype in dtypes {
            for shape in shapes {
                rows.extend(check_op(op, dir, dtype, shape, device, rng)?);
            }
        }
    }
    Ok(rows)
}
