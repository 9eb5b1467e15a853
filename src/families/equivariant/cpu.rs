//! CPU references (f64): the batched tensor product, the fused convolution and the HIP
//! Hessian assembly, forward and backward. Plain loops, obviously right; the kernels are
//! checked against these.

use super::tp::{Mode, TpPlan};
use super::wigner::wigner_3j;
use crate::core::error::{Error, Result};

/// Gradients of a tensor product (or convolution).
#[derive(Clone, Debug, PartialEq)]
pub struct TpGrads {
    /// ∂L/∂x1, x1's shape.
    pub dx1: Vec<f64>,
    /// ∂L/∂x2, x2's shape.
    pub dx2: Vec<f64>,
    /// ∂L/∂w, w's shape (shared weights: summed over the samples).
    pub dw: Vec<f64>,
}

fn shape_err(arg: &'static str, expected: String, len: usize) -> Error {
    Error::Shape { arg, expected, got: vec![len] }
}

/// Checks `t` holds `rows` rows of `width`.
fn check_rows(arg: &'static str, t: &[f64], rows: usize, width: usize, what: &str) -> Result<()> {
    if t.len() != rows * width {
        return Err(shape_err(arg, format!("[{rows}, {width}] ({what})"), t.len()));
    }
    Ok(())
}

/// True when `w` is one shared weight vector, false when it is one per sample.
fn shared_weights(plan: &TpPlan, w: &[f64], samples: usize) -> Result<bool> {
    let n = plan.weight_numel;
    if w.len() == n {
        Ok(true)
    } else if w.len() == samples * n {
        Ok(false)
    } else {
        Err(shape_err("w", format!("[{n}] (shared) or [{samples}, {n}] (one set per sample)"), w.len()))
    }
}

/// out += TP(x1, x2; w) for one sample (x1: dim1, x2: dim2, w: weight_numel, out: dim_out).
pub fn tp_accumulate(plan: &TpPlan, x1: &[f64], x2: &[f64], w: &[f64], out: &mut [f64]) {
    let (o1, o2, oo) = (plan.irreps_in1.offsets(), plan.irreps_in2.offsets(), plan.irreps_out.offsets());
    let (b1, b2, bo) = (plan.irreps_in1.blocks(), plan.irreps_in2.blocks(), plan.irreps_out.blocks());
    for ins in &plan.instructions {
        let (m1, d1) = (b1[ins.i1].mul, b1[ins.i1].ir.dim());
        let (m2, d2) = (b2[ins.i2].mul, b2[ins.i2].ir.dim());
        let (mo, dout) = (bo[ins.i_out].mul, bo[ins.i_out].ir.dim());
        let a = &x1[o1[ins.i1]..o1[ins.i1 + 1]]; // (m1, d1)
        let b = &x2[o2[ins.i2]..o2[ins.i2 + 1]]; // (m2, d2)
        let wp = &w[ins.weight_offset..ins.weight_offset + ins.weight_numel];
        let o = &mut out[oo[ins.i_out]..oo[ins.i_out + 1]]; // (mo, dout)
        let mut t = vec![0.0; dout];
        for u in 0..m1 {
            for v in 0..m2 {
                // t_k = Σ_ij C_ijk a[u, i] b[v, j]
                t.fill(0.0);
                for &(i, j, k, c) in &ins.cg {
                    t[k] += c * a[u * d1 + i] * b[v * d2 + j];
                }
                match ins.mode {
                    Mode::Uvu => {
                        let s = ins.coef * wp[u * m2 + v];
                        for k in 0..dout {
                            o[u * dout + k] += s * t[k];
                        }
                    }
                    Mode::Uvw => {
                        for ww in 0..mo {
                            let s = ins.coef * wp[(u * m2 + v) * mo + ww];
                            for k in 0..dout {
                                o[ww * dout + k] += s * t[k];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Where one sample's gradients accumulate.
pub struct SampleGrads<'a> {
    /// ∂L/∂x1 of the sample (dim1).
    pub dx1: &'a mut [f64],
    /// ∂L/∂x2 of the sample (dim2).
    pub dx2: &'a mut [f64],
    /// ∂L/∂w of the sample's weights (weight_numel).
    pub dw: &'a mut [f64],
}

/// The gradients of one sample given dout (dim_out), accumulated into `g`.
pub fn tp_backward_accumulate(plan: &TpPlan, x1: &[f64], x2: &[f64], w: &[f64], dout: &[f64], g: SampleGrads) {
    let SampleGrads { dx1, dx2, dw } = g;
    let (o1, o2, oo) = (plan.irreps_in1.offsets(), plan.irreps_in2.offsets(), plan.irreps_out.offsets());
    let (b1, b2, bo) = (plan.irreps_in1.blocks(), plan.irreps_in2.blocks(), plan.irreps_out.blocks());
    for ins in &plan.instructions {
        let (m1, d1) = (b1[ins.i1].mul, b1[ins.i1].ir.dim());
        let (m2, d2) = (b2[ins.i2].mul, b2[ins.i2].ir.dim());
        let (mo, dk) = (bo[ins.i_out].mul, bo[ins.i_out].ir.dim());
        let (r1, r2) = (o1[ins.i1]..o1[ins.i1 + 1], o2[ins.i2]..o2[ins.i2 + 1]);
        let (a, b) = (&x1[r1.clone()], &x2[r2.clone()]);
        let g = &dout[oo[ins.i_out]..oo[ins.i_out + 1]]; // (mo, dk)
        let wr = ins.weight_offset..ins.weight_offset + ins.weight_numel;
        let wp = &w[wr.clone()];
        let mut t = vec![0.0; dk];
        let mut dt = vec![0.0; dk];
        for u in 0..m1 {
            for v in 0..m2 {
                t.fill(0.0);
                for &(i, j, k, c) in &ins.cg {
                    t[k] += c * a[u * d1 + i] * b[v * d2 + j];
                }
                // dt_k = ∂L/∂t_k; dw from t.
                dt.fill(0.0);
                match ins.mode {
                    Mode::Uvu => {
                        let wi = u * m2 + v;
                        let mut acc = 0.0;
                        for k in 0..dk {
                            acc += g[u * dk + k] * t[k];
                            dt[k] = ins.coef * wp[wi] * g[u * dk + k];
                        }
                        dw[wr.start + wi] += ins.coef * acc;
                    }
                    Mode::Uvw => {
                        for ww in 0..mo {
                            let wi = (u * m2 + v) * mo + ww;
                            let mut acc = 0.0;
                            for k in 0..dk {
                                acc += g[ww * dk + k] * t[k];
                                dt[k] += ins.coef * wp[wi] * g[ww * dk + k];
                            }
                            dw[wr.start + wi] += ins.coef * acc;
                        }
                    }
                }
                for &(i, j, k, c) in &ins.cg {
                    dx1[r1.start + u * d1 + i] += c * b[v * d2 + j] * dt[k];
                    dx2[r2.start + v * d2 + j] += c * a[u * d1 + i] * dt[k];
                }
            }
        }
    }
}

/// The batched tensor product: x1 `[batch, dim1]`, x2 `[batch, dim2]`, w `[W]` (shared) or
/// `[batch, W]` → `[batch, dim_out]`.
pub fn tp_forward(plan: &TpPlan, x1: &[f64], x2: &[f64], w: &[f64], batch: usize) -> Result<Vec<f64>> {
    let (d1, d2, dout) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim());
    check_rows("x1", x1, batch, d1, "irreps_in1")?;
    check_rows("x2", x2, batch, d2, "irreps_in2")?;
    let shared = shared_weights(plan, w, batch)?;
    let nw = plan.weight_numel;
    let mut out = vec![0.0; batch * dout];
    for s in 0..batch {
        let ws = if shared { w } else { &w[s * nw..(s + 1) * nw] };
        tp_accumulate(
            plan,
            &x1[s * d1..(s + 1) * d1],
            &x2[s * d2..(s + 1) * d2],
            ws,
            &mut out[s * dout..(s + 1) * dout],
        );
    }
    Ok(out)
}

/// The gradients of [`tp_forward`] given dout `[batch, dim_out]`.
pub fn tp_backward(plan: &TpPlan, x1: &[f64], x2: &[f64], w: &[f64], dout: &[f64], batch: usize) -> Result<TpGrads> {
    let (d1, d2, dk) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim());
    check_rows("x1", x1, batch, d1, "irreps_in1")?;
    check_rows("x2", x2, batch, d2, "irreps_in2")?;
    check_rows("dout", dout, batch, dk, "irreps_out")?;
    let shared = shared_weights(plan, w, batch)?;
    let nw = plan.weight_numel;
    let mut g = TpGrads { dx1: vec![0.0; x1.len()], dx2: vec![0.0; x2.len()], dw: vec![0.0; w.len()] };
    for s in 0..batch {
        let wr = if shared { 0..nw } else { s * nw..(s + 1) * nw };
        tp_backward_accumulate(
            plan,
            &x1[s * d1..(s + 1) * d1],
            &x2[s * d2..(s + 1) * d2],
            &w[wr.clone()],
            &dout[s * dk..(s + 1) * dk],
            SampleGrads {
                dx1: &mut g.dx1[s * d1..(s + 1) * d1],
                dx2: &mut g.dx2[s * d2..(s + 1) * d2],
                dw: &mut g.dw[wr],
            },
        );
    }
    Ok(g)
}

/// Validated edge list: each index in `0..n`.
fn check_indices(arg: &'static str, idx: &[i64], edges: usize, n: usize) -> Result<Vec<usize>> {
    if idx.len() != edges {
        return Err(shape_err(arg, format!("[{edges}] (one per edge)"), idx.len()));
    }
    idx.iter()
        .enumerate()
        .map(|(e, &i)| {
            if i < 0 || i as usize >= n {
                Err(Error::InvalidValue { arg, reason: format!("edge {e} has index {i}, outside 0..{n}") })
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}

/// The graph convolution `out[i] = Σ_{e: dst_e = i} TP(x[src_e], y_e; w_e)`: x `[nodes, dim1]`,
/// y `[edges, dim2]`, w `[W]` or `[edges, W]`, src and dst `[edges]` → `[nodes, dim_out]`.
pub fn conv_forward(plan: &TpPlan, x: &[f64], y: &[f64], w: &[f64], src: &[i64], dst: &[i64]) -> Result<Vec<f64>> {
    let (d1, d2, dout) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim());
    if d1 == 0 || x.len() % d1 != 0 {
        return Err(shape_err("x", format!("[nodes, {d1}] (irreps_in1)"), x.len()));
    }
    let nodes = x.len() / d1;
    let edges = src.len();
    check_rows("y", y, edges, d2, "irreps_in2")?;
    let (src, dst) = (check_indices("src", src, edges, nodes)?, check_indices("dst", dst, edges, nodes)?);
    let shared = shared_weights(plan, w, edges)?;
    let nw = plan.weight_numel;
    let mut out = vec![0.0; nodes * dout];
    for e in 0..edges {
        let we = if shared { w } else { &w[e * nw..(e + 1) * nw] };
        let (s, d) = (src[e], dst[e]);
        tp_accumulate(plan, &x[s * d1..(s + 1) * d1], &y[e * d2..(e + 1) * d2], we, &mut out[d * dout..(d + 1) * dout]);
    }
    Ok(out)
}

/// The gradients of [`conv_forward`] given dout `[nodes, dim_out]`: dx1 is dx `[nodes, dim1]`,
/// dx2 is dy `[edges, dim2]`, dw w's shape.
pub fn conv_backward(
    plan: &TpPlan,
    x: &[f64],
    y: &[f64],
    w: &[f64],
    src: &[i64],
    dst: &[i64],
    dout: &[f64],
) -> Result<TpGrads> {
    let (d1, d2, dk) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim());
    if d1 == 0 || x.len() % d1 != 0 {
        return Err(shape_err("x", format!("[nodes, {d1}] (irreps_in1)"), x.len()));
    }
    let nodes = x.len() / d1;
    let edges = src.len();
    check_rows("y", y, edges, d2, "irreps_in2")?;
    check_rows("dout", dout, nodes, dk, "irreps_out")?;
    let (src, dst) = (check_indices("src", src, edges, nodes)?, check_indices("dst", dst, edges, nodes)?);
    let shared = shared_weights(plan, w, edges)?;
    let nw = plan.weight_numel;
    let mut g = TpGrads { dx1: vec![0.0; x.len()], dx2: vec![0.0; y.len()], dw: vec![0.0; w.len()] };
    for e in 0..edges {
        let wr = if shared { 0..nw } else { e * nw..(e + 1) * nw };
        let (s, d) = (src[e], dst[e]);
        tp_backward_accumulate(
            plan,
            &x[s * d1..(s + 1) * d1],
            &y[e * d2..(e + 1) * d2],
            &w[wr.clone()],
            &dout[d * dk..(d + 1) * dk],
            SampleGrads {
                dx1: &mut g.dx1[s * d1..(s + 1) * d1],
                dx2: &mut g.dx2[e * d2..(e + 1) * d2],
                dw: &mut g.dw[wr],
            },
        );
    }
    Ok(g)
}

/// The upstream gradients of a double backward: of dx1, dx2 and dw, each shaped as x1, x2 and
/// w (`None`: zero).
#[derive(Clone, Copy, Debug, Default)]
pub struct Upstream<'a> {
    /// ∂L/∂(dx1), x1's shape.
    pub gdx1: Option<&'a [f64]>,
    /// ∂L/∂(dx2), x2's shape.
    pub gdx2: Option<&'a [f64]>,
    /// ∂L/∂(dw), w's shape.
    pub gdw: Option<&'a [f64]>,
}

/// Gradients of a double backward: of L = ⟨gdx1, dx1⟩ + ⟨gdx2, dx2⟩ + ⟨gdw, dw⟩ with respect
/// to the backward's inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct TpGrads2 {
    /// ∂L/∂x1, x1's shape.
    pub gx1: Vec<f64>,
    /// ∂L/∂x2, x2's shape.
    pub gx2: Vec<f64>,
    /// ∂L/∂w, w's shape.
    pub gw: Vec<f64>,
    /// ∂L/∂dout, dout's shape.
    pub gdout: Vec<f64>,
}

fn add_into(acc: &mut [f64], v: &[f64]) {
    for (a, b) in acc.iter_mut().zip(v) {
        *a += b;
    }
}

fn same_len(arg: &'static str, g: Option<&[f64]>, like: &[f64], of: &str) -> Result<()> {
    match g {
        Some(g) if g.len() != like.len() => {
            Err(shape_err(arg, format!("{} elements ({of}'s shape)", like.len()), g.len()))
        }
        _ => Ok(()),
    }
}

/// The double backward of a product linear in each of x, y and w, given its forward and
/// backward: ⟨gdx1, dx⟩ = ⟨dout, fwd(gdx1, y, w)⟩ and so on, so each upstream gradient stands in
/// for its operand in one forward (into gdout) and one backward (its other two gradients).
/// The operands and dout are checked by the caller; the upstream gradients' lengths here.
fn compose_double_backward(
    (x, y, w): (&[f64], &[f64], &[f64]),
    dout: &[f64],
    up: Upstream<'_>,
    fwd: impl Fn(&[f64], &[f64], &[f64]) -> Result<Vec<f64>>,
    bwd: impl Fn(&[f64], &[f64], &[f64]) -> Result<TpGrads>,
) -> Result<TpGrads2> {
    same_len("gdx1", up.gdx1, x, "x")?;
    same_len("gdx2", up.gdx2, y, "y")?;
    same_len("gdw", up.gdw, w, "w")?;
    let mut g = TpGrads2 {
        gx1: vec![0.0; x.len()],
        gx2: vec![0.0; y.len()],
        gw: vec![0.0; w.len()],
        gdout: vec![0.0; dout.len()],
    };
    if let Some(gdx) = up.gdx1 {
        add_into(&mut g.gdout, &fwd(gdx, y, w)?);
        let b = bwd(gdx, y, w)?;
        add_into(&mut g.gx2, &b.dx2);
        add_into(&mut g.gw, &b.dw);
    }
    if let Some(gdy) = up.gdx2 {
        add_into(&mut g.gdout, &fwd(x, gdy, w)?);
        let b = bwd(x, gdy, w)?;
        add_into(&mut g.gx1, &b.dx1);
        add_into(&mut g.gw, &b.dw);
    }
    if let Some(gdw) = up.gdw {
        add_into(&mut g.gdout, &fwd(x, y, gdw)?);
        let b = bwd(x, y, gdw)?;
        add_into(&mut g.gx1, &b.dx1);
        add_into(&mut g.gx2, &b.dx2);
    }
    Ok(g)
}

/// The double backward of [`conv_forward`]: the gradients of L = ⟨gdx1, dx⟩ + ⟨gdx2, dy⟩ +
/// ⟨gdw, dw⟩, (dx, dy, dw) = [`conv_backward`] given dout, with respect to x, y, w and dout
/// (composed of forwards and backwards: see compose_double_backward). The tests check it
/// against finite differences of L.
#[allow(clippy::too_many_arguments)]
pub fn conv_double_backward(
    plan: &TpPlan,
    x: &[f64],
    y: &[f64],
    w: &[f64],
    src: &[i64],
    dst: &[i64],
    dout: &[f64],
    up: Upstream<'_>,
) -> Result<TpGrads2> {
    // Validates the operands, indices and dout even when no upstream gradient is given.
    conv_backward(plan, x, y, w, src, dst, dout)?;
    compose_double_backward(
        (x, y, w),
        dout,
        up,
        |x, y, w| conv_forward(plan, x, y, w, src, dst),
        |x, y, w| conv_backward(plan, x, y, w, src, dst, dout),
    )
}

/// The double backward of [`tp_forward`] (as [`conv_double_backward`]).
pub fn tp_double_backward(
    plan: &TpPlan,
    x1: &[f64],
    x2: &[f64],
    w: &[f64],
    dout: &[f64],
    batch: usize,
    up: Upstream<'_>,
) -> Result<TpGrads2> {
    // Validates the operands and dout even when no upstream gradient is given.
    tp_backward(plan, x1, x2, w, dout, batch)?;
    compose_double_backward(
        (x1, x2, w),
        dout,
        up,
        |x1, x2, w| tp_forward(plan, x1, x2, w, batch),
        |x1, x2, w| tp_backward(plan, x1, x2, w, dout, batch),
    )
}

/// Width of a HIP feature: l = 0, 1, 2 (1 + 3 + 5 components, in that order).
pub const HESSIAN_FEAT: usize = 9;

/// `B[a][b][c]`: the 3×3 block of feature component c, `Σ_l wigner_3j(1, 1, l)[a, b, m]` at
/// c = offset(l) + m.
pub fn hessian_basis() -> [[[f64; HESSIAN_FEAT]; 3]; 3] {
    let mut basis = [[[0.0; HESSIAN_FEAT]; 3]; 3];
    let mut offset = 0;
    for l in 0..=2u32 {
        let c = wigner_3j(1, 1, l).expect("wigner_3j(1, 1, l ≤ 2) exists");
        for (a, row) in basis.iter_mut().enumerate() {
            for (b, cell) in row.iter_mut().enumerate() {
                for m in 0..(2 * l as usize + 1) {
                    cell[offset + m] = c.get(a, b, m);
                }
            }
        }
        offset += 2 * l as usize + 1;
    }
    basis
}

/// Molecules of `n_atoms[k]` atoms, numbered consecutively: the first atom of each and the
/// offset of its Hessian in the output.
fn molecules(n_atoms: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let (mut first, mut out) = (vec![0], vec![0]);
    for &n in n_atoms {
        first.push(first.last().copied().unwrap_or(0) + n);
        out.push(out.last().copied().unwrap_or(0) + 9 * n * n);
    }
    (first, out)
}

struct HessianLayout {
    src: Vec<usize>,
    dst: Vec<usize>,
    /// Molecule of each atom.
    mol: Vec<usize>,
    first: Vec<usize>,
    out_offset: Vec<usize>,
}

impl HessianLayout {
    fn new(edge_feat: &[f64], node_feat: &[f64], src: &[i64], dst: &[i64], n_atoms: &[usize]) -> Result<Self> {
        let atoms: usize = n_atoms.iter().sum();
        check_rows("node_feat", node_feat, atoms, HESSIAN_FEAT, "l = 0, 1, 2 per atom; atoms = Σ n_atoms")?;
        let edges = src.len();
        check_rows("edge_feat", edge_feat, edges, HESSIAN_FEAT, "l = 0, 1, 2 per edge")?;
        let src = check_indices("src", src, edges, atoms)?;
        let dst = check_indices("dst", dst, edges, atoms)?;
        let (first, out_offset) = molecules(n_atoms);
        let mol: Vec<usize> = n_atoms.iter().enumerate().flat_map(|(k, &n)| std::iter::repeat_n(k, n)).collect();
        for e in 0..edges {
            if mol[src[e]] != mol[dst[e]] {
                return Err(Error::InvalidValue {
                    arg: "dst",
                    reason: format!("edge {e} joins atoms {} and {} of different molecules", src[e], dst[e]),
                });
            }
        }
        Ok(HessianLayout { src, dst, mol, first, out_offset })
    }

    /// Index of H[3i + a, 3j + b] in the output (i, j in the same molecule).
    fn at(&self, i: usize, a: usize, j: usize, b: usize) -> usize {
        let k = self.mol[i];
        let n = 3 * (self.first[k + 1] - self.first[k]);
        let (ri, rj) = (i - self.first[k], j - self.first[k]);
        self.out_offset[k] + (3 * ri + a) * n + 3 * rj + b
    }
}

/// HIP Hessian assembly: per edge e = (i, j) the block M_e = Σ_c B[:, :, c] edge_feat[e, c]
/// (B from [`hessian_basis`]) adds to H[i, j] and its transpose to H[j, i]; per atom
/// N_i = Σ_c B[:, :, c] node_feat[i, c] adds N_i + N_iᵀ to H[i, i]. edge_feat `[edges, 9]`,
/// node_feat `[atoms, 9]`, src = i and dst = j `[edges]`, molecules of `n_atoms` atoms
/// (consecutive, edges within one) → each molecule's dense `[3n, 3n]` (row 3i + a, column
/// 3j + b), concatenated.
pub fn hessian_forward(
    edge_feat: &[f64],
    node_feat: &[f64],
    src: &[i64],
    dst: &[i64],
    n_atoms: &[usize],
) -> Result<Vec<f64>> {
    let lay = HessianLayout::new(edge_feat, node_feat, src, dst, n_atoms)?;
    let basis = hessian_basis();
    let block = |f: &[f64]| -> [[f64; 3]; 3] {
        let mut m = [[0.0; 3]; 3];
        for a in 0..3 {
            for b in 0..3 {
                m[a][b] = (0..HESSIAN_FEAT).map(|c| basis[a][b][c] * f[c]).sum();
            }
        }
        m
    };
    let mut h = vec![0.0; *lay.out_offset.last().unwrap_or(&0)];
    for (e, f) in edge_feat.chunks_exact(HESSIAN_FEAT).enumerate() {
        let m = block(f);
        let (i, j) = (lay.src[e], lay.dst[e]);
        for a in 0..3 {
            for b in 0..3 {
                h[lay.at(i, a, j, b)] += m[a][b];
                h[lay.at(j, b, i, a)] += m[a][b];
            }
        }
    }
    for (i, f) in node_feat.chunks_exact(HESSIAN_FEAT).enumerate() {
        let m = block(f);
        for a in 0..3 {
            for b in 0..3 {
                h[lay.at(i, a, i, b)] += m[a][b] + m[b][a];
            }
        }
    }
    Ok(h)
}

/// The gradients (d edge_feat, d node_feat) of [`hessian_forward`] given dhessian (its shape).
pub fn hessian_backward(
    edge_feat: &[f64],
    node_feat: &[f64],
    src: &[i64],
    dst: &[i64],
    n_atoms: &[usize],
    dhessian: &[f64],
) -> Result<(Vec<f64>, Vec<f64>)> {
    let lay = HessianLayout::new(edge_feat, node_feat, src, dst, n_atoms)?;
    let total = *lay.out_offset.last().unwrap_or(&0);
    if dhessian.len() != total {
        return Err(shape_err("dhessian", format!("[{total}] (Σ (3·n_atoms)²)"), dhessian.len()));
    }
    let basis = hessian_basis();
    let mut de = vec![0.0; edge_feat.len()];
    for (e, d) in de.chunks_exact_mut(HESSIAN_FEAT).enumerate() {
        let (i, j) = (lay.src[e], lay.dst[e]);
        for a in 0..3 {
            for b in 0..3 {
                let g = dhessian[lay.at(i, a, j, b)] + dhessian[lay.at(j, b, i, a)];
                for c in 0..HESSIAN_FEAT {
                    d[c] += basis[a][b][c] * g;
                }
            }
        }
    }
    let mut dn = vec![0.0; node_feat.len()];
    for (i, d) in dn.chunks_exact_mut(HESSIAN_FEAT).enumerate() {
        for a in 0..3 {
            for b in 0..3 {
                let g = dhessian[lay.at(i, a, i, b)] + dhessian[lay.at(i, b, i, a)];
                for c in 0..HESSIAN_FEAT {
                    d[c] += basis[a][b][c] * g;
                }
            }
        }
    }
    Ok((de, dn))
}
