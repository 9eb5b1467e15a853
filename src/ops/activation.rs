//! The activation family's registry entries: one [`Op`] per [`ActivationKind`].

use std::collections::BTreeMap;

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::tensor::Tensor;
use crate::families::activation::{Activation, ActivationKind as K, Scalars, cpu};
use crate::ops::check_row::{CheckRow, central_difference, rms_key};
use crate::ops::params::Params;
use crate::ops::registry::{ArgSpec, Array, Arrays, Direction, Op, Problem, Tensors, input, no_direction, output};
use crate::ops::self_check::reference_row;

/// One activation op in the registry.
pub struct ActivationOp(pub K);

/// Every activation op, as registry entries.
pub fn entries() -> Vec<Box<dyn Op>> {
    K::ALL.into_iter().map(|k| Box::new(ActivationOp(k)) as Box<dyn Op>).collect()
}

/// Channels of a problem's parameter tensor: 1-D inputs share one parameter, N-D inputs
/// get one per channel of the last dimension (so checks cover both layouts).
fn random_channels(shape: &[usize]) -> usize {
    if shape.len() >= 2 { *shape.last().expect("non-empty") } else { 1 }
}

/// Half-width around each kink where finite differences are not taken.
const KINK_MARGIN: f64 = 1e-3;
/// Finite-difference step: central differences err by O(h²·f''') + O(ε·|f|/h).
const FD_STEP: f64 = 1e-5;
/// Relative tolerance of finite differences against analytic f64 gradients.
const FD_RTOL: f64 = 1e-7;
/// Relative tolerance of identities that hold exactly in real arithmetic.
const IDENTITY_RTOL: f64 = 1e-14;

impl ActivationOp {
    fn activation<'a>(&self, params: &Params, tensor: Option<&'a Tensor>) -> Result<Activation<'a>> {
        Activation::from_parts(self.0, |name| params.get(name).copied(), tensor)
    }

    /// Scalars as the kernel sees them (f32-rounded) and the channel parameters.
    fn reference_parts(&self, problem: &Problem) -> Result<(Scalars, Vec<f64>)> {
        let tensor = match self.0.tensor_param() {
            Some(name) => Some(problem.input(name)?.to_tensor(DType::F32)?),
            None => None,
        };
        let act = self.activation(&problem.params, tensor.as_ref())?;
        Ok((act.scalars(), tensor.map(|t| t.host_f64()).unwrap_or_default()))
    }

    /// Points where f or f' jumps, for the given scalars and channel parameter.
    fn kinks(&self, s: &Scalars, p: f64) -> Vec<f64> {
        match self.0 {
            K::Relu | K::SquaredRelu | K::Prelu => vec![0.0],
            K::Smelu => vec![-s.beta, s.beta],
            K::GSmelu => vec![-s.alpha, s.beta],
            K::JumpRelu => vec![p],
            _ => vec![],
        }
    }
}

fn random_scalars(kind: K, rng: &mut StdRng) -> BTreeMap<String, f64> {
    let mut p = BTreeMap::new();
    let mut set = |k: &str, v: f64| {
        p.insert(k.to_string(), v);
    };
    match kind {
        K::XAtlu | K::XGelu | K::XSilu => set("alpha", rng.random_range(-0.5..0.5)),
        K::Smelu => set("beta", rng.random_range(0.5..2.0)),
        K::GSmelu => {
            set("alpha", rng.random_range(0.5..1.5));
            set("beta", rng.random_range(0.5..1.5));
            set("g_neg", rng.random_range(0.0..0.2));
            set("g_pos", rng.random_range(0.8..1.2));
            set("t", rng.random_range(-0.1..0.1));
        }
        K::JumpRelu => set("eps", rng.random_range(0.05..0.2)),
        _ => {}
    }
    p
}

fn normal(n: usize, sd: f64, rng: &mut StdRng) -> Vec<f64> {
    let d = Normal::new(0.0, sd).expect("sd > 0");
    (0..n).map(|_| d.sample(rng)).collect()
}

impl Op for ActivationOp {
    fn family(&self) -> &'static str {
        "activation"
    }

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        let mut v = vec![ArgSpec::op("x")];
        if dir == Direction::Bwd {
            v.push(ArgSpec::op("dy"));
        }
        v.extend(self.0.tensor_param().map(ArgSpec::f32));
        v
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        let x = problem.input("x")?;
        Ok(match dir {
            Direction::Fwd => vec![(ArgSpec::op("y"), x.shape.clone())],
            Direction::Bwd => {
                let mut v = vec![(ArgSpec::op("dx"), x.shape.clone())];
                if let Some(grad) = self.0.grad_name() {
                    let channels = match self.0.tensor_param() {
                        Some(name) => problem.input(name)?.data.len(),
                        None => 1,
                    };
                    v.push((ArgSpec::f32_reduction(grad), vec![channels]));
                }
                v
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        })
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        self.0.scalar_params()
    }

    fn launcher(&self, dir: Direction) -> String {
        format!("kiln_activation_{}_{dir}", self.0.name())
    }

    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let n = shape.iter().product();
        let mut problem = Problem { params: random_scalars(self.0, rng).into(), ..Problem::default() };
        problem.inputs.insert("x".into(), Array::new(shape.to_vec(), normal(n, 3.0, rng)));
        if dir == Direction::Bwd {
            problem.inputs.insert("dy".into(), Array::new(shape.to_vec(), normal(n, 1.0, rng)));
        }
        if let Some(name) = self.0.tensor_param() {
            let c = random_channels(shape);
            let range = if self.0 == K::Prelu { 0.05..0.5 } else { 0.2..1.5 };
            let values = (0..c).map(|_| rng.random_range(range.clone())).collect();
            problem.inputs.insert(name.into(), Array::new(vec![c], values));
        }
        problem
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let (s, p) = self.reference_parts(problem)?;
        let x = problem.input("x")?;
        let mut out = Arrays::new();
        match dir {
            Direction::Fwd => {
                out.insert("y".into(), Array::new(x.shape.clone(), cpu::forward(self.0, &s, &p, &x.data)));
            }
            Direction::Bwd => {
                let dy = problem.input("dy")?;
                let (dx, dparam) = cpu::backward(self.0, &s, &p, &x.data, &dy.data);
                out.insert("dx".into(), Array::new(x.shape.clone(), dx));
                if let (Some(name), Some(d)) = (self.0.grad_name(), dparam) {
                    out.insert(name.into(), Array::new(vec![d.len()], d));
                }
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(out)
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, _: DType) -> Result<Arrays> {
        let Some(grad) = self.0.grad_name().filter(|_| dir == Direction::Bwd) else {
            return Ok(Arrays::new());
        };
        let (s, p) = self.reference_parts(problem)?;
        let (x, dy) = (problem.input("x")?, problem.input("dy")?);
        let channels = p.len().max(1);
        let mut acc = vec![0f32; channels];
        let mut squares = vec![0f64; channels];
        for (i, (&xi, &g)) in x.data.iter().zip(&dy.data).enumerate() {
            let pc = if p.is_empty() { 0.0 } else { p[i % channels] };
            let term = cpu::dparam_term(self.0, &s, pc, xi, g);
            acc[i % channels] += term as f32;
            squares[i % channels] += term * term;
        }
        Ok(Arrays::from([
            (grad.to_string(), Array::new(vec![channels], acc.into_iter().map(f64::from).collect())),
            (rms_key(grad), Array::new(vec![channels], squares.into_iter().map(f64::sqrt).collect())),
        ]))
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        let x = input(inputs, "x")?;
        let param = match self.0.tensor_param() {
            Some(name) => Some(input(inputs, name)?),
            None => None,
        };
        let act = self.activation(params, param)?;
        match dir {
            Direction::Fwd => crate::families::activation::forward_into(&act, x, output(outputs, "y")?),
            Direction::Bwd => {
                let dy = input(inputs, "dy")?;
                // The parameter gradient is optional: taken out of the map to borrow both.
                let mut dparam = self.0.grad_name().and_then(|g| outputs.remove(g));
                let result =
                    crate::families::activation::backward_into(&act, x, dy, output(outputs, "dx")?, dparam.as_mut());
                if let (Some(g), Some(t)) = (self.0.grad_name(), dparam) {
                    outputs.insert(g.to_string(), t);
                }
                result
            }
            Direction::Bwd2 => Err(no_direction(self, dir)),
        }
    }

    fn reductions_are_optional(&self) -> bool {
        true
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let n = problem.inputs.get("x").map_or(0, |x| x.data.len()) as u64;
        let per = dtype.size_in_bytes() as u64;
        let params = self.0.tensor_param().and_then(|p| problem.inputs.get(p)).map_or(0, |a| a.data.len() as u64 * 4);
        match dir {
            Direction::Fwd => 2 * n * per + params,
            Direction::Bwd => 3 * n * per + params * if self.0.grad_name().is_some() { 2 } else { 1 },
            Direction::Bwd2 => 0,
        }
    }

    fn flops(&self, dir: Direction, problem: &Problem) -> u64 {
        let n = problem.inputs.get("x").map_or(0, |x| x.data.len()) as u64;
        let (f, b) = self.0.flops_per_element();
        n * if dir == Direction::Fwd { f } else { b }
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        // Not multiples of the vector width, of 8, or of a block; 1-D shares the
        // parameter, 2-D+ has one per channel (random_channels).
        vec![vec![1], vec![7], vec![4097], vec![(1 << 20) + 3], vec![3, 5, 7], vec![1027, 1021], vec![4096, 64]]
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![16384, 4096] // 2^26 elements: 128 MiB in bf16, well past the 50 MB L2.
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![256, 1024]
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        let mut rows = Vec::new();
        let problem = self.random_problem(Direction::Bwd, &[64, 16], rng);
        let Ok((s, p)) = self.reference_parts(&problem) else {
            return vec![failed_row(self, "building the random problem")];
        };
        let (x, dy) = (&problem.inputs["x"].data, &problem.inputs["dy"].data);
        let channels = p.len().max(1);
        let pc = |i: usize| if p.is_empty() { 0.0 } else { p[i % channels] };

        // dx against central differences of f, away from kinks.
        let (dx, dparam) = cpu::backward(self.0, &s, &p, x, dy);
        let (mut analytic, mut numeric) = (Vec::new(), Vec::new());
        for i in 0..x.len() {
            if self.kinks(&s, pc(i)).iter().any(|k| (x[i] - k).abs() < KINK_MARGIN) {
                continue;
            }
            analytic.push(dx[i]);
            numeric.push(dy[i] * central_difference(|v| cpu::f(self.0, &s, pc(i), v), x[i], FD_STEP));
        }
        rows.push(reference_row(self, "finite differences dx", &analytic, &numeric, FD_RTOL));

        // The parameter gradient.
        match self.0 {
            K::XAtlu | K::XGelu | K::XSilu => {
                let loss = |alpha: f64| {
                    let s2 = Scalars { alpha, ..s };
                    cpu::forward(self.0, &s2, &p, x).iter().zip(dy).map(|(f, g)| f * g).sum::<f64>()
                };
                let fd = central_difference(loss, s.alpha, FD_STEP);
                rows.push(reference_row(
                    self,
                    "finite differences dalpha",
                    &dparam.unwrap_or_default(),
                    &[fd],
                    FD_RTOL,
                ));
            }
            K::Prelu => {
                let fd: Vec<f64> = (0..channels)
                    .map(|c| {
                        let loss = |v: f64| {
                            let mut q = p.clone();
                            q[c] = v;
                            cpu::forward(self.0, &s, &q, x).iter().zip(dy).map(|(f, g)| f * g).sum::<f64>()
                        };
                        central_difference(loss, p[c], FD_STEP)
                    })
                    .collect();
                rows.push(reference_row(self, "finite differences dslope", &dparam.unwrap_or_default(), &fd, FD_RTOL));
            }
            K::JumpRelu => rows.extend(jumprelu_dtheta_checks(self, &s, &p, x, dy, dparam.as_deref())),
            _ => {}
        }
        rows.extend(identities(self, rng));
        rows
    }
}

fn failed_row(op: &ActivationOp, what: &str) -> CheckRow {
    CheckRow {
        op: op.full_name(),
        dir: "ref".into(),
        dtype: "f64".into(),
        what: what.into(),
        max_err: f64::NAN,
        tol: 0.0,
        pass: false,
    }
}

/// dθ against its stated definition, Σ dy·(−θ/ε)·K((x−θ)/ε) with the rectangle K (the
/// reference decides the open window as −ε/2 < x−θ < ε/2), and a hand-computed case.
fn jumprelu_dtheta_checks(
    op: &ActivationOp,
    s: &Scalars,
    p: &[f64],
    x: &[f64],
    dy: &[f64],
    got: Option<&[f64]>,
) -> Vec<CheckRow> {
    let channels = p.len();
    let mut want = vec![0.0; channels];
    for (i, (&xi, &g)) in x.iter().zip(dy).enumerate() {
        let (theta, c) = (p[i % channels], i % channels);
        want[c] += g * -(theta / s.eps) * cpu::rectangle((xi - theta) / s.eps);
    }
    let hand_s = Scalars { eps: 0.1, ..Scalars::default() };
    // θ = 0.5, ε = 0.1, window (0.45, 0.55): 0.46 and 0.54 count, 0.56 and 0.3 do not. (The
    // open edges are checked exactly in the tests, with values exact in f32 and bf16.)
    let (_, hand) = cpu::backward(K::JumpRelu, &hand_s, &[0.5], &[0.46, 0.54, 0.56, 0.3], &[1.0, 2.0, 4.0, 8.0]);
    vec![
        reference_row(op, "dtheta equals its definition", got.unwrap_or_default(), &want, IDENTITY_RTOL),
        reference_row(op, "dtheta hand-computed case", &hand.unwrap_or_default(), &[-15.0], IDENTITY_RTOL),
    ]
}

/// Closed-form identities that tie an op to another (REFERENCE.md §1).
fn identities(op: &ActivationOp, rng: &mut StdRng) -> Vec<CheckRow> {
    let x = normal(512, 3.0, rng);
    let dy = normal(512, 1.0, rng);
    let d = Scalars::default();
    let both = |k: K, s: &Scalars, p: &[f64]| {
        let y = cpu::forward(k, s, p, &x);
        let (dx, _) = cpu::backward(k, s, p, &x, &dy);
        [y, dx].concat()
    };
    let same = |what: &str, a: Vec<f64>, b: Vec<f64>| reference_row(op, what, &a, &b, IDENTITY_RTOL);
    match op.0 {
        K::XAtlu => vec![same("alpha=0 equals atlu", both(K::XAtlu, &d, &[]), both(K::Atlu, &d, &[]))],
        K::XGelu => vec![same("alpha=0 equals gelu", both(K::XGelu, &d, &[]), both(K::Gelu, &d, &[]))],
        K::XSilu => vec![same("alpha=0 equals silu", both(K::XSilu, &d, &[]), both(K::Silu, &d, &[]))],
        K::Silu => {
            let want: Vec<f64> = x.iter().map(|&v| v * cpu::sigmoid(v)).collect();
            vec![same("equals x*sigmoid(x)", cpu::forward(K::Silu, &d, &[], &x), want)]
        }
        K::SquaredRelu => {
            let want: Vec<f64> = cpu::forward(K::Relu, &d, &[], &x).iter().map(|r| r * r).collect();
            vec![same("equals relu^2", cpu::forward(K::SquaredRelu, &d, &[], &x), want)]
        }
        K::Prelu => vec![same("slope=0 equals relu", both(K::Prelu, &d, &[0.0]), both(K::Relu, &d, &[]))],
        K::JumpRelu => vec![same("theta=0 equals relu", both(K::JumpRelu, &d, &[0.0]), both(K::Relu, &d, &[]))],
        K::GeluTanh => {
            // REFERENCE.md: the two GELUs differ by at most 4.73e-4, reached near |x| ≈ 2.7.
            let grid: Vec<f64> = (0..=120_000).map(|i| -6.0 + i as f64 * 1e-4).collect();
            let gap = grid
                .iter()
                .map(|&v| (cpu::f(K::Gelu, &d, 0.0, v) - cpu::f(K::GeluTanh, &d, 0.0, v)).abs())
                .fold(0.0, f64::max);
            vec![reference_row(op, "max |gelu - gelu_tanh| is 4.73e-4", &[gap], &[4.73e-4], 1e-3)]
        }
        K::Gelu => {
            // Φ from erf against published values of erf.
            let xs = [0.5, 1.0, 2.0, -1.5];
            let want =
                [0.520_499_877_813_046_5, 0.842_700_792_949_714_9, 0.995_322_265_018_952_7, -0.966_105_146_475_310_7];
            let got: Vec<f64> = xs.iter().map(|&v| cpu::erf(v)).collect();
            let tails = [cpu::erfc(3.0), cpu::erfc(5.0), cpu::erfc(10.0)];
            let tails_want = [2.209_049_699_858_544e-5, 1.537_459_794_428_035e-12, 2.088_487_583_762_545e-45];
            let rel: Vec<f64> = tails.iter().zip(&tails_want).map(|(g, w)| g / w).collect();
            vec![
                same("erf at published points", got, want.to_vec()),
                reference_row(op, "erfc tails, relative", &rel, &[1.0; 3], 1e-13),
            ]
        }
        K::Smelu => {
            let beta = rng.random_range(0.5..2.0);
            let s = Scalars { beta, ..d };
            let g = Scalars { alpha: beta, beta, g_neg: 0.0, g_pos: 1.0, t: 0.0, ..d };
            vec![same("equals gsmelu(g-=0, g+=1, alpha=beta, t=0)", both(K::Smelu, &s, &[]), both(K::GSmelu, &g, &[]))]
        }
        K::GSmelu => {
            let params = random_scalars(K::GSmelu, rng);
            let s = Scalars {
                alpha: params["alpha"],
                beta: params["beta"],
                g_neg: params["g_neg"],
                g_pos: params["g_pos"],
                t: params["t"],
                ..d
            };
            // C¹: value and slope agree on both sides of each knee.
            let h = 1e-9;
            let mut left = Vec::new();
            let mut right = Vec::new();
            for knee in [-s.alpha, s.beta] {
                left.extend([cpu::f(K::GSmelu, &s, 0.0, knee - h), cpu::dfdx(K::GSmelu, &s, 0.0, knee - h)]);
                right.extend([cpu::f(K::GSmelu, &s, 0.0, knee + h), cpu::dfdx(K::GSmelu, &s, 0.0, knee + h)]);
            }
            vec![reference_row(op, "C1 at both knees", &left, &right, 1e-7)]
        }
        K::Relu | K::Sigmoid | K::QuickGelu | K::Atlu => {
            // σ'(x) = σ(1−σ) also pins sigmoid; relu/quick_gelu/atlu are pinned by FD above
            // and by the identities of the ops that reduce to them.
            vec![]
        }
    }
}
