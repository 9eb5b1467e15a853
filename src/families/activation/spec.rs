//! What an activation op computes: the activation and its parameters ([`Activation`]), the
//! kind the kernels and references dispatch on ([`ActivationKind`]) with its f64 scalars, and
//! the rules its parameters obey.
//!
//! Layer: families. Imports core; the API (mod.rs), the reference and the launch code import it.

use crate::core::error::{Error, Result, ensure};
use crate::core::tensor::Tensor;

/// Parameters of the generalized SmeLU (arXiv 2010.09931 eq. 11).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GSmeluParams {
    /// Left knee at −α.
    pub alpha: f32,
    /// Right knee at β (α + β > 0).
    pub beta: f32,
    /// Slope left of the knee.
    pub g_neg: f32,
    /// Slope right of the knee.
    pub g_pos: f32,
    /// Offset.
    pub t: f32,
}

/// An activation and its parameters.
#[derive(Clone, Copy, Debug)]
pub enum Activation<'a> {
    /// max(0, x).
    Relu,
    /// x·Φ(x), the exact (erf) GELU.
    Gelu,
    /// The tanh approximation of GELU (differs from `Gelu` by up to 4.7e-4).
    GeluTanh,
    /// x·σ(1.702x).
    QuickGelu,
    /// x·σ(x).
    Silu,
    /// σ(x).
    Sigmoid,
    /// max(0, x)².
    SquaredRelu,
    /// x·(atan(x)/π + ½).
    Atlu,
    /// x·[(1+2α)(atan(x)/π + ½) − α]; α is trainable (initialised to 0).
    XAtlu {
        /// The expansion α.
        alpha: f32,
    },
    /// x·[(1+2α)Φ(x) − α]; α is trainable.
    XGelu {
        /// The expansion α.
        alpha: f32,
    },
    /// x·[(1+2α)σ(x) − α]; α is trainable.
    XSilu {
        /// The expansion α.
        alpha: f32,
    },
    /// SmeLU with half-width β > 0.
    Smelu {
        /// Half-width of the quadratic piece.
        beta: f32,
    },
    /// Generalized SmeLU.
    GSmelu(GSmeluParams),
    /// max(0,x) + a·min(0,x), `slope` f32 of length 1 (shared) or the last dimension.
    Prelu {
        /// The negative slope a.
        slope: &'a Tensor,
    },
    /// x·H(x − θ), `theta` f32 of length 1 or the last dimension; backward uses the
    /// straight-through estimator with rectangle bandwidth `eps` > 0.
    JumpRelu {
        /// Thresholds θ.
        theta: &'a Tensor,
        /// Bandwidth ε of the straight-through estimator (backward only).
        eps: f32,
    },
}

/// The activation ops without their parameters: the registry's list of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ActivationKind {
    Relu,
    Gelu,
    GeluTanh,
    QuickGelu,
    Silu,
    Sigmoid,
    SquaredRelu,
    Atlu,
    XAtlu,
    XGelu,
    XSilu,
    Smelu,
    GSmelu,
    Prelu,
    JumpRelu,
}

/// Every scalar parameter of the family, in f64 for the references. Ops read only theirs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scalars {
    /// α of the expanded ops; left knee of the generalized SmeLU.
    pub alpha: f64,
    /// β of SmeLU and the generalized SmeLU.
    pub beta: f64,
    /// g₋ of the generalized SmeLU.
    pub g_neg: f64,
    /// g₊ of the generalized SmeLU.
    pub g_pos: f64,
    /// t of the generalized SmeLU.
    pub t: f64,
    /// ε of JumpReLU's straight-through estimator.
    pub eps: f64,
}

impl Default for Scalars {
    fn default() -> Self {
        Scalars { alpha: 0.0, beta: 1.0, g_neg: 0.0, g_pos: 1.0, t: 0.0, eps: 1e-3 }
    }
}

impl ActivationKind {
    /// Every op of the family, in the order `kiln list` prints them.
    pub const ALL: [ActivationKind; 15] = [
        Self::Relu,
        Self::Gelu,
        Self::GeluTanh,
        Self::QuickGelu,
        Self::Silu,
        Self::Sigmoid,
        Self::SquaredRelu,
        Self::Atlu,
        Self::XAtlu,
        Self::XGelu,
        Self::XSilu,
        Self::Smelu,
        Self::GSmelu,
        Self::Prelu,
        Self::JumpRelu,
    ];

    /// The op's name in the C ABI, the CLI and the registry.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_tanh",
            Self::QuickGelu => "quick_gelu",
            Self::Silu => "silu",
            Self::Sigmoid => "sigmoid",
            Self::SquaredRelu => "squared_relu",
            Self::Atlu => "atlu",
            Self::XAtlu => "xatlu",
            Self::XGelu => "xgelu",
            Self::XSilu => "xsilu",
            Self::Smelu => "smelu",
            Self::GSmelu => "gsmelu",
            Self::Prelu => "prelu",
            Self::JumpRelu => "jumprelu",
        }
    }

    /// The scalar parameters the op takes (`kiln run --param NAME=VALUE`) and their defaults.
    pub const fn scalar_params(self) -> &'static [(&'static str, f64)] {
        match self {
            Self::XAtlu | Self::XGelu | Self::XSilu => &[("alpha", 0.0)],
            Self::Smelu => &[("beta", 1.0)],
            Self::GSmelu => &[("alpha", 1.0), ("beta", 1.0), ("g_neg", 0.0), ("g_pos", 1.0), ("t", 0.0)],
            Self::JumpRelu => &[("eps", 1e-3)],
            _ => &[],
        }
    }

    /// The name of the op's per-channel parameter tensor, if it has one.
    pub const fn tensor_param(self) -> Option<&'static str> {
        match self {
            Self::Prelu => Some("slope"),
            Self::JumpRelu => Some("theta"),
            _ => None,
        }
    }

    /// The name of the trainable parameter's gradient that backward returns, if any.
    pub const fn grad_name(self) -> Option<&'static str> {
        match self {
            Self::XAtlu | Self::XGelu | Self::XSilu => Some("dalpha"),
            Self::Prelu => Some("dslope"),
            Self::JumpRelu => Some("dtheta"),
            _ => None,
        }
    }

    /// Rough f32 operations per element (forward, backward) for the FLOP model; the
    /// family is memory-bound, so these only serve the report.
    pub const fn flops_per_element(self) -> (u64, u64) {
        match self {
            Self::Relu | Self::Prelu | Self::JumpRelu => (2, 3),
            Self::SquaredRelu => (2, 3),
            Self::Smelu | Self::GSmelu => (6, 6),
            Self::Sigmoid | Self::Silu | Self::QuickGelu | Self::XSilu => (8, 14),
            Self::Gelu | Self::GeluTanh | Self::XGelu => (20, 30),
            Self::Atlu | Self::XAtlu => (20, 28),
        }
    }

    /// Finds an op by name.
    pub fn parse(name: &str) -> Option<ActivationKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl<'a> Activation<'a> {
    /// Which op this is.
    pub fn kind(&self) -> ActivationKind {
        match self {
            Self::Relu => ActivationKind::Relu,
            Self::Gelu => ActivationKind::Gelu,
            Self::GeluTanh => ActivationKind::GeluTanh,
            Self::QuickGelu => ActivationKind::QuickGelu,
            Self::Silu => ActivationKind::Silu,
            Self::Sigmoid => ActivationKind::Sigmoid,
            Self::SquaredRelu => ActivationKind::SquaredRelu,
            Self::Atlu => ActivationKind::Atlu,
            Self::XAtlu { .. } => ActivationKind::XAtlu,
            Self::XGelu { .. } => ActivationKind::XGelu,
            Self::XSilu { .. } => ActivationKind::XSilu,
            Self::Smelu { .. } => ActivationKind::Smelu,
            Self::GSmelu(_) => ActivationKind::GSmelu,
            Self::Prelu { .. } => ActivationKind::Prelu,
            Self::JumpRelu { .. } => ActivationKind::JumpRelu,
        }
    }

    /// Builds the op `kind` from named scalars (missing ones take their defaults) and its
    /// parameter tensor (required for PReLU and JumpReLU).
    pub fn from_parts(
        kind: ActivationKind,
        scalar: impl Fn(&str) -> Option<f64>,
        tensor: Option<&'a Tensor>,
    ) -> Result<Activation<'a>> {
        let get = |name: &str| {
            let default = kind.scalar_params().iter().find(|p| p.0 == name).map_or(0.0, |p| p.1);
            scalar(name).unwrap_or(default) as f32
        };
        let tensor = |arg: &'static str| tensor.ok_or(Error::InvalidValue { arg, reason: "this op needs it".into() });
        Ok(match kind {
            ActivationKind::Relu => Self::Relu,
            ActivationKind::Gelu => Self::Gelu,
            ActivationKind::GeluTanh => Self::GeluTanh,
            ActivationKind::QuickGelu => Self::QuickGelu,
            ActivationKind::Silu => Self::Silu,
            ActivationKind::Sigmoid => Self::Sigmoid,
            ActivationKind::SquaredRelu => Self::SquaredRelu,
            ActivationKind::Atlu => Self::Atlu,
            ActivationKind::XAtlu => Self::XAtlu { alpha: get("alpha") },
            ActivationKind::XGelu => Self::XGelu { alpha: get("alpha") },
            ActivationKind::XSilu => Self::XSilu { alpha: get("alpha") },
            ActivationKind::Smelu => Self::Smelu { beta: get("beta") },
            ActivationKind::GSmelu => Self::GSmelu(GSmeluParams {
                alpha: get("alpha"),
                beta: get("beta"),
                g_neg: get("g_neg"),
                g_pos: get("g_pos"),
                t: get("t"),
            }),
            ActivationKind::Prelu => Self::Prelu { slope: tensor("slope")? },
            ActivationKind::JumpRelu => Self::JumpRelu { theta: tensor("theta")?, eps: get("eps") },
        })
    }

    /// The scalar parameters widened to f64 (unused fields keep their defaults).
    pub fn scalars(&self) -> Scalars {
        let mut s = Scalars::default();
        match *self {
            Self::XAtlu { alpha } | Self::XGelu { alpha } | Self::XSilu { alpha } => s.alpha = alpha as f64,
            Self::Smelu { beta } => s.beta = beta as f64,
            Self::GSmelu(p) => {
                s.alpha = p.alpha as f64;
                s.beta = p.beta as f64;
                s.g_neg = p.g_neg as f64;
                s.g_pos = p.g_pos as f64;
                s.t = p.t as f64;
            }
            Self::JumpRelu { eps, .. } => s.eps = eps as f64,
            _ => {}
        }
        s
    }

    /// The per-channel parameter tensor (slope or θ), if the op has one.
    pub fn param_tensor(&self) -> Option<&'a Tensor> {
        match *self {
            Self::Prelu { slope } => Some(slope),
            Self::JumpRelu { theta, .. } => Some(theta),
            _ => None,
        }
    }

    /// Checks the scalar parameters' domains (forward needs no ε, backward does): finite,
    /// not subnormal, and such that every constant the kernels derive from them in f32
    /// (1/ε, 1 + 2α, A and the right offset of the generalized SmeLU) is finite. The C ABI
    /// applies the same rules (kernels/activation.cu).
    pub(super) fn validate_scalars(&self, backward: bool) -> Result<()> {
        match *self {
            Self::XAtlu { alpha } | Self::XGelu { alpha } | Self::XSilu { alpha } => expansion("alpha", alpha),
            Self::Smelu { beta } => positive_normal("beta", beta),
            Self::GSmelu(p) => {
                zero_or_normal("alpha", p.alpha)?;
                zero_or_normal("beta", p.beta)?;
                let finite = |arg, v: f32| ensure(v.is_finite(), arg, || format!("must be finite, got {v}"));
                finite("g_neg", p.g_neg)?;
                finite("g_pos", p.g_pos)?;
                finite("t", p.t)?;
                let width = p.alpha as f64 + p.beta as f64;
                ensure(width >= f32::MIN_POSITIVE as f64 && (width as f32).is_finite(), "beta", || {
                    format!("alpha + beta must be a positive normal f32, got {} + {} = {width:e}", p.alpha, p.beta)
                })?;
                let (quad, right) = gsmelu_constants(&p);
                ensure(f32_finite(quad), "g_pos", || {
                    format!("(g_pos - g_neg) / (2 (alpha + beta)) = {quad:e} overflows f32")
                })?;
                ensure(f32_finite(right), "t", || {
                    format!(
                        "the right piece's offset t + (alpha+beta) g_neg/2 + (alpha-beta) g_pos/2 = {right:e} overflows f32"
                    )
                })
            }
            Self::JumpRelu { eps, .. } if backward => positive_normal("eps", eps),
            _ => Ok(()),
        }
    }

    /// The channel count the per-channel parameter `p` (called `name`) gives against x: one
    /// value for every element, or one per element of x's last dimension.
    pub(super) fn channels_of(&self, name: &'static str, x: &Tensor, p: &Tensor) -> Result<usize> {
        let last = x.shape().last().copied().unwrap_or(1);
        if p.len() == 1 || (p.len() == last && p.shape().len() == 1) {
            Ok(p.len())
        } else {
            Err(Error::Shape {
                arg: name,
                expected: format!("[1] or [{last}] (the last dimension of x)"),
                got: p.shape().to_vec(),
            })
        }
    }
}

/// Whether an f64 value rounds to a finite f32.
pub(super) fn f32_finite(v: f64) -> bool {
    (v as f32).is_finite()
}

/// A finite value that is 0 or a normal f32 (no subnormal).
pub(super) fn zero_or_normal(arg: &'static str, v: f32) -> Result<()> {
    ensure(v == 0.0 || v.is_normal(), arg, || format!("must be 0 or a normal finite f32, got {v:e}"))
}

/// A positive normal f32: a divisor whose reciprocal (or quotient) the kernels form.
pub(super) fn positive_normal(arg: &'static str, v: f32) -> Result<()> {
    ensure(v > 0.0 && v.is_normal(), arg, || format!("must be a positive normal finite f32, got {v:e}"))
}

/// An expansion α: finite, with 1 + 2α finite in f32 (a subnormal α is harmless: nothing
/// divides by it, and a trained α may drift there).
pub(crate) fn expansion(arg: &'static str, alpha: f32) -> Result<()> {
    ensure(alpha.is_finite() && f32_finite(1.0 + 2.0 * alpha as f64), arg, || {
        format!("must be finite with 1 + 2·alpha finite in f32, got {alpha:e}")
    })
}

/// A = (g₊ − g₋)/(2(α + β)) and the right piece's offset t + (α+β)g₋/2 + (α−β)g₊/2 of the
/// generalized SmeLU in f64, as the launcher computes them before rounding to f32.
pub(super) fn gsmelu_constants(p: &GSmeluParams) -> (f64, f64) {
    let (a, b, gn, gp, t) = (p.alpha as f64, p.beta as f64, p.g_neg as f64, p.g_pos as f64, p.t as f64);
    let width = a + b;
    ((gp - gn) / (2.0 * width), t + width * gn / 2.0 + (a - b) * gp / 2.0)
}
