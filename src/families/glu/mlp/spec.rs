//! What the GLU MLP block computes: its weights ([`Mlp`], [`GateUp`]), inference or training
//! ([`Mode`]), what it returns and saves, its gradients, and the rules its operands obey.
//!
//! Layer: families. Imports core and the GLU's API; the block's API (mod.rs) and its device
//! path (gemm.rs) import it.

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};
use crate::families::glu::spec::{Glu, GluInput};

/// The gate and up projections: two `[F, d]` weights, or one packed `[2F, d]` with the
/// gate rows first.
#[derive(Clone, Copy, Debug)]
pub enum GateUp<'a> {
    /// W_g and W_u `[F, d]`, biases `[F]`.
    Separate {
        /// Gate weight.
        w_gate: &'a Tensor,
        /// Up (value) weight.
        w_up: &'a Tensor,
        /// Gate bias.
        b_gate: Option<&'a Tensor>,
        /// Up bias.
        b_up: Option<&'a Tensor>,
    },
    /// `[2F, d]`: rows 0..F gate, F..2F up; bias `[2F]` likewise.
    Packed {
        /// Packed weight.
        w: &'a Tensor,
        /// Packed bias.
        b: Option<&'a Tensor>,
    },
}

/// The block's parameters.
#[derive(Clone, Copy, Debug)]
pub struct Mlp<'a> {
    /// The gate (and α, order for the x-gates).
    pub glu: Glu,
    /// Gate and up projections.
    pub gate_up: GateUp<'a>,
    /// Down projection `[d, F]`.
    pub w_down: &'a Tensor,
    /// Down bias `[d]`.
    pub b_down: Option<&'a Tensor>,
}

/// Training saves what backward needs; inference saves nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Keep the pre-activations for [`backward`].
    Training,
    /// Keep nothing.
    Inference,
}

/// What a training forward keeps: the pre-activations `h = [x·W_gᵀ + b_g | x·W_uᵀ + b_u]`,
/// `[T, 2F]` (gate half first). The gate output is recomputed in backward (one elementwise
/// pass) rather than stored (T·F elements).
#[derive(Debug)]
pub struct Saved {
    /// `[T, 2F]` pre-activations.
    pub h: Tensor,
}

/// What [`forward`] returns.
#[derive(Debug)]
pub struct MlpOutput {
    /// `[T, d]`.
    pub y: Tensor,
    /// Present in training mode.
    pub saved: Option<Saved>,
}

/// Gradients of the gate/up projections, in the layout they came in.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made once per backward; boxing would only add a hop
pub enum GateUpGrads {
    /// dW_g, dW_u `[F, d]`; db_g, db_u `[F]` when the biases were given.
    Separate {
        /// dL/dW_g.
        dw_gate: Tensor,
        /// dL/dW_u.
        dw_up: Tensor,
        /// dL/db_g.
        db_gate: Option<Tensor>,
        /// dL/db_u.
        db_up: Option<Tensor>,
    },
    /// dW `[2F, d]`, db `[2F]`.
    Packed {
        /// dL/dW.
        dw: Tensor,
        /// dL/db.
        db: Option<Tensor>,
    },
}

/// What [`backward`] returns.
#[derive(Debug)]
pub struct MlpGrads {
    /// `[T, d]`.
    pub dx: Tensor,
    /// Gate and up projections.
    pub gate_up: GateUpGrads,
    /// `[d, F]`.
    pub dw_down: Tensor,
    /// `[d]` when b_down was given.
    pub db_down: Option<Tensor>,
    /// f32 `[1]` for the x-gates.
    pub dalpha: Option<Tensor>,
}

/// (T, d, F): tokens, model width, hidden width.
pub(crate) struct Dims {
    pub(crate) t: usize,
    pub(crate) d: usize,
    pub(crate) f: usize,
}

impl Mlp<'_> {
    pub(super) fn validate(&self, x: &Tensor) -> Result<Dims> {
        check(&x.device(), &[Arg::new("x", x).float()])?;
        // Rank and nonzero widths are rules on dimensions' values, kept as code; they give d
        // and F, which the declarations below need.
        if x.shape().len() != 2 || x.shape()[1] == 0 {
            return Err(Error::Shape { arg: "x", expected: "[T, d] with d ≥ 1".into(), got: x.shape().to_vec() });
        }
        let (t, d) = (x.shape()[0], x.shape()[1]);
        let f = match self.w_down.shape() {
            [dd, f] if *dd == d && *f > 0 => *f,
            s => {
                return Err(Error::Shape {
                    arg: "w_down", expected: format!("[{d}, F] with F ≥ 1"), got: s.to_vec()
                });
            }
        };
        // Every parameter on x's device, in x's dtype. w_down's shape was checked as F was read.
        let param = |arg, t| Arg::new(arg, t).dtype_of("x", x);
        let mut args = vec![param("w_down", self.w_down)];
        match self.gate_up {
            GateUp::Separate { w_gate, w_up, b_gate, b_up } => {
                args.push(param("w_gate", w_gate).shape(vec![f, d]));
                args.push(param("w_up", w_up).shape(vec![f, d]));
                args.extend(b_gate.map(|b| param("b_gate", b).shape(vec![f])));
                args.extend(b_up.map(|b| param("b_up", b).shape(vec![f])));
            }
            GateUp::Packed { w, b } => {
                args.push(param("w_gate_up", w).shape(vec![2 * f, d]));
                args.extend(b.map(|b| param("b_gate_up", b).shape(vec![2 * f])));
            }
        }
        args.extend(self.b_down.map(|b| param("b_down", b).shape(vec![d])));
        check(&x.device(), &args)?;
        // The gate's own checks (α, order) run on a one-element probe.
        crate::families::glu::forward(&self.glu, GluInput::Separate { a: &probe()?, b: &probe()? })?;
        Ok(Dims { t, d, f })
    }
}

pub(super) fn probe() -> Result<Tensor> {
    Tensor::from_f32(&[0.0], &[1], DType::F32)
}
