//! Performance without a GPU: what decides a memory-bound kernel's speed, counted on the
//! emulator (feature `emu`). One run of an op in a traffic window of the emulator gives its
//! DRAM bytes (distinct 32-byte sectors per launch) against the op's ideal bytes (the
//! registry's bytes model), the sectors each warp load/store touches (coalescing), and the
//! shared-memory wavefronts per request (bank conflicts). Everything here is a MODEL, labelled
//! as such wherever it is printed: GPU measurements replace it (perf/).

#[cfg(feature = "emu")]
use crate::bench::Prepared;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::registry::{Direction, Op, Problem};

/// The copy bandwidth the model's time bound assumes: an H100 SXM's measured device-to-device
/// copy rate (DESIGN.md, "Performance method").
pub const H100_COPY_BYTES_PER_S: f64 = 3.0e12;

/// The modelled traffic of one op, direction and dtype at one shape.
#[derive(Clone, Debug)]
pub struct TrafficRow {
    /// `<family>/<op>`.
    pub op: String,
    /// `fwd` or `bwd`.
    pub dir: String,
    /// Storage dtype.
    pub dtype: DType,
    /// Main-input shape.
    pub shape: Vec<usize>,
    /// Kernel launches of the op.
    pub launches: u64,
    /// The op's ideal bytes (every input read once, every output written once).
    pub ideal_bytes: u64,
    /// Modelled DRAM bytes: 32 per distinct sector read or written, per launch.
    pub dram_bytes: u64,
    /// `dram_bytes / ideal_bytes` (1.00: every byte once).
    pub traffic_ratio: f64,
    /// Sectors per global load request (a warp instruction).
    pub load_sectors_per_request: f64,
    /// Requested bytes / (32 · sectors) of the loads (1.0: perfectly coalesced).
    pub load_efficiency: f64,
    /// Sectors per global store request.
    pub store_sectors_per_request: f64,
    /// Coalescing efficiency of the stores.
    pub store_efficiency: f64,
    /// Bytes per global load request (512 for 16-byte vector loads by 32 lanes).
    pub load_bytes_per_request: f64,
    /// Shared-memory wavefronts per request (1.0: no bank conflict), 0 without shared memory.
    pub shared_wavefronts_per_request: f64,
    /// The most wavefronts one shared-memory request needed.
    pub shared_worst_wavefronts: u64,
    /// Bank-conflict wavefronts per shared request: those beyond the fewest its distinct words
    /// need (ceil(words / 32); 4 for a 16-byte access by 32 lanes). 0.0: conflict-free.
    pub shared_conflicts_per_request: f64,
    /// The most bank-conflict wavefronts of one shared request.
    pub shared_worst_conflict: u64,
    /// The bandwidth-bound time on an H100, dram_bytes / 3.0 TB/s, in µs: a lower bound for the
    /// GPU measurement.
    pub h100_bound_us: f64,
}

#[cfg_attr(not(feature = "emu"), allow(dead_code))]
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Runs `op` once on `device` (the emulator) inside a traffic window and returns the model.
pub fn traffic(op: &dyn Op, dir: Direction, dtype: DType, problem: &Problem, device: &Device) -> Result<TrafficRow> {
    if !device.is_emu() {
        return Err(Error::InvalidValue { arg: "device", reason: "the traffic model runs on the emulator".into() });
    }
    measure(op, dir, dtype, problem, device)
}

/// The call sites of the last traffic window, one line each (busiest first): sectors or
/// wavefronts per request and the kernel source's file:line ("" without `emu`).
pub fn last_sites() -> String {
    #[cfg(feature = "emu")]
    {
        use crate::ffi_emu::runtime::kiln_emu_traffic_sites;
        // SAFETY: a NULL buffer only asks for the length.
        let len = unsafe { kiln_emu_traffic_sites(std::ptr::null_mut(), 0) };
        let mut buf = vec![0u8; len];
        // SAFETY: `buf` holds `len` bytes, which the text and its NUL fit.
        unsafe { kiln_emu_traffic_sites(buf.as_mut_ptr().cast(), len) };
        String::from_utf8_lossy(&buf[..len.saturating_sub(1)]).into_owned()
    }
    #[cfg(not(feature = "emu"))]
    String::new()
}

#[cfg(feature = "emu")]
fn measure(op: &dyn Op, dir: Direction, dtype: DType, problem: &Problem, device: &Device) -> Result<TrafficRow> {
    use crate::ffi_emu::runtime::{kiln_emu_traffic, kiln_emu_traffic_begin, kiln_emu_traffic_end};
    let mut prepared = Prepared::new(op, dir, dtype, problem, device, true)?;
    // SAFETY: opens the emulator's traffic window (a flag under its lock).
    unsafe { kiln_emu_traffic_begin() };
    let result = prepared.run();
    let mut t = kiln_emu_traffic::default();
    // SAFETY: `t` is a valid, writable kiln_emu_traffic.
    unsafe { kiln_emu_traffic_end(&mut t) };
    result?;
    let ideal = op.bytes(dir, problem, dtype);
    let dram = t.dram_read_bytes + t.dram_write_bytes;
    Ok(TrafficRow {
        op: op.full_name(),
        dir: dir.name().into(),
        dtype,
        shape: problem.inputs.get("x").or(problem.inputs.values().next()).map(|a| a.shape.clone()).unwrap_or_default(),
        launches: t.launches,
        ideal_bytes: ideal,
        dram_bytes: dram,
        traffic_ratio: ratio(dram, ideal),
        load_sectors_per_request: ratio(t.load_sectors, t.load_requests),
        load_efficiency: ratio(t.load_bytes, 32 * t.load_sectors),
        store_sectors_per_request: ratio(t.store_sectors, t.store_requests),
        store_efficiency: ratio(t.store_bytes, 32 * t.store_sectors),
        load_bytes_per_request: ratio(t.load_bytes, t.load_requests),
        shared_wavefronts_per_request: ratio(t.shared_wavefronts, t.shared_requests),
        shared_worst_wavefronts: t.shared_worst_wavefronts,
        shared_conflicts_per_request: ratio(t.shared_conflict_wavefronts, t.shared_requests),
        shared_worst_conflict: t.shared_worst_conflict,
        h100_bound_us: dram as f64 / H100_COPY_BYTES_PER_S * 1e6,
    })
}

/// Without `emu` no emulated device exists, so `traffic` never gets here.
#[cfg(not(feature = "emu"))]
fn measure(_: &dyn Op, _: Direction, _: DType, _: &Problem, _: &Device) -> Result<TrafficRow> {
    Err(Error::EmuNotCompiled)
}
