//! CPU references of the fused residual add + LayerNorm / RMSNorm (f64, two-pass row
//! statistics). Rows are the leading dimensions, `dim` the last one.

use super::spec::NormKind;

/// What the forward computes, in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// [rows, dim]: the normalised output.
    pub y: Vec<f64>,
    /// [rows, dim]: s = x + residual, the input of the normalisation.
    pub s: Vec<f64>,
    /// [rows]: row means (LayerNorm; zeros for RMSNorm).
    pub mean: Vec<f64>,
    /// [rows]: 1/sqrt(var + eps) (LayerNorm) or 1/sqrt(mean(s²) + eps) (RMSNorm).
    pub rstd: Vec<f64>,
}

/// y = norm(x + residual)·γ + β; γ = 1 and β = 0 when absent.
pub fn forward(
    kind: NormKind,
    x: &[f64],
    residual: Option<&[f64]>,
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
    dim: usize,
    eps: f64,
) -> Forward {
    let s: Vec<f64> = match residual {
        Some(r) => x.iter().zip(r).map(|(a, b)| a + b).collect(),
        None => x.to_vec(),
    };
    let rows = s.len().checked_div(dim).unwrap_or(0);
    let mut out = Forward { y: vec![0.0; s.len()], s, mean: vec![0.0; rows], rstd: vec![0.0; rows] };
    for r in 0..rows {
        let row = &out.s[r * dim..(r + 1) * dim];
        let mean = match kind {
            NormKind::LayerNorm => row.iter().sum::<f64>() / dim as f64,
            NormKind::RmsNorm => 0.0,
        };
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / dim as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        out.mean[r] = mean;
        out.rstd[r] = rstd;
        for c in 0..dim {
            let xhat = (row[c] - mean) * rstd;
            out.y[r * dim + c] = xhat * gamma.map_or(1.0, |g| g[c]) + beta.map_or(0.0, |b| b[c]);
        }
    }
    out
}

/// What the backward computes, in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Backward {
    /// [rows, dim]: dL/ds (= dL/dx = dL/dresidual), including dresidual_out.
    pub ds: Vec<f64>,
    /// [dim]: Σ_rows dy·x̂.
    pub dgamma: Vec<f64>,
    /// [dim]: Σ_rows dy.
    pub dbeta: Vec<f64>,
}

/// Gradients given the forward's s and statistics (mean, rstd; mean ignored for RMSNorm).
pub fn backward(
    kind: NormKind,
    dy: &[f64],
    s: &[f64],
    (mean, rstd): (&[f64], &[f64]),
    gamma: Option<&[f64]>,
    dresidual_out: Option<&[f64]>,
    dim: usize,
) -> Backward {
    let rows = s.len().checked_div(dim).unwrap_or(0);
    let mut out = Backward { ds: vec![0.0; s.len()], dgamma: vec![0.0; dim], dbeta: vec![0.0; dim] };
    for r in 0..rows {
        let m = if kind == NormKind::LayerNorm { mean[r] } else { 0.0 };
        let range = r * dim..(r + 1) * dim;
        let xhat: Vec<f64> = s[range.clone()].iter().map(|v| (v - m) * rstd[r]).collect();
        let g: Vec<f64> = (0..dim).map(|c| dy[r * dim + c] * gamma.map_or(1.0, |gm| gm[c])).collect();
        let mean_g = if kind == NormKind::LayerNorm { g.iter().sum::<f64>() / dim as f64 } else { 0.0 };
        let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / dim as f64;
        for c in 0..dim {
            let i = r * dim + c;
            out.ds[i] = rstd[r] * (g[c] - mean_g - xhat[c] * mean_gx) + dresidual_out.map_or(0.0, |d| d[i]);
            out.dgamma[c] += dy[i] * xhat[c];
            out.dbeta[c] += dy[i];
        }
    }
    out
}
