//! Layer 1, core: what every kernel call stands on. The error type, storage dtypes, devices,
//! the emulator's host memory and checked mode, the device a launch runs on (`gpu`), tensors,
//! launching (status codes to typed errors, one copy of launch code per kernel library), and
//! argument validation in one pass (`validate`).
//!
//! May import: the bindings. Imported by every layer above; imports nothing above itself.
//! Within it: error ← dtype ← device ← emu ← gpu ← tensor ← launch, validate.

pub mod device;
pub mod dtype;
pub(crate) mod emu;
pub mod error;
pub(crate) mod gpu;
pub(crate) mod launch;
pub mod tensor;
pub(crate) mod validate;
