//! The equivariant family's CPU layer: irreps parsing and layout, wigner_3j against
//! REFERENCE.md §5 (values, norm, orthogonality, equivariance), Wigner D matrices (D¹ = R,
//! homomorphism), spherical harmonics (e3nn's table, normalizations, equivariance, finite
//! differences), tensor-product plans (e3nn's instruction lists and path coefficients),
//! the tensor product, the convolution and the Hessian assembly (equivariance for every path,
//! finite differences for every gradient, conv = TP then scatter-sum, exact symmetry), and bad
//! input.

use crate::common::{kernel_devices, rng};
use kiln::equivariant;
use kiln::equivariant::irreps::Sorted;
use kiln::equivariant::wigner::{rotation_matrix, rotation_vector, so3_generators, wigner_d_of_vector};
use kiln::equivariant::{
    Irrep, IrrepNormalization, Irreps, IrrepsError, LMAX, Mode, Parity, PathNormalization, Sh, ShNormalization, TpPlan,
    cpu, sh_dim, wigner_3j, wigner_d,
};
use kiln::{DType, Device, Error, Tensor};
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

pub(crate) fn randn(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

fn random_rotation(rng: &mut StdRng) -> [[f64; 3]; 3] {
    let v = randn(rng, 3);
    rotation_matrix([v[0], v[1], v[2]])
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

fn assert_all_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g, *w, tol), "{what}[{i}]: got {g}, want {w}");
    }
}

fn mat_vec(m: &[f64], v: &[f64]) -> Vec<f64> {
    let n = v.len();
    (0..n).map(|i| (0..n).map(|j| m[i * n + j] * v[j]).sum()).collect()
}

/// D^0(R)..D^4(R).
fn wigner_ds(r: &[[f64; 3]; 3]) -> Vec<Vec<f64>> {
    (0..=LMAX).map(|l| wigner_d(l, r).unwrap()).collect()
}

/// The representation of `irreps` for the rotation with Wigner matrices `ds` (from
/// [`wigner_ds`]) times `inversion` (k = 1: −R): a block-diagonal of p^k D^l(R) per copy,
/// applied to one sample.
fn rotate_with(irreps: &Irreps, ds: &[Vec<f64>], inversion: bool, x: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    let mut at = 0;
    for b in irreps.blocks() {
        let d = &ds[b.ir.l as usize];
        let sign = if inversion && b.ir.p == Parity::Odd { -1.0 } else { 1.0 };
        for _ in 0..b.mul {
            let n = b.ir.dim();
            out.extend(mat_vec(d, &x[at..at + n]).into_iter().map(|v| sign * v));
            at += n;
        }
    }
    out
}

fn rotate(irreps: &Irreps, r: &[[f64; 3]; 3], inversion: bool, x: &[f64]) -> Vec<f64> {
    rotate_with(irreps, &wigner_ds(r), inversion, x)
}

// ---------------------------------------------------------------------------------------
// Irreps

#[test]
fn irreps_parse_print_and_layout() {
    let irreps: Irreps = "128x0e+64x1o+32x2e".parse().unwrap();
    assert_eq!(irreps.to_string(), "128x0e+64x1o+32x2e");
    assert_eq!(irreps.dim(), 128 + 192 + 160);
    assert_eq!(irreps.num_irreps(), 224);
    assert_eq!(irreps.offsets(), vec![0, 128, 320, 480]);
    assert_eq!(irreps.slices(), vec![0..128, 128..320, 320..480]);
    assert_eq!(irreps.lmax(), Some(2));
    // Spaces, implicit multiplicity, the 'y' parity (−1)^l, zero multiplicities, empty.
    let loose: Irreps = " 2x1o + 0e + 1y + 2y + 0 x 3e ".parse().unwrap();
    assert_eq!(loose.to_string(), "2x1o+1x0e+1x1o+1x2e+0x3e");
    assert_eq!(loose.dim(), 6 + 1 + 3 + 5);
    assert_eq!("".parse::<Irreps>().unwrap(), Irreps::default());
    assert_eq!(Irreps::spherical_harmonics(3, Parity::Odd).to_string(), "1x0e+1x1o+1x2e+1x3o");
    assert_eq!(Irreps::spherical_harmonics(2, Parity::Even).to_string(), "1x0e+1x1e+1x2e");
    assert_eq!("3o".parse::<Irrep>().unwrap(), Irrep::new(3, Parity::Odd));
}

#[test]
fn irreps_sort_and_simplify_follow_e3nn() {
    // e3nn's docstring examples.
    let s: Irreps = "1e + 1e + 0e".parse().unwrap();
    assert_eq!(s.simplify().to_string(), "2x1e+1x0e");
    let s: Irreps = "1e + 1e + 0e + 1e".parse().unwrap();
    assert_eq!(s.simplify().to_string(), "2x1e+1x0e+1x1e");
    let s: Irreps = "4x0e + 0x1o + 2x3e".parse().unwrap();
    assert_eq!(s.simplify().to_string(), "4x0e+2x3e");
    assert_eq!(s.remove_zero_multiplicities().to_string(), "4x0e+2x3e");
    let Sorted { irreps, p, inv } = "2o + 1e + 0e + 1e".parse::<Irreps>().unwrap().sort();
    assert_eq!(irreps.to_string(), "1x0e+1x1e+1x1e+1x2o");
    assert_eq!(p, vec![3, 1, 0, 2]);
    assert_eq!(inv, vec![2, 1, 3, 0]);
    // (l, p) order: odd before even at the same l, as e3nn's (l, p) tuples.
    let sorted = "1x0e+1x0o+1x1e+1x1o".parse::<Irreps>().unwrap().sort().irreps;
    assert_eq!(sorted.to_string(), "1x0o+1x0e+1x1o+1x1e");
}

#[test]
fn malformed_irreps_are_typed_errors() {
    for (text, kind) in [
        ("0e+", "empty"),
        ("0e++1o", "empty"),
        ("x0e", "mul"),
        ("-1x0e", "mul"),
        ("ax0e", "mul"),
        ("1.5x0e", "mul"),
        ("1x", "irrep"),
        ("1x0q", "irrep"),
        ("2x3", "irrep"),
        ("2xe", "irrep"),
        ("2x-1e", "irrep"),
        ("2x1.5e", "irrep"),
        ("1x1x1e", "irrep"),
    ] {
        let err = text.parse::<Irreps>().expect_err(text);
        let ok = matches!(
            (&err, kind),
            (IrrepsError::EmptyBlock(_), "empty")
                | (IrrepsError::BadMultiplicity { .. }, "mul")
                | (IrrepsError::BadIrrep { .. }, "irrep")
        );
        assert!(ok, "{text}: {err:?}");
        let err: Error = err.into();
        assert!(matches!(err, Error::InvalidValue { arg: "irreps", .. }), "{err}");
    }
}

// ---------------------------------------------------------------------------------------
// wigner_3j and Wigner D

fn triples() -> Vec<(u32, u32, u32)> {
    let mut out = Vec::new();
    for l1 in 0..=LMAX {
        for l2 in 0..=LMAX {
            for l3 in l1.abs_diff(l2)..=(l1 + l2).min(LMAX) {
                out.push((l1, l2, l3));
            }
        }
    }
    out
}

#[test]
fn wigner_3j_matches_reference_values() {
    let s3 = 3f64.sqrt();
    let s6 = 6f64.sqrt();
    let (s10, s30) = (10f64.sqrt(), 30f64.sqrt());
    let delta = |a: usize, b: usize| if a == b { 1.0 } else { 0.0 };
    let eps = |a: usize, b: usize, c: usize| -> f64 {
        match (a, b, c) {
            (0, 1, 2) | (1, 2, 0) | (2, 0, 1) => 1.0,
            (0, 2, 1) | (2, 1, 0) | (1, 0, 2) => -1.0,
            _ => 0.0,
        }
    };
    let c110 = wigner_3j(1, 1, 0).unwrap();
    let c111 = wigner_3j(1, 1, 1).unwrap();
    let c112 = wigner_3j(1, 1, 2).unwrap();
    for a in 0..3 {
        for b in 0..3 {
            assert!(close(c110.get(a, b, 0), delta(a, b) / s3, 1e-14));
            for m in 0..3 {
                assert!(close(c111.get(a, b, m), eps(a, b, m) / s6, 1e-14), "(1,1,1)[{a},{b},{m}]");
            }
            // (x, y, z) = (0, 1, 2).
            let sym = |p: usize, q: usize| delta(a, p) * delta(b, q) + delta(a, q) * delta(b, p);
            let want = [
                sym(0, 2) / s10,
                sym(0, 1) / s10,
                [-1.0, 2.0, -1.0][a] * delta(a, b) / s30,
                sym(1, 2) / s10,
                [-1.0, 0.0, 1.0][a] * delta(a, b) / s10,
            ];
            for (m, w) in want.iter().enumerate() {
                assert!(close(c112.get(a, b, m), *w, 1e-14), "(1,1,2)[{a},{b},{m}] = {}", c112.get(a, b, m));
            }
        }
    }
    for l in 0..=LMAX {
        let c = wigner_3j(0, l, l).unwrap();
        let n = 2 * l as usize + 1;
        for i in 0..n {
            for k in 0..n {
                assert!(close(c.get(0, i, k), delta(i, k) / (n as f64).sqrt(), 1e-14), "(0,{l},{l})");
            }
        }
    }
}

#[test]
fn wigner_3j_norm_orthogonality_and_completeness() {
    for (l1, l2, l3) in triples() {
        let c = wigner_3j(l1, l2, l3).unwrap();
        let norm: f64 = c.data.iter().map(|v| v * v).sum();
        assert!(close(norm, 1.0, 1e-13), "({l1},{l2},{l3}) norm {norm}");
    }
    // Σ_ij C^{l3}_ijk C^{l3'}_ijk' = δ_{l3 l3'} δ_kk' / (2l3 + 1), and completeness
    // Σ_{l3,k} (2l3+1) C_ijk C_i'j'k = δ_ii' δ_jj' when every l3 ≤ 4 is allowed.
    for l1 in 0..=LMAX {
        for l2 in 0..=LMAX {
            let ls: Vec<u32> = (l1.abs_diff(l2)..=(l1 + l2).min(LMAX)).collect();
            let cs: Vec<_> = ls.iter().map(|&l3| wigner_3j(l1, l2, l3).unwrap()).collect();
            let (d1, d2) = (2 * l1 as usize + 1, 2 * l2 as usize + 1);
            for (a, ca) in cs.iter().enumerate() {
                for (b, cb) in cs.iter().enumerate() {
                    let (na, nb) = (ca.dims()[2], cb.dims()[2]);
                    for k in 0..na {
                        for k2 in 0..nb {
                            let mut s = 0.0;
                            for i in 0..d1 {
                                for j in 0..d2 {
                                    s += ca.get(i, j, k) * cb.get(i, j, k2);
                                }
                            }
                            let want = if a == b && k == k2 { 1.0 / na as f64 } else { 0.0 };
                            assert!((s - want).abs() < 1e-13, "({l1},{l2}) l3 {} vs {}: {s}", ls[a], ls[b]);
                        }
                    }
                }
            }
            if l1 + l2 <= LMAX {
                for i in 0..d1 {
                    for j in 0..d2 {
                        for i2 in 0..d1 {
                            for j2 in 0..d2 {
                                let s: f64 = cs
                                    .iter()
                                    .map(|c| {
                                        let n = c.dims()[2];
                                        (0..n).map(|k| n as f64 * c.get(i, j, k) * c.get(i2, j2, k)).sum::<f64>()
                                    })
                                    .sum();
                                let want = if i == i2 && j == j2 { 1.0 } else { 0.0 };
                                assert!((s - want).abs() < 1e-13, "completeness ({l1},{l2})");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn wigner_3j_is_invariant_under_rotations() {
    let mut rng = rng();
    for _ in 0..3 {
        let r = random_rotation(&mut rng);
        for (l1, l2, l3) in triples() {
            let c = wigner_3j(l1, l2, l3).unwrap();
            let [n1, n2, n3] = c.dims();
            let (d1, d2, d3) = (wigner_d(l1, &r).unwrap(), wigner_d(l2, &r).unwrap(), wigner_d(l3, &r).unwrap());
            // C'_ijk = Σ D1_ia D2_jb D3_kc C_abc must equal C.
            let mut worst: f64 = 0.0;
            for i in 0..n1 {
                for j in 0..n2 {
                    for k in 0..n3 {
                        let mut s = 0.0;
                        for (a, b, cc, v) in c.nonzeros() {
                            s += d1[i * n1 + a] * d2[j * n2 + b] * d3[k * n3 + cc] * v;
                        }
                        worst = worst.max((s - c.get(i, j, k)).abs());
                    }
                }
            }
            assert!(worst < 1e-12, "({l1},{l2},{l3}): {worst}");
        }
    }
}

#[test]
fn wigner_3j_rejects_bad_degrees() {
    assert!(matches!(wigner_3j(5, 1, 4), Err(Error::InvalidValue { arg: "l1", .. })));
    assert!(matches!(wigner_3j(1, 5, 4), Err(Error::InvalidValue { arg: "l2", .. })));
    assert!(matches!(wigner_3j(2, 2, 5), Err(Error::InvalidValue { arg: "l3", .. })));
    assert!(matches!(wigner_3j(1, 1, 3), Err(Error::InvalidValue { arg: "l3", .. })));
    assert!(matches!(wigner_3j(4, 0, 3), Err(Error::InvalidValue { arg: "l3", .. })));
    assert!(wigner_d(5, &rotation_matrix([0.1, 0.2, 0.3])).is_err());
}

#[test]
fn wigner_d_is_a_representation_with_d1_equal_r() {
    let mut rng = rng();
    // The generators of (x, y, z): G¹ = L with (L_a)_bc = −ε_abc.
    let g = so3_generators(1).unwrap();
    let l_x = [0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0];
    let l_y = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0];
    let l_z = [0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert_all_close(&g[0], &l_x, 1e-14, "G_x");
    assert_all_close(&g[1], &l_y, 1e-14, "G_y");
    assert_all_close(&g[2], &l_z, 1e-14, "G_z");
    for _ in 0..5 {
        let (r1, r2) = (random_rotation(&mut rng), random_rotation(&mut rng));
        let flat: Vec<f64> = r1.iter().flatten().copied().collect();
        assert_all_close(&wigner_d(1, &r1).unwrap(), &flat, 1e-12, "D¹(R) = R");
        // rotation_vector inverts rotation_matrix.
        let back = rotation_matrix(rotation_vector(&r1));
        assert_all_close(&back.iter().flatten().copied().collect::<Vec<_>>(), &flat, 1e-12, "log/exp");
        let mut r12 = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                r12[i][j] = (0..3).map(|k| r1[i][k] * r2[k][j]).sum();
            }
        }
        for l in 0..=LMAX {
            let n = 2 * l as usize + 1;
            let (d1, d2, d12) = (wigner_d(l, &r1).unwrap(), wigner_d(l, &r2).unwrap(), wigner_d(l, &r12).unwrap());
            let mut prod = vec![0.0; n * n];
            let mut gram = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    prod[i * n + j] = (0..n).map(|k| d1[i * n + k] * d2[k * n + j]).sum();
                    gram[i * n + j] = (0..n).map(|k| d1[i * n + k] * d1[j * n + k]).sum();
                }
            }
            assert_all_close(&prod, &d12, 1e-11, &format!("D^{l}(R1 R2)"));
            let eye: Vec<f64> = (0..n * n).map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 }).collect();
            assert_all_close(&gram, &eye, 1e-12, &format!("D^{l} Dᵀ"));
            assert_all_close(&wigner_d_of_vector(l, [0.0; 3]).unwrap(), &eye, 0.0, "D(I)");
        }
    }
    // Near a half turn the quaternion path stays accurate.
    let r = rotation_matrix([std::f64::consts::PI - 1e-9, 0.0, 0.0]);
    let flat: Vec<f64> = r.iter().flatten().copied().collect();
    assert_all_close(&wigner_d(1, &r).unwrap(), &flat, 1e-9, "half turn");
}

// ---------------------------------------------------------------------------------------
// Spherical harmonics

fn sh(lmax: u32, normalization: ShNormalization, normalize: bool) -> Sh {
    Sh { lmax, normalization, normalize }
}

#[test]
fn spherical_harmonics_match_e3nn_table() {
    let mut rng = rng();
    let (s3, s5, s15) = (3f64.sqrt(), 5f64.sqrt(), 15f64.sqrt());
    for _ in 0..20 {
        let v = randn(&mut rng, 3);
        let (x, y, z) = (v[0], v[1], v[2]);
        let got = sh(4, ShNormalization::Component, false).forward(&v).unwrap();
        // REFERENCE §5: l = 0, 1, 2 (y polar).
        let want = [
            1.0,
            s3 * x,
            s3 * y,
            s3 * z,
            s15 * x * z,
            s15 * x * y,
            s5 * (y * y - (x * x + z * z) / 2.0),
            s15 * y * z,
            s15 / 2.0 * (z * z - x * x),
        ];
        assert_all_close(&got[..9], &want, 1e-13, "Y^0..Y^2");
        // l = 3, 4: the standard real table (Wikipedia, as e3nn's docs say) with (x, y, z)
        // of that table = (z, x, y) here, times √(4π) for 'component'.
        let r2 = x * x + y * y + z * z;
        let y3_m3 = 70f64.sqrt() / 4.0 * (3.0 * x * z * z - x * x * x);
        let y3_0 = 7f64.sqrt() / 2.0 * y * (2.0 * y * y - 3.0 * (x * x + z * z));
        let y3_p3 = 70f64.sqrt() / 4.0 * (z * z * z - 3.0 * x * x * z);
        let y4_m4 = 1.5 * 35f64.sqrt() * x * z * (z * z - x * x);
        let y4_0 = 3.0 / 8.0 * (35.0 * y.powi(4) - 30.0 * y * y * r2 + 3.0 * r2 * r2);
        let y4_p4 = 0.375 * 35f64.sqrt() * (z.powi(4) - 6.0 * x * x * z * z + x.powi(4));
        let got3 = &got[9..16];
        let got4 = &got[16..25];
        assert!(close(got3[0], y3_m3, 1e-12), "Y3_-3 {} vs {y3_m3}", got3[0]);
        assert!(close(got3[3], y3_0, 1e-12), "Y3_0 {} vs {y3_0}", got3[3]);
        assert!(close(got3[6], y3_p3, 1e-12), "Y3_3 {} vs {y3_p3}", got3[6]);
        assert!(close(got4[0], y4_m4, 1e-12), "Y4_-4 {} vs {y4_m4}", got4[0]);
        assert!(close(got4[4], y4_0, 1e-12), "Y4_0 {} vs {y4_0}", got4[4]);
        assert!(close(got4[8], y4_p4, 1e-12), "Y4_4 {} vs {y4_p4}", got4[8]);
    }
}

#[test]
fn spherical_harmonics_normalizations() {
    let mut rng = rng();
    let v = randn(&mut rng, 3 * 7);
    let comp = sh(4, ShNormalization::Component, true).forward(&v).unwrap();
    let norm = sh(4, ShNormalization::Norm, true).forward(&v).unwrap();
    let integral = sh(4, ShNormalization::Integral, true).forward(&v).unwrap();
    let raw = sh(4, ShNormalization::Component, false).forward(&v).unwrap();
    let four_pi = 4.0 * std::f64::consts::PI;
    for n in 0..7 {
        let r: f64 = v[3 * n..3 * n + 3].iter().map(|a| a * a).sum::<f64>().sqrt();
        for l in 0..=4usize {
            let block = |t: &[f64]| -> Vec<f64> { t[n * 25 + l * l..n * 25 + (l + 1) * (l + 1)].to_vec() };
            let sq = |t: &[f64]| block(t).iter().map(|a| a * a).sum::<f64>();
            let k = (2 * l + 1) as f64;
            assert!(close(sq(&comp), k, 1e-12), "component l={l}");
            assert!(close(sq(&norm), 1.0, 1e-12), "norm l={l}");
            assert!(close(sq(&integral), k / four_pi, 1e-12), "integral l={l}");
            // Unnormalized input: Y^l is homogeneous of degree l.
            assert!(close(sq(&raw), k * r.powi(2 * l as i32), 1e-11), "homogeneous l={l}");
        }
    }
    // The zero vector normalizes to 0: Y^0 = 1, the rest 0, and a zero gradient.
    let zero = sh(2, ShNormalization::Component, true);
    assert_eq!(zero.forward(&[0.0; 3]).unwrap(), [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(zero.backward(&[0.0; 3], &[1.0; 9]).unwrap(), [0.0; 3]);
}

#[test]
fn spherical_harmonics_are_equivariant() {
    let mut rng = rng();
    let irreps = Irreps::spherical_harmonics(4, Parity::Odd);
    for normalize in [false, true] {
        for _ in 0..5 {
            let r = random_rotation(&mut rng);
            let v = randn(&mut rng, 3);
            let rv: Vec<f64> = (0..3).map(|i| (0..3).map(|j| r[i][j] * v[j]).sum()).collect();
            let s = sh(4, ShNormalization::Integral, normalize);
            let y = s.forward(&v).unwrap();
            assert_all_close(&s.forward(&rv).unwrap(), &rotate(&irreps, &r, false, &y), 1e-11, "Y(Rx) = D Y(x)");
            // Parity: Y^l(−x) = (−1)^l Y^l(x), the parity of 1x0e+1x1o+1x2e+…
            let neg: Vec<f64> = v.iter().map(|a| -a).collect();
            let eye = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
            assert_all_close(&s.forward(&neg).unwrap(), &rotate(&irreps, &eye, true, &y), 1e-13, "parity");
        }
    }
}

#[test]
fn spherical_harmonics_gradient_matches_finite_differences() {
    let mut rng = rng();
    for normalization in [ShNormalization::Component, ShNormalization::Norm, ShNormalization::Integral] {
        for normalize in [false, true] {
            let s = sh(4, normalization, normalize);
            let n = 4;
            let v = randn(&mut rng, 3 * n);
            let dsh = randn(&mut rng, n * sh_dim(4));
            let dx = s.backward(&v, &dsh).unwrap();
            let loss = |v: &[f64]| -> f64 { s.forward(v).unwrap().iter().zip(&dsh).map(|(a, b)| a * b).sum() };
            let h = 1e-5;
            for i in 0..v.len() {
                let (mut p, mut m) = (v.clone(), v.clone());
                p[i] += h;
                m[i] -= h;
                let fd = (loss(&p) - loss(&m)) / (2.0 * h);
                assert!(
                    (fd - dx[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{normalization} {normalize} [{i}]: {fd} vs {}",
                    dx[i]
                );
            }
        }
    }
}

#[test]
fn spherical_harmonics_bad_input() {
    let s = sh(5, ShNormalization::Component, true);
    assert!(matches!(s.forward(&[1.0, 0.0, 0.0]), Err(Error::InvalidValue { arg: "lmax", .. })));
    let s = sh(2, ShNormalization::Component, true);
    assert!(matches!(s.forward(&[1.0, 0.0]), Err(Error::Shape { arg: "vec", .. })));
    assert!(matches!(s.backward(&[1.0, 0.0, 0.0], &[0.0; 8]), Err(Error::Shape { arg: "dsh", .. })));
    assert!(matches!("unit".parse::<ShNormalization>(), Err(Error::InvalidValue { arg: "normalization", .. })));
}

// ---------------------------------------------------------------------------------------
// Tensor-product plans

fn ir(s: &str) -> Irreps {
    s.parse().unwrap()
}

#[test]
fn plans_follow_e3nn_instruction_lists_and_coefficients() {
    // uvu: every allowed (i1, i2, i_out) with m_out = m1, in (i1, i2, i_out) order.
    let plan = TpPlan::channelwise(&ir("2x0e+2x1o"), &ir("3x0e+1o"), &ir("2x0e+2x1o+5x1o"), PathNormalization::Element)
        .unwrap();
    let paths: Vec<_> = plan.instructions.iter().map(|i| (i.i1, i.i2, i.i_out)).collect();
    assert_eq!(paths, vec![(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]);
    // 'element': output 0e gets (0,0,0) with n = m2 = 3 and (1,1,0) with n = 1: X = 4.
    let coefs: Vec<f64> = plan.instructions.iter().map(|i| i.coef).collect();
    let want = [(1.0f64 / 4.0).sqrt(), (3.0f64 / 4.0).sqrt(), (3.0f64 / 4.0).sqrt(), (1.0f64 / 4.0).sqrt()];
    assert_all_close(&coefs, &want, 1e-15, "element coefficients");
    let weights: Vec<(usize, usize)> = plan.instructions.iter().map(|i| (i.weight_offset, i.weight_numel)).collect();
    assert_eq!(weights, vec![(0, 6), (6, 2), (8, 6), (14, 2)]);
    assert_eq!(plan.weight_numel, 16);
    // 'path': X = n · (paths into that output) = n · 2.
    let plan =
        TpPlan::channelwise(&ir("2x0e+2x1o"), &ir("3x0e+1o"), &ir("2x0e+2x1o+5x1o"), PathNormalization::Path).unwrap();
    let coefs: Vec<f64> = plan.instructions.iter().map(|i| i.coef).collect();
    let want = [(1.0f64 / 6.0).sqrt(), (3.0f64 / 2.0).sqrt(), (3.0f64 / 6.0).sqrt(), (1.0f64 / 2.0).sqrt()];
    assert_all_close(&coefs, &want, 1e-15, "path coefficients");

    // uvw: FullyConnectedTensorProduct simplifies first, then every allowed path.
    let plan =
        TpPlan::fully_connected(&ir("1x0e+1x0e+1x1o"), &ir("0e+1o"), &ir("3x0e+1x1o+2x1e"), PathNormalization::Element)
            .unwrap();
    assert_eq!(plan.irreps_in1.to_string(), "2x0e+1x1o");
    let paths: Vec<_> = plan.instructions.iter().map(|i| (i.i1, i.i2, i.i_out, i.mode)).collect();
    assert_eq!(
        paths,
        vec![
            (0, 0, 0, Mode::Uvw),
            (0, 1, 1, Mode::Uvw),
            (1, 0, 1, Mode::Uvw),
            (1, 1, 0, Mode::Uvw),
            (1, 1, 2, Mode::Uvw)
        ]
    );
    // 0e out: X = 2·1 + 1·1 = 3; 1o out: X = 2 + 1 = 3; 1e out: X = 1.
    let coefs: Vec<f64> = plan.instructions.iter().map(|i| i.coef).collect();
    let want = [(1.0f64 / 3.0).sqrt(), 1.0, 1.0, (1.0f64 / 3.0).sqrt(), 3f64.sqrt()];
    assert_all_close(&coefs, &want, 1e-15, "uvw coefficients");
    // m1·m2·m_out per path.
    assert_eq!(plan.weight_numel, 6 + 2 + 1 + 3 + 2);

    // MACE-large (REFERENCE §5) plans and counts its FLOPs.
    let plan = TpPlan::channelwise(
        &ir("128x0e+128x1o+128x2e"),
        &ir("0e+1o+2e+3o"),
        &ir("128x0e+128x1o+128x2e+128x3o"),
        PathNormalization::Element,
    )
    .unwrap();
    // 0e: 4 paths, 1o: 6, 2e: 7 (parity and l ≤ 3 of the output prune the rest).
    assert_eq!(plan.instructions.len(), 17);
    assert!(plan.flops_forward() > 0);
}

#[test]
fn plans_reject_bad_instructions() {
    let (a, b) = (ir("2x0e+2x1o"), ir("0e+1o"));
    let el = PathNormalization::Element;
    let comp = IrrepNormalization::Component;
    let bad = |r: kiln::Result<TpPlan>, arg: &str| match r {
        Err(Error::InvalidValue { arg: got, .. }) => assert_eq!(got, arg),
        other => panic!("expected an error on {arg}, got {other:?}"),
    };
    // Out of range, selection rules (l and parity), uvu with m_out ≠ m1, l > 4.
    bad(TpPlan::new(&a, &b, &ir("2x0e"), &[(2, 0, 0, Mode::Uvw)], el, comp), "instructions");
    bad(TpPlan::new(&a, &b, &ir("2x2e"), &[(0, 0, 0, Mode::Uvw)], el, comp), "instructions");
    bad(TpPlan::new(&a, &b, &ir("2x1e"), &[(1, 0, 0, Mode::Uvw)], el, comp), "instructions");
    bad(TpPlan::new(&a, &b, &ir("3x0e"), &[(0, 0, 0, Mode::Uvu)], el, comp), "instructions");
    bad(TpPlan::fully_connected(&ir("1x5e"), &b, &ir("1x5e"), el), "irreps_in1");
    bad(TpPlan::fully_connected(&a, &ir("0e+5o"), &a, el), "irreps_in2");
    bad(TpPlan::channelwise(&a, &b, &ir("2x0e+2x7o"), el), "irreps_out");
    assert!(matches!("uvv".parse::<Mode>(), Err(Error::InvalidValue { arg: "mode", .. })));
}

// ---------------------------------------------------------------------------------------
// Tensor product, convolution

#[test]
fn tensor_product_matches_closed_forms() {
    // 1o ⊗ 1o, uvw with w = 1: → 0e is x·y/√3, → 1e is (x × y)/√2 (coef √3 · ε/√6).
    let plan = TpPlan::fully_connected(&ir("1o"), &ir("1o"), &ir("0e+1e"), PathNormalization::Element).unwrap();
    let (x, y) = ([0.3, -1.2, 0.7], [2.0, 0.5, -0.4]);
    let out = cpu::tp_forward(&plan, &x, &y, &[1.0, 1.0], 1).unwrap();
    let dot = x[0] * y[0] + x[1] * y[1] + x[2] * y[2];
    let cross = [x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0]];
    let s2 = 2f64.sqrt();
    let want = [dot / 3f64.sqrt(), cross[0] / s2, cross[1] / s2, cross[2] / s2];
    assert_all_close(&out, &want, 1e-14, "1o ⊗ 1o");
}

/// Every irrep with l ≤ 4, both parities: x1 and x2 reach every allowed path.
fn all_irreps(mul: usize) -> Irreps {
    let s: Vec<String> = (0..=LMAX).flat_map(|l| [format!("{mul}x{l}e"), format!("{mul}x{l}o")]).collect();
    s.join("+").parse().unwrap()
}

#[test]
fn tensor_product_is_equivariant_for_every_path() {
    let mut rng = rng();
    let (a, b, c) = (all_irreps(2), all_irreps(1), all_irreps(2));
    let ds = wigner_ds(&random_rotation(&mut rng));
    let mut checked = 0;
    for mode in [Mode::Uvu, Mode::Uvw] {
        let full = TpPlan::new(&a, &b, &c, &[], PathNormalization::Element, IrrepNormalization::Component).unwrap();
        assert_eq!(full.weight_numel, 0);
        for (i1, m1) in a.blocks().iter().enumerate() {
            for (i2, m2) in b.blocks().iter().enumerate() {
                for (io, mo) in c.blocks().iter().enumerate() {
                    if !m1.ir.couples_to(m2.ir, mo.ir) {
                        continue;
                    }
                    let plan = TpPlan::new(
                        &a,
                        &b,
                        &c,
                        &[(i1, i2, io, mode)],
                        PathNormalization::Element,
                        IrrepNormalization::Component,
                    )
                    .unwrap();
                    let x1 = randn(&mut rng, a.dim());
                    let x2 = randn(&mut rng, b.dim());
                    let w = randn(&mut rng, plan.weight_numel);
                    let out = cpu::tp_forward(&plan, &x1, &x2, &w, 1).unwrap();
                    assert!(out.iter().any(|v| *v != 0.0), "path ({i1},{i2},{io}) produces nothing");
                    for inversion in [false, true] {
                        let rx1 = rotate_with(&a, &ds, inversion, &x1);
                        let rx2 = rotate_with(&b, &ds, inversion, &x2);
                        let got = cpu::tp_forward(&plan, &rx1, &rx2, &w, 1).unwrap();
                        let want = rotate_with(&c, &ds, inversion, &out);
                        for (g, w) in got.iter().zip(&want) {
                            assert!(
                                (g - w).abs() < 1e-11 * (1.0 + w.abs()),
                                "{mode} ({}, {}, {}) inv {inversion}",
                                m1.ir,
                                m2.ir,
                                mo.ir
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    // Every (l1, l2, l3 ≤ 4) triple in the triangle, each with its one allowed parity per
    // (p1, p2): 4 parity pairs, two modes.
    let triangle = (0..=LMAX)
        .flat_map(|l1| (0..=LMAX).map(move |l2| (l1, l2)))
        .map(|(l1, l2)| (l1 + l2).min(LMAX) + 1 - l1.abs_diff(l2))
        .sum::<u32>();
    assert_eq!(checked, 2 * 4 * triangle as usize);
}

/// Σ dout·f(x) by central differences in every coordinate of `x` (f is multilinear, so this is
/// exact up to rounding).
fn fd_grad(x: &[f64], f: impl Fn(&[f64]) -> Vec<f64>, dout: &[f64]) -> Vec<f64> {
    let h = 1e-3;
    (0..x.len())
        .map(|i| {
            let (mut p, mut m) = (x.to_vec(), x.to_vec());
            p[i] += h;
            m[i] -= h;
            let (fp, fm) = (f(&p), f(&m));
            fp.iter().zip(&fm).zip(dout).map(|((a, b), d)| (a - b) * d).sum::<f64>() / (2.0 * h)
        })
        .collect()
}

pub(crate) fn fd_plans() -> Vec<TpPlan> {
    let el = PathNormalization::Element;
    vec![
        TpPlan::channelwise(&ir("3x0e+2x1o+2x2e"), &ir("0e+1o+2e+3o"), &ir("3x0e+2x1o+2x2e+2x3o+2x1e"), el).unwrap(),
        TpPlan::fully_connected(
            &ir("2x0e+2x1o+1x2e"),
            &ir("2x0e+1o+4e"),
            &ir("3x0e+2x1o+2x1e+1x3o+1x4e"),
            PathNormalization::Path,
        )
        .unwrap(),
    ]
}

#[test]
fn tensor_product_gradients_match_finite_differences() {
    let mut rng = rng();
    for plan in fd_plans() {
        for shared in [true, false] {
            let batch = 3;
            let (d1, d2, dk) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim());
            let x1 = randn(&mut rng, batch * d1);
            let x2 = randn(&mut rng, batch * d2);
            let w = randn(&mut rng, if shared { plan.weight_numel } else { batch * plan.weight_numel });
            let dout = randn(&mut rng, batch * dk);
            let g = cpu::tp_backward(&plan, &x1, &x2, &w, &dout, batch).unwrap();
            let f1 = fd_grad(&x1, |v| cpu::tp_forward(&plan, v, &x2, &w, batch).unwrap(), &dout);
            let f2 = fd_grad(&x2, |v| cpu::tp_forward(&plan, &x1, v, &w, batch).unwrap(), &dout);
            let fw = fd_grad(&w, |v| cpu::tp_forward(&plan, &x1, &x2, v, batch).unwrap(), &dout);
            assert_all_close(&g.dx1, &f1, 1e-8, "dx1");
            assert_all_close(&g.dx2, &f2, 1e-8, "dx2");
            assert_all_close(&g.dw, &fw, 1e-8, "dw");
        }
    }
}

fn random_graph(rng: &mut StdRng, nodes: usize, edges: usize) -> (Vec<i64>, Vec<i64>) {
    let src = (0..edges).map(|_| rng.random_range(0..nodes as i64)).collect();
    let dst = (0..edges).map(|_| rng.random_range(0..nodes as i64)).collect();
    (src, dst)
}

#[test]
fn convolution_is_tensor_product_then_scatter_sum() {
    let mut rng = rng();
    for plan in fd_plans() {
        let (nodes, edges) = (5, 13);
        let (d1, d2, dk) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim());
        let (src, dst) = random_graph(&mut rng, nodes, edges);
        let x = randn(&mut rng, nodes * d1);
        let y = randn(&mut rng, edges * d2);
        let w = randn(&mut rng, edges * plan.weight_numel);
        let out = cpu::conv_forward(&plan, &x, &y, &w, &src, &dst).unwrap();
        // Gather, batched TP, scatter-sum.
        let gathered: Vec<f64> = src.iter().flat_map(|&s| x[s as usize * d1..(s as usize + 1) * d1].to_vec()).collect();
        let msgs = cpu::tp_forward(&plan, &gathered, &y, &w, edges).unwrap();
        let mut want = vec![0.0; nodes * dk];
        for (e, &d) in dst.iter().enumerate() {
            for k in 0..dk {
                want[d as usize * dk + k] += msgs[e * dk + k];
            }
        }
        assert_all_close(&out, &want, 1e-13, "conv");
        // Same for the backward: dx is the scatter (by src) of the batched TP's dx1.
        let dout = randn(&mut rng, nodes * dk);
        let g = cpu::conv_backward(&plan, &x, &y, &w, &src, &dst, &dout).unwrap();
        let dmsg: Vec<f64> = dst.iter().flat_map(|&d| dout[d as usize * dk..(d as usize + 1) * dk].to_vec()).collect();
        let gt = cpu::tp_backward(&plan, &gathered, &y, &w, &dmsg, edges).unwrap();
        let mut dx = vec![0.0; nodes * d1];
        for (e, &s) in src.iter().enumerate() {
            for k in 0..d1 {
                dx[s as usize * d1 + k] += gt.dx1[e * d1 + k];
            }
        }
        assert_all_close(&g.dx1, &dx, 1e-12, "conv dx");
        assert_all_close(&g.dx2, &gt.dx2, 1e-13, "conv dy");
        assert_all_close(&g.dw, &gt.dw, 1e-13, "conv dw");
    }
}

#[test]
fn convolution_gradients_match_finite_differences() {
    let mut rng = rng();
    for plan in fd_plans() {
        for shared in [true, false] {
            let (nodes, edges) = (4, 9);
            let (src, dst) = random_graph(&mut rng, nodes, edges);
            let x = randn(&mut rng, nodes * plan.irreps_in1.dim());
            let y = randn(&mut rng, edges * plan.irreps_in2.dim());
            let w = randn(&mut rng, if shared { plan.weight_numel } else { edges * plan.weight_numel });
            let dout = randn(&mut rng, nodes * plan.irreps_out.dim());
            let g = cpu::conv_backward(&plan, &x, &y, &w, &src, &dst, &dout).unwrap();
            let conv = |x: &[f64], y: &[f64], w: &[f64]| cpu::conv_forward(&plan, x, y, w, &src, &dst).unwrap();
            assert_all_close(&g.dx1, &fd_grad(&x, |v| conv(v, &y, &w), &dout), 1e-8, "dx");
            assert_all_close(&g.dx2, &fd_grad(&y, |v| conv(&x, v, &w), &dout), 1e-8, "dy");
            assert_all_close(&g.dw, &fd_grad(&w, |v| conv(&x, &y, v), &dout), 1e-8, "dw");
        }
    }
}

/// The double backward against finite differences of L = ⟨gdx, dx⟩ + ⟨gdy, dy⟩ + ⟨gdw, dw⟩,
/// (dx, dy, dw) the reference backward (L is linear in each of x, y, w and dout, so central
/// differences are exact up to rounding): the batched product and the convolution, shared and
/// per-edge weights, every subset of the upstream gradients (an absent one is zero).
#[test]
fn double_backward_matches_finite_differences_of_the_backward() {
    let mut rng = rng();
    for plan in fd_plans() {
        for shared in [true, false] {
            for graph in [false, true] {
                let (nodes, edges) = if graph { (4, 9) } else { (3, 3) };
                let (src, dst) =
                    if graph { random_graph(&mut rng, nodes, edges) } else { ((0..3).collect(), (0..3).collect()) };
                let x = randn(&mut rng, nodes * plan.irreps_in1.dim());
                let y = randn(&mut rng, edges * plan.irreps_in2.dim());
                let w = randn(&mut rng, if shared { plan.weight_numel } else { edges * plan.weight_numel });
                let dout = randn(&mut rng, nodes * plan.irreps_out.dim());
                let (gdx, gdy, gdw) = (randn(&mut rng, x.len()), randn(&mut rng, y.len()), randn(&mut rng, w.len()));
                // The backward as one vector (dx, dy, dw), and the upstream gradients likewise.
                let bwd = |x: &[f64], y: &[f64], w: &[f64], dout: &[f64]| -> Vec<f64> {
                    let g = if graph {
                        cpu::conv_backward(&plan, x, y, w, &src, &dst, dout).unwrap()
                    } else {
                        cpu::tp_backward(&plan, x, y, w, dout, nodes).unwrap()
                    };
                    [g.dx1, g.dx2, g.dw].concat()
                };
                for mask in 0..8u32 {
                    let given = |bit: u32, v: &[f64]| if mask & bit != 0 { v.to_vec() } else { vec![0.0; v.len()] };
                    let weights = [given(1, &gdx), given(2, &gdy), given(4, &gdw)].concat();
                    let up = cpu::Upstream {
                        gdx1: (mask & 1 != 0).then_some(&gdx[..]),
                        gdx2: (mask & 2 != 0).then_some(&gdy[..]),
                        gdw: (mask & 4 != 0).then_some(&gdw[..]),
                    };
                    let g = if graph {
                        cpu::conv_double_backward(&plan, &x, &y, &w, &src, &dst, &dout, up).unwrap()
                    } else {
                        cpu::tp_double_backward(&plan, &x, &y, &w, &dout, nodes, up).unwrap()
                    };
                    let what = format!("shared={shared} graph={graph} upstream mask {mask}");
                    let fx = fd_grad(&x, |v| bwd(v, &y, &w, &dout), &weights);
                    let fy = fd_grad(&y, |v| bwd(&x, v, &w, &dout), &weights);
                    let fw = fd_grad(&w, |v| bwd(&x, &y, v, &dout), &weights);
                    let fo = fd_grad(&dout, |v| bwd(&x, &y, &w, v), &weights);
                    assert_all_close(&g.gx1, &fx, 1e-8, &format!("gx {what}"));
                    assert_all_close(&g.gx2, &fy, 1e-8, &format!("gy {what}"));
                    assert_all_close(&g.gw, &fw, 1e-8, &format!("gw {what}"));
                    assert_all_close(&g.gdout, &fo, 1e-8, &format!("gdout {what}"));
                    if mask == 0 {
                        assert!(g.gx1.iter().chain(&g.gx2).chain(&g.gw).chain(&g.gdout).all(|&v| v == 0.0));
                    } else {
                        assert!(g.gdout.iter().any(|&v| v != 0.0), "{what}: a nonzero gdout");
                    }
                }
            }
        }
    }
}

#[test]
fn double_backward_bad_input() {
    let plan = fd_plans().remove(0);
    let (d1, d2, dk, nw) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
    let (x, y, w, dout) = (vec![0.1; 2 * d1], vec![0.2; 2 * d2], vec![0.3; nw], vec![0.4; 2 * dk]);
    let up = |gdx1, gdx2, gdw| cpu::Upstream { gdx1, gdx2, gdw };
    let short = vec![0.5; d1];
    let e = cpu::tp_double_backward(&plan, &x, &y, &w, &dout, 2, up(Some(&short), None, None));
    assert!(matches!(e, Err(Error::Shape { arg: "gdx1", .. })), "{e:?}");
    let e = cpu::tp_double_backward(&plan, &x, &y, &w, &dout, 2, up(None, Some(&short), None));
    assert!(matches!(e, Err(Error::Shape { arg: "gdx2", .. })), "{e:?}");
    // Per-sample upstream weights for shared weights.
    let per_sample = vec![0.5; 2 * nw];
    let e = cpu::tp_double_backward(&plan, &x, &y, &w, &dout, 2, up(None, None, Some(&per_sample)));
    assert!(matches!(e, Err(Error::Shape { arg: "gdw", .. })), "{e:?}");
    let e = cpu::tp_double_backward(&plan, &x, &y, &w, &dout[dk..], 2, up(None, None, None));
    assert!(matches!(e, Err(Error::Shape { arg: "dout", .. })), "{e:?}");
    let e = cpu::conv_double_backward(&plan, &x, &y, &w, &[0, 1], &[1, 2], &dout, up(None, None, None));
    assert!(matches!(e, Err(Error::InvalidValue { arg: "dst", .. })), "{e:?}");
    let e = cpu::conv_double_backward(&plan, &x, &y, &w, &[0, 1], &[1, 1], &dout[1..], up(None, None, None));
    assert!(matches!(e, Err(Error::Shape { arg: "dout", .. })), "{e:?}");
}

#[test]
fn tensor_product_and_convolution_bad_input() {
    let plan = fd_plans().remove(0);
    let (d1, d2, dk, nw) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
    let (x1, x2, w) = (vec![0.1; 2 * d1], vec![0.2; 2 * d2], vec![0.3; nw]);
    // Data that does not match the irreps.
    assert!(matches!(cpu::tp_forward(&plan, &x1[1..], &x2, &w, 2), Err(Error::Shape { arg: "x1", .. })));
    assert!(matches!(cpu::tp_forward(&plan, &x1, &x2[..d2], &w, 2), Err(Error::Shape { arg: "x2", .. })));
    assert!(matches!(cpu::tp_forward(&plan, &x1, &x2, &w[1..], 2), Err(Error::Shape { arg: "w", .. })));
    assert!(matches!(cpu::tp_backward(&plan, &x1, &x2, &w, &vec![0.0; dk], 2), Err(Error::Shape { arg: "dout", .. })));
    // Edges: out of range, negative, lengths.
    let x = vec![0.1; 3 * d1];
    let y = vec![0.2; 2 * d2];
    let err = cpu::conv_forward(&plan, &x, &y, &w, &[0, 3], &[1, 2]);
    assert!(matches!(err, Err(Error::InvalidValue { arg: "src", .. })), "{err:?}");
    let err = cpu::conv_forward(&plan, &x, &y, &w, &[0, 1], &[-1, 2]);
    assert!(matches!(err, Err(Error::InvalidValue { arg: "dst", .. })), "{err:?}");
    let err = cpu::conv_forward(&plan, &x, &y, &w, &[0, 1], &[1]);
    assert!(matches!(err, Err(Error::Shape { arg: "dst", .. })), "{err:?}");
    let err = cpu::conv_forward(&plan, &x, &y[1..], &w, &[0, 1], &[1, 2]);
    assert!(matches!(err, Err(Error::Shape { arg: "y", .. })), "{err:?}");
    let err = cpu::conv_forward(&plan, &x[1..], &y, &w, &[0, 1], &[1, 2]);
    assert!(matches!(err, Err(Error::Shape { arg: "x", .. })), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// Hessian assembly

#[test]
fn hessian_blocks_follow_reference() {
    let s3 = 3f64.sqrt();
    let (s6, s30) = (6f64.sqrt(), 30f64.sqrt());
    let one_edge = |feat: [f64; 9]| -> Vec<f64> {
        // Two atoms, one edge 0 → 1, no node terms: the block M sits at H[0, 1].
        let h = cpu::hessian_forward(&feat, &[0.0; 18], &[0], &[1], &[2]).unwrap();
        (0..9).map(|ab| h[(ab / 3) * 6 + 3 + ab % 3]).collect()
    };
    let mut f = [0.0; 9];
    f[0] = 1.0;
    assert_all_close(&one_edge(f), &[1.0 / s3, 0.0, 0.0, 0.0, 1.0 / s3, 0.0, 0.0, 0.0, 1.0 / s3], 1e-15, "h0 I/√3");
    let mut f = [0.0; 9];
    f[3] = 1.0; // l = 1, m = z
    assert_all_close(&one_edge(f), &[0.0, 1.0 / s6, 0.0, -1.0 / s6, 0.0, 0.0, 0.0, 0.0, 0.0], 1e-15, "ε h1/√6");
    let mut f = [0.0; 9];
    f[6] = 1.0; // l = 2, m2
    assert_all_close(&one_edge(f), &[-1.0 / s30, 0.0, 0.0, 0.0, 2.0 / s30, 0.0, 0.0, 0.0, -1.0 / s30], 1e-15, "l=2 m2");
}

#[test]
fn hessian_is_exactly_symmetric_and_equivariant() {
    let mut rng = rng();
    let n_atoms = [3usize, 1, 4];
    let atoms: usize = n_atoms.iter().sum();
    // Edges within each molecule, both directions and self-loops included.
    let mut src = Vec::new();
    let mut dst = Vec::new();
    let mut first = 0;
    for &n in &n_atoms {
        for _ in 0..2 * n {
            src.push((first + rng.random_range(0..n)) as i64);
            dst.push((first + rng.random_range(0..n)) as i64);
        }
        first += n;
    }
    let edges = src.len();
    let ef = randn(&mut rng, edges * 9);
    let nf = randn(&mut rng, atoms * 9);
    let h = cpu::hessian_forward(&ef, &nf, &src, &dst, &n_atoms).unwrap();
    assert_eq!(h.len(), 9 * (9 + 1 + 16));
    let mut at = 0;
    for &n in &n_atoms {
        let m = 3 * n;
        for r in 0..m {
            for c in 0..m {
                assert_eq!(
                    h[at + r * m + c].to_bits(),
                    h[at + c * m + r].to_bits(),
                    "H[{r},{c}] of a {n}-atom molecule"
                );
            }
        }
        at += m * m;
    }
    // Rotating every feature (0e + 1e + 2e blocks: a Hessian is a true tensor) rotates each 3×3
    // block: H' = R H Rᵀ.
    let feat_irreps = ir("0e+1e+2e");
    let r = random_rotation(&mut rng);
    let ds = wigner_ds(&r);
    let rot = |f: &[f64]| -> Vec<f64> { f.chunks(9).flat_map(|c| rotate_with(&feat_irreps, &ds, false, c)).collect() };
    let h2 = cpu::hessian_forward(&rot(&ef), &rot(&nf), &src, &dst, &n_atoms).unwrap();
    let mut at = 0;
    for &n in &n_atoms {
        let m = 3 * n;
        for bi in 0..n {
            for bj in 0..n {
                for a in 0..3 {
                    for b in 0..3 {
                        let mut want = 0.0;
                        for p in 0..3 {
                            for q in 0..3 {
                                want += r[a][p] * h[at + (3 * bi + p) * m + 3 * bj + q] * r[b][q];
                            }
                        }
                        let got = h2[at + (3 * bi + a) * m + 3 * bj + b];
                        assert!((got - want).abs() < 1e-12 * (1.0 + want.abs()), "R H Rᵀ");
                    }
                }
            }
        }
        at += m * m;
    }
    // Backward against finite differences (the assembly is linear).
    let dh = randn(&mut rng, h.len());
    let (de, dn) = cpu::hessian_backward(&ef, &nf, &src, &dst, &n_atoms, &dh).unwrap();
    let fe = fd_grad(&ef, |v| cpu::hessian_forward(v, &nf, &src, &dst, &n_atoms).unwrap(), &dh);
    let fnode = fd_grad(&nf, |v| cpu::hessian_forward(&ef, v, &src, &dst, &n_atoms).unwrap(), &dh);
    assert_all_close(&de, &fe, 1e-9, "d edge_feat");
    assert_all_close(&dn, &fnode, 1e-9, "d node_feat");
}

#[test]
fn hessian_bad_input() {
    let (ef, nf) = (vec![0.1; 18], vec![0.2; 27]);
    let h = |ef: &[f64], nf: &[f64], src: &[i64], dst: &[i64], n: &[usize]| cpu::hessian_forward(ef, nf, src, dst, n);
    assert!(h(&ef, &nf, &[0, 1], &[1, 2], &[3]).is_ok());
    assert!(matches!(h(&ef, &nf, &[0, 3], &[1, 2], &[3]), Err(Error::InvalidValue { arg: "src", .. })));
    assert!(matches!(h(&ef, &nf, &[0, 1], &[1, -2], &[3]), Err(Error::InvalidValue { arg: "dst", .. })));
    // An edge across molecules.
    assert!(matches!(h(&ef, &nf, &[0, 1], &[1, 2], &[2, 1]), Err(Error::InvalidValue { arg: "dst", .. })));
    assert!(matches!(h(&ef, &nf, &[0, 1], &[1, 2], &[2]), Err(Error::Shape { arg: "node_feat", .. })));
    assert!(matches!(h(&ef[1..], &nf, &[0, 1], &[1, 2], &[3]), Err(Error::Shape { arg: "edge_feat", .. })));
    let r = cpu::hessian_backward(&ef, &nf, &[0, 1], &[1, 2], &[3], &[0.0; 80]);
    assert!(matches!(r, Err(Error::Shape { arg: "dhessian", .. })));
}

/// The kernels' straight-line recursion is generated from the reference's table.
#[test]
fn sh_kernel_recursion_is_current() {
    let want = kiln::equivariant::ShTable::new(LMAX).unwrap().cuda_source();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/equivariant/sh_poly.cuh");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let got = std::fs::read_to_string(path).unwrap_or_default();
    assert!(got == want, "{path} is stale: rerun this test with BLESS=1");
}

/// The kernels' Clebsch-Gordan contractions are generated from the reference's wigner_3j.
#[test]
fn cg_kernel_contractions_are_current() {
    let want = kiln::equivariant::cg_code::cg_cuda_source();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/equivariant/cg_poly.cuh");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let got = std::fs::read_to_string(path).unwrap_or_default();
    assert!(got == want, "{path} is stale: rerun this test with BLESS=1");
}

// ---------------------------------------------------------------------------------------
// Kernels against the reference (the emulator in checked mode; the GPU when there is one)

/// Storage rounding of each dtype (DESIGN.md): rtol, atol.
fn storage_tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (1e-3, 1e-5),
        DType::BF16 => (1.6e-2, 1e-5),
        _ => (1.3e-6, 1e-5),
    }
}

/// f32 math error of a value built from terms of size `scale`: a few ulps of the terms.
const F32_TERM_EPS: f64 = 8.0 * f32::EPSILON as f64;

pub(crate) fn random_vectors(rng: &mut StdRng, n: usize) -> Vec<f64> {
    // Norms from 0.5 to 2, a zero vector when there is room for one.
    let mut v = Vec::with_capacity(3 * n);
    for i in 0..n {
        let d = randn(rng, 3);
        let r = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        let target = if i == 5 { 0.0 } else { rng.random_range(0.5..2.0) };
        v.extend(d.iter().map(|a| a / r * target));
    }
    v
}

#[test]
fn spherical_harmonics_kernels_match_reference() {
    let mut rng = rng();
    for device in kernel_devices() {
        for dtype in DType::FLOATS {
            for (n, lmax, normalization, normalize) in [
                (1, 4, ShNormalization::Component, true),
                (37, 4, ShNormalization::Integral, false),
                (300, 3, ShNormalization::Norm, true),
                (130, 2, ShNormalization::Component, false),
                (9, 1, ShNormalization::Integral, true),
                (3, 0, ShNormalization::Norm, false),
            ] {
                let s = Sh { lmax, normalization, normalize };
                let d = sh_dim(lmax);
                let vec = Tensor::from_f64(&random_vectors(&mut rng, n), &[n, 3], dtype).unwrap();
                let dsh = Tensor::from_f64(&randn(&mut rng, n * d), &[n, d], dtype).unwrap();
                let (v64, g64) = (vec.to_f64_vec().unwrap(), dsh.to_f64_vec().unwrap());
                let want_y = s.forward(&v64).unwrap();
                let want_dx = s.backward(&v64, &g64).unwrap();
                let (dv, dd) = (vec.to_device(&device).unwrap(), dsh.to_device(&device).unwrap());
                let y = equivariant::spherical_harmonics(&s, &dv).unwrap();
                let dx = equivariant::spherical_harmonics_backward(&s, &dv, &dd).unwrap();
                assert_eq!((y.shape(), y.dtype()), (&[n, d][..], dtype));
                assert_eq!((dx.shape(), dx.dtype()), (&[n, 3][..], dtype));
                let (y, dx) = (y.to_f64_vec().unwrap(), dx.to_f64_vec().unwrap());
                let (rtol, atol) = storage_tol(dtype);
                let ls: Vec<usize> = (0..=lmax as usize).flat_map(|l| std::iter::repeat_n(l, 2 * l + 1)).collect();
                for i in 0..n {
                    let r =
                        if normalize { 1.0 } else { v64[3 * i..3 * i + 3].iter().map(|a| a * a).sum::<f64>().sqrt() };
                    let big = r.max(1.0);
                    let what =
                        format!("{device} {dtype} n={n} lmax={lmax} {normalization} normalize={normalize} row {i}");
                    for (k, &l) in ls.iter().enumerate() {
                        let (g, w) = (y[i * d + k], want_y[i * d + k]);
                        let tol =
                            atol + rtol * w.abs() + F32_TERM_EPS * ((2 * l + 1) as f64).sqrt() * big.powi(l as i32);
                        assert!((g - w).abs() <= tol, "Y {what} [{k}]: {g} vs {w}");
                    }
                    // Each dx term is at most ‖dsh_d‖·(l+1)·√(2l+1)·max(r, 1)^l / min(r, 1).
                    let terms: f64 = ls
                        .iter()
                        .enumerate()
                        .map(|(k, &l)| {
                            g64[i * d + k].abs() * ((l + 1) as f64) * ((2 * l + 1) as f64).sqrt() * big.powi(l as i32)
                        })
                        .sum::<f64>()
                        / r.clamp(1e-30, 1.0);
                    for a in 0..3 {
                        let (g, w) = (dx[3 * i + a], want_dx[3 * i + a]);
                        let tol = atol + rtol * w.abs() + F32_TERM_EPS * terms;
                        assert!((g - w).abs() <= tol, "dvec {what} [{a}]: {g} vs {w} (tol {tol})");
                    }
                }
            }
        }
    }
}

#[test]
fn spherical_harmonics_kernels_bad_input() {
    for device in std::iter::once(Device::Cpu).chain(kernel_devices()) {
        let s = Sh { lmax: 2, normalization: ShNormalization::Component, normalize: true };
        let on = |t: Tensor| t.to_device(&device).unwrap();
        let vec = on(Tensor::from_f64(&[1.0, 2.0, 3.0, 0.5, 0.0, -1.0], &[2, 3], DType::F32).unwrap());
        let bad_shape = on(Tensor::from_f64(&[1.0; 8], &[2, 4], DType::F32).unwrap());
        let ints = on(Tensor::from_vec(vec![1i32; 6], &[2, 3]).unwrap());
        let too_high = Sh { lmax: 5, ..s };
        assert!(matches!(equivariant::spherical_harmonics(&s, &bad_shape), Err(Error::Shape { arg: "vec", .. })));
        assert!(matches!(equivariant::spherical_harmonics(&s, &ints), Err(Error::DType { arg: "vec", .. })));
        assert!(matches!(
            equivariant::spherical_harmonics(&too_high, &vec),
            Err(Error::InvalidValue { arg: "lmax", .. })
        ));
        let dsh = on(Tensor::from_f64(&[0.5; 18], &[2, 9], DType::F32).unwrap());
        assert!(equivariant::spherical_harmonics_backward(&s, &vec, &dsh).is_ok());
        let short = on(Tensor::from_f64(&[0.5; 8], &[2, 4], DType::F32).unwrap());
        assert!(matches!(
            equivariant::spherical_harmonics_backward(&s, &vec, &short),
            Err(Error::Shape { arg: "dsh", .. })
        ));
        let half = on(Tensor::from_f64(&[0.5; 18], &[2, 9], DType::F16).unwrap());
        assert!(matches!(
            equivariant::spherical_harmonics_backward(&s, &vec, &half),
            Err(Error::DType { arg: "dsh", .. })
        ));
        if device.is_emu() || device.is_cuda() {
            let host = Tensor::from_f64(&[0.5; 18], &[2, 9], DType::F32).unwrap();
            let r = equivariant::spherical_harmonics_backward(&s, &vec, &host);
            assert!(matches!(r, Err(Error::Device { arg: "dsh", .. })), "{r:?}");
        }
    }
}

/// The plan with |C|: its outputs on |inputs| bound the magnitude of the terms each output
/// element sums, which is what f32 rounding error scales with.
pub(crate) fn abs_plan(plan: &TpPlan) -> TpPlan {
    let mut p = plan.clone();
    for ins in &mut p.instructions {
        for c in &mut ins.cg {
            c.3 = c.3.abs();
        }
    }
    p
}

pub(crate) fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|a| a.abs()).collect()
}

/// Every element of `got` within storage rounding of `want` plus f32 error on terms of size
/// `mag` (sums of up to a few hundred products: 32 ulps).
fn assert_device_close(got: &Tensor, want: &[f64], mag: &[f64], what: &str) {
    assert_device_close_within(got, want, mag, 32.0 * f32::EPSILON as f64, what);
}

/// assert_device_close with `mag_rtol` relative error on the terms' magnitude.
fn assert_device_close_within(got: &Tensor, want: &[f64], mag: &[f64], mag_rtol: f64, what: &str) {
    let (rtol, atol) = storage_tol(got.dtype());
    let got = got.to_f64_vec().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((g, w), m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = atol + rtol * w.abs() + mag_rtol * m;
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w} (tol {tol})");
    }
}

/// A random graph with its edges sorted by receiver; node 0 receives nothing and the last node
/// sends nothing.
pub(crate) fn sorted_graph(rng: &mut StdRng, nodes: usize, edges: usize) -> (Vec<i32>, Vec<i32>) {
    let mut pairs: Vec<(i32, i32)> =
        (0..edges).map(|_| (rng.random_range(0..nodes as i32 - 1), rng.random_range(1..nodes as i32))).collect();
    pairs.sort_by_key(|p| p.1);
    pairs.into_iter().unzip()
}

/// [`sorted_graph`]'s edges in a random order: the convolution sorts them by receiver itself.
pub(crate) fn shuffled_graph(rng: &mut StdRng, nodes: usize, edges: usize) -> (Vec<i32>, Vec<i32>) {
    use rand::seq::SliceRandom;
    let (src, dst) = sorted_graph(rng, nodes, edges);
    let mut pairs: Vec<(i32, i32)> = src.into_iter().zip(dst).collect();
    pairs.shuffle(rng);
    pairs.into_iter().unzip()
}

fn round(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_f64(v, shape, dtype).unwrap()
}

#[test]
fn tensor_product_and_convolution_kernels_match_reference() {
    let mut rng = rng();
    for device in kernel_devices() {
        for dtype in DType::FLOATS_AND_F64 {
            for plan in fd_plans() {
                for shared in [true, false] {
                    for graph in [None, Some((6, 17))] {
                        check_tp_kernels(&device, dtype, &plan, shared, graph, &mut rng);
                        equivariant::with_table_kernels(|| {
                            check_tp_kernels(&device, dtype, &plan, shared, graph, &mut rng)
                        });
                    }
                }
            }
        }
    }
}

/// Rows wider than a warp (34 x1, 33 x2 components: the backward kernels' lanes loop over a row
/// twice), several x2 channels in every uvu path (the kernels sum over them), and a graph
/// without edges, whose dx, dw and out are empty sums (dw is zeroed by the launcher, not by a
/// kernel).
#[test]
fn tensor_product_kernels_on_wide_rows_and_no_edges_match_reference() {
    let plan = TpPlan::channelwise(
        &ir("10x0e+8x1o"),
        &ir("6x0e+4x1o+3x2e"),
        &ir("10x0e+10x1o+8x0e+8x1o+8x1e+8x2e"),
        PathNormalization::Element,
    )
    .unwrap();
    assert_eq!((plan.irreps_in1.dim(), plan.irreps_in2.dim()), (34, 33));
    let mut rng = rng();
    for device in kernel_devices() {
        for dtype in DType::FLOATS {
            for shared in [true, false] {
                for graph in [None, Some((5, 9)), Some((4, 0))] {
                    check_tp_kernels(&device, dtype, &plan, shared, graph, &mut rng);
                    equivariant::with_table_kernels(|| {
                        check_tp_kernels(&device, dtype, &plan, shared, graph, &mut rng)
                    });
                }
            }
        }
    }
}

/// More channels than a warp has lanes. Scalar blocks (40 and 33 x1 channels for uvu, 36 and 33
/// outputs for uvw): the channel-parallel kernels' lanes take a second channel of every block,
/// and their dy sums over both. Vector rows (widths multiples of 4): blocks of 132 channels and 8
/// read 4 channels a lane (16-byte runs in f32, 8-byte in f16/bf16, f64 one channel a lane; a
/// second pass over 132), next to blocks of 3 and 1 and weight offsets past them that stay
/// scalar, blocks of the output, x1 and x2 no path reaches, and a uvw plan with 132 outputs.
#[test]
fn tensor_product_kernels_with_more_channels_than_lanes_match_reference() {
    let el = PathNormalization::Element;
    let scalar = [
        TpPlan::channelwise(&ir("40x0e+33x1o"), &ir("0e+1o+2e"), &ir("40x0e+40x1o+33x1o+33x1e+33x2e"), el).unwrap(),
        TpPlan::fully_connected(&ir("3x0e+2x1o"), &ir("0e+1o"), &ir("36x0e+33x1o"), el).unwrap(),
    ];
    let x1 = ir("132x0e+8x1o+3x2e+1x0o");
    // The second plan also has blocks of x1 (4x3e) and x2 (4o) no path reaches: dx and dy are 0.
    let vector = [
        TpPlan::channelwise(&x1, &ir("0e+1o+2e"), &ir("132x0e+132x1o+8x0e+8x1o+8x2e+3x1o+1x1e"), el).unwrap(),
        TpPlan::channelwise(
            &ir("132x0e+8x1o+3x2e+1x0o+4x3e"),
            &ir("0e+1o+2e+4o"),
            &ir("132x0e+132x1o+8x0e+8x1o+8x2e+3x1o+1x0o+2x0e"),
            el,
        )
        .unwrap(),
        TpPlan::fully_connected(&ir("4x0e+4x1o"), &ir("0e+1o"), &ir("132x0e+4x1o"), el).unwrap(),
    ];
    for plan in &vector {
        let widths = [plan.irreps_in1.dim(), plan.irreps_out.dim(), plan.weight_numel];
        assert!(widths.iter().all(|w| w % 4 == 0), "vector rows: {widths:?}");
    }
    let mut rng = rng();
    for device in kernel_devices() {
        for plan in &scalar {
            for dtype in [DType::F32, DType::F64] {
                for shared in [true, false] {
                    check_tp_kernels(&device, dtype, plan, shared, Some((4, 7)), &mut rng);
                }
            }
        }
        for plan in &vector {
            for dtype in DType::FLOATS_AND_F64 {
                for shared in [true, false] {
                    check_tp_kernels(&device, dtype, plan, shared, Some((4, 7)), &mut rng);
                }
            }
        }
    }
}

/// Shared weights over more edges than the weight gradient has partitions (1024): each
/// partition's warp sums 2-3 edges into its workspace row before the rows are summed, in both
/// kernel kinds, for a vector-ready plan and a scalar one.
#[test]
fn shared_weight_gradients_sum_fixed_partitions_of_many_edges() {
    let el = PathNormalization::Element;
    let plans = [
        TpPlan::channelwise(&ir("4x0e+4x1o"), &ir("0e+1o"), &ir("4x0e+4x1o+4x1e"), el).unwrap(),
        TpPlan::channelwise(&ir("3x0e+1x1o"), &ir("0e+1o"), &ir("3x0e+3x1o+1x0e+1x1o"), el).unwrap(),
    ];
    assert_eq!(plans[0].weight_numel % 4, 0);
    let mut rng = rng();
    for device in kernel_devices() {
        for plan in &plans {
            for dtype in [DType::F32, DType::F64] {
                check_tp_kernels(&device, dtype, plan, true, Some((30, 2500)), &mut rng);
                equivariant::with_table_kernels(|| {
                    check_tp_kernels(&device, dtype, plan, true, Some((30, 2500)), &mut rng)
                });
            }
        }
    }
}

/// Per-edge weights, more edges on a sender than a warp has lanes (100 edges over 3 nodes: one
/// sender has at least 34): the fused backward (kernels/equivariant_fused.cu: all-uvu,
/// vector-ready plans in f32) takes a sender's edges 32 at a time, so its walk reaches a second
/// window; the double backward's passes, which run it with some gradients left out and add into
/// what the first pass wrote, on the same graph. A vector-ready plan and a scalar one, for which
/// the fused kernel, launched in f32, declines on the device and the two kernels do the work;
/// f64 runs the two kernels on both.
#[test]
fn fused_backward_walks_senders_with_more_edges_than_lanes() {
    let el = PathNormalization::Element;
    let plans = [
        TpPlan::channelwise(&ir("4x0e+4x1o"), &ir("0e+1o"), &ir("4x0e+4x1o+4x1e"), el).unwrap(),
        TpPlan::channelwise(&ir("3x0e+1x1o"), &ir("0e+1o+2e"), &ir("3x0e+3x1o+1x0e+1x1o+1x2e"), el).unwrap(),
    ];
    let mut rng = rng();
    for device in kernel_devices() {
        for plan in &plans {
            for dtype in [DType::F32, DType::F64] {
                check_tp_kernels(&device, dtype, plan, false, Some((3, 100)), &mut rng);
                check_double_backward_kernels(&device, dtype, plan, false, Some((3, 100)), 7, &mut rng);
            }
        }
    }
}

/// The fused backward's other walks, on vector-ready all-uvu plans in f32 (where it runs): more
/// than 32 paths (its check of the plan reads the paths 32 at a time), x2 blocks of two channels
/// (its loop over x2's channels) and a row of x2 wider than a warp (dy's zeroing, 50 elements),
/// in one plan of 65 paths (every l ≤ 4 both sides). A test of its own: the coverage gate reads
/// a loop's two iterations from one test's counts, which a plan with narrow rows would dilute.
#[test]
fn fused_backward_walks_many_paths_and_wide_rows() {
    let out = ir("4x0e+4x0o+4x1e+4x1o+4x2e+4x2o+4x3e+4x3o+4x4e+4x4o");
    let plan = TpPlan::channelwise(
        &ir("4x0e+4x1o+4x2e+4x3o+4x4e"),
        &ir("2x0e+2x1o+2x2e+2x3o+2x4e"),
        &out,
        PathNormalization::Element,
    )
    .unwrap();
    assert!(plan.instructions.len() > 32, "{} paths", plan.instructions.len());
    let mut rng = rng();
    for device in kernel_devices() {
        check_tp_kernels(&device, DType::F32, &plan, false, Some((4, 9)), &mut rng);
        check_double_backward_kernels(&device, DType::F32, &plan, false, Some((4, 9)), 7, &mut rng);
    }
}

/// The fused backward on a block of 132 channels, past the 128 one pass of 32 lanes × 4
/// channels covers.
#[test]
fn fused_backward_walks_blocks_wider_than_a_pass() {
    let plan = TpPlan::channelwise(&ir("132x0e"), &ir("0e"), &ir("132x0e"), PathNormalization::Element).unwrap();
    let mut rng = rng();
    for device in kernel_devices() {
        check_tp_kernels(&device, DType::F32, &plan, false, Some((4, 9)), &mut rng);
        check_double_backward_kernels(&device, DType::F32, &plan, false, Some((4, 9)), 7, &mut rng);
    }
}

/// Plans of more than 32 paths: the channel-parallel kernels walk the paths' block offsets 32 at
/// a time (a second window, whose blocks are compared with the first's). Every l ≤ 4 in both
/// inputs and every l ≤ 4 of both parities out: one path for each of the 65 (l1, l2, l3) triples,
/// so every generated contraction (cg_poly.cuh) runs forward, for dx and for dy.
#[test]
fn tensor_product_kernels_with_more_paths_than_lanes_match_reference() {
    let irreps = ir("0e+1o+2e+3o+4e");
    let out = ir("0e+0o+1e+1o+2e+2o+3e+3o+4e+4o");
    let plans = [
        TpPlan::fully_connected(&irreps, &irreps, &out, PathNormalization::Element).unwrap(),
        TpPlan::channelwise(&irreps, &irreps, &out, PathNormalization::Path).unwrap(),
    ];
    let l = |irreps: &Irreps, i: usize| irreps.blocks()[i].ir.l;
    let triples: std::collections::BTreeSet<[u32; 3]> =
        plans[0].instructions.iter().map(|i| [l(&irreps, i.i1), l(&irreps, i.i2), l(&out, i.i_out)]).collect();
    assert_eq!(triples.len(), kiln::equivariant::cg_code::cg_triples().len());
    for plan in &plans {
        assert!(plan.instructions.len() > 32, "{} paths", plan.instructions.len());
    }
    let mut rng = rng();
    for device in kernel_devices() {
        for plan in &plans {
            for shared in [true, false] {
                check_tp_kernels(&device, DType::F32, plan, shared, Some((4, 9)), &mut rng);
            }
        }
    }
}

/// The kernels against the f64 reference: the tensor product of `plan` over 5 rows (`graph`
/// None) or the convolution over a random graph of (nodes, edges), forward and backward, with
/// one weight vector (`shared`) or one per row or edge.
fn check_tp_kernels(
    device: &Device,
    dtype: DType,
    plan: &TpPlan,
    shared: bool,
    graph: Option<(usize, usize)>,
    rng: &mut StdRng,
) {
    let aplan = abs_plan(plan);
    let (d1, d2, dk, nw) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
    let (nodes, edges) = graph.unwrap_or((5, 5));
    let x = round(&randn(rng, nodes * d1), &[nodes, d1], dtype);
    let y = round(&randn(rng, edges * d2), &[edges, d2], dtype);
    let wshape: Vec<usize> = if shared { vec![nw] } else { vec![edges, nw] };
    let w = round(&randn(rng, wshape.iter().product()), &wshape, dtype);
    let dout = round(&randn(rng, nodes * dk), &[nodes, dk], dtype);
    let (xv, yv, wv, gv) =
        (x.to_f64_vec().unwrap(), y.to_f64_vec().unwrap(), w.to_f64_vec().unwrap(), dout.to_f64_vec().unwrap());
    let on = |t: &Tensor| t.to_device(device).unwrap();
    let (dx, dy, dw, dg) = (on(&x), on(&y), on(&w), on(&dout));
    let what = format!("{device} {dtype} {} shared={shared} graph={graph:?}", plan.irreps_out);
    let (out, grads, want, want_g, mag, mag_g) = if graph.is_some() {
        let (src, dst) = shuffled_graph(rng, nodes, edges);
        let (s64, d64): (Vec<i64>, Vec<i64>) =
            (src.iter().map(|&v| v as i64).collect(), dst.iter().map(|&v| v as i64).collect());
        let st = on(&Tensor::from_vec(src, &[edges]).unwrap());
        let dt = on(&Tensor::from_vec(dst, &[edges]).unwrap());
        (
            equivariant::conv(plan, &dx, &dy, &dw, &st, &dt).unwrap(),
            equivariant::conv_backward(plan, (&dx, &dy, &dw), &st, &dt, &dg).unwrap(),
            cpu::conv_forward(plan, &xv, &yv, &wv, &s64, &d64).unwrap(),
            cpu::conv_backward(plan, &xv, &yv, &wv, &s64, &d64, &gv).unwrap(),
            cpu::conv_forward(&aplan, &abs(&xv), &abs(&yv), &abs(&wv), &s64, &d64).unwrap(),
            cpu::conv_backward(&aplan, &abs(&xv), &abs(&yv), &abs(&wv), &s64, &d64, &abs(&gv)).unwrap(),
        )
    } else {
        (
            equivariant::tensor_product(plan, &dx, &dy, &dw).unwrap(),
            equivariant::tensor_product_backward(plan, &dx, &dy, &dw, &dg).unwrap(),
            cpu::tp_forward(plan, &xv, &yv, &wv, nodes).unwrap(),
            cpu::tp_backward(plan, &xv, &yv, &wv, &gv, nodes).unwrap(),
            cpu::tp_forward(&aplan, &abs(&xv), &abs(&yv), &abs(&wv), nodes).unwrap(),
            cpu::tp_backward(&aplan, &abs(&xv), &abs(&yv), &abs(&wv), &abs(&gv), nodes).unwrap(),
        )
    };
    assert_eq!(out.shape(), &[nodes, dk]);
    assert_device_close(&out, &want, &mag, &format!("out {what}"));
    assert_device_close(&grads.dx1, &want_g.dx1, &mag_g.dx1, &format!("dx {what}"));
    assert_device_close(&grads.dx2, &want_g.dx2, &mag_g.dx2, &format!("dy {what}"));
    assert_device_close(&grads.dw, &want_g.dw, &mag_g.dw, &format!("dw {what}"));
}

/// The double backward's kernels against the reference: every dtype, both kernel kinds, shared
/// and per-row weights, the batched product and the convolution, all three upstream gradients;
/// every subset of them on one configuration (the launcher zeroes what no pass reaches, adds
/// into what an earlier pass wrote), and a graph without edges.
#[test]
fn double_backward_kernels_match_reference() {
    let mut rng = rng();
    for device in kernel_devices() {
        for dtype in DType::FLOATS_AND_F64 {
            for plan in fd_plans() {
                for shared in [true, false] {
                    for graph in [None, Some((6, 17))] {
                        check_double_backward_kernels(&device, dtype, &plan, shared, graph, 7, &mut rng);
                        equivariant::with_table_kernels(|| {
                            check_double_backward_kernels(&device, dtype, &plan, shared, graph, 7, &mut rng)
                        });
                    }
                }
            }
        }
        let plan = fd_plans().remove(0);
        for mask in 0..7 {
            for shared in [true, false] {
                check_double_backward_kernels(&device, DType::F32, &plan, shared, Some((5, 11)), mask, &mut rng);
                equivariant::with_table_kernels(|| {
                    check_double_backward_kernels(&device, DType::F32, &plan, shared, Some((5, 11)), mask, &mut rng)
                });
            }
        }
        check_double_backward_kernels(&device, DType::F32, &plan, true, Some((4, 0)), 7, &mut rng);
    }
}

/// check_tp_kernels for the double backward, with the upstream gradients of `mask` (bit 0: gdx,
/// 1: gdy, 2: gdw). Between its passes the launcher sums into the outputs in their storage
/// dtype: f16 and bf16 results carry up to two extra roundings of partial sums (bounded by
/// their magnitude).
fn check_double_backward_kernels(
    device: &Device,
    dtype: DType,
    plan: &TpPlan,
    shared: bool,
    graph: Option<(usize, usize)>,
    mask: u32,
    rng: &mut StdRng,
) {
    let aplan = abs_plan(plan);
    let (d1, d2, dk, nw) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
    let (nodes, edges) = graph.unwrap_or((5, 5));
    let wshape: Vec<usize> = if shared { vec![nw] } else { vec![edges, nw] };
    let shapes = [vec![nodes, d1], vec![edges, d2], wshape, vec![nodes, dk]];
    // x, y, w, dout, then the upstream gradients gdx, gdy, gdw.
    let host: Vec<Tensor> = (0..7)
        .map(|i| {
            let shape = &shapes[if i < 4 { i } else { i - 4 }];
            round(&randn(rng, shape.iter().product()), shape, dtype)
        })
        .collect();
    let vals: Vec<Vec<f64>> = host.iter().map(|t| t.to_f64_vec().unwrap()).collect();
    let dev: Vec<Tensor> = host.iter().map(|t| t.to_device(device).unwrap()).collect();
    let given = |bit: u32, i: usize| (mask & bit != 0).then_some(i);
    let up = equivariant::UpstreamGrads {
        gdx1: given(1, 4).map(|i| &dev[i]),
        gdx2: given(2, 5).map(|i| &dev[i]),
        gdw: given(4, 6).map(|i| &dev[i]),
    };
    fn cpu_up(v: &[Vec<f64>], mask: u32) -> cpu::Upstream<'_> {
        let given = |bit: u32, i: usize| (mask & bit != 0).then_some(&v[i][..]);
        cpu::Upstream { gdx1: given(1, 4), gdx2: given(2, 5), gdw: given(4, 6) }
    }
    let absv: Vec<Vec<f64>> = vals.iter().map(|v| abs(v)).collect();
    let what = format!("{device} {dtype} {} shared={shared} graph={graph:?} mask={mask}", plan.irreps_out);
    let (got, want, mag) = if graph.is_some() {
        // Edges in any order, through a graph built once (no host round trip in the call).
        let (src, dst) = shuffled_graph(rng, nodes, edges);
        let (s64, d64): (Vec<i64>, Vec<i64>) =
            (src.iter().map(|&v| v as i64).collect(), dst.iter().map(|&v| v as i64).collect());
        let st = Tensor::from_vec(src, &[edges]).unwrap().to_device(device).unwrap();
        let dt = Tensor::from_vec(dst, &[edges]).unwrap().to_device(device).unwrap();
        let g = equivariant::EdgeGraph::build(&st, &dt, nodes).unwrap();
        g.check().unwrap();
        let reference = |p: &TpPlan, v: &[Vec<f64>]| {
            cpu::conv_double_backward(p, &v[0], &v[1], &v[2], &s64, &d64, &v[3], cpu_up(v, mask)).unwrap()
        };
        (
            g.conv_double_backward(plan, (&dev[0], &dev[1], &dev[2]), &dev[3], up).unwrap(),
            reference(plan, &vals),
            reference(&aplan, &absv),
        )
    } else {
        let reference = |p: &TpPlan, v: &[Vec<f64>]| {
            cpu::tp_double_backward(p, &v[0], &v[1], &v[2], &v[3], nodes, cpu_up(v, mask)).unwrap()
        };
        (
            equivariant::tensor_product_double_backward(plan, (&dev[0], &dev[1], &dev[2]), &dev[3], up).unwrap(),
            reference(plan, &vals),
            reference(&aplan, &absv),
        )
    };
    // f32 math on terms of size mag, plus (f16, bf16) the partial sums' two roundings.
    let (rtol, _) = storage_tol(dtype);
    let passes = if dtype == DType::F16 || dtype == DType::BF16 { 2.0 * rtol } else { 0.0 };
    let mag_rtol = 32.0 * f32::EPSILON as f64 + passes;
    let check = |t: &Tensor, want: &[f64], mag: &[f64], name: &str| {
        assert_device_close_within(t, want, mag, mag_rtol, &format!("{name} {what}"));
    };
    assert_eq!(got.gdout.shape(), &[nodes, dk]);
    check(&got.gx1, &want.gx1, &mag.gx1, "gx");
    check(&got.gx2, &want.gx2, &mag.gx2, "gy");
    check(&got.gw, &want.gw, &mag.gw, "gw");
    check(&got.gdout, &want.gdout, &mag.gdout, "gdout");
}

/// [`equivariant::EdgeGraph`] on every device: edges in any order give the results of the same
/// edges sorted by receiver (out bitwise: each receiver sums its edges in edge order; dy and dw
/// per edge bitwise once permuted; dx by sender within tolerance), [`equivariant::sort_edges`]
/// is the stable receiver order; on the emulator a graph's build and its calls make no host
/// transfer once the plan is on the device (what a CUDA graph needs to capture them); a graph
/// with a bad index runs in bounds (checked mode finds none) and `check` names the edge.
#[test]
fn edge_graphs_take_any_order_and_their_calls_make_no_host_round_trip() {
    let plan = fd_plans().remove(0);
    let (d1, d2, dk, nw) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
    let (nodes, edges) = (7, 45);
    let mut rng = rng();
    let (src, dst) = shuffled_graph(&mut rng, nodes, edges);
    let mut want_perm: Vec<usize> = (0..edges).collect();
    want_perm.sort_by_key(|&e| dst[e]);
    let (x, y, w, dout) = (
        randn(&mut rng, nodes * d1),
        randn(&mut rng, edges * d2),
        randn(&mut rng, edges * nw),
        randn(&mut rng, nodes * dk),
    );
    let gather = |v: &[f64], width: usize| -> Vec<f64> {
        want_perm.iter().flat_map(|&e| v[e * width..(e + 1) * width].iter().copied()).collect()
    };
    let pick = |v: &[i32]| -> Vec<i32> { want_perm.iter().map(|&e| v[e]).collect() };
    for device in std::iter::once(Device::Cpu).chain(kernel_devices()) {
        let on = |t: Tensor| t.to_device(&device).unwrap();
        let f = |v: &[f64], shape: &[usize]| on(Tensor::from_f64(v, shape, DType::F32).unwrap());
        let idx = |v: Vec<i32>| on(Tensor::from_vec(v.clone(), &[v.len()]).unwrap());
        let (xt, gt) = (f(&x, &[nodes, d1]), f(&dout, &[nodes, dk]));
        let (yt, wt) = (f(&y, &[edges, d2]), f(&w, &[edges, nw]));
        let (ys, ws) = (f(&gather(&y, d2), &[edges, d2]), f(&gather(&w, nw), &[edges, nw]));
        let (st, dt) = (idx(src.clone()), idx(dst.clone()));
        let perm = equivariant::sort_edges(&st, &dt, nodes).unwrap();
        let perm_host: Vec<usize> = perm.to_f64_vec().unwrap().iter().map(|&v| v as usize).collect();
        assert_eq!(perm_host, want_perm, "{device}: sort_edges is the stable receiver order");
        assert_eq!(perm.device().is_emu(), device.is_emu());

        let before = |d: &Device| if let Device::Emu(e) = d { e.host_transfers() } else { 0 };
        let (ss, ds) = (idx(pick(&src)), idx(pick(&dst)));
        let t0 = before(&device);
        let graph = equivariant::EdgeGraph::build(&st, &dt, nodes).unwrap();
        let sorted = equivariant::EdgeGraph::build(&ss, &ds, nodes).unwrap();
        let built = before(&device) - t0;
        graph.check().unwrap();
        sorted.check().unwrap();
        // The first calls upload the plan; later calls reuse it.
        let _warm = (graph.conv(&plan, (&xt, &yt, &wt)).unwrap(), sorted.conv(&plan, (&xt, &ys, &ws)).unwrap());
        let t1 = before(&device);
        let out = graph.conv(&plan, (&xt, &yt, &wt)).unwrap();
        let grads = graph.conv_backward(&plan, (&xt, &yt, &wt), &gt).unwrap();
        let up = equivariant::UpstreamGrads { gdx1: Some(&xt), gdx2: Some(&yt), gdw: Some(&wt) };
        let twice = graph.conv_double_backward(&plan, (&xt, &yt, &wt), &gt, up).unwrap();
        let calls = before(&device) - t1;
        if device.is_emu() {
            assert_eq!(built, 0, "the graph build waits for nothing");
            assert_eq!(calls, 0, "calls on a graph make no host transfer");
        }
        let want_out = sorted.conv(&plan, (&xt, &ys, &ws)).unwrap();
        let want = sorted.conv_backward(&plan, (&xt, &ys, &ws), &gt).unwrap();
        assert_eq!(out.to_f64_vec().unwrap(), want_out.to_f64_vec().unwrap(), "{device}: out bitwise");
        let permuted = |t: &Tensor, width: usize| gather(&t.to_f64_vec().unwrap(), width);
        assert_eq!(permuted(&grads.dx2, d2), want.dx2.to_f64_vec().unwrap(), "{device}: dy per edge");
        assert_eq!(permuted(&grads.dw, nw), want.dw.to_f64_vec().unwrap(), "{device}: dw per edge");
        let dx = want.dx1.to_f64_vec().unwrap();
        assert_device_close(&grads.dx1, &dx, &dx.iter().map(|v| v.abs() + 1.0).collect::<Vec<_>>(), "dx by sender");
        assert_eq!(twice.gdout.shape(), &[nodes, dk]);
        // The one-call forms are the graph's.
        let once = equivariant::conv(&plan, &xt, &yt, &wt, &st, &dt).unwrap();
        assert_eq!(once.to_f64_vec().unwrap(), out.to_f64_vec().unwrap());

        // Sizes that do not match the graph; a graph on another device.
        let e = graph.conv(&plan, (&f(&x[..6 * d1], &[6, d1]), &yt, &wt)).expect_err("x rows");
        assert!(matches!(e, Error::Shape { arg: "x", .. }), "{e}");
        let e =
            graph.conv(&plan, (&xt, &f(&y[..44 * d2], &[44, d2]), &f(&w[..44 * nw], &[44, nw]))).expect_err("y rows");
        assert!(matches!(e, Error::Shape { arg: "graph", .. }), "{e}");
        if device.runs_kernels() {
            let host = equivariant::EdgeGraph::build(
                &Tensor::from_vec(src.clone(), &[edges]).unwrap(),
                &Tensor::from_vec(dst.clone(), &[edges]).unwrap(),
                nodes,
            )
            .unwrap();
            let e = host.conv(&plan, (&xt, &yt, &wt)).expect_err("host graph");
            assert!(matches!(e, Error::InvalidValue { arg: "graph", .. }), "{e}");
        }
        // A bad index: the host refuses it at build; a device builds, runs in bounds, and
        // check names the edge.
        let mut bad = src.clone();
        bad[3] = nodes as i32 + 2;
        match equivariant::EdgeGraph::build(&idx(bad.clone()), &dt, nodes) {
            Err(e) => {
                assert!(!device.runs_kernels(), "{device}: {e}");
                assert!(matches!(e, Error::InvalidValue { arg: "src", .. }), "{e}");
            }
            Ok(g) => {
                assert!(g.conv(&plan, (&xt, &yt, &wt)).is_ok(), "in bounds");
                assert!(g.conv_backward(&plan, (&xt, &yt, &wt), &gt).is_ok(), "in bounds");
                let e = g.check().expect_err("bad index");
                assert!(matches!(&e, Error::InvalidValue { arg: "src", reason } if reason.contains("edge 3")), "{e}");
            }
        }
        let e = equivariant::EdgeGraph::build(&idx(vec![0]), &idx(vec![0]), 0).map(|_| ()).expect_err("no nodes");
        assert!(matches!(e, Error::InvalidValue { arg: "nodes", .. }), "{e}");
    }
}

#[test]
fn convolution_bad_input_on_every_device() {
    let plan = fd_plans().remove(0);
    let (d1, d2, dk, nw) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
    for device in std::iter::once(Device::Cpu).chain(kernel_devices()) {
        let on = |t: Tensor| t.to_device(&device).unwrap();
        let f = |shape: &[usize]| on(Tensor::from_f64(&vec![0.25; shape.iter().product()], shape, DType::F32).unwrap());
        let idx = |v: Vec<i32>| on(Tensor::from_vec(v.clone(), &[v.len()]).unwrap());
        let (x, y, w) = (f(&[3, d1]), f(&[4, d2]), f(&[nw]));
        let (src, dst) = (idx(vec![0, 1, 2, 2]), idx(vec![0, 0, 1, 2]));
        assert!(equivariant::conv(&plan, &x, &y, &w, &src, &dst).is_ok());
        let err = |r: kiln::Result<Tensor>| r.expect_err("bad input");
        // Edges in any order are accepted; indices out of range, wrong index dtype are not.
        assert!(equivariant::conv(&plan, &x, &y, &w, &src, &idx(vec![0, 1, 0, 2])).is_ok());
        let e = err(equivariant::conv(&plan, &x, &y, &w, &idx(vec![0, 1, 3, 2]), &dst));
        assert!(matches!(e, Error::InvalidValue { arg: "src", .. }), "{e}");
        let e = err(equivariant::conv(&plan, &x, &y, &w, &src, &idx(vec![0, 0, 1, -1])));
        assert!(matches!(e, Error::InvalidValue { arg: "dst", .. }), "{e}");
        let e = err(equivariant::conv(&plan, &x, &y, &w, &f(&[4]), &dst));
        assert!(matches!(e, Error::DType { arg: "src", .. }), "{e}");
        let e = err(equivariant::conv(&plan, &x, &y, &w, &idx(vec![0, 1, 2]), &dst));
        assert!(matches!(e, Error::Shape { arg: "src", .. }), "{e}");
        // Irreps that do not match the data.
        let e = err(equivariant::conv(&plan, &f(&[3, d1 + 1]), &y, &w, &src, &dst));
        assert!(matches!(e, Error::Shape { arg: "x", .. }), "{e}");
        let e = err(equivariant::conv(&plan, &x, &f(&[4, d2 - 1]), &w, &src, &dst));
        assert!(matches!(e, Error::Shape { arg: "y", .. }), "{e}");
        let e = err(equivariant::conv(&plan, &x, &y, &f(&[3, nw]), &src, &dst));
        assert!(matches!(e, Error::Shape { arg: "w", .. }), "{e}");
        let half = on(Tensor::from_f64(&vec![0.25; 4 * d2], &[4, d2], DType::F16).unwrap());
        let e = err(equivariant::conv(&plan, &x, &half, &w, &src, &dst));
        assert!(matches!(e, Error::DType { arg: "y", .. }), "{e}");
        let g = equivariant::conv_backward(&plan, (&x, &y, &w), &src, &dst, &f(&[3, dk + 1]));
        assert!(matches!(g, Err(Error::Shape { arg: "dout", .. })), "{g:?}");
        // The double backward: dout, and each upstream gradient shaped and typed as its operand.
        let up = equivariant::UpstreamGrads::default();
        let g = equivariant::conv_double_backward(&plan, (&x, &y, &w), &src, &dst, &f(&[3, dk + 1]), up);
        assert!(matches!(g, Err(Error::Shape { arg: "dout", .. })), "{g:?}");
        let dout = f(&[3, dk]);
        let bad_x = f(&[3, d1 + 1]);
        let up = equivariant::UpstreamGrads { gdx1: Some(&bad_x), ..Default::default() };
        let g = equivariant::conv_double_backward(&plan, (&x, &y, &w), &src, &dst, &dout, up);
        assert!(matches!(g, Err(Error::Shape { arg: "gdx1", .. })), "{g:?}");
        let up = equivariant::UpstreamGrads { gdx2: Some(&half), ..Default::default() };
        let g = equivariant::conv_double_backward(&plan, (&x, &y, &w), &src, &dst, &dout, up);
        assert!(matches!(g, Err(Error::DType { arg: "gdx2", .. })), "{g:?}");
        let per_edge = f(&[4, nw]);
        let up = equivariant::UpstreamGrads { gdw: Some(&per_edge), ..Default::default() };
        let g = equivariant::conv_double_backward(&plan, (&x, &y, &w), &src, &dst, &dout, up);
        assert!(matches!(g, Err(Error::Shape { arg: "gdw", .. })), "{g:?}");
        let g = equivariant::tensor_product_double_backward(&plan, (&x, &f(&[4, d2]), &w), &dout, up);
        assert!(matches!(g, Err(Error::Shape { arg: "x2", .. })), "{g:?}");
        // The batched product: one x2 row per x1 row.
        let e = err(equivariant::tensor_product(&plan, &x, &f(&[4, d2]), &w));
        assert!(matches!(e, Error::Shape { arg: "x2", .. }), "{e}");
    }
}

/// Random edges within each molecule (self-loops and both directions included).
pub(crate) fn molecule_edges(rng: &mut StdRng, n_atoms: &[usize], per_atom: usize) -> (Vec<i32>, Vec<i32>) {
    let (mut src, mut dst) = (Vec::new(), Vec::new());
    let mut first = 0;
    for &n in n_atoms {
        for _ in 0..per_atom * n {
            src.push((first + rng.random_range(0..n)) as i32);
            dst.push((first + rng.random_range(0..n)) as i32);
        }
        first += n;
    }
    (src, dst)
}

/// Index of H[3i + a, 3j + b] in the concatenated Hessians of `n_atoms` (i, j in one molecule).
fn hessian_index(n_atoms: &[usize], i: usize, a: usize, j: usize, b: usize) -> usize {
    let (mut first, mut at) = (0, 0);
    for &n in n_atoms {
        if i < first + n {
            return at + (3 * (i - first) + a) * 3 * n + 3 * (j - first) + b;
        }
        first += n;
        at += 9 * n * n;
    }
    unreachable!("atom {i} past the molecules")
}

/// Per Hessian element, the sum of |terms| it adds up: Σ_c |f_c| per contributing block (every
/// basis entry is at most 1 in size).
pub(crate) fn hessian_term_bound(ef: &[f64], nf: &[f64], src: &[i32], dst: &[i32], n_atoms: &[usize]) -> Vec<f64> {
    let total: usize = n_atoms.iter().map(|n| 9 * n * n).sum();
    let mut mag = vec![0.0; total];
    let size = |f: &[f64]| f.iter().map(|v| v.abs()).sum::<f64>();
    for e in 0..src.len() {
        let (i, j, m) = (src[e] as usize, dst[e] as usize, size(&ef[9 * e..9 * e + 9]));
        for a in 0..3 {
            for b in 0..3 {
                mag[hessian_index(n_atoms, i, a, j, b)] += m;
                mag[hessian_index(n_atoms, j, b, i, a)] += m;
            }
        }
    }
    for i in 0..nf.len() / 9 {
        let m = size(&nf[9 * i..9 * i + 9]);
        for a in 0..3 {
            for b in 0..3 {
                mag[hessian_index(n_atoms, i, a, i, b)] += 2.0 * m;
            }
        }
    }
    mag
}

/// Per feature gradient, the sum of |terms|: the |dH| entries of its blocks.
pub(crate) fn hessian_grad_bound(dh: &[f64], src: &[i32], dst: &[i32], n_atoms: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let atoms: usize = n_atoms.iter().sum();
    let block = |i: usize, j: usize| -> f64 {
        let mut s = 0.0;
        for a in 0..3 {
            for b in 0..3 {
                s += dh[hessian_index(n_atoms, i, a, j, b)].abs() + dh[hessian_index(n_atoms, j, b, i, a)].abs();
            }
        }
        s
    };
    let de = (0..src.len()).flat_map(|e| vec![block(src[e] as usize, dst[e] as usize); 9]).collect();
    let dn = (0..atoms).flat_map(|i| vec![block(i, i); 9]).collect();
    (de, dn)
}

#[test]
fn hessian_kernels_match_reference_and_are_symmetric() {
    let mut rng = rng();
    for device in kernel_devices() {
        for dtype in DType::FLOATS {
            for n_atoms in [vec![1usize], vec![5], vec![3, 1, 4, 2]] {
                let atoms: usize = n_atoms.iter().sum();
                let (src, dst) = molecule_edges(&mut rng, &n_atoms, 3);
                let edges = src.len();
                let ef = round(&randn(&mut rng, edges * 9), &[edges, 9], dtype);
                let nf = round(&randn(&mut rng, atoms * 9), &[atoms, 9], dtype);
                let (efv, nfv) = (ef.to_f64_vec().unwrap(), nf.to_f64_vec().unwrap());
                let (s64, d64): (Vec<i64>, Vec<i64>) =
                    (src.iter().map(|&v| v as i64).collect(), dst.iter().map(|&v| v as i64).collect());
                let want = cpu::hessian_forward(&efv, &nfv, &s64, &d64, &n_atoms).unwrap();
                let mag = hessian_term_bound(&efv, &nfv, &src, &dst, &n_atoms);
                let on = |t: &Tensor| t.to_device(&device).unwrap();
                let (st, dt) = (
                    on(&Tensor::from_vec(src.clone(), &[edges]).unwrap()),
                    on(&Tensor::from_vec(dst.clone(), &[edges]).unwrap()),
                );
                let h = equivariant::hessian(&on(&ef), &on(&nf), &st, &dt, &n_atoms).unwrap();
                let what = format!("{device} {dtype} n_atoms={n_atoms:?}");
                if n_atoms.len() == 1 {
                    assert_eq!(h.shape(), &[3 * atoms, 3 * atoms]);
                }
                assert_device_close(&h, &want, &mag, &format!("hessian {what}"));
                let hv = h.to_f64_vec().unwrap();
                let mut at = 0;
                for &n in &n_atoms {
                    let m = 3 * n;
                    for r in 0..m {
                        for c in 0..m {
                            assert_eq!(hv[at + r * m + c].to_bits(), hv[at + c * m + r].to_bits(), "{what} H[{r},{c}]");
                        }
                    }
                    at += m * m;
                }
                let dh = round(&randn(&mut rng, want.len()), h.shape(), dtype);
                let dhv = dh.to_f64_vec().unwrap();
                let (de, dn) = equivariant::hessian_backward(&on(&ef), &on(&nf), &st, &dt, &n_atoms, &on(&dh)).unwrap();
                let (wde, wdn) = cpu::hessian_backward(&efv, &nfv, &s64, &d64, &n_atoms, &dhv).unwrap();
                let (mde, mdn) = hessian_grad_bound(&dhv, &src, &dst, &n_atoms);
                assert_device_close(&de, &wde, &mde, &format!("d edge_feat {what}"));
                assert_device_close(&dn, &wdn, &mdn, &format!("d node_feat {what}"));
            }
        }
    }
}

#[test]
fn hessian_bad_input_on_every_device() {
    for device in std::iter::once(Device::Cpu).chain(kernel_devices()) {
        let on = |t: Tensor| t.to_device(&device).unwrap();
        let f = |shape: &[usize]| on(Tensor::from_f64(&vec![0.25; shape.iter().product()], shape, DType::F32).unwrap());
        let idx = |v: Vec<i32>| on(Tensor::from_vec(v.clone(), &[v.len()]).unwrap());
        let (ef, nf) = (f(&[2, 9]), f(&[3, 9]));
        let (src, dst) = (idx(vec![0, 1]), idx(vec![1, 2]));
        assert_eq!(equivariant::hessian(&ef, &nf, &src, &dst, &[3]).unwrap().shape(), &[9, 9]);
        assert_eq!(
            equivariant::hessian(&ef, &nf, &idx(vec![0, 2]), &idx(vec![1, 2]), &[2, 1]).unwrap().shape(),
            &[36 + 9]
        );
        let e = equivariant::hessian(&ef, &nf, &src, &dst, &[2, 1]).unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "dst", .. }), "across molecules: {e}");
        let e = equivariant::hessian(&ef, &nf, &idx(vec![0, 3]), &dst, &[3]).unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "src", .. }), "{e}");
        let e = equivariant::hessian(&ef, &nf, &src, &dst, &[2]).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "node_feat", .. }), "{e}");
        let e = equivariant::hessian(&f(&[2, 8]), &nf, &src, &dst, &[3]).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "edge_feat", .. }), "{e}");
        let e = equivariant::hessian(&ef, &nf, &src, &dst, &[3, 0]).unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "n_atoms", .. }), "{e}");
        let e = equivariant::hessian_backward(&ef, &nf, &src, &dst, &[3], &f(&[81])).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "dhessian", .. }), "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Registry entries (equivariant/sh, equivariant/hessian, equivariant/tp, equivariant/conv)

fn family() -> Vec<Box<dyn kiln::registry::Op>> {
    kiln::registry::select(&["equivariant/".into()])
}

#[test]
fn registry_references_pass_their_own_checks() {
    let mut rng = rng();
    let ops = family();
    assert_eq!(
        ops.iter().map(|o| o.full_name()).collect::<Vec<_>>(),
        ["equivariant/sh", "equivariant/hessian", "equivariant/tp", "equivariant/conv", "equivariant/graph"]
    );
    for op in ops {
        crate::common::assert_rows(&op.self_checks(&mut rng));
    }
}

#[test]
fn registry_entries_match_reference_on_every_device() {
    let mut rng = rng();
    for device in std::iter::once(Device::Cpu).chain(kernel_devices()) {
        for op in family() {
            let shapes = if device.is_emu() { crate::common::emu_shapes(op.as_ref()) } else { op.check_shapes() };
            // The host path is the reference itself: small shapes suffice there.
            let host = !device.is_emu() && !device.is_cuda();
            let shapes: Vec<_> = if host { shapes.into_iter().take(3).collect() } else { shapes };
            // The float ops in every 16/32-bit storage; the graph build in its only dtype (i32).
            let dtypes = if op.dtypes() == [DType::I32] { &[DType::I32][..] } else { &DType::FLOATS[..] };
            let rows = kiln::check::check_shapes(op.as_ref(), &device, dtypes, &shapes, &mut rng).unwrap();
            assert!(!rows.is_empty(), "{} on {device}: no rows", op.full_name());
            crate::common::assert_rows(&rows);
        }
    }
}

/// The graph entry's bad input: an index outside `0..nodes` (src and dst, each named, on every
/// device: the kernels' status word on a device, the host check on the CPU), a `nodes` that is
/// not a count, and edges without a node; each a typed error, none a panic.
#[test]
fn graph_entry_rejects_bad_indices_and_node_counts() {
    use kiln::registry::{Direction, Problem};
    let op = kiln::registry::find("equivariant/graph").unwrap();
    let mut rng = rng();
    for device in std::iter::once(Device::Cpu).chain(kernel_devices()) {
        let run = |problem: &Problem| -> kiln::Result<()> {
            let inputs = problem.tensors(op.as_ref(), Direction::Fwd, DType::I32, &device)?;
            let mut outputs = kiln::registry::Tensors::new();
            outputs.insert("perm".into(), Tensor::zeros(&[problem.input_shape("dst")?[0]], DType::I32, &device)?);
            op.run(Direction::Fwd, &inputs, &problem.params, &mut outputs)
        };
        let good = op.random_problem(Direction::Fwd, &[40, 5], &mut rng);
        run(&good).unwrap();
        for (name, value) in [("src", 5.0), ("dst", 7.0), ("dst", -1.0)] {
            let mut p = good.clone();
            p.inputs.get_mut(name).unwrap().data[13] = value;
            let e = run(&p).unwrap_err();
            assert!(matches!(&e, Error::InvalidValue { arg, .. } if *arg == name), "{device} {name}={value}: {e}");
            assert!(e.to_string().contains("edge 13"), "{e}");
            let e = op.reference(Direction::Fwd, &p).unwrap_err();
            assert!(matches!(&e, Error::InvalidValue { arg, .. } if *arg == name), "reference {name}={value}: {e}");
        }
        for nodes in [-1.0, 2.5, f64::from(i32::MAX) + 1.0] {
            let mut p = good.clone();
            p.params.insert("nodes".into(), nodes);
            let e = run(&p).unwrap_err();
            assert!(matches!(e, Error::InvalidValue { arg: "nodes", .. }), "{device} nodes={nodes}: {e}");
        }
        let mut p = good.clone();
        p.params.insert("nodes".into(), 0.0);
        assert!(matches!(run(&p).unwrap_err(), Error::InvalidValue { arg: "nodes", .. }));
    }
}

// ---------------------------------------------------------------------------------------
// The C ABI's argument validation, against each kernel library built in (the emulated one
// with `emu`, the nvcc-built one with `cuda`): every call here fails validation (or is empty)
// before any pointer is used, so the fake addresses are never dereferenced.

macro_rules! c_abi_validation {
    ($module:ident, $ffi:path, $feature:literal) => {
        #[cfg(feature = $feature)]
        mod $module {
            use std::ffi::c_void;
            use std::ptr::{null, null_mut};

            use ffi::{kiln_dtype, kiln_sh_normalization as Norm, kiln_status as S};
            use $ffi as ffi;

            const F32: kiln_dtype = kiln_dtype::KILN_DTYPE_F32;
            const FAKE: usize = 0x1000_0000;
            const COMPONENT: Norm = Norm::KILN_SH_COMPONENT;

            fn p(addr: usize) -> *const c_void {
                addr as *const c_void
            }
            fn pm(addr: usize) -> *mut c_void {
                addr as *mut c_void
            }
            fn ip(addr: usize) -> *const i32 {
                addr as *const i32
            }

            fn plan(dim1: i64, n_paths: i32, paths: usize) -> ffi::kiln_tp_plan {
                ffi::kiln_tp_plan {
                    paths: paths as *const ffi::kiln_tp_path,
                    n_paths,
                    cg_ijk: ip(FAKE),
                    cg_val: FAKE as *const f32,
                    dim1,
                    dim2: 4,
                    dim_out: 4,
                    weight_numel: 4,
                    cg_val_f64: FAKE as *const f64,
                    coef_f64: FAKE as *const f64,
                    wigner_cg: 0,
                }
            }

            #[test]
            fn spherical_harmonics_launchers_validate() {
                // SAFETY: every call fails validation or is empty before a pointer is used.
                unsafe {
                    let fwd = |dtype, vec, n, lmax, norm, sh| {
                        ffi::kiln_equivariant_sh_fwd(dtype, vec, n, lmax, norm, 1, sh, null_mut())
                    };
                    assert_eq!(fwd(kiln_dtype(9), p(FAKE), 4, 2, COMPONENT, pm(FAKE)), S::KILN_ERROR_INVALID_DTYPE);
                    assert_eq!(fwd(F32, p(FAKE), -1, 2, COMPONENT, pm(FAKE)), S::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(fwd(F32, p(FAKE), 4, 5, COMPONENT, pm(FAKE)), S::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(fwd(F32, p(FAKE), 4, -1, COMPONENT, pm(FAKE)), S::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(fwd(F32, p(FAKE), 4, 2, Norm(7), pm(FAKE)), S::KILN_ERROR_INVALID_VALUE);
                    assert_eq!(fwd(F32, null(), 4, 2, COMPONENT, pm(FAKE)), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(fwd(F32, p(FAKE), 4, 2, COMPONENT, null_mut()), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(fwd(F32, p(FAKE + 2), 4, 2, COMPONENT, pm(FAKE)), S::KILN_ERROR_MISALIGNED);
                    assert_eq!(fwd(F32, null(), 0, 2, COMPONENT, null_mut()), S::KILN_SUCCESS);
                    let bwd = |vec, dsh, n, dvec| {
                        ffi::kiln_equivariant_sh_bwd(F32, vec, dsh, n, 3, COMPONENT, 0, dvec, null_mut())
                    };
                    assert_eq!(bwd(p(FAKE), null(), 4, pm(FAKE)), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(bwd(p(FAKE), p(FAKE + 1), 4, pm(FAKE)), S::KILN_ERROR_MISALIGNED);
                    assert_eq!(bwd(null(), null(), 0, null_mut()), S::KILN_SUCCESS);
                }
            }

            /// Sizes are checked in the dtype's compute bytes: 2^30 nodes of 2^31 − 1 elements
            /// fit in f32 bytes (2^63 − 2^32, then the NULL x is reported), not in f64 bytes
            /// (a flat 4 bytes per element let them through, and the byte count overflowed).
            #[test]
            fn tensor_product_sizes_count_f64_as_eight_bytes() {
                let wide = plan(i64::from(i32::MAX), 0, 0);
                let nodes = 1i64 << 30;
                let f64_ = kiln_dtype::KILN_DTYPE_F64;
                // SAFETY: every call fails validation before a pointer is used.
                unsafe {
                    let fwd = |dtype| {
                        ffi::kiln_equivariant_conv_fwd(
                            dtype,
                            &wide,
                            null(),
                            p(FAKE),
                            p(FAKE),
                            1,
                            null(),
                            null(),
                            null(),
                            nodes,
                            nodes,
                            pm(FAKE),
                            null_mut(),
                        )
                    };
                    assert_eq!(fwd(F32), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(fwd(f64_), S::KILN_ERROR_INVALID_SIZE);
                }
            }

            #[test]
            fn tensor_product_launchers_validate() {
                let good = plan(4, 1, FAKE);
                // SAFETY: every call fails validation before a pointer is used.
                unsafe {
                    let conv_perm = |plan: *const ffi::kiln_tp_plan, x, src, dst_ptr, dst_perm, nodes, edges| {
                        ffi::kiln_equivariant_conv_fwd(
                            F32,
                            plan,
                            x,
                            p(FAKE),
                            p(FAKE),
                            1,
                            src,
                            dst_ptr,
                            dst_perm,
                            nodes,
                            edges,
                            pm(FAKE),
                            null_mut(),
                        )
                    };
                    let conv =
                        |plan, x, src, dst_ptr, nodes, edges| conv_perm(plan, x, src, dst_ptr, null(), nodes, edges);
                    // The receiver order is optional (NULL: sorted edges); given, it is aligned
                    // and marks graph mode as the other arrays do.
                    assert_eq!(
                        conv_perm(&good, p(FAKE), ip(FAKE), ip(FAKE), ip(FAKE + 2), 2, 3),
                        S::KILN_ERROR_MISALIGNED
                    );
                    assert_eq!(conv_perm(&good, p(FAKE), null(), null(), ip(FAKE), 2, 3), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(conv(null(), p(FAKE), ip(FAKE), ip(FAKE), 2, 3), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(conv(&plan(-1, 1, FAKE), p(FAKE), ip(FAKE), ip(FAKE), 2, 3), S::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(conv(&plan(4, 1, 0), p(FAKE), ip(FAKE), ip(FAKE), 2, 3), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(conv(&good, p(FAKE), ip(FAKE), ip(FAKE), -2, 3), S::KILN_ERROR_INVALID_SIZE);
                    // No graph: one x2 row per x1 row.
                    assert_eq!(conv(&good, p(FAKE), null(), null(), 2, 3), S::KILN_ERROR_INVALID_SIZE);
                    // A graph needs its CSR offsets, and src when there are edges.
                    assert_eq!(conv(&good, p(FAKE), ip(FAKE), null(), 2, 3), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(conv(&good, p(FAKE), null(), ip(FAKE), 2, 3), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(conv(&good, null(), ip(FAKE), ip(FAKE), 2, 3), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(conv(&good, p(FAKE + 2), ip(FAKE), ip(FAKE), 2, 3), S::KILN_ERROR_MISALIGNED);
                    assert_eq!(conv(&good, p(FAKE), ip(FAKE + 2), ip(FAKE), 2, 3), S::KILN_ERROR_MISALIGNED);
                    let tp = ffi::kiln_equivariant_tp_fwd(
                        kiln_dtype(9),
                        &good,
                        p(FAKE),
                        p(FAKE),
                        p(FAKE),
                        1,
                        2,
                        pm(FAKE),
                        null_mut(),
                    );
                    assert_eq!(tp, S::KILN_ERROR_INVALID_DTYPE);

                    // f64 storage reads the f64 tables, which a plan built before they existed
                    // leaves NULL: refused for f64 (every other dtype runs without them).
                    let old = ffi::kiln_tp_plan { cg_val_f64: null(), coef_f64: null(), ..good };
                    let f64_tp = ffi::kiln_equivariant_tp_fwd(
                        kiln_dtype::KILN_DTYPE_F64,
                        &old,
                        p(FAKE),
                        p(FAKE),
                        p(FAKE),
                        1,
                        2,
                        pm(FAKE),
                        null_mut(),
                    );
                    assert_eq!(f64_tp, S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(ffi::kiln_equivariant_workspace_bytes(-1, 4, 1), -1);
                    assert_eq!(ffi::kiln_equivariant_workspace_bytes(10, 4, 1), 160);
                    assert_eq!(ffi::kiln_equivariant_workspace_bytes(10, 4, 0), 0);
                    // Past 1024 edges, one row a fixed partition of the edges, not one an edge.
                    assert_eq!(ffi::kiln_equivariant_workspace_bytes(5000, 4, 1), 1024 * 4 * 4);
                    assert_eq!(
                        ffi::kiln_equivariant_workspace_bytes_for(kiln_dtype::KILN_DTYPE_F64, 5000, 4, 1),
                        1024 * 4 * 8
                    );
                    // Shared weights need the workspace, of the size asked for.
                    let bwd = |workspace, bytes| {
                        ffi::kiln_equivariant_tp_bwd(
                            F32,
                            &good,
                            p(FAKE),
                            p(FAKE),
                            p(FAKE),
                            1,
                            p(FAKE),
                            10,
                            pm(FAKE),
                            pm(FAKE),
                            pm(FAKE),
                            workspace,
                            bytes,
                            null_mut(),
                        )
                    };
                    assert_eq!(bwd(null_mut(), 0), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(bwd(pm(FAKE), 159), S::KILN_ERROR_WORKSPACE_TOO_SMALL);
                    let graph = ffi::kiln_equivariant_conv_bwd(
                        F32,
                        &good,
                        p(FAKE),
                        p(FAKE),
                        p(FAKE),
                        0,
                        ip(FAKE),
                        null(),
                        ip(FAKE),
                        ip(FAKE),
                        ip(FAKE),
                        p(FAKE),
                        2,
                        3,
                        pm(FAKE),
                        pm(FAKE),
                        pm(FAKE),
                        null_mut(),
                        0,
                        null_mut(),
                    );
                    assert_eq!(graph, S::KILN_ERROR_NULL_POINTER, "dst is needed by the backward");
                    // The double backward: gdout is required, upstream gradients may be NULL
                    // (zeros) but are aligned where given; the backward's workspace rules.
                    let bwd2 = |gdx: *const c_void, gdout: *mut c_void, workspace, bytes| {
                        ffi::kiln_equivariant_tp_bwd2(
                            F32,
                            &good,
                            p(FAKE),
                            p(FAKE),
                            p(FAKE),
                            1,
                            p(FAKE),
                            gdx,
                            null(),
                            null(),
                            10,
                            pm(FAKE),
                            pm(FAKE),
                            pm(FAKE),
                            gdout,
                            workspace,
                            bytes,
                            null_mut(),
                        )
                    };
                    assert_eq!(bwd2(null(), null_mut(), pm(FAKE), 160), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(bwd2(p(FAKE + 2), pm(FAKE), pm(FAKE), 160), S::KILN_ERROR_MISALIGNED);
                    assert_eq!(bwd2(null(), pm(FAKE), null_mut(), 0), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(bwd2(p(FAKE), pm(FAKE), pm(FAKE), 159), S::KILN_ERROR_WORKSPACE_TOO_SMALL);
                    // A graph call of the double backward with dst and dst_ptr as given.
                    let graph2 = |dst: *const i32, dst_ptr: *const i32| {
                        ffi::kiln_equivariant_conv_bwd2(
                            F32,
                            &good,
                            p(FAKE),
                            p(FAKE),
                            p(FAKE),
                            0,
                            ip(FAKE),
                            dst,
                            dst_ptr,
                            null(),
                            ip(FAKE),
                            ip(FAKE),
                            p(FAKE),
                            null(),
                            null(),
                            null(),
                            2,
                            3,
                            pm(FAKE),
                            pm(FAKE),
                            pm(FAKE),
                            pm(FAKE),
                            null_mut(),
                            0,
                            null_mut(),
                        )
                    };
                    assert_eq!(
                        graph2(null(), ip(FAKE)),
                        S::KILN_ERROR_NULL_POINTER,
                        "dst is needed by the double backward"
                    );
                    // Its forward passes read dst_ptr, which the backward alone does not (the
                    // C-ABI fuzz found a NULL one read).
                    assert_eq!(
                        graph2(ip(FAKE), null()),
                        S::KILN_ERROR_NULL_POINTER,
                        "dst_ptr is needed by the double backward"
                    );
                }
            }

            #[test]
            fn hessian_launchers_validate() {
                let o64 = FAKE as *const i64;
                // SAFETY: every call fails validation or is empty before a pointer is used.
                unsafe {
                    let fwd = |node_feat, mol_offset, atoms, edges, molecules| {
                        ffi::kiln_equivariant_hessian_fwd(
                            F32,
                            p(FAKE),
                            node_feat,
                            ip(FAKE),
                            ip(FAKE),
                            ip(FAKE),
                            ip(FAKE),
                            ip(FAKE),
                            mol_offset,
                            atoms,
                            edges,
                            molecules,
                            pm(FAKE),
                            null_mut(),
                        )
                    };
                    assert_eq!(fwd(p(FAKE), o64, -1, 2, 1), S::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(fwd(p(FAKE), o64, 3, 2, 4), S::KILN_ERROR_INVALID_SIZE);
                    assert_eq!(fwd(null(), o64, 3, 2, 1), S::KILN_ERROR_NULL_POINTER);
                    assert_eq!(fwd(p(FAKE), (FAKE + 4) as *const i64, 3, 2, 1), S::KILN_ERROR_MISALIGNED);
                    assert_eq!(fwd(null(), null(), 0, 0, 0), S::KILN_SUCCESS);
                    let bwd = ffi::kiln_equivariant_hessian_bwd(
                        F32,
                        p(FAKE),
                        ip(FAKE),
                        null(),
                        ip(FAKE),
                        ip(FAKE),
                        o64,
                        3,
                        2,
                        1,
                        pm(FAKE),
                        pm(FAKE),
                        null_mut(),
                    );
                    assert_eq!(bwd, S::KILN_ERROR_NULL_POINTER);
                }
            }
        }
    };
}

c_abi_validation!(c_abi_emu, kiln::ffi_emu, "emu");
c_abi_validation!(c_abi_cuda, kiln::ffi, "cuda");

// ---------------------------------------------------------------------------------------
// The convolution's edge layouts built on the device (kiln_equivariant_graph_build)

/// kiln_equivariant_graph_build on the emulator against the layouts built here: the checked
/// copies, dst_ptr and dst_perm (the edge ids stably sorted by receiver), src_ptr and src_perm,
/// for edges in random order and in receiver order (dst_perm the identity), graphs whose offset
/// scans take two passes (over 256 nodes) and whose busiest node has more edges than a warp
/// compares at once (70 edges from node 0, 40 into one node: three and two windows of the rank
/// kernel); the data errors through the status words (the lowest bad edge and its side) with
/// layouts that stay in bounds; no edges, and the argument checks.
#[cfg(feature = "emu")]
#[test]
fn graph_build_matches_the_host_layouts_and_reports_bad_edges() {
    use crate::activation::emu_mem::Buf;
    use kiln::ffi_emu as ffi;
    use std::ptr::{null, null_mut};
    const OK: i32 = 0;
    const OUT_OF_RANGE: i32 = 3;

    /// The status words, then the layouts (src, dst, dst_ptr, dst_perm, src_perm, src_ptr).
    fn build(src: &[i32], dst: &[i32], nodes: usize) -> ([i32; 2], [Vec<i32>; 6]) {
        let edges = src.len();
        let (s, d) = (Buf::with(src, 0), Buf::with(dst, 0));
        let sizes = [edges, edges, nodes + 1, edges, edges, nodes + 1];
        let out = sizes.map(|n| Buf::zeroed(4 * n.max(1)));
        let status = Buf::zeroed(8);
        // SAFETY: a pure size query, then a launch on live emulated buffers of the sizes kiln.h asks.
        unsafe {
            let bytes = ffi::kiln_equivariant_graph_workspace_bytes(nodes as i64, edges as i64);
            assert_eq!(bytes, 8 * (nodes + edges) as i64);
            let ws = Buf::zeroed(bytes as usize);
            let o = |i: usize| out[i].at::<i32>(0).cast::<i32>();
            let st = ffi::kiln_equivariant_graph_build(
                s.at::<i32>(0).cast(),
                d.at::<i32>(0).cast(),
                nodes as i64,
                edges as i64,
                o(0),
                o(1),
                o(2),
                o(3),
                o(4),
                o(5),
                status.at::<i32>(0).cast(),
                ws.at::<i32>(0),
                bytes,
                null_mut(),
            );
            assert_eq!(st, ffi::kiln_status::KILN_SUCCESS);
        }
        let words = status.read::<i32>(0, 2);
        let mut i = 0;
        let layouts = sizes.map(|n| {
            i += 1;
            out[i - 1].read::<i32>(0, n)
        });
        ([words[0], words[1]], layouts)
    }
    /// Offsets of the counts of `keys` over `nodes`, and the edge ids stably sorted by key.
    fn order(keys: &[i32], nodes: usize) -> (Vec<i32>, Vec<i32>) {
        let mut ptr = vec![0i32; nodes + 1];
        keys.iter().for_each(|&k| ptr[k as usize + 1] += 1);
        (0..nodes).for_each(|n| ptr[n + 1] += ptr[n]);
        let mut perm: Vec<i32> = (0..keys.len() as i32).collect();
        perm.sort_by_key(|&e| keys[e as usize]); // stable: edge order within a key
        (ptr, perm)
    }

    let mut rng = rng();
    for (nodes, edges, hub, shuffled) in
        [(300, 1000, 70, true), (300, 1000, 70, false), (5, 40, 33, true), (1, 3, 0, true)]
    {
        let (src, dst) = if nodes == 1 {
            (vec![0; edges], vec![0; edges])
        } else {
            let (mut src, mut dst) = sorted_graph(&mut rng, nodes.max(2), edges);
            // The hubs: the first `hub` edges come from node 0 (senders are in 0..nodes - 1),
            // the last 40 go into the last node (receivers are sorted).
            src.iter_mut().take(hub).for_each(|s| *s = 0);
            dst.iter_mut().rev().take(40).for_each(|d| *d = nodes as i32 - 1);
            if shuffled {
                use rand::seq::SliceRandom;
                let mut pairs: Vec<(i32, i32)> = src.into_iter().zip(dst).collect();
                pairs.shuffle(&mut rng);
                pairs.into_iter().unzip()
            } else {
                (src, dst)
            }
        };
        let (words, [s_out, d_out, dst_ptr, dst_perm, src_perm, src_ptr]) = build(&src, &dst, nodes);
        let what = format!("{nodes} nodes, shuffled={shuffled}");
        assert_eq!(words, [OK, -1], "{what}");
        assert_eq!((&s_out, &d_out), (&src, &dst), "checked copies, {what}");
        let (want_dst_ptr, want_dst_perm) = order(&dst, nodes);
        let (want_src_ptr, want_src_perm) = order(&src, nodes);
        assert_eq!(dst_ptr, want_dst_ptr, "dst_ptr, {what}");
        assert_eq!(dst_perm, want_dst_perm, "dst_perm, {what}");
        assert_eq!(src_ptr, want_src_ptr, "src_ptr, {what}");
        assert_eq!(src_perm, want_src_perm, "src_perm, {what}");
        if !shuffled {
            assert_eq!(dst_perm, (0..edges as i32).collect::<Vec<_>>(), "sorted edges keep their order");
        }
    }
    // Data errors: an index out of range (either side, negative or past the nodes); the lowest
    // bad edge is reported, src before dst on one edge; the layouts stay in bounds.
    let (src, dst) = (vec![0, 1, 2, 0], vec![2, 1, 1, 0]);
    assert_eq!(build(&src, &dst, 3).0, [OK, -1]);
    assert_eq!(build(&[0, 1, 3, 0], &dst, 3).0, [OUT_OF_RANGE, 2 * 2]);
    assert_eq!(build(&src, &[2, 1, 1, -1], 3).0, [OUT_OF_RANGE, 2 * 3 + 1]);
    assert_eq!(build(&[0, 9, 2, 7], &[2, 9, 1, -1], 3).0, [OUT_OF_RANGE, 2]);
    let (words, [s_out, d_out, dst_ptr, dst_perm, src_perm, src_ptr]) = build(&[0, 5, 2, 0], &[-4, 1, 1, 0], 3);
    assert_eq!(words, [OUT_OF_RANGE, 1]);
    assert_eq!((s_out, d_out), (vec![0, 0, 2, 0], vec![0, 0, 1, 0]), "bad edges copied as 0");
    assert_eq!((dst_perm, src_perm), (vec![0, 1, 2, 3], vec![0, 1, 2, 3]), "identity after an error");
    for ptr in [dst_ptr, src_ptr] {
        assert!(ptr.windows(2).all(|p| p[0] <= p[1]) && ptr[3] <= 4, "{ptr:?}: segments within the edges");
    }
    // No edges: empty segments, nothing to check.
    let (words, [_, _, dst_ptr, _, _, src_ptr]) = build(&[], &[], 4);
    assert_eq!((words, dst_ptr, src_ptr), ([OK, -1], vec![0; 5], vec![0; 5]));
    // The launcher's own checks (no launch): sizes, pointers, alignment, workspace.
    let b = Buf::zeroed(128);
    let p = |off: usize| b.at::<u8>(off).cast::<i32>();
    // SAFETY: every call fails validation before a pointer is used.
    unsafe {
        use ffi::kiln_status as S;
        let call = |src: *const i32, nodes: i64, edges: i64, perm: *mut i32, status: *mut i32, ws: i64| {
            ffi::kiln_equivariant_graph_build(
                src,
                p(0),
                nodes,
                edges,
                p(0),
                p(0),
                p(0),
                perm,
                p(0),
                p(0),
                status,
                p(0).cast(),
                ws,
                null_mut(),
            )
        };
        assert_eq!(ffi::kiln_equivariant_graph_workspace_bytes(-1, 2), -1);
        assert_eq!(ffi::kiln_equivariant_graph_workspace_bytes(i64::from(i32::MAX), 2), -1);
        assert_eq!(ffi::kiln_equivariant_graph_workspace_bytes(2, i64::from(i32::MAX) + 1), -1);
        assert_eq!(ffi::kiln_equivariant_graph_workspace_bytes(0, 2), -1, "edges need a node");
        assert_eq!(ffi::kiln_equivariant_graph_workspace_bytes(0, 0), 0);
        assert_eq!(call(p(0), -1, 2, p(0), p(0), 128), S::KILN_ERROR_INVALID_SIZE);
        assert_eq!(call(p(0), 0, 2, p(0), p(0), 128), S::KILN_ERROR_INVALID_SIZE);
        assert_eq!(call(null(), 3, 2, p(0), p(0), 128), S::KILN_ERROR_NULL_POINTER);
        assert_eq!(call(p(0), 3, 2, null_mut(), p(0), 128), S::KILN_ERROR_NULL_POINTER);
        assert_eq!(call(p(0), 3, 2, p(0), null_mut(), 128), S::KILN_ERROR_NULL_POINTER);
        assert_eq!(call(p(2), 3, 2, p(0), p(0), 128), S::KILN_ERROR_MISALIGNED);
        assert_eq!(call(p(0), 3, 2, p(6), p(0), 128), S::KILN_ERROR_MISALIGNED);
        assert_eq!(call(p(0), 3, 2, p(0), p(0), 39), S::KILN_ERROR_WORKSPACE_TOO_SMALL);
        let no_workspace = ffi::kiln_equivariant_graph_build(
            p(0),
            p(0),
            3,
            2,
            p(0),
            p(0),
            p(0),
            p(0),
            p(0),
            p(0),
            p(0),
            null_mut(),
            40,
            null_mut(),
        );
        assert_eq!(no_workspace, S::KILN_ERROR_NULL_POINTER);
    }
}
