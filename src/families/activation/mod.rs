//! Gated activations, forward and backward: GELU, SiLU, ReLU, the expanded-gating
//! xATLU / xGELU / xSiLU with their trainable α, SmeLU and its generalization, PReLU and
//! JumpReLU (REFERENCE.md §1).
//!
//! The device of the inputs decides the path: host tensors run the f64 reference in
//! [`cpu`], device tensors (a GPU or the emulator) the kernels of `kernels/activation.cu`.
//!
//! ```
//! use kiln::{activation::{self, Activation}, DType, Tensor};
//!
//! let x = Tensor::from_f32(&[-1.0, 0.0, 2.0], &[3], DType::F32)?;
//! let y = activation::forward(&Activation::XGelu { alpha: 0.0 }, &x)?;
//! let gelu = activation::forward(&Activation::Gelu, &x)?;
//! assert_eq!(y.to_f32_vec()?, gelu.to_f32_vec()?); // α = 0 is plain GELU
//!
//! let dy = Tensor::from_f32(&[1.0, 1.0, 1.0], &[3], DType::F32)?;
//! let grads = activation::backward(&Activation::XGelu { alpha: 0.0 }, &x, &dy)?;
//! assert_eq!(grads.dparam.unwrap().shape(), &[1]); // dα, reduced over the tensor
//! # Ok::<(), kiln::Error>(())
//! ```

pub mod cpu;
mod spec;
pub(crate) use spec::expansion;
pub use spec::{Activation, ActivationKind, GSmeluParams, Scalars};

// cuda.rs is the one copy of the launch code, compiled against each kernel library built in.
crate::core::launch::launch_code!("cuda.rs");

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};

/// What [`backward`] returns.
#[derive(Debug)]
pub struct Gradients {
    /// dL/dx, same shape, dtype and device as x.
    pub dx: Tensor,
    /// dL/dα (`[1]`), dL/dslope or the straight-through dL/dθ (`[channels]`), f32;
    /// `None` for ops without a trainable parameter.
    pub dparam: Option<Tensor>,
}

/// y = f(x) into a new tensor on x's device.
pub fn forward(act: &Activation, x: &Tensor) -> Result<Tensor> {
    let channels = validate(act, Pass::Forward, x, &[], None)?;
    let mut y = Tensor::uninit(x.shape(), x.dtype(), &x.device())?;
    run_forward(act, channels, x, &mut y)?;
    Ok(y)
}

/// y = f(x) into `y` (same shape, dtype and device as x).
pub fn forward_into(act: &Activation, x: &Tensor, y: &mut Tensor) -> Result<()> {
    let channels = validate(act, Pass::Forward, x, &[("y", y)], None)?;
    run_forward(act, channels, x, y)
}

/// x = f(x) in place.
pub fn forward_inplace(act: &Activation, x: &mut Tensor) -> Result<()> {
    let channels = validate(act, Pass::Forward, x, &[], None)?;
    match Gpu::of(&x.device())? {
        None => {
            let (s, p) = reference_params(act);
            let y = cpu::forward(act.kind(), &s, &p, &x.host_f64());
            x.set_host_f64(&y);
            Ok(())
        }
        Some(gpu) => on_backend!(&gpu, forward_inplace(act, channels, x, &gpu)),
    }
}

/// dx = dy·f'(x), and the parameter gradient where the op has one, into new tensors.
pub fn backward(act: &Activation, x: &Tensor, dy: &Tensor) -> Result<Gradients> {
    let channels = validate(act, Pass::Backward, x, &[("dy", dy)], None)?;
    let device = x.device();
    let mut dx = Tensor::uninit(x.shape(), x.dtype(), &device)?;
    let mut dparam = match act.kind().grad_name() {
        Some(_) => Some(Tensor::uninit(&[channels], DType::F32, &device)?),
        None => None,
    };
    run_backward(act, channels, x, dy, &mut dx, dparam.as_mut())?;
    Ok(Gradients { dx, dparam })
}

/// dx = dy·f'(x) into `dx`; when `dparam` is given (f32, `[channels]`, `[1]` for α), the
/// parameter gradient too. Passing `None` skips the reduction.
pub fn backward_into(
    act: &Activation,
    x: &Tensor,
    dy: &Tensor,
    dx: &mut Tensor,
    dparam: Option<&mut Tensor>,
) -> Result<()> {
    let channels = validate(act, Pass::Backward, x, &[("dy", dy), ("dx", dx)], dparam.as_deref())?;
    run_backward(act, channels, x, dy, dx, dparam)
}

/// Which pass a call validates for: the backward also needs JumpReLU's ε.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    Forward,
    Backward,
}

/// Every rule of an activation call, checked once before anything runs: the scalar
/// parameters' domains, x a float tensor, the per-channel parameter f32 on x's device with
/// one value or one per channel, each of `like_x` laid out like x, and `dparam` f32
/// `[channels]`. Returns the channel count.
fn validate(
    act: &Activation,
    pass: Pass,
    x: &Tensor,
    like_x: &[(&'static str, &Tensor)],
    dparam: Option<&Tensor>,
) -> Result<usize> {
    act.validate_scalars(pass == Pass::Backward)?;
    let device = x.device();
    let param = act.param_tensor().map(|p| (act.kind().tensor_param().expect("ops with a tensor name it"), p));
    let mut args = vec![Arg::new("x", x).float()];
    args.extend(param.map(|(name, p)| Arg::new(name, p).dtype(DType::F32)));
    check(&device, &args)?;
    let channels = match param {
        None => 1,
        Some((name, p)) => act.channels_of(name, x, p)?,
    };
    let args: Vec<Arg> = like_x.iter().map(|&(name, t)| Arg::new(name, t).like("x", x)).collect();
    check(&device, &args)?;
    // Passing a gradient the op does not have is a misuse, reported after the tensors above.
    if let Some(dp) = dparam {
        check(&device, &[Arg::new(dparam_name(act)?, dp).dtype(DType::F32).shape(vec![channels])])?;
    }
    Ok(channels)
}

/// The name of the parameter gradient `act` has, or the error for passing one it has not.
fn dparam_name(act: &Activation) -> Result<&'static str> {
    act.kind().grad_name().ok_or_else(|| Error::InvalidValue {
        arg: "dparam",
        reason: format!("{} has no trainable parameter", act.kind().name()),
    })
}

/// The forward on validated arguments.
fn run_forward(act: &Activation, channels: usize, x: &Tensor, y: &mut Tensor) -> Result<()> {
    match Gpu::of(&x.device())? {
        None => {
            let (s, p) = reference_params(act);
            y.set_host_f64(&cpu::forward(act.kind(), &s, &p, &x.host_f64()));
            Ok(())
        }
        Some(gpu) => on_backend!(&gpu, forward(act, channels, x, y, &gpu)),
    }
}

/// The backward on validated arguments.
fn run_backward(
    act: &Activation,
    channels: usize,
    x: &Tensor,
    dy: &Tensor,
    dx: &mut Tensor,
    dparam: Option<&mut Tensor>,
) -> Result<()> {
    match Gpu::of(&x.device())? {
        None => {
            let (s, p) = reference_params(act);
            let (g, gp) = cpu::backward(act.kind(), &s, &p, &x.host_f64(), &dy.host_f64());
            dx.set_host_f64(&g);
            if let (Some(dp), Some(gp)) = (dparam, gp) {
                dp.set_host_f64(&gp);
            }
            Ok(())
        }
        Some(gpu) => on_backend!(&gpu, backward(act, channels, x, dy, dx, dparam, &gpu)),
    }
}

/// The f64 scalars and channel parameters the references take.
fn reference_params(act: &Activation) -> (Scalars, Vec<f64>) {
    let p = act.param_tensor().map(|t| t.host_f64()).unwrap_or_default();
    (act.scalars(), p)
}
