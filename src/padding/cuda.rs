//! The CUDA path of the padding family: arguments are validated by `mod.rs`; this file
//! allocates outputs, status word and workspace, and calls the C ABI on the stream.

use crate::device::CudaDevice;
use crate::error::Result;
use crate::tensor::Tensor;

use super::{Keep, UnpaddedOnDevice};

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    use crate::error::Error;

    pub(in crate::padding) fn unpad(_: &Tensor, _: &Keep, _: usize, _: &CudaDevice) -> Result<UnpaddedOnDevice> {
        Err(Error::CudaNotCompiled)
    }
    pub(in crate::padding) fn pad(_: &Tensor, _: &Tensor, _: &[usize], _: &CudaDevice) -> Result<Tensor> {
        Err(Error::CudaNotCompiled)
    }
    pub(in crate::padding) fn gather(_: &Tensor, _: &Tensor, _: &[usize], _: &CudaDevice) -> Result<Tensor> {
        Err(Error::CudaNotCompiled)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::ffi::c_void;
    use std::ptr::{null, null_mut};

    use cudarc::driver::DevicePtrMut;

    use super::*;
    use crate::device::Device;
    use crate::dtype::DType;
    use crate::ffi;
    use crate::launch::check_status;
    use crate::padding::data_status;

    /// Workspace for a padding call on `batch × seqlen` tokens (None when none is needed).
    fn workspace(d: &CudaDevice, batch: usize, seqlen: usize) -> Result<(Option<cudarc::driver::CudaSlice<u8>>, i64)> {
        // SAFETY: a pure size computation.
        let bytes = unsafe { ffi::kiln_padding_workspace_bytes(batch as i64, seqlen as i64) }.max(0);
        // SAFETY: the kernels write every workspace byte they later read.
        let ws = if bytes > 0 { Some(unsafe { d.stream().alloc::<u8>(bytes as usize) }?) } else { None };
        Ok((ws, bytes))
    }

    fn i32s(len: usize, d: &CudaDevice) -> Result<Tensor> {
        Tensor::uninit(&[len], DType::I32, &Device::Cuda(d.clone()))
    }

    pub(in crate::padding) fn unpad(
        hidden: &Tensor,
        keep: &Keep,
        capacity: usize,
        d: &CudaDevice,
    ) -> Result<UnpaddedOnDevice> {
        d.context().bind_to_thread()?;
        let s = d.stream();
        let (batch, seqlen) = (hidden.shape()[0], hidden.shape()[1]);
        let dim: usize = hidden.shape()[2..].iter().product();
        let mut shape = hidden.shape()[1..].to_vec();
        shape[0] = capacity;
        let mut out = UnpaddedOnDevice {
            packed: Tensor::uninit(&shape, hidden.dtype(), &Device::Cuda(d.clone()))?,
            indices: i32s(capacity, d)?,
            cu_seqlens: i32s(batch + 1, d)?,
            counts: i32s(2, d)?,
            status: i32s(1, d)?,
        };
        let (mut ws, ws_bytes) = workspace(d, batch, seqlen)?;
        let (hp, _hg) = hidden.cuda_ptr(s);
        let (mask, seqlens) = match *keep {
            Keep::Mask(m) => (Some(m), None),
            Keep::Seqlens(l) => (None, Some(l)),
        };
        let mask_ptr = mask.map(|m| m.cuda_ptr(s));
        let seqlens_ptr = seqlens.map(|l| l.cuda_ptr(s));
        let mask_dtype = mask.map_or(DType::U8, |m| m.dtype()).to_ffi();
        let (pp, _pg) = out.packed.cuda_ptr_mut(s);
        let (ip, _ig) = out.indices.cuda_ptr_mut(s);
        let (cp, _cg) = out.cu_seqlens.cuda_ptr_mut(s);
        let (np, _ng) = out.counts.cuda_ptr_mut(s);
        let (sp, _sg) = out.status.cuda_ptr_mut(s);
        let wsg = ws.as_mut().map(|w| w.device_ptr_mut(s));
        // SAFETY: shapes and dtypes validated by the caller; every guard outlives the launch.
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
                pp as *mut c_void,
                ip as *mut i32,
                cp as *mut i32,
                np as *mut i32,
                sp as *mut i32,
                wsg.as_ref().map_or(null_mut(), |w| w.0 as *mut c_void),
                ws_bytes,
                s.cu_stream() as *mut c_void,
            )
        };
        drop((_pg, _ig, _cg, _ng, _sg));
        check_status(status, || "kiln_padding_unpad_fwd".into())?;
        Ok(out)
    }

    /// Reads the status word back (waits for the stream) and maps it to an error.
    fn finish(status: &Tensor, capacity: usize) -> Result<()> {
        data_status(status.to_f64_vec()?[0] as i32, 0, capacity)
    }

    pub(in crate::padding) fn pad(
        packed: &Tensor,
        indices: &Tensor,
        shape: &[usize],
        d: &CudaDevice,
    ) -> Result<Tensor> {
        d.context().bind_to_thread()?;
        let s = d.stream();
        let device = Device::Cuda(d.clone());
        let (batch, seqlen) = (shape[0], shape[1]);
        let dim: usize = shape[2..].iter().product();
        let nnz = indices.len();
        let mut hidden = Tensor::uninit(shape, packed.dtype(), &device)?;
        let mut status_word = i32s(1, d)?;
        let (mut ws, ws_bytes) = workspace(d, batch, seqlen)?;
        let (pp, _pg) = packed.cuda_ptr(s);
        let (ip, _ig) = indices.cuda_ptr(s);
        let (hp, hg) = hidden.cuda_ptr_mut(s);
        let (sp, sg) = status_word.cuda_ptr_mut(s);
        let wsg = ws.as_mut().map(|w| w.device_ptr_mut(s));
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
                s.cu_stream() as *mut c_void,
            )
        };
        drop((hg, sg));
        check_status(status, || "kiln_padding_pad_fwd".into())?;
        finish(&status_word, nnz)?;
        Ok(hidden)
    }

    pub(in crate::padding) fn gather(
        hidden: &Tensor,
        indices: &Tensor,
        shape: &[usize],
        d: &CudaDevice,
    ) -> Result<Tensor> {
        d.context().bind_to_thread()?;
        let s = d.stream();
        let (batch, seqlen) = (hidden.shape()[0], hidden.shape()[1]);
        let dim: usize = hidden.shape()[2..].iter().product();
        let nnz = indices.len();
        let mut packed = Tensor::uninit(shape, hidden.dtype(), &Device::Cuda(d.clone()))?;
        let mut status_word = i32s(1, d)?;
        let (hp, _hg) = hidden.cuda_ptr(s);
        let (ip, _ig) = indices.cuda_ptr(s);
        let (pp, pg) = packed.cuda_ptr_mut(s);
        let (sp, sg) = status_word.cuda_ptr_mut(s);
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
                s.cu_stream() as *mut c_void,
            )
        };
        drop((pg, sg));
        check_status(status, || "kiln_padding_gather_fwd".into())?;
        finish(&status_word, nnz)?;
        Ok(packed)
    }
}

pub(super) use imp::{gather, pad, unpad};
