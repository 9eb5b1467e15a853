//! The attention family: the reference's identities, the host path, the kernels on the emulator
//! (checked mode) and on a GPU against the reference with flash-attn's rule (error ≤ 2× the
//! naive low-precision error plus a floor) over head dims, GQA/MQA, causal and not, both biases,
//! [H] and [B, H] slopes and zero-length sequences, and bad input.

use crate::common::{assert_rows, devices, emu, gpu, rng};
use kiln::attention::op::{BiasKind, Spec, problem};
use kiln::attention::{self, Attention, Bias};
use kiln::check::{CheckRow, check_problem, check_shapes};
use kiln::registry::{Direction, Op, select};
use kiln::{DType, Device, Error, Tensor};
use rand::rngs::StdRng;

fn op() -> Box<dyn Op> {
    select(&["attention/alibi".into()]).remove(0)
}

#[test]
fn reference_identities_hold() {
    let rows = op().self_checks(&mut rng());
    assert!(rows.len() >= 6, "{rows:#?}");
    assert_rows(&rows);
}

#[test]
fn host_path_matches_reference() {
    let shapes = [vec![2, 9, 4, 2, 32], vec![3, 5, 2, 1, 64]];
    assert_rows(&check_shapes(op().as_ref(), &Device::Cpu, &[DType::BF16], &shapes, &mut rng()).unwrap());
}

/// One sweep case: (sq, sk) of the first sequence (the others derived from it, one of them
/// empty), head dim, H_k (H = 6), causal, bias.
type Case = ((usize, usize), usize, usize, bool, BiasKind);

/// The cases cycle through H_k ∈ {6, 2, 1}, causal and not, the three biases and both slope
/// shapes while every head dim meets every (sq, sk) pair.
fn cases(pairs: &[(usize, usize)]) -> Vec<Case> {
    let mut v = Vec::new();
    let mut n = 0usize;
    for &d in &attention::HEAD_DIMS {
        for &pair in pairs {
            let bias = [BiasKind::Alibi, BiasKind::None, BiasKind::Geometric][n % 3];
            v.push((pair, d, [6, 2, 1][(n / 3) % 3], n % 2 == 1, bias));
            n += 1;
        }
    }
    v
}

fn sweep(device: &Device, pairs: &[(usize, usize)], dtypes: &[DType], rng: &mut StdRng) -> Vec<CheckRow> {
    let op = op();
    let mut rows = Vec::new();
    for (i, ((sq, sk), d, hk, causal, bias)) in cases(pairs).into_iter().enumerate() {
        // Three sequences: the pair, an empty query (and keys), and a short one.
        let spec = Spec {
            seqlens_q: vec![sq, 0, sq.div_ceil(3)],
            seqlens_k: vec![sk, 0, (sk / 2).max(1)],
            heads: 6,
            heads_k: hk,
            head_dim: d,
            causal,
            bias,
            slopes_per_batch: i % 2 == 0,
        };
        let p = problem(&spec, rng);
        let dtype = dtypes[i % dtypes.len()];
        let label = format!("sq {sq} sk {sk} d {d} hk {hk} causal {causal} {bias:?}");
        rows.extend(check_problem(op.as_ref(), Direction::Fwd, dtype, &p, device, &label).unwrap());
    }
    rows
}

#[test]
fn emu_matches_reference() {
    let Some(device) = emu() else { return };
    // Small shapes (checked emulation is slow): not multiples of the tiles, sq < sk and sq > sk
    // (rows with nothing visible under causal), one pair past two K/V tiles.
    let pairs = [(1, 47), (45, 70), (77, 29), (130, 140)];
    assert_rows(&sweep(&device, &pairs, &[DType::BF16, DType::F16], &mut rng()));
}

#[test]
fn gpu_matches_reference() {
    let Some(device) = gpu() else { return };
    // flash-attn's (sq, sk) sweep.
    let pairs = [(1, 147), (113, 203), (128, 217), (108, 256), (256, 512), (512, 256), (1023, 1024), (1024, 1023)];
    let mut rng = rng();
    for dtype in [DType::F16, DType::BF16] {
        assert_rows(&sweep(&device, &pairs, &[dtype], &mut rng));
    }
    assert_rows(&check_shapes(op().as_ref(), &device, op().dtypes(), &op().check_shapes(), &mut rng).unwrap());
}

fn on(device: &Device, t: Tensor) -> Tensor {
    t.to_device(device).unwrap()
}

#[test]
fn bad_input_is_rejected() {
    for device in devices() {
        let half = |shape: &[usize]| {
            let n = shape.iter().product();
            on(&device, Tensor::from_f32(&vec![0.5; n], shape, DType::BF16).unwrap())
        };
        let cu = |v: Vec<i32>| on(&device, Tensor::from_vec(v.clone(), &[v.len()]).unwrap());
        let plain = Attention { causal: false, scale: None, bias: Bias::None };
        let (q, k) = (half(&[5, 6, 64]), half(&[5, 2, 64]));
        let (cu_ok, cu_k_ok) = (cu(vec![0, 2, 5]), cu(vec![0, 3, 5]));
        attention::forward(&plain, &q, &k, &k, &cu_ok, &cu_k_ok).expect("valid input");

        let k4 = half(&[5, 4, 64]);
        let e = attention::forward(&plain, &q, &k4, &k4, &cu_ok, &cu_k_ok);
        assert!(matches!(e, Err(Error::Shape { arg: "k", .. })), "H % H_k: {e:?}");
        let (q80, k80) = (half(&[5, 6, 80]), half(&[5, 2, 80]));
        let e = attention::forward(&plain, &q80, &k80, &k80, &cu_ok, &cu_k_ok);
        assert!(matches!(e, Err(Error::Shape { arg: "q", .. })), "unsupported D: {e:?}");
        for bad in [vec![0, 3, 2, 5], vec![0, 2, 4], vec![1, 2, 5]] {
            let e = attention::forward(&plain, &q, &k, &k, &cu(bad.clone()), &cu_k_ok);
            assert!(matches!(e, Err(Error::InvalidValue { arg: "cu_seqlens_q", .. })), "{bad:?}: {e:?}");
        }
        let e = attention::forward(&plain, &q, &k, &k, &cu_ok, &cu(vec![0, 5]));
        assert!(matches!(e, Err(Error::Shape { arg: "cu_seqlens_k", .. })), "batch mismatch: {e:?}");
        let slopes = on(&device, Tensor::from_f32(&[0.5; 5], &[5], DType::F32).unwrap());
        let alibi = Attention { bias: Bias::Alibi { slopes: &slopes }, ..plain };
        let e = attention::forward(&alibi, &q, &k, &k, &cu_ok, &cu_k_ok);
        assert!(matches!(e, Err(Error::Shape { arg: "slopes", .. })), "slopes [5] for H = 6: {e:?}");
        let slopes_bh = on(&device, Tensor::from_f32(&[0.5; 18], &[3, 6], DType::F32).unwrap());
        let alibi = Attention { bias: Bias::Alibi { slopes: &slopes_bh }, ..plain };
        let e = attention::forward(&alibi, &q, &k, &k, &cu_ok, &cu_k_ok);
        assert!(matches!(e, Err(Error::Shape { arg: "slopes", .. })), "slopes [3, 6] for B = 2: {e:?}");
        let k16 = on(&device, Tensor::from_f32(&[0.5; 640], &[5, 2, 64], DType::F16).unwrap());
        let e = attention::forward(&plain, &q, &k16, &k, &cu_ok, &cu_k_ok);
        assert!(matches!(e, Err(Error::DType { arg: "k", .. })), "mixed dtypes: {e:?}");
        let q32 = on(&device, Tensor::from_f32(&[0.5; 1920], &[5, 6, 64], DType::F32).unwrap());
        let e = attention::forward(&plain, &q32, &k, &k, &cu_ok, &cu_k_ok);
        assert!(matches!(e, Err(Error::DType { arg: "q", .. })), "f32 storage: {e:?}");
        let slopes6 = on(&device, Tensor::from_f32(&[0.5; 6], &[6], DType::F32).unwrap());
        let positions = on(&device, Tensor::from_f32(&[0.0; 15], &[5, 3], DType::F32).unwrap());
        let geo = Attention { bias: Bias::Geometric { slopes: &slopes6, positions: &positions }, ..plain };
        let e = attention::forward(&geo, &q, &k, &k, &cu_ok, &cu_k_ok);
        assert!(matches!(e, Err(Error::InvalidValue { arg: "positions", .. })), "cross-attention: {e:?}");
        let e = attention::forward(&Attention { scale: Some(f32::NAN), ..plain }, &q, &k, &k, &cu_ok, &cu_k_ok);
        assert!(matches!(e, Err(Error::InvalidValue { arg: "scale", .. })), "{e:?}");
    }
}

#[test]
fn fully_masked_rows_give_zero_and_minus_infinity() {
    for device in devices() {
        // Causal with sq = 4 > sk = 2: rows 0 and 1 see no key; a second sequence has no keys.
        let q = on(&device, Tensor::from_f32(&[0.25; 6 * 2 * 32], &[6, 2, 32], DType::F16).unwrap());
        let k = on(&device, Tensor::from_f32(&[0.5; 2 * 32], &[2, 1, 32], DType::F16).unwrap());
        let cu_q = on(&device, Tensor::from_vec(vec![0i32, 4, 6], &[3]).unwrap());
        let cu_k = on(&device, Tensor::from_vec(vec![0i32, 2, 2], &[3]).unwrap());
        let attn = Attention { causal: true, scale: None, bias: Bias::None };
        let o = attention::forward(&attn, &q, &k, &k, &cu_q, &cu_k).unwrap();
        let (out, lse) = (o.out.to_f32_vec().unwrap(), o.lse.to_f32_vec().unwrap());
        for h in 0..2 {
            for row in [0, 1, 4, 5] {
                assert_eq!(lse[h * 6 + row], f32::NEG_INFINITY, "{device} head {h} row {row}");
                assert!(out[(row * 2 + h) * 32..][..32].iter().all(|&x| x == 0.0), "{device} row {row}");
            }
            assert!(lse[h * 6 + 2].is_finite() && (out[(2 * 2 + h) * 32] - 0.5).abs() < 1e-3, "{device}");
        }
    }
}
