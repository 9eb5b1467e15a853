//! The attention-distance profile's f64 reference (issue 29, step 1): masses that add up to the
//! rows' probabilities, pair counts that add up to the visible pairs, the uniform-attention case
//! in closed form, tokens without positions left out, and bad input as typed errors.

use crate::common::{rng, uniform};
use kiln::Error;
use kiln::attention::cpu::{BiasRef, Problem};
use kiln::attention::cpu_distance::distance_profile;

const H: usize = 2;
const D: usize = 4;

fn problem<'a>(q: &'a [f64], k: &'a [f64], cu: &'a [usize], bias: BiasRef<'a>, causal: bool) -> Problem<'a> {
    Problem {
        q,
        k,
        v: k,
        cu_seqlens_q: cu,
        cu_seqlens_k: cu,
        heads: H,
        heads_k: H,
        head_dim: D,
        bias,
        causal,
        prefix_len: None,
        scale: 0.5,
    }
}

#[test]
fn masses_and_pairs_add_up_and_uniform_attention_is_in_closed_form() {
    let mut rng = rng();
    let cu = [0usize, 5, 12];
    let total = 12;
    let (q, k) = (uniform(&mut rng, total * H * D, -1.0, 1.0), uniform(&mut rng, total * H * D, -1.0, 1.0));
    let positions = uniform(&mut rng, total * 3, -2.0, 2.0);
    let slopes = [0.5, 0.25];
    let edges = [0.0, 0.5, 1.0, 2.0, f64::INFINITY];
    for causal in [false, true] {
        for bias in [BiasRef::None, BiasRef::Geometric { slopes: &slopes, positions: &positions }] {
            let prof = distance_profile(&problem(&q, &k, &cu, bias, causal), &positions, &edges).unwrap();
            // Every row's probabilities sum to 1 and the bins cover [0, ∞).
            for h in 0..H {
                let sum: f64 = prof.mass[h * 4..(h + 1) * 4].iter().sum();
                assert!((sum - total as f64).abs() < 1e-12, "head {h} causal={causal}: {sum}");
            }
            let visible: usize = [5usize, 7].iter().map(|&s| if causal { s * (s + 1) / 2 } else { s * s }).sum();
            assert_eq!(prof.pairs.iter().sum::<f64>(), visible as f64, "causal={causal}");
        }
    }
    // q = 0 and no bias: every visible key equally likely, so the mass in a bin is Σ_i (keys of
    // row i in the bin) / (keys row i sees).
    let zeros = vec![0.0; total * H * D];
    let prof = distance_profile(&problem(&zeros, &k, &cu, BiasRef::None, false), &positions, &edges).unwrap();
    let mut want = [0.0; 4];
    for w in cu.windows(2) {
        for i in w[0]..w[1] {
            for j in w[0]..w[1] {
                let d = (0..3).map(|c| (positions[i * 3 + c] - positions[j * 3 + c]).powi(2)).sum::<f64>().sqrt();
                let bin = edges.windows(2).position(|e| e[0] <= d && d < e[1]).unwrap();
                want[bin] += 1.0 / (w[1] - w[0]) as f64;
            }
        }
    }
    for h in 0..H {
        for (b, w) in want.iter().enumerate() {
            assert!((prof.mass[h * 4 + b] - w).abs() < 1e-12, "head {h} bin {b}: {} vs {w}", prof.mass[h * 4 + b]);
        }
    }
    // The self pairs sit in the first bin (distance 0): one per token.
    assert!(prof.pairs[0] >= total as f64);
}

#[test]
fn tokens_without_positions_and_pairs_outside_the_bins_are_left_out() {
    let mut rng = rng();
    let cu = [0usize, 4];
    let (q, k) = (uniform(&mut rng, 4 * H * D, -1.0, 1.0), uniform(&mut rng, 4 * H * D, -1.0, 1.0));
    let mut positions = vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0, 0.0, 9.0, 9.0, 9.0];
    positions[10] = f64::NAN;
    // Bins [0, 1.5) and [1.5, 3.5): distance 3.16 (tokens 1 and 2) falls in the second.
    let prof = distance_profile(&problem(&q, &k, &cu, BiasRef::None, false), &positions, &[0.0, 1.5, 3.5]).unwrap();
    // Tokens 0..3 have positions (token 3's is NaN): pairs (0,0),(1,1),(2,2),(0,1),(1,0) in bin 0;
    // (0,2),(2,0),(1,2),(2,1) in bin 1.
    assert_eq!(prof.pairs, vec![5.0, 4.0]);
    for h in 0..H {
        assert!(prof.mass[h * 2] + prof.mass[h * 2 + 1] < 3.0, "token 3's keys take some of the mass");
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let q = vec![0.0; 4 * H * D];
    let cu = [0usize, 4];
    let p = problem(&q, &q, &cu, BiasRef::None, false);
    let pos = vec![0.0; 12];
    assert!(matches!(distance_profile(&p, &pos[..9], &[0.0, 1.0]), Err(Error::Shape { arg: "positions", .. })));
    for edges in [&[0.0][..], &[1.0, 1.0][..], &[2.0, 1.0][..], &[0.0, f64::NAN][..]] {
        assert!(
            matches!(distance_profile(&p, &pos, edges), Err(Error::InvalidValue { arg: "edges", .. })),
            "{edges:?}"
        );
    }
    let cu_k = [0usize, 3];
    let cross = Problem { cu_seqlens_k: &cu_k, ..p };
    assert!(matches!(distance_profile(&cross, &pos, &[0.0, 1.0]), Err(Error::InvalidValue { arg: "cu_seqlens", .. })));
}
