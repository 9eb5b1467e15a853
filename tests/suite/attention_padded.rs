//! The padded-batch form of attention (`attention::forward_padded`) on every device: it equals
//! the packed (varlen) form on the kept tokens, bit for bit, gives out 0 and lse −∞ on the
//! dropped ones, and rejects bad input. The packed form itself is checked against the reference
//! in attention.rs; the reference's padded form against its packed form in the identities.

use crate::common::{devices, rng};
use kiln::attention::{self, Attention, Bias};
use kiln::{DType, Device, Error, Tensor};
use rand::Rng;
use rand::rngs::StdRng;

fn on(device: &Device, t: Tensor) -> Tensor {
    t.to_device(device).unwrap()
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Rows `kept` of a `[tokens, row]` array, in order.
fn gather(values: &[f32], kept: &[usize], row: usize) -> Vec<f32> {
    kept.iter().flat_map(|&t| values[t * row..][..row].to_vec()).collect()
}

struct Case {
    batch: usize,
    seqlen: usize,
    heads: usize,
    heads_k: usize,
    head_dim: usize,
    causal: bool,
    /// 0: no bias, 1: linear ALiBi with [B, H] slopes, 2: geometric.
    bias: usize,
    dtype: DType,
}

/// forward_padded with a holey mask (one sequence fully dropped) against forward on the
/// gathered tokens, on `device`.
fn masked_equals_packed(device: &Device, c: &Case, rng: &mut StdRng) {
    let (b, s, h, hk, d) = (c.batch, c.seqlen, c.heads, c.heads_k, c.head_dim);
    let tokens = b * s;
    // Sequence 1 keeps nothing; the others keep random tokens (holes anywhere), at least one.
    let mut mask: Vec<u8> = (0..tokens).map(|t| u8::from(t / s != 1 && rng.random_bool(0.7))).collect();
    mask[0] = 1;
    let kept: Vec<usize> = (0..tokens).filter(|&t| mask[t] != 0).collect();
    let mut cu = vec![0i32];
    for seq in 0..b {
        let n = (seq * s..(seq + 1) * s).filter(|&t| mask[t] != 0).count();
        cu.push(cu[seq] + n as i32);
    }
    let (qv, kv, vv) = (random(rng, tokens * h * d), random(rng, tokens * hk * d), random(rng, tokens * hk * d));
    let slopes: Vec<f32> = (0..b * h).map(|_| rng.random_range(0.0f32..0.3)).collect();
    let positions: Vec<f32> = random(rng, tokens * 3).into_iter().map(|x| 4.0 * x).collect();
    let t = |v: &[f32], shape: &[usize], dtype: DType| on(device, Tensor::from_f32(v, shape, dtype).unwrap());

    let (q, k, v) = (t(&qv, &[b, s, h, d], c.dtype), t(&kv, &[b, s, hk, d], c.dtype), t(&vv, &[b, s, hk, d], c.dtype));
    let slopes_t = t(&slopes, &[b, h], DType::F32);
    let pos = t(&positions, &[b, s, 3], DType::F32);
    let pos_packed = t(&gather(&positions, &kept, 3), &[kept.len(), 3], DType::F32);
    fn bias<'a>(kind: usize, slopes: &'a Tensor, positions: &'a Tensor) -> Bias<'a> {
        match kind {
            0 => Bias::None,
            1 => Bias::Alibi { slopes },
            _ => Bias::Geometric { slopes, positions },
        }
    }
    let attn = Attention { causal: c.causal, scale: None, bias: bias(c.bias, &slopes_t, &pos), prefix_len: None };
    let mask_t = on(device, Tensor::from_vec(mask.clone(), &[b, s]).unwrap());
    let padded = attention::forward_padded(&attn, &q, &k, &v, Some(&mask_t)).unwrap();
    assert_eq!(padded.out.shape(), &[b, s, h, d]);
    assert_eq!(padded.lse.shape(), &[h, b, s]);

    let n = kept.len();
    let qp = t(&gather(&qv, &kept, h * d), &[n, h, d], c.dtype);
    let kp = t(&gather(&kv, &kept, hk * d), &[n, hk, d], c.dtype);
    let vp = t(&gather(&vv, &kept, hk * d), &[n, hk, d], c.dtype);
    let cu_t = on(device, Tensor::from_vec(cu.clone(), &[b + 1]).unwrap());
    let packed_attn = Attention { bias: bias(c.bias, &slopes_t, &pos_packed), ..attn };
    let packed = attention::forward(&packed_attn, &qp, &kp, &vp, &cu_t, &cu_t).unwrap();

    let (out, lse) = (padded.out.to_f64_vec().unwrap(), padded.lse.to_f64_vec().unwrap());
    let (pout, plse) = (packed.out.to_f64_vec().unwrap(), packed.lse.to_f64_vec().unwrap());
    let row = h * d;
    let mut r = 0;
    for tok in 0..tokens {
        if mask[tok] != 0 {
            assert!(out[tok * row..][..row] == pout[r * row..][..row], "{device} token {tok}: out differs from packed");
            for hh in 0..h {
                assert_eq!(
                    lse[hh * tokens + tok].to_bits(),
                    plse[hh * n + r].to_bits(),
                    "{device} token {tok} head {hh}"
                );
            }
            r += 1;
        } else {
            assert!(out[tok * row..][..row].iter().all(|&x| x == 0.0), "{device} dropped token {tok}: out not 0");
            for hh in 0..h {
                assert_eq!(lse[hh * tokens + tok], f64::NEG_INFINITY, "{device} dropped token {tok} head {hh}");
            }
        }
    }
}

#[test]
fn masked_padded_form_equals_packed_form() {
    let mut rng = rng();
    let cases = [
        Case { batch: 3, seqlen: 21, heads: 6, heads_k: 2, head_dim: 64, causal: false, bias: 1, dtype: DType::BF16 },
        Case { batch: 3, seqlen: 17, heads: 2, heads_k: 1, head_dim: 32, causal: true, bias: 0, dtype: DType::F16 },
        Case { batch: 4, seqlen: 9, heads: 2, heads_k: 2, head_dim: 128, causal: false, bias: 2, dtype: DType::BF16 },
        Case { batch: 2, seqlen: 40, heads: 3, heads_k: 3, head_dim: 96, causal: true, bias: 1, dtype: DType::F16 },
    ];
    for device in devices() {
        for c in &cases {
            masked_equals_packed(&device, c, &mut rng);
        }
    }
}

#[test]
fn unmasked_padded_form_equals_uniform_varlen() {
    let mut rng = rng();
    for device in devices() {
        // sq ≠ sk, causal (bottom-right aligned within each sequence), [H] slopes, GQA.
        let (b, sq, sk, h, hk, d) = (3, 13, 29, 4, 2, 64);
        let (qv, kv, vv) =
            (random(&mut rng, b * sq * h * d), random(&mut rng, b * sk * hk * d), random(&mut rng, b * sk * hk * d));
        let t = |v: &[f32], shape: &[usize]| on(&device, Tensor::from_f32(v, shape, DType::BF16).unwrap());
        let slopes = on(&device, Tensor::from_f32(&attention::alibi_slopes(h), &[h], DType::F32).unwrap());
        let attn =
            Attention { causal: true, scale: Some(0.2), bias: Bias::Alibi { slopes: &slopes }, prefix_len: None };
        let padded = attention::forward_padded(
            &attn,
            &t(&qv, &[b, sq, h, d]),
            &t(&kv, &[b, sk, hk, d]),
            &t(&vv, &[b, sk, hk, d]),
            None,
        )
        .unwrap();
        assert_eq!(padded.lse.shape(), &[h, b, sq]);
        let cu = |s: usize| on(&device, Tensor::from_vec((0..=b).map(|i| (i * s) as i32).collect(), &[b + 1]).unwrap());
        let varlen = attention::forward(
            &attn,
            &t(&qv, &[b * sq, h, d]),
            &t(&kv, &[b * sk, hk, d]),
            &t(&vv, &[b * sk, hk, d]),
            &cu(sq),
            &cu(sk),
        )
        .unwrap();
        assert!(padded.out.to_f64_vec().unwrap() == varlen.out.to_f64_vec().unwrap(), "{device}: out");
        assert!(padded.lse.to_f64_vec().unwrap() == varlen.lse.to_f64_vec().unwrap(), "{device}: lse");
    }
}

#[test]
fn padded_bad_input_is_rejected() {
    for device in devices() {
        let half = |shape: &[usize]| {
            let n = shape.iter().product();
            on(&device, Tensor::from_f32(&vec![0.5; n], shape, DType::BF16).unwrap())
        };
        let plain = Attention { causal: false, scale: None, bias: Bias::None, prefix_len: None };
        let (q, k) = (half(&[2, 5, 6, 32]), half(&[2, 5, 2, 32]));
        let mask = on(&device, Tensor::from_vec(vec![1u8; 10], &[2, 5]).unwrap());
        attention::forward_padded(&plain, &q, &k, &k, Some(&mask)).expect("valid input");

        let e = attention::forward_padded(&plain, &half(&[10, 6, 32]), &k, &k, None);
        assert!(matches!(e, Err(Error::Shape { arg: "q", .. })), "packed q: {e:?}");
        let k3 = half(&[3, 5, 2, 32]);
        let e = attention::forward_padded(&plain, &q, &k3, &k3, None);
        assert!(matches!(e, Err(Error::Shape { arg: "k", .. })), "batch mismatch: {e:?}");
        let k7 = half(&[2, 7, 2, 32]);
        attention::forward_padded(&plain, &q, &k7, &k7, None).expect("sq ≠ sk without a mask");
        let e = attention::forward_padded(&plain, &q, &k7, &k7, Some(&mask));
        assert!(matches!(e, Err(Error::Shape { arg: "k", .. })), "mask with sq ≠ sk: {e:?}");
        let e = attention::forward_padded(&plain, &q, &k, &half(&[2, 5, 2, 64]), None);
        assert!(matches!(e, Err(Error::Shape { arg: "v", .. })), "v shape: {e:?}");
        let mask_bad = on(&device, Tensor::from_vec(vec![1u8; 8], &[2, 4]).unwrap());
        let e = attention::forward_padded(&plain, &q, &k, &k, Some(&mask_bad));
        assert!(matches!(e, Err(Error::Shape { arg: "padding_mask", .. })), "mask shape: {e:?}");
        let mask_f = on(&device, Tensor::from_f32(&[1.0; 10], &[2, 5], DType::F32).unwrap());
        let e = attention::forward_padded(&plain, &q, &k, &k, Some(&mask_f));
        assert!(matches!(e, Err(Error::DType { arg: "padding_mask", .. })), "mask dtype: {e:?}");
        let slopes = on(&device, Tensor::from_f32(&[0.5; 6], &[6], DType::F32).unwrap());
        let packed_positions = on(&device, Tensor::from_f32(&[0.0; 30], &[10, 3], DType::F32).unwrap());
        let geo = Attention { bias: Bias::Geometric { slopes: &slopes, positions: &packed_positions }, ..plain };
        let e = attention::forward_padded(&geo, &q, &k, &k, Some(&mask));
        assert!(matches!(e, Err(Error::Shape { arg: "positions", .. })), "positions [total, 3]: {e:?}");
        let slopes5 = on(&device, Tensor::from_f32(&[0.5; 5], &[5], DType::F32).unwrap());
        let alibi = Attention { bias: Bias::Alibi { slopes: &slopes5 }, ..plain };
        let e = attention::forward_padded(&alibi, &q, &k, &k, None);
        assert!(matches!(e, Err(Error::Shape { arg: "slopes", .. })), "slopes [5] for H = 6: {e:?}");
    }
}
