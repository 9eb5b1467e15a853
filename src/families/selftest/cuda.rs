// The PTX self-tests' launch code, compiled once per kernel library: selftest/mod.rs includes
// this file in `on_cuda` (with `ffi` = crate::bindings::ffi_selftest) and in `on_emu` (with `ffi` = the
// emulated library's twins). Arguments are validated by mod.rs.

use std::ffi::c_void;

use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gpu::Gpu;
use crate::core::launch::check_status;
use crate::core::tensor::Tensor;

pub(in crate::families::selftest) fn mma(a: &Tensor, b: &Tensor, c: &Tensor, gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let mut d = Tensor::zeros(&[16, 8], DType::F32, &gpu.device())?;
    let status = {
        let (ap, _ag) = a.dev_ptr(gpu);
        let (bp, _bg) = b.dev_ptr(gpu);
        let (cp, _cg) = c.dev_ptr(gpu);
        let (dp, _dg) = d.dev_ptr_mut(gpu);
        // SAFETY: shapes and dtypes validated by mod.rs (the kernel reads 256 + 128 elements
        // and 128 floats, writes 128 floats); the guards outlive the launch.
        unsafe {
            ffi::kiln_selftest_mma(
                a.dtype().to_ffi(),
                ap as *const c_void,
                bp as *const c_void,
                cp as *const f32,
                dp as *mut f32,
                gpu.stream(),
            )
        }
    };
    check_status(gpu, status, || "kiln_selftest_mma".into())?;
    Ok(d)
}

pub(in crate::families::selftest) fn mma_f64(a: &Tensor, b: &Tensor, c: &Tensor, gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let mut d = Tensor::zeros(&[8, 8], DType::F64, &gpu.device())?;
    let status = {
        let (ap, _ag) = a.dev_ptr(gpu);
        let (bp, _bg) = b.dev_ptr(gpu);
        let (cp, _cg) = c.dev_ptr(gpu);
        let (dp, _dg) = d.dev_ptr_mut(gpu);
        // SAFETY: shapes and dtypes validated by mod.rs (32 + 32 + 64 doubles read, 64 written);
        // the guards outlive the launch.
        unsafe {
            ffi::kiln_selftest_mma_f64(ap as *const f64, bp as *const f64, cp as *const f64, dp as *mut f64, gpu.stream())
        }
    };
    check_status(gpu, status, || "kiln_selftest_mma_f64".into())?;
    Ok(d)
}

pub(in crate::families::selftest) fn ldmatrix(count: usize, trans: bool, src: &Tensor, gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let mut out = Tensor::zeros(&[32, 4], DType::I32, &gpu.device())?;
    let status = {
        let (sp, _sg) = src.dev_ptr(gpu);
        let (op, _og) = out.dev_ptr_mut(gpu);
        // SAFETY: src is i32 [32, 16] and out i32 [32, 4] (validated by mod.rs); the guards
        // outlive the launch.
        unsafe {
            ffi::kiln_selftest_ldmatrix(count as i32, trans as i32, sp as *const i32, op as *mut i32, gpu.stream())
        }
    };
    check_status(gpu, status, || "kiln_selftest_ldmatrix".into())?;
    Ok(out)
}

pub(in crate::families::selftest) fn cp_async(src: &Tensor, skip_wait: bool, gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let mut out = Tensor::zeros(&[512], DType::I32, &gpu.device())?;
    let status = {
        let (sp, _sg) = src.dev_ptr(gpu);
        let (op, _og) = out.dev_ptr_mut(gpu);
        // SAFETY: src and out are i32 [512] (validated by mod.rs; device allocations are 256-byte
        // aligned, as cp.async needs 16); the guards outlive the launch.
        unsafe { ffi::kiln_selftest_cp_async(sp as *const i32, op as *mut i32, skip_wait as i32, gpu.stream()) }
    };
    check_status(gpu, status, || "kiln_selftest_cp_async".into())?;
    Ok(out)
}

pub(in crate::families::selftest) fn math(function: i32, fast: bool, x: &Tensor, gpu: &Gpu) -> Result<Tensor> {
    gpu.bind()?;
    let n = x.len();
    let mut y = Tensor::zeros(&[n], DType::F32, &gpu.device())?;
    let status = {
        let (xp, _xg) = x.dev_ptr(gpu);
        let (yp, _yg) = y.dev_ptr_mut(gpu);
        // SAFETY: x is f32 [n] (mod.rs); the kernel reads and writes n floats; the guards
        // outlive the launch.
        unsafe {
            ffi::kiln_selftest_math(function, i32::from(fast), xp as *const f32, yp as *mut f32, n as i64, gpu.stream())
        }
    };
    check_status(gpu, status, || "kiln_selftest_math".into())?;
    Ok(y)
}

/// The microbenchmarks (kiln_selftest.h), accumulating into `sink` (validated by mod.rs):
/// `which` 0 mma_peak, 1 ldmatrix_bandwidth, 2 l2_bandwidth (with `buf`).
pub(in crate::families::selftest) fn microbench(
    which: i32,
    blocks: usize,
    count: usize,
    buf: Option<&Tensor>,
    sink: &mut Tensor,
    gpu: &Gpu,
) -> Result<()> {
    gpu.bind()?;
    let (name, status) = {
        let (sp, _sg) = sink.dev_ptr_mut(gpu);
        let buf = buf.map(|b| (b.dev_ptr(gpu), b.len() * b.dtype().size_in_bytes()));
        // SAFETY: sink is one 4-byte element, buf (geometric: 16-byte aligned, a multiple of 16
        // bytes) is read in full (mod.rs); the guards outlive the launch.
        unsafe {
            match (which, buf) {
                (0, _) => (
                    "kiln_selftest_mma_peak",
                    ffi::kiln_selftest_mma_peak(blocks as i64, count as i32, sp as *mut f32, gpu.stream()),
                ),
                (1, _) => (
                    "kiln_selftest_ldmatrix_bandwidth",
                    ffi::kiln_selftest_ldmatrix_bandwidth(blocks as i64, count as i32, sp as *mut u32, gpu.stream()),
                ),
                (_, Some(((bp, _bg), bytes))) => (
                    "kiln_selftest_l2_bandwidth",
                    ffi::kiln_selftest_l2_bandwidth(
                        bp as *const c_void,
                        bytes as i64,
                        count as i32,
                        blocks as i64,
                        sp as *mut u32,
                        gpu.stream(),
                    ),
                ),
                (_, None) => unreachable!("mod.rs passes the L2 benchmark its buffer"),
            }
        }
    };
    check_status(gpu, status, || name.into())
}
