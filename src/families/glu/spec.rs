//! What a GLU op computes: the gate ([`GluKind`]) and its α ([`Glu`]), the operands
//! (separate or packed, read-only or overwritten), the gradients, and a call's layout with the
//! rules its operands obey.
//!
//! Layer: families. Imports core and the activation family's scalar rules; the API (mod.rs),
//! the reference and the launch code import it.

use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result, ensure};
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};

/// The gate h of y = h(a)·b.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GluKind {
    /// σ(a).
    Glu,
    /// a.
    Bilinear,
    /// relu(a).
    Reglu,
    /// a·Φ(a) (exact GELU).
    Geglu,
    /// The tanh GELU of a.
    GegluTanh,
    /// a·σ(a).
    Swiglu,
    /// atan(a)/π + ½, order 2 by default (a·g(a)).
    Atglu,
    /// (1+2α)(atan(a)/π + ½) − α, order 1 by default.
    XAtglu,
    /// (1+2α)Φ(a) − α, order 1 by default.
    XGeglu,
    /// (1+2α)σ(a) − α, order 1 by default.
    XSwiglu,
}

impl GluKind {
    /// Every GLU op, in the order `kiln list` prints them.
    pub const ALL: [GluKind; 10] = [
        Self::Glu,
        Self::Bilinear,
        Self::Reglu,
        Self::Geglu,
        Self::GegluTanh,
        Self::Swiglu,
        Self::Atglu,
        Self::XAtglu,
        Self::XGeglu,
        Self::XSwiglu,
    ];

    /// The op's name in the C ABI, the CLI and the registry.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Glu => "glu",
            Self::Bilinear => "bilinear",
            Self::Reglu => "reglu",
            Self::Geglu => "geglu",
            Self::GegluTanh => "geglu_tanh",
            Self::Swiglu => "swiglu",
            Self::Atglu => "atglu",
            Self::XAtglu => "xatglu",
            Self::XGeglu => "xgeglu",
            Self::XSwiglu => "xswiglu",
        }
    }

    /// True for the expanded gates with a trainable α.
    pub const fn has_alpha(self) -> bool {
        matches!(self, Self::XAtglu | Self::XGeglu | Self::XSwiglu)
    }

    /// True for the gates that take an order (1: g(a)·b, 2: g(a)·a·b).
    pub const fn has_order(self) -> bool {
        matches!(self, Self::Atglu | Self::XAtglu | Self::XGeglu | Self::XSwiglu)
    }

    /// The expanded-gating paper's default order.
    pub const fn default_order(self) -> u32 {
        if matches!(self, Self::Atglu) { 2 } else { 1 }
    }

    /// Finds an op by name.
    pub fn parse(name: &str) -> Option<GluKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A gate and its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Glu {
    /// Which gate.
    pub kind: GluKind,
    /// The expansion α of the x-gates (ignored by the others); trainable, initialised to 0.
    pub alpha: f32,
    /// 1 or 2 for the gates that take an order (ignored by the others).
    pub order: u32,
}

impl Glu {
    /// The gate with α = 0 and its default order.
    pub fn new(kind: GluKind) -> Glu {
        Glu { kind, alpha: 0.0, order: kind.default_order() }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.kind.has_alpha() {
            // Finite, with 1 + 2α finite in f32 (the kernels' widening factor), as the C ABI checks.
            crate::families::activation::expansion("alpha", self.alpha)?;
        }
        if self.kind.has_order() {
            ensure(matches!(self.order, 1 | 2), "order", || format!("must be 1 or 2, got {}", self.order))?;
        }
        Ok(())
    }
}

/// Which half of a packed `[…, 2F]` tensor is the gate a.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateHalf {
    /// `[a | b]`: TransformerEngine, Megatron, MosaicBERT, Liger.
    First,
    /// `[b | a]`: PyTorch `F.glu`, flash-attn's GatedMlp.
    Second,
}

/// The two operands.
#[derive(Clone, Copy, Debug)]
pub enum GluInput<'a> {
    /// a and b, `[…, F]` each, same shape, dtype and device.
    Separate {
        /// The gate input.
        a: &'a Tensor,
        /// The value.
        b: &'a Tensor,
    },
    /// One `[…, 2F]` tensor.
    Packed {
        /// The packed operands.
        ab: &'a Tensor,
        /// Which half gates.
        gate: GateHalf,
    },
}

/// Gradients of the operands, in the layout they came in.
#[derive(Debug)]
pub enum GluInputGrads {
    /// da and db.
    Separate {
        /// dL/da.
        da: Tensor,
        /// dL/db.
        db: Tensor,
    },
    /// dL/dab, packed like ab.
    Packed {
        /// dL/dab.
        dab: Tensor,
    },
}

/// What [`backward`] returns.
#[derive(Debug)]
pub struct GluGrads {
    /// Gradients of a and b.
    pub input: GluInputGrads,
    /// dL/dα (`[1]`, f32) for the x-gates.
    pub dalpha: Option<Tensor>,
}

/// Rows, features, output shape, dtype and device of a call.
pub(crate) struct Layout {
    pub(super) rows: usize,
    pub(super) features: usize,
    pub(super) out_shape: Vec<usize>,
    pub(super) dtype: DType,
    pub(super) device: Device,
}

pub(super) fn layout(input: &GluInput) -> Result<Layout> {
    match *input {
        GluInput::Separate { a, b } => {
            check(&a.device(), &[Arg::new("a", a).float(), Arg::new("b", b).like("a", a)])?;
            // F ≥ 1 is a rule on a dimension's value, which the engine's shapes do not state.
            let features = a.shape().last().copied().unwrap_or(0);
            if features == 0 {
                return Err(Error::Shape {
                    arg: "a", expected: "[…, F] with F ≥ 1".into(), got: a.shape().to_vec()
                });
            }
            Ok(Layout {
                rows: a.len() / features,
                features,
                out_shape: a.shape().to_vec(),
                dtype: a.dtype(),
                device: a.device(),
            })
        }
        GluInput::Packed { ab, .. } => {
            check(&ab.device(), &[Arg::new("ab", ab).float()])?;
            // An even, nonzero last dimension: a rule on its value, kept as code.
            let width = ab.shape().last().copied().unwrap_or(0);
            if width == 0 || width % 2 != 0 {
                return Err(Error::Shape {
                    arg: "ab",
                    expected: "[…, 2F] with an even, nonzero last dimension".into(),
                    got: ab.shape().to_vec(),
                });
            }
            let mut out_shape = ab.shape().to_vec();
            *out_shape.last_mut().expect("non-empty") = width / 2;
            Ok(Layout {
                rows: ab.len() / width,
                features: width / 2,
                out_shape,
                dtype: ab.dtype(),
                device: ab.device(),
            })
        }
    }
}

/// The operands, mutable: [`backward_inplace`](super::backward_inplace) writes da over a and db over b.
#[derive(Debug)]
pub enum GluInputMut<'a> {
    /// a and b, separate.
    Separate {
        /// The gate input; receives da.
        a: &'a mut Tensor,
        /// The value; receives db.
        b: &'a mut Tensor,
    },
    /// Packed `[…, 2F]`; receives dab.
    Packed {
        /// The packed operands; receive their gradients.
        ab: &'a mut Tensor,
        /// Which half gates.
        gate: GateHalf,
    },
}
