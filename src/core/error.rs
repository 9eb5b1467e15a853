//! The typed error of every fallible kiln call.

use crate::core::dtype::DType;

/// Result alias used throughout kiln.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in kiln. Argument errors name the argument and what was
/// expected; nothing is written to an output when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A CUDA call was made but kiln was built without the `cuda` feature.
    #[error("kiln was built without the `cuda` feature: rebuild with `--features cuda`")]
    CudaNotCompiled,
    /// The emulator was asked for but kiln was built without the `emu` feature.
    #[error("kiln was built without the `emu` feature: rebuild with `--features emu`")]
    EmuNotCompiled,
    /// The CUDA emulator's runtime failed (out of memory, a copy outside an allocation).
    #[error("CUDA emulator: {0}")]
    Emu(String),
    /// No usable CUDA driver or device (probing never panics, it returns this).
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// The CUDA driver reported an error (allocation, copy, synchronisation).
    #[error("CUDA driver error: {0}")]
    Driver(String),
    /// cuBLASLt reported an error (the GLU MLP block's GEMMs).
    #[error("cuBLASLt error: {0}")]
    Blas(String),
    /// A kernel launcher returned a non-success status.
    #[error("kernel `{launcher}` failed: {message} (status {status})")]
    Kernel {
        /// The C ABI function that failed.
        launcher: String,
        /// The `kiln_status` code it returned.
        status: u32,
        /// `kiln_status_string` of that code, plus the CUDA error where there is one and, on
        /// the emulator, its finding (what, where in the kernel source, which thread).
        message: String,
    },
    /// A tensor has the wrong shape or length.
    #[error("argument `{arg}`: expected shape {expected}, got {got:?}")]
    Shape {
        /// The argument's name.
        arg: &'static str,
        /// What was expected, in words.
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// A tensor has the wrong dtype.
    #[error("argument `{arg}`: expected dtype {expected}, got {got}")]
    DType {
        /// The argument's name.
        arg: &'static str,
        /// What was expected, in words.
        expected: String,
        /// The dtype that was given.
        got: DType,
    },
    /// A tensor lives on another device than the others.
    #[error("argument `{arg}`: expected a tensor on {expected}, got one on {got}")]
    Device {
        /// The argument's name.
        arg: &'static str,
        /// The device of the other operands.
        expected: String,
        /// The device of this one.
        got: String,
    },
    /// A scalar parameter is outside its domain (NaN α, β ≤ 0, ε ≤ 0, …).
    #[error("argument `{arg}`: {reason}")]
    InvalidValue {
        /// The argument's name.
        arg: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An op name that the registry does not know.
    #[error("unknown op `{0}` (see `kiln list`)")]
    UnknownOp(String),
    /// An input or output file could not be read or written (`kiln run`).
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Driver(e.to_string())
    }
}

impl From<cudarc::cublaslt::result::CublasError> for Error {
    fn from(e: cudarc::cublaslt::result::CublasError) -> Self {
        Error::Blas(format!("{e:?}"))
    }
}

/// Returns `Error::InvalidValue` for `arg` unless `ok`.
pub(crate) fn ensure(ok: bool, arg: &'static str, reason: impl FnOnce() -> String) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::InvalidValue { arg, reason: reason() }) }
}
