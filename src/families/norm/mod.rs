//! Fused residual add + LayerNorm / RMSNorm in low precision (MosaicBERT's encoder):
//! y = norm(x + residual)·γ + β over the last dimension, with the residual, γ and β each
//! optional; f32 statistics saved for the backward; deterministic dγ/dβ.
//!
//! ```
//! use kiln::{norm::{self, Norm, NormKind}, DType, Tensor};
//!
//! let x = Tensor::from_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0], &[2, 4], DType::BF16)?;
//! let ln = Norm { kind: NormKind::LayerNorm, eps: 1e-5, gamma: None, beta: None };
//! let out = norm::forward(&ln, &x, None, false)?;
//! let y = out.y.to_f32_vec()?;
//! assert!((y[0] + 1.3416).abs() < 1e-2);   // (1 − 2.5)/√1.25
//! assert_eq!(&y[4..], &[0.0; 4]);          // a constant row normalises to β = 0
//! let dy = Tensor::from_f32(&[1.0; 8], &[2, 4], DType::BF16)?;
//! let g = norm::backward(&ln, &dy, &x, None, &out.stats, None)?;
//! assert!(g.dx.to_f32_vec()?.iter().all(|v| v.abs() < 1e-3)); // a uniform dy has no effect
//! # Ok::<(), kiln::Error>(())
//! ```

pub mod cpu;
mod spec;
pub(crate) use spec::StatsRef;
pub use spec::{MAX_DIM, Norm, NormGrads, NormKind, NormOutput, Stats};

// cuda.rs is the one copy of the launch code, compiled against each kernel library built in.
crate::core::launch::launch_code!("cuda.rs");

use crate::core::dtype::DType;
use crate::core::error::{Error, Result, ensure};
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;
use crate::core::validate::Arg;

fn host_opt(t: Option<&Tensor>) -> Option<Vec<f64>> {
    t.map(|t| t.host_f64())
}

/// y = norm(x + residual)·γ + β. `keep_residual` also returns x + residual (for the next
/// block's residual stream); it needs a residual.
pub fn forward(norm: &Norm, x: &Tensor, residual: Option<&Tensor>, keep_residual: bool) -> Result<NormOutput> {
    let (rows, dim) =
        norm.validate(x, |_| residual.map(|r| Arg::new("residual", r).like("x", x)).into_iter().collect())?;
    ensure(!keep_residual || residual.is_some(), "residual", || "keep_residual needs a residual".into())?;
    match Gpu::of(&x.device())? {
        None => {
            let (g, b, r) = (host_opt(norm.gamma), host_opt(norm.beta), host_opt(residual));
            let f =
                cpu::forward(norm.kind, &x.host_f64(), r.as_deref(), g.as_deref(), b.as_deref(), dim, norm.eps as f64);
            let stat = |v: &[f64]| Tensor::from_f64(v, &[rows], DType::F32);
            Ok(NormOutput {
                y: Tensor::from_f64(&f.y, x.shape(), x.dtype())?,
                residual_out: if keep_residual { Some(Tensor::from_f64(&f.s, x.shape(), x.dtype())?) } else { None },
                stats: Stats {
                    mean: if norm.kind == NormKind::LayerNorm { Some(stat(&f.mean)?) } else { None },
                    rstd: stat(&f.rstd)?,
                },
            })
        }
        Some(gpu) => on_backend!(&gpu, forward(norm, x, residual, keep_residual, (rows, dim), &gpu)),
    }
}

/// Gradients of y (and of residual_out through `dresidual_out`) given the forward's inputs
/// and statistics. Pass the same `x` and `residual` as the forward, or the forward's
/// residual_out as `x` with no residual. (The host path checks `stats` but recomputes them
/// in f64; the kernels read them.)
pub fn backward(
    norm: &Norm,
    dy: &Tensor,
    x: &Tensor,
    residual: Option<&Tensor>,
    stats: &Stats,
    dresidual_out: Option<&Tensor>,
) -> Result<NormGrads> {
    backward_with(norm, dy, x, residual, StatsRef { mean: stats.mean.as_ref(), rstd: &stats.rstd }, dresidual_out)
}

/// [`backward`] over borrowed statistics.
pub(crate) fn backward_with(
    norm: &Norm,
    dy: &Tensor,
    x: &Tensor,
    residual: Option<&Tensor>,
    stats: StatsRef,
    dresidual_out: Option<&Tensor>,
) -> Result<NormGrads> {
    let (rows, dim) = norm.validate(x, |rows| {
        let like = [("dy", Some(dy)), ("residual", residual), ("dresidual_out", dresidual_out)];
        let mut args: Vec<Arg> =
            like.into_iter().filter_map(|(name, t)| t.map(|t| Arg::new(name, t).like("x", x))).collect();
        args.push(Arg::new("rstd", stats.rstd).dtype(DType::F32).shape(vec![rows]));
        if let (Some(m), NormKind::LayerNorm) = (stats.mean, norm.kind) {
            args.push(Arg::new("mean", m).dtype(DType::F32).shape(vec![rows]));
        }
        args
    })?;
    if stats.mean.is_none() && norm.kind == NormKind::LayerNorm {
        return Err(Error::InvalidValue {
            arg: "mean",
            reason: "LayerNorm's backward needs the forward's mean".into(),
        });
    }
    match Gpu::of(&x.device())? {
        None => {
            let xs = x.host_f64();
            let s: Vec<f64> = match residual {
                Some(r) => xs.iter().zip(r.host_f64()).map(|(a, b)| a + b).collect(),
                None => xs,
            };
            // The reference recomputes the statistics in f64 rather than reading the f32
            // ones (which only the kernels need): it stays the exact f64 computation.
            let f = cpu::forward(norm.kind, &s, None, None, None, dim, norm.eps as f64);
            let g = host_opt(norm.gamma);
            let dro = host_opt(dresidual_out);
            let b = cpu::backward(norm.kind, &dy.host_f64(), &s, (&f.mean, &f.rstd), g.as_deref(), dro.as_deref(), dim);
            let ds = Tensor::from_f64(&b.ds, x.shape(), x.dtype())?;
            Ok(NormGrads {
                dresidual: if residual.is_some() { Some(Tensor::from_f64(&b.ds, x.shape(), x.dtype())?) } else { None },
                dx: ds,
                dgamma: if norm.gamma.is_some() {
                    Some(Tensor::from_f64(&b.dgamma, &[dim], DType::F32)?)
                } else {
                    None
                },
                dbeta: if norm.beta.is_some() { Some(Tensor::from_f64(&b.dbeta, &[dim], DType::F32)?) } else { None },
            })
        }
        Some(gpu) => on_backend!(&gpu, backward(norm, dy, x, residual, stats, dresidual_out, (rows, dim), &gpu)),
    }
}
