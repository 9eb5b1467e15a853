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
//! let attn = Attention { causal: true, scale: None, bias: Bias::Alibi { slopes: &slopes }, prefix_len: None };
//! let o = attention::forward(&attn, &q, &q, &q, &cu, &cu)?;
//! let inputs = BackwardInputs {
//!     q: &q, k: &q, v: &q, cu_seqlens_q: &cu, cu_seqlens_k: &cu, out: &o.out, lse: &o.lse, dout: &q,
//! };
//! let g = attention::backward(&attn, &inputs, BiasGrads { slopes: true, positions: false })?;
//! assert_eq!(g.dq.shape(), &[3, 2, 32]);
//! assert_eq!(g.dslopes.expect("asked for").shape(), &[2]);
//! # Ok::<(), kiln::Error>(())
//! ```

use super::cpu_backward;
use super::spec::{Attention, Bias, HostInputs, validate_backward};
pub use super::spec::{AttentionGrads, BackwardInputs, BiasGrads};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;

// cuda_backward.rs is the one copy of the backward's launch code, compiled per kernel library.
crate::core::launch::launch_code!("cuda_backward.rs");

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
