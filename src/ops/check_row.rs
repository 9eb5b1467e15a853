//! What a check reports, and the comparison rules it applies.
//!
//! Elementwise outputs must satisfy |got − ref| ≤ atol + rtol·|ref| at every element
//! (DESIGN.md rule 3; NaN never passes where the reference is finite). Where the reference
//! is NaN or infinite (NaN or ±inf inputs), the result must be NaN or the same infinity.
//! Reductions must be within k× the error of the same reduction done naively in the kernel's
//! compute type (f32; f64 for f64 storage) (k = 2 forward, 3 backward), plus a floor.
//!
//! Layer: ops. Imports core only; the registry's types and every entry import it.

use crate::core::dtype::DType;

/// One line of a check report.
#[derive(Clone, Debug)]
pub struct CheckRow {
    /// `<family>/<op>`.
    pub op: String,
    /// `fwd`, `bwd`, or `ref` for checks of the reference itself.
    pub dir: String,
    /// The storage dtype, or `f64` for reference checks.
    pub dtype: String,
    /// What was compared (`y [4097]`, `finite differences dx`, `alpha=0 equals gelu`).
    pub what: String,
    /// Largest absolute error.
    pub max_err: f64,
    /// The tolerance at the element that came closest to failing.
    pub tol: f64,
    /// Whether every element passed.
    pub pass: bool,
}

/// The verdict of comparing two arrays elementwise.
#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    /// Largest |got − ref|.
    pub max_err: f64,
    /// Tolerance at the worst element (largest error / tolerance ratio).
    pub tol: f64,
    /// Every element within tolerance (NaN and infinities exactly where the reference has
    /// them), lengths equal.
    pub pass: bool,
}

/// Compares `got` with `reference` elementwise with tolerance `tol(i)`.
pub fn compare_with(got: &[f64], reference: &[f64], tol: impl Fn(usize) -> f64) -> Comparison {
    let mut c = Comparison { max_err: 0.0, tol: tol(0), pass: got.len() == reference.len() };
    let mut worst = -1.0;
    for (i, (&g, &r)) in got.iter().zip(reference).enumerate() {
        let t = tol(i);
        // Non-finite references are matched exactly, never through a tolerance (which an
        // infinite reference would make infinite): NaN passes only where the reference says
        // NaN, an infinity only where it has the same one. A NaN or infinite result against a
        // finite reference fails below (its error is NaN or infinite, the tolerance finite).
        let (err, ok) = if r.is_nan() {
            if g.is_nan() { (0.0, true) } else { (f64::NAN, false) }
        } else if r.is_infinite() {
            if g == r { (0.0, true) } else { (f64::NAN, false) }
        } else {
            let err = (g - r).abs();
            (err, err <= t)
        };
        c.pass &= ok;
        let ratio = if ok { err / t } else { f64::INFINITY };
        if err > c.max_err || err.is_nan() {
            c.max_err = if err.is_nan() { f64::NAN } else { err };
        }
        if ratio > worst {
            worst = ratio;
            c.tol = t;
        }
    }
    c
}

/// DESIGN.md's elementwise rule for an output stored in `dtype`.
pub fn compare_elementwise(got: &[f64], reference: &[f64], dtype: DType) -> Comparison {
    let (rtol, atol) = dtype.tolerance();
    compare_with(got, reference, |i| atol + rtol * reference.get(i).map_or(0.0, |r| r.abs()))
}

/// The reduction rule: error ≤ `factor` × the naive low-precision computation's largest
/// error, plus a floor: a few roundings of the result's scale in the compute type (f32; f64
/// for f64 storage, so an f64 check still fails at any f32 step), and, where the op gives
/// the root sum of squares of the reduced terms (`rms`), four roundings in the run's dtype
/// of that (the standard deviation of independently rounded terms; on small problems the
/// naive error alone can cancel by chance, and a missing or doubled block of terms still
/// shows far above it).
pub fn compare_reduction(
    got: &[f64],
    reference: &[f64],
    naive: &[f64],
    factor: f64,
    dtype: DType,
    rms: Option<&[f64]>,
) -> Comparison {
    // Over the finite reference values only: a NaN or infinite one is matched exactly by
    // compare_with and must not widen (or NaN) the tolerance of the others.
    let naive_err = naive
        .iter()
        .zip(reference)
        .filter(|(n, r)| n.is_finite() && r.is_finite())
        .map(|(n, r)| (n - r).abs())
        .fold(0.0, f64::max);
    let scale = reference.iter().filter(|r| r.is_finite()).fold(0.0f64, |m, r| m.max(r.abs()));
    let floor = 16.0 * dtype.compute_roundoff() * scale + reduction_abs_floor(dtype);
    let spread = |i: usize| rms.and_then(|r| r.get(i)).map_or(0.0, |r| 4.0 * dtype.unit_roundoff() * r);
    compare_with(got, reference, |i| factor * naive_err + floor + spread(i))
}

/// The absolute part of the reduction floor: 1e-6 (f32 math: results near zero from
/// cancelling terms of size ~1), or f64's atol for f64 (the same cancellation at 2^-53).
fn reduction_abs_floor(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => DType::F64.tolerance().1,
        _ => 1e-6,
    }
}

/// The key under which [`Op::naive_reductions`] gives the root sum of squares of the terms
/// of reduction output `name`.
pub fn rms_key(name: &str) -> String {
    format!("{name}|rms")
}

/// Central finite differences of a scalar function.
pub fn central_difference(f: impl Fn(f64) -> f64, x: f64, h: f64) -> f64 {
    (f(x + h) - f(x - h)) / (2.0 * h)
}
