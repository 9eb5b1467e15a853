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

/// No rows: nothing is read, but dα is an empty sum, 0 on every device (the launcher zeroes it,
/// so a caller's buffer never keeps a stale value), and the outputs are empty.
#[test]
fn empty_rows_give_an_empty_output_and_a_zero_dalpha() {
    for device in devices() {
        let empty = Tensor::zeros(&[0, 8], DType::BF16, &device).unwrap();
        let glu = Glu { kind: GluKind::XSwiglu, alpha: 0.25, order: 1 };
        let input = || GluInput::Separate { a: &empty, b: &empty };
        assert_eq!(glu::forward(&glu, input()).unwrap().shape(), &[0, 8], "{device}");
        let g = glu::backward(&glu, input(), &empty).unwrap();
        assert_eq!(g.dalpha.unwrap().to_f32_vec().unwrap(), [0.0], "{device}");
        let GluInputGrads::Separate { da, db } = g.input else { panic!("separate inputs, separate gradients") };
        assert_eq!((da.shape(), db.shape()), (&[0, 8][..], &[0, 8][..]), "{device}");
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

// ---- NaN and ±inf: the kernels' convention, followed by the references --------------------

#[test]
fn nan_and_inf_agree_between_reference_and_kernels() {
    let mut rng = rng();
    let devices: Vec<Device> = std::iter::once(Device::Cpu).chain(emu()).collect();
    for op in family() {
        for dir in Direction::BOTH {
            for shape in [vec![4, 8], vec![3, 7]] {
                // Special values in the gate half a, then in the value half b (against finite a).
                for (x, other) in [("a", "b"), ("b", "a")] {
                    let mut problem = op.random_problem(dir, &shape, &mut rng);
                    crate::activation::with_special_values(&mut problem, x, (dir == Direction::Bwd).then_some("dy"));
                    let o = &mut problem.inputs.get_mut(other).unwrap().data;
                    o[..6].copy_from_slice(&[0.5, -1.5, 2.0, -0.25, 0.0, 3.0]);
                    for (label, p) in [
                        ("NaN/inf separate", problem.clone()),
                        ("NaN/inf packed", packed_problem(&problem, GateHalf::Second).unwrap()),
                    ] {
                        for device in &devices {
                            for dtype in DType::FLOATS {
                                assert_rows(&check_problem(op.as_ref(), dir, dtype, &p, device, label).unwrap());
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn forward_of_nan_is_nan_in_every_reference() {
    for kind in GluKind::ALL {
        for order in [1, 2] {
            let y = glu::cpu::forward(kind, 0.25, order, &[f64::NAN, 1.0, -1.0], &[1.0, f64::NAN, f64::NAN]);
            assert!(y.iter().all(|v| v.is_nan()), "{kind:?} order {order}: {y:?}");
        }
    }
}

// ---- scalar parameters ----------------------------------------------------------------------

#[test]
fn alpha_whose_expansion_overflows_is_rejected() {
    for device in devices() {
        let t = |dtype| Tensor::full(&[2, 4], dtype, 0.5, &device).unwrap();
        let (a, b, dy) = (t(DType::BF16), t(DType::BF16), t(DType::BF16));
        for kind in [GluKind::XAtglu, GluKind::XGeglu, GluKind::XSwiglu] {
            for alpha in [3.0e38f32, -2.0e38, f32::MAX, f32::INFINITY] {
                let g = Glu { kind, alpha, order: 1 };
                let e = glu::forward(&g, GluInput::Separate { a: &a, b: &b }).unwrap_err();
                assert!(matches!(e, Error::InvalidValue { arg: "alpha", .. }), "{kind:?} {alpha}: {e}");
                let e = glu::backward(&g, GluInput::Separate { a: &a, b: &b }, &dy).unwrap_err();
                assert!(matches!(e, Error::InvalidValue { arg: "alpha", .. }), "{kind:?} {alpha}: {e}");
            }
            // A subnormal α is harmless (nothing divides by it) and a trained α may reach one.
            let g = Glu { kind, alpha: 1e-40, order: 1 };
            glu::backward(&g, GluInput::Separate { a: &a, b: &b }, &dy).unwrap();
        }
    }
}

#[cfg(feature = "emu")]
#[test]
fn the_c_abi_rejects_alpha_whose_expansion_overflows() {
    use crate::activation::emu_mem::Buf;
    use kiln::ffi::{kiln_dtype, kiln_status};
    use kiln::ffi_emu as ffi;
    use std::ptr::null_mut;
    let (rows, f) = (4i64, 8i64);
    let n = (rows * f) as usize;
    let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 1.0).collect();
    let (a, b, dy) = (Buf::with(&data, 0), Buf::with(&data, 0), Buf::with(&data, 0));
    let (y, da, db) = (Buf::zeroed(n * 4), Buf::zeroed(n * 4), Buf::zeroed(n * 4));
    let (dalpha, ws) = (Buf::zeroed(4), Buf::zeroed(1 << 16));
    let dt = kiln_dtype::KILN_DTYPE_F32;
    // SAFETY: every pointer is a live emulated allocation of the sizes passed.
    unsafe {
        for alpha in [3.0e38f32, -2.0e38, f32::MAX] {
            let s = ffi::kiln_glu_xswiglu_fwd(
                dt,
                a.at::<f32>(0),
                b.at::<f32>(0),
                f,
                y.at::<f32>(0),
                rows,
                f,
                alpha,
                1,
                null_mut(),
            );
            assert_eq!(s, kiln_status::KILN_ERROR_INVALID_VALUE, "xswiglu fwd {alpha}");
            let s = ffi::kiln_glu_xgeglu_bwd(
                dt,
                a.at::<f32>(0),
                b.at::<f32>(0),
                f,
                dy.at::<f32>(0),
                da.at::<f32>(0),
                db.at::<f32>(0),
                f,
                rows,
                f,
                alpha,
                1,
                dalpha.at::<f32>(0).cast(),
                ws.at::<u8>(0),
                1 << 16,
                null_mut(),
            );
            assert_eq!(s, kiln_status::KILN_ERROR_INVALID_VALUE, "xgeglu bwd {alpha}");
        }
    }
}

// ---- determinism across addresses -------------------------------------------------------------

#[cfg(feature = "emu")]
#[test]
fn dalpha_is_bitwise_equal_at_every_alignment() {
    use crate::activation::emu_mem::Buf;
    use crate::activation::random_storage;
    use kiln::ffi_emu as ffi;
    use std::ptr::null_mut;
    let mut rng = rng();
    // F a multiple of every pack width; F = 36 (whole f32 packs; bf16 takes the 4-byte path and
    // its 8-element groups cross rows); F = 10 (bf16 groups of 4-byte packs across rows);
    // many rows of one element per row.
    for dtype in [DType::F32, DType::BF16] {
        let size = dtype.size_in_bytes();
        for (rows, f) in [(300usize, 64usize), (150, 36), (333, 10), (4099, 8), (1031, 1)] {
            let n = rows * f;
            let (a, b, dy) = (
                random_storage(dtype, n, 2.0, 0.0, &mut rng),
                random_storage(dtype, n, 1.0, 0.0, &mut rng),
                random_storage(dtype, n, 1.0, 0.0, &mut rng),
            );
            // SAFETY: a pure size computation.
            let ws_bytes = unsafe { ffi::kiln_glu_workspace_bytes(rows as i64, f as i64) };
            let run = |offset: usize, order: i32| -> u32 {
                let o = offset * size;
                let (ab, bb, dyb) = (Buf::with(&a, o), Buf::with(&b, o), Buf::with(&dy, o));
                let (dab, dbb) = (Buf::zeroed(n * size + o), Buf::zeroed(n * size + o));
                let (dalpha, ws) = (Buf::zeroed(4), Buf::zeroed(ws_bytes as usize));
                let (fi, ri) = (f as i64, rows as i64);
                // SAFETY: every pointer is a live emulated allocation of the sizes passed.
                let s = unsafe {
                    ffi::kiln_glu_xswiglu_bwd(
                        dtype.to_ffi(),
                        ab.at::<u8>(o),
                        bb.at::<u8>(o),
                        fi,
                        dyb.at::<u8>(o),
                        dab.at::<u8>(o),
                        dbb.at::<u8>(o),
                        fi,
                        ri,
                        fi,
                        0.3,
                        order,
                        dalpha.at::<f32>(0).cast(),
                        ws.at::<u8>(0),
                        ws_bytes,
                        null_mut(),
                    )
                };
                assert_eq!(s, kiln::ffi::kiln_status::KILN_SUCCESS);
                dalpha.read::<f32>(0, 1)[0].to_bits()
            };
            for order in [1, 2] {
                let aligned = run(0, order);
                assert_ne!(f32::from_bits(aligned), 0.0);
                // 1 and 5: the scalar path; 2 (4 bytes): the 4-byte path of 16-bit types.
                for offset in [1, 2, 5] {
                    assert_eq!(run(offset, order), aligned, "{dtype:?} [{rows}, {f}] order {order}: offset {offset}");
                }
            }
        }
    }
}
