//! The GLU family's registry entries: one [`Op`] per [`GluKind`] (the MLP block has its
//! own, in `mlp.rs`).

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::tensor::Tensor;
use crate::families::activation::{ActivationKind, Scalars};
use crate::families::glu::{GateHalf, Glu, GluInput, GluInputGrads, GluKind as K, cpu};
use crate::ops::check_row::{CheckRow, central_difference, rms_key};
use crate::ops::params::Params;
use crate::ops::registry::{ArgSpec, Array, Arrays, Direction, Op, Problem, Tensors, input, no_direction, put_output};
use crate::ops::self_check::reference_row;

/// One fused GLU op in the registry.
pub struct GluOp(pub K);

/// Every GLU op, as registry entries.
pub fn entries() -> Vec<Box<dyn Op>> {
    K::ALL.into_iter().map(|k| Box::new(GluOp(k)) as Box<dyn Op>).collect()
}

/// `gate_half` parameter values (`kiln run --param gate_half=first|second`).
pub const GATE_FIRST: f64 = 0.0;
/// See [`GATE_FIRST`].
pub const GATE_SECOND: f64 = 1.0;

const FD_STEP: f64 = 1e-5;
const FD_RTOL: f64 = 1e-7;
const IDENTITY_RTOL: f64 = 1e-14;

fn normal(n: usize, sd: f64, rng: &mut StdRng) -> Vec<f64> {
    let d = Normal::new(0.0, sd).expect("sd > 0");
    (0..n).map(|_| d.sample(rng)).collect()
}

/// The same problem with a and b packed into `ab [rows, 2F]` with the gate in `gate`.
pub fn packed_problem(problem: &Problem, gate: GateHalf) -> Result<Problem> {
    let mut p = problem.clone();
    let (a, b) = (problem.input("a")?, problem.input("b")?);
    let f = *a.shape.last().unwrap_or(&1);
    let (first, second) = if gate == GateHalf::First { (a, b) } else { (b, a) };
    let mut data = Vec::with_capacity(2 * a.data.len());
    for r in 0..a.data.len() / f.max(1) {
        data.extend_from_slice(&first.data[r * f..(r + 1) * f]);
        data.extend_from_slice(&second.data[r * f..(r + 1) * f]);
    }
    let mut shape = a.shape.clone();
    *shape.last_mut().expect("non-empty") = 2 * f;
    p.inputs.remove("a");
    p.inputs.remove("b");
    p.inputs.insert("ab".into(), Array::new(shape, data));
    p.params.insert("gate_half".into(), if gate == GateHalf::First { GATE_FIRST } else { GATE_SECOND });
    Ok(p)
}

/// (a, b) of a problem in either layout, and the gate half if packed.
fn operands(problem: &Problem) -> Result<(Array, Array, Option<GateHalf>)> {
    if let Some(ab) = problem.get("ab") {
        let gate = gate_of(&problem.params)?;
        let f = ab.shape.last().copied().unwrap_or(0) / 2;
        let mut shape = ab.shape.clone();
        *shape.last_mut().expect("non-empty") = f;
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for row in ab.data.chunks(2 * f.max(1)) {
            first.extend_from_slice(&row[..f]);
            second.extend_from_slice(&row[f..]);
        }
        let (a, b) = if gate == GateHalf::First { (first, second) } else { (second, first) };
        Ok((Array::new(shape.clone(), a), Array::new(shape, b), Some(gate)))
    } else {
        Ok((problem.input("a")?.clone(), problem.input("b")?.clone(), None))
    }
}

fn gate_of(params: &Params) -> Result<GateHalf> {
    match params.get("gate_half").copied().unwrap_or(GATE_FIRST) {
        v if v == GATE_FIRST => Ok(GateHalf::First),
        v if v == GATE_SECOND => Ok(GateHalf::Second),
        v => {
            Err(Error::InvalidValue { arg: "gate_half", reason: format!("expected first (0) or second (1), got {v}") })
        }
    }
}

impl GluOp {
    fn glu(&self, params: &Params) -> Glu {
        let mut g = Glu::new(self.0);
        if let Some(&a) = params.get("alpha") {
            g.alpha = a as f32;
        }
        if let Some(&o) = params.get("order") {
            g.order = o as u32;
        }
        g
    }

    /// (alpha as the kernel sees it, order).
    fn scalars(&self, problem: &Problem) -> (f64, u32) {
        let g = self.glu(&problem.params);
        (g.alpha as f64, g.order)
    }
}

/// Interleaves per-half arrays back into `[rows, 2F]` in the order the gate half says.
fn repack(da: &[f64], db: &[f64], f: usize, gate: GateHalf) -> Vec<f64> {
    let (first, second) = if gate == GateHalf::First { (da, db) } else { (db, da) };
    let mut out = Vec::with_capacity(2 * da.len());
    for r in 0..da.len() / f.max(1) {
        out.extend_from_slice(&first[r * f..(r + 1) * f]);
        out.extend_from_slice(&second[r * f..(r + 1) * f]);
    }
    out
}

impl Op for GluOp {
    fn family(&self) -> &'static str {
        "glu"
    }

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        let mut v = vec![ArgSpec::op("a").optional(), ArgSpec::op("b").optional(), ArgSpec::op("ab").optional()];
        if dir == Direction::Bwd {
            v.push(ArgSpec::op("dy"));
        }
        v
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        let (a, _, gate) = operands(problem)?;
        Ok(match dir {
            Direction::Fwd => vec![(ArgSpec::op("y"), a.shape.clone())],
            Direction::Bwd => {
                let mut v = match gate {
                    Some(_) => vec![(ArgSpec::op("dab"), problem.input("ab")?.shape.clone())],
                    None => vec![(ArgSpec::op("da"), a.shape.clone()), (ArgSpec::op("db"), a.shape.clone())],
                };
                if self.0.has_alpha() {
                    v.push((ArgSpec::f32_reduction("dalpha"), vec![1]));
                }
                v
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        })
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        match self.0 {
            K::XAtglu | K::XGeglu | K::XSwiglu => &[("alpha", 0.0), ("order", 1.0), ("gate_half", GATE_FIRST)],
            K::Atglu => &[("order", 2.0), ("gate_half", GATE_FIRST)],
            _ => &[("gate_half", GATE_FIRST)],
        }
    }

    fn launcher(&self, dir: Direction) -> String {
        format!("kiln_glu_{}_{dir}", self.0.name())
    }

    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let n = shape.iter().product();
        let mut p = Problem::default();
        p.inputs.insert("a".into(), Array::new(shape.to_vec(), normal(n, 2.0, rng)));
        p.inputs.insert("b".into(), Array::new(shape.to_vec(), normal(n, 1.0, rng)));
        if dir == Direction::Bwd {
            p.inputs.insert("dy".into(), Array::new(shape.to_vec(), normal(n, 1.0, rng)));
        }
        if self.0.has_alpha() {
            p.params.insert("alpha".into(), rng.random_range(-0.5..0.5));
        }
        if self.0.has_order() {
            p.params.insert("order".into(), self.0.default_order() as f64);
        }
        p
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let (a, b, gate) = operands(problem)?;
        let (alpha, order) = self.scalars(problem);
        let mut out = Arrays::new();
        match dir {
            Direction::Fwd => {
                out.insert(
                    "y".into(),
                    Array::new(a.shape.clone(), cpu::forward(self.0, alpha, order, &a.data, &b.data)),
                );
            }
            Direction::Bwd => {
                let dy = &problem.input("dy")?.data;
                let (da, db, dalpha) = cpu::backward(self.0, alpha, order, &a.data, &b.data, dy);
                match gate {
                    Some(g) => {
                        let f = *a.shape.last().unwrap_or(&1);
                        out.insert(
                            "dab".into(),
                            Array::new(problem.input("ab")?.shape.clone(), repack(&da, &db, f, g)),
                        );
                    }
                    None => {
                        out.insert("da".into(), Array::new(a.shape.clone(), da));
                        out.insert("db".into(), Array::new(a.shape.clone(), db));
                    }
                }
                if self.0.has_alpha() {
                    out.insert("dalpha".into(), Array::new(vec![1], vec![dalpha]));
                }
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(out)
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, _: DType) -> Result<Arrays> {
        let mut out = Arrays::new();
        if dir == Direction::Fwd || !self.0.has_alpha() {
            return Ok(out);
        }
        let (a, b, _) = operands(problem)?;
        let (alpha, order) = self.scalars(problem);
        let dy = &problem.input("dy")?.data;
        let (mut acc, mut squares) = (0f32, 0f64);
        for ((&a, &b), &g) in a.data.iter().zip(&b.data).zip(dy) {
            let term = g * b * cpu::gate(self.0, alpha, order, a).2;
            acc += term as f32;
            squares += term * term;
        }
        out.insert("dalpha".into(), Array::new(vec![1], vec![acc as f64]));
        out.insert(rms_key("dalpha"), Array::new(vec![1], vec![squares.sqrt()]));
        Ok(out)
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        let glu = self.glu(params);
        let operands = match inputs.get("ab") {
            Some(ab) => GluInput::Packed { ab, gate: gate_of(params)? },
            None => GluInput::Separate { a: input(inputs, "a")?, b: input(inputs, "b")? },
        };
        let mut put = |name, t: Tensor| put_output(outputs, name, t);
        match dir {
            Direction::Fwd => put("y", crate::families::glu::forward(&glu, operands)?),
            Direction::Bwd => {
                let g = crate::families::glu::backward(&glu, operands, input(inputs, "dy")?)?;
                match g.input {
                    GluInputGrads::Separate { da, db } => {
                        put("da", da)?;
                        put("db", db)?;
                    }
                    GluInputGrads::Packed { dab } => put("dab", dab)?,
                }
                put_output(outputs, "dalpha", g.dalpha)
            }
            Direction::Bwd2 => Err(no_direction(self, dir)),
        }
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let n = operands(problem).map_or(0, |(a, _, _)| a.data.len()) as u64;
        let size = dtype.size_in_bytes() as u64;
        // Forward: read a, b; write y. Backward: read a, b, dy; write da, db.
        n * size * if dir == Direction::Fwd { 3 } else { 5 }
    }

    fn flops(&self, dir: Direction, problem: &Problem) -> u64 {
        let n = operands(problem).map_or(0, |(a, _, _)| a.data.len()) as u64;
        n * if dir == Direction::Fwd { 20 } else { 40 }
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        // F odd, F not a multiple of 8, long rows, many rows; F = 2730 (even, not a multiple of 8:
        // the 16-bit 4-byte path).
        vec![vec![1, 1], vec![3, 7], vec![5, 11], vec![64, 1000], vec![1027, 1021], vec![2, 3, 8], vec![7, 2730]]
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![8192, 8192] // rows·F = 2^26.
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![256, 1024]
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        let mut rows = Vec::new();
        let orders: Vec<u32> = if self.0.has_order() { vec![1, 2] } else { vec![self.0.default_order()] };
        for order in orders {
            let alpha = if self.0.has_alpha() { rng.random_range(-0.5..0.5) } else { 0.0 };
            let n = 64;
            let a: Vec<f64> = normal(n, 2.0, rng);
            let b = normal(n, 1.0, rng);
            let dy = normal(n, 1.0, rng);
            // Stay clear of ReGLU's kink at 0.
            let a: Vec<f64> = a.into_iter().map(|v| if v.abs() < 1e-3 { 0.5 } else { v }).collect();
            let (da, db, dalpha) = cpu::backward(self.0, alpha, order, &a, &b, &dy);
            let fd_da: Vec<f64> = (0..n)
                .map(|i| dy[i] * b[i] * central_difference(|v| cpu::gate(self.0, alpha, order, v).0, a[i], FD_STEP))
                .collect();
            let fd_db: Vec<f64> = (0..n).map(|i| dy[i] * cpu::gate(self.0, alpha, order, a[i]).0).collect();
            rows.push(reference_row(self, format!("finite differences da (order {order})"), &da, &fd_da, FD_RTOL));
            rows.push(reference_row(self, format!("db = dy·h(a) (order {order})"), &db, &fd_db, IDENTITY_RTOL));
            if self.0.has_alpha() {
                let loss =
                    |al: f64| cpu::forward(self.0, al, order, &a, &b).iter().zip(&dy).map(|(y, g)| y * g).sum::<f64>();
                let fd = central_difference(loss, alpha, FD_STEP);
                rows.push(reference_row(
                    self,
                    format!("finite differences dalpha (order {order})"),
                    &[dalpha],
                    &[fd],
                    FD_RTOL,
                ));
            }
        }
        rows.extend(identities(self, rng));
        rows
    }
}

/// Ties each gate to the activation family and to the packed layouts.
fn identities(op: &GluOp, rng: &mut StdRng) -> Vec<CheckRow> {
    let n = 256;
    let a = normal(n, 2.0, rng);
    let b = normal(n, 1.0, rng);
    let s = Scalars::default();
    let act = |k: ActivationKind| -> Vec<f64> {
        a.iter().zip(&b).map(|(&a, &b)| crate::families::activation::cpu::f(k, &s, 0.0, a) * b).collect()
    };
    let y = |k: K, alpha: f64, order: u32| cpu::forward(k, alpha, order, &a, &b);
    let mut rows = Vec::new();
    let mut same =
        |what: &str, got: Vec<f64>, want: Vec<f64>| rows.push(reference_row(op, what, &got, &want, IDENTITY_RTOL));
    match op.0 {
        K::Swiglu => same("swiglu equals silu(a)·b", y(K::Swiglu, 0.0, 1), act(ActivationKind::Silu)),
        K::Geglu => same("geglu equals gelu(a)·b", y(K::Geglu, 0.0, 1), act(ActivationKind::Gelu)),
        K::GegluTanh => {
            same("geglu_tanh equals gelu_tanh(a)·b", y(K::GegluTanh, 0.0, 1), act(ActivationKind::GeluTanh))
        }
        K::Reglu => same("reglu equals relu(a)·b", y(K::Reglu, 0.0, 1), act(ActivationKind::Relu)),
        K::Glu => same("glu equals sigmoid(a)·b", y(K::Glu, 0.0, 1), act(ActivationKind::Sigmoid)),
        K::Bilinear => {
            same("bilinear equals a·b", y(K::Bilinear, 0.0, 1), a.iter().zip(&b).map(|(a, b)| a * b).collect())
        }
        K::XGeglu => same("alpha=0, order 2 equals geglu", y(K::XGeglu, 0.0, 2), y(K::Geglu, 0.0, 1)),
        K::XSwiglu => same("alpha=0, order 2 equals swiglu", y(K::XSwiglu, 0.0, 2), y(K::Swiglu, 0.0, 1)),
        K::XAtglu => {
            same("alpha=0 equals atglu, order 1", y(K::XAtglu, 0.0, 1), y(K::Atglu, 0.0, 1));
            same("alpha=0 equals atglu, order 2", y(K::XAtglu, 0.0, 2), y(K::Atglu, 0.0, 2));
        }
        K::Atglu => same("order 2 equals atlu(a)·b", y(K::Atglu, 0.0, 2), act(ActivationKind::Atlu)),
    }
    // Packed layouts: F.glu's convention gates the second half, y = first · g(second).
    let f = 16;
    let ab = normal(4 * 2 * f, 1.0, rng);
    let mut p = Problem::default();
    p.inputs.insert("ab".into(), Array::new(vec![4, 2 * f], ab.clone()));
    p.params.insert("gate_half".into(), GATE_SECOND);
    let got = op.reference(Direction::Fwd, &p).map(|r| r["y"].data.clone()).unwrap_or_default();
    let order = op.0.default_order();
    let want: Vec<f64> = (0..4 * f)
        .map(|i| {
            let (r, c) = (i / f, i % f);
            let (first, second) = (ab[r * 2 * f + c], ab[r * 2 * f + f + c]);
            first * cpu::gate(op.0, 0.0, order, second).0
        })
        .collect();
    rows.push(reference_row(op, "gate_half=second is F.glu's convention", &got, &want, IDENTITY_RTOL));
    rows
}
