//! What the launch code of every family shares, whichever kernel library it runs: workspace
//! for a launcher, turning a C ABI status into a typed error, and the macros that compile a
//! family's launch code once per kernel library. The device a launch runs on and the buffer
//! guards are in [`super::gpu`].
//!
//! Each family's `cuda.rs` is the ONE copy of its launch code. Its mod.rs includes it twice:
//! in `on_cuda` with `ffi` = [`crate::bindings::ffi`] (the nvcc-built kernels, feature `cuda`) and in
//! `on_emu` with `ffi` = [`crate::bindings::ffi_emu`] (the same kernels built for the emulator, feature
//! `emu`); [`on_backend!`] calls the copy that matches the device.

//!
//! Layer: core. Imports the bindings' status codes, the emulator's findings, gpu and tensor.

use std::ffi::{CStr, c_char};

use super::dtype::DType;
use super::error::{Error, Result};
use super::gpu::Gpu;
use super::tensor::Tensor;
use crate::bindings::ffi::kiln_status;

// Inherent methods of `Gpu` that need tensors: here rather than in gpu.rs, which tensor.rs
// imports (a tensor's device pointer is taken for a `Gpu`).
impl Gpu {
    /// Scratch of `bytes` for a launcher's workspace argument (`None` when it asks for none);
    /// its address comes from [`Tensor::dev_ptr_mut`]. Left unwritten: the kernels write every
    /// byte they later read, which the emulator's checked mode verifies.
    #[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
    pub(crate) fn workspace(&self, bytes: i64) -> Result<Option<Tensor>> {
        match usize::try_from(bytes) {
            Ok(n) if n > 0 => Ok(Some(Tensor::uninit(&[n], DType::U8, &self.device())?)),
            _ => Ok(None),
        }
    }

    /// The message of a failed launch: the status string and, for a CUDA failure, the CUDA
    /// error, both from this backend's own library (with only `emu` built, `crate::bindings::ffi`'s
    /// functions are not linked); on the emulator also its finding.
    #[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
    fn describe(&self, status: kiln_status) -> String {
        #[cfg(not(any(feature = "cuda", feature = "emu")))]
        let _ = status; // used by every arm, and there are none without a backend
        match *self {
            #[cfg(feature = "cuda")]
            Gpu::Cuda(_) => {
                describe(status, crate::bindings::ffi::kiln_status_string, crate::bindings::ffi::kiln_last_cuda_error)
            }
            #[cfg(feature = "emu")]
            Gpu::Emu(_) => {
                let mut message = describe(
                    status,
                    crate::bindings::ffi_emu::kiln_status_string,
                    crate::bindings::ffi_emu::kiln_last_cuda_error,
                );
                // The finding belongs to this thread's last failed launch: only a launch failure
                // (not an argument error caught before launching) is this call's own.
                let finding = super::emu::last_finding();
                if status == kiln_status::KILN_ERROR_CUDA && !finding.is_empty() {
                    message.push_str(": ");
                    message.push_str(&finding);
                }
                message
            }
        }
    }
}

/// The status string of `status` and, for `KILN_ERROR_CUDA`, the CUDA error code of this
/// thread's last failed launch, from one library's functions.
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
fn describe(
    status: kiln_status,
    status_string: unsafe extern "C" fn(kiln_status) -> *const c_char,
    last_cuda_error: unsafe extern "C" fn() -> i32,
) -> String {
    // SAFETY: returns a pointer to a static, NUL-terminated string for any code.
    let text = unsafe { CStr::from_ptr(status_string(status)) };
    let mut message = text.to_string_lossy().into_owned();
    if status == kiln_status::KILN_ERROR_CUDA || status == kiln_status::KILN_ERROR_CUDA_PENDING {
        // SAFETY: reads a thread-local integer.
        message.push_str(&format!(" (cudaError_t {})", unsafe { last_cuda_error() }));
    }
    message
}

/// `Ok` for `KILN_SUCCESS`, otherwise `Error::Kernel` naming the launcher, with the status
/// string, the CUDA error where there is one and the emulator's finding (see `Gpu::describe`).
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
pub(crate) fn check_status(gpu: &Gpu, status: kiln_status, launcher: impl FnOnce() -> String) -> Result<()> {
    if status == kiln_status::KILN_SUCCESS {
        return Ok(());
    }
    Err(Error::Kernel { launcher: launcher(), status: status.0, message: gpu.describe(status) })
}

/// `launch_code!("cuda.rs")` in a family's mod.rs compiles its launch code, the one copy, once
/// per kernel library built in: `on_cuda` against [`crate::bindings::ffi`] (feature `cuda`) and `on_emu`
/// against [`crate::bindings::ffi_emu`] (feature `emu`); [`on_backend!`] picks between them.
macro_rules! launch_code {
    ($file:literal) => {
        #[cfg(feature = "cuda")]
        mod on_cuda {
            use crate::bindings::ffi;
            include!($file);
        }
        #[cfg(feature = "emu")]
        mod on_emu {
            use crate::bindings::ffi_emu as ffi;
            include!($file);
        }
    };
}
pub(crate) use launch_code;

/// `on_backend!(gpu, f(args…))` calls `on_cuda::f(args…)` or `on_emu::f(args…)` in the calling
/// module, by `gpu`'s (a `&Gpu`) variant: the family's launch code compiled against that
/// backend's library. Use it as a function's tail or a match arm.
macro_rules! on_backend {
    ($gpu:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match *$gpu {
            #[cfg(feature = "cuda")]
            $crate::core::gpu::Gpu::Cuda(_) => on_cuda::$f($($arg),*),
            #[cfg(feature = "emu")]
            $crate::core::gpu::Gpu::Emu(_) => on_emu::$f($($arg),*),
            // Without a backend `Gpu` has no variants and this arm never runs; it only keeps the
            // arguments used, as they are in every other build.
            #[cfg(not(any(feature = "cuda", feature = "emu")))]
            ref never => {
                let _ = ($($arg,)*);
                match *never {}
            }
        }
    };
}
pub(crate) use on_backend;

#[cfg(all(test, feature = "emu"))]
mod tests {
    use std::ffi::c_void;

    use super::*;
    use crate::bindings::ffi::kiln_dtype;
    use crate::core::device::Device;

    /// relu of `n` elements of x into y through the emulated library, as the launch code does.
    fn relu(gpu: &Gpu, x: &Tensor, y: &mut Tensor, n: i64) -> Result<()> {
        let (xp, _xg) = x.dev_ptr(gpu);
        let (yp, _yg) = y.dev_ptr_mut(gpu);
        // SAFETY: the buffers are emulated allocations; checked mode stops any access outside
        // them before it happens (kernels/emu/README.md).
        let status = unsafe {
            crate::bindings::ffi_emu::kiln_activation_relu_fwd(
                kiln_dtype::KILN_DTYPE_F32,
                xp as *const c_void,
                yp as *mut c_void,
                n,
                gpu.stream(),
            )
        };
        check_status(gpu, status, || "kiln_activation_relu_fwd".into())
    }

    #[test]
    fn an_emulator_finding_reaches_the_error_with_the_kernel_source_line() {
        let device = Device::emu().expect("built with emu");
        let Device::Emu(emu) = &device else { unreachable!("Device::emu returns the emulator") };
        emu.set_checked(true);
        let gpu = Gpu::of(&device).unwrap().expect("the emulator launches kernels");
        let x = Tensor::zeros(&[64], DType::F32, &device).unwrap();
        let mut short = Tensor::uninit(&[60], DType::F32, &device).unwrap();
        let e = relu(&gpu, &x, &mut short, 64).unwrap_err().to_string();
        assert!(e.contains("kiln_activation_relu_fwd") && e.contains("out-of-bounds"), "{e}");
        assert!(e.contains("activation.cu:"), "the finding names the kernel source line: {e}");

        // Tensor::uninit leaves emulated memory unwritten, so reading it is a finding.
        let unwritten = Tensor::uninit(&[64], DType::F32, &device).unwrap();
        let mut y = Tensor::uninit(&[64], DType::F32, &device).unwrap();
        let e = relu(&gpu, &unwritten, &mut y, 64).unwrap_err().to_string();
        assert!(e.contains("uninitialised"), "{e}");
        relu(&gpu, &x, &mut y, 64).expect("a correct launch after failed ones");
    }
}
