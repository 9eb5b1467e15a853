//! The special functions of kernels/common/math.cuh in both precision policies against f64, on
//! the emulator (whose __expf and __fdividef carry the hardware's argument roundings) and on a
//! GPU when there is one (where the MUFU units answer for themselves). The bounds are the ones
//! math.cuh documents: the 16-bit policy's error must stay far below an f16/bf16 rounding.

use crate::common::{kernel_devices, rng};
use kiln::activation::cpu::{erf, normal_cdf, normal_pdf, sigmoid};
use kiln::selftest::{MathFunction, math};
use kiln::{DType, Tensor};
use rand::Rng;

/// A dense grid over [−20, 20], random points, and the awkward values.
fn inputs(rng: &mut impl Rng) -> Vec<f32> {
    let mut x: Vec<f32> = (-1280..=1280).map(|i| i as f32 / 64.0).collect();
    x.extend((0..4000).map(|_| rng.random_range(-16.0f32..16.0)));
    x.extend([0.0, -0.0, 1e-30, -1e-30, 1e-6, -1e-6, 30.0, -30.0, 87.0, -87.0, 1e30, -1e30]);
    x
}

fn reference(function: MathFunction, x: f64) -> f64 {
    match function {
        MathFunction::NormalCdf => normal_cdf(x),
        MathFunction::NormalPdf => normal_pdf(x),
        MathFunction::Sigmoid => sigmoid(x),
        MathFunction::SigmoidNeg => sigmoid(-x),
        MathFunction::NormalErf => erf(x * std::f64::consts::FRAC_1_SQRT_2),
    }
}

/// The absolute error math.cuh promises instead of a relative one, where it does: the 16-bit
/// erf(x/√2) = 1 − 2Φ(−|x|) below |x| = ½.
fn absolute_bound(function: MathFunction, fast: bool, x: f32) -> Option<f64> {
    (function == MathFunction::NormalErf && fast && x.abs() < 0.5).then_some(4e-6)
}

/// The relative error math.cuh promises at x for a result in the normal floats.
fn bound(function: MathFunction, fast: bool, x: f32) -> f64 {
    const ULP: f64 = 1.0 / (1u64 << 23) as f64; // an f32 ulp at 1
    let a = f64::from(x.abs());
    // The exponent's argument: x²/2 for φ, |x| for σ.
    let argument = if function == MathFunction::NormalPdf { a * a / 2.0 } else { a };
    match (function, fast) {
        // CUDA's accurate calls (normcdff ≤ 5 ulp, expf ≤ 2 ulp, IEEE division).
        (
            MathFunction::NormalCdf | MathFunction::Sigmoid | MathFunction::SigmoidNeg | MathFunction::NormalErf,
            false,
        ) => 1.3e-6,
        // 1 − 2Φ(−|x|): Φ's 4e-6 of at most ½ absolute (held by absolute_bound), relative
        // once erf ≥ 0.38 (|x| ≥ ½).
        (MathFunction::NormalErf, true) => 1.1e-5,
        // exp of a rounded −x²/2: the rounding of x² (x²/2 · 2^-24 absolute) becomes relative.
        (MathFunction::NormalPdf, false) => 3e-8 * a * a + 3e-7,
        // 1.2e-7·x² + 3e-7: 4e-6 where an f16 GELU is nonzero (|x| ≤ 5.6), 2.1e-5 at |x| = 13.
        (MathFunction::NormalCdf, true) => {
            if a <= 5.6 {
                4e-6
            } else {
                2.1e-5f64.max(1.2e-7 * a * a + 3e-7)
            }
        }
        // __expf: at most 2 + 1.173·|argument| ulp (CUDA programming guide), then a reciprocal
        // and a product of a few ulp.
        (_, true) => (2.0 + 1.173 * argument) * ULP + 4.0 * ULP,
    }
}

#[test]
fn special_functions_meet_their_documented_error_in_both_policies() {
    let mut rng = rng();
    let x = inputs(&mut rng);
    let functions = [
        MathFunction::NormalCdf,
        MathFunction::NormalPdf,
        MathFunction::Sigmoid,
        MathFunction::SigmoidNeg,
        MathFunction::NormalErf,
    ];
    let devices = kernel_devices();
    if devices.is_empty() {
        eprintln!("skipped: no emulator and no GPU");
        return;
    }
    for device in devices {
        let xt = Tensor::from_vec(x.clone(), &[x.len()]).unwrap().to_device(&device).unwrap();
        for function in functions {
            for fast in [false, true] {
                let y = math(function, fast, &xt).unwrap().to_f64_vec().unwrap();
                let mut worst = (0.0f64, 0.0f32);
                let mut worst_absolute = 0.0f64;
                for (&xi, &yi) in x.iter().zip(&y) {
                    let want = reference(function, f64::from(xi));
                    let what = format!("{device} {function:?} fast={fast} x={xi}: got {yi}, want {want}");
                    if let Some(most) = absolute_bound(function, fast, xi) {
                        let err = (yi - want).abs();
                        assert!(err <= most, "{what}: absolute error {err:e}");
                        worst_absolute = worst_absolute.max(err);
                    } else if want.abs() >= f64::from(f32::MIN_POSITIVE) {
                        let rel = (yi - want).abs() / want.abs();
                        assert!(rel <= bound(function, fast, xi), "{what}: relative error {rel:e}");
                        if rel > worst.0 {
                            worst = (rel, xi);
                        }
                    } else {
                        // Subnormal or zero: within the smallest normal float, and never negative.
                        assert!(yi >= 0.0 && (yi - want).abs() <= f64::from(f32::MIN_POSITIVE), "{what}");
                    }
                }
                eprintln!(
                    "{device} {function:?} fast={fast}: worst relative error {:e} at x = {}, worst absolute error \
                     where the bound is absolute {worst_absolute:e}",
                    worst.0, worst.1
                );
            }
        }
        // NaN stays NaN and the infinities land on the limits, in both policies.
        let specials = Tensor::from_vec(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY], &[3])
            .unwrap()
            .to_device(&device)
            .unwrap();
        for fast in [false, true] {
            let get = |f| math(f, fast, &specials).unwrap().to_f64_vec().unwrap();
            let (cdf, pdf, sig, neg) = (
                get(MathFunction::NormalCdf),
                get(MathFunction::NormalPdf),
                get(MathFunction::Sigmoid),
                get(MathFunction::SigmoidNeg),
            );
            for v in [&cdf, &pdf, &sig, &neg] {
                assert!(v[0].is_nan(), "{device} fast={fast}: NaN in, {} out", v[0]);
            }
            assert_eq!((cdf[1], cdf[2]), (1.0, 0.0), "{device} fast={fast} Φ(±inf)");
            assert_eq!((pdf[1], pdf[2]), (0.0, 0.0), "{device} fast={fast} φ(±inf)");
            assert_eq!((sig[1], sig[2], neg[1], neg[2]), (1.0, 0.0, 0.0, 1.0), "{device} fast={fast} σ(±inf)");
            let erf = get(MathFunction::NormalErf);
            assert!(erf[0].is_nan(), "{device} fast={fast}: NaN in, {} out", erf[0]);
            assert_eq!((erf[1], erf[2]), (1.0, -1.0), "{device} fast={fast} erf(±inf)");
        }
    }
}

#[test]
fn math_self_test_rejects_host_tensors_and_wrong_dtypes() {
    let host = Tensor::from_vec(vec![0.0f32; 4], &[4]).unwrap();
    assert!(math(MathFunction::NormalCdf, true, &host).is_err(), "host tensors run no kernel");
    let Some(device) = kernel_devices().into_iter().next() else { return };
    let half = Tensor::from_f64(&[0.0; 4], &[4], DType::BF16).unwrap().to_device(&device).unwrap();
    let err = math(MathFunction::Sigmoid, true, &half).unwrap_err();
    assert!(err.to_string().contains('x'), "{err}");
}
