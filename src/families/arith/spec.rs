//! The arith family's types: the regularisers' shape and what the NAU's and NMU's kernels take
//! and give.
//!
//! Layer: families. Imports core.

use crate::core::error::{Error, Result};
use crate::core::tensor::Tensor;

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

/// What the NMU forward saves for its backward: per output, the product of the terms that are
/// not exactly zero (`prod`, f32) and how many are (`zeros`, i32), both `[B, O]`. With them the
/// backward needs neither a `[B, I, O]` buffer nor a division by a zero term.
#[derive(Debug)]
pub struct NmuSaved {
    /// Product of the nonzero terms, `[B, O]` f32.
    pub prod: Tensor,
    /// Count of the zero terms, `[B, O]` i32.
    pub zeros: Tensor,
}

impl NmuSaved {
    /// Borrowed, as [`nmu_backward`] takes it.
    pub fn as_ref(&self) -> NmuSavedRef<'_> {
        NmuSavedRef { prod: &self.prod, zeros: &self.zeros }
    }
}

/// [`NmuSaved`] borrowed: the tensors may come from elsewhere (a caller that keeps them in its
/// own buffers).
#[derive(Clone, Copy, Debug)]
pub struct NmuSavedRef<'a> {
    /// Product of the nonzero terms, `[B, O]` f32.
    pub prod: &'a Tensor,
    /// Count of the zero terms, `[B, O]` i32.
    pub zeros: &'a Tensor,
}

/// The NMU forward's result.
#[derive(Debug)]
pub struct NmuOutput {
    /// z `[B, O]`, x's dtype.
    pub z: Tensor,
    /// What the backward needs (when asked for).
    pub saved: Option<NmuSaved>,
}

/// Gradients of an arithmetic unit: dx `[B, I]` and dW `[O, I]`, x's dtype.
#[derive(Debug)]
pub struct UnitGradients {
    /// ∂L/∂x.
    pub dx: Tensor,
    /// ∂L/∂W (0 where the clamp cut the weight).
    pub dw: Tensor,
}

/// Which unit's regularisers: the NAU's ranges are about {−1, 0, 1}, the NMU's {0, 1}.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// R_sparse on min(|W|, |1 − |W||) or W²(1 − |W|)²; R_oob on |W| − 1.
    Nau,
    /// R_sparse on min(|W|, |1 − W|) or W²(1 − W)²; R_oob on |W − ½| − ½.
    Nmu,
}

impl Unit {
    /// The C ABI's unit.
    #[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
    pub(crate) fn to_ffi(self) -> crate::bindings::ffi::kiln_arith_unit {
        use crate::bindings::ffi::kiln_arith_unit as U;
        match self {
            Unit::Nau => U::KILN_ARITH_NAU,
            Unit::Nmu => U::KILN_ARITH_NMU,
        }
    }
}

impl RegShape {
    /// The C ABI's shape.
    #[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
    pub(crate) fn to_ffi(self) -> crate::bindings::ffi::kiln_arith_reg_shape {
        use crate::bindings::ffi::kiln_arith_reg_shape as S;
        match self {
            RegShape::Linear => S::KILN_ARITH_REG_LINEAR,
            RegShape::Squared => S::KILN_ARITH_REG_SQUARED,
        }
    }
}

/// The regularisers on a device: each one f32 in a `[1]` tensor.
#[derive(Debug)]
pub struct RegOutput {
    /// R_sparse.
    pub sparse: Tensor,
    /// R_oob.
    pub oob: Tensor,
    /// max min(|W|, |1 − |W||).
    pub sparsity_error: Tensor,
}

/// The NAU forward's result.
#[derive(Debug)]
pub struct NauOutput {
    /// z `[B, O]`, x's dtype.
    pub z: Tensor,
    /// The NAU's regularisers, computed in the forward's pass over W (when asked for).
    pub reg: Option<RegOutput>,
}

/// The upstream gradients of the regularisers, for a backward that adds their gradient to dW
/// in the same pass: `[1]` f32 tensors on the weights' device (a framework's autograd holds
/// them there; no host sync).
#[derive(Clone, Copy, Debug)]
pub struct RegGradients<'a> {
    /// The regularisers' shape.
    pub shape: RegShape,
    /// ∂L/∂R_sparse, `[1]` f32 (λ times the loss's weight, in a training step).
    pub dsparse: &'a Tensor,
    /// ∂L/∂R_oob, `[1]` f32.
    pub doob: &'a Tensor,
}

/// The NALU's parameters, x's dtype and device: the NAC weight's factors Ŵ and M̂ (`[O, I]`,
/// W = tanh(Ŵ)·σ(M̂), shared by the additive and the multiplicative path), the gate G `[O, I]`
/// and its bias `[O]`.
#[derive(Clone, Copy, Debug)]
pub struct NaluWeights<'a> {
    /// Ŵ.
    pub w_hat: &'a Tensor,
    /// M̂.
    pub m_hat: &'a Tensor,
    /// G.
    pub g: &'a Tensor,
    /// The gate's bias b.
    pub bias: &'a Tensor,
}

/// The NALU's gradients, shaped and typed as its inputs.
#[derive(Debug)]
pub struct NaluGradients {
    /// ∂L/∂x `[B, I]`.
    pub dx: Tensor,
    /// ∂L/∂Ŵ `[O, I]`.
    pub dw_hat: Tensor,
    /// ∂L/∂M̂ `[O, I]`.
    pub dm_hat: Tensor,
    /// ∂L/∂G `[O, I]`.
    pub dg: Tensor,
    /// ∂L/∂b `[O]`.
    pub dbias: Tensor,
}
