//! The activation family: references on their own, the emulator and the GPU against the
//! reference (each skips without its backend), and bad input.

use crate::common::{assert_rows, devices, emu, emu_shapes, gpu, kernel_devices, rng};
use kiln::activation::{self, Activation, ActivationKind, GSmeluParams};
use kiln::check::check_shapes;
use kiln::registry::{Direction, Op, select};
use kiln::{DType, Device, Error, Tensor};

fn family() -> Vec<Box<dyn Op>> {
    select(&["activation/".to_string()])
}

#[test]
fn every_op_is_registered_with_both_directions() {
    let ops = family();
    assert_eq!(ops.len(), ActivationKind::ALL.len());
    for op in &ops {
        assert_eq!(op.launcher(Direction::Fwd), format!("kiln_activation_{}_fwd", op.name()));
        assert_eq!(op.dtypes(), &DType::FLOATS);
    }
}

/// dx does not depend on whether the parameter gradient is asked for: the x-activations' dα
/// kernels evaluate dx and ∂/∂α together (`bwd_dparam`), and dx must come out bitwise as the
/// backward without dα computes it, in every storage dtype, on the 16-byte path (1024
/// elements) and the scalar one (1001).
#[test]
fn dx_is_the_same_with_and_without_the_parameter_gradient() {
    for device in kernel_devices() {
        for act in
            [Activation::XAtlu { alpha: 0.3 }, Activation::XGelu { alpha: -0.2 }, Activation::XSilu { alpha: 0.1 }]
        {
            for dtype in DType::FLOATS {
                for n in [1024usize, 1001] {
                    let values = |k: usize| (0..n).map(|i| ((i * k) % 97) as f32 / 12.0 - 4.0).collect::<Vec<f32>>();
                    let on = |v: Vec<f32>| Tensor::from_f32(&v, &[n], dtype).unwrap().to_device(&device).unwrap();
                    let (x, dy) = (on(values(7)), on(values(13)));
                    let with = activation::backward(&act, &x, &dy).unwrap();
                    assert!(with.dparam.is_some(), "{act:?}: dα asked for");
                    let mut dx = Tensor::zeros(&[n], dtype, &device).unwrap();
                    activation::backward_into(&act, &x, &dy, &mut dx, None).unwrap();
                    let bits = |t: &Tensor| t.to_f32_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                    assert_eq!(bits(&with.dx), bits(&dx), "{act:?} {dtype:?} n {n} on {device}");
                }
            }
        }
    }
}

#[test]
fn references_pass_finite_differences_and_identities() {
    let mut rng = rng();
    for op in family() {
        let rows = op.self_checks(&mut rng);
        assert!(rows.iter().any(|r| r.what.starts_with("finite differences dx")), "{}", op.full_name());
        assert_rows(&rows);
    }
}

#[test]
fn parameter_gradients_are_checked_for_every_trainable_op() {
    let mut rng = rng();
    for (name, what) in
        [("xatlu", "dalpha"), ("xgelu", "dalpha"), ("xsilu", "dalpha"), ("prelu", "dslope"), ("jumprelu", "dtheta")]
    {
        let op = kiln::registry::find(&format!("activation/{name}")).unwrap();
        let rows = op.self_checks(&mut rng);
        assert!(rows.iter().any(|r| r.what.contains(what)), "{name} has no {what} check");
        assert_rows(&rows);
    }
}

#[test]
fn a_wrong_derivative_is_caught() {
    // The finite-difference row must be able to fail: compare gelu's f' with silu's.
    let s = activation::Scalars::default();
    let x = [0.3, -1.2, 2.5];
    let wrong: Vec<f64> = x.iter().map(|&v| activation::cpu::dfdx(ActivationKind::Silu, &s, 0.0, v)).collect();
    let fd: Vec<f64> = x
        .iter()
        .map(|&v| kiln::check::central_difference(|u| activation::cpu::f(ActivationKind::Gelu, &s, 0.0, u), v, 1e-5))
        .collect();
    let op = kiln::registry::find("activation/gelu").unwrap();
    assert!(!kiln::check::reference_row(op.as_ref(), "wrong", &wrong, &fd, 1e-7).pass);
}

#[test]
fn host_path_matches_reference_in_every_dtype() {
    let mut rng = rng();
    for op in family() {
        // The host path is the reference rounded to the dtype: small shapes prove the
        // plumbing (rounding, parameter layouts) without re-running millions of f64 calls.
        let shapes = [vec![1], vec![7], vec![4097], vec![3, 5, 7]];
        let rows = check_shapes(op.as_ref(), &Device::Cpu, &DType::FLOATS, &shapes, &mut rng).unwrap();
        assert_rows(&rows);
    }
}

#[test]
fn gpu_matches_reference() {
    let Some(device) = gpu() else { return };
    let mut rng = rng();
    for op in family() {
        let rows = check_shapes(op.as_ref(), &device, &DType::FLOATS, &op.check_shapes(), &mut rng).unwrap();
        assert_rows(&rows);
    }
}

#[test]
fn emu_matches_reference() {
    let Some(device) = emu() else { return };
    let mut rng = rng();
    // 33: one partial vector; 65539: several blocks and a scalar tail; [129, 67]: per-channel
    // parameters over many rows.
    let extra = [vec![33], vec![65539], vec![129, 67]];
    for op in family() {
        let shapes: Vec<Vec<usize>> = emu_shapes(op.as_ref()).into_iter().chain(extra.iter().cloned()).collect();
        assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &shapes, &mut rng).unwrap());
    }
}

/// A scalar gradient reduced over more than 1024 partials (the fixed partition holds up to
/// 8192): f32 at 2^20·2 + 5 elements is 2049 blocks of 256 threads × 4, past the old cap, with a
/// tail. One op per kind of scalar parameter (dα, and a shared slope) on the emulator.
#[test]
fn emu_scalar_gradient_past_a_thousand_partials_matches_reference() {
    let Some(device) = emu() else { return };
    let mut rng = rng();
    let ops = select(&["activation/xsilu".to_string(), "activation/prelu".to_string()]);
    assert_eq!(ops.len(), 2);
    for op in ops {
        let rows = check_shapes(op.as_ref(), &device, &[DType::F32], &[vec![(1 << 21) + 5]], &mut rng).unwrap();
        assert!(rows.iter().any(|r| r.dir == "bwd"), "no backward row");
        assert_rows(&rows);
    }
}

/// A per-channel op's backward without its parameter gradient (backward_into with no dslope or
/// dθ) takes the 2-D kernel without the reduction: dx must match the reference (the host path),
/// and be bitwise the dx of the run that also reduces the gradient. 24 channels: whole vector
/// packs per row; 7: element by element.
#[test]
fn per_channel_backward_without_the_parameter_gradient_matches_reference() {
    use rand::Rng;
    let mut rng = rng();
    let rows = 37;
    for (device, dtype) in kernel_devices().into_iter().flat_map(|d| DType::FLOATS.map(|t| (d.clone(), t))) {
        for channels in [24, 7] {
            let n = rows * channels;
            let mut values =
                |lo: f32, hi: f32, len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(lo..hi)).collect() };
            let x = Tensor::from_f32(&values(-3.0, 3.0, n), &[rows, channels], dtype).unwrap();
            let dy = Tensor::from_f32(&values(-1.0, 1.0, n), &[rows, channels], dtype).unwrap();
            let param = Tensor::from_f32(&values(-0.5, 0.5, channels), &[channels], DType::F32).unwrap();
            let on = |t: &Tensor| t.to_device(&device).unwrap();
            let (xe, dye, pe) = (on(&x), on(&dy), on(&param));
            let cases = [
                ("prelu", Activation::Prelu { slope: &param }, Activation::Prelu { slope: &pe }),
                (
                    "jumprelu",
                    Activation::JumpRelu { theta: &param, eps: 0.1 },
                    Activation::JumpRelu { theta: &pe, eps: 0.1 },
                ),
            ];
            for (name, host_act, emu_act) in cases {
                let dx_only = |act: &Activation, x: &Tensor, dy: &Tensor, on: &Device| {
                    let mut dx = Tensor::full(&[rows, channels], dtype, f64::NAN, on).unwrap();
                    activation::backward_into(act, x, dy, &mut dx, None).unwrap();
                    dx.to_f64_vec().unwrap()
                };
                let want = dx_only(&host_act, &x, &dy, &Device::Cpu);
                let got = dx_only(&emu_act, &xe, &dye, &device);
                let c = kiln::check::compare_elementwise(&got, &want, dtype);
                let what = format!("{name} {dtype} [{rows}, {channels}] on {device}");
                assert!(c.pass, "{what}: max error {} > {}", c.max_err, c.tol);
                let with_grad = activation::backward(&emu_act, &xe, &dye).unwrap().dx.to_f64_vec().unwrap();
                let same = got.iter().zip(&with_grad).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{what}: dx depends on whether the gradient is reduced");
            }
        }
    }
}

/// A per-channel gradient over more row chunks than the finalize kernel has lanes: 577 rows of
/// 32 channels are 10 chunks of 64 rows against its 8 lanes a channel, so lanes sum two chunks.
#[test]
fn per_channel_gradient_over_many_row_chunks_matches_reference() {
    let mut rng = rng();
    let ops = select(&["activation/prelu".to_string(), "activation/jumprelu".to_string()]);
    for (device, op) in kernel_devices().iter().flat_map(|d| ops.iter().map(move |op| (d, op))) {
        let rows = check_shapes(op.as_ref(), device, &DType::FLOATS, &[vec![577, 32]], &mut rng).unwrap();
        let grad = |r: &&kiln::check::CheckRow| r.what.starts_with("dslope") || r.what.starts_with("dtheta");
        assert!(rows.iter().any(|r| grad(&r)), "no parameter gradient row: {rows:#?}");
        assert_rows(&rows);
    }
}

#[test]
fn gpu_inplace_and_deterministic() {
    let Some(device) = gpu() else { return };
    inplace_and_deterministic(&device, (1 << 20) + 3);
}

#[test]
fn emu_inplace_and_deterministic() {
    let Some(device) = emu() else { return };
    inplace_and_deterministic(&device, 65539);
}

/// In place equals out of place, and dα is bitwise the same on a second run.
fn inplace_and_deterministic(device: &Device, n: usize) {
    let mut rng = rng();
    let xs: Vec<f32> = (0..n).map(|_| rand::Rng::random_range(&mut rng, -4.0..4.0)).collect();
    let x = Tensor::from_f32(&xs, &[n], DType::BF16).unwrap().to_device(device).unwrap();
    let act = Activation::XSilu { alpha: 0.25 };
    let y = activation::forward(&act, &x).unwrap();
    let mut z = Tensor::from_f32(&xs, &[n], DType::BF16).unwrap().to_device(device).unwrap();
    activation::forward_inplace(&act, &mut z).unwrap();
    assert_eq!(y.to_f32_vec().unwrap(), z.to_f32_vec().unwrap(), "in place differs");
    let dy = Tensor::from_f32(&xs, &[n], DType::BF16).unwrap().to_device(device).unwrap();
    let a = activation::backward(&act, &x, &dy).unwrap().dparam.unwrap().to_f32_vec().unwrap();
    let b = activation::backward(&act, &x, &dy).unwrap().dparam.unwrap().to_f32_vec().unwrap();
    assert_eq!(a[0].to_bits(), b[0].to_bits(), "dalpha is not deterministic");
}

// ---- bad input: typed errors naming the argument, outputs untouched ----------------------

fn host(values: &[f32], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_f32(values, shape, dtype).unwrap()
}

const SENTINEL: f32 = 7.0;

fn untouched(t: &Tensor) -> bool {
    t.to_f32_vec().unwrap().iter().all(|&v| v == SENTINEL)
}

#[test]
fn dtype_mismatch_is_rejected() {
    for device in devices() {
        let x = host(&[1.0, 2.0], &[2], DType::F32).to_device(&device).unwrap();
        let mut y = Tensor::full(&[2], DType::BF16, SENTINEL as f64, &device).unwrap();
        let e = activation::forward_into(&Activation::Gelu, &x, &mut y).unwrap_err();
        assert!(matches!(e, Error::DType { arg: "y", .. }), "{e}");
        assert!(untouched(&y));
        let dy = host(&[1.0, 2.0], &[2], DType::F16).to_device(&device).unwrap();
        let e = activation::backward(&Activation::Gelu, &x, &dy).unwrap_err();
        assert!(matches!(e, Error::DType { arg: "dy", .. }), "{e}");
    }
}

#[test]
fn length_mismatch_is_rejected() {
    for device in devices() {
        let x = host(&[1.0, 2.0, 3.0], &[3], DType::F32).to_device(&device).unwrap();
        let mut y = Tensor::full(&[2], DType::F32, SENTINEL as f64, &device).unwrap();
        let e = activation::forward_into(&Activation::Silu, &x, &mut y).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "y", .. }), "{e}");
        assert!(untouched(&y));
        let mut dx = Tensor::full(&[3], DType::F32, SENTINEL as f64, &device).unwrap();
        let dy = host(&[1.0; 4], &[4], DType::F32).to_device(&device).unwrap();
        let e = activation::backward_into(&Activation::Silu, &x, &dy, &mut dx, None).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "dy", .. }), "{e}");
        assert!(untouched(&dx));
    }
}

#[test]
fn wrong_slope_or_theta_length_is_rejected() {
    for device in devices() {
        let x = host(&[1.0; 6], &[2, 3], DType::F32).to_device(&device).unwrap();
        let bad = host(&[0.25, 0.25], &[2], DType::F32).to_device(&device).unwrap();
        let mut y = Tensor::full(&[2, 3], DType::F32, SENTINEL as f64, &device).unwrap();
        let e = activation::forward_into(&Activation::Prelu { slope: &bad }, &x, &mut y).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "slope", .. }), "{e}");
        let e = activation::forward_into(&Activation::JumpRelu { theta: &bad, eps: 0.1 }, &x, &mut y).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "theta", .. }), "{e}");
        assert!(untouched(&y));
        let half = host(&[0.25; 3], &[3], DType::F16).to_device(&device).unwrap();
        let e = activation::forward(&Activation::Prelu { slope: &half }, &x).unwrap_err();
        assert!(matches!(e, Error::DType { arg: "slope", .. }), "{e}");
        // dslope of the wrong length.
        let slope = host(&[0.25; 3], &[3], DType::F32).to_device(&device).unwrap();
        let dy = host(&[1.0; 6], &[2, 3], DType::F32).to_device(&device).unwrap();
        let mut dx = Tensor::full(&[2, 3], DType::F32, SENTINEL as f64, &device).unwrap();
        let mut dslope = Tensor::full(&[1], DType::F32, SENTINEL as f64, &device).unwrap();
        let e = activation::backward_into(&Activation::Prelu { slope: &slope }, &x, &dy, &mut dx, Some(&mut dslope))
            .unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "dslope", .. }), "{e}");
        assert!(untouched(&dx) && untouched(&dslope));
    }
}

#[test]
fn bad_scalars_are_rejected() {
    for device in devices() {
        let x = host(&[1.0, -1.0], &[2], DType::BF16).to_device(&device).unwrap();
        let dy = host(&[1.0, 1.0], &[2], DType::BF16).to_device(&device).unwrap();
        let mut y = Tensor::full(&[2], DType::BF16, SENTINEL as f64, &device).unwrap();
        let cases: Vec<(Activation, &str)> = vec![
            (Activation::XGelu { alpha: f32::NAN }, "alpha"),
            (Activation::XSilu { alpha: f32::INFINITY }, "alpha"),
            (Activation::Smelu { beta: 0.0 }, "beta"),
            (Activation::Smelu { beta: -1.0 }, "beta"),
            (Activation::Smelu { beta: f32::NAN }, "beta"),
            (Activation::GSmelu(GSmeluParams { alpha: -1.0, beta: 0.5, g_neg: 0.0, g_pos: 1.0, t: 0.0 }), "beta"),
            (Activation::GSmelu(GSmeluParams { alpha: 1.0, beta: 1.0, g_neg: f32::NAN, g_pos: 1.0, t: 0.0 }), "g_neg"),
        ];
        for (act, arg) in cases {
            let e = activation::forward_into(&act, &x, &mut y).unwrap_err();
            assert!(matches!(e, Error::InvalidValue { arg: a, .. } if a == arg), "{act:?}: {e}");
            assert!(untouched(&y));
            let e = activation::backward(&act, &x, &dy).unwrap_err();
            assert!(matches!(e, Error::InvalidValue { arg: a, .. } if a == arg), "{act:?}: {e}");
        }
        let theta = host(&[0.5], &[1], DType::F32).to_device(&device).unwrap();
        let e = activation::backward(&Activation::JumpRelu { theta: &theta, eps: 0.0 }, &x, &dy).unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "eps", .. }), "{e}");
    }
}

#[test]
fn mixed_devices_are_rejected() {
    for device in kernel_devices() {
        let x = host(&[1.0, 2.0], &[2], DType::F32);
        let mut y = Tensor::full(&[2], DType::F32, SENTINEL as f64, &device).unwrap();
        let e = activation::forward_into(&Activation::Relu, &x, &mut y).unwrap_err();
        assert!(matches!(e, Error::Device { arg: "y", .. }), "{e}");
        assert!(untouched(&y));
        let slope = host(&[0.1], &[1], DType::F32);
        let xg = x.to_device(&device).unwrap();
        let e = activation::forward(&Activation::Prelu { slope: &slope }, &xg).unwrap_err();
        assert!(matches!(e, Error::Device { arg: "slope", .. }), "{e}");
    }
    // The emulator's memory is not a GPU's.
    if let (Some(e), Some(g)) = (emu(), gpu()) {
        let x = host(&[1.0, 2.0], &[2], DType::F32).to_device(&e).unwrap();
        let mut y = Tensor::full(&[2], DType::F32, SENTINEL as f64, &g).unwrap();
        let err = activation::forward_into(&Activation::Relu, &x, &mut y).unwrap_err();
        assert!(matches!(err, Error::Device { arg: "y", .. }), "{err}");
    }
}

#[test]
fn without_cuda_feature_gpu_calls_say_so() {
    if kiln::build_info::CUDA_COMPILED {
        return;
    }
    let Ok(gpu) = Device::cuda(0) else {
        eprintln!("skipped: no CUDA device");
        return;
    };
    let x = host(&[1.0], &[1], DType::F32).to_device(&gpu).unwrap();
    assert!(matches!(activation::forward(&Activation::Relu, &x), Err(Error::CudaNotCompiled)));
}

#[test]
fn without_emu_feature_the_emulator_says_so() {
    match Device::emu() {
        Ok(d) => assert!(kiln::build_info::EMU_COMPILED && d.is_emu() && d.to_string() == "emu"),
        Err(e) => assert!(!kiln::build_info::EMU_COMPILED && matches!(e, Error::EmuNotCompiled), "{e}"),
    }
}

#[test]
fn probing_without_a_gpu_is_an_error_not_a_panic() {
    match Device::cuda(0) {
        Ok(d) => assert!(d.is_cuda()),
        Err(e) => assert!(matches!(e, Error::NoDevice(_)), "{e}"),
    }
    assert!(matches!(Device::cuda(1 << 20), Err(Error::NoDevice(_))));
}

#[test]
fn empty_tensors_are_fine() {
    for device in devices() {
        let x = Tensor::zeros(&[0, 4], DType::F16, &device).unwrap();
        let y = activation::forward(&Activation::Gelu, &x).unwrap();
        assert_eq!(y.shape(), &[0, 4]);
        let g = activation::backward(&Activation::XGelu { alpha: 0.1 }, &x, &x).unwrap();
        assert_eq!(g.dparam.unwrap().to_f32_vec().unwrap(), vec![0.0]);
    }
}

/// 64-bit indexing: more than 2^31 elements, flat (with a scalar tail) and per channel.
/// Values are exact in bf16 and the ops exact on them, so every element must match.
#[test]
fn gpu_indexes_past_2_pow_31() {
    use half::bf16;
    let Some(device) = gpu() else { return };
    let Device::Cuda(cuda) = &device else { unreachable!("Device::cuda returns a CUDA device") };
    let (free, _) = cuda.context().mem_get_info().unwrap();
    let channels = 4096;
    let n: usize = (1 << 31) + channels;
    if free < 2 * n * 2 + (1 << 30) {
        eprintln!("skipped: {free} bytes free, not enough for two {n}-element bf16 tensors");
        return;
    }
    // k/8 with |k| ≤ 125 needs 7 significant bits: exact in bf16, and so are relu(x) and x/4.
    let value = |i: usize| ((i % 251) as f32 - 125.0) / 8.0;
    let slope_of = |c: usize| if c % 2 == 0 { 0.25f32 } else { 0.5 };
    let upload = |len: usize| {
        let host: Vec<bf16> = (0..len).map(|i| bf16::from_f32(value(i))).collect();
        Tensor::from_vec(host, &[len / channels.min(len), channels.min(len)]).unwrap().to_device(&device).unwrap()
    };
    let download = |t: &Tensor| cuda.stream().clone_dtoh(t.as_cuda_slice::<bf16>().unwrap()).unwrap();

    // Flat: n + 3 is not a multiple of the vector width, so the tail runs past 2^31 too.
    let flat_n = n + 3;
    let host: Vec<bf16> = (0..flat_n).map(|i| bf16::from_f32(value(i))).collect();
    let x = Tensor::from_vec(host, &[flat_n]).unwrap().to_device(&device).unwrap();
    let y = download(&activation::forward(&Activation::Relu, &x).unwrap());
    drop(x);
    let bad = (0..flat_n).filter(|&i| y[i].to_f32() != value(i).max(0.0)).count();
    assert_eq!(bad, 0, "relu: {bad} wrong elements past 2^31");
    drop(y);

    // Per channel: rows past 2^31 / channels.
    let x = upload(n);
    let slope_host: Vec<f32> = (0..channels).map(slope_of).collect();
    let slope = Tensor::from_vec(slope_host, &[channels]).unwrap().to_device(&device).unwrap();
    let y = download(&activation::forward(&Activation::Prelu { slope: &slope }, &x).unwrap());
    let bad = (0..n)
        .filter(|&i| {
            let v = value(i);
            y[i].to_f32() != if v > 0.0 { v } else { slope_of(i % channels) * v }
        })
        .count();
    assert_eq!(bad, 0, "prelu: {bad} wrong elements past 2^31");
}

// ---- NaN and ±inf: the kernels' convention, followed by the references --------------------

/// Special values placed at the start of x (and dy) by [`with_special_values`].
const SPECIAL: [f64; 3] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];

/// `problem` with NaN, +inf and −inf in x (against finite dy), then, for a backward, NaN, +inf
/// and −inf in dy at finite x of both signs. The rest stays random (finite).
pub(crate) fn with_special_values(problem: &mut kiln::registry::Problem, x: &str, dy: Option<&str>) {
    let xs = &mut problem.inputs.get_mut(x).expect("x").data;
    assert!(xs.len() >= 16, "room for the special values");
    for (i, &v) in SPECIAL.iter().enumerate() {
        xs[i] = v;
        xs[3 + i] = v;
    }
    for (i, v) in [-1.5, 0.75, -0.25, 2.5, -3.0, 0.5].into_iter().enumerate() {
        xs[6 + i] = v;
    }
    if let Some(dy) = dy {
        let dys = &mut problem.inputs.get_mut(dy).expect("dy").data;
        dys[3..6].copy_from_slice(&[0.5, -2.0, 1.25]);
        for (i, &v) in SPECIAL.iter().chain(&SPECIAL).enumerate() {
            dys[6 + i] = v;
        }
    }
}

#[test]
fn forward_of_nan_is_nan_in_every_reference() {
    let s = activation::Scalars::default();
    for kind in ActivationKind::ALL {
        for p in [0.25, 1.0] {
            assert!(activation::cpu::f(kind, &s, p, f64::NAN).is_nan(), "{kind:?}(NaN) with parameter {p}");
        }
    }
}

#[test]
fn nan_and_inf_agree_between_reference_and_kernels() {
    let mut rng = rng();
    let devices: Vec<Device> = std::iter::once(Device::Cpu).chain(emu()).collect();
    for op in family() {
        for dir in Direction::BOTH {
            // [4, 8]: per-channel parameters for PReLU and JumpReLU; [67]: one shared, a scalar tail.
            for shape in [vec![4, 8], vec![67]] {
                let mut problem = op.random_problem(dir, &shape, &mut rng);
                with_special_values(&mut problem, "x", (dir == Direction::Bwd).then_some("dy"));
                for device in &devices {
                    for dtype in DType::FLOATS {
                        let rows =
                            kiln::check::check_problem(op.as_ref(), dir, dtype, &problem, device, "NaN/inf").unwrap();
                        assert_rows(&rows);
                    }
                }
            }
        }
    }
}

#[test]
fn the_comparison_treats_nan_and_inf_deliberately() {
    use kiln::check::compare_elementwise;
    let pass = |got: f64, want: f64| compare_elementwise(&[1.0, got], &[1.0, want], DType::F32).pass;
    assert!(pass(f64::NAN, f64::NAN), "NaN where the reference says NaN passes");
    assert!(!pass(f64::NAN, 1.0), "NaN where the reference is finite fails");
    assert!(!pass(1.0, f64::NAN), "a finite value where the reference says NaN fails");
    assert!(pass(f64::INFINITY, f64::INFINITY) && pass(f64::NEG_INFINITY, f64::NEG_INFINITY));
    assert!(!pass(f64::NEG_INFINITY, f64::INFINITY), "the wrong infinity fails");
    assert!(!pass(3e38, f64::INFINITY), "a finite value where the reference is infinite fails");
    assert!(!pass(f64::INFINITY, 3e38), "an infinity where the reference is finite fails");
    assert!(!pass(f64::NAN, f64::INFINITY) && !pass(f64::INFINITY, f64::NAN));
    // A reduction: one channel's NaN or inf must not widen the tolerance of the others.
    let c = kiln::check::compare_reduction(
        &[f64::INFINITY, 2.0],
        &[f64::INFINITY, 1.0],
        &[f64::INFINITY, 1.0],
        3.0,
        DType::F32,
        None,
    );
    assert!(!c.pass, "2 against 1 next to an infinite channel");
    let c = kiln::check::compare_reduction(&[f64::NAN, 1.0], &[f64::NAN, 1.0], &[f64::NAN, 1.0], 3.0, DType::F32, None);
    assert!(c.pass, "NaN where the reference says NaN, exact elsewhere");
}

// ---- JumpReLU's straight-through window is open: −ε/2 < x − θ < ε/2 ------------------------

#[test]
fn jumprelu_window_is_open_at_both_edges() {
    // θ = 0.5, ε = 0.25: the edges 0.375 and 0.625 are exact in f32 and bf16, and so are the
    // points one bf16 ulp inside them. dy = 1, 2, 4, 8 tells which elements counted.
    let x = [0.375, 0.625, 0.375 + 1.0 / 512.0, 0.625 - 1.0 / 256.0];
    let dy = [1.0, 2.0, 4.0, 8.0];
    let want = -(0.5 / 0.25) * (4.0 + 8.0);
    let s = activation::Scalars { eps: 0.25, ..activation::Scalars::default() };
    let (_, got) = activation::cpu::backward(ActivationKind::JumpRelu, &s, &[0.5], &x, &dy);
    assert_eq!(got.unwrap(), vec![want], "reference");
    assert_eq!(activation::cpu::rectangle(-0.5), 0.0);
    assert_eq!(activation::cpu::rectangle(0.5), 0.0);
    assert_eq!(activation::cpu::rectangle(-0.499), 1.0);
    for device in devices() {
        for dtype in [DType::F32, DType::BF16] {
            let xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let dys: Vec<f32> = dy.iter().map(|&v| v as f32).collect();
            // Shared θ ([4]) and one θ per channel ([1, 4]).
            for (theta, shape) in [(vec![0.5f32], vec![4]), (vec![0.5f32; 4], vec![1, 4])] {
                let th = host(&theta, &[theta.len()], DType::F32).to_device(&device).unwrap();
                let xt = host(&xs, &shape, dtype).to_device(&device).unwrap();
                assert_eq!(xt.to_f32_vec().unwrap(), xs, "exact in {dtype:?}");
                let dyt = host(&dys, &shape, dtype).to_device(&device).unwrap();
                let g = activation::backward(&Activation::JumpRelu { theta: &th, eps: 0.25 }, &xt, &dyt).unwrap();
                let d = g.dparam.unwrap().to_f32_vec().unwrap();
                let total: f32 = d.iter().sum();
                assert_eq!(total as f64, want, "{dtype:?} on {device} with {} θ: {d:?}", theta.len());
            }
        }
    }
}

// ---- scalar parameters: subnormal, non-finite or overflowing values are rejected -----------

/// (op, the argument its error must name): each op is otherwise valid.
fn bad_scalar_cases(theta: &Tensor) -> Vec<(Activation<'_>, &'static str)> {
    let tiny = 1e-40f32; // subnormal in f32
    assert!(tiny > 0.0 && !tiny.is_normal());
    let gs = |alpha, beta, g_neg, g_pos, t| Activation::GSmelu(GSmeluParams { alpha, beta, g_neg, g_pos, t });
    vec![
        (Activation::JumpRelu { theta, eps: tiny }, "eps"),
        (Activation::JumpRelu { theta, eps: f32::INFINITY }, "eps"),
        (Activation::JumpRelu { theta, eps: f32::NAN }, "eps"),
        (Activation::Smelu { beta: tiny }, "beta"),
        (Activation::Smelu { beta: f32::INFINITY }, "beta"),
        (gs(tiny, 1.0, 0.0, 1.0, 0.0), "alpha"),
        (gs(f32::INFINITY, 1.0, 0.0, 1.0, 0.0), "alpha"),
        (gs(1.0, tiny, 0.0, 1.0, 0.0), "beta"),
        (gs(1.0, f32::NEG_INFINITY, 0.0, 1.0, 0.0), "beta"),
        // α + β subnormal (both normal): A = (g₊ − g₋)/(2(α + β)) would overflow.
        (gs(2.0e-38, -1.9e-38, 0.0, 1.0, 0.0), "beta"),
        // α + β normal but A still overflows f32.
        (gs(2.0e-38, 2.0e-38, -1.0e3, 1.0e3, 0.0), "g_pos"),
        // The right piece's offset t + (α+β)g₋/2 + (α−β)g₊/2 overflows f32.
        (gs(3.0e38, 1.0, 0.0, 3.0, 0.0), "t"),
        // 1 + 2α overflows f32.
        (Activation::XGelu { alpha: 3.0e38 }, "alpha"),
        (Activation::XAtlu { alpha: -2.0e38 }, "alpha"),
        (Activation::XSilu { alpha: f32::MAX }, "alpha"),
    ]
}

#[test]
fn subnormal_and_overflowing_scalars_are_rejected() {
    for device in devices() {
        let x = host(&[1.0, -1.0], &[2], DType::BF16).to_device(&device).unwrap();
        let dy = host(&[1.0, 1.0], &[2], DType::BF16).to_device(&device).unwrap();
        let theta = host(&[0.5], &[1], DType::F32).to_device(&device).unwrap();
        for (act, arg) in bad_scalar_cases(&theta) {
            let e = activation::backward(&act, &x, &dy).unwrap_err();
            assert!(matches!(e, Error::InvalidValue { arg: a, .. } if a == arg), "{act:?} on {device}: {e}");
            if !matches!(act, Activation::JumpRelu { .. }) {
                // ε is the backward's only.
                let mut y = Tensor::full(&[2], DType::BF16, SENTINEL as f64, &device).unwrap();
                let e = activation::forward_into(&act, &x, &mut y).unwrap_err();
                assert!(matches!(e, Error::InvalidValue { arg: a, .. } if a == arg), "{act:?} on {device}: {e}");
                assert!(untouched(&y));
            }
        }
        // The smallest normal ε, β and α + β are fine.
        let min = f32::MIN_POSITIVE;
        activation::backward(&Activation::JumpRelu { theta: &theta, eps: min }, &x, &dy).unwrap();
        activation::backward(&Activation::Smelu { beta: min }, &x, &dy).unwrap();
        let ok = GSmeluParams { alpha: 0.0, beta: min, g_neg: 0.0, g_pos: 1.0e-30, t: 0.0 };
        activation::backward(&Activation::GSmelu(ok), &x, &dy).unwrap();
    }
}

/// Emulated device memory for the C ABI tests: real allocations, so a call that validation
/// fails to reject runs (and the test sees SUCCESS) instead of touching a fake address.
#[cfg(feature = "emu")]
pub(crate) mod emu_mem {
    use std::ffi::c_void;

    use kiln::ffi_emu::runtime::{kiln_emu_free, kiln_emu_malloc, kiln_emu_memcpy, kiln_emu_memset};

    pub struct Buf {
        ptr: *mut c_void,
        bytes: usize,
    }

    impl Buf {
        /// `bytes` of emulated memory, zeroed.
        pub fn zeroed(bytes: usize) -> Buf {
            // SAFETY: allocates; checked for null; memset covers exactly the allocation.
            unsafe {
                let ptr = kiln_emu_malloc(bytes.max(16));
                assert!(!ptr.is_null());
                assert_eq!(kiln_emu_memset(ptr, 0, bytes.max(16)), 0);
                Buf { ptr, bytes: bytes.max(16) }
            }
        }

        /// Exactly `bytes` of emulated memory, zeroed: a write past them fails (`zeroed` keeps at
        /// least 16).
        pub fn exact(bytes: usize) -> Buf {
            // SAFETY: allocates; checked for null; memset covers exactly the allocation.
            unsafe {
                let ptr = kiln_emu_malloc(bytes);
                assert!(!ptr.is_null());
                assert_eq!(kiln_emu_memset(ptr, 0, bytes), 0);
                Buf { ptr, bytes }
            }
        }

        /// A buffer holding `values` from element `offset` on (elements before it zeroed).
        pub fn with<T: bytemuck::Pod>(values: &[T], offset: usize) -> Buf {
            let size = std::mem::size_of::<T>();
            let mut b = Buf::zeroed((values.len() + offset) * size);
            b.write(offset * size, bytemuck::cast_slice(values));
            b
        }

        fn write(&mut self, at: usize, src: &[u8]) {
            assert!(at + src.len() <= self.bytes);
            // SAFETY: the range lies inside the allocation (checked above).
            assert_eq!(unsafe { kiln_emu_memcpy(self.ptr.byte_add(at), src.as_ptr().cast(), src.len()) }, 0);
        }

        /// The address of element `offset` of `T`.
        pub fn at<T>(&self, offset: usize) -> *mut c_void {
            assert!((offset + 1) * std::mem::size_of::<T>() <= self.bytes);
            // SAFETY: inside the allocation (checked above).
            unsafe { self.ptr.byte_add(offset * std::mem::size_of::<T>()) }
        }

        /// `len` elements of `T` from element `offset`.
        pub fn read<T: bytemuck::Pod + Default>(&self, offset: usize, len: usize) -> Vec<T> {
            let size = std::mem::size_of::<T>();
            assert!((offset + len) * size <= self.bytes);
            let mut out = vec![T::default(); len];
            let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
            // SAFETY: both ranges are inside their buffers (checked above).
            let rc = unsafe { kiln_emu_memcpy(dst.as_mut_ptr().cast(), self.ptr.byte_add(offset * size), dst.len()) };
            assert_eq!(rc, 0);
            out
        }
    }

    impl Drop for Buf {
        fn drop(&mut self) {
            // SAFETY: allocated by kiln_emu_malloc, freed once.
            unsafe { kiln_emu_free(self.ptr) }
        }
    }
}

#[cfg(feature = "emu")]
#[test]
fn the_c_abi_rejects_subnormal_and_overflowing_scalars() {
    use emu_mem::Buf;
    use kiln::ffi::{kiln_dtype, kiln_status};
    use kiln::ffi_emu as ffi;
    use std::ptr::null_mut;
    let dt = kiln_dtype::KILN_DTYPE_F32;
    let n = 64i64;
    let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 3.0).collect();
    let (x, dy, out) = (Buf::with(&data, 0), Buf::with(&data, 0), Buf::zeroed(n as usize * 4));
    let theta = Buf::with(&[0.5f32], 0);
    let dtheta = Buf::zeroed(4);
    let ws_bytes = 1 << 16;
    let ws = Buf::zeroed(ws_bytes);
    let (xp, dyp, op) = (x.at::<f32>(0), dy.at::<f32>(0), out.at::<f32>(0));
    let invalid = kiln_status::KILN_ERROR_INVALID_VALUE;
    let tiny = 1e-40f32;
    // SAFETY: every pointer is a live emulated allocation of the sizes passed.
    unsafe {
        for eps in [tiny, f32::INFINITY, f32::NAN, 0.0, -1.0] {
            let s = ffi::kiln_activation_jumprelu_bwd(
                dt,
                xp,
                dyp,
                op,
                n,
                theta.at::<f32>(0).cast(),
                1,
                eps,
                dtheta.at::<f32>(0).cast(),
                ws.at::<u8>(0),
                ws_bytes as i64,
                null_mut(),
            );
            assert_eq!(s, invalid, "jumprelu eps = {eps}");
        }
        for beta in [tiny, f32::INFINITY] {
            assert_eq!(ffi::kiln_activation_smelu_fwd(dt, xp, op, n, beta, null_mut()), invalid, "smelu beta = {beta}");
            assert_eq!(ffi::kiln_activation_smelu_bwd(dt, xp, dyp, op, n, beta, null_mut()), invalid);
        }
        let gsmelu = [
            (tiny, 1.0, 0.0, 1.0, 0.0),
            (1.0, tiny, 0.0, 1.0, 0.0),
            (2.0e-38, -1.9e-38, 0.0, 1.0, 0.0),
            (2.0e-38, 2.0e-38, -1.0e3, 1.0e3, 0.0),
            (3.0e38, 1.0, 0.0, 3.0, 0.0),
        ];
        for (a, b, gn, gp, t) in gsmelu {
            let s = ffi::kiln_activation_gsmelu_fwd(dt, xp, op, n, a, b, gn, gp, t, null_mut());
            assert_eq!(s, invalid, "gsmelu {a} {b} {gn} {gp} {t}");
            let s = ffi::kiln_activation_gsmelu_bwd(dt, xp, dyp, op, n, a, b, gn, gp, t, null_mut());
            assert_eq!(s, invalid, "gsmelu bwd {a} {b} {gn} {gp} {t}");
        }
        for alpha in [3.0e38f32, -2.0e38, f32::MAX] {
            assert_eq!(ffi::kiln_activation_xgelu_fwd(dt, xp, op, n, alpha, null_mut()), invalid, "xgelu {alpha}");
            let s = ffi::kiln_activation_xsilu_bwd(
                dt,
                xp,
                dyp,
                op,
                n,
                alpha,
                dtheta.at::<f32>(0).cast(),
                ws.at::<u8>(0),
                ws_bytes as i64,
                null_mut(),
            );
            assert_eq!(s, invalid, "xsilu {alpha}");
            assert_eq!(ffi::kiln_activation_xatlu_fwd(dt, xp, op, n, alpha, null_mut()), invalid, "xatlu {alpha}");
        }
        // The smallest normal ε is accepted.
        let s = ffi::kiln_activation_jumprelu_bwd(
            dt,
            xp,
            dyp,
            op,
            n,
            theta.at::<f32>(0).cast(),
            1,
            f32::MIN_POSITIVE,
            dtheta.at::<f32>(0).cast(),
            ws.at::<u8>(0),
            ws_bytes as i64,
            null_mut(),
        );
        assert_eq!(s, kiln_status::KILN_SUCCESS);
    }
}

// ---- determinism across addresses: the partition depends on n and channels only -----------

/// Random storage values of `dtype` (f32 or bf16) as raw bits, and their count.
#[cfg(feature = "emu")]
pub(crate) fn random_storage(dtype: DType, n: usize, sd: f64, mean: f64, rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    use rand_distr::{Distribution, Normal};
    let d = Normal::new(mean, sd).unwrap();
    let v: Vec<f64> = (0..n).map(|_| d.sample(rng)).collect();
    match dtype {
        DType::F32 => bytemuck::cast_slice(&v.iter().map(|&x| x as f32).collect::<Vec<_>>()).to_vec(),
        DType::BF16 => bytemuck::cast_slice(&v.iter().map(|&x| half::bf16::from_f64(x)).collect::<Vec<_>>()).to_vec(),
        _ => unreachable!("f32 or bf16"),
    }
}

#[cfg(feature = "emu")]
#[test]
fn parameter_gradients_are_bitwise_equal_at_every_alignment() {
    use emu_mem::Buf;
    use kiln::ffi_emu as ffi;
    use std::ptr::null_mut;
    let mut rng = rng();
    // (op, rows, channels): a flat scalar α over several partials with a tail; per-channel
    // parameters shared (channels 1) and per channel (a multiple of every pack width, and not).
    let cases = [
        ("xsilu", 1, 65539),
        ("prelu", 1, 20011),
        ("jumprelu", 1, 20011),
        ("prelu", 300, 64),
        ("jumprelu", 257, 72),
        ("prelu", 130, 40),
        ("jumprelu", 100, 36),
    ];
    for dtype in [DType::F32, DType::BF16] {
        let size = dtype.size_in_bytes();
        for (name, rows, channels) in cases {
            let n = rows * channels;
            let pc = if rows == 1 { 1 } else { channels };
            let x = random_storage(dtype, n, 1.0, 0.3, &mut rng);
            let dy = random_storage(dtype, n, 1.0, 0.0, &mut rng);
            let param: Vec<f32> = (0..pc).map(|c| 0.2 + 0.01 * c as f32).collect();
            // SAFETY: a pure size computation.
            let ws_bytes = unsafe { ffi::kiln_activation_workspace_bytes(n as i64, pc as i64) };
            let run = |offset: usize| -> Vec<u32> {
                let xb = Buf::with(&x, offset * size);
                let dyb = Buf::with(&dy, offset * size);
                let dxb = Buf::zeroed((n + offset) * size);
                let pb = Buf::with(&param, 0);
                let dpb = Buf::zeroed(pc * 4);
                let ws = Buf::zeroed(ws_bytes as usize);
                let (xp, dyp, dxp) =
                    (xb.at::<u8>(offset * size), dyb.at::<u8>(offset * size), dxb.at::<u8>(offset * size));
                let (pp, dpp, wsp) = (pb.at::<f32>(0).cast(), dpb.at::<f32>(0).cast(), ws.at::<u8>(0));
                let (dt, nn, c) = (dtype.to_ffi(), n as i64, pc as i64);
                // SAFETY: every pointer is a live emulated allocation of the sizes passed.
                let s = unsafe {
                    match name {
                        "xsilu" => {
                            ffi::kiln_activation_xsilu_bwd(dt, xp, dyp, dxp, nn, 0.25, dpp, wsp, ws_bytes, null_mut())
                        }
                        "prelu" => {
                            ffi::kiln_activation_prelu_bwd(dt, xp, dyp, dxp, nn, pp, c, dpp, wsp, ws_bytes, null_mut())
                        }
                        _ => ffi::kiln_activation_jumprelu_bwd(
                            dt,
                            xp,
                            dyp,
                            dxp,
                            nn,
                            pp,
                            c,
                            0.5,
                            dpp,
                            wsp,
                            ws_bytes,
                            null_mut(),
                        ),
                    }
                };
                assert_eq!(s, kiln::ffi::kiln_status::KILN_SUCCESS, "{name}");
                dpb.read::<f32>(0, pc).into_iter().map(f32::to_bits).collect()
            };
            let aligned = run(0);
            assert!(aligned.iter().any(|&b| f32::from_bits(b) != 0.0), "{name}: a trivial gradient");
            for offset in [1, 3] {
                assert_eq!(run(offset), aligned, "{name} {dtype:?} [{rows}, {channels}]: offset {offset} elements");
            }
        }
    }
}
