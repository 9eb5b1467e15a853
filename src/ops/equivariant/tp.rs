//! Registry entries of the tensor product and the fused convolution:
//! - `equivariant/tp`: x1 `[batch, dim1]`, x2 `[batch, dim2]`, w `[W]` or `[batch, W]` → out
//!   `[batch, dim_out]`; backward dout → dx1, dx2, dw;
//! - `equivariant/conv`: x `[nodes, dim1]`, y `[edges, dim2]`, w `[W]` or `[edges, W]`, src and
//!   dst `[edges]` (sorted by dst) → out `[nodes, dim_out]`; backward dout → dx, dy, dw.
//!
//! Both take the string parameters `irreps_in1`, `irreps_in2`, `irreps_out` and `mode` (`uvu`
//! or `uvw`). The instruction list is e3nn's ([`TpPlan::with_mode`]): `uvw` is every path the
//! selection rules allow (FullyConnectedTensorProduct), `uvu` every allowed (i1, i2, i_out)
//! with mul_out = mul1; weights in path order, 'element' path and 'component' irrep
//! normalization. Every output element is a sum of many products, so every output is checked
//! with the reduction rule against the naive sums of naive.rs.

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::naive::{NaiveOperands, NaiveSum};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::families::equivariant::tp::{Mode, PathNormalization, TpPlan};
use crate::families::equivariant::{
    EdgeGraph, GraphView, Irreps, LAYOUT_NAMES, UpstreamGrads, conv_on, conv_on_backward, conv_on_double_backward, cpu,
    device_layouts, tensor_product, tensor_product_backward, tensor_product_double_backward,
};
use crate::ops::check_row::{CheckRow, central_difference, rms_key};
use crate::ops::params::Params;
use crate::ops::registry::{ArgSpec, Array, Arrays, Direction, Op, Problem, Tensors, input, no_direction, put_output};
use crate::ops::self_check::reference_row;

/// The two ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpOp {
    /// `tp`: the batched tensor product (row n of x1 with row n of x2).
    Tp,
    /// `conv`: the fused, deterministic graph convolution.
    Conv,
}

/// Both ops, as registry entries.
pub fn entries() -> Vec<Box<dyn Op>> {
    vec![Box::new(TpOp::Tp), Box::new(TpOp::Conv)]
}

/// A fixed configuration of the checks and benchmarks.
struct Config {
    irreps_in1: &'static str,
    irreps_in2: &'static str,
    irreps_out: &'static str,
    mode: &'static str,
    /// One weight vector for every row (else one per row of x2).
    shared: bool,
}

/// The configurations, told apart by dim(irreps_in1): a problem's main input is x1 (x for the
/// convolution) and its width picks the configuration. The first is also the parameters'
/// default; the last is MACE-large (REFERENCE.md §5), for the GPU.
const CONFIGS: [Config; 5] = [
    // MACE-like: channelwise with the edge's harmonics, weights per edge (a radial MLP's).
    Config {
        irreps_in1: "4x0e+4x1o",
        irreps_in2: "1x0e+1x1o+1x2e",
        irreps_out: "4x0e+4x1o+4x2e",
        mode: "uvu",
        shared: false,
    },
    Config {
        irreps_in1: "2x0e+3x1o",
        irreps_in2: "1x0e+1x1o",
        irreps_out: "3x0e+2x1o+1x1e",
        mode: "uvw",
        shared: true,
    },
    Config {
        irreps_in1: "3x0e+2x1o+1x2e",
        irreps_in2: "1x0e+1x1o",
        irreps_out: "3x0e+2x1o+2x1e+1x2e",
        mode: "uvu",
        shared: true,
    },
    Config {
        irreps_in1: "1x0e+2x1o+1x2e",
        irreps_in2: "1x0e+1x1o+1x2e",
        irreps_out: "2x0e+1x1o+1x1e+1x2e",
        mode: "uvw",
        shared: false,
    },
    Config {
        irreps_in1: "128x0e+128x1o+128x2e",
        irreps_in2: "1x0e+1x1o+1x2e+1x3o",
        irreps_out: "128x0e+128x1o+128x2e+128x3o",
        mode: "uvu",
        shared: false,
    },
];

/// Where prepare leaves the convolution's device layouts (LAYOUT_NAMES' order).
fn prepared_name(layout: &str) -> String {
    format!("prepared:graph:{layout}")
}

/// dim(irreps_in1) of the MACE-large configuration.
const MACE_LARGE_DIM1: usize = 128 * (1 + 3 + 5);

fn config_of(dim1: usize) -> &'static Config {
    CONFIGS.iter().find(|c| irreps_dim(c.irreps_in1) == dim1).unwrap_or(&CONFIGS[0])
}

fn irreps_dim(s: &str) -> usize {
    s.parse::<Irreps>().map_or(0, |i| i.dim())
}

fn irreps(params: &Params, name: &'static str) -> Result<Irreps> {
    params.string(name)?.parse().map_err(|e: crate::families::equivariant::IrrepsError| Error::InvalidValue {
        arg: name,
        reason: e.to_string(),
    })
}

/// The plan the parameters describe.
fn plan_of(params: &Params) -> Result<TpPlan> {
    let mode: Mode = params.string("mode")?.parse()?;
    let (a, b, c) = (irreps(params, "irreps_in1")?, irreps(params, "irreps_in2")?, irreps(params, "irreps_out")?);
    TpPlan::with_mode(mode, &a, &b, &c, PathNormalization::Element)
}

fn normal(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// Nodes of the convolution's random graph of `edges` edges: about eight edges per node.
fn nodes_for(edges: usize) -> usize {
    edges / 8 + 1
}

/// A random graph sorted by receiver. With more than one node, node 0 receives nothing (the
/// kernels' empty-row case) and every node may send.
fn sorted_graph(nodes: usize, edges: usize, rng: &mut StdRng) -> (Vec<usize>, Vec<usize>) {
    let first_receiver = usize::from(nodes > 1);
    let mut pairs: Vec<(usize, usize)> =
        (0..edges).map(|_| (rng.random_range(0..nodes), rng.random_range(first_receiver..nodes))).collect();
    pairs.sort_by_key(|p| p.1);
    pairs.into_iter().unzip()
}

fn indices(a: &Array) -> Vec<i64> {
    a.data.iter().map(|&v| v as i64).collect()
}

fn to_f64(v: &[usize]) -> Vec<f64> {
    v.iter().map(|&i| i as f64).collect()
}

/// Central differences (step 1e-3) of the scalar `f` of a problem in each element of its
/// input `name`.
fn central_differences(p: &Problem, name: &'static str, f: impl Fn(&Problem) -> f64) -> Result<Vec<f64>> {
    let base = p.input(name)?.data.clone();
    let at = |i: usize, t: f64| {
        let mut q = p.clone();
        if let Some(a) = q.inputs.get_mut(name) {
            a.data[i] = t;
        }
        f(&q)
    };
    Ok((0..base.len()).map(|i| central_difference(|t| at(i, t), base[i], 1e-3)).collect())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl TpOp {
    /// Names of (x1, x2, dx1, dx2) in this op.
    fn names(self) -> [&'static str; 4] {
        match self {
            TpOp::Tp => ["x1", "x2", "dx1", "dx2"],
            TpOp::Conv => ["x", "y", "dx", "dy"],
        }
    }

    /// The double backward's upstream gradients (shaped as x1, x2, w) and its outputs (the
    /// gradients of x1, x2, w and dout).
    fn bwd2_names(self) -> ([&'static str; 3], [&'static str; 4]) {
        match self {
            TpOp::Tp => (["gdx1", "gdx2", "gdw"], ["gx1", "gx2", "gw", "gdout"]),
            TpOp::Conv => (["gdx", "gdy", "gdw"], ["gx", "gy", "gw", "gdout"]),
        }
    }

    /// Each row of x2's (sender, receiver), checked against the row counts.
    fn rows(self, problem: &Problem) -> Result<Vec<(usize, usize)>> {
        let [_, y, ..] = self.names();
        let n = problem.input_shape(y)?.first().copied().unwrap_or(0);
        match self {
            TpOp::Tp => Ok((0..n).map(|i| (i, i)).collect()),
            TpOp::Conv => {
                let (src, dst) = (indices(problem.input("src")?), indices(problem.input("dst")?));
                let nodes = problem.input_shape("x")?.first().copied().unwrap_or(0) as i64;
                for (arg, v) in [("src", &src), ("dst", &dst)] {
                    if v.len() != n || v.iter().any(|i| !(0..nodes).contains(i)) {
                        return Err(Error::InvalidValue { arg, reason: format!("{n} indices in 0..{nodes}") });
                    }
                }
                Ok(src.iter().zip(&dst).map(|(&s, &d)| (s as usize, d as usize)).collect())
            }
        }
    }

    /// Forward out, backward (dx1, dx2, dw), or double backward (gx1, gx2, gw, gdout) of the
    /// f64 reference.
    fn reference_of(self, dir: Direction, plan: &TpPlan, problem: &Problem) -> Result<Vec<Vec<f64>>> {
        let [xn, yn, ..] = self.names();
        let (x, y, w) = (&problem.input(xn)?.data, &problem.input(yn)?.data, &problem.input("w")?.data);
        let rows = problem.input_shape(xn)?.first().copied().unwrap_or(0);
        let graph = match self {
            TpOp::Tp => None,
            TpOp::Conv => Some((indices(problem.input("src")?), indices(problem.input("dst")?))),
        };
        Ok(match dir {
            Direction::Fwd => vec![match &graph {
                None => cpu::tp_forward(plan, x, y, w, rows)?,
                Some((src, dst)) => cpu::conv_forward(plan, x, y, w, src, dst)?,
            }],
            Direction::Bwd => {
                let dout = &problem.input("dout")?.data;
                let g = match &graph {
                    None => cpu::tp_backward(plan, x, y, w, dout, rows)?,
                    Some((src, dst)) => cpu::conv_backward(plan, x, y, w, src, dst, dout)?,
                };
                vec![g.dx1, g.dx2, g.dw]
            }
            Direction::Bwd2 => {
                let dout = &problem.input("dout")?.data;
                let ([gx, gy, gw], _) = self.bwd2_names();
                let up = cpu::Upstream {
                    gdx1: Some(&problem.input(gx)?.data),
                    gdx2: Some(&problem.input(gy)?.data),
                    gdw: Some(&problem.input(gw)?.data),
                };
                let g = match &graph {
                    None => cpu::tp_double_backward(plan, x, y, w, dout, rows, up)?,
                    Some((src, dst)) => cpu::conv_double_backward(plan, x, y, w, src, dst, dout, up)?,
                };
                vec![g.gx1, g.gx2, g.gw, g.gdout]
            }
        })
    }

    /// Finite differences of every gradient of a small problem of each configuration, and, for
    /// the convolution, the convolution against the tensor product scattered by hand.
    fn reference_checks(self, rng: &mut StdRng) -> Result<Vec<CheckRow>> {
        let mut rows = Vec::new();
        for config in &CONFIGS[..4] {
            let shape = [if self == TpOp::Tp { 3 } else { 12 }, irreps_dim(config.irreps_in1)];
            let p = self.random_problem(Direction::Bwd, &shape, rng);
            let plan = plan_of(&p.params)?;
            let grads = self.reference_of(Direction::Bwd, &plan, &p)?;
            let dout = &p.input("dout")?.data;
            let [xn, yn, dxn, dyn_] = self.names();
            for (k, (name, grad)) in [(xn, dxn), (yn, dyn_), ("w", "dw")].into_iter().enumerate() {
                // The product is linear in each operand: central differences are exact up to rounding.
                let fd = central_differences(&p, name, |q| {
                    self.reference_of(Direction::Fwd, &plan, q).map_or(f64::NAN, |o| dot(&o[0], dout))
                })?;
                let what = format!("finite differences {grad} ({} {})", config.mode, config.irreps_in1);
                rows.push(reference_row(&self, what, &grads[k], &fd, 1e-8));
            }
            rows.extend(self.double_backward_checks(config, rng)?);
            if self == TpOp::Conv {
                let (x, y, w) = (&p.input("x")?.data, &p.input("y")?.data, &p.input("w")?.data);
                let (d1, d2, dk) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim());
                let graph = self.rows(&p)?;
                let nw = plan.weight_numel;
                let mut scattered = vec![0.0; x.len() / d1 * dk];
                for (e, &(s, d)) in graph.iter().enumerate() {
                    let we = if config.shared { &w[..] } else { &w[e * nw..(e + 1) * nw] };
                    let m = cpu::tp_forward(&plan, &x[s * d1..(s + 1) * d1], &y[e * d2..(e + 1) * d2], we, 1)?;
                    for (o, v) in scattered[d * dk..(d + 1) * dk].iter_mut().zip(m) {
                        *o += v;
                    }
                }
                let out = self.reference_of(Direction::Fwd, &plan, &p)?.remove(0);
                let what = format!("conv = tp then scatter-sum ({} {})", config.mode, config.irreps_in1);
                rows.push(reference_row(&self, what, &out, &scattered, 1e-12));
            }
        }
        Ok(rows)
    }
}

impl TpOp {
    /// The double backward against central differences of L = Σ ⟨upstream, backward⟩ (the
    /// backward's gradients weighted by the upstream gradients) in each of x, y, w and dout.
    fn double_backward_checks(self, config: &Config, rng: &mut StdRng) -> Result<Vec<CheckRow>> {
        let shape = [if self == TpOp::Tp { 2 } else { 6 }, irreps_dim(config.irreps_in1)];
        let p = self.random_problem(Direction::Bwd2, &shape, rng);
        let plan = plan_of(&p.params)?;
        let got = self.reference_of(Direction::Bwd2, &plan, &p)?;
        let (upstream, outputs) = self.bwd2_names();
        let weights: Vec<&[f64]> = upstream.iter().map(|n| p.input(n).map(|a| &a.data[..])).collect::<Result<_>>()?;
        let [xn, yn, ..] = self.names();
        let mut rows = Vec::new();
        for (k, name) in [xn, yn, "w", "dout"].into_iter().enumerate() {
            // The backward is linear in each of them: central differences are exact up to rounding.
            let fd = central_differences(&p, name, |q| {
                self.reference_of(Direction::Bwd, &plan, q)
                    .map_or(f64::NAN, |g| g.iter().zip(&weights).map(|(g, u)| dot(g, u)).sum())
            })?;
            let what =
                format!("finite differences {} of the backward ({} {})", outputs[k], config.mode, config.irreps_in1);
            rows.push(reference_row(&self, what, &got[k], &fd, 1e-8));
        }
        Ok(rows)
    }
}

impl Op for TpOp {
    fn family(&self) -> &'static str {
        "equivariant"
    }

    /// The 32- and 16-bit storages, and f64 (f64 math end to end).
    fn dtypes(&self) -> &'static [DType] {
        &DType::FLOATS_AND_F64
    }

    fn name(&self) -> &'static str {
        match self {
            TpOp::Tp => "tp",
            TpOp::Conv => "conv",
        }
    }

    /// Forward, backward and the double backward (force training).
    fn directions(&self) -> &'static [Direction] {
        &Direction::ALL
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        let [x, y, ..] = self.names();
        let mut v = vec![ArgSpec::op(x), ArgSpec::op(y), ArgSpec::op("w")];
        if *self == TpOp::Conv {
            v.extend([ArgSpec::i32("src"), ArgSpec::i32("dst")]);
        }
        if dir != Direction::Fwd {
            v.push(ArgSpec::op("dout"));
        }
        if dir == Direction::Bwd2 {
            v.extend(self.bwd2_names().0.map(ArgSpec::op));
        }
        v
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        let reduction = |name| ArgSpec { reduction: true, ..ArgSpec::op(name) };
        let [x, y, dx, dy] = self.names();
        Ok(match dir {
            Direction::Fwd => {
                let rows = problem.input_shape(x)?.first().copied().unwrap_or(0);
                vec![(reduction("out"), vec![rows, plan_of(&problem.params)?.irreps_out.dim()])]
            }
            Direction::Bwd => vec![
                (reduction(dx), problem.input_shape(x)?),
                (reduction(dy), problem.input_shape(y)?),
                (reduction("dw"), problem.input_shape("w")?),
            ],
            Direction::Bwd2 => {
                let [gx, gy, gw, gdout] = self.bwd2_names().1;
                vec![
                    (reduction(gx), problem.input_shape(x)?),
                    (reduction(gy), problem.input_shape(y)?),
                    (reduction(gw), problem.input_shape("w")?),
                    (reduction(gdout), problem.input_shape("dout")?),
                ]
            }
        })
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        &[]
    }

    fn string_params(&self) -> &'static [(&'static str, &'static str)] {
        const DEFAULTS: &[(&str, &str)] = &[
            ("irreps_in1", CONFIGS[0].irreps_in1),
            ("irreps_in2", CONFIGS[0].irreps_in2),
            ("irreps_out", CONFIGS[0].irreps_out),
            ("mode", CONFIGS[0].mode),
        ];
        DEFAULTS
    }

    fn launcher(&self, dir: Direction) -> String {
        // The safe API runs the batched product as the convolution without a graph.
        format!("kiln_equivariant_conv_{dir}")
    }

    /// tp: shape `[batch, dim1]`, conv: `[edges, dim1]` (a random graph of edges/8 + 1 nodes,
    /// sorted by receiver, node 0 receiving nothing); dim1 = dim(irreps_in1) picks one of the
    /// fixed configurations (others take the first).
    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let rows = shape.first().copied().unwrap_or(1);
        let config = config_of(shape.get(1).copied().unwrap_or(0));
        let mut p = Problem::default();
        for (name, v) in [
            ("irreps_in1", config.irreps_in1),
            ("irreps_in2", config.irreps_in2),
            ("irreps_out", config.irreps_out),
            ("mode", config.mode),
        ] {
            p.params.insert_str(name, v);
        }
        // The configurations are constants whose plans a test builds.
        let Ok(plan) = plan_of(&p.params) else { return p };
        let (d1, d2, dk, nw) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
        let [x, y, ..] = self.names();
        let nodes = match self {
            TpOp::Tp => rows,
            TpOp::Conv => {
                let nodes = nodes_for(rows);
                let (src, dst) = sorted_graph(nodes, rows, rng);
                p.inputs.insert("src".into(), Array::new(vec![rows], to_f64(&src)));
                p.inputs.insert("dst".into(), Array::new(vec![rows], to_f64(&dst)));
                nodes
            }
        };
        p.inputs.insert(x.into(), Array::new(vec![nodes, d1], normal(nodes * d1, rng)));
        p.inputs.insert(y.into(), Array::new(vec![rows, d2], normal(rows * d2, rng)));
        let wshape = if config.shared { vec![nw] } else { vec![rows, nw] };
        let wlen = wshape.iter().product();
        p.inputs.insert("w".into(), Array::new(wshape.clone(), normal(wlen, rng)));
        if dir != Direction::Fwd {
            p.inputs.insert("dout".into(), Array::new(vec![nodes, dk], normal(nodes * dk, rng)));
        }
        if dir == Direction::Bwd2 {
            let [gx, gy, gw] = self.bwd2_names().0;
            p.inputs.insert(gx.into(), Array::new(vec![nodes, d1], normal(nodes * d1, rng)));
            p.inputs.insert(gy.into(), Array::new(vec![rows, d2], normal(rows * d2, rng)));
            p.inputs.insert(gw.into(), Array::new(wshape, normal(wlen, rng)));
        }
        p
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let plan = plan_of(&problem.params)?;
        let values = self.reference_of(dir, &plan, problem)?;
        let spec = self.outputs(dir, problem)?;
        Ok(spec.into_iter().zip(values).map(|((s, shape), v)| (s.name.to_string(), Array::new(shape, v))).collect())
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, dtype: DType) -> Result<Arrays> {
        let plan = plan_of(&problem.params)?;
        let [xn, yn, ..] = self.names();
        let rows = self.rows(problem)?;
        let ops = NaiveOperands {
            x: &problem.input(xn)?.data,
            y: &problem.input(yn)?.data,
            w: &problem.input("w")?.data,
            rows: &rows,
        };
        let nodes = problem.input_shape(xn)?.first().copied().unwrap_or(0);
        let sums: Vec<NaiveSum> = match dir {
            Direction::Fwd => vec![ops.forward(&plan, nodes, dtype)],
            Direction::Bwd => ops.backward(&plan, &problem.input("dout")?.data, dtype).into(),
            Direction::Bwd2 => {
                let [gx, gy, gw] = self.bwd2_names().0;
                let up = [&problem.input(gx)?.data[..], &problem.input(gy)?.data, &problem.input(gw)?.data];
                ops.double_backward(&plan, &problem.input("dout")?.data, up, nodes, dtype).into()
            }
        };
        let mut out = Arrays::new();
        for ((spec, shape), sum) in self.outputs(dir, problem)?.into_iter().zip(sums) {
            out.insert(spec.name.to_string(), Array::new(shape.clone(), sum.values()));
            out.insert(rms_key(spec.name), Array::new(shape, sum.rms()));
        }
        Ok(out)
    }

    /// The convolution's edge layouts, built once on the device (prepare's inputs): a timed run
    /// then measures the products, as a caller reusing its graph over calls runs them.
    fn prepare(&self, _dir: Direction, inputs: &mut Tensors, _params: &Params) -> Result<()> {
        if *self == TpOp::Conv {
            let nodes = input(inputs, "x")?.shape().first().copied().unwrap_or(0);
            if let Some(layouts) = device_layouts(input(inputs, "src")?, input(inputs, "dst")?, nodes)? {
                for (name, t) in LAYOUT_NAMES.into_iter().zip(layouts) {
                    inputs.insert(prepared_name(name), t);
                }
            }
        }
        Ok(())
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        let plan = plan_of(params)?;
        let [xn, yn, dxn, dyn_] = self.names();
        let (x, y, w) = (input(inputs, xn)?, input(inputs, yn)?, input(inputs, "w")?);
        // The convolution's edges: the layouts prepare built, else built (and checked) here.
        let nodes = x.shape().first().copied().unwrap_or(0);
        let built: Option<EdgeGraph>;
        let graph = match LAYOUT_NAMES.map(|n| inputs.get(&prepared_name(n))) {
            _ if *self == TpOp::Tp => None,
            [Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)] => {
                let edges = input(inputs, "src")?.shape().first().copied().unwrap_or(0);
                Some(GraphView::Device { layouts: [a, b, c, d, e, f], edges })
            }
            _ => {
                let g = EdgeGraph::build(input(inputs, "src")?, input(inputs, "dst")?, nodes)?;
                g.check()?;
                built = Some(g);
                built.as_ref().map(EdgeGraph::view)
            }
        };
        let graph =
            || graph.ok_or_else(|| Error::InvalidValue { arg: "graph", reason: "the product has no graph".into() });
        if dir == Direction::Bwd2 {
            let ([gx, gy, gw], [ox, oy, ow, odout]) = self.bwd2_names();
            let up = UpstreamGrads {
                gdx1: Some(input(inputs, gx)?),
                gdx2: Some(input(inputs, gy)?),
                gdw: Some(input(inputs, gw)?),
            };
            let dout = input(inputs, "dout")?;
            let g = match self {
                TpOp::Tp => tensor_product_double_backward(&plan, (x, y, w), dout, up)?,
                TpOp::Conv => conv_on_double_backward(&plan, (x, y, w), nodes, graph()?, dout, up)?,
            };
            put_output(outputs, ox, g.gx1)?;
            put_output(outputs, oy, g.gx2)?;
            put_output(outputs, ow, g.gw)?;
            return put_output(outputs, odout, g.gdout);
        }
        let grads = match (self, dir) {
            (TpOp::Tp, Direction::Fwd) => return put_output(outputs, "out", tensor_product(&plan, x, y, w)?),
            (TpOp::Conv, Direction::Fwd) => {
                return put_output(outputs, "out", conv_on(&plan, (x, y, w), nodes, graph()?)?);
            }
            (TpOp::Tp, Direction::Bwd) => tensor_product_backward(&plan, x, y, w, input(inputs, "dout")?)?,
            (TpOp::Conv, Direction::Bwd) => {
                conv_on_backward(&plan, (x, y, w), nodes, graph()?, input(inputs, "dout")?)?
            }
            (_, Direction::Bwd2) => return Err(no_direction(self, dir)),
        };
        put_output(outputs, dxn, grads.dx1)?;
        put_output(outputs, dyn_, grads.dx2)?;
        put_output(outputs, "dw", grads.dw)
    }

    /// Each operand read once and each result written once (the fused convolution keeps no
    /// per-edge message), plus the two i32 index arrays.
    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let size = dtype.size_in_bytes() as u64;
        let elems = |name: &str| problem.get(name).map_or(0, |a| a.data.len() as u64);
        let [x, y, ..] = self.names();
        let operands = elems(x) + elems(y) + elems("w");
        let out = problem.get(x).map_or(0, |a| a.shape[0] as u64)
            * plan_of(&problem.params).map_or(0, |p| p.irreps_out.dim() as u64);
        let floats = match dir {
            // Read x, y, w; write out.
            Direction::Fwd => operands + out,
            // Read x, y, w and dout; write dx, dy, dw.
            Direction::Bwd => 2 * operands + out,
            // Read x, y, w, dout and the upstream gdx, gdy, gdw; write the gradients of x, y, w
            // and dout (once each: a fused double backward's floor).
            Direction::Bwd2 => 3 * operands + 2 * out,
        };
        floats * size + 4 * (elems("src") + elems("dst"))
    }

    /// OpenEquivariance's count: per row of x2, 3·nnz(C)·m1·m2 per path plus the weight
    /// contraction ([`TpPlan::flops_forward`]); the backward twice that, as in
    /// benches/equivariant.rs.
    fn flops(&self, dir: Direction, problem: &Problem) -> u64 {
        let [_, y, ..] = self.names();
        let rows = problem.get(y).map_or(0, |a| a.shape[0] as u64);
        let per_row = plan_of(&problem.params).map_or(0, |p| p.flops_forward());
        match dir {
            Direction::Fwd => rows * per_row,
            Direction::Bwd => 2 * rows * per_row,
            // gdout's three products, and two for each of gx, gy, gw.
            Direction::Bwd2 => 9 * rows * per_row,
        }
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        let dims: Vec<usize> = CONFIGS.iter().map(|c| irreps_dim(c.irreps_in1)).collect();
        let mut shapes = match self {
            TpOp::Tp => vec![vec![1, dims[0]], vec![7, dims[0]], vec![5, dims[1]], vec![33, dims[2]], vec![3, dims[3]]],
            // Zero edges; one node with a self-loop; small graphs with a node receiving nothing.
            TpOp::Conv => vec![
                vec![0, dims[0]],
                vec![1, dims[0]],
                vec![17, dims[0]],
                vec![40, dims[1]],
                vec![23, dims[2]],
                vec![31, dims[3]],
            ],
        };
        // Past the emulator's budget (tests/suite/common.rs): a GPU-only size.
        shapes.push(vec![2048, MACE_LARGE_DIM1]);
        shapes
    }

    /// MACE-large (REFERENCE.md §5): the convolution on a random graph of 100k edges.
    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![100_000, MACE_LARGE_DIM1]
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![256, irreps_dim(CONFIGS[0].irreps_in1)]
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        self.reference_checks(rng)
            .unwrap_or_else(|e| vec![reference_row(self, format!("reference failed: {e}"), &[1.0], &[0.0], 0.0)])
    }
}
