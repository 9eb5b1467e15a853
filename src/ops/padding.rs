//! The padding family's registry entries: `padding/unpad` and `padding/pad`, each with its
//! backward (the other one's forward: pad of the gradient, and gather).

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::tensor::Tensor;
use crate::families::padding::{Keep, cpu};
use crate::ops::check_row::CheckRow;
use crate::ops::params::Params;
use crate::ops::registry::{ArgSpec, Array, Arrays, Direction, Op, Problem, Tensors, input, output};
use crate::ops::self_check::reference_row;

/// Which of the two ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaddingOp {
    /// `unpad(hidden, mask)`; backward: pad of dpacked.
    Unpad,
    /// `pad(packed, indices, batch, seqlen)`; backward: gather of dhidden.
    Pad,
}

/// Both padding ops, as registry entries.
pub fn entries() -> Vec<Box<dyn Op>> {
    vec![Box::new(PaddingOp::Unpad), Box::new(PaddingOp::Pad)]
}

/// A random mask for `batch × seqlen` with about half the tokens padded: even sequences
/// keep a random-length prefix (BERT-style), odd ones random tokens (holes).
fn random_mask(batch: usize, seqlen: usize, rng: &mut StdRng) -> Vec<f64> {
    let mut mask = Vec::with_capacity(batch * seqlen);
    for b in 0..batch {
        let len = rng.random_range(0..=seqlen);
        for s in 0..seqlen {
            let keep = if b % 2 == 0 { s < len } else { rng.random_bool(0.5) };
            mask.push(if keep { 1.0 } else { 0.0 });
        }
    }
    mask
}

fn normal(n: usize, rng: &mut StdRng) -> Vec<f64> {
    let d = Normal::new(0.0, 1.0).expect("sd > 0");
    (0..n).map(|_| d.sample(rng)).collect()
}

/// (batch, seqlen, row shape after the first two dims, row elements) of `[batch, seqlen, …]`.
fn split(shape: &[usize]) -> (usize, usize, Vec<usize>, usize) {
    let rest = shape[2..].to_vec();
    let dim = rest.iter().product();
    (shape[0], shape[1], rest, dim)
}

fn with_rows(rows: usize, rest: &[usize]) -> Vec<usize> {
    std::iter::once(rows).chain(rest.iter().copied()).collect()
}

fn indices_of(mask: &[f64]) -> Vec<usize> {
    cpu::keep_from_mask(mask).iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i).collect()
}

fn as_f64(v: &[usize]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn dims_param(problem: &Problem) -> Result<(usize, usize)> {
    Ok((problem.param("batch")? as usize, problem.param("seqlen")? as usize))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl PaddingOp {
    /// The problem both ops share: a mask, its indices, and random rows.
    fn base_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let (batch, seqlen, rest, dim) = split(shape);
        let mask = random_mask(batch, seqlen, rng);
        let idx = indices_of(&mask);
        let mut p = Problem::default();
        p.params.insert("batch".into(), batch as f64);
        p.params.insert("seqlen".into(), seqlen as f64);
        let full = Array::new(shape.to_vec(), normal(batch * seqlen * dim, rng));
        let packed = Array::new(with_rows(idx.len(), &rest), normal(idx.len() * dim, rng));
        let indices = Array::new(vec![idx.len()], as_f64(&idx));
        match (self, dir) {
            (PaddingOp::Unpad, Direction::Fwd) => {
                p.inputs.insert("hidden".into(), full);
                p.inputs.insert("mask".into(), Array::new(vec![batch, seqlen], mask));
            }
            (PaddingOp::Unpad, Direction::Bwd) => {
                p.inputs.insert("dpacked".into(), packed);
                p.inputs.insert("indices".into(), indices);
            }
            (PaddingOp::Pad, Direction::Fwd) => {
                p.inputs.insert("packed".into(), packed);
                p.inputs.insert("indices".into(), indices);
            }
            (PaddingOp::Pad, Direction::Bwd) => {
                p.inputs.insert("dhidden".into(), full);
                p.inputs.insert("indices".into(), indices);
            }
            // No double backward: no inputs (outputs, reference and run refuse it).
            (_, Direction::Bwd2) => {}
        }
        p
    }

    /// (name of the packed-side tensor, name of the padded-side tensor) of a direction.
    fn names(&self, dir: Direction) -> (&'static str, &'static str) {
        // Both ops: the forward's tensors, or their gradients (there is no double backward).
        if dir == Direction::Fwd { ("packed", "hidden") } else { ("dpacked", "dhidden") }
    }

    /// True when the direction scatters packed rows into the padded layout.
    fn scatters(&self, dir: Direction) -> bool {
        matches!((self, dir), (PaddingOp::Unpad, Direction::Bwd) | (PaddingOp::Pad, Direction::Fwd))
    }
}

impl Op for PaddingOp {
    fn family(&self) -> &'static str {
        "padding"
    }

    fn name(&self) -> &'static str {
        match self {
            PaddingOp::Unpad => "unpad",
            PaddingOp::Pad => "pad",
        }
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        let (packed, hidden) = self.names(dir);
        match (self, dir) {
            (PaddingOp::Unpad, Direction::Fwd) => vec![ArgSpec::op(hidden), ArgSpec::i32("mask")],
            _ if self.scatters(dir) => vec![ArgSpec::op(packed), ArgSpec::i32("indices")],
            _ => vec![ArgSpec::op(hidden), ArgSpec::i32("indices")],
        }
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        let (packed, hidden) = self.names(dir);
        Ok(match (self, dir) {
            (PaddingOp::Unpad, Direction::Fwd) => {
                let h = problem.input("hidden")?;
                let (batch, _, rest, _) = split(&h.shape);
                let nnz = indices_of(&problem.input("mask")?.data).len();
                vec![
                    (ArgSpec::op("packed"), with_rows(nnz, &rest)),
                    (ArgSpec::i32("indices"), vec![nnz]),
                    (ArgSpec::i32("cu_seqlens"), vec![batch + 1]),
                    (ArgSpec::i32("max_seqlen"), vec![1]),
                ]
            }
            _ if self.scatters(dir) => {
                let (batch, seqlen) = dims_param(problem)?;
                let p = problem.input(packed)?;
                let shape = [batch, seqlen].into_iter().chain(p.shape[1..].iter().copied()).collect();
                vec![(ArgSpec::op(hidden), shape)]
            }
            _ => {
                let h = problem.input(hidden)?;
                let nnz = problem.input("indices")?.data.len();
                vec![(ArgSpec::op(packed), with_rows(nnz, &split(&h.shape).2))]
            }
        })
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        // batch and seqlen size the padded side when it is an output.
        &[("batch", 1.0), ("seqlen", 1.0)]
    }

    fn launcher(&self, dir: Direction) -> String {
        match (self, dir) {
            (PaddingOp::Unpad, Direction::Fwd) => "kiln_padding_unpad_fwd".into(),
            _ if self.scatters(dir) => "kiln_padding_pad_fwd".into(),
            _ => "kiln_padding_gather_fwd".into(),
        }
    }

    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        self.base_problem(dir, shape, rng)
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let (packed_name, hidden_name) = self.names(dir);
        let mut out = Arrays::new();
        let spec = self.outputs(dir, problem)?;
        match (self, dir) {
            (PaddingOp::Unpad, Direction::Fwd) => {
                let h = problem.input("hidden")?;
                let (batch, seqlen, _, dim) = split(&h.shape);
                let keep = cpu::keep_from_mask(&problem.input("mask")?.data);
                let u = cpu::unpad(&h.data, &keep, batch, seqlen, dim);
                out.insert("packed".into(), Array::new(spec[0].1.clone(), u.packed));
                out.insert("indices".into(), Array::new(vec![u.indices.len()], as_f64(&u.indices)));
                out.insert("cu_seqlens".into(), Array::new(vec![batch + 1], as_f64(&u.cu_seqlens)));
                out.insert("max_seqlen".into(), Array::new(vec![1], vec![u.max_seqlen as f64]));
            }
            _ => {
                let idx: Vec<usize> = problem.input("indices")?.data.iter().map(|&v| v as usize).collect();
                if self.scatters(dir) {
                    let (batch, seqlen) = dims_param(problem)?;
                    let p = problem.input(packed_name)?;
                    let dim = p.shape[1..].iter().product();
                    out.insert(
                        hidden_name.into(),
                        Array::new(spec[0].1.clone(), cpu::pad(&p.data, &idx, batch * seqlen, dim)),
                    );
                } else {
                    let h = problem.input(hidden_name)?;
                    let dim = split(&h.shape).3;
                    out.insert(packed_name.into(), Array::new(spec[0].1.clone(), cpu::gather(&h.data, &idx, dim)));
                }
            }
        }
        Ok(out)
    }

    fn naive_reductions(&self, _: Direction, _: &Problem, _: DType) -> Result<Arrays> {
        Ok(Arrays::new())
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        let (packed_name, hidden_name) = self.names(dir);
        let dims = || {
            let get = |k: &'static str| {
                params
                    .get(k)
                    .copied()
                    .ok_or(crate::core::error::Error::InvalidValue { arg: k, reason: "missing parameter".into() })
            };
            Ok::<_, crate::core::error::Error>((get("batch")? as usize, get("seqlen")? as usize))
        };
        match (self, dir) {
            (PaddingOp::Unpad, Direction::Fwd) => {
                let u = crate::families::padding::unpad(input(inputs, "hidden")?, Keep::Mask(input(inputs, "mask")?))?;
                let device = u.packed.device();
                *output(outputs, "max_seqlen")? =
                    Tensor::from_vec(vec![u.max_seqlen as i32], &[1])?.to_device(&device)?;
                *output(outputs, "packed")? = u.packed;
                *output(outputs, "indices")? = u.indices;
                *output(outputs, "cu_seqlens")? = u.cu_seqlens;
            }
            _ if self.scatters(dir) => {
                let (batch, seqlen) = dims()?;
                *output(outputs, hidden_name)? = crate::families::padding::pad(
                    input(inputs, packed_name)?,
                    input(inputs, "indices")?,
                    batch,
                    seqlen,
                )?;
            }
            _ => {
                *output(outputs, packed_name)? =
                    crate::families::padding::gather(input(inputs, hidden_name)?, input(inputs, "indices")?)?;
            }
        }
        Ok(())
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let size = dtype.size_in_bytes() as u64;
        let Ok(outs) = self.outputs(dir, problem) else { return 0 };
        let (packed_name, hidden_name) = self.names(dir);
        let elems = |name: &str| -> u64 {
            problem
                .get(name)
                .map(|a| a.data.len() as u64)
                .or_else(|| {
                    outs.iter().find(|(s, _)| s.name == name).map(|(_, sh)| sh.iter().product::<usize>() as u64)
                })
                .unwrap_or(0)
        };
        match (self, dir) {
            // Read the mask and the kept rows, write them packed plus indices and offsets.
            (PaddingOp::Unpad, Direction::Fwd) => {
                let kept = elems("packed");
                elems("mask") * 4 + 2 * kept * size + elems("indices") * 4
            }
            // Read packed rows and indices, write the whole padded tensor.
            _ if self.scatters(dir) => elems(packed_name) * size + elems("indices") * 4 + elems(hidden_name) * size,
            // Read the kept rows and indices, write them packed.
            _ => 2 * elems(packed_name) * size + elems("indices") * 4,
        }
    }

    fn flops(&self, _: Direction, _: &Problem) -> u64 {
        0
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        // Hidden sizes not multiples of 8 (1, 3, 7, 1000) beside BERT's 768.
        vec![vec![1, 1, 1], vec![2, 7, 3], vec![3, 33, 7], vec![4, 64, 768], vec![2, 100, 1000], vec![5, 17, 4, 6]]
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![64, 512, 1024] // 32k token slots, about 16k kept (50% padding), D = 1024.
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![8, 128, 256]
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        let (batch, seqlen, dim) = (5, 23, 3);
        let mask = random_mask(batch, seqlen, rng);
        let keep = cpu::keep_from_mask(&mask);
        let hidden = normal(batch * seqlen * dim, rng);
        let u = cpu::unpad(&hidden, &keep, batch, seqlen, dim);
        let tokens = batch * seqlen;
        let padded = cpu::pad(&u.packed, &u.indices, tokens, dim);
        let mut rows = Vec::new();
        match self {
            PaddingOp::Unpad => {
                // pad∘unpad keeps exactly the kept tokens and zeroes the rest.
                let want: Vec<f64> =
                    hidden.iter().enumerate().map(|(i, &h)| if keep[i / dim] { h } else { 0.0 }).collect();
                rows.push(reference_row(self, "pad(unpad(h)) zeroes exactly the masked tokens", &padded, &want, 0.0));
                // cu_seqlens are the prefix sums of the per-sequence counts.
                let counts: Vec<f64> = (0..batch)
                    .map(|b| keep[b * seqlen..(b + 1) * seqlen].iter().filter(|&&k| k).count() as f64)
                    .collect();
                let diffs: Vec<f64> = u.cu_seqlens.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
                rows.push(reference_row(self, "cu_seqlens are prefix sums of the counts", &diffs, &counts, 0.0));
                let max = counts.iter().fold(0.0f64, |m, &c| m.max(c));
                rows.push(reference_row(self, "max_seqlen is the largest count", &[u.max_seqlen as f64], &[max], 0.0));
                // Lengths give the same result as the prefix mask they describe.
                let lens: Vec<f64> = counts.iter().map(|&c| c.min(seqlen as f64)).collect();
                let by_len = cpu::keep_from_seqlens(&lens, seqlen)
                    .map(|k| cpu::unpad(&hidden, &k, batch, seqlen, dim).cu_seqlens);
                let prefix_mask: Vec<f64> =
                    (0..tokens).map(|t| if ((t % seqlen) as f64) < lens[t / seqlen] { 1.0 } else { 0.0 }).collect();
                let by_mask = cpu::unpad(&hidden, &cpu::keep_from_mask(&prefix_mask), batch, seqlen, dim).cu_seqlens;
                rows.push(reference_row(
                    self,
                    "seqlens equal their prefix mask",
                    &as_f64(&by_len.unwrap_or_default()),
                    &as_f64(&by_mask),
                    0.0,
                ));
                // The backward is pad: <unpad(h), g> = <h, pad(g)>.
                let g = normal(u.packed.len(), rng);
                let lhs = dot(&u.packed, &g);
                let rhs = dot(&hidden, &cpu::pad(&g, &u.indices, tokens, dim));
                rows.push(reference_row(self, "adjoint: <unpad(h), g> = <h, pad(g)>", &[lhs], &[rhs], 1e-12));
            }
            PaddingOp::Pad => {
                // unpad∘pad is the identity on the kept tokens.
                let again = cpu::unpad(&padded, &keep, batch, seqlen, dim);
                rows.push(reference_row(self, "unpad(pad(p)) = p", &again.packed, &u.packed, 0.0));
                // The backward is gather: <pad(p), G> = <p, gather(G)>.
                let big = normal(tokens * dim, rng);
                let lhs = dot(&padded, &big);
                let rhs = dot(&u.packed, &cpu::gather(&big, &u.indices, dim));
                rows.push(reference_row(self, "adjoint: <pad(p), G> = <p, gather(G)>", &[lhs], &[rhs], 1e-12));
                let bad = cpu::check_indices(&[0.0, tokens as f64], tokens, true);
                let dup = cpu::check_indices(&[2.0, 2.0], tokens, true);
                let caught = [bad == Err(cpu::BadIndex::OutOfRange(1)), dup == Err(cpu::BadIndex::Duplicate(1))];
                rows.push(reference_row(
                    self,
                    "bad and repeated indices are caught",
                    &caught.map(|c| c as u8 as f64),
                    &[1.0, 1.0],
                    0.0,
                ));
            }
        }
        rows
    }
}
