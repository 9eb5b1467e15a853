//! The attention benchmark cases: fixed, named problems (FlashAttention's dense shapes on a GPU,
//! a small dense shape on the CPU and the emulator) instead of a random one, their labels, and
//! the FLOP count their TFLOP/s divide by. `Op::bench_cases` (mod.rs) builds each spec's problem.
//!
//! Layer: ops. Imports the registry's types and this family's problem specs.

use super::problem::{BiasKind, Spec};
use crate::ops::registry::Direction;

/// The variable-length mix of the GPU cases: 16 sequences, 16384 tokens, lengths that are not
/// multiples of the tiles (fixed here, not drawn).
pub const VARLEN_MIX: [usize; 16] =
    [2048, 1900, 1536, 1300, 1200, 1100, 1024, 1000, 950, 900, 800, 700, 600, 517, 500, 309];

/// The dense GPU shapes `(batch, seqlen)`: 16k tokens each (FlashAttention's benchmark).
pub const GPU_DENSE: [(usize, usize); 3] = [(16, 1024), (8, 2048), (2, 8192)];

/// The bias kinds every dense D = 128 shape runs with, in bench order.
const BIASES: [BiasKind; 3] = [BiasKind::None, BiasKind::Alibi, BiasKind::Geometric];

/// FLOPs as FlashAttention counts them (REFERENCE §4; benches/peers/attention.py counts the
/// same): the forward 4·Σᵢ sq_i·sk_i·H·D, halved under causal; the backward 2.5× the forward
/// (five matmuls against two).
pub fn flash_flops(
    dir: Direction,
    seqlens_q: &[usize],
    seqlens_k: &[usize],
    heads: usize,
    head_dim: usize,
    causal: bool,
) -> u64 {
    let pairs: u64 = seqlens_q.iter().zip(seqlens_k).map(|(&q, &k)| (q * k) as u64).sum();
    let forward = 4 * pairs * (heads * head_dim) as u64;
    let forward = if causal { forward / 2 } else { forward };
    // 4·pairs is even and stays even when halved, so 2.5× is exact.
    if dir == Direction::Bwd { forward * 5 / 2 } else { forward }
}

/// The label of a bench spec: `B8xS2048xH16xD128 causal alibi` for a dense layout (every
/// sequence as long), `var16xT16384xH16xD128 full nobias` for a variable-length one (16
/// sequences, 16384 tokens); `Hk` follows H where the key heads differ.
pub fn label(spec: &Spec) -> String {
    let (batch, total) = (spec.seqlens_q.len(), spec.seqlens_q.iter().sum::<usize>());
    let dense = spec.seqlens_q.windows(2).all(|w| w[0] == w[1]) && spec.seqlens_k == spec.seqlens_q;
    let layout = if dense {
        format!("B{batch}xS{}", spec.seqlens_q.first().copied().unwrap_or(0))
    } else {
        format!("var{batch}xT{total}")
    };
    let kv_heads = if spec.heads_k == spec.heads { String::new() } else { format!("xHk{}", spec.heads_k) };
    let causal = if spec.causal { "causal" } else { "full" };
    let bias = match spec.bias {
        BiasKind::None => "nobias",
        BiasKind::Alibi => "alibi",
        BiasKind::Geometric => "geometric",
    };
    format!("{layout}xH{}{kv_heads}xD{} {causal} {bias}", spec.heads, spec.head_dim)
}

fn spec(seqlens: Vec<usize>, heads: usize, head_dim: usize, causal: bool, bias: BiasKind) -> Spec {
    // Linear ALiBi: slopes [H] by the standard rule (2^(−8(h+1)/H)); geometric: the same
    // slopes and N(0, 2) positions.
    Spec {
        seqlens_k: seqlens.clone(),
        seqlens_q: seqlens,
        heads,
        heads_k: heads,
        head_dim,
        causal,
        bias,
        slopes_per_batch: false,
    }
}

/// The specs of the bench cases, in bench order. On a GPU, 16k tokens with H·D = 2048:
/// every dense shape of [`GPU_DENSE`] at D = 128 (H = 16), full and causal, with every bias;
/// then [`VARLEN_MIX`] at D = 128, full and causal, with every bias; then a subset at D = 64
/// (H = 32), to keep the table (and the GPU run's time, which the host's inputs dominate)
/// in bounds: every dense shape with linear ALiBi, full and causal, and B = 8·S = 2048 also
/// without bias and with geometric ALiBi. On the CPU and the emulator: B = 2·S = 128, H = 2,
/// D = 64, full and causal, with every bias.
pub fn bench_specs(gpu: bool) -> Vec<Spec> {
    let mut specs = Vec::new();
    let options = |biases: &[BiasKind]| -> Vec<(bool, BiasKind)> {
        [false, true].into_iter().flat_map(|c| biases.iter().map(move |&b| (c, b))).collect()
    };
    if !gpu {
        for (causal, bias) in options(&BIASES) {
            specs.push(spec(vec![128; 2], 2, 64, causal, bias));
        }
        return specs;
    }
    for (batch, seqlen) in GPU_DENSE {
        for (causal, bias) in options(&BIASES) {
            specs.push(spec(vec![seqlen; batch], 16, 128, causal, bias));
        }
    }
    for (causal, bias) in options(&BIASES) {
        specs.push(spec(VARLEN_MIX.to_vec(), 16, 128, causal, bias));
    }
    for (batch, seqlen) in GPU_DENSE {
        let biases: &[BiasKind] = if seqlen == 2048 { &BIASES } else { &[BiasKind::Alibi] };
        for (causal, bias) in options(biases) {
            specs.push(spec(vec![seqlen; batch], 32, 64, causal, bias));
        }
    }
    specs
}
