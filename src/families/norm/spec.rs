//! What a norm op computes: the norm and its parameters ([`Norm`]), its kind, what it returns
//! (outputs, statistics, gradients) and the rules its arguments obey.
//!
//! Layer: families. Imports core; the API (mod.rs), the reference and the launch code import it.

use crate::core::dtype::DType;
use crate::core::error::{Error, Result, ensure};
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};

/// The largest hidden size the kernels take.
pub const MAX_DIM: usize = 65536;

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// (s − mean)/sqrt(var + eps).
    LayerNorm,
    /// s/sqrt(mean(s²) + eps).
    RmsNorm,
}

/// A normalisation and its parameters.
#[derive(Clone, Copy, Debug)]
pub struct Norm<'a> {
    /// LayerNorm or RMSNorm.
    pub kind: NormKind,
    /// Added to the variance (or mean square); finite and > 0.
    pub eps: f32,
    /// Scale γ, f32 `[dim]` (1 when `None`).
    pub gamma: Option<&'a Tensor>,
    /// Shift β, f32 `[dim]` (0 when `None`).
    pub beta: Option<&'a Tensor>,
}

/// Row statistics the forward saves for the backward (f32, `[rows]`).
#[derive(Debug)]
pub struct Stats {
    /// Row means (LayerNorm only).
    pub mean: Option<Tensor>,
    /// Reciprocal standard deviations (or root mean squares).
    pub rstd: Tensor,
}

/// What [`forward`] returns.
#[derive(Debug)]
pub struct NormOutput {
    /// The normalised output, shape and dtype of x.
    pub y: Tensor,
    /// x + residual rounded to x's dtype, when asked for.
    pub residual_out: Option<Tensor>,
    /// Statistics for [`backward`].
    pub stats: Stats,
}

/// What [`backward`] returns.
#[derive(Debug)]
pub struct NormGrads {
    /// dL/dx.
    pub dx: Tensor,
    /// dL/dresidual (equal to dx), when the forward had a residual.
    pub dresidual: Option<Tensor>,
    /// dL/dγ, f32 `[dim]`, when γ was given.
    pub dgamma: Option<Tensor>,
    /// dL/dβ, f32 `[dim]`, when β was given.
    pub dbeta: Option<Tensor>,
}

impl Norm<'_> {
    /// Every rule of a norm call, checked before anything runs: x a float tensor whose hidden
    /// size the kernels take, ε > 0, γ and β f32 `[dim]`, then the call's other tensors as
    /// `others(rows)` declares them. Returns (rows, dim).
    pub(super) fn validate<'t>(
        &self,
        x: &'t Tensor,
        others: impl FnOnce(usize) -> Vec<Arg<'t>>,
    ) -> Result<(usize, usize)>
    where
        Self: 't,
    {
        let device = x.device();
        check(&device, &[Arg::new("x", x).float()])?;
        let dim = x.shape().last().copied().unwrap_or(0);
        if !(1..=MAX_DIM).contains(&dim) {
            return Err(Error::Shape {
                arg: "x",
                expected: format!("[…, dim] with 1 ≤ dim ≤ {MAX_DIM}"),
                got: x.shape().to_vec(),
            });
        }
        ensure(self.eps.is_finite() && self.eps > 0.0, "eps", || format!("must be > 0, got {}", self.eps))?;
        let rows = x.len() / dim;
        let affine = [("gamma", self.gamma), ("beta", self.beta)];
        let mut args: Vec<Arg> = affine
            .into_iter()
            .filter_map(|(name, t)| t.map(|t| Arg::new(name, t).dtype(DType::F32).shape(vec![dim])))
            .collect();
        args.extend(others(rows));
        check(&device, &args)?;
        Ok((rows, dim))
    }
}

/// The statistics [`backward`](super::backward) reads, borrowed (the registry keeps them among its inputs).
#[derive(Clone, Copy)]
pub(crate) struct StatsRef<'a> {
    pub(crate) mean: Option<&'a Tensor>,
    pub(crate) rstd: &'a Tensor,
}
