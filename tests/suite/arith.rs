//! The arithmetic units' f64 references on their own: every gradient against central
//! differences, the NMU's zero terms, the regularisers' values and torch's conventions at their
//! kinks, the λ schedule, the success criterion against the published thresholds and a Monte
//! Carlo, and bad input.

use crate::common::{rng, uniform};
use kiln::Error;
use kiln::arith::cpu::{self, NaluParams, Unit};
use kiln::arith::{Operation, RegShape, Subsets, lambda_schedule, maep_threshold};
use rand::Rng;
use rand::rngs::StdRng;

/// Central differences of Σ dout·f(v) in each entry of v.
fn fd(v: &[f64], dout: &[f64], f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    const H: f64 = 1e-6;
    (0..v.len())
        .map(|k| {
            let at = |h: f64| {
                let mut p = v.to_vec();
                p[k] += h;
                f(&p).iter().zip(dout).map(|(y, g)| y * g).sum::<f64>()
            };
            (at(H) - at(-H)) / (2.0 * H)
        })
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{what}[{k}]: {g} vs {w}");
    }
}

/// Weights away from the clamps' bounds and the regularisers' kinks (central differences
/// straddle a kink closer than the step), some outside the clamp range on both sides.
fn weights(rng: &mut StdRng, n: usize, lo: f64, hi: f64, kinks: &[f64]) -> Vec<f64> {
    (0..n)
        .map(|_| {
            loop {
                let v = rng.random_range(lo..hi);
                if kinks.iter().all(|k| (v - k).abs() > 1e-3) {
                    break v;
                }
            }
        })
        .collect()
}

#[test]
fn nau_and_nmu_gradients_match_finite_differences() {
    let mut rng = rng();
    let (b, i, o) = (3, 5, 4);
    let x = uniform(&mut rng, b * i, -2.0, 2.0);
    let dz = uniform(&mut rng, b * o, -1.0, 1.0);
    let w = weights(&mut rng, o * i, -1.5, 1.5, &[-1.0, 1.0]);
    let g = cpu::nau_backward(&x, &w, &dz, b, i, o).unwrap();
    assert_close(&g.dx, &fd(&x, &dz, |x| cpu::nau_forward(x, &w, b, i, o).unwrap()), "nau dx");
    assert_close(&g.dw, &fd(&w, &dz, |w| cpu::nau_forward(&x, w, b, i, o).unwrap()), "nau dw");
    assert!(w.iter().zip(&g.dw).all(|(w, d)| w.abs() <= 1.0 || *d == 0.0), "clamped weights get no gradient");
    for eps in [0.0, 0.1] {
        let w = weights(&mut rng, o * i, -0.4, 1.4, &[eps, 1.0]);
        let g = cpu::nmu_backward(&x, &w, &dz, b, i, o, eps).unwrap();
        let what = format!("nmu eps={eps}");
        assert_close(&g.dx, &fd(&x, &dz, |x| cpu::nmu_forward(x, &w, b, i, o, eps).unwrap()), &format!("{what} dx"));
        assert_close(&g.dw, &fd(&w, &dz, |w| cpu::nmu_forward(&x, w, b, i, o, eps).unwrap()), &format!("{what} dw"));
    }
}

/// A zero term makes the product 0 and leaves one nonzero gradient (its own); two make every
/// gradient 0. No division: the products of the other terms are exact.
#[test]
fn nmu_zero_terms_give_exact_gradients() {
    let w = [1.0, 1.0, 1.0];
    // Terms 2, 0, 3 (W = 1: the term is x).
    let z = cpu::nmu_forward(&[2.0, 0.0, 3.0], &w, 1, 3, 1, 0.0).unwrap();
    assert_eq!(z, vec![0.0]);
    let g = cpu::nmu_backward(&[2.0, 0.0, 3.0], &w, &[1.0], 1, 3, 1, 0.0).unwrap();
    assert_eq!(g.dx, vec![0.0, 6.0, 0.0]);
    assert_eq!(g.dw, vec![0.0, -6.0, 0.0]);
    // Two zero terms.
    let g = cpu::nmu_backward(&[0.0, 0.0, 3.0], &w, &[1.0], 1, 3, 1, 0.0).unwrap();
    assert_eq!(g.dx, vec![0.0; 3]);
    assert_eq!(g.dw, vec![0.0; 3]);
    // A zero from the weight side: W = 0.5, x = −1 gives 0.5·(−1) + 0.5 = 0.
    let g = cpu::nmu_backward(&[-1.0, 4.0], &[0.5, 1.0], &[2.0], 1, 2, 1, 0.0).unwrap();
    assert_eq!(g.dx, vec![2.0 * 0.5 * 4.0, 0.0]);
    assert_eq!(g.dw, vec![2.0 * (-1.0 - 1.0) * 4.0, 0.0]);
}

#[test]
fn regularizers_match_values_finite_differences_and_torch_conventions() {
    // Hand values (NAU, linear): min(|W|, |1 − |W||) = 0.5, 0.25, 0.5, 0 → mean 0.3125;
    // relu(|W| − 1) = 0, 0, 0.5, 0 → 0.125; the largest distance 0.5.
    let w = [0.5, -0.25, 1.5, 0.0];
    let r = cpu::regularizers(Unit::Nau, RegShape::Linear, &w).unwrap();
    assert_eq!((r.sparse, r.oob, r.sparsity_error), (0.3125, 0.125, 0.5));
    let r = cpu::regularizers(Unit::Nau, RegShape::Squared, &w).unwrap();
    // W²(1 − |W|)²: 0.0625, 0.03515625, 0.5625, 0; relu(·)²: 0.25.
    assert_eq!((r.sparse, r.oob), ((0.0625 + 0.03515625 + 0.5625) / 4.0, 0.0625));
    let r = cpu::regularizers(Unit::Nmu, RegShape::Linear, &[1.5, -0.5, 0.25, 1.0]).unwrap();
    // min(|W|, |1 − W|): 0.5, 0.5, 0.25, 0; relu(|W − ½| − ½): 0.5, 0.5, 0, 0.
    assert_eq!((r.sparse, r.oob), (0.3125, 0.25));
    // Kinks: a tie of the min sends half to each side (W = ½: +1 and −1 cancel), |·|′(0) = 0,
    // relu′(0) = 0 (W = 1 for the NAU, W = 0 and 1 for the NMU).
    let d = cpu::regularizers_backward(Unit::Nau, RegShape::Linear, &[0.5, 0.0, 1.0], 1.0, 1.0).unwrap();
    assert_eq!(d, vec![0.0, 0.0, 0.0], "NAU: a tie, |·|′(0) on both sides, relu′(0) at the bound");
    let d = cpu::regularizers_backward(Unit::Nmu, RegShape::Linear, &[0.5, 0.0, 1.0], 0.0, 1.0).unwrap();
    assert_eq!(d, vec![0.0, 0.0, 0.0], "NMU: relu′(0) = 0 at both bounds");

    let mut rng = rng();
    for unit in [Unit::Nau, Unit::Nmu] {
        for shape in [RegShape::Linear, RegShape::Squared] {
            let kinks = [-1.0, -0.5, 0.0, 0.5, 1.0];
            let w = weights(&mut rng, 12, -1.6, 1.6, &kinks);
            let (ds, db) = (0.7, -1.3);
            let got = cpu::regularizers_backward(unit, shape, &w, ds, db).unwrap();
            let want = fd(&w, &[ds, db], |w| {
                let r = cpu::regularizers(unit, shape, w).unwrap();
                vec![r.sparse, r.oob]
            });
            assert_close(&got, &want, &format!("{unit:?} {shape:?}"));
        }
    }
}

#[test]
fn nalu_gradients_match_finite_differences() {
    let mut rng = rng();
    let (b, i, o, eps) = (3, 4, 2, 1e-7);
    // |x| away from 0 (log's kink) and small enough that exp stays moderate.
    let x: Vec<f64> = uniform(&mut rng, b * i, 0.3, 1.5).iter().map(|v| if rng.random() { *v } else { -v }).collect();
    let (w_hat, m_hat, g) =
        (uniform(&mut rng, o * i, -1.0, 1.0), uniform(&mut rng, o * i, -1.0, 1.0), uniform(&mut rng, o * i, -1.0, 1.0));
    let bias = uniform(&mut rng, o, -0.5, 0.5);
    let dy = uniform(&mut rng, b * o, -1.0, 1.0);
    let p = NaluParams { w_hat: &w_hat, m_hat: &m_hat, g: &g, bias: &bias };
    let got = cpu::nalu_backward(&x, p, &dy, b, i, o, eps).unwrap();
    let f = |p: NaluParams, x: &[f64]| cpu::nalu_forward(x, p, b, i, o, eps).unwrap();
    assert_close(&got.dx, &fd(&x, &dy, |x| f(p, x)), "dx");
    assert_close(&got.dw_hat, &fd(&w_hat, &dy, |v| f(NaluParams { w_hat: v, ..p }, &x)), "dw_hat");
    assert_close(&got.dm_hat, &fd(&m_hat, &dy, |v| f(NaluParams { m_hat: v, ..p }, &x)), "dm_hat");
    assert_close(&got.dg, &fd(&g, &dy, |v| f(NaluParams { g: v, ..p }, &x)), "dg");
    assert_close(&got.dbias, &fd(&bias, &dy, |v| f(NaluParams { bias: v, ..p }, &x)), "dbias");
    // With W = 1 (Ŵ, M̂ large) and the gate shut (g → 0) the NALU multiplies: y = Π (|x| + eps).
    let big = vec![30.0; 2];
    let y = cpu::nalu_forward(
        &[3.0, -4.0],
        NaluParams { w_hat: &big, m_hat: &big, g: &[0.0, 0.0], bias: &[-60.0] },
        1,
        2,
        1,
        eps,
    )
    .unwrap();
    assert!((y[0] - 12.0).abs() < 1e-5, "{y:?}");
}

#[test]
fn lambda_schedule_ramps_between_its_steps() {
    assert_eq!(lambda_schedule(0.01, 5e3, 5e4, 0.0), 0.0);
    assert_eq!(lambda_schedule(0.01, 5e3, 5e4, 5e3), 0.0);
    assert!((lambda_schedule(0.01, 5e3, 5e4, 27_500.0) - 0.005).abs() < 1e-15);
    assert_eq!(lambda_schedule(0.01, 5e3, 5e4, 1e6), 0.01);
    assert_eq!(lambda_schedule(10.0, 1e6, 1e6, 1e6), 10.0, "a step");
    assert_eq!(lambda_schedule(10.0, 1e6, 1e6, 999_999.0), 0.0);
}

/// The closed form against the published thresholds (the authors' Monte Carlo over 10⁶ draws:
/// within 0.5%) for both subset conventions, and against a Monte Carlo here.
#[test]
fn success_threshold_matches_the_published_values_and_a_monte_carlo() {
    let range = (2.0, 6.0);
    let published = Subsets::published(100, 0.25, 0.5);
    let data = Subsets::data(100, 0.25, 0.5);
    assert_eq!((published.size, published.overlap, data.size, data.overlap), (26, 13, 25, 12));
    for (subsets, add, sub, mul) in [(published, 1.4785e-5, 1.3867e-8, 0.16002), (data, 1.6039e-5, 1.3867e-8, 0.16056)]
    {
        for (op, want) in [(Operation::Add, add), (Operation::Sub, sub), (Operation::Mul, mul)] {
            let got = maep_threshold(op, subsets, range, 1e-5).unwrap();
            assert!((got / want - 1.0).abs() < 5e-3, "{op:?} {subsets:?}: {got} vs published {want}");
        }
    }
    // A Monte Carlo of the perturbed solution (W = ε off the subsets, 1 − ε on them).
    let mut rng = rng();
    let (n, eps, draws) = (100, 1e-5, 20_000);
    let (size, overlap) = (data.size, data.overlap);
    let in_a = |i: usize| i < size;
    let in_b = |i: usize| i >= size - overlap && i < 2 * size - overlap;
    let mut sums = [0.0f64; 3];
    for _ in 0..draws {
        // The exact sums a, b and their shifts D = Σ_{outside} x − Σ_{inside} x: the perturbed
        // sums are a + ε·D1 and b + ε·D2.
        let (mut a, mut b, mut d1, mut d2) = (0.0, 0.0, 0.0, 0.0);
        for i in 0..n {
            let v: f64 = rng.random_range(range.0..range.1);
            if in_a(i) {
                a += v;
                d1 -= v;
            } else {
                d1 += v;
            }
            if in_b(i) {
                b += v;
                d2 -= v;
            } else {
                d2 += v;
            }
        }
        let (ap, bp) = (a + eps * d1, b + eps * d2);
        sums[0] += ((ap + bp) - (a + b)).powi(2);
        sums[1] += ((ap - bp) - (a - b)).powi(2);
        sums[2] += (ap * bp - a * b).powi(2);
    }
    for (k, op) in [Operation::Add, Operation::Sub, Operation::Mul].into_iter().enumerate() {
        let mc = sums[k] / draws as f64;
        let exact = maep_threshold(op, data, range, eps).unwrap();
        // The squared error's relative spread per draw: ~√2 for sub (a centred form), ~0.1 for
        // add and mul (forms with a large mean); over 2·10⁴ draws, 1% and 0.08%: 5 and 12 σ.
        let tol = if op == Operation::Sub { 0.05 } else { 0.01 };
        assert!((mc / exact - 1.0).abs() < tol, "{op:?}: Monte Carlo {mc} vs closed form {exact}");
    }
}

#[test]
fn arith_references_reject_bad_input() {
    let e = cpu::nau_forward(&[1.0; 5], &[1.0; 6], 2, 3, 2).unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "x", .. }), "{e}");
    let e = cpu::nmu_forward(&[1.0; 6], &[1.0; 5], 2, 3, 2, 0.0).unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "w", .. }), "{e}");
    let e = cpu::nmu_backward(&[1.0; 6], &[1.0; 6], &[1.0; 3], 2, 3, 2, 0.0).unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "dz", .. }), "{e}");
    let e = cpu::nmu_forward(&[1.0; 6], &[1.0; 6], 2, 3, 2, 1.5).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { arg: "eps", .. }), "{e}");
    let e = cpu::regularizers(Unit::Nau, RegShape::Linear, &[]).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { arg: "w", .. }), "{e}");
    let e = RegShape::parse("cubic").unwrap_err();
    assert!(matches!(e, Error::InvalidValue { arg: "shape", .. }), "{e}");
    assert_eq!(RegShape::parse("squared").unwrap(), RegShape::Squared);
    let one = [1.0];
    let p = NaluParams { w_hat: &one, m_hat: &one, g: &one, bias: &[0.0, 0.0] };
    let e = cpu::nalu_forward(&one, p, 1, 1, 1, 1e-7).unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "bias", .. }), "{e}");
    let p = NaluParams { bias: &[0.0], ..p };
    let e = cpu::nalu_forward(&one, p, 1, 1, 1, 0.0).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { arg: "eps", .. }), "{e}");
    let e =
        maep_threshold(Operation::Add, Subsets { input_size: 10, size: 6, overlap: 1 }, (2.0, 6.0), 1e-5).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { arg: "subsets", .. }), "{e}");
    let e = maep_threshold(Operation::Add, Subsets::data(100, 0.25, 0.5), (6.0, 2.0), 1e-5).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { arg: "range", .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The kernels (kernels/arith.cu) through the registry and the safe API.
// ---------------------------------------------------------------------------------------------

mod kernels {
    use crate::common::{assert_close, assert_rows, devices, emu_shapes, gpu, kernel_devices, rng};
    use kiln::arith::{self, NaluWeights, NmuSavedRef, RegGradients, RegShape, Unit, cpu};
    use kiln::check::{check_problem, check_shapes};
    use kiln::registry::{Direction, select};
    use kiln::{DType, Device, Error, Tensor};

    #[test]
    fn nmu_reference_passes_its_own_checks() {
        for op in select(&["arith/".into()]) {
            assert_rows(&op.self_checks(&mut rng()));
        }
    }

    #[test]
    fn nmu_host_path_matches_reference() {
        let mut rng = rng();
        for op in select(&["arith/".into()]) {
            assert_rows(
                &check_shapes(op.as_ref(), &Device::Cpu, &DType::FLOATS, &op.check_shapes(), &mut rng).unwrap(),
            );
        }
    }

    /// Every check shape (tails of each tile and step, two tiles each way, dW's fixed batch
    /// partitions) in f32, f16 and bf16, forward and backward, with planted zero terms (none,
    /// one or two per output); and ε > 0 (the clamp's lower bound moves, and with it dW's mask).
    #[test]
    fn nmu_kernels_match_reference() {
        let mut rng = rng();
        for device in kernel_devices() {
            for op in select(&["arith/nmu".into()]) {
                // Every check shape fits the emulator's budget (emu_shapes keeps them all).
                let shapes = emu_shapes(op.as_ref());
                assert_eq!(shapes.len(), op.check_shapes().len());
                assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &shapes, &mut rng).unwrap());
                for dir in Direction::BOTH {
                    let mut problem = op.random_problem(dir, &[66, 20, 67], &mut rng);
                    problem.params.insert("eps".into(), 0.25);
                    assert_rows(&check_problem(op.as_ref(), dir, DType::F32, &problem, &device, "eps 0.25").unwrap());
                }
            }
        }
    }

    /// The NAU's weight passes around its GEMMs: every check shape (the bounds ±1 planted, inside
    /// the gradient's mask; two partitions of the clamp pass) in f32, f16 and bf16, both
    /// directions.
    #[test]
    fn nau_kernels_match_reference() {
        let mut rng = rng();
        for device in kernel_devices() {
            let op = select(&["arith/nau".into()]).remove(0);
            let shapes = emu_shapes(op.as_ref());
            assert_eq!(shapes.len(), op.check_shapes().len());
            assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &shapes, &mut rng).unwrap());
        }
    }

    fn f64s(t: &Tensor) -> Vec<f64> {
        t.to_f32_vec().unwrap().into_iter().map(f64::from).collect()
    }

    /// The regularisers fused into the NAU's weight passes: the forward's are bitwise those of
    /// `regularizers` (the same partition and order), and the backward's dW is the masked GEMM
    /// gradient plus the regularisers' gradient, against the f64 references; in both shapes,
    /// with 12,000 weights (two partitions).
    #[test]
    fn nau_fuses_the_regularizers_into_its_weight_passes() {
        let mut rng = rng();
        let op = select(&["arith/nau".into()]).remove(0);
        let problem = op.random_problem(Direction::Bwd, &[3, 300, 40], &mut rng);
        for device in devices() {
            let get = |n: &str| problem.inputs[n].to_tensor(DType::F32).unwrap().to_device(&device).unwrap();
            let (x, w, dz) = (get("x"), get("w"), get("dz"));
            let host = |n: &str| f64s(&get(n));
            let (b, i, o) = (3, 300, 40);
            let one = |v: f32| tensor(&[v], &[1], DType::F32, &device);
            for shape in [RegShape::Linear, RegShape::Squared] {
                let what = format!("{device} {shape:?}");
                let fused = arith::nau_forward(&x, &w, Some(shape)).unwrap();
                let plain = arith::nau_forward(&x, &w, None).unwrap();
                assert!(plain.reg.is_none());
                assert_eq!(f64s(&fused.z), f64s(&plain.z), "{what}: z");
                let reg = fused.reg.unwrap();
                let alone = arith::regularizers(Unit::Nau, shape, &w).unwrap();
                for (a, b) in [(&reg.sparse, &alone.sparse), (&reg.oob, &alone.oob)] {
                    if !device.runs_kernels() {
                        assert_close(&f64s(a), &f64s(b), 1e-6, &what);
                    } else {
                        assert_eq!(f64s(a), f64s(b), "{what}: the same pass, the same sums");
                    }
                }
                assert_eq!(f64s(&reg.sparsity_error), f64s(&alone.sparsity_error), "{what}");
                let (ds, db) = (one(0.75), one(1.25));
                let g =
                    arith::nau_backward(&x, &w, &dz, Some(RegGradients { shape, dsparse: &ds, doob: &db })).unwrap();
                let want = cpu::nau_backward(&host("x"), &host("w"), &host("dz"), b, i, o).unwrap();
                let extra = cpu::regularizers_backward(Unit::Nau, shape, &host("w"), 0.75, 1.25).unwrap();
                let want_dw: Vec<f64> = want.dw.iter().zip(&extra).map(|(a, e)| a + e).collect();
                assert_close(&f64s(&g.dw), &want_dw, 1e-5, &format!("{what}: dw"));
                assert_close(&f64s(&g.dx), &want.dx, 1e-5, &format!("{what}: dx"));
            }
        }
    }

    /// torch.clamp keeps a NaN weight NaN (its outputs NaN, not the bound's value); its gradient
    /// is dropped where the weight is out of range, NaN included (torch's `where`).
    #[test]
    fn nau_keeps_nan_weights_and_masks_their_gradient() {
        for device in devices() {
            let f = DType::F32;
            let x = tensor(&[1.0, 2.0], &[1, 2], f, &device);
            let w = tensor(&[f32::NAN, 0.5, 2.0, -0.25], &[2, 2], f, &device);
            let z = arith::nau_forward(&x, &w, None).unwrap().z.to_f32_vec().unwrap();
            assert!(z[0].is_nan() && z[1] == 0.5, "{device}: {z:?}");
            let dz = tensor(&[1.0, 1.0], &[1, 2], f, &device);
            let g = arith::nau_backward(&x, &w, &dz, None).unwrap();
            assert_eq!(g.dw.to_f32_vec().unwrap(), vec![0.0, 2.0, 0.0, 2.0], "{device}");
        }
    }

    /// Sizes with a zero dimension: empty sums are 0 (z with I = 0, dx with O = 0, dW with B = 0,
    /// where the regularisers' gradient still adds).
    #[test]
    fn nau_empty_dimensions() {
        for device in devices() {
            let f = DType::F32;
            let (x, w) = (tensor(&[], &[3, 0], f, &device), tensor(&[], &[2, 0], f, &device));
            assert_eq!(arith::nau_forward(&x, &w, None).unwrap().z.to_f32_vec().unwrap(), vec![0.0; 6], "{device}");
            let (x, w) = (tensor(&[1.5, 2.0], &[1, 2], f, &device), tensor(&[], &[0, 2], f, &device));
            let dz = tensor(&[], &[1, 0], f, &device);
            assert_eq!(arith::nau_backward(&x, &w, &dz, None).unwrap().dx.to_f32_vec().unwrap(), vec![0.0; 2]);
            let (x, w) = (tensor(&[], &[0, 2], f, &device), tensor(&[0.5, 1.5, 1.0, 0.0], &[2, 2], f, &device));
            let dz = tensor(&[], &[0, 2], f, &device);
            assert_eq!(arith::nau_forward(&x, &w, None).unwrap().z.shape(), &[0, 2]);
            assert_eq!(arith::nau_backward(&x, &w, &dz, None).unwrap().dw.to_f32_vec().unwrap(), vec![0.0; 4]);
            let (ds, db) = (tensor(&[1.0], &[1], f, &device), tensor(&[1.0], &[1], f, &device));
            let reg = RegGradients { shape: RegShape::Linear, dsparse: &ds, doob: &db };
            let dw = f64s(&arith::nau_backward(&x, &w, &dz, Some(reg)).unwrap().dw);
            let want =
                cpu::regularizers_backward(Unit::Nau, RegShape::Linear, &[0.5, 1.5, 1.0, 0.0], 1.0, 1.0).unwrap();
            assert_close(&dw, &want, 1e-6, &format!("{device}"));
        }
    }

    /// Bad input: a typed error naming the argument, on every device.
    #[test]
    fn nau_rejects_bad_input() {
        for device in devices() {
            let f = DType::F32;
            let x = tensor(&[1.0; 6], &[2, 3], f, &device);
            let w = tensor(&[0.5; 12], &[4, 3], f, &device);
            let dz = tensor(&[1.0; 8], &[2, 4], f, &device);
            let arg = |r: Result<(), Error>| match r {
                Err(Error::Shape { arg, .. } | Error::DType { arg, .. }) => arg,
                other => panic!("{device}: {other:?}"),
            };
            let fwd = |x: &Tensor, w: &Tensor, reg| arith::nau_forward(x, w, reg).map(|_| ());
            assert_eq!(arg(fwd(&tensor(&[1.0; 6], &[6], f, &device), &w, None)), "x");
            assert_eq!(arg(fwd(&x, &tensor(&[0.5; 8], &[4, 2], f, &device), None)), "w");
            assert_eq!(arg(fwd(&x, &tensor(&[0.5; 12], &[4, 3], DType::F16, &device), None)), "w");
            let empty = tensor(&[], &[0, 3], f, &device);
            assert_eq!(arg(fwd(&x, &empty, Some(RegShape::Linear))), "w");
            let bwd = |dz: &Tensor, reg| arith::nau_backward(&x, &w, dz, reg).map(|_| ());
            assert_eq!(arg(bwd(&tensor(&[1.0; 6], &[2, 3], f, &device), None)), "dz");
            let one = tensor(&[1.0], &[1], f, &device);
            let two = tensor(&[1.0; 2], &[2], f, &device);
            let half = tensor(&[1.0], &[1], DType::BF16, &device);
            let reg = |dsparse, doob| Some(RegGradients { shape: RegShape::Squared, dsparse, doob });
            assert_eq!(arg(bwd(&dz, reg(&two, &one))), "dsparse");
            assert_eq!(arg(bwd(&dz, reg(&one, &half))), "doob");
        }
    }

    /// The NALU's passes around its GEMMs: every check shape in f32, f16 and bf16, both
    /// directions, and a larger ε.
    #[test]
    fn nalu_kernels_match_reference() {
        let mut rng = rng();
        for device in kernel_devices() {
            let op = select(&["arith/nalu".into()]).remove(0);
            let shapes = emu_shapes(op.as_ref());
            assert_eq!(shapes.len(), op.check_shapes().len());
            assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &shapes, &mut rng).unwrap());
            for dir in Direction::BOTH {
                let mut problem = op.random_problem(dir, &[5, 17, 3], &mut rng);
                problem.params.insert("eps".into(), 0.5);
                assert_rows(&check_problem(op.as_ref(), dir, DType::F32, &problem, &device, "eps 0.5").unwrap());
            }
        }
    }

    /// Zero dimensions: I = 0 leaves a = 0 and m = exp(0) = 1, so y = 1 − σ(b) and db still
    /// flows; B = 0 gives zero weight gradients; O = 0 zero dx.
    #[test]
    fn nalu_empty_dimensions() {
        for device in devices() {
            let f = DType::F32;
            let t = |v: &[f32], shape: &[usize]| tensor(v, shape, f, &device);
            let (x, wh, mh, g, bias) =
                (t(&[], &[2, 0]), t(&[], &[1, 0]), t(&[], &[1, 0]), t(&[], &[1, 0]), t(&[0.0], &[1]));
            let p = NaluWeights { w_hat: &wh, m_hat: &mh, g: &g, bias: &bias };
            assert_eq!(arith::nalu_forward(&x, p, 1e-7).unwrap().to_f32_vec().unwrap(), vec![0.5, 0.5], "{device}");
            let gr = arith::nalu_backward(&x, p, &t(&[1.0, 1.0], &[2, 1]), 1e-7).unwrap();
            // dy·(a − m)·g(1 − g) = 1·(0 − 1)·¼ per row.
            assert_eq!(gr.dbias.to_f32_vec().unwrap(), vec![-0.5], "{device}");
            let (x, w) = (t(&[], &[0, 2]), t(&[0.5, -0.5], &[1, 2]));
            let p = NaluWeights { w_hat: &w, m_hat: &w, g: &w, bias: &bias };
            let gr = arith::nalu_backward(&x, p, &t(&[], &[0, 1]), 1e-7).unwrap();
            for z in [&gr.dw_hat, &gr.dm_hat, &gr.dg] {
                assert_eq!(z.to_f32_vec().unwrap(), vec![0.0, 0.0], "{device}");
            }
            assert_eq!(gr.dbias.to_f32_vec().unwrap(), vec![0.0], "{device}");
            let (x, w, none) = (t(&[1.0, 2.0], &[1, 2]), t(&[], &[0, 2]), t(&[], &[0]));
            let p = NaluWeights { w_hat: &w, m_hat: &w, g: &w, bias: &none };
            let gr = arith::nalu_backward(&x, p, &t(&[], &[1, 0]), 1e-7).unwrap();
            assert_eq!(gr.dx.to_f32_vec().unwrap(), vec![0.0, 0.0], "{device}");
        }
    }

    #[test]
    fn nalu_rejects_bad_input() {
        for device in devices() {
            let f = DType::F32;
            let t = |n: usize, shape: &[usize]| tensor(&vec![0.5; n], shape, f, &device);
            let (x, w, bias, dy) = (t(6, &[2, 3]), t(12, &[4, 3]), t(4, &[4]), t(8, &[2, 4]));
            let p = NaluWeights { w_hat: &w, m_hat: &w, g: &w, bias: &bias };
            let arg = |r: Result<(), Error>| match r {
                Err(Error::Shape { arg, .. } | Error::DType { arg, .. } | Error::InvalidValue { arg, .. }) => arg,
                other => panic!("{device}: {other:?}"),
            };
            let fwd = |x: &Tensor, p: NaluWeights, eps: f32| arith::nalu_forward(x, p, eps).map(|_| ());
            assert_eq!(arg(fwd(&t(6, &[6]), p, 1e-7)), "x");
            let narrow = t(8, &[4, 2]);
            assert_eq!(arg(fwd(&x, NaluWeights { w_hat: &narrow, ..p }, 1e-7)), "w_hat");
            assert_eq!(arg(fwd(&x, NaluWeights { m_hat: &narrow, ..p }, 1e-7)), "m_hat");
            let half = tensor(&[0.5; 12], &[4, 3], DType::F16, &device);
            assert_eq!(arg(fwd(&x, NaluWeights { g: &half, ..p }, 1e-7)), "g");
            assert_eq!(arg(fwd(&x, NaluWeights { bias: &t(3, &[3]), ..p }, 1e-7)), "bias");
            assert_eq!(arg(fwd(&x, p, 0.0)), "eps");
            assert_eq!(arg(fwd(&x, p, f32::NAN)), "eps");
            assert_eq!(arg(arith::nalu_backward(&x, p, &t(6, &[2, 3]), 1e-7).map(|_| ())), "dy");
            assert!(arith::nalu_backward(&x, p, &dy, 1e-7).is_ok(), "{device}");
        }
    }

    fn tensor(v: &[f32], shape: &[usize], dtype: DType, device: &Device) -> Tensor {
        Tensor::from_f32(v, shape, dtype).unwrap().to_device(device).unwrap()
    }

    /// Sizes with a zero dimension: an empty product is 1 (I = 0), empty sums are 0 (dx with
    /// O = 0, dW with B = 0), and an empty output writes nothing.
    #[test]
    fn nmu_empty_dimensions() {
        for device in devices() {
            let f = DType::F32;
            // I = 0: z = 1, dx empty, dW empty.
            let (x, w) = (tensor(&[], &[3, 0], f, &device), tensor(&[], &[2, 0], f, &device));
            let out = arith::nmu_forward(&x, &w, 0.0, true).unwrap();
            assert_eq!(out.z.to_f32_vec().unwrap(), vec![1.0; 6], "{device}");
            // O = 0: dx = 0.
            let (x, w) = (tensor(&[1.5, 2.0], &[1, 2], f, &device), tensor(&[], &[0, 2], f, &device));
            let out = arith::nmu_forward(&x, &w, 0.0, true).unwrap();
            assert_eq!(out.z.shape(), &[1, 0]);
            let dz = tensor(&[], &[1, 0], f, &device);
            let g = arith::nmu_backward(&x, &w, &dz, out.saved.as_ref().unwrap().as_ref(), 0.0).unwrap();
            assert_eq!(g.dx.to_f32_vec().unwrap(), vec![0.0, 0.0], "{device}");
            // B = 0: dW = 0.
            let (x, w) = (tensor(&[], &[0, 2], f, &device), tensor(&[0.5, 0.5, 1.0, 0.0], &[2, 2], f, &device));
            let out = arith::nmu_forward(&x, &w, 0.0, true).unwrap();
            let dz = tensor(&[], &[0, 2], f, &device);
            let g = arith::nmu_backward(&x, &w, &dz, out.saved.as_ref().unwrap().as_ref(), 0.0).unwrap();
            assert_eq!(g.dw.to_f32_vec().unwrap(), vec![0.0; 4], "{device}");
        }
    }

    /// What the forward saves, exactly: z = x0·x1 with W = 1 and the zero terms counted (one
    /// zero: z = 0, prod the other term; two: prod 1); and the backward's exact products of the
    /// other terms: with one zero term only its input gets a gradient.
    #[test]
    fn nmu_saves_nonzero_products_and_zero_counts() {
        for device in devices() {
            let f = DType::F32;
            let x = tensor(&[3.0, 4.0, 0.0, 5.0, 0.0, 0.0], &[3, 2], f, &device);
            let w = tensor(&[1.0, 1.0], &[1, 2], f, &device);
            let out = arith::nmu_forward(&x, &w, 0.0, true).unwrap();
            let saved = out.saved.unwrap();
            assert_eq!(out.z.to_f32_vec().unwrap(), vec![12.0, 0.0, 0.0], "{device}");
            assert_eq!(saved.prod.to_f32_vec().unwrap(), vec![12.0, 5.0, 1.0], "{device}");
            assert_eq!(saved.zeros.to_f32_vec().unwrap(), vec![0.0, 1.0, 2.0], "{device}");
            let dz = tensor(&[1.0, 1.0, 1.0], &[3, 1], f, &device);
            let g = arith::nmu_backward(&x, &w, &dz, saved.as_ref(), 0.0).unwrap();
            // Row 0: (x1, x0); row 1: only the zero input's, the other term 5; row 2: none. (The
            // kernels divide the saved product by a term with a 2-ulp reciprocal: close, and the
            // zeros exact.)
            let close = |t: &Tensor, want: &[f64]| {
                let got: Vec<f64> = t.to_f32_vec().unwrap().into_iter().map(f64::from).collect();
                assert_close(&got, want, 1e-6, &format!("{device}"));
                for (g, w) in got.iter().zip(want) {
                    assert!(*w != 0.0 || *g == 0.0, "{device}: {got:?}");
                }
            };
            close(&g.dx, &[4.0, 3.0, 5.0, 0.0, 0.0, 0.0]);
            // dW = Σ_b (x − 1)·P_¬i: (2·4 + (−1)·5, 3·3 + 0) = (3, 9).
            close(&g.dw, &[3.0, 9.0]);
        }
    }

    /// Two runs of the backward are bitwise equal, the batch split into fixed partitions for dW
    /// included (no atomics).
    #[test]
    fn nmu_backward_is_deterministic() {
        let mut rng = rng();
        for device in kernel_devices() {
            let op = select(&["arith/nmu".into()]).remove(0);
            let problem = op.random_problem(Direction::Bwd, &[600, 9, 5], &mut rng);
            let get = |n: &str| problem.inputs[n].to_tensor(DType::F32).unwrap().to_device(&device).unwrap();
            let (x, w, dz) = (get("x"), get("w"), get("dz"));
            let saved = arith::nmu_forward(&x, &w, 0.0, true).unwrap().saved.unwrap();
            let a = arith::nmu_backward(&x, &w, &dz, saved.as_ref(), 0.0).unwrap();
            let b = arith::nmu_backward(&x, &w, &dz, saved.as_ref(), 0.0).unwrap();
            assert_eq!(a.dw.to_f32_vec().unwrap(), b.dw.to_f32_vec().unwrap(), "{device}");
            assert_eq!(a.dx.to_f32_vec().unwrap(), b.dx.to_f32_vec().unwrap(), "{device}");
        }
    }

    /// Bad input: a typed error naming the argument, on every device.
    #[test]
    fn nmu_rejects_bad_input() {
        for device in devices() {
            let f = DType::F32;
            let x = tensor(&[1.0; 6], &[2, 3], f, &device);
            let w = tensor(&[0.5; 12], &[4, 3], f, &device);
            let arg = |r: Result<arith::NmuOutput, Error>| match r {
                Err(Error::Shape { arg, .. } | Error::DType { arg, .. } | Error::InvalidValue { arg, .. }) => arg,
                other => panic!("{device}: {other:?}"),
            };
            assert_eq!(arg(arith::nmu_forward(&tensor(&[1.0; 6], &[6], f, &device), &w, 0.0, false)), "x");
            assert_eq!(arg(arith::nmu_forward(&x, &tensor(&[0.5; 8], &[4, 2], f, &device), 0.0, false)), "w");
            assert_eq!(
                arg(arith::nmu_forward(&x, &tensor(&[0.5; 12], &[4, 3], DType::BF16, &device), 0.0, false)),
                "w"
            );
            assert_eq!(arg(arith::nmu_forward(&x, &w, -0.5, false)), "eps");
            assert_eq!(arg(arith::nmu_forward(&x, &w, f32::NAN, false)), "eps");
            let i32s = Tensor::from_vec(vec![0i32; 6], &[2, 3]).unwrap().to_device(&device).unwrap();
            assert_eq!(arg(arith::nmu_forward(&i32s, &w, 0.0, false)), "x");
            let saved = arith::nmu_forward(&x, &w, 0.0, true).unwrap().saved.unwrap();
            let dz = tensor(&[1.0; 8], &[2, 4], f, &device);
            let grads = |dz: &Tensor, saved: NmuSavedRef| match arith::nmu_backward(&x, &w, dz, saved, 0.0) {
                Err(Error::Shape { arg, .. } | Error::DType { arg, .. }) => arg,
                other => panic!("{device}: {other:?}"),
            };
            assert_eq!(grads(&tensor(&[1.0; 6], &[2, 3], f, &device), saved.as_ref()), "dz");
            let wrong = Tensor::from_vec(vec![0i32; 8], &[2, 4]).unwrap().to_device(&device).unwrap();
            assert_eq!(grads(&dz, NmuSavedRef { prod: &wrong, zeros: &saved.zeros }), "prod");
            assert_eq!(grads(&dz, NmuSavedRef { prod: &saved.prod, zeros: &saved.prod }), "zeros");
        }
    }

    #[test]
    fn nmu_gpu_matches_reference_at_the_bench_shape() {
        let Some(device) = gpu() else { return };
        let op = select(&["arith/nmu".into()]).remove(0);
        assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &[vec![512, 1024, 256]], &mut rng()).unwrap());
    }

    /// The regularisers' kernels (one pass, fixed partitions; an elementwise backward) against
    /// the references: every check shape (one weight, a block's threads twice, three partitions
    /// of 8192 with a tail) in three dtypes, both shapes of the regularisers.
    #[test]
    fn regularizer_kernels_match_reference() {
        let mut rng = rng();
        for device in kernel_devices() {
            for op in select(&["arith/nau_reg".into(), "arith/nmu_reg".into()]) {
                assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &op.check_shapes(), &mut rng).unwrap());
                for dir in Direction::BOTH {
                    for dtype in DType::FLOATS {
                        let mut problem = op.random_problem(dir, &[129, 191], &mut rng);
                        problem.params.insert_str("shape", "squared");
                        assert_rows(&check_problem(op.as_ref(), dir, dtype, &problem, &device, "squared").unwrap());
                    }
                }
            }
        }
    }

    /// At the kinks (0, ±½, ±1, and the ties of min at ±½ for the NAU's linear shape), the
    /// kernels take torch's conventions exactly as the reference does.
    #[test]
    fn regularizer_kernels_follow_torch_at_the_kinks() {
        let kinks = [0.0f32, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 0.25, 2.0];
        for device in kernel_devices() {
            let w = tensor(&kinks, &[kinks.len()], DType::F32, &device);
            let one = |v: f32| tensor(&[v], &[1], DType::F32, &device);
            let host: Vec<f64> = kinks.iter().map(|&v| f64::from(v)).collect();
            for unit in [Unit::Nau, Unit::Nmu] {
                for shape in [RegShape::Linear, RegShape::Squared] {
                    let r = arith::regularizers(unit, shape, &w).unwrap();
                    let want = cpu::regularizers(unit, shape, &host).unwrap();
                    let got = |t: &Tensor| f64::from(t.to_f32_vec().unwrap()[0]);
                    let what = format!("{device} {unit:?} {shape:?}");
                    assert_close(
                        &[got(&r.sparse), got(&r.oob), got(&r.sparsity_error)],
                        &[want.sparse, want.oob, want.sparsity_error],
                        1e-6,
                        &what,
                    );
                    let dw = arith::regularizers_backward(unit, shape, &w, &one(0.75), &one(1.25)).unwrap();
                    let dw: Vec<f64> = dw.to_f32_vec().unwrap().into_iter().map(f64::from).collect();
                    let want = cpu::regularizers_backward(unit, shape, &host, 0.75, 1.25).unwrap();
                    assert_close(&dw, &want, 1e-6, &what);
                }
            }
        }
    }

    #[test]
    fn regularizers_reject_bad_input() {
        for device in devices() {
            let w = tensor(&[0.5; 6], &[2, 3], DType::F32, &device);
            let empty = tensor(&[], &[0, 3], DType::F32, &device);
            assert!(
                matches!(arith::regularizers(Unit::Nau, RegShape::Linear, &empty), Err(Error::Shape { arg: "w", .. })),
                "{device}"
            );
            let i32s = Tensor::from_vec(vec![0i32; 6], &[2, 3]).unwrap().to_device(&device).unwrap();
            assert!(
                matches!(arith::regularizers(Unit::Nmu, RegShape::Linear, &i32s), Err(Error::DType { arg: "w", .. })),
                "{device}"
            );
            let one = tensor(&[1.0], &[1], DType::F32, &device);
            let two = tensor(&[1.0, 1.0], &[2], DType::F32, &device);
            let bf = tensor(&[1.0], &[1], DType::BF16, &device);
            let r = arith::regularizers_backward(Unit::Nau, RegShape::Squared, &w, &two, &one);
            assert!(matches!(r, Err(Error::Shape { arg: "dsparse", .. })), "{device}: {r:?}");
            let r = arith::regularizers_backward(Unit::Nau, RegShape::Squared, &w, &one, &bf);
            assert!(matches!(r, Err(Error::DType { arg: "doob", .. })), "{device}: {r:?}");
            assert!(matches!(RegShape::parse("cubic"), Err(Error::InvalidValue { arg: "shape", .. })));
        }
    }
}

/// The arithmetic task's training loop (examples/arith_train.rs) on the emulator follows the
/// CPU references' run: 60 steps of each task (both units' kernels forward and backward, the
/// fused regularisers from step 20) end with the same weights and errors to f32 rounding, and
/// the interpolation error has fallen. (A full run, `cargo run --release --example arith_train
/// -- add --steps 200000 --reg-start 5000 --reg-end 50000 --lambda 0.01`, reaches the success
/// criterion; too long for a test.)
#[test]
fn arith_training_runs_alike_on_the_emulator() {
    use crate::arith_train::{Config, train};
    use kiln::Device;
    use kiln::arith::Operation;
    let Some(emu) = crate::common::emu() else { return };
    for op in [Operation::Add, Operation::Mul] {
        let mut cfg = Config::new(op, Device::Cpu);
        (cfg.steps, cfg.eval_every, cfg.reg_start, cfg.reg_end) = (60, 1, 20.0, 40.0);
        let first = {
            let mut c = cfg.clone();
            c.steps = 1;
            train(&c).unwrap()
        };
        let host = train(&cfg).unwrap();
        cfg.device = emu.clone();
        let device = train(&cfg).unwrap();
        let what = format!("{op:?}");
        let (now, then) = (host.interpolation_mse, first.interpolation_mse);
        assert!(now < then, "{what}: interpolation MSE {now} after 60 steps, {then} after 1");
        assert_eq!(host.best_step, device.best_step, "{what}");
        for (h, d) in host.w1.iter().chain(&host.w2).zip(device.w1.iter().chain(&device.w2)) {
            assert!((h - d).abs() <= 1e-4, "{what}: weights {h} vs {d}");
        }
        for (h, d) in
            [(host.interpolation_mse, device.interpolation_mse), (host.extrapolation_mse, device.extrapolation_mse)]
        {
            assert!((h - d).abs() <= 1e-3 * h.abs(), "{what}: {h} vs {d}");
        }
    }
}
