//! Equivariant building blocks in e3nn's conventions (REFERENCE.md §5): irreps, real
//! spherical harmonics, Clebsch-Gordan coefficients (`wigner_3j`) and Wigner D matrices for
//! l ≤ 4, tensor-product plans (uvu and uvw paths, 'element' and 'path' normalization), and
//! the f64 CPU references of the batched tensor product, the graph convolution
//! `out[i] = Σ_{e: dst_e = i} TP(x[src_e], Y_e, w_e)` and the HIP Hessian assembly.
//!
//! ```
//! use kiln::equivariant::{cpu, Irreps, PathNormalization, Sh, ShNormalization, TpPlan};
//!
//! // Y^0..Y^2 of one edge vector (component normalization: Y¹ = √3·x̂).
//! let sh = Sh { lmax: 2, normalization: ShNormalization::Component, normalize: true };
//! let y = sh.forward(&[0.0, 2.0, 0.0])?;
//! assert!((y[2] - 3f64.sqrt()).abs() < 1e-12);
//!
//! // A channelwise (MACE-style) tensor product of 4x0e+4x1o features with those harmonics.
//! let x: Irreps = "4x0e+4x1o".parse()?;
//! let plan = TpPlan::channelwise(&x, &"0e+1o+2e".parse()?, &"4x0e+4x1o+4x2e".parse()?,
//!                                PathNormalization::Element)?;
//! let x1 = vec![0.5; x.dim()];
//! let w = vec![1.0; plan.weight_numel];
//! let out = cpu::tp_forward(&plan, &x1, &y, &w, 1)?;
//! assert_eq!(out.len(), plan.irreps_out.dim());
//! # Ok::<(), kiln::Error>(())
//! ```

pub mod cg_code;
pub mod cpu;
mod graph;
pub mod irreps;
mod kernel_kind;
mod operands;
pub mod sh;
pub mod tp;
pub mod wigner;
pub use graph::EdgeGraph;
pub use kernel_kind::with_table_kernels;
pub use operands::{DoubleGrads, Grads, UpstreamGrads};
pub(crate) use operands::{GraphView, LAYOUT_NAMES};
use operands::{HessianOperands, HostGraph, MAX_I32, Operands, claimed_rows, index_arg, index_values};

// cuda.rs is the one copy of the launch code, compiled against each kernel library built in.
crate::core::launch::launch_code!("cuda.rs");

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::gpu::Gpu;
use crate::core::launch::on_backend;
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};

pub use irreps::{Irrep, Irreps, IrrepsError, MulIr, Parity};
pub use sh::{Sh, ShNormalization, ShTable, sh_dim};
pub use tp::{Instruction, IrrepNormalization, Mode, PathNormalization, TpPlan};
pub use wigner::{LMAX, Wigner3j, wigner_3j, wigner_d};

/// `vec` is a float `[n, 3]` tensor (and `dsh`, when given, `[n, (lmax+1)²]` in vec's dtype)
/// and the degree is supported: returns n.
fn validate_vec(sh: &Sh, vec: &Tensor, dsh: Option<&Tensor>) -> Result<usize> {
    wigner::check_l("lmax", sh.lmax)?;
    let n = claimed_rows(vec);
    let mut args = vec![Arg::new("vec", vec).float_or_f64().shape_described(vec![n, 3], "[n, 3]".into())];
    args.extend(dsh.map(|dsh| Arg::new("dsh", dsh).dtype_of("vec", vec).shape(vec![n, sh_dim(sh.lmax)])));
    check(&vec.device(), &args)?;
    Ok(n)
}

/// The real spherical harmonics Y^0..Y^lmax of `vec` (f32/f16/bf16/f64 `[n, 3]`): `[n, (lmax+1)²]`
/// in vec's dtype, on vec's device (the host runs the f64 reference, [`Sh::forward`]).
pub fn spherical_harmonics(sh: &Sh, vec: &Tensor) -> Result<Tensor> {
    let n = validate_vec(sh, vec, None)?;
    match Gpu::of(&vec.device())? {
        None => Tensor::from_f64(&sh.forward(&vec.host_f64())?, &[n, sh_dim(sh.lmax)], vec.dtype()),
        Some(gpu) => on_backend!(&gpu, sh_forward(sh, vec, n, &gpu)),
    }
}

/// The gradient `[n, 3]` of Σ dsh·Y(vec) with respect to `vec`; `dsh` `[n, (lmax+1)²]` in vec's
/// dtype and device.
pub fn spherical_harmonics_backward(sh: &Sh, vec: &Tensor, dsh: &Tensor) -> Result<Tensor> {
    let n = validate_vec(sh, vec, Some(dsh))?;
    match Gpu::of(&vec.device())? {
        None => Tensor::from_f64(&sh.backward(&vec.host_f64(), &dsh.host_f64())?, &[n, 3], vec.dtype()),
        Some(gpu) => on_backend!(&gpu, sh_backward(sh, vec, dsh, n, &gpu)),
    }
}

/// The rules of (x, y, w) against the plan: x `[nodes, dim1]`, y `[edges, dim2]`, w `[W]`
/// (shared) or `[edges, W]`, all in x's float dtype on x's device. The plan's widths are
/// checked first, since the rules are stated in them.
fn operand_args<'a>(
    plan: &TpPlan,
    (x, y, w): (&'a Tensor, &'a Tensor, &'a Tensor),
    (xname, yname): (&'static str, &'static str),
) -> Result<Vec<Arg<'a>>> {
    let (d1, d2, dk, nw) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
    if [d1, d2, dk, nw].iter().any(|&d| d > MAX_I32) {
        return Err(Error::InvalidValue { arg: "plan", reason: "row widths and weight counts must fit in i32".into() });
    }
    let edges = claimed_rows(y);
    Ok(vec![
        Arg::new(xname, x)
            .float_or_f64()
            .shape_described(vec![claimed_rows(x), d1], format!("[rows, {d1}] (irreps_in1)")),
        Arg::new(yname, y).dtype_of(xname, x).shape_described(vec![edges, d2], format!("[rows, {d2}] (irreps_in2)")),
        Arg::new("w", w).dtype_of(xname, x).shape_in(
            vec![vec![nw], vec![edges, nw]],
            format!("[{nw}] (shared) or [{edges}, {nw}] (one set per row of {yname})"),
        ),
    ])
}

/// (nodes, edges, shared) of operands whose rules [`check`] accepted, with the one rule left as
/// code: both row counts fit the kernels' 32-bit indices.
fn rows(x: &Tensor, y: &Tensor, w: &Tensor, yname: &'static str) -> Result<(usize, usize, bool)> {
    let (nodes, edges) = (x.shape()[0], y.shape()[0]);
    if nodes > MAX_I32 || edges > MAX_I32 {
        return Err(Error::Shape { arg: yname, expected: "at most 2^31 - 1 rows".into(), got: y.shape().to_vec() });
    }
    Ok((nodes, edges, w.shape().len() == 1))
}

fn validate_tp<'a>(plan: &TpPlan, x1: &'a Tensor, x2: &'a Tensor, w: &'a Tensor) -> Result<Operands<'a>> {
    check(&x1.device(), &operand_args(plan, (x1, x2, w), ("x1", "x2"))?)?;
    let (nodes, edges, shared) = rows(x1, x2, w, "x2")?;
    // One x2 row per x1 row: a rule between two dimensions' values, with its own message.
    if nodes != edges {
        return Err(Error::Shape {
            arg: "x2",
            expected: format!("[{nodes}, {}] (one row per row of x1)", plan.irreps_in2.dim()),
            got: x2.shape().to_vec(),
        });
    }
    Ok(Operands { x: x1, y: x2, w, shared, nodes, edges, graph: None })
}

/// The receiver order of the edges `src → dst` (i32 `[edges]`, any order, indices in
/// `0..nodes`): the edge ids stably sorted by dst, i32 `[edges]` on their device, sorted there
/// (a counting sort; no host round trip but the one check of the indices, which a typed error
/// reports). A caller that keeps its edges in this order (y, w and the indices gathered by it)
/// gets the same results from every convolution, with an identity permutation thereafter.
pub fn sort_edges(src: &Tensor, dst: &Tensor, nodes: usize) -> Result<Tensor> {
    let graph = EdgeGraph::build(src, dst, nodes)?;
    graph.check()?;
    graph.into_receiver_order()
}

/// The device layouts of the edges `src → dst` (LAYOUT_NAMES' order), built and checked once
/// for calls that reuse them apart from an [`EdgeGraph`] (the registry's prepared runs); `None`
/// on the host, where there is nothing to build.
pub(crate) fn device_layouts(src: &Tensor, dst: &Tensor, nodes: usize) -> Result<Option<[Tensor; 6]>> {
    let graph = EdgeGraph::build(src, dst, nodes)?;
    graph.check()?;
    Ok(graph.into_device_parts().map(|(tensors, _status)| tensors))
}

impl EdgeGraph {
    /// Lays out the edges `src → dst` (i32 `[edges]`, one device, any order) between `nodes`
    /// nodes. Host tensors are checked now (a typed error names the bad edge); on a device the
    /// kernels check them and this returns without waiting for them (see [`EdgeGraph::check`]).
    pub fn build(src: &Tensor, dst: &Tensor, nodes: usize) -> Result<EdgeGraph> {
        EdgeGraph::build_for(src, dst, nodes, claimed_rows(src))
    }

    /// [`EdgeGraph::build`] for `edges` edges (the rows of a call's y: src and dst are then
    /// named against them).
    pub(super) fn build_for(src: &Tensor, dst: &Tensor, nodes: usize, edges: usize) -> Result<EdgeGraph> {
        check(&src.device(), &[index_arg("src", src, edges), index_arg("dst", dst, edges)])?;
        if nodes > MAX_I32 || edges > MAX_I32 {
            return Err(Error::Shape {
                arg: "src",
                expected: "at most 2^31 - 1 edges and nodes".into(),
                got: vec![edges],
            });
        }
        if nodes == 0 && edges > 0 {
            return Err(Error::InvalidValue { arg: "nodes", reason: format!("{edges} edges need at least one node") });
        }
        let graph = match Gpu::of(&src.device())? {
            None => EdgeGraph::on_host(nodes, edges, HostGraph::from_tensors(src, dst, nodes)?),
            Some(gpu) => {
                let (tensors, status) = device_build(src, dst, nodes, edges, &gpu)?;
                EdgeGraph::on_device(nodes, edges, tensors, status)
            }
        };
        Ok(graph)
    }
}

/// The device layouts of src and dst and the status words (graph.rs; the launch code is
/// reachable from here).
fn device_build(src: &Tensor, dst: &Tensor, nodes: usize, edges: usize, gpu: &Gpu) -> Result<([Tensor; 6], Tensor)> {
    on_backend!(gpu, build_graph(src, dst, nodes, edges, gpu))
}

fn validate_conv<'a>(
    plan: &TpPlan,
    (x, y, w): (&'a Tensor, &'a Tensor, &'a Tensor),
    nodes: usize,
    graph: GraphView<'a>,
) -> Result<Operands<'a>> {
    let mut args = operand_args(plan, (x, y, w), ("x", "y"))?;
    // A device graph on x's device (its buffers' lengths are padded: the edge count is
    // compared below).
    args.extend(graph.device_tensor().map(|t| Arg::new("graph", t).dtype(DType::I32).shape(t.shape().to_vec())));
    check(&x.device(), &args)?;
    let (rows, edges, shared) = rows(x, y, w, "y")?;
    if matches!(graph, GraphView::Host(_)) && x.device().runs_kernels() {
        return Err(Error::InvalidValue {
            arg: "graph",
            reason: "built on the host; the operands are on a device".into(),
        });
    }
    if graph.edges() != edges {
        return Err(Error::Shape {
            arg: "graph",
            expected: format!("[{edges}] edges (one per row of y)"),
            got: vec![graph.edges()],
        });
    }
    if rows != nodes {
        return Err(Error::Shape {
            arg: "x",
            expected: format!("[{nodes}, {}] (one row per node of the graph)", plan.irreps_in1.dim()),
            got: x.shape().to_vec(),
        });
    }
    Ok(Operands { x, y, w, shared, nodes, edges, graph: Some(graph) })
}

/// The edges of a host graph as the references take them. Operands on the host never carry a
/// device graph (validate_conv holds the graph to x's device).
fn host_edges(view: GraphView) -> Result<(Vec<i64>, Vec<i64>)> {
    match view {
        GraphView::Host(g) => {
            Ok((g.src.iter().map(|&v| v as i64).collect(), g.dst.iter().map(|&v| v as i64).collect()))
        }
        GraphView::Device { .. } => {
            Err(Error::InvalidValue { arg: "graph", reason: "built on a device, not the host".into() })
        }
    }
}

/// Out of `ops` on the host: the f64 reference, rounded to the dtype.
fn host_forward(plan: &TpPlan, ops: &Operands) -> Result<Tensor> {
    let (x, y, w) = (ops.x.host_f64(), ops.y.host_f64(), ops.w.host_f64());
    let out = match &ops.graph {
        None => cpu::tp_forward(plan, &x, &y, &w, ops.nodes)?,
        Some(view) => {
            let (s, d) = host_edges(*view)?;
            cpu::conv_forward(plan, &x, &y, &w, &s, &d)?
        }
    };
    Tensor::from_f64(&out, &[ops.nodes, plan.irreps_out.dim()], ops.x.dtype())
}

fn host_backward(plan: &TpPlan, ops: &Operands, dout: &Tensor) -> Result<Grads> {
    let (x, y, w, g) = (ops.x.host_f64(), ops.y.host_f64(), ops.w.host_f64(), dout.host_f64());
    let grads = match &ops.graph {
        None => cpu::tp_backward(plan, &x, &y, &w, &g, ops.nodes)?,
        Some(view) => {
            let (s, d) = host_edges(*view)?;
            cpu::conv_backward(plan, &x, &y, &w, &s, &d, &g)?
        }
    };
    let dtype = ops.x.dtype();
    Ok(Grads {
        dx1: Tensor::from_f64(&grads.dx1, ops.x.shape(), dtype)?,
        dx2: Tensor::from_f64(&grads.dx2, ops.y.shape(), dtype)?,
        dw: Tensor::from_f64(&grads.dw, ops.w.shape(), dtype)?,
    })
}

fn host_double_backward(plan: &TpPlan, ops: &Operands, dout: &Tensor, up: UpstreamGrads) -> Result<DoubleGrads> {
    let (x, y, w, g) = (ops.x.host_f64(), ops.y.host_f64(), ops.w.host_f64(), dout.host_f64());
    let host = |t: Option<&Tensor>| t.map(Tensor::host_f64);
    let (gdx1, gdx2, gdw) = (host(up.gdx1), host(up.gdx2), host(up.gdw));
    let cpu_up = cpu::Upstream { gdx1: gdx1.as_deref(), gdx2: gdx2.as_deref(), gdw: gdw.as_deref() };
    let grads = match &ops.graph {
        None => cpu::tp_double_backward(plan, &x, &y, &w, &g, ops.nodes, cpu_up)?,
        Some(view) => {
            let (s, d) = host_edges(*view)?;
            cpu::conv_double_backward(plan, &x, &y, &w, &s, &d, &g, cpu_up)?
        }
    };
    let dtype = ops.x.dtype();
    Ok(DoubleGrads {
        gx1: Tensor::from_f64(&grads.gx1, ops.x.shape(), dtype)?,
        gx2: Tensor::from_f64(&grads.gx2, ops.y.shape(), dtype)?,
        gw: Tensor::from_f64(&grads.gw, ops.w.shape(), dtype)?,
        gdout: Tensor::from_f64(&grads.gdout, dout.shape(), dtype)?,
    })
}

fn run_forward(plan: &TpPlan, ops: &Operands) -> Result<Tensor> {
    match Gpu::of(&ops.x.device())? {
        None => host_forward(plan, ops),
        Some(gpu) => on_backend!(&gpu, conv_forward(plan, ops, &gpu)),
    }
}

fn run_backward(plan: &TpPlan, ops: &Operands, dout: &Tensor) -> Result<Grads> {
    check_dout(plan, ops, dout)?;
    match Gpu::of(&ops.x.device())? {
        None => host_backward(plan, ops, dout),
        Some(gpu) => on_backend!(&gpu, conv_backward(plan, ops, dout, &gpu)),
    }
}

/// dout `[nodes, dim_out]` in the operands' dtype (declared once the operands are valid: its
/// rows are the nodes they gave).
fn check_dout(plan: &TpPlan, ops: &Operands, dout: &Tensor) -> Result<()> {
    let want = vec![ops.nodes, plan.irreps_out.dim()];
    let expected = format!("{want:?} (irreps_out)");
    check(&ops.x.device(), &[Arg::new("dout", dout).dtype(ops.x.dtype()).shape_described(want, expected)])
}

fn run_double_backward<'a>(plan: &TpPlan, ops: &Operands, dout: &Tensor, up: UpstreamGrads<'a>) -> Result<DoubleGrads> {
    check_dout(plan, ops, dout)?;
    // Each given upstream gradient in the dtype and shape of the operand it stands in for.
    let like = |name: &'static str, g: Option<&'a Tensor>, of: &Tensor| {
        g.map(|g| Arg::new(name, g).dtype(of.dtype()).shape(of.shape().to_vec()))
    };
    let args: Vec<Arg> = [like("gdx1", up.gdx1, ops.x), like("gdx2", up.gdx2, ops.y), like("gdw", up.gdw, ops.w)]
        .into_iter()
        .flatten()
        .collect();
    check(&ops.x.device(), &args)?;
    match Gpu::of(&ops.x.device())? {
        None => host_double_backward(plan, ops, dout, up),
        Some(gpu) => on_backend!(&gpu, conv_double_backward(plan, ops, dout, up, &gpu)),
    }
}

/// The batched tensor product of `plan`: x1 `[batch, dim1]`, x2 `[batch, dim2]`, w `[W]`
/// (shared) or `[batch, W]`, one float dtype and device → `[batch, dim_out]`.
pub fn tensor_product(plan: &TpPlan, x1: &Tensor, x2: &Tensor, w: &Tensor) -> Result<Tensor> {
    run_forward(plan, &validate_tp(plan, x1, x2, w)?)
}

/// The gradients of [`tensor_product`] given dout `[batch, dim_out]`.
pub fn tensor_product_backward(plan: &TpPlan, x1: &Tensor, x2: &Tensor, w: &Tensor, dout: &Tensor) -> Result<Grads> {
    run_backward(plan, &validate_tp(plan, x1, x2, w)?, dout)
}

/// The fused, deterministic graph convolution `out[n] = Σ_{e: dst_e = n} TP(x[src_e], y[e]; w_e)`:
/// x `[nodes, dim1]`, y `[edges, dim2]`, w `[W]` or `[edges, W]`, src and dst i32 `[edges]` in
/// any order (each receiver sums its edges in edge order) → `[nodes, dim_out]`. Lays the edges
/// out and checks them on every call (one host synchronisation on a device, for a typed error
/// naming a bad edge); a caller reusing its edges builds an [`EdgeGraph`] once instead.
pub fn conv(plan: &TpPlan, x: &Tensor, y: &Tensor, w: &Tensor, src: &Tensor, dst: &Tensor) -> Result<Tensor> {
    checked_graph(src, dst, x, y)?.conv(plan, (x, y, w))
}

/// The gradients (dx, dy, dw) of [`conv`] given dout `[nodes, dim_out]`.
pub fn conv_backward(
    plan: &TpPlan,
    (x, y, w): (&Tensor, &Tensor, &Tensor),
    src: &Tensor,
    dst: &Tensor,
    dout: &Tensor,
) -> Result<Grads> {
    checked_graph(src, dst, x, y)?.conv_backward(plan, (x, y, w), dout)
}

/// The graph of src and dst between x's rows, one edge per row of y, built and checked.
fn checked_graph(src: &Tensor, dst: &Tensor, x: &Tensor, y: &Tensor) -> Result<EdgeGraph> {
    let graph = EdgeGraph::build_for(src, dst, claimed_rows(x), claimed_rows(y))?;
    graph.check()?;
    Ok(graph)
}

impl EdgeGraph {
    /// [`conv`] on this graph: no host synchronisation and nothing uploaded once the plan's
    /// tables are on the device (the first call on a device uploads and keeps them), so the
    /// call can be captured in a CUDA graph. x has one row per node of the graph, y one per
    /// edge.
    pub fn conv(&self, plan: &TpPlan, xyw: (&Tensor, &Tensor, &Tensor)) -> Result<Tensor> {
        conv_on(plan, xyw, self.nodes(), self.view())
    }

    /// [`conv_backward`] on this graph (as [`EdgeGraph::conv`]: no host synchronisation).
    pub fn conv_backward(&self, plan: &TpPlan, xyw: (&Tensor, &Tensor, &Tensor), dout: &Tensor) -> Result<Grads> {
        conv_on_backward(plan, xyw, self.nodes(), self.view(), dout)
    }

    /// [`conv_double_backward`] on this graph (as [`EdgeGraph::conv`]: no host synchronisation).
    pub fn conv_double_backward(
        &self,
        plan: &TpPlan,
        xyw: (&Tensor, &Tensor, &Tensor),
        dout: &Tensor,
        up: UpstreamGrads,
    ) -> Result<DoubleGrads> {
        conv_on_double_backward(plan, xyw, self.nodes(), self.view(), dout, up)
    }
}

/// [`conv`] on laid-out edges.
pub(crate) fn conv_on(
    plan: &TpPlan,
    xyw: (&Tensor, &Tensor, &Tensor),
    nodes: usize,
    graph: GraphView,
) -> Result<Tensor> {
    run_forward(plan, &validate_conv(plan, xyw, nodes, graph)?)
}

/// [`conv_backward`] on laid-out edges.
pub(crate) fn conv_on_backward(
    plan: &TpPlan,
    xyw: (&Tensor, &Tensor, &Tensor),
    nodes: usize,
    graph: GraphView,
    dout: &Tensor,
) -> Result<Grads> {
    run_backward(plan, &validate_conv(plan, xyw, nodes, graph)?, dout)
}

/// The double backward of [`tensor_product`] (force training: a loss on gradients): the
/// gradients of L = ⟨gdx1, dx1⟩ + ⟨gdx2, dx2⟩ + ⟨gdw, dw⟩, (dx1, dx2, dw) being
/// [`tensor_product_backward`] given dout, with respect to x1, x2, w and dout. Each upstream
/// gradient given costs one forward and one backward pass (kiln.h, kiln_equivariant_conv_bwd2).
pub fn tensor_product_double_backward(
    plan: &TpPlan,
    (x1, x2, w): (&Tensor, &Tensor, &Tensor),
    dout: &Tensor,
    up: UpstreamGrads,
) -> Result<DoubleGrads> {
    run_double_backward(plan, &validate_tp(plan, x1, x2, w)?, dout, up)
}

/// The double backward of [`conv`]: as [`tensor_product_double_backward`], for
/// [`conv_backward`].
pub fn conv_double_backward(
    plan: &TpPlan,
    (x, y, w): (&Tensor, &Tensor, &Tensor),
    src: &Tensor,
    dst: &Tensor,
    dout: &Tensor,
    up: UpstreamGrads,
) -> Result<DoubleGrads> {
    checked_graph(src, dst, x, y)?.conv_double_backward(plan, (x, y, w), dout, up)
}

/// [`conv_double_backward`] on laid-out edges.
pub(crate) fn conv_on_double_backward(
    plan: &TpPlan,
    xyw: (&Tensor, &Tensor, &Tensor),
    nodes: usize,
    graph: GraphView,
    dout: &Tensor,
    up: UpstreamGrads,
) -> Result<DoubleGrads> {
    run_double_backward(plan, &validate_conv(plan, xyw, nodes, graph)?, dout, up)
}

fn validate_hessian<'a>(
    edge_feat: &'a Tensor,
    node_feat: &'a Tensor,
    src: &Tensor,
    dst: &Tensor,
    n_atoms: &[usize],
) -> Result<HessianOperands<'a>> {
    // n_atoms first: the shapes below are stated in its atom count.
    let atoms: usize = n_atoms.iter().sum();
    if n_atoms.is_empty() || n_atoms.contains(&0) {
        return Err(Error::InvalidValue {
            arg: "n_atoms",
            reason: "one or more molecules of at least one atom".into(),
        });
    }
    if atoms > (i32::MAX / 3) as usize {
        return Err(Error::InvalidValue { arg: "n_atoms", reason: format!("{atoms} atoms: at most 2^31/3") });
    }
    let shape = match n_atoms {
        &[n] => vec![3 * n, 3 * n],
        _ => vec![n_atoms.iter().map(|n| 9 * n * n).sum()],
    };
    let edges = claimed_rows(edge_feat);
    check(
        &node_feat.device(),
        &[
            Arg::new("node_feat", node_feat)
                .float_or_f64()
                .shape_described(vec![atoms, 9], format!("[{atoms}, 9] (l = 0, 1, 2 per atom; atoms = Σ n_atoms)")),
            Arg::new("edge_feat", edge_feat)
                .dtype_of("node_feat", node_feat)
                .shape_described(vec![edges, 9], "[edges, 9]".into()),
            index_arg("src", src, edges),
            index_arg("dst", dst, edges),
        ],
    )?;
    let src = index_values("src", src, atoms)?;
    let dst = index_values("dst", dst, atoms)?;
    let mol: Vec<usize> = n_atoms.iter().enumerate().flat_map(|(k, &n)| std::iter::repeat_n(k, n)).collect();
    if let Some(e) = (0..edges).find(|&e| mol[src[e] as usize] != mol[dst[e] as usize]) {
        return Err(Error::InvalidValue {
            arg: "dst",
            reason: format!("edge {e} joins atoms {} and {} of different molecules", src[e], dst[e]),
        });
    }
    Ok(HessianOperands { edge_feat, node_feat, src, dst, n_atoms: n_atoms.to_vec(), atoms, shape })
}

/// HIP Hessian assembly (REFERENCE.md §5): edge_feat `[edges, 9]` and node_feat `[atoms, 9]`
/// (l = 0, 1, 2 in e3nn's basis) become 3×3 blocks through wigner_3j(1, 1, l);
/// H[i, j] += M_e, H[j, i] += M_eᵀ for each edge e = (src_e → dst_e), H[i, i] += N_i + N_iᵀ.
/// Molecules of `n_atoms[k]` consecutive atoms, edges within one. Returns the dense Hessian
/// `[3n, 3n]` (row 3i + a, column 3j + b) of a single molecule, or each molecule's
/// concatenated (`[Σ (3n)²]`), exactly symmetric, in the features' dtype and device.
pub fn hessian(
    edge_feat: &Tensor,
    node_feat: &Tensor,
    src: &Tensor,
    dst: &Tensor,
    n_atoms: &[usize],
) -> Result<Tensor> {
    let ops = validate_hessian(edge_feat, node_feat, src, dst, n_atoms)?;
    match Gpu::of(&node_feat.device())? {
        None => {
            let (s, d): (Vec<i64>, Vec<i64>) =
                (ops.src.iter().map(|&v| v as i64).collect(), ops.dst.iter().map(|&v| v as i64).collect());
            let h = cpu::hessian_forward(&edge_feat.host_f64(), &node_feat.host_f64(), &s, &d, n_atoms)?;
            Tensor::from_f64(&h, &ops.shape, node_feat.dtype())
        }
        Some(gpu) => on_backend!(&gpu, hessian_forward(&ops, &gpu)),
    }
}

/// The gradients (d edge_feat, d node_feat) of [`hessian`] given dhessian (its shape).
pub fn hessian_backward(
    edge_feat: &Tensor,
    node_feat: &Tensor,
    src: &Tensor,
    dst: &Tensor,
    n_atoms: &[usize],
    dhessian: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let ops = validate_hessian(edge_feat, node_feat, src, dst, n_atoms)?;
    // Declared once the operands are valid: its shape is the Hessian's.
    let rule = Arg::new("dhessian", dhessian).dtype(node_feat.dtype()).shape(ops.shape.clone());
    check(&node_feat.device(), &[rule])?;
    match Gpu::of(&node_feat.device())? {
        None => {
            let (s, d): (Vec<i64>, Vec<i64>) =
                (ops.src.iter().map(|&v| v as i64).collect(), ops.dst.iter().map(|&v| v as i64).collect());
            let (de, dn) = cpu::hessian_backward(
                &edge_feat.host_f64(),
                &node_feat.host_f64(),
                &s,
                &d,
                n_atoms,
                &dhessian.host_f64(),
            )?;
            let dtype = node_feat.dtype();
            Ok((Tensor::from_f64(&de, edge_feat.shape(), dtype)?, Tensor::from_f64(&dn, node_feat.shape(), dtype)?))
        }
        Some(gpu) => on_backend!(&gpu, hessian_backward(&ops, dhessian, &gpu)),
    }
}
