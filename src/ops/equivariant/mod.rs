//! The equivariant family's registry entries `equivariant/sh` (spherical harmonics of
//! vectors) and `equivariant/hessian` (HIP Hessian assembly), each with its backward. The
//! tensor product and the convolution, which take irreps strings, are in tp.rs; the
//! convolution's edge layouts (`equivariant/graph`) in graph.rs.

pub mod graph;
mod naive;
pub mod tp;

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::families::equivariant::sh::{Sh, ShNormalization, ShTable, sh_dim};
use crate::families::equivariant::{cpu, hessian, hessian_backward, spherical_harmonics, spherical_harmonics_backward};
use crate::ops::check_row::{CheckRow, central_difference, rms_key};
use crate::ops::params::Params;
use crate::ops::registry::{ArgSpec, Array, Arrays, Direction, Op, Problem, Tensors, input, no_direction, put_output};
use crate::ops::self_check::reference_row;

/// The two ops with registry entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EquivariantOp {
    /// `sh`: vec `[n, 3]` → sh `[n, (lmax+1)²]`; backward vec, dsh → dvec.
    Sh,
    /// `hessian`: edge_feat `[edges, 9]`, node_feat `[atoms, 9]`, src, dst → hessian; backward
    /// dhessian → dedge_feat, dnode_feat.
    Hessian,
}

/// Both ops, as registry entries.
pub fn entries() -> Vec<Box<dyn Op>> {
    vec![Box::new(EquivariantOp::Sh), Box::new(EquivariantOp::Hessian)]
}

fn normal(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

fn get(params: &Params, name: &'static str) -> Result<f64> {
    params.get(name).copied().ok_or(Error::InvalidValue { arg: name, reason: "missing parameter".into() })
}

/// The spherical-harmonics options of the parameters `lmax`, `normalization` (0 component,
/// 1 norm, 2 integral) and `normalize` (0 or 1).
fn sh_of(params: &Params) -> Result<Sh> {
    let lmax = get(params, "lmax")?;
    if !(0.0..=4.0).contains(&lmax) || lmax.fract() != 0.0 {
        return Err(Error::InvalidValue { arg: "lmax", reason: format!("an integer 0..=4, got {lmax}") });
    }
    let normalization = match get(params, "normalization")? {
        0.0 => ShNormalization::Component,
        1.0 => ShNormalization::Norm,
        2.0 => ShNormalization::Integral,
        v => {
            return Err(Error::InvalidValue {
                arg: "normalization",
                reason: format!("0 (component), 1 (norm) or 2 (integral), got {v}"),
            });
        }
    };
    Ok(Sh { lmax: lmax as u32, normalization, normalize: get(params, "normalize")? != 0.0 })
}

/// Atoms per molecule (`n_atoms`; 0: one molecule of every atom) → the molecule sizes.
fn molecules(params: &Params, atoms: usize) -> Result<Vec<usize>> {
    let n = get(params, "n_atoms")?;
    if n < 0.0 || n.fract() != 0.0 {
        return Err(Error::InvalidValue { arg: "n_atoms", reason: format!("a whole number, got {n}") });
    }
    let n = n as usize;
    if n == 0 {
        return Ok(vec![atoms]);
    }
    if atoms % n != 0 {
        return Err(Error::InvalidValue { arg: "n_atoms", reason: format!("{atoms} atoms are not molecules of {n}") });
    }
    Ok(vec![n; atoms / n])
}

fn indices(a: &Array) -> Vec<i64> {
    a.data.iter().map(|&v| v as i64).collect()
}

fn hessian_len(sizes: &[usize]) -> usize {
    sizes.iter().map(|n| 9 * n * n).sum()
}

fn hessian_shape(sizes: &[usize]) -> Vec<usize> {
    match sizes {
        &[n] => vec![3 * n, 3 * n],
        _ => vec![hessian_len(sizes)],
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl EquivariantOp {
    /// The naive backward of the spherical harmonics in the kernel's compute type (f32; f64 for
    /// f64 storage): each term dsh·∂Y rounded to `dtype`
    /// and summed in order, then the normalization's projection; and the root
    /// sum of squares of the terms.
    fn sh_naive_backward(sh: &Sh, vecs: &[f64], dsh: &[f64], dtype: DType) -> Result<(Vec<f64>, Vec<f64>)> {
        let table = ShTable::new(sh.lmax)?;
        let d = sh_dim(sh.lmax);
        let scales: Vec<f64> =
            (0..=sh.lmax).flat_map(|l| std::iter::repeat_n(sh.normalization.factor(l), 2 * l as usize + 1)).collect();
        let (mut y, mut g) = (vec![0.0; d], vec![[0.0; 3]; d]);
        let (mut naive, mut rms) = (Vec::with_capacity(vecs.len()), Vec::with_capacity(vecs.len()));
        for (x, dy) in vecs.chunks_exact(3).zip(dsh.chunks_exact(d)) {
            let r = (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt();
            let u = if sh.normalize && r > 0.0 { [x[0] / r, x[1] / r, x[2] / r] } else { [x[0], x[1], x[2]] };
            table.eval(u, &mut y, Some(&mut g));
            // Every operation rounded to the kernel's compute type (f32, or f64 for f64).
            let c = |v: f64| dtype.round_compute(v);
            let mut acc = [0.0f64; 3];
            let mut sq = [0.0f64; 3];
            for i in 0..d {
                for a in 0..3 {
                    let term = dy[i] * scales[i] * g[i][a];
                    acc[a] = c(acc[a] + c(dtype.round(term)));
                    sq[a] += term * term;
                }
            }
            let v: [f64; 3] = if !sh.normalize {
                acc
            } else if r == 0.0 {
                [0.0; 3]
            } else {
                let uc = u.map(c);
                let dotp = c(c(c(acc[0] * uc[0]) + c(acc[1] * uc[1])) + c(acc[2] * uc[2]));
                let inv = c(1.0 / r);
                [0, 1, 2].map(|a| c(c(acc[a] - c(uc[a] * dotp)) * inv))
            };
            naive.extend(v);
            let scale = if sh.normalize && r > 0.0 { 1.0 / r } else { 1.0 };
            rms.extend(sq.map(|s| s.sqrt() * scale));
        }
        Ok((naive, rms))
    }
}

impl Op for EquivariantOp {
    fn family(&self) -> &'static str {
        "equivariant"
    }

    /// The 32- and 16-bit storages, and f64 (f64 math end to end).
    fn dtypes(&self) -> &'static [DType] {
        &DType::FLOATS_AND_F64
    }

    fn name(&self) -> &'static str {
        match self {
            EquivariantOp::Sh => "sh",
            EquivariantOp::Hessian => "hessian",
        }
    }

    fn inputs(&self, dir: Direction) -> Vec<ArgSpec> {
        match (self, dir) {
            // No double backward (outputs, reference and run refuse it).
            (_, Direction::Bwd2) => vec![],
            (EquivariantOp::Sh, Direction::Fwd) => vec![ArgSpec::op("vec")],
            (EquivariantOp::Sh, Direction::Bwd) => vec![ArgSpec::op("vec"), ArgSpec::op("dsh")],
            (EquivariantOp::Hessian, Direction::Fwd) => {
                vec![ArgSpec::op("edge_feat"), ArgSpec::op("node_feat"), ArgSpec::i32("src"), ArgSpec::i32("dst")]
            }
            (EquivariantOp::Hessian, Direction::Bwd) => vec![
                ArgSpec::op("edge_feat"),
                ArgSpec::op("node_feat"),
                ArgSpec::i32("src"),
                ArgSpec::i32("dst"),
                ArgSpec::op("dhessian"),
            ],
        }
    }

    fn outputs(&self, dir: Direction, problem: &Problem) -> Result<Vec<(ArgSpec, Vec<usize>)>> {
        Ok(match (self, dir) {
            (_, Direction::Bwd2) => return Err(no_direction(self, dir)),
            (EquivariantOp::Sh, Direction::Fwd) => {
                let n = problem.input_shape("vec")?[0];
                vec![(ArgSpec::op("sh"), vec![n, sh_dim(sh_of(&problem.params)?.lmax)])]
            }
            (EquivariantOp::Sh, Direction::Bwd) => {
                // A sum of (lmax+1)² products per element: checked with the reduction rule.
                vec![(ArgSpec { reduction: true, ..ArgSpec::op("dvec") }, problem.input_shape("vec")?)]
            }
            (EquivariantOp::Hessian, Direction::Fwd) => {
                let atoms = problem.input_shape("node_feat")?[0];
                vec![(ArgSpec::op("hessian"), hessian_shape(&molecules(&problem.params, atoms)?))]
            }
            (EquivariantOp::Hessian, Direction::Bwd) => vec![
                (ArgSpec::op("dedge_feat"), problem.input_shape("edge_feat")?),
                (ArgSpec::op("dnode_feat"), problem.input_shape("node_feat")?),
            ],
        })
    }

    fn params(&self) -> &'static [(&'static str, f64)] {
        match self {
            EquivariantOp::Sh => &[("lmax", 3.0), ("normalization", 0.0), ("normalize", 1.0)],
            EquivariantOp::Hessian => &[("n_atoms", 0.0)],
        }
    }

    fn launcher(&self, dir: Direction) -> String {
        format!("kiln_equivariant_{}_{}", self.name(), dir.name())
    }

    /// sh: shape `[n, 3]` (vectors). hessian: shape `[molecules, atoms per molecule]`, three
    /// edges per atom within its molecule.
    fn random_problem(&self, dir: Direction, shape: &[usize], rng: &mut StdRng) -> Problem {
        let mut p = Problem::default();
        for (name, v) in self.params() {
            p.params.insert(name.to_string(), *v);
        }
        match self {
            EquivariantOp::Sh => {
                let n = shape[0];
                p.params.insert("lmax".into(), 4.0);
                p.inputs.insert("vec".into(), Array::new(vec![n, 3], normal(3 * n, rng)));
                if dir == Direction::Bwd {
                    p.inputs.insert("dsh".into(), Array::new(vec![n, 25], normal(25 * n, rng)));
                }
            }
            EquivariantOp::Hessian => {
                let (mols, per) = (shape[0].max(1), shape.get(1).copied().unwrap_or(1).max(1));
                let atoms = mols * per;
                p.params.insert("n_atoms".into(), if mols == 1 { 0.0 } else { per as f64 });
                let (mut src, mut dst) = (Vec::new(), Vec::new());
                for m in 0..mols {
                    for _ in 0..3 * per {
                        src.push((m * per + rng.random_range(0..per)) as f64);
                        dst.push((m * per + rng.random_range(0..per)) as f64);
                    }
                }
                let edges = src.len();
                p.inputs.insert("edge_feat".into(), Array::new(vec![edges, 9], normal(9 * edges, rng)));
                p.inputs.insert("node_feat".into(), Array::new(vec![atoms, 9], normal(9 * atoms, rng)));
                p.inputs.insert("src".into(), Array::new(vec![edges], src));
                p.inputs.insert("dst".into(), Array::new(vec![edges], dst));
                if dir == Direction::Bwd {
                    let n = 9 * per * per * mols;
                    let shape = if mols == 1 { vec![3 * per, 3 * per] } else { vec![n] };
                    p.inputs.insert("dhessian".into(), Array::new(shape, normal(n, rng)));
                }
            }
        }
        p
    }

    fn reference(&self, dir: Direction, problem: &Problem) -> Result<Arrays> {
        let spec = self.outputs(dir, problem)?;
        let mut out = Arrays::new();
        match (self, dir) {
            (_, Direction::Bwd2) => return Err(no_direction(self, dir)),
            (EquivariantOp::Sh, Direction::Fwd) => {
                let y = sh_of(&problem.params)?.forward(&problem.input("vec")?.data)?;
                out.insert("sh".into(), Array::new(spec[0].1.clone(), y));
            }
            (EquivariantOp::Sh, Direction::Bwd) => {
                let s = sh_of(&problem.params)?;
                let dx = s.backward(&problem.input("vec")?.data, &problem.input("dsh")?.data)?;
                out.insert("dvec".into(), Array::new(spec[0].1.clone(), dx));
            }
            (EquivariantOp::Hessian, dir) => {
                let (ef, nf) = (problem.input("edge_feat")?, problem.input("node_feat")?);
                let sizes = molecules(&problem.params, nf.shape[0])?;
                let (src, dst) = (indices(problem.input("src")?), indices(problem.input("dst")?));
                if dir == Direction::Fwd {
                    let h = cpu::hessian_forward(&ef.data, &nf.data, &src, &dst, &sizes)?;
                    out.insert("hessian".into(), Array::new(spec[0].1.clone(), h));
                } else {
                    let dh = &problem.input("dhessian")?.data;
                    let (de, dn) = cpu::hessian_backward(&ef.data, &nf.data, &src, &dst, &sizes, dh)?;
                    out.insert("dedge_feat".into(), Array::new(ef.shape.clone(), de));
                    out.insert("dnode_feat".into(), Array::new(nf.shape.clone(), dn));
                }
            }
        }
        Ok(out)
    }

    fn naive_reductions(&self, dir: Direction, problem: &Problem, dtype: DType) -> Result<Arrays> {
        let mut out = Arrays::new();
        if let (EquivariantOp::Sh, Direction::Bwd) = (self, dir) {
            let s = sh_of(&problem.params)?;
            let vec = problem.input("vec")?;
            let (naive, rms) = Self::sh_naive_backward(&s, &vec.data, &problem.input("dsh")?.data, dtype)?;
            out.insert("dvec".into(), Array::new(vec.shape.clone(), naive));
            out.insert(rms_key("dvec"), Array::new(vec.shape.clone(), rms));
        }
        Ok(out)
    }

    fn run(&self, dir: Direction, inputs: &Tensors, params: &Params, outputs: &mut Tensors) -> Result<()> {
        match (self, dir) {
            (_, Direction::Bwd2) => Err(no_direction(self, dir)),
            (EquivariantOp::Sh, Direction::Fwd) => {
                put_output(outputs, "sh", spherical_harmonics(&sh_of(params)?, input(inputs, "vec")?)?)
            }
            (EquivariantOp::Sh, Direction::Bwd) => {
                let dvec = spherical_harmonics_backward(&sh_of(params)?, input(inputs, "vec")?, input(inputs, "dsh")?)?;
                put_output(outputs, "dvec", dvec)
            }
            (EquivariantOp::Hessian, dir) => {
                let (ef, nf) = (input(inputs, "edge_feat")?, input(inputs, "node_feat")?);
                let (src, dst) = (input(inputs, "src")?, input(inputs, "dst")?);
                let sizes = molecules(params, nf.shape()[0])?;
                if dir == Direction::Fwd {
                    put_output(outputs, "hessian", hessian(ef, nf, src, dst, &sizes)?)
                } else {
                    let dh = input(inputs, "dhessian")?;
                    let (de, dn) = hessian_backward(ef, nf, src, dst, &sizes, dh)?;
                    put_output(outputs, "dedge_feat", de)?;
                    put_output(outputs, "dnode_feat", dn)
                }
            }
        }
    }

    fn bytes(&self, dir: Direction, problem: &Problem, dtype: DType) -> u64 {
        let size = dtype.size_in_bytes() as u64;
        let elems = |name: &'static str| problem.get(name).map_or(0, |a| a.data.len() as u64);
        match (self, dir) {
            (_, Direction::Bwd2) => 0,
            (EquivariantOp::Sh, Direction::Fwd) => {
                let d = sh_of(&problem.params).map_or(0, |s| sh_dim(s.lmax)) as u64;
                (elems("vec") + elems("vec") / 3 * d) * size
            }
            (EquivariantOp::Sh, Direction::Bwd) => (2 * elems("vec") + elems("dsh")) * size,
            (EquivariantOp::Hessian, Direction::Fwd) => {
                let out = problem.get("node_feat").and_then(|nf| molecules(&problem.params, nf.shape[0]).ok());
                (elems("edge_feat") + elems("node_feat") + out.map_or(0, |s| hessian_len(&s) as u64)) * size
                    + 8 * elems("src")
            }
            (EquivariantOp::Hessian, Direction::Bwd) => {
                (2 * (elems("edge_feat") + elems("node_feat")) + elems("dhessian")) * size + 8 * elems("src")
            }
        }
    }

    fn flops(&self, dir: Direction, problem: &Problem) -> u64 {
        let elems = |name: &'static str| problem.get(name).map_or(0, |a| a.data.len() as u64);
        match self {
            // About 3 multiply-adds per recursion coefficient (~150 for lmax 4), twice backward.
            EquivariantOp::Sh => {
                let terms: u64 = sh_of(&problem.params)
                    .and_then(|s| ShTable::new(s.lmax))
                    .map_or(0, |t| t.steps.iter().map(|s| s.len() as u64).sum());
                let per = if dir == Direction::Fwd { 3 * terms } else { 9 * terms };
                elems("vec") / 3 * per
            }
            // 9 blocks of 9 multiply-adds per edge and atom, twice for the transpose.
            EquivariantOp::Hessian => (elems("edge_feat") + elems("node_feat")) / 9 * 2 * 81 * 2,
        }
    }

    fn check_shapes(&self) -> Vec<Vec<usize>> {
        match self {
            EquivariantOp::Sh => vec![vec![1, 3], vec![7, 3], vec![33, 3], vec![1000, 3], vec![1 << 20, 3]],
            // The last is past the emulator's budget (tests/suite/common.rs): a GPU-only size.
            EquivariantOp::Hessian => vec![vec![1, 1], vec![1, 5], vec![3, 4], vec![8, 17], vec![8192, 33]],
        }
    }

    fn bench_shape_gpu(&self) -> Vec<usize> {
        match self {
            EquivariantOp::Sh => vec![1 << 22, 3],
            EquivariantOp::Hessian => vec![256, 64],
        }
    }

    fn bench_shape_cpu(&self) -> Vec<usize> {
        match self {
            EquivariantOp::Sh => vec![1 << 14, 3],
            EquivariantOp::Hessian => vec![8, 32],
        }
    }

    fn self_checks(&self, rng: &mut StdRng) -> Vec<CheckRow> {
        let mut rows = Vec::new();
        match self {
            EquivariantOp::Sh => {
                for (normalization, normalize) in
                    [(ShNormalization::Component, true), (ShNormalization::Integral, false)]
                {
                    let s = Sh { lmax: 4, normalization, normalize };
                    let v = normal(3 * 5, rng);
                    let dsh = normal(5 * 25, rng);
                    let analytic = s.backward(&v, &dsh).unwrap_or_default();
                    let fd: Vec<f64> = (0..v.len())
                        .map(|i| {
                            central_difference(
                                |t| {
                                    let mut w = v.clone();
                                    w[i] = t;
                                    dot(&s.forward(&w).unwrap_or_default(), &dsh)
                                },
                                v[i],
                                1e-5,
                            )
                        })
                        .collect();
                    rows.push(reference_row(
                        self,
                        format!("finite differences dvec ({normalization}, normalize={normalize})"),
                        &analytic,
                        &fd,
                        1e-6,
                    ));
                }
                // Component normalization: ‖Y^l(x̂)‖² = 2l+1.
                let s = Sh { lmax: 4, normalization: ShNormalization::Component, normalize: true };
                let y = s.forward(&normal(3, rng)).unwrap_or_default();
                let norms: Vec<f64> =
                    (0..5).map(|l| y[l * l..(l + 1) * (l + 1)].iter().map(|v| v * v).sum::<f64>()).collect();
                let want: Vec<f64> = (0..5).map(|l| (2 * l + 1) as f64).collect();
                rows.push(reference_row(self, "component norms 2l+1", &norms, &want, 1e-12));
            }
            EquivariantOp::Hessian => {
                let p = self.random_problem(Direction::Bwd, &[2, 4], rng);
                let r = (|| -> Result<[Vec<f64>; 4]> {
                    let (ef, nf) = (p.input("edge_feat")?, p.input("node_feat")?);
                    let (src, dst) = (indices(p.input("src")?), indices(p.input("dst")?));
                    let sizes = molecules(&p.params, nf.shape[0])?;
                    let dh = &p.input("dhessian")?.data;
                    let (de, _) = cpu::hessian_backward(&ef.data, &nf.data, &src, &dst, &sizes, dh)?;
                    // The assembly is linear: the gradient is exact against central differences.
                    let fd: Vec<f64> = (0..ef.data.len())
                        .map(|i| {
                            central_difference(
                                |t| {
                                    let mut w = ef.data.clone();
                                    w[i] = t;
                                    dot(&cpu::hessian_forward(&w, &nf.data, &src, &dst, &sizes).unwrap_or_default(), dh)
                                },
                                ef.data[i],
                                1e-3,
                            )
                        })
                        .collect();
                    let h = cpu::hessian_forward(&ef.data, &nf.data, &src, &dst, &sizes)?;
                    let mut transposed = h.clone();
                    let mut at = 0;
                    for &n in &sizes {
                        let m = 3 * n;
                        for r in 0..m {
                            for c in 0..m {
                                transposed[at + r * m + c] = h[at + c * m + r];
                            }
                        }
                        at += m * m;
                    }
                    Ok([de, fd, h, transposed])
                })();
                match r {
                    Ok([de, fd, h, t]) => {
                        rows.push(reference_row(self, "finite differences dedge_feat", &de, &fd, 1e-8));
                        rows.push(reference_row(self, "H = Hᵀ exactly", &h, &t, 0.0));
                    }
                    Err(e) => rows.push(reference_row(self, format!("reference failed: {e}"), &[1.0], &[0.0], 0.0)),
                }
            }
        }
        rows
    }
}
