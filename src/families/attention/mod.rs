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
//! let attn = Attention { causal: true, scale: None, bias: Bias::Alibi { slopes: &slopes } };
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
mod padded;

pub use padded::forward_padded;

// cuda.rs is the one copy of the launch code, compiled against each kernel library built in.
crate::core::launch::launch_code!("cuda.rs");

use crate::core::dtype::DType;
use crate::core::error::{Error, Result, ensure};
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;
use crate::core::validate::same_device;

pub use backward::{AttentionGrads, BackwardInputs, BiasGrads, backward};

/// The head dimensions the kernels take.
pub const HEAD_DIMS: [usize; 4] = [32, 64, 96, 128];

/// ALiBi slopes for `n_heads` heads, the standard rule (powers of two and the interleaved rule
/// for other counts): `alibi_slopes(12)` = [0.5, 0.25, …, 0.00390625, 0.7071, 0.3536, 0.1768,
/// 0.0884].
pub fn alibi_slopes(n_heads: usize) -> Vec<f32> {
    cpu::alibi_slopes(n_heads).into_iter().map(|s| s as f32).collect()
}

/// The bias added to the scaled scores.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a> {
    /// Plain attention.
    None,
    /// Linear ALiBi −slope·|i + sk − sq − j|; slopes f32 `[H]` or `[B, H]`.
    Alibi {
        /// f32 `[H]` or `[B, H]`.
        slopes: &'a Tensor,
    },
    /// Geometric ALiBi −slope·‖p_i − p_j‖ (self-attention: q and k are the same tokens, so
    /// `cu_seqlens_q` must equal `cu_seqlens_k`).
    Geometric {
        /// f32 `[H]` or `[B, H]`.
        slopes: &'a Tensor,
        /// f32 `[total, 3]`: each token's position.
        positions: &'a Tensor,
    },
}

/// An attention configuration.
#[derive(Clone, Copy, Debug)]
pub struct Attention<'a> {
    /// Causal mask aligned to the bottom-right corner: query i sees keys j ≤ i + sk − sq.
    pub causal: bool,
    /// Softmax scale; `None` is 1/√D.
    pub scale: Option<f32>,
    /// The bias.
    pub bias: Bias<'a>,
}

/// What [`forward`] returns.
#[derive(Debug)]
pub struct AttentionOutput {
    /// `[total_q, H, D]` in q's dtype.
    pub out: Tensor,
    /// f32 `[H, total_q]`: the natural log-sum-exp of each row's scaled, biased scores.
    pub lse: Tensor,
}

/// Shapes and sequence layout, validated.
#[derive(Clone, Debug)]
// Some fields serve only the launch code, absent without a backend.
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
struct Dims {
    total_q: usize,
    total_k: usize,
    heads: usize,
    heads_k: usize,
    head_dim: usize,
    cu_q: Vec<usize>,
    cu_k: Vec<usize>,
    slopes_per_batch: bool,
    scale: f32,
}

#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
impl Dims {
    fn batch(&self) -> usize {
        self.cu_q.len() - 1
    }

    fn max_seqlen_q(&self) -> usize {
        self.cu_q.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
    }
}

fn shape_err(arg: &'static str, expected: String, t: &Tensor) -> Error {
    Error::Shape { arg, expected, got: t.shape().to_vec() }
}

/// cu_seqlens of `total` tokens: i32 `[batch + 1]`, starting at 0, non-decreasing, ending at total.
fn cu_seqlens(arg: &'static str, t: &Tensor, total: usize) -> Result<Vec<usize>> {
    if t.dtype() != DType::I32 {
        return Err(Error::DType { arg, expected: "i32".into(), got: t.dtype() });
    }
    if t.shape().len() != 1 || t.shape()[0] < 2 {
        return Err(shape_err(arg, "[batch + 1] with batch ≥ 1".into(), t));
    }
    let v = t.to_f64_vec()?;
    ensure(v[0] == 0.0, arg, || format!("must start at 0, got {}", v[0]))?;
    ensure(v.windows(2).all(|w| w[1] >= w[0]), arg, || "must be non-decreasing".into())?;
    let last = v[v.len() - 1];
    ensure(last == total as f64, arg, || format!("must end at the token count {total}, got {last}"))?;
    Ok(v.into_iter().map(|x| x as usize).collect())
}

/// An f32 tensor of one of the `shapes`.
fn f32_of_shape(arg: &'static str, t: &Tensor, shapes: &[Vec<usize>]) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::DType { arg, expected: "f32".into(), got: t.dtype() });
    }
    if !shapes.iter().any(|s| s == t.shape()) {
        let expected: Vec<String> = shapes.iter().map(|s| format!("{s:?}")).collect();
        return Err(shape_err(arg, expected.join(" or "), t));
    }
    Ok(())
}

/// Checks the bias tensors: slopes f32 `[heads]` or `[batch, heads]`, positions f32 of
/// `positions_shape`. Returns whether the slopes are per batch.
fn check_bias(
    attn: &Attention,
    device: &crate::core::device::Device,
    batch: usize,
    heads: usize,
    positions_shape: &[usize],
) -> Result<bool> {
    let slope_shapes = [vec![heads], vec![batch, heads]];
    let slopes = match attn.bias {
        Bias::None => return Ok(false),
        Bias::Alibi { slopes } => slopes,
        Bias::Geometric { slopes, positions } => {
            same_device("positions", device, positions)?;
            f32_of_shape("positions", positions, &[positions_shape.to_vec()])?;
            slopes
        }
    };
    same_device("slopes", device, slopes)?;
    f32_of_shape("slopes", slopes, &slope_shapes)?;
    Ok(slopes.shape().len() == 2)
}

/// q, k, v and the bias tensors copied to the host, for the reference path of the forward, the
/// padded forward and the backward.
struct HostInputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    slopes: Option<Vec<f64>>,
    positions: Option<Vec<f64>>,
}

impl HostInputs {
    fn of(attn: &Attention, q: &Tensor, k: &Tensor, v: &Tensor) -> HostInputs {
        let (slopes, positions) = match attn.bias {
            Bias::None => (None, None),
            Bias::Alibi { slopes } => (Some(slopes.host_f64()), None),
            Bias::Geometric { slopes, positions } => (Some(slopes.host_f64()), Some(positions.host_f64())),
        };
        HostInputs { q: q.host_f64(), k: k.host_f64(), v: v.host_f64(), slopes, positions }
    }

    fn bias(&self) -> cpu::BiasRef<'_> {
        match (&self.slopes, &self.positions) {
            (None, _) => cpu::BiasRef::None,
            (Some(s), None) => cpu::BiasRef::Linear { slopes: s },
            (Some(s), Some(p)) => cpu::BiasRef::Geometric { slopes: s, positions: p },
        }
    }

    /// The reference problem on these inputs: sequence layout `cu_q`/`cu_k` (empty for the padded
    /// form), `[heads, heads_k, head_dim]` and the softmax scale as validated.
    fn problem<'a>(
        &'a self,
        attn: &Attention,
        (cu_q, cu_k): (&'a [usize], &'a [usize]),
        [heads, heads_k, head_dim]: [usize; 3],
        scale: f32,
    ) -> cpu::Problem<'a> {
        cpu::Problem {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            cu_seqlens_q: cu_q,
            cu_seqlens_k: cu_k,
            heads,
            heads_k,
            head_dim,
            bias: self.bias(),
            causal: attn.causal,
            scale: scale as f64,
        }
    }
}

/// q f16 or bf16; k and v on q's device in q's dtype.
fn check_qkv(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
    if !matches!(q.dtype(), DType::F16 | DType::BF16) {
        return Err(Error::DType { arg: "q", expected: "f16 or bf16".into(), got: q.dtype() });
    }
    let device = q.device();
    for (arg, t) in [("k", k), ("v", v)] {
        same_device(arg, &device, t)?;
        if t.dtype() != q.dtype() {
            return Err(Error::DType { arg, expected: format!("{} (the dtype of q)", q.dtype()), got: t.dtype() });
        }
    }
    Ok(())
}

/// The softmax scale: the given one (finite) or 1/√D.
fn softmax_scale(attn: &Attention, head_dim: usize) -> Result<f32> {
    let scale = attn.scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
    ensure(scale.is_finite(), "scale", || format!("must be finite, got {scale}"))?;
    Ok(scale)
}

fn validate(
    attn: &Attention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens_q: &Tensor,
    cu_seqlens_k: &Tensor,
) -> Result<Dims> {
    check_qkv(q, k, v)?;
    let device = q.device();
    same_device("cu_seqlens_q", &device, cu_seqlens_q)?;
    same_device("cu_seqlens_k", &device, cu_seqlens_k)?;
    let &[total_q, heads, head_dim] = q.shape() else {
        return Err(shape_err("q", "[total_q, heads, head_dim]".into(), q));
    };
    if !HEAD_DIMS.contains(&head_dim) {
        return Err(shape_err("q", format!("[total_q, heads, head_dim] with head_dim in {HEAD_DIMS:?}"), q));
    }
    if heads == 0 {
        return Err(shape_err("q", "[total_q, heads, head_dim] with heads ≥ 1".into(), q));
    }
    let &[total_k, heads_k, kd] = k.shape() else {
        return Err(shape_err("k", "[total_k, heads_k, head_dim]".into(), k));
    };
    if kd != head_dim || heads_k == 0 || heads % heads_k != 0 {
        return Err(shape_err("k", format!("[total_k, heads_k, {head_dim}] with heads_k dividing {heads}"), k));
    }
    if v.shape() != k.shape() {
        return Err(shape_err("v", format!("{:?} (the shape of k)", k.shape()), v));
    }
    let cu_q = cu_seqlens("cu_seqlens_q", cu_seqlens_q, total_q)?;
    let cu_k = cu_seqlens("cu_seqlens_k", cu_seqlens_k, total_k)?;
    if cu_k.len() != cu_q.len() {
        return Err(shape_err("cu_seqlens_k", format!("[{}] (the length of cu_seqlens_q)", cu_q.len()), cu_seqlens_k));
    }
    let batch = cu_q.len() - 1;
    let slopes_per_batch = check_bias(attn, &device, batch, heads, &[total_q, 3])?;
    if matches!(attn.bias, Bias::Geometric { .. }) {
        ensure(cu_q == cu_k, "positions", || {
            "geometric ALiBi is self-attention: cu_seqlens_q must equal cu_seqlens_k".into()
        })?;
    }
    let scale = softmax_scale(attn, head_dim)?;
    Ok(Dims { total_q, total_k, heads, heads_k, head_dim, cu_q, cu_k, slopes_per_batch, scale })
}

/// Attention forward over packed sequences: q `[total_q, H, D]`, k and v `[total_k, H_k, D]`
/// (f16 or bf16, one dtype; H % H_k = 0; D in [`HEAD_DIMS`]), `cu_seqlens_q/k` i32 `[B + 1]`
/// (prefix sums of the sequence lengths; zero-length sequences allowed). Reads the cu_seqlens
/// to validate them (a host synchronisation on a GPU).
pub fn forward(
    attn: &Attention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens_q: &Tensor,
    cu_seqlens_k: &Tensor,
) -> Result<AttentionOutput> {
    let dims = validate(attn, q, k, v, cu_seqlens_q, cu_seqlens_k)?;
    match Gpu::of(&q.device())? {
        None => {
            let host = HostInputs::of(attn, q, k, v);
            let f = cpu::forward(&host.problem(
                attn,
                (&dims.cu_q, &dims.cu_k),
                [dims.heads, dims.heads_k, dims.head_dim],
                dims.scale,
            ));
            Ok(AttentionOutput {
                out: Tensor::from_f64(&f.out, q.shape(), q.dtype())?,
                lse: Tensor::from_f64(&f.lse, &[dims.heads, dims.total_q], DType::F32)?,
            })
        }
        Some(gpu) => on_backend!(&gpu, forward(attn, q, k, v, cu_seqlens_q, cu_seqlens_k, &dims, &gpu)),
    }
}
