//! Tensor-product plans: which (in1, in2, out) blocks couple, how (uvu or uvw), with which
//! normalization and where each path's weights sit: e3nn's `TensorProduct` instructions.
//!
//! A path (i1, i2, i_out) couples block i1 of x1 and block i2 of x2 into block i_out through
//! C = wigner_3j(l1, l2, l_out) (C[i, j, k]: i in x1's irrep, j in x2's, k in the output's):
//! - uvw (fully connected): out[w, k] += coef · Σ_uv W[u, v, w] Σ_ij C_ijk x1[u, i] x2[v, j],
//!   weights (m1, m2, m_out);
//! - uvu (channelwise, NequIP/MACE): out[u, k] += coef · Σ_v W[u, v] Σ_ij C_ijk x1[u, i] x2[v, j],
//!   weights (m1, m2), m_out = m1.
//!
//! coef = √(out_var · α / X) with α = 2l_out + 1 ('component' irrep normalization) or
//! (2l1+1)(2l2+1) ('norm'), X = Σ over the paths into the same output block of n (n = m2 for
//! uvu, m1·m2 for uvw) for 'element' path normalization, or n times the number of those paths
//! for 'path'; the input and output variances are 1. Weights are concatenated in path order.

use std::fmt;
use std::str::FromStr;

use super::irreps::{Irrep, Irreps, MulIr};
use super::wigner::{LMAX, wigner_3j};
use crate::core::error::{Error, Result};

/// How the multiplicities of a path are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Channelwise: output channel u takes x1's channel u and every channel v of x2.
    Uvu,
    /// Fully connected: every (u, v) pair feeds every output channel w.
    Uvw,
}

impl Mode {
    /// `uvu` or `uvw`.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Uvu => "uvu",
            Mode::Uvw => "uvw",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uvu" => Ok(Mode::Uvu),
            "uvw" => Ok(Mode::Uvw),
            _ => Err(Error::InvalidValue { arg: "mode", reason: format!("expected uvu or uvw, got {s:?}") }),
        }
    }
}

/// e3nn's `path_normalization`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathNormalization {
    /// Every element feeding an output block counts the same (e3nn's default).
    Element,
    /// Every path into an output block counts the same.
    Path,
}

/// e3nn's `irrep_normalization`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrrepNormalization {
    /// α = 2l_out + 1 (e3nn's default).
    Component,
    /// α = (2l1+1)(2l2+1).
    Norm,
}

/// One path of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Instruction {
    /// Block of x1.
    pub i1: usize,
    /// Block of x2.
    pub i2: usize,
    /// Block of the output.
    pub i_out: usize,
    /// uvu or uvw.
    pub mode: Mode,
    /// The path coefficient √(α/X).
    pub coef: f64,
    /// Where this path's weights start in a weight vector.
    pub weight_offset: usize,
    /// Its number of weights: m1·m2 (uvu) or m1·m2·m_out (uvw).
    pub weight_numel: usize,
    /// The nonzero entries (i, j, k, C_ijk) of wigner_3j(l1, l2, l_out).
    pub cg: Vec<(usize, usize, usize, f64)>,
}

/// A validated tensor product.
#[derive(Clone, Debug, PartialEq)]
pub struct TpPlan {
    /// Irreps of x1.
    pub irreps_in1: Irreps,
    /// Irreps of x2.
    pub irreps_in2: Irreps,
    /// Irreps of the output.
    pub irreps_out: Irreps,
    /// The paths, in weight order.
    pub instructions: Vec<Instruction>,
    /// Total number of weights of one sample.
    pub weight_numel: usize,
}

fn check_irreps(arg: &'static str, irreps: &Irreps) -> Result<()> {
    for b in irreps.blocks() {
        if b.ir.l > LMAX {
            return Err(Error::InvalidValue {
                arg,
                reason: format!("{irreps} has l = {} above the supported lmax {LMAX}", b.ir.l),
            });
        }
    }
    Ok(())
}

impl TpPlan {
    /// A plan from explicit paths (i1, i2, i_out, mode). Typed errors for a block index out of
    /// range, a path the selection rules forbid, uvu with m_out ≠ m1, or l > 4.
    pub fn new(
        irreps_in1: &Irreps,
        irreps_in2: &Irreps,
        irreps_out: &Irreps,
        paths: &[(usize, usize, usize, Mode)],
        path_normalization: PathNormalization,
        irrep_normalization: IrrepNormalization,
    ) -> Result<TpPlan> {
        check_irreps("irreps_in1", irreps_in1)?;
        check_irreps("irreps_in2", irreps_in2)?;
        check_irreps("irreps_out", irreps_out)?;
        let (b1, b2, bo) = (irreps_in1.blocks(), irreps_in2.blocks(), irreps_out.blocks());
        for (n, &(i1, i2, io, mode)) in paths.iter().enumerate() {
            if i1 >= b1.len() || i2 >= b2.len() || io >= bo.len() {
                return Err(Error::InvalidValue {
                    arg: "instructions",
                    reason: format!(
                        "path {n} ({i1}, {i2}, {io}) indexes past the blocks ({}, {}, {})",
                        b1.len(),
                        b2.len(),
                        bo.len()
                    ),
                });
            }
            if !b1[i1].ir.couples_to(b2[i2].ir, bo[io].ir) {
                return Err(Error::InvalidValue {
                    arg: "instructions",
                    reason: format!("path {n}: {} ⊗ {} does not contain {}", b1[i1].ir, b2[i2].ir, bo[io].ir),
                });
            }
            if mode == Mode::Uvu && bo[io].mul != b1[i1].mul {
                return Err(Error::InvalidValue {
                    arg: "instructions",
                    reason: format!("path {n} is uvu but the output has {} channels, x1 {}", bo[io].mul, b1[i1].mul),
                });
            }
        }
        let numel = |&(i1, i2, _, mode): &(usize, usize, usize, Mode)| -> usize {
            match mode {
                Mode::Uvu => b2[i2].mul,
                Mode::Uvw => b1[i1].mul * b2[i2].mul,
            }
        };
        let mut instructions = Vec::with_capacity(paths.len());
        let mut weight_offset = 0;
        for path in paths {
            let &(i1, i2, io, mode) = path;
            let (ir1, ir2, iro) = (b1[i1].ir, b2[i2].ir, bo[io].ir);
            let alpha = match irrep_normalization {
                IrrepNormalization::Component => iro.dim() as f64,
                IrrepNormalization::Norm => (ir1.dim() * ir2.dim()) as f64,
            };
            let same_out = paths.iter().filter(|p| p.2 == io);
            let x = match path_normalization {
                PathNormalization::Element => same_out.map(numel).sum::<usize>() as f64,
                PathNormalization::Path => (numel(path) * same_out.count()) as f64,
            };
            let coef = if x > 0.0 { (alpha / x).sqrt() } else { alpha.sqrt() };
            let weight_numel = match mode {
                Mode::Uvu => b1[i1].mul * b2[i2].mul,
                Mode::Uvw => b1[i1].mul * b2[i2].mul * bo[io].mul,
            };
            let cg = wigner_3j(ir1.l, ir2.l, iro.l)?.nonzeros();
            instructions.push(Instruction { i1, i2, i_out: io, mode, coef, weight_offset, weight_numel, cg });
            weight_offset += weight_numel;
        }
        Ok(TpPlan {
            irreps_in1: irreps_in1.clone(),
            irreps_in2: irreps_in2.clone(),
            irreps_out: irreps_out.clone(),
            instructions,
            weight_numel: weight_offset,
        })
    }

    /// e3nn's `FullyConnectedTensorProduct`: the irreps simplified, then every uvw path the
    /// selection rules allow, in the order (i1, i2, i_out), 'component' irrep normalization.
    pub fn fully_connected(
        irreps_in1: &Irreps,
        irreps_in2: &Irreps,
        irreps_out: &Irreps,
        path_normalization: PathNormalization,
    ) -> Result<TpPlan> {
        let (a, b, c) = (irreps_in1.simplify(), irreps_in2.simplify(), irreps_out.simplify());
        let paths = allowed(&a, &b, &c, |_, _, _| true, Mode::Uvw);
        TpPlan::new(&a, &b, &c, &paths, path_normalization, IrrepNormalization::Component)
    }

    /// Channelwise (NequIP/MACE): every (i1, i2, i_out) the selection rules allow whose output
    /// has as many channels as x1's block, in the order (i1, i2, i_out), uvu, 'component'
    /// irrep normalization; the irreps are taken as given.
    pub fn channelwise(
        irreps_in1: &Irreps,
        irreps_in2: &Irreps,
        irreps_out: &Irreps,
        path_normalization: PathNormalization,
    ) -> Result<TpPlan> {
        let paths = allowed(irreps_in1, irreps_in2, irreps_out, |m1, _, mo| m1.mul == mo.mul, Mode::Uvu);
        TpPlan::new(irreps_in1, irreps_in2, irreps_out, &paths, path_normalization, IrrepNormalization::Component)
    }

    /// [`TpPlan::channelwise`] for `Mode::Uvu`, [`TpPlan::fully_connected`] for `Mode::Uvw`:
    /// the instruction lists of `kiln run`.
    pub fn with_mode(
        mode: Mode,
        irreps_in1: &Irreps,
        irreps_in2: &Irreps,
        irreps_out: &Irreps,
        path_normalization: PathNormalization,
    ) -> Result<TpPlan> {
        match mode {
            Mode::Uvu => TpPlan::channelwise(irreps_in1, irreps_in2, irreps_out, path_normalization),
            Mode::Uvw => TpPlan::fully_connected(irreps_in1, irreps_in2, irreps_out, path_normalization),
        }
    }

    /// Forward FLOPs of one sample counted as OpenEquivariance does: 3·nnz(C)·m1·m2 per path
    /// plus the weight contraction (2·m1·m2·(2l_out+1) per uvu path, 2·m1·m2·m_out·(2l_out+1)
    /// per uvw path).
    pub fn flops_forward(&self) -> u64 {
        let (b1, b2, bo) = (self.irreps_in1.blocks(), self.irreps_in2.blocks(), self.irreps_out.blocks());
        self.instructions
            .iter()
            .map(|ins| {
                let (m1, m2) = (b1[ins.i1].mul as u64, b2[ins.i2].mul as u64);
                let dout = bo[ins.i_out].ir.dim() as u64;
                let weights = match ins.mode {
                    Mode::Uvu => 2 * m1 * m2 * dout,
                    Mode::Uvw => 2 * m1 * m2 * bo[ins.i_out].mul as u64 * dout,
                };
                3 * ins.cg.len() as u64 * m1 * m2 + weights
            })
            .sum()
    }
}

fn allowed(
    a: &Irreps,
    b: &Irreps,
    c: &Irreps,
    keep: impl Fn(&MulIr, &MulIr, &MulIr) -> bool,
    mode: Mode,
) -> Vec<(usize, usize, usize, Mode)> {
    let mut paths = Vec::new();
    for (i1, m1) in a.blocks().iter().enumerate() {
        for (i2, m2) in b.blocks().iter().enumerate() {
            for (io, mo) in c.blocks().iter().enumerate() {
                let ok: bool = Irrep::couples_to(m1.ir, m2.ir, mo.ir) && keep(m1, m2, mo);
                if ok {
                    paths.push((i1, i2, io, mode));
                }
            }
        }
    }
    paths
}
