//! Real spherical harmonics Y^0..Y^lmax (lmax ≤ 4) in e3nn's basis and normalizations, and
//! their gradient with respect to the vector: the CPU reference (f64).
//!
//! Y^l is the degree-l harmonic polynomial that transforms by D^l (Y^l(Rx) = D^l(R) Y^l(x)),
//! built by e3nn's recursion Y^l_i = c_l Σ_jk C_ijk Y^{l−1}_j x_k with C = wigner_3j(l, l−1, 1);
//! c_l > 0 is fixed by the 'component' normalization ‖Y^l(x̂)‖² = 2l+1 and the sign by
//! Y^l_{m=0}(ŷ) > 0 (y is the polar axis), which is e3nn's table: Y¹ = √3·(x, y, z),
//! Y² = (√15·xz, √15·xy, √5(y² − (x²+z²)/2), √15·yz, (√15/2)(z² − x²)).

use std::fmt;
use std::str::FromStr;

use super::wigner::{check_l, wigner_3j};
use crate::core::error::{Error, Result};

/// How each Y^l is scaled (e3nn's `normalization`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShNormalization {
    /// ‖Y^l(x̂)‖² = 2l+1 (MACE, NequIP).
    Component,
    /// ‖Y^l(x̂)‖ = 1: component / √(2l+1).
    Norm,
    /// ∫ (Y^l_m)² over the sphere = 1: component / √(4π) (e3nn-torch's default).
    Integral,
}

impl ShNormalization {
    /// The factor from 'component' to this normalization for degree l.
    pub fn factor(self, l: u32) -> f64 {
        match self {
            ShNormalization::Component => 1.0,
            ShNormalization::Norm => 1.0 / ((2 * l + 1) as f64).sqrt(),
            ShNormalization::Integral => 1.0 / (4.0 * std::f64::consts::PI).sqrt(),
        }
    }

    /// `component`, `norm` or `integral`.
    pub const fn name(self) -> &'static str {
        match self {
            ShNormalization::Component => "component",
            ShNormalization::Norm => "norm",
            ShNormalization::Integral => "integral",
        }
    }
}

impl fmt::Display for ShNormalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ShNormalization {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "component" => Ok(ShNormalization::Component),
            "norm" => Ok(ShNormalization::Norm),
            "integral" => Ok(ShNormalization::Integral),
            _ => Err(Error::InvalidValue {
                arg: "normalization",
                reason: format!("expected component, norm or integral, got {s:?}"),
            }),
        }
    }
}

/// (lmax + 1)²: the width of Y^0..Y^lmax.
pub const fn sh_dim(lmax: u32) -> usize {
    ((lmax + 1) * (lmax + 1)) as usize
}

/// One recursion step: Y^l_i += value · Y^{l−1}_j · x_k for each (i, j, k, value).
pub type ShStep = Vec<(usize, usize, usize, f64)>;

/// The recursion coefficients of Y^1..Y^lmax (component normalization): `steps[l − 1]` builds
/// Y^l from Y^{l−1}. Also the sparse table a kernel would take.
#[derive(Clone, Debug)]
pub struct ShTable {
    /// The largest degree.
    pub lmax: u32,
    /// `steps[l − 1]`: the sparse coefficients c_l·C(l, l−1, 1).
    pub steps: Vec<ShStep>,
}

impl ShTable {
    /// The table for degrees up to `lmax` (≤ 4; a typed error otherwise).
    pub fn new(lmax: u32) -> Result<ShTable> {
        check_l("lmax", lmax)?;
        let mut steps: Vec<ShStep> = Vec::new();
        let mut prev = vec![1.0]; // Y^0(ŷ)
        let pole = [0.0, 1.0, 0.0];
        for l in 1..=lmax {
            let c = wigner_3j(l, l - 1, 1)?.nonzeros();
            let n = 2 * l as usize + 1;
            let mut at_pole = vec![0.0; n];
            for &(i, j, k, v) in &c {
                at_pole[i] += v * prev[j] * pole[k];
            }
            let norm = at_pole.iter().map(|v| v * v).sum::<f64>().sqrt();
            let scale = ((2 * l + 1) as f64).sqrt() / norm * at_pole[l as usize].signum();
            steps.push(c.into_iter().map(|(i, j, k, v)| (i, j, k, v * scale)).collect());
            prev = at_pole.into_iter().map(|v| v * scale).collect();
        }
        Ok(ShTable { lmax, steps })
    }

    /// Y^0..Y^lmax at `x` (component normalization, x not normalized) into `out`
    /// ((lmax+1)² values), and, when `grad` is given, ∂Y/∂x into it ((lmax+1)² rows of 3).
    pub fn eval(&self, x: [f64; 3], out: &mut [f64], mut grad: Option<&mut [[f64; 3]]>) {
        out[0] = 1.0;
        if let Some(g) = grad.as_deref_mut() {
            g[0] = [0.0; 3];
        }
        for l in 1..=self.lmax as usize {
            let (lo, hi) = out.split_at_mut(l * l);
            let prev = &lo[(l - 1) * (l - 1)..];
            let cur = &mut hi[..2 * l + 1];
            cur.fill(0.0);
            for &(i, j, k, v) in &self.steps[l - 1] {
                cur[i] += v * prev[j] * x[k];
            }
            if let Some(g) = grad.as_deref_mut() {
                let (glo, ghi) = g.split_at_mut(l * l);
                let gprev = &glo[(l - 1) * (l - 1)..];
                let gcur = &mut ghi[..2 * l + 1];
                gcur.fill([0.0; 3]);
                for &(i, j, k, v) in &self.steps[l - 1] {
                    for a in 0..3 {
                        gcur[i][a] += v * gprev[j][a] * x[k];
                    }
                    gcur[i][k] += v * prev[j];
                }
            }
        }
    }
}

impl ShTable {
    /// The recursion as straight-line CUDA (`kernels/equivariant/sh_poly.cuh`): `sh_step<l>`
    /// fills Y[l²..(l+1)²) from Y^{l−1} and (x, y, z); `sh_step_adjoint<l>` carries the gradient
    /// G of Y^l back into G of Y^{l−1} and into g = ∂/∂(x, y, z). Coefficients are printed with
    /// 9 significant digits, exact for f32.
    pub fn cuda_source(&self) -> String {
        let axis = ["x", "y", "z"];
        // Each coefficient in both precisions: the f32 kernels keep the 10-digit float literal,
        // the f64 kernels get the shortest spelling that round-trips the f64 (`{:e}`).
        let coef = |v: f64| format!("precision_constant<C>({v:.9e}f, {v:e})");
        let mut s = String::new();
        s.push_str("// Real spherical harmonics recursion Y^l_i = sum c * Y^{l-1}_j * x_k, component normalization,\n");
        s.push_str("// in compute type C (float, or double for f64 storage).\n");
        s.push_str("// Generated by kiln::equivariant::ShTable::new(4).cuda_source(); tests/suite/equivariant.rs\n");
        s.push_str("// checks it is current (BLESS=1 rewrites it). Do not edit.\n");
        s.push_str("#pragma once\n\n#include \"common/compute.cuh\"\n\nnamespace kiln::equivariant {\n\n");
        s.push_str("// ShStep<L>::forward sets Y^L from Y^{L-1}; ShStep<L>::adjoint carries G of Y^L back.\n");
        s.push_str("template <int L>\nstruct ShStep;\n");
        for l in 1..=self.lmax as usize {
            let (cur, prev) = (l * l, (l - 1) * (l - 1));
            s.push_str(&format!("\ntemplate <>\nstruct ShStep<{l}> {{\n"));
            s.push_str("    template <typename C>\n");
            s.push_str("    __device__ __forceinline__ static void forward(C* Y, C x, C y, C z) {\n");
            s.push_str("        (void)x;\n        (void)y;\n        (void)z;\n");
            for i in 0..2 * l + 1 {
                let terms: Vec<String> = self.steps[l - 1]
                    .iter()
                    .filter(|t| t.0 == i)
                    .map(|&(_, j, k, v)| format!("{} * Y[{}] * {}", coef(v), prev + j, axis[k]))
                    .collect();
                s.push_str(&format!("        Y[{}] = {};\n", cur + i, terms.join(" + ")));
            }
            s.push_str("    }\n\n");
            s.push_str("    template <typename C>\n");
            s.push_str("    __device__ __forceinline__ static void adjoint(const C* Y, C* G, C* g, C x, C y, C z) {\n");
            s.push_str("        (void)x;\n        (void)y;\n        (void)z;\n");
            for &(i, j, k, v) in &self.steps[l - 1] {
                s.push_str(&format!("        G[{}] += {} * {} * G[{}];\n", prev + j, coef(v), axis[k], cur + i));
                s.push_str(&format!("        g[{k}] += {} * Y[{}] * G[{}];\n", coef(v), prev + j, cur + i));
            }
            s.push_str("    }\n};\n");
        }
        s.push_str("\n}  // namespace kiln::equivariant\n");
        s
    }
}

fn check_vecs(vecs: &[f64]) -> Result<usize> {
    if vecs.len() % 3 != 0 {
        return Err(Error::Shape { arg: "vec", expected: "[n, 3]".into(), got: vec![vecs.len()] });
    }
    Ok(vecs.len() / 3)
}

/// x/‖x‖ and the Jacobian (I − x̂x̂ᵀ)/‖x‖; the zero vector maps to 0 with a zero Jacobian
/// (e3nn's `normalize` also sends it to 0).
fn normalized(x: [f64; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let r = (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt();
    if r == 0.0 {
        return ([0.0; 3], [[0.0; 3]; 3]);
    }
    let u = x.map(|v| v / r);
    let mut jac = [[0.0; 3]; 3];
    for (a, row) in jac.iter_mut().enumerate() {
        for (b, v) in row.iter_mut().enumerate() {
            *v = (if a == b { 1.0 } else { 0.0 } - u[a] * u[b]) / r;
        }
    }
    (u, jac)
}

/// Spherical harmonics options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sh {
    /// Degrees 0..=lmax (≤ 4).
    pub lmax: u32,
    /// The output scaling.
    pub normalization: ShNormalization,
    /// Evaluate at x/‖x‖ instead of x.
    pub normalize: bool,
}

impl Sh {
    fn scales(&self) -> Vec<f64> {
        (0..=self.lmax).flat_map(|l| std::iter::repeat_n(self.normalization.factor(l), 2 * l as usize + 1)).collect()
    }

    /// Y(x) for `vecs` `[n, 3]` → `[n, (lmax+1)²]`, f64.
    pub fn forward(&self, vecs: &[f64]) -> Result<Vec<f64>> {
        let n = check_vecs(vecs)?;
        let table = ShTable::new(self.lmax)?;
        let d = sh_dim(self.lmax);
        let scales = self.scales();
        let mut out = vec![0.0; n * d];
        for (x, y) in vecs.chunks_exact(3).zip(out.chunks_exact_mut(d)) {
            let mut v = [x[0], x[1], x[2]];
            if self.normalize {
                v = normalized(v).0;
            }
            table.eval(v, y, None);
            for (y, s) in y.iter_mut().zip(&scales) {
                *y *= s;
            }
        }
        Ok(out)
    }

    /// The gradient with respect to `vecs` `[n, 3]` given `dsh` `[n, (lmax+1)²]`.
    pub fn backward(&self, vecs: &[f64], dsh: &[f64]) -> Result<Vec<f64>> {
        let n = check_vecs(vecs)?;
        let table = ShTable::new(self.lmax)?;
        let d = sh_dim(self.lmax);
        if dsh.len() != n * d {
            return Err(Error::Shape { arg: "dsh", expected: format!("[{n}, {d}]"), got: vec![dsh.len()] });
        }
        let scales = self.scales();
        let mut y = vec![0.0; d];
        let mut g = vec![[0.0; 3]; d];
        let mut dx = vec![0.0; n * 3];
        for ((x, dy), dx) in vecs.chunks_exact(3).zip(dsh.chunks_exact(d)).zip(dx.chunks_exact_mut(3)) {
            let raw = [x[0], x[1], x[2]];
            let (v, jac) = if self.normalize { normalized(raw) } else { (raw, [[0.0; 3]; 3]) };
            table.eval(v, &mut y, Some(&mut g));
            let mut dv = [0.0; 3];
            for i in 0..d {
                for a in 0..3 {
                    dv[a] += dy[i] * scales[i] * g[i][a];
                }
            }
            if self.normalize {
                for a in 0..3 {
                    dx[a] = (0..3).map(|b| jac[b][a] * dv[b]).sum();
                }
            } else {
                dx.copy_from_slice(&dv);
            }
        }
        Ok(dx)
    }
}
