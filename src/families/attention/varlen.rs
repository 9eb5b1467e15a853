//! Attention over packed (variable-length) sequences, forward: the API and the entry points
//! to its launch code that the padded form shares.
//!
//! Layer: families. Imports core, the attention spec and its reference.

use super::cpu;
use super::spec::Dims;
use super::spec::{Attention, AttentionOutput, Bias, HostInputs, validate};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;

// cuda.rs is the one copy of the launch code, compiled against each kernel library built in.
crate::core::launch::launch_code!("cuda.rs");

/// Attention forward over packed sequences: q `[total_q, H, D]`, k and v `[total_k, H_k, D]`
/// (f16 or bf16, one dtype; H % H_k = 0; D in [`HEAD_DIMS`]), `cu_seqlens_q/k` i32 `[B + 1]`
/// (prefix sums of the sequence lengths; zero-length sequences allowed). Reads the cu_seqlens
/// to validate them (a host synchronisation on a GPU).
pub fn forward(
    attn: &Attention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens_q: &Tensor,
    cu_seqlens_k: &Tensor,
) -> Result<AttentionOutput> {
    let dims = validate(attn, q, k, v, cu_seqlens_q, cu_seqlens_k)?;
    match Gpu::of(&q.device())? {
        None => reference(attn, q, k, v, &dims),
        Some(gpu) => on_backend!(&gpu, forward(attn, q, k, v, cu_seqlens_q, cu_seqlens_k, &dims, &gpu, None::<i32>)),
    }
}

/// The forward's tile variants of each head dimension, as kiln.h's
/// `kiln_attention_fwd_variant_name` names them (warps × query rows per warp × keys per tile;
/// three K/V stages where named `x 3s`, two otherwise; tests/suite/attention_variants.rs holds
/// the two lists equal). The first is the default.
const VARIANTS_128: [&str; 8] = [
    "4w x 32q x 32k",
    "8w x 16q x 64k",
    "4w x 16q x 64k",
    "8w x 32q x 32k",
    "4w x 32q x 16k",
    "4w x 32q x 32k x 3s",
    "8w x 16q x 64k x 3s",
    "4w x 16q x 64k x 3s",
];
const VARIANTS_64: [&str; 8] = [
    "4w x 32q x 64k",
    "8w x 16q x 64k",
    "4w x 16q x 64k",
    "4w x 16q x 128k",
    "8w x 32q x 64k",
    "8w x 16q x 128k",
    "4w x 32q x 64k x 3s",
    "8w x 16q x 64k x 3s",
];

/// The names of the forward kernel's tile variants for head dimension `head_dim` (kiln.h
/// `kiln_attention_fwd_variants`): 8 at D = 128 and at D = 64, none otherwise.
pub fn forward_variant_names(head_dim: usize) -> &'static [&'static str] {
    match head_dim {
        128 => &VARIANTS_128,
        64 => &VARIANTS_64,
        _ => &[],
    }
}

/// The host path: the f64 reference on validated `dims`.
fn reference(attn: &Attention, q: &Tensor, k: &Tensor, v: &Tensor, dims: &Dims) -> Result<AttentionOutput> {
    let host = HostInputs::of(attn, q, k, v);
    let f = cpu::forward(&host.problem(
        attn,
        (&dims.cu_q, &dims.cu_k),
        [dims.heads, dims.heads_k, dims.head_dim],
        dims.scale,
    ));
    Ok(AttentionOutput {
        out: Tensor::from_f64(&f.out, q.shape(), q.dtype())?,
        lse: Tensor::from_f64(&f.lse, &[dims.heads, dims.total_q], DType::F32)?,
    })
}

/// How many tile variants the forward kernel has for head dimension `head_dim`.
pub fn forward_variants(head_dim: usize) -> usize {
    forward_variant_names(head_dim).len()
}

/// [`forward`] through tile variant `variant` of its head dimension (kiln.h
/// `kiln_attention_alibi_fwd_variant`): the same results from another tile configuration
/// (warps, query rows per warp, keys per tile), for tuning sweeps; variant 0 is the one
/// [`forward`] runs. bf16 only, without geometric ALiBi. On the host it is [`forward`].
pub fn forward_variant(
    attn: &Attention,
    variant: usize,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens_q: &Tensor,
    cu_seqlens_k: &Tensor,
) -> Result<AttentionOutput> {
    let dims = validate(attn, q, k, v, cu_seqlens_q, cu_seqlens_k)?;
    let count = forward_variants(dims.head_dim);
    if variant >= count {
        return Err(Error::InvalidValue {
            arg: "variant",
            reason: format!("{variant}: head dim {} has {count} forward variants", dims.head_dim),
        });
    }
    if q.dtype() != DType::BF16 {
        return Err(Error::DType { arg: "q", expected: "bf16 (the variants' only dtype)".into(), got: q.dtype() });
    }
    if matches!(attn.bias, Bias::Geometric { .. }) {
        return Err(Error::InvalidValue { arg: "bias", reason: "the variants run no geometric ALiBi".into() });
    }
    match Gpu::of(&q.device())? {
        None => reference(attn, q, k, v, &dims),
        Some(gpu) => {
            let variant = Some(variant as i32);
            on_backend!(&gpu, forward(attn, q, k, v, cu_seqlens_q, cu_seqlens_k, &dims, &gpu, variant))
        }
    }
}

/// The forward kernels on `gpu` for validated `dims` (the padded form runs them on its padded
/// tensors as they are).
#[cfg(any(feature = "cuda", feature = "emu"))]
#[allow(clippy::too_many_arguments)]
pub(super) fn launch_forward(
    attn: &Attention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens_q: &Tensor,
    cu_seqlens_k: &Tensor,
    dims: &Dims,
    gpu: &Gpu,
) -> Result<AttentionOutput> {
    on_backend!(gpu, forward(attn, q, k, v, cu_seqlens_q, cu_seqlens_k, dims, gpu, None::<i32>))
}

/// The packed log-sum-exp `[H, nnz]` scattered back to `[H, tokens]` rows by `indices` (the
/// padded form's masked path), on `gpu`.
#[cfg(any(feature = "cuda", feature = "emu"))]
pub(super) fn launch_lse_pad(lse_packed: &Tensor, indices: &Tensor, tokens: usize, gpu: &Gpu) -> Result<Tensor> {
    on_backend!(gpu, lse_pad(lse_packed, indices, tokens, gpu))
}
