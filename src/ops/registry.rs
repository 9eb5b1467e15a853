//! The registry's entry types. Each op is declared once (an [`Op`] implementation): its
//! name, inputs, parameters, outputs, CPU reference, CUDA launcher and bytes/FLOPs model.
//! The CLI (`kiln list/check/bench/run`), the benches and the generic tests iterate over
//! [`crate::ops::registry()`], so adding an op is adding one entry.
//!
//! Layer: ops. Imports core, the parameters and the check rows; every entry imports it.

use std::collections::BTreeMap;
use std::fmt;

/// Tensors by argument name: what [`Op::run`] reads and writes.
pub type Tensors = BTreeMap<String, Tensor>;
/// Arrays by argument name: what references return.
pub type Arrays = BTreeMap<String, Array>;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::check_row::CheckRow;
use super::params::Params;
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::tensor::Tensor;

/// Forward, backward or double backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// The forward pass.
    Fwd,
    /// The backward pass (gradients).
    Bwd,
    /// The double backward: the gradients of a scalar of the backward's gradients (⟨g, dx⟩ and
    /// so on) with respect to the backward's inputs, for training on gradients (forces). Only
    /// the ops whose [`Op::directions`] name it; the others refuse it ([`no_direction`]).
    Bwd2,
}

impl Direction {
    /// Forward and backward, forward first: the directions of most ops.
    pub const BOTH: [Direction; 2] = [Direction::Fwd, Direction::Bwd];
    /// Every direction, in order.
    pub const ALL: [Direction; 3] = [Direction::Fwd, Direction::Bwd, Direction::Bwd2];

    /// `fwd`, `bwd` or `bwd2`.
    pub const fn name(self) -> &'static str {
        match self {
            Direction::Fwd => "fwd",
            Direction::Bwd => "bwd",
            Direction::Bwd2 => "bwd2",
        }
    }

    /// The direction `name` names (`fwd`, `bwd`, `bwd2`), or a typed error naming `arg`.
    pub fn parse(arg: &'static str, name: &str) -> Result<Direction> {
        Direction::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| Error::InvalidValue { arg, reason: format!("`{name}`: expected fwd, bwd or bwd2") })
    }
}

/// The error of an op asked for a direction it does not have (not in its [`Op::directions`]).
pub fn no_direction(op: &(impl Op + ?Sized), dir: Direction) -> Error {
    Error::InvalidValue { arg: "dir", reason: format!("{} has no {dir} direction", op.full_name()) }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a tensor argument is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In the dtype the op runs in (f32, f16 or bf16).
    Op,
    /// Always f32 (trainable parameters and their gradients, statistics).
    F32,
    /// Always i32 (indices, lengths, counts, masks).
    I32,
}

impl Storage {
    /// The concrete dtype when the op runs in `op`.
    pub fn dtype(self, op: DType) -> DType {
        match self {
            Storage::Op => op,
            Storage::F32 => DType::F32,
            Storage::I32 => DType::I32,
        }
    }
}

/// A tensor argument of an op.
#[derive(Clone, Copy, Debug)]
pub struct ArgSpec {
    /// Its name (`x`, `dy`, `slope`; `y`, `dx`, `dalpha`): also its `.npy` file name.
    pub name: &'static str,
    /// Its storage.
    pub storage: Storage,
    /// True for outputs reduced over many elements (checked with the naive-error rule).
    pub reduction: bool,
    /// True for inputs a problem may leave out (a residual, γ, β).
    pub optional: bool,
}

impl ArgSpec {
    /// An elementwise argument in the op's dtype.
    pub const fn op(name: &'static str) -> ArgSpec {
        ArgSpec { name, storage: Storage::Op, reduction: false, optional: false }
    }
    /// An f32 parameter.
    pub const fn f32(name: &'static str) -> ArgSpec {
        ArgSpec { name, storage: Storage::F32, reduction: false, optional: false }
    }
    /// An i32 tensor (indices, lengths, masks).
    pub const fn i32(name: &'static str) -> ArgSpec {
        ArgSpec { name, storage: Storage::I32, reduction: false, optional: false }
    }
    /// An f32 output reduced over many elements.
    pub const fn f32_reduction(name: &'static str) -> ArgSpec {
        ArgSpec { name, storage: Storage::F32, reduction: true, optional: false }
    }
    /// The same argument, marked optional.
    pub const fn optional(self) -> ArgSpec {
        ArgSpec { optional: true, ..self }
    }
}

/// A dense f64 array: the currency of references and checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f64>,
}

impl Array {
    /// An array; panics in debug builds if the length does not match the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Array {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Array { shape, data }
    }

    /// The values rounded to `dtype`.
    pub fn rounded(&self, dtype: DType) -> Array {
        Array::new(self.shape.clone(), self.data.iter().map(|&v| dtype.round(v)).collect())
    }

    /// A host tensor of `dtype` holding these values.
    pub fn to_tensor(&self, dtype: DType) -> Result<Tensor> {
        Tensor::from_f64(&self.data, &self.shape, dtype)
    }
}

/// One problem instance: named inputs and parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Problem {
    /// Inputs by name, in f64 (rounded to their storage before a check).
    pub inputs: BTreeMap<String, Array>,
    /// Parameters by name (numbers and strings).
    pub params: Params,
}

impl Problem {
    /// The input `name` if the problem has it.
    pub fn get(&self, name: &str) -> Option<&Array> {
        self.inputs.get(name)
    }

    /// The number parameter `name`, or `Error::InvalidValue` naming it.
    pub fn param(&self, name: &'static str) -> Result<f64> {
        self.params.number(name)
    }

    /// Host tensors of the inputs of `op` in `dir` that this problem has, each in its
    /// storage dtype for a run in `dtype`, on `device`.
    pub fn tensors(&self, op: &dyn Op, dir: Direction, dtype: DType, device: &Device) -> Result<Tensors> {
        let mut out = Tensors::new();
        for spec in op.inputs(dir) {
            match self.inputs.get(spec.name) {
                Some(a) => {
                    out.insert(spec.name.to_string(), a.to_tensor(spec.storage.dtype(dtype))?.to_device(device)?);
                }
                None if spec.optional => {}
                None => return Err(Error::InvalidValue { arg: spec.name, reason: "missing input".into() }),
            }
        }
        Ok(out)
    }

    /// The shape of input `name`, or `Error::InvalidValue` naming it.
    pub fn input_shape(&self, name: &'static str) -> Result<Vec<usize>> {
        Ok(self.input(name)?.shape.clone())
    }

    /// The input `name`, or `Error::InvalidValue` naming it.
    pub fn input(&self, name: &'static str) -> Result<&Array> {
        self.inputs.get(name).ok_or(Error::InvalidValue { arg: name, reason: "missing input".into() })
    }

    /// The inputs of `op` in direction `dir` rounded to their storage when run in `dtype`.
    pub fn rounded(&self, op: &dyn Op, dir: Direction, dtype: DType) -> Problem {
        let mut p = self.clone();
        for spec in op.inputs(dir) {
            if let Some(a) = p.inputs.get_mut(spec.name) {
                *a = a.rounded(spec.storage.dtype(dtype));
            }
        }
        p
    }
}

/// The seed of every benchmark problem (`kiln bench`, the criterion benches): each
/// [`BenchCase`] builds its problem from a fresh generator seeded with it, so two runs, and
/// two selections of ops, time the same tensors. ("kiln" in ASCII.)
pub const BENCH_SEED: u64 = 0x6b69_6c6e;

/// One fixed benchmark problem of an op: a label naming it (shape and options, as a bench row
/// prints it) and the construction of its [`Problem`], seeded with [`BENCH_SEED`].
pub struct BenchCase<'a> {
    /// Names the problem: the shape and its options (`16384x4096`,
    /// `B8xS2048xH16xD128 causal alibi`); the `case` of a bench row.
    pub label: String,
    /// The main-input shape in the op's bench-shape convention (the `shape` of a bench row;
    /// attention: `[batch, seqlen, heads, heads_k, head_dim]`, seqlen the longest sequence).
    pub shape: Vec<usize>,
    build: Box<BuildProblem<'a>>,
}

/// How a [`BenchCase`] makes its problem in a direction from a seeded generator.
type BuildProblem<'a> = dyn Fn(Direction, &mut StdRng) -> Problem + 'a;

impl<'a> BenchCase<'a> {
    /// A case whose problem `build` makes from a generator seeded with [`BENCH_SEED`].
    pub fn new(
        label: impl Into<String>,
        shape: Vec<usize>,
        build: impl Fn(Direction, &mut StdRng) -> Problem + 'a,
    ) -> BenchCase<'a> {
        BenchCase { label: label.into(), shape, build: Box::new(build) }
    }

    /// The op's random problem of `shape` with the fixed seed, labelled by the shape
    /// (`16384x4096`): what [`Op::bench_cases`] gives unless the op names its own cases.
    pub fn of_shape<O: Op + ?Sized>(op: &'a O, shape: Vec<usize>) -> BenchCase<'a> {
        let dims = shape.clone();
        BenchCase::new(shape_label(&shape), shape, move |dir, rng| op.random_problem(dir, &dims, rng))
    }

    /// The case's problem in direction `dir`: the same inputs every time.
    pub fn problem(&self, dir: Direction) -> Problem {
        (self.build)(dir, &mut StdRng::seed_from_u64(BENCH_SEED))
    }
}

impl fmt::Debug for BenchCase<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BenchCase").field("label", &self.label).field("shape", &self.shape).finish_non_exhaustive()
    }
}

/// A shape as a bench label: its dimensions joined by `x` (`16384x4096`).
pub fn shape_label(shape: &[usize]) -> String {
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

/// One op of one family: everything the CLI, the benches and the generic tests need.
pub trait Op: Send + Sync {
    /// The family (`activation`).
    fn family(&self) -> &'static str;
    /// The op's name within its family (`xgelu`).
    fn name(&self) -> &'static str;
    /// `<family>/<op>`.
    fn full_name(&self) -> String {
        format!("{}/{}", self.family(), self.name())
    }
    /// Storage dtypes the op supports.
    fn dtypes(&self) -> &'static [DType] {
        &DType::FLOATS
    }
    /// The directions the op has (both, unless it is forward only).
    fn directions(&self) -> &'static [Direction] {
        &Direction::BOTH
    }
    /// Tensor inputs of a direction (optional ones marked).
    fn inputs(&self, dir: Direction) -> Vec<ArgSpec>;
    /// Tensor outputs a direction produces for `problem` (which depend on the optional
    /// inputs it has), with their shapes.
    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>>;
    /// Number parameters and their defaults.
    fn params(&self) -> &'static [(&'static str, f64)];
    /// String parameters (irreps, modes) and their defaults; none unless the op says so.
    fn string_params(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// The C ABI function that runs a direction on a GPU.
    fn launcher(&self, dir: Direction) -> String;
    /// A random problem (never zeros) whose main input has `shape`.
    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem;
    /// The f64 reference outputs by name. Inputs are taken as given (round them to their
    /// storage first to compare with a low-precision run).
    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays>;
    /// For each reduction output, the same computation done naively in the low precision of
    /// a run in `dtype` (sequential f32 sums of f32 terms; intermediates rounded to `dtype`):
    /// the yardstick of the "≤ k × naive error" rule.
    fn naive_reductions(&self, dir: Direction, problem: &Problem, dtype: DType) -> Result<Arrays>;
    /// Runs the op through the safe API on the tensors' device (host: reference; CUDA:
    /// kernels), writing into the preallocated `outputs` (from [`Op::outputs`]); reduction
    /// outputs (see [`ArgSpec::reduction`]) may be left out to skip them.
    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()>;
    /// Adds to `inputs` what a timed [`Op::run`] should not recompute every time (the norm
    /// backward's mean and rstd, which its run otherwise gets from a forward). Benchmarks and
    /// the traffic model call it once before timing; [`Op::run`] must work without it.
    fn prepare(&self, _dir: Direction, _inputs: &mut Tensors, _params: &Params) -> Result<()> {
        Ok(())
    }
    /// True when [`Op::run`] can skip its reduction outputs (they are left out of `outputs`),
    /// so a benchmark can price them.
    fn reductions_are_optional(&self) -> bool {
        false
    }
    /// Bytes a direction must move at minimum (reads + writes) for `problem` in `dtype`.
    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64;
    /// Floating-point operations of a direction (the model, not a count of instructions).
    fn flops(&self, dir: Direction, problem: &Problem) -> u64;
    /// Main-input shapes for correctness checks: awkward sizes from 1 to millions.
    fn check_shapes(&self) -> Vec<Vec<usize>>;
    /// Main-input shape for benchmarks on a GPU (≥ 2^26 elements where the issue asks).
    fn bench_shape_gpu(&self) -> Vec<usize>;
    /// Main-input shape for benchmarks of the CPU reference (and of the emulator).
    fn bench_shape_cpu(&self) -> Vec<usize>;
    /// The fixed problems `kiln bench` and the criterion benches time: on a GPU (`gpu`) or on
    /// the CPU and the emulator. By default one case, the bench shape
    /// ([`Op::bench_shape_gpu`] / [`Op::bench_shape_cpu`]) labelled by itself; an op whose
    /// figures depend on more than a shape (attention: lengths, causal, bias) names its cases.
    fn bench_cases(&self, gpu: bool) -> Vec<BenchCase<'_>> {
        vec![BenchCase::of_shape(self, if gpu { self.bench_shape_gpu() } else { self.bench_shape_cpu() })]
    }
    /// The reference's own checks: finite differences for every gradient and the
    /// family's identities. Run by `kiln check --backend cpu` and the tests.
    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow>;
}

/// The input `name` of a run, or `Error::InvalidValue` naming it.
pub fn input<'a>(inputs: &'a Tensors, name: &'static str) -> Result<&'a Tensor> {
    inputs.get(name).ok_or(Error::InvalidValue { arg: name, reason: "missing input".into() })
}

/// The output `name` of a run, or `Error::InvalidValue` naming it.
pub fn output<'a>(outputs: &'a mut Tensors, name: &'static str) -> Result<&'a mut Tensor> {
    outputs.get_mut(name).ok_or(Error::InvalidValue { arg: name, reason: "missing output".into() })
}

/// Stores a result the safe API returned as a new tensor in output slot `name` (ops whose
/// API allocates its outputs); `None` means the op produced no such output.
pub fn put_output(outputs: &mut Tensors, name: &'static str, t: impl Into<Option<Tensor>>) -> Result<()> {
    if let Some(t) = t.into() {
        *output(outputs, name)? = t;
    }
    Ok(())
}
