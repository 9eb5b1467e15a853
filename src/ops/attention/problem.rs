//! The attention problems that checks, identities and benches generate: random q, k, v,
//! sequence lengths and bias for a [`Spec`].
//!
//! Layer: ops. Imports core, the registry's types and the attention family's CPU reference.

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::families::attention::cpu;
use crate::ops::registry::{Array, Problem};

/// Which bias a generated problem has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasKind {
    /// No slopes.
    None,
    /// Linear ALiBi.
    Alibi,
    /// Geometric ALiBi (then the key lengths are the query lengths).
    Geometric,
}

/// The layout and options of a generated problem.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Query length of each sequence.
    pub seqlens_q: Vec<usize>,
    /// Key length of each sequence (ignored for geometric ALiBi: the query lengths).
    pub seqlens_k: Vec<usize>,
    /// H.
    pub heads: usize,
    /// H_k.
    pub heads_k: usize,
    /// D.
    pub head_dim: usize,
    /// Causal mask.
    pub causal: bool,
    /// The bias.
    pub bias: BiasKind,
    /// Slopes `[B, H]` random in [0, 0.3) (flash-attn's test), else `[H]` from the standard rule.
    pub slopes_per_batch: bool,
}

pub(super) fn normal(n: usize, sd: f64, rng: &mut StdRng) -> Vec<f64> {
    let d = Normal::new(0.0, sd).expect("sd > 0");
    (0..n).map(|_| d.sample(rng)).collect()
}

fn prefix_sums(lens: &[usize]) -> Vec<f64> {
    let mut total = 0;
    std::iter::once(0.0)
        .chain(lens.iter().map(|l| {
            total += l;
            total as f64
        }))
        .collect()
}

/// A problem with random N(0, 1) q, k, v (positions N(0, 2) per coordinate) for `spec`.
pub fn problem(spec: &Spec, rng: &mut StdRng) -> Problem {
    let seqlens_k = if spec.bias == BiasKind::Geometric { &spec.seqlens_q } else { &spec.seqlens_k };
    let (total_q, total_k): (usize, usize) = (spec.seqlens_q.iter().sum(), seqlens_k.iter().sum());
    let (h, hk, d, batch) = (spec.heads, spec.heads_k, spec.head_dim, spec.seqlens_q.len());
    let mut p = Problem::default();
    p.inputs.insert("q".into(), Array::new(vec![total_q, h, d], normal(total_q * h * d, 1.0, rng)));
    p.inputs.insert("k".into(), Array::new(vec![total_k, hk, d], normal(total_k * hk * d, 1.0, rng)));
    p.inputs.insert("v".into(), Array::new(vec![total_k, hk, d], normal(total_k * hk * d, 1.0, rng)));
    p.inputs.insert("cu_seqlens_q".into(), Array::new(vec![batch + 1], prefix_sums(&spec.seqlens_q)));
    p.inputs.insert("cu_seqlens_k".into(), Array::new(vec![batch + 1], prefix_sums(seqlens_k)));
    if spec.bias != BiasKind::None {
        let slopes = if spec.slopes_per_batch {
            Array::new(vec![batch, h], (0..batch * h).map(|_| rng.random_range(0.0..0.3)).collect())
        } else {
            Array::new(vec![h], cpu::alibi_slopes(h))
        };
        p.inputs.insert("slopes".into(), slopes);
    }
    if spec.bias == BiasKind::Geometric {
        p.inputs.insert("positions".into(), Array::new(vec![total_q, 3], normal(total_q * 3, 2.0, rng)));
    }
    p.params.insert("causal".into(), spec.causal as u8 as f64);
    p.params.insert("scale".into(), 0.0);
    p
}

/// `p` made prefix-LM: the input `prefix_len` (i32 `[B]`) with `lengths` (key j < lengths[b] is
/// visible to every query of sequence b under causal).
pub fn with_prefix(mut p: Problem, lengths: &[usize]) -> Problem {
    let values = lengths.iter().map(|&l| l as f64).collect();
    p.inputs.insert("prefix_len".into(), Array::new(vec![lengths.len()], values));
    p
}
