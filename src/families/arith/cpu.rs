//! f64 references of the arithmetic units, written for clarity: plain loops, every gradient by
//! hand, the NMU's products of the other terms by prefix and suffix products (exact when a term
//! is zero; no division). Shapes: x `[b, i]`, W `[o, i]`, z and its gradient `[b, o]`.
//!
//! Gradients follow torch's conventions, as stable-nalu runs on torch: the clamp passes the
//! gradient where the weight lies inside its range, bounds included; |·|′(0) = 0; relu′(0) = 0;
//! a tie of min(u, v) sends half of the gradient to each side.
//!
//! Layer: families. Imports core.

use super::spec::RegShape;
pub use super::spec::Unit;
use crate::core::error::{Error, Result};
use crate::core::validate::check_host_matrix as check_len;

/// Gradients of an NAU or NMU: dx `[b, i]`, dW `[o, i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitGrads {
    /// ∂L/∂x.
    pub dx: Vec<f64>,
    /// ∂L/∂W (zero where the clamp cut the weight).
    pub dw: Vec<f64>,
}

/// The regularisers of one weight matrix (each a mean over its entries) and the sparsity
/// error (a metric: the largest entry distance to {0, ±1}; no gradient).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Regularizers {
    /// R_sparse: how far the weights are from {−1, 0, 1} (NAU) or {0, 1} (NMU).
    pub sparse: f64,
    /// R_oob: how far they are outside [−1, 1] (NAU) or [0, 1] (NMU).
    pub oob: f64,
    /// max_ij min(|W|, |1 − |W||).
    pub sparsity_error: f64,
}

/// sign(v) with sign(0) = 0: the derivative of |v| as torch takes it.
fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// d min(u, v) given du and dv: the smaller side's, half of each on a tie.
fn min_grad(u: f64, v: f64, du: f64, dv: f64) -> f64 {
    if u < v {
        du
    } else if v < u {
        dv
    } else {
        0.5 * (du + dv)
    }
}

/// clamp(w, lo, hi) and whether the gradient passes (lo ≤ w ≤ hi).
fn clamp_pass(w: f64, lo: f64, hi: f64) -> (f64, bool) {
    (w.clamp(lo, hi), (lo..=hi).contains(&w))
}

/// NAU: z = x·W_cᵀ, W_c = clamp(W, −1, 1).
pub fn nau_forward(x: &[f64], w: &[f64], b: usize, i: usize, o: usize) -> Result<Vec<f64>> {
    check_len("x", x, b, i)?;
    check_len("w", w, o, i)?;
    let wc: Vec<f64> = w.iter().map(|&v| v.clamp(-1.0, 1.0)).collect();
    let mut z = vec![0.0; b * o];
    for r in 0..b {
        for k in 0..o {
            z[r * o + k] = (0..i).map(|c| x[r * i + c] * wc[k * i + c]).sum();
        }
    }
    Ok(z)
}

/// NAU gradients: dx = dz·W_c; dW = dzᵀ·x where −1 ≤ W ≤ 1, else 0.
pub fn nau_backward(x: &[f64], w: &[f64], dz: &[f64], b: usize, i: usize, o: usize) -> Result<UnitGrads> {
    check_len("x", x, b, i)?;
    check_len("w", w, o, i)?;
    check_len("dz", dz, b, o)?;
    let mut dx = vec![0.0; b * i];
    let mut dw = vec![0.0; o * i];
    for k in 0..o {
        for c in 0..i {
            let (wc, pass) = clamp_pass(w[k * i + c], -1.0, 1.0);
            for r in 0..b {
                dx[r * i + c] += dz[r * o + k] * wc;
            }
            if pass {
                dw[k * i + c] = (0..b).map(|r| dz[r * o + k] * x[r * i + c]).sum();
            }
        }
    }
    Ok(UnitGrads { dx, dw })
}

fn check_eps(eps: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::InvalidValue {
            arg: "eps",
            reason: format!("{eps}: the NMU clamps to [eps, 1], eps in [0, 1]"),
        });
    }
    Ok(())
}

/// The NMU's terms of row r and output k: W_c·x + 1 − W_c, W_c = clamp(W, eps, 1).
fn nmu_terms(x: &[f64], w: &[f64], r: usize, k: usize, i: usize, eps: f64) -> Vec<f64> {
    (0..i)
        .map(|c| {
            let wc = w[k * i + c].clamp(eps, 1.0);
            wc * x[r * i + c] + 1.0 - wc
        })
        .collect()
}

/// For each term, the product of all the others: prefix × suffix products, exact with zeros.
fn products_of_others(t: &[f64]) -> Vec<f64> {
    let n = t.len();
    let mut out = vec![1.0; n];
    let mut prefix = 1.0;
    for c in 0..n {
        out[c] = prefix;
        prefix *= t[c];
    }
    let mut suffix = 1.0;
    for c in (0..n).rev() {
        out[c] *= suffix;
        suffix *= t[c];
    }
    out
}

/// NMU: z_bo = Π_i (W_c,oi·x_bi + 1 − W_c,oi), W_c = clamp(W, eps, 1) (eps = 0 by default).
pub fn nmu_forward(x: &[f64], w: &[f64], b: usize, i: usize, o: usize, eps: f64) -> Result<Vec<f64>> {
    check_len("x", x, b, i)?;
    check_len("w", w, o, i)?;
    check_eps(eps)?;
    let mut z = vec![0.0; b * o];
    for r in 0..b {
        for k in 0..o {
            z[r * o + k] = nmu_terms(x, w, r, k, i, eps).iter().product();
        }
    }
    Ok(z)
}

/// What the NMU forward saves for its backward (kernels/arith.cu): per output, the product of
/// the nonzero terms and the number of terms that are exactly zero (z is 0 when any is).
pub fn nmu_nonzero_products(
    x: &[f64],
    w: &[f64],
    b: usize,
    i: usize,
    o: usize,
    eps: f64,
) -> Result<(Vec<f64>, Vec<usize>)> {
    check_len("x", x, b, i)?;
    check_len("w", w, o, i)?;
    check_eps(eps)?;
    let (mut prod, mut zeros) = (vec![1.0; b * o], vec![0; b * o]);
    for r in 0..b {
        for k in 0..o {
            for t in nmu_terms(x, w, r, k, i, eps) {
                if t == 0.0 {
                    zeros[r * o + k] += 1;
                } else {
                    prod[r * o + k] *= t;
                }
            }
        }
    }
    Ok((prod, zeros))
}

/// NMU gradients: dx_bi = Σ_o dz_bo·W_c,oi·P_bo,¬i; dW_oi = Σ_b dz_bo·(x_bi − 1)·P_bo,¬i where
/// eps ≤ W ≤ 1, else 0; P_¬i is the product of the other terms.
pub fn nmu_backward(x: &[f64], w: &[f64], dz: &[f64], b: usize, i: usize, o: usize, eps: f64) -> Result<UnitGrads> {
    check_len("x", x, b, i)?;
    check_len("w", w, o, i)?;
    check_len("dz", dz, b, o)?;
    check_eps(eps)?;
    let mut dx = vec![0.0; b * i];
    let mut dw = vec![0.0; o * i];
    for r in 0..b {
        for k in 0..o {
            let others = products_of_others(&nmu_terms(x, w, r, k, i, eps));
            let g = dz[r * o + k];
            for c in 0..i {
                let (wc, pass) = clamp_pass(w[k * i + c], eps, 1.0);
                dx[r * i + c] += g * wc * others[c];
                if pass {
                    dw[k * i + c] += g * (x[r * i + c] - 1.0) * others[c];
                }
            }
        }
    }
    Ok(UnitGrads { dx, dw })
}

/// max_ij min(|W|, |1 − |W||): 0 exactly when every weight is −1, 0 or 1.
pub fn sparsity_error(w: &[f64]) -> f64 {
    w.iter().map(|&v| v.abs().min((1.0 - v.abs()).abs())).fold(0.0, f64::max)
}

/// Per weight: (sparse term, its derivative, out-of-bounds term, its derivative).
fn reg_terms(unit: Unit, shape: RegShape, v: f64) -> (f64, f64, f64, f64) {
    let (sparse, dsparse) = match (unit, shape) {
        (Unit::Nau, RegShape::Linear) => {
            let (u, du) = (v.abs(), sign(v));
            let (q, dq) = ((1.0 - v.abs()).abs(), -sign(1.0 - v.abs()) * sign(v));
            (u.min(q), min_grad(u, q, du, dq))
        }
        (Unit::Nau, RegShape::Squared) => {
            let s = 1.0 - v.abs();
            (v * v * s * s, 2.0 * v * s * s - 2.0 * v * v * s * sign(v))
        }
        (Unit::Nmu, RegShape::Linear) => {
            let (u, du) = (v.abs(), sign(v));
            let (q, dq) = ((1.0 - v).abs(), -sign(1.0 - v));
            (u.min(q), min_grad(u, q, du, dq))
        }
        (Unit::Nmu, RegShape::Squared) => {
            let s = 1.0 - v;
            (v * v * s * s, 2.0 * v * s * s - 2.0 * v * v * s)
        }
    };
    // The distance outside the range, r, and dr/dv; relu′(0) = 0.
    let (r, dr) = match unit {
        Unit::Nau => (v.abs() - 1.0, sign(v)),
        Unit::Nmu => ((v - 0.5).abs() - 0.5, sign(v - 0.5)),
    };
    let (oob, doob) = match (shape, r > 0.0) {
        (_, false) => (0.0, 0.0),
        (RegShape::Linear, true) => (r, dr),
        (RegShape::Squared, true) => (r * r, 2.0 * r * dr),
    };
    (sparse, dsparse, oob, doob)
}

fn check_weights(w: &[f64]) -> Result<()> {
    if w.is_empty() {
        return Err(Error::InvalidValue { arg: "w", reason: "the regularisers are means: at least one weight".into() });
    }
    Ok(())
}

/// The regularisers of `unit`'s weights `w` (any shape; means over every entry).
pub fn regularizers(unit: Unit, shape: RegShape, w: &[f64]) -> Result<Regularizers> {
    check_weights(w)?;
    let n = w.len() as f64;
    let (mut sparse, mut oob) = (0.0, 0.0);
    for &v in w {
        let (s, _, b, _) = reg_terms(unit, shape, v);
        sparse += s;
        oob += b;
    }
    Ok(Regularizers { sparse: sparse / n, oob: oob / n, sparsity_error: sparsity_error(w) })
}

/// The gradient of dsparse·R_sparse + doob·R_oob with respect to `w`.
pub fn regularizers_backward(unit: Unit, shape: RegShape, w: &[f64], dsparse: f64, doob: f64) -> Result<Vec<f64>> {
    check_weights(w)?;
    let n = w.len() as f64;
    Ok(w.iter()
        .map(|&v| {
            let (_, ds, _, db) = reg_terms(unit, shape, v);
            (dsparse * ds + doob * db) / n
        })
        .collect())
}

/// The NALU's parameters: the NAC weight's two factors Ŵ and M̂ (`[o, i]`, W = tanh(Ŵ)·σ(M̂),
/// shared by the additive and the multiplicative path) and the gate G `[o, i]` with its bias
/// `[o]`.
#[derive(Clone, Copy, Debug)]
pub struct NaluParams<'a> {
    /// Ŵ.
    pub w_hat: &'a [f64],
    /// M̂.
    pub m_hat: &'a [f64],
    /// G.
    pub g: &'a [f64],
    /// The gate's bias b.
    pub bias: &'a [f64],
}

/// Gradients of the NALU, shaped as its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct NaluGrads {
    /// ∂L/∂x `[b, i]`.
    pub dx: Vec<f64>,
    /// ∂L/∂Ŵ.
    pub dw_hat: Vec<f64>,
    /// ∂L/∂M̂.
    pub dm_hat: Vec<f64>,
    /// ∂L/∂G.
    pub dg: Vec<f64>,
    /// ∂L/∂b `[o]`.
    pub dbias: Vec<f64>,
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// The forward's intermediates per (row, output): a, m and g; and W.
struct NaluState {
    w: Vec<f64>,
    a: Vec<f64>,
    m: Vec<f64>,
    g: Vec<f64>,
}

fn nalu_state(x: &[f64], p: NaluParams, b: usize, i: usize, o: usize, eps: f64) -> Result<NaluState> {
    check_len("x", x, b, i)?;
    check_len("w_hat", p.w_hat, o, i)?;
    check_len("m_hat", p.m_hat, o, i)?;
    check_len("g", p.g, o, i)?;
    check_len("bias", p.bias, o, 1)?;
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::InvalidValue { arg: "eps", reason: format!("{eps}: log(|x| + eps) needs eps > 0") });
    }
    let w: Vec<f64> = p.w_hat.iter().zip(p.m_hat).map(|(&wh, &mh)| wh.tanh() * sigmoid(mh)).collect();
    let (mut a, mut m, mut g) = (vec![0.0; b * o], vec![0.0; b * o], vec![0.0; b * o]);
    for r in 0..b {
        let xr = &x[r * i..(r + 1) * i];
        for k in 0..o {
            let wk = &w[k * i..(k + 1) * i];
            a[r * o + k] = xr.iter().zip(wk).map(|(x, w)| x * w).sum();
            m[r * o + k] = xr.iter().zip(wk).map(|(x, w)| (x.abs() + eps).ln() * w).sum::<f64>().exp();
            let gl: f64 = xr.iter().zip(&p.g[k * i..(k + 1) * i]).map(|(x, g)| x * g).sum::<f64>() + p.bias[k];
            g[r * o + k] = sigmoid(gl);
        }
    }
    Ok(NaluState { w, a, m, g })
}

/// NALU (stable-nalu's defaults: one NAC weight for both paths, eps = 1e-7):
/// W = tanh(Ŵ)·σ(M̂); a = x·Wᵀ; m = exp(log(|x| + eps)·Wᵀ); g = σ(x·Gᵀ + b);
/// y = g·a + (1 − g)·m, `[b, o]`.
pub fn nalu_forward(x: &[f64], p: NaluParams, b: usize, i: usize, o: usize, eps: f64) -> Result<Vec<f64>> {
    let s = nalu_state(x, p, b, i, o, eps)?;
    Ok((0..b * o).map(|t| s.g[t] * s.a[t] + (1.0 - s.g[t]) * s.m[t]).collect())
}

/// The NALU's gradients given dy `[b, o]`.
pub fn nalu_backward(
    x: &[f64],
    p: NaluParams,
    dy: &[f64],
    b: usize,
    i: usize,
    o: usize,
    eps: f64,
) -> Result<NaluGrads> {
    let s = nalu_state(x, p, b, i, o, eps)?;
    check_len("dy", dy, b, o)?;
    let mut dx = vec![0.0; b * i];
    let mut dw = vec![0.0; o * i];
    let mut dg = vec![0.0; o * i];
    let mut dbias = vec![0.0; o];
    for r in 0..b {
        for k in 0..o {
            let t = r * o + k;
            let g = s.g[t];
            let da = g * dy[t]; // through a = x·Wᵀ
            let dlin = (1.0 - g) * dy[t] * s.m[t]; // through the exponent of m
            let dgl = (s.a[t] - s.m[t]) * dy[t] * g * (1.0 - g); // through the gate's logit
            dbias[k] += dgl;
            for c in 0..i {
                let (xv, wv) = (x[r * i + c], s.w[k * i + c]);
                let l = (xv.abs() + eps).ln();
                dx[r * i + c] += da * wv + dlin * wv * sign(xv) / (xv.abs() + eps) + dgl * p.g[k * i + c];
                dw[k * i + c] += da * xv + dlin * l;
                dg[k * i + c] += dgl * xv;
            }
        }
    }
    let (mut dw_hat, mut dm_hat) = (vec![0.0; o * i], vec![0.0; o * i]);
    for e in 0..o * i {
        let (th, sg) = (p.w_hat[e].tanh(), sigmoid(p.m_hat[e]));
        dw_hat[e] = dw[e] * sg * (1.0 - th * th);
        dm_hat[e] = dw[e] * th * sg * (1.0 - sg);
    }
    Ok(NaluGrads { dx, dw_hat, dm_hat, dg, dbias })
}
