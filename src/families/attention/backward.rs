//! Attention backward with ALiBi: dq, dk, dv from the forward's inputs, its output and
//! log-sum-exp and the gradient of the output, and, opt-in, the gradients of the ALiBi slopes
//! (`[H]` or `[B, H]`, as given) and of the geometric positions (`[total, 3]`). Deterministic:
//! no float atomics, the same bits on every run (FlashAttention-2's tiling with a separate dQ
//! pass; see kernels/attention_bwd.cu).
//!
//! ```
//! use kiln::attention::{self, Attention, Bias, backward::{BackwardInputs, BiasGrads}};
//! use kiln::{DType, Tensor};
//!
//! let values: Vec<f32> = (0..3 * 2 * 32).map(|i| ((i % 7) as f32 - 3.0) / 4.0).collect();
//! let q = Tensor::from_f32(&values, &[3, 2, 32], DType::BF16)?;
//! let cu = Tensor::from_vec(vec![0i32, 3], &[2])?;
//! let slopes = Tensor::from_f32(&attention::alibi_slopes(2), &[2], DType::F32)?;
//! let attn = Attention { causal: true, scale: None, bias: Bias::Alibi { slopes: &slopes } };
//! let o = attention::forward(&attn, &q, &q, &q, &cu, &cu)?;
//! let inputs = BackwardInputs {
//!     q: &q, k: &q, v: &q, cu_seqlens_q: &cu, cu_seqlens_k: &cu, out: &o.out, lse: &o.lse, dout: &q,
//! };
//! let g = attention::backward(&attn, &inputs, BiasGrads { slopes: true, positions: false })?;
//! assert_eq!(g.dq.shape(), &[3, 2, 32]);
//! assert_eq!(g.dslopes.expect("asked for").shape(), &[2]);
//! # Ok::<(), kiln::Error>(())
//! ```

use super::{Attention, Bias, Dims, HostInputs, cpu_backward, validate};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;
use crate::core::validate::same_device;

// cuda_backward.rs is the one copy of the backward's launch code, compiled per kernel library.
crate::core::launch::launch_code!("cuda_backward.rs");

/// The tensors the backward reads.
#[derive(Clone, Copy, Debug)]
pub struct BackwardInputs<'a> {
    /// `[total_q, H, D]`, as given to the forward.
    pub q: &'a Tensor,
    /// `[total_k, H_k, D]`.
    pub k: &'a Tensor,
    /// `[total_k, H_k, D]`.
    pub v: &'a Tensor,
    /// i32 `[B + 1]`.
    pub cu_seqlens_q: &'a Tensor,
    /// i32 `[B + 1]`.
    pub cu_seqlens_k: &'a Tensor,
    /// The forward's output, `[total_q, H, D]` in q's dtype.
    pub out: &'a Tensor,
    /// The forward's log-sum-exp, f32 `[H, total_q]`.
    pub lse: &'a Tensor,
    /// The gradient of `out`, `[total_q, H, D]` in q's dtype.
    pub dout: &'a Tensor,
}

/// Which optional gradients to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BiasGrads {
    /// dslopes (needs ALiBi).
    pub slopes: bool,
    /// dpositions (needs geometric ALiBi).
    pub positions: bool,
}

/// What [`backward`](crate::families::attention::backward()) returns.
#[derive(Debug)]
pub struct AttentionGrads {
    /// `[total_q, H, D]` in q's dtype.
    pub dq: Tensor,
    /// `[total_k, H_k, D]`.
    pub dk: Tensor,
    /// `[total_k, H_k, D]`.
    pub dv: Tensor,
    /// f32, the shape of the slopes, when asked for.
    pub dslopes: Option<Tensor>,
    /// f32 `[total, 3]`, when asked for.
    pub dpositions: Option<Tensor>,
}

fn like_q(arg: &'static str, q: &Tensor, t: &Tensor) -> Result<()> {
    same_device(arg, &q.device(), t)?;
    if t.dtype() != q.dtype() {
        return Err(Error::DType { arg, expected: format!("{} (the dtype of q)", q.dtype()), got: t.dtype() });
    }
    if t.shape() != q.shape() {
        return Err(Error::Shape {
            arg,
            expected: format!("{:?} (the shape of q)", q.shape()),
            got: t.shape().to_vec(),
        });
    }
    Ok(())
}

/// Validates the backward's arguments on top of the forward's.
fn validate_backward(attn: &Attention, x: &BackwardInputs, want: BiasGrads) -> Result<Dims> {
    let dims = validate(attn, x.q, x.k, x.v, x.cu_seqlens_q, x.cu_seqlens_k)?;
    like_q("out", x.q, x.out)?;
    like_q("dout", x.q, x.dout)?;
    same_device("lse", &x.q.device(), x.lse)?;
    if x.lse.dtype() != DType::F32 {
        return Err(Error::DType { arg: "lse", expected: "f32".into(), got: x.lse.dtype() });
    }
    if x.lse.shape() != [dims.heads, dims.total_q] {
        return Err(Error::Shape {
            arg: "lse",
            expected: format!("[{}, {}] ([heads, total_q])", dims.heads, dims.total_q),
            got: x.lse.shape().to_vec(),
        });
    }
    if want.slopes && matches!(attn.bias, Bias::None) {
        return Err(Error::InvalidValue { arg: "dslopes", reason: "asked for without ALiBi slopes".into() });
    }
    if want.positions && !matches!(attn.bias, Bias::Geometric { .. }) {
        return Err(Error::InvalidValue { arg: "dpositions", reason: "asked for without geometric ALiBi".into() });
    }
    Ok(dims)
}

/// Attention backward: the gradients of the loss with respect to q, k, v (and, when `want`
/// says so, the slopes and positions) from dout, its gradient with respect to the forward's
/// output. `out` and `lse` are the forward's results for the same inputs (the kernels recompute
/// the probabilities from the log-sum-exp; the CPU reference recomputes everything in f64 and
/// reads neither). Reads the cu_seqlens to validate them (a host synchronisation on a GPU).
pub fn backward(attn: &Attention, x: &BackwardInputs, want: BiasGrads) -> Result<AttentionGrads> {
    let dims = validate_backward(attn, x, want)?;
    match Gpu::of(&x.q.device())? {
        None => {
            let host = HostInputs::of(attn, x.q, x.k, x.v);
            let g = cpu_backward::backward(
                &host.problem(attn, (&dims.cu_q, &dims.cu_k), [dims.heads, dims.heads_k, dims.head_dim], dims.scale),
                &x.dout.host_f64(),
            );
            let dslopes = match (want.slopes, attn.bias) {
                (true, Bias::Alibi { slopes } | Bias::Geometric { slopes, .. }) => {
                    Some(Tensor::from_f64(&g.dslopes, slopes.shape(), DType::F32)?)
                }
                _ => None,
            };
            let dpositions = if want.positions {
                Some(Tensor::from_f64(&g.dpositions, &[dims.total_q, 3], DType::F32)?)
            } else {
                None
            };
            Ok(AttentionGrads {
                dq: Tensor::from_f64(&g.dq, x.q.shape(), x.q.dtype())?,
                dk: Tensor::from_f64(&g.dk, x.k.shape(), x.k.dtype())?,
                dv: Tensor::from_f64(&g.dv, x.v.shape(), x.v.dtype())?,
                dslopes,
                dpositions,
            })
        }
        Some(gpu) => on_backend!(&gpu, backward(attn, x, want, &dims, &gpu)),
    }
}
