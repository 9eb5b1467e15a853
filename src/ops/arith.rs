//! The arith family's registry entries: `arith/nau` (inputs `x w`; forward `z`, backward + `dz`
//! → `dx dw`), `arith/nmu` (the same with parameter `eps`) and the regularisers `arith/nau_reg`,
//! `arith/nmu_reg` (input `w`, string parameter `shape`; forward `sparse oob sparsity_error`,
//! backward + `dsparse doob` → `dw`), and `arith/nalu` (inputs `x w_hat m_hat g bias`, parameter
//! `eps`; forward `y`, backward + `dy` → `dx dw_hat dm_hat dg dbias`).

use rand::Rng;
use rand::rngs::StdRng;

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::families::arith::{self, NaluWeights, NmuSaved, NmuSavedRef, RegShape, Unit, cpu};
use crate::ops::check_row::{CheckRow, central_difference, rms_key};
use crate::ops::params::Params;
use crate::ops::registry::{ArgSpec, Array, Arrays, Direction, Op, Problem, Tensors, input, no_direction, put_output};
use crate::ops::self_check::reference_row;

/// The NAU, as a registry entry.
pub struct NauOp;

/// The NMU, as a registry entry.
pub struct NmuOp;

/// The NALU, as a registry entry.
pub struct NaluOp;

/// A unit's regularisers, as a registry entry.
pub struct RegOp {
    unit: Unit,
}

/// The family's entries.
pub fn entries() -> Vec<Box<dyn Op>> {
    vec![
        Box::new(NauOp),
        Box::new(NmuOp),
        Box::new(RegOp { unit: Unit::Nau }),
        Box::new(RegOp { unit: Unit::Nmu }),
        Box::new(NaluOp),
    ]
}

const FD_STEP: f64 = 1e-6;
const FD_RTOL: f64 = 1e-6;

/// The NAU's and the NMU's inputs: `x w`, and `dz` backward.
fn unit_inputs(dir: Direction) -> Vec<ArgSpec> {
    let mut v = vec![ArgSpec::op("x"), ArgSpec::op("w")];
    if dir == Direction::Bwd {
        v.push(ArgSpec::op("dz"));
    }
    v
}

/// The NAU's and the NMU's outputs: `z [B, O]`, or `dx [B, I]` and `dw [O, I]` (reductions).
fn unit_outputs(op: &dyn Op, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
    let (b, i, o) = dims_of(problem, "w")?;
    let reduction = |name| ArgSpec { reduction: true, ..ArgSpec::op(name) };
    match dir {
        Direction::Fwd => Ok(vec![(reduction("z"), vec![b, o])]),
        Direction::Bwd => Ok(vec![(reduction("dx"), vec![b, i]), (reduction("dw"), vec![o, i])]),
        Direction::Bwd2 => Err(no_direction(op, dir)),
    }
}

fn eps_of(params: &Params) -> Result<f64> {
    Ok(params.get("eps").copied().unwrap_or(0.0))
}

/// x in [0.5, 1.5] (the product of I terms stays within f32 at any I the tests use) and W in
/// [−0.2, 1.2] (both clamp bounds cut some), with exact zero terms planted: x = 0 where W = 1
/// gives t = 0. Rows b ≡ 0 (mod 3) get one zero input and rows b ≡ 0 (mod 5) a second; W is 1
/// where (o + i) ≡ 0 (mod 4), so outputs see none, one or two zero terms.
fn random_inputs(shape: &[usize], rng: &mut StdRng) -> (Vec<f64>, Vec<f64>) {
    let (b, i, o) = (shape[0], shape[1], shape[2]);
    let mut x: Vec<f64> = (0..b * i).map(|_| rng.random_range(0.5..1.5)).collect();
    let mut w: Vec<f64> = (0..o * i).map(|_| rng.random_range(-0.2..1.2)).collect();
    if i > 0 {
        for r in 0..b {
            if r % 3 == 0 {
                x[r * i + r % i] = 0.0;
            }
            if r % 5 == 0 {
                x[r * i + (r + 1) % i] = 0.0;
            }
        }
        for k in 0..o {
            for c in 0..i {
                if (k + c) % 4 == 0 {
                    w[k * i + c] = 1.0;
                }
            }
        }
    }
    (x, w)
}

/// The naive low-precision NMU: terms W_c·(x − 1) + 1 in f32 (one rounding, as the kernels'
/// FMA), their product in order in f32, the result rounded to `dtype`.
fn naive_forward(x: &[f64], w: &[f64], (b, i, o): (usize, usize, usize), eps: f64, dtype: DType) -> Vec<f64> {
    let mut z = vec![0.0; b * o];
    for r in 0..b {
        for k in 0..o {
            let mut p = 1f32;
            for c in 0..i {
                let wc = w[k * i + c].clamp(eps, 1.0) as f32;
                p *= wc.mul_add(x[r * i + c] as f32 - 1.0, 1.0);
            }
            z[r * o + k] = dtype.round(f64::from(p));
        }
    }
    z
}

/// The naive low-precision NMU backward: f32 terms, f32 products of the other terms (prefix
/// and suffix, exact with zeros), f32 sums in order, results rounded to `dtype`; and each
/// gradient's root sum of squares of its terms.
fn naive_backward(
    x: &[f64],
    w: &[f64],
    dz: &[f64],
    (b, i, o): (usize, usize, usize),
    eps: f64,
    dtype: DType,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dx, mut dw) = (vec![0f32; b * i], vec![0f32; o * i]);
    let (mut sx, mut sw) = (vec![0f64; b * i], vec![0f64; o * i]);
    for r in 0..b {
        for k in 0..o {
            let wc: Vec<f32> = (0..i).map(|c| w[k * i + c].clamp(eps, 1.0) as f32).collect();
            let xm1: Vec<f32> = (0..i).map(|c| x[r * i + c] as f32 - 1.0).collect();
            let t: Vec<f32> = (0..i).map(|c| wc[c].mul_add(xm1[c], 1.0)).collect();
            let mut others = vec![1f32; i];
            let mut prefix = 1f32;
            for c in 0..i {
                others[c] = prefix;
                prefix *= t[c];
            }
            let mut suffix = 1f32;
            for c in (0..i).rev() {
                others[c] *= suffix;
                suffix *= t[c];
            }
            let g = dz[r * o + k] as f32;
            for c in 0..i {
                let q = g * others[c];
                dx[r * i + c] += q * wc[c];
                sx[r * i + c] += f64::from(q * wc[c]).powi(2);
                if (eps..=1.0).contains(&w[k * i + c]) {
                    dw[k * i + c] += q * xm1[c];
                    sw[k * i + c] += f64::from(q * xm1[c]).powi(2);
                }
            }
        }
    }
    let round = |v: Vec<f32>| v.into_iter().map(|x| dtype.round(f64::from(x))).collect();
    let root = |v: Vec<f64>| v.into_iter().map(f64::sqrt).collect();
    (round(dx), round(dw), root(sx), root(sw))
}

/// x in [−1, 1] and W in [−1.5, 1.5], every fifth weight exactly ±1 (the clamp's bounds, inside
/// the gradient's mask: torch's clamp passes the gradient at its bounds).
fn nau_inputs(shape: &[usize], rng: &mut StdRng) -> (Vec<f64>, Vec<f64>) {
    let (b, i, o) = (shape[0], shape[1], shape[2]);
    let x = (0..b * i).map(|_| rng.random_range(-1.0..1.0)).collect();
    let w = (0..o * i)
        .map(|k| match k % 10 {
            0 => 1.0,
            5 => -1.0,
            _ => rng.random_range(-1.5..1.5),
        })
        .collect();
    (x, w)
}

/// The naive low-precision NAU: f32 products of the clamped weights, summed in order in f32,
/// rounded to `dtype`; backward the same for dx and the masked dW, with each gradient's root sum
/// of squares of its terms.
fn nau_naive(dir: Direction, problem: &Problem, dtype: DType) -> Result<Arrays> {
    let (b, i, o) = dims_of(problem, "w")?;
    let (x, w) = (&problem.input("x")?.data, &problem.input("w")?.data);
    let wc: Vec<f32> = w.iter().map(|v| v.clamp(-1.0, 1.0) as f32).collect();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let round = |v: Vec<f32>| v.into_iter().map(|x| dtype.round(f64::from(x))).collect();
    let mut out = Arrays::new();
    match dir {
        Direction::Fwd => {
            let mut z = vec![0f32; b * o];
            for r in 0..b {
                for k in 0..o {
                    z[r * o + k] = (0..i).fold(0f32, |acc, c| acc + x32[r * i + c] * wc[k * i + c]);
                }
            }
            out.insert("z".into(), Array::new(vec![b, o], round(z)));
        }
        Direction::Bwd => {
            let dz: Vec<f32> = problem.input("dz")?.data.iter().map(|&v| v as f32).collect();
            let (mut dx, mut dw) = (vec![0f32; b * i], vec![0f32; o * i]);
            let (mut sx, mut sw) = (vec![0f64; b * i], vec![0f64; o * i]);
            for r in 0..b {
                for k in 0..o {
                    let g = dz[r * o + k];
                    for c in 0..i {
                        dx[r * i + c] += g * wc[k * i + c];
                        sx[r * i + c] += f64::from(g * wc[k * i + c]).powi(2);
                        if (-1.0..=1.0).contains(&w[k * i + c]) {
                            dw[k * i + c] += g * x32[r * i + c];
                            sw[k * i + c] += f64::from(g * x32[r * i + c]).powi(2);
                        }
                    }
                }
            }
            let root = |v: Vec<f64>| v.into_iter().map(f64::sqrt).collect();
            out.insert("dx".into(), Array::new(vec![b, i], round(dx)));
            out.insert("dw".into(), Array::new(vec![o, i], round(dw)));
            out.insert(rms_key("dx"), Array::new(vec![b, i], root(sx)));
            out.insert(rms_key("dw"), Array::new(vec![o, i], root(sw)));
        }
        Direction::Bwd2 => {}
    }
    Ok(out)
}

impl Op for NauOp {
    fn family(&self) -> &'static str {
        "arith"
    }

    fn name(&self) -> &'static str {
        "nau"
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        unit_inputs(dir)
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        unit_outputs(self, dir, problem)
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        &[]
    }

    fn launcher(&self, dir: Direction) -> String {
        match dir {
            Direction::Fwd => "kiln_arith_nau_weights + a cuBLASLt GEMM".into(),
            _ => "kiln_arith_nau_weights + two cuBLASLt GEMMs + kiln_arith_nau_dw".into(),
        }
    }

    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let (b, i, o) = (shape[0], shape[1], shape[2]);
        let (x, w) = nau_inputs(shape, rng);
        let mut p = Problem::default();
        p.inputs.insert("x".into(), Array::new(vec![b, i], x));
        p.inputs.insert("w".into(), Array::new(vec![o, i], w));
        if dir == Direction::Bwd {
            let dz = (0..b * o).map(|_| rng.random_range(-1.0..1.0)).collect();
            p.inputs.insert("dz".into(), Array::new(vec![b, o], dz));
        }
        p
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let (b, i, o) = dims_of(problem, "w")?;
        let (x, w) = (&problem.input("x")?.data, &problem.input("w")?.data);
        let mut out = Arrays::new();
        match dir {
            Direction::Fwd => {
                out.insert("z".into(), Array::new(vec![b, o], cpu::nau_forward(x, w, b, i, o)?));
            }
            Direction::Bwd => {
                let g = cpu::nau_backward(x, w, &problem.input("dz")?.data, b, i, o)?;
                out.insert("dx".into(), Array::new(vec![b, i], g.dx));
                out.insert("dw".into(), Array::new(vec![o, i], g.dw));
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(out)
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, dtype: DType) -> Result<Arrays> {
        nau_naive(dir, problem, dtype)
    }

    fn run(&self, dir: Direction, inputs: &Tensors, _params: &Params, outputs: &mut Tensors) -> Result<()> {
        let (x, w) = (input(inputs, "x")?, input(inputs, "w")?);
        match dir {
            Direction::Fwd => put_output(outputs, "z", arith::nau_forward(x, w, None)?.z),
            Direction::Bwd => {
                let g = arith::nau_backward(x, w, input(inputs, "dz")?, None)?;
                put_output(outputs, "dx", g.dx)?;
                put_output(outputs, "dw", g.dw)
            }
            Direction::Bwd2 => Err(no_direction(self, dir)),
        }
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let Ok((b, i, o)) = dims_of(problem, "w") else { return 0 };
        let (b, i, o, s) = (b as u64, i as u64, o as u64, dtype.size_in_bytes() as u64);
        // The ideal: each operand read once, each result written once.
        match dir {
            Direction::Fwd => s * (b * i + o * i + b * o),
            Direction::Bwd => s * (2 * b * i + 2 * o * i + b * o),
            Direction::Bwd2 => 0,
        }
    }

    fn flops(&self, dir: Direction, problem: &Problem) -> u64 {
        let Ok((b, i, o)) = dims_of(problem, "w") else { return 0 };
        let products = (b * i * o) as u64;
        match dir {
            Direction::Fwd => 2 * products,
            Direction::Bwd => 4 * products,
            Direction::Bwd2 => 0,
        }
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        // [B, I, O]: single elements; odd sizes; two blocks' worth of threads in the weight
        // passes; and 12,000 weights (two partitions of the clamp pass, 24 strides of a thread).
        vec![vec![1, 1, 1], vec![5, 17, 3], vec![66, 20, 67], vec![3, 300, 40]]
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![4096, 4096, 4096] // issue 26's target shape
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![64, 64, 64]
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        // Weights off the clamp's bounds (central differences straddle a kink closer than the
        // step), some outside on both sides.
        let (b, i, o) = (3, 5, 2);
        let x: Vec<f64> = (0..b * i).map(|_| rng.random_range(-2.0..2.0)).collect();
        let w: Vec<f64> = (0..o * i)
            .map(|_| {
                loop {
                    let v: f64 = rng.random_range(-1.5..1.5);
                    if (v.abs() - 1.0).abs() > 1e-3 {
                        break v;
                    }
                }
            })
            .collect();
        let dz: Vec<f64> = (0..b * o).map(|_| rng.random_range(-1.0..1.0)).collect();
        let Ok(g) = cpu::nau_backward(&x, &w, &dz, b, i, o) else { return vec![] };
        let loss = |x: &[f64], w: &[f64]| -> f64 {
            cpu::nau_forward(x, w, b, i, o).map_or(f64::NAN, |z| z.iter().zip(&dz).map(|(a, g)| a * g).sum())
        };
        let fd = |v: &[f64], x_side: bool| -> Vec<f64> {
            (0..v.len())
                .map(|k| {
                    central_difference(
                        |t| {
                            let mut q = v.to_vec();
                            q[k] = t;
                            if x_side { loss(&q, &w) } else { loss(&x, &q) }
                        },
                        v[k],
                        FD_STEP,
                    )
                })
                .collect()
        };
        vec![
            reference_row(self, "finite differences dx", &g.dx, &fd(&x, true), FD_RTOL),
            reference_row(self, "finite differences dw (clamped weights included)", &g.dw, &fd(&w, false), FD_RTOL),
        ]
    }
}

impl Op for NmuOp {
    fn family(&self) -> &'static str {
        "arith"
    }

    fn name(&self) -> &'static str {
        "nmu"
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        unit_inputs(dir)
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        unit_outputs(self, dir, problem)
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        &[("eps", 0.0)]
    }

    fn launcher(&self, dir: Direction) -> String {
        match dir {
            Direction::Bwd => "kiln_arith_nmu_fwd (saving) + kiln_arith_nmu_bwd".into(),
            _ => format!("kiln_arith_nmu_{dir}"),
        }
    }

    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let (b, i, o) = (shape[0], shape[1], shape[2]);
        let (x, w) = random_inputs(shape, rng);
        let mut p = Problem::default();
        p.inputs.insert("x".into(), Array::new(vec![b, i], x));
        p.inputs.insert("w".into(), Array::new(vec![o, i], w));
        if dir == Direction::Bwd {
            let dz = (0..b * o).map(|_| rng.random_range(-1.0..1.0)).collect();
            p.inputs.insert("dz".into(), Array::new(vec![b, o], dz));
        }
        p
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let (b, i, o) = dims_of(problem, "w")?;
        let eps = eps_of(&problem.params)?;
        let (x, w) = (&problem.input("x")?.data, &problem.input("w")?.data);
        let mut out = Arrays::new();
        match dir {
            Direction::Fwd => {
                out.insert("z".into(), Array::new(vec![b, o], cpu::nmu_forward(x, w, b, i, o, eps)?));
            }
            Direction::Bwd => {
                let g = cpu::nmu_backward(x, w, &problem.input("dz")?.data, b, i, o, eps)?;
                out.insert("dx".into(), Array::new(vec![b, i], g.dx));
                out.insert("dw".into(), Array::new(vec![o, i], g.dw));
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(out)
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, dtype: DType) -> Result<Arrays> {
        let dims @ (b, i, o) = dims_of(problem, "w")?;
        let eps = eps_of(&problem.params)?;
        let (x, w) = (&problem.input("x")?.data, &problem.input("w")?.data);
        let mut out = Arrays::new();
        match dir {
            Direction::Fwd => {
                out.insert("z".into(), Array::new(vec![b, o], naive_forward(x, w, dims, eps, dtype)));
            }
            Direction::Bwd => {
                let (dx, dw, sx, sw) = naive_backward(x, w, &problem.input("dz")?.data, dims, eps, dtype);
                out.insert("dx".into(), Array::new(vec![b, i], dx));
                out.insert("dw".into(), Array::new(vec![o, i], dw));
                out.insert(rms_key("dx"), Array::new(vec![b, i], sx));
                out.insert(rms_key("dw"), Array::new(vec![o, i], sw));
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(out)
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        let eps = eps_of(params)? as f32;
        let (x, w) = (input(inputs, "x")?, input(inputs, "w")?);
        match dir {
            Direction::Fwd => put_output(outputs, "z", arith::nmu_forward(x, w, eps, false)?.z),
            Direction::Bwd => {
                // The forward's saved products, from `prepare` when a benchmark timed only the
                // backward, else from a forward here.
                let computed: Option<NmuSaved>;
                let saved = match (inputs.get("prod"), inputs.get("zeros")) {
                    (Some(prod), Some(zeros)) => NmuSavedRef { prod, zeros },
                    _ => {
                        computed = arith::nmu_forward(x, w, eps, true)?.saved;
                        computed
                            .as_ref()
                            .ok_or(Error::InvalidValue { arg: "saved", reason: "the forward saves".into() })?
                            .as_ref()
                    }
                };
                let g = arith::nmu_backward(x, w, input(inputs, "dz")?, saved, eps)?;
                put_output(outputs, "dx", g.dx)?;
                put_output(outputs, "dw", g.dw)
            }
            Direction::Bwd2 => Err(no_direction(self, dir)),
        }
    }

    fn prepare(&self, dir: Direction, inputs: &mut Tensors, params: &Params) -> Result<()> {
        if dir != Direction::Bwd {
            return Ok(());
        }
        let eps = eps_of(params)? as f32;
        let saved: Option<NmuSaved> = arith::nmu_forward(input(inputs, "x")?, input(inputs, "w")?, eps, true)?.saved;
        if let Some(s) = saved {
            inputs.insert("prod".into(), s.prod);
            inputs.insert("zeros".into(), s.zeros);
        }
        Ok(())
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let Ok((b, i, o)) = dims_of(problem, "w") else { return 0 };
        let (b, i, o, s) = (b as u64, i as u64, o as u64, dtype.size_in_bytes() as u64);
        match dir {
            Direction::Fwd => s * (b * i + o * i + b * o),
            // x, w, dz and the saved products (8 bytes an output) read; dx, dw written.
            Direction::Bwd => s * (2 * b * i + 2 * o * i + b * o) + 8 * b * o,
            Direction::Bwd2 => 0,
        }
    }

    fn flops(&self, dir: Direction, problem: &Problem) -> u64 {
        let Ok((b, i, o)) = dims_of(problem, "w") else { return 0 };
        // One FMA and one multiply per (b, o, i) forward (the 2 flops per product);
        // backward, for each of dx and dW, the term again, a division and an FMA.
        let products = (b * i * o) as u64;
        match dir {
            Direction::Fwd => 2 * products,
            Direction::Bwd => 10 * products,
            Direction::Bwd2 => 0,
        }
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        // [B, I, O]: single elements; tails of every tile and step (17 inputs: two steps of 16);
        // two 64-row tiles of B and O (the forward's and dx's grids, 20 inputs); two tiles of I
        // (dx's and dW's); and a batch split into fixed partitions for dW (one weight tile:
        // ⌈600 / 256⌉ = 3 partitions). Each within the emulator tests' 2^17 products.
        vec![vec![1, 1, 1], vec![5, 17, 3], vec![66, 20, 67], vec![65, 70, 2], vec![600, 9, 5]]
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![4096, 4096, 4096] // issue 26's target shape
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![64, 64, 64]
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        // Weights inside (0, 1), off the clamp's kinks, with exact zero terms: W = 0.5 and
        // x = −1 make t = 0 (row 0 one zero for output 0, row 1 two).
        let (b, i, o) = (3, 5, 2);
        let mut x: Vec<f64> = (0..b * i).map(|_| rng.random_range(0.5..1.5)).collect();
        let mut w: Vec<f64> = (0..o * i).map(|_| rng.random_range(0.05..0.95)).collect();
        w[0] = 0.5;
        w[1] = 0.5;
        x[0] = -1.0;
        x[i] = -1.0;
        x[i + 1] = -1.0;
        let dz: Vec<f64> = (0..b * o).map(|_| rng.random_range(-1.0..1.0)).collect();
        let Ok(g) = cpu::nmu_backward(&x, &w, &dz, b, i, o, 0.0) else { return vec![] };
        let loss = |x: &[f64], w: &[f64]| -> f64 {
            cpu::nmu_forward(x, w, b, i, o, 0.0).map_or(f64::NAN, |z| z.iter().zip(&dz).map(|(a, g)| a * g).sum())
        };
        let numeric_dx: Vec<f64> = (0..x.len())
            .map(|k| {
                central_difference(
                    |v| {
                        let mut q = x.clone();
                        q[k] = v;
                        loss(&q, &w)
                    },
                    x[k],
                    FD_STEP,
                )
            })
            .collect();
        let numeric_dw: Vec<f64> = (0..w.len())
            .map(|k| {
                central_difference(
                    |v| {
                        let mut q = w.clone();
                        q[k] = v;
                        loss(&x, &q)
                    },
                    w[k],
                    FD_STEP,
                )
            })
            .collect();
        let mut rows = vec![
            reference_row(self, "finite differences dx (zero terms included)", &g.dx, &numeric_dx, FD_RTOL),
            reference_row(self, "finite differences dw (zero terms included)", &g.dw, &numeric_dw, FD_RTOL),
        ];
        // What the forward saves: z = prod where no term is zero, 0 where one is.
        if let (Ok(z), Ok((prod, zeros))) =
            (cpu::nmu_forward(&x, &w, b, i, o, 0.0), cpu::nmu_nonzero_products(&x, &w, b, i, o, 0.0))
        {
            let rebuilt: Vec<f64> = prod.iter().zip(&zeros).map(|(&p, &c)| if c == 0 { p } else { 0.0 }).collect();
            rows.push(reference_row(self, "z from the saved products and zero counts", &rebuilt, &z, 1e-15));
            let counts: Vec<f64> = zeros.iter().map(|&c| c as f64).collect();
            rows.push(reference_row(self, "zero counts of the planted terms", &counts[..3], &[1.0, 0.0, 2.0], 0.0));
        }
        rows
    }
}

impl RegOp {
    fn shape(params: &Params) -> Result<RegShape> {
        RegShape::parse(params.string("shape").unwrap_or("linear"))
    }
}

impl Op for RegOp {
    fn family(&self) -> &'static str {
        "arith"
    }

    fn name(&self) -> &'static str {
        match self.unit {
            Unit::Nau => "nau_reg",
            Unit::Nmu => "nmu_reg",
        }
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        let mut v = vec![ArgSpec::op("w")];
        if dir == Direction::Bwd {
            v.extend([ArgSpec::f32("dsparse"), ArgSpec::f32("doob")]);
        }
        v
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        match dir {
            Direction::Fwd => Ok(vec![
                (ArgSpec::f32_reduction("sparse"), vec![1]),
                (ArgSpec::f32_reduction("oob"), vec![1]),
                (ArgSpec::f32("sparsity_error"), vec![1]),
            ]),
            Direction::Bwd => Ok(vec![(ArgSpec::op("dw"), problem.input_shape("w")?)]),
            Direction::Bwd2 => Err(no_direction(self, dir)),
        }
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        &[]
    }

    fn string_params(&self) -> &'static [(&'static str, &'static str)] {
        &[("shape", "linear")]
    }

    fn launcher(&self, dir: Direction) -> String {
        format!("kiln_arith_reg_{dir}")
    }

    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        // Around each unit's targets and past its bounds: [−1.5, 1.5] (NAU) or [−0.5, 1.5] (NMU).
        let n: usize = shape.iter().product();
        let lo = if self.unit == Unit::Nau { -1.5 } else { -0.5 };
        let w = (0..n).map(|_| rng.random_range(lo..1.5)).collect();
        let mut p = Problem::default();
        p.inputs.insert("w".into(), Array::new(shape.to_vec(), w));
        if dir == Direction::Bwd {
            p.inputs.insert("dsparse".into(), Array::new(vec![1], vec![rng.random_range(0.5..2.0)]));
            p.inputs.insert("doob".into(), Array::new(vec![1], vec![rng.random_range(0.5..2.0)]));
        }
        p
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let shape = Self::shape(&problem.params)?;
        let w = problem.input("w")?;
        let mut out = Arrays::new();
        match dir {
            Direction::Fwd => {
                let r = cpu::regularizers(self.unit, shape, &w.data)?;
                out.insert("sparse".into(), Array::new(vec![1], vec![r.sparse]));
                out.insert("oob".into(), Array::new(vec![1], vec![r.oob]));
                out.insert("sparsity_error".into(), Array::new(vec![1], vec![r.sparsity_error]));
            }
            Direction::Bwd => {
                let (ds, db) = (problem.input("dsparse")?.data[0], problem.input("doob")?.data[0]);
                let dw = cpu::regularizers_backward(self.unit, shape, &w.data, ds, db)?;
                out.insert("dw".into(), Array::new(w.shape.clone(), dw));
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(out)
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, _dtype: DType) -> Result<Arrays> {
        // The means as sequential f32 sums of f32 terms (each term from the f64 reference's).
        let mut out = Arrays::new();
        if dir == Direction::Fwd {
            let shape = Self::shape(&problem.params)?;
            let w = &problem.input("w")?.data;
            let (mut sparse, mut oob) = (0f32, 0f32);
            for &v in w {
                let r = cpu::regularizers(self.unit, shape, &[v])?;
                sparse += r.sparse as f32;
                oob += r.oob as f32;
            }
            let n = w.len() as f32;
            out.insert("sparse".into(), Array::new(vec![1], vec![f64::from(sparse / n)]));
            out.insert("oob".into(), Array::new(vec![1], vec![f64::from(oob / n)]));
        }
        Ok(out)
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        let shape = Self::shape(params)?;
        let w = input(inputs, "w")?;
        match dir {
            Direction::Fwd => {
                let r = arith::regularizers(self.unit, shape, w)?;
                put_output(outputs, "sparse", r.sparse)?;
                put_output(outputs, "oob", r.oob)?;
                put_output(outputs, "sparsity_error", r.sparsity_error)
            }
            Direction::Bwd => {
                let (ds, db) = (input(inputs, "dsparse")?, input(inputs, "doob")?);
                put_output(outputs, "dw", arith::regularizers_backward(self.unit, shape, w, ds, db)?)
            }
            Direction::Bwd2 => Err(no_direction(self, dir)),
        }
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let n = problem.get("w").map_or(0, |w| w.data.len()) as u64;
        let s = dtype.size_in_bytes() as u64;
        match dir {
            Direction::Fwd => s * n + 12,
            Direction::Bwd => 2 * s * n + 8,
            Direction::Bwd2 => 0,
        }
    }

    fn flops(&self, _dir: Direction, problem: &Problem) -> u64 {
        10 * problem.get("w").map_or(0, |w| w.data.len()) as u64
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        // [O, I]: one weight; a block's threads twice over; more than one partition of 8192
        // (three) with a ragged tail.
        vec![vec![1, 1], vec![7, 100], vec![129, 191]]
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![4096, 4096]
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![256, 256]
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        // Finite differences of dsparse·R_sparse + doob·R_oob away from the kinks, both shapes.
        let mut rows = Vec::new();
        for shape in [RegShape::Linear, RegShape::Squared] {
            let lo = if self.unit == Unit::Nau { -1.4 } else { -0.4 };
            // Off the kinks: |v| not within 1e-3 of 0, ½, 1.
            let w: Vec<f64> = (0..24)
                .map(|_| {
                    loop {
                        let v: f64 = rng.random_range(lo..1.4);
                        if [0.0, 0.5, 1.0].iter().all(|k| (v.abs() - k).abs() > 1e-3) {
                            break v;
                        }
                    }
                })
                .collect();
            let (ds, db) = (0.7, 1.3);
            let Ok(analytic) = cpu::regularizers_backward(self.unit, shape, &w, ds, db) else { continue };
            let numeric: Vec<f64> = (0..w.len())
                .map(|k| {
                    central_difference(
                        |v| {
                            let mut q = w.clone();
                            q[k] = v;
                            cpu::regularizers(self.unit, shape, &q).map_or(f64::NAN, |r| ds * r.sparse + db * r.oob)
                        },
                        w[k],
                        FD_STEP,
                    )
                })
                .collect();
            rows.push(reference_row(self, format!("finite differences dw ({shape:?})"), &analytic, &numeric, FD_RTOL));
        }
        rows
    }
}

fn sigmoid32(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// The naive low-precision NALU: the reference's loops in f32 (sums in order), results rounded
/// to `dtype`; backward with each gradient's root sum of squares of its terms.
fn nalu_naive(dir: Direction, problem: &Problem, dtype: DType) -> Result<Arrays> {
    let (b, i, o) = dims_of(problem, "w_hat")?;
    let f =
        |name: &'static str| -> Result<Vec<f32>> { Ok(problem.input(name)?.data.iter().map(|&v| v as f32).collect()) };
    let (x, wh, mh, g, bias) = (f("x")?, f("w_hat")?, f("m_hat")?, f("g")?, f("bias")?);
    let eps = nalu_eps(&problem.params) as f32;
    let w: Vec<f32> = wh.iter().zip(&mh).map(|(h, m)| h.tanh() * sigmoid32(*m)).collect();
    let lx: Vec<f32> = x.iter().map(|v| (v.abs() + eps).ln()).collect();
    let (mut a, mut m, mut gate) = (vec![0f32; b * o], vec![0f32; b * o], vec![0f32; b * o]);
    for r in 0..b {
        for k in 0..o {
            let (mut sa, mut sl, mut sg) = (0f32, 0f32, bias[k]);
            for c in 0..i {
                sa += x[r * i + c] * w[k * i + c];
                sl += lx[r * i + c] * w[k * i + c];
                sg += x[r * i + c] * g[k * i + c];
            }
            (a[r * o + k], m[r * o + k], gate[r * o + k]) = (sa, sl.exp(), sigmoid32(sg));
        }
    }
    let round = |v: &[f32]| v.iter().map(|&x| dtype.round(f64::from(x))).collect::<Vec<f64>>();
    let mut out = Arrays::new();
    if dir == Direction::Fwd {
        let y: Vec<f32> = (0..b * o).map(|t| gate[t] * a[t] + (1.0 - gate[t]) * m[t]).collect();
        out.insert("y".into(), Array::new(vec![b, o], round(&y)));
        return Ok(out);
    }
    let dy = f("dy")?;
    let (mut dx, mut dw, mut dg, mut db) = (vec![0f32; b * i], vec![0f32; o * i], vec![0f32; o * i], vec![0f32; o]);
    let (mut sx, mut sw, mut sg, mut sb) = (vec![0f64; b * i], vec![0f64; o * i], vec![0f64; o * i], vec![0f64; o]);
    for r in 0..b {
        for k in 0..o {
            let t = r * o + k;
            let da = gate[t] * dy[t];
            let dlin = (1.0 - gate[t]) * dy[t] * m[t];
            let dgl = (a[t] - m[t]) * dy[t] * gate[t] * (1.0 - gate[t]);
            db[k] += dgl;
            sb[k] += f64::from(dgl).powi(2);
            for c in 0..i {
                let (xv, wv) = (x[r * i + c], w[k * i + c]);
                let sign = if xv > 0.0 {
                    1.0
                } else if xv < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                let terms = [da * wv, dlin * wv * sign / (xv.abs() + eps), dgl * g[k * i + c]];
                for term in terms {
                    dx[r * i + c] += term;
                    sx[r * i + c] += f64::from(term).powi(2);
                }
                for term in [da * xv, dlin * lx[r * i + c]] {
                    dw[k * i + c] += term;
                    sw[k * i + c] += f64::from(term).powi(2);
                }
                dg[k * i + c] += dgl * xv;
                sg[k * i + c] += f64::from(dgl * xv).powi(2);
            }
        }
    }
    let (mut dwh, mut dmh) = (vec![0f32; o * i], vec![0f32; o * i]);
    let (mut swh, mut smh) = (vec![0f64; o * i], vec![0f64; o * i]);
    for e in 0..o * i {
        let (th, s) = (wh[e].tanh(), sigmoid32(mh[e]));
        dwh[e] = dw[e] * s * (1.0 - th * th);
        dmh[e] = dw[e] * th * s * (1.0 - s);
        swh[e] = sw[e].sqrt() * f64::from(s * (1.0 - th * th));
        smh[e] = sw[e].sqrt() * f64::from((th * s * (1.0 - s)).abs());
    }
    let root = |v: Vec<f64>| v.into_iter().map(f64::sqrt).collect::<Vec<f64>>();
    for (name, shape, v, rms) in [
        ("dx", vec![b, i], round(&dx), root(sx)),
        ("dw_hat", vec![o, i], round(&dwh), swh),
        ("dm_hat", vec![o, i], round(&dmh), smh),
        ("dg", vec![o, i], round(&dg), root(sg)),
        ("dbias", vec![o], round(&db), root(sb)),
    ] {
        out.insert(rms_key(name), Array::new(shape.clone(), rms));
        out.insert(name.into(), Array::new(shape, v));
    }
    Ok(out)
}

/// (B, I, O) of a problem: x `[B, I]` and its weight input `w` `[O, I]`.
fn dims_of(problem: &Problem, w: &'static str) -> Result<(usize, usize, usize)> {
    let x = problem.input("x")?;
    Ok((x.shape[0], x.shape[1], problem.input(w)?.shape[0]))
}

/// The NALU's ε (stable-nalu's 1e-7 by default).
fn nalu_eps(params: &Params) -> f64 {
    params.get("eps").copied().unwrap_or(1e-7)
}

const NALU_WEIGHTS: [&str; 4] = ["w_hat", "m_hat", "g", "bias"];

impl Op for NaluOp {
    fn family(&self) -> &'static str {
        "arith"
    }

    fn name(&self) -> &'static str {
        "nalu"
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        let mut v: Vec<ArgSpec> = ["x"].into_iter().chain(NALU_WEIGHTS).map(ArgSpec::op).collect();
        if dir == Direction::Bwd {
            v.push(ArgSpec::op("dy"));
        }
        v
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        let (b, i, o) = dims_of(problem, "w_hat")?;
        let reduction = |name| ArgSpec { reduction: true, ..ArgSpec::op(name) };
        match dir {
            Direction::Fwd => Ok(vec![(reduction("y"), vec![b, o])]),
            Direction::Bwd => Ok(vec![
                (reduction("dx"), vec![b, i]),
                (reduction("dw_hat"), vec![o, i]),
                (reduction("dm_hat"), vec![o, i]),
                (reduction("dg"), vec![o, i]),
                (reduction("dbias"), vec![o]),
            ]),
            Direction::Bwd2 => Err(no_direction(self, dir)),
        }
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        &[("eps", 1e-7)]
    }

    fn launcher(&self, dir: Direction) -> String {
        match dir {
            Direction::Fwd => "kiln_arith_nalu_{weights,log,combine_fwd} + three cuBLASLt GEMMs".into(),
            _ => {
                "the forward's passes and GEMMs + kiln_arith_nalu_{combine_bwd,dx,dweights} + six cuBLASLt GEMMs".into()
            }
        }
    }

    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        // |x| in [0.5, 2] with either sign (log(|x| + ε) stays tame, its derivative bounded),
        // Ŵ, M̂, G in [−1, 1] (|W| < 0.56): the exponent of m stays within f16's range at the
        // check shapes' widths.
        let (b, i, o) = (shape[0], shape[1], shape[2]);
        let mut p = Problem::default();
        let x = (0..b * i)
            .map(|_| {
                let v: f64 = rng.random_range(0.5..2.0);
                if rng.random_bool(0.5) { v } else { -v }
            })
            .collect();
        p.inputs.insert("x".into(), Array::new(vec![b, i], x));
        for name in ["w_hat", "m_hat", "g"] {
            p.inputs
                .insert(name.into(), Array::new(vec![o, i], (0..o * i).map(|_| rng.random_range(-1.0..1.0)).collect()));
        }
        p.inputs.insert("bias".into(), Array::new(vec![o], (0..o).map(|_| rng.random_range(-1.0..1.0)).collect()));
        if dir == Direction::Bwd {
            p.inputs
                .insert("dy".into(), Array::new(vec![b, o], (0..b * o).map(|_| rng.random_range(-1.0..1.0)).collect()));
        }
        p
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let (b, i, o) = dims_of(problem, "w_hat")?;
        let eps = nalu_eps(&problem.params);
        let d = |name: &'static str| problem.input(name).map(|a| a.data.as_slice());
        let params = cpu::NaluParams { w_hat: d("w_hat")?, m_hat: d("m_hat")?, g: d("g")?, bias: d("bias")? };
        let mut out = Arrays::new();
        match dir {
            Direction::Fwd => {
                out.insert("y".into(), Array::new(vec![b, o], cpu::nalu_forward(d("x")?, params, b, i, o, eps)?));
            }
            Direction::Bwd => {
                let g = cpu::nalu_backward(d("x")?, params, d("dy")?, b, i, o, eps)?;
                out.insert("dx".into(), Array::new(vec![b, i], g.dx));
                out.insert("dw_hat".into(), Array::new(vec![o, i], g.dw_hat));
                out.insert("dm_hat".into(), Array::new(vec![o, i], g.dm_hat));
                out.insert("dg".into(), Array::new(vec![o, i], g.dg));
                out.insert("dbias".into(), Array::new(vec![o], g.dbias));
            }
            Direction::Bwd2 => return Err(no_direction(self, dir)),
        }
        Ok(out)
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, dtype: DType) -> Result<Arrays> {
        nalu_naive(dir, problem, dtype)
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        let eps = nalu_eps(params) as f32;
        let x = input(inputs, "x")?;
        let p = NaluWeights {
            w_hat: input(inputs, "w_hat")?,
            m_hat: input(inputs, "m_hat")?,
            g: input(inputs, "g")?,
            bias: input(inputs, "bias")?,
        };
        match dir {
            Direction::Fwd => put_output(outputs, "y", arith::nalu_forward(x, p, eps)?),
            Direction::Bwd => {
                let g = arith::nalu_backward(x, p, input(inputs, "dy")?, eps)?;
                put_output(outputs, "dx", g.dx)?;
                put_output(outputs, "dw_hat", g.dw_hat)?;
                put_output(outputs, "dm_hat", g.dm_hat)?;
                put_output(outputs, "dg", g.dg)?;
                put_output(outputs, "dbias", g.dbias)
            }
            Direction::Bwd2 => Err(no_direction(self, dir)),
        }
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let Ok((b, i, o)) = dims_of(problem, "w_hat") else { return 0 };
        let (b, i, o, s) = (b as u64, i as u64, o as u64, dtype.size_in_bytes() as u64);
        // The ideal: the inputs read once, the outputs written once.
        match dir {
            Direction::Fwd => s * (b * i + 3 * o * i + o + b * o),
            Direction::Bwd => s * (2 * b * i + 6 * o * i + 2 * o + b * o),
            Direction::Bwd2 => 0,
        }
    }

    fn flops(&self, dir: Direction, problem: &Problem) -> u64 {
        let Ok((b, i, o)) = dims_of(problem, "w_hat") else { return 0 };
        let products = (b * i * o) as u64;
        match dir {
            Direction::Fwd => 6 * products,
            // The forward's three GEMMs again and six more.
            Direction::Bwd => 18 * products,
            Direction::Bwd2 => 0,
        }
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        // [B, I, O]: single elements; odd sizes; 2,100 (B·I) and 2,560 (O·I) entries, past a
        // block's 256 threads several times.
        vec![vec![1, 1, 1], vec![5, 17, 3], vec![70, 30, 40], vec![3, 64, 40]]
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        vec![4096, 1024, 1024]
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        vec![64, 64, 64]
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        // Finite differences of Σ dy·y in each input and parameter (x off 0, where log|x| kinks).
        let (b, i, o) = (3, 4, 2);
        let eps = 1e-7;
        let problem = self.random_problem(Direction::Bwd, &[b, i, o], rng);
        let d = |name: &str| problem.inputs[name].data.clone();
        let (x, dy) = (d("x"), d("dy"));
        let weights: Vec<Vec<f64>> = NALU_WEIGHTS.iter().map(|n| d(n)).collect();
        let loss = |x: &[f64], w: &[Vec<f64>]| -> f64 {
            let p = cpu::NaluParams { w_hat: &w[0], m_hat: &w[1], g: &w[2], bias: &w[3] };
            cpu::nalu_forward(x, p, b, i, o, eps).map_or(f64::NAN, |y| y.iter().zip(&dy).map(|(y, g)| y * g).sum())
        };
        let p = cpu::NaluParams { w_hat: &weights[0], m_hat: &weights[1], g: &weights[2], bias: &weights[3] };
        let Ok(g) = cpu::nalu_backward(&x, p, &dy, b, i, o, eps) else { return vec![] };
        let numeric_x: Vec<f64> = (0..x.len())
            .map(|k| {
                central_difference(
                    |v| {
                        let mut q = x.clone();
                        q[k] = v;
                        loss(&q, &weights)
                    },
                    x[k],
                    FD_STEP,
                )
            })
            .collect();
        let mut rows = vec![reference_row(self, "finite differences dx", &g.dx, &numeric_x, FD_RTOL)];
        for (which, (name, analytic)) in
            [("dw_hat", &g.dw_hat), ("dm_hat", &g.dm_hat), ("dg", &g.dg), ("dbias", &g.dbias)].into_iter().enumerate()
        {
            let numeric: Vec<f64> = (0..weights[which].len())
                .map(|k| {
                    central_difference(
                        |v| {
                            let mut w = weights.clone();
                            w[which][k] = v;
                            loss(&x, &w)
                        },
                        weights[which][k],
                        FD_STEP,
                    )
                })
                .collect();
            rows.push(reference_row(self, format!("finite differences {name}"), analytic, &numeric, FD_RTOL));
        }
        rows
    }
}
