//! The tensor product and the convolution as sums of terms, summed the naive way: each term
//! rounded to the run's dtype and added in order into an f32 accumulator. Every output and
//! gradient element of these ops is such a sum (over paths, channels, CG entries and, for the
//! convolution, edges), so the registry checks them with the reduction rule (check_row.rs), whose
//! yardstick this is; the root sum of squares of the terms goes with it.

use crate::core::dtype::DType;
use crate::families::equivariant::tp::{Mode, TpPlan};

/// The output a term adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Out,
    Dx1,
    Dx2,
    Dw,
}

/// Calls `add(target, index, term)` for every term of one sample: the forward's terms of out
/// (`dout` absent), or the backward's of dx1, dx2 and dw (`dout` given). Indices are within
/// the sample: a row of out, x1 or x2, or the sample's weight vector.
fn for_each_term(
    plan: &TpPlan,
    (x1, x2, w): (&[f64], &[f64], &[f64]),
    dout: Option<&[f64]>,
    mut add: impl FnMut(Target, usize, f64),
) {
    let (o1, o2, oo) = (plan.irreps_in1.offsets(), plan.irreps_in2.offsets(), plan.irreps_out.offsets());
    let (b1, b2, bo) = (plan.irreps_in1.blocks(), plan.irreps_in2.blocks(), plan.irreps_out.blocks());
    for ins in &plan.instructions {
        let (m1, d1) = (b1[ins.i1].mul, b1[ins.i1].ir.dim());
        let (m2, d2) = (b2[ins.i2].mul, b2[ins.i2].ir.dim());
        let (mo, dk) = (bo[ins.i_out].mul, bo[ins.i_out].ir.dim());
        for u in 0..m1 {
            for v in 0..m2 {
                // (output channel, weight index) pairs this (u, v) feeds.
                let channels: Vec<(usize, usize)> = match ins.mode {
                    Mode::Uvu => vec![(u, u * m2 + v)],
                    Mode::Uvw => (0..mo).map(|ww| (ww, (u * m2 + v) * mo + ww)).collect(),
                };
                for &(i, j, k, c) in &ins.cg {
                    let (ia, ib) = (o1[ins.i1] + u * d1 + i, o2[ins.i2] + v * d2 + j);
                    let (a, b) = (x1[ia], x2[ib]);
                    for &(ch, wi) in &channels {
                        let (io, wa) = (oo[ins.i_out] + ch * dk + k, ins.weight_offset + wi);
                        let cw = ins.coef * c;
                        match dout {
                            None => add(Target::Out, io, cw * w[wa] * a * b),
                            Some(g) => {
                                add(Target::Dx1, ia, cw * w[wa] * b * g[io]);
                                add(Target::Dx2, ib, cw * w[wa] * a * g[io]);
                                add(Target::Dw, wa, cw * a * b * g[io]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One output summed naively, with the root sum of squares of its terms.
#[derive(Clone, Debug)]
pub struct NaiveSum {
    dtype: DType,
    /// Sums in the compute type of `dtype` (f32 values, or f64 for f64 storage).
    sum: Vec<f64>,
    squares: Vec<f64>,
}

impl NaiveSum {
    fn new(len: usize, dtype: DType) -> NaiveSum {
        NaiveSum { dtype, sum: vec![0.0; len], squares: vec![0.0; len] }
    }

    fn add(&mut self, i: usize, term: f64) {
        let d = self.dtype;
        self.sum[i] = d.round_compute(self.sum[i] + d.round_compute(d.round(term)));
        self.squares[i] += term * term;
    }

    /// Adds another pass's sums as an unfused framework would: each rounded to the storage
    /// dtype, then added in the compute type (and rounded when stored again by the caller).
    fn merge(mut self, other: &NaiveSum) -> NaiveSum {
        let d = self.dtype;
        for (i, (s, o)) in self.sum.iter_mut().zip(&other.sum).enumerate() {
            *s = d.round_compute(d.round(*s) + d.round(*o));
            self.squares[i] += other.squares[i];
        }
        self
    }

    /// The naive sums, widened to f64.
    pub fn values(&self) -> Vec<f64> {
        self.sum.clone()
    }

    /// The root sum of squares of each element's terms.
    pub fn rms(&self) -> Vec<f64> {
        self.squares.iter().map(|s| s.sqrt()).collect()
    }
}

/// Operands of a naive sum: x `[nodes, dim1]`, y `[rows, dim2]`, w `[W]` (shared) or
/// `[rows, W]`, and each row's (sender, receiver): (n, n) for the batched product, (src_e,
/// dst_e) for the convolution. Shapes are the caller's to check (the references do).
pub struct NaiveOperands<'a> {
    /// x1 (x).
    pub x: &'a [f64],
    /// x2 (y).
    pub y: &'a [f64],
    /// The weights.
    pub w: &'a [f64],
    /// (sender, receiver) of each row of y.
    pub rows: &'a [(usize, usize)],
}

impl NaiveOperands<'_> {
    fn shared(&self, plan: &TpPlan) -> bool {
        self.w.len() == plan.weight_numel
    }

    /// Calls `add` for each row's terms, with indices into the whole x, y, w and out.
    fn terms(&self, plan: &TpPlan, dout: Option<&[f64]>, mut add: impl FnMut(Target, usize, f64)) {
        let (d1, d2, dk, nw) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
        let shared = self.shared(plan);
        for (e, &(s, d)) in self.rows.iter().enumerate() {
            let w0 = if shared { 0 } else { e * nw };
            let x1 = &self.x[s * d1..(s + 1) * d1];
            let x2 = &self.y[e * d2..(e + 1) * d2];
            let g = dout.map(|g| &g[d * dk..(d + 1) * dk]);
            for_each_term(plan, (x1, x2, &self.w[w0..w0 + nw]), g, |t, i, v| {
                let at = match t {
                    Target::Out => d * dk + i,
                    Target::Dx1 => s * d1 + i,
                    Target::Dx2 => e * d2 + i,
                    Target::Dw => w0 + i,
                };
                add(t, at, v)
            });
        }
    }

    /// The forward's out `[nodes, dim_out]`, summed naively in `dtype`.
    pub fn forward(&self, plan: &TpPlan, nodes: usize, dtype: DType) -> NaiveSum {
        let mut out = NaiveSum::new(nodes * plan.irreps_out.dim(), dtype);
        self.terms(plan, None, |_, i, v| out.add(i, v));
        out
    }

    /// The backward's (dx, dy, dw) given dout `[nodes, dim_out]`, summed naively in `dtype`.
    pub fn backward(&self, plan: &TpPlan, dout: &[f64], dtype: DType) -> [NaiveSum; 3] {
        let mut sums = [self.x.len(), self.y.len(), self.w.len()].map(|n| NaiveSum::new(n, dtype));
        self.terms(plan, Some(dout), |t, i, v| {
            let k = match t {
                Target::Dx1 => 0,
                Target::Dx2 => 1,
                Target::Dw => 2,
                // The backward has no terms of out.
                Target::Out => return,
            };
            sums[k].add(i, v)
        });
        sums
    }

    /// The double backward's (gx, gy, gw, gdout) given dout and the upstream gradients
    /// (gdx, gdy, gdw), shaped as x, y, w: the three passes of kiln_equivariant_conv_bwd2, each
    /// an unfused forward and backward with one operand replaced, summed naively in `dtype`.
    pub fn double_backward(
        &self,
        plan: &TpPlan,
        dout: &[f64],
        up: [&[f64]; 3],
        nodes: usize,
        dtype: DType,
    ) -> [NaiveSum; 4] {
        let [gdx, gdy, gdw] = up;
        let with = |x, y, w| NaiveOperands { x, y, w, rows: self.rows };
        let (a, b, c) = (with(gdx, self.y, self.w), with(self.x, gdy, self.w), with(self.x, self.y, gdw));
        let gdout =
            a.forward(plan, nodes, dtype).merge(&b.forward(plan, nodes, dtype)).merge(&c.forward(plan, nodes, dtype));
        let [_, ay, aw] = a.backward(plan, dout, dtype);
        let [bx, _, bw] = b.backward(plan, dout, dtype);
        let [cx, cy, _] = c.backward(plan, dout, dtype);
        [bx.merge(&cx), ay.merge(&cy), aw.merge(&bw), gdout]
    }
}
