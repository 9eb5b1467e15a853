//! f64 references of S-GCN's spherical harmonics (the featurizer's layout and normalisation) and
//! its spherical graph convolution, forward and backward.

use crate::core::error::{Error, Result};
use crate::core::validate::check_host_matrix;

/// The coefficients of P_l (ascending powers) for l < count.
fn legendre_coefficients(count: usize) -> Vec<Vec<f64>> {
    let mut p: Vec<Vec<f64>> = Vec::with_capacity(count);
    for l in 0..count {
        let next = match l {
            0 => vec![1.0],
            1 => vec![0.0, 1.0],
            _ => {
                // l·P_l = (2l − 1)·x·P_{l−1} − (l − 1)·P_{l−2}.
                let lf = l as f64;
                let mut c = vec![0.0; l + 1];
                for (k, v) in p[l - 1].iter().enumerate() {
                    c[k + 1] += (2.0 * lf - 1.0) * v / lf;
                }
                for (k, v) in p[l - 2].iter().enumerate() {
                    c[k] -= (lf - 1.0) * v / lf;
                }
                c
            }
        };
        p.push(next);
    }
    p
}

/// The value at t of the m-th derivative of the polynomial with coefficients `c`.
fn derivative_at(c: &[f64], m: usize, t: f64) -> f64 {
    let mut acc = 0.0;
    for k in (m..c.len()).rev() {
        let falling: f64 = (0..m).map(|j| (k - j) as f64).product();
        acc = acc * t + c[k] * falling;
    }
    // Horner over k ≥ m evaluates Σ c_k·k!/(k−m)!·t^(k−m).
    acc
}

fn factorial(n: usize) -> f64 {
    (1..=n).map(|k| k as f64).product()
}

/// Columns per order: L² for l < L.
pub fn sh_columns(order: usize) -> usize {
    order * order
}

/// Y_lm without angles: Y_lm = F_lm·(−1)^m·(u_x + i·u_y)^m·P_l^(m)(u_z) for the unit vector
/// u, as (re, im) with its gradient in u (unconstrained, three components each).
fn y_lm(coeffs: &[f64], l: usize, m: usize, u: [f64; 3]) -> ((f64, f64), [(f64, f64); 3]) {
    let f = ((2 * l + 1) as f64 / (4.0 * std::f64::consts::PI) * factorial(l - m) / factorial(l + m)).sqrt();
    let sign = if m % 2 == 1 { -1.0 } else { 1.0 };
    let (pm, pm1) = (derivative_at(coeffs, m, u[2]), derivative_at(coeffs, m + 1, u[2]));
    // w = (u_x + i·u_y)^m and w′ = m·(u_x + i·u_y)^(m−1).
    let (mut wr, mut wi) = (1.0, 0.0);
    let (mut dr, mut di) = (0.0, 0.0);
    for k in 0..m {
        if k + 1 == m {
            (dr, di) = (m as f64 * wr, m as f64 * wi);
        }
        (wr, wi) = (wr * u[0] - wi * u[1], wr * u[1] + wi * u[0]);
    }
    let s = f * sign;
    let value = (s * wr * pm, s * wi * pm);
    // ∂/∂u_x = s·w′·P^(m); ∂/∂u_y = i·s·w′·P^(m); ∂/∂u_z = s·w·P^(m+1).
    let gx = (s * dr * pm, s * di * pm);
    let gy = (-s * di * pm, s * dr * pm);
    let gz = (s * wr * pm1, s * wi * pm1);
    (value, [gx, gy, gz])
}

/// One vector's columns and, with `grad`, each column's gradient in v `[3]`.
fn sh_one(coeffs: &[Vec<f64>], order: usize, v: &[f64], mut grad: Option<&mut Vec<[f64; 3]>>) -> Vec<f64> {
    let rho = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let u = if rho > 0.0 { [v[0] / rho, v[1] / rho, v[2] / rho] } else { [0.0, 0.0, 1.0] };
    let mut out = Vec::with_capacity(sh_columns(order));
    let mut push = |value: f64, g: [f64; 3], out: &mut Vec<f64>| {
        out.push(value);
        if let Some(gr) = grad.as_deref_mut() {
            // dY/dv = (I − u·uᵀ)/ρ · ∇_u Y (0 at the origin, where the direction is undefined).
            let dot = g[0] * u[0] + g[1] * u[1] + g[2] * u[2];
            gr.push(if rho > 0.0 { [0, 1, 2].map(|a| (g[a] - u[a] * dot) / rho) } else { [0.0; 3] });
        }
    };
    for (l, c) in coeffs.iter().enumerate().take(order) {
        for m in 1..=l {
            let ((_, im), g) = y_lm(c, l, m, u);
            push(-2.0 * im, g.map(|(_, i)| -2.0 * i), &mut out);
        }
        let ((re, _), g) = y_lm(c, l, 0, u);
        push(re, g.map(|(r, _)| r), &mut out);
        for m in 1..=l {
            let ((re, _), g) = y_lm(c, l, m, u);
            push(2.0 * re, g.map(|(r, _)| 2.0 * r), &mut out);
        }
    }
    out
}

/// S-GCN's spherical harmonics of vectors v `[E, 3]` in the featurizer's layout: per l < order,
/// −2·Im Y_l^m (m = 1..l), Re Y_l^0, 2·Re Y_l^m (m = 1..l), with
/// Y_lm = F_lm·P_l^m(cos θ)·e^{imφ}, F_lm = √((2l+1)/4π·(l−m)!/(l+m)!), the Condon-Shortley phase
/// in P_l^m, θ = acos(v_z/ρ), φ = atan2(v_y, v_x) (0 on the axis): `[E, order²]`. The zero vector
/// takes the z axis.
pub fn sh(v: &[f64], order: usize) -> Result<Vec<f64>> {
    check_host_matrix("v", v, v.len() / 3, 3)?;
    let coeffs = legendre_coefficients(order + 1);
    Ok(v.chunks_exact(3).flat_map(|r| sh_one(&coeffs, order, r, None)).collect())
}

/// The backward of [`sh`]: dv `[E, 3]` given dsh `[E, order²]` (0 for the zero vector).
pub fn sh_backward(v: &[f64], order: usize, dsh: &[f64]) -> Result<Vec<f64>> {
    check_host_matrix("v", v, v.len() / 3, 3)?;
    let cols = sh_columns(order);
    check_host_matrix("dsh", dsh, v.len() / 3, cols)?;
    let coeffs = legendre_coefficients(order + 1);
    let mut out = Vec::with_capacity(v.len());
    for (r, g) in v.chunks_exact(3).zip(dsh.chunks_exact(cols.max(1))) {
        let mut grads = Vec::with_capacity(cols);
        sh_one(&coeffs, order, r, Some(&mut grads));
        out.extend([0, 1, 2].map(|a| grads.iter().zip(g).map(|(gr, d)| gr[a] * d).sum::<f64>()));
    }
    Ok(out)
}

/// The convolution's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// None.
    Identity,
    /// max(0, z) (relu′(0) = 0).
    Relu,
    /// z for z > 0, e^z − 1 otherwise.
    Elu,
    /// 1 / (1 + e^−z).
    Sigmoid,
}

impl Act {
    fn apply(self, z: f64) -> (f64, f64) {
        match self {
            Act::Identity => (z, 1.0),
            Act::Relu => (z.max(0.0), f64::from(u8::from(z > 0.0))),
            Act::Elu if z > 0.0 => (z, 1.0),
            Act::Elu => (z.exp() - 1.0, z.exp()),
            Act::Sigmoid => {
                let s = 1.0 / (1.0 + (-z).exp());
                (s, s * (1.0 - s))
            }
        }
    }
}

/// The convolution's operands: out[i] = act(X[i]·W0 + Σ_k Σ_{e: recv_e = i} c_e·sh[e, k]·X[send_e]·W_k + b).
#[derive(Clone, Copy, Debug)]
pub struct Conv<'a> {
    /// Node features X `[N, Ci]`.
    pub x: &'a [f64],
    /// Receivers `[E]` in 0..N.
    pub recv: &'a [usize],
    /// Senders `[E]` in 0..N.
    pub send: &'a [usize],
    /// Per-edge coefficients c `[E]` (1, or a normalised contact area).
    pub coeff: &'a [f64],
    /// The edges' harmonics `[E, K]`.
    pub sh: &'a [f64],
    /// W0 `[Ci, Co]`.
    pub w0: &'a [f64],
    /// W_k `[K, Ci, Co]`.
    pub wk: &'a [f64],
    /// b `[Co]`.
    pub b: &'a [f64],
    /// N.
    pub nodes: usize,
    /// Ci.
    pub ci: usize,
    /// Co.
    pub co: usize,
    /// K.
    pub k: usize,
    /// The activation.
    pub act: Act,
}

impl Conv<'_> {
    fn check(&self) -> Result<usize> {
        let e = self.recv.len();
        check_host_matrix("x", self.x, self.nodes, self.ci)?;
        if self.send.len() != e {
            return Err(Error::Shape {
                arg: "send",
                expected: format!("[{e}] (one per edge)"),
                got: vec![self.send.len()],
            });
        }
        check_host_matrix("coeff", self.coeff, e, 1)?;
        check_host_matrix("sh", self.sh, e, self.k)?;
        check_host_matrix("w0", self.w0, self.ci, self.co)?;
        check_host_matrix("wk", self.wk, self.k, self.ci * self.co)?;
        check_host_matrix("b", self.b, 1, self.co)?;
        for (arg, idx) in [("recv", self.recv), ("send", self.send)] {
            if let Some(at) = idx.iter().position(|&n| n >= self.nodes) {
                return Err(Error::InvalidValue {
                    arg,
                    reason: format!("edge {at} has index {}, outside 0..{}", idx[at], self.nodes),
                });
            }
        }
        Ok(e)
    }

    /// The aggregate A[i, k, :] = Σ_{e: recv_e = i} c_e·sh[e, k]·X[send_e] `[N, K, Ci]` and the
    /// pre-activation z `[N, Co]`.
    fn pre(&self) -> (Vec<f64>, Vec<f64>) {
        let (n, ci, co, k) = (self.nodes, self.ci, self.co, self.k);
        let mut a = vec![0.0; n * k * ci];
        for e in 0..self.recv.len() {
            let (i, j) = (self.recv[e], self.send[e]);
            for kk in 0..k {
                let w = self.coeff[e] * self.sh[e * k + kk];
                for c in 0..ci {
                    a[(i * k + kk) * ci + c] += w * self.x[j * ci + c];
                }
            }
        }
        let mut z = vec![0.0; n * co];
        for i in 0..n {
            for o in 0..co {
                let mut acc = self.b[o];
                for c in 0..ci {
                    acc += self.x[i * ci + c] * self.w0[c * co + o];
                    for kk in 0..k {
                        acc += a[(i * k + kk) * ci + c] * self.wk[(kk * ci + c) * co + o];
                    }
                }
                z[i * co + o] = acc;
            }
        }
        (a, z)
    }
}

/// The convolution: `[N, Co]`.
pub fn conv(p: &Conv) -> Result<Vec<f64>> {
    p.check()?;
    Ok(p.pre().1.into_iter().map(|z| p.act.apply(z).0).collect())
}

/// The gradients of [`conv`], shaped as its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGrads {
    /// dX `[N, Ci]`: the self term and, through the senders, the neighbour terms.
    pub dx: Vec<f64>,
    /// dsh `[E, K]`.
    pub dsh: Vec<f64>,
    /// dW0 `[Ci, Co]`.
    pub dw0: Vec<f64>,
    /// dW_k `[K, Ci, Co]`.
    pub dwk: Vec<f64>,
    /// db `[Co]`.
    pub db: Vec<f64>,
    /// dcoeff `[E]`.
    pub dcoeff: Vec<f64>,
}

/// The backward of [`conv`] given dout `[N, Co]`.
pub fn conv_backward(p: &Conv, dout: &[f64]) -> Result<ConvGrads> {
    let e_count = p.check()?;
    let (n, ci, co, k) = (p.nodes, p.ci, p.co, p.k);
    check_host_matrix("dout", dout, n, co)?;
    let (a, z) = p.pre();
    let dz: Vec<f64> = z.iter().zip(dout).map(|(&z, d)| d * p.act.apply(z).1).collect();
    let mut g = ConvGrads {
        dx: vec![0.0; n * ci],
        dsh: vec![0.0; e_count * k],
        dw0: vec![0.0; ci * co],
        dwk: vec![0.0; k * ci * co],
        db: vec![0.0; co],
        dcoeff: vec![0.0; e_count],
    };
    // dA[i, k, c] = Σ_o dz[i, o]·W_k[c, o].
    let mut da = vec![0.0; n * k * ci];
    for i in 0..n {
        for o in 0..co {
            let d = dz[i * co + o];
            g.db[o] += d;
            for c in 0..ci {
                g.dw0[c * co + o] += p.x[i * ci + c] * d;
                g.dx[i * ci + c] += p.w0[c * co + o] * d;
                for kk in 0..k {
                    g.dwk[(kk * ci + c) * co + o] += a[(i * k + kk) * ci + c] * d;
                    da[(i * k + kk) * ci + c] += p.wk[(kk * ci + c) * co + o] * d;
                }
            }
        }
    }
    for e in 0..e_count {
        let (i, j) = (p.recv[e], p.send[e]);
        for kk in 0..k {
            let back = &da[(i * k + kk) * ci..(i * k + kk + 1) * ci];
            let inner: f64 = back.iter().zip(&p.x[j * ci..(j + 1) * ci]).map(|(a, b)| a * b).sum();
            g.dsh[e * k + kk] = p.coeff[e] * inner;
            g.dcoeff[e] += p.sh[e * k + kk] * inner;
            let w = p.coeff[e] * p.sh[e * k + kk];
            for (dx, b) in g.dx[j * ci..(j + 1) * ci].iter_mut().zip(back) {
                *dx += w * b;
            }
        }
    }
    Ok(g)
}
