//! The CUDA path of the norm family: arguments are validated by `mod.rs`; this file
//! allocates outputs and workspace and calls the C ABI on the stream.

use crate::device::CudaDevice;
use crate::error::Result;
use crate::tensor::Tensor;

use super::{Norm, NormGrads, NormOutput, Stats};

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    use crate::error::Error;

    pub(in crate::norm) fn forward(
        _: &Norm,
        _: &Tensor,
        _: Option<&Tensor>,
        _: bool,
        _: (usize, usize),
        _: &CudaDevice,
    ) -> Result<NormOutput> {
        Err(Error::CudaNotCompiled)
    }

    #[allow(clippy::too_many_arguments)]
    pub(in crate::norm) fn backward(
        _: &Norm,
        _: &Tensor,
        _: &Tensor,
        _: Option<&Tensor>,
        _: &Stats,
        _: Option<&Tensor>,
        _: (usize, usize),
        _: &CudaDevice,
    ) -> Result<NormGrads> {
        Err(Error::CudaNotCompiled)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::ffi::c_void;
    use std::ptr::{null, null_mut};

    use cudarc::driver::{CudaStream, DevicePtrMut, SyncOnDrop};

    use super::*;
    use crate::device::Device;
    use crate::dtype::DType;
    use crate::ffi;
    use crate::launch::check_status;
    use crate::norm::NormKind;

    /// Read pointer of an optional tensor (null when absent) and its guard.
    fn opt<'a>(t: Option<&'a Tensor>, s: &'a CudaStream) -> (u64, Option<SyncOnDrop<'a>>) {
        match t.map(|t| t.cuda_ptr(s)) {
            Some((p, g)) => (p, Some(g)),
            None => (0, None),
        }
    }

    /// Write pointer of an optional output (null when absent) and its guard.
    fn opt_mut<'a>(t: Option<&'a mut Tensor>, s: &'a CudaStream) -> (u64, Option<SyncOnDrop<'a>>) {
        match t.map(|t| t.cuda_ptr_mut(s)) {
            Some((p, g)) => (p, Some(g)),
            None => (0, None),
        }
    }

    fn ptr(p: u64) -> *const c_void {
        if p == 0 { null() } else { p as *const c_void }
    }

    fn ptr_mut(p: u64) -> *mut c_void {
        if p == 0 { null_mut() } else { p as *mut c_void }
    }

    pub(in crate::norm) fn forward(
        norm: &Norm,
        x: &Tensor,
        residual: Option<&Tensor>,
        keep_residual: bool,
        (rows, dim): (usize, usize),
        d: &CudaDevice,
    ) -> Result<NormOutput> {
        d.context().bind_to_thread()?;
        let s = d.stream();
        let device = Device::Cuda(d.clone());
        let mut y = Tensor::uninit(x.shape(), x.dtype(), &device)?;
        let mut residual_out = if keep_residual { Some(Tensor::uninit(x.shape(), x.dtype(), &device)?) } else { None };
        let layer = norm.kind == NormKind::LayerNorm;
        let mut mean = if layer { Some(Tensor::uninit(&[rows], DType::F32, &device)?) } else { None };
        let mut rstd = Tensor::uninit(&[rows], DType::F32, &device)?;
        let status = {
            let (xp, _xg) = x.cuda_ptr(s);
            let (rp, _rg) = opt(residual, s);
            let (gp, _gg) = opt(norm.gamma, s);
            let (bp, _bg) = opt(norm.beta, s);
            let (yp, _yg) = y.cuda_ptr_mut(s);
            let (op, _og) = opt_mut(residual_out.as_mut(), s);
            let (mp, _mg) = opt_mut(mean.as_mut(), s);
            let (sp, _sg) = rstd.cuda_ptr_mut(s);
            let (dtype, stream) = (x.dtype().to_ffi(), s.cu_stream() as *mut c_void);
            // SAFETY: shapes and dtypes validated by the caller; guards outlive the launch.
            unsafe {
                if layer {
                    ffi::kiln_norm_layernorm_fwd(
                        dtype,
                        ptr(xp),
                        ptr(rp),
                        ptr(gp) as *const f32,
                        ptr(bp) as *const f32,
                        rows as i64,
                        dim as i64,
                        norm.eps,
                        ptr_mut(yp),
                        ptr_mut(op),
                        ptr_mut(mp) as *mut f32,
                        ptr_mut(sp) as *mut f32,
                        stream,
                    )
                } else {
                    ffi::kiln_norm_rmsnorm_fwd(
                        dtype,
                        ptr(xp),
                        ptr(rp),
                        ptr(gp) as *const f32,
                        ptr(bp) as *const f32,
                        rows as i64,
                        dim as i64,
                        norm.eps,
                        ptr_mut(yp),
                        ptr_mut(op),
                        ptr_mut(sp) as *mut f32,
                        stream,
                    )
                }
            }
        };
        let name = if layer { "kiln_norm_layernorm_fwd" } else { "kiln_norm_rmsnorm_fwd" };
        check_status(status, || name.into())?;
        Ok(NormOutput { y, residual_out, stats: Stats { mean, rstd } })
    }

    #[allow(clippy::too_many_arguments)]
    pub(in crate::norm) fn backward(
        norm: &Norm,
        dy: &Tensor,
        x: &Tensor,
        residual: Option<&Tensor>,
        stats: &Stats,
        dresidual_out: Option<&Tensor>,
        (rows, dim): (usize, usize),
        d: &CudaDevice,
    ) -> Result<NormGrads> {
        d.context().bind_to_thread()?;
        let s = d.stream();
        let device = Device::Cuda(d.clone());
        let layer = norm.kind == NormKind::LayerNorm;
        let mut dx = Tensor::uninit(x.shape(), x.dtype(), &device)?;
        let mut dresidual =
            if residual.is_some() { Some(Tensor::uninit(x.shape(), x.dtype(), &device)?) } else { None };
        let mut dgamma = if norm.gamma.is_some() { Some(Tensor::uninit(&[dim], DType::F32, &device)?) } else { None };
        let mut dbeta = if norm.beta.is_some() { Some(Tensor::uninit(&[dim], DType::F32, &device)?) } else { None };
        let ws_bytes = if dgamma.is_some() || dbeta.is_some() {
            // SAFETY: a pure size computation.
            unsafe { ffi::kiln_norm_workspace_bytes(rows as i64, dim as i64) }.max(0)
        } else {
            0
        };
        // SAFETY: the kernels write every workspace byte they later read.
        let mut ws = if ws_bytes > 0 { Some(unsafe { s.alloc::<u8>(ws_bytes as usize) }?) } else { None };
        let status = {
            let (dyp, _dyg) = dy.cuda_ptr(s);
            let (xp, _xg) = x.cuda_ptr(s);
            let (rp, _rg) = opt(residual, s);
            let (mp, _mg) = opt(stats.mean.as_ref(), s);
            let (sp, _sg) = stats.rstd.cuda_ptr(s);
            let (gp, _gg) = opt(norm.gamma, s);
            let (dop, _dog) = opt(dresidual_out, s);
            let (dxp, _dxg) = dx.cuda_ptr_mut(s);
            let (drp, _drg) = opt_mut(dresidual.as_mut(), s);
            let (dgp, _dgg) = opt_mut(dgamma.as_mut(), s);
            let (dbp, _dbg) = opt_mut(dbeta.as_mut(), s);
            let wsg = ws.as_mut().map(|w| w.device_ptr_mut(s));
            let wsp = wsg.as_ref().map_or(0, |w| w.0);
            let (dtype, stream) = (x.dtype().to_ffi(), s.cu_stream() as *mut c_void);
            // SAFETY: shapes and dtypes validated by the caller; guards outlive the launch.
            unsafe {
                if layer {
                    ffi::kiln_norm_layernorm_bwd(
                        dtype,
                        ptr(dyp),
                        ptr(xp),
                        ptr(rp),
                        ptr(mp) as *const f32,
                        ptr(sp) as *const f32,
                        ptr(gp) as *const f32,
                        ptr(dop),
                        rows as i64,
                        dim as i64,
                        ptr_mut(dxp),
                        ptr_mut(drp),
                        ptr_mut(dgp) as *mut f32,
                        ptr_mut(dbp) as *mut f32,
                        ptr_mut(wsp),
                        ws_bytes,
                        stream,
                    )
                } else {
                    ffi::kiln_norm_rmsnorm_bwd(
                        dtype,
                        ptr(dyp),
                        ptr(xp),
                        ptr(rp),
                        ptr(sp) as *const f32,
                        ptr(gp) as *const f32,
                        ptr(dop),
                        rows as i64,
                        dim as i64,
                        ptr_mut(dxp),
                        ptr_mut(drp),
                        ptr_mut(dgp) as *mut f32,
                        ptr_mut(dbp) as *mut f32,
                        ptr_mut(wsp),
                        ws_bytes,
                        stream,
                    )
                }
            }
        };
        let name = if layer { "kiln_norm_layernorm_bwd" } else { "kiln_norm_rmsnorm_bwd" };
        check_status(status, || name.into())?;
        Ok(NormGrads { dx, dresidual, dgamma, dbeta })
    }
}

pub(super) use imp::{backward, forward};
