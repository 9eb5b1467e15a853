//! The ntk family's f64 references (issue 27, step 1): the Gram-Hadamard product's backward
//! against finite differences, its symmetry, and the pNTK of small MLPs against the definition
//! (finite-difference parameter Jacobians of s = Σ_j f_j / √O, contracted).

use kiln::Error;
use kiln::ntk::cpu::{Activation, Dense, GramOperands, Mlp, gram_hadamard, gram_hadamard_backward, pntk};
use rand::rngs::StdRng;

use crate::common::{assert_close, central_gradient, dot, rng, uniform};

#[test]
fn gram_hadamard_backward_matches_finite_differences() {
    let mut rng = rng();
    let (n1, n2, p, q) = (3, 4, 5, 2);
    let (d1, a1, d2, a2) = (
        uniform(&mut rng, n1 * p, -1.0, 1.0),
        uniform(&mut rng, n1 * q, -1.0, 1.0),
        uniform(&mut rng, n2 * p, -1.0, 1.0),
        uniform(&mut rng, n2 * q, -1.0, 1.0),
    );
    let dk = uniform(&mut rng, n1 * n2, -1.0, 1.0);
    for (bias, scale) in [(true, 1.0), (false, 0.7)] {
        let ops = GramOperands { d1: &d1, a1: &a1, d2: &d2, a2: &a2, n1, n2, p, q };
        let g = gram_hadamard_backward(&ops, bias, scale, &dk).unwrap();
        let loss = |o: &GramOperands| dot(&gram_hadamard(o, bias, scale).unwrap(), &dk);
        let what = format!("bias={bias} scale={scale}");
        let h = 1e-6;
        assert_close(
            &g.dd1,
            &central_gradient(&d1, h, |v| loss(&GramOperands { d1: v, ..ops })),
            1e-8,
            &format!("dd1 {what}"),
        );
        assert_close(
            &g.da1,
            &central_gradient(&a1, h, |v| loss(&GramOperands { a1: v, ..ops })),
            1e-8,
            &format!("da1 {what}"),
        );
        assert_close(
            &g.dd2,
            &central_gradient(&d2, h, |v| loss(&GramOperands { d2: v, ..ops })),
            1e-8,
            &format!("dd2 {what}"),
        );
        assert_close(
            &g.da2,
            &central_gradient(&a2, h, |v| loss(&GramOperands { a2: v, ..ops })),
            1e-8,
            &format!("da2 {what}"),
        );
        // K itself, entry by entry from its definition.
        let k = gram_hadamard(&ops, bias, scale).unwrap();
        let c = if bias { 1.0 } else { 0.0 };
        let want: Vec<f64> = (0..n1 * n2)
            .map(|t| {
                let (i, j) = (t / n2, t % n2);
                scale
                    * dot(&d1[i * p..(i + 1) * p], &d2[j * p..(j + 1) * p])
                    * (dot(&a1[i * q..(i + 1) * q], &a2[j * q..(j + 1) * q]) + c)
            })
            .collect();
        assert_close(&k, &want, 1e-14, &format!("K {what}"));
    }
}

#[test]
fn gram_hadamard_of_one_side_with_itself_is_symmetric() {
    let mut rng = rng();
    let (n, p, q) = (6, 3, 4);
    let (d, a) = (uniform(&mut rng, n * p, -1.0, 1.0), uniform(&mut rng, n * q, -1.0, 1.0));
    let k = gram_hadamard(&GramOperands { d1: &d, a1: &a, d2: &d, a2: &a, n1: n, n2: n, p, q }, true, 1.0).unwrap();
    for i in 0..n {
        assert!(k[i * n + i] >= 0.0, "diagonal {i}: {}", k[i * n + i]);
        for j in 0..n {
            assert_eq!(k[i * n + j], k[j * n + i], "({i}, {j})");
        }
    }
}

fn random_mlp(rng: &mut StdRng, widths: &[usize], bias: bool, activation: Activation) -> Mlp {
    let layers = widths
        .windows(2)
        .map(|w| {
            let b = bias.then(|| uniform(rng, w[1], -1.0, 1.0));
            Dense::new(uniform(rng, w[0] * w[1], -1.0, 1.0), b, w[0], w[1]).unwrap()
        })
        .collect();
    Mlp { layers, activation }
}

/// Per-sample Jacobians of g(f(x)) over every parameter by central differences: `[n, P]`.
fn jacobian(mlp: &Mlp, x: &[f64], n: usize, g: impl Fn(&[f64]) -> f64) -> Vec<Vec<f64>> {
    let outputs = mlp.layers.last().unwrap().outputs;
    let theta = mlp.parameters();
    (0..n)
        .map(|s| {
            let xs = &x[s * mlp.layers[0].inputs..(s + 1) * mlp.layers[0].inputs];
            central_gradient(&theta, 1e-5, |t| {
                let f = mlp.with_parameters(t).unwrap().forward(xs, 1).unwrap();
                assert_eq!(f.len(), outputs);
                g(&f)
            })
        })
        .collect()
}

fn contract(j1: &[Vec<f64>], j2: &[Vec<f64>]) -> Vec<f64> {
    j1.iter().flat_map(|a| j2.iter().map(move |b| dot(a, b))).collect()
}

#[test]
fn pntk_of_one_linear_layer_is_x_dot_x_plus_one() {
    let mut rng = rng();
    let mlp = random_mlp(&mut rng, &[4, 3], true, Activation::Tanh);
    let (x1, x2) = (uniform(&mut rng, 2 * 4, -1.0, 1.0), uniform(&mut rng, 3 * 4, -1.0, 1.0));
    let k = pntk(&mlp, &x1, 2, &x2, 3).unwrap();
    let want: Vec<f64> =
        (0..6).map(|t| dot(&x1[(t / 3) * 4..(t / 3 + 1) * 4], &x2[(t % 3) * 4..(t % 3 + 1) * 4]) + 1.0).collect();
    assert_close(&k, &want, 1e-13, "x·x′ + 1");
}

#[test]
fn pntk_equals_the_contraction_of_finite_difference_jacobians() {
    let mut rng = rng();
    for (widths, bias, activation) in
        [(&[3usize, 5, 4, 2][..], true, Activation::Tanh), (&[2, 6, 3][..], false, Activation::Relu)]
    {
        let mlp = random_mlp(&mut rng, widths, bias, activation);
        let (n1, n2) = (3, 2);
        let (x1, x2) = (uniform(&mut rng, n1 * widths[0], -1.0, 1.0), uniform(&mut rng, n2 * widths[0], -1.0, 1.0));
        let outputs = *widths.last().unwrap();
        let s = |f: &[f64]| f.iter().sum::<f64>() / (outputs as f64).sqrt();
        let want = contract(&jacobian(&mlp, &x1, n1, s), &jacobian(&mlp, &x2, n2, s));
        let k = pntk(&mlp, &x1, n1, &x2, n2).unwrap();
        assert_close(&k, &want, 1e-7, &format!("{widths:?} {activation:?}"));
        // The sum-of-logits identity: K = (1/O)·Σ_{j,k} eNTK_jk(x, x′), eNTK from each output's
        // own Jacobian.
        let per_output: Vec<_> =
            (0..outputs).map(|j| (jacobian(&mlp, &x1, n1, |f| f[j]), jacobian(&mlp, &x2, n2, |f| f[j]))).collect();
        let mut entk_sum = vec![0.0; n1 * n2];
        for (j1, _) in &per_output {
            for (_, j2) in &per_output {
                for (acc, v) in entk_sum.iter_mut().zip(contract(j1, j2)) {
                    *acc += v / outputs as f64;
                }
            }
        }
        assert_close(&k, &entk_sum, 1e-7, &format!("(1/O)·Σ eNTK {widths:?}"));
    }
}

#[test]
fn mismatched_shapes_are_typed_errors() {
    let v = [0.0; 12];
    let ops = GramOperands { d1: &v[..6], a1: &v[..4], d2: &v[..9], a2: &v[..6], n1: 2, n2: 3, p: 3, q: 2 };
    gram_hadamard(&ops, true, 1.0).unwrap();
    let short = GramOperands { a2: &v[..5], ..ops };
    assert!(matches!(gram_hadamard(&short, true, 1.0), Err(Error::Shape { arg: "a2", .. })));
    assert!(matches!(gram_hadamard_backward(&ops, true, 1.0, &v[..5]), Err(Error::Shape { arg: "dk", .. })));
    assert!(matches!(Dense::new(vec![0.0; 5], None, 2, 3), Err(Error::Shape { arg: "w", .. })));
    assert!(matches!(Dense::new(vec![0.0; 6], Some(vec![0.0; 2]), 2, 3), Err(Error::Shape { arg: "b", .. })));
    let layer = |i, o| Dense::new(vec![0.0; i * o], None, i, o).unwrap();
    let broken = Mlp { layers: vec![layer(2, 3), layer(4, 1)], activation: Activation::Tanh };
    assert!(matches!(broken.forward(&[0.0; 2], 1), Err(Error::InvalidValue { arg: "mlp", .. })));
    let mlp = Mlp { layers: vec![layer(2, 3)], activation: Activation::Tanh };
    assert!(matches!(pntk(&mlp, &[0.0; 3], 1, &[0.0; 2], 1), Err(Error::Shape { arg: "x", .. })));
    assert!(matches!(mlp.with_parameters(&[0.0; 5]), Err(Error::Shape { arg: "theta", .. })));
    assert!(matches!(
        Mlp { layers: vec![], activation: Activation::Relu }.forward(&[], 0),
        Err(Error::InvalidValue { arg: "mlp", .. })
    ));
}
