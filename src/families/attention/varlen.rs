//! Attention over packed (variable-length) sequences, forward: the API and the entry points
//! to its launch code that the padded form shares.
//!
//! Layer: families. Imports core, the attention spec and its reference.

use super::cpu;
#[cfg(any(feature = "cuda", feature = "emu"))]
use super::spec::Dims;
use super::spec::{Attention, AttentionOutput, HostInputs, validate};
use crate::core::dtype::DType;
use crate::core::error::Result;
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
        None => {
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
        Some(gpu) => on_backend!(&gpu, forward(attn, q, k, v, cu_seqlens_q, cu_seqlens_k, &dims, &gpu)),
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
    on_backend!(gpu, forward(attn, q, k, v, cu_seqlens_q, cu_seqlens_k, dims, gpu))
}

/// The packed log-sum-exp `[H, nnz]` scattered back to `[H, tokens]` rows by `indices` (the
/// padded form's masked path), on `gpu`.
#[cfg(any(feature = "cuda", feature = "emu"))]
pub(super) fn launch_lse_pad(lse_packed: &Tensor, indices: &Tensor, tokens: usize, gpu: &Gpu) -> Result<Tensor> {
    on_backend!(gpu, lse_pad(lse_packed, indices, tokens, gpu))
}
