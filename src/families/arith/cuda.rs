// The arith family's launch code, compiled once per kernel library: arith/mod.rs includes this
// file in `on_cuda` (with `ffi` = crate::bindings::ffi) and in `on_emu` (with `ffi` =
// crate::bindings::ffi_emu). Arguments are validated by mod.rs; this allocates outputs and
// workspace and calls the C ABI on the device (and, for the NAU and the NALU, the library GEMMs of
// core::gemm).

use std::ffi::c_void;
use std::ptr::null_mut;

use super::spec::{
    NaluGradients, NaluWeights, NauOutput, NmuOutput, NmuSaved, NmuSavedRef, RegGradients, RegOutput, RegShape, Unit, UnitGradients,
};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gemm::{F32Math, Operand, column_sums, gemm, op};
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
        let (sp, _sg) = workspace.as_mut().map(|t| t.dev_ptr_mut(gpu)).unzip();
        let sp = sp.map_or(null_mut(), |p| p as *mut c_void);
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
        let (kp, _kg) = workspace.as_mut().map(|t| t.dev_ptr_mut(gpu)).unzip();
        let kp = kp.map_or(null_mut(), |p| p as *mut c_void);
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
        let (kp, _kg) = workspace.as_mut().map(|t| t.dev_ptr_mut(gpu)).unzip();
        let kp = kp.map_or(null_mut(), |p| p as *mut c_void);
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
    let z = product(gpu, x.dtype(), (batch, inputs, outputs), op(x, inputs, false), op(&wc, inputs, true), None)?;
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
    let (wc, _) = nau_weights(w, None, gpu)?;
    let dx = product(gpu, x.dtype(), (batch, outputs, inputs), op(dz, outputs, false), op(&wc, inputs, false), None)?;
    let mut dw = product(gpu, x.dtype(), (outputs, batch, inputs), op(dz, outputs, true), op(x, inputs, false), None)?;
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

/// op(A)·op(B) `[m, n]` in `dtype` (the operands'; f32 multiplies with IEEE math), into a new
/// tensor or (β = 1) added into `into`; an empty sum (k = 0) is 0 (cuBLASLt takes no k = 0), and
/// an empty result launches nothing.
fn product(
    gpu: &Gpu,
    dtype: DType,
    (m, k, n): (usize, usize, usize),
    a: Operand,
    b: Operand,
    into: Option<Tensor>,
) -> Result<Tensor> {
    match into {
        Some(mut c) => {
            if m * n * k > 0 {
                gemm(gpu, F32Math::Ieee, (m, k, n), a, b, &mut c, (0, n), 1.0, None)?;
            }
            Ok(c)
        }
        None if m * n * k == 0 => Tensor::zeros(&[m, n], dtype, &gpu.device()),
        None => {
            let mut c = Tensor::uninit(&[m, n], dtype, &gpu.device())?;
            gemm(gpu, F32Math::Ieee, (m, k, n), a, b, &mut c, (0, n), 0.0, None)?;
            Ok(c)
        }
    }
}

/// What the NALU's forward passes and GEMMs give: W (f32), G and x in f32 (None for f32 storage:
/// the inputs themselves), log(|x| + ε), and the GEMMs' a, lm, gl (f32 `[B, O]`).
struct NaluForward {
    w: Tensor,
    g32: Option<Tensor>,
    x32: Option<Tensor>,
    log_x: Tensor,
    a: Tensor,
    lm: Tensor,
    gl: Tensor,
}

fn nalu_passes(
    x: &Tensor,
    p: NaluWeights,
    eps: f32,
    (batch, inputs, outputs): (usize, usize, usize),
    gpu: &Gpu,
) -> Result<NaluForward> {
    let device = gpu.device();
    let sixteen = x.dtype() != DType::F32;
    let f32s = |shape: &[usize]| Tensor::uninit(shape, DType::F32, &device);
    let mut w = f32s(&[outputs, inputs])?;
    let mut g32 = if sixteen { Some(f32s(&[outputs, inputs])?) } else { None };
    let status = {
        let (hp, _hg) = p.w_hat.dev_ptr(gpu);
        let (mp, _mg) = p.m_hat.dev_ptr(gpu);
        let (gp, _gg) = p.g.dev_ptr(gpu);
        let (wp, _wg) = w.dev_ptr_mut(gpu);
        let (cp, _cg) = g32.as_mut().map(|t| t.dev_ptr_mut(gpu)).unzip();
        let cp = cp.map_or(null_mut(), |p| p as *mut f32);
        // SAFETY: dtypes and shapes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_arith_nalu_weights(
                x.dtype().to_ffi(),
                hp as *const c_void,
                mp as *const c_void,
                gp as *const c_void,
                (outputs * inputs) as i64,
                wp as *mut f32,
                cp,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_nalu_weights".into())?;
    let mut log_x = f32s(&[batch, inputs])?;
    let mut x32 = if sixteen { Some(f32s(&[batch, inputs])?) } else { None };
    let status = {
        let (xp, _xg) = x.dev_ptr(gpu);
        let (lp, _lg) = log_x.dev_ptr_mut(gpu);
        let (cp, _cg) = x32.as_mut().map(|t| t.dev_ptr_mut(gpu)).unzip();
        let cp = cp.map_or(null_mut(), |p| p as *mut f32);
        // SAFETY: as above.
        unsafe {
            ffi::kiln_arith_nalu_log(
                x.dtype().to_ffi(),
                xp as *const c_void,
                (batch * inputs) as i64,
                eps,
                lp as *mut f32,
                cp,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_nalu_log".into())?;
    let (xf, gf) = (x32.as_ref().unwrap_or(x), g32.as_ref().unwrap_or(p.g));
    let mkn = (batch, inputs, outputs);
    let a = product(gpu, DType::F32, mkn, op(xf, inputs, false), op(&w, inputs, true), None)?;
    let lm = product(gpu, DType::F32, mkn, op(&log_x, inputs, false), op(&w, inputs, true), None)?;
    let gl = product(gpu, DType::F32, mkn, op(xf, inputs, false), op(gf, inputs, true), None)?;
    Ok(NaluForward { w, g32, x32, log_x, a, lm, gl })
}

pub(in crate::families::arith) fn nalu_forward(
    x: &Tensor,
    p: NaluWeights,
    eps: f32,
    dims @ (batch, _, outputs): (usize, usize, usize),
    gpu: &Gpu,
) -> Result<Tensor> {
    gpu.bind()?;
    let f = nalu_passes(x, p, eps, dims, gpu)?;
    let mut y = Tensor::uninit(&[batch, outputs], x.dtype(), &gpu.device())?;
    let status = {
        let (ap, _ag) = f.a.dev_ptr(gpu);
        let (lp, _lg) = f.lm.dev_ptr(gpu);
        let (gp, _gg) = f.gl.dev_ptr(gpu);
        let (bp, _bg) = p.bias.dev_ptr(gpu);
        let (yp, _yg) = y.dev_ptr_mut(gpu);
        // SAFETY: dtypes and shapes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_arith_nalu_combine_fwd(
                x.dtype().to_ffi(),
                ap as *const f32,
                lp as *const f32,
                gp as *const f32,
                bp as *const c_void,
                batch as i64,
                outputs as i64,
                yp as *mut c_void,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_nalu_combine_fwd".into())?;
    Ok(y)
}

pub(in crate::families::arith) fn nalu_backward(
    x: &Tensor,
    p: NaluWeights,
    dy: &Tensor,
    eps: f32,
    dims @ (batch, inputs, outputs): (usize, usize, usize),
    gpu: &Gpu,
) -> Result<NaluGradients> {
    gpu.bind()?;
    let device = gpu.device();
    let f = nalu_passes(x, p, eps, dims, gpu)?;
    let f32s = |shape: &[usize]| Tensor::uninit(shape, DType::F32, &device);
    let (mut da, mut dlm, mut dgl) = (f32s(&[batch, outputs])?, f32s(&[batch, outputs])?, f32s(&[batch, outputs])?);
    let status = {
        let (ap, _ag) = f.a.dev_ptr(gpu);
        let (lp, _lg) = f.lm.dev_ptr(gpu);
        let (gp, _gg) = f.gl.dev_ptr(gpu);
        let (bp, _bg) = p.bias.dev_ptr(gpu);
        let (yp, _yg) = dy.dev_ptr(gpu);
        let (dap, _dag) = da.dev_ptr_mut(gpu);
        let (dlp, _dlg) = dlm.dev_ptr_mut(gpu);
        let (dgp, _dgg) = dgl.dev_ptr_mut(gpu);
        // SAFETY: dtypes and shapes validated by the caller; guards outlive the launch.
        unsafe {
            ffi::kiln_arith_nalu_combine_bwd(
                x.dtype().to_ffi(),
                ap as *const f32,
                lp as *const f32,
                gp as *const f32,
                bp as *const c_void,
                yp as *const c_void,
                batch as i64,
                outputs as i64,
                dap as *mut f32,
                dlp as *mut f32,
                dgp as *mut f32,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_nalu_combine_bwd".into())?;
    let (xf, gf) = (f.x32.as_ref().unwrap_or(x), f.g32.as_ref().unwrap_or(p.g));
    // dx's linear terms da·W + dgl·G, and the log path's dlm·W; dW = daᵀ·x + dlmᵀ·log_x; dG; db.
    let to_x = (batch, outputs, inputs);
    let dsum = product(gpu, DType::F32, to_x, op(&da, outputs, false), op(&f.w, inputs, false), None)?;
    let dsum = product(gpu, DType::F32, to_x, op(&dgl, outputs, false), op(gf, inputs, false), Some(dsum))?;
    let dlog = product(gpu, DType::F32, to_x, op(&dlm, outputs, false), op(&f.w, inputs, false), None)?;
    let to_w = (outputs, batch, inputs);
    let dw = product(gpu, DType::F32, to_w, op(&da, outputs, true), op(xf, inputs, false), None)?;
    let dw = product(gpu, DType::F32, to_w, op(&dlm, outputs, true), op(&f.log_x, inputs, false), Some(dw))?;
    let dg32 = product(gpu, DType::F32, to_w, op(&dgl, outputs, true), op(xf, inputs, false), None)?;
    let db32 = if batch == 0 || outputs == 0 {
        Tensor::zeros(&[outputs], DType::F32, &device)?
    } else {
        let ones = Tensor::full(&[batch], DType::F32, 1.0, &device)?;
        column_sums(gpu, F32Math::Ieee, &ones, op(&dgl, outputs, false), batch, outputs)?
    };
    let t = |shape: &[usize]| Tensor::uninit(shape, x.dtype(), &device);
    let mut out = NaluGradients {
        dx: t(&[batch, inputs])?,
        dw_hat: t(&[outputs, inputs])?,
        dm_hat: t(&[outputs, inputs])?,
        dg: t(&[outputs, inputs])?,
        dbias: t(&[outputs])?,
    };
    let status = {
        let (xp, _xg) = x.dev_ptr(gpu);
        let (sp, _sg) = dsum.dev_ptr(gpu);
        let (lp, _lg) = dlog.dev_ptr(gpu);
        let (dp, _dg) = out.dx.dev_ptr_mut(gpu);
        // SAFETY: as above.
        unsafe {
            ffi::kiln_arith_nalu_dx(
                x.dtype().to_ffi(),
                xp as *const c_void,
                (batch * inputs) as i64,
                eps,
                sp as *const f32,
                lp as *const f32,
                dp as *mut c_void,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_nalu_dx".into())?;
    let status = {
        let (hp, _hg) = p.w_hat.dev_ptr(gpu);
        let (mp, _mg) = p.m_hat.dev_ptr(gpu);
        let (wp, _wg) = dw.dev_ptr(gpu);
        let (gp, _gg) = dg32.dev_ptr(gpu);
        let (bp, _bg) = db32.dev_ptr(gpu);
        let (o1, _o1g) = out.dw_hat.dev_ptr_mut(gpu);
        let (o2, _o2g) = out.dm_hat.dev_ptr_mut(gpu);
        let (o3, _o3g) = out.dg.dev_ptr_mut(gpu);
        let (o4, _o4g) = out.dbias.dev_ptr_mut(gpu);
        // SAFETY: as above.
        unsafe {
            ffi::kiln_arith_nalu_dweights(
                x.dtype().to_ffi(),
                hp as *const c_void,
                mp as *const c_void,
                wp as *const f32,
                gp as *const f32,
                bp as *const f32,
                (outputs * inputs) as i64,
                outputs as i64,
                o1 as *mut c_void,
                o2 as *mut c_void,
                o3 as *mut c_void,
                o4 as *mut c_void,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_arith_nalu_dweights".into())?;
    Ok(out)
}
