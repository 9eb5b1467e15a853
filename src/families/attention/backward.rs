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
use super::spec::{Attention, Bias, Dims, HostInputs, validate_backward};
pub use super::spec::{AttentionGrads, BackwardInputs, BiasGrads};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
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
        None => reference(attn, x, want, &dims),
        Some(gpu) => on_backend!(&gpu, backward(attn, x, want, &dims, &gpu, None::<i32>)),
    }
}

/// The backward's tile variants of each head dimension, as kiln.h's
/// `kiln_attention_bwd_variant_name` names them (the dq kernel's warps × keys per tile, the
/// dk/dv kernel's warps × queries per step: every pair; tests/suite/attention_variants.rs holds the
/// two lists equal). The first is the default.
const VARIANTS_128: [&str; 12] = [
    "dq 4w x 32k, dkdv 4w x 32q",
    "dq 4w x 32k, dkdv 8w x 32q",
    "dq 4w x 32k, dkdv 8w x 16q",
    "dq 4w x 32k, dkdv 4w x 16q",
    "dq 8w x 32k, dkdv 4w x 32q",
    "dq 8w x 32k, dkdv 8w x 32q",
    "dq 8w x 32k, dkdv 8w x 16q",
    "dq 8w x 32k, dkdv 4w x 16q",
    "dq 8w x 16k, dkdv 4w x 32q",
    "dq 8w x 16k, dkdv 8w x 32q",
    "dq 8w x 16k, dkdv 8w x 16q",
    "dq 8w x 16k, dkdv 4w x 16q",
];
const VARIANTS_64: [&str; 16] = [
    "dq 4w x 64k, dkdv 4w x 64q",
    "dq 4w x 64k, dkdv 4w x 32q",
    "dq 4w x 64k, dkdv 8w x 64q",
    "dq 4w x 64k, dkdv 8w x 32q",
    "dq 4w x 32k, dkdv 4w x 64q",
    "dq 4w x 32k, dkdv 4w x 32q",
    "dq 4w x 32k, dkdv 8w x 64q",
    "dq 4w x 32k, dkdv 8w x 32q",
    "dq 8w x 64k, dkdv 4w x 64q",
    "dq 8w x 64k, dkdv 4w x 32q",
    "dq 8w x 64k, dkdv 8w x 64q",
    "dq 8w x 64k, dkdv 8w x 32q",
    "dq 8w x 32k, dkdv 4w x 64q",
    "dq 8w x 32k, dkdv 4w x 32q",
    "dq 8w x 32k, dkdv 8w x 64q",
    "dq 8w x 32k, dkdv 8w x 32q",
];

/// The names of the backward kernels' tile variants for head dimension `head_dim` (kiln.h
/// `kiln_attention_bwd_variants`): 12 at D = 128 (3 dq × 4 dk/dv configurations), 16 at D = 64,
/// none otherwise.
pub fn backward_variant_names(head_dim: usize) -> &'static [&'static str] {
    match head_dim {
        128 => &VARIANTS_128,
        64 => &VARIANTS_64,
        _ => &[],
    }
}

/// How many tile variants the backward has for head dimension `head_dim`.
pub fn backward_variants(head_dim: usize) -> usize {
    backward_variant_names(head_dim).len()
}

/// [`backward`] through tile variant `variant` of its head dimension (kiln.h
/// `kiln_attention_alibi_bwd_variant`): the same results from another tile configuration, for
/// tuning sweeps; variant 0 is the one [`backward`] runs. bf16 only, without geometric ALiBi.
/// On the host it is [`backward`].
pub fn backward_variant(
    attn: &Attention,
    variant: usize,
    x: &BackwardInputs,
    want: BiasGrads,
) -> Result<AttentionGrads> {
    let dims = validate_backward(attn, x, want)?;
    let count = backward_variants(dims.head_dim);
    if variant >= count {
        return Err(Error::InvalidValue {
            arg: "variant",
            reason: format!("{variant}: head dim {} has {count} backward variants", dims.head_dim),
        });
    }
    if x.q.dtype() != DType::BF16 {
        return Err(Error::DType { arg: "q", expected: "bf16 (the variants' only dtype)".into(), got: x.q.dtype() });
    }
    if matches!(attn.bias, Bias::Geometric { .. }) {
        return Err(Error::InvalidValue { arg: "bias", reason: "the variants run no geometric ALiBi".into() });
    }
    match Gpu::of(&x.q.device())? {
        None => reference(attn, x, want, &dims),
        Some(gpu) => {
            let variant = Some(variant as i32);
            on_backend!(&gpu, backward(attn, x, want, &dims, &gpu, variant))
        }
    }
}

/// The host path: the f64 reference on validated `dims`.
fn reference(attn: &Attention, x: &BackwardInputs, want: BiasGrads, dims: &Dims) -> Result<AttentionGrads> {
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
    let dpositions =
        if want.positions { Some(Tensor::from_f64(&g.dpositions, &[dims.total_q, 3], DType::F32)?) } else { None };
    Ok(AttentionGrads {
        dq: Tensor::from_f64(&g.dq, x.q.shape(), x.q.dtype())?,
        dk: Tensor::from_f64(&g.dk, x.k.shape(), x.k.dtype())?,
        dv: Tensor::from_f64(&g.dv, x.v.shape(), x.v.dtype())?,
        dslopes,
        dpositions,
    })
}
