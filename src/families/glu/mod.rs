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
mod spec;
pub(crate) use spec::Layout;
use spec::layout;
pub use spec::{GateHalf, Glu, GluGrads, GluInput, GluInputGrads, GluInputMut, GluKind};

// cuda.rs is the one copy of the launch code, compiled against each kernel library built in.
crate::core::launch::launch_code!("cuda.rs");

use crate::core::dtype::DType;
use crate::core::error::{Error, Result, ensure};
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};

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

/// The rules of y or dy (`arg`): the inputs' device and dtype, shape `[…, F]`. Declared after
/// [`layout`] has checked the inputs, since F comes from their (checked) last dimension.
fn output<'a>(arg: &'static str, input: &GluInput<'a>, l: &Layout, t: &'a Tensor) -> Arg<'a> {
    // a or ab carries the inputs' dtype (b matches a); named "the inputs" in the error.
    let inputs = match *input {
        GluInput::Separate { a, .. } => a,
        GluInput::Packed { ab, .. } => ab,
    };
    Arg::new(arg, t).dtype_of("the inputs", inputs).shape(l.out_shape.clone())
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
    check(&l.device, &[output("y", &input, &l, y)])?;
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
    check(&l.device, &[output("dy", &input, &l, dy)])?;
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
    check(&l.device, &[output("dy", &view, &l, dy)])?;
    if let Some(t) = dalpha.as_deref() {
        ensure(glu.kind.has_alpha(), "dalpha", || format!("{} has no α", glu.kind.name()))?;
        check(&l.device, &[Arg::new("dalpha", t)])?;
        // Kept as code: a dtype or a shape fault is one Shape error, "f32 [1]".
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
