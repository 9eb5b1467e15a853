// The attention backward's launch code, compiled once per kernel library: attention/backward.rs
// includes this file in `on_cuda` (with `ffi` = crate::bindings::ffi) and in `on_emu` (with `ffi` =
// crate::bindings::ffi_emu). Arguments are validated by backward.rs; this allocates the gradients and the
// workspace and calls the C ABI on the device.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use crate::families::attention::spec::{Attention, AttentionGrads, BackwardInputs, Bias, BiasGrads, Dims};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gpu::Gpu;
use crate::core::launch::check_status;
use crate::core::tensor::Tensor;

pub(in crate::families::attention) fn backward(
    attn: &Attention,
    x: &BackwardInputs,
    want: BiasGrads,
    dims: &Dims,
    gpu: &Gpu,
    variant: Option<i32>,
) -> Result<AttentionGrads> {
    gpu.bind()?;
    let device = gpu.device();
    let (slopes, positions) = match attn.bias {
        Bias::None => (None, None),
        Bias::Alibi { slopes } => (Some(slopes), None),
        Bias::Geometric { slopes, positions } => (Some(slopes), Some(positions)),
    };
    let mut dq = Tensor::uninit(x.q.shape(), x.q.dtype(), &device)?;
    let mut dk = Tensor::uninit(x.k.shape(), x.k.dtype(), &device)?;
    let mut dv = Tensor::uninit(x.v.shape(), x.v.dtype(), &device)?;
    let mut dslopes = match slopes {
        Some(s) if want.slopes => Some(Tensor::uninit(s.shape(), DType::F32, &device)?),
        _ => None,
    };
    let mut dpositions =
        if want.positions { Some(Tensor::uninit(&[dims.total_q, 3], DType::F32, &device)?) } else { None };
    let (total_q, total_k) = (dims.total_q as i64, dims.total_k as i64);
    // SAFETY: a pure size computation.
    let ws_bytes = unsafe {
        ffi::kiln_attention_alibi_bwd_workspace_bytes(total_q, total_k, dims.heads as i64, dims.heads_k as i64)
    };
    let mut ws = gpu.workspace(ws_bytes)?;
    let max_seqlen_k = dims.cu_k.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let status = {
        let (qp, _qg) = x.q.dev_ptr(gpu);
        let (kp, _kg) = x.k.dev_ptr(gpu);
        let (vp, _vg) = x.v.dev_ptr(gpu);
        let (op, _og) = x.out.dev_ptr(gpu);
        let (lp, _lg) = x.lse.dev_ptr(gpu);
        let (dop, _dog) = x.dout.dev_ptr(gpu);
        let (cqp, _cqg) = x.cu_seqlens_q.dev_ptr(gpu);
        let (ckp, _ckg) = x.cu_seqlens_k.dev_ptr(gpu);
        let slopes = slopes.map(|t| t.dev_ptr(gpu));
        let positions = positions.map(|t| t.dev_ptr(gpu));
        let prefix = attn.prefix_len.map(|t| t.dev_ptr(gpu));
        let (dqp, _dqg) = dq.dev_ptr_mut(gpu);
        let (dkp, _dkg) = dk.dev_ptr_mut(gpu);
        let (dvp, _dvg) = dv.dev_ptr_mut(gpu);
        let dslopes_g = dslopes.as_mut().map(|t| t.dev_ptr_mut(gpu));
        let dpositions_g = dpositions.as_mut().map(|t| t.dev_ptr_mut(gpu));
        let ws_g = ws.as_mut().map(|w| w.dev_ptr_mut(gpu));
        let f32_ptr = |p: &Option<(u64, _)>| p.as_ref().map_or(null(), |(p, _)| *p as *const f32);
        let f32_mut = |p: &Option<(u64, _)>| p.as_ref().map_or(null_mut(), |(p, _)| *p as *mut f32);
        let ws_ptr = ws_g.as_ref().map_or(null_mut(), |(p, _)| *p as *mut c_void);
        // SAFETY: shapes, dtypes, devices and the cu_seqlens contents were validated by
        // backward.rs; the guards (the `_…g` bindings and those inside the options) outlive the
        // launch; the gradients and the workspace are fresh allocations of the sizes the
        // launcher writes and asks for. The default launcher and a tile variant take the same
        // arguments after the variant's.
        macro_rules! launch {
            ($f:path $(, $variant:expr)?) => {
                $f(
                    $($variant,)?
                    x.q.dtype().to_ffi(),
                    qp as *const c_void,
                    kp as *const c_void,
                    vp as *const c_void,
                    op as *const c_void,
                    lp as *const f32,
                    dop as *const c_void,
                    cqp as *const i32,
                    ckp as *const i32,
                    f32_ptr(&slopes),
                    dims.slopes_per_batch as i32,
                    f32_ptr(&positions),
                    dims.batch() as i64,
                    total_q,
                    total_k,
                    dims.heads as i64,
                    dims.heads_k as i64,
                    dims.head_dim as i64,
                    dims.max_seqlen_q() as i64,
                    max_seqlen_k as i64,
                    attn.causal as i32,
                    prefix.as_ref().map_or(null(), |(p, _)| *p as *const i32),
                    dims.scale,
                    dqp as *mut c_void,
                    dkp as *mut c_void,
                    dvp as *mut c_void,
                    f32_mut(&dslopes_g),
                    f32_mut(&dpositions_g),
                    ws_ptr,
                    ws_bytes.max(0),
                    gpu.stream(),
                )
            };
        }
        unsafe {
            match variant {
                None => launch!(ffi::kiln_attention_alibi_bwd),
                Some(variant) => launch!(ffi::kiln_attention_alibi_bwd_variant, variant),
            }
        }
    };
    check_status(gpu, status, || {
        if variant.is_some() { "kiln_attention_alibi_bwd_variant" } else { "kiln_attention_alibi_bwd" }.into()
    })?;
    Ok(AttentionGrads { dq, dk, dv, dslopes, dpositions })
}
