//! f64 references of GemNet-OC's bases and its efficient bilinear interaction, forward and
//! backward. Distances are scaled by the cutoff first (d_s = d / cutoff); every basis is
//! row-major, one row per edge or triplet.

use crate::core::error::{Error, Result};
use crate::core::validate::check_host_matrix;

/// The polynomial envelope of exponent p at d_s and its derivative in d_s:
/// u = 1 + a·d_s^p + b·d_s^(p+1) + c·d_s^(p+2), a = −(p+1)(p+2)/2, b = p(p+2), c = −p(p+1)/2;
/// u = 0 (and u′ = 0) for d_s ≥ 1.
pub fn envelope(ds: f64, p: u32) -> (f64, f64) {
    if ds >= 1.0 {
        return (0.0, 0.0);
    }
    let pf = f64::from(p);
    let (a, b, c) = (-(pf + 1.0) * (pf + 2.0) / 2.0, pf * (pf + 2.0), -pf * (pf + 1.0) / 2.0);
    let x = ds.powi(p as i32 - 1);
    let u = 1.0 + ds * x * (a + ds * (b + ds * c));
    let du = x * (pf * a + ds * ((pf + 1.0) * b + ds * (pf + 2.0) * c));
    (u, du)
}

fn check_cutoff(cutoff: f64) -> Result<()> {
    if cutoff > 0.0 && cutoff.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidValue { arg: "cutoff", reason: format!("a positive distance, got {cutoff}") })
    }
}

/// The Gaussian radial basis times the envelope: `[E, R]`,
/// rbf[e, k] = exp(coeff·(d_s − μ_k)²)·u(d_s), μ = linspace(0, 1, R), coeff = −0.5·(R − 1)².
pub fn rbf_gaussian(d: &[f64], cutoff: f64, radial: usize, p: u32) -> Result<Vec<f64>> {
    check_cutoff(cutoff)?;
    let (mu, coeff) = gaussian_centres(radial);
    Ok(d.iter()
        .flat_map(|&de| {
            let ds = de / cutoff;
            let (u, _) = envelope(ds, p);
            mu.iter().map(move |m| (coeff * (ds - m).powi(2)).exp() * u).collect::<Vec<_>>()
        })
        .collect())
}

fn gaussian_centres(radial: usize) -> (Vec<f64>, f64) {
    let span = radial.saturating_sub(1).max(1) as f64;
    let mu = (0..radial).map(|k| if radial == 1 { 0.0 } else { k as f64 / span }).collect();
    let r1 = radial.saturating_sub(1) as f64;
    (mu, -0.5 * r1 * r1)
}

/// The backward of [`rbf_gaussian`]: dd `[E]` given drbf `[E, R]`.
pub fn rbf_gaussian_backward(d: &[f64], cutoff: f64, radial: usize, p: u32, drbf: &[f64]) -> Result<Vec<f64>> {
    check_cutoff(cutoff)?;
    check_host_matrix("drbf", drbf, d.len(), radial)?;
    let (mu, coeff) = gaussian_centres(radial);
    Ok(d.iter()
        .enumerate()
        .map(|(e, &de)| {
            let ds = de / cutoff;
            let (u, du) = envelope(ds, p);
            let per_ds: f64 = mu
                .iter()
                .zip(&drbf[e * radial..(e + 1) * radial])
                .map(|(m, g)| {
                    let g0 = (coeff * (ds - m).powi(2)).exp();
                    g * (g0 * 2.0 * coeff * (ds - m) * u + g0 * du)
                })
                .sum();
            per_ds / cutoff
        })
        .collect())
}

/// The spherical Bessel radial basis times the envelope: `[E, R]`,
/// rbf[e, n] = √(2/c³)·sin(f_n·d_s)/d_s·u(d_s), with trainable frequencies f `[R]` (fairchem
/// initialises them to nπ). d must be positive (d_s = 0 is the basis's removable singularity).
pub fn rbf_bessel(d: &[f64], freqs: &[f64], cutoff: f64, p: u32) -> Result<Vec<f64>> {
    check_cutoff(cutoff)?;
    check_positive(d)?;
    let norm = (2.0 / cutoff.powi(3)).sqrt();
    Ok(d.iter()
        .flat_map(|&de| {
            let ds = de / cutoff;
            let (u, _) = envelope(ds, p);
            freqs.iter().map(move |f| norm * (f * ds).sin() / ds * u).collect::<Vec<_>>()
        })
        .collect())
}

fn check_positive(d: &[f64]) -> Result<()> {
    match d.iter().position(|&v| v.is_nan() || v <= 0.0) {
        None => Ok(()),
        Some(e) => {
            Err(Error::InvalidValue { arg: "d", reason: format!("edge {e} has distance {}: must be > 0", d[e]) })
        }
    }
}

/// The gradients of [`rbf_bessel`]: (dd `[E]`, dfreqs `[R]`, the latter reduced over edges).
pub fn rbf_bessel_backward(
    d: &[f64],
    freqs: &[f64],
    cutoff: f64,
    p: u32,
    drbf: &[f64],
) -> Result<(Vec<f64>, Vec<f64>)> {
    check_cutoff(cutoff)?;
    check_positive(d)?;
    let r = freqs.len();
    check_host_matrix("drbf", drbf, d.len(), r)?;
    let norm = (2.0 / cutoff.powi(3)).sqrt();
    let mut dfreqs = vec![0.0; r];
    let dd = d
        .iter()
        .enumerate()
        .map(|(e, &de)| {
            let ds = de / cutoff;
            let (u, du) = envelope(ds, p);
            let mut per_ds = 0.0;
            for (n, &f) in freqs.iter().enumerate() {
                let g = drbf[e * r + n];
                let (s, c) = (f * ds).sin_cos();
                per_ds += g * norm * ((f * c * ds - s) / (ds * ds) * u + s / ds * du);
                dfreqs[n] += g * norm * c * u;
            }
            per_ds / cutoff
        })
        .collect();
    Ok((dd, dfreqs))
}

/// P_l(x) and P_l′(x) for l < count.
fn legendre(x: f64, count: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut p, mut dp) = (vec![0.0; count], vec![0.0; count]);
    for l in 0..count {
        (p[l], dp[l]) = match l {
            0 => (1.0, 0.0),
            1 => (x, 1.0),
            _ => {
                let lf = l as f64;
                // l·P_l = (2l − 1)·x·P_{l−1} − (l − 1)·P_{l−2}; P_l′ = P_{l−2}′ + (2l − 1)·P_{l−1}.
                (
                    ((2.0 * lf - 1.0) * x * p[l - 1] - (lf - 1.0) * p[l - 2]) / lf,
                    dp[l - 2] + (2.0 * lf - 1.0) * p[l - 1],
                )
            }
        };
    }
    (p, dp)
}

/// √((2l + 1)/4π): Y_l0's factor.
fn y_norm(l: usize) -> f64 {
    ((2 * l + 1) as f64 / (4.0 * std::f64::consts::PI)).sqrt()
}

/// Y_l0(x) and dY_l0/dx for l < count.
fn zonal(x: f64, count: usize) -> (Vec<f64>, Vec<f64>) {
    let (p, dp) = legendre(x, count);
    ((0..count).map(|l| y_norm(l) * p[l]).collect(), (0..count).map(|l| y_norm(l) * dp[l]).collect())
}

/// The circular basis: cbf[t, l] = Y_l0(cos φ_t) = √((2l + 1)/4π)·P_l(cos φ_t), l < L, cos φ
/// clamped to [−1, 1]: `[T, L]`.
pub fn cbf(cos_phi: &[f64], l: usize) -> Vec<f64> {
    cos_phi.iter().flat_map(|&x| zonal(x.clamp(-1.0, 1.0), l).0).collect()
}

/// The backward of [`cbf`]: dcos_phi `[T]` given dcbf `[T, L]` (the clamp passes the gradient
/// inside [−1, 1], bounds included, as torch's).
pub fn cbf_backward(cos_phi: &[f64], l: usize, dcbf: &[f64]) -> Result<Vec<f64>> {
    check_host_matrix("dcbf", dcbf, cos_phi.len(), l)?;
    Ok(cos_phi
        .iter()
        .enumerate()
        .map(|(t, &x)| {
            if !(-1.0..=1.0).contains(&x) {
                return 0.0;
            }
            let (_, dy) = zonal(x, l);
            dy.iter().zip(&dcbf[t * l..(t + 1) * l]).map(|(a, b)| a * b).sum()
        })
        .collect())
}

/// The spherical basis `legendre_outer`: sbf[t, l1·L + l2] = Y_l1,0(cos φ_t)·Y_l2,0(cos θ_t),
/// θ the dihedral angle (`angle`, radians), cos φ clamped to [−1, 1]: `[T, L²]`.
pub fn sbf_legendre_outer(cos_phi: &[f64], angle: &[f64], l: usize) -> Result<Vec<f64>> {
    if angle.len() != cos_phi.len() {
        return Err(Error::Shape { arg: "angle", expected: format!("[{}]", cos_phi.len()), got: vec![angle.len()] });
    }
    Ok(cos_phi
        .iter()
        .zip(angle)
        .flat_map(|(&x, &th)| {
            let (a, _) = zonal(x.clamp(-1.0, 1.0), l);
            let (b, _) = zonal(th.cos(), l);
            a.iter().flat_map(|ya| b.iter().map(move |yb| ya * yb)).collect::<Vec<_>>()
        })
        .collect())
}

/// The backward of [`sbf_legendre_outer`]: (dcos_phi `[T]`, dangle `[T]`) given dsbf `[T, L²]`.
pub fn sbf_legendre_outer_backward(
    cos_phi: &[f64],
    angle: &[f64],
    l: usize,
    dsbf: &[f64],
) -> Result<(Vec<f64>, Vec<f64>)> {
    if angle.len() != cos_phi.len() {
        return Err(Error::Shape { arg: "angle", expected: format!("[{}]", cos_phi.len()), got: vec![angle.len()] });
    }
    check_host_matrix("dsbf", dsbf, cos_phi.len(), l * l)?;
    let (mut dcos, mut dangle) = (Vec::with_capacity(angle.len()), Vec::with_capacity(angle.len()));
    for (t, (&x, &th)) in cos_phi.iter().zip(angle).enumerate() {
        let inside = (-1.0..=1.0).contains(&x);
        let (a, da) = zonal(x.clamp(-1.0, 1.0), l);
        let (b, db) = zonal(th.cos(), l);
        let g = &dsbf[t * l * l..(t + 1) * l * l];
        let (mut gx, mut gt) = (0.0, 0.0);
        for l1 in 0..l {
            for l2 in 0..l {
                let w = g[l1 * l + l2];
                gx += w * da[l1] * b[l2];
                gt += w * a[l1] * db[l2] * -th.sin();
            }
        }
        dcos.push(if inside { gx } else { 0.0 });
        dangle.push(gt);
    }
    Ok((dcos, dangle))
}

/// The efficient bilinear interaction's operands in CSR form: the triplets (or quadruplets)
/// sorted by output edge, edge e's being `seg_ptr[e]..seg_ptr[e + 1]`.
#[derive(Clone, Copy, Debug)]
pub struct Bilinear<'a> {
    /// rW `[E, I, S]`: each edge's radial weights (fairchem's basis embedding, read as [I, S]).
    pub rw: &'a [f64],
    /// The spherical basis `[T, S]`.
    pub sph: &'a [f64],
    /// The messages `[T, C]`.
    pub m: &'a [f64],
    /// `[E + 1]`: 0, nondecreasing, ending at T.
    pub seg_ptr: &'a [usize],
    /// W_b `[O, I·C]` (column i·C + c).
    pub wb: &'a [f64],
    /// I.
    pub i: usize,
    /// S.
    pub s: usize,
    /// C.
    pub c: usize,
    /// O.
    pub o: usize,
}

/// Each edge's X = sph[seg]ᵀ·m[seg] `[S, C]` and Y = rW[e]·X `[I, C]`.
struct Intermediates {
    x: Vec<f64>,
    y: Vec<f64>,
}

impl Bilinear<'_> {
    fn edges(&self) -> usize {
        self.seg_ptr.len().saturating_sub(1)
    }

    fn triplets(&self) -> usize {
        self.sph.len().checked_div(self.s).unwrap_or(0)
    }

    fn check(&self) -> Result<()> {
        let (e, t) = (self.edges(), self.triplets());
        if self.seg_ptr.is_empty() || self.seg_ptr[0] != 0 || self.seg_ptr[e] != t {
            return Err(Error::InvalidValue {
                arg: "seg_ptr",
                reason: format!("must run from 0 to the {t} triplets (every triplet in one segment)"),
            });
        }
        if let Some(k) = self.seg_ptr.windows(2).position(|w| w[1] < w[0]) {
            return Err(Error::InvalidValue { arg: "seg_ptr", reason: format!("decreases after edge {k}") });
        }
        check_host_matrix("rw", self.rw, e, self.i * self.s)?;
        check_host_matrix("sph", self.sph, t, self.s)?;
        check_host_matrix("m", self.m, t, self.c)?;
        check_host_matrix("wb", self.wb, self.o, self.i * self.c)
    }

    fn intermediates(&self) -> Intermediates {
        let (e_count, i_, s_, c_) = (self.edges(), self.i, self.s, self.c);
        let mut x = vec![0.0; e_count * s_ * c_];
        let mut y = vec![0.0; e_count * i_ * c_];
        for e in 0..e_count {
            let xe = &mut x[e * s_ * c_..(e + 1) * s_ * c_];
            for t in self.seg_ptr[e]..self.seg_ptr[e + 1] {
                for s in 0..s_ {
                    for c in 0..c_ {
                        xe[s * c_ + c] += self.sph[t * s_ + s] * self.m[t * c_ + c];
                    }
                }
            }
            for i in 0..i_ {
                for c in 0..c_ {
                    y[(e * i_ + i) * c_ + c] = (0..s_).map(|s| self.rw[(e * i_ + i) * s_ + s] * xe[s * c_ + c]).sum();
                }
            }
        }
        Intermediates { x, y }
    }
}

/// out[e] = W_b·vec(rW[e]·X_e), X_e = sph[seg(e)]ᵀ·m[seg(e)]: `[E, O]`.
pub fn efficient_bilinear(b: &Bilinear) -> Result<Vec<f64>> {
    b.check()?;
    let Intermediates { y, .. } = b.intermediates();
    let ic = b.i * b.c;
    Ok((0..b.edges() * b.o)
        .map(|t| {
            let (e, o) = (t / b.o, t % b.o);
            b.wb[o * ic..(o + 1) * ic].iter().zip(&y[e * ic..(e + 1) * ic]).map(|(w, v)| w * v).sum()
        })
        .collect())
}

/// The gradients of [`efficient_bilinear`], shaped as its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct BilinearGrads {
    /// drW `[E, I, S]` = dY·Xᵀ.
    pub drw: Vec<f64>,
    /// dsph `[T, S]` = m·dXᵀ per triplet.
    pub dsph: Vec<f64>,
    /// dm `[T, C]` = sph·dX per triplet.
    pub dm: Vec<f64>,
    /// dW_b `[O, I·C]` = Σ_e dout_e·vec(Y_e)ᵀ.
    pub dwb: Vec<f64>,
}

/// The backward of [`efficient_bilinear`] given dout `[E, O]`: dY = reshape(W_bᵀ·dout),
/// drW = dY·Xᵀ, dX = rWᵀ·dY, then dsph and dm per triplet of the edge's segment.
pub fn efficient_bilinear_backward(b: &Bilinear, dout: &[f64]) -> Result<BilinearGrads> {
    b.check()?;
    let (e_count, i_, s_, c_, o_) = (b.edges(), b.i, b.s, b.c, b.o);
    check_host_matrix("dout", dout, e_count, o_)?;
    let Intermediates { x, y } = b.intermediates();
    let ic = i_ * c_;
    let t_count = b.triplets();
    let mut g = BilinearGrads {
        drw: vec![0.0; e_count * i_ * s_],
        dsph: vec![0.0; t_count * s_],
        dm: vec![0.0; t_count * c_],
        dwb: vec![0.0; o_ * ic],
    };
    for e in 0..e_count {
        let de = &dout[e * o_..(e + 1) * o_];
        let dy: Vec<f64> = (0..ic).map(|k| (0..o_).map(|o| b.wb[o * ic + k] * de[o]).sum()).collect();
        for (o, &d) in de.iter().enumerate() {
            for k in 0..ic {
                g.dwb[o * ic + k] += d * y[e * ic + k];
            }
        }
        let xe = &x[e * s_ * c_..(e + 1) * s_ * c_];
        let mut dx = vec![0.0; s_ * c_];
        for i in 0..i_ {
            for s in 0..s_ {
                let r = b.rw[(e * i_ + i) * s_ + s];
                let mut acc = 0.0;
                for c in 0..c_ {
                    acc += dy[i * c_ + c] * xe[s * c_ + c];
                    dx[s * c_ + c] += r * dy[i * c_ + c];
                }
                g.drw[(e * i_ + i) * s_ + s] = acc;
            }
        }
        for t in b.seg_ptr[e]..b.seg_ptr[e + 1] {
            for s in 0..s_ {
                g.dsph[t * s_ + s] = (0..c_).map(|c| b.m[t * c_ + c] * dx[s * c_ + c]).sum();
            }
            for c in 0..c_ {
                g.dm[t * c_ + c] = (0..s_).map(|s| b.sph[t * s_ + s] * dx[s * c_ + c]).sum();
            }
        }
    }
    Ok(g)
}
