//! Theoretical occupancy on an H100 (sm_90), as CUDA's occupancy calculator computes it from a
//! kernel's registers per thread, shared memory per block and block size: the fewest blocks
//! that the register file, the shared memory, the warp slots and the block slots of one SM
//! allow. Limits: NVIDIA's CUDA C++ Programming Guide, "Compute Capabilities" table (9.0).

/// Registers per SM.
pub const SM90_REGISTERS: u64 = 65_536;
/// Registers are allocated per warp in units of 256.
pub const SM90_REGISTER_UNIT: u64 = 256;
/// Resident warps per SM.
pub const SM90_WARPS: u64 = 64;
/// Resident blocks per SM.
pub const SM90_BLOCKS: u64 = 32;
/// Shared memory per SM that blocks can use (228 KiB), each block also reserving 1 KiB.
pub const SM90_SHARED_BYTES: u64 = 228 * 1024;
/// Shared memory the system reserves per block.
pub const SM90_SHARED_RESERVED: u64 = 1024;
/// Shared memory is allocated in units of 128 bytes.
pub const SM90_SHARED_UNIT: u64 = 128;

/// What limits a kernel's residency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limiter {
    /// The register file.
    Registers,
    /// Shared memory.
    Shared,
    /// The 64 warp slots.
    Warps,
    /// The 32 block slots.
    Blocks,
}

/// Resident blocks and warps per SM of one kernel at one block size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Occupancy {
    /// Blocks per SM.
    pub blocks: u64,
    /// Warps per SM.
    pub warps: u64,
    /// warps / 64.
    pub fraction: f64,
    /// The tightest limit.
    pub limiter: Limiter,
}

/// Occupancy on sm_90 of a kernel using `registers` per thread and `shared_bytes` per block
/// (static plus dynamic), launched with `threads` per block (≥ 1).
pub fn sm90(registers: u64, shared_bytes: u64, threads: u64) -> Occupancy {
    let warps_per_block = threads.div_ceil(32).max(1);
    let registers_per_warp = (registers.max(1) * 32).div_ceil(SM90_REGISTER_UNIT) * SM90_REGISTER_UNIT;
    let by_registers = (SM90_REGISTERS / registers_per_warp) / warps_per_block;
    let shared = shared_bytes.div_ceil(SM90_SHARED_UNIT) * SM90_SHARED_UNIT + SM90_SHARED_RESERVED;
    let by_shared = SM90_SHARED_BYTES / shared;
    let by_warps = SM90_WARPS / warps_per_block;
    // On a tie the structural limits (warp and block slots) are named first.
    let (blocks, limiter) = [
        (by_warps, Limiter::Warps),
        (SM90_BLOCKS, Limiter::Blocks),
        (by_registers, Limiter::Registers),
        (by_shared, Limiter::Shared),
    ]
    .into_iter()
    .min_by_key(|&(b, _)| b)
    .expect("four limits");
    let warps = blocks * warps_per_block;
    Occupancy { blocks, warps, fraction: warps as f64 / SM90_WARPS as f64, limiter }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_occupancy_calculator() {
        // 256 threads at 32 registers: 8 warps x 1024 registers per block, 8 blocks, 64 warps.
        assert_eq!(sm90(32, 0, 256), Occupancy { blocks: 8, warps: 64, fraction: 1.0, limiter: Limiter::Warps });
        // 40 registers round to 1280 per warp: 51 warps' worth, 6 blocks of 8 warps (75%).
        let o = sm90(40, 0, 256);
        assert_eq!((o.blocks, o.warps, o.limiter), (6, 48, Limiter::Registers));
        // 100 KiB of shared memory per block: 2 blocks.
        let o = sm90(32, 100 * 1024, 128);
        assert_eq!((o.blocks, o.limiter), (2, Limiter::Shared));
        // Tiny blocks are held by the 32 block slots.
        assert_eq!(sm90(16, 0, 32).limiter, Limiter::Blocks);
    }
}
