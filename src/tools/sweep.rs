//! The attention forward's tile-variant sweep (`kiln sweep`; issue 23): each variant of
//! kiln.h's `kiln_attention_alibi_fwd_variant` first checked against the f64 reference on a small
//! variable-length problem that crosses several of its tiles, then timed on fixed dense shapes
//! (bf16, D = 128 with H = 16 and D = 64 with H = 32, 16k tokens as B = 8 · S = 2048, causal and
//! not, no bias and ALiBi) in two rounds, the variant list forwards then backwards (so a
//! variant's place in the order, clocks warming or cooling, shows as a difference between its
//! rounds). The fastest passing variant of each case is marked. Every case's problem is built
//! once from [`BENCH_SEED`] and uploaded once; the variants run on the same tensors.
//!
//! Built for the GPU window (shared/GPU.md: minutes of device time): 8 cases × 11 variants × 2
//! rounds of `runs` timed calls, a few seconds of GPU time; most of the step is the host making
//! the 16k-token problems. [`SweepOptions::small`] runs the same sweep at B = 2 · S = 64, H = 2,
//! on the head dimensions asked for, with one untimed-warm-up-free call per variant off a GPU
//! (the emulator's rehearsal in tests/suite/attention_variants.rs).

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::families::attention;
use crate::ops::attention::{BiasKind, Spec, flash_flops, label, problem};
use crate::ops::registry::{BENCH_SEED, Direction, Op, Problem};
use crate::ops::select;
use crate::tools::bench::{Prepared, median_seconds};
use crate::tools::check::check_problem;

/// One variant on one case.
#[derive(Clone, Debug)]
pub struct SweepRow {
    /// The timed case's label (shape, causal, bias).
    pub case: String,
    /// Head dimension.
    pub head_dim: usize,
    /// Variant index (0: the default configuration).
    pub variant: usize,
    /// Its tile configuration (warps × query rows per warp × keys per tile).
    pub name: String,
    /// Whether the variant passed its correctness gate (a variant that failed is not timed).
    pub pass: bool,
    /// Median microseconds of round 1 and round 2 (NaN when not timed).
    pub median_us: [f64; 2],
    /// TFLOP/s (FlashAttention's count) at the better round.
    pub tflops: f64,
    /// The fastest passing variant of its case.
    pub best: bool,
}

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// B = 2 · S = 64, H = 2 and two cases per head dimension (no bias full, ALiBi causal)
    /// instead of the dense 16k-token shapes with all four.
    pub small: bool,
    /// Timed calls per median (on a GPU; elsewhere one call).
    pub runs: usize,
    /// Head dimensions (of 128 and 64).
    pub head_dims: Vec<usize>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions { small: false, runs: 20, head_dims: vec![128, 64] }
    }
}

/// The dense cases.
fn cases(o: &SweepOptions) -> Vec<Spec> {
    let (batch, seqlen, heads_128) = if o.small { (2, 64, 2) } else { (8, 2048, 16) };
    let options: &[(bool, BiasKind)] = if o.small {
        &[(false, BiasKind::None), (true, BiasKind::Alibi)]
    } else {
        &[(false, BiasKind::None), (false, BiasKind::Alibi), (true, BiasKind::None), (true, BiasKind::Alibi)]
    };
    let mut v = Vec::new();
    for &head_dim in &o.head_dims {
        // H·D = 2048 on the dense shapes.
        let heads = if o.small { heads_128 } else { heads_128 * 128 / head_dim };
        for &(causal, bias) in options {
            v.push(Spec {
                seqlens_q: vec![seqlen; batch],
                seqlens_k: vec![seqlen; batch],
                heads,
                heads_k: heads,
                head_dim,
                causal,
                bias,
                slopes_per_batch: false,
            });
        }
    }
    v
}

/// The correctness gate of `variant` at head dimension `head_dim`: a variable-length problem
/// (300/77 queries, 300/150 keys, an empty sequence, GQA) against the reference, causal and not.
fn gate(op: &dyn Op, device: &Device, head_dim: usize, variant: usize, rng: &mut StdRng) -> Result<bool> {
    let mut pass = true;
    for (causal, bias) in [(false, BiasKind::Alibi), (true, BiasKind::None)] {
        let spec = Spec {
            seqlens_q: vec![300, 0, 77],
            seqlens_k: vec![300, 0, 150],
            heads: 2,
            heads_k: 1,
            head_dim,
            causal,
            bias,
            slopes_per_batch: false,
        };
        let mut p = problem(&spec, rng);
        p.params.insert("variant".into(), variant as f64);
        let rows = check_problem(op, Direction::Fwd, DType::BF16, &p, device, &format!("variant {variant}"))?;
        pass &= rows.iter().all(|r| r.pass);
    }
    Ok(pass)
}

/// Seconds of one call of `f`: the median of `runs` after a warm-up on a GPU, one call elsewhere
/// (the emulator's and the host's times say nothing about a GPU; the rehearsal needs the path).
fn seconds(device: &Device, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    if device.is_cuda() {
        return median_seconds(device, runs, f);
    }
    let t = std::time::Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

/// Runs the sweep on `device`.
pub fn sweep_attention(device: &Device, o: &SweepOptions) -> Result<Vec<SweepRow>> {
    let op = select(&["attention/alibi".into()]).remove(0);
    let mut rng = StdRng::seed_from_u64(BENCH_SEED);
    let mut passed = std::collections::BTreeMap::new();
    for &head_dim in &o.head_dims {
        for variant in 0..attention::forward_variants(head_dim) {
            passed.insert((head_dim, variant), gate(op.as_ref(), device, head_dim, variant, &mut rng)?);
        }
    }
    let mut rows = Vec::new();
    for spec in cases(o) {
        let d = spec.head_dim;
        let mut p: Problem = problem(&spec, &mut rng);
        let flops = flash_flops(Direction::Fwd, &spec.seqlens_q, &spec.seqlens_k, spec.heads, d, spec.causal) as f64;
        let variants: Vec<usize> = (0..attention::forward_variants(d)).collect();
        let mut times = vec![[f64::NAN; 2]; variants.len()];
        for round in [0, 1] {
            let order: Vec<usize> =
                if round == 0 { variants.clone() } else { variants.iter().rev().copied().collect() };
            for &v in &order {
                if !passed[&(d, v)] {
                    continue;
                }
                p.params.insert("variant".into(), v as f64);
                let mut prepared = Prepared::new(op.as_ref(), Direction::Fwd, DType::BF16, &p, device, true)?;
                times[v][round] = seconds(device, o.runs, || prepared.run())? * 1e6;
            }
        }
        let case = label(&spec);
        let best_us = |t: &[f64; 2]| t[0].min(t[1]);
        let fastest = variants
            .iter()
            .filter(|&&v| passed[&(d, v)])
            .min_by(|&&a, &&b| best_us(&times[a]).total_cmp(&best_us(&times[b])))
            .copied();
        for &v in &variants {
            let us = best_us(&times[v]);
            rows.push(SweepRow {
                case: case.clone(),
                head_dim: d,
                variant: v,
                name: attention::forward_variant_names(d)[v].to_string(),
                pass: passed[&(d, v)],
                median_us: times[v],
                tflops: if us.is_finite() { flops / (us * 1e-6) / 1e12 } else { f64::NAN },
                best: Some(v) == fastest,
            });
        }
    }
    Ok(rows)
}
