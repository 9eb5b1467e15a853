// The activation family's launch code, compiled once per kernel library: activation/mod.rs
// includes this file in `on_cuda` (with `ffi` = crate::bindings::ffi) and in `on_emu` (with `ffi` =
// crate::bindings::ffi_emu). Arguments are already validated by mod.rs; this takes device pointers
// (keeping their guards alive until the launch is queued) and calls the C ABI on the device.

use std::ffi::c_void;

use super::spec::Activation;
use crate::core::error::Result;
use crate::bindings::ffi::{kiln_dtype, kiln_status};
use crate::core::gpu::Gpu;
use crate::core::launch::check_status;
use crate::core::tensor::Tensor;

type Ptr = *const c_void;
type PtrMut = *mut c_void;

/// Launches the forward of `act` reading `x` and writing `y` (which may equal `x`).
///
/// # Safety
/// `x` and `y` point to `n` elements of `dtype` on the stream's device; the parameter
/// pointer to `channels` f32 values.
unsafe fn launch_forward(
    act: &Activation,
    channels: usize,
    dtype: kiln_dtype,
    (x, y): (Ptr, PtrMut),
    n: i64,
    param: *const f32,
    stream: PtrMut,
) -> kiln_status {
    let c = channels as i64;
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match *act {
            Activation::Relu => ffi::kiln_activation_relu_fwd(dtype, x, y, n, stream),
            Activation::Gelu => ffi::kiln_activation_gelu_fwd(dtype, x, y, n, stream),
            Activation::GeluTanh => ffi::kiln_activation_gelu_tanh_fwd(dtype, x, y, n, stream),
            Activation::QuickGelu => ffi::kiln_activation_quick_gelu_fwd(dtype, x, y, n, stream),
            Activation::Silu => ffi::kiln_activation_silu_fwd(dtype, x, y, n, stream),
            Activation::Sigmoid => ffi::kiln_activation_sigmoid_fwd(dtype, x, y, n, stream),
            Activation::SquaredRelu => ffi::kiln_activation_squared_relu_fwd(dtype, x, y, n, stream),
            Activation::Atlu => ffi::kiln_activation_atlu_fwd(dtype, x, y, n, stream),
            Activation::XAtlu { alpha } => ffi::kiln_activation_xatlu_fwd(dtype, x, y, n, alpha, stream),
            Activation::XGelu { alpha } => ffi::kiln_activation_xgelu_fwd(dtype, x, y, n, alpha, stream),
            Activation::XSilu { alpha } => ffi::kiln_activation_xsilu_fwd(dtype, x, y, n, alpha, stream),
            Activation::Smelu { beta } => ffi::kiln_activation_smelu_fwd(dtype, x, y, n, beta, stream),
            Activation::GSmelu(p) => {
                ffi::kiln_activation_gsmelu_fwd(dtype, x, y, n, p.alpha, p.beta, p.g_neg, p.g_pos, p.t, stream)
            }
            Activation::Prelu { .. } => ffi::kiln_activation_prelu_fwd(dtype, x, y, n, param, c, stream),
            Activation::JumpRelu { .. } => ffi::kiln_activation_jumprelu_fwd(dtype, x, y, n, param, c, stream),
        }
    }
}

/// Launches the backward of `act`; `dparam` may be null (no reduction).
///
/// # Safety
/// As [`launch_forward`], plus `dparam` (if not null) holds `channels` f32 and the
/// workspace `ws_bytes` bytes.
#[allow(clippy::too_many_arguments)]
unsafe fn launch_backward(
    act: &Activation,
    channels: usize,
    dtype: kiln_dtype,
    (x, dy, dx): (Ptr, Ptr, PtrMut),
    n: i64,
    param: *const f32,
    dparam: *mut f32,
    (ws, ws_bytes): (PtrMut, i64),
    stream: PtrMut,
) -> kiln_status {
    let c = channels as i64;
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match *act {
            Activation::Relu => ffi::kiln_activation_relu_bwd(dtype, x, dy, dx, n, stream),
            Activation::Gelu => ffi::kiln_activation_gelu_bwd(dtype, x, dy, dx, n, stream),
            Activation::GeluTanh => ffi::kiln_activation_gelu_tanh_bwd(dtype, x, dy, dx, n, stream),
            Activation::QuickGelu => ffi::kiln_activation_quick_gelu_bwd(dtype, x, dy, dx, n, stream),
            Activation::Silu => ffi::kiln_activation_silu_bwd(dtype, x, dy, dx, n, stream),
            Activation::Sigmoid => ffi::kiln_activation_sigmoid_bwd(dtype, x, dy, dx, n, stream),
            Activation::SquaredRelu => ffi::kiln_activation_squared_relu_bwd(dtype, x, dy, dx, n, stream),
            Activation::Atlu => ffi::kiln_activation_atlu_bwd(dtype, x, dy, dx, n, stream),
            Activation::XAtlu { alpha } => {
                ffi::kiln_activation_xatlu_bwd(dtype, x, dy, dx, n, alpha, dparam, ws, ws_bytes, stream)
            }
            Activation::XGelu { alpha } => {
                ffi::kiln_activation_xgelu_bwd(dtype, x, dy, dx, n, alpha, dparam, ws, ws_bytes, stream)
            }
            Activation::XSilu { alpha } => {
                ffi::kiln_activation_xsilu_bwd(dtype, x, dy, dx, n, alpha, dparam, ws, ws_bytes, stream)
            }
            Activation::Smelu { beta } => ffi::kiln_activation_smelu_bwd(dtype, x, dy, dx, n, beta, stream),
            Activation::GSmelu(p) => {
                ffi::kiln_activation_gsmelu_bwd(dtype, x, dy, dx, n, p.alpha, p.beta, p.g_neg, p.g_pos, p.t, stream)
            }
            Activation::Prelu { .. } => {
                ffi::kiln_activation_prelu_bwd(dtype, x, dy, dx, n, param, c, dparam, ws, ws_bytes, stream)
            }
            Activation::JumpRelu { eps, .. } => {
                ffi::kiln_activation_jumprelu_bwd(dtype, x, dy, dx, n, param, c, eps, dparam, ws, ws_bytes, stream)
            }
        }
    }
}

fn launcher(act: &Activation, dir: &str) -> String {
    format!("kiln_activation_{}_{dir}", act.kind().name())
}

pub(in crate::families::activation) fn forward(
    act: &Activation,
    channels: usize,
    x: &Tensor,
    y: &mut Tensor,
    gpu: &Gpu,
) -> Result<()> {
    gpu.bind()?;
    let (xp, _xg) = x.dev_ptr(gpu);
    let (yp, _yg) = y.dev_ptr_mut(gpu);
    let param = act.param_tensor().map(|t| t.dev_ptr(gpu));
    let pp = param.as_ref().map_or(0, |p| p.0);
    // SAFETY: validated shapes and dtypes; guards outlive the launch.
    let status = unsafe {
        launch_forward(
            act,
            channels,
            x.dtype().to_ffi(),
            (xp as Ptr, yp as PtrMut),
            x.len() as i64,
            pp as *const f32,
            gpu.stream(),
        )
    };
    check_status(gpu, status, || launcher(act, "fwd"))
}

pub(in crate::families::activation) fn forward_inplace(
    act: &Activation,
    channels: usize,
    x: &mut Tensor,
    gpu: &Gpu,
) -> Result<()> {
    gpu.bind()?;
    let (dtype, n) = (x.dtype().to_ffi(), x.len() as i64);
    let param = act.param_tensor().map(|t| t.dev_ptr(gpu));
    let pp = param.as_ref().map_or(0, |p| p.0);
    let (xp, _xg) = x.dev_ptr_mut(gpu);
    // SAFETY: y == x is allowed by the ABI (elementwise, read before write).
    let status =
        unsafe { launch_forward(act, channels, dtype, (xp as Ptr, xp as PtrMut), n, pp as *const f32, gpu.stream()) };
    check_status(gpu, status, || launcher(act, "fwd"))
}

pub(in crate::families::activation) fn backward(
    act: &Activation,
    channels: usize,
    x: &Tensor,
    dy: &Tensor,
    dx: &mut Tensor,
    dparam: Option<&mut Tensor>,
    gpu: &Gpu,
) -> Result<()> {
    gpu.bind()?;
    let n = x.len() as i64;
    let ws_bytes = if dparam.is_some() {
        // SAFETY: a pure size computation.
        unsafe { ffi::kiln_activation_workspace_bytes(n, channels as i64) }.max(0)
    } else {
        0
    };
    let mut ws = gpu.workspace(ws_bytes)?;
    let (xp, _xg) = x.dev_ptr(gpu);
    let (dyp, _dyg) = dy.dev_ptr(gpu);
    let (dxp, _dxg) = dx.dev_ptr_mut(gpu);
    let param = act.param_tensor().map(|t| t.dev_ptr(gpu));
    let pp = param.as_ref().map_or(0, |p| p.0);
    let dparam = dparam.map(|t| t.dev_ptr_mut(gpu));
    let dpp = dparam.as_ref().map_or(0, |p| p.0);
    let wsg = ws.as_mut().map(|w| w.dev_ptr_mut(gpu));
    let wsp = wsg.as_ref().map_or(0, |w| w.0);
    // SAFETY: validated shapes and dtypes; every guard outlives the launch.
    let status = unsafe {
        launch_backward(
            act,
            channels,
            x.dtype().to_ffi(),
            (xp as Ptr, dyp as Ptr, dxp as PtrMut),
            n,
            pp as *const f32,
            dpp as *mut f32,
            (wsp as PtrMut, ws_bytes),
            gpu.stream(),
        )
    };
    check_status(gpu, status, || launcher(act, "bwd"))
}
