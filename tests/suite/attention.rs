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
        let plain = Attention { causal: false, scale: None, bias: Bias::None, prefix_len: None };
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
        let attn = Attention { causal: true, scale: None, bias: Bias::None, prefix_len: None };
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

/// The GPU bench cases are FlashAttention's dense shapes (16k tokens, H·D = 2048) and one fixed
/// variable-length mix, each named by its label; checked on the specs and labels (building the
/// 16k-token problems would take minutes in a debug build).
#[test]
fn gpu_bench_cases_are_the_named_dense_shapes() {
    use kiln::attention::op::{GPU_DENSE, VARLEN_MIX, bench_specs, label};
    let specs = bench_specs(true);
    let op = op();
    let cases = op.bench_cases(true);
    assert_eq!(cases.len(), specs.len());
    let labels: Vec<&str> = cases.iter().map(|c| c.label.as_str()).collect();
    let unique: std::collections::BTreeSet<&str> = labels.iter().copied().collect();
    assert_eq!(unique.len(), labels.len(), "labels name one case each: {labels:#?}");
    for (case, spec) in cases.iter().zip(&specs) {
        assert_eq!(case.label, label(spec));
        assert_eq!(spec.seqlens_q.iter().sum::<usize>(), 16384, "{}", case.label);
        assert_eq!((spec.seqlens_k.clone(), spec.heads_k), (spec.seqlens_q.clone(), spec.heads), "{}", case.label);
        assert_eq!(spec.heads * spec.head_dim, 2048, "{}", case.label);
        assert!(!spec.slopes_per_batch, "{}: slopes [H] by the standard rule", case.label);
        let longest = spec.seqlens_q.iter().copied().max().unwrap();
        assert_eq!(case.shape, [spec.seqlens_q.len(), longest, spec.heads, spec.heads, spec.head_dim]);
    }
    // Every dense shape at D = 128, full and causal, with every bias; the varlen mix likewise.
    let bias_words = [(BiasKind::None, "nobias"), (BiasKind::Alibi, "alibi"), (BiasKind::Geometric, "geometric")];
    for causal in [false, true] {
        for (bias, word) in bias_words {
            let mode = if causal { "causal" } else { "full" };
            for (b, s) in GPU_DENSE {
                let name = format!("B{b}xS{s}xH16xD128 {mode} {word}");
                let i = labels.iter().position(|l| *l == name).unwrap_or_else(|| panic!("{name}: {labels:#?}"));
                assert_eq!(specs[i].seqlens_q, vec![s; b]);
                assert_eq!((specs[i].causal, specs[i].bias, specs[i].head_dim), (causal, bias, 128));
            }
            let name = format!("var16xT16384xH16xD128 {mode} {word}");
            let i = labels.iter().position(|l| *l == name).unwrap_or_else(|| panic!("{name}: {labels:#?}"));
            assert_eq!(
                (specs[i].seqlens_q.as_slice(), specs[i].causal, specs[i].bias),
                (&VARLEN_MIX[..], causal, bias)
            );
        }
    }
    assert!(labels.contains(&"B8xS2048xH16xD128 causal alibi"), "{labels:#?}");
    // D = 64 (H = 32): a subset, linear ALiBi at every dense shape.
    for (b, s) in GPU_DENSE {
        assert!(labels.contains(&format!("B{b}xS{s}xH32xD64 causal alibi").as_str()), "{labels:#?}");
    }
    assert_eq!(VARLEN_MIX.iter().sum::<usize>(), 16384);
    // The first case is the one bench shape of before.
    assert_eq!(cases[0].shape, op.bench_shape_gpu());
}

/// FLOPs as FlashAttention counts them: 4·B·S²·H·D forward, halved under causal; the backward
/// 2.5× the forward. The closed form against the count of every dense GPU case, and against the
/// op's own count on the built CPU cases.
#[test]
fn bench_flops_are_flash_attentions_count() {
    use kiln::attention::op::{bench_specs, flash_flops};
    let closed = |b: u64, s: u64, h: u64, d: u64, causal: bool| 4 * b * s * s * h * d / if causal { 2 } else { 1 };
    for spec in bench_specs(true).into_iter().filter(|s| s.seqlens_q.windows(2).all(|w| w[0] == w[1])) {
        let (b, s) = (spec.seqlens_q.len() as u64, spec.seqlens_q[0] as u64);
        let fwd = closed(b, s, spec.heads as u64, spec.head_dim as u64, spec.causal);
        let count = |dir| flash_flops(dir, &spec.seqlens_q, &spec.seqlens_k, spec.heads, spec.head_dim, spec.causal);
        assert_eq!(count(Direction::Fwd), fwd);
        assert_eq!(count(Direction::Bwd) * 2, fwd * 5);
    }
    // B16·S1024, H16, D128: 137.4 GFLOP full, 68.7 causal.
    assert_eq!(flash_flops(Direction::Fwd, &[1024; 16], &[1024; 16], 16, 128, false), 137_438_953_472);
    assert_eq!(flash_flops(Direction::Fwd, &[1024; 16], &[1024; 16], 16, 128, true), 68_719_476_736);
    let op = op();
    for case in op.bench_cases(false) {
        let causal = case.label.contains(" causal ");
        for dir in [Direction::Fwd, Direction::Bwd] {
            let fwd = closed(2, 128, 2, 64, causal);
            let want = if dir == Direction::Bwd { fwd * 5 / 2 } else { fwd };
            assert_eq!(op.flops(dir, &case.problem(dir)), want, "{} {dir}", case.label);
        }
    }
}

/// The CPU and emulator cases: B = 2·S = 128, H = 2, D = 64, full and causal, every bias; each
/// problem is the same on every construction (the fixed seed) and has the options its label says.
#[test]
fn cpu_bench_cases_are_fixed_problems() {
    let op = op();
    let cases = op.bench_cases(false);
    let labels: Vec<&str> = cases.iter().map(|c| c.label.as_str()).collect();
    let want: Vec<String> = ["full", "causal"]
        .iter()
        .flat_map(|m| ["nobias", "alibi", "geometric"].map(|b| format!("B2xS128xH2xD64 {m} {b}")))
        .collect();
    assert_eq!(labels, want);
    let again = op.bench_cases(false);
    for (case, twin) in cases.iter().zip(&again) {
        for dir in [Direction::Fwd, Direction::Bwd] {
            let p = case.problem(dir);
            assert_eq!(p, case.problem(dir), "{} {dir}: the same problem from one case", case.label);
            assert_eq!(p, twin.problem(dir), "{} {dir}: the same problem from another construction", case.label);
            assert_eq!(p.input("q").unwrap().shape, [256, 2, 64]);
            assert_eq!(p.input("cu_seqlens_q").unwrap().data, [0.0, 128.0, 256.0]);
            assert_eq!(p.params.get("causal").copied(), Some(if case.label.contains(" causal ") { 1.0 } else { 0.0 }));
            let slopes = p.get("slopes").map(|a| a.data.clone());
            assert_eq!(slopes, (!case.label.ends_with("nobias")).then(|| vec![2f64.powi(-4), 2f64.powi(-8)]));
            assert_eq!(p.get("positions").is_some(), case.label.ends_with("geometric"), "{}", case.label);
            assert_eq!(p.get("dout").is_some(), dir == Direction::Bwd);
        }
    }
    // The same shape draws the same q, k, v whatever the options: cases compare on one tensor set.
    let (a, b) = (cases[0].problem(Direction::Fwd), cases[4].problem(Direction::Fwd));
    assert_eq!((a.input("q").unwrap(), a.input("v").unwrap()), (b.input("q").unwrap(), b.input("v").unwrap()));
}

/// Prefix-LM (causal, with `prefix_len`): the kernels, forward and backward, against the reference
/// on the emulator and a GPU, with prefixes of none, part and all of a sequence (and past it),
/// sq below and above sk, both biases, GQA; the lengths are clamped by the kernels as by kiln.h.
#[test]
fn prefix_lm_matches_reference() {
    use kiln::attention::op::{with_forward, with_prefix};
    let op = op();
    let mut rng = rng();
    for device in crate::common::kernel_devices() {
        let mut rows = Vec::new();
        for (n, (d, (sq, sk), bias)) in
            [(64, (130, 140), BiasKind::Alibi), (128, (77, 45), BiasKind::None), (128, (150, 150), BiasKind::Geometric)]
                .into_iter()
                .enumerate()
        {
            let spec = Spec {
                seqlens_q: vec![sq, 0, sq / 3 + 1],
                seqlens_k: vec![sk, 0, sk / 2 + 1],
                heads: 2,
                heads_k: if n == 1 { 1 } else { 2 },
                head_dim: d,
                causal: true,
                bias,
                slopes_per_batch: false,
            };
            // Part of the first sequence (across tiles), none of the empty one, past the third.
            let p = with_prefix(problem(&spec, &mut rng), &[sk / 2 + 3, 0, sk]);
            let label = format!("prefix-LM d {d} sq {sq} sk {sk} {bias:?}");
            rows.extend(check_problem(op.as_ref(), Direction::Fwd, DType::BF16, &p, &device, &label).unwrap());
            let pb = with_forward(p, &mut rng);
            rows.extend(check_problem(op.as_ref(), Direction::Bwd, DType::BF16, &pb, &device, &label).unwrap());
        }
        assert!(rows.iter().any(|r| r.what.contains("dk")), "the backward ran");
        assert_rows(&rows);
    }
}

#[test]
fn bad_prefix_lengths_are_rejected() {
    for device in devices() {
        let t = |shape: &[usize]| Tensor::zeros(shape, DType::BF16, &device).unwrap();
        let (q, k) = (t(&[4, 2, 32]), t(&[4, 2, 32]));
        let cu = on(&device, Tensor::from_vec(vec![0i32, 4], &[2]).unwrap());
        let negative = on(&device, Tensor::from_vec(vec![-1i32], &[1]).unwrap());
        let attn = Attention { causal: true, scale: None, bias: Bias::None, prefix_len: Some(&negative) };
        let e = attention::forward(&attn, &q, &k, &k, &cu, &cu).unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "prefix_len", .. }), "{e:?}");
        let two = on(&device, Tensor::from_vec(vec![1i32, 2], &[2]).unwrap());
        let e = attention::forward(&Attention { prefix_len: Some(&two), ..attn }, &q, &k, &k, &cu, &cu).unwrap_err();
        assert!(matches!(e, Error::Shape { arg: "prefix_len", .. }), "{e:?}");
        let f32s = on(&device, Tensor::from_vec(vec![1.0f32], &[1]).unwrap());
        let e = attention::forward(&Attention { prefix_len: Some(&f32s), ..attn }, &q, &k, &k, &cu, &cu).unwrap_err();
        assert!(matches!(e, Error::DType { arg: "prefix_len", .. }), "{e:?}");
        // The padded form refuses prefix-LM.
        let (qp, kp) = (t(&[1, 4, 2, 32]), t(&[1, 4, 2, 32]));
        let ok = on(&device, Tensor::from_vec(vec![2i32], &[1]).unwrap());
        let e =
            attention::forward_padded(&Attention { prefix_len: Some(&ok), ..attn }, &qp, &kp, &kp, None).unwrap_err();
        assert!(matches!(e, Error::InvalidValue { arg: "prefix_len", .. }), "{e:?}");
    }
}
