//! Clebsch-Gordan coefficients (e3nn's `wigner_3j`) and real Wigner D matrices, l ≤ 4, f64.
//!
//! The real basis is e3nn's: the real spherical harmonics of the Wikipedia table with the
//! polar axis called y, so that l = 1 is the vector (x, y, z) and D¹(R) = R. The coupling
//! coefficients are the SU(2) Clebsch-Gordan coefficients (Condon-Shortley phase, Racah's
//! formula) carried into the real basis by e3nn's change of basis
//! (`change_basis_real_to_complex`, with its factor (−i)^l that makes them real), then
//! scaled to unit Frobenius norm.

use crate::core::error::{Error, Result};

/// The largest degree the equivariant family supports.
pub const LMAX: u32 = 4;

/// A minimal complex number: the change of basis is the only complex arithmetic here.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct C64 {
    re: f64,
    im: f64,
}

impl C64 {
    const fn new(re: f64, im: f64) -> C64 {
        C64 { re, im }
    }
    fn conj(self) -> C64 {
        C64::new(self.re, -self.im)
    }
    fn mul(self, o: C64) -> C64 {
        C64::new(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)
    }
    fn add(self, o: C64) -> C64 {
        C64::new(self.re + o.re, self.im + o.im)
    }
    fn scale(self, s: f64) -> C64 {
        C64::new(self.re * s, self.im * s)
    }
}

/// Rejects l > [`LMAX`] for the argument `arg`.
pub(crate) fn check_l(arg: &'static str, l: u32) -> Result<()> {
    if l > LMAX {
        return Err(Error::InvalidValue { arg, reason: format!("l = {l} is above the supported lmax {LMAX}") });
    }
    Ok(())
}

/// e3nn's `change_basis_real_to_complex(l)`: q[a][b], a and b in 0..2l+1.
fn change_basis(l: u32) -> Vec<Vec<C64>> {
    let n = 2 * l as usize + 1;
    let li = l as i64;
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let mut q = vec![vec![C64::default(); n]; n];
    for m in -li..0 {
        q[(li + m) as usize][(li - m) as usize] = C64::new(h, 0.0);
        q[(li + m) as usize][(li + m) as usize] = C64::new(0.0, -h);
    }
    q[l as usize][l as usize] = C64::new(1.0, 0.0);
    for m in 1..=li {
        let s = if m % 2 == 0 { 1.0 } else { -1.0 };
        q[(li + m) as usize][(li + m) as usize] = C64::new(s * h, 0.0);
        q[(li + m) as usize][(li - m) as usize] = C64::new(0.0, s * h);
    }
    // (−i)^l
    let phase = match l % 4 {
        0 => C64::new(1.0, 0.0),
        1 => C64::new(0.0, -1.0),
        2 => C64::new(-1.0, 0.0),
        _ => C64::new(0.0, 1.0),
    };
    for row in &mut q {
        for v in row.iter_mut() {
            *v = v.mul(phase);
        }
    }
    q
}

fn factorial(n: i64) -> f64 {
    (1..=n).map(|k| k as f64).product()
}

/// ⟨j1 m1 j2 m2 | j3 m3⟩ for integer j (Racah's formula, Condon-Shortley phase). The
/// factorials stay below 13! for l ≤ 4, exact in f64.
fn su2_cg(j1: i64, m1: i64, j2: i64, m2: i64, j3: i64, m3: i64) -> f64 {
    if m3 != m1 + m2 || m1.abs() > j1 || m2.abs() > j2 || m3.abs() > j3 {
        return 0.0;
    }
    let f = factorial;
    let pre = (2 * j3 + 1) as f64 * f(j3 + j1 - j2) * f(j3 - j1 + j2) * f(j1 + j2 - j3) * f(j3 + m3) * f(j3 - m3)
        / (f(j1 + j2 + j3 + 1) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2));
    let vmin = (-j1 + j2 + m3).max(-j1 + m1).max(0);
    let vmax = (j2 + j3 + m1).min(j3 - j1 + j2).min(j3 + m3);
    let mut s = 0.0;
    for v in vmin..=vmax {
        let sign = if (v + j2 + m2).rem_euclid(2) == 0 { 1.0 } else { -1.0 };
        s += sign * f(j2 + j3 + m1 - v) * f(j1 - m1 + v)
            / (f(v) * f(j3 - j1 + j2 - v) * f(j3 + m3 - v) * f(v + j1 - j2 - m3));
    }
    pre.sqrt() * s
}

/// Real-basis coupling coefficients `C[i, j, k]` of `l1 ⊗ l2 → l3`, row-major
/// `[2l1+1, 2l2+1, 2l3+1]`, unit Frobenius norm: e3nn's `wigner_3j(l1, l2, l3)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Wigner3j {
    /// (l1, l2, l3).
    pub ls: [u32; 3],
    /// Row-major values.
    pub data: Vec<f64>,
}

impl Wigner3j {
    /// The dimensions (2l1+1, 2l2+1, 2l3+1).
    pub fn dims(&self) -> [usize; 3] {
        self.ls.map(|l| 2 * l as usize + 1)
    }

    /// C[i, j, k].
    pub fn get(&self, i: usize, j: usize, k: usize) -> f64 {
        let [_, d2, d3] = self.dims();
        self.data[(i * d2 + j) * d3 + k]
    }

    /// The nonzero entries (i, j, k, value), in row-major order: the sparse table kernels take.
    pub fn nonzeros(&self) -> Vec<(usize, usize, usize, f64)> {
        let [d1, d2, d3] = self.dims();
        let mut out = Vec::new();
        for i in 0..d1 {
            for j in 0..d2 {
                for k in 0..d3 {
                    let v = self.get(i, j, k);
                    // Entries that are zero by symmetry come out at ~1e-17 from the complex sum.
                    if v.abs() > 1e-12 {
                        out.push((i, j, k, v));
                    }
                }
            }
        }
        out
    }
}

/// e3nn's `wigner_3j(l1, l2, l3)`: typed errors for l > 4 or a triple outside the triangle
/// |l1 − l2| ≤ l3 ≤ l1 + l2.
pub fn wigner_3j(l1: u32, l2: u32, l3: u32) -> Result<Wigner3j> {
    check_l("l1", l1)?;
    check_l("l2", l2)?;
    check_l("l3", l3)?;
    if !(l1.abs_diff(l2) <= l3 && l3 <= l1 + l2) {
        return Err(Error::InvalidValue {
            arg: "l3",
            reason: format!("({l1}, {l2}, {l3}) breaks the triangle rule |l1 - l2| <= l3 <= l1 + l2"),
        });
    }
    let (q1, q2, q3) = (change_basis(l1), change_basis(l2), change_basis(l3));
    let (n1, n2, n3) = (q1.len(), q2.len(), q3.len());
    let (j1, j2, j3) = (l1 as i64, l2 as i64, l3 as i64);
    // C_real[a, b, c] = Σ_{i,k,n} Q1[i][a] Q2[k][b] conj(Q3[n][c]) CG[i, k, n], with i, k, n the
    // complex indices m + l (e3nn's einsum "ij,kl,mn,ikn->jlm" with conj(Q3ᵀ)).
    let mut cg = Vec::new();
    for i in 0..n1 {
        for k in 0..n2 {
            let (m1, m2) = (i as i64 - j1, k as i64 - j2);
            let m3 = m1 + m2;
            if m3.abs() <= j3 {
                cg.push((i, k, (m3 + j3) as usize, su2_cg(j1, m1, j2, m2, j3, m3)));
            }
        }
    }
    let mut data = vec![0.0; n1 * n2 * n3];
    let mut max_imag: f64 = 0.0;
    for a in 0..n1 {
        for b in 0..n2 {
            for c in 0..n3 {
                let mut acc = C64::default();
                for &(i, k, n, v) in &cg {
                    acc = acc.add(q1[i][a].mul(q2[k][b]).mul(q3[n][c].conj()).scale(v));
                }
                max_imag = max_imag.max(acc.im.abs());
                data[(a * n2 + b) * n3 + c] = acc.re;
            }
        }
    }
    debug_assert!(max_imag < 1e-12, "the change of basis left an imaginary part {max_imag}");
    let norm = data.iter().map(|v| v * v).sum::<f64>().sqrt();
    for v in &mut data {
        *v /= norm;
    }
    Ok(Wigner3j { ls: [l1, l2, l3], data })
}

/// A square matrix, row-major.
pub(crate) type Mat = Vec<f64>;

pub(crate) fn matmul(a: &[f64], b: &[f64], n: usize) -> Mat {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            if aik != 0.0 {
                for j in 0..n {
                    c[i * n + j] += aik * b[k * n + j];
                }
            }
        }
    }
    c
}

/// e^A by scaling and squaring with a Taylor series (A small after scaling): f64-accurate
/// for the ≤ 9×9 generators here.
fn expm(a: &[f64], n: usize) -> Mat {
    let norm: f64 = a.iter().map(|v| v.abs()).sum();
    let mut squarings = 0;
    let mut scale = 1.0;
    while norm * scale > 0.25 {
        scale *= 0.5;
        squarings += 1;
    }
    let a: Vec<f64> = a.iter().map(|v| v * scale).collect();
    let mut result: Mat = (0..n * n).map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 }).collect();
    let mut term = result.clone();
    for k in 1..=20 {
        term = matmul(&term, &a, n).into_iter().map(|v| v / k as f64).collect();
        for (r, t) in result.iter_mut().zip(&term) {
            *r += t;
        }
    }
    for _ in 0..squarings {
        result = matmul(&result, &result, n);
    }
    result
}

/// The real generators (G_x, G_y, G_z) of the degree-l representation in e3nn's basis:
/// D^l(exp(θ n·L)) = exp(θ n·G) with L the generators of rotations of (x, y, z), so
/// G = L for l = 1. G_x and G_y are e3nn's `so3_generators(l)[0]` and `[1]` (the rotations
/// about x and the polar y); G_z = [G_x, G_y].
pub fn so3_generators(l: u32) -> Result<[Mat; 3]> {
    check_l("l", l)?;
    let n = 2 * l as usize + 1;
    let j = l as f64;
    // SU(2) generators in the |l m⟩ basis, m = −l..l (e3nn's su2_generators).
    let mut raising = vec![C64::default(); n * n];
    let mut lowering = vec![C64::default(); n * n];
    for i in 0..n - 1 {
        let m = i as f64 - j;
        raising[(i + 1) * n + i] = C64::new(-(j * (j + 1.0) - m * (m + 1.0)).sqrt(), 0.0);
        let m = i as f64 - j + 1.0;
        lowering[i * n + i + 1] = C64::new((j * (j + 1.0) - m * (m - 1.0)).sqrt(), 0.0);
    }
    let x: Vec<C64> = raising.iter().zip(&lowering).map(|(r, lo)| r.add(*lo).scale(0.5)).collect();
    let mut y = vec![C64::default(); n * n];
    for i in 0..n {
        y[i * n + i] = C64::new(0.0, i as f64 - j);
    }
    let q = change_basis(l);
    // conj(Qᵀ) X Q, real.
    let to_real = |xm: &[C64]| -> Mat {
        let mut out = vec![0.0; n * n];
        for a in 0..n {
            for b in 0..n {
                let mut acc = C64::default();
                for c in 0..n {
                    for d in 0..n {
                        acc = acc.add(q[c][a].conj().mul(xm[c * n + d]).mul(q[d][b]));
                    }
                }
                out[a * n + b] = acc.re;
            }
        }
        out
    };
    let gx = to_real(&x);
    let gy = to_real(&y);
    let gz: Mat = matmul(&gx, &gy, n).iter().zip(matmul(&gy, &gx, n)).map(|(a, b)| a - b).collect();
    Ok([gx, gy, gz])
}

/// The rotation vector ω (axis·angle, angle in [0, π]) of a rotation matrix, through a
/// quaternion (Shepperd's choice of the largest component, stable near π).
pub fn rotation_vector(r: &[[f64; 3]; 3]) -> [f64; 3] {
    let tr = r[0][0] + r[1][1] + r[2][2];
    let cand = [tr, r[0][0], r[1][1], r[2][2]];
    let k = (0..4).max_by(|&a, &b| cand[a].total_cmp(&cand[b])).unwrap_or(0);
    // (w, x, y, z)
    let q = match k {
        0 => {
            let s = (1.0 + tr).sqrt() * 2.0;
            [0.25 * s, (r[2][1] - r[1][2]) / s, (r[0][2] - r[2][0]) / s, (r[1][0] - r[0][1]) / s]
        }
        1 => {
            let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
            [(r[2][1] - r[1][2]) / s, 0.25 * s, (r[0][1] + r[1][0]) / s, (r[0][2] + r[2][0]) / s]
        }
        2 => {
            let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
            [(r[0][2] - r[2][0]) / s, (r[0][1] + r[1][0]) / s, 0.25 * s, (r[1][2] + r[2][1]) / s]
        }
        _ => {
            let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
            [(r[1][0] - r[0][1]) / s, (r[0][2] + r[2][0]) / s, (r[1][2] + r[2][1]) / s, 0.25 * s]
        }
    };
    let (w, v) = if q[0] < 0.0 { (-q[0], [-q[1], -q[2], -q[3]]) } else { (q[0], [q[1], q[2], q[3]]) };
    let s = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if s == 0.0 {
        return [0.0; 3];
    }
    let angle = 2.0 * s.atan2(w);
    [v[0] / s * angle, v[1] / s * angle, v[2] / s * angle]
}

/// exp(ω·G^l): the degree-l Wigner D matrix of the rotation with rotation vector ω, row-major.
pub fn wigner_d_of_vector(l: u32, omega: [f64; 3]) -> Result<Mat> {
    let g = so3_generators(l)?;
    let n = 2 * l as usize + 1;
    let a: Mat = (0..n * n).map(|i| omega[0] * g[0][i] + omega[1] * g[1][i] + omega[2] * g[2][i]).collect();
    Ok(expm(&a, n))
}

/// The degree-l real Wigner D matrix of a proper rotation `r` (row-major (2l+1)², e3nn's
/// basis): D¹(R) = R, D(R1 R2) = D(R1) D(R2), Y^l(R x) = D^l(R) Y^l(x).
pub fn wigner_d(l: u32, r: &[[f64; 3]; 3]) -> Result<Mat> {
    wigner_d_of_vector(l, rotation_vector(r))
}

/// The rotation matrix exp(ω·L) of a rotation vector.
pub fn rotation_matrix(omega: [f64; 3]) -> [[f64; 3]; 3] {
    let angle = (omega[0] * omega[0] + omega[1] * omega[1] + omega[2] * omega[2]).sqrt();
    if angle == 0.0 {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let [x, y, z] = omega.map(|v| v / angle);
    let (s, c) = angle.sin_cos();
    let t = 1.0 - c;
    [
        [c + x * x * t, x * y * t - z * s, x * z * t + y * s],
        [y * x * t + z * s, c + y * y * t, y * z * t - x * s],
        [z * x * t - y * s, z * y * t + x * s, c + z * z * t],
    ]
}
