//! Fused gate·value kernels (GLU, Bilinear, ReGLU, GEGLU, SwiGLU and the expanded x-GLUs,
//! REFERENCE.md §2) and the GLU MLP block ([`mlp`]). y = h(a)·b over `[…, F]`, with a and
//! b separate tensors or the two halves of a packed `[…, 2F]` tensor.
//!
//! ```
//! use kiln::{glu::{self, GateHalf, Glu, GluInput, GluKind}, DType, Tensor};
//!
//! // Packed [rows, 2F] with the gate in the first half (TransformerEngine, Megatron).
//! let ab = Tensor::from_f32(&[1.0, -2.0, 3.0, 4.0], &[1, 4], DType::F32)?;
//! let y = glu::forward(&Glu::new(GluKind::Bilinear), GluInput::Packed { ab: &ab, gate: GateHalf::First })?;
//! assert_eq!(y.to_f32_vec()?, vec![3.0, -8.0]);
//! // PyTorch's F.glu gates the second half.
//! let y = glu::forward(&Glu::new(GluKind::Bilinear), GluInput::Packed { ab: &ab, gate: GateHalf::Second })?;
//! assert_eq!(y.to_f32_vec()?, vec![3.0, -8.0]);
//! # Ok::<(), kiln::Error>(())
//! ```

pub mod cpu;
pub mod mlp;

// cuda.rs is the one copy of the launch code, compiled against each kernel library built in.
crate::core::launch::launch_code!("cuda.rs");

use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result, ensure};
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;
use crate::core::validate::{float, same_device};

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

    fn validate(&self) -> Result<()> {
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
    rows: usize,
    features: usize,
    out_shape: Vec<usize>,
    dtype: DType,
    device: Device,
}

fn layout(input: &GluInput) -> Result<Layout> {
    match *input {
        GluInput::Separate { a, b } => {
            float("a", a)?;
            same_device("b", &a.device(), b)?;
            if b.dtype() != a.dtype() {
                return Err(Error::DType {
                    arg: "b",
                    expected: format!("{} (the dtype of a)", a.dtype()),
                    got: b.dtype(),
                });
            }
            if b.shape() != a.shape() {
                return Err(Error::Shape {
                    arg: "b",
                    expected: format!("{:?} (the shape of a)", a.shape()),
                    got: b.shape().to_vec(),
                });
            }
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
            float("ab", ab)?;
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

/// The f64 values of a and b (`[rows, F]` each).
fn host_operands(input: &GluInput, l: &Layout) -> (Vec<f64>, Vec<f64>) {
    match *input {
        GluInput::Separate { a, b } => (a.host_f64(), b.host_f64()),
        GluInput::Packed { ab, gate } => {
            let v = ab.host_f64();
            let f = l.features;
            let (mut first, mut second) = (Vec::with_capacity(l.rows * f), Vec::with_capacity(l.rows * f));
            for row in v.chunks(2 * f) {
                first.extend_from_slice(&row[..f]);
                second.extend_from_slice(&row[f..]);
            }
            match gate {
                GateHalf::First => (first, second),
                GateHalf::Second => (second, first),
            }
        }
    }
}

fn check_out(arg: &'static str, l: &Layout, t: &Tensor) -> Result<()> {
    same_device(arg, &l.device, t)?;
    if t.dtype() != l.dtype {
        return Err(Error::DType { arg, expected: format!("{} (the dtype of the inputs)", l.dtype), got: t.dtype() });
    }
    if t.shape() != l.out_shape.as_slice() {
        return Err(Error::Shape { arg, expected: format!("{:?}", l.out_shape), got: t.shape().to_vec() });
    }
    Ok(())
}

/// y = h(a)·b into a new tensor.
pub fn forward(glu: &Glu, input: GluInput) -> Result<Tensor> {
    glu.validate()?;
    let l = layout(&input)?;
    let mut y = Tensor::uninit(&l.out_shape, l.dtype, &l.device)?;
    forward_into(glu, input, &mut y)?;
    Ok(y)
}

/// y = h(a)·b into `y` (`[…, F]`, the inputs' dtype and device).
pub fn forward_into(glu: &Glu, input: GluInput, y: &mut Tensor) -> Result<()> {
    glu.validate()?;
    let l = layout(&input)?;
    check_out("y", &l, y)?;
    match Gpu::of(&l.device)? {
        None => {
            let (a, b) = host_operands(&input, &l);
            y.set_host_f64(&cpu::forward(glu.kind, glu.alpha as f64, glu.order, &a, &b));
            Ok(())
        }
        Some(gpu) => on_backend!(&gpu, forward(glu, &input, &l, y, &gpu)),
    }
}

/// da = dy·b·h'(a), db = dy·h(a) in the inputs' layout, and dα for the x-gates.
pub fn backward(glu: &Glu, input: GluInput, dy: &Tensor) -> Result<GluGrads> {
    glu.validate()?;
    let l = layout(&input)?;
    check_out("dy", &l, dy)?;
    let device = l.device.clone();
    let dtype = l.dtype;
    let dalpha = if glu.kind.has_alpha() { Some(Tensor::uninit(&[1], DType::F32, &device)?) } else { None };
    match Gpu::of(&device)? {
        None => {
            let (a, b) = host_operands(&input, &l);
            let (da, db, dal) = cpu::backward(glu.kind, glu.alpha as f64, glu.order, &a, &b, &dy.host_f64());
            let input_grads = match input {
                GluInput::Separate { .. } => GluInputGrads::Separate {
                    da: Tensor::from_f64(&da, &l.out_shape, dtype)?,
                    db: Tensor::from_f64(&db, &l.out_shape, dtype)?,
                },
                GluInput::Packed { ab, gate } => {
                    let f = l.features;
                    let (first, second) = if gate == GateHalf::First { (&da, &db) } else { (&db, &da) };
                    let mut packed = Vec::with_capacity(ab.len());
                    for r in 0..l.rows {
                        packed.extend_from_slice(&first[r * f..(r + 1) * f]);
                        packed.extend_from_slice(&second[r * f..(r + 1) * f]);
                    }
                    GluInputGrads::Packed { dab: Tensor::from_f64(&packed, ab.shape(), dtype)? }
                }
            };
            let dalpha = match dalpha {
                Some(_) => Some(Tensor::from_f64(&[dal], &[1], DType::F32)?),
                None => None,
            };
            Ok(GluGrads { input: input_grads, dalpha })
        }
        Some(gpu) => {
            let mut dalpha = dalpha;
            let input_grads = backward_on(&gpu, glu, &input, &l, dy, dalpha.as_mut())?;
            Ok(GluGrads { input: input_grads, dalpha })
        }
    }
}

/// The kernels' backward on the backend of `gpu`.
fn backward_on(
    gpu: &Gpu,
    glu: &Glu,
    input: &GluInput,
    l: &Layout,
    dy: &Tensor,
    dalpha: Option<&mut Tensor>,
) -> Result<GluInputGrads> {
    on_backend!(gpu, backward(glu, input, l, dy, dalpha, gpu))
}

/// The operands, mutable: [`backward_inplace`] writes da over a and db over b.
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

/// The backward written over its inputs (Liger's memory saving): da replaces a and db
/// replaces b, element by element, each read before it is written. `dy` must not alias
/// them. dα (f32 `[1]`) is written into `dalpha` for the x-gates when given.
pub fn backward_inplace(glu: &Glu, input: GluInputMut, dy: &Tensor, dalpha: Option<&mut Tensor>) -> Result<()> {
    glu.validate()?;
    let (first, second, gate) = match &input {
        GluInputMut::Separate { a, b } => (&**a, Some(&**b), None),
        GluInputMut::Packed { ab, gate } => (&**ab, None, Some(*gate)),
    };
    let view = match (second, gate) {
        (Some(b), _) => GluInput::Separate { a: first, b },
        (None, Some(gate)) => GluInput::Packed { ab: first, gate },
        (None, None) => unreachable!("a layout has either b or a gate half"),
    };
    let l = layout(&view)?;
    check_out("dy", &l, dy)?;
    if let Some(t) = dalpha.as_deref() {
        ensure(glu.kind.has_alpha(), "dalpha", || format!("{} has no α", glu.kind.name()))?;
        same_device("dalpha", &l.device, t)?;
        if t.dtype() != DType::F32 || t.shape() != [1] {
            return Err(Error::Shape { arg: "dalpha", expected: "f32 [1]".into(), got: t.shape().to_vec() });
        }
    }
    match Gpu::of(&l.device)? {
        None => {
            let grads = backward(glu, view_of(&input), dy)?;
            if let (Some(t), Some(g)) = (dalpha, &grads.dalpha) {
                t.set_host_f64(&g.host_f64());
            }
            match (input, grads.input) {
                (GluInputMut::Separate { a, b }, GluInputGrads::Separate { da, db }) => {
                    a.set_host_f64(&da.host_f64());
                    b.set_host_f64(&db.host_f64());
                }
                (GluInputMut::Packed { ab, .. }, GluInputGrads::Packed { dab }) => ab.set_host_f64(&dab.host_f64()),
                _ => unreachable!("backward returns the input's layout"),
            }
            Ok(())
        }
        Some(gpu) => on_backend!(&gpu, backward_inplace(glu, input, dy, dalpha, &l, &gpu)),
    }
}

fn view_of<'a>(input: &'a GluInputMut) -> GluInput<'a> {
    match input {
        GluInputMut::Separate { a, b } => GluInput::Separate { a, b },
        GluInputMut::Packed { ab, gate } => GluInput::Packed { ab, gate: *gate },
    }
}
