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
                        if p.causal && j as i64 > aligned {
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

/// The reference backward checked by central finite differences of Σ dout ∘ out with respect to
/// every element of q, k, v, the slopes and the positions, one row per case and gradient: small
/// random cases with GQA/MQA, causal with sq > sk (rows that see no key), zero-length
/// sequences, no bias, linear and geometric ALiBi with `[H]` and `[B, H]` slopes.
pub(crate) fn finite_difference_rows(
    op: &dyn crate::registry::Op,
    rng: &mut rand::rngs::StdRng,
) -> Vec<crate::check::CheckRow> {
    use super::cpu::forward;
    use super::op::{BiasKind, Spec, problem};
    use crate::check::{central_difference, reference_row};
    use rand_distr::{Distribution, Normal};

    let cases = [
        (vec![3, 0, 4], vec![5, 2, 3], 4, 2, false, BiasKind::None, false),
        (vec![4, 0, 3], vec![2, 0, 5], 4, 1, true, BiasKind::Alibi, false),
        (vec![3, 2], vec![4, 0], 2, 2, false, BiasKind::Alibi, true),
        (vec![5, 1, 0, 2], vec![3, 6, 2, 2], 6, 2, true, BiasKind::Alibi, true),
        (vec![4, 0, 3], vec![], 4, 2, true, BiasKind::Geometric, true),
        (vec![5, 2], vec![], 2, 2, false, BiasKind::Geometric, false),
    ];
    let mut rows = Vec::new();
    for (n, (seqlens_q, seqlens_k, heads, heads_k, causal, bias, slopes_per_batch)) in cases.into_iter().enumerate() {
        let spec = Spec { seqlens_q, seqlens_k, heads, heads_k, head_dim: 4, causal, bias, slopes_per_batch };
        let mut pr = problem(&spec, rng);
        // Slopes large enough that the bias moves the result.
        if let Some(s) = pr.inputs.get_mut("slopes") {
            s.data.iter_mut().for_each(|x| *x += 0.2);
        }
        let cu = |name: &str| pr.inputs[name].data.iter().map(|&x| x as usize).collect::<Vec<_>>();
        let (cu_q, cu_k) = (cu("cu_seqlens_q"), cu("cu_seqlens_k"));
        let normal = Normal::new(0.0, 1.0).expect("sd 1");
        let dout: Vec<f64> = (0..pr.inputs["q"].data.len()).map(|_| normal.sample(rng)).collect();
        let names = ["q", "k", "v", "slopes", "positions"];
        let base: Vec<Vec<f64>> = names.iter().map(|k| pr.inputs.get(*k).map_or(vec![], |a| a.data.clone())).collect();
        let build = |x: &[Vec<f64>]| -> f64 {
            let bias = match bias {
                BiasKind::None => BiasRef::None,
                BiasKind::Alibi => BiasRef::Linear { slopes: &x[3] },
                BiasKind::Geometric => BiasRef::Geometric { slopes: &x[3], positions: &x[4] },
            };
            let f = forward(&Problem {
                q: &x[0],
                k: &x[1],
                v: &x[2],
                cu_seqlens_q: &cu_q,
                cu_seqlens_k: &cu_k,
                heads,
                heads_k,
                head_dim: 4,
                bias,
                causal,
                scale: 0.4,
            });
            f.out.iter().zip(&dout).map(|(o, g)| o * g).sum()
        };
        let bias_ref = match bias {
            BiasKind::None => BiasRef::None,
            BiasKind::Alibi => BiasRef::Linear { slopes: &base[3] },
            BiasKind::Geometric => BiasRef::Geometric { slopes: &base[3], positions: &base[4] },
        };
        let g = backward(
            &Problem {
                q: &base[0],
                k: &base[1],
                v: &base[2],
                cu_seqlens_q: &cu_q,
                cu_seqlens_k: &cu_k,
                heads,
                heads_k,
                head_dim: 4,
                bias: bias_ref,
                causal,
                scale: 0.4,
            },
            &dout,
        );
        let analytic = [&g.dq, &g.dk, &g.dv, &g.dslopes, &g.dpositions];
        for (which, name) in names.iter().enumerate() {
            if base[which].is_empty() && analytic[which].is_empty() {
                continue;
            }
            let numeric: Vec<f64> = (0..base[which].len())
                .map(|e| {
                    central_difference(
                        |t| {
                            let mut x = base.clone();
                            x[which][e] = t;
                            build(&x)
                        },
                        base[which][e],
                        1e-5,
                    )
                })
                .collect();
            let what = format!("finite differences d{name} (case {n}: {bias:?}, causal {causal}, H {heads}/{heads_k})");
            rows.push(reference_row(op, what, analytic[which], &numeric, 1e-6));
        }
    }
    rows
}
