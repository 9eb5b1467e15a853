//! The padding family: references on their own, the host path, the emulator and the GPU
//! against reference (each skips without its backend), the no-sync path, and bad input.

use crate::common::{assert_rows, devices, emu, emu_shapes, gpu, kernel_devices, rng};
use kiln::check::check_shapes;
use kiln::padding::{self, Keep};
use kiln::registry::select;
use kiln::{DType, Device, Error, Tensor};

#[test]
fn references_pass_their_identities() {
    let mut rng = rng();
    for op in select(&["padding/".into()]) {
        assert_rows(&op.self_checks(&mut rng));
    }
}

#[test]
fn host_path_matches_reference() {
    let mut rng = rng();
    for op in select(&["padding/".into()]) {
        assert_rows(&check_shapes(op.as_ref(), &Device::Cpu, &DType::FLOATS, &op.check_shapes(), &mut rng).unwrap());
    }
}

#[test]
fn gpu_matches_reference() {
    let Some(device) = gpu() else { return };
    let mut rng = rng();
    for op in select(&["padding/".into()]) {
        assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &op.check_shapes(), &mut rng).unwrap());
    }
}

#[test]
fn emu_matches_reference() {
    let Some(device) = emu() else { return };
    let mut rng = rng();
    for op in select(&["padding/".into()]) {
        // BERT's hidden size beside the small awkward ones.
        let shapes: Vec<Vec<usize>> = emu_shapes(op.as_ref()).into_iter().chain([vec![4, 64, 768]]).collect();
        assert_rows(&check_shapes(op.as_ref(), &device, &DType::FLOATS, &shapes, &mut rng).unwrap());
    }
}

fn hidden(batch: usize, seqlen: usize, dim: usize, device: &Device) -> Tensor {
    let v: Vec<f32> = (0..batch * seqlen * dim).map(|i| i as f32 * 0.25 + 1.0).collect();
    Tensor::from_f32(&v, &[batch, seqlen, dim], DType::BF16).unwrap().to_device(device).unwrap()
}

#[test]
fn masks_seqlens_and_the_no_sync_path_agree() {
    for device in devices() {
        let h = hidden(3, 5, 7, &device);
        let lens = Tensor::from_vec(vec![2i32, 0, 5], &[3]).unwrap().to_device(&device).unwrap();
        let prefix: Vec<u8> = [2, 0, 5].iter().flat_map(|&l| (0..5).map(move |s| (s < l) as u8)).collect();
        let mask_u8 = Tensor::from_vec(prefix.clone(), &[3, 5]).unwrap().to_device(&device).unwrap();
        let mask_i32 = Tensor::from_vec(prefix.iter().map(|&m| m as i32 * 7).collect::<Vec<_>>(), &[3, 5])
            .unwrap()
            .to_device(&device)
            .unwrap();
        let a = padding::unpad(&h, Keep::Seqlens(&lens)).unwrap();
        let b = padding::unpad(&h, Keep::Mask(&mask_u8)).unwrap();
        let c = padding::unpad(&h, Keep::Mask(&mask_i32)).unwrap();
        for u in [&b, &c] {
            assert_eq!(a.packed.to_f32_vec().unwrap(), u.packed.to_f32_vec().unwrap());
            assert_eq!(a.indices.to_f32_vec().unwrap(), u.indices.to_f32_vec().unwrap());
            assert_eq!(a.cu_seqlens.to_f32_vec().unwrap(), vec![0.0, 2.0, 2.0, 7.0]);
            assert_eq!(u.max_seqlen, 5);
        }
        let d = padding::unpad_with_capacity(&h, Keep::Seqlens(&lens), 10).unwrap();
        assert_eq!(d.finish().unwrap(), (7, 5));
        let rows = 7 * 7;
        assert_eq!(d.packed.to_f32_vec().unwrap()[..rows], a.packed.to_f32_vec().unwrap()[..]);
        assert_eq!(d.indices.to_f32_vec().unwrap()[..7], a.indices.to_f32_vec().unwrap()[..]);
    }
}

#[test]
fn capacity_too_small_is_reported_not_overflowed() {
    for device in devices() {
        let h = hidden(2, 4, 3, &device);
        let mask = Tensor::from_vec(vec![1u8; 8], &[2, 4]).unwrap().to_device(&device).unwrap();
        let d = padding::unpad_with_capacity(&h, Keep::Mask(&mask), 5).unwrap();
        let e = d.finish().unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "capacity", .. }), "{e}");
        assert!(e.to_string().contains('8'), "the error says how many tokens are kept: {e}");
        assert_eq!(d.counts.to_f32_vec().unwrap(), vec![8.0, 4.0], "counts are still reported");
    }
}

#[test]
fn bad_input_is_rejected() {
    for device in devices() {
        let h = hidden(2, 4, 3, &device);
        let on = |t: Tensor| t.to_device(&device).unwrap();
        // mask shape and dtype
        let m = on(Tensor::from_vec(vec![1u8; 6], &[2, 3]).unwrap());
        assert!(matches!(padding::unpad(&h, Keep::Mask(&m)), Err(Error::Shape { arg: "mask", .. })));
        let m = on(Tensor::from_f32(&[1.0; 8], &[2, 4], DType::F32).unwrap());
        assert!(matches!(padding::unpad(&h, Keep::Mask(&m)), Err(Error::DType { arg: "mask", .. })));
        // seqlens out of range
        let l = on(Tensor::from_vec(vec![1i32, 5], &[2]).unwrap());
        assert!(matches!(padding::unpad(&h, Keep::Seqlens(&l)), Err(Error::InvalidValue { arg: "seqlens", .. })));
        let l = on(Tensor::from_vec(vec![-1i32, 2], &[2]).unwrap());
        assert!(matches!(padding::unpad(&h, Keep::Seqlens(&l)), Err(Error::InvalidValue { arg: "seqlens", .. })));
        // pad: rows vs indices, out of range, duplicates
        let packed = on(Tensor::from_f32(&[1.0; 9], &[3, 3], DType::BF16).unwrap());
        let idx2 = on(Tensor::from_vec(vec![0i32, 1], &[2]).unwrap());
        assert!(matches!(padding::pad(&packed, &idx2, 2, 4), Err(Error::Shape { arg: "packed", .. })));
        let far = on(Tensor::from_vec(vec![0i32, 1, 8], &[3]).unwrap());
        assert!(matches!(padding::pad(&packed, &far, 2, 4), Err(Error::InvalidValue { arg: "indices", .. })));
        let neg = on(Tensor::from_vec(vec![0i32, -1, 2], &[3]).unwrap());
        assert!(matches!(padding::pad(&packed, &neg, 2, 4), Err(Error::InvalidValue { arg: "indices", .. })));
        let dup = on(Tensor::from_vec(vec![0i32, 3, 3], &[3]).unwrap());
        assert!(matches!(padding::pad(&packed, &dup, 2, 4), Err(Error::InvalidValue { arg: "indices", .. })));
        assert!(matches!(padding::gather(&h, &far), Err(Error::InvalidValue { arg: "indices", .. })));
        let fidx = on(Tensor::from_f32(&[0.0, 1.0], &[2], DType::F32).unwrap());
        assert!(matches!(padding::gather(&h, &fidx), Err(Error::DType { arg: "indices", .. })));
        // hidden must be [batch, seqlen, …] and floating
        let flat = on(Tensor::from_f32(&[1.0; 4], &[4], DType::F32).unwrap());
        assert!(matches!(padding::gather(&flat, &idx2), Err(Error::Shape { arg: "hidden", .. })));
    }
}

#[test]
fn mixed_devices_are_rejected() {
    for device in kernel_devices() {
        let h = hidden(2, 4, 3, &device);
        let mask = Tensor::from_vec(vec![1u8; 8], &[2, 4]).unwrap();
        assert!(matches!(padding::unpad(&h, Keep::Mask(&mask)), Err(Error::Device { arg: "mask", .. })));
    }
}
