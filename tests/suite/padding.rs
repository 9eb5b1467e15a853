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
        // The same with a capacity (on a device the index pass runs after the scan found the bad
        // length, and the error comes from finish; on the host, at once).
        let r = padding::unpad_with_capacity(&h, Keep::Seqlens(&l), 8).and_then(|d| d.finish());
        assert!(matches!(r, Err(Error::InvalidValue { arg: "seqlens", .. })), "{r:?}");
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

/// 4097 sequences of at most one token: 4097 tiles (one a sequence), more than the scan kernel
/// takes in one step (4096), and more sequences than its 1024 threads, so its loops over tiles
/// and over sequences (the lengths, cu_seqlens) each go round more than once. Against the host
/// path exactly (unpad copies), then pad(unpad) back. (Lengths, not a mask: the scan is the
/// same, and 4097 tiles of mask counting would double the test's few seconds of emulation.)
#[test]
fn unpad_of_more_tiles_than_one_scan_step_matches_host() {
    use rand::Rng;
    let mut rng = rng();
    let (batch, dim) = (4097, 8);
    let lens: Vec<i32> = (0..batch).map(|_| rng.random_range(0..=1)).collect();
    let values: Vec<f32> = (0..batch * dim).map(|_| rng.random_range(-2.0..2.0)).collect();
    let hidden = Tensor::from_f32(&values, &[batch, 1, dim], DType::F32).unwrap();
    let lens_t = Tensor::from_vec(lens.clone(), &[batch]).unwrap();
    let want = padding::unpad(&hidden, Keep::Seqlens(&lens_t)).unwrap();
    let want_back: Vec<f32> = values
        .chunks(dim)
        .zip(&lens)
        .flat_map(|(row, &l)| row.iter().map(move |&v| if l == 1 { v } else { 0.0 }))
        .collect();
    for device in kernel_devices() {
        let on = |t: &Tensor| t.to_device(&device).unwrap();
        let (h, lens_d) = (on(&hidden), on(&lens_t));
        let got = padding::unpad(&h, Keep::Seqlens(&lens_d)).unwrap();
        assert_eq!(got.packed.to_f32_vec().unwrap(), want.packed.to_f32_vec().unwrap(), "packed on {device}");
        assert_eq!(got.indices.to_f32_vec().unwrap(), want.indices.to_f32_vec().unwrap(), "indices on {device}");
        let cu = (got.cu_seqlens.to_f32_vec().unwrap(), want.cu_seqlens.to_f32_vec().unwrap());
        assert_eq!(cu.0, cu.1, "cu_seqlens on {device}");
        assert_eq!(got.max_seqlen, want.max_seqlen, "max_seqlen on {device}");
        let back = padding::pad(&got.packed, &got.indices, batch, 1).unwrap();
        assert_eq!(back.to_f32_vec().unwrap(), want_back, "pad(unpad) on {device}");
    }
}

/// The one-pass unpad (a mask with room for every token: the look-back kernel) against the
/// validating path (capacity = nnz exactly: count, scan, index) and the host, u8 and i32 masks:
/// sequences of three tiles (the last tile takes the sequence's start from the first tile's
/// published prefix for max_seqlen), and 40 one-tile sequences (a look-back window of 32 real
/// predecessors).
#[test]
fn one_pass_unpad_matches_the_validating_path() {
    use rand::Rng;
    let mut rng = rng();
    for (batch, seqlen, i32_mask) in [(3usize, 5000usize, false), (40, 3, true)] {
        let (dim, tokens) = (2, batch * seqlen);
        // About three tokens in four kept; sequence 1 whole, so that it is the longest.
        let mask: Vec<u8> = (0..tokens).map(|t| (t / seqlen == 1 || rng.random_range(0..4) > 0) as u8).collect();
        let mask_t = if i32_mask {
            Tensor::from_vec(mask.iter().map(|&m| m as i32).collect::<Vec<_>>(), &[batch, seqlen]).unwrap()
        } else {
            Tensor::from_vec(mask.clone(), &[batch, seqlen]).unwrap()
        };
        let values: Vec<f32> = (0..tokens * dim).map(|_| rng.random_range(-2.0..2.0)).collect();
        let hidden = Tensor::from_f32(&values, &[batch, seqlen, dim], DType::F32).unwrap();
        let want = padding::unpad(&hidden, Keep::Mask(&mask_t)).unwrap();
        let nnz = want.indices.len();
        assert_eq!(want.max_seqlen, seqlen, "sequence 1 is whole");
        let (want_packed, want_indices) = (want.packed.to_f32_vec().unwrap(), want.indices.to_f32_vec().unwrap());
        let want_cu = want.cu_seqlens.to_f32_vec().unwrap();
        for device in kernel_devices() {
            let on = |t: &Tensor| t.to_device(&device).unwrap();
            let (h, m) = (on(&hidden), on(&mask_t));
            for capacity in [tokens, nnz] {
                let what = format!("{batch}×{seqlen}, capacity {capacity}, i32 mask {i32_mask} on {device}");
                let got = padding::unpad_with_capacity(&h, Keep::Mask(&m), capacity).unwrap();
                assert_eq!(got.finish().unwrap(), (nnz, seqlen), "{what}");
                assert_eq!(got.packed.to_f32_vec().unwrap()[..nnz * dim], want_packed[..], "packed, {what}");
                assert_eq!(got.indices.to_f32_vec().unwrap()[..nnz], want_indices[..], "indices, {what}");
                assert_eq!(got.cu_seqlens.to_f32_vec().unwrap(), want_cu, "cu_seqlens, {what}");
            }
            let exact = padding::unpad(&h, Keep::Mask(&m)).unwrap();
            assert_eq!(exact.packed.to_f32_vec().unwrap(), want_packed, "unpad on {device}");
            assert_eq!(exact.cu_seqlens.to_f32_vec().unwrap(), want_cu, "unpad on {device}");
            assert_eq!(exact.max_seqlen, seqlen, "unpad on {device}");
        }
    }
}

/// pad's index check lowers the status word to the lowest nonzero code whatever order its warps
/// report in: an index out of range (KILN_DATA_INDEX_OUT_OF_RANGE, 3) wins over a duplicate (4)
/// whether the duplicate is found by the first warp or by the second. (Warps report one after
/// the other on the emulator, so one order retries the compare-and-swap with the word the other
/// warp wrote, and the other finds the lower code already there.) The host path names the first
/// bad index instead, so this is the kernels' rule.
#[test]
fn out_of_range_wins_over_duplicate_in_either_warp_order() {
    for device in kernel_devices() {
        let packed = Tensor::from_f32(&[1.0; 64 * 2], &[64, 2], DType::BF16).unwrap().to_device(&device).unwrap();
        for (dup_warp, far_warp) in [(0, 1), (1, 0)] {
            let mut idx: Vec<i32> = (0..64).collect();
            idx[32 * dup_warp + 1] = idx[32 * dup_warp];
            idx[32 * far_warp + 5] = 100; // tokens: 1 × 100
            let indices = Tensor::from_vec(idx, &[64]).unwrap().to_device(&device).unwrap();
            let e = padding::pad(&packed, &indices, 1, 100).unwrap_err();
            let ok = matches!(&e, Error::InvalidValue { arg: "indices", reason } if reason.contains("outside"));
            assert!(ok, "duplicate in warp {dup_warp}, out of range in warp {far_warp}: {e}");
        }
    }
}

/// A bad length among more tiles than the scan has threads (1100 one-token sequences): the
/// scan's error path clears the tile offsets in two steps (a test of its own: the coverage gate
/// reads a loop's two iterations from one test's counts), and the no-sync unpad reports it.
#[test]
fn a_bad_length_among_many_sequences_is_reported() {
    for device in devices() {
        let on = |t: Tensor| t.to_device(&device).unwrap();
        let many = on(Tensor::from_f32(&[1.0; 1100], &[1100, 1, 1], DType::BF16).unwrap());
        let mut lens = vec![1i32; 1100];
        lens[1099] = 2;
        let l = on(Tensor::from_vec(lens, &[1100]).unwrap());
        let r = padding::unpad_with_capacity(&many, Keep::Seqlens(&l), 1100).and_then(|d| d.finish());
        assert!(matches!(r, Err(Error::InvalidValue { arg: "seqlens", .. })), "{r:?}");
    }
}

/// unpad with `packed` NULL (kiln.h): the indices, cu_seqlens and counts of the kept tokens and
/// no row, with a mask and with lengths; the safe unpad's first step.
#[cfg(feature = "emu")]
#[test]
fn emu_unpad_without_packed_writes_the_indices_only() {
    use std::ptr::null_mut;

    use crate::activation::emu_mem::Buf;
    use kiln::ffi_emu::{self as ffi, kiln_dtype};

    let (batch, seqlen, dim) = (2usize, 5usize, 3usize);
    let tokens = batch * seqlen;
    let hidden: Vec<f32> = (0..tokens * dim).map(|i| i as f32).collect();
    let mask: Vec<u8> = vec![1, 0, 1, 1, 0, 0, 0, 0, 1, 1];
    let lens = [3i32, 4];
    let h = Buf::with(&hidden, 0);
    // SAFETY: a pure size computation.
    let ws_bytes = unsafe { ffi::kiln_padding_workspace_bytes(batch as i64, seqlen as i64) };
    for (by_mask, want_indices, want_cu, want_max) in
        [(true, vec![0, 2, 3, 8, 9], vec![0, 3, 5], 3), (false, vec![0, 1, 2, 5, 6, 7, 8], vec![0, 3, 7], 4)]
    {
        let (m, l) = (Buf::with(&mask, 0), Buf::with(&lens, 0));
        let indices = Buf::with(&vec![-1i32; tokens], 0);
        let (cu, counts, status) = (Buf::zeroed(4 * (batch + 1)), Buf::zeroed(8), Buf::zeroed(4));
        // Whatever the workspace held before (the one-pass path zeroes its own counters).
        let workspace = Buf::with(&vec![-1i32; ws_bytes as usize / 4], 0);
        // SAFETY: every pointer is a live emulated buffer of the size the call reads or writes;
        // packed is NULL, which the ABI allows.
        let s = unsafe {
            ffi::kiln_padding_unpad_fwd(
                kiln_dtype::KILN_DTYPE_F32,
                h.at::<f32>(0).cast(),
                kiln_dtype::KILN_DTYPE_U8,
                if by_mask { m.at::<u8>(0).cast_const() } else { std::ptr::null() },
                if by_mask { std::ptr::null() } else { l.at::<i32>(0).cast_const().cast() },
                batch as i64,
                seqlen as i64,
                dim as i64,
                tokens as i64,
                null_mut(),
                indices.at::<i32>(0).cast(),
                cu.at::<i32>(0).cast(),
                counts.at::<i32>(0).cast(),
                status.at::<i32>(0).cast(),
                workspace.at::<i32>(0).cast(),
                ws_bytes,
                null_mut(),
            )
        };
        assert_eq!(s, ffi::kiln_status::KILN_SUCCESS, "by mask {by_mask}");
        let nnz = want_indices.len();
        assert_eq!(status.read::<i32>(0, 1), [0]);
        assert_eq!(counts.read::<i32>(0, 2), [nnz as i32, want_max], "by mask {by_mask}");
        assert_eq!(cu.read::<i32>(0, batch + 1), want_cu, "by mask {by_mask}");
        let got = indices.read::<i32>(0, tokens);
        assert_eq!(got[..nnz], want_indices[..], "by mask {by_mask}");
        assert!(got[nnz..].iter().all(|&i| i == -1), "nothing past nnz: {got:?}");
    }
}

/// pad and gather with the row count on the device (kiln.h's `nnz`, as unpad_with_capacity
/// leaves it in counts[0]): only the first *nnz of the capacity's indices are checked and moved
/// (the rest may hold anything), and a count outside [0, capacity] is CAPACITY_EXCEEDED with
/// nothing written. The safe API always passes the host count, so this calls the emulated C ABI
/// as a framework holding device pointers would.
#[cfg(feature = "emu")]
#[test]
fn emu_device_row_count_bounds_pad_and_gather() {
    use std::ptr::null_mut;

    use crate::activation::emu_mem::Buf;
    use kiln::ffi_emu::{self as ffi, kiln_dtype};

    let (batch, seqlen, dim, capacity) = (2usize, 5usize, 3usize, 6usize);
    let tokens = batch * seqlen;
    let f32_ = kiln_dtype::KILN_DTYPE_F32;
    let hidden: Vec<f32> = (0..tokens * dim).map(|i| i as f32 + 0.5).collect();
    // Four rows, then two slots past nnz that would fail the check if it read them.
    let indices = [7i32, 0, 4, 9, 99, -5];
    const SENTINEL: f32 = -7.0;
    let (h, idx) = (Buf::with(&hidden, 0), Buf::with(&indices, 0));
    for nnz in [4i32, 0, 7, -1] {
        let fits = (0..=capacity as i32).contains(&nnz);
        let rows = if fits { nnz as usize } else { 0 };
        let n = Buf::with(&[nnz], 0);
        // gather: packed rows [0, nnz) = hidden[indices], the others untouched.
        let packed = Buf::with(&vec![SENTINEL; capacity * dim], 0);
        let status = Buf::zeroed(4);
        // SAFETY: every pointer is a live emulated buffer of the size the call reads or writes.
        let s = unsafe {
            ffi::kiln_padding_gather_fwd(
                f32_,
                h.at::<f32>(0).cast(),
                idx.at::<i32>(0).cast(),
                n.at::<i32>(0).cast(),
                capacity as i64,
                batch as i64,
                seqlen as i64,
                dim as i64,
                packed.at::<f32>(0).cast(),
                status.at::<i32>(0).cast(),
                null_mut(),
            )
        };
        assert_eq!(s, ffi::kiln_status::KILN_SUCCESS, "gather, nnz {nnz}");
        assert_eq!(status.read::<i32>(0, 1), [if fits { 0 } else { 1 }], "gather status, nnz {nnz}");
        let mut want = vec![SENTINEL; capacity * dim];
        for (r, &from) in indices[..rows].iter().enumerate() {
            want[r * dim..(r + 1) * dim].copy_from_slice(&hidden[from as usize * dim..(from as usize + 1) * dim]);
        }
        assert_eq!(packed.read::<f32>(0, capacity * dim), want, "gather, nnz {nnz}");

        // pad: hidden rows indices[0..nnz] = packed rows, every other row zero; nothing at all
        // when the count is out of range.
        let rows_in: Vec<f32> = (0..capacity * dim).map(|i| 100.0 + i as f32).collect();
        let packed = Buf::with(&rows_in, 0);
        let out = Buf::with(&vec![SENTINEL; tokens * dim], 0);
        // SAFETY: a pure size computation.
        let ws_bytes = unsafe { ffi::kiln_padding_workspace_bytes(batch as i64, seqlen as i64) };
        let workspace = Buf::zeroed(ws_bytes as usize);
        // SAFETY: as above.
        let s = unsafe {
            ffi::kiln_padding_pad_fwd(
                f32_,
                packed.at::<f32>(0).cast(),
                idx.at::<i32>(0).cast(),
                n.at::<i32>(0).cast(),
                capacity as i64,
                batch as i64,
                seqlen as i64,
                dim as i64,
                out.at::<f32>(0).cast(),
                status.at::<i32>(0).cast(),
                workspace.at::<i32>(0).cast(),
                ws_bytes,
                null_mut(),
            )
        };
        assert_eq!(s, ffi::kiln_status::KILN_SUCCESS, "pad, nnz {nnz}");
        assert_eq!(status.read::<i32>(0, 1), [if fits { 0 } else { 1 }], "pad status, nnz {nnz}");
        let mut want = vec![if fits { 0.0 } else { SENTINEL }; tokens * dim];
        for (r, &to) in indices[..rows].iter().enumerate() {
            want[to as usize * dim..(to as usize + 1) * dim].copy_from_slice(&rows_in[r * dim..(r + 1) * dim]);
        }
        assert_eq!(out.read::<f32>(0, tokens * dim), want, "pad, nnz {nnz}");
    }
}
