//! The attention kernels' tile variants (kiln.h `kiln_attention_alibi_fwd_variant` and
//! `kiln_attention_alibi_bwd_variant`; the GPU sweep's candidates): each one against the
//! reference with the family's rule, on the emulator in checked mode and on a GPU, at shapes that
//! cross several tiles of every variant (causal and not, GQA, no bias and ALiBi, an empty
//! sequence); the Rust counts agree with the C ABI's; a bad variant is a typed error.

use crate::common::{assert_rows, devices, kernel_devices, rng};
use kiln::attention::backward::{BackwardInputs, BiasGrads};
use kiln::attention::op::{BiasKind, Spec, problem, with_forward};
use kiln::attention::{self, Attention, Bias};
use kiln::check::check_problem;
use kiln::registry::{Direction, Op, select};
use kiln::{DType, Error, Tensor};

fn op() -> Box<dyn Op> {
    select(&["attention/alibi".into()]).remove(0)
}

/// The problem a variant is checked on: a sequence of `long` queries and keys, an empty one, and
/// 77 queries over 150 keys; GQA (2 heads over 1); causal, bias and per-batch slopes varied
/// with the variant index.
fn variant_spec(head_dim: usize, long: usize, variant: usize) -> Spec {
    Spec {
        seqlens_q: vec![long, 0, 77],
        seqlens_k: vec![long, 0, 150],
        heads: 2,
        heads_k: 1,
        head_dim,
        causal: variant % 2 == 0,
        bias: if variant % 3 == 1 { BiasKind::None } else { BiasKind::Alibi },
        slopes_per_batch: variant % 2 == 1,
    }
}

#[test]
fn every_variant_matches_the_reference() {
    let op = op();
    let mut rng = rng();
    for device in kernel_devices() {
        let mut rows = Vec::new();
        for d in [64, 128] {
            assert!(attention::forward_variants(d) >= 8, "D = {d} has its sweep variants");
            for variant in 0..attention::forward_variants(d) {
                // 300 and 150 keys: ≥ 2 tiles of the widest variant (128 keys); the block's 128 or
                // 256 queries see several diagonal tiles under causal.
                let spec = variant_spec(d, 300, variant);
                let (causal, bias) = (spec.causal, spec.bias);
                let mut p = problem(&spec, &mut rng);
                p.params.insert("variant".into(), variant as f64);
                let label = format!("variant {variant} d {d} causal {causal} {bias:?}");
                rows.extend(check_problem(op.as_ref(), Direction::Fwd, DType::BF16, &p, &device, &label).unwrap());
            }
        }
        assert_rows(&rows);
    }
}

/// The backward variants that together run every dq and every dk/dv configuration at least once
/// (a variant is a pair of the two; the pairs share their kernels, so checking each kernel once
/// checks every pair's kernels): the first variant, then each one that adds a configuration.
fn covering(names: &[&str]) -> Vec<usize> {
    let mut seen = std::collections::BTreeSet::new();
    let mut picked = Vec::new();
    for (v, name) in names.iter().enumerate() {
        let (dq, dkdv) = name.split_once(", ").expect("dq ..., dkdv ...");
        let new_dq = seen.insert(dq.to_string());
        let new_dkdv = seen.insert(dkdv.to_string());
        if new_dq || new_dkdv {
            picked.push(v);
        }
    }
    picked
}

#[test]
fn every_backward_variant_matches_the_reference() {
    let op = op();
    let mut rng = rng();
    for device in kernel_devices() {
        let mut rows = Vec::new();
        for d in [64, 128] {
            assert!(attention::backward_variants(d) >= 12, "D = {d} has its sweep variants");
            for variant in covering(attention::backward_variant_names(d)) {
                // 200 keys and queries: 2 blocks of the widest dk/dv tile (8 warps, 128 keys) and
                // of the widest dq tile (128 queries), 4 query steps of 64 and 4 key tiles of 64;
                // 2 query heads per kv head: the dk/dv kernel's head loop runs twice. The
                // variants that cover every kernel configuration (6 at D = 128, 7 at D = 64).
                let spec = variant_spec(d, 200, variant);
                let (causal, bias) = (spec.causal, spec.bias);
                let mut p = with_forward(problem(&spec, &mut rng), &mut rng);
                p.params.insert("variant".into(), variant as f64);
                let label = format!("bwd variant {variant} d {d} causal {causal} {bias:?}");
                rows.extend(check_problem(op.as_ref(), Direction::Bwd, DType::BF16, &p, &device, &label).unwrap());
            }
        }
        assert_rows(&rows);
    }
}

#[test]
fn the_variant_count_is_the_c_abi_s() {
    #[cfg(feature = "emu")]
    {
        use kiln::ffi_emu as ffi;
        type Count = unsafe extern "C" fn(i64) -> i32;
        type Name = unsafe extern "C" fn(i64, i32) -> *const std::ffi::c_char;
        type Names = fn(usize) -> &'static [&'static str];
        let directions: [(Count, Name, Names); 2] = [
            (ffi::kiln_attention_fwd_variants, ffi::kiln_attention_fwd_variant_name, attention::forward_variant_names),
            (ffi::kiln_attention_bwd_variants, ffi::kiln_attention_bwd_variant_name, attention::backward_variant_names),
        ];
        for (count, name_of, names) in directions {
            for d in [32, 64, 96, 128, 256] {
                // SAFETY: a pure query of the emulated library.
                let n = unsafe { count(d) };
                assert_eq!(n as usize, names(d as usize).len(), "head dim {d}");
                for v in 0..n {
                    // SAFETY: a static NUL-terminated string for every variant in range.
                    let name = unsafe { std::ffi::CStr::from_ptr(name_of(d, v)) };
                    assert_eq!(name.to_str().unwrap(), names(d as usize)[v as usize]);
                }
                // SAFETY: as above; out of range (and negative) gives NULL.
                assert!(unsafe { name_of(d, n) }.is_null());
                assert!(unsafe { name_of(d, -1) }.is_null());
            }
        }
    }
    assert_eq!((attention::forward_variants(128), attention::forward_variants(64)), (8, 8));
    assert_eq!((attention::backward_variants(128), attention::backward_variants(64)), (12, 16));
}

#[test]
fn bad_variants_are_typed_errors() {
    for device in devices() {
        let t = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, &device).unwrap();
        let cu = Tensor::from_vec(vec![0i32, 4], &[2]).unwrap().to_device(&device).unwrap();
        let attn = Attention { causal: false, scale: None, bias: Bias::None, prefix_len: None };
        let (q, k, v) = (t(&[4, 2, 64], DType::BF16), t(&[4, 2, 64], DType::BF16), t(&[4, 2, 64], DType::BF16));
        let err = attention::forward_variant(&attn, 8, &q, &k, &v, &cu, &cu).unwrap_err();
        assert!(matches!(err, Error::InvalidValue { arg: "variant", .. }), "{err:?}");
        let q16 = t(&[4, 2, 64], DType::F16);
        let (k16, v16) = (t(&[4, 2, 64], DType::F16), t(&[4, 2, 64], DType::F16));
        let err = attention::forward_variant(&attn, 0, &q16, &k16, &v16, &cu, &cu).unwrap_err();
        assert!(matches!(err, Error::DType { arg: "q", .. }), "{err:?}");
        let slopes = Tensor::from_vec(vec![0.5f32, 0.25], &[2]).unwrap().to_device(&device).unwrap();
        let positions = t(&[4, 3], DType::F32);
        let geo = Attention {
            causal: false,
            scale: None,
            bias: Bias::Geometric { slopes: &slopes, positions: &positions },
            prefix_len: None,
        };
        let err = attention::forward_variant(&geo, 0, &q, &k, &v, &cu, &cu).unwrap_err();
        assert!(matches!(err, Error::InvalidValue { arg: "bias", .. }), "{err:?}");

        // The backward's: the same three refusals, after the backward's own validation.
        let lse = t(&[2, 4], DType::F32);
        let x =
            BackwardInputs { q: &q, k: &k, v: &v, cu_seqlens_q: &cu, cu_seqlens_k: &cu, out: &q, lse: &lse, dout: &q };
        let none = BiasGrads { slopes: false, positions: false };
        let err = attention::backward_variant(&attn, 16, &x, none).unwrap_err();
        assert!(matches!(err, Error::InvalidValue { arg: "variant", .. }), "{err:?}");
        let x16 = BackwardInputs {
            q: &q16,
            k: &k16,
            v: &v16,
            cu_seqlens_q: &cu,
            cu_seqlens_k: &cu,
            out: &q16,
            lse: &lse,
            dout: &q16,
        };
        let err = attention::backward_variant(&attn, 0, &x16, none).unwrap_err();
        assert!(matches!(err, Error::DType { arg: "q", .. }), "{err:?}");
        let err = attention::backward_variant(&geo, 0, &x, none).unwrap_err();
        assert!(matches!(err, Error::InvalidValue { arg: "bias", .. }), "{err:?}");
        // A bad input is the backward's error, before the variant's.
        let short = t(&[2, 3], DType::F32);
        let bad = BackwardInputs { lse: &short, ..x };
        let err = attention::backward_variant(&attn, 9, &bad, none).unwrap_err();
        assert!(matches!(err, Error::Shape { arg: "lse", .. }), "{err:?}");
    }
}

/// The sweep (kiln sweep; the GPU window's step) rehearsed on the emulator at its small shape:
/// every D = 64 variant of both directions passes its gate and is timed in both rounds on both
/// cases, and exactly one variant per case and direction is marked fastest.
#[test]
fn the_sweep_runs_end_to_end() {
    let Some(device) = crate::common::emu() else { return };
    let directions = vec![Direction::Fwd, Direction::Bwd];
    let options = kiln::sweep::SweepOptions { small: true, runs: 1, head_dims: vec![64], directions };
    let mut seen = Vec::new();
    let rows = kiln::sweep::sweep_attention(&device, &options, |rows| {
        seen.push(rows.len());
        Ok(())
    })
    .unwrap();
    // A call per case and direction, each with the rows so far: the forward's 8, the backward's 16.
    let (f, b) = (attention::forward_variants(64), attention::backward_variants(64));
    assert_eq!(seen, [f, f + b, 2 * f + b, 2 * (f + b)], "the rows after each case and direction");
    let per_case = attention::forward_variants(64) + attention::backward_variants(64);
    assert_eq!(rows.len(), 2 * per_case, "{rows:#?}");
    for r in &rows {
        assert!(r.pass, "{r:?}");
        assert!(r.median_us.iter().all(|t| t.is_finite() && *t > 0.0), "{r:?}");
        assert!(r.tflops > 0.0, "{r:?}");
    }
    for case in ["B2xS64xH2xD64 full nobias", "B2xS64xH2xD64 causal alibi"] {
        for dir in [Direction::Fwd, Direction::Bwd] {
            let best = rows.iter().filter(|r| r.case == case && r.direction == dir && r.best).count();
            assert_eq!(best, 1, "one fastest {dir} variant of {case}: {rows:#?}");
        }
    }
}

/// The microbenchmarks (kernels/microbench.cu) at their small size on the emulator: each one's
/// checksum equals the host's prediction (the GPU run's check of the same kernels), and bad
/// arguments are typed errors.
#[test]
fn the_microbenchmarks_do_their_work() {
    use kiln::selftest::{Microbench, microbench};
    let Some(device) = crate::common::emu() else { return };
    let rows = kiln::sweep::microbenchmarks(&device, true, 1).unwrap();
    assert_eq!(rows.iter().map(|r| r.name).collect::<Vec<_>>(), ["mma.sync bf16", "ldmatrix", "L2 read"]);
    for r in &rows {
        assert!(r.pass && r.value > 0.0, "{r:?}");
    }
    // Two runs add up: the sink accumulates (iterations ≥ 2 run the loops more than once).
    let mut sink = Tensor::zeros(&[1], DType::F32, &device).unwrap();
    for _ in 0..2 {
        microbench(Microbench::MmaPeak, 1, 3, None, &mut sink).unwrap();
    }
    assert_eq!(sink.to_f64_vec().unwrap()[0], 2.0 * 128.0 * 512.0 * 3.0);
    let mut wrong = Tensor::zeros(&[1], DType::I32, &device).unwrap();
    let e = microbench(Microbench::MmaPeak, 1, 1, None, &mut wrong).unwrap_err();
    assert!(matches!(e, Error::DType { arg: "sink", .. }), "{e:?}");
    let e = microbench(Microbench::LdmatrixBandwidth, 0, 1, None, &mut wrong).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { arg: "blocks", .. }), "{e:?}");
    let e = microbench(Microbench::L2Bandwidth, 1, 1, None, &mut wrong).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { arg: "buf", .. }), "{e:?}");
    let odd = Tensor::zeros(&[3], DType::I32, &device).unwrap();
    let e = microbench(Microbench::L2Bandwidth, 1, 1, Some(&odd), &mut wrong).unwrap_err();
    assert!(matches!(e, Error::InvalidValue { arg: "buf", .. }), "{e:?}");
}
