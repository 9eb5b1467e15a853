//! CPU references of the GLU family (REFERENCE.md §2): y = h(a)·b, in f64.
//!
//! NaN and ±inf follow the kernels (kernels/common/glu_gates.cuh, kernels/glu.cu) element
//! for element: h(NaN) is NaN for every gate (ReGLU's h = relu propagates it, see
//! `activation::cpu`), and y = h(a)·b, da = (dy·b)·h'(a), db = dy·h(a), dα = Σ (dy·b)·∂h/∂α
//! are products formed in the kernels' order, so NaN reaches every output it multiplies and
//! 0·∞ is NaN. ReGLU's h'(NaN) is 0 (the kernel's `a > 0 ? 1 : 0`).

use super::spec::GluKind as K;
use crate::families::activation::cpu::{erf, normal_cdf, normal_pdf, sigmoid};
use crate::families::activation::{ActivationKind, Scalars};

const PI: f64 = std::f64::consts::PI;

/// The base gate g0 of the expanded GLUs and its derivative.
fn base_gate(kind: K, a: f64) -> (f64, f64) {
    match kind {
        K::Atglu | K::XAtglu => (a.atan() / PI + 0.5, 1.0 / (PI * (1.0 + a * a))),
        K::XGeglu => (normal_cdf(a), normal_pdf(a)),
        K::XSwiglu => {
            let s = sigmoid(a);
            (s, s * (1.0 - s))
        }
        _ => unreachable!("not an expanded gate"),
    }
}

/// 2·g0(a) − 1 written without cancellation.
fn centred_gate(kind: K, a: f64) -> f64 {
    match kind {
        K::Atglu | K::XAtglu => 2.0 * a.atan() / PI,
        K::XGeglu => erf(a * std::f64::consts::FRAC_1_SQRT_2),
        K::XSwiglu => 2.0 * sigmoid(a) - 1.0,
        _ => unreachable!("not an expanded gate"),
    }
}

/// The activation whose f is h for the order-2 fixed gates (GEGLU = gelu(a)·b, …).
fn activation_of(kind: K) -> Option<ActivationKind> {
    match kind {
        K::Reglu => Some(ActivationKind::Relu),
        K::Geglu => Some(ActivationKind::Gelu),
        K::GegluTanh => Some(ActivationKind::GeluTanh),
        K::Swiglu => Some(ActivationKind::Silu),
        K::Glu => Some(ActivationKind::Sigmoid),
        _ => None,
    }
}

/// (h(a), h'(a), ∂h/∂α) for gate `kind` with expansion `alpha` and `order` (1 or 2).
pub fn gate(kind: K, alpha: f64, order: u32, a: f64) -> (f64, f64, f64) {
    if let Some(act) = activation_of(kind) {
        let s = Scalars::default();
        let f = crate::families::activation::cpu::f(act, &s, 0.0, a);
        let d = crate::families::activation::cpu::dfdx(act, &s, 0.0, a);
        return (f, d, 0.0);
    }
    match kind {
        K::Bilinear => (a, 1.0, 0.0),
        _ => {
            let alpha = if kind == K::Atglu { 0.0 } else { alpha };
            let (g0, dg0) = base_gate(kind, a);
            let (g, dg) = ((1.0 + 2.0 * alpha) * g0 - alpha, (1.0 + 2.0 * alpha) * dg0);
            let dalpha = if kind == K::Atglu { 0.0 } else { centred_gate(kind, a) };
            if order == 1 { (g, dg, dalpha) } else { (a * g, g + a * dg, a * dalpha) }
        }
    }
}

/// y = h(a)·b elementwise.
pub fn forward(kind: K, alpha: f64, order: u32, a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(&a, &b)| gate(kind, alpha, order, a).0 * b).collect()
}

/// (da, db, dα) for y = h(a)·b; dα is the f64 sum of dy·b·∂h/∂α over every element.
pub fn backward(kind: K, alpha: f64, order: u32, a: &[f64], b: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, f64) {
    let mut da = Vec::with_capacity(a.len());
    let mut db = Vec::with_capacity(a.len());
    let mut dalpha = 0.0;
    for ((&a, &b), &g) in a.iter().zip(b).zip(dy) {
        let (h, dh, dh_dalpha) = gate(kind, alpha, order, a);
        da.push(g * b * dh);
        db.push(g * h);
        dalpha += g * b * dh_dalpha;
    }
    (da, db, dalpha)
}
