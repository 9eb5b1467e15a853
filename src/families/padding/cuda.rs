// The padding family's launch code, compiled once per kernel library: padding/mod.rs
// includes this file in `on_cuda` (with `ffi` = crate::bindings::ffi) and in `on_emu` (with `ffi` =
// crate::bindings::ffi_emu). Arguments are validated by mod.rs; this allocates outputs, status word and
// workspace, and calls the C ABI on the device.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use super::spec::{Keep, Unpadded, UnpaddedOnDevice, data_status};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gpu::Gpu;
use crate::core::launch::check_status;
use crate::core::tensor::Tensor;

/// Workspace for a padding call on `batch × seqlen` tokens (None when none is needed).
fn workspace(gpu: &Gpu, batch: usize, seqlen: usize) -> Result<(Option<Tensor>, i64)> {
    // SAFETY: a pure size computation.
    let bytes = unsafe { ffi::kiln_padding_workspace_bytes(batch as i64, seqlen as i64) }.max(0);
    Ok((gpu.workspace(bytes)?, bytes))
}

fn i32s(len: usize, gpu: &Gpu) -> Result<Tensor> {
    Tensor::uninit(&[len], DType::I32, &gpu.device())
}

pub(in crate::families::padding) fn unpad(hidden: &Tensor, keep: &Keep, capacity: usize, gpu: &Gpu) -> Result<UnpaddedOnDevice> {
    gpu.bind()?;
    let mut shape = hidden.shape()[1..].to_vec();
    shape[0] = capacity;
    let mut out = UnpaddedOnDevice {
        packed: Tensor::uninit(&shape, hidden.dtype(), &gpu.device())?,
        indices: i32s(capacity, gpu)?,
        cu_seqlens: i32s(hidden.shape()[0] + 1, gpu)?,
        counts: i32s(2, gpu)?,
        status: i32s(1, gpu)?,
    };
    {
        let (pp, _pg) = out.packed.dev_ptr_mut(gpu);
        let (np, _ng) = out.counts.dev_ptr_mut(gpu);
        let (sp, _sg) = out.status.dev_ptr_mut(gpu);
        let outputs = UnpadOutputs { packed: pp as *mut c_void, counts: np as *mut i32, status: sp as *mut i32 };
        call_unpad(hidden, keep, capacity, outputs, &mut out.indices, &mut out.cu_seqlens, gpu)?;
    }
    Ok(out)
}

/// unpad into tensors of exactly nnz rows: one index pass (kiln.h's unpad with
/// `packed` NULL, indices sized for every token: 4 bytes a token), one read-back of {nnz,
/// max_seqlen, data status}, the first nnz indices copied on the device, and the rows gathered
/// (no read-back: the indices are in range by construction). A mask is read once, by the
/// one-pass look-back (capacity = every token); it was read four times (a counting call, then
/// the whole unpad again at the exact capacity, each counting and indexing).
pub(in crate::families::padding) fn unpad_exact(hidden: &Tensor, keep: &Keep, gpu: &Gpu) -> Result<Unpadded> {
    gpu.bind()?;
    let device = gpu.device();
    let tokens = hidden.shape()[0] * hidden.shape()[1];
    let mut all_indices = i32s(tokens, gpu)?;
    let mut cu_seqlens = i32s(hidden.shape()[0] + 1, gpu)?;
    // Zeroed: a data error (a length out of range) writes the status word and not the counts.
    let mut stats = Tensor::zeros(&[3], DType::I32, &device)?;
    {
        let (stp, _stg) = stats.dev_ptr_mut(gpu);
        // counts at stats[0..2], the status word at stats[2] (4-byte aligned, as the ABI asks).
        let outputs = UnpadOutputs {
            packed: null_mut(),
            counts: stp as *mut i32,
            status: (stp + 2 * std::mem::size_of::<i32>() as u64) as *mut i32,
        };
        call_unpad(hidden, keep, tokens, outputs, &mut all_indices, &mut cu_seqlens, gpu)?;
    }
    let stats = stats.to_f64_vec()?;
    let (nnz, max_seqlen) = (stats[0] as usize, stats[1] as usize);
    data_status(stats[2] as i32, nnz, tokens)?;
    let mut indices = Tensor::uninit(&[nnz], DType::I32, &device)?;
    indices.copy_region(0, &all_indices, 0, nnz)?;
    let mut shape = hidden.shape()[1..].to_vec();
    shape[0] = nnz;
    let (packed, _status_word) = gather_unchecked(hidden, &indices, &shape, gpu)?;
    Ok(Unpadded { packed, indices, cu_seqlens, max_seqlen })
}

/// Device pointers of kiln_padding_unpad_fwd's outputs besides indices and cu_seqlens (the
/// caller's guards keep them alive).
struct UnpadOutputs {
    packed: *mut c_void,
    counts: *mut i32,
    status: *mut i32,
}

/// kiln_padding_unpad_fwd on `hidden` (validated by mod.rs) with the given outputs.
fn call_unpad(
    hidden: &Tensor,
    keep: &Keep,
    capacity: usize,
    outputs: UnpadOutputs,
    indices: &mut Tensor,
    cu_seqlens: &mut Tensor,
    gpu: &Gpu,
) -> Result<()> {
    let (batch, seqlen) = (hidden.shape()[0], hidden.shape()[1]);
    let dim: usize = hidden.shape()[2..].iter().product();
    let (mut ws, ws_bytes) = workspace(gpu, batch, seqlen)?;
    let (hp, _hg) = hidden.dev_ptr(gpu);
    let (mask, seqlens) = match *keep {
        Keep::Mask(m) => (Some(m), None),
        Keep::Seqlens(l) => (None, Some(l)),
    };
    let mask_ptr = mask.map(|m| m.dev_ptr(gpu));
    let seqlens_ptr = seqlens.map(|l| l.dev_ptr(gpu));
    let mask_dtype = mask.map_or(DType::U8, |m| m.dtype()).to_ffi();
    let (ip, _ig) = indices.dev_ptr_mut(gpu);
    let (cp, _cg) = cu_seqlens.dev_ptr_mut(gpu);
    let wsg = ws.as_mut().map(|w| w.dev_ptr_mut(gpu));
    // SAFETY: shapes and dtypes validated by the caller; every guard (here and the caller's for
    // `outputs`) outlives the launch; indices holds `capacity` entries.
    let status = unsafe {
        ffi::kiln_padding_unpad_fwd(
            hidden.dtype().to_ffi(),
            hp as *const c_void,
            mask_dtype,
            mask_ptr.as_ref().map_or(null(), |p| p.0 as *const c_void),
            seqlens_ptr.as_ref().map_or(null(), |p| p.0 as *const i32),
            batch as i64,
            seqlen as i64,
            dim as i64,
            capacity as i64,
            outputs.packed,
            ip as *mut i32,
            cp as *mut i32,
            outputs.counts,
            outputs.status,
            wsg.as_ref().map_or(null_mut(), |w| w.0 as *mut c_void),
            ws_bytes,
            gpu.stream(),
        )
    };
    check_status(gpu, status, || "kiln_padding_unpad_fwd".into())
}

/// Reads the status word back (waits for the stream) and maps it to an error.
fn finish(status: &Tensor, capacity: usize) -> Result<()> {
    data_status(status.to_f64_vec()?[0] as i32, 0, capacity)
}

pub(in crate::families::padding) fn pad(packed: &Tensor, indices: &Tensor, shape: &[usize], gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let device = gpu.device();
    let (batch, seqlen) = (shape[0], shape[1]);
    let dim: usize = shape[2..].iter().product();
    let nnz = indices.len();
    let mut hidden = Tensor::uninit(shape, packed.dtype(), &device)?;
    let mut status_word = i32s(1, gpu)?;
    let (mut ws, ws_bytes) = workspace(gpu, batch, seqlen)?;
    let (pp, _pg) = packed.dev_ptr(gpu);
    let (ip, _ig) = indices.dev_ptr(gpu);
    let (hp, hg) = hidden.dev_ptr_mut(gpu);
    let (sp, sg) = status_word.dev_ptr_mut(gpu);
    let wsg = ws.as_mut().map(|w| w.dev_ptr_mut(gpu));
    // SAFETY: validated shapes; guards outlive the launch; nnz is the host count.
    let status = unsafe {
        ffi::kiln_padding_pad_fwd(
            packed.dtype().to_ffi(),
            pp as *const c_void,
            ip as *const i32,
            null(),
            nnz as i64,
            batch as i64,
            seqlen as i64,
            dim as i64,
            hp as *mut c_void,
            sp as *mut i32,
            wsg.as_ref().map_or(null_mut(), |w| w.0 as *mut c_void),
            ws_bytes,
            gpu.stream(),
        )
    };
    drop((hg, sg));
    check_status(gpu, status, || "kiln_padding_pad_fwd".into())?;
    finish(&status_word, nnz)?;
    Ok(hidden)
}

pub(in crate::families::padding) fn gather(hidden: &Tensor, indices: &Tensor, shape: &[usize], gpu: &Gpu) -> Result<Tensor> {
    let (packed, status_word) = gather_unchecked(hidden, indices, shape, gpu)?;
    finish(&status_word, indices.len())?;
    Ok(packed)
}

/// kiln_padding_gather_fwd of every index without reading its status word back (no host
/// synchronisation): for indices that are in range by construction (unpad's own).
pub(in crate::families::padding) fn gather_unchecked(
    hidden: &Tensor,
    indices: &Tensor,
    shape: &[usize],
    gpu: &Gpu,
) -> Result<(Tensor, Tensor)> {
    gpu.bind()?;
    let (batch, seqlen) = (hidden.shape()[0], hidden.shape()[1]);
    let dim: usize = hidden.shape()[2..].iter().product();
    let nnz = indices.len();
    let mut packed = Tensor::uninit(shape, hidden.dtype(), &gpu.device())?;
    let mut status_word = i32s(1, gpu)?;
    let (hp, _hg) = hidden.dev_ptr(gpu);
    let (ip, _ig) = indices.dev_ptr(gpu);
    let (pp, pg) = packed.dev_ptr_mut(gpu);
    let (sp, sg) = status_word.dev_ptr_mut(gpu);
    // SAFETY: validated shapes; guards outlive the launch.
    let status = unsafe {
        ffi::kiln_padding_gather_fwd(
            hidden.dtype().to_ffi(),
            hp as *const c_void,
            ip as *const i32,
            null(),
            nnz as i64,
            batch as i64,
            seqlen as i64,
            dim as i64,
            pp as *mut c_void,
            sp as *mut i32,
            gpu.stream(),
        )
    };
    drop((pg, sg));
    check_status(gpu, status, || "kiln_padding_gather_fwd".into())?;
    Ok((packed, status_word))
}
