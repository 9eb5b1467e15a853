//! The GLU MLP block's registry entries: `glu/mlp_<gate>` for every gate.

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::tensor::Tensor;
use crate::families::glu::mlp::{self, Dims, GateUp, GateUpGrads, Mlp, Mode, reference};
use crate::families::glu::{Glu, GluKind as K, cpu};
use crate::ops::check_row::{CheckRow, central_difference, rms_key};
use crate::ops::params::Params;
use crate::ops::registry::{ArgSpec, Array, Arrays, Direction, Op, Problem, Tensors, input, no_direction, put_output};
use crate::ops::self_check::reference_row;

/// The MLP block with one gate, in the registry.
pub struct MlpOp {
    kind: K,
    name: &'static str,
}

/// `glu/mlp_<gate>` for every gate.
pub fn entries() -> Vec<Box<dyn Op>> {
    K::ALL
        .into_iter()
        .map(|kind| {
            let name: &'static str = Box::leak(format!("mlp_{}", kind.name()).into_boxed_str());
            Box::new(MlpOp { kind, name }) as Box<dyn Op>
        })
        .collect()
}

fn normal(n: usize, sd: f64, rng: &mut StdRng) -> Vec<f64> {
    let d = Normal::new(0.0, sd).expect("sd > 0");
    (0..n).map(|_| d.sample(rng)).collect()
}

const FD_STEP: f64 = 1e-6;
const FD_RTOL: f64 = 1e-6;
const ALPHA_STEP: f64 = 0.25;

/// (T, d, F) of a problem.
fn dims(problem: &Problem) -> Result<Dims> {
    let x = problem.input("x")?;
    let w_d = problem.input("w_d")?;
    Ok(Dims { t: x.shape[0], d: x.shape[1], f: w_d.shape[1] })
}

/// The inputs as f64 slices: x, packed W [2F, d], packed b [2F] (if any), W_d, b_d.
struct Parts {
    x: Vec<f64>,
    w: Vec<f64>,
    b: Option<Vec<f64>>,
    w_d: Vec<f64>,
    b_d: Option<Vec<f64>>,
}

fn parts(problem: &Problem) -> Result<Parts> {
    let get = |n: &'static str| problem.input(n).map(|a| a.data.clone());
    let opt = |n: &str| problem.get(n).map(|a| a.data.clone());
    let f = dims(problem)?.f;
    let b = match (opt("b_g"), opt("b_u")) {
        (None, None) => None,
        (g, u) => Some([g.unwrap_or(vec![0.0; f]), u.unwrap_or(vec![0.0; f])].concat()),
    };
    Ok(Parts { x: get("x")?, w: [get("w_g")?, get("w_u")?].concat(), b, w_d: get("w_d")?, b_d: opt("b_d") })
}

/// What a GEMM in `dtype` actually multiplies: f32 GEMMs run in TF32 (10-bit mantissa
/// inputs, cudarc's choice, like PyTorch's allow_tf32); f16/bf16 inputs are exact.
fn gemm_input(dtype: DType, v: &[f64]) -> Vec<f64> {
    match dtype {
        DType::F32 => v
            .iter()
            .map(|&x| {
                let bits = (x as f32).to_bits();
                let rounded = (bits + 0x0fff + ((bits >> 13) & 1)) & !0x1fff;
                f32::from_bits(rounded) as f64
            })
            .collect(),
        _ => v.to_vec(),
    }
}

fn sq(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x * x).collect()
}

fn root(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(f64::sqrt).collect()
}

fn round(dtype: DType, v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| dtype.round(x)).collect()
}

impl MlpOp {
    fn glu(&self, params: &Params) -> Glu {
        let mut g = Glu::new(self.kind);
        if let Some(&a) = params.get("alpha") {
            g.alpha = a as f32;
        }
        if let Some(&o) = params.get("order") {
            g.order = o as u32;
        }
        g
    }

    fn grad_names(&self, problem: &Problem, dir: Direction) -> Vec<(&'static str, &'static str)> {
        // (output, input whose shape it has)
        let mut v = match dir {
            Direction::Fwd => vec![("y", "x")],
            Direction::Bwd => vec![("dx", "x"), ("dw_g", "w_g"), ("dw_u", "w_u"), ("dw_d", "w_d")],
            // No such direction (outputs, reference and run refuse it).
            Direction::Bwd2 => vec![],
        };
        if dir == Direction::Bwd {
            for (g, i) in [("db_g", "b_g"), ("db_u", "b_u"), ("db_d", "b_d")] {
                if problem.get(i).is_some() {
                    v.push((g, i));
                }
            }
        }
        v
    }
}

impl Op for MlpOp {
    fn family(&self) -> &'static str {
        "glu"
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        let mut v = vec![
            ArgSpec::op("x"),
            ArgSpec::op("w_g"),
            ArgSpec::op("w_u"),
            ArgSpec::op("w_d"),
            ArgSpec::op("b_g").optional(),
            ArgSpec::op("b_u").optional(),
            ArgSpec::op("b_d").optional(),
        ];
        if dir == Direction::Bwd {
            v.push(ArgSpec::op("dy"));
        }
        v
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        let mut v: Vec<(ArgSpec, Vec<usize>)> = self
            .grad_names(problem, dir)
            .into_iter()
            .map(|(name, like)| Ok((ArgSpec { reduction: true, ..ArgSpec::op(name) }, problem.input_shape(like)?)))
            .collect::<Result<_>>()?;
        if dir == Direction::Bwd && self.kind.has_alpha() {
            v.push((ArgSpec::f32_reduction("dalpha"), vec![1]));
        }
        Ok(v)
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        match self.kind {
            K::XAtglu | K::XGeglu | K::XSwiglu => &[("alpha", 0.0), ("order", 1.0)],
            K::Atglu => &[("order", 2.0)],
            _ => &[],
        }
    }

    fn launcher(&self, dir: Direction) -> String {
        format!("cuBLASLt GEMMs + kiln_glu_{}_{dir}", self.kind.name())
    }

    /// `shape` is [T, d, F].
    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let (t, d, f) = (shape[0], shape[1], shape[2]);
        let mut p = Problem::default();
        let mut put = |name: &str, shape: Vec<usize>, sd: f64, rng: &mut StdRng| {
            let n = shape.iter().product();
            p.inputs.insert(name.into(), Array::new(shape, normal(n, sd, rng)));
        };
        put("x", vec![t, d], 1.0, rng);
        put("w_g", vec![f, d], 1.0 / (d as f64).sqrt(), rng);
        put("w_u", vec![f, d], 1.0 / (d as f64).sqrt(), rng);
        put("w_d", vec![d, f], 1.0 / (f as f64).sqrt(), rng);
        put("b_g", vec![f], 0.1, rng);
        put("b_u", vec![f], 0.1, rng);
        put("b_d", vec![d], 0.1, rng);
        if dir == Direction::Bwd {
            put("dy", vec![t, d], 1.0, rng);
        }
        if self.kind.has_alpha() {
            p.params.insert("alpha".into(), rng.random_range(-0.5..0.5));
        }
        p
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let dims = dims(problem)?;
        let p = parts(problem)?;
        let glu = self.glu(&problem.params);
        let fwd = reference::forward_f64(&glu, &p.x, &p.w, p.b.as_deref(), &p.w_d, p.b_d.as_deref(), &dims);
        let mut out = Arrays::new();
        match dir {
            Direction::Fwd => {
                out.insert("y".into(), Array::new(vec![dims.t, dims.d], fwd.y));
            }
            Direction::Bwd => {
                let dy = &problem.input("dy")?.data;
                let r = reference::backward_f64(&glu, &p.x, &p.w, &p.w_d, &fwd.h, dy, &dims);
                self.insert_grads(&mut out, problem, &dims, r.dx, r.dw, r.db, r.dw_down, r.db_down, r.dalpha)?;
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(out)
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, dtype: DType) -> Result<Arrays> {
        let dims = dims(problem)?;
        let (t, d, f) = (dims.t, dims.d, dims.f);
        let p = parts(problem)?;
        let glu = self.glu(&problem.params);
        let g = |v: &[f64]| gemm_input(dtype, v);
        let bias = |mut m: Vec<f64>, b: &Option<Vec<f64>>, cols: usize| {
            if let Some(b) = b {
                m.chunks_mut(cols).for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += b));
            }
            m
        };
        let h = round(dtype, bias(reference::matmul(&g(&p.x), &g(&p.w), (t, d, 2 * f), false, true), &p.b, 2 * f));
        let (a, b) = reference::split(&h, f);
        let z = round(dtype, cpu::forward(glu.kind, glu.alpha as f64, glu.order, &a, &b));
        let mut out = Arrays::new();
        match dir {
            Direction::Fwd => {
                let y = round(dtype, bias(reference::matmul(&g(&z), &g(&p.w_d), (t, f, d), false, true), &p.b_d, d));
                out.insert("y".into(), Array::new(vec![t, d], y));
                out.insert(
                    rms_key("y"),
                    Array::new(vec![t, d], root(reference::matmul(&sq(&z), &sq(&p.w_d), (t, f, d), false, true))),
                );
            }
            Direction::Bwd => {
                let dy = &problem.input("dy")?.data;
                let dz = round(dtype, reference::matmul(&g(dy), &g(&p.w_d), (t, d, f), false, false));
                let dw_down = round(dtype, reference::matmul(&g(dy), &g(&z), (d, t, f), true, false));
                let db_down = round(dtype, reference::column_sums(dy, d));
                let (da, dbv, _) = cpu::backward(glu.kind, glu.alpha as f64, glu.order, &a, &b, &dz);
                let mut dh = Vec::with_capacity(2 * t * f);
                for r in 0..t {
                    dh.extend_from_slice(&da[r * f..(r + 1) * f]);
                    dh.extend_from_slice(&dbv[r * f..(r + 1) * f]);
                }
                let dh = round(dtype, dh);
                let (mut dalpha, mut squares) = (0f32, 0f64);
                for i in 0..t * f {
                    let term = dz[i] * b[i] * cpu::gate(glu.kind, glu.alpha as f64, glu.order, a[i]).2;
                    dalpha += term as f32;
                    squares += term * term;
                }
                let dx = round(dtype, reference::matmul(&g(&dh), &g(&p.w), (t, 2 * f, d), false, false));
                let dw = round(dtype, reference::matmul(&g(&dh), &g(&p.x), (2 * f, t, d), true, false));
                let db = round(dtype, reference::column_sums(&dh, 2 * f));
                self.insert_grads(&mut out, problem, &dims, dx, dw, db, dw_down, db_down, dalpha as f64)?;
                // Root sums of squares of every GEMM's and column sum's terms.
                let mut spread = Arrays::new();
                let rdx = root(reference::matmul(&sq(&dh), &sq(&p.w), (t, 2 * f, d), false, false));
                let rdw = root(reference::matmul(&sq(&dh), &sq(&p.x), (2 * f, t, d), true, false));
                let rdb = root(reference::column_sums(&sq(&dh), 2 * f));
                let rdw_down = root(reference::matmul(&sq(dy), &sq(&z), (d, t, f), true, false));
                let rdb_down = root(reference::column_sums(&sq(dy), d));
                self.insert_grads(&mut spread, problem, &dims, rdx, rdw, rdb, rdw_down, rdb_down, squares.sqrt())?;
                for (name, a) in spread {
                    out.insert(rms_key(&name), a);
                }
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(out)
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        let block = Mlp {
            glu: self.glu(params),
            gate_up: GateUp::Separate {
                w_gate: input(inputs, "w_g")?,
                w_up: input(inputs, "w_u")?,
                b_gate: inputs.get("b_g"),
                b_up: inputs.get("b_u"),
            },
            w_down: input(inputs, "w_d")?,
            b_down: inputs.get("b_d"),
        };
        let x = input(inputs, "x")?;
        let mut put = |name, t: Option<Tensor>| put_output(outputs, name, t);
        match dir {
            Direction::Fwd => put("y", Some(mlp::forward(&block, x, Mode::Inference)?.y)),
            Direction::Bwd => {
                let out = mlp::forward(&block, x, Mode::Training)?;
                let saved = out.saved.ok_or(Error::InvalidValue { arg: "mode", reason: "training saves".into() })?;
                let g = mlp::backward(&block, x, &saved, input(inputs, "dy")?)?;
                put("dx", Some(g.dx))?;
                put("dw_d", Some(g.dw_down))?;
                put("db_d", g.db_down)?;
                put("dalpha", g.dalpha)?;
                match g.gate_up {
                    GateUpGrads::Separate { dw_gate, dw_up, db_gate, db_up } => {
                        put("dw_g", Some(dw_gate))?;
                        put("dw_u", Some(dw_up))?;
                        put("db_g", db_gate)?;
                        put("db_u", db_up)
                    }
                    GateUpGrads::Packed { .. } => unreachable!("separate weights in, separate grads out"),
                }
            }
            Direction::Bwd2 => Err(no_direction(self, dir)),
        }
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let Ok(Dims { t, d, f }) = dims(problem) else { return 0 };
        let (t, d, f, s) = (t as u64, d as u64, f as u64, dtype.size_in_bytes() as u64);
        match dir {
            // x, three weights, h (written, read), z (written, read), y.
            Direction::Fwd => s * (t * d + 3 * f * d + 4 * t * f + 2 * t * f + t * d),
            // Forward's reads again plus dy, dz, dh, dx and three weight gradients.
            Direction::Bwd => s * (2 * t * d + 6 * f * d + 9 * t * f + t * d),
            Direction::Bwd2 => 0,
        }
    }

    fn flops(&self, dir: Direction, problem: &Problem) -> u64 {
        let Ok(Dims { t, d, f }) = dims(problem) else { return 0 };
        let gemms = 6 * (t * d * f) as u64; // 2·T·d·2F + 2·T·F·d
        if dir == Direction::Fwd { gemms } else { 3 * gemms }
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        // [T, d, F]: odd and unaligned sizes, then a small Llama-like ratio.
        vec![vec![1, 1, 1], vec![3, 5, 7], vec![17, 33, 24], vec![64, 96, 256]]
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![8192, 4096, 11008] // Llama-7B's MLP on 8k tokens (issue 4's target shape).
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![32, 64, 128]
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        let problem = self.random_problem(Direction::Bwd, &[2, 3, 4], rng);
        let Ok(reference) = self.reference(Direction::Bwd, &problem) else { return vec![] };
        let dy = problem.inputs["dy"].data.clone();
        let loss = |q: &Problem| -> f64 {
            self.reference(Direction::Fwd, q)
                .map(|r| r["y"].data.iter().zip(&dy).map(|(y, g)| y * g).sum())
                .unwrap_or(f64::NAN)
        };
        let mut rows = Vec::new();
        for (grad, name) in [
            ("dx", "x"),
            ("dw_g", "w_g"),
            ("dw_u", "w_u"),
            ("dw_d", "w_d"),
            ("db_g", "b_g"),
            ("db_u", "b_u"),
            ("db_d", "b_d"),
        ] {
            let base = problem.inputs[name].data.clone();
            let numeric: Vec<f64> = (0..base.len())
                .map(|i| {
                    central_difference(
                        |v| {
                            let mut q = problem.clone();
                            q.inputs.get_mut(name).expect("present").data[i] = v;
                            loss(&q)
                        },
                        base[i],
                        FD_STEP,
                    )
                })
                .collect();
            let analytic = reference.get(grad).map(|a| a.data.clone()).unwrap_or_default();
            rows.push(reference_row(self, format!("finite differences {grad}"), &analytic, &numeric, FD_RTOL));
        }
        if self.kind.has_alpha() {
            // The block takes α as f32, so the difference is taken between f32-exact values
            // (α on a 2^-10 grid, step 1/4); the loss is linear in α, so any step is exact.
            let mut problem = problem.clone();
            let Ok(alpha) = problem.param("alpha").map(|a| (a * 1024.0).round() / 1024.0) else { return rows };
            problem.params.insert("alpha".into(), alpha);
            let Ok(reference) = self.reference(Direction::Bwd, &problem) else { return rows };
            let fd = central_difference(
                |v| {
                    let mut q = problem.clone();
                    q.params.insert("alpha".into(), v);
                    loss(&q)
                },
                alpha,
                ALPHA_STEP,
            );
            let analytic = reference.get("dalpha").map(|a| a.data.clone()).unwrap_or_default();
            rows.push(reference_row(self, "finite differences dalpha", &analytic, &[fd], FD_RTOL));
        }
        rows
    }
}

impl MlpOp {
    #[allow(clippy::too_many_arguments)]
    fn insert_grads(
        &self,
        out: &mut Arrays,
        problem: &Problem,
        dims: &Dims,
        dx: Vec<f64>,
        dw: Vec<f64>,
        db: Vec<f64>,
        dw_down: Vec<f64>,
        db_down: Vec<f64>,
        dalpha: f64,
    ) -> Result<()> {
        let (t, d, f) = (dims.t, dims.d, dims.f);
        out.insert("dx".into(), Array::new(vec![t, d], dx));
        out.insert("dw_g".into(), Array::new(vec![f, d], dw[..f * d].to_vec()));
        out.insert("dw_u".into(), Array::new(vec![f, d], dw[f * d..].to_vec()));
        out.insert("dw_d".into(), Array::new(vec![d, f], dw_down));
        if problem.get("b_g").is_some() {
            out.insert("db_g".into(), Array::new(vec![f], db[..f].to_vec()));
        }
        if problem.get("b_u").is_some() {
            out.insert("db_u".into(), Array::new(vec![f], db[f..].to_vec()));
        }
        if problem.get("b_d").is_some() {
            out.insert("db_d".into(), Array::new(vec![d], db_down));
        }
        if self.kind.has_alpha() {
            out.insert("dalpha".into(), Array::new(vec![1], vec![dalpha]));
        }
        Ok(())
    }
}
