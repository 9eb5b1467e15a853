//! The CUDA path of the GLU family: arguments are validated by `mod.rs`; this file turns
//! the layouts into the C ABI's strided a/b views and launches on the stream.

use crate::device::CudaDevice;
use crate::error::Result;
use crate::tensor::Tensor;

use super::{Glu, GluInput, GluInputGrads, Layout};

/// Raw operand views of one call: a, b (row stride `ab_stride`), and the outputs.
#[cfg(feature = "cuda")]
pub(super) struct Views {
    pub a: u64,
    pub b: u64,
    pub ab_stride: i64,
    pub da: u64,
    pub db: u64,
    pub dab_stride: i64,
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    use crate::error::Error;

    pub(in crate::glu) fn forward(_: &Glu, _: &GluInput, _: &Layout, _: &mut Tensor, _: &CudaDevice) -> Result<()> {
        Err(Error::CudaNotCompiled)
    }
    pub(in crate::glu) fn backward(
        _: &Glu,
        _: &GluInput,
        _: &Layout,
        _: &Tensor,
        _: Option<&mut Tensor>,
        _: &CudaDevice,
    ) -> Result<GluInputGrads> {
        Err(Error::CudaNotCompiled)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::ffi::c_void;
    use std::ptr::null_mut;

    use cudarc::driver::DevicePtrMut;

    use super::*;
    use crate::device::Device;
    use crate::ffi::{self, kiln_dtype, kiln_status};
    use crate::glu::{GateHalf, GluKind as K};
    use crate::launch::check_status;

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

    pub(in crate::glu) fn forward(
        glu: &Glu,
        input: &GluInput,
        l: &Layout,
        y: &mut Tensor,
        d: &CudaDevice,
    ) -> Result<()> {
        d.context().bind_to_thread()?;
        let s = d.stream();
        let (first, second) = match *input {
            GluInput::Separate { a, b } => (a, Some(b)),
            GluInput::Packed { ab, .. } => (ab, None),
        };
        let (fp, _fg) = first.cuda_ptr(s);
        let sg = second.map(|t| t.cuda_ptr(s));
        let (a, b, stride) = split(input, fp, sg.as_ref().map_or(0, |g| g.0), l);
        let (yp, _yg) = y.cuda_ptr_mut(s);
        let (dt, rows, f, st) = (l.dtype.to_ffi(), l.rows as i64, l.features as i64, s.cu_stream() as M);
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
        check_status(status, || format!("kiln_glu_{}_fwd", glu.kind.name()))
    }

    pub(in crate::glu) fn backward(
        glu: &Glu,
        input: &GluInput,
        l: &Layout,
        dy: &Tensor,
        dalpha: Option<&mut Tensor>,
        d: &CudaDevice,
    ) -> Result<GluInputGrads> {
        d.context().bind_to_thread()?;
        let s = d.stream();
        let device = Device::Cuda(d.clone());
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
            let (fp, _fg) = first.cuda_ptr(s);
            let sg = second.map(|t| t.cuda_ptr(s));
            let (a, b, ab_stride) = split(input, fp, sg.as_ref().map_or(0, |g| g.0), l);
            let (op, _og) = out_first.cuda_ptr_mut(s);
            let osg = out_second.as_mut().map(|t| t.cuda_ptr_mut(s));
            let (da, db, dab_stride) = split(input, op, osg.as_ref().map_or(0, |g| g.0), l);
            launch_backward(glu, &Views { a, b, ab_stride, da, db, dab_stride }, l, dy, dalpha, d)?;
        }
        Ok(match out_second {
            Some(db) => GluInputGrads::Separate { da: out_first, db },
            None => GluInputGrads::Packed { dab: out_first },
        })
    }

    /// Launches the backward on raw views (the caller keeps their guards alive).
    pub(in crate::glu) fn launch_backward(
        glu: &Glu,
        v: &Views,
        l: &Layout,
        dy: &Tensor,
        dalpha: Option<&mut Tensor>,
        d: &CudaDevice,
    ) -> Result<()> {
        let s = d.stream();
        let (dyp, _dyg) = dy.cuda_ptr(s);
        let rows = l.rows as i64;
        let f = l.features as i64;
        let ws_bytes = if dalpha.is_some() {
            // SAFETY: a pure size computation.
            unsafe { ffi::kiln_glu_workspace_bytes(rows, f) }.max(0)
        } else {
            0
        };
        // SAFETY: the kernels write every workspace byte they later read.
        let mut ws = if ws_bytes > 0 { Some(unsafe { s.alloc::<u8>(ws_bytes as usize) }?) } else { None };
        let dag = dalpha.map(|t| t.cuda_ptr_mut(s));
        let wsg = ws.as_mut().map(|w| w.device_ptr_mut(s));
        let dalpha_ptr = dag.as_ref().map_or(null_mut(), |g| g.0 as *mut f32);
        let wsp = wsg.as_ref().map_or(null_mut(), |g| g.0 as M);
        let dt: kiln_dtype = l.dtype.to_ffi();
        let (a, b, dyv, da, db) = (v.a as P, v.b as P, dyp as P, v.da as M, v.db as M);
        let (abs, dabs, st) = (v.ab_stride, v.dab_stride, s.cu_stream() as M);
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
        check_status(status, || format!("kiln_glu_{}_bwd", glu.kind.name()))
    }
}

#[cfg(feature = "cuda")]
pub(super) use imp::launch_backward;
pub(super) use imp::{backward, forward};
