//! CPU references of the activation family: plain f64 formulas (REFERENCE.md §1), one
//! `match` per quantity so each op reads in one place. Reductions accumulate in f64.
//!
//! NaN and ±inf follow the kernels (kernels/activation.cu) element for element:
//! - forward: a NaN x gives a NaN y in every op (the piecewise ops compare `x < 0`, `x <= θ`,
//!   …, which are false for NaN, and then return x itself or a product with it; `f64::max` /
//!   `min`, which drop NaN, are not used). ±inf go through the same formulas in IEEE
//!   arithmetic, so a product 0·∞ is NaN: gelu(−∞) = silu(−∞) = −∞·0 = NaN, as in PyTorch.
//! - backward: dx = dy·f'(x) as a product (NaN in x or dy gives NaN; ∞·0 = NaN), except where
//!   the kernel SELECTS: relu and jumprelu (dx = dy where x > 0 / x > θ, else exactly 0),
//!   smelu (0 for x ≤ −β, dy for x ≥ β or NaN x), and the parameter gradients of prelu
//!   (dy·x where x < 0, else 0) and jumprelu (dy·(−θ/ε) inside the window, else 0). A NaN or
//!   infinite dy there contributes only where selected; a NaN x takes the branch whose
//!   comparison is false (relu/jumprelu dx = 0, prelu dx = slope·dy, smelu dx = dy, gsmelu
//!   dx = g₊·dy, dslope/dθ terms 0). See [`dx_term`] and [`dparam_term`].

use super::spec::{ActivationKind as K, Scalars};

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_TANH_CUBIC: f64 = 0.044_715;
const QUICK_GELU_SCALE: f64 = 1.702;
const INV_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
const PI: f64 = std::f64::consts::PI;

/// Logistic sigmoid, written so that neither sign overflows.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Standard normal CDF Φ(x) = erfc(−x/√2)/2 (no cancellation for negative x).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * INV_SQRT_2)
}

/// Standard normal PDF φ(x).
pub fn normal_pdf(x: f64) -> f64 {
    INV_SQRT_2PI * (-0.5 * x * x).exp()
}

/// erf in f64 (std has none): erf = 1 − erfc.
pub fn erf(x: f64) -> f64 {
    if x.abs() < 0.5 { erf_series(x) } else { 1.0 - erfc(x) }
}

/// Maclaurin series of erf, accurate to f64 for |x| < 0.5.
fn erf_series(x: f64) -> f64 {
    // erf x = 2/√π Σ (−1)^k x^(2k+1) / (k! (2k+1)); 20 terms leave < 1e-30 at |x| < 0.5.
    let x2 = x * x;
    let (mut term, mut sum) = (x, x);
    for k in 1..20 {
        term *= -x2 / k as f64;
        sum += term / (2 * k + 1) as f64;
    }
    sum * 2.0 / PI.sqrt()
}

/// erfc in f64: series for small |x|, a continued fraction (Lentz) for large |x|,
/// both to ~1e-15 relative.
pub fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 0.5 {
        return 1.0 - erf_series(x);
    }
    if x > 27.0 {
        return 0.0;
    }
    if x < 3.0 {
        // erfc(x) = 1 − erf(x), erf from its everywhere-convergent series
        // erf x = 2/√π e^{−x²} Σ 2^k x^{2k+1} / (1·3·…·(2k+1)); terms grow then shrink.
        let x2 = x * x;
        let (mut term, mut sum) = (x, x);
        let mut k = 1.0;
        while term > 1e-17 * sum {
            term *= 2.0 * x2 / (2.0 * k + 1.0);
            sum += term;
            k += 1.0;
        }
        return 1.0 - 2.0 / PI.sqrt() * (-x2).exp() * sum;
    }
    // Continued fraction erfc x = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))).
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for k in 1..500 {
        let a = k as f64 * 0.5;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / PI.sqrt() / f
}

/// The gate g_α of the expanded activations, and ∂g/∂x, without the outer x.
fn expanded_gate(kind: K, alpha: f64, x: f64) -> (f64, f64) {
    let scale = 1.0 + 2.0 * alpha;
    match kind {
        K::XAtlu => (scale * (x.atan() / PI + 0.5) - alpha, scale / (PI * (1.0 + x * x))),
        K::XGelu => (scale * normal_cdf(x) - alpha, scale * normal_pdf(x)),
        K::XSilu => {
            let s = sigmoid(x);
            (scale * s - alpha, scale * s * (1.0 - s))
        }
        _ => unreachable!("not an expanded gate"),
    }
}

/// Quadratic coefficients (A, B, C) of the generalized SmeLU's middle piece.
pub fn gsmelu_coefficients(s: &Scalars) -> (f64, f64, f64) {
    let (a, b, gn, gp, t) = (s.alpha, s.beta, s.g_neg, s.g_pos, s.t);
    let w = a + b;
    ((gp - gn) / (2.0 * w), (a * gp + b * gn) / w, t + (a * a * (gp + gn) + 2.0 * a * b * gn) / (2.0 * w))
}

/// The rectangle kernel of JumpReLU's straight-through estimator: 1 on the OPEN interval
/// −½ < u < ½ (the JumpReLU paper's pseudo-code; SAELens `(u > -0.5) & (u < 0.5)`), else 0.
pub fn rectangle(u: f64) -> f64 {
    if -0.5 < u && u < 0.5 { 1.0 } else { 0.0 }
}

/// max(0, x) with NaN propagated (`f64::max` would return 0), as the kernels' `x < 0 ? 0 : x`.
fn relu(x: f64) -> f64 {
    if x < 0.0 { 0.0 } else { x }
}

/// f(x). `p` is the element's channel parameter (PReLU slope, JumpReLU θ), else unused.
pub fn f(kind: K, s: &Scalars, p: f64, x: f64) -> f64 {
    match kind {
        K::Relu => relu(x),
        K::Gelu => x * normal_cdf(x),
        K::GeluTanh => 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x)).tanh()),
        K::QuickGelu => x * sigmoid(QUICK_GELU_SCALE * x),
        K::Silu => x * sigmoid(x),
        K::Sigmoid => sigmoid(x),
        K::SquaredRelu => relu(x) * relu(x),
        K::Atlu => x * (x.atan() / PI + 0.5),
        K::XAtlu | K::XGelu | K::XSilu => x * expanded_gate(kind, s.alpha, x).0,
        K::Smelu => {
            let b = s.beta;
            if x <= -b {
                0.0
            } else if x < b {
                (x + b) * (x + b) / (4.0 * b)
            } else {
                x
            }
        }
        K::GSmelu => {
            let (a, b, c) = gsmelu_coefficients(s);
            if x <= -s.alpha {
                s.g_neg * (x + s.alpha) + s.t
            } else if x <= s.beta {
                a * x * x + b * x + c
            } else {
                s.g_pos * x + s.t + (s.alpha + s.beta) * s.g_neg / 2.0 + (s.alpha - s.beta) * s.g_pos / 2.0
            }
        }
        // As the kernel: slope·x below 0, else x itself (so NaN stays NaN).
        K::Prelu => {
            if x < 0.0 {
                p * x
            } else {
                x
            }
        }
        // H(0) = 0: zero where x ≤ θ, else x itself (so NaN stays NaN).
        K::JumpRelu => {
            if x <= p {
                0.0
            } else {
                x
            }
        }
    }
}

/// f'(x).
pub fn dfdx(kind: K, s: &Scalars, p: f64, x: f64) -> f64 {
    match kind {
        K::Relu => step(x > 0.0),
        K::Gelu => normal_cdf(x) + x * normal_pdf(x),
        K::GeluTanh => {
            let t = (SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_CUBIC * x * x)
        }
        K::QuickGelu => {
            let sg = sigmoid(QUICK_GELU_SCALE * x);
            sg + QUICK_GELU_SCALE * x * sg * (1.0 - sg)
        }
        K::Silu => {
            let sg = sigmoid(x);
            sg * (1.0 + x * (1.0 - sg))
        }
        K::Sigmoid => {
            let sg = sigmoid(x);
            sg * (1.0 - sg)
        }
        K::SquaredRelu => 2.0 * relu(x),
        K::Atlu => x.atan() / PI + 0.5 + x / (PI * (1.0 + x * x)),
        K::XAtlu | K::XGelu | K::XSilu => {
            let (g, dg) = expanded_gate(kind, s.alpha, x);
            g + x * dg
        }
        K::Smelu => {
            let b = s.beta;
            if x <= -b {
                0.0
            } else if x < b {
                (x + b) / (2.0 * b)
            } else {
                1.0
            }
        }
        K::GSmelu => {
            let (a, b, _) = gsmelu_coefficients(s);
            if x <= -s.alpha {
                s.g_neg
            } else if x <= s.beta {
                2.0 * a * x + b
            } else {
                s.g_pos
            }
        }
        K::Prelu => {
            if x > 0.0 {
                1.0
            } else {
                p
            }
        }
        K::JumpRelu => step(x > p),
    }
}

/// ∂f/∂(trainable parameter): α for the expanded ops, the slope for PReLU, and for
/// JumpReLU the straight-through pseudo-derivative −(θ/ε)·K((x−θ)/ε). 0 for the rest.
pub fn dfdparam(kind: K, s: &Scalars, p: f64, x: f64) -> f64 {
    match kind {
        K::XAtlu => 2.0 * x * x.atan() / PI,
        K::XGelu => x * erf(x * INV_SQRT_2),
        K::XSilu => x * (2.0 * sigmoid(x) - 1.0),
        // min(0, x) as the kernel's select: 0 for NaN x.
        K::Prelu if x < 0.0 => x,
        K::JumpRelu if in_window(s, p, x) => -(p / s.eps),
        _ => 0.0,
    }
}

/// dy·f'(x) as the kernel forms it: a select where the kernel selects (so a NaN or infinite
/// dy in an unselected branch gives 0, not NaN), the product dy·f'(x) elsewhere.
pub fn dx_term(kind: K, s: &Scalars, p: f64, x: f64, dy: f64) -> f64 {
    match kind {
        K::Relu => {
            if x > 0.0 {
                dy
            } else {
                0.0
            }
        }
        K::JumpRelu => {
            if x > p {
                dy
            } else {
                0.0
            }
        }
        K::Smelu => {
            if x <= -s.beta {
                0.0
            } else if x < s.beta {
                dy * dfdx(kind, s, p, x)
            } else {
                dy
            }
        }
        _ => dy * dfdx(kind, s, p, x),
    }
}

/// dy·∂f/∂param as the kernel forms it: selects for PReLU (x < 0) and JumpReLU (the window),
/// the product for the expanded ops.
pub fn dparam_term(kind: K, s: &Scalars, p: f64, x: f64, dy: f64) -> f64 {
    match kind {
        K::Prelu => {
            if x < 0.0 {
                dy * x
            } else {
                0.0
            }
        }
        K::JumpRelu => {
            if in_window(s, p, x) {
                dy * -(p / s.eps)
            } else {
                0.0
            }
        }
        _ => dy * dfdparam(kind, s, p, x),
    }
}

/// JumpReLU's straight-through window K((x−θ)/ε) = 1, decided as −ε/2 < x−θ < ε/2 (open at
/// both edges): x − θ and ε/2 are exact in f64 for f32 inputs of comparable size, where a
/// rounded quotient (x−θ)/ε could land on an edge. False for NaN and infinite x.
fn in_window(s: &Scalars, theta: f64, x: f64) -> bool {
    let d = x - theta;
    -s.eps / 2.0 < d && d < s.eps / 2.0
}

fn step(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The channel parameter of element `i` (channels = `param.len()`, the last dimension),
/// or 0 when the op has none.
fn channel_param(param: &[f64], i: usize) -> f64 {
    if param.is_empty() { 0.0 } else { param[i % param.len()] }
}

/// y = f(x) over a whole tensor.
pub fn forward(kind: K, s: &Scalars, param: &[f64], x: &[f64]) -> Vec<f64> {
    x.iter().enumerate().map(|(i, &xi)| f(kind, s, channel_param(param, i), xi)).collect()
}

/// dx = dy·f'(x), and the parameter gradient Σ dy·∂f/∂param reduced per channel (one
/// value for α) in f64, for the ops that have a trainable parameter.
pub fn backward(kind: K, s: &Scalars, param: &[f64], x: &[f64], dy: &[f64]) -> (Vec<f64>, Option<Vec<f64>>) {
    let dx =
        x.iter().zip(dy).enumerate().map(|(i, (&xi, &g))| dx_term(kind, s, channel_param(param, i), xi, g)).collect();
    let dparam = kind.grad_name().map(|_| {
        let channels = param.len().max(1);
        let mut acc = vec![0.0; channels];
        for (i, (&xi, &g)) in x.iter().zip(dy).enumerate() {
            acc[i % channels] += dparam_term(kind, s, channel_param(param, i), xi, g);
        }
        acc
    });
    (dx, dparam)
}
