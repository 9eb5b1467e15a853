//! The attention tile-variant sweep (`kiln sweep`; issue 23): each variant of kiln.h's
//! `kiln_attention_alibi_fwd_variant` and `kiln_attention_alibi_bwd_variant` first checked against
//! the f64 reference on a small variable-length problem that crosses several of its tiles, then
//! timed on fixed dense shapes (bf16, D = 128 with H = 16 and D = 64 with H = 32, 16k tokens as
//! B = 8 · S = 2048, causal and not, no bias and ALiBi) in two rounds, the variant list forwards
//! then backwards (so a variant's place in the order, clocks warming or cooling, shows as a
//! difference between its rounds). The fastest passing variant of each case and direction is
//! marked. Every case's problem is built once from [`BENCH_SEED`] and uploaded once per
//! direction; the variants run on the same tensors (the backward's on the default forward's
//! output and log-sum-exp, computed once).
//!
//! Built for the GPU window (shared/GPU.md: minutes of device time): 8 cases × (8 forward + 12
//! or 16 backward variants) × 2 rounds of `runs` timed calls, ~35 s of GPU time; the rest of the
//! step is the host making the 16k-token problems and the gates' references. [`SweepOptions::small`] runs the same sweep at
//! B = 2 · S = 64, H = 2, on the head dimensions asked for, with one untimed-warm-up-free call
//! per variant off a GPU (the emulator's rehearsal in tests/suite/attention_variants.rs).

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::families::attention;
use crate::ops::attention::{BiasKind, Spec, flash_flops, label, problem, with_forward};
use crate::ops::registry::{BENCH_SEED, Direction, Op, Problem};
use crate::ops::select;
use crate::tools::bench::{Prepared, median_seconds};
use crate::tools::check::check_problem;

/// One variant on one case.
#[derive(Clone, Debug)]
pub struct SweepRow {
    /// The timed case's label (shape, causal, bias).
    pub case: String,
    /// Forward or backward (FLOPs counted as FlashAttention counts them: the backward 2.5×).
    pub direction: Direction,
    /// Head dimension.
    pub head_dim: usize,
    /// Variant index (0: the default configuration).
    pub variant: usize,
    /// Its tile configuration (kiln.h's variant name).
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
    /// The directions whose variants are swept.
    pub directions: Vec<Direction>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            small: false,
            runs: 20,
            head_dims: vec![128, 64],
            directions: vec![Direction::Fwd, Direction::Bwd],
        }
    }
}

/// The variants of a direction at head dimension `head_dim`, by name (index = variant).
pub fn variant_names(direction: Direction, head_dim: usize) -> &'static [&'static str] {
    match direction {
        Direction::Fwd => attention::forward_variant_names(head_dim),
        Direction::Bwd => attention::backward_variant_names(head_dim),
        // Attention has no double backward.
        Direction::Bwd2 => &[],
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

/// The correctness gate of `variant` of `direction` at head dimension `head_dim`: a
/// variable-length problem (300/77 queries, 300/150 keys, an empty sequence, GQA: two blocks and
/// several tiles of the widest forward variant; 130 instead of 300 for the backward, whose widest
/// blocks are 128 rows and steps 64) against the reference, causal and not. `small` (the
/// emulator's rehearsal of the path) halves the lengths.
fn gate(
    op: &dyn Op,
    device: &Device,
    direction: Direction,
    (head_dim, variant): (usize, usize),
    small: bool,
    rng: &mut StdRng,
) -> Result<bool> {
    let mut pass = true;
    let long = if direction == Direction::Fwd { 300 } else { 130 };
    let [long, short_q, short_k] = if small { [long / 2, 38, 75] } else { [long, 77, 150] };
    for (causal, bias) in [(false, BiasKind::Alibi), (true, BiasKind::None)] {
        let spec = Spec {
            seqlens_q: vec![long, 0, short_q],
            seqlens_k: vec![long, 0, short_k],
            heads: 2,
            heads_k: 1,
            head_dim,
            causal,
            bias,
            slopes_per_batch: false,
        };
        let mut p = problem(&spec, rng);
        if direction == Direction::Bwd {
            p = with_forward(p, rng);
        }
        p.params.insert("variant".into(), variant as f64);
        let rows = check_problem(op, direction, DType::BF16, &p, device, &format!("{direction} variant {variant}"))?;
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

/// Runs the sweep on `device`, calling `on_case` with every row so far after each case and
/// direction (the GPU step writes its JSON there, so a run stopped at its time cap keeps the
/// cases it finished).
pub fn sweep_attention(
    device: &Device,
    o: &SweepOptions,
    mut on_case: impl FnMut(&[SweepRow]) -> Result<()>,
) -> Result<Vec<SweepRow>> {
    let op = select(&["attention/alibi".into()]).remove(0);
    let mut rng = StdRng::seed_from_u64(BENCH_SEED);
    let mut passed = std::collections::BTreeMap::new();
    for &direction in &o.directions {
        for &head_dim in &o.head_dims {
            for variant in 0..variant_names(direction, head_dim).len() {
                let pass = gate(op.as_ref(), device, direction, (head_dim, variant), o.small, &mut rng)?;
                passed.insert((direction, head_dim, variant), pass);
            }
        }
    }
    let mut rows = Vec::new();
    for spec in cases(o) {
        let d = spec.head_dim;
        // dout too where the backward is swept (out and lse come from the default forward on the
        // device: the f64 forward of a 16k-token problem would take minutes).
        let mut p: Problem = problem(&spec, &mut rng);
        if o.directions.contains(&Direction::Bwd) {
            p = with_forward(p, &mut rng);
        }
        for &direction in &o.directions {
            let flops = flash_flops(direction, &spec.seqlens_q, &spec.seqlens_k, spec.heads, d, spec.causal) as f64;
            let names = variant_names(direction, d);
            let variants: Vec<usize> = (0..names.len()).collect();
            let ok = |v: usize| passed[&(direction, d, v)];
            let mut times = vec![[f64::NAN; 2]; variants.len()];
            // One upload per direction (and, for the backward, one default forward for out and
            // lse); each variant then runs on the same device tensors.
            p.params.insert("variant".into(), -1.0);
            let mut prepared = Prepared::new(op.as_ref(), direction, DType::BF16, &p, device, true)?;
            for round in [0, 1] {
                let order: Vec<usize> =
                    if round == 0 { variants.clone() } else { variants.iter().rev().copied().collect() };
                for &v in &order {
                    if !ok(v) {
                        continue;
                    }
                    prepared.set_param("variant", v as f64);
                    times[v][round] = seconds(device, o.runs, || prepared.run())? * 1e6;
                }
            }
            let case = label(&spec);
            let best_us = |t: &[f64; 2]| t[0].min(t[1]);
            let fastest = variants
                .iter()
                .filter(|&&v| ok(v))
                .min_by(|&&a, &&b| best_us(&times[a]).total_cmp(&best_us(&times[b])))
                .copied();
            for &v in &variants {
                let us = best_us(&times[v]);
                rows.push(SweepRow {
                    case: case.clone(),
                    direction,
                    head_dim: d,
                    variant: v,
                    name: names[v].to_string(),
                    pass: ok(v),
                    median_us: times[v],
                    tflops: if us.is_finite() { flops / (us * 1e-6) / 1e12 } else { f64::NAN },
                    best: Some(v) == fastest,
                });
            }
            on_case(&rows)?;
        }
    }
    Ok(rows)
}

/// One microbenchmark's figure: what attention's tiles are read against.
#[derive(Clone, Debug)]
pub struct MicroRow {
    /// `mma.sync bf16`, `ldmatrix`, `L2 read`.
    pub name: &'static str,
    /// The rate: TFLOP/s for mma.sync, TB/s for the others.
    pub value: f64,
    /// `TFLOP/s` or `TB/s`.
    pub unit: &'static str,
    /// Whether the checksum of one run equals the host's prediction (the work was done, right).
    pub pass: bool,
}

/// The words ldmatrix_bw_kernel's warps receive in `iterations` rounds, summed mod 2^32 (see
/// kiln_selftest.h): lane l of warp w names row ((it + w) % 2)·32 + l, column 8·(it % 8) of a
/// tile whose element e holds e mod 2^16; the warp receives the 4 words of each named row.
fn ldmatrix_checksum(blocks: usize, iterations: usize) -> u32 {
    let element = |e: usize| (e & 0xffff) as u32;
    let mut per_block = 0u32;
    for warp in 0..4 {
        for it in 0..iterations {
            for lane in 0..32 {
                let (row, col) = (((it + warp) % 2) * 32 + lane, 8 * (it % 8));
                for m in 0..4 {
                    let e = row * 72 + col + 2 * m;
                    per_block = per_block.wrapping_add(element(e) | (element(e + 1) << 16));
                }
            }
        }
    }
    per_block.wrapping_mul(blocks as u32)
}

/// Runs the three microbenchmarks on `device` (`small`: a few blocks and iterations, the
/// emulator's rehearsal), each first checked by its checksum, then timed (`runs` calls).
pub fn microbenchmarks(device: &Device, small: bool, runs: usize) -> Result<Vec<MicroRow>> {
    use crate::core::tensor::Tensor;
    use crate::families::selftest::{Microbench, microbench};
    // 8 blocks of 128 threads per SM of an H100/H200 (132 SMs); iterations that make a call
    // about a millisecond.
    let (blocks, mma_iters, ld_iters, l2_words, l2_passes) =
        if small { (2, 2, 16, 4096, 2) } else { (132 * 8, 4096, 16384, 4 << 20, 64) };
    let mut rows = Vec::new();
    let u32_of = |t: &Tensor| -> Result<u32> { Ok(t.to_f64_vec()?[0] as i64 as i32 as u32) };

    // mma.sync: 2·16·8·16 flops per mma, 8 per warp iteration.
    let mut sink = Tensor::zeros(&[1], DType::F32, device)?;
    microbench(Microbench::MmaPeak, blocks, mma_iters, None, &mut sink)?;
    let want = (blocks * 128 * 512 * mma_iters) as f64;
    let pass = ((sink.to_f64_vec()?[0] - want) / want).abs() <= 1e-3;
    let s = seconds(device, runs, || microbench(Microbench::MmaPeak, blocks, mma_iters, None, &mut sink))?;
    let flops = (blocks * 4 * mma_iters * 8 * 2 * 16 * 8 * 16) as f64;
    rows.push(MicroRow { name: "mma.sync bf16", value: flops / s / 1e12, unit: "TFLOP/s", pass });

    // ldmatrix.x4: 512 bytes per warp instruction.
    let mut sink = Tensor::zeros(&[1], DType::I32, device)?;
    microbench(Microbench::LdmatrixBandwidth, blocks, ld_iters, None, &mut sink)?;
    let pass = u32_of(&sink)? == ldmatrix_checksum(blocks, ld_iters);
    let s = seconds(device, runs, || microbench(Microbench::LdmatrixBandwidth, blocks, ld_iters, None, &mut sink))?;
    let bytes = (blocks * 4 * ld_iters * 512) as f64;
    rows.push(MicroRow { name: "ldmatrix", value: bytes / s / 1e12, unit: "TB/s", pass });

    // L2: a buffer of ones small enough to stay in L2 after its first pass.
    let buf = Tensor::from_vec(vec![1i32; l2_words], &[l2_words])?.to_device(device)?;
    let mut sink = Tensor::zeros(&[1], DType::I32, device)?;
    let l2_blocks = if small { 2 } else { 132 * 16 };
    microbench(Microbench::L2Bandwidth, l2_blocks, l2_passes, Some(&buf), &mut sink)?;
    let pass = u32_of(&sink)? == (l2_words as u32).wrapping_mul(l2_passes as u32);
    let s = seconds(device, runs, || microbench(Microbench::L2Bandwidth, l2_blocks, l2_passes, Some(&buf), &mut sink))?;
    let bytes = (l2_words * 4 * l2_passes) as f64;
    rows.push(MicroRow { name: "L2 read", value: bytes / s / 1e12, unit: "TB/s", pass });
    Ok(rows)
}
