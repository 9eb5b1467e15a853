//! The success criterion of "Measuring Arithmetic Extrapolation Performance" (Madsen &
//! Johansen): a run of the arithmetic task is solved when its extrapolation MSE, at the step
//! with the best interpolation error, is below the MSE of the exact solution with every weight
//! perturbed by ε = 1e-5. This module computes that threshold in closed form.
//!
//! The task: x ∈ ℝⁿ with entries iid U[lo, hi] (the extrapolation range; the paper's [2, 6]);
//! a = Σ_{A} x and b = Σ_{B} x over two overlapping subsets; the target a + b, a − b or a·b.
//! The perturbed solution's first layer has 1 − ε on the subsets and ε elsewhere, so each sum
//! moves by ε·D with D = Σ_{not A} x − Σ_{A} x, and its error is a linear (add, sub) or quadratic
//! (mul) form in x. For iid entries of mean μ, variance σ², third central moment κ₃ and fourth
//! m₄, a linear form cᵀx has E[(cᵀx)²] = σ²‖c‖² + μ²(Σc)², and a quadratic form xᵀMx (M
//! symmetric, x = μ1 + y) has
//!   E[(xᵀMx)²] = E[(yᵀMy)²] + 4μ²σ²‖M1‖² + c² + 4μκ₃·Σ_i M_ii (M1)_i + 2c·σ² tr M,
//!   E[(yᵀMy)²] = (m₄ − 3σ⁴)·Σ_i M_ii² + σ⁴(tr(M)² + 2 tr(M²)),   c = μ²·1ᵀM1.
//!
//! The published thresholds come from the authors' R script, a Monte Carlo over 10⁶ draws
//! whose inclusive ranges make subsets of ⌊ratio·n⌋ + 1 = 26 elements overlapping in 13
//! ([`Subsets::published`]: add 1.4785e-5, sub 1.3867e-8, mul 0.16002); the data generator's
//! half-open ranges make 25 and 12 ([`Subsets::data`]: add 1.6039e-5, sub 1.3867e-8, mul
//! 0.16056). Both are here; the tests hold the closed form to a Monte Carlo of its own.
//!
//! Layer: families. Imports core.

use crate::core::error::{Error, Result};

/// The target of the arithmetic task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// a + b.
    Add,
    /// a − b.
    Sub,
    /// a · b.
    Mul,
}

/// Where the two subsets lie in the input: A = [0, size), B = [size − overlap, 2·size − overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subsets {
    /// The input size n.
    pub input_size: usize,
    /// Elements in each subset.
    pub size: usize,
    /// Elements the two share.
    pub overlap: usize,
}

impl Subsets {
    /// The subsets of the authors' R script for `subset_ratio` and `overlap_ratio` (inclusive
    /// ranges: ⌊ratio·n⌋ + 1 elements, overlapping in ⌊overlap·⌊ratio·n⌋⌋ + 1); the paper's
    /// published thresholds use these.
    pub fn published(input_size: usize, subset_ratio: f64, overlap_ratio: f64) -> Subsets {
        let size = (subset_ratio * input_size as f64).floor() as usize;
        let overlap = (overlap_ratio * size as f64).floor() as usize;
        Subsets { input_size, size: size + 1, overlap: overlap + 1 }
    }

    /// The subsets of the task's data generator (half-open ranges: ⌊ratio·n⌋ elements,
    /// overlapping in ⌊overlap·⌊ratio·n⌋⌋).
    pub fn data(input_size: usize, subset_ratio: f64, overlap_ratio: f64) -> Subsets {
        let size = (subset_ratio * input_size as f64).floor() as usize;
        let overlap = (overlap_ratio * size as f64).floor() as usize;
        Subsets { input_size, size, overlap }
    }

    /// Indicators of A and B over the input.
    fn indicators(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        let Subsets { input_size: n, size, overlap } = *self;
        if overlap > size || 2 * size - overlap > n {
            return Err(Error::InvalidValue {
                arg: "subsets",
                reason: format!("two subsets of {size} overlapping in {overlap} do not fit in {n} inputs"),
            });
        }
        let a = (0..n).map(|i| f64::from(u8::from(i < size))).collect();
        let b = (0..n).map(|i| f64::from(u8::from(i >= size - overlap && i < 2 * size - overlap))).collect();
        Ok((a, b))
    }
}

/// The moments of U[lo, hi]: mean, variance, third and fourth central moments.
fn uniform_moments(lo: f64, hi: f64) -> (f64, f64, f64, f64) {
    let w = hi - lo;
    ((lo + hi) / 2.0, w * w / 12.0, 0.0, w.powi(4) / 80.0)
}

/// The MSE of the ε-perturbed exact solution of `op` on inputs iid U[lo, hi] (the success
/// threshold; the papers: ε = 1e-5, U[2, 6], n = 100, subset ratio 0.25, overlap ratio 0.5).
pub fn maep_threshold(op: Operation, subsets: Subsets, (lo, hi): (f64, f64), eps: f64) -> Result<f64> {
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        return Err(Error::InvalidValue { arg: "range", reason: format!("[{lo}, {hi}]: a finite range") });
    }
    let (a, b) = subsets.indicators()?;
    let (mu, s2, k3, m4) = uniform_moments(lo, hi);
    // D = Σ_{not A} x − Σ_{A} x: the shift of a sum, per unit of ε.
    let d = |ind: &[f64]| -> Vec<f64> { ind.iter().map(|&v| 1.0 - 2.0 * v).collect() };
    let (d1, d2) = (d(&a), d(&b));
    let linear = |c: Vec<f64>| {
        let (sum, sq): (f64, f64) = (c.iter().sum(), c.iter().map(|v| v * v).sum());
        eps * eps * (s2 * sq + mu * mu * sum * sum)
    };
    match op {
        Operation::Add => Ok(linear(d1.iter().zip(&d2).map(|(x, y)| x + y).collect())),
        Operation::Sub => Ok(linear(d1.iter().zip(&d2).map(|(x, y)| x - y).collect())),
        Operation::Mul => {
            // (a + εD1)(b + εD2) − ab = ε·xᵀMx, M the symmetric part of a·d2ᵀ + b·d1ᵀ + ε·d1·d2ᵀ.
            let n = a.len();
            let at = |i: usize, j: usize| a[i] * d2[j] + b[i] * d1[j] + eps * d1[i] * d2[j];
            let m: Vec<f64> = (0..n * n).map(|t| 0.5 * (at(t / n, t % n) + at(t % n, t / n))).collect();
            let m1: Vec<f64> = (0..n).map(|i| m[i * n..(i + 1) * n].iter().sum()).collect();
            let diag: Vec<f64> = (0..n).map(|i| m[i * n + i]).collect();
            let trace: f64 = diag.iter().sum();
            let trace_sq: f64 = m.iter().map(|v| v * v).sum(); // tr(M²) = ‖M‖²_F for symmetric M
            let c = mu * mu * m1.iter().sum::<f64>();
            let centered = (m4 - 3.0 * s2 * s2) * diag.iter().map(|v| v * v).sum::<f64>()
                + s2 * s2 * (trace * trace + 2.0 * trace_sq);
            let second = centered
                + 4.0 * mu * mu * s2 * m1.iter().map(|v| v * v).sum::<f64>()
                + c * c
                + 4.0 * mu * k3 * diag.iter().zip(&m1).map(|(x, y)| x * y).sum::<f64>()
                + 2.0 * c * s2 * trace;
            Ok(eps * eps * second)
        }
    }
}
