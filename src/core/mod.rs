//! Layer 1, core: what every kernel call stands on. The error type, storage dtypes, devices,
//! the emulator's host memory and checked mode, the device a launch runs on (`gpu`), tensors,
//! launching (status codes to typed errors, one copy of launch code per kernel library),
//! argument validation in one pass (`validate`), and library GEMMs on row-major tensors (`gemm`).
//!
//! May import: the bindings. Imported by every layer above; imports nothing above itself.
//! Within it: error ← dtype ← device ← emu ← gpu ← tensor ← launch, validate, gemm.

pub mod device;
pub mod dtype;
pub(crate) mod emu;
pub mod error;
pub(crate) mod gemm;
pub(crate) mod gpu;
pub(crate) mod launch;
pub mod tensor;
pub(crate) mod validate;
