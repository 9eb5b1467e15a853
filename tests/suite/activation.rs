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
