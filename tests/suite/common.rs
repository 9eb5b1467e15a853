//! Helpers every family's test file shares: a replayable RNG, the GPU-or-skip and
//! emulator-or-skip probes, the emulator's shape budget, and the assertion over check rows.

use kiln::Device;
use kiln::check::CheckRow;
use kiln::registry::Op;
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

/// The CUDA emulator, or `None` after printing why the test skips (built without `emu`).
/// `KILN_TEST_NO_EMU=1` skips it too: the GPU session (scripts/gpu-run.sh) spends its few
/// minutes on the hardware, since CI runs every emulator test.
pub fn emu() -> Option<Device> {
    if std::env::var_os("KILN_TEST_NO_EMU").is_some() {
        eprintln!("skipped: KILN_TEST_NO_EMU is set");
        return None;
    }
    Device::emu().map_err(|e| eprintln!("skipped: {e}")).ok()
}

/// The host, the emulator when it is compiled in, and the GPU when there is one.
pub fn devices() -> Vec<Device> {
    std::iter::once(Device::Cpu).chain(emu()).chain(gpu()).collect()
}

/// The devices that run the kernels: the emulator and the GPU, those present.
pub fn kernel_devices() -> Vec<Device> {
    emu().into_iter().chain(gpu()).collect()
}

/// The largest main input the emulator's tests check: checked emulation does a few million
/// element accesses per second, so sizes past this (2^20 + 3, [1027, 1021]) run on a GPU only.
pub const EMU_MAX_ELEMENTS: usize = 1 << 17;

/// `op`'s check shapes that fit [`EMU_MAX_ELEMENTS`].
pub fn emu_shapes(op: &dyn Op) -> Vec<Vec<usize>> {
    op.check_shapes().into_iter().filter(|s| s.iter().product::<usize>() <= EMU_MAX_ELEMENTS).collect()
}

/// got ≈ want entry by entry: |g − w| ≤ tol·(1 + |w|) (the f64 references' tests).
pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

/// The gradient of f at v by central differences of step h.
pub fn central_gradient(v: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    (0..v.len())
        .map(|i| {
            let (mut up, mut down) = (v.to_vec(), v.to_vec());
            up[i] += h;
            down[i] -= h;
            (f(&up) - f(&down)) / (2.0 * h)
        })
        .collect()
}

/// n values iid U[lo, hi) from `rng`.
pub fn uniform(rng: &mut rand::rngs::StdRng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    use rand::Rng;
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Σ a_i·b_i.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
