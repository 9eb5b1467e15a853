// The attention family's launch code, compiled once per kernel library: attention/mod.rs
// includes this file in `on_cuda` (with `ffi` = crate::bindings::ffi) and in `on_emu` (with `ffi` =
// crate::bindings::ffi_emu). Arguments are validated by mod.rs; this allocates the outputs and calls the
// C ABI on the device.

use std::ffi::c_void;
use std::ptr::null;

use crate::families::attention::spec::{Attention, AttentionOutput, Bias, Dims};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gpu::Gpu;
use crate::core::launch::check_status;
use crate::core::tensor::Tensor;

#[allow(clippy::too_many_arguments)]
pub(in crate::families::attention) fn forward(
    attn: &Attention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens_q: &Tensor,
    cu_seqlens_k: &Tensor,
    dims: &Dims,
    gpu: &Gpu,
    variant: Option<i32>,
) -> Result<AttentionOutput> {
    gpu.bind()?;
    let device = gpu.device();
    let mut out = Tensor::uninit(q.shape(), q.dtype(), &device)?;
    let mut lse = Tensor::uninit(&[dims.heads, dims.total_q], DType::F32, &device)?;
    let (slopes, positions) = match attn.bias {
        Bias::None => (None, None),
        Bias::Alibi { slopes } => (Some(slopes), None),
        Bias::Geometric { slopes, positions } => (Some(slopes), Some(positions)),
    };
    let status = {
        let (qp, _qg) = q.dev_ptr(gpu);
        let (kp, _kg) = k.dev_ptr(gpu);
        let (vp, _vg) = v.dev_ptr(gpu);
        let (cqp, _cqg) = cu_seqlens_q.dev_ptr(gpu);
        let (ckp, _ckg) = cu_seqlens_k.dev_ptr(gpu);
        let slopes = slopes.map(|t| t.dev_ptr(gpu));
        let positions = positions.map(|t| t.dev_ptr(gpu));
        let prefix = attn.prefix_len.map(|t| t.dev_ptr(gpu));
        let (op, _og) = out.dev_ptr_mut(gpu);
        let (lp, _lg) = lse.dev_ptr_mut(gpu);
        let f32_ptr = |p: &Option<(u64, _)>| p.as_ref().map_or(null(), |(p, _)| *p as *const f32);
        // SAFETY: shapes, dtypes, devices and the cu_seqlens contents were validated by mod.rs;
        // the guards (the `_…g` bindings and those inside `slopes`/`positions`) outlive the
        // launch, and the outputs are fresh allocations of the sizes the launcher writes.
        // The default launcher and a tile variant take the same arguments after the variant's.
        macro_rules! launch {
            ($f:path $(, $variant:expr)?) => {
                $f(
                    $($variant,)?
                    q.dtype().to_ffi(),
                    qp as *const c_void,
                    kp as *const c_void,
                    vp as *const c_void,
                    cqp as *const i32,
                    ckp as *const i32,
                    f32_ptr(&slopes),
                    dims.slopes_per_batch as i32,
                    f32_ptr(&positions),
                    dims.batch() as i64,
                    dims.total_q as i64,
                    dims.total_k as i64,
                    dims.heads as i64,
                    dims.heads_k as i64,
                    dims.head_dim as i64,
                    dims.max_seqlen_q() as i64,
                    attn.causal as i32,
                    prefix.as_ref().map_or(null(), |(p, _)| *p as *const i32),
                    dims.scale,
                    op as *mut c_void,
                    lp as *mut f32,
                    gpu.stream(),
                )
            };
        }
        unsafe {
            match variant {
                None => launch!(ffi::kiln_attention_alibi_fwd),
                Some(variant) => launch!(ffi::kiln_attention_alibi_fwd_variant, variant),
            }
        }
    };
    check_status(gpu, status, || {
        if variant.is_some() { "kiln_attention_alibi_fwd_variant" } else { "kiln_attention_alibi_fwd" }.into()
    })?;
    Ok(AttentionOutput { out, lse })
}

/// The padded form's lse `[heads, tokens]` from the packed `[heads, nnz]` one and the kept
/// tokens' `indices` (from unpad, so in range and distinct).
pub(in crate::families::attention) fn lse_pad(lse_packed: &Tensor, indices: &Tensor, tokens: usize, gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let (heads, nnz) = (lse_packed.shape()[0], lse_packed.shape()[1]);
    let mut lse = Tensor::uninit(&[heads, tokens], DType::F32, &gpu.device())?;
    let status = {
        let (pp, _pg) = lse_packed.dev_ptr(gpu);
        let (ip, _ig) = indices.dev_ptr(gpu);
        let (lp, _lg) = lse.dev_ptr_mut(gpu);
        // SAFETY: lse_packed is f32 [heads, nnz], indices i32 [nnz] with values in [0, tokens),
        // lse a fresh f32 [heads, tokens]; the guards outlive the launch.
        unsafe {
            ffi::kiln_attention_lse_pad_fwd(
                pp as *const f32,
                ip as *const i32,
                heads as i64,
                nnz as i64,
                tokens as i64,
                lp as *mut f32,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_attention_lse_pad_fwd".into())?;
    Ok(lse)
}
