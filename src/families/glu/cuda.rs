// The GLU family's launch code, compiled once per kernel library: glu/mod.rs includes this
// file in `on_cuda` (with `ffi` = crate::bindings::ffi) and in `on_emu` (with `ffi` = crate::bindings::ffi_emu).
// Arguments are validated by mod.rs; this turns the layouts into the C ABI's strided a/b views
// and launches on the device.

use std::ffi::c_void;
use std::ptr::null_mut;

use super::spec::{GateHalf, Glu, GluInput, GluInputGrads, GluInputMut, GluKind as K, Layout};
use crate::core::error::Result;
use crate::bindings::ffi::{kiln_dtype, kiln_status};
use crate::core::gpu::Gpu;
use crate::core::launch::check_status;
use crate::core::tensor::Tensor;

/// Raw operand views of one call: a, b (row stride `ab_stride`), and the outputs.
struct Views {
    a: u64,
    b: u64,
    ab_stride: i64,
    da: u64,
    db: u64,
    dab_stride: i64,
}

type P = *const c_void;
type M = *mut c_void;

/// (a, b) byte addresses and row stride of an input given its base address.
fn split(input: &GluInput, base_a: u64, base_b: u64, l: &Layout) -> (u64, u64, i64) {
    let half = (l.features * l.dtype.size_in_bytes()) as u64;
    match *input {
        GluInput::Separate { .. } => (base_a, base_b, l.features as i64),
        GluInput::Packed { gate: GateHalf::First, .. } => (base_a, base_a + half, 2 * l.features as i64),
        GluInput::Packed { gate: GateHalf::Second, .. } => (base_a + half, base_a, 2 * l.features as i64),
    }
}

pub(in crate::families::glu) fn forward(glu: &Glu, input: &GluInput, l: &Layout, y: &mut Tensor, gpu: &Gpu) -> Result<()> {
    gpu.bind()?;
    let (first, second) = match *input {
        GluInput::Separate { a, b } => (a, Some(b)),
        GluInput::Packed { ab, .. } => (ab, None),
    };
    let (fp, _fg) = first.dev_ptr(gpu);
    let sg = second.map(|t| t.dev_ptr(gpu));
    let (a, b, stride) = split(input, fp, sg.as_ref().map_or(0, |g| g.0), l);
    let (yp, _yg) = y.dev_ptr_mut(gpu);
    let (dt, rows, f, st) = (l.dtype.to_ffi(), l.rows as i64, l.features as i64, gpu.stream());
    let (a, b, y) = (a as P, b as P, yp as M);
    let (alpha, order) = (glu.alpha, glu.order as i32);
    // SAFETY: validated shapes and dtypes; guards outlive the launch.
    let status = unsafe {
        match glu.kind {
            K::Glu => ffi::kiln_glu_glu_fwd(dt, a, b, stride, y, rows, f, st),
            K::Bilinear => ffi::kiln_glu_bilinear_fwd(dt, a, b, stride, y, rows, f, st),
            K::Reglu => ffi::kiln_glu_reglu_fwd(dt, a, b, stride, y, rows, f, st),
            K::Geglu => ffi::kiln_glu_geglu_fwd(dt, a, b, stride, y, rows, f, st),
            K::GegluTanh => ffi::kiln_glu_geglu_tanh_fwd(dt, a, b, stride, y, rows, f, st),
            K::Swiglu => ffi::kiln_glu_swiglu_fwd(dt, a, b, stride, y, rows, f, st),
            K::Atglu => ffi::kiln_glu_atglu_fwd(dt, a, b, stride, y, rows, f, order, st),
            K::XAtglu => ffi::kiln_glu_xatglu_fwd(dt, a, b, stride, y, rows, f, alpha, order, st),
            K::XGeglu => ffi::kiln_glu_xgeglu_fwd(dt, a, b, stride, y, rows, f, alpha, order, st),
            K::XSwiglu => ffi::kiln_glu_xswiglu_fwd(dt, a, b, stride, y, rows, f, alpha, order, st),
        }
    };
    check_status(gpu, status, || format!("kiln_glu_{}_fwd", glu.kind.name()))
}

pub(in crate::families::glu) fn backward(
    glu: &Glu,
    input: &GluInput,
    l: &Layout,
    dy: &Tensor,
    dalpha: Option<&mut Tensor>,
    gpu: &Gpu,
) -> Result<GluInputGrads> {
    gpu.bind()?;
    let device = gpu.device();
    let dtype = l.dtype;
    let (first, second) = match *input {
        GluInput::Separate { a, b } => (a, Some(b)),
        GluInput::Packed { ab, .. } => (ab, None),
    };
    let (mut out_first, mut out_second) = match *input {
        GluInput::Separate { a, .. } => {
            (Tensor::uninit(a.shape(), dtype, &device)?, Some(Tensor::uninit(a.shape(), dtype, &device)?))
        }
        GluInput::Packed { ab, .. } => (Tensor::uninit(ab.shape(), dtype, &device)?, None),
    };
    {
        let (fp, _fg) = first.dev_ptr(gpu);
        let sg = second.map(|t| t.dev_ptr(gpu));
        let (a, b, ab_stride) = split(input, fp, sg.as_ref().map_or(0, |g| g.0), l);
        let (op, _og) = out_first.dev_ptr_mut(gpu);
        let osg = out_second.as_mut().map(|t| t.dev_ptr_mut(gpu));
        let (da, db, dab_stride) = split(input, op, osg.as_ref().map_or(0, |g| g.0), l);
        launch_backward(glu, &Views { a, b, ab_stride, da, db, dab_stride }, l, dy, dalpha, gpu)?;
    }
    Ok(match out_second {
        Some(db) => GluInputGrads::Separate { da: out_first, db },
        None => GluInputGrads::Packed { dab: out_first },
    })
}

/// Launches the backward on raw views (the caller keeps their guards alive).
fn launch_backward(
    glu: &Glu,
    v: &Views,
    l: &Layout,
    dy: &Tensor,
    dalpha: Option<&mut Tensor>,
    gpu: &Gpu,
) -> Result<()> {
    let (dyp, _dyg) = dy.dev_ptr(gpu);
    let rows = l.rows as i64;
    let f = l.features as i64;
    let ws_bytes = if dalpha.is_some() {
        // SAFETY: a pure size computation.
        unsafe { ffi::kiln_glu_workspace_bytes(rows, f) }.max(0)
    } else {
        0
    };
    let mut ws = gpu.workspace(ws_bytes)?;
    let dag = dalpha.map(|t| t.dev_ptr_mut(gpu));
    let wsg = ws.as_mut().map(|w| w.dev_ptr_mut(gpu));
    let dalpha_ptr = dag.as_ref().map_or(null_mut(), |g| g.0 as *mut f32);
    let wsp = wsg.as_ref().map_or(null_mut(), |g| g.0 as M);
    let dt: kiln_dtype = l.dtype.to_ffi();
    let (a, b, dyv, da, db) = (v.a as P, v.b as P, dyp as P, v.da as M, v.db as M);
    let (abs, dabs, st) = (v.ab_stride, v.dab_stride, gpu.stream());
    let (alpha, order) = (glu.alpha, glu.order as i32);
    // SAFETY: validated shapes and dtypes; guards outlive the launch.
    let status: kiln_status = unsafe {
        match glu.kind {
            K::Glu => ffi::kiln_glu_glu_bwd(dt, a, b, abs, dyv, da, db, dabs, rows, f, st),
            K::Bilinear => ffi::kiln_glu_bilinear_bwd(dt, a, b, abs, dyv, da, db, dabs, rows, f, st),
            K::Reglu => ffi::kiln_glu_reglu_bwd(dt, a, b, abs, dyv, da, db, dabs, rows, f, st),
            K::Geglu => ffi::kiln_glu_geglu_bwd(dt, a, b, abs, dyv, da, db, dabs, rows, f, st),
            K::GegluTanh => ffi::kiln_glu_geglu_tanh_bwd(dt, a, b, abs, dyv, da, db, dabs, rows, f, st),
            K::Swiglu => ffi::kiln_glu_swiglu_bwd(dt, a, b, abs, dyv, da, db, dabs, rows, f, st),
            K::Atglu => ffi::kiln_glu_atglu_bwd(dt, a, b, abs, dyv, da, db, dabs, rows, f, order, st),
            K::XAtglu => ffi::kiln_glu_xatglu_bwd(
                dt, a, b, abs, dyv, da, db, dabs, rows, f, alpha, order, dalpha_ptr, wsp, ws_bytes, st,
            ),
            K::XGeglu => ffi::kiln_glu_xgeglu_bwd(
                dt, a, b, abs, dyv, da, db, dabs, rows, f, alpha, order, dalpha_ptr, wsp, ws_bytes, st,
            ),
            K::XSwiglu => ffi::kiln_glu_xswiglu_bwd(
                dt, a, b, abs, dyv, da, db, dabs, rows, f, alpha, order, dalpha_ptr, wsp, ws_bytes, st,
            ),
        }
    };
    check_status(gpu, status, || format!("kiln_glu_{}_bwd", glu.kind.name()))
}

/// The backward written over its inputs: da over a, db over b (same addresses and strides).
pub(in crate::families::glu) fn backward_inplace(
    glu: &Glu,
    input: GluInputMut,
    dy: &Tensor,
    dalpha: Option<&mut Tensor>,
    l: &Layout,
    gpu: &Gpu,
) -> Result<()> {
    gpu.bind()?;
    let (first, second, gate) = match input {
        GluInputMut::Separate { a, b } => (a, Some(b), None),
        GluInputMut::Packed { ab, gate } => (ab, None, Some(gate)),
    };
    let (fp, _fg) = first.dev_ptr_mut(gpu);
    let sg = second.map(|t| t.dev_ptr_mut(gpu));
    let half = (l.features * l.dtype.size_in_bytes()) as u64;
    let f = l.features as i64;
    // da and db take the place of a and b: same addresses, same stride.
    let (a, b, stride) = match (sg.as_ref(), gate) {
        (Some(g), _) => (fp, g.0, f),
        (None, Some(GateHalf::First)) => (fp, fp + half, 2 * f),
        (None, _) => (fp + half, fp, 2 * f),
    };
    let views = Views { a, b, ab_stride: stride, da: a, db: b, dab_stride: stride };
    launch_backward(glu, &views, l, dy, dalpha, gpu)
}
