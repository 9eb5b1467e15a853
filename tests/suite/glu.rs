//! The fused GLU kernels: references on their own, every layout on the host, the emulator and
//! the GPU (each skips without its backend), in place, and bad input.

use crate::common::{assert_rows, devices, emu, emu_shapes, gpu, kernel_devices, rng};
use kiln::check::{CheckRow, check_problem, check_shapes};
use kiln::glu::op::packed_problem;
use kiln::glu::{self, GateHalf, Glu, GluInput, GluInputGrads, GluInputMut, GluKind};
use kiln::registry::{Direction, Op, select};
use kiln::{DType, Device, Error, Tensor};
use rand::rngs::StdRng;

fn family() -> Vec<Box<dyn Op>> {
    select(&["glu/".into()]).into_iter().filter(|op| !op.name().starts_with("mlp")).collect()
}

#[test]
fn references_pass_finite_differences_and_identities() {
    let mut rng = rng();
    let ops = family();
    assert_eq!(ops.len(), GluKind::ALL.len());
    for op in ops {
        assert_rows(&op.self_checks(&mut rng));
    }
}

/// Separate, packed gate-first and packed gate-second, both directions, on `device`.
fn every_layout(
    op: &dyn Op,
    device: &Device,
    dtypes: &[DType],
    shapes: &[Vec<usize>],
    rng: &mut StdRng,
) -> Vec<CheckRow> {
    let mut rows = check_shapes(op, device, dtypes, shapes, rng).unwrap();
    for shape in shapes {
        for dir in Direction::BOTH {
            for gate in [GateHalf::First, GateHalf::Second] {
                let p = packed_problem(&op.random_problem(dir, shape, rng), gate).unwrap();
                for &dtype in dtypes {
                    rows.extend(
                        check_problem(op, dir, dtype, &p, device, &format!("{shape:?} packed {gate:?}")).unwrap(),
                    );
                }
            }
        }
    }
    rows
}

#[test]
fn host_path_matches_reference_in_every_layout() {
    let mut rng = rng();
    for op in family() {
        assert_rows(&every_layout(op.as_ref(), &Device::Cpu, &DType::FLOATS, &[vec![3, 7], vec![2, 16]], &mut rng));
    }
}

#[test]
fn gpu_matches_reference_in_every_layout() {
    let Some(device) = gpu() else { return };
    let mut rng = rng();
    for op in family() {
        assert_rows(&every_layout(op.as_ref(), &device, &DType::FLOATS, &op.check_shapes(), &mut rng));
    }
}

#[test]
fn emu_matches_reference_in_every_layout() {
    let Some(device) = emu() else { return };
    let mut rng = rng();
    for op in family() {
        assert_rows(&every_layout(op.as_ref(), &device, &DType::FLOATS, &emu_shapes(op.as_ref()), &mut rng));
    }
}

#[test]
fn packed_equals_separate_and_inplace_equals_out_of_place() {
    for device in devices() {
        for kind in GluKind::ALL {
            let g = Glu { kind, alpha: if kind.has_alpha() { 0.3 } else { 0.0 }, order: kind.default_order() };
            let (rows, f) = (5, 9);
            let av: Vec<f32> = (0..rows * f).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let bv: Vec<f32> = (0..rows * f).map(|i| (i as f32 * 0.11).cos()).collect();
            let dyv: Vec<f32> = (0..rows * f).map(|i| (i as f32 * 0.07).sin()).collect();
            let t = |v: &[f32], shape: &[usize]| {
                Tensor::from_f32(v, shape, DType::F32).unwrap().to_device(&device).unwrap()
            };
            let (a, b, dy) = (t(&av, &[rows, f]), t(&bv, &[rows, f]), t(&dyv, &[rows, f]));
            let abv: Vec<f32> = (0..rows)
                .flat_map(|r| av[r * f..(r + 1) * f].iter().chain(&bv[r * f..(r + 1) * f]).copied().collect::<Vec<_>>())
                .collect();
            let ab = t(&abv, &[rows, 2 * f]);
            let sep = glu::forward(&g, GluInput::Separate { a: &a, b: &b }).unwrap().to_f32_vec().unwrap();
            let pk =
                glu::forward(&g, GluInput::Packed { ab: &ab, gate: GateHalf::First }).unwrap().to_f32_vec().unwrap();
            assert_eq!(sep, pk, "{kind:?} on {device}");
            let grads = glu::backward(&g, GluInput::Separate { a: &a, b: &b }, &dy).unwrap();
            let GluInputGrads::Separate { da, db } = grads.input else { panic!("separate in, separate out") };
            let (mut a2, mut b2) = (t(&av, &[rows, f]), t(&bv, &[rows, f]));
            let mut dalpha = Tensor::zeros(&[1], DType::F32, &device).unwrap();
            let want_dalpha = kind.has_alpha();
            glu::backward_inplace(
                &g,
                GluInputMut::Separate { a: &mut a2, b: &mut b2 },
                &dy,
                want_dalpha.then_some(&mut dalpha),
            )
            .unwrap();
            assert_eq!(a2.to_f32_vec().unwrap(), da.to_f32_vec().unwrap(), "{kind:?} in-place da on {device}");
            assert_eq!(b2.to_f32_vec().unwrap(), db.to_f32_vec().unwrap(), "{kind:?} in-place db on {device}");
            if let Some(d) = grads.dalpha {
                assert_eq!(dalpha.to_f32_vec().unwrap(), d.to_f32_vec().unwrap());
            }
            let mut ab2 = t(&abv, &[rows, 2 * f]);
            glu::backward_inplace(&g, GluInputMut::Packed { ab: &mut ab2, gate: GateHalf::First }, &dy, None).unwrap();
            let packed = ab2.to_f32_vec().unwrap();
            let (da, db) = (da.to_f32_vec().unwrap(), db.to_f32_vec().unwrap());
            for r in 0..rows {
                assert_eq!(packed[r * 2 * f..r * 2 * f + f], da[r * f..(r + 1) * f]);
                assert_eq!(packed[r * 2 * f + f..(r + 1) * 2 * f], db[r * f..(r + 1) * f]);
            }
        }
    }
}

#[test]
fn bad_input_is_rejected() {
    for device in devices() {
        let t = |shape: &[usize], dtype| Tensor::full(shape, dtype, 0.5, &device).unwrap();
        let g = Glu::new(GluKind::Swiglu);
        let (a, b_short) = (t(&[2, 4], DType::BF16), t(&[2, 3], DType::BF16));
        let e = glu::forward(&g, GluInput::Separate { a: &a, b: &b_short }).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "b", .. }), "{e}");
        let b32 = t(&[2, 4], DType::F32);
        let e = glu::forward(&g, GluInput::Separate { a: &a, b: &b32 }).unwrap_err();
        assert!(matches!(e, Error::DType { arg: "b", .. }), "{e}");
        let odd = t(&[2, 5], DType::BF16);
        let e = glu::forward(&g, GluInput::Packed { ab: &odd, gate: GateHalf::First }).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "ab", .. }), "{e}");
        let b = t(&[2, 4], DType::BF16);
        let bad_alpha = Glu { kind: GluKind::XSwiglu, alpha: f32::NAN, order: 1 };
        let e = glu::forward(&bad_alpha, GluInput::Separate { a: &a, b: &b }).unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "alpha", .. }), "{e}");
        let bad_order = Glu { kind: GluKind::Atglu, alpha: 0.0, order: 3 };
        let e = glu::forward(&bad_order, GluInput::Separate { a: &a, b: &b }).unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "order", .. }), "{e}");
        let dy = t(&[2, 3], DType::BF16);
        let e = glu::backward(&g, GluInput::Separate { a: &a, b: &b }, &dy).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "dy", .. }), "{e}");
        let mut y = Tensor::full(&[2, 4], DType::F16, 7.0, &device).unwrap();
        let e = glu::forward_into(&g, GluInput::Separate { a: &a, b: &b }, &mut y).unwrap_err();
        assert!(matches!(e, Error::DType { arg: "y", .. }), "{e}");
        assert!(y.to_f32_vec().unwrap().iter().all(|&v| v == 7.0), "output untouched");
        // dα is only for the x-gates.
        let (mut a2, mut b2) = (t(&[2, 4], DType::BF16), t(&[2, 4], DType::BF16));
        let dy = t(&[2, 4], DType::BF16);
        let mut dalpha = Tensor::zeros(&[1], DType::F32, &device).unwrap();
        let e = glu::backward_inplace(&g, GluInputMut::Separate { a: &mut a2, b: &mut b2 }, &dy, Some(&mut dalpha))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "dalpha", .. }), "{e}");
    }
}

#[test]
fn mixed_devices_are_rejected() {
    for device in kernel_devices() {
        let a = Tensor::full(&[2, 4], DType::F32, 1.0, &device).unwrap();
        let b = Tensor::full(&[2, 4], DType::F32, 1.0, &Device::Cpu).unwrap();
        let e = glu::forward(&Glu::new(GluKind::Geglu), GluInput::Separate { a: &a, b: &b }).unwrap_err();
        assert!(matches!(e, Error::Device { arg: "b", .. }), "{e}");
    }
}
