//! The attention reference backward against central finite differences of its forward.
//!
//! Layer: ops. Imports core, the registry's types and the attention family's CPU reference.

use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use super::problem::{BiasKind, Spec, problem};
use crate::families::attention::cpu::{BiasRef, Problem, forward};
use crate::families::attention::cpu_backward::backward;
use crate::ops::check_row::{CheckRow, central_difference};
use crate::ops::registry::Op;
use crate::ops::self_check::reference_row;

/// The reference backward checked by central finite differences of Σ dout ∘ out with respect to
/// every element of q, k, v, the slopes and the positions, one row per case and gradient: small
/// random cases with GQA/MQA, causal with sq > sk (rows that see no key), zero-length
/// sequences, no bias, linear and geometric ALiBi with `[H]` and `[B, H]` slopes.
pub(super) fn rows(op: &dyn Op, rng: &mut StdRng) -> Vec<CheckRow> {
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
        // Two of the causal cases are prefix-LM: half of each sequence's keys plus one.
        let prefix: Option<Vec<usize>> =
            (causal && n % 2 == 1).then(|| cu_k.windows(2).map(|w| (w[1] - w[0]) / 2 + 1).collect());
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
                prefix_len: prefix.as_deref(),
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
                prefix_len: prefix.as_deref(),
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
            let what = format!(
                "finite differences d{name} (case {n}: {bias:?}, causal {causal}, prefix {prefix:?}, H {heads}/{heads_k})"
            );
            rows.push(reference_row(op, what, analytic[which], &numeric, 1e-6));
        }
    }
    rows
}
