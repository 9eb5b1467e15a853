//! CPU reference of the attention backward (f64), explicit formulas per sequence and head:
//! P = softmax(s) with s = scale·q·kᵀ + bias (masked entries −∞, P = 0 there), O = P·V,
//! dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ∘ (dP − rowsum(dO ∘ O)), dQ = scale·dS·K, dK = scale·dSᵀ·Q
//! (GQA: dk, dv summed over the query heads that share a kv head), and the bias gradients
//! dslope = Σ dS_ij·∂bias_ij/∂slope (linear: −|i + sk − sq − j|; geometric: −‖p_i − p_j‖) and,
//! for geometric ALiBi, dp_t = Σ dS·∂bias/∂p_t over the pairs that t is a query or a key of
//! (∂‖p_i − p_j‖/∂p_i = (p_i − p_j)/‖p_i − p_j‖, taken as 0 where the points coincide).

use super::cpu::{BiasRef, Problem};

/// What the backward computes.
#[derive(Clone, Debug, PartialEq)]
pub struct Backward {
    /// `[total_q, heads, head_dim]`.
    pub dq: Vec<f64>,
    /// `[total_k, heads_k, head_dim]`.
    pub dk: Vec<f64>,
    /// `[total_k, heads_k, head_dim]`.
    pub dv: Vec<f64>,
    /// The shape of the slopes (`[H]` or `[B, H]`); empty without a bias.
    pub dslopes: Vec<f64>,
    /// `[total, 3]` for geometric ALiBi; empty otherwise.
    pub dpositions: Vec<f64>,
}

/// The gradients of Σ dout ∘ out with respect to every input of `p`, with `dout`
/// `[total_q, heads, head_dim]`.
pub fn backward(p: &Problem, dout: &[f64]) -> Backward {
    let (h_all, hk_all, d) = (p.heads, p.heads_k, p.head_dim);
    let total_q = p.cu_seqlens_q.last().copied().unwrap_or(0);
    let total_k = p.cu_seqlens_k.last().copied().unwrap_or(0);
    let group = h_all / hk_all.max(1);
    let (slopes, positions) = match p.bias {
        BiasRef::None => (None, None),
        BiasRef::Linear { slopes } => (Some(slopes), None),
        BiasRef::Geometric { slopes, positions } => (Some(slopes), Some(positions)),
    };
    let mut g = Backward {
        dq: vec![0.0; total_q * h_all * d],
        dk: vec![0.0; total_k * hk_all * d],
        dv: vec![0.0; total_k * hk_all * d],
        dslopes: vec![0.0; slopes.map_or(0, |s| s.len())],
        dpositions: vec![0.0; positions.map_or(0, |x| x.len())],
    };
    let per_batch = slopes.is_some_and(|s| s.len() != h_all);
    for b in 0..p.cu_seqlens_q.len().saturating_sub(1) {
        let (q0, q1) = (p.cu_seqlens_q[b], p.cu_seqlens_q[b + 1]);
        let (k0, k1) = (p.cu_seqlens_k[b], p.cu_seqlens_k[b + 1]);
        let (sq, sk) = (q1 - q0, k1 - k0);
        for h in 0..h_all {
            let hk = h / group;
            let slope_at = if per_batch { b * h_all + h } else { h };
            let slope = slopes.map_or(0.0, |s| s[slope_at]);
            let q_at = |i: usize| ((q0 + i) * h_all + h) * d;
            let k_at = |j: usize| ((k0 + j) * hk_all + hk) * d;
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
            // ∂bias_ij/∂slope, and the unit vector (p_i − p_j)/‖p_i − p_j‖ for geometric ALiBi.
            let bias_grad = |i: usize, j: usize| -> (f64, [f64; 3]) {
                let aligned = i as i64 + sk as i64 - sq as i64;
                match p.bias {
                    BiasRef::None => (0.0, [0.0; 3]),
                    BiasRef::Linear { .. } => (-((aligned - j as i64).unsigned_abs() as f64), [0.0; 3]),
                    BiasRef::Geometric { positions, .. } => {
                        let diff: [f64; 3] =
                            std::array::from_fn(|c| positions[(q0 + i) * 3 + c] - positions[(k0 + j) * 3 + c]);
                        let dist = diff.iter().map(|x| x * x).sum::<f64>().sqrt();
                        let unit = if dist > 0.0 { diff.map(|x| x / dist) } else { [0.0; 3] };
                        (-dist, unit)
                    }
                }
            };
            for i in 0..sq {
                let aligned = i as i64 + sk as i64 - sq as i64;
                let scores: Vec<f64> = (0..sk)
                    .map(|j| {
                        if p.causal && j as i64 > aligned && !super::cpu::in_prefix(p, b, j) {
                            return f64::NEG_INFINITY;
                        }
                        p.scale * dot(&p.q[q_at(i)..][..d], &p.k[k_at(j)..][..d]) + slope * bias_grad(i, j).0
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    continue; // no visible key: out = 0 whatever the inputs, every gradient 0
                }
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                let prob: Vec<f64> = e.iter().map(|x| x / sum).collect();
                let d_o = &dout[q_at(i)..][..d];
                // rowsum(dO ∘ O) with O = Σ_j P_ij v_j.
                let delta: f64 = (0..sk).map(|j| prob[j] * dot(d_o, &p.v[k_at(j)..][..d])).sum();
                for (j, &pj) in prob.iter().enumerate() {
                    if pj == 0.0 {
                        continue;
                    }
                    let dp = dot(d_o, &p.v[k_at(j)..][..d]);
                    let ds = pj * (dp - delta);
                    for (c, &g_o) in d_o.iter().enumerate() {
                        g.dv[k_at(j) + c] += pj * g_o;
                        g.dq[q_at(i) + c] += p.scale * ds * p.k[k_at(j) + c];
                        g.dk[k_at(j) + c] += p.scale * ds * p.q[q_at(i) + c];
                    }
                    let (dbias_dslope, unit) = bias_grad(i, j);
                    if slopes.is_some() {
                        g.dslopes[slope_at] += ds * dbias_dslope;
                    }
                    if positions.is_some() {
                        // bias = −slope·‖p_i − p_j‖: ∂/∂p_i = −slope·unit, ∂/∂p_j = +slope·unit.
                        for (c, u) in unit.iter().enumerate() {
                            g.dpositions[(q0 + i) * 3 + c] -= ds * slope * u;
                            g.dpositions[(k0 + j) * 3 + c] += ds * slope * u;
                        }
                    }
                }
            }
        }
    }
    g
}
