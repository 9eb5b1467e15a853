//! The host side of kiln's CUDA emulator (feature `emu`, `kernels/emu/include/kiln_emu.h`):
//! its device memory and its checked mode.
//!
//! Emulated device memory is host memory that the emulator hands out and shadows: checked
//! mode reports kernel reads of bytes nothing wrote. kiln therefore moves data in and out only
//! through `kiln_emu_memcpy` / `kiln_emu_memset`, which mark what they write; a plain
//! `ptr::copy` into a buffer would leave it "unwritten" in the emulator's eyes.

use std::ffi::{CStr, c_void};
use std::ptr::NonNull;

use crate::core::error::{Error, Result};

#[cfg(feature = "emu")]
use crate::bindings::ffi_emu::runtime as rt;

/// Stand-ins for the runtime when it is not linked. Without `emu`, `Device::emu()` fails and no
/// `EmuDevice` (hence no emulated buffer) can exist, so none of these is ever called; they let
/// the code above them compile the same way with and without the feature.
#[cfg(not(feature = "emu"))]
#[allow(clippy::missing_safety_doc)]
mod rt {
    use std::ffi::{c_char, c_int, c_void};

    const UNREACHABLE: &str = "no EmuDevice exists without the `emu` feature";

    pub unsafe fn kiln_emu_malloc(_: usize) -> *mut c_void {
        unreachable!("{UNREACHABLE}")
    }
    pub unsafe fn kiln_emu_free(_: *mut c_void) {
        unreachable!("{UNREACHABLE}")
    }
    pub unsafe fn kiln_emu_memcpy(_: *mut c_void, _: *const c_void, _: usize) -> c_int {
        unreachable!("{UNREACHABLE}")
    }
    pub unsafe fn kiln_emu_memset(_: *mut c_void, _: c_int, _: usize) -> c_int {
        unreachable!("{UNREACHABLE}")
    }
    pub unsafe fn kiln_emu_set_checked(_: c_int) {
        unreachable!("{UNREACHABLE}")
    }
    pub unsafe fn kiln_emu_checked() -> c_int {
        unreachable!("{UNREACHABLE}")
    }
    pub unsafe fn kiln_emu_last_finding() -> *const c_char {
        unreachable!("{UNREACHABLE}")
    }
    pub unsafe fn kiln_emu_launch_count() -> u64 {
        unreachable!("{UNREACHABLE}")
    }
}

/// One allocation of emulated device memory, freed on drop. It holds raw bytes; the tensor
/// that owns it knows the dtype.
pub(crate) struct EmuBuffer {
    ptr: NonNull<c_void>,
    bytes: usize,
}

// SAFETY: an EmuBuffer owns its allocation exclusively, like a Box<[u8]>: the pointer is never
// shared with another owner, reads go through `&self` and writes through `&mut self`. The
// emulator's runtime may be called from any thread (it serialises launches and keeps findings
// per thread, kiln_emu.h), so moving or sharing the handle across threads is sound.
unsafe impl Send for EmuBuffer {}
// SAFETY: see `Send`: `&EmuBuffer` only allows reading the bytes.
unsafe impl Sync for EmuBuffer {}

impl EmuBuffer {
    /// `bytes` of emulated memory, never written: checked mode reports a kernel that reads
    /// them before something writes them.
    pub(crate) fn uninit(bytes: usize) -> Result<EmuBuffer> {
        // SAFETY: allocates; a null return is handled below.
        let ptr = unsafe { rt::kiln_emu_malloc(bytes) };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::Emu(format!("out of memory allocating {bytes} bytes")))?;
        Ok(EmuBuffer { ptr, bytes })
    }

    /// `bytes` of emulated memory set to zero (and so written).
    pub(crate) fn zeroed(bytes: usize) -> Result<EmuBuffer> {
        let buf = EmuBuffer::uninit(bytes)?;
        // SAFETY: the range is the whole allocation just made.
        let rc = unsafe { rt::kiln_emu_memset(buf.ptr.as_ptr(), 0, bytes) };
        status(rc, "memset")?;
        Ok(buf)
    }

    /// The address kernels are given.
    #[cfg_attr(not(feature = "emu"), allow(dead_code))]
    pub(crate) fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Copies `src` into the buffer from byte `offset`, marking those bytes written.
    pub(crate) fn write(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        self.check_range(offset, src.len())?;
        count_host_transfer();
        // SAFETY: the destination range lies inside this allocation (checked above) and `src`
        // is a host slice of the same length; the two cannot overlap (we hold `&mut self`).
        let rc = unsafe { rt::kiln_emu_memcpy(self.ptr.as_ptr().byte_add(offset), src.as_ptr().cast(), src.len()) };
        status(rc, "upload")
    }

    /// Copies bytes from `offset` into `dst`.
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check_range(offset, dst.len())?;
        count_host_transfer();
        // SAFETY: the source range lies inside this allocation (checked above); `dst` is a
        // distinct host slice of the same length.
        let rc = unsafe { rt::kiln_emu_memcpy(dst.as_mut_ptr().cast(), self.ptr.as_ptr().byte_add(offset), dst.len()) };
        status(rc, "download")
    }

    /// Copies all of `src` to the start of this buffer (device-to-device).
    pub(crate) fn copy_from(&mut self, src: &EmuBuffer) -> Result<()> {
        self.copy_region(0, src, 0, src.bytes)
    }

    /// Copies `len` bytes of `src` from byte `src_offset` to byte `offset` of this buffer.
    pub(crate) fn copy_region(&mut self, offset: usize, src: &EmuBuffer, src_offset: usize, len: usize) -> Result<()> {
        self.check_range(offset, len)?;
        src.check_range(src_offset, len)?;
        // SAFETY: both ranges lie inside their allocations (checked above); two EmuBuffers never
        // share one.
        let rc = unsafe {
            rt::kiln_emu_memcpy(self.ptr.as_ptr().byte_add(offset), src.ptr.as_ptr().byte_add(src_offset), len)
        };
        status(rc, "copy")
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.bytes => Ok(()),
            _ => Err(Error::Emu(format!("bytes {offset}..+{len} are outside a buffer of {} bytes", self.bytes))),
        }
    }
}

impl Drop for EmuBuffer {
    fn drop(&mut self) {
        // SAFETY: the pointer came from kiln_emu_malloc and is freed once, here. Launches are
        // synchronous, so no kernel still uses it.
        unsafe { rt::kiln_emu_free(self.ptr.as_ptr()) }
    }
}

fn status(rc: i32, what: &str) -> Result<()> {
    if rc == 0 { Ok(()) } else { Err(Error::Emu(format!("{what} runs outside its emulated allocation"))) }
}

/// Whether checked mode is on.
pub(crate) fn checked() -> bool {
    // SAFETY: reads a flag.
    unsafe { rt::kiln_emu_checked() != 0 }
}

/// Turns checked mode on or off for later launches.
pub(crate) fn set_checked(on: bool) {
    // SAFETY: sets a flag.
    unsafe { rt::kiln_emu_set_checked(on.into()) }
}

thread_local! {
    /// Copies between host memory and emulated device memory made by this thread.
    static HOST_TRANSFERS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_host_transfer() {
    HOST_TRANSFERS.with(|n| n.set(n.get() + 1));
}

/// Copies between host and emulated device memory this thread has made: on a GPU each is a
/// host synchronisation (a read) or a pageable upload, and neither can be captured in a CUDA
/// graph, so a call that claims to make none is held to zero here.
pub(crate) fn host_transfers() -> u64 {
    HOST_TRANSFERS.with(std::cell::Cell::get)
}

/// Launches run since start-up.
pub(crate) fn launch_count() -> u64 {
    // SAFETY: reads a counter.
    unsafe { rt::kiln_emu_launch_count() }
}

/// What failed this thread's last failed launch: the finding's text, or "" when none.
#[cfg_attr(not(feature = "emu"), allow(dead_code))]
pub(crate) fn last_finding() -> String {
    // SAFETY: returns a NUL-terminated string the runtime keeps valid until this thread's next
    // launch; it is copied out at once.
    unsafe { CStr::from_ptr(rt::kiln_emu_last_finding()) }.to_string_lossy().into_owned()
}
