//! The attention backward done naively in a low precision (the yardstick of the flash-attn
//! rule: the kernels' error must stay within 3× this computation's error plus a floor). As a
//! plain low-precision implementation would: scores q·k summed in f32 and rounded to the dtype,
//! scale, bias and softmax in f32, P rounded to the dtype; dP = dO·v summed in f32 and rounded;
//! D = rowsum(dO ∘ out) in f32 from the stored (rounded) out; dS = P∘(dP − D) rounded; dV, dQ, dK
//! summed in f32 and rounded once; dslopes and dpositions summed in f32. It also gives, for
//! check_row.rs's reduction floor, the root sum of squares of the terms each dslopes and dpositions
//! entry sums (dS_ij·dist_ij, dS_ij·slope·unit_ij): on small problems the naive error of such a
//! cancelling sum can vanish by chance.

use crate::core::dtype::DType;
use crate::families::attention::cpu::{BiasRef, Problem};
use crate::families::attention::cpu_backward::Backward;

/// What [`naive_backward`] computes.
pub(crate) struct Naive {
    /// The gradients.
    pub grads: Backward,
    /// Root sum of squares of the terms of each dslopes entry.
    pub dslopes_rms: Vec<f64>,
    /// Root sum of squares of the terms of each dpositions entry.
    pub dpositions_rms: Vec<f64>,
}

/// The naive low-precision backward of `p` for `dout` and the forward output `out` (both
/// `[total_q, H, D]`, already rounded to `dtype`).
pub(crate) fn naive_backward(p: &Problem, out: &[f64], dout: &[f64], dtype: DType) -> Naive {
    let r = |x: f32| dtype.round(x as f64) as f32;
    let (h_all, hk_all, d) = (p.heads, p.heads_k, p.head_dim);
    let total_q = p.cu_seqlens_q.last().copied().unwrap_or(0);
    let total_k = p.cu_seqlens_k.last().copied().unwrap_or(0);
    let group = h_all / hk_all;
    let (slopes, positions) = match p.bias {
        BiasRef::None => (None, None),
        BiasRef::Linear { slopes } => (Some(slopes), None),
        BiasRef::Geometric { slopes, positions } => (Some(slopes), Some(positions)),
    };
    let per_batch = slopes.is_some_and(|s| s.len() != h_all);
    let mut dq = vec![0f32; total_q * h_all * d];
    let mut dk = vec![0f32; total_k * hk_all * d];
    let mut dv = vec![0f32; total_k * hk_all * d];
    let mut dslopes = vec![0f32; slopes.map_or(0, |s| s.len())];
    let mut dpos = vec![0f32; positions.map_or(0, |x| x.len())];
    let mut dslopes_sq = vec![0f64; dslopes.len()];
    let mut dpos_sq = vec![0f64; dpos.len()];
    let f = |x: f64| x as f32;
    for b in 0..p.cu_seqlens_q.len() - 1 {
        let (q0, k0) = (p.cu_seqlens_q[b], p.cu_seqlens_k[b]);
        let (sq, sk) = (p.cu_seqlens_q[b + 1] - q0, p.cu_seqlens_k[b + 1] - k0);
        for (h, i) in (0..h_all).flat_map(|h| (0..sq).map(move |i| (h, i))) {
            let hk = h / group;
            let slope_at = if per_batch { b * h_all + h } else { h };
            let slope = slopes.map_or(0.0, |s| f(s[slope_at]));
            let aligned = i as i64 + sk as i64 - sq as i64;
            let qi = (q0 + i) * h_all + h;
            let kj = |j: usize| ((k0 + j) * hk_all + hk) * d;
            // (distance, unit vector p_i − p_j over it) of each key.
            let geo = |j: usize| -> (f32, [f32; 3]) {
                match positions {
                    None => ((aligned - j as i64).unsigned_abs() as f32, [0.0; 3]),
                    Some(x) => {
                        let diff: [f32; 3] = std::array::from_fn(|c| f(x[(q0 + i) * 3 + c] - x[(k0 + j) * 3 + c]));
                        let dist = diff.iter().map(|v| v * v).sum::<f32>().sqrt();
                        (dist, if dist > 0.0 { diff.map(|v| v / dist) } else { [0.0; 3] })
                    }
                }
            };
            let scores: Vec<f32> = (0..sk)
                .map(|j| {
                    if p.causal && j as i64 > aligned {
                        return f32::NEG_INFINITY;
                    }
                    let dot = r((0..d).map(|c| f(p.q[qi * d + c] * p.k[kj(j) + c])).sum::<f32>());
                    let bias = if slopes.is_some() { -slope * geo(j).0 } else { 0.0 };
                    f(p.scale) * dot + bias
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if max == f32::NEG_INFINITY {
                continue;
            }
            let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            let prob: Vec<f32> = e.iter().map(|x| r(x / sum)).collect();
            let delta: f32 = (0..d).map(|c| f(dout[qi * d + c] * out[qi * d + c])).sum();
            let mut dq_acc = vec![0f32; d];
            for j in 0..sk {
                let dp = r((0..d).map(|c| f(dout[qi * d + c] * p.v[kj(j) + c])).sum::<f32>());
                let ds = r(prob[j] * (dp - delta));
                for c in 0..d {
                    dv[kj(j) + c] += prob[j] * f(dout[qi * d + c]);
                    dq_acc[c] += ds * f(p.k[kj(j) + c]);
                    dk[kj(j) + c] += f(p.scale) * ds * f(p.q[qi * d + c]);
                }
                if slopes.is_some() {
                    let (dist, unit) = geo(j);
                    dslopes[slope_at] -= ds * dist;
                    dslopes_sq[slope_at] += f64::from(ds * dist).powi(2);
                    if positions.is_some() {
                        for c in 0..3 {
                            dpos[(q0 + i) * 3 + c] -= ds * slope * unit[c];
                            dpos[(k0 + j) * 3 + c] += ds * slope * unit[c];
                            let sq = f64::from(ds * slope * unit[c]).powi(2);
                            dpos_sq[(q0 + i) * 3 + c] += sq;
                            dpos_sq[(k0 + j) * 3 + c] += sq;
                        }
                    }
                }
            }
            for c in 0..d {
                dq[qi * d + c] = r(f(p.scale) * dq_acc[c]);
            }
        }
    }
    let low = |v: Vec<f32>| v.into_iter().map(|x| r(x) as f64).collect();
    let wide = |v: Vec<f32>| v.into_iter().map(|x| x as f64).collect();
    let root = |v: Vec<f64>| v.into_iter().map(f64::sqrt).collect();
    Naive {
        grads: Backward { dq: wide(dq), dk: low(dk), dv: low(dv), dslopes: wide(dslopes), dpositions: wide(dpos) },
        dslopes_rms: root(dslopes_sq),
        dpositions_rms: root(dpos_sq),
    }
}
