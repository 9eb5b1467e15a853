// The arith family's launch code, compiled once per kernel library: arith/mod.rs includes this
// file in `on_cuda` (with `ffi` = crate::bindings::ffi) and in `on_emu` (with `ffi` =
// crate::bindings::ffi_emu). Arguments are validated by mod.rs; this allocates outputs and
// workspace and calls the C ABI on the device (and, for the NAU, the library GEMMs of core::gemm).

use std::ffi::c_void;
use std::ptr::null_mut;

use super::spec::{
    NauOutput, NmuOutput, NmuSaved, NmuSavedRef, RegGradients, RegOutput, RegShape, Unit, UnitGradients,
};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gemm::{F32Math, gemm, op};
use crate::core::gpu::Gpu;
use crate::core::launch::check_status;
use crate::core::tensor::Tensor;

pub(in crate::families::arith) fn nmu_forward(
    x: &Tensor,
    w: &Tensor,
    eps: f32,
    save: bool,
    (batch, inputs, outputs): (usize, usize, usize),
    gpu: &Gpu,
) -> Result<NmuOutput> {
    gpu.bind()?;
    let device = gpu.device();
    let mut z = Tensor::uninit(&[batch, outputs], x.dtype(), &device)?;
    let mut saved = if save {
        Some(NmuSaved {
            prod: Tensor::uninit(&[batch, outputs], DType::F32, &device)?,
            zeros: Tensor::uninit(&[batch, outputs], DType::I32, &device)?,
        })
    } else {
        None
    };
    let status = {
        let (xp, _xg) = x.dev_ptr(gpu);
        let (wp, _wg) = w.dev_ptr(gpu);
        let (zp, _zg) = z.dev_ptr_mut(gpu);
        let (pp, zerop, _guards) = match saved.as_mut() {
            Some(s) => {
                let (pp, pg) = s.prod.dev_ptr_mut(gpu);
                let (cp, cg) = s.zeros.dev_ptr_mut(gpu);
                (pp as *mut f32, cp as *mut i32, Some((pg, cg)))
            }
            None => (null_mut(), null_mut(), None),
        };
        // SAFETY: shapes and dtypes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_arith_nmu_fwd(
                x.dtype().to_ffi(),
                xp as *const c_void,
                wp as *const c_void,
                batch as i64,
                inputs as i64,
                outputs as i64,
                eps,
                zp as *mut c_void,
                pp,
                zerop,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_nmu_fwd".into())?;
    Ok(NmuOutput { z, saved })
}

pub(in crate::families::arith) fn nmu_backward(
    x: &Tensor,
    w: &Tensor,
    dz: &Tensor,
    saved: NmuSavedRef,
    eps: f32,
    (batch, inputs, outputs): (usize, usize, usize),
    gpu: &Gpu,
) -> Result<UnitGradients> {
    gpu.bind()?;
    let device = gpu.device();
    let mut dx = Tensor::uninit(&[batch, inputs], x.dtype(), &device)?;
    let mut dw = Tensor::uninit(&[outputs, inputs], x.dtype(), &device)?;
    // SAFETY: a pure size computation (sizes validated by the caller).
    let bytes = unsafe { ffi::kiln_arith_nmu_workspace_bytes(batch as i64, inputs as i64, outputs as i64) }.max(0);
    let mut workspace = gpu.workspace(bytes)?;
    let status = {
        let (xp, _xg) = x.dev_ptr(gpu);
        let (wp, _wg) = w.dev_ptr(gpu);
        let (gp, _gg) = dz.dev_ptr(gpu);
        let (pp, _pg) = saved.prod.dev_ptr(gpu);
        let (cp, _cg) = saved.zeros.dev_ptr(gpu);
        let (dxp, _dxg) = dx.dev_ptr_mut(gpu);
        let (dwp, _dwg) = dw.dev_ptr_mut(gpu);
        let (sp, _sg) = match workspace.as_mut() {
            Some(t) => {
                let (p, g) = t.dev_ptr_mut(gpu);
                (p as *mut c_void, Some(g))
            }
            None => (null_mut(), None),
        };
        // SAFETY: shapes and dtypes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_arith_nmu_bwd(
                x.dtype().to_ffi(),
                xp as *const c_void,
                wp as *const c_void,
                gp as *const c_void,
                pp as *const f32,
                cp as *const i32,
                batch as i64,
                inputs as i64,
                outputs as i64,
                eps,
                dxp as *mut c_void,
                dwp as *mut c_void,
                sp,
                bytes,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_nmu_bwd".into())?;
    Ok(UnitGradients { dx, dw })
}

pub(in crate::families::arith) fn regularizers(
    unit: Unit,
    shape: RegShape,
    w: &Tensor,
    n: usize,
    gpu: &Gpu,
) -> Result<RegOutput> {
    gpu.bind()?;
    let device = gpu.device();
    let mut out = RegOutput {
        sparse: Tensor::uninit(&[1], DType::F32, &device)?,
        oob: Tensor::uninit(&[1], DType::F32, &device)?,
        sparsity_error: Tensor::uninit(&[1], DType::F32, &device)?,
    };
    // SAFETY: a pure size computation (n validated by the caller).
    let bytes = unsafe { ffi::kiln_arith_reg_workspace_bytes(n as i64) }.max(0);
    let mut workspace = gpu.workspace(bytes)?;
    let status = {
        let (wp, _wg) = w.dev_ptr(gpu);
        let (sp, _sg) = out.sparse.dev_ptr_mut(gpu);
        let (op, _og) = out.oob.dev_ptr_mut(gpu);
        let (ep, _eg) = out.sparsity_error.dev_ptr_mut(gpu);
        let (kp, _kg) = match workspace.as_mut() {
            Some(t) => {
                let (p, g) = t.dev_ptr_mut(gpu);
                (p as *mut c_void, Some(g))
            }
            None => (null_mut(), None),
        };
        // SAFETY: dtypes and sizes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_arith_reg_fwd(
                w.dtype().to_ffi(),
                unit.to_ffi(),
                shape.to_ffi(),
                wp as *const c_void,
                n as i64,
                sp as *mut f32,
                op as *mut f32,
                ep as *mut f32,
                kp,
                bytes,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_reg_fwd".into())?;
    Ok(out)
}

pub(in crate::families::arith) fn regularizers_backward(
    unit: Unit,
    shape: RegShape,
    w: &Tensor,
    dsparse: &Tensor,
    doob: &Tensor,
    n: usize,
    gpu: &Gpu,
) -> Result<Tensor> {
    gpu.bind()?;
    let mut dw = Tensor::uninit(w.shape(), w.dtype(), &gpu.device())?;
    let status = {
        let (wp, _wg) = w.dev_ptr(gpu);
        let (sp, _sg) = dsparse.dev_ptr(gpu);
        let (bp, _bg) = doob.dev_ptr(gpu);
        let (dp, _dg) = dw.dev_ptr_mut(gpu);
        // SAFETY: dtypes and shapes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_arith_reg_bwd(
                w.dtype().to_ffi(),
                unit.to_ffi(),
                shape.to_ffi(),
                wp as *const c_void,
                n as i64,
                sp as *const f32,
                bp as *const f32,
                dp as *mut c_void,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_reg_bwd".into())?;
    Ok(dw)
}


/// W_c = clamp(W, −1, 1) in W's dtype, and the NAU's regularisers in `reg`'s shape from the same
/// pass (`kiln_arith_nau_weights`).
fn nau_weights(w: &Tensor, reg: Option<RegShape>, gpu: &Gpu) -> Result<(Tensor, Option<RegOutput>)> {
    let device = gpu.device();
    let n = w.len();
    let mut wc = Tensor::uninit(w.shape(), w.dtype(), &device)?;
    let mut out = match reg {
        Some(_) => Some(RegOutput {
            sparse: Tensor::uninit(&[1], DType::F32, &device)?,
            oob: Tensor::uninit(&[1], DType::F32, &device)?,
            sparsity_error: Tensor::uninit(&[1], DType::F32, &device)?,
        }),
        None => None,
    };
    let bytes = if reg.is_some() {
        // SAFETY: a pure size computation (n validated by the caller).
        unsafe { ffi::kiln_arith_reg_workspace_bytes(n as i64) }.max(0)
    } else {
        0
    };
    let mut workspace = gpu.workspace(bytes)?;
    let status = {
        let (wp, _wg) = w.dev_ptr(gpu);
        let (cp, _cg) = wc.dev_ptr_mut(gpu);
        let (sp, op, ep, _guards) = match out.as_mut() {
            Some(r) => {
                let (sp, sg) = r.sparse.dev_ptr_mut(gpu);
                let (op, og) = r.oob.dev_ptr_mut(gpu);
                let (ep, eg) = r.sparsity_error.dev_ptr_mut(gpu);
                (sp as *mut f32, op as *mut f32, ep as *mut f32, Some((sg, og, eg)))
            }
            None => (null_mut(), null_mut(), null_mut(), None),
        };
        let (kp, _kg) = match workspace.as_mut() {
            Some(t) => {
                let (p, g) = t.dev_ptr_mut(gpu);
                (p as *mut c_void, Some(g))
            }
            None => (null_mut(), None),
        };
        // SAFETY: dtypes and sizes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_arith_nau_weights(
                w.dtype().to_ffi(),
                wp as *const c_void,
                n as i64,
                cp as *mut c_void,
                reg.unwrap_or(RegShape::Linear).to_ffi(),
                sp,
                op,
                ep,
                kp,
                bytes,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_nau_weights".into())?;
    Ok((wc, out))
}

pub(in crate::families::arith) fn nau_forward(
    x: &Tensor,
    w: &Tensor,
    reg: Option<RegShape>,
    (batch, inputs, outputs): (usize, usize, usize),
    gpu: &Gpu,
) -> Result<NauOutput> {
    gpu.bind()?;
    let (wc, reg) = nau_weights(w, reg, gpu)?;
    // An empty sum (no inputs) is 0; cuBLASLt takes no k = 0.
    if batch == 0 || outputs == 0 || inputs == 0 {
        return Ok(NauOutput { z: Tensor::zeros(&[batch, outputs], x.dtype(), &gpu.device())?, reg });
    }
    let mut z = Tensor::uninit(&[batch, outputs], x.dtype(), &gpu.device())?;
    gemm(gpu, F32Math::Ieee, (batch, inputs, outputs), op(x, inputs, false), op(&wc, inputs, true), &mut z, (0, outputs), 0.0, None)?;
    Ok(NauOutput { z, reg })
}

pub(in crate::families::arith) fn nau_backward(
    x: &Tensor,
    w: &Tensor,
    dz: &Tensor,
    reg: Option<RegGradients>,
    (batch, inputs, outputs): (usize, usize, usize),
    gpu: &Gpu,
) -> Result<UnitGradients> {
    gpu.bind()?;
    let device = gpu.device();
    let (wc, _) = nau_weights(w, None, gpu)?;
    let dx = if batch == 0 || inputs == 0 || outputs == 0 {
        Tensor::zeros(&[batch, inputs], x.dtype(), &device)?
    } else {
        let mut dx = Tensor::uninit(&[batch, inputs], x.dtype(), &device)?;
        gemm(gpu, F32Math::Ieee, (batch, outputs, inputs), op(dz, outputs, false), op(&wc, inputs, false), &mut dx, (0, inputs), 0.0, None)?;
        dx
    };
    let mut dw = if batch == 0 || inputs == 0 || outputs == 0 {
        Tensor::zeros(&[outputs, inputs], x.dtype(), &device)?
    } else {
        let mut dw = Tensor::uninit(&[outputs, inputs], x.dtype(), &device)?;
        gemm(gpu, F32Math::Ieee, (outputs, batch, inputs), op(dz, outputs, true), op(x, inputs, false), &mut dw, (0, inputs), 0.0, None)?;
        dw
    };
    let status = {
        let (wp, _wg) = w.dev_ptr(gpu);
        let (dp, _dg) = dw.dev_ptr_mut(gpu);
        let (sp, bp, _guards) = match reg {
            Some(r) => {
                let (sp, sg) = r.dsparse.dev_ptr(gpu);
                let (bp, bg) = r.doob.dev_ptr(gpu);
                (sp as *const f32, bp as *const f32, Some((sg, bg)))
            }
            None => (std::ptr::null(), std::ptr::null(), None),
        };
        // SAFETY: dtypes and shapes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_arith_nau_dw(
                w.dtype().to_ffi(),
                wp as *const c_void,
                w.len() as i64,
                dp as *mut c_void,
                reg.map_or(RegShape::Linear, |r| r.shape).to_ffi(),
                sp,
                bp,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_nau_dw".into())?;
    Ok(UnitGradients { dx, dw })
}
