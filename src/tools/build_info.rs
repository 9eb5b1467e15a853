//! How this copy of kiln was built: CUDA or not, the emulator or not, for which
//! architectures, and the ptxas report of every kernel (registers, stack, spills).

/// True when built with the `cuda` feature (the kernels are linked in).
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

/// True when built with the `emu` feature (the kernels compiled for kiln's CUDA emulator are
/// linked in: `Device::emu()`).
pub const EMU_COMPILED: bool = cfg!(feature = "emu");

/// The `-gencode` targets the kernels were compiled for (empty without `cuda`).
pub const CUDA_ARCHS: &str = env!("KILN_CUDA_ARCHS_BUILT");

/// The nvcc that compiled the kernels and its version line (empty without `cuda`).
pub const NVCC: &str = env!("KILN_NVCC_BUILT");

/// The static kernel library of the CUDA build (`libkiln_kernels.a`, holding the sm_80/sm_90a
/// cubins; it exists only when built with `cuda`), for SASS inspection ([`crate::tools::sass`]).
pub const KERNEL_LIBRARY: &str = concat!(env!("OUT_DIR"), "/libkiln_kernels.a");

/// The `ptxas -v` output of the kernel build (empty without `cuda`).
pub const PTXAS_REPORT: &str = include_str!(concat!(env!("OUT_DIR"), "/ptxas-report.txt"));

/// One kernel's resource usage from the ptxas report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelResources {
    /// The architecture it was compiled for (`sm_80`, `sm_90a`).
    pub arch: String,
    /// The mangled kernel name.
    pub name: String,
    /// Bytes of stack frame.
    pub stack_bytes: u64,
    /// Bytes of spill stores.
    pub spill_store_bytes: u64,
    /// Bytes of spill loads.
    pub spill_load_bytes: u64,
    /// Registers per thread.
    pub registers: u64,
    /// Bytes of static shared memory per block.
    pub shared_bytes: u64,
}

/// Parses a ptxas `-v` report into one entry per (kernel, architecture).
pub fn parse_ptxas_report(report: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    let mut current: Option<KernelResources> = None;
    let number_before = |line: &str, unit: &str| -> u64 {
        line.split(',')
            .find(|p| p.contains(unit))
            .and_then(|p| p.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap_or(0)
    };
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            if let Some(done) = current.take() {
                out.push(done);
            }
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            let arch = rest.split("for '").nth(1).and_then(|a| a.split('\'').next()).unwrap_or_default();
            current = Some(KernelResources {
                arch: arch.to_string(),
                name,
                stack_bytes: 0,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
                registers: 0,
                shared_bytes: 0,
            });
        } else if let Some(k) = current.as_mut() {
            if line.contains("bytes stack frame") {
                k.stack_bytes = number_before(line, "stack frame");
                k.spill_store_bytes = number_before(line, "spill stores");
                k.spill_load_bytes = number_before(line, "spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                k.registers = line
                    .split("Used")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                k.shared_bytes = number_before(line, "bytes smem");
            }
        }
    }
    out.extend(current);
    out
}
