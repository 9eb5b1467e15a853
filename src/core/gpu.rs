//! The device a launch runs on ([`Gpu`]) and the guards that keep a buffer's device pointer
//! valid until the launch that uses it is queued.
//!
//! Layer: core. Imports the device and the error type only; tensors and launches import it.

use std::ffi::c_void;

use cudarc::driver::SyncOnDrop;

#[cfg(feature = "cuda")]
use super::device::CudaDevice;
use super::device::Device;
#[cfg(feature = "emu")]
use super::device::EmuDevice;
use super::error::Result;

/// A device kernels launch on. A variant exists only for a backend that is compiled in, so
/// launch code never has to handle a library that is not linked: [`Gpu::of`] turns a device
/// whose backend is missing into `Error::CudaNotCompiled` / `Error::EmuNotCompiled` instead.
#[derive(Clone)]
pub(crate) enum Gpu {
    /// A CUDA device: kernels go on its stream; buffers are cudarc's.
    #[cfg(feature = "cuda")]
    Cuda(CudaDevice),
    /// The emulator: launches run synchronously on the calling thread; buffers are its own.
    #[cfg(feature = "emu")]
    Emu(EmuDevice),
}

impl Gpu {
    /// `None` for the host (the CPU reference runs), the device to launch on otherwise.
    pub(crate) fn of(device: &Device) -> Result<Option<Gpu>> {
        match device {
            Device::Cpu => Ok(None),
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => Ok(Some(Gpu::Cuda(d.clone()))),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(super::error::Error::CudaNotCompiled),
            #[cfg(feature = "emu")]
            Device::Emu(d) => Ok(Some(Gpu::Emu(d.clone()))),
            #[cfg(not(feature = "emu"))]
            Device::Emu(_) => Err(super::error::Error::EmuNotCompiled),
        }
    }

    /// The device, for allocating outputs on it.
    pub(crate) fn device(&self) -> Device {
        match *self {
            #[cfg(feature = "cuda")]
            Gpu::Cuda(ref d) => Device::Cuda(d.clone()),
            #[cfg(feature = "emu")]
            Gpu::Emu(ref d) => Device::Emu(d.clone()),
        }
    }

    /// Makes the device current on this thread before an FFI call: the runtime-API launchers
    /// run in cudarc's primary context (DESIGN.md). The emulator has no context.
    #[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
    pub(crate) fn bind(&self) -> Result<()> {
        match *self {
            #[cfg(feature = "cuda")]
            Gpu::Cuda(ref d) => Ok(d.context().bind_to_thread()?),
            #[cfg(feature = "emu")]
            Gpu::Emu(_) => Ok(()),
        }
    }

    /// The `void* stream` argument of the C ABI: the device's stream, or NULL on the emulator.
    #[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
    pub(crate) fn stream(&self) -> *mut c_void {
        match *self {
            #[cfg(feature = "cuda")]
            Gpu::Cuda(ref d) => d.stream().cu_stream() as *mut c_void,
            #[cfg(feature = "emu")]
            Gpu::Emu(_) => std::ptr::null_mut(),
        }
    }
}

/// Keeps a buffer's device pointer valid until the launch that uses it is queued: cudarc's
/// stream-synchronisation guard on CUDA, nothing on the emulator (launches are synchronous).
pub(crate) struct Guard<'a> {
    _sync: Option<SyncOnDrop<'a>>,
}

impl<'a> Guard<'a> {
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda(sync: SyncOnDrop<'a>) -> Guard<'a> {
        Guard { _sync: Some(sync) }
    }

    #[cfg(feature = "emu")]
    pub(crate) fn none() -> Guard<'a> {
        Guard { _sync: None }
    }
}
