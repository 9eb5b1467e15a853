//! The attention-distance profile, an f64 reference ("Transformers Discover Molecular Structure
//! Without Graph Priors": attention learns to decay about as 1/r with distance; its analysis code
//! is not public): for self-attention over tokens with 3-D positions, per head h and distance bin
//! b, the attention mass Σ p_h[i, j] over the visible pairs with edges[b] ≤ ‖p_i − p_j‖ <
//! edges[b + 1], and the count of those pairs. A diagnostic: forward only.

use super::cpu::{Pair, Problem, forward, score};
use crate::core::error::{Error, Result};

/// The profile: `mass [H, bins]` and `pairs [bins]` (the same pairs for every head).
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Σ p_h[i, j] per head and bin, row-major `[H, bins]`.
    pub mass: Vec<f64>,
    /// Visible pairs per bin.
    pub pairs: Vec<f64>,
}

/// The profile of self-attention problem `p` (queries and keys the same tokens: cu_seqlens_q =
/// cu_seqlens_k) over `positions [total, 3]` (a token with any NaN coordinate has none: its
/// pairs are left out) and bin `edges` (increasing, at least two; the last may be +∞). The
/// probabilities are the forward's: its scores (bias and mask included) against its LSE.
pub fn distance_profile(p: &Problem, positions: &[f64], edges: &[f64]) -> Result<Profile> {
    if p.cu_seqlens_q != p.cu_seqlens_k {
        return Err(Error::InvalidValue {
            arg: "cu_seqlens",
            reason: "the profile is of self-attention: queries and keys the same tokens".into(),
        });
    }
    let total = p.cu_seqlens_q.last().copied().unwrap_or(0);
    if positions.len() != 3 * total {
        return Err(Error::Shape { arg: "positions", expected: format!("[{total}, 3]"), got: vec![positions.len()] });
    }
    if edges.len() < 2 || edges.windows(2).any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less)) {
        return Err(Error::InvalidValue { arg: "edges", reason: "at least two bin edges, increasing".into() });
    }
    let bins = edges.len() - 1;
    let bin_of = |d: f64| edges.windows(2).position(|w| w[0] <= d && d < w[1]);
    let lse = forward(p).lse;
    let (h_all, d) = (p.heads, p.head_dim);
    let group = h_all / p.heads_k.max(1);
    let mut out = Profile { mass: vec![0.0; h_all * bins], pairs: vec![0.0; bins] };
    let pos = |t: usize| -> Option<&[f64]> {
        let r = &positions[t * 3..t * 3 + 3];
        (!r.iter().any(|v| v.is_nan())).then_some(r)
    };
    for b in 0..p.cu_seqlens_q.len().saturating_sub(1) {
        let tokens = p.cu_seqlens_q[b]..p.cu_seqlens_q[b + 1];
        for (i, qt) in tokens.clone().enumerate() {
            let Some(pi) = pos(qt) else { continue };
            for (j, kt) in tokens.clone().enumerate() {
                let Some(pj) = pos(kt) else { continue };
                let dist = (0..3).map(|c| (pi[c] - pj[c]).powi(2)).sum::<f64>().sqrt();
                let Some(bin) = bin_of(dist) else { continue };
                let mut visible = false;
                for h in 0..h_all {
                    let (q_row, k_row) =
                        (&p.q[(qt * h_all + h) * d..][..d], &p.k[(kt * p.heads_k + h / group) * d..][..d]);
                    let sc = score(p, Pair { b, h, aligned: i as i64, qt, j, kt }, q_row, k_row);
                    if sc == f64::NEG_INFINITY {
                        continue;
                    }
                    visible = true;
                    out.mass[h * bins + bin] += (sc - lse[h * total + qt]).exp();
                }
                if visible {
                    out.pairs[bin] += 1.0;
                }
            }
        }
    }
    Ok(out)
}
