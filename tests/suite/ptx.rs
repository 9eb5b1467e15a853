//! The inline-PTX wrappers (kernels/common/ptx.cuh) against their scalar definitions from the
//! PTX ISA, on the emulator (which proves its emulated bodies) and on a GPU when there is one
//! (which proves the emulator's fragment layouts against the hardware).

use crate::common::{emu, kernel_devices, rng};
use kiln::{DType, Tensor, selftest};
use rand::Rng;

#[test]
fn mma_m16n8k16_is_a_times_b_plus_c() {
    let mut rng = rng();
    for device in kernel_devices() {
        for dtype in [DType::F16, DType::BF16] {
            let mut values =
                |n: usize| -> Vec<f64> { (0..n).map(|_| dtype.round(rng.random_range(-2.0..2.0))).collect() };
            let (a, b, c) = (values(256), values(128), values(128));
            let up = |v: &[f64], shape: &[usize], dt: DType| {
                Tensor::from_f64(v, shape, dt).unwrap().to_device(&device).unwrap()
            };
            let d = selftest::mma(&up(&a, &[16, 16], dtype), &up(&b, &[16, 8], dtype), &up(&c, &[16, 8], DType::F32))
                .unwrap()
                .to_f64_vec()
                .unwrap();
            for (m, n) in (0..16).flat_map(|m| (0..8).map(move |n| (m, n))) {
                let terms: Vec<f64> = (0..16).map(|k| a[m * 16 + k] * b[k * 8 + n]).collect();
                let want = terms.iter().sum::<f64>() + c[m * 8 + n];
                // f32 accumulation of 17 terms: a few f32 roundings of their magnitude.
                let tol = 1e-6 * (terms.iter().map(|t| t.abs()).sum::<f64>() + c[m * 8 + n].abs());
                assert!(
                    (d[m * 8 + n] - want).abs() <= tol,
                    "{device} {dtype} d[{m}][{n}] = {} want {want}",
                    d[m * 8 + n]
                );
            }
        }
    }
}

/// The f64 MMA (DMMA): every element of d against its five f64 terms, on the emulator (its
/// emulated body) and a GPU (the fragment layout against the hardware). Distinct values per
/// position, so a transposed or shifted fragment cannot pass.
#[test]
fn mma_m8n8k4_f64_is_a_times_b_plus_c() {
    let mut rng = rng();
    for device in kernel_devices() {
        let mut values = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-2.0..2.0)).collect() };
        let (a, b, c) = (values(32), values(32), values(64));
        let up =
            |v: &[f64], shape: &[usize]| Tensor::from_f64(v, shape, DType::F64).unwrap().to_device(&device).unwrap();
        let d = selftest::mma_f64(&up(&a, &[8, 4]), &up(&b, &[4, 8]), &up(&c, &[8, 8])).unwrap().to_f64_vec().unwrap();
        for (m, n) in (0..8).flat_map(|m| (0..8).map(move |n| (m, n))) {
            let terms: Vec<f64> = (0..4).map(|k| a[m * 4 + k] * b[k * 8 + n]).collect();
            let want = terms.iter().sum::<f64>() + c[m * 8 + n];
            let tol = 1e-15 * (terms.iter().map(|t| t.abs()).sum::<f64>() + c[m * 8 + n].abs());
            assert!((d[m * 8 + n] - want).abs() <= tol, "{device} d[{m}][{n}] = {} want {want}", d[m * 8 + n]);
        }
        let f32s = Tensor::from_f64(&a, &[8, 4], DType::F32).unwrap().to_device(&device).unwrap();
        let r = selftest::mma_f64(&f32s, &up(&b, &[4, 8]), &up(&c, &[8, 8]));
        assert!(matches!(r, Err(kiln::Error::DType { arg: "a", .. })), "{device}: {r:?}");
        let r = selftest::mma_f64(&up(&a, &[8, 4]), &up(&b, &[4, 8]), &up(&c[..32], &[4, 8]));
        assert!(matches!(r, Err(kiln::Error::Shape { arg: "c", .. })), "{device}: {r:?}");
    }
}

/// Lane l's row address in kiln_selftest_ldmatrix: (row, first column) of the [32, 16] tile.
fn row_address(lane: usize) -> (usize, usize) {
    ((7 * lane + 3) % 32, 8 * ((lane / 8) % 2))
}

#[test]
fn ldmatrix_follows_the_isa_layout() {
    let mut rng = rng();
    let tile: Vec<i32> = (0..32 * 16).map(|_| rng.random_range(0..65536)).collect();
    for device in kernel_devices() {
        let src = Tensor::from_vec(tile.clone(), &[32, 16]).unwrap().to_device(&device).unwrap();
        for count in [1, 2, 4] {
            for trans in [false, true] {
                let out = selftest::ldmatrix(count, trans, &src).unwrap().to_f64_vec().unwrap();
                // Element (r, c) of matrix i: column c of the row lane 8i + r names.
                let element = |i: usize, r: usize, c: usize| {
                    let (row, col) = row_address(8 * i + r);
                    tile[row * 16 + col + c] as u32
                };
                for (lane, i) in (0..32).flat_map(|l| (0..count).map(move |i| (l, i))) {
                    let (g, t) = (lane / 4, lane % 4);
                    let (lo, hi) = if trans {
                        (element(i, 2 * t, g), element(i, 2 * t + 1, g))
                    } else {
                        (element(i, g, 2 * t), element(i, g, 2 * t + 1))
                    };
                    let want = (lo | (hi << 16)) as i32;
                    assert_eq!(
                        out[lane * 4 + i] as i32,
                        want,
                        "{device} x{count} trans {trans} lane {lane} register {i}"
                    );
                }
            }
        }
    }
}

#[test]
fn cp_async_copies_and_zero_fills_by_group() {
    let src_values: Vec<i32> = (0..512).map(|i| 1000 + i).collect();
    for device in kernel_devices() {
        let src = Tensor::from_vec(src_values.clone(), &[512]).unwrap().to_device(&device).unwrap();
        let out = selftest::cp_async(&src, false).unwrap().to_f64_vec().unwrap();
        for (i, &got) in out.iter().enumerate() {
            let chunk = i / 4;
            let zero_filled = chunk >= 64 && (chunk - 64) % 3 == 0;
            let want = if zero_filled { 0 } else { src_values[i] };
            assert_eq!(got as i32, want, "{device} element {i}");
        }
    }
}

#[test]
fn emu_reports_a_read_before_cp_async_wait() {
    let Some(device) = emu() else { return };
    let src = Tensor::from_vec((0..512).collect::<Vec<i32>>(), &[512]).unwrap().to_device(&device).unwrap();
    let e = selftest::cp_async(&src, true).unwrap_err().to_string();
    assert!(e.contains("uninitialised") && e.contains("selftest_ptx.cu"), "{e}");
}
