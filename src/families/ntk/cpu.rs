//! f64 references: the Gram-Hadamard product K = scale·(D1·D2ᵀ) ⊙ (A1·A2ᵀ + c) and its backward,
//! and the pNTK of a multilayer perceptron as the sum of its layers' products. Matrices are
//! row-major: D1 `[n1, p]` (per-sample backprop vectors δ), A1 `[n1, q]` (the layer's inputs h),
//! D2 `[n2, p]`, A2 `[n2, q]`, K `[n1, n2]`.

use crate::core::error::{Error, Result};
use crate::core::validate::check_host_matrix as check_len;

/// Σ_k x[i, k]·y[j, k] for rows i of x `[.., k]` and j of y.
fn row_dot(x: &[f64], i: usize, y: &[f64], j: usize, k: usize) -> f64 {
    x[i * k..(i + 1) * k].iter().zip(&y[j * k..(j + 1) * k]).map(|(a, b)| a * b).sum()
}

/// The operands of a Gram-Hadamard product: both sides' δ rows and input rows.
#[derive(Clone, Copy, Debug)]
pub struct GramOperands<'a> {
    /// D1 `[n1, p]`.
    pub d1: &'a [f64],
    /// A1 `[n1, q]`.
    pub a1: &'a [f64],
    /// D2 `[n2, p]`.
    pub d2: &'a [f64],
    /// A2 `[n2, q]`.
    pub a2: &'a [f64],
    /// Rows of the first side.
    pub n1: usize,
    /// Rows of the second side.
    pub n2: usize,
    /// Width of the δ rows (the layer's outputs).
    pub p: usize,
    /// Width of the input rows (the layer's inputs).
    pub q: usize,
}

impl GramOperands<'_> {
    fn check(&self) -> Result<()> {
        check_len("d1", self.d1, self.n1, self.p)?;
        check_len("a1", self.a1, self.n1, self.q)?;
        check_len("d2", self.d2, self.n2, self.p)?;
        check_len("a2", self.a2, self.n2, self.q)
    }

    /// The two Gram matrices: G_d = D1·D2ᵀ and G_a = A1·A2ᵀ + c, each `[n1, n2]`.
    fn grams(&self, c: f64) -> (Vec<f64>, Vec<f64>) {
        let (n1, n2) = (self.n1, self.n2);
        let gd = (0..n1 * n2).map(|t| row_dot(self.d1, t / n2, self.d2, t % n2, self.p)).collect();
        let ga = (0..n1 * n2).map(|t| row_dot(self.a1, t / n2, self.a2, t % n2, self.q) + c).collect();
        (gd, ga)
    }
}

fn bias_term(bias: bool) -> f64 {
    if bias { 1.0 } else { 0.0 }
}

/// K = scale·(D1·D2ᵀ) ⊙ (A1·A2ᵀ + c), c = 1 with `bias`, 0 without: `[n1, n2]`.
pub fn gram_hadamard(ops: &GramOperands, bias: bool, scale: f64) -> Result<Vec<f64>> {
    ops.check()?;
    let (gd, ga) = ops.grams(bias_term(bias));
    Ok(gd.iter().zip(&ga).map(|(d, a)| scale * d * a).collect())
}

/// The gradients of ⟨dK, K⟩ with respect to the four operands.
#[derive(Clone, Debug, PartialEq)]
pub struct GramGrads {
    /// dD1 = scale·(dK ⊙ (A1·A2ᵀ + c))·D2, `[n1, p]`.
    pub dd1: Vec<f64>,
    /// dA1 = scale·(dK ⊙ (D1·D2ᵀ))·A2, `[n1, q]`.
    pub da1: Vec<f64>,
    /// dD2 = scale·(dK ⊙ (A1·A2ᵀ + c))ᵀ·D1, `[n2, p]`.
    pub dd2: Vec<f64>,
    /// dA2 = scale·(dK ⊙ (D1·D2ᵀ))ᵀ·A1, `[n2, q]`.
    pub da2: Vec<f64>,
}

/// M·Y for M `[n1, n2]` and Y `[n2, k]`: `[n1, k]`.
fn mat_mul(m: &[f64], y: &[f64], n1: usize, n2: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0; n1 * k];
    for i in 0..n1 {
        for j in 0..n2 {
            let s = m[i * n2 + j];
            for c in 0..k {
                out[i * k + c] += s * y[j * k + c];
            }
        }
    }
    out
}

/// Mᵀ `[n2, n1]` of M `[n1, n2]`.
fn transpose(m: &[f64], n1: usize, n2: usize) -> Vec<f64> {
    (0..n1 * n2).map(|t| m[(t % n1) * n2 + t / n1]).collect()
}

/// The backward of [`gram_hadamard`] given dK `[n1, n2]`.
pub fn gram_hadamard_backward(ops: &GramOperands, bias: bool, scale: f64, dk: &[f64]) -> Result<GramGrads> {
    ops.check()?;
    check_len("dk", dk, ops.n1, ops.n2)?;
    let (gd, ga) = ops.grams(bias_term(bias));
    let through_a: Vec<f64> = dk.iter().zip(&ga).map(|(g, a)| scale * g * a).collect();
    let through_d: Vec<f64> = dk.iter().zip(&gd).map(|(g, d)| scale * g * d).collect();
    let (n1, n2, p, q) = (ops.n1, ops.n2, ops.p, ops.q);
    Ok(GramGrads {
        dd1: mat_mul(&through_a, ops.d2, n1, n2, p),
        da1: mat_mul(&through_d, ops.a2, n1, n2, q),
        dd2: mat_mul(&transpose(&through_a, n1, n2), ops.d1, n2, n1, p),
        da2: mat_mul(&transpose(&through_d, n1, n2), ops.a1, n2, n1, q),
    })
}

/// The elementwise activation between an MLP's layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// tanh.
    Tanh,
    /// max(0, x), with relu′(0) = 0 (torch's).
    Relu,
    /// None (a deep linear network).
    Identity,
}

impl Activation {
    fn apply(self, z: f64) -> f64 {
        match self {
            Activation::Tanh => z.tanh(),
            Activation::Relu => z.max(0.0),
            Activation::Identity => z,
        }
    }

    fn derivative(self, z: f64) -> f64 {
        match self {
            Activation::Tanh => 1.0 - z.tanh().powi(2),
            Activation::Relu => f64::from(u8::from(z > 0.0)),
            Activation::Identity => 1.0,
        }
    }
}

/// A dense layer z = W·h + b: W `[outputs, inputs]` (torch's `Linear` layout), b `[outputs]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// The weights, row-major `[outputs, inputs]`.
    pub w: Vec<f64>,
    /// The bias, if the layer has one.
    pub b: Option<Vec<f64>>,
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
}

impl Dense {
    /// A layer of `outputs` × `inputs` weights, checked.
    pub fn new(w: Vec<f64>, b: Option<Vec<f64>>, inputs: usize, outputs: usize) -> Result<Dense> {
        check_len("w", &w, outputs, inputs)?;
        if let Some(b) = &b {
            check_len("b", b, 1, outputs)?;
        }
        Ok(Dense { w, b, inputs, outputs })
    }

    /// z `[n, outputs]` of h `[n, inputs]`.
    fn apply(&self, h: &[f64], n: usize) -> Vec<f64> {
        let mut z = vec![0.0; n * self.outputs];
        for s in 0..n {
            for o in 0..self.outputs {
                z[s * self.outputs + o] =
                    row_dot(h, s, &self.w, o, self.inputs) + self.b.as_ref().map_or(0.0, |b| b[o]);
            }
        }
        z
    }
}

/// A multilayer perceptron: dense layers with `activation` between them (none after the last).
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// The layers, input first; each one's inputs are the previous one's outputs.
    pub layers: Vec<Dense>,
    /// The activation after every layer but the last.
    pub activation: Activation,
}

/// One layer's factors for a batch: its inputs H `[n, inputs]` and the per-sample backprop
/// vectors Δ = ∂s/∂z `[n, outputs]` of s = Σ_j f_j / √O.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerFactors {
    /// H.
    pub h: Vec<f64>,
    /// Δ.
    pub delta: Vec<f64>,
}

impl Mlp {
    fn check(&self, x: &[f64], n: usize) -> Result<()> {
        let Some(first) = self.layers.first() else {
            return Err(Error::InvalidValue { arg: "mlp", reason: "no layers".into() });
        };
        for pair in self.layers.windows(2) {
            if pair[1].inputs != pair[0].outputs {
                return Err(Error::InvalidValue {
                    arg: "mlp",
                    reason: format!("a layer of {} inputs after one of {} outputs", pair[1].inputs, pair[0].outputs),
                });
            }
        }
        check_len("x", x, n, first.inputs)
    }

    /// The outputs f(x) `[n, O]` of x `[n, inputs]`.
    pub fn forward(&self, x: &[f64], n: usize) -> Result<Vec<f64>> {
        self.check(x, n)?;
        let mut h = x.to_vec();
        for (l, layer) in self.layers.iter().enumerate() {
            let z = layer.apply(&h, n);
            h = if l + 1 < self.layers.len() { z.iter().map(|&v| self.activation.apply(v)).collect() } else { z };
        }
        Ok(h)
    }

    /// Each layer's [`LayerFactors`] for x `[n, inputs]`: one forward keeping the layers' inputs
    /// and pre-activations, one backward of s = Σ_j f_j / √O per sample.
    pub fn layer_factors(&self, x: &[f64], n: usize) -> Result<Vec<LayerFactors>> {
        self.check(x, n)?;
        let last = self.layers.len() - 1;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut pre = Vec::with_capacity(self.layers.len());
        let mut h = x.to_vec();
        for (l, layer) in self.layers.iter().enumerate() {
            let z = layer.apply(&h, n);
            let next = if l < last { z.iter().map(|&v| self.activation.apply(v)).collect() } else { z.clone() };
            inputs.push(std::mem::replace(&mut h, next));
            pre.push(z);
        }
        let outputs = self.layers[last].outputs;
        let mut delta = vec![1.0 / (outputs as f64).sqrt(); n * outputs];
        let mut deltas = vec![Vec::new(); self.layers.len()];
        for l in (0..=last).rev() {
            if l < last {
                // δ_l = (W_{l+1}ᵀ·δ_{l+1}) ⊙ act′(z_l).
                let (up, layer) = (&self.layers[l + 1], &self.layers[l]);
                let mut d = vec![0.0; n * layer.outputs];
                for s in 0..n {
                    for i in 0..layer.outputs {
                        let back: f64 =
                            (0..up.outputs).map(|o| up.w[o * up.inputs + i] * delta[s * up.outputs + o]).sum();
                        d[s * layer.outputs + i] = back * self.activation.derivative(pre[l][s * layer.outputs + i]);
                    }
                }
                delta = d;
            }
            deltas[l] = delta.clone();
        }
        Ok(inputs.into_iter().zip(deltas).map(|(h, delta)| LayerFactors { h, delta }).collect())
    }

    /// Every parameter in one vector: each layer's W (row-major) then its b.
    pub fn parameters(&self) -> Vec<f64> {
        self.layers.iter().flat_map(|l| l.w.iter().chain(l.b.iter().flatten()).copied()).collect()
    }

    /// The same network with its parameters replaced by `theta` (the order of [`Mlp::parameters`]).
    pub fn with_parameters(&self, theta: &[f64]) -> Result<Mlp> {
        let mut out = self.clone();
        let mut at = 0;
        for layer in &mut out.layers {
            for v in layer.w.iter_mut().chain(layer.b.iter_mut().flatten()) {
                *v = *theta.get(at).ok_or_else(|| Error::Shape {
                    arg: "theta",
                    expected: "one value per parameter".into(),
                    got: vec![theta.len()],
                })?;
                at += 1;
            }
        }
        if at != theta.len() {
            return Err(Error::Shape { arg: "theta", expected: format!("[{at}]"), got: vec![theta.len()] });
        }
        Ok(out)
    }
}

/// The pNTK K(X1, X2) `[n1, n2]` of `mlp`: Σ over layers of their Gram-Hadamard products
/// (Δ1·Δ2ᵀ) ⊙ (H1·H2ᵀ + c), c = 1 for a layer with a bias.
pub fn pntk(mlp: &Mlp, x1: &[f64], n1: usize, x2: &[f64], n2: usize) -> Result<Vec<f64>> {
    let (f1, f2) = (mlp.layer_factors(x1, n1)?, mlp.layer_factors(x2, n2)?);
    let mut k = vec![0.0; n1 * n2];
    for ((layer, s1), s2) in mlp.layers.iter().zip(&f1).zip(&f2) {
        let ops = GramOperands {
            d1: &s1.delta,
            a1: &s1.h,
            d2: &s2.delta,
            a2: &s2.h,
            n1,
            n2,
            p: layer.outputs,
            q: layer.inputs,
        };
        for (acc, v) in k.iter_mut().zip(gram_hadamard(&ops, layer.b.is_some(), 1.0)?) {
            *acc += v;
        }
    }
    Ok(k)
}
