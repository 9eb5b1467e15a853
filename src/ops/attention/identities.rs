//! The attention reference checked against itself (DESIGN.md testing rule 1): slope 0 is plain
//! attention; shifting every position changes nothing bidirectionally; causal row i sees exactly
//! the keys j ≤ i + sk − sq; the slope rule gives the published n = 12 values; the padded form
//! with a key-padding mask equals the packed form.

use rand::rngs::StdRng;

use super::problem::{BiasKind, Spec, problem};
use crate::families::attention::cpu::{self, BiasRef, Forward};
use crate::ops::check_row::CheckRow;
use crate::ops::registry::{Op, Problem};
use crate::ops::self_check::reference_row;

/// Agreement to a few ulps of f64 sums over at most a few hundred terms.
const RTOL: f64 = 1e-12;

/// ALiBi slopes for 12 heads as published (ofirpress/attention_with_linear_biases), to 8 digits.
// The published decimals, as printed (one of them is 1/√2 to 8 digits), not constants.
#[allow(clippy::approx_constant)]
const SLOPES_12: [f64; 12] = [
    0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625, 0.70710678, 0.35355339, 0.17677670, 0.08838835,
];

fn spec(seqlens_q: Vec<usize>, seqlens_k: Vec<usize>, causal: bool, bias: BiasKind) -> Spec {
    Spec { seqlens_q, seqlens_k, heads: 4, heads_k: 2, head_dim: 8, causal, bias, slopes_per_batch: true }
}

fn data<'a>(p: &'a Problem, name: &str) -> &'a [f64] {
    p.inputs.get(name).map_or(&[], |a| a.data.as_slice())
}

fn offsets(p: &Problem, name: &str) -> Vec<usize> {
    data(p, name).iter().map(|&x| x as usize).collect()
}

/// The reference on a generated problem, with `bias` replacing the problem's own.
fn run(p: &Problem, s: &Spec, bias: BiasRef, causal: bool) -> Forward {
    let (cu_q, cu_k) = (offsets(p, "cu_seqlens_q"), offsets(p, "cu_seqlens_k"));
    cpu::forward(&cpu::Problem {
        q: data(p, "q"),
        k: data(p, "k"),
        v: data(p, "v"),
        cu_seqlens_q: &cu_q,
        cu_seqlens_k: &cu_k,
        heads: s.heads,
        heads_k: s.heads_k,
        head_dim: s.head_dim,
        bias,
        causal,
        prefix_len: None,
        scale: 0.3,
    })
}

/// Both outputs of `got` and `want` as one comparison row (lse −∞ entries must match exactly).
fn row(op: &dyn Op, what: &str, got: &Forward, want: &Forward) -> CheckRow {
    let flat = |f: &Forward| f.out.iter().chain(&f.lse).copied().collect::<Vec<f64>>();
    reference_row(op, what, &flat(got), &flat(want), RTOL)
}

/// Every identity, one row each.
pub fn rows(op: &dyn Op, rng: &mut StdRng) -> Vec<CheckRow> {
    let mut rows = Vec::new();

    // Slope 0 is plain attention (causal and not, sq ≠ sk).
    for causal in [false, true] {
        let s = spec(vec![5, 0, 9], vec![7, 3, 9], causal, BiasKind::Alibi);
        let p = problem(&s, rng);
        let zeros = vec![0.0; data(&p, "slopes").len()];
        let with = run(&p, &s, BiasRef::Linear { slopes: &zeros }, causal);
        let plain = run(&p, &s, BiasRef::None, causal);
        rows.push(row(op, &format!("slope 0 equals plain attention (causal {causal})"), &with, &plain));
    }

    // Shifting every position by one vector changes nothing (bidirectional geometric ALiBi).
    let s = spec(vec![6, 11], vec![6, 11], false, BiasKind::Geometric);
    let p = problem(&s, rng);
    let slopes = data(&p, "slopes");
    let shifted: Vec<f64> =
        data(&p, "positions").iter().enumerate().map(|(i, x)| x + [3.5, -2.0, 7.25][i % 3]).collect();
    let base = run(&p, &s, BiasRef::Geometric { slopes, positions: data(&p, "positions") }, false);
    let moved = run(&p, &s, BiasRef::Geometric { slopes, positions: &shifted }, false);
    rows.push(row(op, "shifting all positions changes nothing (geometric)", &moved, &base));

    // Causal row i equals bidirectional attention of that one query over keys 0..=i + sk − sq
    // (nothing for a row with i + sk − sq < 0), for sq < sk and sq > sk; prefix-LM (lengths P)
    // over keys 0..=max(i + sk − sq, P − 1): P = 0 is plain causal, P ≥ sk bidirectional.
    for (sq, sk) in [(5, 9), (9, 5)] {
        for prefix in [None, Some(0), Some(3), Some(sk + 1)] {
            let s = Spec { heads: 2, heads_k: 1, ..spec(vec![sq], vec![sk], true, BiasKind::None) };
            let p = problem(&s, rng);
            let lengths = prefix.map(|l| vec![l]);
            let (cu_q, cu_k) = (offsets(&p, "cu_seqlens_q"), offsets(&p, "cu_seqlens_k"));
            let masked = cpu::forward(&cpu::Problem {
                q: data(&p, "q"),
                k: data(&p, "k"),
                v: data(&p, "v"),
                cu_seqlens_q: &cu_q,
                cu_seqlens_k: &cu_k,
                heads: s.heads,
                heads_k: s.heads_k,
                head_dim: s.head_dim,
                bias: BiasRef::None,
                causal: true,
                prefix_len: lengths.as_deref(),
                scale: 0.3,
            });
            let (d, h) = (s.head_dim, s.heads);
            let mut want = Forward { out: Vec::new(), lse: vec![f64::NEG_INFINITY; h * sq] };
            for i in 0..sq {
                let causal_keys = (i as i64 + sk as i64 - sq as i64 + 1).clamp(0, sk as i64) as usize;
                let visible = causal_keys.max(prefix.unwrap_or(0).min(sk));
                let one = cpu::forward(&cpu::Problem {
                    q: &data(&p, "q")[i * h * d..][..h * d],
                    k: &data(&p, "k")[..visible * s.heads_k * d],
                    v: &data(&p, "v")[..visible * s.heads_k * d],
                    cu_seqlens_q: &[0, 1],
                    cu_seqlens_k: &[0, visible],
                    heads: h,
                    heads_k: s.heads_k,
                    head_dim: d,
                    bias: BiasRef::None,
                    causal: false,
                    prefix_len: None,
                    scale: 0.3,
                });
                want.out.extend(one.out);
                for hh in 0..h {
                    want.lse[hh * sq + i] = one.lse[hh];
                }
            }
            let what = match prefix {
                None => format!("causal row i sees exactly j <= i + sk - sq (sq {sq}, sk {sk})"),
                Some(l) => format!("prefix-LM {l}: row i sees j <= i + sk - sq or j < {l} (sq {sq}, sk {sk})"),
            };
            rows.push(row(op, &what, &masked, &want));
        }
    }

    // The slope rule reproduces the published values for 12 heads.
    rows.push(reference_row(
        op,
        "alibi_slopes(12) equals the published values",
        &cpu::alibi_slopes(12),
        &SLOPES_12,
        1e-8,
    ));

    // The padded batch with a padding mask that has holes equals the packed sequences of the
    // kept tokens on their rows (kept tokens renumbered in order, as unpadding does), and the
    // dropped rows are 0 with lse −∞; causal, so the renumbering matters to the mask too.
    let (batch, seqlen) = (3, 10);
    let lens = [10, 4, 7];
    let s = spec(lens.to_vec(), lens.to_vec(), true, BiasKind::Alibi);
    let p = problem(&s, rng);
    let (h, hk, d) = (s.heads, s.heads_k, s.head_dim);
    let slopes = data(&p, "slopes");
    let packed = run(&p, &s, BiasRef::Linear { slopes }, true);
    // Sequence b keeps the positions i with (3i + b) mod 10 < lens[b]: i ↦ 3i + b is a bijection
    // of Z/10, so exactly lens[b] of them, spread with holes.
    let mask: Vec<bool> =
        (0..batch * seqlen).map(|t| (3 * (t % seqlen) + t / seqlen) % seqlen < lens[t / seqlen]).collect();
    let kept: Vec<usize> = (0..batch * seqlen).filter(|&t| mask[t]).collect();
    // Pad q, k, v: packed rows at the kept tokens, arbitrary rows elsewhere (they must not matter).
    let scatter = |t: &[f64], heads: usize| -> Vec<f64> {
        let mut out: Vec<f64> = (0..batch * seqlen * heads * d).map(|i| (i % 5) as f64 - 2.0).collect();
        for (r, &tok) in kept.iter().enumerate() {
            out[tok * heads * d..][..heads * d].copy_from_slice(&t[r * heads * d..][..heads * d]);
        }
        out
    };
    let (q, k, v) = (scatter(data(&p, "q"), h), scatter(data(&p, "k"), hk), scatter(data(&p, "v"), hk));
    let padded_problem = cpu::Problem {
        q: &q,
        k: &k,
        v: &v,
        cu_seqlens_q: &[],
        cu_seqlens_k: &[],
        heads: h,
        heads_k: hk,
        head_dim: d,
        bias: BiasRef::Linear { slopes },
        causal: true,
        prefix_len: None,
        scale: 0.3,
    };
    let got = cpu::forward_padded(&padded_problem, (batch, seqlen, seqlen), Some(&mask));
    let tokens = batch * seqlen;
    let mut want = Forward { out: vec![0.0; tokens * h * d], lse: vec![f64::NEG_INFINITY; h * tokens] };
    for (r, &tok) in kept.iter().enumerate() {
        want.out[tok * h * d..][..h * d].copy_from_slice(&packed.out[r * h * d..][..h * d]);
        for hh in 0..h {
            want.lse[hh * tokens + tok] = packed.lse[hh * kept.len() + r];
        }
    }
    rows.push(row(op, "padded batch with a holey padding mask equals packed; dropped rows 0, lse -inf", &got, &want));
    rows
}
