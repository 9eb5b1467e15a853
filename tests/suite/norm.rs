//! The norm family: references on their own (finite differences, constant rows), the host
//! path, the emulator and the GPU against reference with and without the optional inputs and
//! on large-magnitude bf16 rows (each skips without its backend), and bad input.

use crate::common::{assert_rows, devices, emu, emu_shapes, gpu, kernel_devices, rng};
use kiln::check::{CheckRow, check_problem, check_shapes};
use kiln::norm::{self, Norm, NormKind, Stats};
use kiln::registry::{Direction, Op, select};
use kiln::{DType, Device, Error, Tensor};
use rand::rngs::StdRng;

fn family() -> Vec<Box<dyn Op>> {
    select(&["norm/".into()])
}

#[test]
fn references_pass_finite_differences() {
    let mut rng = rng();
    for op in family() {
        let rows = op.self_checks(&mut rng);
        assert_eq!(rows.iter().filter(|r| r.what.starts_with("finite differences")).count(), 4);
        assert_rows(&rows);
    }
}

#[test]
fn host_path_matches_reference() {
    let mut rng = rng();
    let shapes = [vec![1, 1], vec![3, 7], vec![4, 100]];
    for op in family() {
        assert_rows(&check_shapes(op.as_ref(), &Device::Cpu, &DType::FLOATS, &shapes, &mut rng).unwrap());
    }
}

/// Every subset of the optional inputs (residual, γ, β, dresidual_out) on `device`.
fn optional_subsets(op: &dyn Op, device: &Device, dtype: DType, shape: &[usize], rng: &mut StdRng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for mask in 0..16u32 {
        for dir in Direction::BOTH {
            let mut p = op.random_problem(dir, shape, rng);
            for (bit, name) in ["residual", "gamma", "beta", "dresidual_out"].iter().enumerate() {
                if mask & (1 << bit) == 0 {
                    p.inputs.remove(*name);
                }
            }
            rows.extend(
                check_problem(op, dir, dtype, &p, device, &format!("{shape:?} optional mask {mask:04b}")).unwrap(),
            );
        }
    }
    rows
}

#[test]
fn host_path_handles_every_optional_subset() {
    let mut rng = rng();
    for op in family() {
        assert_rows(&optional_subsets(op.as_ref(), &Device::Cpu, DType::F32, &[3, 9], &mut rng));
    }
}

#[test]
fn gpu_matches_reference() {
    let Some(device) = gpu() else { return };
    matches_reference(&device, &|op| op.check_shapes());
}

#[test]
fn emu_matches_reference() {
    let Some(device) = emu() else { return };
    matches_reference(&device, &emu_shapes);
}

/// `shapes` of every op, then every optional subset in every dtype.
fn matches_reference(device: &Device, shapes: &dyn Fn(&dyn Op) -> Vec<Vec<usize>>) {
    let mut rng = rng();
    for op in family() {
        assert_rows(&check_shapes(op.as_ref(), device, &DType::FLOATS, &shapes(op.as_ref()), &mut rng).unwrap());
        for dtype in DType::FLOATS {
            assert_rows(&optional_subsets(op.as_ref(), device, dtype, &[7, 1000], &mut rng));
        }
    }
}

/// The looped kernels (rows longer than the register-cached ones hold: 8192 elements backward,
/// 16384 forward) on the element-by-element path (a length no vector width divides), where each
/// thread's slice of a row holds several elements (4 f32, 8 f16 or bf16).
#[test]
fn long_rows_on_the_scalar_path_match_reference() {
    let mut rng = rng();
    for (device, op) in kernel_devices().into_iter().flat_map(|d| family().into_iter().map(move |op| (d.clone(), op))) {
        let shapes = [vec![3, 8193], vec![2, 16387]];
        assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &shapes, &mut rng).unwrap());
    }
}

/// Each kernel shape on the 16-byte path: rows the pipelined kernels leave to the
/// register-cached ones (forward above 512 threads a row: dim 8200; backward: dim 4104), and
/// f32 rows of 4096 with a residual, whose ring takes the pipelined forward's two-stage form and
/// is too large for the pipelined backward, and of 8192, too large for either (both fall back).
#[test]
fn every_kernel_shape_of_the_vector_path_matches_reference() {
    let mut rng = rng();
    for (device, op) in kernel_devices().into_iter().flat_map(|d| family().into_iter().map(move |op| (d.clone(), op))) {
        let shapes = [vec![3, 8200], vec![3, 4104]];
        assert_rows(&check_shapes(op.as_ref(), &device, &[DType::BF16], &shapes, &mut rng).unwrap());
        assert_rows(
            &check_shapes(op.as_ref(), &device, &[DType::F32], &[vec![24, 4096], vec![3, 8192]], &mut rng).unwrap(),
        );
    }
}

/// dγ and dβ over more row chunks than the finalize kernel has lanes: 577 rows are 10 chunks of
/// 64 against its 8 lanes a column, so lanes sum more than one chunk.
#[test]
fn parameter_gradients_over_many_row_chunks_match_reference() {
    let mut rng = rng();
    for (device, op) in kernel_devices().into_iter().flat_map(|d| family().into_iter().map(move |op| (d.clone(), op))) {
        let rows = check_shapes(op.as_ref(), &device, &DType::FLOATS, &[vec![577, 40]], &mut rng).unwrap();
        assert!(rows.iter().any(|r| r.what.starts_with("dgamma")), "no dgamma row: {rows:#?}");
        assert_rows(&rows);
    }
}

/// No rows: nothing is read, but dγ and dβ are empty sums, zero on every device (the launcher
/// zeroes them, so a caller's buffers never keep stale values).
#[test]
fn empty_rows_give_zero_parameter_gradients() {
    for device in devices() {
        let on = |t: Tensor| t.to_device(&device).unwrap();
        let x = on(Tensor::zeros(&[0, 8], DType::F16, &Device::Cpu).unwrap());
        let (gamma, beta) = (
            on(Tensor::from_f32(&[1.5; 8], &[8], DType::F32).unwrap()),
            on(Tensor::zeros(&[8], DType::F32, &Device::Cpu).unwrap()),
        );
        let ln = Norm { kind: NormKind::LayerNorm, eps: 1e-5, gamma: Some(&gamma), beta: Some(&beta) };
        let out = norm::forward(&ln, &x, None, false).unwrap();
        assert_eq!(out.y.shape(), &[0, 8], "{device}");
        let g = norm::backward(&ln, &x, &x, None, &out.stats, None).unwrap();
        assert_eq!(g.dx.shape(), &[0, 8], "{device}");
        assert_eq!(g.dgamma.unwrap().to_f32_vec().unwrap(), [0.0; 8], "{device}");
        assert_eq!(g.dbeta.unwrap().to_f32_vec().unwrap(), [0.0; 8], "{device}");
    }
}

#[test]
fn gpu_large_magnitude_bf16_rows_are_finite_and_accurate() {
    let Some(device) = gpu() else { return };
    large_magnitude_bf16_rows(&device, 64);
}

#[test]
fn emu_large_magnitude_bf16_rows_are_finite_and_accurate() {
    let Some(device) = emu() else { return };
    large_magnitude_bf16_rows(&device, 4);
}

/// `rows` rows of 4096 with |x| ~ 1e4, bf16, both directions.
fn large_magnitude_bf16_rows(device: &Device, rows: usize) {
    let mut rng = rng();
    for op in family() {
        for dir in Direction::BOTH {
            let mut p = op.random_problem(dir, &[rows, 4096], &mut rng);
            // |x| ~ 1e4: a large offset per row plus O(1e3) variation.
            for v in &mut p.inputs.get_mut("x").unwrap().data {
                *v = 1e4 + 1e3 * *v;
            }
            assert_rows(&check_problem(op.as_ref(), dir, DType::BF16, &p, device, "|x|~1e4").unwrap());
        }
    }
}

#[test]
fn gpu_backward_keeps_precision_on_offset_rows() {
    let Some(device) = gpu() else { return };
    backward_on_offset_rows(&device, 64);
}

#[test]
fn emu_backward_keeps_precision_on_offset_rows() {
    let Some(device) = emu() else { return };
    backward_on_offset_rows(&device, 4);
}

/// f32 rows of m + N(0, 1)-like values with |mean|/std up to 1e4, through the register-cached
/// (D = 4096) and the looped (D = 16384) backward: dx and dγ within a few f32 ulps of the f64
/// reference, relative to their largest magnitude. Centering the backward's x̂ on the saved,
/// rounded f32 mean would cost ~4e-4 here.
fn backward_on_offset_rows(device: &Device, rows: usize) {
    use rand::Rng;
    let mut rng = rng();
    for dim in [4096, 16384] {
        for offset in [1e2f32, 1e4, -1e4] {
            let n = rows * dim;
            let xs: Vec<f32> = (0..n).map(|_| offset + rng.random_range(-1.7f32..1.7)).collect();
            let dys: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let gs: Vec<f32> = (0..dim).map(|_| rng.random_range(0.5f32..1.5)).collect();
            let host_x = Tensor::from_f32(&xs, &[rows, dim], DType::F32).unwrap();
            let host_dy = Tensor::from_f32(&dys, &[rows, dim], DType::F32).unwrap();
            let host_g = Tensor::from_f32(&gs, &[dim], DType::F32).unwrap();
            let grads = |dev: &Device| {
                let (x, dy, g) =
                    (host_x.to_device(dev).unwrap(), host_dy.to_device(dev).unwrap(), host_g.to_device(dev).unwrap());
                let ln = Norm { kind: NormKind::LayerNorm, eps: 1e-5, gamma: Some(&g), beta: None };
                let out = norm::forward(&ln, &x, None, false).unwrap();
                let gr = norm::backward(&ln, &dy, &x, None, &out.stats, None).unwrap();
                (gr.dx.to_f64_vec().unwrap(), gr.dgamma.unwrap().to_f64_vec().unwrap())
            };
            let (want_dx, want_dg) = grads(&Device::Cpu);
            let (got_dx, got_dg) = grads(device);
            for (what, got, want) in [("dx", &got_dx, &want_dx), ("dgamma", &got_dg, &want_dg)] {
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let err = got.iter().zip(want).fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
                // f32 rows of 4096-16384 elements: sums carry ~1e-6 relative error.
                assert!(err <= 2e-5 * scale, "{what} D={dim} offset {offset}: error {err:e} vs max |ref| {scale:e}");
            }
        }
    }
}

/// The backward that benchmarks time (statistics computed once by `Op::prepare`) gives bitwise
/// what the plain run (statistics from its own forward) gives.
#[test]
fn prepared_backward_equals_the_plain_run() {
    let mut rng = rng();
    for device in kernel_devices() {
        for op in family() {
            let problem = op.random_problem(Direction::Bwd, &[33, 200], &mut rng);
            let run = |prepare: bool| {
                let mut inputs = problem.tensors(op.as_ref(), Direction::Bwd, DType::BF16, &device).unwrap();
                if prepare {
                    op.prepare(Direction::Bwd, &mut inputs, &problem.params).unwrap();
                }
                let mut outputs = kiln::registry::Tensors::new();
                for (spec, shape) in op.outputs(Direction::Bwd, &problem).unwrap() {
                    let dtype = spec.storage.dtype(DType::BF16);
                    outputs.insert(spec.name.to_string(), Tensor::zeros(&shape, dtype, &device).unwrap());
                }
                op.run(Direction::Bwd, &inputs, &problem.params, &mut outputs).unwrap();
                outputs.into_iter().map(|(k, t)| (k, t.to_f32_vec().unwrap())).collect::<Vec<_>>()
            };
            let (plain, prepared) = (run(false), run(true));
            assert!(!plain.is_empty());
            for ((name, a), (_, b)) in plain.iter().zip(&prepared) {
                let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{} {name} on {device}", op.full_name());
            }
        }
    }
}

#[test]
fn constant_rows_give_beta_without_nan() {
    for device in devices() {
        for dtype in DType::FLOATS {
            let x = Tensor::from_f32(&[3.25; 24], &[3, 8], dtype).unwrap().to_device(&device).unwrap();
            let beta_v: Vec<f32> = (0..8).map(|i| i as f32 * 0.5 - 1.0).collect();
            let beta = Tensor::from_f32(&beta_v, &[8], DType::F32).unwrap().to_device(&device).unwrap();
            let ln = Norm { kind: NormKind::LayerNorm, eps: 1e-5, gamma: None, beta: Some(&beta) };
            let y = norm::forward(&ln, &x, None, false).unwrap().y.to_f32_vec().unwrap();
            let want: Vec<f32> = (0..24).map(|i| dtype_round(beta_v[i % 8], dtype)).collect();
            assert_eq!(y, want, "{dtype} on {device}");
        }
    }
}

fn dtype_round(v: f32, dtype: DType) -> f32 {
    dtype.round(v as f64) as f32
}

#[test]
fn bad_input_is_rejected() {
    for device in devices() {
        let on = |t: Tensor| t.to_device(&device).unwrap();
        let x = on(Tensor::from_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], DType::BF16).unwrap());
        let g2 = on(Tensor::from_f32(&[1.0, 1.0], &[2], DType::F32).unwrap());
        let ln = |gamma, beta, eps| Norm { kind: NormKind::LayerNorm, eps, gamma, beta };
        assert!(matches!(
            norm::forward(&ln(Some(&g2), None, 1e-5), &x, None, false),
            Err(Error::Shape { arg: "gamma", .. })
        ));
        assert!(matches!(
            norm::forward(&ln(None, Some(&g2), 1e-5), &x, None, false),
            Err(Error::Shape { arg: "beta", .. })
        ));
        let g_half = on(Tensor::from_f32(&[1.0; 3], &[3], DType::BF16).unwrap());
        assert!(matches!(
            norm::forward(&ln(Some(&g_half), None, 1e-5), &x, None, false),
            Err(Error::DType { arg: "gamma", .. })
        ));
        for eps in [0.0, -1e-5, f32::NAN] {
            assert!(matches!(
                norm::forward(&ln(None, None, eps), &x, None, false),
                Err(Error::InvalidValue { arg: "eps", .. })
            ));
        }
        let r = on(Tensor::from_f32(&[1.0; 4], &[2, 2], DType::BF16).unwrap());
        assert!(matches!(
            norm::forward(&ln(None, None, 1e-5), &x, Some(&r), false),
            Err(Error::Shape { arg: "residual", .. })
        ));
        let r32 = on(Tensor::from_f32(&[1.0; 6], &[2, 3], DType::F32).unwrap());
        assert!(matches!(
            norm::forward(&ln(None, None, 1e-5), &x, Some(&r32), true),
            Err(Error::DType { arg: "residual", .. })
        ));
        assert!(matches!(
            norm::forward(&ln(None, None, 1e-5), &x, None, true),
            Err(Error::InvalidValue { arg: "residual", .. })
        ));
        let wide = Tensor::zeros(&[1, 65537], DType::BF16, &device).unwrap();
        assert!(matches!(norm::forward(&ln(None, None, 1e-5), &wide, None, false), Err(Error::Shape { arg: "x", .. })));
        // Backward: dy layout, missing mean, wrong statistics length.
        let out = norm::forward(&ln(None, None, 1e-5), &x, None, false).unwrap();
        let dy = on(Tensor::from_f32(&[1.0; 6], &[3, 2], DType::BF16).unwrap());
        assert!(matches!(
            norm::backward(&ln(None, None, 1e-5), &dy, &x, None, &out.stats, None),
            Err(Error::Shape { arg: "dy", .. })
        ));
        let dy = on(Tensor::from_f32(&[1.0; 6], &[2, 3], DType::BF16).unwrap());
        let no_mean = Stats { mean: None, rstd: out.stats.rstd };
        assert!(matches!(
            norm::backward(&ln(None, None, 1e-5), &dy, &x, None, &no_mean, None),
            Err(Error::InvalidValue { arg: "mean", .. })
        ));
        let short = Stats { mean: None, rstd: on(Tensor::from_f32(&[1.0], &[1], DType::F32).unwrap()) };
        let rms = Norm { kind: NormKind::RmsNorm, eps: 1e-5, gamma: None, beta: None };
        assert!(matches!(norm::backward(&rms, &dy, &x, None, &short, None), Err(Error::Shape { arg: "rstd", .. })));
    }
}

#[test]
fn mixed_devices_are_rejected() {
    for device in kernel_devices() {
        let x = Tensor::from_f32(&[1.0; 6], &[2, 3], DType::F32).unwrap().to_device(&device).unwrap();
        let gamma = Tensor::from_f32(&[1.0; 3], &[3], DType::F32).unwrap();
        let ln = Norm { kind: NormKind::LayerNorm, eps: 1e-5, gamma: Some(&gamma), beta: None };
        assert!(matches!(norm::forward(&ln, &x, None, false), Err(Error::Device { arg: "gamma", .. })));
    }
}
