//! Turning a C ABI status into a typed error.

use crate::error::{Error, Result};
use crate::ffi::{self, kiln_status};

/// `Ok` for `KILN_SUCCESS`, otherwise `Error::Kernel` with the status string and, for a
/// CUDA failure, the CUDA error code of this thread's last failed launch.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn check_status(status: kiln_status, launcher: impl FnOnce() -> String) -> Result<()> {
    if status == kiln_status::KILN_SUCCESS {
        return Ok(());
    }
    // SAFETY: returns a pointer to a static, NUL-terminated string for any code.
    let text = unsafe { std::ffi::CStr::from_ptr(ffi::kiln_status_string(status)) };
    let mut message = text.to_string_lossy().into_owned();
    if status == kiln_status::KILN_ERROR_CUDA {
        // SAFETY: reads a thread-local integer.
        message.push_str(&format!(" (cudaError_t {})", unsafe { ffi::kiln_last_cuda_error() }));
    }
    Err(Error::Kernel { launcher: launcher(), status: status.0, message })
}
