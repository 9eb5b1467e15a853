//! CPU reference of attention with ALiBi (f64): for each sequence and head, the explicit score
//! matrix scale·q·kᵀ + bias with masked entries at −∞, a softmax over each row, and the
//! weighted sum of v. Plain loops, nothing tiled: the reference the kernels are checked against.

/// The bias added to the scaled scores of one sequence and head.
#[derive(Clone, Copy, Debug)]
pub enum BiasRef<'a> {
    /// Plain attention.
    None,
    /// Linear ALiBi: −slope·|i + sk − sq − j| (query i aligned to the keys' end).
    Linear {
        /// `[H]` or `[B, H]` (told apart by length).
        slopes: &'a [f64],
    },
    /// Geometric ALiBi: −slope·‖p_i − p_j‖ with per-token positions `[total, 3]` shared by the
    /// queries and the keys (self-attention: both use the same sequence layout).
    Geometric {
        /// `[H]` or `[B, H]`.
        slopes: &'a [f64],
        /// `[total, 3]`.
        positions: &'a [f64],
    },
}

/// One attention problem in the packed (varlen) layout.
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a> {
    /// `[total_q, heads, head_dim]`.
    pub q: &'a [f64],
    /// `[total_k, heads_k, head_dim]`.
    pub k: &'a [f64],
    /// `[total_k, heads_k, head_dim]`.
    pub v: &'a [f64],
    /// `[B + 1]` prefix sums of the query lengths.
    pub cu_seqlens_q: &'a [usize],
    /// `[B + 1]` prefix sums of the key lengths.
    pub cu_seqlens_k: &'a [usize],
    /// H (a multiple of `heads_k`).
    pub heads: usize,
    /// H_k: query head h reads key/value head h / (H / H_k).
    pub heads_k: usize,
    /// D.
    pub head_dim: usize,
    /// The bias.
    pub bias: BiasRef<'a>,
    /// Key j is visible from query i only when j ≤ i + sk − sq (bottom-right aligned).
    pub causal: bool,
    /// Prefix-LM (with `causal`): `[B]` prefix lengths; key j < prefix_len[b] is visible to every
    /// query of sequence b. `None`: plain causal.
    pub prefix_len: Option<&'a [usize]>,
    /// The softmax scale.
    pub scale: f64,
}

/// Whether key j of sequence b lies in its prefix (prefix-LM: visible to every query).
pub(crate) fn in_prefix(p: &Problem, b: usize, j: usize) -> bool {
    p.prefix_len.is_some_and(|prefix| j < prefix[b])
}

/// What the forward computes.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// `[total_q, heads, head_dim]`; 0 for a row that sees no key.
    pub out: Vec<f64>,
    /// `[heads, total_q]`: ln Σ_j exp(score_ij) over the visible keys; −∞ when there is none.
    pub lse: Vec<f64>,
}

/// ALiBi slopes for `n` heads (Press et al.; flash-attn's `get_alibi_slopes`): for a power of
/// two, 2^(−8(h+1)/n); otherwise the slopes of the largest power of two m < n, then every other
/// slope of the 2m-head set for the remaining n − m heads.
pub fn alibi_slopes(n: usize) -> Vec<f64> {
    fn power_of_two(n: usize) -> Vec<f64> {
        (0..n).map(|h| 2f64.powf(-8.0 * (h + 1) as f64 / n as f64)).collect()
    }
    if n == 0 || n.is_power_of_two() {
        return power_of_two(n);
    }
    let m = 1usize << n.ilog2();
    let mut slopes = power_of_two(m);
    slopes.extend(power_of_two(2 * m).into_iter().step_by(2).take(n - m));
    slopes
}

/// The slope of head h in sequence b from `[H]` or `[B, H]` slopes.
fn slope(slopes: &[f64], heads: usize, b: usize, h: usize) -> f64 {
    if slopes.len() == heads { slopes[h] } else { slopes[b * heads + h] }
}

/// Attention forward over every sequence and head.
pub fn forward(p: &Problem) -> Forward {
    let total_q = p.cu_seqlens_q.last().copied().unwrap_or(0);
    let mut out =
        Forward { out: vec![0.0; total_q * p.heads * p.head_dim], lse: vec![f64::NEG_INFINITY; p.heads * total_q] };
    for b in 0..p.cu_seqlens_q.len().saturating_sub(1) {
        let q_tokens: Vec<usize> = (p.cu_seqlens_q[b]..p.cu_seqlens_q[b + 1]).collect();
        let k_tokens: Vec<usize> = (p.cu_seqlens_k[b]..p.cu_seqlens_k[b + 1]).collect();
        attend(p, b, &q_tokens, &k_tokens, total_q, &mut out);
    }
    out
}

/// One sequence b whose queries are the rows `q_tokens` of q and whose keys are the rows
/// `k_tokens` of k and v, in order: query i and key j of the sequence are `q_tokens[i]` and
/// `k_tokens[j]`. Writes the query rows of `out` (`total_q` rows in all).
fn attend(p: &Problem, b: usize, q_tokens: &[usize], k_tokens: &[usize], total_q: usize, out: &mut Forward) {
    let (h_all, d) = (p.heads, p.head_dim);
    let group = h_all / p.heads_k.max(1);
    let (sq, sk) = (q_tokens.len(), k_tokens.len());
    for h in 0..h_all {
        let hk = h / group;
        let k_row = |j: usize| &p.k[(k_tokens[j] * p.heads_k + hk) * d..][..d];
        let v_row = |j: usize| &p.v[(k_tokens[j] * p.heads_k + hk) * d..][..d];
        for (i, &qt) in q_tokens.iter().enumerate() {
            let q_row = &p.q[(qt * h_all + h) * d..][..d];
            // i aligned to the keys' end: the causal limit and the linear bias use it.
            let aligned = i as i64 + sk as i64 - sq as i64;
            let scores: Vec<f64> =
                (0..sk).map(|j| score(p, Pair { b, h, aligned, qt, j, kt: k_tokens[j] }, q_row, k_row(j))).collect();
            let o = &mut out.out[(qt * h_all + h) * d..][..d];
            out.lse[h * total_q + qt] = softmax_times_v(&scores, v_row, o);
        }
    }
}

/// One query-key pair of sequence b and head h: the query's token `qt` and its index aligned to
/// the keys' end, the key's index j in the sequence and its token `kt`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pair {
    pub b: usize,
    pub h: usize,
    pub aligned: i64,
    pub qt: usize,
    pub j: usize,
    pub kt: usize,
}

/// The score scale·q·k + bias of one pair, −∞ where the causal mask hides the key.
pub(crate) fn score(p: &Problem, pair: Pair, q_row: &[f64], k_row: &[f64]) -> f64 {
    let Pair { b, h, aligned, qt, j, kt } = pair;
    if p.causal && j as i64 > aligned && !in_prefix(p, b, j) {
        return f64::NEG_INFINITY;
    }
    let dot: f64 = q_row.iter().zip(k_row).map(|(a, b)| a * b).sum();
    let bias = match p.bias {
        BiasRef::None => 0.0,
        BiasRef::Linear { slopes } => -slope(slopes, p.heads, b, h) * (aligned - j as i64).unsigned_abs() as f64,
        BiasRef::Geometric { slopes, positions } => {
            let (pi, pj) = (&positions[qt * 3..][..3], &positions[kt * 3..][..3]);
            let dist = (0..3).map(|c| (pi[c] - pj[c]).powi(2)).sum::<f64>().sqrt();
            -slope(slopes, p.heads, b, h) * dist
        }
    };
    p.scale * dot + bias
}

/// Writes Σ_j softmax(scores)_j · v_row(j) into `out` (left 0 when every score is −∞) and
/// returns the log-sum-exp of the scores (−∞ then).
fn softmax_times_v<'v>(scores: &[f64], v_row: impl Fn(usize) -> &'v [f64], out: &mut [f64]) -> f64 {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = weights.iter().sum();
    for (j, w) in weights.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(v_row(j)) {
            *o += w / sum * v;
        }
    }
    max + sum.ln()
}

/// The padded-batch form (BERT): q `[B, S_q, H, D]`, k and v `[B, S_k, H_k, D]`, bias none,
/// linear (slopes `[H]` or `[B, H]`) or geometric (positions `[B, S, 3]`), and an optional
/// padding mask `[B, S]` (true keeps a token; needs S_q = S_k = S) that drops tokens as queries
/// and as keys. The kept tokens of each sequence are numbered 0, 1, … in order, as unpadding
/// them (MosaicBERT) does: with right padding these are the padded positions. A dropped
/// token's row gets out 0 and lse −∞. Returns out `[B, S_q, H, D]` and lse `[H, B·S_q]`.
pub fn forward_padded(
    p: &Problem,
    (batch, seqlen_q, seqlen_k): (usize, usize, usize),
    mask: Option<&[bool]>,
) -> Forward {
    let total_q = batch * seqlen_q;
    let mut out =
        Forward { out: vec![0.0; total_q * p.heads * p.head_dim], lse: vec![f64::NEG_INFINITY; p.heads * total_q] };
    let kept = |b: usize, seqlen: usize| -> Vec<usize> {
        (b * seqlen..(b + 1) * seqlen).filter(|&t| mask.is_none_or(|m| m[t])).collect()
    };
    for b in 0..batch {
        attend(p, b, &kept(b, seqlen_q), &kept(b, seqlen_k), total_q, &mut out);
    }
    out
}
