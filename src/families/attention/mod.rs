//! Fused attention forward with ALiBi (FlashAttention-2 tiling, tensor cores): packed
//! variable-length sequences (`cu_seqlens`), MHA/GQA/MQA, causal (bottom-right aligned) or
//! bidirectional, linear ALiBi −slope·|i + sk − sq − j| or geometric ALiBi −slope·‖p_i − p_j‖,
//! f16/bf16 storage, f32 softmax. Returns the output and the TRUE log-sum-exp of each row's
//! scaled, biased scores (−∞, with output 0, for a row that sees no key).
//!
//! ```
//! use kiln::{attention::{self, Attention, Bias}, DType, Tensor};
//!
//! // One sequence of 3 tokens, 2 heads of dimension 32.
//! let values: Vec<f32> = (0..3 * 2 * 32).map(|i| ((i % 7) as f32 - 3.0) / 4.0).collect();
//! let q = Tensor::from_f32(&values, &[3, 2, 32], DType::BF16)?;
//! let cu = Tensor::from_vec(vec![0i32, 3], &[2])?;
//! let slopes = Tensor::from_f32(&attention::alibi_slopes(2), &[2], DType::F32)?;
//! let attn = Attention { causal: true, scale: None, bias: Bias::Alibi { slopes: &slopes }, prefix_len: None };
//! let o = attention::forward(&attn, &q, &q, &q, &cu, &cu)?;
//! assert_eq!(o.out.shape(), &[3, 2, 32]);
//! assert_eq!(o.lse.shape(), &[2, 3]);
//! // Causal: the first query sees only the first key, so its output is that key's value.
//! let out = o.out.to_f32_vec()?;
//! assert!((out[0] - q.to_f32_vec()?[0]).abs() < 1e-2);
//! # Ok::<(), kiln::Error>(())
//! ```

pub mod backward;
pub mod cpu;
pub mod cpu_backward;
pub mod cpu_distance;
mod padded;

pub use padded::forward_padded;

mod spec;
mod varlen;

pub use backward::{backward, backward_variant, backward_variant_names, backward_variants};
pub use spec::{Attention, AttentionGrads, AttentionOutput, BackwardInputs, Bias, BiasGrads, HEAD_DIMS};
pub use varlen::{forward, forward_variant, forward_variant_names, forward_variants};

/// ALiBi slopes for `n_heads` heads, the standard rule (powers of two and the interleaved rule
/// for other counts): `alibi_slopes(12)` = [0.5, 0.25, …, 0.00390625, 0.7071, 0.3536, 0.1768,
/// 0.0884].
pub fn alibi_slopes(n_heads: usize) -> Vec<f32> {
    cpu::alibi_slopes(n_heads).into_iter().map(|s| s as f32).collect()
}
