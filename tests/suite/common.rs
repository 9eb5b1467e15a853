//! Helpers every family's test file shares: a replayable RNG, the GPU-or-skip probe, and
//! the assertion over check rows.

use kiln::Device;
use kiln::check::CheckRow;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A fresh seed per run (printed, so a failure can be replayed with KILN_SEED).
pub fn rng() -> StdRng {
    let seed = std::env::var("KILN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("KILN_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Every row passed (and there was at least one).
pub fn assert_rows(rows: &[CheckRow]) {
    assert!(!rows.is_empty(), "no check ran");
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
}

/// The GPU to test on, or `None` after printing why the test skips.
pub fn gpu() -> Option<Device> {
    if !kiln::build_info::CUDA_COMPILED {
        eprintln!("skipped: built without the cuda feature");
        return None;
    }
    Device::cuda(0).map_err(|e| eprintln!("skipped: no CUDA device ({e})")).ok()
}

/// The host, and the GPU when there is one.
pub fn devices() -> Vec<Device> {
    std::iter::once(Device::Cpu).chain(gpu()).collect()
}
