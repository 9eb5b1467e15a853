// The norm family's launch code, compiled once per kernel library: norm/mod.rs includes
// this file in `on_cuda` (with `ffi` = crate::bindings::ffi) and in `on_emu` (with `ffi` =
// crate::bindings::ffi_emu). Arguments are validated by mod.rs; this allocates outputs and workspace
// and calls the C ABI on the device.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use super::spec::{Norm, NormGrads, NormKind, NormOutput, Stats, StatsRef};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gpu::{Gpu, Guard};
use crate::core::launch::check_status;
use crate::core::tensor::Tensor;

/// Read pointer of an optional tensor (null when absent) and its guard.
fn opt<'a>(t: Option<&'a Tensor>, gpu: &'a Gpu) -> (u64, Option<Guard<'a>>) {
    match t.map(|t| t.dev_ptr(gpu)) {
        Some((p, g)) => (p, Some(g)),
        None => (0, None),
    }
}

/// Write pointer of an optional output (null when absent) and its guard.
fn opt_mut<'a>(t: Option<&'a mut Tensor>, gpu: &'a Gpu) -> (u64, Option<Guard<'a>>) {
    match t.map(|t| t.dev_ptr_mut(gpu)) {
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

pub(in crate::families::norm) fn forward(
    norm: &Norm,
    x: &Tensor,
    residual: Option<&Tensor>,
    keep_residual: bool,
    (rows, dim): (usize, usize),
    gpu: &Gpu,
) -> Result<NormOutput> {
    gpu.bind()?;
    let device = gpu.device();
    let mut y = Tensor::uninit(x.shape(), x.dtype(), &device)?;
    let mut residual_out = if keep_residual { Some(Tensor::uninit(x.shape(), x.dtype(), &device)?) } else { None };
    let layer = norm.kind == NormKind::LayerNorm;
    let mut mean = if layer { Some(Tensor::uninit(&[rows], DType::F32, &device)?) } else { None };
    let mut rstd = Tensor::uninit(&[rows], DType::F32, &device)?;
    let status = {
        let (xp, _xg) = x.dev_ptr(gpu);
        let (rp, _rg) = opt(residual, gpu);
        let (gp, _gg) = opt(norm.gamma, gpu);
        let (bp, _bg) = opt(norm.beta, gpu);
        let (yp, _yg) = y.dev_ptr_mut(gpu);
        let (op, _og) = opt_mut(residual_out.as_mut(), gpu);
        let (mp, _mg) = opt_mut(mean.as_mut(), gpu);
        let (sp, _sg) = rstd.dev_ptr_mut(gpu);
        let (dtype, stream) = (x.dtype().to_ffi(), gpu.stream());
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
    check_status(gpu, status, || name.into())?;
    Ok(NormOutput { y, residual_out, stats: Stats { mean, rstd } })
}

#[allow(clippy::too_many_arguments)]
pub(in crate::families::norm) fn backward(
    norm: &Norm,
    dy: &Tensor,
    x: &Tensor,
    residual: Option<&Tensor>,
    stats: StatsRef,
    dresidual_out: Option<&Tensor>,
    (rows, dim): (usize, usize),
    gpu: &Gpu,
) -> Result<NormGrads> {
    gpu.bind()?;
    let device = gpu.device();
    let layer = norm.kind == NormKind::LayerNorm;
    let mut dx = Tensor::uninit(x.shape(), x.dtype(), &device)?;
    let mut dresidual = if residual.is_some() { Some(Tensor::uninit(x.shape(), x.dtype(), &device)?) } else { None };
    let mut dgamma = if norm.gamma.is_some() { Some(Tensor::uninit(&[dim], DType::F32, &device)?) } else { None };
    let mut dbeta = if norm.beta.is_some() { Some(Tensor::uninit(&[dim], DType::F32, &device)?) } else { None };
    let ws_bytes = if dgamma.is_some() || dbeta.is_some() {
        // SAFETY: a pure size computation.
        unsafe { ffi::kiln_norm_workspace_bytes(rows as i64, dim as i64) }.max(0)
    } else {
        0
    };
    let mut ws = gpu.workspace(ws_bytes)?;
    let status = {
        let (dyp, _dyg) = dy.dev_ptr(gpu);
        let (xp, _xg) = x.dev_ptr(gpu);
        let (rp, _rg) = opt(residual, gpu);
        let (mp, _mg) = opt(stats.mean, gpu);
        let (sp, _sg) = stats.rstd.dev_ptr(gpu);
        let (gp, _gg) = opt(norm.gamma, gpu);
        let (dop, _dog) = opt(dresidual_out, gpu);
        let (dxp, _dxg) = dx.dev_ptr_mut(gpu);
        let (drp, _drg) = opt_mut(dresidual.as_mut(), gpu);
        let (dgp, _dgg) = opt_mut(dgamma.as_mut(), gpu);
        let (dbp, _dbg) = opt_mut(dbeta.as_mut(), gpu);
        let wsg = ws.as_mut().map(|w| w.dev_ptr_mut(gpu));
        let wsp = wsg.as_ref().map_or(0, |w| w.0);
        let (dtype, stream) = (x.dtype().to_ffi(), gpu.stream());
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
    check_status(gpu, status, || name.into())?;
    Ok(NormGrads { dx, dresidual, dgamma, dbeta })
}
