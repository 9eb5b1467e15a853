//! The GLU MLP block: reference gradients by finite differences, the host path, the emulator
//! and the GPU against the reference under the 2×/3× naive-error rule (each skips without its
//! backend), packed equals separate weights, inference saves nothing, and bad input.

use crate::common::{assert_rows, devices, emu, gpu, rng};
use kiln::check::check_shapes;
use kiln::glu::mlp::{self, GateUp, GateUpGrads, Mlp, Mode};
use kiln::glu::{Glu, GluKind};
use kiln::registry::{Op, select};
use kiln::{DType, Device, Error, Tensor};

fn blocks() -> Vec<Box<dyn Op>> {
    select(&["glu/mlp_".into()])
}

#[test]
fn every_gate_has_a_block_whose_gradients_pass_finite_differences() {
    let mut rng = rng();
    let ops = blocks();
    assert_eq!(ops.len(), GluKind::ALL.len());
    for op in ops {
        let rows = op.self_checks(&mut rng);
        assert!(rows.len() >= 7, "{}: every weight and bias gradient", op.full_name());
        assert_rows(&rows);
    }
}

#[test]
fn host_path_matches_reference() {
    let mut rng = rng();
    for op in blocks() {
        assert_rows(&check_shapes(op.as_ref(), &Device::Cpu, &DType::FLOATS, &[vec![3, 5, 7]], &mut rng).unwrap());
    }
}

#[test]
fn gpu_matches_reference_within_the_naive_error_rule() {
    let Some(device) = gpu() else { return };
    let mut rng = rng();
    for op in blocks() {
        assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &op.check_shapes(), &mut rng).unwrap());
    }
}

#[test]
fn emu_matches_reference_within_the_naive_error_rule() {
    let Some(device) = emu() else { return };
    let mut rng = rng();
    // [T, d, F]: not element counts; the smaller ones keep the host GEMMs and the checked gate
    // quick, and [64, 96, 256] runs on a GPU.
    let shapes = [vec![1, 1, 1], vec![3, 5, 7], vec![17, 33, 24]];
    for op in blocks() {
        assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &shapes, &mut rng).unwrap());
    }
}

fn tensor(values: impl Fn(usize) -> f32, shape: &[usize], device: &Device) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(values).collect();
    Tensor::from_f32(&v, shape, DType::F32).unwrap().to_device(device).unwrap()
}

#[test]
fn packed_weights_equal_separate_and_inference_saves_nothing() {
    for device in devices() {
        let (t, d, f) = (4, 6, 5);
        let x = tensor(|i| (i as f32 * 0.3).sin(), &[t, d], &device);
        let wg = tensor(|i| (i as f32 * 0.17).cos() * 0.3, &[f, d], &device);
        let wu = tensor(|i| (i as f32 * 0.23).sin() * 0.3, &[f, d], &device);
        let wd = tensor(|i| (i as f32 * 0.13).cos() * 0.3, &[d, f], &device);
        let bg = tensor(|i| i as f32 * 0.01, &[f], &device);
        let bu = tensor(|i| -(i as f32) * 0.02, &[f], &device);
        let w_host: Vec<f32> = [wg.to_f32_vec().unwrap(), wu.to_f32_vec().unwrap()].concat();
        let b_host: Vec<f32> = [bg.to_f32_vec().unwrap(), bu.to_f32_vec().unwrap()].concat();
        let w = Tensor::from_f32(&w_host, &[2 * f, d], DType::F32).unwrap().to_device(&device).unwrap();
        let b = Tensor::from_f32(&b_host, &[2 * f], DType::F32).unwrap().to_device(&device).unwrap();
        let glu = Glu { kind: GluKind::XSwiglu, alpha: 0.2, order: 1 };
        let sep = Mlp {
            glu,
            gate_up: GateUp::Separate { w_gate: &wg, w_up: &wu, b_gate: Some(&bg), b_up: Some(&bu) },
            w_down: &wd,
            b_down: None,
        };
        let pk = Mlp { glu, gate_up: GateUp::Packed { w: &w, b: Some(&b) }, w_down: &wd, b_down: None };
        let a = mlp::forward(&sep, &x, Mode::Training).unwrap();
        let c = mlp::forward(&pk, &x, Mode::Training).unwrap();
        let close = |p: Vec<f32>, q: Vec<f32>| p.iter().zip(&q).all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs()));
        assert!(close(a.y.to_f32_vec().unwrap(), c.y.to_f32_vec().unwrap()), "forward on {device}");
        assert!(mlp::forward(&sep, &x, Mode::Inference).unwrap().saved.is_none());
        let dy = tensor(|i| (i as f32 * 0.7).cos(), &[t, d], &device);
        let ga = mlp::backward(&sep, &x, a.saved.as_ref().unwrap(), &dy).unwrap();
        let gc = mlp::backward(&pk, &x, c.saved.as_ref().unwrap(), &dy).unwrap();
        assert!(close(ga.dx.to_f32_vec().unwrap(), gc.dx.to_f32_vec().unwrap()), "dx on {device}");
        let (GateUpGrads::Separate { dw_gate, dw_up, db_gate, db_up }, GateUpGrads::Packed { dw, db }) =
            (ga.gate_up, gc.gate_up)
        else {
            panic!("gradients follow the weights' layout");
        };
        let sep_dw = [dw_gate.to_f32_vec().unwrap(), dw_up.to_f32_vec().unwrap()].concat();
        assert!(close(sep_dw, dw.to_f32_vec().unwrap()), "dW on {device}");
        let sep_db = [db_gate.unwrap().to_f32_vec().unwrap(), db_up.unwrap().to_f32_vec().unwrap()].concat();
        assert!(close(sep_db, db.unwrap().to_f32_vec().unwrap()), "db on {device}");
        assert!(ga.db_down.is_none() && ga.dalpha.is_some());
    }
}

#[test]
fn bad_input_is_rejected() {
    for device in devices() {
        let z = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, &device).unwrap();
        let (t, d, f) = (2, 3, 4);
        let x = z(&[t, d], DType::BF16);
        let (wg, wu, wd) = (z(&[f, d], DType::BF16), z(&[f, d], DType::BF16), z(&[d, f], DType::BF16));
        let glu = Glu::new(GluKind::Swiglu);
        let block = |w_gate, w_up, w_down| Mlp {
            glu,
            gate_up: GateUp::Separate { w_gate, w_up, b_gate: None, b_up: None },
            w_down,
            b_down: None,
        };
        let wrong = z(&[f + 1, d], DType::BF16);
        let e = mlp::forward(&block(&wrong, &wu, &wd), &x, Mode::Inference).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "w_gate", .. }), "{e}");
        let e = mlp::forward(&block(&wg, &wrong, &wd), &x, Mode::Inference).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "w_up", .. }), "{e}");
        let wd_bad = z(&[d + 1, f], DType::BF16);
        let e = mlp::forward(&block(&wg, &wu, &wd_bad), &x, Mode::Inference).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "w_down", .. }), "{e}");
        let wg32 = z(&[f, d], DType::F32);
        let e = mlp::forward(&block(&wg32, &wu, &wd), &x, Mode::Inference).unwrap_err();
        assert!(matches!(e, Error::DType { arg: "w_gate", .. }), "{e}");
        let x3 = z(&[1, t, d], DType::BF16);
        let e = mlp::forward(&block(&wg, &wu, &wd), &x3, Mode::Inference).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "x", .. }), "{e}");
        let out = mlp::forward(&block(&wg, &wu, &wd), &x, Mode::Training).unwrap();
        let dy = z(&[t, d + 1], DType::BF16);
        let e = mlp::backward(&block(&wg, &wu, &wd), &x, out.saved.as_ref().unwrap(), &dy).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "dy", .. }), "{e}");
        let bad_glu = Mlp { glu: Glu { kind: GluKind::XGeglu, alpha: f32::NAN, order: 1 }, ..block(&wg, &wu, &wd) };
        let e = mlp::forward(&bad_glu, &x, Mode::Inference).unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "alpha", .. }), "{e}");
    }
}
