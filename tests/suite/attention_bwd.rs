//! The attention backward: the reference's finite-difference rows, the host path, the kernels
//! on the emulator (checked mode) and on a GPU against the reference with flash-attn's rule
//! (error ≤ 3× the naive low-precision error plus a floor) over every head dim, GQA/MQA, causal
//! and not, no bias, linear and geometric ALiBi with [H] and [B, H] slopes and zero-length
//! sequences; determinism (two runs, the same bits); bad input.

use std::collections::BTreeMap;

use crate::common::{assert_rows, devices, emu, gpu, kernel_devices, rng};
use kiln::attention::op::{BiasKind, Spec, problem, with_forward};
use kiln::attention::{self, Attention, BackwardInputs, Bias, BiasGrads};
use kiln::check::{CheckRow, check_op, check_problem};
use kiln::registry::{Direction, Op, Tensors, select};
use kiln::{DType, Device, Error, Tensor};
use rand::rngs::StdRng;

fn op() -> Box<dyn Op> {
    select(&["attention/alibi".into()]).remove(0)
}

#[test]
fn reference_gradients_match_finite_differences() {
    let rows: Vec<CheckRow> =
        op().self_checks(&mut rng()).into_iter().filter(|r| r.what.starts_with("finite differences")).collect();
    // Six cases: dq, dk, dv each, dslopes in five, dpositions in two.
    assert_eq!(rows.len(), 6 * 3 + 5 + 2, "{rows:#?}");
    assert_rows(&rows);
}

#[test]
fn host_path_matches_reference() {
    let mut rng = rng();
    let mut rows = Vec::new();
    for shape in [[2, 9, 4, 2, 32], [3, 5, 2, 1, 64]] {
        rows.extend(check_op(op().as_ref(), Direction::Bwd, DType::BF16, &shape, &Device::Cpu, &mut rng).unwrap());
    }
    assert_rows(&rows);
}

/// One sweep case: (sq, sk) of the first sequence, head dim, H_k (H = 6), causal, bias.
type Case = ((usize, usize), usize, usize, bool, BiasKind);

/// Every head dim meets every (sq, sk) pair while H_k cycles through {6, 2, 1}, the bias through
/// geometric, linear and none, and causal alternates so that every pair meets both (sq > sk
/// under causal: rows that see no key).
fn cases(pairs: &[(usize, usize)]) -> Vec<Case> {
    let mut v = Vec::new();
    let mut n = 0usize;
    for &d in &attention::HEAD_DIMS {
        for &pair in pairs {
            let bias = [BiasKind::Geometric, BiasKind::Alibi, BiasKind::None][n % 3];
            v.push((pair, d, [6, 2, 1][(n / 3) % 3], (n + n / pairs.len()) % 2 == 0, bias));
            n += 1;
        }
    }
    v
}

fn spec(((sq, sk), d, hk, causal, bias): Case, slopes_per_batch: bool) -> Spec {
    // Three sequences: the pair, an empty one, and a short one.
    Spec {
        seqlens_q: vec![sq, 0, sq.div_ceil(3)],
        seqlens_k: vec![sk, 0, (sk / 2).max(1)],
        heads: 6,
        heads_k: hk,
        head_dim: d,
        causal,
        bias,
        slopes_per_batch,
    }
}

fn sweep(device: &Device, pairs: &[(usize, usize)], dtypes: &[DType], rng: &mut StdRng) -> Vec<CheckRow> {
    let op = op();
    let mut rows = Vec::new();
    for (i, case) in cases(pairs).into_iter().enumerate() {
        let p = with_forward(problem(&spec(case, i % 2 == 1), rng), rng);
        let dtype = dtypes[i % dtypes.len()];
        let ((sq, sk), d, hk, causal, bias) = case;
        let label = format!("sq {sq} sk {sk} d {d} hk {hk} causal {causal} {bias:?}");
        rows.extend(check_problem(op.as_ref(), Direction::Bwd, dtype, &p, device, &label).unwrap());
    }
    rows
}

#[test]
fn emu_matches_reference() {
    let Some(device) = emu() else { return };
    // Small shapes (checked emulation is slow): not multiples of the tiles, sq < sk and sq > sk
    // (rows with nothing visible under causal), a full 64 × 64 tile, three 64-key tiles (both of
    // the dQ pass's K/V buffers, one twice).
    let pairs = [(1, 33), (17, 40), (64, 64), (70, 45), (20, 130)];
    assert_rows(&sweep(&device, &pairs, &[DType::BF16, DType::F16], &mut rng()));
}

/// ALiBi's slope gradient summed over more query rows than its reduction block has threads
/// (257 > 256: a thread adds two rows), with one slope a head ([H]) and one a sequence and head
/// ([B, H]).
#[test]
fn slope_gradient_over_more_rows_than_threads_matches_reference() {
    let mut rng = rng();
    let op = op();
    let mut rows = Vec::new();
    let devices = kernel_devices();
    if devices.is_empty() {
        return; // no kernels to run: emu() and gpu() said why
    }
    for (device, slopes_per_batch) in devices.into_iter().flat_map(|d| [(d.clone(), false), (d, true)]) {
        let s = Spec {
            seqlens_q: vec![257],
            seqlens_k: vec![9],
            heads: 2,
            heads_k: 1,
            head_dim: 32,
            causal: false,
            bias: BiasKind::Alibi,
            slopes_per_batch,
        };
        let p = with_forward(problem(&s, &mut rng), &mut rng);
        let label = format!("sq 257 sk 9 slopes_per_batch {slopes_per_batch} on {device}");
        rows.extend(check_problem(op.as_ref(), Direction::Bwd, DType::BF16, &p, &device, &label).unwrap());
    }
    assert!(rows.iter().any(|r| r.what.starts_with("dslopes")), "no dslopes row: {rows:#?}");
    assert_rows(&rows);
}

#[test]
fn gpu_matches_reference() {
    let Some(device) = gpu() else { return };
    // The forward's sweep (flash-attn's pairs); the dtypes alternate case by case, so the f64
    // reference backward (the cost of this test) runs once per case.
    let pairs = [(1, 147), (113, 203), (128, 217), (108, 256), (256, 512), (512, 256), (1023, 1024), (1024, 1023)];
    assert_rows(&sweep(&device, &pairs, &[DType::F16, DType::BF16], &mut rng()));
}

/// Runs the backward of `p` through the registry on `device` and returns every output's bits.
fn run_bits(device: &Device, p: &kiln::registry::Problem, dtype: DType) -> BTreeMap<String, Vec<u64>> {
    let op = op();
    let p = p.rounded(op.as_ref(), Direction::Bwd, dtype);
    let inputs = p.tensors(op.as_ref(), Direction::Bwd, dtype, device).unwrap();
    let mut outputs = Tensors::new();
    for (spec, shape) in op.outputs(Direction::Bwd, &p).unwrap() {
        let t = Tensor::full(&shape, spec.storage.dtype(dtype), f64::NAN, device).unwrap();
        outputs.insert(spec.name.to_string(), t);
    }
    op.run(Direction::Bwd, &inputs, &p.params, &mut outputs).unwrap();
    outputs.iter().map(|(k, t)| (k.clone(), t.to_f64_vec().unwrap().iter().map(|x| x.to_bits()).collect())).collect()
}

#[test]
fn kernels_are_deterministic() {
    let mut rng = rng();
    for device in kernel_devices() {
        // GQA (each kv head sums three query heads), geometric [B, H] slopes (every reduction),
        // two query and two key tiles.
        let case = ((100, 100), 64, 2, false, BiasKind::Geometric);
        let p = with_forward(problem(&spec(case, true), &mut rng), &mut rng);
        let first = run_bits(&device, &p, DType::BF16);
        assert_eq!(first.len(), 5, "dq dk dv dslopes dpositions: {:?}", first.keys());
        assert_eq!(first, run_bits(&device, &p, DType::BF16), "{device}: two runs differ");
    }
}

#[test]
fn without_out_and_lse_the_forward_runs_first() {
    let mut rng = rng();
    for device in devices() {
        let case = ((23, 41), 32, 2, true, BiasKind::Alibi);
        let mut p = with_forward(problem(&spec(case, true), &mut rng), &mut rng);
        p.inputs.remove("out");
        p.inputs.remove("lse");
        assert_rows(&check_problem(op().as_ref(), Direction::Bwd, DType::BF16, &p, &device, "no out, lse").unwrap());
    }
}

#[test]
fn empty_queries_give_zero_gradients() {
    for device in devices() {
        // Every query sequence is empty: dk, dv and dslopes are empty sums, 0.
        let k = on(&device, Tensor::from_f32(&[0.5; 5 * 2 * 32], &[5, 2, 32], DType::BF16).unwrap());
        let q = on(&device, Tensor::from_f32(&[], &[0, 4, 32], DType::BF16).unwrap());
        let lse = on(&device, Tensor::from_f32(&[], &[4, 0], DType::F32).unwrap());
        let (cu_q, cu_k) = (
            on(&device, Tensor::from_vec(vec![0i32, 0, 0], &[3]).unwrap()),
            on(&device, Tensor::from_vec(vec![0i32, 2, 5], &[3]).unwrap()),
        );
        let slopes = on(&device, Tensor::from_f32(&[0.25; 8], &[2, 4], DType::F32).unwrap());
        let attn = Attention { causal: true, scale: None, bias: Bias::Alibi { slopes: &slopes }, prefix_len: None };
        let x = BackwardInputs {
            q: &q,
            k: &k,
            v: &k,
            cu_seqlens_q: &cu_q,
            cu_seqlens_k: &cu_k,
            out: &q,
            lse: &lse,
            dout: &q,
        };
        let g = attention::backward(&attn, &x, BiasGrads { slopes: true, positions: false }).unwrap();
        assert_eq!(g.dq.shape(), &[0, 4, 32]);
        for (name, t) in [("dk", &g.dk), ("dv", &g.dv), ("dslopes", g.dslopes.as_ref().unwrap())] {
            assert!(t.to_f32_vec().unwrap().iter().all(|&v| v == 0.0), "{device} {name}");
        }
    }
}

fn on(device: &Device, t: Tensor) -> Tensor {
    t.to_device(device).unwrap()
}

#[test]
fn bad_input_is_rejected() {
    for device in devices() {
        let half = |shape: &[usize], dtype| {
            let n = shape.iter().product();
            on(&device, Tensor::from_f32(&vec![0.5; n], shape, dtype).unwrap())
        };
        let cu = |v: Vec<i32>| on(&device, Tensor::from_vec(v.clone(), &[v.len()]).unwrap());
        let plain = Attention { causal: false, scale: None, bias: Bias::None, prefix_len: None };
        let (q, k) = (half(&[5, 6, 64], DType::BF16), half(&[5, 2, 64], DType::BF16));
        let (cu_q, cu_k) = (cu(vec![0, 2, 5]), cu(vec![0, 3, 5]));
        let lse = half(&[6, 5], DType::F32);
        let ok = BackwardInputs {
            q: &q,
            k: &k,
            v: &k,
            cu_seqlens_q: &cu_q,
            cu_seqlens_k: &cu_k,
            out: &q,
            lse: &lse,
            dout: &q,
        };
        let none = BiasGrads::default();
        attention::backward(&plain, &ok, none).expect("valid input");

        let dout_bad = half(&[5, 6, 32], DType::BF16);
        let e = attention::backward(&plain, &BackwardInputs { dout: &dout_bad, ..ok }, none);
        assert!(matches!(e, Err(Error::Shape { arg: "dout", .. })), "dout shape: {e:?}");
        let dout16 = half(&[5, 6, 64], DType::F16);
        let e = attention::backward(&plain, &BackwardInputs { dout: &dout16, ..ok }, none);
        assert!(matches!(e, Err(Error::DType { arg: "dout", .. })), "mixed dtypes: {e:?}");
        let e = attention::backward(&plain, &BackwardInputs { out: &dout16, ..ok }, none);
        assert!(matches!(e, Err(Error::DType { arg: "out", .. })), "mixed dtypes: {e:?}");
        let e = attention::backward(&plain, &BackwardInputs { out: &dout_bad, ..ok }, none);
        assert!(matches!(e, Err(Error::Shape { arg: "out", .. })), "out shape: {e:?}");
        let lse_t = half(&[5, 6], DType::F32);
        let e = attention::backward(&plain, &BackwardInputs { lse: &lse_t, ..ok }, none);
        assert!(matches!(e, Err(Error::Shape { arg: "lse", .. })), "lse [total_q, H]: {e:?}");
        let lse16 = half(&[6, 5], DType::BF16);
        let e = attention::backward(&plain, &BackwardInputs { lse: &lse16, ..ok }, none);
        assert!(matches!(e, Err(Error::DType { arg: "lse", .. })), "lse bf16: {e:?}");
        let k16 = half(&[5, 2, 64], DType::F16);
        let e = attention::backward(&plain, &BackwardInputs { v: &k16, ..ok }, none);
        assert!(matches!(e, Err(Error::DType { arg: "v", .. })), "mixed dtypes: {e:?}");
        let e = attention::backward(&plain, &ok, BiasGrads { slopes: true, positions: false });
        assert!(matches!(e, Err(Error::InvalidValue { arg: "dslopes", .. })), "dslopes without slopes: {e:?}");
        let slopes = half(&[6], DType::F32);
        let alibi = Attention { bias: Bias::Alibi { slopes: &slopes }, ..plain };
        let e = attention::backward(&alibi, &ok, BiasGrads { slopes: true, positions: true });
        assert!(matches!(e, Err(Error::InvalidValue { arg: "dpositions", .. })), "linear dpositions: {e:?}");
        if device.runs_kernels() {
            let host = Tensor::from_f32(&[0.5; 1920], &[5, 6, 64], DType::BF16).unwrap();
            let e = attention::backward(&plain, &BackwardInputs { dout: &host, ..ok }, none);
            assert!(matches!(e, Err(Error::Device { arg: "dout", .. })), "dout on the host: {e:?}");
        }

        // Through the registry: a missing LSE is named.
        let op = op();
        let mut rng = rng();
        let p = op.random_problem(Direction::Bwd, &[1, 3, 2, 1, 32], &mut rng);
        let mut inputs = p.tensors(op.as_ref(), Direction::Bwd, DType::BF16, &device).unwrap();
        inputs.remove("lse");
        let mut outputs = Tensors::new();
        let e = op.run(Direction::Bwd, &inputs, &p.params, &mut outputs);
        assert!(matches!(e, Err(Error::InvalidValue { arg: "lse", .. })), "missing lse: {e:?}");
    }
}

/// The C ABI's validation of kiln_attention_alibi_bwd (the emulated library validates as the
/// CUDA one does; fake, aligned pointers are never dereferenced because validation fails first).
#[cfg(feature = "emu")]
#[test]
fn c_abi_validates_before_launching() {
    use kiln::ffi::{kiln_dtype, kiln_status};
    use kiln::ffi_emu as ffi;
    use std::ffi::c_void;
    use std::ptr::null_mut;

    const FAKE: usize = 0x1000_0000;
    #[derive(Clone, Copy)]
    struct Call {
        dtype: kiln_dtype,
        dout: usize,
        lse: usize,
        slopes: usize,
        positions: usize,
        dslopes: usize,
        dpositions: usize,
        heads_k: i64,
        head_dim: i64,
        total_k: i64,
        workspace: usize,
        workspace_bytes: i64,
    }
    let needed = |total_k: i64| {
        // SAFETY: a pure size computation.
        unsafe { ffi::kiln_attention_alibi_bwd_workspace_bytes(16, total_k, 6, 2) }
    };
    let run = |c: Call| {
        let (p, f) = (|a: usize| a as *const c_void, |a: usize| a as *const f32);
        // SAFETY: every case fails validation before any pointer is used.
        unsafe {
            ffi::kiln_attention_alibi_bwd(
                c.dtype,
                p(FAKE),
                p(FAKE),
                p(FAKE),
                p(FAKE),
                f(c.lse),
                p(c.dout),
                FAKE as *const i32,
                FAKE as *const i32,
                f(c.slopes),
                0,
                f(c.positions),
                2,
                16,
                c.total_k,
                6,
                c.heads_k,
                c.head_dim,
                8,
                8,
                1,
                std::ptr::null(),
                0.125,
                FAKE as *mut c_void,
                FAKE as *mut c_void,
                FAKE as *mut c_void,
                c.dslopes as *mut f32,
                c.dpositions as *mut f32,
                c.workspace as *mut c_void,
                c.workspace_bytes,
                null_mut(),
            )
        }
    };
    let v = Call {
        dtype: kiln_dtype::KILN_DTYPE_BF16,
        dout: FAKE,
        lse: FAKE,
        slopes: 0,
        positions: 0,
        dslopes: 0,
        dpositions: 0,
        heads_k: 2,
        head_dim: 64,
        total_k: 16,
        workspace: FAKE,
        workspace_bytes: needed(16),
    };
    assert!(needed(16) > 0 && needed(-1) == -1);
    let cases = [
        (Call { dtype: kiln_dtype::KILN_DTYPE_F32, ..v }, kiln_status::KILN_ERROR_INVALID_DTYPE),
        (Call { heads_k: 4, ..v }, kiln_status::KILN_ERROR_INVALID_SIZE),
        (Call { head_dim: 80, ..v }, kiln_status::KILN_ERROR_INVALID_SIZE),
        (Call { dslopes: FAKE, ..v }, kiln_status::KILN_ERROR_INVALID_VALUE),
        (Call { slopes: FAKE, dpositions: FAKE, ..v }, kiln_status::KILN_ERROR_INVALID_VALUE),
        (Call { slopes: FAKE, positions: FAKE, total_k: 8, workspace_bytes: needed(8), ..v }, {
            kiln_status::KILN_ERROR_INVALID_SIZE
        }),
        (Call { dout: 0, ..v }, kiln_status::KILN_ERROR_NULL_POINTER),
        (Call { lse: 0, ..v }, kiln_status::KILN_ERROR_NULL_POINTER),
        (Call { workspace: 0, ..v }, kiln_status::KILN_ERROR_NULL_POINTER),
        (Call { workspace_bytes: needed(16) - 1, ..v }, kiln_status::KILN_ERROR_WORKSPACE_TOO_SMALL),
        (Call { dout: FAKE + 8, ..v }, kiln_status::KILN_ERROR_MISALIGNED),
        (Call { lse: FAKE + 2, ..v }, kiln_status::KILN_ERROR_MISALIGNED),
    ];
    for (i, (call, want)) in cases.into_iter().enumerate() {
        assert_eq!(run(call), want, "case {i}");
    }
}
