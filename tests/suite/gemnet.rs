//! GemNet-OC's f64 references (issue 28, step 1): every gradient against central differences,
//! the envelope's published polynomial and its zero at the cutoff, the circular basis
//! orthonormal on the sphere, the spherical basis as the outer product of two circular ones, and
//! the efficient bilinear interaction in CSR form equal to fairchem's zero-padded formulation.

use crate::common::{assert_close, central_gradient, dot, rng, uniform};
use kiln::Error;
use kiln::gemnet::cpu::{
    Bilinear, cbf, cbf_backward, efficient_bilinear, efficient_bilinear_backward, envelope, rbf_bessel,
    rbf_bessel_backward, rbf_gaussian, rbf_gaussian_backward, sbf_legendre_outer, sbf_legendre_outer_backward,
};

#[test]
fn envelope_is_the_published_polynomial_and_vanishes_at_the_cutoff() {
    for ds in [0.0, 0.1, 0.5, 0.93] {
        let (u, du) = envelope(ds, 5);
        // REFERENCE §5: 1 − 21d⁵ + 35d⁶ − 15d⁷.
        let want = 1.0 - 21.0 * ds.powi(5) + 35.0 * ds.powi(6) - 15.0 * ds.powi(7);
        assert!((u - want).abs() < 1e-14, "u({ds}) = {u} vs {want}");
        let fd = (envelope(ds + 1e-6, 5).0 - envelope(ds - 1e-6, 5).0) / 2e-6;
        assert!((du - fd).abs() < 1e-8 || ds == 0.0, "u′({ds}) = {du} vs {fd}");
    }
    for p in [3, 5, 6] {
        let (u, du) = envelope(1.0 - 1e-12, p);
        assert!(u.abs() < 1e-9 && du.abs() < 1e-8, "p = {p}: u = {u}, u′ = {du} at the cutoff");
        assert_eq!(envelope(1.0, p), (0.0, 0.0));
        assert_eq!(envelope(1.7, p), (0.0, 0.0));
    }
}

#[test]
fn radial_bases_gradients_match_finite_differences() {
    let mut rng = rng();
    let (cutoff, p) = (6.0, 5);
    // Distances inside and past the cutoff (where the bases and their gradients are 0).
    let mut d = uniform(&mut rng, 6, 0.3, 5.9);
    d.push(6.5);
    let radial = 7;
    let drbf = uniform(&mut rng, d.len() * radial, -1.0, 1.0);
    let g = rbf_gaussian_backward(&d, cutoff, radial, p, &drbf).unwrap();
    let fd: Vec<f64> = (0..d.len())
        .map(|e| {
            central_gradient(&[d[e]], 1e-6, |v| {
                dot(&rbf_gaussian(v, cutoff, radial, p).unwrap(), &drbf[e * radial..(e + 1) * radial])
            })[0]
        })
        .collect();
    assert_close(&g, &fd, 1e-7, "gaussian dd");
    assert_eq!(g[d.len() - 1], 0.0);
    let rbf = rbf_gaussian(&d, cutoff, radial, p).unwrap();
    // Centre k at d_s = k/6: value u(d_s) there.
    let at = rbf_gaussian(&[cutoff * 2.0 / 6.0], cutoff, radial, p).unwrap();
    assert!((at[2] - envelope(2.0 / 6.0, p).0).abs() < 1e-14);
    assert!(rbf[(d.len() - 1) * radial..].iter().all(|&v| v == 0.0));

    let freqs: Vec<f64> = (1..=radial).map(|n| n as f64 * std::f64::consts::PI + 0.01 * n as f64).collect();
    let (dd, dfreqs) = rbf_bessel_backward(&d, &freqs, cutoff, p, &drbf).unwrap();
    let fd_d: Vec<f64> = (0..d.len())
        .map(|e| {
            central_gradient(&[d[e]], 1e-6, |v| {
                dot(&rbf_bessel(v, &freqs, cutoff, p).unwrap(), &drbf[e * radial..(e + 1) * radial])
            })[0]
        })
        .collect();
    assert_close(&dd, &fd_d, 1e-7, "bessel dd");
    let fd_f = central_gradient(&freqs, 1e-6, |f| dot(&rbf_bessel(&d, f, cutoff, p).unwrap(), &drbf));
    assert_close(&dfreqs, &fd_f, 1e-7, "bessel dfreqs (reduced over edges)");
    // The definition at one point: √(2/c³)·sin(f·d_s)/d_s·u(d_s).
    let one = rbf_bessel(&[1.5], &freqs[..1], cutoff, p).unwrap()[0];
    let ds = 1.5 / cutoff;
    let want = (2.0 / cutoff.powi(3)).sqrt() * (freqs[0] * ds).sin() / ds * envelope(ds, p).0;
    assert!((one - want).abs() < 1e-15);
}

#[test]
fn circular_basis_is_orthonormal_on_the_sphere_and_its_gradient_matches() {
    let l = 7;
    // 2π ∫_{−1}^{1} Y_l0·Y_k0 dx = δ_lk: composite Simpson (exact to rounding for these
    // polynomials of degree ≤ 12 at this step).
    let n = 4000;
    let mut gram = vec![0.0; l * l];
    for k in 0..=n {
        let x = -1.0 + 2.0 * k as f64 / n as f64;
        let w = if k == 0 || k == n {
            1.0
        } else if k % 2 == 1 {
            4.0
        } else {
            2.0
        };
        let y = cbf(&[x], l);
        for a in 0..l {
            for b in 0..l {
                gram[a * l + b] += 2.0 * std::f64::consts::PI * w * (2.0 / n as f64) / 3.0 * y[a] * y[b];
            }
        }
    }
    let eye: Vec<f64> = (0..l * l).map(|t| f64::from(u8::from(t / l == t % l))).collect();
    assert_close(&gram, &eye, 1e-10, "∫ Y_l0 Y_k0 dΩ");

    let mut rng = rng();
    let x = uniform(&mut rng, 5, -0.99, 0.99);
    let dcbf = uniform(&mut rng, 5 * l, -1.0, 1.0);
    let g = cbf_backward(&x, l, &dcbf).unwrap();
    let fd = central_gradient(&x, 1e-6, |v| dot(&cbf(v, l), &dcbf));
    assert_close(&g, &fd, 1e-7, "dcos_phi");
    // Clamped outside [−1, 1]: the value at ±1, no gradient.
    assert_eq!(cbf(&[1.5], l), cbf(&[1.0], l));
    assert_eq!(cbf_backward(&[1.5, -2.0], l, &vec![1.0; 2 * l]).unwrap(), vec![0.0, 0.0]);
}

#[test]
fn spherical_basis_is_the_outer_product_and_its_gradients_match() {
    let mut rng = rng();
    let l = 4;
    let (cos_phi, angle) = (uniform(&mut rng, 4, -0.99, 0.99), uniform(&mut rng, 4, 0.05, 3.1));
    let sbf = sbf_legendre_outer(&cos_phi, &angle, l).unwrap();
    for t in 0..4 {
        let (a, b) = (cbf(&cos_phi[t..t + 1], l), cbf(&[angle[t].cos()], l));
        for l1 in 0..l {
            for l2 in 0..l {
                assert!((sbf[t * l * l + l1 * l + l2] - a[l1] * b[l2]).abs() < 1e-15, "column l1·L + l2");
            }
        }
    }
    let dsbf = uniform(&mut rng, 4 * l * l, -1.0, 1.0);
    let (dc, da) = sbf_legendre_outer_backward(&cos_phi, &angle, l, &dsbf).unwrap();
    let fd_c = central_gradient(&cos_phi, 1e-6, |v| dot(&sbf_legendre_outer(v, &angle, l).unwrap(), &dsbf));
    let fd_a = central_gradient(&angle, 1e-6, |v| dot(&sbf_legendre_outer(&cos_phi, v, l).unwrap(), &dsbf));
    assert_close(&dc, &fd_c, 1e-7, "dcos_phi");
    assert_close(&da, &fd_a, 1e-7, "dangle");
}

/// fairchem's formulation: each edge's triplets gathered into a zero-padded [Kmax, ·] block,
/// then the same contractions over the padded axis.
fn padded_bilinear(b: &Bilinear) -> Vec<f64> {
    let e_count = b.seg_ptr.len() - 1;
    let kmax = b.seg_ptr.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let mut out = vec![0.0; e_count * b.o];
    for e in 0..e_count {
        let mut sph = vec![0.0; kmax * b.s];
        let mut m = vec![0.0; kmax * b.c];
        for (k, t) in (b.seg_ptr[e]..b.seg_ptr[e + 1]).enumerate() {
            sph[k * b.s..(k + 1) * b.s].copy_from_slice(&b.sph[t * b.s..(t + 1) * b.s]);
            m[k * b.c..(k + 1) * b.c].copy_from_slice(&b.m[t * b.c..(t + 1) * b.c]);
        }
        for o in 0..b.o {
            let mut acc = 0.0;
            for i in 0..b.i {
                for c in 0..b.c {
                    let mut y = 0.0;
                    for s in 0..b.s {
                        let x: f64 = (0..kmax).map(|k| sph[k * b.s + s] * m[k * b.c + c]).sum();
                        y += b.rw[(e * b.i + i) * b.s + s] * x;
                    }
                    acc += b.wb[o * b.i * b.c + i * b.c + c] * y;
                }
            }
            out[e * b.o + o] = acc;
        }
    }
    out
}

#[test]
fn efficient_bilinear_equals_the_padded_form_and_its_gradients_match() {
    let mut rng = rng();
    let (i, s, c, o) = (2, 3, 2, 3);
    // Four edges with 2, 0 (an empty segment), 3 and 1 triplets.
    let seg_ptr = [0usize, 2, 2, 5, 6];
    let (e, t) = (4, 6);
    let rw = uniform(&mut rng, e * i * s, -1.0, 1.0);
    let sph = uniform(&mut rng, t * s, -1.0, 1.0);
    let m = uniform(&mut rng, t * c, -1.0, 1.0);
    let wb = uniform(&mut rng, o * i * c, -1.0, 1.0);
    let b = Bilinear { rw: &rw, sph: &sph, m: &m, seg_ptr: &seg_ptr, wb: &wb, i, s, c, o };
    let out = efficient_bilinear(&b).unwrap();
    assert_close(&out, &padded_bilinear(&b), 1e-14, "CSR = padded");
    assert!(out[o..2 * o].iter().all(|&v| v == 0.0), "the empty segment's edge");
    let dout = uniform(&mut rng, e * o, -1.0, 1.0);
    let g = efficient_bilinear_backward(&b, &dout).unwrap();
    let loss = |b: &Bilinear| dot(&efficient_bilinear(b).unwrap(), &dout);
    let h = 1e-6;
    assert_close(&g.drw, &central_gradient(&rw, h, |v| loss(&Bilinear { rw: v, ..b })), 1e-8, "drw");
    assert_close(&g.dsph, &central_gradient(&sph, h, |v| loss(&Bilinear { sph: v, ..b })), 1e-8, "dsph");
    assert_close(&g.dm, &central_gradient(&m, h, |v| loss(&Bilinear { m: v, ..b })), 1e-8, "dm");
    assert_close(&g.dwb, &central_gradient(&wb, h, |v| loss(&Bilinear { wb: v, ..b })), 1e-8, "dwb");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let v = [0.5; 64];
    let ok =
        Bilinear { rw: &v[..4], sph: &v[..6], m: &v[..3], seg_ptr: &[0, 1, 2], wb: &v[..1], i: 1, s: 2, c: 1, o: 1 };
    // 2 edges, 3 triplets of S = 2 would be 6 values: sph has 6, so T = 3; seg_ptr must end at 3.
    assert!(matches!(efficient_bilinear(&ok), Err(Error::InvalidValue { arg: "seg_ptr", .. })));
    let ok = Bilinear { seg_ptr: &[0, 1, 3], ..ok };
    efficient_bilinear(&ok).unwrap();
    assert!(matches!(
        efficient_bilinear(&Bilinear { seg_ptr: &[0, 3, 3, 2], ..ok }),
        Err(Error::InvalidValue { arg: "seg_ptr", .. })
    ));
    assert!(matches!(efficient_bilinear(&Bilinear { rw: &v[..5], ..ok }), Err(Error::Shape { arg: "rw", .. })));
    assert!(matches!(efficient_bilinear(&Bilinear { m: &v[..2], ..ok }), Err(Error::Shape { arg: "m", .. })));
    assert!(matches!(efficient_bilinear(&Bilinear { wb: &v[..3], ..ok }), Err(Error::Shape { arg: "wb", .. })));
    assert!(matches!(efficient_bilinear_backward(&ok, &v[..3]), Err(Error::Shape { arg: "dout", .. })));
    assert!(matches!(rbf_gaussian(&[1.0], 0.0, 4, 5), Err(Error::InvalidValue { arg: "cutoff", .. })));
    assert!(matches!(rbf_bessel(&[1.0, 0.0], &[1.0], 5.0, 5), Err(Error::InvalidValue { arg: "d", .. })));
    assert!(matches!(rbf_gaussian_backward(&[1.0], 5.0, 4, 5, &[0.0; 3]), Err(Error::Shape { arg: "drbf", .. })));
    assert!(matches!(cbf_backward(&[0.1], 3, &[0.0; 2]), Err(Error::Shape { arg: "dcbf", .. })));
    assert!(matches!(sbf_legendre_outer(&[0.1], &[0.1, 0.2], 3), Err(Error::Shape { arg: "angle", .. })));
    assert!(matches!(sbf_legendre_outer_backward(&[0.1], &[0.1], 3, &[0.0; 8]), Err(Error::Shape { arg: "dsbf", .. })));
}
