//! The norm family's registry entries: `norm/layernorm` and `norm/rmsnorm`.

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::families::norm::{Norm, NormKind, Stats, StatsRef, cpu};
use crate::ops::check_row::{CheckRow, central_difference, rms_key};
use crate::ops::params::Params;
use crate::ops::registry::{ArgSpec, Array, Arrays, Direction, Op, Problem, Tensors, input, no_direction, put_output};
use crate::ops::self_check::reference_row;

/// One normalisation in the registry.
pub struct NormOp(pub NormKind);

/// Both norm ops, as registry entries.
pub fn entries() -> Vec<Box<dyn Op>> {
    vec![Box::new(NormOp(NormKind::LayerNorm)), Box::new(NormOp(NormKind::RmsNorm))]
}

const EPS_DEFAULT: f64 = 1e-5;
/// Finite-difference step and tolerance (the loss is smooth; eps keeps rstd bounded).
const FD_STEP: f64 = 1e-6;
const FD_RTOL: f64 = 1e-6;

fn normal(n: usize, sd: f64, rng: &mut StdRng) -> Vec<f64> {
    let d = Normal::new(0.0, sd).expect("sd > 0");
    (0..n).map(|_| d.sample(rng)).collect()
}

fn rows_dim(shape: &[usize]) -> (usize, usize) {
    let dim = shape.last().copied().unwrap_or(1);
    (shape.iter().product::<usize>() / dim.max(1), dim)
}

/// The problem's inputs as f64 slices (optional ones None) and eps.
struct Parts<'a> {
    x: &'a Array,
    residual: Option<&'a [f64]>,
    gamma: Option<&'a [f64]>,
    beta: Option<&'a [f64]>,
    eps: f64,
}

fn parts(problem: &Problem) -> Result<Parts<'_>> {
    let data = |n: &str| problem.get(n).map(|a| a.data.as_slice());
    Ok(Parts {
        x: problem.input("x")?,
        residual: data("residual"),
        gamma: data("gamma"),
        beta: data("beta"),
        // The kernel sees eps as f32.
        eps: problem.params.get("eps").copied().unwrap_or(EPS_DEFAULT) as f32 as f64,
    })
}

/// Where prepare() leaves the forward's statistics for timed backward runs (names no input
/// spec uses, so `kiln run` and the checks never see them).
const PREPARED_MEAN: &str = "prepared:mean";
const PREPARED_RSTD: &str = "prepared:rstd";

impl NormOp {
    /// The op's Norm over its optional γ/β inputs and eps parameter.
    fn norm<'a>(&self, inputs: &'a Tensors, params: &Params) -> Norm<'a> {
        let eps = params.get("eps").copied().unwrap_or(EPS_DEFAULT) as f32;
        Norm { kind: self.0, eps, gamma: inputs.get("gamma"), beta: inputs.get("beta") }
    }

    fn forward_ref(&self, p: &Parts) -> cpu::Forward {
        let (_, dim) = rows_dim(&p.x.shape);
        cpu::forward(self.0, &p.x.data, p.residual, p.gamma, p.beta, dim, p.eps)
    }

    /// Σ dy·y + Σ dres·s: the loss whose gradients backward computes.
    fn loss(&self, p: &Parts, dy: &[f64], dres: &[f64]) -> f64 {
        let f = self.forward_ref(p);
        f.y.iter().zip(dy).map(|(a, b)| a * b).sum::<f64>() + f.s.iter().zip(dres).map(|(a, b)| a * b).sum::<f64>()
    }
}

impl Op for NormOp {
    fn family(&self) -> &'static str {
        "norm"
    }

    fn name(&self) -> &'static str {
        match self.0 {
            NormKind::LayerNorm => "layernorm",
            NormKind::RmsNorm => "rmsnorm",
        }
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        let mut v = vec![
            ArgSpec::op("x"),
            ArgSpec::op("residual").optional(),
            ArgSpec::f32("gamma").optional(),
            ArgSpec::f32("beta").optional(),
        ];
        if dir == Direction::Bwd {
            v.push(ArgSpec::op("dy"));
            v.push(ArgSpec::op("dresidual_out").optional());
        }
        v
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        let x = problem.input("x")?;
        let (rows, dim) = rows_dim(&x.shape);
        let has = |n: &str| problem.get(n).is_some();
        let mut v = Vec::new();
        match dir {
            Direction::Fwd => {
                v.push((ArgSpec::op("y"), x.shape.clone()));
                if has("residual") {
                    v.push((ArgSpec::op("residual_out"), x.shape.clone()));
                }
                if self.0 == NormKind::LayerNorm {
                    v.push((ArgSpec::f32("mean"), vec![rows]));
                }
                v.push((ArgSpec::f32("rstd"), vec![rows]));
            }
            Direction::Bwd => {
                v.push((ArgSpec::op("dx"), x.shape.clone()));
                if has("residual") {
                    v.push((ArgSpec::op("dresidual"), x.shape.clone()));
                }
                if has("gamma") {
                    v.push((ArgSpec::f32_reduction("dgamma"), vec![dim]));
                }
                if has("beta") {
                    v.push((ArgSpec::f32_reduction("dbeta"), vec![dim]));
                }
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(v)
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        &[("eps", EPS_DEFAULT)]
    }

    fn launcher(&self, dir: Direction) -> String {
        format!("kiln_norm_{}_{dir}", self.name())
    }

    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let n: usize = shape.iter().product();
        let (rows, dim) = rows_dim(shape);
        let mut p = Problem::default();
        p.params.insert("eps".into(), EPS_DEFAULT);
        // Rows with their own offset and scale, so mean and rstd both matter.
        let offsets: Vec<f64> = (0..rows).map(|_| rng.random_range(-2.0..2.0)).collect();
        let scales: Vec<f64> = (0..rows).map(|_| rng.random_range(0.5..2.0)).collect();
        let x: Vec<f64> =
            normal(n, 1.0, rng).iter().enumerate().map(|(i, v)| offsets[i / dim] + scales[i / dim] * v).collect();
        p.inputs.insert("x".into(), Array::new(shape.to_vec(), x));
        p.inputs.insert("residual".into(), Array::new(shape.to_vec(), normal(n, 0.5, rng)));
        p.inputs.insert("gamma".into(), Array::new(vec![dim], (0..dim).map(|_| rng.random_range(0.5..1.5)).collect()));
        p.inputs.insert("beta".into(), Array::new(vec![dim], normal(dim, 0.1, rng)));
        if dir == Direction::Bwd {
            p.inputs.insert("dy".into(), Array::new(shape.to_vec(), normal(n, 1.0, rng)));
            p.inputs.insert("dresidual_out".into(), Array::new(shape.to_vec(), normal(n, 1.0, rng)));
        }
        p
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let p = parts(problem)?;
        let (rows, dim) = rows_dim(&p.x.shape);
        let shape = p.x.shape.clone();
        let f = self.forward_ref(&p);
        let mut out = Arrays::new();
        match dir {
            Direction::Fwd => {
                out.insert("y".into(), Array::new(shape.clone(), f.y));
                if p.residual.is_some() {
                    out.insert("residual_out".into(), Array::new(shape, f.s));
                }
                if self.0 == NormKind::LayerNorm {
                    out.insert("mean".into(), Array::new(vec![rows], f.mean));
                }
                out.insert("rstd".into(), Array::new(vec![rows], f.rstd));
            }
            Direction::Bwd => {
                let dy = &problem.input("dy")?.data;
                let dro = problem.get("dresidual_out").map(|a| a.data.as_slice());
                let b = cpu::backward(self.0, dy, &f.s, (&f.mean, &f.rstd), p.gamma, dro, dim);
                out.insert("dx".into(), Array::new(shape.clone(), b.ds.clone()));
                if p.residual.is_some() {
                    out.insert("dresidual".into(), Array::new(shape, b.ds));
                }
                if p.gamma.is_some() {
                    out.insert("dgamma".into(), Array::new(vec![dim], b.dgamma));
                }
                if p.beta.is_some() {
                    out.insert("dbeta".into(), Array::new(vec![dim], b.dbeta));
                }
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(out)
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, _: DType) -> Result<Arrays> {
        let mut out = Arrays::new();
        if dir == Direction::Fwd {
            return Ok(out);
        }
        let p = parts(problem)?;
        let (rows, dim) = rows_dim(&p.x.shape);
        let f = self.forward_ref(&p);
        let dy = &problem.input("dy")?.data;
        let (mut dg, mut db) = (vec![0f32; dim], vec![0f32; dim]);
        let (mut dg2, mut db2) = (vec![0f64; dim], vec![0f64; dim]);
        // Naive low precision: s, mean and rstd as f32 values, like the saved statistics.
        let f32r = |v: f64| v as f32 as f64;
        for r in 0..rows {
            for c in 0..dim {
                let i = r * dim + c;
                let xhat = (f32r(f.s[i]) - f32r(f.mean[r])) * f32r(f.rstd[r]);
                dg[c] += (dy[i] * xhat) as f32;
                db[c] += dy[i] as f32;
                dg2[c] += (dy[i] * xhat).powi(2);
                db2[c] += dy[i] * dy[i];
            }
        }
        let wide = |v: Vec<f32>| Array::new(vec![dim], v.into_iter().map(f64::from).collect());
        let root = |v: Vec<f64>| Array::new(vec![dim], v.into_iter().map(f64::sqrt).collect());
        out.insert("dgamma".into(), wide(dg));
        out.insert("dbeta".into(), wide(db));
        out.insert(rms_key("dgamma"), root(dg2));
        out.insert(rms_key("dbeta"), root(db2));
        Ok(out)
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        let norm = self.norm(inputs, params);
        let x = input(inputs, "x")?;
        let residual = inputs.get("residual");
        let mut put = |name, t| put_output(outputs, name, t);
        match dir {
            Direction::Fwd => {
                let f = crate::families::norm::forward(&norm, x, residual, residual.is_some())?;
                put("y", Some(f.y))?;
                put("residual_out", f.residual_out)?;
                put("mean", f.stats.mean)?;
                put("rstd", Some(f.stats.rstd))
            }
            Direction::Bwd => {
                // The statistics prepare() left, or a forward's (kiln run, check).
                let computed: Stats;
                let stats = match inputs.get(PREPARED_RSTD) {
                    Some(rstd) => StatsRef { mean: inputs.get(PREPARED_MEAN), rstd },
                    None => {
                        computed = crate::families::norm::forward(&norm, x, residual, false)?.stats;
                        StatsRef { mean: computed.mean.as_ref(), rstd: &computed.rstd }
                    }
                };
                let dresidual_out = inputs.get("dresidual_out");
                let g = crate::families::norm::backward_with(
                    &norm,
                    input(inputs, "dy")?,
                    x,
                    residual,
                    stats,
                    dresidual_out,
                )?;
                put("dx", Some(g.dx))?;
                put("dresidual", g.dresidual)?;
                put("dgamma", g.dgamma)?;
                put("dbeta", g.dbeta)
            }
            Direction::Bwd2 => Err(no_direction(self, dir)),
        }
    }

    fn prepare(&self, dir: Direction, inputs: &mut Tensors, params: &Params) -> Result<()> {
        if dir == Direction::Bwd {
            let norm = self.norm(inputs, params);
            let x = input(inputs, "x")?;
            let stats = crate::families::norm::forward(&norm, x, inputs.get("residual"), false)?.stats;
            if let Some(mean) = stats.mean {
                inputs.insert(PREPARED_MEAN.into(), mean);
            }
            inputs.insert(PREPARED_RSTD.into(), stats.rstd);
        }
        Ok(())
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let size = dtype.size_in_bytes() as u64;
        let n = problem.get("x").map_or(0, |a| a.data.len()) as u64;
        let has = |k: &str| problem.get(k).is_some() as u64;
        let rows = problem.get("x").map_or(0, |a| rows_dim(&a.shape).0) as u64;
        match dir {
            // Read x (+ residual), write y (+ residual_out) and the f32 statistics.
            Direction::Fwd => n * size * (2 + 2 * has("residual")) + rows * 8,
            // Read dy, x (+ residual, dresidual_out), write dx (+ dresidual); read the statistics.
            Direction::Bwd => n * size * (3 + 2 * has("residual") + has("dresidual_out")) + rows * 8,
            Direction::Bwd2 => 0,
        }
    }

    fn flops(&self, dir: Direction, problem: &Problem) -> u64 {
        let n = problem.get("x").map_or(0, |a| a.data.len()) as u64;
        n * if dir == Direction::Fwd { 8 } else { 14 }
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        // Hidden sizes from 1 to 65536, not multiples of 8 or of a block included.
        vec![vec![1, 1], vec![3, 7], vec![5, 1000], vec![2, 3, 768], vec![4, 4097], vec![333, 128], vec![2, 65536]]
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![16384, 4096]
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![256, 1024]
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        let mut rows = Vec::new();
        let problem = self.random_problem(Direction::Bwd, &[3, 5], rng);
        let Ok(p) = parts(&problem) else { return rows };
        let dy = problem.inputs["dy"].data.clone();
        let dres = problem.inputs["dresidual_out"].data.clone();
        let Ok(reference) = self.reference(Direction::Bwd, &problem) else { return rows };
        // Finite differences of the loss for every input with a gradient.
        for (input_name, grad_name) in [("x", "dx"), ("residual", "dresidual"), ("gamma", "dgamma"), ("beta", "dbeta")]
        {
            let base = problem.inputs[input_name].data.clone();
            let numeric: Vec<f64> = (0..base.len())
                .map(|i| {
                    central_difference(
                        |v| {
                            let mut q = problem.clone();
                            q.inputs.get_mut(input_name).expect("present").data[i] = v;
                            parts(&q).map(|pq| self.loss(&pq, &dy, &dres)).unwrap_or(f64::NAN)
                        },
                        base[i],
                        FD_STEP,
                    )
                })
                .collect();
            let analytic = reference.get(grad_name).map(|a| a.data.clone()).unwrap_or_default();
            rows.push(reference_row(self, format!("finite differences {grad_name}"), &analytic, &numeric, FD_RTOL));
        }
        // A constant row normalises to β exactly, with no NaN.
        let dim = 6;
        let beta: Vec<f64> = normal(dim, 1.0, rng);
        let c = cpu::forward(self.0, &[7.5; 6], None, None, Some(&beta), dim, p.eps);
        let want = match self.0 {
            NormKind::LayerNorm => beta.clone(),
            NormKind::RmsNorm => beta.iter().map(|b| b + 7.5 / (7.5f64 * 7.5 + p.eps).sqrt()).collect(),
        };
        rows.push(reference_row(self, "constant row gives its closed form (beta for LayerNorm)", &c.y, &want, 1e-14));
        rows
    }
}
