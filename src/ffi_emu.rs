//! The launchers of `kernels/include/kiln.h` in the emulated library (feature `emu`): the same
//! declarations as [`crate::ffi`], each linked to its `kiln_emu_*` twin (build/emu.rs generates
//! them from `src/ffi.rs`), so the CUDA and the emulated kernels link into one binary. Types and
//! constants are `crate::ffi`'s own.

pub use crate::ffi::*;

include!(concat!(env!("OUT_DIR"), "/ffi_emu_fns.rs"));

/// The emulator's own runtime API (`kernels/emu/include/kiln_emu.h`).
pub mod runtime {
    use std::ffi::{c_char, c_int, c_void};

    unsafe extern "C" {
        /// Emulated device memory (256-byte aligned, unwritten, redzoned); NULL when out of memory.
        pub fn kiln_emu_malloc(bytes: usize) -> *mut c_void;
        /// Frees a buffer of `kiln_emu_malloc` (NULL is ignored).
        pub fn kiln_emu_free(ptr: *mut c_void);
        /// Copies between host or emulated buffers, marking `dst` written; 1 when a range runs
        /// outside its emulated allocation.
        pub fn kiln_emu_memcpy(dst: *mut c_void, src: *const c_void, bytes: usize) -> c_int;
        /// Fills with a byte value, marking the bytes written.
        pub fn kiln_emu_memset(dst: *mut c_void, value: c_int, bytes: usize) -> c_int;
        /// Turns checked mode on or off.
        pub fn kiln_emu_set_checked(on: c_int);
        /// Whether checked mode is on.
        pub fn kiln_emu_checked() -> c_int;
        /// The finding that failed this thread's last failed launch ("" when none).
        pub fn kiln_emu_last_finding() -> *const c_char;
        /// Launches run since start-up.
        pub fn kiln_emu_launch_count() -> u64;
        /// Runs one of the emulator's planted-bug cases (kernels/emu/selftest/planted.cu) with its
        /// bug (`buggy != 0`) or as its correct twin; returns the launch's cudaError_t (-1 for an
        /// unknown case or a short `results`).
        pub fn kiln_emu_selftest(name: *const c_char, buggy: c_int, results: *mut i32, results_len: i64) -> c_int;
    }
}
