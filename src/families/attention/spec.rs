//! What an attention call is and the rules its arguments obey: the bias and options
//! ([`Attention`], [`Bias`]), what the forward returns, what the backward reads and returns,
//! and the validation both run before a kernel or the reference sees an argument.
//!
//! Layer: families. Imports core and the attention reference's problem type; the forward
//! (varlen.rs), the padded form, the backward and the launch code import it.

use crate::core::dtype::DType;
use crate::core::error::{Error, Result, ensure};
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};
use crate::families::attention::cpu;

/// The head dimensions the kernels take.
pub const HEAD_DIMS: [usize; 4] = [32, 64, 96, 128];

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
    /// Prefix-LM (with `causal`): i32 `[B]`, each sequence's prefix length; key j < prefix_len[b]
    /// is visible to every query of sequence b (query i sees key j when both lie in the prefix,
    /// or j ≤ i + sk − sq). Lengths ≥ 0; past the sequence they mean all of it. `None`: plain
    /// causal. Ignored without `causal`. The packed form only (the padded form refuses it).
    pub prefix_len: Option<&'a Tensor>,
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
pub(super) struct Dims {
    pub(super) total_q: usize,
    pub(super) total_k: usize,
    pub(super) heads: usize,
    pub(super) heads_k: usize,
    pub(super) head_dim: usize,
    pub(super) cu_q: Vec<usize>,
    pub(super) cu_k: Vec<usize>,
    pub(super) slopes_per_batch: bool,
    pub(super) scale: f32,
}

/// The prefix lengths of `attn` (prefix-LM), validated against a batch of `batch` on `device`:
/// i32 `[batch]`, every length ≥ 0 (read to the host: a synchronisation on a GPU).
pub(super) fn prefix_lengths(attn: &Attention, batch: usize, device: &crate::core::device::Device) -> Result<()> {
    let Some(t) = attn.prefix_len else { return Ok(()) };
    check(device, &[Arg::new("prefix_len", t).dtype(DType::I32).shape(vec![batch])])?;
    let v = t.to_f64_vec()?;
    ensure(v.iter().all(|&x| x >= 0.0), "prefix_len", || format!("lengths must be ≥ 0, got {v:?}"))
}

#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
impl Dims {
    pub(super) fn batch(&self) -> usize {
        self.cu_q.len() - 1
    }

    pub(super) fn max_seqlen_q(&self) -> usize {
        self.cu_q.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
    }
}

pub(super) fn shape_err(arg: &'static str, expected: String, t: &Tensor) -> Error {
    Error::Shape { arg, expected, got: t.shape().to_vec() }
}

/// cu_seqlens of `total` tokens, its device and dtype (i32) already checked: `[batch + 1]`,
/// starting at 0, non-decreasing, ending at total. Code, not a declaration: the engine states
/// exact shapes, and this one is "rank 1 with at least 2 entries" before its values are read.
pub(super) fn cu_seqlens(arg: &'static str, t: &Tensor, total: usize) -> Result<Vec<usize>> {
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

/// The bias tensors' rules, in the order they are checked: the positions (geometric ALiBi), f32
/// `positions_shape`, then the slopes, f32 `[heads]` or `[batch, heads]`. None without a bias.
pub(super) fn bias_args<'a>(bias: Bias<'a>, batch: usize, heads: usize, positions_shape: Vec<usize>) -> Vec<Arg<'a>> {
    let slopes_arg = |slopes| {
        let expected = format!("[{heads}] or [{batch}, {heads}]");
        Arg::new("slopes", slopes).dtype(DType::F32).shape_in(vec![vec![heads], vec![batch, heads]], expected)
    };
    match bias {
        Bias::None => vec![],
        Bias::Alibi { slopes } => vec![slopes_arg(slopes)],
        Bias::Geometric { slopes, positions } => {
            vec![Arg::new("positions", positions).dtype(DType::F32).shape(positions_shape), slopes_arg(slopes)]
        }
    }
}

/// Whether the (checked) slopes are `[batch, heads]` rather than shared `[heads]`.
pub(super) fn slopes_per_batch(bias: Bias) -> bool {
    match bias {
        Bias::None => false,
        Bias::Alibi { slopes } | Bias::Geometric { slopes, .. } => slopes.shape().len() == 2,
    }
}

/// q, k, v and the bias tensors copied to the host, for the reference path of the forward, the
/// padded forward and the backward.
pub(super) struct HostInputs {
    pub(super) q: Vec<f64>,
    pub(super) k: Vec<f64>,
    pub(super) v: Vec<f64>,
    pub(super) slopes: Option<Vec<f64>>,
    pub(super) positions: Option<Vec<f64>>,
    pub(super) prefix_len: Option<Vec<usize>>,
}

impl HostInputs {
    pub(super) fn of(attn: &Attention, q: &Tensor, k: &Tensor, v: &Tensor) -> HostInputs {
        let (slopes, positions) = match attn.bias {
            Bias::None => (None, None),
            Bias::Alibi { slopes } => (Some(slopes.host_f64()), None),
            Bias::Geometric { slopes, positions } => (Some(slopes.host_f64()), Some(positions.host_f64())),
        };
        let prefix_len = attn.prefix_len.map(|t| t.host_f64().into_iter().map(|x| x as usize).collect());
        HostInputs { q: q.host_f64(), k: k.host_f64(), v: v.host_f64(), slopes, positions, prefix_len }
    }

    pub(super) fn bias(&self) -> cpu::BiasRef<'_> {
        match (&self.slopes, &self.positions) {
            (None, _) => cpu::BiasRef::None,
            (Some(s), None) => cpu::BiasRef::Linear { slopes: s },
            (Some(s), Some(p)) => cpu::BiasRef::Geometric { slopes: s, positions: p },
        }
    }

    /// The reference problem on these inputs: sequence layout `cu_q`/`cu_k` (empty for the padded
    /// form), `[heads, heads_k, head_dim]` and the softmax scale as validated.
    pub(super) fn problem<'a>(
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
            prefix_len: self.prefix_len.as_deref(),
            scale: scale as f64,
        }
    }
}

/// The softmax scale: the given one (finite) or 1/√D.
pub(super) fn softmax_scale(attn: &Attention, head_dim: usize) -> Result<f32> {
    let scale = attn.scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
    ensure(scale.is_finite(), "scale", || format!("must be finite, got {scale}"))?;
    Ok(scale)
}

/// Validates the forward's arguments; returns their dimensions and sequence layout.
pub(super) fn validate(
    attn: &Attention,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens_q: &Tensor,
    cu_seqlens_k: &Tensor,
) -> Result<Dims> {
    let device = q.device();
    // q and k first: their shapes, read below as code that names the dimensions, give the
    // others' (v must have k's shape once k's is known to be right).
    check(
        &device,
        &[Arg::new("q", q).dtype_in(&[DType::F16, DType::BF16], "f16 or bf16"), Arg::new("k", k).dtype_of("q", q)],
    )?;
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
    // Then v and the cu_seqlens (whose values are read next, so their dtype comes first).
    check(
        &device,
        &[
            Arg::new("v", v).dtype_of("q", q).shape_of("k", k),
            Arg::new("cu_seqlens_q", cu_seqlens_q).dtype(DType::I32),
            Arg::new("cu_seqlens_k", cu_seqlens_k).dtype(DType::I32),
        ],
    )?;
    let cu_q = cu_seqlens("cu_seqlens_q", cu_seqlens_q, total_q)?;
    let cu_k = cu_seqlens("cu_seqlens_k", cu_seqlens_k, total_k)?;
    if cu_k.len() != cu_q.len() {
        return Err(shape_err("cu_seqlens_k", format!("[{}] (the length of cu_seqlens_q)", cu_q.len()), cu_seqlens_k));
    }
    let batch = cu_q.len() - 1;
    // The slopes' shape names the batch, known once the cu_seqlens are.
    check(&device, &bias_args(attn.bias, batch, heads, vec![total_q, 3]))?;
    let slopes_per_batch = slopes_per_batch(attn.bias);
    if matches!(attn.bias, Bias::Geometric { .. }) {
        ensure(cu_q == cu_k, "positions", || {
            "geometric ALiBi is self-attention: cu_seqlens_q must equal cu_seqlens_k".into()
        })?;
    }
    prefix_lengths(attn, batch, &device)?;
    let scale = softmax_scale(attn, head_dim)?;
    Ok(Dims { total_q, total_k, heads, heads_k, head_dim, cu_q, cu_k, slopes_per_batch, scale })
}

/// The tensors the backward reads.
#[derive(Clone, Copy, Debug)]
pub struct BackwardInputs<'a> {
    /// `[total_q, H, D]`, as given to the forward.
    pub q: &'a Tensor,
    /// `[total_k, H_k, D]`.
    pub k: &'a Tensor,
    /// `[total_k, H_k, D]`.
    pub v: &'a Tensor,
    /// i32 `[B + 1]`.
    pub cu_seqlens_q: &'a Tensor,
    /// i32 `[B + 1]`.
    pub cu_seqlens_k: &'a Tensor,
    /// The forward's output, `[total_q, H, D]` in q's dtype.
    pub out: &'a Tensor,
    /// The forward's log-sum-exp, f32 `[H, total_q]`.
    pub lse: &'a Tensor,
    /// The gradient of `out`, `[total_q, H, D]` in q's dtype.
    pub dout: &'a Tensor,
}

/// Which optional gradients to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BiasGrads {
    /// dslopes (needs ALiBi).
    pub slopes: bool,
    /// dpositions (needs geometric ALiBi).
    pub positions: bool,
}

/// What [`backward`](crate::families::attention::backward()) returns.
#[derive(Debug)]
pub struct AttentionGrads {
    /// `[total_q, H, D]` in q's dtype.
    pub dq: Tensor,
    /// `[total_k, H_k, D]`.
    pub dk: Tensor,
    /// `[total_k, H_k, D]`.
    pub dv: Tensor,
    /// f32, the shape of the slopes, when asked for.
    pub dslopes: Option<Tensor>,
    /// f32 `[total, 3]`, when asked for.
    pub dpositions: Option<Tensor>,
}

/// Validates the backward's arguments on top of the forward's.
pub(super) fn validate_backward(attn: &Attention, x: &BackwardInputs, want: BiasGrads) -> Result<Dims> {
    let dims = validate(attn, x.q, x.k, x.v, x.cu_seqlens_q, x.cu_seqlens_k)?;
    let (heads, total_q) = (dims.heads, dims.total_q);
    check(
        &x.q.device(),
        &[
            Arg::new("out", x.out).like("q", x.q),
            Arg::new("dout", x.dout).like("q", x.q),
            Arg::new("lse", x.lse)
                .dtype(DType::F32)
                .shape_described(vec![heads, total_q], format!("[{heads}, {total_q}] ([heads, total_q])")),
        ],
    )?;
    if want.slopes && matches!(attn.bias, Bias::None) {
        return Err(Error::InvalidValue { arg: "dslopes", reason: "asked for without ALiBi slopes".into() });
    }
    if want.positions && !matches!(attn.bias, Bias::Geometric { .. }) {
        return Err(Error::InvalidValue { arg: "dpositions", reason: "asked for without geometric ALiBi".into() });
    }
    Ok(dims)
}
