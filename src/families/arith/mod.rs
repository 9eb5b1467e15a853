//! Neural arithmetic units (Madsen & Johansen, "Neural Arithmetic Units", ICLR 2020, and
//! "Measuring Arithmetic Extrapolation Performance"; conventions of their code, stable-nalu):
//! the NAU (addition and subtraction: z = x·W_cᵀ, W_c = clamp(W, −1, 1)), the NMU
//! (multiplication: z_bo = Π_i (W_c,oi·x_bi + 1 − W_c,oi), W_c = clamp(W, ε, 1)), their sparsity
//! and out-of-bounds regularisers with the λ schedule, the NALU (Trask et al. 2018, as
//! stable-nalu implements it), and the papers' success criterion ([`maep`]).
//!
//! Weights are `[O, I]` (row o holds output o's weights, torch's `Linear` layout), inputs
//! `[B, I]`, outputs `[B, O]`, all row-major. This layer holds the f64 references ([`cpu`]);
//! the kernels and the registry entries are issue 26's next steps.
//!
//! ```
//! use kiln::arith::cpu;
//!
//! // An NMU with one output multiplying both inputs: z = x0·x1.
//! let z = cpu::nmu_forward(&[3.0, 4.0], &[1.0, 1.0], 1, 2, 1, 0.0)?;
//! assert_eq!(z, vec![12.0]);
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! Layer: families. Imports core.

pub mod cpu;
pub mod maep;

pub use maep::{Operation, Subsets, maep_threshold};

use crate::core::error::{Error, Result};

/// The regularisers' shape: `Linear` is the paper's (|·| and relu(·)), `Squared` the code's
/// class default (squares and relu(·)²).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegShape {
    /// R_sparse = mean(min(|W|, |1 − |W||)) (NAU) and R_oob = mean(relu(|W| − 1)).
    Linear,
    /// R_sparse = mean(W²(1 − |W|)²) (NAU) and R_oob = mean(relu(|W| − 1)²).
    Squared,
}

impl RegShape {
    /// `linear` or `squared` (the registry's string parameter).
    pub fn parse(s: &str) -> Result<RegShape> {
        match s {
            "linear" => Ok(RegShape::Linear),
            "squared" => Ok(RegShape::Squared),
            _ => Err(Error::InvalidValue { arg: "shape", reason: format!("{s:?}: expected linear or squared") }),
        }
    }
}

/// The regulariser's weight at step `t`: λ̂·clamp((t − start)/(end − start), 0, 1) (the papers'
/// schedule; NAU λ̂ = 0.01 over steps 5e3 → 5e4, NMU λ̂ = 10 over 1e6 → 2e6). A schedule
/// with `end <= start` is a step at `start`.
pub fn lambda_schedule(lambda_hat: f64, start: f64, end: f64, t: f64) -> f64 {
    if end <= start {
        return if t >= start { lambda_hat } else { 0.0 };
    }
    lambda_hat * ((t - start) / (end - start)).clamp(0.0, 1.0)
}
