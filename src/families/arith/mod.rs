//! Neural arithmetic units (Madsen & Johansen, "Neural Arithmetic Units", ICLR 2020, and
//! "Measuring Arithmetic Extrapolation Performance"; conventions of their code, stable-nalu):
//! the NAU (addition and subtraction: z = x·W_cᵀ, W_c = clamp(W, −1, 1)), the NMU
//! (multiplication: z_bo = Π_i (W_c,oi·x_bi + 1 − W_c,oi), W_c = clamp(W, ε, 1)), their sparsity
//! and out-of-bounds regularisers with the λ schedule, the NALU (Trask et al. 2018, as
//! stable-nalu implements it), and the papers' success criterion ([`maep`]).
//!
//! Weights are `[O, I]` (row o holds output o's weights, torch's `Linear` layout), inputs
//! `[B, I]`, outputs `[B, O]`, all row-major. This layer holds the f64 references ([`cpu`]) and
//! the safe API of the kernels (kernels/arith.cu, kernels/arith_nalu.cu): the NAU
//! ([`nau_forward`], [`nau_backward`]: library GEMMs around fused weight passes), the NMU
//! ([`nmu_forward`], [`nmu_backward`]), the regularisers and the NALU ([`nalu_forward`],
//! [`nalu_backward`]: fused passes around IEEE-f32 GEMMs); on host tensors the API runs the
//! references.
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
mod spec;

pub use maep::{Operation, Subsets, maep_threshold};
pub use spec::{
    NaluGradients, NaluWeights, NauOutput, NmuOutput, NmuSaved, NmuSavedRef, RegGradients, RegOutput, RegShape, Unit,
    UnitGradients,
};

// cuda.rs is the one copy of the launch code, compiled against each kernel library built in.
crate::core::launch::launch_code!("cuda.rs");

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};

/// The NMU's ε: finite, in [0, 1].
fn check_nmu_eps(eps: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::InvalidValue {
            arg: "eps",
            reason: format!("{eps}: the NMU clamps to [eps, 1], eps in [0, 1]"),
        });
    }
    Ok(())
}

/// x `[B, I]` (floating) and the weight `[O, I]` of its dtype on its device (named in errors as
/// the caller's argument): (B, I, O).
fn unit_dims(x: &Tensor, (w_name, w): (&'static str, &Tensor)) -> Result<(usize, usize, usize)> {
    let device = x.device();
    check(&device, &[Arg::new("x", x).float()])?;
    if x.shape().len() != 2 {
        return Err(Error::Shape { arg: "x", expected: "[batch, in]".into(), got: x.shape().to_vec() });
    }
    let (batch, inputs) = (x.shape()[0], x.shape()[1]);
    if w.shape().len() != 2 {
        return Err(Error::Shape { arg: w_name, expected: format!("[out, {inputs}]"), got: w.shape().to_vec() });
    }
    let outputs = w.shape()[0];
    check(&device, &[Arg::new(w_name, w).dtype_of("x", x).shape(vec![outputs, inputs])])?;
    // The kernels' limits (kiln.h): batch < 2^31, in and out at most 65535 tiles of 64.
    let limit = 65535 * 64;
    if batch >= 1 << 31 || inputs > limit || outputs > limit {
        return Err(Error::Shape {
            arg: "x",
            expected: format!("batch < 2^31, in and out ≤ {limit}"),
            got: vec![batch, inputs, outputs],
        });
    }
    Ok((batch, inputs, outputs))
}

/// NAU forward: z = x·W_cᵀ, W_c = clamp(W, −1, 1). With `reg` the pass over W that clamps it
/// also computes the NAU's regularisers in that shape (W needs at least one weight then). The
/// GEMM runs in cuBLASLt with IEEE f32 math for f32 (TF32 would round x by 2^-11, far above
/// the errors the success criterion allows). On host tensors it runs the f64 references.
pub fn nau_forward(x: &Tensor, w: &Tensor, reg: Option<RegShape>) -> Result<NauOutput> {
    let dims @ (batch, inputs, outputs) = unit_dims(x, ("w", w))?;
    if reg.is_some() {
        reg_len(w)?;
    }
    match Gpu::of(&x.device())? {
        None => {
            let z = cpu::nau_forward(&x.host_f64(), &w.host_f64(), batch, inputs, outputs)?;
            let reg = match reg {
                Some(shape) => Some(host_regularizers(Unit::Nau, shape, w)?),
                None => None,
            };
            Ok(NauOutput { z: Tensor::from_f64(&z, &[batch, outputs], x.dtype())?, reg })
        }
        Some(gpu) => on_backend!(&gpu, nau_forward(x, w, reg, dims, &gpu)),
    }
}

/// NAU backward: dx = dz·W_c and dW = dzᵀ·x where −1 ≤ W ≤ 1 (0 elsewhere), with `reg` plus the
/// regularisers' gradient, added in the same pass over dW. Run to run the result is bitwise the
/// same on one GPU model (cuBLASLt's reproducibility guarantee for a toolkit version and an SM
/// count; the weight pass is elementwise). On host tensors it runs the f64 references.
pub fn nau_backward(x: &Tensor, w: &Tensor, dz: &Tensor, reg: Option<RegGradients>) -> Result<UnitGradients> {
    let dims @ (batch, inputs, outputs) = unit_dims(x, ("w", w))?;
    check(&x.device(), &[Arg::new("dz", dz).dtype_of("x", x).shape(vec![batch, outputs])])?;
    if let Some(r) = reg {
        check(
            &x.device(),
            &[
                Arg::new("dsparse", r.dsparse).dtype(DType::F32).shape(vec![1]),
                Arg::new("doob", r.doob).dtype(DType::F32).shape(vec![1]),
            ],
        )?;
        reg_len(w)?;
    }
    match Gpu::of(&x.device())? {
        None => {
            let ws = w.host_f64();
            let g = cpu::nau_backward(&x.host_f64(), &ws, &dz.host_f64(), batch, inputs, outputs)?;
            let mut dw = g.dw;
            if let Some(r) = reg {
                let (ds, db) = (r.dsparse.host_f64()[0], r.doob.host_f64()[0]);
                let extra = cpu::regularizers_backward(Unit::Nau, r.shape, &ws, ds, db)?;
                dw.iter_mut().zip(extra).for_each(|(d, e)| *d += e);
            }
            Ok(UnitGradients {
                dx: Tensor::from_f64(&g.dx, &[batch, inputs], x.dtype())?,
                dw: Tensor::from_f64(&dw, &[outputs, inputs], x.dtype())?,
            })
        }
        Some(gpu) => on_backend!(&gpu, nau_backward(x, w, dz, reg, dims, &gpu)),
    }
}

/// NMU forward: z = Π_i (W_c·(x − 1) + 1) per (b, o), W_c = clamp(W, ε, 1) (ε = 0 by default).
/// `save` keeps what [`nmu_backward`] needs. On host tensors it runs the f64 reference.
pub fn nmu_forward(x: &Tensor, w: &Tensor, eps: f32, save: bool) -> Result<NmuOutput> {
    let dims @ (batch, inputs, outputs) = unit_dims(x, ("w", w))?;
    check_nmu_eps(eps)?;
    match Gpu::of(&x.device())? {
        None => {
            let (xs, ws, e) = (x.host_f64(), w.host_f64(), f64::from(eps));
            let z = cpu::nmu_forward(&xs, &ws, batch, inputs, outputs, e)?;
            let saved = if save {
                let (prod, zeros) = cpu::nmu_nonzero_products(&xs, &ws, batch, inputs, outputs, e)?;
                let zeros: Vec<i32> = zeros.into_iter().map(|c| c as i32).collect();
                Some(NmuSaved {
                    prod: Tensor::from_f64(&prod, &[batch, outputs], DType::F32)?,
                    zeros: Tensor::from_vec(zeros, &[batch, outputs])?,
                })
            } else {
                None
            };
            Ok(NmuOutput { z: Tensor::from_f64(&z, &[batch, outputs], x.dtype())?, saved })
        }
        Some(gpu) => on_backend!(&gpu, nmu_forward(x, w, eps, save, dims, &gpu)),
    }
}

/// NMU backward from the forward's [`NmuSaved`] (the same x, w and ε): dx and dW, dW reduced
/// over the batch in a fixed order (deterministic). On host tensors it runs the f64 reference.
pub fn nmu_backward(x: &Tensor, w: &Tensor, dz: &Tensor, saved: NmuSavedRef, eps: f32) -> Result<UnitGradients> {
    let dims @ (batch, inputs, outputs) = unit_dims(x, ("w", w))?;
    check_nmu_eps(eps)?;
    check(
        &x.device(),
        &[
            Arg::new("dz", dz).dtype_of("x", x).shape(vec![batch, outputs]),
            Arg::new("prod", saved.prod).dtype(DType::F32).shape(vec![batch, outputs]),
            Arg::new("zeros", saved.zeros).dtype(DType::I32).shape(vec![batch, outputs]),
        ],
    )?;
    match Gpu::of(&x.device())? {
        None => {
            let g = cpu::nmu_backward(
                &x.host_f64(),
                &w.host_f64(),
                &dz.host_f64(),
                batch,
                inputs,
                outputs,
                f64::from(eps),
            )?;
            Ok(UnitGradients {
                dx: Tensor::from_f64(&g.dx, &[batch, inputs], x.dtype())?,
                dw: Tensor::from_f64(&g.dw, &[outputs, inputs], x.dtype())?,
            })
        }
        Some(gpu) => on_backend!(&gpu, nmu_backward(x, w, dz, saved, eps, dims, &gpu)),
    }
}

/// The NALU's ε: log(|x| + ε) needs ε > 0 (stable-nalu's default 1e-7), at most 1.
fn check_nalu_eps(eps: f32) -> Result<()> {
    if !(eps > 0.0 && eps <= 1.0) {
        return Err(Error::InvalidValue { arg: "eps", reason: format!("{eps}: log(|x| + eps) needs 0 < eps <= 1") });
    }
    Ok(())
}

/// x `[B, I]` and the NALU's weights of its dtype on its device: (B, I, O).
fn nalu_dims(x: &Tensor, p: NaluWeights) -> Result<(usize, usize, usize)> {
    let dims @ (_, inputs, outputs) = unit_dims(x, ("w_hat", p.w_hat))?;
    check(
        &x.device(),
        &[
            Arg::new("m_hat", p.m_hat).dtype_of("x", x).shape(vec![outputs, inputs]),
            Arg::new("g", p.g).dtype_of("x", x).shape(vec![outputs, inputs]),
            Arg::new("bias", p.bias).dtype_of("x", x).shape(vec![outputs]),
        ],
    )?;
    Ok(dims)
}

fn host_nalu(p: NaluWeights) -> [Vec<f64>; 4] {
    [p.w_hat.host_f64(), p.m_hat.host_f64(), p.g.host_f64(), p.bias.host_f64()]
}

/// NALU forward (stable-nalu's defaults: one NAC weight for both paths, ε = 1e-7):
/// y = g·(x·Wᵀ) + (1 − g)·exp(log(|x| + ε)·Wᵀ), W = tanh(Ŵ)·σ(M̂), g = σ(x·Gᵀ + b). On a device:
/// fused passes (kernels/arith_nalu.cu) around three IEEE-f32 library GEMMs, every intermediate
/// f32. On host tensors it runs the f64 reference.
pub fn nalu_forward(x: &Tensor, p: NaluWeights, eps: f32) -> Result<Tensor> {
    let dims @ (batch, inputs, outputs) = nalu_dims(x, p)?;
    check_nalu_eps(eps)?;
    match Gpu::of(&x.device())? {
        None => {
            let [w_hat, m_hat, g, bias] = host_nalu(p);
            let params = cpu::NaluParams { w_hat: &w_hat, m_hat: &m_hat, g: &g, bias: &bias };
            let y = cpu::nalu_forward(&x.host_f64(), params, batch, inputs, outputs, f64::from(eps))?;
            Tensor::from_f64(&y, &[batch, outputs], x.dtype())
        }
        Some(gpu) => on_backend!(&gpu, nalu_forward(x, p, eps, dims, &gpu)),
    }
}

/// NALU backward: every gradient given dy `[B, O]`. The device path recomputes the forward's
/// passes and GEMMs (nothing saved), then the combine's gradients, five GEMMs and two passes;
/// deterministic run to run on one GPU model. On host tensors it runs the f64 reference.
pub fn nalu_backward(x: &Tensor, p: NaluWeights, dy: &Tensor, eps: f32) -> Result<NaluGradients> {
    let dims @ (batch, inputs, outputs) = nalu_dims(x, p)?;
    check_nalu_eps(eps)?;
    check(&x.device(), &[Arg::new("dy", dy).dtype_of("x", x).shape(vec![batch, outputs])])?;
    match Gpu::of(&x.device())? {
        None => {
            let [w_hat, m_hat, g, bias] = host_nalu(p);
            let params = cpu::NaluParams { w_hat: &w_hat, m_hat: &m_hat, g: &g, bias: &bias };
            let gr = cpu::nalu_backward(&x.host_f64(), params, &dy.host_f64(), batch, inputs, outputs, f64::from(eps))?;
            let t = |v: &[f64], shape: &[usize]| Tensor::from_f64(v, shape, x.dtype());
            Ok(NaluGradients {
                dx: t(&gr.dx, &[batch, inputs])?,
                dw_hat: t(&gr.dw_hat, &[outputs, inputs])?,
                dm_hat: t(&gr.dm_hat, &[outputs, inputs])?,
                dg: t(&gr.dg, &[outputs, inputs])?,
                dbias: t(&gr.dbias, &[outputs])?,
            })
        }
        Some(gpu) => on_backend!(&gpu, nalu_backward(x, p, dy, eps, dims, &gpu)),
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

/// The regularisers of `unit`'s weights `w` (any shape, at least one entry; means over every
/// entry) in `shape`: R_sparse, R_oob and the sparsity error, each a `[1]` f32 tensor on w's
/// device. One pass over the weights, deterministic. On host tensors it runs the reference.
pub fn regularizers(unit: Unit, shape: RegShape, w: &Tensor) -> Result<RegOutput> {
    check(&w.device(), &[Arg::new("w", w).float()])?;
    let n = reg_len(w)?;
    match Gpu::of(&w.device())? {
        None => host_regularizers(unit, shape, w),
        Some(gpu) => on_backend!(&gpu, regularizers(unit, shape, w, n, &gpu)),
    }
}

/// The regularisers of host weights, by the f64 reference.
fn host_regularizers(unit: Unit, shape: RegShape, w: &Tensor) -> Result<RegOutput> {
    let r = cpu::regularizers(unit, shape, &w.host_f64())?;
    let one = |v: f64| Tensor::from_f64(&[v], &[1], DType::F32);
    Ok(RegOutput { sparse: one(r.sparse)?, oob: one(r.oob)?, sparsity_error: one(r.sparsity_error)? })
}

/// The gradient of dsparse·R_sparse + doob·R_oob with respect to `w` (dsparse, doob: `[1]` f32
/// tensors on w's device, as a framework's autograd holds them), in w's dtype and shape. On
/// host tensors it runs the reference.
pub fn regularizers_backward(
    unit: Unit,
    shape: RegShape,
    w: &Tensor,
    dsparse: &Tensor,
    doob: &Tensor,
) -> Result<Tensor> {
    check(
        &w.device(),
        &[
            Arg::new("w", w).float(),
            Arg::new("dsparse", dsparse).dtype(DType::F32).shape(vec![1]),
            Arg::new("doob", doob).dtype(DType::F32).shape(vec![1]),
        ],
    )?;
    let n = reg_len(w)?;
    match Gpu::of(&w.device())? {
        None => {
            let (ds, db) = (dsparse.host_f64()[0], doob.host_f64()[0]);
            let dw = cpu::regularizers_backward(unit, shape, &w.host_f64(), ds, db)?;
            Tensor::from_f64(&dw, w.shape(), w.dtype())
        }
        Some(gpu) => on_backend!(&gpu, regularizers_backward(unit, shape, w, dsparse, doob, n, &gpu)),
    }
}

/// The number of weights: at least one (the regularisers are means), at most 2^52 (kiln.h).
fn reg_len(w: &Tensor) -> Result<usize> {
    let n = w.len();
    if n == 0 || n > 1 << 52 {
        return Err(Error::Shape { arg: "w", expected: "1 to 2^52 weights".into(), got: w.shape().to_vec() });
    }
    Ok(n)
}
