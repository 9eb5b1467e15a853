//! S-GCN's f64 references (issue 28, step 1): the harmonics against their angle form and the
//! sphere's inner products (orthogonal, norms 1 for m = 0 and 2 otherwise: the featurizer's
//! factor 2 on the real and imaginary parts), every gradient against central differences, and
//! the convolution against a dense formulation.

use kiln::Error;
use kiln::sgcn::cpu::{Act, Conv, conv, conv_backward, sh, sh_backward, sh_columns};
use rand::rngs::StdRng;

use crate::common::{assert_close, central_gradient, dot, rng, uniform};

/// P_l^m(t) with the Condon-Shortley phase, by the standard recurrences in m then l.
fn assoc_legendre(l: usize, m: usize, t: f64) -> f64 {
    let s = (1.0 - t * t).max(0.0).sqrt();
    let mut pmm = 1.0;
    for k in 1..=m {
        pmm *= -((2 * k - 1) as f64) * s;
    }
    if l == m {
        return pmm;
    }
    let mut pm1 = t * (2 * m + 1) as f64 * pmm;
    if l == m + 1 {
        return pm1;
    }
    let mut pm0 = pmm;
    for ll in m + 2..=l {
        let next = ((2 * ll - 1) as f64 * t * pm1 - (ll + m - 1) as f64 * pm0) / (ll - m) as f64;
        pm0 = pm1;
        pm1 = next;
    }
    pm1
}

fn factorial(n: usize) -> f64 {
    (1..=n).map(|k| k as f64).product()
}

/// The columns from θ and φ as the featurizer writes them.
fn sh_by_angles(v: &[f64], order: usize) -> Vec<f64> {
    let rho = dot(v, v).sqrt();
    let (theta, phi) = ((v[2] / rho).acos(), v[1].atan2(v[0]));
    let mut out = Vec::new();
    for l in 0..order {
        let y = |m: usize| {
            let f = ((2 * l + 1) as f64 / (4.0 * std::f64::consts::PI) * factorial(l - m) / factorial(l + m)).sqrt();
            let p = f * assoc_legendre(l, m, theta.cos());
            (p * (m as f64 * phi).cos(), p * (m as f64 * phi).sin())
        };
        out.extend((1..=l).map(|m| -2.0 * y(m).1));
        out.push(y(0).0);
        out.extend((1..=l).map(|m| 2.0 * y(m).0));
    }
    out
}

#[test]
fn harmonics_match_their_angle_form_and_the_spheres_inner_products() {
    let mut rng = rng();
    let order = 5;
    assert_eq!(sh_columns(order), 25);
    for _ in 0..6 {
        let v = uniform(&mut rng, 3, -2.0, 2.0);
        assert_close(&sh(&v, order).unwrap(), &sh_by_angles(&v, order), 1e-12, "angle form");
    }
    // Inner products over the sphere: Simpson in cos θ, the trapezoid in φ (exact for these
    // trigonometric degrees); columns are orthogonal, with norms 1 (m = 0) and 2 (m ≠ 0).
    let (nt, np) = (2000, 24);
    let cols = sh_columns(order);
    let mut gram = vec![0.0; cols * cols];
    for a in 0..=nt {
        let t = -1.0 + 2.0 * a as f64 / nt as f64;
        let w = if a == 0 || a == nt {
            1.0
        } else if a % 2 == 1 {
            4.0
        } else {
            2.0
        };
        let s = (1.0 - t * t).max(0.0).sqrt();
        for b in 0..np {
            let phi = 2.0 * std::f64::consts::PI * b as f64 / np as f64;
            let y = sh(&[s * phi.cos(), s * phi.sin(), t], order).unwrap();
            let weight = w * (2.0 / nt as f64) / 3.0 * (2.0 * std::f64::consts::PI / np as f64);
            for i in 0..cols {
                for j in 0..cols {
                    gram[i * cols + j] += weight * y[i] * y[j];
                }
            }
        }
    }
    let mut want = vec![0.0; cols * cols];
    for l in 0..order {
        for (k, m) in (1..=l).chain([0]).chain(1..=l).enumerate() {
            let col = l * l + k;
            want[col * cols + col] = if m == 0 { 1.0 } else { 2.0 };
        }
    }
    assert_close(&gram, &want, 1e-6, "∫ sh_i·sh_j dΩ");
    // The axis: φ = 0 there, so only the m = 0 columns live.
    let axis = sh(&[0.0, 0.0, -3.0], order).unwrap();
    assert_close(&axis, &sh_by_angles(&[0.0, 0.0, -3.0], order), 1e-12, "on the axis");
}

#[test]
fn harmonics_gradient_matches_finite_differences() {
    let mut rng = rng();
    let order = 5;
    let v = uniform(&mut rng, 4 * 3, -2.0, 2.0);
    let dsh = uniform(&mut rng, 4 * sh_columns(order), -1.0, 1.0);
    let g = sh_backward(&v, order, &dsh).unwrap();
    let fd = central_gradient(&v, 1e-6, |w| dot(&sh(w, order).unwrap(), &dsh));
    assert_close(&g, &fd, 1e-6, "dv");
    // The origin: no direction, no gradient.
    assert_eq!(sh_backward(&[0.0; 3], order, &[1.0; 25]).unwrap(), vec![0.0; 3]);
}

struct Graph {
    x: Vec<f64>,
    recv: Vec<usize>,
    send: Vec<usize>,
    coeff: Vec<f64>,
    sh: Vec<f64>,
    w0: Vec<f64>,
    wk: Vec<f64>,
    b: Vec<f64>,
}

const N: usize = 4;
const CI: usize = 3;
const CO: usize = 2;
const K: usize = 4;

fn graph(rng: &mut StdRng) -> Graph {
    let recv = vec![0, 2, 2, 3, 1, 2, 0];
    let send = vec![1, 0, 3, 3, 2, 1, 0];
    let e = recv.len();
    Graph {
        x: uniform(rng, N * CI, -1.0, 1.0),
        coeff: uniform(rng, e, 0.2, 1.0),
        sh: uniform(rng, e * K, -1.0, 1.0),
        w0: uniform(rng, CI * CO, -1.0, 1.0),
        wk: uniform(rng, K * CI * CO, -1.0, 1.0),
        b: uniform(rng, CO, -1.0, 1.0),
        recv,
        send,
    }
}

fn view(g: &Graph, act: Act) -> Conv<'_> {
    Conv {
        x: &g.x,
        recv: &g.recv,
        send: &g.send,
        coeff: &g.coeff,
        sh: &g.sh,
        w0: &g.w0,
        wk: &g.wk,
        b: &g.b,
        nodes: N,
        ci: CI,
        co: CO,
        k: K,
        act,
    }
}

#[test]
fn convolution_matches_a_dense_formulation_and_its_gradients_match() {
    let mut rng = rng();
    let g = graph(&mut rng);
    for act in [Act::Identity, Act::Relu, Act::Elu, Act::Sigmoid] {
        let p = view(&g, act);
        // Dense: per k the adjacency matrix A_k[i, j] = Σ_{e: i ← j} c_e·sh[e, k], then
        // act(X·W0 + Σ_k A_k·X·W_k + b): the original's 25 sparse and 25 dense matmuls.
        let mut z = [0.0; N * CO];
        for i in 0..N {
            for o in 0..CO {
                z[i * CO + o] = g.b[o] + (0..CI).map(|c| g.x[i * CI + c] * g.w0[c * CO + o]).sum::<f64>();
            }
        }
        for k in 0..K {
            let mut adj = [0.0; N * N];
            for e in 0..g.recv.len() {
                adj[g.recv[e] * N + g.send[e]] += g.coeff[e] * g.sh[e * K + k];
            }
            for i in 0..N {
                for o in 0..CO {
                    for j in 0..N {
                        let xw: f64 = (0..CI).map(|c| g.x[j * CI + c] * g.wk[(k * CI + c) * CO + o]).sum();
                        z[i * CO + o] += adj[i * N + j] * xw;
                    }
                }
            }
        }
        let want: Vec<f64> = z
            .iter()
            .map(|&v| match act {
                Act::Identity => v,
                Act::Relu => v.max(0.0),
                Act::Elu => {
                    if v > 0.0 {
                        v
                    } else {
                        v.exp() - 1.0
                    }
                }
                Act::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            })
            .collect();
        assert_close(&conv(&p).unwrap(), &want, 1e-13, &format!("dense {act:?}"));

        let dout = uniform(&mut rng, N * CO, -1.0, 1.0);
        let gr = conv_backward(&p, &dout).unwrap();
        let loss = |q: &Conv| dot(&conv(q).unwrap(), &dout);
        let h = 1e-6;
        let what = |n: &str| format!("{n} {act:?}");
        assert_close(&gr.dx, &central_gradient(&g.x, h, |v| loss(&Conv { x: v, ..p })), 1e-7, &what("dx"));
        assert_close(&gr.dsh, &central_gradient(&g.sh, h, |v| loss(&Conv { sh: v, ..p })), 1e-7, &what("dsh"));
        assert_close(&gr.dw0, &central_gradient(&g.w0, h, |v| loss(&Conv { w0: v, ..p })), 1e-7, &what("dw0"));
        assert_close(&gr.dwk, &central_gradient(&g.wk, h, |v| loss(&Conv { wk: v, ..p })), 1e-7, &what("dwk"));
        assert_close(&gr.db, &central_gradient(&g.b, h, |v| loss(&Conv { b: v, ..p })), 1e-7, &what("db"));
        let dc = central_gradient(&g.coeff, h, |v| loss(&Conv { coeff: v, ..p }));
        assert_close(&gr.dcoeff, &dc, 1e-7, &what("dcoeff"));
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut rng = rng();
    let g = graph(&mut rng);
    let p = view(&g, Act::Relu);
    conv(&p).unwrap();
    let recv = [0, 2, 9, 3, 1, 2, 0];
    assert!(matches!(conv(&Conv { recv: &recv, ..p }), Err(Error::InvalidValue { arg: "recv", .. })));
    assert!(matches!(conv(&Conv { send: &recv, ..p }), Err(Error::InvalidValue { arg: "send", .. })));
    assert!(matches!(conv(&Conv { send: &recv[..6], ..p }), Err(Error::Shape { arg: "send", .. })));
    assert!(matches!(conv(&Conv { sh: &g.sh[..5], ..p }), Err(Error::Shape { arg: "sh", .. })));
    assert!(matches!(conv(&Conv { wk: &g.wk[..5], ..p }), Err(Error::Shape { arg: "wk", .. })));
    assert!(matches!(conv(&Conv { coeff: &g.coeff[..2], ..p }), Err(Error::Shape { arg: "coeff", .. })));
    assert!(matches!(conv_backward(&p, &[0.0; 3]), Err(Error::Shape { arg: "dout", .. })));
    assert!(matches!(sh(&[1.0, 2.0], 3), Err(Error::Shape { arg: "v", .. })));
    assert!(matches!(sh_backward(&[1.0, 2.0, 3.0], 3, &[0.0; 4]), Err(Error::Shape { arg: "dsh", .. })));
}
