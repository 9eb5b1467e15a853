//! The padded-batch form of attention (BERT-style inputs `[B, S, H, D]`): without a mask, the
//! varlen kernel runs on the padded tensors as they are (every sequence has the full length, no
//! copy); with a padding mask, the kept tokens are unpadded (padding family), attended as packed
//! sequences and padded back, as MosaicBERT's encoder does. The kept tokens of a sequence are
//! numbered 0, 1, … in order for the causal mask and the linear bias: with right padding (valid
//! tokens first) these are their padded positions.

use super::cpu;
use super::spec::{
    Attention, AttentionOutput, Bias, HEAD_DIMS, HostInputs, bias_args, shape_err, slopes_per_batch, softmax_scale,
};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::gpu::Gpu;
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};

/// Shapes of the padded form, validated.
// slopes_per_batch serves only the launch code, absent without a backend.
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
struct PaddedDims {
    batch: usize,
    seqlen_q: usize,
    seqlen_k: usize,
    heads: usize,
    heads_k: usize,
    head_dim: usize,
    slopes_per_batch: bool,
    scale: f32,
}

/// Validates the padded form's arguments; returns their dimensions.
fn validate_padded(
    attn: &Attention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    padding_mask: Option<&Tensor>,
) -> Result<PaddedDims> {
    let device = q.device();
    // q and k first: their shapes, read below as code that names the dimensions, give the
    // others' (v must have k's shape once k's is known to be right).
    check(
        &device,
        &[Arg::new("q", q).dtype_in(&[DType::F16, DType::BF16], "f16 or bf16"), Arg::new("k", k).dtype_of("q", q)],
    )?;
    let &[batch, seqlen_q, heads, head_dim] = q.shape() else {
        return Err(shape_err("q", "[batch, seqlen_q, heads, head_dim]".into(), q));
    };
    if !HEAD_DIMS.contains(&head_dim) || heads == 0 || batch == 0 {
        let expected = format!("[batch ≥ 1, seqlen_q, heads ≥ 1, head_dim] with head_dim in {HEAD_DIMS:?}");
        return Err(shape_err("q", expected, q));
    }
    let &[kb, seqlen_k, heads_k, kd] = k.shape() else {
        return Err(shape_err("k", "[batch, seqlen_k, heads_k, head_dim]".into(), k));
    };
    if kb != batch || kd != head_dim || heads_k == 0 || heads % heads_k != 0 {
        let expected = format!("[{batch}, seqlen_k, heads_k, {head_dim}] with heads_k dividing {heads}");
        return Err(shape_err("k", expected, k));
    }
    // Token indices (unpad's) and the kernels' row offsets are int32.
    if batch.checked_mul(seqlen_q.max(seqlen_k)).is_none_or(|t| t >= 1 << 31) {
        return Err(shape_err("q", "batch·seqlen < 2^31".into(), q));
    }
    let self_attention = padding_mask.is_some() || matches!(attn.bias, Bias::Geometric { .. });
    if self_attention && seqlen_k != seqlen_q {
        let why = if padding_mask.is_some() { "a padding mask" } else { "geometric ALiBi" };
        return Err(shape_err(
            "k",
            format!("[{batch}, {seqlen_q}, heads_k, {head_dim}]: {why} needs seqlen_k = seqlen_q"),
            k,
        ));
    }
    // Then every other argument, stated in the dimensions read above.
    let mask = padding_mask.map(|m| {
        Arg::new("padding_mask", m).dtype_in(&[DType::U8, DType::I32], "u8 (bool) or i32").shape(vec![batch, seqlen_q])
    });
    let args: Vec<Arg> = [Arg::new("v", v).dtype_of("q", q).shape_of("k", k)]
        .into_iter()
        .chain(mask)
        .chain(bias_args(attn.bias, batch, heads, vec![batch, seqlen_q, 3]))
        .collect();
    check(&device, &args)?;
    if attn.prefix_len.is_some() {
        let reason = "the padded form takes no prefix-LM lengths: run the packed form (attention::forward)".into();
        return Err(Error::InvalidValue { arg: "prefix_len", reason });
    }
    let slopes_per_batch = slopes_per_batch(attn.bias);
    let scale = softmax_scale(attn, head_dim)?;
    Ok(PaddedDims { batch, seqlen_q, seqlen_k, heads, heads_k, head_dim, slopes_per_batch, scale })
}

/// Attention forward over a padded batch: q `[B, S_q, H, D]`, k and v `[B, S_k, H_k, D]` (f16
/// or bf16, one dtype; H % H_k = 0; D in [`HEAD_DIMS`]), the bias of `attn` (slopes `[H]` or
/// `[B, H]`; geometric positions f32 `[B, S, 3]`), and an optional padding mask `[B, S]` (u8 or
/// i32, nonzero keeps the token as a query and as a key; needs S_q = S_k). The kept tokens of
/// each sequence are numbered 0, 1, … in order (MosaicBERT's unpadding): with right padding
/// these are their padded positions. Returns out `[B, S_q, H, D]` and lse f32 `[H, B, S_q]`; a
/// dropped token's row gets out 0 and lse −∞. With a mask on a GPU, unpadding reads the token
/// count back to the host (one synchronisation).
///
/// ```
/// use kiln::{attention::{self, Attention, Bias}, DType, Tensor};
///
/// // Two sequences padded to 4 tokens; the second has 2 valid tokens (right padding).
/// let values: Vec<f32> = (0..2 * 4 * 1 * 32).map(|i| ((i % 11) as f32 - 5.0) / 8.0).collect();
/// let q = Tensor::from_f32(&values, &[2, 4, 1, 32], DType::F16)?;
/// let mask = Tensor::from_vec(vec![1u8, 1, 1, 1, 1, 1, 0, 0], &[2, 4])?;
/// let attn = Attention { causal: false, scale: None, bias: Bias::None, prefix_len: None };
/// let o = attention::forward_padded(&attn, &q, &q, &q, Some(&mask))?;
/// assert_eq!(o.out.shape(), &[2, 4, 1, 32]);
/// assert_eq!(o.lse.shape(), &[1, 2, 4]);
/// assert_eq!(o.lse.to_f32_vec()?[7], f32::NEG_INFINITY);
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn forward_padded(
    attn: &Attention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    padding_mask: Option<&Tensor>,
) -> Result<AttentionOutput> {
    let dims = validate_padded(attn, q, k, v, padding_mask)?;
    match Gpu::of(&q.device())? {
        None => reference(attn, q, k, v, padding_mask, &dims),
        #[cfg(any(feature = "cuda", feature = "emu"))]
        Some(gpu) => on_device(attn, q, k, v, padding_mask, &dims, &gpu),
        // Without a backend `Gpu` has no value.
        #[cfg(not(any(feature = "cuda", feature = "emu")))]
        Some(gpu) => match gpu {},
    }
}

/// The device path: the varlen kernel on the padded tensors, or unpad → varlen → pad.
#[cfg(any(feature = "cuda", feature = "emu"))]
fn on_device(
    attn: &Attention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    padding_mask: Option<&Tensor>,
    dims: &PaddedDims,
    gpu: &Gpu,
) -> Result<AttentionOutput> {
    use super::spec::Dims;
    use super::varlen::{forward, launch_forward, launch_lse_pad};
    use crate::families::padding::{self, Keep};

    let (batch, sq, sk, heads) = (dims.batch, dims.seqlen_q, dims.seqlen_k, dims.heads);
    match padding_mask {
        None => {
            // Every sequence has the full length: the padded tensors are the packed ones.
            let cu = |s: usize| Tensor::from_vec((0..=batch).map(|b| (b * s) as i32).collect(), &[batch + 1]);
            let (cu_q, cu_k) = (cu(sq)?.to_device(&q.device())?, cu(sk)?.to_device(&q.device())?);
            let varlen = Dims {
                total_q: batch * sq,
                total_k: batch * sk,
                heads,
                heads_k: dims.heads_k,
                head_dim: dims.head_dim,
                cu_q: (0..=batch).map(|b| b * sq).collect(),
                cu_k: (0..=batch).map(|b| b * sk).collect(),
                slopes_per_batch: dims.slopes_per_batch,
                scale: dims.scale,
            };
            // The launch writes out in q's shape [B, S_q, H, D] and lse [H, B·S_q].
            let o: AttentionOutput = launch_forward(attn, q, k, v, &cu_q, &cu_k, &varlen, gpu)?;
            Ok(AttentionOutput { out: o.out, lse: o.lse.reshape(&[heads, batch, sq])? })
        }
        Some(mask) => {
            let unpadded = padding::unpad(q, Keep::Mask(mask))?;
            let (kp, vp) = (padding::gather(k, &unpadded.indices)?, padding::gather(v, &unpadded.indices)?);
            let packed_positions = match attn.bias {
                Bias::Geometric { positions, .. } => Some(padding::gather(positions, &unpadded.indices)?),
                _ => None,
            };
            let bias = match (attn.bias, &packed_positions) {
                (Bias::Geometric { slopes, .. }, Some(positions)) => Bias::Geometric { slopes, positions },
                (bias, _) => bias,
            };
            let packed_attn = Attention { bias, ..*attn };
            let cu = &unpadded.cu_seqlens;
            let o = forward(&packed_attn, &unpadded.packed, &kp, &vp, cu, cu)?;
            let out = padding::pad(&o.out, &unpadded.indices, batch, sq)?;
            let lse: Tensor = launch_lse_pad(&o.lse, &unpadded.indices, batch * sq, gpu)?;
            Ok(AttentionOutput { out, lse: lse.reshape(&[heads, batch, sq])? })
        }
    }
}

/// The host path: the f64 reference of the padded form.
fn reference(
    attn: &Attention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    padding_mask: Option<&Tensor>,
    dims: &PaddedDims,
) -> Result<AttentionOutput> {
    let host = HostInputs::of(attn, q, k, v);
    let mask: Option<Vec<bool>> = padding_mask.map(|m| m.host_f64().into_iter().map(|x| x != 0.0).collect());
    let f = cpu::forward_padded(
        &host.problem(attn, (&[], &[]), [dims.heads, dims.heads_k, dims.head_dim], dims.scale),
        (dims.batch, dims.seqlen_q, dims.seqlen_k),
        mask.as_deref(),
    );
    Ok(AttentionOutput {
        out: Tensor::from_f64(&f.out, q.shape(), q.dtype())?,
        lse: Tensor::from_f64(&f.lse, &[dims.heads, dims.batch, dims.seqlen_q], DType::F32)?,
    })
}
