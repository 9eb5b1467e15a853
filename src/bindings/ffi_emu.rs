//! The launchers of `kernels/include/kiln.h` in the emulated library (feature `emu`): the same
//! declarations as [`crate::bindings::ffi`], each linked to its `kiln_emu_*` twin (build/emu.rs generates
//! them from `src/bindings/ffi.rs`), so the CUDA and the emulated kernels link into one binary. Types and
//! constants are `crate::bindings::ffi`'s own.

pub use super::ffi::*;

include!(concat!(env!("OUT_DIR"), "/ffi_emu_fns.rs"));

/// The emulator's own runtime API (`kernels/emu/include/kiln_emu.h`).
pub mod runtime {
    use std::ffi::{c_char, c_int, c_void};

    /// What a traffic window counted (`kiln_emu_traffic` in kiln_emu.h).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct kiln_emu_traffic {
        /// Launches in the window.
        pub launches: u64,
        /// Global load warp instructions.
        pub load_requests: u64,
        /// 32-byte sectors they touched, summed over requests.
        pub load_sectors: u64,
        /// Bytes the lanes asked for.
        pub load_bytes: u64,
        /// Global store warp instructions.
        pub store_requests: u64,
        /// Their sectors, summed over requests.
        pub store_sectors: u64,
        /// Bytes the lanes wrote.
        pub store_bytes: u64,
        /// 32 × distinct sectors read, per launch, summed.
        pub dram_read_bytes: u64,
        /// 32 × distinct sectors written, per launch, summed.
        pub dram_write_bytes: u64,
        /// Shared-memory warp instructions.
        pub shared_requests: u64,
        /// Their wavefronts, summed.
        pub shared_wavefronts: u64,
        /// The most wavefronts of one request.
        pub shared_worst_wavefronts: u64,
        /// Bank conflicts: wavefronts beyond ceil(distinct words / 32), summed over requests.
        pub shared_conflict_wavefronts: u64,
        /// The most conflict wavefronts of one request.
        pub shared_worst_conflict: u64,
        /// The latency model, summed over launches: DRAM bytes read (first touches).
        pub timed_read_bytes: u64,
        /// The latency model: warp lifetimes on the emulated timeline, ns.
        pub warp_ns: u64,
    }

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
        /// Seconds a thread may run without reaching a barrier or collective before its launch
        /// fails as a hang (values <= 0 are ignored).
        pub fn kiln_emu_set_hang_seconds(seconds: f64);
        /// The current hang limit in seconds.
        pub fn kiln_emu_hang_seconds() -> f64;
        /// The finding that failed this thread's last failed launch ("" when none).
        pub fn kiln_emu_last_finding() -> *const c_char;
        /// Launches run since start-up.
        pub fn kiln_emu_launch_count() -> u64;
        /// Opens a traffic window (checked mode is on until it closes).
        pub fn kiln_emu_traffic_begin();
        /// Closes it and writes what it counted.
        pub fn kiln_emu_traffic_end(out: *mut kiln_emu_traffic);
        /// The last window's call sites as text into `buf`; returns the length needed (NUL included).
        pub fn kiln_emu_traffic_sites(buf: *mut c_char, len: usize) -> usize;
        /// The last window's launches, one tab-separated line each (kiln_emu.h); returns the
        /// length needed (NUL included).
        pub fn kiln_emu_traffic_launches(buf: *mut c_char, len: usize) -> usize;
        /// Runs one of the emulator's planted-bug cases (kernels/emu/selftest/planted.cu) with its
        /// bug (`buggy != 0`) or as its correct twin; returns the launch's cudaError_t (-1 for an
        /// unknown case or a short `results`).
        pub fn kiln_emu_selftest(name: *const c_char, buggy: c_int, results: *mut i32, results_len: i64) -> c_int;
    }
}
