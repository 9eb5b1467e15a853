//! The attention family's registry entry: `attention/alibi`. Forward inputs q, k, v,
//! cu_seqlens_q, cu_seqlens_k and the optional slopes (linear ALiBi) and positions (geometric
//! ALiBi, with slopes); params `causal` (0 or 1) and `scale` (0 means 1/√D); outputs out, lse.
//! Backward inputs: the forward's plus out, lse and dout; outputs dq, dk, dv, and dslopes
//! whenever slopes is an input, dpositions whenever positions is.
//! The main-input shape of checks and benches is `[batch, seqlen, heads, heads_k, head_dim]`.

use rand::Rng;
use rand::rngs::StdRng;

mod bench;
mod finite_difference;
mod identities;
mod naive_backward;
mod problem;

pub use bench::{GPU_DENSE, VARLEN_MIX, bench_specs, flash_flops, label};
use problem::normal;
pub use problem::{BiasKind, Spec, problem, with_prefix};

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::families::attention::backward::{BackwardInputs, BiasGrads};
use crate::families::attention::{Attention, Bias, cpu, cpu_backward};
use crate::ops::check_row::CheckRow;
use crate::ops::params::Params;
use crate::ops::registry::{
    ArgSpec, Array, Arrays, BenchCase, Direction, Op, Problem, Storage, Tensors, input, put_output,
};

/// `attention/alibi` in the registry.
pub struct AlibiAttention;

/// The attention ops, as registry entries.
pub fn entries() -> Vec<Box<dyn Op>> {
    vec![Box::new(AlibiAttention)]
}

/// Forward FLOPs past which [`with_forward`] leaves out and lse to the run (the f64 reference
/// would take minutes: a GPU benchmark shape); every check shape is below it.
const REFERENCE_FORWARD_FLOPS: u64 = 1 << 33;

/// Adds what the backward reads to a forward problem: q, k, v rounded to bf16 (exact in f16
/// too, so out and lse stay the forward of the inputs a check rounds to either dtype), dout
/// N(0, 1), and the f64 forward's out and lse (left out past [`REFERENCE_FORWARD_FLOPS`]: the
/// run, or [`Op::prepare`] for a benchmark, then computes them on the device).
pub fn with_forward(mut p: Problem, rng: &mut StdRng) -> Problem {
    for name in ["q", "k", "v"] {
        if let Some(a) = p.inputs.get_mut(name) {
            *a = a.rounded(DType::BF16);
        }
    }
    let Ok(parts) = parts(&p) else { return p };
    let (q_shape, heads) = (parts.q.shape.clone(), parts.q.shape[1]);
    let forward =
        (AlibiAttention.flops(Direction::Fwd, &p) <= REFERENCE_FORWARD_FLOPS).then(|| cpu::forward(&parts.cpu()));
    let dout = normal(q_shape.iter().product(), 1.0, rng);
    if let Some(f) = forward {
        p.inputs.insert("lse".into(), Array::new(vec![heads, q_shape[0]], f.lse));
        p.inputs.insert("out".into(), Array::new(q_shape.clone(), f.out));
    }
    p.inputs.insert("dout".into(), Array::new(q_shape, dout));
    p
}

/// The attention configuration of a run's inputs and params.
fn attention<'a>(inputs: &'a Tensors, params: &Params) -> Result<Attention<'a>> {
    let scale = params.get("scale").copied().unwrap_or(0.0);
    let bias = match (inputs.get("slopes"), inputs.get("positions")) {
        (None, None) => Bias::None,
        (Some(slopes), None) => Bias::Alibi { slopes },
        (Some(slopes), Some(positions)) => Bias::Geometric { slopes, positions },
        (None, Some(_)) => {
            return Err(Error::InvalidValue { arg: "positions", reason: "geometric ALiBi needs slopes".into() });
        }
    };
    Ok(Attention {
        causal: params.get("causal").copied().unwrap_or(0.0) != 0.0,
        scale: if scale == 0.0 { None } else { Some(scale as f32) },
        bias,
        prefix_len: inputs.get("prefix_len"),
    })
}

/// The forward of a run's inputs.
fn forward(attn: &Attention, inputs: &Tensors) -> Result<crate::families::attention::AttentionOutput> {
    crate::families::attention::forward(
        attn,
        input(inputs, "q")?,
        input(inputs, "k")?,
        input(inputs, "v")?,
        input(inputs, "cu_seqlens_q")?,
        input(inputs, "cu_seqlens_k")?,
    )
}

/// The tile variant a run asks for: param `variant` ≥ 0 (the GPU sweep's candidates, bf16
/// only), or None for the default kernels (< 0).
fn variant_param(params: &Params) -> Result<Option<usize>> {
    let variant = params.get("variant").copied().unwrap_or(-1.0);
    if variant < 0.0 {
        return Ok(None);
    }
    if variant.fract() != 0.0 {
        return Err(Error::InvalidValue { arg: "variant", reason: format!("{variant}: a variant is a whole number") });
    }
    Ok(Some(variant as usize))
}

/// The forward of a run: through its tile variant
/// ([`crate::families::attention::forward_variant`]) or the default kernel.
fn forward_run(
    attn: &Attention,
    inputs: &Tensors,
    params: &Params,
) -> Result<crate::families::attention::AttentionOutput> {
    let Some(variant) = variant_param(params)? else {
        return forward(attn, inputs);
    };
    crate::families::attention::forward_variant(
        attn,
        variant,
        input(inputs, "q")?,
        input(inputs, "k")?,
        input(inputs, "v")?,
        input(inputs, "cu_seqlens_q")?,
        input(inputs, "cu_seqlens_k")?,
    )
}

/// The backward's outputs by name (dslopes and dpositions where the problem has the input).
fn grads(problem: &Problem, g: cpu_backward::Backward) -> Arrays {
    let mut out = Arrays::new();
    let shape = |name: &'static str| problem.get(name).map(|a| a.shape.clone()).unwrap_or_default();
    out.insert("dq".into(), Array::new(shape("q"), g.dq));
    out.insert("dk".into(), Array::new(shape("k"), g.dk));
    out.insert("dv".into(), Array::new(shape("v"), g.dv));
    if problem.get("slopes").is_some() {
        out.insert("dslopes".into(), Array::new(shape("slopes"), g.dslopes));
    }
    if problem.get("positions").is_some() {
        out.insert("dpositions".into(), Array::new(shape("positions"), g.dpositions));
    }
    out
}

/// `[batch, seqlen, heads, heads_k, head_dim]` of a check or bench shape.
fn unpack(shape: &[usize]) -> (usize, usize, usize, usize, usize) {
    match *shape {
        [b, s, h, hk, d] => (b, s, h, hk, d),
        _ => (1, 1, 1, 1, 32),
    }
}

/// Sequence lengths as a usize vector from a cu_seqlens array.
fn offsets(a: &Array) -> Vec<usize> {
    a.data.iter().map(|&x| x as usize).collect()
}

/// The reference's view of a problem: its arrays and options.
struct Parts<'a> {
    q: &'a Array,
    k: &'a Array,
    v: &'a Array,
    cu_q: Vec<usize>,
    cu_k: Vec<usize>,
    slopes: Option<&'a [f64]>,
    positions: Option<&'a [f64]>,
    causal: bool,
    prefix_len: Option<Vec<usize>>,
    scale: f64,
}

fn parts(problem: &Problem) -> Result<Parts<'_>> {
    let q = problem.input("q")?;
    let head_dim = q.shape.get(2).copied().unwrap_or(1);
    let scale = problem.params.get("scale").copied().unwrap_or(0.0);
    // The kernel sees the scale as f32.
    let scale = if scale == 0.0 { 1.0 / (head_dim as f32).sqrt() } else { scale as f32 } as f64;
    Ok(Parts {
        q,
        k: problem.input("k")?,
        v: problem.input("v")?,
        cu_q: offsets(problem.input("cu_seqlens_q")?),
        cu_k: offsets(problem.input("cu_seqlens_k")?),
        slopes: problem.get("slopes").map(|a| a.data.as_slice()),
        positions: problem.get("positions").map(|a| a.data.as_slice()),
        causal: problem.params.get("causal").copied().unwrap_or(0.0) != 0.0,
        prefix_len: problem.get("prefix_len").map(|a| a.data.iter().map(|&x| x.max(0.0) as usize).collect()),
        scale,
    })
}

impl Parts<'_> {
    fn cpu(&self) -> cpu::Problem<'_> {
        let bias = match (self.slopes, self.positions) {
            (None, _) => cpu::BiasRef::None,
            (Some(slopes), None) => cpu::BiasRef::Linear { slopes },
            (Some(slopes), Some(positions)) => cpu::BiasRef::Geometric { slopes, positions },
        };
        cpu::Problem {
            q: &self.q.data,
            k: &self.k.data,
            v: &self.v.data,
            cu_seqlens_q: &self.cu_q,
            cu_seqlens_k: &self.cu_k,
            heads: self.q.shape[1],
            heads_k: self.k.shape[1],
            head_dim: self.q.shape[2],
            bias,
            causal: self.causal,
            prefix_len: self.prefix_len.as_deref(),
            scale: self.scale,
        }
    }
}

/// The forward done naively in the low precision of `dtype` (flash-attn's yardstick): scores
/// q·k summed in f32 and rounded to `dtype` (a low-precision matmul's output), scale, bias and
/// softmax in f32, probabilities rounded to `dtype`, P·V summed in f32 and rounded to `dtype`.
fn naive_forward(p: &cpu::Problem, dtype: DType) -> cpu::Forward {
    let r = |x: f32| dtype.round(x as f64) as f32;
    let (h_all, d) = (p.heads, p.head_dim);
    let total_q = p.cu_seqlens_q.last().copied().unwrap_or(0);
    let mut out = cpu::Forward { out: vec![0.0; total_q * h_all * d], lse: vec![f64::NEG_INFINITY; h_all * total_q] };
    let group = h_all / p.heads_k;
    for b in 0..p.cu_seqlens_q.len() - 1 {
        let (q0, k0) = (p.cu_seqlens_q[b], p.cu_seqlens_k[b]);
        let (sq, sk) = (p.cu_seqlens_q[b + 1] - q0, p.cu_seqlens_k[b + 1] - k0);
        for (h, i) in (0..h_all).flat_map(|h| (0..sq).map(move |i| (h, i))) {
            let hk = h / group;
            let aligned = i as i64 + sk as i64 - sq as i64;
            let scores: Vec<f32> = (0..sk)
                .map(|j| {
                    if p.causal && j as i64 > aligned {
                        return f32::NEG_INFINITY;
                    }
                    let (qi, kj) =
                        (&p.q[((q0 + i) * h_all + h) * d..][..d], &p.k[((k0 + j) * p.heads_k + hk) * d..][..d]);
                    let dot = r(qi.iter().zip(kj).map(|(a, c)| (a * c) as f32).sum::<f32>());
                    let bias = match p.bias {
                        cpu::BiasRef::None => 0.0,
                        cpu::BiasRef::Linear { slopes } => {
                            let s = if slopes.len() == h_all { slopes[h] } else { slopes[b * h_all + h] };
                            -(s as f32) * (aligned - j as i64).unsigned_abs() as f32
                        }
                        cpu::BiasRef::Geometric { slopes, positions } => {
                            let s = if slopes.len() == h_all { slopes[h] } else { slopes[b * h_all + h] };
                            let dist: f32 = (0..3)
                                .map(|c| ((positions[(q0 + i) * 3 + c] - positions[(k0 + j) * 3 + c]) as f32).powi(2))
                                .sum::<f32>()
                                .sqrt();
                            -(s as f32) * dist
                        }
                    };
                    p.scale as f32 * dot + bias
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if max == f32::NEG_INFINITY {
                continue;
            }
            let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            out.lse[h * total_q + q0 + i] = (max + sum.ln()) as f64;
            for c in 0..d {
                let acc: f32 = (0..sk).map(|j| r(e[j] / sum) * p.v[((k0 + j) * p.heads_k + hk) * d + c] as f32).sum();
                out.out[((q0 + i) * h_all + h) * d + c] = r(acc) as f64;
            }
        }
    }
    out
}

impl Op for AlibiAttention {
    fn family(&self) -> &'static str {
        "attention"
    }

    fn name(&self) -> &'static str {
        "alibi"
    }

    fn dtypes(&self) -> &'static [DType] {
        &[DType::F16, DType::BF16]
    }

    fn directions(&self) -> &'static [Direction] {
        &Direction::BOTH
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        let mut v = vec![
            ArgSpec::op("q"),
            ArgSpec::op("k"),
            ArgSpec::op("v"),
            ArgSpec::i32("cu_seqlens_q"),
            ArgSpec::i32("cu_seqlens_k"),
            ArgSpec::f32("slopes").optional(),
            ArgSpec::f32("positions").optional(),
            // Prefix-LM lengths [B] (with causal).
            ArgSpec::i32("prefix_len").optional(),
        ];
        if dir == Direction::Bwd {
            // out and lse: both or neither (then the run computes them first).
            v.extend([ArgSpec::op("out").optional(), ArgSpec::f32("lse").optional(), ArgSpec::op("dout")]);
        }
        v
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        let q = problem.input_shape("q")?;
        if dir == Direction::Bwd {
            // Every gradient is a sum over keys, queries or heads: the naive-error rule.
            let grad = |name| ArgSpec { name, storage: Storage::Op, reduction: true, optional: false };
            let k = problem.input_shape("k")?;
            let mut v = vec![(grad("dq"), q), (grad("dk"), k.clone()), (grad("dv"), k)];
            if let Some(s) = problem.get("slopes") {
                v.push((ArgSpec::f32_reduction("dslopes"), s.shape.clone()));
            }
            if let Some(p) = problem.get("positions") {
                v.push((ArgSpec::f32_reduction("dpositions"), p.shape.clone()));
            }
            return Ok(v);
        }
        let (total_q, heads) = (q.first().copied().unwrap_or(0), q.get(1).copied().unwrap_or(0));
        // Each output element is a sum over keys: checked by the naive-error rule.
        let out = ArgSpec { name: "out", storage: Storage::Op, reduction: true, optional: false };
        Ok(vec![(out, q), (ArgSpec::f32_reduction("lse"), vec![heads, total_q])])
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        // variant: the direction's tile variant (-1: the default kernels; 0.. the sweep's, bf16
        // only; the backward recomputes a missing forward with the default).
        &[("causal", 0.0), ("scale", 0.0), ("variant", -1.0)]
    }

    fn launcher(&self, dir: Direction) -> String {
        format!("kiln_attention_alibi_{dir}")
    }

    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let (batch, seqlen, heads, heads_k, head_dim) = unpack(shape);
        // The first sequence is full length (it sets max_seqlen); the others random, zero allowed.
        let lens = |rng: &mut StdRng| -> Vec<usize> {
            (0..batch).map(|b| if b == 0 { seqlen } else { rng.random_range(0..=seqlen) }).collect()
        };
        let (seqlens_q, seqlens_k) = (lens(rng), lens(rng));
        let bias = [BiasKind::None, BiasKind::Alibi, BiasKind::Geometric][rng.random_range(0..3)];
        let spec = Spec {
            seqlens_q,
            seqlens_k,
            heads,
            heads_k,
            head_dim,
            causal: rng.random_bool(0.5),
            bias,
            slopes_per_batch: rng.random_bool(0.5),
        };
        let mut p = problem(&spec, rng);
        // Half the causal problems are prefix-LM, with lengths from 0 to past the sequence.
        if spec.causal && rng.random_bool(0.5) {
            let lengths: Vec<usize> = spec.seqlens_k.iter().map(|&sk| rng.random_range(0..=sk + 2)).collect();
            p = with_prefix(p, &lengths);
        }
        if dir == Direction::Bwd { with_forward(p, rng) } else { p }
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let p = parts(problem)?;
        if dir == Direction::Bwd {
            let g = cpu_backward::backward(&p.cpu(), &problem.input("dout")?.data);
            return Ok(grads(problem, g));
        }
        let f = cpu::forward(&p.cpu());
        let mut out = Arrays::new();
        let heads = p.q.shape[1];
        out.insert("out".into(), Array::new(p.q.shape.clone(), f.out));
        out.insert("lse".into(), Array::new(vec![heads, p.q.shape[0]], f.lse));
        Ok(out)
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, dtype: DType) -> Result<Arrays> {
        let p = parts(problem)?;
        if dir == Direction::Bwd {
            // The stored out, or (a problem without one) the forward's rounded to the dtype.
            let out = match problem.get("out") {
                Some(a) => a.data.clone(),
                None => cpu::forward(&p.cpu()).out.into_iter().map(|x| dtype.round(x)).collect(),
            };
            let dout = &problem.input("dout")?.data;
            let naive = naive_backward::naive_backward(&p.cpu(), &out, dout, dtype);
            let mut arrays = grads(problem, naive.grads);
            // The reduction floor of check_row.rs: the spread of the bias gradients' rounded terms.
            for (name, input, rms) in
                [("dslopes", "slopes", naive.dslopes_rms), ("dpositions", "positions", naive.dpositions_rms)]
            {
                if let Some(a) = problem.get(input) {
                    arrays.insert(crate::ops::check_row::rms_key(name), Array::new(a.shape.clone(), rms));
                }
            }
            return Ok(arrays);
        }
        let f = naive_forward(&p.cpu(), dtype);
        let mut out = Arrays::new();
        out.insert("out".into(), Array::new(p.q.shape.clone(), f.out));
        out.insert("lse".into(), Array::new(vec![p.q.shape[1], p.q.shape[0]], f.lse));
        Ok(out)
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        let attn = attention(inputs, params)?;
        if dir == Direction::Bwd {
            // out and lse come together; without them the forward runs first.
            let recomputed;
            let (out, lse) = match (inputs.get("out"), inputs.get("lse")) {
                (Some(out), Some(lse)) => (out, lse),
                (None, None) => {
                    recomputed = forward(&attn, inputs)?;
                    (&recomputed.out, &recomputed.lse)
                }
                (Some(_), None) | (None, Some(_)) => {
                    let missing = if inputs.contains_key("out") { "lse" } else { "out" };
                    let reason = "out and lse come together (or neither: the forward is run first)";
                    return Err(Error::InvalidValue { arg: missing, reason: reason.into() });
                }
            };
            let x = BackwardInputs {
                q: input(inputs, "q")?,
                k: input(inputs, "k")?,
                v: input(inputs, "v")?,
                cu_seqlens_q: input(inputs, "cu_seqlens_q")?,
                cu_seqlens_k: input(inputs, "cu_seqlens_k")?,
                out,
                lse,
                dout: input(inputs, "dout")?,
            };
            let want = BiasGrads { slopes: inputs.contains_key("slopes"), positions: inputs.contains_key("positions") };
            let g = match variant_param(params)? {
                None => crate::families::attention::backward(&attn, &x, want)?,
                Some(variant) => crate::families::attention::backward_variant(&attn, variant, &x, want)?,
            };
            put_output(outputs, "dq", g.dq)?;
            put_output(outputs, "dk", g.dk)?;
            put_output(outputs, "dv", g.dv)?;
            put_output(outputs, "dslopes", g.dslopes)?;
            return put_output(outputs, "dpositions", g.dpositions);
        }
        let o = forward_run(&attn, inputs, params)?;
        put_output(outputs, "out", o.out)?;
        put_output(outputs, "lse", o.lse)
    }

    fn prepare(&self, dir: Direction, inputs: &mut Tensors, params: &Params) -> Result<()> {
        // A backward timed without out and lse would time the forward too: run it once here.
        if dir == Direction::Bwd && !inputs.contains_key("out") && !inputs.contains_key("lse") {
            let o = forward(&attention(inputs, params)?, inputs)?;
            inputs.insert("out".into(), o.out);
            inputs.insert("lse".into(), o.lse);
        }
        Ok(())
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let n = |k: &str| problem.get(k).map_or(0, |a| a.data.len()) as u64;
        let total_q = problem.get("q").map_or(0, |a| a.shape[0]) as u64;
        let heads = problem.get("q").map_or(0, |a| a.shape[1]) as u64;
        if dir == Direction::Bwd {
            // Read q, k, v, out, dout and the log-sum-exp; write dq, dk, dv.
            return (4 * n("q") + 2 * (n("k") + n("v"))) * dtype.size_in_bytes() as u64 + total_q * heads * 4;
        }
        // Read q, k, v; write out (the size of q) and the f32 log-sum-exp.
        (2 * n("q") + n("k") + n("v")) * dtype.size_in_bytes() as u64 + total_q * heads * 4
    }

    fn flops(&self, dir: Direction, problem: &Problem) -> u64 {
        // REFERENCE §4: 4·Σ sq·sk·H·D, halved under causal; the backward 2.5× (flash_flops).
        let Ok(p) = parts(problem) else { return 0 };
        let lens = |cu: &[usize]| cu.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>();
        flash_flops(dir, &lens(&p.cu_q), &lens(&p.cu_k), p.q.shape[1], p.q.shape[2], p.causal)
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        // [batch, seqlen, heads, heads_k, head_dim]: every head dim, GQA and MQA, lengths that
        // are not multiples of the tiles (the first is small enough for the sanitizer runs of
        // scripts/gpu-run.sh); the last three are for a GPU.
        vec![
            vec![2, 17, 2, 1, 32],
            vec![3, 37, 6, 2, 32],
            vec![2, 70, 6, 6, 64],
            vec![2, 45, 6, 1, 96],
            vec![2, 33, 4, 2, 128],
            vec![4, 203, 6, 2, 64],
            vec![2, 512, 6, 1, 128],
            vec![3, 1023, 6, 6, 96],
        ]
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        // B·S = 16k tokens, H·D = 2048 (the H100 target), d128: the first bench case.
        vec![16, 1024, 16, 16, 128]
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![1, 128, 2, 2, 64]
    }

    fn bench_cases(&self, gpu: bool) -> Vec<BenchCase<'_>> {
        // Named dense (and one variable-length) problems, not the random one (bench.rs), each
        // built as a check's is from the fixed seed, with the forward's out and lse for the backward.
        bench_specs(gpu)
            .into_iter()
            .map(|spec| {
                let seqlen = spec.seqlens_q.iter().copied().max().unwrap_or(0);
                let shape = vec![spec.seqlens_q.len(), seqlen, spec.heads, spec.heads_k, spec.head_dim];
                BenchCase::new(label(&spec), shape, move |dir, rng| {
                    let p = problem(&spec, rng);
                    if dir == Direction::Bwd { with_forward(p, rng) } else { p }
                })
            })
            .collect()
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        let mut rows = identities::rows(self, rng);
        rows.extend(finite_difference::rows(self, rng));
        rows
    }
}
