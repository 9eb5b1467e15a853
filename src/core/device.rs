//! Where tensors live and kernels run: the host, one CUDA device with one stream, or kiln's
//! CUDA emulator.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use crate::core::error::{Error, Result};

/// A compute device. The device of a call's inputs decides which path runs: `Cpu` runs
/// the f64 reference, `Cuda` the kernels, `Emu` the same kernels in the emulator.
#[derive(Clone)]
pub enum Device {
    /// The host: every op runs its CPU reference.
    Cpu,
    /// A CUDA device and the stream kiln launches on.
    Cuda(CudaDevice),
    /// kiln's CUDA emulator: the kernels compiled for the host (feature `emu`).
    Emu(EmuDevice),
}

/// kiln's CUDA emulator (feature `emu`): the same kernel sources and launch code as on a GPU,
/// compiled for the host and run thread by thread. In checked mode (the default) it reports
/// out-of-bounds accesses, reads of never-written memory, races and barrier divergence as a
/// kernel error naming the kernel source line. Launches are synchronous; every handle shares
/// one emulated memory, so this is a cheap token.
#[derive(Clone, Debug)]
pub struct EmuDevice {
    /// Made only by [`Device::emu`], so one exists only when the emulator is linked.
    _private: (),
}

/// A CUDA context (the device's primary context) and a stream on it.
#[derive(Clone)]
pub struct CudaDevice {
    stream: Arc<CudaStream>,
    /// The cuBLASLt handle of this stream, made on first use (the GLU MLP block).
    blas: Arc<std::sync::OnceLock<cudarc::cublaslt::CudaBlasLT>>,
}

/// What `kiln info` prints about a device.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Marketing name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Number of streaming multiprocessors.
    pub sm_count: i32,
    /// Global memory in bytes.
    pub total_memory: usize,
}

impl Device {
    /// Opens CUDA device `ordinal` with a new stream. Returns `Error::NoDevice` (never
    /// panics) when the driver library or the device is missing.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        let count = cuda_device_count()?;
        if ordinal >= count {
            return Err(Error::NoDevice(format!("device {ordinal} requested, {count} present")));
        }
        let ctx = CudaContext::new(ordinal)?;
        retain_freed_memory(&ctx)?;
        let stream = ctx.new_stream()?;
        Ok(Device::Cuda(CudaDevice::from_stream(stream)))
    }

    /// CUDA device 0 when one is usable, otherwise the CPU.
    pub fn cuda_if_available() -> Device {
        Device::cuda(0).unwrap_or(Device::Cpu)
    }

    /// Launch on a stream the caller owns (a framework's current stream).
    pub fn cuda_from_stream(stream: Arc<CudaStream>) -> Device {
        Device::Cuda(CudaDevice::from_stream(stream))
    }

    /// The CUDA emulator, or `Error::EmuNotCompiled` when kiln was built without `emu`.
    pub fn emu() -> Result<Device> {
        if cfg!(feature = "emu") { Ok(Device::Emu(EmuDevice { _private: () })) } else { Err(Error::EmuNotCompiled) }
    }

    /// True for `Device::Cuda` (a real GPU).
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// True for `Device::Emu`.
    pub fn is_emu(&self) -> bool {
        matches!(self, Device::Emu(_))
    }

    /// True where ops run the kernels (a GPU or the emulator); false on the host, where they
    /// run the CPU reference.
    pub fn runs_kernels(&self) -> bool {
        !matches!(self, Device::Cpu)
    }

    /// Waits until all work kiln queued on this device's stream has finished (the host and
    /// the emulator run synchronously).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu | Device::Emu(_) => Ok(()),
            Device::Cuda(d) => Ok(d.stream.synchronize()?),
        }
    }

    /// Whether two devices are the same memory space (same CUDA context, both the emulator,
    /// or both host).
    pub fn same_memory(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) | (Device::Emu(_), Device::Emu(_)) => true,
            // Same CUcontext handle: two `Device::cuda(0)` share device 0's primary context.
            (Device::Cuda(a), Device::Cuda(b)) => a.context().cu_ctx() == b.context().cu_ctx(),
            _ => false,
        }
    }
}

impl EmuDevice {
    /// Whether checked mode is on (it is by default; `KILN_EMU_CHECK=0` in the environment
    /// turns it off at start-up). Unchecked launches run several times faster.
    pub fn checked(&self) -> bool {
        crate::core::emu::checked()
    }

    /// Turns checked mode on or off for every later launch in the process.
    pub fn set_checked(&self, on: bool) {
        crate::core::emu::set_checked(on)
    }

    /// Kernel launches the emulator has run since the process started.
    pub fn launch_count(&self) -> u64 {
        crate::core::emu::launch_count()
    }

    /// Copies between host and emulated device memory (uploads and reads back) made by the
    /// calling thread since it started: a test of a call that must not synchronise with the
    /// host (one meant for CUDA-graph capture) holds the difference across the call to zero.
    pub fn host_transfers(&self) -> u64 {
        crate::core::emu::host_transfers()
    }
}

impl CudaDevice {
    pub(crate) fn from_stream(stream: Arc<CudaStream>) -> CudaDevice {
        CudaDevice { stream, blas: Arc::default() }
    }

    /// The stream's cuBLASLt handle, created on first use; an error (not a panic) when
    /// libcublasLt cannot be loaded.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn blas(&self) -> Result<&cudarc::cublaslt::CudaBlasLT> {
        if let Some(b) = self.blas.get() {
            return Ok(b);
        }
        // SAFETY: only tries to dlopen the library by its usual names.
        if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
            return Err(Error::Blas("libcublasLt was not found (put its directory on LD_LIBRARY_PATH)".into()));
        }
        self.stream.context().bind_to_thread()?;
        let handle = cudarc::cublaslt::CudaBlasLT::new(self.stream.clone())?;
        let _ = self.blas.set(handle);
        Ok(self.blas.get().expect("set above"))
    }

    /// The stream kiln launches on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device's context.
    pub fn context(&self) -> &Arc<CudaContext> {
        self.stream.context()
    }

    /// Name, compute capability, SM count and memory of the device.
    pub fn info(&self) -> Result<DeviceInfo> {
        use cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
        let ctx = self.context();
        Ok(DeviceInfo {
            name: ctx.name()?,
            compute_capability: ctx.compute_capability()?,
            sm_count: ctx.attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            total_memory: ctx.total_mem()?,
        })
    }
}

/// Number of CUDA devices, or `Error::NoDevice` when there is no driver or no device.
/// cudarc panics when libcuda is absent, so the library is probed first.
pub fn cuda_device_count() -> Result<usize> {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::NoDevice("the CUDA driver library (libcuda.so.1) was not found".into()));
    }
    let count = std::panic::catch_unwind(CudaContext::device_count)
        .map_err(|_| Error::NoDevice("the CUDA driver could not be loaded".into()))?
        .map_err(|e| Error::NoDevice(e.to_string()))?;
    match usize::try_from(count) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::NoDevice("the driver reports no device".into())),
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => write!(f, "cuda:{}", d.context().ordinal()),
            Device::Emu(_) => f.write_str("emu"),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Keeps memory freed into the device's default pool (where cudarc's stream-ordered allocations
/// come from) instead of returning it to the driver at every synchronisation, CUDA's default
/// (release threshold 0). Every safe-API call allocates its outputs: with the default, a 128 MiB
/// output is unmapped at one sync and mapped afresh at the next call, which the H200's first run
/// measured at some 1.7 µs per MB (perf/nvidia-h200-2026-11-30.md: `kiln bench` at 24–38% of
/// copy for kernels that ncu timed at 71–75% of DRAM peak). The CUDA programming guide's
/// stream-ordered allocator chapter recommends exactly this setting (UINT64_MAX) for
/// allocate-per-iteration code; the memory stays with the process, as PyTorch's caching
/// allocator keeps it. Only `Device::cuda` does this: a device on a framework's stream
/// (`cuda_from_stream`) leaves the framework's pool settings alone.
fn retain_freed_memory(ctx: &CudaContext) -> Result<()> {
    use cudarc::driver::sys;
    if !ctx.has_async_alloc() {
        return Ok(()); // no pools: cudarc allocates with cuMemAlloc
    }
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold: u64 = u64::MAX;
    // SAFETY: `pool` and `threshold` outlive the calls; the device handle comes from a live
    // context, and the attribute takes a pointer to a u64 (CUDA driver API reference).
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()).result()?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()?;
    }
    Ok(())
}
